//! Oplog slices: `oplog_<close time>.bson.zst.age` in `BACKUP_DIR/oplog`,
//! age (the archives' recipients) around zstd around the entries' raw BSON
//! one after another: a valid `oplog.bson` (`age -d | zstd -d | bsondump`),
//! signed like an archive with a claim of what it covers
//! ([`crate::sign::OplogClaim`]).
//!
//! Reading one checks everything before an entry is used: the signature
//! (up front for the claim, then against every byte), the claim (this
//! project's, its own name), each entry (valid BSON, a timestamp inside
//! the claim's range, in order), and the count.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use mongodb::bson::RawDocument;

use super::Ts;
use crate::archive::crypt::{Encrypting, ReadKeys};
use crate::archive::layers::{self, FileSink, TeeSink};
use crate::archive::{Compression, worker_threads};
use crate::sign::{Claim, OplogClaim, Origin, SigningKey, Standing, TrustedKeys};
use crate::store::Store;

/// Why a slice cannot be written or used.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    /// Writing it.
    #[error(
        "cannot write the oplog slice {name} in {dir}: {source}; check that BACKUP_DIR is writable and has space"
    )]
    Write {
        /// The slice.
        name: String,
        /// Where.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Its signature (missing, untrusted, another project's, broken).
    #[error("the oplog slice {name} {why}")]
    Untrusted {
        /// The slice.
        name: String,
        /// Why.
        why: String,
    },
    /// Its contents do not match what its signature claims, or are not
    /// valid BSON.
    #[error("the oplog slice {name} is damaged: {why}")]
    Damaged {
        /// The slice.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Signing or the store.
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    /// The store.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The layers (key, format).
    #[error(transparent)]
    Open(#[from] layers::OpenError),
}

impl crate::exit::Coded for SliceError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            SliceError::Sign(e) => e.exit(),
            SliceError::Store(e) => e.exit(),
            SliceError::Open(e) => e.exit(),
            _ => crate::exit::Exit::Failure,
        }
    }
}

/// A slice as its (trusted) signature describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// Its file name.
    pub name: String,
    /// When it was closed (from its name).
    pub closed: DateTime<Utc>,
    /// Where the previous slice ended.
    pub after: Ts,
    /// Its last entry (`after` when it holds none).
    pub until: Ts,
    /// Entries.
    pub count: u64,
    /// Nothing was written on the server after `until` up to this time.
    pub proven: DateTime<Utc>,
}

impl SliceInfo {
    /// From a trusted claim about `name`.
    pub fn from_claim(name: &str, claim: &OplogClaim) -> Option<SliceInfo> {
        Some(SliceInfo {
            name: name.to_owned(),
            closed: super::parse_slice_name(name)?,
            after: Ts::parse(&claim.after)?,
            until: Ts::parse(&claim.until)?,
            count: claim.count,
            proven: Utc.timestamp_opt(claim.proven, 0).single()?,
        })
    }

    /// Wall time up to which this slice's history is complete: `proven`,
    /// never before its last entry.
    pub fn complete_until(&self) -> DateTime<Utc> {
        self.proven.max(self.until.time())
    }
}

/// What a slice to write holds.
#[derive(Debug)]
pub struct NewSlice<'a> {
    /// Its name.
    pub name: &'a str,
    /// Where the previous one ended.
    pub after: Ts,
    /// The last entry's timestamp (`after` for none).
    pub until: Ts,
    /// Entries.
    pub count: u64,
    /// The wall time the server was proven idle after `until`.
    pub proven: DateTime<Utc>,
}

