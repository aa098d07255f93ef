//! For unit tests: a project in a temporary directory, its keys, and each
//! feature's options built as struct literals (no environment involved).

use std::fs;
use std::path::{Path, PathBuf};

use crate::archive::Compression;
use crate::archive::crypt::{AgeKeys, Encryption};
use crate::backup::{self, MinFree};
use crate::logging::Verbosity;
use crate::sign::{Origin, SigningKey, TrustedKeys};

/// A project with a few files, a backup directory and keys, all in one
/// temporary directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The project (canonical).
    pub source: PathBuf,
    /// Its `BACKUP_DIR`.
    pub backup_dir: PathBuf,
    /// Its keys.
    pub keys: crate::keys::Options,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("project");
        fs::create_dir_all(source.join("src")).unwrap();
        fs::write(source.join("src/app.js"), "console.log('hi')\n").unwrap();
        fs::write(source.join("README"), "a project\n").unwrap();
        let source = source.canonicalize().unwrap();
        let backup_dir = source.join("backups");
        let keys = crate::keys::Options {
            identity_file: dir.path().join("keys/identity.txt"),
            signing_key: dir.path().join("keys/signing.key"),
            trusted: Vec::new(),
            passphrase: None,
        };
        Fixture {
            dir,
            source,
            backup_dir,
            keys,
        }
    }

    /// How this project is backed up: gzip, age to its own identity.
    pub fn backup_options(&self) -> backup::Options {
        backup::Options {
            source: self.source.clone(),
            backup_dir: self.backup_dir.clone(),
            compression: Compression::Gzip(1),
            encryption: Encryption::Age(AgeKeys {
                recipients: Vec::new(),
                passphrase: None,
                identity_file: self.keys.identity_file.clone(),
            }),
            excludes: Vec::new(),
            signing_key: self.keys.signing_key.clone(),
            min_free: MinFree::Percent(0.0),
            mongo: None,
            full_every: backup::DEFAULT_FULL_EVERY,
        }
    }

    /// One backup now (names are per second: the next waits for a new one).
    pub fn backup(&self) -> backup::BackupReport {
        backup::run(&backup::Request {
            opts: &self.backup_options(),
            wait: None,
            verbosity: Verbosity::Quiet,
            cancel: None,
        })
        .unwrap()
    }

    /// This project, as signed claims name it.
    pub fn origin(&self) -> Origin {
        Origin::here(&self.source)
    }

    /// The keys to read this project's archives with (the configured
    /// ones only).
    pub fn access(&self) -> crate::open::Access {
        let (keys, trusted) = self.keys.load().unwrap();
        crate::open::Access {
            keys,
            trusted,
            origin: self.origin(),
        }
    }

    /// The keys trusted here.
    pub fn trusted(&self) -> TrustedKeys {
        self.keys.load().unwrap().1
    }

    /// Writes `data` at `BACKUP_DIR/name`, signed with this installation's
    /// key as a backup of `source` (this project when `None`).
    pub fn plant_signed(&self, name: &str, source: Option<&Path>) -> PathBuf {
        fs::create_dir_all(&self.backup_dir).unwrap();
        let path = self.backup_dir.join(name);
        fs::write(&path, b"an archive").unwrap();
        let (key, _) = SigningKey::ensure(&self.keys.signing_key).unwrap();
        let origin = match source {
            Some(s) => Origin {
                source: s.display().to_string(),
                ..self.origin()
            },
            None => self.origin(),
        };
        let sig = key.sign(&b"an archive"[..], name, &origin, 10).unwrap();
        fs::write(crate::sign::sig_path(&path), sig).unwrap();
        path
    }
}
