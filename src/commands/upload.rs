//! `cofre upload`: bring the bucket up to date now (backups and the daemon
//! do it on their own; this is for catching up by hand).

use crate::config::Settings;

use super::Outcome;

/// Runs `cofre upload`.
pub fn run(settings: &Settings) -> Result<Outcome, anyhow::Error> {
    super::bucket(settings)?;
    let remote = settings.remote.as_ref().expect("checked by bucket()");
    let never = std::sync::atomic::AtomicBool::new(false);
    let report = crate::offsite::sync(settings, remote, &never)?;
    println!(
        "{}: {} uploaded, {} deleted by retention{}; newest copy {}",
        remote.url,
        report.uploaded.len(),
        report.deleted.len(),
        if report.refused.is_empty() {
            String::new()
        } else {
            format!(", {} held by a lock", report.refused.len())
        },
        report.newest.as_deref().unwrap_or("none")
    );
    Ok(Outcome::Success)
}
