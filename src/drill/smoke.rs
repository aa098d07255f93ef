//! The drill's smoke test: `BACKUP_DRILL_COMMAND`, run by `sh -c` in the
//! restored tree, in a process group of its own, with a time limit.
//!
//! Whatever it starts is stopped when it ends: at its timeout or on a stop
//! signal the whole group gets SIGTERM, then SIGKILL 5 seconds later, and
//! after it exits on its own anything it left behind in its group gets
//! SIGKILL. Its stdout and stderr go to one pipe, of which the last 16 KiB
//! are kept; the record holds the last 40 lines of that.
//!
//! The environment is the drill's, without cofre's own `BACKUP_*`
//! settings (passphrases, keys), with `COFRE_DRILL_DIR`,
//! `COFRE_DRILL_MONGODB_URI` and `COFRE_DRILL_DATABASES` added, and
//! `MONGODB_URI` set to the scratch database: an application that finds
//! its database through `MONGODB_URI` tests the restored copy, never the
//! live one (dotenv-style loaders do not override a variable that is set).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::state::CommandRun;

/// Bytes of output kept.
const TAIL_BYTES: usize = 16 << 10;
/// Lines of output recorded.
const TAIL_LINES: usize = 40;
/// Between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How often the child is looked at.
const POLL: Duration = Duration::from_millis(50);

/// What the command is run with.
#[derive(Debug)]
pub struct Smoke<'a> {
    /// The command line, for `sh -c`.
    pub command: &'a str,
    /// Its working directory (the restored tree).
    pub dir: &'a Path,
    /// Variables to add (or replace).
    pub env: Vec<(String, String)>,
    /// Its time limit.
    pub timeout: Duration,
}

/// Runs the smoke test until it exits, times out or `cancel` is set.
pub fn run(smoke: &Smoke<'_>, cancel: &AtomicBool) -> io::Result<CommandRun> {
    let (reader, writer) = io::pipe()?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(smoke.command)
        .current_dir(smoke.dir)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0)
        .env_clear()
        .envs(command_env(std::env::vars_os(), &smoke.env));
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    // The command keeps copies of the pipe's write end; the output only
    // ends once they are closed.
    drop(cmd);
    let group = rustix::process::Pid::from_child(&child);
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_BYTES)));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let tail = Arc::clone(&tail);
        std::thread::Builder::new()
            .name("cofre-drill-output".into())
            .spawn(move || {
                collect(reader, &tail);
                let _ = done_tx.send(());
            })?;
    }
    let mut timed_out = false;
    let mut term_sent: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let stop = cancel.load(Ordering::Relaxed) || started.elapsed() >= smoke.timeout;
        match term_sent {
            None if stop => {
                timed_out = !cancel.load(Ordering::Relaxed);
                signal_group(group, rustix::process::Signal::TERM);
                term_sent = Some(Instant::now());
            }
            Some(at) if at.elapsed() >= KILL_GRACE => {
                signal_group(group, rustix::process::Signal::KILL);
            }
            _ => {}
        }
        std::thread::sleep(POLL);
    };
    let seconds = started.elapsed().as_secs_f64();
    // Whatever it left running in its group goes too.
    signal_group(group, rustix::process::Signal::KILL);
    // A process that left the group may still hold the pipe: the output
    // is what arrived by then.
    let _ = done_rx.recv_timeout(Duration::from_secs(2));
    let text = {
        let bytes = tail.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = bytes.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    };
    Ok(CommandRun {
        command: smoke.command.to_owned(),
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        seconds,
        output_tail: crate::secret::scrub(&last_lines(&text, TAIL_LINES)),
    })
}

