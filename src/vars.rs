//! Every setting, defined once: its variable, its flag, its default and its
//! help. The command line ([`crate::cli`]) takes flags and help text from
//! here, [`crate::config`] resolves values by these definitions (flag >
//! environment > `.env` > default), and a test checks the README's
//! configuration table against this one, so none of them can drift.

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    /// The environment variable (also the key in `.env`).
    pub name: &'static str,
    /// The long flag without `--`, or `""` when there is none.
    pub flag: &'static str,
    /// The flag's value placeholder.
    pub value_name: &'static str,
    /// The default, as the README writes it: a literal in backticks is the
    /// value itself; words describe a computed default.
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Comma-separated in the environment, repeatable as a flag.
    pub list: bool,
}

impl Var {
    /// The default value, when the default is a literal (`` `7` `` is "7").
    pub fn default_value(&self) -> Option<&'static str> {
        let d = self.default.strip_prefix('`')?.strip_suffix('`')?;
        (!d.contains('`')).then_some(d)
    }

    /// The flag's help: the line, then where else it can be set and its default.
    pub fn help_text(&self) -> String {
        format!(
            "{} [env: {}] [default: {}]",
            self.help.replace('`', ""),
            self.name,
            self.default.replace('`', "")
        )
    }
}

macro_rules! vars {
    ($($id:ident = $name:literal, flag $flag:literal $value:literal, default $default:literal, list $list:literal, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: Var = Var {
                name: $name,
                flag: $flag,
                value_name: $value,
                default: $default,
                help: $help,
                list: $list,
            };
        )*
        /// Every setting, in the README's order.
        pub const ALL: &[Var] = &[$($id),*];
    };
}

