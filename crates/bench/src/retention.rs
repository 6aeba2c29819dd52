//! A week at a site with retention on and off (issue 21): two replicas, A and B, on a
//! simulated clock. Every simulated hour A checks in new versions of a few files and moves a
//! label across all of them (a nightly build's routine, hourly), the two exchange packets, and
//! A scrubs as `msite serve` does (hourly), under a one-day restore window. The same schedule
//! runs twice, retention on and off, and at the end of each day A's store is measured: the
//! bytes of every key and value it holds (engine-independent: what retention controls), and,
//! for an engine with files, its directory on disk.
//!
//! What the rows show: with retention on, the store grows by the state the week made (the new
//! versions and their content) and no longer by its oplog; off, it grows by both. The
//! label moves change no state size, so they measure the oplog's share alone.

use std::sync::Arc;

use anyhow::{Context, Result};
use msite_core::store::{KeyRange, Keyspace, Store};
use msite_core::{Env, Replica, SimEnv, VersionSel};
use serde_json::{json, Value};

use crate::backend::Backend;
use crate::util::{content, dir_bytes};
use crate::workloads::{mkreplica_with_env, settle, Work};

const FILES: u64 = 50;
const CHECKINS_PER_HOUR: u64 = 5;
const HOUR_MS: u64 = 3_600_000;
const DAYS: u64 = 7;

/// Both runs: `{ "on": {"logical": [bytes per day], "disk": [...]}, "off": {...}, … }`.
pub fn week<B: Backend>(w: &Work) -> Result<Value> {
    let off = one_week::<B>(w, None)?;
    let on = one_week::<B>(w, Some(24 * HOUR_MS))?;
    Ok(json!({
        "off": off, "on": on, "days": DAYS,
        "entries_per_day": 24 * (CHECKINS_PER_HOUR + FILES),
    }))
}

/// A's store size at the end of each simulated day, with the restore window `window_ms`
/// (None: retention off).
fn one_week<B: Backend>(w: &Work, window_ms: Option<u64>) -> Result<Value> {
    let sim = SimEnv::new(21);
    let env: Arc<dyn Env> = Arc::new(sim.clone());
    let a_dir = w.fresh("week-a");
    let a = Replica::init(B::open_store(&a_dir)?, env.clone(), "bench", "a")?;
    for i in 0..FILES {
        a.checkin(&file(i), "main", &content(i, 2048), "bench", "")?;
    }
    a.mklbtype("NIGHTLY")?;
    let b = mkreplica_with_env::<B>(w, &a, "b", &w.fresh("week-b"), env)?;
    settle(w, &a, &b)?;
    a.set_retention_window(window_ms)?;
    let (mut logical, mut oplog, mut disk) = (Vec::new(), Vec::new(), Vec::new());
    for hour in 0..DAYS * 24 {
        one_hour(&a, hour)?;
        settle(w, &a, &b)?;
        if window_ms.is_some() {
            a.scrub(false).context("scrub")?;
        }
        sim.advance(HOUR_MS);
        if hour % 24 == 23 {
            B::quiesce(a.store())?;
            logical.push(logical_bytes(a.store(), &Keyspace::ALL)?);
            oplog.push(logical_bytes(a.store(), &[Keyspace::Oplog])?);
            disk.push(dir_bytes(&a_dir)?);
        }
    }
    Ok(json!({ "logical": logical, "oplog": oplog, "disk": disk }))
}

/// The bytes of every key and value in `store`'s keyspaces `kss`.
fn logical_bytes<S: Store>(store: &S, kss: &[Keyspace]) -> Result<u64> {
    let mut total = 0;
    for &ks in kss {
        for kv in store.scan(ks, KeyRange::all())? {
            let (k, v) = kv?;
            total += (k.len() + v.len()) as u64;
        }
    }
    Ok(total)
}

/// An hour's work at A: new versions of a few files, then the label moved onto every file's
/// latest version.
fn one_hour<S: Store>(a: &Replica<S>, hour: u64) -> Result<()> {
    for k in 0..CHECKINS_PER_HOUR {
        let i = (hour * CHECKINS_PER_HOUR + k) % FILES;
        let text = content(hour << 32 | k, 2048);
        a.checkin(&file(i), "main", &text, "bench", "hourly")?;
    }
    for i in 0..FILES {
        let sel = VersionSel::parse(&file(i))?;
        a.mklabel("NIGHTLY", &sel)?;
    }
    Ok(())
}

fn file(i: u64) -> String {
    format!("src/f{i:03}.c")
}

/// The rows: A's store after the first and the last day, retention on against off.
pub fn rows(t: &Value, b: &str) -> Vec<Value> {
    use crate::table::row;
    if let Some(e) = t["error"].as_str() {
        return vec![row(
            "Retention week",
            b,
            format!("error: {e}"),
            "-".into(),
            None,
            "report",
            None,
        )];
    }
    let at = |k: &str, what: &str, i: usize| t[k][what][i].as_f64().unwrap_or(f64::NAN);
    let day = |k: &str, i: usize| at(k, "logical", i);
    let last = t["days"].as_u64().unwrap_or(DAYS) as usize - 1;
    let mb = |x: f64| format!("{:.2} MB", x / 1e6);
    let growth = |k: &str| day(k, last) - day(k, 0);
    let what = format!(
        "Store after a simulated week ({} entries a day, one-day window, hourly scrub): growth of the bytes held from day 1 to day {}, retention on vs off",
        t["entries_per_day"],
        last + 1
    );
    let (on, off) = (growth("on"), growth("off"));
    let oplog = |k: &str| at(k, "oplog", last);
    let oplog_row = row(
        &format!(
            "Oplog after the same week (day {}), retention on vs off",
            last + 1
        ),
        b,
        mb(oplog("on")),
        mb(oplog("off")),
        Some(oplog("on") / oplog("off")),
        "report",
        None,
    );
    vec![
        oplog_row,
        row(
            &what,
            b,
            format!(
                "{} ({} → {})",
                mb(on),
                mb(day("on", 0)),
                mb(day("on", last))
            ),
            format!(
                "{} ({} → {})",
                mb(off),
                mb(day("off", 0)),
                mb(day("off", last))
            ),
            Some(on / off),
            "report",
            None,
        ),
    ]
}
