//! Reading an archive: every entry hashed, every path checked, everything
//! compared with the manifest.
//!
//! [`read_archive`] drives a [`Visitor`] (restore extracts, verify only
//! counts) over the tar stream. Each entry's path is checked before the
//! visitor sees it (no absolute paths, no `..`, nothing outside `files/` and
//! `mongodb/`), its data is hashed while the visitor reads it, and its
//! recomputed record is spooled. The manifest comes last; it is parsed as a
//! stream and compared, entry by entry, with the spool. Finally the rest of
//! the stream is drained so the outer layers check their own end (age's last
//! authenticated chunk, gzip's CRC, zstd's checksum).

use std::io::{self, Read};

use tar::EntryType;

use super::tarread::{RawEntry, TarReader};

use super::manifest::{self, Entry, EntrySpool, ManifestInfo};
use super::tarenc::Kind;
use super::{FILES_PREFIX, MANIFEST_NAME, MONGO_PREFIX};

/// Why reading an archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are damaged or cut short.
    #[error(
        "{archive} is corrupt or truncated ({detail}); it cannot be trusted, try another archive"
    )]
    Corrupt {
        /// The archive.
        archive: String,
        /// What was found.
        detail: String,
    },
    /// An entry does not match the manifest.
    #[error(
        "{archive} does not match its manifest at {path}: {what}; the archive is damaged, try another one"
    )]
    Mismatch {
        /// The archive.
        archive: String,
        /// The entry.
        path: String,
        /// What differs.
        what: String,
    },
    /// An entry that could write outside the target.
    #[error("{archive} holds an unsafe entry {path:?} ({why}); refusing it, nothing was restored")]
    Unsafe {
        /// The archive.
        archive: String,
        /// The entry's path.
        path: String,
        /// Why it is unsafe.
        why: String,
    },
    /// No manifest at the end.
    #[error("{0} has no cofre manifest at its end: it is truncated, or it is not a cofre archive")]
    NoManifest(String),
    /// The manifest itself cannot be parsed.
    #[error("{archive} has a manifest that cannot be read ({detail}); the archive is damaged")]
    BadManifest {
        /// The archive.
        archive: String,
        /// The parser's words.
        detail: String,
    },
    /// Reading the archive file failed.
    #[error("cannot read {archive}: {source}")]
    Io {
        /// The archive.
        archive: String,
        /// The OS error.
        source: io::Error,
    },
    /// The visitor failed (e.g. writing a restored file).
    #[error("{0}")]
    Visitor(String),
}

impl crate::exit::Coded for ReadError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            ReadError::Corrupt { .. }
            | ReadError::Mismatch { .. }
            | ReadError::Unsafe { .. }
            | ReadError::NoManifest(_)
            | ReadError::BadManifest { .. }
            | ReadError::Io { .. }
            | ReadError::Visitor(_) => crate::exit::Exit::Failure,
        }
    }
}

/// One entry as read from the tar: path normalized (no `./`, no trailing
/// `/`); link target as stored for symlinks, normalized for hard links; for
/// a sparse file, `size` is what is stored (the map and the data segments,
/// which the visitor reads as the data).
pub type EntryInfo = super::tarenc::EntryHeader<Vec<u8>>;

impl EntryInfo {
    /// The path as text, for messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// The part after `files/`, for entries of the project.
    pub fn files_rel(&self) -> Option<&[u8]> {
        self.path.strip_prefix(FILES_PREFIX.as_bytes())
    }

    /// The part after `mongodb/`, for entries of the dump.
    pub fn mongo_rel(&self) -> Option<&[u8]> {
        self.path.strip_prefix(MONGO_PREFIX.as_bytes())
    }
}

/// What to do with each entry.
pub trait Visitor {
    /// Called for every entry but the manifest, in archive order. `data`
    /// yields the entry's bytes; what is not read is drained (and hashed).
    fn entry(&mut self, info: &EntryInfo, data: &mut dyn Read) -> Result<(), ReadError>;
}

