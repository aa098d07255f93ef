//! Restoring without harm: extract into a staging directory beside the
//! target, verify everything against the manifest, and only then move the
//! result into place.
//!
//! The [`Extractor`] is the archive visitor that writes the staging tree. It
//! never writes through a symlink (every parent is checked to be a real
//! directory it made), refuses symlinks that point outside the target unless
//! asked, and refuses hard links to anything but a file it already wrote.
//! Directory modes and times are applied last, deepest first, so a read-only
//! directory does not stop its own contents from being written.
//! [`place`] then moves the staged tree into the target: one rename when the
//! target is new or empty, a merge of renames with `--force`.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ignore::gitignore::Gitignore;

use crate::archive::reader::{EntryInfo, ReadError, Visitor};
use crate::archive::tarenc::Kind;

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Restore the project files.
    pub files: bool,
    /// Stage the database dump.
    pub mongo: bool,
    /// Only paths matching (or under a match of) this.
    pub include: Option<Gitignore>,
    /// Restore symlinks that point outside the target.
    pub allow_outside_symlinks: bool,
    /// Print what would be written instead of writing.
    pub dry_run: bool,
    /// For `--dry-run`: the existing target, to say what would be replaced.
    pub existing_target: Option<PathBuf>,
}

/// The archive visitor that writes the staging tree.
pub struct Extractor {
    files_root: PathBuf,
    mongo_root: PathBuf,
    opts: ExtractOptions,
    /// Directories to finish (path, mode, mtime), in creation order.
    dirs: Vec<(PathBuf, u32, SystemTime)>,
    /// Directories made only because something inside was restored.
    implicit_dirs: Vec<PathBuf>,
    last_parent: Option<PathBuf>,
    as_root: bool,
    /// Our own uid and gid: a file we create already has them.
    ids: (u64, u64),
    buf: Vec<u8>,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Project entries restored (or listed, in a dry run), the root aside.
    pub entries: u64,
    out: Box<dyn Write>,
}

fn time_of(secs: i64, nsec: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nsec))
    }
}

fn visitor_err(what: &str, path: &Path, e: &io::Error) -> ReadError {
    let hint = match e.kind() {
        io::ErrorKind::StorageFull => "; free some space there and retry",
        io::ErrorKind::PermissionDenied => "; check the permissions of the target directory",
        _ => "",
    };
    ReadError::Visitor(format!("cannot {what} {}: {e}{hint}", path.display()))
}

