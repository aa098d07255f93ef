//! The bucket: offsite copies in S3-compatible object storage.
//!
//! `object_store` (Apache Arrow's) speaks the protocol: credentials,
//! region and endpoint from the standard `AWS_*` variables (profiles,
//! instance roles and web identity too), SigV4 signing, path-style
//! addressing for MinIO, Garage and the like, retries with backoff, a
//! SHA-256 checksum on every request body (each part of a multipart upload
//! included) that the store verifies, conditional create (`If-None-Match:
//! *`) for single-request uploads, streaming multipart uploads and
//! downloads. Two calls it does not offer are made here, signed by its own
//! `AwsAuthorizer` and sent with `reqwest`: `PutObjectRetention` (S3 Object
//! Lock) and the deletion of one object *version* (in a versioned, locked
//! bucket a plain delete only hides an object; deleting the version frees
//! it, and is what a lock refuses).
//!
//! Memory is bounded whatever the archive's size: uploads go in 6 MiB parts
//! with at most two in flight; downloads pass through a bounded pipe.
//!
//! The bucket is written by whoever holds its credentials, so nothing it
//! says is taken on its word:
//!
//! - **Listings** are made here (`ListObjectVersions`, or `ListObjectsV2`
//!   where a store has no versions), parsed from the XML as it comes, so a
//!   key object_store could not represent (`prefix/../x`, `prefix//x`) is
//!   simply not an archive name: only keys that are archive names (or
//!   their signatures) directly under the prefix count, and nothing else
//!   can make a listing fail.
//! - **Reads** take the version cofre wrote. cofre only ever creates a
//!   name that is free, so in a versioned bucket (Object Lock needs one)
//!   its copy is the oldest version of the key; whoever writes over it
//!   adds a newer version, which a restore never reads.
//! - **Uploads** are checked: the store's answer (ETag and version id) is
//!   compared with the current version afterwards, and a key that holds
//!   something cofre did not write is replaced where the store allows, or
//!   reported.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, Checksum, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};

use crate::archive::pipe::{self, ChannelReader};
use crate::retention::RetentionPolicy;
use crate::secret::Secret;
use crate::sign::SIG_SUFFIX;
use crate::store::ArchiveName;

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
    /// `off`, `governance` or `compliance`.
    pub fn parse(s: &str) -> Option<LockMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Some(LockMode::Off),
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// Where offsite copies go, and how (`BACKUP_REMOTE` and its companions).
#[derive(Debug, Clone)]
pub struct Options {
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

/// Uploads below this size go in one request (conditional); larger ones in
/// parts of this size (S3's smallest part is 5 MiB).
const PART: usize = 6 << 20;
/// Parts in flight at once.
const IN_FLIGHT: usize = 2;
/// The largest signature file fetched.
const MAX_SIG: usize = 64 << 10;

/// What went wrong with the bucket, each with what to check.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The client could not be set up.
    #[error("cannot use {url}: {detail}; check BACKUP_REMOTE and the AWS_* variables")]
    Setup {
        /// The remote.
        url: String,
        /// Why.
        detail: String,
    },
    /// The bucket does not exist.
    #[error(
        "the bucket of {url} does not exist ({detail}); create it, or check BACKUP_REMOTE and AWS_REGION"
    )]
    NoBucket {
        /// The remote.
        url: String,
        /// The store's words.
        detail: String,
    },
    /// The credentials were refused.
    #[error(
        "{url} refused the credentials ({detail}); check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's permissions"
    )]
    Denied {
        /// The remote.
        url: String,
        /// The store's words.
        detail: String,
    },
    /// The store cannot be reached.
    #[error("cannot reach {url} ({detail}); check the network and AWS_ENDPOINT_URL")]
    Unreachable {
        /// The remote.
        url: String,
        /// The store's words.
        detail: String,
    },
    /// A key holds something cofre did not write, and it cannot be cleared.
    #[error(
        "{url} holds a {name} that cofre did not write, and it cannot be replaced ({detail}); \
         someone with write access to the bucket put it there: remove it, then run `cofre upload`"
    )]
    Foreign {
        /// The remote.
        url: String,
        /// The object.
        name: String,
        /// Why it cannot be replaced.
        detail: String,
    },
    /// After an upload, the bucket's current copy is not what was sent.
    #[error(
        "the copy of {name} in {url} is not what was sent: something wrote over it during the \
         upload; check who else writes to the bucket (the next run tries again)"
    )]
    NotWhatWasSent {
        /// The remote.
        url: String,
        /// The object.
        name: String,
    },
    /// The archive is not in the bucket.
    #[error("there is no archive {name} in {url}; `cofre list --remote` shows them")]
    NotFound {
        /// The remote.
        url: String,
        /// The archive.
        name: String,
    },
    /// Object Lock is on but the bucket cannot lock objects.
    #[error(
        "cannot lock {name} in {url} ({detail}); the bucket needs Object Lock enabled (at its creation), or set BACKUP_REMOTE_LOCK=off"
    )]
    Lock {
        /// The remote.
        url: String,
        /// The object.
        name: String,
        /// The store's words.
        detail: String,
    },
    /// Any other failure.
    #[error("{what} {url}: {detail}")]
    Other {
        /// What was being done.
        what: &'static str,
        /// The remote.
        url: String,
        /// The store's words.
        detail: String,
    },
    /// Reading the local archive failed.
    #[error("cannot read {path}: {source}")]
    Local {
        /// The file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// Stopped on request.
    #[error("the upload was stopped")]
    Cancelled,
}

impl crate::exit::Coded for RemoteError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            RemoteError::Setup { .. }
            | RemoteError::NoBucket { .. }
            | RemoteError::Denied { .. }
            | RemoteError::Unreachable { .. }
            | RemoteError::Foreign { .. }
            | RemoteError::NotWhatWasSent { .. }
            | RemoteError::NotFound { .. }
            | RemoteError::Lock { .. }
            | RemoteError::Other { .. }
            | RemoteError::Local { .. }
            | RemoteError::Cancelled => crate::exit::Exit::Failure,
        }
    }
}

