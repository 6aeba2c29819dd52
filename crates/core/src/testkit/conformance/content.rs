//! Conformance cases for version content kept in chunks ([`crate::content`]): every backend
//! stores content larger than a chunk as bounded values, gives it back byte for byte (whole
//! and streamed), removes every chunk with the content, and refuses content over the site's
//! limit without reading past it; versions of one element that differ a little are stored
//! as bounded delta chains ([`crate::packed`]) that read back identical and verified.

use std::sync::Arc;

use super::*;
use crate::content::{self, Source, CHUNK_LEN};
use crate::ids::Hash;
use crate::packed;
use crate::txn::Txn;
use crate::{Replica, SimEnv, VersionSel};

fn new_replica<S: Store>(store: S) -> Replica<S> {
    Replica::init(store, Arc::new(SimEnv::new(5)), "fam", "r0").expect("init")
}

fn hash_of(bytes: &[u8]) -> Hash {
    *blake3::hash(bytes).as_bytes()
}

/// Every `Blobs` key of the content `hash` with its value's length.
fn stored_keys(r: &(impl ReadView + ?Sized), hash: &Hash) -> Vec<(Vec<u8>, usize)> {
    scan_all(r, Keyspace::Blobs, KeyRange::prefix(hash))
        .into_iter()
        .map(|(k, v)| (k, v.len()))
        .collect()
}

fn cat<S: Store>(r: &Replica<S>, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let sel = VersionSel::parse(path).expect("selector");
    let n = r.cat_to(&sel, &mut out).expect("cat");
    assert_eq!(n, out.len() as u64, "cat_to reports what it wrote");
    out
}

/// Content larger than a chunk is stored as chunks of at most [`CHUNK_LEN`] under its hash,
/// reads back identical, and survives reopening the store.
pub fn case_chunked_content_round_trips<F: StoreFactory>(h: &Harness<F>) {
    let data = Rng::new(21).bytes(3 * CHUNK_LEN + 12_345);
    let hash = hash_of(&data);
    {
        let r = new_replica(h.open());
        r.checkin("big", "main", &data, "u", "").expect("checkin");
        let keys = stored_keys(r.store(), &hash);
        let expect: Vec<Vec<u8>> = (0..4)
            .map(|i| content::chunk_key(&hash, i).to_vec())
            .collect();
        assert_eq!(
            keys.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            expect
        );
        assert!(
            keys.iter().all(|(_, n)| *n <= CHUNK_LEN),
            "a chunk is too big"
        );
        assert_eq!(
            content::size(r.store(), &hash).unwrap(),
            Some(data.len() as u64)
        );
        assert!(cat(&r, "big") == data, "content differs");
        assert!(r.cat(&VersionSel::parse("big").unwrap()).unwrap() == data);
    }
    if !h.requires(|c| c.persistent, "persistent") {
        return;
    }
    let r = Replica::open(h.open(), Arc::new(SimEnv::new(5))).expect("reopen");
    assert!(cat(&r, "big") == data, "content differs after reopen");
}

/// The store's reader yields one chunk at a time; a file is checked in by streaming it;
/// content of at most a chunk stays one value under its hash.
pub fn case_chunked_content_streams<F: StoreFactory>(h: &Harness<F>) {
    let r = new_replica(h.open());
    let data = Rng::new(22).bytes(2 * CHUNK_LEN + 1);
    let file = h.path("content");
    std::fs::write(&file, &data).expect("write the file");
    r.checkin_from("f", "main", Source::File(&file), "u", "")
        .expect("checkin from a file");
    let view = r.view();
    let mut rd = view.blob_reader(&hash_of(&data)).unwrap().expect("present");
    let mut got = Vec::new();
    let mut chunks = 0;
    while let Some(c) = rd.next_chunk().unwrap() {
        assert!(c.len() <= CHUNK_LEN, "a chunk of {} bytes", c.len());
        got.extend_from_slice(&c);
        chunks += 1;
    }
    assert_eq!(chunks, 3);
    assert!(got == data, "streamed content differs");
    let small = b"small content".to_vec();
    r.checkin("s", "main", &small, "u", "").unwrap();
    assert_eq!(
        get(r.store(), Keyspace::Blobs, &hash_of(&small)),
        Some(small)
    );
}

