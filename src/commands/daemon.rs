//! `cofre daemon`: backups on `BACKUP_SCHEDULE` until SIGTERM or SIGINT.

use crate::cli::DaemonArgs;
use crate::config::Settings;
use crate::daemon;
use crate::logging::Verbosity;

use super::Outcome;

/// Runs the daemon.
pub fn run(
    _args: &DaemonArgs,
    settings: &Settings,
    _verbosity: Verbosity,
) -> Result<Outcome, anyhow::Error> {
    daemon::run(settings)?;
    Ok(Outcome::Success)
}
