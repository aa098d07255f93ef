//! Loading a dump directory (`<db>/<coll>.bson` + `.metadata.json`, from an
//! archive or written by mongodump) into a server.
//!
//! Nothing that exists is harmed. A collection that already exists is left
//! alone and reported, unless `--drop`. A regular collection is restored
//! under a temporary name (documents in unordered batches of raw BSON,
//! then its indexes), and only when all of that worked is it renamed to its
//! real name, replacing the old one in the same step when `--drop` asked
//! for it; on any failure the temporary collection is dropped and the old
//! one is untouched. Views and time-series collections cannot be renamed;
//! they are created in place (views last, since they may read each other).

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use mongodb::bson::{Document, RawDocument, RawDocumentBuf, doc};
use mongodb::error::ErrorKind;
use mongodb::{Client, Database};

use super::concurrency::{Concurrency, MAX_IN_FLIGHT};
use super::{MongoError, connect, metadata, unescape_name};
use crate::Outcome;
use crate::archive::manifest::CollectionKind;
use crate::secret::Secret;

/// The largest BSON document accepted from a dump (the server's limit plus
/// the slack mongodump allows).
const MAX_DOC: usize = 16 * 1024 * 1024 + 16 * 1024;
/// Documents per insert batch, and bytes (memory stays bounded by this).
const BATCH_DOCS: usize = 1000;
const BATCH_BYTES: usize = 8 << 20;

/// Where to restore.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server.
    pub uri: Option<Secret>,
    /// Restore every collection into this database instead of its own.
    pub to_db: Option<String>,
    /// Put each database under its name with this prefix (drills).
    pub db_prefix: Option<String>,
    /// Replace collections that exist.
    pub drop: bool,
}

impl Target {
    /// The database a dump's database `db` goes into.
    pub fn db_for(&self, db: &str) -> String {
        match (&self.to_db, &self.db_prefix) {
            (Some(to), _) => to.clone(),
            (None, Some(prefix)) => format!("{prefix}{db}"),
            (None, None) => db.to_owned(),
        }
    }
}

/// What happened to one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Restored with this many documents and indexes.
    Restored {
        /// Documents inserted.
        documents: u64,
        /// Indexes created (besides `_id`).
        indexes: usize,
    },
    /// Left alone: it exists and `--drop` was not given.
    Exists,
    /// Would be restored (dry run).
    WouldRestore {
        /// Documents in the dump.
        documents: u64,
        /// Whether it exists (and would be replaced with --drop, or left alone).
        exists: bool,
    },
}

/// The result of a restore.
#[derive(Debug, Default)]
pub struct Report {
    /// Per namespace (`db.coll`), what happened.
    pub collections: Vec<(String, Fate)>,
    /// Notes (index options dropped, files ignored).
    pub notes: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether existing collections were (or would be) replaced.
    pub drop: bool,
    /// The collections written, with what their dump held.
    pub restored: Vec<RestoredCollection>,
}

impl Report {
    /// Success, or warnings when something was left alone or skipped.
    pub fn outcome(&self) -> Outcome {
        let partial = self
            .collections
            .iter()
            .any(|(_, f)| matches!(f, Fate::Exists));
        if partial && !self.dry_run {
            Outcome::Warnings
        } else {
            Outcome::Success
        }
    }
}

/// One collection found in a dump directory.
#[derive(Debug, Clone)]
struct Found {
    db: String,
    name: String,
    bson: Option<PathBuf>,
    metadata: metadata::Metadata,
}

