//! Restore drills: proof, on a schedule, that an archive restores, its
//! database included, and that the application comes back from it.
//!
//! A drill takes the store's lock (so it never runs beside a backup or a
//! prune, which could delete the archive under it), then:
//!
//! 1. **Files**: restores the archive into a new private scratch directory
//!    (`.cofre-drill-<time>-<tag>` in `BACKUP_DRILL_DIR`, by default
//!    `BACKUP_DIR`) with every check a real restore makes: signature,
//!    hashes, modes, links ([`crate::restore::stage_and_place`]).
//! 2. **Database**: restores the dump into scratch databases on the drill
//!    server, each database `db` as `cofre_drill_<time>_<tag>_<db>`. The
//!    tag is random, so nobody can make the names ahead of a drill; names
//!    some database already has are left alone and new ones drawn, and a
//!    restore never touches a collection that exists.
//! 3. **Compare** ([`compare`]): counts, content digests, indexes and
//!    options of every collection against the archive.
//! 4. **Smoke test** ([`smoke`]), when `BACKUP_DRILL_COMMAND` is set.
//! 5. **Clean-up**, whatever happened: scratch databases dropped, scratch
//!    directory removed. What it makes is recorded in the drill state
//!    *before* it is made, so when a drill is killed outright, the next
//!    one finds the leftovers by name and removes them. That record lives
//!    where others can write, so the next drill removes only names of the
//!    exact shape a drill makes, in the places a drill makes them, and
//!    reports anything else.
//! 6. **Record**: the outcome goes to `.cofre-drill.json` for `status`.
//!
//! The recovery time a drill reports is the time to restore the files plus
//! the time to restore the database: what a restore of this archive takes.

pub mod compare;
pub mod pitr;
pub mod smoke;

use std::future::IntoFuture;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::format::human;
use crate::logging::{self, Verbosity};
use crate::mongo::{self, MongoError};
use crate::open;
use crate::restore::{self, ExtractOptions, RestoreError};
use crate::secret::Secret;
use crate::state::{DrillRecord, DrillState, PendingDrill};
use crate::store::{Store, StoreError};

/// The prefix of scratch directories.
const DIR_PREFIX: &str = ".cofre-drill-";
/// The prefix of scratch databases.
const DB_PREFIX: &str = "cofre_drill_";
/// Digits of the time in scratch names (`%Y%m%d%H%M%S`).
const STAMP_LEN: usize = 14;
/// Characters of the random tag in scratch names.
const TAG_LEN: usize = 8;
/// How many names a drill tries before it gives up on finding a free one.
const NAME_ATTEMPTS: usize = 8;
/// The most mismatches kept in the record.
const MAX_MISMATCHES: usize = 20;
/// MongoDB's limit on database names, in bytes.
const MAX_DB_NAME: usize = 63;

/// How drills run (`BACKUP_DRILL_*`, and where the backups are).
#[derive(Debug, Clone)]
pub struct Options {
    /// `BACKUP_DIR`: the lock, the drill record, leftovers of drills.
    pub backup_dir: PathBuf,
    /// Where scratch directories are made (`None`: `BACKUP_DIR`).
    pub dir: Option<PathBuf>,
    /// The server the database is restored into (the drill's own, else
    /// the backup's).
    pub server: Option<Secret>,
    /// The application's own database URI (its database is the one the
    /// smoke test gets as `MONGODB_URI`).
    pub app_uri: Option<Secret>,
    /// The smoke test, run by `sh -c` in the restored tree.
    pub command: Option<String>,
    /// How long the smoke test may run.
    pub timeout: Duration,
}

/// What to drill, and how.
pub struct Request<'a> {
    /// The drill's options.
    pub opts: &'a Options,
    /// The archive: which (`latest`, a name or a path), where from, the
    /// keys that read it and the signatures accepted.
    pub open: open::Request<'a>,
    /// How long to wait for the lock.
    pub wait: Option<Duration>,
    /// Progress bars or not.
    pub verbosity: Verbosity,
    /// Set to stop the drill (it then cleans up and records `cancelled`).
    pub cancel: Arc<AtomicBool>,
}

