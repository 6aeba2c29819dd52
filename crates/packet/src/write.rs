//! Writing packets: [`PacketWriter`] (part files in a directory, appearing atomically),
//! [`MemPacketWriter`] (parts as byte vectors) and [`encode_to_vec`] (one part in memory).
//!
//! All three share one encoder. It is deterministic: the same header, records, options and
//! packet id give the same bytes (no clock, no randomness). Memory is bounded by the chunk size:
//! records are copied into the pending chunk piece by piece, so a record larger than a chunk
//! spans several chunks and is never buffered whole. A full chunk is compressed on a thread of
//! the encoder's own while the caller fills the next (up to two chunks in flight on two
//! threads, written in the order they were filled; the encoder holds at most six chunk
//! buffers); a packet split into parts
//! compresses each chunk before the next record, since the split needs its stored size. With
//! [`WriteOptions::skip_incompressible`] a chunk whose samples do not compress is stored as
//! is, without running zstd over all of it.
//!
//! Part splitting (`SPEC.md` §4): a part is closed before a record that would take it over
//! `max_part_size` (counting that record as if stored uncompressed, after compressing what is
//! pending); a record that does not fit even in an empty part goes alone in its own part, with a
//! warning. The part count is unknown until the end, so every part is written with count 0 and
//! patched at [`format::PATCH_OFFSET`] by `finish`; the part hash reads those 8 bytes as zeros,
//! so patching does not require re-reading the parts.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::error::EncodeError;
use crate::format::{self, Envelope};
use crate::read::Record;
use crate::wire::{self, Hash, Id, Kind};

/// Options for writing a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Split the packet into parts of at most this many bytes (`None`: one part). A record that
    /// does not fit in an empty part goes alone in a larger part, with a warning.
    pub max_part_size: Option<u64>,
    /// Uncompressed size of a body chunk, 1 byte to [`format::MAX_CHUNK_LEN`]. Reader and
    /// writer memory is bounded by about twice this (plus the largest record, for the reader).
    pub chunk_size: usize,
    /// zstd compression level for chunks (1..=22, or negative for zstd's fast levels); `0`
    /// stores chunks uncompressed.
    pub zstd_level: i32,
    /// Compress each chunk with a window as large as the chunk (at most
    /// [`format::MAX_CHUNK_LEN`]) and zstd's long-distance matching, so that repeated content
    /// anywhere in a chunk — the versions of one file in one packet — compresses against itself.
    /// The chunks stay plain, independent zstd frames (any reader reads them); memory stays
    /// bounded by the chunk size at both ends. `false` (the default) keeps zstd's own window
    /// for the level, which 1.0 fixtures pin.
    pub long_window: bool,
    /// Judge each chunk from [`SAMPLES`] evenly spaced samples before compressing it, and store
    /// it uncompressed when they compress by less than 1/[`SKIP_BELOW_SAVING`]: a chunk of
    /// content that was compressed already (or never compresses) is not worth zstd's match
    /// finding, which runs at under 1 GB/s on such data. Each sample is compressed alone, so
    /// redundancy farther apart than a sample is not seen: meant for chunks without
    /// `long_window`. `false` (the default) compresses every chunk.
    pub skip_incompressible: bool,
    /// The logical packet id written into every part. The caller chooses it (random in
    /// production, deterministic in the simulator); the encoder never invents one.
    pub packet_id: Id,
    /// The minor format version written into the envelope, 0 to [`format::FORMAT_MINOR`].
    /// The default, 0, writes format 1.0 byte for byte (`SPEC.md` §6: a writer writes what the
    /// receiver reads); content pieces need at least [`format::MINOR_BLOB_PIECES`].
    pub minor: u16,
}

impl WriteOptions {
    /// Default options (one part, 256 KiB chunks, zstd level 3, format 1.0) for packet
    /// `packet_id`.
    pub fn new(packet_id: Id) -> Self {
        WriteOptions {
            max_part_size: None,
            chunk_size: 256 << 10,
            zstd_level: 3,
            long_window: false,
            skip_incompressible: false,
            packet_id,
            minor: 0,
        }
    }

    fn validate(&self) -> Result<(), EncodeError> {
        if self.chunk_size == 0 || self.chunk_size > format::MAX_CHUNK_LEN as usize {
            return Err(EncodeError::InvalidOptions(format!(
                "chunk_size must be between 1 and {} bytes, not {}",
                format::MAX_CHUNK_LEN,
                self.chunk_size
            )));
        }
        if self.minor > format::FORMAT_MINOR {
            return Err(EncodeError::InvalidOptions(format!(
                "minor version {} is newer than this writer's {}",
                self.minor,
                format::FORMAT_MINOR
            )));
        }
        if self.zstd_level != 0 && !zstd::compression_level_range().contains(&self.zstd_level) {
            return Err(EncodeError::InvalidOptions(format!(
                "zstd_level {} is outside zstd's range {:?}",
                self.zstd_level,
                zstd::compression_level_range()
            )));
        }
        Ok(())
    }
}

