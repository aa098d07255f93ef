//! `BACKUP_DIR`: archive names, atomic writes, listing, the lock.
//!
//! Everything that touches the backup directory's entries goes through here,
//! so the rules hold in one place: the directory is 0700 and created only as
//! its last component (a missing parent, such as an unmounted disk, is an
//! error, not a reason to write elsewhere); archives are written to a
//! temporary name, synced, renamed without ever replacing a file, and the
//! directory is synced; only names that match the archive pattern are ever
//! listed or deleted, and symlinks are never followed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use tempfile::NamedTempFile;

use crate::archive::Compression;

/// Prefix of every temporary file cofre writes in `BACKUP_DIR`; the writer's
/// pid follows it (`.cofre-tmp-<pid>-<random>`), so a clean-up can tell a
/// leftover of a process that died from a file another process is writing.
pub const TEMP_PREFIX: &str = ".cofre-tmp-";

/// A new temporary file in `dir`, named for this process (mode 0600, or
/// `mode`); it is deleted when dropped unless persisted.
pub fn temp_in(dir: &Path, suffix: &str, mode: u32) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
        .suffix(suffix)
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(without_path)
}

/// tempfile adds the random path to its errors; the messages built from
/// them name the directory already, so only the OS error is kept.
pub fn without_path(e: io::Error) -> io::Error {
    // Its wrapper does not give the OS error back (`source` is the OS
    // error's own, none), so the words before " at path" are kept.
    if e.raw_os_error().is_some() {
        return e;
    }
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((os, _)) => io::Error::new(e.kind(), os.to_owned()),
        None => e,
    }
}

/// Whether a temporary file's name says it is a leftover: its writer (the
/// pid in its name) no longer runs. A name without a pid (written by an
/// older cofre) is a leftover when `locked` (every such file was written
/// under the lock the caller holds). A reused pid keeps a leftover until
/// that process ends: never the other way round.
/// The suffix of a full archive's index beside it (`NAME.index`, signed
/// as `NAME.index.minisig`).
pub const INDEX_SUFFIX: &str = ".index";

/// The files that live beside an archive, by suffix: its signature, and
/// a full's index and the index's signature.
const COMPANIONS: [&str; 3] = [".minisig", ".index", ".index.minisig"];

/// The archive `name` belongs beside, when it is a companion file.
fn companion_of(name: &str) -> Option<&str> {
    COMPANIONS.iter().find_map(|suffix| {
        name.strip_suffix(suffix)
            .filter(|a| ArchiveName::parse(a).is_some())
    })
}

fn is_leftover(name: &str, locked: bool) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    let pid = rest
        .split_once('-')
        .and_then(|(p, _)| p.parse::<i32>().ok())
        .filter(|p| *p > 0);
    match pid {
        Some(pid) if pid == std::process::id() as i32 => false,
        Some(pid) => rustix::process::Pid::from_raw(pid).is_none_or(|p| {
            !matches!(
                rustix::process::test_kill_process(p),
                Ok(()) | Err(rustix::io::Errno::PERM)
            )
        }),
        None => locked && name.ends_with(".partial"),
    }
}
const LOCK_NAME: &str = ".cofre.lock";
const NAME_TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S";

