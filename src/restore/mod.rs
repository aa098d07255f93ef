//! Restoring without harm: stage on the target's own filesystem, verify
//! everything, then move the result into place.
//!
//! - [`Staging`] is a private directory (0700) inside the target (which is
//!   created first when it does not exist), so the final moves are renames
//!   on one filesystem, a mount point included.
//! - [`extract::Extractor`] is the archive visitor that writes the staged
//!   tree. Every operation goes through [`crate::beneath`]: the kernel
//!   resolves each path beneath the staging directory and follows no
//!   symlink, so no entry of any archive can reach outside it, whatever
//!   its name, whatever links earlier entries made.
//! - [`links`] then checks each restored symlink against the tree it will
//!   live in (symlinks that point outside are refused unless asked for).
//! - [`place`] plans the whole move before the first change (refusing to
//!   put a file where the target has a non-empty directory), applies it
//!   with renames (`RENAME_EXCHANGE` where something is replaced), rolls
//!   back on failure, and finally applies directory modes and times.

pub mod extract;
pub mod links;
pub mod place;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::beneath::Dir;

pub use extract::{ExtractOptions, Extractor};

/// Prefix of staging directories (left out of backups, never restored).
pub const STAGING_PREFIX: &str = ".cofre-restore-";

/// Why a restore could not be set up or finished.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The database part cannot be restored (no server, for one).
    #[error(transparent)]
    Database(#[from] crate::mongo::MongoError),
    /// The target has files and `--force` was not given.
    #[error(
        "target directory {0} is not empty; restore into a new directory with --to DIR, \
         or pass --force to replace the files the archive holds (other files are left alone)"
    )]
    TargetNotEmpty(PathBuf),
    /// The target is a file.
    #[error("target {0} exists and is not a directory; choose another with --to DIR")]
    TargetNotDir(PathBuf),
    /// The target (or its parent) cannot be created or written.
    #[error(
        "cannot prepare {path} for the restore: {source}; check the path given to --to and its permissions"
    )]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Not enough space.
    #[error(
        "not enough free space in {path}: the archive needs {need}, only {free} are free; \
         free some space or restore elsewhere with --to DIR (nothing was changed)"
    )]
    NoSpace {
        /// The target.
        path: PathBuf,
        /// Bytes needed.
        need: String,
        /// Bytes free.
        free: String,
    },
    /// `--include` matched nothing.
    #[error(
        "no entry of {archive} matches --include {patterns}; nothing was restored (`cofre verify` lists what the archive holds)"
    )]
    NothingIncluded {
        /// The archive.
        archive: String,
        /// The patterns.
        patterns: String,
    },
    /// A restored symlink would point outside the target.
    #[error(
        "{archive} holds a symlink {path} -> {target:?}, which leads outside the restore target; \
         nothing was restored (pass --allow-outside-symlinks to restore such links as they are; \
         they are never followed while restoring)"
    )]
    OutsideSymlink {
        /// The archive.
        archive: String,
        /// The link.
        path: String,
        /// Where it points.
        target: String,
    },
    /// The archive did not verify.
    #[error(transparent)]
    Read(#[from] crate::archive::reader::ReadError),
    /// Its signature did not verify.
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    /// It (or a differential's full) could not be opened.
    #[error(transparent)]
    Open(#[from] crate::open::OpenArchiveError),
    /// Moving into place failed.
    #[error(transparent)]
    Place(#[from] place::PlaceError),
    /// The staging directory failed.
    #[error("cannot {what}: {source}")]
    Staging {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl crate::exit::Coded for RestoreError {
    fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            RestoreError::Database(e) => e.exit(),
            RestoreError::Read(e) => e.exit(),
            RestoreError::Sign(e) => e.exit(),
            RestoreError::Open(e) => e.exit(),
            RestoreError::Place(e) => e.exit(),
            RestoreError::TargetNotEmpty(_)
            | RestoreError::TargetNotDir(_)
            | RestoreError::Prepare { .. }
            | RestoreError::NoSpace { .. }
            | RestoreError::NothingIncluded { .. }
            | RestoreError::OutsideSymlink { .. }
            | RestoreError::Staging { .. } => Exit::Failure,
        }
    }
}

/// What to restore from an opened archive, and where.
#[derive(Debug)]
pub struct Request<'a> {
    /// Where the files go (or, without files, beside which the dump is staged).
    pub target: &'a Path,
    /// Extraction options (files, dump, include, owners, modes).
    pub opts: ExtractOptions,
    /// Restore symlinks that lead outside the target.
    pub allow_outside_symlinks: bool,
    /// The `--include` patterns, for the message when nothing matched.
    pub includes: &'a [String],
    /// Whether a dump in the archive has a server to go to. When it has
    /// not, the restore stops after the archive verified and before any
    /// file is moved into place, so it does not stop halfway for want of
    /// a setting.
    pub dump_has_target: bool,
    /// Set from elsewhere to stop reading (a drill told to stop).
    pub cancel: Option<&'a std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// A restore whose files are in place and whose dump is staged.
pub struct Restored {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The archive's manifest (without entries).
    pub info: crate::archive::manifest::ManifestInfo,
    /// Whether the target was new or empty before the restore.
    pub target_was_empty: bool,
    staging: Staging,
    private_root: Option<PathBuf>,
}

impl Restored {
    /// The staged database dump (`<db>/<collection>.bson`...).
    pub fn dump_dir(&self) -> PathBuf {
        self.staging.path().join("mongodb")
    }

    /// Removes the staging directory (and the private directory a
    /// database-only restore staged in).
    pub fn finish(self) -> io::Result<()> {
        let result = self.staging.finish(true);
        if let Some(root) = &self.private_root {
            let _ = fs::remove_dir(root);
        }
        result
    }
}

/// Stages `chain` (files into `req.target`, the dump beside): for a
/// differential, its full first, then the differential applied over it;
/// verifies each archive against its manifest and signature (and the full
/// against the hash the differential names), checks where the symlinks
/// lead, then moves the files into place. The staged dump waits in the
/// result for the database step.
pub fn stage_and_place(
    open_req: &crate::open::Request<'_>,
    chain: &crate::open::Chain,
    req: Request<'_>,
    progress: &indicatif::ProgressBar,
) -> Result<Restored, RestoreError> {
    let name = chain.top.name();
    let want_files = req.opts.files;
    let want_dump = req.opts.mongo;
    // Files are staged inside the target; a database-only restore stages
    // in a private directory beside where the files would have gone.
    let private_root = if want_files {
        None
    } else {
        Some(private_dir_beside(req.target)?)
    };
    let staging = Staging::new(private_root.as_deref().unwrap_or(req.target))?;
    check_free_space(chain, &staging, want_files, want_dump)?;
    let mut extractor = Extractor::new(&name, Some(staging.dir()), req.opts, Box::new(io::sink()))
        .map_err(|source| RestoreError::Staging {
            what: "prepare the staging directory",
            source,
        })?;
    let read = |found: &crate::open::Found, extractor: &mut Extractor| {
        let mut opened = crate::open::open_found(open_req, found)?;
        let stream = std::mem::replace(&mut opened.stream, Box::new(io::empty()));
        let stream: Box<dyn io::Read + Send> = match req.cancel {
            Some(c) => Box::new(CancelRead {
                inner: stream,
                cancel: std::sync::Arc::clone(c),
            }),
            None => stream,
        };
        let summary = crate::archive::reader::read_archive(
            progress.wrap_read(stream),
            extractor,
            &opened.name,
        )?;
        opened.check_signature()?;
        Ok::<_, RestoreError>(summary)
    };
    // A differential's full: its files only (the differential's dump is
    // whole), and nothing at all for a database-only restore.
    if let Some(base) = &chain.base
        && want_files
    {
        extractor.begin_full(&base.name());
        let summary = read(base, &mut extractor)?;
        chain.check_base(&summary.manifest_hash)?;
        extractor.begin_differential(&name);
    }
    let summary = read(&chain.top, &mut extractor)?;
    progress.finish_and_clear();
    let (files, bytes, entries) = (extractor.files, extractor.bytes, extractor.entries);
    if want_files && !req.includes.is_empty() && entries == 0 {
        return Err(RestoreError::NothingIncluded {
            archive: name,
            patterns: req.includes.join(", "),
        });
    }
    let staged = extractor
        .into_staged()
        .map_err(|source| RestoreError::Staging {
            what: "finish the staging directory",
            source,
        })?;
    if want_dump && summary.info.mongodb.is_some() && !req.dump_has_target {
        return Err(crate::mongo::MongoError::NoTarget.into());
    }
    if want_files {
        if !req.allow_outside_symlinks {
            check_links(&name, &staging, &staged)?;
        }
        place_files(&staging, &staged)?;
    }
    Ok(Restored {
        files,
        bytes,
        info: summary.info,
        target_was_empty: want_files && staging.target_was_empty(),
        staging,
        private_root,
    })
}

/// A stream that fails once `cancel` is set (a stopped drill).
struct CancelRead {
    inner: Box<dyn io::Read + Send>,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl io::Read for CancelRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            // Not `Interrupted`: readers retry that.
            return Err(io::Error::other("the restore was stopped"));
        }
        self.inner.read(buf)
    }
}

