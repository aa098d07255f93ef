//! Writing POSIX pax tar, entry by entry.
//!
//! The `tar` crate encodes the 512-byte ustar header (fields, checksum) and is
//! used for that. Its `Builder` is not used: it writes GNU long-name entries
//! where POSIX pax is asked for, and copies data in 8 KiB steps; here an
//! entry's data is written by the caller in whatever chunks it reads, and the
//! extended header carries exactly what ustar cannot hold: long or non-ASCII
//! paths and link targets, sizes of 8 GiB and more, sub-second or
//! out-of-range mtimes, and large ids.
//!
//! A sparse file is written in GNU tar's pax sparse format 1.0, which GNU
//! tar (1.19 and later) and bsdtar extract as sparse files: `GNU.sparse.*`
//! records in the extended header, a placeholder name in the ustar header,
//! and the data block starting with the map (a count, then offset and
//! length of each data segment, in decimal lines, padded to 512 bytes),
//! followed by the segments' bytes. Holes take no room.

use std::io::{self, Write};

use tar::{EntryType, Header};

const BLOCK: u64 = 512;
/// ustar's numeric fields hold up to 11 octal digits (8 GiB - 1).
const USTAR_MAX: u64 = 0o77777777777;
const USTAR_ID_MAX: u64 = 0o7777777;

/// The kind of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (stored as a link, never followed).
    Symlink,
    /// A hard link to an earlier entry.
    Hardlink,
}

/// One entry's metadata: what a tar header (with its extensions) says.
/// `B` holds the path and link: borrowed bytes when written
/// ([`EntryMeta`]), owned when read (`crate::archive::reader::EntryInfo`).
#[derive(Debug, Clone)]
pub struct EntryHeader<B> {
    /// Path inside the archive, `/`-separated, no leading `/`; directories
    /// without the trailing slash (it is added). When read, normalized.
    pub path: B,
    /// Kind.
    pub kind: Kind,
    /// Data size (files only): the bytes that follow the header.
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
    /// Link target (symlinks, hard links).
    pub link: Option<B>,
    /// For a sparse file, its real size; then `size` is the bytes stored
    /// (the map block and the data segments).
    pub sparse: Option<u64>,
    /// For a directory of a differential archive, its GNU `dumpdir`
    /// record (the names it holds; see `crate::index`).
    pub dumpdir: Option<B>,
}

/// An entry's header as it is written.
pub type EntryMeta<'a> = EntryHeader<&'a [u8]>;

impl<B: AsRef<[u8]>> EntryHeader<B> {
    /// The same header, borrowing its path and link.
    pub fn borrowed(&self) -> EntryMeta<'_> {
        EntryHeader {
            path: self.path.as_ref(),
            kind: self.kind,
            size: self.size,
            mode: self.mode,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            uid: self.uid,
            gid: self.gid,
            link: self.link.as_ref().map(AsRef::as_ref),
            sparse: self.sparse,
            dumpdir: self.dumpdir.as_ref().map(AsRef::as_ref),
        }
    }
}

/// The map of a sparse file, as it starts its data block: the number of
/// segments, each segment's offset and length, in decimal lines, padded
/// with NULs to a multiple of 512 bytes.
pub fn sparse_map_block(segments: &[(u64, u64)]) -> Vec<u8> {
    let mut out = format!("{}\n", segments.len()).into_bytes();
    for (offset, len) in segments {
        out.extend_from_slice(format!("{offset}\n{len}\n").as_bytes());
    }
    let pad = (BLOCK - out.len() as u64 % BLOCK) % BLOCK;
    out.resize(out.len() + pad as usize, 0);
    out
}

/// A tar stream being written into `W`.
pub struct TarEncoder<W: Write> {
    out: W,
    /// Bytes of the current entry's data still expected.
    remaining: u64,
    /// Padding owed after the current entry's data.
    pad: u64,
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "%d %s=%s\n", where the length counts itself.
    let body = key.len() + value.len() + 3; // space, '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn fits_ustar_name(path: &[u8]) -> bool {
    path.len() <= 100 && path.is_ascii()
}

fn set_name_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

