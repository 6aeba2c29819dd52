//! Synchronisation (PROTOCOL §3–5, §7): export of update packets, import with every check in
//! order, acknowledgements that resend lost packets without an operator, and replica creation.
//!
//! # Export
//! The base for a target is the estimate row; the packet carries, for each origin, the entries
//! above the base up to the own row, merged across origins in this replica's apply order (the
//! local apply sequence number, LSN, stored with each oplog record), so the order is causal.
//! Each origin's range is one bounded scan of the oplog, so the cost grows with what is sent,
//! never with history.
//!
//! # Acknowledgements and lost packets
//! Content packets to a target are numbered (per target, per sender incarnation). Every
//! packet reports, for its target, the highest sequence of the target's packets that the
//! sender has applied and the highest it has seen. A sender learns that a packet was lost when
//! the report shows a later packet seen but an earlier one not applied (the later one waits
//! for it), or when it has nothing new to send but packets are still unacknowledged after the
//! target has reported at least once; either way it lowers its estimate to what the target
//! reported and resends. A replica that has nothing to send but new acknowledgements to give
//! sends a small acknowledgement-only packet (sequence 0), which itself needs no
//! acknowledgement, so the exchange settles.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::path::{Path, PathBuf};

use msite_packet::{wire, MemPacketWriter, PacketReader, PacketWriter, Record};

use crate::codec::{be_u64, Dec, Enc};
use crate::content;
use crate::error::{CoreError, Refusal, Result};
use crate::ids::{Hash, PacketId, ReplicaId, ZERO_HASH};
use crate::keys;
use crate::model::{Entry, Op, Row};
use crate::replica::{get_u64, read_row, txn_u64, Appender, Replica, StoredEntry};
use crate::restore::{held_requests_in, prov_acks_in, HeldRequest, ProvisionalAck};
use crate::store::{KeyRange, Keyspace, ReadView, Store, WriteOptions};
use crate::txn::Txn;

/// Where packet records go: a part-file writer or an in-memory one.
pub trait RecordSink {
    /// Appends an entry's canonical bytes.
    fn entry(&mut self, canonical: &[u8]) -> Result<()>;
    /// Appends content that fits in one record.
    fn blob(&mut self, hash: &Hash, bytes: &[u8]) -> Result<()>;
    /// Appends a piece of larger content (`bytes` at `offset` of `total`).
    fn blob_piece(&mut self, hash: &Hash, total: u64, offset: u64, bytes: &[u8]) -> Result<()>;
}

fn enc_err(e: msite_packet::EncodeError) -> CoreError {
    CoreError::Unreadable(format!("cannot write the packet: {e}"))
}

impl RecordSink for PacketWriter {
    fn entry(&mut self, canonical: &[u8]) -> Result<()> {
        self.push_entry(canonical).map_err(enc_err)
    }
    fn blob(&mut self, hash: &Hash, bytes: &[u8]) -> Result<()> {
        self.push_blob(hash, bytes).map_err(enc_err)
    }
    fn blob_piece(&mut self, hash: &Hash, total: u64, offset: u64, bytes: &[u8]) -> Result<()> {
        self.push_blob_piece(hash, total, offset, bytes)
            .map_err(enc_err)
    }
}

impl RecordSink for MemPacketWriter {
    fn entry(&mut self, canonical: &[u8]) -> Result<()> {
        self.push_entry(canonical).map_err(enc_err)
    }
    fn blob(&mut self, hash: &Hash, bytes: &[u8]) -> Result<()> {
        self.push_blob(hash, bytes).map_err(enc_err)
    }
    fn blob_piece(&mut self, hash: &Hash, total: u64, offset: u64, bytes: &[u8]) -> Result<()> {
        self.push_blob_piece(hash, total, offset, bytes)
            .map_err(enc_err)
    }
}

/// Sends the content `h` held in `r`: one blob record when it fits in a chunk, otherwise
/// pieces of a chunk each, read one at a time.
/// Feeds a content record (`Blob` or `BlobPiece`) to `intake`, then commits a consistent
/// prefix once the transaction holds more than [`PREFIX_COMMIT_BYTES`]. Returns the hash of the
/// content the record completed, if it completed one. Other records are not content: no-op.
fn take_content<S: Store>(
    txn: &mut Txn<'_, S>,
    intake: &mut content::Intake,
    rec: Record,
) -> Result<Option<Hash>> {
    let done = match rec {
        Record::Blob { hash, bytes } => Some(intake.blob(txn, hash, bytes)?),
        Record::BlobPiece {
            hash,
            total,
            offset,
            bytes,
        } => intake.piece(txn, hash, total, offset, &bytes)?,
        _ => None,
    };
    if txn.size() > PREFIX_COMMIT_BYTES {
        txn.commit_prefix(WriteOptions::NO_SYNC)?;
    }
    Ok(done)
}

fn send_content<R: ReadView + ?Sized>(r: &R, h: &Hash, sink: &mut dyn RecordSink) -> Result<()> {
    let missing = |what| CoreError::Codec(crate::codec::CodecError { what });
    let rd = content::open(r, h)?.ok_or(missing("content missing for an oplog entry"))?;
    let (mut rd, total) = match rd.whole_or_size()? {
        Ok(bytes) => return sink.blob(h, &bytes),
        Err(chunked) => chunked,
    };
    let mut offset = 0u64;
    while let Some(chunk) = rd.next_chunk()? {
        sink.blob_piece(h, total, offset, &chunk)?;
        offset += chunk.len() as u64;
    }
    if offset != total {
        return Err(missing("stored content shorter than its size"));
    }
    Ok(())
}

/// Sending state towards one target (reports are about our current incarnation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SendState {
    last_seq: u64,
    applied: u64,
    seen: u64,
    have_report: bool,
    reported_row: Row,
}

impl SendState {
    fn encode(&self) -> Vec<u8> {
        let e = Enc::new()
            .u64(self.last_seq)
            .u64(self.applied)
            .u64(self.seen)
            .bool(self.have_report);
        self.reported_row.encode(e).done()
    }
    fn decode(v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v, "send state");
        let s = SendState {
            last_seq: d.u64()?,
            applied: d.u64()?,
            seen: d.u64()?,
            have_report: d.bool()?,
            reported_row: Row::decode(&mut d)?,
        };
        d.end()?;
        Ok(s)
    }
}

/// Receiving state from one sender (about the sender's incarnation `sender_inc`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RecvState {
    sender_inc: u64,
    applied: u64,
    seen: u64,
    reported_applied: u64,
    reported_seen: u64,
    /// Whether we ever sent this sender a packet (a first, acknowledgement-only packet tells
    /// it that we answer, so it may resend what we never acknowledged).
    reported: bool,
}

impl RecvState {
    fn encode(&self) -> Vec<u8> {
        Enc::new()
            .u64(self.sender_inc)
            .u64(self.applied)
            .u64(self.seen)
            .u64(self.reported_applied)
            .u64(self.reported_seen)
            .bool(self.reported)
            .done()
    }
    fn decode(v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v, "receive state");
        let s = RecvState {
            sender_inc: d.u64()?,
            applied: d.u64()?,
            seen: d.u64()?,
            reported_applied: d.u64()?,
            reported_seen: d.u64()?,
            reported: d.bool()?,
        };
        d.end()?;
        Ok(s)
    }
}

fn load<R: ReadView + ?Sized, T>(
    r: &R,
    key: &[u8],
    f: impl Fn(&[u8]) -> Result<T>,
) -> Result<Option<T>> {
    match r.get(Keyspace::Peers, key)? {
        Some(v) => Ok(Some(f(&v)?)),
        None => Ok(None),
    }
}

/// A packet to write: header plus the ranges of entries it carries.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// The target.
    pub target: ReplicaId,
    /// Kind of packet.
    pub kind: wire::Kind,
    /// The header.
    pub header: wire::Header,
    ranges: Vec<(ReplicaId, u64, u64)>,
    all_blobs: bool,
    seq: u64,
    advance_to: Option<Row>,
    report: (u64, u64),
    /// Entries the packet will carry.
    pub entry_count: u64,
    /// Why the packet is sent (for messages): "update", "resend", "acknowledgement",
    /// "restore request", "replica creation".
    pub reason: &'static str,
}

/// The result of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportOutcome {
    /// Nothing to send: no packet was written.
    Nothing,
    /// A packet was written.
    Written {
        /// The part files (or, for memory exports, empty).
        parts: Vec<PathBuf>,
        /// Entries carried.
        entries: u64,
        /// Blobs carried.
        blobs: u64,
        /// Bytes written.
        bytes: u64,
        /// Warnings (e.g. a record larger than the part size limit).
        warnings: Vec<String>,
        /// What the packet is for.
        reason: &'static str,
    },
}

/// A packet read for import: header, identity and a stream of records.
pub struct Incoming<'a> {
    /// The header.
    pub header: wire::Header,
    /// The kind.
    pub kind: wire::Kind,
    /// The logical packet id.
    pub packet_id: PacketId,
    /// Where it came from (for messages).
    pub source: String,
    records: Box<dyn Iterator<Item = Result<Record>> + 'a>,
    /// The content limit each part's reader applies when the records reach it.
    content_limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Whether a packet carries its sender's own restore request: the sender is recovering, and
/// its store is a restored copy.
fn carries_own_request(h: &wire::Header) -> bool {
    h.controls.iter().any(
        |c| matches!(c, wire::Control::RestoreRequest { replica, .. } if replica.0 == h.sender.0),
    )
}

