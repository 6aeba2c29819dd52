//! The one conformance suite for [`Store`] backends.
//!
//! Every case is a plain function `case_xxx<F: StoreFactory>(h: &Harness<F>)` that panics on a
//! violation of the contract documented in [`crate::store`]. A backend instantiates all of them
//! with one macro call in its integration-test binary:
//!
//! ```text
//! struct SqliteFactory;
//! impl msite_core::testkit::conformance::StoreFactory for SqliteFactory { /* … */ }
//!
//! mod conformance {
//!     msite_core::store_conformance_tests!(super::SqliteFactory);
//! }
//! ```
//!
//! which stamps one `#[test]` per case, so failures stay isolated and filterable by name
//! (`cargo test -p msite-store-sqlite conformance::batch_order`).
//!
//! # The factory and the harness
//!
//! A [`StoreFactory`] opens a store in a directory (creating it if needed, so the same call
//! reopens it) and can damage a closed store's files in a way the engine must detect
//! ([`StoreFactory::corrupt`]). What a backend cannot do is declared in [`Capabilities`]; a case
//! that needs a missing capability prints why it does not apply and passes, so a skip is always
//! written down in the factory, never silent.
//!
//! The [`Harness`] owns a fresh temporary directory per case. Drop order: every store a case
//! opens is a local of the case and is dropped when the case returns, before the harness (and
//! with it the directory) goes away.
//!
//! # Second processes
//!
//! Exclusive open and atomicity across a process kill need a second process that opens the
//! same store. The harness re-runs the current test binary ([`std::env::current_exe`]) with
//! `--exact <this test> --nocapture` and two environment variables
//! ([`CHILD_TEST_ENV`], [`CHILD_DIR_ENV`]). In that child, [`run`] hands the case a harness
//! whose [`Harness::child_dir`] is set; the case plays its child role and reports back through
//! lines on standard output that start with [`CHILD_REPORT_PREFIX`]. No helper binary is needed,
//! and the child runs exactly the factory the parent runs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

mod bulk;
mod compact;
mod content;

pub use bulk::*;
pub use compact::*;
pub use content::*;

use super::{FaultPlan, FaultyStore};
use crate::store::{
    Error, KeyRange, Keyspace, ReadView, Result, Store, StoreExt, WriteBatch, WriteOptions,
};

/// Environment variable naming the test a child process must run in its child role.
pub const CHILD_TEST_ENV: &str = "MSITE_CONFORMANCE_CHILD_TEST";
/// Environment variable holding the store directory a child process opens.
pub const CHILD_DIR_ENV: &str = "MSITE_CONFORMANCE_CHILD_DIR";
/// Prefix of the lines a child process reports on.
pub const CHILD_REPORT_PREFIX: &str = "msite-conformance-child: ";
/// How long a parent waits for one report of a child before failing the case. A guard
/// against hangs, not a performance assertion.
const CHILD_REPORT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a backend can do beyond the basics every store must provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The store lives in its directory: dropping it and opening the directory again gives
    /// back everything written (durability, backups that can be opened, corruption).
    pub persistent: bool,
    /// A second process can open the store directory (exclusive open across processes,
    /// atomicity across a killed process).
    pub multi_process: bool,
    /// [`StoreFactory::corrupt`] damages the files in a way the engine detects.
    pub corruption: bool,
}

impl Capabilities {
    /// Everything: what a real on-disk backend provides.
    pub const FULL: Capabilities = Capabilities {
        persistent: true,
        multi_process: true,
        corruption: true,
    };
}

/// Opens the stores under test. See the [module documentation](self).
pub trait StoreFactory: 'static {
    /// The store under test.
    type Store: Store;

    /// What the backend can do; defaults to [`Capabilities::FULL`].
    fn capabilities(&self) -> Capabilities {
        Capabilities::FULL
    }

    /// Open the store in directory `dir`, creating it if it does not exist; called again on
    /// the same directory, it reopens the store.
    fn open(&self, dir: &Path) -> Result<Self::Store>;

    /// Damage the data files of the closed store in `dir` (which holds a few thousand keys
    /// with incompressible values) so that reopening it or [`Store::check_integrity`] must
    /// report [`Error::Corruption`]. The factory may open the store itself first, e.g. to
    /// flush everything into the files it then damages.
    fn corrupt(&self, dir: &Path) -> Result<()>;
}

/// Everything a case needs: the factory and a private temporary directory.
pub struct Harness<F: StoreFactory> {
    factory: F,
    test_name: String,
    root: tempfile::TempDir,
    child_dir: Option<PathBuf>,
}

/// Run `case` for `factory`; what the macro-generated tests call. `module_path` and `name`
/// are `module_path!()` and the test function's name, which together give the test's name as
/// the test harness knows it (for re-running it in a child process).
pub fn run<F: StoreFactory>(factory: F, module_path: &str, name: &str, case: fn(&Harness<F>)) {
    let within_crate = module_path.split_once("::").map_or("", |(_, rest)| rest);
    let test_name = if within_crate.is_empty() {
        name.to_owned()
    } else {
        format!("{within_crate}::{name}")
    };
    let child_dir = match std::env::var(CHILD_TEST_ENV) {
        Ok(t) if t == test_name => std::env::var_os(CHILD_DIR_ENV).map(PathBuf::from),
        _ => None,
    };
    let root = tempfile::Builder::new()
        .prefix("msite-conformance-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let h = Harness {
        factory,
        test_name,
        root,
        child_dir,
    };
    case(&h);
}

impl<F: StoreFactory> Harness<F> {
    /// The factory.
    pub fn factory(&self) -> &F {
        &self.factory
    }

    /// The backend's capabilities.
    pub fn caps(&self) -> Capabilities {
        self.factory.capabilities()
    }

