//! The `import_packet` harness on the stable toolchain, without libFuzzer: CI runs it so that
//! the harness keeps compiling against the core it drives, and so that its checks still hold
//! on the seed corpus and on a fixed stream of pseudo-random structured inputs (a smoke test;
//! coverage-guided search is `cargo xtask fuzz`).

use std::collections::BTreeMap;
use std::path::Path;

use msite_core::ImportOutcome;
use msite_fuzz::drive::{self, Outcome};
use msite_fuzz::family;

/// A short name for an outcome, for counting.
fn kind(o: &Outcome) -> &'static str {
    match o {
        Ok(ImportOutcome::Applied { .. }) => "applied",
        Ok(ImportOutcome::AlreadyApplied) => "already applied",
        Ok(ImportOutcome::Waiting(_)) => "waiting",
        Err(_) => "refused",
    }
}

/// xorshift64*: a fixed stream of bytes, the same on every run.
fn bytes(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state >> 12;
            *state ^= *state << 25;
            *state ^= *state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn the_genuine_seed_packets_apply_and_every_check_holds() {
    let f = family::build().expect("the fuzz family builds");
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/import_packet");
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&seeds).expect("seed directory") {
        let data = std::fs::read(entry.expect("seed entry").path()).expect("seed file");
        files += 1;
        // drive::run panics when an import breaks one of the store's invariants.
        drive::run(&f, &data, &mut |o| *counts.entry(kind(o)).or_default() += 1);
    }
    assert!(files >= 3, "expected the seed packets in {}", seeds.display());
    assert!(
        counts.get("applied").copied().unwrap_or(0) >= 1,
        "no seed packet applied: {counts:?}"
    );
}

#[test]
fn pseudo_random_structured_inputs_keep_every_check() {
    let f = family::build().expect("the fuzz family builds");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for i in 0..400 {
        let data = bytes(&mut state, 8 + i % 120);
        drive::run(&f, &data, &mut |o| *counts.entry(kind(o)).or_default() += 1);
    }
    // The stream must reach both sides of the import's checks, or it tests nothing.
    assert!(counts.get("applied").copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(counts.get("refused").copied().unwrap_or(0) > 0, "{counts:?}");
}

#[test]
fn the_seed_packets_are_the_familys_packets() {
    // The seeds are what the exporters write today (format 1.4, signed, with reports): regenerate them with
    // `MSITE_FUZZ_WRITE_SEEDS` when the family or the format changes.
    let f = family::build().expect("the fuzz family builds");
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/import_packet");
    if let Ok(dir) = std::env::var("MSITE_FUZZ_WRITE_SEEDS") {
        f.write_seeds(Path::new(&dir)).expect("write the seeds");
    }
    for (i, p) in f.raw.iter().enumerate() {
        let stored = std::fs::read(seeds.join(format!("packet-{}.msp", i + 1))).expect("seed");
        assert!(stored == *p, "seed packet-{} is stale", i + 1);
    }
}
