//! What follows each run, wherever it ran (`cofre backup` from cron,
//! `cofre drill`, the daemon): the metrics file rewritten from the state
//! files, and the run's event sent to the notification targets.
//!
//! Neither ever changes how the run ends: a metrics file that cannot be
//! written or a notification that cannot be delivered is a logged warning.

use std::time::Instant;

use crate::logging;
use crate::metrics;
use crate::notify::{self, Event, Report};
use crate::state::DrillRecord;

/// Where a run's outcome goes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The project, as the notifications name it.
    pub source: String,
    /// The notification targets.
    pub notify: notify::Options,
    /// The metrics file.
    pub metrics: metrics::Options,
}

/// Log lines a notification carries.
const TAIL: usize = 20;

/// A backup in progress, as far as reporting goes: when it started and
/// where its log lines begin.
#[derive(Debug)]
pub struct BackupRun {
    started: Instant,
    mark: u64,
}

impl BackupRun {
    /// A backup starts now.
    pub fn begin() -> BackupRun {
        BackupRun {
            started: Instant::now(),
            mark: logging::tail_mark(),
        }
    }

    /// A backup starts, and the `start` event goes out (to the targets
    /// that want it) before any work.
    pub fn start(opts: &Options) -> BackupRun {
        let run = BackupRun::begin();
        announce_start(opts);
        run
    }

    /// It succeeded: `success`, or `warning` when it recorded warnings.
    pub fn succeeded(self, opts: &Options, archive: &str, size: u64, warnings: Vec<String>) {
        metrics::update_file(&opts.metrics);
        let event = if warnings.is_empty() {
            Event::Success
        } else {
            Event::Warning
        };
        if !opts.notify.any_wants(event) {
            return;
        }
        let mut r = report(opts, event);
        r.archive = Some(archive.to_owned());
        r.size = Some(size);
        r.duration_s = Some(self.started.elapsed().as_secs_f64());
        r.warnings = warnings;
        r.log_tail = logging::tail_since(self.mark, TAIL);
        notify::send(&opts.notify, &r);
    }

    /// It failed (in the daemon: its last attempt did).
    pub fn failed(self, opts: &Options, error: &str) {
        metrics::update_file(&opts.metrics);
        if !opts.notify.any_wants(Event::Failure) {
            return;
        }
        let mut r = report(opts, Event::Failure);
        r.error = Some(crate::secret::scrub(error));
        r.duration_s = Some(self.started.elapsed().as_secs_f64());
        r.log_tail = logging::tail_since(self.mark, TAIL);
        notify::send(&opts.notify, &r);
    }
}

/// Sends the `start` event.
pub fn announce_start(opts: &Options) {
    if opts.notify.any_wants(Event::Start) {
        notify::send(&opts.notify, &report(opts, Event::Start));
    }
}

/// A drill ended (cancelled drills are not reported: a stop signal is not
/// a failed drill).
pub fn drill_finished(opts: &Options, record: &DrillRecord, mark: u64) {
    metrics::update_file(&opts.metrics);
    if record.failed_check.as_deref() == Some("cancelled") {
        return;
    }
    let event = if record.ok {
        Event::DrillSuccess
    } else {
        Event::DrillFailure
    };
    if !opts.notify.any_wants(event) {
        return;
    }
    let mut r = report(opts, event);
    r.archive = (!record.archive.is_empty()).then(|| record.archive.clone());
    r.size = record.archive_bytes;
    r.duration_s = record.recovery_seconds;
    r.error = (!record.ok).then(|| {
        format!(
            "at {}: {}",
            record.failed_check.as_deref().unwrap_or("?"),
            record.error.as_deref().unwrap_or("")
        )
    });
    r.log_tail = logging::tail_since(mark, TAIL);
    notify::send(&opts.notify, &r);
}

/// Uploading to the bucket failed; the archives stay local.
pub fn offsite_failed(opts: &Options, error: &str, mark: u64) {
    metrics::update_file(&opts.metrics);
    if !opts.notify.any_wants(Event::OffsiteFailure) {
        return;
    }
    let mut r = report(opts, Event::OffsiteFailure);
    r.error = Some(crate::secret::scrub(error));
    r.log_tail = logging::tail_since(mark, TAIL);
    notify::send(&opts.notify, &r);
}

/// The oplog capture found a hole, or failed: `event` is `OplogGap` or
/// `OplogFailure`.
pub fn oplog_trouble(opts: &Options, event: Event, error: &str) {
    metrics::update_file(&opts.metrics);
    if !opts.notify.any_wants(event) {
        return;
    }
    let mut r = report(opts, event);
    r.error = Some(crate::secret::scrub(error));
    notify::send(&opts.notify, &r);
}

fn report(opts: &Options, event: Event) -> Report {
    Report::new(event, &opts.source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_rewrites_the_metrics_file_from_its_options() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cofre.prom");
        let opts = Options {
            source: "/srv/app".into(),
            notify: notify::Options::default(),
            metrics: metrics::Options {
                file: Some(file.clone()),
                backup_dir: dir.path().join("backups"),
                ..metrics::Options::default()
            },
        };
        BackupRun::begin().failed(&opts, "boom");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("cofre_last_success_timestamp_seconds"),
            "{text}"
        );
        std::fs::remove_file(&file).unwrap();
        let record = DrillRecord {
            ok: true,
            ..DrillRecord::default()
        };
        drill_finished(&opts, &record, 0);
        assert!(file.exists());
    }
}
