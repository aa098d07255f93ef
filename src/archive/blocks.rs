//! Compression on every core, still one standard gzip or zstd file.
//!
//! Written by hand because no maintained crate does both directions. The
//! stream is cut into blocks, each compressed on a worker thread into a
//! self-contained unit that the format allows any number of:
//!
//! - **gzip**: 1 MiB blocks, each a gzip *member* (RFC 1952) compressed by
//!   libdeflate. `gzip -d`, `tar -xz` and zlib read the concatenation as one
//!   file. pigz shares a 32 KiB dictionary between blocks instead; dropping
//!   it costs about 0.3% of size and makes every member independent.
//! - **zstd**: 4 MiB blocks, each a zstd *frame* with its checksum, preceded
//!   by a skippable frame (as pzstd does). `zstd -d` and `tar --zstd` skip
//!   skippable frames and read the frames in turn. 4 MiB keeps the output
//!   within 1.5% of one-frame `zstd -3`.
//!
//! Each unit's header carries its compressed and uncompressed length (in a
//! gzip extra field `CF`, as BGZF does, or in the skippable frame), so
//! [`ParallelReader`] decompresses units in parallel too. Streams without
//! those headers (written by gzip, pigz, zstd...) are read by flate2 or zstd
//! on one thread.
//!
//! Memory is bounded: a fixed number of blocks is in flight.

