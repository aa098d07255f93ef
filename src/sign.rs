//! Authenticity: every archive is signed, and only archives signed by a
//! trusted key are read without being told otherwise.
//!
//! age says nothing about who wrote a file: anyone who knows the public key
//! can encrypt to it. So cofre signs what it writes with an Ed25519 key of
//! its own, in minisign's format, in a file beside the archive
//! (`ARCHIVE.minisig`), which anyone can check without cofre:
//! `minisign -Vm ARCHIVE -P KEY`. The key is made on first use beside the age
//! identity (`signing.key`, 0600, and `signing.pub`).
//!
//! The signed ("trusted") comment names the archive file, so a signed
//! archive renamed to pass for a newer one is refused, and what it is a
//! backup of (the host and the project directory, an [`Origin`]), so an
//! archive of another project that shares the key is known for what it is
//! wherever it is copied; the comment line beside it says how many bytes
//! the archive restores, so a restore can check free space before it
//! writes. The signature is computed on its own thread from the bytes as
//! they are written.
//!
//! Trusted keys: this installation's own, `# cofre signing key: RW...`
//! lines in the identity files used to decrypt (cofre writes one into the
//! identity file it makes, so that file alone is enough for a disaster
//! recovery), and `BACKUP_TRUSTED_KEYS`.
//!
//! The `minisign` crate makes keys and signs; `minisign-verify` checks a
//! signature against a stream, on its own thread, fed with the archive's
//! bytes as they are read for restoring (so the bytes checked are the bytes
//! restored).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use minisign_verify::{PublicKey, Signature};

/// The suffix of signature files.
pub const SIG_SUFFIX: &str = ".minisig";
/// The prefix of the identity-file comment line that carries a trusted key.
pub const IDENTITY_LINE: &str = "# cofre signing key: ";
/// The largest signature file read (they are a few hundred bytes).
const MAX_SIG_FILE: u64 = 64 << 10;

/// Signature problems, each with what to check.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signing key cannot be read or made.
    #[error(
        "cannot use the signing key {path}: {why}; check BACKUP_SIGNING_KEY_FILE and its directory"
    )]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A trusted key does not parse.
    #[error(
        "invalid trusted key {value:?} in {origin}: expected a minisign public key (RW...) or a file holding one"
    )]
    BadTrustedKey {
        /// Where it came from.
        origin: String,
        /// The value.
        value: String,
    },
    /// No signature beside the archive.
    #[error(
        "{archive} is not signed (no {archive}.minisig beside it); \
         restore it only if you know where it came from, with --allow-unsigned"
    )]
    Missing {
        /// The archive's name.
        archive: String,
    },
    /// The signature file is damaged.
    #[error(
        "the signature of {archive} cannot be read ({why}); \
         the signature file is damaged; restore it anyway only with --allow-unsigned"
    )]
    Broken {
        /// The archive's name.
        archive: String,
        /// Why.
        why: String,
    },
    /// Signed by a key that is not trusted.
    #[error(
        "{archive} is signed by key {key_id}, which is not trusted here; if you trust it, \
         add its public key to BACKUP_TRUSTED_KEYS (or restore once with --allow-unsigned)"
    )]
    Untrusted {
        /// The archive's name.
        archive: String,
        /// The signing key's id.
        key_id: String,
    },
    /// The signature is for another file name.
    #[error(
        "the signature beside {archive} was made for {signed_for}: the archive was renamed \
         or replaced; refusing it (use the original name, or --allow-unsigned)"
    )]
    OtherFile {
        /// The archive's name.
        archive: String,
        /// The name in the signed comment.
        signed_for: String,
    },
    /// The contents do not match the signature.
    #[error(
        "{archive} does not match its signature: it was changed after it was signed; do not trust it"
    )]
    Mismatch {
        /// The archive's name.
        archive: String,
    },
    /// The archive was not read to its end, so the signature was not checked.
    #[error("{archive} was not read to its end, so its signature could not be checked")]
    Incomplete {
        /// The archive's name.
        archive: String,
    },
    /// Writing a signature failed.
    #[error("cannot write the signature of {archive}: {why}; check BACKUP_DIR")]
    Write {
        /// The archive's name.
        archive: String,
        /// Why.
        why: String,
    },
}

