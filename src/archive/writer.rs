//! Building an archive: entries in, hashed as they stream, manifest last.
//!
//! Failures are of two kinds and kept apart. A source file that cannot be
//! opened, read, or that changes while it is read is a [`Warning`]: it is
//! recorded in the manifest, logged, and the backup goes on (the exit code
//! says so). A failure to *write* the archive (full disk, a failed layer) is
//! an `io::Error` returned to the caller, which abandons the archive.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::Sink;
use super::manifest::{Entry, ManifestInfo, ManifestWriter, Totals, Warning};
use super::tarenc::{EntryMeta, Kind, TarEncoder, sparse_map_block};
use super::{FILES_PREFIX, MANIFEST_NAME};
use crate::walk::Meta;

/// Read size for source files: large enough that syscalls do not dominate,
/// small enough to stay in L2 while it is hashed and copied.
const READ_BUF: usize = 256 << 10;
/// The most data segments a sparse file is stored with; beyond, the rest
/// of the file is one segment (its holes read as zeros).
pub const MAX_SPARSE_SEGMENTS: usize = 65_536;

/// Metadata of an entry that does not come from the filesystem.
#[derive(Debug, Clone, Copy)]
pub struct StreamMeta {
    /// Permission bits.
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

impl StreamMeta {
    /// The header metadata of an entry that does not come from the filesystem.
    fn entry<'a>(self, path: &'a [u8], kind: Kind, size: u64) -> EntryMeta<'a> {
        EntryMeta {
            path,
            kind,
            size,
            mode: self.mode,
            mtime: self.mtime,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            link: None,
            sparse: None,
            dumpdir: None,
        }
    }
}

/// An archive being written.
pub struct ArchiveWriter {
    tar: TarEncoder<Box<dyn Sink>>,
    /// Taken when the manifest is written.
    manifest: Option<ManifestWriter>,
    totals: Totals,
    warnings: Vec<Warning>,
    buf: Vec<u8>,
    temp_dir: PathBuf,
    progress: ProgressBar,
    cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// The error a cancelled write returns.
pub fn cancelled_error() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the backup was cancelled")
}

fn fs_meta<'a>(path: &'a [u8], kind: Kind, m: &Meta, link: Option<&'a [u8]>) -> EntryMeta<'a> {
    EntryMeta {
        path,
        kind,
        size: if kind == Kind::File { m.size } else { 0 },
        mode: m.perm(),
        mtime: m.mtime,
        mtime_nsec: m.mtime_nsec.min(999_999_999),
        uid: u64::from(m.uid),
        gid: u64::from(m.gid),
        link,
        sparse: None,
        dumpdir: None,
    }
}

/// The data segments of `file` (offset, length), from `SEEK_DATA` and
/// `SEEK_HOLE`, when it has holes; `None` for a file without any (fewer
/// blocks than bytes is the sign to look; `before` is its `fstat`), or on
/// a filesystem that cannot say. A file ending in a hole gets a last,
/// empty segment at its end, as GNU tar writes it.
fn sparse_segments(file: &File, before: &Meta) -> Option<Vec<(u64, u64)>> {
    use rustix::fs::SeekFrom;
    let size = before.size;
    if before.allocated >= size {
        return None;
    }
    let mut segments = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return None,
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(file, SeekFrom::Hole(data)).ok()?.min(size);
        if segments.len() + 1 == MAX_SPARSE_SEGMENTS {
            segments.push((data, size - data));
            break;
        }
        segments.push((data, hole - data));
        pos = hole;
    }
    let _ = rustix::fs::seek(file, SeekFrom::Start(0));
    let stored: u64 = segments.iter().map(|s| s.1).sum();
    if stored == size {
        return None;
    }
    if segments.last().is_none_or(|(o, l)| o + l < size) {
        segments.push((size, 0));
    }
    Some(segments)
}

/// The archive path of a project-relative path (`files/<rel>`).
pub fn files_path(rel: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        return b"files".to_vec();
    }
    let mut p = Vec::with_capacity(FILES_PREFIX.len() + rel.len());
    p.extend_from_slice(FILES_PREFIX.as_bytes());
    p.extend_from_slice(rel);
    p
}

impl ArchiveWriter {
    /// Starts an archive into `sink`; temporary spools go to `temp_dir`.
    pub fn new(sink: Box<dyn Sink>, temp_dir: &Path, progress: ProgressBar) -> io::Result<Self> {
        Ok(ArchiveWriter {
            tar: TarEncoder::new(sink),
            manifest: Some(ManifestWriter::new(temp_dir)?),
            totals: Totals::default(),
            warnings: Vec::new(),
            buf: vec![0u8; READ_BUF],
            temp_dir: temp_dir.to_path_buf(),
            progress,
            cancel: None,
        })
    }

