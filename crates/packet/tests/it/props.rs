//! Property tests: canonical entry encoding round trip and hash stability; packet encode/decode
//! round trip for arbitrary headers, records, chunk sizes, compression levels and part limits.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::spec::{rec, Raw};
use msite_packet::wire::*;
use msite_packet::*;

fn any_id() -> impl Strategy<Value = Id> {
    prop_oneof![Just(Id::default()), any::<[u8; 16]>().prop_map(Id)]
}

fn any_hash() -> impl Strategy<Value = Hash> {
    prop_oneof![Just([0u8; 32]), any::<[u8; 32]>()]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0..200u64, any::<u64>(), Just(u64::MAX)]
}

fn any_str() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_/.]{0,12}", any::<String>(), "x{30,300}"]
}

fn any_objid() -> impl Strategy<Value = ObjId> {
    (any_id(), any_u64()).prop_map(|(origin, number)| ObjId { origin, number })
}

fn any_row() -> impl Strategy<Value = Row> {
    vec(
        (any_id(), any_u64()).prop_map(|(origin, number)| RowCell { origin, number }),
        0..4,
    )
}

fn any_oref() -> impl Strategy<Value = ObjectRef> {
    let kind = prop_oneof![
        Just(ObjectKind::Replica),
        Just(ObjectKind::BrType),
        Just(ObjectKind::LbType),
        Just(ObjectKind::Element),
        Just(ObjectKind::Branch)
    ];
    (kind, any_objid(), any_objid()).prop_map(|(kind, id, sub)| ObjectRef { kind, id, sub })
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any_id(), any_str(), any_str()).prop_map(|(family, family_name, replica_name)| {
            Op::CreateFamily {
                family,
                family_name,
                replica_name,
            }
        }),
        (any_id(), any_str(), any_row()).prop_map(|(replica, name, row)| Op::CreateReplica {
            replica,
            name,
            row
        }),
        any_str().prop_map(|name| Op::MkBrType { name }),
        any_str().prop_map(|name| Op::MkLbType { name }),
        (any_str(), any_objid()).prop_map(|(path, main)| Op::MkElem { path, main }),
        (
            any_objid(),
            any_objid(),
            any_u64(),
            any_hash(),
            any_u64(),
            any_str(),
            any_str()
        )
            .prop_map(|(elem, brtype, version, content, size, author, comment)| {
                Op::Checkin {
                    elem,
                    brtype,
                    version,
                    content,
                    size,
                    author,
                    comment,
                }
            }),
        (any_objid(), any_objid(), any_objid(), any_u64()).prop_map(
            |(lbtype, elem, brtype, version)| Op::MkLabel {
                lbtype,
                elem,
                brtype,
                version
            }
        ),
        (any_objid(), any_objid()).prop_map(|(lbtype, elem)| Op::RmLabel { lbtype, elem }),
        any_objid().prop_map(|elem| Op::RmName { elem }),
        (any_oref(), any_id()).prop_map(|(object, master)| Op::ChMaster { object, master }),
        (any_oref(), any_id()).prop_map(|(object, requester)| Op::ReqMaster { object, requester }),
        (any_id(), any_u64(), any_u64()).prop_map(|(replica, incarnation, held)| Op::RestoreAck {
            replica,
            incarnation,
            held
        }),
        (any_u64(), any_row())
            .prop_map(|(incarnation, row)| Op::RestoreComplete { incarnation, row }),
        (any_id(), any_u64()).prop_map(|(replica, last)| Op::RmReplica { replica, last }),
        (any_oref(), any_id()).prop_map(|(object, requester)| Op::DenyMaster { object, requester }),
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(key, a, b)| {
            let mut proof = [0; 64];
            proof[..32].copy_from_slice(&a);
            proof[32..].copy_from_slice(&b);
            Op::RotateKey { key, proof }
        }),
        (any_id(), any::<[u8; 32]>(), any_u64()).prop_map(|(replica, key, from)| Op::VouchKey {
            replica,
            key,
            from
        }),
        any::<bool>().prop_map(|always| Op::SealPolicy { always }),
    ]
}

fn any_entry() -> impl Strategy<Value = Entry> {
    (
        any_id(),
        any_u64(),
        any_u64(),
        any_u64(),
        any_hash(),
        any_op(),
        any_hash(),
    )
        .prop_map(
            |(origin, number, incarnation, time_ms, prev, op, hash)| Entry {
                origin,
                number,
                incarnation,
                time_ms,
                prev,
                op,
                hash,
            },
        )
}

fn any_control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (any_id(), any_u64(), any_row()).prop_map(|(replica, incarnation, row)| {
            Control::RestoreRequest {
                replica,
                incarnation,
                row,
                signature: NO_SIGNATURE,
            }
        }),
        (any_id(), any_id(), any_u64(), any_u64()).prop_map(
            |(acker, replica, incarnation, held)| Control::ProvisionalAck {
                acker,
                replica,
                incarnation,
                held,
                signature: NO_SIGNATURE,
            }
        ),
    ]
}

