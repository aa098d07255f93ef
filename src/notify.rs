//! Notifications: what happened in a run (a backup started, succeeded,
//! ended with warnings or failed; a drill passed or failed; an offsite copy
//! failed), sent to the places `BACKUP_NOTIFY_URL` names.
//!
//! Three shapes, chosen by the URL's scheme:
//!
//! - `https://…` (or `http://…`): a JSON webhook, one POST per event with
//!   [`Report`] as the body;
//! - `hc+https://…`: a Healthchecks-style ping (Uptime Kuma and Cronitor
//!   take the same): `/start`, the bare URL on success, `/fail` on failure,
//!   with the last log lines as the body;
//! - `ntfy+https://host/topic`: one line of text, priority high on failure.
//!
//! Delivery never fails a backup: each target gets three attempts with a
//! timeout each, then a warning is logged. URLs carry tokens (in the path,
//! the query or the user part), so a target is shown only through
//! [`Target::shown`] and every token in it is registered with
//! [`crate::secret`] when it is parsed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::secret::{self, Secret};

/// Attempts per target and event.
const ATTEMPTS: u32 = 3;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A backup started.
    Start,
    /// A backup succeeded.
    Success,
    /// A backup succeeded with warnings (files skipped or changed, an
    /// offsite copy that failed).
    Warning,
    /// A backup failed (in the daemon: after its retries).
    Failure,
    /// A restore drill passed.
    DrillSuccess,
    /// A restore drill failed.
    DrillFailure,
    /// Uploading to the bucket failed (the archives stay local).
    OffsiteFailure,
    /// The oplog history has a hole (a new base is taken at once).
    OplogGap,
    /// The oplog capture failed (it retries).
    OplogFailure,
}

impl Event {
    /// Every event, in the README's order.
    pub const ALL: [Event; 9] = [
        Event::Start,
        Event::Success,
        Event::Warning,
        Event::Failure,
        Event::DrillSuccess,
        Event::DrillFailure,
        Event::OffsiteFailure,
        Event::OplogGap,
        Event::OplogFailure,
    ];

    /// Its name in `BACKUP_NOTIFY_ON` and in the JSON body.
    pub fn name(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Success => "success",
            Event::Warning => "warning",
            Event::Failure => "failure",
            Event::DrillSuccess => "drill_success",
            Event::DrillFailure => "drill_failure",
            Event::OffsiteFailure => "offsite_failure",
            Event::OplogGap => "oplog_gap",
            Event::OplogFailure => "oplog_failure",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == s.trim())
    }

    /// Whether something went wrong (sent with high priority, or as `/fail`).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Event::Failure
                | Event::DrillFailure
                | Event::OffsiteFailure
                | Event::OplogGap
                | Event::OplogFailure
        )
    }
}

/// The events sent when `BACKUP_NOTIFY_ON` is unset: every kind of failure,
/// and warnings.
pub const DEFAULT_EVENTS: [Event; 6] = [
    Event::Failure,
    Event::Warning,
    Event::DrillFailure,
    Event::OffsiteFailure,
    Event::OplogGap,
    Event::OplogFailure,
];

/// How a target is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON POST.
    Webhook,
    /// Healthchecks-style pings.
    Healthchecks,
    /// ntfy text messages.
    Ntfy,
}

/// One place notifications go.
#[derive(Debug, Clone)]
pub struct Target {
    kind: Kind,
    /// The `http(s)://` URL requests go to (the `hc+`/`ntfy+` prefix off).
    url: Secret,
    shown: String,
}

impl Target {
    /// Parses one `BACKUP_NOTIFY_URL` entry and registers its tokens as
    /// secrets. The error says what is expected; it never holds the URL.
    pub fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim();
        let (kind, rest) = if let Some(r) = text.strip_prefix("hc+") {
            (Kind::Healthchecks, r)
        } else if let Some(r) = text.strip_prefix("ntfy+") {
            (Kind::Ntfy, r)
        } else {
            (Kind::Webhook, text)
        };
        let url = url::Url::parse(rest).ok();
        let url = url.filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        let Some(url) = url else {
            // Nothing of it can be shown safely: it may be all token.
            secret::register(text);
            return Err(
                "URLs with a scheme: https://… (JSON webhook), hc+https://… (Healthchecks ping) \
                 or ntfy+https://host/topic"
                    .into(),
            );
        };
        if kind == Kind::Ntfy && url.path().trim_matches('/').is_empty() {
            secret::register(text);
            return Err("an ntfy URL with a topic: ntfy+https://host/topic".into());
        }
        let shown = register_and_show(text, kind, &url);
        Ok(Target {
            kind,
            url: Secret::unregistered(url.as_str().to_owned()),
            shown,
        })
    }

    /// The target for display: scheme and host, the rest as `***`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// How it is spoken to.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

