//! Real backends (features `sqlite`, `rocks`): a seed drives the same schedule on a real engine
//! as in memory — the same trace, counters and verdict — since nothing the simulator decides
//! depends on the engine, its directories or its timing. Without either feature this file
//! only checks that an unbuilt backend says so.

#[cfg(any(feature = "sqlite", feature = "rocks"))]
use msite_sim::Outcome;
use msite_sim::{run_schedule, Backend, Config};

#[cfg(any(feature = "sqlite", feature = "rocks"))]
fn run(seed: u64, backend: Backend) -> Outcome {
    run_schedule(&Config {
        seed,
        steps: Some(60),
        replicas: None,
        verbose: true,
        profile: Default::default(),
        backend,
    })
}

/// Runs seeds on `backend` and in memory; they must agree, and between them they must have
/// taken and restored backups (so `Store::backup` and `Store::restore_backup` ran).
#[cfg(any(feature = "sqlite", feature = "rocks"))]
fn same_as_mem(backend: Backend) {
    let (mut backups, mut restores) = (0, 0);
    for seed in [3u64, 44, 107, 2, 5] {
        let mem = run(seed, Backend::Mem);
        let real = run(seed, backend);
        assert_eq!(
            mem.trace, real.trace,
            "seed {seed}: {backend} differs from mem"
        );
        assert_eq!(mem.stats, real.stats, "seed {seed}");
        assert_eq!(mem.violations, real.violations, "seed {seed}");
        backups += real.stats.backups;
        restores += real.stats.restores + real.stats.rollbacks;
    }
    assert!(
        backups > 0 && restores > 0,
        "no backup restored ({backups} backups, {restores} restores)"
    );
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_runs_the_same_schedules_as_mem() {
    same_as_mem(Backend::Sqlite);
}

#[cfg(feature = "rocks")]
#[test]
fn rocks_runs_the_same_schedules_as_mem() {
    same_as_mem(Backend::Rocks);
}

#[test]
fn backends_are_named_and_mem_is_always_built() {
    for (name, b) in [
        ("mem", Backend::Mem),
        ("sqlite", Backend::Sqlite),
        ("rocks", Backend::Rocks),
    ] {
        assert_eq!(name.parse::<Backend>().unwrap(), b);
        assert_eq!(b.to_string(), name);
    }
    assert!("lmdb".parse::<Backend>().is_err());
    assert!(Backend::Mem.is_built());
    assert_eq!(Backend::Sqlite.is_built(), cfg!(feature = "sqlite"));
    assert_eq!(Backend::Rocks.is_built(), cfg!(feature = "rocks"));
}

#[cfg(not(feature = "sqlite"))]
#[test]
fn an_unbuilt_backend_is_a_reported_failure() {
    let out = run_schedule(&Config {
        seed: 1,
        backend: Backend::Sqlite,
        ..Default::default()
    });
    assert_eq!(out.violations.len(), 1);
    assert!(
        out.violations[0].contains("built without the sqlite backend"),
        "{:?}",
        out.violations
    );
}
