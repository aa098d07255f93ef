//! What cofre reads back is not believed until it is proven cofre's own:
//! a state file in `BACKUP_DIR`, an archive signed with a key two projects
//! share, files named like archives, the project's own directories and
//! ignore files, the log file. Each test builds the hostile input by hand
//! and looks at what matters afterwards: the database still there, the
//! directory outside untouched, the genuine archives kept, no byte from
//! outside the project in the archive, memory bounded, the target file
//! unchanged.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::*;

/// An environment's project path as cofre names it (canonical).
fn source_of(env: &Env) -> String {
    env.project.canonicalize().unwrap().display().to_string()
}

/// A copy of `archive` (and its signature) at `dir`.
fn copy_archive(archive: &Path, dir: &Path) -> PathBuf {
    let dest = dir.join(archive.file_name().unwrap());
    fs::copy(archive, &dest).unwrap();
    fs::copy(
        format!("{}.minisig", archive.display()),
        format!("{}.minisig", dest.display()),
    )
    .unwrap();
    dest
}

/// Two projects of one user: they share HOME, so the identity and the
/// signing key. Project B has backed up after project A.
fn two_projects() -> (Env, Env) {
    let a = Env::new();
    fs::write(a.project.join("whose.txt"), "project A\n").unwrap();
    a.ok(["backup"]);
    std::thread::sleep(Duration::from_millis(1100));
    let mut b = Env::new();
    b.home = a.home.clone();
    fs::write(b.project.join("whose.txt"), "project B\n").unwrap();
    b.ok(["backup"]);
    (a, b)
}

#[test]
fn another_projects_archive_with_the_same_key_is_named_never_taken_for_this_ones() {
    let (a, b) = two_projects();
    let own = a.archive();
    let planted = copy_archive(&b.archive(), &a.backups);
    let planted_name = planted.file_name().unwrap().to_str().unwrap().to_owned();

    // Listed for what it is.
    let listed = stdout(&a.ok(["list"]));
    assert!(
        listed.contains("foreign") && listed.contains(&source_of(&b)),
        "{listed}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&a.ok(["list", "--json"]))).unwrap();
    let row = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == planted_name.as_str())
        .unwrap();
    assert_eq!(row["signature"], "foreign");
    assert_eq!(row["source"], source_of(&b).as_str());

    // `latest` is A's own, newer name or not; the foreign one is named.
    let target = a.path("restored");
    let out = a.ok(argv!["restore", "latest", "--to", target]);
    assert_eq!(
        fs::read_to_string(target.join("whose.txt")).unwrap(),
        "project A\n"
    );
    assert!(text(&out).contains(&planted_name), "{}", text(&out));
    // Named, it is read, with a loud word.
    let out = a.ok(["verify", &planted_name]);
    assert!(
        stdout(&out).contains("not of this project") && text(&out).contains(&source_of(&b)),
        "{}",
        text(&out)
    );
    // Drills test A's own.
    let drilled = a.ok(["drill", "--json"]);
    let record: serde_json::Value = serde_json::from_str(&stdout(&drilled)).unwrap();
    assert_eq!(
        record["archive"],
        own.file_name().unwrap().to_str().unwrap()
    );

    // An unsigned archive planted newer still: --allow-unsigned does not
    // make it `latest`.
    let unsigned = a.backups.join("backup_2099-01-01T00-00-00.tar.gz.age");
    fs::write(&unsigned, b"junk").unwrap();
    let target = a.path("restored-2");
    a.ok(argv![
        "restore",
        "latest",
        "--allow-unsigned",
        "--to",
        target,
    ]);
    assert_eq!(
        fs::read_to_string(target.join("whose.txt")).unwrap(),
        "project A\n"
    );

    // No archive of this project, all of one other (a new machine, run
    // from another directory): `latest` is the newest of them, said loudly.
    fs::remove_file(&own).unwrap();
    fs::remove_file(format!("{}.minisig", own.display())).unwrap();
    fs::remove_file(&unsigned).unwrap();
    let target = a.path("r3");
    let out = a.ok(argv!["restore", "latest", "--to", target]);
    assert!(
        text(&out).contains("no archive in") && text(&out).contains(&source_of(&b)),
        "{}",
        text(&out)
    );
    assert_eq!(
        fs::read_to_string(target.join("whose.txt")).unwrap(),
        "project B
"
    );
    // Archives of two other projects and none of this one: which one is
    // meant, nothing says. Refused, naming them.
    let third = a.backups.join("backup_2026-01-01T00-00-00.tar.gz.age");
    fs::write(&third, b"x").unwrap();
    a.sign_as(&third, "/srv/some-other-project");
    let msg = a.fails(
        ["restore", "latest", "--to", a.path("r4").to_str().unwrap()],
        1,
    );
    assert!(
        msg.contains("2 other projects")
            && msg.contains(&source_of(&b))
            && msg.contains("--source"),
        "{msg}"
    );
    assert!(!a.path("r4").exists());
}

