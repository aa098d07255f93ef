//! `cofre prune`: the retention plan, printed with reasons, then applied.

use crate::cli::PruneArgs;
use crate::config::Settings;
use crate::prune;
use crate::store::{Store, StoreError};

use super::{Outcome, duration_flag};

/// Runs `cofre prune`.
pub fn run(
    args: &PruneArgs,
    settings: &Settings,
    out: &mut dyn std::io::Write,
) -> Result<Outcome, anyhow::Error> {
    let wait = duration_flag("--wait", args.lock.wait.as_deref())?;
    let store = match Store::open(&settings.backup_dir) {
        Ok(s) => s,
        Err(StoreError::Missing(_)) => {
            writeln!(out, "no archives in {}", settings.backup_dir.display())?;
            return Ok(Outcome::Success);
        }
        Err(e) => return Err(e.into()),
    };
    let _lock = if args.dry_run {
        None
    } else {
        Some(store.lock(wait)?)
    };
    tracing::info!(dry_run = args.dry_run, "prune started");
    let trusted = super::access(settings, &crate::cli::KeyArgs::default())?.trusted;
    let decisions = prune::plan(&store, &settings.prune(), &trusted, chrono::Utc::now())?;
    for d in &decisions {
        let verb = match (d.keep, args.dry_run) {
            (true, _) => "keep        ",
            (false, true) => "would delete",
            (false, false) => "delete      ",
        };
        writeln!(out, "{verb} {}  ({})", d.name, d.reasons.join("; "))?;
    }
    if decisions.is_empty() {
        writeln!(out, "no archives in {}", store.dir().display())?;
    }
    let slices = prune::slice_plan(&store, &decisions, &trusted, &settings.source);
    for (name, why) in &slices {
        let verb = if args.dry_run {
            "would delete"
        } else {
            "delete      "
        };
        writeln!(out, "{verb} oplog/{name}  ({why})")?;
    }
    if args.dry_run {
        return Ok(Outcome::Success);
    }
    let deleted = prune::apply(&store, &decisions)?;
    prune::apply_slices(&store, &slices)?;
    tracing::info!(kept = decisions.len() - deleted, deleted, "prune finished");
    Ok(Outcome::Success)
}
