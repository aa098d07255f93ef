//! Configuration: flags, environment and the project's `.env`, resolved into
//! validated [`Settings`].
//!
//! Two steps, as in ripgrep's low-level/high-level arguments: [`Sources`]
//! holds the raw strings from each origin; [`Settings::resolve`] picks each
//! variable by precedence (flag > environment > `.env` > default), parses and
//! checks it, and fails with a [`ConfigError`] that names the variable, the
//! value and what was expected. No file is touched here except the `.env` and
//! the small key files the variables point to.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::archive::Compression;
pub use crate::archive::crypt::AgeKeys;
pub use crate::logging::LogFormat;
use crate::notify::{Event, NotifySettings, Target};
pub use crate::retention::RetentionPolicy;
use crate::schedule::{Schedule, Zone};
use crate::secret::{self, Secret};
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

fn invalid(var: &str, value: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: var.to_owned(),
        value: value.to_owned(),
        expected: expected.into(),
    }
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// The process environment.
    Env,
    /// The project's `.env` file.
    DotEnv,
}

/// The raw strings from every origin, before any validation.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// Values given by flags, keyed by the variable they stand for.
    pub flags: HashMap<String, String>,
    /// List values given by repeatable flags (excludes, recipients).
    pub flag_lists: HashMap<String, Vec<String>>,
    /// The process environment.
    pub env: HashMap<String, String>,
    /// The `.env` file of the project, when there is one.
    pub dotenv: HashMap<String, String>,
    /// The directory the `.env` was read from (relative paths in it resolve there).
    pub dotenv_dir: Option<PathBuf>,
    /// The current directory.
    pub cwd: PathBuf,
    /// The home directory, for the default identity file.
    pub home: Option<PathBuf>,
}

