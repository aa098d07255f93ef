//! `cofre daemon`: backups on `BACKUP_SCHEDULE` (and drills on
//! `BACKUP_DRILL_SCHEDULE`) until SIGTERM or SIGINT.
//!
//! The scheduler itself ([`crate::daemon::serve`]) knows only its plan, a
//! clock and a set of jobs; here are the real jobs, which compose every
//! feature: backups on a thread of their own, retention, offsite uploads in
//! the background, drills, reports, and the state files the schedule reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::backup::{self, BackupError, Request};
use crate::cli::DaemonArgs;
use crate::config::Settings;
use crate::daemon::{self, JobError, JobFuture, Jobs, SystemClock};
use crate::logging::Verbosity;
use crate::report::BackupRun;
use crate::state::{DaemonState, DrillState, State};
use crate::store::{Store, StoreError};

use super::Outcome;

/// The lock only a running daemon holds, so two never serve one directory.
const DAEMON_LOCK: &str = ".cofre-daemon.lock";

/// Runs the daemon.
pub fn run(
    args: &DaemonArgs,
    settings: &Settings,
    _verbosity: Verbosity,
) -> Result<Outcome, anyhow::Error> {
    if args.exit_with_parent {
        exit_with_parent()?;
    }
    serve(settings)?;
    Ok(Outcome::Success)
}

/// Asks the kernel for SIGTERM when the parent dies; the daemon then stops
/// as it does on any SIGTERM (a running backup cleans up). A parent that
/// died before the request leaves the daemon with init (or a subreaper)
/// as parent: then it does not start at all.
fn exit_with_parent() -> Result<(), anyhow::Error> {
    let parent = rustix::process::getppid();
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM)).map_err(
        |e| anyhow::anyhow!("cannot ask to stop with the parent process (--exit-with-parent): {e}"),
    )?;
    if rustix::process::getppid() != parent {
        anyhow::bail!("the parent process exited before the daemon started (--exit-with-parent)");
    }
    Ok(())
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon serves this directory.
    #[error(
        "another cofre daemon already runs for {0}; stop it first (two daemons would back up twice)"
    )]
    AlreadyRunning(String),
    /// The backup directory is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signals or the runtime could not be set up.
    #[error("cannot start the daemon: {0}")]
    Setup(std::io::Error),
    /// The metrics address cannot be served.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

impl crate::exit::Coded for DaemonError {
    fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            DaemonError::AlreadyRunning(_) => Exit::Locked,
            DaemonError::Store(e) => e.exit(),
            DaemonError::Metrics(e) => e.exit(),
            DaemonError::Setup(_) => Exit::Failure,
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT, with the wall clock and real
/// backups.
fn serve(settings: &Settings) -> Result<(), DaemonError> {
    let rt = crate::rt::on_this_thread().map_err(DaemonError::Setup)?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Setup)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Setup)?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
                _ = int.recv() => tracing::info!("SIGINT received, stopping"),
            }
        };
        let store = Store::create(&settings.backup_dir)?;
        let _daemon_lock = store
            .lock_named(DAEMON_LOCK, None)
            .map_err(|_| DaemonError::AlreadyRunning(store.dir().display().to_string()))?;
        let metrics = match settings.metrics.addr {
            Some(addr) => {
                let listener = crate::metrics::bind(addr).await?;
                tracing::info!("serving metrics at http://{addr}/metrics");
                Some(tokio::spawn(crate::metrics::serve(
                    listener,
                    settings.metrics.clone(),
                )))
            }
            None => None,
        };
        let jobs = Live::new(settings, store.clone());
        crate::metrics::update_file(&settings.metrics);
        // Archives a past outage kept from the bucket go up now.
        jobs.upload_in_background();
        let wake = tokio::sync::Notify::new();
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let capture_stop = Arc::new(AtomicBool::new(false));
        let capture = start_capture(settings, events_tx, Arc::clone(&capture_stop));
        let capture_events = async {
            let mut failing = false;
            while let Some(event) = events.recv().await {
                on_capture_event(&jobs, &wake, event, &mut failing);
            }
            // The capture ended on its own: serve on without it.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = daemon::serve(&settings.daemon, &jobs, &SystemClock, shutdown, &wake) => {}
            () = capture_events => {}
        }
        if let Some(c) = capture {
            // The open slice is closed before the daemon exits.
            capture_stop.store(true, Ordering::Relaxed);
            let _ = c.join();
        }
        if let Some(task) = metrics {
            task.abort();
        }
        jobs.stop_uploading();
        jobs.finish_reports();
        DaemonState::clear(store.dir());
        tracing::info!("daemon stopped");
        Ok(())
    })
}

