//! `cofre verify`: read archives fully and check every hash.

use std::path::PathBuf;
use std::time::Instant;

use crate::archive::{self as arch, layers, reader};
use crate::backup::human;
use crate::cli::VerifyArgs;
use crate::config::Settings;
use crate::store::Store;

use super::{Outcome, read_keys};

/// Reads one archive completely, checking it against its manifest.
pub fn verify_one(
    path: &std::path::Path,
    keys: &arch::crypt::ReadKeys,
) -> Result<reader::ReadSummary, anyhow::Error> {
    let (stream, _, name) = layers::open_file(path, keys, arch::worker_threads())?;
    Ok(reader::read_archive(stream, &mut reader::Discard, &name)?)
}

/// Runs `cofre verify`.
pub fn run(args: &VerifyArgs, settings: &Settings) -> Result<Outcome, anyhow::Error> {
    let keys = read_keys(settings, &args.keys);
    let targets: Vec<PathBuf> = if args.all {
        let store = Store::open(&settings.backup_dir)?;
        store.list()?.into_iter().map(|a| a.path).collect()
    } else {
        let arg = args.archive.as_deref().unwrap_or("latest");
        vec![Store::resolve(&settings.backup_dir, arg)?]
    };
    if targets.is_empty() {
        println!("no archives in {}", settings.backup_dir.display());
        return Ok(Outcome::Success);
    }
    let single = targets.len() == 1;
    let mut failed = 0;
    for path in &targets {
        let name = layers::archive_name(path);
        let clock = Instant::now();
        tracing::info!(archive = %name, "verify started");
        match verify_one(path, &keys) {
            Ok(summary) => {
                let t = &summary.info.totals;
                tracing::info!(
                    archive = %name,
                    entries = summary.entries,
                    bytes = summary.bytes,
                    seconds = format!("{:.2}", clock.elapsed().as_secs_f64()),
                    "verify finished: ok"
                );
                println!(
                    "ok      {name}: {} entries, {} files, {} collections, {} checked",
                    summary.entries,
                    t.files,
                    t.collections,
                    human(summary.bytes)
                );
            }
            Err(e) if single => return Err(e),
            Err(e) => {
                failed += 1;
                let msg = crate::secret::scrub(&format!("{e:#}"));
                tracing::error!(archive = %name, "verify failed: {msg}");
                println!("FAILED  {name}: {msg}");
            }
        }
    }
    Ok(if failed > 0 {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}
