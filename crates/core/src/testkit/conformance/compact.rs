//! Conformance cases for [`Store::compact`] and [`Store::size_on_disk`] (`msite compact`):
//! compaction changes no row, hands the space of deleted rows back, and leaves a store that
//! takes writes and reopens.

use super::*;

/// Incompressible rows in two keyspaces (Blobs' past RocksDB's blob threshold), nine in ten
/// of them deleted again: what the store must keep, and the bytes of everything written.
fn write_then_delete_most<S: Store>(s: &S) -> (Dump, u64) {
    let mut model = fill(s, Keyspace::State, 3_000, 2_048, 0xc0);
    model.extend(fill(s, Keyspace::Blobs, 200, 9_000, 0xc1));
    let written = model
        .iter()
        .map(|((_, k), v)| (k.len() + v.len()) as u64)
        .sum();
    let doomed: Vec<(Keyspace, Vec<u8>)> = model
        .keys()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(_, key)| key.clone())
        .collect();
    for chunk in doomed.chunks(500) {
        let mut b = s.batch();
        for (ks, key) in chunk {
            b.delete(*ks, key);
            model.remove(&(*ks, key.clone()));
        }
        write(s, b, WriteOptions::SYNC);
    }
    (model, written)
}

/// After most rows are deleted, compaction keeps every row left (by scan, across a reopen),
/// brings none back, takes a write afterwards, and at least halves the size on disk.
pub fn case_compact_keeps_the_rows_and_returns_deleted_space<F: StoreFactory>(h: &Harness<F>) {
    let mut model;
    {
        let s = h.open();
        let written;
        (model, written) = write_then_delete_most(&s);
        let before = must(s.size_on_disk(), "size_on_disk");
        assert!(
            before >= written / 2,
            "size_on_disk says {before} bytes for a store {written} bytes were written to"
        );
        must(s.compact(), "compact");
        let after = must(s.size_on_disk(), "size_on_disk");
        assert_eq!(dump(&s), model, "compaction changed the rows");
        assert!(
            after <= before / 2,
            "compaction left {after} of {before} bytes where nine rows in ten were deleted"
        );
        let live: u64 = model
            .iter()
            .map(|((_, k), v)| (k.len() + v.len()) as u64)
            .sum();
        assert!(
            after >= live / 2,
            "size_on_disk says {after} bytes for {live} bytes of incompressible rows"
        );
        put(
            &s,
            Keyspace::Meta,
            b"after",
            b"written after the compaction",
        );
        model.insert(
            (Keyspace::Meta, b"after".to_vec()),
            b"written after the compaction".to_vec(),
        );
        write(&s, s.batch(), WriteOptions::SYNC);
    }
    let s = h.open();
    assert_eq!(dump(&s), model, "after a reopen");
    must(s.check_integrity(), "check_integrity after compaction");
}

/// Compacting a new, empty store and compacting twice are harmless.
pub fn case_compact_of_an_empty_store_and_twice<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    must(s.compact(), "compact of an empty store");
    put(&s, Keyspace::Peers, b"k", b"v");
    must(s.compact(), "compact");
    must(s.compact(), "compact again");
    assert_eq!(get(&s, Keyspace::Peers, b"k"), Some(b"v".to_vec()));
}
