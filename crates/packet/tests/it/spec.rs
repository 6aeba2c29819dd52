//! The format as `SPEC.md` describes it, written out independently of the crate's encoder: a
//! minimal hand encoder (uncompressed chunks) used to check the byte layout, the extension
//! points of minor versions (appended fields, skippable records), and refusals that the real
//! encoder can never produce (absurd lengths, inconsistent trailers, critical unknown records).

use serde::Serialize;

use crate::common::*;
use msite_packet::wire::*;
use msite_packet::*;

/// A packet part built by hand.
pub struct Raw {
    pub major: u16,
    pub minor: u16,
    pub kind: u8,
    pub flags: u8,
    pub id: [u8; 16],
    pub part: u32,
    pub parts: u32,
    pub header: Vec<u8>,
    /// Record-stream bytes, cut into uncompressed chunks of this size.
    pub stream: Vec<u8>,
    pub chunk: usize,
    /// Record count written in the trailer.
    pub records: u64,
}

/// A record: tag, u32 LE length, payload.
pub fn rec(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

impl Raw {
    pub fn new(header: Vec<u8>, records: &[Vec<u8>]) -> Raw {
        Raw {
            major: 1,
            minor: 0,
            kind: 1,
            flags: 0,
            id: id(0x51).0,
            part: 1,
            parts: 1,
            header,
            stream: records.concat(),
            chunk: 64,
            records: records.len() as u64,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&[0x89, b'M', b'S', b'P', 0x0d, 0x0a, 0x1a, 0x0a]);
        b.extend_from_slice(&self.major.to_le_bytes());
        b.extend_from_slice(&self.minor.to_le_bytes());
        b.extend_from_slice(&[self.kind, self.flags, 0, 0]);
        b.extend_from_slice(&self.id);
        b.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.part.to_le_bytes());
        b.extend_from_slice(&self.parts.to_le_bytes());
        let crc = crc32c::crc32c(&b[..44]);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(&self.header);
        b.extend_from_slice(&crc32c::crc32c(&self.header).to_le_bytes());
        let mut chunks = 0u32;
        for c in self.stream.chunks(self.chunk) {
            let mut h = vec![1u8, 0, 0, 0];
            h.extend_from_slice(&(c.len() as u32).to_le_bytes());
            h.extend_from_slice(&(c.len() as u32).to_le_bytes());
            let crc = crc32c::crc32c_append(crc32c::crc32c(&h), c);
            b.extend_from_slice(&h);
            b.extend_from_slice(&crc.to_le_bytes());
            b.extend_from_slice(c);
            chunks += 1;
        }
        b.extend_from_slice(&[2, 0, 0, 0]);
        b.extend_from_slice(&self.records.to_le_bytes());
        b.extend_from_slice(&(self.stream.len() as u64).to_le_bytes());
        b.extend_from_slice(&chunks.to_le_bytes());
        let mut masked = b.clone();
        masked[40..48].fill(0);
        b.extend_from_slice(blake3::hash(&masked).as_bytes());
        b
    }
}

/// A control record as format 1.0 encodes it (variant name → its four or three fields).
#[derive(Serialize)]
enum Control10 {
    RestoreRequest {
        replica: Id,
        incarnation: u64,
        row: Row,
    },
    ProvisionalAck {
        acker: Id,
        replica: Id,
        incarnation: u64,
        held: u64,
    },
}

fn control10(c: Control) -> Control10 {
    match c {
        Control::RestoreRequest {
            replica,
            incarnation,
            row,
            ..
        } => Control10::RestoreRequest {
            replica,
            incarnation,
            row,
        },
        Control::ProvisionalAck {
            acker,
            replica,
            incarnation,
            held,
            ..
        } => Control10::ProvisionalAck {
            acker,
            replica,
            incarnation,
            held,
        },
    }
}

