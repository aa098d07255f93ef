//! The keys of this installation, as configured: the age identity (and a
//! passphrase) that read archives, the signing key that signs them, and
//! the public keys whose signatures are trusted. Every command that reads
//! an archive, and retention, start from here.

use std::path::PathBuf;

use crate::archive::crypt::ReadKeys;
use crate::secret::Secret;
use crate::sign::{SignError, TrustedKeys};

/// The configured keys (`BACKUP_IDENTITY_FILE`, `BACKUP_SIGNING_KEY_FILE`,
/// `BACKUP_TRUSTED_KEYS`, `BACKUP_PASSPHRASE`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The age identity file (made on first use when nothing else encrypts).
    pub identity_file: PathBuf,
    /// This installation's signing key.
    pub signing_key: PathBuf,
    /// Extra trusted public keys (base64, or files holding one).
    pub trusted: Vec<String>,
    /// The passphrase, for archives made with one.
    pub passphrase: Option<Secret>,
}

impl Options {
    /// Keys to read archives with: `extra` identity files first (from
    /// `--identity`), then the configured one; the passphrase.
    pub fn read_keys(&self, extra: &[PathBuf]) -> ReadKeys {
        let mut identity_files = extra.to_vec();
        identity_files.push(self.identity_file.clone());
        ReadKeys {
            identity_files,
            passphrase: self.passphrase.clone(),
        }
    }

    /// The keys whose signatures are trusted when reading with `read`:
    /// this installation's signing key, the keys the identity files carry,
    /// the configured ones.
    pub fn trusted(&self, read: &ReadKeys) -> Result<TrustedKeys, SignError> {
        TrustedKeys::load(&self.signing_key, &read.identity_files, &self.trusted)
    }

    /// Both, with no identity beyond the configured one (the daemon, and
    /// retention after a backup).
    pub fn load(&self) -> Result<(ReadKeys, TrustedKeys), SignError> {
        let read = self.read_keys(&[]);
        let trusted = self.trusted(&read)?;
        Ok((read, trusted))
    }
}
