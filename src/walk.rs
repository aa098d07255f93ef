//! Walking the project: what goes into the archive, in a stable order.
//!
//! The `ignore` crate does the walking and the gitignore matching. Only
//! cofre's own rules are set: the default excludes, the user's
//! `BACKUP_EXCLUDE` patterns and `.backupignore` files (gitignore syntax,
//! negation included), the backup directory wherever it lies. A project's
//! `.gitignore` is deliberately *not* honoured: uploaded files and local
//! data are exactly what git ignores and a backup must keep.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::{WalkBuilder, WalkState};

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
];

/// The per-directory ignore file users can add.
pub const IGNORE_FILE: &str = ".backupignore";

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

/// One thing found in the project.
#[derive(Debug)]
pub enum Item {
    /// A directory (the project root first, with an empty relative path).
    Dir {
        /// Path relative to the project, as bytes.
        rel: Vec<u8>,
        /// lstat.
        meta: Metadata,
    },
    /// A regular file.
    File {
        /// Path relative to the project.
        rel: Vec<u8>,
        /// Full path.
        path: PathBuf,
    },
    /// A symlink, kept as a link.
    Symlink {
        /// Path relative to the project.
        rel: Vec<u8>,
        /// Where it points, as stored.
        target: Vec<u8>,
        /// lstat.
        meta: Metadata,
    },
    /// Something that cannot be archived, or could not be read.
    Skipped {
        /// Path relative to the project (or the full path).
        rel: String,
        /// Why.
        why: String,
    },
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

fn rel_of(source: &Path, path: &Path) -> Vec<u8> {
    path.strip_prefix(source)
        .unwrap_or(path)
        .as_os_str()
        .as_bytes()
        .to_vec()
}

/// Walks `source` (which must be canonical), calling `visit` for each item
/// in a stable order (directories before their contents, names sorted).
/// `skip_dir` is excluded too (the backup directory, when inside). An `Err`
/// from `visit` stops the walk and is returned.
pub fn walk(
    source: &Path,
    matcher: Gitignore,
    skip_dir: Option<PathBuf>,
    mut visit: impl FnMut(Item) -> io::Result<WalkState>,
) -> io::Result<()> {
    let walker = WalkBuilder::new(source)
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .follow_links(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            if e.depth() == 0 {
                return true;
            }
            if skip_dir.as_deref() == Some(e.path()) {
                return false;
            }
            !matcher.matched(e.path(), is_dir).is_ignore()
        })
        .build();
    for result in walker {
        let entry = match result {
            Ok(entry) => entry,
            Err(err) => {
                let state = visit(Item::Skipped {
                    rel: walk_error_path(&err, source),
                    why: format!(
                        "cannot be read ({}); not in the archive",
                        walk_error_text(&err)
                    ),
                })?;
                if state == WalkState::Quit {
                    return Ok(());
                }
                continue;
            }
        };
        let path = entry.path();
        let rel = rel_of(source, path);
        let shown = || String::from_utf8_lossy(&rel).into_owned();
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                let state = visit(Item::Skipped {
                    rel: shown(),
                    why: if e
                        .io_error()
                        .is_some_and(|io| io.kind() == io::ErrorKind::NotFound)
                    {
                        "vanished while the project was read; not in the archive".into()
                    } else {
                        format!(
                            "cannot be read ({}); not in the archive",
                            walk_error_text(&e)
                        )
                    },
                })?;
                if state == WalkState::Quit {
                    return Ok(());
                }
                continue;
            }
        };
        let ft = meta.file_type();
        let item = if ft.is_dir() {
            Item::Dir { rel, meta }
        } else if ft.is_file() {
            Item::File {
                rel,
                path: path.to_path_buf(),
            }
        } else if ft.is_symlink() {
            match fs::read_link(path) {
                Ok(target) => Item::Symlink {
                    rel,
                    target: target.as_os_str().as_bytes().to_vec(),
                    meta,
                },
                Err(e) => Item::Skipped {
                    rel: shown(),
                    why: format!("symlink cannot be read ({e}); not in the archive"),
                },
            }
        } else {
            let what = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a named pipe"
            } else {
                "a device"
            };
            Item::Skipped {
                rel: shown(),
                why: format!("is {what}, which a backup cannot hold; not in the archive"),
            }
        };
        if visit(item)? == WalkState::Quit {
            return Ok(());
        }
    }
    Ok(())
}

fn walk_error_path(err: &ignore::Error, source: &Path) -> String {
    match err {
        ignore::Error::WithPath { path, .. } => {
            String::from_utf8_lossy(&rel_of(source, path)).into_owned()
        }
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            walk_error_path(err, source)
        }
        _ => source.display().to_string(),
    }
}

fn walk_error_text(err: &ignore::Error) -> String {
    match err {
        ignore::Error::WithPath { err, .. }
        | ignore::Error::WithDepth { err, .. }
        | ignore::Error::WithLineNumber { err, .. } => walk_error_text(err),
        ignore::Error::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(dir: &Path, excludes: &[&str]) -> Vec<String> {
        let excludes: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        walk(dir, matcher(dir, &excludes).unwrap(), None, |item| {
            match item {
                Item::Dir { rel, .. } => out.push(format!("{}/", String::from_utf8_lossy(&rel))),
                Item::File { rel, .. } | Item::Symlink { rel, .. } => {
                    out.push(String::from_utf8_lossy(&rel).into_owned());
                }
                Item::Skipped { rel, .. } => out.push(format!("skipped {rel}")),
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
        ] {
            let p = d.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f).unwrap();
        }
        fs::write(d.join(".backupignore"), "cache/*\n!cache/keep.bin\n").unwrap();
        let got = collect(&d, &["*.tmp"]);
        assert_eq!(
            got,
            vec![
                "/",
                ".backupignore",
                "cache/",
                "cache/keep.bin",
                "src/",
                "src/a.js",
                "sub/",
                "sub/backups/",
                "sub/backups/kept.txt",
                "uploads/",
                "uploads/photo.jpg",
            ]
        );
    }

    #[test]
    fn bad_user_pattern_is_named() {
        let err = matcher(Path::new("/x"), &["src/{a,b".to_string()]).unwrap_err();
        assert!(err.to_string().contains("BACKUP_EXCLUDE"), "{err}");
    }
}
