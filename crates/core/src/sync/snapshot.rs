//! Snapshot creation (docs/protocol.md §7, packet format 1.4): a new replica made from the
//! creator's object base as it is now, not from its history.
//!
//! The creation packet carries, as row records, every replicated row and nothing local:
//! the object base (State), the content as stored (Blobs: stored deltas stay deltas, their
//! bases travel too), the facts about siblings that entries leave outside the object base
//! ([`PEER_TAGS`]: incarnations, completed restorations and where they began, public keys and
//! the keys they replaced), and per origin the chain base: the number of the last entry held
//! and its hash. Local rows (this replica's signing key, settings, its sending and receiving
//! state, bays) never travel. The header is the history creation's, with the `snapshot` field
//! set; a signed snapshot-end record closes the rows (count, hash, signature), so a damaged,
//! truncated or forged snapshot is refused before the new store is opened.
//!
//! Of the history, only what retention keeps at the creator travels, as oplog rows above a
//! chain base per origin (`Replica::outside_restore_window`): without a restore window every
//! entry, since a sibling restored from any backup may need them back; with one, only what
//! some sibling may still lack, so the creation costs what the tree costs, not what the
//! history does, and the new replica's oplog starts at its chain bases, as if retention had
//! dropped everything below them (retain.rs). The new replica can relay whatever a sibling
//! may still lack, as a history-made one would (in a chain of sites, a snapshot replica that
//! could not would cut the sites behind it off). A sibling that still needs entries from
//! below the base (restored from an old copy, or unknown to the creator) waits for them from
//! a sibling that keeps them; what the family dropped ([`crate::retain::DROPPED_PREFIX`],
//! inherited from the creator) it is refused as behind retention, never given a gap.
//!
//! The importer bulk-loads the rows ([`Store::bulk_load`]) between a synced mark
//! ([`CREATING`]) and the synced commit that writes the identity and removes it: a store whose
//! load was interrupted is found by [`Replica::open`]'s caller and never taken for a replica.
//!
//! The **snapshot base**: when some entries did not travel (a chain base above 0), the
//! importer keeps a local copy of the State rows it loaded ([`BASE_STATE`]) and the row they
//! hold ([`BASE_ROW`]). Giving up entries (K13 retirements, fork repair) rebuilds the object
//! base from it plus the held entries above that row ([`Replica::cannot_give_up`] says when
//! it cannot: the entries to give up came with the snapshot, or retention dropped entries
//! above the base). When every entry travelled (no chain base: retention off at the
//! creator), the new replica keeps no base: it holds the whole oplog, as a replica made from
//! the history does, and rebuilds from it the same way. Layout 2 sends the chain bases before
//! the rows, so the importer knows which case it is in before the first State row.

use ed25519_dalek::Signer;
use msite_packet::{sign, wire, Record};

use crate::codec::{be_u64, Enc};
use crate::error::{CoreError, Result};
use crate::ids::{Hash, ReplicaId};
use crate::keys;
use crate::model::{Entry, Row};
use crate::replica::{Replica, StoredEntry};
use crate::store::{self, KeyRange, Keyspace, ReadView, Store, StoreExt, WriteOptions};

use super::export::ExportPlan;
use super::packet::{Incoming, RecordSink};

/// The layout version of the rows a snapshot writes (the header's `snapshot` field): the
/// key layouts of State, Blobs and the Peers tags below, as this release stores them, and
/// the order of the runs. Layout 2: chain bases, State, Blobs, Peers, oplog records.
pub(crate) const LAYOUT: u64 = 2;
/// The layouts this release loads. Layout 1 (chain bases after Peers) keeps a snapshot base
/// always: its importer meets the chain bases only after the State rows.
const LOADS: [u64; 2] = [1, 2];

/// Meta: present while a store is being made from a snapshot; removed by the commit that
/// writes the identity. A store holding it is an interrupted creation.
pub const CREATING: &[u8] = b"creating";

