//! `cargo xtask test`: the test matrix, as a table of rows.
//!
//! Each [`Row`] is `{ tag, cargo args, env }`. A `Kind::TestClippy` row runs
//! `cargo test ARGS` and `cargo clippy ARGS --all-targets -- -D warnings`; a `Kind::Fmt` row
//! runs `cargo fmt ARGS`. Rows run one after another on one target dir (cargo's default, or
//! `CARGO_TARGET_DIR`), so a dependency built for one row is reused by the next whenever its
//! features agree. Rows marked `rocks` build the RocksDB C++ library (10-15 minutes from
//! cold on two cores); `--no-rocks` or `MSITE_SKIP_ROCKS=1` skips them for a fast inner loop.
//! Before the first of them, [`sysdeps::ensure_libclang`] installs libclang (as root) or stops
//! with the package to install; before the rows whose tests start PostgreSQL servers,
//! [`sysdeps::ensure_postgres`] does the same for the server programs, and before the rows
//! that load the status page in a browser ([`Row::needs_chromium`]),
//! [`sysdeps::ensure_chromium`] for Chromium.
//!
//! The run ends with a summary (each row's result and durations) and, as its very last line,
//! `N passed, M failed`, summed from cargo test's `test result:` lines, plus one failure for
//! each step that failed without a failing test (a build, lint or format error).

use std::time::Duration;

use anyhow::{bail, Result};

use crate::exec::{self, human, Watch};
use crate::{project_root, sysdeps, Report, Tally};

/// Options of `cargo xtask test`.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Print the rows (tag and commands) and exit.
    #[arg(long)]
    pub list: bool,
    /// Run only rows whose tag starts with PREFIX (repeatable).
    #[arg(long, value_name = "PREFIX")]
    pub filter: Vec<String>,
    /// Skip every row that builds RocksDB (also: MSITE_SKIP_ROCKS=1).
    #[arg(long)]
    pub no_rocks: bool,
}

/// What a row runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `cargo test ARGS`, then `cargo clippy ARGS --all-targets -- -D warnings`.
    TestClippy,
    /// `cargo fmt ARGS`.
    Fmt,
}

/// One row of the matrix.
#[derive(Debug)]
pub struct Row {
    /// Short name, used by `--filter` and in the summary.
    pub tag: &'static str,
    /// What the row runs.
    pub kind: Kind,
    /// Package and feature selection (or rustfmt's arguments).
    pub args: &'static [&'static str],
    /// Extra environment for the row's commands.
    pub env: &'static [(&'static str, &'static str)],
    /// Whether the row compiles RocksDB (skipped by `--no-rocks`).
    pub rocks: bool,
}

use Kind::{Fmt, TestClippy};

/// The matrix. Cheap rows first, so a typo fails in seconds; RocksDB rows last.
#[rustfmt::skip]
pub const MATRIX: &[Row] = &[
    Row { tag: "fmt",          kind: Fmt,        args: &["--all", "--check"], env: &[], rocks: false },
    Row { tag: "core",         kind: TestClippy, args: &["-p", "msite-core", "--no-default-features"], env: &[], rocks: false },
    Row { tag: "core-testkit", kind: TestClippy, args: &["-p", "msite-core", "--no-default-features", "--features", "testkit"], env: &[], rocks: false },
    Row { tag: "packet",       kind: TestClippy, args: &["-p", "msite-packet"], env: &[], rocks: false },
    Row { tag: "store-sqlite", kind: TestClippy, args: &["-p", "msite-store-sqlite"], env: &[], rocks: false },
    Row { tag: "store-postgres", kind: TestClippy, args: &["-p", "msite-store-postgres"], env: &[], rocks: false },
    Row { tag: "backends",     kind: TestClippy, args: &["-p", "msite-backends", "--features", "sqlite,postgres,mem"], env: &[], rocks: false },
    Row { tag: "cli-sqlite",   kind: TestClippy, args: &["-p", "msite-cli", "--no-default-features", "--features", "sqlite", "--features", "serve", "--features", "s3"], env: &[], rocks: false },
    Row { tag: "cli-postgres", kind: TestClippy, args: &["-p", "msite-cli", "--no-default-features", "--features", "postgres,serve"], env: &[], rocks: false },
    Row { tag: "sim",          kind: TestClippy, args: &["-p", "msite-sim"], env: &[], rocks: false },
    Row { tag: "model",        kind: TestClippy, args: &["-p", "msite-model"], env: &[], rocks: false },
    Row { tag: "bench",        kind: TestClippy, args: &["-p", "msite-bench"], env: &[], rocks: false },
    Row { tag: "xtask",        kind: TestClippy, args: &["-p", "xtask"], env: &[], rocks: false },
    Row { tag: "fuzz-harness", kind: TestClippy, args: &["--manifest-path", "fuzz/Cargo.toml"], env: &[], rocks: false },
    Row { tag: "store-rocks",  kind: TestClippy, args: &["-p", "msite-store-rocks"], env: &[], rocks: true },
    Row { tag: "cli-rocks",    kind: TestClippy, args: &["-p", "msite-cli", "--no-default-features", "--features", "rocks"], env: &[], rocks: true },
    // Every crate whose tests change with features, with every feature on together. The
    // crates left out have their whole feature set in a row above (a test checks it):
    // running their tests again here repeated the PostgreSQL store's 10-minute suite.
    Row { tag: "all-features", kind: TestClippy, args: &["--workspace", "--all-features",
        "--exclude", "msite-core", "--exclude", "msite-packet", "--exclude", "msite-store-sqlite",
        "--exclude", "msite-store-postgres", "--exclude", "msite-store-rocks",
        "--exclude", "msite-model", "--exclude", "xtask"], env: &[], rocks: true },
];

