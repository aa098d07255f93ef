//! The daemon: a backup (then retention) at every scheduled time, until the
//! shutdown future completes.
//!
//! Like mini-redis's `server::run`, [`serve`] takes its shutdown signal as
//! an argument, so tests and the binary drive it the same way. Time is the
//! wall clock, checked at least every 30 s: a machine that slept through a
//! scheduled time (or whose clock jumped) notices when it wakes, and a run
//! that was missed while the daemon was down is caught up at start.
//!
//! A backup runs on a thread of its own with a cancel flag. On shutdown it
//! gets `BACKUP_SHUTDOWN_GRACE` to finish (default: none), then it is
//! cancelled: it stops within a file or a batch, its temporary file is
//! removed and the lock released, and the daemon exits 0.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::backup::{self, BackupError, Request};
use crate::config::Settings;
use crate::logging::Verbosity;
use crate::state::{DaemonState, State};
use crate::store::{Store, StoreError};

const DAEMON_LOCK: &str = ".cofre-daemon.lock";
/// The longest the daemon sleeps before looking at the wall clock again.
const MAX_NAP: Duration = Duration::from_secs(30);

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
}

type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;

/// How one scheduled run ended.
enum RunEnd {
    Done,
    ShuttingDown,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(settings: &Settings) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Setup)?;
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
        serve(settings, shutdown).await
    })
}

/// Serves the schedule until `shutdown` completes.
pub async fn serve(
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let store = Store::create(&settings.backup_dir)?;
    let _daemon_lock = store
        .lock_named(DAEMON_LOCK, None)
        .map_err(|_| DaemonError::AlreadyRunning(store.dir().display().to_string()))?;
    let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    let schedule = &settings.schedule;
    let started = Utc::now();
    let upcoming: Vec<String> = schedule
        .upcoming(started, 3)
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect();
    tracing::info!(
        schedule = schedule.text(),
        timezone = %schedule.zone(),
        "daemon started (pid {}); next runs: {}",
        std::process::id(),
        upcoming.join(", ")
    );

    let mut first = true;
    loop {
        let now = Utc::now();
        let last_success = State::load(store.dir()).last_success.map(|s| s.started_at);
        let run_at = if first && settings.catch_up && schedule.missed_run(last_success, now) {
            match last_success {
                Some(t) => tracing::info!(
                    "catching up: the last successful backup ({t}) is older than the last scheduled time"
                ),
                None => tracing::info!("catching up: there is no successful backup yet"),
            }
            now
        } else {
            match schedule.next_after(now) {
                Some(t) => t,
                None => {
                    tracing::warn!("the schedule has no next run; the daemon stops");
                    break;
                }
            }
        };
        first = false;
        save_state(&store, settings, started, Some(run_at));
        if !sleep_until(run_at, shutdown.as_mut()).await {
            break;
        }
        let run_started = Utc::now();
        if let RunEnd::ShuttingDown = run_with_retries(settings, shutdown.as_mut()).await {
            break;
        }
        // Scheduled times that passed while this run was going are skipped.
        let now = Utc::now();
        let mut t = run_at;
        while let Some(next) = schedule.next_after(t) {
            if next > now {
                break;
            }
            if next > run_started {
                tracing::warn!(
                    "skipped the run due at {next}: the previous backup was still running"
                );
            }
            t = next;
        }
    }
    DaemonState::clear(store.dir());
    tracing::info!("daemon stopped");
    Ok(())
}

fn save_state(
    store: &Store,
    settings: &Settings,
    started: DateTime<Utc>,
    next_run: Option<DateTime<Utc>>,
) {
    let state = DaemonState {
        pid: std::process::id(),
        started_at: started,
        schedule: settings.schedule.text().to_owned(),
        timezone: settings.schedule.zone().to_string(),
        next_run,
    };
    if let Err(e) = state.save(store.dir()) {
        tracing::warn!(
            "cannot write the daemon state in {}: {e}",
            store.dir().display()
        );
    }
}

/// Sleeps until the wall clock reaches `at`; false when shutdown came first.
async fn sleep_until(at: DateTime<Utc>, mut shutdown: Shutdown<'_>) -> bool {
    loop {
        let left = (at - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(MAX_NAP)) => {}
            () = shutdown.as_mut() => return false,
        }
    }
}