/// Meta: the row the snapshot this replica was made from holds (its creator's own row): every
/// entry at or below it is in the [`BASE_STATE`] rows, none above. Absent: made from the history.
pub(crate) const BASE_ROW: &[u8] = b"snapshot.row";

/// Meta prefix: the State rows of the snapshot this replica was made from, as loaded (the key
/// is the prefix followed by the State key). Local: never sent, never changed.
pub(crate) const BASE_STATE: &[u8] = b"snapshot.state.";

/// The row of this replica's snapshot base (empty: it was made from the history).
pub(crate) fn base_row<R: ReadView + ?Sized>(r: &R) -> Result<Row> {
    match r.get(Keyspace::Meta, BASE_ROW)? {
        None => Ok(Row::default()),
        Some(v) => {
            let mut d = crate::codec::Dec::new(&v, "snapshot base row");
            let row = Row::decode(&mut d)?;
            d.end()?;
            Ok(row)
        }
    }
}

/// The snapshot base's encoded row, for [`BASE_ROW`].
pub(crate) fn base_row_value(row: &Row) -> Vec<u8> {
    row.encode(Enc::new()).done()
}

/// Writes the snapshot base's State rows back into State (which the caller emptied) and takes
/// the content its versions refer to out of `removed`: that content stays.
pub(crate) fn restore_base<S: Store>(
    txn: &mut crate::txn::Txn<'_, S>,
    removed: &mut std::collections::BTreeSet<Hash>,
) -> Result<()> {
    for (k, v) in txn.scan_prefix(Keyspace::Meta, BASE_STATE)? {
        let key = &k[BASE_STATE.len()..];
        if let Some(c) = crate::vob::version_content(key, &v)? {
            removed.remove(&c);
        }
        txn.put(Keyspace::State, key, &v);
    }
    Ok(())
}

/// The row spaces of a snapshot (the row record's first byte).
mod space {
    /// A State row, as stored.
    pub const STATE: u8 = 1;
    /// A Blobs row, as stored.
    pub const BLOBS: u8 = 2;
    /// A Peers row of one of [`super::PEER_TAGS`].
    pub const PEERS: u8 = 3;
    /// A chain base: key the origin (16 bytes), value the number (u64 BE), the hash (32) and
    /// the creator's dropped mark (u64 BE; retain.rs [`crate::retain::DROPPED_PREFIX`]).
    pub const BASE: u8 = 4;
    /// An oplog record above a chain base, as stored (key: origin and number).
    pub const OPLOG: u8 = 5;
}

/// The Peers rows entries leave outside the object base, which a replica made from the
/// history holds too: incarnations, completed restorations and where each began (K13), public
/// keys and the keys rotations replaced, age recipients and the family's sealing policy.
const PEER_TAGS: [u8; 7] = [
    keys::peers::INCARNATION,
    keys::peers::COMPLETED,
    keys::peers::RESTORE_COMPLETE_AT,
    keys::peers::PUBLIC_KEY,
    keys::peers::OLD_KEY,
    keys::peers::RECIPIENT,
    keys::peers::SEAL_POLICY,
];

fn ks_of(space: u8, key: &[u8]) -> Option<Keyspace> {
    match space {
        space::STATE => Some(Keyspace::State),
        space::BLOBS => Some(Keyspace::Blobs),
        space::PEERS if key.first().is_some_and(|t| PEER_TAGS.contains(t)) => Some(Keyspace::Peers),
        _ => None,
    }
}

