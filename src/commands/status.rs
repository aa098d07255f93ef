//! `cofre status`: is the backup healthy? Last success, last failure, next
//! run, archives, free space; with `--max-age`, an exit code for monitoring.

use chrono::Utc;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::config::Settings;
use crate::format::{age_text, human};
use crate::state::{DaemonState, DrillState, OffsiteState, State};
use crate::store::{Store, StoreError};

use super::{Outcome, duration_flag};

#[derive(Serialize)]
struct Status {
    backup_dir: String,
    healthy: bool,
    problem: Option<String>,
    last_success: Option<crate::state::Success>,
    last_success_age_seconds: Option<i64>,
    last_failure: Option<crate::state::Failure>,
    daemon_running: bool,
    next_run: Option<String>,
    schedule: String,
    timezone: String,
    archives: usize,
    archives_bytes: u64,
    free_bytes: Option<u64>,
    total_bytes: Option<u64>,
    signing_public_key: Option<String>,
    offsite: Option<OffsiteState>,
    drill: DrillStatus,
    /// Where notifications go, tokens hidden.
    notify: Vec<String>,
    /// Where metrics go.
    metrics_addr: Option<String>,
    metrics_file: Option<String>,
}

#[derive(Serialize)]
struct DrillStatus {
    schedule: Option<String>,
    next_drill: Option<String>,
    last: Option<crate::state::DrillRecord>,
    last_success_at: Option<String>,
    last_success_age_seconds: Option<i64>,
}

/// Runs `cofre status`.
pub fn run(args: &StatusArgs, settings: &Settings) -> Result<Outcome, anyhow::Error> {
    let limits = crate::state::Limits {
        max_age: duration_flag("--max-age", args.max_age.as_deref())?,
        max_offsite_age: duration_flag("--max-offsite-age", args.max_offsite_age.as_deref())?,
        max_drill_age: duration_flag("--max-drill-age", args.max_drill_age.as_deref())?,
    };
    let status = gather(settings, limits, Utc::now())?;
    if args.json {
        println!(
            "{}",
            crate::secret::scrub(&serde_json::to_string_pretty(&status)?)
        );
    } else {
        print_text(&status);
    }
    let checked = limits.max_age.is_some()
        || limits.max_offsite_age.is_some()
        || limits.max_drill_age.is_some();
    if checked && status.problem.is_some() {
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Success)
}