/// One scheduled run: a backup and retention, retried with backoff.
async fn run_with_retries(settings: &Settings, mut shutdown: Shutdown<'_>) -> RunEnd {
    let attempts = settings.retries + 1;
    for attempt in 1..=attempts {
        let result = match run_backup(settings, shutdown.as_mut()).await {
            Some(r) => r,
            None => return RunEnd::ShuttingDown,
        };
        match result {
            Ok(report) => {
                tracing::info!(archive = %report.name, "scheduled backup done");
                if let Err(e) = crate::prune::after_backup(settings, Some(Duration::from_secs(60)))
                {
                    tracing::error!("retention failed: {e}");
                }
                return RunEnd::Done;
            }
            Err(BackupError::Store(StoreError::Locked { pid, .. })) => {
                tracing::warn!(
                    "skipped this run: another cofre process{} is backing up or pruning",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                );
                return RunEnd::Done;
            }
            Err(BackupError::Cancelled) => return RunEnd::ShuttingDown,
            Err(e) => {
                let msg = e.to_string();
                backup::record_failure(settings, &msg);
                if attempt == attempts {
                    tracing::error!(
                        "scheduled backup failed (attempt {attempt} of {attempts}): {msg}"
                    );
                    return RunEnd::Done;
                }
                let wait = backoff(settings, attempt);
                tracing::warn!(
                    "scheduled backup failed (attempt {attempt} of {attempts}), retrying in {}s: {msg}",
                    wait.as_secs()
                );
                if !sleep_until(
                    Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    shutdown.as_mut(),
                )
                .await
                {
                    return RunEnd::ShuttingDown;
                }
            }
        }
    }
    RunEnd::Done
}

/// 30 s, 60 s, 120 s... but never past half the time to the next run, so
/// retries of a frequent schedule do not run into it.
fn backoff(settings: &Settings, attempt: u32) -> Duration {
    let base = Duration::from_secs(30) * 2u32.saturating_pow(attempt - 1);
    let now = Utc::now();
    let to_next = settings
        .schedule
        .next_after(now)
        .and_then(|t| (t - now).to_std().ok())
        .unwrap_or(base);
    base.min(to_next / 2).max(Duration::from_millis(500))
}

/// Runs one backup on its own thread. `None` when shutdown interrupted it
/// (after the grace period, it was cancelled and has cleaned up).
async fn run_backup(
    settings: &Settings,
    mut shutdown: Shutdown<'_>,
) -> Option<Result<backup::BackupReport, BackupError>> {
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = oneshot::channel();
    let thread_settings = settings.clone();
    let thread_cancel = Arc::clone(&cancel);
    let spawned = std::thread::Builder::new()
        .name("cofre-backup".into())
        .spawn(move || {
            let req = Request {
                settings: &thread_settings,
                wait: None,
                verbosity: Verbosity::Quiet,
                cancel: Some(thread_cancel),
            };
            let _ = tx.send(backup::run(&req));
        });
    if let Err(e) = spawned {
        return Some(Err(BackupError::Write {
            dir: settings.backup_dir.clone(),
            source: e,
            hint: "the system could not start a thread",
        }));
    }
    tokio::select! {
        result = &mut rx => return Some(result.unwrap_or(Err(BackupError::Cancelled))),
        () = shutdown.as_mut() => {}
    }
    let grace = settings.shutdown_grace;
    if !grace.is_zero() {
        tracing::info!(
            "letting the running backup finish (up to {}s, BACKUP_SHUTDOWN_GRACE)",
            grace.as_secs()
        );
        if let Ok(Ok(result)) = tokio::time::timeout(grace, &mut rx).await {
            if let Ok(report) = &result {
                tracing::info!(archive = %report.name, "the running backup finished before shutdown");
            }
            return None;
        }
    }
    tracing::info!("stopping the running backup");
    cancel.store(true, Ordering::Relaxed);
    match rx.await {
        Ok(Ok(report)) => {
            tracing::info!(archive = %report.name, "the running backup finished before it could be stopped");
        }
        Ok(Err(BackupError::Cancelled)) | Err(_) => {
            tracing::info!("the running backup was stopped; its temporary file was removed");
        }
        Ok(Err(e)) => tracing::warn!("the running backup failed while stopping: {e}"),
    }
    None
}
