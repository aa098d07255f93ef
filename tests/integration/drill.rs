//! Restore drills against real servers: a drill restores the newest archive
//! into scratch (a second SecantusDB as the drill server, or the backup's
//! own), compares, runs the smoke test, and leaves nothing behind, whether
//! it passes, fails, times out, collides or is stopped by SIGTERM.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cofre::parts::Kind;
use mongodb::bson::{Document, doc};

use crate::harness::*;
use crate::hostile::{H, gzip, keyed_env, plant, tar_with_manifest};
use crate::mongo::{Mongo, OwnServer, mongo, own_server, populate, state, unique};

/// The scratch databases on a server.
fn scratch_dbs(m: &Mongo) -> Vec<String> {
    m.run(async { m.client.list_database_names().await.unwrap() })
        .into_iter()
        .filter(|n| n.starts_with("cofre_drill_"))
        .collect()
}

/// The scratch databases on a shared server made for database `db`
/// (other tests drill there too).
fn scratch_dbs_of(m: &Mongo, db: &str) -> Vec<String> {
    let suffix = format!("_{db}");
    scratch_dbs(m)
        .into_iter()
        .filter(|n| n.ends_with(&suffix))
        .collect()
}

/// The scratch directories in the backup directory.
fn scratch_dirs(env: &Env) -> Vec<String> {
    names_starting(&env.backups, ".cofre-drill-")
}

/// `.cofre-drill.json`.
fn drill_state(env: &Env) -> serde_json::Value {
    serde_json::from_slice(&fs::read(env.backups.join(".cofre-drill.json")).unwrap()).unwrap()
}

/// Documents per collection of a database (views left out).
fn counts(m: &Mongo, db: &str) -> u64 {
    m.collections(db)
        .into_iter()
        .filter(|(_, (kind, _))| kind != "view")
        .map(|(name, _)| {
            m.run(async {
                m.db(db)
                    .collection::<Document>(&name)
                    .count_documents(doc! {})
                    .await
                    .unwrap()
            })
        })
        .sum()
}

/// A project with a database, backed up; drills go to a second server.
fn project_with_database(m: &Mongo, db: &str) -> (Env, OwnServer) {
    let server = own_server().expect("the test server binary (scripts/test sets it)");
    let mut env = Env::with_tree();
    m.drop_db(db);
    populate(m, db, 2000);
    env.set("MONGODB_URI", m.uri(db, ""));
    env.set("BACKUP_DRILL_MONGODB_URI", server.uri(""));
    env.ok(["backup"]);
    (env, server)
}

