//! `msite-sim`: runs simulator schedules and prints one summary line.
//!
//! `msite-sim --schedules N --seed S [--profile P] [--backend mem|sqlite|rocks|postgres] [--verbose]`
//! runs the schedules of seeds S, S+1, …, S+N-1 (`--backend sqlite` and `rocks` need the
//! cargo features of the same names). On a violation it prints the seed, the violations, a command that replays exactly
//! that schedule and a shrunk one, and exits non-zero. `--steps` and `--replicas` override
//! what the seed draws (the shrinker uses them).

use std::process::ExitCode;

use clap::Parser;
use msite_sim::{run_schedule, shrink, Backend, Config, Outcome, Profile, Stats};

/// Deterministic simulator of msite's replication protocol.
#[derive(Debug, Parser)]
#[command(name = "msite-sim", version, about)]
struct Args {
    /// How many schedules to run.
    #[arg(long, default_value_t = 3000)]
    schedules: u64,
    /// The first schedule's seed (the others follow it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the event trace of every schedule.
    #[arg(long)]
    verbose: bool,
    /// Override the number of random steps of each schedule.
    #[arg(long)]
    steps: Option<usize>,
    /// Override the maximum number of replicas of each schedule.
    #[arg(long)]
    replicas: Option<usize>,
    /// Narrow the schedules: all (the default: retirement included, half the new replicas
    /// made from snapshots), sync (no restores), default-restores, crashy, snapshots (all
    /// without retirement), rekey (key rotations), retire (the same schedules as all). Rekey
    /// is not in the default run.
    #[arg(long, default_value = "all")]
    profile: Profile,
    /// The store engine: mem (in memory), sqlite or rocks (real stores in temporary
    /// directories; need the cargo features `sqlite` / `rocks`).
    #[arg(long, default_value = "mem")]
    backend: Backend,
    /// Do not shrink failing schedules.
    #[arg(long)]
    no_shrink: bool,
    /// Stop after this many failing schedules.
    #[arg(long, default_value_t = 5)]
    max_failures: u64,
}

/// For `--backend postgres` without `MSITE_PG_SERVER`: a scratch server for this run (Unix
/// socket only, no fsyncs: the simulator's crashes are its own; stopped when the run ends),
/// named in `MSITE_PG_SERVER` for the stores.
#[cfg(feature = "postgres")]
fn scratch_postgres(backend: Backend) -> std::io::Result<Option<msite_backends::ScratchServer>> {
    if backend != Backend::Postgres || std::env::var_os("MSITE_PG_SERVER").is_some() {
        return Ok(None);
    }
    let server = msite_backends::ScratchServer::start(msite_backends::ScratchOptions {
        no_fsync: true,
        ..Default::default()
    })?;
    // Set before any thread starts: the stores read it when they are made.
    std::env::set_var("MSITE_PG_SERVER", server.server_conninfo());
    Ok(Some(server))
}

/// Runs the schedules, prints each failing one ([`report_failure`]) and the summary line;
/// exits non-zero on any violation (2 when the backend is not built in).
fn main() -> ExitCode {
    let args = Args::parse();
    if !args.backend.is_built() {
        eprintln!(
            "msite-sim: this build has no {b} backend; build with `--features {b}` (cargo xtask sim --backend {b} does)",
            b = args.backend
        );
        return ExitCode::from(2);
    }
    #[cfg(feature = "postgres")]
    let _server = match scratch_postgres(args.backend) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("msite-sim: cannot start a scratch PostgreSQL server: {e}");
            return ExitCode::from(1);
        }
    };
    let mut total = Stats::default();
    let mut failures = 0u64;
    let mut known: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let mut unknown = 0u64;
    for k in 0..args.schedules {
        let seed = args.seed.wrapping_add(k);
        let cfg = Config {
            seed,
            steps: args.steps,
            replicas: args.replicas,
            verbose: args.verbose,
            profile: args.profile,
            backend: args.backend,
        };
        let out = run_schedule(&cfg);
        total.add(&out.stats);
        if args.verbose {
            println!(
                "==== schedule seed={seed} ({} steps, up to {} replicas)",
                out.steps, out.replicas
            );
            for line in &out.trace {
                println!("{line}");
            }
        }
        if !out.violations.is_empty() {
            failures += 1;
            if out.known.is_empty() {
                unknown += 1;
            }
            for k in &out.known {
                *known.entry(k).or_default() += 1;
            }
            report_failure(&args, seed, &out);
            if failures >= args.max_failures {
                println!("stopping after {failures} failing schedules");
                break;
            }
        }
    }
    print_summary(&args, &total, failures, unknown, &known);
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints a failing schedule: its seed (and the known bugs it matches), its violations, a
/// command that replays it and, unless `--no-shrink`, one that replays a shrunk schedule.
fn report_failure(args: &Args, seed: u64, out: &Outcome) {
    if out.known.is_empty() {
        println!("VIOLATION seed={seed}");
    } else {
        println!("VIOLATION seed={seed} (known bug {})", out.known.join(", "));
    }
    for v in &out.violations {
        println!("  {v}");
    }
    let mut prof = if args.profile == Profile::All {
        String::new()
    } else {
        format!(" --profile {}", args.profile)
    };
    // `cargo run` needs the backend's feature; `cargo xtask sim` adds it itself.
    let features = if args.backend == Backend::Mem {
        String::new()
    } else {
        prof.push_str(&format!(" --backend {}", args.backend));
        format!(" --features {}", args.backend)
    };
    if prof.is_empty() {
        println!("  replay: cargo xtask sim --seed {seed} --schedules 1 --verbose");
    } else {
        println!(
            "  replay: cargo run --release -p msite-sim{features} -- --seed {seed} --schedules 1{prof} --verbose"
        );
    }
    if !args.no_shrink {
        let (s, r) = shrink(seed, out.steps, out.replicas, args.profile, args.backend);
        println!(
            "  shrunk: cargo run --release -p msite-sim{features} -- --seed {seed} --schedules 1 --steps {s} --replicas {r}{prof} --verbose"
        );
    }
}

/// Prints the summary line. The in-memory summary stays as it always was; a real backend
/// is named at the end.
fn print_summary(
    args: &Args,
    total: &Stats,
    failures: u64,
    unknown: u64,
    known: &std::collections::BTreeMap<&str, u64>,
) {
    let known: Vec<String> = known.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    let backend = if args.backend == Backend::Mem {
        String::new()
    } else {
        format!(" backend={}", args.backend)
    };
    println!(
        "schedules={} violations={failures} unexplained={unknown} known=[{}] {total}{backend}",
        total.schedules,
        known.join(",")
    );
}
