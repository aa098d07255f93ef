//! Reading a tar stream with a cap on everything it declares.
//!
//! The `tar` crate decodes the 512-byte headers and pax records and is used
//! for that. Its `Entries` iterator is not: it reads a pax header or a GNU
//! long name into memory at whatever size the header declares, so a small
//! compressed archive could ask for gigabytes. Here the extension headers
//! are read only up to [`MAX_EXTENSION`] and names up to [`MAX_NAME`];
//! anything larger is refused before it is read. Entry data is never held:
//! it is handed out as a `Read` of exactly the declared size.

use std::io::{self, Read};

use tar::{EntryType, Header, PaxExtensions};

/// The largest pax extended header (`x` or `g`) accepted.
pub const MAX_EXTENSION: u64 = 1 << 20;
/// The longest path or link target accepted (Linux allows 4096 bytes).
pub const MAX_NAME: usize = 64 << 10;
const BLOCK: u64 = 512;

/// One entry's header, with its pax and GNU extensions applied.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The path as stored (not yet normalized).
    pub path: Vec<u8>,
    /// The link target (symlinks and hard links).
    pub link: Option<Vec<u8>>,
    /// The header's type.
    pub entry_type: EntryType,
    /// Bytes of data that follow the header.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// A sparse file (GNU pax format 1.0): its real size; the data then
    /// starts with the map.
    pub sparse: Option<u64>,
    /// GNU tar's incremental record of a directory (`GNU.dumpdir`).
    pub dumpdir: Option<Vec<u8>>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses a pax `mtime` value (`secs[.frac]`, possibly negative).
pub fn parse_pax_time(v: &str) -> Option<(i64, u32)> {
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let whole: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = &frac[..frac.len().min(9)];
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

/// What extension headers say about the entry that follows them.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<(i64, u32)>,
    uid: Option<u64>,
    gid: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_size: Option<u64>,
    sparse_version: Option<(String, String)>,
    dumpdir: Option<Vec<u8>>,
    seen_pax: bool,
}

