//! Golden packets: committed files under `tests/fixtures/v1/` that every later release must
//! keep decoding to exactly these values, and that the encoder must reproduce byte for byte.
//!
//! The files are written only on request: `MSITE_BLESS=1 cargo test -p msite-packet golden`.
//! Never re-bless a fixture of a released format version: add a new one instead.

use std::path::{Path, PathBuf};

use crate::common::*;
use msite_packet::wire::*;
use msite_packet::*;

/// The fixture directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn blessing() -> bool {
    std::env::var_os("MSITE_BLESS").is_some_and(|v| v == "1")
}

/// One golden packet: how it is made and what it must decode to.
pub struct Golden {
    /// File stem.
    pub stem: &'static str,
    /// Packet kind.
    pub kind: Kind,
    /// Header.
    pub header: Header,
    /// Records in order.
    pub records: Vec<Record>,
    /// Write options.
    pub opts: WriteOptions,
    /// The part count the fixture must have.
    pub parts: u32,
}

fn oref(kind: ObjectKind, o: Id, n: u64) -> ObjectRef {
    ObjectRef {
        kind,
        id: ObjId {
            origin: o,
            number: n,
        },
        sub: ObjId::default(),
    }
}

/// Every Op variant, spread over three origins with proper hash chains.
fn update_entries() -> Vec<Entry> {
    let (a, b, c) = (id(2), id(3), id(4));
    let elem = ObjId {
        origin: a,
        number: 1,
    };
    let main = ObjId {
        origin: a,
        number: 2,
    };
    let lb = ObjId {
        origin: b,
        number: 5,
    };
    let mut out = Vec::new();
    let chain = |o: Id, first: u64, ops: Vec<Op>, out: &mut Vec<Entry>| {
        let mut prev = if first == 1 { [0; 32] } else { h(first as u8) };
        for (k, op) in ops.into_iter().enumerate() {
            let e = entry(o, first + k as u64, prev, op);
            prev = e.hash;
            out.push(e);
        }
    };
    chain(
        a,
        11,
        vec![
            Op::MkBrType {
                name: "boston_dev".into(),
            },
            Op::MkElem {
                path: "src/main.c".into(),
                main,
            },
            Op::Checkin {
                elem,
                brtype: main,
                version: 1,
                content: *blake3::hash(&blob(1)).as_bytes(),
                size: blob(1).len() as u64,
                author: "alice".into(),
                comment: "first".into(),
            },
            Op::Checkin {
                elem,
                brtype: main,
                version: 2,
                content: *blake3::hash(&blob(2)).as_bytes(),
                size: blob(2).len() as u64,
                author: "alice".into(),
                comment: "second, with a comment long enough to cross a chunk boundary \
                          in the body of this golden packet"
                    .into(),
            },
            Op::ChMaster {
                object: oref(ObjectKind::BrType, a, 11),
                master: b,
            },
        ],
        &mut out,
    );
    chain(
        b,
        5,
        vec![
            Op::MkLbType {
                name: "REL1".into(),
            },
            Op::MkLabel {
                lbtype: lb,
                elem,
                brtype: main,
                version: 2,
            },
            Op::RmLabel { lbtype: lb, elem },
            Op::ReqMaster {
                object: ObjectRef {
                    kind: ObjectKind::Branch,
                    id: elem,
                    sub: main,
                },
                requester: b,
            },
            Op::RestoreAck {
                replica: c,
                incarnation: 1_700_000_123_456,
                held: 101,
            },
        ],
        &mut out,
    );
    chain(
        c,
        1,
        vec![
            Op::CreateReplica {
                replica: id(5),
                name: "tokyo".into(),
                row: vec![RowCell {
                    origin: c,
                    number: 1,
                }],
            },
            Op::RmName { elem },
            Op::RestoreComplete {
                incarnation: 1_700_000_123_456,
                row: vec![
                    RowCell {
                        origin: a,
                        number: 15,
                    },
                    RowCell {
                        origin: c,
                        number: 2,
                    },
                ],
            },
        ],
        &mut out,
    );
    out
}