/// Registers every part of `url` that can carry a token (user, password,
/// path, query, fragment, and the whole text) and returns the URL with
/// those parts replaced by `***`. The one routine that shows a notification
/// URL; it reads the URL with the same parser the HTTP client uses.
fn register_and_show(text: &str, kind: Kind, url: &url::Url) -> String {
    secret::register(text);
    secret::register(url.as_str());
    secret::register(url.username());
    if let Some(p) = url.password() {
        secret::register(p);
    }
    let path = url.path();
    secret::register(path);
    secret::register(path.trim_matches('/'));
    if let Some(q) = url.query() {
        secret::register(q);
        for (_, v) in url.query_pairs() {
            secret::register(&v);
        }
    }
    if let Some(f) = url.fragment() {
        secret::register(f);
    }
    let prefix = match kind {
        Kind::Webhook => "",
        Kind::Healthchecks => "hc+",
        Kind::Ntfy => "ntfy+",
    };
    let user = if url.username().is_empty() && url.password().is_none() {
        ""
    } else {
        "***@"
    };
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let hidden = path.trim_matches('/').is_empty() && url.query().is_none();
    let rest = if hidden { "/" } else { "/***" };
    format!("{prefix}{}://{user}{host}{port}{rest}", url.scheme())
}

/// Where notifications go and which.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The targets, in `BACKUP_NOTIFY_URL`'s order.
    pub targets: Vec<Target>,
    /// `BACKUP_NOTIFY_ON`, when set.
    pub on: Option<Vec<Event>>,
    /// Each attempt's timeout.
    pub timeout: Duration,
}

impl Options {
    /// Whether `target` gets `event`. With `BACKUP_NOTIFY_ON` unset, a
    /// Healthchecks target gets every backup event (it is a heartbeat: it
    /// raises the alarm when the success pings stop) and the others get
    /// [`DEFAULT_EVENTS`].
    pub fn wants(&self, target: &Target, event: Event) -> bool {
        match (&self.on, target.kind) {
            (Some(on), _) => on.contains(&event),
            (None, Kind::Healthchecks) => matches!(
                event,
                Event::Start | Event::Success | Event::Warning | Event::Failure
            ),
            (None, _) => DEFAULT_EVENTS.contains(&event),
        }
    }

    /// Whether any target gets `event`.
    pub fn any_wants(&self, event: Event) -> bool {
        self.targets.iter().any(|t| self.wants(t, event))
    }
}

/// One event, as a webhook receives it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What happened.
    pub event: Event,
    /// This machine's name.
    pub host: String,
    /// The project directory.
    pub source: String,
    /// The archive made or tested.
    pub archive: Option<String>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// How long the run took (a drill: its recovery time).
    pub duration_s: Option<f64>,
    /// What went wrong.
    pub error: Option<String>,
    /// The warnings.
    pub warnings: Vec<String>,
    /// The last log lines of the run.
    pub log_tail: Vec<String>,
    /// When (UTC).
    pub time: DateTime<Utc>,
}

impl Report {
    /// An event with nothing but its kind and where it happened.
    pub fn new(event: Event, source: &str) -> Report {
        Report {
            event,
            host: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            source: source.to_owned(),
            archive: None,
            size: None,
            duration_s: None,
            error: None,
            warnings: Vec::new(),
            log_tail: Vec::new(),
            time: Utc::now(),
        }
    }

