//! `cofre upload`: bring the bucket up to date now (backups and the daemon
//! do it on their own; this is for catching up by hand).

use std::io::Write;

use crate::config::Settings;

use super::Outcome;

/// Runs `cofre upload`; one line of what it did goes to `out`.
pub fn run(settings: &Settings, out: &mut dyn Write) -> Result<Outcome, anyhow::Error> {
    super::bucket(settings)?;
    let offsite = settings.offsite().expect("checked by bucket()");
    let remote = &offsite.remote;
    let never = std::sync::atomic::AtomicBool::new(false);
    let report = crate::offsite::sync(&offsite, &never)?;
    writeln!(
        out,
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
    )?;
    Ok(Outcome::Success)
}
