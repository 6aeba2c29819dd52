//! Content as deltas in packets (format 1.3): a new version travels as a zstd delta against
//! the previous version of its branch when the target is known to hold that version.
//!
//! # Rules
//! - The base is the one [`crate::packed`] stores against: the content of version `n - 1` of
//!   the same element and branch.
//! - A base may be used when the target holds it for certain: the entry that created the base
//!   version is within the target's own latest report (its acknowledged row, never our
//!   estimate), and neither side is recovering (a restoring target's holdings are uncertain);
//!   or the base was sent earlier in the same packet (so creation packets and packets to
//!   restoring targets use only those).
//! - A delta is sent only where it is smaller than the content; otherwise the content goes
//!   whole. Content larger than a chunk always goes whole (in pieces).
//! - A stored delta against the same base is shipped as it is (its frame decompresses with
//!   the base as prefix); otherwise the base is read from the store (or from the export's
//!   [`packed::BaseCache`], at most 8 MiB) and a delta computed.
//! - The importer rebuilds the content from its own copy of the base and checks the content's
//!   BLAKE3 hash before anything is applied (`content::Intake::delta`); entries, their hashes
//!   and signatures name the content hash, never its encoding, so relayed entries stay
//!   verifiable.

use std::collections::HashSet;

use crate::content::CHUNK_LEN;
use crate::error::Result;
use crate::ids::Hash;
use crate::model::{Entry, Op, Row};
use crate::packed;
use crate::store::ReadView;

use super::packet::RecordSink;

/// Which bases a packet's deltas may use.
pub(super) struct DeltaBases<'a> {
    /// What the target holds by its latest report, when that can be trusted (see the rules).
    pub(super) held: Option<&'a Row>,
    /// Contents sent earlier in this packet.
    pub(super) sent: &'a HashSet<Hash>,
    /// Bases read, and versions rebuilt, earlier in this export.
    pub(super) cache: &'a mut packed::BaseCache,
}

impl DeltaBases<'_> {
    /// The base for the content of the check-in `canonical` (an oplog entry's bytes), if the
    /// target holds one.
    fn base_for<R: ReadView + ?Sized>(&self, r: &R, canonical: &[u8]) -> Result<Option<Hash>> {
        let Ok(w) = msite_packet::decode_entry(canonical) else {
            return Ok(None);
        };
        let e = Entry::from_wire(&w);
        let Op::Checkin {
            elem,
            brtype,
            version,
            size,
            ..
        } = &e.op
        else {
            return Ok(None);
        };
        if *size > CHUNK_LEN as u64 {
            return Ok(None);
        }
        let Some((base, made_by)) = crate::vob::previous_version(r, elem, brtype, *version)? else {
            return Ok(None);
        };
        let acked = self
            .held
            .is_some_and(|row| made_by.number <= row.get(&made_by.origin));
        Ok((acked || self.sent.contains(&base)).then_some(base))
    }
}

/// Sends the content `h` of the oplog entry `canonical` as a delta against a base the target
/// holds (see the module's rules); returns false, having sent nothing, when no delta applies
/// and the caller sends it whole.
pub(super) fn send_as_delta<R: ReadView + ?Sized>(
    r: &R,
    h: &Hash,
    canonical: &[u8],
    bases: &mut DeltaBases<'_>,
    sink: &mut dyn RecordSink,
) -> Result<bool> {
    let Some(base) = bases.base_for(r, canonical)?.filter(|b| b != h) else {
        return Ok(false);
    };
    if let Some(v) = packed::get_packed(r, h)? {
        if let Some((b, frame)) = packed::delta_of(&v)? {
            if b == base {
                sink.delta(h, &base, packed::size_of(&v)?, frame)?;
                return Ok(true);
            }
        }
    }
    let (Some(data), Some(b)) = (packed::small(r, h)?, bases.cache.get(r, &base)?) else {
        return Ok(false);
    };
    let data = std::sync::Arc::new(data);
    // The next version of the file names this one as its base.
    bases.cache.keep(*h, data.clone());
    if !packed::worth_delta(&data, &b) {
        return Ok(false);
    }
    let frame = packed::delta_frame(&data, &b)?;
    if frame.len() >= data.len() {
        return Ok(false);
    }
    sink.delta(h, &base, data.len() as u64, &frame)?;
    Ok(true)
}
