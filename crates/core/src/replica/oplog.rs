//! The own oplog as stored: the layout of an oplog record ([`StoredEntry`]), the
//! [`Appender`] that stores an entry with its effects inside a transaction, and the lookups
//! of stored entries and their hashes.

use crate::codec::be_u64;
use crate::error::{CoreError, Result};
use crate::ids::{Hash, ReplicaId, ZERO_HASH};
use crate::keys;
use crate::model::{Entry, Op};
use crate::store::{KeyRange, Keyspace, ReadView, Store};
use crate::txn::Txn;
use crate::vob;

use super::Replica;

/// What a local record of the oplog holds besides the canonical entry.
///
/// # Layout of an oplog value
/// - Current: `lsn u64, tag u8, [offset u16], canonical`. Tag [`StoredEntry::PLAIN`] for an
///   entry without content; tag [`StoredEntry::CONTENT`] for a check-in, whose content hash is
///   `canonical[offset..offset + 32]`. The entry hash is the canonical encoding's last 32
///   bytes (it always ends with the hash field), so it is not stored again.
/// - Earlier stores: `lsn u64, hash [32], 0 | 1, [content hash 32 if 1], canonical`, still
///   read as is. The two are told apart by the old layout's hash, which equals the record's
///   last 32 bytes; in the current layout those bytes would have to equal the tag and the
///   start of the canonical encoding, which hashes over them (a BLAKE3 fixed point).
pub(crate) struct StoredEntry {
    pub lsn: u64,
    pub hash: Hash,
    pub blob: Option<Hash>,
    pub canonical: Vec<u8>,
}

impl StoredEntry {
    /// Tag of a current-layout record of an entry without content.
    const PLAIN: u8 = 2;
    /// Tag of a current-layout record of a check-in (content offset follows).
    const CONTENT: u8 = 3;

    pub(crate) fn encode(lsn: u64, e: &Entry, canonical: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 3 + canonical.len());
        v.extend_from_slice(&lsn.to_be_bytes());
        match &e.op {
            Op::Checkin { content, .. } => {
                let at = canonical.windows(32).position(|w| w == content);
                match at.and_then(|at| u16::try_from(at).ok()) {
                    Some(at) => {
                        v.push(Self::CONTENT);
                        v.extend_from_slice(&at.to_be_bytes());
                    }
                    // Not expected (the content hash is an early field of a check-in):
                    // the earlier layout carries it whole.
                    None => return Self::encode_v1(lsn, e, canonical),
                }
            }
            _ => v.push(Self::PLAIN),
        }
        v.extend_from_slice(canonical);
        v
    }

    /// The earlier layout (see the type's documentation).
    pub(crate) fn encode_v1(lsn: u64, e: &Entry, canonical: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 32 + 33 + canonical.len());
        v.extend_from_slice(&lsn.to_be_bytes());
        v.extend_from_slice(&e.hash);
        match &e.op {
            Op::Checkin { content, .. } => {
                v.push(1);
                v.extend_from_slice(content);
            }
            _ => v.push(0),
        }
        v.extend_from_slice(canonical);
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<StoredEntry> {
        let bad = || {
            CoreError::Codec(crate::codec::CodecError {
                what: "oplog record",
            })
        };
        if v.len() < 9 + 34 {
            return Err(bad());
        }
        let lsn = be_u64(&v[..8])?;
        if v.len() >= 41 + 34 && v[40] <= 1 && v[8..40] == v[v.len() - 32..] {
            return Self::decode_v1(lsn, v).ok_or_else(bad);
        }
        let (blob, canonical) = match v[8] {
            Self::PLAIN => (None, &v[9..]),
            Self::CONTENT if v.len() >= 11 => {
                let at = usize::from(u16::from_be_bytes([v[9], v[10]]));
                let c = &v[11..];
                let h: Hash = c
                    .get(at..at + 32)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?;
                (Some(h), c)
            }
            _ => return Err(bad()),
        };
        let n = canonical.len();
        if n < 34 || canonical[n - 34..n - 32] != [0xc4, 0x20] {
            return Err(bad());
        }
        Ok(StoredEntry {
            lsn,
            hash: canonical[n - 32..].try_into().map_err(|_| bad())?,
            blob,
            canonical: canonical.to_vec(),
        })
    }

    /// A record in the earlier layout.
    fn decode_v1(lsn: u64, v: &[u8]) -> Option<StoredEntry> {
        let hash: Hash = v[8..40].try_into().ok()?;
        let (blob, rest) = match v[40] {
            0 => (None, &v[41..]),
            1 if v.len() >= 73 => (Some(v[41..73].try_into().ok()?), &v[73..]),
            _ => return None,
        };
        Some(StoredEntry {
            lsn,
            hash,
            blob,
            canonical: rest.to_vec(),
        })
    }
}

/// Tracks the apply sequence and own numbering inside one transaction.
pub(crate) struct Appender {
    pub next_lsn: u64,
}

impl Appender {
    pub(crate) fn load<S: Store>(txn: &Txn<'_, S>) -> Result<Self> {
        let next_lsn = match txn.get(Keyspace::Meta, keys::NEXT_LSN)? {
            Some(v) => be_u64(&v)?,
            None => 1,
        };
        Ok(Appender { next_lsn })
    }

