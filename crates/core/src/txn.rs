//! Read-your-writes transactions over a [`Store`]: a write batch plus an in-memory overlay,
//! so that applying many entries in one atomic write can read what earlier entries changed.
//!
//! A [`Txn`] is committed with one [`Store::write`]; [`Txn::commit_prefix`] commits what is
//! there so far and keeps going (used to bound memory on very large packets: what is
//! committed is always a consistent prefix).

use std::collections::BTreeMap;

use crate::store::{
    scan_each_by_scan, KeyRange, KeyValue, Keyspace, PairFn, ReadView, Result, Store, WriteBatch,
    WriteOptions,
};

type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A transaction over `S`.
pub struct Txn<'s, S: Store> {
    store: &'s S,
    overlay: [Overlay; Keyspace::ALL.len()],
    bytes: usize,
    writes: usize,
}

fn slot(ks: Keyspace) -> usize {
    ks as usize
}

impl<'s, S: Store> Txn<'s, S> {
    /// A new, empty transaction.
    pub fn new(store: &'s S) -> Self {
        Txn {
            store,
            overlay: Default::default(),
            bytes: 0,
            writes: 0,
        }
    }

    /// The store under the transaction (reads there do not see uncommitted writes).
    pub fn store(&self) -> &'s S {
        self.store
    }

    /// The value of `key`, seeing this transaction's writes.
    pub fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.overlay[slot(ks)].get(key) {
            return Ok(v.clone());
        }
        self.store.get(ks, key)
    }

    /// Sets `key`.
    pub fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        self.put_owned(ks, key.to_vec(), value.to_vec());
    }

    /// Sets `key`, taking the key and value without copying them (for the import path, where
    /// both are built or decoded just before and every copy of the imported bytes counts).
    pub fn put_owned(&mut self, ks: Keyspace, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.writes += 1;
        self.overlay[slot(ks)].insert(key, Some(value));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        self.bytes += key.len();
        self.writes += 1;
        self.overlay[slot(ks)].insert(key.to_vec(), None);
    }

    /// All pairs under `prefix`, in key order, seeing this transaction's writes.
    pub fn scan_prefix(&self, ks: Keyspace, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let range = KeyRange::prefix(prefix);
        Ok(self.merged(ks, range)?.into_iter().collect())
    }

    /// This transaction's writes (`None`: a delete) to keys of `ks` in `range`.
    fn written_in<'t>(
        &'t self,
        ks: Keyspace,
        range: &KeyRange,
    ) -> impl Iterator<Item = (&'t Vec<u8>, &'t Option<Vec<u8>>)> + 't {
        let bounds = (
            range.start.as_ref().map(|v| v.as_slice()),
            range.end.as_ref().map(|v| v.as_slice()),
        );
        // `BTreeMap::range` panics on bounds that select nothing.
        let over = (!range.is_empty()).then(|| self.overlay[slot(ks)].range::<[u8], _>(bounds));
        over.into_iter().flatten()
    }

    fn merged(&self, ks: Keyspace, range: KeyRange) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for kv in self.store.scan(ks, range.clone())? {
            let (k, v) = kv?;
            merged.insert(k, v);
        }
        for (k, v) in self.written_in(ks, &range) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged)
    }

    /// Approximate bytes written so far.
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.overlay.iter().all(|o| o.is_empty())
    }

    fn take_batch(&mut self) -> S::Batch {
        let mut batch = self.store.batch();
        // Counts every write, also those a later write to the same key replaced: an upper
        // bound of what the overlay holds.
        batch.reserve(self.writes, self.bytes);
        for ks in Keyspace::ALL {
            for (k, v) in std::mem::take(&mut self.overlay[slot(ks)]) {
                match v {
                    Some(v) => batch.put(ks, &k, &v),
                    None => batch.delete(ks, &k),
                }
            }
        }
        self.bytes = 0;
        self.writes = 0;
        batch
    }

    /// Commits everything written so far and continues with an empty overlay.
    pub fn commit_prefix(&mut self, opts: WriteOptions) -> Result<()> {
        if self.is_empty() {
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
        Ok(Box::new(self.merged(ks, range)?.into_iter().map(Ok)))
    }

    /// The store's seek when this transaction wrote nothing in `range`; otherwise the last
    /// pair of the merged view.
    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        if self.written_in(ks, &range).next().is_none() {
            return self.store.last(ks, range);
        }
        Ok(self.merged(ks, range)?.into_iter().next_back())
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        scan_each_by_scan(self, ks, range, f)
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::testkit::MemStore;

    #[test]
    fn reads_see_own_writes_and_scans_merge() {
        let s = MemStore::new();
        let mut t = Txn::new(&s);
        t.put(Keyspace::State, b"a1", b"x");
        t.put(Keyspace::State, b"a2", b"y");
        t.commit_prefix(WriteOptions::NO_SYNC).unwrap();
        t.delete(Keyspace::State, b"a1");
        t.put(Keyspace::State, b"a3", b"z");
        t.put(Keyspace::Meta, b"a4", b"other keyspace");
        assert_eq!(t.get(Keyspace::State, b"a1").unwrap(), None);
        let keys: Vec<_> = t
            .scan_prefix(Keyspace::State, b"a")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a2".to_vec(), b"a3".to_vec()]);
        assert_eq!(s.get(Keyspace::State, b"a1").unwrap(), Some(b"x".to_vec()));
        // The last key sees the overlay: written, deleted, and untouched ranges.
        let last = |t: &Txn<'_, MemStore>, p: &[u8]| {
            ReadView::last(t, Keyspace::State, KeyRange::prefix(p))
                .unwrap()
                .map(|(k, _)| k)
        };
        assert_eq!(last(&t, b"a"), Some(b"a3".to_vec()));
        t.delete(Keyspace::State, b"a3");
        assert_eq!(last(&t, b"a"), Some(b"a2".to_vec()));
        t.delete(Keyspace::State, b"a2");
        assert_eq!(last(&t, b"a"), None);
        assert_eq!(last(&t, b"b"), None);
        t.put(Keyspace::State, b"a9", b"w");
        assert_eq!(last(&t, b"a"), Some(b"a9".to_vec()));
        t.commit(WriteOptions::NO_SYNC).unwrap();
        assert_eq!(s.get(Keyspace::State, b"a1").unwrap(), None);
    }
}
