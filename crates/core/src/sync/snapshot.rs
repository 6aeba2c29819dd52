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
//! importer keeps a local copy of the State rows it loaded, packed into zstd blocks of about
//! a megabyte ([`BASE_BLOCKS`]; earlier releases kept a row per State row, [`BASE_STATE`],
//! which a rebuild still reads), and the row they
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
use super::row_batch::{row_channel, RowReceiver, RowSender};

/// The layout version of the rows a snapshot writes (the header's `snapshot` field): the
/// key layouts of State, Blobs and the Peers tags below, as this release stores them, and
/// the order of the runs. Layout 3: chain bases, State, Blobs, Peers, oplog records, the
/// State rows in blocks ([`space::STATE_BLOCK`]), each as a snapshot base keeps it, so the
/// importer keeps a base without compressing it and hashes a seventh of the bytes. Layout 2
/// sent each State row as a record of its own.
pub(crate) const LAYOUT: u64 = 3;
/// The layouts this release loads. Layout 1 (chain bases after Peers) keeps a snapshot base
/// always: its importer meets the chain bases only after the State rows.
const LOADS: [u64; 3] = [1, 2, 3];

/// Meta: present while a store is being made from a snapshot; removed by the commit that
/// writes the identity. A store holding it is an interrupted creation.
pub const CREATING: &[u8] = b"creating";

/// Meta: the row the snapshot this replica was made from holds (its creator's own row): every
/// entry at or below it is in the base's rows ([`BASE_BLOCKS`]), none above. Absent: made from the history.
pub(crate) const BASE_ROW: &[u8] = b"snapshot.row";

/// Meta prefix: the State rows of the snapshot this replica was made from, one row each (the
/// key is the prefix followed by the State key), as releases before [`BASE_BLOCKS`] kept
/// them. Read by a rebuild, never written any more.
pub(crate) const BASE_STATE: &[u8] = b"snapshot.state.";

/// Meta prefix: the State rows of the snapshot this replica was made from, as loaded, packed
/// into blocks ([`BaseBlocks`]): the key is the prefix and the block's number (u32 BE), the
/// value the rows' raw length (varint) and one zstd frame of the rows, each a length-prefixed
/// key and value, in key order. A load writes a few hundred large rows instead of a copy of
/// every State row. Local: never sent, never changed.
pub(crate) const BASE_BLOCKS: &[u8] = b"snapshot.blocks.";

/// The raw bytes of rows a base block collects before it is written; a row longer than this
/// goes in a block of its own.
const BASE_BLOCK_BYTES: usize = 1 << 20;

/// The longest State row (key and value) a snapshot sends in a block (layout 3); a longer one
/// travels as a row record of its own, so a block's rows never exceed [`STATE_BLOCK_LIMIT`].
const BLOCKED_ROW_BYTES: usize = BASE_BLOCK_BYTES / 2;

/// The most raw bytes a received State block may claim: a block's rows and their length
/// prefixes. A claim above it is refused before anything is allocated for it.
const STATE_BLOCK_LIMIT: u64 = 2 * BASE_BLOCK_BYTES as u64;

/// The zstd level of the base blocks: the fastest of the regular levels, since the load waits
/// for them (State rows still pack to about a third).
const BASE_BLOCK_LEVEL: i32 = 1;

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
/// the content its versions refer to out of `removed`: that content stays. Reads the base
/// blocks and, in a store made by an earlier release, the rows copied one by one.
pub(crate) fn restore_base<S: Store>(
    txn: &mut crate::txn::Txn<'_, S>,
    removed: &mut std::collections::BTreeSet<Hash>,
) -> Result<()> {
    let mut restore = |txn: &mut crate::txn::Txn<'_, S>, key: &[u8], v: &[u8]| -> Result<()> {
        if let Some(c) = crate::vob::version_content(key, v)? {
            removed.remove(&c);
        }
        txn.put(Keyspace::State, key, v);
        Ok(())
    };
    for (k, v) in txn.scan_prefix(Keyspace::Meta, BASE_STATE)? {
        restore(txn, &k[BASE_STATE.len()..], &v)?;
    }
    for (_, block) in txn.scan_prefix(Keyspace::Meta, BASE_BLOCKS)? {
        for (key, v) in base_block_rows(&block)? {
            restore(txn, &key, &v)?;
        }
    }
    Ok(())
}

