//! `cofre status`: is the backup healthy? Last success, last failure, next
//! run, archives, free space, offsite copies, drills; with `--max-age` and
//! its kin, an exit code for monitoring.
//!
//! Everything is gathered once, at one `now` ([`gather`]), into a
//! [`Status`]; then rendered as text ([`render_text`]) or as one JSON
//! document, whose shape scripts and the npm API read (a test pins it).

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::config::Settings;
use crate::format::{age_text, human};
use crate::state::{DaemonState, DrillState, Failure, OffsiteState, State};
use crate::store::{Store, StoreError};

use super::{Outcome, duration_flag};

/// What `status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    /// When it was gathered.
    pub now: DateTime<Utc>,
    pub backup_dir: String,
    pub healthy: bool,
    pub problem: Option<String>,
    pub last_success: Option<crate::state::Success>,
    pub last_success_age_seconds: Option<i64>,
    pub last_failure: Option<Failure>,
    pub daemon_running: bool,
    pub next_run: Option<String>,
    pub schedule: String,
    pub timezone: String,
    pub archives: usize,
    pub archives_bytes: u64,
    /// Differentials whose full is missing: they cannot be restored.
    pub unrestorable: Vec<crate::backup::Orphan>,
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    pub signing_public_key: Option<String>,
    pub offsite: Option<OffsiteStatus>,
    pub drill: DrillStatus,
    /// Point-in-time recovery (when the backup has a database).
    pub pitr: Option<PitrStatus>,
    /// Where notifications go, tokens hidden.
    pub notify: Vec<String>,
    /// Where metrics go.
    pub metrics_addr: Option<String>,
    pub metrics_file: Option<String>,
}

/// The offsite copies, as the last upload found them.
#[derive(Debug, Serialize)]
pub struct OffsiteStatus {
    pub remote: String,
    pub last_success: Option<DateTime<Utc>>,
    pub newest_copy: Option<String>,
    pub newest_copy_time: Option<DateTime<Utc>>,
    pub newest_copy_age_seconds: Option<i64>,
    pub last_failure: Option<Failure>,
    pub failing: bool,
    /// Local archives not yet in the bucket.
    pub pending: Vec<String>,
    /// Archives whose current version in the bucket is not cofre's.
    pub overwritten: Vec<String>,
}

/// Point-in-time recovery: the oplog capture and the window it gives.
#[derive(Debug, Serialize)]
pub struct PitrStatus {
    /// `BACKUP_OPLOG`.
    pub mode: String,
    pub capturing: bool,
    /// Why it is off, when it is.
    pub off_reason: Option<String>,
    /// The oldest point a restore can reach (the oldest base the newest
    /// run of slices covers).
    pub window_from: Option<DateTime<Utc>>,
    /// The newest point.
    pub window_to: Option<DateTime<Utc>>,
    /// How far the captured history is behind now.
    pub lag_seconds: Option<i64>,
    pub last_entry: Option<String>,
    pub last_slice: Option<String>,
    pub last_slice_age_seconds: Option<i64>,
    /// Slices, and slices refused (unsigned, foreign, damaged signature).
    pub slices: usize,
    pub slices_refused: usize,
    /// Holes found in the history (each healed by a new base).
    pub gaps: Vec<crate::state::OplogGap>,
    pub last_failure: Option<Failure>,
}

/// The restore drills.
#[derive(Debug, Serialize)]
pub struct DrillStatus {
    pub schedule: Option<String>,
    pub next_drill: Option<String>,
    pub last: Option<crate::state::DrillRecord>,
    pub last_success_at: Option<String>,
    pub last_success_age_seconds: Option<i64>,
}

