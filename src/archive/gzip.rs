//! gzip on every core, still one standard gzip file.
//!
//! Written by hand because no maintained crate does what this does. The
//! stream is split into 1 MiB blocks, each compressed on a worker thread by
//! libdeflate into its own gzip *member* (RFC 1952 allows any number of
//! members; `gzip -d`, `tar -xz` and zlib's multi-member readers treat the
//! concatenation as one file). pigz shares a 32 KiB dictionary between blocks
//! instead; dropping it costs about 0.3% of size at 1 MiB blocks, and buys
//! the other direction: each member's header carries an extra field (id
//! `CF`) with its own compressed and uncompressed length, as BGZF does, so
//! [`ParallelGzReader`] can also decompress members in parallel. Streams
//! without that field (written by gzip, pigz, ...) are read with flate2.
//!
//! Memory is bounded: at most `2 × workers + 2` blocks are in flight.

use std::io::{self, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use libdeflater::{CompressionLvl, Compressor, Decompressor};

use super::layers::Sink;

/// Uncompressed bytes per gzip member.
pub const BLOCK_SIZE: usize = 1 << 20;
/// The largest member the parallel reader accepts (a guard against a
/// corrupt length asking for gigabytes).
const MAX_MEMBER: usize = 64 << 20;
const HEADER_LEN: usize = 10 + 2 + 4 + 8;
const FEXTRA: u8 = 0x04;

type Reply = Receiver<io::Result<Vec<u8>>>;

struct Job {
    data: Vec<u8>,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// A pool of threads that each run one function over jobs.
fn spawn_workers(
    n: usize,
    name: &str,
    work: impl Fn(&mut Option<Box<dyn std::any::Any>>, Vec<u8>) -> io::Result<Vec<u8>>
    + Send
    + Sync
    + 'static,
) -> (SyncSender<Job>, Vec<JoinHandle<()>>) {
    let (tx, rx) = sync_channel::<Job>(n * 2);
    let rx = Arc::new(Mutex::new(rx));
    let work = Arc::new(work);
    let handles = (0..n)
        .map(|i| {
            let rx = Arc::clone(&rx);
            let work = Arc::clone(&work);
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let mut state = None;
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let _ = job.reply.send(work(&mut state, job.data));
                    }
                })
                .expect("spawning a thread")
        })
        .collect();
    (tx, handles)
}

/// Compresses one block into a complete gzip member with the `CF` extra field.
pub fn compress_member(compressor: &mut Compressor, data: &[u8]) -> io::Result<Vec<u8>> {
    let bound = compressor.deflate_compress_bound(data.len());
    let mut out = vec![0u8; HEADER_LEN + bound + 8];
    let n = compressor
        .deflate_compress(data, &mut out[HEADER_LEN..HEADER_LEN + bound])
        .map_err(|e| io::Error::other(format!("deflate failed: {e:?}")))?;
    let total = HEADER_LEN + n + 8;
    out.truncate(total);
    // RFC 1952 header: magic, CM=deflate, FLG=FEXTRA, MTIME=0, XFL=0, OS=unix.
    out[..10].copy_from_slice(&[0x1f, 0x8b, 8, FEXTRA, 0, 0, 0, 0, 0, 3]);
    out[10..12].copy_from_slice(&12u16.to_le_bytes()); // XLEN
    out[12..14].copy_from_slice(b"CF");
    out[14..16].copy_from_slice(&8u16.to_le_bytes());
    out[16..20].copy_from_slice(&(total as u32).to_le_bytes());
    out[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
    out[total - 8..total - 4].copy_from_slice(&libdeflater::crc32(data).to_le_bytes());
    out[total - 4..].copy_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(out)
}

/// A `Write` that gzip-compresses on several threads into a [`Sink`].
pub struct ParallelGzWriter {
    block: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    order: Option<SyncSender<Reply>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<Box<dyn Sink>>>>,
    wrote_any: bool,
}

impl ParallelGzWriter {
    /// Starts `threads` compression workers at `level` (1..=12, libdeflate's)
    /// and a thread that writes finished members, in order, to `sink`.
    pub fn new(sink: Box<dyn Sink>, level: u8, threads: usize) -> ParallelGzWriter {
        let level = CompressionLvl::new(i32::from(level)).unwrap_or_default();
        let (jobs, workers) = spawn_workers(threads.max(1), "cofre-gzip", move |state, data| {
            let compressor = state
                .get_or_insert_with(|| Box::new(Compressor::new(level)))
                .downcast_mut::<Compressor>()
                .expect("the state is a compressor");
            compress_member(compressor, &data)
        });
        let (order, order_rx) = sync_channel::<Reply>(threads.max(1) * 2 + 2);
        let writer = thread::Builder::new()
            .name("cofre-gzip-out".into())
            .spawn(move || {
                let mut sink = sink;
                for reply in order_rx {
                    let member = reply
                        .recv()
                        .map_err(|_| io::Error::other("a compression thread stopped"))??;
                    sink.write_all(&member)?;
                }
                Ok(sink)
            })
            .expect("spawning a thread");
        ParallelGzWriter {
            block: Vec::with_capacity(BLOCK_SIZE),
            jobs: Some(jobs),
            order: Some(order),
            workers,
            writer: Some(writer),
            wrote_any: false,
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE));
        let (reply, reply_rx) = sync_channel(1);
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|j| j.send(Job { data, reply }).is_ok())
            && self
                .order
                .as_ref()
                .is_some_and(|o| o.send(reply_rx).is_ok());
        self.wrote_any = true;
        if sent {
            Ok(())
        } else {
            Err(self.writer_error())
        }
    }

    /// The error that stopped the output thread.
    fn writer_error(&mut self) -> io::Error {
        self.order = None;
        self.jobs = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the compression output thread stopped"),
        }
    }

    fn finish_inner(mut self) -> io::Result<Box<dyn Sink>> {
        if !self.block.is_empty() || !self.wrote_any {
            self.submit()?;
        }
        self.jobs = None;
        self.order = None;
        let sink = match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            _ => return Err(io::Error::other("the compression output thread panicked")),
        };
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        Ok(sink)
    }
}