impl<S: Store> Replica<S> {
    /// Creates replica `name` (mastered here), whose signing key is `key`, and plans its
    /// snapshot creation packet: the object base as it is once the creation entries are
    /// applied, not the history. Works on a scrubbed replica too.
    pub fn plan_mkreplica_snapshot(&self, name: &str, key: &wire::PublicKey) -> Result<ExportPlan> {
        let new_id = self.append_create_replica(name, key)?;
        let own = self.own_row()?;
        let acked = self.outside_restore_window(self.acknowledged_row_but(&own, &new_id)?)?;
        let mut tail = Vec::new();
        for (o, n) in &own.0 {
            let kept = crate::retain::retained_base(&self.store, o)?.map_or(0, |(b, _)| b);
            tail.push((*o, acked.get(o).min(*n).max(kept) + 1, *n));
        }
        let at_heads: Vec<(ReplicaId, u64, u64)> =
            own.0.iter().map(|(o, n)| (*o, *n, *n)).collect();
        let mut plan = self.creation_plan(new_id, &own, tail)?;
        plan.header.heads = self.heads_for(&at_heads)?;
        plan.header.snapshot = LAYOUT;
        plan.snapshot = true;
        Ok(plan)
    }

    /// Whether this replica keeps a snapshot base: it was made from a snapshot that left
    /// some entries out (a replica made from the history, or from a snapshot that carried
    /// every entry, keeps none and rebuilds from its whole oplog).
    pub fn has_snapshot_base(&self) -> Result<bool> {
        Ok(self.store.get(Keyspace::Meta, BASE_ROW)?.is_some())
    }

    /// Why this replica cannot give up the entries of `o` from `from` on (`what` says what
    /// for; None: it can). Rebuilding the object base without them needs the snapshot base
    /// (none for a replica made from the history) and every entry above it: refused when the
    /// entries came with the snapshot (they are in its base rows) or retention dropped entries
    /// above the base.
    pub(crate) fn cannot_give_up(
        &self,
        o: &ReplicaId,
        from: u64,
        what: &str,
    ) -> Result<Option<String>> {
        let next = "re-create it from a fresh creation packet";
        let base = base_row(&self.store)?;
        if from <= base.get(o) {
            return Ok(Some(format!(
                "replica {} cannot {what}: that needs its whole oplog from entry {from} of origin {} on, and entries up to {} came with the snapshot it was made from, without their history; {next}",
                self.name(),
                self.replica_name(o),
                base.get(o)
            )));
        }
        let dropped = crate::retain::retained_bases(&self.store)?;
        let Some((d, n)) = dropped.into_iter().find(|(d, n)| *n > base.get(d)) else {
            return Ok(None);
        };
        let above = match base.0.is_empty() {
            true => "",
            false => " above the snapshot it was made from",
        };
        Ok(Some(format!(
            "replica {} cannot {what}: that needs its whole oplog{above}, and retention dropped entries 1..{n} of origin {} (`msite scrub`); {next}",
            self.name(),
            self.replica_name(&d)
        )))
    }

    /// Writes a snapshot plan's rows into `sink`, from one consistent view of the store, then
    /// the snapshot end signed for `packet_id`. Returns the rows written.
    pub(super) fn write_snapshot(
        &self,
        plan: &ExportPlan,
        sink: &mut dyn RecordSink,
        packet_id: &wire::Id,
    ) -> Result<u64> {
        let snap = self.store.snapshot()?;
        if crate::replica::read_row(&snap, keys::OWN_PREFIX)?
            != Row::from_wire(&plan.header.sender_row)
        {
            return Err(CoreError::Invalid(format!(
                "replica {} changed while its creation packet was being written; run `msite mkreplica export` again",
                self.name()
            )));
        }
        let mut out = SnapshotOut {
            sink,
            hasher: sign::SnapshotHasher::new(),
        };
        self.write_bases(&snap, plan, &mut out)?;
        for (ks, sp) in [
            (Keyspace::State, space::STATE),
            (Keyspace::Blobs, space::BLOBS),
        ] {
            for kv in snap.scan(ks, KeyRange::all())? {
                let (k, v) = kv?;
                out.row(sp, &k, &v)?;
            }
        }
        for tag in PEER_TAGS {
            for kv in snap.scan(Keyspace::Peers, KeyRange::prefix(&[tag]))? {
                let (k, v) = kv?;
                out.row(space::PEERS, &k, &v)?;
            }
        }
        Self::write_oplog(&snap, plan, &mut out)?;
        let (rows, hash) = out.hasher.finish();
        let msg = sign::snapshot_message(&wire::Id(self.family.0), packet_id, rows, &hash);
        let signature = self.signing_key()?.sign(&msg).to_bytes();
        out.sink.snapshot_end(rows, &hash, &signature)?;
        Ok(rows)
    }

