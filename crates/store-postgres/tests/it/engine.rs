//! What only the PostgreSQL store has: the key limit, the retry of a whole batch after a
//! serialization failure, the connection settings in the store directory, exclusive open
//! across directories that name one database.

use std::time::Duration;

use msite_core::store::{
    Error, KeyRange, Keyspace, ReadView, Store, StoreExt, WriteBatch, WriteOptions,
};
use msite_core::testkit::conformance::StoreFactory;
use msite_store_postgres::{ConnSettings, PgStore, MAX_KEY_LEN};

use crate::PgFactory;

/// Incompressible bytes (a simple generator: the test needs no statistics).
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A key at the limit (incompressible, so the index entry really is that long) is stored,
/// scanned and found by `last`; one byte more is refused before anything of the batch is
/// written, with a message that names the limit.
#[test]
fn keys_up_to_the_limit_work_and_longer_ones_are_refused_whole() {
    let f = PgFactory::new();
    let dir = tempfile::tempdir().unwrap();
    let s = f.open(&dir.path().join("store")).unwrap();
    let at_limit = noise(MAX_KEY_LEN, 7);
    s.put_one(Keyspace::State, &at_limit, b"ok", WriteOptions::SYNC)
        .unwrap();
    assert_eq!(
        s.get(Keyspace::State, &at_limit).unwrap(),
        Some(b"ok".to_vec())
    );
    let last = s.last(Keyspace::State, KeyRange::all()).unwrap();
    assert_eq!(last, Some((at_limit.clone(), b"ok".to_vec())));

    let mut b = s.batch();
    b.put(Keyspace::Meta, b"before", b"x");
    b.put(Keyspace::State, &noise(MAX_KEY_LEN + 1, 8), b"too long");
    let err = s.write(b, WriteOptions::SYNC).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Invalid(_)), "{msg}");
    assert!(
        msg.contains(&format!("limit of {MAX_KEY_LEN} bytes")),
        "{msg}"
    );
    assert_eq!(s.get(Keyspace::Meta, b"before").unwrap(), None);
    // Not poisoned: a refused batch reached nothing.
    s.put_one(Keyspace::Meta, b"after", b"y", WriteOptions::SYNC)
        .unwrap();
}

/// Another session updates a key and holds its row lock; the store's batch (a put of that
/// key and of another) waits for it; the other session commits. At `SERIALIZABLE` the
/// batch's transaction then fails with SQLSTATE 40001, and the store runs the whole batch
/// again: both puts land, the retry is counted.
#[test]
fn a_serialization_failure_runs_the_whole_batch_again() {
    let f = PgFactory::serializable();
    let dir = tempfile::tempdir().unwrap();
    let s = f.open(&dir.path().join("store")).unwrap();
    s.put_one(Keyspace::Meta, b"k", b"v0", WriteOptions::SYNC)
        .unwrap();
    let conninfo = s.settings().conninfo().to_string();
    let mut other = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
    other
        .batch_execute("BEGIN; UPDATE kv_meta SET v = 'other' WHERE k = 'k'")
        .unwrap();
    let mut watcher = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut b = s.batch();
            b.put(Keyspace::Epochs, b"first", b"1");
            b.put(Keyspace::Meta, b"k", b"mine");
            s.write(b, WriteOptions::SYNC)
        });
        // Wait (bounded) until the batch's transaction waits for the other session's lock.
        let mut waiting = false;
        for _ in 0..30_000 {
            let n: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .unwrap()
                .get(0);
            if n > 0 {
                waiting = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            waiting,
            "the batch never waited for the other session's row lock"
        );
        other.batch_execute("COMMIT").unwrap();
        writer.join().unwrap().unwrap();
    });
    assert!(
        s.retries() >= 1,
        "the serialization failure was not retried"
    );
    assert_eq!(s.get(Keyspace::Meta, b"k").unwrap(), Some(b"mine".to_vec()));
    assert_eq!(
        s.get(Keyspace::Epochs, b"first").unwrap(),
        Some(b"1".to_vec())
    );
}

/// The store directory holds the connection string and nothing secret; a string with a
/// password is refused before anything is created; a second directory naming the same
/// database cannot open it while the first store is open (the lock is the database's).
#[test]
fn settings_hold_no_password_and_the_lock_belongs_to_the_database() {
    let f = PgFactory::new();
    let dir = tempfile::tempdir().unwrap();
    let conninfo = f.new_conninfo();
    let with_password = format!("{conninfo} password=secret");
    let err = PgStore::create(&dir.path().join("a"), &with_password).unwrap_err();
    assert!(err.to_string().contains("~/.pgpass"), "{err}");
    assert!(
        !dir.path().join("a").exists(),
        "a refused create left a directory"
    );

    let s = PgStore::create(&dir.path().join("a"), &conninfo).unwrap();
    let text = std::fs::read_to_string(dir.path().join("a/conninfo")).unwrap();
    assert_eq!(text.trim(), conninfo);
    s.put_one(Keyspace::Meta, b"k", b"v", WriteOptions::SYNC)
        .unwrap();

    let b = dir.path().join("b");
    std::fs::create_dir(&b).unwrap();
    ConnSettings::parse(&conninfo).unwrap().write(&b).unwrap();
    match PgStore::open(&b) {
        Err(Error::Locked { path }) => assert_eq!(path, b),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a second directory opened a database in use"),
    }
    // A new store on a database that already holds one is refused.
    drop(s);
    let err = PgStore::create(&dir.path().join("c"), &conninfo).unwrap_err();
    assert!(
        err.to_string().contains("already holds an msite store"),
        "{err}"
    );
    assert_eq!(
        PgStore::open(&b)
            .unwrap()
            .get(Keyspace::Meta, b"k")
            .unwrap(),
        Some(b"v".to_vec())
    );
    // A directory without settings says how to make one.
    let err = PgStore::open(&dir.path().join("empty")).unwrap_err();
    assert!(
        err.to_string().contains("--backend postgres --url"),
        "{err}"
    );
}
