//! Point-in-time recovery for MongoDB: the daemon tails the server's oplog
//! into signed, encrypted slices, and a restore replays them over a base
//! archive's dump up to any second or operation.
//!
//! - [`capture`] tails `local.oplog.rs` (a tailable, await-data cursor)
//!   from where the last slice ended, or from the newest archive's snapshot
//!   cluster time, into a [`spool`] in `BACKUP_DIR/oplog` made durable
//!   every second; every `BACKUP_OPLOG_SLICE` it closes a slice.
//! - [`slice`](mod@slice): a slice is age (to the archives' recipients) around zstd
//!   around a valid `oplog.bson`, signed like an archive; its signature
//!   names where the previous slice ended (`after`), its last entry
//!   (`until`), its count, and the wall time up to which the server was
//!   proven to have written nothing more.
//! - [`window`] (pure): which base and slices reach a point, where holes
//!   are, which slices retention may delete.
//! - [`replay`](mod@replay) applies entries natively (no `applyOps`): consecutive
//!   inserts, updates and deletes of one collection as one command each,
//!   `$v: 2` diffs turned into updates, DDL, transactions in both shapes;
//!   only to the collections the restore wrote or made.
//! - [`history`] reads what a place (`BACKUP_DIR`, the bucket) holds: the
//!   bases and the slices, their signatures believed, nothing else.

pub mod capture;
pub mod history;
pub mod replay;
pub mod slice;
pub mod spool;
pub mod window;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

/// The directory of the slices and the spool, in `BACKUP_DIR`.
pub const DIR: &str = "oplog";
/// The largest slice, in bytes of BSON: one closes when it reaches this.
pub const MAX_SLICE_BYTES: u64 = 64 << 20;

/// An oplog timestamp: seconds since the epoch and an ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ts {
    /// Seconds.
    pub t: u32,
    /// The ordinal within the second.
    pub i: u32,
}

impl Ts {
    /// Parses `T,I`.
    pub fn parse(s: &str) -> Option<Ts> {
        let (t, i) = s.trim().split_once(',')?;
        Some(Ts {
            t: t.trim().parse().ok()?,
            i: i.trim().parse().ok()?,
        })
    }

    /// The wall time of its second.
    pub fn time(self) -> DateTime<Utc> {
        Utc.timestamp_opt(i64::from(self.t), 0)
            .single()
            .unwrap_or_default()
    }

    /// The last timestamp of the second `at` (an `--at` point includes
    /// its whole second).
    pub fn end_of(at: DateTime<Utc>) -> Ts {
        Ts {
            t: u32::try_from(at.timestamp()).unwrap_or(0),
            i: u32::MAX,
        }
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.t, self.i)
    }
}

impl From<mongodb::bson::Timestamp> for Ts {
    fn from(t: mongodb::bson::Timestamp) -> Ts {
        Ts {
            t: t.time,
            i: t.increment,
        }
    }
}

impl From<Ts> for mongodb::bson::Timestamp {
    fn from(t: Ts) -> mongodb::bson::Timestamp {
        mongodb::bson::Timestamp {
            time: t.t,
            increment: t.i,
        }
    }
}

/// `BACKUP_OPLOG`: whether the daemon captures the oplog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// When the server is a replica-set member.
    Auto,
    /// Always (a standalone server is an error, said in `status`).
    On,
    /// Never.
    Off,
}

impl Mode {
    /// Parses `auto`, `on`, `off` (and the usual booleans).
    pub fn parse(v: &str) -> Option<Mode> {
        match v.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Some(Mode::Auto),
            "on" | "true" | "1" | "yes" => Some(Mode::On),
            "off" | "false" | "0" | "no" => Some(Mode::Off),
            _ => None,
        }
    }
}

/// The oplog capture's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `BACKUP_OPLOG`.
    pub mode: Mode,
    /// `BACKUP_OPLOG_SLICE`: how often a slice closes.
    pub slice: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Auto,
            slice: Duration::from_secs(60),
        }
    }
}

/// The name of a slice closed at `closed`: `oplog_<UTC time>.bson.zst`,
/// `.age` when encrypted. Slices close at most once a second (the capture
/// waits for the next second), so names sort by time and never collide.
pub fn slice_name(closed: DateTime<Utc>, encrypted: bool) -> String {
    format!(
        "oplog_{}.bson.zst{}",
        closed.format("%Y-%m-%dT%H-%M-%S"),
        if encrypted { ".age" } else { "" }
    )
}

/// The close time a slice name says, when it is a slice name.
pub fn parse_slice_name(name: &str) -> Option<DateTime<Utc>> {
    let rest = name.strip_prefix("oplog_")?;
    let (stamp, ext) = rest.split_at_checked(19)?;
    if ext != ".bson.zst" && ext != ".bson.zst.age" {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H-%M-%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Why a point-in-time restore cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    /// No base and slices reach the point.
    #[error(transparent)]
    Window(#[from] window::WindowError),
    /// A slice is damaged or cannot be read: the restore does not go past
    /// it.
    #[error(
        "{source}; the history before it reaches {reach}: restore to that point or earlier with --at"
    )]
    Slice {
        /// What is wrong with the slice.
        source: slice::SliceError,
        /// The last point the history reaches before it.
        reach: String,
    },
    /// The history cannot be listed.
    #[error(transparent)]
    History(#[from] history::HistoryError),
    /// The server refused a replayed entry, or went away.
    #[error(transparent)]
    Mongo(#[from] crate::mongo::MongoError),
}

impl crate::exit::Coded for PitrError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            PitrError::History(e) => e.exit(),
            PitrError::Mongo(e) => e.exit(),
            PitrError::Slice { source, .. } => source.exit(),
            PitrError::Window(_) => crate::exit::Exit::Failure,
        }
    }
}

