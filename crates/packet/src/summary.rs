//! Inspection for `msite lspacket`: [`summarize`] (and its alias [`verify`]) read a part fully,
//! verifying everything, and count entries per origin; [`entries`] lists the decoded entries.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::entry::decode_entry;
use crate::error::DecodeError;
use crate::read::{open, PacketInfo, Record, Records};
use crate::wire::{self, Id};

/// Entries of one origin in a packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OriginEntries {
    /// The origin replica.
    pub origin: Id,
    /// How many of its entries the packet carries.
    pub entries: u64,
    /// The lowest entry number carried.
    pub first: u64,
    /// The highest entry number carried.
    pub last: u64,
}

/// Everything `lspacket` shows about a packet part (serializable, e.g. to JSON, where ids and
/// hashes are hex strings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The file summarized, when read from a file.
    pub path: Option<PathBuf>,
    /// Envelope: version, kind, part i of n, logical packet id.
    pub info: PacketInfo,
    /// The header (family, sender, targets, bases, sender's row, controls, …).
    pub header: wire::Header,
    /// Records in the part.
    pub records: u64,
    /// Entry records.
    pub entries: u64,
    /// Entries per origin, ordered by origin id.
    pub per_origin: Vec<OriginEntries>,
    /// Blob records.
    pub blobs: u64,
    /// Bytes of blob contents.
    pub blob_bytes: u64,
    /// Size of the part in bytes.
    pub bytes: u64,
}

/// Reads a packet part file, verifying every check and decoding every entry (to count entries
/// per origin). Errors name the file.
pub fn summarize(path: impl AsRef<Path>) -> Result<Summary, DecodeError> {
    let path = path.as_ref();
    let r = open(path)?;
    let mut s = summarize_records(r.records())?;
    s.path = Some(path.to_path_buf());
    Ok(s)
}

/// Verifies a packet part file completely (envelope, header, every chunk, every entry's
/// canonical encoding, trailer, part hash); the same as [`summarize`].
pub fn verify(path: impl AsRef<Path>) -> Result<Summary, DecodeError> {
    summarize(path)
}

/// [`summarize`] over any reader (for a part in memory).
pub fn summarize_reader<R: Read>(rd: R) -> Result<Summary, DecodeError> {
    summarize_records(crate::read::PacketReader::new(rd)?.records())
}

fn summarize_records<R: Read>(mut recs: Records<R>) -> Result<Summary, DecodeError> {
    let mut per: BTreeMap<Id, OriginEntries> = BTreeMap::new();
    for r in recs.by_ref() {
        if let Record::Entry(b) = r? {
            let e = decode_entry(&b)?;
            let o = per.entry(e.origin).or_insert(OriginEntries {
                origin: e.origin,
                entries: 0,
                first: e.number,
                last: e.number,
            });
            o.entries += 1;
            o.first = o.first.min(e.number);
            o.last = o.last.max(e.number);
        }
    }
    let st = recs.stats();
    Ok(Summary {
        path: None,
        info: recs.info().clone(),
        header: recs.header().clone(),
        records: st.records,
        entries: st.entries,
        per_origin: per.into_values().collect(),
        blobs: st.blobs,
        blob_bytes: st.blob_bytes,
        bytes: st.bytes,
    })
}

/// The decoded entries of a packet part file, in packet order (blobs skipped). The iterator
/// verifies the part as it goes and yields an error instead of ending if anything is wrong.
pub fn entries(path: impl AsRef<Path>) -> Result<Entries<BufReader<File>>, DecodeError> {
    Ok(open(path)?.records().entries())
}

/// Iterator of decoded entries; see [`entries`] and [`Records::entries`].
pub struct Entries<R> {
    recs: Records<R>,
    failed: bool,
}

impl<R: Read> Records<R> {
    /// Only the entries, decoded.
    pub fn entries(self) -> Entries<R> {
        Entries {
            recs: self,
            failed: false,
        }
    }
}

impl<R: Read> Iterator for Entries<R> {
    type Item = Result<wire::Entry, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            match self.recs.next()? {
                Ok(Record::Entry(b)) => {
                    let r = decode_entry(&b).map_err(|e| match self.recs.path() {
                        Some(p) => e.in_file(p),
                        None => e,
                    });
                    self.failed = r.is_err();
                    return Some(r);
                }
                Ok(
                    Record::Blob { .. }
                    | Record::BlobPiece { .. }
                    | Record::Delta { .. }
                    | Record::Row { .. }
                    | Record::SnapshotEnd { .. },
                ) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
