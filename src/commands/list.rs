//! `cofre list`: the archives in `BACKUP_DIR`, newest first.

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
    let keys = super::read_keys(settings, &crate::cli::KeyArgs::default());
    let trusted = super::trusted_keys(settings, &keys)?;
    let now = Utc::now();
    let (rows, place) = if args.remote {
        let bucket = super::bucket(settings)?;
        let state = Store::open(&settings.backup_dir)
            .map(|s| State::load(s.dir()))
            .unwrap_or_default();
        (
            remote_rows(&bucket, &state, &trusted, now)?,
            bucket.url().to_owned(),
        )
    } else {
        let store = Store::open(&settings.backup_dir)?;
        (
            local_rows(&store, &trusted, now)?,
            store.dir().display().to_string(),
        )
    };
    print_rows(args, &rows, &place)
}

/// The signature's standing, from its text.
fn standing(name: &str, text: Option<&str>, trusted: &crate::sign::TrustedKeys) -> &'static str {
    match text.map(|t| crate::sign::prepare(name, Some(t), trusted)) {
        None => "missing",
        Some(Ok(_)) => "trusted",
        Some(Err(crate::sign::SignError::Untrusted { .. })) => "untrusted",
        Some(Err(_)) => "damaged",
    }
}

fn remote_rows(
    bucket: &crate::remote::Remote,
    state: &State,
    trusted: &crate::sign::TrustedKeys,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Row>, anyhow::Error> {
    let mut rows = Vec::new();
    for a in bucket.list()? {
        let text = if a.signed {
            bucket.signature(&a.name)?
        } else {
            None
        };
        let summary = state.archives.get(&a.name);
        rows.push(Row {
            signature: standing(&a.name, text.as_deref(), trusted),
            path: format!("{}/{}", bucket.url(), a.name),
            created_at: a.parsed.time.to_rfc3339(),
            age_seconds: (now - a.parsed.time).num_seconds(),
            size: a.size,
            compression: a.parsed.compression.name(),
            encryption: if a.parsed.encrypted { "age" } else { "none" }.into(),
            files: summary.map(|s| s.files),
            bytes: summary.map(|s| s.bytes),
            collections: summary.map(|s| s.collections),
            documents: summary.map(|s| s.documents),
            name: a.name,
        });
    }
    Ok(rows)
}

fn local_rows(
    store: &Store,
    trusted: &crate::sign::TrustedKeys,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Row>, anyhow::Error> {
    let state = State::load(store.dir());
    let rows: Vec<Row> = store
        .list()?
        .into_iter()
        .map(|a| {
            let summary = state.archives.get(&a.name);
            let encryption = if a.parsed.encrypted {
                crate::store::open_archive(&a.path, true)
                    .ok()
                    .and_then(crypt::describe_header)
                    .unwrap_or_else(|| "age".into())
            } else {
                "none".into()
            };
            let text = a
                .signature
                .as_ref()
                .and_then(|_| crate::sign::read_sig(&a.path).ok().flatten());
            let signature = standing(&a.name, text.as_deref(), trusted);
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
    Ok(rows)
}

fn print_rows(args: &ListArgs, rows: &[Row], place: &str) -> Result<Outcome, anyhow::Error> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Outcome::Success);
    }
    if rows.is_empty() {
        println!("no archives in {place}");
        return Ok(Outcome::Success);
    }
    println!(
        "{:<40} {:>10} {:>8} {:>8} {:>9}  {:<9}  ENCRYPTION",
        "ARCHIVE", "SIZE", "AGE", "FILES", "DOCUMENTS", "SIGNATURE"
    );
    for r in rows {
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
