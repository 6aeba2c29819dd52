//! Reading packets: [`PacketReader`] over any [`Read`], and [`Records`], the streaming iterator
//! over a part's body.
//!
//! The reader verifies as it goes: the envelope crc and header crc before
//! [`PacketReader::new`] returns; each chunk's crc before any record of the chunk is yielded;
//! the trailer (record count, stream length, chunk count, whole-part BLAKE3 hash) and the end of
//! the input when the body ends. If any check fails the iterator yields an error instead of
//! ending, so a caller that commits only after `None` never commits a bad packet.
//!
//! Memory is bounded by one chunk (at most [`format::MAX_CHUNK_LEN`]) plus the record being
//! yielded: a record's buffer grows as its bytes arrive, never from its length field alone, so a
//! hostile length cannot make the reader allocate more than the input really holds.

use std::fs::File;
use std::io::{self, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::DecodeError;
use crate::format::{self, Envelope, FormatVersion};
use crate::wire::{self, Hash, Id, Kind};

/// One body record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An oplog entry, as its canonical encoding (decode with [`crate::decode_entry`]).
    Entry(Vec<u8>),
    /// Version content.
    Blob {
        /// BLAKE3 of `bytes` as the sender claims it (not verified here).
        hash: Hash,
        /// The content.
        bytes: Vec<u8>,
    },
    /// A piece of version content too large for one record (format 1.1): the pieces of one
    /// content follow each other, in order, from offset 0 to `total`.
    BlobPiece {
        /// BLAKE3 of the whole content as the sender claims it (not verified here).
        hash: Hash,
        /// The whole content's size in bytes.
        total: u64,
        /// Where this piece starts in the content.
        offset: u64,
        /// The piece's bytes.
        bytes: Vec<u8>,
    },
    /// Version content as a delta against other content (format 1.3): one zstd frame that
    /// decompresses, with the base content as its reference prefix, to `size` bytes.
    Delta {
        /// BLAKE3 of the content as the sender claims it (not verified here).
        hash: Hash,
        /// BLAKE3 of the base content the receiver must hold (or have received before).
        base: Hash,
        /// The content's size in bytes.
        size: u64,
        /// The zstd frame.
        frame: Vec<u8>,
    },
    /// One row of the sender's object base in a snapshot creation packet (format 1.4). The
    /// packet layer gives `space` no meaning (the protocol does: docs/protocol.md §7).
    Row {
        /// Which part of the object base the row belongs to.
        space: u8,
        /// The row's key.
        key: Vec<u8>,
        /// The row's value.
        value: Vec<u8>,
    },
    /// The end of a snapshot (format 1.4): how many row records came before it, the hash of
    /// their payloads ([`crate::sign::SnapshotHasher`]) and the sender's signature over them
    /// ([`crate::sign::snapshot_message`]). Not checked here.
    SnapshotEnd {
        /// The number of row records before it.
        rows: u64,
        /// BLAKE3 of the row payloads, each preceded by its length.
        hash: Hash,
        /// The sender's Ed25519 signature.
        signature: [u8; 64],
    },
}

/// What the envelope says about a part.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PacketInfo {
    /// Format version of the part.
    pub version: FormatVersion,
    /// Update or replica creation.
    pub kind: Kind,
    /// This part's index, 1-based.
    pub part: u32,
    /// Number of parts of the logical packet.
    pub parts: u32,
    /// The logical packet id.
    pub packet_id: Id,
}

/// Counts kept while reading a part's records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Records read (including skipped unknown ones).
    pub records: u64,
    /// Entry records.
    pub entries: u64,
    /// Contents: blob records, and contents carried in pieces (counted at their first).
    pub blobs: u64,
    /// Content-piece records.
    pub blob_pieces: u64,
    /// Content-delta records (also counted in `blobs`).
    pub deltas: u64,
    /// Object-base row records (format 1.4 snapshots).
    pub rows: u64,
    /// Bytes of blob contents.
    pub blob_bytes: u64,
    /// Unknown, skippable records skipped (newer minor version).
    pub skipped: u64,
    /// Chunks read.
    pub chunks: u32,
    /// Bytes of the part read so far.
    pub bytes: u64,
    /// Whether the trailer and end of input were verified.
    pub verified: bool,
}

