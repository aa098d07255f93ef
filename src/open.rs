//! Opening an archive to read it, from `BACKUP_DIR` or from the bucket:
//! find it (`latest` means the newest backup of this project signed by a
//! trusted key), check its signature as far as can be checked up front,
//! open its layers, and check the signature against every byte as the
//! layers read them. Used by `verify`, `restore` and drills.
//!
//! `latest` believes nothing a listing says: a name is only a candidate,
//! its signature decides. In the bucket, names whose signature is not in
//! the listing are passed over without a request, signatures are fetched
//! a batch at a time, concurrently, newest first, and at most
//! [`MAX_EXAMINED`] of them, however many objects someone planted.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::archive::crypt::ReadKeys;
use crate::archive::layers::{self, OpenError};
use crate::archive::worker_threads;
use crate::remote::{Remote, RemoteError};
use crate::sign::{self, Checker, Claim, Origin, SignError, Standing, TrustedKeys};
use crate::store::{self, ArchiveName, Store, StoreError};

/// The most signatures `latest` examines in the bucket.
pub const MAX_EXAMINED: usize = 256;
/// Signatures fetched from the bucket at once.
const BATCH: usize = 16;

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
    /// No key at all to open it.
    #[error(transparent)]
    NoKey(#[from] crate::archive::crypt::CryptError),
    /// A remote archive name that is not an archive name.
    #[error(
        "{0:?} is not an archive name (backup_YYYY-MM-DDTHH-MM-SS.tar.gz[.age]); `cofre list --remote` shows them"
    )]
    BadName(String),
    /// `latest` found archives, none signed by a trusted key.
    #[error(
        "none of the {count} archives in {place} is signed by a trusted key (the newest, {newest}: {why}); \
         check BACKUP_IDENTITY_FILE and BACKUP_TRUSTED_KEYS, or name an archive and pass --allow-unsigned"
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
    /// `latest` in the bucket read its bound of signatures, none of them
    /// trusted, and stopped (an older archive may still be ours).
    #[error(
        "the {examined} newest of the {count} archives in {place} are not signed by a trusted key of \
         this project (the newest, {newest}: {why}), and `latest` reads no further, so that planted \
         objects cannot make it slow; name the archive to restore (`cofre list --remote` shows the \
         names), and check BACKUP_IDENTITY_FILE and BACKUP_TRUSTED_KEYS"
    )]
    LatestStopped {
        /// How many signatures were read.
        examined: usize,
        /// How many archives there are.
        count: usize,
        /// Where.
        place: String,
        /// The newest one.
        newest: String,
        /// Why it was not accepted.
        why: String,
    },
    /// A differential read without a trusted signature: it is the
    /// signature that names its full.
    #[error(
        "{0} is a differential archive and its signature is not trusted here, so which full \
         archive it applies to cannot be known; it needs its signature (check \
         BACKUP_TRUSTED_KEYS), even with --allow-unsigned"
    )]
    DiffUnsigned(String),
    /// A differential's full is not where the differential is.
    #[error(
        "{archive} is a differential: restoring it needs its full archive {base}, which is not \
         in {place}; copy {base} (and its .minisig) there, or read both from the bucket with --remote"
    )]
    BaseMissing {
        /// The differential.
        archive: String,
        /// The full it needs.
        base: String,
        /// Where it was looked for.
        place: String,
    },
    /// The full a differential names is there but is not the one it was
    /// made against.
    #[error(
        "{archive} is a differential of {base}, but the {base} found {why}; \
         it needs the very full archive it was made against"
    )]
    BaseMismatch {
        /// The differential.
        archive: String,
        /// The full it needs.
        base: String,
        /// What is wrong with the one found.
        why: String,
    },
    /// `latest` found trusted archives of several other projects, none of
    /// this one.
    #[error(
        "none of the {count} archives in {place} is a backup of {ours}, and they are backups of \
         {projects} other projects (the newest signed by a trusted key, {newest}, is {theirs}): \
         name the archive to restore, or run cofre for that project (--source)"
    )]
    OnlyForeign {
        /// Where.
        place: String,
        /// How many archives there are.
        count: usize,
        /// This project.
        ours: String,
        /// How many other projects.
        projects: usize,
        /// The newest trusted one.
        newest: String,
        /// What it is a backup of.
        theirs: String,
    },
}