/// What a writer wrote.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// The logical packet id.
    pub packet_id: Id,
    /// Number of parts.
    pub parts: u32,
    /// Records written (entries + blobs).
    pub records: u64,
    /// Entry records written.
    pub entries: u64,
    /// Blob records written.
    pub blobs: u64,
    /// Content-piece records written.
    pub blob_pieces: u64,
    /// Content-delta records written (also counted in `blobs`).
    pub deltas: u64,
    /// Object-base row records written (format 1.4 snapshots).
    pub rows: u64,
    /// Total bytes of all parts.
    pub bytes: u64,
    /// Total payload bytes of all records (entry bytes, blob hashes and contents).
    pub payload_bytes: u64,
    /// Warnings (a record larger than `max_part_size`).
    pub warnings: Vec<String>,
}

/// The result of [`PacketWriter::finish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The part files, in part order.
    pub parts: Vec<PathBuf>,
    /// The logical packet id.
    pub packet_id: Id,
    /// Records written (entries + blobs).
    pub records: u64,
    /// Entry records written.
    pub entries: u64,
    /// Blob records written.
    pub blobs: u64,
    /// Total bytes of all parts.
    pub bytes: u64,
    /// Warnings (a record larger than `max_part_size`).
    pub warnings: Vec<String>,
}

/// Where the encoder's bytes go.
trait Sink {
    fn begin_part(&mut self, index: u32) -> Result<(), EncodeError>;
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError>;
    fn end_part(&mut self) -> Result<(), EncodeError>;
}

/// The samples [`WriteOptions::skip_incompressible`] compresses to judge a chunk: this many,
/// of [`SAMPLE_LEN`] bytes each (1.5 % of a chunk of 8 MiB). A shorter chunk is compressed
/// without being judged.
pub const SAMPLES: usize = 8;
/// The length of one sample.
pub const SAMPLE_LEN: usize = 16 << 10;
/// A judged chunk is compressed when its samples shrink by at least 1/this (about 3 %).
pub const SKIP_BELOW_SAVING: usize = 32;

/// A chunk compressor: zstd at the options' level (not 0), judging chunks first when the
/// options say so.
struct ChunkCompressor {
    zstd: zstd::bulk::Compressor<'static>,
    skip_incompressible: bool,
}

impl ChunkCompressor {
    fn new(opts: &WriteOptions) -> Result<Self, EncodeError> {
        use zstd::zstd_safe::CParameter;
        let mut c = zstd::bulk::Compressor::new(opts.zstd_level).map_err(EncodeError::Compress)?;
        if opts.long_window {
            // The smallest window that holds a whole chunk (zstd's minimum is 2^10).
            let log = opts.chunk_size.next_power_of_two().trailing_zeros().max(10);
            c.set_parameter(CParameter::WindowLog(log))
                .and_then(|()| c.set_parameter(CParameter::EnableLongDistanceMatching(true)))
                .map_err(EncodeError::Compress)?;
        }
        Ok(ChunkCompressor {
            zstd: c,
            skip_incompressible: opts.skip_incompressible,
        })
    }

    /// Compresses `raw` into `out` (emptied first; room for the worst case is reserved), or
    /// leaves `out` empty when the chunk is judged not worth compressing: an empty `out`
    /// makes [`Encoder::emit_chunk`] store the chunk as is.
    fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let skip = self.skip_incompressible && !self.worth_compressing(raw, out)?;
        out.clear();
        if skip {
            return Ok(());
        }
        out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        self.zstd
            .compress_to_buffer(raw, out)
            .map_err(EncodeError::Compress)?;
        Ok(())
    }

    /// Whether `raw`'s evenly spaced samples, each compressed alone (into `scratch`), shrink by
    /// at least 1/[`SKIP_BELOW_SAVING`]. A chunk shorter than four times the samples is always
    /// worth trying.
    fn worth_compressing(
        &mut self,
        raw: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Result<bool, EncodeError> {
        let sampled = SAMPLES * SAMPLE_LEN;
        if raw.len() < 4 * sampled {
            return Ok(true);
        }
        let stride = raw.len() / SAMPLES;
        let mut kept = 0;
        for i in 0..SAMPLES {
            scratch.clear();
            scratch.reserve(zstd::zstd_safe::compress_bound(SAMPLE_LEN));
            kept += self
                .zstd
                .compress_to_buffer(&raw[i * stride..][..SAMPLE_LEN], scratch)
                .map_err(EncodeError::Compress)?;
        }
        Ok(kept <= sampled - sampled / SKIP_BELOW_SAVING)
    }
}

/// One of the encoder's compression threads: it takes one full chunk at a time and hands back
/// the chunk with its compressed bytes, so chunks are compressed while the next is filled.
/// The encoder keeps up to [`COMPRESS_THREADS`] of them busy, one chunk each, and writes the
/// chunks in the order it filled them. Dropping one closes its channel, which ends the thread.
struct ChunkWorker {
    to_worker: mpsc::SyncSender<(Vec<u8>, Vec<u8>)>,
    from_worker: mpsc::Receiver<CompressedChunk>,
}

/// The most chunks compressed at once, each on a thread of its own. Two: a full chunk no
/// longer waits for the one before it to finish compressing (which held an export's reading
/// and encoding threads back while one core idled, BENCHMARKS.md stop 39), and memory stays
/// at six chunk buffers (one filling, two in flight with their outputs, one spare).
const COMPRESS_THREADS: usize = 2;

/// A chunk and its compressed bytes, or why compressing failed.
type CompressedChunk = Result<(Vec<u8>, Option<Vec<u8>>), EncodeError>;

