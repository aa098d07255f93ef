//! The small harness every test uses: an isolated environment (its own HOME,
//! project and backup directory, no inherited `BACKUP_*` variables), a way to
//! run the real `cofre` binary in it, a generator of realistic project trees,
//! and a snapshot of a tree for exact comparison.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// An isolated place to run cofre.
pub struct Env {
    pub root: TempDir,
    pub home: PathBuf,
    pub project: PathBuf,
    pub backups: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// A new environment with an empty project directory.
    pub fn new() -> Env {
        let root = tempfile::Builder::new()
            .prefix("cofre-test-")
            .tempdir()
            .unwrap();
        // Other users (the unprivileged-user tests) must be able to enter.
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let home = root.path().join("home");
        let project = root.path().join("project");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&project).unwrap();
        let backups = project.join("backups");
        Env {
            root,
            home,
            project,
            backups,
            vars: Vec::new(),
        }
    }

    /// A new environment whose project holds a generated tree.
    pub fn with_tree() -> Env {
        let env = Env::new();
        make_tree(&env.project);
        env
    }

    /// A path inside the environment.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Sets a variable for every later command.
    pub fn set(&mut self, key: &str, value: impl AsRef<OsStr>) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((
            key.to_owned(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
    }

    /// The `cofre` command, run in the project directory.
    pub fn cmd(&self) -> Command {
        self.cmd_via(&[])
    }

    /// The same, run through a wrapper (`/usr/bin/time -v -o F`, say).
    pub fn cmd_via(&self, wrapper: &[&str]) -> Command {
        let mut c = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_cofre"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_cofre")),
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("BACKUP_") || k == "MONGODB_URI" || k == "TZ" || k == "COFRE_DEBUG" {
                c.env_remove(k);
            }
        }
        c.env("HOME", &self.home).current_dir(&self.project);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// The `cofre` command as the unprivileged user `nobody` (65534) when
    /// the tests run as root (as this user otherwise), with the same
    /// environment as [`Env::cmd`].
    pub fn unprivileged(&self) -> Command {
        if is_root() {
            self.cmd_via(&[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ])
        } else {
            self.cmd()
        }
    }

    /// Runs cofre with `args` (strings, paths: anything an argument can
    /// be; `argv!` mixes them).
    pub fn run<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs cofre and asserts it succeeded (exit 0).
    pub fn ok<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        let args = os_args(args);
        let out = self.run(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "cofre {args:?} failed:\n{}",
            text(&out)
        );
        out
    }

    /// Runs cofre and asserts it failed with `code`; returns its one error
    /// line.
    pub fn fails<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>, code: i32) -> String {
        let args = os_args(args);
        let out = self.run(&args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "cofre {args:?}:\n{}",
            text(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let last = err
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect::<Vec<_>>();
        assert_eq!(last.len(), 1, "expected one error line, got:\n{err}");
        last[0].to_owned()
    }

    /// The archives in the backup directory, oldest first.
    pub fn archives(&self) -> Vec<PathBuf> {
        archives_in(&self.backups)
    }

    /// The single archive there is.
    pub fn archive(&self) -> PathBuf {
        let a = self.archives();
        assert_eq!(a.len(), 1, "expected one archive, found {a:?}");
        a[0].clone()
    }

    /// The file name of the only archive in the backup directory.
    pub fn archive_name(&self) -> String {
        let archive = self.archive();
        let name = archive.file_name().expect("an archive has a name");
        name.to_str().expect("archive names are UTF-8").to_owned()
    }

    /// The default identity file.
    pub fn identity(&self) -> PathBuf {
        self.home.join(".config/cofre/identity.txt")
    }

    /// This environment's signing key (made with the minisign CLI when
    /// cofre has not made one yet).
    pub fn signing_key(&self) -> PathBuf {
        let key = self.home.join(".config/cofre/signing.key");
        if !key.exists() {
            fs::create_dir_all(key.parent().unwrap()).unwrap();
            sh(&format!(
                "minisign -G -W -s '{}' -p '{}' </dev/null >/dev/null",
                key.display(),
                key.with_extension("pub").display()
            ));
        }
        key
    }

    /// The public half of this environment's signing key (`RW...`).
    pub fn signing_public(&self) -> String {
        let key = self.signing_key();
        let text = fs::read_to_string(key.with_extension("pub")).unwrap();
        text.lines().nth(1).unwrap().trim().to_owned()
    }

    /// Signs `file` with this environment's key, as cofre would (naming
    /// this project and host), in the signature file beside it: what an
    /// insider holding the key could do.
    pub fn sign(&self, file: &Path) {
        let source = self.project.canonicalize().unwrap();
        self.sign_as(file, &source.display().to_string());
    }

    /// The same, claiming to be a backup of the project `source`.
    pub fn sign_as(&self, file: &Path, source: &str) {
        let key = self.signing_key();
        let name = file.file_name().unwrap().to_str().unwrap();
        let sig = format!("{}.minisig", file.display());
        let _ = fs::remove_file(&sig);
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        sh(&format!(
            "minisign -S -s '{}' -m '{}' -x '{}' -t \"$(printf 'timestamp:0\\tfile:{name}\\thost:{}\\tsource:{source}')\" </dev/null >/dev/null",
            key.display(),
            file.display(),
            sig,
            host.trim()
        ));
    }
}

fn os_args<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect()
}

