//! Opening an archive to read it, from `BACKUP_DIR` or from the bucket:
//! find it (`latest` means the newest one signed by a trusted key), check
//! its signature as far as can be checked up front, open its layers, and
//! check the signature against every byte as the layers read them. Used by
//! `verify` and `restore`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::archive::crypt::ReadKeys;
use crate::archive::layers::{self, OpenError};
use crate::archive::worker_threads;
use crate::remote::{Remote, RemoteError};
use crate::sign::{self, Checker, Claim, SignError, TrustedKeys};
use crate::store::{self, ArchiveName, Store, StoreError};

/// Why an archive could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenArchiveError {
    /// Finding or opening the file.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bucket.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// Its signature.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Its layers.
    #[error(transparent)]
    Layers(#[from] OpenError),
    /// A remote archive name that is not an archive name.
    #[error(
        "{0:?} is not an archive name (backup_YYYY-MM-DDTHH-MM-SS.tar.gz[.age]); `cofre list --remote` shows them"
    )]
    BadName(String),
    /// `latest` found archives, none signed by a trusted key.
    #[error(
        "none of the {count} archives in {place} is signed by a trusted key (the newest, {newest}: {why}); \
         check BACKUP_TRUSTED_KEYS, or name an archive and pass --allow-unsigned"
    )]
    NoTrustedLatest {
        /// Where.
        place: String,
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
    /// A path, a name in `backup_dir` (or the bucket), or `latest`.
    pub arg: &'a str,
    /// `BACKUP_DIR`.
    pub backup_dir: &'a Path,
    /// The bucket to read from instead of `backup_dir`.
    pub remote: Option<&'a Remote>,
    /// Keys to decrypt with.
    pub keys: &'a ReadKeys,
    /// Keys whose signatures are trusted.
    pub trusted: &'a TrustedKeys,
    /// Accept an archive whose signature is missing, broken or untrusted.
    pub allow_unsigned: bool,
}

/// Where an archive is.
#[derive(Debug, Clone)]
pub enum Found {
    /// A file, and whether it lies in `BACKUP_DIR`.
    Local(PathBuf, bool),
    /// A name in the bucket.
    Remote(String),
}

impl Found {
    /// The archive's file name.
    pub fn name(&self) -> String {
        match self {
            Found::Local(p, _) => layers::archive_name(p),
            Found::Remote(n) => n.clone(),
        }
    }
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

/// The signature text of an archive, wherever it is.
fn signature_text(req: &Request<'_>, found: &Found) -> Result<Option<String>, OpenArchiveError> {
    let name = found.name();
    match (found, req.remote) {
        (Found::Local(path, _), _) => sign::read_sig(path).map_err(|e| {
            SignError::Broken {
                archive: name,
                why: e.to_string(),
            }
            .into()
        }),
        (Found::Remote(n), Some(bucket)) => Ok(bucket.signature(n)?),
        (Found::Remote(_), None) => Ok(None),
    }
}

fn prepare(req: &Request<'_>, found: &Found) -> Result<sign::Prepared, OpenArchiveError> {
    let text = signature_text(req, found)?;
    Ok(sign::prepare(&found.name(), text.as_deref(), req.trusted)?)
}

/// The archive `arg` names: `latest` is the newest archive signed by a
/// trusted key (or simply the newest, with `allow_unsigned`).
pub fn resolve(req: &Request<'_>) -> Result<Found, OpenArchiveError> {
    let candidates: Vec<Found> = match (req.remote, req.arg) {
        (Some(_), "latest") => req
            .remote
            .expect("matched")
            .list()?
            .into_iter()
            .map(|a| Found::Remote(a.name))
            .collect(),
        (Some(_), name) => {
            if ArchiveName::parse(name).is_none() {
                return Err(OpenArchiveError::BadName(name.to_owned()));
            }
            return Ok(Found::Remote(name.to_owned()));
        }
        (None, "latest") => Store::open(req.backup_dir)?
            .list()?
            .into_iter()
            .map(|a| Found::Local(a.path, true))
            .collect(),
        (None, arg) => {
            let (path, inside) = Store::resolve(req.backup_dir, arg)?;
            return Ok(Found::Local(path, inside));
        }
    };
    let place = req.remote.map_or_else(
        || req.backup_dir.display().to_string(),
        |r| r.url().to_owned(),
    );
    let Some(newest) = candidates.first() else {
        return Err(match req.remote {
            Some(r) => RemoteError::NotFound {
                url: r.url().to_owned(),
                name: "latest".into(),
            }
            .into(),
            None => StoreError::Empty(req.backup_dir.to_path_buf()).into(),
        });
    };
    if req.allow_unsigned {
        return Ok(newest.clone());
    }
    let mut first_refusal = None;
    for found in &candidates {
        match prepare(req, found) {
            Ok(_) => {
                if let Some((name, why)) = &first_refusal {
                    tracing::warn!(
                        "skipped {name} for `latest`: {why}; using {} instead",
                        found.name()
                    );
                }
                return Ok(found.clone());
            }
            Err(e) => {
                if first_refusal.is_none() {
                    first_refusal = Some((found.name(), e.to_string()));
                }
            }
        }
    }
    let (newest, why) = first_refusal.unwrap_or_default();
    Err(OpenArchiveError::NoTrustedLatest {
        place,
        count: candidates.len(),
        newest,
        why,
    })
}

/// Opens what [`resolve`] found, its signature checked up front and then
/// against every byte as it is read.
pub fn open_found(req: &Request<'_>, found: &Found) -> Result<OpenArchive, OpenArchiveError> {
    let name = found.name();
    let (checker, claim, unsigned) = match prepare(req, found) {
        Ok(p) => {
            let claim = p.claim.clone();
            (Some(p.start()), Some(claim), None)
        }
        Err(e) if req.allow_unsigned => {
            tracing::warn!("--allow-unsigned: reading {name} although {e}");
            (None, None, Some(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    let mut checker = checker;
    let observer = checker
        .as_mut()
        .map(|c| Box::new(c.feeder()) as crate::archive::pipe::Observer);
    let (stream, _) = match (found, req.remote) {
        (Found::Local(path, inside), _) => {
            let file = store::open_archive(path, *inside)?;
            layers::open(file, req.keys, &name, worker_threads(), observer)?
        }
        (Found::Remote(n), Some(bucket)) => {
            let input = bucket.open(n)?;
            layers::open(input, req.keys, &name, worker_threads(), observer)?
        }
        (Found::Remote(n), None) => {
            return Err(OpenArchiveError::BadName(n.clone()));
        }
    };
    Ok(OpenArchive {
        name,
        stream,
        claim,
        unsigned,
        checker,
    })
}

/// [`resolve`], then [`open_found`].
pub fn open(req: &Request<'_>) -> Result<OpenArchive, OpenArchiveError> {
    let found = resolve(req)?;
    open_found(req, &found)
}