/// The State rows a base block's value holds, in order.
pub(crate) fn base_block_rows(block: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    rows_of(&unpack_base_block(block)?)
}

/// The length-prefixed keys and values of a block's raw rows, in order.
fn rows_of(raw: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut d = crate::codec::Dec::new(raw, "snapshot base block");
    let mut rows = Vec::new();
    while !d.is_empty() {
        rows.push((d.bytes()?.to_vec(), d.bytes()?.to_vec()));
    }
    Ok(rows)
}

/// Rewrites the snapshot base of the replica in `store` as releases before the base blocks
/// kept it, a Meta row per State row (for the scenario that checks such stores still rebuild).
#[cfg(feature = "testkit")]
pub(crate) fn store_base_as_rows<S: Store>(store: &S) -> Result<()> {
    let mut txn = crate::txn::Txn::new(store);
    for (k, block) in txn.scan_prefix(Keyspace::Meta, BASE_BLOCKS)? {
        for (key, v) in base_block_rows(&block)? {
            txn.put(Keyspace::Meta, &[BASE_STATE, &key].concat(), &v);
        }
        txn.delete(Keyspace::Meta, &k);
    }
    Ok(txn.commit(WriteOptions::SYNC)?)
}

/// The rows of a base block's value (length-prefixed keys and values).
fn unpack_base_block(block: &[u8]) -> Result<Vec<u8>> {
    // A block holds at most a block's bytes or one row of a packet: memory stays bounded
    // whatever a damaged length claims.
    let limit = BASE_BLOCK_BYTES as u64 + u64::from(msite_packet::format::MAX_RECORD_LEN);
    unpack_block(block, limit)
}

/// The rows of a block's value (a base block's or a snapshot's State block), refused when
/// its length claims more than `limit` raw bytes.
fn unpack_block(block: &[u8], limit: u64) -> Result<Vec<u8>> {
    let damaged = || crate::codec::CodecError {
        what: "snapshot base block",
    };
    let mut d = crate::codec::Dec::new(block, "snapshot base block");
    let raw_len = d.u64()?;
    if raw_len > limit {
        return Err(damaged().into());
    }
    let frame = d.rest();
    let rows = zstd::bulk::decompress(frame, raw_len as usize).map_err(|_| damaged())?;
    if rows.len() as u64 != raw_len {
        return Err(damaged().into());
    }
    Ok(rows)
}

/// A compressor for base blocks: [`BASE_BLOCK_LEVEL`], with the frame checksum.
fn base_block_compressor() -> Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(BASE_BLOCK_LEVEL).map_err(store::Error::Io)?;
    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .map_err(store::Error::Io)?;
    Ok(c)
}

/// The State rows of a snapshot base being loaded, packed into [`BASE_BLOCKS`] rows.
///
/// Its two buffers (the rows collected, the frame compressed from them) serve every block:
/// made afresh for each one, growing to a megabyte took new pages from the system each time,
/// and zeroing those was a third of the load's reading thread.
#[derive(Default)]
struct BaseBlocks {
    rows: Enc,
    frame: Vec<u8>,
    next: u32,
    /// Made at the first block; its frames carry zstd's checksum, so a damaged block is
    /// refused when it is read back.
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

impl BaseBlocks {
    /// Adds a State row; returns the block it completes, if it does.
    fn add(&mut self, key: &[u8], value: &[u8]) -> Result<Option<KeyValueIn>> {
        let full = match self.rows.0.len() + key.len() + value.len() > BASE_BLOCK_BYTES {
            true => self.flush()?,
            false => None,
        };
        self.rows = std::mem::take(&mut self.rows).bytes(key).bytes(value);
        Ok(full)
    }

