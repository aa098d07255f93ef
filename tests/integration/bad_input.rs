//! Every user-facing failure: one plain sentence naming what went wrong and
//! what to check, a non-zero exit code, and no damage.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cofre::parts::{EntryMeta, Kind, TarEncoder};

use crate::harness::*;

/// A project of two small files. (Permission failures run cofre as
/// another user, `Env::unprivileged`: root reads and writes everything.)
fn small_env() -> Env {
    let env = Env::new();
    fs::create_dir_all(env.project.join("src")).unwrap();
    fs::write(env.project.join("src/a.txt"), "a\n").unwrap();
    fs::write(env.project.join("b.txt"), "b\n").unwrap();
    env
}

#[test]
fn invalid_values_name_the_variable_and_exit_2() {
    for (var, value) in [
        ("BACKUP_COMPRESSION", "lz4"),
        ("BACKUP_COMPRESSION", "zstd:42"),
        ("BACKUP_RETENTION_DAYS", "-3"),
        ("BACKUP_RETENTION_DAYS", "a week"),
        ("BACKUP_SCHEDULE", "61 * * * *"),
        ("BACKUP_SCHEDULE", "every night"),
        ("BACKUP_ENCRYPTION", "rot13"),
        ("BACKUP_TIMEZONE", "Atlantis/Capital"),
    ] {
        let mut env = small_env();
        env.set(var, value);
        let msg = env.fails(["backup"], 2);
        assert!(
            msg.contains(var) && msg.contains(value) && msg.contains("expected"),
            "{msg}"
        );
        assert!(!env.backups.exists(), "{var}: nothing may be written");
    }
}

#[test]
fn invalid_values_in_dotenv_are_named_too() {
    let env = small_env();
    fs::write(env.project.join(".env"), "BACKUP_RETENTION_DAYS=seven\n").unwrap();
    let msg = env.fails(["list"], 2);
    assert!(
        msg.contains("BACKUP_RETENTION_DAYS") && msg.contains("seven"),
        "{msg}"
    );
    // The environment wins over .env.
    let mut env = env;
    env.set("BACKUP_RETENTION_DAYS", "7");
    env.ok(["backup"]);
}

#[test]
fn bad_exclude_pattern_exits_2() {
    let mut env = small_env();
    env.set("BACKUP_EXCLUDE", "src/{a,b");
    let msg = env.fails(["backup"], 2);
    assert!(msg.contains("BACKUP_EXCLUDE"), "{msg}");
}

#[test]
fn missing_source() {
    let mut env = small_env();
    env.set("BACKUP_SOURCE", env.path("no-such-project"));
    env.set("BACKUP_DIR", env.path("b"));
    let msg = env.fails(["backup"], 1);
    assert!(
        msg.contains("does not exist") && msg.contains("BACKUP_SOURCE"),
        "{msg}"
    );
    assert!(!env.path("b").exists());
}

#[test]
fn missing_backup_dir_parent() {
    let mut env = small_env();
    let dir = env.path("unmounted-disk/backups");
    env.set("BACKUP_DIR", &dir);
    let msg = env.fails(["backup"], 1);
    assert!(
        msg.contains("parent directory does not exist") && msg.contains("BACKUP_DIR"),
        "{msg}"
    );
    assert!(
        !env.path("unmounted-disk").exists(),
        "nothing is created elsewhere"
    );
}

#[test]
fn unwritable_backup_dir() {
    let mut env = small_env();
    let dir = env.path("readonly-backups");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("keep.txt"), "x").unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    env.set("BACKUP_DIR", &dir);
    env.set("BACKUP_ENCRYPTION", "none");
    chown_nobody(&env.home);
    let out = env.unprivileged().arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not writable") && err.contains("BACKUP_DIR"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn unreadable_file_is_a_warning_recorded_in_the_manifest() {
    let mut env = small_env();
    let secret = env.project.join("src/locked.txt");
    fs::write(&secret, "no").unwrap();
    chown_nobody(&env.project);
    chown_nobody(&env.home);
    if is_root() {
        sh(&format!("chown 0:0 '{}'", secret.display()));
    }
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    env.set("BACKUP_ENCRYPTION", "none");
    let out = env.unprivileged().arg("backup").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit 3: done with warnings\n{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("src/locked.txt") && err.contains("cannot be read"),
        "{err}"
    );
    let archive = env.archive();
    let listing = sh(&format!(
        "tar -xzOf '{}' cofre-manifest.json",
        archive.display()
    ));
    let manifest: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let warnings = manifest["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["path"], "src/locked.txt");
    // The rest is there and verifies.
    env.ok(["verify"]);
}

fn corrupt_copy(src: &Path, dest: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(src).unwrap();
    edit(&mut bytes);
    fs::write(dest, bytes).unwrap();
}