    /// The chain bases (number, hash, dropped mark) of the origins whose entries do not all
    /// travel (the plan's ranges that start above 1).
    fn write_bases<R: ReadView + ?Sized>(
        &self,
        snap: &R,
        plan: &ExportPlan,
        out: &mut SnapshotOut<'_>,
    ) -> Result<()> {
        for (o, from, _) in plan.ranges.iter().filter(|(_, f, _)| *f > 1) {
            let n = &(from - 1);
            let hash = Self::entry_hash_at(snap, o, *n)?.ok_or_else(|| {
                CoreError::Invalid(format!(
                    "entry {n} of {} is neither in the oplog nor its chain base; run `msite check`",
                    self.replica_name(o)
                ))
            })?;
            let mark = crate::retain::dropped_mark(snap, o)?;
            let v = Enc::new()
                .raw(&n.to_be_bytes())
                .raw(&hash)
                .raw(&mark.to_be_bytes())
                .done();
            out.row(space::BASE, &o.0, &v)?;
        }
        Ok(())
    }

    /// The oplog records above the chain bases (the plan's ranges).
    fn write_oplog<R: ReadView + ?Sized>(
        snap: &R,
        plan: &ExportPlan,
        out: &mut SnapshotOut<'_>,
    ) -> Result<()> {
        for (o, from, to) in plan.ranges.iter().filter(|(_, f, t)| f <= t) {
            let range = KeyRange::between(keys::oplog(o, *from), keys::oplog(o, to + 1));
            for kv in snap.scan(Keyspace::Oplog, range)? {
                let (k, v) = kv?;
                out.row(space::OPLOG, &k, &v)?;
            }
        }
        Ok(())
    }

    /// Loads the rows of a snapshot creation packet into the new replica's store (marked
    /// [`CREATING`] first), checking their count, hash and the sender's signature; returns the
    /// own row its chain bases and oplog records make, and the next apply sequence number.
    /// The caller writes them and the identity, and removes the mark.
    pub(super) fn load_snapshot(&self, pkt: &mut Incoming<'_>) -> Result<LoadedSnapshot> {
        let h = pkt.header.clone();
        if !LOADS.contains(&h.snapshot) {
            return Err(CoreError::Invalid(format!(
                "{} is a snapshot of layout {}, which this release of msite cannot load (it knows layout {LAYOUT}); upgrade msite at the new site",
                pkt.source, h.snapshot
            )));
        }
        let key = super::trust::listed_key(&h, &ReplicaId(h.sender.0)).ok_or_else(|| {
            CoreError::Malformed(format!(
                "{}: the header lists no key of its sender",
                pkt.source
            ))
        })?;
        self.store.put_one(
            Keyspace::Meta,
            CREATING,
            &pkt.packet_id.0,
            WriteOptions::SYNC,
        )?;
        let mut load = SnapshotIn {
            src: pkt.source.clone(),
            family: h.family,
            packet_id: wire::Id(pkt.packet_id.0),
            key,
            hasher: sign::SnapshotHasher::new(),
            own: Row::default(),
            last: Default::default(),
            next_lsn: 1,
            layout: h.snapshot,
            keep_base: None,
            pending: None,
            ended: false,
            failed: None,
        };
        let loaded = {
            let mut rows = std::iter::from_fn(|| load.next(&mut pkt.records));
            self.store.bulk_load(&mut rows)
        };
        if let Some(e) = load.failed.take() {
            return Err(e);
        }
        loaded?;
        if !load.ended {
            return Err(incomplete(
                &load.src,
                "it ends before its snapshot-end record",
            ));
        }
        if load.own != Row::from_wire(&h.sender_row) {
            return Err(incomplete(
                &load.src,
                "its chain bases differ from its sender's row",
            ));
        }
        Ok(LoadedSnapshot {
            keep_base: load.keep_base.unwrap_or(!load.last.is_empty()),
            own: load.own,
            next_lsn: load.next_lsn,
        })
    }
}

