//! The archive: a streaming pipeline of standard layers, and back.
//!
//! Writing, innermost first: [`writer::ArchiveWriter`] turns files and
//! streams into a pax tar ([`tarenc`]) and records each entry's hash in the
//! manifest, which becomes the last entry; the tar bytes go into a
//! compressor that uses every core ([`blocks::ParallelWriter`], gzip or
//! zstd), then into age ([`crypt`]), then into the temporary file. Each layer is a
//! [`Sink`]: a `Write` that is explicitly finished, so an unfinished
//! archive can never be mistaken for a complete one.
//!
//! Reading is the mirror image ([`layers::open`]): the layers are detected
//! from their magic bytes, not from the file name, and
//! [`reader::read_archive`] walks the tar, hashes every entry, hands it to a
//! visitor (restore extracts, verify discards), and checks everything against
//! the manifest at the end.

pub mod blocks;
pub mod crypt;
pub mod dumpdir;
pub mod layers;
pub mod manifest;
pub mod pipe;
pub mod reader;
pub mod tarenc;
pub mod tarread;
pub mod writer;

use std::fmt;
use std::io;

/// A `Write` that must be finished to be complete: each layer of a new
/// archive is one (compression, encryption, the file at the bottom).
pub trait Sink: io::Write + Send {
    /// Flushes everything, closes the format, syncs to disk where there is one.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// The compression layer of new archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip at a level 1..=9 (libdeflate's levels, which compress at least as
    /// well as gzip's at the same number).
    Gzip(u8),
    /// zstd at a level 1..=19.
    Zstd(u8),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip(6)
    }
}

impl Compression {
    /// Parses `gzip`, `gzip:N`, `zstd`, `zstd:N`.
    pub fn parse(s: &str) -> Option<Compression> {
        let s = s.trim().to_ascii_lowercase();
        let (algo, level) = match s.split_once(':') {
            Some((a, l)) => (a.to_owned(), Some(l.trim().parse::<u8>().ok()?)),
            None => (s, None),
        };
        match (algo.as_str(), level) {
            ("gzip" | "gz", None) => Some(Compression::Gzip(6)),
            ("gzip" | "gz", Some(l @ 1..=9)) => Some(Compression::Gzip(l)),
            ("zstd" | "zst", None) => Some(Compression::Zstd(3)),
            ("zstd" | "zst", Some(l @ 1..=19)) => Some(Compression::Zstd(l)),
            _ => None,
        }
    }

    /// The algorithm's name (`gzip`, `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip(_) => "gzip",
            Compression::Zstd(_) => "zstd",
        }
    }

    /// The file name extension (`gz`, `zst`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip(_) => "gz",
            Compression::Zstd(_) => "zst",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Gzip(l) => write!(f, "gzip:{l}"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

/// The manifest's name inside the tar (its last entry).
pub const MANIFEST_NAME: &str = "cofre-manifest.json";
/// Where the project's files live inside the tar.
pub const FILES_PREFIX: &str = "files/";
/// Where the database dump lives inside the tar.
pub const MONGO_PREFIX: &str = "mongodb/";

/// Default number of worker threads for compression and decompression.
pub fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(Compression::parse("gzip"), Some(Compression::Gzip(6)));
        assert_eq!(Compression::parse("GZIP:9"), Some(Compression::Gzip(9)));
        assert_eq!(Compression::parse("zstd:19"), Some(Compression::Zstd(19)));
        assert_eq!(Compression::parse("zstd"), Some(Compression::Zstd(3)));
        for bad in ["gzip:0", "gzip:10", "zstd:20", "lz4", "zstd:", "gzip:x"] {
            assert_eq!(Compression::parse(bad), None, "{bad}");
        }
    }
}
