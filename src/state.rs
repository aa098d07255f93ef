//! The small state files in `BACKUP_DIR`: the last success and failure, a
//! catalog of what each archive holds (so `list` and `status` need not
//! decrypt anything), and what the daemon is doing.
//!
//! Both files are written atomically (temporary file, fsync, rename) and read
//! leniently: a missing or damaged state file is an empty state, never an
//! error, because the archives themselves are the truth.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use chrono::TimeZone;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const STATE_NAME: &str = ".cofre-state.json";
const DAEMON_NAME: &str = ".cofre-daemon.json";
const OFFSITE_NAME: &str = ".cofre-offsite.json";
const DRILL_NAME: &str = ".cofre-drill.json";
const OPLOG_NAME: &str = ".cofre-oplog.json";

/// A successful backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Success {
    /// Archive file name.
    pub archive: String,
    /// Start (UTC).
    pub started_at: DateTime<Utc>,
    /// End (UTC).
    pub finished_at: DateTime<Utc>,
    /// Archive size in bytes.
    pub size: u64,
    /// Warnings recorded in the manifest.
    pub warnings: usize,
}

/// A failed backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    /// When it failed (UTC).
    pub at: DateTime<Utc>,
    /// The error, as printed.
    pub error: String,
}

/// What one archive holds, from its manifest: its totals (flattened, so
/// the state file reads `"files": 12, "bytes": ...`), its warnings, how it
/// was encrypted, and the documents of each collection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// The manifest's counts.
    #[serde(flatten)]
    pub totals: crate::archive::manifest::Totals,
    /// Warnings.
    #[serde(default)]
    pub warnings: usize,
    /// How it was encrypted.
    #[serde(default)]
    pub encryption: String,
    /// Documents per collection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mongodb: Vec<CollectionCount>,
    /// A differential's files not stored in it, as its full holds them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Summary {
    /// Files restoring this archive gives back (a differential's stored
    /// and unchanged files).
    pub fn restore_point_files(&self) -> u64 {
        self.totals.files + self.unchanged
    }
}

/// One collection's document count in an archive.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CollectionCount {
    /// Database.
    pub db: String,
    /// Collection.
    pub collection: String,
    /// Documents.
    pub documents: u64,
}

/// The backup state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// The last successful backup.
    pub last_success: Option<Success>,
    /// The last failed backup.
    pub last_failure: Option<Failure>,
    /// Per archive name, what it holds.
    #[serde(default)]
    pub archives: BTreeMap<String, Summary>,
}

/// The oplog capture, as the daemon last recorded it (for `status`, the
/// metrics and the npm API; nothing destructive is decided from it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OplogState {
    /// Whether the daemon is capturing now.
    #[serde(default)]
    pub capturing: bool,
    /// Why it is not, when it is not (a standalone server, no base yet).
    pub off_reason: Option<String>,
    /// The last entry captured (`T,I`).
    pub last_entry: Option<String>,
    /// When it was made durable.
    pub last_durable_at: Option<DateTime<Utc>>,
    /// Up to this wall time, the server was proven to have written
    /// nothing the capture does not hold.
    pub proven_at: Option<DateTime<Utc>>,
    /// The last slice closed.
    pub last_slice: Option<String>,
    /// When it closed.
    pub last_slice_at: Option<DateTime<Utc>>,
    /// The oldest point a restore reaches, as the trusted slices and
    /// archives said when the last slice closed (for the metrics).
    #[serde(default)]
    pub window_from: Option<DateTime<Utc>>,
    /// Holes found in the history: the oplog no longer reached back.
    #[serde(default)]
    pub gaps: Vec<OplogGap>,
    /// The last failure of the capture.
    pub last_failure: Option<Failure>,
}

/// A hole in the captured history.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OplogGap {
    /// The last entry held before it (`T,I`).
    pub from: String,
    /// The oldest entry the server still had (`T,I`).
    pub to: String,
    /// When it was found.
    pub found_at: DateTime<Utc>,
}

