//! Offsite copies: every local archive the bucket should hold goes up
//! (with its signature), then remote retention runs on the bucket's
//! listing with the same pure plan as local retention.
//!
//! A sync is idempotent: what the bucket has is not sent again, so a run
//! after an outage uploads everything missed. Each upload is retried with
//! backoff; when one still fails, the sync stops, the local archives stay,
//! and the failure is recorded (`status`, and exit code 3 for `backup`).
//! A deletion a lock refuses is reported once and not tried again for a
//! day.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{RemoteSettings, Settings};
use crate::remote::{Deleted, Remote, RemoteError};
use crate::retention::{self, Candidate};
use crate::state::{Failure, OffsiteState};
use crate::store::{Store, StoreError};

/// Attempts per archive, and the wait before each retry.
const BACKOFF: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(6)];

/// Why a sync could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    /// The bucket.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The local directory.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Archives uploaded.
    pub uploaded: Vec<String>,
    /// Archives deleted from the bucket by retention.
    pub deleted: Vec<String>,
    /// Deletions a lock refused (first time only).
    pub refused: Vec<String>,
    /// The newest archive in the bucket afterwards.
    pub newest: Option<String>,
}

/// Uploads what the bucket lacks, applies remote retention, records the
/// outcome in `BACKUP_DIR`. `cancel` stops it between parts.
#[tracing::instrument(name = "upload", skip_all, fields(remote = %remote.url))]
pub fn sync(
    settings: &Settings,
    remote: &RemoteSettings,
    cancel: &AtomicBool,
) -> Result<SyncReport, OffsiteError> {
    let store = Store::open(&settings.backup_dir)?;
    let mut state = OffsiteState::load(store.dir());
    state.remote = remote.url.clone();
    let result = sync_with(settings, &store, remote, &mut state, cancel);
    let now = Utc::now();
    match &result {
        Ok(report) => {
            state.last_success = Some(now);
            if let Some(newest) = &report.newest {
                state.newest_copy = Some(newest.clone());
                state.newest_copy_time = crate::store::ArchiveName::parse(newest).map(|p| p.time);
            }
        }
        Err(e) => {
            state.last_failure = Some(Failure {
                at: now,
                error: crate::secret::scrub(&e.to_string()),
            });
        }
    }
    if let Err(e) = state.save(store.dir()) {
        tracing::warn!(
            "cannot record the offsite state in {}: {e}",
            store.dir().display()
        );
    }
    result
}

fn sync_with(
    settings: &Settings,
    store: &Store,
    remote: &RemoteSettings,
    state: &mut OffsiteState,
    cancel: &AtomicBool,
) -> Result<SyncReport, OffsiteError> {
    let bucket = Remote::connect(remote)?;
    let now = Utc::now();
    let zone = settings.schedule.zone();
    let remote_list = bucket.list()?;
    let local = store.list()?;
    // What the bucket should hold: the remote plan over everything there
    // is, local and remote; local archives it keeps and the bucket lacks
    // (or holds unsigned) go up, newest first.
    let mut all: Vec<Candidate> = remote_list
        .iter()
        .map(|a| Candidate {
            name: a.name.clone(),
            time: a.parsed.time,
        })
        .collect();
    for a in &local {
        if !all.iter().any(|c| c.name == a.name) {
            all.push(Candidate {
                name: a.name.clone(),
                time: a.parsed.time,
            });
        }
    }
    let plan = retention::plan(&all, &remote.retention, now, zone);
    let wanted: Vec<&crate::store::ArchiveEntry> = local
        .iter()
        .filter(|a| a.signature.is_some())
        .filter(|a| plan.iter().any(|d| d.name == a.name && d.keep))
        .filter(|a| !remote_list.iter().any(|r| r.name == a.name && r.signed))
        .collect();
    state.pending = wanted.iter().map(|a| a.name.clone()).collect();
    let mut report = SyncReport::default();
    for archive in wanted {
        upload_with_retries(&bucket, archive, cancel)?;
        tracing::info!(archive = %archive.name, "uploaded {} to {}", archive.name, remote.url);
        report.uploaded.push(archive.name.clone());
        state.pending.retain(|n| n != &archive.name);
    }
    apply_retention(&bucket, remote, state, &mut report, now, zone)?;
    report.newest = bucket
        .list()?
        .into_iter()
        .find(|a| a.signed)
        .map(|a| a.name);
    Ok(report)
}

fn upload_with_retries(
    bucket: &Remote,
    archive: &crate::store::ArchiveEntry,
    cancel: &AtomicBool,
) -> Result<(), RemoteError> {
    let mut attempt = 0;
    loop {
        match bucket.upload(&archive.path, &archive.name, cancel) {
            Ok(_) => return Ok(()),
            Err(
                e @ (RemoteError::Cancelled
                | RemoteError::Exists { .. }
                | RemoteError::Local { .. }),
            ) => {
                return Err(e);
            }
            Err(e) if attempt < BACKOFF.len() => {
                tracing::warn!(
                    "uploading {} failed (attempt {} of {}), retrying in {}s: {e}",
                    archive.name,
                    attempt + 1,
                    BACKOFF.len() + 1,
                    BACKOFF[attempt].as_secs()
                );
                std::thread::sleep(BACKOFF[attempt]);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deletes what remote retention says, skipping (for a day) deletions a
/// lock refused before.
fn apply_retention(
    bucket: &Remote,
    remote: &RemoteSettings,
    state: &mut OffsiteState,
    report: &mut SyncReport,
    now: DateTime<Utc>,
    zone: crate::schedule::Zone,
) -> Result<(), RemoteError> {
    let listing = bucket.list()?;
    let candidates: Vec<Candidate> = listing
        .iter()
        .map(|a| Candidate {
            name: a.name.clone(),
            time: a.parsed.time,
        })
        .collect();
    state
        .refused_deletions
        .retain(|name, _| candidates.iter().any(|c| &c.name == name));
    for d in retention::plan(&candidates, &remote.retention, now, zone) {
        if d.keep {
            continue;
        }
        if state
            .refused_deletions
            .get(&d.name)
            .is_some_and(|t| *t > now)
        {
            continue;
        }
        match bucket.delete(&d.name)? {
            Deleted::Yes => {
                tracing::info!(archive = %d.name, "deleted {} from {}: {}", d.name, remote.url, d.reasons.join("; "));
                report.deleted.push(d.name);
            }
            Deleted::Locked(why) => {
                tracing::warn!(
                    "cannot delete {} from {}: it is locked ({why}); not trying again before tomorrow",
                    d.name,
                    remote.url
                );
                state
                    .refused_deletions
                    .insert(d.name.clone(), now + chrono::Duration::days(1));
                report.refused.push(d.name);
            }
        }
    }
    Ok(())
}