/// Runs `cofre status`.
pub fn run(
    args: &StatusArgs,
    settings: &Settings,
    out: &mut dyn Write,
) -> Result<Outcome, anyhow::Error> {
    let limits = crate::state::Limits {
        max_age: duration_flag("--max-age", args.max_age.as_deref())?,
        max_offsite_age: duration_flag("--max-offsite-age", args.max_offsite_age.as_deref())?,
        max_drill_age: duration_flag("--max-drill-age", args.max_drill_age.as_deref())?,
        max_oplog_lag: duration_flag("--max-oplog-lag", args.max_oplog_lag.as_deref())?,
    };
    let status = gather(settings, limits, Utc::now())?;
    if args.json {
        render_json(&status, out)?;
    } else {
        render_text(&status, out)?;
    }
    let checked = limits.max_age.is_some()
        || limits.max_offsite_age.is_some()
        || limits.max_drill_age.is_some()
        || limits.max_oplog_lag.is_some();
    if checked && status.problem.is_some() {
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Success)
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Everything `status` reports, at `now`.
pub fn gather(
    settings: &Settings,
    limits: crate::state::Limits,
    now: DateTime<Utc>,
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
    let plan = &settings.daemon;
    // A running daemon runs its own schedule (from its environment, which
    // may not be this shell's): what it says goes.
    let (next_run, schedule, timezone, next_drill, drill_schedule) = match &daemon {
        Some(d) => (
            d.next_run,
            d.schedule.clone(),
            d.timezone.clone(),
            d.next_drill,
            d.drill_schedule.clone(),
        ),
        None => (
            plan.schedule.next_after(now),
            plan.schedule.text().to_owned(),
            plan.schedule.zone().to_string(),
            plan.drill.as_ref().and_then(|s| s.next_after(now)),
            plan.drill.as_ref().map(|s| s.text().to_owned()),
        ),
    };
    let offsite_state = settings.remote.as_ref().map(|r| {
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
    let unrestorable = match (&store, settings.keys.load()) {
        (Some(s), Ok((_, trusted))) => crate::backup::orphans(s, &trusted),
        _ => Vec::new(),
    };
    let pitr = pitr_status(settings, store.as_ref(), now);
    let oplog_state = store
        .as_ref()
        .map(|s| crate::state::OplogState::load(s.dir()))
        .unwrap_or_default();
    let mut problem = crate::state::health(&state, offsite_state.as_ref(), &drills, limits, now)
        .or_else(|| {
            limits.max_oplog_lag.and_then(|max| {
                if pitr.is_none() {
                    return Some(
                        "--max-oplog-lag: there is no database to capture the oplog of (set MONGODB_URI)"
                            .to_owned(),
                    );
                }
                crate::state::oplog_health(&oplog_state, Some(max), now)
            })
        });
    // The newest restore point cannot be restored: that is a problem
    // whatever the limits.
    if let (None, Some(newest), Some(o)) = (&problem, archives.first(), unrestorable.first())
        && newest.name == o.archive
    {
        problem = Some(format!(
            "the newest archive, {}, cannot be restored: its full archive {} is missing \
             (the next backup makes a full one)",
            o.archive, o.needs
        ));
    }
    let drill = DrillStatus {
        schedule: drill_schedule,
        next_drill: next_drill.map(rfc),
        last_success_at: drills.last_success.as_ref().map(|r| rfc(r.started_at)),
        last_success_age_seconds: drills
            .last_success
            .as_ref()
            .map(|r| (now - r.started_at).num_seconds()),
        last: drills.last,
    };
    let offsite = offsite_state.map(|o| OffsiteStatus {
        failing: o.failing(),
        newest_copy_age_seconds: o.newest_copy_time.map(|t| (now - t).num_seconds()),
        remote: o.remote,
        last_success: o.last_success,
        newest_copy: o.newest_copy,
        newest_copy_time: o.newest_copy_time,
        last_failure: o.last_failure,
        pending: o.pending,
        overwritten: o.overwritten,
    });
    Ok(Status {
        now,
        backup_dir: settings.backup_dir.display().to_string(),
        healthy: problem.is_none(),
        problem,
        last_success_age_seconds: state
            .last_success
            .as_ref()
            .map(|s| (now - s.started_at).num_seconds()),
        last_success: state.last_success,
        last_failure: state.last_failure,
        daemon_running: daemon.is_some(),
        next_run: next_run.map(rfc),
        schedule,
        timezone,
        archives: archives.len(),
        archives_bytes: archives.iter().map(|a| a.size).sum(),
        unrestorable,
        free_bytes: space.map(|s| s.0),
        total_bytes: space.map(|s| s.1),
        signing_public_key: crate::sign::SigningKey::load(&settings.keys.signing_key)
            .ok()
            .map(|k| k.public_base64()),
        offsite,
        drill,
        pitr,
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
    })
}

/// The capture's state and the window the trusted slices and bases give.
fn pitr_status(
    settings: &Settings,
    store: Option<&Store>,
    now: DateTime<Utc>,
) -> Option<PitrStatus> {
    settings.backup.mongo.as_ref()?;
    let mode = match settings.oplog.mode {
        crate::oplog::Mode::Auto => "auto",
        crate::oplog::Mode::On => "on",
        crate::oplog::Mode::Off => "off",
    };
    let state = store
        .map(|s| crate::state::OplogState::load(s.dir()))
        .unwrap_or_default();
    let history = match (store, settings.keys.load()) {
        (Some(s), Ok((_, trusted))) => crate::oplog::history::load(
            crate::oplog::history::Place::Local(s.dir()),
            &trusted,
            &crate::sign::Origin::here(&settings.source),
        )
        .ok(),
        _ => None,
    }
    .unwrap_or_default();
    let window = crate::oplog::window::window(&history.bases, &history.slices);
    let daemon_alive = store
        .and_then(|s| DaemonState::load(s.dir()))
        .is_some_and(|d| d.is_alive());
    let off_reason = if settings.oplog.mode == crate::oplog::Mode::Off {
        Some("BACKUP_OPLOG=off".to_owned())
    } else if !daemon_alive {
        Some("the daemon is not running (`cofre daemon` captures the oplog)".to_owned())
    } else {
        state.off_reason.clone()
    };
    Some(PitrStatus {
        mode: mode.to_owned(),
        capturing: daemon_alive && state.capturing,
        off_reason,
        window_from: window.map(|w| w.0),
        window_to: window.map(|w| w.1),
        lag_seconds: state.lag_seconds(now),
        last_entry: state.last_entry.clone(),
        last_slice: history.slices.last().map(|s| s.name.clone()),
        last_slice_age_seconds: history
            .slices
            .last()
            .map(|s| (now - s.closed).num_seconds()),
        slices: history.slices.len(),
        slices_refused: history.refused.len(),
        gaps: state.gaps.clone(),
        last_failure: state.last_failure,
    })
}

/// The status as one JSON document (secrets scrubbed).
pub fn render_json(status: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(status).map_err(std::io::Error::other)?;
    writeln!(out, "{}", crate::secret::scrub(&text))
}

/// The status for people.
pub fn render_text(status: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "backup directory  {}", status.backup_dir)?;
    match &status.last_success {
        Some(s) => writeln!(
            out,
            "last success      {} ({} ago), {}, {}",
            rfc(s.started_at),
            age_text(status.last_success_age_seconds.unwrap_or(0)),
            s.archive,
            human(s.size)
        )?,
        None => writeln!(out, "last success      none")?,
    }
    if let Some(f) = &status.last_failure {
        writeln!(out, "last failure      {}: {}", rfc(f.at), f.error)?;
    }
    writeln!(
        out,
        "next run          {} ({}, {}{})",
        status.next_run.as_deref().unwrap_or("none"),
        status.schedule,
        status.timezone,
        if status.daemon_running {
            "; daemon running"
        } else {
            "; daemon not running"
        }
    )?;
    writeln!(
        out,
        "archives          {} ({})",
        status.archives,
        human(status.archives_bytes)
    )?;
    if !status.unrestorable.is_empty() {
        let n = status.unrestorable.len();
        writeln!(
            out,
            "                  {n} differential{} cannot be restored, {} full is missing: {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "its" } else { "their" },
            status
                .unrestorable
                .iter()
                .map(|o| format!("{} (needs {})", o.archive, o.needs))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if let (Some(free), Some(total)) = (status.free_bytes, status.total_bytes) {
        writeln!(
            out,
            "free space        {} of {} ({:.0}%)",
            human(free),
            human(total),
            if total > 0 {
                free as f64 * 100.0 / total as f64
            } else {
                0.0
            }
        )?;
    }
    if let Some(o) = &status.offsite {
        render_offsite(o, out)?;
    }
    render_drill(&status.drill, out)?;
    if let Some(p) = &status.pitr {
        render_pitr(p, out)?;
    }
    if !status.notify.is_empty() {
        writeln!(out, "notifications     {}", status.notify.join(", "))?;
    }
    if let Some(a) = &status.metrics_addr {
        writeln!(
            out,
            "metrics           http://{a}/metrics (served by the daemon)"
        )?;
    }
    if let Some(f) = &status.metrics_file {
        writeln!(out, "metrics file      {f}")?;
    }
    if let Some(k) = &status.signing_public_key {
        writeln!(
            out,
            "signing key       {k} (trust it where you restore: BACKUP_TRUSTED_KEYS)"
        )?;
    }
    writeln!(
        out,
        "health            {}",
        status
            .problem
            .as_deref()
            .map_or_else(|| "ok".to_owned(), |p| format!("PROBLEM: {p}"))
    )
}

fn render_pitr(p: &PitrStatus, out: &mut dyn Write) -> std::io::Result<()> {
    let window = match (p.window_from, p.window_to) {
        (Some(f), Some(t)) => format!("restores to any second from {} to {}", rfc(f), rfc(t)),
        _ => "no window yet".to_owned(),
    };
    let state = if p.capturing {
        format!(
            "capturing{}",
            p.lag_seconds
                .map(|l| format!(", {} behind", age_text(l)))
                .unwrap_or_default()
        )
    } else {
        format!(
            "OFF: {}",
            p.off_reason.as_deref().unwrap_or("not capturing")
        )
    };
    writeln!(out, "point in time     {state}; {window}")?;
    if let (Some(s), Some(age)) = (&p.last_slice, p.last_slice_age_seconds) {
        writeln!(
            out,
            "                  last slice {s} ({} ago), {} slices",
            age_text(age),
            p.slices
        )?;
    }
    if p.slices_refused > 0 {
        writeln!(
            out,
            "                  WARNING: {} slices are not signed by a trusted key for this project and are not used",
            p.slices_refused
        )?;
    }
    if let Some(g) = p.gaps.last() {
        writeln!(
            out,
            "                  last hole in the history: {}..{} found {} (a new base was taken)",
            g.from,
            g.to,
            rfc(g.found_at)
        )?;
    }
    if let Some(f) = &p.last_failure {
        writeln!(
            out,
            "                  last capture failure {}: {}",
            rfc(f.at),
            f.error
        )?;
    }
    Ok(())
}

fn render_offsite(o: &OffsiteStatus, out: &mut dyn Write) -> std::io::Result<()> {
    let newest = match (&o.newest_copy, o.newest_copy_age_seconds) {
        (Some(n), Some(age)) => format!("newest copy {n} ({} ago)", age_text(age)),
        _ => "no copy yet".to_owned(),
    };
    writeln!(out, "offsite           {}: {newest}", o.remote)?;
    if !o.pending.is_empty() {
        writeln!(
            out,
            "                  {} archives waiting to go up",
            o.pending.len()
        )?;
    }
    if let Some(first) = o.overwritten.first() {
        let n = o.overwritten.len();
        writeln!(
            out,
            "                  WARNING: the current version of {n} archive{} in the bucket \
             is not cofre's ({first}{}): someone wrote over {}; restores read the version \
             cofre wrote",
            if n == 1 { "" } else { "s" },
            if n > 1 { ", ..." } else { "" },
            if n == 1 { "it" } else { "them" },
        )?;
    }
    if o.failing
        && let Some(f) = &o.last_failure
    {
        writeln!(
            out,
            "                  last upload failed {}: {}",
            rfc(f.at),
            f.error
        )?;
    }
    Ok(())
}

fn render_drill(d: &DrillStatus, out: &mut dyn Write) -> std::io::Result<()> {
    let next = match (&d.schedule, &d.next_drill) {
        (Some(s), Some(n)) => format!("next {n} ({s})"),
        _ => "no drills scheduled (BACKUP_DRILL_SCHEDULE=off)".to_owned(),
    };
    let Some(last) = &d.last else {
        return writeln!(out, "restore drill     none yet; {next}");
    };
    let when = rfc(last.started_at);
    if last.ok {
        writeln!(
            out,
            "restore drill     passed {when}: {} restores in {:.1} s; {next}",
            last.archive,
            last.recovery_seconds.unwrap_or(0.0)
        )?;
    } else {
        writeln!(
            out,
            "restore drill     FAILED {when} at {}: {}; {next}",
            last.failed_check.as_deref().unwrap_or("?"),
            last.error.as_deref().unwrap_or("")
        )?;
        if let (Some(at), Some(age)) = (&d.last_success_at, d.last_success_age_seconds) {
            writeln!(
                out,
                "                  last passed {at} ({} ago)",
                age_text(age)
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CommandRun, DrillRecord, Success};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A status with every part present.
    fn full() -> Status {
        let now = at("2026-12-03T12:00:00Z");
        let drill = DrillRecord {
            base: None,
            pitr_seconds: Some(1.5),
            pitr_operations: Some(1200),
            pitr_point: Some("1796313536,23".into()),
            pitr_note: None,
            archive: "backup_2026-12-03T03-00-00.tar.gz.age".into(),
            started_at: at("2026-12-03T04:00:00Z"),
            finished_at: at("2026-12-03T04:01:00Z"),
            ok: false,
            failed_check: Some("compare".into()),
            error: Some("differs".into()),
            files_seconds: Some(1.0),
            database_seconds: Some(2.0),
            recovery_seconds: Some(3.0),
            archive_bytes: Some(10),
            files: 3,
            file_bytes: 30,
            collections: 1,
            documents: 5,
            mismatches: vec!["app.users: differs".into()],
            command: Some(CommandRun {
                command: "true".into(),
                exit_code: Some(0),
                signal: None,
                timed_out: false,
                seconds: 0.1,
                output_tail: String::new(),
            }),
            cleanup_problems: vec![],
        };
        Status {
            now,
            backup_dir: "/srv/app/backups".into(),
            healthy: false,
            problem: Some("the last restore drill failed".into()),
            last_success: Some(Success {
                archive: "backup_2026-12-03T03-00-00.tar.gz.age".into(),
                started_at: at("2026-12-03T03:00:00Z"),
                finished_at: at("2026-12-03T03:01:00Z"),
                size: 1234,
                warnings: 0,
            }),
            last_success_age_seconds: Some(9 * 3600),
            last_failure: Some(Failure {
                at: at("2026-12-02T03:00:00Z"),
                error: "boom".into(),
            }),
            daemon_running: true,
            next_run: Some("2026-12-04T03:00:00Z".into()),
            schedule: "0 3 * * *".into(),
            timezone: "UTC".into(),
            archives: 2,
            archives_bytes: 2468,
            unrestorable: vec![crate::backup::Orphan {
                archive: "backup_2026-12-03T03-00-00.diff.tar.gz.age".into(),
                needs: "backup_2026-11-30T03-00-00.tar.gz.age".into(),
            }],
            free_bytes: Some(1 << 30),
            total_bytes: Some(4 << 30),
            signing_public_key: Some("RWQ...".into()),
            offsite: Some(OffsiteStatus {
                remote: "s3://b/p".into(),
                last_success: Some(at("2026-12-03T03:02:00Z")),
                newest_copy: Some("backup_2026-12-03T03-00-00.tar.gz.age".into()),
                newest_copy_time: Some(at("2026-12-03T03:00:00Z")),
                newest_copy_age_seconds: Some(9 * 3600),
                last_failure: None,
                failing: false,
                pending: vec!["backup_x".into()],
                overwritten: vec!["backup_y".into()],
            }),
            drill: DrillStatus {
                schedule: Some("0 4 * * 0".into()),
                next_drill: Some("2026-12-06T04:00:00Z".into()),
                last_success_at: Some("2026-11-29T04:00:00Z".into()),
                last_success_age_seconds: Some(4 * 86400),
                last: Some(drill),
            },
            pitr: Some(PitrStatus {
                mode: "auto".into(),
                capturing: true,
                off_reason: None,
                window_from: Some(at("2026-12-02T03:00:00Z")),
                window_to: Some(at("2026-12-03T11:59:58Z")),
                lag_seconds: Some(2),
                last_entry: Some("1796313536,23".into()),
                last_slice: Some("oplog_2026-12-03T11-59-00.bson.zst.age".into()),
                last_slice_age_seconds: Some(58),
                slices: 1980,
                slices_refused: 0,
                gaps: vec![crate::state::OplogGap {
                    from: "1796100000,1".into(),
                    to: "1796100100,1".into(),
                    found_at: at("2026-12-01T03:00:00Z"),
                }],
                last_failure: None,
            }),
            notify: vec!["https://hooks.example.com/***".into()],
            metrics_addr: Some("127.0.0.1:9184".into()),
            metrics_file: Some("/var/lib/node_exporter/cofre.prom".into()),
        }
    }

    #[test]
    fn the_json_shape_is_pinned() {
        let mut out = Vec::new();
        render_json(&full(), &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        crate::commands::assert_golden("status.shape", &crate::commands::json_shape(&v));
    }

    #[test]
    fn the_text_says_every_part_with_the_ages_of_the_one_now() {
        let mut out = Vec::new();
        render_text(&full(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            "last success      2026-12-03T03:00:00Z (9h 0m ago), backup_2026-12-03T03-00-00.tar.gz.age",
            "last failure      2026-12-02T03:00:00Z: boom",
            "next run          2026-12-04T03:00:00Z (0 3 * * *, UTC; daemon running)",
            "offsite           s3://b/p: newest copy backup_2026-12-03T03-00-00.tar.gz.age (9h 0m ago)",
            "1 archives waiting to go up",
            "is not cofre's (backup_y)",
            "restore drill     FAILED 2026-12-03T04:00:00Z at compare: differs",
            "last passed 2026-11-29T04:00:00Z (4d 0h ago)",
            "health            PROBLEM: the last restore drill failed",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }
}
