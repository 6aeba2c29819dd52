//! The results table: one row per measurement, msite against its baseline in the same run
//! as a ratio, with the goal and whether it was met. Every workload's measurements (JSON, as
//! the workloads return them) become rows here; [`render`] prints them as Markdown.

use serde_json::{json, Value};

use crate::util::secs;

/// One line of the table.
pub fn row(
    workload: &str,
    backend: &str,
    msite: String,
    baseline: String,
    ratio: Option<f64>,
    goal: &str,
    met: Option<bool>,
) -> Value {
    json!({ "workload": workload, "backend": backend, "msite": msite, "baseline": baseline,
            "ratio": ratio, "goal": goal, "met": met })
}

pub fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// The check-in row: per-check-in time at the longest branch over the shortest (flat: ≤ 1.5).
fn branch_row(b: &str, t: &Value) -> Value {
    const GOAL: &str = "longest/shortest ≤ 1.5";
    if let Some(e) = t.get("error").and_then(Value::as_str) {
        return row(
            "Check-in",
            b,
            format!("error: {e}"),
            "-".into(),
            None,
            GOAL,
            None,
        );
    }
    let levels: Vec<(u64, f64)> = t["levels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| Some((l["versions"].as_u64()?, f(l, "secs")?)))
                .collect()
        })
        .unwrap_or_default();
    let (Some(first), Some(last)) = (levels.first(), levels.last()) else {
        return row(
            "Check-in",
            b,
            "no levels".into(),
            "-".into(),
            None,
            GOAL,
            None,
        );
    };
    let ratio = last.1 / first.1;
    row(
        &format!(
            "Check-in through AnyStore, one branch of {} / {} versions (median of {})",
            first.0, last.0, t["timed_checkins"]
        ),
        b,
        format!("{} / {}", secs(first.1), secs(last.1)),
        "-".into(),
        Some(ratio),
        GOAL,
        Some(ratio <= 1.5),
    )
}

