//! `cofre status` (built in the scheduler work).
use super::Outcome;
use crate::cli::StatusArgs;
use crate::config::Settings;
/// Runs status.
pub fn run(_a: &StatusArgs, _s: &Settings) -> Result<Outcome, anyhow::Error> {
    anyhow::bail!("not built yet")
}
