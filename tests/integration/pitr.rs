//! Point-in-time recovery against a real replica set (SecantusDB, a
//! one-member set with a tailable oplog, started per test): the daemon
//! captures the oplog into slices; a restore to an exact operation equals
//! the database as it was then; `kill -9` loses nothing; a rollover is a
//! hole that is said and healed by a new base; damaged, missing and
//! hostile slices change nothing they should not; slices open with age,
//! zstd and MongoDB's bsondump.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mongodb::bson::{Document, Timestamp, doc};

use crate::daemon::Daemon;
use crate::harness::*;
use crate::mongo::{Mongo, OwnServer, assert_same_db, state};

/// Starts the daemon and waits until it tails the oplog.
fn capturing(env: &Env) -> Daemon {
    let mut daemon = Daemon::start(env);
    assert!(daemon.wait_for(Duration::from_secs(30), |l| {
        l.iter().any(|x| x.contains("tailing the oplog"))
    }));
    daemon
}

/// A project whose database is on a server of its own.
struct Pitr {
    env: Env,
    server: OwnServer,
    m: Mongo,
    db: String,
}

fn setup(flags: &[&str]) -> Option<Pitr> {
    let server = crate::mongo::own_server_with(flags)?;
    let m = server.client();
    let db = "app".to_owned();
    let mut env = Env::with_tree();
    env.set("MONGODB_URI", server.uri(&db));
    env.set("BACKUP_OPLOG_SLICE", "2s");
    Some(Pitr { env, server, m, db })
}

/// The newest oplog entry's timestamp on `m`'s server.
fn newest_op(m: &Mongo) -> Timestamp {
    m.run(async {
        m.db("local")
            .collection::<Document>("oplog.rs")
            .find_one(doc! {})
            .sort(doc! { "$natural": -1 })
            .await
            .unwrap()
            .unwrap()
            .get_timestamp("ts")
            .unwrap()
    })
}

/// Waits until the capture of `env` holds `ts` in a closed slice.
fn wait_sliced(env: &Env, ts: Timestamp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = stdout(&env.ok(["oplog", "--json"]));
        let reached = out
            .lines()
            .any(|l| l.contains(&format!("\"ts\":\"{},{}\"", ts.time, ts.increment)));
        if reached {
            return;
        }
        assert!(Instant::now() < deadline, "{ts:?} was never sliced:\n{out}");
        thread::sleep(Duration::from_millis(500));
    }
}

impl Pitr {
    fn newest_op(&self) -> Timestamp {
        newest_op(&self.m)
    }

    fn wait_sliced(&self, ts: Timestamp) {
        wait_sliced(&self.env, ts);
    }

    fn insert(&self, coll: &str, d: Document) {
        self.m.run(async {
            self.m
                .db(&self.db)
                .collection::<Document>(coll)
                .insert_one(d)
                .await
                .unwrap();
        });
    }

    /// Restores to `point` (flags) into `<prefix>app` and returns its state.
    fn restore_into(&self, prefix: &str, point: &[&str]) -> crate::mongo::DbState {
        self.m.drop_db(&format!("{prefix}{}", self.db));
        let mut args = vec!["restore", "--mongo-only", "--db-prefix", prefix];
        args.extend_from_slice(point);
        self.env.ok(&args);
        state(&self.m, &format!("{prefix}{}", self.db))
    }
}