/// Everything `status` reports, at `now`.
fn gather(
    settings: &Settings,
    limits: crate::state::Limits,
    now: chrono::DateTime<Utc>,
) -> Result<Status, anyhow::Error> {
    let store = match Store::open(&settings.backup_dir) {
        Ok(s) => Some(s),
        Err(StoreError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let state = store
        .as_ref()
        .map(|s| State::load(s.dir()))
        .unwrap_or_default();
    let archives = store
        .as_ref()
        .and_then(|s| s.list().ok())
        .unwrap_or_default();
    let space = store.as_ref().and_then(|s| s.space().ok());
    let daemon = store
        .as_ref()
        .and_then(|s| DaemonState::load(s.dir()))
        .filter(DaemonState::is_alive);
    // A running daemon runs its own schedule (from its environment, which
    // may not be this shell's): what it says goes.
    let (next_run, schedule, timezone) = match &daemon {
        Some(d) => (d.next_run, d.schedule.clone(), d.timezone.clone()),
        None => (
            settings.schedule.next_after(now),
            settings.schedule.text().to_owned(),
            settings.schedule.zone().to_string(),
        ),
    };
    let age = state
        .last_success
        .as_ref()
        .map(|s| (now - s.started_at).num_seconds());
    let offsite = settings.remote.as_ref().map(|r| {
        let mut o = store
            .as_ref()
            .map(|s| OffsiteState::load(s.dir()))
            .unwrap_or_default();
        o.remote = r.url.clone();
        o
    });
    let drills = store
        .as_ref()
        .map(|s| DrillState::load(s.dir()))
        .unwrap_or_default();
    let problem = crate::state::health(&state, offsite.as_ref(), &drills, limits, now);
    let rfc = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let next_drill = match &daemon {
        Some(d) => d.next_drill,
        None => settings
            .drill
            .schedule
            .as_ref()
            .and_then(|s| s.next_after(now)),
    };
    let drill = DrillStatus {
        schedule: match &daemon {
            Some(d) => d.drill_schedule.clone(),
            None => settings
                .drill
                .schedule
                .as_ref()
                .map(|s| s.text().to_owned()),
        },
        next_drill: next_drill.map(rfc),
        last_success_at: drills.last_success.as_ref().map(|r| rfc(r.started_at)),
        last_success_age_seconds: drills
            .last_success
            .as_ref()
            .map(|r| (now - r.started_at).num_seconds()),
        last: drills.last,
    };
    let status = Status {
        backup_dir: settings.backup_dir.display().to_string(),
        healthy: problem.is_none(),
        problem,
        last_success: state.last_success.clone(),
        last_success_age_seconds: age,
        last_failure: state.last_failure,
        daemon_running: daemon.is_some(),
        next_run: next_run.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        schedule,
        timezone,
        archives: archives.len(),
        archives_bytes: archives.iter().map(|a| a.size).sum(),
        free_bytes: space.map(|s| s.0),
        total_bytes: space.map(|s| s.1),
        signing_public_key: crate::sign::SigningKey::load(&settings.signing_key)
            .ok()
            .map(|k| k.public_base64()),
        offsite,
        drill,
        notify: settings
            .notify
            .targets
            .iter()
            .map(|t| t.shown().to_owned())
            .collect(),
        metrics_addr: settings.metrics.addr.map(|a| a.to_string()),
        metrics_file: settings
            .metrics
            .file
            .as_ref()
            .map(|f| f.display().to_string()),
    };
    Ok(status)
}

fn print_text(status: &Status) {
    {
        println!("backup directory  {}", status.backup_dir);
        match &status.last_success {
            Some(s) => println!(
                "last success      {} ({} ago), {}, {}",
                s.started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                age_text(status.last_success_age_seconds.unwrap_or(0)),
                s.archive,
                human(s.size)
            ),
            None => println!("last success      none"),
        }
        if let Some(f) = &status.last_failure {
            println!(
                "last failure      {}: {}",
                f.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                f.error
            );
        }
        println!(
            "next run          {} ({}, {}{})",
            status.next_run.as_deref().unwrap_or("none"),
            status.schedule,
            status.timezone,
            if status.daemon_running {
                "; daemon running"
            } else {
                "; daemon not running"
            }
        );
        println!(
            "archives          {} ({})",
            status.archives,
            human(status.archives_bytes)
        );
        if let (Some(free), Some(total)) = (status.free_bytes, status.total_bytes) {
            println!(
                "free space        {} of {} ({:.0}%)",
                human(free),
                human(total),
                if total > 0 {
                    free as f64 * 100.0 / total as f64
                } else {
                    0.0
                }
            );
        }
        if let Some(o) = &status.offsite {
            let newest = match (&o.newest_copy, o.newest_copy_time) {
                (Some(n), Some(t)) => format!(
                    "newest copy {n} ({} ago)",
                    age_text((Utc::now() - t).num_seconds())
                ),
                _ => "no copy yet".to_owned(),
            };
            println!("offsite           {}: {newest}", o.remote);
            if !o.pending.is_empty() {
                println!(
                    "                  {} archives waiting to go up",
                    o.pending.len()
                );
            }
            if let Some(first) = o.overwritten.first() {
                println!(
                    "                  WARNING: the current version of {} archive{} in the bucket \
                     is not cofre's ({first}{}): someone wrote over {}; restores read the version \
                     cofre wrote",
                    o.overwritten.len(),
                    if o.overwritten.len() == 1 { "" } else { "s" },
                    if o.overwritten.len() > 1 { ", ..." } else { "" },
                    if o.overwritten.len() == 1 {
                        "it"
                    } else {
                        "them"
                    },
                );
            }
            if o.failing()
                && let Some(f) = &o.last_failure
            {
                println!(
                    "                  last upload failed {}: {}",
                    f.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    f.error
                );
            }
        }
        print_drill(&status.drill);
        if !status.notify.is_empty() {
            println!("notifications     {}", status.notify.join(", "));
        }
        if let Some(a) = &status.metrics_addr {
            println!("metrics           http://{a}/metrics (served by the daemon)");
        }
        if let Some(f) = &status.metrics_file {
            println!("metrics file      {f}");
        }
        if let Some(k) = &status.signing_public_key {
            println!("signing key       {k} (trust it where you restore: BACKUP_TRUSTED_KEYS)");
        }
        println!(
            "health            {}",
            status
                .problem
                .as_deref()
                .map_or_else(|| "ok".to_owned(), |p| format!("PROBLEM: {p}"))
        );
    }
}

fn print_drill(d: &DrillStatus) {
    let next = match (&d.schedule, &d.next_drill) {
        (Some(s), Some(n)) => format!("next {n} ({s})"),
        _ => "no drills scheduled (BACKUP_DRILL_SCHEDULE=off)".to_owned(),
    };
    let Some(last) = &d.last else {
        println!("restore drill     none yet; {next}");
        return;
    };
    let when = last
        .started_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if last.ok {
        println!(
            "restore drill     passed {when}: {} restores in {:.1} s; {next}",
            last.archive,
            last.recovery_seconds.unwrap_or(0.0)
        );
    } else {
        println!(
            "restore drill     FAILED {when} at {}: {}; {next}",
            last.failed_check.as_deref().unwrap_or("?"),
            last.error.as_deref().unwrap_or("")
        );
        if let (Some(at), Some(age)) = (&d.last_success_at, d.last_success_age_seconds) {
            println!("                  last passed {at} ({} ago)", age_text(age));
        }
    }
}
