//! The README's Troubleshooting section quotes what cofre prints: each
//! case is made to happen here, and the line cofre printed must be the one
//! quoted (`…` standing for what differs from machine to machine), so the
//! section cannot drift from the program.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// The quoted error lines of the Troubleshooting section, each with the
/// heading it is under.
fn quoted() -> Vec<(String, String)> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Troubleshooting\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Troubleshooting section");
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut in_block = false;
    for line in section.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            heading = h.to_owned();
        } else if line == "```text" {
            in_block = true;
        } else if line == "```" {
            in_block = false;
        } else if in_block {
            out.push((heading.clone(), line.to_owned()));
        }
    }
    out
}

/// Whether `line` is `quote` with each `…` standing for anything.
fn matches(quote: &str, line: &str) -> bool {
    let pieces: Vec<&str> = quote.split('…').collect();
    let (first, rest) = pieces.split_first().expect("split gives one piece");
    let Some(mut tail) = line.strip_prefix(first) else {
        return false;
    };
    for (i, piece) in rest.iter().enumerate() {
        if i + 1 == rest.len() {
            return tail.ends_with(piece);
        }
        match tail.find(piece) {
            Some(at) => tail = &tail[at + piece.len()..],
            None => return false,
        }
    }
    tail.is_empty()
}

#[test]
fn quotes_match_with_ellipses_for_what_differs() {
    assert!(matches("error: a … b", "error: a xyz b"));
    assert!(matches("error: … is …; done", "error: X is Y; done"));
    assert!(!matches("error: a … b", "error: a xyz c"));
    assert!(!matches("error: a b", "error: a b c"));
}

/// A small project with one backup made.
fn backed_up() -> Env {
    let env = Env::new();
    fs::write(env.project.join("a.txt"), "a\n").unwrap();
    env.ok(["backup"]);
    env
}

/// The error line each case prints, with the exit code it ends with;
/// `None` when what the case needs is missing here (said why).
fn printed(heading: &str, quote: &str) -> Option<(String, i32)> {
    let line = |out: std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = err
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("{heading}: no error line in\n{}", text(&out)))
            .to_owned();
        (line, out.status.code().unwrap_or(-1))
    };
    Some(match heading {
        "Permission denied" => {
            let mut env = Env::new();
            fs::write(env.project.join("a.txt"), "a\n").unwrap();
            let dir = env.path("readonly");
            fs::create_dir_all(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
            env.set("BACKUP_DIR", &dir);
            env.set("BACKUP_ENCRYPTION", "none");
            chown_nobody(&env.home);
            line(env.unprivileged().arg("backup").output().unwrap())
        }
        "No space left" => {
            let mut env = Env::new();
            let disk = SmallDisk::mount(&env, "4m")?;
            env.set("BACKUP_DIR", disk.path.join("backups"));
            fs::write(env.project.join("big.bin"), Rng::new(1).bytes(8 << 20)).unwrap();
            line(env.run(["backup"]))
        }
        "MongoDB refused the connection" => {
            let mut env = Env::new();
            env.set("MONGODB_URI", "mongodb://app:secret@127.0.0.1:1/app");
            line(env.run(["backup"]))
        }
        "MongoDB refused the password" => {
            let server = crate::mongo::auth_server()?;
            let mut env = Env::new();
            env.set(
                "MONGODB_URI",
                format!(
                    "mongodb://backup:wrong@127.0.0.1:{}/authdb?directConnection=true&authSource=admin",
                    server.port
                ),
            );
            line(env.run(["backup"]))
        }
        "Another cofre holds the lock" => {
            let env = backed_up();
            let mut holder = Command::new("flock")
                .arg(env.backups.join(".cofre.lock"))
                .args(["sleep", "30"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let out = env.run(["backup"]);
            let _ = holder.kill();
            let _ = holder.wait();
            line(out)
        }
        "No key to open the archive" => {
            let env = backed_up();
            let mut fresh = Env::new();
            fresh.set("BACKUP_DIR", &env.backups);
            line(fresh.run(argv!["restore", "latest", "--to", fresh.path("t"),]))
        }
        "Signed by a key not trusted here" => {
            let env = backed_up();
            let stranger = Env::new();
            stranger.sign(&env.archive());
            line(env.run(argv!["verify", env.archive()]))
        }
        "The bucket: credentials, bucket, endpoint" => {
            let s3 = crate::offsite::s3()?;
            let mut env = Env::new();
            if quote.contains("refused the credentials") {
                let port = crate::offsite::free_port();
                let server = s3.own(port, &[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
                let keys = s3.admin(&server.endpoint, &["user", "trouble"]);
                let key = keys.split_whitespace().next().unwrap();
                crate::offsite::use_bucket(&mut env, &server.endpoint, "trouble", "p");
                env.set("AWS_ACCESS_KEY_ID", key);
                env.set("AWS_SECRET_ACCESS_KEY", "not-the-secret");
                line(env.run(["list", "--remote"]))
            } else if quote.contains("does not exist") {
                crate::offsite::use_bucket(&mut env, &s3.endpoint, "no-bucket-here", "p");
                line(env.run(["list", "--remote"]))
            } else {
                let port = crate::offsite::free_port();
                crate::offsite::use_bucket(
                    &mut env,
                    &format!("http://127.0.0.1:{port}"),
                    "gone",
                    "p",
                );
                line(env.run(["list", "--remote"]))
            }
        }
        other => panic!("the Troubleshooting section has a case no test makes happen: {other}"),
    })
}

#[test]
fn the_readme_troubleshooting_section_quotes_what_cofre_prints() {
    let cases = quoted();
    assert!(cases.len() >= 10, "{cases:?}");
    for (heading, quote) in cases {
        let Some((line, code)) = printed(&heading, &quote) else {
            eprintln!("skipped: {heading}");
            continue;
        };
        assert!(
            matches(&quote, &line),
            "{heading}:\n  the README quotes {quote}\n  cofre printed     {line}"
        );
        let want = match heading.as_str() {
            "Another cofre holds the lock" => 11,
            "No key to open the archive" => 12,
            _ => 1,
        };
        assert_eq!(code, want, "{heading}: {line}");
        assert!(!line.contains("secret"), "{heading}: {line}");
    }
}
