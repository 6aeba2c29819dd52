//! Encode then decode, in memory and through files.

use crate::common::*;
use msite_packet::wire::*;
use msite_packet::*;

#[test]
fn in_memory_round_trip() {
    let items = checkins(id(2), 1, 50, 300);
    let recs = records_of(&items);
    let opts = WriteOptions {
        chunk_size: 1000,
        ..WriteOptions::new(id(9))
    };
    let bytes = encode_to_vec(Kind::Update, &update_header(), recs.clone(), &opts).unwrap();
    let (info, header, got) = decode_from_slice(&bytes).unwrap();
    assert_eq!(header, update_header());
    assert_eq!(
        info,
        PacketInfo {
            version: FormatVersion { major: 1, minor: 0 },
            kind: Kind::Update,
            part: 1,
            parts: 1,
            packet_id: id(9)
        }
    );
    assert_eq!(got, recs);
}

/// Versions of one file spread over a large chunk compress against each other with the long
/// window (zstd's own window at level 1 cannot reach back that far), and read back identical.
#[test]
fn long_window_sees_across_versions_in_a_chunk() {
    // 64 "files" of 48 KiB of noise, then the same files again with one byte changed: each
    // second version is about 3 MiB after its first.
    let mut state = 0x1234_5678_u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect()
    };
    let first: Vec<Vec<u8>> = (0..64).map(|_| noise(48 << 10)).collect();
    let mut recs = Vec::new();
    for round in 0..2u8 {
        for (i, f) in first.iter().enumerate() {
            let mut bytes = f.clone();
            bytes[i * 7] ^= round;
            let hash = *blake3::hash(&bytes).as_bytes();
            recs.push(Record::Blob { hash, bytes });
        }
    }
    let raw: usize = first.iter().map(Vec::len).sum::<usize>() * 2;
    let encode = |long_window: bool| {
        let opts = WriteOptions {
            chunk_size: 8 << 20,
            zstd_level: 1,
            long_window,
            ..WriteOptions::new(id(9))
        };
        encode_to_vec(Kind::Update, &update_header(), recs.clone(), &opts).unwrap()
    };
    let (plain, long) = (encode(false), encode(true));
    assert!(
        plain.len() > raw * 9 / 10,
        "noise compressed: {}",
        plain.len()
    );
    assert!(
        long.len() < raw * 6 / 10,
        "the long window missed repeats: {}",
        long.len()
    );
    let (_, header, got) = decode_from_slice(&long).unwrap();
    assert_eq!(header, update_header());
    assert!(got == recs, "records differ");
}

/// Full chunks are compressed on the encoder's worker thread, except when the packet is split
/// into parts (each split needs the stored size of the chunk before it). Both ways write the
/// same bytes, chunk for chunk, for compressible and incompressible chunks alike.
#[test]
fn chunks_compressed_on_the_worker_thread_are_the_bytes_compressed_inline() {
    let mut recs = records_of(&checkins(id(2), 1, 40, 700));
    for n in 0..40u8 {
        let bytes = noise(u64::from(n), 900);
        recs.push(Record::Blob {
            hash: *blake3::hash(&bytes).as_bytes(),
            bytes,
        });
    }
    for long_window in [false, true] {
        let encode = |max_part_size: Option<u64>| {
            let opts = WriteOptions {
                chunk_size: 2048,
                zstd_level: 3,
                long_window,
                max_part_size,
                ..WriteOptions::new(id(9))
            };
            let mut w = MemPacketWriter::new(Kind::Update, &update_header(), opts).unwrap();
            for r in &recs {
                w.push_record(r).unwrap();
            }
            let (mut parts, _) = w.finish().unwrap();
            assert_eq!(parts.len(), 1);
            parts.remove(0)
        };
        let (threaded, inline) = (encode(None), encode(Some(u64::MAX / 2)));
        assert_eq!(threaded, inline, "long window {long_window}");
        let r = PacketReader::new(threaded.as_slice()).unwrap();
        let mut it = r.records();
        let got: Vec<Record> = it.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, recs);
        let st = it.stats();
        assert!(st.chunks > 20, "{} chunks", st.chunks);
    }
}

/// `skip_incompressible` stores a chunk whose samples shrink by less than about 3 % as is,
/// and compresses one whose samples shrink more, including chunks only half of which
/// compresses; both read back identical.
#[test]
fn skip_incompressible_stores_only_chunks_whose_samples_do_not_compress() {
    // Noise with a 20-byte pattern in each 900 bytes: zstd saves about 2 % of it.
    let nearly_noise: Vec<Record> = (0..3000u64)
        .map(|n| {
            let mut bytes = noise(n, 900);
            bytes[..20].copy_from_slice(b"a repeated prefix!!!");
            Record::Blob {
                hash: *blake3::hash(&bytes).as_bytes(),
                bytes,
            }
        })
        .collect();
    let text = records_of(&checkins(id(2), 1, 6000, 300));
    // Each chunk half text, half nearly noise, by bytes.
    let half_text: Vec<Record> = text
        .chunks(3)
        .zip(&nearly_noise)
        .flat_map(|(t, n)| t.iter().chain([n]))
        .cloned()
        .collect();
    let encode = |recs: &[Record], zstd_level: i32, skip_incompressible: bool| {
        let opts = WriteOptions {
            chunk_size: 1 << 20,
            zstd_level,
            skip_incompressible,
            ..WriteOptions::new(id(9))
        };
        let bytes = encode_to_vec(Kind::Update, &update_header(), recs.to_vec(), &opts).unwrap();
        let (_, _, got) = decode_from_slice(&bytes).unwrap();
        assert!(got == recs, "records differ");
        bytes.len()
    };
    let stored = encode(&nearly_noise, 0, false);
    assert!(encode(&nearly_noise, 1, false) < stored * 99 / 100);
    assert_eq!(encode(&nearly_noise, 1, true), stored);
    for recs in [&text, &half_text] {
        let stored = encode(recs, 0, false);
        let compressed = encode(recs, 1, false);
        assert!(compressed < stored * 9 / 10, "{compressed} of {stored}");
        assert_eq!(encode(recs, 1, true), compressed);
    }
}
