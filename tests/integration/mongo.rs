//! The database part, on a real MongoDB-protocol server (SecantusDB, started
//! by `scripts/test`): every BSON type the server keeps survives byte for
//! byte; indexes, options, capped collections and views come back; real
//! mongodump output restores; every failure is one clear sentence.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::{
    self, Bson, Document, RawDocumentBuf, doc, oid::ObjectId, spec::BinarySubtype,
};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use crate::harness::*;

/// The test server, or `None` (with a printed reason) when the tests run
/// outside `scripts/test`. Through `scripts/test`, a missing server fails.
pub struct Mongo {
    host: String,
    rt: tokio::runtime::Runtime,
    pub client: Client,
}

pub fn mongo() -> Option<Mongo> {
    let Ok(uri) = std::env::var("COFRE_TEST_MONGODB_URI") else {
        assert!(
            std::env::var("COFRE_TEST_REQUIRE_MONGODB").is_err(),
            "COFRE_TEST_MONGODB_URI is not set but scripts/test requires the server"
        );
        eprintln!("skipped: no test MongoDB server (run scripts/test, which starts one)");
        return None;
    };
    Some(Mongo::connect(&uri))
}

impl Mongo {
    pub fn connect(uri: &str) -> Mongo {
        let host = uri
            .trim_start_matches("mongodb://")
            .split(['/', '?'])
            .next()
            .unwrap()
            .to_owned();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(async {
            let opts = ClientOptions::parse(uri).await.unwrap();
            Client::with_options(opts).unwrap()
        });
        Mongo { host, rt, client }
    }

    /// A URI for database `db` (empty: none), with extra options.
    pub fn uri(&self, db: &str, extra: &str) -> String {
        let sep = if extra.is_empty() { "" } else { "&" };
        format!(
            "mongodb://{}/{db}?directConnection=true{sep}{extra}",
            self.host
        )
    }

    pub fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn db(&self, name: &str) -> Database {
        self.client.database(name)
    }

    /// Every document of a collection as raw bytes, in `_id` order.
    pub fn raw_docs(&self, db: &str, coll: &str) -> Vec<Vec<u8>> {
        self.run(async {
            let mut cursor = self
                .db(db)
                .collection::<RawDocumentBuf>(coll)
                .find(doc! {})
                .sort(doc! { "_id": 1 })
                .await
                .unwrap();
            let mut out = Vec::new();
            while cursor.advance().await.unwrap() {
                out.push(cursor.current().as_bytes().to_vec());
            }
            out
        })
    }

    /// Index specs by name, without the server-added `ns`.
    pub fn indexes(&self, db: &str, coll: &str) -> BTreeMap<String, Document> {
        self.run(async {
            let mut cursor = self
                .db(db)
                .run_cursor_command(doc! { "listIndexes": coll })
                .await
                .unwrap();
            let mut out = BTreeMap::new();
            while cursor.advance().await.unwrap() {
                let mut d: Document = cursor.deserialize_current().unwrap();
                d.remove("ns");
                out.insert(d.get_str("name").unwrap().to_owned(), d);
            }
            out
        })
    }

    /// Collection name → (type, options).
    pub fn collections(&self, db: &str) -> BTreeMap<String, (String, Document)> {
        self.run(async {
            let mut cursor = self
                .db(db)
                .run_cursor_command(doc! { "listCollections": 1 })
                .await
                .unwrap();
            let mut out = BTreeMap::new();
            while cursor.advance().await.unwrap() {
                let d: Document = cursor.deserialize_current().unwrap();
                let name = d.get_str("name").unwrap().to_owned();
                if name.starts_with("system.") {
                    continue;
                }
                out.insert(
                    name,
                    (
                        d.get_str("type").unwrap_or("collection").to_owned(),
                        d.get_document("options").cloned().unwrap_or_default(),
                    ),
                );
            }
            out
        })
    }

    pub fn drop_db(&self, db: &str) {
        self.run(async { self.db(db).drop().await.unwrap() });
    }
}

/// A database name unique to this test run.
pub fn unique(name: &str) -> String {
    format!("{name}_{}", std::process::id())
}

fn ext(json: serde_json::Value) -> Bson {
    Bson::try_from(json).unwrap()
}

