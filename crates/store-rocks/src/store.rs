//! [`RocksStore`]: opening, writes, the vendor tools.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use msite_core::store::{
    dir_bytes, lock_dir, prepare_empty_dir, BulkRows, Error, KeyRange, KeyValue, Keyspace, PairFn,
    PoisonFlag, ReadView, Result, ScanIter, Store, WriteOptions,
};
use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, ColumnFamily, ColumnFamilyDescriptor,
    CompactOptions, DBCompressionType, DBRawIteratorWithThreadMode, Env, Options, ReadOptions, DB,
};

use crate::error::{map, map_open, RocksResultExt, BACKEND};
use crate::iter::{scan_options, RocksIter};
use crate::snapshot::RocksSnapshot;
use crate::RocksBatch;

/// An ordered key-value store in a RocksDB database. See the [crate documentation](crate).
pub struct RocksStore {
    /// Shared with the store's batches, which write into `rocksdb::WriteBatch`es directly.
    db: Arc<DB>,
    dir: PathBuf,
    /// Serialises writers, so guards are checked and the batch written with no writer between.
    writer: Mutex<()>,
    poisoned: PoisonFlag,
    /// msite's own lock on the directory ([`OPEN_LOCK`]), taken before RocksDB touches it and
    /// released after the database above is closed.
    _lock: fs::File,
}

/// The file msite locks before RocksDB opens a directory. RocksDB takes its own `LOCK` only
/// after it has started a new diagnostic log and deleted the oldest ones, so without this a
/// process waiting for a busy store renamed the running one's `LOG` and raced it deleting old
/// logs ("IO error: … while unlink() file: …/LOG.old…"), where it should simply wait.
const OPEN_LOCK: &str = "msite.lock";

impl Drop for RocksStore {
    /// A clean close flushes the memtables, so the next open has no write-ahead log to replay.
    /// RocksDB itself does not flush at close while the WAL is on, and replaying a large last
    /// batch (a whole tree checked in at once) costs its size in memory two or three times over
    /// at the next open. A failure here loses nothing: the WAL still holds every write.
    fn drop(&mut self) {
        if !self.poisoned.is_set() {
            let _ = self.flush();
        }
    }
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_paranoid_checks(true);
    opts.increase_parallelism(2);
    // Opening loads every table file's handle with this many threads per column family
    // (RocksDB's default is 16): 7 families made each `msite` command start over a hundred
    // threads before it read a row.
    opts.set_max_file_opening_threads(OPENING_THREADS);
    opts.set_compression_type(DBCompressionType::Lz4);
    // One budget for the memtables of all column families together (RocksDB's write buffer
    // manager): without it each family may hold two 64 MiB memtables, and an import that fills
    // several families at once grows past msite's memory goal (150 MiB for a 1 GiB packet).
    opts.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
    // RocksDB's diagnostic log (`LOG`): every open starts a new one and renames the last to
    // `LOG.old.*`, and every `msite` command opens the store, so RocksDB's default (keep a
    // thousand, of about 100 KiB each) grew an idle site's directory by megabytes a day.
    opts.set_keep_log_file_num(KEPT_INFO_LOGS);
    opts.set_max_log_file_size(MAX_INFO_LOG_BYTES);
    opts
}

/// Threads loading table files per column family at open.
const OPENING_THREADS: i32 = 2;

/// The diagnostic logs kept: `LOG` and this many minus one older ones.
pub(crate) const KEPT_INFO_LOGS: usize = 4;
/// A diagnostic log this large is closed and a new one begun (a long-running `msite serve`).
const MAX_INFO_LOG_BYTES: usize = 4 << 20;

/// The memtable budget shared by all column families.
const DB_WRITE_BUFFER_BYTES: usize = 64 << 20;