/// Input with position tracking and the running part hash.
struct Input<R> {
    rd: R,
    offset: u64,
    hasher: blake3::Hasher,
}

impl<R: Read> Input<R> {
    /// Reads as much of `buf` as the input holds; returns the count.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, DecodeError> {
        let mut got = 0;
        while got < buf.len() {
            match self.rd.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e)),
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// Reads exactly `buf.len()` bytes (hashing them unless `hash` is false).
    fn exact(&mut self, buf: &mut [u8], what: &'static str, hash: bool) -> Result<(), DecodeError> {
        let got = self.read_full(buf)?;
        if got < buf.len() {
            return Err(DecodeError::Truncated {
                offset: self.offset,
                what,
            });
        }
        if hash {
            self.hasher.update(buf);
        }
        Ok(())
    }

    /// Reads `len` hashed bytes into `buf` (cleared first), growing it as data arrives.
    fn exact_vec(
        &mut self,
        buf: &mut Vec<u8>,
        len: usize,
        what: &'static str,
    ) -> Result<(), DecodeError> {
        buf.clear();
        const STEP: usize = 1 << 20;
        while buf.len() < len {
            let start = buf.len();
            let n = (len - start).min(STEP.max(buf.capacity() - start));
            buf.resize(start + n, 0);
            self.exact(&mut buf[start..], what, true)?;
        }
        Ok(())
    }
}

/// The largest record buffer allocated before its bytes have arrived (see
/// `Records::record_buf`).
const PREALLOC_LIMIT: usize = 16 << 20;

fn read_error(e: io::Error) -> DecodeError {
    if e.kind() == ErrorKind::IsADirectory {
        DecodeError::IsDirectory
    } else {
        DecodeError::Io(e)
    }
}