/// Failures of the backup directory, each with what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The parent of `BACKUP_DIR` is missing.
    #[error(
        "backup directory {0} cannot be created because its parent directory does not exist; \
         check BACKUP_DIR (and that the disk it is on is mounted)"
    )]
    MissingParent(PathBuf),
    /// `BACKUP_DIR` exists but is not a directory.
    #[error("backup directory {0} is not a directory; check BACKUP_DIR")]
    NotADirectory(PathBuf),
    /// `BACKUP_DIR` cannot be created or written.
    #[error(
        "backup directory {path} is not writable ({source}); check BACKUP_DIR and its permissions"
    )]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `BACKUP_DIR` does not exist (for commands that only read).
    #[error(
        "backup directory {0} does not exist; check BACKUP_DIR (no backup has been made there yet?)"
    )]
    Missing(PathBuf),
    /// Another process holds the lock.
    #[error(
        "another cofre process{} holds the lock on {dir}; wait for it to finish or pass --wait DURATION",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, when it wrote one.
        pid: Option<u32>,
    },
    /// An archive name was asked for that does not exist.
    #[error("no archive {0:?} in {1}; `cofre list` shows the archives")]
    NoSuchArchive(String, PathBuf),
    /// `latest` was asked for in an empty directory.
    #[error("there are no archives in {0}; run `cofre backup` first or check BACKUP_DIR")]
    Empty(PathBuf),
    /// A file cofre owns in `BACKUP_DIR` is a symlink.
    #[error(
        "{0} is a symlink; cofre never follows symlinks in its backup directory; \
         remove it (someone with write access to BACKUP_DIR put it there)"
    )]
    Symlink(PathBuf),
    /// The archive path is not a regular file.
    #[error("{path} is {what}, not an archive file; check the path")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// Any other I/O failure, with the path it concerns.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl crate::exit::Coded for StoreError {
    fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            StoreError::NotADirectory(_) => Exit::Usage,
            StoreError::Locked { .. } => Exit::Locked,
            StoreError::MissingParent(_)
            | StoreError::NotWritable { .. }
            | StoreError::Missing(_)
            | StoreError::NoSuchArchive(..)
            | StoreError::Empty(_)
            | StoreError::Symlink(_)
            | StoreError::NotAFile { .. }
            | StoreError::Io { .. } => Exit::Failure,
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What an archive's file name says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveName {
    /// The UTC start time in the name.
    pub time: DateTime<Utc>,
    /// The compression its name says (at the format's default level).
    pub compression: Compression,
    /// Whether it ends in `.age`.
    pub encrypted: bool,
    /// A differential (`backup_<time>.diff.tar...`): what changed since
    /// its full.
    pub diff: bool,
}

/// The marker of a differential archive's name, between its time and
/// its extensions.
pub const DIFF_MARKER: &str = ".diff";

impl ArchiveName {
    /// Parses `backup_YYYY-MM-DDTHH-MM-SS[.diff].tar.{gz,zst}[.age]`;
    /// anything else is not an archive.
    pub fn parse(name: &str) -> Option<ArchiveName> {
        let rest = name.strip_prefix("backup_")?;
        let (stamp, ext) = rest.split_at_checked(19)?;
        let time = NaiveDateTime::parse_from_str(stamp, NAME_TIME_FORMAT)
            .ok()?
            .and_utc();
        let (diff, ext) = match ext.strip_prefix(DIFF_MARKER) {
            Some(e) => (true, e),
            None => (false, ext),
        };
        let (compression, encrypted) = match ext {
            ".tar.gz" => (Compression::Gzip(6), false),
            ".tar.gz.age" => (Compression::Gzip(6), true),
            ".tar.zst" => (Compression::Zstd(3), false),
            ".tar.zst.age" => (Compression::Zstd(3), true),
            _ => return None,
        };
        Some(ArchiveName {
            time,
            compression,
            encrypted,
            diff,
        })
    }

    /// The file name for a backup started at `time`.
    pub fn format(
        time: DateTime<Utc>,
        compression: Compression,
        encrypted: bool,
        diff: bool,
    ) -> String {
        format!(
            "backup_{}{}.tar.{}{}",
            time.format(NAME_TIME_FORMAT),
            if diff { DIFF_MARKER } else { "" },
            compression.extension(),
            if encrypted { ".age" } else { "" }
        )
    }

    /// The name without its extensions (`backup_2026-11-27T00-00-00`, and
    /// `.diff` for a differential).
    pub fn stem(name: &str) -> &str {
        name.find(".tar.").map_or(name, |i| &name[..i])
    }
}

