//! Monitoring and alerts: notifications received by a real HTTP server the
//! test runs (webhook JSON, Healthchecks paths and bodies, ntfy messages; a
//! target that is down, slow or failing), the metrics file and the
//! daemon's `/metrics` (checked by Prometheus' own `promtool` when it is
//! installed; `scripts/test` installs it and requires it).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, count};
use crate::harness::*;
use crate::mongo::free_port;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// An HTTP server that records every request, answers after `delay` with
/// `status`. Hand-written (a few lines of HTTP/1.1) so the test depends on
/// nothing but std.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(delay: Duration, status: u16) -> Receiver {
        let reply =
            format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
        Receiver::replying(delay, reply, Duration::ZERO)
    }

    /// Answers every request, after `delay`, with the bytes of `reply`
    /// (whatever they are), then holds the connection open for `hold`.
    fn replying(delay: Duration, reply: String, hold: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        let reply = Arc::new(reply);
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let sink = Arc::clone(&sink);
                let reply = Arc::clone(&reply);
                thread::spawn(move || handle(stream, &sink, delay, &reply, hold));
            }
        });
        Receiver { port, got }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }

    fn paths(got: &[Received]) -> Vec<&str> {
        got.iter().map(|r| r.path.as_str()).collect()
    }
}

fn handle(
    stream: TcpStream,
    sink: &Mutex<Vec<Received>>,
    delay: Duration,
    reply: &str,
    hold: Duration,
) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    sink.lock().unwrap().push(Received {
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    thread::sleep(delay);
    let mut stream = reader.into_inner();
    let _ = stream.write_all(reply.as_bytes());
    thread::sleep(hold);
}

/// A webhook receiver for other tests: the JSON events it got.
pub struct Hook(Receiver);

impl Hook {
    pub fn start() -> Hook {
        Hook(Receiver::start(Duration::ZERO, 200))
    }

    pub fn url(&self) -> String {
        self.0.url("http", "/hook")
    }

    /// The events received so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.0
            .got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| serde_json::from_str(&r.body).ok())
            .collect()
    }
}

const HOOK_TOKEN: &str = "hooktoken7Q2x";
const HC_TOKEN: &str = "0b5d2a9e-hc-token";
const NTFY_TOPIC: &str = "ntfytopic9Zk";

/// Everything a run leaves where a person or another program could read
/// it: state files, status in both forms.
fn visible(env: &Env) -> String {
    let mut all = String::new();
    for e in fs::read_dir(&env.backups).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".json") {
            all.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all.push_str(&text(&env.run(["status"])));
    all.push_str(&text(&env.run(["status", "--json"])));
    all
}

