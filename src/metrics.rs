//! Prometheus metrics: what the state files in `BACKUP_DIR` say, in the
//! Prometheus text format, served by the daemon on `BACKUP_METRICS_ADDR`
//! and written to `BACKUP_METRICS_FILE` after every run.
//!
//! The metrics are read from the state files each time, never kept in the
//! process: a `cofre backup` from cron, the daemon and a restarted daemon
//! all report the same numbers. [`Snapshot::gather`] reads; [`render`] is a
//! pure function of a snapshot, so the names and values are tested in
//! memory. Names follow Prometheus conventions (units in the name,
//! timestamps in Unix seconds); prometheus-client writes them.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::state::{DrillState, OffsiteState, State};
use crate::store::Store;

/// Errors serving or writing metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address cannot be listened on.
    #[error(
        "cannot serve metrics on BACKUP_METRICS_ADDR {addr}: {source}; choose a free port (or unset it)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics file cannot be written.
    #[error(
        "cannot write BACKUP_METRICS_FILE {path}: {source}; check that its directory exists and is writable"
    )]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl crate::exit::Coded for MetricsError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            MetricsError::Listen { .. } | MetricsError::File { .. } => crate::exit::Exit::Failure,
        }
    }
}

/// Everything the metrics say, read from the state files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The last successful backup's end.
    pub last_success: Option<DateTime<Utc>>,
    /// The last backup's end, successful or not.
    pub last_run: Option<DateTime<Utc>>,
    /// Whether that last backup succeeded.
    pub last_run_success: Option<bool>,
    /// How long the last successful backup took.
    pub backup_seconds: Option<f64>,
    /// Its archive's size.
    pub archive_bytes: Option<u64>,
    /// Archives in `BACKUP_DIR`.
    pub archives: u64,
    /// Free bytes on `BACKUP_DIR`'s filesystem.
    pub free_bytes: Option<u64>,
    /// Files in the last archive.
    pub files: Option<u64>,
    /// Documents per (database, collection) in the last archive.
    pub documents: Vec<(String, String, u64)>,
    /// Offsite copies: `None` when off; else the last complete upload.
    pub offsite_last_success: Option<Option<DateTime<Utc>>>,
    /// Drills: `None` when never scheduled nor run; else the last pass.
    pub drill_last_success: Option<Option<DateTime<Utc>>>,
    /// The last passing drill's recovery time.
    pub drill_restore_seconds: Option<f64>,
    /// The oplog capture: `None` when off; else the last entry's time,
    /// how far behind it is, and where the restore window starts.
    pub oplog: Option<OplogSnapshot>,
}

/// What the oplog metrics say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OplogSnapshot {
    /// The last entry captured (its oplog time).
    pub last: Option<DateTime<Utc>>,
    /// Seconds the captured history is behind.
    pub lag: Option<i64>,
    /// The oldest point a restore reaches.
    pub window_start: Option<DateTime<Utc>>,
}

/// Where metrics go, and what they cover.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The daemon serves `/metrics` here (`BACKUP_METRICS_ADDR`).
    pub addr: Option<SocketAddr>,
    /// Written after every run (`BACKUP_METRICS_FILE`).
    pub file: Option<PathBuf>,
    /// Where the state files are (`BACKUP_DIR`).
    pub backup_dir: PathBuf,
    /// Whether offsite copies are made (their metric is shown).
    pub offsite: bool,
    /// Whether drills are scheduled (their metrics are shown, as soon as
    /// one is scheduled or has run).
    pub drills: bool,
    /// Whether the daemon captures the oplog (its metrics are shown).
    pub oplog: bool,
}

