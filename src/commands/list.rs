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
    /// Files restoring it gives back.
    files: Option<u64>,
    /// Files stored in it (a differential's: the changed ones).
    stored_files: Option<u64>,
    bytes: Option<u64>,
    collections: Option<u64>,
    documents: Option<u64>,
    signature: &'static str,
    /// `full`, or `differential` (what changed since its full).
    kind: &'static str,
    /// A differential's full, as its signed claim names it.
    base: Option<String>,
    /// The project directory the signed claim names (trusted signatures only).
    source: Option<String>,
    /// The host the signed claim names.
    host: Option<String>,
}

/// Signatures `list --remote` fetches: the newest this many; older ones are
/// shown as not checked, so planted objects cannot make a listing cost
/// thousands of requests.
const MAX_REMOTE_CHECKED: usize = 500;

/// Runs `cofre list`.
pub fn run(
    args: &ListArgs,
    settings: &Settings,
    out: &mut dyn std::io::Write,
) -> Result<Outcome, anyhow::Error> {
    let crate::open::Access {
        trusted, origin, ..
    } = super::access(settings, &crate::cli::KeyArgs::default())?;
    let now = Utc::now();
    let (rows, place) = if args.remote {
        let bucket = super::bucket(settings)?;
        let state = Store::open(&settings.backup_dir)
            .map(|s| State::load(s.dir()))
            .unwrap_or_default();
        (
            remote_rows(&bucket, &state, &trusted, &origin, now)?,
            bucket.url().to_owned(),
        )
    } else {
        let store = Store::open(&settings.backup_dir)?;
        (
            local_rows(&store, &trusted, &origin, now)?,
            store.dir().display().to_string(),
        )
    };
    render(args.json, &rows, &place, out)?;
    Ok(Outcome::Success)
}

/// What a signature says of an archive.
#[derive(Default)]
struct Said {
    label: &'static str,
    source: Option<String>,
    host: Option<String>,
    base: Option<String>,
}

/// The signature's standing: its label, and the claim's source, host and
/// full.
fn standing(
    name: &str,
    text: Option<&str>,
    trusted: &crate::sign::TrustedKeys,
    origin: &crate::sign::Origin,
) -> Said {
    let standing = crate::sign::standing(name, text, trusted, origin);
    let o = standing.claim().and_then(|c| c.origin.clone());
    Said {
        label: standing.label(),
        source: o.as_ref().map(|o| o.source.clone()),
        host: o.map(|o| o.host),
        base: standing
            .claim()
            .and_then(|c| c.base.as_ref().map(|b| b.name.clone())),
    }
}

fn kind(parsed: &crate::store::ArchiveName) -> &'static str {
    if parsed.diff { "differential" } else { "full" }
}

fn remote_rows(
    bucket: &crate::remote::Remote,
    state: &State,
    trusted: &crate::sign::TrustedKeys,
    origin: &crate::sign::Origin,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Row>, anyhow::Error> {
    let list = bucket.list()?;
    // Signatures of the newest signed archives, fetched concurrently.
    let signed: Vec<&crate::remote::RemoteArchive> = list
        .iter()
        .filter(|a| a.signed())
        .take(MAX_REMOTE_CHECKED)
        .collect();
    let mut texts: std::collections::HashMap<String, Option<String>> =
        std::collections::HashMap::new();
    for (a, text) in signed.iter().zip(bucket.signatures(&signed)?) {
        texts.insert(a.name.clone(), text);
    }
    let mut rows = Vec::new();
    for a in list {
        let said = match texts.get(a.name.as_str()) {
            Some(text) => standing(&a.name, text.as_deref(), trusted, origin),
            None if a.signed() => Said {
                label: "unchecked",
                ..Said::default()
            },
            None => Said {
                label: "missing",
                ..Said::default()
            },
        };
        let summary = state.archives.get(&a.name);
        rows.push(Row {
            signature: said.label,
            kind: kind(&a.parsed),
            base: said.base,
            source: said.source,
            host: said.host,
            path: format!("{}/{}", bucket.url(), a.name),
            created_at: a.parsed.time.to_rfc3339(),
            age_seconds: (now - a.parsed.time).num_seconds(),
            size: a.size(),
            compression: a.parsed.compression.name(),
            encryption: if a.parsed.encrypted { "age" } else { "none" }.into(),
            files: summary.map(crate::state::Summary::restore_point_files),
            stored_files: summary.map(|s| s.totals.files),
            bytes: summary.map(|s| s.totals.bytes),
            collections: summary.map(|s| s.totals.collections),
            documents: summary.map(|s| s.totals.documents),
            name: a.name,
        });
    }
    Ok(rows)
}

fn local_rows(
    store: &Store,
    trusted: &crate::sign::TrustedKeys,
    origin: &crate::sign::Origin,
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
            let said = standing(&a.name, text.as_deref(), trusted, origin);
            Row {
                signature: said.label,
                kind: kind(&a.parsed),
                base: said.base,
                source: said.source,
                host: said.host,
                path: a.path.display().to_string(),
                created_at: a.parsed.time.to_rfc3339(),
                age_seconds: (now - a.parsed.time).num_seconds(),
                size: a.size,
                compression: a.parsed.compression.name(),
                encryption,
                files: summary.map(crate::state::Summary::restore_point_files),
                stored_files: summary.map(|s| s.totals.files),
                bytes: summary.map(|s| s.totals.bytes),
                collections: summary.map(|s| s.totals.collections),
                documents: summary.map(|s| s.totals.documents),
                name: a.name,
            }
        })
        .collect();
    Ok(rows)
}

