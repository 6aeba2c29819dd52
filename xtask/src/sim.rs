//! `cargo xtask sim [--schedules N] [--seed S] [--profile P] [--backend B] [--verbose]`: run the
//! deterministic simulator.
//!
//! Builds and runs `msite-sim` in release mode (`cargo run --release -p msite-sim -- …`; with
//! `--backend sqlite` or `rocks`, also `--features sqlite` / `--features rocks`). The
//! simulator prints one summary line (`schedules=N violations=V …`) and, for each failing
//! schedule, its seed, the violations and a command that replays it; it exits non-zero on any
//! violation, which makes this task fail. The summary counts each schedule as a test case.

use anyhow::Result;

use crate::backend_kind::BackendKind;
use crate::exec::{self, Watch};
use crate::{project_root, Report, Tally};

/// Options of `cargo xtask sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many schedules to run (seeds S, S+1, …).
    #[arg(long, value_name = "N", default_value_t = 3000)]
    pub schedules: u64,
    /// The first schedule's seed.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Print each schedule's event trace.
    #[arg(long)]
    pub verbose: bool,
    /// Override the number of random steps of each schedule (for replaying a shrunk one).
    #[arg(long, value_name = "K")]
    pub steps: Option<u64>,
    /// Override the maximum number of replicas of each schedule (for replaying a shrunk one).
    #[arg(long, value_name = "R")]
    pub replicas: Option<u64>,
    /// Narrow the schedules: all, sync (no restores), default-restores, crashy, snapshots,
    /// rekey (key rotations), retire (replicas retired); the last three are not in the
    /// default run.
    #[arg(long, value_name = "P")]
    pub profile: Option<String>,
    /// The replicas' store engine: mem (in memory), sqlite or rocks (real stores in temporary
    /// directories; rocks builds RocksDB).
    #[arg(long, value_name = "B", default_value = "mem")]
    pub backend: String,
}

/// Runs the simulator.
pub fn run(args: &Args) -> Result<Report> {
    let mut cargo_args: Vec<String> = ["run", "--release", "-p", "msite-sim"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cargo_args.extend(backend_features(&args.backend)?);
    cargo_args.push("--".into());
    cargo_args.extend(["--schedules".into(), args.schedules.to_string()]);
    cargo_args.extend(["--seed".into(), args.seed.to_string()]);
    if let Some(k) = args.steps {
        cargo_args.extend(["--steps".into(), k.to_string()]);
    }
    if let Some(r) = args.replicas {
        cargo_args.extend(["--replicas".into(), r.to_string()]);
    }
    if let Some(p) = &args.profile {
        cargo_args.extend(["--profile".into(), p.clone()]);
    }
    if args.backend != "mem" {
        cargo_args.extend(["--backend".into(), args.backend.clone()]);
    }
    if args.verbose {
        cargo_args.push("--verbose".into());
    }
    let mut tally = Tally::default();
    let finished = exec::run_cargo(&project_root(), &cargo_args, &[], Watch::Stdout, |line| {
        if let Some(t) = parse_summary(line) {
            tally = t;
        }
    })?;
    let mut report = Report {
        tally,
        failures: Vec::new(),
    };
    if !finished.success {
        report.failures.push(format!(
            "sim: {} schedule(s) violated the protocol's invariants (seeds and replay commands above)",
            tally.failed
        ));
    }
    Ok(report)
}

/// The cargo arguments that build the simulator with `backend`.
/// The simulator's `mem` is its own in-memory store and needs no feature; every other backend
/// is built by the feature of its name.
fn backend_features(backend: &str) -> Result<Vec<String>> {
    match BackendKind::parse(backend) {
        Some(BackendKind::Mem) => Ok(Vec::new()),
        Some(kind) => Ok(vec!["--features".into(), kind.name().into()]),
        None => {
            let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
            anyhow::bail!("unknown backend `{backend}` ({})", names.join(", "))
        }
    }
}

/// Reads `schedules=N violations=V …` into a tally (passed = N - V).
fn parse_summary(line: &str) -> Option<Tally> {
    let mut n = None;
    let mut v = None;
    for word in line.split_whitespace() {
        if let Some(x) = word.strip_prefix("schedules=") {
            n = x.parse::<u64>().ok();
        } else if let Some(x) = word.strip_prefix("violations=") {
            v = x.parse::<u64>().ok();
        }
    }
    let (n, v) = (n?, v?);
    Some(Tally {
        passed: n.saturating_sub(v),
        failed: v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_becomes_a_tally() {
        let t = parse_summary("schedules=3000 violations=2 restores=10 lost=4").unwrap();
        assert_eq!(
            t,
            Tally {
                passed: 2998,
                failed: 2
            }
        );
        assert!(parse_summary("VIOLATION seed=4").is_none());
    }

    #[test]
    fn real_backends_build_with_their_feature() {
        assert!(backend_features("mem").unwrap().is_empty());
        assert_eq!(
            backend_features("sqlite").unwrap(),
            ["--features", "sqlite"]
        );
        assert_eq!(backend_features("rocks").unwrap(), ["--features", "rocks"]);
        assert!(backend_features("lmdb").is_err());
    }
}