/// Why a drill failed: the step, and a sentence.
#[derive(Debug)]
struct Failure {
    check: &'static str,
    message: String,
}

impl Failure {
    fn new(check: &'static str, message: impl std::fmt::Display) -> Failure {
        Failure {
            check,
            message: message.to_string(),
        }
    }
}

/// Runs one drill and records it. Fails only when it could not start (the
/// store is missing or locked); a drill that ran and failed is an `Ok`
/// record with `ok: false`.
pub fn run(req: &Request<'_>) -> Result<DrillRecord, StoreError> {
    let opts = req.opts;
    let store = Store::open(&opts.backup_dir)?;
    let lock = store.lock(req.wait)?;
    let mut state = DrillState::load(store.dir());
    let started_at = Utc::now();
    let base = opts
        .dir
        .clone()
        .unwrap_or_else(|| store.dir().to_path_buf());
    let names = ScratchNames::new(started_at);
    let mut drill = Drill {
        req,
        backup_dir: store.dir().to_path_buf(),
        base: base.clone(),
        scratch: base.join(&names.dir),
        prefix: names.db_prefix,
        server: opts.server.clone(),
        db: None,
        kept: Vec::new(),
        claimed: false,
        made_scratch: false,
        record: DrillRecord {
            started_at,
            ..DrillRecord::default()
        },
        restored: Vec::new(),
    };
    tracing::info!(archive = req.open.arg, scratch = %drill.scratch.display(), "drill started");
    drill.remove_leftovers(&state.pending);
    let result = drill.steps();
    let cleanup = drill.clean_up();
    let mut record = drill.record;
    record.finished_at = Utc::now();
    if let Err(f) = &result {
        record.failed_check = Some(f.check.to_owned());
        record.error = Some(crate::secret::scrub(&f.message));
    }
    record.ok = result.is_ok();
    state.pending = drill.kept;
    if !cleanup.is_empty() {
        record.cleanup_problems.extend(cleanup);
        if drill.claimed {
            state.pending.push(PendingDrill {
                dir: drill.scratch,
                db_prefix: drill.prefix,
            });
        }
    }
    state.last = Some(record.clone());
    if record.ok {
        state.last_success = Some(record.clone());
    }
    if let Err(e) = state.save(store.dir()) {
        tracing::warn!(
            "cannot write the drill state in {}: {e}",
            store.dir().display()
        );
    }
    log_outcome(&record);
    // The caller reports it, once the lock is free: a slow notification
    // target must not hold up the next backup.
    drop(lock);
    Ok(record)
}

fn log_outcome(r: &DrillRecord) {
    if r.ok {
        tracing::info!(
            archive = %r.archive,
            recovery_seconds = r.recovery_seconds,
            files = r.files,
            documents = r.documents,
            "drill passed: {} restores in {:.1} s (files {:.1} s, database {:.1} s)",
            r.archive,
            r.recovery_seconds.unwrap_or(0.0),
            r.files_seconds.unwrap_or(0.0),
            r.database_seconds.unwrap_or(0.0),
        );
    } else {
        tracing::error!(
            archive = %r.archive,
            check = r.failed_check.as_deref().unwrap_or(""),
            "drill failed at {}: {}",
            r.failed_check.as_deref().unwrap_or("?"),
            r.error.as_deref().unwrap_or("")
        );
    }
    for p in &r.cleanup_problems {
        tracing::warn!("drill clean-up: {p}; the next drill tries again");
    }
}

/// The drill server, connected.
struct DrillDb {
    rt: tokio::runtime::Runtime,
    client: mongodb::Client,
    uri: Secret,
}

impl DrillDb {
    /// The databases whose names start with `prefix`.
    fn databases_with_prefix(&self, prefix: &str) -> Result<Vec<String>, MongoError> {
        self.rt.block_on(async {
            let names = self
                .client
                .list_database_names()
                .await
                .map_err(|e| mongo::read_error("the list of databases", &e))?;
            Ok(names
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .collect())
        })
    }