impl crate::exit::Coded for SignError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            SignError::BadTrustedKey { .. } => crate::exit::Exit::Usage,
            SignError::Key { .. }
            | SignError::Missing { .. }
            | SignError::Broken { .. }
            | SignError::Untrusted { .. }
            | SignError::OtherFile { .. }
            | SignError::Mismatch { .. }
            | SignError::Incomplete { .. }
            | SignError::Write { .. } => crate::exit::Exit::Failure,
        }
    }
}

/// This installation's signing key.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret bytes (the crate's own Debug prints them).
        write!(f, "SigningKey({})", self.public_base64())
    }
}

/// Where the public half of a signing key lives: beside it, `.pub`.
pub fn public_path(key_file: &Path) -> PathBuf {
    key_file.with_extension("pub")
}

fn write_new(path: &Path, text: &str) -> io::Result<()> {
    crate::secret::write_private_new(path, text)
}

fn read_small(path: &Path, max: u64) -> io::Result<String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let mut text = String::new();
    f.take(max).read_to_string(&mut text)?;
    Ok(text)
}

impl SigningKey {
    /// Reads the key at `path`.
    pub fn load(path: &Path) -> Result<SigningKey, SignError> {
        let err = |why: String| SignError::Key {
            path: path.to_path_buf(),
            why,
        };
        let text = read_small(path, MAX_SIG_FILE).map_err(|e| err(e.to_string()))?;
        let sk = minisign::SecretKeyBox::from_string(&text)
            .and_then(minisign::SecretKeyBox::into_unencrypted_secret_key)
            .or_else(|e| cli_unencrypted_key(&text).ok_or(e))
            .map_err(|e| {
                err(format!(
                    "it is not an unencrypted minisign secret key ({e}); \
                     `minisign -G -W` makes one"
                ))
            })?;
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(|e| err(e.to_string()))?;
        Ok(SigningKey { sk, pk })
    }

    /// Reads the key at `path`, or makes one there (0600, and its public
    /// half beside it) when there is none. Returns whether it was made.
    pub fn ensure(path: &Path) -> Result<(SigningKey, bool), SignError> {
        match fs::symlink_metadata(path) {
            Ok(_) => return Ok((Self::load(path)?, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SignError::Key {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                });
            }
        }
        let err = |why: String| SignError::Key {
            path: path.to_path_buf(),
            why,
        };
        let pair =
            minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| err(e.to_string()))?;
        let sk_text = pair
            .sk
            .to_box(Some("cofre signing key (keep it secret)"))
            .map_err(|e| err(e.to_string()))?
            .to_string();
        write_new(path, &sk_text).map_err(|e| err(e.to_string()))?;
        let key = SigningKey {
            sk: pair.sk,
            pk: pair.pk,
        };
        let pub_text = format!(
            "untrusted comment: cofre signing public key {}\n{}\n",
            key.key_id(),
            key.public_base64()
        );
        // The public half is a convenience copy; the secret file holds both.
        let _ = write_new(&public_path(path), &pub_text);
        Ok((key, true))
    }

    /// The public key, base64 (`RW...`), as minisign prints it.
    pub fn public_base64(&self) -> String {
        self.pk.to_base64()
    }

    /// A 32-byte key for `context`, derived from the secret key (BLAKE3's
    /// key derivation): what only this installation can compute.
    pub fn derive_key(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.sk.to_bytes())
    }

    /// The key id, as minisign prints it.
    pub fn key_id(&self) -> String {
        key_id_hex(self.pk.keynum())
    }

    /// Starts signing the archive `name`, a backup of `origin` (and, for a
    /// differential, of what changed since `base`), on a thread of its
    /// own: feed it the archive's bytes as they are written
    /// ([`Signer::feeder`]), then [`Signer::finish`] gives the `.minisig`
    /// text. Hashing runs beside compression instead of after it.
    pub fn start(
        &self,
        name: &str,
        origin: &Origin,
        base: Option<&crate::archive::manifest::BaseRef>,
    ) -> Signer {
        self.start_claim(Claim {
            origin: Some(origin.clone()),
            base: base.cloned(),
            ..Claim::about(name)
        })
    }

    /// The same, with the whole claim given (its `file` names the file).
    pub fn start_claim(&self, claim: Claim) -> Signer {
        let (tx, rx): (Feed, Receiver<Option<Vec<u8>>>) = sync_channel(16);
        let sk = self.sk.clone();
        let pk = self.pk.clone();
        let trusted = claim.to_comment(chrono::Utc::now().timestamp());
        let archive = claim.file;
        let handle = std::thread::Builder::new()
            .name("cofre-sign".into())
            .spawn(move || {
                let mut input = ChunkReader {
                    rx,
                    current: Vec::new(),
                    pos: 0,
                    ended: false,
                };
                let sig = minisign::sign(Some(&pk), &sk, &mut input, Some(&trusted), None)
                    .map_err(|e| e.to_string())?;
                if !input.ended {
                    return Err("the archive was not written to its end".to_owned());
                }
                Ok(sig.into_string())
            })
            .expect("spawning a thread");
        Signer {
            archive,
            key_id: self.key_id(),
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Signs `data` (read to its end) for the archive `name`, which restores
    /// `bytes` bytes; returns the `.minisig` text.
    #[cfg(test)]
    pub fn sign(
        &self,
        mut data: impl Read,
        name: &str,
        origin: &Origin,
        bytes: u64,
    ) -> Result<String, SignError> {
        let mut signer = self.start(name, origin, None);
        let mut feed = signer.feeder();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = data.read(&mut buf).map_err(|e| SignError::Write {
                archive: name.to_owned(),
                why: e.to_string(),
            })?;
            if n == 0 {
                feed(None);
                break;
            }
            feed(Some(&buf[..n]));
        }
        drop(feed);
        signer.finish(bytes, bytes)
    }
}