/// A new private directory (0700) beside `target`, for a database-only
/// restore's staging.
fn private_dir_beside(target: &Path) -> Result<PathBuf, RestoreError> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    let dir = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(parent)
        .map_err(|source| RestoreError::Prepare {
            path: parent.to_path_buf(),
            source: crate::store::without_path(source),
        })?;
    Ok(dir.keep())
}

/// Refuses to start when the size the restore writes cannot fit: files,
/// the dump, or both, of every archive of the chain (an archive signed
/// before cofre said the files' share counts whole).
fn check_free_space(
    chain: &crate::open::Chain,
    staging: &Staging,
    files: bool,
    dump: bool,
) -> Result<(), RestoreError> {
    let need = chain.restore_bytes(files, dump);
    let (Some(need), Ok(free)) = (need, staging.free_bytes()) else {
        return Ok(());
    };
    if need > free {
        return Err(RestoreError::NoSpace {
            path: staging.target().to_path_buf(),
            need: crate::format::human(need),
            free: crate::format::human(free),
        });
    }
    Ok(())
}

/// Checks every restored symlink against the tree it will live in.
fn check_links(
    name: &str,
    staging: &Staging,
    staged: &extract::Staged,
) -> Result<(), RestoreError> {
    let io_err = |source| RestoreError::Staging {
        what: "check the restored symlinks",
        source,
    };
    if staged.links.count() == 0 {
        return Ok(());
    }
    let files = staging.dir().open_dir(b"files").map_err(io_err)?;
    let mut layers = vec![&files];
    if !staging.target_was_empty() {
        layers.push(staging.target_dir());
    }
    let views = links::Views { layers };
    let mut cursor = staged.links.forward();
    while let Some(rec) = cursor.next_record().map_err(io_err)? {
        let (rel, target) = extract::split_link_record(&rec);
        if views.escapes(rel, target).map_err(io_err)? {
            return Err(RestoreError::OutsideSymlink {
                archive: name.to_owned(),
                path: String::from_utf8_lossy(rel).into_owned(),
                target: String::from_utf8_lossy(target).into_owned(),
            });
        }
    }
    Ok(())
}