/// Chunks written before their head are invisible to the digest; deleting content removes
/// every one of its chunks and gives back the digest from before.
pub fn case_deleting_chunked_content_removes_all_chunks<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let data = Rng::new(23).bytes(5 * CHUNK_LEN / 2);
    let hash = hash_of(&data);
    let before = crate::vob::digest(&s).unwrap();
    let staged = content::stage(&s, Source::Bytes(&data), "data", u64::MAX).unwrap();
    assert!(
        !content::contains(&s, &hash).unwrap(),
        "present before its head"
    );
    assert_eq!(stored_keys(&s, &hash).len(), 2, "chunks after the head");
    assert_eq!(
        crate::vob::digest(&s).unwrap(),
        before,
        "headless chunks in the digest"
    );
    let mut txn = Txn::new(&s);
    staged.put_head(&mut txn).unwrap();
    txn.commit(WriteOptions::SYNC).unwrap();
    assert!(content::contains(&s, &hash).unwrap());
    assert_ne!(crate::vob::digest(&s).unwrap(), before);
    let mut txn = Txn::new(&s);
    content::delete_in(&mut txn, &hash).unwrap();
    txn.commit(WriteOptions::SYNC).unwrap();
    assert!(
        stored_keys(&s, &hash).is_empty(),
        "chunks left after delete"
    );
    assert_eq!(crate::vob::digest(&s).unwrap(), before);
}

/// A check-in over the site's limit fails with the limit in its message and changes
/// nothing; an endless source stops at the limit.
pub fn case_content_over_the_limit_is_refused<F: StoreFactory>(h: &Harness<F>) {
    let r = new_replica(h.open());
    let limit = CHUNK_LEN as u64 + 10;
    r.set_max_version_bytes(limit).unwrap();
    assert_eq!(r.max_version_bytes().unwrap(), limit);
    let file = h.path("big");
    std::fs::write(&file, vec![7u8; 2 * CHUNK_LEN]).unwrap();
    let before = dump(r.store());
    let err = r
        .checkin_from("big", "main", Source::File(&file), "u", "")
        .expect_err("over the limit");
    assert!(
        err.to_string().contains(&format!("limit of {limit} bytes")),
        "{err}"
    );
    assert!(
        dump(r.store()) == before,
        "a refused check-in changed the store"
    );
    #[cfg(unix)]
    {
        let zero = Path::new("/dev/zero");
        let err = r
            .checkin_from("zero", "main", Source::File(zero), "u", "")
            .expect_err("endless content");
        assert!(err.to_string().contains("limit"), "{err}");
        assert!(
            dump(r.store()) == before,
            "a refused check-in changed the store"
        );
    }
    r.checkin("ok", "main", &vec![1u8; limit as usize], "u", "")
        .expect("content at the limit");
}

/// Text-like content: `lines` numbered lines, line `edit` (if any) changed.
fn text(lines: usize, edit: Option<usize>, tag: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        let mark = if Some(i) == edit { tag } else { "same" };
        out.extend_from_slice(
            format!("fn item_{i}() -> u64 {{ {} /* {mark} */ }}\n", i * 31 % 97).as_bytes(),
        );
    }
    out
}

/// The bytes of every `Blobs` value.
fn stored_bytes(r: &(impl ReadView + ?Sized)) -> usize {
    scan_all(r, Keyspace::Blobs, KeyRange::all())
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum()
}

/// Checks in `n` versions of one text file, each a one-line edit of the last; their contents.
fn edited_versions<S: Store>(r: &Replica<S>, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|v| {
            let data = text(2000, Some(v * 7 % 2000), &format!("edit {v}"));
            r.checkin("lib.rs", "main", &data, "u", "")
                .expect("checkin");
            data
        })
        .collect()
}

