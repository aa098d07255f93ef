//! Opening an archive to read it: find it (`latest` means the newest one
//! signed by a trusted key), check its signature as far as can be checked
//! up front, open its layers, and check the signature against every byte
//! as the layers read them. Used by `verify` and `restore`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::archive::crypt::ReadKeys;
use crate::archive::layers::{self, OpenError};
use crate::archive::worker_threads;
use crate::sign::{self, Checker, Claim, SignError, TrustedKeys};
use crate::store::{self, Store, StoreError};

/// Why an archive could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenArchiveError {
    /// Finding or opening the file.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Its signature.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Its layers.
    #[error(transparent)]
    Layers(#[from] OpenError),
    /// `latest` found archives, none signed by a trusted key.
    #[error(
        "none of the {count} archives in {dir} is signed by a trusted key (the newest, {newest}: {why}); \
         check BACKUP_TRUSTED_KEYS, or name an archive and pass --allow-unsigned"
    )]
    NoTrustedLatest {
        /// The directory.
        dir: PathBuf,
        /// How many archives there are.
        count: usize,
        /// The newest one.
        newest: String,
        /// Why it was not accepted.
        why: String,
    },
}

/// What to open and what to accept.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// A path, a name in `backup_dir`, or `latest`.
    pub arg: &'a str,
    /// `BACKUP_DIR`.
    pub backup_dir: &'a Path,
    /// Keys to decrypt with.
    pub keys: &'a ReadKeys,
    /// Keys whose signatures are trusted.
    pub trusted: &'a TrustedKeys,
    /// Accept an archive whose signature is missing, broken or untrusted.
    pub allow_unsigned: bool,
}

/// An archive being read.
pub struct OpenArchive {
    /// Its file name.
    pub name: String,
    /// The tar stream.
    pub stream: Box<dyn Read + Send>,
    /// What its signature claims (when it is signed by a trusted key).
    pub claim: Option<Claim>,
    /// Why it is accepted without a good signature (`--allow-unsigned`).
    pub unsigned: Option<String>,
    checker: Option<Checker>,
}

impl OpenArchive {
    /// After the whole stream was read: the signature's verdict.
    pub fn check_signature(&mut self) -> Result<(), SignError> {
        match self.checker.take() {
            Some(c) => c.finish(),
            None => Ok(()),
        }
    }
}

/// Checks the signature file beside `path` up front.
fn prepare(path: &Path, name: &str, trusted: &TrustedKeys) -> Result<sign::Prepared, SignError> {
    let text = sign::read_sig(path).map_err(|e| SignError::Broken {
        archive: name.to_owned(),
        why: e.to_string(),
    })?;
    sign::prepare(name, text.as_deref(), trusted)
}

/// The archive `arg` names: `latest` is the newest archive signed by a
/// trusted key (or simply the newest, with `allow_unsigned`). Returns its
/// path and whether it lies in `BACKUP_DIR`.
pub fn resolve(req: &Request<'_>) -> Result<(PathBuf, bool), OpenArchiveError> {
    if req.arg != "latest" {
        return Ok(Store::resolve(req.backup_dir, req.arg)?);
    }
    let store = Store::open(req.backup_dir)?;
    let all = store.list()?;
    let Some(newest) = all.first() else {
        return Err(StoreError::Empty(req.backup_dir.to_path_buf()).into());
    };
    if req.allow_unsigned {
        return Ok((newest.path.clone(), true));
    }
    let mut first_refusal = None;
    for a in &all {
        match prepare(&a.path, &a.name, req.trusted) {
            Ok(_) => {
                if let Some((name, why)) = &first_refusal {
                    tracing::warn!(
                        "skipped {name} for `latest`: {why}; using {} instead",
                        a.name
                    );
                }
                return Ok((a.path.clone(), true));
            }
            Err(e) => {
                if first_refusal.is_none() {
                    first_refusal = Some((a.name.clone(), e.to_string()));
                }
            }
        }
    }
    let (newest, why) = first_refusal.unwrap_or_default();
    Err(OpenArchiveError::NoTrustedLatest {
        dir: req.backup_dir.to_path_buf(),
        count: all.len(),
        newest,
        why,
    })
}

/// Opens the archive for reading, its signature checked up front and then
/// against every byte as it is read.
pub fn open(req: &Request<'_>) -> Result<OpenArchive, OpenArchiveError> {
    let (path, in_dir) = resolve(req)?;
    let name = layers::archive_name(&path);
    let file = store::open_archive(&path, in_dir)?;
    let (checker, claim, unsigned) = match prepare(&path, &name, req.trusted) {
        Ok(p) => {
            let claim = p.claim.clone();
            (Some(p.start()), Some(claim), None)
        }
        Err(e) if req.allow_unsigned => {
            tracing::warn!("--allow-unsigned: reading {name} although {e}");
            (None, None, Some(e.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let mut checker = checker;
    let observer = checker
        .as_mut()
        .map(|c| Box::new(c.feeder()) as crate::archive::pipe::Observer);
    let (stream, _) = layers::open(file, req.keys, &name, worker_threads(), observer)?;
    Ok(OpenArchive {
        name,
        stream,
        claim,
        unsigned,
        checker,
    })
}
