//! Offsite copies: every local archive the bucket should hold goes up
//! (with its signature), then remote retention runs on the bucket's
//! listing with the same pure plan as local retention.
//!
//! A sync is idempotent: what the bucket has is not sent again, so a run
//! after an outage uploads everything missed. "What the bucket has" is
//! proven, not read off a listing: an object counts as cofre's copy when
//! it is what an earlier upload recorded (ETag and version), or has the
//! local file's size and ETag (or bytes). Each upload is retried with
//! backoff; when one still fails, the sync stops, the local archives stay,
//! and the failure is recorded (`status`, and exit code 3 for `backup`).
//!
//! Only this project's archives signed by a trusted key go up, and remote
//! retention plans over the same kind in the bucket: an object someone
//! else put there is never counted, never deleted on its name's word. A
//! deletion a lock refuses is reported once and not tried again for a day.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::remote::{Deleted, Remote, RemoteArchive, RemoteError};
use crate::retention::{self, Candidate};
use crate::sign::{Claim, Origin, SignError, Standing, TrustedKeys};
use crate::state::{Failure, OffsiteState};
use crate::store::{ArchiveEntry, Store, StoreError};

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
    /// The trusted keys.
    #[error(transparent)]
    Sign(#[from] SignError),
}

impl crate::exit::Coded for OffsiteError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            OffsiteError::Remote(e) => e.exit(),
            OffsiteError::Store(e) => e.exit(),
            OffsiteError::Sign(e) => e.exit(),
        }
    }
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
    /// Archives whose current version in the bucket is not cofre's.
    pub overwritten: Vec<String>,
    /// Oplog slices uploaded.
    pub slices_uploaded: usize,
    /// Oplog slices deleted from the bucket (no kept archive needs them).
    pub slices_deleted: usize,
}

/// What is copied offsite, where to, and under which keys.
#[derive(Debug, Clone)]
pub struct Options {
    /// `BACKUP_DIR`: the archives to copy, and the offsite record.
    pub backup_dir: std::path::PathBuf,
    /// The project: only its archives go up, and only its are managed
    /// in the bucket.
    pub source: std::path::PathBuf,
    /// The time zone of remote retention's days, weeks and months.
    pub zone: crate::schedule::Zone,
    /// The bucket.
    pub remote: crate::remote::Options,
    /// The keys whose signatures make an archive this installation's.
    pub keys: crate::keys::Options,
}

