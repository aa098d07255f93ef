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
use crate::logging::{self, Verbosity};
use crate::mongo::{self, MongoError};
use crate::sign::{self, SignError, Signer, SigningKey};
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
            | BackupError::Cancelled => Exit::Failure,
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
    let opts = walk::Options {
        skip_dir: skip,
        open_files: false,
    };
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
fn archive_name(store: &Store, settings: &Options) -> (DateTime<Utc>, String) {
    loop {
        let now = Utc::now();
        let name = ArchiveName::format(
            now,
            settings.compression,
            !matches!(settings.encryption, Encryption::None),
        );
        if fs::symlink_metadata(store.dir().join(&name)).is_err() {
            return (now, name);
        }
        let wait = 1_000_000_000u32.saturating_sub(now.timestamp_subsec_nanos());
        std::thread::sleep(Duration::from_nanos(u64::from(wait) + 1_000_000));
    }
}

/// Runs one backup.
#[tracing::instrument(name = "backup", skip_all)]
pub fn run(req: &Request<'_>) -> Result<BackupReport, BackupError> {
    let settings = req.opts;
    let clock = Instant::now();
    let source = check_source(&settings.source)?;
    let matcher = walk::matcher(&source, &settings.excludes)?;
    let store = Store::create(&settings.backup_dir)?;
    let _lock = store.lock(req.wait)?;
    for p in store.clean_temporaries() {
        tracing::info!("removed {}, left by an interrupted run", p.display());
    }
    let skip_dir = store
        .dir()
        .canonicalize()
        .ok()
        .filter(|d| d.starts_with(&source));
    let mut state = State::load(store.dir());
    check_space(
        &store,
        estimate(&state, &source, &matcher, skip_dir.clone()),
        settings.min_free,
    )?;
    let signing = signing_key(settings)?;
    let encryption = encryption(settings, &store, &signing)?;
    let encryption_desc = encryption
        .as_ref()
        .map_or_else(|| "none".to_owned(), |e| e.describe.clone());
    let (started_at, name) = archive_name(&store, settings);
    tracing::info!(
        source = %source.display(),
        archive = %name,
        compression = %settings.compression,
        encryption = %encryption_desc,
        "backup started"
    );
    let job = Job { req, store: &store };
    let tmp = store.temp_file()?;
    let (mut aw, signer, progress) = job.open_writer(&tmp, &name, &signing, encryption)?;
    // The database first: a server that is down fails the backup before
    // any time is spent on the files, and the dump's point in time is
    // close to the archive's start time.
    let mongodb = job.dump_database(&mut aw)?;
    job.add_files(&mut aw, &source, matcher, skip_dir)?;
    let info = manifest_info(settings, &source, started_at, &encryption_desc, mongodb);
    let (sink, info) = aw.finish(info).map_err(|e| job.write_err(e))?;
    sink.finish().map_err(|e| job.write_err(e))?;
    progress.finish_and_clear();
    let path = job.seal(tmp, &name, signer, &info)?;
    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let duration = clock.elapsed();
    record_success(
        &mut state,
        &store,
        &name,
        started_at,
        size,
        &info,
        encryption_desc,
    );
    log_summary(&name, &info, size, duration);
    Ok(BackupReport { path, name, info })
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
        name: &str,
        signing: &SigningKey,
        encryption: Option<crypt::Encrypting>,
    ) -> Result<(ArchiveWriter, Signer, ProgressBar), BackupError> {
        let file = tmp.as_file().try_clone().map_err(|e| self.write_err(e))?;
        let origin = sign::Origin::here(&self.req.opts.source);
        let mut signer = signing.start(name, &origin);
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

    /// Dumps the database into the archive, when one is configured.
    fn dump_database(&self, aw: &mut ArchiveWriter) -> Result<Option<MongoSection>, BackupError> {
        let Some(db) = &self.req.opts.mongo else {
            return Ok(None);
        };
        let section = mongo::dump::dump_into(
            aw,
            &db.uri,
            &db.selection,
            self.store.dir(),
            self.req.cancel.as_deref(),
        )
        .map_err(|e| match e {
            MongoError::Cancelled => BackupError::Cancelled,
            MongoError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                BackupError::write(self.store.dir(), source)
            }
            other => BackupError::Mongo(other),
        })?;
        if self.cancelled() {
            return Err(BackupError::Cancelled);
        }
        Ok(Some(section))
    }

    /// Adds the project's files, walked in a stable order.
    fn add_files(
        &self,
        aw: &mut ArchiveWriter,
        source: &Path,
        matcher: ignore::gitignore::Gitignore,
        skip_dir: Option<PathBuf>,
    ) -> Result<(), BackupError> {
        let mut stopped = false;
        let opts = walk::Options {
            skip_dir,
            open_files: true,
        };
        walk::walk(source, matcher, &opts, |item| {
            if self.cancelled() {
                stopped = true;
                return Ok(WalkState::Quit);
            }
            match item {
                Item::Dir { rel, meta } => aw.add_dir(&files_path(&rel), &meta)?,
                Item::File { rel, file, meta } => {
                    let shown = String::from_utf8_lossy(&rel).into_owned();
                    if let Some(file) = file {
                        aw.add_file(&files_path(&rel), &file, &meta, &shown)?;
                    }
                }
                Item::Symlink { rel, target, meta } => {
                    aw.add_symlink(&files_path(&rel), &target, &meta)?;
                }
                Item::Skipped { rel, why } => aw.warn(&rel, why),
            }
            Ok(WalkState::Continue)
        })
        .map_err(|e| self.write_err(e))?;
        if stopped {
            return Err(BackupError::Cancelled);
        }
        Ok(())
    }

    /// Signs the finished archive and gives it its final name (signature
    /// first: a final name is always signed).
    fn seal(
        &self,
        tmp: NamedTempFile,
        name: &str,
        signer: Signer,
        info: &ManifestInfo,
    ) -> Result<PathBuf, BackupError> {
        // What a restore writes to disk: holes of sparse files take none.
        let file_bytes = info.totals.bytes - info.totals.holes;
        let signature = signer.finish(file_bytes + info.totals.mongo_bytes, file_bytes)?;
        let sig_path = self.store.write_signature(name, &signature)?;
        self.store.persist(tmp, name).map_err(|e| {
            let _ = fs::remove_file(&sig_path);
            e.into()
        })
    }
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
