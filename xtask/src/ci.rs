//! `cargo xtask ci`: everything CI runs, as a list of xtask command lines.
//!
//! Each step is parsed exactly as if typed after `cargo xtask`, and run in this process.
//! Every step runs even if an earlier one failed, so one CI run shows every failure; `ci`
//! exits non-zero if any step failed. The last line is the summed `N passed, M failed`.

use std::time::Instant;

use anyhow::Result;
use clap::Parser;

use crate::exec::{self, human, utc_clock};
use crate::{dispatch, Cli, Report};

/// CI's steps, in order. To add a step, add one line, e.g. `&["sim", "--schedules", "3000"],`.
pub const STEPS: &[&[&str]] = &[
    // The test matrix: every crate and feature set on both storage engines, clippy, rustfmt
    // (and tidy, via xtask's tests).
    &["test"],
    // The deterministic simulator: 3000 schedules of the default profile (exchange, loss,
    // duplication, reordering, corruption, crashes, replica creation, backups, restores in
    // every mode, snapshot rollbacks; docs/testing.md).
    &["sim", "--schedules", "3000"],
];

/// Options of `cargo xtask ci` (none yet).
#[derive(Debug, Default, clap::Args)]
pub struct Args {}

fn parse_step(step: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("cargo xtask").chain(step.iter().copied()))
}

/// Runs every step of [`STEPS`].
pub fn run(_args: &Args) -> Result<Report> {
    if std::env::var_os("MSITE_SKIP_ROCKS").is_some() {
        println!("xtask ci: warning: MSITE_SKIP_ROCKS is set; this is not the run CI does");
    }
    let mut total = Report::default();
    let mut lines = Vec::new();
    for step in STEPS {
        let shown = step.join(" ");
        println!(
            "\n==== ci step `cargo xtask {shown}` (started {})",
            utc_clock()
        );
        exec::flush();
        let start = Instant::now();
        let verdict = match parse_step(step)
            .map_err(anyhow::Error::from)
            .and_then(|cli| dispatch(&cli.cmd))
        {
            Ok(report) => {
                total.tally += report.tally;
                let ok = report.failures.is_empty();
                total.failures.extend(report.failures);
                if ok { "ok" } else { "FAILED" }.to_string()
            }
            Err(err) => {
                total.failures.push(format!("ci step `{shown}`"));
                format!("ERROR: {err:#}")
            }
        };
        lines.push(format!(
            "  {shown:<30} {:>8}  {verdict}",
            human(start.elapsed())
        ));
    }
    println!("\n==== ci summary");
    for line in &lines {
        println!("{line}");
    }
    for failure in &total.failures {
        println!("  failed: {failure}");
    }
    println!("{}", total.tally);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cmd;

    #[test]
    fn every_step_parses_and_none_recurses_into_ci() {
        for step in STEPS {
            let cli =
                parse_step(step).unwrap_or_else(|e| panic!("ci step {step:?} does not parse: {e}"));
            assert!(
                !matches!(cli.cmd, Cmd::Ci(_)),
                "ci step {step:?} would recurse"
            );
        }
    }
}