/// A document using every BSON type the server keeps, fields not in
/// alphabetical order.
fn every_type(i: i32) -> Document {
    let bin = |subtype, bytes: &[u8]| {
        Bson::Binary(bson::Binary {
            subtype,
            bytes: bytes.to_vec(),
        })
    };
    doc! {
        "_id": ObjectId::new(),
        "zulu": i,
        "alpha": "first field after zulu",
        "int32": 42i32,
        "int64_above_2_53": 9_007_199_254_740_993i64,
        "int64_min": i64::MIN,
        "double": 3.25f64,
        "nan": f64::NAN,
        "negative_zero": -0.0f64,
        "infinity": f64::INFINITY,
        "minus_infinity": f64::NEG_INFINITY,
        "decimal": ext(serde_json::json!({"$numberDecimal": "1234.5678901234567890123456789012"})),
        "decimal_nan": ext(serde_json::json!({"$numberDecimal": "NaN"})),
        "date": bson::DateTime::from_millis(1_764_201_600_123),
        "date_before_1970": bson::DateTime::from_millis(-86_400_000_123),
        "bin_generic": bin(BinarySubtype::Generic, b"\x00\x01\x02\xff"),
        "bin_function": bin(BinarySubtype::Function, b"fn"),
        "bin_uuid": bin(BinarySubtype::Uuid, &[7u8; 16]),
        "bin_md5": bin(BinarySubtype::Md5, &[9u8; 16]),
        "bin_user": bin(BinarySubtype::UserDefined(0x80), b"user"),
        "regex": Bson::RegularExpression(bson::Regex { pattern: "^a.*b$".into(), options: "imx".into() }),
        "timestamp": Bson::Timestamp(bson::Timestamp { time: 1_764_201_600, increment: 7 }),
        "min": Bson::MinKey,
        "max": Bson::MaxKey,
        "code": Bson::JavaScriptCode("function () { return 1; }".into()),
        "code_with_scope": Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
            code: "function () { return x; }".into(),
            scope: doc! { "x": 1 },
        }),
        "null": Bson::Null,
        "yes": true,
        "no": false,
        "nested": { "b": { "a": [1, { "z": "y" }, [2, 3.5, "four"], []] }, "empty": {} },
        "unicode": "ação 名前 🗄",
        "long_string": "x".repeat(200_000 + i as usize),
    }
}

/// A database with several collections, a capped one, a view, a
/// validator, and unique / compound / TTL / partial / collation indexes.
pub fn populate(m: &Mongo, db_name: &str, big: usize) {
    let db = m.db(db_name);
    m.run(async {
        let everything = db.collection::<Document>("everything");
        everything.insert_many((0..5).map(every_type)).await.unwrap();
        // A name that is not safe in a file name (percent-encoded in the dump).
        db.collection::<Document>("cafés/☕ menu")
            .insert_one(doc! { "item": "espresso" })
            .await
            .unwrap();

        db.run_command(doc! { "create": "capped", "capped": true, "size": 1_048_576i64, "max": 500i64 })
            .await
            .unwrap();
        db.collection::<Document>("capped")
            .insert_many((0..100).map(|i| doc! { "n": i, "msg": format!("line {i}") }))
            .await
            .unwrap();

        db.run_command(doc! {
            "create": "validated",
            "validator": { "age": { "$gte": 0 } },
            "validationLevel": "moderate",
            "validationAction": "error",
        })
        .await
        .unwrap();
        db.collection::<Document>("validated")
            .insert_one(doc! { "age": 30 })
            .await
            .unwrap();

        let people = db.collection::<Document>("people");
        people
            .insert_many((0..50).map(|i| {
                doc! {
                    "email": format!("p{i}@example.com"),
                    "last": format!("L{}", i % 7),
                    "first": format!("F{i}"),
                    "age": i,
                    "createdAt": bson::DateTime::from_millis(1_764_201_600_000 + i64::from(i)),
                    "name": if i % 2 == 0 { "Élise" } else { "elise" },
                }
            }))
            .await
            .unwrap();
        db.run_command(doc! {
            "createIndexes": "people",
            "indexes": [
                { "key": { "email": 1 }, "name": "email_unique", "unique": true },
                { "key": { "last": 1, "first": -1 }, "name": "last_first" },
                // Far enough that the server's TTL monitor deletes nothing during the test.
                { "key": { "createdAt": 1 }, "name": "ttl", "expireAfterSeconds": 2_000_000_000 },
                { "key": { "age": 1 }, "name": "adults_only", "partialFilterExpression": { "age": { "$gte": 18 } } },
                { "key": { "name": 1 }, "name": "name_fr", "collation": { "locale": "fr", "strength": 1 } },
            ],
        })
        .await
        .unwrap();
        db.run_command(doc! {
            "create": "adults",
            "viewOn": "people",
            "pipeline": [ { "$match": { "age": { "$gte": 18 } } }, { "$project": { "email": 1 } } ],
        })
        .await
        .unwrap();

        if big > 0 {
            let coll = db.collection::<Document>("big");
            let mut start = 0;
            while start < big {
                let end = (start + 20_000).min(big);
                coll.insert_many((start..end).map(|i| doc! { "i": i as i64, "s": format!("document number {i}"), "f": i as f64 / 3.0 }))
                    .await
                    .unwrap();
                start = end;
            }
        }
    });
}