    /// Stores an entry (oplog record, own row, object base effects) in `txn`.
    pub(crate) fn store_entry<S: Store>(
        &mut self,
        txn: &mut Txn<'_, S>,
        e: &Entry,
        canonical: &[u8],
    ) -> Result<()> {
        vob::apply(txn, e)?;
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        txn.put_owned(
            Keyspace::Oplog,
            keys::oplog(&e.origin, e.number).to_vec(),
            StoredEntry::encode(lsn, e, canonical),
        );
        txn.put_owned(
            Keyspace::Epochs,
            keys::own(&e.origin),
            e.number.to_be_bytes().to_vec(),
        );
        txn.put(Keyspace::Meta, keys::NEXT_LSN, &self.next_lsn.to_be_bytes());
        if e.incarnation > 0 {
            let k = keys::peer(keys::peers::INCARNATION, &e.origin);
            let known = match txn.get(Keyspace::Peers, &k)? {
                Some(v) => be_u64(&v)?,
                None => 0,
            };
            if e.incarnation > known {
                txn.put(Keyspace::Peers, &k, &e.incarnation.to_be_bytes());
            }
        }
        Ok(())
    }
}

impl<S: Store> Replica<S> {
    /// The hash of our entry `(origin, number)`, if held.
    pub(crate) fn entry_hash_at<R: ReadView + ?Sized>(
        r: &R,
        origin: &ReplicaId,
        number: u64,
    ) -> Result<Option<Hash>> {
        if number == 0 {
            return Ok(Some(ZERO_HASH));
        }
        match r.get(Keyspace::Oplog, &keys::oplog(origin, number))? {
            Some(v) => Ok(Some(StoredEntry::decode(&v)?.hash)),
            // A dropped prefix keeps its last entry's hash as the chain's base (retain.rs).
            None => Ok(crate::retain::retained_base(r, origin)?
                .and_then(|(n, h)| (n == number).then_some(h))),
        }
    }

    /// An entry of the oplog, decoded.
    pub fn entry(&self, origin: &ReplicaId, number: u64) -> Result<Option<Entry>> {
        match self
            .store
            .get(Keyspace::Oplog, &keys::oplog(origin, number))?
        {
            Some(v) => {
                let s = StoredEntry::decode(&v)?;
                Ok(Some(Entry::decode_verified(&s.canonical)?))
            }
            None => Ok(None),
        }
    }

    /// Every entry of one origin, in number order (for `lshistory`-style dumps and tests).
    pub fn entries_of(&self, origin: &ReplicaId) -> Result<Vec<Entry>> {
        let lo = keys::oplog(origin, 0);
        let hi = keys::oplog(origin, u64::MAX);
        let mut out = Vec::new();
        for kv in self
            .store
            .scan(Keyspace::Oplog, KeyRange::between(lo.to_vec(), hi.to_vec()))?
        {
            let (_, v) = kv?;
            let s = StoredEntry::decode(&v)?;
            out.push(Entry::decode_verified(&s.canonical)?);
        }
        Ok(out)
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::sync::Arc;

    use crate::testkit::MemStore;
    use crate::{Env, Replica, SimEnv};

    /// Oplog records are written in the current layout (smaller than the earlier one by the
    /// entry hash and, for a check-in, the content hash) and records in the earlier layout,
    /// as stores written before it hold, read back the same: a replica whose oplog was
    /// rewritten in the earlier layout still makes a new replica with its state.
    #[test]
    fn oplog_records_of_both_layouts_read_back_the_same() {
        use super::StoredEntry;
        use crate::model::{Entry, Op};
        use crate::store::{KeyRange, Keyspace, ReadView, Store, WriteBatch, WriteOptions};
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(3));
        let r = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
        r.checkin("a.c", "main", b"one", "me", "c").unwrap();
        r.checkin("a.c", "main", b"two", "me", "c").unwrap();
        let records: Vec<(Vec<u8>, Vec<u8>)> = r
            .store()
            .scan(Keyspace::Oplog, KeyRange::all())
            .unwrap()
            .map(|kv| kv.unwrap())
            .collect();
        let mut checkins = 0;
        let mut old = r.store().batch();
        for (k, v) in &records {
            let s = StoredEntry::decode(v).unwrap();
            let e = Entry::decode_verified(&s.canonical).unwrap();
            let content = match &e.op {
                Op::Checkin { content, .. } => Some(*content),
                _ => None,
            };
            checkins += usize::from(content.is_some());
            assert_eq!((s.hash, s.blob), (e.hash, content));
            let v1 = StoredEntry::encode_v1(s.lsn, &e, &s.canonical);
            assert_eq!(v1.len(), v.len() + if content.is_some() { 62 } else { 32 });
            let s1 = StoredEntry::decode(&v1).unwrap();
            assert_eq!(
                (s1.lsn, s1.hash, s1.blob, &s1.canonical),
                (s.lsn, s.hash, s.blob, &s.canonical)
            );
            old.put(Keyspace::Oplog, k, &v1);
        }
        assert_eq!(checkins, 2);
        r.store().write(old, WriteOptions::SYNC).unwrap();
        let copy = crate::testkit::mkreplica_in_memory(&r, "r1", env).unwrap();
        assert_eq!(copy.digest().unwrap(), r.digest().unwrap());
        let damaged = [&records[0].1[..8], &[9u8], &records[0].1[9..]].concat();
        assert!(
            StoredEntry::decode(&damaged).is_err(),
            "an unknown tag is an error"
        );
    }
}
