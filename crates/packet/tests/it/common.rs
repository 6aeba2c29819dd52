//! Shared sample values: ids, headers, entries and records used across the test modules.

use msite_packet::wire::*;
use msite_packet::{encode_entry, entry_hash, Record};

/// A deterministic id from a small number.
pub fn id(n: u8) -> Id {
    let mut b = [0u8; 16];
    b[0] = n;
    b[15] = 0xA0 | (n & 0x0f);
    Id(b)
}

/// A deterministic 32-byte hash-like value.
pub fn h(n: u8) -> Hash {
    let mut b = [n; 32];
    b[0] = 0xEE;
    b
}

/// An update header from replica 2 to replica 3 with two origins and two controls.
pub fn update_header() -> Header {
    Header {
        family: id(1),
        family_name: "fam".into(),
        sender: id(2),
        sender_name: "boston".into(),
        sender_incarnation: 0,
        targets: vec![Target {
            replica: id(3),
            incarnation: 1_700_000_000_000,
            packet_seq: 7,
            ack_incarnation: 1_700_000_000_000,
            applied_seq: 5,
            seen_seq: 6,
        }],
        bases: vec![
            Base {
                origin: id(2),
                number: 10,
                hash: h(10),
            },
            Base {
                origin: id(3),
                number: 0,
                hash: [0; 32],
            },
        ],
        sender_row: vec![
            RowCell {
                origin: id(2),
                number: 13,
            },
            RowCell {
                origin: id(3),
                number: 4,
            },
        ],
        controls: vec![
            Control::RestoreRequest {
                replica: id(4),
                incarnation: 1_700_000_123_456,
                row: vec![RowCell {
                    origin: id(4),
                    number: 99,
                }],
                signature: NO_SIGNATURE,
            },
            Control::ProvisionalAck {
                acker: id(2),
                replica: id(4),
                incarnation: 1_700_000_123_456,
                held: 101,
                signature: NO_SIGNATURE,
            },
        ],
        created_ms: 1_700_000_200_000,
        new_replica: Id::default(),
        comment: "nightly sync".into(),
        keys: vec![],
        heads: vec![],
        signature: msite_packet::wire::NO_SIGNATURE,
        fork_decisions: vec![],
        reports: vec![],
        snapshot: 0,
    }
}

/// An entry with a correct hash.
pub fn entry(origin: Id, number: u64, prev: Hash, op: Op) -> Entry {
    let mut e = Entry {
        origin,
        number,
        incarnation: 0,
        time_ms: 1_700_000_000_000 + number,
        prev,
        op,
        hash: [0; 32],
    };
    e.hash = entry_hash(&e);
    e
}

/// A chain of check-in entries from `origin`, each with its blob.
pub fn checkins(origin: Id, from: u64, n: u64, size: usize) -> Vec<(Entry, Vec<u8>)> {
    let mut prev = [0u8; 32];
    let mut out = Vec::new();
    for number in from..from + n {
        let content = noise(number ^ origin.0[0] as u64, size);
        let e = entry(
            origin,
            number,
            prev,
            Op::Checkin {
                elem: ObjId { origin, number: 1 },
                brtype: ObjId { origin, number: 2 },
                version: number,
                content: *blake3::hash(&content).as_bytes(),
                size: content.len() as u64,
                author: "alice".into(),
                comment: format!("change {number}"),
            },
        );
        prev = e.hash;
        out.push((e, content));
    }
    out
}

/// Records for entries with their blobs (blob first, then the entry).
pub fn records_of(items: &[(Entry, Vec<u8>)]) -> Vec<Record> {
    let mut v = Vec::new();
    for (e, c) in items {
        v.push(Record::Blob {
            hash: *blake3::hash(c).as_bytes(),
            bytes: c.clone(),
        });
        v.push(Record::Entry(encode_entry(e)));
    }
    v
}

/// `n` deterministic pseudo-random (incompressible) bytes.
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