pub(crate) fn cf_options(ks: Keyspace) -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    // Flushes write L0 uncompressed, compactions into the levels below compress: compressing
    // every flushed block was a sixth of an import's instructions (on the second core, which
    // an import also needs), for files that live only until the next compaction.
    opts.set_compression_per_level(&COMPRESSION_PER_LEVEL);
    if ks == Keyspace::Blobs {
        // Content: smaller memtables (at most two of 32 MiB, where the shared budget alone
        // let an import's content memtables reach 86 MB and more), and values of 4 KiB and
        // more kept in blob files, written once at flush and never rewritten by compactions:
        // without blob files, flushing 32 MiB memtables made as many 32 MiB L0 files, and
        // compacting them rewrote every byte several times (a 1 GiB import took twice as
        // long). Blob files are not compressed (LZ4 cost 10 % of the import's time on
        // incompressible content) and not garbage-collected (GC relocates live blobs during
        // compactions, a third more CPU in an import): the space of deleted content (only
        // a restoration's retirement deletes any) is freed once all of its file is deleted.
        opts.set_write_buffer_size(BLOB_WRITE_BUFFER_BYTES);
        opts.set_max_write_buffer_number(2);
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(MIN_BLOB_BYTES);
    }
    if is_small(ks) {
        // The small families, read a dozen times by every export, import and local change
        // (own row, estimates, send and receive state, restore flags). Nearly every batch
        // writes them, so every flush (also one the WAL or the memtable budget forces while
        // another family fills) added an L0 file to each: with RocksDB's default trigger of
        // four, a read walked up to three L0 files plus the level below, without a filter
        // also for every absent key (the restore flags, a sibling's restore request), and a
        // scan merged them all. Now a compaction follows every flush (it rewrites the family:
        // kilobytes, up to megabytes for `peers` after very many packets), and the filter
        // answers absent keys without reading a block.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(SMALL_BLOOM_BITS_PER_KEY, false);
        opts.set_block_based_table_factory(&table);
        opts.set_level_zero_file_num_compaction_trigger(1);
    }
    opts
}

/// Keyspaces of a few entries per sibling or per packet, not per oplog entry: `meta`,
/// `epochs`, `peers`.
fn is_small(ks: Keyspace) -> bool {
    matches!(ks, Keyspace::Meta | Keyspace::Epochs | Keyspace::Peers)
}

/// Bloom filter bits per key in the small families (about 1 % false positives).
const SMALL_BLOOM_BITS_PER_KEY: f64 = 10.0;

/// No compression in L0, LZ4 below (RocksDB's default seven levels).
const COMPRESSION_PER_LEVEL: [DBCompressionType; 7] = [
    DBCompressionType::None,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
    DBCompressionType::Lz4,
];

/// Blob garbage collection over every blob file, for [`Store::compact`] only: at other times
/// it would relocate live content during ordinary compactions (see `cf_options`).
const BLOB_GC_ON: [(&str, &str); 2] = [
    ("enable_blob_garbage_collection", "true"),
    ("blob_garbage_collection_age_cutoff", "1.0"),
];
const BLOB_GC_OFF: [(&str, &str); 1] = [("enable_blob_garbage_collection", "false")];

/// The memtable size of the `blobs` column family.
const BLOB_WRITE_BUFFER_BYTES: usize = 32 << 20;
/// Values of the `blobs` column family this large or larger go to blob files.
const MIN_BLOB_BYTES: u64 = 4096;

