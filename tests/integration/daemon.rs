//! Automatic backups: the daemon on a real schedule, retention, the lock,
//! status for monitoring, and the faults a scheduler meets (kill -9, a full
//! disk, a missed run, a signal in the middle of a backup).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A `cofre daemon` of the test's environment, its stderr lines collected.
pub struct Daemon {
    child: Child,
    rx: mpsc::Receiver<String>,
    /// The stderr lines seen so far.
    pub seen: Vec<String>,
}

impl Daemon {
    pub fn start(env: &Env) -> Daemon {
        let mut child = env
            .cmd()
            .arg("daemon")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `pred` holds for the lines seen so far.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !pred(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(l) => self.seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return pred(&self.seen),
            }
        }
        true
    }

    /// Sends SIGTERM, waits for the exit, and collects the last lines.
    pub fn stop(mut self) -> (Option<i32>, Vec<String>) {
        sh(&format!("kill -TERM {}", self.child.id()));
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.rx.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        (status.code(), self.seen)
    }
}

pub fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

fn temp_files(dir: &std::path::Path) -> Vec<String> {
    names_starting(dir, ".cofre-tmp")
}

#[test]
fn daemon_backs_up_on_schedule_applies_retention_and_stops_cleanly() {
    let mut env = Env::with_tree();
    env.set("BACKUP_SCHEDULE", "*/2 * * * * *");
    env.set("BACKUP_RETENTION_DAYS", "0");
    env.set("BACKUP_KEEP_LAST", "2");
    env.set("BACKUP_TIMEZONE", "UTC");
    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_for(Duration::from_secs(10), |l| count(l, "daemon started") == 1),
        "{:#?}",
        daemon.seen
    );
    assert!(
        daemon.seen[0].contains("next runs:"),
        "the start line names the next runs: {}",
        daemon.seen[0]
    );

    // Meanwhile: a second daemon is refused; a manual backup waits its turn.
    let second = env.run(["daemon"]);
    assert_eq!(second.status.code(), Some(11), "{}", text(&second));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another cofre daemon"));
    env.ok(["backup", "--wait", "30s", "--no-prune"]);

    assert!(
        daemon.wait_for(Duration::from_secs(30), |l| count(
            l,
            "scheduled backup done"
        ) >= 3),
        "{:#?}",
        daemon.seen
    );
    let (code, seen) = daemon.stop();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert!(count(&seen, "daemon stopped") == 1, "{seen:#?}");
    assert!(
        count(&seen, "deleted backup_") >= 1,
        "retention ran: {seen:#?}"
    );
    let archives = env.archives();
    assert!(archives.len() <= 3 && archives.len() >= 2, "{archives:?}");
    assert!(temp_files(&env.backups).is_empty());
    assert!(!env.backups.join(".cofre-daemon.json").exists());
    // Everything that is there is complete and verifies.
    let out = stdout(&env.ok(["verify", "--all"]));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok")).count(),
        archives.len(),
        "{out}"
    );
    // The status agrees.
    env.ok(["status", "--max-age", "5m"]);
}

#[test]
fn sigterm_during_a_backup_stops_it_cleanly() {
    let mut env = Env::new();
    // Enough incompressible data at the slowest level to take a while.
    let mut rng = Rng::new(7);
    for i in 0..12 {
        fs::write(
            env.project.join(format!("blob{i}.bin")),
            rng.bytes(16 << 20),
        )
        .unwrap();
    }
    env.set("BACKUP_SCHEDULE", "0 0 1 1 *");
    env.set("BACKUP_COMPRESSION", "gzip:9");
    let mut daemon = Daemon::start(&env);
    // No backup yet: it catches up at once.
    assert!(
        daemon.wait_for(Duration::from_secs(20), |l| count(l, "backup started") == 1),
        "{:#?}",
        daemon.seen
    );
    thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let (code, seen) = daemon.stop();
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    assert!(
        count(&seen, "stopping the running backup") == 1,
        "{seen:#?}"
    );
    assert!(
        env.archives().is_empty(),
        "no archive from a stopped backup"
    );
    assert!(
        temp_files(&env.backups).is_empty(),
        "{:?}",
        temp_files(&env.backups)
    );
    // The lock is free: the next backup runs at once.
    env.ok(["backup"]);
}

#[test]
fn kill_9_at_any_point_leaves_no_partial_archive() {
    let mut env = Env::with_tree();
    let mut rng = Rng::new(9);
    for i in 0..4 {
        fs::write(env.project.join(format!("blob{i}.bin")), rng.bytes(8 << 20)).unwrap();
    }
    env.set("BACKUP_COMPRESSION", "gzip:9");
    for delay_ms in [0u64, 20, 100, 300, 700] {
        let mut child = env
            .cmd()
            .arg("backup")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Whatever has a final name is complete.
        for a in env.archives() {
            env.ok(argv!["verify", a]);
        }
    }
    // The next backup takes the lock at once, cleans up, and succeeds.
    env.ok(["backup"]);
    assert!(temp_files(&env.backups).is_empty());
    env.ok(["verify", "--all"]);
}