    /// Makes long reads stop with [`cancelled_error`] once `flag` is set.
    pub fn set_cancel(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.cancel = Some(flag);
    }

    fn check_cancel(&self) -> io::Result<()> {
        match &self.cancel {
            Some(c) if c.load(std::sync::atomic::Ordering::Relaxed) => Err(cancelled_error()),
            _ => Ok(()),
        }
    }

    /// Records a warning about `path` (and logs it).
    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!(path, "{message}");
        self.warnings.push(Warning {
            path: path.to_owned(),
            message,
        });
    }

    /// Mutable counts, for the parts (MongoDB) that keep their own.
    pub fn totals_mut(&mut self) -> &mut Totals {
        &mut self.totals
    }

    fn record(&mut self, meta: &EntryMeta<'_>, hash: Option<String>) -> io::Result<()> {
        self.totals.entries += 1;
        self.manifest
            .as_mut()
            .expect("entries are added before finish")
            .push(&Entry::from_meta(meta, hash))
    }

    /// Adds a directory of the project (with its dumpdir record in a
    /// differential).
    pub fn add_dir(&mut self, path: &[u8], m: &Meta, dumpdir: Option<&[u8]>) -> io::Result<()> {
        let mut meta = fs_meta(path, Kind::Dir, m, None);
        meta.dumpdir = dumpdir;
        self.tar.header(&meta)?;
        self.totals.dirs += 1;
        self.record(&meta, None)
    }

    /// Adds a symlink of the project, as a link.
    pub fn add_symlink(&mut self, path: &[u8], target: &[u8], m: &Meta) -> io::Result<()> {
        let meta = fs_meta(path, Kind::Symlink, m, Some(target));
        self.tar.header(&meta)?;
        self.totals.symlinks += 1;
        self.record(&meta, None)
    }

    /// Adds a regular file of the project, opened beneath its directory
    /// (`before` is its `fstat` then), and returns the hash recorded. A
    /// file with holes is stored sparse. Problems with the source are
    /// warnings; the `Err` is a failure to write.
    pub fn add_file(
        &mut self,
        path: &[u8],
        file: &File,
        before: &Meta,
        shown: &str,
    ) -> io::Result<String> {
        let size = before.size;
        let segments = sparse_segments(file, before);
        let mut hasher = blake3::Hasher::new();
        let mut meta = fs_meta(path, Kind::File, before, None);
        let problem = match &segments {
            Some(segments) => {
                let map = sparse_map_block(segments);
                let data: u64 = segments.iter().map(|s| s.1).sum();
                meta.sparse = Some(size);
                meta.size = map.len() as u64 + data;
                self.tar.header(&meta)?;
                hasher.update(&map);
                self.tar.data(&map)?;
                let mut problem = None;
                for &(offset, len) in segments {
                    let p = self.copy_range(file, offset, len, &mut hasher)?;
                    problem = problem.or(p);
                }
                problem
            }
            None => {
                self.tar.header(&meta)?;
                self.copy_range(file, 0, size, &mut hasher)?
            }
        };
        let problem = problem.or_else(|| {
            let changed = Meta::of(file).map_or(true, |after| {
                after.size != before.size
                    || after.mtime != before.mtime
                    || after.mtime_nsec != before.mtime_nsec
            });
            changed
                .then(|| "changed while being read; the archived copy may be inconsistent".into())
        });
        if let Some(p) = problem {
            self.warn(shown, p);
        }
        self.totals.files += 1;
        self.totals.bytes += size;
        if let Some(segments) = &segments {
            self.totals.holes += size - segments.iter().map(|s| s.1).sum::<u64>();
        }
        let hash = hasher.finalize().to_hex().to_string();
        self.record(&meta, Some(hash.clone()))?;
        Ok(hash)
    }

    /// The hash [`ArchiveWriter::add_file`] would record for `file`,
    /// computed without writing anything (a differential compares it with
    /// the full's before it decides to store the file).
    pub fn content_hash(&mut self, file: &File, before: &Meta) -> io::Result<String> {
        let size = before.size;
        let segments = sparse_segments(file, before);
        let mut hasher = blake3::Hasher::new();
        let ranges = match &segments {
            Some(segments) => {
                hasher.update(&sparse_map_block(segments));
                segments.clone()
            }
            None => vec![(0, size)],
        };
        for (offset, len) in ranges {
            let mut done = 0u64;
            while done < len {
                self.check_cancel()?;
                let want = (len - done).min(self.buf.len() as u64) as usize;
                match file.read_at(&mut self.buf[..want], offset + done) {
                    // Shrunk meanwhile: whatever it hashes to, it differs.
                    Ok(0) => return Ok(String::new()),
                    Ok(n) => {
                        hasher.update(&self.buf[..n]);
                        done += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Ok(String::new()),
                }
            }
        }
        Ok(hasher.finalize().to_hex().to_string())
    }

    /// Copies `len` bytes of `file` from `offset` into the current entry,
    /// hashing them. A source that ends early or fails is padded with
    /// zeros (the header promised the bytes) and returned as a warning.
    fn copy_range(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        hasher: &mut blake3::Hasher,
    ) -> io::Result<Option<String>> {
        let mut done = 0u64;
        let mut problem = None;
        while done < len {
            self.check_cancel()?;
            let want = (len - done).min(self.buf.len() as u64) as usize;
            match file.read_at(&mut self.buf[..want], offset + done) {
                Ok(0) => {
                    problem = Some(format!(
                        "shrank while being read; the last {} bytes are zeros in the archive",
                        len - done
                    ));
                    break;
                }
                Ok(n) => {
                    hasher.update(&self.buf[..n]);
                    self.tar.data(&self.buf[..n])?;
                    done += n as u64;
                    self.progress.inc(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    problem = Some(format!(
                        "read failed after {} bytes ({e}); the rest is zeros in the archive",
                        offset + done
                    ));
                    break;
                }
            }
        }
        let zeros = [0u8; 8192];
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            hasher.update(&zeros[..n]);
            self.tar.data(&zeros[..n])?;
            done += n as u64;
        }
        Ok(problem)
    }

    /// Adds a stream of known size (a database dump), returning its hash.
    pub fn add_stream(
        &mut self,
        path: &[u8],
        mut reader: impl Read,
        size: u64,
        sm: StreamMeta,
    ) -> io::Result<String> {
        let meta = sm.entry(path, Kind::File, size);
        self.tar.header(&meta)?;
        let hash = self.copy_data(&mut reader, size)?.to_hex().to_string();
        self.record(&meta, Some(hash.clone()))?;
        Ok(hash)
    }

    /// Copies exactly `size` bytes of an entry's data from `reader`, hashing them.
    fn copy_data(&mut self, reader: &mut impl Read, size: u64) -> io::Result<blake3::Hash> {
        let mut hasher = blake3::Hasher::new();
        let mut remaining = size;
        while remaining > 0 {
            let want = remaining.min(self.buf.len() as u64) as usize;
            let n = reader.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a spooled stream ended early",
                ));
            }
            hasher.update(&self.buf[..n]);
            self.tar.data(&self.buf[..n])?;
            remaining -= n as u64;
            self.progress.inc(n as u64);
        }
        Ok(hasher.finalize())
    }

    /// Adds a directory entry that does not come from the filesystem (with
    /// its dumpdir record in a differential).
    pub fn add_synthetic_dir(
        &mut self,
        path: &[u8],
        sm: StreamMeta,
        dumpdir: Option<&[u8]>,
    ) -> io::Result<()> {
        let mut meta = sm.entry(path, Kind::Dir, 0);
        meta.dumpdir = dumpdir;
        self.tar.header(&meta)?;
        self.record(&meta, None)
    }

    /// Writes the manifest (with the counts and warnings gathered here) as
    /// the last entry, ends the tar and returns the sink, still to be
    /// finished by the caller, and the manifest as written.
    pub fn finish(mut self, mut info: ManifestInfo) -> io::Result<Finished> {
        info.totals = self.totals.clone();
        info.warnings = std::mem::take(&mut self.warnings);
        let manifest = self.manifest.take().expect("finish runs once");
        let (mut file, len) = manifest.finish(&info, &self.temp_dir)?;
        let sm = StreamMeta {
            mode: 0o600,
            mtime: chrono::Utc::now().timestamp(),
        };
        self.tar
            .header(&sm.entry(MANIFEST_NAME.as_bytes(), Kind::File, len))?;
        let manifest_hash = self.copy_data(&mut file, len)?.to_hex().to_string();
        Ok(Finished {
            sink: self.tar.finish()?,
            info,
            manifest_hash,
        })
    }
}

/// A written archive, its outer layers still to be finished.
pub struct Finished {
    /// The layers below the tar (compression, encryption, the file).
    pub sink: Box<dyn Sink>,
    /// The manifest as written.
    pub info: ManifestInfo,
    /// The BLAKE3 of the manifest (a differential's claim names its full
    /// by it).
    pub manifest_hash: String,
}