/// A visitor that only reads (for `verify`).
pub struct Discard;

impl Visitor for Discard {
    fn entry(&mut self, _: &EntryInfo, _: &mut dyn Read) -> Result<(), ReadError> {
        Ok(())
    }
}

/// What a complete read found.
#[derive(Debug, Clone)]
pub struct ReadSummary {
    /// The manifest, without its entries.
    pub info: ManifestInfo,
    /// Entries read (besides the manifest).
    pub entries: u64,
    /// Bytes of entry data read.
    pub bytes: u64,
    /// The BLAKE3 of the manifest as read (what a differential's claim
    /// names its full by).
    pub manifest_hash: String,
}

/// Normalizes an archive path and refuses what could escape a target:
/// absolute paths, `..`, NUL bytes, empty paths.
pub fn normalize(path: &[u8]) -> Result<Vec<u8>, &'static str> {
    if path.first() == Some(&b'/') {
        return Err("absolute path");
    }
    if path.contains(&0) {
        return Err("NUL byte in path");
    }
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains .."),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.is_empty() {
        return Err("empty path");
    }
    Ok(out)
}

fn kind_of(t: EntryType) -> Option<Kind> {
    match t {
        EntryType::Regular | EntryType::Continuous => Some(Kind::File),
        EntryType::Directory => Some(Kind::Dir),
        EntryType::Symlink => Some(Kind::Symlink),
        EntryType::Link => Some(Kind::Hardlink),
        _ => None,
    }
}

struct Hashing<'a, R> {
    inner: R,
    hasher: &'a mut blake3::Hasher,
    read: u64,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

fn corrupt(archive: &str, e: &io::Error) -> ReadError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
            ReadError::Corrupt {
                archive: archive.to_owned(),
                detail: e.to_string(),
            }
        }
        _ => ReadError::Io {
            archive: archive.to_owned(),
            source: io::Error::new(e.kind(), e.to_string()),
        },
    }
}

/// The first field in which `computed` differs from `recorded`.
fn difference(recorded: &Entry, computed: &Entry) -> Option<String> {
    if recorded.path != computed.path || recorded.path_hex != computed.path_hex {
        return Some(format!("the manifest lists {:?} here", recorded.path));
    }
    if recorded.kind != computed.kind {
        return Some(format!(
            "type {:?} recorded, {:?} found",
            recorded.kind, computed.kind
        ));
    }
    if recorded.size != computed.size {
        return Some(format!(
            "size {} recorded, {} found",
            recorded.size, computed.size
        ));
    }
    if recorded.dumpdir != computed.dumpdir {
        return Some("its record of the names it holds (dumpdir) differs".into());
    }
    if recorded.sparse != computed.sparse {
        return Some("stored as a sparse file in one and not the other".into());
    }
    if recorded.hash != computed.hash {
        return Some("content hash differs".into());
    }
    if recorded.link != computed.link || recorded.link_hex != computed.link_hex {
        return Some("link target differs".into());
    }
    if recorded.mode != computed.mode {
        return Some(format!(
            "mode {:o} recorded, {:o} found",
            recorded.mode, computed.mode
        ));
    }
    if recorded.mtime != computed.mtime {
        return Some(format!(
            "mtime {} recorded, {} found",
            recorded.mtime, computed.mtime
        ));
    }
    None
}

/// One read of one archive: the entries recomputed so far, and how to name
/// the archive in errors.
struct Pass<'a> {
    archive: &'a str,
    spool: EntrySpool,
    bytes: u64,
}

