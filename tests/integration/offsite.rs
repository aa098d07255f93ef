//! Offsite copies against a real S3-compatible server (moto, started by
//! `scripts/test`): upload after each backup, list, verify and restore
//! from the bucket alone on a machine that has only the identity file,
//! Object Lock, and the faults: the server going away mid-upload, wrong
//! credentials, a missing bucket, a deletion a lock refuses, and a large
//! archive in bounded memory. No fault loses the local archive or shows a
//! secret.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const SECRET: &str = "Sup3r-Secret-Access-Key/with+chars";

/// The test S3 server, or `None` (said why) outside `scripts/test`.
pub struct S3 {
    pub endpoint: String,
    moto: String,
}

pub fn s3() -> Option<S3> {
    match (
        std::env::var("COFRE_TEST_S3_ENDPOINT"),
        std::env::var("COFRE_TEST_MOTO"),
    ) {
        (Ok(endpoint), Ok(moto)) => Some(S3 { endpoint, moto }),
        _ => {
            assert!(
                std::env::var("COFRE_TEST_REQUIRE_S3").as_deref() != Ok("1"),
                "COFRE_TEST_S3_ENDPOINT is not set (scripts/test starts the S3 server)"
            );
            eprintln!("skipped: no S3 test server (run scripts/test)");
            None
        }
    }
}