/// Writes a slice into `store` (the oplog directory): `fill` writes the
/// entries' BSON into the writer it is given; then the slice is signed,
/// its signature and then itself get their final names.
pub fn write(
    store: &Store,
    slice: &NewSlice<'_>,
    encryption: Option<Encrypting>,
    signing: &SigningKey,
    origin: &Origin,
    fill: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> Result<PathBuf, SliceError> {
    let fail = |source: io::Error| SliceError::Write {
        name: slice.name.to_owned(),
        dir: store.dir().to_path_buf(),
        source,
    };
    let tmp = store.temp_file()?;
    let claim = Claim {
        origin: Some(origin.clone()),
        oplog: Some(OplogClaim {
            after: slice.after.to_string(),
            until: slice.until.to_string(),
            count: slice.count,
            proven: slice.proven.timestamp(),
        }),
        ..Claim::about(slice.name)
    };
    let mut signer = signing.start_claim(claim);
    let file = tmp.as_file().try_clone().map_err(fail)?;
    let bottom = TeeSink::new(Box::new(FileSink::new(file)), Box::new(signer.feeder()));
    let mut sink = layers::writer(
        Box::new(bottom),
        encryption,
        Compression::Zstd(3),
        worker_threads().min(2),
    )
    .map_err(fail)?;
    fill(&mut sink).map_err(fail)?;
    sink.finish().map_err(fail)?;
    let signature = signer.finish(0, 0)?;
    store.write_signature(slice.name, &signature)?;
    Ok(store.persist(tmp, slice.name)?)
}

/// The slices in `dir` signed by a trusted key for this project, oldest
/// first; the others (unsigned, foreign, damaged signatures) with why.
pub fn list(
    dir: &Path,
    trusted: &TrustedKeys,
    origin: &Origin,
) -> (Vec<SliceInfo>, Vec<(String, String)>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (good, bad);
    };
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if super::parse_slice_name(&name).is_none() || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let text = crate::sign::read_sig(&e.path()).ok().flatten();
        match judge(&name, text.as_deref(), trusted, origin) {
            Ok(info) => good.push(info),
            Err(why) => bad.push((name, why)),
        }
    }
    good.sort_by(|a, b| a.closed.cmp(&b.closed).then(a.name.cmp(&b.name)));
    bad.sort();
    (good, bad)
}

/// A slice's standing from its signature text.
pub fn judge(
    name: &str,
    text: Option<&str>,
    trusted: &TrustedKeys,
    origin: &Origin,
) -> Result<SliceInfo, String> {
    match crate::sign::standing(name, text, trusted, origin) {
        Standing::Ours(claim) => claim
            .oplog
            .as_ref()
            .and_then(|o| SliceInfo::from_claim(name, o))
            .ok_or_else(|| "is signed, but not as an oplog slice".to_owned()),
        other => Err(other.refusal().unwrap_or_default()),
    }
}

/// Where a slice's bytes come from.
pub enum Source<'a> {
    /// A file (in `BACKUP_DIR/oplog`).
    File(&'a Path),
    /// A stream (from the bucket) and its signature text.
    Stream(Box<dyn Read + Send>, Option<String>),
}

/// Reads the slice `info` (whose claim was trusted when listed), checking
/// it against its signature and claim, and hands each entry (with its
/// timestamp) to `each`, in order. Entries after `stop` are still checked
/// but not handed over.
pub fn read(
    info: &SliceInfo,
    source: Source<'_>,
    keys: &ReadKeys,
    trusted: &TrustedKeys,
    mut each: impl FnMut(Ts, &RawDocument) -> Result<(), String>,
) -> Result<(), SliceError> {
    let damaged = |why: String| SliceError::Damaged {
        name: info.name.clone(),
        why,
    };
    let (input, text): (Box<dyn Read + Send>, Option<String>) = match source {
        Source::File(path) => {
            let file = crate::store::open_archive(path, true)?;
            let text = crate::sign::read_sig(path).map_err(|e| damaged(e.to_string()))?;
            (Box::new(file), text)
        }
        Source::Stream(r, text) => (r, text),
    };
    let prepared = crate::sign::prepare(&info.name, text.as_deref(), trusted)?;
    let claimed = prepared
        .claim
        .oplog
        .as_ref()
        .and_then(|o| SliceInfo::from_claim(&info.name, o));
    if claimed.as_ref() != Some(info) {
        return Err(SliceError::Untrusted {
            name: info.name.clone(),
            why: "has a signature that no longer says what it said when listed".into(),
        });
    }
    let mut checker = prepared.start();
    let observer: crate::archive::pipe::Observer = Box::new(checker.feeder());
    let (stream, _) = layers::open(input, keys, &info.name, worker_threads(), Some(observer))?;
    let mut reader = crate::mongo::load::BsonReader::new(
        BufReader::with_capacity(1 << 20, stream),
        Path::new(&info.name),
    );
    let mut count = 0u64;
    let mut prev = info.after;
    loop {
        let doc = reader.next_doc().map_err(|e| damaged(e.to_string()))?;
        let Some(doc) = doc else { break };
        let ts = doc
            .get_timestamp("ts")
            .map(Ts::from)
            .map_err(|_| damaged(format!("entry {} has no timestamp", count + 1)))?;
        if ts <= info.after || ts > info.until || ts < prev {
            return Err(damaged(format!(
                "entry {} ({ts}) is outside {}..{} or out of order",
                count + 1,
                info.after,
                info.until
            )));
        }
        prev = ts;
        count += 1;
        each(ts, &doc).map_err(&damaged)?;
    }
    if count != info.count {
        return Err(damaged(format!(
            "it holds {count} entries where its signature says {}",
            info.count
        )));
    }
    checker.finish()?;
    Ok(())
}
