//! Records on disk instead of in memory: a list that can grow to millions
//! of entries (directories to finish, symlinks to check, steps of a merge)
//! while memory stays at one buffer.
//!
//! Each record is framed by its length at both ends (`len, bytes, len`), so
//! the spool can be read forwards and backwards (directories are finished
//! deepest first, a merge is undone last step first). The file is an
//! unnamed temporary file: it disappears with the process. Hand-written
//! because it is forty lines and no crate offers a two-way record file.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

/// Largest record accepted (a guard against a corrupt length).
const MAX_RECORD: usize = 16 << 20;
/// Read-ahead of the readers.
const WINDOW: usize = 64 << 10;

/// A spool being written.
#[derive(Debug)]
pub struct RecordSpool {
    out: BufWriter<File>,
    len: u64,
    count: u64,
}

impl RecordSpool {
    /// A new spool in the system's temporary directory.
    pub fn new() -> io::Result<Self> {
        Ok(RecordSpool {
            out: BufWriter::with_capacity(WINDOW, tempfile::tempfile()?),
            len: 0,
            count: 0,
        })
    }

    /// Appends one record.
    pub fn push(&mut self, record: &[u8]) -> io::Result<()> {
        if record.len() > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record too large for the spool",
            ));
        }
        let n = (record.len() as u32).to_le_bytes();
        self.out.write_all(&n)?;
        self.out.write_all(record)?;
        self.out.write_all(&n)?;
        self.len += record.len() as u64 + 8;
        self.count += 1;
        Ok(())
    }

    /// Records pushed so far.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Finishes writing; the records can then be read in either direction.
    pub fn finish(self) -> io::Result<Records> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok(Records {
            file,
            len: self.len,
            count: self.count,
        })
    }
}

/// A finished spool.
#[derive(Debug)]
pub struct Records {
    file: File,
    len: u64,
    count: u64,
}

impl Records {
    /// How many records there are.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The records, first to last.
    pub fn forward(&self) -> Cursor<'_> {
        Cursor {
            records: self,
            pos: 0,
            window: Vec::new(),
            window_start: 0,
            backward: false,
        }
    }

    /// The records, last to first.
    pub fn backward(&self) -> Cursor<'_> {
        Cursor {
            records: self,
            pos: self.len,
            window: Vec::new(),
            window_start: 0,
            backward: true,
        }
    }
}

/// A reading position in a spool.
pub struct Cursor<'a> {
    records: &'a Records,
    pos: u64,
    window: Vec<u8>,
    window_start: u64,
    backward: bool,
}

impl Cursor<'_> {
    /// The bytes `[start, start + n)`, from the window or read into it.
    fn bytes(&mut self, start: u64, n: usize) -> io::Result<&[u8]> {
        let end = start + n as u64;
        let have =
            start >= self.window_start && end <= self.window_start + self.window.len() as u64;
        if !have {
            let size = n.max(WINDOW) as u64;
            // Read ahead in the direction of travel.
            let from = if self.backward {
                end.saturating_sub(size)
            } else {
                start
            };
            let to = (from + size).min(self.records.len);
            self.window.resize((to - from) as usize, 0);
            self.records.file.read_exact_at(&mut self.window, from)?;
            self.window_start = from;
        }
        let at = (start - self.window_start) as usize;
        Ok(&self.window[at..at + n])
    }

    fn length_at(&mut self, at: u64) -> io::Result<usize> {
        let b = self.bytes(at, 4)?;
        let n = u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        if n > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "damaged spool record",
            ));
        }
        Ok(n)
    }

    /// The next record in this cursor's direction, or `None` at the end.
    pub fn next_record(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.backward {
            if self.pos == 0 {
                return Ok(None);
            }
            let n = self.length_at(self.pos - 4)?;
            let start = self.pos - 4 - n as u64;
            let rec = self.bytes(start, n)?.to_vec();
            self.pos = start - 4;
            Ok(Some(rec))
        } else {
            if self.pos >= self.records.len {
                return Ok(None);
            }
            let n = self.length_at(self.pos)?;
            let rec = self.bytes(self.pos + 4, n)?.to_vec();
            self.pos += n as u64 + 8;
            Ok(Some(rec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_ways() {
        let mut s = RecordSpool::new().unwrap();
        let recs: Vec<Vec<u8>> = (0..5000u32)
            .map(|i| vec![(i % 251) as u8; (i as usize * 37) % 3000])
            .collect();
        for r in &recs {
            s.push(r).unwrap();
        }
        assert_eq!(s.count(), 5000);
        let done = s.finish().unwrap();
        let mut fwd = done.forward();
        for r in &recs {
            assert_eq!(&fwd.next_record().unwrap().unwrap(), r);
        }
        assert!(fwd.next_record().unwrap().is_none());
        let mut back = done.backward();
        for r in recs.iter().rev() {
            assert_eq!(&back.next_record().unwrap().unwrap(), r);
        }
        assert!(back.next_record().unwrap().is_none());
    }

    #[test]
    fn large_records_and_empty_spools() {
        let mut s = RecordSpool::new().unwrap();
        s.push(&vec![7u8; 200_000]).unwrap();
        s.push(b"").unwrap();
        let done = s.finish().unwrap();
        let mut back = done.backward();
        assert_eq!(back.next_record().unwrap().unwrap(), b"");
        assert_eq!(back.next_record().unwrap().unwrap().len(), 200_000);
        let empty = RecordSpool::new().unwrap().finish().unwrap();
        assert!(empty.forward().next_record().unwrap().is_none());
        assert!(empty.backward().next_record().unwrap().is_none());
    }
}