/// What the slices of a plan hold up to its point (every slice read and
/// checked, nothing applied): the count, and the last operation.
#[derive(Debug, Default, Clone)]
pub struct Preview {
    /// Entries up to the point.
    pub operations: u64,
    /// The last one: timestamp, op, namespace, `_id` (when it has one).
    pub last: Option<(Ts, String, String, String)>,
}

fn reach_before(history: &history::History, plan: &window::Plan, index: usize) -> String {
    let prev = plan
        .slices
        .iter()
        .take_while(|&&i| i != index)
        .last()
        .map(|&i| history.slices[i].complete_until());
    prev.unwrap_or_else(|| plan.base.cluster.time())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One line about an entry: its timestamp, op, namespace and `_id`.
pub fn describe(entry: &mongodb::bson::RawDocument) -> (String, String, String) {
    let op = entry.get_str("op").unwrap_or("?").to_owned();
    let ns = entry.get_str("ns").unwrap_or("").to_owned();
    let id = entry
        .get_document("o2")
        .ok()
        .or_else(|| entry.get_document("o").ok())
        .and_then(|d| d.get("_id").ok().flatten())
        .map(|v| format!("{:?}", v.to_raw_bson()))
        .or_else(|| {
            entry
                .get_document("o")
                .ok()
                .and_then(|o| o.into_iter().next())
                .and_then(|f| f.ok())
                .map(|(k, v)| format!("{k}: {:?}", v.to_raw_bson()))
        })
        .unwrap_or_default();
    (op, ns, id)
}

/// Reads and checks every slice of `plan` before anything is restored.
pub fn preview(
    place: history::Place<'_>,
    history: &history::History,
    plan: &window::Plan,
    keys: &crate::archive::crypt::ReadKeys,
    trusted: &crate::sign::TrustedKeys,
) -> Result<Preview, PitrError> {
    let mut p = Preview::default();
    for &i in &plan.slices {
        let info = &history.slices[i];
        history::read(place, info, keys, trusted, |ts, doc| {
            if ts > plan.base.cluster && ts <= plan.limit.last {
                p.operations += 1;
                let (op, ns, id) = describe(doc);
                p.last = Some((ts, op, ns, id));
            }
            Ok(())
        })
        .map_err(|source| PitrError::Slice {
            source,
            reach: reach_before(history, plan, i),
        })?;
    }
    Ok(p)
}

/// Replays the slices of `plan` into `target`: only into the databases of
/// `allowed` (the base's dump's, mapped as the restore maps them), and
/// there only into collections in `owned` (what the base restore wrote)
/// or that the replay makes.
#[allow(clippy::too_many_arguments)]
pub fn replay(
    place: history::Place<'_>,
    history: &history::History,
    plan: &window::Plan,
    target: &crate::mongo::load::Target,
    allowed: Vec<String>,
    owned: Vec<(String, String)>,
    keys: &crate::archive::crypt::ReadKeys,
    trusted: &crate::sign::TrustedKeys,
) -> Result<replay::Replayed, PitrError> {
    let uri = target
        .uri
        .as_ref()
        .ok_or(crate::mongo::MongoError::NoTarget)?;
    let rt = crate::mongo::runtime()?;
    let client = rt.block_on(async { crate::mongo::connect(uri).await.map(|(c, _)| c) })?;
    let mut replayer = replay::Replayer::new(client, target.clone(), allowed, owned);
    for &i in &plan.slices {
        let info = &history.slices[i];
        let mut failed: Option<crate::mongo::MongoError> = None;
        let read = history::read(place, info, keys, trusted, |ts, doc| {
            if ts <= plan.base.cluster || ts > plan.limit.last {
                return Ok(());
            }
            rt.block_on(replayer.apply(ts, doc)).map_err(|e| {
                let text = e.to_string();
                failed = Some(e);
                text
            })
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        read.map_err(|source| PitrError::Slice {
            source,
            reach: reach_before(history, plan, i),
        })?;
    }
    rt.block_on(replayer.flush())?;
    Ok(replayer.done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_names_round_trip() {
        let ts = Ts::parse("1700000000,7").unwrap();
        assert_eq!(ts.to_string(), "1700000000,7");
        assert!(Ts::parse("x,1").is_none() && Ts::parse("1").is_none());
        assert!(Ts { t: 1, i: 9 } < Ts { t: 2, i: 0 });
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 14, 32, 5).unwrap();
        let name = slice_name(at, true);
        assert_eq!(name, "oplog_2026-12-03T14-32-05.bson.zst.age");
        assert_eq!(parse_slice_name(&name), Some(at));
        assert!(parse_slice_name("oplog_2026-12-03T14-32-05.bson.zst.age.minisig").is_none());
        assert!(parse_slice_name("backup_2026-12-03T14-32-05.tar.gz").is_none());
        assert_eq!(Ts::end_of(at).t as i64, at.timestamp());
        assert_eq!(Mode::parse("AUTO"), Some(Mode::Auto));
        assert_eq!(Mode::parse("sometimes"), None);
    }
}