#[test]
fn failed_runs_are_retried_and_never_recorded_as_success() {
    let mut env = Env::with_tree();
    env.set("BACKUP_SCHEDULE", "*/3 * * * * *");
    env.set("BACKUP_RETRIES", "1");
    env.set(
        "MONGODB_URI",
        "mongodb://u:Pw-9911@127.0.0.1:9/app?serverSelectionTimeoutMS=300",
    );
    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_for(Duration::from_secs(30), |l| count(l, "attempt 2 of 2") >= 1),
        "{:#?}",
        daemon.seen
    );
    let (code, seen) = daemon.stop();
    assert_eq!(code, Some(0));
    assert!(count(&seen, "retrying in") >= 1, "{seen:#?}");
    assert!(seen.iter().all(|l| !l.contains("Pw-9911")));
    assert!(env.archives().is_empty());
    let out = env.run(["status", "--max-age", "1h"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let o = stdout(&out);
    assert!(
        o.contains("last success      none") && o.contains("cannot reach MongoDB"),
        "{o}"
    );
}

#[test]
fn the_lock_names_its_holder_and_can_be_waited_for() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    // Hold the lock as another cofre would.
    let lock_path = env.backups.join(".cofre.lock");
    let mut lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .unwrap();
    lock.lock().unwrap();
    lock.set_len(0).unwrap();
    write!(lock, "424242").unwrap();
    // Exit code 11: busy, not broken.
    let msg = env.fails(["backup"], 11);
    assert!(
        msg.contains("another cofre process (pid 424242) holds the lock"),
        "{msg}"
    );
    let msg = env.fails(["prune"], 11);
    assert!(msg.contains("holds the lock"), "{msg}");
    let started = Instant::now();
    let msg = env.fails(["backup", "--wait", "1s"], 11);
    assert!(
        msg.contains("holds the lock") && started.elapsed() >= Duration::from_millis(900),
        "{msg}"
    );
    // Released while a backup waits: it goes ahead.
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(700));
        drop(lock);
    });
    env.ok(["backup", "--wait", "20s"]);
    releaser.join().unwrap();
    assert_eq!(env.archives().len(), 2);
}

