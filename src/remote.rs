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
//! Everything a listing says is checked before use: only keys that are
//! archive names (or their signatures) directly under the prefix count.

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
use crate::config::{LockMode, RemoteSettings};
use crate::sign::SIG_SUFFIX;
use crate::store::ArchiveName;

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
    /// An object of that name exists already (and is not this archive).
    #[error("{url} already holds a different {name}; refusing to overwrite it")]
    Exists {
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

/// One archive in the bucket.
#[derive(Debug, Clone)]
pub struct RemoteArchive {
    /// Its name.
    pub name: String,
    /// What the name says.
    pub parsed: ArchiveName,
    /// Its size.
    pub size: u64,
    /// Whether its signature is there too.
    pub signed: bool,
}

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
    settings: RemoteSettings,
    endpoint: Option<String>,
    region: String,
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
    let detail = crate::secret::scrub(&e.to_string());
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

impl Remote {
    /// Connects (lazily: nothing is sent until the first call).
    pub fn connect(settings: &RemoteSettings) -> Result<Remote, RemoteError> {
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
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| setup(e.to_string()))?;
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

    /// The archives in the bucket, newest first. Only keys that are archive
    /// names directly under the prefix count; anything else is ignored.
    pub fn list(&self) -> Result<Vec<RemoteArchive>, RemoteError> {
        self.rt.block_on(self.list_async())
    }

    async fn list_async(&self) -> Result<Vec<RemoteArchive>, RemoteError> {
        let prefix = (!self.settings.prefix.is_empty())
            .then(|| ObjectPath::from(self.settings.prefix.as_str()));
        let mut objects = self.store.list(prefix.as_ref());
        let mut archives = Vec::new();
        let mut signatures = std::collections::HashSet::new();
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| self.err("cannot list", &e))?;
            let key = meta.location.as_ref();
            let rest = if self.settings.prefix.is_empty() {
                key
            } else {
                match key.strip_prefix(&format!("{}/", self.settings.prefix)) {
                    Some(r) => r,
                    None => continue,
                }
            };
            if rest.contains('/') {
                continue;
            }
            if let Some(archive) = rest.strip_suffix(SIG_SUFFIX) {
                if ArchiveName::parse(archive).is_some() {
                    signatures.insert(archive.to_owned());
                }
                continue;
            }
            if let Some(parsed) = ArchiveName::parse(rest) {
                archives.push(RemoteArchive {
                    name: rest.to_owned(),
                    parsed,
                    size: meta.size,
                    signed: false,
                });
            }
        }
        for a in &mut archives {
            a.signed = signatures.contains(&a.name);
        }
        archives.sort_by(|a, b| b.parsed.time.cmp(&a.parsed.time).then(b.name.cmp(&a.name)));
        Ok(archives)
    }

    /// The signature of `name`, when the bucket has one (at most 64 KiB read).
    pub fn signature(&self, name: &str) -> Result<Option<String>, RemoteError> {
        self.rt.block_on(async {
            let key = self.key(&format!("{name}{SIG_SUFFIX}"));
            match self.store.get(&key).await {
                Ok(got) => {
                    if got.meta.size > MAX_SIG as u64 {
                        return Ok(None);
                    }
                    let bytes = got.bytes().await.map_err(|e| self.err("cannot read", &e))?;
                    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("cannot read", &e)),
            }
        })
    }

    /// A `Read` of the archive `name`, streamed from the bucket through a
    /// bounded pipe.
    pub fn open(&self, name: &str) -> Result<ChannelReader, RemoteError> {
        let key = self.key(name);
        let store = Arc::clone(&self.store);
        let url = self.settings.url.clone();
        let got = self.rt.block_on(store.get(&key)).map_err(|e| match e {
            object_store::Error::NotFound { .. } => RemoteError::NotFound {
                url: url.clone(),
                name: name.to_owned(),
            },
            other => classify(&url, "cannot read", &other),
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

    /// Uploads the archive at `path` and its signature beside it, unless
    /// the bucket already has this archive (same size) and its signature.
    /// Returns whether anything was sent. `cancel` stops it between parts.
    pub fn upload(
        &self,
        path: &Path,
        name: &str,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<bool, RemoteError> {
        self.rt.block_on(self.upload_async(path, name, cancel))
    }

    async fn upload_async(
        &self,
        path: &Path,
        name: &str,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<bool, RemoteError> {
        let local = |source| RemoteError::Local {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(local)?;
        let size = file.metadata().map_err(local)?.len();
        let sig_path = crate::sign::sig_path(path);
        let sig = std::fs::read(&sig_path).map_err(|source| RemoteError::Local {
            path: sig_path.display().to_string(),
            source,
        })?;
        let key = self.key(name);
        let sig_key = self.key(&format!("{name}{SIG_SUFFIX}"));
        let mut sent = false;
        match self.store.head(&key).await {
            Ok(meta) if meta.size == size => {}
            Ok(_) => {
                return Err(RemoteError::Exists {
                    url: self.settings.url.clone(),
                    name: name.to_owned(),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.put_file(&key, &mut file, size, path, cancel).await?;
                self.lock(&key, name).await?;
                sent = true;
            }
            Err(e) => return Err(self.err("cannot inspect", &e)),
        }
        match self.store.head(&sig_key).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                self.put_small(&sig_key, sig).await?;
                self.lock(&sig_key, name).await?;
                sent = true;
            }
            Err(e) => return Err(self.err("cannot inspect", &e)),
        }
        Ok(sent)
    }

    /// One request, created only if nothing has the name.
    async fn put_small(&self, key: &ObjectPath, data: Vec<u8>) -> Result<(), RemoteError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.store.put_opts(key, PutPayload::from(data), opts).await {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(RemoteError::Exists {
                url: self.settings.url.clone(),
                name: key.to_string(),
            }),
            Err(e) => Err(self.err("cannot upload to", &e)),
        }
    }

    /// Streams a file up: in one conditional request when small, else in
    /// parts, at most `BACKUP_REMOTE_BANDWIDTH` bytes per second.
    async fn put_file(
        &self,
        key: &ObjectPath,
        file: &mut std::fs::File,
        size: u64,
        path: &Path,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<(), RemoteError> {
        let local = |source| RemoteError::Local {
            path: path.display().to_string(),
            source,
        };
        let mut pace = Pace::new(self.settings.bandwidth);
        if size < PART as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).map_err(local)?;
            pace.spend(data.len()).await;
            return self.put_small(key, data).await;
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| self.err("cannot start uploading to", &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        let result: Result<(), RemoteError> = async {
            loop {
                if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(RemoteError::Cancelled);
                }
                let n = file.read(&mut buf).map_err(local)?;
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
                writer
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
                Ok(())
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
        let mode = match self.settings.lock {
            LockMode::Off => return Ok(()),
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        };
        let time = ArchiveName::parse(name).map_or_else(Utc::now, |p| p.time);
        let until = self
            .retain_until(time)
            .max(Utc::now() + chrono::Duration::minutes(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>"
        );
        use base64::Engine;
        use md5::Digest;
        let md5 =
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body.as_bytes()));
        let url = format!("{}?retention", self.object_url(key));
        let fail = |detail: String| RemoteError::Lock {
            url: self.settings.url.clone(),
            name: key.to_string(),
            detail,
        };
        let status = self
            .signed(
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

    /// Deletes the archive `name` and its signature. In a versioned bucket
    /// the current version itself is deleted (a plain delete would only
    /// hide it), which a lock refuses until its date.
    pub fn delete(&self, name: &str) -> Result<Deleted, RemoteError> {
        self.rt.block_on(async {
            for key in [self.key(name), self.key(&format!("{name}{SIG_SUFFIX}"))] {
                let meta = match self.store.head(&key).await {
                    Ok(m) => m,
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(self.err("cannot inspect", &e)),
                };
                match meta.version {
                    Some(version) => {
                        let url = format!(
                            "{}?versionId={}",
                            self.object_url(&key),
                            percent_encoding::utf8_percent_encode(
                                &version,
                                percent_encoding::NON_ALPHANUMERIC
                            )
                        );
                        let status = self
                            .signed(reqwest::Method::DELETE, &url, Vec::new(), &[])
                            .await
                            .map_err(|detail| RemoteError::Other {
                                what: "cannot delete from",
                                url: self.settings.url.clone(),
                                detail,
                            })?;
                        if status == reqwest::StatusCode::FORBIDDEN {
                            return Ok(Deleted::Locked(format!("the store refused ({status})")));
                        }
                        if !status.is_success() {
                            return Err(RemoteError::Other {
                                what: "cannot delete from",
                                url: self.settings.url.clone(),
                                detail: format!("the store answered {status}"),
                            });
                        }
                    }
                    None => match self.store.delete(&key).await {
                        Ok(()) => {}
                        Err(e) => {
                            let err = self.err("cannot delete from", &e);
                            if matches!(err, RemoteError::Denied { .. }) {
                                return Ok(Deleted::Locked(err.to_string()));
                            }
                            return Err(err);
                        }
                    },
                }
            }
            Ok(Deleted::Yes)
        })
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
    /// with the same credentials the store uses. Returns the status.
    async fn signed(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<reqwest::StatusCode, String> {
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
        let response = outgoing
            .send()
            .await
            .map_err(|e| crate::secret::scrub(&e.to_string()))?;
        Ok(response.status())
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
