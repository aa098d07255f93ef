//! The archive visitor that writes the staged tree.
//!
//! Every write is confined by [`crate::beneath`]: a parent directory is
//! reached with kernel-enforced, symlink-free resolution beneath the staged
//! root, and each entry is made by name in it (`O_EXCL | O_NOFOLLOW`,
//! `mkdirat`, `symlinkat`, `linkat`). So an entry can never be written
//! through a symlink, whatever an earlier entry made, and modes and times
//! are set on handles, never through a path that could be redirected.
//!
//! - Files are created 0600 and get their mode (without setuid/setgid
//!   unless `--same-permissions`) and time through their own handle; they
//!   keep the restoring user as owner unless `--same-owner` (as root).
//! - Directories are created 0700; their modes and times are recorded in a
//!   spool and applied after everything is in place ([`super::place`]).
//! - Symlinks are created as they are and recorded, to be checked against
//!   the finished tree ([`super::links`]).
//! - A hard link may only name a regular file this restore wrote: its
//!   source is opened beneath the root without following symlinks, and its
//!   identity (device and inode) must be one this restore created; the new
//!   link is checked to be that same file.
//! - Before each file, free space is checked, so a restore stops (and its
//!   staging goes) before the disk fills.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ignore::gitignore::Gitignore;
use rustix::fs::{FileType, Mode, Timespec, Timestamps};

use crate::archive::FILES_PREFIX;
use crate::archive::reader::{EntryInfo, ReadError, Visitor};
use crate::archive::tarenc::Kind;
use crate::beneath::{self, Dir};
use crate::spool::RecordSpool;

/// Free space kept back on the target's filesystem.
const RESERVE: u64 = 16 << 20;

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Restore the project files.
    pub files: bool,
    /// Stage the database dump.
    pub mongo: bool,
    /// Only paths matching (or under a match of) this.
    pub include: Option<Gitignore>,
    /// Print what would be written instead of writing.
    pub dry_run: bool,
    /// For `--dry-run`: the existing target, to say what would be replaced.
    pub existing_target: Option<std::path::PathBuf>,
    /// Give files the archive's owners (root only; `--same-owner`).
    pub same_owner: bool,
    /// Keep setuid, setgid (`--same-permissions`).
    pub same_permissions: bool,
}

impl ExtractOptions {
    /// The permission bits a restored entry may get.
    pub fn mode_mask(&self) -> u32 {
        if self.same_permissions {
            0o7777
        } else {
            0o1777
        }
    }
}

/// A directory whose mode and time are applied at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirRecord {
    /// Path below the files root.
    pub rel: Vec<u8>,
    /// Mode bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: (i64, u32),
    /// Owner, when it is to be set.
    pub owner: Option<(u32, u32)>,
}

impl DirRecord {
    /// The spool encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.rel.len() + 29);
        v.extend_from_slice(&self.mode.to_le_bytes());
        v.extend_from_slice(&self.mtime.0.to_le_bytes());
        v.extend_from_slice(&self.mtime.1.to_le_bytes());
        let (has, uid, gid) = match self.owner {
            Some((u, g)) => (1u8, u, g),
            None => (0, 0, 0),
        };
        v.push(has);
        v.extend_from_slice(&uid.to_le_bytes());
        v.extend_from_slice(&gid.to_le_bytes());
        v.extend_from_slice(&self.rel);
        v
    }

    /// Decodes [`DirRecord::encode`].
    pub fn decode(b: &[u8]) -> io::Result<DirRecord> {
        if b.len() < 25 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "short record"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Ok(DirRecord {
            mode: u32_at(0),
            mtime: (
                i64::from_le_bytes(b[4..12].try_into().expect("8 bytes")),
                u32_at(12),
            ),
            owner: (b[16] == 1).then(|| (u32_at(17), u32_at(21))),
            rel: b[25..].to_vec(),
        })
    }
}

/// Encodes a symlink record: `rel`, NUL, target.
fn link_record(rel: &[u8], target: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.len() + target.len() + 1);
    v.extend_from_slice(rel);
    v.push(0);
    v.extend_from_slice(target);
    v
}

