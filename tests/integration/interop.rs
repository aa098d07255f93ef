//! An archive anyone can open: Debian's `age` and GNU `tar` read cofre's
//! archives, and cofre reads archives whose layers other tools wrote.

use std::fs;

use crate::harness::*;

fn tar_view(env: &Env, into: &std::path::Path) {
    let expected = snapshot(&env.project, excluded_by_default);
    assert_same(&expected, &snapshot(&into.join("files"), |_| false));
    assert!(into.join("cofre-manifest.json").is_file());
}

#[test]
fn age_and_gnu_tar_open_a_gzip_archive() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let archive = env.archive();
    let out = env.path("by-tar");
    fs::create_dir_all(&out).unwrap();
    sh(&format!(
        "age -d -i '{}' '{}' | tar -C '{}' -xpzf -",
        env.identity().display(),
        archive.display(),
        out.display()
    ));
    tar_view(&env, &out);
    // And the compression layer is a valid gzip file for gzip itself.
    sh(&format!(
        "age -d -i '{}' '{}' | gzip -t",
        env.identity().display(),
        archive.display()
    ));
}

#[test]
fn age_and_gnu_tar_open_a_zstd_archive() {
    let mut env = Env::with_tree();
    env.set("BACKUP_COMPRESSION", "zstd");
    env.ok(["backup"]);
    let out = env.path("by-tar");
    fs::create_dir_all(&out).unwrap();
    sh(&format!(
        "age -d -i '{}' '{}' | tar --zstd -C '{}' -xpf -",
        env.identity().display(),
        env.archive().display(),
        out.display()
    ));
    tar_view(&env, &out);
}

#[test]
fn cofre_restores_layers_written_by_the_age_and_gzip_clis() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let archive = env.archive();
    let id = env.identity();
    let public = fs::read_to_string(&id)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_owned))
        .unwrap();
    let expected = snapshot(&env.project, excluded_by_default);

    // Re-encrypted by the age CLI.
    let by_age = env.path("by-age.tar.gz.age");
    sh(&format!(
        "age -d -i '{}' '{}' | age -r {public} -o '{}'",
        id.display(),
        archive.display(),
        by_age.display()
    ));
    let t1 = env.path("t1");
    // Not written by cofre, so not signed: refused unless asked for.
    let msg = env.fails(
        [
            "restore",
            by_age.to_str().unwrap(),
            "--to",
            t1.to_str().unwrap(),
        ],
        1,
    );
    assert!(msg.contains("--allow-unsigned"), "{msg}");
    assert!(!t1.exists());
    env.ok(argv!["restore", by_age, "--to", t1, "--allow-unsigned",]);
    assert_same(&expected, &snapshot(&t1, |_| false));

    // Recompressed by GNU gzip into one ordinary gzip member, no encryption.
    let by_gzip = env.path("by-gzip.tar.gz");
    sh(&format!(
        "age -d -i '{}' '{}' | gzip -d | gzip -6 > '{}'",
        id.display(),
        archive.display(),
        by_gzip.display()
    ));
    let t2 = env.path("t2");
    env.ok(argv!["restore", by_gzip, "--to", t2, "--allow-unsigned",]);
    assert_same(&expected, &snapshot(&t2, |_| false));

    // Recompressed by the zstd CLI.
    let by_zstd = env.path("by-zstd.tar.zst");
    sh(&format!(
        "age -d -i '{}' '{}' | gzip -d | zstd -q -3 > '{}'",
        id.display(),
        archive.display(),
        by_zstd.display()
    ));
    let t3 = env.path("t3");
    env.ok(argv!["restore", by_zstd, "--to", t3, "--allow-unsigned",]);
    assert_same(&expected, &snapshot(&t3, |_| false));
}
