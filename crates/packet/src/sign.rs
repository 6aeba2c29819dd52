//! What signatures sign (`SPEC.md` §8): the byte strings a sender and an origin sign, and the
//! header encoding an older minor version writes. The cryptography itself (Ed25519) is the
//! protocol's; the format only fixes the messages, so that every implementation signs the
//! same bytes.

use serde::Serialize;

use crate::wire;

/// Domain separation of a header signature.
const HEADER_DOMAIN: &[u8] = b"msite packet header v1.2\0";
/// Domain separation of a chain-head signature.
const HEAD_DOMAIN: &[u8] = b"msite chain head v1\0";
/// Domain separation of a snapshot signature (1.4).
const SNAPSHOT_DOMAIN: &[u8] = b"msite snapshot v1\0";

/// The running hash of a snapshot's row records (1.4): BLAKE3 over each row record's payload
/// (space, key length, key, value), each preceded by the payload's length (u32 LE), in order.
///
/// Rows are short (a State row is tens of bytes, a small blob a few hundred), and BLAKE3 fed
/// one short piece at a time compresses its 64-byte blocks one after another. So the payloads
/// of small rows wait in `run` until [`HASH_RUN`] bytes are there and are hashed together,
/// which lets BLAKE3 hash many 1 KiB chunks at once with SIMD. The hash is the same whatever
/// the pieces (BLAKE3 is a stream hash); a row longer than a run is hashed in place, so the
/// buffer never holds more than one run and one small row.
#[derive(Clone, Default)]
pub struct SnapshotHasher {
    h: blake3::Hasher,
    run: Vec<u8>,
    rows: u64,
}

/// The bytes of row payloads hashed at once (see [`SnapshotHasher`]).
const HASH_RUN: usize = 64 << 10;

impl SnapshotHasher {
    /// A hasher over no row yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one row record.
    pub fn row(&mut self, space: u8, key: &[u8], value: &[u8]) {
        let len = (crate::format::ROW_PREFIX_LEN + key.len() + value.len()) as u32;
        self.run.extend_from_slice(&len.to_le_bytes());
        self.run.push(space);
        self.run
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        if key.len() + value.len() >= HASH_RUN {
            self.h.update(&self.run);
            self.run.clear();
            self.h.update(key);
            self.h.update(value);
        } else {
            self.run.extend_from_slice(key);
            self.run.extend_from_slice(value);
            if self.run.len() >= HASH_RUN {
                self.h.update(&self.run);
                self.run.clear();
            }
        }
        self.rows += 1;
    }

    /// The number of rows added and their hash.
    pub fn finish(&self) -> (u64, wire::Hash) {
        let mut h = self.h.clone();
        h.update(&self.run);
        (self.rows, *h.finalize().as_bytes())
    }
}

/// The bytes a sender signs at the end of a snapshot (1.4): the domain, the family, the
/// logical packet id, the number of row records (u64 LE) and their hash
/// ([`SnapshotHasher`]). With the header signature, which names the packet id, it covers every
/// row the packet carries and that none is missing.
pub fn snapshot_message(
    family: &wire::Id,
    packet_id: &wire::Id,
    rows: u64,
    hash: &wire::Hash,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(SNAPSHOT_DOMAIN.len() + 16 + 16 + 8 + 32);
    m.extend_from_slice(SNAPSHOT_DOMAIN);
    m.extend_from_slice(&family.0);
    m.extend_from_slice(&packet_id.0);
    m.extend_from_slice(&rows.to_le_bytes());
    m.extend_from_slice(hash);
    m
}

/// The bytes a sender signs for a packet: the domain, the logical packet id, the kind (`1`
/// update, `2` creation) and the positional msgpack encoding of the header with its signature
/// field all zeros. The header names the family, sender and targets and carries the bases,
/// rows, controls, keys and the signed chain heads that cover every carried entry.
pub fn header_message(packet_id: &wire::Id, kind: wire::Kind, header: &wire::Header) -> Vec<u8> {
    let mut unsigned = header.clone();
    unsigned.signature = wire::NO_SIGNATURE;
    let body = rmp_serde::to_vec(&unsigned).expect("a header always encodes");
    let mut m = Vec::with_capacity(HEADER_DOMAIN.len() + 17 + body.len());
    m.extend_from_slice(HEADER_DOMAIN);
    m.extend_from_slice(&packet_id.0);
    m.push(match kind {
        wire::Kind::Update => 1,
        wire::Kind::ReplicaCreation => 2,
    });
    m.extend_from_slice(&body);
    m
}