/// Whether a symlink at `link_rel` (relative to the target root) pointing
/// to `target` stays inside the target, judged lexically.
pub fn symlink_stays_inside(link_rel: &[u8], target: &[u8]) -> bool {
    if target.first() == Some(&b'/') || target.is_empty() {
        return false;
    }
    // Depth of the link's directory below the root.
    let mut depth: i64 = link_rel
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .count() as i64
        - 1;
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

impl Extractor {
    /// Prepares to write under `staging` (`files/` and `mongodb/` inside it).
    /// `out` receives the `--dry-run` listing.
    pub fn new(staging: &Path, opts: ExtractOptions, out: Box<dyn Write>) -> Extractor {
        Extractor {
            files_root: staging.join("files"),
            mongo_root: staging.join("mongodb"),
            opts,
            dirs: Vec::new(),
            implicit_dirs: Vec::new(),
            last_parent: None,
            as_root: rustix::process::geteuid().is_root(),
            ids: (
                u64::from(rustix::process::geteuid().as_raw()),
                u64::from(rustix::process::getegid().as_raw()),
            ),
            buf: vec![0u8; 256 << 10],
            files: 0,
            bytes: 0,
            entries: 0,
            out,
        }
    }

    /// Where the files are staged.
    pub fn files_root(&self) -> &Path {
        &self.files_root
    }

    /// Where the dump is staged.
    pub fn mongo_root(&self) -> &Path {
        &self.mongo_root
    }

    /// Makes sure every directory from `root` down to `dir` exists and is a
    /// real directory (never a symlink), creating what is missing.
    fn ensure_dir(&mut self, root: &Path, dir: &Path) -> Result<(), ReadError> {
        if self.last_parent.as_deref() == Some(dir) {
            return Ok(());
        }
        let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
        let mut cur = root.to_path_buf();
        let mut comps = vec![None];
        comps.extend(rel.components().map(Some));
        for comp in comps {
            if let Some(c) = comp {
                match c {
                    Component::Normal(name) => cur.push(name),
                    _ => {
                        return Err(ReadError::Visitor(format!(
                            "refusing path {}: not a plain relative path",
                            dir.display()
                        )));
                    }
                }
            }
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ReadError::Visitor(format!(
                        "refusing to write through the symlink {} (the archive puts entries under a symlink); nothing was restored",
                        cur.display()
                    )));
                }
                Ok(_) => {
                    return Err(ReadError::Visitor(format!(
                        "refusing to restore under {}, which the archive made a file; the archive is inconsistent",
                        cur.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&cur)
                        .map_err(|e| visitor_err("create directory", &cur, &e))?;
                    self.implicit_dirs.push(cur.clone());
                }
                Err(e) => return Err(visitor_err("inspect", &cur, &e)),
            }
        }
        self.last_parent = Some(dir.to_path_buf());
        Ok(())
    }

    /// Removes whatever an earlier entry put at `path` (a later entry of the
    /// same name wins, as with tar), never following a symlink.
    fn clear(path: &Path) -> Result<(), ReadError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(path),
            Ok(_) => fs::remove_file(path),
            Err(_) => Ok(()),
        }
        .map_err(|e| visitor_err("replace", path, &e))
    }

    fn included(&self, rel: &[u8], is_dir: bool) -> bool {
        match &self.opts.include {
            None => true,
            Some(m) => {
                let path = Path::new(OsStr::from_bytes(rel));
                m.matched_path_or_any_parents(path, is_dir).is_ignore()
            }
        }
    }

    fn write_file(
        &mut self,
        dest: &Path,
        info: &EntryInfo,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(dest)
        };
        // The staging tree is new, so the name is normally free; only an
        // archive that holds a path twice gets here with it taken.
        let mut file = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Self::clear(dest)?;
                create()
            }
            other => other,
        }
        .map_err(|e| visitor_err("create", dest, &e))?;
        let mut written = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ReadError::Corrupt {
                        archive: "the archive".into(),
                        detail: e.to_string(),
                    });
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| visitor_err("write", dest, &e))?;
            written += n as u64;
        }
        self.finish_file(&file, dest, info)?;
        self.bytes += written;
        Ok(())
    }

    fn finish_file(&self, file: &File, dest: &Path, info: &EntryInfo) -> Result<(), ReadError> {
        if self.as_root && (info.uid, info.gid) != self.ids {
            std::os::unix::fs::fchown(file, Some(info.uid as u32), Some(info.gid as u32))
                .map_err(|e| visitor_err("set the owner of", dest, &e))?;
        }
        file.set_permissions(fs::Permissions::from_mode(info.mode))
            .map_err(|e| visitor_err("set the mode of", dest, &e))?;
        let t = time_of(info.mtime, info.mtime_nsec);
        file.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .map_err(|e| visitor_err("set the time of", dest, &e))
    }

    fn files_entry(
        &mut self,
        rel: &[u8],
        info: &EntryInfo,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        if rel.is_empty() {
            // The project root itself: its mode and time go to the target.
            if !self.opts.dry_run {
                let root = self.files_root.clone();
                self.ensure_dir(&root, &root)?;
                self.dirs
                    .push((root, info.mode, time_of(info.mtime, info.mtime_nsec)));
            }
            return Ok(());
        }
        if !self.included(rel, info.kind == Kind::Dir) {
            return Ok(());
        }
        self.entries += 1;
        if info.kind == Kind::Symlink {
            let target = info.link.as_deref().unwrap_or_default();
            if !self.opts.allow_outside_symlinks && !symlink_stays_inside(rel, target) {
                return Err(ReadError::Unsafe {
                    archive: "the archive".into(),
                    path: info.display(),
                    why: format!(
                        "a symlink to {:?}, outside the restore target; pass --allow-outside-symlinks \
                         to restore such links as they are (they are never followed while restoring)",
                        String::from_utf8_lossy(target)
                    ),
                });
            }
        }
        let rel_path = Path::new(OsStr::from_bytes(rel));
        if self.opts.dry_run {
            let exists = self
                .opts
                .existing_target
                .as_ref()
                .is_some_and(|t| fs::symlink_metadata(t.join(rel_path)).is_ok());
            let verb = if exists && info.kind != Kind::Dir {
                "replace"
            } else {
                "write"
            };
            let _ = writeln!(self.out, "would {verb} {}", rel_path.display());
            if info.kind == Kind::File {
                self.files += 1;
                self.bytes += info.size;
            }
            return Ok(());
        }
        let root = self.files_root.clone();
        let dest = root.join(rel_path);
        let parent = dest.parent().unwrap_or(&root).to_path_buf();
        self.ensure_dir(&root, &parent)?;
        match info.kind {
            Kind::Dir => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        Self::clear(&dest)?;
                        fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&dest)
                            .map_err(|e| visitor_err("create directory", &dest, &e))?;
                    }
                    Err(_) => fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&dest)
                        .map_err(|e| visitor_err("create directory", &dest, &e))?,
                }
                self.implicit_dirs.retain(|d| d != &dest);
                self.dirs
                    .push((dest, info.mode, time_of(info.mtime, info.mtime_nsec)));
            }
            Kind::File => {
                self.write_file(&dest, info, data)?;
                self.files += 1;
            }
            Kind::Symlink => {
                Self::clear(&dest)?;
                let target = info.link.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &dest)
                    .map_err(|e| visitor_err("create symlink", &dest, &e))?;
                if self.as_root {
                    let _ = std::os::unix::fs::lchown(
                        &dest,
                        Some(info.uid as u32),
                        Some(info.gid as u32),
                    );
                }
                let ts = rustix::fs::Timespec {
                    tv_sec: info.mtime,
                    tv_nsec: i64::from(info.mtime_nsec) as _,
                };
                let times = rustix::fs::Timestamps {
                    last_access: ts,
                    last_modification: ts,
                };
                let _ = rustix::fs::utimensat(
                    rustix::fs::CWD,
                    &dest,
                    &times,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                );
            }
            Kind::Hardlink => {
                let link = info.link.as_deref().unwrap_or_default();
                let target_rel = link
                    .strip_prefix(crate::archive::FILES_PREFIX.as_bytes())
                    .unwrap_or_default();
                let source = root.join(OsStr::from_bytes(target_rel));
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(ReadError::Unsafe {
                            archive: "the archive".into(),
                            path: info.display(),
                            why: "a hard link to something that is not a file restored earlier"
                                .into(),
                        });
                    }
                }
                Self::clear(&dest)?;
                fs::hard_link(&source, &dest)
                    .map_err(|e| visitor_err("create hard link", &dest, &e))?;
                self.files += 1;
            }
        }
        Ok(())
    }

    fn mongo_entry(
        &mut self,
        rel: &[u8],
        info: &EntryInfo,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        if rel.is_empty() || self.opts.dry_run {
            return Ok(());
        }
        let root = self.mongo_root.clone();
        let dest = root.join(OsStr::from_bytes(rel));
        match info.kind {
            Kind::Dir => {
                self.ensure_dir(&root, &dest)?;
            }
            Kind::File => {
                let parent = dest.parent().unwrap_or(&root).to_path_buf();
                self.ensure_dir(&root, &parent)?;
                self.write_file(&dest, info, data)?;
            }
            _ => {
                return Err(ReadError::Unsafe {
                    archive: "the archive".into(),
                    path: info.display(),
                    why: "only files and directories belong in mongodb/".into(),
                });
            }
        }
        Ok(())
    }

    /// Applies directory modes and times, deepest first, and gives implicit
    /// directories an ordinary mode. Call after the archive verified.
    pub fn finish_dirs(&mut self) -> io::Result<()> {
        for d in &self.implicit_dirs {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        }
        for (path, mode, mtime) in self.dirs.iter().rev() {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))?;
            File::open(path)?.set_times(
                fs::FileTimes::new()
                    .set_modified(*mtime)
                    .set_accessed(*mtime),
            )?;
        }
        Ok(())
    }
}