/// Splits [`link_record`].
pub fn split_link_record(r: &[u8]) -> (&[u8], &[u8]) {
    match r.iter().position(|&b| b == 0) {
        Some(i) => (&r[..i], &r[i + 1..]),
        None => (r, &[]),
    }
}

fn timestamps(secs: i64, nsec: u32) -> Timestamps {
    let ts = Timespec {
        tv_sec: secs,
        tv_nsec: i64::from(nsec.min(999_999_999)) as _,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

fn visitor_err(what: &str, path: &[u8], e: &io::Error) -> ReadError {
    let hint = match e.kind() {
        io::ErrorKind::StorageFull => "; free some space there and retry",
        io::ErrorKind::PermissionDenied => "; check the permissions of the target directory",
        _ => "",
    };
    ReadError::Visitor(format!(
        "cannot {what} {}: {e}{hint}",
        String::from_utf8_lossy(path)
    ))
}

/// Reads a sparse entry's map from the start of its data: the number of
/// segments, then each one's offset and length, one decimal number per
/// line, padded with NULs to 512 bytes. Returns the segments and the map's
/// length. Bounded: at most `MAX_SPARSE_SEGMENTS` segments, numbers of at
/// most 20 digits.
fn read_sparse_map(data: &mut dyn Read) -> Result<(Vec<(u64, u64)>, u64), String> {
    let max = crate::archive::writer::MAX_SPARSE_SEGMENTS + 1;
    let mut block = [0u8; 512];
    let mut used = 0usize;
    let mut read = 0u64;
    let mut next_number = |data: &mut dyn Read| -> Result<u64, String> {
        let mut digits = String::new();
        loop {
            if used == 0 || used == block.len() {
                data.read_exact(&mut block)
                    .map_err(|_| "its map ends early".to_owned())?;
                read += 512;
                used = 0;
            }
            let b = block[used];
            used += 1;
            match b {
                b'\n' if !digits.is_empty() => {
                    return digits
                        .parse()
                        .map_err(|_| "its map holds a number too large".into());
                }
                b'0'..=b'9' if digits.len() < 20 => digits.push(b as char),
                _ => return Err("its map is malformed".into()),
            }
        }
    };
    let count = next_number(data)?;
    if count > max as u64 {
        return Err(format!(
            "its map has {count} segments, more than cofre writes"
        ));
    }
    let mut segments = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = next_number(data)?;
        let len = next_number(data)?;
        segments.push((offset, len));
    }
    // The rest of the last block is padding.
    Ok((segments, read))
}

/// The (files, mongodb) roots of the staging tree.
struct Roots {
    files: Dir,
    mongo: Dir,
}

/// The archive visitor that writes the staging tree.
pub struct Extractor {
    archive: std::rc::Rc<str>,
    roots: Option<Roots>,
    opts: ExtractOptions,
    /// The last parent directory opened: (is mongo, relative path, handle).
    parent: Option<(bool, Vec<u8>, Dir)>,
    dirs: RecordSpool,
    links: RecordSpool,
    /// Inodes of the regular files written (all on the staging device).
    written: Vec<u64>,
    sorted: usize,
    device: u64,
    root_meta: Option<DirRecord>,
    ids: (u64, u64),
    as_root: bool,
    /// Free bytes left, as last measured, less what was written since.
    free: u64,
    free_dir: Option<Dir>,
    buf: Vec<u8>,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Project entries restored (or listed, in a dry run), the root aside.
    pub entries: u64,
    /// Applying a differential over its staged full.
    applying: bool,
    /// Reading a differential's full: its dump is not staged.
    skip_dump: bool,
    out: Box<dyn Write>,
}

/// What extraction left to do once the archive verified.
pub struct Staged {
    /// Directory modes and times, in creation order.
    pub dirs: crate::spool::Records,
    /// Symlinks made: (path, target).
    pub links: crate::spool::Records,
    /// The archive's root directory entry.
    pub root: Option<DirRecord>,
}

impl Extractor {
    /// Prepares to write under the staging directory `staging` (`files/` and
    /// `mongodb/` inside it); `None` for a dry run. `out` receives the
    /// `--dry-run` listing.
    pub fn new(
        archive: &str,
        staging: Option<&Dir>,
        opts: ExtractOptions,
        out: Box<dyn Write>,
    ) -> io::Result<Extractor> {
        let roots = match staging {
            Some(dir) => {
                dir.mkdir(b"files", 0o700)?;
                dir.mkdir(b"mongodb", 0o700)?;
                Some(Roots {
                    files: dir.open_dir(b"files")?,
                    mongo: dir.open_dir(b"mongodb")?,
                })
            }
            None => None,
        };
        let (device, free, free_dir) = match &roots {
            Some(r) => (
                r.files.stat_self()?.st_dev,
                r.files.free_bytes().unwrap_or(u64::MAX),
                Some(r.files.open_dir(b"")?),
            ),
            None => (0, u64::MAX, None),
        };
        let uid = rustix::process::geteuid();
        Ok(Extractor {
            archive: archive.into(),
            roots,
            opts,
            parent: None,
            dirs: RecordSpool::new()?,
            links: RecordSpool::new()?,
            written: Vec::new(),
            sorted: 0,
            device,
            root_meta: None,
            ids: (
                u64::from(uid.as_raw()),
                u64::from(rustix::process::getegid().as_raw()),
            ),
            as_root: uid.is_root(),
            free,
            free_dir,
            buf: vec![0u8; 256 << 10],
            files: 0,
            bytes: 0,
            entries: 0,
            applying: false,
            skip_dump: false,
            out,
        })
    }

    /// From now on, entries are a differential applied over its full,
    /// staged before: a directory's dumpdir record removes what the full
    /// staged there and the differential's day did not hold (or held as
    /// another kind), as `tar -x -g` does; files replace what is there.
    pub fn begin_differential(&mut self, archive: &str) {
        self.archive = archive.into();
        self.applying = true;
        self.skip_dump = false;
        self.parent = None;
    }

    /// Entries are now a differential's full (`archive`): its files are
    /// staged, its dump is not (the differential's is whole).
    pub fn begin_full(&mut self, archive: &str) {
        self.archive = archive.into();
        self.skip_dump = true;
    }

    /// Removes from the staged directory `rel` what `record` (a
    /// validated dumpdir record) does not name, or names as another kind
    /// (`D` a directory, `Y`/`N` anything else). Everything goes through
    /// handles beneath the staging root.
    fn purge(&mut self, mongo: bool, rel: &[u8], record: &[u8]) -> Result<(), ReadError> {
        let Some(roots) = self.roots.as_ref() else {
            return Ok(());
        };
        let root = if mongo { &roots.mongo } else { &roots.files };
        let dir = match root.open_dir(rel) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(refusal_or(&self.archive, &e, rel, "open directory")),
        };
        let mut named = crate::archive::dumpdir::names(record).unwrap_or_default();
        named.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let names = dir.names().map_err(|e| visitor_err("list", rel, &e))?;
        for name in names {
            let is_dir = dir
                .stat(&name)
                .map_err(|e| visitor_err("inspect", rel, &e))?
                .is_some_and(|st| beneath::kind(&st) == FileType::Directory);
            let keep = named
                .binary_search_by(|(_, n)| (*n).cmp(name.as_slice()))
                .ok()
                .is_some_and(|i| (named[i].0 == b'D') == is_dir);
            if !keep {
                dir.remove_entry(&name).map_err(|e| {
                    let mut path = rel.to_vec();
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(&name);
                    visitor_err("remove", &path, &e)
                })?;
            }
        }
        // A cached handle may be of a directory just removed.
        self.parent = None;
        Ok(())
    }

    /// Hands over what is left to do, once the archive verified.
    pub fn into_staged(self) -> io::Result<Staged> {
        Ok(Staged {
            dirs: self.dirs.finish()?,
            links: self.links.finish()?,
            root: self.root_meta,
        })
    }

    fn owner(&self, info: &EntryInfo) -> Option<(u32, u32)> {
        (self.opts.same_owner && self.as_root && (info.uid, info.gid) != self.ids)
            .then_some((info.uid as u32, info.gid as u32))
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

    /// The handle of the directory `rel` below a root, creating missing
    /// directories (mode 0700, then 0755 for those the archive does not
    /// describe itself). A symlink on the way is refused by the kernel.
    fn parent_dir(&mut self, mongo: bool, rel: &[u8], entry: &[u8]) -> Result<&Dir, ReadError> {
        let cached = self
            .parent
            .as_ref()
            .is_some_and(|(m, r, _)| *m == mongo && r == rel);
        if !cached {
            let roots = self.roots.as_ref().expect("not a dry run");
            let root = if mongo { &roots.mongo } else { &roots.files };
            let dir = match root.open_dir(rel) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Self::make_dirs(&self.archive, root, rel, entry)?;
                    root.open_dir(rel)
                        .map_err(|e| visitor_err("open directory", rel, &e))?
                }
                Err(e) => return Err(refusal_or(&self.archive, &e, entry, "open directory")),
            };
            self.parent = Some((mongo, rel.to_vec(), dir));
        }
        Ok(&self.parent.as_ref().expect("just set").2)
    }

    /// Creates each missing directory of `rel` below `root`.
    fn make_dirs(archive: &str, root: &Dir, rel: &[u8], entry: &[u8]) -> Result<(), ReadError> {
        let comps = beneath::components(rel).map_err(|e| visitor_err("restore", rel, &e))?;
        let mut cur = root
            .open_dir(b"")
            .map_err(|e| visitor_err("open", rel, &e))?;
        for c in comps {
            match cur.mkdir(c, 0o700) {
                Ok(()) => {
                    // Made only because something inside was restored.
                    let d = cur.open_dir(c).map_err(|e| visitor_err("open", rel, &e))?;
                    rustix::fs::fchmod(&d, Mode::from_raw_mode(0o755))
                        .map_err(|e| visitor_err("set the mode of", rel, &e.into()))?;
                    cur = d;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    cur = cur
                        .open_dir(c)
                        .map_err(|e| refusal_or(archive, &e, entry, "open directory"))?;
                }
                Err(e) => return Err(visitor_err("create directory", rel, &e)),
            }
        }
        Ok(())
    }

    /// Frees `name` in `dir` for a new entry (a later entry of the same
    /// name wins, as with tar), refusing to replace a directory.
    fn make_room(archive: &str, dir: &Dir, name: &[u8], rel: &[u8]) -> Result<(), ReadError> {
        match dir.stat(name) {
            Ok(Some(st)) if beneath::kind(&st) == FileType::Directory => Err(ReadError::Unsafe {
                archive: archive.to_owned(),
                path: String::from_utf8_lossy(rel).into_owned(),
                why: "it holds a directory and then something else at the same path".into(),
            }),
            Ok(Some(_)) => dir
                .unlink(name)
                .map_err(|e| visitor_err("replace", rel, &e)),
            Ok(None) => Ok(()),
            Err(e) => Err(visitor_err("inspect", rel, &e)),
        }
    }

    fn check_space(&mut self, size: u64, rel: &[u8]) -> Result<(), ReadError> {
        if size.saturating_add(RESERVE) <= self.free {
            self.free -= size;
            return Ok(());
        }
        if let Some(d) = &self.free_dir {
            self.free = d.free_bytes().unwrap_or(u64::MAX);
        }
        if size.saturating_add(RESERVE) > self.free {
            return Err(ReadError::Visitor(format!(
                "not enough free space for {} ({} needed, {} free); free some space \
                 or restore elsewhere with --to DIR (nothing was changed)",
                String::from_utf8_lossy(rel),
                crate::format::human(size),
                crate::format::human(self.free.saturating_sub(RESERVE))
            )));
        }
        self.free -= size;
        Ok(())
    }

    fn write_file(
        &mut self,
        mongo: bool,
        rel: &[u8],
        info: &EntryInfo,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        self.check_space(info.size, rel)?;
        let (parent, name) =
            beneath::split_parent(rel).map_err(|e| visitor_err("restore", rel, &e))?;
        let mask = self.opts.mode_mask();
        let owner = self.owner(info);
        let archive = std::rc::Rc::clone(&self.archive);
        let dir = self.parent_dir(mongo, parent, rel)?;
        let mut file = match dir.create_file(name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Self::make_room(&archive, dir, name, rel)?;
                dir.create_file(name)
            }
            other => other,
        }
        .map_err(|e| visitor_err("create", rel, &e))?;
        let written = match info.sparse {
            Some(real) => self.copy_sparse(&mut file, data, info.size, real, rel)?,
            None => self.copy_dense(&mut file, data, rel)?,
        };
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(
                &file,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|e| visitor_err("set the owner of", rel, &e.into()))?;
        }
        rustix::fs::fchmod(&file, Mode::from_raw_mode(info.mode & mask))
            .map_err(|e| visitor_err("set the mode of", rel, &e.into()))?;
        rustix::fs::futimens(&file, &timestamps(info.mtime, info.mtime_nsec))
            .map_err(|e| visitor_err("set the time of", rel, &e.into()))?;
        if !mongo {
            let st =
                rustix::fs::fstat(&file).map_err(|e| visitor_err("inspect", rel, &e.into()))?;
            self.written.push(st.st_ino);
        }
        self.bytes += written;
        Ok(())
    }

    /// Copies an entry's data into `file`.
    fn copy_dense(
        &mut self,
        file: &mut std::fs::File,
        data: &mut dyn Read,
        rel: &[u8],
    ) -> Result<u64, ReadError> {
        let mut written = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(e.to_string())),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| visitor_err("write", rel, &e))?;
            written += n as u64;
        }
        Ok(written)
    }

    fn corrupt(&self, detail: String) -> ReadError {
        ReadError::Corrupt {
            archive: self.archive.to_string(),
            detail,
        }
    }

    /// Writes a sparse entry: its map, checked (segments in order, inside
    /// the real size, as many as cofre writes at most, adding up to what
    /// is stored), then each segment at its offset; holes stay holes.
    fn copy_sparse(
        &mut self,
        file: &mut std::fs::File,
        data: &mut dyn Read,
        stored: u64,
        real: u64,
        rel: &[u8],
    ) -> Result<u64, ReadError> {
        use std::os::unix::fs::FileExt;
        let (segments, map_len) = read_sparse_map(data).map_err(|why| {
            self.corrupt(format!(
                "sparse file {}: {why}",
                String::from_utf8_lossy(rel)
            ))
        })?;
        let mut end = 0u64;
        let mut total = map_len;
        for &(offset, len) in &segments {
            let seg_end = offset.checked_add(len);
            if offset < end || seg_end.is_none_or(|e| e > real) {
                return Err(self.corrupt(format!(
                    "sparse file {}: its map is out of order or past its size",
                    String::from_utf8_lossy(rel)
                )));
            }
            end = offset + len;
            total = total.saturating_add(len);
        }
        if total != stored {
            return Err(self.corrupt(format!(
                "sparse file {}: its map does not add up to what is stored",
                String::from_utf8_lossy(rel)
            )));
        }
        for (offset, len) in segments {
            let mut done = 0u64;
            while done < len {
                let want = (len - done).min(self.buf.len() as u64) as usize;
                let n = match data.read(&mut self.buf[..want]) {
                    Ok(0) => return Err(self.corrupt("a sparse segment ends early".into())),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.corrupt(e.to_string())),
                };
                file.write_all_at(&self.buf[..n], offset + done)
                    .map_err(|e| visitor_err("write", rel, &e))?;
                done += n as u64;
            }
        }
        file.set_len(real)
            .map_err(|e| visitor_err("write", rel, &e))?;
        Ok(real)
    }

    fn is_written(&mut self, ino: u64) -> bool {
        if self.written[..self.sorted].binary_search(&ino).is_ok() {
            return true;
        }
        if self.sorted < self.written.len() {
            self.written.sort_unstable();
            self.written.dedup();
            self.sorted = self.written.len();
            return self.written.binary_search(&ino).is_ok();
        }
        false
    }

    fn hard_link(&mut self, rel: &[u8], info: &EntryInfo) -> Result<(), ReadError> {
        let archive = std::rc::Rc::clone(&self.archive);
        let refuse = |why: &str| ReadError::Unsafe {
            archive: archive.to_string(),
            path: info.display(),
            why: why.to_owned(),
        };
        let link = info.link.as_deref().unwrap_or_default();
        let src_rel = link
            .strip_prefix(FILES_PREFIX.as_bytes())
            .unwrap_or_default();
        let (src_parent, src_name) =
            beneath::split_parent(src_rel).map_err(|_| refuse("a hard link to nothing"))?;
        let roots = self.roots.as_ref().expect("not a dry run");
        // The source, reached beneath the root with no symlink on the way,
        // must be a regular file this restore wrote, identified by inode.
        let src_dir = roots
            .files
            .open_dir(src_parent)
            .map_err(|_| refuse("a hard link to something that is not a file restored earlier"))?;
        let st = src_dir.stat(src_name).ok().flatten();
        let source_ok = st.as_ref().is_some_and(|st| {
            beneath::kind(st) == FileType::RegularFile && st.st_dev == self.device
        });
        let ino = st.map(|s| s.st_ino).unwrap_or(0);
        if !source_ok || !self.is_written(ino) {
            return Err(refuse(
                "a hard link to something that is not a file restored earlier",
            ));
        }
        let (parent, name) =
            beneath::split_parent(rel).map_err(|e| visitor_err("restore", rel, &e))?;
        let device = self.device;
        let archive = std::rc::Rc::clone(&self.archive);
        let dir = self.parent_dir(false, parent, rel)?;
        if let Err(e) = dir.hard_link(&src_dir, src_name, name) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(visitor_err("create hard link", rel, &e));
            }
            Self::make_room(&archive, dir, name, rel)?;
            dir.hard_link(&src_dir, src_name, name)
                .map_err(|e| visitor_err("create hard link", rel, &e))?;
        }
        // The new name must be that very file (nothing moved in between).
        let made = dir.stat(name).ok().flatten();
        if made.is_none_or(|m| beneath::identity(&m) != (device, ino)) {
            let _ = dir.unlink(name);
            return Err(refuse("a hard link whose source changed while restoring"));
        }
        Ok(())
    }

    fn symlink(&mut self, rel: &[u8], info: &EntryInfo) -> Result<(), ReadError> {
        let target = info.link.clone().unwrap_or_default();
        let owner = self.owner(info);
        let (parent, name) =
            beneath::split_parent(rel).map_err(|e| visitor_err("restore", rel, &e))?;
        let archive = std::rc::Rc::clone(&self.archive);
        let dir = self.parent_dir(false, parent, rel)?;
        if let Err(e) = dir.symlink(&target, name) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(visitor_err("create symlink", rel, &e));
            }
            Self::make_room(&archive, dir, name, rel)?;
            dir.symlink(&target, name)
                .map_err(|e| visitor_err("create symlink", rel, &e))?;
        }
        if let Some((uid, gid)) = owner {
            let _ = dir.chown_nofollow(name, uid, gid);
        }
        let _ = dir.set_times_nofollow(name, &timestamps(info.mtime, info.mtime_nsec));
        self.links
            .push(&link_record(rel, &target))
            .map_err(|e| visitor_err("record", rel, &e))
    }

    fn directory(&mut self, mongo: bool, rel: &[u8], info: &EntryInfo) -> Result<(), ReadError> {
        let (parent, name) =
            beneath::split_parent(rel).map_err(|e| visitor_err("restore", rel, &e))?;
        let dir = self.parent_dir(mongo, parent, rel)?;
        match dir
            .stat(name)
            .map_err(|e| visitor_err("inspect", rel, &e))?
        {
            Some(st) if beneath::kind(&st) == FileType::Directory => {}
            Some(_) => {
                dir.unlink(name)
                    .map_err(|e| visitor_err("replace", rel, &e))?;
                dir.mkdir(name, 0o700)
                    .map_err(|e| visitor_err("create directory", rel, &e))?;
            }
            None => dir
                .mkdir(name, 0o700)
                .map_err(|e| visitor_err("create directory", rel, &e))?,
        }
        if !mongo {
            let record = DirRecord {
                rel: rel.to_vec(),
                mode: info.mode & self.opts.mode_mask(),
                mtime: (info.mtime, info.mtime_nsec),
                owner: self.owner(info),
            };
            self.dirs
                .push(&record.encode())
                .map_err(|e| visitor_err("record", rel, &e))?;
        }
        Ok(())
    }

    fn dry_run_line(&mut self, rel: &[u8], info: &EntryInfo) {
        let rel_path = Path::new(OsStr::from_bytes(rel));
        let exists = self
            .opts
            .existing_target
            .as_ref()
            .is_some_and(|t| std::fs::symlink_metadata(t.join(rel_path)).is_ok());
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
    }

    fn files_entry(
        &mut self,
        rel: &[u8],
        info: &EntryInfo,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        // A differential's directory record applies whether or not the
        // directory itself is included: it removes only what was staged.
        let purge = match (&info.dumpdir, self.applying && !self.opts.dry_run) {
            (Some(record), true) => Some(record),
            _ => None,
        };
        if rel.is_empty() {
            // The project root itself: its mode and time go to the target.
            self.root_meta = Some(DirRecord {
                rel: Vec::new(),
                mode: info.mode & self.opts.mode_mask(),
                mtime: (info.mtime, info.mtime_nsec),
                owner: self.owner(info),
            });
            if let Some(record) = purge {
                self.purge(false, rel, record)?;
            }
            return Ok(());
        }
        if !self.included(rel, info.kind == Kind::Dir) {
            if let Some(record) = purge {
                self.purge(false, rel, record)?;
            }
            return Ok(());
        }
        self.entries += 1;
        if self.opts.dry_run {
            self.dry_run_line(rel, info);
            return Ok(());
        }
        match info.kind {
            Kind::Dir => {
                self.directory(false, rel, info)?;
                match purge {
                    Some(record) => self.purge(false, rel, record),
                    None => Ok(()),
                }
            }
            Kind::File => {
                self.write_file(false, rel, info, data)?;
                self.files += 1;
                Ok(())
            }
            Kind::Symlink => self.symlink(rel, info),
            Kind::Hardlink => {
                self.hard_link(rel, info)?;
                self.files += 1;
                Ok(())
            }
        }
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
        match info.kind {
            Kind::Dir => {
                self.directory(true, rel, info)?;
                match (&info.dumpdir, self.applying) {
                    (Some(record), true) => self.purge(true, rel, record),
                    _ => Ok(()),
                }
            }
            Kind::File => self.write_file(true, rel, info, data),
            _ => Err(ReadError::Unsafe {
                archive: self.archive.to_string(),
                path: info.display(),
                why: "only files and directories belong in mongodb/".into(),
            }),
        }
    }
}

