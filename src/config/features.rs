//! One resolver per feature: each reads its variables from the sources,
//! parses and checks them, and builds that feature's own options.

use std::path::{Path, PathBuf};

use super::parse::*;
use super::sources::Sources;
use crate::archive::crypt::{AgeKeys, Encryption};
use crate::drill;
use crate::notify::{self, Event, Target};
use crate::remote::{self, LockMode};
use crate::retention::RetentionPolicy;
use crate::schedule::Schedule;
use crate::secret::{self, Secret};
use crate::vars::{self, Var};

/// Parses `s3://bucket[/prefix]`.
pub(super) fn parse_remote_url(v: &str) -> Option<(String, String)> {
    let rest = v.trim().strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let prefix = prefix.trim_matches('/');
    let prefix_ok = prefix
        .split('/')
        .all(|c| c != "." && c != ".." && !c.contains(['\\', '\0']))
        && !prefix.contains("//");
    (bucket_ok && prefix_ok).then(|| (bucket.to_owned(), prefix.to_owned()))
}

pub(super) fn remote(
    src: &Sources,
    local: &RetentionPolicy,
) -> Result<Option<remote::Options>, ConfigError> {
    let Some((url, _)) = src.get(&vars::REMOTE) else {
        return Ok(None);
    };
    let (bucket, prefix) = parse_remote_url(url).ok_or_else(|| {
        invalid(
            vars::REMOTE.name,
            url,
            "s3://BUCKET or s3://BUCKET/PREFIX, with a bucket name of 3 to 63 lowercase letters, digits, dots and hyphens",
        )
    })?;
    let days = match src.get(&vars::REMOTE_RETENTION_DAYS) {
        None => local.days,
        Some(_) => parse_u32(src, &vars::REMOTE_RETENTION_DAYS, 0, 100_000)?,
    };
    let bandwidth = match src.get(&vars::REMOTE_BANDWIDTH) {
        None => None,
        Some((v, _)) => Some(parse_size(v).filter(|&b| b >= 1024).ok_or_else(|| {
            invalid(
                vars::REMOTE_BANDWIDTH.name,
                v,
                "bytes per second, at least 1K, such as 20M or 500K",
            )
        })?),
    };
    Ok(Some(remote::Options {
        url: url.trim().to_owned(),
        bucket,
        prefix,
        retention: RetentionPolicy { days, ..*local },
        lock: choice(
            src,
            &vars::REMOTE_LOCK,
            LockMode::parse,
            "off, governance or compliance",
        )?,
        bandwidth,
        aws: aws(src),
    }))
}

/// The `AWS_*` variables (environment, then `.env`), secrets registered.
pub(super) fn aws(src: &Sources) -> Vec<(String, Secret)> {
    let mut aws: Vec<(String, Secret)> = Vec::new();
    for map in [&src.env, &src.dotenv] {
        for (k, v) in map {
            if k.starts_with("AWS_") && !v.is_empty() && !aws.iter().any(|(n, _)| n == k) {
                let secret = if k == "AWS_SECRET_ACCESS_KEY" || k == "AWS_SESSION_TOKEN" {
                    Secret::new(v.clone())
                } else {
                    Secret::unregistered(v.clone())
                };
                aws.push((k.clone(), secret));
            }
        }
    }
    aws
}

pub(super) fn retention(src: &Sources) -> Result<RetentionPolicy, ConfigError> {
    Ok(RetentionPolicy {
        days: parse_u32(src, &vars::RETENTION_DAYS, 0, 100_000)?,
        keep_last: parse_u32(src, &vars::KEEP_LAST, 0, 1_000_000)?,
        keep_daily: parse_u32(src, &vars::KEEP_DAILY, 0, 1_000_000)?,
        keep_weekly: parse_u32(src, &vars::KEEP_WEEKLY, 0, 1_000_000)?,
        keep_monthly: parse_u32(src, &vars::KEEP_MONTHLY, 0, 1_000_000)?,
    })
}

pub(super) fn schedule(src: &Sources) -> Result<Schedule, ConfigError> {
    cron(src, &vars::SCHEDULE)
}