/// A `Read` over chunks arriving through a channel (`None` ends it).
struct ChunkReader {
    rx: Receiver<Option<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Some(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(None) => self.ended = true,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A signature being computed as an archive is written.
pub struct Signer {
    archive: String,
    key_id: String,
    tx: Option<Feed>,
    handle: Option<JoinHandle<Result<String, String>>>,
}

impl Signer {
    /// A function that feeds the signer: `Some(bytes)` in order, `None`
    /// once the archive is complete.
    pub fn feeder(&mut self) -> impl FnMut(Option<&[u8]>) + Send + 'static {
        let tx = self.tx.take();
        move |chunk| {
            if let Some(tx) = &tx {
                let _ = tx.send(chunk.map(<[u8]>::to_vec));
            }
        }
    }

    /// The `.minisig` text, once the archive was fed to its end. `bytes`
    /// (what the archive restores) goes into the comment line outside the
    /// signature, which a restore reads to check free space before writing.
    pub fn finish(mut self, bytes: u64, file_bytes: u64) -> Result<String, SignError> {
        self.tx = None;
        let fail = |why: String| SignError::Write {
            archive: self.archive.clone(),
            why,
        };
        let text = match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.map_err(fail)?,
            _ => return Err(fail("the signing thread stopped".into())),
        };
        let body = text.split_once('\n').map_or("", |(_, rest)| rest);
        Ok(format!(
            "untrusted comment: signature from cofre key {}; restores {bytes} bytes ({file_bytes} of files)\n{body}",
            self.key_id
        ))
    }
}

/// A key made by the minisign CLI with `-W` (no password): the CLI leaves
/// its checksum empty, which the `minisign` crate refuses; its bytes are
/// otherwise the same, so they are read directly.
fn cli_unencrypted_key(text: &str) -> Option<minisign::SecretKey> {
    use ct_codecs::{Base64, Decoder};
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))?;
    let bytes = Base64::decode_to_vec(line, None).ok()?;
    // Signature algorithm "Ed", no key derivation, and an empty checksum.
    let unencrypted = bytes.len() == 158 && &bytes[..4] == b"Ed\0\0";
    let empty_checksum = bytes[126..].iter().all(|&b| b == 0);
    if !(unencrypted && empty_checksum) {
        return None;
    }
    minisign::SecretKey::from_bytes(&bytes).ok()
}

fn key_id_hex(keynum: &[u8]) -> String {
    let mut le = [0u8; 8];
    le.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(le))
}

/// What an archive is a backup of: the host it was made on and the
/// project directory it holds. It is part of the signed claim, so a copy of
/// another project's archive (signed with a key both share) is told apart
/// wherever it is put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The host name.
    pub host: String,
    /// The project directory (absolute, canonical when it exists).
    pub source: String,
}

impl Origin {
    /// This machine, backing up (or restoring for) `source`.
    pub fn here(source: &Path) -> Origin {
        let source = source
            .canonicalize()
            .unwrap_or_else(|_| source.to_path_buf());
        Origin {
            host: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            source: source.display().to_string(),
        }
    }