    /// The case's main store directory (not created until a store is opened there).
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("store")
    }

    /// A further path in the case's temporary directory (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Open the main store; panics if that fails.
    pub fn open(&self) -> F::Store {
        self.open_at(&self.dir())
    }

    /// Open the store in `dir`; panics if that fails.
    pub fn open_at(&self, dir: &Path) -> F::Store {
        self.factory
            .open(dir)
            .unwrap_or_else(|e| panic!("cannot open the store at {}: {e}", dir.display()))
    }

    /// In a child process started by [`Harness::spawn_child`]: the store directory to use.
    pub fn child_dir(&self) -> Option<&Path> {
        self.child_dir.as_deref()
    }

    /// In a child process: send one report line to the parent.
    pub fn report(&self, msg: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n{CHILD_REPORT_PREFIX}{msg}");
        let _ = out.flush();
    }

    /// Whether the backend has `need`; if not, say so on stderr (the case then returns).
    fn requires(&self, need: fn(&Capabilities) -> bool, what: &str) -> bool {
        let ok = need(&self.caps());
        if !ok {
            eprintln!(
                "conformance case {} does not apply: the factory declares no {what} capability",
                self.test_name
            );
        }
        ok
    }

    /// Start this very test in a child process that plays the case's child role on `dir`.
    pub fn spawn_child(&self, dir: &Path) -> ChildProcess {
        let exe =
            std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the test binary: {e}"));
        let mut child = Command::new(exe)
            .args([
                self.test_name.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_TEST_ENV, &self.test_name)
            .env(CHILD_DIR_ENV, dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the child process: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("child stdout not piped"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness may have printed "test NAME ... " on the same line.
                if let Some((_, msg)) = line.split_once(CHILD_REPORT_PREFIX) {
                    if tx.send(msg.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        ChildProcess { child, reports: rx }
    }
}

/// A child process started by [`Harness::spawn_child`].
pub struct ChildProcess {
    child: Child,
    reports: mpsc::Receiver<String>,
}

impl ChildProcess {
    /// The next report of the child; panics if the child ends without one.
    pub fn next_report(&mut self) -> String {
        match self.reports.recv_timeout(CHILD_REPORT_TIMEOUT) {
            Ok(msg) => msg,
            Err(e) => {
                let _ = self.child.kill();
                let status = self.child.wait();
                panic!("the child process sent no report ({e}); it ended with {status:?}")
            }
        }
    }

    /// Wait for the child to finish; panics unless it succeeded.
    pub fn finish(mut self) {
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for the child: {e}"));
        assert!(status.success(), "the child process failed: {status}");
    }

    /// Kill the child (SIGKILL on Unix) and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Never leave a child behind when a case panics.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Every pair of every keyspace, as `(keyspace, key) → value`.
pub type Dump = BTreeMap<(Keyspace, Vec<u8>), Vec<u8>>;

fn must<T>(r: Result<T>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// All pairs of `ks` in `range`, checking that the scan yields them in strictly increasing
/// key order and only inside the range.
pub fn scan_all(
    r: &(impl ReadView + ?Sized),
    ks: Keyspace,
    range: KeyRange,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let iter = must(r.scan(ks, range.clone()), "scan");
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for kv in iter {
        let (k, v) = must(kv, "scan item");
        assert!(
            range.contains(&k),
            "scan of {ks} over {range:?} returned {k:?}, outside the range"
        );
        if let Some((prev, _)) = out.last() {
            assert!(prev < &k, "scan of {ks} out of order: {prev:?} then {k:?}");
        }
        out.push((k, v));
    }
    out
}

fn keys_of(r: &(impl ReadView + ?Sized), ks: Keyspace, range: KeyRange) -> Vec<Vec<u8>> {
    scan_all(r, ks, range).into_iter().map(|(k, _)| k).collect()
}

/// A full dump of every keyspace.
pub fn dump(r: &(impl ReadView + ?Sized)) -> Dump {
    let mut out = Dump::new();
    for ks in Keyspace::ALL {
        for (k, v) in scan_all(r, ks, KeyRange::all()) {
            out.insert((ks, k), v);
        }
    }
    out
}

fn get(r: &(impl ReadView + ?Sized), ks: Keyspace, key: &[u8]) -> Option<Vec<u8>> {
    must(r.get(ks, key), "get")
}

fn put<S: Store>(s: &S, ks: Keyspace, key: &[u8], value: &[u8]) {
    must(s.put_one(ks, key, value, WriteOptions::NO_SYNC), "put");
}

fn write<S: Store>(s: &S, b: S::Batch, opts: WriteOptions) {
    must(s.write(b, opts), "write");
}

/// The pairs `scan_each` lends for `range` in `ks`, the first `stop_after` of them at most
/// (its callback then returns false).
fn scan_each_all(
    r: &(impl ReadView + ?Sized),
    ks: Keyspace,
    range: KeyRange,
    stop_after: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let f = &mut |k: &[u8], v: &[u8]| {
        out.push((k.to_vec(), v.to_vec()));
        out.len() < stop_after
    };
    must(r.scan_each(ks, range, f), "scan_each");
    out
}

/// A scan, `scan_each` (whole and stopped after two pairs) and `last` of `ks` over `range`,
/// and a get of `probe`, agree with `model`; `what` starts each assertion's message.
fn reads_agree(
    r: &(impl ReadView + ?Sized),
    ks: Keyspace,
    range: &KeyRange,
    probe: &[u8],
    model: &Dump,
    what: &str,
) {
    let expect: Vec<_> = model_keyspace(model, ks)
        .into_iter()
        .filter(|(k, _)| range.contains(k))
        .collect();
    assert_eq!(
        scan_all(r, ks, range.clone()),
        expect,
        "{what}scan of {ks} {range:?}"
    );
    assert_eq!(
        scan_each_all(r, ks, range.clone(), usize::MAX),
        expect,
        "{what}scan_each of {ks} {range:?}"
    );
    assert_eq!(
        scan_each_all(r, ks, range.clone(), 2),
        expect[..expect.len().min(2)],
        "{what}scan_each of {ks} {range:?}, stopped after two"
    );
    assert_eq!(
        must(r.last(ks, range.clone()), "last"),
        expect.last().cloned(),
        "{what}last of {ks} {range:?}"
    );
    assert_eq!(
        get(r, ks, probe),
        model.get(&(ks, probe.to_vec())).cloned(),
        "{what}get {ks} {probe:?}"
    );
}

/// The dump restricted to one keyspace, as scan output.
fn model_keyspace(model: &Dump, ks: Keyspace) -> Vec<(Vec<u8>, Vec<u8>)> {
    model
        .iter()
        .filter(|((k, _), _)| *k == ks)
        .map(|((_, k), v)| (k.clone(), v.clone()))
        .collect()
}

/// A small deterministic generator (SplitMix64), so cases need no dependencies and replay.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Fill `s` with `n` keys of incompressible `value_len`-byte values in `ks`; returns the model.
fn fill<S: Store>(s: &S, ks: Keyspace, n: usize, value_len: usize, seed: u64) -> Dump {
    let mut rng = Rng::new(seed);
    let mut model = Dump::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut b = s.batch();
        for &i in chunk {
            let key = format!("key-{i:08}").into_bytes();
            let value = rng.bytes(value_len);
            b.put(ks, &key, &value);
            model.insert((ks, key), value);
        }
        write(s, b, WriteOptions::NO_SYNC);
    }
    model
}

fn counter(i: u64) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn read_counter(r: &(impl ReadView + ?Sized), ks: Keyspace, key: &[u8]) -> Option<u64> {
    get(r, ks, key).map(|v| {
        let arr: [u8; 8] = v
            .as_slice()
            .try_into()
            .unwrap_or_else(|_| panic!("bad counter {v:?}"));
        u64::from_be_bytes(arr)
    })
}

/// A batch that sets one counter in several keyspaces and `keys` keys of `State`, so that any
/// view of the store can check that it saw it whole or not at all.
fn counter_batch<S: Store>(s: &S, i: u64, keys: usize, value_len: usize) -> S::Batch {
    let mut b = s.batch();
    b.put(Keyspace::Meta, b"counter", &counter(i));
    for j in 0..keys {
        let mut v = counter(i);
        v.resize(value_len.max(8), (i % 251) as u8);
        b.put(Keyspace::State, format!("s{j:04}").as_bytes(), &v);
    }
    b.put(Keyspace::Epochs, b"counter", &counter(i));
    b
}

/// Check that the view holds exactly one whole counter batch (or none); returns its number.
fn check_counter_batches(r: &(impl ReadView + ?Sized), keys: usize) -> Option<u64> {
    let meta = read_counter(r, Keyspace::Meta, b"counter");
    let epochs = read_counter(r, Keyspace::Epochs, b"counter");
    assert_eq!(
        meta, epochs,
        "Meta and Epochs counters differ: a batch was seen in part"
    );
    let state = scan_all(r, Keyspace::State, KeyRange::prefix(b"s"));
    match meta {
        None => assert!(state.is_empty(), "State keys without a counter"),
        Some(i) => {
            assert_eq!(
                state.len(),
                keys,
                "batch {i}: State holds {} keys, not {keys}",
                state.len()
            );
            for (k, v) in &state {
                assert_eq!(
                    &v[..8],
                    &counter(i)[..],
                    "key {k:?} is from another batch than {i}"
                );
            }
        }
    }
    meta
}

// ---------------------------------------------------------------------------------------------
// The cases.

/// Keys come back in bytewise order: prefixes first, `0xff` last, the empty key first.
pub fn case_ordering<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let keys: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x00, 0xff],
        vec![0x01],
        b"a".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"abd".to_vec(),
        b"b".to_vec(),
        vec![0x7f],
        vec![0x80],
        vec![0x80, 0x00],
        vec![0xfe, 0xff, 0xff],
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff],
        vec![0xff, 0xff, 0xff],
    ];
    // Write them in a scrambled order, over two batches.
    let mut scrambled = keys.clone();
    scrambled.reverse();
    scrambled.rotate_left(7);
    let (first, second) = scrambled.split_at(scrambled.len() / 2);
    for part in [first, second] {
        let mut b = s.batch();
        for k in part {
            let mut v = b"v:".to_vec();
            v.extend_from_slice(k);
            b.put(Keyspace::Oplog, k, &v);
        }
        write(&s, b, WriteOptions::NO_SYNC);
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted, keys,
        "the test's own key list must be in bytewise order"
    );
    let expect: Vec<_> = keys
        .iter()
        .map(|k| {
            let mut v = b"v:".to_vec();
            v.extend_from_slice(k);
            (k.clone(), v)
        })
        .collect();
    assert_eq!(scan_all(&s, Keyspace::Oplog, KeyRange::all()), expect);
    let snap = must(s.snapshot(), "snapshot");
    assert_eq!(scan_all(&snap, Keyspace::Oplog, KeyRange::all()), expect);
    for (k, v) in &expect {
        assert_eq!(get(&snap, Keyspace::Oplog, k).as_ref(), Some(v));
    }
}

/// Range bounds of every kind, prefix ranges (also of `0xff` prefixes), empty ranges and
/// ranges whose start lies after their end.
pub fn case_range_bounds<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let keys: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        b"a".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"abd".to_vec(),
        b"ac".to_vec(),
        b"b".to_vec(),
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff],
    ];
    let mut b = s.batch();
    for k in &keys {
        b.put(Keyspace::State, k, k);
        // Neighbours in other keyspaces must never show up.
        b.put(Keyspace::Peers, k, b"other");
        b.put(Keyspace::Blobs, k, b"other");
    }
    write(&s, b, WriteOptions::NO_SYNC);

    let inc = |k: &[u8]| Bound::Included(k.to_vec());
    let exc = |k: &[u8]| Bound::Excluded(k.to_vec());
    let r = |start, end| KeyRange { start, end };
    let ranges = vec![
        KeyRange::all(),
        KeyRange::between(b"a".to_vec(), b"ac".to_vec()),
        KeyRange::from(b"ab".to_vec()),
        r(inc(b"ab"), inc(b"ac")),
        r(exc(b"ab"), exc(b"ac")),
        r(exc(b"ab"), inc(b"ac")),
        r(Bound::Unbounded, exc(b"ab")),
        r(Bound::Unbounded, inc(b"ab")),
        r(exc(b""), Bound::Unbounded),
        r(inc(b""), inc(b"")),
        r(exc(&[0xff]), Bound::Unbounded),
        r(inc(b"abc"), inc(b"abc")),
        KeyRange::prefix(b"ab"),
        KeyRange::prefix(b"a"),
        KeyRange::prefix(&[0xff]),
        KeyRange::prefix(b""),
        KeyRange::prefix(b"zz"),
        // Empty ranges and start > end: nothing, and no error.
        KeyRange::between(b"ab".to_vec(), b"ab".to_vec()),
        r(exc(b"ab"), exc(b"ab")),
        r(exc(b"ab"), inc(b"ab")),
        KeyRange::between(b"b".to_vec(), b"a".to_vec()),
        r(inc(b"b"), inc(b"a")),
        r(exc(&[0xff, 0xff]), Bound::Unbounded),
    ];
    let snap = must(s.snapshot(), "snapshot");
    for range in ranges {
        let expect: Vec<Vec<u8>> = keys.iter().filter(|k| range.contains(k)).cloned().collect();
        assert_eq!(
            keys_of(&s, Keyspace::State, range.clone()),
            expect,
            "store scan of {range:?}"
        );
        assert_eq!(
            keys_of(&snap, Keyspace::State, range.clone()),
            expect,
            "snapshot scan of {range:?}"
        );
        let last = expect.last().map(|k| (k.clone(), k.clone()));
        assert_eq!(
            must(s.last(Keyspace::State, range.clone()), "last"),
            last,
            "store last of {range:?}"
        );
        assert_eq!(
            must(snap.last(Keyspace::State, range.clone()), "last"),
            last,
            "snapshot last of {range:?}"
        );
    }
    // Spelled out, so the suite does not lean on `KeyRange::contains` alone.
    assert_eq!(
        keys_of(&s, Keyspace::State, KeyRange::prefix(b"ab")),
        vec![b"ab".to_vec(), b"abc".to_vec(), b"abd".to_vec()]
    );
    assert_eq!(
        keys_of(&s, Keyspace::State, KeyRange::prefix(&[0xff])),
        vec![vec![0xff], vec![0xff, 0x00], vec![0xff, 0xff]]
    );
    assert_eq!(
        keys_of(&s, Keyspace::State, r(inc(b"abc"), inc(b"abc"))),
        vec![b"abc".to_vec()]
    );
    assert!(keys_of(
        &s,
        Keyspace::State,
        KeyRange::between(b"b".to_vec(), b"a".to_vec())
    )
    .is_empty());
    assert!(keys_of(&s, Keyspace::Epochs, KeyRange::all()).is_empty());
}

