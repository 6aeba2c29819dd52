//! Read-your-writes transactions over a [`Store`]: a write batch plus an in-memory overlay,
//! so that applying many entries in one atomic write can read what earlier entries changed.
//!
//! A [`Txn`] is committed with one [`Store::write`]; [`Txn::commit_prefix`] commits what is
//! there so far and keeps going (used to bound memory on very large packets: what is
//! committed is always a consistent prefix).

use std::collections::BTreeMap;

use crate::store::{KeyRange, Keyspace, ReadView, Result, Store, WriteBatch, WriteOptions};

/// A transaction over `S`.
pub struct Txn<'s, S: Store> {
    store: &'s S,
    overlay: BTreeMap<(Keyspace, Vec<u8>), Option<Vec<u8>>>,
    bytes: usize,
}

impl<'s, S: Store> Txn<'s, S> {
    /// A new, empty transaction.
    pub fn new(store: &'s S) -> Self {
        Txn {
            store,
            overlay: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// The store under the transaction (reads there do not see uncommitted writes).
    pub fn store(&self) -> &'s S {
        self.store
    }

    /// The value of `key`, seeing this transaction's writes.
    pub fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.overlay.get(&(ks, key.to_vec())) {
            return Ok(v.clone());
        }
        self.store.get(ks, key)
    }

    /// Sets `key`.
    pub fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        self.bytes += key.len() + value.len();
        self.overlay
            .insert((ks, key.to_vec()), Some(value.to_vec()));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        self.bytes += key.len();
        self.overlay.insert((ks, key.to_vec()), None);
    }

    /// All pairs under `prefix`, in key order, seeing this transaction's writes.
    pub fn scan_prefix(&self, ks: Keyspace, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for kv in self.store.scan(ks, KeyRange::prefix(prefix))? {
            let (k, v) = kv?;
            merged.insert(k, v);
        }
        let lo = (ks, prefix.to_vec());
        for ((oks, k), v) in self.overlay.range(lo..) {
            if *oks != ks || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Approximate bytes written so far.
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.overlay.is_empty()
    }

    fn take_batch(&mut self) -> S::Batch {
        let mut batch = self.store.batch();
        for ((ks, k), v) in std::mem::take(&mut self.overlay) {
            match v {
                Some(v) => batch.put(ks, &k, &v),
                None => batch.delete(ks, &k),
            }
        }
        self.bytes = 0;
        batch
    }

    /// Commits everything written so far and continues with an empty overlay.
    pub fn commit_prefix(&mut self, opts: WriteOptions) -> Result<()> {
        if self.overlay.is_empty() {
            return Ok(());
        }
        let batch = self.take_batch();
        self.store.write(batch, opts)
    }

    /// Commits the transaction.
    pub fn commit(mut self, opts: WriteOptions) -> Result<()> {
        self.commit_prefix(opts)
    }
}

impl<S: Store> ReadView for Txn<'_, S> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Txn::get(self, ks, key)
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<crate::store::ScanIter<'_>> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for kv in self.store.scan(ks, range.clone())? {
            let (k, v) = kv?;
            merged.insert(k, v);
        }
        for ((oks, k), v) in &self.overlay {
            if *oks != ks || !range.contains(k) {
                continue;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(Box::new(merged.into_iter().map(Ok)))
    }
}
