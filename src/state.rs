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

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const STATE_NAME: &str = ".cofre-state.json";
const DAEMON_NAME: &str = ".cofre-daemon.json";

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

/// What one archive holds, from its manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Project files.
    pub files: u64,
    /// Bytes of project files.
    pub bytes: u64,
    /// MongoDB collections.
    #[serde(default)]
    pub collections: u64,
    /// MongoDB documents.
    #[serde(default)]
    pub documents: u64,
    /// Warnings.
    #[serde(default)]
    pub warnings: usize,
    /// How it was encrypted.
    #[serde(default)]
    pub encryption: String,
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
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> T {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(crate::store::TEMP_PREFIX)
        .tempfile_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, value)?;
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

/// Whether backups are healthy at `now`: `None`, or the problem. With
/// `max_age`, a last success older than that is a problem too.
pub fn health(
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
        let v: Option<DaemonState> = fs::read(dir.join(DAEMON_NAME))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        v
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
            let got = health(&state, max, now);
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