vars! {
    SOURCE = "BACKUP_SOURCE", flag "source" "DIR", default "current directory", list false,
        "the project directory: what a backup holds, and whose archives `latest` means";
    DIR = "BACKUP_DIR", flag "backup-dir" "DIR", default "`backups` in the project", list false,
        "where archives go, created 0700 (its parent must exist)";
    FULL_EVERY = "BACKUP_FULL_EVERY", flag "" "DURATION", default "`7d`", list false,
        "how often a full archive is made; other backups are differentials against the newest full (`0`: every backup is full)";
    RETENTION_DAYS = "BACKUP_RETENTION_DAYS", flag "" "DAYS", default "`7`", list false,
        "archives older than this are deleted after each backup (never the newest)";
    KEEP_LAST = "BACKUP_KEEP_LAST", flag "" "N", default "`0`", list false,
        "also keep the newest N archives";
    KEEP_DAILY = "BACKUP_KEEP_DAILY", flag "" "N", default "`0`", list false,
        "also keep the newest archive of each of the last N days";
    KEEP_WEEKLY = "BACKUP_KEEP_WEEKLY", flag "" "N", default "`0`", list false,
        "also keep the newest archive of each of the last N ISO weeks";
    KEEP_MONTHLY = "BACKUP_KEEP_MONTHLY", flag "" "N", default "`0`", list false,
        "also keep the newest archive of each of the last N months";
    SCHEDULE = "BACKUP_SCHEDULE", flag "schedule" "CRON", default "`0 0 * * *`", list false,
        "cron expression for the daemon: 5 fields, or 6 with seconds first";
    TIMEZONE = "BACKUP_TIMEZONE", flag "" "ZONE", default "`TZ`, else local", list false,
        "time zone of the schedule and of daily/weekly/monthly retention";
    MONGODB_URI = "MONGODB_URI", flag "" "URI", default "unset", list false,
        "when set, the database is dumped into the same archive";
    BACKUP_MONGODB_URI = "BACKUP_MONGODB_URI", flag "mongo-uri" "URI", default "unset", list false,
        "MongoDB connection string: the database is dumped too (wins over MONGODB_URI)";
    MONGODB_URI_FILE = "BACKUP_MONGODB_URI_FILE", flag "" "FILE", default "unset", list false,
        "a file holding the URI (wins over both): keeps the password out of the environment and the process list";
    MONGODB_DATABASES = "BACKUP_MONGODB_DATABASES", flag "db" "NAME", default "the URI's, or all", list true,
        "databases to dump, comma-separated (the flag repeats)";
    MONGODB_COLLECTIONS = "BACKUP_MONGODB_COLLECTIONS", flag "collection" "[DB.]NAME", default "all", list true,
        "collections to dump, NAME or DB.NAME, comma-separated (the flag repeats)";
    OPLOG = "BACKUP_OPLOG", flag "" "MODE", default "`auto`", list false,
        "`auto` (on for a replica set), `on` or `off`: the daemon captures the oplog for point-in-time restores";
    OPLOG_SLICE = "BACKUP_OPLOG_SLICE", flag "" "DURATION", default "`60s`", list false,
        "how often the daemon closes (and uploads) an oplog slice; entries are on disk within a second";
    EXCLUDE = "BACKUP_EXCLUDE", flag "exclude" "PATTERN", default "empty", list true,
        "extra gitignore-style patterns to leave out, comma-separated (the flag repeats)";
    ENCRYPTION = "BACKUP_ENCRYPTION", flag "encryption" "MODE", default "`age`", list false,
        "`age`, or `none` (an explicit opt-out, warned about at every backup)";
    RECIPIENTS = "BACKUP_RECIPIENTS", flag "recipient" "AGE1...", default "unset", list true,
        "age public keys (age1...), comma-separated: the server can write backups it cannot read";
    RECIPIENTS_FILE = "BACKUP_RECIPIENTS_FILE", flag "recipients-file" "FILE", default "unset", list false,
        "a file of age public keys, one per line";
    PASSPHRASE = "BACKUP_PASSPHRASE", flag "" "TEXT", default "unset", list false,
        "an age passphrase (scrypt) instead of keys";
    PASSPHRASE_FILE = "BACKUP_PASSPHRASE_FILE", flag "passphrase-file" "FILE", default "unset", list false,
        "a file holding the passphrase";
    IDENTITY_FILE = "BACKUP_IDENTITY_FILE", flag "" "FILE", default "`~/.config/cofre/identity.txt`", list false,
        "the age identity: encrypts when nothing else is set (made on first use, 0600), decrypts on restore";
    SIGNING_KEY_FILE = "BACKUP_SIGNING_KEY_FILE", flag "" "FILE", default "`signing.key` beside the identity", list false,
        "the Ed25519 (minisign) key every archive is signed with, made on first use (0600)";
    TRUSTED_KEYS = "BACKUP_TRUSTED_KEYS", flag "" "KEY", default "this installation's signing key", list true,
        "extra minisign public keys (`RW...`, or files holding one) whose archives restore without `--allow-unsigned`";
    COMPRESSION = "BACKUP_COMPRESSION", flag "compression" "ALGO[:LEVEL]", default "`gzip`", list false,
        "`gzip[:1-9]` or `zstd[:1-19]` (defaults `gzip:6`, `zstd:3`)";
    LOG_FILE = "BACKUP_LOG_FILE", flag "log-file" "FILE", default "unset", list false,
        "also append log lines to this file (the application's log)";
    LOG_FORMAT = "BACKUP_LOG_FORMAT", flag "log-format" "FORMAT", default "`text`", list false,
        "`text` or `json`";
    DEBUG = "COFRE_DEBUG", flag "" "BOOL", default "unset", list false,
        "`1`: debug-level log lines, on stderr and in the log file (for reporting a problem)";
    CATCH_UP = "BACKUP_CATCH_UP", flag "" "BOOL", default "`true`", list false,
        "the daemon runs a missed backup at start";
    RETRIES = "BACKUP_RETRIES", flag "" "N", default "`2`", list false,
        "the daemon retries a failed backup this many times, with backoff";
    SHUTDOWN_GRACE = "BACKUP_SHUTDOWN_GRACE", flag "" "DURATION", default "`0s`", list false,
        "how long the daemon lets a running backup finish after SIGTERM";
    REMOTE = "BACKUP_REMOTE", flag "" "s3://BUCKET/PREFIX", default "unset", list false,
        "every archive (and its signature) is also uploaded there; credentials, region and endpoint from the AWS_* variables";
    REMOTE_RETENTION_DAYS = "BACKUP_REMOTE_RETENTION_DAYS", flag "" "DAYS", default "as `BACKUP_RETENTION_DAYS`", list false,
        "remote archives older than this are deleted (the BACKUP_KEEP_* rules apply too; never the newest)";
    REMOTE_LOCK = "BACKUP_REMOTE_LOCK", flag "" "MODE", default "`off`", list false,
        "`off`, `governance` or `compliance`: S3 Object Lock on each object until retention would delete it";
    REMOTE_BANDWIDTH = "BACKUP_REMOTE_BANDWIDTH", flag "" "BYTES/S", default "unlimited", list false,
        "upload cap in bytes per second (`20M`)";
    DRILL_SCHEDULE = "BACKUP_DRILL_SCHEDULE", flag "" "CRON", default "`0 4 * * 0`", list false,
        "cron expression for the daemon's restore drills (`cofre drill latest`), or `off`";
    DRILL_DIR = "BACKUP_DRILL_DIR", flag "" "DIR", default "`BACKUP_DIR`", list false,
        "a drill restores the files into a private scratch directory made inside this one, removed after";
    DRILL_MONGODB_URI = "BACKUP_DRILL_MONGODB_URI", flag "" "URI", default "the backup's server", list false,
        "the server a drill restores the database into, each database as `cofre_drill_<time>_<tag>_<db>`";
    DRILL_COMMAND = "BACKUP_DRILL_COMMAND", flag "" "COMMAND", default "unset", list false,
        "a smoke test run by `sh -c` in the restored tree after the checks; its exit code decides the drill";
    DRILL_TIMEOUT = "BACKUP_DRILL_TIMEOUT", flag "" "DURATION", default "`10m`", list false,
        "the smoke test is stopped (its whole process group) after this long, and the drill fails";
    METRICS_ADDR = "BACKUP_METRICS_ADDR", flag "" "HOST:PORT", default "off", list false,
        "the daemon serves Prometheus metrics at `http://HOST:PORT/metrics` (`127.0.0.1:9184`)";
    METRICS_FILE = "BACKUP_METRICS_FILE", flag "" "FILE", default "unset", list false,
        "the same metrics written (atomically) after every run, for node_exporter's textfile collector";
    NOTIFY_URL = "BACKUP_NOTIFY_URL", flag "" "URL", default "unset", list true,
        "where events go, comma-separated: `https://` (JSON webhook), `hc+https://` (Healthchecks ping), `ntfy+https://host/topic`";
    NOTIFY_ON = "BACKUP_NOTIFY_ON", flag "" "EVENTS", default "failures and warnings", list true,
        "events to send: `start`, `success`, `warning`, `failure`, `drill_success`, `drill_failure`, `offsite_failure`, `oplog_gap`, `oplog_failure`, or `all`";
    NOTIFY_TIMEOUT = "BACKUP_NOTIFY_TIMEOUT", flag "" "DURATION", default "`10s`", list false,
        "each delivery attempt gives up after this long (3 attempts, then a warning; a backup never fails for it)";
    MIN_FREE = "BACKUP_MIN_FREE", flag "" "SIZE", default "`10%`", list false,
        "warn when a backup would leave less free space than this (`10%`, `5G`)";
}

