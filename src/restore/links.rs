//! Where restored symlinks lead, judged on the tree they will live in.
//!
//! A lexical check is not enough: with `r -> .`, the target
//! `r/r/r/../../../x` looks like it stays inside and does not. So each
//! symlink's target is resolved the way the kernel would, component by
//! component, against the staged tree and, for a `--force` restore, the
//! target's existing entries under it (the tree after the merge): a symlink
//! met on the way is read and its target spliced in; `..` at the root
//! leaves. Nothing is followed on disk while doing this (each step is an
//! `lstat` through [`crate::beneath`]). Components that do not exist yet
//! are taken as plain directories, the most a later file could make of
//! them.

use std::collections::VecDeque;
use std::io;

use rustix::fs::FileType;

use crate::beneath::{self, Dir};

/// Symlinks the kernel follows on one path before giving up (`ELOOP`).
const MAX_HOPS: usize = 40;

/// What one name is in the merged tree.
enum Found {
    Missing,
    Dir,
    Symlink(Vec<u8>),
    Other,
}

/// The trees a path is looked up in, first match wins: the staged tree,
/// then the existing target (for `--force`).
pub struct Views<'a> {
    /// The staged tree, then the existing target.
    pub layers: Vec<&'a Dir>,
}

impl Views<'_> {
    fn lookup(&self, dir: &[Vec<u8>], name: &[u8]) -> io::Result<Found> {
        let rel = dir.join(&b'/');
        for layer in &self.layers {
            let Ok(parent) = layer.open_dir(&rel) else {
                continue;
            };
            let Some(st) = parent.stat(name)? else {
                continue;
            };
            return Ok(match beneath::kind(&st) {
                FileType::Directory => Found::Dir,
                FileType::Symlink => Found::Symlink(parent.read_link(name)?),
                _ => Found::Other,
            });
        }
        Ok(Found::Missing)
    }

    /// Whether the symlink at `link_rel` (relative to the root) pointing to
    /// `target` resolves to somewhere outside the root.
    pub fn escapes(&self, link_rel: &[u8], target: &[u8]) -> io::Result<bool> {
        if target.first() == Some(&b'/') {
            return Ok(true);
        }
        let mut stack: Vec<Vec<u8>> = link_rel.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        stack.pop(); // the link's own name: resolution starts in its directory
        let mut pending: VecDeque<Vec<u8>> =
            target.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.pop().is_none() {
                        return Ok(true);
                    }
                    continue;
                }
                _ => {}
            }
            match self.lookup(&stack, &c)? {
                Found::Missing | Found::Dir => stack.push(c),
                Found::Other => {
                    // A file in the middle of a path fails (ENOTDIR); at
                    // the end it is where the link leads, inside.
                    return Ok(false);
                }
                Found::Symlink(t) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        // The kernel gives up (ELOOP): it leads nowhere.
                        return Ok(false);
                    }
                    if t.first() == Some(&b'/') {
                        return Ok(true);
                    }
                    for part in t.split(|&b| b == b'/').rev() {
                        pending.push_front(part.to_vec());
                    }
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_through_links_in_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("sub/deep")).unwrap();
        symlink(".", root.join("r")).unwrap();
        symlink("sub/deep", root.join("d")).unwrap();
        symlink("..", root.join("sub/up")).unwrap();
        let dir = Dir::open(root).unwrap();
        let views = Views { layers: vec![&dir] };
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"a", b"b", false),
            (b"a", b"../b", true),
            (b"x/a", b"../b", false),
            (b"a", b"/etc/passwd", true),
            // Lexically inside, really outside: r is the root itself.
            (b"a", b"r/r/r/../../../x", true),
            (b"a", b"r/r/x", false),
            // d leads to sub/deep, so d/../.. is the root again: inside.
            (b"a", b"d/../../x", false),
            (b"a", b"d/../../../x", true),
            // sub/up is the root; one more .. leaves.
            (b"a", b"sub/up/sub/up/..", true),
            (b"a", b"sub/up/sub/up/x", false),
            (b"odd/link-to-data", b"../data/export_000.json", false),
        ];
        for (link, target, out) in cases {
            assert_eq!(
                views.escapes(link, target).unwrap(),
                *out,
                "{} -> {}",
                String::from_utf8_lossy(link),
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn a_link_loop_leads_nowhere() {
        let tmp = tempfile::tempdir().unwrap();
        symlink("b", tmp.path().join("a")).unwrap();
        symlink("a", tmp.path().join("b")).unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let views = Views { layers: vec![&dir] };
        assert!(!views.escapes(b"l", b"a/../../x").unwrap());
    }
}
