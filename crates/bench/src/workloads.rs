//! The msite side of every workload, written once over [`Backend`] and run per engine.
//!
//! Every replica here lives in its own store directory under the work directory and uses
//! the real clock ([`SystemEnv`]); packets go through part files, as the CLI does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use msite_core::store::{Keyspace, Store, WriteBatch, WriteOptions};
use msite_core::{Env, ExportOutcome, ImportOutcome, Incoming, Replica, SystemEnv};
use serde_json::{json, Value};

use crate::backend::Backend;
use crate::util::{content, median, timed, tree_path, write_tree};

/// Sizes of one bench run (`--quick` divides them by ten).
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Files in the replicated tree (each 256 bytes).
    pub tree_files: u64,
    /// Separate single-file checkins in the increment.
    pub inc_checkins: u64,
    /// Entries imported in the ceiling workload.
    pub ceiling_entries: u64,
    /// Bytes of content in the memory workload's packet (1 MiB files).
    pub mem_bytes: u64,
    /// Versions on the one branch of each level of the check-in row (shortest, longest).
    pub branch_versions: [u64; 2],
    /// The long-history workload's tree and rounds (`--quick` divides the files).
    pub long_history: crate::longhist::Shape,
    /// Bytes of the big-version workload's one version.
    pub big_bytes: u64,
    /// Runs for whole-process medians.
    pub runs: usize,
    /// Runs for the (fast) empty-export medians.
    pub empty_runs: usize,
}

/// Size of every small file.
pub const FILE_SIZE: usize = 256;
/// Files in the small base tree (about 1k entries of history: an element and a version each).
pub const SMALL_FILES: u64 = 500;
/// Records per batch in the raw-write baseline (the same as core's import prefix commits).
pub const RAW_BATCH: u64 = 50_000;

/// The shared input trees, generated once per bench run.
pub struct Inputs {
    /// `tree_files` files in two halves `h0/` and `h1/`.
    pub tree: PathBuf,
    /// The first half of `tree` (the restore and ceiling workloads import it).
    pub half: PathBuf,
    /// 500 files: the base of the incremental workload and the 1k-entry history.
    pub small: PathBuf,
}

/// Fresh directories under the work directory.
pub struct Work {
    root: PathBuf,
    next: AtomicU64,
}

impl Work {
    /// Directories go under `root`.
    pub fn new(root: &Path) -> Self {
        Work {
            root: root.to_path_buf(),
            next: AtomicU64::new(0),
        }
    }
    /// A new, not yet existing path.
    pub fn fresh(&self, tag: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.root.join(format!("{tag}-{n}"))
    }
}

/// Removes a directory, ignoring errors (clean-up of bench data only).
fn rm(p: &Path) {
    let _ = std::fs::remove_dir_all(p);
}

pub(crate) fn env() -> Arc<dyn Env> {
    Arc::new(SystemEnv)
}

type Rep<B> = Replica<<B as Backend>::S>;

/// The part files of a written packet.
fn parts(out: &ExportOutcome) -> Result<(Vec<PathBuf>, u64, u64)> {
    match out {
        ExportOutcome::Written {
            parts,
            bytes,
            entries,
            ..
        } => Ok((parts.clone(), *bytes, *entries)),
        ExportOutcome::Nothing => bail!("the export wrote no packet"),
    }
}

/// Creates replica `name` from `a` in a fresh store.
fn mkreplica<B: Backend>(w: &Work, a: &Rep<B>, name: &str) -> Result<Rep<B>> {
    mkreplica_at::<B>(w, a, name, &w.fresh(name))
}

/// Creates replica `name` from `a` in a new store at `dir`.
pub(crate) fn mkreplica_at<B: Backend>(
    w: &Work,
    a: &Rep<B>,
    name: &str,
    dir: &Path,
) -> Result<Rep<B>> {
    mkreplica_with_env::<B>(w, a, name, dir, env())
}

/// Creates replica `name` from `a` in a new store at `dir`, with its own environment.
pub(crate) fn mkreplica_with_env<B: Backend>(
    w: &Work,
    a: &Rep<B>,
    name: &str,
    dir: &Path,
    env: Arc<dyn Env>,
) -> Result<Rep<B>> {
    let pkt = w.fresh("pkt");
    let key = msite_core::SiteKey::generate(env.as_ref());
    let plan = a
        .plan_mkreplica(name, &key.public())
        .context("plan_mkreplica")?;
    let out = a
        .write_plan_to_dir(&plan, &pkt, None)
        .context("writing the creation packet")?;
    let (files, _, _) = parts(&out)?;
    let store = B::open_store(dir)?;
    let r = Replica::create_from_packet(store, env, Incoming::from_files(&files)?, &key)
        .context("create_from_packet")?;
    rm(&pkt);
    Ok(r)
}

