//! The store ceiling of SQLite: 1M batched puts (16-byte keys, 256-byte values, 10k per
//! batch, unsynced) in ascending and in scattered key order, and one ordered full scan.
//! Baseline in the same run (`plain_*`): the same writes with rusqlite alone — one `WITHOUT
//! ROWID` table, WAL, `synchronous = NORMAL`, the same page cache, a cached prepared `INSERT`,
//! one transaction per batch — so the ratio is what the `Store` trait costs.
//! Run: `cargo bench -p msite-store-sqlite --bench store`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use msite_core::testkit::bench::{full_scan, key, write_records, ValuePool, BATCH, RECORDS};
use msite_store_sqlite::SqliteStore;

fn fresh() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    (store, dir)
}

/// A plain rusqlite database configured like `SqliteStore`.
fn plain() -> (rusqlite::Connection, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("plain.sqlite3")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "cache_size", -65536).unwrap();
    conn.execute_batch("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        .unwrap();
    (conn, dir)
}

fn plain_write(conn: &mut rusqlite::Connection, pool: &ValuePool, sequential: bool) {
    let mut i = 0;
    while i < RECORDS {
        let tx = conn.transaction().unwrap();
        {
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)")
                .unwrap();
            let end = (i + BATCH).min(RECORDS);
            for j in i..end {
                put.execute((&key(j, sequential)[..], pool.value(j)))
                    .unwrap();
            }
            i = end;
        }
        tx.commit().unwrap();
    }
}

fn store_ceiling(c: &mut Criterion) {
    let pool = ValuePool::new();
    let mut g = c.benchmark_group("sqlite");
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
                |(mut conn, dir)| {
                    plain_write(&mut conn, &pool, sequential);
                    (conn, dir)
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
