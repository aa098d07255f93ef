//! `cofre restore`: files and database back, never harming the target.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use ignore::gitignore::GitignoreBuilder;

use crate::archive::{self as arch, layers, reader};
use crate::backup::human;
use crate::cli::RestoreArgs;
use crate::config::Settings;
use crate::logging::{self, Verbosity};
use crate::mongo;
use crate::restore::{self as rs, ExtractOptions, Extractor};
use crate::store::{ArchiveName, Store};

use super::{Outcome, duration_flag, read_keys};

/// Why a restore was refused before anything was read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target has files and `--force` was not given.
    #[error(
        "target directory {0} is not empty; restore into a new directory with --to DIR, \
         or pass --force to replace the files the archive holds (other files are left alone)"
    )]
    TargetNotEmpty(PathBuf),
    /// The target is a file.
    #[error("target {0} exists and is not a directory; choose another with --to DIR")]
    TargetNotDir(PathBuf),
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
}

/// Runs `cofre restore`.
pub fn run(
    args: &RestoreArgs,
    settings: &Settings,
    verbosity: Verbosity,
) -> Result<Outcome, anyhow::Error> {
    let wait = duration_flag("--wait", args.lock.wait.as_deref())?;
    let mongo_target = mongo::restore::Target::from_args(args, settings);
    if let Some(dir) = &args.mongo_dir {
        let report = mongo::restore::restore_dir(dir, &mongo_target, args.dry_run)?;
        report.print();
        return Ok(report.outcome());
    }
    let arg = args
        .archive
        .as_deref()
        .expect("clap requires ARCHIVE without --mongo-dir");
    let archive = Store::resolve(&settings.backup_dir, arg)?;
    let name = layers::archive_name(&archive);
    let want_files = !args.mongo_only;
    let want_mongo = !args.files_only;

    let target = std::path::absolute(match &args.to {
        Some(t) => t.clone(),
        None => PathBuf::from(ArchiveName::stem(&name)),
    })?;
    if want_files {
        match fs::symlink_metadata(&target) {
            Ok(m) if !m.is_dir() => return Err(RestoreError::TargetNotDir(target).into()),
            _ => {}
        }
        if rs::is_nonempty_dir(&target)? && !args.force && !args.dry_run {
            return Err(RestoreError::TargetNotEmpty(target).into());
        }
    }
    // Restoring into the project itself: no backup may read it meanwhile.
    let _lock = match settings.source.canonicalize() {
        Ok(src) if want_files && !args.dry_run && target.starts_with(&src) => {
            Some(Store::create(&settings.backup_dir)?.lock(wait)?)
        }
        _ => None,
    };

    let include = if args.includes.is_empty() {
        None
    } else {
        let mut b = GitignoreBuilder::new("");
        for p in &args.includes {
            b.add_line(None, p)
                .map_err(|e| anyhow::anyhow!("invalid --include pattern {p:?}: {e}"))?;
        }
        Some(b.build()?)
    };

    let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    let staging = if args.dry_run {
        None
    } else {
        fs::create_dir_all(&parent).with_context(|| {
            format!(
                "cannot create {}; check the path given to --to",
                parent.display()
            )
        })?;
        Some(
            tempfile::Builder::new()
                .prefix(".cofre-restore-")
                .tempdir_in(&parent)
                .with_context(|| {
                    format!(
                        "cannot create a staging directory in {}; check that it is writable",
                        parent.display()
                    )
                })?,
        )
    };
    let staging_path = staging
        .as_ref()
        .map_or_else(|| parent.join(".cofre-dry-run"), |s| s.path().to_path_buf());

    let clock = Instant::now();
    tracing::info!(archive = %name, target = %target.display(), dry_run = args.dry_run, "restore started");
    let keys = read_keys(settings, &args.keys);
    let (stream, _, _) = layers::open_file(&archive, &keys, arch::worker_threads())?;
    let progress = logging::progress(verbosity, "restoring");
    let stream = progress.wrap_read(stream);
    let mut extractor = Extractor::new(
        &staging_path,
        ExtractOptions {
            files: want_files,
            mongo: want_mongo,
            include: include.clone(),
            allow_outside_symlinks: args.allow_outside_symlinks,
            dry_run: args.dry_run,
            existing_target: Some(target.clone()),
        },
        Box::new(io::stdout()),
    );
    let summary = reader::read_archive(stream, &mut extractor, &name)?;
    progress.finish_and_clear();

    if want_files && include.is_some() && extractor.entries == 0 {
        return Err(RestoreError::NothingIncluded {
            archive: name,
            patterns: args.includes.join(", "),
        }
        .into());
    }

    let has_mongo = summary.info.mongodb.is_some();
    if args.dry_run {
        if want_mongo && let Some(dump) = &summary.info.mongodb {
            let report = mongo::restore::plan(dump, &mongo_target)?;
            report.print();
        }
        println!(
            "dry run: {} verified; {} files ({}) would be restored into {}",
            name,
            extractor.files,
            human(extractor.bytes),
            target.display()
        );
        return Ok(Outcome::Success);
    }

    // The archive verified. Before anything is moved into place, make sure
    // the database part has somewhere to go, so a restore does not stop
    // halfway for want of a setting.
    if want_mongo && has_mongo && mongo_target.uri.is_none() {
        return Err(mongo::MongoError::NoTarget.into());
    }
    let mut outcome = Outcome::Success;
    if want_files {
        extractor
            .finish_dirs()
            .context("cannot set the modes and times of the restored directories")?;
        let staged = extractor.files_root().to_path_buf();
        if staged.exists() {
            rs::place(&staged, &target, args.force).with_context(|| {
                format!(
                    "cannot move the restored files into {}; nothing was changed there",
                    target.display()
                )
            })?;
        }
        println!(
            "restored {} files ({}) from {} into {}",
            extractor.files,
            human(extractor.bytes),
            name,
            target.display()
        );
    }
    if want_mongo && has_mongo {
        let report = mongo::restore::restore_dir(extractor.mongo_root(), &mongo_target, false)?;
        report.print();
        if report.outcome() != Outcome::Success {
            outcome = report.outcome();
        }
    } else if args.mongo_only && !has_mongo {
        bail!("{name} holds no database dump; nothing was restored");
    }
    tracing::info!(
        archive = %name,
        files = extractor.files,
        bytes = extractor.bytes,
        seconds = format!("{:.2}", clock.elapsed().as_secs_f64()),
        "restore finished"
    );
    drop(staging);
    Ok(outcome)
}