/// Exports from `a` to `b` and imports there; `None` when there was nothing to send.
fn transfer<S: Store>(w: &Work, a: &Replica<S>, b: &Replica<S>) -> Result<Option<ImportOutcome>> {
    let pkt = w.fresh("pkt");
    let out = a.export_to_dir(&b.id(), &pkt, None).context("export")?;
    let res = match out {
        ExportOutcome::Nothing => None,
        ExportOutcome::Written { parts, .. } => {
            Some(b.import(Incoming::from_files(&parts)?).context("import")?)
        }
    };
    rm(&pkt);
    Ok(res)
}

/// Exchanges packets both ways until neither side has anything to send.
pub(crate) fn settle<S: Store>(w: &Work, a: &Replica<S>, b: &Replica<S>) -> Result<()> {
    for _ in 0..20 {
        let moved = transfer(w, a, b)?.is_some() | transfer(w, b, a)?.is_some();
        if !moved {
            return Ok(());
        }
    }
    bail!("replicas {} and {} did not settle", a.name(), b.name())
}

pub(crate) fn import_tree<S: Store>(r: &Replica<S>, dir: &Path) -> Result<()> {
    r.import_tree(dir, "main", "bench", "bench", |_| {})
        .with_context(|| format!("import_tree {}", dir.display()))?;
    Ok(())
}

/// Tree replication: `inputs.tree` checked in at A; each run times a new replica both ways:
/// the history creation packet (`plan_mkreplica`, `--history`) and the snapshot one
/// (`plan_mkreplica_snapshot`, the default), each written at A plus `create_from_packet` into
/// a new store.
pub fn tree<B: Backend>(w: &Work, inputs: &Inputs, runs: usize) -> Result<Value> {
    let a: Rep<B> = Replica::init(B::open_store(&w.fresh("tree-a"))?, env(), "bench", "a")?;
    let ((), setup) = timed(|| import_tree(&a, &inputs.tree))?;
    retention_on(&a)?;
    let mut hist = Creations::default();
    let mut snap = Creations::default();
    for k in 0..runs {
        hist.add(create_once::<B>(w, &a, &format!("h{k}"), false)?);
        snap.add(create_once::<B>(w, &a, &format!("s{k}"), true)?);
    }
    Ok(json!({
        "secs": median(hist.total), "export_secs": median(hist.exp), "import_secs": median(hist.imp),
        "packet_bytes": hist.bytes, "entries": hist.entries, "runs": runs,
        "snapshot_secs": median(snap.total), "snapshot_export_secs": median(snap.exp),
        "snapshot_import_secs": median(snap.imp), "snapshot_packet_bytes": snap.bytes,
        "setup_import_tree_secs": setup.as_secs_f64(),
    }))
}

/// Turns retention on at the creator of the snapshot rows (a restore window of 0): its
/// snapshots then leave out the entries every other sibling holds (docs/protocol.md §7). With
/// retention off a snapshot carries the whole oplog, which the creator keeps for a sibling
/// restored from any backup. The history creation is unchanged (nothing is scrubbed).
pub(crate) fn retention_on<S: msite_core::store::Store>(a: &Replica<S>) -> Result<()> {
    a.set_retention_window(Some(0))?;
    Ok(())
}

/// The timings of one way of making replicas, over the runs.
#[derive(Default)]
pub(crate) struct Creations {
    pub total: Vec<f64>,
    pub exp: Vec<f64>,
    pub imp: Vec<f64>,
    pub bytes: u64,
    pub entries: u64,
}

impl Creations {
    pub fn add(
        &mut self,
        (te, ti, bytes, entries): (std::time::Duration, std::time::Duration, u64, u64),
    ) {
        self.exp.push(te.as_secs_f64());
        self.imp.push(ti.as_secs_f64());
        self.total.push((te + ti).as_secs_f64());
        (self.bytes, self.entries) = (bytes, entries);
    }
}

/// Makes replica `name` of `a` once (from a snapshot or the history): the export's and the
/// import's time, the packet's bytes and entries.
pub(crate) fn create_once<B: Backend>(
    w: &Work,
    a: &Rep<B>,
    name: &str,
    snapshot: bool,
) -> Result<(std::time::Duration, std::time::Duration, u64, u64)> {
    let pkt = w.fresh("pkt");
    let key = msite_core::SiteKey::generate(&msite_core::SystemEnv);
    // What came before (the tree's import, the last creation's entry) leaves RocksDB
    // compactions that ran into the export and the import, a core each (perf, stop 41).
    B::quiesce(a.store())?;
    crate::util::settle_disk()?;
    let (files, te) = timed(|| {
        let plan = match snapshot {
            true => a.plan_mkreplica_snapshot(name, &key.public())?,
            false => a.plan_mkreplica(name, &key.public())?,
        };
        let out = a.write_plan_to_dir(&plan, &pkt, None)?;
        parts(&out)
    })?;
    let dir = w.fresh("tree-b");
    let (b, ti) = timed(|| {
        let store = B::open_store(&dir)?;
        Ok(Replica::create_from_packet(
            store,
            env(),
            Incoming::from_files(&files.0)?,
            &key,
        )?)
    })?;
    drop(b);
    rm(&pkt);
    rm(&dir);
    Ok((te, ti, files.1, files.2))
}

