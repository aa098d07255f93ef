//! Applying retention to `BACKUP_DIR`: the pure plan from [`crate::retention`]
//! for the archives that are there, logged, then carried out under the lock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::retention::{self, Candidate, Decision};
use crate::state::State;
use crate::store::{Store, StoreError};

/// The plan for the archives in `store` at `now`, newest first.
pub fn plan(
    store: &Store,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, StoreError> {
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
        now,
        settings.schedule.zone(),
    ))
}

/// Deletes what the plan says, logging each deletion with its reason, and
/// forgets deleted archives in the state file. Returns how many went.
pub fn apply(store: &Store, decisions: &[Decision]) -> Result<usize, StoreError> {
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
        if let Err(e) = state.save(store.dir()) {
            tracing::warn!(
                "cannot update the state file in {}: {e}",
                store.dir().display()
            );
        }
    }
    Ok(deleted)
}

/// Retention after a backup: planned, applied and logged under the lock.
pub fn after_backup(settings: &Settings, wait: Option<Duration>) -> Result<usize, StoreError> {
    let store = Store::open(&settings.backup_dir)?;
    let _lock = store.lock(wait)?;
    let decisions = plan(&store, settings, Utc::now())?;
    let deleted = apply(&store, &decisions)?;
    tracing::info!(
        kept = decisions.len() - deleted,
        deleted,
        "retention applied (BACKUP_RETENTION_DAYS={})",
        settings.retention.days
    );
    Ok(deleted)
}
