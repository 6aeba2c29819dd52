//! Tidy checks: repository-wide rules, run as ordinary tests by `cargo test -p xtask`.
//!
//! - **Architecture invariant** (house style 1): `msite-core`'s normal and build dependency
//!   tree, with all its features on, holds no storage engine and no backend crate;
//!   `msite-packet` holds neither engines nor `msite-core`; a backend never depends on the
//!   other backend. Checked with `cargo tree`, which resolves features per package exactly.
//! - **Docs** (house style 19): every `.rs` file under `crates/` and `xtask/` starts with `//!`.
//! - **Tests** (house style 18): no ignored or should-panic tests and no unfinished-code
//!   macros anywhere in `crates/`, `xtask/` or `fuzz/`, except in this file, which has to
//!   name them.
//!
//! Each check is a pure function over text or file contents, unit-tested on synthetic
//! input below, plus one `#[test]` that applies it to the real tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::project_root;

const ENGINES: &[&str] = &["rocksdb", "librocksdb-sys", "rusqlite", "libsqlite3-sys"];
const BACKENDS: &[&str] = &["msite-store-rocks", "msite-store-sqlite"];

/// `cargo tree -p PKG --all-features -e normal,build --prefix none --format {p}`: one
/// `name vX.Y.Z (...)` line per package in PKG's non-dev dependency tree.
fn dependency_tree(package: &str) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "-p",
            package,
            "--all-features",
            "-e",
            "normal,build",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(project_root())
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo tree: {e}"));
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The packages in `tree` (cargo tree output) whose name is in `forbidden`, sorted, deduplicated.
fn forbidden_in_tree(tree: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| forbidden.contains(name))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

fn assert_no_dependency_on(package: &str, forbidden: &[&str]) {
    let tree = dependency_tree(package);
    assert!(
        tree.lines().any(|l| l.starts_with(package)),
        "cargo tree output for {package} does not name {package} itself:\n{tree}"
    );
    let found = forbidden_in_tree(&tree, forbidden);
    assert!(
        found.is_empty(),
        "architecture invariant broken: {package} must not depend (even transitively, with any \
         feature) on {found:?}. Run `cargo tree -p {package} -e normal,build --all-features -i {}` \
         to see the path.",
        found[0]
    );
}

#[test]
fn core_depends_on_no_storage_engine() {
    let forbidden: Vec<&str> = ENGINES.iter().chain(BACKENDS).copied().collect();
    assert_no_dependency_on("msite-core", &forbidden);
}

#[test]
fn packet_depends_on_neither_core_nor_storage() {
    let forbidden: Vec<&str> = ENGINES
        .iter()
        .chain(BACKENDS)
        .copied()
        .chain(["msite-core"])
        .collect();
    assert_no_dependency_on("msite-packet", &forbidden);
}

#[test]
fn backends_do_not_depend_on_each_other() {
    assert_no_dependency_on(
        "msite-store-rocks",
        &["msite-store-sqlite", "rusqlite", "libsqlite3-sys"],
    );
    assert_no_dependency_on(
        "msite-store-sqlite",
        &["msite-store-rocks", "rocksdb", "librocksdb-sys"],
    );
}

#[test]
fn every_workspace_member_has_a_matrix_row() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--workspace",
            "--depth",
            "0",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(project_root())
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo tree: {e}"));
    assert!(output.status.success(), "cargo tree --workspace failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let missing: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|pkg| !crate::test::MATRIX.iter().any(|row| row.args.contains(pkg)))
        .collect();
    assert!(
        missing.is_empty(),
        "workspace members with no `-p` row in xtask/src/test.rs MATRIX: {missing:?}. \
         Add a row, so `cargo xtask test --no-rocks` tests them too."
    );
}

