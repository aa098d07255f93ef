//! `cofre prune`: the retention plan, printed with reasons, then applied.

use std::time::Duration;

use chrono::Utc;

use crate::cli::PruneArgs;
use crate::config::Settings;
use crate::retention::{self, Candidate, Decision};
use crate::state::State;
use crate::store::Store;

use super::{Outcome, duration_flag};

/// The plan for the archives in `store`, newest first.
fn plan(store: &Store, settings: &Settings) -> Result<Vec<Decision>, anyhow::Error> {
    let candidates: Vec<Candidate> = store
        .list()?
        .into_iter()
        .map(|a| Candidate {
            name: a.name,
            time: a.parsed.time,
        })
        .collect();
    Ok(retention::plan(
        &candidates,
        &settings.retention,
        Utc::now(),
        settings.schedule.zone(),
    ))
}

/// Applies a plan: deletes what it says, logging each deletion. Returns the
/// number deleted. Stops at the first failure (and says which).
fn apply(store: &Store, decisions: &[Decision]) -> Result<usize, anyhow::Error> {
    let mut deleted = 0;
    for d in decisions.iter().filter(|d| !d.keep) {
        store.delete(&d.name)?;
        deleted += 1;
        tracing::info!(archive = %d.name, "deleted {}: {}", d.name, d.reasons.join("; "));
    }
    if deleted > 0 {
        store.sync()?;
        let existing: Vec<String> = store.list()?.into_iter().map(|a| a.name).collect();
        let mut state = State::load(store.dir());
        state.retain_archives(&existing);
        let _ = state.save(store.dir());
    }
    Ok(deleted)
}

/// Retention after a backup: logged, not printed.
pub fn after_backup(settings: &Settings, wait: Option<Duration>) -> Result<(), anyhow::Error> {
    let store = Store::open(&settings.backup_dir)?;
    let _lock = store.lock(wait)?;
    let decisions = plan(&store, settings)?;
    let deleted = apply(&store, &decisions)?;
    tracing::info!(
        kept = decisions.len() - deleted,
        deleted,
        "retention applied (BACKUP_RETENTION_DAYS={})",
        settings.retention.days
    );
    Ok(())
}

/// Runs `cofre prune`.
pub fn run(args: &PruneArgs, settings: &Settings) -> Result<Outcome, anyhow::Error> {
    let wait = duration_flag("--wait", args.lock.wait.as_deref())?;
    let store = match Store::open(&settings.backup_dir) {
        Ok(s) => s,
        Err(_) => {
            println!("no archives in {}", settings.backup_dir.display());
            return Ok(Outcome::Success);
        }
    };
    let _lock = if args.dry_run {
        None
    } else {
        Some(store.lock(wait)?)
    };
    tracing::info!(dry_run = args.dry_run, "prune started");
    let decisions = plan(&store, settings)?;
    for d in &decisions {
        let verb = match (d.keep, args.dry_run) {
            (true, _) => "keep  ",
            (false, true) => "would delete",
            (false, false) => "delete",
        };
        println!("{verb} {}  ({})", d.name, d.reasons.join("; "));
    }
    if args.dry_run {
        return Ok(Outcome::Success);
    }
    let deleted = apply(&store, &decisions)?;
    tracing::info!(kept = decisions.len() - deleted, deleted, "prune finished");
    Ok(Outcome::Success)
}