/// Incremental sync: `n` separate checkins at A after a base that every receiver holds;
/// each run times export at A plus import at one receiver (one receiver per run).
pub fn incremental<B: Backend>(w: &Work, inputs: &Inputs, n: u64, runs: usize) -> Result<Value> {
    let a: Rep<B> = Replica::init(B::open_store(&w.fresh("inc-a"))?, env(), "bench", "a")?;
    import_tree(&a, &inputs.small)?;
    let mut recv = Vec::new();
    for k in 0..runs {
        recv.push(mkreplica::<B>(w, &a, &format!("b{k}"))?);
    }
    for b in &recv {
        settle(w, &a, b)?;
    }
    let ((), checkins) = timed(|| {
        for i in 0..n {
            a.checkin(
                &format!("inc/{}", tree_path(i)),
                "main",
                &content(0xfa57 << 32 | i, FILE_SIZE),
                "bench",
                "",
            )?;
        }
        Ok(())
    })?;
    let (mut total, mut exp, mut imp) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bytes, mut entries) = (0, 0);
    for b in &recv {
        let pkt = w.fresh("pkt");
        let (files, te) = timed(|| parts(&a.export_to_dir(&b.id(), &pkt, None)?))?;
        let (out, ti) = timed(|| Ok(b.import(Incoming::from_files(&files.0)?)?))?;
        if !matches!(out, ImportOutcome::Applied { .. }) {
            bail!("the increment was not applied: {out:?}");
        }
        (bytes, entries) = (files.1, files.2);
        exp.push(te.as_secs_f64());
        imp.push(ti.as_secs_f64());
        total.push((te + ti).as_secs_f64());
        rm(&pkt);
    }
    Ok(json!({
        "secs": median(total), "export_secs": median(exp), "import_secs": median(imp),
        "packet_bytes": bytes, "entries": entries, "runs": runs,
        "setup_checkins_per_sec": n as f64 / checkins.as_secs_f64(),
    }))
}

/// Restore: R sends 100k entries (`inputs.half`) to S after a backup was taken; R is restored
/// from it and recovers them with `restorereplica`. Times the recovery (restorereplica to
/// unlock) against the plain transfer (export + import) of the same entries.
pub fn restore<B: Backend>(w: &Work, inputs: &Inputs) -> Result<Value> {
    let s: Rep<B> = Replica::init(B::open_store(&w.fresh("rst-s"))?, env(), "bench", "s")?;
    let r = mkreplica::<B>(w, &s, "r")?;
    settle(w, &s, &r)?;
    let bk = w.fresh("rst-backup");
    r.store().backup(&bk).context("backup")?;
    import_tree(&r, &inputs.half)?;
    let lost = r.own_row()?.get(&r.id());
    let (plain, t_plain) = timed(|| transfer(w, &r, &s))?;
    let applied = match plain {
        Some(ImportOutcome::Applied { applied, .. }) => applied,
        other => bail!("the plain transfer was not applied: {other:?}"),
    };
    drop(r);
    let dest = w.fresh("rst-r2");
    <B::S as Store>::restore_backup(&bk, &dest).context("restore_backup")?;
    let r2: Rep<B> = Replica::open(B::open_store(&dest)?, env())?;
    r2.mark_restored()?;
    let (rounds, t_restore) = timed(|| {
        r2.restorereplica(&[], false)?;
        for round in 1..=10 {
            transfer(w, &r2, &s)?;
            if let Some(ImportOutcome::Applied { unlocked: true, .. }) = transfer(w, &s, &r2)? {
                return Ok(round);
            }
        }
        bail!("the restored replica did not unlock in 10 rounds")
    })?;
    let recovered = r2.own_row()?.get(&r2.id());
    if recovered <= lost {
        bail!("restore finished holding {recovered} own entries, fewer than the {lost} sent");
    }
    Ok(json!({
        "secs": t_restore.as_secs_f64(), "plain_secs": t_plain.as_secs_f64(),
        "entries": applied, "rounds": rounds,
    }))
}

