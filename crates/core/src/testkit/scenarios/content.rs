//! Versions larger than a chunk between replicas: they travel as content pieces, arrive
//! byte for byte, keep the digests equal, and are refused by a receiver whose limit they pass.

use crate::content::CHUNK_LEN;
use crate::store::{KeyRange, Keyspace, ReadView};
use crate::{CoreError, VersionSel};

use super::*;

/// Deterministic content of `len` bytes.
fn content(len: usize, seed: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    out
}

/// How many content-piece records the packet's parts carry.
fn pieces(parts: &[Vec<u8>]) -> usize {
    parts
        .iter()
        .flat_map(|p| msite_packet::decode_from_slice(p).expect("a packet").2)
        .filter(|r| matches!(r, msite_packet::Record::BlobPiece { .. }))
        .count()
}

/// How many `Blobs` keys a replica holds (chunks included).
fn blob_keys<S: Store>(r: &Replica<S>) -> usize {
    let all = KeyRange::all();
    ReadView::scan(r.store(), Keyspace::Blobs, all)
        .unwrap()
        .count()
}

/// The same packet with every content as one blob record, written as format 1.`minor`: a
/// 1.0 packet cannot carry the header's keys, chain heads and signature, so it is unsigned
/// (nor, before 1.4, its sender's signed report).
fn as_blob_records(parts: Vec<Vec<u8>>, minor: u16) -> Vec<Vec<u8>> {
    use msite_packet::{decode_from_slice, wire, MemPacketWriter, Record, WriteOptions};
    let (info, mut header, _) = decode_from_slice(&parts[0]).expect("a packet");
    if minor < msite_packet::format::MINOR_SIGNED {
        header.keys.clear();
        header.heads.clear();
        header.signature = wire::NO_SIGNATURE;
    }
    if minor < msite_packet::format::MINOR_REPORTS {
        header.reports.clear();
    }
    let mut opts = WriteOptions::new(info.packet_id);
    opts.minor = minor;
    let mut w = MemPacketWriter::new(info.kind, &header, opts).expect("a writer");
    let mut whole = Vec::new();
    for r in parts
        .iter()
        .flat_map(|p| decode_from_slice(p).expect("a packet").2)
    {
        match r {
            Record::BlobPiece {
                hash, total, bytes, ..
            } => {
                whole.extend_from_slice(&bytes);
                if whole.len() as u64 == total {
                    w.push_blob(&hash, &std::mem::take(&mut whole))
                        .expect("a blob");
                }
            }
            other => w.push_record(&other).expect("a record"),
        }
    }
    w.finish().expect("the packet").0
}

fn cat_at<F: StoreFactory>(f: &Family<'_, F>, i: usize, path: &str) -> Vec<u8> {
    f.sites[i].cat(&VersionSel::parse(path).unwrap()).unwrap()
}

/// A version of several chunks replicates as content pieces, to a sibling and into a new
/// replica; every replica reads it back identical and the digests agree.
pub fn case_big_version_replicates_with_equal_digests<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 11);
    f.settle(&[(0, 1)]);
    let data = content(5 * CHUNK_LEN / 2 + 7, b"big version");
    f.sites[0]
        .checkin("big.bin", "main", &data, "u", "")
        .unwrap();
    let parts = f.export(0, 1).unwrap();
    assert_eq!(pieces(&parts), 3, "the content travels as three pieces");
    assert!(applied(&f.import(1, parts).unwrap()));
    assert!(cat_at(&f, 1, "big.bin") == data, "content differs at r1");
    f.settle(&[(0, 1)]);
    f.assert_converged();
    let r2 = f.mkreplica(1, "r2");
    assert!(cat_at(&f, r2, "big.bin") == data, "content differs at r2");
    f.settle(&mesh(3));
    f.assert_converged();
}

/// A packet carrying a version of several chunks as one blob record (as format 1.0 writers
/// did) imports (read in pieces) and gives the same content and digest. The same packet as
/// format 1.0, which cannot be signed, is refused and changes nothing.
pub fn case_big_blob_record_of_format_1_0_imports<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 13);
    f.settle(&[(0, 1)]);
    let data = content(3 * CHUNK_LEN + 1, b"old sender");
    f.sites[0]
        .checkin("old.bin", "main", &data, "u", "")
        .unwrap();
    let genuine = f.export(0, 1).unwrap();
    let before = f.sites[1].digest().unwrap();
    let unsigned = as_blob_records(genuine.clone(), 0);
    let err = f.import(1, unsigned).expect_err("an unsigned 1.0 packet");
    assert!(err.to_string().contains("is unsigned"), "{err}");
    assert_eq!(
        f.sites[1].digest().unwrap(),
        before,
        "the refusal changed nothing"
    );
    let parts = as_blob_records(genuine, msite_packet::format::FORMAT_MINOR);
    assert_eq!(pieces(&parts), 0, "the packet carries one blob record");
    assert!(applied(&f.import(1, parts).unwrap()));
    assert!(cat_at(&f, 1, "old.bin") == data, "content differs at r1");
    f.settle(&[(0, 1)]);
    f.assert_converged();
}

/// A packet carrying content over the receiver's limit is refused and changes nothing; the
/// same packet applies once the limit allows it.
pub fn case_content_over_the_receivers_limit_is_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 12);
    f.settle(&[(0, 1)]);
    let limit = CHUNK_LEN as u64;
    f.sites[1].set_max_version_bytes(limit).unwrap();
    let data = content(2 * CHUNK_LEN + 1, b"too big");
    f.sites[0]
        .checkin("big.bin", "main", &data, "u", "")
        .unwrap();
    let parts = f.export(0, 1).unwrap();
    let before = f.sites[1].digest().unwrap();
    let blobs_before = blob_keys(&f.sites[1]);
    let err = f.import(1, parts.clone()).expect_err("over the limit");
    assert!(
        matches!(err, CoreError::Unreadable(_) | CoreError::Refused(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains(&limit.to_string()), "{err}");
    assert_eq!(f.sites[1].digest().unwrap(), before);
    assert_eq!(
        blob_keys(&f.sites[1]),
        blobs_before,
        "a refused packet stored content"
    );
    f.sites[1].set_max_version_bytes(4 * limit).unwrap();
    assert!(applied(&f.import(1, parts).unwrap()));
    assert!(cat_at(&f, 1, "big.bin") == data);
}