/// Everything the comparison looks at.
pub type DbState = (
    BTreeMap<String, (String, Document)>,
    BTreeMap<String, Vec<Vec<u8>>>,
    BTreeMap<String, BTreeMap<String, Document>>,
);

pub fn state(m: &Mongo, db: &str) -> DbState {
    let colls = m.collections(db);
    let mut docs = BTreeMap::new();
    let mut idx = BTreeMap::new();
    for (name, (kind, _)) in &colls {
        if kind == "view" {
            continue;
        }
        docs.insert(name.clone(), m.raw_docs(db, name));
        idx.insert(name.clone(), m.indexes(db, name));
    }
    (colls, docs, idx)
}

/// Asserts two database states are equal, naming the first difference
/// briefly (documents are compared byte for byte, not printed).
pub fn assert_same_db(before: &DbState, after: &DbState) {
    assert_eq!(
        before.0.keys().collect::<Vec<_>>(),
        after.0.keys().collect::<Vec<_>>(),
        "collection names"
    );
    for (name, b) in &before.0 {
        assert_eq!(b, &after.0[name], "{name}: type and options");
    }
    for (name, docs) in &before.1 {
        let got = &after.1[name];
        assert_eq!(docs.len(), got.len(), "{name}: document count");
        if let Some(i) = (0..docs.len()).find(|&i| docs[i] != got[i]) {
            let show = |d: &[u8]| {
                format!(
                    "{:?}",
                    RawDocumentBuf::from_bytes(d.to_vec())
                        .unwrap()
                        .to_document()
                        .unwrap()
                )
            };
            panic!(
                "{name}: document {i} differs:\n before {}\n after  {}",
                show(&docs[i]),
                show(&got[i])
            );
        }
    }
    for (name, b) in &before.2 {
        assert_eq!(b, &after.2[name], "{name}: indexes");
    }
}

