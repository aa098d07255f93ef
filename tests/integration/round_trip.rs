//! Back up, restore, compare: the restored tree equals the source minus the
//! excluded paths (bytes, modes, mtimes to the nanosecond, symlink targets,
//! empty directories, awkward names), for every compression and key kind.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

fn round_trip(env: &Env, restore_args: &[&str]) {
    let expected = snapshot(&env.project, excluded_by_default);
    let target = env.path("restored");
    let target_s = target.to_str().unwrap().to_owned();
    let mut args = vec!["restore", "latest", "--to", &target_s];
    args.extend_from_slice(restore_args);
    env.ok(&args);
    assert_same(&expected, &snapshot(&target, |_| false));
}

#[test]
fn default_backup_gzip_and_identity_made_on_first_use() {
    let env = Env::with_tree();
    // The backup directory does not exist yet: cofre makes it, 0700.
    fs::remove_dir_all(&env.backups).unwrap();
    let out = env.ok(["backup"]);
    let archive = env.archive();
    let name = archive.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("backup_")
            && name.ends_with(".tar.gz.age")
            && name.len() == "backup_2026-11-27T00-00-00.tar.gz.age".len(),
        "{name}"
    );
    assert!(stdout(&out).contains(&name));
    // The identity was made, 0600, with a loud note.
    let id = env.identity();
    assert_eq!(
        fs::metadata(&id).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Copy it somewhere safe"));
    // Modes of what lands on disk.
    assert_eq!(
        fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&env.backups).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // No temporary file is left.
    let leftovers = names_starting(&env.backups, ".cofre-tmp");
    assert!(leftovers.is_empty(), "{leftovers:?}");
    round_trip(&env, &[]);
}

#[test]
fn zstd_with_passphrase() {
    let mut env = Env::with_tree();
    env.set("BACKUP_COMPRESSION", "zstd:5");
    env.set("BACKUP_PASSPHRASE", "correct horse battery staple");
    env.ok(["backup"]);
    let name = env.archive_name();
    assert!(name.ends_with(".tar.zst.age"), "{name}");
    // A passphrase backup makes no identity file.
    assert!(!env.identity().exists());
    round_trip(&env, &[]);
}

#[test]
fn public_key_only_the_server_cannot_read_its_backups() {
    let mut env = Env::with_tree();
    let key = env.path("offsite-key.txt");
    let out = env.ok(argv!["keygen", "-o", key]);
    let err = String::from_utf8_lossy(&out.stderr);
    let public = err
        .lines()
        .find_map(|l| l.strip_prefix("Public key: "))
        .unwrap()
        .to_owned();
    assert!(public.starts_with("age1"));
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // keygen never overwrites.
    let msg = env.fails(argv!["keygen", "-o", key], 1);
    assert!(msg.contains("already exists"), "{msg}");

    env.set("BACKUP_RECIPIENTS", &public);
    env.ok(["backup"]);
    assert!(
        !env.identity().exists(),
        "no identity is made when recipients are set"
    );
    // The server has no key: verify says so (exit code 12: no key).
    let msg = env.fails(["verify"], 12);
    assert!(
        msg.contains("no key was found") && msg.contains("--identity"),
        "{msg}"
    );
    // A file named with --identity that is not there is said, by name.
    let typo = env.path("no-such-key.txt");
    let msg = env.fails(argv!["verify", "--identity", typo], 1);
    assert!(
        msg.contains("no-such-key.txt") && msg.contains("No such file"),
        "{msg}"
    );
    env.ok(argv!["verify", "--identity", key]);
    round_trip(&env, &["--identity", key.to_str().unwrap()]);
}