impl Sources {
    /// Collects the environment and the current directory; flags are added by
    /// the caller, then [`Sources::load_dotenv`] reads the project's `.env`.
    pub fn from_process() -> std::io::Result<Self> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Ok(Sources {
            env,
            cwd: std::env::current_dir()?,
            home: std::env::var_os("HOME").map(PathBuf::from),
            ..Default::default()
        })
    }

    /// Adds a flag value for its setting, when given.
    pub fn flag(&mut self, var: &Var, value: Option<impl Into<OsString>>) {
        if let Some(v) = value {
            let v: OsString = v.into();
            self.flags
                .insert(var.name.to_owned(), v.to_string_lossy().into_owned());
        }
    }

    /// Adds a repeatable flag's values for its setting, when any.
    pub fn flag_list(&mut self, var: &Var, values: &[String]) {
        if !values.is_empty() {
            self.flag_lists.insert(var.name.to_owned(), values.to_vec());
        }
    }

    /// The value of `var` and where it came from; its literal default when
    /// nothing sets it.
    fn value(&self, var: &Var) -> Option<&str> {
        self.get(var).map(|(v, _)| v).or(var.default_value())
    }

    fn get(&self, var: &Var) -> Option<(&str, Origin)> {
        self.get_named(var.name)
    }

    fn get_named(&self, var: &str) -> Option<(&str, Origin)> {
        fn nonempty<'m>(m: &'m HashMap<String, String>, var: &str) -> Option<&'m str> {
            m.get(var)
                .map(String::as_str)
                .filter(|v| !v.trim().is_empty())
        }
        if let Some(v) = nonempty(&self.flags, var) {
            return Some((v, Origin::Flag));
        }
        // A variable set in the environment wins over `.env` even when it is
        // empty: `MONGODB_URI= cofre backup` turns the database dump off.
        if self.env.contains_key(var) {
            return nonempty(&self.env, var).map(|v| (v, Origin::Env));
        }
        nonempty(&self.dotenv, var).map(|v| (v, Origin::DotEnv))
    }

    fn list(&self, var: &Var) -> Vec<String> {
        if let Some(values) = self.flag_lists.get(var.name) {
            return values.clone();
        }
        self.get(var)
            .map(|(v, _)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A path setting, made absolute: a flag's relative to the current
    /// directory, the environment's to the project, the `.env`'s to its
    /// directory.
    fn path(&self, var: &Var, source: &Path) -> Option<PathBuf> {
        self.get(var).map(|(v, origin)| {
            let base = match origin {
                Origin::Flag => self.cwd.clone(),
                Origin::Env => source.to_path_buf(),
                Origin::DotEnv => self
                    .dotenv_dir
                    .clone()
                    .unwrap_or_else(|| source.to_path_buf()),
            };
            absolute(&base, Path::new(v))
        })
    }

    /// The project directory as flags and environment give it (the `.env`
    /// lives there, so it cannot come from the `.env` itself, except as a
    /// fallback when nothing else names one).
    fn source_dir(&self) -> PathBuf {
        match self.get(&vars::SOURCE) {
            Some((v, Origin::DotEnv)) => absolute(
                self.dotenv_dir.as_deref().unwrap_or(&self.cwd),
                Path::new(v),
            ),
            Some((v, _)) => absolute(&self.cwd, Path::new(v)),
            None => self.cwd.clone(),
        }
    }

    /// Reads `<project>/.env` when it exists. Its values never override the
    /// environment or flags.
    pub fn load_dotenv(&mut self) -> Result<(), ConfigError> {
        let dir = self.source_dir();
        let path = dir.join(".env");
        if !path.is_file() {
            return Ok(());
        }
        let iter = dotenvy::from_path_iter(&path).map_err(|e| ConfigError::DotEnv {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for item in iter {
            let (k, v) = item.map_err(|e| ConfigError::DotEnv {
                path: path.clone(),
                message: e.to_string(),
            })?;
            self.dotenv.insert(k, v);
        }
        self.dotenv_dir = Some(dir);
        Ok(())
    }
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// How archives are encrypted.
#[derive(Debug, Clone)]
pub enum Encryption {
    /// No encryption (an explicit opt-out, warned about at every backup).
    None,
    /// age, to these recipients or with this passphrase.
    Age(AgeKeys),
}

/// S3 Object Lock on uploaded objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// No lock.
    Off,
    /// Governance mode: users with a special permission can still delete.
    Governance,
    /// Compliance mode: nobody can delete before the date.
    Compliance,
}

impl LockMode {
    fn parse(s: &str) -> Option<LockMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Some(LockMode::Off),
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// Where offsite copies go, and how.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// `s3://bucket/prefix` as given (it holds no secret).
    pub url: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Remote retention (its own days, the local `KEEP_*` rules).
    pub retention: RetentionPolicy,
    /// Object Lock.
    pub lock: LockMode,
    /// Upload cap, bytes per second.
    pub bandwidth: Option<u64>,
    /// The `AWS_*` variables (environment, then `.env`), for the client.
    pub aws: Vec<(String, Secret)>,
}

/// Parses `s3://bucket[/prefix]`.
fn parse_remote_url(v: &str) -> Option<(String, String)> {
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

fn remote(src: &Sources, local: &RetentionPolicy) -> Result<Option<RemoteSettings>, ConfigError> {
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
    Ok(Some(RemoteSettings {
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
fn aws(src: &Sources) -> Vec<(String, Secret)> {
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

impl Settings {
    /// The bucket an `s3://bucket/prefix/ARCHIVE` argument names, and the
    /// archive's name; credentials as for `BACKUP_REMOTE`.
    pub fn remote_for_url(&self, arg: &str) -> Option<(RemoteSettings, String)> {
        let (url, name) = arg.rsplit_once('/')?;
        let (bucket, prefix) =
            parse_remote_url(url).or_else(|| parse_remote_url(&format!("{url}/")))?;
        let base = self.remote.clone();
        Some((
            RemoteSettings {
                url: url.to_owned(),
                bucket,
                prefix,
                retention: self.retention,
                lock: LockMode::Off,
                bandwidth: None,
                aws: base.map_or_else(|| self.aws.clone(), |r| r.aws),
            },
            name.to_owned(),
        ))
    }
}

/// A free-space threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    /// A share of the filesystem, 0..100.
    Percent(f64),
    /// A number of bytes.
    Bytes(u64),
}

/// Every setting, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The project directory (absolute; not checked for existence here).
    pub source: PathBuf,
    /// Where archives live (absolute).
    pub backup_dir: PathBuf,
    /// Retention rules.
    pub retention: RetentionPolicy,
    /// The daemon's schedule.
    pub schedule: Schedule,
    /// MongoDB connection string, when the database is part of the backup.
    pub mongodb_uri: Option<Secret>,
    /// Databases to dump (empty: the URI's, or all non-system ones).
    pub mongodb_databases: Vec<String>,
    /// Collections to dump (empty: all), as `db.coll` or `coll`.
    pub mongodb_collections: Vec<String>,
    /// Extra gitignore-style exclude patterns.
    pub excludes: Vec<String>,
    /// Encryption of new archives.
    pub encryption: Encryption,
    /// The identity file (for reading archives and for the default key).
    pub identity_file: PathBuf,
    /// This installation's signing key (made on first use).
    pub signing_key: PathBuf,
    /// Extra trusted public keys (base64 or files), `BACKUP_TRUSTED_KEYS`.
    pub trusted_keys: Vec<String>,
    /// Passphrase for reading archives (the same as for writing).
    pub passphrase: Option<Secret>,
    /// Compression of new archives.
    pub compression: Compression,
    /// Also append logs here.
    pub log_file: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Catch up a missed scheduled run at daemon start.
    pub catch_up: bool,
    /// Retries of a failed scheduled run.
    pub retries: u32,
    /// How long the daemon lets a running backup finish after a stop signal.
    pub shutdown_grace: Duration,
    /// Warn when free space after a backup would fall under this.
    pub min_free: MinFree,
    /// Offsite copies, when `BACKUP_REMOTE` is set.
    pub remote: Option<RemoteSettings>,
    /// The `AWS_*` variables (for `s3://` archives named on the command line).
    pub aws: Vec<(String, Secret)>,
    /// Restore drills.
    pub drill: DrillSettings,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
    /// Notifications.
    pub notify: NotifySettings,
}

/// Where metrics go.
#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// The daemon serves `/metrics` here.
    pub addr: Option<std::net::SocketAddr>,
    /// Written after every run.
    pub file: Option<PathBuf>,
}

/// How restore drills run.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    /// When the daemon runs one (`None`: `off`).
    pub schedule: Option<Schedule>,
    /// Where the scratch directory is made (`None`: `BACKUP_DIR`).
    pub dir: Option<PathBuf>,
    /// The server the database is restored into (`None`: the backup's).
    pub mongodb_uri: Option<Secret>,
    /// The smoke test.
    pub command: Option<String>,
    /// How long the smoke test may run.
    pub timeout: Duration,
}

impl Settings {
    /// Resolves and validates every variable. Reads only the small files that
    /// variables name (recipients, passphrase).
    pub fn resolve(src: &Sources) -> Result<Settings, ConfigError> {
        let source = src.source_dir();
        let path_var = |var: &Var| src.path(var, &source);
        let identity_file = path_var(&vars::IDENTITY_FILE).unwrap_or_else(|| {
            src.home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".config/cofre/identity.txt")
        });
        let signing_key = path_var(&vars::SIGNING_KEY_FILE).unwrap_or_else(|| {
            identity_file
                .parent()
                .unwrap_or(Path::new("/"))
                .join("signing.key")
        });
        let passphrase = passphrase(src, &source)?;
        let recipients = recipients(src, &source)?;
        let retention = retention(src)?;
        Ok(Settings {
            backup_dir: path_var(&vars::DIR).unwrap_or_else(|| source.join("backups")),
            remote: remote(src, &retention)?,
            aws: aws(src),
            retention,
            schedule: schedule(src)?,
            mongodb_uri: resolve_mongodb_uri(src, &path_var)?,
            signing_key,
            trusted_keys: src.list(&vars::TRUSTED_KEYS),
            mongodb_databases: src.list(&vars::MONGODB_DATABASES),
            mongodb_collections: src.list(&vars::MONGODB_COLLECTIONS),
            excludes: src.list(&vars::EXCLUDE),
            encryption: encryption(src, passphrase.as_ref(), recipients, &identity_file)?,
            identity_file,
            passphrase,
            compression: choice(
                src,
                &vars::COMPRESSION,
                Compression::parse,
                "gzip or zstd, optionally with a level: gzip:1..9 or zstd:1..19",
            )?,
            log_file: path_var(&vars::LOG_FILE),
            log_format: choice(src, &vars::LOG_FORMAT, LogFormat::parse, "text or json")?,
            catch_up: parse_bool(src, &vars::CATCH_UP)?,
            retries: parse_u32(src, &vars::RETRIES, 0, 100)?,
            shutdown_grace: parse_duration(src, &vars::SHUTDOWN_GRACE)?,
            drill: drill(src, &path_var)?,
            metrics: MetricsSettings {
                addr: metrics_addr(src)?,
                file: path_var(&vars::METRICS_FILE),
            },
            notify: notify(src)?,
            min_free: choice(
                src,
                &vars::MIN_FREE,
                parse_min_free,
                "a percentage such as 10% or a size such as 5G or 500M",
            )?,
            source,
        })
    }
}

/// A setting whose text `parse` turns into a value (its literal default
/// when unset), or an error that says what was `expected`.
fn choice<T>(
    src: &Sources,
    var: &Var,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<T, ConfigError> {
    let v = src.value(var).unwrap_or_default();
    parse(v).ok_or_else(|| invalid(var.name, v, expected))
}

fn retention(src: &Sources) -> Result<RetentionPolicy, ConfigError> {
    Ok(RetentionPolicy {
        days: parse_u32(src, &vars::RETENTION_DAYS, 0, 100_000)?,
        keep_last: parse_u32(src, &vars::KEEP_LAST, 0, 1_000_000)?,
        keep_daily: parse_u32(src, &vars::KEEP_DAILY, 0, 1_000_000)?,
        keep_weekly: parse_u32(src, &vars::KEEP_WEEKLY, 0, 1_000_000)?,
        keep_monthly: parse_u32(src, &vars::KEEP_MONTHLY, 0, 1_000_000)?,
    })
}

/// The time zone (`BACKUP_TIMEZONE`, else `TZ`, else local).
fn zone(src: &Sources) -> Result<Zone, ConfigError> {
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

fn schedule(src: &Sources) -> Result<Schedule, ConfigError> {
    cron(src, &vars::SCHEDULE)
}

fn cron(src: &Sources, var: &Var) -> Result<Schedule, ConfigError> {
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
fn read_setting_file(var: &Var, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        var: var.name.into(),
        path: path.to_path_buf(),
        source,
    })
}

fn passphrase(src: &Sources, source: &Path) -> Result<Option<Secret>, ConfigError> {
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
fn recipients(src: &Sources, source: &Path) -> Result<Vec<String>, ConfigError> {
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

fn encryption(
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
fn resolve_mongodb_uri(
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
fn check_mongodb_uri(var: &str, uri: &str) -> Result<Secret, ConfigError> {
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

fn drill(
    src: &Sources,
    path_var: &dyn Fn(&Var) -> Option<PathBuf>,
) -> Result<DrillSettings, ConfigError> {
    let schedule = match src.value(&vars::DRILL_SCHEDULE) {
        Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
        _ => Some(cron(src, &vars::DRILL_SCHEDULE)?),
    };
    let mongodb_uri = match src.get(&vars::DRILL_MONGODB_URI) {
        Some((uri, _)) => Some(check_mongodb_uri(vars::DRILL_MONGODB_URI.name, uri)?),
        None => None,
    };
    let timeout = parse_positive_duration(src, &vars::DRILL_TIMEOUT)?;
    Ok(DrillSettings {
        schedule,
        dir: path_var(&vars::DRILL_DIR),
        mongodb_uri,
        command: src
            .get(&vars::DRILL_COMMAND)
            .map(|(c, _)| c.trim().to_owned()),
        timeout,
    })
}

fn metrics_addr(src: &Sources) -> Result<Option<std::net::SocketAddr>, ConfigError> {
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

fn notify(src: &Sources) -> Result<NotifySettings, ConfigError> {
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
                             drill_success, drill_failure, offsite_failure, or all",
                        )
                    })?);
                }
            }
            Some(events)
        }
    };
    let timeout = parse_positive_duration(src, &vars::NOTIFY_TIMEOUT)?;
    Ok(NotifySettings {
        targets,
        on,
        timeout,
    })
}

fn check_recipient(var: &str, r: &str) -> Result<(), ConfigError> {
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

fn parse_u32(src: &Sources, var: &Var, min: u32, max: u32) -> Result<u32, ConfigError> {
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

fn parse_bool(src: &Sources, var: &Var) -> Result<bool, ConfigError> {
    let v = src.value(var).unwrap_or("false");
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(var.name, v, "true or false")),
    }
}

/// A duration that must be longer than zero (a timeout).
fn parse_positive_duration(src: &Sources, var: &Var) -> Result<Duration, ConfigError> {
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

fn parse_duration(src: &Sources, var: &Var) -> Result<Duration, ConfigError> {
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

fn parse_min_free(v: &str) -> Option<MinFree> {
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

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encryption::None => f.write_str("none"),
            Encryption::Age(k) if k.passphrase.is_some() => f.write_str("age (passphrase)"),
            Encryption::Age(k) if !k.recipients.is_empty() => {
                write!(f, "age ({} recipient(s))", k.recipients.len())
            }
            Encryption::Age(_) => f.write_str("age (identity file)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: PathBuf::from("/srv/app"),
            home: Some(PathBuf::from("/home/u")),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(&sources(&[("BACKUP_TIMEZONE", "UTC")])).unwrap();
        assert_eq!(s.source, PathBuf::from("/srv/app"));
        assert_eq!(s.backup_dir, PathBuf::from("/srv/app/backups"));
        assert_eq!(s.retention.days, 7);
        assert_eq!(s.compression, Compression::Gzip(6));
        assert_eq!(
            s.identity_file,
            PathBuf::from("/home/u/.config/cofre/identity.txt")
        );
        assert!(matches!(s.encryption, Encryption::Age(_)));
        assert_eq!(s.min_free, MinFree::Percent(10.0));
    }

    #[test]
    fn precedence_flag_env_dotenv() {
        let mut src = sources(&[("BACKUP_RETENTION_DAYS", "3"), ("BACKUP_TIMEZONE", "UTC")]);
        src.dotenv
            .insert("BACKUP_RETENTION_DAYS".into(), "9".into());
        src.dotenv
            .insert("BACKUP_COMPRESSION".into(), "zstd".into());
        assert_eq!(Settings::resolve(&src).unwrap().retention.days, 3);
        assert_eq!(
            Settings::resolve(&src).unwrap().compression,
            Compression::Zstd(3)
        );
        src.flag(&vars::RETENTION_DAYS, Some("11"));
        assert_eq!(Settings::resolve(&src).unwrap().retention.days, 11);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("BACKUP_COMPRESSION", "lz4"),
            ("BACKUP_COMPRESSION", "gzip:12"),
            ("BACKUP_RETENTION_DAYS", "-1"),
            ("BACKUP_RETENTION_DAYS", "week"),
            ("BACKUP_SCHEDULE", "every day"),
            ("BACKUP_SCHEDULE", "61 * * * *"),
            ("BACKUP_ENCRYPTION", "aes"),
            ("BACKUP_LOG_FORMAT", "xml"),
            ("BACKUP_RECIPIENTS", "age1notakey"),
            ("BACKUP_TIMEZONE", "Mars/Olympus"),
            ("BACKUP_MIN_FREE", "lots"),
            ("BACKUP_CATCH_UP", "maybe"),
        ] {
            let err = Settings::resolve(&sources(&[(var, value)])).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(var), "{msg}");
            assert!(msg.contains(value), "{msg}");
        }
    }

    #[test]
    fn uri_password_never_in_the_error() {
        for uri in [
            "postgres://u:topsecret1@h/db",
            "mongodb://u:top/secret?2@h/db",
            "mongodb://u:top@secret3@h:notaport/db",
        ] {
            let err = Settings::resolve(&sources(&[("MONGODB_URI", uri)]))
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("topsecret") && !err.contains("secret"),
                "{err}"
            );
            assert!(err.contains("MONGODB_URI"), "{err}");
        }
    }

    #[test]
    fn a_secret_key_given_as_a_recipient_is_never_echoed() {
        let key = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let err = Settings::resolve(&sources(&[("BACKUP_RECIPIENTS", key)]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("QQQQQQ"), "{err}");
        assert!(err.contains("secret key"), "{err}");
    }

    #[test]
    fn backup_mongodb_uri_wins() {
        let s = Settings::resolve(&sources(&[
            ("MONGODB_URI", "mongodb://a/x"),
            ("BACKUP_MONGODB_URI", "mongodb://b/y"),
            ("BACKUP_TIMEZONE", "UTC"),
        ]))
        .unwrap();
        assert_eq!(s.mongodb_uri.unwrap().expose(), "mongodb://b/y");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("5GiB"), Some(5 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("5X"), None);
        assert_eq!(parse_duration_text("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration_text("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration_text("soon"), None);
    }
}