fn manifest_of(env: &Env, archive: &Path) -> serde_json::Value {
    let out = sh(&format!(
        "age -d -i '{}' '{}' | tar -xzOf - cofre-manifest.json",
        env.identity().display(),
        archive.display()
    ));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_type_indexes_options_and_100k_documents_round_trip() {
    let Some(m) = mongo() else { return };
    let db = unique("roundtrip");
    m.drop_db(&db);
    populate(&m, &db, 100_000);
    let before = state(&m, &db);
    assert_eq!(before.1["big"].len(), 100_000);

    let mut env = Env::with_tree();
    env.set("MONGODB_URI", m.uri(&db, ""));
    env.ok(["backup"]);
    let archive = env.archive();
    let manifest = manifest_of(&env, &archive);
    let section = &manifest["mongodb"];
    assert_eq!(section["databases"], serde_json::json!([db]));
    assert_eq!(
        section["consistent"], true,
        "a replica set is dumped at one cluster time: {section}"
    );
    assert!(section["cluster_time"].is_string(), "{section}");
    let colls = section["collections"].as_array().unwrap();
    let by_name = |n: &str| colls.iter().find(|c| c["name"] == n).unwrap();
    assert_eq!(by_name("big")["documents"], 100_000);
    assert_eq!(by_name("adults")["type"], "view");
    assert_eq!(
        manifest["totals"]["documents"].as_u64().unwrap(),
        100_000 + 5 + 1 + 100 + 1 + 50
    );

    // The dump is mongodump's layout: metadata files parse as mongodump's do.
    let listing = sh(&format!(
        "age -d -i '{}' '{}' | tar -tzf -",
        env.identity().display(),
        archive.display()
    ));
    let names = String::from_utf8_lossy(&listing.stdout).into_owned();
    for f in [
        "big.bson",
        "big.metadata.json",
        "people.bson",
        "capped.metadata.json",
        "adults.metadata.json",
        "caf%C3%A9s%2F%E2%98%95+menu.bson",
    ] {
        assert!(
            names.contains(&format!("mongodb/{db}/{f}")),
            "{f} missing:\n{names}"
        );
    }
    assert!(
        !names.contains("adults.bson"),
        "a view has no documents file"
    );

    m.drop_db(&db);
    let out = env.ok(["restore", "latest", "--mongo-only"]);
    assert!(
        stdout(&out).contains(&format!("restored collection {db}.big: 100000 documents")),
        "{}",
        text(&out)
    );
    assert_same_db(&before, &state(&m, &db));
    // The view works again.
    let adults = m.run(async {
        m.db(&db)
            .collection::<Document>("adults")
            .count_documents(doc! {})
            .await
            .unwrap()
    });
    assert_eq!(adults, 32);
    m.drop_db(&db);
}

#[test]
fn existing_collections_are_left_alone_unless_drop() {
    let Some(m) = mongo() else { return };
    let db = unique("existing");
    m.drop_db(&db);
    populate(&m, &db, 0);
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    env.set("MONGODB_URI", m.uri(&db, ""));
    env.ok(["backup"]);
    // Change the live data after the backup.
    m.run(async {
        let d = m.db(&db);
        d.collection::<Document>("people")
            .insert_one(doc! { "email": "new@example.com" })
            .await
            .unwrap();
        d.collection::<Document>("capped").drop().await.unwrap();
    });
    let out = env.run(["restore", "latest", "--mongo-only"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "some collections were left alone: {}",
        text(&out)
    );
    let o = stdout(&out);
    assert!(
        o.contains(&format!("left alone collection {db}.people")),
        "{o}"
    );
    assert!(
        o.contains(&format!("restored collection {db}.capped: 100 documents")),
        "{o}"
    );
    assert_eq!(
        m.raw_docs(&db, "people").len(),
        51,
        "untouched without --drop"
    );

    // A dry run says what --drop would do and changes nothing.
    let o = stdout(&env.ok(["restore", "latest", "--mongo-only", "--drop", "--dry-run"]));
    assert!(
        o.contains(&format!(
            "would restore collection {db}.people: 50 documents (exists: would be replaced)"
        )),
        "{o}"
    );
    assert_eq!(m.raw_docs(&db, "people").len(), 51);

    env.ok(["restore", "latest", "--mongo-only", "--drop"]);
    assert_eq!(m.raw_docs(&db, "people").len(), 50, "replaced with --drop");
    // No temporary collection is left behind.
    assert!(
        m.collections(&db)
            .keys()
            .all(|n| !n.starts_with("cofre_restore"))
    );

    // Into another database.
    let other = unique("existing_copy");
    m.drop_db(&other);
    env.ok(["restore", "latest", "--mongo-only", "--to-db", &other]);
    assert_eq!(m.raw_docs(&other, "people"), m.raw_docs(&db, "people"));
    m.drop_db(&db);
    m.drop_db(&other);
}

#[test]
fn files_and_database_restore_together() {
    let Some(m) = mongo() else { return };
    let db = unique("together");
    m.drop_db(&db);
    populate(&m, &db, 0);
    let before = state(&m, &db);
    let mut env = Env::with_tree();
    env.set("MONGODB_URI", m.uri(&db, ""));
    env.ok(["backup"]);
    m.drop_db(&db);
    let target = env.path("restored");
    env.ok(argv!["restore", "latest", "--to", target]);
    assert_same(
        &snapshot(&env.project, excluded_by_default),
        &snapshot(&target, |_| false),
    );
    assert_same_db(&before, &state(&m, &db));
    // --files-only leaves the database alone.
    m.drop_db(&db);
    env.ok(argv![
        "restore",
        "latest",
        "--files-only",
        "--to",
        env.path("r2"),
    ]);
    assert!(m.collections(&db).is_empty());
    m.drop_db(&db);
}

/// A newcomer's first day: the application's database has no collection
/// yet. Its archive restores (nothing, saying so), drills and verifies.
#[test]
fn a_database_with_no_collections_yet_backs_up_restores_and_drills() {
    let Some(m) = mongo() else { return };
    let db = unique("empty");
    m.drop_db(&db);
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a\n").unwrap();
    env.set("MONGODB_URI", m.uri(&db, ""));
    env.ok(["backup"]);
    let said = "the dump holds no collections";
    for args in [
        &["restore", "latest", "--mongo-only"][..],
        &["restore", "latest", "--mongo-only", "--dry-run"],
    ] {
        let out = env.ok(args);
        assert!(stdout(&out).contains(said), "{args:?}: {}", text(&out));
    }
    assert!(m.collections(&db).is_empty());
    let drill = env.ok(["drill"]);
    assert!(text(&drill).contains("drill passed"), "{}", text(&drill));
    env.ok(["verify"]);
    // A directory a person names is another matter: empty, it is refused.
    let empty = env.path("empty-dump");
    fs::create_dir_all(&empty).unwrap();
    let msg = env.fails(argv!["restore", "--mongo-dir", empty], 1);
    assert!(msg.contains("holds no collections"), "{msg}");
}

/// The mongodump fixtures kept in the repository.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mongodump")
}

#[test]
fn dumps_written_by_mongodump_restore() {
    let Some(m) = mongo() else { return };
    let fx = fixtures();
    // (dump root, database in it, collection, documents, index names besides _id_)
    let cases: &[(&str, &str, &str, usize, &[&str])] = &[
        ("coll_with_index", "test", "foo", 1, &["f_1"]),
        ("coll_with_ttl_index", "test", "foo", 1, &["f_1"]),
        (
            "indextestdump",
            "indextest",
            "test_collection",
            0,
            &["a_1_b_true"],
        ),
        ("specialcharacter", "db1", "cafés", 1, &[]),
    ];
    let env = Env::new();
    for (root, _, coll, _, index_names) in cases {
        let target_db = unique(&format!("fx_{root}"));
        m.drop_db(&target_db);
        let dir = fx.join(root);
        let uri = m.uri("", "");
        let out = env.ok(argv![
            "restore",
            "--mongo-dir",
            dir,
            "--mongo-uri",
            &uri,
            "--to-db",
            &target_db,
        ]);
        assert!(
            stdout(&out).contains(&format!("restored collection {target_db}.{coll}")),
            "{}",
            text(&out)
        );
        let docs = m.raw_docs(&target_db, coll);
        let file_docs = count_bson(
            &dir.join(cases.iter().find(|c| c.0 == *root).unwrap().1)
                .join(format!("{}.bson", cofre::parts::escape_name(coll))),
        );
        assert_eq!(docs.len(), file_docs, "{root}: documents");
        if *root != "indextestdump" {
            assert!(!docs.is_empty());
        }
        let idx = m.indexes(&target_db, coll);
        for name in *index_names {
            assert!(
                idx.contains_key(*name),
                "{root}: index {name} missing: {idx:?}"
            );
        }
        if *root == "coll_with_ttl_index" {
            assert_eq!(
                idx["f_1"].get_i32("expireAfterSeconds").ok().or(idx["f_1"]
                    .get_i64("expireAfterSeconds")
                    .ok()
                    .map(|v| v as i32)),
                Some(1000)
            );
        }
        m.drop_db(&target_db);
    }
}

fn count_bson(path: &Path) -> usize {
    let bytes = fs::read(path).unwrap();
    let mut n = 0;
    let mut at = 0;
    while at + 4 <= bytes.len() {
        at += i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        n += 1;
    }
    n
}

#[test]
fn unreachable_server_fails_fast_without_an_archive_or_the_password() {
    let mut env = Env::with_tree();
    env.set(
        "MONGODB_URI",
        "mongodb://app:S3cr3t-P4ss@127.0.0.1:9/app?serverSelectionTimeoutMS=1500",
    );
    let started = Instant::now();
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("cannot reach MongoDB") && all.contains("is MongoDB running"),
        "{all}"
    );
    assert!(!all.contains("S3cr3t-P4ss"), "{all}");
    assert!(
        all.contains("app:***@"),
        "the URI is shown, redacted: {all}"
    );
    assert!(env.archives().is_empty());
    assert!(started.elapsed() < Duration::from_secs(30));
    // The failure is recorded for `status`.
    let state = fs::read_to_string(env.backups.join(".cofre-state.json")).unwrap();
    assert!(
        state.contains("cannot reach MongoDB") && !state.contains("S3cr3t-P4ss"),
        "{state}"
    );
}

