//! A new replica of a tree with a long history (issue 21): `files` files checked in `rounds`
//! times, every round a new version of every file (written as `msite import DIR` does, one
//! `import_tree` per round), so the oplog holds `files × rounds` check-ins over a tree of
//! `files` files. New replicas are then made from a snapshot and from the history, and
//! compared with git's `bundle create --all` + `clone --bare` of the same history (one commit
//! per round, the same bytes).
//!
//! What the rows show. Versions are state here (any version can be read at any replica, as
//! any blob of a git clone can), so a snapshot carries every version the tree ever had, as
//! git's bundle carries every blob; what it leaves out is the oplog (one entry per check-in,
//! replayed, chained and verified one by one). So the rows compare the snapshot with the
//! history creation of the same replica (the oplog's share), and with a snapshot of the same
//! files holding one version each (the time per version held).

use std::path::Path;

use anyhow::{Context, Result};
use msite_core::Replica;
use serde_json::{json, Value};

use crate::backend::Backend;
use crate::git;
use crate::table::{f, row};
use crate::util::{median, secs, timed, write_tree};
use crate::workloads::{create_once, env, import_tree, retention_on, Creations, Work, FILE_SIZE};

/// The seed of round 0's content; round `r` uses `SEED + r`.
const SEED: u64 = 0x10_0000;

/// The shape of the history: `files` files, each checked in `rounds` times.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub files: u64,
    pub rounds: u64,
}

impl Shape {
    /// Check-ins in the history.
    fn checkins(self) -> u64 {
        self.files * self.rounds
    }
}

/// Writes round `r`'s tree into `dir`: every file gets new content.
fn write_round(dir: &Path, shape: Shape, r: u64) -> Result<()> {
    write_tree(dir, shape.files, FILE_SIZE, SEED + r)
}

/// The msite side on engine `B`: replicas made from a snapshot and from the history of a
/// replica holding `shape`'s history, and from a snapshot of a replica holding one round.
pub fn measure<B: Backend>(w: &Work, shape: Shape, runs: usize) -> Result<Value> {
    let tree = w.fresh("longhist-tree");
    let short: Replica<B::S> =
        Replica::init(B::open_store(&w.fresh("lh-short"))?, env(), "bench", "a")?;
    write_round(&tree, shape, 0)?;
    import_tree(&short, &tree)?;
    retention_on(&short)?;
    let mut one_round = Creations::default();
    for k in 0..runs {
        one_round.add(create_once::<B>(w, &short, &format!("o{k}"), true)?);
    }
    drop(short);
    let long: Replica<B::S> =
        Replica::init(B::open_store(&w.fresh("lh-long"))?, env(), "bench", "a")?;
    let ((), setup) = timed(|| {
        for r in 0..shape.rounds {
            write_round(&tree, shape, r)?;
            import_tree(&long, &tree)?;
        }
        Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&tree);
    retention_on(&long)?;
    let (mut snap, mut hist) = (Creations::default(), Creations::default());
    for k in 0..runs {
        snap.add(create_once::<B>(w, &long, &format!("s{k}"), true)?);
        hist.add(create_once::<B>(w, &long, &format!("h{k}"), false)?);
    }
    Ok(json!({
        "files": shape.files, "rounds": shape.rounds, "runs": runs,
        "setup_checkins_per_sec": shape.checkins() as f64 / setup.as_secs_f64(),
        "snapshot_secs": median(snap.total), "snapshot_export_secs": median(snap.exp),
        "snapshot_import_secs": median(snap.imp), "snapshot_packet_bytes": snap.bytes,
        "history_secs": median(hist.total), "history_packet_bytes": hist.bytes,
        "history_entries": hist.entries,
        "one_round_snapshot_secs": median(one_round.total),
        "one_round_snapshot_packet_bytes": one_round.bytes,
    }))
}

/// git's side: the same rounds as commits of a bare repository; each run times `git bundle
/// create --all` plus `git clone --bare` from the bundle. Returns the median seconds.
pub fn git_baseline(work: &Path, shape: Shape, runs: usize) -> Result<f64> {
    let repo = work.join("git-longhist");
    let tree = work.join("git-longhist-tree");
    std::fs::create_dir_all(&repo).with_context(|| format!("creating {}", repo.display()))?;
    git::run(&repo, &["init", "-q", "--bare", "."])?;
    let wt = tree.to_str().context("tree path is not UTF-8")?.to_string();
    for r in 0..shape.rounds {
        write_round(&tree, shape, r)?;
        git::run(&repo, &["--work-tree", &wt, "add", "-A"])?;
        git::run(&repo, &["--work-tree", &wt, "commit", "-q", "-m", "round"])?;
    }
    let _ = std::fs::remove_dir_all(&tree);
    git::run(&repo, &["gc", "-q"])?;
    git::bundle_and_clone(work, &repo, "git-longhist", runs)
}

/// The rows: snapshot and history creation against git, and the snapshot's cost on the long
/// history against the same tree with one version per file.
pub fn rows(t: &Value, b: &str, git: Option<f64>) -> Vec<Value> {
    if let Some(e) = t["error"].as_str() {
        let msg = format!("error: {e}");
        return vec![row("Long history", b, msg, "-".into(), None, "≤ 0.5", None)];
    }
    let what = |how: &str| {
        format!(
            "New replica of {} files with {} check-ins of history, from {how} (export + create_from_packet vs bundle --all + clone --bare of the same {} commits)",
            t["files"],
            f(t, "files").unwrap_or(0.0) * f(t, "rounds").unwrap_or(0.0),
            t["rounds"],
        )
    };
    let vs_git = |key: &str, how: &str, goal: Option<f64>| {
        let (Some(m), Some(g)) = (f(t, key), git) else {
            return Value::Null;
        };
        let goal_text = goal.map_or("report".to_string(), |l| format!("≤ {l}"));
        let met = goal.map(|l| m / g <= l);
        row(
            &what(how),
            b,
            secs(m),
            secs(g),
            Some(m / g),
            &goal_text,
            met,
        )
    };
    let (files, rounds) = (&t["files"], &t["rounds"]);
    let ratio_row = |what: String, m: &str, base: &str| match (f(t, m), f(t, base)) {
        (Some(m), Some(g)) => row(&what, b, secs(m), secs(g), Some(m / g), "report", None),
        _ => Value::Null,
    };
    let oplog_share = ratio_row(
        format!("New replica of the same {files} files × {rounds} versions: from a snapshot vs from the history"),
        "snapshot_secs",
        "history_secs",
    );
    let per_version = ratio_row(
        format!("Snapshot of {files} files: {rounds} versions each vs one version each (versions are state: a snapshot carries every version)"),
        "snapshot_secs",
        "one_round_snapshot_secs",
    );
    vec![
        vs_git("snapshot_secs", "a snapshot (retention on)", Some(0.5)),
        vs_git("history_secs", "the history", None),
        oplog_share,
        per_version,
    ]
}
