//! Walking the project: what goes into the archive, in a stable order.
//!
//! The project is written by the application, which may be compromised,
//! while cofre often runs as root. So the walk never resolves a path: it
//! holds a handle on the project root and opens every directory and file
//! beneath the handle of the directory it was listed in, one name at a
//! time, with no symlink followed ([`crate::beneath`]: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `O_NOFOLLOW`). A directory
//! swapped for a symlink between listing and opening is refused by the
//! kernel, and becomes a warning naming the path; nothing outside the
//! project is ever read.
//!
//! What is left out: the default excludes, the user's `BACKUP_EXCLUDE`
//! patterns, `.backupignore` files (gitignore syntax, negation included,
//! deeper files winning), the backup directory wherever it lies (by
//! device and inode), and copies a restore made inside the project (a
//! directory holding [`RESTORED_MARK`]). The `ignore` crate's gitignore
//! matcher decides each name; its directory walker is not used, because it
//! opens by path. A project's `.gitignore` is deliberately *not* honoured:
//! uploaded files and local data are exactly what git ignores and a backup
//! must keep.
//!
//! `.backupignore` files are read through the same handles and capped
//! ([`MAX_IGNORE_BYTES`], [`MAX_IGNORE_LINE`], [`MAX_IGNORE_PATTERNS`], and
//! [`MAX_LIVE_PATTERNS`] for all the files that apply at once), because
//! each pattern becomes a compiled matcher: one 1 MB line of `*` once cost
//! nearly a gigabyte. A file over a cap is not used, and is a warning
//! naming it (the backup then holds more, never less).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ignore::WalkState;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rustix::fs::{FileType, Stat};

use crate::beneath::{self, Dir};

/// Patterns always excluded, gitignore syntax, relative to the project.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "node_modules",
    ".git",
    "logs",
    ".env",
    ".env.*",
    // Where the original backup script wrote its archives (and cofre's default BACKUP_DIR).
    "/backups/",
    // cofre's own temporary files, wherever BACKUP_DIR is.
    ".cofre-tmp-*",
    ".cofre-restore-*",
    ".cofre-drill-*",
];

/// The per-directory ignore file users can add.
pub const IGNORE_FILE: &str = ".backupignore";
/// The file a restore leaves at the top of a directory it made: that
/// directory is a restored copy, and the walk leaves it out.
pub const RESTORED_MARK: &str = ".cofre-restored";
/// The largest `.backupignore` used.
pub const MAX_IGNORE_BYTES: u64 = 64 << 10;
/// The longest pattern line used.
pub const MAX_IGNORE_LINE: usize = 1024;
/// The most patterns one `.backupignore` may hold.
pub const MAX_IGNORE_PATTERNS: usize = 1000;
/// The most patterns of all the `.backupignore` files that apply at once
/// (a directory's and its parents').
pub const MAX_LIVE_PATTERNS: usize = 5000;
/// The deepest directory walked.
const MAX_DEPTH: usize = 1024;

/// An exclude pattern that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid BACKUP_EXCLUDE pattern {pattern:?}: {why}; expected gitignore syntax, e.g. *.tmp or /uploads/cache/"
)]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// The parser's words.
    pub why: String,
}

impl crate::exit::Coded for PatternError {
    fn exit(&self) -> crate::exit::Exit {
        crate::exit::Exit::Usage
    }
}

/// What the walk knows of an entry, from `fstat` or `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Bytes.
    pub size: u64,
    /// Bytes allocated on disk (less than `size` for a sparse file).
    pub allocated: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Change time, seconds.
    pub ctime: i64,
    /// Change time, nanoseconds.
    pub ctime_nsec: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

