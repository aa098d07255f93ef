//! Logs: `tracing` to stderr (text or JSON), optionally appended to the
//! application's log file, with every registered secret scrubbed from every
//! line; and a progress bar when stderr is a terminal.
//!
//! Under cron (stderr not a terminal) only warnings and errors reach stderr,
//! so cron mails only when something happened; `--verbose` and the daemon
//! print everything. The log file always receives the informational lines.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::Level;
use tracing_subscriber::filter::{FilterFn, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::secret;

/// The target of the final error event: written to the log file and JSON
/// output, but not to text stderr (where `main` prints it plainly).
pub const EXIT_TARGET: &str = "cofre::exit";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Where logs go, and how (`BACKUP_LOG_FILE`, `BACKUP_LOG_FORMAT`,
/// `COFRE_DEBUG`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also append log lines to this file.
    pub file: Option<std::path::PathBuf>,
    /// Text or JSON.
    pub format: LogFormat,
    /// Debug-level lines on stderr and in the file.
    pub debug: bool,
}

/// How chatty stderr is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Informational lines when stderr is a terminal, else warnings.
    Normal,
    /// Informational lines always.
    Verbose,
}

/// A writer that scrubs secrets from each formatted event.
struct Scrubbing<W> {
    inner: Arc<Mutex<W>>,
}

impl<W> Clone for Scrubbing<W> {
    fn clone(&self) -> Self {
        Scrubbing {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct ScrubbingWriter<'a, W: Write> {
    inner: &'a Mutex<W>,
}

impl<W: Write> Write for ScrubbingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = secret::scrub(&String::from_utf8_lossy(buf));
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(text.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Scrubbing<W> {
    type Writer = ScrubbingWriter<'a, W>;
    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter { inner: &self.inner }
    }
}

/// Opens the log file for appending: never through a symlink (cofre often
/// runs as root, and the file is in a directory the application writes),
/// and only a regular file (a FIFO would block, a device is not a log).
fn open_log(path: &Path) -> io::Result<std::fs::File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                io::Error::other("it is a symlink, which cofre does not follow")
            } else {
                e
            }
        })?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    let _ = rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::APPEND);
    Ok(f)
}

/// Sets up logging. `log_file` failures are reported and logging goes on
/// without it (a missing log must not stop a backup).
pub fn init(opts: &Options, verbosity: Verbosity, daemon: bool) {
    let stderr_level = match verbosity {
        Verbosity::Quiet => LevelFilter::ERROR,
        Verbosity::Verbose => LevelFilter::INFO,
        Verbosity::Normal if daemon || io::stderr().is_terminal() => LevelFilter::INFO,
        Verbosity::Normal => LevelFilter::WARN,
    };
    let (format, log_file, debug) = (opts.format, opts.file.as_deref(), opts.debug);
    let stderr_level = if debug {
        LevelFilter::DEBUG
    } else {
        stderr_level
    };
    let ours = |meta: &tracing::Metadata<'_>| meta.target().starts_with("cofre");
    let stderr = Scrubbing {
        inner: Arc::new(Mutex::new(io::stderr())),
    };
    let text_stderr = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(stderr.clone())
            .with_target(false)
            .with_ansi(io::stderr().is_terminal())
            .with_filter(stderr_level)
            .with_filter(FilterFn::new(move |m| ours(m) && m.target() != EXIT_TARGET))
    });
    let json_stderr = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(stderr.clone())
            .with_filter(stderr_level)
            .with_filter(FilterFn::new(ours))
    });
    let mut file_error = None;
    let file_layer = log_file.and_then(|path| match open_log(path) {
        Ok(f) => {
            let writer = Scrubbing {
                inner: Arc::new(Mutex::new(f)),
            };
            let level = if debug { Level::DEBUG } else { Level::INFO };
            Some(match format {
                LogFormat::Text => tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_target(false)
                    .with_filter(LevelFilter::from_level(level))
                    .with_filter(FilterFn::new(ours))
                    .boxed(),
                LogFormat::Json => tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(writer)
                    .with_filter(LevelFilter::from_level(level))
                    .with_filter(FilterFn::new(ours))
                    .boxed(),
            })
        }
        Err(e) => {
            file_error = Some(format!(
                "cannot append to BACKUP_LOG_FILE {}: {e}; logging to stderr only",
                path.display()
            ));
            None
        }
    });
    let tail = TailLayer
        .with_filter(LevelFilter::INFO)
        .with_filter(FilterFn::new(move |m| ours(m) && m.target() != EXIT_TARGET));
    let _ = tracing_subscriber::registry()
        .with(tail)
        .with(text_stderr)
        .with(json_stderr)
        .with(file_layer)
        .try_init();
    if let Some(msg) = file_error {
        tracing::warn!("{msg}");
    }
}

/// Lines the tail keeps.
const TAIL_LINES: usize = 40;

fn tail() -> &'static Mutex<VecDeque<(u64, String)>> {
    static TAIL: Mutex<VecDeque<(u64, String)>> = Mutex::new(VecDeque::new());
    &TAIL
}

static TAIL_SEQ: AtomicU64 = AtomicU64::new(0);

/// A mark in the log: [`tail_since`] returns only lines logged after it.
pub fn tail_mark() -> u64 {
    TAIL_SEQ.load(Ordering::Relaxed)
}

/// The last `n` informational lines logged since `mark`, secrets scrubbed
/// (what a notification carries as the run's log tail).
pub fn tail_since(mark: u64, n: usize) -> Vec<String> {
    let tail = tail().lock().unwrap_or_else(|e| e.into_inner());
    let lines: Vec<String> = tail
        .iter()
        .filter(|(seq, _)| *seq > mark)
        .map(|(_, l)| l.clone())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Keeps the last [`TAIL_LINES`] lines in memory, formatted plainly
/// (`LEVEL message key=value`). tracing-subscriber's formatters write to a
/// writer per event; collecting them into a ring needs only this visitor.
struct TailLayer;

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl tracing::field::Visit for LineVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push_str(&format!(" {}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TailLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut v = LineVisitor::default();
        event.record(&mut v);
        let line = secret::scrub(&format!(
            "{} {}{}",
            event.metadata().level(),
            v.message,
            v.fields
        ));
        let seq = TAIL_SEQ.fetch_add(1, Ordering::Relaxed) + 1;
        let mut tail = tail().lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back((seq, line));
    }
}

/// A progress bar on stderr when it is a terminal and output is not quiet;
/// otherwise a hidden one (calls on it cost an atomic add).
pub fn progress(verbosity: Verbosity, message: &str) -> ProgressBar {
    if verbosity == Verbosity::Quiet || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} {binary_bytes} ({binary_bytes_per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(message.to_owned());
    pb.enable_steady_tick(Duration::from_millis(250));
    pb
}
