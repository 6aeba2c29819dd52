//! The crate's two error types: [`DecodeError`] for everything that reads packets or entries,
//! [`EncodeError`] for everything that writes them.
//!
//! Decoding never panics on bad input: every way a file can be wrong has a variant here. Errors
//! about a file are wrapped once, at the level that knows the path, in [`DecodeError::File`];
//! [`DecodeError::root`] peels that wrapper off.

use std::io;
use std::path::PathBuf;

use crate::wire::Id;

/// Why a packet, a part or an entry could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The error happened while reading `path`.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<DecodeError>,
    },
    /// An I/O error other than an early end of file.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The path is a directory, not a packet file.
    #[error("is a directory, not a packet file")]
    IsDirectory,
    /// The path is neither a regular file nor a directory (a FIFO, a socket, a device): it is
    /// never opened, since opening a FIFO blocks until a writer comes.
    #[error("is not a regular file ({0}), not a packet file")]
    NotRegular(&'static str),
    /// The file is empty.
    #[error("empty file, not a packet")]
    Empty,
    /// The file does not start with the packet magic bytes.
    #[error("not an msite packet (bad magic bytes {found:02x?})")]
    BadMagic {
        /// The first bytes found (up to 8).
        found: Vec<u8>,
    },
    /// The packet's major format version is not one this code reads.
    #[error("{}", version_message(*major, *minor))]
    UnsupportedVersion {
        /// The packet's major version.
        major: u16,
        /// The packet's minor version.
        minor: u16,
    },
    /// The input ended early.
    #[error("truncated: input ends at byte {offset} inside the {what}")]
    Truncated {
        /// Byte offset where the input ended.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A checksum or hash did not match.
    #[error("{what} checksum mismatch at byte {offset}: the packet is corrupt")]
    Checksum {
        /// Which check failed (`envelope`, `header`, `chunk`, `part hash`).
        what: &'static str,
        /// Byte offset of the checked item.
        offset: u64,
    },
    /// Bytes follow the trailer.
    #[error("trailing bytes after the trailer (at byte {offset})")]
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: u64,
    },
    /// A length field exceeds a hard limit of the format.
    #[error("{what} length {len} at byte {offset} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What the length is of.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The format's limit.
        limit: u64,
        /// Byte offset of the length field.
        offset: u64,
    },
    /// A field has a value the format does not allow.
    #[error("malformed packet at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset of the bad field (within the part, or within the record stream for
        /// record-level problems).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A chunk's compressed data does not decompress to its stated size.
    #[error("chunk at byte {offset} does not decompress: {reason}")]
    Decompress {
        /// Byte offset of the chunk.
        offset: u64,
        /// The decompressor's complaint.
        reason: String,
    },
    /// A structured part (header, entry) is not valid msgpack for its type.
    #[error("cannot decode {what}: {source}")]
    Msgpack {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// Entry bytes decode but are not the canonical encoding of the entry they decode to.
    #[error("entry bytes are not in canonical encoding")]
    NonCanonical,
    /// A record this code does not understand and may not skip.
    #[error(
        "packet has a record of type {tag:#04x} that this msite does not understand; upgrade msite"
    )]
    UnknownCriticalRecord {
        /// The record tag.
        tag: u8,
    },
    /// A part of another logical packet where a part of this one was expected.
    #[error("part belongs to packet {found}, expected a part of packet {expected}")]
    WrongPacket {
        /// The logical packet being read.
        expected: Id,
        /// The packet the part belongs to.
        found: Id,
    },
    /// The parts given do not form one complete logical packet.
    #[error("{0}")]
    Parts(String),
}

fn version_message(major: u16, minor: u16) -> String {
    if major > crate::FORMAT_MAJOR {
        format!(
            "packet format {major}.{minor} is newer than this msite reads ({}.x); upgrade msite",
            crate::FORMAT_MAJOR
        )
    } else {
        format!(
            "packet format {major}.{minor} is not a format this msite reads ({}.x)",
            crate::FORMAT_MAJOR
        )
    }
}

impl DecodeError {
    /// The error without its [`DecodeError::File`] wrappers.
    pub fn root(&self) -> &DecodeError {
        match self {
            DecodeError::File { source, .. } => source.root(),
            e => e,
        }
    }

    /// Wraps the error with the path of the file it is about (unless it already names one).
    pub fn in_file(self, path: impl Into<PathBuf>) -> DecodeError {
        match self {
            e @ DecodeError::File { .. } => e,
            e => DecodeError::File {
                path: path.into(),
                source: Box::new(e),
            },
        }
    }

    pub(crate) fn msgpack(what: &'static str, source: rmp_serde::decode::Error) -> Self {
        DecodeError::Msgpack { what, source }
    }

    pub(crate) fn malformed(offset: u64, reason: impl Into<String>) -> Self {
        DecodeError::Malformed {
            offset,
            reason: reason.into(),
        }
    }
}

/// Why a packet could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An I/O error on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A packet file with the final name already exists; it is never overwritten.
    #[error("{}: a packet with this name already exists", .0.display())]
    Exists(PathBuf),
    /// The options cannot be used.
    #[error("invalid write options: {0}")]
    InvalidOptions(String),
    /// A record exceeds the format's hard limit.
    #[error("record of {len} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// The record's length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The header exceeds the format's hard limit.
    #[error("header of {len} bytes exceeds the limit of {limit} bytes")]
    HeaderTooLarge {
        /// The header's encoded length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// More parts than the format allows.
    #[error("packet would need more than {0} parts")]
    TooManyParts(u32),
    /// A value could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Msgpack {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// Compression failed.
    #[error("compression failed: {0}")]
    Compress(io::Error),
}
