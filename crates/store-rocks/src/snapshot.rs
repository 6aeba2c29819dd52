//! [`RocksSnapshot`]: a RocksDB snapshot.

use msite_core::store::{KeyRange, KeyValue, Keyspace, PairFn, ReadView, Result, ScanIter};
use rocksdb::{DBRawIteratorWithThreadMode, SnapshotWithThreadMode, DB};

use crate::error::RocksResultExt;
use crate::iter::{scan_options, RocksIter};
use crate::store::RocksStore;

/// A consistent view of a [`RocksStore`]: a `DB::snapshot()`, released on drop.
pub struct RocksSnapshot<'a> {
    pub(crate) snap: SnapshotWithThreadMode<'a, DB>,
    pub(crate) store: &'a RocksStore,
}

impl ReadView for RocksSnapshot<'_> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap.get_cf(self.store.cf(ks)?, key).r2e()
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

impl RocksSnapshot<'_> {
    /// A raw iterator over `range` in `ks` at this snapshot ([`scan_options`]).
    fn raw_iter(
        &self,
        ks: Keyspace,
        range: &KeyRange,
    ) -> Result<DBRawIteratorWithThreadMode<'_, DB>> {
        Ok(self
            .snap
            .raw_iterator_cf_opt(self.store.cf(ks)?, scan_options(ks, range)))
    }
}