    /// One line for a person.
    pub fn line(&self) -> String {
        let archive = self.archive.as_deref().unwrap_or("?");
        let took = self
            .duration_s
            .map(|s| format!(", {s:.1} s"))
            .unwrap_or_default();
        let size = self
            .size
            .map(|b| format!(", {}", crate::format::human(b)))
            .unwrap_or_default();
        let error = self.error.as_deref().unwrap_or("unknown error");
        let what = match self.event {
            Event::Start => format!("backup of {} started", self.source),
            Event::Success => format!("backup {archive} done{size}{took}"),
            Event::Warning => format!(
                "backup {archive} done with {} warning(s){size}{took}: {}",
                self.warnings.len().max(1),
                self.warnings.first().map_or(error, String::as_str)
            ),
            Event::Failure => format!("backup of {} FAILED: {error}", self.source),
            Event::DrillSuccess => format!("restore drill of {archive} passed (recovery{took})"),
            Event::DrillFailure => format!("restore drill of {archive} FAILED: {error}"),
            Event::OffsiteFailure => format!("offsite copy FAILED: {error}"),
            Event::OplogGap => format!("oplog history GAP for {}: {error}", self.source),
            Event::OplogFailure => format!("oplog capture FAILED for {}: {error}", self.source),
        };
        secret::scrub(&format!("cofre on {}: {what}", self.host))
    }

    /// The log tail as one text (a Healthchecks body).
    fn tail_text(&self) -> String {
        let mut lines = vec![self.line()];
        lines.extend(self.log_tail.iter().cloned());
        secret::scrub(&lines.join("\n"))
    }
}

/// A request ready to go, built from a target and a report.
#[derive(Debug)]
struct Outgoing {
    url: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn outgoing(target: &Target, report: &Report) -> Outgoing {
    let base = target.url.expose();
    match target.kind {
        Kind::Webhook => Outgoing {
            url: base.to_owned(),
            content_type: "application/json",
            headers: Vec::new(),
            body: secret::scrub(&serde_json::to_string(report).unwrap_or_default()),
        },
        Kind::Healthchecks => {
            let suffix = match report.event {
                Event::Start => "/start",
                e if e.is_failure() => "/fail",
                _ => "",
            };
            Outgoing {
                url: format!("{}{suffix}", base.trim_end_matches('/')),
                content_type: "text/plain; charset=utf-8",
                headers: Vec::new(),
                body: report.tail_text(),
            }
        }
        Kind::Ntfy => {
            let (priority, tags) = if report.event.is_failure() {
                ("high", "rotating_light")
            } else if report.event == Event::Warning {
                ("default", "warning")
            } else {
                ("default", "floppy_disk")
            };
            Outgoing {
                url: base.to_owned(),
                content_type: "text/plain; charset=utf-8",
                headers: vec![
                    ("Title", format!("cofre: {}", report.event.name())),
                    ("Priority", priority.to_owned()),
                    ("Tags", tags.to_owned()),
                ],
                body: report.line(),
            }
        }
    }
}

/// Sends `report` to every target that wants it and returns when each has
/// received it or given up. Never fails: what cannot be delivered is logged
/// as a warning. Callable from any thread, inside a runtime or not (it
/// runs its own on a thread of its own).
pub fn send(settings: &Options, report: &Report) {
    let jobs: Vec<(String, Outgoing)> = settings
        .targets
        .iter()
        .filter(|t| settings.wants(t, report.event))
        .map(|t| (t.shown().to_owned(), outgoing(t, report)))
        .collect();
    if jobs.is_empty() {
        return;
    }
    let timeout = settings.timeout;
    let event = report.event.name();
    let worker = std::thread::Builder::new()
        .name("cofre-notify".into())
        .spawn(move || deliver_all(jobs, timeout, event));
    match worker {
        Ok(handle) => {
            let _ = handle.join();
        }
        Err(e) => tracing::warn!("cannot send the {event} notification: {e}"),
    }
}

fn deliver_all(jobs: Vec<(String, Outgoing)>, timeout: Duration, event: &'static str) {
    crate::remote::install_crypto();
    let rt = match crate::rt::on_this_thread() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("cannot send the {event} notification: {e}");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("cofre/", env!("CARGO_PKG_VERSION")))
        // The body (log lines) goes only where the URL says: a redirect
        // could send it, or a request from this machine, anywhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot send the {event} notification: {}", e.without_url());
            return;
        }
    };
    rt.block_on(futures::future::join_all(jobs.into_iter().map(
        |(shown, out)| {
            let client = client.clone();
            async move {
                match deliver(&client, &out).await {
                    Ok(()) => tracing::debug!(target = %shown, "{event} notification sent"),
                    Err(why) => tracing::warn!(
                        "could not send the {event} notification to {shown} after {ATTEMPTS} attempts: {}; \
                         check BACKUP_NOTIFY_URL and that the service is reachable",
                        secret::scrub(&why)
                    ),
                }
            }
        },
    )));
}

