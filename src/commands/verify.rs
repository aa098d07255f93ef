//! `cofre verify`: read archives fully and check every hash and signature.

use std::time::Instant;

use crate::archive::reader;
use crate::cli::VerifyArgs;
use crate::config::Settings;
use crate::format::human;
use crate::open::{self, Request};
use crate::sign::TrustedKeys;
use crate::store::Store;

use super::{Outcome, read_keys, trusted_keys};

/// Reads one archive completely, checking it against its manifest and its
/// signature. Returns the summary and, for an archive accepted without a
/// good signature, why.
#[tracing::instrument(name = "verify", skip_all, fields(archive = req.arg))]
pub fn verify_one(
    req: &Request<'_>,
) -> Result<(reader::ReadSummary, Option<String>), anyhow::Error> {
    let mut opened = open::open(req)?;
    let stream = std::mem::replace(&mut opened.stream, Box::new(std::io::empty()));
    let summary = reader::read_archive(stream, &mut reader::Discard, &opened.name)?;
    opened.check_signature()?;
    Ok((summary, opened.unsigned.clone()))
}

/// Runs `cofre verify`.
pub fn run(args: &VerifyArgs, settings: &Settings) -> Result<Outcome, anyhow::Error> {
    let keys = read_keys(settings, &args.keys);
    let trusted: TrustedKeys = trusted_keys(settings, &keys)?;
    let targets: Vec<String> = if args.all {
        let store = Store::open(&settings.backup_dir)?;
        store
            .list()?
            .into_iter()
            .map(|a| a.path.to_string_lossy().into_owned())
            .collect()
    } else {
        vec![args.archive.clone().unwrap_or_else(|| "latest".into())]
    };
    if targets.is_empty() {
        println!("no archives in {}", settings.backup_dir.display());
        return Ok(Outcome::Success);
    }
    let single = targets.len() == 1 && !args.all;
    let mut failed = 0;
    for arg in &targets {
        let req = Request {
            arg,
            backup_dir: &settings.backup_dir,
            keys: &keys,
            trusted: &trusted,
            allow_unsigned: args.allow_unsigned,
        };
        let name = std::path::Path::new(arg)
            .file_name()
            .map_or_else(|| arg.clone(), |n| n.to_string_lossy().into_owned());
        let clock = Instant::now();
        tracing::info!(archive = %name, "verify started");
        match verify_one(&req) {
            Ok((summary, unsigned)) => {
                let t = &summary.info.totals;
                tracing::info!(
                    archive = %name,
                    entries = summary.entries,
                    bytes = summary.bytes,
                    seconds = format!("{:.2}", clock.elapsed().as_secs_f64()),
                    "verify finished: ok"
                );
                let signed = if unsigned.is_some() {
                    "NOT signed by a trusted key"
                } else {
                    "signature ok"
                };
                println!(
                    "ok      {name}: {} entries, {} files, {} collections, {} checked, {signed}",
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