impl OplogState {
    /// Seconds the captured history is behind `now`: since the newest of
    /// the last entry held and the last time the server was proven idle.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<i64> {
        let entry = self
            .last_entry
            .as_deref()
            .and_then(|t| t.split_once(',')?.0.parse::<i64>().ok())
            .and_then(|s| Utc.timestamp_opt(s, 0).single());
        let newest = entry.max(self.proven_at)?;
        Some((now - newest).num_seconds().max(0))
    }

    /// Reads it (empty when missing or damaged).
    pub fn load(dir: &Path) -> OplogState {
        read_json(&dir.join(OPLOG_NAME))
    }

    /// Writes it atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        write_json(dir, OPLOG_NAME, self)
    }
}

/// The offsite copies, as the last upload found them. Kept in a file of its
/// own: uploads run beside backups in the daemon, and neither may lose
/// the other's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OffsiteState {
    /// The remote (`s3://bucket/prefix`).
    pub remote: String,
    /// When the bucket last held every archive it should.
    pub last_success: Option<DateTime<Utc>>,
    /// The newest archive in the bucket.
    pub newest_copy: Option<String>,
    /// The time in that archive's name.
    pub newest_copy_time: Option<DateTime<Utc>>,
    /// The last failed upload.
    pub last_failure: Option<Failure>,
    /// Local archives not in the bucket after the last attempt.
    #[serde(default)]
    pub pending: Vec<String>,
    /// Remote deletions a lock refused: not tried again before this time.
    #[serde(default)]
    pub refused_deletions: BTreeMap<String, DateTime<Utc>>,
    /// What the bucket answered when cofre uploaded each archive (ETag and
    /// version of the archive and its signature): how a later run knows
    /// the bucket still holds cofre's copy without reading it back. It is
    /// believed only for the exact version the bucket lists; anything else
    /// is judged by the local file's size, ETag and bytes.
    #[serde(default)]
    pub copies: BTreeMap<String, crate::remote::Copies>,
    /// Archives whose current version in the bucket is not cofre's
    /// (written over; restores read cofre's version).
    #[serde(default)]
    pub overwritten: Vec<String>,
}

impl OffsiteState {
    /// Reads it (empty when missing or damaged).
    pub fn load(dir: &Path) -> OffsiteState {
        read_json(&dir.join(OFFSITE_NAME))
    }

    /// Writes it atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        write_json(dir, OFFSITE_NAME, self)
    }

    /// Whether the last attempt failed.
    pub fn failing(&self) -> bool {
        match (&self.last_success, &self.last_failure) {
            (Some(s), Some(f)) => f.at > *s,
            (None, Some(_)) => true,
            _ => false,
        }
    }
}

/// A smoke test's run, as a drill records it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CommandRun {
    /// The command, as configured.
    pub command: String,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Whether it ran out of time (and was stopped).
    pub timed_out: bool,
    /// How long it ran.
    pub seconds: f64,
    /// The end of what it printed (stdout and stderr), secrets scrubbed.
    pub output_tail: String,
}

/// One restore drill.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DrillRecord {
    /// The archive restored.
    pub archive: String,
    /// For a differential, the full restored before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Start (UTC).
    pub started_at: DateTime<Utc>,
    /// End, clean-up included (UTC).
    pub finished_at: DateTime<Utc>,
    /// Whether every step and check passed.
    pub ok: bool,
    /// The step that failed: `setup`, `archive`, `files`, `database`,
    /// `compare`, `command`, `cancelled`.
    pub failed_check: Option<String>,
    /// Why.
    pub error: Option<String>,
    /// Seconds to restore the files (reading, decrypting and checking the
    /// archive included).
    pub files_seconds: Option<f64>,
    /// Seconds to restore the database.
    pub database_seconds: Option<f64>,
    /// Seconds to replay the captured oplog after it (a point-in-time
    /// restore's own time), when the archive is the base of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr_seconds: Option<f64>,
    /// Operations replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr_operations: Option<u64>,
    /// The operation it reached (`T,I`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr_point: Option<String>,
    /// Why the replay was not compared with the live database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr_note: Option<String>,
    /// Files plus database: the recovery time this archive gives.
    pub recovery_seconds: Option<f64>,
    /// The archive's size.
    pub archive_bytes: Option<u64>,
    /// Files restored.
    pub files: u64,
    /// Bytes of files restored.
    pub file_bytes: u64,
    /// Collections restored and compared.
    pub collections: u64,
    /// Documents restored and compared.
    pub documents: u64,
    /// What the comparison found different (at most 20).
    #[serde(default)]
    pub mismatches: Vec<String>,
    /// The smoke test, when one ran.
    pub command: Option<CommandRun>,
    /// Clean-up that did not work (the next drill tries again).
    #[serde(default)]
    pub cleanup_problems: Vec<String>,
}

