//! cofre: automatic backups of an application's files and MongoDB database
//! into one compressed, encrypted archive, with a scheduler, retention and
//! restores that never harm what they restore into.
//!
//! # Map
//!
//! - [`cli`] — the command line as clap parses it (raw, unvalidated).
//! - [`config`] — flags, environment and `.env` → validated [`config::Settings`].
//! - [`commands`] — one module per subcommand; orchestration only.
//! - [`backup`] — one backup from start to finish (used by `backup` and the daemon).
//! - [`daemon`] — the scheduler loop: catch-up, retries, overlap, clean shutdown.
//! - [`walk`] — what of the project goes into the archive (excludes, order).
//! - [`archive`] — the streaming pipeline: tar → gzip/zstd → age → file, and back;
//!   the manifest; reading with verification.
//! - [`mongo`] — native MongoDB dump into the archive and restore from it
//!   (mongodump's layout and formats).
//! - [`restore`] — extraction into a staging directory, path checks, moving into place.
//! - [`store`] — `BACKUP_DIR`: names, atomic writes, listing, the lock.
//! - [`state`] — the small state files (last success, catalog, daemon).
//! - [`retention`] — pure retention planning with reasons; [`prune`] applies it.
//! - [`schedule`] — pure cron schedule arithmetic in a time zone.
//! - [`logging`], [`secret`] — logs, progress, and keeping secrets out of both.
//!
//! The binary (`src/main.rs`) parses the command line, calls [`run`], and
//! maps the result to an exit code: 0 success, 1 failure, 2 invalid
//! configuration or usage, 3 done with warnings (files skipped or changed).

pub mod archive;
pub mod backup;
pub mod beneath;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod format;
pub mod logging;
pub mod mongo;
pub mod open;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod sign;
pub mod spool;
pub mod state;
pub mod store;
pub mod walk;

/// How a command ended, when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything as asked. Exit 0.
    Success,
    /// Done, with warnings recorded (files skipped or changed). Exit 3.
    Warnings,
    /// A check failed and was reported (verify, status). Exit 1.
    Failed,
}

impl Outcome {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failed => 1,
            Outcome::Warnings => 3,
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: &cli::Cli) -> Result<Outcome, anyhow::Error> {
    commands::run(cli)
}

/// The exit code for an error: 2 for configuration and usage, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let usage = err.chain().any(|e| {
        e.is::<config::ConfigError>()
            || e.is::<walk::PatternError>()
            || matches!(
                e.downcast_ref::<store::StoreError>(),
                Some(store::StoreError::NotADirectory(_))
            )
            || matches!(
                e.downcast_ref::<backup::BackupError>(),
                Some(backup::BackupError::Pattern(_))
            )
    });
    if usage { 2 } else { 1 }
}

/// The one-line message for an error, secrets scrubbed.
pub fn error_message(err: &anyhow::Error) -> String {
    secret::scrub(&format!("{err:#}"))
}
