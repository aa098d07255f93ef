//! `cofre daemon`: backups on `BACKUP_SCHEDULE` until SIGTERM or SIGINT.

use crate::cli::DaemonArgs;
use crate::config::Settings;
use crate::daemon;
use crate::logging::Verbosity;

use super::Outcome;

/// Runs the daemon.
pub fn run(
    args: &DaemonArgs,
    settings: &Settings,
    _verbosity: Verbosity,
) -> Result<Outcome, anyhow::Error> {
    if args.exit_with_parent {
        exit_with_parent()?;
    }
    daemon::run(settings)?;
    Ok(Outcome::Success)
}

/// Asks the kernel for SIGTERM when the parent dies; the daemon then stops
/// as it does on any SIGTERM (a running backup cleans up). A parent that
/// died before the request leaves the daemon with init (or a subreaper)
/// as parent: then it does not start at all.
fn exit_with_parent() -> Result<(), anyhow::Error> {
    let parent = rustix::process::getppid();
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM)).map_err(
        |e| anyhow::anyhow!("cannot ask to stop with the parent process (--exit-with-parent): {e}"),
    )?;
    if rustix::process::getppid() != parent {
        anyhow::bail!("the parent process exited before the daemon started (--exit-with-parent)");
    }
    Ok(())
}
