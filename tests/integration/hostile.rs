//! Restores that cannot be turned against the machine, tried the way an
//! attacker would: archives built by hand, encrypted to the right key and
//! signed with the installation's own key (an insider, or a stolen key),
//! so that only cofre's own checks stand between them and the disk. Each
//! test covers a class of attack and looks outside the target afterwards:
//! canary files, directories and links must keep their content, mode,
//! mtime and link count, with default flags, `--force` and
//! `--allow-outside-symlinks`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use cofre::parts::{Entry, FORMAT, FORMAT_VERSION};
use cofre::parts::{EntryMeta, Kind, TarEncoder};

use crate::harness::*;

/// One hand-made entry.
#[derive(Clone, Debug)]
pub struct H {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub data: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub mode: u32,
    pub uid: u64,
}

pub fn file(path: &str, data: &[u8]) -> H {
    H {
        path: format!("files/{path}").into_bytes(),
        kind: Kind::File,
        data: data.to_vec(),
        link: None,
        mode: 0o644,
        uid: 0,
    }
}

pub fn dir(path: &str) -> H {
    H {
        kind: Kind::Dir,
        mode: 0o755,
        ..file(path, b"")
    }
}

pub fn symlink_entry(path: &str, target: &str) -> H {
    H {
        kind: Kind::Symlink,
        link: Some(target.as_bytes().to_vec()),
        mode: 0o777,
        ..file(path, b"")
    }
}

pub fn hardlink(path: &str, target: &str) -> H {
    H {
        kind: Kind::Hardlink,
        link: Some(format!("files/{target}").into_bytes()),
        ..file(path, b"")
    }
}

fn meta(h: &H) -> EntryMeta<'_> {
    EntryMeta {
        path: &h.path,
        kind: h.kind,
        size: h.data.len() as u64,
        mode: h.mode,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        uid: h.uid,
        gid: h.uid,
        link: h.link.as_deref(),
        sparse: None,
        dumpdir: None,
    }
}

/// The tar of `entries` followed by a manifest that lists them exactly
/// (what cofre's own writer would have recorded), so the manifest check
/// passes and the entries themselves are what is tried.
pub fn tar_with_manifest(entries: &[H], extra_manifest: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut recorded = Vec::new();
    {
        let mut tar = TarEncoder::new(&mut out);
        tar.header(&EntryMeta {
            path: b"files",
            kind: Kind::Dir,
            size: 0,
            mode: 0o755,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            link: None,
            sparse: None,
            dumpdir: None,
        })
        .unwrap();
        recorded.push(Entry::from_meta(
            &EntryMeta {
                path: b"files",
                kind: Kind::Dir,
                size: 0,
                mode: 0o755,
                mtime: 1_700_000_000,
                mtime_nsec: 0,
                uid: 0,
                gid: 0,
                link: None,
                sparse: None,
                dumpdir: None,
            },
            None,
        ));
        for h in entries {
            tar.header(&meta(h)).unwrap();
            if !h.data.is_empty() {
                tar.data(&h.data).unwrap();
            }
            let hash = (h.kind == Kind::File).then(|| blake3::hash(&h.data).to_hex().to_string());
            recorded.push(Entry::from_meta(&meta(h), hash));
        }
        let mut manifest = serde_json::json!({
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool": "hand-made",
            "created_at": "2026-11-27T00:00:00Z",
            "host": "attacker",
            "source": "/nowhere",
            "options": {"compression": "gzip:6", "encryption": "age", "hash": "blake3"},
            "totals": {"entries": recorded.len(), "files": 0, "dirs": 0, "symlinks": 0, "bytes": 0},
            "entries": recorded,
        });
        for (k, v) in extra_manifest {
            manifest[*k] = v.clone();
        }
        let text = serde_json::to_vec(&manifest).unwrap();
        tar.header(&EntryMeta {
            path: b"cofre-manifest.json",
            kind: Kind::File,
            size: text.len() as u64,
            mode: 0o600,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            link: None,
            sparse: None,
            dumpdir: None,
        })
        .unwrap();
        tar.data(&text).unwrap();
        tar.finish().unwrap();
    }
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// The public key of the environment's identity (made by a first backup).
pub fn public_key(env: &Env) -> String {
    fs::read_to_string(env.identity())
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_owned))
        .unwrap()
}