/// One version of an object, as a listing gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The version id (`None` in a store without versions).
    pub id: Option<String>,
    /// The ETag, without quotes.
    pub e_tag: String,
    /// Bytes.
    pub size: u64,
    /// Whether it is the current version.
    pub latest: bool,
}

/// One archive in the bucket.
#[derive(Debug, Clone)]
pub struct RemoteArchive {
    /// Its name.
    pub name: String,
    /// What the name says.
    pub parsed: ArchiveName,
    /// The archive object's versions, oldest (the one cofre wrote) first.
    pub versions: Vec<Version>,
    /// Its signature's versions, oldest first (empty when there is none).
    pub sig_versions: Vec<Version>,
}

impl RemoteArchive {
    /// The size of the copy cofre reads (the oldest version).
    pub fn size(&self) -> u64 {
        self.versions.first().map_or(0, |v| v.size)
    }

    /// Whether its signature is there too.
    pub fn signed(&self) -> bool {
        !self.sig_versions.is_empty()
    }
}

/// Another object cofre writes to the bucket (an oplog slice).
#[derive(Debug, Clone)]
pub struct RemoteObject {
    /// Its name under the prefix (`oplog/oplog_...`).
    pub name: String,
    /// Its versions, oldest first.
    pub versions: Vec<Version>,
    /// Its signature's versions, oldest first.
    pub sig_versions: Vec<Version>,
}

impl RemoteObject {
    /// Its file name (without the directory).
    pub fn bare_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

/// The most bytes of one listing page read (a page of 1,000 keys is a few
/// hundred KiB).
const MAX_PAGE: usize = 16 << 20;
/// Concurrent requests for signatures.
const SIG_CONCURRENCY: usize = 16;

/// Signatures already read in this process, by object, version id and
/// ETag. One version's bytes do not change, so a sync that looks at the
/// bucket's signatures again (before and after its uploads and deletions,
/// and the daemon's next sync after each oplog slice) fetches only the new
/// ones. What is kept is only ever text the caller verifies as it would a
/// fresh read; an object someone rewrites has another ETag and is read
/// again.
static SIGNATURES_READ: std::sync::LazyLock<std::sync::Mutex<SignaturesRead>> =
    std::sync::LazyLock::new(Default::default);

/// How many signatures [`SIGNATURES_READ`] holds before it starts over.
const SIGNATURES_READ_MAX: usize = 4096;

/// Signature texts by (object URL, version id, ETag).
type SignaturesRead = std::collections::HashMap<(String, Option<String>, String), String>;

/// How a deletion went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Gone (archive and signature).
    Yes,
    /// The store refused: a lock holds it.
    Locked(String),
}

/// The bucket, connected.
pub struct Remote {
    store: Arc<AmazonS3>,
    rt: Arc<tokio::runtime::Runtime>,
    http: reqwest::Client,
    settings: Options,
    endpoint: Option<String>,
    region: String,
    /// Cleared when the store answers that it has no version listing.
    versions: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.settings.url)
    }
}

/// The TLS library needs its cryptography chosen once per process.
pub(crate) fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn classify(url: &str, what: &'static str, e: &object_store::Error) -> RemoteError {
    classify_text(url, what, &e.to_string())
}