    /// `SOURCE on HOST`, for messages.
    pub fn describe(&self) -> String {
        format!("{} on {}", self.source, self.host)
    }
}

/// Characters escaped in claim values: controls (a tab or newline would
/// end the field or the comment) and `%` itself.
const CLAIM_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

fn claim_value(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, CLAIM_ESCAPES).to_string()
}

fn claim_text(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// What the signed comment says about the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The archive's file name.
    pub file: String,
    /// Bytes of files and database the archive restores (from the signed
    /// comment, or from the comment line beside it).
    pub bytes: Option<u64>,
    /// Of those, the files' (from the comment line).
    pub file_bytes: Option<u64>,
    /// What it is a backup of (archives signed before cofre recorded it
    /// have none, and count as of another source).
    pub origin: Option<Origin>,
    /// A differential's full: its name and the BLAKE3 of its manifest.
    pub base: Option<crate::archive::manifest::BaseRef>,
    /// The cluster time of the archive's database dump (`T,I`), when it is
    /// one point in time: where a point-in-time restore from it begins.
    pub cluster: Option<String>,
    /// For a slice of the oplog: what it covers.
    pub oplog: Option<OplogClaim>,
}

/// What a signed oplog slice claims: every entry after `after` up to
/// `until` (oplog timestamps, `T,I`), and that nothing else was written
/// up to the wall time `proven`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OplogClaim {
    /// Where the previous slice (or the base dump) ended.
    pub after: String,
    /// The last entry's timestamp (`after` for a slice of an idle time).
    pub until: String,
    /// How many entries it holds.
    pub count: u64,
    /// Unix seconds: the server had written nothing after `until` then.
    pub proven: i64,
}

impl Claim {
    /// A claim about `file` and nothing else yet.
    pub fn about(file: &str) -> Claim {
        Claim {
            file: file.to_owned(),
            bytes: None,
            file_bytes: None,
            origin: None,
            base: None,
            cluster: None,
            oplog: None,
        }
    }

    fn to_comment(&self, timestamp: i64) -> String {
        let mut s = format!("timestamp:{timestamp}\tfile:{}", self.file);
        if let Some(b) = self.bytes {
            s.push_str(&format!("\tbytes:{b}"));
        }
        if let Some(o) = &self.origin {
            s.push_str(&format!(
                "\thost:{}\tsource:{}",
                claim_value(&o.host),
                claim_value(&o.source)
            ));
        }
        if let Some(b) = &self.base {
            s.push_str(&format!(
                "\tbase:{}\tbase_manifest:{}",
                claim_value(&b.name),
                claim_value(&b.manifest)
            ));
        }
        if let Some(c) = &self.cluster {
            s.push_str(&format!("\tcluster:{}", claim_value(c)));
        }
        if let Some(o) = &self.oplog {
            s.push_str(&format!(
                "\toplog_after:{}\toplog_until:{}\toplog_count:{}\toplog_proven:{}",
                claim_value(&o.after),
                claim_value(&o.until),
                o.count,
                o.proven
            ));
        }
        s
    }

    fn parse(comment: &str) -> Claim {
        let mut claim = Claim::about("");
        let mut oplog = OplogClaim::default();
        let mut is_slice = false;
        let (mut host, mut source, mut base, mut base_manifest) = (None, None, None, None);
        for field in comment.split('\t') {
            if let Some(f) = field.strip_prefix("file:") {
                claim.file = f.to_owned();
            } else if let Some(b) = field.strip_prefix("bytes:") {
                claim.bytes = b.parse().ok();
            } else if let Some(h) = field.strip_prefix("host:") {
                host = Some(claim_text(h));
            } else if let Some(s) = field.strip_prefix("source:") {
                source = Some(claim_text(s));
            } else if let Some(b) = field.strip_prefix("base:") {
                base = Some(claim_text(b));
            } else if let Some(m) = field.strip_prefix("base_manifest:") {
                base_manifest = Some(claim_text(m));
            } else if let Some(c) = field.strip_prefix("cluster:") {
                claim.cluster = Some(claim_text(c));
            } else if let Some(v) = field.strip_prefix("oplog_after:") {
                oplog.after = claim_text(v);
                is_slice = true;
            } else if let Some(v) = field.strip_prefix("oplog_until:") {
                oplog.until = claim_text(v);
            } else if let Some(v) = field.strip_prefix("oplog_count:") {
                oplog.count = v.parse().unwrap_or(0);
            } else if let Some(v) = field.strip_prefix("oplog_proven:") {
                oplog.proven = v.parse().unwrap_or(0);
            }
        }
        if is_slice {
            claim.oplog = Some(oplog);
        }
        if let (Some(name), Some(manifest)) = (base, base_manifest) {
            claim.base = Some(crate::archive::manifest::BaseRef { name, manifest });
        }
        if let (Some(host), Some(source)) = (host, source) {
            claim.origin = Some(Origin { host, source });
        }
        claim
    }