#[test]
fn a_drill_restores_compares_runs_the_smoke_test_and_leaves_nothing() {
    let Some(m) = mongo() else { return };
    let db = unique("drillok");
    let (mut env, server) = project_with_database(&m, &db);
    let before = state(&m, &db);
    let out = env.path("out");
    fs::create_dir(&out).unwrap();
    fs::create_dir(out.join("empty")).unwrap();
    // The smoke test records what it was given, and dumps the scratch
    // database it was pointed at with cofre itself (a real client).
    env.set("COFRE_BIN", env!("CARGO_BIN_EXE_cofre"));
    env.set("OUT", &out);
    env.set(
        "BACKUP_DRILL_COMMAND",
        r#"env > "$OUT/env.txt" && ls -A > "$OUT/ls.txt" && "$COFRE_BIN" backup -q --no-prune --encryption none --source "$OUT/empty" --backup-dir "$OUT/dump" --mongo-uri "$COFRE_DRILL_MONGODB_URI""#,
    );
    let run = env.ok(["drill"]);
    let printed = stdout(&run);
    assert!(printed.starts_with("drill passed: backup_"), "{printed}");

    let record = &drill_state(&env)["last"];
    assert_eq!(record["ok"], true, "{record:#}");
    assert_eq!(record["collections"], 7, "{record:#}");
    assert_eq!(record["documents"], counts(&m, &db), "{record:#}");
    assert!(record["files"].as_u64().unwrap() > 50, "{record:#}");
    let rto = record["recovery_seconds"].as_f64().unwrap();
    let parts =
        record["files_seconds"].as_f64().unwrap() + record["database_seconds"].as_f64().unwrap();
    assert!(rto > 0.0 && (rto - parts).abs() < 1e-6, "{record:#}");
    assert_eq!(record["command"]["exit_code"], 0, "{record:#}");

    // What the smoke test saw.
    let seen = fs::read_to_string(out.join("env.txt")).unwrap();
    let var = |name: &str| {
        seen.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} not set: {seen}"))
            .to_owned()
    };
    let uri = var("COFRE_DRILL_MONGODB_URI");
    assert!(
        uri.starts_with(&format!("mongodb://127.0.0.1:{}/cofre_drill_", server.port))
            && uri.contains(&format!("_{db}?")),
        "{uri}"
    );
    assert_eq!(
        var("MONGODB_URI"),
        uri,
        "the application's own variable points at the scratch copy"
    );
    assert!(var("COFRE_DRILL_DATABASES").starts_with(&format!("{db}=cofre_drill_")));
    let dir = var("COFRE_DRILL_DIR");
    assert!(
        dir.starts_with(env.backups.join(".cofre-drill-").to_str().unwrap()),
        "{dir}"
    );
    assert!(!seen.lines().any(|l| l.starts_with("BACKUP_")), "{seen}");
    let listed = fs::read_to_string(out.join("ls.txt")).unwrap();
    assert!(
        listed.lines().any(|l| l == "src") && listed.lines().any(|l| l == "data"),
        "{listed}"
    );
    // The dump it made holds the scratch database, with its documents.
    let dumped = archives_in(&out.join("dump"));
    assert_eq!(dumped.len(), 1);
    let list = sh(&format!("tar -tzf '{}'", dumped[0].display()));
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(names.contains(&format!("_{db}/people.bson")), "{names}");

    // Nothing left: no scratch database, no scratch directory; the live
    // database untouched.
    assert!(scratch_dbs(&server.client()).is_empty());
    assert!(scratch_dirs(&env).is_empty(), "{:?}", scratch_dirs(&env));
    assert_same_db_state(&before, &state(&m, &db));
    assert!(scratch_dbs_of(&m, &db).is_empty());

    // Status reports it and is healthy for monitoring.
    env.ok(["status", "--max-drill-age", "1h"]);
    let status: serde_json::Value =
        serde_json::from_slice(&env.ok(["status", "--json"]).stdout).unwrap();
    assert_eq!(status["drill"]["last"]["ok"], true);
    assert_eq!(status["drill"]["schedule"], "0 4 * * 0");
    m.drop_db(&db);
}

fn assert_same_db_state(a: &crate::mongo::DbState, b: &crate::mongo::DbState) {
    assert_eq!(a.0, b.0, "collections changed");
    assert_eq!(a.1, b.1, "documents changed");
    assert_eq!(a.2, b.2, "indexes changed");
}

