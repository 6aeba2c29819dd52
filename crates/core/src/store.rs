//! The storage-engine plugin interface: what msite needs from a database, and nothing more.
//!
//! # For backend authors
//!
//! msite keeps every replica in an ordered key-value store with a small, **closed set of named
//! keyspaces** ([`Keyspace`]). A backend maps each keyspace to its own native namespace: a column
//! family in RocksDB, a `WITHOUT ROWID` table with a `BLOB` primary key in SQLite, a `BTreeMap` in
//! the reference [`MemStore`](crate::testkit::MemStore). All protocol logic (oplog, epoch
//! matrix, restore) is written once, in `msite-core`, over these bytes; a backend knows nothing of it.
//!
//! A backend implements [`Store`] (seven required methods) plus [`WriteBatch`] and
//! [`ReadView`] for its batch and snapshot types. Everything else is provided by [`StoreExt`].
//! The contract, which the shared conformance suite (`testkit::conformance`) checks case by
//! case (the case names are in brackets):
//!
//! * **Order.** Keys and values are arbitrary byte strings (keys may be empty, values up to at
//!   least 16 MiB, also across a reopen). Scans return keys in **bytewise lexicographic order**
//!   (`memcmp`, shorter prefix first: the empty key first, `0xff` keys last), within the bounds
//!   given, and never outside them: a backend must not trust a prefix iterator that runs past
//!   its prefix. Every kind of bound works, prefix ranges of `0xff` prefixes too; an empty
//!   range, or one whose start lies after its end, yields nothing (not an error).
//!   \[`ordering`, `range_bounds`, `empty_and_large_values`\]
//! * **Keyspaces** are separate namespaces for reads, writes, deletes and range deletes: the
//!   same key in two keyspaces is two keys. \[`keyspace_isolation`\]
//! * **Reads.** What is not there reads as `None` and as an empty scan, never an error, on the
//!   store and on snapshots. An empty value is a value (`Some(vec![])`), not absence. A later
//!   put replaces the value whatever the lengths, and the key is listed once. A delete removes
//!   the key (the empty key too); deleting a missing key is fine. `delete_range(start, end)`
//!   removes exactly `[start, end)`; an empty or inverted range removes nothing.
//!   [`ReadView::last`] is the pair with the largest key of the range (engines seek to it).
//!   \[`get_missing`, `overwrite`, `delete`, `delete_range`, `random_ops_match_model`\]
//! * **Atomic batches.** [`Store::write`] applies a whole [`WriteBatch`] or none of it, also when
//!   the process dies half-way. Operations in a batch apply in the order they were added (a
//!   later put of the same key wins, put-then-delete deletes, delete-then-put puts, a range
//!   delete removes the batch's earlier puts but not its later ones). [`WriteBatch::len`]
//!   counts puts, deletes and range deletes, not guards. A batch is consumed by `write`; it
//!   cannot be reused, and it can only be written to the store that made it. A write that fails
//!   (an I/O error, a guard that fails after many operations) leaves no trace and the store
//!   stays usable. An **empty batch is a valid write**; written with `sync`, it makes every
//!   earlier unsynced write durable. \[`batch_order`, `batch_atomic_under_injected_failure`,
//!   `batch_atomic_across_process_kill`\]
//! * **Preconditions.** A batch may carry [`WriteBatch::expect`] guards; `write` checks them
//!   atomically with the write, against the state just before the batch applies (not against
//!   the batch's own writes), and fails with [`Error::Precondition`] naming the guard's
//!   keyspace, without writing anything, if one does not hold. Backends serialise writers to
//!   make this true. \[`precondition_success`, `precondition_failure_writes_nothing`\]
//! * **Durability.** With [`WriteOptions::sync`] set, a successful `write` survives a power
//!   failure. Without it, a crash may lose a suffix of recent writes, but never part of one;
//!   a clean close keeps everything, synced or not. \[`durable_across_reopen`,
//!   `faulty_crash_modes`\]
//! * **Poisoning.** If a synced write fails, the store cannot know what reached the disk: every
//!   later write returns [`Error::Poisoned`] until the store is reopened, while reads go on;
//!   reopening clears it. \[`poisoned_after_failed_sync_write`\]
//! * **Snapshots.** [`Store::snapshot`] returns a [`ReadView`] that sees exactly the writes
//!   committed before it was taken, however long it lives and whatever commits meanwhile (in
//!   gets, in scans started later and in a scan already running). A scan on the store itself
//!   sees whole batches only. Plain reads on the store see the latest committed state.
//!   \[`snapshot_isolation_during_concurrent_commit`, `snapshot_stable_across_many_writes`,
//!   `scan_consistent_under_concurrent_writes`\]
//! * **Exclusive open.** A store directory is opened by one store at a time: a second open,
//!   **in the same process** or in another, fails with [`Error::Locked`] naming the directory;
//!   after the first store is dropped it opens again. \[`second_open_refused`\]
//! * **Vendor tools.** [`Store::backup`] writes a consistent backup into a new or empty directory
//!   while the store stays in use (RocksDB checkpoints/backup engine, SQLite's online backup
//!   API): it holds every batch whole or not at all, and at least everything committed before
//!   it started. [`Store::restore_backup`] makes a new store directory from such a backup: the
//!   same data, passing `check_integrity`, independent of the original. Both refuse a target
//!   that holds anything with [`Error::Invalid`] and leave it untouched: backing up into the
//!   store's own directory and restoring over a live store's directory are `Invalid` too.
//!   \[`backup_restore_identical`, `backup_consistent_during_concurrent_writes`,
//!   `backup_into_non_empty_dir_refused`, `restore_into_non_empty_dir_refused`\]
//!   An engine without a backup tool copies a [`Store::snapshot`] into a fresh store of its
//!   own kind under `dest` (what [`MemStore`](crate::testkit::MemStore) does with its image
//!   file); the backup must still be consistent while writes go on.
//! * **Integrity and damage.** [`Store::check_integrity`] runs the engine's own checker
//!   (checksum verification, `PRAGMA integrity_check`) and passes on healthy stores (empty,
//!   filled, after range deletes, after a reopen). It runs while the store is in use, with
//!   snapshots alive and writers going: it checks what is committed and neither waits for the
//!   snapshots nor counts them as damage. Damaged files are reported as
//!   [`Error::Corruption`], by **the open** or by `check_integrity` — never a panic and never
//!   another error. \[`integrity_check_passes_when_healthy`,
//!   `integrity_check_catches_corruption`\]
//! * **Packing.** [`Store::compact`] packs the store with the engine's own tool and changes no
//!   row; afterwards the store takes writes and reopens, and [`Store::size_on_disk`] (its
//!   directory's files, or a server's tables) shows the space of deleted rows given back.
//!   \[`compact_keeps_the_rows_and_returns_deleted_space`, `compact_of_an_empty_store_and_twice`\]
//!
//! What a backend cannot do (it keeps nothing on disk, has no second process, cannot be
//! damaged detectably) is declared in the factory's `Capabilities`; the cases that need it
//! then say so and pass. A real on-disk engine declares nothing.
//!
//! **Networked engines** (`msite-store-postgres`) keep the same contract over a connection:
//! the "store directory" holds connection settings, a read costs a round trip (so a batch must
//! go in a few statements and scans in pages, never a statement per key), "exclusive open" is
//! a lock held by the server for the store's session, and a transaction aborted by the engine
//! for a conflict (SQLSTATE 40001 on PostgreSQL-speaking engines) is re-run whole, guards
//! included, inside `write`: callers never see retries. `ARCHITECTURE.md` ("Networked
//! engines") says what a TiKV or FoundationDB backend would need beyond this.
//!
//! Pieces every backend implements the same way are in this module too: [`RecordedBatch`] (a
//! batch type for engines whose native batch borrows the database), [`PoisonFlag`] (the
//! poisoning rule) and [`prepare_empty_dir`] (the target check of backup and restore).
//!
//! # Adding a backend, step by step
//!
//! Say the engine is LMDB and the backend `lmdb`.
//!
//! 1. **The crate.** `crates/store-lmdb` (`msite-store-lmdb`), a member of the root
//!    `Cargo.toml` (and of `[workspace.dependencies]`); it depends on `msite-core`, never on
//!    another backend. Implement the three traits with backend-prefixed names (`LmdbStore`,
//!    `LmdbBatch`, `LmdbSnapshot`), plus `LmdbStore::open(dir)` (creating the store in a
//!    missing or empty directory) and `LmdbStore::dir()`. Every rule above, including
//!    [`ReadView::last`] by seeking and [`WriteBatch::reserve`] (both required, no default).
//!    Use [`RecordedBatch`], [`PoisonFlag`] and [`prepare_empty_dir`] where they fit.
//! 2. **The tests.** One integration-test binary, `tests/it/main.rs` (`[[test]] name = "it"`,
//!    `autotests = false`), with a `Clone` factory (`#[derive(Clone)] struct LmdbFactory`)
//!    implementing `testkit::conformance::StoreFactory` (`open`, and `corrupt`, which damages
//!    a closed store so that the open or `check_integrity` reports `Corruption`), and
//!    `mod conformance { msite_core::store_conformance_tests!(super::LmdbFactory); }` and
//!    `mod scenarios { msite_core::protocol_scenario_tests!(super::LmdbFactory); }` (the
//!    scenarios wrap the factory in a fault-injecting one, hence `Clone`). Engine-specific
//!    tests go in further modules of the same binary.
//! 3. **The one list** (`crates/backends`, `msite-backends`): a `Lmdb` variant of
//!    `BackendKind` in `src/kind.rs` and its arms (name `lmdb`, aliases, the engine's
//!    `backend_name`, production or not, store crate, engine crates), with the variant in
//!    `BackendKind::ALL`; a cargo feature `lmdb = ["dep:msite-store-lmdb"]`; the re-export
//!    of `LmdbStore`; a variant in `AnyStore`, `AnyBatch` and `AnySnapshot` and an arm of
//!    `each!` (`src/any.rs`); an `Engine` impl (`src/engine.rs`: `quiesce` waits for the
//!    engine's background work, if it has any) and the `__with_lmdb` pair of macros with its
//!    arm in `with_engine!`. The compiler points at each of these once the variant exists.
//! 4. **The programs.** A feature `lmdb = ["msite-backends/lmdb"]` in the CLI, the simulator
//!    and the bench (`msite-sim` also names the backend in its `Backend` enum, with its
//!    feature in `Backend::is_built`; the bench needs nothing else: it runs every compiled
//!    production engine).
//! 5. **The test matrix** (`xtask/src/test.rs` `MATRIX`): a row `-p msite-store-lmdb` and a row
//!    `-p msite-cli --no-default-features --features lmdb`, with `rocks: true` only if the
//!    row builds RocksDB.
//! 6. **Tidy** (`cargo test -p xtask`) then checks the rest from `BackendKind`: the engine
//!    crates never reach `msite-core` or `msite-packet`, backends do not depend on each other,
//!    the store crate is a member with its matrix rows, and the features exist.
//! 7. **Run it**: `cargo test -p msite-store-lmdb`, the CLI row, `cargo xtask sim --backend
//!    lmdb` (the same seeds give the same summary as in memory) and `cargo xtask bench`.
//! 8. **Docs**: the code map in `ARCHITECTURE.md` (the store crate's entry), the list of
//!    backends and how to build one in `README.md`, and the `--backend` help of `msite init`.

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};

