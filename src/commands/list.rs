//! `cofre list`: the archives in `BACKUP_DIR`, newest first.

use std::fs::File;

use chrono::Utc;
use serde::Serialize;

use crate::archive::crypt;
use crate::cli::ListArgs;
use crate::config::Settings;
use crate::format::{age_text, human};
use crate::state::State;
use crate::store::Store;

use super::Outcome;

#[derive(Serialize)]
struct Row {
    name: String,
    path: String,
    created_at: String,
    age_seconds: i64,
    size: u64,
    compression: &'static str,
    encryption: String,
    files: Option<u64>,
    bytes: Option<u64>,
    collections: Option<u64>,
    documents: Option<u64>,
    signature: &'static str,
}

/// Runs `cofre list`.
pub fn run(args: &ListArgs, settings: &Settings) -> Result<Outcome, anyhow::Error> {
    let store = Store::open(&settings.backup_dir)?;
    let state = State::load(store.dir());
    let keys = super::read_keys(settings, &crate::cli::KeyArgs::default());
    let trusted = super::trusted_keys(settings, &keys)?;
    let now = Utc::now();
    let rows: Vec<Row> = store
        .list()?
        .into_iter()
        .map(|a| {
            let summary = state.archives.get(&a.name);
            let encryption = if a.parsed.encrypted {
                File::open(&a.path)
                    .ok()
                    .and_then(crypt::describe_header)
                    .unwrap_or_else(|| "age".into())
            } else {
                "none".into()
            };
            let signature = match &a.signature {
                None => "missing",
                Some(_) => match crate::sign::read_sig(&a.path)
                    .ok()
                    .flatten()
                    .map(|t| crate::sign::prepare(&a.name, Some(&t), &trusted))
                {
                    Some(Ok(_)) => "trusted",
                    Some(Err(crate::sign::SignError::Untrusted { .. })) => "untrusted",
                    _ => "damaged",
                },
            };
            Row {
                signature,
                path: a.path.display().to_string(),
                created_at: a.parsed.time.to_rfc3339(),
                age_seconds: (now - a.parsed.time).num_seconds(),
                size: a.size,
                compression: a.parsed.compression.name(),
                encryption,
                files: summary.map(|s| s.files),
                bytes: summary.map(|s| s.bytes),
                collections: summary.map(|s| s.collections),
                documents: summary.map(|s| s.documents),
                name: a.name,
            }
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Outcome::Success);
    }
    if rows.is_empty() {
        println!("no archives in {}", store.dir().display());
        return Ok(Outcome::Success);
    }
    println!(
        "{:<40} {:>10} {:>8} {:>8} {:>9}  {:<9}  ENCRYPTION",
        "ARCHIVE", "SIZE", "AGE", "FILES", "DOCUMENTS", "SIGNATURE"
    );
    for r in &rows {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
        println!(
            "{:<40} {:>10} {:>8} {:>8} {:>9}  {:<9}  {}",
            r.name,
            human(r.size),
            age_text(r.age_seconds),
            opt(r.files),
            opt(r.documents),
            r.signature,
            r.encryption
        );
    }
    Ok(Outcome::Success)
}
