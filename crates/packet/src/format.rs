//! Byte-level constants and the hand-framed envelope (`SPEC.md` §2).
//!
//! Everything here is fixed for format major version 1 (minor 1 adds the content-piece record,
//! minor 2 signatures, minor 3 the content-delta record).
//! The envelope is 48 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `89 4d 53 50 0d 0a 1a 0a` |
//! | 8 | 2 | major version, u16 LE |
//! | 10 | 2 | minor version, u16 LE |
//! | 12 | 1 | kind: 1 update, 2 replica creation |
//! | 13 | 1 | flags (0) |
//! | 14 | 2 | reserved (0) |
//! | 16 | 16 | logical packet id |
//! | 32 | 4 | header length, u32 LE |
//! | 36 | 4 | part index i (1-based), u32 LE |
//! | 40 | 4 | part count n, u32 LE |
//! | 44 | 4 | crc32c of bytes 0..44, u32 LE |

use crate::error::DecodeError;
use crate::wire::{Id, Kind};

/// Whether checksum and hash mismatches are errors. Always true, except in fuzz builds
/// (`cargo fuzz` sets `--cfg fuzzing`), where they are ignored so that the fuzzer reaches the
/// parsers behind the checks instead of stopping at the first crc.
#[allow(unexpected_cfgs)]
pub(crate) const VERIFY_CHECKSUMS: bool = !cfg!(fuzzing);

/// The magic bytes every packet part starts with (PNG-style: a high-bit byte, "MSP", CR LF,
/// Ctrl-Z, LF, so that text-mode transfers and truncation to 7 bits are detected).
pub const MAGIC: [u8; 8] = [0x89, b'M', b'S', b'P', 0x0d, 0x0a, 0x1a, 0x0a];
/// The major format version this code writes and reads.
pub const FORMAT_MAJOR: u16 = 1;
/// The minor format version this code writes by default (and the newest it fully understands).
pub const FORMAT_MINOR: u16 = 5;
/// The first minor version with content-piece records ([`REC_BLOB_PIECE`]).
pub const MINOR_BLOB_PIECES: u16 = 1;
/// The first minor version whose header carries keys, signed chain heads and the sender's
/// signature (`SPEC.md` §8).
pub const MINOR_SIGNED: u16 = 2;
/// The first minor version whose header carries fork repair decisions (`SPEC.md` §3).
pub const MINOR_FORK_DECISIONS: u16 = 3;
/// The first minor version with content-delta records ([`REC_DELTA`]).
pub const MINOR_DELTAS: u16 = 3;
/// The first minor version whose header carries signed reports (`SPEC.md` §3).
pub const MINOR_REPORTS: u16 = 4;
/// The first minor version with snapshot creation: the header's `snapshot` field and the
/// object-base row and snapshot-end records ([`REC_ROW`], [`REC_SNAPSHOT_END`]).
pub const MINOR_SNAPSHOT: u16 = 4;
/// The minor version msite's exporter writes for update and history creation packets: 1.4,
/// since every update packet carries its sender's signed report ([`MINOR_REPORTS`]).
pub const MINOR_UPDATE: u16 = 4;
// trust2 fields
/// The first minor version whose key cells carry replicas' age recipients (`SPEC.md` §8,
/// "1.4: replicated age recipients").
pub const MINOR_RECIPIENTS: u16 = 4;
/// The first minor version whose fork repair decisions carry their decider's signature
/// (`SPEC.md` §6, "1.5: signed fork decisions").
pub const MINOR_SIGNED_DECISIONS: u16 = 5;

/// Length of the envelope.
pub const ENVELOPE_LEN: usize = 48;
/// Offset of the part-count field, patched after all parts are written. The part hash reads
/// bytes `PATCH_OFFSET..ENVELOPE_LEN` (part count and envelope crc) as zeros.
pub const PATCH_OFFSET: usize = 40;

