//! Content pieces (format 1.1): large content as a sequence of bounded records, and the
//! reader's content limit, which refuses oversized content from its declared size before
//! reading its bytes.

use std::io::Cursor;

use crate::common::*;
use msite_packet::wire::*;
use msite_packet::*;

/// `content` as pieces of `piece` bytes.
fn pieces_of(content: &[u8], piece: usize) -> Vec<Record> {
    let hash = *blake3::hash(content).as_bytes();
    content
        .chunks(piece)
        .enumerate()
        .map(|(i, b)| Record::BlobPiece {
            hash,
            total: content.len() as u64,
            offset: (i * piece) as u64,
            bytes: b.to_vec(),
        })
        .collect()
}

fn write(recs: &[Record], opts: WriteOptions) -> Vec<Vec<u8>> {
    let mut w = MemPacketWriter::new(Kind::Update, &update_header(), opts).unwrap();
    for r in recs {
        w.push_record(r).unwrap();
    }
    w.finish().unwrap().0
}

#[test]
fn pieces_round_trip_across_parts() {
    let mut recs = pieces_of(&noise(3, 40_000), 7_000);
    recs.extend(records_of(&checkins(id(2), 1, 3, 100)));
    let opts = WriteOptions {
        chunk_size: 2048,
        max_part_size: Some(16 << 10),
        minor: 1,
        ..WriteOptions::new(id(4))
    };
    let parts = write(&recs, opts);
    assert!(parts.len() > 1, "the pieces span parts");
    let (info, _, got) = decode_parts(parts.iter().map(|p| p.as_slice())).unwrap();
    assert_eq!(info.version, FormatVersion { major: 1, minor: 1 });
    assert_eq!(got, recs);
}

#[test]
fn a_format_1_0_writer_refuses_pieces() {
    let mut w =
        MemPacketWriter::new(Kind::Update, &update_header(), WriteOptions::new(id(4))).unwrap();
    assert!(matches!(
        w.push_blob_piece(&[0; 32], 10, 0, b"0123456789"),
        Err(EncodeError::InvalidOptions(_))
    ));
    let mut w = MemPacketWriter::new(
        Kind::Update,
        &update_header(),
        WriteOptions {
            minor: 1,
            ..WriteOptions::new(id(4))
        },
    )
    .unwrap();
    assert!(matches!(
        w.push_blob_piece(&[0; 32], 10, 5, b"0123456789"),
        Err(EncodeError::InvalidOptions(_))
    ));
}

/// Reads the packet with a content limit; returns the error and the chunks read before it.
fn read_limited(bytes: Vec<u8>, limit: u64) -> (DecodeError, u32) {
    let mut r = PacketReader::new(Cursor::new(bytes)).unwrap();
    r.set_content_limit(limit);
    let mut recs = r.records();
    let err = recs
        .by_ref()
        .find_map(|r| r.err())
        .expect("the limit refuses the packet");
    (err, recs.stats().chunks)
}

#[test]
fn content_over_the_limit_is_refused_before_its_bytes_are_read() {
    // A 1 MiB blob of zeros in 4 KiB chunks: refused at the first chunk, from its length.
    let zeros = vec![0u8; 1 << 20];
    let blob = Record::Blob {
        hash: *blake3::hash(&zeros).as_bytes(),
        bytes: zeros,
    };
    let opts = WriteOptions {
        chunk_size: 4096,
        minor: 1,
        ..WriteOptions::new(id(5))
    };
    let parts = write(&[blob], opts.clone());
    let (err, chunks) = read_limited(parts[0].clone(), 1000);
    assert!(
        matches!(err, DecodeError::TooLarge { what: "content", len, limit: 1000, .. } if len == 1 << 20),
        "{err:?}"
    );
    assert_eq!(chunks, 1, "the reader inflated the content it refuses");
    // A piece declaring 1 GiB is refused from its declared total.
    let piece = Record::BlobPiece {
        hash: [1; 32],
        total: 1 << 30,
        offset: 0,
        bytes: vec![0; 100],
    };
    let parts = write(std::slice::from_ref(&piece), opts);
    let (err, _) = read_limited(parts[0].clone(), 1 << 20);
    assert!(
        matches!(err, DecodeError::TooLarge { what: "content", len, .. } if len == 1 << 30),
        "{err:?}"
    );
    // Without a limit both read.
    let (_, _, got) = decode_from_slice(&parts[0]).unwrap();
    assert_eq!(got, vec![piece]);
}

#[test]
fn a_large_format_1_0_blob_record_can_be_read_in_pieces() {
    let content = noise(5, 10_000);
    let hash = *blake3::hash(&content).as_bytes();
    let recs = vec![
        Record::Blob {
            hash,
            bytes: content.clone(),
        },
        Record::Entry(b"after".to_vec()),
    ];
    let opts = WriteOptions {
        chunk_size: 1024,
        ..WriteOptions::new(id(6))
    };
    let parts = write(&recs, opts);
    let mut r = PacketReader::new(Cursor::new(parts[0].clone())).unwrap();
    assert_eq!(r.info().version, FormatVersion { major: 1, minor: 0 });
    r.set_blob_piece_len(4000);
    let mut recs = r.records();
    let got: Vec<Record> = recs.by_ref().collect::<Result<_, _>>().unwrap();
    let mut expect = pieces_of(&content, 4000);
    expect.push(Record::Entry(b"after".to_vec()));
    assert_eq!(got, expect);
    let stats = recs.stats();
    assert_eq!(
        (stats.records, stats.blobs, stats.blob_bytes),
        (2, 1, 10_000)
    );
    assert!(stats.verified);
    // Content written in pieces counts as one content too.
    let opts = WriteOptions {
        minor: 1,
        ..WriteOptions::new(id(7))
    };
    let parts = write(&pieces_of(&content, 3000), opts);
    let mut recs = PacketReader::new(Cursor::new(parts[0].clone()))
        .unwrap()
        .records();
    let stats = recs.verify_rest().unwrap();
    assert_eq!((stats.records, stats.blob_pieces, stats.blobs), (4, 4, 1));
}
