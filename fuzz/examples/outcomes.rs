//! Replays a corpus of the `import_packet` target without libFuzzer and counts what became
//! of the imports (applied, already applied, waiting, each kind of refusal), to see which
//! paths the fuzzer's inputs reach. Runs every check the target runs.
//!
//! `cargo run --release --example outcomes -- fuzz/corpus/import_packet fuzz/seeds/import_packet`
//! (from `fuzz/`, with paths relative to it or absolute).

use std::collections::BTreeMap;

use msite_core::ImportOutcome;
use msite_fuzz::drive::{self, Outcome};

fn kind(o: &Outcome) -> String {
    match o {
        Ok(ImportOutcome::Applied { .. }) => "applied".into(),
        Ok(ImportOutcome::AlreadyApplied) => "already applied".into(),
        Ok(ImportOutcome::Waiting(_)) => "waiting".into(),
        Err(e) => {
            let text = format!("{e:?}");
            let end = text.find(['(', ' ', '{']).unwrap_or(text.len());
            let inner = text[end..].trim_start_matches(['(', ' ']);
            let inner_end = inner.find(['(', ' ', '{', ')']).unwrap_or(inner.len());
            format!("error {} {}", &text[..end], &inner[..inner_end])
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let f = msite_fuzz::family::build()?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut inputs = 0u64;
    for dir in std::env::args().skip(1) {
        for e in std::fs::read_dir(&dir)? {
            let data = std::fs::read(e?.path())?;
            inputs += 1;
            drive::run(&f, &data, &mut |o| *counts.entry(kind(o)).or_default() += 1);
        }
    }
    println!("{inputs} inputs");
    for (k, n) in counts {
        println!("{n:>8}  {k}");
    }
    Ok(())
}
