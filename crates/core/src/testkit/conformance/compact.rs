//! Conformance cases for [`Store::compact`] and [`Store::size_on_disk`] (`msite compact`):
//! compaction changes no row, hands the space of deleted rows back, and leaves a store that
//! takes writes and reopens; rows read back the same between and after compactions,
//! wherever the store moved them.

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

/// A key of one to three letters from eight: 584 keys, dense enough that writes land inside
/// the ranges of whatever the store packed.
fn short_key(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(3) + 1;
    (0..len)
        .map(|_| b"abcdefgh"[rng.below(8) as usize])
        .collect()
}

/// One random batch over `keyspaces` (puts, deletes, range deletes, guards that hold: a
/// guard is checked against the store before the batch), written; the model follows it.
fn random_batch<S: Store>(s: &S, rng: &mut Rng, keyspaces: &[Keyspace], model: &mut Dump) {
    let before = model.clone();
    let mut b = s.batch();
    for _ in 0..rng.below(16) + 1 {
        let ks = keyspaces[rng.below(keyspaces.len() as u64) as usize];
        let k = short_key(rng);
        match rng.below(10) {
            0..=5 => {
                // Repetitive values, so that packing them pays.
                let v = b"entry ".repeat(rng.below(12) as usize);
                b.put(ks, &k, &v);
                model.insert((ks, k), v);
            }
            6 | 7 => {
                b.delete(ks, &k);
                model.remove(&(ks, k));
            }
            8 => {
                let end = short_key(rng);
                b.delete_range(ks, &k, &end);
                model.retain(|(kks, kk), _| *kks != ks || kk < &k || kk >= &end);
            }
            _ => {
                let current = before.get(&(ks, k.clone())).cloned();
                b.expect(ks, &k, current.as_deref());
            }
        }
    }
    write(s, b, WriteOptions::NO_SYNC);
}

/// Scan, last and get of random ranges and keys of `ks` agree with the model.
fn reads_match_model(r: &(impl ReadView + ?Sized), rng: &mut Rng, ks: Keyspace, model: &Dump) {
    let bound = |rng: &mut Rng| match rng.below(3) {
        0 => Bound::Included(short_key(rng)),
        1 => Bound::Excluded(short_key(rng)),
        _ => Bound::Unbounded,
    };
    let range = KeyRange {
        start: bound(rng),
        end: bound(rng),
    };
    let probe = short_key(rng);
    reads_agree(r, ks, &range, &probe, model, "");
}

/// Random writes over the oplog, the object base and Meta, with a compaction every 25
/// rounds, read back as the model says: by scan, last and get after every round, through a
/// snapshot taken after a compaction and read after the writes that followed it, across a
/// reopen, and with the integrity check passing. (A store that packs rows at compaction, as
/// SQLite's does, must read a key from wherever it is and move it on a write.)
pub fn case_random_ops_with_compactions_match_model<F: StoreFactory>(h: &Harness<F>) {
    let keyspaces = [Keyspace::Oplog, Keyspace::State, Keyspace::Meta];
    let mut rng = Rng::new(21);
    let mut model = Dump::new();
    {
        let s = h.open();
        let mut held = None;
        for round in 0..300u32 {
            random_batch(&s, &mut rng, &keyspaces, &mut model);
            let ks = keyspaces[rng.below(3) as usize];
            reads_match_model(&s, &mut rng, ks, &model);
            if round % 25 == 24 {
                if let Some((snap, seen)) = held.take() {
                    assert_eq!(dump(&snap), seen, "round {round}: a snapshot moved");
                }
                must(s.compact(), "compact");
                assert_eq!(dump(&s), model, "round {round}: after compaction");
                held = Some((must(s.snapshot(), "snapshot"), model.clone()));
            }
        }
        drop(held);
        must(s.check_integrity(), "check_integrity");
    }
    let s = h.open();
    assert_eq!(dump(&s), model, "after a reopen");
    must(s.check_integrity(), "check_integrity after a reopen");
}
