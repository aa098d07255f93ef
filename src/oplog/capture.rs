//! The capture: the daemon's thread that tails the oplog into slices.
//!
//! It continues from where the history it holds ends: the spool's last
//! entry, else the last slice's, else the newest archive's dump (its
//! signed cluster time). It first checks that the server's oplog still
//! reaches back that far; when it does not, the hole is recorded, said
//! (`on_event`), and the capture waits for a new base (the daemon takes one
//! at once), then starts a new history from it: it never claims a window
//! with a hole in it.
//!
//! The cursor runs on its own task and hands entries over a bounded
//! channel, so waiting for entries never cancels a read half-way. Entries
//! go to the spool, made durable at least every second; a slice closes
//! every `BACKUP_OPLOG_SLICE` (or at 64 MiB), and when the capture stops;
//! while nothing is written, every ten times that.
//! While no entry comes, the newest entry of the server's oplog is
//! compared with the last entry held: when they are the same, the history
//! is proven complete up to now, so an idle hour is a complete hour, not a
//! gap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mongodb::bson::{RawDocumentBuf, doc};
use mongodb::options::CursorType;
use tokio::sync::mpsc;

use super::spool::{self, Spool};
use super::{DIR, MAX_SLICE_BYTES, Options, Ts, slice, window};
use crate::archive::crypt;
use crate::secret::Secret;
use crate::sign::{Origin, SigningKey, TrustedKeys};
use crate::state::{Failure, OplogGap, OplogState};
use crate::store::Store;

/// What the capture needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `BACKUP_DIR`.
    pub backup_dir: PathBuf,
    /// The project (slices are signed as its).
    pub source: PathBuf,
    /// The server.
    pub uri: Secret,
    /// Slices and the mode.
    pub opts: Options,
    /// The signing and trusted keys.
    pub keys: crate::keys::Options,
    /// How slices are encrypted (as archives are).
    pub encryption: crate::archive::crypt::Encryption,
}

/// What the capture tells the daemon.
#[derive(Debug, Clone)]
pub enum Event {
    /// A slice was closed (to upload it).
    Sealed,
    /// The oplog no longer reached back to the history held: a hole, from
    /// the last entry held to the oldest entry the server had. The daemon
    /// takes a new base at once.
    Gap {
        /// The last entry held.
        from: Ts,
        /// The oldest entry on the server.
        to: Ts,
    },
    /// The capture failed (it retries).
    Failure(String),
}

/// Why the capture could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The keys.
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    /// The directory.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The runtime.
    #[error(transparent)]
    Mongo(#[from] crate::mongo::MongoError),
}

impl crate::exit::Coded for CaptureError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            CaptureError::Sign(e) => e.exit(),
            CaptureError::Store(e) => e.exit(),
            CaptureError::Mongo(e) => e.exit(),
        }
    }
}

/// The newest archive of this project, signed by a trusted key, whose dump
/// is one point in time, and the bases there are.
pub fn bases(store: &Store, trusted: &TrustedKeys, origin: &Origin) -> Vec<window::Base> {
    let mut out = Vec::new();
    for a in store.list().unwrap_or_default() {
        let text = crate::sign::read_sig(&a.path).ok().flatten();
        if let crate::sign::Standing::Ours(claim) =
            crate::sign::standing(&a.name, text.as_deref(), trusted, origin)
            && let Some(cluster) = claim.cluster.as_deref().and_then(Ts::parse)
        {
            out.push(window::Base {
                name: a.name,
                cluster,
            });
        }
    }
    out
}

struct Capture<'a> {
    cfg: &'a Config,
    rt: tokio::runtime::Runtime,
    signing: SigningKey,
    trusted: TrustedKeys,
    origin: Origin,
    store: Store,
    oplog_dir: PathBuf,
    state: OplogState,
    on_event: &'a (dyn Fn(Event) + Sync),
    stop: &'a AtomicBool,
    last_closed: Option<DateTime<Utc>>,
}