/// Writes `compressed` encrypted to the environment's key (by the age CLI)
/// at `dest`, and signs it with the environment's signing key.
pub fn plant(env: &Env, dest: &Path, compressed: &[u8]) {
    let plain = env.path("plain.tmp");
    fs::write(&plain, compressed).unwrap();
    sh(&format!(
        "age -r {} -o '{}' '{}'",
        public_key(env),
        dest.display(),
        plain.display()
    ));
    fs::remove_file(&plain).unwrap();
    env.sign(dest);
}

/// An environment with an identity and signing key (one backup made).
pub fn keyed_env() -> Env {
    let env = Env::new();
    fs::write(env.project.join("readme.txt"), "hello\n").unwrap();
    env.ok(["backup"]);
    env
}

/// What is looked at outside the target: everything below `dir`, with
/// content, mode, mtime, link count, inode and link target.
pub fn deep_snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut all = walk_all(dir);
    all.push(dir.to_path_buf());
    for p in all {
        let m = fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            format!("{:?}", fs::read(&p).unwrap())
        } else if m.file_type().is_symlink() {
            format!("-> {:?}", fs::read_link(&p).unwrap())
        } else {
            String::new()
        };
        out.insert(
            p,
            format!(
                "mode {:o} mtime {}.{} nlink {} ino {} {content}",
                m.mode(),
                m.mtime(),
                m.mtime_nsec(),
                m.nlink(),
                m.ino()
            ),
        );
    }
    out
}

/// Canaries outside the target: a file, a "system" file, a directory with
/// a file, a symlink, with distinctive modes and times.
pub struct Canaries {
    pub dir: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Canaries {
    pub fn plant(env: &Env) -> Canaries {
        let dir = env.path("outside");
        fs::create_dir_all(dir.join("canary-dir")).unwrap();
        fs::write(dir.join("canary.txt"), "canary\n").unwrap();
        fs::write(dir.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(dir.join("canary-dir/inner.txt"), "inner\n").unwrap();
        symlink("canary.txt", dir.join("canary-link")).unwrap();
        fs::set_permissions(dir.join("canary.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(dir.join("passwd"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.join("canary-dir"), fs::Permissions::from_mode(0o750)).unwrap();
        for p in [
            dir.join("canary.txt"),
            dir.join("passwd"),
            dir.join("canary-dir/inner.txt"),
            dir.join("canary-dir"),
            dir.join("canary-link"),
            dir.clone(),
        ] {
            set_mtime(&p, 1_000_000_000, 123);
        }
        let before = deep_snapshot(&dir);
        Canaries { dir, before }
    }

    pub fn assert_untouched(&self, what: &str) {
        let after = deep_snapshot(&self.dir);
        for (p, b) in &self.before {
            assert_eq!(Some(b), after.get(p), "{what}: {} changed", p.display());
        }
        assert_eq!(
            self.before.len(),
            after.len(),
            "{what}: entries appeared outside"
        );
    }
}

/// The three ways a restore is run: into a new directory, `--force` over
/// a directory with a file of the user's, and allowing outside symlinks.
fn flag_sets() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("default", vec![]),
        ("--force", vec!["--force"]),
        ("--allow-outside-symlinks", vec!["--allow-outside-symlinks"]),
    ]
}

/// Restores `archive` with each flag set into a target that, with
/// `--force`, holds a file of the user's; checks the canaries after each.
/// Returns, per flag set, stderr's error line (empty when it succeeded).
fn try_restore(env: &Env, canaries: &Canaries, archive: &Path, what: &str) -> Vec<String> {
    let mut results = Vec::new();
    for (flags_name, flags) in flag_sets() {
        let target = env.path(&format!("target-{}", results.len()));
        let _ = fs::remove_dir_all(&target);
        if flags_name == "--force" {
            fs::create_dir_all(&target).unwrap();
            fs::write(target.join("mine.txt"), "precious").unwrap();
        }
        let mut args = vec![
            "restore",
            archive.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ];
        args.extend(flags.iter().copied());
        let out = env.run(&args);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 1 | 3)),
            "{what} {flags_name}: exit {code:?}\n{}",
            text(&out)
        );
        canaries.assert_untouched(&format!("{what} {flags_name}"));
        if flags_name == "--force" {
            assert_eq!(
                fs::read_to_string(target.join("mine.txt")).unwrap(),
                "precious",
                "{what}: the user's file changed"
            );
        }
        let staging: Vec<String> = names_starting(&target, ".cofre-restore")
            .into_iter()
            .chain(names_starting(env.root.path(), ".cofre-restore"))
            .collect();
        assert!(
            staging.is_empty(),
            "{what} {flags_name}: staging left: {staging:?}"
        );
        let err = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect::<Vec<_>>()
            .join("\n");
        if code != Some(0) {
            assert_eq!(
                err.lines().count(),
                1,
                "{what} {flags_name}: {}",
                text(&out)
            );
            if flags_name != "--force" {
                assert!(
                    !target.exists() || names_starting(&target, "").is_empty(),
                    "{what} {flags_name}: a refused restore left files in the target"
                );
            }
        }
        results.push(err);
        let _ = fs::remove_dir_all(&target);
    }
    results
}

