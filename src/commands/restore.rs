//! `cofre restore`: files and database back, never harming the target.
//!
//! The steps, in order: check the target and the flags; open the archive
//! (its signature checked up front, then against every byte); check free
//! space; extract into a staging directory inside the target; verify
//! every entry against the manifest and the signature; check where the
//! restored symlinks lead; plan and apply the move into place; give
//! directories their modes and times; restore the database from the
//! staged dump; remove the staging directory.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::archive::reader;
use crate::cli::RestoreArgs;
use crate::config::{ConfigError, Settings};
use crate::format::human;
use crate::logging::{self, Verbosity};
use crate::mongo::{self, restore::Fate, restore::Report};
use crate::open::{self, OpenArchive};
use crate::restore::extract::{Staged, split_link_record};
use crate::restore::{self as rs, ExtractOptions, Extractor, RestoreError, Staging, links, place};
use crate::secret::Secret;
use crate::store::{ArchiveName, Store};

use super::{Outcome, duration_flag, read_keys, trusted_keys};

/// Why a restore was refused after the archive was read.
#[derive(Debug, thiserror::Error)]
pub enum RefusedError {
    /// `--include` matched nothing.
    #[error(
        "no entry of {archive} matches --include {patterns}; nothing was restored (`cofre verify` lists what the archive holds)"
    )]
    NothingIncluded {
        /// The archive.
        archive: String,
        /// The patterns.
        patterns: String,
    },
    /// A restored symlink would point outside the target.
    #[error(
        "{archive} holds a symlink {path} -> {target:?}, which leads outside the restore target; \
         nothing was restored (pass --allow-outside-symlinks to restore such links as they are; \
         they are never followed while restoring)"
    )]
    OutsideSymlink {
        /// The archive.
        archive: String,
        /// The link.
        path: String,
        /// Where it points.
        target: String,
    },
}

/// The database target a command line asks for.
fn mongo_target(args: &RestoreArgs, settings: &Settings) -> mongo::restore::Target {
    let uri = match &args.mongo_uri {
        Some(u) => {
            crate::secret::register_uri(u);
            Some(Secret::unregistered(u.clone()))
        }
        None => settings.mongodb_uri.clone(),
    };
    mongo::restore::Target {
        uri,
        to_db: args.to_db.clone(),
        drop: args.drop,
    }
}

/// Prints a database restore report, one line per collection.
pub fn print_report(report: &Report) {
    for (ns, fate) in &report.collections {
        match fate {
            Fate::Restored { documents, indexes } => {
                println!("restored collection {ns}: {documents} documents, {indexes} indexes");
            }
            Fate::Exists => println!(
                "left alone collection {ns}: it already exists (pass --drop to replace it)"
            ),
            Fate::WouldRestore { documents, exists } => {
                let how = match (exists, report.drop) {
                    (false, _) => "",
                    (true, true) => " (exists: would be replaced)",
                    (true, false) => " (exists: would be left alone without --drop)",
                };
                println!("would restore collection {ns}: {documents} documents{how}");
            }
        }
    }
    for n in &report.notes {
        println!("note: {n}");
    }
}

fn include_matcher(patterns: &[String]) -> Result<Option<Gitignore>, ConfigError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let bad = |p: &str, why: String| ConfigError::Invalid {
        var: "--include".into(),
        value: p.to_owned(),
        expected: format!("a gitignore-style pattern such as 'public/**' ({why})"),
    };
    let mut b = GitignoreBuilder::new("");
    for p in patterns {
        b.add_line(None, p).map_err(|e| bad(p, e.to_string()))?;
    }
    b.build()
        .map(Some)
        .map_err(|e| bad(&patterns.join(","), e.to_string()))
}