fn dump_err(path: &Path, detail: impl Into<String>) -> MongoError {
    MongoError::Dump {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

/// Finds the collections in a dump directory: either the dump root
/// (`<root>/<db>/...`) or a single database directory.
fn scan(root: &Path, notes: &mut Vec<String>) -> Result<Vec<Found>, MongoError> {
    let entries = fs::read_dir(root).map_err(|e| {
        dump_err(
            root,
            format!("cannot read the dump directory ({e}); check the path given to --mongo-dir"),
        )
    })?;
    let mut db_dirs: Vec<PathBuf> = Vec::new();
    let mut has_files = false;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            db_dirs.push(p);
        } else if p.extension().is_some_and(|x| x == "bson" || x == "json") {
            has_files = true;
        }
    }
    if has_files {
        // A database directory was given directly.
        db_dirs = vec![root.to_path_buf()];
    }
    db_dirs.sort();
    let mut found = Vec::new();
    for dir in db_dirs {
        let db = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| dump_err(&dir, format!("cannot read it ({e})")))?
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in &files {
            let Some(fname) = f.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if fname.ends_with(".bson.gz") || fname.ends_with(".metadata.json.gz") {
                return Err(dump_err(
                    f,
                    "compressed dumps (mongodump --gzip) are not read; gunzip the files first",
                ));
            }
            let stem = if let Some(s) = fname.strip_suffix(".metadata.json") {
                s
            } else if let Some(s) = fname.strip_suffix(".bson") {
                if files.iter().any(|o| {
                    o.file_name().and_then(|n| n.to_str()) == Some(&format!("{s}.metadata.json"))
                }) {
                    continue; // found through its metadata
                }
                s
            } else {
                continue;
            };
            let name = unescape_name(stem);
            let bson = dir.join(format!("{stem}.bson"));
            let bson = bson.is_file().then_some(bson);
            let meta_path = dir.join(format!("{stem}.metadata.json"));
            let metadata = if meta_path.is_file() {
                let text = read_metadata(&meta_path)?;
                metadata::parse(&text).map_err(|e| {
                    dump_err(
                        &meta_path,
                        format!("is not valid metadata ({e}); the dump is damaged"),
                    )
                })?
            } else {
                metadata::Metadata {
                    kind: CollectionKind::Collection,
                    ..Default::default()
                }
            };
            // The name the collection will get is the metadata's when it
            // has one; that name (and the file's) decides what is a system
            // collection, so a renamed file cannot smuggle one in.
            let name = metadata.name.clone().unwrap_or(name);
            if is_system(&db, &name) || is_system(&db, &unescape_name(stem)) {
                notes.push(format!("{db}.{name} is a system collection; not restored"));
                continue;
            }
            found.push(Found {
                db: db.clone(),
                name,
                bson,
                metadata,
            });
        }
    }
    Ok(found)
}

/// Whether `db.name` is a system collection, which a restore leaves alone.
pub fn is_system(db: &str, name: &str) -> bool {
    name.starts_with("system.") || name == "oplog.rs" || db == "admin" && name == "users"
}

/// The largest `.metadata.json` accepted (mongodump's are a few KiB; this
/// leaves room for hundreds of indexes and a large validator).
const MAX_METADATA: u64 = 16 << 20;

fn read_metadata(path: &Path) -> Result<String, MongoError> {
    let f = File::open(path).map_err(|e| dump_err(path, format!("cannot read it ({e})")))?;
    let mut text = String::new();
    f.take(MAX_METADATA + 1)
        .read_to_string(&mut text)
        .map_err(|e| dump_err(path, format!("cannot read it ({e})")))?;
    if text.len() as u64 > MAX_METADATA {
        return Err(dump_err(
            path,
            format!(
                "is larger than {} MiB; the dump is damaged",
                MAX_METADATA >> 20
            ),
        ));
    }
    Ok(text)
}

/// Reads the BSON documents of a dump file one by one, checking each.
pub struct BsonReader<R> {
    inner: R,
    path: PathBuf,
    offset: u64,
}

impl<R: Read> BsonReader<R> {
    /// Reads documents from `inner`; `path` names it in errors.
    pub fn new(inner: R, path: &Path) -> Self {
        BsonReader {
            inner,
            path: path.to_path_buf(),
            offset: 0,
        }
    }

