//! Restore behaviour: the target is never harmed, `--force` merges,
//! `--dry-run` writes nothing, `--include` restores part of the tree.

use std::fs;

use crate::harness::*;

#[test]
fn refuses_a_non_empty_target_and_leaves_it_alone() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let target = env.path("t");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("mine.txt"), "precious").unwrap();
    let before = snapshot(&target, |_| false);
    let msg = env.fails(argv!["restore", "latest", "--to", target], 1);
    assert!(
        msg.contains("is not empty") && msg.contains("--force"),
        "{msg}"
    );
    assert_eq!(before, snapshot(&target, |_| false));
}

#[test]
fn force_replaces_what_the_archive_holds_and_keeps_the_rest() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let target = env.path("t");
    fs::create_dir_all(target.join("src")).unwrap();
    fs::write(target.join("mine.txt"), "precious").unwrap();
    fs::write(target.join("package.json"), "stale").unwrap();
    fs::write(target.join("src/local-only.js"), "keep me").unwrap();
    env.ok(argv!["restore", "latest", "--to", target, "--force",]);
    assert_eq!(
        fs::read_to_string(target.join("mine.txt")).unwrap(),
        "precious"
    );
    assert_eq!(
        fs::read_to_string(target.join("src/local-only.js")).unwrap(),
        "keep me"
    );
    assert_eq!(
        fs::read(target.join("package.json")).unwrap(),
        fs::read(env.project.join("package.json")).unwrap()
    );
    let expected = snapshot(&env.project, excluded_by_default);
    let got = snapshot(&target, |p| p == "mine.txt" || p == "src/local-only.js");
    // Merged directories keep the archive's mode and time, too.
    assert_same(&expected, &got);
}

#[test]
fn default_target_is_named_after_the_archive() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let name = env.archive_name();
    let stem = name.split(".tar.").next().unwrap().to_owned();
    let out = env.ok(["restore", "latest"]);
    assert!(stdout(&out).contains(&stem), "{}", text(&out));
    let restored = env.project.join(&stem);
    assert!(restored.join("package.json").is_file());
}

#[test]
fn dry_run_lists_and_writes_nothing() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let target = env.path("t");
    let out = stdout(&env.ok(argv!["restore", "latest", "--to", target, "--dry-run",]));
    assert!(out.contains("would write package.json"), "{out}");
    assert!(
        out.contains("would write odd/名前 with spaces/ficheiro ação.txt"),
        "{out}"
    );
    assert!(out.contains("dry run:"), "{out}");
    assert!(!target.exists());
    let leftovers = names_starting(env.root.path(), ".cofre");
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn include_restores_part_of_the_tree() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let target = env.path("t");
    env.ok(argv![
        "restore",
        "latest",
        "--to",
        target,
        "--include",
        "data/export_00*.json",
        "--include",
        "/bin",
    ]);
    let got = snapshot(&target, |_| false);
    let files: Vec<&String> = got.keys().collect();
    assert!(got.contains_key("data/export_000.json"));
    assert!(got.contains_key("bin/run.sh"));
    assert!(!got.contains_key("data/export_010.json"), "{files:?}");
    assert!(!got.contains_key("package.json"), "{files:?}");
    let expected = snapshot(&env.project, excluded_by_default);
    assert_eq!(
        got["data/export_000.json"],
        expected["data/export_000.json"]
    );

    let none = env.path("none");
    let msg = env.fails(
        [
            "restore",
            "latest",
            "--to",
            none.to_str().unwrap(),
            "--include",
            "no/such/*",
        ],
        1,
    );
    assert!(msg.contains("matches --include"), "{msg}");
    assert!(!none.exists());
}

#[test]
fn restore_by_name_and_by_path() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let archive = env.archive();
    let name = archive.file_name().unwrap().to_str().unwrap();
    env.ok(argv!["restore", name, "--to", env.path("a")]);
    env.ok(argv!["restore", archive, "--to", env.path("b"),]);
    let msg = env.fails(
        [
            "restore",
            "backup_1999-01-01T00-00-00.tar.gz",
            "--to",
            env.path("c").to_str().unwrap(),
        ],
        1,
    );
    assert!(msg.contains("cofre list"), "{msg}");
}

/// The default restore (the old script's habit: `./backup_<time>/` in the
/// project) makes a restored copy the next backup leaves out; the summary
/// says where the files went.
#[test]
fn a_restored_copy_inside_the_project_never_enters_a_later_backup() {
    let env = Env::with_tree();
    env.ok(["backup"]);
    let first = stdout(&env.ok(["list", "--json"]));
    let files = |listing: &str| {
        let rows: serde_json::Value = serde_json::from_str(listing).unwrap();
        rows[0]["files"].as_u64().unwrap()
    };
    let out = env.ok(["restore", "latest"]);
    let said = stdout(&out);
    assert!(
        said.contains("summary")
            && said.contains("a restored copy: backups of the project leave it out"),
        "{said}"
    );
    let copy = env.project.join(cofre_stem(&env.archive()));
    assert!(copy.join(".cofre-restored").is_file());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = env.ok(["backup", "-v"]);
    assert!(
        text(&out).contains("a copy a restore made"),
        "{}",
        text(&out)
    );
    let second = stdout(&env.ok(["list", "--json"]));
    assert_eq!(
        files(&second),
        files(&first),
        "the restored copy was backed up"
    );

    // Restored over the project itself: no mark (the project is never
    // left out of its own backups).
    let out = env.ok(["restore", "latest", "--to", ".", "--force"]);
    assert!(!stdout(&out).contains("restored copy"), "{}", text(&out));
    assert!(!env.project.join(".cofre-restored").exists());
}

/// `backup_2026-…` of `backup_2026-….tar.gz.age`.
fn cofre_stem(archive: &std::path::Path) -> String {
    let name = archive.file_name().unwrap().to_str().unwrap();
    name[..name.find(".tar.").unwrap()].to_owned()
}
