//! Regression seeds: schedules that once found a protocol bug (now fixed) must pass, and the
//! simulator must stay deterministic (one seed, one run, bit for bit).

use msite_sim::{run_schedule, Config};

fn passes(seed: u64, steps: Option<usize>, replicas: Option<usize>) {
    let out = run_schedule(&Config {
        seed,
        steps,
        replicas,
        verbose: false,
    });
    assert!(
        out.violations.is_empty(),
        "seed {seed} (steps {steps:?}, replicas {replicas:?}) violates the invariants again:\n{}",
        out.violations.join("\n")
    );
}

#[test]
fn same_seed_same_run() {
    for seed in [3u64, 44, 107] {
        let a = run_schedule(&Config {
            seed,
            steps: Some(60),
            replicas: None,
            verbose: true,
        });
        let b = run_schedule(&Config {
            seed,
            steps: Some(60),
            replicas: None,
            verbose: true,
        });
        assert_eq!(a.trace, b.trace, "seed {seed}: two runs differ");
        assert_eq!(a.stats, b.stats);
        assert_eq!(a.violations, b.violations);
    }
}

#[test]
fn fault_free_schedules_pass() {
    // Seeds whose schedules draw no restore: sync, crashes and packet faults only.
    for seed in 1..=5u64 {
        let out = run_schedule(&Config {
            seed,
            steps: Some(40),
            replicas: Some(4),
            verbose: false,
        });
        if out.stats.restores == 0 && out.stats.rollbacks == 0 {
            passes(seed, Some(40), Some(4));
        }
    }
}