impl Pass<'_> {
    fn io_err(&self, source: io::Error) -> ReadError {
        ReadError::Io {
            archive: self.archive.to_owned(),
            source,
        }
    }

    fn unsafe_entry(&self, path: &[u8], why: &str) -> ReadError {
        ReadError::Unsafe {
            archive: self.archive.to_owned(),
            path: String::from_utf8_lossy(path).into_owned(),
            why: why.to_owned(),
        }
    }

    /// Checks an entry's header and turns it into what visitors see.
    fn entry_info(&self, raw: RawEntry, path: Vec<u8>) -> Result<EntryInfo, ReadError> {
        let top_ok = path.starts_with(FILES_PREFIX.as_bytes())
            || path.starts_with(MONGO_PREFIX.as_bytes())
            || path == b"files"
            || path == b"mongodb";
        if !top_ok {
            return Err(self.unsafe_entry(&path, "outside files/ and mongodb/"));
        }
        let kind = kind_of(raw.entry_type).ok_or_else(|| {
            self.unsafe_entry(
                &path,
                &format!("unsupported entry type {:?}", raw.entry_type),
            )
        })?;
        let link = match kind {
            Kind::Symlink => {
                let l = raw
                    .link
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| self.unsafe_entry(&path, "symlink without a target"))?;
                if l.contains(&0) {
                    return Err(self.unsafe_entry(&path, "NUL byte in a symlink target"));
                }
                Some(l)
            }
            Kind::Hardlink => {
                let l = raw
                    .link
                    .ok_or_else(|| self.unsafe_entry(&path, "hard link without a target"))?;
                let target = normalize(&l)
                    .map_err(|why| self.unsafe_entry(&path, &format!("hard link target: {why}")))?;
                if !target.starts_with(FILES_PREFIX.as_bytes()) {
                    return Err(self.unsafe_entry(&path, "hard link to outside files/"));
                }
                Some(target)
            }
            _ => None,
        };
        let dumpdir = match (kind, raw.dumpdir) {
            (Kind::Dir, Some(d)) => {
                if super::dumpdir::names(&d).is_none() {
                    return Err(self.unsafe_entry(&path, "a malformed GNU dumpdir record"));
                }
                Some(d)
            }
            (_, Some(_)) => {
                return Err(self.unsafe_entry(&path, "a dumpdir record on a non-directory"));
            }
            (_, None) => None,
        };
        Ok(EntryInfo {
            path,
            kind,
            size: if kind == Kind::File { raw.size } else { 0 },
            mode: raw.mode,
            mtime: raw.mtime.0,
            mtime_nsec: raw.mtime.1,
            uid: raw.uid,
            gid: raw.gid,
            link,
            sparse: if kind == Kind::File { raw.sparse } else { None },
            dumpdir,
        })
    }

    /// Hands one entry to the visitor, hashing its data, and spools its
    /// recomputed record.
    fn visit<R: Read>(
        &mut self,
        info: &EntryInfo,
        data: &mut R,
        visitor: &mut dyn Visitor,
    ) -> Result<(), ReadError> {
        let mut hasher = blake3::Hasher::new();
        let mut hashing = Hashing {
            inner: data,
            hasher: &mut hasher,
            read: 0,
        };
        visitor.entry(info, &mut hashing)?;
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| corrupt(self.archive, &e))?;
        if hashing.read != info.size {
            return Err(ReadError::Corrupt {
                archive: self.archive.to_owned(),
                detail: format!("entry {} is cut short", info.display()),
            });
        }
        self.bytes += info.size;
        let meta = info.borrowed();
        let hash = (info.kind == Kind::File).then(|| hasher.finalize().to_hex().to_string());
        self.spool
            .push(&Entry::from_meta(&meta, hash))
            .map_err(|e| self.io_err(e))
    }

    /// Parses the manifest and compares it, entry by entry, with what was read.
    fn check_manifest(&mut self, manifest: impl Read) -> Result<(ManifestInfo, u64), ReadError> {
        let archive = self.archive;
        let fresh = EntrySpool::new().map_err(|e| self.io_err(e))?;
        let spool = std::mem::replace(&mut self.spool, fresh);
        let mut computed = spool.read_back().map_err(|e| self.io_err(e))?;
        let mut failure: Option<ReadError> = None;
        let parsed = manifest::read_streaming(manifest, |recorded| {
            let found = match computed.next() {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    failure = Some(ReadError::Io {
                        archive: archive.to_owned(),
                        source: e,
                    });
                    return Err("spool".into());
                }
                None => {
                    failure = Some(ReadError::Mismatch {
                        archive: archive.to_owned(),
                        path: recorded.path,
                        what: "listed in the manifest but missing from the archive".into(),
                    });
                    return Err("missing".into());
                }
            };
            if let Some(what) = difference(&recorded, &found) {
                failure = Some(ReadError::Mismatch {
                    archive: archive.to_owned(),
                    path: found.path.clone(),
                    what,
                });
                return Err("mismatch".into());
            }
            Ok(())
        });
        if let Some(f) = failure {
            return Err(f);
        }
        let parsed = parsed.map_err(|detail| ReadError::BadManifest {
            archive: archive.to_owned(),
            detail,
        })?;
        if let Some(extra) = computed.next() {
            let extra = extra.map_err(|e| self.io_err(e))?;
            return Err(ReadError::Mismatch {
                archive: archive.to_owned(),
                path: extra.path,
                what: "in the archive but not in its manifest".into(),
            });
        }
        if parsed.0.format != manifest::FORMAT {
            return Err(ReadError::BadManifest {
                archive: archive.to_owned(),
                detail: format!("unknown format {:?}", parsed.0.format),
            });
        }
        Ok(parsed)
    }
}