mod support;

pub use support::{
    dir_bytes, lock_dir, prepare_empty_dir, OpKind, PoisonFlag, RecordedBatch, RecordedExpect,
    RecordedOp,
};

/// A file synced in the background as it is written: a backend's bulk load may use it so
/// that its commit's fsync does not wait for the whole new store (SQLite's does).
pub use msite_packet::EarlySyncEvery;

/// The closed set of keyspaces every backend provides. Adding one is a format change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// Local singletons: identity of the family and replica, lock and restore flags, settings.
    Meta,
    /// The oplog: `(origin, number)` → the applied entry, in its canonical encoding.
    Oplog,
    /// The epoch matrix: the own row and an estimate row per sibling.
    Epochs,
    /// Per-sibling synchronisation state: incarnations, packet sequences, export log,
    /// restore requests held for propagation.
    Peers,
    /// The versioned object base: elements, types, branches, versions, labels, names.
    State,
    /// Version content, stored once by its BLAKE3 hash.
    Blobs,
}

impl Keyspace {
    /// Every keyspace, in a fixed order.
    pub const ALL: [Keyspace; 6] = [
        Keyspace::Meta,
        Keyspace::Oplog,
        Keyspace::Epochs,
        Keyspace::Peers,
        Keyspace::State,
        Keyspace::Blobs,
    ];

