//! [`RocksStore`]: opening, writes, the vendor tools.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use msite_core::store::{
    prepare_empty_dir, Error, KeyRange, Keyspace, OpKind, PoisonFlag, ReadView, Result, ScanIter,
    Store, WriteOptions,
};
use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Env, Options, ReadOptions, DB,
};

use crate::error::{map, map_open, RocksResultExt, BACKEND};
use crate::iter::{scan_options, RocksIter};
use crate::snapshot::RocksSnapshot;
use crate::RocksBatch;

/// An ordered key-value store in a RocksDB database. See the [crate documentation](crate).
pub struct RocksStore {
    db: DB,
    dir: PathBuf,
    /// Serialises writers, so guards are checked and the batch written with no writer between.
    writer: Mutex<()>,
    poisoned: PoisonFlag,
}

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
    opts.set_compression_type(DBCompressionType::Lz4);
    // One budget for the memtables of all column families together (RocksDB's write buffer
    // manager): without it each family may hold two 64 MiB memtables, and an import that fills
    // several families at once grows past msite's memory goal (150 MiB for a 1 GiB packet).
    opts.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
    opts
}

/// The memtable budget shared by all column families.
const DB_WRITE_BUFFER_BYTES: usize = 64 << 20;

fn cf_options() -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    opts
}

impl RocksStore {
    /// Open (creating it if needed) the store in directory `dir`.
    ///
    /// Fails with [`Error::Locked`] if the directory is open elsewhere (in this process or
    /// another) and with [`Error::Corruption`] if RocksDB finds damaged files.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let cfs = Keyspace::ALL.map(|ks| ColumnFamilyDescriptor::new(ks.name(), cf_options()));
        let db = DB::open_cf_descriptors(&db_options(), dir, cfs).map_err(|e| map_open(e, dir))?;
        Ok(RocksStore {
            db,
            dir: dir.to_path_buf(),
            writer: Mutex::new(()),
            poisoned: PoisonFlag::default(),
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
        for e in batch.expects() {
            let (key, expected) = batch.guard(e);
            let current = self.db.get_cf(self.cf(e.ks)?, key).r2e()?;
            if current.as_deref() != expected {
                return Err(Error::Precondition { keyspace: e.ks });
            }
        }
        Ok(())
    }

    fn build(&self, batch: &RocksBatch) -> Result<rocksdb::WriteBatch> {
        let mut wb = rocksdb::WriteBatch::default();
        let mut handles: [Option<&ColumnFamily>; 6] = [None; 6];
        for op in batch.ops() {
            let slot = &mut handles[op.ks as usize];
            let cf = match slot {
                Some(cf) => *cf,
                None => *slot.insert(self.cf(op.ks)?),
            };
            let (a, b) = (batch.key(op), batch.value(op));
            match op.kind {
                OpKind::Put => wb.put_cf(cf, a, b),
                OpKind::Delete => wb.delete_cf(cf, a),
                // RocksDB rejects ranges whose start lies after their end; they are no-ops.
                OpKind::DeleteRange if a < b => wb.delete_range_cf(cf, a, b),
                OpKind::DeleteRange => {}
            }
        }
        Ok(wb)
    }

    fn write_locked(&self, batch: RocksBatch, opts: WriteOptions) -> Result<()> {
        self.check_guards(&batch)?;
        if batch.ops().is_empty() {
            if opts.sync {
                // Make earlier unsynced writes durable.
                self.db.flush_wal(true).r2e()?;
            }
            return Ok(());
        }
        let wb = self.build(&batch)?;
        // Free the recorded operations before writing: the RocksDB batch now holds every
        // byte, and a large import's batch would otherwise be held twice while RocksDB writes.
        drop(batch);
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
        let it = self
            .db
            .raw_iterator_cf_opt(self.cf(ks)?, scan_options(&range));
        Ok(Box::new(RocksIter::new(it, range)))
    }
}

impl Store for RocksStore {
    type Batch = RocksBatch;
    type Snapshot<'a> = RocksSnapshot<'a>;

    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn batch(&self) -> RocksBatch {
        RocksBatch::default()
    }

    fn write(&self, batch: RocksBatch, opts: WriteOptions) -> Result<()> {
        let _writer = lock(&self.writer);
        self.poisoned.check()?;
        let res = self.write_locked(batch, opts);
        self.poisoned.observe(opts, &res);
        res
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

    #[test]
    fn empty_range_detection() {
        use crate::iter::range_is_empty;
        use std::ops::Bound;
        assert!(range_is_empty(&KeyRange::between(
            b"b".to_vec(),
            b"a".to_vec()
        )));
        assert!(range_is_empty(&KeyRange::between(
            b"a".to_vec(),
            b"a".to_vec()
        )));
        let single = KeyRange {
            start: Bound::Included(b"a".to_vec()),
            end: Bound::Included(b"a".to_vec()),
        };
        assert!(!range_is_empty(&single));
    }
}
