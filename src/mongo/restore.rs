//! Restoring a dump directory (`<db>/<coll>.bson` + `.metadata.json`, from an
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

use mongodb::bson::{Document, RawDocument, RawDocumentBuf, doc};
use mongodb::error::ErrorKind;
use mongodb::{Client, Database};

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
    /// Replace collections that exist.
    pub drop: bool,
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
            let system = |n: &str| n.starts_with("system.") || n == "oplog.rs";
            if system(&name) || system(&unescape_name(stem)) || db == "admin" && name == "users" {
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

/// Inserts the documents of `path` into `coll`, in unordered batches.
async fn insert_all(db: &Database, coll: &str, path: &Path, ns: &str) -> Result<u64, MongoError> {
    let f = File::open(path).map_err(|e| dump_err(path, format!("cannot open it ({e})")))?;
    let mut reader = BsonReader::new(BufReader::with_capacity(1 << 20, f), path);
    let collection = db.collection::<RawDocumentBuf>(coll);
    let mut batch: Vec<RawDocumentBuf> = Vec::with_capacity(BATCH_DOCS);
    let mut batch_bytes = 0usize;
    let mut total = 0u64;
    loop {
        let next = reader.next_doc()?;
        let flush = match &next {
            None => !batch.is_empty(),
            Some(d) => batch.len() >= BATCH_DOCS || batch_bytes + d.as_bytes().len() > BATCH_BYTES,
        };
        if flush {
            collection
                .insert_many(&batch)
                .ordered(false)
                .await
                .map_err(|e| write_err(ns, &e))?;
            total += batch.len() as u64;
            batch.clear();
            batch_bytes = 0;
        }
        match next {
            Some(d) => {
                batch_bytes += d.as_bytes().len();
                batch.push(d);
            }
            None => return Ok(total),
        }
    }
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

/// Creates `coll` with the dump's options and fills it: documents (for a
/// time-series collection, its buckets), then indexes. Views are only created.
async fn fill(
    db: &Database,
    coll: &str,
    found: &Found,
    ns: &str,
    notes: &mut Vec<String>,
) -> Result<(u64, usize), MongoError> {
    let m = &found.metadata;
    db.run_command(create_command(coll, &m.options))
        .await
        .map_err(|e| write_err(ns, &e))?;
    if m.kind == CollectionKind::View {
        return Ok((0, 0));
    }
    let documents = match &found.bson {
        // Time-series data is restored as the buckets mongodump dumped.
        Some(path) if m.kind == CollectionKind::Timeseries => {
            insert_all(db, &format!("system.buckets.{coll}"), path, ns).await?
        }
        Some(path) => insert_all(db, coll, path, ns).await?,
        None => 0,
    };
    let indexes = create_indexes(db, coll, m, ns, notes).await?;
    Ok((documents, indexes))
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

async fn restore_one(
    client: &Client,
    found: &Found,
    target: &Target,
    notes: &mut Vec<String>,
) -> Result<Fate, MongoError> {
    let db_name = target.to_db.clone().unwrap_or_else(|| found.db.clone());
    let db = client.database(&db_name);
    let ns = format!("{db_name}.{}", found.name);
    let m = &found.metadata;
    let present = exists(&db, &found.name).await?;
    if present && !target.drop {
        return Ok(Fate::Exists);
    }
    let swappable = m.kind == CollectionKind::Collection;
    if !present || !swappable {
        // Made in place: nothing that existed is touched (a view or
        // time-series collection asked to be replaced is dropped first,
        // as they cannot be renamed). On failure, what was made goes.
        if present {
            db.collection::<Document>(&found.name)
                .drop()
                .await
                .map_err(|e| write_err(&ns, &e))?;
        }
        return match fill(&db, &found.name, found, &ns, notes).await {
            Ok((documents, indexes)) => Ok(Fate::Restored { documents, indexes }),
            Err(e) => {
                drop_quietly(&db, &found.name).await;
                Err(e)
            }
        };
    }
    // Replacing an existing collection: build the new one under a temporary
    // name, then swap it in with one rename; the old one stays whole until then.
    let temp = format!(
        "cofre_restore_{}",
        mongodb::bson::oid::ObjectId::new().to_hex()
    );
    let swapped = async {
        let counts = fill(&db, &temp, found, &ns, notes).await?;
        client
            .database("admin")
            .run_command(doc! {
                "renameCollection": format!("{db_name}.{temp}"),
                "to": &ns,
                "dropTarget": true,
            })
            .await
            .map_err(|e| write_err(&ns, &e))?;
        Ok::<_, MongoError>(counts)
    }
    .await;
    let (mut documents, mut indexes) = match swapped {
        Ok(counts) => counts,
        Err(e) => {
            drop_quietly(&db, &temp).await;
            return Err(e);
        }
    };
    // Some servers do not carry a collection's options across a rename;
    // then the collection is rebuilt in place from the dump.
    let kept = options_of(&db, &found.name, &ns).await?;
    if m.options.keys().any(|k| !kept.contains_key(k)) {
        notes.push(format!("{ns}: the server dropped the collection's options when renaming it; rebuilt it in place"));
        db.collection::<Document>(&found.name)
            .drop()
            .await
            .map_err(|e| write_err(&ns, &e))?;
        (documents, indexes) = fill(&db, &found.name, found, &ns, notes).await?;
    }
    Ok(Fate::Restored { documents, indexes })
}

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
    let uri = target.uri.as_ref().ok_or(MongoError::NoTarget)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let (client, _) = connect(uri).await?;
        for c in &section.collections {
            let db_name = target.to_db.clone().unwrap_or_else(|| c.db.clone());
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

/// Restores a dump directory into the target server.
pub fn restore_dir(dir: &Path, target: &Target, dry_run: bool) -> Result<Report, MongoError> {
    let mut report = Report {
        dry_run,
        drop: target.drop,
        ..Default::default()
    };
    let mut found = scan(dir, &mut report.notes)?;
    if found.is_empty() {
        return Err(dump_err(
            dir,
            "holds no collections (expected <db>/<collection>.bson and .metadata.json files)",
        ));
    }
    // Views last: they may be defined on collections (or views) restored here.
    found.sort_by_key(|f| f.metadata.kind == CollectionKind::View);
    let uri = target.uri.as_ref().ok_or(MongoError::NoTarget)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let (client, _) = connect(uri).await?;
        for f in &found {
            let db_name = target.to_db.clone().unwrap_or_else(|| f.db.clone());
            let ns = format!("{db_name}.{}", f.name);
            if dry_run {
                let documents = match &f.bson {
                    Some(p) => count_docs(p)?,
                    None => 0,
                };
                let exists = exists(&client.database(&db_name), &f.name).await?;
                report.collections.push((ns, Fate::WouldRestore { documents, exists }));
                continue;
            }
            tracing::info!(collection = %ns, "restoring {ns}");
            let fate = restore_one(&client, f, target, &mut report.notes).await?;
            if let Fate::Restored { documents, indexes } = &fate {
                tracing::info!(collection = %ns, documents, indexes, "restored {ns}");
            } else {
                tracing::warn!(collection = %ns, "{ns} already exists; left alone (pass --drop to replace it)");
            }
            report.collections.push((ns, fate));
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