    /// A stable lower-case name, used for column family and table names.
    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Meta => "meta",
            Keyspace::Oplog => "oplog",
            Keyspace::Epochs => "epochs",
            Keyspace::Peers => "peers",
            Keyspace::State => "state",
            Keyspace::Blobs => "blobs",
        }
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A range of keys for [`ReadView::scan`]: any pair of bounds over byte strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// Lower bound.
    pub start: Bound<Vec<u8>>,
    /// Upper bound.
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// `start <= key < end`.
    pub fn between(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Excluded(end.into()),
        }
    }

    /// `key >= start`.
    pub fn from(start: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Unbounded,
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        let start = Bound::Included(prefix.to_vec());
        let end = match prefix_successor(prefix) {
            Some(next) => Bound::Excluded(next),
            None => Bound::Unbounded,
        };
        KeyRange { start, end }
    }

    /// Whether the bounds select no key at all (start after end, or equal and not both
    /// included).
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
                s >= e
            }
        }
    }

    /// Whether `key` lies inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let above = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }
}

/// The smallest byte string greater than every string that starts with `prefix`, if any
/// (there is none when the prefix is empty or all `0xff`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < 0xff {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// Options for [`Store::write`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Make the write durable (fsync, or the engine's equivalent) before returning.
    pub sync: bool,
}