impl Write for ParallelGzWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for ParallelGzWriter {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.finish_inner()?.finish()
    }
}

/// Reads a gzip stream, decompressing cofre's members on several threads and
/// any other gzip stream with flate2 (zlib-rs) on one.
pub struct ParallelGzReader {
    order: Receiver<Reply>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads as many bytes as are there, up to `buf.len()`.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The total member length and uncompressed length from a `CF` header.
fn cf_lengths(header: &[u8; HEADER_LEN]) -> Option<(usize, usize)> {
    let ours = header[..4] == [0x1f, 0x8b, 8, FEXTRA]
        && header[10..12] == 12u16.to_le_bytes()
        && &header[12..14] == b"CF"
        && header[14..16] == 8u16.to_le_bytes();
    if !ours {
        return None;
    }
    let total = u32::from_le_bytes(header[16..20].try_into().ok()?) as usize;
    let plain = u32::from_le_bytes(header[20..24].try_into().ok()?) as usize;
    Some((total, plain))
}

fn decompress_member(d: &mut Decompressor, member: &[u8]) -> io::Result<Vec<u8>> {
    let header: &[u8; HEADER_LEN] = member[..HEADER_LEN].try_into().expect("length checked");
    let (total, plain) = cf_lengths(header).ok_or_else(|| corrupt("bad gzip member header"))?;
    if total != member.len() || total < HEADER_LEN + 8 {
        return Err(corrupt("gzip member length does not match its header"));
    }
    let trailer = &member[total - 8..];
    let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    let isize = u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes")) as usize;
    if isize != plain {
        return Err(corrupt("gzip member size does not match its header"));
    }
    let mut out = vec![0u8; plain];
    let n = d
        .deflate_decompress(&member[HEADER_LEN..total - 8], &mut out)
        .map_err(|e| corrupt(format!("gzip data is corrupt ({e:?})")))?;
    if n != plain || libdeflater::crc32(&out) != crc {
        return Err(corrupt("gzip data is corrupt (CRC mismatch)"));
    }
    Ok(out)
}

impl ParallelGzReader {
    /// Starts reading `input` on a thread, with `threads` decompressors.
    pub fn new<R: Read + Send + 'static>(input: R, threads: usize) -> ParallelGzReader {
        let threads = threads.max(1);
        let (order_tx, order) = sync_channel::<Reply>(threads * 2 + 2);
        thread::Builder::new()
            .name("cofre-gunzip".into())
            .spawn(move || dispatch(input, threads, &order_tx))
            .expect("spawning a thread");
        ParallelGzReader {
            order,
            current: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

/// Sends an already-computed result down the ordered queue.
fn ready(order: &SyncSender<Reply>, result: io::Result<Vec<u8>>) -> bool {
    let (tx, rx) = sync_channel(1);
    let _ = tx.send(result);
    order.send(rx).is_ok()
}

fn dispatch<R: Read>(mut input: R, threads: usize, order: &SyncSender<Reply>) {
    let (jobs, _workers) = spawn_workers(threads, "cofre-gunzip", |state, member| {
        let d = state
            .get_or_insert_with(|| Box::new(Decompressor::new()))
            .downcast_mut::<Decompressor>()
            .expect("the state is a decompressor");
        decompress_member(d, &member)
    });
    let mut first = true;
    loop {
        let mut header = [0u8; HEADER_LEN];
        let got = match read_full(&mut input, &mut header) {
            Ok(n) => n,
            Err(e) => {
                ready(order, Err(e));
                return;
            }
        };
        if got == 0 {
            let result = if first {
                Err(corrupt("the compressed stream is empty"))
            } else {
                Ok(Vec::new())
            };
            ready(order, result);
            return;
        }
        let lengths = (got == HEADER_LEN)
            .then(|| cf_lengths(&header))
            .flatten()
            .filter(|&(total, plain)| {
                total <= MAX_MEMBER && plain <= MAX_MEMBER && total > HEADER_LEN + 8
            });
        let Some((total, _)) = lengths else {
            if header[..2] != [0x1f, 0x8b] {
                let msg = if first {
                    "not a gzip stream"
                } else {
                    "unexpected data after the end of the gzip stream"
                };
                ready(order, Err(corrupt(msg)));
                return;
            }
            // Not one of ours: hand the rest of the stream to flate2.
            let rest = io::Cursor::new(header[..got].to_vec()).chain(input);
            let mut decoder =
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, rest));
            loop {
                let mut chunk = vec![0u8; BLOCK_SIZE];
                match read_full(&mut decoder, &mut chunk) {
                    Ok(0) => {
                        ready(order, Ok(Vec::new()));
                        return;
                    }
                    Ok(n) => {
                        chunk.truncate(n);
                        if !ready(order, Ok(chunk)) {
                            return;
                        }
                    }
                    Err(e) => {
                        let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                            corrupt("the gzip stream ends early (truncated)")
                        } else {
                            e
                        };
                        ready(order, Err(e));
                        return;
                    }
                }
            }
        };
        first = false;
        let mut member = vec![0u8; total];
        member[..HEADER_LEN].copy_from_slice(&header);
        match read_full(&mut input, &mut member[HEADER_LEN..]) {
            Ok(n) if n == total - HEADER_LEN => {}
            Ok(_) => {
                ready(
                    order,
                    Err(corrupt("the gzip stream ends early (truncated)")),
                );
                return;
            }
            Err(e) => {
                ready(order, Err(e));
                return;
            }
        }
        let (reply, reply_rx) = sync_channel(1);
        if jobs
            .send(Job {
                data: member,
                reply,
            })
            .is_err()
            || order.send(reply_rx).is_err()
        {
            return;
        }
    }
}