#[test]
fn encryption_none_warns_and_round_trips() {
    let mut env = Env::with_tree();
    env.set("BACKUP_ENCRYPTION", "none");
    let out = env.ok(["backup"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not encrypted"));
    let name = env.archive_name();
    assert!(name.ends_with(".tar.gz"), "{name}");
    round_trip(&env, &[]);
}

#[test]
fn excludes_defaults_env_patterns_and_backupignore() {
    let mut env = Env::with_tree();
    fs::write(env.project.join("data/.backupignore"), "export_01*.json\n").unwrap();
    fs::write(env.project.join("notes.tmp"), "scratch").unwrap();
    env.set("BACKUP_EXCLUDE", "*.tmp, /public/assets/img0.png");
    env.ok(["backup"]);
    let target = env.path("restored");
    env.ok(argv!["restore", "latest", "--to", target]);
    let got = snapshot(&target, |_| false);
    for gone in [
        "node_modules",
        ".git",
        "logs",
        ".env",
        ".env.production",
        "backups",
        "src/module01/node_modules",
        "notes.tmp",
        "public/assets/img0.png",
        "data/export_010.json",
    ] {
        assert!(!got.contains_key(gone), "{gone} should have been left out");
    }
    for kept in [
        "data/.backupignore",
        "data/export_000.json",
        "data/export_009.json",
        "public/assets/img1.png",
        "package.json",
    ] {
        assert!(got.contains_key(kept), "{kept} should be in the backup");
    }
}

#[test]
fn backup_dir_outside_and_inside_the_project() {
    let mut env = Env::with_tree();
    // Inside, under another name: it is left out wherever it is.
    fs::create_dir_all(env.project.join("var")).unwrap();
    env.set("BACKUP_DIR", "var/archives");
    env.ok(["backup"]);
    let inside = env.project.join("var/archives");
    assert_eq!(archives_in(&inside).len(), 1);
    let target = env.path("r1");
    env.ok(argv!["restore", "latest", "--to", target]);
    assert!(target.join("var").is_dir());
    assert!(!target.join("var/archives").exists());
    // Outside.
    let outside = env.path("elsewhere");
    env.set("BACKUP_DIR", &outside);
    env.ok(["backup"]);
    assert_eq!(archives_in(&outside).len(), 1);
}

#[test]
fn list_and_verify() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    env.ok(["backup"]);
    let archives = env.archives();
    assert_eq!(archives.len(), 2, "two backups in a row get two names");
    let out = stdout(&env.ok(["list"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ARCHIVE"), "{out}");
    let newest = archives[1].file_name().unwrap().to_str().unwrap();
    assert!(lines[1].starts_with(newest), "newest first:\n{out}");
    assert!(lines[1].contains("age (1 key)"), "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&env.ok(["list", "--json"]))).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], newest);
    assert!(rows[0]["files"].as_u64().unwrap() > 50);
    assert!(rows[0]["size"].as_u64().unwrap() > 1000);

    let out = stdout(&env.ok(["verify", "--all"]));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok")).count(),
        2,
        "{out}"
    );
    env.ok(["verify", newest]);
    env.ok(argv!["verify", archives[0]]);
}

#[test]
fn leftover_temporary_files_are_removed_at_the_next_run() {
    let env = Env::with_tree();
    fs::create_dir_all(&env.backups).unwrap();
    let stale = env.backups.join(".cofre-tmp-crashed.partial");
    fs::write(&stale, vec![0u8; 4096]).unwrap();
    env.ok(["backup"]);
    assert!(!stale.exists());
    // The unrelated file in the backup directory is left alone.
    assert!(env.backups.join("old-script-backup.tar.gz").exists());
}

#[test]
fn log_file_gets_the_summary_and_never_the_passphrase() {
    let mut env = Env::with_tree();
    let log = env.path("app.log");
    fs::write(&log, "earlier line\n").unwrap();
    env.set("BACKUP_LOG_FILE", &log);
    env.set("BACKUP_PASSPHRASE", "hunter2-is-my-passphrase");
    let out = env.ok(["backup", "-v"]);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("earlier line\n"), "appends");
    assert!(
        text.contains("backup started") && text.contains("backup finished"),
        "{text}"
    );
    assert!(
        text.contains("bytes_in=") && text.contains("bytes_out="),
        "{text}"
    );
    for t in [
        text.as_str(),
        &String::from_utf8_lossy(&out.stderr),
        &stdout(&out),
    ] {
        assert!(!t.contains("hunter2-is-my-passphrase"));
    }
    env.set("BACKUP_LOG_FORMAT", "json");
    env.ok(["verify"]);
    let last = fs::read_to_string(&log).unwrap();
    let json_line = last.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(v["level"], "INFO");
}

#[test]
fn quiet_under_cron_progress_free() {
    // stderr is not a terminal here: a good backup prints nothing on stderr
    // but the first-use note, and its archive path on stdout.
    let env = Env::with_tree();
    env.ok(["backup"]);
    let out = env.ok(["backup"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