#[test]
fn a_damaged_archive_fails_the_drill_is_reported_and_leaves_nothing() {
    let Some(m) = mongo() else { return };
    let db = unique("drilldamaged");
    let (env, server) = project_with_database(&m, &db);
    let archive = env.archive();
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&archive, &bytes).unwrap();
    let msg = env.fails(["drill"], 1);
    assert!(
        msg.contains("restore drill of backup_") && msg.contains("failed at archive"),
        "{msg}"
    );
    let record = &drill_state(&env)["last"];
    assert_eq!(record["ok"], false);
    assert_eq!(record["failed_check"], "archive");
    assert!(scratch_dbs(&server.client()).is_empty());
    assert!(scratch_dirs(&env).is_empty());
    // Monitoring sees it.
    let status = env.run(["status", "--max-drill-age", "8d"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(
        stdout(&status).contains("restore drill     FAILED"),
        "{}",
        text(&status)
    );
    m.drop_db(&db);
}

#[test]
fn a_failing_or_hanging_smoke_test_fails_the_drill_and_is_stopped() {
    let mut env = Env::with_tree();
    env.ok(["backup"]);
    env.set(
        "BACKUP_DRILL_COMMAND",
        "echo checking; echo boom >&2; exit 7",
    );
    let msg = env.fails(["drill"], 1);
    assert!(
        msg.contains("failed at command")
            && msg.contains("exited with code 7")
            && msg.contains("boom"),
        "{msg}"
    );
    let record = &drill_state(&env)["last"];
    assert_eq!(record["command"]["exit_code"], 7);
    assert_eq!(record["command"]["output_tail"], "checking\nboom");
    assert!(scratch_dirs(&env).is_empty());

    // A command that hangs, with a child of its own, is stopped at the timeout.
    let pid_file = env.path("pid");
    env.set(
        "BACKUP_DRILL_COMMAND",
        format!(
            "sleep 300 & echo $! > '{}'; echo waiting; wait",
            pid_file.display()
        ),
    );
    env.set("BACKUP_DRILL_TIMEOUT", "1s");
    let started = Instant::now();
    let msg = env.fails(["drill"], 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        msg.contains("did not finish within 1s (BACKUP_DRILL_TIMEOUT)"),
        "{msg}"
    );
    let record = &drill_state(&env)["last"];
    assert_eq!(record["command"]["timed_out"], true);
    assert_eq!(record["command"]["output_tail"], "waiting");
    let pid = fs::read_to_string(&pid_file).unwrap();
    assert!(
        !process_alive(pid.trim()),
        "the smoke test's child {pid} still runs"
    );
    assert!(scratch_dirs(&env).is_empty());
    // A bad timeout is a configuration error.
    env.set("BACKUP_DRILL_TIMEOUT", "soon");
    let msg = env.fails(["drill"], 2);
    assert!(msg.contains("BACKUP_DRILL_TIMEOUT"), "{msg}");
}

fn process_alive(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Starts `cofre drill` with a smoke test that writes its pid and sleeps,
/// and returns once the smoke test runs (the scratch is then all made).
fn drill_waiting_in_its_smoke_test(env: &mut Env, stderr: Stdio) -> (Child, PathBuf) {
    let pid_file = env.path("pid");
    env.set(
        "BACKUP_DRILL_COMMAND",
        format!("echo $$ > '{}'; sleep 300", pid_file.display()),
    );
    let child = env
        .cmd()
        .arg("drill")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "the smoke test never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, pid_file)
}

#[test]
fn sigterm_in_the_middle_of_a_drill_cleans_up() {
    let Some(m) = mongo() else { return };
    let db = unique("drillterm");
    let (mut env, server) = project_with_database(&m, &db);
    let (mut child, pid_file) = drill_waiting_in_its_smoke_test(&mut env, Stdio::piped());
    // Mid-drill: the scratch is there.
    let client = server.client();
    assert_eq!(scratch_dbs(&client).len(), 1, "{:?}", scratch_dbs(&client));
    assert_eq!(scratch_dirs(&env).len(), 1);
    sh(&format!("kill -TERM {}", child.id()));
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed at cancelled: the drill was stopped"),
        "{err}"
    );
    assert!(
        scratch_dbs(&client).is_empty(),
        "{:?}",
        scratch_dbs(&client)
    );
    assert!(scratch_dirs(&env).is_empty());
    let pid = fs::read_to_string(&pid_file).unwrap();
    assert!(
        !process_alive(pid.trim()),
        "the smoke test {pid} still runs"
    );
    assert_eq!(drill_state(&env)["last"]["failed_check"], "cancelled");
    assert!(drill_state(&env)["pending"].as_array().unwrap().is_empty());
    m.drop_db(&db);
}

#[test]
fn leftovers_of_a_killed_drill_are_removed_by_the_next() {
    let Some(m) = mongo() else { return };
    let db = unique("drillkill");
    let (mut env, server) = project_with_database(&m, &db);
    let (mut child, pid_file) = drill_waiting_in_its_smoke_test(&mut env, Stdio::null());
    // kill -9: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let pid = fs::read_to_string(&pid_file).unwrap();
    sh(&format!("kill -9 {} || true", pid.trim()));
    let client = server.client();
    assert_eq!(scratch_dbs(&client).len(), 1);
    assert_eq!(scratch_dirs(&env).len(), 1);
    env.set("BACKUP_DRILL_COMMAND", "true");
    let out = env.ok(["drill", "-v"]);
    assert!(
        text(&out).contains("left by an interrupted drill"),
        "{}",
        text(&out)
    );
    assert!(
        scratch_dbs(&client).is_empty(),
        "{:?}",
        scratch_dbs(&client)
    );
    assert!(scratch_dirs(&env).is_empty());
    m.drop_db(&db);
}

#[test]
fn a_drill_on_the_backup_server_touches_nothing_and_leaves_lookalike_names_alone() {
    let Some(m) = mongo() else { return };
    let db = unique("drillsame");
    let mut env = Env::new();
    fs::write(env.project.join("app.js"), "console.log('hi')\n").unwrap();
    m.drop_db(&db);
    populate(&m, &db, 0);
    env.set("MONGODB_URI", m.uri(&db, ""));
    env.ok(["backup"]);
    let before = state(&m, &db);
    // The default drill server is the backup's own: scratch names only.
    env.ok(["drill"]);
    assert_same_db_state(&before, &state(&m, &db));
    assert!(scratch_dbs_of(&m, &db).is_empty());

    // Databases named as a drill's scratch used to be (the time alone):
    // with a random tag in every name, nobody can take them ahead, and
    // what has such a name is left alone.
    let now = chrono::Utc::now();
    let planted: Vec<String> = (0..40)
        .map(|s| {
            let t = now + chrono::Duration::seconds(s);
            format!("cofre_drill_{}_{db}", t.format("%Y%m%d%H%M%S"))
        })
        .collect();
    m.run(async {
        for name in &planted {
            m.db(name)
                .collection::<Document>("precious")
                .insert_one(doc! { "keep": true })
                .await
                .unwrap();
        }
    });
    env.ok(["drill"]);
    let left = scratch_dbs_of(&m, &db);
    for name in &planted {
        assert!(left.contains(name), "{name} was dropped");
        let n = m.run(async {
            m.db(name)
                .collection::<Document>("precious")
                .count_documents(doc! {})
                .await
                .unwrap()
        });
        assert_eq!(n, 1, "{name} was changed");
    }
    assert_eq!(left.len(), planted.len(), "{left:?}");
    assert!(scratch_dirs(&env).is_empty());
    assert_same_db_state(&before, &state(&m, &db));
    for name in planted.iter().chain([&db]) {
        m.drop_db(name);
    }
}

/// An archive whose dump holds BSON types this server does not keep as
/// they are (`undefined` becomes null, DBPointer a DBRef document): the
/// restore succeeds, and only the drill's comparison notices.
#[test]
fn a_server_that_changes_documents_fails_the_comparison() {
    let Some(_m) = mongo() else { return };
    let Some(server) = own_server() else { return };
    let mut env = keyed_env();
    let bson =
        fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bson/all_types.bson"))
            .unwrap();
    let mut documents = 0;
    let mut at = 0;
    while at < bson.len() {
        at += u32::from_le_bytes(bson[at..at + 4].try_into().unwrap()) as usize;
        documents += 1;
    }
    let meta = br#"{"options":{},"indexes":[{"v":2,"key":{"_id":1},"name":"_id_"}],"collectionName":"all_types","type":"collection"}"#;
    let entry = |path: &str, kind: Kind, data: &[u8]| H {
        path: path.as_bytes().to_vec(),
        kind,
        data: data.to_vec(),
        link: None,
        mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
        uid: 0,
    };
    let entries = [
        entry("mongodb", Kind::Dir, b""),
        entry("mongodb/fx", Kind::Dir, b""),
        entry("mongodb/fx/all_types.bson", Kind::File, &bson),
        entry("mongodb/fx/all_types.metadata.json", Kind::File, meta),
    ];
    let section = serde_json::json!({
        "uri": "mongodb://elsewhere/",
        "server_version": "7.0.0",
        "consistent": true,
        "databases": ["fx"],
        "collections": [{
            "db": "fx", "name": "all_types", "type": "collection",
            "documents": documents, "bytes": bson.len(),
            "hash": blake3::hash(&bson).to_hex().to_string(),
            "bson_path": "mongodb/fx/all_types.bson",
            "metadata_path": "mongodb/fx/all_types.metadata.json",
        }],
    });
    let tar = tar_with_manifest(&entries, &[("mongodb", section)]);
    let dest = env.backups.join("backup_2030-01-01T00-00-00.tar.gz.age");
    plant(&env, &dest, &gzip(&tar));
    env.set("BACKUP_DRILL_MONGODB_URI", server.uri(""));
    let msg = env.fails(["drill"], 1);
    assert!(
        msg.contains("failed at compare")
            && msg.contains("fx.all_types: the documents on the server differ"),
        "{msg}"
    );
    let record = &drill_state(&env)["last"];
    assert_eq!(record["documents"], documents);
    assert!(scratch_dbs(&server.client()).is_empty());
    assert!(scratch_dirs(&env).is_empty());
}

#[test]
fn the_daemon_drills_on_its_schedule_and_never_beside_a_backup() {
    use crate::daemon::{Daemon, count};
    let mut env = Env::with_tree();
    env.set("BACKUP_SCHEDULE", "*/2 * * * * *");
    env.set("BACKUP_DRILL_SCHEDULE", "*/3 * * * * *");
    env.set("BACKUP_TIMEZONE", "UTC");
    env.set("BACKUP_RETENTION_DAYS", "0");
    env.set("BACKUP_KEEP_LAST", "2");
    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_for(Duration::from_secs(90), |l| count(
            l,
            "scheduled drill passed"
        ) >= 3),
        "{:#?}",
        daemon.seen
    );
    let (code, seen) = daemon.stop();
    assert_eq!(code, Some(0), "{seen:#?}");
    // One job at a time: every start is followed by its own end before
    // the next start.
    let mut running: Option<&str> = None;
    let mut jobs = (0, 0);
    for line in &seen {
        let start = if line.contains("backup started") {
            Some("backup")
        } else if line.contains("drill started") {
            Some("drill")
        } else {
            None
        };
        if let Some(kind) = start {
            assert!(
                running.is_none(),
                "{kind} started while a {running:?} ran: {seen:#?}"
            );
            running = Some(kind);
            if kind == "backup" {
                jobs.0 += 1;
            } else {
                jobs.1 += 1;
            }
        }
        let end = if line.contains("backup finished") {
            Some("backup")
        } else if line.contains("drill passed:") || line.contains("drill failed at") {
            Some("drill")
        } else {
            None
        };
        if let Some(kind) = end {
            assert_eq!(running, Some(kind), "{line}: {seen:#?}");
            running = None;
        }
    }
    assert!(jobs.0 >= 2 && jobs.1 >= 3, "{jobs:?}: {seen:#?}");
    assert_eq!(count(&seen, "skipped this"), 0, "{seen:#?}");
    assert_eq!(count(&seen, "drill failed"), 0, "{seen:#?}");
    let state = drill_state(&env);
    assert_eq!(state["last"]["ok"], true);
    assert!(scratch_dirs(&env).is_empty());
    let status: serde_json::Value =
        serde_json::from_slice(&env.ok(["status", "--json", "--max-drill-age", "1m"]).stdout)
            .unwrap();
    assert_eq!(status["healthy"], true, "{status:#}");
}