/// Keyspaces are separate namespaces for reads, writes, deletes and range deletes.
pub fn case_keyspace_isolation<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let mut b = s.batch();
    for ks in Keyspace::ALL {
        b.put(ks, b"shared", ks.name().as_bytes());
        b.put(ks, b"range-1", ks.name().as_bytes());
        b.put(ks, format!("only-{}", ks.name()).as_bytes(), b"x");
    }
    write(&s, b, WriteOptions::NO_SYNC);
    for ks in Keyspace::ALL {
        assert_eq!(
            get(&s, ks, b"shared").as_deref(),
            Some(ks.name().as_bytes())
        );
        let keys = keys_of(&s, ks, KeyRange::all());
        let own = format!("only-{}", ks.name()).into_bytes();
        assert_eq!(
            keys,
            vec![own, b"range-1".to_vec(), b"shared".to_vec()],
            "keyspace {ks}"
        );
    }
    let mut b = s.batch();
    b.delete(Keyspace::Meta, b"shared");
    b.delete_range(Keyspace::Blobs, b"", b"zzz");
    write(&s, b, WriteOptions::NO_SYNC);
    assert_eq!(get(&s, Keyspace::Meta, b"shared"), None);
    assert!(keys_of(&s, Keyspace::Blobs, KeyRange::all()).is_empty());
    for ks in [
        Keyspace::Oplog,
        Keyspace::Epochs,
        Keyspace::Peers,
        Keyspace::State,
    ] {
        assert_eq!(
            get(&s, ks, b"shared").as_deref(),
            Some(ks.name().as_bytes()),
            "{ks}"
        );
        assert_eq!(keys_of(&s, ks, KeyRange::all()).len(), 3, "{ks}");
    }
}

/// Reading what is not there gives `None` and empty scans, not errors.
pub fn case_get_missing<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    for ks in Keyspace::ALL {
        assert_eq!(get(&s, ks, b""), None);
        assert_eq!(get(&s, ks, b"nothing"), None);
        assert!(keys_of(&s, ks, KeyRange::all()).is_empty());
    }
    put(&s, Keyspace::Peers, b"abc", b"1");
    for missing in [&b""[..], b"ab", b"abcd", b"abd", b"b", &[0xff]] {
        assert_eq!(get(&s, Keyspace::Peers, missing), None, "{missing:?}");
    }
    assert_eq!(get(&s, Keyspace::State, b"abc"), None);
    let snap = must(s.snapshot(), "snapshot");
    assert_eq!(get(&snap, Keyspace::Peers, b"ab"), None);
    assert!(keys_of(&snap, Keyspace::Peers, KeyRange::prefix(b"abd")).is_empty());
}

/// A later put replaces the value, whatever the lengths, and a key is listed once.
pub fn case_overwrite<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    put(&s, Keyspace::Meta, b"k", b"first");
    put(&s, Keyspace::Meta, b"k", b"a much longer second value");
    assert_eq!(
        get(&s, Keyspace::Meta, b"k").as_deref(),
        Some(&b"a much longer second value"[..])
    );
    put(&s, Keyspace::Meta, b"k", b"3");
    assert_eq!(get(&s, Keyspace::Meta, b"k").as_deref(), Some(&b"3"[..]));
    put(&s, Keyspace::Meta, b"", b"empty key 1");
    put(&s, Keyspace::Meta, b"", b"empty key 2");
    assert_eq!(
        scan_all(&s, Keyspace::Meta, KeyRange::all()),
        vec![
            (b"".to_vec(), b"empty key 2".to_vec()),
            (b"k".to_vec(), b"3".to_vec())
        ]
    );
}