/// One archive in `BACKUP_DIR`.
#[derive(Debug, Clone)]
pub struct ArchiveEntry {
    /// File name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// What the name says.
    pub parsed: ArchiveName,
    /// Size in bytes.
    pub size: u64,
    /// Its signature file, when there is one (a regular file).
    pub signature: Option<PathBuf>,
}

/// The backup directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens `dir`, creating it (mode 0700) when missing. Its parent must exist.
    pub fn create(dir: &Path) -> Result<Store, StoreError> {
        match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() && dir.is_dir() => {}
            Ok(_) => return Err(StoreError::NotADirectory(dir.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent_exists = dir
                    .parent()
                    .is_none_or(|p| p.as_os_str().is_empty() || p.is_dir());
                if !parent_exists {
                    return Err(StoreError::MissingParent(dir.to_path_buf()));
                }
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })
                    .map_err(|source| StoreError::NotWritable {
                        path: dir.to_path_buf(),
                        source,
                    })?;
            }
            Err(source) => {
                return Err(StoreError::NotWritable {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
        let store = Store {
            dir: dir.to_path_buf(),
        };
        // Writability is checked by doing it, once, up front: a backup that
        // finds out after reading 10 GB is a worse experience.
        temp_in(dir, "", 0o600).map_err(|source| StoreError::NotWritable {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(store)
    }

    /// Opens an existing `dir` for reading.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        if !dir.is_dir() {
            return Err(if fs::symlink_metadata(dir).is_ok() {
                StoreError::NotADirectory(dir.to_path_buf())
            } else {
                StoreError::Missing(dir.to_path_buf())
            });
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Archives, newest first. Only regular files whose names match the
    /// pattern; symlinks and temporary files are ignored.
    pub fn list(&self) -> Result<Vec<ArchiveEntry>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("cannot read", &self.dir))? {
            let entry = entry.map_err(io_err("cannot read", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(parsed) = ArchiveName::parse(&name) else {
                continue;
            };
            // DirEntry::metadata does not follow symlinks.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.file_type().is_file() {
                continue;
            }
            let sig = crate::sign::sig_path(&entry.path());
            let signature = fs::symlink_metadata(&sig)
                .is_ok_and(|m| m.is_file())
                .then_some(sig);
            out.push(ArchiveEntry {
                path: entry.path(),
                name,
                parsed,
                size: meta.len(),
                signature,
            });
        }
        out.sort_by(|a, b| b.parsed.time.cmp(&a.parsed.time).then(b.name.cmp(&a.name)));
        Ok(out)
    }

    /// Finds an archive by path or by name in `dir`. (`latest` is chosen
    /// by the caller from [`Store::list`], which knows what it trusts.)
    /// Returns the path and whether it lies in `dir` (and so is opened
    /// without following symlinks).
    pub fn resolve(dir: &Path, arg: &str) -> Result<(PathBuf, bool), StoreError> {
        let in_dir = dir.join(arg);
        if !arg.contains('/') && fs::symlink_metadata(&in_dir).is_ok() {
            return Ok((in_dir, true));
        }
        let as_path = Path::new(arg);
        if fs::symlink_metadata(as_path).is_ok() {
            let inside = as_path.parent().is_some_and(|p| {
                p.canonicalize().ok() == dir.canonicalize().ok() && p.canonicalize().is_ok()
            });
            return Ok((as_path.to_path_buf(), inside));
        }
        Err(StoreError::NoSuchArchive(arg.to_owned(), dir.to_path_buf()))
    }

    /// A new temporary file (mode 0600) in the directory; it is deleted when
    /// dropped unless [`Store::persist`]ed.
    pub fn temp_file(&self) -> Result<NamedTempFile, StoreError> {
        temp_in(&self.dir, ".partial", 0o600).map_err(|source| StoreError::NotWritable {
            path: self.dir.clone(),
            source,
        })
    }

    /// Gives a finished temporary file its final name, never replacing an
    /// existing file, then syncs the directory so the rename is durable.
    /// The file's contents must already be synced.
    pub fn persist(&self, tmp: NamedTempFile, name: &str) -> Result<PathBuf, StoreError> {
        let dest = self.dir.join(name);
        tmp.persist_noclobber(&dest).map_err(|e| StoreError::Io {
            what: "cannot rename the finished archive to",
            path: dest.clone(),
            source: e.error,
        })?;
        self.sync()?;
        Ok(dest)
    }

    /// Writes an archive's signature (`NAME.minisig`) atomically: temporary
    /// file, fsync, rename that never replaces a file. Done before the
    /// archive itself gets its final name, so a final name is always signed.
    pub fn write_signature(&self, name: &str, text: &str) -> Result<PathBuf, StoreError> {
        let mut tmp = self.temp_file()?;
        let dest = crate::sign::sig_path(&self.dir.join(name));
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io_err("cannot write", &dest))?;
        tmp.persist_noclobber(&dest).map_err(|e| StoreError::Io {
            what: "cannot write",
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(dest)
    }

    /// fsync of the directory itself.
    pub fn sync(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("cannot sync directory", &self.dir))
    }

    /// Removes temporary files left by a process that crashed or was
    /// killed: only cofre's own kind of temporary file, and only one whose
    /// writer no longer runs (the daemon writes its state beside a manual
    /// backup, without the lock). Call while holding the lock.
    pub fn clean_temporaries(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return removed;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let is_temp = name.to_str().is_some_and(|n| is_leftover(n, true));
            // A signature or an index whose archive is gone (a crash
            // between the renames, or a deletion that stopped halfway).
            let orphan = name.to_str().is_some_and(|n| {
                companion_of(n).is_some_and(|a| fs::symlink_metadata(self.dir.join(a)).is_err())
            });
            let is_file = entry.metadata().is_ok_and(|m| m.is_file());
            if (is_temp || orphan) && is_file && fs::remove_file(entry.path()).is_ok() {
                removed.push(entry.path());
            }
        }
        removed
    }

    /// Deletes one archive by name. Refuses anything that is not a regular
    /// file with an archive name directly in this directory.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let ok = ArchiveName::parse(name).is_some()
            && !name.contains('/')
            && fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        if !ok {
            return Err(StoreError::NoSuchArchive(name.to_owned(), self.dir.clone()));
        }
        fs::remove_file(&path).map_err(io_err("cannot delete", &path))?;
        // Its signature and index go with it (after it: they are harmless
        // without it, and cleaned up later).
        for suffix in COMPANIONS {
            let p = self.dir.join(format!("{name}{suffix}"));
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                fs::remove_file(&p).map_err(io_err("cannot delete", &p))?;
            }
        }
        Ok(())
    }

    /// Takes the directory's lock, waiting up to `wait` for another holder.
    pub fn lock(&self, wait: Option<Duration>) -> Result<Lock, StoreError> {
        self.lock_named(LOCK_NAME, wait)
    }

    /// Takes the lock file `name` in the directory (the daemon has its own,
    /// so two daemons never serve one directory).
    pub fn lock_named(&self, name: &str, wait: Option<Duration>) -> Result<Lock, StoreError> {
        let path = self.dir.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode_0600()
            .custom_flags(NOFOLLOW)
            .open(&path)
            .map_err(|source| {
                if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    StoreError::Symlink(path.clone())
                } else {
                    StoreError::NotWritable {
                        path: self.dir.clone(),
                        source,
                    }
                }
            })?;
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    if deadline.is_some_and(|d| Instant::now() < d) {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(StoreError::Locked {
                        dir: self.dir.clone(),
                        pid: text.trim().parse().ok(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(StoreError::Io {
                        what: "cannot lock",
                        path,
                        source: e,
                    });
                }
            }
        }
        // The pid is only for the message another process prints; the lock
        // itself is the flock, which the kernel releases when we die.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(Lock { _file: file })
    }

    /// Free and total bytes of the filesystem holding the directory.
    pub fn space(&self) -> Result<(u64, u64), StoreError> {
        let st = rustix::fs::statvfs(&self.dir)
            .map_err(|e| io_err("cannot read free space of", &self.dir)(e.into()))?;
        Ok((
            st.f_bavail.saturating_mul(st.f_frsize),
            st.f_blocks.saturating_mul(st.f_frsize),
        ))
    }
}