    /// Whether the archive is a backup of `origin`'s project (the same
    /// directory; the host may differ, as after a move to a new machine).
    pub fn is_of(&self, origin: &Origin) -> bool {
        self.origin
            .as_ref()
            .is_some_and(|o| o.source == origin.source)
    }

    /// What the archive is a backup of, for messages.
    pub fn describe_origin(&self) -> String {
        self.origin.as_ref().map_or_else(
            || "of an unrecorded project (signed before cofre recorded one)".to_owned(),
            |o| format!("a backup of {}", o.describe()),
        )
    }
}

/// Where an archive stands, from its signature: what retention, `latest`
/// and the listings decide on.
#[derive(Debug, Clone)]
pub enum Standing {
    /// Signed by a trusted key, for this name, a backup of this project.
    Ours(Claim),
    /// Signed by a trusted key, for this name, a backup of another project.
    Foreign(Claim),
    /// Signed by a key not trusted here.
    Untrusted,
    /// No signature.
    Missing,
    /// A signature that cannot be read, or was made for another name.
    Damaged(String),
}

impl Standing {
    /// One word for listings.
    pub fn label(&self) -> &'static str {
        match self {
            Standing::Ours(_) => "trusted",
            Standing::Foreign(_) => "foreign",
            Standing::Untrusted => "untrusted",
            Standing::Missing => "missing",
            Standing::Damaged(_) => "damaged",
        }
    }

    /// The claim, when signed by a trusted key.
    pub fn claim(&self) -> Option<&Claim> {
        match self {
            Standing::Ours(c) | Standing::Foreign(c) => Some(c),
            _ => None,
        }
    }

    /// Why the archive is not this project's trusted archive, to follow
    /// its name (`None` when it is).
    pub fn refusal(&self) -> Option<String> {
        match self {
            Standing::Ours(_) => None,
            Standing::Foreign(c) => Some(format!("is {}", c.describe_origin())),
            Standing::Untrusted => Some("is signed by a key not trusted here".to_owned()),
            Standing::Missing => Some("is not signed".to_owned()),
            Standing::Damaged(why) => Some(format!("has a signature that cannot be used ({why})")),
        }
    }
}

/// Where the archive `name` stands, from its signature text (`None`: no
/// signature), the keys trusted here, and this project.
pub fn standing(
    name: &str,
    text: Option<&str>,
    trusted: &TrustedKeys,
    origin: &Origin,
) -> Standing {
    match prepare(name, text, trusted) {
        Ok(p) if p.claim.is_of(origin) => Standing::Ours(p.claim),
        Ok(p) => Standing::Foreign(p.claim),
        Err(SignError::Missing { .. }) => Standing::Missing,
        Err(SignError::Untrusted { .. }) => Standing::Untrusted,
        Err(e) => Standing::Damaged(e.to_string()),
    }
}

