//! The index of a full archive, and the plan of a differential against it.
//!
//! A differential must know, without reading the full (which is
//! encrypted, perhaps to keys this machine does not hold), what the full
//! holds: so a full backup also writes `ARCHIVE.index` beside the archive,
//! one line per directory in walk order, each with the names the directory
//! held and, for each, the `lstat` (size, mtime, ctime, inode, mode) and,
//! for files, the BLAKE3 of what was archived. It is signed with this
//! installation's key (`ARCHIVE.index.minisig`) and read back only when the
//! signature holds: a file in `BACKUP_DIR` is never believed on its own,
//! and an index someone edited to hide a change would make a differential
//! leave that change out.
//!
//! Lines are in the walk's order of directories (pre-order, names sorted
//! component by component), so a differential walking the tree today reads
//! the index as a cursor, one directory at a time: memory holds one
//! directory's names, whatever the tree's size. [`plan_dir`] decides, from
//! the old record of a directory and what it holds now, which files are
//! stored, which are not read at all, which are compared by their hash,
//! what was deleted, and the directory's GNU `dumpdir` record (a name per
//! entry: `D` a directory, `Y` stored in this archive, `N` not), by which
//! `tar -x -g /dev/null` and cofre's restore remove what the day no
//! longer holds.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use rustix::fs::FileType;
use serde::{Deserialize, Serialize};

use crate::archive::dumpdir;
use crate::walk::{Child, Meta};

pub use crate::store::INDEX_SUFFIX;
/// A file whose change time is this close to when it was read is
/// [`Entry::racy`].
pub const RACY_SECONDS: i64 = 2;
/// The index format's version.
const FORMAT: u32 = 1;
/// The longest line read (one directory's record).
const MAX_LINE: usize = 64 << 20;
/// The index's first line: what it indexes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// Always 1.
    pub format: u32,
    /// The full archive's name.
    pub archive: String,
    /// The BLAKE3 of its manifest, as a differential's claim names it.
    pub manifest: String,
    /// Whether it holds a database dump.
    pub mongo: bool,
}

/// What a directory held, one entry per name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Line {
    /// The directory, relative to the project (hex when not UTF-8).
    #[serde(with = "bytes_text")]
    pub dir: Vec<u8>,
    /// Its names, sorted.
    pub children: Vec<Entry>,
}

/// One name in a directory, as the full saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The name.
    #[serde(with = "bytes_text")]
    pub name: Vec<u8>,
    /// `d` directory, `f` file, `l` symlink, `o` anything else.
    pub kind: char,
    /// Bytes.
    pub size: u64,
    /// mtime, nanoseconds since the epoch.
    pub mtime: i128,
    /// ctime, nanoseconds since the epoch.
    pub ctime: i128,
    /// Inode.
    pub ino: u64,
    /// `st_mode`.
    pub mode: u32,
    /// Owner.
    #[serde(default)]
    pub uid: u32,
    /// Group.
    #[serde(default)]
    pub gid: u32,
    /// BLAKE3 of what the full archived (files it stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Changed so shortly before it was read that a later change could
    /// leave the same times (timestamps are as coarse as the kernel's
    /// tick): a differential hashes it rather than trust its times.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub racy: bool,
}

/// Names as text when they are UTF-8, else `hex:` and their bytes in hex.
mod bytes_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(t) if !t.starts_with("hex:") => s.serialize_str(t),
            _ => s.serialize_str(&format!("hex:{}", crate::format::hex(b))),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let t = String::deserialize(d)?;
        match t.strip_prefix("hex:") {
            Some(h) => crate::format::unhex(h)
                .ok_or_else(|| serde::de::Error::custom("a name in hex is malformed")),
            None => Ok(t.into_bytes()),
        }
    }
}

fn kind_char(k: FileType) -> char {
    match k {
        FileType::Directory => 'd',
        FileType::RegularFile => 'f',
        FileType::Symlink => 'l',
        _ => 'o',
    }
}

fn nanos(secs: i64, nsec: u32) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

