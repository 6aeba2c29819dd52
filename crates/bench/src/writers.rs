//! Many writers on one site (issue 24): 8 processes check in to one site at once, each its own
//! element, one `msite checkin` command per version, as users at one site would. A command
//! opens the site's store, which one process holds at a time on every engine, so the writers
//! take turns (`--wait`): the row measures what a site sustains under that contention, engine
//! against engine, and against one writer alone on the same engine.
//!
//! The commands are this benchmark's own binary re-entered as `msite` (`__msite ARGS`). On
//! PostgreSQL the site is a database of the run's scratch server (`MSITE_PG_SERVER`).

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::util::{msite, timed};
use crate::workloads::Work;

/// Check-ins per second of `writers` processes each checking in `per_writer` versions to one
/// new site on `backend`: `{ "writers", "per_writer", "secs", "rate" }`.
pub fn measure(w: &Work, backend: &str, writers: usize, per_writer: usize) -> Result<Value> {
    let dir = w.fresh(&format!("writers-{backend}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    msite(
        &dir,
        &[
            "init",
            "site",
            "--family",
            "bench",
            "--replica",
            "site",
            "--backend",
            backend,
        ],
    )?;
    for i in 0..writers {
        for v in 0..per_writer {
            let text = format!("writer {i}, version {v}\n");
            std::fs::write(dir.join(format!("w{i}v{v}.txt")), text)?;
        }
    }
    let ((), took) = timed(|| run_writers(&dir, writers, per_writer))?;
    let versions = msite(&dir, &["-C", "site", "lshistory", "w0.txt"])?;
    ensure!(
        versions.lines().count() >= per_writer,
        "writer 0's element holds {} versions, not {per_writer}",
        versions.lines().count()
    );
    let secs = took.as_secs_f64();
    Ok(json!({
        "writers": writers, "per_writer": per_writer, "secs": secs,
        "rate": (writers * per_writer) as f64 / secs,
    }))
}

/// `writers` threads, each running `per_writer` check-in commands one after the other; all
/// must succeed.
fn run_writers(dir: &Path, writers: usize, per_writer: usize) -> Result<()> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|i| s.spawn(move || one_writer(dir, i, per_writer)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("a writer thread panicked"))
    })
}

fn one_writer(dir: &Path, i: usize, per_writer: usize) -> Result<()> {
    for v in 0..per_writer {
        let (el, file) = (format!("w{i}.txt"), format!("w{i}v{v}.txt"));
        msite(
            dir,
            &[
                "-C", "site", "--wait", "600", "checkin", &el, &file, "-m", "bench",
            ],
        )?;
    }
    Ok(())
}

/// The rows: for each engine, 8 writers against 1 (the cost of taking turns); and each
/// engine's 8-writer rate against SQLite's, measured in the same run.
pub fn rows(results: &serde_json::Map<String, Value>) -> Vec<Value> {
    let rate = |b: &str, k: &str| results.get(b)?.get(k)?.get("rate")?.as_f64();
    let mut out = Vec::new();
    for (b, r) in results {
        let (Some(many), Some(one)) = (rate(b, "many"), rate(b, "one")) else {
            let e = ["many", "one"].iter().find_map(|k| r[k]["error"].as_str());
            let e = format!("error: {}", e.unwrap_or("no figures"));
            out.push(crate::table::row(
                "Writers",
                b,
                e,
                "-".into(),
                None,
                "report",
                None,
            ));
            continue;
        };
        out.push(crate::table::row(
            &format!(
                "{} processes checking in to one site at once vs one alone, check-ins/s",
                r["many"]["writers"]
            ),
            b,
            format!("{many:.1}/s"),
            format!("{one:.1}/s"),
            Some(many / one),
            "report",
            None,
        ));
        if b != "sqlite" {
            if let Some(lite) = rate("sqlite", "many") {
                out.push(crate::table::row(
                    &format!(
                        "{} processes checking in to one site at once, against SQLite's site",
                        r["many"]["writers"]
                    ),
                    b,
                    format!("{many:.1}/s"),
                    format!("{lite:.1}/s"),
                    Some(many / lite),
                    "report",
                    None,
                ));
            }
        }
    }
    out
}
