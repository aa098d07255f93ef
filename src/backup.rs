//! One backup, start to finish: checks, lock, walk, dump, manifest, atomic
//! rename, state. Shared by `cofre backup` and the daemon.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ignore::WalkState;
use indicatif::ProgressBar;
use tempfile::NamedTempFile;

use crate::archive::Compression;
use crate::archive::crypt::Encryption;
use crate::archive::crypt::{self, CryptError};
use crate::archive::layers::{self, FileSink};
use crate::archive::manifest::{self, ManifestInfo, MongoSection};
use crate::archive::writer::{ArchiveWriter, files_path};
use crate::archive::{self as arch};
use crate::format::human;
use crate::index;
use crate::logging::{self, Verbosity};
use crate::mongo::{self, MongoError};
use crate::sign::{self, SignError, Signer, SigningKey, TrustedKeys};
use crate::state::{State, Success, Summary};
use crate::store::{ArchiveName, Store, StoreError};
use crate::walk::{self, Item, PatternError};

/// Why a backup failed. Each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// `BACKUP_SOURCE` does not exist.
    #[error(
        "source directory {0} does not exist; check BACKUP_SOURCE (or run cofre from the project directory)"
    )]
    NoSource(PathBuf),
    /// `BACKUP_SOURCE` is not a directory.
    #[error("source {0} is not a directory; check BACKUP_SOURCE")]
    SourceNotDir(PathBuf),
    /// A problem with `BACKUP_DIR`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key problem.
    #[error(transparent)]
    Crypt(#[from] CryptError),
    /// A bad exclude pattern.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The database dump failed.
    #[error(transparent)]
    Mongo(#[from] MongoError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Writing the archive failed.
    #[error("cannot write the archive in {dir}: {source}; {hint}")]
    Write {
        /// `BACKUP_DIR`.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
        /// What to check.
        hint: &'static str,
    },
    /// Not enough space for the estimated archive.
    #[error(
        "not enough free space in {dir}: this backup needs about {need}, only {free} are free; \
         free some space, lower BACKUP_RETENTION_DAYS, or point BACKUP_DIR at a larger disk"
    )]
    NoSpace {
        /// `BACKUP_DIR`.
        dir: PathBuf,
        /// Estimated archive size.
        need: String,
        /// Free space.
        free: String,
    },
    /// A stop signal arrived.
    #[error("the backup was stopped before it finished; no archive was kept")]
    Cancelled,
    /// A differential cannot be written (the backup starts again as a
    /// full; never seen by a user).
    #[error("a differential archive cannot hold this: {0}")]
    NeedFull(String),
}

impl crate::exit::Coded for BackupError {
    fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            BackupError::Store(e) => e.exit(),
            BackupError::Crypt(e) => e.exit(),
            BackupError::Pattern(e) => e.exit(),
            BackupError::Mongo(e) => e.exit(),
            BackupError::Sign(e) => e.exit(),
            BackupError::NoSource(_)
            | BackupError::SourceNotDir(_)
            | BackupError::Write { .. }
            | BackupError::NoSpace { .. }
            | BackupError::Cancelled
            | BackupError::NeedFull(_) => Exit::Failure,
        }
    }
}

impl BackupError {
    fn write(dir: &Path, source: io::Error) -> BackupError {
        let hint = match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                "the disk is full: free some space there or point BACKUP_DIR at a larger disk \
                 (no archive was kept, older archives are untouched)"
            }
            io::ErrorKind::PermissionDenied => "check the permissions of BACKUP_DIR",
            _ => {
                "check BACKUP_DIR and its disk (no archive was kept, older archives are untouched)"
            }
        };
        BackupError::Write {
            dir: dir.to_path_buf(),
            source,
            hint,
        }
    }
}

/// What a finished backup made.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The archive.
    pub path: PathBuf,
    /// Its file name.
    pub name: String,
    /// Its manifest (without entries).
    pub info: ManifestInfo,
}

/// A free-space threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    /// A share of the filesystem, 0..100.
    Percent(f64),
    /// A number of bytes.
    Bytes(u64),
}

/// How often a full archive is made when `BACKUP_FULL_EVERY` is unset.
pub const DEFAULT_FULL_EVERY: Duration = Duration::from_secs(7 * 86400);