/// Copies of `r`'s store, made from one backup restored once into a new directory per tag.
fn copies<B: Backend>(w: &Work, r: &Rep<B>, tags: &[&str]) -> Result<Vec<PathBuf>> {
    let bk = w.fresh("copy-backup");
    r.store().backup(&bk).context("backup")?;
    let dirs = tags
        .iter()
        .map(|tag| {
            let dir = w.fresh(tag);
            <B::S as Store>::restore_backup(&bk, &dir).context("restore_backup")?;
            Ok(dir)
        })
        .collect::<Result<Vec<_>>>()?;
    rm(&bk);
    Ok(dirs)
}

/// Times one export from `a` to `target`; says what it wrote.
fn one_export<S: Store>(
    w: &Work,
    a: &Replica<S>,
    target: &msite_core::ReplicaId,
) -> Result<(f64, String)> {
    let pkt = w.fresh("pkt");
    let (out, d) = timed(|| Ok(a.export_to_dir(target, &pkt, None)?))?;
    rm(&pkt);
    let what = match out {
        ExportOutcome::Written {
            entries, reason, ..
        } => format!("{reason} packet, {entries} entries"),
        ExportOutcome::Nothing => "nothing".to_string(),
    };
    Ok((d.as_secs_f64(), what))
}

/// One history size of the empty-export row, kept for the interleaved timing at the end: a
/// copy of A made when A held `history` entries and was settled with `target`, and a second
/// copy that imported a sibling's restore request.
struct EmptyLevel {
    history: u64,
    target: msite_core::ReplicaId,
    plain_dir: PathBuf,
    pending_dir: PathBuf,
    /// Median of exports timed on A itself, back to back, as this process grew it.
    in_process: f64,
}

/// Settles A with `target` at this size, times `runs` exports on A as it is, and keeps two
/// backup copies of it (one with D's restore request imported) for [`time_empty_levels`].
fn empty_level<B: Backend>(
    w: &Work,
    a: &Rep<B>,
    target: &Rep<B>,
    request: &[Vec<u8>],
    runs: usize,
) -> Result<EmptyLevel> {
    settle(w, a, target)?;
    B::quiesce(target.store())?;
    B::quiesce(a.store())?;
    let mut t = Vec::new();
    for _ in 0..runs {
        t.push(one_export(w, a, &target.id())?.0);
    }
    let mut dirs = copies::<B>(w, a, &["empty-plain", "empty-pending"])?;
    let (pending_dir, plain_dir) = (dirs.remove(1), dirs.remove(0));
    let a2: Rep<B> = Replica::open(B::open_store(&pending_dir)?, env())?;
    a2.import(Incoming::from_parts(request.to_vec(), "restore request")?)
        .context("importing the restore request")?;
    if a2.held_requests()?.is_empty() {
        bail!("the copy of A holds no restore request");
    }
    Ok(EmptyLevel {
        history: a.last_lsn()?,
        target: target.id(),
        plain_dir,
        pending_dir,
        in_process: median(t),
    })
}

/// Times the empty exports of every level on stores opened afresh, as each CLI command opens
/// its store, in interleaved rounds (one export per level per round): a burst of load on this
/// shared machine then slows every level alike instead of one level's whole series, which is
/// what moved this row's ratio between runs when each level was timed in one go. Background
/// flushes and compactions are waited for first. The plain copies are timed first, then the
/// copies with a restore request pending (whose exports write and sync a packet).
fn time_empty_levels<B: Backend>(w: &Work, levels: &[EmptyLevel], rounds: usize) -> Result<Value> {
    let mut out: Vec<Value> = levels
        .iter()
        .map(|l| json!({ "history_entries": l.history, "secs_in_process": l.in_process }))
        .collect();
    for (pending, secs_key, what_key) in [
        (false, "secs", "what"),
        (true, "pending_secs", "pending_what"),
    ] {
        let reps: Vec<Rep<B>> = levels
            .iter()
            .map(|l| {
                let dir = if pending {
                    &l.pending_dir
                } else {
                    &l.plain_dir
                };
                Ok(Replica::open(B::open_store(dir)?, env())?)
            })
            .collect::<Result<_>>()?;
        for r in &reps {
            B::quiesce(r.store())?;
        }
        let mut samples = vec![Vec::new(); levels.len()];
        let mut whats = vec![String::new(); levels.len()];
        for _ in 0..rounds {
            for (i, (r, l)) in reps.iter().zip(levels).enumerate() {
                let (secs, what) = one_export(w, r, &l.target)?;
                samples[i].push(secs);
                whats[i] = what;
            }
        }
        for (i, o) in out.iter_mut().enumerate() {
            o[secs_key] = json!(median(std::mem::take(&mut samples[i])));
            o[what_key] = json!(whats[i]);
        }
    }
    for l in levels {
        rm(&l.plain_dir);
        rm(&l.pending_dir);
    }
    Ok(Value::Array(out))
}

