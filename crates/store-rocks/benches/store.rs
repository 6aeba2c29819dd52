//! The store ceiling of RocksDB: 1M batched puts (16-byte keys, 256-byte values, 10k per
//! batch, unsynced) in ascending and in scattered key order, and one ordered full scan.
//! Baseline in the same run (`plain_*`): the same writes with the `rocksdb` crate alone — one
//! database, default options plus LZ4, one `WriteBatch` per batch, WAL on, no sync — so the
//! ratio is what the `Store` trait and its column families cost.
//! Run: `cargo bench -p msite-store-rocks --bench store`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use msite_core::testkit::bench::{full_scan, key, write_records, ValuePool, BATCH, RECORDS};
use msite_store_rocks::RocksStore;

fn fresh() -> (RocksStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path()).unwrap();
    (store, dir)
}

/// A plain RocksDB database.
fn plain() -> (rocksdb::DB, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let db = rocksdb::DB::open(&opts, dir.path()).unwrap();
    (db, dir)
}

fn plain_write(db: &rocksdb::DB, pool: &ValuePool, sequential: bool) {
    let mut i = 0;
    while i < RECORDS {
        let mut batch = rocksdb::WriteBatch::default();
        let end = (i + BATCH).min(RECORDS);
        for j in i..end {
            batch.put(key(j, sequential), pool.value(j));
        }
        db.write(batch).unwrap();
        i = end;
    }
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
    for (name, sequential) in [
        ("plain_write_1m_sequential", true),
        ("plain_write_1m_scattered", false),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                plain,
                |(db, dir)| {
                    plain_write(&db, &pool, sequential);
                    (db, dir)
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