/// Versions of one element that differ a little are stored as deltas against the previous
/// version (bounded chains, the base's marker beside it), read back identical, survive
/// reopening, and the digest is the one the same content stored plain gives.
pub fn case_versions_are_stored_as_deltas<F: StoreFactory>(h: &Harness<F>) {
    let n = usize::from(packed::MAX_DEPTH) + 3;
    let (versions, digest) = {
        let r = new_replica(h.open());
        let versions = edited_versions(&r, n);
        let raw: usize = versions.iter().map(Vec::len).sum();
        let stored = stored_bytes(r.store());
        assert!(
            stored * 10 < raw,
            "{stored} bytes stored for {raw} of versions"
        );
        let (v1, v2) = (hash_of(&versions[0]), hash_of(&versions[1]));
        let key = packed::packed_key(&v2);
        let delta = get(r.store(), Keyspace::Blobs, &key).expect("version 2 is packed");
        assert_eq!(delta[0], 1, "version 2 is a delta");
        assert_eq!(&delta[5..37], &v1[..], "against version 1");
        assert!(get(r.store(), Keyspace::Blobs, &packed::dependent_key(&v1, &v2)).is_some());
        // The chain restarts: the version after the deepest delta is a delta against the
        // chain's root (version 1), at depth 1.
        let restart = hash_of(&versions[usize::from(packed::MAX_DEPTH) + 1]);
        let v = get(r.store(), Keyspace::Blobs, &packed::packed_key(&restart)).unwrap();
        assert_eq!(
            (v[0], &v[5..37], v[37]),
            (1, &v1[..], 1),
            "restart against the root"
        );
        assert!(get(
            r.store(),
            Keyspace::Blobs,
            &packed::dependent_key(&v1, &restart)
        )
        .is_some());
        for (i, v) in versions.iter().enumerate() {
            let sel = VersionSel::parse(&format!("lib.rs@@main/{}", i + 1)).unwrap();
            assert!(r.cat(&sel).unwrap() == *v, "version {} differs", i + 1);
        }
        (versions, r.digest().unwrap())
    };
    let s = h.open();
    let r = Replica::open(s, Arc::new(SimEnv::new(5))).expect("reopen");
    let last = VersionSel::parse("lib.rs").unwrap();
    assert!(r.cat(&last).unwrap() == versions[n - 1], "content differs");
    assert_eq!(r.digest().unwrap(), digest);
    unpack_all(r.store());
    assert!(stored_bytes(r.store()) > versions.iter().map(Vec::len).sum::<usize>());
    assert_eq!(
        r.digest().unwrap(),
        digest,
        "the digest depends on the encoding"
    );
    assert!(
        r.cat(&last).unwrap() == versions[n - 1],
        "plain content differs"
    );
}

/// Rewrites every packed content plain and drops the markers.
fn unpack_all<S: Store>(s: &S) {
    let mut txn = Txn::new(s);
    for (k, v) in scan_all(s, Keyspace::Blobs, KeyRange::all()) {
        if let Some(hash) = content::head_of(&k).filter(|_| k.len() == 33) {
            let data = packed::decode(s, &hash, &v, packed::MAX_DEPTH).expect("decodes");
            txn.put(Keyspace::Blobs, &hash, &data);
            txn.delete(Keyspace::Blobs, &k);
        } else if k.len() == 65 {
            txn.delete(Keyspace::Blobs, &k);
        }
    }
    txn.commit(WriteOptions::SYNC).unwrap();
}

