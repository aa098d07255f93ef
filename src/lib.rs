//! cofre: automatic backups of an application's files and MongoDB database
//! into one compressed, encrypted archive, with a scheduler, retention and
//! restores that never harm what they restore into.
//!
//! # Map
//!
//! Layers point one way, top to bottom; no module imports from a layer
//! above it (a test, `the_layers_point_one_way`, reads every file's
//! `crate::` paths and holds them to this list).
//!
//! - **Entry.** [`cli`] — the command line as clap parses it (raw);
//!   `commands` — one module per subcommand: turns the flags into
//!   settings, composes the features, renders into a writer (stdout in the
//!   binary, a buffer in tests). The daemon's real jobs live here too
//!   (`commands::daemon`), since they compose every feature.
//! - **Settings.** `vars` — every setting defined once (variable, flag,
//!   default, help); `config` — flags, environment and `.env` resolved and
//!   validated into `Settings`, a struct of each feature's own options,
//!   built by one resolver per feature.
//! - **Domain.** Each feature owns its options type and never sees the
//!   whole settings: `backup` — one backup from start to finish, full or
//!   differential (`index`: what a full holds, and the plan of a
//!   differential against it); `daemon`
//!   — the scheduler loop (its `Plan`, clock and jobs injected); `restore`
//!   — staging confined by the kernel, link checks, planned placement;
//!   `open` — finding an archive and checking its signature while it is
//!   read; `mongo` — native dump and load in mongodump's formats; `oplog`
//!   — point-in-time recovery: the capture, slices, their window, replay; `drill` —
//!   restore drills; `offsite` — uploads and remote retention, over
//!   `remote`, the bucket; `prune` applies `retention`, a pure plan;
//!   `schedule` — pure cron arithmetic; `state` — the state files and the
//!   health decision; `report` — what follows each run: the metrics file
//!   (`metrics`, rendered from the state files, also served by the daemon)
//!   and the run's event sent to `notify`'s targets.
//! - **Primitives.** `archive` — the streaming pipeline (tar, gzip/zstd,
//!   age), the manifest, reading with verification and caps; `store` —
//!   `BACKUP_DIR`: names, atomic writes, listing, the lock; `sign` —
//!   minisign signatures, the signed claim, trusted keys; `keys` — the
//!   configured keys; `beneath` — filesystem operations that cannot leave a
//!   directory; `walk` — what of the project goes in, opened beneath
//!   handles; `spool` — records on disk; `exit` — exit codes; `rt` — the
//!   async runtimes; `secret`, `logging`, `format`.
//!
//! # Runtimes
//!
//! Sync core, async islands (see `rt`): the pipeline is threads and
//! blocking I/O; the network clients and the daemon's timers each run on a
//! small runtime of their own that the sync code blocks on.
//!
//! # Exit codes
//!
//! The binary (`src/main.rs`) parses the command line, resolves the
//! settings ([`prepare`]), sets up logging from them ([`init_logging`]),
//! calls [`run`], and maps the result to an exit code: 0 success, 1
//! failure, 2 invalid configuration or usage, 3 done with warnings, 11 the
//! lock is held, 12 no key opens the archive. Each error type says its own
//! code ([`exit::Coded`]).

// Every dependency is used by the library (the binary is a thin shell):
// one that is no longer used fails the lint, and so `clippy -D warnings`.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub(crate) mod archive;
pub(crate) mod backup;
pub(crate) mod beneath;
pub mod cli;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod drill;
pub mod exit;
pub(crate) mod format;
pub(crate) mod index;
pub(crate) mod keys;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod mongo;
pub(crate) mod notify;
pub(crate) mod offsite;
pub(crate) mod open;
pub(crate) mod oplog;
pub(crate) mod prune;
pub(crate) mod remote;
pub(crate) mod report;
pub(crate) mod restore;
pub(crate) mod retention;
pub(crate) mod rt;
pub(crate) mod schedule;
pub(crate) mod secret;
pub(crate) mod sign;
pub(crate) mod spool;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod vars;
pub(crate) mod walk;

#[cfg(test)]
mod testutil;

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
            Outcome::Success => exit::Exit::Success,
            Outcome::Failed => exit::Exit::Failure,
            Outcome::Warnings => exit::Exit::Warnings,
        }
        .code()
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