pub(super) fn passphrase(src: &Sources, source: &Path) -> Result<Option<Secret>, ConfigError> {
    match (
        src.get(&vars::PASSPHRASE),
        src.path(&vars::PASSPHRASE_FILE, source),
    ) {
        (Some(_), Some(_)) => Err(ConfigError::Conflict(
            "both BACKUP_PASSPHRASE and BACKUP_PASSPHRASE_FILE are set; set only one".into(),
        )),
        (Some((v, _)), None) => Ok(Some(Secret::new(v.to_owned()))),
        (None, Some(path)) => {
            let text = read_setting_file(&vars::PASSPHRASE_FILE, &path)?;
            let pass = text.trim_end_matches(['\n', '\r']).to_owned();
            if pass.is_empty() {
                return Err(invalid(
                    vars::PASSPHRASE_FILE.name,
                    &path.display().to_string(),
                    "a file holding a non-empty passphrase",
                ));
            }
            Ok(Some(Secret::new(pass)))
        }
        (None, None) => Ok(None),
    }
}

/// Public keys from `BACKUP_RECIPIENTS` and `BACKUP_RECIPIENTS_FILE`.
pub(super) fn recipients(src: &Sources, source: &Path) -> Result<Vec<String>, ConfigError> {
    let mut recipients = src.list(&vars::RECIPIENTS);
    for r in &recipients {
        check_recipient(vars::RECIPIENTS.name, r)?;
    }
    if let Some(path) = src.path(&vars::RECIPIENTS_FILE, source) {
        let text = read_setting_file(&vars::RECIPIENTS_FILE, &path)?;
        let before = recipients.len();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            check_recipient(vars::RECIPIENTS_FILE.name, line)?;
            recipients.push(line.to_owned());
        }
        if recipients.len() == before {
            return Err(invalid(
                vars::RECIPIENTS_FILE.name,
                &path.display().to_string(),
                "a file with at least one age public key (age1...) per line",
            ));
        }
    }
    Ok(recipients)
}

pub(super) fn encryption(
    src: &Sources,
    passphrase: Option<&Secret>,
    recipients: Vec<String>,
    identity_file: &Path,
) -> Result<Encryption, ConfigError> {
    match src.value(&vars::ENCRYPTION).unwrap_or_default() {
        "age" => {
            if passphrase.is_some() && !recipients.is_empty() {
                return Err(ConfigError::Conflict(
                    "BACKUP_PASSPHRASE cannot be combined with BACKUP_RECIPIENTS: an age file \
                     is encrypted either to public keys or to one passphrase; set only one"
                        .into(),
                ));
            }
            Ok(Encryption::Age(AgeKeys {
                recipients,
                passphrase: passphrase.cloned(),
                identity_file: identity_file.to_path_buf(),
            }))
        }
        "none" => Ok(Encryption::None),
        other => Err(invalid(vars::ENCRYPTION.name, other, "age or none")),
    }
}

/// The MongoDB URI: `BACKUP_MONGODB_URI_FILE`, `BACKUP_MONGODB_URI` or
/// `MONGODB_URI` (in that order; a file keeps the password out of the
/// process list). Checked with the driver's own parser.
pub(super) fn resolve_mongodb_uri(
    src: &Sources,
    path_var: &dyn Fn(&Var) -> Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    let from_file = match path_var(&vars::MONGODB_URI_FILE) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::File {
                var: vars::MONGODB_URI_FILE.name.into(),
                path: path.clone(),
                source,
            })?;
            let uri = text.trim().to_owned();
            if uri.is_empty() {
                return Err(invalid(
                    vars::MONGODB_URI_FILE.name,
                    &path.display().to_string(),
                    "a file holding a MongoDB connection string",
                ));
            }
            Some((vars::MONGODB_URI_FILE.name, uri))
        }
        None => None,
    };
    let chosen = from_file.or_else(|| {
        src.get(&vars::BACKUP_MONGODB_URI)
            .map(|v| (vars::BACKUP_MONGODB_URI.name, v.0.to_owned()))
            .or_else(|| {
                src.get(&vars::MONGODB_URI)
                    .map(|v| (vars::MONGODB_URI.name, v.0.to_owned()))
            })
    });
    let Some((var, uri)) = chosen else {
        return Ok(None);
    };
    check_mongodb_uri(var, &uri).map(Some)
}

