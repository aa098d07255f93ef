//! `cofre backup`: one backup now, then the retention policy.

use crate::backup::{self, Request};
use crate::cli::BackupArgs;
use crate::config::Settings;
use crate::logging::Verbosity;

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
    let report = match backup::run(&req) {
        Ok(r) => r,
        Err(e) => {
            backup::record_failure(settings, &e.to_string());
            return Err(e.into());
        }
    };
    if verbosity != Verbosity::Quiet {
        println!("{}", report.path.display());
    }
    if !args.no_prune {
        crate::prune::after_backup(settings, wait)?;
    }
    Ok(if report.info.warnings.is_empty() {
        Outcome::Success
    } else {
        Outcome::Warnings
    })
}
