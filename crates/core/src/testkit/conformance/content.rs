//! Conformance cases for version content kept in chunks ([`crate::content`]): every backend
//! stores content larger than a chunk as bounded values, gives it back byte for byte (whole
//! and streamed), removes every chunk with the content, and refuses content over the site's
//! limit without reading past it.

use std::sync::Arc;

use super::*;
use crate::content::{self, Source, CHUNK_LEN};
use crate::ids::Hash;
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