    /// Drops every database whose name starts with `prefix`; returns what
    /// could not be dropped.
    fn drop_prefixed(&self, prefix: &str) -> Vec<String> {
        let names = match self.databases_with_prefix(prefix) {
            Ok(n) => n,
            Err(e) => return vec![format!("cannot list the {prefix}* databases: {e}")],
        };
        let mut problems = Vec::new();
        for name in names {
            let dropped = self
                .rt
                .block_on(self.client.database(&name).drop().into_future());
            match dropped {
                Ok(()) => tracing::info!("dropped the scratch database {name}"),
                Err(e) => problems.push(format!(
                    "cannot drop the scratch database {name}: {}",
                    mongo::short(&e)
                )),
            }
        }
        problems
    }
}

/// The names of one drill's scratch: a directory and a database prefix,
/// each the time and a random tag, so nobody can guess them ahead (and
/// make every drill collide) and a record that names anything else is
/// known not to be a drill's.
struct ScratchNames {
    dir: String,
    db_prefix: String,
}

impl ScratchNames {
    fn new(at: chrono::DateTime<Utc>) -> ScratchNames {
        let stamp = at.format("%Y%m%d%H%M%S").to_string();
        let tag = random_tag();
        ScratchNames {
            dir: format!("{DIR_PREFIX}{stamp}-{tag}"),
            db_prefix: format!("{DB_PREFIX}{stamp}_{tag}_"),
        }
    }
}