/// One cargo invocation of a row.
struct Step {
    /// `test`, `clippy` or `fmt`.
    name: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Row {
    /// Whether the row's tests start PostgreSQL servers (the store crate, a `postgres`
    /// feature, or every feature).
    pub fn needs_postgres(&self) -> bool {
        self.args.iter().any(|a| {
            *a == "msite-store-postgres"
                || *a == "--all-features"
                || a.split(',').any(|f| f == "postgres")
        })
    }

    /// Whether the row's tests start moto_server (the S3 route: the `s3` feature, or every
    /// feature).
    pub fn needs_moto(&self) -> bool {
        self.args
            .iter()
            .any(|a| *a == "--all-features" || a.split(',').any(|f| f == "s3"))
    }

    /// Whether the row's tests load `msite serve`'s status page in headless Chromium: the
    /// `msite-cli` rows with the `serve` feature (by default, named, through `s3`, or every
    /// feature).
    pub fn needs_chromium(&self) -> bool {
        let cli = self.args.contains(&"msite-cli");
        let all = self.args.contains(&"--all-features");
        let defaults = !self.args.contains(&"--no-default-features");
        // `s3` turns `serve` on.
        let named = self
            .args
            .iter()
            .any(|a| a.split(',').any(|f| f == "serve" || f == "s3"));
        (cli || all) && (all || defaults || named)
    }

    fn steps(&self) -> Vec<Step> {
        let env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let with = |head: &str, tail: &[&str]| -> Vec<String> {
            std::iter::once(head)
                .chain(self.args.iter().copied())
                .chain(tail.iter().copied())
                .map(str::to_string)
                .collect()
        };
        match self.kind {
            TestClippy => vec![
                Step {
                    name: "test",
                    args: with("test", &[]),
                    env: env.clone(),
                },
                Step {
                    name: "clippy",
                    args: with("clippy", &["--all-targets", "--", "-D", "warnings"]),
                    env,
                },
            ],
            Fmt => vec![Step {
                name: "fmt",
                args: with("fmt", &[]),
                env,
            }],
        }
    }

    fn selected(&self, filters: &[String]) -> bool {
        filters.is_empty() || filters.iter().any(|f| self.tag.starts_with(f.as_str()))
    }
}

/// Whether `MSITE_SKIP_ROCKS` asks to skip the RocksDB rows.
fn skip_rocks_env() -> bool {
    std::env::var("MSITE_SKIP_ROCKS")
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
        .unwrap_or(false)
}

/// The result of one row, for the summary.
enum Outcome {
    Skipped(&'static str),
    Ran {
        ok: bool,
        steps: Vec<(&'static str, bool, Duration)>,
        tally: Tally,
    },
}

/// Runs (or lists) the matrix.
pub fn run(args: &Args) -> Result<Report> {
    check_filters(&args.filter)?;
    let no_rocks = args.no_rocks || skip_rocks_env();
    let rows: Vec<&Row> = MATRIX.iter().filter(|r| r.selected(&args.filter)).collect();
    if args.list {
        list_rows(&rows);
        return Ok(Report::default());
    }

    let root = project_root();
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| root.join("target").display().to_string());
    println!(
        "== test matrix: {} row(s), target dir {target_dir}",
        rows.len()
    );
    ensure_system_packages(&rows, no_rocks)?;

    let mut outcomes = Vec::new();
    for row in &rows {
        let outcome = if row.rocks && no_rocks {
            Outcome::Skipped("builds RocksDB; --no-rocks")
        } else {
            run_row(&root, row)?
        };
        outcomes.push((row.tag, outcome));
    }
    Ok(summarize(&outcomes))
}

/// Every `--filter` must select at least one row: a typo must not pass as an empty run.
fn check_filters(filters: &[String]) -> Result<()> {
    if let Some(bad) = filters
        .iter()
        .find(|f| !MATRIX.iter().any(|r| r.tag.starts_with(f.as_str())))
    {
        let tags: Vec<&str> = MATRIX.iter().map(|r| r.tag).collect();
        bail!(
            "--filter {bad:?} matches no row; rows are: {}",
            tags.join(", ")
        );
    }
    Ok(())
}

/// `--list`: each row's tag and the exact commands it runs.
fn list_rows(rows: &[&Row]) {
    for row in rows {
        let note = if row.rocks { "  (builds RocksDB)" } else { "" };
        println!("{}{note}", row.tag);
        for step in row.steps() {
            println!("    {}", exec::display_command(&step.args, &step.env));
        }
    }
}

/// Installs (or names) what the selected rows need from the system before any build starts.
fn ensure_system_packages(rows: &[&Row], no_rocks: bool) -> Result<()> {
    if rows.iter().any(|r| r.rocks) && !no_rocks {
        sysdeps::ensure_libclang()?;
    }
    if rows
        .iter()
        .any(|r| r.needs_postgres() && !(r.rocks && no_rocks))
    {
        sysdeps::ensure_postgres()?;
    }
    if rows
        .iter()
        .any(|r| r.needs_moto() && !(r.rocks && no_rocks))
    {
        sysdeps::ensure_moto()?;
    }
    if rows
        .iter()
        .any(|r| r.needs_chromium() && !(r.rocks && no_rocks))
    {
        sysdeps::ensure_chromium()?;
    }
    Ok(())
}

/// Runs every step of one row, summing the test counts its output reports.
fn run_row(root: &std::path::Path, row: &Row) -> Result<Outcome> {
    println!("\n== row {} ({})", row.tag, exec::utc_clock());
    exec::flush();
    let mut tally = Tally::default();
    let mut steps = Vec::new();
    for step in row.steps() {
        let failed_before = tally.failed;
        let finished = exec::run_cargo(root, &step.args, &step.env, Watch::Stdout, |line| {
            if let Some(t) = parse_test_result(line) {
                tally += t;
            }
        })?;
        tally.failed += uncounted_failure(finished.success, tally.failed - failed_before);
        steps.push((step.name, finished.success, finished.duration));
    }
    let ok = steps.iter().all(|(_, ok, _)| *ok);
    Ok(Outcome::Ran { ok, steps, tally })
}

/// Prints one line per row and the closing `N passed, M failed` line.
fn summarize(outcomes: &[(&'static str, Outcome)]) -> Report {
    let mut report = Report::default();
    let (mut n_ok, mut n_skipped) = (0, 0);
    println!("\n== test matrix summary");
    for (tag, outcome) in outcomes {
        match outcome {
            Outcome::Skipped(why) => {
                n_skipped += 1;
                println!("  skipped  {tag:<14} ({why})");
            }
            Outcome::Ran { ok, steps, tally } => {
                println!("  {}", row_line(tag, *ok, steps, tally));
                report.tally += *tally;
                if *ok {
                    n_ok += 1;
                } else {
                    report.failures.push(format!("test row {tag}"));
                }
            }
        }
    }
    println!(
        "rows: {n_ok} ok, {} failed, {n_skipped} skipped",
        report.failures.len()
    );
    println!("{}", report.tally);
    report
}

/// One row's summary: verdict, tag, each step's time, and the row's test counts.
fn row_line(tag: &str, ok: bool, steps: &[(&str, bool, Duration)], tally: &Tally) -> String {
    let times: Vec<String> = steps
        .iter()
        .map(|(name, ok, d)| format!("{name} {}{}", human(*d), if *ok { "" } else { " FAILED" }))
        .collect();
    let verdict = if ok { "ok" } else { "FAILED" };
    let tests = match row_kind(tag) {
        Some(Fmt) => String::new(),
        _ => format!("tests: {tally}"),
    };
    format!("{verdict:<8} {tag:<14} {:<40} {tests}", times.join(", "))
}

/// A step that failed without a failing test (it did not build, lint or format) counts as
/// one failure, so the closing `N passed, M failed` line never says 0 failed for a red run.
fn uncounted_failure(success: bool, tests_failed: u64) -> u64 {
    u64::from(!success && tests_failed == 0)
}

fn row_kind(tag: &str) -> Option<Kind> {
    MATRIX.iter().find(|r| r.tag == tag).map(|r| r.kind)
}

/// Parses libtest's closing line, `test result: ok. 3 passed; 0 failed; 1 ignored; …`.
pub fn parse_test_result(line: &str) -> Option<Tally> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_status, counts) = rest.split_once(". ")?;
    let mut tally = Tally::default();
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => tally.passed = n,
            "failed" => tally.failed = n,
            _ => {}
        }
    }
    Some(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_closing_lines() {
        let ok = "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(
            parse_test_result(ok),
            Some(Tally {
                passed: 12,
                failed: 0
            })
        );
        let bad = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s";
        assert_eq!(
            parse_test_result(bad),
            Some(Tally {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(parse_test_result("test foo ... ok"), None);
        assert_eq!(parse_test_result("running 3 tests"), None);
    }

    #[test]
    fn a_step_that_fails_without_a_failing_test_counts_once() {
        assert_eq!(uncounted_failure(false, 0), 1, "a build or lint error");
        assert_eq!(uncounted_failure(false, 3), 0, "already counted by libtest");
        assert_eq!(uncounted_failure(true, 0), 0);
    }

    #[test]
    fn the_rows_that_run_the_status_page_tests_require_chromium() {
        let needing: Vec<&str> = MATRIX
            .iter()
            .filter(|r| r.needs_chromium())
            .map(|r| r.tag)
            .collect();
        assert_eq!(needing, ["cli-sqlite", "cli-postgres", "all-features"]);
    }

    /// The packages the `all-features` row leaves out, with their directories: each has no
    /// features, or (msite-core) only ones a row above turns on all together.
    const ALL_FEATURES_OMITS: &[(&str, &str)] = &[
        ("msite-core", "crates/core"),
        ("msite-packet", "crates/packet"),
        ("msite-store-sqlite", "crates/store-sqlite"),
        ("msite-store-postgres", "crates/store-postgres"),
        ("msite-store-rocks", "crates/store-rocks"),
        ("msite-model", "crates/model"),
        ("xtask", "xtask"),
    ];

    /// The feature names a manifest declares, `default` left out (its `[features]` table).
    fn declared_features(manifest: &str) -> Vec<String> {
        let mut in_table = false;
        let mut out = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_table = line == "[features]";
            } else if let Some((name, _)) = line.split_once('=').filter(|_| in_table) {
                let name = name.trim();
                if !name.starts_with('#') && name != "default" {
                    out.push(name.to_string());
                }
            }
        }
        out
    }

    #[test]
    fn the_all_features_row_omits_only_packages_tested_with_all_their_features_elsewhere() {
        let all = MATRIX.iter().find(|r| r.tag == "all-features").unwrap();
        let omitted: Vec<&str> = all
            .args
            .windows(2)
            .filter(|w| w[0] == "--exclude")
            .map(|w| w[1])
            .collect();
        let listed: Vec<&str> = ALL_FEATURES_OMITS.iter().map(|(p, _)| *p).collect();
        assert_eq!(omitted, listed);
        for (package, dir) in ALL_FEATURES_OMITS {
            let path = project_root().join(dir).join("Cargo.toml");
            let manifest = std::fs::read_to_string(&path).unwrap();
            assert!(
                manifest.contains(&format!("name = \"{package}\"")),
                "{path:?}"
            );
            let features = declared_features(&manifest);
            let covered = MATRIX.iter().any(|r| {
                r.tag != "all-features"
                    && r.args.contains(package)
                    && features
                        .iter()
                        .all(|f| r.args.iter().any(|a| a.split(',').any(|g| g == f)))
            });
            assert!(
                covered,
                "{package} (features {features:?}) has no row with all of them on"
            );
        }
    }

    #[test]
    fn declared_features_reads_the_features_table_only() {
        let manifest = "[package]\nname = \"x\"\n[features]\ndefault = [\"a\"]\n# note\na = []\nb = [\"dep:c\"]\n[dependencies]\nc = \"1\"\n";
        assert_eq!(declared_features(manifest), ["a", "b"]);
    }

    #[test]
    fn tags_are_unique() {
        let mut tags: Vec<&str> = MATRIX.iter().map(|r| r.tag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), MATRIX.len(), "duplicate tags in MATRIX");
    }

    #[test]
    fn rows_naming_rocks_are_marked_rocks() {
        for row in MATRIX {
            let names_rocks = row.args.iter().any(|a| a.contains("rocks"))
                || row.args.contains(&"--all-features");
            assert_eq!(
                row.rocks, names_rocks,
                "row {} has the wrong `rocks` flag",
                row.tag
            );
        }
    }

    #[test]
    fn filter_is_a_tag_prefix() {
        let picked: Vec<&str> = MATRIX
            .iter()
            .filter(|r| r.selected(&["core".to_string(), "cli-s".to_string()]))
            .map(|r| r.tag)
            .collect();
        assert_eq!(picked, ["core", "core-testkit", "cli-sqlite"]);
    }
}