    fn corrupt(&self, why: &str) -> MongoError {
        dump_err(
            &self.path,
            format!(
                "is not valid BSON at byte {} ({why}); the dump is damaged",
                self.offset
            ),
        )
    }

    /// The next document, or `None` at the end.
    pub fn next_doc(&mut self) -> Result<Option<RawDocumentBuf>, MongoError> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.inner.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(self.corrupt("the file ends inside a document")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(dump_err(&self.path, format!("cannot read it ({e})"))),
            }
        }
        let n = i32::from_le_bytes(len);
        if n < 5 || n as usize > MAX_DOC {
            return Err(self.corrupt(&format!("impossible document length {n}")));
        }
        let mut buf = vec![0u8; n as usize];
        buf[..4].copy_from_slice(&len);
        self.inner.read_exact(&mut buf[4..]).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.corrupt("the file ends inside a document")
            } else {
                dump_err(&self.path, format!("cannot read it ({e})"))
            }
        })?;
        let doc = RawDocumentBuf::from_bytes(buf).map_err(|e| self.corrupt(&e.to_string()))?;
        validate(&doc, 0).map_err(|e| self.corrupt(&e))?;
        self.offset += n as u64;
        Ok(Some(doc))
    }
}

/// Walks every element so a malformed document is an error here, not a
/// surprise on the server. Nesting is bounded, as the server bounds it.
fn validate(doc: &RawDocument, depth: usize) -> Result<(), String> {
    if depth > 1000 {
        return Err("documents nested too deeply".into());
    }
    for item in doc {
        let (_, value) = item.map_err(|e| e.to_string())?;
        match value {
            mongodb::bson::RawBsonRef::Document(d) => validate(d, depth + 1)?,
            // An array is a document with keys "0", "1", ...
            mongodb::bson::RawBsonRef::Array(a) => {
                let as_doc = RawDocument::from_bytes(a.as_bytes()).map_err(|e| e.to_string())?;
                for (i, item) in as_doc.into_iter().enumerate() {
                    let (key, _) = item.map_err(|e| e.to_string())?;
                    if key != i.to_string() {
                        return Err(format!("array index {key:?} where {i} belongs"));
                    }
                }
                validate(as_doc, depth + 1)?;
            }
            mongodb::bson::RawBsonRef::JavaScriptCodeWithScope(c) => validate(c.scope, depth + 1)?,
            _ => {}
        }
    }
    Ok(())
}

/// Counts the documents of a dump file (validating them), for dry runs.
fn count_docs(path: &Path) -> Result<u64, MongoError> {
    let f = File::open(path).map_err(|e| dump_err(path, format!("cannot open it ({e})")))?;
    let mut r = BsonReader::new(BufReader::with_capacity(1 << 20, f), path);
    let mut n = 0;
    while r.next_doc()?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn write_err(ns: &str, e: &mongodb::error::Error) -> MongoError {
    let hint = match e.kind.as_ref() {
        ErrorKind::Command(c) if c.code == 13 => {
            "the user may not write there; the built-in restore role can".to_owned()
        }
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. } => {
            "is the server still running? The collection was left as it was".to_owned()
        }
        _ => "the collection was left as it was; check the server's log".to_owned(),
    };
    MongoError::Write {
        what: ns.to_owned(),
        detail: super::short(e),
        hint,
    }
}

async fn exists(db: &Database, name: &str) -> Result<bool, MongoError> {
    let names = db
        .list_collection_names()
        .filter(doc! { "name": name })
        .await
        .map_err(|e| super::read_error(&format!("the collection list of {}", db.name()), &e))?;
    Ok(!names.is_empty())
}