impl Remote {
    /// Connects (lazily: nothing is sent until the first call).
    pub fn connect(settings: &Options) -> Result<Remote, RemoteError> {
        install_crypto();
        let setup = |detail: String| RemoteError::Setup {
            url: settings.url.clone(),
            detail,
        };
        // Client options first: they hold allow_http, which the endpoint
        // below may set.
        let mut builder = AmazonS3Builder::new().with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout(Duration::from_secs(300)),
        );
        for (k, v) in &settings.aws {
            if let Ok(key) = k.to_ascii_lowercase().parse() {
                builder = builder.with_config(key, v.expose());
            }
        }
        let endpoint = settings
            .aws
            .iter()
            .find(|(k, _)| k == "AWS_ENDPOINT_URL_S3")
            .or_else(|| {
                settings
                    .aws
                    .iter()
                    .find(|(k, _)| k == "AWS_ENDPOINT_URL" || k == "AWS_ENDPOINT")
            })
            .map(|(_, v)| v.expose().trim_end_matches('/').to_owned());
        if endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            builder = builder.with_allow_http(true);
        }
        let region = settings
            .aws
            .iter()
            .find(|(k, _)| k == "AWS_REGION")
            .or_else(|| settings.aws.iter().find(|(k, _)| k == "AWS_DEFAULT_REGION"))
            .map_or_else(|| "us-east-1".to_owned(), |(_, v)| v.expose().to_owned());
        let store = builder
            .with_bucket_name(&settings.bucket)
            .with_region(&region)
            .with_checksum_algorithm(Checksum::SHA256)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| setup(crate::secret::scrub(&e.to_string())))?;
        let rt = crate::rt::with_workers().map_err(|e| setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| setup(e.to_string()))?;
        Ok(Remote {
            store: Arc::new(store),
            rt: Arc::new(rt),
            http,
            settings: settings.clone(),
            endpoint,
            region,
            versions: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.settings.url
    }

    fn key(&self, name: &str) -> ObjectPath {
        if self.settings.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.settings.prefix))
        }
    }

    fn err(&self, what: &'static str, e: &object_store::Error) -> RemoteError {
        classify(&self.settings.url, what, e)
    }

    /// The archives in the bucket, newest first, each with the versions of
    /// its object and of its signature. Only keys that are archive names
    /// (or their signatures) directly under the prefix count; any other
    /// key, whatever it holds, is passed over.
    pub fn list(&self) -> Result<Vec<RemoteArchive>, RemoteError> {
        self.rt.block_on(self.list_async())
    }

    /// The objects under `<prefix>/<sub>/` whose names `accept` takes,
    /// each with its signature's versions (names given as `sub/name`).
    pub fn list_sub(
        &self,
        sub: &str,
        accept: impl Fn(&str) -> bool,
    ) -> Result<Vec<RemoteObject>, RemoteError> {
        let found = self.rt.block_on(self.named_objects(sub, accept))?;
        Ok(found
            .into_iter()
            .map(|(bare, (versions, sig_versions))| RemoteObject {
                name: format!("{sub}/{bare}"),
                versions,
                sig_versions,
            })
            .collect())
    }

    /// The signatures of `objects` (the versions cofre wrote), fetched
    /// concurrently; `None` where there is none.
    pub fn object_signatures(
        &self,
        objects: &[&RemoteObject],
    ) -> Result<Vec<Option<String>>, RemoteError> {
        self.fetch_signatures(
            objects
                .iter()
                .map(|o| (o.name.as_str(), &o.sig_versions[..])),
        )
    }

    /// The signatures of `(name, signature versions)` pairs, fetched
    /// `SIG_CONCURRENCY` at a time, in order; `None` where there is none.
    fn fetch_signatures<'a>(
        &self,
        items: impl Iterator<Item = (&'a str, &'a [Version])>,
    ) -> Result<Vec<Option<String>>, RemoteError> {
        self.rt.block_on(async {
            let fetches = items.map(|(name, sig_versions)| async move {
                match sig_versions.first() {
                    None => Ok(None),
                    first => self.read_signature(name, first).await,
                }
            });
            futures::stream::iter(fetches)
                .buffered(SIG_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        })
    }

    async fn list_async(&self) -> Result<Vec<RemoteArchive>, RemoteError> {
        let found = self
            .named_objects("", |n| ArchiveName::parse(n).is_some())
            .await?;
        let mut archives: Vec<RemoteArchive> = found
            .into_iter()
            .filter_map(|(name, (versions, sig_versions))| {
                Some(RemoteArchive {
                    parsed: ArchiveName::parse(&name)?,
                    name,
                    versions,
                    sig_versions,
                })
            })
            .collect();
        archives.sort_by(|a, b| b.parsed.time.cmp(&a.parsed.time).then(b.name.cmp(&a.name)));
        Ok(archives)
    }

    /// The objects directly under `dir` (a folder under the prefix; `""`
    /// for the prefix itself) whose names `accept` takes, by name, each
    /// with its versions and its signature's versions (empty when there is
    /// none). Any other key, whatever it holds, is passed over, and a
    /// signature without its object counts for nothing.
    async fn named_objects(
        &self,
        dir: &str,
        accept: impl Fn(&str) -> bool,
    ) -> Result<BTreeMap<String, (Vec<Version>, Vec<Version>)>, RemoteError> {
        let prefix: String = [self.settings.prefix.as_str(), dir]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| format!("{s}/"))
            .collect();
        let mut found = BTreeMap::new();
        let mut signatures = std::collections::HashMap::new();
        for (key, versions) in self.objects(&prefix).await? {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            if rest.contains('/') || versions.is_empty() {
                continue;
            }
            match rest.strip_suffix(SIG_SUFFIX) {
                Some(object) if accept(object) => {
                    signatures.insert(object.to_owned(), versions);
                }
                Some(_) => {}
                None if accept(rest) => {
                    found.insert(rest.to_owned(), (versions, Vec::new()));
                }
                None => {}
            }
        }
        for (name, (_, sig_versions)) in &mut found {
            *sig_versions = signatures.remove(name).unwrap_or_default();
        }
        Ok(found)
    }

    /// Every object under `prefix` with its versions, oldest first (delete
    /// markers left out). A store without version listings gets a plain
    /// listing, one version per key.
    async fn objects(&self, prefix: &str) -> Result<Vec<(String, Vec<Version>)>, RemoteError> {
        use std::sync::atomic::Ordering;
        if self.versions.load(Ordering::Relaxed) {
            match self.list_versions(prefix).await {
                Ok(v) => return Ok(v),
                Err(ListFailure::Unsupported) => self.versions.store(false, Ordering::Relaxed),
                Err(ListFailure::Remote(e)) => return Err(e),
            }
        }
        self.list_plain(prefix).await
    }

    /// `ListObjectVersions`, every page.
    async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<Version>)>, ListFailure> {
        let mut out: Vec<(String, Vec<Version>)> = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![
                ("versions", String::new()),
                ("encoding-type", "url".to_owned()),
                ("prefix", prefix.to_owned()),
            ];
            if let Some((key, version)) = &markers {
                query.push(("key-marker", key.clone()));
                query.push(("version-id-marker", version.clone()));
            }
            let (status, body) = self.list_page(&query).await.map_err(ListFailure::Remote)?;
            if status == reqwest::StatusCode::NOT_IMPLEMENTED
                || (status.is_client_error()
                    && xml_code(&body).is_some_and(|c| c == "NotImplemented"))
            {
                return Err(ListFailure::Unsupported);
            }
            if !status.is_success() {
                return Err(ListFailure::Remote(self.status_error(status, &body)));
            }
            let page = parse_listing(&body, &["Version", "DeleteMarker"])
                .map_err(|detail| ListFailure::Remote(self.list_error(&detail)))?;
            // Versions of one key come newest first; a key may go on into
            // the next page.
            for record in &page.records {
                let Some(key) = record.text("Key").map(|k| url_decoded(&k)) else {
                    continue;
                };
                if out.last().is_none_or(|(k, _)| *k != key) {
                    out.push((key.clone(), Vec::new()));
                }
                if record.name != "Version" {
                    continue;
                }
                let id = record
                    .text("VersionId")
                    .filter(|v| !v.is_empty() && v != "null");
                let latest = record.text("IsLatest").is_some_and(|l| l == "true");
                out.last_mut()
                    .expect("pushed above")
                    .1
                    .push(record.version(id, latest));
            }
            if !page.truncated() {
                break;
            }
            match (
                page.field("NextKeyMarker"),
                page.field("NextVersionIdMarker"),
            ) {
                (Some(k), Some(v)) if Some((k.clone(), v.clone())) != markers => {
                    markers = Some((url_decoded(&k), v));
                }
                _ => break,
            }
        }
        for (_, versions) in &mut out {
            versions.reverse();
        }
        Ok(out)
    }

    /// One page of a listing of the bucket: its status and body.
    async fn list_page(
        &self,
        query: &[(&str, String)],
    ) -> Result<(reqwest::StatusCode, Vec<u8>), RemoteError> {
        self.request(
            reqwest::Method::GET,
            &self.bucket_url(query),
            Vec::new(),
            &[],
        )
        .await
        .map_err(|detail| self.list_error(&detail))
    }

    /// `ListObjectsV2`, every page.
    async fn list_plain(&self, prefix: &str) -> Result<Vec<(String, Vec<Version>)>, RemoteError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type", "2".to_owned()),
                ("encoding-type", "url".to_owned()),
                ("prefix", prefix.to_owned()),
            ];
            if let Some(t) = &token {
                query.push(("continuation-token", t.clone()));
            }
            let (status, body) = self.list_page(&query).await?;
            if !status.is_success() {
                return Err(self.status_error(status, &body));
            }
            let page = parse_listing(&body, &["Contents"]).map_err(|d| self.list_error(&d))?;
            for record in &page.records {
                let Some(key) = record.text("Key").map(|k| url_decoded(&k)) else {
                    continue;
                };
                out.push((key, vec![record.version(None, true)]));
            }
            match page.field("NextContinuationToken") {
                Some(t) if page.truncated() && Some(&t) != token.as_ref() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The versions of one object, oldest first (empty when it is not there).
    async fn versions_of(&self, name: &str) -> Result<Vec<Version>, RemoteError> {
        let key = self.key(name).to_string();
        Ok(self
            .objects(&key)
            .await?
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .unwrap_or_default())
    }

    fn list_error(&self, detail: &str) -> RemoteError {
        classify_text(&self.settings.url, "cannot list", detail)
    }

    fn status_error(&self, status: reqwest::StatusCode, body: &[u8]) -> RemoteError {
        let code = xml_code(body).unwrap_or_default();
        classify_text(
            &self.settings.url,
            "cannot list",
            &format!("the store answered {status} {code}"),
        )
    }

    /// The URL of the bucket itself, with a query.
    fn bucket_url(&self, query: &[(&str, String)]) -> String {
        let base = match &self.endpoint {
            Some(e) => format!("{e}/{}", self.settings.bucket),
            None => format!(
                "https://{}.s3.{}.amazonaws.com/",
                self.settings.bucket, self.region
            ),
        };
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    (*k).to_owned()
                } else {
                    format!("{k}={}", percent_encoding::utf8_percent_encode(v, QUERY))
                }
            })
            .collect();
        format!("{base}?{}", q.join("&"))
    }

    /// The signatures of `archives` (as a listing gave them), fetched
    /// concurrently, each the version cofre wrote; `None` where there is
    /// none or it is larger than a signature can be.
    pub fn signatures(
        &self,
        archives: &[&RemoteArchive],
    ) -> Result<Vec<Option<String>>, RemoteError> {
        self.fetch_signatures(
            archives
                .iter()
                .map(|a| (a.name.as_str(), &a.sig_versions[..])),
        )
    }

    /// The signature of `name` that cofre wrote, when the bucket has one
    /// (at most 64 KiB read).
    pub fn signature(&self, name: &str) -> Result<Option<String>, RemoteError> {
        self.rt.block_on(async {
            let versions = self.versions_of(&format!("{name}{SIG_SUFFIX}")).await?;
            let Some(first) = versions.first() else {
                return Ok(None);
            };
            self.read_signature(name, Some(first)).await
        })
    }

    /// The text of the signature of `name` at the listed `version`
    /// (cofre's), read once per process ([`SIGNATURES_READ`]).
    async fn read_signature(
        &self,
        name: &str,
        version: Option<&Version>,
    ) -> Result<Option<String>, RemoteError> {
        let key = self.key(&format!("{name}{SIG_SUFFIX}"));
        let memo = version.filter(|v| !v.e_tag.is_empty()).map(|v| {
            (
                format!("{}/{key}", self.settings.url),
                v.id.clone(),
                v.e_tag.clone(),
            )
        });
        let read = |m: &(String, Option<String>, String)| {
            let read = SIGNATURES_READ.lock().unwrap_or_else(|e| e.into_inner());
            read.get(m).cloned()
        };
        if let Some(text) = memo.as_ref().and_then(read) {
            return Ok(Some(text));
        }
        let opts = object_store::GetOptions {
            version: version.and_then(|v| v.id.clone()),
            ..Default::default()
        };
        let text = match self.store.get_opts(&key, opts).await {
            Ok(got) => {
                if got.meta.size > MAX_SIG as u64 {
                    return Ok(None);
                }
                let bytes = got.bytes().await.map_err(|e| self.err("cannot read", &e))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("cannot read", &e)),
        };
        if let Some(m) = memo {
            let mut read = SIGNATURES_READ.lock().unwrap_or_else(|e| e.into_inner());
            if read.len() >= SIGNATURES_READ_MAX {
                read.clear();
            }
            read.insert(m, text.clone());
        }
        Ok(Some(text))
    }

    /// A `Read` of the archive `name` (the version cofre wrote), streamed
    /// from the bucket through a bounded pipe.
    pub fn open(&self, name: &str) -> Result<ChannelReader, RemoteError> {
        let key = self.key(name);
        let store = Arc::clone(&self.store);
        let url = self.settings.url.clone();
        let not_found = || RemoteError::NotFound {
            url: url.clone(),
            name: name.to_owned(),
        };
        let got = self.rt.block_on(async {
            let versions = self.versions_of(name).await?;
            let first = versions.first().ok_or_else(not_found)?;
            if !first.latest {
                tracing::warn!(
                    "{name} in {url} was written over after cofre uploaded it; reading the version \
                     cofre wrote"
                );
            }
            let opts = object_store::GetOptions {
                version: first.id.clone(),
                ..Default::default()
            };
            store.get_opts(&key, opts).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => not_found(),
                other => classify(&url, "cannot read", &other),
            })
        })?;
        let (feeder, reader) = pipe::channel();
        let rt = Arc::clone(&self.rt);
        self.rt.spawn(async move {
            let _keep_runtime = rt;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        if !feeder.send(bytes.to_vec()) {
                            return;
                        }
                    }
                    Err(e) => {
                        feeder.fail(io::Error::other(crate::secret::scrub(&e.to_string())));
                        return;
                    }
                }
            }
            feeder.finish();
        });
        Ok(reader)
    }

    /// Makes sure the bucket holds cofre's copy of the archive at `path`
    /// and of its signature: what is there is compared with the local
    /// files (`known` is what an earlier upload recorded; without it the
    /// sizes, then the ETag, then the bytes are compared), what is missing
    /// is sent, and a key that holds something cofre did not write is
    /// cleared first where the store allows. After sending, the current
    /// version must be what was sent. `listed` is the archive as a listing
    /// just gave it (`None`: not in the bucket). `cancel` stops it
    /// between parts.
    pub fn upload(
        &self,
        path: &Path,
        name: &str,
        listed: Option<&RemoteArchive>,
        known: Option<&Copies>,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<Uploaded, RemoteError> {
        self.rt
            .block_on(self.upload_async(path, name, listed, known, cancel))
    }

    async fn upload_async(
        &self,
        path: &Path,
        name: &str,
        listed: Option<&RemoteArchive>,
        known: Option<&Copies>,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<Uploaded, RemoteError> {
        let sig_path = crate::sign::sig_path(path);
        let sig_name = format!("{name}{SIG_SUFFIX}");
        // A listing attaches a signature to its archive; a name the
        // listing did not show may still hold a signature someone planted.
        let (versions, sig_versions) = match listed {
            Some(a) => (a.versions.clone(), a.sig_versions.clone()),
            None => (
                self.versions_of(name).await?,
                self.versions_of(&sig_name).await?,
            ),
        };
        let mut sent = false;
        let mut overwritten = false;
        let mut copies = Vec::new();
        for (object, local, versions, known) in [
            (name, path, versions, known.map(|k| &k.archive)),
            (
                sig_name.as_str(),
                sig_path.as_path(),
                sig_versions,
                known.map(|k| &k.signature),
            ),
        ] {
            let mut local_file = LocalFile::open(local)?;
            let mut ours = None;
            for v in &versions {
                let recorded = known.is_some_and(|k| k.e_tag == v.e_tag && k.version == v.id);
                if recorded || self.same_as_local(object, v, &mut local_file).await? {
                    ours = Some(v.clone());
                    break;
                }
            }
            let copy = match ours {
                Some(v) => {
                    overwritten |= !v.latest;
                    Copy {
                        e_tag: v.e_tag,
                        version: v.id,
                    }
                }
                None => {
                    if !versions.is_empty() {
                        tracing::warn!(
                            "{} holds a {object} that cofre did not write; replacing it",
                            self.settings.url
                        );
                        self.clear(object, &versions).await?;
                    }
                    let key = self.key(object);
                    let mode = if versions.iter().any(|v| v.id.is_none()) {
                        // A store without versions: the foreign object is
                        // written over (it could not be deleted first
                        // without a moment with nothing there).
                        PutMode::Overwrite
                    } else {
                        PutMode::Create
                    };
                    let put = self.put_file(object, &mut local_file, mode, cancel).await?;
                    self.lock(&key, name).await?;
                    sent = true;
                    let copy = Copy {
                        e_tag: unquote(put.e_tag.as_deref().unwrap_or_default()),
                        version: put.version,
                    };
                    self.check_current(object, &copy).await?;
                    copy
                }
            };
            copies.push(copy);
        }
        let signature = copies.pop().expect("two objects");
        let archive = copies.pop().expect("two objects");
        Ok(Uploaded {
            sent,
            copies: Copies { archive, signature },
            overwritten,
        })
    }

    /// Whether the version `v` of `object` is the local file: same size,
    /// then the same ETag as cofre's upload gives, else the same bytes.
    async fn same_as_local(
        &self,
        object: &str,
        v: &Version,
        local: &mut LocalFile,
    ) -> Result<bool, RemoteError> {
        if v.size != local.size {
            return Ok(false);
        }
        if local.e_tag()? == v.e_tag {
            return Ok(true);
        }
        // Another ETag scheme (encryption with KMS, some stores): the bytes.
        let opts = object_store::GetOptions {
            version: v.id.clone(),
            ..Default::default()
        };
        let got = match self.store.get_opts(&self.key(object), opts).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.err("cannot read", &e)),
        };
        let path = local.path.clone();
        let file = local.rewound()?;
        let mut stream = got.into_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.err("cannot read", &e))?;
            buf.resize(chunk.len(), 0);
            if file.read_exact(&mut buf).is_err() || buf[..] != chunk[..] {
                return Ok(false);
            }
        }
        Ok(file.read(&mut [0u8; 1]).map_err(|e| io_local(&path, e))? == 0)
    }

    /// Deletes every version of `object` (something cofre did not write).
    async fn clear(&self, object: &str, versions: &[Version]) -> Result<(), RemoteError> {
        for v in versions {
            let Some(id) = &v.id else { continue };
            match self.delete_version(&self.key(object), id).await? {
                Deleted::Yes => {}
                Deleted::Locked(why) => {
                    return Err(RemoteError::Foreign {
                        url: self.settings.url.clone(),
                        name: object.to_owned(),
                        detail: why,
                    });
                }
            }
        }
        Ok(())
    }

    /// After an upload: the current version of `object` must be the one
    /// sent.
    async fn check_current(&self, object: &str, sent: &Copy) -> Result<(), RemoteError> {
        let meta = self
            .store
            .head(&self.key(object))
            .await
            .map_err(|e| self.err("cannot inspect", &e))?;
        let current = unquote(meta.e_tag.as_deref().unwrap_or_default());
        let same_version = match (&sent.version, &meta.version) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if current != sent.e_tag || !same_version {
            return Err(RemoteError::NotWhatWasSent {
                url: self.settings.url.clone(),
                name: object.to_owned(),
            });
        }
        Ok(())
    }

    /// One request, created only if nothing has the name (or written over,
    /// with `PutMode::Overwrite`).
    async fn put_small(
        &self,
        object: &str,
        data: Vec<u8>,
        mode: PutMode,
    ) -> Result<object_store::PutResult, RemoteError> {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let key = self.key(object);
        match self
            .store
            .put_opts(&key, PutPayload::from(data), opts)
            .await
        {
            Ok(r) => Ok(r),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(RemoteError::Foreign {
                url: self.settings.url.clone(),
                name: object.to_owned(),
                detail: "something else was written there at the same moment".into(),
            }),
            Err(e) => Err(self.err("cannot upload to", &e)),
        }
    }

    /// Streams a file up: in one conditional request when small, else in
    /// parts, at most `BACKUP_REMOTE_BANDWIDTH` bytes per second.
    async fn put_file(
        &self,
        object: &str,
        local: &mut LocalFile,
        mode: PutMode,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<object_store::PutResult, RemoteError> {
        let size = local.size;
        let path = local.path.clone();
        let local_err = |e| io_local(&path, e);
        let file = local.rewound()?;
        let mut pace = Pace::new(self.settings.bandwidth);
        if size < PART as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).map_err(local_err)?;
            pace.spend(data.len()).await;
            return self.put_small(object, data, mode).await;
        }
        let upload = self
            .store
            .put_multipart(&self.key(object))
            .await
            .map_err(|e| self.err("cannot start uploading to", &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        let result: Result<(), RemoteError> = async {
            loop {
                if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(RemoteError::Cancelled);
                }
                let n = file.read(&mut buf).map_err(local_err)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(IN_FLIGHT)
                    .await
                    .map_err(|e| self.err("cannot upload to", &e))?;
                pace.spend(n).await;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match result {
            Ok(()) => {
                let put = writer
                    .finish()
                    .await
                    .map_err(|e| self.err("cannot finish uploading to", &e))?;
                let secs = pace.start.elapsed().as_secs_f64();
                tracing::info!(
                    bytes = size,
                    seconds = format!("{secs:.2}"),
                    bytes_per_second = (size as f64 / secs.max(1e-9)) as u64,
                    "sent {} in {secs:.1}s ({}/s)",
                    crate::format::human(size),
                    crate::format::human((size as f64 / secs.max(1e-9)) as u64)
                );
                Ok(put)
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// When the lock of an archive made at `time` ends: the day retention
    /// would delete it.
    pub fn retain_until(&self, time: DateTime<Utc>) -> DateTime<Utc> {
        time + chrono::Duration::days(i64::from(self.settings.retention.days))
    }

    /// Sets Object Lock retention on `key` (the archive `name`'s), when on.
    async fn lock(&self, key: &ObjectPath, name: &str) -> Result<(), RemoteError> {
        let time = ArchiveName::parse(name).map_or_else(Utc::now, |p| p.time);
        self.set_retention(key, None, self.retain_until(time)).await
    }

    /// Extends the lock of the archive `name` and of its signature (the
    /// versions cofre wrote) to `until`, when locks are on.
    pub fn extend_lock(&self, name: &str, until: DateTime<Utc>) -> Result<(), RemoteError> {
        self.rt.block_on(async {
            for object in [name.to_owned(), format!("{name}{SIG_SUFFIX}")] {
                let versions = self.versions_of(&object).await?;
                let Some(first) = versions.first() else {
                    continue;
                };
                let key = self.key(&object);
                self.set_retention(&key, first.id.as_deref(), until).await?;
            }
            Ok(())
        })
    }

    /// Puts Object Lock retention on `key` (one version of it, or the
    /// current one) until `until` (at least a minute from now).
    async fn set_retention(
        &self,
        key: &ObjectPath,
        version: Option<&str>,
        until: DateTime<Utc>,
    ) -> Result<(), RemoteError> {
        let mode = match self.settings.lock {
            LockMode::Off => return Ok(()),
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        };
        let until = until
            .max(Utc::now() + chrono::Duration::minutes(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>"
        );
        use base64::Engine;
        use md5::Digest;
        let md5 =
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body.as_bytes()));
        let url = match version {
            Some(v) => format!(
                "{}?retention&versionId={}",
                self.object_url(key),
                percent_encoding::utf8_percent_encode(v, QUERY)
            ),
            None => format!("{}?retention", self.object_url(key)),
        };
        let fail = |detail: String| RemoteError::Lock {
            url: self.settings.url.clone(),
            name: key.to_string(),
            detail,
        };
        let (status, _) = self
            .request(
                reqwest::Method::PUT,
                &url,
                body.into_bytes(),
                &[("content-md5", md5)],
            )
            .await
            .map_err(fail)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(fail(format!("the store answered {status}")))
        }
    }

    /// Deletes the archive and its signature, every version of each (in a
    /// versioned bucket a plain delete only hides an object, and a version
    /// written over cofre's would otherwise come back as the archive),
    /// which a lock refuses until its date.
    pub fn delete(&self, archive: &RemoteArchive) -> Result<Deleted, RemoteError> {
        self.delete_versions(&archive.name, &archive.versions, &archive.sig_versions)
    }

    /// The same for another object cofre wrote (an oplog slice).
    pub fn delete_object(&self, object: &RemoteObject) -> Result<Deleted, RemoteError> {
        self.delete_versions(&object.name, &object.versions, &object.sig_versions)
    }

    fn delete_versions(
        &self,
        name: &str,
        versions: &[Version],
        sig_versions: &[Version],
    ) -> Result<Deleted, RemoteError> {
        self.rt.block_on(async {
            let sig_name = format!("{name}{SIG_SUFFIX}");
            for (object, versions) in [(name, versions), (sig_name.as_str(), sig_versions)] {
                let key = self.key(object);
                for v in versions.iter() {
                    let outcome = match &v.id {
                        Some(id) => self.delete_version(&key, id).await?,
                        None => match self.store.delete(&key).await {
                            Ok(()) => Deleted::Yes,
                            Err(object_store::Error::NotFound { .. }) => Deleted::Yes,
                            Err(e) => {
                                let err = self.err("cannot delete from", &e);
                                if matches!(err, RemoteError::Denied { .. }) {
                                    Deleted::Locked(err.to_string())
                                } else {
                                    return Err(err);
                                }
                            }
                        },
                    };
                    if let Deleted::Locked(why) = outcome {
                        return Ok(Deleted::Locked(why));
                    }
                }
            }
            Ok(Deleted::Yes)
        })
    }

    /// Deletes one version of an object.
    async fn delete_version(&self, key: &ObjectPath, id: &str) -> Result<Deleted, RemoteError> {
        let url = format!(
            "{}?versionId={}",
            self.object_url(key),
            percent_encoding::utf8_percent_encode(id, QUERY)
        );
        let (status, _) = self
            .request(reqwest::Method::DELETE, &url, Vec::new(), &[])
            .await
            .map_err(|detail| RemoteError::Other {
                what: "cannot delete from",
                url: self.settings.url.clone(),
                detail,
            })?;
        if status == reqwest::StatusCode::FORBIDDEN {
            return Ok(Deleted::Locked(format!("the store refused ({status})")));
        }
        if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
            return Err(RemoteError::Other {
                what: "cannot delete from",
                url: self.settings.url.clone(),
                detail: format!("the store answered {status}"),
            });
        }
        Ok(Deleted::Yes)
    }

    /// The URL of an object, as the store's client addresses it.
    fn object_url(&self, key: &ObjectPath) -> String {
        let encoded: Vec<String> = key
            .parts()
            .map(|p| {
                percent_encoding::utf8_percent_encode(
                    p.as_ref(),
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string()
            })
            .collect();
        match &self.endpoint {
            Some(e) => format!("{e}/{}/{}", self.settings.bucket, encoded.join("/")),
            None => format!(
                "https://{}.s3.{}.amazonaws.com/{}",
                self.settings.bucket,
                self.region,
                encoded.join("/")
            ),
        }
    }

    /// Sends one request signed with SigV4 by object_store's authorizer,
    /// with the same credentials the store uses. Returns the status and
    /// the body (at most [`MAX_PAGE`] bytes).
    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
        let credential = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| crate::secret::scrub(&e.to_string()))?;
        let mut request = http::Request::builder().method(method.as_str()).uri(url);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let mut request = request
            .body(object_store::client::HttpRequestBody::from(body.clone()))
            .map_err(|e| e.to_string())?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| crate::secret::scrub(&e.to_string()))?;
        let mut outgoing = self.http.request(method, url).body(body);
        for (k, v) in request.headers() {
            outgoing = outgoing.header(k.as_str(), v.as_bytes());
        }
        let mut response = outgoing
            .send()
            .await
            .map_err(|e| crate::secret::scrub(&e.to_string()))?;
        let status = response.status();
        let mut data = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| crate::secret::scrub(&e.to_string()))?
        {
            if data.len() + chunk.len() > MAX_PAGE {
                return Err(format!(
                    "the store's answer is larger than {MAX_PAGE} bytes"
                ));
            }
            data.extend_from_slice(&chunk);
        }
        Ok((status, data))
    }
}