/// Starts the oplog capture on a thread of its own, when the backup has a
/// database and `BACKUP_OPLOG` is not `off`.
fn start_capture(
    settings: &Settings,
    events: tokio::sync::mpsc::UnboundedSender<crate::oplog::capture::Event>,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let db = settings.backup.mongo.as_ref()?;
    if settings.oplog.mode == crate::oplog::Mode::Off {
        return None;
    }
    let cfg = crate::oplog::capture::Config {
        backup_dir: settings.backup_dir.clone(),
        source: settings.source.clone(),
        uri: db.uri.clone(),
        opts: settings.oplog,
        keys: settings.keys.clone(),
        encryption: settings.backup.encryption.clone(),
    };
    let spawned = std::thread::Builder::new()
        .name("cofre-oplog".into())
        .spawn(move || {
            let on_event = move |e| {
                let _ = events.send(e);
            };
            if let Err(e) = crate::oplog::capture::run(&cfg, &stop, &on_event) {
                tracing::error!("the oplog capture cannot run: {e}");
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!("cannot start the oplog capture: {e}");
            None
        }
    }
}

/// What the daemon does when the capture tells it something: a closed
/// slice goes up; a hole asks for a new base at once and is reported; a
/// failure is reported once until the capture works again.
fn on_capture_event(
    jobs: &Live,
    wake: &tokio::sync::Notify,
    event: crate::oplog::capture::Event,
    failing: &mut bool,
) {
    use crate::oplog::capture::Event;
    match event {
        Event::Sealed => {
            *failing = false;
            crate::metrics::update_file(&jobs.settings.metrics);
            jobs.upload_in_background();
        }
        Event::Gap { from, to } => {
            wake.notify_one();
            let reports = jobs.settings.report();
            let msg = format!(
                "the oplog history has a hole: the server's oplog starts at {to}, after the last \
                 entry captured ({from}); a new backup starts a new history now"
            );
            jobs.report_in_background(move || {
                crate::report::oplog_trouble(&reports, crate::notify::Event::OplogGap, &msg);
            });
        }
        Event::Failure(why) => {
            if !*failing {
                *failing = true;
                let reports = jobs.settings.report();
                jobs.report_in_background(move || {
                    crate::report::oplog_trouble(
                        &reports,
                        crate::notify::Event::OplogFailure,
                        &format!("the oplog capture failed (it retries): {why}"),
                    );
                });
            }
        }
    }
}

/// The real jobs: backups on a thread of their own, retention, offsite
/// uploads in the background (a slow upload never delays the next backup),
/// the state files in `BACKUP_DIR`.
pub struct Live {
    settings: Settings,
    store: Store,
    started: DateTime<Utc>,
    uploader: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    upload_turn: Arc<std::sync::Mutex<UploadTurn>>,
    upload_cancel: Arc<AtomicBool>,
    /// The scheduled run in progress, for its report.
    run: std::sync::Mutex<Option<BackupRun>>,
    /// What the last successful backup made: name, size, warnings.
    made: Arc<std::sync::Mutex<Option<Made>>>,
    /// Reports being sent (joined at shutdown).
    reports: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// What a backup made, for its report: archive name, size, warnings.
type Made = (String, u64, Vec<String>);

/// Whether the upload thread runs, and whether it must go round once more.
/// One mutex holds both, so a request made while the thread decides to
/// stop is never lost.
#[derive(Default)]
struct UploadTurn {
    running: bool,
    again: bool,
}

impl Live {
    /// Jobs for `settings`, recording in `store`.
    pub fn new(settings: &Settings, store: Store) -> Live {
        Live {
            settings: settings.clone(),
            store,
            started: Utc::now(),
            uploader: std::sync::Mutex::new(None),
            upload_turn: Arc::default(),
            run: std::sync::Mutex::new(None),
            made: Arc::default(),
            reports: std::sync::Mutex::new(Vec::new()),
            upload_cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Brings the bucket up to date on a thread of its own; when one is
    /// already at it, it goes round once more when done.
    pub fn upload_in_background(&self) {
        let Some(offsite) = self.settings.offsite() else {
            return;
        };
        {
            let mut turn = self.upload_turn.lock().unwrap_or_else(|e| e.into_inner());
            if turn.running {
                turn.again = true;
                return;
            }
            turn.running = true;
            turn.again = false;
        }
        let reports = self.settings.report();
        let turn = Arc::clone(&self.upload_turn);
        let cancel = Arc::clone(&self.upload_cancel);
        let spawned = std::thread::Builder::new()
            .name("cofre-upload".into())
            .spawn(move || {
                loop {
                    let mark = crate::logging::tail_mark();
                    match crate::offsite::sync(&offsite, &cancel) {
                        Ok(r) => {
                            if !r.uploaded.is_empty() || !r.deleted.is_empty() {
                                tracing::info!(
                                    uploaded = r.uploaded.len(),
                                    deleted = r.deleted.len(),
                                    "offsite copies up to date in {}",
                                    offsite.remote.url
                                );
                            }
                            crate::metrics::update_file(&reports.metrics);
                        }
                        Err(e) => {
                            tracing::error!(
                                "offsite copy failed: {e}; the archives stay here and go up at the next run"
                            );
                            if !cancel.load(Ordering::Relaxed) {
                                crate::report::offsite_failed(&reports, &e.to_string(), mark);
                            }
                        }
                    }
                    let mut turn = turn.lock().unwrap_or_else(|e| e.into_inner());
                    if turn.again && !cancel.load(Ordering::Relaxed) {
                        turn.again = false;
                        continue;
                    }
                    turn.running = false;
                    break;
                }
            });
        match spawned {
            Ok(handle) => {
                let mut slot = self.uploader.lock().unwrap_or_else(|e| e.into_inner());
                // A previous thread has finished its turn; reap it.
                if let Some(old) = slot.replace(handle) {
                    let _ = old.join();
                }
            }
            Err(e) => {
                self.upload_turn
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .running = false;
                tracing::error!(
                    "cannot start the upload thread: {e}; the archives go up at the next run"
                );
            }
        }
    }

    /// Sends a report on a thread of its own: notification targets can be
    /// slow, and the schedule must not wait for them.
    fn report_in_background(&self, f: impl FnOnce() + Send + 'static) {
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        reports.retain(|h| !h.is_finished());
        match std::thread::Builder::new()
            .name("cofre-report".into())
            .spawn(f)
        {
            Ok(h) => reports.push(h),
            Err(e) => tracing::warn!("cannot send the run's report: {e}"),
        }
    }

    /// Waits for the reports still being sent.
    pub fn finish_reports(&self) {
        let reports = std::mem::take(&mut *self.reports.lock().unwrap_or_else(|e| e.into_inner()));
        for h in reports {
            let _ = h.join();
        }
    }

    /// Stops an upload in progress (between parts) and waits for it.
    pub fn stop_uploading(&self) {
        self.upload_cancel.store(true, Ordering::Relaxed);
        let handle = self
            .uploader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Jobs for Live {
    fn last_success(&self) -> Option<DateTime<Utc>> {
        State::load(self.store.dir())
            .last_success
            .map(|s| s.started_at)
    }

    fn last_drill(&self) -> Option<DateTime<Utc>> {
        DrillState::load(self.store.dir())
            .last
            .map(|r| r.started_at)
    }

    fn drill(&self, cancel: Arc<AtomicBool>) -> JobFuture<'_> {
        let (tx, rx) = oneshot::channel();
        let settings = self.settings.clone();
        let spawned = std::thread::Builder::new()
            .name("cofre-drill".into())
            .spawn(move || {
                let _ = tx.send(drill_now(&settings, cancel));
            });
        Box::pin(async move {
            if let Err(e) = spawned {
                return Err(JobError::Failed(format!(
                    "the system could not start a thread: {e}"
                )));
            }
            rx.await.unwrap_or(Err(JobError::Cancelled))
        })
    }

    fn backup(&self, cancel: Arc<AtomicBool>) -> JobFuture<'_> {
        let (tx, rx) = oneshot::channel();
        let settings = self.settings.clone();
        let made = Arc::clone(&self.made);
        let spawned = std::thread::Builder::new()
            .name("cofre-backup".into())
            .spawn(move || {
                let req = Request {
                    opts: &settings.backup,
                    wait: None,
                    verbosity: Verbosity::Quiet,
                    cancel: Some(cancel),
                };
                let result = backup::run(&req);
                if let Ok(r) = &result {
                    let size = std::fs::metadata(&r.path).map_or(0, |m| m.len());
                    let warnings = r
                        .info
                        .warnings
                        .iter()
                        .map(|w| format!("{}: {}", w.path, w.message))
                        .collect();
                    *made.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((r.name.clone(), size, warnings));
                }
                let _ = tx.send(result);
            });
        Box::pin(async move {
            if let Err(e) = spawned {
                return Err(JobError::Failed(format!(
                    "the system could not start a thread: {e}"
                )));
            }
            match rx.await {
                Ok(Ok(report)) => Ok(report.name),
                Ok(Err(BackupError::Store(StoreError::Locked { pid, .. }))) => {
                    Err(JobError::Locked(pid))
                }
                Ok(Err(BackupError::Cancelled)) | Err(_) => Err(JobError::Cancelled),
                Ok(Err(e)) => Err(JobError::Failed(e.to_string())),
            }
        })
    }

    fn run_started(&self) {
        *self.run.lock().unwrap_or_else(|e| e.into_inner()) = Some(BackupRun::begin());
        if self.settings.notify.any_wants(crate::notify::Event::Start) {
            let reports = self.settings.report();
            self.report_in_background(move || crate::report::announce_start(&reports));
        }
    }

    fn after_backup(&self) {
        let pruned = self
            .settings
            .keys
            .load()
            .map_err(anyhow::Error::from)
            .and_then(|(_, trusted)| {
                Ok(crate::prune::after_backup(
                    &self.settings.prune(),
                    &trusted,
                    Some(Duration::from_secs(60)),
                )?)
            });
        if let Err(e) = pruned {
            tracing::error!("retention failed: {e:#}");
        }
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner()).take();
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(run), Some((name, size, warnings))) = (run, made) {
            let reports = self.settings.report();
            self.report_in_background(move || run.succeeded(&reports, &name, size, warnings));
        }
        self.upload_in_background();
    }

    fn gave_up(&self, message: &str) {
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner()).take();
        let run = run.unwrap_or_else(BackupRun::begin);
        let reports = self.settings.report();
        let message = message.to_owned();
        self.report_in_background(move || run.failed(&reports, &message));
    }

    fn record_failure(&self, message: &str) {
        backup::record_failure(&self.settings.backup_dir, message);
    }

    fn next_runs(&self, backup: Option<DateTime<Utc>>, drill: Option<DateTime<Utc>>) {
        let state = DaemonState {
            pid: std::process::id(),
            started_at: self.started,
            schedule: self.settings.daemon.schedule.text().to_owned(),
            timezone: self.settings.daemon.schedule.zone().to_string(),
            next_run: backup,
            next_drill: drill,
            drill_schedule: self
                .settings
                .daemon
                .drill
                .as_ref()
                .map(|d| d.text().to_owned()),
        };
        if let Err(e) = state.save(self.store.dir()) {
            tracing::warn!(
                "cannot write the daemon state in {}: {e}",
                self.store.dir().display()
            );
        }
    }
}

/// One drill of the newest local archive, as the daemon runs it.
fn drill_now(settings: &Settings, cancel: Arc<AtomicBool>) -> Result<String, JobError> {
    let access = super::access(settings, &crate::cli::KeyArgs::default())
        .map_err(|e| JobError::Failed(e.to_string()))?;
    let mark = crate::logging::tail_mark();
    let record = crate::drill::run(&crate::drill::Request {
        opts: &settings.drill,
        open: access.request(&settings.backup_dir, "latest", None, false),
        wait: None,
        verbosity: Verbosity::Quiet,
        cancel,
    });
    if let Ok(r) = &record {
        crate::report::drill_finished(&settings.report(), r, mark);
    }
    match record {
        Ok(r) if r.ok => Ok(r.archive),
        Ok(r) if r.failed_check.as_deref() == Some("cancelled") => Err(JobError::Cancelled),
        Ok(r) => Err(JobError::Failed(format!(
            "{} at {}: {}",
            r.archive,
            r.failed_check.unwrap_or_default(),
            r.error.unwrap_or_default()
        ))),
        Err(StoreError::Locked { pid, .. }) => Err(JobError::Locked(pid)),
        Err(e) => Err(JobError::Failed(e.to_string())),
    }
}