impl ChunkWorker {
    fn spawn(mut c: ChunkCompressor) -> Result<Self, EncodeError> {
        let (to_worker, jobs) = mpsc::sync_channel::<(Vec<u8>, Vec<u8>)>(1);
        let (done, from_worker) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("msite-packet-zstd".into())
            .spawn(move || {
                for (raw, mut stored) in jobs {
                    let r = c.compress(&raw, &mut stored).map(|()| (raw, Some(stored)));
                    if done.send(r).is_err() {
                        return;
                    }
                }
            })
            .map_err(EncodeError::Compress)?;
        Ok(ChunkWorker {
            to_worker,
            from_worker,
        })
    }

    /// Hands `raw` to the thread (the encoder's `in_flight` says it holds none), with a
    /// buffer for its output.
    fn start(&self, raw: Vec<u8>, stored: Vec<u8>) -> Result<(), EncodeError> {
        self.to_worker
            .send((raw, stored))
            .map_err(|_| worker_gone())
    }

    /// Waits for the chunk it was given, compressed.
    fn finish(&self) -> CompressedChunk {
        self.from_worker
            .recv()
            .unwrap_or_else(|_| Err(worker_gone()))
    }
}

/// The error of a compression thread that stopped without an answer (it panicked).
fn worker_gone() -> EncodeError {
    EncodeError::Compress(std::io::Error::other(
        "the packet's compression thread stopped unexpectedly",
    ))
}

/// Refuses a header that uses a field newer than format minor version `minor`: each field
/// needs at least the minor version that introduced it (`SPEC.md` §6: a writer writes what
/// the receiver reads). The fields are checked in the order of this list; the first one
/// missing is the error.
fn check_header_minor(header: &wire::Header, minor: u16) -> Result<(), EncodeError> {
    let needs = [
        (
            format::MINOR_SIGNED,
            crate::sign::uses_signed_fields(header),
            "a header with keys, chain heads or a signature",
        ),
        (
            format::MINOR_SNAPSHOT,
            header.snapshot != 0,
            "a snapshot creation header",
        ),
        (
            format::MINOR_FORK_DECISIONS,
            !header.fork_decisions.is_empty(),
            "a header with fork repair decisions",
        ),
        (
            format::MINOR_REPORTS,
            crate::sign::uses_reports(header),
            "a header with signed reports",
        ),
        (
            format::MINOR_RECIPIENTS,
            crate::sign::uses_recipients(header),
            "a header with age recipients",
        ),
        (
            format::MINOR_SIGNED_DECISIONS,
            crate::sign::uses_decision_signatures(header),
            "a header with signed fork repair decisions",
        ),
    ];
    for (needed, used, what) in needs {
        if minor < needed && used {
            return Err(EncodeError::InvalidOptions(format!(
                "{what} needs minor version {needed}, not {minor}"
            )));
        }
    }
    Ok(())
}

/// The header's encoding for format minor version `minor`, refused if it is longer than
/// [`format::MAX_HEADER_LEN`] (a reader refuses such a header).
fn encode_header_bytes(header: &wire::Header, minor: u16) -> Result<Vec<u8>, EncodeError> {
    let header_bytes =
        crate::sign::encode_header(header, minor).map_err(|source| EncodeError::Msgpack {
            what: "header",
            source,
        })?;
    if header_bytes.len() as u64 > u64::from(format::MAX_HEADER_LEN) {
        return Err(EncodeError::HeaderTooLarge {
            len: header_bytes.len() as u64,
            limit: format::MAX_HEADER_LEN.into(),
        });
    }
    Ok(header_bytes)
}

/// Refuses a `max_part_size` that leaves fewer than 64 bytes of body once the envelope, a
/// header of `header_len` bytes and the trailer are counted.
fn check_part_size(opts: &WriteOptions, header_len: usize) -> Result<(), EncodeError> {
    let fixed = fixed_part_overhead(header_len);
    if let Some(max) = opts.max_part_size {
        if max < fixed + 64 {
            return Err(EncodeError::InvalidOptions(format!(
                "max_part_size {max} is too small: envelope, header and trailer alone take {fixed} bytes"
            )));
        }
    }
    Ok(())
}

/// The envelope every part starts from: part index and count 0 until a part is opened
/// (index) and the packet is finished (count, patched at [`format::PATCH_OFFSET`]).
fn first_envelope(kind: Kind, opts: &WriteOptions, header_len: usize) -> Envelope {
    Envelope {
        version: format::FormatVersion {
            major: format::FORMAT_MAJOR,
            minor: opts.minor,
        },
        kind,
        flags: 0,
        packet_id: opts.packet_id,
        header_len: header_len as u32,
        part_index: 0,
        part_count: 0,
    }
}