/// Uploads what the bucket lacks, applies remote retention, records the
/// outcome in `BACKUP_DIR`. `cancel` stops it between parts.
#[tracing::instrument(name = "upload", skip_all, fields(remote = %opts.remote.url))]
pub fn sync(opts: &Options, cancel: &AtomicBool) -> Result<SyncReport, OffsiteError> {
    let remote = &opts.remote;
    let store = Store::open(&opts.backup_dir)?;
    let mut state = OffsiteState::load(store.dir());
    state.remote = remote.url.clone();
    let result = sync_with(opts, &store, &mut state, cancel);
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
    opts: &Options,
    store: &Store,
    state: &mut OffsiteState,
    cancel: &AtomicBool,
) -> Result<SyncReport, OffsiteError> {
    let remote = &opts.remote;
    let bucket = Remote::connect(remote)?;
    let (_, trusted) = opts.keys.load()?;
    let origin = Origin::here(&opts.source);
    let now = Utc::now();
    let zone = opts.zone;
    let listing = bucket.list()?;
    let in_bucket = ours_in_bucket(&bucket, &listing, &trusted, &origin)?;
    let local: Vec<(ArchiveEntry, Option<String>)> = store
        .list()?
        .into_iter()
        .filter_map(|a| {
            let text = crate::sign::read_sig(&a.path).ok().flatten();
            match crate::sign::standing(&a.name, text.as_deref(), &trusted, &origin) {
                Standing::Ours(claim) => Some((a, claim.base.map(|b| b.name))),
                _ => None,
            }
        })
        .collect();
    // What the bucket should hold: the remote plan over this project's
    // trusted archives, local and remote; local archives it keeps go up
    // unless the bucket has cofre's copy, newest first, except that a
    // differential's full goes up before it (the bucket never holds a
    // differential it cannot restore, for longer than an upload).
    let mut all: Vec<Candidate> = in_bucket
        .iter()
        .map(|(a, claim)| candidate(a, claim))
        .collect();
    for (a, base) in &local {
        if !all.iter().any(|c| c.name == a.name) {
            all.push(Candidate {
                name: a.name.clone(),
                time: a.parsed.time,
                base: base.clone(),
            });
        }
    }
    let plan = retention::plan(&all, &remote.retention, now, zone);
    let keeps = |name: &str| plan.iter().any(|d| d.name == name && d.keep);
    let mut wanted: Vec<&ArchiveEntry> = Vec::new();
    for (a, base) in &local {
        if !keeps(&a.name) || wanted.iter().any(|w| w.name == a.name) {
            continue;
        }
        if let Some(full) = base
            .as_deref()
            .and_then(|b| local.iter().find(|(l, _)| l.name == b))
            && !wanted.iter().any(|w| w.name == full.0.name)
        {
            wanted.push(&full.0);
        }
        wanted.push(a);
    }
    state.pending = wanted.iter().map(|a| a.name.clone()).collect();
    state.copies.retain(|name, _| {
        name.starts_with(&format!("{}/", crate::oplog::DIR))
            || listing.iter().any(|r| &r.name == name)
    });
    let mut report = SyncReport::default();
    for archive in wanted {
        let listed = listing.iter().find(|r| r.name == archive.name);
        let known = state.copies.get(&archive.name).cloned();
        let up = upload_with_retries(&bucket, archive, listed, known.as_ref(), cancel)?;
        if up.sent {
            tracing::info!(archive = %archive.name, "uploaded {} to {}", archive.name, remote.url);
            report.uploaded.push(archive.name.clone());
        }
        if up.overwritten {
            tracing::warn!(
                "the current version of {} in {} is not cofre's: someone wrote over it; \
                 restores read the version cofre wrote",
                archive.name,
                remote.url
            );
            report.overwritten.push(archive.name.clone());
        }
        state.copies.insert(archive.name.clone(), up.copies);
        state.pending.retain(|n| n != &archive.name);
    }
    state.overwritten = report.overwritten.clone();
    if remote.lock != crate::remote::LockMode::Off && !report.uploaded.is_empty() {
        extend_locks(&bucket, &all, &report.uploaded)?;
    }
    // The bucket as the uploads left it; what retention deletes from it
    // is all that changes before the slices' turn.
    let listing = bucket.list()?;
    let ours = ours_in_bucket(&bucket, &listing, &trusted, &origin)?;
    apply_retention(&bucket, remote, state, &mut report, now, zone, &ours)?;
    let kept: Vec<_> = ours
        .iter()
        .filter(|(a, _)| !report.deleted.contains(&a.name))
        .collect();
    report.newest = kept.first().map(|(a, _)| a.name.clone());
    // The oldest base the bucket keeps: slices that end before it go.
    let oldest_base = kept
        .iter()
        .filter_map(|(_, claim)| claim.cluster.as_deref().and_then(crate::oplog::Ts::parse))
        .min();
    sync_slices(
        &bucket,
        store,
        state,
        &mut report,
        &trusted,
        &origin,
        oldest_base,
        cancel,
    )?;
    Ok(report)
}

/// The oplog slices: every local one (signed here, this project's) the
/// bucket lacks goes up (with its signature, locked like archives); then
/// the bucket's slices that end before the oldest base it keeps go, once
/// their signature says they are this project's.
#[allow(clippy::too_many_arguments)]
fn sync_slices(
    bucket: &Remote,
    store: &Store,
    state: &mut OffsiteState,
    report: &mut SyncReport,
    trusted: &TrustedKeys,
    origin: &Origin,
    oldest_base: Option<crate::oplog::Ts>,
    cancel: &AtomicBool,
) -> Result<(), RemoteError> {
    use crate::oplog::{DIR, parse_slice_name, slice};
    let (local, _) = slice::list(&store.dir().join(DIR), trusted, origin);
    let remote = bucket.list_sub(DIR, |n| parse_slice_name(n).is_some())?;
    for s in &local {
        let key = format!("{DIR}/{}", s.name);
        let listed = remote.iter().find(|o| o.name == key);
        let recorded = state.copies.get(&key);
        let known = listed.zip(recorded).is_some_and(|(l, r)| {
            l.versions
                .first()
                .is_some_and(|v| v.e_tag == r.archive.e_tag)
                && !l.sig_versions.is_empty()
        });
        if known {
            continue;
        }
        let path = store.dir().join(DIR).join(&s.name);
        let up = bucket.upload(&path, &key, None, recorded, cancel)?;
        if up.sent {
            report.slices_uploaded += 1;
        }
        state.copies.insert(key, up.copies);
    }
    // Remote retention of slices: against the bases the bucket keeps.
    let Some(oldest) = oldest_base else {
        return Ok(());
    };
    // A slice closed before the oldest base's dump ends before it too.
    let candidates: Vec<&crate::remote::RemoteObject> = remote
        .iter()
        .filter(|o| parse_slice_name(o.bare_name()).is_some_and(|t| t < oldest.time()))
        .collect();
    for (o, text) in candidates
        .iter()
        .zip(bucket.object_signatures(&candidates)?)
    {
        let Ok(info) = slice::judge(o.bare_name(), text.as_deref(), trusted, origin) else {
            continue;
        };
        if info.until <= oldest && bucket.delete_object(o)? == Deleted::Yes {
            report.slices_deleted += 1;
            state.copies.remove(&o.name);
        }
    }
    Ok(())
}