    /// A block made elsewhere (a snapshot's State block), after the block of the rows
    /// collected so far, if any.
    fn verbatim(&mut self, block: Vec<u8>) -> Result<Vec<KeyValueIn>> {
        let mut out: Vec<KeyValueIn> = self.flush()?.into_iter().collect();
        out.push((Keyspace::Meta, self.next_key(), block));
        Ok(out)
    }

    /// The key of the next block.
    fn next_key(&mut self) -> Vec<u8> {
        let key = [BASE_BLOCKS, &self.next.to_be_bytes()].concat();
        self.next += 1;
        key
    }

    /// The block of the rows collected so far (None: there are none).
    fn flush(&mut self) -> Result<Option<KeyValueIn>> {
        if self.rows.0.is_empty() {
            return Ok(None);
        }
        let c = match self.compressor.as_mut() {
            Some(c) => c,
            None => self.compressor.insert(base_block_compressor()?),
        };
        let rows = &self.rows.0;
        self.frame.clear();
        self.frame
            .reserve(zstd::zstd_safe::compress_bound(rows.len()));
        c.compress_to_buffer(rows, &mut self.frame)
            .map_err(store::Error::Io)?;
        let value = Enc::with_capacity(self.frame.len() + 10)
            .u64(rows.len() as u64)
            .raw(&self.frame)
            .done();
        self.rows.0.clear();
        Ok(Some((Keyspace::Meta, self.next_key(), value)))
    }
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
    /// Layout 3: a block of consecutive State rows, as a snapshot base keeps them (key: the
    /// block's number, u32 BE, from 0 and consecutive; value: a [`super::BASE_BLOCKS`]
    /// value, the rows' raw length and one checksummed zstd frame of them).
    pub const STATE_BLOCK: u8 = 6;
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
    /// the snapshot end signed for `packet_id`. Returns the rows written. The rows are read
    /// here and written (hashed, encoded, compressed) on a thread of their own
    /// ([`write_on_two_threads`]).
    pub(super) fn write_snapshot(
        &self,
        plan: &ExportPlan,
        sink: &mut (dyn RecordSink + Send),
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
        let out = SnapshotOut {
            sink,
            hasher: sign::SnapshotHasher::new(),
            state: BaseBlocks::default(),
            blocks: 0,
        };
        let out = write_on_two_threads(out, |rows| self.read_rows(&snap, plan, rows))?;
        let (rows, hash) = out.hasher.finish();
        let msg = sign::snapshot_message(&wire::Id(self.family.0), packet_id, rows, &hash);
        let signature = self.signing_key()?.sign(&msg).to_bytes();
        out.sink.snapshot_end(rows, &hash, &signature)?;
        Ok(rows)
    }

    /// Reads a snapshot plan's rows from `snap` into `out`, in the order of the row layout.
    fn read_rows<R: ReadView + ?Sized>(
        &self,
        snap: &R,
        plan: &ExportPlan,
        out: &mut RowBatches,
    ) -> Result<()> {
        self.write_bases(snap, plan, out)?;
        send_rows(snap, Keyspace::State, KeyRange::all(), space::STATE, out)?;
        send_rows(snap, Keyspace::Blobs, KeyRange::all(), space::BLOBS, out)?;
        for tag in PEER_TAGS {
            send_rows(
                snap,
                Keyspace::Peers,
                KeyRange::prefix(&[tag]),
                space::PEERS,
                out,
            )?;
        }
        Self::write_oplog(snap, plan, out)
    }