fn any_header() -> impl Strategy<Value = Header> {
    let target = (
        any_id(),
        any_u64(),
        any_u64(),
        any_u64(),
        any_u64(),
        any_u64(),
    )
        .prop_map(
            |(replica, incarnation, packet_seq, ack_incarnation, applied_seq, seen_seq)| Target {
                replica,
                incarnation,
                packet_seq,
                ack_incarnation,
                applied_seq,
                seen_seq,
            },
        );
    let base = (any_id(), any_u64(), any_hash()).prop_map(|(origin, number, hash)| Base {
        origin,
        number,
        hash,
    });
    (
        (any_id(), any_str(), any_id(), any_str(), any_u64()),
        (
            vec(target, 0..3),
            vec(base, 0..4),
            any_row(),
            vec(any_control(), 0..3),
        ),
        (any_u64(), any_id(), any_str()),
    )
        .prop_map(
            |(
                (family, family_name, sender, sender_name, sender_incarnation),
                (targets, bases, sender_row, controls),
                (created_ms, new_replica, comment),
            )| Header {
                family,
                family_name,
                sender,
                sender_name,
                sender_incarnation,
                targets,
                bases,
                sender_row,
                controls,
                created_ms,
                new_replica,
                comment,
                keys: vec![],
                heads: vec![],
                signature: NO_SIGNATURE,
                fork_decisions: vec![],
                reports: vec![],
                snapshot: 0,
            },
        )
}

/// A header of format 1.2: keys, chain heads and a signature besides the 1.0 fields.
fn any_signed_header() -> impl Strategy<Value = Header> {
    let rcpt = proptest::option::of(("[a-z0-9]{0,12}", any::<[u8; 32]>()).prop_map(|(r, s)| {
        let mut signature = [0; 64];
        signature[..32].copy_from_slice(&s);
        msite_packet::wire::SignedRecipient {
            recipient: r,
            signature,
            introduction: None,
        }
    }));
    let key = (any_id(), any::<[u8; 32]>(), rcpt).prop_map(|(replica, key, recipient)| KeyCell {
        recipient,
        ..KeyCell::new(replica, key)
    });
    let sig = vec(any::<u8>(), 64).prop_map(|v| <[u8; 64]>::try_from(v).unwrap());
    let head = (any_id(), any_u64(), any_hash(), sig.clone()).prop_map(
        |(origin, number, hash, signature)| SignedHead {
            origin,
            number,
            hash,
            signature,
        },
    );
    (any_header(), vec(key, 0..4), vec(head, 0..4), sig).prop_map(|(mut h, keys, heads, s)| {
        h.keys = keys;
        h.heads = heads;
        h.signature = s;
        for c in &mut h.controls {
            *c.signature_mut() = s;
        }
        h
    })
}

fn any_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        any_entry().prop_map(|e| Record::Entry(encode_entry(&e))),
        vec(any::<u8>(), 0..300).prop_map(Record::Entry),
        (any_hash(), vec(any::<u8>(), 0..3000))
            .prop_map(|(hash, bytes)| Record::Blob { hash, bytes }),
        (any_hash(), vec(0..3u8, 0..5000)).prop_map(|(hash, bytes)| Record::Blob { hash, bytes }),
    ]
}

