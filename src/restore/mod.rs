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
            .map_err(prepare(target))?;
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
