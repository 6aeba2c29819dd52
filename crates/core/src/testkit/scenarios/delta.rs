//! Content as deltas in packets (format 1.3): a new version travels as a delta against the
//! previous version of its branch when the target acknowledged holding it, or when that
//! version is earlier in the same packet; otherwise whole. A delta whose base the receiver
//! lacks, or that does not rebuild the content its hash names, is refused and changes nothing.

use msite_packet::Record;

use crate::{CoreError, VersionSel};

use super::*;

/// A text file of `lines` lines, line `changed` (if any) edited: versions of one file.
fn text(lines: usize, changed: Option<usize>) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..lines {
        match changed {
            Some(c) if c == i => out.push_str(&format!("line {i} was edited here\n")),
            _ => out.push_str(&format!("line {i}: some text that repeats a little\n")),
        }
    }
    out.into_bytes()
}

fn hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// The content records of a packet: (delta records as (content, base), whole-content hashes).
type Contents = (Vec<([u8; 32], [u8; 32])>, Vec<[u8; 32]>);

fn contents(parts: &[Vec<u8>]) -> Contents {
    let (mut deltas, mut whole) = (Vec::new(), Vec::new());
    for r in parts
        .iter()
        .flat_map(|p| msite_packet::decode_from_slice(p).expect("a packet").2)
    {
        match r {
            Record::Delta { hash, base, .. } => deltas.push((hash, base)),
            Record::Blob { hash, .. } => whole.push(hash),
            _ => {}
        }
    }
    (deltas, whole)
}

/// The same packet (same id, header and signature) with each record passed through `f`.
fn rewrite(parts: Vec<Vec<u8>>, mut f: impl FnMut(Record) -> Record) -> Vec<Vec<u8>> {
    use msite_packet::{decode_from_slice, MemPacketWriter, WriteOptions};
    let (info, header, _) = decode_from_slice(&parts[0]).expect("a packet");
    let mut opts = WriteOptions::new(info.packet_id);
    opts.minor = msite_packet::format::FORMAT_MINOR;
    let mut w = MemPacketWriter::new(info.kind, &header, opts).expect("a writer");
    for r in parts
        .iter()
        .flat_map(|p| decode_from_slice(p).expect("a packet").2)
    {
        w.push_record(&f(r)).expect("a record");
    }
    w.finish().expect("the packet").0
}

fn cat<F: StoreFactory>(f: &Family<'_, F>, i: usize, path: &str) -> Vec<u8> {
    f.sites[i].cat(&VersionSel::parse(path).unwrap()).unwrap()
}

/// Two replicas that both hold version 1 of `f.txt` (acknowledged), and version 2 checked in
/// at r0: returns the contents of both versions.
fn acknowledged_v1<F: StoreFactory>(f: &Family<'_, F>) -> (Vec<u8>, Vec<u8>) {
    f.settle(&[(0, 1)]);
    let (v1, v2) = (text(3000, None), text(3000, Some(1500)));
    f.sites[0].checkin("f.txt", "main", &v1, "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.sites[0].checkin("f.txt", "main", &v2, "u", "").unwrap();
    (v1, v2)
}

/// A version whose base the target acknowledged travels as a delta against it, much smaller
/// than the version; the target rebuilds it byte for byte and the digests agree.
pub fn case_delta_shipped_when_the_target_holds_the_base<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 31);
    let (v1, v2) = acknowledged_v1(&f);
    let parts = f.export(0, 1).unwrap();
    let (deltas, whole) = contents(&parts);
    assert_eq!(deltas, vec![(hash(&v2), hash(&v1))], "v2 as a delta on v1");
    assert!(whole.is_empty(), "no content goes whole: {whole:?}");
    let frame: usize = parts
        .iter()
        .flat_map(|p| msite_packet::decode_from_slice(p).unwrap().2)
        .map(|r| match r {
            Record::Delta { frame, .. } => frame.len(),
            _ => 0,
        })
        .sum();
    assert!(
        frame * 20 < v2.len(),
        "a delta of {frame} bytes for {}",
        v2.len()
    );
    assert!(applied(&f.import(1, parts).unwrap()));
    assert!(cat(&f, 1, "f.txt") == v2, "v2 differs at r1");
    assert!(cat(&f, 1, "f.txt@@main/1") == v1, "v1 differs at r1");
    f.settle(&[(0, 1)]);
    f.assert_converged();
}

