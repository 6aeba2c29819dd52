//! `msite-packet`: the versioned wire format of msite's update and replica-creation packets.
//! It encodes and decodes; it knows nothing of storage or of the protocol. The format is
//! specified in `SPEC.md` (next to `Cargo.toml`); this crate is its reference implementation.
//!
//! - [`wire`]: the values a packet carries (header, entries, controls).
//! - [`encode_entry`], [`decode_entry`], [`entry_hash`]: the canonical encoding of an oplog entry
//!   and its hash.
//! - Writing: [`PacketWriter`] (part files, atomic), [`MemPacketWriter`] and [`encode_to_vec`]
//!   (memory).
//! - Reading: [`open`] / [`PacketReader::new`], then [`PacketReader::records`], a streaming,
//!   verifying iterator of [`Record`]s.
//! - Parts: [`group_parts`] groups part files into logical packets and reports missing or
//!   duplicated parts; [`LogicalPacket::records`] reads a complete logical packet in order.
//! - Sealing: [`sealed`] wraps a part file in age encryption, its label readable (`SPEC.md` §9).
//! - Inspection: [`summarize`] / [`verify`] and [`entries`] for `msite lspacket`.
//!
//! ```
//! use msite_packet::{wire, encode_entry, encode_to_vec, entry_hash, PacketReader, Record, WriteOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let header = wire::Header {
//!     family: wire::Id([1; 16]), family_name: "fam".into(),
//!     sender: wire::Id([2; 16]), sender_name: "boston".into(), sender_incarnation: 0,
//!     targets: vec![], bases: vec![], sender_row: vec![], controls: vec![],
//!     created_ms: 0, new_replica: wire::Id::default(), comment: String::new(),
//!     keys: vec![], heads: vec![], signature: wire::NO_SIGNATURE, fork_decisions: vec![],
//!     reports: vec![], snapshot: 0,
//! };
//! let mut e = wire::Entry {
//!     origin: wire::Id([2; 16]), number: 1, incarnation: 0, time_ms: 0, prev: [0; 32],
//!     op: wire::Op::MkBrType { name: "main".into() }, hash: [0; 32],
//! };
//! e.hash = entry_hash(&e);
//! let records = vec![Record::Entry(encode_entry(&e))];
//! let bytes = encode_to_vec(wire::Kind::Update, &header, records.clone(), &WriteOptions::new(wire::Id([9; 16])))?;
//!
//! let reader = PacketReader::new(bytes.as_slice())?; // envelope and header verified
//! assert_eq!(reader.header(), &header);
//! let mut got = Vec::new();
//! for r in reader.records() {
//!     got.push(r?); // each chunk verified before its records; trailer verified at the end
//! }
//! assert_eq!(got, records);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod early_sync;
mod entry;
mod error;
pub mod format;
mod lenient;
mod parts;
mod read;
pub mod sealed;
pub mod sign;
mod summary;
pub mod wire;
mod write;

pub use early_sync::{EarlySync, EarlySyncEvery};
pub use entry::{
    canonical_entry_hash, canonical_entry_stored_hash, decode_entry, encode_entry, entry_hash,
    write_entry,
};
pub use error::{DecodeError, EncodeError};
pub use format::{FormatVersion, FORMAT_MAJOR, FORMAT_MINOR};
pub use parts::{
    decode_parts, group_parts, logical_packet, part_info, GroupedParts, LogicalPacket,
    LogicalRecords, PartProblem,
};
pub use read::{
    decode_from_slice, file_kind, open, PacketInfo, PacketReader, ReadStats, Record, Records,
};
pub use summary::{entries, summarize, summarize_reader, verify, Entries, OriginEntries, Summary};
pub use write::{
    encode_to_vec, part_file_name, unfinished_parts, MemPacketWriter, PacketWriter, Stats,
    WriteOptions, Written,
};
