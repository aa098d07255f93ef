//! Measures cofre's MongoDB dump against a bare cursor drain of the same
//! collection, in one process, interleaved (used by `bench/mongo.sh`).
//!
//! ```text
//! mongo_bench load URI DB COLL DOCS DOC_BYTES   # fill a collection
//! mongo_bench drain URI DB COLL RUNS            # bare drain vs cofre's dump stage
//! mongo_bench app URI DB USERS MESSAGES         # an application's users and messages
//! mongo_bench floor URI DB DUMP_DIR             # the server's insert floor for a dump
//! ```
//!
//! `floor` inserts the documents of every `<coll>.bson` in `DUMP_DIR` into
//! `DB` as raw batches, with nothing else around it (no validation, no
//! indexes), at several batch sizes and parallelisms (`FLOOR_BATCHES`,
//! `FLOOR_PARALLEL`, comma-separated), and keeps the best: the fastest any
//! client could load that data into that server. It then builds the
//! dump's indexes (from `<coll>.metadata.json`) on that data, as any
//! restore must, and prints `insert_seconds index_seconds batch parallel
//! documents`.

use std::io::{BufWriter, Write};
use std::time::Instant;

use mongodb::Client;
use mongodb::bson::{Document, RawDocumentBuf, doc};

fn usage() -> ! {
    eprintln!(
        "usage: mongo_bench load URI DB COLL DOCS DOC_BYTES | drain URI DB COLL RUNS | app URI DB USERS MESSAGES | floor URI DB DUMP_DIR"
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        usage();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::with_uri_str(&args[1]).await.unwrap();
        let db = client.database(&args[2]);
        let coll = &args[3];
        match args[0].as_str() {
            "load" => {
                let n: usize = args[4].parse().unwrap();
                let size: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(1000);
                let c = db.collection::<Document>(coll);
                c.drop().await.unwrap();
                let pad = "x".repeat(size.saturating_sub(60));
                let mut i = 0;
                while i < n {
                    let end = (i + 10_000).min(n);
                    c.insert_many((i..end).map(|k| doc! { "k": k as i64, "f": k as f64 * 0.5, "s": format!("{k:012}"), "pad": &pad }))
                        .await
                        .unwrap();
                    i = end;
                }
                println!("loaded {n} documents of about {size} bytes into {}.{coll}", args[2]);
            }
            "drain" => {
                let runs: usize = args[4].parse().unwrap();
                let mut bare = Vec::new();
                let mut dump = Vec::new();
                let mut totals = (0u64, 0u64);
                // A bare cursor: documents read and counted, nothing else.
                let drain = || async {
                    let t = Instant::now();
                    let mut cursor = db.collection::<RawDocumentBuf>(coll).find(doc! {}).await.unwrap();
                    let (mut n, mut bytes) = (0u64, 0u64);
                    while cursor.advance().await.unwrap() {
                        n += 1;
                        bytes += cursor.current().as_bytes().len() as u64;
                    }
                    (t.elapsed().as_secs_f64(), (n, bytes))
                };
                // cofre's dump stage: the same collection into its spool file.
                let spool = || async {
                    let t = Instant::now();
                    let mut out = BufWriter::with_capacity(1 << 20, tempfile::tempfile().unwrap());
                    let d = cofre::parts::drain_collection(&db, coll, None, &mut out, None)
                        .await
                        .unwrap();
                    out.flush().unwrap();
                    (t.elapsed().as_secs_f64(), (d.documents, d.bytes))
                };
                drain().await; // warm-up
                for run in 0..runs {
                    // Alternate which goes first, so neither always gets the warmer server.
                    let ((b, counts), (d, dumped)) = if run % 2 == 0 {
                        let b = drain().await;
                        (b, spool().await)
                    } else {
                        let d = spool().await;
                        (drain().await, d)
                    };
                    assert_eq!(counts, dumped);
                    totals = counts;
                    bare.push(b);
                    dump.push(d);
                }
                bare.sort_by(f64::total_cmp);
                dump.sort_by(f64::total_cmp);
                let (b, d) = (bare[runs / 2], dump[runs / 2]);
                let mb = totals.1 as f64 / 1e6;
                println!("| bare cursor drain | {b:.2} s | {:.0} docs/s | {:.1} MB/s |", totals.0 as f64 / b, mb / b);
                println!("| cofre dump (drain + spool) | {d:.2} s | {:.0} docs/s | {:.1} MB/s | {:.2}× the drain |", totals.0 as f64 / d, mb / d, d / b);
            }
            "app" => {
                let users: usize = args[3].parse().unwrap();
                let messages: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(0);
                load_app(&db, users, messages).await;
                println!("loaded {users} users and {messages} messages into {}", args[2]);
            }
            "floor" => floor(&client, &args[2], std::path::Path::new(&args[3])).await,
            _ => usage(),
        }
    });
}