/// Arms a failure on the test server for commands of one application name.
fn fail_point(m: &Mongo, app: &str, data: Document) {
    let mut data = data;
    data.insert("appName", app);
    m.run(async {
        m.db("admin")
            .run_command(
                doc! { "configureFailPoint": "failCommand", "mode": { "times": 1 }, "data": data },
            )
            .await
            .unwrap();
    });
}

#[test]
fn unreadable_collection_and_server_going_away_fail_cleanly() {
    let Some(m) = mongo() else { return };
    let db = unique("failing");
    m.drop_db(&db);
    // More than one cursor batch, so the dump issues getMore.
    populate(&m, &db, 10_000);
    for (app, data, expect) in [
        (
            "cofre-unauthorized",
            doc! { "failCommands": ["find"], "errorCode": 13 },
            "check that the user may read it",
        ),
        (
            "cofre-going-away",
            doc! { "failCommands": ["getMore"], "closeConnection": true },
            "the connection to MongoDB broke",
        ),
    ] {
        let mut env = Env::with_tree();
        env.set("MONGODB_URI", m.uri(&db, &format!("appName={app}")));
        fail_point(&m, app, data);
        let msg = env.fails(["backup"], 1);
        assert!(msg.contains(expect), "{app}: {msg}");
        assert!(env.archives().is_empty(), "{app}: no archive may be kept");
        let temps = names_starting(&env.backups, ".cofre-tmp");
        assert!(temps.is_empty(), "{app}: {temps:?}");
    }
    m.drop_db(&db);
}

