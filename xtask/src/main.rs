//! `cargo xtask`: msite's build tasks, in Rust instead of shell scripts.
//!
//! Run `cargo xtask --help`. One module per subcommand; to add one (say `sim`):
//! 1. write `src/sim.rs` with a clap `Args` struct and `pub fn run(args: &Args) -> Result<Report>`;
//! 2. add `mod sim;` and a `Sim(sim::Args)` variant to [`Cmd`], and one arm in [`dispatch`];
//! 3. if CI should run it, add one line to `ci::STEPS`.
//!
//! Tidy checks (architecture invariants, file headers, banned macros) are `#[test]`s in
//! `tidy.rs`, so plain `cargo test -p xtask` runs them.

// The one list of backends, shared with the programs (std-only, so no dependency on them).
#[path = "../../crates/backends/src/kind.rs"]
#[allow(dead_code)]
mod backend_kind;
mod bench;
mod ci;
mod exec;
mod fuzz;
mod model;
mod sim;
mod sysdeps;
mod test;
#[cfg(test)]
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// msite's build tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the test matrix: cargo test + clippy per crate and feature set, and rustfmt.
    #[command(alias = "test-matrix")]
    Test(test::Args),
    /// Everything CI runs: the full test matrix, then the further CI steps.
    Ci(ci::Args),
    /// Run the cargo-fuzz targets in `fuzz/` for a while.
    Fuzz(fuzz::Args),
    /// Run the deterministic protocol simulator (crates/sim).
    Sim(sim::Args),
    /// Exhaustively model-check the restore protocol (crates/model).
    Model(model::Args),
    /// Run the side-by-side benchmarks (release build; `--quick` for a smoke run).
    Bench(bench::Args),
}

/// What a task found: the test cases it counted and the parts of it that failed.
///
/// A task returns `Err` only when it could not run at all (cargo missing, bad arguments);
/// a failing test or lint is a `failures` entry, so `ci` can go on and report everything.
#[derive(Debug, Default)]
pub struct Report {
    /// Test cases counted from cargo test's `test result:` lines.
    pub tally: Tally,
    /// One entry per failed part (a matrix row, a fuzz target), for the summary.
    pub failures: Vec<String>,
}

/// Test cases passed and failed, summed over cargo test's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Test cases that passed.
    pub passed: u64,
    /// Test cases that failed.
    pub failed: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, rhs: Tally) {
        self.passed += rhs.passed;
        self.failed += rhs.failed;
    }
}

impl std::fmt::Display for Tally {
    /// The plain closing line CI reads: `N passed, M failed`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

fn dispatch(cmd: &Cmd) -> Result<Report> {
    match cmd {
        Cmd::Test(args) => test::run(args),
        Cmd::Ci(args) => ci::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::Sim(args) => sim::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Model(args) => model::run(args),
    }
}

/// The workspace root: xtask lives one level below it.
pub fn project_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match manifest_dir.parent() {
        Some(root) => root.to_path_buf(),
        // CARGO_MANIFEST_DIR is an absolute path to xtask/, so it always has a parent.
        None => manifest_dir,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(&cli.cmd) {
        Ok(report) if report.failures.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
