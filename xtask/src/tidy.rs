//! Tidy checks: repository-wide rules, run as ordinary tests by `cargo test -p xtask`.
//!
//! - **Architecture invariant** (house style 1): `msite-core`'s normal and build dependency
//!   tree, with all its features on, holds no storage engine and no backend crate;
//!   `msite-packet` holds neither engines nor `msite-core`; a backend never depends on the
//!   other backend. Checked with `cargo tree`, which resolves features per package exactly.
//! - **One list of backends**: the engines and backend crates above come from
//!   `msite_backends::BackendKind` (its std-only `kind.rs`, included here); every backend has
//!   its store crate in the workspace, its rows in the test matrix, and its cargo feature in
//!   `msite-backends` and in the crates that select a backend (CLI, simulator, bench).
//! - **Docs** (house style 19): every `.rs` file under `crates/` and `xtask/` starts with `//!`.
//! - **Tests** (house style 18): no ignored or should-panic tests and no unfinished-code
//!   macros anywhere in `crates/`, `xtask/` or `fuzz/`, except in this file, which has to
//!   name them.
//!
//! Each check is a pure function over text or file contents, unit-tested on synthetic
//! input below, plus one `#[test]` that applies it to the real tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::backend_kind::BackendKind;
use crate::project_root;

/// The third-party crates of every storage engine.
fn engines() -> Vec<&'static str> {
    BackendKind::ALL
        .into_iter()
        .flat_map(BackendKind::engine_crates)
        .copied()
        .collect()
}

/// The workspace crates that implement a backend's store.
fn backend_crates() -> Vec<&'static str> {
    BackendKind::ALL
        .into_iter()
        .filter_map(BackendKind::store_crate)
        .collect()
}

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
    let mut forbidden = engines();
    forbidden.extend(backend_crates());
    forbidden.push("msite-backends");
    assert_no_dependency_on("msite-core", &forbidden);
}

#[test]
fn packet_depends_on_neither_core_nor_storage() {
    let mut forbidden = engines();
    forbidden.extend(backend_crates());
    forbidden.extend(["msite-core", "msite-backends"]);
    assert_no_dependency_on("msite-packet", &forbidden);
}

/// For each backend crate, the crates it must not depend on: every other backend's store
/// crate and engine crates.
fn other_backends(kind: BackendKind) -> Vec<&'static str> {
    BackendKind::ALL
        .into_iter()
        .filter(|k| *k != kind)
        .flat_map(|k| {
            k.store_crate()
                .into_iter()
                .chain(k.engine_crates().iter().copied())
        })
        .collect()
}

#[test]
fn backends_do_not_depend_on_each_other() {
    for kind in BackendKind::ALL {
        if let Some(store) = kind.store_crate() {
            assert_no_dependency_on(store, &other_backends(kind));
        }
    }
}

/// The workspace's packages, by name (`cargo tree --workspace --depth 0`).
fn workspace_members() -> Vec<String> {
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
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_workspace_member_has_a_matrix_row() {
    let members = workspace_members();
    let missing: Vec<&str> = members
        .iter()
        .map(String::as_str)
        .filter(|pkg| !crate::test::MATRIX.iter().any(|row| row.args.contains(pkg)))
        .collect();
    assert!(
        missing.is_empty(),
        "workspace members with no `-p` row in xtask/src/test.rs MATRIX: {missing:?}. \
         Add a row, so `cargo xtask test --no-rocks` tests them too."
    );
}

#[test]
fn every_backend_crate_is_a_workspace_member() {
    let members = workspace_members();
    for store in backend_crates() {
        assert!(
            members.iter().any(|m| m == store),
            "the backend crate {store} (msite_backends::BackendKind::store_crate) is not a \
             workspace member; add it to `members` in the root Cargo.toml"
        );
    }
}

/// Whether `args` test the CLI built with `kind` as its only backend (other, non-backend
/// features such as `serve` may come with it).
fn cli_row_of(kind: BackendKind, args: &[&str]) -> bool {
    let features: Vec<&str> = args
        .iter()
        .position(|a| *a == "--features")
        .and_then(|i| args.get(i + 1))
        .map(|f| f.split(',').collect())
        .unwrap_or_default();
    args.contains(&"msite-cli")
        && args.contains(&"--no-default-features")
        && features.contains(&kind.name())
        && features
            .iter()
            .all(|f| *f == kind.name() || BackendKind::parse(f).is_none())
}

/// The rows a backend needs in the test matrix: its store crate's own row, and for a
/// production backend a CLI row built with that backend alone.
fn missing_matrix_rows(kind: BackendKind, rows: &[&[&str]]) -> Vec<String> {
    let has = |want: &[&str]| {
        rows.iter()
            .any(|args| want.iter().all(|w| args.contains(w)))
    };
    let mut missing = Vec::new();
    if let Some(store) = kind.store_crate() {
        if !has(&["-p", store]) {
            missing.push(format!("-p {store}"));
        }
    }
    if kind.for_production() && !rows.iter().any(|args| cli_row_of(kind, args)) {
        missing.push(format!(
            "-p msite-cli --no-default-features --features {}",
            kind.name()
        ));
    }
    missing
}

#[test]
fn every_backend_has_its_matrix_rows() {
    let rows: Vec<&[&str]> = crate::test::MATRIX.iter().map(|r| r.args).collect();
    for kind in BackendKind::ALL {
        let missing = missing_matrix_rows(kind, &rows);
        assert!(
            missing.is_empty(),
            "the {} backend has no row in xtask/src/test.rs MATRIX running {missing:?}",
            kind.name()
        );
    }
}

/// The value of feature `name` in the `[features]` table of a Cargo.toml (`text`), if any.
fn feature_value<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let mut in_features = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
        } else if in_features {
            match line.split_once('=') {
                Some((key, value)) if key.trim() == name => return Some(value),
                _ => {}
            }
        }
    }
    None
}

