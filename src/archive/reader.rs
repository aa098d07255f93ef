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

/// One entry as read from the tar.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    /// Normalized path inside the archive (no `./`, no trailing `/`).
    pub path: Vec<u8>,
    /// Kind.
    pub kind: Kind,
    /// Data size.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds.
    pub mtime_nsec: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Link target: for symlinks as stored, for hard links normalized.
    pub link: Option<Vec<u8>>,
}

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

/// Parses a pax `mtime` value (`secs[.frac]`, possibly negative).
fn parse_pax_time(v: &str) -> Option<(i64, u32)> {
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let whole: i64 = whole.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nsec: u32 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    if !neg {
        return Some((whole, nsec));
    }
    if nsec == 0 {
        Some((-whole, 0))
    } else {
        Some((-whole - 1, 1_000_000_000 - nsec))
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

/// Reads a whole tar stream, driving `visitor`, and checks it against its
/// manifest. `archive` names the archive in errors.
pub fn read_archive(
    stream: impl Read,
    visitor: &mut dyn Visitor,
    archive: &str,
) -> Result<ReadSummary, ReadError> {
    let io_err = |source| ReadError::Io {
        archive: archive.to_owned(),
        source,
    };
    let unsafe_entry = |path: &[u8], why: &str| ReadError::Unsafe {
        archive: archive.to_owned(),
        path: String::from_utf8_lossy(path).into_owned(),
        why: why.to_owned(),
    };
    let mut spool = EntrySpool::new().map_err(io_err)?;
    let mut tar = tar::Archive::new(stream);
    let mut bytes = 0u64;
    let mut info: Option<(ManifestInfo, u64)> = None;
    {
        let entries = tar.entries().map_err(|e| corrupt(archive, &e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| corrupt(archive, &e))?;
            let etype = entry.header().entry_type();
            if matches!(etype, EntryType::XGlobalHeader) {
                continue;
            }
            let raw_path = entry.path_bytes().into_owned();
            // The archive root (`./`), as other tar writers store it: nothing to do.
            if etype == EntryType::Directory
                && raw_path.iter().all(|&b| b == b'.' || b == b'/')
                && raw_path.first() == Some(&b'.')
            {
                continue;
            }
            let path = normalize(&raw_path).map_err(|why| unsafe_entry(&raw_path, why))?;
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
                if kind_of(etype) != Some(Kind::File) {
                    return Err(unsafe_entry(&path, "the manifest is not a regular file"));
                }
                let mut computed =
                    std::mem::replace(&mut spool, EntrySpool::new().map_err(io_err)?)
                        .read_back()
                        .map_err(io_err)?;
                let mut failure: Option<ReadError> = None;
                let parsed = manifest::read_streaming(&mut entry, |recorded| {
                    let found = match computed.next() {
                        Some(Ok(e)) => e,
                        Some(Err(e)) => {
                            failure = Some(io_err(e));
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
                    let extra = extra.map_err(io_err)?;
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
                info = Some(parsed);
                continue;
            }
            let top_ok = path.starts_with(FILES_PREFIX.as_bytes())
                || path.starts_with(MONGO_PREFIX.as_bytes())
                || path == b"files"
                || path == b"mongodb";
            if !top_ok {
                return Err(unsafe_entry(&path, "outside files/ and mongodb/"));
            }
            let kind = kind_of(etype)
                .ok_or_else(|| unsafe_entry(&path, &format!("unsupported entry type {etype:?}")))?;
            let header = entry.header();
            let mut mtime = (header.mtime().unwrap_or(0) as i64, 0u32);
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            let uid = header.uid().unwrap_or(0);
            let gid = header.gid().unwrap_or(0);
            let size = if kind == Kind::File { entry.size() } else { 0 };
            if let Ok(Some(pax)) = entry.pax_extensions() {
                for ext in pax.flatten() {
                    if ext.key() == Ok("mtime")
                        && let Some(t) = ext.value().ok().and_then(parse_pax_time)
                    {
                        mtime = t;
                    }
                }
            }
            let link = match kind {
                Kind::Symlink => Some(
                    entry
                        .link_name_bytes()
                        .ok_or_else(|| unsafe_entry(&path, "symlink without a target"))?
                        .into_owned(),
                ),
                Kind::Hardlink => {
                    let raw = entry
                        .link_name_bytes()
                        .ok_or_else(|| unsafe_entry(&path, "hard link without a target"))?
                        .into_owned();
                    let target = normalize(&raw)
                        .map_err(|why| unsafe_entry(&path, &format!("hard link target: {why}")))?;
                    if !target.starts_with(FILES_PREFIX.as_bytes()) {
                        return Err(unsafe_entry(&path, "hard link to outside files/"));
                    }
                    Some(target)
                }
                _ => None,
            };
            let info_entry = EntryInfo {
                path,
                kind,
                size,
                mode,
                mtime: mtime.0,
                mtime_nsec: mtime.1,
                uid,
                gid,
                link,
            };
            let mut hasher = blake3::Hasher::new();
            let mut data = Hashing {
                inner: &mut entry,
                hasher: &mut hasher,
                read: 0,
            };
            visitor.entry(&info_entry, &mut data)?;
            io::copy(&mut data, &mut io::sink()).map_err(|e| corrupt(archive, &e))?;
            if data.read != size {
                return Err(ReadError::Corrupt {
                    archive: archive.to_owned(),
                    detail: format!("entry {} is cut short", info_entry.display()),
                });
            }
            bytes += size;
            let meta = super::tarenc::EntryMeta {
                path: &info_entry.path,
                kind,
                size,
                mode,
                mtime: mtime.0,
                mtime_nsec: mtime.1,
                uid,
                gid,
                link: info_entry.link.as_deref(),
            };
            let hash = (kind == Kind::File).then(|| hasher.finalize().to_hex().to_string());
            spool.push(&Entry::from_meta(&meta, hash)).map_err(io_err)?;
        }
    }
    let Some((info, entries)) = info else {
        return Err(ReadError::NoManifest(archive.to_owned()));
    };
    // Drain what follows the tar's end so the outer layers verify their end.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(|e| corrupt(archive, &e))?;
    Ok(ReadSummary {
        info,
        entries,
        bytes,
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

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time("1764201600.5"),
            Some((1_764_201_600, 500_000_000))
        );
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