/// The retention candidate of an archive in the bucket.
fn candidate(a: &RemoteArchive, claim: &Claim) -> Candidate {
    Candidate {
        name: a.name.clone(),
        time: a.parsed.time,
        base: claim.base.as_ref().map(|b| b.name.clone()),
    }
}

/// Object Lock keeps a full at least as long as its differentials: when a
/// differential went up, or a full with differentials, the full's lock
/// (archive and signature) is extended to its newest differential's date.
/// (A lock can always be extended, never shortened.)
fn extend_locks(
    bucket: &Remote,
    all: &[Candidate],
    uploaded: &[String],
) -> Result<(), RemoteError> {
    let mut until: std::collections::BTreeMap<&str, DateTime<Utc>> = Default::default();
    for c in all {
        if let Some(base) = c.base.as_deref() {
            let t = bucket.retain_until(c.time);
            let e = until.entry(base).or_insert(t);
            *e = (*e).max(t);
        }
    }
    for (base, t) in until {
        let touched = uploaded.iter().any(|u| {
            u == base
                || all
                    .iter()
                    .any(|c| &c.name == u && c.base.as_deref() == Some(base))
        });
        if touched
            && uploaded
                .iter()
                .chain(all.iter().map(|c| &c.name))
                .any(|n| n == base)
        {
            bucket.extend_lock(base, t)?;
            tracing::info!("the lock of {base} now lasts until {t}, as long as its differentials'");
        }
    }
    Ok(())
}

/// This project's archives in the bucket signed by a trusted key (the
/// signature cofre wrote, fetched concurrently), newest first, each with
/// its full when it is a differential.
fn ours_in_bucket<'a>(
    bucket: &Remote,
    listing: &'a [RemoteArchive],
    trusted: &TrustedKeys,
    origin: &Origin,
) -> Result<Vec<(&'a RemoteArchive, Claim)>, RemoteError> {
    let signed: Vec<&RemoteArchive> = listing.iter().filter(|a| a.signed()).collect();
    let texts = bucket.signatures(&signed)?;
    Ok(signed
        .into_iter()
        .zip(texts)
        .filter_map(|(a, text)| {
            match crate::sign::standing(&a.name, text.as_deref(), trusted, origin) {
                Standing::Ours(claim) => Some((a, claim)),
                _ => None,
            }
        })
        .collect())
}

fn upload_with_retries(
    bucket: &Remote,
    archive: &ArchiveEntry,
    listed: Option<&RemoteArchive>,
    known: Option<&crate::remote::Copies>,
    cancel: &AtomicBool,
) -> Result<crate::remote::Uploaded, RemoteError> {
    let mut attempt = 0;
    loop {
        match bucket.upload(&archive.path, &archive.name, listed, known, cancel) {
            Ok(up) => return Ok(up),
            Err(
                e @ (RemoteError::Cancelled
                | RemoteError::Foreign { .. }
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

/// Deletes what remote retention says, over this project's trusted
/// archives only (`ours`), skipping (for a day) deletions a lock refused
/// before.
fn apply_retention(
    bucket: &Remote,
    remote: &crate::remote::Options,
    state: &mut OffsiteState,
    report: &mut SyncReport,
    now: DateTime<Utc>,
    zone: crate::schedule::Zone,
    ours: &[(&RemoteArchive, Claim)],
) -> Result<(), RemoteError> {
    let candidates: Vec<Candidate> = ours.iter().map(|(a, claim)| candidate(a, claim)).collect();
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
        let Some((archive, _)) = ours.iter().find(|(a, _)| a.name == d.name) else {
            continue;
        };
        match bucket.delete(archive)? {
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