impl crate::exit::Coded for OpenArchiveError {
    fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            OpenArchiveError::Store(e) => e.exit(),
            OpenArchiveError::Remote(e) => e.exit(),
            OpenArchiveError::Sign(e) => e.exit(),
            OpenArchiveError::Layers(e) => e.exit(),
            OpenArchiveError::NoKey(e) => e.exit(),
            OpenArchiveError::BadName(_) => Exit::Usage,
            OpenArchiveError::DiffUnsigned(_)
            | OpenArchiveError::BaseMissing { .. }
            | OpenArchiveError::BaseMismatch { .. } => Exit::Failure,
            OpenArchiveError::NoTrustedLatest { .. }
            | OpenArchiveError::LatestStopped { .. }
            | OpenArchiveError::OnlyForeign { .. } => Exit::Failure,
        }
    }
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
    /// This project: `latest` is its newest archive.
    pub origin: &'a Origin,
    /// Accept the archive named (never `latest`'s choice) although its
    /// signature is missing, broken or untrusted.
    pub allow_unsigned: bool,
}

/// What reading a project's archives takes: the keys that decrypt, the
/// keys whose signatures are trusted, and the project.
pub struct Access {
    /// Keys to decrypt with.
    pub keys: ReadKeys,
    /// Keys whose signatures are trusted.
    pub trusted: TrustedKeys,
    /// The project whose archives these are.
    pub origin: Origin,
}

impl Access {
    /// A request to open `arg` (`latest`, a name or a path) from
    /// `backup_dir`, or from `remote` when given.
    pub fn request<'a>(
        &'a self,
        backup_dir: &'a Path,
        arg: &'a str,
        remote: Option<&'a Remote>,
        allow_unsigned: bool,
    ) -> Request<'a> {
        Request {
            arg,
            backup_dir,
            remote,
            keys: &self.keys,
            trusted: &self.trusted,
            origin: &self.origin,
            allow_unsigned,
        }
    }
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

/// The archive `arg` names: `latest` is the newest backup of this
/// project signed by a trusted key (`--allow-unsigned` does not change
/// which: it only lets the archive named be read).
pub fn resolve(req: &Request<'_>) -> Result<Found, OpenArchiveError> {
    let found = resolve_any(req);
    // Without any key, nothing can be opened, and nothing trusted either
    // (the identity file carries the signing key): that is the error to
    // show, not the untrusted signatures it causes.
    if let Err(
        OpenArchiveError::NoTrustedLatest { newest, .. }
        | OpenArchiveError::LatestStopped { newest, .. }
        | OpenArchiveError::OnlyForeign { newest, .. },
    ) = &found
    {
        let local = req.remote.is_none().then(|| req.backup_dir.join(newest));
        if let Some(e) = no_key(req, newest, local.as_deref()) {
            return Err(e.into());
        }
    }
    found
}

/// The error when `name` is encrypted and no key is at hand: no identity
/// file exists and no passphrase is set. A local archive's age header says
/// whether it wants a passphrase or an identity.
fn no_key(
    req: &Request<'_>,
    name: &str,
    local: Option<&Path>,
) -> Option<crate::archive::crypt::CryptError> {
    use crate::archive::crypt::CryptError;
    let encrypted = ArchiveName::parse(name).is_some_and(|n| n.encrypted) || name.ends_with(".age");
    let have = req.keys.passphrase.is_some() || req.keys.identity_files.iter().any(|p| p.exists());
    if !encrypted || have {
        return None;
    }
    let wants_passphrase = local
        .and_then(|p| store::open_archive(p, false).ok())
        .and_then(crate::archive::crypt::describe_header)
        .is_some_and(|d| d.contains("passphrase"));
    Some(if wants_passphrase {
        CryptError::NeedPassphrase(name.to_owned())
    } else {
        CryptError::NoIdentity {
            archive: name.to_owned(),
            identity: req.keys.identity_files.last().cloned().unwrap_or_default(),
        }
    })
}

fn resolve_any(req: &Request<'_>) -> Result<Found, OpenArchiveError> {
    match (req.remote, req.arg) {
        (Some(bucket), "latest") => latest_remote(req, bucket),
        (Some(_), name) => {
            if ArchiveName::parse(name).is_none() {
                return Err(OpenArchiveError::BadName(name.to_owned()));
            }
            Ok(Found::Remote(name.to_owned()))
        }
        (None, "latest") => latest_local(req),
        (None, arg) => {
            let (path, inside) = Store::resolve(req.backup_dir, arg)?;
            Ok(Found::Local(path, inside))
        }
    }
}