#[test]
fn paths_are_confined_by_the_kernel_not_by_checks() {
    let env = keyed_env();
    let canaries = Canaries::plant(&env);
    let outside = canaries.dir.display().to_string();
    let cases: Vec<(&str, Vec<H>, [&str; 3])> = vec![
        (
            // Lexically inside, really outside: r is the root itself.
            "link through a link to the root",
            vec![
                symlink_entry("r", "."),
                symlink_entry("esc", "r/r/r/r/../../../../outside"),
            ],
            ["leads outside", "leads outside", ""],
        ),
        (
            "file written through an earlier symlink",
            vec![
                symlink_entry("d", "../../outside"),
                file("d/evil.txt", b"evil"),
            ],
            [
                "written through a symlink",
                "written through a symlink",
                "written through a symlink",
            ],
        ),
        (
            "file written through a symlink that stays inside",
            vec![
                dir("sub"),
                symlink_entry("in", "sub"),
                file("in/evil.txt", b"evil"),
            ],
            [
                "written through a symlink",
                "written through a symlink",
                "written through a symlink",
            ],
        ),
        (
            "directory replaced by a link to an outside directory",
            vec![
                H {
                    mode: 0o777,
                    ..dir("d")
                },
                symlink_entry("d", &format!("{outside}/canary-dir")),
            ],
            [
                "a directory and then",
                "a directory and then",
                "a directory and then",
            ],
        ),
        (
            "hard link through an outside symlink",
            vec![symlink_entry("l", &outside), hardlink("h", "l/passwd")],
            ["hard link", "hard link", "hard link"],
        ),
        (
            "hard link to a directory",
            vec![dir("d"), hardlink("h", "d")],
            ["hard link", "hard link", "hard link"],
        ),
        (
            "hard link to a symlink",
            vec![symlink_entry("s", "x"), hardlink("h", "s")],
            ["hard link", "hard link", "hard link"],
        ),
        (
            "absolute symlink",
            vec![symlink_entry("etc", &format!("{outside}/passwd"))],
            ["leads outside", "leads outside", ""],
        ),
    ];
    for (what, entries, expected) in cases {
        let archive = env.path(&format!("{}.tar.gz.age", what.replace(' ', "-")));
        plant(&env, &archive, &gzip(&tar_with_manifest(&entries, &[])));
        let results = try_restore(&env, &canaries, &archive, what);
        for (got, want) in results.iter().zip(expected) {
            if want.is_empty() {
                assert!(got.is_empty(), "{what}: expected success, got {got}");
            } else {
                assert!(got.contains(want), "{what}: expected {want:?}, got {got:?}");
                assert!(
                    got.contains(archive.file_name().unwrap().to_str().unwrap())
                        || got.contains("target"),
                    "{what}: the message names the archive: {got}"
                );
            }
        }
    }
}

