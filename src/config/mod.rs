//! Configuration: flags, environment and the project's `.env`, resolved into
//! validated [`Settings`], a struct of each feature's own options.
//!
//! Two steps, as in ripgrep's low-level/high-level arguments: [`Sources`]
//! ([`sources`]) holds the raw strings from each origin; [`Settings::resolve`]
//! picks each variable by precedence (flag > environment > `.env` >
//! default), parses it ([`parse`]) and builds each feature's options
//! ([`features`], one resolver per feature), failing with a
//! [`ConfigError`] that names the variable, the value and what was
//! expected. No file is touched here except the `.env` and the small key
//! files the variables point to.
//!
//! This module sits above the features and imports downward only: the
//! features own their option types, and nothing below `commands` imports
//! from here.

mod features;
mod parse;
mod sources;

use std::path::{Path, PathBuf};

pub use parse::{ConfigError, parse_duration_text};
pub use sources::Sources;

use crate::archive::Compression;
use crate::logging::LogFormat;
use crate::retention::RetentionPolicy;
use crate::schedule::Zone;
use crate::secret::Secret;
use crate::vars::{self, Var};
use crate::{
    backup, daemon, drill, keys, logging, metrics, mongo, notify, offsite, prune, remote, report,
};
use features::*;
use parse::*;

/// Every setting, validated: the project, and each feature's options.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The project directory (absolute; not checked for existence here).
    pub source: PathBuf,
    /// Where archives live (absolute).
    pub backup_dir: PathBuf,
    /// The keys that read, sign and trust archives.
    pub keys: keys::Options,
    /// What a backup holds and how its archive is made.
    pub backup: backup::Options,
    /// Retention rules.
    pub retention: RetentionPolicy,
    /// The daemon's schedules and retries.
    pub daemon: daemon::Plan,
    /// Offsite copies, when `BACKUP_REMOTE` is set.
    pub remote: Option<remote::Options>,
    /// The `AWS_*` variables (for `s3://` archives named on the command line).
    pub aws: Vec<(String, Secret)>,
    /// Restore drills.
    pub drill: drill::Options,
    /// Notifications.
    pub notify: notify::Options,
    /// Prometheus metrics.
    pub metrics: metrics::Options,
    /// Logs.
    pub log: logging::Options,
    /// The oplog capture (point-in-time recovery).
    pub oplog: crate::oplog::Options,
}