/// What a loaded snapshot holds, for the commit that makes the new replica.
pub(super) struct LoadedSnapshot {
    /// The own row its chain bases and oplog records make.
    pub(super) own: Row,
    /// The apply sequence number after its oplog records.
    pub(super) next_lsn: u64,
    /// Whether the importer kept a snapshot base (some entries did not travel).
    pub(super) keep_base: bool,
}

/// The refusal of a damaged snapshot: what is wrong and what to do.
fn incomplete(src: &str, why: &str) -> CoreError {
    CoreError::Malformed(format!(
        "{src} is not a whole snapshot creation packet ({why}); the new store is left unusable: remove it and import a complete copy of the packet (or ask the creator for a new one)"
    ))
}

/// The writing side: each row into the sink and the running hash.
struct SnapshotOut<'a> {
    sink: &'a mut dyn RecordSink,
    hasher: sign::SnapshotHasher,
}

impl SnapshotOut<'_> {
    fn row(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<()> {
        self.hasher.row(space, key, value);
        self.sink.row(space, key, value)
    }
}

/// The reading side: turns row records into the rows to load, checking each, until the
/// snapshot end, whose count, hash and signature it checks.
struct SnapshotIn {
    src: String,
    family: wire::Id,
    packet_id: wire::Id,
    key: wire::PublicKey,
    hasher: sign::SnapshotHasher,
    own: Row,
    /// Per origin, the number and hash the next oplog record must continue.
    last: std::collections::BTreeMap<ReplicaId, (u64, Hash)>,
    /// The apply sequence after the carried oplog records (theirs are the creator's).
    next_lsn: u64,
    /// The packet's row layout.
    layout: u64,
    /// Whether State rows get a base copy: decided at the first State row (layout 2: when a
    /// chain base came before it; layout 1: always).
    keep_base: Option<bool>,
    /// A second row a record makes (a chain base's dropped mark, a State row's base copy),
    /// loaded next.
    pending: Option<KeyValueIn>,
    ended: bool,
    /// Why the stream stopped (the load returns an error; this is the one to report).
    failed: Option<CoreError>,
}

/// A row to load: keyspace, key, value.
type KeyValueIn = (Keyspace, Vec<u8>, Vec<u8>);
type LoadRow = store::Result<KeyValueIn>;

impl SnapshotIn {
    /// The next row to load (None at the end), or the error that stops the load.
    fn next(&mut self, records: &mut dyn Iterator<Item = Result<Record>>) -> Option<LoadRow> {
        if self.failed.is_some() {
            return None;
        }
        if let Some(row) = self.pending.take() {
            return Some(Ok(row));
        }
        match self.step(records) {
            Ok(row) => row.map(Ok),
            Err(e) => {
                self.failed = Some(e);
                Some(Err(store::Error::Invalid(
                    "the snapshot creation packet is damaged".into(),
                )))
            }
        }
    }