    /// The chain bases (number, hash, dropped mark) of the origins whose entries do not all
    /// travel (the plan's ranges that start above 1).
    fn write_bases<R: ReadView + ?Sized>(
        &self,
        snap: &R,
        plan: &ExportPlan,
        out: &mut RowBatches,
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
        out: &mut RowBatches,
    ) -> Result<()> {
        for (o, from, to) in plan.ranges.iter().filter(|(_, f, t)| f <= t) {
            let range = KeyRange::between(keys::oplog(o, *from), keys::oplog(o, to + 1));
            send_rows(snap, Keyspace::Oplog, range, space::OPLOG, out)?;
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
            pending: Default::default(),
            base: BaseBlocks::default(),
            blocks_in: 0,
            ended: false,
            failed: None,
        };
        let loaded = load_on_two_threads(&self.store, &mut load, &mut *pkt.records);
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

/// Bulk-loads the rows `load` makes of `records` into `store`: the packet is read, checked
/// and hashed (and the snapshot base packed) on a thread of its own, which hands the rows over
/// in [`RowBatch`](super::row_batch::RowBatch)es, while this thread writes them. At most two
/// batches wait, so memory stays bounded. When the store stops early, the reader stops at its
/// next batch; when the packet turns out damaged, the store's load fails after the rows
/// before it.
fn load_on_two_threads<S: Store>(
    store: &S,
    load: &mut SnapshotIn,
    records: &mut (dyn Iterator<Item = Result<Record>> + Send),
) -> store::Result<u64> {
    std::thread::scope(|scope| {
        let (mut out, received) = row_channel();
        scope.spawn(move || {
            while let Some(row) = load.next(records) {
                let Ok((ks, key, value)) = row else {
                    return out.fail(); // `load.failed` holds why.
                };
                if !out.push(ks, &key, &value) {
                    return; // The store stopped.
                }
            }
            // The store may have stopped already: then nobody waits for the last batch.
            out.send();
        });
        let mut rows = LoadRows(received);
        let loaded = store.bulk_load(&mut rows);
        drop(rows);
        loaded
    })
}

/// The store's side of a snapshot load: the rows of the batches the packet's thread sends.
struct LoadRows(RowReceiver<Keyspace>);

impl store::BulkSource for LoadRows {
    fn each_row(&mut self, row: store::RowWriter<'_>) -> store::Result<()> {
        match self.0.each(|ks, k, v| row(ks, k, v))? {
            true => Ok(()),
            false => Err(damaged_load()),
        }
    }
}

/// The store's error for a load whose packet turned out damaged (the loader keeps why).
fn damaged_load() -> store::Error {
    store::Error::Invalid("the snapshot creation packet is damaged".into())
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
/// The writing side of a snapshot: rows hashed and written into the packet, State rows
/// packed into [`space::STATE_BLOCK`] records first (layout 3).
struct SnapshotOut<'a> {
    sink: &'a mut (dyn RecordSink + Send),
    hasher: sign::SnapshotHasher,
    /// The State rows gathered for the next block.
    state: BaseBlocks,
    /// The number of the next block record.
    blocks: u32,
}

/// Runs `read`, which reads the rows, on this thread, and writes what it reads into `out` on
/// a scoped thread: the store is read while the packet is hashed, encoded and compressed.
/// Rows cross in [`RowBatch`]es, two batches waiting at most (`row_batch.rs`).
/// When writing fails, reading stops at its next batch and the writer's error is returned;
/// when reading fails, the writer stops and the reader's is.
fn write_on_two_threads<'a>(
    mut out: SnapshotOut<'a>,
    read: impl FnOnce(&mut RowBatches) -> Result<()>,
) -> Result<SnapshotOut<'a>> {
    std::thread::scope(|scope| {
        let (batches, received) = row_channel();
        let writer = scope.spawn(move || -> Result<SnapshotOut<'a>> {
            // The reader never fails its batches: a failed read drops the sender.
            received.each(|space, key, value| out.row(space, key, value))?;
            out.flush_blocks()?;
            Ok(out)
        });
        let mut rows = RowBatches {
            batches,
            writer_stopped: false,
        };
        let read = read(&mut rows).and_then(|()| rows.send());
        let writer_stopped = rows.writer_stopped;
        drop(rows);
        let written = writer.join().unwrap_or_else(|_| {
            Err(CoreError::Invalid(
                "the packet's writing thread stopped unexpectedly".into(),
            ))
        });
        match (read, written) {
            (Ok(()), written) => written,
            (Err(_), Err(e)) if writer_stopped => Err(e),
            (Err(e), _) => Err(e),
        }
    })
}

