//! The capture's spool: the oplog entries read since the last slice, made
//! durable (fdatasync) at least every second, so a crash or `kill -9` loses
//! at most the last second of capture, and a restart resumes after the last
//! entry it holds.
//!
//! The spool lives in `BACKUP_DIR`, which someone else may write to, and
//! what it holds becomes a signed slice: so every frame carries a MAC
//! chained over everything before it, keyed with a key derived from the
//! signing key (which lives elsewhere). A spool whose header does not
//! verify is set aside; a torn or altered tail is cut at the last frame
//! that verifies.
//!
//! Layout: a header (`COFRE-OPLOG-SPOOL1`, the timestamp the spool
//! continues from, its MAC), then frames: length (u32 LE), the entry's
//! BSON, the MAC of (previous MAC, length, BSON).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Ts;

/// The spool's file name in the oplog directory.
pub const FILE: &str = "spool";
const MAGIC: &[u8] = b"COFRE-OPLOG-SPOOL1\n";
/// The key derivation context of the spool's MAC.
pub const KEY_CONTEXT: &str = "cofre 2026 oplog spool MAC v1";
/// The largest entry (MongoDB's document limit, with room).
const MAX_ENTRY: usize = 17 << 20;

type Mac = [u8; 32];

fn mac(key: &[u8; 32], prev: &Mac, len: &[u8], body: &[u8]) -> Mac {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(prev);
    h.update(len);
    h.update(body);
    *h.finalize().as_bytes()
}

/// The timestamp of an oplog entry (its `ts` field).
pub fn entry_ts(raw: &[u8]) -> Option<Ts> {
    let doc = mongodb::bson::RawDocument::from_bytes(raw).ok()?;
    doc.get_timestamp("ts").ok().map(Ts::from)
}

/// What opening a spool found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Entries that verified.
    pub entries: u64,
    /// Bytes cut from a torn or altered tail.
    pub cut: u64,
    /// The whole spool was set aside (its header did not verify).
    pub rejected: Option<PathBuf>,
}

/// The spool, open for appending.
pub struct Spool {
    path: PathBuf,
    key: [u8; 32],
    out: BufWriter<File>,
    mac: Mac,
    after: Ts,
    last: Option<Ts>,
    /// How many of the last entries share the last timestamp.
    last_run: u64,
    entries: u64,
    bytes: u64,
    dirty: bool,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Spool({}, {} entries)",
            self.path.display(),
            self.entries
        )
    }
}

fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(crate::store::NOFOLLOW)
        .open(path)
}

fn header(key: &[u8; 32], after: Ts) -> (Vec<u8>, Mac) {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&after.t.to_le_bytes());
    h.extend_from_slice(&after.i.to_le_bytes());
    let m = mac(key, &[0; 32], &[], &h);
    h.extend_from_slice(&m);
    (h, m)
}

