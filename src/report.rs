//! What follows each run, wherever it ran (`cofre backup` from cron,
//! `cofre drill`, the daemon): the metrics file rewritten from the state
//! files, and the run's event sent to the notification targets.
//!
//! Neither ever changes how the run ends: a metrics file that cannot be
//! written or a notification that cannot be delivered is a logged warning.

use std::time::Instant;

use crate::config::Settings;
use crate::logging;
use crate::metrics;
use crate::notify::{self, Event, Report};
use crate::state::DrillRecord;

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
    pub fn start(settings: &Settings) -> BackupRun {
        let run = BackupRun::begin();
        announce_start(settings);
        run
    }

    /// It succeeded: `success`, or `warning` when it recorded warnings.
    pub fn succeeded(self, settings: &Settings, archive: &str, size: u64, warnings: Vec<String>) {
        metrics::update_file(settings);
        let event = if warnings.is_empty() {
            Event::Success
        } else {
            Event::Warning
        };
        if !settings.notify.any_wants(event) {
            return;
        }
        let mut r = report(settings, event);
        r.archive = Some(archive.to_owned());
        r.size = Some(size);
        r.duration_s = Some(self.started.elapsed().as_secs_f64());
        r.warnings = warnings;
        r.log_tail = logging::tail_since(self.mark, TAIL);
        notify::send(&settings.notify, &r);
    }

    /// It failed (in the daemon: its last attempt did).
    pub fn failed(self, settings: &Settings, error: &str) {
        metrics::update_file(settings);
        if !settings.notify.any_wants(Event::Failure) {
            return;
        }
        let mut r = report(settings, Event::Failure);
        r.error = Some(crate::secret::scrub(error));
        r.duration_s = Some(self.started.elapsed().as_secs_f64());
        r.log_tail = logging::tail_since(self.mark, TAIL);
        notify::send(&settings.notify, &r);
    }
}

/// Sends the `start` event.
pub fn announce_start(settings: &Settings) {
    if settings.notify.any_wants(Event::Start) {
        notify::send(&settings.notify, &report(settings, Event::Start));
    }
}

/// A drill ended (cancelled drills are not reported: a stop signal is not
/// a failed drill).
pub fn drill_finished(settings: &Settings, record: &DrillRecord, mark: u64) {
    metrics::update_file(settings);
    if record.failed_check.as_deref() == Some("cancelled") {
        return;
    }
    let event = if record.ok {
        Event::DrillSuccess
    } else {
        Event::DrillFailure
    };
    if !settings.notify.any_wants(event) {
        return;
    }
    let mut r = report(settings, event);
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
    notify::send(&settings.notify, &r);
}

/// Uploading to the bucket failed; the archives stay local.
pub fn offsite_failed(settings: &Settings, error: &str, mark: u64) {
    metrics::update_file(settings);
    if !settings.notify.any_wants(Event::OffsiteFailure) {
        return;
    }
    let mut r = report(settings, Event::OffsiteFailure);
    r.error = Some(crate::secret::scrub(error));
    r.log_tail = logging::tail_since(mark, TAIL);
    notify::send(&settings.notify, &r);
}

fn report(settings: &Settings, event: Event) -> Report {
    Report::new(event, &settings.source.display().to_string())
}
