//! `msite-bench`: msite's workloads side by side with their baselines (issue 8).
//!
//! Run it through `cargo xtask bench [--quick] [--no-rocks]`, which builds it in release mode.
//! Each workload runs on every compiled-in engine; the git and raw-engine baselines run in
//! the same process run, so the ratios compare figures measured minutes apart on the same
//! machine. The table is printed as Markdown (ready for `BENCHMARKS.md`) and written as JSON
//! to `$CARGO_TARGET_DIR/msite-bench/` (default `target/msite-bench/`).
//!
//! Options: `--quick` (sizes ÷ 10), `--no-rocks`,
//! `--only tree,inc,ceiling,restore,mem,sealed,branch,big,history,ship,status`, `--runs N`, `--work-dir DIR`
//! (default: a temporary directory, removed at the end), `--history-bundle PATH` (default
//! `../shared/data/serde-history.bundle` beside the workspace), `--history-commits N` (replay
//! only the oldest N first-parent commits; `--quick` replays 250).

mod backend;
mod branch;
mod git;
mod history;
mod ship;
mod status_page;
mod util;
mod workloads;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use util::{secs, write_tree};
use workloads::{Inputs, Sizes, Work, FILE_SIZE, SMALL_FILES};

/// Command-line options.
struct Opts {
    quick: bool,
    no_rocks: bool,
    only: Option<Vec<String>>,
    runs: Option<usize>,
    work_dir: Option<PathBuf>,
    history_bundle: Option<PathBuf>,
    history_commits: Option<usize>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        quick: false,
        no_rocks: false,
        only: None,
        runs: None,
        work_dir: None,
        history_bundle: None,
        history_commits: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-rocks" => o.no_rocks = true,
            "--only" => {
                let v = it.next().context("--only needs a list")?;
                o.only = Some(v.split(',').map(str::to_string).collect());
            }
            "--runs" => {
                let v = it.next().context("--runs needs a number")?;
                o.runs = Some(v.parse().context("--runs needs a number")?);
            }
            "--work-dir" => {
                o.work_dir = Some(it.next().context("--work-dir needs a path")?.into());
            }
            "--history-bundle" => {
                o.history_bundle = Some(it.next().context("--history-bundle needs a path")?.into());
            }
            "--history-commits" => {
                let v = it.next().context("--history-commits needs a number")?;
                o.history_commits = Some(v.parse().context("--history-commits needs a number")?);
            }
            "-h" | "--help" => {
                println!(
                    "usage: msite-bench [--quick] [--no-rocks] [--only tree,inc,ceiling,restore,mem,sealed,branch,big,history,ship,status] [--runs N] [--work-dir DIR] [--history-bundle PATH] [--history-commits N]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    Ok(o)
}

/// Without `MSITE_PG_SERVER`: a scratch PostgreSQL server for this run (Unix socket only,
/// stopped when the run ends), named in `MSITE_PG_SERVER` for the stores and the child
/// processes, which inherit it.
#[cfg(feature = "postgres")]
fn scratch_postgres() -> Result<Option<msite_backends::ScratchServer>> {
    if std::env::var_os("MSITE_PG_SERVER").is_some() {
        return Ok(None);
    }
    let server = msite_backends::ScratchServer::start(Default::default())
        .context("starting a scratch PostgreSQL server")?;
    // Set before any thread or child starts.
    std::env::set_var("MSITE_PG_SERVER", server.server_conninfo());
    Ok(Some(server))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__child") {
        return workloads::child_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("__prep") {
        return workloads::prep_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("__msite") {
        // The shipping rows' daemons and commands: this binary as `msite`.
        let code = msite_cli::main_with_args(
            std::iter::once("msite".to_string()).chain(args[1..].iter().cloned()),
        );
        std::process::exit(code);
    }
    let opts = parse(&args)?;
    #[cfg(feature = "postgres")]
    let _server = scratch_postgres()?;
    let div = if opts.quick { 10 } else { 1 };
    let sizes = Sizes {
        tree_files: 100_000 / div,
        inc_checkins: 10_000 / div,
        ceiling_entries: 1_000_000 / div,
        mem_bytes: (1 << 30) / div,
        branch_versions: [1_000, 100_000 / div],
        big_bytes: (2 << 30) / div,
        runs: opts.runs.unwrap_or(3),
        empty_runs: 51,
    };
    let want = |w: &str| opts.only.as_ref().is_none_or(|o| o.iter().any(|x| x == w));
    let backends: Vec<&str> = backend::compiled()
        .into_iter()
        .filter(|b| !(opts.no_rocks && *b == "rocksdb"))
        .collect();
    let git_version = git::version()?;
    let tmp;
    let root = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("msite-bench-")
                .tempdir()
                .context("creating the work directory")?;
            tmp.path().to_path_buf()
        }
    };
    let w = Work::new(&root);
    eprintln!(
        "msite-bench: {} sizes {sizes:?}, backends {backends:?}, {git_version}, work dir {}",
        if opts.quick { "quick" } else { "full" },
        root.display()
    );

    let inputs = Inputs {
        tree: root.join("in-tree"),
        half: root.join("in-tree").join("h0"),
        small: root.join("in-small"),
    };
    let half = sizes.tree_files / 2;
    if ["tree", "inc", "restore", "ceiling"]
        .iter()
        .any(|x| want(x))
    {
        step("generating the input trees", || {
            write_tree(&inputs.half, half, FILE_SIZE, 0)?;
            write_tree(&inputs.tree.join("h1"), half, FILE_SIZE, 1)?;
            write_tree(&inputs.small, SMALL_FILES, FILE_SIZE, 2)
        })?;
    }
    let mem = root.join("in-mem");
    if want("mem") || want("sealed") {
        step("generating the memory workload's files", || {
            write_tree(&mem, sizes.mem_bytes >> 20, 1 << 20, 3)
        })?;
    }

    let history = if want("history") {
        let bundle = opts
            .history_bundle
            .clone()
            .unwrap_or_else(history::default_bundle);
        let limit = opts.history_commits.or(opts.quick.then_some(250));
        Some(step("cloning the history bundle", || {
            history::prepare(&w, &bundle, limit)
        })?)
    } else {
        None
    };

    let mut base = serde_json::Map::new();
    if want("tree") {
        let t = step("git: tree (bundle create + clone --bare)", || {
            git::tree(&root, &inputs.tree, sizes.runs)
        })?;
        base.insert("git_tree_secs".into(), json!(t));
    }
    if want("inc") {
        let t = step(
            "git: increment (fast-import, bundle base..main + fetch)",
            || {
                git::incremental(
                    &root,
                    &inputs.small,
                    sizes.inc_checkins,
                    FILE_SIZE,
                    sizes.runs,
                )
            },
        )?;
        base.insert("git_inc_secs".into(), json!(t));
    }

    if want("status") {
        let dir = root.join("status-history");
        std::fs::create_dir_all(&dir).context("creating the history directory")?;
        let t = step(
            "status page: render for 50 replicas vs the JSON document",
            || status_page::measure(&dir, 51),
        )?;
        base.insert("status".into(), t);
    }

    let mut results = serde_json::Map::new();
    for b in &backends {
        let mut r = serde_json::Map::new();
        let mut run = |name: &str, label: &str, f: &dyn Fn() -> Result<Value>| {
            if want(name) {
                let v = step(&format!("{b}: {label}"), f).unwrap_or_else(|e| {
                    eprintln!("  failed: {e:#}");
                    json!({ "error": format!("{e:#}") })
                });
                r.insert(name.to_string(), v);
            }
        };
        run(
            "tree",
            "tree replication",
            &|| with_backend!(*b, B => workloads::tree::<B>(&w, &inputs, sizes.runs)),
        );
        run(
            "inc",
            "incremental sync",
            &|| with_backend!(*b, B => workloads::incremental::<B>(&w, &inputs, sizes.inc_checkins, sizes.runs)),
        );
        run(
            "restore",
            "restore",
            &|| with_backend!(*b, B => workloads::restore::<B>(&w, &inputs)),
        );
        run(
            "ceiling",
            "import ceiling and empty exports",
            &|| with_backend!(*b, B => workloads::ceiling::<B>(&w, &inputs, &sizes)),
        );
        run(
            "branch",
            "check-in cost against branch length (through AnyStore)",
            &|| branch::checkin_levels(&w, b, &sizes.branch_versions),
        );
        run(
            "mem",
            "memory (child processes)",
            &|| with_backend!(*b, B => workloads::memory::<B>(&w, &mem)),
        );
        run(
            "sealed",
            "sealed packet vs plain, peak RSS (child processes)",
            &|| with_backend!(*b, B => workloads::sealed::<B>(&w, &mem)),
        );
        run(
            "big",
            "one big version (child processes)",
            &|| with_backend!(*b, B => workloads::big_version::<B>(&w, sizes.big_bytes)),
        );
        if let Some(h) = &history {
            run(
                "history",
                "real history replayed beside git",
                &|| with_backend!(*b, B => history::replay::<B>(&w, h)),
            );
        }
        results.insert(b.to_string(), Value::Object(r));
    }

    let mut shipping = Value::Null;
    let mut extra_rows = Vec::new();
    if want("ship") {
        let bytes = (1u64 << 30) / div;
        let t = step(
            "shipping: one large packet, msite serve vs rsync --daemon",
            || ship::throughput(&w, bytes, sizes.runs),
        );
        let i = step("shipping: three idle daemons", || {
            ship::idle(&w, if opts.quick { 20 } else { 60 })
        });
        let (t, i) = (
            t.unwrap_or_else(|e| json!({ "error": format!("{e:#}") })),
            i.unwrap_or_else(|e| json!({ "error": format!("{e:#}") })),
        );
        extra_rows = ship::rows(&t, Some(&i));
        shipping = json!({ "throughput": t, "idle": i });
    }

    let command = format!(
        "cargo xtask bench{}{}",
        if opts.quick { " --quick" } else { "" },
        if opts.no_rocks { " --no-rocks" } else { "" }
    );
    let mut rows = table_rows(&results, &base);
    rows.extend(extra_rows);
    let table = render(&rows);
    println!("\n`{command}` ({git_version}, {} cores)\n", cores());
    println!("{table}");
    let report = json!({
        "command": command, "quick": opts.quick, "git": git_version,
        "sizes": format!("{sizes:?}"), "baselines": base, "results": results,
        "shipping": shipping, "rows": rows,
    });
    let out = out_dir().join(if opts.quick {
        "results-quick.json"
    } else {
        "results.json"
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("msite-bench: wrote {}", out.display());
    Ok(())
}

/// Runs one step, printing its name and wall time to stderr.
fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("== {what}");
    let t = std::time::Instant::now();
    let v = f().with_context(|| what.to_string())?;
    eprintln!("   {:.1} s", t.elapsed().as_secs_f64());
    Ok(v)
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `$CARGO_TARGET_DIR/msite-bench`, else `target/msite-bench` at the workspace root.
fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("..")
                .join("target")
        });
    target.join("msite-bench")
}