/// Retention plans over this project's signed archives only: tiny
/// unsigned files at month ends, and another project's archives, neither
/// take a keep slot nor get deleted.
#[test]
fn retention_counts_only_this_projects_signed_archives() {
    let (mut a, b) = two_projects();
    // This project's archives of past months, signed as cofre signs them
    // (an archive's content does not matter to retention).
    let genuine: Vec<PathBuf> = [
        "backup_2026-08-31T00-00-00.tar.gz.age",
        "backup_2026-09-30T00-00-00.tar.gz.age",
        "backup_2026-10-31T00-00-00.tar.gz.age",
    ]
    .iter()
    .map(|n| {
        let p = a.backups.join(n);
        fs::write(&p, b"an old archive").unwrap();
        a.sign(&p);
        p
    })
    .collect();
    // Planted later in the same months: unsigned, and another project's.
    let planted: Vec<PathBuf> = [
        "backup_2026-09-30T23-59-59.tar.gz.age",
        "backup_2026-10-31T23-59-59.tar.gz.age",
    ]
    .iter()
    .map(|n| {
        let p = a.backups.join(n);
        fs::write(&p, b"x").unwrap();
        p
    })
    .collect();
    let foreign = a.backups.join("backup_2026-10-31T23-59-58.tar.gz.age");
    fs::write(&foreign, b"x").unwrap();
    a.sign_as(&foreign, &source_of(&b));

    a.set("BACKUP_RETENTION_DAYS", "0");
    a.set("BACKUP_KEEP_MONTHLY", "3");
    let plan = stdout(&a.ok(["prune", "--dry-run"]));
    for p in planted.iter().chain([&foreign]) {
        let name = p.file_name().unwrap().to_str().unwrap();
        let line = plan.lines().find(|l| l.contains(name)).unwrap();
        assert!(
            line.starts_with("keep") && line.contains("left alone"),
            "{plan}"
        );
    }
    a.ok(["prune"]);
    // The monthly slots went to the genuine archives of October and
    // September (and this month's); August is the fourth month.
    assert!(genuine[2].exists() && genuine[1].exists(), "{plan}");
    assert!(!genuine[0].exists(), "{plan}");
    assert!(!Path::new(&format!("{}.minisig", genuine[0].display())).exists());
    for p in planted.iter().chain([&foreign]) {
        assert!(p.exists(), "{} was deleted", p.display());
    }
    assert_eq!(
        a.archives()
            .iter()
            .filter(|p| p.file_name().unwrap().to_str().unwrap() > "backup_2026-12")
            .count(),
        1,
        "this month's real backup is kept"
    );
}