impl RocksStore {
    /// Open (creating it if needed) the store in directory `dir`.
    ///
    /// Fails with [`Error::Locked`] if the directory is open elsewhere (in this process or
    /// another) and with [`Error::Corruption`] if RocksDB finds damaged files.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let lock = lock_dir(dir, OPEN_LOCK)?;
        let cfs = Keyspace::ALL.map(|ks| ColumnFamilyDescriptor::new(ks.name(), cf_options(ks)));
        let db = DB::open_cf_descriptors(&db_options(), dir, cfs).map_err(|e| map_open(e, dir))?;
        Ok(RocksStore {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
            writer: Mutex::new(()),
            poisoned: PoisonFlag::default(),
            _lock: lock,
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flush every column family's memtable into SST files (tests and tools use it to get
    /// everything into table files).
    pub fn flush(&self) -> Result<()> {
        for ks in Keyspace::ALL {
            self.db.flush_cf(self.cf(ks)?).r2e()?;
        }
        Ok(())
    }

    /// Waits until no flush or compaction is running or pending (benchmarks time foreground
    /// work on a quiet store with it; nothing needs it for correctness).
    pub fn wait_for_background_work(&self) -> Result<()> {
        self.db
            .wait_for_compact(&rocksdb::WaitForCompactOptions::default())
            .r2e()
    }

    /// How many background errors (failed flushes and compactions) RocksDB has met since open.
    fn background_errors(&self) -> Result<u64> {
        Ok(self
            .db
            .property_int_value("rocksdb.background-errors")
            .r2e()?
            .unwrap_or(0))
    }

    /// The database (the bulk loader ingests files into it).
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// Takes the writer lock: no other writer runs until the guard is dropped.
    #[cfg(test)]
    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, ()> {
        lock(&self.writer)
    }

    /// A raw iterator over `range` in `ks` ([`scan_options`]).
    fn raw_iter(
        &self,
        ks: Keyspace,
        range: &KeyRange,
    ) -> Result<DBRawIteratorWithThreadMode<'_, DB>> {
        Ok(self
            .db
            .raw_iterator_cf_opt(self.cf(ks)?, scan_options(ks, range)))
    }

    /// The column family of `ks`. Every keyspace's family is created on open, so the lookup
    /// only fails if the directory was tampered with while open.
    pub(crate) fn cf(&self, ks: Keyspace) -> Result<&ColumnFamily> {
        self.db.cf_handle(ks.name()).ok_or_else(|| Error::Backend {
            backend: BACKEND,
            source: format!("column family {ks} is missing").into(),
        })
    }

    /// Checks the batch's guards (the writer lock is held, so no writer comes in between).
    fn check_guards(&self, batch: &RocksBatch) -> Result<()> {
        for g in &batch.expects {
            let current = self.db.get_cf(self.cf(g.ks)?, &g.key).r2e()?;
            if current != g.value {
                return Err(Error::Precondition { keyspace: g.ks });
            }
        }
        Ok(())
    }

    fn write_locked(&self, mut batch: RocksBatch, opts: WriteOptions) -> Result<()> {
        if !Arc::ptr_eq(&batch.db, &self.db) {
            return Err(Error::Invalid(
                "a batch can only be written to the store that made it".into(),
            ));
        }
        self.check_guards(&batch)?;
        let wb = batch.take().filter(|wb| !wb.is_empty());
        drop(batch);
        let Some(wb) = wb else {
            if opts.sync {
                // Make earlier unsynced writes durable.
                self.db.flush_wal(true).r2e()?;
            }
            return Ok(());
        };
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(opts.sync);
        self.db.write_opt(wb, &wo).r2e()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The mutex guards no data, only the order of writers.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn backup_engine(dir: &Path) -> Result<BackupEngine> {
    let env = Env::new().r2e()?;
    let opts = BackupEngineOptions::new(dir).r2e()?;
    BackupEngine::open(&opts, &env).r2e()
}

impl ReadView for RocksStore {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(ks)?, key).r2e()
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        Ok(Box::new(RocksIter::new(self.raw_iter(ks, &range)?, range)))
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        crate::iter::last_in(self.raw_iter(ks, &range)?, &range)
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        RocksIter::new(self.raw_iter(ks, &range)?, range).each(f)
    }
}

impl Store for RocksStore {
    type Batch = RocksBatch;
    type Snapshot<'a> = RocksSnapshot<'a>;

    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn batch(&self) -> RocksBatch {
        RocksBatch::new(Arc::clone(&self.db))
    }

    fn write(&self, batch: RocksBatch, opts: WriteOptions) -> Result<()> {
        let _writer = lock(&self.writer);
        self.poisoned.check()?;
        let res = self.write_locked(batch, opts);
        self.poisoned.observe(opts, &res);
        res
    }