/// A steady writer: inserts, updates, deletes, one every few milliseconds.
struct Writer {
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(uri: String, db: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, p, d) = (stop.clone(), pause.clone(), done.clone());
        let handle = thread::spawn(move || {
            let m = Mongo::connect(&uri);
            let coll = m.db(&db).collection::<Document>("events");
            let mut i: i64 = 1_000;
            while !s.load(Ordering::Relaxed) {
                if p.load(Ordering::Relaxed) {
                    d.store(i as u64, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
                m.run(async {
                    coll.insert_one(doc! { "_id": i, "n": i, "tags": ["a"] })
                        .await
                        .unwrap();
                    if i % 3 == 0 {
                        coll.update_one(
                            doc! { "_id": i - 1 },
                            doc! { "$inc": { "n": 1 }, "$push": { "tags": "b" } },
                        )
                        .await
                        .unwrap();
                    }
                    if i % 7 == 0 {
                        coll.delete_one(doc! { "_id": i - 5 }).await.unwrap();
                    }
                });
                i += 1;
                thread::sleep(Duration::from_millis(3));
            }
        });
        Writer {
            stop,
            pause,
            done,
            handle: Some(handle),
        }
    }

    /// Pauses the writer (after its current operation) and waits for it.
    fn pause(&self) {
        self.done.store(0, Ordering::SeqCst);
        self.pause.store(true, Ordering::SeqCst);
        while self.done.load(Ordering::SeqCst) == 0 {
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

#[test]
fn a_restore_to_an_exact_operation_is_the_database_as_it_was_then() {
    let Some(p) = setup(&[]) else { return };
    // Before the base: data, an index, a capped collection.
    p.insert("users", doc! { "_id": 1, "name": "ana", "tags": ["x"] });
    p.insert("users", doc! { "_id": 2, "name": "bo" });
    p.m.run(async {
        p.m.db(&p.db)
            .run_command(doc! { "create": "log", "capped": true, "size": 100_000 })
            .await
            .unwrap();
    });
    p.env.ok(["backup"]);
    let daemon = capturing(&p.env);
    // Writes during and after, DDL and a transaction among them.
    let writer = Writer::start(p.server.uri(""), p.db.clone());
    thread::sleep(Duration::from_millis(800));
    p.m.run(async {
        let db = p.m.db(&p.db);
        db.collection::<Document>("users")
            .update_one(doc! { "_id": 1 }, doc! { "$set": { "name": "Ana", "sub.k": 1 }, "$unset": { "tags": "" } })
            .await
            .unwrap();
        db.collection::<Document>("users")
            .replace_one(doc! { "_id": 2 }, doc! { "name": "replaced" })
            .await
            .unwrap();
        db.run_command(doc! { "createIndexes": "users", "indexes": [{ "key": { "name": 1 }, "name": "name_1" }] })
            .await
            .unwrap();
        db.run_command(doc! { "create": "tmp" }).await.unwrap();
        db.collection::<Document>("tmp").insert_one(doc! { "_id": 1 }).await.unwrap();
        db.run_command(doc! { "renameCollection": format!("{}.tmp", p.db), "to": format!("{}.renamed", p.db) })
            .await
            .ok();
        let mut session = p.m.client.start_session().await.unwrap();
        session.start_transaction().await.unwrap();
        db.collection::<Document>("users")
            .insert_one(doc! { "_id": 10, "in": "txn" })
            .session(&mut session)
            .await
            .unwrap();
        db.collection::<Document>("users")
            .update_one(doc! { "_id": 1 }, doc! { "$set": { "txn": true } })
            .session(&mut session)
            .await
            .unwrap();
        session.commit_transaction().await.unwrap();
        db.run_command(doc! { "collMod": "users", "validator": { "name": { "$exists": true } } })
            .await
            .unwrap();
    });
    thread::sleep(Duration::from_millis(800));
    // The moment to restore to: the writer paused, the database read.
    writer.pause();
    let at = p.newest_op();
    let then = state(&p.m, &p.db);
    writer.resume();
    thread::sleep(Duration::from_millis(1500));
    p.m.run(async {
        p.m.db(&p.db)
            .collection::<Document>("log")
            .drop()
            .await
            .unwrap();
    });
    writer.stop();
    let last = p.newest_op();
    let now = state(&p.m, &p.db);
    p.wait_sliced(last);
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
    // The exact operation.
    let got = p.restore_into(
        "at_",
        &["--at-op", &format!("{},{}", at.time, at.increment)],
    );
    assert_same_db(&then, &got);
    // The latest point.
    let got = p.restore_into("latest_", &["--at", "latest"]);
    assert_same_db(&now, &got);
    // Just before the drop: the capped collection is still there.
    let listed = stdout(
        &p.env
            .ok(["oplog", "--op", "c", "--ns", &format!("{}.log", p.db)]),
    );
    let drop_line = listed
        .lines()
        .find(|l| l.contains("drop"))
        .unwrap_or_else(|| panic!("{listed}"));
    let ts = drop_line.split_whitespace().nth(1).unwrap();
    let before = p.restore_into("before_", &["--before-op", ts]);
    assert!(before.0.contains_key("log"), "{:?}", before.0.keys());
    assert!(!got.0.contains_key("log"));
    // A dry run says what it would read and where it stops.
    let out = stdout(
        &p.env
            .ok(["restore", "--at", "latest", "--mongo-only", "--dry-run"]),
    );
    assert!(
        out.contains("base      backup_") && out.contains("slice     oplog_"),
        "{out}"
    );
    assert!(out.contains("last      "), "{out}");
}

#[test]
fn kill_9_mid_slice_resumes_with_no_gap_and_no_duplicate() {
    let Some(p) = setup(&[]) else { return };
    let mut env = p.env;
    env.set("BACKUP_OPLOG_SLICE", "30s");
    let p = Pitr { env, ..p };
    p.env.ok(["backup"]);
    let daemon = capturing(&p.env);
    let writer = Writer::start(p.server.uri(""), p.db.clone());
    thread::sleep(Duration::from_secs(3));
    // kill -9 in the middle of a slice: only the spool holds these.
    sh(&format!("kill -9 {}", daemon.pid()));
    thread::sleep(Duration::from_secs(1));
    let mut daemon = Daemon::start(&p.env);
    assert!(
        daemon
            .wait_for(Duration::from_secs(30), |l| l.iter().any(|x| x
                .contains("resuming after")
                || x.contains("tailing the oplog")))
    );
    thread::sleep(Duration::from_secs(2));
    writer.stop();
    let last = p.newest_op();
    let now = state(&p.m, &p.db);
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
    // Stopping closed the slice with everything in it.
    p.wait_sliced(last);
    let got = p.restore_into("k_", &["--at", "latest"]);
    assert_same_db(&now, &got);
    // Each operation once: listed timestamps are all different.
    let listed = stdout(
        &p.env
            .ok(["oplog", "--json", "--ns", &format!("{}.events", p.db)]),
    );
    let ts: Vec<&str> = listed
        .lines()
        .map(|l| l.split("\"ts\":").nth(1).unwrap())
        .collect();
    let mut unique = ts.clone();
    unique.dedup();
    assert_eq!(ts.len(), unique.len());
    assert!(ts.len() > 100, "{}", ts.len());
}

#[test]
fn a_rollover_is_a_hole_said_and_healed_by_a_new_base() {
    let Some(p) = setup(&["--oplog-max-entries", "40"]) else {
        return;
    };
    let mut env = p.env;
    let hook = crate::monitor::Hook::start();
    env.set("BACKUP_NOTIFY_URL", hook.url());
    let p = Pitr { env, ..p };
    p.env.ok(["backup"]);
    // The daemon is down while the oplog rolls over.
    for i in 0..120 {
        p.insert("users", doc! { "_id": i, "n": i });
    }
    p.m.run(async {
        p.m.db("admin")
            .run_command(doc! { "secantusAdmin.pruneOplog": 1 })
            .await
            .unwrap();
    });
    let before = names_starting(&p.env.backups, "backup_").len();
    let mut daemon = Daemon::start(&p.env);
    assert!(
        daemon.wait_for(Duration::from_secs(60), |l| l
            .iter()
            .any(|x| x.contains("a new history starts from"))),
        "{:#?}",
        daemon.seen
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
    // A new base was taken at once, the hole said and recorded.
    assert!(names_starting(&p.env.backups, "backup_").len() > before);
    let events = hook.events();
    assert!(
        events.iter().any(|e| e["event"] == "oplog_gap"),
        "{events:#?}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&p.env.ok(["status", "--json"]))).unwrap();
    assert_eq!(
        status["pitr"]["gaps"].as_array().map(Vec::len),
        Some(1),
        "{status:#}"
    );
    // A point inside the hole cannot be reached from the first base; the
    // window starts at the new base.
    let first_base_time = status["pitr"]["window_from"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(!first_base_time.is_empty(), "{status:#}");
}

#[test]
fn damaged_or_missing_slices_stop_the_restore_saying_how_far_it_reaches() {
    let Some(p) = setup(&[]) else { return };
    p.env.ok(["backup"]);
    let daemon = capturing(&p.env);
    let mut marks = Vec::new();
    for round in 0..3 {
        for i in 0..20 {
            p.insert("users", doc! { "_id": round * 100 + i });
        }
        marks.push(p.newest_op());
        thread::sleep(Duration::from_millis(2500));
    }
    p.wait_sliced(*marks.last().unwrap());
    daemon.stop();
    let oplog = p.env.backups.join("oplog");
    let mut slices: Vec<PathBuf> = fs::read_dir(&oplog)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "age"))
        .collect();
    slices.sort();
    // The newest slice with entries in it: damaged.
    let mid = slices
        .iter()
        .rev()
        .find(|s| {
            let sig = fs::read_to_string(format!("{}.minisig", s.display())).unwrap();
            !sig.contains("oplog_count:0\t")
        })
        .unwrap()
        .clone();
    let mut bytes = fs::read(&mid).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0xff;
    fs::write(&mid, &bytes).unwrap();
    let name = mid.file_name().unwrap().to_str().unwrap().to_owned();
    let msg = p.env.fails(
        [
            "restore",
            "--at",
            "latest",
            "--mongo-only",
            "--db-prefix",
            "d_",
        ],
        1,
    );
    assert!(
        msg.contains(&name) && msg.contains("reaches") && msg.contains("--at"),
        "{msg}"
    );
    // Nothing was restored.
    assert!(state(&p.m, "d_app").0.is_empty());
    // A point before it still restores.
    let first = marks[0];
    let got = p.restore_into(
        "ok_",
        &["--at-op", &format!("{},{}", first.time, first.increment)],
    );
    assert_eq!(got.1["users"].len(), 20);
    // Missing: a hole, said with the last point it reaches.
    fs::remove_file(&mid).unwrap();
    let msg = p.env.fails(
        [
            "restore",
            "--at",
            "latest",
            "--mongo-only",
            "--db-prefix",
            "m_",
        ],
        1,
    );
    assert!(
        msg.contains("does not reach") && msg.contains("stops at"),
        "{msg}"
    );
}

#[test]
fn slices_open_with_age_zstd_and_bsondump() {
    let Some(p) = setup(&[]) else { return };
    p.env.ok(["backup"]);
    let daemon = capturing(&p.env);
    for i in 0..25 {
        p.insert("users", doc! { "_id": i, "name": format!("u{i}") });
    }
    let last = p.newest_op();
    p.wait_sliced(last);
    daemon.stop();
    let out = p.env.path("oplog.bson");
    sh(&format!(
        "for f in '{}'/oplog_*.age; do age -d -i '{}' \"$f\" | zstd -q -d; done > '{}'",
        p.env.backups.join("oplog").display(),
        p.env.identity().display(),
        out.display()
    ));
    // MongoDB's own bsondump reads it, entry by entry.
    let Some(bsondump) = crate::mongo_tools::tool("bsondump") else {
        return;
    };
    let dumped = std::process::Command::new(bsondump)
        .arg(&out)
        .output()
        .unwrap();
    assert!(dumped.status.success(), "{}", text(&dumped));
    let lines = String::from_utf8_lossy(&dumped.stdout);
    let inserts = lines
        .lines()
        .filter(|l| l.contains("\"op\":\"i\"") && l.contains("app.users"))
        .count();
    assert_eq!(inserts, 25, "{lines}");
}

#[test]
fn status_metrics_and_lag_tell_whether_the_capture_keeps_up() {
    let Some(p) = setup(&[]) else { return };
    let mut env = p.env;
    let metrics = env.path("cofre.prom");
    env.set("BACKUP_METRICS_FILE", &metrics);
    let p = Pitr { env, ..p };
    p.env.ok(["backup"]);
    // Without the daemon: not captured, and --max-oplog-lag says so.
    let out = p.env.run(["status", "--max-oplog-lag", "5m"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("point in time     OFF"),
        "{}",
        text(&out)
    );
    let daemon = capturing(&p.env);
    p.insert("users", doc! { "_id": 1 });
    p.wait_sliced(p.newest_op());
    thread::sleep(Duration::from_secs(2));
    let out = p.env.ok(["status", "--max-oplog-lag", "5m"]);
    let said = stdout(&out);
    assert!(
        said.contains("point in time     capturing")
            && said.contains("restores to any second from"),
        "{said}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&p.env.ok(["status", "--json"]))).unwrap();
    assert_eq!(json["pitr"]["capturing"], true, "{json:#}");
    assert!(
        json["pitr"]["lag_seconds"].as_i64().unwrap() < 60,
        "{json:#}"
    );
    daemon.stop();
    let prom = fs::read_to_string(&metrics).unwrap();
    for name in [
        "cofre_oplog_last_timestamp_seconds",
        "cofre_oplog_lag_seconds",
        "cofre_pitr_window_start_timestamp_seconds",
    ] {
        assert!(prom.contains(name), "{name} in\n{prom}");
    }
}

#[test]
fn a_hostile_slice_changes_nothing_outside_the_databases_restored() {
    let Some(p) = setup(&[]) else { return };
    p.insert("users", doc! { "_id": 1 });
    p.m.run(async {
        p.m.db("other")
            .collection::<Document>("keep")
            .insert_one(doc! { "_id": 1 })
            .await
            .unwrap();
    });
    p.env.ok(["backup"]);
    let other = state(&p.m, "other");
    // A slice signed with this installation's key (an insider), after the
    // base, whose entries reach for other databases, system collections
    // and a collection the restore does not own.
    let base = p.env.archives().pop().unwrap();
    let sig = fs::read_to_string(format!("{}.minisig", base.display())).unwrap();
    let cluster = sig
        .lines()
        .find_map(|l| l.split('\t').find_map(|f| f.strip_prefix("cluster:")))
        .unwrap()
        .to_owned();
    let (t, i) = cluster.split_once(',').unwrap();
    let (t, i): (u32, u32) = (t.parse().unwrap(), i.parse().unwrap());
    let ts = |k: u32| Timestamp {
        time: t,
        increment: i + k,
    };
    let entries = [
        doc! { "op": "i", "ns": "other.keep", "ts": ts(1), "o": { "_id": 2, "evil": true } },
        doc! { "op": "c", "ns": "other.$cmd", "ts": ts(2), "o": { "dropDatabase": 1 } },
        doc! { "op": "i", "ns": "admin.system.users", "ts": ts(3), "o": { "_id": "x.evil", "user": "evil" } },
        doc! { "op": "c", "ns": "admin.$cmd", "ts": ts(4), "o": { "renameCollection": "app.users", "to": "other.stolen" } },
        doc! { "op": "i", "ns": "app.system.js", "ts": ts(5), "o": { "_id": "f" } },
        doc! { "op": "i", "ns": "app.users", "ts": ts(6), "o": { "_id": 2, "fine": true } },
    ];
    let mut bson = Vec::new();
    for e in &entries {
        bson.extend(mongodb::bson::to_vec(e).unwrap());
    }
    let plain = p.env.path("hostile.bson");
    fs::write(&plain, &bson).unwrap();
    let name = format!(
        "oplog_{}.bson.zst.age",
        chrono::Utc::now().format("%Y-%m-%dT%H-%M-%S")
    );
    let dir = p.env.backups.join("oplog");
    fs::create_dir_all(&dir).unwrap();
    let slice = dir.join(&name);
    let public = fs::read_to_string(p.env.identity())
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_owned))
        .unwrap();
    sh(&format!(
        "zstd -q -c '{}' | age -r {public} > '{}'",
        plain.display(),
        slice.display()
    ));
    let claim = format!(
        "timestamp:0\tfile:{name}\thost:{}\tsource:{}\toplog_after:{cluster}\toplog_until:{t},{}\toplog_count:6\toplog_proven:{}",
        fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        p.env.project.canonicalize().unwrap().display(),
        i + 6,
        t + 1
    );
    sh(&format!(
        "minisign -S -s '{}' -m '{}' -x '{}.minisig' -t \"$(printf '{}')\" </dev/null >/dev/null",
        p.env.signing_key().display(),
        slice.display(),
        slice.display(),
        claim.replace('\t', "\\t")
    ));
    let got = p.restore_into("h_", &["--at", "latest"]);
    // Only the restored database's own collection got its entry.
    assert_eq!(got.1["users"].len(), 2);
    assert_same_db(&other, &state(&p.m, "other"));
    let admin_users = p.m.run(async {
        p.m.db("admin")
            .collection::<Document>("system.users")
            .count_documents(doc! { "user": "evil" })
            .await
            .unwrap_or(0)
    });
    assert_eq!(admin_users, 0);
    assert!(!state(&p.m, "other").0.contains_key("stolen"));
}

#[test]
fn a_new_machine_restores_to_a_point_from_the_bucket() {
    let Some(s3) = crate::offsite::s3() else {
        return;
    };
    let Some(p) = setup(&[]) else { return };
    let bucket = format!("pitr-{}", std::process::id());
    s3.bucket(&bucket, true);
    let mut env = p.env;
    crate::offsite::use_bucket(&mut env, &s3.endpoint, &bucket, "app");
    env.set("BACKUP_REMOTE_LOCK", "governance");
    let p = Pitr { env, ..p };
    p.insert("users", doc! { "_id": 1 });
    p.env.ok(["backup"]);
    let daemon = capturing(&p.env);
    for i in 2..30 {
        p.insert("users", doc! { "_id": i });
    }
    let last = p.newest_op();
    p.wait_sliced(last);
    let now = state(&p.m, &p.db);
    // The slices go up as they close.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys = s3.admin(&s3.endpoint, &["keys", &bucket]);
        if keys
            .lines()
            .filter(|k| k.starts_with("app/oplog/oplog_") && k.ends_with(".age"))
            .count()
            >= 1
            && p.env.run(["oplog", "--remote", "--json"]).status.success()
            && stdout(&p.env.ok(["oplog", "--remote", "--json"]))
                .contains(&format!("\"ts\":\"{},{}\"", last.time, last.increment))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{keys}");
        thread::sleep(Duration::from_millis(500));
    }
    daemon.stop();
    let kept = p.env.path("kept-identity.txt");
    fs::copy(p.env.identity(), &kept).unwrap();
    let mut fresh = Env::new();
    crate::offsite::use_bucket(&mut fresh, &s3.endpoint, &bucket, "app");
    fresh.set("BACKUP_IDENTITY_FILE", &kept);
    fresh.set("BACKUP_SOURCE", p.env.project.canonicalize().unwrap());
    fresh.set("MONGODB_URI", p.server.uri(&p.db));
    p.m.drop_db("r_app");
    fresh.ok([
        "restore",
        "--remote",
        "--at",
        "latest",
        "--mongo-only",
        "--db-prefix",
        "r_",
    ]);
    assert_same_db(&now, &state(&p.m, "r_app"));
}

#[test]
fn a_drill_replays_the_oplog_and_compares_with_the_live_database_then() {
    let Some(p) = setup(&[]) else { return };
    p.insert("users", doc! { "_id": 1 });
    p.env.ok(["backup"]);
    let daemon = capturing(&p.env);
    for i in 2..40 {
        p.insert("users", doc! { "_id": i, "n": i });
    }
    p.m.run(async {
        p.m.db(&p.db)
            .collection::<Document>("users")
            .update_many(doc! {}, doc! { "$inc": { "n": 1 } })
            .await
            .unwrap();
    });
    p.wait_sliced(p.newest_op());
    daemon.stop();
    p.env.ok(["drill"]);
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&p.env.ok(["status", "--json"]))).unwrap();
    let last = &status["drill"]["last"];
    assert_eq!(last["ok"], true, "{last:#}");
    assert!(last["pitr_operations"].as_u64().unwrap() >= 39, "{last:#}");
    assert!(last["pitr_seconds"].as_f64().is_some(), "{last:#}");
    assert!(
        last["pitr_note"].is_null(),
        "compared with the live database: {last:#}"
    );
}

#[test]
fn the_server_going_away_mid_capture_is_resumed_when_it_returns() {
    let Some(bin) = crate::mongo::secantusd() else {
        return;
    };
    // A server that keeps its data on disk, so it can come back.
    let storage = tempfile::tempdir().unwrap();
    let port = crate::mongo::free_port();
    let mut child = crate::mongo::start_server(&bin, storage.path().as_os_str(), port, &[]);
    let uri = format!("mongodb://127.0.0.1:{port}/app?directConnection=true");
    let m = Mongo::connect(&format!(
        "mongodb://127.0.0.1:{port}/?directConnection=true"
    ));
    let mut env = Env::with_tree();
    env.set("MONGODB_URI", &uri);
    env.set("BACKUP_OPLOG_SLICE", "2s");
    let insert = |m: &Mongo, i: i32| {
        m.run(async {
            m.db("app")
                .collection::<Document>("users")
                .insert_one(doc! { "_id": i })
                .await
                .unwrap();
        });
    };
    insert(&m, 0);
    env.ok(["backup"]);
    let mut daemon = capturing(&env);
    for i in 1..10 {
        insert(&m, i);
    }
    thread::sleep(Duration::from_millis(1500));
    // The server goes away, and comes back on the same data.
    let _ = child.kill();
    let _ = child.wait();
    assert!(daemon.wait_for(Duration::from_secs(30), |l| {
        l.iter()
            .any(|x| x.contains("oplog capture:") && x.contains("retrying"))
    }));
    child = crate::mongo::start_server(&bin, storage.path().as_os_str(), port, &[]);
    let m = Mongo::connect(&format!(
        "mongodb://127.0.0.1:{port}/?directConnection=true"
    ));
    for i in 10..20 {
        insert(&m, i);
    }
    wait_sliced(&env, newest_op(&m));
    daemon.stop();
    let now = state(&m, "app");
    m.drop_db("s_app");
    env.ok([
        "restore",
        "--at",
        "latest",
        "--mongo-only",
        "--db-prefix",
        "s_",
    ]);
    assert_same_db(&now, &state(&m, "s_app"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn points_that_cannot_be_reached_or_read_are_refused_with_one_line() {
    let env = Env::with_tree();
    let msg = env.fails(["restore", "--at", "2026-13-01", "--mongo-only"], 2);
    assert!(msg.contains("--at") && msg.contains("2026-13-01"), "{msg}");
    let msg = env.fails(["restore", "--at-op", "yesterday", "--mongo-only"], 2);
    assert!(
        msg.contains("--at-op") && msg.contains("SECONDS,ORDINAL"),
        "{msg}"
    );
    let msg = env.fails(["oplog", "--op", "z"], 2);
    assert!(
        msg.contains("--op") && msg.contains("i, u, d, c or n"),
        "{msg}"
    );
    // Archives, but no database and no captured oplog.
    env.ok(["backup"]);
    let msg = env.fails(["restore", "--at", "latest", "--mongo-only"], 1);
    assert!(msg.contains("no oplog slice was captured yet"), "{msg}");
    let msg = env.fails(
        ["restore", "--at", "2020-01-01T00:00:00Z", "--mongo-only"],
        1,
    );
    assert!(msg.contains("no archive with a database dump"), "{msg}");
    assert_eq!(stdout(&env.ok(["oplog"])).lines().count(), 1);
}