/// Hard limit on the encoded header.
pub const MAX_HEADER_LEN: u32 = 64 << 20;
/// Hard limit on a chunk's uncompressed size (and so on `WriteOptions::chunk_size`).
pub const MAX_CHUNK_LEN: u32 = 16 << 20;
/// Hard limit on one record's payload (a blob's bytes plus its 32-byte hash, or an entry).
pub const MAX_RECORD_LEN: u32 = 1 << 30;
/// Hard limit on the number of parts of one logical packet.
pub const MAX_PARTS: u32 = 1 << 20;

/// Frame tag of a chunk.
pub const FRAME_CHUNK: u8 = 0x01;
/// Frame tag of the trailer.
pub const FRAME_TRAILER: u8 = 0x02;
/// Length of a chunk frame's fixed part (tag, codec, reserved, ulen, clen, crc).
pub const CHUNK_HEADER_LEN: usize = 16;
/// Length of the trailer, tag and hash included.
pub const TRAILER_LEN: usize = 56;

/// Chunk codec: stored as is.
pub const CODEC_NONE: u8 = 0;
/// Chunk codec: one zstd frame.
pub const CODEC_ZSTD: u8 = 1;

/// Record tag of an entry (payload: canonical entry bytes).
pub const REC_ENTRY: u8 = 0x01;
/// Record tag of a blob (payload: 32-byte hash, then the content).
pub const REC_BLOB: u8 = 0x02;
/// Record tag of a piece of content (format 1.1; payload: 32-byte hash, total content size
/// u64 LE, offset of the piece u64 LE, then the piece's bytes). Critical: a reader that drops
/// it would lose content.
pub const REC_BLOB_PIECE: u8 = 0x83;
/// Record tag of content carried as a delta (format 1.3; payload: 32-byte hash of the content,
/// 32-byte hash of the base content, content size u64 LE, then one zstd frame compressed with
/// the base content as its reference prefix). Critical: a reader that drops it would lose content.
pub const REC_DELTA: u8 = 0x84;
/// Record tag of one row of the object base in a snapshot creation packet (format 1.4;
/// payload: the row's space (1 byte), key length u32 LE, the key, then the value). Critical:
/// a reader that drops it would make a replica with holes in its state.
pub const REC_ROW: u8 = 0x85;
/// Record tag of the end of a snapshot (format 1.4; payload: the number of row records u64
/// LE, the BLAKE3 of their payloads (each preceded by its length u32 LE), the sender's
/// Ed25519 signature over [`crate::sign::snapshot_message`]). Critical, and the last record.
pub const REC_SNAPSHOT_END: u8 = 0x86;
/// Length of a snapshot-end record's payload.
pub const SNAPSHOT_END_LEN: usize = 8 + 32 + 64;
/// Length of a row record's fixed payload prefix (space, key length).
pub const ROW_PREFIX_LEN: usize = 5;
/// Length of a delta record's fixed payload prefix (hash, base, size).
pub const DELTA_PREFIX_LEN: usize = 72;
/// Length of a content-piece record's fixed payload prefix (hash, total, offset).
pub const BLOB_PIECE_PREFIX_LEN: usize = 48;
/// Record tags with this bit set must be understood: a reader that does not know one refuses
/// the packet. Tags without it are skipped by a reader that does not know them.
pub const REC_CRITICAL: u8 = 0x80;
/// Length of a record's fixed prefix (tag, payload length u32 LE).
pub const RECORD_PREFIX_LEN: usize = 5;

/// A format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct FormatVersion {
    /// Major version: a reader refuses majors it does not know.
    pub major: u16,
    /// Minor version: a reader reads newer minors, skipping what it does not know.
    pub minor: u16,
}

impl std::fmt::Display for FormatVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The current format version.
pub const CURRENT: FormatVersion = FormatVersion {
    major: FORMAT_MAJOR,
    minor: FORMAT_MINOR,
};

/// The decoded envelope of one part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub version: FormatVersion,
    pub kind: Kind,
    pub flags: u8,
    pub packet_id: Id,
    pub header_len: u32,
    pub part_index: u32,
    pub part_count: u32,
}