use std::any::Any;
use std::io::{self, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::{Compression, Sink};

/// The largest zstd window a stream written by another tool may ask for
/// (2^24 = 16 MiB; `zstd -19` uses 8 MiB, only `--long` and `--ultra`
/// more): a hostile frame cannot make the decoder allocate more.
const MAX_ZSTD_WINDOW_LOG: u32 = 24;
const GZIP_HEADER: usize = 10 + 2 + 4 + 8;
const ZSTD_HEADER: usize = 4 + 4 + 8;
const FEXTRA: u8 = 0x04;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

impl Compression {
    fn block_size(self) -> usize {
        match self {
            Compression::Gzip(_) => 1 << 20,
            Compression::Zstd(_) => 4 << 20,
        }
    }

    /// The largest compressed unit the reader accepts: what a block of
    /// [`Compression::block_size`] can compress to in the worst case, with room.
    /// A header that declares more is refused before anything is allocated.
    fn max_unit(self) -> usize {
        self.block_size() + self.block_size() / 16 + 4096
    }

    fn header_len(self) -> usize {
        match self {
            Compression::Gzip(_) => GZIP_HEADER,
            Compression::Zstd(_) => ZSTD_HEADER,
        }
    }

    /// Blocks queued for the workers and for the output thread.
    fn depth(self, threads: usize) -> (usize, usize) {
        match self {
            Compression::Gzip(_) => (threads * 2, threads * 2 + 2),
            Compression::Zstd(_) => (threads, threads),
        }
    }
}

fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

type WorkerState = Option<Box<dyn Any>>;
type Reply = Receiver<io::Result<Vec<u8>>>;

struct Job {
    data: Vec<u8>,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// A pool of threads that each run `work` over jobs, keeping per-thread state.
fn spawn_workers(
    n: usize,
    queue: usize,
    name: &str,
    work: impl Fn(&mut WorkerState, Vec<u8>) -> io::Result<Vec<u8>> + Send + Sync + 'static,
) -> (SyncSender<Job>, Vec<JoinHandle<()>>) {
    let (tx, rx) = sync_channel::<Job>(queue);
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

fn state<T: 'static>(s: &mut WorkerState, make: impl FnOnce() -> T) -> &mut T {
    s.get_or_insert_with(|| Box::new(make()))
        .downcast_mut::<T>()
        .expect("a worker keeps one kind of state")
}

/// Compresses one block into a gzip member with the `CF` extra field.
pub fn gzip_member(c: &mut libdeflater::Compressor, data: &[u8]) -> io::Result<Vec<u8>> {
    let bound = c.deflate_compress_bound(data.len());
    let mut out = vec![0u8; GZIP_HEADER + bound + 8];
    let n = c
        .deflate_compress(data, &mut out[GZIP_HEADER..GZIP_HEADER + bound])
        .map_err(|e| io::Error::other(format!("deflate failed: {e:?}")))?;
    let total = GZIP_HEADER + n + 8;
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

/// Compresses one block into a skippable frame (with the lengths) and a
/// zstd frame with content size and checksum.
fn zstd_unit(c: &mut zstd::bulk::Compressor<'static>, data: &[u8]) -> io::Result<Vec<u8>> {
    let frame = c.compress(data)?;
    let mut out = Vec::with_capacity(ZSTD_HEADER + frame.len());
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&((ZSTD_HEADER + frame.len()) as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame);
    Ok(out)
}

/// A `Write` that compresses on several threads into a [`Sink`].
pub struct ParallelWriter {
    block: Vec<u8>,
    block_size: usize,
    jobs: Option<SyncSender<Job>>,
    order: Option<SyncSender<Reply>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<Box<dyn Sink>>>>,
    wrote_any: bool,
}

impl ParallelWriter {
    /// Starts `threads` compression workers and a thread that writes the
    /// finished units, in order, to `sink`.
    pub fn new(
        sink: Box<dyn Sink>,
        format: Compression,
        threads: usize,
    ) -> io::Result<ParallelWriter> {
        let threads = threads.max(1);
        let (job_depth, order_depth) = format.depth(threads);
        let (jobs, workers) = match format {
            Compression::Gzip(level) => {
                let level = libdeflater::CompressionLvl::new(i32::from(level)).unwrap_or_default();
                spawn_workers(threads, job_depth, "cofre-gzip", move |s, data| {
                    gzip_member(state(s, || libdeflater::Compressor::new(level)), &data)
                })
            }
            Compression::Zstd(level) => {
                // Fail early, here, on a level zstd refuses.
                zstd::bulk::Compressor::new(i32::from(level))?;
                spawn_workers(threads, job_depth, "cofre-zstd", move |s, data| {
                    if s.is_none() {
                        let mut c = zstd::bulk::Compressor::new(i32::from(level))?;
                        c.include_checksum(true)?;
                        c.include_contentsize(true)?;
                        *s = Some(Box::new(c));
                    }
                    zstd_unit(state(s, || unreachable!()), &data)
                })
            }
        };
        let (order, order_rx) = sync_channel::<Reply>(order_depth);
        let writer = thread::Builder::new()
            .name("cofre-compress-out".into())
            .spawn(move || {
                let mut sink = sink;
                for reply in order_rx {
                    let unit = reply
                        .recv()
                        .map_err(|_| io::Error::other("a compression thread stopped"))??;
                    sink.write_all(&unit)?;
                }
                Ok(sink)
            })?;
        Ok(ParallelWriter {
            block: Vec::with_capacity(format.block_size()),
            block_size: format.block_size(),
            jobs: Some(jobs),
            order: Some(order),
            workers,
            writer: Some(writer),
            wrote_any: false,
        })
    }

    fn submit(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(self.block_size));
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

impl Write for ParallelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.block_size - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == self.block_size {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for ParallelWriter {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.finish_inner()?.finish()
    }
}

/// Reads all bytes there are, up to `buf.len()`.
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

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
}

/// The (unit length, uncompressed length) a cofre unit header announces;
/// `Ok(None)` when the header is not one of ours, an error when it is ours
/// but declares sizes cofre never writes (damage, or a decompression bomb).
fn unit_lengths(format: Compression, h: &[u8]) -> io::Result<Option<(usize, usize)>> {
    let Some((total, plain)) = (match format {
        Compression::Gzip(_) => {
            let ours = h[..4] == [0x1f, 0x8b, 8, FEXTRA]
                && h[10..12] == 12u16.to_le_bytes()
                && &h[12..14] == b"CF"
                && h[14..16] == 8u16.to_le_bytes();
            ours.then(|| (u32_at(h, 16), u32_at(h, 20)))
        }
        Compression::Zstd(_) => {
            let ours = u32_at(h, 0) as u32 == SKIPPABLE_MAGIC && u32_at(h, 4) == 8;
            ours.then(|| (u32_at(h, 8), u32_at(h, 12)))
        }
    }) else {
        return Ok(None);
    };
    let min = format.header_len() + 8;
    if total <= format.max_unit() && plain <= format.block_size() && total >= min {
        Ok(Some((total, plain)))
    } else {
        Err(corrupt(format!(
            "a compressed block declares {total} bytes holding {plain}, \
             outside what cofre writes (at most {} holding {})",
            format.max_unit(),
            format.block_size()
        )))
    }
}

fn gunzip_member(
    d: &mut libdeflater::Decompressor,
    unit: &[u8],
    plain: usize,
) -> io::Result<Vec<u8>> {
    let total = unit.len();
    let trailer = &unit[total - 8..];
    let crc = u32_at(trailer, 0) as u32;
    if u32_at(trailer, 4) != plain {
        return Err(corrupt("gzip member size does not match its header"));
    }
    let mut out = vec![0u8; plain];
    let n = d
        .deflate_decompress(&unit[GZIP_HEADER..total - 8], &mut out)
        .map_err(|e| corrupt(format!("gzip data is corrupt ({e:?})")))?;
    if n != plain || libdeflater::crc32(&out) != crc {
        return Err(corrupt("gzip data is corrupt (CRC mismatch)"));
    }
    Ok(out)
}

fn unzstd_unit(
    d: &mut zstd::bulk::Decompressor<'static>,
    unit: &[u8],
    plain: usize,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plain);
    let n = d
        .decompress_to_buffer(&unit[ZSTD_HEADER..], &mut out)
        .map_err(|e| corrupt(format!("zstd data is corrupt ({e})")))?;
    if n != plain {
        return Err(corrupt("zstd frame size does not match its header"));
    }
    Ok(out)
}

/// Reads a gzip or zstd stream, decompressing cofre's units on several
/// threads and any other stream of the format on one.
pub struct ParallelReader {
    order: Receiver<Reply>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Sends an already-computed result down the ordered queue.
fn ready(order: &SyncSender<Reply>, result: io::Result<Vec<u8>>) -> bool {
    let (tx, rx) = sync_channel(1);
    let _ = tx.send(result);
    order.send(rx).is_ok()
}

impl ParallelReader {
    /// Starts reading `input` (of `format`; the level is ignored) on a
    /// thread, with `threads` decompressors.
    pub fn new<R: Read + Send + 'static>(
        input: R,
        format: Compression,
        threads: usize,
    ) -> ParallelReader {
        let threads = threads.max(1);
        let (_, order_depth) = format.depth(threads);
        let (order_tx, order) = sync_channel::<Reply>(order_depth);
        thread::Builder::new()
            .name("cofre-decompress".into())
            .spawn(move || dispatch(input, format, threads, &order_tx))
            .expect("spawning a thread");
        ParallelReader {
            order,
            current: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

/// Streams the rest with the format's ordinary decoder.
fn fallback<R: Read>(rest: R, format: Compression, order: &SyncSender<Reply>) {
    let rest = BufReader::with_capacity(1 << 16, rest);
    let mut decoder: Box<dyn Read> = match format {
        Compression::Gzip(_) => Box::new(flate2::read::MultiGzDecoder::new(rest)),
        Compression::Zstd(_) => match zstd::stream::read::Decoder::with_buffer(rest)
            .and_then(|mut d| d.window_log_max(MAX_ZSTD_WINDOW_LOG).map(|()| d))
        {
            Ok(d) => Box::new(d),
            Err(e) => {
                ready(order, Err(e));
                return;
            }
        },
    };
    loop {
        let mut chunk = vec![0u8; 1 << 20];
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
                    corrupt("the compressed stream ends early (truncated)")
                } else if e.to_string().contains("too much memory") {
                    corrupt(format!(
                        "its zstd frames ask for a window larger than the {} MiB cofre accepts \
                         (written with zstd --long or --ultra?); decompress it with zstd -d first",
                        1 << (MAX_ZSTD_WINDOW_LOG - 20)
                    ))
                } else {
                    e
                };
                ready(order, Err(e));
                return;
            }
        }
    }
}

fn dispatch<R: Read>(mut input: R, format: Compression, threads: usize, order: &SyncSender<Reply>) {
    let (job_depth, _) = format.depth(threads);
    let (jobs, _workers) = match format {
        Compression::Gzip(_) => spawn_workers(threads, job_depth, "cofre-gunzip", |s, unit| {
            let plain = u32_at(&unit, 20);
            gunzip_member(state(s, libdeflater::Decompressor::new), &unit, plain)
        }),
        Compression::Zstd(_) => spawn_workers(threads, job_depth, "cofre-unzstd", |s, unit| {
            if s.is_none() {
                *s = Some(Box::new(zstd::bulk::Decompressor::new()?));
            }
            let plain = u32_at(&unit, 12);
            unzstd_unit(state(s, || unreachable!()), &unit, plain)
        }),
    };
    let header_len = format.header_len();
    let mut first = true;
    loop {
        let mut header = vec![0u8; header_len];
        let got = match read_full(&mut input, &mut header) {
            Ok(n) => n,
            Err(e) => {
                ready(order, Err(e));
                return;
            }
        };
        if got == 0 {
            let end = if first {
                Err(corrupt("the compressed stream is empty"))
            } else {
                Ok(Vec::new())
            };
            ready(order, end);
            return;
        }
        let lengths = if got == header_len {
            unit_lengths(format, &header)
        } else {
            Ok(None)
        };
        let lengths = match lengths {
            Ok(l) => l,
            Err(e) => {
                ready(order, Err(e));
                return;
            }
        };
        let Some((total, _)) = lengths else {
            let looks_like_format = match format {
                Compression::Gzip(_) => header[..2] == [0x1f, 0x8b],
                Compression::Zstd(_) => {
                    got >= 4
                        && (u32_at(&header, 0) as u32 == 0xFD2F_B528
                            || u32_at(&header, 0) as u32 & 0xFFFF_FFF0 == SKIPPABLE_MAGIC)
                }
            };
            if !looks_like_format {
                let msg = if first {
                    "not a compressed stream of the expected format"
                } else {
                    "unexpected data after the end of the compressed stream"
                };
                ready(order, Err(corrupt(msg)));
                return;
            }
            // Not one of ours: the format's own decoder reads the rest.
            header.truncate(got);
            fallback(io::Cursor::new(header).chain(input), format, order);
            return;
        };
        first = false;
        let mut unit = header;
        unit.resize(total, 0);
        match read_full(&mut input, &mut unit[header_len..]) {
            Ok(n) if n == total - header_len => {}
            Ok(_) => {
                ready(
                    order,
                    Err(corrupt("the compressed stream ends early (truncated)")),
                );
                return;
            }
            Err(e) => {
                ready(order, Err(e));
                return;
            }
        }
        let (reply, reply_rx) = sync_channel(1);
        if jobs.send(Job { data: unit, reply }).is_err() || order.send(reply_rx).is_err() {
            return;
        }
    }
}

impl Read for ParallelReader {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory sink, for the pipeline without files.
    #[derive(Clone)]
    struct MemorySink(Arc<Mutex<Vec<u8>>>);

    impl MemorySink {
        fn new() -> (MemorySink, Arc<Mutex<Vec<u8>>>) {
            let buf = Arc::new(Mutex::new(Vec::new()));
            (MemorySink(Arc::clone(&buf)), buf)
        }
    }

    impl Write for MemorySink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for MemorySink {
        fn finish(self: Box<Self>) -> io::Result<()> {
            Ok(())
        }
    }

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

    fn compress(data: &[u8], format: Compression, threads: usize) -> Vec<u8> {
        let (sink, out) = MemorySink::new();
        let mut w = ParallelWriter::new(Box::new(sink), format, threads).unwrap();
        for chunk in data.chunks(77_777) {
            w.write_all(chunk).unwrap();
        }
        Box::new(w).finish().unwrap();
        out.lock().unwrap().clone()
    }

    fn decompress(data: &[u8], format: Compression) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ParallelReader::new(io::Cursor::new(data.to_vec()), format, 2).read_to_end(&mut out)?;
        Ok(out)
    }

    const FORMATS: [Compression; 2] = [Compression::Gzip(6), Compression::Zstd(3)];

    #[test]
    fn round_trips_through_our_reader_and_the_standard_decoders() {
        for format in FORMATS {
            let block = format.block_size();
            for size in [0, 1, block - 1, block, 3 * block + 17] {
                let data = sample(size);
                let packed = compress(&data, format, 3);
                assert_eq!(
                    decompress(&packed, format).unwrap(),
                    data,
                    "{format:?} size {size}"
                );
                let mut standard = Vec::new();
                match format {
                    Compression::Gzip(_) => {
                        flate2::read::MultiGzDecoder::new(&packed[..])
                            .read_to_end(&mut standard)
                            .unwrap();
                    }
                    Compression::Zstd(_) => {
                        zstd::stream::read::Decoder::new(&packed[..])
                            .unwrap()
                            .read_to_end(&mut standard)
                            .unwrap();
                    }
                }
                assert_eq!(standard, data, "{format:?} size {size}");
            }
        }
    }

    #[test]
    fn reads_streams_other_tools_wrote() {
        let data = sample(3 << 20);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap();
        assert_eq!(
            decompress(&enc.finish().unwrap(), Compression::Gzip(6)).unwrap(),
            data
        );
        let z = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(decompress(&z, Compression::Zstd(3)).unwrap(), data);
    }

    #[test]
    fn detects_corruption_and_truncation() {
        for format in FORMATS {
            let data = sample(2 * format.block_size() + 5);
            let packed = compress(&data, format, 2);
            let h = format.header_len();
            for cut in [5, h + 3, packed.len() / 2, packed.len() - 1] {
                assert!(
                    decompress(&packed[..cut], format).is_err(),
                    "{format:?} cut at {cut}"
                );
            }
            for at in [h + 100, packed.len() / 2, packed.len() - 6] {
                let mut bad = packed.clone();
                bad[at] ^= 0x20;
                assert!(decompress(&bad, format).is_err(), "{format:?} flip at {at}");
            }
            let mut trailing = packed;
            trailing.extend_from_slice(b"junk");
            assert!(
                decompress(&trailing, format).is_err(),
                "{format:?} trailing junk"
            );
        }
    }
}
