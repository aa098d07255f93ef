//! `cofre verify`: read archives fully and check every hash and signature.

use std::time::Instant;

use crate::archive::reader;
use crate::cli::VerifyArgs;
use crate::config::Settings;
use crate::format::human;
use crate::open::{self, Request};
use crate::store::Store;

use super::{Outcome, access};

/// Reads one archive completely, checking it against its manifest and its
/// signature; a differential's full is read and checked first (unless
/// `verified` already holds its manifest hash, from this run), and must be
/// the very one the differential names. Returns the summary and, for an
/// archive accepted without a good signature, why.
#[tracing::instrument(name = "verify", skip_all, fields(archive = req.arg))]
pub fn verify_one(
    req: &Request<'_>,
    verified: &mut std::collections::HashMap<String, String>,
) -> Result<Verified, anyhow::Error> {
    let found = open::resolve(req)?;
    let chain = open::chain(req, found)?;
    let read = |found: &open::Found| -> Result<_, anyhow::Error> {
        let mut opened = open::open_found(req, found)?;
        let stream = std::mem::replace(&mut opened.stream, Box::new(std::io::empty()));
        let summary = reader::read_archive(stream, &mut reader::Discard, &opened.name)?;
        opened.check_signature()?;
        Ok((opened, summary))
    };
    if let Some(base) = &chain.base {
        let hash = match verified.get(&base.name()) {
            Some(h) => h.clone(),
            None => {
                let hash = read(base)?.1.manifest_hash;
                verified.insert(base.name(), hash.clone());
                hash
            }
        };
        chain.check_base(&hash)?;
    }
    let (opened, summary) = read(&chain.top)?;
    verified.insert(opened.name.clone(), summary.manifest_hash.clone());
    Ok(Verified {
        name: opened.name.clone(),
        base: chain.base.as_ref().map(open::Found::name),
        summary,
        unsigned: opened.unsigned.clone(),
        foreign: opened
            .claim
            .as_ref()
            .filter(|c| !c.is_of(req.origin))
            .map(crate::sign::Claim::describe_origin),
    })
}

/// What verifying one archive found.
#[derive(Debug)]
pub struct Verified {
    /// The archive's name (what `latest` turned out to be).
    pub name: String,
    /// For a differential, its full (checked too).
    pub base: Option<String>,
    /// What was read.
    pub summary: reader::ReadSummary,
    /// Why it was accepted without a good signature, if it was.
    pub unsigned: Option<String>,
    /// What it is a backup of, when that is another project.
    pub foreign: Option<String>,
}

/// Runs `cofre verify`.
pub fn run(
    args: &VerifyArgs,
    settings: &Settings,
    out: &mut dyn std::io::Write,
) -> Result<Outcome, anyhow::Error> {
    let access = access(settings, &args.keys)?;
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
        writeln!(out, "no archives in {}", settings.backup_dir.display())?;
        return Ok(Outcome::Success);
    }
    let single = targets.len() == 1 && !args.all;
    let mut failed = 0;
    let mut verified = std::collections::HashMap::new();
    for arg in &targets {
        let req = access.request(
            &settings.backup_dir,
            arg,
            remote.as_ref(),
            args.allow_unsigned,
        );
        let name = std::path::Path::new(arg)
            .file_name()
            .map_or_else(|| arg.clone(), |n| n.to_string_lossy().into_owned());
        let clock = Instant::now();
        tracing::info!(archive = %name, "verify started");
        match verify_one(&req, &mut verified) {
            Ok(Verified {
                name,
                base,
                summary,
                unsigned,
                foreign,
            }) => {
                let t = &summary.info.totals;
                tracing::info!(
                    archive = %name,
                    entries = summary.entries,
                    bytes = summary.bytes,
                    seconds = format!("{:.2}", clock.elapsed().as_secs_f64()),
                    "verify finished: ok"
                );
                let signed = match (&unsigned, &foreign) {
                    (Some(_), _) => "NOT signed by a trusted key".to_owned(),
                    (None, Some(what)) => {
                        format!("signature ok, but {what}, not of this project")
                    }
                    (None, None) => "signature ok".to_owned(),
                };
                let signed = match base {
                    Some(b) => format!("{signed}, a differential of {b} (checked)"),
                    None => signed,
                };
                writeln!(
                    out,
                    "ok      {name}: {} entries, {} files, {} collections, {} checked, {signed}",
                    summary.entries,
                    t.files,
                    t.collections,
                    human(summary.bytes)
                )?;
            }
            Err(e) if single => return Err(e),
            Err(e) => {
                failed += 1;
                let msg = crate::secret::scrub(&format!("{e:#}"));
                tracing::error!(archive = %name, "verify failed: {msg}");
                writeln!(out, "FAILED  {name}: {msg}")?;
            }
        }
    }
    Ok(if failed > 0 {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}
