//! No secret in any output, and nothing cofre creates readable by others:
//! passwords (with reserved characters, encoded or not), secret URI
//! options, a secret key given where a public key belongs and passphrases
//! never reach stderr (text or JSON), the log file, the state file,
//! `status --json` or an error; every file cofre makes is 0600 and every
//! directory 0700 whatever the umask.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::*;

/// Everything a user or a monitoring system could read after a run.
fn every_output(env: &Env, out: &std::process::Output) -> String {
    let mut all = text(out);
    for p in [
        env.backups.join(".cofre-state.json"),
        env.path("app.log"),
        env.path("app.json.log"),
    ] {
        all.push_str(&fs::read_to_string(&p).unwrap_or_default());
    }
    let status = env.run(["status", "--json"]);
    all.push_str(&text(&status));
    all
}

fn assert_hidden(all: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!all.contains(s), "{s:?} leaked:\n{all}");
    }
}

#[test]
fn uri_passwords_never_leak_whatever_they_hold() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    // Unencoded reserved characters: the driver cannot read this URI, so it
    // is refused at start-up (exit 2), and nothing between :// and the last
    // @ is ever shown.
    for uri in [
        "mongodb://app:Sl4sh/Qu3ry?H4sh#C0lon:At@d@127.0.0.1:9/app",
        "mongodb://app:Tw0@@Ats@127.0.0.1:9/app",
        "mongodb://app:Perc%ZZent9@127.0.0.1:9/app",
    ] {
        env.set("MONGODB_URI", uri);
        env.set("BACKUP_LOG_FILE", env.path("app.log"));
        let out = env.run(["backup"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let all = every_output(&env, &out);
        assert!(
            all.contains("MONGODB_URI") && all.contains("percent-encode"),
            "{all}"
        );
        assert_hidden(
            &all,
            &[
                "Sl4sh", "Qu3ry", "H4sh", "C0lon", "At@d", "Tw0@", "@Ats", "Perc%ZZ", "ZZent9",
            ],
        );
    }
    // Encoded, so valid, and the server is down: the failure is recorded
    // everywhere, the password nowhere (decoded or as written).
    let uri = "mongodb://app:P%40ss%2Fw0rd%3F%23x@127.0.0.1:9/app?serverSelectionTimeoutMS=800";
    env.set("MONGODB_URI", uri);
    env.set("BACKUP_LOG_FORMAT", "json");
    env.set("BACKUP_LOG_FILE", env.path("app.json.log"));
    let out = env.run(["backup", "-v"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = every_output(&env, &out);
    assert!(all.contains("app:***@127.0.0.1:9"), "{all}");
    assert_hidden(&all, &["P@ss/w0rd?#x", "P%40ss%2Fw0rd%3F%23x", "w0rd"]);
}

#[test]
fn the_uri_can_come_from_a_file() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    let file = env.path("mongodb-uri");
    fs::write(
        &file,
        "mongodb://app:FromF1le-Pass@127.0.0.1:9/app?serverSelectionTimeoutMS=800\n",
    )
    .unwrap();
    env.set("BACKUP_MONGODB_URI_FILE", &file);
    env.set("MONGODB_URI", "mongodb://ignored@127.0.0.1:8/x");
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = every_output(&env, &out);
    assert!(all.contains("127.0.0.1:9"), "the file wins: {all}");
    assert_hidden(&all, &["FromF1le-Pass"]);
    env.set("BACKUP_MONGODB_URI_FILE", env.path("missing"));
    let msg = env.fails(["backup"], 2);
    assert!(msg.contains("BACKUP_MONGODB_URI_FILE"), "{msg}");
}

#[test]
fn a_secret_key_where_a_public_key_belongs_is_never_echoed() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    let id = env.path("id.txt");
    env.ok(argv!["keygen", "-o", id]);
    let secret = fs::read_to_string(&id)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_owned();
    env.set("BACKUP_RECIPIENTS", &secret);
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = every_output(&env, &out);
    assert!(all.contains("secret key"), "{all}");
    assert_hidden(&all, &[&secret[15..]]);
    let file = env.path("recipients.txt");
    fs::write(&file, format!("# keys\n{secret}\n")).unwrap();
    env.vars.retain(|(k, _)| k != "BACKUP_RECIPIENTS");
    env.set("BACKUP_RECIPIENTS_FILE", &file);
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_hidden(&every_output(&env, &out), &[&secret[15..]]);
}

#[test]
fn passphrases_never_leak() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    let pass = "quote\"back\\slash/and@all";
    env.set("BACKUP_PASSPHRASE", pass);
    env.set("BACKUP_LOG_FORMAT", "json");
    env.set("BACKUP_LOG_FILE", env.path("app.json.log"));
    let out = env.ok(["backup", "-v"]);
    let mut all = every_output(&env, &out);
    env.set("BACKUP_PASSPHRASE", "wrong\"one/entirely");
    let out = env.run(["verify"]);
    assert_eq!(out.status.code(), Some(12), "no key opens it");
    all.push_str(&every_output(&env, &out));
    assert_hidden(
        &all,
        &[
            pass,
            "quote\\\"back\\\\slash/and@all",
            "wrong\"one/entirely",
            "wrong\\\"one/entirely",
        ],
    );
}

fn modes_below(dir: &Path) -> Vec<(String, u32)> {
    let mut all = walk_all(dir);
    all.push(dir.to_path_buf());
    all.into_iter()
        .filter(|p| !fs::symlink_metadata(p).unwrap().file_type().is_symlink())
        .map(|p| {
            (
                p.display().to_string(),
                fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            )
        })
        .collect()
}

#[test]
fn everything_cofre_creates_is_private_whatever_the_umask() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    let log = env.path("logs-here/app.log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    env.set("BACKUP_LOG_FILE", &log);
    let mut cmd = env.cmd();
    cmd.arg("backup");
    let script = format!("umask 000; exec '{}' backup", env!("CARGO_BIN_EXE_cofre"));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("HOME", &env.home)
        .current_dir(&env.project)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut created = modes_below(&env.backups);
    created.extend(modes_below(&env.home.join(".config")));
    created.push((
        log.display().to_string(),
        fs::metadata(&log).unwrap().permissions().mode() & 0o7777,
    ));
    assert!(created.len() >= 9, "{created:?}");
    for (path, mode) in created {
        let is_dir = Path::new(&path).is_dir();
        assert_eq!(
            mode,
            if is_dir { 0o700 } else { 0o600 },
            "{path} is {mode:o}"
        );
    }
}