impl Read for ParallelGzReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            if self.done {
                return Ok(0);
            }
            let next = self
                .order
                .recv()
                .map_err(|_| io::Error::other("the decompression thread stopped"))
                .and_then(|reply| {
                    reply
                        .recv()
                        .map_err(|_| io::Error::other("a decompression thread stopped"))?
                });
            match next {
                Ok(chunk) if chunk.is_empty() => self.done = true,
                Ok(chunk) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads gzip members from `input` without threads (for tests and tools).
pub fn decompress_all(input: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    ParallelGzReader::new(io::Cursor::new(input.to_vec()), 1).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::layers::MemorySink;

    fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut x: u32 = 1;
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            // Compressible but not trivial: words from a small alphabet.
            v.extend_from_slice(format!("w{} ", (x >> 16) % 500).as_bytes());
        }
        v.truncate(n);
        v
    }

    fn compress(data: &[u8], threads: usize) -> Vec<u8> {
        let (sink, out) = MemorySink::new();
        let mut w = ParallelGzWriter::new(Box::new(sink), 6, threads);
        for chunk in data.chunks(77_777) {
            w.write_all(chunk).unwrap();
        }
        Box::new(w).finish().unwrap();
        out.lock().unwrap().clone()
    }

    #[test]
    fn round_trips_through_our_reader_and_flate2() {
        for size in [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, 3 * BLOCK_SIZE + 17] {
            let data = sample(size);
            let gz = compress(&data, 3);
            assert_eq!(decompress_all(&gz).unwrap(), data, "size {size}");
            let mut via_flate = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut via_flate)
                .unwrap();
            assert_eq!(via_flate, data, "size {size}");
        }
    }

    #[test]
    fn reads_foreign_gzip() {
        let data = sample(3 * BLOCK_SIZE);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decompress_all(&gz).unwrap(), data);
    }

    #[test]
    fn detects_corruption_and_truncation() {
        let data = sample(2 * BLOCK_SIZE + 5);
        let gz = compress(&data, 2);
        for cut in [5, HEADER_LEN + 3, gz.len() / 2, gz.len() - 1] {
            assert!(decompress_all(&gz[..cut]).is_err(), "cut at {cut}");
        }
        for at in [HEADER_LEN + 100, gz.len() / 2, gz.len() - 6] {
            let mut bad = gz.clone();
            bad[at] ^= 0x20;
            assert!(decompress_all(&bad).is_err(), "flip at {at}");
        }
        let mut trailing = gz;
        trailing.extend_from_slice(b"junk");
        assert!(decompress_all(&trailing).is_err());
    }
}