impl Settings {
    /// Resolves and validates every variable. Reads only the small files that
    /// variables name (recipients, passphrase, the MongoDB URI).
    pub fn resolve(src: &Sources) -> Result<Settings, ConfigError> {
        let source = src.source_dir();
        let path_var = |var: &Var| src.path(var, &source);
        let backup_dir = path_var(&vars::DIR).unwrap_or_else(|| source.join("backups"));
        let identity_file = path_var(&vars::IDENTITY_FILE).unwrap_or_else(|| {
            src.home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".config/cofre/identity.txt")
        });
        let signing_key = path_var(&vars::SIGNING_KEY_FILE).unwrap_or_else(|| {
            identity_file
                .parent()
                .unwrap_or(Path::new("/"))
                .join("signing.key")
        });
        let passphrase = passphrase(src, &source)?;
        let recipients = recipients(src, &source)?;
        let retention = retention(src)?;
        let mongo = resolve_mongodb_uri(src, &path_var)?.map(|uri| mongo::Source {
            uri,
            selection: mongo::Selection {
                databases: src.list(&vars::MONGODB_DATABASES),
                collections: src.list(&vars::MONGODB_COLLECTIONS),
            },
        });
        let has_mongo = mongo.is_some();
        let schedule = schedule(src)?;
        let remote = remote(src, &retention)?;
        Ok(Settings {
            keys: keys::Options {
                identity_file: identity_file.clone(),
                signing_key: signing_key.clone(),
                trusted: src.list(&vars::TRUSTED_KEYS),
                passphrase: passphrase.clone(),
            },
            drill: drill(src, &path_var, &backup_dir, mongo.as_ref().map(|m| &m.uri))?,
            backup: backup::Options {
                source: source.clone(),
                backup_dir: backup_dir.clone(),
                compression: choice(
                    src,
                    &vars::COMPRESSION,
                    Compression::parse,
                    "gzip or zstd, optionally with a level: gzip:1..9 or zstd:1..19",
                )?,
                encryption: encryption(src, passphrase.as_ref(), recipients, &identity_file)?,
                excludes: src.list(&vars::EXCLUDE),
                signing_key,
                min_free: choice(
                    src,
                    &vars::MIN_FREE,
                    parse_min_free,
                    "a percentage such as 10% or a size such as 5G or 500M",
                )?,
                full_every: choice(
                    src,
                    &vars::FULL_EVERY,
                    |v| match v.trim() {
                        "" => Some(backup::DEFAULT_FULL_EVERY),
                        v => parse_duration_text(v),
                    },
                    "a duration such as 7d, 1d or 12h, or 0 for a full archive every time",
                )?,
                mongo,
            },
            daemon: daemon::Plan {
                schedule,
                catch_up: parse_bool(src, &vars::CATCH_UP)?,
                retries: parse_u32(src, &vars::RETRIES, 0, 100)?,
                shutdown_grace: parse_duration(src, &vars::SHUTDOWN_GRACE)?,
                drill: drill_schedule(src)?,
            },
            metrics: metrics::Options {
                addr: metrics_addr(src)?,
                file: path_var(&vars::METRICS_FILE),
                backup_dir: backup_dir.clone(),
                offsite: remote.is_some(),
                drills: src
                    .value(&vars::DRILL_SCHEDULE)
                    .is_none_or(|v| !v.trim().eq_ignore_ascii_case("off")),
                oplog: has_mongo
                    && !src.value(&vars::OPLOG).is_some_and(|v| {
                        crate::oplog::Mode::parse(v) == Some(crate::oplog::Mode::Off)
                    }),
            },
            notify: notify(src)?,
            log: logging::Options {
                file: path_var(&vars::LOG_FILE),
                format: choice(src, &vars::LOG_FORMAT, LogFormat::parse, "text or json")?,
                debug: parse_bool(src, &vars::DEBUG)?,
            },
            oplog: crate::oplog::Options {
                mode: choice(
                    src,
                    &vars::OPLOG,
                    crate::oplog::Mode::parse,
                    "auto, on or off",
                )?,
                slice: match src.value(&vars::OPLOG_SLICE) {
                    None => crate::oplog::Options::default().slice,
                    Some(_) => {
                        let d = parse_duration(src, &vars::OPLOG_SLICE)?;
                        if d < std::time::Duration::from_secs(1) {
                            return Err(ConfigError::Invalid {
                                var: vars::OPLOG_SLICE.name.into(),
                                value: src.value(&vars::OPLOG_SLICE).unwrap_or_default().into(),
                                expected: "a duration of at least 1s, such as 60s or 5m".into(),
                            });
                        }
                        d
                    }
                },
            },
            remote,
            aws: aws(src),
            retention,
            backup_dir,
            source,
        })
    }

    /// The time zone of the schedule and of retention's days.
    pub fn zone(&self) -> Zone {
        self.daemon.schedule.zone()
    }

    /// Retention's options, for `BACKUP_DIR`.
    pub fn prune(&self) -> prune::Options {
        prune::Options {
            backup_dir: self.backup_dir.clone(),
            source: self.source.clone(),
            policy: self.retention,
            zone: self.zone(),
        }
    }

    /// The offsite copy's options, when `BACKUP_REMOTE` is set.
    pub fn offsite(&self) -> Option<offsite::Options> {
        Some(offsite::Options {
            backup_dir: self.backup_dir.clone(),
            source: self.source.clone(),
            zone: self.zone(),
            remote: self.remote.clone()?,
            keys: self.keys.clone(),
        })
    }

    /// Where a run's outcome goes.
    pub fn report(&self) -> report::Options {
        report::Options {
            source: self.source.display().to_string(),
            notify: self.notify.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The bucket an `s3://bucket/prefix/ARCHIVE` argument names, and the
    /// archive's name; credentials as for `BACKUP_REMOTE`.
    pub fn remote_for_url(&self, arg: &str) -> Option<(remote::Options, String)> {
        let (url, name) = arg.rsplit_once('/')?;
        let (bucket, prefix) =
            parse_remote_url(url).or_else(|| parse_remote_url(&format!("{url}/")))?;
        let base = self.remote.clone();
        Some((
            remote::Options {
                url: url.to_owned(),
                bucket,
                prefix,
                retention: self.retention,
                lock: remote::LockMode::Off,
                bandwidth: None,
                aws: base.map_or_else(|| self.aws.clone(), |r| r.aws),
            },
            name.to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::crypt::Encryption;
    use crate::backup::MinFree;
    use std::time::Duration;

    fn sources(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: PathBuf::from("/srv/app"),
            home: Some(PathBuf::from("/home/u")),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(&sources(&[("BACKUP_TIMEZONE", "UTC")])).unwrap();
        assert_eq!(s.source, PathBuf::from("/srv/app"));
        assert_eq!(s.backup_dir, PathBuf::from("/srv/app/backups"));
        assert_eq!(s.retention.days, 7);
        assert_eq!(s.backup.compression, Compression::Gzip(6));
        assert_eq!(
            s.keys.identity_file,
            PathBuf::from("/home/u/.config/cofre/identity.txt")
        );
        assert!(matches!(s.backup.encryption, Encryption::Age(_)));
        assert_eq!(s.backup.min_free, MinFree::Percent(10.0));
    }

    #[test]
    fn precedence_flag_env_dotenv() {
        let mut src = sources(&[("BACKUP_RETENTION_DAYS", "3"), ("BACKUP_TIMEZONE", "UTC")]);
        src.dotenv
            .insert("BACKUP_RETENTION_DAYS".into(), "9".into());
        src.dotenv
            .insert("BACKUP_COMPRESSION".into(), "zstd".into());
        assert_eq!(Settings::resolve(&src).unwrap().retention.days, 3);
        assert_eq!(
            Settings::resolve(&src).unwrap().backup.compression,
            Compression::Zstd(3)
        );
        src.flag(&vars::RETENTION_DAYS, Some("11"));
        assert_eq!(Settings::resolve(&src).unwrap().retention.days, 11);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("BACKUP_COMPRESSION", "lz4"),
            ("BACKUP_COMPRESSION", "gzip:12"),
            ("BACKUP_RETENTION_DAYS", "-1"),
            ("BACKUP_RETENTION_DAYS", "week"),
            ("BACKUP_SCHEDULE", "every day"),
            ("BACKUP_SCHEDULE", "61 * * * *"),
            ("BACKUP_ENCRYPTION", "aes"),
            ("BACKUP_LOG_FORMAT", "xml"),
            ("BACKUP_RECIPIENTS", "age1notakey"),
            ("BACKUP_TIMEZONE", "Mars/Olympus"),
            ("BACKUP_MIN_FREE", "lots"),
            ("BACKUP_CATCH_UP", "maybe"),
        ] {
            let err = Settings::resolve(&sources(&[(var, value)])).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(var), "{msg}");
            assert!(msg.contains(value), "{msg}");
        }
    }

    #[test]
    fn uri_password_never_in_the_error() {
        for uri in [
            "postgres://u:topsecret1@h/db",
            "mongodb://u:top/secret?2@h/db",
            "mongodb://u:top@secret3@h:notaport/db",
        ] {
            let err = Settings::resolve(&sources(&[("MONGODB_URI", uri)]))
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("topsecret") && !err.contains("secret"),
                "{err}"
            );
            assert!(err.contains("MONGODB_URI"), "{err}");
        }
    }

    #[test]
    fn a_secret_key_given_as_a_recipient_is_never_echoed() {
        let key = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let err = Settings::resolve(&sources(&[("BACKUP_RECIPIENTS", key)]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("QQQQQQ"), "{err}");
        assert!(err.contains("secret key"), "{err}");
    }

    #[test]
    fn backup_mongodb_uri_wins() {
        let s = Settings::resolve(&sources(&[
            ("MONGODB_URI", "mongodb://a/x"),
            ("BACKUP_MONGODB_URI", "mongodb://b/y"),
            ("BACKUP_TIMEZONE", "UTC"),
        ]))
        .unwrap();
        assert_eq!(s.backup.mongo.unwrap().uri.expose(), "mongodb://b/y");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("5GiB"), Some(5 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("5X"), None);
        assert_eq!(parse_duration_text("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration_text("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration_text("soon"), None);
    }
}
