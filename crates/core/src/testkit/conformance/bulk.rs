//! Conformance cases for [`Store::bulk_load`] (a replica made from a snapshot creation
//! packet): every backend loads sorted runs across keyspaces, a key given again in a later
//! run ends with the later value, the rows are durable across a reopen when the load returns,
//! and an error from the rows stops the load with an error and leaves the store usable.

use super::*;

/// A row as [`Store::bulk_load`] takes it.
type BulkRow = (Keyspace, Vec<u8>, Vec<u8>);

/// Runs of rows as a snapshot's loader gives them: one keyspace and ascending keys per run,
/// keyspaces met again later, a later run overwriting keys of an earlier one, values small and
/// large (past RocksDB's blob threshold). Returns the rows and the store they must make.
fn runs() -> (Vec<BulkRow>, Dump) {
    let mut rng = Rng::new(0xb01c);
    let mut rows = Vec::new();
    let plan: [(Keyspace, u32, u32, usize); 6] = [
        (Keyspace::Meta, 0, 20, 16),
        (Keyspace::State, 0, 2_000, 64),
        (Keyspace::Blobs, 0, 300, 9_000),
        (Keyspace::Epochs, 0, 5, 8),
        // Again: keys below the first State run's last key, some of them the same keys.
        (Keyspace::State, 1_990, 2_100, 32),
        (Keyspace::Blobs, 299, 301, 100_000),
    ];
    for (ks, from, to, len) in plan {
        for i in from..to {
            let key = format!("{}-{i:06}", ks.name()).into_bytes();
            rows.push((ks, key, rng.bytes(len)));
        }
    }
    let mut model = Dump::new();
    for (ks, k, v) in &rows {
        model.insert((*ks, k.clone()), v.clone());
    }
    (rows, model)
}

/// Every row loaded is read back, by get and by scan, and still there after a reopen.
pub fn case_bulk_load_reads_back_every_run<F: StoreFactory>(h: &Harness<F>) {
    let (rows, model) = runs();
    {
        let s = h.open();
        let mut it = rows.clone().into_iter().map(Ok);
        let n = must(s.bulk_load(&mut it), "bulk_load");
        assert_eq!(n, rows.len() as u64, "bulk_load counts every row it wrote");
        assert_eq!(
            dump(&s),
            model,
            "the store holds the later value of each key"
        );
        let (ks, k, v) = &rows[rows.len() / 2];
        assert_eq!(get(&s, *ks, k).as_ref(), Some(v));
        put(
            &s,
            Keyspace::Peers,
            b"after",
            b"an ordinary write after the load",
        );
    }
    if !h.requires(|c| c.persistent, "persistent") {
        return;
    }
    let s = h.open();
    let mut reopened = dump(&s);
    reopened.remove(&(Keyspace::Peers, b"after".to_vec()));
    assert_eq!(reopened, model, "a returned load is durable");
}

/// An error from the rows ends the load with an error; the store still takes writes.
pub fn case_bulk_load_stops_at_an_error<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let (rows, _) = runs();
    let mut it = rows
        .into_iter()
        .take(500)
        .map(Ok)
        .chain(std::iter::once(Err(Error::Corruption(
            "the packet is damaged".into(),
        ))));
    let err = s.bulk_load(&mut it).expect_err("the load must fail");
    assert!(
        err.to_string().contains("the packet is damaged"),
        "the rows' error is passed on: {err}"
    );
    put(&s, Keyspace::Meta, b"k", b"still writable");
    assert_eq!(
        get(&s, Keyspace::Meta, b"k").as_deref(),
        Some(&b"still writable"[..])
    );
}

/// Nothing to load is a load of nothing.
pub fn case_bulk_load_of_no_rows<F: StoreFactory>(h: &Harness<F>) {
    let s = h.open();
    let mut it = std::iter::empty();
    assert_eq!(must(s.bulk_load(&mut it), "bulk_load"), 0);
    assert!(dump(&s).is_empty());
}