/// Goes through candidates newest first, remembering why each was passed
/// over, until one is this project's and trusted.
///
/// When none is, and every trusted archive there is a backup of one and
/// the same other project (a restore on a new machine, run from another
/// directory), the newest of those is taken, and said so loudly. Trusted
/// archives of several other projects, and none of this one: refused,
/// naming them, since nothing says which is wanted.
struct Latest<'a> {
    req: &'a Request<'a>,
    count: usize,
    skipped: Vec<(String, String)>,
    /// The newest trusted archive of another project, and its claim.
    foreign: Option<(Found, Claim)>,
    /// The other projects seen.
    sources: std::collections::BTreeSet<String>,
    refused: Option<(String, String)>,
    /// How many signatures were read before the bound stopped the search
    /// (`None`: it was not stopped).
    stopped: Option<usize>,
}

impl<'a> Latest<'a> {
    fn new(req: &'a Request<'a>, count: usize) -> Self {
        Latest {
            req,
            count,
            skipped: Vec::new(),
            foreign: None,
            sources: std::collections::BTreeSet::new(),
            refused: None,
            stopped: None,
        }
    }

    /// Whether `found` (with its signature `text`) is the one.
    fn consider(&mut self, found: &Found, text: Option<&str>) -> bool {
        let name = found.name();
        let standing = sign::standing(&name, text, self.req.trusted, self.req.origin);
        match &standing {
            Standing::Ours(_) => {
                if let Some((first, why)) = self.skipped.first() {
                    tracing::warn!(
                        "`latest` is {name}: passed over {} newer archive{} that {} not this \
                         project's trusted backups ({first} {why})",
                        self.skipped.len(),
                        if self.skipped.len() == 1 { "" } else { "s" },
                        if self.skipped.len() == 1 { "is" } else { "are" },
                    );
                }
                return true;
            }
            Standing::Foreign(claim) => {
                self.sources.insert(
                    claim
                        .origin
                        .as_ref()
                        .map_or_else(String::new, |o| o.source.clone()),
                );
                if self.foreign.is_none() {
                    self.foreign = Some((found.clone(), claim.clone()));
                }
            }
            _ => {
                if self.refused.is_none() {
                    let why = match sign::prepare(&name, text, self.req.trusted) {
                        Err(e) => e.to_string(),
                        Ok(_) => standing.refusal().unwrap_or_default(),
                    };
                    self.refused = Some((name.clone(), why));
                }
            }
        }
        let why = standing.refusal().unwrap_or_default();
        self.skipped.push((name, why));
        false
    }

    /// No archive of this project: the newest of the one other project
    /// there is, or why there is none to take.
    fn finish(self, place: String) -> Result<Found, OpenArchiveError> {
        match self.foreign {
            Some((found, claim)) if self.sources.len() == 1 => {
                if let Some(examined) = self.stopped {
                    tracing::warn!(
                        "`latest`: read the signatures of the {examined} newest signed archives in \
                         {place} and stopped; name an archive to read an older one"
                    );
                }
                tracing::warn!(
                    "no archive in {place} is a backup of {}; every archive there signed by a \
                     trusted key is {}, so `latest` is the newest of them: {}",
                    self.req.origin.source,
                    claim.describe_origin(),
                    found.name()
                );
                Ok(found)
            }
            Some((found, claim)) => Err(OpenArchiveError::OnlyForeign {
                place,
                count: self.count,
                ours: self.req.origin.source.clone(),
                projects: self.sources.len(),
                newest: found.name(),
                theirs: claim.describe_origin(),
            }),
            None => {
                let (newest, why) = self.refused.unwrap_or_default();
                if let Some(examined) = self.stopped {
                    return Err(OpenArchiveError::LatestStopped {
                        examined,
                        count: self.count,
                        place,
                        newest,
                        why,
                    });
                }
                Err(OpenArchiveError::NoTrustedLatest {
                    place,
                    count: self.count,
                    newest,
                    why,
                })
            }
        }
    }
}

fn latest_local(req: &Request<'_>) -> Result<Found, OpenArchiveError> {
    let list = Store::open(req.backup_dir)?.list()?;
    if list.is_empty() {
        return Err(StoreError::Empty(req.backup_dir.to_path_buf()).into());
    }
    let mut latest = Latest::new(req, list.len());
    for a in &list {
        let text = match sign::read_sig(&a.path) {
            Ok(t) => t,
            Err(e) => Some(format!("unreadable: {e}")),
        };
        let found = Found::Local(a.path.clone(), true);
        if latest.consider(&found, text.as_deref()) {
            return Ok(found);
        }
    }
    latest.finish(req.backup_dir.display().to_string())
}