/// Import ceiling and empty exports on one growing replica A:
/// 1k entries (settled with B) → `tree_files` entries (settled with B) → `ceiling_entries`
/// entries, all sent in one packet to C (created empty at the start; the ceiling), settled.
/// Empty exports are timed at each of the three sizes. Rewrites `inputs.half` (last user).
pub fn ceiling<B: Backend>(w: &Work, inputs: &Inputs, sizes: &Sizes) -> Result<Value> {
    let a: Rep<B> = Replica::init(B::open_store(&w.fresh("ceil-a"))?, env(), "bench", "a")?;
    let b = mkreplica::<B>(w, &a, "b")?;
    let c = mkreplica::<B>(w, &a, "c")?;
    let d = mkreplica::<B>(w, &a, "d")?;
    for r in [&b, &c, &d] {
        settle(w, &a, r)?;
    }
    // D's restore request, built once from a restored copy of D.
    let ddir = copies::<B>(w, &d, &["ceil-d2"])?.remove(0);
    let d2: Rep<B> = Replica::open(B::open_store(&ddir)?, env())?;
    d2.mark_restored()?;
    d2.restorereplica(&[], false)?;
    let request = d2
        .export_to_parts(&a.id(), None)?
        .context("the restored replica sent no request")?;
    drop(d2);

    let mut levels = Vec::new();
    import_tree(&a, &inputs.small)?;
    levels.push(empty_level::<B>(w, &a, &b, &request, sizes.empty_runs)?);
    import_tree(&a, &inputs.half)?;
    levels.push(empty_level::<B>(w, &a, &b, &request, sizes.empty_runs)?);
    let half = sizes.tree_files / 2;
    let mut round = 0;
    while a.last_lsn()? + half <= sizes.ceiling_entries + SMALL_FILES * 2 {
        round += 1;
        write_tree(&inputs.half, half, FILE_SIZE, 100 + round)?;
        import_tree(&a, &inputs.half)?;
    }
    let pkt = w.fresh("pkt");
    let ((files, bytes, entries), t_exp) =
        timed(|| parts(&a.export_to_dir(&c.id(), &pkt, None)?))?;
    let t_verify = verify_secs::<B>(&c, &files)?;
    let (out, t_imp) = timed(|| Ok(c.import(Incoming::from_files(&files)?)?))?;
    let applied = match out {
        ImportOutcome::Applied { applied, .. } => applied,
        other => bail!("the ceiling packet was not applied: {other:?}"),
    };
    rm(&pkt);
    levels.push(empty_level::<B>(w, &a, &c, &request, sizes.empty_runs)?);
    drop((a, b, c, d));
    let empty = time_empty_levels::<B>(w, &levels, sizes.empty_runs)?;
    let (raw_records, t_raw) = raw_writes::<B>(w, applied, false)?;
    let (_, t_raw_random) = raw_writes::<B>(w, applied, true)?;
    Ok(json!({
        "entries": applied, "export_secs": t_exp.as_secs_f64(), "import_secs": t_imp.as_secs_f64(),
        "packet_bytes": bytes, "packet_entries": entries,
        "import_rate": applied as f64 / t_imp.as_secs_f64(),
        "export_rate": entries as f64 / t_exp.as_secs_f64(),
        "raw_records": raw_records, "raw_secs": t_raw.as_secs_f64(),
        "raw_rate": raw_records as f64 / t_raw.as_secs_f64(),
        "raw_random_rate": raw_records as f64 / t_raw_random.as_secs_f64(),
        "verify_secs": t_verify,
        "import_rate_unverified": applied as f64 / (t_imp.as_secs_f64() - t_verify).max(1e-9),
        "empty": empty,
    }))
}

/// The seconds an import of the packet in `files` spends checking its signatures: the
/// sender's header signature and every origin's chain head, checked twice per import (when
/// the header is assessed and again before the entries apply), timed as the median of 21
/// checks. The per-entry comparison with the heads (one map lookup) is not included.
fn verify_secs<B: Backend>(c: &Rep<B>, files: &[PathBuf]) -> Result<f64> {
    let pkt = Incoming::from_files(files)?;
    let mut times = Vec::new();
    for _ in 0..21 {
        let (status, t) =
            timed(|| Ok(c.signature_status(&pkt.header, pkt.kind, &pkt.packet_id)?))?;
        if !matches!(status, msite_core::sync::SignatureStatus::Verified { .. }) {
            bail!("the ceiling packet's signature does not verify: {status}");
        }
        times.push(t.as_secs_f64());
    }
    Ok(2.0 * median(times))
}