fn any_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Update), Just(Kind::ReplicaCreation)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn entry_canonical_round_trip(e in any_entry()) {
        let b = encode_entry(&e);
        prop_assert_eq!(decode_entry(&b).unwrap(), e.clone());
        prop_assert_eq!(canonical_entry_hash(&b).unwrap(), entry_hash(&e));
        prop_assert_eq!(canonical_entry_stored_hash(&b).unwrap(), e.hash);
        let mut other = e.clone();
        other.hash = [0x5a; 32];
        prop_assert_eq!(entry_hash(&other), entry_hash(&e));
        // Any appended byte is refused.
        let mut longer = b.clone();
        longer.push(0);
        prop_assert!(decode_entry(&longer).is_err());
    }

    #[test]
    fn entry_hash_changes_with_every_hashed_field(e in any_entry(), n in 1..u64::MAX) {
        let base = entry_hash(&e);
        let mut x = e.clone(); x.number = x.number.wrapping_add(n); prop_assert_ne!(entry_hash(&x), base);
        let mut x = e.clone(); x.incarnation = x.incarnation.wrapping_add(n); prop_assert_ne!(entry_hash(&x), base);
        let mut x = e.clone(); x.time_ms = x.time_ms.wrapping_add(n); prop_assert_ne!(entry_hash(&x), base);
        let mut x = e.clone(); x.prev[7] ^= 1; prop_assert_ne!(entry_hash(&x), base);
        let mut x = e.clone(); x.origin.0[3] ^= 1; prop_assert_ne!(entry_hash(&x), base);
    }

    #[test]
    fn packet_round_trip(
        kind in any_kind(),
        header in any_header(),
        records in vec(any_record(), 0..40),
        chunk_size in prop_oneof![1..64usize, 64..5000usize],
        zstd_level in prop_oneof![Just(0), Just(1), Just(3), Just(-5)],
        id in any::<[u8; 16]>(),
    ) {
        let opts = WriteOptions { chunk_size, zstd_level, ..WriteOptions::new(Id(id)) };
        let bytes = encode_to_vec(kind, &header, records.clone(), &opts).unwrap();
        let (info, h, got) = decode_from_slice(&bytes).unwrap();
        prop_assert_eq!(info, PacketInfo { version: FormatVersion { major: 1, minor: 0 }, kind, part: 1, parts: 1, packet_id: Id(id) });
        prop_assert_eq!(h, header);
        prop_assert_eq!(got, records.clone());
        // Deterministic.
        prop_assert!(encode_to_vec(kind, &decode_from_slice(&bytes).unwrap().1, records, &opts).unwrap() == bytes);
    }

    #[test]
    fn signed_packet_round_trip(
        kind in any_kind(),
        header in any_signed_header(),
        records in vec(any_record(), 0..10),
        id in any::<[u8; 16]>(),
    ) {
        // Recipients in key cells (1.4) need 1.4; a 1.2 or 1.3 writer refuses them.
        let recipients = header.keys.iter().any(|k| k.recipient.is_some());
        let minor = if recipients { 4 } else { 2 };
        let opts = WriteOptions { minor, ..WriteOptions::new(Id(id)) };
        let bytes = encode_to_vec(kind, &header, records.clone(), &opts).unwrap();
        let three = WriteOptions { minor: 3, ..WriteOptions::new(Id(id)) };
        prop_assert_eq!(encode_to_vec(kind, &header, records.clone(), &three).is_err(), recipients);
        let (info, h, got) = decode_from_slice(&bytes).unwrap();
        prop_assert_eq!(info.version, FormatVersion { major: 1, minor });
        prop_assert_eq!(h, header.clone());
        prop_assert_eq!(got, records.clone());
        // A 1.1 writer cannot carry the signed fields; it refuses rather than drop them.
        let old = WriteOptions { minor: 1, ..WriteOptions::new(Id(id)) };
        let signed = !header.keys.is_empty() || !header.heads.is_empty() || header.signature != NO_SIGNATURE;
        prop_assert_eq!(encode_to_vec(kind, &header, records, &old).is_err(), signed);
    }

    #[test]
    fn split_packet_round_trip(
        header in any_header(),
        records in vec(any_record(), 1..40),
        chunk_size in 16..3000usize,
        slack in 200..20_000u64,
    ) {
        let header_len = rmp_serde::to_vec(&header).unwrap().len() as u64;
        let max = 48 + header_len + 4 + 56 + slack;
        let opts = WriteOptions { max_part_size: Some(max), chunk_size, ..WriteOptions::new(Id([9; 16])) };
        let mut w = MemPacketWriter::new(Kind::Update, &header, opts).unwrap();
        for r in &records {
            w.push_record(r).unwrap();
        }
        let (parts, stats) = w.finish().unwrap();
        prop_assert_eq!(stats.parts as usize, parts.len());
        for p in &parts {
            if stats.warnings.is_empty() {
                prop_assert!(p.len() as u64 <= max);
            }
        }
        let (info, h, got) = decode_parts(parts.iter().rev().map(|p| p.as_slice())).unwrap();
        prop_assert_eq!(info.parts as usize, parts.len());
        prop_assert_eq!(h, header);
        prop_assert_eq!(got, records);
    }

    #[test]
    fn tolerant_header_decoding_agrees_with_strict(header in any_header()) {
        // A packet claiming a newer minor version is decoded with the tolerant decoder; on a
        // header without extra fields it must give the same value.
        let mut raw = Raw::new(rmp_serde::to_vec(&header).unwrap(), &[rec(1, b"e")]);
        raw.minor = msite_packet::FORMAT_MINOR + 1;
        let (_, h, recs) = decode_from_slice(&raw.build()).unwrap();
        prop_assert_eq!(h, header);
        prop_assert_eq!(recs, vec![Record::Entry(b"e".to_vec())]);
    }
}

/// The entry hash of a fixed entry, pinned: changing it breaks every existing replica.
#[test]
fn entry_hash_is_pinned() {
    let e = Entry {
        origin: Id([1; 16]),
        number: 42,
        incarnation: 0,
        time_ms: 1_700_000_000_000,
        prev: [2; 32],
        op: Op::MkBrType {
            name: "main".into(),
        },
        hash: [0; 32],
    };
    let b = encode_entry(&e);
    let mut hashed = vec![0x96];
    hashed.extend_from_slice(&b[1..b.len() - 34]);
    assert_eq!(entry_hash(&e), *blake3::hash(&hashed).as_bytes());
    assert_eq!(hexbytes::encode(&b), PINNED_ENTRY_BYTES);
    assert_eq!(hexbytes::encode(&entry_hash(&e)), PINNED_ENTRY_HASH);
}

const PINNED_ENTRY_BYTES: &str = "97c410010101010101010101010101010101012a00cf0000018bcfe56800c420020202020202020202020202020202020202020202020202020202020202020281a84d6b42725479706591a46d61696ec4200000000000000000000000000000000000000000000000000000000000000000";
const PINNED_ENTRY_HASH: &str = "b9677943ffce005753e9b3579d4e2345c3877044605785bb660f608161350792";
