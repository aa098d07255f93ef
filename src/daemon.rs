//! The daemon: a backup (then retention) at every scheduled time, and a
//! restore drill at every drill time, until the shutdown future completes.
//! One job runs at a time: a drill due while a backup runs starts when it
//! ends, and a backup due while a drill runs starts when the drill ends
//! (both also hold the store's lock, so neither can run beside the other
//! started from a shell either).
//!
//! Like mini-redis's `server::run`, [`serve`] takes its shutdown signal as
//! an argument; it also takes its clock and its jobs, so the binary drives
//! it with the wall clock and real backups, and the tests drive it in
//! virtual time (a paused tokio clock) with jobs that only record what they
//! were asked to do. Time is checked at least every 30 s: a machine that
//! slept through a scheduled time (or whose clock jumped) notices when it
//! wakes, and a run missed while the daemon was down is caught up at start.
//!
//! A backup runs with a cancel flag. On shutdown it gets
//! `BACKUP_SHUTDOWN_GRACE` to finish (default: none), then it is cancelled:
//! it stops within a file or a batch, its temporary file is removed and the
//! lock released, and the daemon exits 0. A drill is cancelled at once; it
//! drops its scratch databases and removes its scratch directory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::schedule::Schedule;

/// The longest the daemon sleeps before looking at the clock again.
const MAX_NAP: Duration = Duration::from_secs(30);

/// What time it is (on the wall).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that moves with tokio's clock: paused in tests, it only
/// moves when every task waits, and then straight to the next timer.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: DateTime<Utc>,
    at: tokio::time::Instant,
}

#[cfg(test)]
impl TokioClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        TokioClock {
            start,
            at: tokio::time::Instant::now(),
        }
    }
}

#[cfg(test)]
impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.start + chrono::Duration::from_std(self.at.elapsed()).unwrap_or_default()
    }
}

/// How a backup job ended, as far as the schedule cares.
#[derive(Debug)]
pub enum JobError {
    /// Another cofre process holds the lock: this run is skipped.
    Locked(Option<u32>),
    /// It was cancelled (shutdown).
    Cancelled,
    /// It failed; the message says why.
    Failed(String),
}

/// A boxed job future.
pub type JobFuture<'a> = Pin<Box<dyn Future<Output = Result<String, JobError>> + Send + 'a>>;

/// What the daemon does at its scheduled times, and what it reads and
/// records between them.
pub trait Jobs: Send + Sync {
    /// When the last backup that succeeded started.
    fn last_success(&self) -> Option<DateTime<Utc>>;
    /// When the last restore drill started (passed or not).
    fn last_drill(&self) -> Option<DateTime<Utc>>;
    /// One backup; it watches `cancel` and stops soon after it is set.
    /// Returns the archive's name.
    fn backup(&self, cancel: Arc<AtomicBool>) -> JobFuture<'_>;
    /// One restore drill of the newest archive, which records itself;
    /// it watches `cancel`. Returns the archive's name when it passed.
    fn drill(&self, cancel: Arc<AtomicBool>) -> JobFuture<'_>;
    /// A scheduled backup begins (before its first attempt).
    fn run_started(&self);
    /// What follows a successful backup: retention, the report (metrics,
    /// notification), the offsite copy.
    fn after_backup(&self);
    /// A scheduled backup failed on its last attempt.
    fn gave_up(&self, message: &str);
    /// Records a failed attempt (for `status`).
    fn record_failure(&self, message: &str);
    /// Publishes the next backup and drill (for `status`).
    fn next_runs(&self, backup: Option<DateTime<Utc>>, drill: Option<DateTime<Utc>>);
}

/// The daemon's settings, as it uses them.
#[derive(Debug, Clone)]
pub struct Plan {
    /// When backups run.
    pub schedule: Schedule,
    /// Run a missed backup at start.
    pub catch_up: bool,
    /// Retries of a failed run.
    pub retries: u32,
    /// How long a running backup may finish after a stop signal.
    pub shutdown_grace: Duration,
    /// When restore drills run (`None`: never).
    pub drill: Option<Schedule>,
}

type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;

/// How one scheduled run ended.
enum RunEnd {
    Done,
    ShuttingDown,
}