/// What a backup is of, and how its archive is made.
#[derive(Debug, Clone)]
pub struct Options {
    /// The project directory.
    pub source: PathBuf,
    /// Where archives go (`BACKUP_DIR`).
    pub backup_dir: PathBuf,
    /// The compression of new archives.
    pub compression: Compression,
    /// Their encryption.
    pub encryption: Encryption,
    /// The user's exclude patterns (gitignore syntax).
    pub excludes: Vec<String>,
    /// This installation's signing key (made on first use).
    pub signing_key: PathBuf,
    /// Warn when a backup would leave less free space than this.
    pub min_free: MinFree,
    /// The database to dump into the same archive, when there is one.
    pub mongo: Option<mongo::Source>,
    /// How often a full archive is made (`BACKUP_FULL_EVERY`); between
    /// fulls, differentials. Zero: every backup is a full.
    pub full_every: Duration,
}

/// How to run one backup.
pub struct Request<'a> {
    /// What to back up, and how.
    pub opts: &'a Options,
    /// How long to wait for the lock.
    pub wait: Option<Duration>,
    /// Output level (for the progress bar).
    pub verbosity: Verbosity,
    /// Set from elsewhere to stop the backup cleanly.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Estimates the archive size: the last archive's size with 20% room, or,
/// for a first backup, the project's bytes on disk as if they did not
/// compress (allocated bytes: a sparse file's holes take no room in the
/// archive either).
fn estimate(
    state: &State,
    source: &Path,
    matcher: &ignore::gitignore::Gitignore,
    skip: Option<PathBuf>,
) -> u64 {
    if let Some(last) = &state.last_success {
        return last.size + last.size / 5;
    }
    let mut total = 0u64;
    let opts = walk::Options { skip_dir: skip };
    let _ = walk::walk(source, matcher.clone(), &opts, |item| {
        if let Item::File { meta, .. } = item {
            total += meta.allocated.min(meta.size);
        }
        Ok(WalkState::Continue)
    });
    total
}

fn check_space(store: &Store, need: u64, min_free: MinFree) -> Result<(), BackupError> {
    let Ok((free, total)) = store.space() else {
        return Ok(());
    };
    if need > free {
        return Err(BackupError::NoSpace {
            dir: store.dir().to_path_buf(),
            need: human(need),
            free: human(free),
        });
    }
    let floor = match min_free {
        MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
        MinFree::Bytes(b) => b,
    };
    let after = free - need;
    if after < floor {
        tracing::warn!(
            free_after = after,
            "free space in {} will be about {} after this backup, under BACKUP_MIN_FREE ({}); \
             free some space or lower BACKUP_RETENTION_DAYS",
            store.dir().display(),
            human(after),
            human(floor)
        );
    }
    Ok(())
}

/// The start time and name of a new archive: now, or the next second when
/// an archive already has this second's name (names are never reused).
fn archive_name(store: &Store, settings: &Options) -> DateTime<Utc> {
    loop {
        let now = Utc::now();
        let free = [false, true].iter().all(|&diff| {
            let name = ArchiveName::format(
                now,
                settings.compression,
                !matches!(settings.encryption, Encryption::None),
                diff,
            );
            fs::symlink_metadata(store.dir().join(name)).is_err()
        });
        if free {
            return now;
        }
        let wait = 1_000_000_000u32.saturating_sub(now.timestamp_subsec_nanos());
        std::thread::sleep(Duration::from_nanos(u64::from(wait) + 1_000_000));
    }
}

/// What a backup writes: a full archive (and its index), or a
/// differential against the newest full.
enum Plan {
    Full,
    Diff(Box<Base>),
}

/// The full a differential is made against, and its index being read.
struct Base {
    name: String,
    manifest: String,
    index: index::FileReader,
}