/// Every error type, for [`exit_code`]: each says its own code
/// ([`exit::Coded`]); a test checks that none in the source is missing here.
macro_rules! coded {
    ($($t:ty),* $(,)?) => {
        /// The exit code an error in a chain says, the outermost first.
        fn code_of(e: &(dyn std::error::Error + 'static)) -> Option<exit::Exit> {
            use exit::Coded;
            $(if let Some(x) = e.downcast_ref::<$t>() {
                return Some(x.exit());
            })*
            None
        }

        /// The names of the error types known to [`code_of`].
        #[cfg(test)]
        const CODED: &[&str] = &[$(stringify!($t)),*];
    };
}

coded!(
    config::ConfigError,
    walk::PatternError,
    store::StoreError,
    archive::crypt::CryptError,
    archive::layers::OpenError,
    archive::reader::ReadError,
    sign::SignError,
    mongo::MongoError,
    backup::BackupError,
    restore::place::PlaceError,
    restore::RestoreError,
    remote::RemoteError,
    offsite::OffsiteError,
    open::OpenArchiveError,
    metrics::MetricsError,
    commands::daemon::DaemonError,
    commands::drill::DrillFailed,
    oplog::PitrError,
    oplog::history::HistoryError,
    oplog::slice::SliceError,
    oplog::capture::CaptureError,
    oplog::window::WindowError,
);

/// The exit code for an error: what the outermost error that knows its
/// code says (`1` for one that knows none, such as an I/O error on
/// stdout).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(code_of)
        .unwrap_or(exit::Exit::Failure)
        .code()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer of each top-level module: 0 entry, 1 settings, 2 domain,
    /// 3 primitives (the map above).
    fn layer(module: &str) -> Option<u8> {
        Some(match module {
            "cli" | "commands" => 0,
            "config" | "vars" => 1,
            "backup" | "daemon" | "drill" | "offsite" | "remote" | "restore" | "open" | "mongo"
            | "prune" | "retention" | "schedule" | "state" | "report" | "metrics" | "notify"
            | "index" | "oplog" => 2,
            "archive" | "store" | "walk" | "beneath" | "sign" | "keys" | "spool" | "secret"
            | "logging" | "format" | "exit" | "rt" => 3,
            _ => return None,
        })
    }

    #[test]
    fn the_layers_point_one_way() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let mut seen = 0;
        for file in files {
            let rel = file.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap()
                .trim_end_matches(".rs");
            if top == "lib" || top == "main" || top == "testutil" {
                continue;
            }
            let from = layer(top).unwrap_or_else(|| panic!("{top} is not on the map in lib.rs"));
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for (i, _) in code.match_indices("crate::") {
                let to: String = code[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let Some(to_layer) = layer(&to) else {
                    continue;
                };
                seen += 1;
                assert!(
                    to_layer >= from,
                    "{} (layer {from}) imports crate::{to} (layer {to_layer}), a layer above it",
                    rel.display()
                );
            }
        }
        assert!(seen > 100, "{seen} paths read");
    }

    /// Every `thiserror` type in the source, by name.
    fn error_types() -> Vec<String> {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    let mut lines = text.lines();
                    while let Some(l) = lines.next() {
                        let derive = l.trim_start().starts_with("#[derive(");
                        if !(derive && l.contains("thiserror::Error")) {
                            continue;
                        }
                        let decl = lines
                            .by_ref()
                            .find(|l| l.contains("enum ") || l.contains("struct "))
                            .unwrap();
                        let name = decl
                            .split_whitespace()
                            .skip_while(|w| *w != "enum" && *w != "struct")
                            .nth(1)
                            .unwrap()
                            .trim_end_matches('{')
                            .to_owned();
                        out.push(name);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut out,
        );
        out
    }

    #[test]
    fn every_error_type_says_its_exit_code() {
        let types = error_types();
        assert!(types.len() >= 15, "{types:?}");
        for t in types {
            assert!(
                CODED
                    .iter()
                    .any(|c| c.rsplit("::").next() == Some(t.as_str())),
                "{t} is an error type the exit code does not know: add it to `coded!` in lib.rs"
            );
        }
    }

    #[test]
    fn the_lock_and_a_missing_key_have_codes_of_their_own() {
        let locked = anyhow::Error::from(backup::BackupError::Store(store::StoreError::Locked {
            dir: "/b".into(),
            pid: Some(7),
        }));
        assert_eq!(exit_code(&locked), 11);
        let no_key = anyhow::Error::from(open::OpenArchiveError::NoKey(
            archive::crypt::CryptError::NoIdentity {
                archive: "a".into(),
                identity: "/i".into(),
            },
        ));
        assert_eq!(exit_code(&no_key), 12);
        let usage = anyhow::Error::from(config::ConfigError::Conflict("x".into()))
            .context("while starting");
        assert_eq!(exit_code(&usage), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), 1);
    }
}