fn blob(n: u64) -> Vec<u8> {
    noise(n, 700 + n as usize * 100)
}

/// The golden packets.
pub fn goldens() -> Vec<Golden> {
    let mut update = Vec::new();
    for e in update_entries() {
        if let Op::Checkin { content, size, .. } = &e.op {
            let n = if *size == 800 { 1 } else { 2 };
            update.push(Record::Blob {
                hash: *content,
                bytes: blob(n),
            });
        }
        update.push(Record::Entry(encode_entry(&e)));
    }

    let mut creation_header = update_header();
    creation_header.targets = vec![Target {
        replica: id(5),
        incarnation: 0,
        packet_seq: 1,
        ack_incarnation: 0,
        applied_seq: 0,
        seen_seq: 0,
    }];
    creation_header.controls = vec![];
    creation_header.bases = vec![];
    creation_header.new_replica = id(5);
    creation_header.comment = "mkreplica tokyo".into();
    let f = id(1);
    let a = id(2);
    let e1 = entry(
        a,
        1,
        [0; 32],
        Op::CreateFamily {
            family: f,
            family_name: "fam".into(),
            replica_name: "boston".into(),
        },
    );
    let e2 = entry(
        a,
        2,
        e1.hash,
        Op::MkBrType {
            name: "main".into(),
        },
    );
    let e3 = entry(
        a,
        3,
        e2.hash,
        Op::CreateReplica {
            replica: id(5),
            name: "tokyo".into(),
            row: vec![RowCell {
                origin: a,
                number: 3,
            }],
        },
    );
    let creation = vec![
        Record::Entry(encode_entry(&e1)),
        Record::Entry(encode_entry(&e2)),
        Record::Entry(encode_entry(&e3)),
    ];

    let split = records_of(&checkins(id(2), 1, 24, 300));
    let pieces = piece_records();
    let signed = signed_golden(update.clone());
    let snapshot = snapshot_golden();
    let recipients = recipients_golden(update.clone());
    let decision = decision_golden(update.clone());

    vec![
        Golden {
            stem: "update",
            kind: Kind::Update,
            header: update_header(),
            records: update,
            opts: WriteOptions {
                chunk_size: 512,
                ..WriteOptions::new(id(0x71))
            },
            parts: 1,
        },
        Golden {
            stem: "creation",
            kind: Kind::ReplicaCreation,
            header: creation_header,
            records: creation,
            opts: WriteOptions {
                zstd_level: 0,
                ..WriteOptions::new(id(0x72))
            },
            parts: 1,
        },
        Golden {
            stem: "split",
            kind: Kind::Update,
            header: update_header(),
            records: split,
            opts: WriteOptions {
                max_part_size: Some(5000),
                chunk_size: 1024,
                ..WriteOptions::new(id(0x73))
            },
            parts: 3,
        },
        signed,
        Golden {
            stem: "pieces",
            kind: Kind::Update,
            header: update_header(),
            records: pieces,
            opts: WriteOptions {
                chunk_size: 1024,
                minor: 1,
                ..WriteOptions::new(id(0x74))
            },
            parts: 1,
        },
        Golden {
            stem: "delta",
            kind: Kind::Update,
            header: update_header(),
            records: delta_records(),
            opts: WriteOptions {
                chunk_size: 1024,
                minor: 3,
                ..WriteOptions::new(id(0x76))
            },
            parts: 1,
        },
        snapshot,
        recipients,
        decision,
    ]
}