/// A drill's record of its own scratch (`.cofre-drill.json`) is read back
/// from `BACKUP_DIR`; edited, it must not make a drill delete a directory
/// or drop a database that is not provably a drill's.
#[test]
fn an_edited_drill_record_removes_nothing_that_is_not_a_drills() {
    let Some(m) = crate::mongo::mongo() else {
        return;
    };
    let db = crate::mongo::unique("shopdrill");
    let victim_db = crate::mongo::unique("shop");
    let mut env = Env::new();
    fs::write(env.project.join("app.js"), "1\n").unwrap();
    m.drop_db(&db);
    crate::mongo::populate(&m, &db, 0);
    m.drop_db(&victim_db);
    crate::mongo::populate(&m, &victim_db, 0);
    let victim_before = crate::mongo::state(&m, &victim_db);
    env.set("MONGODB_URI", m.uri(&db, ""));
    env.ok(["backup"]);

    let victim = env.path("precious");
    fs::create_dir_all(victim.join("inner")).unwrap();
    fs::write(victim.join("inner/data.txt"), "keep me\n").unwrap();
    // A drill-shaped directory elsewhere: the shape alone is not enough.
    let elsewhere = env.path(".cofre-drill-20260101000000-abcdefgh");
    fs::create_dir_all(&elsewhere).unwrap();
    // The record: "pending" scratch naming the victim, a database prefix
    // of the victim's, an empty prefix (every database).
    let record = serde_json::json!({
        "last": null,
        "last_success": null,
        "pending": [
            {"dir": victim, "db_prefix": "shop"},
            {"dir": elsewhere, "db_prefix": ""},
            {"dir": env.backups.join(".cofre-drill-x"), "db_prefix": "cofre_drill_x_"},
        ]
    });
    fs::write(
        env.backups.join(".cofre-drill.json"),
        serde_json::to_string(&record).unwrap(),
    )
    .unwrap();

    let out = env.ok(["drill", "--json"]);
    let said = text(&out);
    assert!(
        said.contains("left alone") && said.contains("edited"),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(victim.join("inner/data.txt")).unwrap(),
        "keep me\n"
    );
    assert!(elsewhere.is_dir());
    crate::mongo::assert_same_db(&victim_before, &crate::mongo::state(&m, &victim_db));
    assert!(!crate::mongo::state(&m, &db).0.is_empty());
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(env.backups.join(".cofre-drill.json")).unwrap()).unwrap();
    assert!(state["pending"].as_array().unwrap().is_empty(), "{state}");
    assert_eq!(state["last"]["ok"], true, "{state}");
    m.drop_db(&db);
    m.drop_db(&victim_db);
}

/// The application swaps one of its directories for a symlink to a
/// root-only directory, again and again, while backups run: no byte of
/// what the link points to ever reaches an archive.
#[test]
fn a_directory_swapped_for_a_symlink_during_the_walk_is_never_followed() {
    let mut env = Env::new();
    env.set("BACKUP_ENCRYPTION", "none");
    let secret_dir = env.path("root-only");
    fs::create_dir_all(&secret_dir).unwrap();
    for i in 0..50 {
        fs::write(
            secret_dir.join(format!("s{i:02}.key")),
            "TOP-SECRET-BYTES\n",
        )
        .unwrap();
    }
    fs::set_permissions(&secret_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let uploads = env.project.join("uploads");
    fs::create_dir_all(&uploads).unwrap();
    for i in 0..50 {
        fs::write(uploads.join(format!("u{i:02}.txt")), "an upload\n").unwrap();
    }
    for i in 0..200 {
        fs::write(env.project.join(format!("f{i:03}.txt")), "x\n").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = Arc::clone(&stop);
        let real = env.project.join("uploads.real");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                fs::rename(&uploads, &real).unwrap();
                symlink(&secret_dir, &uploads).unwrap();
                std::thread::yield_now();
                fs::remove_file(&uploads).unwrap();
                fs::rename(&real, &uploads).unwrap();
            }
        })
    };
    let mut saw_link = false;
    for _ in 0..8 {
        let out = env.run(["backup", "--no-prune"]);
        assert!(matches!(out.status.code(), Some(0 | 3)), "{}", text(&out));
        std::thread::sleep(Duration::from_millis(1050));
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    for archive in env.archives() {
        let listing = sh(&format!("tar -tvzf '{}'", archive.display()));
        let contents = sh(&format!("tar -xzOf '{}'", archive.display()));
        assert!(
            !String::from_utf8_lossy(&contents.stdout).contains("TOP-SECRET"),
            "{} holds bytes from outside the project",
            archive.display()
        );
        let listing = stdout(&listing);
        assert!(!listing.contains(".key"), "{listing}");
        saw_link |= listing.contains("files/uploads -> ");
    }
    if !saw_link {
        eprintln!("note: no walk happened to list uploads while it was a link");
    }
}