/// Deletes remove keys (the empty key too) and deleting a missing key is fine.
pub fn case_delete<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    for k in [&b""[..], b"a", b"b", b"c"] {
        put(&s, Keyspace::Epochs, k, b"v");
    }
    must(
        s.delete_one(Keyspace::Epochs, b"b", WriteOptions::NO_SYNC),
        "delete",
    );
    must(
        s.delete_one(Keyspace::Epochs, b"", WriteOptions::SYNC),
        "delete",
    );
    must(
        s.delete_one(Keyspace::Epochs, b"never-there", WriteOptions::NO_SYNC),
        "delete missing",
    );
    must(
        s.delete_one(Keyspace::Oplog, b"a", WriteOptions::NO_SYNC),
        "delete in other keyspace",
    );
    assert_eq!(get(&s, Keyspace::Epochs, b"b"), None);
    assert_eq!(get(&s, Keyspace::Epochs, b""), None);
    assert_eq!(
        keys_of(&s, Keyspace::Epochs, KeyRange::all()),
        vec![b"a".to_vec(), b"c".to_vec()]
    );
    put(&s, Keyspace::Epochs, b"b", b"again");
    assert_eq!(
        get(&s, Keyspace::Epochs, b"b").as_deref(),
        Some(&b"again"[..])
    );
}

/// `delete_range` removes exactly `[start, end)`; empty and inverted ranges remove nothing.
pub fn case_delete_range<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let keys: Vec<Vec<u8>> = vec![
        vec![],
        b"a".to_vec(),
        b"b".to_vec(),
        b"b\x00".to_vec(),
        b"bz".to_vec(),
        b"c\xff".to_vec(),
        b"d".to_vec(),
        b"d0".to_vec(),
        vec![0xff],
        vec![0xff, 0xff],
    ];
    let mut b = s.batch();
    for k in &keys {
        b.put(Keyspace::State, k, b"v");
        b.put(Keyspace::Oplog, k, b"v");
    }
    write(&s, b, WriteOptions::NO_SYNC);
    let remaining = |s: &F::Store| keys_of(s, Keyspace::State, KeyRange::all());

    let mut b = s.batch();
    b.delete_range(Keyspace::State, b"b", b"d");
    write(&s, b, WriteOptions::NO_SYNC);
    let expect: Vec<Vec<u8>> = vec![
        vec![],
        b"a".to_vec(),
        b"d".to_vec(),
        b"d0".to_vec(),
        vec![0xff],
        vec![0xff, 0xff],
    ];
    assert_eq!(remaining(&s), expect);

    // Empty and inverted ranges are no-ops.
    let mut b = s.batch();
    b.delete_range(Keyspace::State, b"d", b"d");
    b.delete_range(Keyspace::State, b"d0", b"a");
    write(&s, b, WriteOptions::NO_SYNC);
    assert_eq!(remaining(&s), expect);

    // From the empty key up to (not including) 0xff.
    let mut b = s.batch();
    b.delete_range(Keyspace::State, b"", &[0xff]);
    write(&s, b, WriteOptions::NO_SYNC);
    assert_eq!(remaining(&s), vec![vec![0xff], vec![0xff, 0xff]]);
    // The other keyspace is untouched.
    assert_eq!(keys_of(&s, Keyspace::Oplog, KeyRange::all()), keys);
}

/// Empty values are values (not absence); values of 16 MiB work, also across a reopen.
pub fn case_empty_and_large_values<F: StoreFactory>(h: &Harness<F>) {
    let big: Vec<u8> = Rng::new(16).bytes(16 << 20);
    let bigger: Vec<u8> = Rng::new(17).bytes((16 << 20) + 1);
    {
        let s = h.open();
        put(&s, Keyspace::Blobs, b"empty", b"");
        put(&s, Keyspace::Blobs, b"", b"");
        put(&s, Keyspace::Blobs, b"big", &big);
        put(&s, Keyspace::Blobs, b"bigger", &bigger);
        assert_eq!(get(&s, Keyspace::Blobs, b"empty"), Some(Vec::new()));
        assert_eq!(get(&s, Keyspace::Blobs, b""), Some(Vec::new()));
        assert!(
            get(&s, Keyspace::Blobs, b"big") == Some(big.clone()),
            "16 MiB value differs"
        );
        let all = scan_all(&s, Keyspace::Blobs, KeyRange::all());
        assert_eq!(all.len(), 4);
        assert!(all[0] == (Vec::new(), Vec::new()) && all[3] == (b"empty".to_vec(), Vec::new()));
        assert!(
            all[1].1 == big && all[2].1 == bigger,
            "large values differ in a scan"
        );
        put(&s, Keyspace::Blobs, b"bigger", b"");
        assert_eq!(get(&s, Keyspace::Blobs, b"bigger"), Some(Vec::new()));
        must(
            s.put_one(Keyspace::Blobs, b"bigger", &bigger, WriteOptions::SYNC),
            "sync put",
        );
    }
    if !h.requires(|c| c.persistent, "persistent") {
        return;
    }
    let s = h.open();
    assert_eq!(get(&s, Keyspace::Blobs, b"empty"), Some(Vec::new()));
    assert_eq!(get(&s, Keyspace::Blobs, b""), Some(Vec::new()));
    assert!(
        get(&s, Keyspace::Blobs, b"big") == Some(big),
        "16 MiB value differs after reopen"
    );
    assert!(
        get(&s, Keyspace::Blobs, b"bigger") == Some(bigger),
        "value differs after reopen"
    );
}

/// Operations in a batch apply in order: the later put wins, put-then-delete deletes,
/// delete-then-put puts, a range delete only removes what was there before it.
pub fn case_batch_order<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    put(&s, Keyspace::Peers, b"y", b"old");
    put(&s, Keyspace::Peers, b"p1", b"old");
    let mut b = s.batch();
    assert!(b.is_empty() && b.len() == 0);
    b.put(Keyspace::Peers, b"k", b"1");
    b.put(Keyspace::Peers, b"k", b"2");
    b.put(Keyspace::Peers, b"x", b"gone");
    b.delete(Keyspace::Peers, b"x");
    b.delete(Keyspace::Peers, b"y");
    b.put(Keyspace::Peers, b"y", b"new");
    b.put(Keyspace::Peers, b"p0", b"before range delete");
    b.delete_range(Keyspace::Peers, b"p", b"q");
    b.put(Keyspace::Peers, b"p2", b"after range delete");
    b.expect(Keyspace::Peers, b"y", Some(b"old"));
    assert_eq!(
        b.len(),
        9,
        "len counts puts, deletes and range deletes, not guards"
    );
    assert!(!b.is_empty());
    write(&s, b, WriteOptions::SYNC);
    assert_eq!(
        scan_all(&s, Keyspace::Peers, KeyRange::all()),
        vec![
            (b"k".to_vec(), b"2".to_vec()),
            (b"p2".to_vec(), b"after range delete".to_vec()),
            (b"y".to_vec(), b"new".to_vec()),
        ]
    );
    // An empty batch is a valid write.
    write(&s, s.batch(), WriteOptions::SYNC);
}

/// A batch that fails (an injected failure, or a guard that fails after many operations)
/// leaves no trace, and the store stays usable.
pub fn case_batch_atomic_under_injected_failure<F: StoreFactory>(h: &Harness<F>) {
    let plan = FaultPlan::new();
    let s = FaultyStore::new(h.open(), plan.clone());
    let mut model = fill(&s, Keyspace::State, 200, 64, 1);
    put(&s, Keyspace::Meta, b"guard", b"g1");
    model.insert((Keyspace::Meta, b"guard".to_vec()), b"g1".to_vec());
    assert_eq!(dump(&s), model);

    let big_batch = |s: &FaultyStore<F::Store>| {
        let mut b = s.batch();
        for i in 0..1000u32 {
            b.put(
                Keyspace::ALL[i as usize % 6],
                format!("new-{i:05}").as_bytes(),
                b"v",
            );
        }
        b.delete_range(Keyspace::State, b"key-00000050", b"key-00000150");
        b.delete(Keyspace::Meta, b"guard");
        b
    };
    plan.fail_nth_write(1);
    let err = s.write(big_batch(&s), WriteOptions::NO_SYNC).unwrap_err();
    assert!(
        matches!(err, Error::Io(_)),
        "injected failure expected, got {err}"
    );
    assert_eq!(plan.faults_fired(), 1);
    assert_eq!(dump(&s), model, "a failed write left a trace");

    // The backend's own atomicity: a guard that fails after a thousand operations.
    let mut b = big_batch(&s);
    b.expect(Keyspace::Meta, b"guard", Some(b"wrong"));
    let err = s.write(b, WriteOptions::SYNC).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Precondition {
                keyspace: Keyspace::Meta
            }
        ),
        "{err}"
    );
    assert_eq!(dump(&s), model, "a batch with a failed guard left a trace");

    // And the store is still fine.
    write(&s, big_batch(&s), WriteOptions::SYNC);
    assert_eq!(get(&s, Keyspace::Meta, b"guard"), None);
    assert_eq!(
        keys_of(&s, Keyspace::Oplog, KeyRange::prefix(b"new-")).len(),
        167
    );
    assert_eq!(
        keys_of(&s, Keyspace::State, KeyRange::prefix(b"key-")).len(),
        100
    );
}

