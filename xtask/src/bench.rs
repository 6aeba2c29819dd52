//! `cargo xtask bench [--quick] [--no-rocks]`: msite's side-by-side benchmarks (issue 8).
//!
//! Builds `msite-bench` in release mode and runs it: every workload on both engines plus the
//! git and raw-engine baselines, in one run. The Markdown table goes to stdout, the JSON to
//! `target/msite-bench/` (`$CARGO_TARGET_DIR/msite-bench/`). `--no-rocks` skips RocksDB (and
//! its C++ build); PostgreSQL runs too when its server programs are installed (the bench starts
//! a scratch server on the same machine), unless `--no-postgres`. See `BENCHMARKS.md` for what
//! each row measures.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::exec;
use crate::{project_root, Report};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sizes divided by ten: a smoke run (a few minutes).
    #[arg(long)]
    pub quick: bool,
    /// Leave out RocksDB (and its C++ build).
    #[arg(long)]
    pub no_rocks: bool,
    /// Leave out PostgreSQL (otherwise it runs when `initdb` is found).
    #[arg(long)]
    pub no_postgres: bool,
    /// Further arguments for msite-bench (`--only tree,inc`, `--runs N`, `--work-dir DIR`).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Builds and runs the benchmarks.
pub fn run(args: &Args) -> Result<Report> {
    let mut cmd = Command::new(exec::cargo());
    cmd.current_dir(project_root())
        .args(["run", "--release", "-p", "msite-bench"]);
    if !args.no_rocks {
        cmd.args(["--features", "rocks"]);
    }
    if !args.no_postgres {
        match crate::sysdeps::find_initdb() {
            Some(_) => {
                cmd.args(["--features", "postgres"]);
            }
            None => println!(
                "xtask bench: no PostgreSQL server programs (initdb) found: the postgres rows are left out"
            ),
        }
    }
    cmd.arg("--");
    if args.quick {
        cmd.arg("--quick");
    }
    if args.no_rocks {
        cmd.arg("--no-rocks");
    }
    cmd.args(&args.extra);
    let status = cmd.status().context("running cargo run -p msite-bench")?;
    if !status.success() {
        bail!("msite-bench failed ({status})");
    }
    Ok(Report::default())
}