/// What is known of cofre's copy of one object in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Copy {
    /// Its ETag, without quotes.
    pub e_tag: String,
    /// Its version id, in a versioned bucket.
    pub version: Option<String>,
}

/// cofre's copies of an archive and its signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Copies {
    /// The archive.
    pub archive: Copy,
    /// Its signature.
    pub signature: Copy,
}

/// What [`Remote::upload`] did.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Whether anything was sent.
    pub sent: bool,
    /// cofre's copies, as the bucket holds them now.
    pub copies: Copies,
    /// The current version of the archive or its signature is not cofre's:
    /// someone wrote over it (reads still take cofre's).
    pub overwritten: bool,
}

/// A local file being uploaded or compared; its upload ETag is computed
/// once, when first asked for.
struct LocalFile {
    path: std::path::PathBuf,
    file: std::fs::File,
    size: u64,
    e_tag: Option<String>,
}

impl LocalFile {
    fn open(path: &Path) -> Result<LocalFile, RemoteError> {
        let err = |source| RemoteError::Local {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(LocalFile {
            path: path.to_path_buf(),
            file,
            size,
            e_tag: None,
        })
    }

    fn err(&self, source: io::Error) -> RemoteError {
        RemoteError::Local {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The file, read from its start.
    fn rewound(&mut self) -> Result<&mut std::fs::File, RemoteError> {
        use std::io::Seek;
        self.file
            .seek(io::SeekFrom::Start(0))
            .map_err(|e| self.err(e))?;
        Ok(&mut self.file)
    }

    /// The ETag S3 gives the file as cofre uploads it: the MD5 of a single
    /// request, or for parts of [`PART`] bytes the MD5 of their MD5s and
    /// the number of parts.
    fn e_tag(&mut self) -> Result<String, RemoteError> {
        if let Some(t) = &self.e_tag {
            return Ok(t.clone());
        }
        use md5::Digest;
        let size = self.size;
        let path = self.path.clone();
        let file = self.rewound()?;
        let mut parts: Vec<u8> = Vec::new();
        let mut count = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut part = md5::Md5::new();
        let mut in_part = 0usize;
        loop {
            let n = file.read(&mut buf).map_err(|e| io_local(&path, e))?;
            if n == 0 {
                break;
            }
            let mut chunk = &buf[..n];
            while !chunk.is_empty() {
                let take = chunk.len().min(PART - in_part);
                part.update(&chunk[..take]);
                in_part += take;
                chunk = &chunk[take..];
                if in_part == PART {
                    parts.extend_from_slice(&part.finalize_reset());
                    count += 1;
                    in_part = 0;
                }
            }
        }
        let tag = if size < PART as u64 {
            crate::format::hex(&part.finalize())
        } else {
            if in_part > 0 {
                parts.extend_from_slice(&part.finalize());
                count += 1;
            }
            format!("{}-{count}", crate::format::hex(&md5::Md5::digest(&parts)))
        };
        self.e_tag = Some(tag.clone());
        Ok(tag)
    }
}

fn io_local(path: &Path, source: io::Error) -> RemoteError {
    RemoteError::Local {
        path: path.display().to_string(),
        source,
    }
}

/// Query values as SigV4 wants them: everything but the unreserved
/// characters escaped.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a version listing did not give a listing.
enum ListFailure {
    /// The store has no version listing.
    Unsupported,
    /// Any other failure.
    Remote(RemoteError),
}

/// An ETag without its quotes.
fn unquote(t: &str) -> String {
    t.trim().trim_matches('"').to_owned()
}

/// A key from a listing made with `encoding-type=url`.
fn url_decoded(k: &str) -> String {
    percent_encoding::percent_decode_str(&k.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The text of the first element called `name` among `pairs`.
fn text_of(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// One element of a listing (`Contents`, `Version`, `DeleteMarker`) and
/// the text of its direct children.
struct Record {
    name: String,
    children: Vec<(String, String)>,
}

impl Record {
    fn text(&self, child: &str) -> Option<String> {
        text_of(&self.children, child)
    }

    /// The object version a listing's record describes (its ETag and
    /// size; a size that does not parse counts as 0).
    fn version(&self, id: Option<String>, latest: bool) -> Version {
        Version {
            id,
            e_tag: unquote(&self.text("ETag").unwrap_or_default()),
            size: self.text("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
            latest,
        }
    }
}

/// A page of a listing: its records and its top-level fields.
struct Page {
    records: Vec<Record>,
    fields: Vec<(String, String)>,
}

impl Page {
    fn field(&self, name: &str) -> Option<String> {
        text_of(&self.fields, name)
    }

    fn truncated(&self) -> bool {
        self.field("IsTruncated").is_some_and(|t| t == "true")
    }
}

/// Parses a listing's XML: the elements named in `records` under the root
/// (with their direct children's text), and the root's other text fields.
/// Written on quick-xml's event reader rather than its serde support, which
/// does not take the interleaved `Version` and `DeleteMarker` elements of a
/// version listing.
fn parse_listing(xml: &[u8], records: &[&str]) -> Result<Page, String> {
    use quick_xml::events::Event;
    let text = std::str::from_utf8(xml).map_err(|_| "the listing is not UTF-8".to_owned())?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut page = Page {
        records: Vec::new(),
        fields: Vec::new(),
    };
    let mut path: Vec<String> = Vec::new();
    let mut current: Option<Record> = None;
    let mut raw = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("the listing is not well-formed XML ({e})"))?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.len() == 1 && records.contains(&name.as_str()) {
                    current = Some(Record {
                        name: name.clone(),
                        children: Vec::new(),
                    });
                }
                path.push(name);
                raw.clear();
            }
            Event::Text(t) => raw.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::GeneralRef(r) => {
                raw.push('&');
                raw.push_str(&r.decode().map_err(|e| e.to_string())?);
                raw.push(';');
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                let value = quick_xml::escape::unescape(&raw)
                    .map(|v| v.into_owned())
                    .unwrap_or_else(|_| raw.clone());
                match (path.len(), current.as_mut()) {
                    (2, Some(rec)) => rec.children.push((name, value)),
                    (1, Some(_)) => page.records.extend(current.take()),
                    (1, None) => page.fields.push((name, value)),
                    _ => {}
                }
                raw.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(page)
}

/// The `<Code>` of an S3 error document.
fn xml_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    Some(text[start..end].to_owned())
}

fn classify_text(url: &str, what: &'static str, detail: &str) -> RemoteError {
    let detail = crate::secret::scrub(detail);
    let low = detail.to_ascii_lowercase();
    let url = url.to_owned();
    if low.contains("nosuchbucket") || low.contains("bucket does not exist") {
        RemoteError::NoBucket { url, detail }
    } else if low.contains("accessdenied")
        || low.contains("invalidaccesskeyid")
        || low.contains("signaturedoesnotmatch")
        || low.contains("403")
    {
        RemoteError::Denied { url, detail }
    } else if low.contains("connect")
        || low.contains("timed out")
        || low.contains("error sending request")
        || low.contains("dns")
    {
        RemoteError::Unreachable { url, detail }
    } else {
        RemoteError::Other { what, url, detail }
    }
}

/// Holds an upload to a rate: after `n` bytes, it waits until the time
/// those bytes may take at the cap has passed since the start.
struct Pace {
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl Pace {
    fn new(rate: Option<u64>) -> Pace {
        Pace {
            rate,
            start: Instant::now(),
            sent: 0,
        }
    }

    async fn spend(&mut self, n: usize) {
        self.sent += n as u64;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pace_holds_the_rate() {
        let mut pace = Pace::new(Some(1 << 20));
        let t = tokio::time::Instant::now();
        for _ in 0..10 {
            pace.spend(512 << 10).await;
        }
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(4900) && took <= Duration::from_millis(5100),
            "{took:?}"
        );
    }
}