#[test]
fn flipped_byte_and_truncation_are_refused_target_untouched() {
    for encryption in ["age", "none"] {
        let mut env = Env::with_tree();
        env.set("BACKUP_ENCRYPTION", encryption);
        env.ok(["backup"]);
        let archive = env.archive();
        let name = archive.file_name().unwrap().to_str().unwrap().to_owned();
        let target = env.path("t");
        fs::create_dir_all(&target).unwrap();
        fs::write(target.join("mine.txt"), "precious").unwrap();
        let before = snapshot(&target, |_| false);
        let len = fs::metadata(&archive).unwrap().len() as usize;
        let bad = env.path(&format!("bad-{name}"));
        for (what, edit) in [
            (
                "flip in the middle",
                Box::new(|b: &mut Vec<u8>| {
                    let i = b.len() / 2;
                    b[i] ^= 0x01;
                }) as Box<dyn FnOnce(&mut Vec<u8>)>,
            ),
            (
                "flip near the end",
                Box::new(move |b: &mut Vec<u8>| {
                    b[len - 40] ^= 0x80;
                }),
            ),
            (
                "truncated to half",
                Box::new(move |b: &mut Vec<u8>| b.truncate(len / 2)),
            ),
            (
                "last byte cut",
                Box::new(move |b: &mut Vec<u8>| b.truncate(len - 1)),
            ),
        ] {
            corrupt_copy(&archive, &bad, edit);
            // Signed again by the key's holder: only the content checks can
            // catch it now.
            env.sign(&bad);
            let msg = env.fails(argv!["verify", bad], 1);
            assert!(
                msg.contains("corrupt") || msg.contains("truncated"),
                "{encryption} {what}: {msg}"
            );
            let msg = env.fails(
                [
                    "restore",
                    bad.to_str().unwrap(),
                    "--to",
                    target.to_str().unwrap(),
                    "--force",
                ],
                1,
            );
            assert!(
                msg.contains("corrupt") || msg.contains("truncated"),
                "{encryption} {what}: {msg}"
            );
            assert_eq!(
                before,
                snapshot(&target, |_| false),
                "{encryption} {what}: target changed"
            );
            let mut staging = names_starting(env.root.path(), ".cofre-restore");
            staging.extend(names_starting(&target, ".cofre-restore"));
            assert!(staging.is_empty(), "staging left behind: {staging:?}");
        }
        // The same damage in the archive itself, beside its own signature:
        // the signature check refuses it, whatever the content checks say.
        fs::remove_file(&bad).unwrap();
        let mut bytes = fs::read(&archive).unwrap();
        bytes[len / 3] ^= 0x04;
        fs::write(&archive, bytes).unwrap();
        let msg = env.fails(
            [
                "restore",
                "latest",
                "--to",
                target.to_str().unwrap(),
                "--force",
            ],
            1,
        );
        assert!(
            msg.contains("does not match its signature")
                || msg.contains("corrupt")
                || msg.contains("damaged"),
            "{encryption}: {msg}"
        );
        assert_eq!(before, snapshot(&target, |_| false));
    }
}

#[test]
fn wrong_key_and_wrong_passphrase() {
    let env = small_env();
    env.ok(["backup"]);
    let other = env.path("other-key.txt");
    env.ok(argv!["keygen", "-o", other]);
    let target = env.path("t");
    let mut wrong = Env::new();
    wrong.set("BACKUP_IDENTITY_FILE", &other);
    wrong.set("BACKUP_DIR", &env.backups);
    // Another machine, which trusts the archive's signer but holds the wrong key.
    wrong.set("BACKUP_TRUSTED_KEYS", env.signing_public());
    let msg = wrong.fails(argv!["restore", "latest", "--to", target], 12);
    assert!(
        msg.contains("cannot be decrypted with the keys given"),
        "{msg}"
    );
    assert!(!target.exists());

    let mut env = small_env();
    env.set("BACKUP_PASSPHRASE", "right passphrase");
    env.ok(["backup"]);
    env.set("BACKUP_PASSPHRASE", "wrong passphrase");
    let msg = env.fails(argv!["restore", "latest", "--to", target], 12);
    assert!(msg.contains("passphrase"), "{msg}");
    assert!(
        !msg.contains("wrong passphrase"),
        "the passphrase itself is never printed: {msg}"
    );
    assert!(!target.exists());
    env.vars.retain(|(k, _)| k != "BACKUP_PASSPHRASE");
    let msg = env.fails(["verify"], 12);
    assert!(msg.contains("BACKUP_PASSPHRASE"), "{msg}");
}

/// A `.tar.gz` made of hand-written entries (no manifest needed: the
/// restore must refuse before it gets there). Attacks that need a valid
/// manifest to get that far are in `hostile.rs`.
/// A hand-written entry: path, kind, data, link target.
type Crafted<'a> = (&'a [u8], Kind, &'a [u8], Option<&'a [u8]>);