/// The shared encoder.
struct Encoder<S: Sink> {
    sink: S,
    opts: WriteOptions,
    envelope: Envelope,
    header: Vec<u8>,
    compressor: Option<ChunkCompressor>,
    /// Index of the open part (0: none open yet).
    part: u32,
    /// Bytes written to the open part.
    part_len: u64,
    part_records: u64,
    part_stream: u64,
    part_chunks: u32,
    hasher: blake3::Hasher,
    /// The record stream of the chunk being filled.
    pending: Vec<u8>,
    /// Emptied chunk buffers, for the next chunks while the workers hold some.
    spare: Vec<Vec<u8>>,
    /// Emptied buffers for compressed bytes.
    stored: Vec<Vec<u8>>,
    /// The threads that compress full chunks, started as chunks fill, up to
    /// [`COMPRESS_THREADS`] (the first takes `compressor`, the others a compressor of their own).
    workers: Vec<ChunkWorker>,
    /// The workers holding a chunk, in the order the chunks were filled.
    in_flight: std::collections::VecDeque<usize>,
    stats: Stats,
}

impl<S: Sink> Encoder<S> {
    /// An encoder for one packet: the options and the header are checked, and the header is
    /// encoded once, before any part is opened.
    fn new(
        sink: S,
        kind: Kind,
        header: &wire::Header,
        opts: WriteOptions,
    ) -> Result<Self, EncodeError> {
        opts.validate()?;
        check_header_minor(header, opts.minor)?;
        let header_bytes = encode_header_bytes(header, opts.minor)?;
        check_part_size(&opts, header_bytes.len())?;
        let compressor = if opts.zstd_level == 0 {
            None
        } else {
            Some(ChunkCompressor::new(&opts)?)
        };
        let envelope = first_envelope(kind, &opts, header_bytes.len());
        let stats = Stats {
            packet_id: opts.packet_id,
            ..Stats::default()
        };
        Ok(Encoder {
            sink,
            pending: Vec::with_capacity(opts.chunk_size),
            spare: Vec::new(),
            stored: Vec::new(),
            workers: Vec::new(),
            in_flight: std::collections::VecDeque::new(),
            opts,
            envelope,
            header: header_bytes,
            compressor,
            part: 0,
            part_len: 0,
            part_records: 0,
            part_stream: 0,
            part_chunks: 0,
            hasher: blake3::Hasher::new(),
            stats,
        })
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.hasher.update(bytes);
        self.part_len += bytes.len() as u64;
        self.sink.write(bytes)
    }

    fn open_part(&mut self) -> Result<(), EncodeError> {
        if self.part >= format::MAX_PARTS {
            return Err(EncodeError::TooManyParts(format::MAX_PARTS));
        }
        self.part += 1;
        self.sink.begin_part(self.part)?;
        self.part_len = 0;
        self.part_records = 0;
        self.part_stream = 0;
        self.part_chunks = 0;
        self.hasher = blake3::Hasher::new();
        let mut env = self.envelope.clone();
        env.part_index = self.part;
        let bytes = env.to_bytes();
        // The part hash reads the patched fields (part count, envelope crc) as zeros.
        let mut masked = bytes;
        masked[format::PATCH_OFFSET..].fill(0);
        self.hasher.update(&masked);
        self.part_len += bytes.len() as u64;
        self.sink.write(&bytes)?;
        let header = std::mem::take(&mut self.header);
        let r = self
            .emit(&header)
            .and_then(|()| self.emit(&crc32c::crc32c(&header).to_le_bytes()));
        self.header = header;
        r
    }

    /// Compresses and writes the pending chunk, after the chunks the workers are compressing.
    fn flush_chunk(&mut self) -> Result<(), EncodeError> {
        self.finish_in_flight()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let raw = std::mem::take(&mut self.pending);
        if !self.workers.is_empty() {
            // The compressor moved into the first worker.
            let stored = self.stored.pop().unwrap_or_default();
            self.workers[0].start(raw, stored)?;
            self.in_flight.push_back(0);
            return self.finish_oldest();
        }
        let stored = self.compress_here(&raw)?;
        self.emit_chunk(raw, stored)
    }

    /// A full pending chunk: handed to a worker thread, which compresses it while the caller
    /// fills the next one; when every worker holds a chunk, the oldest is written first.
    /// Splitting into parts needs each chunk's stored size before the next record, so with a
    /// part size the chunk is compressed here, as is an uncompressed packet's.
    fn flush_full_chunk(&mut self) -> Result<(), EncodeError> {
        if self.opts.max_part_size.is_some() || self.opts.zstd_level == 0 {
            return self.flush_chunk();
        }
        if self.in_flight.len() == COMPRESS_THREADS {
            self.finish_oldest()?;
        }
        let worker = self.free_worker()?;
        let next = self.spare.pop().unwrap_or_default();
        let raw = std::mem::replace(&mut self.pending, next);
        self.pending.reserve(self.opts.chunk_size);
        let stored = self.stored.pop().unwrap_or_default();
        self.workers[worker].start(raw, stored)?;
        self.in_flight.push_back(worker);
        Ok(())
    }

    /// A worker holding no chunk, started if every one started so far holds one.
    fn free_worker(&mut self) -> Result<usize, EncodeError> {
        if let Some(free) = (0..self.workers.len()).find(|w| !self.in_flight.contains(w)) {
            return Ok(free);
        }
        let c = match self.compressor.take() {
            Some(c) => c,
            None => ChunkCompressor::new(&self.opts)?,
        };
        self.workers.push(ChunkWorker::spawn(c)?);
        Ok(self.workers.len() - 1)
    }

