//! Applying retention to `BACKUP_DIR`: the pure plan from [`crate::retention`]
//! for the archives that are there, logged, then carried out under the lock.
//!
//! Anyone who can write to `BACKUP_DIR` can put files there with archive
//! names. Retention plans only over this project's archives signed by a
//! trusted key ([`crate::sign::Standing::Ours`]); every other file is left
//! alone and reported, so it can neither take a keep slot (a tiny unsigned
//! file at a month's end) nor be deleted on a name's word.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::retention::{self, Candidate, Decision};
use crate::sign::{Origin, Standing, TrustedKeys};
use crate::state::State;
use crate::store::{Store, StoreError};

/// The plan for the archives in `store` at `now`, newest first: this
/// project's trusted archives by the policy, everything else left alone.
pub fn plan(
    store: &Store,
    settings: &Settings,
    trusted: &TrustedKeys,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, StoreError> {
    let origin = Origin::here(&settings.source);
    let mut candidates = Vec::new();
    let mut left_alone = Vec::new();
    for a in store.list()? {
        let text = crate::sign::read_sig(&a.path).ok().flatten();
        match crate::sign::standing(&a.name, text.as_deref(), trusted, &origin) {
            Standing::Ours(_) => candidates.push(Candidate {
                name: a.name,
                time: a.parsed.time,
            }),
            other => {
                let why = format!("it {}", other.refusal().unwrap_or_default());
                left_alone.push(retention::left_alone(&a.name, a.parsed.time, &why));
            }
        }
    }
    let mut decisions = retention::plan(
        &candidates,
        &settings.retention,
        now,
        settings.schedule.zone(),
    );
    decisions.extend(left_alone);
    decisions.sort_by(|a, b| b.time.cmp(&a.time).then(b.name.cmp(&a.name)));
    Ok(decisions)
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
pub fn after_backup(
    settings: &Settings,
    trusted: &TrustedKeys,
    wait: Option<Duration>,
) -> Result<usize, StoreError> {
    let store = Store::open(&settings.backup_dir)?;
    let _lock = store.lock(wait)?;
    let decisions = plan(&store, settings, trusted, Utc::now())?;
    let deleted = apply(&store, &decisions)?;
    tracing::info!(
        kept = decisions.len() - deleted,
        deleted,
        "retention applied (BACKUP_RETENTION_DAYS={})",
        settings.retention.days
    );
    Ok(deleted)
}