#[test]
fn events_reach_a_webhook_a_healthchecks_check_and_ntfy() {
    let rx = Receiver::start(Duration::ZERO, 200);
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    let urls = [
        rx.url("http", &format!("/hook/{HOOK_TOKEN}")),
        rx.url("hc+http", &format!("/ping/{HC_TOKEN}")),
        rx.url("ntfy+http", &format!("/{NTFY_TOPIC}")),
    ];
    env.set("BACKUP_NOTIFY_URL", urls.join(","));
    env.set("BACKUP_DIR", env.backups.clone());
    let mut shown = String::new();

    // Success: only the Healthchecks check hears of it (a heartbeat:
    // start, then the bare URL). Failures and warnings go everywhere.
    let out = env.ok(["backup"]);
    shown.push_str(&text(&out));
    let got = rx.take();
    assert_eq!(
        Receiver::paths(&got),
        [
            format!("/ping/{HC_TOKEN}/start"),
            format!("/ping/{HC_TOKEN}")
        ],
        "{got:#?}"
    );
    assert!(got[1].body.contains("backup backup_"), "{}", got[1].body);

    // Done with warnings (a named pipe cannot be backed up).
    sh(&format!("mkfifo '{}'", env.project.join("pipe").display()));
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    shown.push_str(&text(&out));
    let got = rx.take();
    let hook = got
        .iter()
        .find(|r| r.path.starts_with("/hook/"))
        .expect("the webhook got the warning");
    assert_eq!(hook.headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(json["event"], "warning");
    assert!(json["archive"].as_str().unwrap().starts_with("backup_"));
    assert!(json["size"].as_u64().unwrap() > 0);
    assert!(json["duration_s"].as_f64().unwrap() >= 0.0);
    assert!(json["error"].is_null());
    assert_eq!(json["source"], env.project.to_str().unwrap());
    let warnings = json["warnings"].as_array().unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].as_str().unwrap().contains("named pipe"),
        "{warnings:?}"
    );
    assert!(
        json["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("backup finished")),
        "{json}"
    );
    let ntfy = got
        .iter()
        .find(|r| r.path == format!("/{NTFY_TOPIC}"))
        .expect("ntfy got the warning");
    assert_eq!(ntfy.headers["priority"], "default");
    assert_eq!(ntfy.body.lines().count(), 1, "{}", ntfy.body);
    assert!(ntfy.body.contains("1 warning(s)"), "{}", ntfy.body);
    assert!(got.iter().any(|r| r.path == format!("/ping/{HC_TOKEN}")));
    fs::remove_file(env.project.join("pipe")).unwrap();

    // Failure: the project directory is gone.
    let gone = env.path("gone");
    env.set("BACKUP_SOURCE", &gone);
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    shown.push_str(&text(&out));
    let got = rx.take();
    let hook = got.iter().find(|r| r.path.starts_with("/hook/")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(json["event"], "failure");
    assert!(json["archive"].is_null());
    assert!(json["error"].as_str().unwrap().contains("gone"), "{json}");
    let fail = got
        .iter()
        .find(|r| r.path == format!("/ping/{HC_TOKEN}/fail"))
        .expect("the check got /fail");
    assert!(fail.body.contains("FAILED"), "{}", fail.body);
    let ntfy = got
        .iter()
        .find(|r| r.path == format!("/{NTFY_TOPIC}"))
        .unwrap();
    assert_eq!(ntfy.headers["priority"], "high");
    assert!(ntfy.body.contains("FAILED"), "{}", ntfy.body);

    // The tokens never show: not in logs, state files or status.
    env.set("BACKUP_SOURCE", env.project.clone());
    let status = text(&env.ok(["status"]));
    assert!(
        status.contains(&format!("hc+http://127.0.0.1:{}/***", rx.port)),
        "{status}"
    );
    shown.push_str(&visible(&env));
    for token in [HOOK_TOKEN, HC_TOKEN, NTFY_TOPIC] {
        assert!(!shown.contains(token), "{token} shown in:\n{shown}");
    }

    // BACKUP_NOTIFY_ON chooses, for every kind of target.
    env.set("BACKUP_NOTIFY_ON", "start,success");
    env.ok(["backup"]);
    let got = rx.take();
    let events: Vec<String> = got
        .iter()
        .filter(|r| r.path.starts_with("/hook/"))
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["event"].to_string())
        .collect();
    assert_eq!(events, ["\"start\"", "\"success\""]);
    assert_eq!(got.len(), 6, "{got:#?}");
}

#[test]
fn a_target_that_is_down_slow_or_failing_never_fails_the_backup() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    env.set("BACKUP_NOTIFY_ON", "success");
    env.set("BACKUP_NOTIFY_TIMEOUT", "1s");

    // Down: nothing listens there.
    let port = free_port();
    env.set(
        "BACKUP_NOTIFY_URL",
        format!("http://127.0.0.1:{port}/hook/{HOOK_TOKEN}"),
    );
    let out = env.run(["backup", "-v"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("could not send the success notification to http://127.0.0.1:")
            && err.contains("after 3 attempts: cannot connect"),
        "{err}"
    );
    assert!(!err.contains(HOOK_TOKEN), "{err}");

    // Slow: each attempt gives up after BACKUP_NOTIFY_TIMEOUT.
    let slow = Receiver::start(Duration::from_secs(30), 200);
    env.set("BACKUP_NOTIFY_URL", slow.url("http", "/slow"));
    let t = Instant::now();
    let out = env.run(["backup", "-v"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("no answer in time"), "{}", text(&out));
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(slow.take().len(), 3, "three attempts");

    // Failing: a 500 is retried, a 404 is not.
    for (status, attempts) in [(500, 3), (404, 1)] {
        let failing = Receiver::start(Duration::ZERO, status);
        env.set("BACKUP_NOTIFY_URL", failing.url("http", "/x"));
        let out = env.run(["backup", "-v"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            text(&out).contains(&format!("the server answered {status}")),
            "{}",
            text(&out)
        );
        assert_eq!(failing.take().len(), attempts, "status {status}");
    }
    // The archives are all there.
    assert_eq!(env.archives().len(), 4);
}

#[test]
fn bad_notification_and_metrics_settings_are_refused_without_echoing_tokens() {
    for (var, value, expected) in [
        (
            "BACKUP_NOTIFY_URL",
            "ftp://example.com/tok3nSecret9",
            "hc+https://",
        ),
        (
            "BACKUP_NOTIFY_URL",
            "example.com/tok3nSecret9",
            "URLs with a scheme",
        ),
        ("BACKUP_NOTIFY_URL", "ntfy+https://ntfy.sh/", "with a topic"),
        ("BACKUP_NOTIFY_ON", "failure,sometimes", "drill_failure"),
        ("BACKUP_NOTIFY_TIMEOUT", "0s", "longer than zero"),
        ("BACKUP_DRILL_TIMEOUT", "0", "longer than zero, such as 10m"),
        ("BACKUP_METRICS_ADDR", "localhost", "127.0.0.1:9184"),
    ] {
        let mut env2 = Env::new();
        env2.set(var, value);
        let msg = env2.fails(["backup"], 2);
        assert!(msg.contains(var) && msg.contains(expected), "{msg}");
        assert!(!msg.contains("tok3nSecret9"), "{msg}");
        assert!(env2.archives().is_empty());
    }
}

/// `GET /metrics` from the daemon.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `promtool check metrics` on the text: Prometheus' own parser and
/// linter. Skips (with a reason) where promtool is not installed, unless
/// `COFRE_TEST_REQUIRE_PROMTOOL` is set (`scripts/test` sets it).
fn promtool_accepts(metrics: &str) {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var("COFRE_TEST_REQUIRE_PROMTOOL").is_err(),
            "promtool is not installed but COFRE_TEST_REQUIRE_PROMTOOL is set"
        );
        eprintln!(
            "skipped the promtool check: promtool is not installed (scripts/test installs it)"
        );
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused the metrics:\n{}\n{metrics}",
        text(&out)
    );
}

