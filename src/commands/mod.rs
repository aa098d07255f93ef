//! One module per subcommand: orchestration only, the work is in the library
//! modules. This file turns the parsed command line into [`Settings`] (flags
//! are handed to the configuration under their variable's name), sets up
//! logging and dispatches.

mod backup;
mod daemon;
mod keygen;
pub(crate) mod list;
mod prune;
mod restore;
mod status;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::archive::crypt::ReadKeys;
use crate::cli::{ArchiveOptions, Cli, Command, KeyArgs, MongoSelect};
use crate::config::{self, ConfigError, Settings, Sources};
use crate::logging::{self, Verbosity};

pub use crate::Outcome;

fn archive_flags(s: &mut Sources, a: &ArchiveOptions) {
    s.flag("BACKUP_COMPRESSION", a.compression.clone());
    s.flag("BACKUP_ENCRYPTION", a.encryption.clone());
    s.flag_list("BACKUP_RECIPIENTS", &a.recipients);
    s.flag("BACKUP_RECIPIENTS_FILE", a.recipients_file.clone());
    s.flag("BACKUP_PASSPHRASE_FILE", a.passphrase_file.clone());
    s.flag_list("BACKUP_EXCLUDE", &a.excludes);
}

fn mongo_flags(s: &mut Sources, m: &MongoSelect) {
    s.flag("BACKUP_MONGODB_URI", m.mongo_uri.clone());
    s.flag_list("BACKUP_MONGODB_DATABASES", &m.databases);
    s.flag_list("BACKUP_MONGODB_COLLECTIONS", &m.collections);
}

fn key_flags(s: &mut Sources, k: &KeyArgs) {
    s.flag("BACKUP_PASSPHRASE_FILE", k.passphrase_file.clone());
}

/// Builds the validated settings for a command line.
pub fn settings(cli: &Cli) -> Result<Settings, anyhow::Error> {
    let mut s = Sources::from_process().context("cannot read the current directory")?;
    let g = &cli.global;
    s.flag("BACKUP_SOURCE", g.source.clone());
    s.flag("BACKUP_DIR", g.backup_dir.clone());
    s.flag("BACKUP_LOG_FILE", g.log_file.clone());
    s.flag("BACKUP_LOG_FORMAT", g.log_format.clone());
    match &cli.command {
        Command::Backup(a) => {
            archive_flags(&mut s, &a.archive);
            mongo_flags(&mut s, &a.mongo);
        }
        Command::Daemon(a) => {
            archive_flags(&mut s, &a.archive);
            mongo_flags(&mut s, &a.mongo);
            s.flag("BACKUP_SCHEDULE", a.schedule.clone());
        }
        Command::Restore(a) => key_flags(&mut s, &a.keys),
        Command::Verify(a) => key_flags(&mut s, &a.keys),
        Command::List(_) | Command::Prune(_) | Command::Status(_) | Command::Keygen(_) => {}
    }
    s.load_dotenv()?;
    Ok(Settings::resolve(&s)?)
}

/// Keys for reading archives: `--identity` files first, then the configured
/// identity file; the configured passphrase.
pub fn read_keys(settings: &Settings, keys: &KeyArgs) -> ReadKeys {
    let mut identity_files: Vec<PathBuf> = keys.identities.clone();
    identity_files.push(settings.identity_file.clone());
    ReadKeys {
        identity_files,
        passphrase: settings.passphrase.clone(),
    }
}

/// The keys whose signatures are trusted: this installation's signing key,
/// keys named in the identity files used to decrypt, `BACKUP_TRUSTED_KEYS`.
pub fn trusted_keys(
    settings: &Settings,
    keys: &ReadKeys,
) -> Result<crate::sign::TrustedKeys, crate::sign::SignError> {
    crate::sign::TrustedKeys::load(
        &settings.signing_key,
        &keys.identity_files,
        &settings.trusted_keys,
    )
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

/// Runs a parsed command line.
pub fn run(cli: &Cli) -> Result<Outcome, anyhow::Error> {
    if let Command::Keygen(args) = &cli.command {
        return keygen::run(args);
    }
    let settings = settings(cli)?;
    let verbosity = if cli.global.quiet {
        Verbosity::Quiet
    } else if cli.global.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let is_daemon = matches!(cli.command, Command::Daemon(_));
    logging::init(
        settings.log_format,
        settings.log_file.as_deref(),
        verbosity,
        is_daemon,
    );
    match &cli.command {
        Command::Backup(a) => backup::run(a, &settings, verbosity),
        Command::Restore(a) => restore::run(a, &settings, verbosity),
        Command::List(a) => list::run(a, &settings),
        Command::Verify(a) => verify::run(a, &settings),
        Command::Prune(a) => prune::run(a, &settings),
        Command::Daemon(a) => daemon::run(a, &settings, verbosity),
        Command::Status(a) => status::run(a, &settings),
        Command::Keygen(_) => unreachable!("handled above"),
    }
}