    fn step(
        &mut self,
        records: &mut dyn Iterator<Item = Result<Record>>,
    ) -> Result<Option<KeyValueIn>> {
        let Some(rec) = records.next() else {
            return Ok(None);
        };
        if self.ended {
            return Err(incomplete(
                &self.src,
                "records follow its snapshot-end record",
            ));
        }
        match rec? {
            Record::Row { space, key, value } => {
                self.hasher.row(space, &key, &value);
                if space == space::BASE {
                    return self.base(key, value).map(Some);
                }
                if space == space::OPLOG {
                    return self.oplog(key, value).map(Some);
                }
                let ks = ks_of(space, &key).ok_or_else(|| {
                    incomplete(&self.src, &format!("a row of unknown space {space}"))
                })?;
                if ks == Keyspace::State && self.keeps_base() {
                    let base = [BASE_STATE, &key].concat();
                    self.pending = Some((Keyspace::Meta, base, value.clone()));
                }
                Ok(Some((ks, key, value)))
            }
            Record::SnapshotEnd {
                rows,
                hash,
                signature,
            } => {
                self.end(rows, &hash, &signature)?;
                // Read on to the end of the packet: its parts' trailers (record counts and
                // hashes) are checked only there.
                match records.next() {
                    None => Ok(None),
                    Some(Err(e)) => Err(e),
                    Some(Ok(_)) => Err(incomplete(
                        &self.src,
                        "records follow its snapshot-end record",
                    )),
                }
            }
            _ => Err(incomplete(
                &self.src,
                "it carries entries or content records besides its rows",
            )),
        }
    }

    /// Whether State rows get a base copy, decided at the first one: in layout 2 the chain
    /// bases came before it, so a snapshot without them carries every entry and needs none.
    fn keeps_base(&mut self) -> bool {
        let layout = self.layout;
        let bases = !self.last.is_empty();
        *self.keep_base.get_or_insert(layout == 1 || bases)
    }