/// A server of our own, stopped when dropped.
pub struct OwnServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a SecantusDB of our own and waits until it answers.
pub fn start_server(bin: &str, storage: &std::ffi::OsStr, port: u16, flags: &[&str]) -> Child {
    let child = Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--storage-path",
        ])
        .arg(storage)
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the test server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// The SecantusDB binary, to start servers of our own.
pub fn secantusd() -> Option<String> {
    let Ok(bin) = std::env::var("COFRE_TEST_SECANTUSD") else {
        assert!(
            std::env::var("COFRE_TEST_REQUIRE_MONGODB").is_err(),
            "COFRE_TEST_SECANTUSD is not set"
        );
        eprintln!("skipped: no SecantusDB binary (run scripts/test)");
        return None;
    };
    Some(bin)
}

/// A SecantusDB of the test's own, in memory, started with `flags`.
pub fn own_server_with(flags: &[&str]) -> Option<OwnServer> {
    let bin = secantusd()?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = start_server(&bin, std::ffi::OsStr::new(":memory:"), port, flags);
    Some(OwnServer {
        child,
        port,
        _dir: dir,
    })
}

/// A SecantusDB of the test's own (for a second server), in memory.
pub fn own_server() -> Option<OwnServer> {
    let bin = secantusd()?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = start_server(&bin, std::ffi::OsStr::new(":memory:"), port, &[]);
    Some(OwnServer {
        child,
        port,
        _dir: dir,
    })
}

impl OwnServer {
    /// A URI for database `db` on this server (empty: none).
    pub fn uri(&self, db: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/{db}?directConnection=true",
            self.port
        )
    }

    /// A client of this server.
    pub fn client(&self) -> Mongo {
        Mongo::connect(&self.uri(""))
    }
}

/// A password with every character a URI reserves.
const SPECIAL_PASS: &str = "Sp/ec?i#al:P@ss%1";

pub fn auth_server() -> Option<OwnServer> {
    let bin = secantusd()?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Provision a user without auth, then restart with auth on the same storage.
    let mut first = start_server(&bin, dir.path().as_os_str(), port, &[]);
    let m = Mongo::connect(&format!(
        "mongodb://127.0.0.1:{port}/?directConnection=true"
    ));
    m.run(async {
        m.db("admin")
            .run_command(
                doc! { "createUser": "backup", "pwd": "Right-Pass-123", "roles": ["root"] },
            )
            .await
            .unwrap();
        m.db("admin")
            .run_command(doc! { "createUser": "special", "pwd": SPECIAL_PASS, "roles": ["root"] })
            .await
            .unwrap();
        m.db("authdb")
            .collection::<Document>("c")
            .insert_one(doc! { "x": 1 })
            .await
            .unwrap();
    });
    drop(m);
    let _ = first.kill();
    let _ = first.wait();
    let child = start_server(&bin, dir.path().as_os_str(), port, &["--auth"]);
    Some(OwnServer {
        child,
        port,
        _dir: dir,
    })
}