/// Format 1.4: a snapshot creation packet of replica `id(5)` made by `id(2)`: its header
/// marks the snapshot (layout 1) and names the chain head it starts from; the records are two
/// object-base rows, a content row and a chain base, then the snapshot end signed with
/// [`signed_fixture_key`] over the rows' hash.
fn snapshot_golden() -> Golden {
    use ed25519_dalek::Signer;
    let key = signed_fixture_key();
    let mut header = update_header();
    header.targets = vec![];
    header.bases = vec![];
    header.controls = vec![];
    header.new_replica = id(5);
    header.comment = "mkreplica tokyo".into();
    header.keys = vec![KeyCell {
        replica: id(2),
        key: key.verifying_key().to_bytes(),
        recipient: None,
    }];
    header.snapshot = 1;
    let rows = vec![
        Record::Row {
            space: 1,
            key: b"Rtokyo".to_vec(),
            value: vec![5; 16],
        },
        Record::Row {
            space: 1,
            key: b"Vsome-version".to_vec(),
            value: b"value".to_vec(),
        },
        Record::Row {
            space: 2,
            key: vec![7; 32],
            value: blob(1),
        },
        Record::Row {
            space: 4,
            key: id(2).0.to_vec(),
            value: [[0, 0, 0, 0, 0, 0, 0, 3].as_slice(), &[9; 32], &[0; 8]].concat(),
        },
    ];
    let opts = WriteOptions {
        chunk_size: 1024,
        minor: 4,
        ..WriteOptions::new(id(0x77))
    };
    let mut hasher = sign::SnapshotHasher::new();
    for r in &rows {
        if let Record::Row { space, key, value } = r {
            hasher.row(*space, key, value);
        }
    }
    let (count, hash) = hasher.finish();
    let msg = sign::snapshot_message(&header.family, &opts.packet_id, count, &hash);
    let mut records = rows;
    records.push(Record::SnapshotEnd {
        rows: count,
        hash,
        signature: key.sign(&msg).to_bytes(),
    });
    let msg = sign::header_message(&opts.packet_id, Kind::ReplicaCreation, &header);
    header.signature = key.sign(&msg).to_bytes();
    Golden {
        stem: "snapshot",
        kind: Kind::ReplicaCreation,
        header,
        records,
        opts,
        parts: 1,
    }
}

/// The age recipient the `recipients` fixture announces for its sender.
pub const FIXTURE_RECIPIENT: &str =
    "age1gzlkqvnht4yefn7thg3634sx94ppagtcqxk8pydhkknhsf67ketspam832";

/// Format 1.4 (trust2): the `signed` packet whose sender's key cell also announces its age
/// recipient, signed by that key over `sign::recipient_message` (SPEC §8, "1.4: replicated
/// age recipients"), with [`signed_fixture_key`].
fn recipients_golden(records: Vec<Record>) -> Golden {
    use ed25519_dalek::Signer;
    let mut g = signed_golden(records);
    let key = signed_fixture_key();
    g.stem = "recipients";
    g.opts.minor = 4;
    g.opts.packet_id = id(0x78);
    let cell = &mut g.header.keys[0];
    let msg = sign::recipient_message(&g.header.family, &cell.replica, FIXTURE_RECIPIENT);
    cell.recipient = Some(msite_packet::wire::SignedRecipient {
        recipient: FIXTURE_RECIPIENT.into(),
        signature: key.sign(&msg).to_bytes(),
        introduction: None,
    });
    resign_header(&mut g, &key);
    g
}

/// Signs `g`'s header again with `key` (the `signed` fixture's), after a field of it changed.
fn resign_header(g: &mut Golden, key: &ed25519_dalek::SigningKey) {
    use ed25519_dalek::Signer;
    g.header.signature = [0; 64];
    let msg = sign::header_message(&g.opts.packet_id, Kind::Update, &g.header);
    g.header.signature = key.sign(&msg).to_bytes();
}

/// The decider of the `decision` fixture's decision: the `signed` fixture's sender, whose key
/// is [`signed_fixture_key`].
pub fn decision_fixture_decision(decided_by: Id) -> ForkDecision {
    ForkDecision {
        origin: id(4),
        number: 42,
        hash: h(7),
        keep: true,
        decided_by,
        decided_ms: 1_700_000_500_000,
        signature: NO_SIGNATURE,
    }
}

