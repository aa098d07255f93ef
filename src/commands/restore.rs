//! `cofre restore`: files and database back, never harming the target.
//!
//! The steps, in order: check the target and the flags; open the archive
//! (its signature checked up front, then against every byte); check free
//! space; extract into a staging directory inside the target; verify
//! every entry against the manifest and the signature; check where the
//! restored symlinks lead; plan and apply the move into place; give
//! directories their modes and times; restore the database from the
//! staged dump; remove the staging directory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::archive::reader;
use crate::cli::RestoreArgs;
use crate::config::{ConfigError, Settings};
use crate::format::human;
use crate::logging::{self, Verbosity};
use crate::mongo::{self, load::Fate, load::Report};
use crate::open;
use crate::oplog::{Ts, history, window};
use crate::restore::{self as rs, ExtractOptions, Extractor, RestoreError};
use crate::secret::Secret;
use crate::store::{ArchiveName, Store};

use super::{Outcome, access, duration_flag};

/// The database target a command line asks for.
fn mongo_target(args: &RestoreArgs, settings: &Settings) -> mongo::load::Target {
    let uri = match &args.mongo_uri {
        Some(u) => {
            crate::secret::register_uri(u);
            Some(Secret::unregistered(u.clone()))
        }
        None => settings.backup.mongo.as_ref().map(|m| m.uri.clone()),
    };
    mongo::load::Target {
        uri,
        to_db: args.to_db.clone(),
        db_prefix: args.db_prefix.clone(),
        drop: args.drop,
    }
}

/// The point in time `--at`, `--at-op` or `--before-op` asks for.
fn pitr_point(args: &RestoreArgs) -> Result<Option<window::Point>, ConfigError> {
    let op = |flag: &str, v: &str| {
        Ts::parse(v).ok_or_else(|| ConfigError::Invalid {
            var: flag.to_owned(),
            value: v.to_owned(),
            expected: "SECONDS,ORDINAL, as `cofre oplog` shows (1796313536,23)".into(),
        })
    };
    Ok(match (&args.at, &args.at_op, &args.before_op) {
        (Some(at), _, _) if at.trim() == "latest" => Some(window::Point::Latest),
        (Some(at), _, _) => Some(window::Point::At(super::oplog::parse_time("--at", at)?)),
        (_, Some(v), _) => Some(window::Point::Op(op("--at-op", v)?)),
        (_, _, Some(v)) => Some(window::Point::Before(op("--before-op", v)?)),
        _ => None,
    })
}

/// A point-in-time restore's plan and what it reads.
struct Pitr {
    history: history::History,
    plan: window::Plan,
}

/// A database restore report, one line per collection.
pub fn render_report(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    for (ns, fate) in &report.collections {
        match fate {
            Fate::Restored { documents, indexes } => {
                writeln!(
                    out,
                    "restored collection {ns}: {documents} documents, {indexes} indexes"
                )?;
            }
            Fate::Exists => writeln!(
                out,
                "left alone collection {ns}: it already exists (pass --drop to replace it)"
            )?,
            Fate::WouldRestore { documents, exists } => {
                let how = match (exists, report.drop) {
                    (false, _) => "",
                    (true, true) => " (exists: would be replaced)",
                    (true, false) => " (exists: would be left alone without --drop)",
                };
                writeln!(
                    out,
                    "would restore collection {ns}: {documents} documents{how}"
                )?;
            }
        }
    }
    for n in &report.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}