/// Serves the schedule until `shutdown` completes. A notification on
/// `wake` runs a backup at once (the oplog capture found a hole and needs
/// a new base).
pub async fn serve(
    plan: &Plan,
    jobs: &dyn Jobs,
    clock: &dyn Clock,
    shutdown: impl Future<Output = ()> + Send,
    wake: &tokio::sync::Notify,
) {
    let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    let schedule = &plan.schedule;
    let upcoming: Vec<String> = schedule
        .upcoming(clock.now(), 3)
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
    if let Some(d) = &plan.drill {
        tracing::info!(schedule = d.text(), "restore drills scheduled");
    }
    let mut first = true;
    let mut backup_due = None;
    let mut drill_due = None;
    loop {
        let now = clock.now();
        if backup_due.is_none() {
            backup_due = next_run(plan, jobs.last_success(), now, first);
        }
        if drill_due.is_none()
            && let Some(d) = &plan.drill
        {
            drill_due = next_drill(plan.catch_up && first, d, jobs.last_drill(), now);
        }
        first = false;
        jobs.next_runs(backup_due, drill_due);
        // A backup wins a tie: the drill then tests the archive it made.
        let (at, is_drill) = match (backup_due, drill_due) {
            (Some(b), Some(d)) if d < b => (d, true),
            (Some(b), _) => (b, false),
            (None, Some(d)) => (d, true),
            (None, None) => {
                tracing::warn!("the schedule has no next run; the daemon stops");
                break;
            }
        };
        match sleep_until(clock, at, shutdown.as_mut(), wake).await {
            Slept::Shutdown => break,
            Slept::Woken => {
                tracing::info!("a backup now: the oplog capture needs a new base");
                if let RunEnd::ShuttingDown =
                    run_with_retries(plan, jobs, clock, shutdown.as_mut()).await
                {
                    break;
                }
                backup_due = None;
                continue;
            }
            Slept::Due => {}
        }
        if is_drill {
            drill_due = None;
            if run_drill(jobs, shutdown.as_mut()).await.is_none() {
                break;
            }
            continue;
        }
        backup_due = None;
        let run_started = clock.now();
        if let RunEnd::ShuttingDown = run_with_retries(plan, jobs, clock, shutdown.as_mut()).await {
            break;
        }
        warn_skipped(schedule, at, run_started, clock.now());
    }
}

/// When the next drill runs: now, when one was missed since the last drill
/// (catching up at start; a first drill waits for its time); else the next
/// scheduled time.
fn next_drill(
    catch_up: bool,
    schedule: &Schedule,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if catch_up && last.is_some() && schedule.missed_run(last, now) {
        tracing::info!("catching up a missed restore drill");
        return Some(now);
    }
    schedule.next_after(now)
}

/// Runs one drill. `None` when shutdown interrupted it (it was cancelled
/// and has cleaned up).
async fn run_drill(jobs: &dyn Jobs, mut shutdown: Shutdown<'_>) -> Option<()> {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut job = jobs.drill(Arc::clone(&cancel));
    let result = tokio::select! {
        result = &mut job => result,
        () = shutdown.as_mut() => {
            tracing::info!("stopping the running drill");
            cancel.store(true, Ordering::Relaxed);
            let _ = job.await;
            tracing::info!("the running drill was stopped; its scratch database and directory were removed");
            return None;
        }
    };
    match result {
        Ok(archive) => tracing::info!(archive = %archive, "scheduled drill passed"),
        Err(JobError::Locked(pid)) => tracing::warn!(
            "skipped this drill: another cofre process{} is backing up or pruning",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        ),
        Err(JobError::Cancelled) => return None,
        Err(JobError::Failed(msg)) => tracing::error!("scheduled drill failed: {msg}"),
    }
    Some(())
}

/// When the next backup runs: now, for a catch-up at start; else the next
/// scheduled time.
fn next_run(
    plan: &Plan,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    first: bool,
) -> Option<DateTime<Utc>> {
    if first && plan.catch_up && plan.schedule.missed_run(last_success, now) {
        match last_success {
            Some(t) => tracing::info!(
                "catching up: the last successful backup ({t}) is older than the last scheduled time"
            ),
            None => tracing::info!("catching up: there is no successful backup yet"),
        }
        return Some(now);
    }
    plan.schedule.next_after(now)
}

/// Scheduled times that passed while a run was going are skipped, with a
/// warning for each.
fn warn_skipped(
    schedule: &Schedule,
    run_at: DateTime<Utc>,
    run_started: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    let mut t = run_at;
    while let Some(next) = schedule.next_after(t) {
        if next > now {
            break;
        }
        if next > run_started {
            tracing::warn!("skipped the run due at {next}: the previous backup was still running");
        }
        t = next;
    }
}

