//! Packet format throughput: encode, and decode + verify, of a packet of 1M check-in entries
//! each with a 256-byte blob (the figures in `BENCHMARKS.md`, section "Packet format").
//!
//! `cargo bench -p msite-packet --bench packet`. `MSITE_BENCH_ENTRIES=N` changes the entry
//! count. Payload = the records' payload bytes (canonical entry bytes, blob hashes and blob
//! contents); blob contents are pseudo-random, so they do not compress (the worst case).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use msite_packet::wire::*;
use msite_packet::*;

fn noise(seed: u64, out: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
}

fn header() -> Header {
    Header {
        family: Id([1; 16]),
        family_name: "bench".into(),
        sender: Id([2; 16]),
        sender_name: "boston".into(),
        sender_incarnation: 0,
        targets: vec![],
        bases: vec![],
        sender_row: vec![RowCell {
            origin: Id([2; 16]),
            number: 1,
        }],
        controls: vec![],
        created_ms: 0,
        new_replica: Id::default(),
        comment: String::new(),
        keys: vec![],
        heads: vec![],
        signature: msite_packet::wire::NO_SIGNATURE,
        fork_decisions: vec![],
        snapshot: 0,
    }
}

/// `n` check-in entries (canonical bytes) and their blobs.
fn records(n: u64) -> Vec<Record> {
    let origin = Id([2; 16]);
    let mut prev = [0u8; 32];
    let mut out = Vec::with_capacity(2 * n as usize);
    for number in 1..=n {
        let mut blob = vec![0u8; 256];
        noise(number, &mut blob);
        let content = *blake3::hash(&blob).as_bytes();
        let mut e = Entry {
            origin,
            number,
            incarnation: 0,
            time_ms: 1_700_000_000_000 + number * 17,
            prev,
            op: Op::Checkin {
                elem: ObjId {
                    origin,
                    number: 1 + number % 1000,
                },
                brtype: ObjId { origin, number: 2 },
                version: number / 1000 + 1,
                content,
                size: 256,
                author: "alice".into(),
                comment: format!("change {number}"),
            },
            hash: [0; 32],
        };
        e.hash = entry_hash(&e);
        prev = e.hash;
        out.push(Record::Blob {
            hash: content,
            bytes: blob,
        });
        out.push(Record::Entry(encode_entry(&e)));
    }
    out
}

fn encode(recs: &[Record], level: i32) -> (Vec<u8>, Stats) {
    let opts = WriteOptions {
        zstd_level: level,
        ..WriteOptions::new(Id([7; 16]))
    };
    let mut w = MemPacketWriter::new(Kind::Update, &header(), opts).expect("options are valid");
    for r in recs {
        w.push_record(r).expect("records are within limits");
    }
    let (mut parts, stats) = w.finish().expect("in-memory encoding cannot fail");
    (parts.pop().expect("one part"), stats)
}

fn decode_verify(bytes: &[u8]) -> u64 {
    let r = PacketReader::new(bytes).expect("valid packet");
    let mut n = 0u64;
    for rec in r.records() {
        match rec.expect("valid packet") {
            Record::Entry(b) => n += b.len() as u64,
            Record::Blob { bytes, .. } | Record::BlobPiece { bytes, .. } => n += bytes.len() as u64,
            Record::Delta { frame, .. } => n += frame.len() as u64,
            Record::Row { key, value, .. } => n += (key.len() + value.len()) as u64,
            Record::SnapshotEnd { .. } => {}
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("MSITE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let recs = records(n);
    let (zst, stats) = encode(&recs, 3);
    let (raw, _) = encode(&recs, 0);
    let payload = stats.payload_bytes;
    let entry_bytes: u64 = recs
        .iter()
        .map(|r| {
            if let Record::Entry(b) = r {
                b.len() as u64
            } else {
                0
            }
        })
        .sum();
    println!(
        "\n{n} entries; payload {payload} bytes ({:.1} per entry: {:.1} entry bytes + 288 blob hash and content)\n\
         zstd 3: packet {} bytes = {:.1} bytes/entry = {:.1}% of payload\n\
         stored: packet {} bytes = {:.1} bytes/entry = {:.1}% of payload\n",
        payload as f64 / n as f64,
        entry_bytes as f64 / n as f64,
        zst.len(),
        zst.len() as f64 / n as f64,
        100.0 * zst.len() as f64 / payload as f64,
        raw.len(),
        raw.len() as f64 / n as f64,
        100.0 * raw.len() as f64 / payload as f64,
    );

    let mut g = c.benchmark_group("packet_1M_checkins");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(payload));
    g.bench_function("encode_zstd3", |b| {
        b.iter(|| black_box(encode(&recs, 3).0.len()))
    });
    g.bench_function("encode_zstd1", |b| {
        b.iter(|| black_box(encode(&recs, 1).0.len()))
    });
    g.bench_function("encode_stored", |b| {
        b.iter(|| black_box(encode(&recs, 0).0.len()))
    });
    g.bench_function("decode_verify_zstd3", |b| {
        b.iter(|| black_box(decode_verify(&zst)))
    });
    g.bench_function("decode_verify_stored", |b| {
        b.iter(|| black_box(decode_verify(&raw)))
    });
    g.bench_function("decode_verify_zstd3_and_decode_entries", |b| {
        b.iter(|| {
            let r = PacketReader::new(zst.as_slice()).expect("valid packet");
            let mut n = 0u64;
            for e in r.records().entries() {
                n += e.expect("valid entry").number;
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
