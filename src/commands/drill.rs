//! `cofre drill`: one restore drill now, with a stop signal that cleans up
//! (SIGTERM, SIGINT or SIGHUP set the drill's cancel flag; it stops within
//! a batch or a read, drops its scratch databases, removes its scratch
//! directory and records itself as `cancelled`).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cli::DrillArgs;
use crate::config::Settings;
use crate::drill;
use crate::format::human;
use crate::logging::Verbosity;
use crate::state::DrillRecord;

use super::{Outcome, access, archive_source, duration_flag};

/// A drill that ran and failed: the error the command ends with.
#[derive(Debug, thiserror::Error)]
#[error("the restore drill of {archive} failed at {check}: {message}")]
pub struct DrillFailed {
    archive: String,
    check: String,
    message: String,
}

impl crate::exit::Coded for DrillFailed {
    fn exit(&self) -> crate::exit::Exit {
        crate::exit::Exit::Failure
    }
}

/// Runs `cofre drill`.
#[tracing::instrument(name = "drill", skip_all)]
pub fn run(
    args: &DrillArgs,
    settings: &Settings,
    verbosity: Verbosity,
    out: &mut dyn Write,
) -> Result<Outcome, anyhow::Error> {
    let wait = duration_flag("--wait", args.lock.wait.as_deref())?;
    let access = access(settings, &args.keys)?;
    let arg = args.archive.as_deref().unwrap_or("latest");
    let (remote, arg) = archive_source(settings, arg, args.remote)?;
    let cancel = Arc::new(AtomicBool::new(false));
    stop_on_signals(Arc::clone(&cancel))?;
    let mark = crate::logging::tail_mark();
    let record = drill::run(&drill::Request {
        opts: &settings.drill,
        open: access.request(
            &settings.backup_dir,
            &arg,
            remote.as_ref(),
            args.allow_unsigned,
        ),
        wait,
        verbosity,
        cancel,
    })?;
    crate::report::drill_finished(&settings.report(), &record, mark);
    if args.json {
        writeln!(
            out,
            "{}",
            crate::secret::scrub(&serde_json::to_string_pretty(&record)?)
        )?;
    } else {
        render_text(&record, out)?;
    }
    if record.ok {
        return Ok(Outcome::Success);
    }
    Err(DrillFailed {
        archive: if record.archive.is_empty() {
            arg
        } else {
            record.archive.clone()
        },
        check: record.failed_check.unwrap_or_default(),
        message: record.error.unwrap_or_default(),
    }
    .into())
}

/// Sets `cancel` on SIGTERM, SIGINT or SIGHUP. The handlers are in place
/// before this returns; a thread waits for them.
fn stop_on_signals(cancel: Arc<AtomicBool>) -> Result<(), anyhow::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = crate::rt::on_this_thread()?;
    let (mut term, mut int, mut hup) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        )
    };
    std::thread::Builder::new()
        .name("cofre-signals".into())
        .spawn(move || {
            rt.block_on(async {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                    _ = hup.recv() => "SIGHUP",
                };
                tracing::warn!("{name} received: stopping the drill and cleaning up");
                cancel.store(true, Ordering::Relaxed);
            });
        })?;
    Ok(())
}

/// A drill's record, for people.
pub fn render_text(r: &DrillRecord, out: &mut dyn Write) -> std::io::Result<()> {
    let secs = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
    if r.ok {
        writeln!(
            out,
            "drill passed: {} restores in {} (files {}, database {})",
            r.archive,
            secs(r.recovery_seconds),
            secs(r.files_seconds),
            secs(r.database_seconds)
        )?;
    } else {
        writeln!(
            out,
            "drill FAILED at {}: {}",
            r.failed_check.as_deref().unwrap_or("?"),
            if r.archive.is_empty() {
                "(no archive)"
            } else {
                &r.archive
            }
        )?;
    }
    if r.files_seconds.is_some() {
        writeln!(
            out,
            "  files      {} files ({}) restored and checked",
            r.files,
            human(r.file_bytes)
        )?;
    }
    if r.database_seconds.is_some() {
        writeln!(
            out,
            "  database   {} collections, {} documents restored and compared",
            r.collections, r.documents
        )?;
    }
    for m in &r.mismatches {
        writeln!(out, "  mismatch   {m}")?;
    }
    if let Some(c) = &r.command {
        let how = match (c.timed_out, c.exit_code, c.signal) {
            (true, _, _) => "timed out".to_owned(),
            (false, Some(code), _) => format!("exited {code}"),
            (false, None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "ended".to_owned(),
        };
        writeln!(
            out,
            "  command    `{}` {how} after {:.1} s",
            c.command, c.seconds
        )?;
        if !r.ok && !c.output_tail.is_empty() {
            for line in c.output_tail.lines() {
                writeln!(out, "    | {line}")?;
            }
        }
    }
    for p in &r.cleanup_problems {
        writeln!(out, "  clean-up   {p}")?;
    }
    Ok(())
}