/// What a drill made, recorded before it makes it, so the next drill can
/// remove it when this one could not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingDrill {
    /// The scratch directory.
    pub dir: std::path::PathBuf,
    /// The prefix of the scratch databases (`cofre_drill_<time>_`).
    pub db_prefix: String,
}

/// The drills' record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DrillState {
    /// The last drill.
    pub last: Option<DrillRecord>,
    /// The last drill that passed.
    pub last_success: Option<DrillRecord>,
    /// Scratch made by drills and not yet removed.
    #[serde(default)]
    pub pending: Vec<PendingDrill>,
}

impl DrillState {
    /// Reads it (empty when missing or damaged).
    pub fn load(dir: &Path) -> DrillState {
        read_json(&dir.join(DRILL_NAME))
    }

    /// Writes it atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        write_json(dir, DRILL_NAME, self)
    }
}

/// Why drills are unhealthy whatever the limits: the last one failed.
pub fn drill_failed(drills: &DrillState) -> Option<String> {
    let last = drills.last.as_ref().filter(|l| !l.ok)?;
    Some(format!(
        "the last restore drill ({}) failed at {}: {}",
        last.archive,
        last.failed_check.as_deref().unwrap_or("?"),
        last.error.as_deref().unwrap_or("")
    ))
}

/// Whether drills are healthy at `now`: the last one passed and the last
/// pass is at most `max_age` old.
pub fn drill_health(
    drills: &DrillState,
    max_age: std::time::Duration,
    now: DateTime<Utc>,
) -> Option<String> {
    let Some(last) = &drills.last else {
        return Some("no restore drill has run yet".to_owned());
    };
    if let Some(failed) = drill_failed(drills) {
        return Some(failed);
    }
    let success = drills.last_success.as_ref().unwrap_or(last);
    let age = (now - success.started_at).num_seconds();
    (age > max_age.as_secs() as i64).then(|| {
        format!(
            "the last successful restore drill is {} old, more than --max-drill-age {}",
            crate::format::age_text(age),
            humantime::format_duration(max_age)
        )
    })
}

/// What the daemon says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaemonState {
    /// Its pid.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The schedule it runs.
    pub schedule: String,
    /// The time zone of the schedule.
    pub timezone: String,
    /// Its next run.
    pub next_run: Option<DateTime<Utc>>,
    /// Its next restore drill.
    #[serde(default)]
    pub next_drill: Option<DateTime<Utc>>,
    /// The drill schedule it runs (`None`: drills off).
    #[serde(default)]
    pub drill_schedule: Option<String>,
}

/// The largest state file read (they are small; anything larger is not ours).
const MAX_STATE: u64 = 16 << 20;