/// Sleeps until the clock reaches `at`; false when shutdown came first.
/// How a wait for the next run ended.
enum Slept {
    /// Its time came.
    Due,
    /// A backup is wanted now.
    Woken,
    /// The daemon is stopping.
    Shutdown,
}

async fn sleep_until(
    clock: &dyn Clock,
    at: DateTime<Utc>,
    mut shutdown: Shutdown<'_>,
    wake: &tokio::sync::Notify,
) -> Slept {
    loop {
        let left = (at - clock.now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return Slept::Due;
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(MAX_NAP)) => {}
            () = wake.notified() => return Slept::Woken,
            () = shutdown.as_mut() => return Slept::Shutdown,
        }
    }
}

/// One scheduled run: a backup and retention, retried with backoff.
async fn run_with_retries(
    plan: &Plan,
    jobs: &dyn Jobs,
    clock: &dyn Clock,
    mut shutdown: Shutdown<'_>,
) -> RunEnd {
    let attempts = plan.retries + 1;
    jobs.run_started();
    for attempt in 1..=attempts {
        let Some(result) = run_backup(plan, jobs, shutdown.as_mut()).await else {
            return RunEnd::ShuttingDown;
        };
        let msg = match result {
            Ok(archive) => {
                tracing::info!(archive = %archive, "scheduled backup done");
                jobs.after_backup();
                return RunEnd::Done;
            }
            Err(JobError::Locked(pid)) => {
                tracing::warn!(
                    "skipped this run: another cofre process{} is backing up or pruning",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                );
                return RunEnd::Done;
            }
            Err(JobError::Cancelled) => return RunEnd::ShuttingDown,
            Err(JobError::Failed(msg)) => msg,
        };
        jobs.record_failure(&msg);
        if attempt == attempts {
            tracing::error!("scheduled backup failed (attempt {attempt} of {attempts}): {msg}");
            jobs.gave_up(&msg);
            return RunEnd::Done;
        }
        let wait = backoff(&plan.schedule, attempt, clock.now());
        tracing::warn!(
            "scheduled backup failed (attempt {attempt} of {attempts}), retrying in {}s: {msg}",
            wait.as_secs()
        );
        let until = clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
        // (A wake during the wait is this retry, sooner.)
        if let Slept::Shutdown =
            sleep_until(clock, until, shutdown.as_mut(), &tokio::sync::Notify::new()).await
        {
            return RunEnd::ShuttingDown;
        }
    }
    RunEnd::Done
}

/// 30 s, 60 s, 120 s... but never past half the time to the next run, so
/// retries of a frequent schedule do not run into it.
pub fn backoff(schedule: &Schedule, attempt: u32, now: DateTime<Utc>) -> Duration {
    let base = Duration::from_secs(30) * 2u32.saturating_pow(attempt - 1);
    let to_next = schedule
        .next_after(now)
        .and_then(|t| (t - now).to_std().ok())
        .unwrap_or(base);
    base.min(to_next / 2).max(Duration::from_millis(500))
}

