//! The store-ceiling workload shared by every backend's benchmark (`benches/store.rs`).
//!
//! [`RECORDS`] records with [`KEY_LEN`]-byte keys and [`VALUE_LEN`]-byte incompressible values,
//! written in batches of [`BATCH`] without sync, then read back by one ordered full scan. The
//! benchmarks only time these functions; the figures go to `BENCHMARKS.md` ("Store ceiling").

use crate::store::{KeyRange, Keyspace, ReadView, Result, Store, WriteBatch, WriteOptions};

/// Records per run.
pub const RECORDS: u64 = 1_000_000;
/// Key length in bytes.
pub const KEY_LEN: usize = 16;
/// Value length in bytes.
pub const VALUE_LEN: usize = 256;
/// Records per batch.
pub const BATCH: u64 = 10_000;
/// The keyspace the workload writes.
pub const KEYSPACE: Keyspace = Keyspace::Oplog;

/// Incompressible bytes the values are cut from.
pub struct ValuePool(Vec<u8>);

impl Default for ValuePool {
    fn default() -> Self {
        Self::new()
    }
}

impl ValuePool {
    /// 64 KiB of SplitMix64 output.
    pub fn new() -> Self {
        let mut rng = super::conformance::Rng::new(0x5eed);
        ValuePool(rng.bytes(64 << 10))
    }

    /// The value of record `i`: a window into the pool.
    pub fn value(&self, i: u64) -> &[u8] {
        let span = (self.0.len() - VALUE_LEN) as u64;
        let at = (i.wrapping_mul(7919) % span) as usize;
        &self.0[at..at + VALUE_LEN]
    }
}

/// The key of record `i`. `sequential`: keys ascend with `i` (appends); otherwise they are
/// scattered over the key space (random inserts).
pub fn key(i: u64, sequential: bool) -> [u8; KEY_LEN] {
    let head = if sequential {
        i
    } else {
        // A bijection on u64 (SplitMix64's finaliser), so keys stay distinct.
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&head.to_be_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

/// Write `records` records in batches of [`BATCH`], unsynced.
pub fn write_records<S: Store>(
    s: &S,
    pool: &ValuePool,
    records: u64,
    sequential: bool,
) -> Result<()> {
    let mut i = 0;
    while i < records {
        let mut b = s.batch();
        let end = (i + BATCH).min(records);
        for j in i..end {
            b.put(KEYSPACE, &key(j, sequential), pool.value(j));
        }
        s.write(b, WriteOptions::NO_SYNC)?;
        i = end;
    }
    Ok(())
}

/// Scan the workload keyspace in order; returns the number of records and bytes seen.
pub fn full_scan(r: &(impl ReadView + ?Sized)) -> Result<(u64, u64)> {
    let (mut n, mut bytes) = (0u64, 0u64);
    for kv in r.scan(KEYSPACE, KeyRange::all())? {
        let (k, v) = kv?;
        n += 1;
        bytes += (k.len() + v.len()) as u64;
    }
    Ok((n, bytes))
}
