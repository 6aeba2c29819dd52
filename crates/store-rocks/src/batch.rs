//! [`RocksBatch`]: writes go straight into a `rocksdb::WriteBatch`.

use std::sync::Arc;

use msite_core::store::{Keyspace, WriteBatch};
use rocksdb::DB;

/// The batch of a [`RocksStore`](crate::RocksStore): one `rocksdb::WriteBatch` that every
/// write goes into directly (it holds the database so it can name column families), plus
/// the `expect` guards, which `write` checks under the writer lock.
///
/// Every key and value is copied once, into RocksDB's batch. When the caller announces the
/// batch's size ([`WriteBatch::reserve`], as a `Txn` commit does), the batch is allocated at
/// that size at once instead of growing by doubling. A batch holds a reference to the
/// database: a store dropped while one of its batches lives stays open (with its `LOCK`)
/// until the batch is dropped too.
pub struct RocksBatch {
    pub(crate) db: Arc<DB>,
    /// Created at the first write or reservation.
    wb: Option<rocksdb::WriteBatch>,
    ops: usize,
    pub(crate) expects: Vec<Guard>,
}

/// One `expect` guard: `key` in `ks` must hold `value` (`None`: be absent).
pub(crate) struct Guard {
    pub(crate) ks: Keyspace,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Option<Vec<u8>>,
}

impl std::fmt::Debug for RocksBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksBatch")
            .field("ops", &self.ops)
            .field("expects", &self.expects.len())
            .finish_non_exhaustive()
    }
}

/// The most a write adds to a `rocksdb::WriteBatch` besides its key and value: a tag byte,
/// the column family's id and the two lengths (varint32s, at most 5 bytes each).
const PER_OP: usize = 1 + 3 * 5;
/// The `rocksdb::WriteBatch` header (sequence number and count).
const HEADER: usize = 12;

impl RocksBatch {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        RocksBatch {
            db,
            wb: None,
            ops: 0,
            expects: Vec::new(),
        }
    }

    /// The built RocksDB batch (`None` if nothing was written).
    pub(crate) fn take(&mut self) -> Option<rocksdb::WriteBatch> {
        self.wb.take()
    }

    /// The batch to write into and the column family of `ks`.
    fn target(&mut self, ks: Keyspace) -> (&mut rocksdb::WriteBatch, &rocksdb::ColumnFamily) {
        self.ops += 1;
        let cf = self
            .db
            .cf_handle(ks.name())
            // Every keyspace's family is created when the store is opened.
            .expect("every keyspace has a column family");
        (self.wb.get_or_insert_with(rocksdb::WriteBatch::default), cf)
    }
}

impl WriteBatch for RocksBatch {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        let (wb, cf) = self.target(ks);
        wb.put_cf(cf, key, value);
    }

    fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        let (wb, cf) = self.target(ks);
        wb.delete_cf(cf, key);
    }

    fn delete_range(&mut self, ks: Keyspace, start: &[u8], end: &[u8]) {
        let (wb, cf) = self.target(ks);
        // RocksDB rejects ranges whose start lies after their end; they are no-ops.
        if start < end {
            wb.delete_range_cf(cf, start, end);
        }
    }

    fn expect(&mut self, ks: Keyspace, key: &[u8], expected: Option<&[u8]>) {
        self.expects.push(Guard {
            ks,
            key: key.to_vec(),
            value: expected.map(<[u8]>::to_vec),
        });
    }

    fn len(&self) -> usize {
        self.ops
    }

    fn reserve(&mut self, ops: usize, bytes: usize) {
        if self.wb.is_none() {
            self.wb = Some(rocksdb::WriteBatch::with_capacity_bytes(
                HEADER + ops * PER_OP + bytes,
            ));
        }
    }
}