#[test]
fn a_hard_link_may_only_name_a_file_this_restore_wrote() {
    let env = keyed_env();
    let canaries = Canaries::plant(&env);
    let archive = env.path("links.tar.gz.age");
    plant(
        &env,
        &archive,
        &gzip(&tar_with_manifest(
            &[file("a.txt", b"shared\n"), hardlink("b.txt", "a.txt")],
            &[],
        )),
    );
    let target = env.path("t");
    env.ok(argv!["restore", archive, "--to", target,]);
    let a = fs::metadata(target.join("a.txt")).unwrap();
    let b = fs::metadata(target.join("b.txt")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    assert_eq!(a.nlink(), 2);
    canaries.assert_untouched("hard link inside");
}

#[test]
fn setuid_bits_and_owners_come_back_only_when_asked_for() {
    let env = keyed_env();
    let archive = env.path("suid.tar.gz.age");
    plant(
        &env,
        &archive,
        &gzip(&tar_with_manifest(
            &[H {
                mode: 0o6755,
                uid: 4321,
                ..file("bin/tool", b"#!/bin/sh\n")
            }],
            &[],
        )),
    );
    let plain = env.path("plain");
    env.ok(argv!["restore", archive, "--to", plain,]);
    let m = fs::metadata(plain.join("bin/tool")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755, "setuid and setgid are dropped");
    assert_eq!(
        m.uid(),
        fs::metadata(&env.project).unwrap().uid(),
        "owned by the restoring user"
    );
    let same = env.path("same");
    env.ok(argv![
        "restore",
        archive,
        "--to",
        same,
        "--same-permissions",
        "--same-owner",
    ]);
    let m = fs::metadata(same.join("bin/tool")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o6755);
    if is_root() {
        assert_eq!(m.uid(), 4321);
    }
}

#[test]
fn force_never_destroys_what_the_archive_does_not_name() {
    let env = keyed_env();
    let canaries = Canaries::plant(&env);
    let target = env.path("t");
    fs::create_dir_all(target.join("data/deep")).unwrap();
    fs::write(target.join("data/deep/precious.db"), "precious").unwrap();
    fs::write(target.join("keep.txt"), "keep").unwrap();
    symlink(&canaries.dir, target.join("ext")).unwrap();
    let before = snapshot(&target, |_| false);

    // A file where the target has a non-empty directory: refused, named.
    let archive = env.path("file-over-dir.tar.gz.age");
    plant(
        &env,
        &archive,
        &gzip(&tar_with_manifest(
            &[file("a-first.txt", b"new"), file("data", b"a file now")],
            &[],
        )),
    );
    let msg = env.fails(
        [
            "restore",
            archive.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
            "--force",
        ],
        1,
    );
    assert!(
        msg.contains("data") && msg.contains("non-empty directory"),
        "{msg}"
    );
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert_eq!(before, snapshot(&target, |_| false), "the target changed");

    // The archive names `ext` as a directory: the user's symlink there is
    // replaced, never followed; what lies behind it stays as it was.
    let archive = env.path("dir-over-link.tar.gz.age");
    plant(
        &env,
        &archive,
        &gzip(&tar_with_manifest(
            &[dir("ext"), file("ext/new.txt", b"new")],
            &[],
        )),
    );
    env.ok(argv!["restore", archive, "--to", target, "--force",]);
    assert!(fs::symlink_metadata(target.join("ext")).unwrap().is_dir());
    assert_eq!(
        fs::read_to_string(target.join("ext/new.txt")).unwrap(),
        "new"
    );
    assert_eq!(
        fs::read_to_string(target.join("data/deep/precious.db")).unwrap(),
        "precious"
    );
    assert_eq!(fs::read_to_string(target.join("keep.txt")).unwrap(), "keep");
    canaries.assert_untouched("dir over a link");
}

#[test]
fn restores_into_a_mount_point() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let target = env.path("volume");
    let Some(_disk) = SmallDisk::mount_at(&target, "64m") else {
        return;
    };
    let expected = snapshot(&env.project, excluded_by_default);
    env.ok(argv!["restore", "latest", "--to", target]);
    assert_same(&expected, &snapshot(&target, |_| false));
    // And again over it, replacing what the archive holds.
    fs::write(target.join("package.json"), "stale").unwrap();
    env.ok(argv!["restore", "latest", "--to", target, "--force",]);
    assert_same(&expected, &snapshot(&target, |_| false));
}