    /// SST files ingested run by run (`bulk.rs`).
    fn bulk_load(&self, rows: BulkRows<'_>) -> Result<u64> {
        let _writer = lock(&self.writer);
        self.poisoned.check()?;
        Ok(self
            .bulk_load_locked(rows, crate::bulk::SST_FILE_BYTES)?
            .rows)
    }

    fn snapshot(&self) -> Result<RocksSnapshot<'_>> {
        Ok(RocksSnapshot {
            snap: self.db.snapshot(),
            store: self,
        })
    }

    fn backup(&self, dest: &Path) -> Result<()> {
        prepare_empty_dir(dest)?;
        let mut engine = backup_engine(dest)?;
        engine.create_new_backup_flush(&self.db, true).r2e()
    }

    fn check_integrity(&self) -> Result<()> {
        for ks in Keyspace::ALL {
            let mut ro = ReadOptions::default();
            ro.set_verify_checksums(true);
            ro.fill_cache(false);
            let mut it = self.db.raw_iterator_cf_opt(self.cf(ks)?, ro);
            it.seek_to_first();
            while it.valid() {
                it.next();
            }
            it.status().map_err(|e| match map(e) {
                Error::Corruption(m) => Error::Corruption(format!("column family {ks}: {m}")),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Compacts every column family into its bottom level (LZ4; flushes write L0 uncompressed),
    /// with blob garbage collection on for the `blobs` family meanwhile, so that blob files
    /// holding deleted content are rewritten without it.
    fn compact(&self) -> Result<()> {
        let failures_before = self.background_errors()?;
        let mut opts = CompactOptions::default();
        opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        let families = Keyspace::ALL.map(|ks| self.cf(ks));
        let families = families.into_iter().collect::<Result<Vec<_>>>()?;
        let blobs = self.cf(Keyspace::Blobs)?;
        // Every lookup that can fail is done: nothing returns between GC on and GC off.
        self.db.set_options_cf(blobs, &BLOB_GC_ON).r2e()?;
        for cf in families {
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        }
        self.db.set_options_cf(blobs, &BLOB_GC_OFF).r2e()?;
        // `compact_range` reports no error of its own: a failed compaction shows as a
        // background error (and RocksDB then refuses writes until it is resolved).
        if self.background_errors()? > failures_before {
            return Err(Error::Backend {
                backend: BACKEND,
                source: format!(
                    "compacting {} failed; RocksDB's LOG file there says why (a full disk?)",
                    self.dir.display()
                )
                .into(),
            });
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        dir_bytes(&self.dir)
    }

    fn restore_backup(backup: &Path, dest: &Path) -> Result<()> {
        if !backup.join("meta").is_dir() {
            return Err(Error::Invalid(format!(
                "{} holds no RocksDB store backup",
                backup.display()
            )));
        }
        prepare_empty_dir(dest)?;
        let mut engine = backup_engine(backup)?;
        engine
            .restore_from_latest_backup(dest, dest, &RestoreOptions::default())
            .r2e()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msite_core::store::WriteBatch;

    fn property(store: &RocksStore, ks: Keyspace, name: &str) -> String {
        store
            .db
            .property_value_cf(store.cf(ks).unwrap(), name)
            .unwrap()
            .unwrap_or_default()
    }

    /// Sorted runs of a family: L0 files count one each, every non-empty level one.
    fn sorted_runs(store: &RocksStore, ks: Keyspace) -> usize {
        (0..7)
            .map(|level| {
                let files: usize =
                    property(store, ks, &format!("rocksdb.num-files-at-level{level}"))
                        .parse()
                        .unwrap();
                if level == 0 {
                    files
                } else {
                    files.min(1)
                }
            })
            .sum()
    }

    /// A scan of a whole keyspace leaves the block cache as it was; a scan of part of one
    /// fills it, for the gets that follow.
    #[test]
    fn a_whole_scan_leaves_the_block_cache_alone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RocksStore::open(dir.path()).unwrap();
            let mut b = store.batch();
            for i in 0..20_000u32 {
                b.put(Keyspace::State, &i.to_be_bytes(), &[i as u8; 100]);
            }
            store.write(b, WriteOptions::SYNC).unwrap();
            store.flush().unwrap();
        }
        let store = RocksStore::open(dir.path()).unwrap();
        let cached = || -> u64 {
            property(&store, Keyspace::State, "rocksdb.block-cache-usage")
                .parse()
                .unwrap()
        };
        let before = cached();
        assert_eq!(
            store
                .scan(Keyspace::State, KeyRange::all())
                .unwrap()
                .count(),
            20_000
        );
        assert!(cached() < before + (64 << 10), "{before} → {}", cached());
        let part = KeyRange::prefix(&[0]);
        assert!(store.scan(Keyspace::State, part).unwrap().count() > 10_000);
        assert!(cached() > before + (1 << 20), "{before} → {}", cached());
    }

    /// Every open starts a new diagnostic log; a site opened by one command after another
    /// keeps only the last few.
    #[test]
    fn reopening_keeps_a_few_diagnostic_logs() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..KEPT_INFO_LOGS + 6 {
            drop(RocksStore::open(dir.path()).unwrap());
        }
        let logs = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("LOG")
            })
            .count();
        assert!(
            (1..=KEPT_INFO_LOGS).contains(&logs),
            "{logs} diagnostic logs after {} opens",
            KEPT_INFO_LOGS + 6
        );
    }

    #[test]
    fn small_families_stay_one_sorted_run_with_a_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        for round in 0u64..3 {
            let mut batch = store.batch();
            for ks in Keyspace::ALL {
                batch.put(ks, b"key", &round.to_be_bytes());
            }
            store.write(batch, WriteOptions::NO_SYNC).unwrap();
            store.flush().unwrap();
        }
        store.wait_for_background_work().unwrap();
        for ks in Keyspace::ALL {
            let runs = sorted_runs(&store, ks);
            let tables = property(&store, ks, "rocksdb.aggregated-table-properties");
            let filtered = !tables.contains("filter block size=0;");
            if is_small(ks) {
                assert_eq!(runs, 1, "{ks}: {runs} sorted runs after three flushes");
                assert!(filtered, "{ks} has no filter: {tables}");
            } else {
                // No filter to build at every flush of an import.
                assert!(!filtered, "{ks} has a filter: {tables}");
            }
            assert_eq!(
                store.get(ks, b"key").unwrap(),
                Some(2u64.to_be_bytes().to_vec())
            );
        }
    }

