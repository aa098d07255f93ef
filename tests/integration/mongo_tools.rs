//! MongoDB's own tools are the reference: what cofre dumps, `mongorestore`
//! restores (from an archive opened with `age` and `tar` alone); what
//! `mongodump` writes, cofre restores; and cofre's `.metadata.json` says
//! what mongodump's says.
//!
//! `scripts/test` builds `mongodump` and `mongorestore` from the source in
//! `tools/mongo-tools/` (cached) and puts them on `PATH`. Outside it the
//! tests skip (saying so); under `COFRE_TEST_REQUIRE_MONGO_TOOLS=1`, which
//! `.ci/run` sets, a missing tool fails the run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;
use crate::mongo::{Mongo, assert_same_db, mongo, populate, state, unique};

/// The directory holding MongoDB's tools, or `None` (said why) when the
/// tests may skip.
fn tools() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|d| d.join("mongorestore").is_file() && d.join("mongodump").is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("COFRE_TEST_REQUIRE_MONGO_TOOLS").as_deref() != Ok("1"),
            "mongodump and mongorestore are not on PATH (scripts/test builds them from tools/mongo-tools)"
        );
        eprintln!("skipped: mongodump and mongorestore are not on PATH (scripts/test builds them)");
    }
    found
}

/// One of MongoDB's tools (`bsondump`...), or `None` (said why) when the
/// tests may skip.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = tools()?.join(name);
    if !path.is_file() {
        assert!(
            std::env::var("COFRE_TEST_REQUIRE_MONGO_TOOLS").as_deref() != Ok("1"),
            "{name} is not beside mongodump"
        );
        eprintln!("skipped: {name} is not beside mongodump");
        return None;
    }
    Some(path)
}

fn run_tool(dir: &Path, tool: &str, args: &[&str]) {
    let out = Command::new(dir.join(tool)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}",
        text(&out)
    );
}

/// Backs up database `db` with cofre and opens the archive with `age` and
/// `tar` alone into `into` (which then holds `mongodb/`).
fn cofre_dump_opened_by_hand(env: &mut Env, m: &Mongo, db: &str, into: &Path) {
    env.set("MONGODB_URI", m.uri(db, ""));
    env.ok(["backup"]);
    fs::create_dir_all(into).unwrap();
    sh(&format!(
        "age -d -i '{}' '{}' | tar -C '{}' -xzf - mongodb",
        env.identity().display(),
        env.archive().display(),
        into.display()
    ));
}

#[test]
fn mongorestore_restores_what_cofre_dumped() {
    let (Some(m), Some(bin)) = (mongo(), tools()) else {
        return;
    };
    let (source, copy) = (unique("tools_src"), unique("tools_copy"));
    m.drop_db(&source);
    m.drop_db(&copy);
    populate(&m, &source, 3000);
    let mut env = Env::new();
    let opened = env.path("opened");
    cofre_dump_opened_by_hand(&mut env, &m, &source, &opened);
    run_tool(
        &bin,
        "mongorestore",
        &[
            "--uri",
            &m.uri("", ""),
            "--dir",
            opened.join("mongodb").to_str().unwrap(),
            "--nsFrom",
            &format!("{source}.*"),
            "--nsTo",
            &format!("{copy}.*"),
        ],
    );
    assert_same_db(&state(&m, &source), &state(&m, &copy));
    m.drop_db(&source);
    m.drop_db(&copy);
}

#[test]
fn cofre_restores_what_mongodump_dumped() {
    let (Some(m), Some(bin)) = (mongo(), tools()) else {
        return;
    };
    let (source, copy) = (unique("dumped_src"), unique("dumped_copy"));
    m.drop_db(&source);
    m.drop_db(&copy);
    populate(&m, &source, 3000);
    let env = Env::new();
    let out = env.path("dump");
    mongodump_db(&bin, &m, &source, &out);
    env.ok(argv![
        "restore",
        "--mongo-dir",
        out,
        "--mongo-uri",
        &m.uri("", ""),
        "--to-db",
        &copy,
    ]);
    assert_same_db(&state(&m, &source), &state(&m, &copy));
    m.drop_db(&source);
    m.drop_db(&copy);
}

/// `mongodump --db DB --out OUT`.
fn mongodump_db(bin: &Path, m: &Mongo, db: &str, out: &Path) {
    run_tool(
        bin,
        "mongodump",
        &[
            "--uri",
            &m.uri("", ""),
            "--db",
            db,
            "--out",
            out.to_str().unwrap(),
        ],
    );
}

/// A `.metadata.json` as the comparison sees it: mongodump leaves out an
/// empty `options` (cofre always writes it, as older mongodumps did), and
/// `uuid` differs per run only when the server was asked twice.
fn normalized(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let obj = v.as_object_mut().unwrap();
    if obj
        .get("options")
        .is_some_and(|o| o.as_object().is_some_and(|o| o.is_empty()))
    {
        obj.remove("options");
    }
    v
}

#[test]
fn cofre_metadata_matches_mongodump() {
    let (Some(m), Some(bin)) = (mongo(), tools()) else {
        return;
    };
    let db = unique("metadata");
    m.drop_db(&db);
    populate(&m, &db, 0);
    let mut env = Env::new();
    let ours = env.path("ours");
    cofre_dump_opened_by_hand(&mut env, &m, &db, &ours);
    let theirs = env.path("theirs");
    mongodump_db(&bin, &m, &db, &theirs);
    let mut compared = 0;
    for entry in fs::read_dir(theirs.join(&db)).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".metadata.json") {
            continue;
        }
        let mine = ours.join("mongodb").join(&db).join(&name);
        assert!(mine.is_file(), "cofre did not write {name}");
        assert_eq!(normalized(&mine), normalized(&entry.path()), "{name}");
        // The documents are the same bytes, too.
        let bson = name.replace(".metadata.json", ".bson");
        if theirs.join(&db).join(&bson).exists() {
            assert_eq!(
                fs::read(ours.join("mongodb").join(&db).join(&bson)).unwrap(),
                fs::read(theirs.join(&db).join(&bson)).unwrap(),
                "{bson}"
            );
        }
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} collections compared");
    m.drop_db(&db);
}