#[test]
fn files_cofre_owns_in_the_backup_dir_are_never_followed() {
    let env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    let canaries = Canaries::plant(&env);
    fs::create_dir_all(&env.backups).unwrap();
    symlink(
        canaries.dir.join("canary.txt"),
        env.backups.join(".cofre.lock"),
    )
    .unwrap();
    let msg = env.fails(["backup"], 1);
    assert!(msg.contains("symlink"), "{msg}");
    canaries.assert_untouched("lock symlink");
    fs::remove_file(env.backups.join(".cofre.lock")).unwrap();
    for name in [".cofre-state.json", ".cofre-daemon.json"] {
        let _ = fs::remove_file(env.backups.join(name));
        symlink(canaries.dir.join("passwd"), env.backups.join(name)).unwrap();
    }
    env.ok(["backup"]);
    env.ok(["status"]);
    canaries.assert_untouched("state symlinks");
    assert!(
        fs::symlink_metadata(env.backups.join(".cofre-state.json"))
            .unwrap()
            .is_file()
    );
    // A symlink with an archive's name is neither listed, restored, nor pruned.
    symlink(
        canaries.dir.join("canary.txt"),
        env.backups.join("backup_2099-01-01T00-00-00.tar.gz.age"),
    )
    .unwrap();
    let out = stdout(&env.ok(["list"]));
    assert!(!out.contains("2099"), "{out}");
    let msg = env.fails(
        [
            "verify",
            "backup_2099-01-01T00-00-00.tar.gz.age",
            "--allow-unsigned",
        ],
        1,
    );
    assert!(msg.contains("symlink"), "{msg}");
    env.ok(["prune"]);
    canaries.assert_untouched("archive-named symlink");
}

/// A pax header that declares `size` bytes, then a little data.
fn pax_bomb(size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend(std::iter::repeat_n(b'9', 1 << 20));
    t
}

/// A gzip member in cofre's block format whose header declares `plain`
/// bytes inside `total`.
fn gzip_block_bomb(total: u32, plain: u32) -> Vec<u8> {
    let mut m = vec![0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 3];
    m.extend_from_slice(&12u16.to_le_bytes());
    m.extend_from_slice(b"CF");
    m.extend_from_slice(&8u16.to_le_bytes());
    m.extend_from_slice(&total.to_le_bytes());
    m.extend_from_slice(&plain.to_le_bytes());
    m.extend(std::iter::repeat_n(0u8, 4096));
    m
}

#[test]
fn sizes_read_from_an_archive_are_capped() {
    let env = keyed_env();
    let canaries = Canaries::plant(&env);
    let long = "x".repeat(2 << 20);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("pax bomb", gzip(&pax_bomb(1 << 40)), "more than"),
        (
            "manifest with a huge entry",
            gzip(&tar_with_manifest(
                &[file("a", b"a")],
                &[(
                    "entries",
                    serde_json::json!([{"path": long, "type": "file", "mode": 420, "mtime": "x"}]),
                )],
            )),
            "larger than cofre accepts",
        ),
        (
            "manifest with a huge unknown field",
            gzip(&tar_with_manifest(
                &[file("a", b"a")],
                &[("padding", serde_json::json!("y".repeat(20 << 20)))],
            )),
            "larger than cofre accepts",
        ),
        (
            "gzip block bomb",
            gzip_block_bomb(1 << 30, 1 << 30),
            "declares",
        ),
    ];
    for (what, compressed, expect) in cases {
        let archive = env.path(&format!("{}.tar.gz.age", what.replace(' ', "-")));
        plant(&env, &archive, &compressed);
        let msg = env.fails(argv!["verify", archive], 1);
        assert!(msg.contains(expect), "{what}: {msg}");
        let results = try_restore(&env, &canaries, &archive, what);
        for r in results {
            assert!(r.contains(expect), "{what}: {r}");
        }
    }
}