    /// Waits for the oldest chunk in flight, if any, and writes it.
    fn finish_oldest(&mut self) -> Result<(), EncodeError> {
        let Some(worker) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (raw, stored) = self.workers[worker].finish()?;
        self.emit_chunk(raw, stored)
    }

    /// Waits for every chunk in flight and writes them, in order.
    fn finish_in_flight(&mut self) -> Result<(), EncodeError> {
        while !self.in_flight.is_empty() {
            self.finish_oldest()?;
        }
        Ok(())
    }

    /// `raw` compressed by this thread's compressor (None: the packet is not compressed).
    fn compress_here(&mut self, raw: &[u8]) -> Result<Option<Vec<u8>>, EncodeError> {
        let Some(c) = self.compressor.as_mut() else {
            return Ok(None);
        };
        let mut stored = self.stored.pop().unwrap_or_default();
        c.compress(raw, &mut stored)?;
        Ok(Some(stored))
    }

    /// Writes one chunk: zstd-compressed when `stored` is smaller than `raw`, else as is.
    /// The buffers are kept for the next chunks.
    fn emit_chunk(&mut self, raw: Vec<u8>, stored: Option<Vec<u8>>) -> Result<(), EncodeError> {
        let ulen = raw.len();
        let stored = stored.unwrap_or_default();
        let codec = match !stored.is_empty() && stored.len() < ulen {
            true => format::CODEC_ZSTD,
            false => format::CODEC_NONE,
        };
        let data: &[u8] = if codec == format::CODEC_ZSTD {
            &stored
        } else {
            &raw
        };
        let mut hdr = [0u8; format::CHUNK_HEADER_LEN];
        hdr[0] = format::FRAME_CHUNK;
        hdr[1] = codec;
        hdr[4..8].copy_from_slice(&(ulen as u32).to_le_bytes());
        hdr[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&hdr[..12]), data);
        hdr[12..16].copy_from_slice(&crc.to_le_bytes());
        let r = self.emit(&hdr).and_then(|()| self.emit(data));
        self.keep_buffers(raw, stored);
        self.part_chunks += 1;
        r
    }

    /// Keeps a written chunk's buffers, emptied, for the chunks to come.
    fn keep_buffers(&mut self, mut raw: Vec<u8>, mut stored: Vec<u8>) {
        raw.clear();
        stored.clear();
        match self.pending.capacity() == 0 {
            true => self.pending = raw,
            false => self.spare.push(raw),
        }
        self.stored.push(stored);
    }

    fn close_part(&mut self) -> Result<(), EncodeError> {
        self.flush_chunk()?;
        let mut t = [0u8; format::TRAILER_LEN - 32];
        t[0] = format::FRAME_TRAILER;
        t[4..12].copy_from_slice(&self.part_records.to_le_bytes());
        t[12..20].copy_from_slice(&self.part_stream.to_le_bytes());
        t[20..24].copy_from_slice(&self.part_chunks.to_le_bytes());
        self.emit(&t)?;
        let hash = *self.hasher.finalize().as_bytes();
        self.part_len += 32;
        self.sink.write(&hash)?;
        self.stats.bytes += self.part_len;
        self.stats.parts = self.part;
        self.sink.end_part()
    }

    /// Worst-case stored size of `n` more record-stream bytes given what is pending.
    fn stored_estimate(&self, n: u64) -> u64 {
        let total = self.pending.len() as u64 + n;
        let chunk = self.opts.chunk_size as u64;
        total + total.div_ceil(chunk) * format::CHUNK_HEADER_LEN as u64
    }

    fn push(&mut self, tag: u8, pieces: &[&[u8]]) -> Result<(), EncodeError> {
        let payload: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        if payload > u64::from(format::MAX_RECORD_LEN) {
            return Err(EncodeError::RecordTooLarge {
                len: payload,
                limit: format::MAX_RECORD_LEN.into(),
            });
        }
        if self.part == 0 {
            self.open_part()?;
        }
        let rec_len = payload + format::RECORD_PREFIX_LEN as u64;
        if let Some(max) = self.opts.max_part_size {
            let fits = |e: &Self| {
                e.part_len + e.stored_estimate(rec_len) + format::TRAILER_LEN as u64 <= max
            };
            if !fits(self) && !self.pending.is_empty() {
                self.flush_chunk()?;
            }
            if !fits(self) && self.part_records > 0 {
                self.close_part()?;
                self.open_part()?;
            }
            if !fits(self) {
                self.stats.warnings.push(format!(
                    "a record of {rec_len} bytes does not fit in a part of at most {max} bytes; \
                     part {} holds it alone and is larger than the limit",
                    self.part
                ));
            }
        }
        let prefix = {
            let mut p = [0u8; format::RECORD_PREFIX_LEN];
            p[0] = tag;
            p[1..5].copy_from_slice(&(payload as u32).to_le_bytes());
            p
        };
        self.append(&prefix)?;
        for p in pieces {
            self.append(p)?;
        }
        self.part_records += 1;
        self.part_stream += rec_len;
        self.stats.records += 1;
        self.stats.payload_bytes += payload;
        Ok(())
    }

    fn append(&mut self, mut bytes: &[u8]) -> Result<(), EncodeError> {
        while !bytes.is_empty() {
            let room = self.opts.chunk_size - self.pending.len();
            let n = room.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() == self.opts.chunk_size {
                self.flush_full_chunk()?;
            }
        }
        Ok(())
    }

    fn push_entry(&mut self, canonical: &[u8]) -> Result<(), EncodeError> {
        self.push(format::REC_ENTRY, &[canonical])?;
        self.stats.entries += 1;
        Ok(())
    }

    fn push_blob(&mut self, hash: &Hash, bytes: &[u8]) -> Result<(), EncodeError> {
        self.push(format::REC_BLOB, &[hash, bytes])?;
        self.stats.blobs += 1;
        Ok(())
    }

    fn push_blob_piece(
        &mut self,
        hash: &Hash,
        total: u64,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), EncodeError> {
        if self.opts.minor < format::MINOR_BLOB_PIECES {
            return Err(EncodeError::InvalidOptions(format!(
                "content pieces need format 1.{} or newer, and this packet is written as 1.{}",
                format::MINOR_BLOB_PIECES,
                self.opts.minor
            )));
        }
        let end = offset.checked_add(bytes.len() as u64);
        if end.is_none_or(|e| e > total) {
            return Err(EncodeError::InvalidOptions(format!(
                "a content piece at offset {offset} of {} bytes runs past the content's {total} bytes",
                bytes.len()
            )));
        }
        let (t, o) = (total.to_le_bytes(), offset.to_le_bytes());
        self.push(format::REC_BLOB_PIECE, &[hash, &t, &o, bytes])?;
        self.stats.blob_pieces += 1;
        Ok(())
    }

    fn push_delta(
        &mut self,
        hash: &Hash,
        base: &Hash,
        size: u64,
        frame: &[u8],
    ) -> Result<(), EncodeError> {
        if self.opts.minor < format::MINOR_DELTAS {
            return Err(EncodeError::InvalidOptions(format!(
                "content deltas need format 1.{} or newer, and this packet is written as 1.{}",
                format::MINOR_DELTAS,
                self.opts.minor
            )));
        }
        self.push(format::REC_DELTA, &[hash, base, &size.to_le_bytes(), frame])?;
        self.stats.blobs += 1;
        self.stats.deltas += 1;
        Ok(())
    }

    fn push_record(&mut self, r: &Record) -> Result<(), EncodeError> {
        match r {
            Record::Entry(b) => self.push_entry(b),
            Record::Blob { hash, bytes } => self.push_blob(hash, bytes),
            Record::BlobPiece {
                hash,
                total,
                offset,
                bytes,
            } => self.push_blob_piece(hash, *total, *offset, bytes),
            Record::Delta {
                hash,
                base,
                size,
                frame,
            } => self.push_delta(hash, base, *size, frame),
            Record::Row { space, key, value } => self.push_row(*space, key, value),
            Record::SnapshotEnd {
                rows,
                hash,
                signature,
            } => {
                self.needs_snapshot_minor("snapshot-end records")?;
                self.push(
                    format::REC_SNAPSHOT_END,
                    &[&rows.to_le_bytes(), hash, signature],
                )
            }
        }
    }

    fn needs_snapshot_minor(&self, what: &str) -> Result<(), EncodeError> {
        if self.opts.minor < format::MINOR_SNAPSHOT {
            return Err(EncodeError::InvalidOptions(format!(
                "{what} need format 1.{} or newer, and this packet is written as 1.{}",
                format::MINOR_SNAPSHOT,
                self.opts.minor
            )));
        }
        Ok(())
    }

    fn push_row(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<(), EncodeError> {
        self.needs_snapshot_minor("object-base row records")?;
        let key_len = u32::try_from(key.len()).map_err(|_| {
            EncodeError::InvalidOptions(format!("a row key of {} bytes is too long", key.len()))
        })?;
        let mut fixed = [space, 0, 0, 0, 0];
        fixed[1..].copy_from_slice(&key_len.to_le_bytes());
        self.push(format::REC_ROW, &[&fixed, key, value])?;
        self.stats.rows += 1;
        Ok(())
    }

    /// Closes the last part (writing an empty part if nothing was pushed). Returns the sink,
    /// the stats and the patch bytes for each part (index 1..=n).
    fn finish(mut self) -> Result<(S, Stats, Vec<[u8; 8]>), EncodeError> {
        if self.part == 0 {
            self.open_part()?;
        }
        self.close_part()?;
        let n = self.part;
        let patches = (1..=n)
            .map(|i| {
                let mut env = self.envelope.clone();
                env.part_index = i;
                format::patch_bytes(&env, n)
            })
            .collect();
        Ok((self.sink, self.stats, patches))
    }
}