/// Format 1.5: the `signed` packet carrying one fork repair decision of its sender, signed by
/// the sender's key over `sign::decision_message` (SPEC §6, "1.5: signed fork decisions").
fn decision_golden(records: Vec<Record>) -> Golden {
    use ed25519_dalek::Signer;
    let mut g = signed_golden(records);
    let key = signed_fixture_key();
    g.stem = "decision";
    g.opts.minor = 5;
    g.opts.packet_id = id(0x79);
    let mut d = decision_fixture_decision(g.header.sender);
    d.signature = key
        .sign(&sign::decision_message(&g.header.family, &d))
        .to_bytes();
    g.header.fork_decisions = vec![d];
    resign_header(&mut g, &key);
    g
}

/// Format 1.3: version 1 of a file whole, its entry, version 2 as a delta against version 1,
/// its entry.
fn delta_records() -> Vec<Record> {
    let (v1, v2, delta) = crate::delta::versions_and_delta();
    let checkin = |number: u64, prev: Hash, data: &[u8]| {
        let op = Op::Checkin {
            elem: ObjId {
                origin: id(2),
                number: 1,
            },
            brtype: ObjId {
                origin: id(2),
                number: 2,
            },
            version: number,
            content: *blake3::hash(data).as_bytes(),
            size: data.len() as u64,
            author: "alice".into(),
            comment: String::new(),
        };
        entry(id(2), number, prev, op)
    };
    let e1 = checkin(1, [0; 32], &v1);
    let e2 = checkin(2, e1.hash, &v2);
    vec![
        Record::Blob {
            hash: *blake3::hash(&v1).as_bytes(),
            bytes: v1,
        },
        Record::Entry(encode_entry(&e1)),
        delta,
        Record::Entry(encode_entry(&e2)),
    ]
}

/// The Ed25519 key the `signed` fixture is signed with (the sender, `id(2)`).
pub fn signed_fixture_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x42; 32])
}

/// Format 1.2: the update packet with the sender's key listed, a chain head at its last
/// entry signed by the origin, and the header signed by the sender (SPEC §8), all with
/// [`signed_fixture_key`].
fn signed_golden(records: Vec<Record>) -> Golden {
    use ed25519_dalek::Signer;
    let key = signed_fixture_key();
    let mut header = update_header();
    header.keys = vec![KeyCell::new(id(2), key.verifying_key().to_bytes())];
    let last = update_entries().pop().expect("entries");
    let msg = sign::head_message(&header.family, &last.origin, last.number, &last.hash);
    header.heads = vec![SignedHead {
        origin: last.origin,
        number: last.number,
        hash: last.hash,
        signature: key.sign(&msg).to_bytes(),
    }];
    let opts = WriteOptions {
        chunk_size: 1024,
        minor: 2,
        ..WriteOptions::new(id(0x75))
    };
    let msg = sign::header_message(&opts.packet_id, Kind::Update, &header);
    header.signature = key.sign(&msg).to_bytes();
    Golden {
        stem: "signed",
        kind: Kind::Update,
        header,
        records,
        opts,
        parts: 1,
    }
}

/// Format 1.1: one content carried as three content pieces, then the entry that refers to it.
fn piece_records() -> Vec<Record> {
    let content = noise(9, 2500);
    let hash = *blake3::hash(&content).as_bytes();
    let mut out: Vec<Record> = content
        .chunks(1000)
        .enumerate()
        .map(|(i, b)| Record::BlobPiece {
            hash,
            total: content.len() as u64,
            offset: i as u64 * 1000,
            bytes: b.to_vec(),
        })
        .collect();
    let e = entry(
        id(2),
        1,
        [0; 32],
        Op::Checkin {
            elem: ObjId {
                origin: id(2),
                number: 1,
            },
            brtype: ObjId {
                origin: id(2),
                number: 2,
            },
            version: 1,
            content: hash,
            size: content.len() as u64,
            author: "alice".into(),
            comment: "big".into(),
        },
    );
    out.push(Record::Entry(encode_entry(&e)));
    out
}