async fn create_indexes(
    db: &Database,
    coll: &str,
    m: &metadata::Metadata,
    ns: &str,
    notes: &mut Vec<String>,
) -> Result<usize, MongoError> {
    let mut specs = Vec::new();
    for spec in m.indexes.iter().filter(|s| !metadata::is_id_index(s)) {
        let (clean, changed) = metadata::clean_index(spec);
        for c in changed {
            notes.push(format!(
                "{ns} index {}: {c}",
                clean.get_str("name").unwrap_or("?")
            ));
        }
        specs.push(clean);
    }
    if specs.is_empty() {
        return Ok(0);
    }
    let n = specs.len();
    db.run_command(doc! { "createIndexes": coll, "indexes": specs })
        .await
        .map_err(|e| write_err(&format!("{ns} (indexes)"), &e))?;
    Ok(n)
}

fn create_command(name: &str, options: &Document) -> Document {
    let mut cmd = doc! { "create": name };
    for (k, v) in options {
        cmd.insert(k, v.clone());
    }
    cmd
}

async fn options_of(db: &Database, coll: &str, ns: &str) -> Result<Document, MongoError> {
    let what = format!("the options of {ns}");
    let mut cursor = db
        .run_cursor_command(doc! { "listCollections": 1, "filter": { "name": coll } })
        .await
        .map_err(|e| super::read_error(&what, &e))?;
    if cursor
        .advance()
        .await
        .map_err(|e| super::read_error(&what, &e))?
    {
        let spec: Document = cursor
            .deserialize_current()
            .map_err(|e| super::read_error(&what, &e))?;
        return Ok(spec.get_document("options").cloned().unwrap_or_default());
    }
    Ok(Document::new())
}

async fn drop_quietly(db: &Database, coll: &str) {
    let _ = db.collection::<Document>(coll).drop().await;
}

/// An order-independent digest of a collection's documents: how many, and
/// the sum modulo 2^256 of each document's BLAKE3. Two collections with
/// the same documents in any order have the same digest, so a restore
/// (whose batches may land in any order) is checked against its dump by
/// reading the server back. It is a check against loss and damage, not
/// against forgery: the archive's own hashes and signature are that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    /// Documents counted.
    pub documents: u64,
    sum: [u64; 4],
}

impl Digest {
    /// Counts one document.
    pub fn add(&mut self, doc: &[u8]) {
        let h = blake3::hash(doc);
        let mut carry = 0u64;
        for (i, chunk) in h.as_bytes().chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let (s1, o1) = self.sum[i].overflowing_add(word);
            let (s2, o2) = s1.overflowing_add(carry);
            self.sum[i] = s2;
            carry = u64::from(o1) + u64::from(o2);
        }
        self.documents += 1;
    }
}

/// A collection this restore wrote, with what its dump held.
#[derive(Debug, Clone)]
pub struct RestoredCollection {
    /// Its database in the dump.
    pub source_db: String,
    /// Database it went into.
    pub db: String,
    /// Its name.
    pub name: String,
    /// The dump's metadata (options, indexes, kind).
    pub metadata: metadata::Metadata,
    /// The dump's documents (for a time-series collection, its buckets).
    pub digest: Digest,
}

/// One collection on its way in.
struct Job<'a> {
    found: &'a Found,
    /// Target database.
    db: String,
    ns: String,
    /// The name it is built under: its own, or a temporary one when it
    /// replaces a collection that exists.
    build: String,
    swap: bool,
    digest: Digest,
    documents: u64,
    indexes: usize,
}

impl Job<'_> {
    /// The collection the documents go into (time-series: its buckets).
    fn data_collection(&self) -> String {
        if self.found.metadata.kind == CollectionKind::Timeseries {
            format!("system.buckets.{}", self.build)
        } else {
            self.build.clone()
        }
    }
}

/// A dump file being read in batches.
struct Source {
    job: usize,
    reader: BsonReader<BufReader<File>>,
    carry: Option<RawDocumentBuf>,
    done: bool,
}

