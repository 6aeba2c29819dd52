//! [`RocksBatch`]: the operations of one write, kept in one byte arena.
//!
//! A `rocksdb::WriteBatch` needs column-family handles, which borrow the database, while a
//! [`WriteBatch`] must not borrow its store; so the batch records its operations and
//! [`RocksStore::write`](crate::RocksStore) builds the RocksDB batch from them.

use std::ops::Range;

use msite_core::store::{Keyspace, WriteBatch};

/// What one operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Put,
    Delete,
    DeleteRange,
}

/// One operation; `a` is the key (range start), `b` the value (range end), both in the arena.
#[derive(Clone, Debug)]
pub(crate) struct RawOp {
    pub(crate) kind: Kind,
    pub(crate) ks: Keyspace,
    pub(crate) a: Range<usize>,
    pub(crate) b: Range<usize>,
}

/// One guard: `key` must hold `value` (`None`: be absent).
#[derive(Clone, Debug)]
pub(crate) struct RawExpect {
    pub(crate) ks: Keyspace,
    pub(crate) key: Range<usize>,
    pub(crate) value: Option<Range<usize>>,
}

/// The batch of a [`RocksStore`](crate::RocksStore): applied as one `rocksdb::WriteBatch`.
#[derive(Debug, Default)]
pub struct RocksBatch {
    pub(crate) data: Vec<u8>,
    pub(crate) ops: Vec<RawOp>,
    pub(crate) expects: Vec<RawExpect>,
}

impl RocksBatch {
    fn stash(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        start..self.data.len()
    }

    /// The bytes of an arena range.
    pub(crate) fn bytes(&self, r: &Range<usize>) -> &[u8] {
        &self.data[r.clone()]
    }
}

impl WriteBatch for RocksBatch {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        let (a, b) = (self.stash(key), self.stash(value));
        self.ops.push(RawOp {
            kind: Kind::Put,
            ks,
            a,
            b,
        });
    }

    fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        let a = self.stash(key);
        self.ops.push(RawOp {
            kind: Kind::Delete,
            ks,
            a,
            b: 0..0,
        });
    }

    fn delete_range(&mut self, ks: Keyspace, start: &[u8], end: &[u8]) {
        let (a, b) = (self.stash(start), self.stash(end));
        self.ops.push(RawOp {
            kind: Kind::DeleteRange,
            ks,
            a,
            b,
        });
    }

    fn expect(&mut self, ks: Keyspace, key: &[u8], expected: Option<&[u8]>) {
        let key = self.stash(key);
        let value = expected.map(|v| self.stash(v));
        self.expects.push(RawExpect { ks, key, value });
    }

    fn len(&self) -> usize {
        self.ops.len()
    }
}