/// Whether feature `name` of a Cargo.toml (`text`) turns on `wants` (`msite-backends/sqlite`).
fn feature_enables(text: &str, name: &str, wants: &str) -> bool {
    feature_value(text, name).is_some_and(|v| v.contains(&format!("\"{wants}\"")))
}

/// Each crate that selects backends, and whether it forwards every backend or only the
/// production ones (the simulator's `mem` is its own in-memory store; the bench measures
/// production engines).
const SELECTORS: &[(&str, bool)] = &[
    ("crates/cli/Cargo.toml", true),
    ("crates/sim/Cargo.toml", false),
    ("crates/bench/Cargo.toml", false),
];

#[test]
fn every_backend_is_a_feature_where_backends_are_chosen() {
    let root = project_root();
    let own = read(&root.join("crates/backends/Cargo.toml"));
    let mut missing = Vec::new();
    for kind in BackendKind::ALL {
        let name = kind.name();
        let own_ok = match kind.store_crate() {
            Some(store) => feature_enables(&own, name, &format!("dep:{store}")),
            None => feature_value(&own, name).is_some(),
        };
        if !own_ok {
            missing.push(format!("crates/backends/Cargo.toml: {name} = [...]"));
        }
        for (manifest, all) in SELECTORS {
            let text = read(&root.join(manifest));
            if (*all || kind.for_production())
                && !feature_enables(&text, name, &format!("msite-backends/{name}"))
            {
                missing.push(format!("{manifest}: {name} = [\"msite-backends/{name}\"]"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "backend features missing (a backend is built by the feature of its name):\n  {}",
        missing.join("\n  ")
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
        forbidden_in_tree(tree, &engines()),
        ["librocksdb-sys", "rusqlite"]
    );
    // A name that merely starts like an engine is not one.
    assert!(
        forbidden_in_tree("rocksdb-types v1.0.0\nrusqlite-migrate v1\n", &engines()).is_empty()
    );
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

#[test]
fn feature_check_reads_only_the_features_table() {
    let toml = "[package]\nsqlite = [\"msite-backends/sqlite\"]\n[features]\n\
                default = [\"sqlite\"]\nrocks = [\"dep:x\", \"msite-backends/rocks\"]\n\
                [dependencies]\nmem = [\"msite-backends/mem\"]\n";
    assert!(feature_enables(toml, "rocks", "msite-backends/rocks"));
    assert!(!feature_enables(toml, "sqlite", "msite-backends/sqlite"));
    assert!(!feature_enables(toml, "mem", "msite-backends/mem"));
    assert!(!feature_enables(toml, "rocks", "msite-backends/rock"));
    assert_eq!(feature_value(toml, "default"), Some(" [\"sqlite\"]"));
    assert_eq!(feature_value(toml, "mem"), None);
}

#[test]
fn matrix_check_wants_the_store_row_and_a_cli_row_per_production_backend() {
    let store: &[&str] = &["-p", "msite-store-sqlite"];
    let cli: &[&str] = &[
        "-p",
        "msite-cli",
        "--no-default-features",
        "--features",
        "sqlite",
    ];
    assert!(missing_matrix_rows(BackendKind::Sqlite, &[store, cli]).is_empty());
    assert_eq!(missing_matrix_rows(BackendKind::Sqlite, &[store]).len(), 1);
    assert_eq!(missing_matrix_rows(BackendKind::Sqlite, &[cli]).len(), 1);
    assert_eq!(
        missing_matrix_rows(BackendKind::Rocks, &[store, cli]).len(),
        2
    );
    assert!(missing_matrix_rows(BackendKind::Mem, &[]).is_empty());
}

#[test]
fn engine_and_backend_lists_come_from_backend_kind() {
    assert_eq!(
        engines(),
        [
            "rusqlite",
            "libsqlite3-sys",
            "rocksdb",
            "librocksdb-sys",
            "postgres",
            "tokio-postgres"
        ]
    );
    assert_eq!(
        backend_crates(),
        [
            "msite-store-sqlite",
            "msite-store-rocks",
            "msite-store-postgres"
        ]
    );
    assert_eq!(
        other_backends(BackendKind::Sqlite),
        [
            "msite-store-rocks",
            "rocksdb",
            "librocksdb-sys",
            "msite-store-postgres",
            "postgres",
            "tokio-postgres"
        ]
    );
}