impl Snapshot {
    /// Reads the state files of `opts.backup_dir`.
    pub fn gather(opts: &Options) -> Snapshot {
        let dir = &opts.backup_dir;
        let state = State::load(dir);
        let mut snap = Snapshot::default();
        if let Some(s) = &state.last_success {
            snap.last_success = Some(s.finished_at);
            snap.backup_seconds =
                Some((s.finished_at - s.started_at).num_milliseconds().max(0) as f64 / 1000.0);
            snap.archive_bytes = Some(s.size);
            if let Some(summary) = state.archives.get(&s.archive) {
                snap.files = Some(summary.totals.files);
                snap.documents = summary
                    .mongodb
                    .iter()
                    .map(|c| (c.db.clone(), c.collection.clone(), c.documents))
                    .collect();
            }
        }
        let failed_at = state.last_failure.as_ref().map(|f| f.at);
        snap.last_run = snap.last_success.max(failed_at);
        snap.last_run_success = match (snap.last_success, failed_at) {
            (Some(s), Some(f)) => Some(s >= f),
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        };
        if let Ok(store) = Store::open(dir) {
            snap.archives = store.list().map(|l| l.len() as u64).unwrap_or(0);
            snap.free_bytes = store.space().ok().map(|(free, _)| free);
        }
        if opts.offsite {
            snap.offsite_last_success = Some(OffsiteState::load(dir).last_success);
        }
        let drills = DrillState::load(dir);
        if opts.drills || drills.last.is_some() {
            let pass = drills.last_success.as_ref();
            snap.drill_last_success = Some(pass.map(|d| d.finished_at));
            snap.drill_restore_seconds = pass.and_then(|d| d.recovery_seconds);
        }
        if opts.oplog {
            let o = crate::state::OplogState::load(dir);
            let now = Utc::now();
            snap.oplog = Some(OplogSnapshot {
                last: o
                    .last_entry
                    .as_deref()
                    .and_then(|t| t.split_once(',')?.0.parse::<i64>().ok())
                    .and_then(|s| chrono::TimeZone::timestamp_opt(&Utc, s, 0).single()),
                lag: o.lag_seconds(now),
                window_start: o.window_from,
            });
        }
        snap
    }
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Registers one gauge holding `value`.
fn gauge(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, g),
        None => registry.register(name, help, g),
    }
}

