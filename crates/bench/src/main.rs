//! `msite-bench`: msite's workloads side by side with their baselines (issue 8).
//!
//! Run it through `cargo xtask bench [--quick] [--no-rocks]`, which builds it in release mode.
//! Each workload runs on every compiled-in engine; the git and raw-engine baselines run in
//! the same process run, so the ratios compare figures measured minutes apart on the same
//! machine. The table is printed as Markdown (ready for `BENCHMARKS.md`) and written as JSON
//! to `$CARGO_TARGET_DIR/msite-bench/` (default `target/msite-bench/`).
//!
//! Options: `--quick` (sizes ÷ 10), `--no-rocks`,
//! `--only tree,inc,ceiling,restore,mem,sealed,branch,big,history,ship,status,writers,retain,longhist`, `--runs N`, `--work-dir DIR`
//! (where the run's fresh temporary directory goes, removed at the end; default: the system's
//! temporary directory), `--history-bundle PATH` (default
//! `../shared/data/serde-history.bundle` beside the workspace), `--history-commits N` (replay
//! only the oldest N first-parent commits; `--quick` replays 250).

mod backend;
mod branch;
mod git;
mod history;
mod longhist;
mod retention;
mod ship;
mod status_page;
mod table;
mod util;
mod workloads;
mod writers;

/// The allocator the `msite` binary uses, so the rows measure what operators run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use util::write_tree;
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
                    "usage: msite-bench [--quick] [--no-rocks] [--only tree,inc,ceiling,restore,mem,sealed,branch,big,history,ship,status,writers,retain,longhist] [--runs N] [--work-dir DIR] [--history-bundle PATH] [--history-commits N]"
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
    match args.first().map(String::as_str) {
        Some("__child") => return workloads::child_main(&args[1..]),
        Some("__prep") => return workloads::prep_main(&args[1..]),
        Some("__readtree") => return history::read_tree_main(&args[1..]),
        Some("__msite") => {
            // The shipping and writers rows' daemons and commands: this binary as `msite`.
            let code = msite_cli::main_with_args(
                std::iter::once("msite".to_string()).chain(args[1..].iter().cloned()),
            );
            std::process::exit(code);
        }
        _ => {}
    }
    let opts = parse(&args)?;
    #[cfg(feature = "postgres")]
    let _server = scratch_postgres()?;
    // A fresh directory each run (inside --work-dir when given), so a second run never meets
    // the first one's stores and repositories; removed at the end.
    let parent = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => std::env::temp_dir(),
    };
    let tmp = tempfile::Builder::new()
        .prefix("msite-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a work directory in {}", parent.display()))?;
    Run::new(opts, tmp.path())?.all()
}

/// One run of the benchmarks: its options, sizes, engines and work directory.
struct Run {
    opts: Opts,
    sizes: Sizes,
    backends: Vec<&'static str>,
    git_version: String,
    root: PathBuf,
    w: Work,
}

impl Run {
    fn new(opts: Opts, root: &Path) -> Result<Run> {
        let div = if opts.quick { 10 } else { 1 };
        let sizes = Sizes {
            tree_files: 100_000 / div,
            inc_checkins: 10_000 / div,
            ceiling_entries: 1_000_000 / div,
            mem_bytes: (1 << 30) / div,
            branch_versions: [1_000, 100_000 / div],
            long_history: longhist::Shape {
                files: 50_000 / div,
                rounds: 20,
            },
            big_bytes: (2 << 30) / div,
            runs: opts.runs.unwrap_or(3),
            empty_runs: 51,
        };
        let backends = backend::compiled()
            .into_iter()
            .filter(|b| !(opts.no_rocks && *b == "rocksdb"))
            .collect();
        Ok(Run {
            sizes,
            backends,
            git_version: git::version()?,
            root: root.to_path_buf(),
            w: Work::new(root),
            opts,
        })
    }