/// A process killed while it writes batches leaves each of them whole or absent.
pub fn case_batch_atomic_across_process_kill<F: StoreFactory>(h: &Harness<F>) {
    const KEYS: usize = 64;
    const VALUE_LEN: usize = 2048;
    if let Some(dir) = h.child_dir() {
        let s = h.open_at(dir);
        for i in 1..=2000u64 {
            write(
                &s,
                counter_batch(&s, i, KEYS, VALUE_LEN),
                WriteOptions::NO_SYNC,
            );
            h.report(&format!("wrote {i}"));
        }
        return;
    }
    if !h.requires(
        |c| c.persistent && c.multi_process,
        "persistent and multi-process",
    ) {
        return;
    }
    let dir = h.dir();
    let mut child = h.spawn_child(&dir);
    let mut acknowledged = 0u64;
    while acknowledged < 25 {
        let msg = child.next_report();
        acknowledged = msg
            .strip_prefix("wrote ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected child report {msg:?}"));
    }
    child.kill();
    let s = h.open_at(&dir);
    // Whatever survived the kill must be whole batches, none of them invented.
    if let Some(i) = check_counter_batches(&s, KEYS) {
        assert!((1..=2000).contains(&i), "counter {i} was never written");
    }
    must(s.check_integrity(), "integrity after a killed writer");
}

/// Guards that hold let the write through; a guard is checked against the state just
/// before the batch applies, not against the batch's own writes.
pub fn case_precondition_success<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let mut b = s.batch();
    b.expect(Keyspace::Meta, b"lock", None);
    b.put(Keyspace::Meta, b"lock", b"held");
    write(&s, b, WriteOptions::SYNC);
    let mut b = s.batch();
    b.expect(Keyspace::Meta, b"lock", Some(b"held"));
    b.expect(Keyspace::Epochs, b"row", None);
    b.put(Keyspace::Epochs, b"row", b"1");
    b.put(Keyspace::Meta, b"empty", b"");
    write(&s, b, WriteOptions::NO_SYNC);
    // An empty value is present, not absent.
    let mut b = s.batch();
    b.expect(Keyspace::Meta, b"empty", Some(b""));
    b.put(Keyspace::Meta, b"after-empty", b"ok");
    write(&s, b, WriteOptions::NO_SYNC);
    // Checked against the state before the batch: the batch's own put does not count.
    let mut b = s.batch();
    b.put(Keyspace::Peers, b"fresh", b"v");
    b.expect(Keyspace::Peers, b"fresh", None);
    write(&s, b, WriteOptions::NO_SYNC);
    assert_eq!(
        get(&s, Keyspace::Epochs, b"row").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        get(&s, Keyspace::Meta, b"after-empty").as_deref(),
        Some(&b"ok"[..])
    );
    assert_eq!(
        get(&s, Keyspace::Peers, b"fresh").as_deref(),
        Some(&b"v"[..])
    );
}

/// A guard for [`case_precondition_failure_writes_nothing`]: keyspace, key, expected value.
type Guard<'a> = (Keyspace, &'a [u8], Option<&'a [u8]>);

/// A guard that does not hold fails the write with `Precondition` (naming the guard's
/// keyspace) and writes nothing.
pub fn case_precondition_failure_writes_nothing<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    put(&s, Keyspace::Meta, b"lock", b"held");
    put(&s, Keyspace::Meta, b"empty", b"");
    let before = dump(&s);
    let guards: Vec<Guard<'_>> = vec![
        (Keyspace::Meta, &b"lock"[..], Some(&b"other"[..])),
        (Keyspace::Meta, &b"lock"[..], None),
        (Keyspace::Meta, &b"lock"[..], Some(&b"held!"[..])),
        (Keyspace::Meta, &b"lock"[..], Some(&b""[..])),
        (Keyspace::Peers, &b"absent"[..], Some(&b"x"[..])),
        (Keyspace::Peers, &b"absent"[..], Some(&b""[..])),
        (Keyspace::Meta, &b"empty"[..], None),
    ];
    for (ks, key, expected) in guards {
        for guard_first in [true, false] {
            let mut b = s.batch();
            if guard_first {
                b.expect(ks, key, expected);
            }
            b.put(Keyspace::State, b"written", b"no");
            b.delete(Keyspace::Meta, b"lock");
            b.delete_range(Keyspace::Meta, b"", b"zzz");
            b.expect(Keyspace::Meta, b"lock", Some(b"held"));
            if !guard_first {
                b.expect(ks, key, expected);
            }
            let err = s.write(b, WriteOptions::SYNC).unwrap_err();
            assert!(
                matches!(err, Error::Precondition { keyspace } if keyspace == ks),
                "guard {ks}/{key:?} = {expected:?}: got {err}"
            );
            assert_eq!(
                dump(&s),
                before,
                "guard {ks}/{key:?} = {expected:?} let something through"
            );
        }
    }
}

/// What was written is there after closing and reopening, synced or not.
pub fn case_durable_across_reopen<F: StoreFactory>(h: &Harness<F>) {
    if !h.requires(|c| c.persistent, "persistent") {
        return;
    }
    let mut model;
    {
        let s = h.open();
        model = fill(&s, Keyspace::Oplog, 1500, 100, 2);
        let mut b = s.batch();
        b.delete_range(Keyspace::Oplog, b"key-00000100", b"key-00000200");
        b.delete(Keyspace::Oplog, b"key-00000001");
        b.put(Keyspace::Meta, b"", b"empty key");
        b.put(Keyspace::Meta, &[0xff, 0xff], b"");
        write(&s, b, WriteOptions::SYNC);
        model.retain(|(_, k), _| {
            !(k.as_slice() >= &b"key-00000100"[..] && k.as_slice() < &b"key-00000200"[..])
        });
        model.remove(&(Keyspace::Oplog, b"key-00000001".to_vec()));
        model.insert((Keyspace::Meta, Vec::new()), b"empty key".to_vec());
        model.insert((Keyspace::Meta, vec![0xff, 0xff]), Vec::new());
        put(&s, Keyspace::Peers, b"unsynced", b"last");
        model.insert((Keyspace::Peers, b"unsynced".to_vec()), b"last".to_vec());
        assert_eq!(dump(&s), model);
    }
    {
        let s = h.open();
        assert_eq!(dump(&s), model, "after the first reopen");
        must(s.check_integrity(), "integrity after reopen");
        put(&s, Keyspace::Peers, b"second", b"session");
        model.insert((Keyspace::Peers, b"second".to_vec()), b"session".to_vec());
    }
    let s = h.open();
    assert_eq!(dump(&s), model, "after the second reopen");
}