/// The list of settings `cofre --help` ends with.
pub fn environment_help() -> String {
    let mut out = String::from(
        "Settings (a flag wins over the environment, which wins over the project's .env, \
         which wins over the default):\n",
    );
    for v in ALL {
        let flag = if v.flag.is_empty() {
            String::new()
        } else {
            format!(" (--{})", v.flag)
        };
        out.push_str(&format!(
            "  {}{flag}\n      {} [default: {}]\n",
            v.name,
            v.help.replace('`', ""),
            v.default.replace('`', "")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_are_unique_and_literal_defaults_read() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.name, b.name);
                assert!(a.flag.is_empty() || a.flag != b.flag, "{}", a.flag);
            }
        }
        assert_eq!(RETENTION_DAYS.default_value(), Some("7"));
        assert_eq!(SCHEDULE.default_value(), Some("0 0 * * *"));
        assert_eq!(TIMEZONE.default_value(), None);
        assert_eq!(SOURCE.default_value(), None);
        assert!(
            COMPRESSION
                .help_text()
                .contains("[env: BACKUP_COMPRESSION] [default: gzip]")
        );
    }

    /// The README's configuration table lists exactly these settings, with
    /// these flags and defaults.
    #[test]
    fn the_readme_table_is_this_table() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("a Configuration section");
        let mut seen = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 4, "{row}");
            let names: Vec<&str> = cells[0].split('`').skip(1).step_by(2).collect();
            for name in names {
                let var = ALL
                    .iter()
                    .find(|v| v.name == name)
                    .unwrap_or_else(|| panic!("README row {name} is not a setting"));
                let flag = if var.flag.is_empty() {
                    String::new()
                } else {
                    format!("`--{}`", var.flag)
                };
                assert_eq!(cells[1], flag, "{name}: flag");
                assert_eq!(cells[2], var.default, "{name}: default");
                seen.push(name);
            }
        }
        for v in ALL {
            assert!(seen.contains(&v.name), "{} is not in the README", v.name);
        }
    }
}