/// Plans and applies the move of the staged files into the target, then
/// gives directories their modes and times.
fn place_files(staging: &Staging, staged: &extract::Staged) -> Result<(), RestoreError> {
    let io_err = |what| move |source| RestoreError::Staging { what, source };
    let files = staging
        .dir()
        .open_dir(b"files")
        .map_err(io_err("open the staged files"))?;
    let target = staging.target_dir();
    let steps = place::plan(&files, target, staging.target(), staging.name())?;
    place::apply(&steps, &files, target, staging.target())?;
    let root = staged.root.as_ref().filter(|_| staging.target_was_empty());
    let failed = place::finish_dirs(target, &staged.dirs, root).map_err(io_err(
        "set the modes and times of the restored directories",
    ))?;
    if failed > 0 {
        tracing::warn!(
            "the modes or times of {failed} restored directories could not be set (the files are in place)"
        );
    }
    Ok(())
}

/// Marks `target`, a new directory a restore filled inside the project, as
/// a restored copy: later backups leave a directory holding this mark out
/// (see [`crate::walk::RESTORED_MARK`]), so a restore never doubles the
/// next archive. The mark says so to whoever finds it.
pub fn mark_restored_copy(target: &Path, archive: &str) -> io::Result<()> {
    use std::io::Write;
    let dir = Dir::open(target)?;
    let mut f = dir.create_file(crate::walk::RESTORED_MARK.as_bytes())?;
    writeln!(
        f,
        "This directory was restored by cofre from {archive} on {}.\n\
         Backups of the project it lies in leave it out; delete this file to back it up.",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )?;
    rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(0o644))?;
    Ok(())
}