fn dec_err(src: &str, e: msite_packet::DecodeError) -> CoreError {
    CoreError::Unreadable(format!("{src}: {e}"))
}

impl<'a> Incoming<'a> {
    /// A packet from its parts held in memory (in any order).
    pub fn from_parts(parts: Vec<Vec<u8>>, source: &str) -> Result<Incoming<'static>> {
        let mut readers = Vec::new();
        for p in parts {
            let r = PacketReader::new(std::io::Cursor::new(p)).map_err(|e| dec_err(source, e))?;
            readers.push(r);
        }
        Self::assemble(readers, source.to_string())
    }

    /// A packet from its part files (in any order; all parts must be present).
    pub fn from_files(paths: &[PathBuf]) -> Result<Incoming<'static>> {
        let source = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut readers = Vec::new();
        for p in paths {
            let r = msite_packet::open(p).map_err(|e| dec_err(&p.display().to_string(), e))?;
            readers.push(r);
        }
        Self::assemble(readers, source)
    }

    fn assemble<R: std::io::Read + 'static>(
        mut readers: Vec<PacketReader<R>>,
        source: String,
    ) -> Result<Incoming<'static>> {
        if readers.is_empty() {
            return Err(CoreError::Invalid("no packet given".into()));
        }
        readers.sort_by_key(|r| r.info().part);
        let first = readers[0].info().clone();
        let header = readers[0].header().clone();
        for (i, r) in readers.iter().enumerate() {
            let info = r.info();
            if info.packet_id != first.packet_id {
                return Err(CoreError::Unreadable(format!(
                    "{source}: the files belong to different logical packets"
                )));
            }
            if info.part != i as u32 + 1 || info.parts != first.parts {
                return Err(CoreError::Unreadable(format!(
                    "{source}: part {} of {} is missing or duplicated; import every part of the packet together",
                    i + 1,
                    first.parts
                )));
            }
            if *r.header() != header {
                return Err(CoreError::Unreadable(format!(
                    "{source}: the parts carry different headers"
                )));
            }
        }
        if readers.len() as u32 != first.parts {
            return Err(CoreError::Unreadable(format!(
                "{source}: only {} of {} parts are present; part {} is missing",
                readers.len(),
                first.parts,
                readers.len() + 1
            )));
        }
        let src = source.clone();
        let content_limit = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let limit = content_limit.clone();
        let records = readers
            .into_iter()
            .flat_map(move |mut r| {
                r.set_content_limit(limit.load(std::sync::atomic::Ordering::Relaxed));
                // A format 1.0 blob record arrives in chunk-sized pieces, never whole.
                r.set_blob_piece_len(content::CHUNK_LEN);
                r.records()
            })
            .map(move |r| r.map_err(|e| dec_err(&src, e)));
        Ok(Incoming {
            header,
            kind: first.kind,
            packet_id: PacketId(first.packet_id.0),
            source,
            records: Box::new(records),
            content_limit,
        })
    }

    /// Makes the readers refuse content over `limit` bytes before reading it (set before
    /// the records are read).
    pub fn set_content_limit(&self, limit: u64) {
        self.content_limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One origin a waiting packet needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The origin.
    pub origin: ReplicaId,
    /// Its name.
    pub origin_name: String,
    /// The packet needs entries up to this number.
    pub needs: u64,
    /// This replica has up to this number.
    pub has: u64,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "needs {} up to {}, has {}",
            self.origin_name, self.needs, self.has
        )
    }
}

/// Whether a packet could be imported here now (checks of PROTOCOL §4 steps 1–5).
#[derive(Debug)]
pub enum Assessment {
    /// It can be imported now.
    Importable,
    /// It was imported before.
    AlreadyApplied,
    /// It must wait for other packets.
    Waiting(Vec<Need>),
    /// It shows this replica lost entries of its own.
    RolledBack(Refusal),
    /// The family knows a newer incarnation of this replica than this store has.
    NewerIncarnationKnown {
        /// The incarnation the sender believes.
        known: u64,
        /// Ours.
        ours: u64,
        /// The sender.
        sender: String,
    },
    /// It is refused.
    Refused(CoreError),
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Applied.
    Applied {
        /// Entries applied.
        applied: u64,
        /// Entries already held (skipped).
        skipped: u64,
        /// Things the operator should know (acknowledgements made, unlock, …).
        notes: Vec<String>,
        /// Whether this import completed this replica's restoration.
        unlocked: bool,
    },
    /// This packet was imported before; nothing changed.
    AlreadyApplied,
    /// The packet must wait for others (it stays in the incoming bay).
    Waiting(Vec<Need>),
}

const PREFIX_COMMIT_ENTRIES: u64 = 50_000;

/// Bytes buffered in an import's transaction before a prefix commit: keeps the memory of an
/// import bounded whatever the packet's size.
const PREFIX_COMMIT_BYTES: usize = 16 << 20;

/// zstd level for exported packets: level 1 compresses about twice as fast as the format's
/// default 3 for a few percent more bytes (see BENCHMARKS.md, "Packet format"); exports are on
/// the operator's critical path, and the bytes usually travel on disks, not slow links.
const EXPORT_ZSTD_LEVEL: i32 = 1;

impl<S: Store> Replica<S> {
    fn send_state<R: ReadView + ?Sized>(r: &R, target: &ReplicaId) -> Result<SendState> {
        Ok(load(r, &keys::peer(keys::peers::SEND, target), SendState::decode)?.unwrap_or_default())
    }

    fn recv_state<R: ReadView + ?Sized>(r: &R, sender: &ReplicaId) -> Result<RecvState> {
        Ok(load(r, &keys::peer(keys::peers::RECV, sender), RecvState::decode)?.unwrap_or_default())
    }

    fn controls(&self, own_request: Option<HeldRequest>) -> Result<Vec<wire::Control>> {
        let mut out = Vec::new();
        let mut push = |r: &HeldRequest| {
            out.push(wire::Control::RestoreRequest {
                replica: wire::Id(r.replica.0),
                incarnation: r.incarnation,
                row: r.row.to_wire(),
            })
        };
        if let Some(r) = &own_request {
            push(r);
        }
        for r in held_requests_in(&self.store)? {
            push(&r);
        }
        for a in prov_acks_in(&self.store)? {
            out.push(wire::Control::ProvisionalAck {
                acker: wire::Id(a.acker.0),
                replica: wire::Id(a.replica.0),
                incarnation: a.incarnation,
                held: a.held,
            });
        }
        Ok(out)
    }

    /// Whether this recovering replica's packets also carry entries: only while it holds
    /// another replica's restore request. Two replicas restoring at once must relay the
    /// acknowledgements of the siblings between them, or neither completes (found by the
    /// simulator); the entries are genuine, and no estimate advances while recovering.
    fn relays_while_recovering(&self) -> Result<bool> {
        Ok(!held_requests_in(&self.store)?.is_empty())
    }

    fn check_exportable(&self) -> Result<()> {
        let st = self.status()?;
        if st.restored {
            return Err(CoreError::Locked(format!(
                "replica {} was restored from a backup and refuses exports until the restoration procedure runs; run `msite restorereplica`",
                self.name()
            )));
        }
        if let Some(reason) = st.rolled_back {
            return Err(CoreError::Locked(format!(
                "replica {} refuses exports: {reason}; run `msite restorereplica`",
                self.name()
            )));
        }
        Ok(())
    }

