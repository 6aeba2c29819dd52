//! [`FaultyStore`]: a wrapper that makes any [`Store`] fail on command.
//!
//! The wrapper forwards everything to the inner store and consults a shared [`FaultPlan`] on
//! every [`Store::write`]. The plan is a cheap, clonable handle: a test (or the simulator) keeps
//! one clone and arms it while the code under test holds the store. Writes are numbered from 1
//! in the order they reach the wrapper (every call of `write` counts, whatever its outcome), so
//! a test can run an import once to count its writes and then say "fail at the k-th write of
//! this import" with [`FaultPlan::fail_nth_write`].
//!
//! # Fault modes
//!
//! * **Failed write** ([`FaultPlan::fail_nth_write`]): the n-th write from now returns an
//!   injected [`Error::Io`] and applies nothing. The store stays usable: this is a write the
//!   engine refused before touching the disk.
//! * **Failed durable write** ([`FaultPlan::fail_nth_sync_write`]): the n-th *synced* write
//!   from now is applied to the inner store, then reported as failed, as when `fsync` fails after
//!   the data reached the engine. The wrapper is then **poisoned**: every later write returns
//!   [`Error::Poisoned`] (reads still work) until [`FaultyStore::crash`] or a new wrapper around
//!   a reopened store.
//! * **Crashes** ([`FaultyStore::crash`], only with [`FaultPlan::track_crashes`] on): the
//!   wrapper keeps an undo record (the pre-images of every key a write touches) for the writes
//!   since the last synced one, and a crash rolls the inner store back on demand:
//!   [`Crash::LoseUnsynced`] loses the last unsynced writes whole, as the contract allows after
//!   a power failure; [`Crash::TearLast`] keeps only a prefix of the last write's operations.
//!   Tearing **breaks atomicity on purpose**, so protocol tests can check that they detect the
//!   damage; no real backend may ever do it.
//!
//! Tracking costs a read per key a write touches (a scan per range delete), so it is off by
//! default. At most [`JOURNAL_LIMIT`] unsynced writes are kept; older ones count as flushed.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::mem::Op;
use crate::store::{
    Error, KeyRange, KeyValue, Keyspace, PairFn, ReadView, Result, ScanIter, Store, WriteBatch,
    WriteOptions,
};

/// How many unsynced writes a crash-tracking [`FaultyStore`] can undo.
pub const JOURNAL_LIMIT: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data are counters and undo records that every update leaves consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn injected(what: String) -> Error {
    Error::Io(std::io::Error::other(format!("injected fault: {what}")))
}

#[derive(Debug, Default)]
struct PlanState {
    writes: u64,
    sync_writes: u64,
    ops: u64,
    fail_write_at: Option<u64>,
    fail_sync_write_at: Option<u64>,
    fired: u64,
    track_crashes: bool,
}

/// What the plan decided for one write.
struct Verdict {
    fail_before: bool,
    fail_after: bool,
    number: u64,
    track: bool,
}

/// A shared, clonable handle that arms faults in one or more [`FaultyStore`]s.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan(Arc<Mutex<PlanState>>);

impl FaultPlan {
    /// A plan with no faults armed and crash tracking off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make the `n`-th write from now (1: the next one) fail without applying anything.
    /// `0` counts as `1`. Replaces an earlier, unfired `fail_nth_write`.
    pub fn fail_nth_write(&self, n: u64) {
        let mut st = lock(&self.0);
        st.fail_write_at = Some(st.writes + n.max(1));
    }

    /// Make the `n`-th synced write from now apply and then fail, poisoning the store.
    /// `0` counts as `1`. Replaces an earlier, unfired `fail_nth_sync_write`.
    pub fn fail_nth_sync_write(&self, n: u64) {
        let mut st = lock(&self.0);
        st.fail_sync_write_at = Some(st.sync_writes + n.max(1));
    }

    /// Cancel every armed fault that has not fired yet.
    pub fn disarm(&self) {
        let mut st = lock(&self.0);
        st.fail_write_at = None;
        st.fail_sync_write_at = None;
    }