/// Reads a state file without following a symlink, at most 16 MiB; `None`
/// when missing, unreadable or damaged.
fn read_opt<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::store::NOFOLLOW)
        .open(path)
        .ok()?;
    let mut bytes = Vec::new();
    f.take(MAX_STATE).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> T {
    read_opt(path).unwrap_or_default()
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let mut tmp = crate::store::temp_in(dir, "", 0o600)?;
    // Whatever a state file holds passes through the scrubber first.
    let text = crate::secret::scrub(&serde_json::to_string_pretty(value)?);
    tmp.write_all(text.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

impl State {
    /// Reads the state of `dir` (empty when missing or unreadable).
    pub fn load(dir: &Path) -> State {
        read_json(&dir.join(STATE_NAME))
    }

    /// Writes it atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        write_json(dir, STATE_NAME, self)
    }

    /// Forgets archives that no longer exist.
    pub fn retain_archives(&mut self, existing: &[String]) {
        self.archives.retain(|name, _| existing.contains(name));
    }
}

/// The limits a health check holds backups to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// The oldest a last success may be (and, with offsite copies, the
    /// newest copy in the bucket).
    pub max_age: Option<std::time::Duration>,
    /// The oldest the newest offsite copy may be.
    pub max_offsite_age: Option<std::time::Duration>,
    /// The oldest the last successful restore drill may be.
    pub max_drill_age: Option<std::time::Duration>,
    /// How far behind the server the captured oplog may be.
    pub max_oplog_lag: Option<std::time::Duration>,
}

/// Whether backups are healthy at `now`: `None`, or the problem: the last
/// backup, the last offsite copy (`offsite`, the bucket's record when
/// `BACKUP_REMOTE` is set) and the last restore drill must not have
/// failed; the limits hold their ages.
pub fn health(
    state: &State,
    offsite: Option<&OffsiteState>,
    drills: &DrillState,
    limits: Limits,
    now: DateTime<Utc>,
) -> Option<String> {
    // A failed drill is a problem whatever the limits; a stale one only
    // against --max-drill-age.
    let drill = || match limits.max_drill_age {
        Some(max) => drill_health(drills, max, now),
        None => drill_failed(drills),
    };
    local_health(state, limits.max_age, now)
        .or_else(|| offsite_health(offsite, limits, now))
        .or_else(drill)
}

