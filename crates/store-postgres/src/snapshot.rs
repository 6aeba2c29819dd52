//! [`PgSnapshot`]: a `REPEATABLE READ READ ONLY` transaction on a pooled connection.

use std::marker::PhantomData;
use std::sync::Mutex;

use msite_core::store::{
    scan_each_by_scan, KeyRange, KeyValue, Keyspace, PairFn, ReadView, Result, ScanIter,
};

use crate::iter::{PgIter, ReadConn};
use crate::pool::{lock, Pooled};

/// A consistent view of a [`PgStore`](crate::PgStore): a read-only `REPEATABLE READ`
/// transaction that lives as long as the snapshot. It never blocks writers; while it lives
/// the server keeps the row versions it can see (vacuum cannot remove them), so keep it short.
pub struct PgSnapshot<'a> {
    pub(crate) conn: Mutex<Pooled>,
    pub(crate) _store: PhantomData<&'a crate::PgStore>,
}

impl ReadView for PgSnapshot<'_> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        lock(&self.conn).get(ks, key)
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        Ok(Box::new(PgIter::new(
            ReadConn::Borrowed(&self.conn),
            ks,
            range,
        )))
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        lock(&self.conn).last(ks, &range)
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        scan_each_by_scan(self, ks, range, f)
    }
}