/// The size a signature's comment line says the archive restores. That
/// line is outside the signature: it only decides whether a restore starts
/// (free space), never what is written.
fn untrusted_file_bytes(comment: &str) -> Option<u64> {
    let (_, rest) = comment.split_once(" bytes (")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The size a signature's comment line says the archive restores.
fn untrusted_bytes(comment: &str) -> Option<u64> {
    let (_, rest) = comment.split_once("restores ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// One trusted public key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: PublicKey,
}

/// The keys whose signatures are trusted.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

/// How a value that is not a public key is shown in an error: as given,
/// unless it may be a secret key (a minisign secret key box is about 212
/// base64 characters; one pasted where a public key belongs must not be
/// printed into a log), which is registered as a secret and not shown.
fn shown_key(value: &str) -> String {
    use ct_codecs::{Base64, Decoder};
    let v = value.trim();
    let long = Base64::decode_to_vec(v, None).is_ok_and(|b| b.len() > 64) || v.len() > 96;
    if long || v.to_ascii_lowercase().contains("secret") {
        crate::secret::register(v);
        return "(a secret key, or something longer than a public key: not shown)".to_owned();
    }
    v.to_owned()
}

/// A public key written as base64 or in a minisign `.pub` file.
fn parse_public(text: &str) -> Option<PublicKey> {
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .find(|l| !l.starts_with('#'))?;
    PublicKey::from_base64(line).ok()
}

impl TrustedKeys {
    /// Builds the trusted set: the public half of `own_key` (when it
    /// exists), `# cofre signing key:` lines in `identity_files`, and
    /// `extra` (each a base64 key or the path of a `.pub` file).
    pub fn load(
        own_key: &Path,
        identity_files: &[PathBuf],
        extra: &[String],
    ) -> Result<TrustedKeys, SignError> {
        let mut keys = Vec::new();
        if let Ok(own) = SigningKey::load(own_key)
            && let Ok(key) = PublicKey::from_base64(&own.public_base64())
        {
            keys.push(TrustedKey { key });
        }
        for id in identity_files {
            let Ok(text) = read_small(id, 1 << 20) else {
                continue;
            };
            for line in text.lines() {
                if let Some(b64) = line.trim().strip_prefix(IDENTITY_LINE.trim_end()) {
                    let key = PublicKey::from_base64(b64.trim()).map_err(|_| {
                        SignError::BadTrustedKey {
                            origin: id.display().to_string(),
                            value: shown_key(b64.trim()),
                        }
                    })?;
                    keys.push(TrustedKey { key });
                }
            }
        }
        for value in extra {
            let key = parse_public(value)
                .or_else(|| {
                    read_small(Path::new(value), 1 << 20)
                        .ok()
                        .and_then(|t| parse_public(&t))
                })
                .ok_or_else(|| SignError::BadTrustedKey {
                    origin: "BACKUP_TRUSTED_KEYS".into(),
                    value: shown_key(value),
                })?;
            keys.push(TrustedKey { key });
        }
        Ok(TrustedKeys { keys })
    }

    /// How many keys are trusted.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    fn find(&self, sig: &Signature) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| {
            !matches!(
                k.key.verify_stream(sig),
                Err(minisign_verify::Error::UnexpectedKeyId)
            )
        })
    }
}

/// A signature that names this archive and a trusted key; its check against
/// the contents happens while they are read ([`Checker`]).
pub struct Prepared {
    archive: String,
    key: PublicKey,
    sig: Signature,
    /// What the signed comment claims (checked for good once the contents
    /// verified).
    pub claim: Claim,
}

/// The path of an archive's signature.
pub fn sig_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(SIG_SUFFIX);
    PathBuf::from(s)
}