impl Entry {
    /// The record of a name as listed now.
    pub fn of(c: &Child) -> Entry {
        Entry {
            name: c.name.clone(),
            kind: kind_char(c.kind),
            size: c.meta.size,
            mtime: nanos(c.meta.mtime, c.meta.mtime_nsec),
            ctime: nanos(c.meta.ctime, c.meta.ctime_nsec),
            ino: c.meta.ino,
            mode: c.meta.mode,
            uid: c.meta.uid,
            gid: c.meta.gid,
            hash: None,
            racy: false,
        }
    }

    /// Whether `m` is this record's file as it was: nothing that `lstat`
    /// shows has changed, so it is not read.
    fn same_stat(&self, m: &Meta) -> bool {
        self.size == m.size
            && self.mtime == nanos(m.mtime, m.mtime_nsec)
            && self.ctime == nanos(m.ctime, m.ctime_nsec)
            && self.ino == m.ino
            && self.mode == m.mode
    }

    /// Whether what a restore gives back is the same: size, mtime, mode,
    /// owner (the content is then told by the hash).
    fn same_outside(&self, m: &Meta) -> bool {
        self.size == m.size
            && self.mtime == nanos(m.mtime, m.mtime_nsec)
            && self.mode == m.mode
            && (self.uid, self.gid) == (m.uid, m.gid)
    }
}

/// Compares two relative paths in walk order: component by component,
/// bytewise, a path before the paths beneath it.
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    let mut x = a.split(|&c| c == b'/').filter(|c| !c.is_empty());
    let mut y = b.split(|&c| c == b'/').filter(|c| !c.is_empty());
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => match p.cmp(q) {
                Ordering::Equal => {}
                other => return other,
            },
        }
    }
}

/// Writes the index of a full archive as the walk goes: a directory's line
/// once its files are archived (and so hashed), before its subdirectories.
pub struct Writer {
    spool: BufWriter<File>,
    current: Option<Line>,
}

impl Writer {
    /// Spools into an unnamed temporary file in `dir`.
    pub fn new(dir: &Path) -> io::Result<Writer> {
        Ok(Writer {
            spool: BufWriter::with_capacity(1 << 16, tempfile::tempfile_in(dir)?),
            current: None,
        })
    }

    /// A directory and what it holds (excluded names are not indexed: the
    /// full does not hold them).
    pub fn dir(&mut self, rel: &[u8], children: &[Child]) {
        self.current = Some(Line {
            dir: rel.to_vec(),
            children: children
                .iter()
                .filter(|c| !c.excluded)
                .map(Entry::of)
                .collect(),
        });
    }

    /// A file of the current directory was archived with `hash`; `racy`
    /// when it changed within [`RACY_SECONDS`] of being read.
    pub fn file(&mut self, name: &[u8], hash: &str, racy: bool) {
        if let Some(e) = self
            .current
            .as_mut()
            .and_then(|l| l.children.iter_mut().find(|e| e.name == name))
        {
            e.hash = Some(hash.to_owned());
            e.racy = racy;
        }
    }