/// Every row of the table, engine by engine, from the measurements in `results` and the
/// git baselines in `base`.
pub fn table_rows(
    results: &serde_json::Map<String, Value>,
    base: &serde_json::Map<String, Value>,
) -> Vec<Value> {
    let mut rows = Vec::new();
    if let Some(t) = base.get("status") {
        rows.push(status_row(t));
    }
    let git_tree = f_in(base, "git_tree_secs");
    let git_inc = f_in(base, "git_inc_secs");
    let git_longhist = f_in(base, "git_longhist_secs");
    for (b, r) in results {
        type Rows<'a> = &'a dyn Fn(&Value) -> Vec<Value>;
        let workloads: [(&str, Rows<'_>); 11] = [
            ("tree", &|t| {
                vec![tree_row(b, t, git_tree), tree_snapshot_row(b, t, git_tree)]
            }),
            ("inc", &|t| vec![inc_row(b, t, git_inc)]),
            ("ceiling", &|t| ceiling_rows(b, t)),
            ("mem", &|t| memory_rows(b, t)),
            ("branch", &|t| vec![branch_row(b, t)]),
            ("big", &|t| big_version_rows(t, b)),
            ("sealed", &|t| sealed_rows(t, b)),
            ("history", &|t| history_rows(t, b)),
            ("restore", &|t| vec![restore_row(b, t)]),
            ("retain", &|t| crate::retention::rows(t, b)),
            ("longhist", &|t| crate::longhist::rows(t, b, git_longhist)),
        ];
        for (name, rows_of) in workloads {
            rows.extend(r.get(name).map(rows_of).unwrap_or_default());
        }
    }
    rows.retain(|r| !r.is_null());
    rows
}

fn f_in(m: &serde_json::Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

/// The row saying that workload `what` failed on `b`, if `t` holds an error.
fn error_row(what: &str, b: &str, t: &Value, goal: &str) -> Option<Value> {
    let e = t.get("error").and_then(Value::as_str)?;
    Some(row(
        what,
        b,
        format!("error: {e}"),
        "-".into(),
        None,
        goal,
        None,
    ))
}

/// msite's seconds (`t["secs"]`) against a baseline's, judged as a ratio at most `limit`
/// (`Value::Null`: a figure is missing).
fn secs_row(what: String, b: &str, m: Option<f64>, g: Option<f64>, limit: f64) -> Value {
    let (Some(m), Some(g)) = (m, g) else {
        return Value::Null;
    };
    let ratio = m / g;
    let goal = format!("≤ {limit}");
    row(
        &what,
        b,
        secs(m),
        secs(g),
        Some(ratio),
        &goal,
        Some(ratio <= limit),
    )
}

fn tree_row(b: &str, t: &Value, git: Option<f64>) -> Value {
    error_row("Tree replication", b, t, "≤ 0.5").unwrap_or_else(|| {
        let what = format!("Tree replication, {} entries (mkreplica export --history + create_from_packet vs bundle + clone --bare)", t["entries"]);
        secs_row(what, b, f(t, "secs"), git, 0.5)
    })
}

fn tree_snapshot_row(b: &str, t: &Value, git: Option<f64>) -> Value {
    error_row("Tree replication (snapshot)", b, t, "≤ 0.5").unwrap_or_else(|| {
        let what = "Tree replication from a snapshot, retention on (mkreplica export + create_from_packet vs bundle + clone --bare)".to_string();
        secs_row(what, b, f(t, "snapshot_secs"), git, 0.5)
    })
}

fn inc_row(b: &str, t: &Value, git: Option<f64>) -> Value {
    error_row("Incremental sync", b, t, "≤ 0.25").unwrap_or_else(|| {
        let what = format!(
            "Incremental sync, {} entries (export + import vs bundle BASE..HEAD + fetch)",
            t["entries"]
        );
        secs_row(what, b, f(t, "secs"), git, 0.25)
    })
}

fn restore_row(b: &str, t: &Value) -> Value {
    error_row("Restore", b, t, "≤ 2").unwrap_or_else(|| {
        let what = format!(
            "Restore of {} lost entries (restorereplica → unlock vs plain export + import)",
            t["entries"]
        );
        secs_row(what, b, f(t, "secs"), f(t, "plain_secs"), 2.0)
    })
}

/// The import ceiling, the signature checks' cost, the export rate and the empty exports.
fn ceiling_rows(b: &str, t: &Value) -> Vec<Value> {
    if let Some(e) = error_row("Import ceiling", b, t, "≥ 0.5") {
        return vec![e];
    }
    let (Some(imp), Some(raw)) = (f(t, "import_rate"), f(t, "raw_rate")) else {
        return Vec::new();
    };
    let ratio = imp / raw;
    let mut rows = vec![row(
        &format!(
            "Import ceiling, {} entries (import vs raw batched writes)",
            t["entries"]
        ),
        b,
        format!("{imp:.0} entries/s"),
        format!("{raw:.0} records/s"),
        Some(ratio),
        "≥ 0.5",
        Some(ratio >= 0.5),
    )];
    if let Some(unverified) = f(t, "import_rate_unverified") {
        let ratio = imp / unverified;
        rows.push(row(
            "Import rate with signature checks vs without (same packet)",
            b,
            format!("{imp:.0} entries/s"),
            format!("{unverified:.0} entries/s"),
            Some(ratio),
            "≥ 0.95",
            Some(ratio >= 0.95),
        ));
    }
    let bpe = f(t, "packet_bytes").unwrap_or(0.0) / f(t, "packet_entries").unwrap_or(1.0);
    let rate = f(t, "export_rate").unwrap_or(0.0);
    let shown = format!("{rate:.0} entries/s, {bpe:.0} B/entry");
    rows.push(row(
        "Export rate (same packet)",
        b,
        shown,
        "-".into(),
        None,
        "report",
        None,
    ));
    rows.extend(empty_export_rows(b, t));
    rows
}

/// The empty exports at growing history lengths. The goal is judged on stores opened afresh,
/// as each CLI command opens its store; the in-process figure (a first level never flushed)
/// is reported.
fn empty_export_rows(b: &str, t: &Value) -> Vec<Value> {
    const KINDS: [(&str, &str, bool); 3] = [
        ("secs", "Empty export (store reopened) at", true),
        (
            "secs_in_process",
            "Empty export, store as grown in process, at",
            false,
        ),
        (
            "pending_secs",
            "Empty export, restore request pending, at",
            true,
        ),
    ];
    let mut rows = Vec::new();
    for (key, label, judged) in KINDS {
        let levels: Vec<(u64, f64)> = t["empty"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| Some((l["history_entries"].as_u64()?, f(l, key)?)))
                    .collect()
            })
            .unwrap_or_default();
        if levels.is_empty() {
            continue;
        }
        let hi = levels.iter().map(|l| l.1).fold(f64::MIN, f64::max);
        let lo = levels.iter().map(|l| l.1).fold(f64::MAX, f64::min);
        let ratio = hi / lo;
        let join = |g: &dyn Fn(&(u64, f64)) -> String| {
            levels.iter().map(g).collect::<Vec<_>>().join(" / ")
        };
        let goal = if judged {
            "largest/smallest ≤ 1.5"
        } else {
            "report"
        };
        rows.push(row(
            &format!("{label} {} entries", join(&|l| l.0.to_string())),
            b,
            join(&|l| secs(l.1)),
            "-".into(),
            Some(ratio),
            goal,
            judged.then_some(ratio <= 1.5),
        ));
    }
    rows
}