/// Reads a whole tar stream, driving `visitor`, and checks it against its
/// manifest. `archive` names the archive in errors.
pub fn read_archive(
    stream: impl Read,
    visitor: &mut dyn Visitor,
    archive: &str,
) -> Result<ReadSummary, ReadError> {
    let mut pass = Pass {
        archive,
        spool: EntrySpool::new().map_err(|source| ReadError::Io {
            archive: archive.to_owned(),
            source,
        })?,
        bytes: 0,
    };
    let mut tar = TarReader::new(stream);
    let mut info: Option<(ManifestInfo, u64)> = None;
    let mut manifest_hash = String::new();
    while let Some(raw) = tar.next_entry().map_err(|e| corrupt(archive, &e))? {
        // The archive root (`./`), as other tar writers store it: nothing to do.
        if raw.entry_type == EntryType::Directory
            && raw.path.iter().all(|&b| b == b'.' || b == b'/')
            && raw.path.first() == Some(&b'.')
        {
            continue;
        }
        let path = normalize(&raw.path).map_err(|why| pass.unsafe_entry(&raw.path, why))?;
        if info.is_some() {
            return Err(ReadError::Corrupt {
                archive: archive.to_owned(),
                detail: format!(
                    "entry {} follows the manifest",
                    String::from_utf8_lossy(&path)
                ),
            });
        }
        if path == MANIFEST_NAME.as_bytes() {
            if kind_of(raw.entry_type) != Some(Kind::File) {
                return Err(pass.unsafe_entry(&path, "the manifest is not a regular file"));
            }
            let mut hasher = blake3::Hasher::new();
            let mut hashing = Hashing {
                inner: tar.data(),
                hasher: &mut hasher,
                read: 0,
            };
            info = Some(pass.check_manifest(&mut hashing)?);
            io::copy(&mut hashing, &mut io::sink()).map_err(|e| corrupt(archive, &e))?;
            manifest_hash = hasher.finalize().to_hex().to_string();
            continue;
        }
        let entry = pass.entry_info(raw, path)?;
        pass.visit(&entry, &mut tar.data(), visitor)?;
    }
    let Some((info, entries)) = info else {
        return Err(ReadError::NoManifest(archive.to_owned()));
    };
    // Drain what follows the tar's end so the outer layers verify their end.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(|e| corrupt(archive, &e))?;
    Ok(ReadSummary {
        info,
        entries,
        bytes: pass.bytes,
        manifest_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_refuses_escapes() {
        assert_eq!(normalize(b"./files/a//b/").unwrap(), b"files/a/b");
        for bad in [
            &b"/etc/passwd"[..],
            b"files/../../x",
            b"..",
            b"",
            b"./",
            b"a\0b",
        ] {
            assert!(
                normalize(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