/// Encodes a golden packet in memory; returns its parts with their file names.
pub fn encode(g: &Golden) -> Vec<(String, Vec<u8>)> {
    let mut w = MemPacketWriter::new(g.kind, &g.header, g.opts.clone()).unwrap();
    for r in &g.records {
        w.push_record(r).unwrap();
    }
    let (parts, stats) = w.finish().unwrap();
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    let n = parts.len() as u32;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, b)| (part_file_name(g.stem, i as u32 + 1, n), b))
        .collect()
}

/// The committed files of every golden packet, in order.
pub fn fixture_files() -> Vec<PathBuf> {
    goldens()
        .iter()
        .flat_map(|g| (1..=g.parts).map(|i| fixtures().join(part_file_name(g.stem, i, g.parts))))
        .collect()
}

#[test]
fn golden_fixtures_encode_byte_for_byte() {
    for g in goldens() {
        let parts = encode(&g);
        assert_eq!(
            parts.len() as u32,
            g.parts,
            "{}: part count changed",
            g.stem
        );
        for (name, bytes) in parts {
            let path = fixtures().join(&name);
            if blessing() {
                std::fs::create_dir_all(fixtures()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let committed =
                std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                committed == bytes,
                "{name}: the encoder no longer reproduces the committed fixture"
            );
        }
    }
}

#[test]
fn golden_fixtures_decode_to_exact_values() {
    for g in goldens() {
        let paths: Vec<PathBuf> = (1..=g.parts)
            .map(|i| fixtures().join(part_file_name(g.stem, i, g.parts)))
            .collect();
        // Each part alone.
        for (i, p) in paths.iter().enumerate() {
            let r = open(p).unwrap();
            assert_eq!(
                *r.info(),
                PacketInfo {
                    version: FormatVersion {
                        major: 1,
                        minor: g.opts.minor
                    },
                    kind: g.kind,
                    part: i as u32 + 1,
                    parts: g.parts,
                    packet_id: g.opts.packet_id,
                }
            );
            assert_eq!(*r.header(), g.header);
        }
        // The whole logical packet, from its files and from memory.
        let lp = logical_packet(&paths).unwrap();
        let got: Vec<Record> = lp.records().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, g.records, "{}", g.stem);
        let bytes: Vec<Vec<u8>> = paths
            .iter()
            .rev()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let (info, header, recs) = decode_parts(bytes.iter().map(|b| b.as_slice())).unwrap();
        assert_eq!(
            (info.packet_id, info.parts, header, recs),
            (
                g.opts.packet_id,
                g.parts,
                g.header.clone(),
                g.records.clone()
            )
        );
    }
}

#[test]
fn golden_update_entries_decode_to_exact_values() {
    let path = fixtures().join("update.msp");
    let es: Vec<Entry> = entries(&path).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(es, update_entries());
    for e in &es {
        assert_eq!(entry_hash(e), e.hash);
    }
}

#[test]
fn the_snapshot_fixtures_end_verifies_over_its_rows() {
    // SPEC §4 (1.4): the snapshot end's count and hash are those of the rows before it, and
    // its signature verifies over the snapshot message; one changed row byte changes the hash.
    use ed25519_dalek::{Signature, Verifier};
    let r = open(fixtures().join("snapshot.msp")).unwrap();
    let (h, pid) = (r.header().clone(), r.info().packet_id);
    assert_eq!(h.snapshot, 1);
    let recs: Vec<Record> = r.records().collect::<Result<_, _>>().unwrap();
    let mut hasher = sign::SnapshotHasher::new();
    let mut tampered = sign::SnapshotHasher::new();
    for rec in &recs {
        if let Record::Row { space, key, value } = rec {
            hasher.row(*space, key, value);
            tampered.row(*space, key, &[value.as_slice(), b"x"].concat());
        }
    }
    let Some(Record::SnapshotEnd {
        rows,
        hash,
        signature,
    }) = recs.last()
    else {
        panic!("the snapshot fixture does not end with a snapshot-end record");
    };
    assert_eq!(hasher.finish(), (*rows, *hash));
    assert_ne!(tampered.finish().1, *hash);
    let vk = signed_fixture_key().verifying_key();
    let msg = sign::snapshot_message(&h.family, &pid, *rows, hash);
    vk.verify(&msg, &Signature::from_bytes(signature)).unwrap();
}

