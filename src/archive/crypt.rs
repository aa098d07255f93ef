//! The age layer: keys for writing and reading, and the default identity.
//!
//! Writing needs only public keys (`BACKUP_RECIPIENTS`), so a server can
//! write backups it cannot read; or a passphrase (scrypt); or, when neither
//! is set, the identity file, which is made on first use.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};

use crate::secret::Secret;

/// The largest scrypt work factor (log2 N) a passphrase archive may ask for.
pub const MAX_SCRYPT_LOG_N: u8 = 20;
/// The longest age header accepted; the header is read before anything is
/// authenticated, so its size is capped (64 KiB holds hundreds of recipients).
pub const MAX_HEADER: usize = 64 << 10;

/// Key problems, each with what to check.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The identity file cannot be read or parsed.
    #[error(
        "cannot read the age identity file {path}: {why}; check BACKUP_IDENTITY_FILE or --identity"
    )]
    IdentityFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The identity file could not be created.
    #[error(
        "cannot create the age identity file {path}: {source}; check that its directory is writable or set BACKUP_IDENTITY_FILE"
    )]
    CreateIdentity {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No key at all to decrypt with.
    #[error(
        "{archive} is encrypted and no key was found to open it: the identity file {identity} does not exist; \
         pass the identity that matches one of its recipients with --identity FILE (or BACKUP_IDENTITY_FILE)"
    )]
    NoIdentity {
        /// The archive.
        archive: String,
        /// The identity file that was looked for.
        identity: PathBuf,
    },
    /// A passphrase archive but no passphrase.
    #[error("{0} is encrypted with a passphrase; set BACKUP_PASSPHRASE or BACKUP_PASSPHRASE_FILE")]
    NeedPassphrase(String),
    /// Wrong passphrase.
    #[error(
        "{0} cannot be decrypted with the passphrase given; check BACKUP_PASSPHRASE or BACKUP_PASSPHRASE_FILE"
    )]
    WrongPassphrase(String),
    /// None of the identities matches.
    #[error(
        "{0} cannot be decrypted with the keys given (it was encrypted to other public keys, \
         or its header is damaged); pass the matching identity with --identity FILE or BACKUP_IDENTITY_FILE"
    )]
    WrongKey(String),
    /// The age header is damaged.
    #[error("{archive} is damaged: its age header cannot be read ({why}); try another archive")]
    BadHeader {
        /// The archive.
        archive: String,
        /// The library's words.
        why: String,
    },
    /// Encryption could not be set up.
    #[error("cannot set up age encryption: {0}")]
    Setup(String),
}

impl crate::exit::Coded for CryptError {
    fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            CryptError::NoIdentity { .. }
            | CryptError::NeedPassphrase(_)
            | CryptError::WrongPassphrase(_)
            | CryptError::WrongKey(_) => Exit::NoKey,
            CryptError::IdentityFile { .. }
            | CryptError::CreateIdentity { .. }
            | CryptError::BadHeader { .. }
            | CryptError::Setup(_) => Exit::Failure,
        }
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

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// The keys for age encryption: public keys to write to, a passphrase, and the
/// identity file used when neither is given (and for reading).
#[derive(Debug, Clone)]
pub struct AgeKeys {
    /// X25519 public keys (`age1...`).
    pub recipients: Vec<String>,
    /// A passphrase (scrypt).
    pub passphrase: Option<Secret>,
    /// The identity file: made on first use when no recipient or passphrase is set.
    pub identity_file: PathBuf,
}

/// How a new archive is encrypted, ready to use.
pub struct Encrypting {
    encryptor: age::Encryptor,
    /// A short description for logs and the manifest.
    pub describe: String,
}

impl Encrypting {
    /// Wraps `out` in age's stream writer (the header is written now).
    pub fn wrap<W: Write>(self, out: W) -> io::Result<age::stream::StreamWriter<W>> {
        self.encryptor.wrap_output(out)
    }
}

/// Prepares encryption from the settings. When neither recipients nor a
/// passphrase are set, the identity file is read, or made (returned
/// `true`) with `note` (comment lines) in it.
pub fn encrypting(keys: &AgeKeys, note: &str) -> Result<(Encrypting, bool), CryptError> {
    if let Some(pass) = &keys.passphrase {
        let encryptor =
            age::Encryptor::with_user_passphrase(SecretString::from(pass.expose().to_owned()));
        return Ok((
            Encrypting {
                encryptor,
                describe: "age-scrypt".into(),
            },
            false,
        ));
    }
    let (recipients, created, describe) = if keys.recipients.is_empty() {
        let (identity, created) = ensure_identity(&keys.identity_file, note)?;
        (
            vec![identity.to_public()],
            created,
            "age-x25519 (identity file)".to_owned(),
        )
    } else {
        let rs = keys
            .recipients
            .iter()
            .map(|r| {
                age::x25519::Recipient::from_str(r).map_err(|e| CryptError::Setup(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = rs.len();
        (
            rs,
            false,
            format!(
                "age-x25519 ({n} recipient{})",
                if n == 1 { "" } else { "s" }
            ),
        )
    };
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| CryptError::Setup(e.to_string()))?;
    Ok((
        Encrypting {
            encryptor,
            describe,
        },
        created,
    ))
}

/// Reads the X25519 identity at `path`, making one (mode 0600, directory
/// 0700, with the comment lines `note`) when the file does not exist.
/// Returns whether it was made.
pub fn ensure_identity(
    path: &Path,
    note: &str,
) -> Result<(age::x25519::Identity, bool), CryptError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let identity = text
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                .and_then(|l| age::x25519::Identity::from_str(l).ok())
                .ok_or_else(|| CryptError::IdentityFile {
                    path: path.to_path_buf(),
                    why: "it holds no AGE-SECRET-KEY-1... line".into(),
                })?;
            Ok((identity, false))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let identity = age::x25519::Identity::generate();
            write_identity(path, &identity, note)?;
            Ok((identity, true))
        }
        Err(e) => Err(CryptError::IdentityFile {
            path: path.to_path_buf(),
            why: e.to_string(),
        }),
    }
}