/// One line of the table.
fn row(
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

fn f(v: &Value, k: &str) -> Option<f64> {
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

fn table_rows(
    results: &serde_json::Map<String, Value>,
    base: &serde_json::Map<String, Value>,
) -> Vec<Value> {
    let mut rows = Vec::new();
    let git_tree = base.get("git_tree_secs").and_then(Value::as_f64);
    let git_inc = base.get("git_inc_secs").and_then(Value::as_f64);
    let err = |v: &Value| v.get("error").and_then(Value::as_str).map(str::to_string);
    if let Some(t) = base.get("status") {
        rows.push(status_row(t));
    }
    for (b, r) in results {
        if let Some(t) = r.get("tree") {
            if let Some(e) = err(t) {
                rows.push(row(
                    "Tree replication",
                    b,
                    format!("error: {e}"),
                    "-".into(),
                    None,
                    "≤ 0.5",
                    None,
                ));
            } else if let (Some(m), Some(g)) = (f(t, "secs"), git_tree) {
                let ratio = m / g;
                rows.push(row(
                    &format!("Tree replication, {} entries (mkreplica export + create_from_packet vs bundle + clone --bare)", t["entries"]),
                    b, secs(m), secs(g), Some(ratio), "≤ 0.5", Some(ratio <= 0.5)));
            }
        }
        if let Some(t) = r.get("inc") {
            if let Some(e) = err(t) {
                rows.push(row(
                    "Incremental sync",
                    b,
                    format!("error: {e}"),
                    "-".into(),
                    None,
                    "≤ 0.25",
                    None,
                ));
            } else if let (Some(m), Some(g)) = (f(t, "secs"), git_inc) {
                let ratio = m / g;
                rows.push(row(
                    &format!("Incremental sync, {} entries (export + import vs bundle BASE..HEAD + fetch)", t["entries"]),
                    b, secs(m), secs(g), Some(ratio), "≤ 0.25", Some(ratio <= 0.25)));
            }
        }
        if let Some(t) = r.get("ceiling") {
            if let Some(e) = err(t) {
                rows.push(row(
                    "Import ceiling",
                    b,
                    format!("error: {e}"),
                    "-".into(),
                    None,
                    "≥ 0.5",
                    None,
                ));
            } else if let (Some(imp), Some(raw)) = (f(t, "import_rate"), f(t, "raw_rate")) {
                let ratio = imp / raw;
                rows.push(row(
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
                ));
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
                let bpe =
                    f(t, "packet_bytes").unwrap_or(0.0) / f(t, "packet_entries").unwrap_or(1.0);
                rows.push(row(
                    "Export rate (same packet)",
                    b,
                    format!(
                        "{:.0} entries/s, {bpe:.0} B/entry",
                        f(t, "export_rate").unwrap_or(0.0)
                    ),
                    "-".into(),
                    None,
                    "report",
                    None,
                ));
                // The goal is judged on stores opened afresh, as each CLI command opens its
                // store; the in-process figure (a first level never flushed) is reported.
                for (key, label, judged) in [
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
                ] {
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
                    rows.push(row(
                        &format!(
                            "{label} {} entries",
                            levels
                                .iter()
                                .map(|l| l.0.to_string())
                                .collect::<Vec<_>>()
                                .join(" / ")
                        ),
                        b,
                        levels
                            .iter()
                            .map(|l| secs(l.1))
                            .collect::<Vec<_>>()
                            .join(" / "),
                        "-".into(),
                        Some(ratio),
                        if judged {
                            "largest/smallest ≤ 1.5"
                        } else {
                            "report"
                        },
                        judged.then_some(ratio <= 1.5),
                    ));
                }
            }
        }
        if let Some(t) = r.get("mem") {
            if let Some(e) = err(t) {
                rows.push(row(
                    "Memory",
                    b,
                    format!("error: {e}"),
                    "-".into(),
                    None,
                    "≤ 150 MiB",
                    None,
                ));
            } else {
                for side in ["export", "import"] {
                    let s = &t[side];
                    if let Some(kib) = s["vm_hwm_kib"].as_f64() {
                        let mib = kib / 1024.0;
                        let what = match side {
                            "export" => format!(
                                "Peak RSS, export of a {:.0} MiB packet",
                                s["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
                            ),
                            _ => "Peak RSS, import of that packet".to_string(),
                        };
                        rows.push(row(
                            &what,
                            b,
                            format!("{mib:.0} MiB ({})", secs(f(s, "secs").unwrap_or(0.0))),
                            "-".into(),
                            None,
                            "≤ 150 MiB",
                            Some(mib <= 150.0),
                        ));
                    }
                }
            }
        }
        if let Some(t) = r.get("branch") {
            rows.push(branch_row(b, t));
        }
        if let Some(t) = r.get("big") {
            rows.extend(big_version_rows(t, b));
        }
        if let Some(t) = r.get("sealed") {
            rows.extend(sealed_rows(t, b));
        }
        if let Some(t) = r.get("history") {
            rows.extend(history_rows(t, b));
        }
        if let Some(t) = r.get("restore") {
            if let Some(e) = err(t) {
                rows.push(row(
                    "Restore",
                    b,
                    format!("error: {e}"),
                    "-".into(),
                    None,
                    "≤ 2",
                    None,
                ));
            } else if let (Some(m), Some(p)) = (f(t, "secs"), f(t, "plain_secs")) {
                let ratio = m / p;
                rows.push(row(
                    &format!("Restore of {} lost entries (restorereplica → unlock vs plain export + import)", t["entries"]),
                    b, secs(m), secs(p), Some(ratio), "≤ 2", Some(ratio <= 2.0)));
            }
        }
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
const HISTORY_ROWS: [(&str, &str, &str, bool, Option<f64>); 6] = [
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
        "store of replica B vs B's git objects after gc",
        "/store/msite_b",
        "/store/git_b_objects",
        false,
        Some(1.5),
    ),
    (
        "per-commit `import DIR` (+ rmname) vs `git add -A && git commit`, median",
        "/msite/commit_secs_median",
        "/git/commit_secs_median",
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

/// Peak RSS of checking in, exporting and importing one big version.
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

fn render(rows: &[Value]) -> String {
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