/// The listing, as text or one JSON array.
fn render(
    json: bool,
    rows: &[Row],
    place: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    if json {
        let text = serde_json::to_string_pretty(&rows).map_err(std::io::Error::other)?;
        return writeln!(out, "{text}");
    }
    if rows.is_empty() {
        return writeln!(out, "no archives in {place}");
    }
    writeln!(
        out,
        "{:<44} {:<4} {:>10} {:>8} {:>8} {:>9}  {:<9}  ENCRYPTION",
        "ARCHIVE", "KIND", "SIZE", "AGE", "FILES", "DOCUMENTS", "SIGNATURE"
    )?;
    for r in rows {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
        writeln!(
            out,
            "{:<44} {:<4} {:>10} {:>8} {:>8} {:>9}  {:<9}  {}",
            r.name,
            if r.kind == "full" { "full" } else { "diff" },
            human(r.size),
            age_text(r.age_seconds),
            opt(r.files),
            opt(r.documents),
            r.signature,
            r.encryption
        )?;
    }
    let diffs = rows.iter().filter(|r| r.kind != "full").count();
    if diffs > 0 {
        writeln!(
            out,
            "diff: a differential holds what changed since its full; restoring it reads both \
             ({diffs} here)"
        )?;
    }
    for r in rows.iter().filter(|r| r.signature == "foreign") {
        writeln!(
            out,
            "foreign: {} is a backup of {} on {}, not of this project; latest, prune and drills leave it alone",
            r.name,
            r.source.as_deref().unwrap_or("an unrecorded project"),
            r.host.as_deref().unwrap_or("an unrecorded host")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(signature: &'static str, source: Option<&str>) -> Row {
        Row {
            name: "backup_2026-12-03T03-00-00.tar.gz.age".into(),
            path: "/srv/app/backups/backup_2026-12-03T03-00-00.tar.gz.age".into(),
            created_at: "2026-12-03T03:00:00+00:00".into(),
            age_seconds: 3600,
            size: 1 << 20,
            compression: "gzip",
            encryption: "age (1 key)".into(),
            files: Some(12),
            stored_files: Some(12),
            bytes: Some(3 << 20),
            collections: Some(2),
            documents: Some(40),
            signature,
            kind: "full",
            base: None,
            source: source.map(str::to_owned),
            host: source.map(|_| "web-1".to_owned()),
        }
    }

    #[test]
    fn the_json_shape_is_pinned() {
        let mut out = Vec::new();
        render(
            true,
            &[row("trusted", Some("/srv/app"))],
            "/srv/app/backups",
            &mut out,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        crate::commands::assert_golden("list.shape", &crate::commands::json_shape(&v));
    }

    #[test]
    fn the_text_has_a_row_each_and_names_foreign_archives() {
        let mut out = Vec::new();
        let rows = [
            row("trusted", Some("/srv/app")),
            row("foreign", Some("/srv/other")),
        ];
        render(false, &rows, "/srv/app/backups", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.starts_with("ARCHIVE"), "{text}");
        assert!(
            text.contains("1.0 MiB") && text.contains("trusted"),
            "{text}"
        );
        assert!(
            text.contains("is a backup of /srv/other on web-1"),
            "{text}"
        );
        let mut out = Vec::new();
        render(false, &[], "/srv/app/backups", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "no archives in /srv/app/backups\n"
        );
    }
}