#[test]
fn metrics_in_a_file_after_every_run_and_from_the_daemon() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    fs::write(env.project.join("b.txt"), "b").unwrap();
    let file = env.path("textfile/cofre.prom");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    env.set("BACKUP_METRICS_FILE", &file);
    env.set("BACKUP_DIR", env.backups.clone());
    let mongo = crate::mongo::mongo();
    let db = crate::mongo::unique("metrics");
    if let Some(m) = &mongo {
        m.drop_db(&db);
        m.run(async {
            let c = m.db(&db).collection::<mongodb::bson::Document>("users");
            c.insert_many((0..7).map(|i| mongodb::bson::doc! { "n": i }))
                .await
                .unwrap();
        });
        env.set("BACKUP_MONGODB_URI", m.uri(&db, ""));
    }

    let before = chrono::Utc::now().timestamp() as f64;
    env.ok(["backup"]);
    let m1 = fs::read_to_string(&file).unwrap();
    let mode = fs::metadata(&file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o644
    );
    promtool_accepts(&m1);
    let last = value(&m1, "cofre_last_success_timestamp_seconds").unwrap();
    assert!(last >= before, "{m1}");
    assert_eq!(value(&m1, "cofre_last_run_success"), Some(1.0), "{m1}");
    assert_eq!(value(&m1, "cofre_archives"), Some(1.0), "{m1}");
    assert_eq!(value(&m1, "cofre_files"), Some(2.0), "{m1}");
    let size = fs::metadata(env.archive()).unwrap().len() as f64;
    assert_eq!(value(&m1, "cofre_archive_size_bytes"), Some(size), "{m1}");
    assert!(value(&m1, "cofre_backup_duration_seconds").unwrap() >= 0.0);
    assert!(value(&m1, "cofre_backup_dir_free_bytes").unwrap() > 0.0);
    // Drills are scheduled by default: none has passed yet.
    assert_eq!(
        value(&m1, "cofre_drill_last_success_timestamp_seconds"),
        Some(0.0)
    );
    if mongo.is_some() {
        let line = format!(r#"cofre_mongodb_documents{{database="{db}",collection="users"}} 7.0"#);
        assert!(m1.lines().any(|l| l == line), "{line} not in\n{m1}");
    }

    // A failed run: the last run failed, the last success stays.
    env.set("BACKUP_SOURCE", env.path("gone"));
    env.run(["backup"]);
    let m2 = fs::read_to_string(&file).unwrap();
    assert_eq!(value(&m2, "cofre_last_run_success"), Some(0.0), "{m2}");
    assert_eq!(
        value(&m2, "cofre_last_success_timestamp_seconds"),
        Some(last)
    );
    assert!(value(&m2, "cofre_last_run_timestamp_seconds").unwrap() >= last);
    env.set("BACKUP_SOURCE", env.project.clone());

    // The daemon serves the same, read from the state files: a restarted
    // daemon reports what the last one did.
    let port = free_port();
    env.set("BACKUP_METRICS_ADDR", format!("127.0.0.1:{port}"));
    env.set("BACKUP_SCHEDULE", "*/2 * * * * *");
    env.set("BACKUP_CATCH_UP", "false");
    let mut daemon = Daemon::start(&env);
    assert!(daemon.wait_for(Duration::from_secs(30), |l| count(
        l,
        "scheduled backup done"
    ) >= 1));
    let served = scrape(port);
    let (code, seen) = daemon.stop();
    assert_eq!(code, Some(0), "{seen:#?}");
    promtool_accepts(&served);
    assert_eq!(
        value(&served, "cofre_last_run_success"),
        Some(1.0),
        "{served}"
    );
    let newest = value(&served, "cofre_last_success_timestamp_seconds").unwrap();
    assert!(newest > last, "{served}");
    let archives = value(&served, "cofre_archives").unwrap();
    assert!(archives >= 2.0, "{served}");

    env.set("BACKUP_SCHEDULE", "0 0 1 1 *");
    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_for(Duration::from_secs(20), |l| count(l, "serving metrics")
            >= 1)
    );
    let again = scrape(port);
    // A second daemon on the same port is refused, clearly.
    let mut env2 = Env::new();
    env2.set("BACKUP_METRICS_ADDR", format!("127.0.0.1:{port}"));
    let msg = env2.fails(["daemon"], 1);
    assert!(
        msg.contains("cannot serve metrics on BACKUP_METRICS_ADDR") && msg.contains("free port"),
        "{msg}"
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
    assert_eq!(
        value(&again, "cofre_last_success_timestamp_seconds"),
        Some(newest)
    );
    if let Some(m) = &mongo {
        m.drop_db(&db);
    }
}

