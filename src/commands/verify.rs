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
pub fn verify_one(req: &Request<'_>) -> Result<Verified, anyhow::Error> {
    let mut opened = open::open(req)?;
    let stream = std::mem::replace(&mut opened.stream, Box::new(std::io::empty()));
    let summary = reader::read_archive(stream, &mut reader::Discard, &opened.name)?;
    opened.check_signature()?;
    Ok(Verified {
        name: opened.name.clone(),
        summary,
        unsigned: opened.unsigned.clone(),
    })
}

/// What verifying one archive found.
#[derive(Debug)]
pub struct Verified {
    /// The archive's name (what `latest` turned out to be).
    pub name: String,
    /// What was read.
    pub summary: reader::ReadSummary,
    /// Why it was accepted without a good signature, if it was.
    pub unsigned: Option<String>,
}

/// Runs `cofre verify`.
pub fn run(args: &VerifyArgs, settings: &Settings) -> Result<Outcome, anyhow::Error> {
    let keys = read_keys(settings, &args.keys);
    let trusted: TrustedKeys = trusted_keys(settings, &keys)?;
    let remote = if args.remote {
        Some(super::bucket(settings)?)
    } else {
        None
    };
    let targets: Vec<String> = if args.all {
        match &remote {
            Some(r) => r.list()?.into_iter().map(|a| a.name).collect(),
            None => Store::open(&settings.backup_dir)?
                .list()?
                .into_iter()
                .map(|a| a.path.to_string_lossy().into_owned())
                .collect(),
        }
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
            remote: remote.as_ref(),
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
            Ok(Verified {
                name,
                summary,
                unsigned,
            }) => {
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
