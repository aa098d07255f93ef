//! One module per subcommand: orchestration only, the work is in the library
//! modules. This file turns the parsed command line into [`Settings`] (flags
//! are handed to the configuration under their variable's name), sets up
//! logging and dispatches.

mod backup;
pub(crate) mod daemon;
pub(crate) mod drill;
mod keygen;

pub(crate) mod list;
mod oplog;
mod prune;
mod restore;
mod status;
mod upload;
mod verify;

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{ArchiveOptions, Cli, Command, KeyArgs, MongoSelect};
use crate::config::{self, ConfigError, Settings, Sources};
use crate::logging::{self, Verbosity};
use crate::open::Access;
use crate::sign::Origin;
use crate::vars;

pub use crate::Outcome;

fn archive_flags(s: &mut Sources, a: &ArchiveOptions) {
    s.flag(&vars::COMPRESSION, a.compression.clone());
    s.flag(&vars::ENCRYPTION, a.encryption.clone());
    s.flag_list(&vars::RECIPIENTS, &a.recipients);
    s.flag(&vars::RECIPIENTS_FILE, a.recipients_file.clone());
    s.flag(&vars::PASSPHRASE_FILE, a.passphrase_file.clone());
    s.flag_list(&vars::EXCLUDE, &a.excludes);
}

fn mongo_flags(s: &mut Sources, m: &MongoSelect) {
    s.flag(&vars::BACKUP_MONGODB_URI, m.mongo_uri.clone());
    s.flag_list(&vars::MONGODB_DATABASES, &m.databases);
    s.flag_list(&vars::MONGODB_COLLECTIONS, &m.collections);
}

fn key_flags(s: &mut Sources, k: &KeyArgs) {
    s.flag(&vars::PASSPHRASE_FILE, k.passphrase_file.clone());
}

/// Adds the command line's flags to `s`, each as the setting it stands for.
pub fn add_flags(s: &mut Sources, cli: &Cli) {
    let g = &cli.global;
    s.flag(&vars::SOURCE, g.source.clone());
    s.flag(&vars::DIR, g.backup_dir.clone());
    s.flag(&vars::LOG_FILE, g.log_file.clone());
    s.flag(&vars::LOG_FORMAT, g.log_format.clone());
    match &cli.command {
        Command::Backup(a) => {
            archive_flags(s, &a.archive);
            mongo_flags(s, &a.mongo);
        }
        Command::Daemon(a) => {
            archive_flags(s, &a.archive);
            mongo_flags(s, &a.mongo);
            s.flag(&vars::SCHEDULE, a.schedule.clone());
        }
        Command::Restore(a) => key_flags(s, &a.keys),
        Command::Drill(a) => key_flags(s, &a.keys),
        Command::Verify(a) => key_flags(s, &a.keys),
        Command::Oplog(a) => key_flags(s, &a.keys),
        Command::List(_)
        | Command::Prune(_)
        | Command::Status(_)
        | Command::Upload(_)
        | Command::Keygen(_)
        | Command::Completions(_)
        | Command::Man(_) => {}
    }
}

/// Builds the validated settings for a command line.
pub fn settings(cli: &Cli) -> Result<Settings, anyhow::Error> {
    let mut s = Sources::from_process().context("cannot read the current directory")?;
    add_flags(&mut s, cli);
    s.load_dotenv()?;
    Ok(Settings::resolve(&s)?)
}

/// What reading this project's archives takes: the keys that decrypt
/// (`--identity` files first, then the configured identity file; the
/// configured passphrase), the keys whose signatures are trusted (this
/// installation's signing key, keys named in those identity files,
/// `BACKUP_TRUSTED_KEYS`), and this project. A file named with
/// `--identity` must be there (the configured one may not be yet).
pub fn access(settings: &Settings, keys: &KeyArgs) -> Result<Access, anyhow::Error> {
    for path in &keys.identities {
        if let Err(e) = std::fs::metadata(path) {
            return Err(crate::archive::crypt::CryptError::IdentityFile {
                path: path.clone(),
                why: e.to_string(),
            }
            .into());
        }
    }
    let keys = settings.keys.read_keys(&keys.identities);
    let trusted = settings.keys.trusted(&keys)?;
    Ok(Access {
        keys,
        trusted,
        origin: Origin::here(&settings.source),
    })
}

/// The bucket, for `--remote`: `BACKUP_REMOTE` must be set.
pub fn bucket(settings: &Settings) -> Result<crate::remote::Remote, anyhow::Error> {
    let remote = settings
        .remote
        .as_ref()
        .ok_or_else(|| ConfigError::Invalid {
            var: "--remote".into(),
            value: "(BACKUP_REMOTE unset)".into(),
            expected: "BACKUP_REMOTE set to s3://BUCKET/PREFIX (and the AWS_* credentials)".into(),
        })?;
    Ok(crate::remote::Remote::connect(remote)?)
}