/// The header as format 1.0 encodes it: its twelve fields, without the 1.2 ones (§6).
fn header_bytes() -> Vec<u8> {
    let h = update_header();
    let first = (h.family, h.family_name, h.sender, h.sender_name);
    let rest = (h.sender_incarnation, h.targets, h.bases, h.sender_row);
    let controls: Vec<Control10> = h.controls.into_iter().map(control10).collect();
    let last = (controls, h.created_ms, h.new_replica, h.comment);
    // A struct is an array of its fields: the three tuples' elements, flattened.
    let mut out = vec![0x9c];
    for part in [
        rmp_serde::to_vec(&first).unwrap(),
        rmp_serde::to_vec(&rest).unwrap(),
        rmp_serde::to_vec(&last).unwrap(),
    ] {
        assert_eq!(part[0], 0x94, "a four-element array");
        out.extend_from_slice(&part[1..]);
    }
    out
}

fn decode_all(bytes: &[u8]) -> Result<(PacketInfo, Header, Vec<Record>), DecodeError> {
    decode_from_slice(bytes)
}

#[test]
fn hand_encoded_packet_matches_the_spec() {
    let e = encode_entry(&entry(
        id(2),
        1,
        [0; 32],
        Op::MkBrType { name: "dev".into() },
    ));
    let mut blob = h(9).to_vec();
    blob.extend_from_slice(b"content");
    let raw = Raw::new(header_bytes(), &[rec(1, &e), rec(2, &blob)]);
    let (info, header, recs) = decode_all(&raw.build()).unwrap();
    assert_eq!(
        info,
        PacketInfo {
            version: FormatVersion { major: 1, minor: 0 },
            kind: Kind::Update,
            part: 1,
            parts: 1,
            packet_id: id(0x51)
        }
    );
    assert_eq!(header, update_header());
    assert_eq!(
        recs,
        vec![
            Record::Entry(e),
            Record::Blob {
                hash: h(9),
                bytes: b"content".to_vec()
            }
        ]
    );
}

#[test]
fn encoder_output_is_the_spec_layout() {
    // The crate's encoder, uncompressed, with the same chunking, gives the same bytes.
    let e = encode_entry(&entry(
        id(2),
        1,
        [0; 32],
        Op::MkBrType { name: "dev".into() },
    ));
    let recs = vec![Record::Entry(e.clone()), Record::Entry(e.clone())];
    let opts = WriteOptions {
        chunk_size: 64,
        zstd_level: 0,
        ..WriteOptions::new(id(0x51))
    };
    let ours = encode_to_vec(Kind::Update, &update_header(), recs, &opts).unwrap();
    let raw = Raw::new(header_bytes(), &[rec(1, &e), rec(1, &e)]);
    assert!(ours == raw.build());
}

/// A target as a hypothetical format 1.5 might carry it: one field appended.
#[derive(Serialize)]
struct TargetNext {
    replica: Id,
    incarnation: u64,
    packet_seq: u64,
    ack_incarnation: u64,
    applied_seq: u64,
    seen_seq: u64,
    region: String,
}

/// The header of a hypothetical format 1.5: a nested and a top-level field appended.
#[derive(Serialize)]
struct HeaderNext {
    family: Id,
    family_name: String,
    sender: Id,
    sender_name: String,
    sender_incarnation: u64,
    targets: Vec<TargetNext>,
    bases: Vec<Base>,
    sender_row: Row,
    controls: Vec<Control>,
    created_ms: u64,
    new_replica: Id,
    comment: String,
    keys: Vec<KeyCell>,
    heads: Vec<SignedHead>,
    #[serde(with = "msite_packet::wire::hexbytes")]
    signature: [u8; 64],
    fork_decisions: Vec<msite_packet::wire::ForkDecision>,
    reports: Vec<msite_packet::wire::SignedReport>,
    snapshot: u64,
    region: (u32, String),
}