/// Whether this backup is a full or a differential, and why: a full when
/// `BACKUP_FULL_EVERY` is zero, when there is no full of this project
/// signed by this installation, when the newest is due for renewal, or when
/// its index is missing, does not verify, or was made for another database
/// setting.
fn choose_plan(store: &Store, opts: &Options, now: DateTime<Utc>) -> (Plan, String) {
    if opts.full_every.is_zero() {
        return (
            Plan::Full,
            "BACKUP_FULL_EVERY is 0, or --full was given".into(),
        );
    }
    let origin = sign::Origin::here(&opts.source);
    let own = match TrustedKeys::load(&opts.signing_key, &[], &[]) {
        Ok(k) => k,
        Err(e) => return (Plan::Full, e.to_string()),
    };
    // The newest full of this project signed here, and the full the
    // differentials made since name (the same one, unless it was deleted).
    let mut newest_full = None;
    let mut needed: Option<(String, String)> = None;
    for a in store.list().unwrap_or_default() {
        let text = sign::read_sig(&a.path).ok().flatten();
        let sign::Standing::Ours(claim) = sign::standing(&a.name, text.as_deref(), &own, &origin)
        else {
            continue;
        };
        match claim.base {
            Some(b) => {
                needed.get_or_insert((a.name.clone(), b.name));
            }
            None if !a.parsed.diff => {
                newest_full = Some(a);
                break;
            }
            None => {}
        }
    }
    let Some(full) = newest_full else {
        return (
            Plan::Full,
            "there is no full archive of this project yet".into(),
        );
    };
    if let Some((diff, base)) = needed
        && base != full.name
    {
        return (
            Plan::Full,
            format!("{base}, the full of {diff}, is missing"),
        );
    }
    let age = (now - full.parsed.time).to_std().unwrap_or_default();
    // A schedule's runs drift by seconds: a full due "every 7 days" made at
    // 00:00:05 is renewed at 00:00:01 a week later.
    let slack = (opts.full_every / 10).min(Duration::from_secs(3600));
    if age + slack >= opts.full_every {
        return (
            Plan::Full,
            format!(
                "the newest full, {}, is {} old (BACKUP_FULL_EVERY={})",
                full.name,
                crate::format::age_text(age.as_secs() as i64),
                humantime::format_duration(opts.full_every)
            ),
        );
    }
    match index::open_verified(store.dir(), &full.name, &own, &origin) {
        Ok(index) if index.header.mongo != opts.mongo.is_some() => (
            Plan::Full,
            "the database is backed up now and was not in the full, or the other way round".into(),
        ),
        Ok(index) => (
            Plan::Diff(Box::new(Base {
                name: full.name,
                manifest: index.header.manifest.clone(),
                index,
            })),
            String::new(),
        ),
        Err(why) => (
            Plan::Full,
            format!("the full's index cannot be used: {why}"),
        ),
    }
}

/// A differential whose full is gone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Orphan {
    /// The differential.
    pub archive: String,
    /// The full it needs.
    pub needs: String,
}

/// The differentials in `store` (signed by a trusted key) whose full is
/// not beside them: they cannot be restored. Newest first.
pub fn orphans(store: &Store, trusted: &TrustedKeys) -> Vec<Orphan> {
    let list = store.list().unwrap_or_default();
    list.iter()
        .filter(|a| a.parsed.diff)
        .filter_map(|a| {
            let text = sign::read_sig(&a.path).ok().flatten()?;
            let base = sign::prepare(&a.name, Some(&text), trusted)
                .ok()?
                .claim
                .base?
                .name;
            (!list.iter().any(|b| b.name == base)).then(|| Orphan {
                archive: a.name.clone(),
                needs: base,
            })
        })
        .collect()
}

/// Runs one backup: a differential when one is due and can be made, else
/// a full.
#[tracing::instrument(name = "backup", skip_all)]
pub fn run(req: &Request<'_>) -> Result<BackupReport, BackupError> {
    let settings = req.opts;
    let source = check_source(&settings.source)?;
    let matcher = walk::matcher(&source, &settings.excludes)?;
    let store = Store::create(&settings.backup_dir)?;
    let _lock = store.lock(req.wait)?;
    for p in store.clean_temporaries() {
        tracing::info!("removed {}, left by an interrupted run", p.display());
    }
    let (plan, why) = choose_plan(&store, settings, Utc::now());
    if !why.is_empty() {
        tracing::info!("a full backup: {why}");
    }
    match run_plan(req, &store, &source, matcher.clone(), plan) {
        Err(BackupError::NeedFull(why)) => {
            tracing::info!("a full backup instead: {why}");
            run_plan(req, &store, &source, matcher, Plan::Full)
        }
        other => other,
    }
}