/// A snapshot sees nothing of a batch another thread commits while it lives, in gets,
/// in scans it starts later and in a scan it was already running.
pub fn case_snapshot_isolation_during_concurrent_commit<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let old = fill(&s, Keyspace::State, 1000, 32, 3);
    let snap = must(s.snapshot(), "snapshot");
    let mut running = must(snap.scan(Keyspace::State, KeyRange::all()), "scan");
    let mut seen: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for _ in 0..10 {
        if let Some(kv) = running.next() {
            seen.push(must(kv, "scan item"));
        }
    }
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut b = s.batch();
            for i in 0..1000 {
                b.put(Keyspace::State, format!("key-{i:08}").as_bytes(), b"new");
            }
            b.delete_range(Keyspace::State, b"key-00000500", b"key-00000600");
            b.delete(Keyspace::State, b"key-00000020");
            b.put(Keyspace::State, b"key-new", b"new");
            b.put(Keyspace::Meta, b"committed", b"yes");
            must(s.write(b, WriteOptions::SYNC), "concurrent write");
        });
    });
    for kv in running {
        seen.push(must(kv, "scan item"));
    }
    let old_state = model_keyspace(&old, Keyspace::State);
    assert!(seen == old_state, "a scan running across the commit saw it");
    assert!(
        scan_all(&snap, Keyspace::State, KeyRange::all()) == old_state,
        "the snapshot saw the commit"
    );
    assert_eq!(
        get(&snap, Keyspace::State, b"key-00000020").as_deref(),
        old.get(&(Keyspace::State, b"key-00000020".to_vec()))
            .map(|v| v.as_slice())
    );
    assert_eq!(get(&snap, Keyspace::Meta, b"committed"), None);
    assert_eq!(get(&snap, Keyspace::State, b"key-new"), None);
    // The store and a new snapshot see the commit.
    assert_eq!(
        get(&s, Keyspace::Meta, b"committed").as_deref(),
        Some(&b"yes"[..])
    );
    let fresh = must(s.snapshot(), "snapshot");
    assert_eq!(keys_of(&fresh, Keyspace::State, KeyRange::all()).len(), 900);
    assert_eq!(get(&fresh, Keyspace::State, b"key-00000020"), None);
}

/// Snapshots taken at different moments each keep their state through many writes.
pub fn case_snapshot_stable_across_many_writes<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let mut rng = Rng::new(4);
    let mut model = fill(&s, Keyspace::Oplog, 300, 40, 4);
    let mut snapshots = vec![(must(s.snapshot(), "snapshot"), model.clone())];
    for round in 0..1200u32 {
        let mut b = s.batch();
        let k = format!("key-{:08}", rng.below(400)).into_bytes();
        match rng.below(10) {
            0 => {
                b.delete(Keyspace::Oplog, &k);
                model.remove(&(Keyspace::Oplog, k));
            }
            1 => {
                let mut end = k.clone();
                end.push(0xff);
                end[10] = end[10].saturating_add(1);
                b.delete_range(Keyspace::Oplog, &k, &end);
                model.retain(|(ks, key), _| *ks != Keyspace::Oplog || key < &k || key >= &end);
            }
            _ => {
                let n = rng.below(60) as usize;
                let v = rng.bytes(n);
                b.put(Keyspace::Oplog, &k, &v);
                model.insert((Keyspace::Oplog, k), v);
            }
        }
        write(&s, b, WriteOptions::NO_SYNC);
        if round % 400 == 399 {
            snapshots.push((must(s.snapshot(), "snapshot"), model.clone()));
        }
        if round % 300 == 0 {
            for (i, (snap, expect)) in snapshots.iter().enumerate() {
                assert!(
                    dump(snap) == *expect,
                    "snapshot {i} changed by round {round}"
                );
            }
        }
    }
    assert!(dump(&s) == model, "the store differs from the model");
    for (i, (snap, expect)) in snapshots.iter().enumerate() {
        assert!(dump(snap) == *expect, "snapshot {i} changed");
    }
}

/// Scans (on the store and on snapshots) see whole batches while another thread commits.
pub fn case_scan_consistent_under_concurrent_writes<F: StoreFactory>(h: &Harness<F>) {
    const KEYS: usize = 100;
    let s = h.open();
    write(&s, counter_batch(&s, 0, KEYS, 16), WriteOptions::NO_SYNC);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 1..=300u64 {
                must(
                    s.write(counter_batch(&s, i, KEYS, 16), WriteOptions::NO_SYNC),
                    "writer",
                );
            }
            done.store(true, Ordering::Release);
        });
        let mut last = 0;
        let mut rounds = 0u64;
        loop {
            let finished = done.load(Ordering::Acquire);
            // A scan on the store itself: all keys from one batch.
            let state = scan_all(&s, Keyspace::State, KeyRange::all());
            assert_eq!(state.len(), KEYS);
            let first = state[0].1[..8].to_vec();
            assert!(
                state.iter().all(|(_, v)| v[..8] == first[..]),
                "a store scan mixed batches"
            );
            // A snapshot: everything from one batch, never older than what was seen before.
            let snap = must(s.snapshot(), "snapshot");
            let i = check_counter_batches(&snap, KEYS).unwrap_or_else(|| panic!("counter missing"));
            assert!(
                i >= last,
                "a later snapshot went back from batch {last} to {i}"
            );
            last = i;
            rounds += 1;
            if finished {
                break;
            }
        }
        assert_eq!(
            last, 300,
            "the final snapshot misses the last batch (after {rounds} rounds)"
        );
    });
}

/// Random batches checked against a model after every write, with random scans.
pub fn case_random_ops_match_model<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let mut rng = Rng::new(5);
    let alphabet: [&[u8]; 6] = [b"", b"a", b"b", &[0x00], &[0xff], b"ab"];
    let key = |rng: &mut Rng| {
        let parts = rng.below(4);
        let mut k = Vec::new();
        for _ in 0..parts {
            k.extend_from_slice(alphabet[rng.below(alphabet.len() as u64) as usize]);
        }
        k
    };
    let mut model = Dump::new();
    for round in 0..400u32 {
        let mut b = s.batch();
        let mut next = model.clone();
        let mut guard_fails = false;
        for _ in 0..rng.below(12) + 1 {
            let ks = Keyspace::ALL[rng.below(3) as usize];
            let k = key(&mut rng);
            match rng.below(12) {
                0..=6 => {
                    let n = rng.below(20) as usize;
                    let v = rng.bytes(n);
                    b.put(ks, &k, &v);
                    next.insert((ks, k), v);
                }
                7 | 8 => {
                    b.delete(ks, &k);
                    next.remove(&(ks, k));
                }
                9 => {
                    let e = key(&mut rng);
                    b.delete_range(ks, &k, &e);
                    next.retain(|(kks, kk), _| *kks != ks || kk < &k || kk >= &e);
                }
                _ => {
                    let current = model.get(&(ks, k.clone())).cloned();
                    let expected = if rng.below(4) == 0 {
                        Some(b"nope".to_vec())
                    } else {
                        current.clone()
                    };
                    guard_fails |= expected != current;
                    b.expect(ks, &k, expected.as_deref());
                }
            }
        }
        match s.write(
            b,
            WriteOptions {
                sync: round % 50 == 0,
            },
        ) {
            Ok(()) => {
                assert!(
                    !guard_fails,
                    "round {round}: a failing guard let the write through"
                );
                model = next;
            }
            Err(Error::Precondition { .. }) => {
                assert!(guard_fails, "round {round}: spurious precondition failure")
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        let ks = Keyspace::ALL[rng.below(3) as usize];
        let (a, z) = (key(&mut rng), key(&mut rng));
        let bound = |rng: &mut Rng, k: Vec<u8>| match rng.below(3) {
            0 => Bound::Included(k),
            1 => Bound::Excluded(k),
            _ => Bound::Unbounded,
        };
        let range = KeyRange {
            start: bound(&mut rng, a),
            end: bound(&mut rng, z),
        };
        let probe = key(&mut rng);
        reads_agree(&s, ks, &range, &probe, &model, &format!("round {round}: "));
    }
    assert_eq!(dump(&s), model);
}

/// A backup restored into a new directory is the same store, and independent of it.
pub fn case_backup_restore_identical<F: StoreFactory>(h: &Harness<F>) {
    if !h.requires(|c| c.persistent, "persistent") {
        return;
    }
    let s = h.open();
    let mut model = fill(&s, Keyspace::Oplog, 2000, 64, 6);
    model.extend(fill(&s, Keyspace::Blobs, 20, 100_000, 7));
    let mut b = s.batch();
    for ks in Keyspace::ALL {
        b.put(ks, b"", b"empty key");
        b.put(ks, &[0xff, 0xff], b"");
        model.insert((ks, Vec::new()), b"empty key".to_vec());
        model.insert((ks, vec![0xff, 0xff]), Vec::new());
    }
    b.delete(Keyspace::Oplog, b"key-00000007");
    model.remove(&(Keyspace::Oplog, b"key-00000007".to_vec()));
    write(&s, b, WriteOptions::NO_SYNC);
    assert!(dump(&s) == model);

    let backup = h.path("backup");
    must(s.backup(&backup), "backup into a new directory");
    let empty_backup = h.path("backup-into-empty");
    std::fs::create_dir(&empty_backup).unwrap_or_else(|e| panic!("mkdir: {e}"));
    must(s.backup(&empty_backup), "backup into an empty directory");
    put(&s, Keyspace::Meta, b"after-backup", b"x");

    for (i, src) in [&backup, &empty_backup].into_iter().enumerate() {
        let dest = h.path(&format!("restored-{i}"));
        must(F::Store::restore_backup(src, &dest), "restore");
        let r = h.open_at(&dest);
        assert!(
            dump(&r) == model,
            "restored store {i} differs from the store at backup time"
        );
        must(r.check_integrity(), "integrity of the restored store");
        put(&r, Keyspace::Meta, b"only-in-restored", b"y");
    }
    assert_eq!(
        get(&s, Keyspace::Meta, b"only-in-restored"),
        None,
        "the restored store is not independent"
    );
    assert_eq!(
        get(&s, Keyspace::Meta, b"after-backup").as_deref(),
        Some(&b"x"[..])
    );
}

/// A backup taken while another thread commits holds every batch whole or not at all, and
/// at least everything committed before it started.
pub fn case_backup_consistent_during_concurrent_writes<F: StoreFactory>(h: &Harness<F>) {
    const KEYS: usize = 50;
    if !h.requires(|c| c.persistent, "persistent") {
        return;
    }
    let s = h.open();
    fill(&s, Keyspace::Blobs, 200, 4096, 8);
    let progress = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut before = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) && i < 20_000 {
                i += 1;
                must(
                    s.write(counter_batch(&s, i, KEYS, 64), WriteOptions::NO_SYNC),
                    "writer",
                );
                progress.store(i, Ordering::Release);
            }
        });
        for n in 0..3u64 {
            while progress.load(Ordering::Acquire) < 20 * (n + 1) {
                std::thread::yield_now();
            }
            before.push(progress.load(Ordering::Acquire));
            must(s.backup(&h.path(&format!("backup-{n}"))), "backup");
        }
        stop.store(true, Ordering::Release);
    });
    for (n, committed) in before.into_iter().enumerate() {
        let dest = h.path(&format!("restored-{n}"));
        must(
            F::Store::restore_backup(&h.path(&format!("backup-{n}")), &dest),
            "restore",
        );
        let r = h.open_at(&dest);
        let i =
            check_counter_batches(&r, KEYS).unwrap_or_else(|| panic!("backup {n} holds no batch"));
        assert!(
            i >= committed,
            "backup {n} holds batch {i}, but {committed} was committed before it began"
        );
        assert_eq!(keys_of(&r, Keyspace::Blobs, KeyRange::all()).len(), 200);
    }
}