fn header_next() -> Vec<u8> {
    let h = update_header();
    let next = HeaderNext {
        family: h.family,
        family_name: h.family_name,
        sender: h.sender,
        sender_name: h.sender_name,
        sender_incarnation: h.sender_incarnation,
        targets: h
            .targets
            .into_iter()
            .map(|t| TargetNext {
                replica: t.replica,
                incarnation: t.incarnation,
                packet_seq: t.packet_seq,
                ack_incarnation: t.ack_incarnation,
                applied_seq: t.applied_seq,
                seen_seq: t.seen_seq,
                region: "emea".into(),
            })
            .collect(),
        bases: h.bases,
        sender_row: h.sender_row,
        controls: h.controls,
        created_ms: h.created_ms,
        new_replica: h.new_replica,
        comment: h.comment,
        keys: h.keys,
        heads: h.heads,
        signature: h.signature,
        fork_decisions: h.fork_decisions,
        reports: h.reports,
        snapshot: h.snapshot,
        region: (7, "emea".into()),
    };
    rmp_serde::to_vec(&next).unwrap()
}

#[test]
fn newer_minor_version_is_read_skipping_what_is_unknown() {
    let e = encode_entry(&entry(
        id(2),
        1,
        [0; 32],
        Op::MkBrType { name: "dev".into() },
    ));
    let mut raw = Raw::new(
        header_next(),
        &[
            rec(0x10, b"a record type of a newer minor version"),
            rec(1, &e),
            rec(0x11, &[]),
        ],
    );
    // A minor version newer than this reader's (whatever 1.4 added, the next one skips over).
    let newer = msite_packet::FORMAT_MINOR + 1;
    raw.minor = newer;
    raw.flags = 0x01;
    let (info, header, recs) = decode_all(&raw.build()).unwrap();
    assert_eq!(
        info.version,
        FormatVersion {
            major: 1,
            minor: newer
        }
    );
    assert_eq!(header, update_header());
    assert_eq!(recs, vec![Record::Entry(e.clone())]);
    // The same content claiming to be 1.0 is refused: 1.0 has no such fields or records.
    raw.minor = 0;
    raw.flags = 0;
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Msgpack { what: "header", .. }
    ));
    let raw = Raw::new(header_bytes(), &[rec(0x10, b"x"), rec(1, &e)]);
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Malformed { .. }
    ));
}

#[test]
fn unknown_critical_record_is_refused_in_any_minor_version() {
    let mut raw = Raw::new(header_bytes(), &[rec(0x90, b"must understand")]);
    raw.minor = 7;
    match decode_all(&raw.build()).unwrap_err() {
        DecodeError::UnknownCriticalRecord { tag } => assert_eq!(tag, 0x90),
        e => panic!("expected UnknownCriticalRecord, got {e:?}"),
    }
}

#[test]
fn newer_major_version_is_refused_naming_both_versions() {
    let mut raw = Raw::new(header_bytes(), &[]);
    raw.major = 2;
    let err = decode_all(&raw.build()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "packet format 2.0 is newer than this msite reads (1.x); upgrade msite"
    );
    assert!(matches!(
        err,
        DecodeError::UnsupportedVersion { major: 2, minor: 0 }
    ));
    // Only the first 12 bytes are needed to say so.
    let b = raw.build();
    assert!(matches!(
        decode_all(&b[..12]).unwrap_err(),
        DecodeError::UnsupportedVersion { major: 2, minor: 0 }
    ));
    raw.major = 0;
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::UnsupportedVersion { major: 0, minor: 0 }
    ));
}

#[test]
fn absurd_lengths_are_refused_before_allocating() {
    // A record claiming 4 GiB in a tiny packet.
    let mut s = vec![1u8];
    s.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut raw = Raw::new(header_bytes(), &[]);
    raw.stream = s;
    raw.records = 1;
    match decode_all(&raw.build()).unwrap_err() {
        DecodeError::TooLarge {
            what: "record",
            len,
            limit,
            ..
        } => assert_eq!((len, limit), (u32::MAX as u64, 1 << 30)),
        e => panic!("expected TooLarge, got {e:?}"),
    }
    // A record within the limit but longer than the data: refused when the data runs out,
    // having allocated only what arrived.
    let mut s = vec![2u8];
    s.extend_from_slice(&(1u32 << 30).to_le_bytes());
    s.extend_from_slice(&[0; 40]);
    let mut raw = Raw::new(header_bytes(), &[]);
    raw.stream = s;
    raw.records = 1;
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Malformed { .. }
    ));
    // A header length beyond the limit (envelope crc valid).
    let mut b = Raw::new(header_bytes(), &[]).build();
    b[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&b[..44]);
    b[44..48].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        decode_all(&b).unwrap_err(),
        DecodeError::TooLarge { what: "header", .. }
    ));
    // A chunk length beyond the limit.
    let raw = Raw::new(header_bytes(), &[rec(1, b"x")]);
    let mut b = raw.build();
    let at = 48 + raw.header.len() + 4;
    b[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_all(&b).unwrap_err(),
        DecodeError::TooLarge { what: "chunk", .. }
    ));
}