/// One line per database: what was restored into it, what was left alone.
fn database_summary(report: &Report, target: &mongo::load::Target) -> Vec<String> {
    let mut per_db: std::collections::BTreeMap<String, (Vec<String>, u64, Vec<String>)> =
        std::collections::BTreeMap::new();
    for (ns, fate) in &report.collections {
        let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
        let entry = per_db.entry(db.to_owned()).or_default();
        match fate {
            Fate::Restored { documents, .. } => {
                entry.0.push(coll.to_owned());
                entry.1 += documents;
            }
            Fate::Exists => entry.2.push(coll.to_owned()),
            Fate::WouldRestore { .. } => {}
        }
    }
    let server = target
        .uri
        .as_ref()
        .map(|u| crate::secret::redact_uri(u.expose()))
        .unwrap_or_default();
    per_db
        .into_iter()
        .map(|(db, (restored, documents, alone))| {
            let mut line = format!(
                "database  {db} on {server}: {} collection{} restored ({documents} documents)",
                restored.len(),
                if restored.len() == 1 { "" } else { "s" }
            );
            if !alone.is_empty() {
                line.push_str(&format!(
                    "; {} left alone because {} already existed ({})",
                    alone.len(),
                    if alone.len() == 1 { "it" } else { "they" },
                    alone.join(", ")
                ));
            }
            line
        })
        .collect()
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
    out: &mut dyn Write,
) -> Result<Outcome, anyhow::Error> {
    let wait = duration_flag("--wait", args.lock.wait.as_deref())?;
    let target_db = mongo_target(args, settings);
    let include = include_matcher(&args.includes)?;
    if let Some(dir) = &args.mongo_dir {
        let report = mongo::load::restore_dir(dir, &target_db, args.dry_run)?;
        render_report(&report, out)?;
        return Ok(report.outcome());
    }
    let point = pitr_point(args)?;
    let arg = match (&args.archive, point) {
        (Some(a), _) => a.as_str(),
        (None, Some(_)) => "latest",
        (None, None) => unreachable!("clap requires ARCHIVE without --mongo-dir or --at"),
    };
    let access = access(settings, &args.keys)?;
    let (remote, arg) = super::archive_source(settings, arg, args.remote)?;
    let req = access.request(
        &settings.backup_dir,
        &arg,
        remote.as_ref(),
        args.allow_unsigned,
    );
    let place = match &remote {
        Some(b) => history::Place::Bucket(b),
        None => history::Place::Local(&settings.backup_dir),
    };
    let (found, pitr) = match point {
        None => (open::resolve(&req)?, None),
        Some(point) => {
            let history = history::load(place, &access.trusted, &access.origin)?;
            for (name, why) in &history.refused {
                tracing::warn!("{name} {why}; it is not part of the history");
            }
            let plan = window::plan(&history.bases, &history.slices, point)?;
            let found = match &remote {
                Some(_) => open::Found::Remote(plan.base.name.clone()),
                None => open::Found::Local(settings.backup_dir.join(&plan.base.name), true),
            };
            (found, Some(Pitr { history, plan }))
        }
    };
    // Every slice is read and checked before anything is restored.
    let preview = match &pitr {
        Some(p) if !args.files_only => Some(crate::oplog::preview(
            place,
            &p.history,
            &p.plan,
            &access.keys,
            &access.trusted,
        )?),
        _ => None,
    };
    if let (Some(p), Some(pre)) = (&pitr, &preview) {
        tracing::info!(
            base = %p.plan.base.name,
            slices = p.plan.slices.len(),
            operations = pre.operations,
            "point-in-time restore: {} then {} operations from {} oplog slices",
            p.plan.base.name,
            pre.operations,
            p.plan.slices.len()
        );
    }
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
    // (Where there is no backup directory, no backup can run: nothing is
    // made there, so a restore on a new machine leaves no lock file.)
    let _lock = match settings.source.canonicalize() {
        Ok(src) if want_files && !args.dry_run && target.starts_with(&src) => {
            match Store::open(&settings.backup_dir) {
                Ok(store) => Some(store.lock(wait)?),
                Err(_) => None,
            }
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
    let chain = open::chain(&req, found)?;
    if let Some(base) = &chain.base {
        tracing::info!(
            "{name} is a differential: its full archive {} is restored first",
            base.name()
        );
    }
    if args.dry_run {
        if let (Some(p), Some(pre)) = (&pitr, &preview) {
            render_pitr_plan(p, pre, out)?;
        }
        return dry_run(&req, &chain, opts, &target, &target_db, verbosity, out);
    }
    let has_mongo_target = target_db.uri.is_some();
    let progress = logging::progress(verbosity, "restoring");
    let restored = rs::stage_and_place(
        &req,
        &chain,
        rs::Request {
            target: &target,
            opts,
            allow_outside_symlinks: args.allow_outside_symlinks,
            includes: &args.includes,
            dump_has_target: has_mongo_target,
            cancel: None,
        },
        &progress,
    )?;
    let has_mongo = restored.info.mongodb.is_some();
    if args.mongo_only && !has_mongo {
        bail!("{name} holds no database dump; nothing was restored");
    }
    // A new directory inside the project is a restored copy: marked, so
    // the next backup does not take it in.
    let copy_inside = want_files
        && restored.target_was_empty
        && settings
            .source
            .canonicalize()
            .is_ok_and(|src| target != src && target.starts_with(&src));
    if copy_inside && let Err(e) = rs::mark_restored_copy(&target, &name) {
        tracing::warn!(
            "cannot mark {} as a restored copy ({e}); the next backup will include it",
            target.display()
        );
    }
    let mut summary = Vec::new();
    if want_files {
        summary.push(format!(
            "files     {} files ({}) from {name} into {}{}",
            restored.files,
            human(restored.bytes),
            target.display(),
            if copy_inside {
                " (a restored copy: backups of the project leave it out)"
            } else {
                ""
            }
        ));
    }
    let mut outcome = Outcome::Success;
    if want_mongo && has_mongo {
        // An empty dump (a database with no collection yet) restores
        // nothing; a point in time after it still replays.
        let report = mongo::load::restore_dump(
            &restored.dump_dir(),
            &target_db,
            false,
            &std::sync::atomic::AtomicBool::new(false),
        )?;
        render_report(&report, out)?;
        summary.extend(database_summary(&report, &target_db));
        outcome = report.outcome();
        if let Some(p) = &pitr {
            let dump = restored.info.mongodb.as_ref();
            let allowed: Vec<String> = dump.map(|m| m.databases.clone()).unwrap_or_default();
            let owned = report
                .restored
                .iter()
                .map(|c| (c.db.clone(), c.name.clone()))
                .collect::<Vec<_>>();
            let done = crate::oplog::replay(
                place,
                &p.history,
                &p.plan,
                &target_db,
                allowed,
                owned,
                &access.keys,
                &access.trusted,
            )?;
            for n in &done.notes {
                writeln!(out, "note: {n}")?;
            }
            summary.push(format!(
                "oplog     {} operations replayed from {} slices, up to {}{} ({} skipped, {} commands)",
                done.applied,
                p.plan.slices.len(),
                p.plan.limit.complete_to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                done.last.map(|t| format!(", last operation {t}")).unwrap_or_default(),
                done.skipped,
                done.commands
            ));
        }
    }
    if !summary.is_empty() {
        writeln!(out, "summary")?;
        for line in &summary {
            writeln!(out, "  {line}")?;
        }
        if outcome == Outcome::Warnings {
            writeln!(
                out,
                "  exit code 3: done, but collections that already existed were left alone \
                 (pass --drop to replace them)"
            )?;
        }
    }
    tracing::info!(
        archive = %name,
        files = restored.files,
        bytes = restored.bytes,
        seconds = format!("{:.2}", clock.elapsed().as_secs_f64()),
        "restore finished"
    );
    if let Err(e) = restored.finish() {
        tracing::warn!("could not remove the staging directory: {e}");
    }
    Ok(outcome)
}

/// What a point-in-time restore would read, for `--dry-run`.
fn render_pitr_plan(p: &Pitr, pre: &crate::oplog::Preview, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "base      {} (database at operation {})",
        p.plan.base.name, p.plan.base.cluster
    )?;
    for &i in &p.plan.slices {
        let s = &p.history.slices[i];
        writeln!(
            out,
            "slice     {} ({} entries, {}..{})",
            s.name, s.count, s.after, s.until
        )?;
    }
    writeln!(out, "replay    {} operations", pre.operations)?;
    match &pre.last {
        Some((ts, op, ns, id)) => writeln!(
            out,
            "last      {} {ts} {op} {ns} {id}",
            ts.time().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => writeln!(out, "last      none: the point is the base itself"),
    }
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

/// Reads the chain without writing: says what would be written (for a
/// differential, the full's entries, then the differential's over them),
/// and verifies every archive.
fn dry_run(
    req: &open::Request<'_>,
    chain: &open::Chain,
    opts: ExtractOptions,
    target: &Path,
    target_db: &mongo::load::Target,
    verbosity: Verbosity,
    out: &mut dyn Write,
) -> Result<Outcome, anyhow::Error> {
    let name = chain.top.name();
    let want_mongo = opts.mongo;
    let want_files = opts.files;
    let mut extractor = Extractor::new(&name, None, opts, Box::new(io::stdout()))?;
    let progress = logging::progress(verbosity, "reading");
    let read = |found: &open::Found, extractor: &mut Extractor| {
        let mut opened = open::open_found(req, found)?;
        let stream = std::mem::replace(&mut opened.stream, Box::new(io::empty()));
        let summary = reader::read_archive(progress.wrap_read(stream), extractor, &opened.name)?;
        opened.check_signature()?;
        Ok::<_, anyhow::Error>(summary)
    };
    let mut verified = Vec::new();
    if let Some(base) = &chain.base
        && want_files
    {
        extractor.begin_full(&base.name());
        let summary = read(base, &mut extractor)?;
        chain.check_base(&summary.manifest_hash)?;
        verified.push(base.name());
        extractor.begin_differential(&name);
        writeln!(out, "then, from the differential {name}:")?;
    }
    let summary = read(&chain.top, &mut extractor)?;
    progress.finish_and_clear();
    verified.push(name);
    for path in &summary.info.deleted {
        writeln!(
            out,
            "would remove {}",
            path.strip_prefix(crate::archive::FILES_PREFIX)
                .unwrap_or(path)
        )?;
    }
    if want_mongo && let Some(dump) = &summary.info.mongodb {
        let report = mongo::load::plan(dump, target_db)?;
        render_report(&report, out)?;
    }
    writeln!(
        out,
        "dry run: {} verified; {} files ({}) would be written into {}",
        verified.join(" and "),
        extractor.files,
        human(extractor.bytes),
        target.display()
    )?;
    Ok(Outcome::Success)
}
