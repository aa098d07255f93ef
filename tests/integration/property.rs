//! Mutated archives never do harm: take a valid archive, flip bits,
//! truncate it, splice and duplicate its blocks (in the tar stream, then
//! recompressed and signed again with the installation's key, so the
//! content checks are what stands; or in the file itself), and restore.
//! Whatever the mutation, cofre never panics, never writes outside the
//! target, leaves no staging behind, and either fails with one clear line
//! or restores exactly what the source held.
//!
//! The cases come from a fixed seed (set `COFRE_PROPTEST_CASES` for more).

use std::fs;
use std::io::Read;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::harness::*;
use crate::hostile::{Canaries, gzip};

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Truncate { keep: usize },
    Splice { from: usize, len: usize, to: usize },
    DuplicateBlock { block: usize },
    Zero { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        (any::<usize>(), 1usize..3000, any::<usize>())
            .prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
        any::<usize>().prop_map(|block| Mutation::DuplicateBlock { block }),
        (any::<usize>(), 1usize..600).prop_map(|(at, len)| Mutation::Zero { at, len }),
    ]
}

fn apply(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let n = b.len().max(1);
    match *m {
        Mutation::Flip { at, bit } => b[at % n] ^= 1 << bit,
        Mutation::Truncate { keep } => b.truncate(keep % n),
        Mutation::Splice { from, len, to } => {
            let from = from % n;
            let chunk: Vec<u8> = b[from..(from + len).min(b.len())].to_vec();
            let to = to % n;
            b.splice(to..to, chunk);
        }
        Mutation::DuplicateBlock { block } => {
            let blocks = b.len() / 512;
            if blocks > 0 {
                let at = (block % blocks) * 512;
                let copy = b[at..at + 512].to_vec();
                b.splice(at..at, copy);
            }
        }
        Mutation::Zero { at, len } => {
            let at = at % n;
            let end = (at + len).min(b.len());
            b[at..end].fill(0);
        }
    }
    b
}

#[test]
fn mutated_archives_fail_cleanly_or_restore_exactly() {
    let mut env = Env::new();
    fs::create_dir_all(env.project.join("src/lib")).unwrap();
    fs::write(
        env.project.join("src/lib/a.js"),
        "export const a = 1;\n".repeat(40),
    )
    .unwrap();
    fs::write(env.project.join("package.json"), "{\"name\":\"app\"}\n").unwrap();
    fs::write(
        env.project.join("data.bin"),
        crate::harness::Rng::new(7).bytes(3000),
    )
    .unwrap();
    std::os::unix::fs::symlink("src/lib/a.js", env.project.join("main.js")).unwrap();
    fs::create_dir_all(env.project.join("empty")).unwrap();
    env.set("BACKUP_ENCRYPTION", "none");
    env.ok(["backup"]);
    let source = snapshot(&env.project, excluded_by_default);
    let original = fs::read(env.archive()).unwrap();
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&original[..])
        .read_to_end(&mut tar)
        .unwrap();
    let canaries = Canaries::plant(&env);

    let cases = std::env::var("COFRE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let counter = std::cell::Cell::new(0u32);
    let outcomes = std::cell::RefCell::new((0u32, 0u32));
    runner
        .run(&(mutation(), any::<bool>()), |(m, in_tar)| {
            let i = counter.get();
            counter.set(i + 1);
            let archive = env.path(&format!("m{i}.tar.gz"));
            let bytes = if in_tar {
                gzip(&apply(&tar, &m))
            } else {
                apply(&original, &m)
            };
            fs::write(&archive, bytes).unwrap();
            env.sign(&archive);
            let target = env.path(&format!("t{i}"));
            let out = env.run(argv!["restore", archive, "--to", target,]);
            let code = out.status.code();
            prop_assert!(
                matches!(code, Some(0 | 1)),
                "{m:?} (in tar: {in_tar}): exit {code:?}\n{}",
                text(&out)
            );
            canaries.assert_untouched(&format!("{m:?}"));
            let staging = names_starting(env.root.path(), ".cofre-restore");
            prop_assert!(staging.is_empty(), "{m:?}: staging left: {staging:?}");
            if code == Some(0) {
                let got = snapshot(&target, |_| false);
                if got != source {
                    return Err(TestCaseError::fail(format!(
                        "{m:?}: restored, but not exactly the source"
                    )));
                }
                outcomes.borrow_mut().0 += 1;
            } else {
                let errors = String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .filter(|l| l.starts_with("error: "))
                    .count();
                prop_assert_eq!(errors, 1, "{:?}: {}", m, text(&out));
                prop_assert!(
                    !target.exists(),
                    "{:?}: a refused restore left the target",
                    m
                );
                outcomes.borrow_mut().1 += 1;
            }
            let _ = fs::remove_dir_all(&target);
            let _ = fs::remove_file(&archive);
            Ok(())
        })
        .unwrap();
    let (restored, refused) = *outcomes.borrow();
    eprintln!("{restored} mutated archives restored exactly, {refused} refused cleanly");
    assert!(refused > 0, "the mutations should break most archives");
}