/// Every `.rs` file under `dir`, skipping build output and fuzzer state.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    const SKIP: &[&str] = &["target", "corpus", "artifacts", "coverage"];
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && !SKIP.contains(&name.as_str()) {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(project_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Whether a file's text opens with an inner doc comment.
fn starts_with_module_doc(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with("//!")
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = project_root();
    let offenders: Vec<String> = ["crates", "xtask"]
        .iter()
        .flat_map(|d| rust_files(&root.join(d)))
        .filter(|p| !starts_with_module_doc(&read(p)))
        .map(|p| relative(&p))
        .collect();
    assert!(
        offenders.is_empty(),
        "these files do not start with a `//!` doc comment saying what the module is for \
         (house style 19):\n  {}",
        offenders.join("\n  ")
    );
}

/// Patterns banned outside this file. Built with `concat!` so this file can name them
/// without tripping over itself if it is ever scanned.
const BANNED: &[(&str, &str)] = &[
    (
        concat!("#[", "ignore"),
        "ignored tests: gate slow tests on an env var instead (house style 18)",
    ),
    (
        concat!("#[", "should_panic"),
        "should-panic tests: assert on the returned error (house style 18)",
    ),
    (concat!("todo", "!("), "unfinished code"),
    (concat!("unimplemented", "!("), "unfinished code"),
];

/// `(line number, why)` for each banned pattern in `text`.
fn banned_uses(text: &str) -> Vec<(usize, &'static str, &'static str)> {
    let mut hits = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for (pattern, why) in BANNED {
            if line.contains(pattern) {
                hits.push((i + 1, *pattern, *why));
            }
        }
    }
    hits
}

#[test]
fn no_ignored_tests_or_unfinished_code() {
    let root = project_root();
    let this_file = root.join("xtask/src/tidy.rs");
    let mut offenders = Vec::new();
    for path in ["crates", "xtask", "fuzz"]
        .iter()
        .flat_map(|d| rust_files(&root.join(d)))
    {
        if path == this_file {
            continue;
        }
        for (line, pattern, why) in banned_uses(&read(&path)) {
            offenders.push(format!("{}:{line}: `{pattern}`: {why}", relative(&path)));
        }
    }
    assert!(
        offenders.is_empty(),
        "banned patterns found:\n  {}",
        offenders.join("\n  ")
    );
}

// The checks themselves, on synthetic input: each must be able to fail.

#[test]
fn forbidden_in_tree_finds_transitive_engines() {
    let tree = "msite-core v0.1.0 (/w/crates/core)\nthiserror v2.0.12\n\
                some-wrapper v1.0.0\nlibrocksdb-sys v0.17.1+9.9.3\nrusqlite v0.37.0\n\
                librocksdb-sys v0.17.1+9.9.3\n";
    assert_eq!(
        forbidden_in_tree(tree, ENGINES),
        ["librocksdb-sys", "rusqlite"]
    );
    // A name that merely starts like an engine is not one.
    assert!(forbidden_in_tree("rocksdb-types v1.0.0\nrusqlite-migrate v1\n", ENGINES).is_empty());
}

#[test]
fn module_doc_check_rejects_files_without_it() {
    assert!(starts_with_module_doc("//! The thing.\nfn f() {}\n"));
    assert!(starts_with_module_doc("\n\n//! After blank lines.\n"));
    assert!(!starts_with_module_doc(
        "// A plain comment.\n//! Too late.\n"
    ));
    assert!(!starts_with_module_doc(
        "#![deny(missing_docs)]\n//! Too late.\n"
    ));
    assert!(!starts_with_module_doc("/// An item doc.\nfn f() {}\n"));
    assert!(!starts_with_module_doc(""));
}

#[test]
fn banned_uses_reports_line_numbers() {
    let text = concat!(
        "//! x\n#[test]\n#[",
        "ignore]\nfn a() {}\n",
        "fn b() { ",
        "todo",
        "!() }\n",
        "#[",
        "should_panic(expected = \"x\")]\n",
        "fn c() { ",
        "unimplemented",
        "!(\"later\") }\n",
        "// mentions todo but not the macro\n"
    );
    let lines: Vec<usize> = banned_uses(text).iter().map(|(l, _, _)| *l).collect();
    assert_eq!(lines, [3, 5, 6, 7]);
}

#[test]
fn walker_skips_target_dirs_and_finds_nested_files() {
    let tmp = std::env::temp_dir().join(format!("xtask-tidy-walk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for dir in ["src/deep", "target/debug", "fuzz/target"] {
        std::fs::create_dir_all(tmp.join(dir)).expect("creating temp dirs");
    }
    for file in [
        "src/lib.rs",
        "src/deep/mod.rs",
        "target/debug/gen.rs",
        "fuzz/target/x.rs",
        "src/notes.txt",
    ] {
        std::fs::write(tmp.join(file), "fn f() {}\n").expect("writing temp files");
    }
    let found: Vec<String> = rust_files(&tmp)
        .iter()
        .map(|p| {
            p.strip_prefix(&tmp)
                .expect("under tmp")
                .display()
                .to_string()
        })
        .collect();
    std::fs::remove_dir_all(&tmp).expect("removing temp dir");
    assert_eq!(found, ["src/deep/mod.rs", "src/lib.rs"]);
}