/// Command-line arguments of mixed kinds (`&str`, `String`, `Path`,
/// `PathBuf`), for `Env::run`, `ok` and `fails`.
macro_rules! argv {
    ($($a:expr),* $(,)?) => {
        [$(::std::ffi::OsStr::new(&$a)),*]
    };
}

/// Archives (by name pattern) in `dir`, oldest first.
pub fn archives_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with("backup_")
                            && !n.ends_with(".partial")
                            && !n.ends_with(".minisig")
                            && !n.ends_with(".index")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Names in `dir` that start with `prefix` (empty when `dir` is missing).
pub fn names_starting(dir: &Path, prefix: &str) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an external command and asserts success.
pub fn sh(cmd: &str) -> Output {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "`{cmd}` failed:\n{}", text(&out));
    out
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A deterministic pseudo-random byte generator (xorshift), so trees are
/// the same on every run without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Writes a tree like `make-project-tree.sh` makes: source text, JSON data,
/// incompressible binaries, awkward names, symlinks, empty files and
/// directories, unusual modes, sub-second mtimes, and the directories a
/// backup must leave out.
pub fn make_tree(dir: &Path) {
    let mut rng = Rng::new(42);
    for i in 0..40 {
        let body: String = (0..200)
            .map(|j| {
                format!(
                    "export function f{i}_{j}(x) {{ return x * {j} + {}; }}\n",
                    rng.next() % 1000
                )
            })
            .collect();
        write(
            &dir.join(format!("src/module{:02}/index.js", i % 7))
                .with_file_name(format!("m{i}.js")),
            body.as_bytes(),
        );
    }
    for i in 0..20 {
        let rows: Vec<String> = (0..300)
            .map(|j| {
                format!(
                    "{{\"id\":{},\"name\":\"user{j}\",\"score\":{}}}",
                    i * 1000 + j,
                    rng.next() % 10_000
                )
            })
            .collect();
        write(
            &dir.join(format!("data/export_{i:03}.json")),
            format!("[{}]", rows.join(",")).as_bytes(),
        );
    }
    for i in 0..6 {
        let n = 50_000 + (rng.next() % 300_000) as usize;
        write(
            &dir.join(format!("public/assets/img{i}.png")),
            &rng.bytes(n),
        );
    }
    // One file bigger than the compression block, half compressible.
    let mut big = rng.bytes(1_500_000);
    big.extend(std::iter::repeat_n(b'a', 1_500_000));
    write(&dir.join("vendor/lib/libbig.so"), &big);
    // Awkward names.
    write(&dir.join("odd/名前 with spaces/ficheiro ação.txt"), b"hi\n");
    let long_dir = "d".repeat(120);
    let long_file = format!("{}.txt", "f".repeat(150));
    write(&dir.join("odd").join(&long_dir).join(&long_file), b"long\n");
    write(&dir.join("odd/quote\"and\\back'slash.txt"), b"q\n");
    write(
        &dir.join(OsStr::from_bytes(b"odd/latin1-\xe9t\xe9.txt")),
        b"not utf-8\n",
    );
    write(&dir.join("odd/empty-file"), b"");
    fs::create_dir_all(dir.join("odd/empty-dir")).unwrap();
    std::os::unix::fs::symlink("../data/export_000.json", dir.join("odd/link-to-data")).unwrap();
    std::os::unix::fs::symlink("does-not-exist", dir.join("odd/dangling")).unwrap();
    std::os::unix::fs::symlink("../src", dir.join("odd/link-to-dir")).unwrap();
    // Modes.
    write(&dir.join("bin/run.sh"), b"#!/bin/sh\necho run\n");
    fs::set_permissions(dir.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&dir.join("config/secret-ish.json"), b"{}\n");
    fs::set_permissions(
        dir.join("config/secret-ish.json"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    write(&dir.join("config/readonly.txt"), b"ro\n");
    fs::set_permissions(
        dir.join("config/readonly.txt"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    fs::create_dir_all(dir.join("private")).unwrap();
    write(&dir.join("private/inside.txt"), b"p\n");
    fs::set_permissions(dir.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    // What a backup must leave out.
    write(
        &dir.join("node_modules/left-pad/index.js"),
        b"module.exports = 1;\n",
    );
    write(&dir.join("src/module01/node_modules/x/y.js"), b"nested\n");
    write(&dir.join(".git/objects/pack.bin"), &rng.bytes(10_000));
    write(&dir.join("logs/app.log"), b"old log line\n");
    write(
        &dir.join("backups/old-script-backup.tar.gz"),
        b"not a cofre archive\n",
    );
    write(
        &dir.join(".env"),
        b"SESSION_SECRET=do-not-back-me-up\nAPI_KEY=do-not-back-me-up\n",
    );
    write(&dir.join(".env.production"), b"API_KEY=also-secret\n");
    // A package.json, as the application has.
    write(
        &dir.join("package.json"),
        br#"{"name":"app","scripts":{"backup":"cofre backup","restore":"cofre restore"}}"#,
    );
    // Mtimes with nanoseconds, different per file, set last (directories too).
    let mut t = 1_700_000_000i64;
    let mut paths = Vec::new();
    for entry in walk_all(dir) {
        paths.push(entry);
    }
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in paths {
        t += 3_600;
        let nanos = (rng.next() % 1_000_000_000) as i64;
        set_mtime(&p, t, nanos);
    }
}

/// Sets a path's mtime (without following symlinks).
pub fn set_mtime(p: &Path, secs: i64, nanos: i64) {
    let ts = format!("@{secs}.{nanos:09}");
    let out = Command::new("touch")
        .args(["-h", "-m", "-d", &ts])
        .arg(p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "touch {}: {}",
        p.display(),
        text(&out)
    );
}

/// Every path below `dir` (not `dir` itself), not following symlinks.
pub fn walk_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// What the comparison of two trees looks at, per path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        mode: u32,
        mtime: (i64, i64),
        content: Vec<u8>,
    },
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// The tree below `dir`, keyed by relative path, minus paths for which
/// `skip` says so.
pub fn snapshot(dir: &Path, skip: impl Fn(&str) -> bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for p in walk_all(dir) {
        let rel = p.strip_prefix(dir).unwrap();
        let key = String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned();
        if skip(&key) {
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        let node = if m.file_type().is_symlink() {
            Node::Symlink {
                target: fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
            }
        } else if m.is_dir() {
            Node::Dir {
                mode: m.mode() & 0o7777,
                mtime: (m.mtime(), m.mtime_nsec()),
            }
        } else {
            Node::File {
                mode: m.mode() & 0o7777,
                mtime: (m.mtime(), m.mtime_nsec()),
                content: fs::read(&p).unwrap(),
            }
        };
        out.insert(key, node);
    }
    out
}

/// Whether a project-relative path is one cofre leaves out by default.
pub fn excluded_by_default(rel: &str) -> bool {
    let first = rel.split('/').next().unwrap_or("");
    rel.split('/')
        .any(|c| c == "node_modules" || c == ".git" || c == "logs")
        || first == "backups"
        || rel
            .split('/')
            .any(|c| c == ".env" || c.starts_with(".env."))
}

/// Asserts two snapshots are equal, naming the first difference.
pub fn assert_same(expected: &BTreeMap<String, Node>, got: &BTreeMap<String, Node>) {
    for (k, v) in expected {
        match got.get(k) {
            None => panic!("{k} is missing from the restored tree"),
            Some(g) if g != v => panic!(
                "{k} differs:\n expected {}\n got      {}",
                brief(v),
                brief(g)
            ),
            _ => {}
        }
    }
    for k in got.keys() {
        assert!(
            expected.contains_key(k),
            "{k} was restored but should not be there"
        );
    }
}

fn brief(n: &Node) -> String {
    match n {
        Node::File {
            mode,
            mtime,
            content,
        } => {
            format!("file mode {mode:o} mtime {mtime:?} {} bytes", content.len())
        }
        Node::Dir { mode, mtime } => format!("dir mode {mode:o} mtime {mtime:?}"),
        Node::Symlink { target } => format!("symlink -> {}", String::from_utf8_lossy(target)),
    }
}

/// Whether this process runs as root (some permission tests then run cofre
/// as an unprivileged user instead).
pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Gives `p` (and everything below) to `nobody`, for [`Env::unprivileged`].
pub fn chown_nobody(p: &Path) {
    if is_root() {
        sh(&format!("chown -R 65534:65534 '{}'", p.display()));
    }
}

/// Mounts a small tmpfs (root only; otherwise says why it is skipped).
pub struct SmallDisk {
    pub path: std::path::PathBuf,
}

impl SmallDisk {
    pub fn mount(env: &Env, size: &str) -> Option<SmallDisk> {
        Self::mount_at(&env.path("small-disk"), size)
    }

    /// Mounts it at `path` (created when missing).
    pub fn mount_at(path: &Path, size: &str) -> Option<SmallDisk> {
        if !is_root() {
            assert!(
                std::env::var("COFRE_TEST_REQUIRE_ROOT").as_deref() != Ok("1"),
                "mounting a small filesystem needs root, and COFRE_TEST_REQUIRE_ROOT is set"
            );
            eprintln!("skipped: mounting a small filesystem needs root");
            return None;
        }
        let path = path.to_path_buf();
        fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        if !out.status.success() {
            assert!(
                std::env::var("COFRE_TEST_REQUIRE_ROOT").as_deref() != Ok("1"),
                "cannot mount a tmpfs, and COFRE_TEST_REQUIRE_ROOT is set: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "skipped: cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(SmallDisk { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// The peak resident set size, in KiB, that `/usr/bin/time -v -o REPORT`
/// wrote to `report`.
pub fn peak_rss_kib(report: &Path) -> u64 {
    fs::read_to_string(report)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .unwrap_or_else(|| panic!("no peak RSS in {}", report.display()))
        .trim()
        .parse()
        .unwrap()
}
