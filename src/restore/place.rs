//! Moving the staged tree into the target: planned whole, then applied,
//! undone on failure, and reported truthfully.
//!
//! [`plan`] walks the staged tree against the target and decides, per path,
//! before anything changes:
//!
//! - nothing there: **move** the staged entry (a whole subtree in one rename);
//! - a directory on both sides: **merge** (look inside);
//! - something the archive names is there: **exchange** it with the staged
//!   entry (`RENAME_EXCHANGE`: the path is never missing; the old entry
//!   lands in the staging directory and goes with it);
//! - the archive has a non-directory where the target has a non-empty
//!   directory: **refuse**, naming the path. What the archive does not name
//!   is never touched.
//!
//! [`apply`] carries the plan out, every step a rename between handles
//! opened beneath the staging and target roots (no symlink followed). On
//! a failure, the steps done are undone in reverse; the error says whether
//! that worked, and which paths remain changed if it did not. Finally
//! [`finish_dirs`] gives directories their modes and times, deepest first.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, RenameFlags};

use super::extract::DirRecord;
use crate::beneath::{self, Dir};
use crate::spool::{RecordSpool, Records};

const MOVE: u8 = b'M';
const EXCHANGE: u8 = b'X';

/// Why the staged tree could not be moved into place.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The archive holds a non-directory where the target has a non-empty one.
    #[error(
        "the archive holds a file at {path}, where {target} has a non-empty directory; \
         refusing to replace a directory the archive does not describe (move it away \
         first, or restore elsewhere with --to DIR); nothing was changed"
    )]
    DirInTheWay {
        /// The path, relative to the target.
        path: String,
        /// The target.
        target: PathBuf,
    },
    /// Planning failed (reading the target or the staged tree).
    #[error("cannot plan the restore into {target}: {source}; nothing was changed")]
    Plan {
        /// The target.
        target: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A step failed, and every step before it was undone.
    #[error(
        "cannot move the restored files into {target} ({path}: {source}); \
         everything already moved was put back, so nothing was changed"
    )]
    RolledBack {
        /// The target.
        target: PathBuf,
        /// The path that failed.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// A step failed, and undoing did not fully work.
    #[error(
        "cannot move the restored files into {target} ({path}: {source}), and {count} paths \
         could not be put back as they were: {list}; check them by hand"
    )]
    Partial {
        /// The target.
        target: PathBuf,
        /// The path that failed.
        path: String,
        /// The error.
        source: io::Error,
        /// How many paths stay changed.
        count: usize,
        /// Up to ten of them.
        list: String,
    },
}

impl crate::exit::Coded for PlaceError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            PlaceError::DirInTheWay { .. }
            | PlaceError::Plan { .. }
            | PlaceError::RolledBack { .. }
            | PlaceError::Partial { .. } => crate::exit::Exit::Failure,
        }
    }
}

fn text(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut v = parent.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

/// A step: what, and the path (relative to both roots).
fn step(op: u8, rel: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.len() + 1);
    v.push(op);
    v.extend_from_slice(rel);
    v
}

/// Plans the move of everything in `staged` into `target` (both roots of
/// the files tree). `skip` is a name at the top of the target never to
/// plan for (the staging directory itself).
pub fn plan(
    staged: &Dir,
    target: &Dir,
    target_path: &Path,
    skip: &[u8],
) -> Result<Records, PlaceError> {
    let fail = |source: io::Error| PlaceError::Plan {
        target: target_path.to_path_buf(),
        source,
    };
    let mut steps = RecordSpool::new().map_err(fail)?;
    let mut todo: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let from = staged.open_dir(&rel).map_err(fail)?;
        let to = target.open_dir(&rel).map_err(fail)?;
        let mut names = from.names().map_err(fail)?;
        names.sort();
        for name in names {
            let path = join(&rel, &name);
            if rel.is_empty() && name == skip {
                return Err(fail(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the archive holds the staging directory's own name",
                )));
            }
            let s = from.stat(&name).map_err(fail)?.ok_or_else(|| {
                fail(io::Error::new(
                    io::ErrorKind::NotFound,
                    "staged entry vanished",
                ))
            })?;
            let op = match to.stat(&name).map_err(fail)? {
                None => MOVE,
                Some(t) => {
                    let s_dir = beneath::kind(&s) == FileType::Directory;
                    let t_dir = beneath::kind(&t) == FileType::Directory;
                    match (s_dir, t_dir) {
                        (true, true) => {
                            todo.push(path);
                            continue;
                        }
                        (false, true) => {
                            let occupied = !to
                                .open_dir(&name)
                                .and_then(|d| d.names())
                                .map_err(fail)?
                                .is_empty();
                            if occupied {
                                return Err(PlaceError::DirInTheWay {
                                    path: text(&path),
                                    target: target_path.to_path_buf(),
                                });
                            }
                            EXCHANGE
                        }
                        _ => EXCHANGE,
                    }
                }
            };
            steps.push(&step(op, &path)).map_err(fail)?;
        }
    }
    steps.finish().map_err(fail)
}