/// Content that does not compress stays plain under its hash; deleting a delta's base first
/// stores the delta whole, so every other version still reads back and no marker is left.
pub fn case_deleting_a_delta_base_keeps_its_dependents<F: StoreFactory>(h: &Harness<F>) {
    let r = new_replica(h.open());
    let noise = Rng::new(24).bytes(4096);
    r.checkin("noise", "main", &noise, "u", "").unwrap();
    assert_eq!(
        stored_keys(r.store(), &hash_of(&noise)),
        vec![(hash_of(&noise).to_vec(), noise.len())]
    );
    let versions = edited_versions(&r, 4);
    let hashes: Vec<Hash> = versions.iter().map(|v| hash_of(v)).collect();
    let mut txn = Txn::new(r.store());
    content::delete_in(&mut txn, &hashes[1]).unwrap();
    txn.commit(WriteOptions::SYNC).unwrap();
    assert!(!content::contains(r.store(), &hashes[1]).unwrap());
    assert!(stored_keys(r.store(), &hashes[1]).is_empty(), "keys left");
    for i in [0, 2, 3] {
        let got = content::read_all(r.store(), &hashes[i]).unwrap();
        assert!(
            got.as_ref() == Some(&versions[i]),
            "version {} differs",
            i + 1
        );
    }
    let packed3 = get(r.store(), Keyspace::Blobs, &packed::packed_key(&hashes[2])).unwrap();
    assert_eq!(packed3[0], 0, "the dependent of a deleted base is whole");
}

/// A packed value that was damaged (a flipped byte, a missing base) reads as an error, never
/// as other content.
pub fn case_damaged_packed_content_is_an_error<F: StoreFactory>(h: &Harness<F>) {
    let r = new_replica(h.open());
    let versions = edited_versions(&r, 3);
    let (v1, v3) = (hash_of(&versions[0]), hash_of(&versions[2]));
    let key = packed::packed_key(&v3);
    let mut v = get(r.store(), Keyspace::Blobs, &key).unwrap();
    let last = v.len() - 3;
    v[last] ^= 0x5a;
    r.store()
        .put_one(Keyspace::Blobs, &key, &v, WriteOptions::SYNC)
        .unwrap();
    assert!(
        content::read_all(r.store(), &v3).is_err(),
        "damage undetected"
    );
    let mut b = r.store().batch();
    b.delete(Keyspace::Blobs, &v1);
    b.delete(Keyspace::Blobs, &packed::packed_key(&v1));
    r.store().write(b, WriteOptions::SYNC).unwrap();
    let v2 = hash_of(&versions[1]);
    assert!(
        content::read_all(r.store(), &v2).is_err(),
        "a missing base is undetected"
    );
}

/// The packed value of `hash`: (tag, base, depth); base and depth are zero for whole content.
fn packed_form(r: &(impl ReadView + ?Sized), hash: &Hash) -> (u8, Hash, u8) {
    let v = get(r, Keyspace::Blobs, &packed::packed_key(hash)).expect("packed");
    match v[0] {
        1 => (1, v[5..37].try_into().unwrap(), v[37]),
        tag => (tag, [0; 32], 0),
    }
}

/// A long history of small edits keeps one whole version: each full chain restarts as a delta
/// against the root, no chain is deeper than [`packed::MAX_DEPTH`], and every version reads
/// back identical, also after reopening.
pub fn case_long_histories_restart_chains_as_deltas<F: StoreFactory>(h: &Harness<F>) {
    let max = usize::from(packed::MAX_DEPTH);
    let n = 3 * max + 5;
    let versions = {
        let r = new_replica(h.open());
        edited_versions(&r, n)
    };
    let r = Replica::open(h.open(), Arc::new(SimEnv::new(5))).expect("reopen");
    let root = hash_of(&versions[0]);
    assert_eq!(packed_form(r.store(), &root).0, 0, "version 1 is whole");
    for (i, v) in versions.iter().enumerate().skip(1) {
        let (tag, base, depth) = packed_form(r.store(), &hash_of(v));
        assert_eq!(tag, 1, "version {} is a delta", i + 1);
        assert!(
            usize::from(depth) <= max,
            "version {} at depth {depth}",
            i + 1
        );
        // Versions max+2, 2max+2, ... (indices max+1, 2max+1, ...) restart against the
        // root; the others follow their previous version.
        let expect = if i > 1 && (i - 1) % max == 0 {
            root
        } else {
            hash_of(&versions[i - 1])
        };
        assert_eq!(base, expect, "the base of version {}", i + 1);
        assert_eq!(
            usize::from(depth),
            (i - 1) % max + 1,
            "depth of version {}",
            i + 1
        );
        let sel = VersionSel::parse(&format!("lib.rs@@main/{}", i + 1)).unwrap();
        assert!(r.cat(&sel).unwrap() == *v, "version {} differs", i + 1);
    }
}