/// The next batch of `src`, its documents counted into `digest`.
fn read_batch(
    src: &mut Source,
    digest: &mut Digest,
) -> Result<Option<(Vec<RawDocumentBuf>, u64)>, MongoError> {
    let mut batch = Vec::with_capacity(BATCH_DOCS);
    let mut bytes = 0usize;
    loop {
        let next = match src.carry.take() {
            Some(d) => Some(d),
            None => src.reader.next_doc()?,
        };
        let Some(d) = next else {
            src.done = true;
            break;
        };
        let len = d.as_bytes().len();
        if !batch.is_empty() && (batch.len() >= BATCH_DOCS || bytes + len > BATCH_BYTES) {
            src.carry = Some(d);
            break;
        }
        digest.add(d.as_bytes());
        bytes += len;
        batch.push(d);
    }
    Ok((!batch.is_empty()).then_some((batch, bytes as u64)))
}

/// Inserts every job's documents, several batches in flight (as many as
/// [`Concurrency`] finds the server takes with profit). The batch is the
/// unit of parallelism: collections go one after another, largest first,
/// and the batches in flight are those of the collection at hand, plus the
/// next one's as the last finish (so small collections overlap, and a
/// large one is never a slow tail). Feeding one collection at a time is
/// also what a server does best with: interleaving them measured 8%
/// slower. With more than one batch in flight, documents may land in
/// another order than the dump's, as with mongorestore's insertion
/// workers; MongoDB promises no natural order. Returns the number in
/// flight it settled on.
async fn load_data(
    client: &Client,
    jobs: &mut [Job<'_>],
    cancel: &AtomicBool,
) -> Result<usize, MongoError> {
    let mut sources = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if let Some(path) = &job.found.bson {
            let f =
                File::open(path).map_err(|e| dump_err(path, format!("cannot open it ({e})")))?;
            let size = f.metadata().map_or(0, |m| m.len());
            sources.push((
                size,
                Source {
                    job: i,
                    reader: BsonReader::new(BufReader::with_capacity(1 << 20, f), path),
                    carry: None,
                    done: false,
                },
            ));
        }
    }
    sources.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    let mut sources: Vec<Source> = sources.into_iter().map(|(_, s)| s).collect();
    let mut ctl = Concurrency::new(MAX_IN_FLIGHT);
    let mut in_flight = FuturesUnordered::new();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(MongoError::Cancelled);
        }
        while in_flight.len() < ctl.limit() {
            let Some(src) = sources.iter_mut().find(|s| !s.done) else {
                break;
            };
            let job = &mut jobs[src.job];
            let Some((batch, bytes)) = read_batch(src, &mut job.digest)? else {
                continue;
            };
            let coll = client
                .database(&job.db)
                .collection::<RawDocumentBuf>(&job.data_collection());
            let index = src.job;
            ctl.sent(Instant::now());
            in_flight.push(async move {
                let n = batch.len() as u64;
                let result = coll.insert_many(&batch).ordered(false).await;
                (index, n, bytes, result)
            });
        }
        let Some((index, n, bytes, result)) = in_flight.next().await else {
            break;
        };
        result.map_err(|e| write_err(&jobs[index].ns, &e))?;
        jobs[index].documents += n;
        let before = ctl.limit();
        if ctl.finished(bytes, Instant::now()) != before {
            tracing::debug!("{} insert batches in flight (was {before})", ctl.limit());
        }
    }
    Ok(ctl.limit())
}