/// Writes the archive `plan` says, under the lock.
fn run_plan(
    req: &Request<'_>,
    store: &Store,
    source: &Path,
    matcher: ignore::gitignore::Gitignore,
    plan: Plan,
) -> Result<BackupReport, BackupError> {
    let settings = req.opts;
    let clock = Instant::now();
    let skip_dir = store
        .dir()
        .canonicalize()
        .ok()
        .filter(|d| d.starts_with(source));
    let mut state = State::load(store.dir());
    check_space(
        store,
        estimate(&state, source, &matcher, skip_dir.clone()),
        settings.min_free,
    )?;
    let signing = signing_key(settings)?;
    let encryption = encryption(settings, store, &signing)?;
    let encryption_desc = encryption
        .as_ref()
        .map_or_else(|| "none".to_owned(), |e| e.describe.clone());
    let started_at = archive_name(store, settings);
    let base = match &plan {
        Plan::Full => None,
        Plan::Diff(b) => Some(manifest::BaseRef {
            name: b.name.clone(),
            manifest: b.manifest.clone(),
        }),
    };
    let name = ArchiveName::format(
        started_at,
        settings.compression,
        encryption.is_some(),
        base.is_some(),
    );
    tracing::info!(
        source = %source.display(),
        archive = %name,
        compression = %settings.compression,
        encryption = %encryption_desc,
        base = base.as_ref().map(|b| b.name.as_str()),
        "backup started"
    );
    let job = Job { req, store };
    // The database first: a server that is down fails the backup before
    // any time is spent on the files, and the dump's point in time is
    // close to the archive's start time (and known to its signature).
    let dump = job.prepare_dump()?;
    let cluster = dump.as_ref().and_then(mongo::dump::Prepared::cluster_time);
    let tmp = store.temp_file()?;
    let claim = sign::Claim {
        origin: Some(sign::Origin::here(&req.opts.source)),
        base: base.clone(),
        cluster,
        ..sign::Claim::about(&name)
    };
    let (mut aw, signer, progress) = job.open_writer(&tmp, claim, &signing, encryption)?;
    let mongodb = match dump {
        Some(d) => Some(job.dump_database(&mut aw, d, base.is_some())?),
        None => None,
    };
    let (index, changes) = match plan {
        Plan::Full => (
            Some(job.add_files_full(&mut aw, source, matcher, skip_dir)?),
            Changes::default(),
        ),
        Plan::Diff(b) => (
            None,
            job.add_files_diff(&mut aw, source, matcher, skip_dir, *b)?,
        ),
    };
    let mut info = manifest_info(settings, source, started_at, &encryption_desc, mongodb);
    if let Some(b) = base {
        info.kind = manifest::ArchiveKind::Differential;
        info.base = Some(b);
        info.deleted_count = changes.deleted.len() as u64;
        info.deleted = changes.deleted;
        info.deleted.truncate(manifest::MAX_DELETED_NAMED);
        info.unchanged = changes.unchanged;
    }
    let finished = aw.finish(info).map_err(|e| job.write_err(e))?;
    finished.sink.finish().map_err(|e| job.write_err(e))?;
    progress.finish_and_clear();
    let info = finished.info;
    let index = match index {
        Some(w) => Some(job.write_index(w, &name, &finished.manifest_hash, &signing)?),
        None => None,
    };
    let path = job.seal(tmp, &name, signer, &info, index)?;
    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let duration = clock.elapsed();
    record_success(
        &mut state,
        store,
        &name,
        started_at,
        size,
        &info,
        encryption_desc,
    );
    log_summary(&name, &info, size, duration);
    Ok(BackupReport { path, name, info })
}

/// What a differential found changed.
#[derive(Debug, Default)]
struct Changes {
    /// Paths (`files/...`) the full holds and the day does not.
    deleted: Vec<String>,
    /// The same, relative to the project, as the walk found them.
    deleted_rel: Vec<Vec<u8>>,
    /// Files not stored: as the full holds them.
    unchanged: u64,
}

/// The project directory, which must exist and be a directory.
fn check_source(source: &Path) -> Result<PathBuf, BackupError> {
    let canonical = source
        .canonicalize()
        .map_err(|_| BackupError::NoSource(source.to_path_buf()))?;
    if !canonical.is_dir() {
        return Err(BackupError::SourceNotDir(canonical));
    }
    Ok(canonical)
}

/// One backup in progress: where it writes and whether it was told to stop.
struct Job<'a> {
    req: &'a Request<'a>,
    store: &'a Store,
}

