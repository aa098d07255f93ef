//! The dump: every selected collection into the archive, as raw BSON.
//!
//! A collection's size is not known before it is read, and a tar header
//! needs it, so each collection is first streamed from the cursor into an
//! unnamed temporary file in `BACKUP_DIR` (gone if the process dies; never
//! in memory), then appended to the archive. Documents are the cursor's
//! bytes (`RawDocument`), written as they came.
//!
//! On a replica set every collection is read in one snapshot session, so
//! all of them are read at the cluster time of the first read. A standalone
//! server cannot do that; the manifest then says the dump is not a single
//! point in time.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, ClientSession, Database};

use super::{
    MongoError, SYSTEM_DATABASES, Selection, connect, escape_name, list_indexes, metadata,
    read_error,
};
use crate::archive::MONGO_PREFIX;
use crate::archive::manifest::{CollectionKind, CollectionRecord, MongoSection};
use crate::archive::writer::{ArchiveWriter, StreamMeta};
use crate::secret::{self, Secret};

/// Counts of one collection's documents.
#[derive(Debug, Default, Clone, Copy)]
pub struct Drained {
    /// Documents.
    pub documents: u64,
    /// Bytes of BSON.
    pub bytes: u64,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MongoError {
    let what = what.into();
    move |source| MongoError::Io { what, source }
}

/// Documents per cursor batch asked of the server. Its default fills
/// batches up to 16 MiB, which the driver holds (and copies) while they are
/// read; 4096 documents keeps the dump's memory a few MiB for ordinary
/// documents (the server still caps a batch at 16 MiB), and measured no
/// slower on 100,000 documents. The batch is not sized from `collStats`:
/// some servers scan the collection to answer it.
const BATCH_DOCS: u32 = 4096;

/// Streams every document of `coll` into `out`, as raw bytes. With a
/// snapshot session, the read happens at the session's cluster time.
pub async fn drain_collection(
    db: &Database,
    coll: &str,
    session: Option<&mut ClientSession>,
    out: &mut impl Write,
    cancel: Option<&AtomicBool>,
) -> Result<Drained, MongoError> {
    let ns = format!("{}.{coll}", db.name());
    let collection = db.collection::<Document>(coll);
    let mut n = Drained::default();
    let find = collection.find(doc! {}).batch_size(BATCH_DOCS);
    match session {
        Some(session) => {
            let mut cursor = find
                .session(&mut *session)
                .await
                .map_err(|e| read_error(&ns, &e))?;
            while cursor
                .advance(session)
                .await
                .map_err(|e| read_error(&ns, &e))?
            {
                take(cursor.current().as_bytes(), out, &mut n, cancel)?;
            }
        }
        None => {
            let mut cursor = find.await.map_err(|e| read_error(&ns, &e))?;
            while cursor.advance().await.map_err(|e| read_error(&ns, &e))? {
                take(cursor.current().as_bytes(), out, &mut n, cancel)?;
            }
        }
    }
    Ok(n)
}

/// Appends one document to the spool and counts it; looks at the stop flag
/// every 1024 documents.
fn take(
    raw: &[u8],
    out: &mut impl Write,
    n: &mut Drained,
    cancel: Option<&AtomicBool>,
) -> Result<(), MongoError> {
    out.write_all(raw)
        .map_err(io("cannot write the dump's temporary file"))?;
    n.documents += 1;
    n.bytes += raw.len() as u64;
    if n.documents.is_multiple_of(1024) && cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(MongoError::Cancelled);
    }
    Ok(())
}

/// One collection as `listCollections` describes it.
struct CollInfo {
    name: String,
    kind: CollectionKind,
    options: Document,
    uuid: Option<Bson>,
}