#[test]
fn drills_report_their_outcome_with_the_recovery_time() {
    let rx = Receiver::start(Duration::ZERO, 200);
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    env.ok(["backup"]);
    env.set("BACKUP_NOTIFY_URL", rx.url("http", "/hook/x"));
    env.set("BACKUP_NOTIFY_ON", "drill_success,drill_failure");
    env.ok(["drill"]);
    let got = rx.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    let json: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(json["event"], "drill_success");
    assert_eq!(
        json["archive"].as_str().unwrap(),
        env.archive().file_name().unwrap().to_str().unwrap()
    );
    assert!(json["duration_s"].as_f64().unwrap() >= 0.0, "{json}");

    // With the default events, only the failure goes out.
    env.set("BACKUP_NOTIFY_ON", "");
    env.set("BACKUP_DRILL_COMMAND", "echo boom; exit 7");
    env.fails(["drill"], 1);
    let got = rx.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    let json: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(json["event"], "drill_failure");
    let error = json["error"].as_str().unwrap();
    assert!(
        error.starts_with("at command:") && error.contains("7"),
        "{error}"
    );
}

#[test]
fn the_daemon_reports_each_run_once_after_its_retries() {
    let rx = Receiver::start(Duration::ZERO, 200);
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    env.set("BACKUP_SCHEDULE", "*/2 * * * * *");
    env.set("BACKUP_CATCH_UP", "false");
    env.set("BACKUP_RETRIES", "1");
    env.set(
        "MONGODB_URI",
        "mongodb://127.0.0.1:9/app?serverSelectionTimeoutMS=300",
    );
    env.set(
        "BACKUP_NOTIFY_URL",
        format!(
            "{},{}",
            rx.url("http", "/hook/a"),
            rx.url("hc+http", "/ping/b")
        ),
    );
    let mut daemon = Daemon::start(&env);
    assert!(daemon.wait_for(Duration::from_secs(40), |l| count(l, "attempt 2 of 2") >= 2));
    let (code, seen) = daemon.stop();
    assert_eq!(code, Some(0), "{seen:#?}");
    // Reports still being sent at the stop were waited for.
    let gave_up = count(&seen, "attempt 2 of 2");
    let got = rx.take();
    let hook: Vec<serde_json::Value> = got
        .iter()
        .filter(|r| r.path == "/hook/a")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(
        hook.len(),
        gave_up,
        "one failure per run, not per attempt: {hook:#?}"
    );
    assert!(hook.iter().all(|j| {
        j["event"] == "failure"
            && j["error"]
                .as_str()
                .unwrap()
                .contains("cannot reach MongoDB")
    }));
    let path_count = |p: &str| got.iter().filter(|r| r.path == p).count();
    assert_eq!(path_count("/ping/b/fail"), gave_up);
    let started = path_count("/ping/b/start");
    assert!(
        started == gave_up || started == gave_up + 1,
        "{started} starts, {gave_up} failures"
    );

    // Once the database is back, the check hears of each success and the
    // webhook (failures and warnings only) of nothing.
    env.set("MONGODB_URI", "");
    let mut daemon = Daemon::start(&env);
    assert!(daemon.wait_for(Duration::from_secs(30), |l| count(
        l,
        "scheduled backup done"
    ) >= 1));
    let (code, seen) = daemon.stop();
    assert_eq!(code, Some(0), "{seen:#?}");
    let done = count(&seen, "scheduled backup done");
    let got = rx.take();
    let path_count = |p: &str| got.iter().filter(|r| r.path == p).count();
    assert_eq!(path_count("/ping/b"), done, "{got:#?}");
    assert_eq!(path_count("/hook/a"), 0, "{got:#?}");
}