/// A 1 TiB file with three bytes of data: stored sparse (the walk does not
/// read a terabyte of zeros), restored sparse by cofre and by GNU tar.
#[test]
fn a_sparse_file_costs_its_data_not_its_size() {
    let mut env = Env::new();
    let path = env.project.join("disk.img");
    let f = fs::File::create(&path).unwrap();
    const TIB: u64 = 1 << 40;
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"middle", TIB / 2).unwrap();
    f.write_all_at(b"end", TIB - 3).unwrap();
    drop(f);
    fs::write(env.project.join("small.txt"), "hello\n").unwrap();
    env.ok(["backup"]);
    let archive = env.archive();
    assert!(fs::metadata(&archive).unwrap().len() < 1 << 20);
    env.ok(["verify"]);
    let check = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        assert_eq!(m.len(), TIB);
        assert!(m.blocks() * 512 < 1 << 24, "{} is not sparse", p.display());
        let f = fs::File::open(p).unwrap();
        let mut buf = [0u8; 6];
        f.read_exact_at(&mut buf[..5], 0).unwrap();
        assert_eq!(&buf[..5], b"start");
        f.read_exact_at(&mut buf, TIB / 2).unwrap();
        assert_eq!(&buf, b"middle");
        f.read_exact_at(&mut buf[..3], TIB - 3).unwrap();
        assert_eq!(&buf[..3], b"end");
        f.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, [0u8; 6]);
    };
    let target = env.path("restored");
    env.ok(argv!["restore", "latest", "--to", target]);
    check(&target.join("disk.img"));
    // GNU tar reads the pax sparse format.
    let by_tar = env.path("by-tar");
    fs::create_dir_all(&by_tar).unwrap();
    let out = sh(&format!(
        "age -d -i '{}' '{}' | tar -xzf - -C '{}' files/disk.img",
        env.identity().display(),
        archive.display(),
        by_tar.display()
    ));
    assert!(out.status.success(), "{}", text(&out));
    check(&by_tar.join("files/disk.img"));
    env.set("BACKUP_COMPRESSION", "zstd");
    std::thread::sleep(Duration::from_millis(1100));
    env.ok(["backup"]);
}

/// An ignore file built to exhaust memory: one line of a million `*`, and
/// 100,000 patterns. Not used, named in a warning, memory bounded.
#[test]
fn hostile_ignore_files_are_capped_and_named() {
    let env = Env::new();
    fs::create_dir_all(env.project.join("a")).unwrap();
    fs::create_dir_all(env.project.join("b")).unwrap();
    fs::write(env.project.join("a/.backupignore"), "*".repeat(1 << 20)).unwrap();
    let many: String = (0..100_000)
        .map(|i| format!("pattern-{i}-*/**\n"))
        .collect();
    fs::write(env.project.join("b/.backupignore"), many).unwrap();
    fs::write(env.project.join("a/kept.txt"), "a\n").unwrap();
    fs::write(env.project.join("b/kept.txt"), "b\n").unwrap();
    let report = env.path("time.txt");
    let out = env
        .cmd_via(&["/usr/bin/time", "-v", "-o", report.to_str().unwrap()])
        .arg("backup")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("a/.backupignore") && said.contains("b/.backupignore"),
        "{said}"
    );
    let rss_kib: u64 = peak_rss_kib(&report);
    assert!(rss_kib < 64 * 1024, "peak RSS {rss_kib} KiB");
    let listing = sh(&format!(
        "age -d -i '{}' '{}' | tar -tzf -",
        env.identity().display(),
        env.archive().display()
    ));
    let listing = stdout(&listing);
    assert!(
        listing.contains("files/a/kept.txt") && listing.contains("files/b/kept.txt"),
        "{listing}"
    );
}

/// `BACKUP_LOG_FILE` pointing at a symlink (to a file root would append
/// to): refused, the file pointed at unchanged, the backup goes on.
#[test]
fn the_log_file_is_never_written_through_a_symlink() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a\n").unwrap();
    let victim = env.path("shadow");
    fs::write(&victim, "root:x:0:0\n").unwrap();
    let link = env.project.join("app.log");
    symlink(&victim, &link).unwrap();
    env.set("BACKUP_LOG_FILE", &link);
    let out = env.ok(["backup"]);
    assert!(text(&out).contains("symlink"), "{}", text(&out));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
}

/// A minisign secret key pasted into `BACKUP_TRUSTED_KEYS` is refused
/// without being printed.
#[test]
fn a_secret_key_given_as_a_trusted_key_is_never_printed() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a\n").unwrap();
    env.ok(["backup"]);
    let text_key = fs::read_to_string(env.home.join(".config/cofre/signing.key")).unwrap();
    let secret = text_key.lines().nth(1).unwrap().trim().to_owned();
    env.set("BACKUP_TRUSTED_KEYS", &secret);
    let out = env.run(["verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(!said.contains(&secret[..40]), "{said}");
    assert!(said.contains("not shown"), "{said}");
}