/// The engine's raw batched-write rate: `n` records of 16-byte keys and 256-byte values,
/// written in batches of [`RAW_BATCH`] without sync, then one synced empty batch. Keys are
/// ascending (the engine's best case) or, with `random`, pseudo-random like msite's hashes.
fn raw_writes<B: Backend>(w: &Work, n: u64, random: bool) -> Result<(u64, std::time::Duration)> {
    let dir = w.fresh("raw");
    let store = B::open_store(&dir)?;
    let value = content(0x4a4a, FILE_SIZE);
    let ((), t) = timed(|| {
        let mut i = 0u64;
        while i < n {
            let mut batch = store.batch();
            let end = (i + RAW_BATCH).min(n);
            while i < end {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&0x6d73_6974_6562_6e63u64.to_be_bytes());
                let k = if random {
                    crate::util::splitmix(&mut i.clone())
                } else {
                    i
                };
                key[8..].copy_from_slice(&k.to_be_bytes());
                batch.put(Keyspace::Oplog, &key, &value);
                i += 1;
            }
            store.write(batch, WriteOptions::NO_SYNC)?;
        }
        store.write(store.batch(), WriteOptions::SYNC)?;
        Ok(())
    })?;
    drop(store);
    rm(&dir);
    Ok((n, t))
}

