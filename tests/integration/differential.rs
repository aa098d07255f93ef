//! Differential archives: between fulls (`BACKUP_FULL_EVERY`), a backup
//! holds only what changed, with GNU tar's directory records, so `age` and
//! `tar -g /dev/null` over the full reproduce the day, as `cofre restore`
//! does. Every day of a chain restores that day's tree; a chain survives
//! retention, the bucket and its locks; the faults a chain meets (its full
//! deleted by hand, `kill -9`, a file changing during the walk) lose
//! nothing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use crate::harness::*;

/// The names of the archives in `env`'s backup directory, oldest first.
fn names(env: &Env) -> Vec<String> {
    env.archives()
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect()
}

fn is_diff(name: &str) -> bool {
    name.contains(".diff.tar.")
}

/// The project as a restore should give it back.
fn expected(env: &Env) -> BTreeMap<String, Node> {
    snapshot(&env.project, excluded_by_default)
}

/// One backup; returns the new archive's name (waiting a second first,
/// since names are per second).
fn backup(env: &Env) -> String {
    thread::sleep(Duration::from_millis(1050));
    let before = names(env);
    env.ok(["backup", "--no-prune"]);
    let after = names(env);
    let new: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
    assert_eq!(new.len(), 1, "{before:?} -> {after:?}");
    new[0].clone()
}

/// Restores `archive` with cofre into a new directory and returns it.
fn restore(env: &Env, archive: &str, into: &str) -> PathBuf {
    let target = env.path(into);
    env.ok(argv!["restore", archive, "--to", &target]);
    target
}

