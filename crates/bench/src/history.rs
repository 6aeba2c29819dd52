//! The real-history workload (issue 19): the first-parent history of a git bundle (by default
//! `../shared/data/serde-history.bundle`, serde's history) replayed commit by commit, at msite
//! and at git side by side in the same loop.
//!
//! For each commit the tree is checked out into one work directory; msite's site A takes it
//! with `import_tree` (what `msite import DIR` runs) plus `rmname` for every file the commit
//! deleted, and git's repository A takes the same directory with `git add -A && git commit`.
//! Every [`SYNC_EVERY`] commits (and after the last) A's changes go to B: msite exports for B
//! and B imports (B's acknowledgement back to A is exchanged untimed, its bytes reported), git
//! bundles `LAST..main` and B fetches it. At the end a new replica is made from the whole
//! history (mkreplica packet + `create_from_packet` against `git bundle create --all` +
//! `git clone --bare`), then, with retention on at A, one from a snapshot of A's object base
//! (what `msite mkreplica export` writes by default), and B's store is measured against B's
//! git objects after `git gc`, as the syncs left it and after `msite compact` (the engine's
//! compaction, timed against the gc).
//! Each commit's check-in is also set against reading every file of its tree (the floor of
//! any `import DIR` that looks at the files), timed just before it.
//!
//! The same tree also goes through the command line, as a user's commits would: a third site
//! C (a CLI site on the same engine) runs `msite import -q DIR` as a process at every commit
//! (files the commit deleted stay elements there: the row times the import alone), set
//! against a process of this binary that only reads every file of the tree (`__readtree`, the
//! same executable, so process start-up is on both sides).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use msite_core::store::Store;
use msite_core::{ExportOutcome, ImportOutcome, Incoming, Replica};
use serde_json::{json, Value};

use crate::backend::Backend;
use crate::git;
use crate::util::{dir_bytes, median, msite, timed};
use crate::workloads::Work;

/// Commits between two syncs from A to B.
pub const SYNC_EVERY: usize = 100;

/// The default bundle: the serde history kept beside the workspace.
pub fn default_bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/serde-history.bundle")
}

/// What one replay measured, on one side (msite or git).
#[derive(Default)]
struct Side {
    commit_secs: Vec<f64>,
    sync_secs: f64,
    sync_bytes: u64,
}

/// The replayed history: a bare clone of the bundle and its first-parent commits, oldest first.
pub struct History {
    src: PathBuf,
    commits: Vec<String>,
}

/// Clones `bundle` under `w` and lists its first-parent line, keeping at most `limit` commits
/// (the oldest).
pub fn prepare(w: &Work, bundle: &Path, limit: Option<usize>) -> Result<History> {
    if !bundle.is_file() {
        bail!(
            "the history bundle {} is missing (pass --history-bundle PATH)",
            bundle.display()
        );
    }
    let src = w.fresh("hist-src.git");
    let (b, s) = (utf8(bundle)?, utf8(&src)?);
    git::run(Path::new("/"), &["clone", "-q", "--bare", b, s])?;
    let list = git::output(&src, &["rev-list", "--first-parent", "--reverse", "HEAD"])?;
    let mut commits: Vec<String> = list.lines().map(str::to_string).collect();
    if let Some(n) = limit {
        commits.truncate(n);
    }
    if commits.is_empty() {
        bail!("the history bundle {} has no commits", bundle.display());
    }
    Ok(History { src, commits })
}

