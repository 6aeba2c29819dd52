//! The status page's cost (issue 23): rendering the page of `msite serve` (status, epoch
//! matrix and history views, maud) for a family of 50 replicas, against serializing the same
//! status document alone as JSON (`/api/status`), in the same run. The document is built with
//! the most the page ever lists (200 incoming, 200 refused packets, a 50 × 50 epoch matrix);
//! the history is the real `history.jsonl` after 10⁶ packets were recorded through
//! [`msite_cli::history::append`] (the file stays bounded, so the page reads at most what one
//! cut-back keeps plus 1 MiB).

use std::time::Instant;

use anyhow::Result;
use msite_cli::history::{self, Direction, Outcome, Record};
use msite_cli::serve::page;
use msite_cli::status::{
    BayPacket, Epoch, EpochRow, Exchange, RefusedPacket, RestoreState, SiblingRow, StatusDoc,
};
use serde_json::{json, Value};

/// Replicas in the family.
const REPLICAS: usize = 50;
/// Packets recorded in the history.
const RECORDED: u64 = 1_000_000;

fn exchange(i: usize, result: &str) -> Exchange {
    Exchange {
        time: "2026-12-03T01:39:47Z".into(),
        at_ms: 1_796_261_987_308 + i as u64,
        packet: format!("sync_site{i:02}_to_site00_1796261987308_{i}.msp"),
        bytes: 4096 + i as u64,
        result: result.into(),
        detail: None,
    }
}

fn sibling(i: usize) -> SiblingRow {
    SiblingRow {
        name: format!("site{i:02}"),
        id: format!("{i:032x}"),
        last_in: Some(exchange(i, "applied")),
        last_out: Some(exchange(i, "shipped")),
        last_ok: Some("2026-12-03T01:39:47Z".into()),
        last_ok_ms: Some(1_796_261_987_308),
        they_lack: i as u64 * 7,
        we_lack: i as u64 % 3,
        waiting: i % 4,
        refused: i % 5,
        awaited: i.is_multiple_of(7),
        heard: ["ok", "late", "never"][i % 3].into(),
        key_fingerprint: None,
        retention: Default::default(),
    }
}

/// A status document with the most the page lists, for a family of [`REPLICAS`].
fn document() -> StatusDoc {
    let origins: Vec<String> = (0..REPLICAS).map(|i| format!("site{i:02}")).collect();
    let rows = (0..REPLICAS)
        .map(|r| EpochRow {
            replica: origins[r].clone(),
            own: r == 0,
            cells: (0..REPLICAS).map(|o| (r * 1000 + o) as u64).collect(),
        })
        .collect();
    let max = msite_cli::status::MAX_LISTED;
    StatusDoc {
        format: 1,
        generated: "2026-12-03T01:39:50Z".into(),
        generated_ms: 1_796_261_990_000,
        family: "proj".into(),
        family_id: format!("{:032x}", 7),
        replica: "site00".into(),
        late_after_s: 86_400,
        restore: RestoreState {
            state: "recovering".into(),
            locked: true,
            reason: None,
            incarnation: Some(1_796_261_990_000),
            awaiting: origins[1..3].to_vec(),
            siblings_restoring: vec![],
        },
        siblings: (1..REPLICAS).map(sibling).collect(),
        retired: vec![],
        mastership_denied: vec![],
        incoming: (0..max)
            .map(|i| BayPacket {
                packet: format!("sync_site{:02}_to_site00_{i}.msp", i % REPLICAS),
                sender: Some(format!("site{:02}", i % REPLICAS)),
                bytes: 10_000 + i as u64,
                verdict: "waiting".into(),
                here: format!(
                    "must wait: needs site{:02} up to {}, has {i}",
                    i % REPLICAS,
                    i + 5
                ),
            })
            .collect(),
        incoming_total: max,
        waiting_total: max,
        refused: (0..max)
            .map(|i| RefusedPacket {
                file: format!("bad<{i}>.msp"),
                sender: None,
                reason: "x".repeat(300),
                time: "2026-12-03T01:39:47Z".into(),
            })
            .collect(),
        refused_total: max,
        outgoing_total: 12,
        epoch: Epoch { origins, rows },
        history_unreadable: 0,
    }
}

/// Records [`RECORDED`] packets in a history under `dir` (in batches, as many commands would)
/// and reads it back: the records the page gets, the file's size, and the seconds both took.
fn history_of_a_million(dir: &std::path::Path) -> Result<(Vec<Record>, u64, f64, f64)> {
    let t = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..RECORDED {
        let sib = format!("site{:02}", 1 + i as usize % (REPLICAS - 1));
        let (dir_, outcome) = if i.is_multiple_of(2) {
            (Direction::In, Outcome::Applied)
        } else {
            (Direction::Out, Outcome::Shipped)
        };
        let name = format!("sync_{sib}_{i}.msp");
        batch.push(Record::now(dir_, Some(&sib), &name, 4096, outcome, None));
        if batch.len() == 1000 {
            history::append(dir, &batch)?;
            batch.clear();
        }
    }
    let write = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(history::path(dir))?.len();
    let t = Instant::now();
    let (recs, _) = history::read(dir);
    Ok((recs, size, write, t.elapsed().as_secs_f64()))
}

/// The median of `runs` timings of `f`, in seconds.
fn median(runs: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Renders the three views and serializes the document, `runs` times each.
pub fn measure(dir: &std::path::Path, runs: usize) -> Result<Value> {
    let doc = document();
    let (recs, history_bytes, write_secs, read_secs) = history_of_a_million(dir)?;
    let page_secs = median(runs, || {
        page::render_status(&doc).len()
            + page::render_epoch(&doc).len()
            + page::render_history(&doc.replica, &recs, 0).len()
    });
    let json_secs = median(runs, || {
        serde_json::to_string(&doc).map(|s| s.len()).unwrap_or(0)
    });
    let page_bytes = page::render_status(&doc).len()
        + page::render_epoch(&doc).len()
        + page::render_history(&doc.replica, &recs, 0).len();
    Ok(json!({
        "replicas": REPLICAS, "recorded": RECORDED, "history_records_kept": recs.len(),
        "history_bytes": history_bytes, "history_write_secs": write_secs,
        "history_read_secs": read_secs, "page_secs": page_secs, "json_secs": json_secs,
        "page_bytes": page_bytes, "json_bytes": serde_json::to_string(&doc)?.len(), "runs": runs,
    }))
}