/// `TAG_LEN` characters of `[a-z0-9]` from the system's random source.
fn random_tag() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; TAG_LEN];
    // getrandom(2) blocks only until the pool is first seeded at boot; a
    // short read is not possible for 8 bytes.
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// `STAMP_LEN` digits, a separator, `TAG_LEN` tag characters: the tail of
/// every scratch name a drill makes.
fn is_stamp_and_tag(s: &str, sep: u8) -> bool {
    let b = s.as_bytes();
    b.len() == STAMP_LEN + 1 + TAG_LEN
        && b[..STAMP_LEN].iter().all(u8::is_ascii_digit)
        && b[STAMP_LEN] == sep
        && b[STAMP_LEN + 1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Whether `name` is a scratch directory name a drill makes, exactly.
pub fn is_scratch_dir_name(name: &str) -> bool {
    name.strip_prefix(DIR_PREFIX)
        .is_some_and(|rest| is_stamp_and_tag(rest, b'-'))
}

/// Whether `prefix` is a scratch database prefix a drill makes, exactly.
pub fn is_scratch_db_prefix(prefix: &str) -> bool {
    prefix
        .strip_prefix(DB_PREFIX)
        .and_then(|rest| rest.strip_suffix('_'))
        .is_some_and(|rest| is_stamp_and_tag(rest, b'_'))
}

/// One drill in progress.
struct Drill<'a> {
    req: &'a Request<'a>,
    backup_dir: PathBuf,
    /// Where scratch directories are made (`BACKUP_DRILL_DIR`).
    base: PathBuf,
    scratch: PathBuf,
    prefix: String,
    server: Option<Secret>,
    db: Option<DrillDb>,
    /// Earlier drills' scratch that could not be removed yet.
    kept: Vec<PendingDrill>,
    /// Whether the scratch names are this drill's: no database had the
    /// prefix when it started, and it is on record. Only then does the
    /// clean-up drop or remove anything of this drill's.
    claimed: bool,
    /// Whether this drill made its scratch directory (only then is it
    /// removed).
    made_scratch: bool,
    record: DrillRecord,
    /// (scratch database, collection) the database restore wrote.
    restored: Vec<(String, String)>,
}

impl Drill<'_> {
    fn cancelled(&self) -> Result<(), Failure> {
        if self.req.cancel.load(Ordering::Relaxed) {
            return Err(Failure::new(
                "cancelled",
                "the drill was stopped before it finished",
            ));
        }
        Ok(())
    }

    /// Connects to the drill server (once).
    fn connect(&mut self) -> Result<&DrillDb, Failure> {
        if self.db.is_none() {
            let Some(uri) = self.server.clone() else {
                return Err(Failure::new(
                    "setup",
                    "the archive holds a database dump but there is no server to restore it into; \
                     set BACKUP_DRILL_MONGODB_URI (or MONGODB_URI)",
                ));
            };
            let rt = mongo::runtime().map_err(|e| Failure::new("setup", e))?;
            let client = rt
                .block_on(mongo::connect(&uri))
                .map_err(|e| Failure::new("setup", format!("the drill server: {e}")))?
                .0;
            self.db = Some(DrillDb { rt, client, uri });
        }
        Ok(self.db.as_ref().expect("connected above"))
    }

    /// Removes what earlier drills left: their recorded scratch (directory
    /// and databases), and any scratch directory in `BACKUP_DIR`, which
    /// only cofre writes. The record is read back from `BACKUP_DIR`, where
    /// others may write, so nothing is removed on its word alone: only a
    /// directory named exactly as a drill names its scratch, directly in
    /// the drill directory or `BACKUP_DIR`, and only databases with a
    /// prefix exactly as a drill makes it. Anything else the record names
    /// is reported and forgotten. What cannot be removed stays on record.
    fn remove_leftovers(&mut self, pending: &[PendingDrill]) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut accepted: Vec<PendingDrill> = Vec::new();
        for p in pending {
            let dir_ok = self.is_own_scratch_path(&p.dir);
            let prefix_ok = is_scratch_db_prefix(&p.db_prefix);
            if !dir_ok {
                self.record.cleanup_problems.push(format!(
                    "the drill record in {} names {} as a drill's scratch directory, which is not                      a name a drill makes in {}; left alone (the record was edited by someone else)",
                    self.backup_dir.display(),
                    p.dir.display(),
                    self.base.display()
                ));
            }
            if !prefix_ok {
                self.record.cleanup_problems.push(format!(
                    "the drill record in {} names {:?} as a prefix of scratch databases, which is                      not a prefix a drill makes; no database was dropped for it (the record was                      edited by someone else)",
                    self.backup_dir.display(),
                    p.db_prefix
                ));
            }
            if dir_ok && prefix_ok {
                dirs.push(p.dir.clone());
                prefixes.push(p.db_prefix.clone());
                accepted.push(p.clone());
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.backup_dir) {
            for e in entries.flatten() {
                let is_scratch = e.file_name().to_str().is_some_and(is_scratch_dir_name)
                    && e.file_type().is_ok_and(|t| t.is_dir());
                if is_scratch && e.path() != self.scratch && !dirs.contains(&e.path()) {
                    dirs.push(e.path());
                }
            }
        }
        let mut failed_dirs = Vec::new();
        for dir in dirs {
            if std::fs::symlink_metadata(&dir).is_err() {
                continue;
            }
            match crate::beneath::remove_tree(&dir) {
                Ok(()) => tracing::info!("removed {}, left by an interrupted drill", dir.display()),
                Err(e) => {
                    self.record
                        .cleanup_problems
                        .push(format!("cannot remove {}: {e}", dir.display()));
                    failed_dirs.push(dir);
                }
            }
        }
        let mut failed_prefixes = Vec::new();
        if !prefixes.is_empty() && self.server.is_some() {
            match self.connect() {
                Ok(db) => {
                    let mut problems = Vec::new();
                    for prefix in &prefixes {
                        let more = db.drop_prefixed(prefix);
                        if !more.is_empty() {
                            failed_prefixes.push(prefix.clone());
                        }
                        problems.extend(more);
                    }
                    self.record.cleanup_problems.extend(problems);
                }
                Err(f) => {
                    self.record.cleanup_problems.push(format!(
                        "cannot reach the drill server to drop the scratch databases of an interrupted drill: {}",
                        f.message
                    ));
                    failed_prefixes.extend(prefixes.iter().cloned());
                }
            }
        }
        self.kept = accepted
            .into_iter()
            .filter(|p| failed_dirs.contains(&p.dir) || failed_prefixes.contains(&p.db_prefix))
            .collect();
    }

    /// Whether `path` is a scratch directory name a drill makes, directly
    /// in the drill directory or in `BACKUP_DIR`.
    fn is_own_scratch_path(&self, path: &Path) -> bool {
        let name_ok = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_scratch_dir_name);
        let parent_ok = path
            .parent()
            .is_some_and(|p| p == self.base || p == self.backup_dir);
        name_ok && parent_ok
    }

    /// Puts this drill's scratch on record before anything is made, so a
    /// drill killed outright is cleaned up by the next one.
    fn claim(&mut self) -> Result<(), Failure> {
        let mut state = DrillState::load(&self.backup_dir);
        state.pending = self.kept.clone();
        state.pending.push(PendingDrill {
            dir: self.scratch.clone(),
            db_prefix: self.prefix.clone(),
        });
        state.save(&self.backup_dir).map_err(|e| {
            Failure::new(
                "setup",
                format!(
                    "cannot record the drill in {} ({e}); check that BACKUP_DIR is writable",
                    self.backup_dir.display()
                ),
            )
        })?;
        self.claimed = true;
        Ok(())
    }

    /// Everything but the clean-up.
    fn steps(&mut self) -> Result<(), Failure> {
        self.choose_free_prefix()?;
        self.claim()?;
        let open_req = self.req.open;
        let found = open::resolve(&open_req).map_err(|e| Failure::new("archive", e))?;
        self.record.archive = found.name();
        if let open::Found::Local(path, _) = &found {
            self.record.archive_bytes = std::fs::metadata(path).ok().map(|m| m.len());
        }
        self.make_scratch()?;
        let chain = open::chain(&open_req, found).map_err(|e| Failure::new("archive", e))?;
        if let Some(base) = &chain.base {
            self.record.base = Some(base.name());
        }
        self.cancelled()?;
        let clock = Instant::now();
        let restored = self.restore_files(&open_req, &chain)?;
        let files_seconds = clock.elapsed().as_secs_f64();
        self.record.files_seconds = Some(files_seconds);
        self.record.files = restored.files;
        self.record.file_bytes = restored.bytes;
        self.record.recovery_seconds = Some(files_seconds);
        tracing::info!(
            "drill: {} files ({}) restored and checked in {files_seconds:.1} s",
            restored.files,
            human(restored.bytes)
        );
        let databases = match &restored.info.mongodb {
            Some(section) => {
                let dbs = self.restore_database(&restored, section)?;
                if self.req.open.remote.is_none() {
                    self.replay_oplog(section)?;
                }
                dbs
            }
            None => Vec::new(),
        };
        if let Err(e) = restored.finish() {
            tracing::warn!("could not remove the drill's staging directory: {e}");
        }
        self.cancelled()?;
        self.smoke_test(&databases)
    }

    /// Picks scratch names whose database prefix no database on the drill
    /// server has (the names are random, so a collision means someone made
    /// such a database; it is never touched, and new names are drawn).
    fn choose_free_prefix(&mut self) -> Result<(), Failure> {
        if self.server.is_none() {
            return Ok(());
        }
        for _ in 0..NAME_ATTEMPTS {
            let prefix = self.prefix.clone();
            let taken = self
                .connect()?
                .databases_with_prefix(&prefix)
                .map_err(|e| Failure::new("setup", e))?;
            let Some(name) = taken.first() else {
                return Ok(());
            };
            tracing::warn!(
                "the drill server already has a database named {name}, which this drill's \
                 scratch names would collide with; it is left alone and other names are drawn"
            );
            self.draw_names();
        }
        Err(Failure::new(
            "setup",
            format!(
                "the drill server has databases named like every scratch name this drill drew \
                 ({NAME_ATTEMPTS} tries); nothing was restored (drop the {DB_PREFIX}* databases \
                 nobody uses)"
            ),
        ))
    }

    /// New random scratch names (before anything is made with the old).
    fn draw_names(&mut self) {
        let names = ScratchNames::new(self.record.started_at);
        self.scratch = self.base.join(names.dir);
        self.prefix = names.db_prefix;
    }

    /// The scratch directory: new, private, in the drill directory. A name
    /// someone made first is left alone and another is drawn (and put on
    /// record before it is made).
    fn make_scratch(&mut self) -> Result<(), Failure> {
        if !self.base.is_dir() {
            return Err(Failure::new(
                "setup",
                format!(
                    "the drill directory {} does not exist; create it or check BACKUP_DRILL_DIR",
                    self.base.display()
                ),
            ));
        }
        for _ in 0..NAME_ATTEMPTS {
            match std::fs::DirBuilder::new().mode(0o700).create(&self.scratch) {
                Ok(()) => {
                    self.made_scratch = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    tracing::warn!(
                        "{} already exists; it is left alone and another scratch name is drawn",
                        self.scratch.display()
                    );
                    let dir = ScratchNames::new(self.record.started_at).dir;
                    self.scratch = self.base.join(dir);
                    self.claimed = false;
                    self.claim()?;
                }
                Err(e) => {
                    return Err(Failure::new(
                        "setup",
                        format!(
                            "cannot create the scratch directory {} ({e}); check BACKUP_DRILL_DIR",
                            self.scratch.display()
                        ),
                    ));
                }
            }
        }
        Err(Failure::new(
            "setup",
            format!(
                "every scratch name this drill drew already exists in {}; nothing was restored",
                self.base.display()
            ),
        ))
    }

    /// Step 1: the files, with every check a restore makes.
    fn restore_files(
        &mut self,
        open_req: &open::Request<'_>,
        chain: &open::Chain,
    ) -> Result<restore::Restored, Failure> {
        let progress = logging::progress(self.req.verbosity, "drill: restoring");
        let result = restore::stage_and_place(
            open_req,
            chain,
            restore::Request {
                target: &self.scratch,
                opts: ExtractOptions {
                    files: true,
                    mongo: true,
                    include: None,
                    dry_run: false,
                    existing_target: Some(self.scratch.clone()),
                    same_owner: false,
                    same_permissions: false,
                },
                allow_outside_symlinks: false,
                includes: &[],
                dump_has_target: self.server.is_some(),
                cancel: Some(&self.req.cancel),
            },
            &progress,
        );
        progress.finish_and_clear();
        result.map_err(|e| {
            self.cancelled()
                .err()
                .unwrap_or_else(|| Failure::new(restore_step(&e), e))
        })
    }

    /// Step 2 and 3: the database into scratch databases, then compared.
    /// Returns (database in the dump, scratch name) pairs.
    fn restore_database(
        &mut self,
        restored: &restore::Restored,
        section: &crate::archive::manifest::MongoSection,
    ) -> Result<Vec<(String, String)>, Failure> {
        if let Some(db) = section
            .databases
            .iter()
            .find(|d| self.prefix.len() + d.len() > MAX_DB_NAME)
        {
            return Err(Failure::new(
                "setup",
                format!(
                    "the scratch name {}{db} is longer than MongoDB's {MAX_DB_NAME} bytes for a database name",
                    self.prefix
                ),
            ));
        }
        let uri = self.connect()?.uri.clone();
        let target = mongo::load::Target {
            uri: Some(uri),
            to_db: None,
            db_prefix: Some(self.prefix.clone()),
            drop: false,
        };
        let clock = Instant::now();
        let report =
            mongo::load::restore_dump(&restored.dump_dir(), &target, false, &self.req.cancel)
                .map_err(|e| match e {
                    MongoError::Cancelled => {
                        Failure::new("cancelled", "the drill was stopped before it finished")
                    }
                    e => Failure::new("database", e),
                })?;
        let database_seconds = clock.elapsed().as_secs_f64();
        self.record.database_seconds = Some(database_seconds);
        *self.record.recovery_seconds.get_or_insert(0.0) += database_seconds;
        if let Some((ns, _)) = report
            .collections
            .iter()
            .find(|(_, f)| matches!(f, mongo::load::Fate::Exists))
        {
            return Err(Failure::new(
                "setup",
                format!(
                    "{ns} already existed on the drill server; it was left alone and the drill stopped"
                ),
            ));
        }
        tracing::info!(
            "drill: {} collections restored in {database_seconds:.1} s",
            report.restored.len()
        );
        self.restored = report
            .restored
            .iter()
            .map(|c| (c.db.clone(), c.name.clone()))
            .collect();
        self.cancelled()?;
        let db = self.db.as_ref().expect("connected for the restore");
        let comparison = db
            .rt
            .block_on(compare::compare(
                &db.client,
                section,
                &report.restored,
                &self.req.cancel,
            ))
            .map_err(|e| match e {
                MongoError::Cancelled => {
                    Failure::new("cancelled", "the drill was stopped before it finished")
                }
                e => Failure::new("compare", e),
            })?;
        self.record.collections = comparison.collections;
        self.record.documents = comparison.documents;
        let count = comparison.mismatches.len();
        self.record.mismatches = comparison.mismatches;
        self.record.mismatches.truncate(MAX_MISMATCHES);
        if let Some(first) = self.record.mismatches.first() {
            return Err(Failure::new(
                "compare",
                format!(
                    "the restored database differs from the archive in {count} place{}: {first}",
                    if count == 1 { "" } else { "s" }
                ),
            ));
        }
        let mut dbs: Vec<(String, String)> = section
            .databases
            .iter()
            .map(|d| (d.clone(), format!("{}{d}", self.prefix)))
            .collect();
        dbs.sort();
        Ok(dbs)
    }

    /// Step 3b: the oplog captured after this archive, replayed into the
    /// scratch databases and compared with the live database at the same
    /// point (when this archive is the base of the captured history).
    fn replay_oplog(
        &mut self,
        section: &crate::archive::manifest::MongoSection,
    ) -> Result<(), Failure> {
        let uri = self.connect()?.uri.clone();
        let scratch = mongo::load::Target {
            uri: Some(uri),
            to_db: None,
            db_prefix: Some(self.prefix.clone()),
            drop: false,
        };
        let step = pitr::Step {
            backup_dir: &self.req.opts.backup_dir,
            archive: &self.record.archive,
            keys: self.req.open.keys,
            trusted: self.req.open.trusted,
            origin: self.req.open.origin,
            scratch: &scratch,
            databases: section.databases.clone(),
            restored: self.restored.clone(),
            live: self.req.opts.app_uri.as_ref(),
            cancel: &self.req.cancel,
        };
        let Some(checked) = pitr::run(&step).map_err(|e| Failure::new("pitr", e))? else {
            return Ok(());
        };
        tracing::info!(
            "drill: {} oplog operations replayed in {:.1} s, up to {}",
            checked.operations,
            checked.seconds,
            checked.point
        );
        self.record.pitr_seconds = Some(checked.seconds);
        self.record.pitr_operations = Some(checked.operations);
        self.record.pitr_point = Some(checked.point.clone());
        self.record.pitr_note = checked.note.clone();
        if let Some(first) = checked.mismatches.first() {
            let count = checked.mismatches.len();
            self.record.mismatches = checked.mismatches.clone();
            self.record.mismatches.truncate(MAX_MISMATCHES);
            return Err(Failure::new(
                "pitr",
                format!(
                    "after the oplog replay, the scratch database differs from the live one in \
                     {count} collection{}: {first}",
                    if count == 1 { "" } else { "s" }
                ),
            ));
        }
        Ok(())
    }

    /// Step 4: the smoke test, when there is one.
    fn smoke_test(&mut self, databases: &[(String, String)]) -> Result<(), Failure> {
        let Some(command) = self.req.opts.command.clone() else {
            return Ok(());
        };
        let mut env = vec![(
            "COFRE_DRILL_DIR".to_owned(),
            self.scratch.display().to_string(),
        )];
        if let Some(db) = &self.db {
            // The database the application uses: the one its URI names,
            // else the first.
            let own = self
                .req
                .opts
                .app_uri
                .as_ref()
                .and_then(|u| mongo::uri_database(u.expose()));
            let main = databases
                .iter()
                .find(|(d, _)| Some(d) == own.as_ref())
                .or(databases.first());
            if let Some((_, scratch)) = main {
                let uri = mongo::with_database(db.uri.expose(), scratch);
                env.push(("COFRE_DRILL_MONGODB_URI".into(), uri.clone()));
                env.push(("MONGODB_URI".into(), uri));
            }
            let list: Vec<String> = databases.iter().map(|(d, s)| format!("{d}={s}")).collect();
            env.push(("COFRE_DRILL_DATABASES".into(), list.join(",")));
        }
        tracing::info!("drill: running the smoke test: {command}");
        let run = smoke::run(
            &smoke::Smoke {
                command: &command,
                dir: &self.scratch,
                env,
                timeout: self.req.opts.timeout,
            },
            &self.req.cancel,
        )
        .map_err(|e| Failure::new("command", format!("cannot run BACKUP_DRILL_COMMAND: {e}")))?;
        let outcome = if run.timed_out {
            Some(format!(
                "BACKUP_DRILL_COMMAND did not finish within {} (BACKUP_DRILL_TIMEOUT) and was stopped",
                humantime::format_duration(self.req.opts.timeout)
            ))
        } else if run.exit_code == Some(0) {
            None
        } else {
            Some(match (run.exit_code, run.signal) {
                (Some(code), _) => format!("BACKUP_DRILL_COMMAND exited with code {code}"),
                (None, Some(sig)) => format!("BACKUP_DRILL_COMMAND was killed by signal {sig}"),
                (None, None) => "BACKUP_DRILL_COMMAND ended abnormally".to_owned(),
            })
        };
        let tail = run.output_tail.lines().last().unwrap_or("").to_owned();
        self.record.command = Some(run);
        self.cancelled()?;
        match outcome {
            None => Ok(()),
            Some(why) if tail.is_empty() => Err(Failure::new("command", why)),
            Some(why) => Err(Failure::new(
                "command",
                format!("{why}; its last line: {tail}"),
            )),
        }
    }

    /// Step 5: drops the scratch databases and removes the scratch
    /// directory; returns what could not be done.
    fn clean_up(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.claimed {
            return problems;
        }
        if let Some(db) = &self.db {
            problems.extend(db.drop_prefixed(&self.prefix));
        }
        if self.made_scratch
            && let Err(e) = crate::beneath::remove_tree(&self.scratch)
        {
            problems.push(format!("cannot remove {}: {e}", self.scratch.display()));
        }
        problems
    }
}

