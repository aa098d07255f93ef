//! A drill's point-in-time step: when the archive drilled is the base of
//! the captured oplog history, the newest slices are replayed into the
//! scratch databases too (timed: the point-in-time restore's own time),
//! then each scratch collection is compared, document for document, with
//! the live database read at the same cluster time (a snapshot read
//! `atClusterTime`), when that time is still inside the server's snapshot
//! window. Outside it, the replay is still checked for errors and the
//! record says why it was not compared.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use mongodb::bson::{RawDocumentBuf, doc};

use crate::archive::crypt::ReadKeys;
use crate::mongo::load::Target;
use crate::oplog::{Ts, history, window};
use crate::secret::Secret;
use crate::sign::{Origin, TrustedKeys};

/// What the step did.
#[derive(Debug, Default)]
pub struct Checked {
    /// Operations replayed.
    pub operations: u64,
    /// Seconds the replay took.
    pub seconds: f64,
    /// The point reached (`T,I`).
    pub point: String,
    /// Why the result was not compared with the live database, when not.
    pub note: Option<String>,
    /// Differences from the live database at that point.
    pub mismatches: Vec<String>,
}

/// What the step needs.
pub struct Step<'a> {
    /// `BACKUP_DIR` (the history is read there).
    pub backup_dir: &'a std::path::Path,
    /// The archive the drill restored.
    pub archive: &'a str,
    /// The keys that read slices, and those trusted.
    pub keys: &'a ReadKeys,
    /// Trusted signatures.
    pub trusted: &'a TrustedKeys,
    /// This project.
    pub origin: &'a Origin,
    /// The scratch databases (the drill server, the prefix).
    pub scratch: &'a Target,
    /// The base dump's databases.
    pub databases: Vec<String>,
    /// (scratch database, collection) the base restore wrote.
    pub restored: Vec<(String, String)>,
    /// The live server, to compare with.
    pub live: Option<&'a Secret>,
    /// Set to stop.
    pub cancel: &'a AtomicBool,
}

/// Runs the step; `None` when the archive is not the base of a captured
/// history (nothing to replay).
pub fn run(step: &Step<'_>) -> Result<Option<Checked>, String> {
    let place = history::Place::Local(step.backup_dir);
    let Ok(h) = history::load(place, step.trusted, step.origin) else {
        return Ok(None);
    };
    let Ok(plan) = window::plan(&h.bases, &h.slices, window::Point::Latest) else {
        return Ok(None);
    };
    if plan.base.name != step.archive || plan.slices.is_empty() {
        return Ok(None);
    }
    let clock = Instant::now();
    let done = crate::oplog::replay(
        place,
        &h,
        &plan,
        step.scratch,
        step.databases.clone(),
        step.restored.clone(),
        step.keys,
        step.trusted,
    )
    .map_err(|e| e.to_string())?;
    let mut checked = Checked {
        operations: done.applied,
        seconds: clock.elapsed().as_secs_f64(),
        point: plan.limit.last.to_string(),
        ..Checked::default()
    };
    let Some(live) = step.live else {
        checked.note = Some("no live server to compare with".into());
        return Ok(Some(checked));
    };
    let prefix = step.scratch.db_prefix.clone().unwrap_or_default();
    let scratch_uri = step.scratch.uri.as_ref().ok_or("no drill server")?;
    let rt = crate::mongo::runtime().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (scratch, _) = crate::mongo::connect(scratch_uri)
            .await
            .map_err(|e| e.to_string())?;
        let (live, _) = crate::mongo::connect(live)
            .await
            .map_err(|e| e.to_string())?;
        for db in &step.databases {
            let copy = format!("{prefix}{db}");
            let names = scratch
                .database(&copy)
                .list_collection_names()
                .await
                .map_err(|e| crate::mongo::short(&e))?;
            for coll in names.iter().filter(|n| !n.starts_with("system.")) {
                if step.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err("the drill was stopped".to_owned());
                }
                let mine = read(&scratch, &copy, coll, None).await?;
                let theirs = match read(&live, db, coll, Some(plan.limit.last)).await {
                    Ok(d) => d,
                    Err(why) if why.to_ascii_lowercase().contains("snapshot") => {
                        checked.note = Some(format!(
                            "not compared with the live database: operation {} is outside its \
                             snapshot window ({why})",
                            plan.limit.last
                        ));
                        return Ok(());
                    }
                    Err(why) => return Err(why),
                };
                if mine != theirs {
                    let first = mine
                        .iter()
                        .zip(&theirs)
                        .position(|(a, b)| a != b)
                        .unwrap_or(mine.len().min(theirs.len()));
                    checked.mismatches.push(format!(
                        "{db}.{coll}: after the oplog replay, {} documents where the live database \
                         had {} at operation {} (first difference at document {first})",
                        mine.len(),
                        theirs.len(),
                        plan.limit.last
                    ));
                }
            }
        }
        Ok(())
    })?;
    Ok(Some(checked))
}

/// A collection's documents in `_id` order, as raw bytes; at `at` with a
/// snapshot read.
async fn read(
    client: &mongodb::Client,
    db: &str,
    coll: &str,
    at: Option<Ts>,
) -> Result<Vec<Vec<u8>>, String> {
    let mut cmd = doc! { "find": coll, "filter": {}, "sort": { "_id": 1 }, "batchSize": 1000 };
    if let Some(ts) = at {
        cmd.insert(
            "readConcern",
            doc! { "level": "snapshot", "atClusterTime": mongodb::bson::Timestamp::from(ts) },
        );
    }
    let mut cursor = client
        .database(db)
        .run_cursor_command(cmd)
        .await
        .map_err(|e| crate::mongo::short(&e))?;
    let mut out = Vec::new();
    while cursor
        .advance()
        .await
        .map_err(|e| crate::mongo::short(&e))?
    {
        let raw: RawDocumentBuf = cursor.current().to_raw_document_buf();
        out.push(raw.into_bytes());
    }
    Ok(out)
}