    #[test]
    fn a_reopened_store_finds_the_small_families_in_one_sorted_run() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0u64..3 {
            let store = RocksStore::open(dir.path()).unwrap();
            // Each open finds what the last close left, before any background work here: the
            // run the close's flush made may not be compacted yet (closing cancels a compaction
            // that has not started; the open schedules it again), so two at most, as a read
            // meets while that compaction runs. Without the compaction after every flush the
            // runs would pile up: four at the third open.
            for ks in Keyspace::ALL {
                if is_small(ks) {
                    let runs = sorted_runs(&store, ks);
                    assert!(runs <= 2, "{ks}: {runs} sorted runs at open {round}");
                }
            }
            for i in 0u64..50 {
                let mut batch = store.batch();
                for ks in Keyspace::ALL {
                    batch.put(ks, &i.to_be_bytes(), &round.to_be_bytes());
                }
                store.write(batch, WriteOptions::NO_SYNC).unwrap();
            }
            store.flush().unwrap();
            let mut batch = store.batch();
            for ks in Keyspace::ALL {
                batch.put(ks, b"last", &round.to_be_bytes());
            }
            store.write(batch, WriteOptions::NO_SYNC).unwrap();
        }
    }

    #[test]
    fn empty_range_detection() {
        use std::ops::Bound;
        assert!(KeyRange::between(b"b".to_vec(), b"a".to_vec()).is_empty());
        assert!(KeyRange::between(b"a".to_vec(), b"a".to_vec()).is_empty());
        let single = KeyRange {
            start: Bound::Included(b"a".to_vec()),
            end: Bound::Included(b"a".to_vec()),
        };
        assert!(!single.is_empty());
    }
}
