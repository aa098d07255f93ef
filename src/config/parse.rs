//! Parsers for setting values: numbers, booleans, durations, sizes, time
//! zones, cron expressions, and the error that names the variable, the
//! value and what was expected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sources::Sources;
use crate::backup::MinFree;
use crate::schedule::{Schedule, Zone};
use crate::vars::{self, Var};

/// A configuration value that cannot be used. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value that does not parse or is out of range.
    #[error("invalid {var} value {value:?}: expected {expected}")]
    Invalid {
        /// The variable (or flag) name.
        var: String,
        /// The value as given, with secrets redacted.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// Two settings that cannot be used together.
    #[error("{0}")]
    Conflict(String),
    /// A file named by a variable cannot be read.
    #[error("cannot read {var} file {path}: {source}; check that it exists and is readable")]
    File {
        /// The variable naming the file.
        var: String,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The `.env` file is malformed.
    #[error("cannot parse {path}: {message}; check its syntax (KEY=value per line)")]
    DotEnv {
        /// The `.env` file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

impl crate::exit::Coded for ConfigError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            ConfigError::Invalid { .. }
            | ConfigError::Conflict(_)
            | ConfigError::File { .. }
            | ConfigError::DotEnv { .. } => crate::exit::Exit::Usage,
        }
    }
}

pub(super) fn invalid(var: &str, value: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: var.to_owned(),
        value: value.to_owned(),
        expected: expected.into(),
    }
}

/// A setting whose text `parse` turns into a value (its literal default
/// when unset), or an error that says what was `expected`.
pub(super) fn choice<T>(
    src: &Sources,
    var: &Var,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<T, ConfigError> {
    let v = src.value(var).unwrap_or_default();
    parse(v).ok_or_else(|| invalid(var.name, v, expected))
}

pub(super) fn parse_u32(src: &Sources, var: &Var, min: u32, max: u32) -> Result<u32, ConfigError> {
    match src.value(var) {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| invalid(var.name, v, format!("a whole number from {min} to {max}"))),
    }
}

pub(super) fn parse_bool(src: &Sources, var: &Var) -> Result<bool, ConfigError> {
    let v = src.value(var).unwrap_or("false");
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(var.name, v, "true or false")),
    }
}

/// A duration that must be longer than zero (a timeout).
pub(super) fn parse_positive_duration(src: &Sources, var: &Var) -> Result<Duration, ConfigError> {
    let d = parse_duration(src, var)?;
    if d.is_zero() {
        let v = src.value(var).unwrap_or_default();
        let example = var.default_value().unwrap_or("10s");
        return Err(invalid(
            var.name,
            v,
            format!("a duration longer than zero, such as {example}"),
        ));
    }
    Ok(d)
}

pub(super) fn parse_duration(src: &Sources, var: &Var) -> Result<Duration, ConfigError> {
    let v = src.value(var).unwrap_or("0s");
    parse_duration_text(v).ok_or_else(|| invalid(var.name, v, "a duration such as 30s, 5m or 1h"))
}

/// Parses `30s`, `5m`, `1h30m`, `2d` (humantime's syntax); a bare number is seconds.
pub fn parse_duration_text(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).ok()
}

pub(super) fn parse_min_free(v: &str) -> Option<MinFree> {
    let v = v.trim();
    if let Some(p) = v.strip_suffix('%') {
        let p: f64 = p.trim().parse().ok()?;
        return (0.0..100.0).contains(&p).then_some(MinFree::Percent(p));
    }
    parse_size(v).map(MinFree::Bytes)
}

/// Parses a byte size: `500M`, `5G`, `5GiB`, `1024`. Units are powers of 1024.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((num * mult as f64) as u64)
}

/// The time zone (`BACKUP_TIMEZONE`, else `TZ`, else local).
pub(super) fn zone(src: &Sources) -> Result<Zone, ConfigError> {
    match src.get(&vars::TIMEZONE).or_else(|| src.get_named("TZ")) {
        None => Ok(Zone::Local),
        Some((v, _)) => Zone::parse(v).ok_or_else(|| {
            invalid(
                vars::TIMEZONE.name,
                v,
                "an IANA time zone name such as Europe/Lisbon or UTC",
            )
        }),
    }
}

pub(super) fn cron(src: &Sources, var: &Var) -> Result<Schedule, ConfigError> {
    let text = src.value(var).unwrap_or_default();
    Schedule::parse(text, zone(src)?).map_err(|why| {
        invalid(
            var.name,
            text,
            format!(
                "a cron expression with 5 fields (minute hour day month weekday) \
                 or 6 (with seconds first), e.g. \"0 3 * * *\" ({why})"
            ),
        )
    })
}

/// Reads a small file a setting names.
pub(super) fn read_setting_file(var: &Var, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        var: var.name.into(),
        path: path.to_path_buf(),
        source,
    })
}