/// Which step a restore error belongs to: reading and checking the archive,
/// or writing the files.
fn restore_step(e: &RestoreError) -> &'static str {
    match e {
        RestoreError::Read(_) | RestoreError::Sign(_) => "archive",
        RestoreError::Database(_) => "setup",
        _ => "files",
    }
}

/// A reader that fails once `cancel` is set, so a long read stops soon.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;

    #[test]
    fn scratch_names_are_random_and_only_their_exact_shape_is_a_drills() {
        let at = Utc::now();
        let a = ScratchNames::new(at);
        let b = ScratchNames::new(at);
        assert_ne!(a.dir, b.dir);
        assert!(is_scratch_dir_name(&a.dir), "{}", a.dir);
        assert!(is_scratch_db_prefix(&a.db_prefix), "{}", a.db_prefix);
        for not in [
            "",
            ".cofre-drill-",
            ".cofre-drill-20260101000000",
            ".cofre-drill-20260101000000-ABCDEFGH",
            ".cofre-drill-20260101000000-abcdefgh/..",
            "precious",
        ] {
            assert!(!is_scratch_dir_name(not), "{not}");
        }
        for not in [
            "",
            "shop",
            "cofre_drill_",
            "cofre_drill_20260101000000_",
            "cofre_drill_20260101000000_abcdefgh",
        ] {
            assert!(!is_scratch_db_prefix(not), "{not}");
        }
    }

    #[test]
    fn a_drill_of_a_files_only_archive_restores_checks_and_removes_its_scratch() {
        let f = Fixture::new();
        f.backup();
        let access = f.access();
        let opts = Options {
            backup_dir: f.backup_dir.clone(),
            dir: None,
            server: None,
            app_uri: None,
            command: Some("test -f src/app.js".into()),
            timeout: Duration::from_secs(30),
        };
        let record = run(&Request {
            opts: &opts,
            open: access.request(&f.backup_dir, "latest", None, false),
            wait: None,
            verbosity: Verbosity::Quiet,
            cancel: Arc::new(AtomicBool::new(false)),
        })
        .unwrap();
        assert!(record.ok, "{record:?}");
        assert_eq!(record.files, 2);
        assert_eq!(record.command.unwrap().exit_code, Some(0));
        let left: Vec<_> = std::fs::read_dir(&f.backup_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(DIR_PREFIX))
            .collect();
        assert!(left.is_empty());
        assert!(DrillState::load(&f.backup_dir).pending.is_empty());
    }
}