    /// The files of directory `rel` (the current one) are done: its line
    /// is written.
    pub fn files_done(&mut self, rel: &[u8]) -> io::Result<()> {
        if let Some(mut line) = self.current.take() {
            if line.dir != rel {
                return Err(io::Error::other("the index lost its place in the walk"));
            }
            // A file that could not be read is not in the archive.
            line.children.retain(|e| e.kind != 'f' || e.hash.is_some());
            serde_json::to_writer(&mut self.spool, &line)?;
            self.spool.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The whole index, its header first, into `out`, compressed (zstd).
    pub fn finish(self, header: &Header, out: impl Write) -> io::Result<()> {
        let mut spool = self.spool.into_inner().map_err(|e| e.into_error())?;
        spool.rewind()?;
        let mut out = zstd::stream::write::Encoder::new(out, 3)?;
        serde_json::to_writer(&mut out, header)?;
        out.write_all(b"\n")?;
        io::copy(&mut spool, &mut out)?;
        out.finish()?.flush()
    }
}

/// An index being read (its signature already checked).
pub struct Reader<R> {
    input: R,
    /// What it indexes.
    pub header: Header,
    next: Option<Line>,
    buf: Vec<u8>,
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl<R: BufRead> Reader<R> {
    /// Reads the header.
    pub fn new(mut input: R) -> io::Result<Reader<R>> {
        let mut buf = Vec::new();
        read_line(&mut input, &mut buf)?;
        let header: Header =
            serde_json::from_slice(&buf).map_err(|e| bad(format!("its header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!("format {} is not known", header.format)));
        }
        let mut r = Reader {
            input,
            header,
            next: None,
            buf,
        };
        r.advance()?;
        Ok(r)
    }

    fn advance(&mut self) -> io::Result<()> {
        self.next = if read_line(&mut self.input, &mut self.buf)? {
            Some(serde_json::from_slice(&self.buf).map_err(|e| bad(format!("a line: {e}")))?)
        } else {
            None
        };
        Ok(())
    }

    /// The record of directory `rel`, when the full held it; the records
    /// of the directories before it (in walk order) that the walk did not
    /// reach are `gone` (deleted, or left out now).
    pub fn take(&mut self, rel: &[u8], gone: &mut Vec<Vec<u8>>) -> io::Result<Option<Line>> {
        loop {
            let Some(line) = &self.next else {
                return Ok(None);
            };
            match walk_order(&line.dir, rel) {
                Ordering::Less => {
                    gone.push(self.next.take().expect("matched above").dir);
                    self.advance()?;
                }
                Ordering::Equal => {
                    let line = self.next.take();
                    self.advance()?;
                    return Ok(line);
                }
                Ordering::Greater => return Ok(None),
            }
        }
    }

    /// The records after everything the walk reached: gone.
    pub fn rest(mut self, gone: &mut Vec<Vec<u8>>) -> io::Result<()> {
        while let Some(line) = self.next.take() {
            gone.push(line.dir);
            self.advance()?;
        }
        Ok(())
    }
}

/// One line into `buf` (without its newline); false at the end.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    let n = input
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)?;
    if n > MAX_LINE {
        return Err(bad("a line is longer than cofre writes"));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(n > 0)
}

/// What happens to one name of a directory in a differential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// A directory (walked in its turn).
    Dir,
    /// Stored in the differential (new, or changed).
    Store,
    /// Not stored, not read: `lstat` says it is as the full has it.
    Keep,
    /// Read and hashed: stored only if the hash differs from `hash`.
    Compare,
    /// Left out (a pattern), but there: named, so a restore keeps it.
    Excluded,
}

/// The plan of one directory of a differential.
#[derive(Debug, Clone, PartialEq)]
pub struct DirPlan {
    /// Per name now (in `children`' order), what happens to it.
    pub fates: Vec<Fate>,
    /// For `Compare`, the hash the full has.
    pub old_hashes: Vec<Option<String>>,
    /// Names the full held that are gone now.
    pub deleted: Vec<Vec<u8>>,
}

/// Decides the fate of each name of a directory, from what the full held
/// there (`old`; `None`: the directory is new) and what it holds now.
pub fn plan_dir(old: Option<&Line>, now: &[Child]) -> DirPlan {
    let mut fates = Vec::with_capacity(now.len());
    let mut old_hashes = Vec::with_capacity(now.len());
    let find = |name: &[u8]| {
        old.and_then(|l| {
            l.children
                .binary_search_by(|e| e.name.as_slice().cmp(name))
                .ok()
                .map(|i| &l.children[i])
        })
    };
    for c in now {
        let before = find(&c.name);
        let (fate, hash) = if c.excluded {
            (Fate::Excluded, None)
        } else if c.kind == FileType::Directory {
            (Fate::Dir, None)
        } else {
            match before {
                Some(e) if e.kind == kind_char(c.kind) && c.kind == FileType::RegularFile => {
                    if e.same_stat(&c.meta) && !e.racy {
                        (Fate::Keep, None)
                    } else if e.same_outside(&c.meta) && e.hash.is_some() {
                        (Fate::Compare, e.hash.clone())
                    } else {
                        (Fate::Store, None)
                    }
                }
                // Symlinks cost nothing: always stored. So is anything new
                // or of another kind than before.
                _ => (Fate::Store, None),
            }
        };
        fates.push(fate);
        old_hashes.push(hash);
    }
    let deleted = old
        .map(|l| {
            l.children
                .iter()
                .filter(|e| {
                    now.binary_search_by(|c| c.name.as_slice().cmp(&e.name))
                        .is_err()
                })
                .map(|e| e.name.clone())
                .collect()
        })
        .unwrap_or_default();
    DirPlan {
        fates,
        old_hashes,
        deleted,
    }
}

/// A directory's GNU `dumpdir` record: each name once, sorted, prefixed
/// `D` (a directory), `Y` (in this archive) or `N` (not), each ended by a
/// NUL, and one NUL more. `stored(i)` says whether name `i` is in this
/// archive.
pub fn dumpdir(children: &[Child], stored: impl Fn(usize) -> bool) -> Vec<u8> {
    dumpdir::record(children.iter().enumerate().map(|(i, c)| {
        let flag = if c.kind == FileType::Directory {
            b'D'
        } else if stored(i) {
            b'Y'
        } else {
            b'N'
        };
        (flag, c.name.as_slice())
    }))
}

/// An index read from its file.
pub type FileReader = Reader<BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>>;

/// Opens and checks the index of `archive` in `dir`: its signature must be
/// this installation's (`trusted`), for this file and this project; then
/// the same handle is read. `None` (with why) when there is none or it
/// does not hold.
pub fn open_verified(
    dir: &Path,
    archive: &str,
    trusted: &crate::sign::TrustedKeys,
    origin: &crate::sign::Origin,
) -> Result<FileReader, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = format!("{archive}{INDEX_SUFFIX}");
    let path = dir.join(&name);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::store::NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("{name}: {e}"))?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err(format!("{name} is not a regular file"));
    }
    let text = crate::sign::read_sig(&path).map_err(|e| format!("{name}'s signature: {e}"))?;
    let prepared = match crate::sign::standing(&name, text.as_deref(), trusted, origin) {
        crate::sign::Standing::Ours(_) => {
            crate::sign::prepare(&name, text.as_deref(), trusted).map_err(|e| e.to_string())?
        }
        other => return Err(format!("{name} {}", other.refusal().unwrap_or_default())),
    };
    let mut checker = prepared.start();
    let mut feed = checker.feeder();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            feed(None);
            break;
        }
        feed(Some(&buf[..n]));
    }
    drop(feed);
    checker
        .finish()
        .map_err(|e| format!("{name} does not match its signature ({e})"))?;
    file.rewind().map_err(|e| e.to_string())?;
    let decoder = zstd::stream::read::Decoder::new(file).map_err(|e| e.to_string())?;
    let reader = Reader::new(BufReader::with_capacity(1 << 16, decoder))
        .map_err(|e| format!("{name} cannot be read ({e})"))?;
    if reader.header.archive != archive {
        return Err(format!("{name} indexes {}", reader.header.archive));
    }
    Ok(reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, mtime: i64, ctime: i64, ino: u64, mode: u32) -> Meta {
        Meta {
            mode,
            size,
            allocated: size,
            mtime,
            mtime_nsec: 0,
            ctime,
            ctime_nsec: 0,
            uid: 0,
            gid: 0,
            dev: 1,
            ino,
        }
    }

    fn child(name: &str, kind: FileType, m: Meta) -> Child {
        Child {
            name: name.as_bytes().to_vec(),
            kind,
            meta: m,
            excluded: false,
        }
    }

    #[test]
    fn walk_order_is_the_walks_order_of_directories() {
        let mut paths: Vec<&[u8]> = vec![b"a.c", b"a/b", b"", b"a", b"b", b"a/b/c", b"a/a"];
        paths.sort_by(|a, b| walk_order(a, b));
        assert_eq!(
            paths,
            vec![&b""[..], b"a", b"a/a", b"a/b", b"a/b/c", b"a.c", b"b"]
        );
    }

    /// The fate of each name against the full's record, as a table.
    #[test]
    fn plan_table() {
        let file = FileType::RegularFile;
        let m = meta(10, 100, 100, 7, 0o100644);
        let old = Line {
            dir: Vec::new(),
            children: vec![
                Entry {
                    hash: Some("h-same".into()),
                    ..Entry::of(&child("copied", file, m))
                },
                Entry::of(&child("d", FileType::Directory, m)),
                Entry {
                    hash: Some("h".into()),
                    ..Entry::of(&child("gone", file, m))
                },
                Entry {
                    hash: Some("h".into()),
                    ..Entry::of(&child("mode", file, m))
                },
                Entry {
                    hash: Some("h".into()),
                    ..Entry::of(&child("same", file, m))
                },
                Entry {
                    hash: Some("h".into()),
                    ..Entry::of(&child("touched", file, m))
                },
                Entry {
                    hash: Some("h".into()),
                    ..Entry::of(&child("was-file", file, m))
                },
            ],
        };
        let now = vec![
            // A copy with the same size, mtime and mode, another inode.
            child("copied", file, meta(10, 100, 200, 8, 0o100644)),
            child("d", FileType::Directory, m),
            child("mode", file, meta(10, 100, 200, 7, 0o100600)),
            child("new", file, m),
            child("same", file, m),
            child("touched", file, meta(10, 150, 150, 7, 0o100644)),
            child("was-file", FileType::Directory, m),
            Child {
                excluded: true,
                ..child("z-excluded", file, m)
            },
        ];
        let plan = plan_dir(Some(&old), &now);
        assert_eq!(
            plan.fates,
            vec![
                Fate::Compare,
                Fate::Dir,
                Fate::Store,
                Fate::Store,
                Fate::Keep,
                Fate::Store,
                Fate::Dir,
                Fate::Excluded,
            ]
        );
        assert_eq!(plan.old_hashes[0].as_deref(), Some("h-same"));
        assert_eq!(plan.deleted, vec![b"gone".to_vec()]);
        // A new directory: everything stored.
        let fresh = plan_dir(None, &now[..1]);
        assert_eq!(fresh.fates, vec![Fate::Store]);
        // The dumpdir record: D for directories, Y stored, N not.
        let record = dumpdir(&now, |i| plan.fates[i] == Fate::Store);
        assert_eq!(
            record,
            b"Ncopied\0Dd\0Ymode\0Ynew\0Nsame\0Ytouched\0Dwas-file\0Nz-excluded\0\0".to_vec()
        );
        let names = dumpdir::names(&record).unwrap();
        assert_eq!(names.len(), 8);
        assert_eq!(names[1], (b'D', &b"d"[..]));
    }

    #[test]
    fn an_index_is_written_and_read_back_as_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(1, 1, 1, 1, 0o100644);
        let mut w = Writer::new(dir.path()).unwrap();
        for (rel, names) in [
            ("", vec!["a", "b"]),
            ("a", vec!["x"]),
            ("a/x", vec![]),
            ("b", vec!["y"]),
        ] {
            let children: Vec<Child> = names
                .iter()
                .map(|n| child(n, FileType::RegularFile, m))
                .collect();
            w.dir(rel.as_bytes(), &children);
            for n in &names {
                w.file(n.as_bytes(), "h", false);
            }
            w.files_done(rel.as_bytes()).unwrap();
        }
        let header = Header {
            format: FORMAT,
            archive: "backup_x".into(),
            manifest: "m".into(),
            mongo: false,
        };
        let mut out = Vec::new();
        w.finish(&header, &mut out).unwrap();
        let mut r = Reader::new(BufReader::new(
            zstd::stream::read::Decoder::new(&out[..]).unwrap(),
        ))
        .unwrap();
        assert_eq!(r.header, header);
        let mut gone = Vec::new();
        assert_eq!(r.take(b"", &mut gone).unwrap().unwrap().children.len(), 2);
        // "a" and "a/x" were not walked today: gone.
        assert_eq!(r.take(b"b", &mut gone).unwrap().unwrap().dir, b"b");
        assert_eq!(gone.len(), 2);
        assert!(r.take(b"c", &mut gone).unwrap().is_none());
        r.rest(&mut gone).unwrap();
        assert_eq!(gone.len(), 2);
    }
}
