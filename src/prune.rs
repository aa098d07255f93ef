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

use crate::retention::{self, Candidate, Decision, RetentionPolicy};
use crate::schedule::Zone;
use crate::sign::{Origin, Standing, TrustedKeys};
use crate::state::State;
use crate::store::{Store, StoreError};

/// What retention is applied to, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// `BACKUP_DIR`.
    pub backup_dir: std::path::PathBuf,
    /// The project: only its archives are managed.
    pub source: std::path::PathBuf,
    /// The rules.
    pub policy: RetentionPolicy,
    /// The time zone of days, weeks and months.
    pub zone: Zone,
}

/// The plan for the archives in `store` at `now`, newest first: this
/// project's trusted archives by the policy, everything else left alone.
pub fn plan(
    store: &Store,
    opts: &Options,
    trusted: &TrustedKeys,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, StoreError> {
    let origin = Origin::here(&opts.source);
    let mut candidates = Vec::new();
    let mut left_alone = Vec::new();
    for a in store.list()? {
        let text = crate::sign::read_sig(&a.path).ok().flatten();
        match crate::sign::standing(&a.name, text.as_deref(), trusted, &origin) {
            Standing::Ours(claim) => candidates.push(Candidate {
                name: a.name,
                time: a.parsed.time,
                base: claim.base.map(|b| b.name),
            }),
            other => {
                let why = format!("it {}", other.refusal().unwrap_or_default());
                left_alone.push(retention::left_alone(&a.name, a.parsed.time, &why));
            }
        }
    }
    let mut decisions = retention::plan(&candidates, &opts.policy, now, opts.zone);
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

/// The oplog slices no kept archive needs once `decisions` are applied:
/// those that end at or before the oldest kept base's dump (a base only
/// replays what comes after it). Each with why.
pub fn slice_plan(
    store: &Store,
    decisions: &[Decision],
    trusted: &TrustedKeys,
    source: &std::path::Path,
) -> Vec<(String, String)> {
    let origin = Origin::here(source);
    let kept: Vec<crate::oplog::window::Base> =
        crate::oplog::capture::bases(store, trusted, &origin)
            .into_iter()
            .filter(|b| decisions.iter().any(|d| d.keep && d.name == b.name))
            .collect();
    let (slices, _) =
        crate::oplog::slice::list(&store.dir().join(crate::oplog::DIR), trusted, &origin);
    let oldest = kept
        .iter()
        .min_by_key(|b| b.cluster)
        .map(|b| b.name.clone());
    crate::oplog::window::deletable(&kept, &slices)
        .into_iter()
        .map(|i| {
            (
                slices[i].name.clone(),
                format!(
                    "it ends before the dump of {}, the oldest archive kept",
                    oldest.as_deref().unwrap_or("?")
                ),
            )
        })
        .collect()
}

/// Deletes the slices `plan` names (each with its signature).
pub fn apply_slices(store: &Store, plan: &[(String, String)]) -> Result<usize, StoreError> {
    let dir = store.dir().join(crate::oplog::DIR);
    let mut n = 0;
    for (name, why) in plan {
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            std::fs::remove_file(&path).map_err(|source| StoreError::Io {
                what: "cannot delete",
                path: path.clone(),
                source,
            })?;
            let _ = std::fs::remove_file(crate::sign::sig_path(&path));
            n += 1;
            tracing::info!(slice = %name, "deleted {name}: {why}");
        }
    }
    Ok(n)
}

/// Retention after a backup: planned, applied and logged under the lock.
pub fn after_backup(
    opts: &Options,
    trusted: &TrustedKeys,
    wait: Option<Duration>,
) -> Result<usize, StoreError> {
    let store = Store::open(&opts.backup_dir)?;
    let _lock = store.lock(wait)?;
    let decisions = plan(&store, opts, trusted, Utc::now())?;
    let slices = slice_plan(&store, &decisions, trusted, &opts.source);
    let deleted = apply(&store, &decisions)?;
    apply_slices(&store, &slices)?;
    tracing::info!(
        kept = decisions.len() - deleted,
        deleted,
        "retention applied (BACKUP_RETENTION_DAYS={})",
        opts.policy.days
    );
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;

    fn opts(f: &Fixture, policy: RetentionPolicy) -> Options {
        Options {
            backup_dir: f.backup_dir.clone(),
            source: f.source.clone(),
            policy,
            zone: Zone::parse("UTC").unwrap(),
        }
    }

    #[test]
    fn only_this_projects_signed_archives_are_planned_and_deleted() {
        let f = Fixture::new();
        let old = f.plant_signed("backup_2026-01-01T00-00-00.tar.gz.age", None);
        let newer = f.plant_signed("backup_2026-02-01T00-00-00.tar.gz.age", None);
        let foreign = f.plant_signed(
            "backup_2026-03-01T00-00-00.tar.gz.age",
            Some(Path::new("/srv/other")),
        );
        let unsigned = f.backup_dir.join("backup_2026-04-01T00-00-00.tar.gz.age");
        std::fs::write(&unsigned, b"x").unwrap();
        let policy = RetentionPolicy {
            days: 0,
            keep_last: 1,
            ..RetentionPolicy::default()
        };
        let store = Store::open(&f.backup_dir).unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let plan = plan(&store, &opts(&f, policy), &f.trusted(), now).unwrap();
        let decision = |p: &Path| {
            let name = p.file_name().unwrap().to_str().unwrap();
            plan.iter().find(|d| d.name == name).unwrap().clone()
        };
        assert!(!decision(&old).keep);
        assert!(decision(&newer).keep);
        for p in [&foreign, &unsigned] {
            let d = decision(p);
            assert!(d.keep && d.reasons[0].starts_with("left alone"), "{d:?}");
        }
        assert_eq!(apply(&store, &plan).unwrap(), 1);
        assert!(!old.exists() && newer.exists() && foreign.exists() && unsigned.exists());
    }

    use std::path::Path;
}