/// Writes a new identity file (mode 0600) with the comment lines `note`;
/// never replaces an existing file.
pub fn write_identity(
    path: &Path,
    identity: &age::x25519::Identity,
    note: &str,
) -> Result<(), CryptError> {
    let err = |source| CryptError::CreateIdentity {
        path: path.to_path_buf(),
        source,
    };
    crate::secret::write_private_new(path, &identity_text(identity, note)).map_err(err)
}

/// An identity in age-keygen's file format, with the comment lines `note`
/// (each starting with `#`) after age-keygen's own.
pub fn identity_text(identity: &age::x25519::Identity, note: &str) -> String {
    format!(
        "# created: {}\n# public key: {}\n{note}{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_public(),
        identity.to_string().expose_secret()
    )
}

/// Keys for reading archives: identity files and a passphrase.
#[derive(Debug, Clone, Default)]
pub struct ReadKeys {
    /// Identity files to try, in order; missing ones are skipped.
    pub identity_files: Vec<PathBuf>,
    /// The passphrase, for scrypt archives.
    pub passphrase: Option<Secret>,
}

/// Opens the age layer of `input`, naming `archive` in errors.
pub fn decrypt<R: BufRead>(
    input: R,
    keys: &ReadKeys,
    archive: &str,
) -> Result<age::stream::StreamReader<R>, CryptError> {
    let decryptor = age::Decryptor::new_buffered(input).map_err(|e| CryptError::BadHeader {
        archive: archive.to_owned(),
        why: e.to_string(),
    })?;
    if decryptor.is_scrypt() {
        let pass = keys
            .passphrase
            .as_ref()
            .ok_or_else(|| CryptError::NeedPassphrase(archive.to_owned()))?;
        let mut identity = age::scrypt::Identity::new(SecretString::from(pass.expose().to_owned()));
        // The archive chooses scrypt's cost; this is the most it may choose
        // (2^20: about 1 GiB of memory and a few seconds, for this one step).
        identity.set_max_work_factor(MAX_SCRYPT_LOG_N);
        return decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
                    CryptError::WrongPassphrase(archive.to_owned())
                }
                other => CryptError::BadHeader {
                    archive: archive.to_owned(),
                    why: other.to_string(),
                },
            });
    }
    let mut identities: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
    for path in &keys.identity_files {
        match fs::File::open(path) {
            Ok(f) => {
                let file = age::IdentityFile::from_buffer(io::BufReader::new(f)).map_err(|e| {
                    CryptError::IdentityFile {
                        path: path.clone(),
                        why: e.to_string(),
                    }
                })?;
                identities.extend(file.into_identities().map_err(|e| {
                    CryptError::IdentityFile {
                        path: path.clone(),
                        why: e.to_string(),
                    }
                })?);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CryptError::IdentityFile {
                    path: path.clone(),
                    why: e.to_string(),
                });
            }
        }
    }
    if identities.is_empty() {
        return Err(CryptError::NoIdentity {
            archive: archive.to_owned(),
            identity: keys.identity_files.last().cloned().unwrap_or_default(),
        });
    }
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => CryptError::WrongKey(archive.to_owned()),
            other => CryptError::BadHeader {
                archive: archive.to_owned(),
                why: other.to_string(),
            },
        })
}

/// What an age header says without decrypting: the kinds of its stanzas.
pub fn describe_header(mut input: impl Read) -> Option<String> {
    let mut head = vec![0u8; 4096];
    let n = input.read(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    let mut lines = text.lines();
    if lines.next()? != "age-encryption.org/v1" {
        return None;
    }
    let mut x25519 = 0;
    let mut scrypt = false;
    let mut other = 0;
    for line in lines {
        if line.starts_with("---") {
            break;
        }
        match line.strip_prefix("-> ").and_then(|l| l.split(' ').next()) {
            Some("X25519") => x25519 += 1,
            Some("scrypt") => scrypt = true,
            // age adds random "grease" stanzas to keep parsers honest.
            Some(tag) if tag.ends_with("-grease") => {}
            Some(_) => other += 1,
            None => {}
        }
    }
    Some(if scrypt {
        "age (passphrase)".to_owned()
    } else if other == 0 {
        format!("age ({x25519} key{})", if x25519 == 1 { "" } else { "s" })
    } else {
        format!("age ({} keys)", x25519 + other)
    })
}
