//! `cofre daemon` (built in the scheduler work).
use super::Outcome;
use crate::cli::DaemonArgs;
use crate::config::Settings;
use crate::logging::Verbosity;
/// Runs the daemon.
pub fn run(_a: &DaemonArgs, _s: &Settings, _v: Verbosity) -> Result<Outcome, anyhow::Error> {
    anyhow::bail!("not built yet")
}
