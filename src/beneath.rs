//! Filesystem operations that cannot leave a directory: every path is
//! resolved by the kernel beneath an open directory handle, and no symlink
//! is ever followed on the way.
//!
//! A [`Dir`] is an open directory. [`Dir::open_dir`] reaches a directory
//! below it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: the kernel
//! refuses a symlink anywhere in the path and any escape from the handle,
//! whatever the path says. Every other operation takes a single name (no
//! `/`, never `.` or `..`) relative to a `Dir` and never follows a final
//! symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `O_EXCL`). So what a
//! restore does is confined to its staging directory by construction, not
//! by checks on path strings.
//!
//! On kernels without `openat2` (before 5.6, or where a seccomp filter
//! hides it) the same rule is kept by opening one component at a time with
//! `O_NOFOLLOW`, which is how the kernel walks a path anyway.
//!
//! rustix supplies the system calls; the confinement rules are ours.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Stat, Timestamps};
use rustix::io::Errno;

/// Whether `openat2` works here (cleared the first time it says ENOSYS).
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// A path component or relative path that is not plain.
fn bad_path(rel: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{:?} is not a plain relative path",
            String::from_utf8_lossy(rel)
        ),
    )
}

/// Checks a single file name: not empty, no `/` or NUL, not `.` or `..`.
pub fn check_name(name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(bad_path(name));
    }
    Ok(())
}

/// The components of a relative path, each checked with [`check_name`].
/// The empty path has none.
pub fn components(rel: &[u8]) -> io::Result<Vec<&[u8]>> {
    if rel.is_empty() {
        return Ok(Vec::new());
    }
    rel.split(|&b| b == b'/')
        .map(|c| check_name(c).map(|()| c))
        .collect()
}

/// Splits a relative path into its parent (possibly empty) and its last name.
pub fn split_parent(rel: &[u8]) -> io::Result<(&[u8], &[u8])> {
    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    };
    check_name(name)?;
    Ok((parent, name))
}

