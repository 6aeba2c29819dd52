//! [`SqliteSnapshot`]: a read transaction on a pooled reader connection.

use msite_core::store::{
    scan_each_by_scan, KeyRange, KeyValue, Keyspace, PairFn, ReadView, Result, ScanIter,
};

use crate::iter::{ReadConn, SqliteIter};
use crate::store::Reader;

/// A consistent view of a [`SqliteStore`](crate::SqliteStore): a WAL read transaction that
/// lives as long as the snapshot. It never blocks the writer, but while it lives checkpoints
/// cannot recycle the WAL.
pub struct SqliteSnapshot<'a> {
    pub(crate) reader: Reader<'a>,
}

impl ReadView for SqliteSnapshot<'_> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        crate::store::get_value(
            &self.reader,
            self.reader.packs(),
            self.reader.memo(),
            ks,
            key,
        )
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        Ok(Box::new(SqliteIter::new(
            ReadConn::Borrowed(&self.reader),
            ks,
            range,
        )))
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        crate::iter::last_in(
            &self.reader,
            self.reader.packs(),
            self.reader.memo(),
            ks,
            &range,
        )
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        scan_each_by_scan(self, ks, range, f)
    }
}