/// The bytes an origin signs for the head of its chain: the domain, the family, the origin,
/// the number (u64 LE) and the entry's hash.
pub fn head_message(
    family: &wire::Id,
    origin: &wire::Id,
    number: u64,
    hash: &wire::Hash,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEAD_DOMAIN.len() + 72);
    m.extend_from_slice(HEAD_DOMAIN);
    m.extend_from_slice(&family.0);
    m.extend_from_slice(&origin.0);
    m.extend_from_slice(&number.to_le_bytes());
    m.extend_from_slice(hash);
    m
}

/// Domain separation of a replica's announcement of its age recipient (1.4).
const RECIPIENT_DOMAIN: &[u8] = b"msite recipient v1\0";

/// The bytes a replica signs to announce its age recipient ([`wire::KeyCell::recipient`]):
/// the domain, the family, the replica and the recipient's UTF-8 text.
pub fn recipient_message(family: &wire::Id, replica: &wire::Id, recipient: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(RECIPIENT_DOMAIN.len() + 32 + recipient.len());
    m.extend_from_slice(RECIPIENT_DOMAIN);
    m.extend_from_slice(&family.0);
    m.extend_from_slice(&replica.0);
    m.extend_from_slice(recipient.as_bytes());
    m
}

/// Domain separation of a key rotation's proof.
const REKEY_DOMAIN: &[u8] = b"msite rekey v1\0";

/// The bytes the old key signs in a key rotation ([`wire::Op::RotateKey`]): the domain, the
/// family, the origin, the rotation entry's number (u64 LE), the hash of the entry before it
/// and the new key. The number and the previous hash bind the proof to its place in the chain,
/// so it cannot be copied into another entry.
pub fn rekey_message(
    family: &wire::Id,
    origin: &wire::Id,
    number: u64,
    prev: &wire::Hash,
    key: &wire::PublicKey,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(REKEY_DOMAIN.len() + 104);
    m.extend_from_slice(REKEY_DOMAIN);
    m.extend_from_slice(&family.0);
    m.extend_from_slice(&origin.0);
    m.extend_from_slice(&number.to_le_bytes());
    m.extend_from_slice(prev);
    m.extend_from_slice(key);
    m
}

/// Domain separation of a control record's signature.
const CONTROL_DOMAIN: &[u8] = b"msite control v1\0";

/// The bytes the owner of a control record signs ([`wire::Control::owner`]): the domain,
/// the family and the control's msgpack encoding with its signature all zeros.
pub fn control_message(family: &wire::Id, control: &wire::Control) -> Vec<u8> {
    let mut unsigned = control.clone();
    *unsigned.signature_mut() = wire::NO_SIGNATURE;
    domain_family_body(CONTROL_DOMAIN, family, &unsigned)
}

/// `domain || family id || the msgpack encoding of value`: the message of every statement a
/// replica signs for relays to carry (controls, reports, fork decisions). Encoding these
/// types into a `Vec` cannot fail (fixed fields, no maps with non-string keys).
fn domain_family_body<T: Serialize>(domain: &[u8], family: &wire::Id, value: &T) -> Vec<u8> {
    let body = rmp_serde::to_vec(value).expect("a signed statement always encodes");
    let mut m = Vec::with_capacity(domain.len() + 16 + body.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(&family.0);
    m.extend_from_slice(&body);
    m
}

/// Domain separation of a report's signature.
const REPORT_DOMAIN: &[u8] = b"msite report v1\0";

/// The bytes a replica signs for a report of its own row ([`wire::SignedReport`], 1.4): the
/// domain, the family and the report's msgpack encoding with its signature all zeros.
pub fn report_message(family: &wire::Id, report: &wire::SignedReport) -> Vec<u8> {
    let mut unsigned = report.clone();
    unsigned.signature = wire::NO_SIGNATURE;
    domain_family_body(REPORT_DOMAIN, family, &unsigned)
}

/// Domain separation of a fork repair decision's signature (1.5).
const DECISION_DOMAIN: &[u8] = b"msite fork decision v1\0";

/// The bytes the deciding replica signs for a fork repair decision
/// ([`wire::ForkDecision::signature`], 1.5): the domain, the family and the decision's msgpack
/// encoding with its signature all zeros (so left out: the decision's six 1.3 fields).
pub fn decision_message(family: &wire::Id, decision: &wire::ForkDecision) -> Vec<u8> {
    let mut unsigned = decision.clone();
    unsigned.signature = wire::NO_SIGNATURE;
    domain_family_body(DECISION_DOMAIN, family, &unsigned)
}

/// Whether a header carries a signed fork repair decision (a field of minor version 1.5).
pub fn uses_decision_signatures(h: &wire::Header) -> bool {
    h.fork_decisions.iter().any(wire::ForkDecision::is_signed)
}

/// Whether a header carries reports (a field of minor version 1.4).
pub fn uses_reports(h: &wire::Header) -> bool {
    !h.reports.is_empty()
}

/// A control record as format 1.0 encodes it: without the 1.2 signature.
#[derive(Serialize)]
enum ControlV10<'a> {
    RestoreRequest {
        replica: &'a wire::Id,
        incarnation: u64,
        row: &'a [wire::RowCell],
    },
    ProvisionalAck {
        acker: &'a wire::Id,
        replica: &'a wire::Id,
        incarnation: u64,
        held: u64,
    },
}