/// Bytes of a part that carries no records: envelope, header, header crc, trailer.
fn fixed_part_overhead(header_len: usize) -> u64 {
    (format::ENVELOPE_LEN + header_len + 4 + format::TRAILER_LEN) as u64
}

// ---------------------------------------------------------------------------------------------
// In memory

#[derive(Default)]
struct VecSink {
    parts: Vec<Vec<u8>>,
}

impl Sink for VecSink {
    fn begin_part(&mut self, _index: u32) -> Result<(), EncodeError> {
        self.parts.push(Vec::new());
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        if let Some(p) = self.parts.last_mut() {
            p.extend_from_slice(bytes);
        }
        Ok(())
    }
    fn end_part(&mut self) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// Writes a packet into memory: like [`PacketWriter`], but the parts are byte vectors.
pub struct MemPacketWriter {
    enc: Encoder<VecSink>,
}

impl MemPacketWriter {
    /// Starts a packet of `kind` with `header`.
    pub fn new(kind: Kind, header: &wire::Header, opts: WriteOptions) -> Result<Self, EncodeError> {
        Ok(MemPacketWriter {
            enc: Encoder::new(VecSink::default(), kind, header, opts)?,
        })
    }

    /// Appends an entry record carrying canonical entry bytes (see [`crate::encode_entry`]).
    /// The bytes are not checked.
    pub fn push_entry(&mut self, canonical: &[u8]) -> Result<(), EncodeError> {
        self.enc.push_entry(canonical)
    }