/// Opens `full` and then `diff` with the age and GNU tar CLIs, as the
/// README says, into a new directory; returns its `files/`.
fn by_tar(env: &Env, chain: &[&str], into: &str) -> PathBuf {
    let out = env.path(into);
    fs::create_dir_all(&out).unwrap();
    for name in chain {
        sh(&format!(
            "age -d -i '{}' '{}' | tar -C '{}' -xpz -g /dev/null -f -",
            env.identity().display(),
            env.backups.join(name).display(),
            out.display()
        ));
    }
    out.join("files")
}

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// The day-2 changes: content, a same-size change with the old mtime put
/// back, new and deleted files, a deleted directory, every type change
/// (file → directory, directory → symlink, directory → file, symlink →
/// file), a rename, a mode-only change, a hard link to an unchanged file.
fn day_two(p: &Path) {
    write(&p.join("data/export_001.json"), b"[{\"id\":1}]");
    let sneaky = p.join("data/export_005.json");
    let before = fs::symlink_metadata(&sneaky).unwrap();
    let mut body = fs::read(&sneaky).unwrap();
    body[1] ^= 0x20;
    fs::write(&sneaky, &body).unwrap();
    set_mtime(
        &sneaky,
        std::os::unix::fs::MetadataExt::mtime(&before),
        std::os::unix::fs::MetadataExt::mtime_nsec(&before),
    );
    write(&p.join("src/new_day2.js"), b"export const two = 2;\n");
    fs::remove_file(p.join("data/export_002.json")).unwrap();
    fs::remove_dir_all(p.join("src/module03")).unwrap();
    fs::set_permissions(
        p.join("config/readonly.txt"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::remove_file(p.join("config/readonly.txt")).unwrap();
    write(&p.join("config/readonly.txt/now-a-dir.txt"), b"dir\n");
    fs::set_permissions(p.join("private"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(p.join("private")).unwrap();
    std::os::unix::fs::symlink("data", p.join("private")).unwrap();
    fs::remove_dir(p.join("odd/empty-dir")).unwrap();
    write(&p.join("odd/empty-dir"), b"now a file\n");
    fs::remove_file(p.join("odd/dangling")).unwrap();
    write(&p.join("odd/dangling"), b"no longer a link\n");
    fs::rename(
        p.join("public/assets/img1.png"),
        p.join("public/assets/renamed.png"),
    )
    .unwrap();
    fs::set_permissions(p.join("bin/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::hard_link(p.join("data/export_003.json"), p.join("data/hardlink.json")).unwrap();
}

/// The day-3 changes: through one name of the hard link, the other sees
/// it; day 2's new file goes, the deleted directory comes back, a file
/// turned directory turns back into a file.
fn day_three(p: &Path) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(p.join("data/hardlink.json"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"\n").unwrap();
    drop(f);
    fs::remove_file(p.join("src/new_day2.js")).unwrap();
    write(&p.join("src/module03/back.js"), b"back\n");
    fs::remove_dir_all(p.join("config/readonly.txt")).unwrap();
    write(&p.join("config/readonly.txt"), b"a file again\n");
}

#[test]
fn every_day_of_a_chain_restores_that_day_and_tar_agrees() {
    let env = Env::with_tree();
    let mut days = Vec::new();
    let full = backup(&env);
    assert!(!is_diff(&full), "{full}");
    days.push((full.clone(), expected(&env)));
    day_two(&env.project);
    let two = backup(&env);
    assert!(is_diff(&two), "{two}");
    days.push((two.clone(), expected(&env)));
    day_three(&env.project);
    let three = backup(&env);
    assert!(is_diff(&three), "{three}");
    days.push((three.clone(), expected(&env)));
    // A differential holds what changed, not the tree.
    let size = |n: &str| fs::metadata(env.backups.join(n)).unwrap().len();
    assert!(
        size(&two) * 4 < size(&full),
        "{} vs {}",
        size(&two),
        size(&full)
    );
    for (i, (name, tree)) in days.iter().enumerate() {
        let restored = restore(&env, name, &format!("restored-{i}"));
        assert_same(tree, &snapshot(&restored, |_| false));
        let mut chain = vec![full.as_str()];
        if name != &full {
            chain.push(name);
        }
        let opened = by_tar(&env, &chain, &format!("by-tar-{i}"));
        assert_same(tree, &snapshot(&opened, |_| false));
        env.ok(["verify", name]);
    }
    // The day-2 file day 3 deleted is not brought back by the full either.
    assert!(!env.path("restored-2/src/new_day2.js").exists());
    // list says which is which, and of what.
    let listed = stdout(&env.ok(["list", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    for row in rows.as_array().unwrap() {
        let name = row["name"].as_str().unwrap();
        if is_diff(name) {
            assert_eq!(row["kind"], "differential");
            assert_eq!(row["base"], full.as_str());
        } else {
            assert_eq!(row["kind"], "full");
        }
    }
    // A dry run reads both and says what the differential removes.
    let out = stdout(&env.ok(argv![
        "restore",
        &three,
        "--to",
        env.path("dry"),
        "--dry-run"
    ]));
    assert!(
        out.contains(&format!("{full} and {three} verified")),
        "{out}"
    );
    // (Deleted since the full; day 2's new file never was in it.)
    assert!(out.contains("would remove data/export_002.json"), "{out}");
    assert!(!out.contains("would remove src/new_day2.js"), "{out}");
    assert!(!env.path("dry").exists());
}

#[test]
fn unchanged_files_are_not_stored_and_full_every_decides() {
    let mut env = Env::with_tree();
    let full = backup(&env);
    // Nothing changed: the differential holds directories and no file.
    let quiet = backup(&env);
    assert!(is_diff(&quiet));
    let summary = stdout(&env.ok(["list", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(rows[0]["name"], quiet.as_str());
    assert_eq!(rows[0]["stored_files"], 0, "{summary}");
    // ...and restores every file the full holds.
    assert_eq!(rows[0]["files"], rows[1]["files"], "{summary}");
    assert!(rows[1]["files"].as_u64().unwrap() > 50, "{summary}");
    // --full makes a full now; BACKUP_FULL_EVERY=0 every time.
    thread::sleep(Duration::from_millis(1050));
    env.ok(["backup", "--no-prune", "--full"]);
    assert!(!is_diff(names(&env).last().unwrap()));
    env.set("BACKUP_FULL_EVERY", "0");
    assert!(!is_diff(&backup(&env)));
    // A full older than BACKUP_FULL_EVERY is renewed.
    env.set("BACKUP_FULL_EVERY", "2s");
    thread::sleep(Duration::from_secs(2));
    assert!(!is_diff(&backup(&env)));
    env.set("BACKUP_FULL_EVERY", "soon");
    let msg = env.fails(["backup"], 2);
    assert!(
        msg.contains("BACKUP_FULL_EVERY") && msg.contains("7d"),
        "{msg}"
    );
    let _ = full;
}

#[test]
fn a_full_deleted_by_hand_is_reported_and_the_next_backup_is_full() {
    let env = Env::with_tree();
    let full = backup(&env);
    write(&env.project.join("src/changed.js"), b"1\n");
    let diff = backup(&env);
    assert!(is_diff(&diff));
    fs::remove_file(env.backups.join(&full)).unwrap();
    fs::remove_file(env.backups.join(format!("{full}.minisig"))).unwrap();
    // status names the differential that cannot be restored, and what it needs.
    let out = env.run(["status"]);
    let said = stdout(&out);
    assert!(
        said.contains(&format!("{diff} (needs {full})")) && said.contains("cannot be restored"),
        "{said}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&env.ok(["status", "--json"]))).unwrap();
    assert_eq!(json["unrestorable"][0]["archive"], diff.as_str());
    assert_eq!(json["healthy"], false);
    // Restore, verify and drill refuse it, saying which archive is needed.
    let target = env.path("restored");
    let msg = env.fails(argv!["restore", &diff, "--to", &target], 1);
    assert!(msg.contains(&full) && msg.contains("not in"), "{msg}");
    assert!(!target.exists(), "nothing was made");
    let msg = env.fails(["verify", &diff], 1);
    assert!(msg.contains(&full), "{msg}");
    let msg = env.fails(["drill", &diff], 1);
    assert!(msg.contains(&full), "{msg}");
    // The next backup is a full, and all is well again.
    let next = backup(&env);
    assert!(!is_diff(&next), "{next}");
    let restored = restore(&env, "latest", "after");
    assert_same(&expected(&env), &snapshot(&restored, |_| false));
    // The orphan stays listed as such (retention deletes it in time).
    let said = stdout(&env.ok(["status"]));
    assert!(said.contains("1 differential cannot be restored"), "{said}");
}

#[test]
fn a_replaced_full_is_refused_by_its_manifest_hash() {
    let env = Env::with_tree();
    let full = backup(&env);
    write(&env.project.join("src/changed.js"), b"1\n");
    let diff = backup(&env);
    // Another full, signed here, put under the first one's name (a
    // signature is per name: sign the impostor for that name).
    fs::remove_dir_all(env.project.join("data")).unwrap();
    thread::sleep(Duration::from_millis(1050));
    env.ok(["backup", "--full", "--no-prune"]);
    let other = names(&env).into_iter().last().unwrap();
    fs::rename(env.backups.join(&other), env.backups.join(&full)).unwrap();
    fs::remove_file(env.backups.join(format!("{other}.minisig"))).unwrap();
    env.sign(&env.backups.join(&full));
    let target = env.path("restored");
    let msg = env.fails(argv!["restore", &diff, "--to", &target], 1);
    assert!(
        msg.contains("another manifest") && msg.contains(&full),
        "{msg}"
    );
    assert!(!target.exists(), "nothing was left behind");
}

#[test]
fn kill_9_during_a_differential_leaves_nothing_with_a_final_name() {
    let mut env = Env::with_tree();
    env.set("BACKUP_COMPRESSION", "gzip:9");
    backup(&env);
    let mut rng = Rng::new(20);
    for i in 0..3 {
        write(
            &env.project.join(format!("uploads/u{i}.bin")),
            &rng.bytes(8 << 20),
        );
    }
    for delay_ms in [0u64, 30, 150, 400] {
        let mut child = env
            .cmd()
            .args(["backup", "--no-prune"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever has a final name is complete.
        for a in env.archives() {
            env.ok(argv!["verify", a]);
        }
    }
    let last = backup(&env);
    assert!(is_diff(&last));
    // No temporary file and no index without its archive stays.
    for e in fs::read_dir(&env.backups).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.starts_with(".cofre-tmp-"), "{n}");
        if let Some(a) = n.strip_suffix(".index") {
            assert!(env.backups.join(a).exists(), "{n} without its archive");
        }
    }
    let restored = restore(&env, "latest", "restored");
    assert_same(&expected(&env), &snapshot(&restored, |_| false));
    // A drill of the differential restores both and records its full.
    env.ok(["drill"]);
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&env.ok(["status", "--json"]))).unwrap();
    let drill = &status["drill"]["last"];
    assert_eq!(drill["ok"], true, "{drill:#}");
    assert_eq!(drill["archive"], last.as_str());
    assert!(
        drill["base"].as_str().is_some_and(|b| !is_diff(b)),
        "{drill:#}"
    );
    assert!(drill["files"].as_u64().unwrap() > 50, "{drill:#}");
}

#[test]
fn a_file_changing_during_the_walk_is_stored_again_until_it_is_still() {
    let env = Env::with_tree();
    backup(&env);
    let busy = env.project.join("data/busy.log");
    write(&busy, b"start\n");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let busy = busy.clone();
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut f = fs::OpenOptions::new().append(true).open(&busy).unwrap();
                std::io::Write::write_all(&mut f, format!("line {n}\n").as_bytes()).unwrap();
                n += 1;
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    thread::sleep(Duration::from_millis(1050));
    let out = env.run(["backup", "--no-prune"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Done, with a warning naming the file when it changed while read.
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", text(&out));
    let during = names(&env).into_iter().last().unwrap();
    assert!(is_diff(&during), "{during}");
    writer.join().unwrap();
    // What it archived verifies and restores (a prefix of the file).
    env.ok(["verify", &during]);
    let first = restore(&env, &during, "during");
    let got = fs::read(first.join("data/busy.log")).unwrap();
    assert!(
        fs::read(&busy)
            .unwrap()
            .starts_with(&got[..got.len().min(6)])
    );
    // Still now: the next differential stores it again, whole.
    let after = backup(&env);
    let restored = restore(&env, &after, "after");
    assert_same(&expected(&env), &snapshot(&restored, |_| false));
}

#[test]
fn retention_keeps_the_full_a_kept_differential_needs_and_says_why() {
    let mut env = Env::with_tree();
    let full = backup(&env);
    write(&env.project.join("a.txt"), b"1");
    let one = backup(&env);
    write(&env.project.join("a.txt"), b"2");
    let two = backup(&env);
    env.set("BACKUP_RETENTION_DAYS", "0");
    env.set("BACKUP_KEEP_LAST", "1");
    let plan = stdout(&env.ok(["prune", "--dry-run"]));
    assert!(
        plan.contains(&format!("the full of {two}, which is kept")),
        "{plan}"
    );
    assert_eq!(names(&env).len(), 3, "a dry run deletes nothing");
    env.ok(["prune"]);
    assert_eq!(names(&env), vec![full.clone(), two]);
    assert!(!env.backups.join(format!("{one}.minisig")).exists());
    // The full's index stays with it; the pruned differential left nothing.
    assert!(env.backups.join(format!("{full}.index")).exists());
    let restored = restore(&env, "latest", "restored");
    assert_same(&expected(&env), &snapshot(&restored, |_| false));
}

#[test]
fn a_chain_goes_offsite_restores_on_a_new_machine_and_keeps_its_lock() {
    let Some(s3) = crate::offsite::s3() else {
        return;
    };
    let bucket = format!("chain-{}", std::process::id());
    s3.bucket(&bucket, true);
    let mut env = Env::with_tree();
    crate::offsite::use_bucket(&mut env, &s3.endpoint, &bucket, "app");
    env.set("BACKUP_REMOTE_LOCK", "governance");
    env.set("BACKUP_REMOTE_RETENTION_DAYS", "1");
    let full = backup(&env);
    let until = |name: &str| {
        s3.admin(
            &s3.endpoint,
            &["retention", &bucket, &format!("app/{name}")],
        )
        .trim()
        .to_owned()
    };
    let full_until = until(&full);
    write(&env.project.join("src/day2.js"), b"2\n");
    let diff = backup(&env);
    assert!(is_diff(&diff));
    // Each night uploads only the new archive.
    let versions = s3.admin(&s3.endpoint, &["versions", &bucket]);
    assert_eq!(
        versions
            .lines()
            .filter(|l| l.contains(&full) && !l.contains(".minisig") && !l.contains(".index"))
            .count(),
        1,
        "{versions}"
    );
    assert!(
        !versions.contains(".index"),
        "the index stays home: {versions}"
    );
    // The full's lock now lasts as long as its differential's.
    let diff_until = until(&diff);
    assert!(diff_until > full_until, "{diff_until} vs {full_until}");
    assert_eq!(until(&full), diff_until);
    assert_eq!(until(&format!("{full}.minisig")), diff_until);
    // A new machine with only the identity file fetches both.
    let kept = env.path("kept-identity.txt");
    fs::copy(env.identity(), &kept).unwrap();
    let mut fresh = Env::new();
    crate::offsite::use_bucket(&mut fresh, &s3.endpoint, &bucket, "app");
    fresh.set("BACKUP_IDENTITY_FILE", &kept);
    let target = fresh.path("recovered");
    fresh.ok(argv!["restore", "--remote", "latest", "--to", &target]);
    assert_same(&expected(&env), &snapshot(&target, |_| false));
    let out = stdout(&fresh.ok(["verify", "--remote", "latest"]));
    assert!(out.contains(&format!("a differential of {full}")), "{out}");
    // Remote retention keeps the full the newest differential needs.
    env.vars.retain(|(k, _)| k != "BACKUP_REMOTE_LOCK");
    env.set("BACKUP_REMOTE_RETENTION_DAYS", "0");
    env.set("BACKUP_KEEP_LAST", "1");
    write(&env.project.join("src/day3.js"), b"3\n");
    let three = backup(&env);
    env.ok(["upload"]);
    let keys = s3.admin(&s3.endpoint, &["keys", &bucket]);
    assert!(keys.contains(&format!("app/{full}\n")), "{keys}");
    assert!(keys.contains(&format!("app/{three}\n")), "{keys}");
}

#[test]
fn a_differential_holds_the_whole_dump_and_drops_what_the_day_dropped() {
    let Some(m) = crate::mongo::mongo() else {
        return;
    };
    let db = crate::mongo::unique("chain_db");
    m.drop_db(&db);
    crate::mongo::populate(&m, &db, 200);
    let mut env = Env::with_tree();
    env.set("MONGODB_URI", m.uri(&db, ""));
    let full = backup(&env);
    m.run(async {
        m.db(&db)
            .collection::<mongodb::bson::Document>("capped")
            .drop()
            .await
            .unwrap();
    });
    let day = crate::mongo::state(&m, &db);
    let diff = backup(&env);
    assert!(is_diff(&diff));
    // cofre: the day's database, not the full's.
    let copy = crate::mongo::unique("chain_copy");
    env.ok(argv![
        "restore",
        &diff,
        "--to",
        env.path("restored"),
        "--mongo-uri",
        m.uri("", ""),
        "--to-db",
        &copy
    ]);
    crate::mongo::assert_same_db(&day, &crate::mongo::state(&m, &copy));
    // tar: the dropped collection's files are gone from the dump too.
    let files = by_tar(&env, &[&full, &diff], "by-tar");
    let dump = files.parent().unwrap().join("mongodb").join(&db);
    assert!(dump.join("everything.bson").is_file(), "{}", dump.display());
    assert!(!dump.join("capped.bson").exists());
    assert!(!dump.join("capped.metadata.json").exists());
    m.drop_db(&db);
    m.drop_db(&copy);
}
