//! The check-in cost against the length of a branch's history, through the CLI's store
//! dispatch ([`AnyStore`], what `msite checkin` opens). A check-in reads its branch's latest
//! version with `ReadView::last`, which the engines answer by a seek, so the cost of one
//! check-in must not grow with the versions already on the branch. Each level is a branch of
//! one element with that many versions; the row compares the per-check-in time at the longest
//! branch with the shortest, measured in the same run.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use msite_cli::backend::{AnyStore, BackendKind};
use msite_core::{Replica, SystemEnv};
use serde_json::{json, Value};

use crate::util::{content, median, timed};
use crate::workloads::Work;

/// The element every check-in of the workload goes to.
const PATH: &str = "src/long_history.rs";

/// Check-ins timed at each level (one sample each; the row reports the median).
pub const TIMED_CHECKINS: u64 = 200;

/// Per-check-in time at each history length, on engine `engine` (`sqlite` or `rocksdb`).
pub fn checkin_levels(w: &Work, engine: &str, levels: &[u64]) -> Result<Value> {
    let kind: BackendKind = engine
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))
        .context("naming the engine")?;
    let mut out = Vec::new();
    for &versions in levels {
        let dir = w.fresh(&format!("branch-{versions}"));
        let (setup_secs, per_checkin) = one_level(kind, &dir, versions)?;
        let _ = std::fs::remove_dir_all(&dir);
        out.push(json!({
            "versions": versions,
            "secs": per_checkin,
            "setup_checkins_per_sec": versions as f64 / setup_secs,
        }));
    }
    Ok(json!({ "levels": out, "timed_checkins": TIMED_CHECKINS }))
}

/// Grows a branch to `versions` versions, then times [`TIMED_CHECKINS`] more, one by one.
/// Returns the set-up time and the median time of one timed check-in.
fn one_level(kind: BackendKind, dir: &Path, versions: u64) -> Result<(f64, f64)> {
    let store = AnyStore::open(kind, dir)?;
    let r = Replica::init(store, Arc::new(SystemEnv), "bench", "a")?;
    let checkin = |i: u64| -> Result<()> {
        r.checkin(PATH, "main", &content(0xb4a7 << 32 | i, 64), "bench", "")
            .map(|_| ())
            .with_context(|| format!("check-in {i} of {PATH}"))
    };
    let ((), setup) = timed(|| (0..versions).try_for_each(checkin))?;
    let mut samples = Vec::new();
    for i in versions..versions + TIMED_CHECKINS {
        let ((), t) = timed(|| checkin(i))?;
        samples.push(t.as_secs_f64());
    }
    Ok((setup.as_secs_f64(), median(samples)))
}