#[test]
fn authentication_failure_is_clear_and_never_shows_the_password() {
    let Some(server) = auth_server() else { return };
    let mut env = Env::with_tree();
    let uri = |pass: &str| {
        format!(
            "mongodb://backup:{pass}@127.0.0.1:{}/authdb?directConnection=true&authSource=admin",
            server.port
        )
    };
    env.set("MONGODB_URI", uri("Wrong-Pass-456"));
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("refused the credentials") && all.contains("password"),
        "{all}"
    );
    assert!(!all.contains("Wrong-Pass-456"), "{all}");
    assert!(env.archives().is_empty());
    // With the right password the same backup works.
    env.set("MONGODB_URI", uri("Right-Pass-123"));
    let out = env.ok(["backup", "-v"]);
    assert!(!text(&out).contains("Right-Pass-123"));
    assert_eq!(env.archives().len(), 1);

    // A password holding every reserved character, percent-encoded as the
    // driver requires: it works, and appears in no output, log, state file,
    // status or manifest, decoded or as written.
    let encoded = "Sp%2Fec%3Fi%23al%3AP%40ss%251";
    env.set(
        "MONGODB_URI",
        format!(
            "mongodb://special:{encoded}@127.0.0.1:{}/authdb?directConnection=true&authSource=admin",
            server.port
        ),
    );
    env.set("BACKUP_LOG_FILE", env.path("app.log"));
    env.set("BACKUP_LOG_FORMAT", "json");
    let out = env.ok(["backup", "-v"]);
    let archive = env.archives().pop().unwrap();
    let manifest = manifest_of(&env, &archive);
    assert_eq!(
        manifest["mongodb"]["uri"].as_str().unwrap(),
        format!(
            "mongodb://special:***@127.0.0.1:{}/authdb?directConnection=true&authSource=admin",
            server.port
        )
    );
    let mut all = text(&out);
    all.push_str(&manifest.to_string());
    all.push_str(&fs::read_to_string(env.path("app.log")).unwrap());
    all.push_str(&fs::read_to_string(env.backups.join(".cofre-state.json")).unwrap());
    all.push_str(&text(&env.run(["status", "--json"])));
    for leak in [SPECIAL_PASS, encoded, "ec?i#al", "P@ss%1"] {
        assert!(!all.contains(leak), "{leak} leaked:\n{all}");
    }
}

#[test]
fn system_collections_are_never_restored_whatever_the_file_is_called() {
    let Some(m) = mongo() else { return };
    let env = Env::new();
    let dir = env.path("dump/app");
    fs::create_dir_all(&dir).unwrap();
    let doc = mongodb::bson::rawdoc! { "_id": 1, "code": "function() { return 1 }" };
    // An innocent file name whose metadata names a system collection.
    fs::write(dir.join("innocent.bson"), doc.as_bytes()).unwrap();
    fs::write(
        dir.join("innocent.metadata.json"),
        r#"{"options":{},"indexes":[],"collectionName":"system.js","type":"collection"}"#,
    )
    .unwrap();
    fs::write(dir.join("plain.bson"), doc.as_bytes()).unwrap();
    fs::write(
        dir.join("plain.metadata.json"),
        r#"{"options":{},"indexes":[],"collectionName":"plain","type":"collection"}"#,
    )
    .unwrap();
    let db = unique("sysnames");
    m.drop_db(&db);
    let out = env.ok(argv![
        "restore",
        "--mongo-dir",
        env.path("dump"),
        "--mongo-uri",
        &m.uri("", ""),
        "--to-db",
        &db,
    ]);
    assert!(
        stdout(&out).contains("system collection; not restored"),
        "{}",
        text(&out)
    );
    let names = m.collections(&db);
    assert!(names.contains_key("plain"), "{names:?}");
    assert!(!names.keys().any(|n| n.starts_with("system.")), "{names:?}");
    m.drop_db(&db);
}

#[test]
fn database_restore_needs_a_server_and_a_dump() {
    let Some(m) = mongo() else { return };
    let db = unique("needs");
    m.drop_db(&db);
    populate(&m, &db, 0);
    let mut env = Env::with_tree();
    env.set("MONGODB_URI", m.uri(&db, ""));
    env.ok(["backup"]);
    // Without a server to restore into, the database part says what to set;
    // nothing is written to the target either.
    env.set("MONGODB_URI", "");
    let target = env.path("t");
    let msg = env.fails(argv!["restore", "latest", "--to", target], 1);
    assert!(
        msg.contains("--mongo-uri") && msg.contains("MONGODB_URI") && msg.contains("--files-only"),
        "{msg}"
    );
    assert!(!target.exists(), "the files were not restored either");
    // A files-only archive has no database part to restore.
    let mut plain = Env::with_tree();
    plain.ok(["backup"]);
    plain.set("MONGODB_URI", m.uri(&db, ""));
    let msg = plain.fails(["restore", "latest", "--mongo-only"], 1);
    assert!(msg.contains("holds no database dump"), "{msg}");
    m.drop_db(&db);
}