/// An application's data: users with a unique e-mail, messages between
/// them with the indexes a chat needs.
async fn load_app(db: &mongodb::Database, users: usize, messages: usize) {
    use mongodb::bson::{DateTime, oid::ObjectId};
    db.drop().await.unwrap();
    let ids: Vec<ObjectId> = (0..users).map(|_| ObjectId::new()).collect();
    let start = 1_700_000_000_000i64;
    let u = db.collection::<Document>("users");
    for chunk in ids.chunks(5000).enumerate() {
        let (c, part) = chunk;
        u.insert_many(part.iter().enumerate().map(|(j, id)| {
            let i = c * 5000 + j;
            doc! {
                "_id": id,
                "name": format!("User Number {i}"),
                "email": format!("user{i}@example.com"),
                "createdAt": DateTime::from_millis(start + i as i64 * 60_000),
                "roles": if i % 50 == 0 { vec!["user", "admin"] } else { vec!["user"] },
                "profile": { "bio": format!("Writes about topic {} and likes the number {}.", i % 97, i % 13), "age": (18 + i % 60) as i32 },
                "active": i % 7 != 0,
            }
        }))
        .await
        .unwrap();
    }
    u.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! { "email": 1 })
            .options(
                mongodb::options::IndexOptions::builder()
                    .unique(true)
                    .build(),
            )
            .build(),
    )
    .await
    .unwrap();
    let m = db.collection::<Document>("messages");
    let mut i = 0;
    while i < messages {
        let end = (i + 5000).min(messages);
        m.insert_many((i..end).map(|k| {
            doc! {
                "from": ids[k % users],
                "to": ids[(k * 7 + 3) % users],
                "body": format!("Message {k}: see you at {} o'clock, bring the {} notes and {} coffees.", k % 24, k % 31, k % 5),
                "sentAt": DateTime::from_millis(start + k as i64 * 1000),
                "read": k % 3 == 0,
                "tags": vec![format!("t{}", k % 11)],
            }
        }))
        .await
        .unwrap();
        i = end;
    }
    m.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! { "to": 1, "sentAt": -1 })
            .build(),
    )
    .await
    .unwrap();
    m.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! { "from": 1 })
            .build(),
    )
    .await
    .unwrap();
}

/// The fastest raw insert of a dump's documents: every batch size and
/// parallelism tried, the best kept.
async fn floor(client: &Client, db_name: &str, dir: &std::path::Path) {
    let mut files: Vec<(String, Vec<RawDocumentBuf>)> = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let Some(stem) = p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_suffix(".bson")
        else {
            continue;
        };
        let bytes = std::fs::read(&p).unwrap();
        let mut docs = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            docs.push(RawDocumentBuf::from_bytes(bytes[at..at + n].to_vec()).unwrap());
            at += n;
        }
        files.push((stem.to_owned(), docs));
    }
    let total: usize = files.iter().map(|f| f.1.len()).sum();
    let db = client.database(db_name);
    let mut best = (f64::MAX, 0, 0);
    let grid = |var: &str, default: &str| -> Vec<usize> {
        std::env::var(var)
            .unwrap_or_else(|_| default.to_owned())
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect()
    };
    // FLOOR_BATCHES and FLOOR_PARALLEL narrow the search (comma-separated).
    for batch in grid("FLOOR_BATCHES", "1000,5000,20000") {
        for parallel in grid("FLOOR_PARALLEL", "1,2,4") {
            db.drop().await.unwrap();
            let t = Instant::now();
            let mut jobs = Vec::new();
            for (coll, docs) in &files {
                for (i, chunk) in docs.chunks(batch).enumerate() {
                    jobs.push((i, coll.clone(), chunk.to_vec()));
                }
            }
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel));
            let mut tasks = Vec::new();
            for (_, coll, chunk) in jobs {
                let permit = sem.clone().acquire_owned().await.unwrap();
                let c = db.collection::<RawDocumentBuf>(&coll);
                tasks.push(tokio::spawn(async move {
                    c.insert_many(&chunk).ordered(false).await.unwrap();
                    drop(permit);
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let s = t.elapsed().as_secs_f64();
            eprintln!("floor: batch {batch}, {parallel} in flight: {s:.2} s");
            if s < best.0 {
                best = (s, batch, parallel);
            }
        }
    }
    // The indexes, built on the data as the best run left it (rerun).
    db.drop().await.unwrap();
    for (coll, docs) in &files {
        for chunk in docs.chunks(best.1) {
            db.collection::<RawDocumentBuf>(coll)
                .insert_many(chunk)
                .ordered(false)
                .await
                .unwrap();
        }
    }
    let t = Instant::now();
    for (coll, _) in &files {
        let meta = dir.join(format!("{coll}.metadata.json"));
        let Ok(text) = std::fs::read_to_string(&meta) else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let Ok(mongodb::bson::Bson::Document(m)) = mongodb::bson::Bson::try_from(value) else {
            continue;
        };
        let specs: Vec<Document> = m
            .get_array("indexes")
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.as_document().cloned())
                    .filter(|i| i.get_str("name") != Ok("_id_"))
                    .map(|mut i| {
                        i.remove("ns");
                        i
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !specs.is_empty() {
            db.run_command(doc! { "createIndexes": coll.as_str(), "indexes": specs })
                .await
                .unwrap();
        }
    }
    let indexes = t.elapsed().as_secs_f64();
    db.drop().await.unwrap();
    println!("{:.3} {indexes:.3} {} {} {total}", best.0, best.1, best.2);
}