/// A version whose base the target has not acknowledged goes whole; one whose base is earlier
/// in the same packet (and every version of a creation packet after the first) goes as a delta
/// against it.
pub fn case_content_goes_whole_when_the_base_is_not_known_held<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 32);
    f.settle(&[(0, 1)]);
    let (v1, v2, v3) = (text(2000, None), text(2000, Some(5)), text(2000, Some(9)));
    f.sites[0].checkin("f.txt", "main", &v1, "u", "").unwrap();
    let first = f.export(0, 1).unwrap();
    f.sites[0].checkin("f.txt", "main", &v2, "u", "").unwrap();
    let second = f.export(0, 1).unwrap();
    let (deltas, whole) = contents(&second);
    assert!(deltas.is_empty(), "v1 is not acknowledged: {deltas:?}");
    assert_eq!(whole, vec![hash(&v2)], "v2 goes whole");
    f.sites[0].checkin("f.txt", "main", &v3, "u", "").unwrap();
    assert!(applied(&f.import(1, first).unwrap()));
    assert!(applied(&f.import(1, second).unwrap()));
    let (r2, creation) = f.mkreplica_keeping_packet(0, "r2");
    let (deltas, _) = contents(&creation);
    assert_eq!(
        deltas,
        vec![(hash(&v2), hash(&v1)), (hash(&v3), hash(&v2))],
        "a creation packet's versions against the ones before them"
    );
    assert!(cat(&f, r2, "f.txt@@main/2") == v2, "v2 differs at r2");
    assert!(cat(&f, r2, "f.txt") == v3, "v3 differs at r2");
    f.settle(&mesh(3));
    f.assert_converged();
}

/// A delta against content the receiver does not hold is refused, naming both contents and
/// what to do, and changes nothing; a delta that does not rebuild the content its hash names
/// is refused too. The genuine packet then applies.
pub fn case_delta_with_a_missing_base_or_corrupt_frame_is_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 33);
    let (_, v2) = acknowledged_v1(&f);
    let genuine = f.export(0, 1).unwrap();
    let before = f.sites[1].digest().unwrap();
    let row = f.sites[1].own_row().unwrap();
    let missing = rewrite(genuine.clone(), |r| match r {
        Record::Delta {
            hash, size, frame, ..
        } => Record::Delta {
            hash,
            base: [7; 32],
            size,
            frame,
        },
        r => r,
    });
    let err = f.import(1, missing).expect_err("a base it does not hold");
    assert!(matches!(err, CoreError::Refused(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("0707070707070707"), "names the base: {msg}");
    assert!(
        msg.contains(&crate::ids::hex(&hash(&v2)[..8])),
        "names v2: {msg}"
    );
    assert!(msg.contains("nothing was applied"), "{msg}");
    let corrupt = rewrite(genuine.clone(), |r| match r {
        Record::Delta {
            hash,
            base,
            size,
            mut frame,
        } => {
            let n = frame.len();
            frame[n / 2] ^= 0x55;
            Record::Delta {
                hash,
                base,
                size,
                frame,
            }
        }
        r => r,
    });
    let err = f.import(1, corrupt).expect_err("a corrupt delta");
    assert!(err.to_string().contains("does not rebuild"), "{err}");
    assert_eq!(
        f.sites[1].digest().unwrap(),
        before,
        "the refusals changed nothing"
    );
    assert_eq!(f.sites[1].own_row().unwrap(), row, "no entry applied");
    assert!(applied(&f.import(1, genuine).unwrap()));
    assert!(cat(&f, 1, "f.txt") == v2, "v2 differs at r1");
    f.settle(&[(0, 1)]);
    f.assert_converged();
}

/// A packet to a replica that is restoring (its holdings are uncertain: the backup may lack
/// what it acknowledged) carries content whole, even where the target had acknowledged the
/// base; the restoration completes and the family converges.
pub fn case_packet_to_a_restoring_replica_carries_whole_content<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 34);
    let (_, v2) = acknowledged_v1(&f);
    let backup = f.backup(1);
    f.restore(1, &backup);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.sync(1, 0);
    let parts = f.export(0, 1).unwrap();
    let (deltas, whole) = contents(&parts);
    assert!(
        deltas.is_empty(),
        "a delta to a restoring replica: {deltas:?}"
    );
    assert_eq!(whole, vec![hash(&v2)], "v2 goes whole");
    f.import(1, parts).unwrap();
    f.settle(&[(0, 1)]);
    f.assert_converged();
    assert!(cat(&f, 1, "f.txt") == v2, "v2 differs at r1");
}