/// Reads and checks frames from `input` (after the header), calling `each`
/// with every entry that verifies; returns the byte length that verified
/// and the last MAC.
fn read_frames(
    input: &mut impl Read,
    key: &[u8; 32],
    mut mac_so_far: Mac,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(u64, Mac)> {
    let mut good = 0u64;
    let mut len = [0u8; 4];
    let mut body = Vec::new();
    let mut tag = [0u8; 32];
    loop {
        if !read_full(input, &mut len)? {
            break;
        }
        let n = u32::from_le_bytes(len) as usize;
        if !(5..=MAX_ENTRY).contains(&n) {
            break;
        }
        body.resize(n, 0);
        if !read_full(input, &mut body)? || !read_full(input, &mut tag)? {
            break;
        }
        let want = mac(key, &mac_so_far, &len, &body);
        if want != tag {
            break;
        }
        each(&body)?;
        mac_so_far = want;
        good += 4 + n as u64 + 32;
    }
    Ok((good, mac_so_far))
}

/// Fills `buf`; false when the input ends first (a torn frame).
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl Spool {
    /// Opens the spool in `dir`: checks what it holds (cutting a torn or
    /// altered tail), or makes a new one continuing from `after` when there
    /// is none (or its header does not verify: it is set aside).
    pub fn open(dir: &Path, key: [u8; 32], after: Ts) -> io::Result<(Spool, Recovered)> {
        let path = dir.join(FILE);
        let mut recovered = Recovered::default();
        match open_rw(&path, false) {
            Ok(mut file) => {
                if let Some(spool) = Self::check(&path, &mut file, key, &mut recovered)? {
                    return Ok((spool, recovered));
                }
                let aside = dir.join(format!(
                    "spool.rejected-{}",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S")
                ));
                std::fs::rename(&path, &aside)?;
                recovered.rejected = Some(aside);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok((Self::create(&path, key, after)?, recovered))
    }

    /// The spool in `file`, when its header verifies.
    fn check(
        path: &Path,
        file: &mut File,
        key: [u8; 32],
        recovered: &mut Recovered,
    ) -> io::Result<Option<Spool>> {
        let size = file.metadata()?.len();
        let mut input = BufReader::with_capacity(1 << 16, &mut *file);
        let mut head = vec![0u8; MAGIC.len() + 8 + 32];
        if !read_full(&mut input, &mut head)? || !head.starts_with(MAGIC) {
            return Ok(None);
        }
        let after = Ts {
            t: u32::from_le_bytes(head[MAGIC.len()..MAGIC.len() + 4].try_into().expect("4")),
            i: u32::from_le_bytes(
                head[MAGIC.len() + 4..MAGIC.len() + 8]
                    .try_into()
                    .expect("4"),
            ),
        };
        let (expected, head_mac) = header(&key, after);
        if expected != head {
            return Ok(None);
        }
        let (mut last, mut last_run, mut entries, mut bytes) = (None, 0u64, 0u64, 0u64);
        let (good, last_mac) = read_frames(&mut input, &key, head_mac, |body| {
            let ts = entry_ts(body);
            if ts.is_some() && ts == last {
                last_run += 1;
            } else if ts.is_some() {
                last_run = 1;
            }
            last = ts.or(last);
            entries += 1;
            bytes += body.len() as u64;
            Ok(())
        })?;
        drop(input);
        let end = head.len() as u64 + good;
        if end < size {
            file.set_len(end)?;
            file.sync_data()?;
            recovered.cut = size - end;
        }
        file.seek(SeekFrom::Start(end))?;
        recovered.entries = entries;
        Ok(Some(Spool {
            path: path.to_path_buf(),
            key,
            out: BufWriter::with_capacity(1 << 20, file.try_clone()?),
            mac: last_mac,
            after,
            last,
            last_run,
            entries,
            bytes,
            dirty: false,
        }))
    }

    /// A new spool continuing from `after`, written whole to a temporary
    /// file and renamed over the old one (which is then gone).
    fn create(path: &Path, key: [u8; 32], after: Ts) -> io::Result<Spool> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let (head, head_mac) = header(&key, after);
        let mut tmp = crate::store::temp_in(dir, ".spool", 0o600)?;
        tmp.write_all(&head)?;
        tmp.as_file().sync_all()?;
        let file = tmp.persist(path).map_err(|e| e.error)?;
        File::open(dir)?.sync_all()?;
        let mut file = file;
        file.seek(SeekFrom::End(0))?;
        Ok(Spool {
            path: path.to_path_buf(),
            key,
            out: BufWriter::with_capacity(1 << 20, file),
            mac: head_mac,
            after,
            last: None,
            last_run: 0,
            entries: 0,
            bytes: 0,
            dirty: false,
        })
    }

    /// Appends one entry (its raw BSON); durable at the next [`sync`].
    ///
    /// [`sync`]: Spool::sync
    pub fn append(&mut self, raw: &[u8], ts: Ts) -> io::Result<()> {
        let len = u32::try_from(raw.len())
            .map_err(|_| io::Error::other("an oplog entry larger than 4 GiB"))?
            .to_le_bytes();
        let tag = mac(&self.key, &self.mac, &len, raw);
        self.out.write_all(&len)?;
        self.out.write_all(raw)?;
        self.out.write_all(&tag)?;
        self.mac = tag;
        if self.last == Some(ts) {
            self.last_run += 1;
        } else {
            self.last_run = 1;
        }
        self.last = Some(ts);
        self.entries += 1;
        self.bytes += raw.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Makes everything appended durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.out.flush()?;
            self.out.get_ref().sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Where the spool continues from.
    pub fn after(&self) -> Ts {
        self.after
    }

    /// The last entry's timestamp.
    pub fn last(&self) -> Option<Ts> {
        self.last
    }

    /// How many of the last entries share the last timestamp (a
    /// transaction's entries do): a resumed read skips that many.
    pub fn last_run(&self) -> u64 {
        self.last_run
    }

    /// Entries held.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes of BSON held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every entry, read back from the file and checked again (after a
    /// [`sync`](Spool::sync)), to `each`.
    pub fn read_back(&mut self, mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<u64> {
        self.sync()?;
        let mut file = File::open(&self.path)?;
        let mut input = BufReader::with_capacity(1 << 20, &mut file);
        let mut head = vec![0u8; MAGIC.len() + 8 + 32];
        if !read_full(&mut input, &mut head)? {
            return Err(io::Error::other("the spool lost its header"));
        }
        let (expected, head_mac) = header(&self.key, self.after);
        if expected != head {
            return Err(io::Error::other("the spool was changed under the capture"));
        }
        let mut n = 0;
        let (_, last) = read_frames(&mut input, &self.key, head_mac, |b| {
            n += 1;
            each(b)
        })?;
        if n != self.entries || last != self.mac {
            return Err(io::Error::other("the spool was changed under the capture"));
        }
        Ok(n)
    }

    /// Starts over, continuing from `after` (the slice just sealed ended
    /// there).
    pub fn reset(&mut self, after: Ts) -> io::Result<()> {
        self.sync()?;
        *self = Self::create(&self.path, self.key, after)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{Timestamp, doc};

    fn entry(t: u32, i: u32) -> Vec<u8> {
        let d = doc! { "op": "i", "ns": "a.b", "ts": Timestamp { time: t, increment: i }, "o": { "_id": i } };
        mongodb::bson::to_vec(&d).unwrap()
    }

    #[test]
    fn entries_survive_a_reopen_and_a_torn_or_altered_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let key = [7u8; 32];
        let start = Ts { t: 100, i: 0 };
        let (mut s, rec) = Spool::open(dir.path(), key, start).unwrap();
        assert_eq!(rec, Recovered::default());
        for i in 1..=3 {
            s.append(&entry(100, i), Ts { t: 100, i }).unwrap();
        }
        s.sync().unwrap();
        drop(s);
        let (mut s, rec) = Spool::open(dir.path(), key, start).unwrap();
        assert_eq!((rec.entries, rec.cut), (3, 0));
        assert_eq!(s.last(), Some(Ts { t: 100, i: 3 }));
        let mut seen = 0;
        s.read_back(|b| {
            seen += 1;
            assert!(entry_ts(b).is_some());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 3);
        s.append(&entry(101, 1), Ts { t: 101, i: 1 }).unwrap();
        s.sync().unwrap();
        drop(s);
        // A torn last frame (a crash mid-write) is cut off.
        let path = dir.path().join(FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 10).unwrap();
        let (s, rec) = Spool::open(dir.path(), key, start).unwrap();
        assert_eq!(rec.entries, 3);
        assert!(rec.cut > 0);
        drop(s);
        // A frame altered by someone else: cut there.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = MAGIC.len() + 8 + 32 + 4 + 10;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (s, rec) = Spool::open(dir.path(), key, start).unwrap();
        assert_eq!(rec.entries, 0);
        assert_eq!(s.entries(), 0);
        drop(s);
        // Another key (a spool someone else wrote): set aside whole.
        let (s, rec) = Spool::open(dir.path(), [8u8; 32], Ts { t: 5, i: 5 }).unwrap();
        assert!(rec.rejected.is_some());
        assert_eq!(s.after(), Ts { t: 5, i: 5 });
    }

    #[test]
    fn a_reset_starts_over_from_where_the_slice_ended() {
        let dir = tempfile::tempdir().unwrap();
        let key = [1u8; 32];
        let (mut s, _) = Spool::open(dir.path(), key, Ts { t: 1, i: 0 }).unwrap();
        s.append(&entry(2, 1), Ts { t: 2, i: 1 }).unwrap();
        s.reset(Ts { t: 2, i: 1 }).unwrap();
        assert_eq!(s.entries(), 0);
        drop(s);
        let (s, rec) = Spool::open(dir.path(), key, Ts { t: 0, i: 0 }).unwrap();
        assert_eq!(rec.entries, 0);
        assert_eq!(s.after(), Ts { t: 2, i: 1 });
    }
}