/// Text-like content that drifts: version `v` replaces a new block of 150 lines with lines
/// that do not compress, so each version is close to the previous one and far from the first.
fn drifted(v: usize) -> Vec<u8> {
    let mut out = b"// drifting file, same first line\n".to_vec();
    for i in 0..2000usize {
        let line = if i / 150 < v {
            format!(
                "let x{i} = \"{}\";\n",
                crate::ids::hex(&hash_of(&i.to_be_bytes())[..12])
            )
        } else {
            format!("fn item_{i}() -> u64 {{ {} }}\n", i * 31 % 97)
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// A version that restarts a full chain of a file that drifted far from the chain's root is
/// stored whole (a delta against the root would cost more than half of its whole form), and
/// becomes the root of the chain after it.
pub fn case_a_drifted_version_restarts_whole<F: StoreFactory>(h: &Harness<F>) {
    let max = usize::from(packed::MAX_DEPTH);
    let r = new_replica(h.open());
    let versions: Vec<Vec<u8>> = (0..max + 3).map(drifted).collect();
    for v in &versions {
        r.checkin("drift.rs", "main", v, "u", "").expect("checkin");
    }
    let restart = hash_of(&versions[max + 1]);
    assert_eq!(
        packed_form(r.store(), &restart).0,
        0,
        "the restart is whole"
    );
    let after = packed_form(r.store(), &hash_of(&versions[max + 2]));
    assert_eq!(
        after,
        (1, restart, 1),
        "the next version follows the new root"
    );
    for (i, v) in versions.iter().enumerate() {
        let sel = VersionSel::parse(&format!("drift.rs@@main/{}", i + 1)).unwrap();
        assert!(r.cat(&sel).unwrap() == *v, "version {} differs", i + 1);
    }
}

/// Content received as deltas (as an import stores them) follows its base while the chain has
/// room and restarts full chains against their root, so a long received history keeps one
/// whole version and reads back identical.
pub fn case_received_deltas_restart_full_chains<F: StoreFactory>(h: &Harness<F>) {
    let max = usize::from(packed::MAX_DEPTH);
    let s = h.open();
    let versions: Vec<Vec<u8>> = (0..2 * max + 4)
        .map(|v| text(2000, Some(v * 7 % 2000), &format!("edit {v}")))
        .collect();
    let mut txn = Txn::new(&s);
    packed::store_whole(&mut txn, &hash_of(&versions[0]), versions[0].clone()).unwrap();
    for w in versions.windows(2) {
        let (base, hash) = (hash_of(&w[0]), hash_of(&w[1]));
        let frame = packed::delta_frame(&w[1], &w[0]).unwrap();
        packed::store_received(&mut txn, &hash, &w[1], (&base, &frame)).unwrap();
    }
    txn.commit(WriteOptions::SYNC).unwrap();
    let root = hash_of(&versions[0]);
    for (i, v) in versions.iter().enumerate().skip(1) {
        let (tag, base, depth) = packed_form(&s, &hash_of(v));
        assert_eq!(tag, 1, "version {} is a delta", i + 1);
        assert!(
            usize::from(depth) <= max,
            "version {} at depth {depth}",
            i + 1
        );
        if i > 1 && (i - 1) % max == 0 {
            assert_eq!((base, depth), (root, 1), "version {} restarts", i + 1);
        }
        let got = content::read_all(&s, &hash_of(v)).unwrap();
        assert!(got.as_ref() == Some(v), "version {} differs", i + 1);
    }
}