/// Runs one backup. `None` when shutdown interrupted it (after the grace
/// period, it was cancelled and has cleaned up).
async fn run_backup(
    plan: &Plan,
    jobs: &dyn Jobs,
    mut shutdown: Shutdown<'_>,
) -> Option<Result<String, JobError>> {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut job = jobs.backup(Arc::clone(&cancel));
    tokio::select! {
        result = &mut job => return Some(result),
        () = shutdown.as_mut() => {}
    }
    let grace = plan.shutdown_grace;
    if !grace.is_zero() {
        tracing::info!(
            "letting the running backup finish (up to {}s, BACKUP_SHUTDOWN_GRACE)",
            grace.as_secs()
        );
        if let Ok(result) = tokio::time::timeout(grace, &mut job).await {
            if let Ok(archive) = &result {
                tracing::info!(archive = %archive, "the running backup finished before shutdown");
            }
            return None;
        }
    }
    tracing::info!("stopping the running backup");
    cancel.store(true, Ordering::Relaxed);
    match job.await {
        Ok(archive) => {
            tracing::info!(archive = %archive, "the running backup finished before it could be stopped");
        }
        Err(JobError::Cancelled) => {
            tracing::info!("the running backup was stopped; its temporary file was removed");
        }
        Err(e) => tracing::warn!("the running backup failed while stopping: {e:?}"),
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::schedule::Zone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Jobs that take a set time and succeed or fail as told, recording
    /// when each backup started and how it ended.
    struct Fake {
        clock: TokioClock,
        took: Duration,
        /// Outcomes in order (`true` succeeds); then success.
        outcomes: Mutex<Vec<bool>>,
        last_success: Mutex<Option<DateTime<Utc>>>,
        log: Mutex<Vec<(DateTime<Utc>, &'static str)>>,
        /// Runs begun and given up, as reported.
        reports: Mutex<Vec<(DateTime<Utc>, &'static str)>>,
        drill_took: Duration,
        last_drill: Mutex<Option<DateTime<Utc>>>,
    }

    impl Fake {
        fn new(clock: TokioClock, took: Duration, outcomes: &[bool]) -> Fake {
            Fake {
                clock,
                took,
                outcomes: Mutex::new(outcomes.iter().rev().copied().collect()),
                last_success: Mutex::new(None),
                log: Mutex::new(Vec::new()),
                reports: Mutex::new(Vec::new()),
                drill_took: Duration::from_secs(60),
                last_drill: Mutex::new(None),
            }
        }

        fn log(&self) -> Vec<(DateTime<Utc>, &'static str)> {
            self.log.lock().unwrap().clone()
        }

        fn starts(&self) -> Vec<DateTime<Utc>> {
            self.log()
                .into_iter()
                .filter(|(_, w)| *w == "start")
                .map(|(t, _)| t)
                .collect()
        }
    }

    impl Jobs for Fake {
        fn last_success(&self) -> Option<DateTime<Utc>> {
            *self.last_success.lock().unwrap()
        }

        fn backup(&self, cancel: Arc<AtomicBool>) -> JobFuture<'_> {
            Box::pin(async move {
                let started = self.clock.now();
                self.log.lock().unwrap().push((started, "start"));
                let step = Duration::from_millis(100);
                let mut spent = Duration::ZERO;
                while spent < self.took {
                    if cancel.load(Ordering::Relaxed) {
                        self.log
                            .lock()
                            .unwrap()
                            .push((self.clock.now(), "cancelled"));
                        return Err(JobError::Cancelled);
                    }
                    tokio::time::sleep(step).await;
                    spent += step;
                }
                let ok = self.outcomes.lock().unwrap().pop().unwrap_or(true);
                if ok {
                    *self.last_success.lock().unwrap() = Some(started);
                    self.log.lock().unwrap().push((self.clock.now(), "done"));
                    Ok("archive".into())
                } else {
                    self.log.lock().unwrap().push((self.clock.now(), "failed"));
                    Err(JobError::Failed("disk on fire".into()))
                }
            })
        }

        fn last_drill(&self) -> Option<DateTime<Utc>> {
            *self.last_drill.lock().unwrap()
        }

        fn drill(&self, cancel: Arc<AtomicBool>) -> JobFuture<'_> {
            Box::pin(async move {
                let started = self.clock.now();
                *self.last_drill.lock().unwrap() = Some(started);
                self.log.lock().unwrap().push((started, "drill"));
                let mut spent = Duration::ZERO;
                while spent < self.drill_took {
                    if cancel.load(Ordering::Relaxed) {
                        self.log
                            .lock()
                            .unwrap()
                            .push((self.clock.now(), "drill cancelled"));
                        return Err(JobError::Cancelled);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    spent += Duration::from_millis(100);
                }
                self.log
                    .lock()
                    .unwrap()
                    .push((self.clock.now(), "drill done"));
                Ok("archive".into())
            })
        }

        fn run_started(&self) {
            self.reports.lock().unwrap().push((self.clock.now(), "run"));
        }
        fn after_backup(&self) {}
        fn gave_up(&self, _: &str) {
            self.reports
                .lock()
                .unwrap()
                .push((self.clock.now(), "gave up"));
        }
        fn record_failure(&self, _: &str) {}
        fn next_runs(&self, _: Option<DateTime<Utc>>, _: Option<DateTime<Utc>>) {}
    }

    fn plan(cron: &str) -> Plan {
        Plan {
            schedule: Schedule::parse(cron, Zone::parse("UTC").unwrap()).unwrap(),
            catch_up: true,
            retries: 2,
            shutdown_grace: Duration::ZERO,
            drill: None,
        }
    }

    /// Serves `plan` with `jobs` for `for_how_long` of virtual time.
    async fn serve_for(plan: &Plan, jobs: &Fake, for_how_long: Duration) {
        let stop = tokio::time::sleep(for_how_long);
        serve(plan, jobs, &jobs.clock, stop, &tokio::sync::Notify::new()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn runs_at_every_scheduled_time() {
        let clock = TokioClock::starting_at(utc("2026-03-01T00:00:30Z"));
        let jobs = Fake::new(clock, Duration::from_secs(5), &[]);
        *jobs.last_success.lock().unwrap() = Some(utc("2026-03-01T00:00:00Z"));
        serve_for(&plan("*/10 * * * *"), &jobs, Duration::from_secs(3600)).await;
        let starts = jobs.starts();
        assert_eq!(starts.len(), 6, "{starts:?}");
        assert_eq!(starts[0], utc("2026-03-01T00:10:00Z"));
        assert_eq!(starts[5], utc("2026-03-01T01:00:00Z"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_missed_run_is_caught_up_at_start_unless_turned_off() {
        let clock = TokioClock::starting_at(utc("2026-03-01T03:20:00Z"));
        let jobs = Fake::new(clock, Duration::from_secs(5), &[]);
        *jobs.last_success.lock().unwrap() = Some(utc("2026-02-28T03:00:00Z"));
        serve_for(&plan("0 3 * * *"), &jobs, Duration::from_secs(60)).await;
        assert_eq!(jobs.starts(), [utc("2026-03-01T03:20:00Z")]);

        let clock = TokioClock::starting_at(utc("2026-03-01T03:20:00Z"));
        let jobs = Fake::new(clock, Duration::from_secs(5), &[]);
        *jobs.last_success.lock().unwrap() = Some(utc("2026-02-28T03:00:00Z"));
        let mut p = plan("0 3 * * *");
        p.catch_up = false;
        serve_for(&p, &jobs, Duration::from_secs(60)).await;
        assert!(jobs.starts().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_backoff_then_given_up() {
        let clock = TokioClock::starting_at(utc("2026-03-01T02:59:59Z"));
        let jobs = Fake::new(clock, Duration::from_secs(1), &[false, false, false]);
        *jobs.last_success.lock().unwrap() = Some(utc("2026-02-28T03:00:00Z"));
        serve_for(&plan("0 3 * * *"), &jobs, Duration::from_secs(600)).await;
        let starts = jobs.starts();
        // The run, then retries 30 s and 60 s after each failure.
        assert_eq!(
            starts,
            [
                utc("2026-03-01T03:00:00Z"),
                utc("2026-03-01T03:00:31Z"),
                utc("2026-03-01T03:01:32Z"),
            ]
        );
        assert_eq!(jobs.log().iter().filter(|(_, w)| *w == "failed").count(), 3);
        // One run, reported once: started before the first attempt, given
        // up after the last.
        assert_eq!(
            *jobs.reports.lock().unwrap(),
            [
                (utc("2026-03-01T03:00:00Z"), "run"),
                (utc("2026-03-01T03:01:33Z"), "gave up")
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_due_while_one_is_running_is_skipped() {
        let clock = TokioClock::starting_at(utc("2026-03-01T00:00:30Z"));
        // Each backup takes 25 minutes, the schedule is every 10.
        let jobs = Fake::new(clock, Duration::from_secs(25 * 60), &[]);
        *jobs.last_success.lock().unwrap() = Some(utc("2026-03-01T00:00:00Z"));
        serve_for(&plan("*/10 * * * *"), &jobs, Duration::from_secs(3600)).await;
        assert_eq!(
            jobs.starts(),
            [utc("2026-03-01T00:10:00Z"), utc("2026-03-01T00:40:00Z")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_a_running_backup_or_lets_it_finish_within_the_grace() {
        let clock = TokioClock::starting_at(utc("2026-03-01T00:00:00Z"));
        let jobs = Fake::new(clock, Duration::from_secs(300), &[]);
        // No success yet: caught up at once; stopped 60 s in.
        serve_for(&plan("0 3 * * *"), &jobs, Duration::from_secs(60)).await;
        let log = jobs.log();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[1].1, "cancelled");
        assert!(log[1].0 < utc("2026-03-01T00:01:01Z"), "{log:?}");

        let jobs = Fake::new(
            TokioClock::starting_at(utc("2026-03-01T00:00:00Z")),
            Duration::from_secs(300),
            &[],
        );
        let mut p = plan("0 3 * * *");
        p.shutdown_grace = Duration::from_secs(600);
        serve_for(&p, &jobs, Duration::from_secs(60)).await;
        assert_eq!(jobs.log()[1], (utc("2026-03-01T00:05:00Z"), "done"));
    }

    /// The jobs' log as (start, end, what) intervals.
    fn intervals(
        log: &[(DateTime<Utc>, &'static str)],
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>, &'static str)> {
        let mut out = Vec::new();
        let mut open: Option<(DateTime<Utc>, &'static str)> = None;
        for &(t, what) in log {
            match what {
                "start" | "drill" => {
                    assert!(open.is_none(), "{what} at {t} while {open:?} runs: {log:?}");
                    open = Some((t, what));
                }
                _ => {
                    let (start, kind) = open.take().expect("an end has a start");
                    out.push((start, t, kind));
                }
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn drills_and_backups_never_overlap_and_neither_is_lost() {
        let clock = TokioClock::starting_at(utc("2026-03-01T02:00:00Z"));
        // Backups at 03:00 take 25 minutes; the drill is due at 03:10 and
        // takes 40 minutes, so the 04:00 backup falls due while it runs.
        let mut jobs = Fake::new(clock, Duration::from_secs(25 * 60), &[]);
        jobs.drill_took = Duration::from_secs(40 * 60);
        *jobs.last_success.lock().unwrap() = Some(utc("2026-03-01T01:00:00Z"));
        *jobs.last_drill.lock().unwrap() = Some(utc("2026-02-28T03:10:00Z"));
        let mut p = plan("0 * * * *");
        p.drill = Some(Schedule::parse("10 3 * * *", Zone::parse("UTC").unwrap()).unwrap());
        serve_for(&p, &jobs, Duration::from_secs(170 * 60)).await;
        let runs = intervals(&jobs.log());
        let got: Vec<(String, &str)> = runs
            .iter()
            .map(|(s, _, k)| (s.format("%H:%M").to_string(), *k))
            .collect();
        assert_eq!(
            got,
            [
                ("02:00".to_owned(), "start"),
                ("03:00".to_owned(), "start"),
                // Due 03:10; starts when the backup ends.
                ("03:25".to_owned(), "drill"),
                // Due 04:00, during the drill; starts when it ends.
                ("04:05".to_owned(), "start"),
            ]
        );
        for w in runs.windows(2) {
            assert!(w[0].1 <= w[1].0, "{w:?} overlap");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_missed_drill_is_caught_up_but_a_first_one_waits_for_its_time() {
        let d = || Some(Schedule::parse("0 4 * * 0", Zone::parse("UTC").unwrap()).unwrap());
        // 2026-03-04 is a Wednesday; the last drill was 10 days ago.
        let clock = TokioClock::starting_at(utc("2026-03-04T12:00:00Z"));
        let mut jobs = Fake::new(clock, Duration::from_secs(1), &[]);
        jobs.drill_took = Duration::from_secs(1);
        *jobs.last_success.lock().unwrap() = Some(utc("2026-03-04T00:00:00Z"));
        *jobs.last_drill.lock().unwrap() = Some(utc("2026-02-22T04:00:00Z"));
        let mut p = plan("0 0 * * *");
        p.drill = d();
        serve_for(&p, &jobs, Duration::from_secs(60)).await;
        assert_eq!(jobs.log()[0], (utc("2026-03-04T12:00:00Z"), "drill"));

        let clock = TokioClock::starting_at(utc("2026-03-04T12:00:00Z"));
        let jobs = Fake::new(clock, Duration::from_secs(1), &[]);
        *jobs.last_success.lock().unwrap() = Some(utc("2026-03-04T00:00:00Z"));
        serve_for(&p, &jobs, Duration::from_secs(60)).await;
        assert!(jobs.log().is_empty(), "{:?}", jobs.log());
    }

    #[test]
    fn backoff_never_runs_into_the_next_run() {
        let s = Schedule::parse("*/2 * * * *", Zone::parse("UTC").unwrap()).unwrap();
        let now = utc("2026-03-01T00:00:10Z");
        assert_eq!(backoff(&s, 1, now), Duration::from_secs(30));
        assert_eq!(backoff(&s, 3, now), Duration::from_secs(55));
    }
}
