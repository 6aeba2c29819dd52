//! Packets as files and byte vectors: where records go when a plan is written
//! ([`RecordSink`]), writing a plan's records in apply order into part files or memory, and
//! assembling the parts of a received packet into one [`Incoming`] stream of records.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::path::{Path, PathBuf};

use msite_packet::{wire, MemPacketWriter, PacketReader, PacketWriter, Record};

use crate::content;
use crate::error::{CoreError, Result};
use crate::ids::{Hash, PacketId, ReplicaId};
use crate::keys;
use crate::replica::{Replica, StoredEntry};
use crate::store::{KeyRange, Keyspace, ReadView, Store};

use super::delta::{send_as_delta, DeltaBases};
use super::export::ExportPlan;

/// Where packet records go: a part-file writer or an in-memory one.
pub trait RecordSink {
    /// Appends an entry's canonical bytes.
    fn entry(&mut self, canonical: &[u8]) -> Result<()>;
    /// Appends content that fits in one record.
    fn blob(&mut self, hash: &Hash, bytes: &[u8]) -> Result<()>;
    /// Appends a piece of larger content (`bytes` at `offset` of `total`).
    fn blob_piece(&mut self, hash: &Hash, total: u64, offset: u64, bytes: &[u8]) -> Result<()>;
    /// Appends content of `size` bytes as a zstd `frame` against the content `base`.
    fn delta(&mut self, hash: &Hash, base: &Hash, size: u64, frame: &[u8]) -> Result<()>;
    /// Appends one object-base row of a snapshot (`sync/snapshot.rs`).
    fn row(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<()>;
    /// Appends the snapshot end: the rows' count and hash, signed.
    fn snapshot_end(&mut self, rows: u64, hash: &Hash, signature: &wire::Signature) -> Result<()>;
}

pub(super) fn enc_err(e: msite_packet::EncodeError) -> CoreError {
    CoreError::Unreadable(format!("cannot write the packet: {e}"))
}

/// Both packet writers of `msite-packet` have the same `push_*` methods; each is a sink by
/// forwarding to them.
macro_rules! record_sink_for {
    ($($writer:ty),*) => {$(
        impl RecordSink for $writer {
            fn entry(&mut self, canonical: &[u8]) -> Result<()> {
                self.push_entry(canonical).map_err(enc_err)
            }
            fn blob(&mut self, hash: &Hash, bytes: &[u8]) -> Result<()> {
                self.push_blob(hash, bytes).map_err(enc_err)
            }
            fn blob_piece(
                &mut self,
                hash: &Hash,
                total: u64,
                offset: u64,
                bytes: &[u8],
            ) -> Result<()> {
                self.push_blob_piece(hash, total, offset, bytes)
                    .map_err(enc_err)
            }
            fn delta(&mut self, hash: &Hash, base: &Hash, size: u64, frame: &[u8]) -> Result<()> {
                self.push_delta(hash, base, size, frame).map_err(enc_err)
            }
            fn row(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<()> {
                self.push_row(space, key, value).map_err(enc_err)
            }
            fn snapshot_end(
                &mut self,
                rows: u64,
                hash: &Hash,
                signature: &wire::Signature,
            ) -> Result<()> {
                let r = Record::SnapshotEnd {
                    rows,
                    hash: *hash,
                    signature: *signature,
                };
                self.push_record(&r).map_err(enc_err)
            }
        }
    )*};
}

record_sink_for!(PacketWriter, MemPacketWriter);

/// Sends the content `h` held in `r`: one blob record when it fits in a chunk, otherwise
/// pieces of a chunk each, read one at a time.
/// Sends every content not in `sent` (a creation packet carries all the creator holds, also
/// content no shipped entry names); how many.
fn send_unnamed_content<R: ReadView + ?Sized>(
    r: &R,
    sent: &mut HashSet<Hash>,
    sink: &mut dyn RecordSink,
) -> Result<u64> {
    let mut n = 0;
    for kv in r.scan(Keyspace::Blobs, KeyRange::all())? {
        let (k, _) = kv?;
        match content::head_of(&k) {
            Some(h) if sent.insert(h) => {
                send_content(r, &h, sink)?;
                n += 1;
            }
            _ => {}
        }
    }
    Ok(n)
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
    pub(super) records: Box<dyn Iterator<Item = Result<Record>> + Send + 'a>,
    /// The content limit each part's reader applies when the records reach it.
    content_limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub(super) fn dec_err(src: &str, e: msite_packet::DecodeError) -> CoreError {
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

    pub(super) fn assemble<R: std::io::Read + Send + 'static>(
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

/// zstd level for exported packets: level 1 compresses about twice as fast as the format's
/// default 3 for a few percent more bytes (see BENCHMARKS.md, "Packet format"); exports are on
/// the operator's critical path, and the bytes usually travel on disks, not slow links.
pub(super) const EXPORT_ZSTD_LEVEL: i32 = 1;

/// Uncompressed size of an exported packet's chunks. An update or history creation packet
/// compresses each with a window as large (`long_window`): the versions of one file anywhere
/// in 8 MiB of a packet compress against each other. A snapshot carries each content once,
/// so long-distance matching finds nothing there (the serde history's snapshot was 4.25 MB
/// with and without it) while it took more than half of the compression time: snapshots
/// keep zstd's own window for the level, and store a chunk as is when samples of it do not
/// compress (`skip_incompressible`): a new replica's content was compressed by msite-core
/// where that paid, and zstd's match finding on the rest took a third of an export's
/// compression time for about 1 % of its bytes (BENCHMARKS.md, stop 41). The importer holds
/// about two chunks (16 MiB); the exporter about six (48 MiB: it fills one while the packet
/// writer's two threads compress the two before).
pub(super) const EXPORT_CHUNK_LEN: usize = 8 << 20;

impl<S: Store> Replica<S> {
    /// The packet writer's options for an export (split at `max_size` bytes).
    fn export_options(
        &self,
        plan: &ExportPlan,
        max_size: Option<u64>,
    ) -> msite_packet::WriteOptions {
        let mut opts = msite_packet::WriteOptions::new(wire::Id(self.env.random_id()));
        // Update packets are 1.4 for their signed report; snapshot packets for their rows;
        // either is 1.5 when it carries signed fork repair decisions.
        let minor = match plan.snapshot {
            true => msite_packet::format::MINOR_SNAPSHOT,
            false => msite_packet::format::MINOR_UPDATE,
        };
        opts.minor = match msite_packet::sign::uses_decision_signatures(&plan.header) {
            true => minor.max(msite_packet::format::MINOR_SIGNED_DECISIONS),
            false => minor,
        };
        opts.max_part_size = max_size;
        opts.zstd_level = EXPORT_ZSTD_LEVEL;
        opts.chunk_size = EXPORT_CHUNK_LEN;
        opts.long_window = !plan.snapshot;
        opts.skip_incompressible = plan.snapshot;
        opts
    }

    /// Streams the plan's records into `sink`: a snapshot's rows, or the entries and content.
    /// Returns the entries and contents written (rows count as contents).
    fn write_body(
        &self,
        plan: &ExportPlan,
        sink: &mut (dyn RecordSink + Send),
        packet_id: &wire::Id,
    ) -> Result<(u64, u64)> {
        match plan.snapshot {
            true => Ok((0, self.write_snapshot(plan, sink, packet_id)?)),
            false => self.write_records(plan, sink),
        }
    }

    /// Streams the plan's records into `sink`, in apply order, each content just before the
    /// first entry that names it (so that the versions of one file lie close together, where
    /// the packet's compression window sees them), as a delta where the target holds its base
    /// (`sync/delta.rs`); a creation packet then carries the content no entry named.
    pub fn write_records(
        &self,
        plan: &ExportPlan,
        sink: &mut dyn RecordSink,
    ) -> Result<(u64, u64)> {
        let snap = self.store.snapshot()?;
        let mut blobs_sent: HashSet<Hash> = HashSet::new();
        let mut blob_count = 0u64;
        let mut cache = crate::packed::BaseCache::default();
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
            if let Some(h) = s.blob.filter(|h| !blobs_sent.contains(h)) {
                let mut bases = DeltaBases {
                    held: plan.delta_held.as_ref(),
                    sent: &blobs_sent,
                    cache: &mut cache,
                };
                if !send_as_delta(&snap, &h, &s.canonical, &mut bases, sink)? {
                    send_content(&snap, &h, sink)?;
                }
                blobs_sent.insert(h);
                blob_count += 1;
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
        if plan.all_blobs {
            blob_count += send_unnamed_content(&snap, &mut blobs_sent, sink)?;
        }
        Ok((entries, blob_count))
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

    pub(super) fn stem(&self, plan: &ExportPlan) -> String {
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
        let opts = self.export_options(plan, max_size);
        let packet_id = opts.packet_id;
        let header = self.signed_header(&plan.header, plan.kind, &opts.packet_id)?;
        let mut w = PacketWriter::create(dir, &self.stem(plan), plan.kind, &header, opts)
            .map_err(enc_err)?;
        // Record the export (its sequence number, the new estimate) before the packet is
        // complete: a crash in between leaves at most an unreadable, unfinished part, that is a
        // lost packet, which the acknowledgements resend. The other order could leave a
        // finished file whose sequence number the next export reuses, so that an
        // acknowledgement of the one would cover the other, lost, one.
        self.commit_export(plan)?;
        let (entries, blobs) = self.write_body(plan, &mut w, &packet_id)?;
        let written = w.finish().map_err(enc_err)?;
        Ok(ExportOutcome::Written {
            parts: written.parts,
            entries,
            blobs,
            bytes: written.bytes,
            // Entries retention dropped that the target needs: said on every export.
            warnings: written
                .warnings
                .into_iter()
                .chain(plan.refusals.iter().cloned())
                .collect(),
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
        let opts = self.export_options(plan, max_size);
        let packet_id = opts.packet_id;
        let header = self.signed_header(&plan.header, plan.kind, &opts.packet_id)?;
        let mut w = MemPacketWriter::new(plan.kind, &header, opts).map_err(enc_err)?;
        // Recorded before the packet is complete, as in `write_plan_to_dir`.
        self.commit_export(plan)?;
        self.write_body(plan, &mut w, &packet_id)?;
        let (parts, _) = w.finish().map_err(enc_err)?;
        Ok(parts)
    }
}

pub(super) fn sanitize(s: &str) -> String {
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
