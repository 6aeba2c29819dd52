//! `msite-model`: runs the exhaustive (BFS) model check of the restore protocol and prints the
//! number of states explored, each property's verdict and any counterexample path.
//!
//! Usage: `msite-model [--writes N] [--backups N] [--restores N] [--rollbacks N] [--packets N]
//! [--in-flight N] [--scrubs N] [--ticks N] [--actors A,B,C] [--threads N] [--depth N]
//! [--mutation NAME]`. `--scrubs` bounds `msite scrub` runs and `--ticks` the restore windows
//! that pass (retention, `msite_model::retain`). Without bounds it checks a
//! built-in suite of configurations ([`msite_model::suite`]). Exits 1 when a safety or completion property
//! is violated (reachability properties are informative), 2 on bad arguments. `--mutation`
//! checks a deliberately broken protocol (see [`msite_model::Mutation`]), with the suite or
//! the bounds given.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use msite_model::{describe, suite, Bounds, Mutation, ProtocolModel};
use stateright::{Checker, Model};

struct Opts {
    bounds: Bounds,
    threads: usize,
    depth: Option<usize>,
    mutation: Option<Mutation>,
    /// Whether any bound was given (otherwise the built-in suite runs).
    custom: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut b = Bounds::default();
    let mut depth = None;
    let mut mutation = None;
    let mut custom = false;
    let mut threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        let num = |v: &String| v.parse::<u8>().map_err(|e| format!("{a} {v}: {e}"));
        custom |= !matches!(a.as_str(), "--threads" | "--depth" | "--mutation");
        match a.as_str() {
            "--writes" => b.writes = num(val()?)?,
            "--backups" => b.backups = num(val()?)?,
            "--restores" => b.restores = num(val()?)?,
            "--rollbacks" => b.rollbacks = num(val()?)?,
            "--packets" => b.packets = num(val()?)?,
            "--in-flight" => b.in_flight = num(val()?)? as usize,
            "--scrubs" => b.scrubs = num(val()?)?,
            "--ticks" => b.ticks = num(val()?)?,
            "--threads" => threads = num(val()?)?.max(1) as usize,
            "--depth" => {
                depth = Some(
                    val()?
                        .parse::<usize>()
                        .map_err(|e| format!("--depth: {e}"))?,
                )
            }
            "--actors" => {
                b.actors = val()?
                    .split(',')
                    .map(|s| match s {
                        "A" => Ok(0),
                        "B" => Ok(1),
                        "C" => Ok(2),
                        _ => Err(format!("unknown replica {s} (A, B or C)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--mutation" => {
                let v = val()?;
                mutation = Some(
                    Mutation::ALL
                        .iter()
                        .find(|m| m.name() == v)
                        .copied()
                        .ok_or_else(|| {
                            let names: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
                            format!("unknown mutation {v} ({})", names.join(", "))
                        })?,
                )
            }
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Opts {
        bounds: b,
        threads,
        depth,
        mutation,
        custom,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Opts {
        bounds,
        threads,
        depth,
        mutation,
        custom,
    } = match parse(&args) {
        Ok(x) => x,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("msite-model: {e}");
            }
            eprintln!("usage: msite-model [--writes N] [--backups N] [--restores N] [--rollbacks N] [--packets N] [--in-flight N] [--scrubs N] [--ticks N] [--actors A,B,C] [--threads N] [--depth N] [--mutation NAME]");
            eprintln!("without bounds, checks the built-in suite of configurations");
            return ExitCode::from(2);
        }
    };
    let runs = if custom {
        vec![("custom", bounds)]
    } else {
        suite()
    };
    let mut failed = Vec::new();
    for (label, bounds) in runs {
        if !check(label, bounds, threads, depth, mutation) {
            failed.push(label);
        }
    }
    if failed.is_empty() {
        println!("\nmodel check: every property holds");
        ExitCode::SUCCESS
    } else {
        println!("\nmodel check: violations in: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

/// Checks one configuration; prints the verdicts and counterexamples; true when every
/// safety and completion property holds.
fn check(
    label: &str,
    bounds: Bounds,
    threads: usize,
    depth: Option<usize>,
    mutation: Option<Mutation>,
) -> bool {
    println!("== {label}: {bounds}");
    let model = match mutation {
        Some(m) => {
            println!("(mutated protocol: {})", m.name());
            ProtocolModel::mutated(bounds, m)
        }
        None => ProtocolModel::new(bounds),
    };
    let stats = model.stats.clone();
    let properties: Vec<(&'static str, bool)> = model
        .properties()
        .iter()
        .map(|p| (p.name, p.name.starts_with("sometimes")))
        .collect();
    let start = Instant::now();
    let mut builder = model.checker().threads(threads);
    if let Some(d) = depth {
        builder = builder.target_max_depth(d);
    }
    let checker = builder.spawn_bfs().join();
    let secs = start.elapsed().as_secs_f64();
    let mut ok_all = true;
    let mut verdicts = Vec::new();
    let mut paths = Vec::new();
    for (name, reach) in &properties {
        let found = checker.discovery(name);
        let verdict = match (*reach, found.is_some()) {
            (true, true) => "reached",
            (true, false) => "not reached",
            (false, false) => "holds",
            (false, true) => "VIOLATED",
        };
        ok_all &= *reach || found.is_none();
        verdicts.push(format!("{name}: {verdict}"));
        if let (false, Some(path)) = (*reach, found) {
            paths.push((name, path));
        }
    }
    println!(
        "states explored: {}, unique: {}, max depth: {}, properties: {} ({secs:.1} s, {threads} threads)",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        verdicts.join("; ")
    );
    println!(
        "heal checks: {} states healed, {} could not complete a restore, {} did not converge; longest heal {} rounds",
        stats.healed.load(Ordering::Relaxed),
        stats.not_completed.load(Ordering::Relaxed),
        stats.not_converged.load(Ordering::Relaxed),
        stats.max_rounds.load(Ordering::Relaxed)
    );
    for (name, path) in paths {
        println!("\ncounterexample for `{name}`:");
        let model = checker.model();
        let steps = path.into_vec();
        for (k, (state, action)) in steps.iter().enumerate() {
            if let Some(a) = action {
                println!("{:>3}. {a}", k + 1);
            } else if k + 1 == steps.len() {
                println!("final state:\n{}", describe(state));
                if *name == msite_model::props::COMPLETION {
                    match model.heal(state) {
                        Ok(_) => println!("(heals from here)"),
                        Err(e) => {
                            let (healed, why) = *e;
                            println!("heal gives up: {why}:\n{}", describe(&healed))
                        }
                    }
                }
            }
        }
    }
    ok_all
}