/// What kind of file system object `t` is, for messages: `a directory`, `a FIFO`, ….
pub fn file_kind(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Opens `path` for reading only if it is a regular file (after following symbolic links):
/// its type is checked before it is opened, since opening a FIFO blocks.
pub(crate) fn open_regular(path: &Path) -> Result<File, DecodeError> {
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if meta.is_dir() {
        return Err(DecodeError::IsDirectory);
    }
    if !meta.is_file() {
        return Err(DecodeError::NotRegular(file_kind(meta.file_type())));
    }
    File::open(path).map_err(read_error)
}

/// A reader positioned after a verified envelope and header.
pub struct PacketReader<R> {
    input: Input<R>,
    env: Envelope,
    info: PacketInfo,
    header: wire::Header,
    header_bytes: Vec<u8>,
    path: Option<PathBuf>,
    content_limit: u64,
    piece_len: usize,
}

/// Opens a packet part file and verifies its envelope and header. Errors name the file.
pub fn open(path: impl AsRef<Path>) -> Result<PacketReader<BufReader<File>>, DecodeError> {
    let path = path.as_ref();
    let wrap = |e: DecodeError| e.in_file(path);
    let f = open_regular(path).map_err(wrap)?;
    let mut r = PacketReader::new(BufReader::with_capacity(256 << 10, f)).map_err(wrap)?;
    r.path = Some(path.to_path_buf());
    Ok(r)
}

impl<R: Read> PacketReader<R> {
    /// Reads and verifies the envelope and the header.
    pub fn new(rd: R) -> Result<Self, DecodeError> {
        let mut input = Input {
            rd,
            offset: 0,
            hasher: blake3::Hasher::new(),
        };
        let mut env_bytes = [0u8; format::ENVELOPE_LEN];
        let got = input.read_full(&mut env_bytes)?;
        if got == 0 {
            return Err(DecodeError::Empty);
        }
        Envelope::check_prefix(&env_bytes[..got])?;
        if got < format::ENVELOPE_LEN {
            return Err(DecodeError::Truncated {
                offset: got as u64,
                what: "envelope",
            });
        }
        let env = Envelope::parse(&env_bytes)?;
        let mut masked = env_bytes;
        masked[format::PATCH_OFFSET..].fill(0);
        input.hasher.update(&masked);

        let mut header_bytes = Vec::new();
        input.exact_vec(&mut header_bytes, env.header_len as usize, "header")?;
        let mut crc = [0u8; 4];
        input.exact(&mut crc, "header checksum", true)?;
        if format::VERIFY_CHECKSUMS && crc32c::crc32c(&header_bytes) != u32::from_le_bytes(crc) {
            return Err(DecodeError::Checksum {
                what: "header",
                offset: format::ENVELOPE_LEN as u64,
            });
        }
        let header = crate::lenient::decode_header(&header_bytes, env.version)?;
        let info = PacketInfo {
            version: env.version,
            kind: env.kind,
            part: env.part_index,
            parts: env.part_count,
            packet_id: env.packet_id,
        };
        Ok(PacketReader {
            input,
            env,
            info,
            header,
            header_bytes,
            path: None,
            content_limit: u64::MAX,
            piece_len: usize::MAX,
        })
    }

    /// Yields a blob record whose content is longer than `len` bytes (`len` ≥ 1) as
    /// [`Record::BlobPiece`]s of at most `len` bytes, read one at a time, so that a format 1.0
    /// packet's large content never has to be held whole.
    pub fn set_blob_piece_len(&mut self, len: usize) {
        self.piece_len = len.max(1);
    }

    /// Refuses, with [`DecodeError::TooLarge`], any content larger than `limit` bytes: a blob
    /// record by its length field and a content piece by its declared total, before their
    /// bytes are read.
    pub fn set_content_limit(&mut self, limit: u64) {
        self.content_limit = limit;
    }

    /// The packet header.
    pub fn header(&self) -> &wire::Header {
        &self.header
    }

    /// The header's encoded bytes (identical in every part of a logical packet).
    pub fn header_bytes(&self) -> &[u8] {
        &self.header_bytes
    }

    /// Version, kind, part number and packet id.
    pub fn info(&self) -> &PacketInfo {
        &self.info
    }

    /// The file this reader reads, if it was opened with [`open`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The body's records, verified as they are read (see the module docs).
    pub fn records(self) -> Records<R> {
        Records {
            r: self,
            chunk: Vec::new(),
            pos: 0,
            stored: Vec::new(),
            decomp: None,
            stream: 0,
            stats: ReadStats::default(),
            state: State::Body,
            split: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Body,
    Done,
    Failed,
}

/// Iterator over a part's records; see [`PacketReader::records`]. After an error it yields
/// nothing more.
pub struct Records<R> {
    r: PacketReader<R>,
    chunk: Vec<u8>,
    pos: usize,
    stored: Vec<u8>,
    decomp: Option<zstd::bulk::Decompressor<'static>>,
    /// Record-stream bytes consumed.
    stream: u64,
    stats: ReadStats,
    state: State,
    /// A blob record being yielded in pieces: hash, content length, bytes yielded so far.
    split: Option<(Hash, u64, u64)>,
}

/// What reading the next frame found.
enum Frame {
    Chunk,
    Trailer,
}

/// A chunk's fixed header as read (`SPEC.md` §4): tag, codec, two reserved bytes, length,
/// stored length, checksum.
struct ChunkHeader([u8; format::CHUNK_HEADER_LEN]);

impl ChunkHeader {
    fn u32_at(&self, o: usize) -> u32 {
        let h = &self.0;
        u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]])
    }

    fn codec(&self) -> u8 {
        self.0[1]
    }

    /// The chunk's uncompressed length.
    fn ulen(&self) -> u32 {
        self.u32_at(4)
    }

    /// The chunk's stored (compressed) length.
    fn clen(&self) -> u32 {
        self.u32_at(8)
    }

    /// Refuses, for the chunk at part offset `at`: reserved bytes that are not zero (unless
    /// the packet is of a newer minor version), a length or stored length over
    /// [`format::MAX_CHUNK_LEN`], an empty chunk, an uncompressed chunk whose two lengths
    /// differ, and an unknown codec; in that order.
    fn check(&self, at: u64, newer_minor: bool) -> Result<(), DecodeError> {
        let h = &self.0;
        let (ulen, clen) = (self.ulen(), self.clen());
        if !newer_minor && (h[2] != 0 || h[3] != 0) {
            return Err(DecodeError::malformed(
                at + 2,
                "reserved chunk bytes are not zero",
            ));
        }
        for (what, len, off) in [("chunk", ulen, 4), ("stored chunk", clen, 8)] {
            if len > format::MAX_CHUNK_LEN {
                return Err(DecodeError::TooLarge {
                    what,
                    len: len.into(),
                    limit: format::MAX_CHUNK_LEN.into(),
                    offset: at + off,
                });
            }
        }
        if ulen == 0 {
            return Err(DecodeError::malformed(at + 4, "empty chunk"));
        }
        match self.codec() {
            format::CODEC_NONE if clen != ulen => Err(DecodeError::malformed(
                at + 8,
                "stored length of an uncompressed chunk differs from its length",
            )),
            format::CODEC_NONE | format::CODEC_ZSTD => Ok(()),
            c => Err(DecodeError::malformed(
                at + 1,
                format!("unknown chunk codec {c}"),
            )),
        }
    }
}