/// Runs `cofre restore`.
#[tracing::instrument(name = "restore", skip_all)]
pub fn run(
    args: &RestoreArgs,
    settings: &Settings,
    verbosity: Verbosity,
) -> Result<Outcome, anyhow::Error> {
    let wait = duration_flag("--wait", args.lock.wait.as_deref())?;
    let target_db = mongo_target(args, settings);
    let include = include_matcher(&args.includes)?;
    if let Some(dir) = &args.mongo_dir {
        let report = mongo::restore::restore_dir(dir, &target_db, args.dry_run)?;
        print_report(&report);
        return Ok(report.outcome());
    }
    let arg = args
        .archive
        .as_deref()
        .expect("clap requires ARCHIVE without --mongo-dir");
    let keys = read_keys(settings, &args.keys);
    let trusted = trusted_keys(settings, &keys)?;
    let (remote, arg) = remote_source(args, settings, arg)?;
    let req = open::Request {
        arg: &arg,
        backup_dir: &settings.backup_dir,
        remote: remote.as_ref(),
        keys: &keys,
        trusted: &trusted,
        allow_unsigned: args.allow_unsigned,
    };
    let found = open::resolve(&req)?;
    let name = found.name();
    let want_files = !args.mongo_only;
    let want_mongo = !args.files_only;
    let target = std::path::absolute(match &args.to {
        Some(t) => t.clone(),
        None => PathBuf::from(ArchiveName::stem(&name)),
    })?;
    if want_files {
        check_target(&target, args)?;
    }
    // Restoring into the project itself: no backup may read it meanwhile.
    let _lock = match settings.source.canonicalize() {
        Ok(src) if want_files && !args.dry_run && target.starts_with(&src) => {
            Some(Store::create(&settings.backup_dir)?.lock(wait)?)
        }
        _ => None,
    };
    let opts = ExtractOptions {
        files: want_files,
        mongo: want_mongo,
        include,
        dry_run: args.dry_run,
        existing_target: Some(target.clone()),
        same_owner: args.same_owner,
        same_permissions: args.same_permissions,
    };
    let clock = Instant::now();
    tracing::info!(archive = %name, target = %target.display(), dry_run = args.dry_run, "restore started");
    let mut opened = open::open_found(&req, &found)?;
    if args.dry_run {
        return dry_run(&mut opened, opts, &target, &target_db, verbosity);
    }
    // Files are staged inside the target; a database-only restore stages
    // in a private directory beside where the files would have gone.
    let staging_target = if want_files {
        target.clone()
    } else {
        private_dir_beside(&target)?
    };
    let staging = Staging::new(&staging_target)?;
    check_free_space(&opened, &staging)?;
    let mut extractor = Extractor::new(&name, Some(staging.dir()), opts, Box::new(io::sink()))
        .context("cannot prepare the staging directory")?;
    let progress = logging::progress(verbosity, "restoring");
    let stream = progress.wrap_read(std::mem::replace(&mut opened.stream, Box::new(io::empty())));
    let summary = reader::read_archive(stream, &mut extractor, &name)?;
    progress.finish_and_clear();
    opened.check_signature()?;

    let (files, bytes, entries) = (extractor.files, extractor.bytes, extractor.entries);
    if want_files && !args.includes.is_empty() && entries == 0 {
        return Err(RefusedError::NothingIncluded {
            archive: name,
            patterns: args.includes.join(", "),
        }
        .into());
    }
    let staged = extractor
        .into_staged()
        .context("cannot finish the staging directory")?;
    let has_mongo = summary.info.mongodb.is_some();
    // The archive verified. Before anything is moved into place, make sure
    // the database part has somewhere to go, so a restore does not stop
    // halfway for want of a setting.
    if want_mongo && has_mongo && target_db.uri.is_none() {
        return Err(mongo::MongoError::NoTarget.into());
    }
    if args.mongo_only && !has_mongo {
        bail!("{name} holds no database dump; nothing was restored");
    }
    if want_files {
        check_links(&name, &staging, &staged, args)?;
        place_files(&staging, &staged)?;
        println!(
            "restored {files} files ({}) from {name} into {}",
            human(bytes),
            target.display()
        );
    }
    let mut outcome = Outcome::Success;
    if want_mongo && has_mongo {
        let dump = staging.path().join("mongodb");
        let report = mongo::restore::restore_dir(&dump, &target_db, false)?;
        print_report(&report);
        outcome = report.outcome();
    }
    tracing::info!(
        archive = %name,
        files,
        bytes,
        seconds = format!("{:.2}", clock.elapsed().as_secs_f64()),
        "restore finished"
    );
    if let Err(e) = staging.finish(true) {
        tracing::warn!("could not remove the staging directory: {e}");
    }
    if !want_files {
        let _ = std::fs::remove_dir(&staging_target);
    }
    Ok(outcome)
}

/// The bucket an archive comes from, if any: an `s3://` argument names
/// its own; `--remote` means `BACKUP_REMOTE`. Returns it and the name to
/// look for.
fn remote_source(
    args: &RestoreArgs,
    settings: &Settings,
    arg: &str,
) -> Result<(Option<crate::remote::Remote>, String), anyhow::Error> {
    if arg.starts_with("s3://") {
        let (remote, name) = settings
            .remote_for_url(arg)
            .ok_or_else(|| ConfigError::Invalid {
                var: "ARCHIVE".into(),
                value: arg.to_owned(),
                expected: "s3://BUCKET/PREFIX/backup_YYYY-MM-DDTHH-MM-SS.tar.gz.age".into(),
            })?;
        return Ok((Some(crate::remote::Remote::connect(&remote)?), name));
    }
    if args.remote {
        return Ok((Some(super::bucket(settings)?), arg.to_owned()));
    }
    Ok((None, arg.to_owned()))
}