impl<'a> From<&'a wire::Control> for ControlV10<'a> {
    fn from(c: &'a wire::Control) -> Self {
        match c {
            wire::Control::RestoreRequest {
                replica,
                incarnation,
                row,
                ..
            } => ControlV10::RestoreRequest {
                replica,
                incarnation: *incarnation,
                row,
            },
            wire::Control::ProvisionalAck {
                acker,
                replica,
                incarnation,
                held,
                ..
            } => ControlV10::ProvisionalAck {
                acker,
                replica,
                incarnation: *incarnation,
                held: *held,
            },
        }
    }
}

/// The header as a 1.0 or 1.1 writer encodes it: the twelve fields of format 1.0, without
/// the fields 1.2 appended (which must then be empty), its controls without their signatures.
#[derive(Serialize)]
struct HeaderV10<'a> {
    family: &'a wire::Id,
    family_name: &'a str,
    sender: &'a wire::Id,
    sender_name: &'a str,
    sender_incarnation: u64,
    targets: &'a [wire::Target],
    bases: &'a [wire::Base],
    sender_row: &'a [wire::RowCell],
    controls: Vec<ControlV10<'a>>,
    created_ms: u64,
    new_replica: &'a wire::Id,
    comment: &'a str,
}

/// Whether the header uses a field of minor version 1.2.
pub(crate) fn uses_signed_fields(h: &wire::Header) -> bool {
    !h.keys.is_empty()
        || !h.heads.is_empty()
        || h.signature != wire::NO_SIGNATURE
        || h.controls
            .iter()
            .any(|c| *c.signature() != wire::NO_SIGNATURE)
}

/// Whether the header uses a field of minor version 1.4 (trust2: recipients in key cells).
pub(crate) fn uses_recipients(h: &wire::Header) -> bool {
    h.keys.iter().any(|k| k.recipient.is_some())
}

/// The header's bytes in a packet of minor version `minor`.
pub(crate) fn encode_header(
    h: &wire::Header,
    minor: u16,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    if minor >= crate::format::MINOR_SIGNED {
        return rmp_serde::to_vec(h);
    }
    rmp_serde::to_vec(&HeaderV10 {
        family: &h.family,
        family_name: &h.family_name,
        sender: &h.sender,
        sender_name: &h.sender_name,
        sender_incarnation: h.sender_incarnation,
        targets: &h.targets,
        bases: &h.bases,
        sender_row: &h.sender_row,
        controls: h.controls.iter().map(ControlV10::from).collect(),
        created_ms: h.created_ms,
        new_replica: &h.new_replica,
        comment: &h.comment,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The specified hash, written out: one BLAKE3 over the length-prefixed payloads.
    fn hash_of_concatenated_payloads(rows: &[(u8, Vec<u8>, Vec<u8>)]) -> wire::Hash {
        let mut all = Vec::new();
        for (space, key, value) in rows {
            let len = (crate::format::ROW_PREFIX_LEN + key.len() + value.len()) as u32;
            all.extend_from_slice(&len.to_le_bytes());
            all.push(*space);
            all.extend_from_slice(&(key.len() as u32).to_le_bytes());
            all.extend_from_slice(key);
            all.extend_from_slice(value);
        }
        *blake3::hash(&all).as_bytes()
    }

    /// Row lengths around the run's size: tiny rows, rows just under and over a run.
    fn row() -> impl Strategy<Value = (u8, Vec<u8>, Vec<u8>)> {
        let len = prop_oneof![
            0usize..64,
            HASH_RUN - 40..HASH_RUN + 40,
            0usize..3 * HASH_RUN
        ];
        (
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..40),
            len,
        )
            .prop_map(|(space, key, n)| (space, key, vec![space; n]))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_snapshot_hash_is_blake3_of_the_payloads_however_they_are_buffered(
            rows in proptest::collection::vec(row(), 0..12),
        ) {
            let mut h = SnapshotHasher::new();
            for (space, key, value) in &rows {
                h.row(*space, key, value);
            }
            let (n, hash) = h.finish();
            prop_assert_eq!(n, rows.len() as u64);
            prop_assert_eq!(hash, hash_of_concatenated_payloads(&rows));
        }
    }
}