/// `check_integrity` passes on healthy stores: empty, filled, after deletes, after reopen.
pub fn case_integrity_check_passes_when_healthy<F: StoreFactory>(h: &Harness<F>) {
    {
        let s = h.open();
        must(s.check_integrity(), "integrity of an empty store");
        fill(&s, Keyspace::State, 3000, 128, 9);
        must(s.check_integrity(), "integrity of a filled store");
        let mut b = s.batch();
        b.delete_range(Keyspace::State, b"key-00000100", b"key-00002000");
        write(&s, b, WriteOptions::SYNC);
        must(s.check_integrity(), "integrity after a range delete");
    }
    if !h.requires(|c| c.persistent, "persistent") {
        return;
    }
    let s = h.open();
    must(s.check_integrity(), "integrity after reopen");
}

/// Damaged files are reported as `Corruption`, by the reopen or by `check_integrity`.
pub fn case_integrity_check_catches_corruption<F: StoreFactory>(h: &Harness<F>) {
    if !h.requires(
        |c| c.persistent && c.corruption,
        "persistent and corruption",
    ) {
        return;
    }
    {
        let s = h.open();
        fill(&s, Keyspace::State, 4000, 256, 10);
        fill(&s, Keyspace::Blobs, 1000, 256, 11);
        must(s.check_integrity(), "integrity before the damage");
    }
    must(h.factory().corrupt(&h.dir()), "damaging the store");
    match h.factory().open(&h.dir()) {
        Err(Error::Corruption(_)) => {}
        Err(e) => panic!("reopening a damaged store failed, but not with Corruption: {e}"),
        Ok(s) => match s.check_integrity() {
            Err(Error::Corruption(_)) => {}
            Err(e) => panic!("check_integrity failed, but not with Corruption: {e}"),
            Ok(()) => panic!("check_integrity found nothing wrong with a damaged store"),
        },
    }
}

/// A store directory is open once: a second open, in this process or another, fails with
/// `Locked` naming the directory; after a close it opens again.
pub fn case_second_open_refused<F: StoreFactory>(h: &Harness<F>) {
    if let Some(dir) = h.child_dir() {
        match h.factory().open(dir) {
            Err(Error::Locked { path }) => h.report(&format!("locked {}", path.display())),
            Ok(s) => {
                put(&s, Keyspace::Meta, b"child", b"was here");
                h.report("opened");
            }
            Err(e) => h.report(&format!("error {e}")),
        }
        return;
    }
    let dir = h.dir();
    let s = h.open();
    put(&s, Keyspace::Meta, b"parent", b"1");
    match h.factory().open(&dir) {
        Err(Error::Locked { path }) => {
            assert_eq!(path, dir, "Locked must name the store directory")
        }
        Err(e) => panic!("a second open in the same process failed, but not with Locked: {e}"),
        Ok(_) => panic!("a second open in the same process succeeded"),
    }
    // The failed open did not disturb the first.
    put(&s, Keyspace::Meta, b"parent", b"2");
    assert_eq!(
        get(&s, Keyspace::Meta, b"parent").as_deref(),
        Some(&b"2"[..])
    );
    if !h.requires(
        |c| c.persistent && c.multi_process,
        "persistent and multi-process",
    ) {
        return;
    }
    let mut child = h.spawn_child(&dir);
    assert_eq!(child.next_report(), format!("locked {}", dir.display()));
    child.finish();
    drop(s);
    let mut child = h.spawn_child(&dir);
    assert_eq!(
        child.next_report(),
        "opened",
        "the lock was not released on drop"
    );
    child.finish();
    let s = h.open();
    assert_eq!(
        get(&s, Keyspace::Meta, b"child").as_deref(),
        Some(&b"was here"[..])
    );
    assert_eq!(
        get(&s, Keyspace::Meta, b"parent").as_deref(),
        Some(&b"2"[..])
    );
}

/// After a durable write fails, every write is refused with `Poisoned` while reads go on;
/// reopening clears it.
pub fn case_poisoned_after_failed_sync_write<F: StoreFactory>(h: &Harness<F>) {
    let plan = FaultPlan::new();
    {
        let s = FaultyStore::new(h.open(), plan.clone());
        plan.fail_nth_sync_write(1);
        put(&s, Keyspace::Meta, b"unsynced", b"ok");
        let err = s
            .put_one(Keyspace::Meta, b"synced", b"applied", WriteOptions::SYNC)
            .unwrap_err();
        assert!(
            matches!(err, Error::Io(_)),
            "injected failure expected, got {err}"
        );
        assert!(s.is_poisoned());
        for opts in [WriteOptions::SYNC, WriteOptions::NO_SYNC] {
            let err = s
                .put_one(Keyspace::Meta, b"later", b"no", opts)
                .unwrap_err();
            assert!(
                matches!(err, Error::Poisoned),
                "expected Poisoned, got {err}"
            );
            let err = s.write(s.batch(), opts).unwrap_err();
            assert!(
                matches!(err, Error::Poisoned),
                "expected Poisoned for an empty batch, got {err}"
            );
        }
        assert_eq!(
            get(&s, Keyspace::Meta, b"synced").as_deref(),
            Some(&b"applied"[..])
        );
        assert_eq!(get(&s, Keyspace::Meta, b"later"), None);
        let snap = must(s.snapshot(), "snapshot of a poisoned store");
        assert_eq!(
            get(&snap, Keyspace::Meta, b"unsynced").as_deref(),
            Some(&b"ok"[..])
        );
    }
    if !h.requires(|c| c.persistent, "persistent") {
        return;
    }
    let s = FaultyStore::new(h.open(), plan);
    assert_eq!(
        get(&s, Keyspace::Meta, b"synced").as_deref(),
        Some(&b"applied"[..])
    );
    must(
        s.put_one(Keyspace::Meta, b"later", b"yes", WriteOptions::SYNC),
        "write after reopen",
    );
}