/// A MongoDB URI from `var`, checked as the driver reads it; its password
/// is registered before anything can print it.
pub(super) fn check_mongodb_uri(var: &str, uri: &str) -> Result<Secret, ConfigError> {
    let shown = secret::redact_uri(uri);
    let scheme_ok = uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://");
    if !scheme_ok || !secret::uri_parses(uri) {
        return Err(invalid(
            var,
            &shown,
            "a MongoDB connection string, mongodb://[user:password@]host[:port][/database][?options] \
             (or mongodb+srv://); percent-encode @ : / ? # % in the user name and password \
             (@ is %40, / is %2F)",
        ));
    }
    Ok(Secret::unregistered(uri.to_owned()))
}

/// When the daemon drills (`None`: `off`).
pub(super) fn drill_schedule(src: &Sources) -> Result<Option<Schedule>, ConfigError> {
    Ok(match src.value(&vars::DRILL_SCHEDULE) {
        Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
        _ => Some(cron(src, &vars::DRILL_SCHEDULE)?),
    })
}

/// Drills: where they make scratch, which server, the smoke test.
pub(super) fn drill(
    src: &Sources,
    path_var: &dyn Fn(&Var) -> Option<PathBuf>,
    backup_dir: &Path,
    app_uri: Option<&Secret>,
) -> Result<drill::Options, ConfigError> {
    let server = match src.get(&vars::DRILL_MONGODB_URI) {
        Some((uri, _)) => Some(check_mongodb_uri(vars::DRILL_MONGODB_URI.name, uri)?),
        None => app_uri.cloned(),
    };
    let timeout = parse_positive_duration(src, &vars::DRILL_TIMEOUT)?;
    Ok(drill::Options {
        backup_dir: backup_dir.to_path_buf(),
        dir: path_var(&vars::DRILL_DIR),
        server,
        app_uri: app_uri.cloned(),
        command: src
            .get(&vars::DRILL_COMMAND)
            .map(|(c, _)| c.trim().to_owned()),
        timeout,
    })
}

pub(super) fn metrics_addr(src: &Sources) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    match src.get(&vars::METRICS_ADDR) {
        None => Ok(None),
        Some((v, _)) if v.trim().eq_ignore_ascii_case("off") => Ok(None),
        Some((v, _)) => v.trim().parse().map(Some).map_err(|_| {
            invalid(
                vars::METRICS_ADDR.name,
                v,
                "an address and port such as 127.0.0.1:9184 (or [::1]:9184), or off",
            )
        }),
    }
}

pub(super) fn notify(src: &Sources) -> Result<notify::Options, ConfigError> {
    let targets = src
        .list(&vars::NOTIFY_URL)
        .iter()
        .map(|u| {
            Target::parse(u).map_err(|expected| {
                // Only the scheme is shown: the rest may be a token.
                let shown = u
                    .split_once("://")
                    .map_or_else(|| "***".to_owned(), |(s, _)| format!("{s}://***"));
                invalid(vars::NOTIFY_URL.name, &shown, expected)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let on = match src.get(&vars::NOTIFY_ON) {
        None => None,
        Some((text, _)) => {
            let mut events = Vec::new();
            for name in src.list(&vars::NOTIFY_ON) {
                if name == "all" {
                    events.extend(Event::ALL);
                } else {
                    events.push(Event::parse(&name).ok_or_else(|| {
                        invalid(
                            vars::NOTIFY_ON.name,
                            text,
                            "comma-separated events: start, success, warning, failure, \
                             drill_success, drill_failure, offsite_failure, oplog_gap, oplog_failure, or all",
                        )
                    })?);
                }
            }
            Some(events)
        }
    };
    let timeout = parse_positive_duration(src, &vars::NOTIFY_TIMEOUT)?;
    Ok(notify::Options {
        targets,
        on,
        timeout,
    })
}

pub(super) fn check_recipient(var: &str, r: &str) -> Result<(), ConfigError> {
    if r.trim().to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        // A secret key where a public key belongs: never echo it.
        secret::register(r.trim());
        return Err(invalid(
            var,
            "AGE-SECRET-KEY-1***",
            "age public keys (age1...); this is a secret key (an identity), which must not be \
             on the server: put its public key here instead (`age-keygen -y` or the \
             \"public key:\" line of the identity file prints it)",
        ));
    }
    r.parse::<age::x25519::Recipient>()
        .map(|_| ())
        .map_err(|_| {
            invalid(
                var,
                r,
                "age X25519 public keys (age1...), comma-separated; `cofre keygen` makes one",
            )
        })
}