    /// Keep undo records so that [`FaultyStore::crash`] can lose or tear writes.
    pub fn track_crashes(&self, on: bool) {
        lock(&self.0).track_crashes = on;
    }

    /// Writes seen so far (every call of `write`, failed ones included).
    pub fn writes(&self) -> u64 {
        lock(&self.0).writes
    }

    /// Synced writes seen so far.
    pub fn sync_writes(&self) -> u64 {
        lock(&self.0).sync_writes
    }

    /// Operations (puts, deletes, range deletes) in all writes seen so far.
    pub fn ops(&self) -> u64 {
        lock(&self.0).ops
    }

    /// How many armed faults have fired.
    pub fn faults_fired(&self) -> u64 {
        lock(&self.0).fired
    }

    fn on_write(&self, sync: bool, ops: usize) -> Verdict {
        let mut st = lock(&self.0);
        st.writes += 1;
        st.ops += ops as u64;
        let number = st.writes;
        let fail_before = st.fail_write_at == Some(st.writes);
        if fail_before {
            st.fail_write_at = None;
            st.fired += 1;
        }
        let mut fail_after = false;
        if sync {
            st.sync_writes += 1;
            // A write that fails before applying never reaches the sync fault.
            if !fail_before && st.fail_sync_write_at == Some(st.sync_writes) {
                st.fail_sync_write_at = None;
                st.fired += 1;
                fail_after = true;
            }
        }
        Verdict {
            fail_before,
            fail_after,
            number,
            track: st.track_crashes,
        }
    }
}

/// How [`FaultyStore::crash`] damages the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Every acknowledged write survives.
    Clean,
    /// Lose the last `n` writes whole (`usize::MAX`: all), stopping at the last synced write,
    /// which always survives.
    LoseUnsynced(usize),
    /// Keep only the first `keep` operations of the last write, synced or not. Breaks
    /// atomicity on purpose.
    TearLast {
        /// Operations of the last write that survive.
        keep: usize,
    },
}

/// The values some keys held (`None`: absent).
type PreImage = Vec<(Keyspace, Vec<u8>, Option<Vec<u8>>)>;

/// The pre-image of the keys one write touched, and what it did.
#[derive(Debug)]
struct Undo {
    pre: PreImage,
    ops: Vec<Op>,
    sync: bool,
}

/// The batch of a [`FaultyStore`]: the inner batch plus a record of its operations.
#[derive(Debug)]
pub struct FaultyBatch<B> {
    inner: B,
    ops: Vec<Op>,
}

impl<B: WriteBatch> WriteBatch for FaultyBatch<B> {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        self.inner.put(ks, key, value);
        self.ops.push(Op::Put(ks, key.to_vec(), value.to_vec()));
    }
    fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        self.inner.delete(ks, key);
        self.ops.push(Op::Delete(ks, key.to_vec()));
    }
    fn delete_range(&mut self, ks: Keyspace, start: &[u8], end: &[u8]) {
        self.inner.delete_range(ks, start, end);
        self.ops
            .push(Op::DeleteRange(ks, start.to_vec(), end.to_vec()));
    }
    fn expect(&mut self, ks: Keyspace, key: &[u8], expected: Option<&[u8]>) {
        self.inner.expect(ks, key, expected);
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn reserve(&mut self, ops: usize, bytes: usize) {
        self.inner.reserve(ops, bytes);
    }
}

/// A [`Store`] wrapper that injects the faults a [`FaultPlan`] arms. See the
/// [module documentation](self) for the modes.
#[derive(Debug)]
pub struct FaultyStore<S: Store> {
    inner: S,
    plan: FaultPlan,
    poisoned: AtomicBool,
    /// Undo records since the last synced write (only while tracking); the mutex also
    /// serialises writes through the wrapper so pre-images are exact.
    journal: Mutex<Vec<Undo>>,
}