    /// Plans the update packet for `target` (None: nothing to send).
    pub fn plan_export(&self, target: &ReplicaId) -> Result<Option<ExportPlan>> {
        self.check_exportable()?;
        if *target == self.me {
            return Err(CoreError::Invalid(format!(
                "replica {} cannot send a packet to itself",
                self.name()
            )));
        }
        // A target this replica has not heard of yet (its creation entry is still on its way,
        // or this store predates it) can still be sent to: it needs our requests and
        // acknowledgements as much as anyone (found by the simulator). Names are resolved by
        // the caller; here any id but our own is a valid address.
        let st = self.status()?;
        let own = self.own_row()?;
        let send = Self::send_state(&self.store, target)?;
        let recv = Self::recv_state(&self.store, target)?;
        let target_recovering = self
            .store
            .get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, target))?
            .is_some();
        let own_request = st.recovering.as_ref().map(|r| HeldRequest {
            replica: self.me,
            incarnation: r.incarnation,
            row: r.row.clone(),
        });
        let controls = self.controls(own_request)?;
        let mut reason = "update";
        let mut probe = false;
        let base = if st.recovering.is_some()
            && !target_recovering
            && !self.relays_while_recovering()?
        {
            // While recovering, packets carry the request (and answers to others) only.
            own.clone()
        } else {
            let mut base = self.estimate(target)?;
            let has_new = own.0.iter().any(|(o, n)| *n > base.get(o));
            if !has_new && !target_recovering && send.have_report && send.last_seq > send.applied {
                // Unacknowledged packets: resend from what the target is known to hold.
                let mut floor = send.reported_row.clone();
                if let Some(v) = self
                    .store
                    .get(Keyspace::Peers, &keys::export_log(target, send.applied))?
                {
                    floor.raise_to(&Row::decode(&mut Dec::new(&v, "export log"))?);
                }
                if own.0.iter().any(|(o, n)| *n > floor.get(o)) {
                    reason = "resend";
                    base = floor;
                }
            }
            if !has_new
                && !target_recovering
                && st.recovering.is_none()
                && !send.have_report
                && send.last_seq > send.applied
            {
                // Unacknowledged packets, and the target has never reported: its only report
                // may have been lost as well as our packet, and then neither side would ever
                // send again (K10). Send a probe: a numbered packet without entries whose base
                // is our estimate. The target applies it if it holds the base, or keeps it
                // waiting; either way its next export reports, and a report that shows a
                // packet missing makes us resend. On a one-way link, where the target never
                // reports, every export with nothing new sends one such header-only packet.
                probe = true;
                reason = "probe";
            }
            if !has_new && !target_recovering && st.recovering.is_none() && !probe {
                // Keepalive: after a day (by default) without a packet to this sibling, send a
                // probe. A sibling put back to an older copy that lost only other origins'
                // entries has nothing to say and cannot know it; the probe waits there, its
                // report shows the gap, and we resend (K11, found by the simulator, seed
                // 70001233). On a healthy link it applies at once and costs one small packet.
                let last = get_u64(
                    &self.store,
                    Keyspace::Peers,
                    &keys::peer(keys::peers::LAST_SENT, target),
                )?;
                if last > 0 && self.env.now_ms().saturating_sub(last) >= self.keepalive_ms()? {
                    probe = true;
                    reason = "keepalive";
                } else if self
                    .store
                    .get(
                        Keyspace::Peers,
                        &keys::peer(keys::peers::ANSWER_STALE, target),
                    )?
                    .is_some()
                {
                    probe = true;
                    reason = "answer to a stale packet";
                }
            }
            base
        };
        let mut ranges = Vec::new();
        let mut entry_count = 0;
        for (o, n) in &own.0 {
            let b = base.get(o);
            if *n > b {
                ranges.push((*o, b + 1, *n));
                entry_count += n - b;
            }
        }
        let content = !ranges.is_empty() || !controls.is_empty() || probe;
        if !content
            && recv.reported
            && recv.applied == recv.reported_applied
            && recv.seen == recv.reported_seen
        {
            return Ok(None);
        }
        if !content {
            reason = "acknowledgement";
        } else if ranges.is_empty() && !probe {
            reason = "restore request";
        }
        let seq = if content { send.last_seq + 1 } else { 0 };
        let mut bases = Vec::new();
        // Prerequisites matter only for the entries carried: a packet without entries (a
        // restore request, an acknowledgement) can be imported whatever the target holds.
        // A probe carries the base too: it is applied only once the target holds it.
        for (o, n) in base.0.iter().filter(|_| !ranges.is_empty() || probe) {
            let b = (*n).min(own.get(o));
            if b == 0 {
                continue;
            }
            let hash = Self::entry_hash_at(&self.store, o, b)?.unwrap_or(ZERO_HASH);
            bases.push(wire::Base {
                origin: wire::Id(o.0),
                number: b,
                hash,
            });
        }
        if ranges.is_empty() && !probe && send.have_report && st.recovering.is_none() {
            // A packet without entries carries bases only where the target is known to hold
            // them (its last report, capped by the estimate), so it never waits, yet the
            // target checks our hashes there: a fork made by `--override` is reported at the
            // first exchange even when no packet carries that origin's entries (K14). Not
            // while we recover: our store is a copy that may hold entries a newer restoration
            // retired, which we give up when the newer ones arrive (K13); our bases would only
            // make the target report a fork that is already being repaired (seed 42008201).
            for (o, n) in base.0.iter() {
                let b = (*n).min(own.get(o)).min(send.reported_row.get(o));
                if b == 0 {
                    continue;
                }
                let hash = Self::entry_hash_at(&self.store, o, b)?.unwrap_or(ZERO_HASH);
                bases.push(wire::Base {
                    origin: wire::Id(o.0),
                    number: b,
                    hash,
                });
            }
        }
        let header = wire::Header {
            family: wire::Id(self.family.0),
            family_name: self.family_name.clone(),
            sender: wire::Id(self.me.0),
            sender_name: self.name(),
            sender_incarnation: st.incarnation,
            targets: vec![wire::Target {
                replica: wire::Id(target.0),
                incarnation: self.incarnation_of(target)?,
                packet_seq: seq,
                ack_incarnation: recv.sender_inc,
                applied_seq: recv.applied,
                seen_seq: recv.seen,
            }],
            bases,
            sender_row: self.sender_row(&own)?,
            controls,
            created_ms: self.env.now_ms(),
            new_replica: wire::Id::default(),
            comment: String::new(),
        };
        let advance_to = if target_recovering || st.recovering.is_some() {
            None
        } else {
            Some(own)
        };
        Ok(Some(ExportPlan {
            target: *target,
            kind: wire::Kind::Update,
            header,
            ranges,
            all_blobs: false,
            seq,
            advance_to,
            report: (recv.applied, recv.seen),
            entry_count,
            reason,
        }))
    }

    /// Streams the plan's records into `sink`, in apply order.
    pub fn write_records(
        &self,
        plan: &ExportPlan,
        sink: &mut dyn RecordSink,
    ) -> Result<(u64, u64)> {
        let snap = self.store.snapshot()?;
        let mut blobs_sent: HashSet<Hash> = HashSet::new();
        let mut blob_count = 0u64;
        if plan.all_blobs {
            for kv in snap.scan(Keyspace::Blobs, KeyRange::all())? {
                let (k, _) = kv?;
                if let Some(h) = content::head_of(&k) {
                    send_content(&snap, &h, sink)?;
                    blob_count += 1;
                }
            }
        }
        let mut iters = Vec::new();
        let mut heap = BinaryHeap::new();
        for (o, from, to) in &plan.ranges {
            let lo = keys::oplog(o, *from).to_vec();
            let hi = keys::oplog(o, *to).to_vec();
            let range = KeyRange {
                start: std::ops::Bound::Included(lo),
                end: std::ops::Bound::Included(hi),
            };
            let mut it = snap.scan(Keyspace::Oplog, range)?;
            if let Some(first) = it.next() {
                let (_, v) = first?;
                let s = StoredEntry::decode(&v)?;
                heap.push(Reverse((s.lsn, iters.len())));
                iters.push((it, Some(s)));
            }
        }
        let mut entries = 0u64;
        while let Some(Reverse((_, idx))) = heap.pop() {
            let (it, slot) = &mut iters[idx];
            let Some(s) = slot.take() else { continue };
            if let Some(h) = s.blob {
                if !plan.all_blobs && blobs_sent.insert(h) {
                    send_content(&snap, &h, sink)?;
                    blob_count += 1;
                }
            }
            sink.entry(&s.canonical)?;
            entries += 1;
            if let Some(next) = it.next() {
                let (_, v) = next?;
                let n = StoredEntry::decode(&v)?;
                heap.push(Reverse((n.lsn, idx)));
                *slot = Some(n);
            }
        }
        Ok((entries, blob_count))
    }

    /// Records that the plan's packet was written.
    pub fn commit_export(&self, plan: &ExportPlan) -> Result<()> {
        let mut txn = Txn::new(&self.store);
        if plan.kind == wire::Kind::Update {
            let t = &plan.target;
            let mut send = Self::send_state(&self.store, t)?;
            if plan.seq > 0 {
                send.last_seq = plan.seq;
                let row = plan
                    .advance_to
                    .clone()
                    .unwrap_or_else(|| Row::from_wire(&plan.header.sender_row));
                txn.put(
                    Keyspace::Peers,
                    &keys::export_log(t, plan.seq),
                    &row.encode(Enc::new()).done(),
                );
                txn.put(
                    Keyspace::Peers,
                    &keys::peer(keys::peers::SEND, t),
                    &send.encode(),
                );
            }
            if let Some(row) = &plan.advance_to {
                for (o, n) in &row.0 {
                    txn.put(Keyspace::Epochs, &keys::estimate(t, o), &n.to_be_bytes());
                }
            }
            txn.put(
                Keyspace::Peers,
                &keys::peer(keys::peers::LAST_SENT, t),
                &self.env.now_ms().to_be_bytes(),
            );
            txn.delete(Keyspace::Peers, &keys::peer(keys::peers::ANSWER_STALE, t));
            let mut recv = Self::recv_state(&self.store, t)?;
            recv.reported_applied = plan.report.0;
            recv.reported_seen = plan.report.1;
            recv.reported = true;
            txn.put(
                Keyspace::Peers,
                &keys::peer(keys::peers::RECV, t),
                &recv.encode(),
            );
        } else if let Some(row) = &plan.advance_to {
            for (o, n) in &row.0 {
                txn.put(
                    Keyspace::Epochs,
                    &keys::estimate(&plan.target, o),
                    &n.to_be_bytes(),
                );
            }
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }

    /// Exports the update packet for `target` into `dir` (split at `max_size` bytes).
    pub fn export_to_dir(
        &self,
        target: &ReplicaId,
        dir: &Path,
        max_size: Option<u64>,
    ) -> Result<ExportOutcome> {
        let Some(plan) = self.plan_export(target)? else {
            return Ok(ExportOutcome::Nothing);
        };
        self.write_plan_to_dir(&plan, dir, max_size)
    }

    fn stem(&self, plan: &ExportPlan) -> String {
        let prefix = if plan.kind == wire::Kind::Update {
            "sync"
        } else {
            "repl"
        };
        format!(
            "{prefix}_{}_to_{}_{}_{}",
            sanitize(&self.name()),
            sanitize(&self.replica_name(&plan.target)),
            plan.header.created_ms,
            plan.seq
        )
    }

    /// Removes the unfinished part files that exports of this replica left in `dir` (an export
    /// killed before it finished; the packet counts as lost and is resent) and returns them.
    /// Only this replica's own temporary names are touched; whoever holds this `Replica`
    /// holds its store, so no export of it is running.
    pub fn remove_unfinished_packets(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let me = sanitize(&self.name());
        let mut removed = Vec::new();
        for prefix in [format!("sync_{me}_to_"), format!("repl_{me}_to_")] {
            let found = msite_packet::unfinished_parts(dir, &prefix)
                .map_err(|e| CoreError::io(format!("reading {}", dir.display()), e))?;
            for f in found {
                std::fs::remove_file(&f)
                    .map_err(|e| CoreError::io(format!("removing {}", f.display()), e))?;
                removed.push(f);
            }
        }
        Ok(removed)
    }

    /// Writes a planned packet into `dir` and records it.
    pub fn write_plan_to_dir(
        &self,
        plan: &ExportPlan,
        dir: &Path,
        max_size: Option<u64>,
    ) -> Result<ExportOutcome> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CoreError::io(format!("creating {}", dir.display()), e))?;
        let mut opts = msite_packet::WriteOptions::new(wire::Id(self.env.random_id()));
        opts.minor = msite_packet::format::FORMAT_MINOR;
        opts.max_part_size = max_size;
        opts.zstd_level = EXPORT_ZSTD_LEVEL;
        let mut w = PacketWriter::create(dir, &self.stem(plan), plan.kind, &plan.header, opts)
            .map_err(enc_err)?;
        // Record the export (its sequence number, the new estimate) before the packet is
        // complete: a crash in between leaves at most an unreadable, unfinished part, that is a
        // lost packet, which the acknowledgements resend. The other order could leave a
        // finished file whose sequence number the next export reused, so that an
        // acknowledgement of the one covered the other, lost, one (found by the simulator).
        self.commit_export(plan)?;
        let (entries, blobs) = self.write_records(plan, &mut w)?;
        let written = w.finish().map_err(enc_err)?;
        Ok(ExportOutcome::Written {
            parts: written.parts,
            entries,
            blobs,
            bytes: written.bytes,
            warnings: written.warnings,
            reason: plan.reason,
        })
    }

    /// Exports the update packet for `target` into memory (parts as byte vectors).
    pub fn export_to_parts(
        &self,
        target: &ReplicaId,
        max_size: Option<u64>,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let Some(plan) = self.plan_export(target)? else {
            return Ok(None);
        };
        Ok(Some(self.write_plan_to_parts(&plan, max_size)?))
    }

    /// Writes a planned packet into memory and records it.
    pub fn write_plan_to_parts(
        &self,
        plan: &ExportPlan,
        max_size: Option<u64>,
    ) -> Result<Vec<Vec<u8>>> {
        let mut opts = msite_packet::WriteOptions::new(wire::Id(self.env.random_id()));
        opts.minor = msite_packet::format::FORMAT_MINOR;
        opts.max_part_size = max_size;
        opts.zstd_level = EXPORT_ZSTD_LEVEL;
        let mut w = MemPacketWriter::new(plan.kind, &plan.header, opts).map_err(enc_err)?;
        // Recorded before the packet is complete, as in `write_plan_to_dir`.
        self.commit_export(plan)?;
        self.write_records(plan, &mut w)?;
        let (parts, _) = w.finish().map_err(enc_err)?;
        Ok(parts)
    }

    /// Runs the checks of PROTOCOL §4 steps 1–5 on a packet's header without changing
    /// anything: whether it could be imported here now (`msite lspacket` uses this).
    pub fn assess(
        &self,
        h: &wire::Header,
        kind: wire::Kind,
        packet_id: &PacketId,
        src: &str,
    ) -> Result<Assessment> {
        if kind != wire::Kind::Update {
            return Ok(Assessment::Refused(CoreError::Refused(Refusal::Other(format!(
                "{src} is a replica-creation packet; make a new site from it with `msite mkreplica import`"
            )))));
        }
        // 2. Family and target.
        if h.family.0 != self.family.0 {
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::WrongFamily {
                    packet: format!("{} ({})", h.family_name, crate::ids::hex(&h.family.0[..4])),
                    ours: format!("{} ({})", self.family_name, self.family.short()),
                },
            )));
        }
        let sender = ReplicaId(h.sender.0);
        let Some(me_t) = h.targets.iter().find(|t| t.replica.0 == self.me.0) else {
            let names: Vec<String> = h
                .targets
                .iter()
                .map(|t| self.replica_name(&ReplicaId(t.replica.0)))
                .collect();
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::NotAddressed {
                    targets: names.join(", "),
                    me: self.name(),
                },
            )));
        };
        if sender == self.me {
            return Ok(Assessment::Refused(CoreError::Refused(Refusal::Other(
                format!("{src} was written by this replica itself"),
            ))));
        }
        let st = self.status()?;
        if st.restored {
            return Ok(Assessment::Refused(CoreError::Locked(format!(
                "replica {} was restored from a backup; run `msite restorereplica` before importing packets",
                self.name()
            ))));
        }
        if let Some(reason) = &st.rolled_back {
            return Ok(Assessment::Refused(CoreError::Locked(format!(
                "replica {} refuses imports: {reason}; run `msite restorereplica` first",
                self.name()
            ))));
        }
        // 8. Importing the same packet again does nothing.
        if self
            .store
            .get(Keyspace::Peers, &keys::imported(packet_id))?
            .is_some()
        {
            return Ok(Assessment::AlreadyApplied);
        }
        let sender_name = if h.sender_name.is_empty() {
            self.replica_name(&sender)
        } else {
            h.sender_name.clone()
        };
        // 3. Incarnations.
        if me_t.incarnation < st.incarnation {
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::StaleTarget {
                    had: me_t.incarnation,
                    expected: st.incarnation,
                    sender: sender_name,
                },
            )));
        }
        if me_t.incarnation > st.incarnation {
            return Ok(Assessment::NewerIncarnationKnown {
                known: me_t.incarnation,
                ours: st.incarnation,
                sender: sender_name,
            });
        }
        let recorded = self.incarnation_of(&sender)?;
        if h.sender_incarnation < recorded {
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::StaleSender {
                    sender: sender_name,
                    had: h.sender_incarnation,
                    expected: recorded,
                },
            )));
        }
        // No silent rollback: the sender holds more of our own entries than we do. Not from a
        // recovering sender's row: its store is a restored copy, which may hold our entries
        // that our last restoration retired (K13; found by the simulator, seed 80111077).
        let own = self.own_row()?;
        let sender_row = Row::from_wire(&h.sender_row);
        if sender_row.get(&self.me) > own.get(&self.me)
            && st.recovering.is_none()
            && !carries_own_request(h)
        {
            return Ok(Assessment::RolledBack(Refusal::RolledBack {
                sender: sender_name,
                theirs: sender_row.get(&self.me),
                ours: own.get(&self.me),
            }));
        }
        // 4. Prerequisites.
        let mut needs = Vec::new();
        for b in &h.bases {
            let o = ReplicaId(b.origin.0);
            if own.get(&o) < b.number {
                needs.push(Need {
                    origin: o,
                    origin_name: self.replica_name(&o),
                    needs: b.number,
                    has: own.get(&o),
                });
            }
        }
        if !needs.is_empty() {
            return Ok(Assessment::Waiting(needs));
        }
        // 5. Divergence at the base: every origin that differs is named.
        let mut forks = Vec::new();
        for b in &h.bases {
            let o = ReplicaId(b.origin.0);
            let ours = Self::entry_hash_at(&self.store, &o, b.number)?;
            if ours != Some(b.hash) {
                forks.push((self.replica_name(&o), b.number));
            }
        }
        let sender_recovering = carries_own_request(h);
        if !forks.is_empty() && sender_recovering {
            // The sender's store is a restored copy: the fork is one it repairs or reports
            // when our next packet reaches it (K13; found by the simulator, seed 42001263).
            let (origin, number) = forks.remove(0);
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::SenderHoldsRetired {
                    sender: sender_name,
                    origin,
                    number,
                    also: forks,
                },
            )));
        }
        if !forks.is_empty() {
            let (origin, number) = forks.remove(0);
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::Divergent {
                    origin,
                    number,
                    detail: format!("{sender_name}'s entry at its base differs from ours"),
                    also: forks,
                },
            )));
        }
        Ok(Assessment::Importable)
    }

    /// A refusal as divergent, or as holding retired entries (K35, found by the simulator,
    /// seed 180505535: a second fork stayed unnamed behind the first), also names every other
    /// origin whose entries in the rest of the packet differ from ours, so each fork the packet
    /// shows is reported, not only the first (K14), and then the origins in `given_up`: entries
    /// of theirs the packet had made this recovering replica give up before the refusal, which
    /// discards that as well (K29).
    /// Other errors pass through.
    fn with_later_forks(
        &self,
        mut err: CoreError,
        records: &mut dyn Iterator<Item = Result<Record>>,
        given_up: &[(String, u64)],
    ) -> Result<CoreError> {
        let CoreError::Refused(refusal) = &mut err else {
            return Ok(err);
        };
        let Some((origin, also)) = refusal.forks_mut() else {
            return Ok(err);
        };
        let mut named: Vec<&str> = vec![origin];
        named.extend(also.iter().map(|(o, _)| o.as_str()));
        let more = self.later_forks(records, &named)?;
        also.extend(more);
        for (o, n) in given_up {
            if o != origin && !also.iter().any(|(a, _)| a == o) {
                also.push((o.clone(), *n));
            }
        }
        Ok(err)
    }

    /// After a packet is found divergent at the origins named in `reported`: the other
    /// origins whose entries in the rest of the packet differ from the ones held here, so that
    /// the refusal reports every fork the packet shows, not only the first (K14). Nothing is
    /// applied.
    fn later_forks(
        &self,
        records: &mut dyn Iterator<Item = Result<Record>>,
        reported: &[&str],
    ) -> Result<Vec<(String, u64)>> {
        let mut seen: BTreeSet<String> = reported.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        for rec in records {
            let Ok(Record::Entry(bytes)) = rec else {
                continue;
            };
            let Ok(e) = Entry::decode_verified(&bytes) else {
                continue;
            };
            if let Some(ours) = Self::entry_hash_at(&self.store, &e.origin, e.number)? {
                let name = self.replica_name(&e.origin);
                if ours != e.hash && !seen.contains(&name) {
                    seen.insert(name.clone());
                    out.push((name, e.number));
                }
            }
        }
        Ok(out)
    }

    /// The sender row of a packet: the own row, plus a cell with number 0 for every other
    /// sibling this replica knows of (K3: what one replica heard of reaches the others; a
    /// receiver treats every origin of a sender row as a sibling heard of, and a 0 cell as
    /// holding none of its entries, which is what it means).
    fn sender_row(&self, own: &Row) -> Result<wire::Row> {
        let mut row = own.to_wire();
        for s in self.known_siblings()? {
            if own.get(&s) == 0 {
                row.push(wire::RowCell {
                    origin: wire::Id(s.0),
                    number: 0,
                });
            }
        }
        row.sort_unstable_by_key(|c| c.origin.0);
        Ok(row)
    }

    /// Imports one logical packet (PROTOCOL §4). A refused packet changes nothing.
    pub fn import(&self, pkt: Incoming<'_>) -> Result<ImportOutcome> {
        let h = pkt.header.clone();
        let res = self.import_packet(pkt);
        if let Err(CoreError::Refused(Refusal::RolledBack {
            sender,
            theirs,
            ours,
        })) = &res
        {
            // Whether the sender's row showed it or an entry of our own the packet carries
            // (whose chain continues ours), the lock must outlive this refusal: otherwise the
            // replica keeps exporting and nobody runs `restorereplica`, and restorations
            // awaiting it never complete (found by the simulator, seed 110087152).
            self.mark_rolled_back(&format!(
                "{sender} holds this replica's entries up to {theirs} but it holds only up to {ours} (restored without `msite restore`)"
            ))?;
        }
        if let Err(CoreError::Refused(Refusal::SenderHoldsRetired { .. })) = &res {
            // The sender's own restore request is news about the sender, as for a stale
            // packet: without it we never send the sender the newer history that makes it
            // give up the retired entries (found by the simulator, seed 42008201).
            self.learn_sender_request(&h)?;
        }
        if let Err(CoreError::Refused(Refusal::Divergent { .. } | Refusal::RolledBack { .. })) =
            &res
        {
            // A packet refused for its content still has an authentic header: the sender's
            // incarnation is news about the sender (K1). Without it, after a restore with
            // `--override` or a partial `--wait-for`, the replica that reports the fork keeps
            // believing the sender's old incarnation, and its packets are refused as stale.
            let k = keys::peer(keys::peers::INCARNATION, &ReplicaId(h.sender.0));
            let mut txn = Txn::new(&self.store);
            if h.sender_incarnation > txn_u64(&txn, Keyspace::Peers, &k)? {
                txn.put(Keyspace::Peers, &k, &h.sender_incarnation.to_be_bytes());
                txn.commit(WriteOptions::SYNC)?;
            }
        }
        res
    }

    /// A packet of `sender` was refused as stale (for an older incarnation of the sender or
    /// of this replica). Either it is an old packet still in flight, or its sender is put back
    /// to a copy older than a restoration (its own or ours) and cannot know it: if nothing of
    /// ours reaches it, it sends stale packets forever, and a fork it may have made stays
    /// unreported. So the next export to it sends at least a probe, whose header names both
    /// incarnations we know (found by the simulator, seeds 80176217 and 110205868).
    fn answer_stale(&self, sender: &ReplicaId) -> Result<()> {
        use crate::store::StoreExt;
        self.store.put_one(
            Keyspace::Peers,
            &keys::peer(keys::peers::ANSWER_STALE, sender),
            &[1],
            WriteOptions::SYNC,
        )?;
        Ok(())
    }

    fn import_packet(&self, mut pkt: Incoming<'_>) -> Result<ImportOutcome> {
        let h = pkt.header.clone();
        let src = pkt.source.clone();
        let sender = ReplicaId(h.sender.0);
        let assessment = self.assess(&h, pkt.kind, &pkt.packet_id, &src)?;
        if matches!(
            assessment,
            Assessment::Importable
                | Assessment::Waiting(_)
                | Assessment::RolledBack(_)
                | Assessment::Refused(CoreError::Refused(
                    Refusal::StaleTarget { .. }
                        | Refusal::StaleSender { .. }
                        | Refusal::Divergent { .. }
                        | Refusal::SenderHoldsRetired { .. }
                ))
        ) {
            // An authentic header of our family addressed to us: its sender is a sibling,
            // whatever becomes of the packet (K3).
            let mut txn = Txn::new(&self.store);
            self.note_sibling(&mut txn, &sender)?;
            for c in &h.sender_row {
                self.note_sibling(&mut txn, &ReplicaId(c.origin.0))?;
            }
            if !txn.is_empty() {
                txn.commit(WriteOptions::SYNC)?;
            }
        }
        match assessment {
            Assessment::Importable => {}
            Assessment::AlreadyApplied => return Ok(ImportOutcome::AlreadyApplied),
            Assessment::Refused(CoreError::Refused(r @ Refusal::StaleTarget { .. })) => {
                // The packet was built before our restore was known to its sender, but the
                // sender's own restore request in it is news about the sender, not content
                // built against our old state: learn it (without it, two replicas restored at
                // once refuse each other's packets forever; found by the simulator). Nothing
                // else of the packet is applied.
                self.learn_sender_request(&h)?;
                self.answer_stale(&sender)?;
                return Err(CoreError::Refused(r));
            }
            Assessment::Refused(CoreError::Refused(r @ Refusal::StaleSender { .. })) => {
                self.answer_stale(&sender)?;
                return Err(self.with_later_forks(CoreError::Refused(r), &mut pkt.records, &[])?);
            }
            // Forks the carried entries show beyond the bases are reported too (K14).
            Assessment::Refused(e) => {
                return Err(self.with_later_forks(e, &mut pkt.records, &[])?)
            }
            // Marked rolled back by `import`, as for a carried entry that shows it.
            Assessment::RolledBack(refusal) => return Err(CoreError::Refused(refusal)),
            Assessment::NewerIncarnationKnown {
                known,
                ours,
                sender,
            } => {
                return Err(self.on_newer_incarnation(known, ours, &sender)?);
            }
            Assessment::Waiting(needs) => {
                // A waiting packet still tells us the sender's incarnation and its own restore
                // request (found by the simulator: otherwise a request carried only by a
                // waiting packet is never learned).
                self.learn_sender_request(&h)?;
                // Remember that we saw this packet: our next report tells the sender that an
                // earlier packet of its is missing.
                let me_t = h.targets.iter().find(|t| t.replica.0 == self.me.0).cloned();
                let mut recv = Self::recv_state(&self.store, &sender)?;
                if recv.sender_inc != h.sender_incarnation {
                    let newer = h.sender_incarnation > recv.sender_inc;
                    recv = RecvState {
                        sender_inc: h.sender_incarnation,
                        ..Default::default()
                    };
                    if newer {
                        // Our reports must name the sender's new incarnation even before any
                        // of its packets applies here: otherwise it ignores them, never learns
                        // that its packet was lost, and two replicas whose packets wait at
                        // each other stay silent (found by the simulator, seed 61134246).
                        let mut txn = Txn::new(&self.store);
                        txn.put(
                            Keyspace::Peers,
                            &keys::peer(keys::peers::RECV, &sender),
                            &recv.encode(),
                        );
                        txn.commit(WriteOptions::SYNC)?;
                    }
                }
                if let Some(t) = me_t {
                    if t.packet_seq > recv.seen {
                        recv.seen = t.packet_seq;
                        let mut txn = Txn::new(&self.store);
                        txn.put(
                            Keyspace::Peers,
                            &keys::peer(keys::peers::RECV, &sender),
                            &recv.encode(),
                        );
                        // Its report on our packets is news about the sender too (the first
                        // time we see the packet): two replicas whose packets wait at each
                        // other would otherwise never learn that theirs were lost.
                        let sender_name = self.replica_name(&sender);
                        let sender_holds_request = self
                            .store
                            .get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, &sender))?
                            .is_some();
                        let mut notes = Vec::new();
                        Self::take_report(
                            &mut txn,
                            &sender,
                            &sender_name,
                            &t,
                            &Row::from_wire(&h.sender_row),
                            self.status()?.incarnation,
                            sender_holds_request,
                            true,
                            &mut notes,
                        )?;
                        txn.commit(WriteOptions::SYNC)?;
                    }
                }
                return Ok(ImportOutcome::Waiting(needs));
            }
        }
        let me_t = h
            .targets
            .iter()
            .find(|t| t.replica.0 == self.me.0)
            .cloned()
            .ok_or_else(|| CoreError::Invalid("packet lost its target".into()))?;
        let st = self.status()?;
        let own = self.own_row()?;
        let sender_row = Row::from_wire(&h.sender_row);
        let sender_name = if h.sender_name.is_empty() {
            self.replica_name(&sender)
        } else {
            h.sender_name.clone()
        };
        // 6. Apply entries, then control records.
        let recovering = st.recovering.is_some();
        let sender_recovering = carries_own_request(&h);
        let mut txn = Txn::new(&self.store);
        let mut ap = Appender::load(&txn)?;
        let mut held: BTreeMap<ReplicaId, u64> = own.0.clone();
        let mut applied = 0u64;
        let mut skipped = 0u64;
        let mut last_hash: BTreeMap<ReplicaId, Hash> = BTreeMap::new();
        let mut grants = Vec::new();
        let mut blobs_seen: HashSet<Hash> = HashSet::new();
        let limit = self.max_version_bytes()?;
        pkt.set_content_limit(limit);
        let mut intake = content::Intake::new(limit, &src);
        let mut notes = Vec::new();
        // Origins whose entries this packet made us give up (K13) before a refusal: the
        // refusal discards that too, so it names them with the forks (found by the simulator,
        // seed 120167559).
        let mut given_up: Vec<(String, u64)> = Vec::new();
        while let Some(rec) = pkt.records.next() {
            match rec? {
                rec @ (Record::Blob { .. } | Record::BlobPiece { .. }) => {
                    if let Some(h) = take_content(&mut txn, &mut intake, rec)? {
                        blobs_seen.insert(h);
                    }
                }
                Record::Entry(bytes) => {
                    intake.idle()?;
                    let e = Entry::decode_verified(&bytes)
                        .map_err(|e| CoreError::Malformed(format!("{src}: {e}")))?;
                    let mut h_o = held.get(&e.origin).copied().unwrap_or(0);
                    if e.number <= h_o && recovering {
                        // A recovering store may be older than a restoration of this origin
                        // that retired what it holds here: the newer timeline replaces it
                        // (K13; see `retire_history`).
                        let retired = match self.retire_if_superseded(&mut txn, &e, &blobs_seen) {
                            Ok(r) => r,
                            Err(err) => {
                                return Err(self.with_later_forks(
                                    err,
                                    &mut pkt.records,
                                    &given_up,
                                )?);
                            }
                        };
                        if let Some(removed) = retired {
                            given_up.push((self.replica_name(&e.origin), e.number));
                            notes.push(removed);
                            held.insert(e.origin, e.number - 1);
                            last_hash.remove(&e.origin);
                            h_o = e.number - 1;
                        }
                    }
                    if e.number <= h_o {
                        let ours =
                            match txn.get(Keyspace::Oplog, &keys::oplog(&e.origin, e.number))? {
                                Some(v) => StoredEntry::decode(&v)?.hash,
                                None => ZERO_HASH,
                            };
                        if ours != e.hash {
                            let origin = self.replica_name(&e.origin);
                            if sender_recovering && self.holds_newer(&txn, &e)? {
                                // The sender recovers from a copy older than a restoration of
                                // that origin and relays an entry it replaced: not a fork; the
                                // sender gives it up when it receives ours (K13).
                                let err = CoreError::Refused(Refusal::SenderHoldsRetired {
                                    sender: sender_name.clone(),
                                    origin,
                                    number: e.number,
                                    also: Vec::new(),
                                });
                                return Err(self.with_later_forks(
                                    err,
                                    &mut pkt.records,
                                    &given_up,
                                )?);
                            }
                            let err = CoreError::Refused(Refusal::Divergent {
                                origin,
                                number: e.number,
                                detail: format!(
                                    "{sender_name} has a different entry under the same number"
                                ),
                                also: Vec::new(),
                            });
                            return Err(self.with_later_forks(err, &mut pkt.records, &given_up)?);
                        }
                        skipped += 1;
                        continue;
                    }
                    if e.number != h_o + 1 {
                        return Err(CoreError::Malformed(format!(
                            "{src}: entry {} of {} arrives before entry {}",
                            e.number,
                            self.replica_name(&e.origin),
                            h_o + 1
                        )));
                    }
                    let prev = match last_hash.get(&e.origin) {
                        Some(h) => *h,
                        None => match h_o {
                            0 => ZERO_HASH,
                            n => match txn.get(Keyspace::Oplog, &keys::oplog(&e.origin, n))? {
                                Some(v) => StoredEntry::decode(&v)?.hash,
                                None => ZERO_HASH,
                            },
                        },
                    };
                    if e.prev != prev {
                        let err = CoreError::Refused(Refusal::Divergent {
                            origin: self.replica_name(&e.origin),
                            number: e.number,
                            detail: "its hash chain does not continue this replica's".into(),
                            also: Vec::new(),
                        });
                        return Err(self.with_later_forks(err, &mut pkt.records, &given_up)?);
                    }
                    if e.origin == self.me && !recovering {
                        return Err(CoreError::Refused(Refusal::RolledBack {
                            sender: sender_name.clone(),
                            theirs: e.number,
                            ours: h_o,
                        }));
                    }
                    if let Op::Checkin { content, size, .. } = &e.op {
                        if !blobs_seen.contains(content)
                            && !content::contains_sized(&txn, content, *size)?
                        {
                            return Err(CoreError::Malformed(format!(
                                "{src}: entry {} of {} refers to content the packet does not carry",
                                e.number,
                                self.replica_name(&e.origin)
                            )));
                        }
                    }
                    ap.store_entry(&mut txn, &e, &bytes)?;
                    self.on_entry(&mut txn, &e)?;
                    if let Op::ReqMaster { object, requester } = &e.op {
                        grants.push((*object, *requester));
                    }
                    held.insert(e.origin, e.number);
                    last_hash.insert(e.origin, e.hash);
                    applied += 1;
                    if applied.is_multiple_of(PREFIX_COMMIT_ENTRIES)
                        || txn.size() > PREFIX_COMMIT_BYTES
                    {
                        // A very large packet commits in consistent prefixes; a crash leaves a
                        // prefix that the next import continues from.
                        txn.commit_prefix(WriteOptions::NO_SYNC)?;
                    }
                }
            }
        }
        intake.idle()?;
        self.apply_controls(&mut txn, &mut ap, &h.controls, &mut notes)?;
        // 7. Estimates and acknowledgements.
        let sender_holds_request = txn
            .get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, &sender))?
            .is_some();
        let completed_sender = txn_u64(
            &txn,
            Keyspace::Peers,
            &keys::peer(keys::peers::COMPLETED, &sender),
        )?;
        let sender_revives_completed = h.controls.iter().any(|c| {
            matches!(c, wire::Control::RestoreRequest { replica, incarnation, .. }
                if replica.0 == sender.0 && *incarnation <= completed_sender)
        });
        let newest = {
            let r = Self::recv_state(&txn, &sender)?;
            me_t.packet_seq > 0
                && (r.sender_inc != h.sender_incarnation || me_t.packet_seq > r.seen)
        };
        if sender_revives_completed {
            // The sender still asks for a restoration we saw complete: its store was put back
            // to a copy taken while it recovered (a snapshot rollback; K15). Its row is exact:
            // set our estimate to it, so our next packet gives back what it lost, including
            // its restore complete, which moves it to a new incarnation.
            for (k, _) in txn.scan_prefix(Keyspace::Epochs, &keys::estimate_prefix(&sender))? {
                txn.delete(Keyspace::Epochs, &k);
            }
            for (o, n) in &sender_row.0 {
                txn.put(
                    Keyspace::Epochs,
                    &keys::estimate(&sender, o),
                    &n.to_be_bytes(),
                );
            }
        } else if sender_recovering {
            self.raise_estimate_of_recovering(&mut txn, &sender, &sender_row)?;
            if newest {
                // A recovering replica's row only grows, unless its store was put back to a
                // copy taken earlier in the same restoration (a snapshot; the request keeps
                // its incarnation, so we do not roll back on it): its newest packet's row is
                // exact, and an estimate above it makes every packet to it wait (K11, found by
                // the simulator, seed 34001402).
                for (o, n) in
                    &crate::replica::read_row_txn(&txn, &keys::estimate_prefix(&sender))?.0
                {
                    if sender_row.get(o) < *n {
                        txn.put(
                            Keyspace::Epochs,
                            &keys::estimate(&sender, o),
                            &sender_row.get(o).to_be_bytes(),
                        );
                    }
                }
            }
        } else if !sender_holds_request {
            crate::restore::raise_estimate(&mut txn, &sender, &sender_row)?;
        }
        Self::take_report(
            &mut txn,
            &sender,
            &sender_name,
            &me_t,
            &sender_row,
            st.incarnation,
            sender_holds_request,
            newest,
            &mut notes,
        )?;
        let mut recv = Self::recv_state(&txn, &sender)?;
        if recv.sender_inc != h.sender_incarnation {
            recv = RecvState {
                sender_inc: h.sender_incarnation,
                ..Default::default()
            };
        }
        recv.applied = recv.applied.max(me_t.packet_seq);
        recv.seen = recv.seen.max(me_t.packet_seq);
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::RECV, &sender),
            &recv.encode(),
        );
        if h.sender_incarnation
            > txn_u64(
                &txn,
                Keyspace::Peers,
                &keys::peer(keys::peers::INCARNATION, &sender),
            )?
        {
            txn.put(
                Keyspace::Peers,
                &keys::peer(keys::peers::INCARNATION, &sender),
                &h.sender_incarnation.to_be_bytes(),
            );
        }
        txn.put(Keyspace::Peers, &keys::imported(&pkt.packet_id), &[]);
        let unlocked = recovering && self.maybe_complete(&mut txn, &mut ap, false)?;
        if unlocked {
            notes.push(format!(
                "Database {} is unlocked after restoration.",
                self.name()
            ));
        }
        txn.commit(WriteOptions::SYNC)?;
        if !grants.is_empty() {
            notes.extend(self.process_master_requests(&grants)?);
        }
        Ok(ImportOutcome::Applied {
            applied,
            skipped,
            notes,
            unlocked,
        })
    }

    /// Handles a packet's control records (restore requests, provisional acknowledgements).
    fn apply_controls(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        controls: &[wire::Control],
        notes: &mut Vec<String>,
    ) -> Result<()> {
        for c in controls {
            match c {
                wire::Control::RestoreRequest {
                    replica,
                    incarnation,
                    row,
                } => {
                    let req = HeldRequest {
                        replica: ReplicaId(replica.0),
                        incarnation: *incarnation,
                        row: Row::from_wire(row),
                    };
                    self.on_request(txn, ap, &req, notes)?;
                }
                wire::Control::ProvisionalAck {
                    acker,
                    replica,
                    incarnation,
                    held,
                } => {
                    let a = ProvisionalAck {
                        acker: ReplicaId(acker.0),
                        replica: ReplicaId(replica.0),
                        incarnation: *incarnation,
                        held: *held,
                    };
                    self.on_provisional_ack(txn, &a)?;
                }
            }
        }
        Ok(())
    }

    /// Takes the sender's report on our packets (PROTOCOL §5): what it applied and saw of
    /// them. A later packet of ours seen but an earlier one not applied means one was lost:
    /// the estimate drops to what the sender holds, so the next export resends.
    fn take_report(
        txn: &mut Txn<'_, S>,
        sender: &ReplicaId,
        sender_name: &str,
        me_t: &wire::Target,
        sender_row: &Row,
        our_incarnation: u64,
        sender_holds_request: bool,
        newest: bool,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        if me_t.ack_incarnation != our_incarnation {
            return Ok(());
        }
        let mut send = Self::send_state(txn, sender)?;
        // The sender's newest packet (its sequence above any seen, so not a reordered old
        // one) reports less of ours applied than an earlier report did: its store was put
        // back to an older copy that lost only other origins' entries, which no check
        // detects (K11). Its reports and row are the truth now: take them as they are.
        let regressed = newest && !sender_holds_request && me_t.applied_seq < send.applied;
        if regressed {
            send.applied = me_t.applied_seq;
            send.seen = me_t.seen_seq;
        } else {
            send.applied = send.applied.max(me_t.applied_seq);
            send.seen = send.seen.max(me_t.seen_seq);
        }
        send.have_report = true;
        send.reported_row = sender_row.clone();
        // The sender reports having seen more of our packets than we ever sent under this
        // incarnation: our store was put back to an older copy (a snapshot rollback that lost
        // no own entry) and forgot packets it had sent, or a crash lost a packet whose sending
        // state was already written (K11, found by the simulator, seed 34005867). Number our
        // next packet above what it has seen, and resend from what it holds.
        let forgotten = me_t.seen_seq > send.last_seq;
        if forgotten {
            send.last_seq = me_t.seen_seq;
        }
        // Likewise, the newest packet says it applied our packet `applied_seq`, yet its row
        // lacks entries that packet brought it to: resend from what it holds (rows only grow).
        let lost_since = regressed
            || forgotten
            || (newest
                && me_t.applied_seq > 0
                && !sender_holds_request
                && match txn.get(Keyspace::Peers, &keys::export_log(sender, me_t.applied_seq))? {
                    Some(v) => {
                        let after = Row::decode(&mut Dec::new(&v, "export log"))?;
                        after.0.iter().any(|(o, n)| sender_row.get(o) < *n)
                    }
                    None => false,
                });
        if lost_since
            || (me_t.seen_seq > me_t.applied_seq
                && send.last_seq > send.applied
                && !sender_holds_request)
        {
            // A later packet of ours waits at the sender: an earlier one was lost.
            // Lower the estimate to what the sender holds, so the next export resends.
            for (k, _) in txn.scan_prefix(Keyspace::Epochs, &keys::estimate_prefix(sender))? {
                txn.delete(Keyspace::Epochs, &k);
            }
            for (o, n) in &sender_row.0 {
                txn.put(
                    Keyspace::Epochs,
                    &keys::estimate(sender, o),
                    &n.to_be_bytes(),
                );
            }
            notes.push(format!(
                "{sender_name} is missing a packet from this replica; the next export to it resends what it lacks"
            ));
        }
        // Forget export rows the sender has acknowledged.
        for (k, _) in txn.scan_prefix(
            Keyspace::Peers,
            &keys::peer(keys::peers::EXPORT_LOG, sender),
        )? {
            if k.len() == 25 && be_u64(&k[17..])? < send.applied {
                txn.delete(Keyspace::Peers, &k);
            }
        }
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::SEND, sender),
            &send.encode(),
        );
        Ok(())
    }

    fn learn_sender_request(&self, h: &wire::Header) -> Result<()> {
        let sender = ReplicaId(h.sender.0);
        let mut txn = Txn::new(&self.store);
        let mut ap = Appender::load(&txn)?;
        let mut notes = Vec::new();
        for c in &h.controls {
            if let wire::Control::RestoreRequest {
                replica,
                incarnation,
                row,
            } = c
            {
                if replica.0 == sender.0 {
                    let req = HeldRequest {
                        replica: sender,
                        incarnation: *incarnation,
                        row: Row::from_wire(row),
                    };
                    self.on_request(&mut txn, &mut ap, &req, &mut notes)?;
                }
            }
        }
        // The sender's own incarnation is news about the sender too: without it our packets
        // to a replica whose restoration already completed stay stale forever.
        let k = keys::peer(keys::peers::INCARNATION, &sender);
        if h.sender_incarnation > txn_u64(&txn, Keyspace::Peers, &k)? {
            txn.put(Keyspace::Peers, &k, &h.sender_incarnation.to_be_bytes());
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }

    /// Handles mastership requests just imported for objects this replica masters.
    fn process_master_requests(
        &self,
        grants: &[(crate::model::ObjectRef, ReplicaId)],
    ) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        let policy = self.reqmaster_policy()?;
        for (object, requester) in grants {
            if *requester == self.me || self.view().master_of(object).ok() != Some(self.me) {
                continue;
            }
            let who = self.replica_name(requester);
            match policy {
                crate::replica::ReqMasterPolicy::Allow if self.check_writable().is_ok() => {
                    self.local_change(|r, t, ap| {
                        r.append_local(
                            t,
                            ap,
                            Op::ChMaster {
                                object: *object,
                                master: *requester,
                            },
                        )?;
                        Ok(())
                    })?;
                    notes.push(format!("granted mastership requested by {who}"));
                }
                crate::replica::ReqMasterPolicy::Deny => {
                    notes.push(format!(
                        "refused a mastership request from {who} (policy: deny)"
                    ));
                }
                _ => {
                    let mut k = crate::replica::master_request_prefix(object);
                    k.extend_from_slice(&requester.0);
                    let v = crate::replica::encode_objref(Enc::new(), object)
                        .rid(requester)
                        .done();
                    use crate::store::StoreExt;
                    self.store
                        .put_one(Keyspace::Peers, &k, &v, WriteOptions::SYNC)?;
                    notes.push(format!("{who} asks for mastership of an object mastered here; grant it with `msite chmaster`"));
                }
            }
        }
        Ok(notes)
    }

    /// Creates replica `name` (mastered here) and plans its creation packet.
    pub fn plan_mkreplica(&self, name: &str) -> Result<ExportPlan> {
        self.check_writable()?;
        crate::replica::no_control("replica name", name)?;
        if name.is_empty() || name.contains('\0') || name.contains('@') {
            return Err(CoreError::Invalid(format!(
                "`{name}` is not a valid replica name"
            )));
        }
        if !self
            .view()
            .named(crate::vob::NameKind::Replica, name)?
            .is_empty()
        {
            return Err(CoreError::Exists(format!("replica:{name}")));
        }
        let new_id = ReplicaId(self.env.random_id());
        self.local_change(|r, t, ap| {
            let mut row = crate::replica::read_row_txn(t, keys::OWN_PREFIX)?;
            let n = row.get(&r.me) + 1;
            row.set(r.me, n);
            r.append_local(
                t,
                ap,
                Op::CreateReplica {
                    replica: new_id,
                    name: name.into(),
                    row,
                },
            )?;
            Ok(())
        })?;
        let own = self.own_row()?;
        let mut ranges = Vec::new();
        let mut entry_count = 0;
        for (o, n) in &own.0 {
            ranges.push((*o, 1, *n));
            entry_count += n;
        }
        let mut incarnations = Vec::new();
        for r in self.view().replicas()? {
            let inc = self.incarnation_of(&r.id)?;
            if inc > 0 {
                incarnations.push((r.id, inc));
            }
        }
        let st = self.status()?;
        let header = wire::Header {
            family: wire::Id(self.family.0),
            family_name: self.family_name.clone(),
            sender: wire::Id(self.me.0),
            sender_name: self.name(),
            sender_incarnation: st.incarnation,
            targets: vec![wire::Target {
                replica: wire::Id(new_id.0),
                incarnation: 0,
                packet_seq: 0,
                ack_incarnation: 0,
                applied_seq: 0,
                seen_seq: 0,
            }],
            bases: Vec::new(),
            sender_row: self.sender_row(&own)?,
            controls: self.controls(None)?,
            created_ms: self.env.now_ms(),
            new_replica: wire::Id(new_id.0),
            comment: incarnations
                .iter()
                .map(|(r, i)| format!("{}={i}", r.to_hex()))
                .collect::<Vec<_>>()
                .join(","),
        };
        Ok(ExportPlan {
            target: new_id,
            kind: wire::Kind::ReplicaCreation,
            header,
            ranges,
            all_blobs: true,
            seq: 0,
            advance_to: Some(own),
            report: (0, 0),
            entry_count,
            reason: "replica creation",
        })
    }

    /// Makes a new replica in `store` from a replica-creation packet.
    pub fn create_from_packet(
        store: S,
        env: std::sync::Arc<dyn crate::env::Env>,
        mut pkt: Incoming<'_>,
    ) -> Result<Replica<S>> {
        let h = pkt.header.clone();
        if pkt.kind != wire::Kind::ReplicaCreation {
            return Err(CoreError::Invalid(format!(
                "{} is an update packet, not a replica-creation packet (import it with `msite syncreplica import` at its target)",
                pkt.source
            )));
        }
        let me = ReplicaId(h.new_replica.0);
        let family = crate::ids::FamilyId(h.family.0);
        let r = Replica::create_empty(store, env, family, &h.family_name, me)?;
        let mut txn = Txn::new(&r.store);
        let mut ap = Appender::load(&txn)?;
        let mut held: BTreeMap<ReplicaId, u64> = BTreeMap::new();
        let mut found_self = false;
        let mut intake = content::Intake::new(u64::MAX, &pkt.source);
        for rec in &mut pkt.records {
            match rec? {
                rec @ (Record::Blob { .. } | Record::BlobPiece { .. }) => {
                    take_content(&mut txn, &mut intake, rec)?;
                }
                Record::Entry(bytes) => {
                    intake.idle()?;
                    let e = Entry::decode_verified(&bytes)
                        .map_err(|e| CoreError::Malformed(format!("{}: {e}", pkt.source)))?;
                    let h_o = held.get(&e.origin).copied().unwrap_or(0);
                    if e.number != h_o + 1 {
                        return Err(CoreError::Malformed(format!(
                            "{}: entries of one origin are not contiguous",
                            pkt.source
                        )));
                    }
                    if let Op::CreateReplica { replica, .. } = &e.op {
                        found_self |= *replica == me;
                    }
                    ap.store_entry(&mut txn, &e, &bytes)?;
                    // The protocol effects of each entry, as import applies them: without them a
                    // new replica does not know which restorations already completed, takes up
                    // a completed restoration's request when a sibling still relays it, and
                    // holds it forever (found by the simulator).
                    r.on_entry(&mut txn, &e)?;
                    held.insert(e.origin, e.number);
                    if ap.next_lsn.is_multiple_of(PREFIX_COMMIT_ENTRIES)
                        || txn.size() > PREFIX_COMMIT_BYTES
                    {
                        txn.commit_prefix(WriteOptions::NO_SYNC)?;
                    }
                }
            }
        }
        intake.idle()?;
        if !found_self {
            return Err(CoreError::Malformed(format!(
                "{}: the packet does not create the replica it names",
                pkt.source
            )));
        }
        // Incarnations known to the creator travel in the comment field as `id=inc` pairs.
        for pair in h.comment.split(',').filter(|s| !s.is_empty()) {
            if let Some((id, inc)) = pair.split_once('=') {
                if let (Some(id), Ok(inc)) = (ReplicaId::from_hex(id), inc.parse::<u64>()) {
                    txn.put(
                        Keyspace::Peers,
                        &keys::peer(keys::peers::INCARNATION, &id),
                        &inc.to_be_bytes(),
                    );
                }
            }
        }
        let sender = ReplicaId(h.sender.0);
        crate::restore::raise_estimate(&mut txn, &sender, &Row::from_wire(&h.sender_row))?;
        let mut notes = Vec::new();
        r.apply_controls(&mut txn, &mut ap, &h.controls, &mut notes)?;
        txn.put(
            Keyspace::Meta,
            keys::IDENTITY,
            &crate::replica::identity(&family, &h.family_name, &me),
        );
        txn.commit(WriteOptions::SYNC)?;
        Ok(r)
    }

    /// The epoch matrix: own row, then each sibling's estimate row.
    pub fn epoch_matrix(&self) -> Result<Vec<(ReplicaId, Row)>> {
        let mut out = vec![(self.me, self.own_row()?)];
        for r in self.view().replicas()? {
            if r.id != self.me {
                out.push((r.id, self.estimate(&r.id)?));
            }
        }
        Ok(out)
    }

    /// How many content packets to `target` are not yet acknowledged.
    pub fn unacknowledged(&self, target: &ReplicaId) -> Result<u64> {
        let s = Self::send_state(&self.store, target)?;
        Ok(s.last_seq.saturating_sub(s.applied))
    }

    /// Local apply sequence of the last applied entry (for tests).
    pub fn last_lsn(&self) -> Result<u64> {
        Ok(get_u64(&self.store, Keyspace::Meta, keys::NEXT_LSN)?.saturating_sub(1))
    }

    /// The own row as a plain map (for tests and listings).
    pub fn own_row_map(&self) -> Result<BTreeMap<ReplicaId, u64>> {
        Ok(read_row(&self.store, keys::OWN_PREFIX)?.0)
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::sync::Arc;

    use crate::testkit::MemStore;
    use crate::{Env, Incoming, Replica, SimEnv};

    type R = Replica<MemStore>;

    fn pair() -> (R, R) {
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(7));
        let r0: R = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
        let r1 = crate::testkit::mkreplica_in_memory(&r0, "r1", env).unwrap();
        (r0, r1)
    }

    /// Exports from `a` to `b` and imports it (a waiting packet stays "in the bay": dropped
    /// here, the sender resends). Returns whether a packet was sent.
    fn sync(a: &R, b: &R) -> bool {
        match a.export_to_parts(&b.id(), None).unwrap() {
            Some(p) => {
                b.import(Incoming::from_parts(p, "packet").unwrap())
                    .unwrap();
                true
            }
            None => false,
        }
    }

    /// K10 (found by the simulator, seed 2113 of the sync profile): the target's first,
    /// acknowledgement-only packet is lost, and so is the sender's update. Before the fix the
    /// sender resent only after a first report and the target had nothing new to say: with
    /// two-way exchange nobody ever sent again (PROTOCOL §5).
    #[test]
    fn lost_first_report_and_lost_update_are_recovered_by_two_way_exchange() {
        let (r0, r1) = pair();
        // r1's first contact (an acknowledgement-only packet) is lost.
        assert!(r1.export_to_parts(&r0.id(), None).unwrap().is_some());
        r0.mkelem("a.txt").unwrap();
        // r0's update is lost too.
        assert!(r0.export_to_parts(&r1.id(), None).unwrap().is_some());
        for _ in 0..6 {
            sync(&r0, &r1);
            sync(&r1, &r0);
        }
        assert_eq!(r0.own_row().unwrap(), r1.own_row().unwrap());
        assert_eq!(r0.digest().unwrap(), r1.digest().unwrap());
        // And the exchange settles.
        assert!(!sync(&r0, &r1) && !sync(&r1, &r0));
    }

    /// K1 (the remainder): after `restorereplica --override` renumbered an entry a sibling
    /// holds, the sibling refuses the restored replica's packets as divergent; it must still
    /// learn the replica's new incarnation from them, or its own packets to the replica stay
    /// stale forever and the fork is never reported there.
    #[test]
    fn a_divergent_packet_still_teaches_the_senders_incarnation() {
        let (r0, r1) = pair();
        for _ in 0..3 {
            sync(&r0, &r1);
            sync(&r1, &r0);
        }
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(8));
        let backup = r0.store().deep_copy();
        r0.mkelem("lost.txt").unwrap();
        sync(&r0, &r1);
        let r0: R = Replica::open(backup, env).unwrap();
        r0.mark_restored().unwrap();
        let start = r0.restorereplica(&[], true).unwrap();
        assert!(start.completed);
        let p = r0.export_to_parts(&r1.id(), None).unwrap().unwrap();
        let res = r1.import(Incoming::from_parts(p, "packet").unwrap());
        assert!(
            matches!(
                res,
                Err(crate::CoreError::Refused(crate::Refusal::Divergent { .. }))
            ),
            "{res:?}"
        );
        assert_eq!(r1.incarnation_of(&r0.id()).unwrap(), start.incarnation);
    }

    /// K11 (partly): r1 is put back to a snapshot that lacks only r0's latest entry (none of
    /// its own), so no check sees a rollback. Once r1's newest packet reports having applied
    /// the packet that brought that entry while its row lacks it, r0 resends.
    #[test]
    fn a_report_contradicting_the_senders_row_resends_what_it_lost() {
        let (r0, r1) = pair();
        for _ in 0..3 {
            sync(&r0, &r1);
            sync(&r1, &r0);
        }
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(9));
        let snapshot = r1.store().deep_copy();
        r0.mkelem("a.txt").unwrap();
        sync(&r0, &r1);
        sync(&r1, &r0);
        let r1: R = Replica::open(snapshot, env).unwrap();
        for i in 0..6 {
            r1.mkelem(&format!("b{i}.txt")).unwrap();
            sync(&r1, &r0);
            sync(&r0, &r1);
        }
        assert_eq!(r0.own_row().unwrap(), r1.own_row().unwrap());
        assert_eq!(r0.digest().unwrap(), r1.digest().unwrap());
    }
}
