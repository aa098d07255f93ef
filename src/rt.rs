//! The async runtimes, all made here, by one policy: **sync core, async
//! islands**.
//!
//! The pipeline (walk, tar, compression, encryption, signing, restore) is
//! plain threads and blocking I/O: it is CPU- and disk-bound, and threads
//! keep its memory and its cancellation simple. What is async is only
//! what its library is: the MongoDB driver, object_store and reqwest (the
//! bucket and notifications), hyper (the metrics endpoint), and tokio's
//! timers and signals (the daemon). Each such part owns a small runtime of
//! its own, made by one of the two functions below, and the sync code
//! blocks on it; no runtime is ever entered from inside another, and none
//! outlives the part that made it.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// A runtime on the calling thread: the daemon's timers and signals, a
/// notification's requests, a drill's signal handlers.
pub fn on_this_thread() -> io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

/// A runtime with two worker threads, for a network client that streams
/// while the calling thread works (the MongoDB driver, the bucket).
pub fn with_workers() -> io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