impl<R: Read> Records<R> {
    /// The packet header.
    pub fn header(&self) -> &wire::Header {
        &self.r.header
    }

    /// Version, kind, part number and packet id.
    pub fn info(&self) -> &PacketInfo {
        &self.r.info
    }

    /// The file being read, if it was opened with [`open`].
    pub fn path(&self) -> Option<&Path> {
        self.r.path.as_deref()
    }

    /// Counts so far; `verified` is true once the iterator has ended cleanly.
    pub fn stats(&self) -> ReadStats {
        let mut s = self.stats.clone();
        s.bytes = self.r.input.offset;
        s.verified = self.state == State::Done;
        s
    }

    /// Drains the remaining records, verifying everything; returns the final counts.
    pub fn verify_rest(&mut self) -> Result<ReadStats, DecodeError> {
        for r in self.by_ref() {
            r?;
        }
        Ok(self.stats())
    }

    fn wrap(&self, e: DecodeError) -> DecodeError {
        match &self.r.path {
            Some(p) => e.in_file(p),
            None => e,
        }
    }

    fn newer_minor(&self) -> bool {
        self.r.env.version.minor > format::FORMAT_MINOR
    }

    /// Reads the next frame; loads a chunk into `self.chunk`. A chunk's header is checked
    /// whole before its data is read, its checksum before it is decompressed, and its
    /// decompressed length against the header's.
    fn next_frame(&mut self) -> Result<Frame, DecodeError> {
        let at = self.r.input.offset;
        let Some(h) = self.chunk_header(at)? else {
            return Ok(Frame::Trailer);
        };
        h.check(at, self.newer_minor())?;
        self.read_stored_chunk(&h, at)?;
        self.unpack_chunk(&h, at)?;
        self.pos = 0;
        self.stats.chunks += 1;
        Ok(Frame::Chunk)
    }

    /// The frame tag and, for a chunk, the rest of its header; `None` when the tag is the
    /// trailer's. Any other tag is malformed.
    fn chunk_header(&mut self, at: u64) -> Result<Option<ChunkHeader>, DecodeError> {
        let mut tag = [0u8; 1];
        self.r
            .input
            .exact(&mut tag, "body (expected a chunk or the trailer)", true)?;
        match tag[0] {
            format::FRAME_CHUNK => {}
            format::FRAME_TRAILER => return Ok(None),
            t => {
                return Err(DecodeError::malformed(
                    at,
                    format!("unknown frame type {t:#04x}"),
                ));
            }
        }
        let mut h = [0u8; format::CHUNK_HEADER_LEN];
        h[0] = tag[0];
        self.r.input.exact(&mut h[1..], "chunk header", true)?;
        Ok(Some(ChunkHeader(h)))
    }