    /// Appends a blob record.
    pub fn push_blob(&mut self, hash: &Hash, bytes: &[u8]) -> Result<(), EncodeError> {
        self.enc.push_blob(hash, bytes)
    }

    /// Appends a content-piece record: `bytes` at `offset` of the content `hash` of `total`
    /// bytes (format 1.1; see `SPEC.md` §4).
    pub fn push_blob_piece(
        &mut self,
        hash: &Hash,
        total: u64,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), EncodeError> {
        self.enc.push_blob_piece(hash, total, offset, bytes)
    }

    /// Appends a content-delta record: the content `hash` of `size` bytes as one zstd `frame`
    /// compressed with the content `base` as its reference prefix (format 1.3; `SPEC.md` §4).
    pub fn push_delta(
        &mut self,
        hash: &Hash,
        base: &Hash,
        size: u64,
        frame: &[u8],
    ) -> Result<(), EncodeError> {
        self.enc.push_delta(hash, base, size, frame)
    }

    /// Appends a record.
    pub fn push_record(&mut self, r: &Record) -> Result<(), EncodeError> {
        self.enc.push_record(r)
    }

    /// Appends an object-base row record (format 1.4; `SPEC.md` §4).
    pub fn push_row(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<(), EncodeError> {
        self.enc.push_row(space, key, value)
    }

    /// Finishes the packet: returns its parts, in order, and what was written.
    pub fn finish(self) -> Result<(Vec<Vec<u8>>, Stats), EncodeError> {
        let (sink, stats, patches) = self.enc.finish()?;
        let mut parts = sink.parts;
        for (p, patch) in parts.iter_mut().zip(patches) {
            p[format::PATCH_OFFSET..format::ENVELOPE_LEN].copy_from_slice(&patch);
        }
        Ok((parts, stats))
    }
}

/// Encodes a single-part packet into memory (`opts.max_part_size` must be `None`).
pub fn encode_to_vec(
    kind: Kind,
    header: &wire::Header,
    records: impl IntoIterator<Item = Record>,
    opts: &WriteOptions,
) -> Result<Vec<u8>, EncodeError> {
    if opts.max_part_size.is_some() {
        return Err(EncodeError::InvalidOptions(
            "encode_to_vec writes one part; use MemPacketWriter to split".into(),
        ));
    }
    let mut w = MemPacketWriter::new(kind, header, opts.clone())?;
    for r in records {
        w.push_record(&r)?;
    }
    let (mut parts, _) = w.finish()?;
    // One part exactly, since no limit was set.
    Ok(parts.pop().unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Files

struct FileSink {
    dir: PathBuf,
    stem: String,
    current: Option<BufWriter<File>>,
    temps: Vec<PathBuf>,
    finished: bool,
    /// The open part's early syncs.
    early: Option<crate::EarlySyncEvery>,
}

/// The bytes a part file takes in between two syncs of it in the background
/// ([`EarlySync`](crate::EarlySync)): its final fsync then waits for at most about this much.
const EARLY_SYNC_BYTES: u64 = 4 << 20;

impl FileSink {
    fn temp_path(&self, index: u32) -> PathBuf {
        self.dir.join(format!(".{}.p{index}.msp.tmp", self.stem))
    }
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EncodeError + '_ {
        move |source| EncodeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Sink for FileSink {
    fn begin_part(&mut self, index: u32) -> Result<(), EncodeError> {
        let path = self.temp_path(index);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(Self::io(&path))?;
        self.early = Some(crate::EarlySyncEvery::start(&path, EARLY_SYNC_BYTES));
        self.temps.push(path);
        self.current = Some(BufWriter::with_capacity(256 << 10, f));
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        if let (Some(w), Some(path)) = (self.current.as_mut(), self.temps.last()) {
            w.write_all(bytes).map_err(Self::io(path))?;
            if let Some(early) = self.early.as_mut() {
                early.wrote(bytes.len() as u64);
            }
        }
        Ok(())
    }
    fn end_part(&mut self) -> Result<(), EncodeError> {
        self.early = None;
        if let (Some(w), Some(path)) = (self.current.take(), self.temps.last()) {
            w.into_inner().map_err(|e| Self::io(path)(e.into_error()))?;
        }
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.finished {
            // An abandoned or failed packet leaves nothing behind (best effort).
            for t in &self.temps {
                let _ = fs::remove_file(t);
            }
        }
    }
}

/// The temporary part files that writers of stems beginning with `stem_prefix` left in `dir`
/// (`.{stem}.p{i}.msp.tmp`): a writer killed before [`PacketWriter::finish`] leaves them. Only
/// names of that pattern are returned; a missing `dir` holds none.
pub fn unfinished_parts(dir: &Path, stem_prefix: &str) -> std::io::Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_prefix(stem_prefix))
            .and_then(|n| n.strip_suffix(".msp.tmp"))
        else {
            continue;
        };
        let index = rest.rsplit_once(".p").map(|(_, i)| i);
        if index.is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit())) {
            out.push(ent.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The final file name of part `index` of `n`.
pub fn part_file_name(stem: &str, index: u32, n: u32) -> String {
    if n == 1 {
        format!("{stem}.msp")
    } else {
        format!("{stem}.p{index}of{n}.msp")
    }
}

/// Writes a packet as part files in a directory.
///
/// Parts are written to hidden temporary files (`.{stem}.p{i}.msp.tmp`) in the same directory;
/// [`finish`](Self::finish) patches the part count, syncs them, and renames them to their final
/// names (`{stem}.msp`, or `{stem}.p{i}of{n}.msp` when split), then syncs the directory. A crash
/// before that leaves no file with a final name; a writer dropped without `finish` removes its
/// temporary files.
pub struct PacketWriter {
    enc: Encoder<FileSink>,
}

impl PacketWriter {
    /// Starts a packet in `dir` with file names derived from `stem`.
    pub fn create(
        dir: &Path,
        stem: &str,
        kind: Kind,
        header: &wire::Header,
        opts: WriteOptions,
    ) -> Result<Self, EncodeError> {
        if stem.is_empty() || stem.contains(['/', '\\']) || stem.starts_with('.') {
            return Err(EncodeError::InvalidOptions(format!(
                "bad packet file stem {stem:?}"
            )));
        }
        let sink = FileSink {
            dir: dir.to_path_buf(),
            stem: stem.to_string(),
            current: None,
            temps: Vec::new(),
            finished: false,
            early: None,
        };
        Ok(PacketWriter {
            enc: Encoder::new(sink, kind, header, opts)?,
        })
    }

    /// Appends an entry record carrying canonical entry bytes (see [`crate::encode_entry`]).
    /// The bytes are not checked.
    pub fn push_entry(&mut self, canonical: &[u8]) -> Result<(), EncodeError> {
        self.enc.push_entry(canonical)
    }

    /// Appends a blob record.
    pub fn push_blob(&mut self, hash: &Hash, bytes: &[u8]) -> Result<(), EncodeError> {
        self.enc.push_blob(hash, bytes)
    }

    /// Appends a content-piece record: `bytes` at `offset` of the content `hash` of `total`
    /// bytes (format 1.1; see `SPEC.md` §4).
    pub fn push_blob_piece(
        &mut self,
        hash: &Hash,
        total: u64,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), EncodeError> {
        self.enc.push_blob_piece(hash, total, offset, bytes)
    }

    /// Appends a content-delta record: the content `hash` of `size` bytes as one zstd `frame`
    /// compressed with the content `base` as its reference prefix (format 1.3; `SPEC.md` §4).
    pub fn push_delta(
        &mut self,
        hash: &Hash,
        base: &Hash,
        size: u64,
        frame: &[u8],
    ) -> Result<(), EncodeError> {
        self.enc.push_delta(hash, base, size, frame)
    }

    /// Appends a record.
    pub fn push_record(&mut self, r: &Record) -> Result<(), EncodeError> {
        self.enc.push_record(r)
    }

    /// Appends an object-base row record (format 1.4; `SPEC.md` §4).
    pub fn push_row(&mut self, space: u8, key: &[u8], value: &[u8]) -> Result<(), EncodeError> {
        self.enc.push_row(space, key, value)
    }

    /// Finishes the packet and makes its part files appear under their final names. Refuses
    /// (and removes the temporary files) if a file with a final name already exists.
    pub fn finish(self) -> Result<Written, EncodeError> {
        let (mut sink, stats, patches) = self.enc.finish()?;
        let n = stats.parts;
        let finals: Vec<PathBuf> = (1..=n)
            .map(|i| sink.dir.join(part_file_name(&sink.stem, i, n)))
            .collect();
        if let Some(p) = finals.iter().find(|p| p.exists()) {
            return Err(EncodeError::Exists(p.clone()));
        }
        for (tmp, patch) in sink.temps.iter().zip(&patches) {
            let mut f = OpenOptions::new()
                .write(true)
                .open(tmp)
                .map_err(FileSink::io(tmp))?;
            f.seek(SeekFrom::Start(format::PATCH_OFFSET as u64))
                .and_then(|_| f.write_all(patch))
                .and_then(|()| f.sync_all())
                .map_err(FileSink::io(tmp))?;
        }
        for (tmp, fin) in sink.temps.iter().zip(&finals) {
            fs::rename(tmp, fin).map_err(FileSink::io(fin))?;
        }
        sink.finished = true;
        // Make the renames durable.
        File::open(&sink.dir)
            .and_then(|d| d.sync_all())
            .map_err(FileSink::io(&sink.dir))?;
        Ok(Written {
            parts: finals,
            packet_id: stats.packet_id,
            records: stats.records,
            entries: stats.entries,
            blobs: stats.blobs,
            bytes: stats.bytes,
            warnings: stats.warnings,
        })
    }
}