/// `O_NOFOLLOW` for `OpenOptions::custom_flags`.
pub const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Opens an archive for reading. Inside `BACKUP_DIR` (`in_backup_dir`) a
/// symlink is refused; anywhere, only a regular file is accepted (a
/// directory, FIFO or device gets a clear error, and a FIFO never blocks).
pub fn open_archive(path: &Path, in_backup_dir: bool) -> Result<File, StoreError> {
    let mut flags = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    if in_backup_dir {
        flags |= NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| {
            if in_backup_dir
                && source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
            {
                StoreError::Symlink(path.to_path_buf())
            } else {
                StoreError::Io {
                    what: "cannot open",
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let ft = file
        .metadata()
        .map_err(io_err("cannot inspect", path))?
        .file_type();
    use std::os::unix::fs::FileTypeExt;
    let what = if ft.is_file() {
        None
    } else if ft.is_dir() {
        Some("a directory")
    } else if ft.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if ft.is_socket() {
        Some("a socket")
    } else {
        Some("a device")
    };
    if let Some(what) = what {
        return Err(StoreError::NotAFile {
            path: path.to_path_buf(),
            what,
        });
    }
    // Reads of a regular file never block; clear the flag all the same.
    let _ = rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty());
    Ok(file)
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// The held lock; released on drop (and by the kernel if the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn only_a_dead_writers_temporary_is_a_leftover() {
        let me = std::process::id();
        let init = 1; // always running
        let dead = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        let cases = [
            (format!(".cofre-tmp-{me}-abc.partial"), true, false),
            (format!(".cofre-tmp-{init}-abc"), true, false),
            (format!(".cofre-tmp-{dead}-abc"), false, true),
            (format!(".cofre-tmp-{dead}-abc.partial"), true, true),
            (".cofre-tmp-abcdef.partial".to_owned(), true, true),
            (".cofre-tmp-abcdef.partial".to_owned(), false, false),
            (".cofre-tmp-abcdef".to_owned(), true, false),
            ("backup_x.partial".to_owned(), true, false),
        ];
        for (name, locked, want) in cases {
            assert_eq!(is_leftover(&name, locked), want, "{name} locked={locked}");
        }
    }

    #[test]
    fn names_round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap();
        let name = ArchiveName::format(t, Compression::Gzip(6), true, false);
        assert_eq!(name, "backup_2026-11-27T00-00-00.tar.gz.age");
        let parsed = ArchiveName::parse(&name).unwrap();
        assert_eq!(parsed.time, t);
        assert!(parsed.encrypted && !parsed.diff);
        assert_eq!(ArchiveName::stem(&name), "backup_2026-11-27T00-00-00");
        let diff = ArchiveName::format(t, Compression::Zstd(3), false, true);
        assert_eq!(diff, "backup_2026-11-27T00-00-00.diff.tar.zst");
        assert!(ArchiveName::parse(&diff).unwrap().diff);
        assert_eq!(ArchiveName::stem(&diff), "backup_2026-11-27T00-00-00.diff");
        for not_ours in [
            "backup_2026-11-27T00-00-00.tar.gz.partial",
            ".cofre-tmp-abc.partial",
            "backup_2026-13-27T00-00-00.tar.gz",
            "backup_2026-11-27T00-00-00.tar.bz2",
            "notes.txt",
            "backup_.tar.gz",
            "backup_2026-11-27T00-00-00.tar.gz.age.index",
            "backup_2026-11-27T00-00-00.full.tar.gz",
        ] {
            assert_eq!(ArchiveName::parse(not_ours), None, "{not_ours}");
        }
    }
}