/// Sends the rows of `range` in `ks` to `out` as rows of `space`, lent by the store
/// ([`ReadView::scan_each`]): no copy of each row but the batch's own.
fn send_rows<R: ReadView + ?Sized>(
    snap: &R,
    ks: Keyspace,
    range: KeyRange,
    space: u8,
    out: &mut RowBatches,
) -> Result<()> {
    let mut sent = Ok(());
    snap.scan_each(ks, range, &mut |k, v| {
        sent = out.row(space, k, v);
        sent.is_ok()
    })?;
    sent
}

/// The reading side of [`write_on_two_threads`]: rows gathered into batches for the writer.
struct RowBatches {
    batches: RowSender<u8>,
    /// The writer stopped (its error is the one to report).
    writer_stopped: bool,
}

impl RowBatches {
    /// Adds a row (its bytes are copied); a full batch goes to the writer.
    fn row(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<()> {
        let sent = self.batches.push(space, key, value);
        self.unless_stopped(sent)
    }

    /// Hands the rows gathered so far to the writer.
    fn send(&mut self) -> Result<()> {
        let sent = self.batches.send();
        self.unless_stopped(sent)
    }

    /// The error that stops the reading when the writer is gone (`sent` false).
    fn unless_stopped(&mut self, sent: bool) -> Result<()> {
        if !sent {
            self.writer_stopped = true;
            return Err(CoreError::Invalid("the packet's writer stopped".into()));
        }
        Ok(())
    }
}

impl SnapshotOut<'_> {
    /// Writes a row: a State row into the block being gathered (a row too long for one goes
    /// alone, after the blocks before it), any other row after the last block.
    fn row(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<()> {
        if space == space::STATE && key.len() + value.len() <= BLOCKED_ROW_BYTES {
            if let Some((_, _, block)) = self.state.add(key, value)? {
                self.block(&block)?;
            }
            return Ok(());
        }
        self.flush_blocks()?;
        self.put(space, key, value)
    }

    /// Writes the block of the State rows gathered so far, if any.
    fn flush_blocks(&mut self) -> Result<()> {
        match self.state.flush()? {
            Some((_, _, block)) => self.block(&block),
            None => Ok(()),
        }
    }

    fn block(&mut self, value: &[u8]) -> Result<()> {
        let n = self.blocks;
        self.blocks += 1;
        self.put(space::STATE_BLOCK, &n.to_be_bytes(), value)
    }

    fn put(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<()> {
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
    /// Rows a record makes besides its own (a chain base's dropped mark, a completed base
    /// block), loaded next.
    pending: std::collections::VecDeque<KeyValueIn>,
    /// The State rows of the snapshot base, packed as they arrive (when it keeps one).
    base: BaseBlocks,
    /// The number the next State block must carry (layout 3).
    blocks_in: u32,
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
        if let Some(row) = self.pending.pop_front() {
            return Some(Ok(row));
        }
        match self.step(records) {
            Ok(Some(row)) => Some(Ok(row)),
            // The last base block, completed by the snapshot end.
            Ok(None) => self.pending.pop_front().map(Ok),
            Err(e) => {
                self.failed = Some(e);
                Some(Err(damaged_load()))
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
                if space != space::STATE {
                    self.pending.extend(self.base.flush()?);
                }
                if space == space::BASE {
                    return self.base(key, value).map(Some);
                }
                if space == space::OPLOG {
                    return self.oplog(key, value).map(Some);
                }
                if space == space::STATE_BLOCK && self.layout >= 3 {
                    return self.state_block(&key, value);
                }
                let ks = ks_of(space, &key).ok_or_else(|| {
                    incomplete(&self.src, &format!("a row of unknown space {space}"))
                })?;
                if ks == Keyspace::State && self.keeps_base() {
                    self.pending.extend(self.base.add(&key, &value)?);
                }
                Ok(Some((ks, key, value)))
            }
            Record::SnapshotEnd {
                rows,
                hash,
                signature,
            } => {
                self.pending.extend(self.base.flush()?);
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
        self.pending.push_back((
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

    /// A block of State rows (layout 3): its rows, loaded next, and when this replica keeps a
    /// snapshot base, the block itself as a base block, as received: the base costs no
    /// compressing. Returns the first of those rows.
    fn state_block(&mut self, key: &[u8], block: Vec<u8>) -> Result<Option<KeyValueIn>> {
        if key != self.blocks_in.to_be_bytes() {
            return Err(incomplete(&self.src, "its State blocks are out of order"));
        }
        self.blocks_in += 1;
        let damaged = || incomplete(&self.src, "a damaged State block");
        let rows = unpack_block(&block, STATE_BLOCK_LIMIT)
            .and_then(|raw| rows_of(&raw))
            .map_err(|_| damaged())?;
        if rows.is_empty() {
            return Err(damaged());
        }
        let state = rows.into_iter().map(|(k, v)| (Keyspace::State, k, v));
        self.pending.extend(state);
        if self.keeps_base() {
            let kept = self.base.verbatim(block)?;
            self.pending.extend(kept);
        }
        Ok(self.pending.pop_front())
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
            pending: Default::default(),
            base: BaseBlocks::default(),
            blocks_in: 0,
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

    /// A Blobs row: it closes the State rows, and so the last base block.
    fn blobs_row() -> Result<Record> {
        Ok(Record::Row {
            space: space::BLOBS,
            key: b"blob key".to_vec(),
            value: b"blob value".to_vec(),
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

    /// The State rows the base blocks among `rows` hold, in order.
    fn base_rows(rows: &[KeyValueIn]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for (ks, k, v) in rows {
            if *ks == Keyspace::Meta && k.starts_with(BASE_BLOCKS) {
                out.extend(base_block_rows(v).unwrap());
            }
        }
        out
    }

    fn base_copies(rows: &[KeyValueIn]) -> usize {
        base_rows(rows).len()
    }

    /// The base blocks hold every State row once, in order, each block about
    /// [`BASE_BLOCK_BYTES`] of rows; the blocks' keys ascend.
    #[test]
    fn a_large_base_is_packed_into_blocks_that_hold_every_row() {
        let value = |n: u32| format!("value {n} {}", "x".repeat(200)).into_bytes();
        let mut records = vec![chain_base()];
        for n in 0..20_000u32 {
            records.push(Ok(Record::Row {
                space: space::STATE,
                key: n.to_be_bytes().to_vec(),
                value: value(n),
            }));
        }
        records.push(blobs_row());
        let rows = load(2, records).unwrap();
        let blocks: Vec<&Vec<u8>> = rows
            .iter()
            .filter(|(ks, k, _)| *ks == Keyspace::Meta && k.starts_with(BASE_BLOCKS))
            .map(|(_, k, _)| k)
            .collect();
        assert!(blocks.len() >= 4, "{} blocks", blocks.len());
        assert!(blocks.windows(2).all(|w| w[0] < w[1]));
        let want: Vec<(Vec<u8>, Vec<u8>)> = (0..20_000u32)
            .map(|n| (n.to_be_bytes().to_vec(), value(n)))
            .collect();
        let got = base_rows(&rows);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the blocks hold other rows");
    }

    /// A damaged base block is a damaged local record, never a panic or a wrong row; nor does
    /// a huge length claim allocate it.
    #[test]
    fn a_damaged_base_block_is_refused() {
        let rows = load(2, vec![chain_base(), state_row(), blobs_row()]).unwrap();
        let (_, _, block) = rows
            .iter()
            .find(|(ks, k, _)| *ks == Keyspace::Meta && k.starts_with(BASE_BLOCKS))
            .unwrap();
        let mut flipped = block.clone();
        *flipped.last_mut().unwrap() ^= 0x55;
        let mut short = block.clone();
        short.truncate(block.len() - 3);
        let huge = Enc::new().u64(u64::MAX).raw(&block[1..]).done();
        let mut longer = Enc::new().u64(block[0] as u64 + 1).done();
        longer.extend_from_slice(&block[1..]);
        for bad in [flipped, short, huge, longer] {
            let err = unpack_base_block(&bad).unwrap_err();
            assert!(matches!(err, CoreError::Codec(_)), "{err}");
        }
    }

    /// A sink that keeps the row records given to it, and fails each one after the first
    /// `fail_at`, as a full disk would.
    struct Captured {
        rows: Vec<(u8, Vec<u8>, Vec<u8>)>,
        fail_at: usize,
    }

    impl RecordSink for Captured {
        fn entry(&mut self, _: &[u8]) -> Result<()> {
            unreachable!()
        }
        fn blob(&mut self, _: &Hash, _: &[u8]) -> Result<()> {
            unreachable!()
        }
        fn blob_piece(&mut self, _: &Hash, _: u64, _: u64, _: &[u8]) -> Result<()> {
            unreachable!()
        }
        fn delta(&mut self, _: &Hash, _: &Hash, _: u64, _: &[u8]) -> Result<()> {
            unreachable!()
        }
        fn row(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<()> {
            self.rows.push((space, key.to_vec(), value.to_vec()));
            match self.rows.len() > self.fail_at {
                true => Err(CoreError::Invalid("no space left on the device".into())),
                false => Ok(()),
            }
        }
        fn snapshot_end(&mut self, _: u64, _: &Hash, _: &wire::Signature) -> Result<()> {
            Ok(())
        }
    }

    /// Reads `n` rows (Blobs rows: State rows would go in blocks) into `out`, then fails
    /// with `fail` if given.
    fn read_rows(out: &mut RowBatches, n: u64, fail: Option<&str>) -> Result<()> {
        for i in 0..n {
            out.row(space::BLOBS, &i.to_be_bytes(), &[7; 100])?;
        }
        match fail {
            Some(why) => Err(CoreError::Invalid(why.into())),
            None => Ok(()),
        }
    }

    /// Both threads of a snapshot export stop at the first failure and report the real one:
    /// the sink's when writing fails, the store's when reading fails; every row read is
    /// written and hashed when nothing fails.
    #[test]
    fn the_two_threads_of_an_export_report_the_failure_that_stopped_them() {
        let run = |fail_at: usize, read_fails: Option<&str>| {
            let mut sink = Captured {
                rows: Vec::new(),
                fail_at,
            };
            let out = SnapshotOut {
                sink: &mut sink,
                hasher: sign::SnapshotHasher::new(),
                state: BaseBlocks::default(),
                blocks: 0,
            };
            let r = write_on_two_threads(out, |rows| read_rows(rows, 100_000, read_fails))
                .map(|out| out.hasher.finish().0);
            (r, sink.rows.len())
        };
        let (r, written) = run(usize::MAX, None);
        assert_eq!((r.unwrap(), written), (100_000, 100_000));
        let (r, written) = run(5_000, None);
        assert!(r.unwrap_err().to_string().contains("no space left"));
        assert_eq!(written, 5_001, "the writer stops at its first failure");
        let (r, _) = run(usize::MAX, Some("the store is damaged"));
        assert!(r.unwrap_err().to_string().contains("the store is damaged"));
    }

    /// The records a snapshot export writes for `rows` (space, key, value), in order.
    fn exported(rows: &[(u8, Vec<u8>, Vec<u8>)]) -> Vec<Result<Record>> {
        let mut sink = Captured {
            rows: Vec::new(),
            fail_at: usize::MAX,
        };
        let mut out = SnapshotOut {
            sink: &mut sink,
            hasher: sign::SnapshotHasher::new(),
            state: BaseBlocks::default(),
            blocks: 0,
        };
        for (space, k, v) in rows {
            out.row(*space, k, v).unwrap();
        }
        out.flush_blocks().unwrap();
        let records = sink.rows.into_iter();
        records
            .map(|(space, key, value)| Ok(Record::Row { space, key, value }))
            .collect()
    }

    /// A State block record with number `n` and value `value`.
    fn state_block(n: u32, value: Vec<u8>) -> Result<Record> {
        Ok(Record::Row {
            space: space::STATE_BLOCK,
            key: n.to_be_bytes().to_vec(),
            value,
        })
    }

    /// Layout 3 sends State rows in blocks, a row too long for one alone, between them; the
    /// importer loads every State row in order and keeps the blocks, as received, as its base,
    /// with a block of its own for the long row.
    #[test]
    fn layout_3_state_blocks_load_every_row_and_become_the_base_as_received() {
        let chain = [&7u64.to_be_bytes()[..], &[9; 32], &0u64.to_be_bytes()].concat();
        let mut rows = vec![(space::BASE, vec![5; 16], chain)];
        let mut state = Vec::new();
        for n in 0..30_000u32 {
            let value = format!("value {n} {}", "y".repeat(90)).into_bytes();
            state.push((n.to_be_bytes().to_vec(), value));
            if n == 15_000 {
                state.push(((n as u64).to_be_bytes().to_vec(), vec![1; 600 << 10]));
            }
        }
        state.sort();
        rows.extend(
            state
                .iter()
                .map(|(k, v)| (space::STATE, k.clone(), v.clone())),
        );
        rows.push((space::BLOBS, b"blob".to_vec(), b"content".to_vec()));
        let records = exported(&rows);
        let blocks: Vec<Vec<u8>> = records
            .iter()
            .filter_map(|r| match r {
                Ok(Record::Row { space, value, .. }) if *space == space::STATE_BLOCK => {
                    Some(value.clone())
                }
                _ => None,
            })
            .collect();
        assert!(blocks.len() >= 3, "{} blocks", blocks.len());
        assert_eq!(
            records.len(),
            blocks.len() + 3,
            "the long row alone, Blobs, base"
        );
        let loaded = load(3, records).unwrap();
        let loaded_state: Vec<(Vec<u8>, Vec<u8>)> = loaded
            .iter()
            .filter(|(ks, _, _)| *ks == Keyspace::State)
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(loaded_state == state, "the State rows loaded differ");
        assert!(base_rows(&loaded) == state, "the base holds other rows");
        let kept: Vec<&[u8]> = loaded
            .iter()
            .filter(|(ks, k, _)| *ks == Keyspace::Meta && k.starts_with(BASE_BLOCKS))
            .map(|(_, _, v)| v.as_slice())
            .collect();
        assert_eq!(kept.len(), blocks.len() + 1);
        assert!(
            blocks.iter().all(|b| kept.contains(&b.as_slice())),
            "a block was not kept as received"
        );
    }

    /// A State block that claims too much, decodes to nothing or to a cut row, comes out of
    /// order, or comes in a layout before 3 is refused; a sound one loads its rows.
    #[test]
    fn damaged_or_misplaced_state_blocks_are_refused() {
        let block_of = |rows: Vec<u8>| {
            let mut blocks = BaseBlocks {
                rows: Enc(rows),
                ..BaseBlocks::default()
            };
            blocks.flush().unwrap().unwrap().2
        };
        let block = block_of(Enc::new().bytes(b"k").bytes(b"v").done());
        let huge = Enc::new()
            .u64(STATE_BLOCK_LIMIT + 1)
            .raw(&block[1..])
            .done();
        let cut = block_of(Enc::new().bytes(b"key").done()[..3].to_vec());
        let nothing = Enc::new()
            .u64(0)
            .raw(&zstd::bulk::compress(b"", 1).unwrap())
            .done();
        for (bad, why) in [
            (huge, "a damaged State block"),
            (cut, "a damaged State block"),
            (nothing, "a damaged State block"),
        ] {
            let err = load(3, vec![state_block(0, bad)]).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        let err = load(3, vec![state_block(1, block.clone())]).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
        let err = load(2, vec![state_block(0, block.clone())]).unwrap_err();
        assert!(err.to_string().contains("unknown space 6"), "{err}");
        let rows = load(3, vec![state_block(0, block)]).unwrap();
        assert_eq!(rows, vec![(Keyspace::State, b"k".to_vec(), b"v".to_vec())]);
    }

    /// Layout 2 without a chain base carries every entry: no State row gets a base copy.
    /// With a chain base first, every State row does.
    #[test]
    fn layout_2_keeps_a_base_only_when_a_chain_base_came_first() {
        let rows = load(2, vec![state_row()]).unwrap();
        assert_eq!(base_copies(&rows), 0);
        let rows = load(2, vec![chain_base(), state_row(), blobs_row()]).unwrap();
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