/// Memory: A holds `mem` (1 MiB files), B was created before they were checked in; the
/// export at A and the import at B each run in a child process that reports its `VmHWM`.
pub fn memory<B: Backend>(w: &Work, mem: &Path) -> Result<Value> {
    let a_dir = w.fresh("mem-a");
    let a: Rep<B> = Replica::init(B::open_store(&a_dir)?, env(), "bench", "a")?;
    let b_dir = w.fresh("mem-b");
    let b = mkreplica_at::<B>(w, &a, "b", &b_dir)?;
    settle(w, &a, &b)?;
    let b_id = b.id().to_hex();
    drop(b);
    import_tree(&a, mem)?;
    drop(a);
    let pkt = w.fresh("mem-pkt");
    let exe = std::env::current_exe().context("finding the bench executable")?;
    let export = child(
        &exe,
        &["export", B::NAME, path(&a_dir)?, &b_id, path(&pkt)?],
    )?;
    let mut args = vec![
        "import".to_string(),
        B::NAME.to_string(),
        path(&b_dir)?.into(),
    ];
    for f in crate::util::files_in(&pkt)? {
        args.push(path(&f)?.into());
    }
    let import = child(&exe, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    rm(&pkt);
    rm(&a_dir);
    rm(&b_dir);
    Ok(json!({ "export": export, "import": import }))
}

/// Sealed packets: the memory workload's packet for B, exported plain and imported by one
/// child, then the same content exported for C, sealed by a child and unsealed and imported
/// by another; each child reports its `VmHWM`, so the sealed import's peak compares with the
/// plain one of the same run.
pub fn sealed<B: Backend>(w: &Work, mem: &Path) -> Result<Value> {
    use age::secrecy::ExposeSecret;
    let a_dir = w.fresh("seal-a");
    let a: Rep<B> = Replica::init(B::open_store(&a_dir)?, env(), "bench", "a")?;
    let (b_dir, c_dir) = (w.fresh("seal-b"), w.fresh("seal-c"));
    let b = mkreplica_at::<B>(w, &a, "b", &b_dir)?;
    settle(w, &a, &b)?;
    let c = mkreplica_at::<B>(w, &a, "c", &c_dir)?;
    settle(w, &a, &c)?;
    let ids = (b.id().to_hex(), c.id().to_hex());
    drop((b, c));
    import_tree(&a, mem)?;
    drop(a);
    let exe = std::env::current_exe().context("finding the bench executable")?;
    let plain = export_import::<B>(&exe, w, &a_dir, &b_dir, &ids.0, None)?;
    let id = age::x25519::Identity::generate();
    let secret = id.to_string().expose_secret().to_string();
    let key = w.fresh("seal-key");
    std::fs::write(&key, format!("{secret}\n")).context("writing the identity")?;
    let rcpt = id.to_public().to_string();
    let sealed = export_import::<B>(&exe, w, &a_dir, &c_dir, &ids.1, Some((&rcpt, &key)))?;
    for d in [&a_dir, &b_dir, &c_dir, &key] {
        rm(d);
    }
    Ok(json!({ "plain": plain, "sealed": sealed }))
}

/// Exports from `a_dir` for `target` and imports at `to_dir`, each in a child; with `seal`
/// (recipient, identity file) a child seals the parts between, and the import unseals them.
fn export_import<B: Backend>(
    exe: &Path,
    w: &Work,
    a_dir: &Path,
    to_dir: &Path,
    target: &str,
    seal: Option<(&str, &Path)>,
) -> Result<Value> {
    let pkt = w.fresh("seal-pkt");
    let export = child(exe, &["export", B::NAME, path(a_dir)?, target, path(&pkt)?])?;
    let files: Vec<String> = crate::util::files_in(&pkt)?
        .iter()
        .map(|f| path(f).map(str::to_string))
        .collect::<Result<_>>()?;
    let mut out = json!({ "export": export });
    let mut args = vec!["import".to_string(), B::NAME.into(), path(to_dir)?.into()];
    if let Some((rcpt, key)) = seal {
        let mut s = vec!["seal".to_string(), B::NAME.into(), rcpt.into()];
        s.extend(files.iter().cloned());
        out["seal"] = child(exe, &s.iter().map(String::as_str).collect::<Vec<_>>())?;
        args[0] = "import-sealed".into();
        args.push(path(key)?.into());
    }
    args.extend(files);
    out["import"] = child(exe, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    rm(&pkt);
    Ok(out)
}

/// One big version: a sparse file of `bytes` (zeros, as a disk image or a preallocated file
/// would be) checked in at A, exported for B and imported there, each step in a child
/// process that reports its `VmHWM`.
pub fn big_version<B: Backend>(w: &Work, bytes: u64) -> Result<Value> {
    let a_dir = w.fresh("big-a");
    let a: Rep<B> = Replica::init(B::open_store(&a_dir)?, env(), "bench", "a")?;
    let b_dir = w.fresh("big-b");
    let b = mkreplica_at::<B>(w, &a, "b", &b_dir)?;
    settle(w, &a, &b)?;
    let b_id = b.id().to_hex();
    drop((a, b));
    let file = w.fresh("big-file");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(bytes))
        .with_context(|| format!("creating {}", file.display()))?;
    let exe = std::env::current_exe().context("finding the bench executable")?;
    let checkin = child(&exe, &["checkin", B::NAME, path(&a_dir)?, path(&file)?])?;
    rm(&file);
    let pkt = w.fresh("big-pkt");
    let export = child(
        &exe,
        &["export", B::NAME, path(&a_dir)?, &b_id, path(&pkt)?],
    )?;
    let mut args = vec![
        "import".to_string(),
        B::NAME.to_string(),
        path(&b_dir)?.into(),
    ];
    for f in crate::util::files_in(&pkt)? {
        args.push(path(&f)?.into());
    }
    let import = child(&exe, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    for d in [&pkt, &a_dir, &b_dir] {
        rm(d);
    }
    Ok(json!({ "bytes": bytes, "checkin": checkin, "export": export, "import": import }))
}

fn path(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// The hidden `__prep BACKEND FILES DIR [ROUNDS [FILE_SIZE]]` subcommand (for profiling the
/// import): replica A at `DIR/a` with a tree of FILES files of FILE_SIZE bytes (default 256)
/// checked in (then ROUNDS more times with new content, like the import ceiling's workload),
/// an empty replica B at `DIR/b` created before, and A's update packet for B in `DIR/pkt`.
/// Prints B's id; then run
/// `valgrind --tool=callgrind msite-bench __child import BACKEND DIR/b DIR/pkt/*`.
/// `__prep rocks 1024 DIR 0 1048576` is the memory workload's packet (1 GiB of 1 MiB files).
pub fn prep_main(args: &[String]) -> Result<()> {
    let (backend, files, dir, rounds, size) = match args {
        [backend, files, dir] => (backend, files, dir, "0", "256"),
        [backend, files, dir, rounds] => (backend, files, dir, rounds.as_str(), "256"),
        [backend, files, dir, rounds, size] => {
            (backend, files, dir, rounds.as_str(), size.as_str())
        }
        _ => bail!("usage: __prep BACKEND FILES DIR [ROUNDS [FILE_SIZE]]"),
    };
    let files: u64 = files.parse().context("FILES must be a number")?;
    let rounds: u64 = rounds.parse().context("ROUNDS must be a number")?;
    let size: usize = size.parse().context("FILE_SIZE must be a number")?;
    crate::with_backend!(backend.as_str(), B => prep::<B>(files, rounds, size, Path::new(dir)))
}

fn prep<B: Backend>(files: u64, rounds: u64, size: usize, dir: &Path) -> Result<()> {
    let w = Work::new(&dir.join("tmp"));
    let a: Rep<B> = Replica::init(B::open_store(&dir.join("a"))?, env(), "bench", "a")?;
    let b = mkreplica_at::<B>(&w, &a, "b", &dir.join("b"))?;
    settle(&w, &a, &b)?;
    write_tree(&dir.join("tree"), files, size, 9)?;
    import_tree(&a, &dir.join("tree"))?;
    for round in 1..=rounds {
        write_tree(&dir.join("tree"), files, size, 9 + round)?;
        import_tree(&a, &dir.join("tree"))?;
    }
    let out = a.export_to_dir(&b.id(), &dir.join("pkt"), None)?;
    let (_, bytes, entries) = parts(&out)?;
    println!("{} {entries} entries {bytes} bytes", b.id().to_hex());
    Ok(())
}

/// Runs a hidden `__child` subcommand and parses the JSON line it prints.
fn child(exe: &Path, args: &[&str]) -> Result<Value> {
    let out = std::process::Command::new(exe)
        .arg("__child")
        .args(args)
        .output()
        .with_context(|| format!("running {} __child {}", exe.display(), args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "child `{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the child's report")
}

/// Unseals each part with the identity in `key` into a directory beside it, as `syncreplica
/// import` does, and imports the packet: one `VmHWM` for both.
fn import_sealed<B: Backend>(dir: &str, key: &str, files: &[String]) -> Result<Value> {
    let b: Rep<B> = Replica::open(B::open_store(Path::new(dir))?, env())?;
    let id = msite_cli::seal::parse_identity(&std::fs::read_to_string(key)?)?;
    let (out, t) = timed(|| {
        let mut plain = Vec::new();
        for f in files {
            let dest = PathBuf::from(format!("{f}.plain"));
            msite_cli::seal::unseal_to(Path::new(f), &dest, &id)?;
            plain.push(dest);
        }
        let out = b.import(Incoming::from_files(&plain)?)?;
        plain.iter().for_each(|p| rm(p));
        Ok(out)
    })?;
    let applied = match out {
        ImportOutcome::Applied { applied, .. } => applied,
        other => bail!("the sealed packet was not applied: {other:?}"),
    };
    Ok(json!({"secs": t.as_secs_f64(), "applied": applied,
              "vm_hwm_kib": crate::util::vm_hwm_kib()?}))
}

/// The hidden subcommand: `export BACKEND A_DIR TARGET_HEX PKT_DIR` or
/// `import BACKEND B_DIR PART...`; prints `{"secs", "vm_hwm_kib", ...}`.
pub fn child_main(args: &[String]) -> Result<()> {
    let [what, backend, rest @ ..] = args else {
        bail!("usage: __child export|import BACKEND ...");
    };
    let report = crate::with_backend!(backend.as_str(), B => child_run::<B>(what, rest))?;
    println!("{report}");
    Ok(())
}

fn child_run<B: Backend>(what: &str, rest: &[String]) -> Result<Value> {
    match (what, rest) {
        ("export", [dir, target, pkt]) => {
            let a: Rep<B> = Replica::open(B::open_store(Path::new(dir))?, env())?;
            let opened_kib = crate::util::vm_hwm_kib()?;
            let target = msite_core::ReplicaId::from_hex(target).context("bad replica id")?;
            let (out, t) = timed(|| Ok(a.export_to_dir(&target, Path::new(pkt), None)?))?;
            let (_, bytes, entries) = parts(&out)?;
            Ok(
                json!({"secs": t.as_secs_f64(), "bytes": bytes, "entries": entries,
                      "vm_hwm_kib": crate::util::vm_hwm_kib()?,
                      "vm_hwm_after_open_kib": opened_kib}),
            )
        }
        ("checkin", [dir, file]) => {
            let a: Rep<B> = Replica::open(B::open_store(Path::new(dir))?, env())?;
            let src = msite_core::content::Source::File(Path::new(file));
            let (_, t) = timed(|| Ok(a.checkin_from("big", "main", src, "bench", "")?))?;
            Ok(json!({"secs": t.as_secs_f64(), "vm_hwm_kib": crate::util::vm_hwm_kib()?}))
        }
        ("import", [dir, files @ ..]) => {
            let b: Rep<B> = Replica::open(B::open_store(Path::new(dir))?, env())?;
            let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
            let (out, t) = timed(|| Ok(b.import(Incoming::from_files(&files)?)?))?;
            let applied = match out {
                ImportOutcome::Applied { applied, .. } => applied,
                other => bail!("the packet was not applied: {other:?}"),
            };
            Ok(json!({"secs": t.as_secs_f64(), "applied": applied,
                      "vm_hwm_kib": crate::util::vm_hwm_kib()?}))
        }
        ("seal", [rcpt, files @ ..]) => {
            let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
            let names = ["bench".to_string()];
            let (_, t) = timed(|| msite_cli::seal::seal_parts(&files, std::slice::from_ref(rcpt), &names))?;
            Ok(json!({"secs": t.as_secs_f64(), "vm_hwm_kib": crate::util::vm_hwm_kib()?}))
        }
        ("import-sealed", [dir, key, files @ ..]) => import_sealed::<B>(dir, key, files),
        _ => bail!(
            "usage: __child export BACKEND DIR TARGET PKT | import BACKEND DIR PART... | checkin BACKEND DIR FILE | seal BACKEND RECIPIENT PART... | import-sealed BACKEND DIR IDENTITY PART..."
        ),
    }
}