fn crafted(path: &Path, entries: &[Crafted<'_>]) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = TarEncoder::new(&mut gz);
        for (p, kind, data, link) in entries {
            tar.header(&EntryMeta {
                path: p,
                kind: *kind,
                size: data.len() as u64,
                mode: 0o644,
                mtime: 1_700_000_000,
                mtime_nsec: 0,
                uid: 0,
                gid: 0,
                link: *link,
                sparse: None,
                dumpdir: None,
            })
            .unwrap();
            if !data.is_empty() {
                tar.data(data).unwrap();
            }
        }
        tar.finish().unwrap();
    }
    let bytes = gz.finish().unwrap();
    fs::File::create(path).unwrap().write_all(&bytes).unwrap();
}

#[test]
fn hostile_entries_write_nothing_outside_the_target() {
    let env = Env::new();
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = env.path("restore-here");
    let cases: Vec<(&str, Vec<Crafted<'_>>, &str)> = vec![
        (
            "dotdot",
            vec![(b"files/../../outside/evil.txt", Kind::File, b"evil", None)],
            "contains ..",
        ),
        (
            "absolute",
            vec![(
                format!("{}/evil.txt", outside.display()).leak().as_bytes(),
                Kind::File,
                b"evil",
                None,
            )],
            "absolute",
        ),
        (
            "hard link out",
            vec![(
                b"files/hl",
                Kind::Hardlink,
                b"",
                Some(b"files/../../outside/x"),
            )],
            "hard link",
        ),
        (
            "outside files/",
            vec![(b"etc/passwd", Kind::File, b"evil", None)],
            "outside files/",
        ),
    ];
    for (what, entries, expect) in cases {
        let archive = env.path(&format!("{}.tar.gz", what.replace([' ', '/'], "-")));
        crafted(&archive, &entries);
        env.sign(&archive);
        let msg = env.fails(
            [
                "restore",
                archive.to_str().unwrap(),
                "--to",
                target.to_str().unwrap(),
            ],
            1,
        );
        assert!(msg.contains(expect), "{what}: {msg}");
        assert!(!target.exists(), "{what}: target was created");
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{what}: wrote outside"
        );
    }
}

#[test]
fn not_an_archive() {
    let env = small_env();
    let junk = env.path("junk.tar.gz");
    fs::write(&junk, b"this is not an archive at all").unwrap();
    env.sign(&junk);
    let msg = env.fails(argv!["verify", junk], 1);
    assert!(msg.contains("not a cofre archive"), "{msg}");
    // A valid tar.gz without a manifest.
    let plain = env.path("plain.tar.gz");
    sh(&format!(
        "tar -C '{}' -czf '{}' .",
        env.project.display(),
        plain.display()
    ));
    env.sign(&plain);
    let msg = env.fails(argv!["verify", plain], 1);
    assert!(
        msg.contains("outside files/") || msg.contains("manifest"),
        "{msg}"
    );
}

#[test]
fn odd_things_given_as_archives_or_directories_get_clear_errors() {
    let mut env = small_env();
    env.ok(["backup"]);
    let dir = env.path("a-directory");
    fs::create_dir_all(&dir).unwrap();
    let msg = env.fails(argv!["verify", dir, "--allow-unsigned"], 1);
    assert!(msg.contains("is a directory, not an archive file"), "{msg}");
    let fifo = env.path("a-fifo");
    sh(&format!("mkfifo '{}'", fifo.display()));
    let msg = env.fails(argv!["verify", fifo, "--allow-unsigned"], 1);
    assert!(msg.contains("FIFO"), "{msg}");

    // A bad --include pattern is a usage error, like a bad --exclude.
    let msg = env.fails(
        [
            "restore",
            "latest",
            "--to",
            env.path("t").to_str().unwrap(),
            "--include",
            "src/{a,b",
        ],
        2,
    );
    assert!(msg.contains("--include"), "{msg}");

    // Restore errors name the archive file.
    let archive = env.archive();
    let name = archive.file_name().unwrap().to_str().unwrap().to_owned();
    let copy = env.path(&name);
    fs::copy(&archive, &copy).unwrap();
    fs::copy(
        format!("{}.minisig", archive.display()),
        format!("{}.minisig", copy.display()),
    )
    .unwrap();
    // A damaged age header says so (it is not a wrong key).
    let mut bytes = fs::read(&copy).unwrap();
    let at = bytes.windows(4).position(|w| w == b"\n---").unwrap() + 6;
    bytes[at] ^= 0x10;
    fs::write(&copy, &bytes).unwrap();
    env.sign(&copy);
    let msg = env.fails(
        [
            "restore",
            copy.to_str().unwrap(),
            "--to",
            env.path("t").to_str().unwrap(),
        ],
        1,
    );
    assert!(msg.contains(&name) && msg.contains("damaged"), "{msg}");

    // BACKUP_DIR that is a file: a configuration error for every command.
    let file = env.path("not-a-dir");
    fs::write(&file, "x").unwrap();
    env.set("BACKUP_DIR", &file);
    for cmd in ["prune", "status", "list"] {
        let msg = env.fails([cmd], 2);
        assert!(
            msg.contains("not a directory") && msg.contains("BACKUP_DIR"),
            "{cmd}: {msg}"
        );
    }
}