/// Builds every job's indexes, `parallel` collections at a time.
async fn build_indexes(
    client: &Client,
    jobs: &mut [Job<'_>],
    parallel: usize,
    notes: &mut Vec<String>,
) -> Result<(), MongoError> {
    let results: Vec<_> = futures::stream::iter(jobs.iter().enumerate())
        .map(|(i, job)| async move {
            let mut notes = Vec::new();
            let db = client.database(&job.db);
            let n = create_indexes(&db, &job.build, &job.found.metadata, &job.ns, &mut notes).await;
            (i, n, notes)
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    for (i, n, mut more) in results {
        jobs[i].indexes = n?;
        notes.append(&mut more);
    }
    Ok(())
}

/// Creates every job's collection and fills it: documents, then indexes.
async fn create_and_fill(
    client: &Client,
    jobs: &mut [Job<'_>],
    cancel: &AtomicBool,
    notes: &mut Vec<String>,
) -> Result<(), MongoError> {
    for job in jobs.iter() {
        client
            .database(&job.db)
            .run_command(create_command(&job.build, &job.found.metadata.options))
            .await
            .map_err(|e| write_err(&job.ns, &e))?;
    }
    let parallel = load_data(client, jobs, cancel).await?;
    tracing::debug!("documents restored; building indexes, {parallel} at a time");
    if cancel.load(Ordering::Relaxed) {
        return Err(MongoError::Cancelled);
    }
    build_indexes(client, jobs, parallel, notes).await
}

/// Renames a collection built under a temporary name over the one it
/// replaces. Some servers do not carry a collection's options across a
/// rename; then it is rebuilt in place from the dump.
async fn swap_in(
    client: &Client,
    job: &mut Job<'_>,
    notes: &mut Vec<String>,
) -> Result<(), MongoError> {
    let name = &job.found.name;
    client
        .database("admin")
        .run_command(doc! {
            "renameCollection": format!("{}.{}", job.db, job.build),
            "to": &job.ns,
            "dropTarget": true,
        })
        .await
        .map_err(|e| write_err(&job.ns, &e))?;
    let db = client.database(&job.db);
    let m = &job.found.metadata;
    let kept = options_of(&db, name, &job.ns).await?;
    if m.options.keys().any(|k| !kept.contains_key(k)) {
        notes.push(format!(
            "{}: the server dropped the collection's options when renaming it; rebuilt it in place",
            job.ns
        ));
        db.collection::<Document>(name)
            .drop()
            .await
            .map_err(|e| write_err(&job.ns, &e))?;
        job.build = name.clone();
        job.swap = false;
        job.digest = Digest::default();
        job.documents = 0;
        create_and_fill(
            client,
            std::slice::from_mut(job),
            &AtomicBool::new(false),
            notes,
        )
        .await?;
    }
    Ok(())
}

/// Creates a view (replacing one that exists, when asked).
async fn restore_view(client: &Client, job: &Job<'_>, present: bool) -> Result<(), MongoError> {
    let db = client.database(&job.db);
    if present {
        db.collection::<Document>(&job.found.name)
            .drop()
            .await
            .map_err(|e| write_err(&job.ns, &e))?;
    }
    db.run_command(create_command(&job.found.name, &job.found.metadata.options))
        .await
        .map_err(|e| write_err(&job.ns, &e))?;
    Ok(())
}

/// Restores the collections found in a dump: all of them are created and
/// filled (under temporary names where they replace one), then swapped in;
/// views come last. When filling fails, every collection this restore made
/// is dropped, so nothing changed.
async fn restore_all(
    client: &Client,
    found: &[Found],
    target: &Target,
    cancel: &AtomicBool,
    report: &mut Report,
) -> Result<(), MongoError> {
    let mut jobs = Vec::new();
    let mut views = Vec::new();
    for f in found {
        let db_name = target.db_for(&f.db);
        let db = client.database(&db_name);
        let ns = format!("{db_name}.{}", f.name);
        let present = exists(&db, &f.name).await?;
        if present && !target.drop {
            tracing::warn!(collection = %ns, "{ns} already exists; left alone (pass --drop to replace it)");
            report.collections.push((ns, Fate::Exists));
            continue;
        }
        let swap = present && f.metadata.kind == CollectionKind::Collection;
        let job = Job {
            found: f,
            db: db_name,
            ns,
            build: if swap {
                format!(
                    "cofre_restore_{}",
                    mongodb::bson::oid::ObjectId::new().to_hex()
                )
            } else {
                f.name.clone()
            },
            swap,
            digest: Digest::default(),
            documents: 0,
            indexes: 0,
        };
        if f.metadata.kind == CollectionKind::View {
            views.push((job, present));
            continue;
        }
        if present && !swap {
            // A time-series collection cannot be renamed: replacing one
            // drops it first.
            db.collection::<Document>(&f.name)
                .drop()
                .await
                .map_err(|e| write_err(&job.ns, &e))?;
        }
        tracing::info!(collection = %job.ns, "restoring {}", job.ns);
        jobs.push(job);
    }
    let mut result = create_and_fill(client, &mut jobs, cancel, &mut report.notes).await;
    let mut swapped = 0;
    if result.is_ok() {
        for job in &mut jobs {
            if job.swap
                && let Err(e) = swap_in(client, job, &mut report.notes).await
            {
                result = Err(e);
                break;
            }
            swapped += 1;
        }
    }
    if let Err(e) = result {
        // What was not swapped in yet goes; what was stays restored.
        for job in &jobs[swapped..] {
            drop_quietly(&client.database(&job.db), &job.build).await;
        }
        return Err(e);
    }
    for job in &jobs {
        tracing::info!(collection = %job.ns, documents = job.documents, indexes = job.indexes, "restored {}", job.ns);
        report.collections.push((
            job.ns.clone(),
            Fate::Restored {
                documents: job.documents,
                indexes: job.indexes,
            },
        ));
        report.restored.push(RestoredCollection {
            source_db: job.found.db.clone(),
            db: job.db.clone(),
            name: job.found.name.clone(),
            metadata: job.found.metadata.clone(),
            digest: job.digest,
        });
    }
    for (job, present) in &views {
        if let Err(e) = restore_view(client, job, *present).await {
            drop_quietly(&client.database(&job.db), &job.found.name).await;
            return Err(e);
        }
        report.collections.push((
            job.ns.clone(),
            Fate::Restored {
                documents: 0,
                indexes: 0,
            },
        ));
        report.restored.push(RestoredCollection {
            source_db: job.found.db.clone(),
            db: job.db.clone(),
            name: job.found.name.clone(),
            metadata: job.found.metadata.clone(),
            digest: Digest::default(),
        });
    }
    Ok(())
}

/// Said of an archive's dump of a database that had no collection yet.
const NO_COLLECTIONS: &str = "the dump holds no collections (the database had none when it was backed up): nothing to restore";

/// What restoring a dump recorded in a manifest would do (for `--dry-run`,
/// which stages nothing): reads only the target server.
pub fn plan(
    section: &crate::archive::manifest::MongoSection,
    target: &Target,
) -> Result<Report, MongoError> {
    let mut report = Report {
        dry_run: true,
        drop: target.drop,
        ..Default::default()
    };
    if section.collections.is_empty() {
        report.notes.push(NO_COLLECTIONS.to_owned());
        return Ok(report);
    }
    let uri = target.uri.as_ref().ok_or(MongoError::NoTarget)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let (client, _) = connect(uri).await?;
        for c in &section.collections {
            let db_name = target.db_for(&c.db);
            let exists = exists(&client.database(&db_name), &c.name).await?;
            report.collections.push((
                format!("{db_name}.{}", c.name),
                Fate::WouldRestore {
                    documents: c.documents,
                    exists,
                },
            ));
        }
        Ok::<(), MongoError>(())
    })?;
    Ok(report)
}

/// Restores a dump directory a person named (`--mongo-dir`) into the
/// target server. One that holds no collections is refused: it is most
/// likely not the dump directory that was meant.
pub fn restore_dir(dir: &Path, target: &Target, dry_run: bool) -> Result<Report, MongoError> {
    if scan(dir, &mut Vec::new())?.is_empty() {
        return Err(dump_err(
            dir,
            "holds no collections (expected <db>/<collection>.bson and .metadata.json files)",
        ));
    }
    restore_dump(dir, target, dry_run, &AtomicBool::new(false))
}

/// Restores an archive's dump (checked against its signed manifest) into
/// the target server, stopping between batches once `cancel` is set (what
/// was made is then dropped and the error is [`MongoError::Cancelled`]).
/// The dump of a database with no collection yet restores nothing.
pub fn restore_dump(
    dir: &Path,
    target: &Target,
    dry_run: bool,
    cancel: &AtomicBool,
) -> Result<Report, MongoError> {
    let mut report = Report {
        dry_run,
        drop: target.drop,
        ..Default::default()
    };
    let mut found = scan(dir, &mut report.notes)?;
    if found.is_empty() {
        report.notes.push(NO_COLLECTIONS.to_owned());
        return Ok(report);
    }
    // Views last: they may be defined on collections (or views) restored here.
    found.sort_by_key(|f| f.metadata.kind == CollectionKind::View);
    let uri = target.uri.as_ref().ok_or(MongoError::NoTarget)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let (client, _) = connect(uri).await?;
        if !dry_run {
            return restore_all(&client, &found, target, cancel, &mut report).await;
        }
        for f in &found {
            let db_name = target.db_for(&f.db);
            let documents = match &f.bson {
                Some(p) => count_docs(p)?,
                None => 0,
            };
            let exists = exists(&client.database(&db_name), &f.name).await?;
            report.collections.push((
                format!("{db_name}.{}", f.name),
                Fate::WouldRestore { documents, exists },
            ));
        }
        Ok::<(), MongoError>(())
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bson")
            .join(name)
    }

    #[test]
    fn reads_good_fixtures_and_refuses_corrupt_ones() {
        assert!(count_docs(&fixture("all_types.bson")).unwrap() > 0);
        assert!(count_docs(&fixture("deep_nested.bson")).unwrap() > 0);
        assert!(count_docs(&fixture("sample.bson")).unwrap() > 0);
        for bad in ["bad_type.bson", "broken_array.bson", "random_bytes.bson"] {
            let err = count_docs(&fixture(bad)).unwrap_err().to_string();
            assert!(
                err.contains("not valid BSON") || err.contains("ends inside"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_digest_ignores_order_and_sees_content() {
        let docs: Vec<Vec<u8>> = (0..50)
            .map(|i| mongodb::bson::rawdoc! { "i": i }.into_bytes())
            .collect();
        let digest = |it: &mut dyn Iterator<Item = &Vec<u8>>| {
            let mut d = Digest::default();
            for doc in it {
                d.add(doc);
            }
            d
        };
        let forward = digest(&mut docs.iter());
        assert_eq!(forward, digest(&mut docs.iter().rev()));
        // One document replaced by a copy of another: same count, caught.
        let swapped = digest(&mut docs[1..].iter().chain(&docs[1..2]));
        assert_eq!(swapped.documents, forward.documents);
        assert_ne!(swapped, forward);
        // The sum carries from word to word (a 256-bit addition).
        let h = blake3::hash(b"");
        let w: Vec<u64> = h
            .as_bytes()
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut d = Digest {
            documents: 0,
            sum: [u64::MAX, 0, 0, 0],
        };
        d.add(b"");
        assert_eq!(d.sum[0], w[0].wrapping_sub(1));
        assert_eq!(d.sum[1], w[1] + 1);
    }

    #[test]
    fn truncated_and_garbage_input() {
        let doc = mongodb::bson::rawdoc! { "a": 1, "b": "x" };
        let bytes = doc.as_bytes().to_vec();
        let p = Path::new("t.bson");
        let mut r = BsonReader::new(&bytes[..bytes.len() - 1], p);
        assert!(r.next_doc().is_err());
        let mut r = BsonReader::new(&[0xff, 0xff, 0xff, 0x7f][..], p);
        assert!(r.next_doc().is_err());
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let mut r = BsonReader::new(&two[..], p);
        assert!(r.next_doc().unwrap().is_some());
        assert!(r.next_doc().unwrap().is_some());
        assert!(r.next_doc().unwrap().is_none());
    }
}