impl<S: Store> FaultyStore<S> {
    /// Wrap `inner`; faults are armed through `plan` (keep a clone of it).
    pub fn new(inner: S, plan: FaultPlan) -> Self {
        FaultyStore {
            inner,
            plan,
            poisoned: AtomicBool::new(false),
            journal: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwrap the store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The plan this wrapper obeys.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Whether a failed durable write has poisoned the wrapper.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Simulate a crash and restart: roll the inner store back as `crash` says, then clear the
    /// poison and the undo records. Returns how many writes were lost or torn. Fails with
    /// [`Error::Invalid`] unless [`FaultPlan::track_crashes`] was on for the damaged writes.
    pub fn crash(&self, crash: Crash) -> Result<usize> {
        let mut journal = lock(&self.journal);
        let tracking = lock(&self.plan.0).track_crashes;
        if !tracking && crash != Crash::Clean {
            return Err(Error::Invalid(
                "crash simulation needs FaultPlan::track_crashes(true)".into(),
            ));
        }
        let damaged = match crash {
            Crash::Clean => 0,
            Crash::LoseUnsynced(n) => {
                let mut lost = 0;
                while lost < n {
                    match journal.last() {
                        Some(undo) if !undo.sync => {}
                        _ => break,
                    }
                    if let Some(undo) = journal.pop() {
                        self.roll_back(&undo)?;
                        lost += 1;
                    }
                }
                lost
            }
            Crash::TearLast { keep } => match journal.pop() {
                Some(undo) => {
                    self.roll_back(&undo)?;
                    let mut b = self.inner.batch();
                    for op in undo.ops.iter().take(keep) {
                        match op {
                            Op::Put(ks, k, v) => b.put(*ks, k, v),
                            Op::Delete(ks, k) => b.delete(*ks, k),
                            Op::DeleteRange(ks, s, e) => b.delete_range(*ks, s, e),
                        }
                    }
                    self.inner.write(b, WriteOptions::SYNC)?;
                    1
                }
                None => 0,
            },
        };
        journal.clear();
        self.poisoned.store(false, Ordering::Release);
        Ok(damaged)
    }

    fn roll_back(&self, undo: &Undo) -> Result<()> {
        let mut b = self.inner.batch();
        for (ks, k, v) in &undo.pre {
            match v {
                Some(v) => b.put(*ks, k, v),
                None => b.delete(*ks, k),
            }
        }
        self.inner.write(b, WriteOptions::SYNC)
    }

    /// The values, before the write, of every key the write touches.
    fn pre_image(&self, ops: &[Op]) -> Result<PreImage> {
        let mut seen: BTreeMap<(Keyspace, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put(ks, k, _) | Op::Delete(ks, k) => {
                    if let Entry::Vacant(slot) = seen.entry((*ks, k.clone())) {
                        slot.insert(self.inner.get(*ks, k)?);
                    }
                }
                Op::DeleteRange(ks, s, e) => {
                    if s < e {
                        for kv in self
                            .inner
                            .scan(*ks, KeyRange::between(s.clone(), e.clone()))?
                        {
                            let (k, v) = kv?;
                            seen.entry((*ks, k)).or_insert(Some(v));
                        }
                    }
                }
            }
        }
        Ok(seen.into_iter().map(|((ks, k), v)| (ks, k, v)).collect())
    }
}

impl<S: Store> ReadView for FaultyStore<S> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(ks, key)
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        self.inner.scan(ks, range)
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        self.inner.last(ks, range)
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        self.inner.scan_each(ks, range, f)
    }
}

impl<S: Store> Store for FaultyStore<S> {
    type Batch = FaultyBatch<S::Batch>;
    type Snapshot<'a> = S::Snapshot<'a>;

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    fn batch(&self) -> Self::Batch {
        FaultyBatch {
            inner: self.inner.batch(),
            ops: Vec::new(),
        }
    }

