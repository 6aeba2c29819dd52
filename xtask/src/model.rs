//! `cargo xtask model [-- ARGS]`: the exhaustive model check of the restore protocol
//! (`crates/model`, issue #6). Runs `cargo run --release -p msite-model`, passing any
//! further arguments (bounds such as `--writes 2 --restores 2`) to the checker; a violated
//! property is a failure.

use anyhow::Result;

use crate::exec::{self, Watch};
use crate::{project_root, Report};

/// Options of `cargo xtask model`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments for the checker (see `cargo run -p msite-model -- --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

/// Runs the model check.
pub fn run(args: &Args) -> Result<Report> {
    let mut cargo_args: Vec<String> = ["run", "--release", "-p", "msite-model", "--"]
        .map(str::to_string)
        .to_vec();
    cargo_args.extend(args.args.iter().cloned());
    let finished = exec::run_cargo(&project_root(), &cargo_args, &[], Watch::Stdout, |_| {})?;
    let mut report = Report::default();
    if !finished.success {
        report
            .failures
            .push("model check (msite-model)".to_string());
    }
    Ok(report)
}