/// Runs the capture until `stop` is set (then the open slice is closed).
/// Failures are recorded and retried; only a setup that cannot work
/// (keys, directory) returns an error.
pub fn run(
    cfg: &Config,
    stop: &AtomicBool,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<(), CaptureError> {
    let signing = SigningKey::load(&cfg.keys.signing_key)?;
    let (_, trusted) = cfg.keys.load()?;
    let oplog_dir = cfg.backup_dir.join(DIR);
    let store = Store::create(&oplog_dir)?;
    for p in store.clean_temporaries() {
        tracing::info!("removed {}, left by an interrupted capture", p.display());
    }
    let mut c = Capture {
        cfg,
        rt: crate::mongo::runtime()?,
        signing,
        trusted,
        origin: Origin::here(&cfg.source),
        store,
        oplog_dir,
        state: OplogState::load(&cfg.backup_dir),
        on_event,
        stop,
        last_closed: None,
    };
    c.state.capturing = false;
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        match c.session() {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(why) => {
                tracing::warn!("oplog capture: {why}; retrying in {}s", backoff.as_secs());
                c.state.capturing = false;
                c.state.last_failure = Some(Failure {
                    at: Utc::now(),
                    error: crate::secret::scrub(&why),
                });
                c.save_state();
                (c.on_event)(Event::Failure(why));
                c.nap(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    c.state.capturing = false;
    c.save_state();
    Ok(())
}

/// How a session of the capture ended.
enum Next {
    /// Wait for a newer base, then start a new history from it.
    NewBase(Ts),
    /// Start over (reconnect).
    Again,
}

impl Capture<'_> {
    fn save_state(&self) {
        if let Err(e) = self.state.save(&self.cfg.backup_dir) {
            tracing::warn!("cannot record the oplog capture's state: {e}");
        }
    }

    /// Sleeps up to `d`, waking when told to stop.
    fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
    }

    /// One connection's worth of capture.
    fn session(&mut self) -> Result<(), String> {
        let (slices, rejected) = slice::list(&self.oplog_dir, &self.trusted, &self.origin);
        for (name, why) in rejected.iter().take(3) {
            tracing::warn!("oplog capture: {name} {why}; it is not part of the history");
        }
        let key = self.signing.derive_key(spool::KEY_CONTEXT);
        let last_until = slices.last().map(|s| s.until);
        let (mut spool, recovered) =
            Spool::open(&self.oplog_dir, key, last_until.unwrap_or_default()).map_err(|e| {
                format!("cannot open the spool in {}: {e}", self.oplog_dir.display())
            })?;
        if let Some(aside) = &recovered.rejected {
            tracing::warn!(
                "oplog capture: the spool did not verify (someone else wrote it); set aside as {}",
                aside.display()
            );
        }
        if recovered.entries > 0 || recovered.cut > 0 {
            tracing::info!(
                entries = recovered.entries,
                cut = recovered.cut,
                "oplog capture: resuming after {} durable entries",
                recovered.entries
            );
        }
        // Sealed, but the spool was not reset before a crash.
        if let Some(u) = last_until
            && spool.after() < u
            && spool.last().is_none_or(|l| l <= u)
        {
            spool
                .reset(u)
                .map_err(|e| format!("cannot reset the spool: {e}"))?;
        }
        let from = spool.last().unwrap_or(spool.after());
        if from == Ts::default() {
            let store = Store::open(&self.cfg.backup_dir).map_err(|e| e.to_string())?;
            let newest = bases(&store, &self.trusted, &self.origin)
                .into_iter()
                .max_by_key(|b| b.cluster);
            let Some(base) = newest else {
                self.state.off_reason = Some(
                    "waiting for the first backup whose database dump is one point in time".into(),
                );
                self.save_state();
                self.nap(Duration::from_secs(5));
                return Ok(());
            };
            tracing::info!(
                "oplog capture: starting from {} (cluster time {})",
                base.name,
                base.cluster
            );
            spool
                .reset(base.cluster)
                .map_err(|e| format!("cannot start the spool: {e}"))?;
        }
        match self.tail(&mut spool)? {
            Next::Again => Ok(()),
            Next::NewBase(after) => {
                self.wait_for_base(&mut spool, after);
                Ok(())
            }
        }
    }

    /// Waits for a base newer than `after` and starts a new history from it.
    fn wait_for_base(&mut self, spool: &mut Spool, after: Ts) {
        while !self.stop.load(Ordering::Relaxed) {
            let newer = Store::open(&self.cfg.backup_dir)
                .map(|s| bases(&s, &self.trusted, &self.origin))
                .unwrap_or_default()
                .into_iter()
                .filter(|b| b.cluster > after)
                .max_by_key(|b| b.cluster);
            if let Some(b) = newer {
                tracing::info!(
                    "oplog capture: a new history starts from {} (cluster time {})",
                    b.name,
                    b.cluster
                );
                if let Err(e) = spool.reset(b.cluster) {
                    tracing::warn!("oplog capture: cannot start the spool: {e}");
                }
                return;
            }
            self.state.off_reason = Some(
                "a hole in the oplog history: waiting for the new backup that starts a new one"
                    .into(),
            );
            self.save_state();
            self.nap(Duration::from_secs(2));
        }
    }

    /// Connects, checks the server, and tails until an error, a hole or
    /// the stop. It reads from the spool's last entry on: the entries
    /// sharing its timestamp that the spool holds already are skipped (a
    /// transaction's entries share one), so none is lost or doubled.
    fn tail(&mut self, spool: &mut Spool) -> Result<Next, String> {
        let from = spool.last().unwrap_or(spool.after());
        // Entries at the spool's last timestamp that it holds already, or,
        // for an empty spool, every entry at or before where it continues.
        let skip = match spool.last() {
            Some(_) => spool.last_run(),
            None => u64::MAX,
        };
        let uri = self.cfg.uri.clone();
        let (client, set_name, oldest, start) = self
            .rt
            .block_on(async {
                let (client, _) = crate::mongo::connect(&uri).await?;
                let hello = client
                    .database("admin")
                    .run_command(doc! { "hello": 1 })
                    .await
                    .map_err(|e| crate::mongo::read_error("the server's status", &e))?;
                let set_name = hello.get_str("setName").ok().map(str::to_owned);
                let oldest = if set_name.is_some() {
                    client
                        .database("local")
                        .collection::<mongodb::bson::Document>("oplog.rs")
                        .find_one(doc! {})
                        .sort(doc! { "$natural": 1 })
                        .await
                        .map_err(|e| crate::mongo::read_error("the oplog", &e))?
                        .and_then(|d| d.get_timestamp("ts").ok().map(Ts::from))
                } else {
                    None
                };
                // The tail starts at an entry that exists (the newest at or
                // before `from`): a cursor that matches nothing at first
                // may be placed past entries still being written.
                let start = if set_name.is_some() {
                    client
                        .database("local")
                        .collection::<mongodb::bson::Document>("oplog.rs")
                        .find_one(doc! { "ts": { "$lte": mongodb::bson::Timestamp::from(from) } })
                        .sort(doc! { "$natural": -1 })
                        .await
                        .map_err(|e| crate::mongo::read_error("the oplog", &e))?
                        .and_then(|d| d.get_timestamp("ts").ok().map(Ts::from))
                } else {
                    None
                };
                Ok::<_, crate::mongo::MongoError>((client, set_name, oldest, start))
            })
            .map_err(|e| e.to_string())?;
        if set_name.is_none() {
            self.state.off_reason = Some(
                "the server is standalone: point-in-time recovery needs a replica set; start \
                 mongod with --replSet rs0 and run rs.initiate() once (a one-member replica set \
                 is enough)"
                    .into(),
            );
            self.save_state();
            self.nap(Duration::from_secs(60));
            return Ok(Next::Again);
        }
        if let Some(oldest) = oldest
            && oldest > from
        {
            tracing::error!(
                "oplog capture: the server's oplog starts at {oldest}, after the last entry held \
                 ({from}): the entries between are lost; a new backup starts a new history"
            );
            self.state.gaps.push(OplogGap {
                from: from.to_string(),
                to: oldest.to_string(),
                found_at: Utc::now(),
            });
            if self.state.gaps.len() > 50 {
                self.state.gaps.remove(0);
            }
            self.state.capturing = false;
            self.save_state();
            // What the spool holds before the hole is kept as a slice.
            self.seal(spool, None, None).map_err(|e| e.to_string())?;
            (self.on_event)(Event::Gap { from, to: oldest });
            return Ok(Next::NewBase(from));
        }
        self.state.capturing = true;
        self.state.off_reason = None;
        self.state.last_failure = None;
        self.save_state();
        tracing::info!("oplog capture: tailing the oplog after {from}");
        let (tx, mut rx) = mpsc::channel::<Result<RawDocumentBuf, String>>(4096);
        let filter =
            doc! { "ts": { "$gte": mongodb::bson::Timestamp::from(start.unwrap_or(from)) } };
        let coll = client
            .database("local")
            .collection::<RawDocumentBuf>("oplog.rs");
        let reader = self.rt.spawn(async move {
            let cursor = coll
                .find(filter)
                .cursor_type(CursorType::TailableAwait)
                .max_await_time(Duration::from_secs(1))
                .await;
            let mut cursor = match cursor {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(crate::mongo::short(&e))).await;
                    return;
                }
            };
            loop {
                match cursor.advance().await {
                    Ok(true) => {
                        let doc = cursor.current().to_raw_document_buf();
                        if tx.send(Ok(doc)).await.is_err() {
                            return;
                        }
                    }
                    Ok(false) => {
                        let _ = tx.send(Err("the oplog cursor ended".into())).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(crate::mongo::short(&e))).await;
                        return;
                    }
                }
            }
        });
        let result = self.pump(spool, &client, &mut rx, skip);
        reader.abort();
        result
    }

    /// Moves entries from the cursor to the spool, syncing every second and
    /// closing slices on time (never between two entries of one
    /// timestamp: a transaction stays in one slice). The first `skip`
    /// entries at the spool's last timestamp are already in it.
    fn pump(
        &mut self,
        spool: &mut Spool,
        client: &mongodb::Client,
        rx: &mut mpsc::Receiver<Result<RawDocumentBuf, String>>,
        mut skip: u64,
    ) -> Result<Next, String> {
        let slice_every = self.cfg.opts.slice;
        let mut slice_due = Instant::now() + slice_every;
        let mut last_sync = Instant::now();
        let mut last_idle_check = Instant::now();
        let mut last = spool.last().unwrap_or(spool.after());
        let mut held: Option<RawDocumentBuf> = None;
        loop {
            let mut idle = false;
            let got = match held.take() {
                Some(doc) => Ok(Some(Ok(doc))),
                None => self.rt.block_on(async {
                    tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
                }),
            };
            match got {
                Ok(Some(Ok(doc))) => self.take(spool, &doc, &mut last, &mut skip)?,
                Ok(Some(Err(why))) => {
                    let _ = spool.sync();
                    return Err(format!("reading the oplog failed: {why}"));
                }
                Ok(None) => {
                    let _ = spool.sync();
                    return Err("reading the oplog stopped".into());
                }
                Err(_) => idle = true,
            }
            if idle && last_idle_check.elapsed() >= Duration::from_secs(1) {
                last_idle_check = Instant::now();
                if let Some(t) = self.caught_up(client, last) {
                    self.state.proven_at = Some(t);
                }
            }
            if last_sync.elapsed() >= Duration::from_secs(1) {
                spool
                    .sync()
                    .map_err(|e| format!("cannot sync the spool: {e}"))?;
                last_sync = Instant::now();
                self.state.last_entry = Some(last.to_string());
                self.state.last_durable_at = Some(Utc::now());
                self.save_state();
            }
            let stopping = self.stop.load(Ordering::Relaxed);
            if stopping || Instant::now() >= slice_due || spool.bytes() >= MAX_SLICE_BYTES {
                // The rest of the last timestamp's entries join this slice.
                while let Ok(Ok(doc)) = rx.try_recv() {
                    if spool::entry_ts(doc.as_bytes()) == Some(last) {
                        self.take(spool, &doc, &mut last, &mut skip)?;
                    } else {
                        held = Some(doc);
                        break;
                    }
                }
                // A last look at the server before a slice of an idle time.
                if idle && let Some(t) = self.caught_up(client, last) {
                    self.state.proven_at = Some(t);
                }
                // An idle time is closed ten times less often (its slice
                // only proves nothing happened), and when stopping.
                let idle_due = self.state.last_slice_at.is_none_or(|t| {
                    Utc::now() - t
                        >= chrono::Duration::from_std(slice_every * 10).unwrap_or_default()
                });
                if spool.entries() > 0 || stopping || idle_due {
                    self.seal(spool, self.state.proven_at, Some(client))
                        .map_err(|e| e.to_string())?;
                }
                slice_due = Instant::now() + slice_every;
                if stopping {
                    return Ok(Next::Again);
                }
            }
        }
    }

    /// One entry from the cursor into the spool.
    fn take(
        &mut self,
        spool: &mut Spool,
        doc: &RawDocumentBuf,
        last: &mut Ts,
        skip: &mut u64,
    ) -> Result<(), String> {
        let Some(ts) = spool::entry_ts(doc.as_bytes()) else {
            return Ok(());
        };
        if ts < *last || (spool.entries() == 0 && ts <= spool.after()) {
            return Ok(());
        }
        if ts == *last && *skip > 0 {
            *skip -= 1;
            return Ok(());
        }
        spool
            .append(doc.as_bytes(), ts)
            .map_err(|e| format!("cannot write the spool: {e}"))?;
        *last = ts;
        *skip = 0;
        Ok(())
    }

    /// When the server is proven to have written nothing after `last`:
    /// the newest entry of its oplog is `last` (or older). The time is a
    /// second before the question was asked (an entry committed as it was
    /// asked could still become visible).
    fn caught_up(&self, client: &mongodb::Client, last: Ts) -> Option<DateTime<Utc>> {
        let asked = Utc::now() - chrono::Duration::seconds(1);
        let newest = self.rt.block_on(async {
            client
                .database("local")
                .collection::<mongodb::bson::Document>("oplog.rs")
                .find_one(doc! {})
                .sort(doc! { "$natural": -1 })
                .await
        });
        let idle = match newest {
            Ok(Some(d)) => d.get_timestamp("ts").is_ok_and(|ts| Ts::from(ts) <= last),
            Ok(None) => true,
            Err(_) => false,
        };
        idle.then_some(asked)
    }

    /// Closes a slice of what the spool holds (and, with `proven`, of the
    /// idle time after it), then starts the spool over from its end.
    fn seal(
        &mut self,
        spool: &mut Spool,
        proven: Option<DateTime<Utc>>,
        check: Option<&mongodb::Client>,
    ) -> Result<(), slice::SliceError> {
        let after = spool.after();
        let until = spool.last().unwrap_or(after);
        let mut count = spool.entries();
        // The server says how many entries the range holds; when the tail
        // saw fewer (an entry that became visible after later ones), the
        // range is read again, whole, from the oplog.
        let mut reread: Option<Vec<RawDocumentBuf>> = None;
        if let Some(client) = check
            && until > after
            && let Some(entries) = self.verify_range(client, after, until, count)
        {
            tracing::warn!(
                "oplog capture: the tail missed {} of the entries {after}..{until}; they were read again from the oplog",
                entries.len() as u64 - count.min(entries.len() as u64)
            );
            count = entries.len() as u64;
            reread = Some(entries);
        }
        let proven = proven.unwrap_or_default().max(until.time());
        let previous = self.state.last_slice_at.unwrap_or_default();
        if count == 0 && proven <= previous {
            return Ok(());
        }
        // Names are per second: never two in one.
        let mut closed = Utc::now();
        if let Some(last) = self.last_closed {
            while closed.timestamp() <= last.timestamp() {
                std::thread::sleep(Duration::from_millis(50));
                closed = Utc::now();
            }
        }
        let encryption = self.encryption()?;
        let name = super::slice_name(closed, encryption.is_some());
        let path = slice::write(
            &self.store,
            &slice::NewSlice {
                name: &name,
                after,
                until,
                count,
                proven,
            },
            encryption,
            &self.signing,
            &self.origin,
            |w| {
                match &reread {
                    Some(entries) => {
                        for e in entries {
                            w.write_all(e.as_bytes())?;
                        }
                    }
                    None => {
                        spool.read_back(|b| w.write_all(b))?;
                    }
                }
                Ok(())
            },
        )?;
        spool
            .reset(until)
            .map_err(|source| slice::SliceError::Write {
                name: name.clone(),
                dir: self.oplog_dir.clone(),
                source,
            })?;
        self.last_closed = Some(closed);
        self.state.last_slice = Some(name.clone());
        self.state.last_slice_at = Some(closed);
        self.state.last_entry = Some(until.to_string());
        if let Ok(h) = super::history::load(
            super::history::Place::Local(&self.cfg.backup_dir),
            &self.trusted,
            &self.origin,
        ) {
            self.state.window_from = window::window(&h.bases, &h.slices).map(|w| w.0);
        }
        self.save_state();
        tracing::info!(slice = %name, entries = count, "oplog slice {name} closed: {count} entries, {after}..{until}");
        tracing::debug!("slice written to {}", path.display());
        (self.on_event)(Event::Sealed);
        Ok(())
    }

    /// The entries of `(after, until]` read again from the oplog, when the
    /// server holds more of them than the spool (`None` when not, or when
    /// the server cannot say).
    fn verify_range(
        &self,
        client: &mongodb::Client,
        after: Ts,
        until: Ts,
        held: u64,
    ) -> Option<Vec<RawDocumentBuf>> {
        let filter = doc! { "ts": {
            "$gt": mongodb::bson::Timestamp::from(after),
            "$lte": mongodb::bson::Timestamp::from(until),
        } };
        self.rt.block_on(async {
            let oplog = client.database("local");
            let n = oplog
                .collection::<mongodb::bson::Document>("oplog.rs")
                .count_documents(filter.clone())
                .await
                .ok()?;
            // Fewer on the server: it pruned some; the spool holds them.
            if n <= held {
                return None;
            }
            let mut cursor = oplog
                .collection::<RawDocumentBuf>("oplog.rs")
                .find(filter)
                .sort(doc! { "$natural": 1 })
                .await
                .ok()?;
            let mut out = Vec::new();
            while cursor.advance().await.ok()? {
                out.push(cursor.current().to_raw_document_buf());
            }
            (out.len() as u64 == n).then_some(out)
        })
    }

    fn encryption(&self) -> Result<Option<crypt::Encrypting>, slice::SliceError> {
        match &self.cfg.encryption {
            crate::archive::crypt::Encryption::None => Ok(None),
            crate::archive::crypt::Encryption::Age(keys) => {
                let note = format!(
                    "{}{}\n",
                    crate::sign::IDENTITY_LINE,
                    self.signing.public_base64()
                );
                let (enc, _) =
                    crypt::encrypting(keys, &note).map_err(|e| slice::SliceError::Write {
                        name: "(encryption)".into(),
                        dir: self.oplog_dir.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                Ok(Some(enc))
            }
        }
    }
}