impl WriteOptions {
    /// A durable write.
    pub const SYNC: WriteOptions = WriteOptions { sync: true };
    /// A write that may be lost (whole) on power failure.
    pub const NO_SYNC: WriteOptions = WriteOptions { sync: false };
}

/// A key-value pair as returned by scans.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The iterator returned by [`ReadView::scan`].
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KeyValue>> + 'a>;

/// Reads: implemented by every store (latest committed state) and by its snapshots.
pub trait ReadView {
    /// The value stored under `key`, if any.
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The pairs whose keys lie in `range`, in bytewise key order.
    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>>;

    /// The pair with the largest key in `range`, if any. Engines seek to the range's end (the
    /// latest version of a branch is read this way, at every check-in); a wrapper forwards to
    /// what it wraps. Required, with no default, so that no wrapper can silently fall back to a
    /// scan; a store with no way to seek backwards calls [`last_by_scan`].
    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>>;

    /// Calls `f` with each pair whose key lies in `range`, in bytewise key order, until `f`
    /// returns false. The pair is lent for the call only, so an engine hands out its own
    /// buffers instead of a copy of every key and value (a snapshot's export reads the whole
    /// object base and all content this way). Required, as [`ReadView::last`] is, so that no
    /// wrapper silently copies; a view with nothing cheaper calls [`scan_each_by_scan`].
    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()>;
}

/// What [`ReadView::scan_each`] calls with each pair: false stops the scan.
pub type PairFn<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

/// [`ReadView::scan_each`] over [`ReadView::scan`], a copy of each pair: for views that hold
/// their rows as owned pairs anyway, or merge them.
pub fn scan_each_by_scan<V: ReadView + ?Sized>(
    view: &V,
    ks: Keyspace,
    range: KeyRange,
    f: &mut PairFn<'_>,
) -> Result<()> {
    for kv in view.scan(ks, range)? {
        let (k, v) = kv?;
        if !f(&k, &v) {
            break;
        }
    }
    Ok(())
}

/// [`ReadView::last`] for a view that can only scan forwards: walks the whole range, so its
/// cost grows with the range. Engines do not use it.
pub fn last_by_scan<V: ReadView + ?Sized>(
    view: &V,
    ks: Keyspace,
    range: KeyRange,
) -> Result<Option<KeyValue>> {
    let mut last = None;
    for kv in view.scan(ks, range)? {
        last = Some(kv?);
    }
    Ok(last)
}

/// A set of writes applied atomically by [`Store::write`].
pub trait WriteBatch: Send {
    /// Set `key` to `value`.
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]);
    /// Remove `key` (no error if absent).
    fn delete(&mut self, ks: Keyspace, key: &[u8]);
    /// Remove every key in `[start, end)`.
    fn delete_range(&mut self, ks: Keyspace, start: &[u8], end: &[u8]);
    /// Fail the whole write with [`Error::Precondition`] unless, just before it applies,
    /// `key` holds `expected` (`None`: the key is absent).
    fn expect(&mut self, ks: Keyspace, key: &[u8], expected: Option<&[u8]>);
    /// Number of writes (puts, deletes, range deletes) in the batch.
    fn len(&self) -> usize;
    /// Whether the batch holds no writes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A hint: about `ops` more writes of `bytes` key and value bytes in all will follow, so
    /// the batch can allocate once instead of growing. Required (a batch with nothing to
    /// allocate ignores it) so that a wrapper cannot drop the hint by forgetting to forward it.
    fn reserve(&mut self, ops: usize, bytes: usize);
}

