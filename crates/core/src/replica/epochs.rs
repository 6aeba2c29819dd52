//! The epoch matrix as stored: the own row, the estimate rows of siblings (and `chepoch`,
//! which sets one), the recorded incarnations, and the readers of big-endian counters and
//! rows from any view that the rest of the crate uses.

use crate::codec::be_u64;
use crate::error::{CoreError, Result};
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::Row;
use crate::store::{KeyRange, Keyspace, ReadView, Store, WriteOptions};
use crate::txn::Txn;

use super::Replica;

/// Reads a big-endian u64 value (0 if absent) from any view: a store, a snapshot, or a
/// transaction (which sees its own writes).
pub(crate) fn get_u64<R: ReadView + ?Sized>(r: &R, ks: Keyspace, key: &[u8]) -> Result<u64> {
    match r.get(ks, key)? {
        Some(v) => Ok(be_u64(&v)?),
        None => Ok(0),
    }
}

/// Reads the row stored under `prefix` in Epochs (cells keyed by prefix ++ origin) from any
/// view, a transaction included.
pub(crate) fn read_row<R: ReadView + ?Sized>(r: &R, prefix: &[u8]) -> Result<Row> {
    let mut row = Row::default();
    for kv in r.scan(Keyspace::Epochs, KeyRange::prefix(prefix))? {
        let (k, v) = kv?;
        if k.len() != prefix.len() + 16 {
            continue;
        }
        let origin = ReplicaId(
            k[prefix.len()..]
                .try_into()
                .map_err(|_| CoreError::Codec(crate::codec::CodecError { what: "epoch key" }))?,
        );
        row.set(origin, be_u64(&v)?);
    }
    Ok(row)
}

impl<S: Store> Replica<S> {
    /// The own row.
    pub fn own_row(&self) -> Result<Row> {
        read_row(&self.store, keys::OWN_PREFIX)
    }

    /// The estimate row for `target`.
    pub fn estimate(&self, target: &ReplicaId) -> Result<Row> {
        read_row(&self.store, &keys::estimate_prefix(target))
    }

    /// The incarnation recorded for `r` (this replica's own for `r == id()`).
    pub fn incarnation_of(&self, r: &ReplicaId) -> Result<u64> {
        get_u64(
            &self.store,
            Keyspace::Peers,
            &keys::peer(keys::peers::INCARNATION, r),
        )
    }

    /// Sets an estimate row (`chepoch`). The own row is refused.
    pub fn chepoch(&self, target: &ReplicaId, cells: &[(ReplicaId, u64)]) -> Result<()> {
        if *target == self.me {
            return Err(CoreError::Invalid(format!(
                "the own row of {} is exact and cannot be changed; chepoch sets a sibling's estimate row",
                self.name()
            )));
        }
        if self.view().replica(target)?.is_none() {
            return Err(CoreError::NotFound(format!("replica:{}", target.short())));
        }
        let mut txn = Txn::new(&self.store);
        for (o, n) in cells {
            txn.put(
                Keyspace::Epochs,
                &keys::estimate(target, o),
                &n.to_be_bytes(),
            );
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }
}