impl Job<'_> {
    fn cancelled(&self) -> bool {
        self.req
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// A write failure, or the cancellation that caused it.
    fn write_err(&self, e: io::Error) -> BackupError {
        if self.cancelled() {
            BackupError::Cancelled
        } else {
            BackupError::write(self.store.dir(), e)
        }
    }

    /// The layers over the temporary file: tar, compression, encryption,
    /// and a signer that sees every byte that reaches the file.
    fn open_writer(
        &self,
        tmp: &NamedTempFile,
        claim: sign::Claim,
        signing: &SigningKey,
        encryption: Option<crypt::Encrypting>,
    ) -> Result<(ArchiveWriter, Signer, ProgressBar), BackupError> {
        let file = tmp.as_file().try_clone().map_err(|e| self.write_err(e))?;
        let mut signer = signing.start_claim(claim);
        let bottom = layers::TeeSink::new(Box::new(FileSink::new(file)), Box::new(signer.feeder()));
        let sink = layers::writer(
            Box::new(bottom),
            encryption,
            self.req.opts.compression,
            arch::worker_threads(),
        )
        .map_err(|e| self.write_err(e))?;
        let progress = logging::progress(self.req.verbosity, "backing up");
        let mut aw = ArchiveWriter::new(sink, self.store.dir(), progress.clone())
            .map_err(|e| self.write_err(e))?;
        if let Some(c) = &self.req.cancel {
            aw.set_cancel(Arc::clone(c));
        }
        Ok((aw, signer, progress))
    }

    fn mongo_err(&self, e: MongoError) -> BackupError {
        match e {
            MongoError::Cancelled => BackupError::Cancelled,
            MongoError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                BackupError::write(self.store.dir(), source)
            }
            other => BackupError::Mongo(other),
        }
    }

    /// Connects to the database, when one is configured, and fixes the
    /// dump's point in time.
    fn prepare_dump(&self) -> Result<Option<mongo::dump::Prepared>, BackupError> {
        let Some(db) = &self.req.opts.mongo else {
            return Ok(None);
        };
        mongo::dump::prepare(&db.uri, &db.selection)
            .map(Some)
            .map_err(|e| self.mongo_err(e))
    }

    /// Dumps the database into the archive; a differential's dump is
    /// whole too, its directories with dumpdir records (so a restore drops
    /// what the full's dump has and this one does not).
    fn dump_database(
        &self,
        aw: &mut ArchiveWriter,
        dump: mongo::dump::Prepared,
        dumpdirs: bool,
    ) -> Result<MongoSection, BackupError> {
        let section = dump
            .write(aw, self.store.dir(), self.req.cancel.as_deref(), dumpdirs)
            .map_err(|e| self.mongo_err(e))?;
        if self.cancelled() {
            return Err(BackupError::Cancelled);
        }
        Ok(section)
    }

    /// Adds the whole project, walked in a stable order, and indexes it.
    fn add_files_full(
        &self,
        aw: &mut ArchiveWriter,
        source: &Path,
        matcher: ignore::gitignore::Gitignore,
        skip_dir: Option<PathBuf>,
    ) -> Result<index::Writer, BackupError> {
        let mut index = index::Writer::new(self.store.dir()).map_err(|e| self.write_err(e))?;
        self.walk(source, matcher, skip_dir, |item| {
            match item {
                Item::Dir {
                    rel,
                    meta,
                    children,
                    ..
                } => {
                    aw.add_dir(&files_path(rel), &meta, None)?;
                    index.dir(rel, children);
                }
                Item::File {
                    rel,
                    parent,
                    name,
                    meta: listed,
                } => {
                    if let Some((hash, meta)) = add_file(aw, parent, name, &rel)? {
                        let now = chrono::Utc::now().timestamp();
                        let racy = listed.ctime.max(meta.ctime) + index::RACY_SECONDS >= now;
                        index.file(name, &hash, racy);
                    }
                }
                Item::Symlink { rel, target, meta } => {
                    aw.add_symlink(&files_path(&rel), &target, &meta)?;
                }
                Item::FilesDone { rel } => index.files_done(rel)?,
                Item::Skipped { rel, why } => aw.warn(&rel, why),
            }
            Ok(WalkState::Continue)
        })?;
        Ok(index)
    }

    /// Walks the project for `visit`, stopping when the backup is
    /// cancelled.
    fn walk(
        &self,
        source: &Path,
        matcher: ignore::gitignore::Gitignore,
        skip_dir: Option<PathBuf>,
        mut visit: impl FnMut(Item<'_>) -> io::Result<WalkState>,
    ) -> Result<(), BackupError> {
        let mut stopped = false;
        walk::walk(source, matcher, &walk::Options { skip_dir }, |item| {
            if self.cancelled() {
                stopped = true;
                return Ok(WalkState::Quit);
            }
            visit(item)
        })
        .map_err(|e| self.write_err(e))?;
        if stopped {
            return Err(BackupError::Cancelled);
        }
        Ok(())
    }

    /// Adds what changed since the full `base`: each directory with its
    /// dumpdir record, the files that are new or changed (a file `lstat`
    /// says is as the full has it is not read; one whose size, mtime and
    /// mode are the same but not its ctime or inode is hashed, and stored
    /// only when its content differs), every symlink; and notes what was
    /// deleted.
    fn add_files_diff(
        &self,
        aw: &mut ArchiveWriter,
        source: &Path,
        matcher: ignore::gitignore::Gitignore,
        skip_dir: Option<PathBuf>,
        mut base: Base,
    ) -> Result<Changes, BackupError> {
        let mut changes = Changes::default();
        // Directories the full held that the walk did not reach.
        let mut gone: Vec<Vec<u8>> = Vec::new();
        // The fates of the current directory's names.
        let mut current: Vec<(Vec<u8>, index::Fate)> = Vec::new();
        let mut too_large: Option<String> = None;
        self.walk(source, matcher, skip_dir, |item| {
            match item {
                Item::Dir {
                    rel,
                    meta,
                    children,
                    handle,
                } => {
                    let old = base.index.take(rel, &mut gone)?;
                    let mut plan = index::plan_dir(old.as_ref(), children);
                    for (i, c) in children.iter().enumerate() {
                        if plan.fates[i] != index::Fate::Compare {
                            continue;
                        }
                        let same = walk::open_file(handle, &c.name).ok().is_some_and(|(f, m)| {
                            aw.content_hash(&f, &m).ok().as_deref() == plan.old_hashes[i].as_deref()
                        });
                        plan.fates[i] = if same {
                            index::Fate::Keep
                        } else {
                            index::Fate::Store
                        };
                    }
                    let record = index::dumpdir(children, |i| plan.fates[i] == index::Fate::Store);
                    if record.len() > crate::archive::dumpdir::MAX {
                        too_large = Some(format!(
                            "{} holds too many names for one record",
                            String::from_utf8_lossy(rel)
                        ));
                        return Ok(WalkState::Quit);
                    }
                    aw.add_dir(&files_path(rel), &meta, Some(&record))?;
                    for name in plan.deleted {
                        changes.deleted_rel.push(join_rel(rel, &name));
                    }
                    changes.unchanged += plan
                        .fates
                        .iter()
                        .filter(|f| **f == index::Fate::Keep)
                        .count() as u64;
                    current = children
                        .iter()
                        .zip(plan.fates)
                        .map(|(c, f)| (c.name.clone(), f))
                        .collect();
                }
                Item::File {
                    rel, parent, name, ..
                } => {
                    let store = current
                        .binary_search_by(|(n, _)| n.as_slice().cmp(name))
                        .ok()
                        .is_none_or(|i| current[i].1 == index::Fate::Store);
                    if store {
                        add_file(aw, parent, name, &rel)?;
                    }
                }
                Item::Symlink { rel, target, meta } => {
                    aw.add_symlink(&files_path(&rel), &target, &meta)?;
                }
                Item::FilesDone { .. } => {}
                Item::Skipped { rel, why } => aw.warn(&rel, why),
            }
            Ok(WalkState::Continue)
        })?;
        if let Some(why) = too_large {
            return Err(BackupError::NeedFull(why));
        }
        base.index.rest(&mut gone).map_err(|e| self.write_err(e))?;
        // A directory gone (with all beneath it) is named once, as is a
        // name its parent's listing and its own index line both show.
        let mut paths: Vec<Vec<u8>> = changes.deleted_rel.drain(..).collect();
        paths.extend(gone);
        paths.sort_by(|a, b| index::walk_order(a, b));
        paths.dedup();
        let mut top: Option<&[u8]> = None;
        for p in &paths {
            let under = top.is_some_and(|t| p.starts_with(t) && p.get(t.len()) == Some(&b'/'));
            if !under {
                changes.deleted.push(shown_path(&files_path(p)));
                top = Some(p);
            }
        }
        Ok(changes)
    }

    /// Writes the full's index beside it, signed: a temporary file now,
    /// its final name with the archive's.
    fn write_index(
        &self,
        index: index::Writer,
        name: &str,
        manifest_hash: &str,
        signing: &SigningKey,
    ) -> Result<(NamedTempFile, String), BackupError> {
        let index_name = format!("{name}{}", index::INDEX_SUFFIX);
        let tmp = self.store.temp_file()?;
        let origin = sign::Origin::here(&self.req.opts.source);
        let mut signer = signing.start(&index_name, &origin, None);
        let mut feed = signer.feeder();
        let header = index::Header {
            format: 1,
            archive: name.to_owned(),
            manifest: manifest_hash.to_owned(),
            mongo: self.req.opts.mongo.is_some(),
        };
        {
            let file = tmp.as_file().try_clone().map_err(|e| self.write_err(e))?;
            let out = TeeWrite {
                inner: std::io::BufWriter::with_capacity(1 << 16, file),
                feed: &mut feed,
            };
            index.finish(&header, out).map_err(|e| self.write_err(e))?;
        }
        feed(None);
        drop(feed);
        tmp.as_file().sync_all().map_err(|e| self.write_err(e))?;
        let signature = signer.finish(0, 0)?;
        Ok((tmp, signature))
    }

    /// Signs the finished archive and gives it its final name (signature
    /// first: a final name is always signed).
    /// (A full's index and its signature get their final names first:
    /// an archive is never without them; an index left without its
    /// archive by a crash is cleaned up later.)
    fn seal(
        &self,
        tmp: NamedTempFile,
        name: &str,
        signer: Signer,
        info: &ManifestInfo,
        index: Option<(NamedTempFile, String)>,
    ) -> Result<PathBuf, BackupError> {
        // What a restore writes to disk: holes of sparse files take none.
        let file_bytes = info.totals.bytes - info.totals.holes;
        let signature = signer.finish(file_bytes + info.totals.mongo_bytes, file_bytes)?;
        let mut written = Vec::new();
        if let Some((index_tmp, index_sig)) = index {
            let index_name = format!("{name}{}", index::INDEX_SUFFIX);
            written.push(self.store.write_signature(&index_name, &index_sig)?);
            written.push(self.store.persist(index_tmp, &index_name)?);
        }
        written.push(self.store.write_signature(name, &signature)?);
        self.store.persist(tmp, name).map_err(|e| {
            for p in &written {
                let _ = fs::remove_file(p);
            }
            e.into()
        })
    }
}