/// Parent handles of the last step, reused while steps share a directory.
struct Handles<'a> {
    staged: &'a Dir,
    target: &'a Dir,
    cached: Option<(Vec<u8>, Dir, Dir)>,
}

impl Handles<'_> {
    fn get(&mut self, parent: &[u8]) -> io::Result<(&Dir, &Dir)> {
        if self.cached.as_ref().is_none_or(|(p, _, _)| p != parent) {
            let s = self.staged.open_dir(parent)?;
            let t = self.target.open_dir(parent)?;
            self.cached = Some((parent.to_vec(), s, t));
        }
        let (_, s, t) = self.cached.as_ref().expect("just set");
        Ok((s, t))
    }
}

/// Carries out one step (or undoes it).
fn run(handles: &mut Handles<'_>, record: &[u8], undo: bool) -> io::Result<()> {
    let (op, rel) = record
        .split_first()
        .ok_or_else(|| io::Error::other("empty step"))?;
    let (parent, name) = beneath::split_parent(rel)?;
    let (s, t) = handles.get(parent)?;
    match (*op, undo) {
        (MOVE, false) => s.rename(name, t, name, RenameFlags::NOREPLACE),
        (MOVE, true) => t.rename(name, s, name, RenameFlags::NOREPLACE),
        (EXCHANGE, _) => s.rename(name, t, name, RenameFlags::EXCHANGE),
        _ => Err(io::Error::other("unknown step")),
    }
}

/// Applies a plan; on failure undoes what was done, in reverse.
pub fn apply(
    steps: &Records,
    staged: &Dir,
    target: &Dir,
    target_path: &Path,
) -> Result<u64, PlaceError> {
    let mut handles = Handles {
        staged,
        target,
        cached: None,
    };
    let mut done = 0u64;
    let mut cursor = steps.forward();
    let failure = loop {
        let record = match cursor.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(done),
            Err(e) => break (String::new(), e),
        };
        if let Err(e) = run(&mut handles, &record, false) {
            break (text(&record[1..]), e);
        }
        done += 1;
    };
    let (path, source) = failure;
    // Undo the `done` steps, last first.
    // The applied steps are the first `done` records: read backwards,
    // past the ones never applied.
    let mut stuck = Vec::new();
    let mut stuck_count = 0usize;
    let mut back = steps.backward();
    for _ in done..steps.count() {
        let _ = back.next_record();
    }
    for _ in 0..done {
        let Ok(Some(record)) = back.next_record() else {
            stuck_count += 1;
            continue;
        };
        if run(&mut handles, &record, true).is_err() {
            stuck_count += 1;
            if stuck.len() < 10 {
                stuck.push(text(&record[1..]));
            }
        }
    }
    let target = target_path.to_path_buf();
    if stuck_count == 0 {
        Err(PlaceError::RolledBack {
            target,
            path,
            source,
        })
    } else {
        Err(PlaceError::Partial {
            target,
            path,
            source,
            count: stuck_count,
            list: stuck.join(", "),
        })
    }
}