/// The oplog capture's health against `--max-oplog-lag`.
pub fn oplog_health(
    oplog: &OplogState,
    max: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> Option<String> {
    let max = max?;
    if !oplog.capturing {
        let why = oplog
            .off_reason
            .clone()
            .or_else(|| oplog.last_failure.as_ref().map(|f| f.error.clone()))
            .unwrap_or_else(|| "the daemon is not running".into());
        return Some(format!("the oplog is not being captured: {why}"));
    }
    let Some(lag) = oplog.lag_seconds(now) else {
        return Some("the oplog capture has not captured anything yet".into());
    };
    (lag > max.as_secs() as i64).then(|| {
        format!(
            "the captured oplog is {} behind, more than {}",
            crate::format::age_text(lag),
            humantime::format_duration(max)
        )
    })
}

fn offsite_health(
    offsite: Option<&OffsiteState>,
    limits: Limits,
    now: DateTime<Utc>,
) -> Option<String> {
    {
        let offsite = offsite?;
        if offsite.failing() {
            let why = offsite
                .last_failure
                .as_ref()
                .map_or("", |f| f.error.as_str());
            return Some(format!("the last offsite copy failed: {why}"));
        }
        let max = limits.max_offsite_age.or(limits.max_age)?;
        let Some(newest) = offsite.newest_copy_time else {
            return Some("there is no offsite copy yet".to_owned());
        };
        let age = (now - newest).num_seconds();
        (age > max.as_secs() as i64).then(|| {
            format!(
                "the newest offsite copy is {} old, more than {}",
                crate::format::age_text(age),
                humantime::format_duration(max)
            )
        })
    }
}

fn local_health(
    state: &State,
    max_age: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> Option<String> {
    let Some(success) = &state.last_success else {
        return Some("no successful backup yet".to_owned());
    };
    if state
        .last_failure
        .as_ref()
        .is_some_and(|f| f.at > success.finished_at)
    {
        return Some("the last backup failed".to_owned());
    }
    let age = (now - success.started_at).num_seconds();
    match max_age {
        Some(max) if age > max.as_secs() as i64 => Some(format!(
            "the last successful backup is {} old, more than --max-age {}",
            crate::format::age_text(age),
            humantime::format_duration(max)
        )),
        _ => None,
    }
}

impl DaemonState {
    /// Reads the daemon's state, if any.
    pub fn load(dir: &Path) -> Option<DaemonState> {
        read_opt(&dir.join(DAEMON_NAME))
    }

    /// Writes it atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        write_json(dir, DAEMON_NAME, self)
    }

    /// Removes it (the daemon stopped).
    pub fn clear(dir: &Path) {
        let _ = fs::remove_file(dir.join(DAEMON_NAME));
    }

    /// Whether the process that wrote it still runs (one of another user
    /// answers "not permitted", which still means it is there).
    pub fn is_alive(&self) -> bool {
        rustix::process::Pid::from_raw(self.pid as i32).is_some_and(|pid| {
            matches!(
                rustix::process::test_kill_process(pid),
                Ok(()) | Err(rustix::io::Errno::PERM)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn success(started: &str) -> Option<Success> {
        Some(Success {
            archive: "a".into(),
            started_at: at(started),
            finished_at: at(started) + chrono::Duration::minutes(1),
            size: 1,
            warnings: 0,
        })
    }

    #[test]
    fn a_failed_drill_is_a_problem_without_any_limit() {
        let now = at("2026-03-02T12:00:00Z");
        let state = State {
            last_success: success("2026-03-02T03:00:00Z"),
            ..Default::default()
        };
        let record = |ok| DrillRecord {
            archive: "a".into(),
            started_at: at("2026-03-01T04:00:00Z"),
            ok,
            failed_check: (!ok).then(|| "compare".to_owned()),
            ..Default::default()
        };
        let failed = DrillState {
            last: Some(record(false)),
            ..Default::default()
        };
        let got = health(&state, None, &failed, Limits::default(), now);
        assert!(got.is_some_and(|p| p.contains("drill")));
        let passed = DrillState {
            last: Some(record(true)),
            ..Default::default()
        };
        assert_eq!(health(&state, None, &passed, Limits::default(), now), None);
        // A passed but old drill only counts against --max-drill-age.
        let limits = Limits {
            max_drill_age: Some(std::time::Duration::from_secs(3600)),
            ..Limits::default()
        };
        assert!(health(&state, None, &passed, limits, now).is_some());
        // No drill yet is not a problem, unless a drill age is asked for.
        assert_eq!(
            health(&state, None, &DrillState::default(), Limits::default(), now),
            None
        );
    }

    #[test]
    fn health_table() {
        let now = at("2026-03-02T12:00:00Z");
        let day = Some(std::time::Duration::from_secs(26 * 3600));
        let failure = |when: &str| {
            Some(Failure {
                at: at(when),
                error: "boom".into(),
            })
        };
        let cases: Vec<(State, Option<std::time::Duration>, Option<&str>)> = vec![
            (State::default(), None, Some("no successful backup yet")),
            (
                State {
                    last_success: success("2026-03-02T03:00:00Z"),
                    ..Default::default()
                },
                day,
                None,
            ),
            (
                State {
                    last_success: success("2026-02-28T03:00:00Z"),
                    ..Default::default()
                },
                None,
                None,
            ),
            (
                State {
                    last_success: success("2026-02-28T03:00:00Z"),
                    ..Default::default()
                },
                day,
                Some("more than --max-age"),
            ),
            (
                State {
                    last_success: success("2026-03-02T03:00:00Z"),
                    last_failure: failure("2026-03-02T11:00:00Z"),
                    ..Default::default()
                },
                day,
                Some("the last backup failed"),
            ),
            (
                State {
                    last_success: success("2026-03-02T03:00:00Z"),
                    last_failure: failure("2026-03-01T11:00:00Z"),
                    ..Default::default()
                },
                day,
                None,
            ),
        ];
        for (state, max, want) in cases {
            let got = health(
                &state,
                None,
                &DrillState::default(),
                Limits {
                    max_age: max,
                    ..Limits::default()
                },
                now,
            );
            match want {
                None => assert_eq!(got, None, "{state:?}"),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(w)),
                    "{got:?} for {state:?}"
                ),
            }
        }
    }
}