/// The bucket an archive comes from, if any: an `s3://` argument names
/// its own; `--remote` means `BACKUP_REMOTE`. Returns it and the name to
/// look for.
pub fn archive_source(
    settings: &Settings,
    arg: &str,
    remote: bool,
) -> Result<(Option<crate::remote::Remote>, String), anyhow::Error> {
    if arg.starts_with("s3://") {
        let (remote, name) = settings
            .remote_for_url(arg)
            .ok_or_else(|| ConfigError::Invalid {
                var: "ARCHIVE".into(),
                value: arg.to_owned(),
                expected: "s3://BUCKET/PREFIX/backup_YYYY-MM-DDTHH-MM-SS.tar.gz.age".into(),
            })?;
        return Ok((Some(crate::remote::Remote::connect(&remote)?), name));
    }
    if remote {
        return Ok((Some(bucket(settings)?), arg.to_owned()));
    }
    Ok((None, arg.to_owned()))
}

/// Parses a `--wait`/`--max-age` style duration flag.
pub fn duration_flag(flag: &str, value: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    value
        .map(|v| {
            config::parse_duration_text(v).ok_or_else(|| ConfigError::Invalid {
                var: flag.to_owned(),
                value: v.to_owned(),
                expected: "a duration such as 30s, 5m or 26h".into(),
            })
        })
        .transpose()
}

/// How chatty stderr is, from `-q` and `-v`.
pub fn verbosity(cli: &Cli) -> Verbosity {
    if cli.global.quiet {
        Verbosity::Quiet
    } else if cli.global.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    }
}

/// The validated settings a command line needs (`keygen` needs none).
pub fn prepare(cli: &Cli) -> Result<Option<Settings>, anyhow::Error> {
    match cli.command {
        Command::Keygen(_) | Command::Completions(_) | Command::Man(_) => Ok(None),
        _ => settings(cli).map(Some),
    }
}

/// Sets up logging: as the settings say, or plain text on stderr when
/// there are none (keygen, or settings that did not validate).
pub fn init_logging(cli: &Cli, settings: Option<&Settings>) -> logging::LogFormat {
    let opts = settings.map(|s| s.log.clone()).unwrap_or_default();
    logging::init(
        &opts,
        verbosity(cli),
        matches!(cli.command, Command::Daemon(_)),
    );
    opts.format
}

/// Runs a parsed command line with its settings (from [`prepare`]); what a
/// command prints for its user goes to `out` (stdout in the binary, a
/// buffer in tests); logs and progress go to stderr.
pub fn run(
    cli: &Cli,
    settings: Option<Settings>,
    out: &mut dyn Write,
) -> Result<Outcome, anyhow::Error> {
    let verbosity = verbosity(cli);
    let Some(settings) = settings else {
        return match &cli.command {
            Command::Keygen(args) => keygen::run(args, out),
            Command::Completions(args) => keygen::completions(args, out),
            Command::Man(_) => keygen::man(out),
            _ => unreachable!("every other command has settings"),
        };
    };
    match &cli.command {
        Command::Backup(a) => backup::run(a, &settings, verbosity, out),
        Command::Restore(a) => restore::run(a, &settings, verbosity, out),
        Command::List(a) => list::run(a, &settings, out),
        Command::Verify(a) => verify::run(a, &settings, out),
        Command::Prune(a) => prune::run(a, &settings, out),
        Command::Daemon(a) => daemon::run(a, &settings, verbosity),
        Command::Status(a) => status::run(a, &settings, out),
        Command::Drill(a) => drill::run(a, &settings, verbosity, out),
        Command::Upload(_) => upload::run(&settings, out),
        Command::Oplog(a) => oplog::run(a, &settings, out),
        Command::Keygen(a) => keygen::run(a, out),
        Command::Completions(a) => keygen::completions(a, out),
        Command::Man(_) => keygen::man(out),
    }
}