impl Pending {
    fn apply_pax(&mut self, data: &[u8]) -> io::Result<()> {
        if self.seen_pax {
            return Err(invalid("two pax headers describe the same entry"));
        }
        self.seen_pax = true;
        for ext in PaxExtensions::new(data) {
            let ext = ext.map_err(|_| invalid("malformed pax record"))?;
            let key = ext.key().map_err(|_| invalid("pax key is not UTF-8"))?;
            let value = ext.value_bytes();
            let text = || std::str::from_utf8(value).map_err(|_| invalid("pax value is not UTF-8"));
            let number = || -> io::Result<u64> {
                text()?
                    .parse()
                    .map_err(|_| invalid(format!("pax {key} is not a number")))
            };
            match key {
                "path" => self.path = Some(value.to_vec()),
                "linkpath" => self.link = Some(value.to_vec()),
                "size" => self.size = Some(number()?),
                "uid" => self.uid = Some(number()?),
                "gid" => self.gid = Some(number()?),
                "mtime" => {
                    self.mtime = Some(
                        parse_pax_time(text()?).ok_or_else(|| invalid("pax mtime is malformed"))?,
                    );
                }
                "GNU.sparse.name" => self.sparse_name = Some(value.to_vec()),
                "GNU.dumpdir" => self.dumpdir = Some(value.to_vec()),
                "GNU.sparse.realsize" => self.sparse_size = Some(number()?),
                "GNU.sparse.major" => {
                    let v = self.sparse_version.get_or_insert_default();
                    v.0 = text()?.to_owned();
                }
                "GNU.sparse.minor" => {
                    let v = self.sparse_version.get_or_insert_default();
                    v.1 = text()?.to_owned();
                }
                // The 0.x sparse formats keep their map in the header.
                "GNU.sparse.size"
                | "GNU.sparse.numblocks"
                | "GNU.sparse.offset"
                | "GNU.sparse.numbytes"
                | "GNU.sparse.map" => {
                    return Err(invalid(
                        "a sparse file in GNU's 0.x pax format, which cofre does not read",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A tar stream read entry by entry.
pub struct TarReader<R> {
    inner: R,
    /// Data of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
    ended: bool,
}

fn read_block(r: &mut impl Read, buf: &mut [u8; BLOCK as usize]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(invalid("the tar stream ends inside a header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn checksum_ok(h: &Header) -> bool {
    let bytes = h.as_bytes();
    let sum: u32 = bytes[..148]
        .iter()
        .chain(&bytes[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * 32;
    h.cksum().is_ok_and(|c| c == sum)
}

impl<R: Read> TarReader<R> {
    /// Reads tar from `inner`.
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            pad: 0,
            ended: false,
        }
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return Err(invalid("the tar stream ends inside an entry"));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Reads an extension header's data, refusing it above `max` bytes.
    fn extension(&mut self, size: u64, max: u64, what: &str) -> io::Result<Vec<u8>> {
        if size > max {
            return Err(invalid(format!(
                "a {what} declares {size} bytes, more than the {max} accepted"
            )));
        }
        let mut data = vec![0u8; size as usize];
        self.inner.read_exact(&mut data).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("the tar stream ends inside an extension header")
            } else {
                e
            }
        })?;
        self.skip((BLOCK - size % BLOCK) % BLOCK)?;
        Ok(data)
    }

    /// The next entry, skipping what is left of the previous one's data.
    /// `None` at the end-of-archive marker (or a clean end of the stream).
    pub fn next_entry(&mut self) -> io::Result<Option<RawEntry>> {
        if self.ended {
            return Ok(None);
        }
        let leftover = self.remaining + self.pad;
        self.remaining = 0;
        self.pad = 0;
        self.skip(leftover)?;
        let mut pending = Pending::default();
        let mut block = [0u8; BLOCK as usize];
        loop {
            if !read_block(&mut self.inner, &mut block)? {
                if pending.seen_pax || pending.path.is_some() || pending.link.is_some() {
                    return Err(invalid("extension headers without the entry they describe"));
                }
                self.ended = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                self.ended = true;
                return Ok(None);
            }
            let header = Header::from_byte_slice(&block);
            if !checksum_ok(header) {
                return Err(invalid("a tar header's checksum does not match"));
            }
            let size = header.entry_size()?;
            let entry_type = header.entry_type();
            match entry_type {
                EntryType::XHeader => {
                    let data = self.extension(size, MAX_EXTENSION, "pax header")?;
                    pending.apply_pax(&data)?;
                }
                EntryType::XGlobalHeader => {
                    self.extension(size, MAX_EXTENSION, "pax global header")?;
                }
                EntryType::GNULongName | EntryType::GNULongLink => {
                    let mut data = self.extension(size, MAX_NAME as u64 + 1, "GNU long name")?;
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    if entry_type == EntryType::GNULongName {
                        pending.path = pending.path.or(Some(data));
                    } else {
                        pending.link = pending.link.or(Some(data));
                    }
                }
                _ => return self.entry(header, entry_type, size, pending).map(Some),
            }
        }
    }

    fn entry(
        &mut self,
        header: &Header,
        entry_type: EntryType,
        size: u64,
        pending: Pending,
    ) -> io::Result<RawEntry> {
        let sparse = match (&pending.sparse_version, pending.sparse_size) {
            (None, None) => None,
            (Some((major, minor)), Some(real)) if major == "1" && minor == "0" => Some(real),
            _ => {
                return Err(invalid(
                    "a sparse file's header is incomplete or of a format cofre does not read",
                ));
            }
        };
        if sparse.is_some() && pending.sparse_name.is_none() {
            return Err(invalid("a sparse file without its name"));
        }
        let path = match pending.sparse_name.or(pending.path) {
            Some(p) => p,
            None => header.path_bytes().into_owned(),
        };
        let link = match pending.link {
            Some(l) => Some(l),
            None => header.link_name_bytes().map(|l| l.into_owned()),
        };
        if path.len() > MAX_NAME || link.as_ref().is_some_and(|l| l.len() > MAX_NAME) {
            return Err(invalid(format!(
                "a path or link target is longer than {MAX_NAME} bytes"
            )));
        }
        let size = pending.size.unwrap_or(size);
        let mtime = match pending.mtime {
            Some(t) => t,
            None => (header.mtime().unwrap_or(0) as i64, 0),
        };
        self.remaining = size;
        self.pad = (BLOCK - size % BLOCK) % BLOCK;
        Ok(RawEntry {
            path,
            link,
            entry_type,
            size,
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            mtime,
            uid: pending.uid.unwrap_or_else(|| header.uid().unwrap_or(0)),
            gid: pending.gid.unwrap_or_else(|| header.gid().unwrap_or(0)),
            sparse,
            dumpdir: pending.dumpdir,
        })
    }

    /// The current entry's data; reading past its end gives end of file.
    pub fn data(&mut self) -> Data<'_, R> {
        Data { tar: self }
    }

    /// The stream after the end-of-archive marker.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The data of the entry just returned by [`TarReader::next_entry`].
pub struct Data<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.tar.remaining.min(usize::MAX as u64) as usize);
        let n = self.tar.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the tar stream ends inside an entry's data",
            ));
        }
        self.tar.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &[u8], kind: EntryType, size: u64) -> [u8; 512] {
        let mut h = Header::new_ustar();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        *h.as_bytes()
    }

    fn pad(v: &mut Vec<u8>) {
        while !v.len().is_multiple_of(512) {
            v.push(0);
        }
    }

    #[test]
    fn reads_pax_names_and_sizes() {
        let mut t = Vec::new();
        let mut pax = Vec::new();
        let long = "p/".repeat(200) + "file";
        let rec = format!("path={long}\n");
        let len = rec.len() + 4;
        pax.extend_from_slice(format!("{len} {rec}").as_bytes());
        pax.extend_from_slice(b"30 mtime=1700000000.123456789\n");
        t.extend_from_slice(&header(b"pax", EntryType::XHeader, pax.len() as u64));
        t.extend_from_slice(&pax);
        pad(&mut t);
        t.extend_from_slice(&header(b"short", EntryType::Regular, 3));
        t.extend_from_slice(b"abc");
        pad(&mut t);
        t.extend_from_slice(&[0u8; 1024]);
        let mut r = TarReader::new(&t[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path, long.as_bytes());
        assert_eq!(e.mtime, (1_700_000_000, 123_456_789));
        let mut data = Vec::new();
        r.data().read_to_end(&mut data).unwrap();
        assert_eq!(data, b"abc");
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn refuses_oversized_extensions_before_reading_them() {
        for kind in [
            EntryType::XHeader,
            EntryType::XGlobalHeader,
            EntryType::GNULongName,
        ] {
            let mut t = header(b"big", kind, 1 << 40).to_vec();
            t.extend_from_slice(&[b'x'; 4096]);
            let err = TarReader::new(&t[..]).next_entry().unwrap_err();
            assert!(err.to_string().contains("more than"), "{kind:?}: {err}");
        }
    }

    #[test]
    fn bad_checksums_and_truncation_are_errors() {
        let mut h = header(b"f", EntryType::Regular, 10);
        h[0] = b'g';
        assert!(TarReader::new(&h[..]).next_entry().is_err());
        let h = header(b"f", EntryType::Regular, 10);
        let mut r = TarReader::new(&h[..300]);
        assert!(r.next_entry().is_err());
        let mut t = h.to_vec();
        t.extend_from_slice(b"abc");
        let mut r = TarReader::new(&t[..]);
        r.next_entry().unwrap().unwrap();
        let mut data = Vec::new();
        assert!(r.data().read_to_end(&mut data).is_err());
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
        assert_eq!(parse_pax_time("1.2x"), None);
    }
}
