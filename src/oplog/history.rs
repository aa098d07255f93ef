//! What a point-in-time restore can start from and replay, in
//! `BACKUP_DIR` or in the bucket: the bases (this project's archives
//! signed by a trusted key whose dump is one point in time) and the slices
//! (signed as this project's), and how to read a slice from either place.
//! Only signed claims are believed; anything else is listed as refused.

use std::path::{Path, PathBuf};

use mongodb::bson::RawDocument;

use super::slice::{self, SliceError, SliceInfo};
use super::window::Base;
use super::{DIR, Ts};
use crate::archive::crypt::ReadKeys;
use crate::remote::Remote;
use crate::sign::{Origin, Standing, TrustedKeys};
use crate::store::Store;

/// Where the history is.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    /// `BACKUP_DIR`.
    Local(&'a Path),
    /// The bucket.
    Bucket(&'a Remote),
}

impl std::fmt::Debug for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Local(p) => write!(f, "{}", p.display()),
            Place::Bucket(r) => write!(f, "{}", r.url()),
        }
    }
}

/// The bases and slices in one place.
#[derive(Debug, Default)]
pub struct History {
    /// Archives a restore can start from.
    pub bases: Vec<Base>,
    /// Slices, oldest first.
    pub slices: Vec<SliceInfo>,
    /// Slices refused, with why.
    pub refused: Vec<(String, String)>,
}

/// Why the history cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The bucket.
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// The directory.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl crate::exit::Coded for HistoryError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            HistoryError::Remote(e) => e.exit(),
            HistoryError::Store(e) => e.exit(),
        }
    }
}

fn base_of(name: &str, text: Option<&str>, trusted: &TrustedKeys, origin: &Origin) -> Option<Base> {
    match crate::sign::standing(name, text, trusted, origin) {
        Standing::Ours(claim) => Some(Base {
            name: name.to_owned(),
            cluster: claim.cluster.as_deref().and_then(Ts::parse)?,
        }),
        _ => None,
    }
}

/// Reads what `place` holds.
pub fn load(
    place: Place<'_>,
    trusted: &TrustedKeys,
    origin: &Origin,
) -> Result<History, HistoryError> {
    let mut h = History::default();
    match place {
        Place::Local(dir) => {
            let store = Store::open(dir)?;
            h.bases = super::capture::bases(&store, trusted, origin);
            let (slices, refused) = slice::list(&dir.join(DIR), trusted, origin);
            h.slices = slices;
            h.refused = refused;
        }
        Place::Bucket(bucket) => {
            let list = bucket.list()?;
            let signed: Vec<&crate::remote::RemoteArchive> =
                list.iter().filter(|a| a.signed()).collect();
            for (a, text) in signed.iter().zip(bucket.signatures(&signed)?) {
                if let Some(b) = base_of(&a.name, text.as_deref(), trusted, origin) {
                    h.bases.push(b);
                }
            }
            let objects = bucket.list_sub(DIR, |n| super::parse_slice_name(n).is_some())?;
            let refs: Vec<&crate::remote::RemoteObject> = objects.iter().collect();
            for (o, text) in refs.iter().zip(bucket.object_signatures(&refs)?) {
                match slice::judge(o.bare_name(), text.as_deref(), trusted, origin) {
                    Ok(info) => h.slices.push(info),
                    Err(why) => h.refused.push((o.bare_name().to_owned(), why)),
                }
            }
            h.slices
                .sort_by(|a, b| a.closed.cmp(&b.closed).then(a.name.cmp(&b.name)));
        }
    }
    Ok(h)
}

/// The path of a local slice.
pub fn local_path(backup_dir: &Path, info: &SliceInfo) -> PathBuf {
    backup_dir.join(DIR).join(&info.name)
}

/// Reads the slice `info` from `place` (see [`slice::read`]).
pub fn read(
    place: Place<'_>,
    info: &SliceInfo,
    keys: &ReadKeys,
    trusted: &TrustedKeys,
    each: impl FnMut(Ts, &RawDocument) -> Result<(), String>,
) -> Result<(), SliceError> {
    match place {
        Place::Local(dir) => {
            let path = local_path(dir, info);
            slice::read(info, slice::Source::File(&path), keys, trusted, each)
        }
        Place::Bucket(bucket) => {
            let name = format!("{DIR}/{}", info.name);
            let missing = |e: crate::remote::RemoteError| SliceError::Damaged {
                name: info.name.clone(),
                why: format!("it cannot be read from {}: {e}", bucket.url()),
            };
            let text = bucket.signature(&name).map_err(missing)?;
            let stream = bucket.open(&name).map_err(missing)?;
            slice::read(
                info,
                slice::Source::Stream(Box::new(stream), text),
                keys,
                trusted,
                each,
            )
        }
    }
}