/// Reads an archive's signature file, if there is one (never following a
/// symlink, at most 64 KiB).
pub fn read_sig(archive: &Path) -> io::Result<Option<String>> {
    match read_small(&sig_path(archive), MAX_SIG_FILE) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks what can be checked before reading the archive: a signature is
/// there, parses, is by a trusted key, and was made for this file name.
pub fn prepare(
    name: &str,
    sig_text: Option<&str>,
    trusted: &TrustedKeys,
) -> Result<Prepared, SignError> {
    let text = sig_text.ok_or_else(|| SignError::Missing {
        archive: name.to_owned(),
    })?;
    let broken = |why: &str| SignError::Broken {
        archive: name.to_owned(),
        why: why.to_owned(),
    };
    let sig = Signature::decode(text).map_err(|e| broken(&e.to_string()))?;
    let Some(found) = trusted.find(&sig) else {
        let key_id = minisign::SignatureBox::from_string(text)
            .map(|b| key_id_hex(b.keynum()))
            .unwrap_or_else(|_| "?".into());
        return Err(SignError::Untrusted {
            archive: name.to_owned(),
            key_id,
        });
    };
    if found.key.verify_stream(&sig).is_err() {
        return Err(broken("it is not a prehashed (minisign 0.8+) signature"));
    }
    let mut claim = Claim::parse(sig.trusted_comment());
    if claim.bytes.is_none() {
        claim.bytes = untrusted_bytes(sig.untrusted_comment());
        claim.file_bytes = untrusted_file_bytes(sig.untrusted_comment());
    }
    if claim.file != name {
        return Err(SignError::OtherFile {
            archive: name.to_owned(),
            signed_for: if claim.file.is_empty() {
                "no file name".into()
            } else {
                claim.file
            },
        });
    }
    Ok(Prepared {
        archive: name.to_owned(),
        key: found.key.clone(),
        sig,
        claim,
    })
}

/// Where a [`Checker`]'s bytes go: chunks in order, `None` at the end.
type Feed = SyncSender<Option<Vec<u8>>>;

/// Checks a signature against bytes handed to it as they are read, on a
/// thread of its own.
pub struct Checker {
    archive: String,
    tx: Option<Feed>,
    handle: Option<JoinHandle<Result<(), SignError>>>,
}

impl Prepared {
    /// Starts checking: feed the archive's bytes in order to the returned
    /// [`Checker`], then call [`Checker::finish`].
    pub fn start(self) -> Checker {
        let (tx, rx): (Feed, Receiver<Option<Vec<u8>>>) = sync_channel(2);
        let archive = self.archive.clone();
        let handle = std::thread::Builder::new()
            .name("cofre-signature".into())
            .spawn(move || {
                let Prepared {
                    archive, key, sig, ..
                } = self;
                let mut v = key.verify_stream(&sig).map_err(|e| SignError::Broken {
                    archive: archive.clone(),
                    why: e.to_string(),
                })?;
                for msg in rx {
                    match msg {
                        Some(chunk) => v.update(&chunk),
                        None => {
                            return v.finalize().map_err(|_| SignError::Mismatch { archive });
                        }
                    }
                }
                Err(SignError::Incomplete { archive })
            })
            .expect("spawning a thread");
        Checker {
            archive,
            tx: Some(tx),
            handle: Some(handle),
        }
    }
}

impl Checker {
    /// A function that feeds the checker: `Some(bytes)` in order, `None`
    /// at the end of the file.
    pub fn feeder(&mut self) -> impl FnMut(Option<&[u8]>) + Send + 'static {
        let tx = self.tx.take();
        move |chunk| {
            if let Some(tx) = &tx {
                let _ = tx.send(chunk.map(<[u8]>::to_vec));
            }
        }
    }

    /// Waits for the verdict.
    pub fn finish(mut self) -> Result<(), SignError> {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(SignError::Incomplete {
                archive: self.archive.clone(),
            }),
        }
    }
}