    fn write(&self, batch: Self::Batch, opts: WriteOptions) -> Result<()> {
        let mut journal = lock(&self.journal);
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let verdict = self.plan.on_write(opts.sync, batch.ops.len());
        if verdict.fail_before {
            return Err(injected(format!(
                "write {} failed before applying",
                verdict.number
            )));
        }
        let pre = if verdict.track {
            Some(self.pre_image(&batch.ops)?)
        } else {
            None
        };
        self.inner.write(batch.inner, opts)?;
        match pre {
            Some(pre) => {
                if opts.sync {
                    journal.clear();
                } else if journal.len() >= JOURNAL_LIMIT {
                    journal.remove(0);
                }
                journal.push(Undo {
                    pre,
                    ops: batch.ops,
                    sync: opts.sync,
                });
            }
            None => journal.clear(),
        }
        if verdict.fail_after {
            self.poisoned.store(true, Ordering::Release);
            return Err(injected(format!(
                "durable write {} applied, then its sync failed",
                verdict.number
            )));
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Self::Snapshot<'_>> {
        self.inner.snapshot()
    }

    fn backup(&self, dest: &Path) -> Result<()> {
        self.inner.backup(dest)
    }

    fn check_integrity(&self) -> Result<()> {
        self.inner.check_integrity()
    }

    fn compact(&self) -> Result<()> {
        self.inner.compact()
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.inner.size_on_disk()
    }

    fn restore_backup(backup: &Path, dest: &Path) -> Result<()> {
        S::restore_backup(backup, dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreExt;
    use crate::testkit::MemStore;

    fn dump(s: &impl ReadView) -> Vec<(Vec<u8>, Vec<u8>)> {
        s.scan(Keyspace::State, KeyRange::all())
            .unwrap()
            .map(|kv| kv.unwrap())
            .collect()
    }

    #[test]
    fn nth_write_fails_without_applying_and_counts() {
        let plan = FaultPlan::new();
        let s = FaultyStore::new(MemStore::new(), plan.clone());
        s.put_one(Keyspace::State, b"a", b"1", WriteOptions::NO_SYNC)
            .unwrap();
        plan.fail_nth_write(2);
        s.put_one(Keyspace::State, b"b", b"2", WriteOptions::NO_SYNC)
            .unwrap();
        let err = s
            .put_one(Keyspace::State, b"c", b"3", WriteOptions::SYNC)
            .unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err}");
        s.put_one(Keyspace::State, b"d", b"4", WriteOptions::SYNC)
            .unwrap();
        assert_eq!(
            dump(&s),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
                (b"d".to_vec(), b"4".to_vec())
            ]
        );
        assert_eq!(
            (
                plan.writes(),
                plan.sync_writes(),
                plan.ops(),
                plan.faults_fired()
            ),
            (4, 2, 4, 1)
        );
    }

    #[test]
    fn lose_unsynced_stops_at_the_last_synced_write() {
        let plan = FaultPlan::new();
        plan.track_crashes(true);
        let s = FaultyStore::new(MemStore::new(), plan.clone());
        s.put_one(Keyspace::State, b"a", b"1", WriteOptions::SYNC)
            .unwrap();
        s.put_one(Keyspace::State, b"a", b"2", WriteOptions::NO_SYNC)
            .unwrap();
        let mut b = s.batch();
        b.delete_range(Keyspace::State, b"", b"z");
        b.put(Keyspace::State, b"b", b"3");
        s.write(b, WriteOptions::NO_SYNC).unwrap();
        assert_eq!(s.crash(Crash::LoseUnsynced(usize::MAX)).unwrap(), 2);
        assert_eq!(dump(&s), vec![(b"a".to_vec(), b"1".to_vec())]);
    }

    #[test]
    fn tear_keeps_a_prefix_of_the_last_write() {
        let plan = FaultPlan::new();
        plan.track_crashes(true);
        let s = FaultyStore::new(MemStore::new(), plan.clone());
        s.put_one(Keyspace::State, b"x", b"0", WriteOptions::SYNC)
            .unwrap();
        let mut b = s.batch();
        b.put(Keyspace::State, b"a", b"1");
        b.delete(Keyspace::State, b"x");
        b.put(Keyspace::State, b"c", b"3");
        s.write(b, WriteOptions::SYNC).unwrap();
        assert_eq!(s.crash(Crash::TearLast { keep: 1 }).unwrap(), 1);
        assert_eq!(
            dump(&s),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"x".to_vec(), b"0".to_vec())
            ]
        );
    }

    #[test]
    fn crash_without_tracking_is_refused() {
        let s = FaultyStore::new(MemStore::new(), FaultPlan::new());
        assert!(matches!(
            s.crash(Crash::TearLast { keep: 0 }),
            Err(Error::Invalid(_))
        ));
    }
}