/// The snapshot in the Prometheus text format. A backup that never
/// succeeded reports its timestamp as 0, so the usual staleness alert
/// fires for a machine that has no backup at all.
pub fn render(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("cofre");
    gauge(
        &mut r,
        "last_success_timestamp",
        "End of the last successful backup (0: none yet)",
        Some(Unit::Seconds),
        s.last_success.map_or(0.0, seconds),
    );
    gauge(
        &mut r,
        "last_run_timestamp",
        "End of the last backup, successful or not (0: none yet)",
        Some(Unit::Seconds),
        s.last_run.map_or(0.0, seconds),
    );
    if let Some(ok) = s.last_run_success {
        gauge(
            &mut r,
            "last_run_success",
            "1 when the last backup succeeded, 0 when it failed",
            None,
            f64::from(u8::from(ok)),
        );
    }
    if let Some(d) = s.backup_seconds {
        gauge(
            &mut r,
            "backup_duration",
            "How long the last successful backup took",
            Some(Unit::Seconds),
            d,
        );
    }
    if let Some(b) = s.archive_bytes {
        gauge(
            &mut r,
            "archive_size",
            "Size of the last successful backup's archive",
            Some(Unit::Bytes),
            b as f64,
        );
    }
    gauge(
        &mut r,
        "archives",
        "Archives in BACKUP_DIR",
        None,
        s.archives as f64,
    );
    if let Some(f) = s.free_bytes {
        gauge(
            &mut r,
            "backup_dir_free",
            "Free space on BACKUP_DIR's filesystem",
            Some(Unit::Bytes),
            f as f64,
        );
    }
    if let Some(f) = s.files {
        gauge(
            &mut r,
            "files",
            "Project files in the last archive",
            None,
            f as f64,
        );
    }
    if !s.documents.is_empty() {
        let family = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
        for (db, coll, n) in &s.documents {
            family
                .get_or_create(&vec![
                    ("database".to_owned(), db.clone()),
                    ("collection".to_owned(), coll.clone()),
                ])
                .set(*n as f64);
        }
        r.register(
            "mongodb_documents",
            "Documents per collection in the last archive",
            family,
        );
    }
    if let Some(t) = s.offsite_last_success {
        gauge(
            &mut r,
            "offsite_last_success_timestamp",
            "When the bucket last held every archive it should (0: never)",
            Some(Unit::Seconds),
            t.map_or(0.0, seconds),
        );
    }
    if let Some(t) = s.drill_last_success {
        gauge(
            &mut r,
            "drill_last_success_timestamp",
            "End of the last restore drill that passed (0: none yet)",
            Some(Unit::Seconds),
            t.map_or(0.0, seconds),
        );
    }
    if let Some(d) = s.drill_restore_seconds {
        gauge(
            &mut r,
            "drill_restore_duration",
            "Files plus database restore time of the last passing drill (the recovery time)",
            Some(Unit::Seconds),
            d,
        );
    }
    if let Some(o) = &s.oplog {
        gauge(
            &mut r,
            "oplog_last_timestamp",
            "Oplog time of the last entry the capture holds on disk (0: none yet)",
            Some(Unit::Seconds),
            o.last.map_or(0.0, seconds),
        );
        if let Some(lag) = o.lag {
            gauge(
                &mut r,
                "oplog_lag",
                "How far the captured oplog is behind the server (0 when it is proven idle)",
                Some(Unit::Seconds),
                lag as f64,
            );
        }
        gauge(
            &mut r,
            "pitr_window_start_timestamp",
            "The oldest point a point-in-time restore reaches (0: no window)",
            Some(Unit::Seconds),
            o.window_start.map_or(0.0, seconds),
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

/// Writes the metrics to `BACKUP_METRICS_FILE`, when set, atomically (a
/// temporary file beside it, renamed), readable by node_exporter (0644).
pub fn write_file(opts: &Options) -> Result<(), MetricsError> {
    let Some(path) = &opts.file else {
        return Ok(());
    };
    // tempfile's errors name its temporary file; the message names the
    // file the user set, so only the system's reason is kept.
    let err = |e: std::io::Error| MetricsError::File {
        path: path.clone(),
        source: crate::store::without_path(e),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cofre-metrics-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(render(&Snapshot::gather(opts)).as_bytes())
        .map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Writes the metrics file and logs (never fails the run) when it cannot.
pub fn update_file(opts: &Options) {
    if let Err(e) = write_file(opts) {
        tracing::warn!("{e}");
    }
}

/// Binds `BACKUP_METRICS_ADDR`, so a port in use stops the daemon at start.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, MetricsError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Listen { addr, source })
}

/// Serves `/metrics` on `listener` until the task is dropped. Each scrape
/// reads the state files afresh.
pub async fn serve(listener: tokio::net::TcpListener, settings: Options) {
    use http_body_util::Full;
    use hyper::{Request, Response, StatusCode, body::Bytes};
    let settings = std::sync::Arc::new(settings);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let settings = std::sync::Arc::clone(&settings);
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let settings = std::sync::Arc::clone(&settings);
            async move {
                let resp = if req.uri().path() == "/metrics" {
                    Response::builder()
                        .header(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Full::new(Bytes::from(render(&Snapshot::gather(&settings)))))
                } else {
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from("cofre serves /metrics\n")))
                };
                Ok::<_, Infallible>(resp.unwrap_or_default())
            }
        });
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn names_units_and_values() {
        let snap = Snapshot {
            last_success: Some(at("2026-11-28T00:00:10Z")),
            last_run: Some(at("2026-11-28T00:00:10Z")),
            last_run_success: Some(true),
            backup_seconds: Some(9.5),
            archive_bytes: Some(12345),
            archives: 7,
            free_bytes: Some(1 << 30),
            files: Some(42),
            documents: vec![("app".into(), "users".into(), 10)],
            offsite_last_success: Some(None),
            drill_last_success: Some(Some(at("2026-11-27T04:00:00Z"))),
            drill_restore_seconds: Some(3.25),
            oplog: Some(OplogSnapshot {
                last: Some(at("2026-11-28T00:00:05Z")),
                lag: Some(3),
                window_start: Some(at("2026-11-27T00:00:00Z")),
            }),
        };
        let text = render(&snap);
        for (name, v) in [
            ("cofre_last_success_timestamp_seconds", 1_795_824_010.0),
            ("cofre_last_run_timestamp_seconds", 1_795_824_010.0),
            ("cofre_last_run_success", 1.0),
            ("cofre_backup_duration_seconds", 9.5),
            ("cofre_archive_size_bytes", 12345.0),
            ("cofre_archives", 7.0),
            ("cofre_backup_dir_free_bytes", 1_073_741_824.0),
            ("cofre_files", 42.0),
            ("cofre_mongodb_documents", 10.0),
            ("cofre_offsite_last_success_timestamp_seconds", 0.0),
            (
                "cofre_drill_last_success_timestamp_seconds",
                1_795_752_000.0,
            ),
            ("cofre_drill_restore_duration_seconds", 3.25),
            ("cofre_oplog_last_timestamp_seconds", 1_795_824_005.0),
            ("cofre_oplog_lag_seconds", 3.0),
            ("cofre_pitr_window_start_timestamp_seconds", 1_795_737_600.0),
        ] {
            assert_eq!(value(&text, name), Some(v), "{name} in\n{text}");
        }
        assert!(
            text.contains(r#"cofre_mongodb_documents{database="app",collection="users"} 10"#),
            "{text}"
        );
        assert!(text.contains("# TYPE cofre_archives gauge"), "{text}");
    }

    #[test]
    fn nothing_yet_reads_as_never() {
        let text = render(&Snapshot::default());
        assert_eq!(
            value(&text, "cofre_last_success_timestamp_seconds"),
            Some(0.0)
        );
        assert_eq!(value(&text, "cofre_last_run_success"), None);
        assert_eq!(
            value(&text, "cofre_offsite_last_success_timestamp_seconds"),
            None
        );
        assert_eq!(
            value(&text, "cofre_drill_last_success_timestamp_seconds"),
            None
        );
    }
}