/// Checks a whole file against its signature.
#[cfg(test)]
pub fn verify_file(prepared: Prepared, mut file: fs::File) -> Result<(), SignError> {
    let mut checker = prepared.start();
    let mut feed = checker.feeder();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|_| SignError::Incomplete {
            archive: checker.archive.clone(),
        })?;
        if n == 0 {
            feed(None);
            break;
        }
        feed(Some(&buf[..n]));
    }
    drop(feed);
    checker.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Origin {
        Origin {
            host: "web-1".into(),
            source: "/srv/app".into(),
        }
    }

    #[test]
    fn the_claim_names_the_project_and_survives_awkward_characters() {
        let (_dir, key, trusted) = setup();
        let odd = Origin {
            host: "web\t1%".into(),
            source: "/srv/a b\tc\nd%20".into(),
        };
        let sig = key.sign(&b"abc"[..], "backup_a.tar.gz", &odd, 3).unwrap();
        match standing("backup_a.tar.gz", Some(&sig), &trusted, &odd) {
            Standing::Ours(c) => assert_eq!(c.origin.as_ref(), Some(&odd)),
            other => panic!("{other:?}"),
        }
        // Another project's archive, signed with the same key: foreign.
        let standing = standing("backup_a.tar.gz", Some(&sig), &trusted, &here());
        assert!(matches!(standing, Standing::Foreign(_)), "{standing:?}");
        assert_eq!(standing.label(), "foreign");
        // Signed before the origin was recorded: never this project's.
        let old = Claim::parse("timestamp:0\tfile:backup_a.tar.gz");
        assert!(!old.is_of(&here()));
        // Another host, the same directory: the same project.
        let moved = Origin {
            host: "web-2".into(),
            ..here()
        };
        let claim = Claim::parse(
            &Claim {
                origin: Some(here()),
                cluster: Some("1700000000,3".into()),
                oplog: Some(OplogClaim {
                    after: "1,2".into(),
                    until: "3,4".into(),
                    count: 5,
                    proven: 6,
                }),
                ..Claim::about("x")
            }
            .to_comment(0),
        );
        assert!(claim.is_of(&moved));
        assert_eq!(claim.cluster.as_deref(), Some("1700000000,3"));
        assert_eq!(claim.oplog.as_ref().map(|o| o.count), Some(5));
    }

    #[test]
    fn a_secret_key_given_as_a_trusted_key_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        SigningKey::ensure(&dir.path().join("s.key")).unwrap();
        let text = fs::read_to_string(dir.path().join("s.key")).unwrap();
        let secret_line = text.lines().nth(1).unwrap().to_owned();
        let err = TrustedKeys::load(Path::new("/x"), &[], std::slice::from_ref(&secret_line))
            .unwrap_err()
            .to_string();
        assert!(!err.contains(&secret_line[..40]), "{err}");
        assert!(err.contains("not shown"), "{err}");
        // A mistyped public key is shown, to be corrected.
        let err = TrustedKeys::load(Path::new("/x"), &[], &["RWnotakey".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RWnotakey"), "{err}");
    }

    fn setup() -> (tempfile::TempDir, SigningKey, TrustedKeys) {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("keys/signing.key");
        let (key, created) = SigningKey::ensure(&key_path).unwrap();
        assert!(created);
        let (_, again) = SigningKey::ensure(&key_path).unwrap();
        assert!(!again);
        let trusted = TrustedKeys::load(&key_path, &[], &[]).unwrap();
        assert_eq!(trusted.len(), 1);
        (dir, key, trusted)
    }

    #[test]
    fn signs_and_verifies_streams() {
        let (dir, key, trusted) = setup();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let sig = key.sign(&data[..], "backup_x.tar.gz", &here(), 42).unwrap();
        let prepared = prepare("backup_x.tar.gz", Some(&sig), &trusted).unwrap();
        assert_eq!(prepared.claim.bytes, Some(42));
        let p = dir.path().join("data");
        fs::write(&p, &data).unwrap();
        verify_file(prepared, fs::File::open(&p).unwrap()).unwrap();
        // One changed byte.
        let mut bad = data;
        bad[1_000_000] ^= 1;
        fs::write(&p, &bad).unwrap();
        let prepared = prepare("backup_x.tar.gz", Some(&sig), &trusted).unwrap();
        assert!(matches!(
            verify_file(prepared, fs::File::open(&p).unwrap()),
            Err(SignError::Mismatch { .. })
        ));
    }

    #[test]
    fn refuses_missing_untrusted_renamed_and_damaged_signatures() {
        let (dir, key, trusted) = setup();
        let sig = key
            .sign(&b"abc"[..], "backup_a.tar.gz", &here(), 3)
            .unwrap();
        assert!(matches!(
            prepare("backup_a.tar.gz", None, &trusted),
            Err(SignError::Missing { .. })
        ));
        assert!(matches!(
            prepare("backup_b.tar.gz", Some(&sig), &trusted),
            Err(SignError::OtherFile { .. })
        ));
        assert!(matches!(
            prepare("backup_a.tar.gz", Some("garbage"), &trusted),
            Err(SignError::Broken { .. })
        ));
        let (other, _) = SigningKey::ensure(&dir.path().join("other.key")).unwrap();
        let foreign = other
            .sign(&b"abc"[..], "backup_a.tar.gz", &here(), 3)
            .unwrap();
        assert!(matches!(
            prepare("backup_a.tar.gz", Some(&foreign), &trusted),
            Err(SignError::Untrusted { .. })
        ));
        // Trusted once named in BACKUP_TRUSTED_KEYS, or in an identity file.
        let more = TrustedKeys::load(
            &dir.path().join("keys/signing.key"),
            &[],
            &[other.public_base64()],
        )
        .unwrap();
        assert!(prepare("backup_a.tar.gz", Some(&foreign), &more).is_ok());
        let id = dir.path().join("identity.txt");
        fs::write(
            &id,
            format!(
                "# x\n{IDENTITY_LINE}{}\nAGE-SECRET-KEY-1X\n",
                other.public_base64()
            ),
        )
        .unwrap();
        let via_identity = TrustedKeys::load(Path::new("/nonexistent"), &[id], &[]).unwrap();
        assert!(prepare("backup_a.tar.gz", Some(&foreign), &via_identity).is_ok());
        assert!(TrustedKeys::load(Path::new("/x"), &[], &["RWnotakey".into()]).is_err());
    }
}