#[test]
fn inconsistent_trailer_and_bad_fields_are_refused() {
    let mut raw = Raw::new(header_bytes(), &[rec(1, b"x")]);
    raw.records = 2;
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Malformed { .. }
    ));
    let mut raw = Raw::new(header_bytes(), &[]);
    raw.kind = 9;
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Malformed { offset: 12, .. }
    ));
    let mut raw = Raw::new(header_bytes(), &[]);
    raw.part = 3;
    raw.parts = 2;
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Malformed { offset: 36, .. }
    ));
    let mut raw = Raw::new(header_bytes(), &[]);
    raw.flags = 1;
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Malformed { offset: 13, .. }
    ));
    // A blob record too short to hold its hash.
    let raw = Raw::new(header_bytes(), &[rec(2, &[1; 31])]);
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Malformed { .. }
    ));
    // A record cut by the end of the stream.
    let mut raw = Raw::new(header_bytes(), &[rec(1, b"abc")]);
    raw.stream.pop();
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Malformed { .. }
    ));
    // Header bytes followed by junk inside the header section.
    let mut hb = header_bytes();
    hb.push(0xc0);
    assert!(matches!(
        decode_all(&Raw::new(hb, &[]).build()).unwrap_err(),
        DecodeError::Malformed { .. }
    ));
}

/// A content-piece record written from `SPEC.md` §4: hash, total u64 LE, offset u64 LE, bytes.
fn piece(total: u64, offset: u64, bytes: &[u8]) -> Vec<u8> {
    let mut p = vec![0xab; 32];
    p.extend_from_slice(&total.to_le_bytes());
    p.extend_from_slice(&offset.to_le_bytes());
    p.extend_from_slice(bytes);
    rec(0x83, &p)
}

#[test]
fn content_pieces_decode_in_format_1_1_only() {
    let mut raw = Raw::new(header_bytes(), &[piece(5, 0, b"abc"), piece(5, 3, b"de")]);
    raw.minor = 1;
    let (info, _, recs) = decode_all(&raw.build()).unwrap();
    assert_eq!(info.version, FormatVersion { major: 1, minor: 1 });
    let piece_rec = |offset: u64, bytes: &[u8]| Record::BlobPiece {
        hash: [0xab; 32],
        total: 5,
        offset,
        bytes: bytes.to_vec(),
    };
    assert_eq!(recs, vec![piece_rec(0, b"abc"), piece_rec(3, b"de")]);
    // Format 1.0 has no such record: a critical tag it does not know.
    raw.minor = 0;
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::UnknownCriticalRecord { tag: 0x83 }
    ));
    // A piece running past its content, or shorter than its fixed fields, is malformed.
    for bad in [piece(5, 4, b"de"), rec(0x83, &[0; 47])] {
        let mut raw = Raw::new(header_bytes(), &[bad]);
        raw.minor = 1;
        assert!(matches!(
            decode_all(&raw.build()).unwrap_err(),
            DecodeError::Malformed { .. }
        ));
    }
}

#[test]
fn signed_header_fields_are_refused_in_an_older_minor_version() {
    // Format 1.2's header fields (keys, chain heads, signature) in a packet claiming 1.1 or
    // 1.0 are malformed: an older writer never writes them.
    let mut h = update_header();
    h.keys = vec![KeyCell::new(id(2), [5; 32])];
    h.signature = [6; 64];
    for minor in [0, 1] {
        let mut raw = Raw::new(rmp_serde::to_vec(&h).unwrap(), &[]);
        raw.minor = minor;
        match decode_all(&raw.build()).unwrap_err() {
            DecodeError::Malformed { reason, .. } => assert!(reason.contains("1.2"), "{reason}"),
            e => panic!("expected Malformed, got {e:?}"),
        }
    }
    let mut raw = Raw::new(rmp_serde::to_vec(&h).unwrap(), &[]);
    raw.minor = 2;
    let (info, header, _) = decode_all(&raw.build()).unwrap();
    assert_eq!(info.version, FormatVersion { major: 1, minor: 2 });
    assert_eq!(header, h);
}