fn latest_remote(req: &Request<'_>, bucket: &Remote) -> Result<Found, OpenArchiveError> {
    let list = bucket.list()?;
    if list.is_empty() {
        return Err(RemoteError::NotFound {
            url: bucket.url().to_owned(),
            name: "latest".into(),
        }
        .into());
    }
    let mut latest = Latest::new(req, list.len());
    let signed: Vec<&crate::remote::RemoteArchive> = list
        .iter()
        .filter(|a| {
            if !a.signed() {
                latest
                    .skipped
                    .push((a.name.clone(), "is not signed".into()));
            }
            a.signed()
        })
        .take(MAX_EXAMINED)
        .collect();
    for batch in signed.chunks(BATCH) {
        let texts = bucket.signatures(batch)?;
        for (a, text) in batch.iter().zip(texts) {
            let found = Found::Remote(a.name.clone());
            if latest.consider(&found, text.as_deref()) {
                return Ok(found);
            }
        }
    }
    if signed.len() == MAX_EXAMINED && list.iter().filter(|a| a.signed()).count() > MAX_EXAMINED {
        latest.stopped = Some(MAX_EXAMINED);
    }
    latest.finish(bucket.url().to_owned())
}

/// Opens what [`resolve`] found, its signature checked up front and then
/// against every byte as it is read.
pub fn open_found(req: &Request<'_>, found: &Found) -> Result<OpenArchive, OpenArchiveError> {
    let name = found.name();
    let local = match found {
        Found::Local(p, _) => Some(p.as_path()),
        Found::Remote(_) => None,
    };
    if let Some(e) = no_key(req, &name, local) {
        return Err(e.into());
    }
    let (checker, claim, unsigned) = match prepare(req, found) {
        Ok(p) => {
            let claim = p.claim.clone();
            if !claim.is_of(req.origin) {
                tracing::warn!(
                    "{name} is {}, not of this project ({}); reading it as asked",
                    claim.describe_origin(),
                    req.origin.source
                );
            }
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

/// What reading an archive takes: the archive itself, and for a
/// differential, first its full (found in the same place, its signature
/// trusted, itself a full, and after reading checked to be the very one
/// the differential names, by the hash of its manifest).
#[derive(Debug, Clone)]
pub struct Chain {
    /// The full to read first, for a differential.
    pub base: Option<Found>,
    /// The archive asked for.
    pub top: Found,
    /// What the top's signature claims (when it is trusted).
    pub top_claim: Option<Claim>,
    /// What the full's signature claims.
    pub base_claim: Option<Claim>,
}

impl Chain {
    /// The differential's name, when this is a chain.
    fn needed(&self) -> Option<&crate::archive::manifest::BaseRef> {
        self.top_claim.as_ref().and_then(|c| c.base.as_ref())
    }

    /// Checks, once the full was read, that its manifest is the one the
    /// differential names.
    pub fn check_base(&self, manifest_hash: &str) -> Result<(), OpenArchiveError> {
        match self.needed() {
            Some(b) if b.manifest != manifest_hash => Err(OpenArchiveError::BaseMismatch {
                archive: self.top.name(),
                base: b.name.clone(),
                why: "holds another manifest (it was replaced or rewritten)".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Bytes restoring the chain writes at most: the full's files and
    /// the top's whole (the database is restored from the top's dump
    /// only), or what each says of the part asked for.
    pub fn restore_bytes(&self, files: bool, dump: bool) -> Option<u64> {
        let part = |c: &Claim, files: bool, dump: bool| -> Option<u64> {
            let total = c.bytes?;
            Some(match (files, dump, c.file_bytes) {
                (true, false, Some(f)) => f,
                (false, true, Some(f)) => total.saturating_sub(f),
                (false, false, _) => 0,
                _ => total,
            })
        };
        let top = part(self.top_claim.as_ref()?, files, dump)?;
        match &self.base {
            None => Some(top),
            Some(_) => Some(top + part(self.base_claim.as_ref()?, files, false)?),
        }
    }
}

/// The chain that reading `found` takes: itself, and its full when it is
/// a differential. A differential must be signed by a trusted key (its
/// signature names its full, even with `--allow-unsigned`); its full must
/// lie in the same place, be signed by a trusted key and be a full.
pub fn chain(req: &Request<'_>, found: Found) -> Result<Chain, OpenArchiveError> {
    let name = found.name();
    let claim = prepare(req, &found).ok().map(|p| p.claim);
    let is_diff = ArchiveName::parse(&name).is_some_and(|n| n.diff)
        || claim.as_ref().is_some_and(|c| c.base.is_some());
    if !is_diff {
        return Ok(Chain {
            base: None,
            top: found,
            top_claim: claim,
            base_claim: None,
        });
    }
    let Some(base_ref) = claim.as_ref().and_then(|c| c.base.clone()) else {
        return Err(OpenArchiveError::DiffUnsigned(name));
    };
    let missing = |place: String| OpenArchiveError::BaseMissing {
        archive: name.clone(),
        base: base_ref.name.clone(),
        place,
    };
    let mismatch = |why: String| OpenArchiveError::BaseMismatch {
        archive: name.clone(),
        base: base_ref.name.clone(),
        why,
    };
    if ArchiveName::parse(&base_ref.name).is_none_or(|n| n.diff) {
        return Err(mismatch("is not the name of a full archive".into()));
    }
    let base = match (&found, req.remote) {
        (Found::Local(path, inside), _) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            let p = dir.join(&base_ref.name);
            if std::fs::symlink_metadata(&p).is_err() {
                return Err(missing(dir.display().to_string()));
            }
            Found::Local(p, *inside)
        }
        (Found::Remote(_), Some(bucket)) => {
            if bucket.signature(&base_ref.name)?.is_none() {
                return Err(missing(bucket.url().to_owned()));
            }
            Found::Remote(base_ref.name.clone())
        }
        (Found::Remote(n), None) => return Err(OpenArchiveError::BadName(n.clone())),
    };
    let base_claim = match prepare(req, &base) {
        Ok(p) => p.claim,
        Err(OpenArchiveError::Sign(SignError::Missing { .. })) => {
            return Err(missing(match &base {
                Found::Local(p, _) => format!(
                    "{} with its signature",
                    p.parent().unwrap_or(Path::new(".")).display()
                ),
                Found::Remote(_) => req.remote.map(|r| r.url().to_owned()).unwrap_or_default(),
            }));
        }
        Err(e) => return Err(mismatch(format!("does not verify: {e}"))),
    };
    if base_claim.base.is_some() {
        return Err(mismatch("is itself a differential".into()));
    }
    if base_claim.origin != claim.as_ref().and_then(|c| c.origin.clone()) {
        return Err(mismatch(format!(
            "is {}, not of the same project",
            base_claim.describe_origin()
        )));
    }
    Ok(Chain {
        base: Some(base),
        top: found,
        top_claim: claim,
        base_claim: Some(base_claim),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;

    #[test]
    fn latest_is_the_newest_trusted_archive_of_this_project() {
        let f = Fixture::new();
        let ours = f.plant_signed("backup_2026-01-01T00-00-00.tar.gz.age", None);
        f.plant_signed(
            "backup_2026-02-01T00-00-00.tar.gz.age",
            Some(std::path::Path::new("/srv/other")),
        );
        std::fs::write(
            f.backup_dir.join("backup_2026-03-01T00-00-00.tar.gz.age"),
            b"planted",
        )
        .unwrap();
        let mut access = f.access();
        // (A passphrase is a key: `latest` is chosen, not "no key".)
        access.keys.passphrase = Some(crate::secret::Secret::unregistered("x".into()));
        for allow_unsigned in [false, true] {
            let req = access.request(&f.backup_dir, "latest", None, allow_unsigned);
            match resolve(&req).unwrap() {
                Found::Local(p, true) => assert_eq!(p, ours),
                other => panic!("{other:?}"),
            }
        }
        // Only the foreign one left: it is `latest` (one other project).
        std::fs::remove_file(&ours).unwrap();
        let req = access.request(&f.backup_dir, "latest", None, false);
        assert_eq!(
            resolve(&req).unwrap().name(),
            "backup_2026-02-01T00-00-00.tar.gz.age"
        );
        // Two other projects: refused, naming them.
        f.plant_signed(
            "backup_2026-01-15T00-00-00.tar.gz.age",
            Some(std::path::Path::new("/srv/third")),
        );
        let err = resolve(&req).unwrap_err();
        assert!(
            matches!(err, OpenArchiveError::OnlyForeign { projects: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn without_any_key_the_missing_key_is_the_error() {
        let f = Fixture::new();
        f.plant_signed("backup_2026-01-01T00-00-00.tar.gz.age", None);
        // No identity file here, and the signing key's public half is not
        // trusted without one either: the first error says "no key".
        let access = Access {
            keys: f.keys.read_keys(&[]),
            trusted: TrustedKeys::default(),
            origin: f.origin(),
        };
        let req = access.request(&f.backup_dir, "latest", None, false);
        let err = resolve(&req).unwrap_err();
        assert!(matches!(err, OpenArchiveError::NoKey(_)), "{err}");
        assert_eq!(crate::exit::Coded::exit(&err), crate::exit::Exit::NoKey);
    }
}
