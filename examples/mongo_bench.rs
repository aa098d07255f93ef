//! Measures cofre's MongoDB dump against a bare cursor drain of the same
//! collection, in one process, interleaved (used by `bench/mongo.sh`).
//!
//! ```text
//! mongo_bench load URI DB COLL DOCS DOC_BYTES   # fill a collection
//! mongo_bench drain URI DB COLL RUNS            # bare drain vs cofre's dump stage
//! ```

use std::io::{BufWriter, Write};
use std::time::Instant;

use mongodb::Client;
use mongodb::bson::{Document, RawDocumentBuf, doc};

fn usage() -> ! {
    eprintln!("usage: mongo_bench load URI DB COLL DOCS DOC_BYTES | drain URI DB COLL RUNS");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
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
            _ => usage(),
        }
    });
}