#[test]
fn damaged_dump_directories_are_refused_before_writing() {
    let env = Env::new();
    let uri = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500";
    let missing = env.path("no-such-dump");
    let msg = env.fails(
        [
            "restore",
            "--mongo-dir",
            missing.to_str().unwrap(),
            "--mongo-uri",
            uri,
        ],
        1,
    );
    assert!(
        msg.contains("cannot read the dump directory") && msg.contains("--mongo-dir"),
        "{msg}"
    );
    let empty = env.path("empty-dump");
    fs::create_dir_all(&empty).unwrap();
    let msg = env.fails(
        [
            "restore",
            "--mongo-dir",
            empty.to_str().unwrap(),
            "--mongo-uri",
            uri,
        ],
        1,
    );
    assert!(msg.contains("holds no collections"), "{msg}");
    let bad_meta = env.path("bad-meta/app");
    fs::create_dir_all(&bad_meta).unwrap();
    fs::write(bad_meta.join("users.metadata.json"), "{not json").unwrap();
    let msg = env.fails(
        [
            "restore",
            "--mongo-dir",
            env.path("bad-meta").to_str().unwrap(),
            "--mongo-uri",
            uri,
        ],
        1,
    );
    assert!(msg.contains("is not valid metadata"), "{msg}");
}

#[test]
fn corrupt_bson_in_a_dump_is_refused() {
    let Some(m) = mongo() else { return };
    let fx = fixtures();
    let bson = fx.join("../bson");
    let env = Env::new();
    let uri = m.uri("", "");
    // `cofre restore --mongo-dir <dump root of dir> --to-db <db>` into the test server.
    let restore_args = |dir: &Path, db: &str| -> Vec<String> {
        [
            "restore",
            "--mongo-dir",
            dir.parent().unwrap().to_str().unwrap(),
            "--mongo-uri",
            &uri,
            "--to-db",
            db,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    for bad in ["bad_type.bson", "broken_array.bson", "random_bytes.bson"] {
        let dir = env.path(&format!("dump-{bad}/app"));
        fs::create_dir_all(&dir).unwrap();
        fs::copy(bson.join(bad), dir.join("things.bson")).unwrap();
        let db = unique("corrupt");
        m.drop_db(&db);
        let args = restore_args(&dir, &db);
        let msg = env.fails(args.iter().map(String::as_str).collect::<Vec<_>>(), 1);
        assert!(
            msg.contains("is not valid BSON") && msg.contains("things.bson"),
            "{bad}: {msg}"
        );
        assert!(
            m.collections(&db).is_empty(),
            "{bad}: nothing may be left behind"
        );
    }
    // The good ones restore, every document.
    let dir = env.path("dump-good/app");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(bson.join("all_types.bson"), dir.join("all_types.bson")).unwrap();
    let db = unique("good_bson");
    m.drop_db(&db);
    let args = restore_args(&dir, &db);
    env.ok(args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        m.raw_docs(&db, "all_types").len(),
        count_bson(&dir.join("all_types.bson"))
    );
    m.drop_db(&db);
}

#[test]
fn narrowing_to_databases_and_collections() {
    let Some(m) = mongo() else { return };
    let (a, b) = (unique("narrow_a"), unique("narrow_b"));
    for db in [&a, &b] {
        m.drop_db(db);
        populate(&m, db, 0);
    }
    let mut env = Env::new();
    fs::write(env.project.join("x.txt"), "x").unwrap();
    // No database in the URI: --db picks one; --collection narrows further.
    env.set("MONGODB_URI", m.uri("", ""));
    env.ok([
        "backup",
        "--db",
        &a,
        "--collection",
        "people",
        "--collection",
        &format!("{a}.capped"),
    ]);
    let manifest = manifest_of(&env, &env.archive());
    let names: Vec<String> = manifest["mongodb"]["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}.{}",
                c["db"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, vec![format!("{a}.capped"), format!("{a}.people")]);
    for db in [&a, &b] {
        m.drop_db(db);
    }
}

#[test]
fn a_standalone_server_is_dumped_but_said_not_to_be_one_point_in_time() {
    let Some(bin) = secantusd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = start_server(
        &bin,
        std::ffi::OsStr::new(":memory:"),
        port,
        &["--standalone"],
    );
    let server = OwnServer {
        child,
        port,
        _dir: dir,
    };
    let m = Mongo::connect(&format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        server.port
    ));
    populate(&m, "solo", 0);
    let mut env = Env::with_tree();
    env.set("MONGODB_URI", m.uri("solo", ""));
    env.ok(["backup"]);
    let manifest = manifest_of(&env, &env.archive());
    assert_eq!(
        manifest["mongodb"]["consistent"], false,
        "{}",
        manifest["mongodb"]
    );
    assert!(
        manifest["mongodb"]["note"]
            .as_str()
            .unwrap()
            .contains("standalone")
    );
    assert_eq!(
        manifest["mongodb"]["collections"].as_array().unwrap().len(),
        6
    );
}