pub(crate) fn kind_byte(k: Kind) -> u8 {
    match k {
        Kind::Update => 1,
        Kind::ReplicaCreation => 2,
    }
}

impl Envelope {
    /// The 48 envelope bytes, crc included.
    pub fn to_bytes(&self) -> [u8; ENVELOPE_LEN] {
        let mut b = [0u8; ENVELOPE_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.version.minor.to_le_bytes());
        b[12] = kind_byte(self.kind);
        b[13] = self.flags;
        b[16..32].copy_from_slice(&self.packet_id.0);
        b[32..36].copy_from_slice(&self.header_len.to_le_bytes());
        b[36..40].copy_from_slice(&self.part_index.to_le_bytes());
        b[40..44].copy_from_slice(&self.part_count.to_le_bytes());
        let crc = crc32c::crc32c(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Checks magic and major version of a prefix of the file (at most 12 bytes needed);
    /// `complete` says whether the prefix is the whole file.
    pub fn check_prefix(prefix: &[u8]) -> Result<(), DecodeError> {
        let n = prefix.len().min(8);
        if prefix[..n] != MAGIC[..n] {
            return Err(DecodeError::BadMagic {
                found: prefix[..n].to_vec(),
            });
        }
        if prefix.len() >= 12 {
            let major = u16::from_le_bytes([prefix[8], prefix[9]]);
            let minor = u16::from_le_bytes([prefix[10], prefix[11]]);
            if major != FORMAT_MAJOR {
                return Err(DecodeError::UnsupportedVersion { major, minor });
            }
        }
        Ok(())
    }

    /// Parses and verifies the 48 envelope bytes.
    pub fn parse(b: &[u8; ENVELOPE_LEN]) -> Result<Envelope, DecodeError> {
        Self::check_prefix(b)?;
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if VERIFY_CHECKSUMS && crc32c::crc32c(&b[..44]) != u32_at(44) {
            return Err(DecodeError::Checksum {
                what: "envelope",
                offset: 0,
            });
        }
        let version = FormatVersion {
            major: u16::from_le_bytes([b[8], b[9]]),
            minor: u16::from_le_bytes([b[10], b[11]]),
        };
        let kind = match b[12] {
            1 => Kind::Update,
            2 => Kind::ReplicaCreation,
            k => {
                return Err(DecodeError::malformed(
                    12,
                    format!("unknown packet kind {k}"),
                ))
            }
        };
        let newer_minor = version.minor > FORMAT_MINOR;
        if !newer_minor && (b[13] != 0 || b[14] != 0 || b[15] != 0) {
            return Err(DecodeError::malformed(
                13,
                "reserved envelope bytes are not zero",
            ));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[16..32]);
        let header_len = u32_at(32);
        if header_len > MAX_HEADER_LEN {
            return Err(DecodeError::TooLarge {
                what: "header",
                len: header_len.into(),
                limit: MAX_HEADER_LEN.into(),
                offset: 32,
            });
        }
        let part_index = u32_at(36);
        let part_count = u32_at(40);
        if part_count == 0 || part_count > MAX_PARTS || part_index == 0 || part_index > part_count {
            return Err(DecodeError::malformed(
                36,
                format!("bad part number: part {part_index} of {part_count}"),
            ));
        }
        Ok(Envelope {
            version,
            kind,
            flags: b[13],
            packet_id: Id(id),
            header_len,
            part_index,
            part_count,
        })
    }
}

/// The `(part count, envelope crc)` bytes to write at [`PATCH_OFFSET`] once the part count is
/// known, for an envelope whose other fields are `env`.
pub(crate) fn patch_bytes(env: &Envelope, part_count: u32) -> [u8; 8] {
    let mut e = env.clone();
    e.part_count = part_count;
    let b = e.to_bytes();
    let mut p = [0u8; 8];
    p.copy_from_slice(&b[PATCH_OFFSET..ENVELOPE_LEN]);
    p
}