fn utf8(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// The regular files under `dir`, relative, `/`-separated (what `import_tree` checks in).
fn files_under(dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e.with_context(|| format!("reading {}", d.display()))?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let p = e.path();
                let rel = p
                    .strip_prefix(dir)
                    .context("a walked file outside its tree")?;
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    Ok(out)
}

/// The files under `dir` (see [`files_under`]), each read whole: what any import of the tree
/// that looks at every file costs at least.
fn read_tree(dir: &Path) -> Result<BTreeSet<String>> {
    let files = files_under(dir)?;
    for f in &files {
        let p = dir.join(f);
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    }
    Ok(files)
}

/// `__readtree DIR`: reads every file under `DIR` (see [`read_tree`]), as a process.
pub fn read_tree_main(args: &[String]) -> Result<()> {
    let [dir] = args else {
        bail!("usage: __readtree DIR");
    };
    read_tree(Path::new(dir))?;
    Ok(())
}

/// The command-line site C: `msite import -q DIR` per commit, and a process reading the tree.
struct CliSite {
    dir: PathBuf,
    /// This binary, run as `__readtree`.
    exe: PathBuf,
    import_secs: Vec<f64>,
    read_secs: Vec<f64>,
}

impl CliSite {
    fn init(w: &Work, backend: &str) -> Result<Self> {
        let dir = w.fresh("hist-cli");
        std::fs::create_dir_all(&dir)?;
        let args = [
            "init",
            "c",
            "--family",
            "cli",
            "--replica",
            "c",
            "--backend",
            backend,
        ];
        msite(&dir, &args)?;
        Ok(CliSite {
            dir,
            exe: std::env::current_exe()?,
            import_secs: Vec::new(),
            read_secs: Vec::new(),
        })
    }

    /// Times `msite import -q wt` and then a process reading every file of `wt`.
    fn commit(&mut self, wt: &str) -> Result<()> {
        let (_, t) = timed(|| msite(&self.dir, &["-C", "c", "import", "-q", wt]))?;
        self.import_secs.push(t.as_secs_f64());
        let ((), t) = timed(|| {
            let st = std::process::Command::new(&self.exe)
                .args(["__readtree", wt])
                .status()?;
            anyhow::ensure!(st.success(), "__readtree {wt} failed");
            Ok(())
        })?;
        self.read_secs.push(t.as_secs_f64());
        Ok(())
    }

    fn json(self) -> Value {
        json!({
            "import_secs_median": median(self.import_secs),
            "read_secs_median": median(self.read_secs),
        })
    }
}

/// The bytes of a written packet and its part files.
fn written(out: &ExportOutcome) -> Result<(Vec<PathBuf>, u64)> {
    match out {
        ExportOutcome::Written { parts, bytes, .. } => Ok((parts.clone(), *bytes)),
        ExportOutcome::Nothing => bail!("the export wrote no packet"),
    }
}

/// Exports from `from` for `to` and imports there; the packet's bytes (0 when nothing to send).
fn ship<S: msite_core::store::Store>(w: &Work, from: &Replica<S>, to: &Replica<S>) -> Result<u64> {
    let pkt = w.fresh("hist-pkt");
    let out = from.export_to_dir(&to.id(), &pkt, None).context("export")?;
    let bytes = match out {
        ExportOutcome::Nothing => 0,
        ref o => {
            let (parts, bytes) = written(o)?;
            match to.import(Incoming::from_files(&parts)?).context("import")? {
                ImportOutcome::Applied { .. } => bytes,
                other => bail!("a history packet was not applied: {other:?}"),
            }
        }
    };
    let _ = std::fs::remove_dir_all(&pkt);
    Ok(bytes)
}

/// The git repositories of one replay: A (work tree = the checkout) and B (bare, fetching).
struct GitPair {
    a: PathBuf,
    b: PathBuf,
    wt: String,
    /// The commit B holds (`None` before the first sync).
    synced: Option<String>,
}

impl GitPair {
    fn new(w: &Work, wt: &Path) -> Result<Self> {
        let (a, b) = (w.fresh("hist-git-a.git"), w.fresh("hist-git-b.git"));
        for r in [&a, &b] {
            git::run(Path::new("/"), &["init", "-q", "--bare", utf8(r)?])?;
        }
        Ok(GitPair {
            a,
            b,
            wt: utf8(wt)?.to_string(),
            synced: None,
        })
    }

    /// `git add -A && git commit` of the work tree.
    fn commit(&self, msg: &str) -> Result<()> {
        git::run(&self.a, &["--work-tree", &self.wt, "add", "-A"])?;
        git::run(
            &self.a,
            &[
                "--work-tree",
                &self.wt,
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                msg,
            ],
        )
    }

    /// Bundles what B lacks and fetches it at B; the bundle's bytes.
    fn sync(&mut self, w: &Work) -> Result<u64> {
        let bundle = w.fresh("hist-git.bundle");
        let range = match &self.synced {
            Some(c) => format!("{c}..main"),
            None => "main".to_string(),
        };
        git::run(&self.a, &["bundle", "create", "-q", utf8(&bundle)?, &range])?;
        git::run(&self.b, &["fetch", "-q", utf8(&bundle)?, "main:main"])?;
        let bytes = std::fs::metadata(&bundle)?.len();
        let _ = std::fs::remove_file(&bundle);
        self.synced = Some(
            git::output(&self.a, &["rev-parse", "main"])?
                .trim()
                .to_string(),
        );
        Ok(bytes)
    }
}

/// Checks `commit` out into the work tree (files the commit removed are removed).
fn checkout(h: &History, index: &Path, wt: &str, commit: &str) -> Result<()> {
    let out = git::git(&h.src)
        .env("GIT_INDEX_FILE", index)
        .args(["--work-tree", wt, "read-tree", "-u", "--reset", commit])
        .output()
        .context("running git read-tree")?;
    if !out.status.success() {
        bail!(
            "git read-tree {commit} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Commits the work tree at msite's A (`import_tree`, then `rmname` of the files in `gone`)
/// and at git's A, timing each into its side.
fn commit_both<'g, S: msite_core::store::Store>(
    a: &Replica<S>,
    g: &GitPair,
    wt: &Path,
    msg: &str,
    gone: impl Iterator<Item = &'g String>,
    (m, gs): (&mut Side, &mut Side),
) -> Result<()> {
    let ((), t) = timed(|| {
        a.import_tree(wt, "main", "bench", "bench", |_| {})?;
        for path in gone {
            a.rmname(path)?;
        }
        Ok(())
    })?;
    m.commit_secs.push(t.as_secs_f64());
    let ((), t) = timed(|| g.commit(msg))?;
    gs.commit_secs.push(t.as_secs_f64());
    Ok(())
}

/// The replay on engine `B`, git alongside.
pub fn replay<B: Backend>(w: &Work, h: &History) -> Result<Value> {
    let env = || std::sync::Arc::new(msite_core::SystemEnv) as std::sync::Arc<dyn msite_core::Env>;
    let (a_dir, b_dir) = (w.fresh("hist-a"), w.fresh("hist-b"));
    let a = Replica::init(B::open_store(&a_dir)?, env(), "bench", "a")?;
    let b = crate::workloads::mkreplica_at::<B>(w, &a, "b", &b_dir)?;
    ship(w, &a, &b)?;
    ship(w, &b, &a)?;
    let wt = w.fresh("hist-wt");
    std::fs::create_dir_all(&wt)?;
    let index = w.fresh("hist-index");
    let mut g = GitPair::new(w, &wt)?;
    let (mut m, mut gs) = (Side::default(), Side::default());
    let (mut ack_bytes, mut rounds, mut before) = (0u64, 0u64, BTreeSet::new());
    let mut read_secs = Vec::new();
    let mut cli = CliSite::init(w, B::NAME)?;
    // The command runs in C's directory.
    let wt_abs = std::path::absolute(&wt)?;
    for (i, c) in h.commits.iter().enumerate() {
        checkout(h, &index, utf8(&wt)?, c)?;
        let (now, t) = timed(|| read_tree(&wt))?;
        read_secs.push(t.as_secs_f64());
        commit_both(&a, &g, &wt, c, before.difference(&now), (&mut m, &mut gs))?;
        cli.commit(utf8(&wt_abs)?)?;
        before = now;
        if (i + 1) % SYNC_EVERY == 0 || i + 1 == h.commits.len() {
            rounds += 1;
            let (bytes, t) = timed(|| ship(w, &a, &b))?;
            (m.sync_bytes, m.sync_secs) = (m.sync_bytes + bytes, m.sync_secs + t.as_secs_f64());
            ack_bytes += ship(w, &b, &a)?;
            let (bytes, t) = timed(|| g.sync(w))?;
            (gs.sync_bytes, gs.sync_secs) = (gs.sync_bytes + bytes, gs.sync_secs + t.as_secs_f64());
        }
    }
    if a.digest()? != b.digest()? {
        bail!("after the replay A and B hold different states");
    }
    let history = creation::<B>(w, &a, false)?;
    crate::workloads::retention_on(&a)?;
    let snapshot = creation::<B>(w, &a, true)?;
    let git_creation = git_creation(w, &g)?;
    drop((a, b));
    let msite_b = dir_bytes(&b_dir)?;
    let ((), compact) = timed(|| Ok(B::open_store(&b_dir)?.compact()?))?;
    let ((), gc) = timed(|| git::run(&g.b, &["gc", "-q"]))?;
    let store = json!({
        "msite_a": dir_bytes(&a_dir)?, "msite_b": msite_b,
        "msite_b_compacted": dir_bytes(&b_dir)?, "msite_compact_secs": compact.as_secs_f64(),
        "msite_new": history.1, "git_b_objects": dir_bytes(&g.b.join("objects"))?,
        "git_gc_secs": gc.as_secs_f64(),
    });
    Ok(json!({
        "commits": h.commits.len(), "rounds": rounds, "store": store,
        "tree_read_secs_median": median(read_secs), "cli": cli.json(),
        "msite": side_json(&m, history.0), "msite_ack_bytes": ack_bytes,
        "msite_snapshot_creation": snapshot.0,
        "git": side_json(&gs, git_creation),
    }))
}

fn side_json(s: &Side, creation: Value) -> Value {
    json!({
        "commit_secs_total": s.commit_secs.iter().sum::<f64>(),
        "commit_secs_median": median(s.commit_secs.clone()),
        "sync_secs": s.sync_secs, "sync_bytes": s.sync_bytes, "creation": creation,
    })
}

/// A new replica from A's whole history (`snapshot` false) or from a snapshot of its object
/// base: the creation packet's bytes and the time of planning, writing and
/// `create_from_packet`; also the new store's bytes.
fn creation<B: Backend>(w: &Work, a: &Replica<B::S>, snapshot: bool) -> Result<(Value, u64)> {
    let (pkt, dir) = (w.fresh("hist-mk-pkt"), w.fresh("hist-new"));
    let name = if snapshot { "s" } else { "c" };
    let ((bytes, r), t) = timed(|| {
        let key = msite_core::SiteKey::generate(&msite_core::SystemEnv);
        let plan = match snapshot {
            true => a.plan_mkreplica_snapshot(name, &key.public())?,
            false => a.plan_mkreplica(name, &key.public())?,
        };
        let (parts, bytes) = written(&a.write_plan_to_dir(&plan, &pkt, None)?)?;
        let env = std::sync::Arc::new(msite_core::SystemEnv);
        let store = B::open_store(&dir)?;
        let r = Replica::create_from_packet(store, env, Incoming::from_files(&parts)?, &key)?;
        Ok((bytes, r))
    })?;
    if r.digest()? != a.digest()? {
        bail!("the replica made from the creation packet differs from A");
    }
    drop(r);
    let store = dir_bytes(&dir)?;
    let _ = std::fs::remove_dir_all(&pkt);
    Ok((json!({"bytes": bytes, "secs": t.as_secs_f64()}), store))
}

/// `git bundle create --all` at A plus `git clone --bare` of it: bytes and time.
fn git_creation(w: &Work, g: &GitPair) -> Result<Value> {
    let (bundle, dest) = (w.fresh("hist-git-all.bundle"), w.fresh("hist-git-new.git"));
    let (bytes, t) = timed(|| {
        git::run(&g.a, &["bundle", "create", "-q", utf8(&bundle)?, "--all"])?;
        git::run(
            Path::new("/"),
            &["clone", "-q", "--bare", utf8(&bundle)?, utf8(&dest)?],
        )?;
        Ok(std::fs::metadata(&bundle)?.len())
    })?;
    let _ = std::fs::remove_file(&bundle);
    Ok(json!({"bytes": bytes, "secs": t.as_secs_f64()}))
}