impl From<&Stat> for Meta {
    fn from(st: &Stat) -> Meta {
        Meta {
            mode: st.st_mode,
            size: u64::try_from(st.st_size).unwrap_or(0),
            allocated: u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512),
            mtime: st.st_mtime,
            mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
            ctime: st.st_ctime,
            ctime_nsec: u32::try_from(st.st_ctime_nsec).unwrap_or(0),
            uid: st.st_uid,
            gid: st.st_gid,
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

impl Meta {
    /// The `fstat` of an open file.
    pub fn of(file: &File) -> io::Result<Meta> {
        Ok(Meta::from(&rustix::fs::fstat(file)?))
    }

    /// Permission bits (and setuid, setgid, sticky).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::RegularFile
    }
}

/// A name in a directory, as the walk listed it.
#[derive(Debug, Clone)]
pub struct Child {
    /// The name.
    pub name: Vec<u8>,
    /// What it is (`lstat`).
    pub kind: FileType,
    /// Its `lstat`.
    pub meta: Meta,
    /// Left out by a pattern (listed still: it exists, and a differential
    /// archive's record of the directory names it).
    pub excluded: bool,
}

/// One thing found in the project. Order: a directory (with what it
/// holds), then its files, symlinks and the like, then
/// [`Item::FilesDone`], then each subdirectory the same way; names sorted
/// bytewise at each step.
#[derive(Debug)]
pub enum Item<'a> {
    /// A directory (the project root first, with an empty relative path),
    /// and the names in it.
    Dir {
        /// Path relative to the project, as bytes.
        rel: &'a [u8],
        /// Its `fstat`.
        meta: Meta,
        /// What it holds, sorted; excluded names flagged.
        children: &'a [Child],
        /// Its handle (its files open beneath it, [`open_file`]).
        handle: &'a Dir,
    },
    /// A regular file: the visitor opens it, beneath its directory's
    /// handle, if it wants to read it ([`open_file`]).
    File {
        /// Path relative to the project.
        rel: Vec<u8>,
        /// Its `lstat` when listed.
        meta: Meta,
        /// The directory it is in.
        parent: &'a Dir,
        /// Its name there.
        name: &'a [u8],
    },
    /// A symlink, kept as a link.
    Symlink {
        /// Path relative to the project.
        rel: Vec<u8>,
        /// Where it points, as stored.
        target: Vec<u8>,
        /// Its `lstat`.
        meta: Meta,
    },
    /// The files of a directory are done; its subdirectories follow.
    FilesDone {
        /// The directory.
        rel: &'a [u8],
    },
    /// Something that cannot be archived, could not be read, or a problem
    /// worth a warning (an ignore file over its caps).
    Skipped {
        /// Path relative to the project (or the full path).
        rel: String,
        /// What happened.
        why: String,
    },
}

/// Opens the file `name` of `parent` for reading, as a walk found it: no
/// symlink followed, and it must still be a regular file. The error is the
/// warning to record (it is then not in the archive).
pub fn open_file(parent: &Dir, name: &[u8]) -> Result<(File, Meta), String> {
    let file = parent
        .open_read(name)
        .map_err(|e| changed_or_unreadable(&e, "file"))?;
    let meta = Meta::of(&file).map_err(|e| format!("cannot be read ({e}); not in the archive"))?;
    if !meta.is_file() {
        return Err("is no longer a regular file; not in the archive".into());
    }
    Ok((file, meta))
}

/// Builds the exclude matcher for a project.
pub fn matcher(source: &Path, excludes: &[String]) -> Result<Gitignore, PatternError> {
    let mut b = GitignoreBuilder::new(source);
    for p in DEFAULT_EXCLUDES {
        b.add_line(None, p).expect("default patterns are valid");
    }
    for p in excludes {
        b.add_line(None, p).map_err(|e| PatternError {
            pattern: p.clone(),
            why: e.to_string(),
        })?;
    }
    b.build().map_err(|e| PatternError {
        pattern: excludes.join(","),
        why: e.to_string(),
    })
}

/// How to walk.
#[derive(Debug)]
pub struct Options {
    /// The directory left out wherever it lies (`BACKUP_DIR`), by path; it
    /// is recognised by device and inode.
    pub skip_dir: Option<PathBuf>,
}