    /// A chain base: the own row's cell, the retained base of retain.rs and (next) the dropped
    /// mark: what the family may no longer keep, which is the creator's, not the base.
    fn base(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<KeyValueIn> {
        let bad = || incomplete(&self.src, "a malformed chain base");
        if self.layout >= 2 && self.keep_base.is_some() {
            return Err(incomplete(
                &self.src,
                "a chain base follows the object base's rows",
            ));
        }
        let origin = ReplicaId(key.as_slice().try_into().map_err(|_| bad())?);
        if value.len() != 48 {
            return Err(bad());
        }
        let n = be_u64(&value[..8]).map_err(|_| bad())?;
        let hash: Hash = value[8..40].try_into().map_err(|_| bad())?;
        let mark = be_u64(&value[40..]).map_err(|_| bad())?;
        if mark > n || self.own.get(&origin) > 0 {
            return Err(bad());
        }
        self.own.set(origin, n);
        self.last.insert(origin, (n, hash));
        self.pending = Some((
            Keyspace::Meta,
            crate::retain::dropped_key(&origin),
            mark.to_be_bytes().to_vec(),
        ));
        Ok((
            Keyspace::Meta,
            crate::retain::base_key(&origin),
            crate::retain::base_value(n, &hash),
        ))
    }

    /// An oplog record above its origin's chain base: the next of its chain, its hash right.
    fn oplog(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<KeyValueIn> {
        let bad = |why: &str| incomplete(&self.src, why);
        let stored = StoredEntry::decode(&value).map_err(|_| bad("a malformed oplog record"))?;
        let e = Entry::decode_verified(&stored.canonical)
            .map_err(|e| bad(&format!("an oplog record holds a damaged entry: {e}")))?;
        let (n, prev) = self
            .last
            .get(&e.origin)
            .copied()
            .unwrap_or((0, crate::ids::ZERO_HASH));
        let blob = match &e.op {
            crate::model::Op::Checkin { content, .. } => Some(*content),
            _ => None,
        };
        if key != keys::oplog(&e.origin, e.number) || e.number != n + 1 || e.prev != prev {
            return Err(bad("its oplog records do not continue their chains"));
        }
        if stored.hash != e.hash || stored.blob != blob {
            return Err(bad("an oplog record disagrees with its entry"));
        }
        self.last.insert(e.origin, (e.number, e.hash));
        self.own.set(e.origin, e.number);
        self.next_lsn = self.next_lsn.max(stored.lsn + 1);
        Ok((Keyspace::Oplog, key, value))
    }

    fn end(&mut self, rows: u64, hash: &Hash, signature: &wire::Signature) -> Result<()> {
        if self.hasher.finish() != (rows, *hash) {
            return Err(incomplete(
                &self.src,
                "its rows differ from what its snapshot-end record counts and hashes",
            ));
        }
        let msg = sign::snapshot_message(&self.family, &self.packet_id, rows, hash);
        if !super::trust::verifies(&self.key, &msg, signature) {
            return Err(CoreError::Refused(crate::error::Refusal::Unauthentic {
                sender: self.src.clone(),
                detail: "its snapshot-end record is not signed by its sender's key".into(),
            }));
        }
        self.ended = true;
        Ok(())
    }
}

/// Whether `store` holds an interrupted snapshot creation: the message that says so and what
/// to do (None: it does not).
pub fn interrupted_creation<R: ReadView + ?Sized>(r: &R) -> Result<Option<String>> {
    Ok(r.get(Keyspace::Meta, CREATING)?.map(|_| {
        "this store holds an interrupted replica creation (`msite mkreplica import` stopped before it finished): it is not a replica; remove the store and import the creation packet again".to_string()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loader for a packet of row layout `layout` (the header checks are not its part).
    fn loader(layout: u64) -> SnapshotIn {
        SnapshotIn {
            src: "test packet".into(),
            family: wire::Id([1; 16]),
            packet_id: wire::Id([2; 16]),
            key: [3; 32],
            hasher: sign::SnapshotHasher::new(),
            own: Row::default(),
            last: Default::default(),
            next_lsn: 1,
            layout,
            keep_base: None,
            pending: None,
            ended: false,
            failed: None,
        }
    }

    fn state_row() -> Result<Record> {
        Ok(Record::Row {
            space: space::STATE,
            key: b"state key".to_vec(),
            value: b"state value".to_vec(),
        })
    }

    fn chain_base() -> Result<Record> {
        let value = [&7u64.to_be_bytes()[..], &[9; 32], &0u64.to_be_bytes()].concat();
        Ok(Record::Row {
            space: space::BASE,
            key: vec![5; 16],
            value,
        })
    }

    /// The rows `records` load, or the first error.
    fn load(layout: u64, records: Vec<Result<Record>>) -> Result<Vec<KeyValueIn>> {
        let mut load = loader(layout);
        let mut it = records.into_iter();
        let mut rows = Vec::new();
        while let Some(row) = load.next(&mut it) {
            match (row, load.failed.take()) {
                (Ok(row), None) => rows.push(row),
                (_, Some(e)) => return Err(e),
                (Err(e), None) => return Err(e.into()),
            }
        }
        Ok(rows)
    }

    fn base_copies(rows: &[KeyValueIn]) -> usize {
        rows.iter()
            .filter(|(ks, k, _)| *ks == Keyspace::Meta && k.starts_with(BASE_STATE))
            .count()
    }

    /// Layout 2 without a chain base carries every entry: no State row gets a base copy.
    /// With a chain base first, every State row does.
    #[test]
    fn layout_2_keeps_a_base_only_when_a_chain_base_came_first() {
        let rows = load(2, vec![state_row()]).unwrap();
        assert_eq!(base_copies(&rows), 0);
        let rows = load(2, vec![chain_base(), state_row()]).unwrap();
        assert_eq!(base_copies(&rows), 1);
    }

    /// Layout 2 refuses a chain base after a State row (its importer decided already);
    /// layout 1, whose chain bases come after the State rows, keeps a base copy of each.
    #[test]
    fn layout_1_always_keeps_a_base_and_layout_2_wants_chain_bases_first() {
        let err = load(2, vec![state_row(), chain_base()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("a chain base follows the object base's rows"),
            "{err}"
        );
        let rows = load(1, vec![state_row(), chain_base()]).unwrap();
        assert_eq!(base_copies(&rows), 1);
    }
}