/// The command's environment: `base` without cofre's `BACKUP_*` settings,
/// then `added`.
fn command_env(
    base: impl Iterator<Item = (OsString, OsString)>,
    added: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = base
        .filter(|(k, _)| !k.as_encoded_bytes().starts_with(b"BACKUP_"))
        .filter(|(k, _)| {
            !added
                .iter()
                .any(|(a, _)| k.as_encoded_bytes() == a.as_bytes())
        })
        .collect();
    env.extend(added.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

fn signal_group(group: rustix::process::Pid, signal: rustix::process::Signal) {
    // ESRCH: the group is gone already.
    let _ = rustix::process::kill_process_group(group, signal);
}

/// Reads `reader` to its end, keeping the last [`TAIL_BYTES`].
fn collect(mut reader: impl Read, tail: &Mutex<VecDeque<u8>>) {
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.extend(&buf[..n]);
                let excess = t.len().saturating_sub(TAIL_BYTES);
                t.drain(..excess);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let text = text.trim_end_matches('\n');
    let start = text
        .rmatch_indices('\n')
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i + 1);
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smoke(command: &str, timeout: Duration) -> CommandRun {
        let dir = tempfile::tempdir().unwrap();
        run(
            &Smoke {
                command,
                dir: dir.path(),
                env: vec![("COFRE_DRILL_DIR".into(), dir.path().display().to_string())],
                timeout,
            },
            &AtomicBool::new(false),
        )
        .unwrap()
    }

    #[test]
    fn exit_code_and_output_tail() {
        let r = smoke(
            "test \"$COFRE_DRILL_DIR\" = \"$PWD\" && seq 1 100 && echo oops >&2; exit 3",
            Duration::from_secs(30),
        );
        assert_eq!(r.exit_code, Some(3));
        assert!(!r.timed_out);
        assert!(r.output_tail.starts_with("62\n"), "{}", r.output_tail);
        assert!(r.output_tail.ends_with("100\noops"), "{}", r.output_tail);
    }

    #[test]
    fn a_command_that_hangs_is_stopped_with_what_it_started() {
        let marker = tempfile::tempdir().unwrap();
        let pidfile = marker.path().join("pid");
        let cmd = format!(
            "sleep 300 & echo $! > {}; echo started; wait",
            pidfile.display()
        );
        let t = Instant::now();
        let r = smoke(&cmd, Duration::from_millis(500));
        assert!(r.timed_out);
        assert_eq!(r.exit_code, None);
        assert_eq!(r.signal, Some(15));
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        assert_eq!(r.output_tail, "started");
        // The background sleep went with it.
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "the background process {pid} still runs");
    }

    #[test]
    fn backup_settings_do_not_reach_the_command() {
        let base = [
            ("PATH", "/bin"),
            ("BACKUP_PASSPHRASE", "hunter2"),
            ("BACKUP_MONGODB_URI", "mongodb://live/app"),
            ("MONGODB_URI", "mongodb://live/app"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = command_env(
            base.into_iter(),
            &[("MONGODB_URI".into(), "mongodb://scratch/x".into())],
        );
        let keys: Vec<_> = env.iter().map(|(k, v)| format!("{k:?}={v:?}")).collect();
        assert_eq!(
            keys,
            [
                "\"PATH\"=\"/bin\"",
                "\"MONGODB_URI\"=\"mongodb://scratch/x\""
            ]
        );
        // And the command sees it so.
        let dir = tempfile::tempdir().unwrap();
        let r = run(
            &Smoke {
                command: "echo \"$MONGODB_URI\"",
                dir: dir.path(),
                env: vec![("MONGODB_URI".into(), "mongodb://scratch/x".into())],
                timeout: Duration::from_secs(30),
            },
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(r.output_tail, "mongodb://scratch/x");
    }

    #[test]
    fn last_lines_table() {
        for (text, n, want) in [
            ("a\nb\nc\n", 2, "b\nc"),
            ("a\nb\nc", 5, "a\nb\nc"),
            ("", 3, ""),
            ("one", 1, "one"),
        ] {
            assert_eq!(last_lines(text, n), want, "{text:?}");
        }
    }
}