/// True when `dir` exists and holds anything.
pub fn is_nonempty_dir(dir: &Path) -> io::Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The private directory a restore stages into, inside the target.
pub struct Staging {
    target: PathBuf,
    target_dir: Dir,
    name: Vec<u8>,
    dir: Dir,
    created_target: bool,
    was_empty: bool,
    done: bool,
}

impl Staging {
    /// Prepares to restore into `target`: creates it (and missing parents,
    /// mode 0700) when it does not exist, then a private staging directory
    /// inside it.
    pub fn new(target: &Path) -> Result<Staging, RestoreError> {
        let prepare = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RestoreError::Prepare { path, source }
        };
        let created_target = match fs::metadata(target) {
            Ok(m) if m.is_dir() => false,
            Ok(_) => return Err(RestoreError::TargetNotDir(target.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(target)
                    .map_err(prepare(target))?;
                true
            }
            Err(e) => return Err(prepare(target)(e)),
        };
        let was_empty = created_target || !is_nonempty_dir(target).map_err(prepare(target))?;
        let target_dir = Dir::open(target).map_err(prepare(target))?;
        // tempfile picks a random name and retries on a collision; the
        // directory itself is made through the target's handle.
        let name = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .make_in(target, |path| {
                let name = path.file_name().unwrap_or_default().as_bytes().to_vec();
                target_dir.mkdir(&name, 0o700).map(|()| name)
            })
            .map_err(|e| prepare(target)(crate::store::without_path(e)))?;
        // Keep the name (the guard would try to delete it as a file).
        let (name, guard) = name.into_parts();
        let _ = guard.keep();
        let dir = target_dir.open_dir(&name).map_err(prepare(target))?;
        Ok(Staging {
            target: target.to_path_buf(),
            target_dir,
            name,
            dir,
            created_target,
            was_empty,
            done: false,
        })
    }

    /// The staging directory.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The target directory.
    pub fn target_dir(&self) -> &Dir {
        &self.target_dir
    }

    /// The target's path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The staging directory's name inside the target.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The staging directory's path (for the database restore, which reads
    /// the staged dump by path).
    pub fn path(&self) -> PathBuf {
        self.target.join(OsStr::from_bytes(&self.name))
    }

    /// Whether the target was new or empty (then the archive's root mode
    /// and time are applied to it).
    pub fn target_was_empty(&self) -> bool {
        self.was_empty
    }

    /// Free bytes where the target is.
    pub fn free_bytes(&self) -> io::Result<u64> {
        self.target_dir.free_bytes()
    }

    /// Removes the staging directory (what is left in it: replaced files,
    /// the staged dump). Called on drop too; explicitly to see errors.
    pub fn finish(mut self, succeeded: bool) -> io::Result<()> {
        self.cleanup(succeeded)
    }

    fn cleanup(&mut self, succeeded: bool) -> io::Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        // std's remove_dir_all never follows a symlink (it works through
        // directory handles), so nothing outside the staging tree goes.
        let result = fs::remove_dir_all(self.path());
        if !succeeded && self.created_target {
            let _ = fs::remove_dir(&self.target);
        }
        result
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self.cleanup(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;

    #[test]
    fn an_archive_is_staged_verified_and_placed_into_a_new_target() {
        let f = Fixture::new();
        f.backup();
        let access = f.access();
        let req = access.request(&f.backup_dir, "latest", None, false);
        let found = crate::open::resolve(&req).unwrap();
        let chain = crate::open::chain(&req, found).unwrap();
        let target = f.dir.path().join("restored");
        let restored = stage_and_place(
            &req,
            &chain,
            Request {
                target: &target,
                opts: ExtractOptions {
                    files: true,
                    mongo: true,
                    include: None,
                    dry_run: false,
                    existing_target: Some(target.clone()),
                    same_owner: false,
                    same_permissions: false,
                },
                allow_outside_symlinks: false,
                includes: &[],
                dump_has_target: false,
                cancel: None,
            },
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(restored.files, 2);
        assert!(restored.target_was_empty);
        restored.finish().unwrap();
        assert_eq!(
            fs::read_to_string(target.join("src/app.js")).unwrap(),
            "console.log('hi')\n"
        );
        // Nothing of the staging is left.
        let names: Vec<_> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