/// An open directory; everything done through it stays beneath it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Dir {
    /// Opens the directory at `path`. This one path is the caller's choice
    /// (a target the user named) and is resolved normally.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir { fd })
    }

    /// Opens `rel` beneath this directory with `flags` (`O_NOFOLLOW` is
    /// always added), refusing symlinks on the way and any escape.
    fn open_beneath(&self, rel: &[u8], flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let comps = components(rel)?;
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if comps.is_empty() {
            return Ok(rustix::fs::openat(&self.fd, ".", flags, mode)?);
        }
        if OPENAT2.load(Ordering::Relaxed) {
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            for _ in 0..8 {
                match rustix::fs::openat2(&self.fd, rel, flags, mode, resolve) {
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS) => {
                        OPENAT2.store(false, Ordering::Relaxed);
                        break;
                    }
                    other => return Ok(other?),
                }
            }
            if OPENAT2.load(Ordering::Relaxed) {
                return Err(io::Error::other("openat2 kept asking to retry"));
            }
        }
        self.open_walking(&comps, flags, mode)
    }

    /// The same, one component at a time with `O_NOFOLLOW`.
    fn open_walking(&self, comps: &[&[u8]], flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let (last, dirs) = comps.split_last().expect("at least one component");
        let mut cur: Option<OwnedFd> = None;
        for c in dirs {
            let base = cur.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
            let next = rustix::fs::openat(
                base,
                *c,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            cur = Some(next);
        }
        let base = cur.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
        Ok(rustix::fs::openat(base, *last, flags, mode)?)
    }

    /// Opens the directory `rel` beneath this one (the empty path is this
    /// directory again). A symlink anywhere on the way is an error.
    pub fn open_dir(&self, rel: &[u8]) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.open_beneath(rel, dir_flags(), Mode::empty())?,
        })
    }

    /// `lstat` of one name in this directory; `None` when it does not exist.
    pub fn stat(&self, name: &[u8]) -> io::Result<Option<Stat>> {
        check_name(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `fstat` of this directory.
    pub fn stat_self(&self) -> io::Result<Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Creates the directory `name` (mode `mode`, less the umask).
    pub fn mkdir(&self, name: &[u8], mode: u32) -> io::Result<()> {
        check_name(name)?;
        Ok(rustix::fs::mkdirat(
            &self.fd,
            name,
            Mode::from_raw_mode(mode),
        )?)
    }

    /// Creates the new regular file `name`, mode 0600, for writing. Fails
    /// when anything (a symlink included) already has the name.
    pub fn create_file(&self, name: &[u8]) -> io::Result<File> {
        check_name(name)?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Opens the file `name` here for reading: a final symlink is refused
    /// (`O_NOFOLLOW`), a FIFO never blocks the open (`O_NONBLOCK`), a
    /// terminal is never taken (`O_NOCTTY`). The caller checks what it got.
    pub fn open_read(&self, name: &[u8]) -> io::Result<File> {
        check_name(name)?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// Creates the symlink `name` pointing to `target` (never followed).
    pub fn symlink(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        check_name(name)?;
        if target.contains(&0) {
            return Err(bad_path(target));
        }
        Ok(rustix::fs::symlinkat(target, &self.fd, name)?)
    }

    /// Makes `name` here a hard link to `src_name` in `src_dir` (a final
    /// symlink there would be linked itself, never followed).
    pub fn hard_link(&self, src_dir: &Dir, src_name: &[u8], name: &[u8]) -> io::Result<()> {
        check_name(src_name)?;
        check_name(name)?;
        Ok(rustix::fs::linkat(
            &src_dir.fd,
            src_name,
            &self.fd,
            name,
            AtFlags::empty(),
        )?)
    }

    /// Removes the non-directory `name`.
    pub fn unlink(&self, name: &[u8]) -> io::Result<()> {
        check_name(name)?;
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// Removes `name`, and everything beneath it when it is a directory,
    /// through handles only (a symlink is removed, never followed). One
    /// handle is open per level: a tree made beneath a handle is at most
    /// `PATH_MAX` deep.
    pub fn remove_entry(&self, name: &[u8]) -> io::Result<()> {
        check_name(name)?;
        match self.stat(name)? {
            None => Ok(()),
            Some(st) if kind(&st) == FileType::Directory => {
                let sub = self.open_dir(name)?;
                for n in sub.names()? {
                    sub.remove_entry(&n)?;
                }
                drop(sub);
                Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?)
            }
            Some(_) => self.unlink(name),
        }
    }

    /// Renames `name` here to `to_name` in `to`, with `renameat2` flags
    /// (`NOREPLACE`, `EXCHANGE`). Neither end is followed if a symlink.
    pub fn rename(
        &self,
        name: &[u8],
        to: &Dir,
        to_name: &[u8],
        flags: RenameFlags,
    ) -> io::Result<()> {
        check_name(name)?;
        check_name(to_name)?;
        Ok(rustix::fs::renameat_with(
            &self.fd, name, &to.fd, to_name, flags,
        )?)
    }

    /// The target of the symlink `name`.
    pub fn read_link(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        check_name(name)?;
        Ok(rustix::fs::readlinkat(&self.fd, name, Vec::new())?.into_bytes())
    }

    /// Sets the times of `name` itself (a symlink is not followed).
    pub fn set_times_nofollow(&self, name: &[u8], times: &Timestamps) -> io::Result<()> {
        check_name(name)?;
        Ok(rustix::fs::utimensat(
            &self.fd,
            name,
            times,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Sets the owner of `name` itself (a symlink is not followed).
    pub fn chown_nofollow(&self, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
        check_name(name)?;
        Ok(rustix::fs::chownat(
            &self.fd,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// The names in this directory (without `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        let fd = rustix::fs::openat(&self.fd, ".", dir_flags(), Mode::empty())?;
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::new(fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(name.to_vec());
            }
        }
        Ok(out)
    }

    /// Free bytes (for an unprivileged user) on this directory's filesystem.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let st = rustix::fs::fstatvfs(&self.fd)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// Removes the directory `path` and everything in it, never following a
/// symlink. std's `remove_dir_all` does the work (it unlinks through
/// directory handles with `O_NOFOLLOW`); a tree it cannot empty because a
/// restored directory has no write permission is first made writable (as
/// its owner may), each directory opened beneath the last, then removed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(&Dir::open(path)?)?;
            std::fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Gives the owner full access to `dir` and every directory beneath it.
fn make_writable(dir: &Dir) -> io::Result<()> {
    let st = rustix::fs::fstat(&dir.fd)?;
    let mode = Mode::from_raw_mode(st.st_mode) | Mode::RWXU;
    rustix::fs::fchmod(&dir.fd, mode)?;
    for name in dir.names()? {
        if let Some(st) = dir.stat(&name)?
            && kind(&st) == FileType::Directory
        {
            make_writable(&dir.open_dir(&name)?)?;
        }
    }
    Ok(())
}

/// The kind of an `lstat` result.
pub fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// A (device, inode) pair: a file's identity.
pub fn identity(st: &Stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_empties_read_only_directories_and_follows_no_link() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let before = std::fs::metadata(&outside).unwrap().permissions().mode();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        for d in ["a/b", "a"] {
            std::fs::set_permissions(tree.join(d), std::fs::Permissions::from_mode(0o500)).unwrap();
        }
        // (As root, remove_dir_all needs no write permission; so the
        // repair is checked on its own too.)
        make_writable(&Dir::open(&tree).unwrap()).unwrap();
        for d in ["a/b", "a"] {
            let mode = std::fs::metadata(tree.join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o700, 0o700, "{d}");
        }
        std::fs::set_permissions(tree.join("a"), std::fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
        assert_eq!(
            std::fs::metadata(&outside).unwrap().permissions().mode(),
            before
        );
        // Gone already: nothing to do.
        remove_tree(&tree).unwrap();
    }
    use std::os::unix::fs::symlink;

    #[test]
    fn names_and_paths_are_checked() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(components(b"a/../b").is_err());
        assert!(components(b"/a").is_err());
        assert!(components(b"a//b").is_err());
        assert_eq!(components(b"a/b").unwrap(), vec![&b"a"[..], b"b"]);
        assert_eq!(split_parent(b"a/b/c").unwrap(), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c").unwrap(), (&b""[..], &b"c"[..]));
    }

    fn refuses_symlinks_on_the_way(walking: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("real/deeper")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        symlink("../outside", root.join("out")).unwrap();
        symlink("real", root.join("in")).unwrap();
        let dir = Dir::open(&root).unwrap();
        let open = |rel: &[u8]| {
            if walking {
                let comps = components(rel).unwrap();
                dir.open_walking(&comps, dir_flags(), Mode::empty())
                    .map(|fd| Dir { fd })
            } else {
                dir.open_dir(rel)
            }
        };
        assert!(open(b"real/deeper").is_ok());
        // A symlink is refused even when it stays inside.
        assert!(open(b"in/deeper").is_err());
        assert!(open(b"out").is_err());
        assert!(open(b"in").is_err());
    }

    #[test]
    fn openat2_refuses_symlinks_on_the_way() {
        refuses_symlinks_on_the_way(false);
    }

    #[test]
    fn the_fallback_walk_refuses_them_too() {
        refuses_symlinks_on_the_way(true);
    }

    #[test]
    fn create_file_never_writes_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        symlink(&victim, root.join("x")).unwrap();
        let dir = Dir::open(&root).unwrap();
        assert!(dir.create_file(b"x").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(kind(&dir.stat(b"x").unwrap().unwrap()), FileType::Symlink);
    }
}