#[test]
fn a_hostile_target_gets_nothing_more_and_holds_nothing_up() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    env.set("BACKUP_NOTIFY_ON", "success");
    env.set("BACKUP_NOTIFY_TIMEOUT", "2s");
    let elsewhere = Receiver::start(Duration::ZERO, 200);

    // A redirect is not followed: the log lines go only where the URL says.
    let redirecting = Receiver::replying(
        Duration::ZERO,
        format!(
            "HTTP/1.1 307 X\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
            elsewhere.url("http", "/stolen")
        ),
        Duration::ZERO,
    );
    env.set("BACKUP_NOTIFY_URL", redirecting.url("http", "/hook"));
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("the server answered 307"),
        "{}",
        text(&out)
    );
    assert_eq!(redirecting.take().len(), 1);
    assert!(elsewhere.take().is_empty(), "the redirect was followed");

    // A reply that promises 10 GB and never sends it: only the status is
    // read, so the backup neither waits for it nor holds it in memory.
    let lying = Receiver::replying(
        Duration::ZERO,
        "HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\nstart".into(),
        Duration::from_secs(60),
    );
    env.set("BACKUP_NOTIFY_URL", lying.url("http", "/hook"));
    let t = Instant::now();
    let out = env
        .cmd_via(&[
            "/usr/bin/time",
            "-f",
            "%M",
            "-o",
            env.path("rss").to_str().unwrap(),
        ])
        .arg("backup")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(!text(&out).contains("could not send"), "{}", text(&out));
    let rss_kib: u64 = fs::read_to_string(env.path("rss"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(rss_kib < 64 * 1024, "{rss_kib} KiB");

    // Not HTTP at all: three attempts, a warning, the backup stands.
    let garbage = Receiver::replying(
        Duration::ZERO,
        "\u{0}\u{1}garbage\r\n\r\n".repeat(1000),
        Duration::ZERO,
    );
    env.set("BACKUP_NOTIFY_URL", garbage.url("http", "/hook"));
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("could not send the success notification"),
        "{}",
        text(&out)
    );
    assert_eq!(garbage.take().len(), 3);
    assert_eq!(env.archives().len(), 3);
}

#[test]
fn junk_sent_to_the_metrics_port_harms_nothing() {
    let mut env = Env::new();
    fs::write(env.project.join("a.txt"), "a").unwrap();
    env.ok(["backup"]);
    let port = free_port();
    env.set("BACKUP_METRICS_ADDR", format!("127.0.0.1:{port}"));
    env.set("BACKUP_SCHEDULE", "0 0 1 1 *");
    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_for(Duration::from_secs(20), |l| count(l, "serving metrics")
            >= 1)
    );
    // Idle connections that never send a request.
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // A megabyte of binary junk, a header without end, a request for
    // somewhere else.
    let mut junk = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = junk.write_all(&vec![0xff; 1 << 20]);
    let mut endless = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = write!(
        endless,
        "GET /metrics HTTP/1.1\r\nX: {}",
        "a".repeat(1 << 20)
    );
    let mut other = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        other,
        "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(!answer.contains("root:"), "{answer}");
    // The daemon still serves the real thing.
    let metrics = scrape(port);
    assert_eq!(value(&metrics, "cofre_archives"), Some(1.0), "{metrics}");
    drop((idle, junk, endless));
    let (code, seen) = daemon.stop();
    assert_eq!(code, Some(0), "{seen:#?}");
}