/// Up to [`ATTEMPTS`] tries, 1 s then 2 s apart. Client errors (4xx other
/// than 408 and 429) and redirects (never followed) are not retried: the
/// same request would fail again. Only the status is read, never the body.
async fn deliver(client: &reqwest::Client, out: &Outgoing) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 2))).await;
        }
        let mut req = client
            .post(&out.url)
            .header(reqwest::header::CONTENT_TYPE, out.content_type)
            .body(out.body.clone());
        for (name, value) in &out.headers {
            req = req.header(*name, value);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                last = format!("the server answered {status}");
                let retry = status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                if !retry {
                    return Err(last);
                }
            }
            Err(e) if e.is_timeout() => last = "no answer in time (BACKUP_NOTIFY_TIMEOUT)".into(),
            Err(e) if e.is_connect() => last = "cannot connect".into(),
            Err(e) => last = e.without_url().to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(urls: &[&str], on: Option<Vec<Event>>) -> Options {
        Options {
            targets: urls.iter().map(|u| Target::parse(u).unwrap()).collect(),
            on,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn urls_are_shown_without_their_tokens() {
        for (url, shown, token) in [
            (
                "https://hooks.example.com/services/T0K3N/abc?key=s3cr3tk3y",
                "https://hooks.example.com/***",
                "s3cr3tk3y",
            ),
            (
                "hc+https://hc-ping.com/0f9e2b7c-uuid-token",
                "hc+https://hc-ping.com/***",
                "0f9e2b7c-uuid-token",
            ),
            (
                "ntfy+https://ntfy.sh/private-topic-42",
                "ntfy+https://ntfy.sh/***",
                "private-topic-42",
            ),
            (
                "https://user:pa55word@example.com:8443/",
                "https://***@example.com:8443/",
                "pa55word",
            ),
        ] {
            let t = Target::parse(url).unwrap();
            assert_eq!(t.shown(), shown);
            let noisy = format!("error sending request for url ({url}): {token}");
            assert!(!secret::scrub(&noisy).contains(token), "{url}");
        }
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for url in [
            "hooks.example.com/x",
            "ftp://example.com/x",
            "ntfy+https://ntfy.sh/",
            "hc+mailto:someone@example.com",
        ] {
            let err = Target::parse(url).unwrap_err();
            assert!(!err.contains(url), "{err}");
        }
    }

    #[test]
    fn which_targets_get_which_events() {
        let s = settings(
            &[
                "https://hooks.example.com/a",
                "hc+https://hc-ping.com/b",
                "ntfy+https://ntfy.sh/c",
            ],
            None,
        );
        let got = |e: Event| -> Vec<Kind> {
            s.targets
                .iter()
                .filter(|t| s.wants(t, e))
                .map(Target::kind)
                .collect()
        };
        use Kind::*;
        for (event, kinds) in [
            (Event::Start, vec![Healthchecks]),
            (Event::Success, vec![Healthchecks]),
            (Event::Warning, vec![Webhook, Healthchecks, Ntfy]),
            (Event::Failure, vec![Webhook, Healthchecks, Ntfy]),
            (Event::DrillSuccess, vec![]),
            (Event::DrillFailure, vec![Webhook, Ntfy]),
            (Event::OffsiteFailure, vec![Webhook, Ntfy]),
        ] {
            assert_eq!(got(event), kinds, "{event:?}");
        }
        let s = settings(&["hc+https://hc-ping.com/b"], Some(vec![Event::Failure]));
        assert!(!s.wants(&s.targets[0], Event::Success));
        assert!(s.wants(&s.targets[0], Event::Failure));
    }

    #[test]
    fn healthchecks_paths_follow_the_event() {
        let t = Target::parse("hc+https://hc-ping.com/abcd/").unwrap();
        for (event, url) in [
            (Event::Start, "https://hc-ping.com/abcd/start"),
            (Event::Success, "https://hc-ping.com/abcd"),
            (Event::Warning, "https://hc-ping.com/abcd"),
            (Event::Failure, "https://hc-ping.com/abcd/fail"),
            (Event::DrillFailure, "https://hc-ping.com/abcd/fail"),
        ] {
            assert_eq!(outgoing(&t, &Report::new(event, "/app")).url, url);
        }
    }
}