/// An ordered, transactional key-value store. See the module documentation for the contract.
pub trait Store: ReadView + Send + Sync + 'static {
    /// The backend's write batch.
    type Batch: WriteBatch;
    /// A consistent read-only view at one point in time.
    type Snapshot<'a>: ReadView + 'a
    where
        Self: 'a;

    /// A short name of the engine (`"rocksdb"`, `"sqlite"`, `"memory"`).
    fn backend_name(&self) -> &'static str;

    /// A new, empty batch for this store.
    fn batch(&self) -> Self::Batch;

    /// Apply `batch` atomically (see the module docs for preconditions and durability).
    fn write(&self, batch: Self::Batch, opts: WriteOptions) -> Result<()>;

    /// A consistent view of the store as of now.
    fn snapshot(&self) -> Result<Self::Snapshot<'_>>;

    /// Write a consistent backup of the store into `dest` (which must not exist or be empty)
    /// with the engine's own tool, while the store stays in use.
    fn backup(&self, dest: &Path) -> Result<()>;

    /// Run the engine's integrity checker over the whole store.
    fn check_integrity(&self) -> Result<()>;

    /// Packs the store with the engine's own tool, as `git gc` packs a repository: the space of
    /// deleted and overwritten rows goes back to the file system and what stays is kept as the
    /// engine keeps settled data (RocksDB compacts every column family into its compressed
    /// bottom level, SQLite and PostgreSQL `VACUUM`, the memory store rewrites its log as one
    /// image). No row changes. Other work may wait while it runs (SQLite's writers; PostgreSQL's
    /// readers and writers, table by table); it may need free space for a second copy of what
    /// stays. `msite compact` runs it.
    fn compact(&self) -> Result<()>;

    /// The bytes the store takes where the engine keeps it: the files of its directory, or on
    /// a database server its tables with their indexes and TOAST.
    fn size_on_disk(&self) -> Result<u64>;

    /// Loads `rows` (keyspace, key, value) into a new store, as fast as the engine can while
    /// staying safe; returns how many rows it wrote. Used to make a replica from a snapshot
    /// creation packet (`sync/snapshot.rs`).
    ///
    /// The contract:
    /// * **Input.** The rows come in *sorted runs*: within a run, one keyspace and strictly
    ///   ascending keys; a run ends where the keyspace changes or a key does not ascend. The
    ///   store holds none of the keys beforehand (callers load into a store made for it); a
    ///   key given twice ends with the later value. The rows are streamed: a backend must not
    ///   collect them all in memory (an engine that needs sorted files, such as RocksDB's SST
    ///   ingestion, writes each run to a file as it goes and ingests the files at the end).
    /// * **Errors.** The iterator may yield an error (the packet turned out damaged): the load
    ///   stops and returns an error (that one, or its own); so does any engine failure.
    /// * **Durability.** When it returns `Ok`, every row is as durable as after a synced
    ///   [`Store::write`] and visible to reads. It is *not* atomic: after an error, a crash or a
    ///   power failure the store may hold any subset of the rows. The caller marks the store as
    ///   incomplete with a synced write before loading and clears the mark only in a synced
    ///   write after the load returned `Ok` (what `create_from_packet` does), so an interrupted
    ///   load is found and refused, never taken for a whole one.
    /// * **Other writers.** None run during a load; reads may see part of it.
    ///
    /// The default writes batches of about [`BULK_BATCH_BYTES`] unsynced, then one empty synced
    /// write, which makes them all durable (an empty synced batch does, by the contract above).
    /// SQLite writes everything in one transaction; RocksDB writes SST files and ingests them;
    /// the PostgreSQL store keeps the default.
    fn bulk_load(&self, rows: BulkRows<'_>) -> Result<u64> {
        let mut batch = self.batch();
        let (mut bytes, mut count) = (0usize, 0u64);
        rows.each_row(&mut |ks, k, v| {
            bytes += k.len() + v.len();
            batch.put(ks, k, v);
            count += 1;
            if bytes >= BULK_BATCH_BYTES {
                self.write(
                    std::mem::replace(&mut batch, self.batch()),
                    WriteOptions::NO_SYNC,
                )?;
                bytes = 0;
            }
            Ok(())
        })?;
        self.write(batch, WriteOptions::NO_SYNC)?;
        self.write(self.batch(), WriteOptions::SYNC)?;
        Ok(count)
    }

    /// Make a new store directory `dest` from a backup written by [`Store::backup`].
    fn restore_backup(backup: &Path, dest: &Path) -> Result<()>
    where
        Self: Sized;
}