impl S3 {
    pub fn admin(&self, endpoint: &str, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/moto_admin.py");
        let out = Command::new(format!("{}/python", self.moto))
            .arg(script)
            .arg(args[0])
            .arg(endpoint)
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "moto_admin {args:?}: {}", text(&out));
        stdout(&out)
    }

    /// A new bucket on the shared server.
    pub fn bucket(&self, name: &str, lock: bool) {
        let mut args = vec!["bucket", name];
        if lock {
            args.push("lock");
        }
        self.admin(&self.endpoint, &args);
    }

    fn keys(&self, endpoint: &str, bucket: &str) -> Vec<String> {
        self.admin(endpoint, &["keys", bucket])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A server of this test's own on `port`.
    pub fn own(&self, port: u16, extra_env: &[(&str, &str)]) -> OwnS3 {
        let mut cmd = Command::new(format!("{}/moto_server", self.moto));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        OwnS3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

pub struct OwnS3 {
    child: Child,
    pub endpoint: String,
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bucket name unique to this run.
fn unique_bucket(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Points `env` at `endpoint` and `s3://bucket/prefix`.
pub fn use_bucket(env: &mut Env, endpoint: &str, bucket: &str, prefix: &str) {
    env.set("AWS_ENDPOINT_URL", endpoint);
    env.set("AWS_ACCESS_KEY_ID", "test");
    env.set("AWS_SECRET_ACCESS_KEY", SECRET);
    env.set("AWS_REGION", "us-east-1");
    env.set("BACKUP_REMOTE", format!("s3://{bucket}/{prefix}"));
}

/// Everything anyone could read after a run, for secret checks.
fn readable(env: &Env, out: &std::process::Output) -> String {
    let mut all = text(out);
    for name in [".cofre-state.json", ".cofre-offsite.json"] {
        all.push_str(&fs::read_to_string(env.backups.join(name)).unwrap_or_default());
    }
    all.push_str(&text(&env.run(["status", "--json"])));
    all
}

#[test]
fn copies_go_up_and_a_new_machine_restores_from_the_bucket_alone() {
    let Some(s3) = s3() else { return };
    let bucket = unique_bucket("happy");
    s3.bucket(&bucket, true);
    let mut env = Env::with_tree();
    use_bucket(&mut env, &s3.endpoint, &bucket, "srv1");
    env.set("BACKUP_REMOTE_LOCK", "governance");
    let mongo = crate::mongo::mongo();
    let db = crate::mongo::unique("offsite_db");
    if let Some(m) = &mongo {
        m.drop_db(&db);
        crate::mongo::populate(m, &db, 2000);
        env.set("MONGODB_URI", m.uri(&db, ""));
    }
    let out = env.ok(["backup"]);
    assert!(!readable(&env, &out).contains(SECRET));
    let archive = env.archive();
    let name = archive.file_name().unwrap().to_str().unwrap().to_owned();
    let keys = s3.keys(&s3.endpoint, &bucket);
    assert!(keys.contains(&format!("srv1/{name}")), "{keys:?}");
    assert!(keys.contains(&format!("srv1/{name}.minisig")), "{keys:?}");

    let out = stdout(&env.ok(["list", "--remote"]));
    assert!(out.contains(&name) && out.contains("trusted"), "{out}");
    let out = stdout(&env.ok(["verify", "--remote", "latest"]));
    assert!(out.contains(&name) && out.contains("signature ok"), "{out}");
    let status = stdout(&env.ok(["status", "--max-age", "1h"]));
    assert!(status.contains(&format!("newest copy {name}")), "{status}");

    // A new machine: its own HOME, no BACKUP_DIR, only the identity file
    // (which carries the signing key) and the bucket's credentials.
    let kept = env.path("kept-identity.txt");
    fs::copy(env.identity(), &kept).unwrap();
    let mut fresh = Env::new();
    use_bucket(&mut fresh, &s3.endpoint, &bucket, "srv1");
    fresh.set("BACKUP_IDENTITY_FILE", &kept);
    let target = fresh.path("recovered");
    let mut args = vec![
        "restore",
        "--remote",
        "latest",
        "--to",
        target.to_str().unwrap(),
    ];
    let copy_db = crate::mongo::unique("offsite_copy");
    let uri = mongo.as_ref().map(|m| m.uri("", ""));
    if let Some(uri) = &uri {
        args.extend(["--mongo-uri", uri, "--to-db", &copy_db]);
    } else {
        args.push("--files-only");
    }
    fresh.ok(&args);
    assert_same(
        &snapshot(&env.project, excluded_by_default),
        &snapshot(&target, |_| false),
    );
    if let Some(m) = &mongo {
        crate::mongo::assert_same_db(
            &crate::mongo::state(m, &db),
            &crate::mongo::state(m, &copy_db),
        );
        m.drop_db(&db);
        m.drop_db(&copy_db);
    }
    // An s3:// name works without BACKUP_REMOTE.
    let mut direct = Env::new();
    use_bucket(&mut direct, &s3.endpoint, &bucket, "srv1");
    direct.vars.retain(|(k, _)| k != "BACKUP_REMOTE");
    direct.set("BACKUP_IDENTITY_FILE", &kept);
    let t2 = direct.path("direct");
    direct.ok(argv![
        "restore",
        &format!("s3://{bucket}/srv1/{name}"),
        "--to",
        t2,
        "--files-only",
    ]);
    assert!(t2.join("package.json").is_file());
}

#[test]
fn an_upload_cut_short_by_the_server_goes_up_at_the_next_run() {
    let Some(s3) = s3() else { return };
    let port = free_port();
    let server = s3.own(port, &[]);
    s3.admin(&server.endpoint, &["bucket", "cut"]);
    let mut env = Env::new();
    fs::write(env.project.join("big.bin"), Rng::new(11).bytes(12 << 20)).unwrap();
    use_bucket(&mut env, &server.endpoint, "cut", "x");
    env.set("BACKUP_REMOTE_BANDWIDTH", "2M");
    let child = env
        .cmd()
        .arg("backup")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    drop(server);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let all = readable(&env, &out);
    assert!(all.contains("offsite copy failed"), "{all}");
    assert!(!all.contains(SECRET), "{all}");
    // The local archive is whole.
    let first = env.archive();
    env.ok(argv!["verify", first]);
    let status = env.run(["status", "--max-age", "1h"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(
        stdout(&status).contains("last upload failed"),
        "{}",
        text(&status)
    );

    // The server is back (empty, as moto starts): the next run sends both.
    let server = s3.own(port, &[]);
    s3.admin(&server.endpoint, &["bucket", "cut"]);
    env.vars.retain(|(k, _)| k != "BACKUP_REMOTE_BANDWIDTH");
    std::thread::sleep(Duration::from_millis(1100));
    env.ok(["backup"]);
    let keys = s3.keys(&server.endpoint, "cut");
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(".age")).count(),
        2,
        "{keys:?}"
    );
    env.ok(["status", "--max-age", "1h"]);
}

#[test]
fn wrong_credentials_and_a_missing_bucket_are_clear_and_keep_the_archive() {
    let Some(s3) = s3() else { return };
    let port = free_port();
    let server = s3.own(port, &[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    let keys = s3.admin(&server.endpoint, &["user", "authd"]);
    let (key, secret) = keys.trim().split_once(' ').unwrap();
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    use_bucket(&mut env, &server.endpoint, "authd", "p");
    env.set("AWS_ACCESS_KEY_ID", key);
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let all = readable(&env, &out);
    assert!(all.contains("refused the credentials"), "{all}");
    assert!(!all.contains(SECRET), "{all}");
    assert_eq!(env.archives().len(), 1);
    env.set("AWS_SECRET_ACCESS_KEY", secret);
    env.ok(["backup"]);
    assert!(!readable(&env, &env.run(["status"])).contains(secret));

    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    use_bucket(&mut env, &s3.endpoint, "no-such-bucket-here", "p");
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    assert_eq!(env.archives().len(), 1);
    // --remote without BACKUP_REMOTE is a usage error.
    env.vars.retain(|(k, _)| k != "BACKUP_REMOTE");
    let msg = env.fails(["list", "--remote"], 2);
    assert!(msg.contains("BACKUP_REMOTE"), "{msg}");
}

#[test]
fn remote_retention_deletes_old_copies_but_a_lock_holds_them() {
    let Some(s3) = s3() else { return };
    let bucket = unique_bucket("retained");
    s3.bucket(&bucket, true);
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    use_bucket(&mut env, &s3.endpoint, &bucket, "r");
    env.set("BACKUP_REMOTE_LOCK", "governance");
    env.ok(["backup"]);
    std::thread::sleep(Duration::from_millis(1100));
    env.ok(["backup"]);
    // Retention now wants only the newest: the older one is locked.
    env.set("BACKUP_REMOTE_RETENTION_DAYS", "0");
    env.set("BACKUP_KEEP_LAST", "1");
    env.vars.retain(|(k, _)| k != "BACKUP_REMOTE_LOCK");
    std::thread::sleep(Duration::from_millis(1100));
    let out = env.ok(["backup", "-v"]);
    let said = text(&out);
    assert!(said.matches("it is locked").count() >= 1, "{said}");
    let copies = || {
        s3.keys(&s3.endpoint, &bucket)
            .iter()
            .filter(|k| k.ends_with(".age"))
            .count()
    };
    assert_eq!(copies(), 3);
    // Reported once: the next run does not try again.
    std::thread::sleep(Duration::from_millis(1100));
    let out = env.ok(["backup", "-v"]);
    assert!(!text(&out).contains("it is locked"), "{}", text(&out));
    // The unlocked older copy went; the two locked ones and the newest stay.
    assert_eq!(copies(), 3, "{:?}", s3.keys(&s3.endpoint, &bucket));
    let listed = stdout(&env.ok(["list", "--remote"]));
    let rows = listed.lines().filter(|l| l.starts_with("backup_")).count();
    assert_eq!(rows, 3, "{listed}");
}

#[test]
fn a_large_archive_goes_up_in_bounded_memory() {
    let Some(s3) = s3() else { return };
    let bucket = unique_bucket("large");
    s3.bucket(&bucket, false);
    let mut env = Env::new();
    let mut rng = Rng::new(5);
    for i in 0..5 {
        fs::write(
            env.project.join(format!("blob{i}.bin")),
            rng.bytes(25 << 20),
        )
        .unwrap();
    }
    use_bucket(&mut env, &s3.endpoint, &bucket, "big");
    env.set("BACKUP_COMPRESSION", "gzip:1");
    let report = env.path("time.txt");
    let time = env
        .cmd_via(&["/usr/bin/time", "-v", "-o", report.to_str().unwrap()])
        .arg("backup")
        .output()
        .unwrap();
    assert!(time.status.success(), "{}", text(&time));
    let rss_kib: u64 = peak_rss_kib(&report);
    assert!(
        rss_kib < 64 * 1024,
        "peak RSS {rss_kib} KiB for a 125 MB archive"
    );
    let archive = env.archive();
    let size = fs::metadata(&archive).unwrap().len();
    assert!(size > 120 << 20, "{size}");
    env.ok(["verify", "--remote", "latest"]);
}

#[test]
fn the_daemon_uploads_in_the_background_and_catches_up() {
    let Some(s3) = s3() else { return };
    let bucket = unique_bucket("daemon");
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    // An archive made while the bucket did not exist yet.
    use_bucket(&mut env, &s3.endpoint, &bucket, "d");
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    s3.bucket(&bucket, false);
    env.set("BACKUP_SCHEDULE", "*/3 * * * * *");
    let mut daemon = crate::daemon::Daemon::start(&env);
    // The old archive goes up at start; the two scheduled ones only if
    // every backup hands its archive to the uploader (the second is made
    // seconds after the start-up upload has ended).
    let up = daemon.wait_for(Duration::from_secs(60), |l| {
        crate::daemon::count(l, "scheduled backup done") >= 2
            && s3
                .keys(&s3.endpoint, &bucket)
                .iter()
                .filter(|k| k.ends_with(".age"))
                .count()
                >= 3
    });
    let (code, seen) = daemon.stop();
    assert!(up, "{seen:#?}");
    assert_eq!(code, Some(0));
    assert!(seen.iter().all(|l| !l.contains(SECRET)));
    env.ok(["status", "--max-age", "1h"]);
}

impl S3 {
    /// A server of this test's own whose request log goes to `log`.
    fn own_logged(&self, port: u16, log: &Path) -> OwnS3 {
        let mut cmd = Command::new(format!("{}/moto_server", self.moto));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap());
        let child = cmd.spawn().unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(100));
        }
        OwnS3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Writes `data` at `key`, over whatever is there (with a lock).
    fn put(&self, endpoint: &str, bucket: &str, key: &str, data: &[u8], lock: bool) {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), data).unwrap();
        let mut args = vec!["put", bucket, key, file.path().to_str().unwrap()];
        if lock {
            args.push("lock");
        }
        self.admin(endpoint, &args);
    }
}

/// Someone with the bucket's write credentials plants a signature under
/// the next backup's name, and keys object_store cannot represent: the
/// backup replaces the junk it did not write, and every listing works.
#[test]
fn the_bucket_is_not_believed_junk_is_replaced_and_odd_keys_are_passed_over() {
    let Some(s3) = s3() else { return };
    let bucket = unique_bucket("junk");
    s3.bucket(&bucket, false);
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a\n").unwrap();
    use_bucket(&mut env, &s3.endpoint, &bucket, "p");
    for key in [
        "p/../x",
        "p//x",
        "p/a/../../y",
        "p/sub/backup_2099-01-01T00-00-00.tar.gz.age",
    ] {
        s3.put(&s3.endpoint, &bucket, key, b"odd", false);
    }
    // Junk signatures under the names of the next seconds.
    let now = chrono::Utc::now();
    for s in 0..20 {
        let name = (now + chrono::Duration::seconds(s))
            .format("backup_%Y-%m-%dT%H-%M-%S.tar.gz.age")
            .to_string();
        s3.put(
            &s3.endpoint,
            &bucket,
            &format!("p/{name}.minisig"),
            b"untrusted comment: junk\nRWQ=\n",
            false,
        );
    }
    let out = env.ok(["backup", "-v"]);
    assert!(text(&out).contains("did not write"), "{}", text(&out));
    env.ok(["verify", "--remote", "latest"]);
    let listed = stdout(&env.ok(["list", "--remote"]));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let target = env.path("from-bucket");
    env.ok(argv!["restore", "--remote", "latest", "--to", target,]);
    assert_eq!(fs::read_to_string(target.join("a.txt")).unwrap(), "a\n");
    env.ok(["status", "--max-age", "1h"]);
}

/// With Object Lock, a PutObject over a locked archive adds a version on
/// top: restores and verify read the version cofre wrote, and `upload`
/// and `status` say the current one is not cofre's. A junk signature
/// planted and locked before the upload cannot be replaced: an offsite
/// failure, reported.
#[test]
fn a_locked_archive_written_over_still_restores_from_the_version_cofre_wrote() {
    let Some(s3) = s3() else { return };
    let bucket = unique_bucket("over");
    s3.bucket(&bucket, true);
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a\n").unwrap();
    use_bucket(&mut env, &s3.endpoint, &bucket, "l");
    env.set("BACKUP_REMOTE_LOCK", "governance");
    env.ok(["backup"]);
    let name = env.archive_name();
    s3.put(
        &s3.endpoint,
        &bucket,
        &format!("l/{name}"),
        b"ransom note",
        false,
    );
    s3.put(
        &s3.endpoint,
        &bucket,
        &format!("l/{name}.minisig"),
        b"ransom note",
        false,
    );
    let versions = s3.admin(&s3.endpoint, &["versions", &bucket]);
    assert_eq!(versions.lines().count(), 4, "{versions}");
    // A fresh machine with only the identity file.
    let mut fresh = Env::new();
    use_bucket(&mut fresh, &s3.endpoint, &bucket, "l");
    fresh.set("BACKUP_IDENTITY_FILE", env.identity());
    fresh.set("BACKUP_SOURCE", env.project.canonicalize().unwrap());
    fresh.ok(["verify", "--remote", "latest"]);
    let target = fresh.path("dr");
    fresh.ok(argv!["restore", "--remote", "latest", "--to", target,]);
    assert_eq!(fs::read_to_string(target.join("a.txt")).unwrap(), "a\n");
    let out = env.ok(["upload"]);
    assert!(text(&out).contains("not cofre's"), "{}", text(&out));
    let status = stdout(&env.ok(["status"]));
    assert!(status.contains("not cofre's"), "{status}");

    // Planted and locked before the next backup's upload: not replaceable.
    let now = chrono::Utc::now();
    for s in 1..15 {
        // (The next backup is a differential of the first.)
        let next = (now + chrono::Duration::seconds(s))
            .format("backup_%Y-%m-%dT%H-%M-%S.diff.tar.gz.age")
            .to_string();
        s3.put(
            &s3.endpoint,
            &bucket,
            &format!("l/{next}.minisig"),
            b"junk",
            true,
        );
    }
    std::thread::sleep(Duration::from_millis(1100));
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("cannot be replaced"), "{}", text(&out));
    let status = env.run(["status", "--max-age", "1h"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
}

/// Thousands of objects planted under the prefix: `latest` and `list
/// --remote` fetch no signature that is not in the listing, and a bounded
/// number that are.
#[test]
fn planted_objects_cost_a_bounded_number_of_requests() {
    let Some(s3) = s3() else { return };
    let log = tempfile::NamedTempFile::new().unwrap();
    let port = free_port();
    let server = s3.own_logged(port, log.path());
    s3.admin(&server.endpoint, &["bucket", "planted"]);
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a\n").unwrap();
    use_bucket(&mut env, &server.endpoint, "planted", "p");
    env.ok(["backup"]);
    s3.admin(&server.endpoint, &["plant", "planted", "p", "1500", "20"]);
    let signature_gets = || {
        fs::read_to_string(log.path())
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(".minisig"))
            .count()
    };
    let before = signature_gets();
    let target = env.path("t");
    env.ok(argv!["restore", "--remote", "latest", "--to", target,]);
    assert_eq!(fs::read_to_string(target.join("a.txt")).unwrap(), "a\n");
    let latest = signature_gets() - before;
    assert!(latest <= 25, "{latest} signature requests for `latest`");
    let before = signature_gets();
    let listed = stdout(&env.ok(["list", "--remote"]));
    assert_eq!(listed.lines().count(), 1502, "one per archive and a header");
    let listing = signature_gets() - before;
    assert!(
        listing <= 25,
        "{listing} signature requests for `list --remote`"
    );
    // More junk signatures than `latest` reads: it stops at its bound and
    // says so, and the genuine archive is still restored by its name.
    s3.admin(&server.endpoint, &["plant", "planted", "p", "300", "300"]);
    let before = signature_gets();
    let msg = env.fails(["restore", "--remote", "latest", "--dry-run"], 1);
    let stopped = signature_gets() - before;
    assert!(
        (256..=260).contains(&stopped),
        "{stopped} signature requests for a stopped `latest`"
    );
    assert!(
        msg.contains("the 256 newest of the 1501 archives")
            && msg.contains("name the archive to restore"),
        "{msg}"
    );
    let name = env.archive_name();
    let target = env.path("by-name");
    env.ok(argv!["restore", "--remote", name, "--to", target]);
    assert_eq!(fs::read_to_string(target.join("a.txt")).unwrap(), "a\n");
}