/// Format 1.3: a header's fork repair decisions round-trip; a header without any is a 1.2
/// header byte for byte; a 1.2 writer refuses a header that carries one rather than drop it.
#[test]
fn fork_decisions_need_minor_1_3_and_round_trip() {
    let plain = update_header();
    let v12 = WriteOptions {
        minor: 2,
        ..WriteOptions::new(id(9))
    };
    let v13 = WriteOptions {
        minor: 3,
        ..WriteOptions::new(id(9))
    };
    let a = encode_to_vec(Kind::Update, &plain, vec![], &v12).unwrap();
    let b = encode_to_vec(Kind::Update, &plain, vec![], &v13).unwrap();
    // Same header bytes: only the envelope's version differs.
    assert_eq!(a.len(), b.len());
    let mut with = plain.clone();
    with.fork_decisions.push(unsigned_decision());
    let bytes = encode_to_vec(Kind::Update, &with, vec![], &v13).unwrap();
    let (info, got, _) = decode_from_slice(&bytes).unwrap();
    assert_eq!(info.version, FormatVersion { major: 1, minor: 3 });
    assert_eq!(got, with);
    let err = encode_to_vec(Kind::Update, &with, vec![], &v12).unwrap_err();
    assert!(err.to_string().contains("fork repair decisions"), "{err}");
}
/// A content-delta record written from `SPEC.md` §4: hash, base, size u64 LE, frame.
fn delta(size: u64, frame: &[u8]) -> Vec<u8> {
    let mut p = vec![0xab; 32];
    p.extend_from_slice(&[0xcd; 32]);
    p.extend_from_slice(&size.to_le_bytes());
    p.extend_from_slice(frame);
    rec(0x84, &p)
}

#[test]
fn content_deltas_decode_in_format_1_3_only() {
    let mut raw = Raw::new(header_bytes(), &[delta(9, b"zstd frame")]);
    raw.minor = 3;
    let (info, _, recs) = decode_all(&raw.build()).unwrap();
    assert_eq!(info.version, FormatVersion { major: 1, minor: 3 });
    let want = Record::Delta {
        hash: [0xab; 32],
        base: [0xcd; 32],
        size: 9,
        frame: b"zstd frame".to_vec(),
    };
    assert_eq!(recs, vec![want]);
    // Formats 1.0 to 1.2 have no such record: a critical tag they do not know, so a 1.2
    // reader refuses a 1.3 packet carrying one rather than drop content.
    for minor in 0..3 {
        raw.minor = minor;
        assert!(matches!(
            decode_all(&raw.build()).unwrap_err(),
            DecodeError::UnknownCriticalRecord { tag: 0x84 }
        ));
    }
    // A delta record shorter than its fixed fields is malformed.
    let mut raw = Raw::new(header_bytes(), &[rec(0x84, &[0; 71])]);
    raw.minor = 3;
    assert!(matches!(
        decode_all(&raw.build()).unwrap_err(),
        DecodeError::Malformed { .. }
    ));
}

/// Write options of format minor `minor` (major 1).
fn opts(minor: u16) -> WriteOptions {
    WriteOptions {
        minor,
        ..WriteOptions::new(id(9))
    }
}

