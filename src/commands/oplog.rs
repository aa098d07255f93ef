//! `cofre oplog`: the captured operations, one line each (time, timestamp,
//! op, namespace, `_id`), filtered by time, namespace and kind: how a
//! restore point is found ("just before the drop at 14:32:07").

use std::io::Write;

use chrono::{DateTime, Utc};

use crate::cli::OplogArgs;
use crate::config::{ConfigError, Settings};
use crate::oplog::Ts;
use crate::oplog::history::{self, Place};

use super::{Outcome, access};
use crate::open::Access;

/// Parses an RFC 3339 time (UTC when it has no offset).
pub fn parse_time(flag: &str, v: &str) -> Result<DateTime<Utc>, ConfigError> {
    let v = v.trim();
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc())
        })
        .map_err(|_| ConfigError::Invalid {
            var: flag.to_owned(),
            value: v.to_owned(),
            expected: "a time such as 2026-12-03T14:32:05Z".into(),
        })
}

/// Runs `cofre oplog`.
pub fn run(
    args: &OplogArgs,
    settings: &Settings,
    out: &mut dyn Write,
) -> Result<Outcome, anyhow::Error> {
    let since = args
        .since
        .as_deref()
        .map(|v| parse_time("--since", v))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|v| parse_time("--until", v))
        .transpose()?;
    if let Some(op) = &args.op
        && !matches!(op.as_str(), "i" | "u" | "d" | "c" | "n")
    {
        return Err(ConfigError::Invalid {
            var: "--op".into(),
            value: op.clone(),
            expected: "i, u, d, c or n".into(),
        }
        .into());
    }
    let Access {
        keys,
        trusted,
        origin,
    } = access(settings, &args.keys)?;
    let bucket = if args.remote {
        Some(super::bucket(settings)?)
    } else {
        None
    };
    let place = match &bucket {
        Some(b) => Place::Bucket(b),
        None => Place::Local(&settings.backup_dir),
    };
    let h = history::load(place, &trusted, &origin)?;
    for (name, why) in &h.refused {
        tracing::warn!("{name} {why}; its operations are not listed");
    }
    if h.slices.is_empty() {
        writeln!(
            out,
            "no oplog slices in {place:?} (the daemon captures them)"
        )?;
        return Ok(Outcome::Success);
    }
    let lo = since.map_or(Ts::default(), |t| Ts {
        t: u32::try_from(t.timestamp()).unwrap_or(0),
        i: 0,
    });
    let hi = until.map_or(
        Ts {
            t: u32::MAX,
            i: u32::MAX,
        },
        Ts::end_of,
    );
    let mut shown = 0u64;
    for info in &h.slices {
        if info.until < lo || info.after > hi {
            continue;
        }
        history::read(place, info, &keys, &trusted, |ts, doc| {
            if ts < lo || ts > hi {
                return Ok(());
            }
            let (op, ns, id) = crate::oplog::describe(doc);
            if args.op.as_deref().is_some_and(|o| o != op) {
                return Ok(());
            }
            if let Some(want) = &args.ns {
                // A database's commands (a drop of one of its collections
                // among them) are shown for the database and its collections.
                let cmd_db = ns.strip_suffix(".$cmd");
                let hit = ns == *want
                    || cmd_db == Some(want.as_str())
                    || cmd_db.is_some_and(|db| want.starts_with(&format!("{db}.")));
                if !hit {
                    return Ok(());
                }
            }
            let time = ts.time().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let line = if args.json {
                serde_json::json!({ "time": time, "ts": ts.to_string(), "op": op, "ns": ns, "id": id })
                    .to_string()
            } else {
                format!("{time}  {ts:<22} {op}  {ns}  {id}")
            };
            shown += 1;
            writeln!(out, "{}", crate::secret::scrub(&line)).map_err(|e| e.to_string())
        })?;
    }
    if !args.json {
        writeln!(
            out,
            "{shown} operation{} (restore to one with --at-op T,I, or to just before it with --before-op T,I)",
            if shown == 1 { "" } else { "s" }
        )?;
    }
    Ok(Outcome::Success)
}
