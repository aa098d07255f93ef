//! Stacking the layers: compression over encryption over a file, and back.
//!
//! A [`Sink`] is a `Write` with an explicit, fallible `finish`: the gzip
//! writer flushes its last block and joins its threads, zstd writes its frame
//! end, age writes its last authenticated chunk, the file is fsynced. Only
//! when the whole chain finished is the archive complete.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};

use super::blocks::{ParallelReader, ParallelWriter};
use super::crypt::{self, CryptError, Encrypting, ReadKeys};
use super::pipe;
use super::{Compression, Sink};

/// The file at the bottom of the stack; `finish` fsyncs it.
pub struct FileSink {
    file: File,
}

impl FileSink {
    /// Wraps a file.
    pub fn new(file: File) -> Self {
        FileSink { file }
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Sink for FileSink {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// A sink that shows every byte written through it to an observer (the
/// signature), and the end once everything below finished.
pub struct TeeSink {
    inner: Box<dyn Sink>,
    observer: pipe::Observer,
}

impl TeeSink {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Sink>, observer: pipe::Observer) -> Self {
        TeeSink { inner, observer }
    }
}

impl Write for TeeSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.observer)(Some(&buf[..n]));
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Sink for TeeSink {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let TeeSink {
            inner,
            mut observer,
        } = *self;
        inner.finish()?;
        observer(None);
        Ok(())
    }
}

struct AgeSink(age::stream::StreamWriter<Box<dyn Sink>>);

impl Write for AgeSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Sink for AgeSink {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.finish()?.finish()
    }
}

/// Stacks encryption (when given) and compression over `bottom`.
pub fn writer(
    bottom: Box<dyn Sink>,
    encryption: Option<Encrypting>,
    compression: Compression,
    threads: usize,
) -> io::Result<Box<dyn Sink>> {
    let encrypted: Box<dyn Sink> = match encryption {
        Some(enc) => Box::new(AgeSink(enc.wrap(bottom)?)),
        None => bottom,
    };
    Ok(Box::new(ParallelWriter::new(
        encrypted,
        compression,
        threads,
    )?))
}

/// What the layers of an archive turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    /// Whether an age layer was present.
    pub encrypted: bool,
    /// The compression (its level is the format's default: a reader cannot tell).
    pub compression: Compression,
}

/// Why an archive's outer layers cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A key problem.
    #[error(transparent)]
    Crypt(#[from] CryptError),
    /// Neither gzip nor zstd inside.
    #[error(
        "{0} is not a cofre archive: its contents are neither gzip nor zstd (wrong file, or the wrong key?)"
    )]
    UnknownFormat(String),
    /// Reading failed.
    #[error("cannot read {archive}: {source}")]
    Io {
        /// The archive.
        archive: String,
        /// The OS error.
        source: io::Error,
    },
}

impl crate::exit::Coded for OpenError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            OpenError::Crypt(e) => e.exit(),
            OpenError::UnknownFormat(_) | OpenError::Io { .. } => crate::exit::Exit::Failure,
        }
    }
}

const AGE_MAGIC: &[u8] = b"age-encryption.org/";
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

fn peek<R: BufRead>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let buf = r.fill_buf()?;
    Ok(buf[..buf.len().min(n)].to_vec())
}

/// Reads up to `max` bytes (fewer only at the end of `input`).
fn read_prefix(input: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(max.min(1 << 16));
    input.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Opens the layers of `input` (detected from magic bytes) and returns a
/// reader of the tar stream, fed by other threads. `observer` sees the raw
/// bytes of `input` as they are read, to the end (the signature check).
pub fn open(
    input: impl Read + Send + 'static,
    keys: &ReadKeys,
    archive: &str,
    threads: usize,
    observer: Option<pipe::Observer>,
) -> Result<(Box<dyn Read + Send>, Layers), OpenError> {
    let io_err = |source| OpenError::Io {
        archive: archive.to_owned(),
        source,
    };
    let input: Box<dyn Read + Send> = match observer {
        Some(o) => Box::new(pipe::spawn_observed(input, Some(o))),
        None => Box::new(input),
    };
    let mut outer = BufReader::with_capacity(1 << 16, input);
    let magic = peek(&mut outer, 32).map_err(io_err)?;
    let (mut plain, encrypted): (Box<dyn BufRead + Send>, bool) = if magic.starts_with(AGE_MAGIC) {
        // The header is parsed before anything is authenticated: it must
        // end within MAX_HEADER bytes, so a huge one is never held.
        let head = read_prefix(&mut outer, crypt::MAX_HEADER).map_err(io_err)?;
        if !head.windows(4).any(|w| w == b"\n---") {
            return Err(CryptError::BadHeader {
                archive: archive.to_owned(),
                why: format!(
                    "no end of header within its first {} KiB",
                    crypt::MAX_HEADER >> 10
                ),
            }
            .into());
        }
        let rejoined = BufReader::with_capacity(1 << 16, io::Cursor::new(head).chain(outer));
        let reader = crypt::decrypt(rejoined, keys, archive)?;
        // Decryption on its own thread: decompression (and, for zstd, the
        // tar reading after it) run beside it.
        (Box::new(pipe::spawn_reader(reader)), true)
    } else {
        (Box::new(outer), false)
    };
    let magic = peek(&mut plain, 4).map_err(io_err)?;
    let format = if magic.starts_with(GZIP_MAGIC) {
        Some(Compression::Gzip(6))
    } else if magic.starts_with(ZSTD_MAGIC)
        || (magic.len() == 4 && magic[1..] == [0x2a, 0x4d, 0x18] && magic[0] & 0xf0 == 0x50)
    {
        Some(Compression::Zstd(3))
    } else {
        None
    };
    if let Some(compression) = format {
        let reader = ParallelReader::new(plain, compression, threads);
        Ok((
            Box::new(reader),
            Layers {
                encrypted,
                compression,
            },
        ))
    } else {
        Err(OpenError::UnknownFormat(archive.to_owned()))
    }
}

/// The file name of an archive path, for messages.
pub fn archive_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