    /// Reads the chunk's stored bytes into `self.stored` (at most [`format::MAX_CHUNK_LEN`],
    /// checked before) and verifies the chunk's checksum over its header and those bytes.
    fn read_stored_chunk(&mut self, h: &ChunkHeader, at: u64) -> Result<(), DecodeError> {
        let mut stored = std::mem::take(&mut self.stored);
        let r = self
            .r
            .input
            .exact_vec(&mut stored, h.clen() as usize, "chunk data");
        self.stored = stored;
        r?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h.0[..12]), &self.stored);
        if format::VERIFY_CHECKSUMS && crc != h.u32_at(12) {
            return Err(DecodeError::Checksum {
                what: "chunk",
                offset: at,
            });
        }
        Ok(())
    }

    /// Moves the verified stored bytes into `self.chunk`, decompressing a zstd chunk into a
    /// buffer of the header's length; a chunk that decompresses to any other length is
    /// refused.
    fn unpack_chunk(&mut self, h: &ChunkHeader, at: u64) -> Result<(), DecodeError> {
        if h.codec() == format::CODEC_NONE {
            std::mem::swap(&mut self.chunk, &mut self.stored);
            return Ok(());
        }
        let ulen = h.ulen();
        let d = match self.decomp.as_mut() {
            Some(d) => d,
            None => self
                .decomp
                .insert(zstd::bulk::Decompressor::new().map_err(DecodeError::Io)?),
        };
        self.chunk.clear();
        self.chunk.reserve(ulen as usize);
        let n = d
            .decompress_to_buffer(&self.stored, &mut self.chunk)
            .map_err(|e| DecodeError::Decompress {
                offset: at,
                reason: e.to_string(),
            })?;
        if n != ulen as usize || self.chunk.len() != ulen as usize {
            return Err(DecodeError::Decompress {
                offset: at,
                reason: format!("decompressed to {n} bytes, expected {ulen}"),
            });
        }
        Ok(())
    }

    /// Makes sure the current chunk has unread bytes; `Ok(false)` when the trailer follows.
    fn fill(&mut self) -> Result<bool, DecodeError> {
        while self.pos == self.chunk.len() {
            match self.next_frame()? {
                Frame::Chunk => {}
                Frame::Trailer => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Copies `n` stream bytes into `out` (or drops them if `out` is None), across chunks.
    fn take(&mut self, mut n: usize, mut out: Option<&mut Vec<u8>>) -> Result<(), DecodeError> {
        while n > 0 {
            if !self.fill()? {
                return Err(DecodeError::malformed(
                    self.r.input.offset,
                    "a record is cut off by the trailer",
                ));
            }
            let k = n.min(self.chunk.len() - self.pos);
            if let Some(o) = out.as_deref_mut() {
                o.extend_from_slice(&self.chunk[self.pos..self.pos + k]);
            }
            self.pos += k;
            n -= k;
        }
        Ok(())
    }

    /// Fills `out` from the stream, across chunks.
    fn take_array(&mut self, out: &mut [u8]) -> Result<(), DecodeError> {
        let avail = self.chunk.len() - self.pos;
        if avail >= out.len() {
            out.copy_from_slice(&self.chunk[self.pos..self.pos + out.len()]);
            self.pos += out.len();
            return Ok(());
        }
        let mut v = Vec::with_capacity(out.len());
        self.take(out.len(), Some(&mut v))?;
        out.copy_from_slice(&v);
        Ok(())
    }

    fn finish_trailer(&mut self) -> Result<(), DecodeError> {
        let at = self.r.input.offset - 1;
        let mut t = [0u8; format::TRAILER_LEN - 32 - 1];
        self.r.input.exact(&mut t, "trailer", true)?;
        let expected = *self.r.input.hasher.finalize().as_bytes();
        let mut hash = [0u8; 32];
        self.r.input.exact(&mut hash, "trailer hash", false)?;
        if format::VERIFY_CHECKSUMS && hash != expected {
            return Err(DecodeError::Checksum {
                what: "part hash",
                offset: at,
            });
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&t[o..o + 8]);
            u64::from_le_bytes(b)
        };
        if !self.newer_minor() && t[..3] != [0, 0, 0] {
            return Err(DecodeError::malformed(
                at + 1,
                "reserved trailer bytes are not zero",
            ));
        }
        let records = u64_at(3);
        let stream = u64_at(11);
        let chunks = u32::from_le_bytes([t[19], t[20], t[21], t[22]]);
        if records != self.stats.records || stream != self.stream || chunks != self.stats.chunks {
            return Err(DecodeError::malformed(
                at,
                format!(
                    "trailer says {records} records, {stream} stream bytes, {chunks} chunks; \
                     the body has {}, {}, {}",
                    self.stats.records, self.stream, self.stats.chunks
                ),
            ));
        }
        let mut extra = [0u8; 1];
        if self.r.input.read_full(&mut extra)? > 0 {
            return Err(DecodeError::TrailingBytes {
                offset: self.r.input.offset - 1,
            });
        }
        Ok(())
    }

    /// An empty buffer for a record's `len` bytes: allocated at its final size if that is at
    /// most [`PREALLOC_LIMIT`] or no more than the current chunk holds (so the record is
    /// copied in without regrowth, and a record kept by the caller, e.g. in an import's
    /// overlay, occupies its size and not up to twice as much); a larger claimed length grows
    /// as its bytes arrive, so a corrupt length cannot make the reader allocate much.
    fn record_buf(&self, len: usize) -> Vec<u8> {
        Vec::with_capacity(len.min(PREALLOC_LIMIT.max(self.chunk.len() - self.pos)))
    }

    /// Refuses content over the reader's limit (see [`PacketReader::set_content_limit`]).
    fn check_content_len(&self, len: u64, offset: u64) -> Result<(), DecodeError> {
        if len > self.r.content_limit {
            return Err(DecodeError::TooLarge {
                what: "content",
                len,
                limit: self.r.content_limit,
                offset,
            });
        }
        Ok(())
    }

    /// The rest of a content-piece record of payload length `len` starting at stream offset
    /// `at`: its declared total is checked against the limit before its bytes are read.
    fn blob_piece(&mut self, len: usize, at: u64) -> Result<Record, DecodeError> {
        if len < format::BLOB_PIECE_PREFIX_LEN {
            return Err(DecodeError::malformed(
                at,
                "content-piece record shorter than its fixed fields",
            ));
        }
        let mut fixed = [0u8; format::BLOB_PIECE_PREFIX_LEN];
        self.take_array(&mut fixed)?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&fixed[..32]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&fixed[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let (total, offset) = (u64_at(32), u64_at(40));
        self.check_content_len(total, at + 1 + 32)?;
        let n = len - format::BLOB_PIECE_PREFIX_LEN;
        if offset.checked_add(n as u64).is_none_or(|end| end > total) {
            return Err(DecodeError::malformed(
                at,
                format!("a content piece of {n} bytes at offset {offset} runs past the content's {total} bytes"),
            ));
        }
        let mut bytes = self.record_buf(n);
        self.take(n, Some(&mut bytes))?;
        self.stats.blob_pieces += 1;
        if offset == 0 {
            self.stats.blobs += 1;
        }
        self.stats.blob_bytes += n as u64;
        Ok(Record::BlobPiece {
            hash,
            total,
            offset,
            bytes,
        })
    }

    /// The rest of a delta record of payload length `len` starting at stream offset `at`: its
    /// declared size is checked against the content limit before its frame is read.
    fn delta(&mut self, len: usize, at: u64) -> Result<Record, DecodeError> {
        if len < format::DELTA_PREFIX_LEN {
            return Err(DecodeError::malformed(
                at,
                "content-delta record shorter than its fixed fields",
            ));
        }
        let mut fixed = [0u8; format::DELTA_PREFIX_LEN];
        self.take_array(&mut fixed)?;
        let (mut hash, mut base, mut size) = ([0u8; 32], [0u8; 32], [0u8; 8]);
        hash.copy_from_slice(&fixed[..32]);
        base.copy_from_slice(&fixed[32..64]);
        size.copy_from_slice(&fixed[64..]);
        let size = u64::from_le_bytes(size);
        self.check_content_len(size, at + 1 + 64)?;
        let n = len - format::DELTA_PREFIX_LEN;
        let mut frame = self.record_buf(n);
        self.take(n, Some(&mut frame))?;
        self.stats.deltas += 1;
        self.stats.blobs += 1;
        self.stats.blob_bytes += n as u64;
        Ok(Record::Delta {
            hash,
            base,
            size,
            frame,
        })
    }

    /// An object-base row record (format 1.4): space, key length, key, value.
    fn row(&mut self, len: usize, at: u64) -> Result<Record, DecodeError> {
        if len < format::ROW_PREFIX_LEN {
            return Err(DecodeError::malformed(
                at,
                "row record shorter than its fixed fields",
            ));
        }
        let mut fixed = [0u8; format::ROW_PREFIX_LEN];
        self.take_array(&mut fixed)?;
        let key_len = u32::from_le_bytes([fixed[1], fixed[2], fixed[3], fixed[4]]) as usize;
        let rest = len - format::ROW_PREFIX_LEN;
        if key_len > rest {
            return Err(DecodeError::malformed(
                at + 2,
                format!("row record's key of {key_len} bytes runs past its {rest} bytes"),
            ));
        }
        let mut key = self.record_buf(key_len);
        self.take(key_len, Some(&mut key))?;
        let mut value = self.record_buf(rest - key_len);
        self.take(rest - key_len, Some(&mut value))?;
        self.stats.rows += 1;
        Ok(Record::Row {
            space: fixed[0],
            key,
            value,
        })
    }

    /// A snapshot-end record (format 1.4): row count, hash, signature.
    fn snapshot_end(&mut self, len: usize, at: u64) -> Result<Record, DecodeError> {
        if len != format::SNAPSHOT_END_LEN {
            return Err(DecodeError::malformed(
                at,
                format!(
                    "snapshot-end record of {len} bytes, not {}",
                    format::SNAPSHOT_END_LEN
                ),
            ));
        }
        let mut b = [0u8; format::SNAPSHOT_END_LEN];
        self.take_array(&mut b)?;
        let (mut hash, mut signature) = ([0u8; 32], [0u8; 64]);
        hash.copy_from_slice(&b[8..40]);
        signature.copy_from_slice(&b[40..]);
        let rows = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        Ok(Record::SnapshotEnd {
            rows,
            hash,
            signature,
        })
    }

    /// The next piece of the blob record being split (see
    /// [`PacketReader::set_blob_piece_len`]).
    fn next_split_piece(&mut self) -> Result<Record, DecodeError> {
        let Some((hash, total, offset)) = self.split else {
            return Err(DecodeError::malformed(
                self.stream,
                "no blob record is being split",
            ));
        };
        let n = (total - offset).min(self.r.piece_len as u64) as usize;
        let mut bytes = self.record_buf(n);
        self.take(n, Some(&mut bytes))?;
        self.stats.blob_bytes += n as u64;
        let end = offset + n as u64;
        self.split = (end < total).then_some((hash, total, end));
        Ok(Record::BlobPiece {
            hash,
            total,
            offset,
            bytes,
        })
    }

    /// The next record, or `None` once the trailer has been verified. Unknown skippable
    /// records of a newer minor version are skipped here.
    fn next_record(&mut self) -> Result<Option<Record>, DecodeError> {
        if self.split.is_some() {
            return self.next_split_piece().map(Some);
        }
        loop {
            if !self.fill()? {
                self.finish_trailer()?;
                return Ok(None);
            }
            let at = self.stream;
            let (tag, len) = self.record_prefix(at)?;
            if let Some(record) = self.record_body(tag, len, at)? {
                return Ok(Some(record));
            }
        }
    }

    /// The tag and payload length of the record starting at stream offset `at`; a length over
    /// [`format::MAX_RECORD_LEN`] is refused before the record is counted.
    fn record_prefix(&mut self, at: u64) -> Result<(u8, usize), DecodeError> {
        let mut prefix = [0u8; format::RECORD_PREFIX_LEN];
        self.take_array(&mut prefix)?;
        let tag = prefix[0];
        let len = u32::from_le_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        if len > format::MAX_RECORD_LEN {
            return Err(DecodeError::TooLarge {
                what: "record",
                len: len.into(),
                limit: format::MAX_RECORD_LEN.into(),
                offset: at + 1,
            });
        }
        let len = len as usize;
        self.stream += (format::RECORD_PREFIX_LEN + len) as u64;
        self.stats.records += 1;
        Ok((tag, len))
    }

    /// The payload of a record of type `tag`: a record type is known only from the minor
    /// version that introduced it; an unknown critical one is refused, an unknown other one
    /// is skipped (`None`) only in a packet of a newer minor version than this reader's.
    fn record_body(&mut self, tag: u8, len: usize, at: u64) -> Result<Option<Record>, DecodeError> {
        let minor = self.r.env.version.minor;
        match tag {
            format::REC_ENTRY => self.entry(len).map(Some),
            format::REC_BLOB => self.blob(len, at).map(Some),
            format::REC_BLOB_PIECE if minor >= format::MINOR_BLOB_PIECES => {
                self.blob_piece(len, at).map(Some)
            }
            format::REC_DELTA if minor >= format::MINOR_DELTAS => self.delta(len, at).map(Some),
            format::REC_ROW if minor >= format::MINOR_SNAPSHOT => self.row(len, at).map(Some),
            format::REC_SNAPSHOT_END if minor >= format::MINOR_SNAPSHOT => {
                self.snapshot_end(len, at).map(Some)
            }
            t if t & format::REC_CRITICAL != 0 => {
                Err(DecodeError::UnknownCriticalRecord { tag: t })
            }
            t if self.newer_minor() && t != 0 => {
                self.take(len, None)?;
                self.stats.skipped += 1;
                Ok(None)
            }
            t => Err(DecodeError::malformed(
                at,
                format!(
                    "unknown record type {t:#04x} in a format {} packet",
                    self.r.env.version
                ),
            )),
        }
    }

    /// An entry record: its whole payload is the entry's canonical encoding.
    fn entry(&mut self, len: usize) -> Result<Record, DecodeError> {
        let mut payload = self.record_buf(len);
        self.take(len, Some(&mut payload))?;
        self.stats.entries += 1;
        Ok(Record::Entry(payload))
    }

    /// A blob record of payload length `len` starting at stream offset `at`: hash, then
    /// content. The content's length is checked against the limit before its bytes are read;
    /// content longer than the piece length is yielded in pieces (see
    /// [`PacketReader::set_blob_piece_len`]).
    fn blob(&mut self, len: usize, at: u64) -> Result<Record, DecodeError> {
        if len < 32 {
            return Err(DecodeError::malformed(
                at,
                "blob record shorter than its hash",
            ));
        }
        self.check_content_len((len - 32) as u64, at + 1)?;
        let mut hash = [0u8; 32];
        self.take_array(&mut hash)?;
        if len - 32 > self.r.piece_len {
            self.stats.blobs += 1;
            self.split = Some((hash, (len - 32) as u64, 0));
            return self.next_split_piece();
        }
        let mut bytes = self.record_buf(len - 32);
        self.take(len - 32, Some(&mut bytes))?;
        self.stats.blobs += 1;
        self.stats.blob_bytes += bytes.len() as u64;
        Ok(Record::Blob { hash, bytes })
    }
}

impl<R: Read> Iterator for Records<R> {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.state != State::Body {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.state = State::Done;
                None
            }
            Err(e) => {
                self.state = State::Failed;
                Some(Err(self.wrap(e)))
            }
        }
    }
}

impl<R: Read> std::iter::FusedIterator for Records<R> {}

/// Decodes a whole single part held in memory: header, info and all records (verified).
pub fn decode_from_slice(
    bytes: &[u8],
) -> Result<(PacketInfo, wire::Header, Vec<Record>), DecodeError> {
    let r = PacketReader::new(bytes)?;
    let info = r.info().clone();
    let header = r.header().clone();
    let records = r.records().collect::<Result<Vec<_>, _>>()?;
    Ok((info, header, records))
}