/// A path the kernel refused to resolve (a symlink on the way, or an
/// escape) is the archive's doing: say so plainly.
fn refusal_or(archive: &str, e: &io::Error, rel: &[u8], what: &str) -> ReadError {
    let refused = matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::LOOP.raw_os_error()
            || code == rustix::io::Errno::XDEV.raw_os_error()
            || code == rustix::io::Errno::NOTDIR.raw_os_error()
    );
    if refused {
        ReadError::Unsafe {
            archive: archive.to_owned(),
            path: String::from_utf8_lossy(rel).into_owned(),
            why: "it would be written through a symlink or a file an earlier entry made".into(),
        }
    } else {
        visitor_err(what, rel, e)
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
            && !self.skip_dump
        {
            return self.mongo_entry(rel, info, data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = DirRecord {
            rel: b"a/b c".to_vec(),
            mode: 0o755,
            mtime: (-5, 999),
            owner: Some((1000, 100)),
        };
        assert_eq!(DirRecord::decode(&r.encode()).unwrap(), r);
        let r = DirRecord { owner: None, ..r };
        assert_eq!(DirRecord::decode(&r.encode()).unwrap(), r);
        assert_eq!(
            split_link_record(&link_record(b"x/y", b"../z")),
            (&b"x/y"[..], &b"../z"[..])
        );
    }
}