/// Walks `source` (which must be canonical), calling `visit` for each item
/// in a stable order (see [`Item`]). An `Err` from `visit` stops the walk
/// and is returned.
pub fn walk(
    source: &Path,
    matcher: Gitignore,
    opts: &Options,
    mut visit: impl FnMut(Item<'_>) -> io::Result<WalkState>,
) -> io::Result<()> {
    let root = Dir::open(source)?;
    let skip = opts
        .skip_dir
        .as_deref()
        .and_then(|d| rustix::fs::stat(d).ok())
        .map(|st| (st.st_dev, st.st_ino));
    let mut walker = Walker {
        source,
        global: matcher,
        skip,
        ignores: Vec::new(),
        live_patterns: 0,
        visit: &mut visit,
    };
    let meta = Meta::from(&root.stat_self()?);
    walker.directory(&root, &[], meta, 0).map(|_| ())
}

/// A `.backupignore` in force: its matcher and how many patterns it holds.
struct Ignore {
    matcher: Gitignore,
    patterns: usize,
}

struct Walker<'a, F> {
    source: &'a Path,
    global: Gitignore,
    skip: Option<(u64, u64)>,
    /// The `.backupignore` files of the directories being walked, outermost
    /// first (`None` where a directory has none, or one that was not used).
    ignores: Vec<Option<Ignore>>,
    live_patterns: usize,
    visit: &'a mut F,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        out.extend_from_slice(rel);
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

fn shown(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

impl<F: FnMut(Item<'_>) -> io::Result<WalkState>> Walker<'_, F> {
    fn skipped(&mut self, rel: &[u8], why: String) -> io::Result<WalkState> {
        (self.visit)(Item::Skipped {
            rel: shown(rel),
            why,
        })
    }

    /// Whether an entry is left out: by the default and user patterns, or
    /// by the nearest `.backupignore` that has a say.
    fn excluded(&self, rel: &[u8], is_dir: bool) -> bool {
        let path = self.source.join(std::ffi::OsStr::from_bytes(rel));
        if self.global.matched(&path, is_dir).is_ignore() {
            return true;
        }
        for ignore in self.ignores.iter().rev().flatten() {
            let m = ignore.matcher.matched(&path, is_dir);
            if m.is_ignore() {
                return true;
            }
            if m.is_whitelist() {
                return false;
            }
        }
        false
    }

    /// Lists `dir` (at `rel`), visits it with what it holds, then its
    /// files, then its subdirectories.
    fn directory(
        &mut self,
        dir: &Dir,
        rel: &[u8],
        meta: Meta,
        depth: usize,
    ) -> io::Result<WalkState> {
        let mut names = match dir.names() {
            Ok(n) => n,
            Err(e) => {
                if (self.visit)(Item::Dir {
                    rel,
                    meta,
                    children: &[],
                    handle: dir,
                })? == WalkState::Quit
                {
                    return Ok(WalkState::Quit);
                }
                return self.skipped(
                    rel,
                    format!(
                        "directory cannot be listed ({e}); its contents are not in the archive"
                    ),
                );
            }
        };
        names.sort();
        let ignore =
            self.load_ignore(dir, rel, names.iter().any(|n| n == IGNORE_FILE.as_bytes()))?;
        self.live_patterns += ignore.as_ref().map_or(0, |i| i.patterns);
        self.ignores.push(ignore);
        let state = self.contents(dir, rel, meta, depth, names);
        if let Some(Some(i)) = self.ignores.pop() {
            self.live_patterns -= i.patterns;
        }
        state
    }

    fn contents(
        &mut self,
        dir: &Dir,
        rel: &[u8],
        meta: Meta,
        depth: usize,
        names: Vec<Vec<u8>>,
    ) -> io::Result<WalkState> {
        let mut children = Vec::with_capacity(names.len());
        for name in names {
            let child = join(rel, &name);
            let st = match dir.stat(&name) {
                Ok(Some(st)) => st,
                Ok(None) => {
                    self.skipped(
                        &child,
                        "vanished while the project was read; not in the archive".into(),
                    )?;
                    continue;
                }
                Err(e) => {
                    self.skipped(&child, format!("cannot be read ({e}); not in the archive"))?;
                    continue;
                }
            };
            let kind = beneath::kind(&st);
            let skip_dir = self.skip == Some((st.st_dev, st.st_ino));
            children.push(Child {
                excluded: skip_dir || self.excluded(&child, kind == FileType::Directory),
                name,
                kind,
                meta: Meta::from(&st),
            });
        }
        if (self.visit)(Item::Dir {
            rel,
            meta,
            children: &children,
            handle: dir,
        })? == WalkState::Quit
        {
            return Ok(WalkState::Quit);
        }
        for c in children.iter().filter(|c| !c.excluded) {
            if c.kind != FileType::Directory && self.entry(dir, rel, c)? == WalkState::Quit {
                return Ok(WalkState::Quit);
            }
        }
        if (self.visit)(Item::FilesDone { rel })? == WalkState::Quit {
            return Ok(WalkState::Quit);
        }
        for c in children.iter().filter(|c| !c.excluded) {
            if c.kind == FileType::Directory
                && self.subdirectory(dir, rel, c, depth)? == WalkState::Quit
            {
                return Ok(WalkState::Quit);
            }
        }
        Ok(WalkState::Continue)
    }

    /// One name in `dir` that is not a directory.
    fn entry(&mut self, dir: &Dir, rel: &[u8], c: &Child) -> io::Result<WalkState> {
        let child = join(rel, &c.name);
        match c.kind {
            FileType::RegularFile => (self.visit)(Item::File {
                rel: child,
                meta: c.meta,
                parent: dir,
                name: &c.name,
            }),
            FileType::Symlink => match dir.read_link(&c.name) {
                Ok(target) => (self.visit)(Item::Symlink {
                    rel: child,
                    target,
                    meta: c.meta,
                }),
                Err(e) => self.skipped(
                    &child,
                    format!("symlink cannot be read ({e}); not in the archive"),
                ),
            },
            other => {
                let what = match other {
                    FileType::Socket => "a socket",
                    FileType::Fifo => "a named pipe",
                    _ => "a device",
                };
                self.skipped(
                    &child,
                    format!("is {what}, which a backup cannot hold; not in the archive"),
                )
            }
        }
    }

    fn subdirectory(
        &mut self,
        dir: &Dir,
        rel: &[u8],
        c: &Child,
        depth: usize,
    ) -> io::Result<WalkState> {
        let child = join(rel, &c.name);
        if depth >= MAX_DEPTH {
            return self.skipped(
                &child,
                format!("is more than {MAX_DEPTH} directories deep; not in the archive"),
            );
        }
        // One name, beneath this directory's handle, no symlink followed:
        // a directory swapped for a symlink since it was listed is refused
        // here by the kernel.
        let sub = match dir.open_dir(&c.name) {
            Ok(d) => d,
            Err(e) => return self.skipped(&child, changed_or_unreadable(&e, "directory")),
        };
        let meta = Meta::from(&sub.stat_self()?);
        if (meta.dev, meta.ino) != (c.meta.dev, c.meta.ino) {
            return self.skipped(
                &child,
                "was replaced while the project was read; not in the archive".into(),
            );
        }
        if self.is_restored_copy(&sub) {
            tracing::info!(
                "left out {}: a copy a restore made (delete its {RESTORED_MARK} to back it up)",
                shown(&child)
            );
            return Ok(WalkState::Continue);
        }
        self.directory(&sub, &child, meta, depth + 1)
    }

    /// Whether `dir` holds the mark a restore leaves in a directory it made.
    fn is_restored_copy(&self, dir: &Dir) -> bool {
        dir.stat(RESTORED_MARK.as_bytes())
            .ok()
            .flatten()
            .is_some_and(|st| beneath::kind(&st) == FileType::RegularFile)
    }

    /// This directory's `.backupignore`, read through its handle, within
    /// the caps; a warning and `None` when it is over one.
    fn load_ignore(&mut self, dir: &Dir, rel: &[u8], present: bool) -> io::Result<Option<Ignore>> {
        if !present {
            return Ok(None);
        }
        let path = join(rel, IGNORE_FILE.as_bytes());
        let problem = match self.read_ignore(dir, rel) {
            Ok(Ok(ignore)) => return Ok(Some(ignore)),
            Ok(Err(problem)) => problem,
            Err(e) => format!("cannot be read ({e})"),
        };
        self.skipped(
            &path,
            format!(
                "{problem}; its patterns are not used (the backup holds what they would leave out)"
            ),
        )?;
        Ok(None)
    }

    fn read_ignore(&self, dir: &Dir, rel: &[u8]) -> io::Result<Result<Ignore, String>> {
        let file = dir.open_read(IGNORE_FILE.as_bytes())?;
        let meta = Meta::of(&file)?;
        if !meta.is_file() {
            return Ok(Err("is not a regular file".into()));
        }
        let mut text = Vec::new();
        file.take(MAX_IGNORE_BYTES + 1).read_to_end(&mut text)?;
        if text.len() as u64 > MAX_IGNORE_BYTES {
            return Ok(Err(format!(
                "is larger than {} KiB",
                MAX_IGNORE_BYTES >> 10
            )));
        }
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        if let Some(long) = lines.iter().position(|l| l.len() > MAX_IGNORE_LINE) {
            return Ok(Err(format!(
                "has a pattern longer than {MAX_IGNORE_LINE} bytes (pattern {})",
                long + 1
            )));
        }
        if lines.len() > MAX_IGNORE_PATTERNS {
            return Ok(Err(format!(
                "holds {} patterns, more than the {MAX_IGNORE_PATTERNS} accepted",
                lines.len()
            )));
        }
        if self.live_patterns + lines.len() > MAX_LIVE_PATTERNS {
            return Ok(Err(format!(
                "would bring the patterns of the .backupignore files that apply here to more \
                 than {MAX_LIVE_PATTERNS}"
            )));
        }
        let base = self.source.join(std::ffi::OsStr::from_bytes(rel));
        let mut b = GitignoreBuilder::new(&base);
        for line in &lines {
            if let Err(e) = b.add_line(None, line) {
                return Ok(Err(format!("has a pattern that does not parse ({e})")));
            }
        }
        Ok(match b.build() {
            Ok(matcher) => Ok(Ignore {
                matcher,
                patterns: lines.len(),
            }),
            Err(e) => Err(format!("has patterns that do not parse ({e})")),
        })
    }
}

/// What an open that failed says: a name that changed kind while the
/// project was read (a symlink now, refused), or one that cannot be read.
fn changed_or_unreadable(e: &io::Error, what: &str) -> String {
    let errno = e.raw_os_error();
    if errno == Some(rustix::io::Errno::LOOP.raw_os_error())
        || errno == Some(rustix::io::Errno::NOTDIR.raw_os_error())
        || errno == Some(rustix::io::Errno::XDEV.raw_os_error())
    {
        format!(
            "was a {what} when listed and is now something else (a symlink?) while the project \
             was read; it was not followed, and is not in the archive"
        )
    } else if e.kind() == io::ErrorKind::NotFound {
        "vanished while the project was read; not in the archive".into()
    } else {
        format!("cannot be read ({e}); not in the archive")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn collect(dir: &Path, excludes: &[&str]) -> Vec<String> {
        let excludes: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let opts = Options { skip_dir: None };
        walk(dir, matcher(dir, &excludes).unwrap(), &opts, |item| {
            match item {
                Item::Dir { rel, .. } => out.push(format!("{}/", String::from_utf8_lossy(rel))),
                Item::File { rel, .. } | Item::Symlink { rel, .. } => {
                    out.push(String::from_utf8_lossy(&rel).into_owned());
                }
                Item::Skipped { rel, .. } => out.push(format!("skipped {rel}")),
                Item::FilesDone { .. } => {}
            }
            Ok(WalkState::Continue)
        })
        .unwrap();
        out
    }

    #[test]
    fn excludes_defaults_user_patterns_and_backupignore() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        for f in [
            "src/a.js",
            "src/node_modules/x/index.js",
            "node_modules/y.js",
            ".git/HEAD",
            "logs/app.log",
            ".env",
            ".env.production",
            "backups/old.tar.gz",
            "sub/backups/kept.txt",
            "cache/tmp.bin",
            "cache/keep.bin",
            "notes.tmp",
            "uploads/photo.jpg",
            "uploads/deep/.backupignore",
            "uploads/deep/raw.bin",
            "uploads/deep/raw.txt",
            "restored/.cofre-restored",
            "restored/files/x",
        ] {
            let p = d.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f).unwrap();
        }
        fs::write(d.join(".backupignore"), "cache/*\n!cache/keep.bin\n*.bin\n").unwrap();
        // A deeper file wins: it brings back what the root's left out.
        fs::write(d.join("uploads/deep/.backupignore"), "!raw.bin\n").unwrap();
        let got = collect(&d, &["*.tmp"]);
        assert_eq!(
            got,
            vec![
                "/",
                ".backupignore",
                "cache/",
                "src/",
                "src/a.js",
                "sub/",
                "sub/backups/",
                "sub/backups/kept.txt",
                "uploads/",
                "uploads/photo.jpg",
                "uploads/deep/",
                "uploads/deep/.backupignore",
                "uploads/deep/raw.bin",
                "uploads/deep/raw.txt",
            ]
        );
    }

    #[test]
    fn bad_user_pattern_is_named() {
        let err = matcher(Path::new("/x"), &["src/{a,b".to_string()]).unwrap_err();
        assert!(err.to_string().contains("BACKUP_EXCLUDE"), "{err}");
    }

    #[test]
    fn ignore_files_over_their_caps_are_not_used_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        fs::create_dir_all(d.join("a")).unwrap();
        fs::create_dir_all(d.join("b")).unwrap();
        fs::write(d.join("a/x.log"), "x").unwrap();
        fs::write(d.join("b/x.log"), "x").unwrap();
        fs::write(d.join("a/.backupignore"), "*".repeat(MAX_IGNORE_LINE + 1)).unwrap();
        let many: String = (0..=MAX_IGNORE_PATTERNS)
            .map(|i| format!("f{i}\n"))
            .collect();
        fs::write(d.join("b/.backupignore"), many).unwrap();
        let got = collect(&d, &[]);
        assert!(got.contains(&"a/x.log".to_owned()), "{got:?}");
        assert!(got.contains(&"b/x.log".to_owned()), "{got:?}");
        assert!(
            got.contains(&"skipped a/.backupignore".to_owned()),
            "{got:?}"
        );
        assert!(
            got.contains(&"skipped b/.backupignore".to_owned()),
            "{got:?}"
        );
    }

    #[test]
    fn a_symlinked_directory_is_kept_as_a_link_and_never_entered() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("p");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&d).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(&outside, d.join("link")).unwrap();
        let d = d.canonicalize().unwrap();
        let got = collect(&d, &[]);
        assert_eq!(got, vec!["/", "link"]);
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_directory_lists_excluded_names_too_and_files_come_before_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        fs::create_dir_all(d.join("b/c")).unwrap();
        fs::create_dir_all(d.join("node_modules")).unwrap();
        fs::write(d.join("a.txt"), "a").unwrap();
        fs::write(d.join("z.txt"), "z").unwrap();
        fs::write(d.join("b/c/x"), "x").unwrap();
        let mut seen = Vec::new();
        walk(
            &d,
            matcher(&d, &[]).unwrap(),
            &Options { skip_dir: None },
            |item| {
                match item {
                    Item::Dir { rel, children, .. } => {
                        let names: Vec<String> = children
                            .iter()
                            .map(|c| {
                                format!(
                                    "{}{}",
                                    String::from_utf8_lossy(&c.name),
                                    if c.excluded { " (excluded)" } else { "" }
                                )
                            })
                            .collect();
                        seen.push(format!("{}/ {names:?}", String::from_utf8_lossy(rel)));
                    }
                    Item::File {
                        rel, parent, name, ..
                    } => {
                        let (mut f, meta) = open_file(parent, name).unwrap();
                        let mut text = String::new();
                        std::io::Read::read_to_string(&mut f, &mut text).unwrap();
                        assert_eq!(meta.size as usize, text.len());
                        seen.push(String::from_utf8_lossy(&rel).into_owned());
                    }
                    Item::FilesDone { rel } => {
                        seen.push(format!("done {}", String::from_utf8_lossy(rel)));
                    }
                    other => panic!("{other:?}"),
                }
                Ok(WalkState::Continue)
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            vec![
                r#"/ ["a.txt", "b", "node_modules (excluded)", "z.txt"]"#,
                "a.txt",
                "z.txt",
                "done ",
                r#"b/ ["c"]"#,
                "done b",
                r#"b/c/ ["x"]"#,
                "b/c/x",
                "done b/c",
            ]
        );
    }
}