#[test]
fn status_for_monitoring() {
    let env = Env::with_tree();
    let out = env.run(["status", "--max-age", "1h"]);
    assert_eq!(out.status.code(), Some(1), "no backup yet: {}", text(&out));
    assert_eq!(
        env.run(["status"]).status.code(),
        Some(0),
        "without --max-age it only informs"
    );
    env.ok(["backup"]);
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&env.ok(["status", "--json", "--max-age", "1h"]))).unwrap();
    assert_eq!(json["healthy"], true);
    assert_eq!(json["archives"], 1);
    assert!(json["free_bytes"].as_u64().unwrap() > 0);
    assert!(json["next_run"].is_string());
    // Stale.
    thread::sleep(Duration::from_millis(2100));
    let out = env.run(["status", "--max-age", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains("more than --max-age"));
    // Failed after a success.
    let mut env = env;
    env.set("BACKUP_SOURCE", env.path("gone"));
    let backups = env.backups.clone();
    env.set("BACKUP_DIR", backups);
    env.fails(["backup"], 1);
    let out = env.run(["status", "--max-age", "1h"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("the last backup failed"),
        "{}",
        text(&out)
    );
}

#[test]
fn prune_explains_and_never_deletes_the_newest_or_foreign_files() {
    let env = Env::with_tree();
    env.ok(["backup", "--no-prune"]);
    let real = env.archive();
    // Old archives (copies of a real one under old names), a foreign file
    // with an archive-like name, a temporary file, and a symlink.
    let old1 = env.backups.join("backup_2020-01-01T00-00-00.tar.gz.age");
    let old2 = env.backups.join("backup_2021-06-01T12-00-00.tar.gz.age");
    fs::copy(&real, &old1).unwrap();
    fs::copy(&real, &old2).unwrap();
    // Retention manages only this project's signed archives: these are,
    // signed as cofre signs them.
    env.sign(&old1);
    env.sign(&old2);
    let foreign = env
        .backups
        .join("backup_2019-01-01T00-00-00.tar.gz.partial");
    fs::write(&foreign, "x").unwrap();
    let outside = env.path("outside-archive");
    fs::write(&outside, "keep me").unwrap();
    std::os::unix::fs::symlink(
        &outside,
        env.backups.join("backup_2018-01-01T00-00-00.tar.gz"),
    )
    .unwrap();

    let out = stdout(&env.ok(["prune", "--dry-run"]));
    assert!(
        out.contains("would delete backup_2020-01-01T00-00-00.tar.gz.age"),
        "{out}"
    );
    assert!(out.contains("older than 7 days"), "{out}");
    assert!(out.contains("younger than 7 days"), "{out}");
    assert!(old1.exists() && old2.exists(), "a dry run deletes nothing");

    let out = stdout(&env.ok(["prune"]));
    assert!(
        out.contains("delete       backup_2021-06-01T12-00-00.tar.gz.age"),
        "{out}"
    );
    assert!(!old1.exists() && !old2.exists());
    assert!(real.exists() && foreign.exists() && outside.exists());

    // Only ancient archives left: the newest survives.
    fs::remove_file(&real).unwrap();
    fs::write(&old1, "old").unwrap();
    fs::write(&old2, "older").unwrap();
    env.sign(&old1);
    env.sign(&old2);
    let out = stdout(&env.ok(["prune"]));
    assert!(
        out.contains("keep         backup_2021-06-01T12-00-00.tar.gz.age")
            && out.contains("never deleted"),
        "{out}"
    );
    assert!(old2.exists() && !old1.exists());
}

#[test]
fn full_disk_fails_cleanly_and_keeps_older_archives() {
    let mut env = Env::new();
    let Some(disk) = SmallDisk::mount(&env, "12m") else {
        return;
    };
    let dir = disk.path.join("backups");
    env.set("BACKUP_DIR", &dir);
    env.set("BACKUP_MIN_FREE", "0%");
    let mut rng = Rng::new(3);
    fs::write(env.project.join("a.bin"), rng.bytes(3 << 20)).unwrap();
    env.ok(["backup"]);
    let first = archives_in(&dir);
    assert_eq!(first.len(), 1);

    // The estimate (the last archive's size) fits, the real archive does not.
    fs::write(env.project.join("b.bin"), rng.bytes(12 << 20)).unwrap();
    let msg = env.fails(["backup"], 1);
    assert!(
        msg.contains("disk is full") || msg.contains("No space left"),
        "{msg}"
    );
    assert_eq!(archives_in(&dir), first, "the older archive is untouched");
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
    env.ok(argv!["verify", first[0]]);

    // A first backup that clearly cannot fit is refused before it starts.
    let mut env2 = Env::new();
    let dir2 = disk.path.join("other");
    fs::create_dir_all(&dir2).unwrap();
    env2.set("BACKUP_DIR", &dir2);
    fs::write(env2.project.join("c.bin"), rng.bytes(20 << 20)).unwrap();
    let msg = env2.fails(["backup"], 1);
    assert!(msg.contains("not enough free space"), "{msg}");
    assert!(archives_in(&dir2).is_empty());
}

/// The npm `runNow()` case: manual backups while the daemon runs. Each
/// manual backup cleans up the temporary files of runs that died; it must
/// never take the daemon's state file while the daemon writes it.
#[test]
fn manual_backups_beside_the_daemon_never_lose_its_state_writes() {
    let mut env = Env::new();
    for i in 0..20 {
        fs::write(env.project.join(format!("f{i}.txt")), "x\n").unwrap();
    }
    env.set("BACKUP_SCHEDULE", "* * * * * *");
    env.set("BACKUP_DRILL_SCHEDULE", "off");
    env.set("BACKUP_RETENTION_DAYS", "0");
    env.set("BACKUP_KEEP_LAST", "3");
    let mut daemon = Daemon::start(&env);
    assert!(daemon.wait_for(Duration::from_secs(30), |l| count(l, "daemon started") == 1));
    // A leftover of a run that died: it goes.
    let leftover = env.backups.join(".cofre-tmp-999999-dead.partial");
    fs::write(&leftover, "x").unwrap();
    for _ in 0..25 {
        let out = env.run(["backup", "--wait", "30s"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    // Back-to-back manual backups may hold the lock at every tick on a
    // loaded machine; once they stop, the daemon's own run must go through.
    daemon.wait_for(Duration::from_secs(30), |l| {
        count(l, "scheduled backup done") >= 1
    });
    let (code, seen) = daemon.stop();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(count(&seen, "cannot write"), 0, "{seen:#?}");
    assert!(count(&seen, "scheduled backup done") >= 1, "{seen:#?}");
    assert!(!leftover.exists());
    assert!(
        temp_files(&env.backups).is_empty(),
        "{:?}",
        temp_files(&env.backups)
    );
}