async fn list_collections(db: &Database) -> Result<Vec<CollInfo>, MongoError> {
    let what = format!("the collection list of {}", db.name());
    let mut cursor = db
        .run_cursor_command(doc! { "listCollections": 1 })
        .await
        .map_err(|e| read_error(&what, &e))?;
    let mut out = Vec::new();
    while cursor.advance().await.map_err(|e| read_error(&what, &e))? {
        let spec: Document = cursor
            .deserialize_current()
            .map_err(|e| read_error(&what, &e))?;
        let Ok(name) = spec.get_str("name") else {
            continue;
        };
        out.push(CollInfo {
            name: name.to_owned(),
            kind: CollectionKind::from_type(spec.get_str("type").unwrap_or("collection")),
            options: spec.get_document("options").cloned().unwrap_or_default(),
            uuid: spec
                .get_document("info")
                .ok()
                .and_then(|i| i.get("uuid").cloned()),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

async fn databases(
    client: &Client,
    default_db: Option<&str>,
    sel: &Selection,
) -> Result<Vec<String>, MongoError> {
    if !sel.databases.is_empty() {
        return Ok(sel.databases.clone());
    }
    if let Some(db) = default_db {
        return Ok(vec![db.to_owned()]);
    }
    let mut names = client
        .list_database_names()
        .await
        .map_err(|e| read_error("the list of databases", &e))?;
    names.retain(|n| !SYSTEM_DATABASES.contains(&n.as_str()));
    names.sort();
    Ok(names)
}

fn is_snapshot_unsupported(e: &MongoError) -> bool {
    matches!(e, MongoError::Read { detail, .. } if detail.to_ascii_lowercase().contains("snapshot"))
}

/// A dump that is ready to be written: connected, its snapshot session
/// open and its point in time fixed (one read done in it), the databases
/// and collections listed. Its cluster time is known before any byte of
/// the archive is written, so the archive's signature can name it.
pub struct Prepared {
    rt: tokio::runtime::Runtime,
    job: WriteJob,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared({})", self.job.shown_uri)
    }
}

/// Connects, opens the snapshot session, lists what is to be dumped and
/// fixes the snapshot's point in time.
pub fn prepare(uri: &Secret, sel: &Selection) -> Result<Prepared, MongoError> {
    let rt = super::runtime()?;
    let started = chrono::Utc::now();
    let shown_uri = secret::redact_uri(uri.expose());
    tracing::info!(uri = %shown_uri, "database dump started");
    let (client, server_version, mut session, mut note, plan) = rt.block_on(async {
        let (client, options) = connect(uri).await?;
        let (server_version, session, note) = open_session(&client).await?;
        let dbs = databases(&client, options.default_database.as_deref(), sel).await?;
        let mut plan = Vec::new();
        for db_name in dbs {
            let colls: Vec<CollInfo> = list_collections(&client.database(&db_name))
                .await?
                .into_iter()
                .filter(|info| !info.name.starts_with("system.") && sel.wants(&db_name, &info.name))
                .collect();
            plan.push((db_name, colls));
        }
        Ok::<_, MongoError>((client, server_version, session, note, plan))
    })?;
    // The snapshot's time is the server's at the session's first read: of
    // the first collection, or, with none yet, of a name nothing has (an
    // empty dump still has a point in time a restore can continue from).
    if let Some(s) = session.as_mut() {
        let first = plan.iter().find_map(|(db, colls)| {
            colls
                .iter()
                .find(|c| c.kind == CollectionKind::Collection)
                .map(|c| (db.clone(), c.name.clone()))
        });
        let first = first.or_else(|| {
            plan.first()
                .map(|(db, _)| (db.clone(), "cofre_snapshot_point".to_owned()))
        });
        if let Some((db, coll)) = first {
            let read = rt.block_on(async {
                client
                    .database(&db)
                    .collection::<Document>(&coll)
                    .find_one(doc! {})
                    .session(&mut *s)
                    .await
                    .map_err(|e| read_error(&format!("{db}.{coll}"), &e))
            });
            match read {
                Ok(_) => {}
                Err(e) if is_snapshot_unsupported(&e) => {
                    tracing::warn!(
                        "snapshot reads are refused ({e}); collections are read one after another"
                    );
                    note = Some(format!(
                        "the server refused snapshot reads; collections were read one after another ({e})"
                    ));
                    session = None;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Prepared {
        rt,
        job: WriteJob {
            client,
            shown_uri,
            started,
            server_version,
            session,
            note,
            plan,
        },
    })
}

impl Prepared {
    /// The cluster time of the snapshot (`T,I`), when the dump is one
    /// point in time.
    pub fn cluster_time(&self) -> Option<String> {
        if self.job.note.is_some() {
            return None;
        }
        self.job
            .session
            .as_ref()
            .and_then(|s| s.snapshot_time())
            .map(|t| format!("{},{}", t.time, t.increment))
    }

    /// Dumps what was listed into the archive and returns the manifest's
    /// MongoDB section. `dumpdirs`: give its directories GNU dumpdir
    /// records (a differential's dump).
    #[tracing::instrument(name = "dump", skip_all)]
    pub fn write(
        self,
        aw: &mut ArchiveWriter,
        spool_dir: &Path,
        cancel: Option<&AtomicBool>,
        dumpdirs: bool,
    ) -> Result<MongoSection, MongoError> {
        let Prepared { rt, job } = self;
        rt.block_on(write_async(job, aw, spool_dir, cancel, dumpdirs))
    }
}

/// What the dump's writing takes from its preparation.
struct WriteJob {
    client: Client,
    shown_uri: String,
    started: chrono::DateTime<chrono::Utc>,
    server_version: String,
    session: Option<ClientSession>,
    note: Option<String>,
    plan: Vec<(String, Vec<CollInfo>)>,
}

async fn write_async(
    job: WriteJob,
    aw: &mut ArchiveWriter,
    spool_dir: &Path,
    cancel: Option<&AtomicBool>,
    dumpdirs: bool,
) -> Result<MongoSection, MongoError> {
    let WriteJob {
        client,
        shown_uri,
        started,
        server_version,
        session,
        note,
        plan,
    } = job;
    let dbs: Vec<String> = plan.iter().map(|(d, _)| d.clone()).collect();
    let mtime = started.timestamp();
    let mut dumper = Dumper {
        aw,
        spool_dir,
        cancel,
        session,
        note,
        dir_meta: StreamMeta { mode: 0o755, mtime },
        file_meta: StreamMeta { mode: 0o644, mtime },
    };
    // A differential is extracted over its full (`tar -g`): the dumpdir
    // records make tar remove what the full dumped and this one did not.
    let record =
        dumpdirs.then(|| crate::archive::dumpdir::record(dbs.iter().map(|d| (b'D', d.as_bytes()))));
    dumper.add_dir(MONGO_PREFIX.trim_end_matches('/'), record.as_deref())?;
    let mut records = Vec::new();
    for (db_name, colls) in plan {
        let db = client.database(&db_name);
        let record = dumpdirs.then(|| {
            let mut files: Vec<String> = Vec::new();
            for info in &colls {
                let file = escape_name(&info.name);
                if info.kind != CollectionKind::View {
                    files.push(format!("{file}.bson"));
                }
                files.push(format!("{file}.metadata.json"));
            }
            files.sort();
            crate::archive::dumpdir::record(files.iter().map(|f| (b'Y', f.as_bytes())))
        });
        dumper.add_dir(&format!("{MONGO_PREFIX}{db_name}"), record.as_deref())?;
        for info in colls {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(MongoError::Cancelled);
            }
            records.push(dumper.collection(&db, &info).await?);
        }
    }
    let cluster_time = dumper
        .session
        .as_ref()
        .and_then(|s| s.snapshot_time())
        .map(|t| format!("{},{}", t.time, t.increment));
    let consistent = dumper.session.is_some() && dumper.note.is_none();
    tracing::info!(
        collections = records.len(),
        documents = records.iter().map(|r| r.documents).sum::<u64>(),
        consistent,
        "database dump finished"
    );
    Ok(MongoSection {
        uri: shown_uri,
        server_version,
        consistent,
        cluster_time,
        note: dumper.note,
        databases: dbs,
        collections: records,
    })
}

/// The server's version, a snapshot session when it is a replica set, and
/// a note saying why the dump is not one point in time when it is not.
async fn open_session(
    client: &Client,
) -> Result<(String, Option<ClientSession>, Option<String>), MongoError> {
    let admin = client.database("admin");
    let hello = admin
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(|e| read_error("the server's status", &e))?;
    let server_version = admin
        .run_command(doc! { "buildInfo": 1 })
        .await
        .ok()
        .and_then(|b| b.get_str("version").ok().map(str::to_owned))
        .unwrap_or_default();
    if hello.get_str("setName").is_err() {
        let note =
            "standalone server: collections were read one after another, not at one point in time";
        return Ok((server_version, None, Some(note.to_owned())));
    }
    match client.start_session().snapshot(true).await {
        Ok(s) => Ok((server_version, Some(s), None)),
        Err(e) => {
            tracing::warn!(
                "snapshot sessions are not available ({}); the dump is not one point in time",
                super::short(&e)
            );
            Ok((server_version, None, None))
        }
    }
}

/// Writes collections into the archive, one after another.
struct Dumper<'a> {
    aw: &'a mut ArchiveWriter,
    spool_dir: &'a Path,
    cancel: Option<&'a AtomicBool>,
    session: Option<ClientSession>,
    note: Option<String>,
    dir_meta: StreamMeta,
    file_meta: StreamMeta,
}

fn write_err(e: std::io::Error) -> MongoError {
    MongoError::Io {
        what: "cannot write the database dump into the archive".into(),
        source: e,
    }
}

impl Dumper<'_> {
    fn add_dir(&mut self, path: &str, dumpdir: Option<&[u8]>) -> Result<(), MongoError> {
        self.aw
            .add_synthetic_dir(path.as_bytes(), self.dir_meta, dumpdir)
            .map_err(write_err)
    }

    /// One collection: its documents (a view has none) and its metadata.
    async fn collection(
        &mut self,
        db: &Database,
        info: &CollInfo,
    ) -> Result<CollectionRecord, MongoError> {
        let db_dir = format!("{MONGO_PREFIX}{}", db.name());
        let file = escape_name(&info.name);
        let bson_path = format!("{db_dir}/{file}.bson");
        let meta_path = format!("{db_dir}/{file}.metadata.json");
        let ns = format!("{}.{}", db.name(), info.name);
        let (indexes, drained, hash) = if info.kind == CollectionKind::View {
            (Vec::new(), Drained::default(), None)
        } else {
            let indexes = list_indexes(db, &info.name).await?;
            // Time-series data lives in its buckets collection; mongodump
            // dumps the buckets, and so does this.
            let source = if info.kind == CollectionKind::Timeseries {
                format!("system.buckets.{}", info.name)
            } else {
                info.name.clone()
            };
            let (mut spool, drained) = self.spool(db, &source, &ns).await?;
            let hash = self
                .aw
                .add_stream(
                    bson_path.as_bytes(),
                    &mut spool,
                    drained.bytes,
                    self.file_meta,
                )
                .map_err(write_err)?;
            (indexes, drained, Some(hash))
        };
        let json = metadata::to_json(
            &info.options,
            &indexes,
            info.uuid.as_ref(),
            &info.name,
            info.kind,
        );
        self.aw
            .add_stream(
                meta_path.as_bytes(),
                json.as_bytes(),
                json.len() as u64,
                self.file_meta,
            )
            .map_err(write_err)?;
        tracing::info!(
            collection = %ns,
            kind = info.kind.as_str(),
            documents = drained.documents,
            bytes = drained.bytes,
            "dumped {ns}"
        );
        let totals = self.aw.totals_mut();
        totals.collections += 1;
        totals.documents += drained.documents;
        totals.mongo_bytes += drained.bytes;
        Ok(CollectionRecord {
            db: db.name().to_owned(),
            name: info.name.clone(),
            kind: info.kind,
            documents: drained.documents,
            bytes: drained.bytes,
            hash: hash.unwrap_or_default(),
            bson_path: if info.kind == CollectionKind::View {
                String::new()
            } else {
                bson_path
            },
            metadata_path: meta_path,
        })
    }

    /// Drains a collection into an unnamed temporary file in `BACKUP_DIR`
    /// (memory does not grow with it), in the snapshot session when there
    /// is one; a server that refuses snapshot reads is read without.
    async fn spool(
        &mut self,
        db: &Database,
        source: &str,
        ns: &str,
    ) -> Result<(File, Drained), MongoError> {
        let spool = tempfile::tempfile_in(self.spool_dir)
            .map_err(io("cannot create the dump's temporary file in BACKUP_DIR"))?;
        let mut out = BufWriter::with_capacity(1 << 20, spool);
        let result =
            drain_collection(db, source, self.session.as_mut(), &mut out, self.cancel).await;
        let drained = match result {
            Err(e) if self.session.is_some() && is_snapshot_unsupported(&e) => {
                tracing::warn!("{ns}: snapshot reads are refused ({e}); reading without one");
                self.session = None;
                self.note = Some(format!(
                    "the server refused snapshot reads; collections were read one after another ({e})"
                ));
                out.get_mut()
                    .set_len(0)
                    .map_err(io("cannot reset the dump's temporary file"))?;
                out.seek(SeekFrom::Start(0))
                    .map_err(io("cannot reset the dump's temporary file"))?;
                drain_collection(db, source, None, &mut out, self.cancel).await?
            }
            other => other?,
        };
        let mut spool: File = out
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io("cannot write the dump's temporary file"))?;
        spool
            .seek(SeekFrom::Start(0))
            .map_err(io("cannot read the dump's temporary file"))?;
        Ok((spool, drained))
    }
}
