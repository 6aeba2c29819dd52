//! Content deltas (format 1.3): a content as one zstd frame against a base content, carried
//! opaque by the packet layer, written only by a 1.3 writer, and limited by the reader's
//! content limit from its declared size.

use std::io::Cursor;

use crate::common::*;
use msite_packet::wire::*;
use msite_packet::*;

/// `data` as a zstd frame with `base` as its reference prefix (what msite's exporter sends).
pub fn delta_frame(data: &[u8], base: &[u8]) -> Vec<u8> {
    let mut c = zstd::zstd_safe::CCtx::create();
    c.ref_prefix(base).unwrap();
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    c.compress2(&mut out, data).unwrap();
    out
}

/// Version 2 of a file as a delta record against version 1; returns (v1, v2, record).
pub fn versions_and_delta() -> (Vec<u8>, Vec<u8>, Record) {
    let v1 = noise(21, 3000);
    let mut v2 = v1.clone();
    v2[1500..1510].copy_from_slice(b"0123456789");
    let rec = Record::Delta {
        hash: *blake3::hash(&v2).as_bytes(),
        base: *blake3::hash(&v1).as_bytes(),
        size: v2.len() as u64,
        frame: delta_frame(&v2, &v1),
    };
    (v1, v2, rec)
}

fn writer(minor: u16) -> MemPacketWriter {
    let opts = WriteOptions {
        chunk_size: 1024,
        minor,
        ..WriteOptions::new(id(6))
    };
    MemPacketWriter::new(Kind::Update, &update_header(), opts).unwrap()
}

#[test]
fn a_delta_round_trips_and_rebuilds_its_content() {
    let (v1, v2, rec) = versions_and_delta();
    let mut w = writer(3);
    w.push_record(&rec).unwrap();
    let (parts, stats) = w.finish().unwrap();
    assert_eq!((stats.deltas, stats.blobs), (1, 1));
    let r = PacketReader::new(Cursor::new(parts[0].clone())).unwrap();
    assert_eq!(r.info().version, FormatVersion { major: 1, minor: 3 });
    let mut recs = r.records();
    let got: Vec<Record> = recs.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(recs.stats().deltas, 1);
    assert_eq!(got, vec![rec.clone()]);
    let Record::Delta { frame, size, .. } = rec else {
        unreachable!()
    };
    assert!(frame.len() < 200, "the delta is small: {}", frame.len());
    let mut d = zstd::zstd_safe::DCtx::create();
    d.ref_prefix(&v1).unwrap();
    let mut out = Vec::with_capacity(size as usize);
    d.decompress(&mut out, &frame).unwrap();
    assert!(out == v2, "the frame rebuilds version 2 from version 1");
}

#[test]
fn a_writer_older_than_1_3_refuses_deltas() {
    let (_, _, rec) = versions_and_delta();
    for minor in 0..3 {
        let mut w = writer(minor);
        assert!(
            matches!(w.push_record(&rec), Err(EncodeError::InvalidOptions(_))),
            "format 1.{minor} wrote a delta"
        );
    }
}

#[test]
fn a_delta_over_the_content_limit_is_refused_from_its_declared_size() {
    let rec = Record::Delta {
        hash: [1; 32],
        base: [2; 32],
        size: 1 << 30,
        frame: vec![0; 100],
    };
    let mut w = writer(3);
    w.push_record(&rec).unwrap();
    let parts = w.finish().unwrap().0;
    let mut r = PacketReader::new(Cursor::new(parts[0].clone())).unwrap();
    r.set_content_limit(1 << 20);
    let err = r.records().find_map(|r| r.err()).expect("refused");
    assert!(
        matches!(err, DecodeError::TooLarge { what: "content", len, .. } if len == 1 << 30),
        "{err:?}"
    );
}