    fn want(&self, w: &str) -> bool {
        self.opts
            .only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == w))
    }

    fn inputs(&self) -> Inputs {
        Inputs {
            tree: self.root.join("in-tree"),
            half: self.root.join("in-tree").join("h0"),
            small: self.root.join("in-small"),
        }
    }

    /// Every selected workload, then the table and the JSON report.
    fn all(&self) -> Result<()> {
        eprintln!(
            "msite-bench: {} sizes {:?}, backends {:?}, {}, work dir {}",
            if self.opts.quick { "quick" } else { "full" },
            self.sizes,
            self.backends,
            self.git_version,
            self.root.display()
        );
        self.generate_inputs()?;
        let history = self.prepare_history()?;
        let base = self.baselines()?;
        let results = self.engines(history.as_ref());
        let (shipping, mut extra_rows) = self.shipping();
        let mut writers = serde_json::Map::new();
        if self.want("writers") {
            writers = self.measure_writers(if self.opts.quick { 5 } else { 25 });
            extra_rows.extend(writers::rows(&writers));
        }
        let mut rows = table::table_rows(&results, &base);
        rows.extend(extra_rows);
        let report = json!({
            "quick": self.opts.quick, "git": self.git_version,
            "sizes": format!("{:?}", self.sizes), "baselines": base, "results": results,
            "shipping": shipping, "writers": writers, "rows": rows,
        });
        self.report(report, &rows)
    }

    fn generate_inputs(&self) -> Result<()> {
        let inputs = self.inputs();
        let half = self.sizes.tree_files / 2;
        if ["tree", "inc", "restore", "ceiling"]
            .iter()
            .any(|x| self.want(x))
        {
            step("generating the input trees", || {
                write_tree(&inputs.half, half, FILE_SIZE, 0)?;
                write_tree(&inputs.tree.join("h1"), half, FILE_SIZE, 1)?;
                write_tree(&inputs.small, SMALL_FILES, FILE_SIZE, 2)
            })?;
        }
        if self.want("mem") || self.want("sealed") {
            step("generating the memory workload's files", || {
                write_tree(
                    &self.root.join("in-mem"),
                    self.sizes.mem_bytes >> 20,
                    1 << 20,
                    3,
                )
            })?;
        }
        Ok(())
    }

    fn prepare_history(&self) -> Result<Option<history::History>> {
        if !self.want("history") {
            return Ok(None);
        }
        let bundle = self
            .opts
            .history_bundle
            .clone()
            .unwrap_or_else(history::default_bundle);
        let limit = self.opts.history_commits.or(self.opts.quick.then_some(250));
        Ok(Some(step("cloning the history bundle", || {
            history::prepare(&self.w, &bundle, limit)
        })?))
    }

    /// The baselines every engine is compared with: git's tree and increment, and the status
    /// page's JSON document.
    fn baselines(&self) -> Result<serde_json::Map<String, Value>> {
        let (root, inputs, runs) = (&self.root, self.inputs(), self.sizes.runs);
        let mut base = serde_json::Map::new();
        if self.want("tree") {
            let t = step("git: tree (bundle create + clone --bare)", || {
                git::tree(root, &inputs.tree, runs)
            })?;
            base.insert("git_tree_secs".into(), json!(t));
        }
        if self.want("inc") {
            let what = "git: increment (fast-import, bundle base..main + fetch)";
            let n = self.sizes.inc_checkins;
            let t = step(what, || {
                git::incremental(root, &inputs.small, n, FILE_SIZE, runs)
            })?;
            base.insert("git_inc_secs".into(), json!(t));
        }
        if self.want("longhist") {
            let shape = self.sizes.long_history;
            let t = step(
                "git: long history (bundle create --all + clone --bare)",
                || longhist::git_baseline(root, shape, runs),
            )?;
            base.insert("git_longhist_secs".into(), json!(t));
        }
        if self.want("status") {
            let dir = root.join("status-history");
            std::fs::create_dir_all(&dir).context("creating the history directory")?;
            let what = "status page: render for 50 replicas vs the JSON document";
            let t = step(what, || status_page::measure(&dir, 51))?;
            base.insert("status".into(), t);
        }
        Ok(base)
    }

    /// Every per-engine workload on every engine; a failed workload becomes an error row.
    fn engines(&self, history: Option<&history::History>) -> serde_json::Map<String, Value> {
        let mut results = serde_json::Map::new();
        for b in &self.backends {
            results.insert(b.to_string(), Value::Object(self.engine(b, history)));
        }
        results
    }

    fn engine(
        &self,
        b: &str,
        history: Option<&history::History>,
    ) -> serde_json::Map<String, Value> {
        let (w, sizes, inputs) = (&self.w, &self.sizes, &self.inputs());
        let mem = self.root.join("in-mem");
        let mut r = serde_json::Map::new();
        let mut run = |name: &str, label: &str, f: &dyn Fn() -> Result<Value>| {
            if self.want(name) {
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
            &|| with_backend!(b, B => workloads::tree::<B>(w, inputs, sizes.runs)),
        );
        run(
            "inc",
            "incremental sync",
            &|| with_backend!(b, B => workloads::incremental::<B>(w, inputs, sizes.inc_checkins, sizes.runs)),
        );
        run(
            "restore",
            "restore",
            &|| with_backend!(b, B => workloads::restore::<B>(w, inputs)),
        );
        run(
            "ceiling",
            "import ceiling and empty exports",
            &|| with_backend!(b, B => workloads::ceiling::<B>(w, inputs, sizes)),
        );
        run(
            "branch",
            "check-in cost against branch length (through AnyStore)",
            &|| branch::checkin_levels(w, b, &sizes.branch_versions),
        );
        run(
            "mem",
            "memory (child processes)",
            &|| with_backend!(b, B => workloads::memory::<B>(w, &mem)),
        );
        run(
            "sealed",
            "sealed packet vs plain, peak RSS (child processes)",
            &|| with_backend!(b, B => workloads::sealed::<B>(w, &mem)),
        );
        run(
            "big",
            "one big version (child processes)",
            &|| with_backend!(b, B => workloads::big_version::<B>(w, sizes.big_bytes)),
        );
        run(
            "longhist",
            "new replicas of a tree with a long history",
            &|| with_backend!(b, B => longhist::measure::<B>(w, sizes.long_history, sizes.runs)),
        );
        run(
            "retain",
            "a week with retention on and off",
            &|| with_backend!(b, B => retention::week::<B>(w)),
        );
        if let Some(h) = history {
            run(
                "history",
                "real history replayed beside git",
                &|| with_backend!(b, B => history::replay::<B>(w, h)),
            );
        }
        r
    }

    /// The shipping rows' measurements and rows (not per engine: the daemons run on SQLite).
    fn shipping(&self) -> (Value, Vec<Value>) {
        if !self.want("ship") {
            return (Value::Null, Vec::new());
        }
        let div = if self.opts.quick { 10 } else { 1 };
        let bytes = (1u64 << 30) / div;
        let t = step(
            "shipping: one large packet, msite serve vs rsync --daemon",
            || ship::throughput(&self.w, bytes, self.sizes.runs),
        );
        let i = step("shipping: three idle daemons", || {
            ship::idle(&self.w, if self.opts.quick { 20 } else { 60 })
        });
        let err = |e: anyhow::Error| json!({ "error": format!("{e:#}") });
        let (t, i) = (t.unwrap_or_else(err), i.unwrap_or_else(err));
        let rows = ship::rows(&t, Some(&i));
        (json!({ "throughput": t, "idle": i }), rows)
    }

    /// Prints the table and writes the JSON report.
    fn report(&self, mut report: Value, rows: &[Value]) -> Result<()> {
        let command = format!(
            "cargo xtask bench{}{}",
            if self.opts.quick { " --quick" } else { "" },
            if self.opts.no_rocks {
                " --no-rocks"
            } else {
                ""
            }
        );
        println!("\n`{command}` ({}, {} cores)\n", self.git_version, cores());
        println!("{}", table::render(rows));
        report["command"] = json!(command);
        let out = out_dir().join(if self.opts.quick {
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

    /// The many-writers rows' measurements, per engine: 8 writers at once (`many`) and one
    /// writer doing the same number of check-ins (`one`).
    fn measure_writers(&self, per_writer: usize) -> serde_json::Map<String, Value> {
        const WRITERS: usize = 8;
        let w = &self.w;
        let mut out = serde_json::Map::new();
        for b in &self.backends {
            let many = step(&format!("{b}: {WRITERS} writers on one site"), || {
                writers::measure(w, b, WRITERS, per_writer)
            });
            let one = step(&format!("{b}: one writer on one site"), || {
                writers::measure(w, b, 1, WRITERS * per_writer)
            });
            let err = |e: anyhow::Error| json!({ "error": format!("{e:#}") });
            out.insert(
                b.to_string(),
                json!({ "many": many.unwrap_or_else(err), "one": one.unwrap_or_else(err) }),
            );
        }
        out
    }
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