#[test]
fn the_signed_fixtures_signatures_verify_over_the_spec_messages() {
    // SPEC §8's messages, built here from the decoded fixture: the header signature and the
    // chain head verify with the key the header lists, and fail once a signed byte changes.
    use ed25519_dalek::{Signature, Verifier};
    let r = open(fixtures().join("signed.msp")).unwrap();
    let (h, pid) = (r.header().clone(), r.info().packet_id);
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&h.keys[0].key).unwrap();
    assert_eq!(vk, signed_fixture_key().verifying_key());
    let msg = sign::header_message(&pid, Kind::Update, &h);
    vk.verify(&msg, &Signature::from_bytes(&h.signature))
        .unwrap();
    let head = h.heads[0];
    let hm = sign::head_message(&h.family, &head.origin, head.number, &head.hash);
    vk.verify(&hm, &Signature::from_bytes(&head.signature))
        .unwrap();
    let mut acked = h.clone();
    acked.targets[0].applied_seq += 1;
    let forged = sign::header_message(&pid, Kind::Update, &acked);
    assert!(vk
        .verify(&forged, &Signature::from_bytes(&h.signature))
        .is_err());
    let other = sign::header_message(&pid, Kind::ReplicaCreation, &h);
    assert!(vk
        .verify(&other, &Signature::from_bytes(&h.signature))
        .is_err());
}

#[test]
fn the_recipients_fixtures_recipient_verifies_over_the_spec_message() {
    // SPEC §8 (1.4): the recipient in the sender's key cell is signed by that key over
    // `recipient_message`; a changed recipient no longer verifies; the header signature
    // covers the cell.
    use ed25519_dalek::{Signature, Verifier};
    let r = open(fixtures().join("recipients.msp")).unwrap();
    assert_eq!(r.info().version.minor, 4);
    let (h, pid) = (r.header().clone(), r.info().packet_id);
    let cell = &h.keys[0];
    let rcpt = cell.recipient.as_ref().expect("a recipient");
    assert_eq!(rcpt.recipient, FIXTURE_RECIPIENT);
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&cell.key).unwrap();
    let sig = Signature::from_bytes(&rcpt.signature);
    let msg = sign::recipient_message(&h.family, &cell.replica, &rcpt.recipient);
    vk.verify(&msg, &sig).unwrap();
    let other = sign::recipient_message(&h.family, &cell.replica, "age1other");
    assert!(vk.verify(&other, &sig).is_err());
    let msg = sign::header_message(&pid, Kind::Update, &h);
    vk.verify(&msg, &Signature::from_bytes(&h.signature))
        .unwrap();
}

#[test]
fn the_decision_fixtures_decision_verifies_over_the_spec_message() {
    // SPEC §6 (1.5): the decision is signed by its decider over `decision_message`; a decision
    // altered in any field (here: the timeline kept) no longer verifies.
    use ed25519_dalek::{Signature, Verifier};
    let r = open(fixtures().join("decision.msp")).unwrap();
    assert_eq!(r.info().version.minor, 5);
    let h = r.header().clone();
    let d = &h.fork_decisions[0];
    assert_eq!(d.decided_by, h.sender);
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&h.keys[0].key).unwrap();
    let sig = Signature::from_bytes(&d.signature);
    vk.verify(&sign::decision_message(&h.family, d), &sig)
        .unwrap();
    let flipped = ForkDecision {
        keep: !d.keep,
        ..d.clone()
    };
    assert!(vk
        .verify(&sign::decision_message(&h.family, &flipped), &sig)
        .is_err());
}