/// Format 1.4: a header's signed reports round-trip and keep `fork_decisions` in its place
/// (written empty when only reports are present); a header without reports is a 1.3 header
/// byte for byte; a 1.3 writer refuses reports rather than drop them, and a reader refuses a
/// 1.3 packet that carries them.
#[test]
fn reports_need_minor_1_4_and_round_trip() {
    let plain = update_header();
    let a = encode_to_vec(Kind::Update, &plain, vec![], &opts(3)).unwrap();
    let b = encode_to_vec(Kind::Update, &plain, vec![], &opts(4)).unwrap();
    assert_eq!(a.len(), b.len(), "no reports: the same header bytes");
    let mut with = plain.clone();
    with.reports.push(SignedReport {
        replica: id(5),
        incarnation: 3,
        made_ms: 1_700_000_400_000,
        row: vec![RowCell {
            origin: id(5),
            number: 12,
        }],
        signature: [6; 64],
    });
    let bytes = encode_to_vec(Kind::Update, &with, vec![], &opts(4)).unwrap();
    let (info, got, _) = decode_from_slice(&bytes).unwrap();
    assert_eq!(info.version, FormatVersion { major: 1, minor: 4 });
    assert_eq!(got, with);
    assert!(got.fork_decisions.is_empty());
    // The reports are field 16 of a 17-element array (fork_decisions written empty at 15).
    let raw = rmp_serde::to_vec(&with).unwrap();
    assert_eq!(raw[0], 0xdc, "an array16 of 17 fields");
    assert_eq!(raw[1..3], [0, 17]);
    let err = encode_to_vec(Kind::Update, &with, vec![], &opts(3)).unwrap_err();
    assert!(err.to_string().contains("signed reports"), "{err}");
    let mut old = Raw::new(raw, &[]);
    old.minor = 3;
    match decode_all(&old.build()).unwrap_err() {
        DecodeError::Malformed { reason, .. } => assert!(reason.contains("1.4"), "{reason}"),
        e => panic!("expected Malformed, got {e:?}"),
    }
    // With decisions and reports both, both round-trip.
    let mut both = with.clone();
    both.fork_decisions.push(ForkDecision {
        keep: true,
        ..unsigned_decision()
    });
    let bytes = encode_to_vec(Kind::Update, &both, vec![], &opts(4)).unwrap();
    assert_eq!(decode_from_slice(&bytes).unwrap().1, both);
}

/// A fork repair decision as a 1.3 writer makes it: its signature all zeros.
fn unsigned_decision() -> ForkDecision {
    ForkDecision {
        origin: id(4),
        number: 42,
        hash: h(7),
        keep: false,
        decided_by: id(2),
        decided_ms: 1_700_000_300_000,
        signature: NO_SIGNATURE,
    }
}

/// Format 1.5: a fork decision's signature round-trips; an unsigned decision is the 1.3
/// decision byte for byte (its six fields); a 1.4 writer refuses a signed decision rather
/// than drop the signature, and a reader refuses a 1.4 packet that carries one.
#[test]
fn signed_decisions_need_minor_1_5_and_round_trip() {
    let unsigned = unsigned_decision();
    assert_eq!(rmp_serde::to_vec(&unsigned).unwrap()[0], 0x96, "six fields");
    let signed = ForkDecision {
        signature: [8; 64],
        ..unsigned.clone()
    };
    assert_eq!(rmp_serde::to_vec(&signed).unwrap()[0], 0x97, "seven fields");
    let mut with = update_header();
    with.fork_decisions.push(signed);
    let bytes = encode_to_vec(Kind::Update, &with, vec![], &opts(5)).unwrap();
    let (info, got, _) = decode_from_slice(&bytes).unwrap();
    assert_eq!(info.version, FormatVersion { major: 1, minor: 5 });
    assert_eq!(got, with);
    let err = encode_to_vec(Kind::Update, &with, vec![], &opts(4)).unwrap_err();
    assert!(
        err.to_string().contains("signed fork repair decisions"),
        "{err}"
    );
    let mut old = Raw::new(rmp_serde::to_vec(&with).unwrap(), &[]);
    old.minor = 4;
    match decode_all(&old.build()).unwrap_err() {
        DecodeError::Malformed { reason, .. } => assert!(reason.contains("1.5"), "{reason}"),
        e => panic!("expected Malformed, got {e:?}"),
    }
    // An unsigned decision still needs only 1.3.
    let mut plain = update_header();
    plain.fork_decisions.push(unsigned);
    encode_to_vec(Kind::Update, &plain, vec![], &opts(3)).unwrap();
}