impl<W: Write> TarEncoder<W> {
    /// Starts a tar stream.
    pub fn new(out: W) -> Self {
        TarEncoder {
            out,
            remaining: 0,
            pad: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    /// Writes the header(s) of an entry. For files, exactly `meta.size` bytes
    /// of data must follow through [`TarEncoder::data`].
    pub fn header(&mut self, meta: &EntryMeta<'_>) -> io::Result<()> {
        assert_eq!(self.remaining, 0, "previous entry's data not complete");
        let mut path = meta.path.to_vec();
        if meta.kind == Kind::Dir && !path.ends_with(b"/") {
            path.push(b'/');
        }
        let size = if meta.kind == Kind::File {
            meta.size
        } else {
            0
        };

        let mut pax = Vec::new();
        // A sparse file's ustar name is a placeholder that old readers
        // extract as a plain file (map and data); its real name and size
        // are in the GNU.sparse records.
        let sparse_name = meta.sparse.map(|_| {
            let base: Vec<u8> = path
                .rsplit(|&b| b == b'/')
                .find(|s| !s.is_empty())
                .unwrap_or(b"x")
                .iter()
                .copied()
                .filter(u8::is_ascii)
                .take(80)
                .collect();
            let mut name = b"GNUSparseFile.0/".to_vec();
            name.extend(base);
            name
        });
        if let Some(record) = meta.dumpdir {
            // GNU tar's incremental record, as it writes it in pax.
            pax_record(&mut pax, "GNU.dumpdir", record);
        }
        if let Some(realsize) = meta.sparse {
            pax_record(&mut pax, "GNU.sparse.major", b"1");
            pax_record(&mut pax, "GNU.sparse.minor", b"0");
            pax_record(&mut pax, "GNU.sparse.name", &path);
            pax_record(
                &mut pax,
                "GNU.sparse.realsize",
                realsize.to_string().as_bytes(),
            );
        }
        let long_link = meta.link.filter(|l| !fits_ustar_name(l));
        let binary = [Some(&path[..]), long_link]
            .into_iter()
            .flatten()
            .any(|p| std::str::from_utf8(p).is_err());
        if binary && (!fits_ustar_name(&path) || long_link.is_some()) {
            // Names that are not UTF-8 are kept byte for byte, as GNU tar does.
            pax_record(&mut pax, "hdrcharset", b"BINARY");
        }
        if !fits_ustar_name(&path) && sparse_name.is_none() {
            pax_record(&mut pax, "path", &path);
        }
        if let Some(link) = long_link {
            pax_record(&mut pax, "linkpath", link);
        }
        if size > USTAR_MAX {
            pax_record(&mut pax, "size", size.to_string().as_bytes());
        }
        if meta.mtime_nsec != 0 || meta.mtime < 0 || meta.mtime as u64 > USTAR_MAX {
            let value = if meta.mtime_nsec == 0 {
                meta.mtime.to_string()
            } else if meta.mtime >= 0 {
                format!("{}.{:09}", meta.mtime, meta.mtime_nsec)
            } else {
                // -1.25 s is mtime -2 and 750_000_000 ns.
                let whole = meta.mtime + 1;
                let frac = 1_000_000_000 - meta.mtime_nsec;
                if whole == 0 {
                    format!("-0.{frac:09}")
                } else {
                    format!("{whole}.{frac:09}")
                }
            };
            let value = if value.contains('.') {
                value.trim_end_matches('0').trim_end_matches('.')
            } else {
                &value
            };
            pax_record(&mut pax, "mtime", value.as_bytes());
        }
        if meta.uid > USTAR_ID_MAX {
            pax_record(&mut pax, "uid", meta.uid.to_string().as_bytes());
        }
        if meta.gid > USTAR_ID_MAX {
            pax_record(&mut pax, "gid", meta.gid.to_string().as_bytes());
        }

        if !pax.is_empty() {
            let mut h = Header::new_ustar();
            let base = path
                .rsplit(|&b| b == b'/')
                .find(|s| !s.is_empty())
                .unwrap_or(b"x");
            let mut name = b"PaxHeaders/".to_vec();
            name.extend(base.iter().copied().filter(u8::is_ascii).take(80));
            set_name_field(&mut h.as_old_mut().name, &name);
            h.set_entry_type(EntryType::XHeader);
            h.set_size(pax.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(meta.mtime.clamp(0, USTAR_MAX as i64) as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            self.put(h.as_bytes())?;
            self.put(&pax)?;
            let pad = (BLOCK - pax.len() as u64 % BLOCK) % BLOCK;
            self.put(&[0u8; 512][..pad as usize])?;
        }

        let mut h = Header::new_ustar();
        // With a pax path, the ustar name is only a hint for old readers.
        if let Some(name) = &sparse_name {
            set_name_field(&mut h.as_old_mut().name, name);
        } else if fits_ustar_name(&path) {
            set_name_field(&mut h.as_old_mut().name, &path);
        } else {
            let hint: Vec<u8> = path.iter().copied().filter(u8::is_ascii).collect();
            set_name_field(
                &mut h.as_old_mut().name,
                &hint[hint.len().saturating_sub(99)..],
            );
        }
        if let Some(link) = meta.link {
            let hint: Vec<u8> = link
                .iter()
                .copied()
                .filter(u8::is_ascii)
                .take(100)
                .collect();
            set_name_field(&mut h.as_old_mut().linkname, &hint);
        }
        h.set_entry_type(match meta.kind {
            Kind::File => EntryType::Regular,
            Kind::Dir => EntryType::Directory,
            Kind::Symlink => EntryType::Symlink,
            Kind::Hardlink => EntryType::Link,
        });
        h.set_size(size.min(USTAR_MAX));
        h.set_mode(meta.mode & 0o7777);
        h.set_mtime(meta.mtime.clamp(0, USTAR_MAX as i64) as u64);
        h.set_uid(meta.uid.min(USTAR_ID_MAX));
        h.set_gid(meta.gid.min(USTAR_ID_MAX));
        h.set_cksum();
        self.put(h.as_bytes())?;
        self.remaining = size;
        self.pad = (BLOCK - size % BLOCK) % BLOCK;
        if size == 0 {
            self.pad = 0;
        }
        Ok(())
    }

    /// Writes part of the current entry's data.
    pub fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        assert!(
            bytes.len() as u64 <= self.remaining,
            "more data than the header announced"
        );
        self.put(bytes)?;
        self.remaining -= bytes.len() as u64;
        if self.remaining == 0 && self.pad > 0 {
            let pad = self.pad as usize;
            self.pad = 0;
            self.put(&[0u8; 512][..pad])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        assert_eq!(self.remaining, 0, "last entry's data not complete");
        self.put(&[0u8; 1024])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn meta<'a>(path: &'a [u8], kind: Kind, size: u64) -> EntryMeta<'a> {
        EntryMeta {
            path,
            kind,
            size,
            mode: 0o640,
            mtime: 1_764_201_600,
            mtime_nsec: 123_456_789,
            uid: 1000,
            gid: 1000,
            link: None,
            sparse: None,
            dumpdir: None,
        }
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for len in [1, 5, 90, 95, 96, 97, 990, 995, 996] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &vec![b'a'; len]);
            let text = String::from_utf8(out.clone()).unwrap();
            let n: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(n, out.len(), "value length {len}");
        }
    }

    #[test]
    fn the_tar_crate_reads_what_we_write() {
        let long = "d/".repeat(80) + "名前 with spaces.txt";
        let mut enc = TarEncoder::new(Vec::new());
        enc.header(&meta(long.as_bytes(), Kind::File, 5)).unwrap();
        enc.data(b"hel").unwrap();
        enc.data(b"lo").unwrap();
        enc.header(&meta(b"files/dir", Kind::Dir, 0)).unwrap();
        let mut link = meta(b"files/link", Kind::Symlink, 0);
        let target = "../".repeat(40) + "target";
        link.link = Some(target.as_bytes());
        enc.header(&link).unwrap();
        let bytes = enc.finish().unwrap();

        let mut archive = tar::Archive::new(&bytes[..]);
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), long);
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let pax = e.pax_extensions().unwrap().unwrap();
        let mtime = pax
            .filter_map(Result::ok)
            .find(|x| x.key() == Ok("mtime"))
            .unwrap();
        assert_eq!(mtime.value().unwrap(), "1764201600.123456789");
        let e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), "files/dir/");
        assert_eq!(e.header().entry_type(), EntryType::Directory);
        let e = entries.next().unwrap().unwrap();
        assert_eq!(e.link_name().unwrap().unwrap().to_str().unwrap(), target);
        assert!(entries.next().is_none());
    }

    /// A file over 8 GiB: the header is written into a sparse file followed
    /// by a hole of the announced size, and GNU tar lists it with its size.
    #[test]
    fn gnu_tar_reads_sizes_over_8_gib() {
        use std::io::{Seek, SeekFrom};
        let size: u64 = (8 << 30) + 4097;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.tar");
        let mut file = std::fs::File::create(&path).unwrap();
        {
            let mut enc = TarEncoder::new(&mut file);
            enc.header(&meta(b"files/big.bin", Kind::File, size))
                .unwrap();
        }
        let padded = size.div_ceil(512) * 512;
        file.seek(SeekFrom::Current(padded as i64)).unwrap();
        file.write_all(&[0u8; 1024]).unwrap();
        drop(file);
        let out = std::process::Command::new("tar")
            .args(["--utc", "-tvf"])
            .arg(&path)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(listing.contains(&size.to_string()), "{listing}");
        assert!(listing.contains("files/big.bin"), "{listing}");
        // The tar crate agrees.
        let f = std::fs::File::open(&path).unwrap();
        let mut archive = tar::Archive::new(f);
        let e = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.size(), size);
    }

    #[test]
    fn negative_and_fractional_mtimes() {
        let mut m = meta(b"files/old", Kind::File, 0);
        m.mtime = -2;
        m.mtime_nsec = 750_000_000;
        let mut enc = TarEncoder::new(Vec::new());
        enc.header(&m).unwrap();
        let bytes = enc.finish().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("mtime=-1.25\n"), "{text}");
    }
}
