//! `cofre backup`: one backup now, then the retention policy.

use crate::backup::{self, Request};
use crate::cli::BackupArgs;
use crate::config::Settings;
use crate::logging::Verbosity;
use crate::report::BackupRun;

use super::{Outcome, duration_flag};

/// Runs `cofre backup`.
pub fn run(
    args: &BackupArgs,
    settings: &Settings,
    verbosity: Verbosity,
) -> Result<Outcome, anyhow::Error> {
    let wait = duration_flag("--wait", args.lock.wait.as_deref())?;
    let req = Request {
        settings,
        wait,
        verbosity,
        cancel: None,
    };
    let run = BackupRun::start(settings);
    let report = match backup::run(&req) {
        Ok(r) => r,
        Err(e) => {
            backup::record_failure(settings, &e.to_string());
            run.failed(settings, &e.to_string());
            return Err(e.into());
        }
    };
    if verbosity != Verbosity::Quiet {
        println!("{}", report.path.display());
    }
    let warnings: Vec<String> = report
        .info
        .warnings
        .iter()
        .map(|w| format!("{}: {}", w.path, w.message))
        .collect();
    if !args.no_prune
        && let Err(e) = super::trusted_keys(
            settings,
            &super::read_keys(settings, &crate::cli::KeyArgs::default()),
        )
        .map_err(anyhow::Error::from)
        .and_then(|trusted| Ok(crate::prune::after_backup(settings, &trusted, wait)?))
    {
        run.succeeded(settings, &report.name, size(&report), warnings);
        return Err(e);
    }
    let mut outcome = if report.info.warnings.is_empty() {
        Outcome::Success
    } else {
        Outcome::Warnings
    };
    if let Some(remote) = &settings.remote {
        let mark = crate::logging::tail_mark();
        let never = std::sync::atomic::AtomicBool::new(false);
        match crate::offsite::sync(settings, remote, &never) {
            Ok(r) => tracing::info!(
                uploaded = r.uploaded.len(),
                deleted = r.deleted.len(),
                "offsite copies up to date in {}",
                remote.url
            ),
            Err(e) => {
                tracing::warn!(
                    "the backup is done, but its offsite copy failed: {e}; \
                     it stays here and goes up at the next run"
                );
                crate::report::offsite_failed(settings, &e.to_string(), mark);
                eprintln!(
                    "warning: {}: the offsite copy failed: {}",
                    report.name,
                    crate::secret::scrub(&e.to_string())
                );
                outcome = Outcome::Warnings;
            }
        }
    }
    run.succeeded(settings, &report.name, size(&report), warnings);
    Ok(outcome)
}

fn size(report: &backup::BackupReport) -> u64 {
    std::fs::metadata(&report.path).map_or(0, |m| m.len())
}
