//! A reader moved onto its own thread, so two stages of the read pipeline
//! (decrypt, decompress, and tar + hash + write) use two cores.
//!
//! Chunks travel through a bounded channel (memory stays bounded) and come
//! back through a second one once read, so the producer reuses them instead
//! of allocating and zeroing a megabyte per chunk. An error on the producing
//! side is delivered, in order, to the consumer's `read`.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel as unbounded, sync_channel};
use std::thread;

/// Chunk size of the pipe.
const CHUNK: usize = 1 << 20;
/// Chunk size of an observed pipe (the raw file under the signature check):
/// the observer copies each chunk, so they are kept small.
const OBSERVED_CHUNK: usize = 256 << 10;
/// Chunks in flight.
const DEPTH: usize = 4;

/// The consuming end: a `Read` over chunks produced by another thread.
pub struct ChannelReader {
    rx: Receiver<io::Result<(Vec<u8>, usize)>>,
    recycle: Sender<Vec<u8>>,
    current: Vec<u8>,
    len: usize,
    pos: usize,
    done: bool,
}

impl BufRead for ChannelReader {
    /// The rest of the current chunk, without copying it (zstd and the
    /// layer detection read straight from the chunks).
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.len {
            if self.done {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Ok((_, 0))) => self.done = true,
                Ok(Ok((chunk, len))) => {
                    let old = std::mem::replace(&mut self.current, chunk);
                    if !old.is_empty() {
                        let _ = self.recycle.send(old);
                    }
                    self.len = len;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other(
                        "the reading thread stopped before the end of the stream",
                    ));
                }
            }
        }
        Ok(&self.current[self.pos..self.len])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.len);
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The feeding end of [`channel`]: chunks in order, then `finish`.
pub struct Feeder {
    tx: SyncSender<io::Result<(Vec<u8>, usize)>>,
}

impl Feeder {
    /// Passes a chunk on; false when the reader is gone.
    pub fn send(&self, chunk: Vec<u8>) -> bool {
        let n = chunk.len();
        n == 0 || self.tx.send(Ok((chunk, n))).is_ok()
    }

    /// Ends the stream cleanly.
    pub fn finish(self) {
        let _ = self.tx.send(Ok((Vec::new(), 0)));
    }

    /// Ends the stream with an error (the reader's next `read` returns it).
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.send(Err(e));
    }
}

/// A bounded pipe fed from anywhere (an async download, say): a `Read`
/// on one side, a [`Feeder`] on the other. Dropping the feeder without
/// `finish` is an error for the reader, never a clean end.
pub fn channel() -> (Feeder, ChannelReader) {
    let (tx, rx) = sync_channel(DEPTH);
    let (recycle, _) = std::sync::mpsc::channel::<Vec<u8>>();
    (
        Feeder { tx },
        ChannelReader {
            rx,
            recycle,
            current: Vec::new(),
            len: 0,
            pos: 0,
            done: false,
        },
    )
}

/// Sees every chunk a pipe passes on (`Some`), then the end (`None`); the
/// end is not seen when reading failed.
pub type Observer = Box<dyn FnMut(Option<&[u8]>) + Send>;

/// Runs `reader` on a new thread and returns a `Read` of its output.
pub fn spawn_reader<R: Read + Send + 'static>(reader: R) -> ChannelReader {
    spawn_observed(reader, None)
}

/// The same, showing every chunk to `observer` as it passes.
pub fn spawn_observed<R: Read + Send + 'static>(
    mut reader: R,
    mut observer: Option<Observer>,
) -> ChannelReader {
    let chunk_size = if observer.is_some() {
        OBSERVED_CHUNK
    } else {
        CHUNK
    };
    let (tx, rx) = sync_channel(DEPTH);
    let (recycle, recycled) = unbounded::<Vec<u8>>();
    thread::Builder::new()
        .name("cofre-read".into())
        .spawn(move || {
            loop {
                let mut chunk = recycled
                    .try_recv()
                    .unwrap_or_else(|_| vec![0u8; chunk_size]);
                let mut filled = 0;
                let result = loop {
                    match reader.read(&mut chunk[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == chunk_size {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                let end = filled == 0;
                if let Some(o) = observer.as_mut() {
                    if filled > 0 {
                        o(Some(&chunk[..filled]));
                    }
                    if end && result.is_ok() {
                        o(None);
                    }
                }
                if filled > 0 && tx.send(Ok((chunk, filled))).is_err() {
                    return;
                }
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                    return;
                }
                if end {
                    let _ = tx.send(Ok((Vec::new(), 0)));
                    return;
                }
            }
        })
        .expect("spawning a thread");
    ChannelReader {
        rx,
        recycle,
        current: Vec::new(),
        len: 0,
        pos: 0,
        done: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_bytes_through_in_order() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        spawn_reader(io::Cursor::new(data.clone()))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn delivers_errors() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "boom"));
                }
                self.0 -= 1;
                buf[0] = 7;
                Ok(1)
            }
        }
        let mut out = Vec::new();
        let err = spawn_reader(Failing(3)).read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(out, vec![7, 7, 7]);
    }
}