/// The crash simulation of [`FaultyStore`] works over the backend: unsynced writes are lost
/// whole, a torn write keeps a prefix.
pub fn case_faulty_crash_modes<F: StoreFactory>(h: &Harness<F>) {
    let plan = FaultPlan::new();
    plan.track_crashes(true);
    let s = FaultyStore::new(h.open(), plan.clone());
    put(&s, Keyspace::Oplog, b"a", b"0");
    must(
        s.put_one(Keyspace::Oplog, b"a", b"1", WriteOptions::SYNC),
        "sync",
    );
    let synced = dump(&s);
    put(&s, Keyspace::Oplog, b"b", b"2");
    let mut b = s.batch();
    b.delete_range(Keyspace::Oplog, b"", b"z");
    b.put(Keyspace::Oplog, b"c", b"3");
    write(&s, b, WriteOptions::NO_SYNC);
    assert_eq!(
        must(s.crash(super::Crash::LoseUnsynced(usize::MAX)), "crash"),
        2
    );
    assert_eq!(dump(&s), synced);
    let mut b = s.batch();
    b.put(Keyspace::Oplog, b"x", b"1");
    b.delete(Keyspace::Oplog, b"a");
    b.put(Keyspace::Oplog, b"y", b"2");
    write(&s, b, WriteOptions::SYNC);
    assert_eq!(
        must(s.crash(super::Crash::TearLast { keep: 2 }), "crash"),
        1
    );
    assert_eq!(
        keys_of(&s, Keyspace::Oplog, KeyRange::all()),
        vec![b"x".to_vec()]
    );
}

/// Restoring into a directory that holds anything is refused and leaves it alone.
pub fn case_restore_into_non_empty_dir_refused<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    put(&s, Keyspace::Meta, b"k", b"v");
    let backup = h.path("backup");
    must(s.backup(&backup), "backup");
    let occupied = h.path("occupied");
    std::fs::create_dir(&occupied).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(occupied.join("keep.txt"), b"precious").unwrap_or_else(|e| panic!("write: {e}"));
    let err = F::Store::restore_backup(&backup, &occupied).unwrap_err();
    assert!(
        matches!(err, Error::Invalid(_)),
        "expected Invalid, got {err}"
    );
    let entries: Vec<_> = std::fs::read_dir(&occupied)
        .unwrap_or_else(|e| panic!("read_dir: {e}"))
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .unwrap_or_else(|e| panic!("read_dir: {e}"));
    assert_eq!(entries, vec![std::ffi::OsString::from("keep.txt")]);
    assert_eq!(
        std::fs::read(occupied.join("keep.txt")).ok().as_deref(),
        Some(&b"precious"[..])
    );
    // Nor over a live store.
    let err = F::Store::restore_backup(&backup, &h.dir()).unwrap_err();
    assert!(
        matches!(err, Error::Invalid(_)),
        "expected Invalid, got {err}"
    );
    assert_eq!(get(&s, Keyspace::Meta, b"k").as_deref(), Some(&b"v"[..]));
}

/// Backing up into a directory that holds anything is refused and leaves it alone.
pub fn case_backup_into_non_empty_dir_refused<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    put(&s, Keyspace::Meta, b"k", b"v");
    let occupied = h.path("occupied");
    std::fs::create_dir(&occupied).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(occupied.join("keep.txt"), b"precious").unwrap_or_else(|e| panic!("write: {e}"));
    let err = s.backup(&occupied).unwrap_err();
    assert!(
        matches!(err, Error::Invalid(_)),
        "expected Invalid, got {err}"
    );
    let count = std::fs::read_dir(&occupied)
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("read_dir: {e}"));
    assert_eq!(count, 1);
    assert_eq!(
        std::fs::read(occupied.join("keep.txt")).ok().as_deref(),
        Some(&b"precious"[..])
    );
    // Nor into the store itself.
    let err = s.backup(&h.dir()).unwrap_err();
    assert!(
        matches!(err, Error::Invalid(_)),
        "expected Invalid, got {err}"
    );
    put(&s, Keyspace::Meta, b"k", b"still writable");
}

/// Stamp one `#[test]` per conformance case for a [`StoreFactory`] expression.
///
/// Invoke it inside a module (conventionally `mod conformance`); the expression is evaluated
/// once per test, with the module's names in scope:
///
/// ```text
/// mod conformance {
///     msite_core::store_conformance_tests!(super::SqliteFactory);
/// }
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::__store_conformance_cases! { $factory;
            ordering => case_ordering,
            range_bounds => case_range_bounds,
            keyspace_isolation => case_keyspace_isolation,
            get_missing => case_get_missing,
            overwrite => case_overwrite,
            delete => case_delete,
            delete_range => case_delete_range,
            empty_and_large_values => case_empty_and_large_values,
            batch_order => case_batch_order,
            batch_atomic_under_injected_failure => case_batch_atomic_under_injected_failure,
            batch_atomic_across_process_kill => case_batch_atomic_across_process_kill,
            precondition_success => case_precondition_success,
            precondition_failure_writes_nothing => case_precondition_failure_writes_nothing,
            durable_across_reopen => case_durable_across_reopen,
            snapshot_isolation_during_concurrent_commit => case_snapshot_isolation_during_concurrent_commit,
            snapshot_stable_across_many_writes => case_snapshot_stable_across_many_writes,
            scan_consistent_under_concurrent_writes => case_scan_consistent_under_concurrent_writes,
            random_ops_match_model => case_random_ops_match_model,
            backup_restore_identical => case_backup_restore_identical,
            backup_consistent_during_concurrent_writes => case_backup_consistent_during_concurrent_writes,
            integrity_check_passes_when_healthy => case_integrity_check_passes_when_healthy,
            integrity_check_catches_corruption => case_integrity_check_catches_corruption,
            second_open_refused => case_second_open_refused,
            poisoned_after_failed_sync_write => case_poisoned_after_failed_sync_write,
            faulty_crash_modes => case_faulty_crash_modes,
            restore_into_non_empty_dir_refused => case_restore_into_non_empty_dir_refused,
            backup_into_non_empty_dir_refused => case_backup_into_non_empty_dir_refused,
            chunked_content_round_trips => case_chunked_content_round_trips,
            chunked_content_streams => case_chunked_content_streams,
            deleting_chunked_content_removes_all_chunks => case_deleting_chunked_content_removes_all_chunks,
            content_over_the_limit_is_refused => case_content_over_the_limit_is_refused,
            versions_are_stored_as_deltas => case_versions_are_stored_as_deltas,
            deleting_a_delta_base_keeps_its_dependents => case_deleting_a_delta_base_keeps_its_dependents,
            damaged_packed_content_is_an_error => case_damaged_packed_content_is_an_error,
            bulk_load_reads_back_every_run => case_bulk_load_reads_back_every_run,
            bulk_load_stops_at_an_error => case_bulk_load_stops_at_an_error,
            bulk_load_of_no_rows => case_bulk_load_of_no_rows,
            compact_keeps_the_rows_and_returns_deleted_space => case_compact_keeps_the_rows_and_returns_deleted_space,
            compact_of_an_empty_store_and_twice => case_compact_of_an_empty_store_and_twice,
            random_ops_with_compactions_match_model => case_random_ops_with_compactions_match_model,
            long_histories_restart_chains_as_deltas => case_long_histories_restart_chains_as_deltas,
            a_drifted_version_restarts_whole => case_a_drifted_version_restarts_whole,
            received_deltas_restart_full_chains => case_received_deltas_restart_full_chains,
        }
    };
}

/// The expansion of [`store_conformance_tests!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($factory:expr; $($name:ident => $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::conformance::run(
                    $factory,
                    ::core::module_path!(),
                    ::core::stringify!($name),
                    $crate::testkit::conformance::$case,
                );
            }
        )*
    };
}