#[test]
fn only_archives_signed_by_a_trusted_key_restore_without_asking() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let genuine = env.archive();
    let genuine_name = genuine.file_name().unwrap().to_str().unwrap().to_owned();
    // minisign itself verifies what cofre signed.
    let out = sh(&format!(
        "minisign -Vm '{}' -p '{}'",
        genuine.display(),
        env.signing_key().with_extension("pub").display()
    ));
    assert!(stdout(&out).contains(&genuine_name), "{}", text(&out));

    // Someone who knows the public key plants a newer archive.
    let planted = env.backups.join("backup_2099-01-01T00-00-00.tar.gz.age");
    let compressed = gzip(&tar_with_manifest(&[file("package.json", b"planted")], &[]));
    let plain = env.path("p.tmp");
    fs::write(&plain, &compressed).unwrap();
    sh(&format!(
        "age -r {} -o '{}' '{}'",
        public_key(&env),
        planted.display(),
        plain.display()
    ));
    let out = stdout(&env.ok(["list"]));
    assert!(out.contains("2099") && out.contains("missing"), "{out}");
    let target = env.path("t");
    let out = env.ok(argv!["restore", "latest", "--to", target]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("passed over 1 newer archive")
            && String::from_utf8_lossy(&out.stderr).contains("backup_2099"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fs::read(target.join("package.json")).unwrap(),
        fs::read(env.project.join("package.json")).unwrap(),
        "latest is the newest archive cofre signed"
    );
    let msg = env.fails(argv!["verify", planted], 1);
    assert!(
        msg.contains("not signed") && msg.contains("--allow-unsigned"),
        "{msg}"
    );
    let out = env.ok(argv!["verify", planted, "--allow-unsigned"]);
    assert!(stdout(&out).contains("NOT signed"), "{}", text(&out));

    // Signed, but by another key.
    let stranger = Env::new();
    stranger.sign(&planted);
    let msg = env.fails(argv!["verify", planted], 1);
    assert!(msg.contains("not trusted"), "{msg}");
    let mut trusting = Env::new();
    trusting.set("BACKUP_DIR", &env.backups);
    trusting.set("BACKUP_IDENTITY_FILE", env.identity());
    trusting.set("BACKUP_TRUSTED_KEYS", stranger.signing_public());
    trusting.ok(argv!["verify", planted]);
    fs::remove_file(&planted).unwrap();
    fs::remove_file(format!("{}.minisig", planted.display())).unwrap();

    // An old signed archive renamed to pass for a newer one.
    let renamed = env.backups.join("backup_2098-01-01T00-00-00.tar.gz.age");
    fs::copy(&genuine, &renamed).unwrap();
    fs::copy(
        format!("{}.minisig", genuine.display()),
        format!("{}.minisig", renamed.display()),
    )
    .unwrap();
    let msg = env.fails(argv!["verify", renamed], 1);
    assert!(
        msg.contains("was made for") && msg.contains(&genuine_name),
        "{msg}"
    );
    // Prune treats an archive and its signature as one (a newer genuine
    // archive makes this one due; the renamed copy, its signature made for
    // another name, is not this project's archive and is left alone).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // (A full: a differential would keep its full, the genuine archive.)
    env.ok(["backup", "--no-prune", "--full"]);
    let mut pruning = Env::new();
    pruning.set("BACKUP_DIR", &env.backups);
    // (It counts this project's archives, signed by a key it trusts.)
    pruning.set("BACKUP_SOURCE", &env.project);
    pruning.set("BACKUP_IDENTITY_FILE", env.identity());
    pruning.set("BACKUP_RETENTION_DAYS", "0");
    pruning.set("BACKUP_KEEP_LAST", "1");
    pruning.ok(["prune"]);
    assert!(!genuine.exists());
    assert!(!Path::new(&format!("{}.minisig", genuine.display())).exists());
    assert!(renamed.exists());

    // Disaster recovery: a new machine with only the identity file.
    let mut fresh = Env::new();
    fresh.set("BACKUP_DIR", &env.backups);
    fresh.set("BACKUP_IDENTITY_FILE", env.identity());
    let msg = fresh.fails(argv!["verify", renamed], 1);
    assert!(msg.contains("was made for"), "{msg}");
}

#[test]
fn the_identity_file_alone_restores_on_a_new_machine() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let keep = env.path("kept-identity.txt");
    fs::copy(env.identity(), &keep).unwrap();
    let mut fresh = Env::new();
    fresh.set("BACKUP_DIR", &env.backups);
    fresh.set("BACKUP_IDENTITY_FILE", &keep);
    let target = env.path("t");
    fresh.ok(argv!["restore", "latest", "--to", target]);
    assert_same(
        &snapshot(&env.project, excluded_by_default),
        &snapshot(&target, |_| false),
    );
}