impl Visitor for Extractor {
    fn entry(&mut self, info: &EntryInfo, data: &mut dyn Read) -> Result<(), ReadError> {
        if let Some(rel) = info
            .files_rel()
            .or((info.path == b"files").then_some(&b""[..]))
        {
            if self.opts.files {
                return self.files_entry(rel, info, data);
            }
        } else if let Some(rel) = info
            .mongo_rel()
            .or((info.path == b"mongodb").then_some(&b""[..]))
            && self.opts.mongo
        {
            return self.mongo_entry(rel, info, data);
        }
        Ok(())
    }
}

/// Whether `dir` exists and holds anything.
pub fn is_nonempty_dir(dir: &Path) -> io::Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Moves the staged tree `staged` into `target`: a rename when the target is
/// missing or empty; with `merge`, each staged entry replaces its namesake
/// (directories are merged, other files in the target are left alone).
pub fn place(staged: &Path, target: &Path, merge: bool) -> io::Result<()> {
    if !is_nonempty_dir(target)? {
        if fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
            // rename(2) replaces an empty directory atomically.
            return fs::rename(staged, target).or_else(|_| {
                fs::remove_dir(target)?;
                fs::rename(staged, target)
            });
        }
        return fs::rename(staged, target);
    }
    if !merge {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not empty", target.display()),
        ));
    }
    merge_into(staged, target)
}

fn merge_into(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let src_is_dir = entry.file_type()?.is_dir();
        match fs::symlink_metadata(&dst) {
            Ok(m) if m.is_dir() && src_is_dir => {
                // The staged directory's mode and time, read before moving its
                // children out changes the time; the merged one gets them.
                let sm = fs::symlink_metadata(&src)?;
                merge_into(&src, &dst)?;
                fs::set_permissions(&dst, sm.permissions())?;
                File::open(&dst)?.set_times(fs::FileTimes::new().set_modified(sm.modified()?))?;
            }
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&dst)?;
                fs::rename(&src, &dst)?;
            }
            Ok(_) => fs::rename(&src, &dst)?, // replaces a file or symlink atomically
            Err(_) => fs::rename(&src, &dst)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_containment_table() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"a", b"b", true),
            (b"a", b"../b", false),
            (b"d/a", b"../b", true),
            (b"d/a", b"../../b", false),
            (b"d/a", b"./x/../../b", true),
            (b"d/a", b"x/../../../b", false),
            (b"a", b"/etc/passwd", false),
            (b"a", b"", false),
            (b"odd/link-to-data", b"../data/export_000.json", true),
        ];
        for (link, target, inside) in cases {
            assert_eq!(
                symlink_stays_inside(link, target),
                *inside,
                "{} -> {}",
                String::from_utf8_lossy(link),
                String::from_utf8_lossy(target)
            );
        }
    }
}
