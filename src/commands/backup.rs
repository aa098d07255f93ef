//! `cofre backup`: one backup now, then the retention policy, then the
//! offsite copy.

use std::io::Write;

use crate::backup::{self, Request};
use crate::cli::BackupArgs;
use crate::config::Settings;
use crate::logging::Verbosity;
use crate::report::BackupRun;

use super::{Outcome, duration_flag};

/// Runs `cofre backup`; the archive's path goes to `out`.
pub fn run(
    args: &BackupArgs,
    settings: &Settings,
    verbosity: Verbosity,
    out: &mut dyn Write,
) -> Result<Outcome, anyhow::Error> {
    let wait = duration_flag("--wait", args.lock.wait.as_deref())?;
    let mut opts = settings.backup.clone();
    if args.full {
        opts.full_every = std::time::Duration::ZERO;
    }
    let req = Request {
        opts: &opts,
        wait,
        verbosity,
        cancel: None,
    };
    let reports = settings.report();
    let run = BackupRun::start(&reports);
    let report = match backup::run(&req) {
        Ok(r) => r,
        Err(e) => {
            backup::record_failure(&settings.backup_dir, &e.to_string());
            run.failed(&reports, &e.to_string());
            return Err(e.into());
        }
    };
    if verbosity != Verbosity::Quiet {
        writeln!(out, "{}", report.path.display())?;
    }
    let warnings: Vec<String> = report
        .info
        .warnings
        .iter()
        .map(|w| format!("{}: {}", w.path, w.message))
        .collect();
    if !args.no_prune {
        let pruned = settings
            .keys
            .load()
            .map_err(anyhow::Error::from)
            .and_then(|(_, trusted)| {
                Ok(crate::prune::after_backup(
                    &settings.prune(),
                    &trusted,
                    wait,
                )?)
            });
        if let Err(e) = pruned {
            run.succeeded(&reports, &report.name, size(&report), warnings);
            return Err(e);
        }
    }
    let mut outcome = if report.info.warnings.is_empty() {
        Outcome::Success
    } else {
        Outcome::Warnings
    };
    if let Some(offsite) = settings.offsite() {
        let mark = crate::logging::tail_mark();
        let never = std::sync::atomic::AtomicBool::new(false);
        match crate::offsite::sync(&offsite, &never) {
            Ok(r) => tracing::info!(
                uploaded = r.uploaded.len(),
                deleted = r.deleted.len(),
                "offsite copies up to date in {}",
                offsite.remote.url
            ),
            Err(e) => {
                tracing::warn!(
                    "the backup is done, but its offsite copy failed: {e}; \
                     it stays here and goes up at the next run"
                );
                crate::report::offsite_failed(&reports, &e.to_string(), mark);
                eprintln!(
                    "warning: {}: the offsite copy failed: {}",
                    report.name,
                    crate::secret::scrub(&e.to_string())
                );
                outcome = Outcome::Warnings;
            }
        }
    }
    run.succeeded(&reports, &report.name, size(&report), warnings);
    Ok(outcome)
}

fn size(report: &backup::BackupReport) -> u64 {
    std::fs::metadata(&report.path).map_or(0, |m| m.len())
}