/// Peak RSS of exporting and importing the memory workload's packet.
fn memory_rows(b: &str, t: &Value) -> Vec<Value> {
    if let Some(e) = error_row("Memory", b, t, "≤ 150 MiB") {
        return vec![e];
    }
    let mut rows = Vec::new();
    for side in ["export", "import"] {
        let s = &t[side];
        let Some(kib) = s["vm_hwm_kib"].as_f64() else {
            continue;
        };
        let mib = kib / 1024.0;
        let what = match side {
            "export" => format!(
                "Peak RSS, export of a {:.0} MiB packet",
                s["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
            ),
            _ => "Peak RSS, import of that packet".to_string(),
        };
        let shown = format!("{mib:.0} MiB ({})", secs(f(s, "secs").unwrap_or(0.0)));
        rows.push(row(
            &what,
            b,
            shown,
            "-".into(),
            None,
            "≤ 150 MiB",
            Some(mib <= 150.0),
        ));
    }
    rows
}

/// The status page row: the three views rendered against the JSON document alone (the page
/// must stay interactive: goal ≤ 50 ms for the three).
fn status_row(t: &Value) -> Value {
    let (Some(p), Some(j)) = (f(t, "page_secs"), f(t, "json_secs")) else {
        return row(
            "Status page",
            "-",
            "no figures".into(),
            "-".into(),
            None,
            "≤ 50 ms",
            None,
        );
    };
    row(
        &format!(
            "Status page, {} replicas: render /, /epoch, /history ({} of {} recorded packets kept, {} KiB; read in {}) vs the JSON document alone (median of {})",
            t["replicas"], t["history_records_kept"], t["recorded"],
            t["history_bytes"].as_u64().unwrap_or(0) / 1024,
            secs(f(t, "history_read_secs").unwrap_or(0.0)), t["runs"]
        ),
        "-",
        secs(p),
        secs(j),
        Some(p / j),
        "page ≤ 50 ms",
        Some(p <= 0.05),
    )
}

/// The real-history rows, each msite against git on the same commits: (what, msite's figure,
/// git's figure as JSON pointers into the result, in seconds or bytes, the ratio's limit).
const HISTORY_ROWS: [(&str, &str, &str, bool, Option<f64>); 13] = [
    (
        "sync time (export + import vs bundle + fetch)",
        "/msite/sync_secs",
        "/git/sync_secs",
        true,
        Some(0.5),
    ),
    (
        "bytes shipped by those syncs",
        "/msite/sync_bytes",
        "/git/sync_bytes",
        false,
        Some(1.0),
    ),
    (
        "creation packet vs bundle --all",
        "/msite/creation/bytes",
        "/git/creation/bytes",
        false,
        Some(1.0),
    ),
    (
        "new replica (mkreplica + create vs bundle --all + clone --bare)",
        "/msite/creation/secs",
        "/git/creation/secs",
        true,
        None,
    ),
    (
        "snapshot creation packet, retention on, vs bundle --all",
        "/msite_snapshot_creation/bytes",
        "/git/creation/bytes",
        false,
        None,
    ),
    (
        "new replica from that snapshot vs bundle --all + clone --bare",
        "/msite_snapshot_creation/secs",
        "/git/creation/secs",
        true,
        None,
    ),
    (
        "store of replica B as the syncs left it vs B's git objects after gc",
        "/store/msite_b",
        "/store/git_b_objects",
        false,
        None,
    ),
    (
        "store of replica B after `msite compact` vs B's git objects after gc",
        "/store/msite_b_compacted",
        "/store/git_b_objects",
        false,
        Some(1.5),
    ),
    (
        "`msite compact` of B vs `git gc` of B",
        "/store/msite_compact_secs",
        "/store/git_gc_secs",
        true,
        None,
    ),
    (
        "per-commit `import_tree` (+ rmname) in process vs `git add -A && git commit`, median",
        "/msite/commit_secs_median",
        "/git/commit_secs_median",
        true,
        None,
    ),
    (
        "per-commit `import_tree` (+ rmname) in process vs reading every file of the tree, median",
        "/msite/commit_secs_median",
        "/tree_read_secs_median",
        true,
        None,
    ),
    (
        "per-commit `msite import -q DIR` command vs `git add -A && git commit`, median",
        "/cli/import_secs_median",
        "/git/commit_secs_median",
        true,
        None,
    ),
    (
        "per-commit `msite import -q DIR` command vs a process reading every file of the tree, median",
        "/cli/import_secs_median",
        "/cli/read_secs_median",
        true,
        None,
    ),
];

/// The real-history rows (see [`HISTORY_ROWS`]).
fn history_rows(t: &Value, b: &str) -> Vec<Value> {
    if let Some(e) = t["error"].as_str() {
        let msg = format!("error: {e}");
        return vec![row("Real history", b, msg, "-".into(), None, "-", None)];
    }
    let num = |p: &str| t.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let show = |p: &str, is_secs: bool| match is_secs {
        true => secs(num(p)),
        false => format!("{:.2} MB", num(p) / 1e6),
    };
    let n = format!("History {} commits, {} syncs:", t["commits"], t["rounds"]);
    HISTORY_ROWS
        .iter()
        .map(|(what, ms, gs, is_secs, lim)| {
            let ratio = num(ms) / num(gs);
            let goal = lim.map_or("report".to_string(), |l| format!("≤ {l:.1}"));
            let (a, c) = (show(ms, *is_secs), show(gs, *is_secs));
            let met = lim.map(|l| ratio <= l);
            row(&format!("{n} {what}"), b, a, c, Some(ratio), &goal, met)
        })
        .collect()
}

/// The sealed-packet rows: peak RSS of sealing a packet, and of unsealing and importing it
/// against the plain import of the same content in the same run (goal: within 10 % or 16 MiB).
fn sealed_rows(t: &Value, b: &str) -> Vec<Value> {
    const GOAL: &str = "sealed ≤ plain + max(10 %, 16 MiB)";
    if let Some(e) = t["error"].as_str() {
        let e = format!("error: {e}");
        return vec![row("Sealed packet", b, e, "-".into(), None, GOAL, None)];
    }
    let mib = |v: &Value| v["vm_hwm_kib"].as_f64().unwrap_or(0.0) / 1024.0;
    let bytes = t["plain"]["export"]["bytes"].as_f64().unwrap_or(0.0) / 1048576.0;
    let (plain, sealed) = (mib(&t["plain"]["import"]), mib(&t["sealed"]["import"]));
    let seal = &t["sealed"]["seal"];
    let took = |v: &Value| secs(v["secs"].as_f64().unwrap_or(0.0));
    vec![
        row(
            &format!("Peak RSS, sealing a {bytes:.0} MiB packet (age)"),
            b,
            format!("{:.0} MiB ({})", mib(seal), took(seal)),
            "-".into(),
            None,
            "≤ 150 MiB",
            Some(mib(seal) <= 150.0),
        ),
        row(
            "Peak RSS, unsealing + import vs plain import",
            b,
            format!("{sealed:.0} MiB ({})", took(&t["sealed"]["import"])),
            format!("{plain:.0} MiB ({})", took(&t["plain"]["import"])),
            (plain > 0.0).then(|| sealed / plain),
            GOAL,
            Some(sealed <= plain + (plain * 0.1).max(16.0)),
        ),
    ]
}

/// Peak RSS of checking in, exporting and importing one big version.
fn big_version_rows(t: &Value, b: &str) -> Vec<Value> {
    if let Some(e) = t["error"].as_str() {
        let what = "Big version";
        return vec![row(
            what,
            b,
            format!("error: {e}"),
            "-".into(),
            None,
            "≤ 150 MiB",
            None,
        )];
    }
    let mib_of = |v: &Value| v.as_f64().unwrap_or(0.0) / 1048576.0;
    let size = mib_of(&t["bytes"]);
    let mut rows = Vec::new();
    for side in ["checkin", "export", "import"] {
        let s = &t[side];
        if let Some(kib) = s["vm_hwm_kib"].as_f64() {
            let mib = kib / 1024.0;
            rows.push(row(
                &format!("Peak RSS, {side} of one {size:.0} MiB version"),
                b,
                format!("{mib:.0} MiB ({})", secs(s["secs"].as_f64().unwrap_or(0.0))),
                "-".into(),
                None,
                "≤ 150 MiB",
                Some(mib <= 150.0),
            ));
        }
    }
    rows
}

/// The rows as a Markdown table.
pub fn render(rows: &[Value]) -> String {
    let mut s = String::from(
        "| workload | backend | msite | baseline | ratio | goal | met |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = r["ratio"]
            .as_f64()
            .map(|x| format!("{x:.2}"))
            .unwrap_or("-".into());
        let met = match r["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {ratio} | {} | {met} |\n",
            r["workload"].as_str().unwrap_or(""),
            r["backend"].as_str().unwrap_or(""),
            r["msite"].as_str().unwrap_or(""),
            r["baseline"].as_str().unwrap_or(""),
            r["goal"].as_str().unwrap_or(""),
        ));
    }
    s
}