/// The rows [`Store::bulk_load`] takes: (keyspace, key, value) in sorted runs.
pub type BulkRows<'a> = &'a mut dyn BulkSource;

/// What a [`BulkSource`] calls with each row (keyspace, key, value).
pub type RowWriter<'a> = &'a mut dyn FnMut(Keyspace, &[u8], &[u8]) -> Result<()>;

/// Where [`Store::bulk_load`]'s rows come from. The rows are lent, one call each, so a source
/// may keep them in buffers it reuses (a snapshot load hands them from the packet's thread to
/// the store's in shared batches, `sync/row_batch.rs`); any iterator of owned rows is one.
pub trait BulkSource {
    /// Calls `row` with each row in order. Stops at the first error: the source's own (the
    /// rows turned out damaged) or the one `row` returned, which it returns.
    fn each_row(&mut self, row: RowWriter<'_>) -> Result<()>;
}

impl<I> BulkSource for I
where
    I: Iterator<Item = Result<(Keyspace, Vec<u8>, Vec<u8>)>>,
{
    fn each_row(&mut self, row: RowWriter<'_>) -> Result<()> {
        for item in self {
            let (ks, k, v) = item?;
            row(ks, &k, &v)?;
        }
        Ok(())
    }
}

/// The size of the unsynced batches of the default [`Store::bulk_load`].
pub const BULK_BATCH_BYTES: usize = 32 << 20;

/// Conveniences over [`Store`]; implemented for every store, never by hand.
pub trait StoreExt: Store {
    /// Write a single key.
    fn put_one(&self, ks: Keyspace, key: &[u8], value: &[u8], opts: WriteOptions) -> Result<()> {
        let mut b = self.batch();
        b.put(ks, key, value);
        self.write(b, opts)
    }

    /// Delete a single key.
    fn delete_one(&self, ks: Keyspace, key: &[u8], opts: WriteOptions) -> Result<()> {
        let mut b = self.batch();
        b.delete(ks, key);
        self.write(b, opts)
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Storage errors, shared by every backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`WriteBatch::expect`] guard did not hold; nothing was written.
    #[error("precondition failed in keyspace {keyspace}: the key did not hold the expected value")]
    Precondition {
        /// Where the guard was.
        keyspace: Keyspace,
    },
    /// The engine found damaged data.
    #[error("the store is corrupt: {0}")]
    Corruption(String),
    /// The store directory is open in another process.
    #[error("the store at {path} is in use by another process; stop it (or wait for it to finish) and try again")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// A durable write failed earlier; the store refuses writes until it is reopened.
    #[error("the store refuses writes after an earlier failed durable write; reopen it to find out what reached the disk")]
    Poisoned,
    /// A file-system error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An invalid argument (e.g. a backup into a non-empty directory).
    #[error("{0}")]
    Invalid(String),
    /// Any other error of the engine, boxed.
    #[error("{backend} error: {source}")]
    Backend {
        /// The engine's name.
        backend: &'static str,
        /// The engine's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// RocksDB's bulk load keeps its open files in a list indexed by `Keyspace as usize`, built
    /// from [`Keyspace::ALL`]: the two must agree.
    #[test]
    fn keyspaces_are_listed_in_the_order_of_their_numbers() {
        for (i, ks) in Keyspace::ALL.iter().enumerate() {
            assert_eq!(*ks as usize, i, "{ks:?}");
        }
    }

    #[test]
    fn prefix_successor_handles_ff_and_empty() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[0x01, 0xff]), Some(vec![0x02]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[test]
    fn prefix_range_contains_exactly_the_prefixed_keys() {
        let r = KeyRange::prefix(&[0x01, 0xff]);
        assert!(r.contains(&[0x01, 0xff]));
        assert!(r.contains(&[0x01, 0xff, 0xff, 0x00]));
        assert!(!r.contains(&[0x02]));
        assert!(!r.contains(&[0x01, 0xfe, 0xff]));
        let all_ff = KeyRange::prefix(&[0xff]);
        assert!(all_ff.contains(&[0xff, 0xff, 0xff]));
        assert!(!all_ff.contains(&[0xfe]));
    }
}