/// Opens the file `name` beneath `parent` (never through a link) and adds
/// it as `rel`; one that cannot be opened is a warning. Returns its hash
/// and its `fstat`, when added.
fn add_file(
    aw: &mut ArchiveWriter,
    parent: &crate::beneath::Dir,
    name: &[u8],
    rel: &[u8],
) -> io::Result<Option<(String, walk::Meta)>> {
    let shown = String::from_utf8_lossy(rel);
    match walk::open_file(parent, name) {
        Ok((file, meta)) => {
            let hash = aw.add_file(&files_path(rel), &file, &meta, &shown)?;
            Ok(Some((hash, meta)))
        }
        Err(why) => {
            aw.warn(&shown, why);
            Ok(None)
        }
    }
}

/// A writer that also feeds what it writes to a signer.
struct TeeWrite<'f, W, F: FnMut(Option<&[u8]>)> {
    inner: W,
    feed: &'f mut F,
}

impl<W: std::io::Write, F: FnMut(Option<&[u8]>)> std::io::Write for TeeWrite<'_, W, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.feed)(Some(&buf[..n]));
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `rel/name`, or `name` at the top.
fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        return name.to_vec();
    }
    let mut p = rel.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn shown_path(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// The manifest's description of this backup (its entries are added by
/// the writer).
fn manifest_info(
    settings: &Options,
    source: &Path,
    started_at: DateTime<Utc>,
    encryption: &str,
    mongodb: Option<MongoSection>,
) -> ManifestInfo {
    ManifestInfo {
        format: manifest::FORMAT.into(),
        format_version: manifest::FORMAT_VERSION,
        tool: format!("cofre {}", env!("CARGO_PKG_VERSION")),
        created_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        finished_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        host: rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
        source: source.display().to_string(),
        options: manifest::Options {
            compression: settings.compression.to_string(),
            encryption: encryption.to_owned(),
            excludes: settings.excludes.clone(),
            hash: "blake3".into(),
        },
        mongodb,
        ..Default::default()
    }
}

/// Records the success and what the archive holds in the state file.
fn record_success(
    state: &mut State,
    store: &Store,
    name: &str,
    started_at: DateTime<Utc>,
    size: u64,
    info: &ManifestInfo,
    encryption: String,
) {
    let totals = &info.totals;
    state.last_success = Some(Success {
        archive: name.to_owned(),
        started_at,
        finished_at: Utc::now(),
        size,
        warnings: info.warnings.len(),
    });
    state.archives.insert(
        name.to_owned(),
        Summary {
            totals: totals.clone(),
            warnings: info.warnings.len(),
            encryption,
            mongodb: info
                .mongodb
                .iter()
                .flat_map(|m| &m.collections)
                .map(|c| crate::state::CollectionCount {
                    db: c.db.clone(),
                    collection: c.name.clone(),
                    documents: c.documents,
                })
                .collect(),
            unchanged: info.unchanged,
        },
    );
    if let Err(e) = state.save(store.dir()) {
        tracing::warn!(
            "cannot update the state file in {}: {e}",
            store.dir().display()
        );
    }
}

fn log_summary(name: &str, info: &ManifestInfo, size: u64, duration: Duration) {
    let totals = &info.totals;
    let bytes_in = totals.bytes + totals.mongo_bytes;
    tracing::info!(
        archive = %name,
        files = totals.files,
        dirs = totals.dirs,
        symlinks = totals.symlinks,
        collections = totals.collections,
        documents = totals.documents,
        bytes_in,
        bytes_out = size,
        ratio = format!("{:.3}", if bytes_in > 0 { size as f64 / bytes_in as f64 } else { 0.0 }),
        seconds = format!("{:.2}", duration.as_secs_f64()),
        warnings = info.warnings.len(),
        "backup finished: {} files and {} in, {} out, {:.1}s",
        totals.files,
        human(bytes_in),
        human(size),
        duration.as_secs_f64()
    );
}

/// This installation's signing key, made (loudly) on first use.
fn signing_key(settings: &Options) -> Result<SigningKey, BackupError> {
    let (key, created) = SigningKey::ensure(&settings.signing_key)?;
    if created {
        tracing::warn!(
            "created a signing key at {}: every archive is signed with it. Its public key is {}; \
             where archives are restored on another machine, trust it with BACKUP_TRUSTED_KEYS={} \
             (an identity file cofre makes carries it already)",
            settings.signing_key.display(),
            key.public_base64(),
            key.public_base64()
        );
    }
    Ok(key)
}

/// The age layer for new archives (or none, warned about). The identity
/// file cofre makes carries the signing key's public half, so that file
/// alone is enough to restore on a new machine.
fn encryption(
    settings: &Options,
    store: &Store,
    signing: &SigningKey,
) -> Result<Option<crypt::Encrypting>, BackupError> {
    match &settings.encryption {
        Encryption::None => {
            tracing::warn!(
                "BACKUP_ENCRYPTION=none: this archive is not encrypted; anyone who can read {} can read it",
                store.dir().display()
            );
            Ok(None)
        }
        Encryption::Age(keys) => {
            let note = format!("{}{}\n", sign::IDENTITY_LINE, signing.public_base64());
            let (enc, created) = crypt::encrypting(keys, &note)?;
            if created {
                tracing::warn!(
                    "created a new age identity at {}: it is the ONLY key that opens these backups. \
                     Copy it somewhere safe, off this machine, now (without it the archives cannot be restored)",
                    keys.identity_file.display()
                );
            }
            Ok(Some(enc))
        }
    }
}

/// Records a failed backup in the state file of `dir`, when it is usable.
pub fn record_failure(dir: &Path, error: &str) {
    if !dir.is_dir() {
        return;
    }
    let mut state = State::load(dir);
    state.last_failure = Some(crate::state::Failure {
        at: Utc::now(),
        error: crate::secret::scrub(error),
    });
    let _ = state.save(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;

    #[test]
    fn a_backup_from_its_options_makes_a_signed_archive_and_records_it() {
        let f = Fixture::new();
        let report = f.backup();
        assert!(report.path.is_file());
        assert!(crate::sign::sig_path(&report.path).is_file());
        assert_eq!(report.info.totals.files, 2);
        assert_eq!(report.info.source, f.source.display().to_string());
        let state = State::load(&f.backup_dir);
        assert_eq!(state.last_success.unwrap().archive, report.name);
        assert_eq!(state.archives[&report.name].totals.files, 2);
        // Its signature names this project.
        let text = crate::sign::read_sig(&report.path).unwrap();
        let standing =
            crate::sign::standing(&report.name, text.as_deref(), &f.trusted(), &f.origin());
        assert!(
            matches!(standing, crate::sign::Standing::Ours(_)),
            "{standing:?}"
        );
    }

    #[test]
    fn a_missing_source_or_a_bad_pattern_fails_before_anything_is_written() {
        let f = Fixture::new();
        let mut opts = f.backup_options();
        opts.source = f.dir.path().join("nowhere");
        let req = Request {
            opts: &opts,
            wait: None,
            verbosity: Verbosity::Quiet,
            cancel: None,
        };
        assert!(matches!(run(&req), Err(BackupError::NoSource(_))));
        let mut opts = f.backup_options();
        opts.excludes = vec!["src/{a,b".into()];
        let req = Request { opts: &opts, ..req };
        let err = run(&req).unwrap_err();
        assert!(matches!(err, BackupError::Pattern(_)), "{err}");
        assert_eq!(crate::exit::Coded::exit(&err), crate::exit::Exit::Usage);
        assert!(!f.backup_dir.exists());
    }

    #[test]
    fn a_cancelled_backup_keeps_no_archive() {
        let f = Fixture::new();
        let opts = f.backup_options();
        let cancel = Arc::new(AtomicBool::new(true));
        let req = Request {
            opts: &opts,
            wait: None,
            verbosity: Verbosity::Quiet,
            cancel: Some(cancel),
        };
        assert!(matches!(run(&req), Err(BackupError::Cancelled)));
        let store = Store::open(&f.backup_dir).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