/// Refuses a target that is a file, or not empty without `--force`.
fn check_target(target: &Path, args: &RestoreArgs) -> Result<(), RestoreError> {
    match std::fs::metadata(target) {
        Ok(m) if !m.is_dir() => return Err(RestoreError::TargetNotDir(target.to_path_buf())),
        _ => {}
    }
    let nonempty = rs::is_nonempty_dir(target).map_err(|source| RestoreError::Prepare {
        path: target.to_path_buf(),
        source,
    })?;
    if nonempty && !args.force && !args.dry_run {
        return Err(RestoreError::TargetNotEmpty(target.to_path_buf()));
    }
    Ok(())
}

/// A new private directory (0700) beside `target`, for a database-only
/// restore's staging.
fn private_dir_beside(target: &Path) -> Result<PathBuf, RestoreError> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    let dir = tempfile::Builder::new()
        .prefix(rs::STAGING_PREFIX)
        .tempdir_in(parent)
        .map_err(|source| RestoreError::Prepare {
            path: parent.to_path_buf(),
            source,
        })?;
    Ok(dir.keep())
}

/// Refuses to start when the signed size of the archive cannot fit.
fn check_free_space(opened: &OpenArchive, staging: &Staging) -> Result<(), RestoreError> {
    let (Some(need), Ok(free)) = (
        opened.claim.as_ref().and_then(|c| c.bytes),
        staging.free_bytes(),
    ) else {
        return Ok(());
    };
    if need > free {
        return Err(RestoreError::NoSpace {
            path: staging.target().to_path_buf(),
            need: human(need),
            free: human(free),
        });
    }
    Ok(())
}

/// Checks every restored symlink against the tree it will live in.
fn check_links(
    name: &str,
    staging: &Staging,
    staged: &Staged,
    args: &RestoreArgs,
) -> Result<(), anyhow::Error> {
    if args.allow_outside_symlinks || staged.links.count() == 0 {
        return Ok(());
    }
    let files = staging.dir().open_dir(b"files")?;
    let mut layers = vec![&files];
    if !staging.target_was_empty() {
        layers.push(staging.target_dir());
    }
    let views = links::Views { layers };
    let mut cursor = staged.links.forward();
    while let Some(rec) = cursor.next_record()? {
        let (rel, target) = split_link_record(&rec);
        if views.escapes(rel, target)? {
            return Err(RefusedError::OutsideSymlink {
                archive: name.to_owned(),
                path: String::from_utf8_lossy(rel).into_owned(),
                target: String::from_utf8_lossy(target).into_owned(),
            }
            .into());
        }
    }
    Ok(())
}

/// Plans and applies the move of the staged files into the target, then
/// gives directories their modes and times.
fn place_files(staging: &Staging, staged: &Staged) -> Result<(), anyhow::Error> {
    let files = staging.dir().open_dir(b"files")?;
    let target = staging.target_dir();
    let steps = place::plan(&files, target, staging.target(), staging.name())?;
    place::apply(&steps, &files, target, staging.target())?;
    let root = staged.root.as_ref().filter(|_| staging.target_was_empty());
    let failed = place::finish_dirs(target, &staged.dirs, root)
        .context("cannot set the modes and times of the restored directories")?;
    if failed > 0 {
        tracing::warn!(
            "the modes or times of {failed} restored directories could not be set (the files are in place)"
        );
    }
    Ok(())
}

fn dry_run(
    opened: &mut OpenArchive,
    opts: ExtractOptions,
    target: &Path,
    target_db: &mongo::restore::Target,
    verbosity: Verbosity,
) -> Result<Outcome, anyhow::Error> {
    let name = opened.name.clone();
    let want_mongo = opts.mongo;
    let mut extractor = Extractor::new(&name, None, opts, Box::new(io::stdout()))?;
    let progress = logging::progress(verbosity, "reading");
    let stream = progress.wrap_read(std::mem::replace(&mut opened.stream, Box::new(io::empty())));
    let summary = reader::read_archive(stream, &mut extractor, &name)?;
    progress.finish_and_clear();
    opened.check_signature()?;
    if want_mongo && let Some(dump) = &summary.info.mongodb {
        let report = mongo::restore::plan(dump, target_db)?;
        print_report(&report);
    }
    println!(
        "dry run: {} verified; {} files ({}) would be restored into {}",
        name,
        extractor.files,
        human(extractor.bytes),
        target.display()
    );
    Ok(Outcome::Success)
}
