//! `cargo xtask fuzz --seconds N [--target NAME] [--sanitizer address|none]`: run the cargo-fuzz targets in `fuzz/`.
//!
//! `fuzz/` is its own workspace (see its `Cargo.toml`). Without `--target`, every target
//! that `cargo fuzz list` names runs for N seconds, one after another. libFuzzer needs
//! unstable rustc flags (`-Zsanitizer=address`, sancov passes); on the stable toolchain we
//! set `RUSTC_BOOTSTRAP=1` for the fuzz build only, which works with rustc 1.95 and
//! cargo-fuzz 0.13 on x86_64 Linux. Builds go to `fuzz/target` (or `CARGO_TARGET_DIR`,
//! under an explicit target triple, so they never clash with the normal debug builds).
//! Each target reads its corpus `fuzz/corpus/NAME` and, when it has one, its seed directory
//! (`SEEDS`): the golden packets for `decode_packet`, real packets for `import_packet`.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::exec::{self, human, Watch};
use crate::{project_root, Report};

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to fuzz each target, in seconds (libFuzzer's `-max_total_time`).
    #[arg(long, value_name = "N")]
    pub seconds: u64,
    /// Fuzz only this target (default: every target in `fuzz/`).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// The sanitizer the targets are built with (cargo-fuzz's `--sanitizer`): `address`
    /// catches memory errors in unsafe and C code at a fraction of the speed; `none` runs
    /// many more inputs for the same time, which suits the pure-Rust import path.
    #[arg(long, value_enum, default_value_t = Sanitizer::Address)]
    pub sanitizer: Sanitizer,
}

/// A sanitizer cargo-fuzz can build the targets with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sanitizer {
    /// AddressSanitizer (cargo-fuzz's default).
    Address,
    /// No sanitizer: Rust's own checks only.
    None,
}

impl Sanitizer {
    fn name(self) -> &'static str {
        match self {
            Sanitizer::Address => "address",
            Sanitizer::None => "none",
        }
    }
}

/// Seed inputs per target (relative to the project root), read besides the target's corpus
/// `fuzz/corpus/NAME`, where libFuzzer keeps what it finds.
const SEEDS: &[(&str, &str)] = &[
    ("decode_packet", "crates/packet/tests/fixtures/v1"),
    ("import_packet", "fuzz/seeds/import_packet"),
];

/// Lets the stable toolchain accept cargo-fuzz's `-Z` flags.
const FUZZ_ENV: &[(&str, &str)] = &[("RUSTC_BOOTSTRAP", "1")];

/// Runs the fuzz targets.
pub fn run(args: &Args) -> Result<Report> {
    let fuzz_dir = project_root().join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        bail!(
            "no fuzz workspace at {} (expected fuzz/Cargo.toml)",
            fuzz_dir.display()
        );
    }
    ensure_cargo_fuzz()?;
    let env: Vec<(String, String)> = FUZZ_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let fuzz_dir_arg = fuzz_dir.display().to_string();

    let targets = match &args.target {
        Some(t) => vec![t.clone()],
        None => {
            let mut names = Vec::new();
            let list = ["fuzz", "list", "--fuzz-dir", &fuzz_dir_arg].map(str::to_string);
            let finished = exec::run_cargo(&fuzz_dir, &list, &env, Watch::Stdout, |line| {
                if !line.trim().is_empty() {
                    names.push(line.trim().to_string());
                }
            })?;
            if !finished.success {
                bail!("`cargo fuzz list` failed");
            }
            if names.is_empty() {
                bail!(
                    "`cargo fuzz list` found no targets in {}",
                    fuzz_dir.display()
                );
            }
            names
        }
    };

    let mut report = Report::default();
    let mut lines = Vec::new();
    for target in &targets {
        let mut cmd: Vec<String> = [
            "fuzz",
            "run",
            "--sanitizer",
            args.sanitizer.name(),
            "--fuzz-dir",
            &fuzz_dir_arg,
            target,
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        cmd.extend(corpus_dirs(target)?);
        cmd.extend([
            "--".to_string(),
            format!("-max_total_time={}", args.seconds),
        ]);
        let mut done = None;
        let finished = exec::run_cargo(&fuzz_dir, &cmd, &env, Watch::Stderr, |line| {
            if let Some(d) = parse_done(line) {
                done = Some(d);
            }
        })?;
        let execs = match done {
            Some((runs, secs)) => format!("{runs} executions in {secs} s"),
            None => "executions unknown (no libFuzzer `Done` line)".to_string(),
        };
        let verdict = if finished.success { "ok" } else { "FAILED" };
        if !finished.success {
            report.failures.push(format!("fuzz target {target}"));
        }
        lines.push(format!(
            "  {verdict:<7} {target:<24} {execs}, sanitizer {} ({} incl. build)",
            args.sanitizer.name(),
            human(finished.duration)
        ));
    }
    println!("\n== fuzz summary");
    for line in &lines {
        println!("{line}");
    }
    Ok(report)
}

/// The corpus directories of `target`: its own (created when missing), then its seeds.
fn corpus_dirs(target: &str) -> Result<Vec<String>> {
    let root = project_root();
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let mut dirs = vec![corpus.display().to_string()];
    for (t, seeds) in SEEDS {
        let dir = root.join(seeds);
        if *t == target && dir.is_dir() {
            dirs.push(dir.display().to_string());
        }
    }
    Ok(dirs)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let status = Command::new(exec::cargo())
        .args(["fuzz", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("could not run cargo")?;
    if !status.success() {
        bail!("cargo-fuzz is not installed; install it with `cargo install cargo-fuzz`");
    }
    Ok(())
}

/// Parses libFuzzer's last line, `Done 1511078 runs in 6 second(s)`, into (runs, seconds).
fn parse_done(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("Done ")?;
    let (runs, rest) = rest.split_once(" runs in ")?;
    let (secs, _) = rest.split_once(' ')?;
    Some((runs.parse().ok()?, secs.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_done_line() {
        assert_eq!(
            parse_done("Done 1511078 runs in 6 second(s)"),
            Some((1_511_078, 6))
        );
        assert_eq!(parse_done("#1511078\tDONE   cov: 14 ft: 14"), None);
        assert_eq!(parse_done("Done"), None);
    }
}