/// The shape of a JSON document: one line per path, `path: type`, for
/// golden files that pin what scripts and the npm API parse.
#[cfg(test)]
pub(crate) fn json_shape(v: &serde_json::Value) -> String {
    fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        use serde_json::Value;
        let kind = match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        out.push(format!(
            "{}: {kind}",
            if path.is_empty() { "." } else { path }
        ));
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    walk(v, &format!("{path}.{k}"), out);
                }
            }
            Value::Array(a) => {
                if let Some(first) = a.first() {
                    walk(first, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out.join("\n") + "\n"
}

/// Compares `got` with the golden file `name` (in `tests/fixtures/json`);
/// `COFRE_UPDATE_GOLDEN=1` rewrites it.
#[cfg(test)]
pub(crate) fn assert_golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/json")
        .join(name);
    if std::env::var("COFRE_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        want, got,
        "the JSON shape of {name} changed: scripts and the npm API parse it; if the change is \
         meant, run with COFRE_UPDATE_GOLDEN=1 and say so in the README"
    );
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::archive::Compression;
    use crate::archive::crypt::Encryption;
    use crate::logging::LogFormat;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn resolve(args: &[&str]) -> Settings {
        let cli = Cli::try_parse_from(std::iter::once("cofre").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let mut s = Sources {
            cwd: PathBuf::from("/work"),
            home: Some(PathBuf::from("/home/u")),
            ..Sources::default()
        };
        s.env.insert("BACKUP_TIMEZONE".into(), "UTC".into());
        add_flags(&mut s, &cli);
        Settings::resolve(&s).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Every flag that stands for a setting, once, and what it sets.
    #[test]
    fn every_flag_sets_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        let recipients = dir.path().join("r.txt");
        std::fs::write(&recipients, format!("{key}\n")).unwrap();
        let pass = dir.path().join("p.txt");
        std::fs::write(&pass, "pass phrase\n").unwrap();
        let (r, p) = (recipients.to_str().unwrap(), pass.to_str().unwrap());
        type Check = Box<dyn Fn(&Settings) -> bool>;
        let cases: Vec<(Vec<&str>, Check)> = vec![
            (
                vec!["--source", "app", "status"],
                Box::new(|s| s.source == Path::new("/work/app")),
            ),
            (
                vec!["--backup-dir", "/b", "list"],
                Box::new(|s| s.backup_dir == Path::new("/b")),
            ),
            (
                vec!["--log-file", "x.log", "status"],
                Box::new(|s| s.log.file == Some(PathBuf::from("/work/x.log"))),
            ),
            (
                vec!["--log-format", "json", "status"],
                Box::new(|s| s.log.format == LogFormat::Json),
            ),
            (
                vec!["backup", "--compression", "zstd:7"],
                Box::new(|s| s.backup.compression == Compression::Zstd(7)),
            ),
            (
                vec!["backup", "--encryption", "none"],
                Box::new(|s| matches!(s.backup.encryption, Encryption::None)),
            ),
            (
                vec!["backup", "--recipient", key],
                Box::new(
                    move |s| matches!(&s.backup.encryption, Encryption::Age(k) if k.recipients == [key]),
                ),
            ),
            (
                vec!["daemon", "--recipients-file", r],
                Box::new(
                    move |s| matches!(&s.backup.encryption, Encryption::Age(k) if k.recipients == [key]),
                ),
            ),
            (
                vec!["backup", "--passphrase-file", p],
                Box::new(|s| {
                    s.keys
                        .passphrase
                        .as_ref()
                        .is_some_and(|x| x.expose() == "pass phrase")
                }),
            ),
            (
                vec!["restore", "latest", "--passphrase-file", p],
                Box::new(|s| s.keys.passphrase.is_some()),
            ),
            (
                vec!["verify", "--passphrase-file", p],
                Box::new(|s| s.keys.passphrase.is_some()),
            ),
            (
                vec!["backup", "--exclude", "*.tmp", "--exclude", "cache/"],
                Box::new(|s| s.backup.excludes == ["*.tmp", "cache/"]),
            ),
            (
                vec!["backup", "--mongo-uri", "mongodb://h/app"],
                Box::new(|s| {
                    s.backup
                        .mongo
                        .as_ref()
                        .is_some_and(|m| m.uri.expose() == "mongodb://h/app")
                }),
            ),
            (
                vec![
                    "daemon",
                    "--mongo-uri",
                    "mongodb://h/",
                    "--db",
                    "a",
                    "--db",
                    "b",
                ],
                Box::new(|s| {
                    s.backup
                        .mongo
                        .as_ref()
                        .is_some_and(|m| m.selection.databases == ["a", "b"])
                }),
            ),
            (
                vec![
                    "backup",
                    "--mongo-uri",
                    "mongodb://h/",
                    "--collection",
                    "a.c",
                ],
                Box::new(|s| {
                    s.backup
                        .mongo
                        .as_ref()
                        .is_some_and(|m| m.selection.collections == ["a.c"])
                }),
            ),
            (
                vec!["daemon", "--schedule", "*/5 * * * *"],
                Box::new(|s| s.daemon.schedule.text() == "*/5 * * * *"),
            ),
        ];
        for (args, check) in cases {
            assert!(check(&resolve(&args)), "{args:?}");
        }
    }
}
