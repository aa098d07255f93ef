//! cofre: automatic backups of an application's files and MongoDB database
//! into one compressed, encrypted archive, with a scheduler, retention and
//! restores that never harm what they restore into.
//!
//! # Map
//!
//! Layers point one way, top to bottom; no module imports from a layer
//! above it.
//!
//! - **Entry.** [`cli`] — the command line as clap parses it (raw);
//!   `commands` — one module per subcommand: builds the settings from the
//!   flags, orchestrates, prints.
//! - **Settings.** `vars` — every setting defined once (variable, flag,
//!   default, help); `config` — flags, environment and `.env` resolved and
//!   validated into `Settings`.
//! - **Domain.** `backup` — one backup from start to finish; `daemon` — the
//!   scheduler loop (clock and jobs injected); `restore` — staging confined
//!   by the kernel, link checks, planned placement; `open` — finding an
//!   archive and checking its signature while it is read; `mongo` — native
//!   dump and restore in mongodump's formats; `prune` applies `retention`, a
//!   pure plan; `schedule` — pure cron arithmetic; `state` — the state files
//!   and the health decision; `report` — what follows each run: the metrics
//!   file (`metrics`, rendered from the state files, also served by the
//!   daemon) and the run's event sent to `notify`'s targets.
//! - **Primitives.** `archive` — the streaming pipeline (tar, gzip/zstd,
//!   age), the manifest, reading with verification and caps; `store` —
//!   `BACKUP_DIR`: names, atomic writes, listing, the lock; `sign` —
//!   minisign signatures and trusted keys; `beneath` — filesystem operations
//!   that cannot leave a directory; `spool` — records on disk; `walk` —
//!   what of the project goes in; `secret`, `logging`, `format`.
//!
//! The binary (`src/main.rs`) parses the command line, resolves the
//! settings ([`prepare`]), sets up logging from them ([`init_logging`]),
//! calls [`run`], and maps the result to an exit code: 0 success, 1 failure,
//! 2 invalid configuration or usage, 3 done with warnings (files skipped or
//! changed).

pub(crate) mod archive;
pub(crate) mod backup;
pub(crate) mod beneath;
pub mod cli;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod drill;
pub(crate) mod format;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod mongo;
pub(crate) mod notify;
pub(crate) mod offsite;
pub(crate) mod open;
pub(crate) mod prune;
pub(crate) mod remote;
pub(crate) mod report;
pub(crate) mod restore;
pub(crate) mod retention;
pub(crate) mod schedule;
pub(crate) mod secret;
pub(crate) mod sign;
pub(crate) mod spool;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod vars;
pub(crate) mod walk;

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

pub use commands::{init_logging, prepare, run};
pub use logging::{EXIT_TARGET, LogFormat};

/// The archive format's building blocks, for tools and tests that write
/// archives by hand (the integration tests build hostile ones with them),
/// and the pieces of the database dump the benchmark drives directly.
pub mod parts {
    pub use crate::archive::manifest::{Entry, FORMAT, FORMAT_VERSION};
    pub use crate::archive::tarenc::{EntryMeta, Kind, TarEncoder};
    pub use crate::mongo::dump::drain_collection;
    pub use crate::mongo::escape_name;
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

/// The one-line message for an error, secrets scrubbed: each cause in the
/// chain once (many messages already quote their cause, such as the OS
/// error, which `{:#}` would print a second time).
pub fn error_message(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    secret::scrub(&msg)
}
