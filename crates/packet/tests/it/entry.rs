//! Canonical entry encoding: exact bytes, round trip, rejection of non-canonical input, hash.

use crate::common::*;
use msite_packet::wire::*;
use msite_packet::*;

#[test]
fn entry_round_trip_and_hash() {
    let e = entry(id(2), 1, [0; 32], Op::MkBrType { name: "dev".into() });
    let b = encode_entry(&e);
    assert_eq!(decode_entry(&b).unwrap(), e);
    assert_eq!(canonical_entry_hash(&b).unwrap(), entry_hash(&e));
    assert_eq!(canonical_entry_stored_hash(&b).unwrap(), e.hash);
    // The hash does not depend on the stored hash field.
    let mut z = e.clone();
    z.hash = [7; 32];
    assert_eq!(entry_hash(&z), e.hash);
}

#[test]
fn entry_rejects_trailing_bytes() {
    let e = entry(
        id(2),
        1,
        [0; 32],
        Op::RmName {
            elem: ObjId {
                origin: id(2),
                number: 5,
            },
        },
    );
    let mut b = encode_entry(&e);
    let n = b.len();
    b.push(0);
    match decode_entry(&b) {
        Err(DecodeError::TrailingBytes { offset }) => assert_eq!(offset, n as u64),
        other => panic!("expected TrailingBytes, got {other:?}"),
    }
}
