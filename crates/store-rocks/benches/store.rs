//! The store ceiling of RocksDB: 1M batched puts (16-byte keys, 256-byte values, 10k per
//! batch, unsynced) in ascending and in scattered key order, and one ordered full scan.
//! Run: `cargo bench -p msite-store-rocks --bench store`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use msite_core::testkit::bench::{full_scan, write_records, ValuePool, RECORDS};
use msite_store_rocks::RocksStore;

fn fresh() -> (RocksStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path()).unwrap();
    (store, dir)
}

fn store_ceiling(c: &mut Criterion) {
    let pool = ValuePool::new();
    let mut g = c.benchmark_group("rocksdb");
    g.sample_size(10);
    g.throughput(Throughput::Elements(RECORDS));
    for (name, sequential) in [("write_1m_sequential", true), ("write_1m_scattered", false)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                fresh,
                |(store, dir)| {
                    write_records(&store, &pool, RECORDS, sequential).unwrap();
                    (store, dir)
                },
                BatchSize::PerIteration,
            )
        });
    }
    let (store, _dir) = fresh();
    write_records(&store, &pool, RECORDS, false).unwrap();
    g.bench_function("scan_1m", |b| {
        b.iter(|| assert_eq!(full_scan(&store).unwrap().0, RECORDS));
    });
    g.finish();
}

criterion_group!(benches, store_ceiling);
criterion_main!(benches);