fn set_meta(dir: &Dir, r: &DirRecord) -> io::Result<()> {
    if let Some((uid, gid)) = r.owner {
        rustix::fs::fchown(
            dir,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
    }
    rustix::fs::fchmod(dir, Mode::from_raw_mode(r.mode))?;
    let ts = rustix::fs::Timespec {
        tv_sec: r.mtime.0,
        tv_nsec: i64::from(r.mtime.1.min(999_999_999)) as _,
    };
    rustix::fs::futimens(
        dir,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
    )?;
    Ok(())
}

/// Gives the restored directories (below `target`) their modes and times,
/// last created first, through handles (a path that is no longer a
/// directory, because a later entry replaced it, is skipped); then the
/// root's, when given. A directory recorded twice (a differential's over
/// its full's) gets its last record. Returns how many could not be set.
pub fn finish_dirs(target: &Dir, dirs: &Records, root: Option<&DirRecord>) -> io::Result<u64> {
    let mut failed = 0;
    let mut done = std::collections::HashSet::new();
    let mut cursor = dirs.backward();
    while let Some(rec) = cursor.next_record()? {
        let r = DirRecord::decode(&rec)?;
        if !done.insert(r.rel.clone()) {
            continue;
        }
        let Ok(dir) = target.open_dir(&r.rel) else {
            continue;
        };
        if set_meta(&dir, &r).is_err() {
            failed += 1;
        }
    }
    if let Some(r) = root
        && set_meta(target, r).is_err()
    {
        failed += 1;
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn dirs(tmp: &Path) -> (Dir, Dir) {
        fs::create_dir_all(tmp.join("s")).unwrap();
        fs::create_dir_all(tmp.join("t")).unwrap();
        (
            Dir::open(&tmp.join("s")).unwrap(),
            Dir::open(&tmp.join("t")).unwrap(),
        )
    }

    #[test]
    fn merges_replaces_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, t) = dirs(tmp.path());
        let p = tmp.path();
        fs::create_dir_all(p.join("s/src")).unwrap();
        fs::write(p.join("s/src/a.js"), "new a").unwrap();
        fs::write(p.join("s/package.json"), "new").unwrap();
        fs::create_dir_all(p.join("s/public/img")).unwrap();
        fs::create_dir_all(p.join("t/src")).unwrap();
        fs::write(p.join("t/src/a.js"), "old a").unwrap();
        fs::write(p.join("t/src/mine.js"), "mine").unwrap();
        fs::write(p.join("t/package.json"), "old").unwrap();
        let steps = plan(&s, &t, &p.join("t"), b".staging").unwrap();
        assert_eq!(apply(&steps, &s, &t, &p.join("t")).unwrap(), 3);
        assert_eq!(fs::read_to_string(p.join("t/src/a.js")).unwrap(), "new a");
        assert_eq!(fs::read_to_string(p.join("t/src/mine.js")).unwrap(), "mine");
        assert_eq!(fs::read_to_string(p.join("t/package.json")).unwrap(), "new");
        assert!(p.join("t/public/img").is_dir());
        // The replaced file went to the staging side.
        assert_eq!(fs::read_to_string(p.join("s/package.json")).unwrap(), "old");
    }

    #[test]
    fn refuses_a_file_over_a_non_empty_directory_before_changing_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, t) = dirs(tmp.path());
        let p = tmp.path();
        fs::write(p.join("s/a"), "new").unwrap();
        fs::write(p.join("s/data"), "file").unwrap();
        fs::create_dir_all(p.join("t/data")).unwrap();
        fs::write(p.join("t/data/precious"), "keep").unwrap();
        let err = plan(&s, &t, &p.join("t"), b"x").unwrap_err();
        assert!(matches!(err, PlaceError::DirInTheWay { .. }), "{err}");
        assert!(!p.join("t/a").exists());
        assert_eq!(
            fs::read_to_string(p.join("t/data/precious")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn a_failed_step_is_undone() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, t) = dirs(tmp.path());
        let p = tmp.path();
        fs::write(p.join("s/a"), "new a").unwrap();
        fs::write(p.join("s/b"), "new b").unwrap();
        fs::write(p.join("t/a"), "old a").unwrap();
        let steps = plan(&s, &t, &p.join("t"), b"x").unwrap();
        // Something appears at `b` after planning: the move refuses to
        // replace it, and the exchange of `a` is undone.
        fs::write(p.join("t/b"), "appeared").unwrap();
        let err = apply(&steps, &s, &t, &p.join("t")).unwrap_err();
        assert!(matches!(err, PlaceError::RolledBack { .. }), "{err}");
        assert_eq!(fs::read_to_string(p.join("t/a")).unwrap(), "old a");
        assert_eq!(fs::read_to_string(p.join("t/b")).unwrap(), "appeared");
        assert_eq!(fs::read_to_string(p.join("s/a")).unwrap(), "new a");
    }
}
