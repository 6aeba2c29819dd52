//! Large `blobs` values kept in pieces (`src/split.rs`): every length around the split point
//! round-trips through every write path and every read path, overwriting or deleting a split
//! value leaves no piece behind, values stored whole by earlier versions still read, and no
//! row spills into an overflow page.

use msite_core::store::{KeyRange, Keyspace, ReadView, Store, StoreExt, WriteBatch, WriteOptions};
use msite_store_sqlite::SqliteStore;
use rusqlite::Connection;

/// The split point and the longest split value (`SPLIT_AT`, `SPLIT_MAX` in `src/split.rs`).
const SPLIT_AT: usize = 3_840;
const SPLIT_MAX: usize = 16 * SPLIT_AT;

/// The lengths that matter: around the split point and around whole pieces.
const LENGTHS: [usize; 10] = [
    0,
    SPLIT_AT - 1,
    SPLIT_AT,
    SPLIT_AT + 1,
    2 * SPLIT_AT,
    2 * SPLIT_AT + 1,
    10_000,
    SPLIT_MAX,
    SPLIT_MAX + 1,
    1 << 20,
];

fn value(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ salt)
        .collect()
}

fn key(i: usize) -> Vec<u8> {
    format!("blob-{i:04}").into_bytes()
}

fn raw(dir: &std::path::Path) -> Connection {
    Connection::open(dir.join("store.sqlite3")).unwrap()
}

fn pieces(dir: &std::path::Path) -> i64 {
    raw(dir)
        .query_row("SELECT count(*) FROM kv_blobs_tail", [], |r| r.get(0))
        .unwrap()
}

/// Reads every key back by get, by a snapshot's get, by scan and by `last`.
fn check_reads(s: &SqliteStore, want: &[(Vec<u8>, Vec<u8>)]) {
    let snap = s.snapshot().unwrap();
    for (k, v) in want {
        assert_eq!(
            s.get(Keyspace::Blobs, k).unwrap().as_ref(),
            Some(v),
            "get {k:?}"
        );
        assert_eq!(snap.get(Keyspace::Blobs, k).unwrap().as_ref(), Some(v));
        let last = s.last(Keyspace::Blobs, KeyRange::prefix(k)).unwrap();
        assert_eq!(last.as_ref().map(|(_, v)| v), Some(v), "last {k:?}");
    }
    let scanned: Vec<(Vec<u8>, Vec<u8>)> = s
        .scan(Keyspace::Blobs, KeyRange::all())
        .unwrap()
        .map(|kv| kv.unwrap())
        .collect();
    assert_eq!(scanned, want, "scan");
}

/// Written one by one, in a sorted run of 64 (the multi-row statement) and by a bulk load.
#[test]
fn every_length_round_trips_through_every_write_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = LENGTHS
        .iter()
        .enumerate()
        .map(|(i, &len)| (key(i), value(len, i as u8)))
        .collect();
    for (k, v) in &want {
        s.put_one(Keyspace::Blobs, k, v, WriteOptions::NO_SYNC)
            .unwrap();
    }
    let run: Vec<(Vec<u8>, Vec<u8>)> = (100..164)
        .map(|i| (key(i), value(LENGTHS[i % LENGTHS.len()], i as u8)))
        .collect();
    let mut b = s.batch();
    for (k, v) in &run {
        b.put(Keyspace::Blobs, k, v);
    }
    s.write(b, WriteOptions::SYNC).unwrap();
    want.extend(run);
    check_reads(&s, &want);
    drop(s);

    let dir2 = tempfile::tempdir().unwrap();
    let s2 = SqliteStore::open(dir2.path()).unwrap();
    let mut rows = want
        .iter()
        .map(|(k, v)| Ok((Keyspace::Blobs, k.clone(), v.clone())));
    s2.bulk_load(&mut rows).unwrap();
    check_reads(&s2, &want);
    drop(s2);
    check_reads(&SqliteStore::open(dir.path()).unwrap(), &want);
}

/// Overwriting a split value (with a short one, one of exactly the split length, a longer
/// split one, one too long to split) and deleting split values, one by one or by range, leave no stale piece.
#[test]
fn overwrites_and_deletes_leave_no_piece_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    for i in 0..6 {
        s.put_one(
            Keyspace::Blobs,
            &key(i),
            &value(3 * SPLIT_AT, 1),
            WriteOptions::NO_SYNC,
        )
        .unwrap();
    }
    assert_eq!(pieces(dir.path()), 12);
    let now = [
        value(10, 2),
        value(SPLIT_AT, 3),
        value(2 * SPLIT_AT + 5, 4),
        value(SPLIT_MAX + 1, 5),
    ];
    for (i, v) in now.iter().enumerate() {
        s.put_one(Keyspace::Blobs, &key(i), v, WriteOptions::NO_SYNC)
            .unwrap();
        assert_eq!(s.get(Keyspace::Blobs, &key(i)).unwrap().as_ref(), Some(v));
    }
    assert_eq!(
        pieces(dir.path()),
        6,
        "key 2's two pieces and keys 4 and 5's"
    );
    s.delete_one(Keyspace::Blobs, &key(4), WriteOptions::NO_SYNC)
        .unwrap();
    let mut b = s.batch();
    b.delete_range(Keyspace::Blobs, &key(5), &key(9));
    s.write(b, WriteOptions::SYNC).unwrap();
    assert_eq!(pieces(dir.path()), 2, "only key 2's pieces are left");
    check_reads(
        &s,
        &[
            (key(0), now[0].clone()),
            (key(1), now[1].clone()),
            (key(2), now[2].clone()),
            (key(3), now[3].clone()),
        ],
    );
}

/// A large value stored whole in its row (by a version before the split) still reads whole,
/// and is replaced and deleted like any other.
#[test]
fn values_stored_whole_by_earlier_versions_still_read() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let old = [value(10_000, 5), value(SPLIT_AT, 6)];
    let c = raw(dir.path());
    for (i, v) in old.iter().enumerate() {
        c.execute("INSERT INTO kv_blobs (k, v) VALUES (?1, ?2)", (key(i), v))
            .unwrap();
    }
    drop(c);
    let s = SqliteStore::open(dir.path()).unwrap();
    check_reads(&s, &[(key(0), old[0].clone()), (key(1), old[1].clone())]);
    s.put_one(
        Keyspace::Blobs,
        &key(0),
        &value(9_000, 7),
        WriteOptions::NO_SYNC,
    )
    .unwrap();
    s.delete_one(Keyspace::Blobs, &key(1), WriteOptions::NO_SYNC)
        .unwrap();
    check_reads(&s, &[(key(0), value(9_000, 7))]);
}

/// Many values of a few kilobytes more than a page's local limit: no overflow page at all
/// (before the split, each such row left most of an overflow page empty).
#[test]
fn values_a_little_over_the_page_limit_fill_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let mut b = s.batch();
    for i in 0..300 {
        b.put(Keyspace::Blobs, &key(i), &value(5_000 + 37 * i, i as u8));
    }
    s.write(b, WriteOptions::SYNC).unwrap();
    drop(s);
    let c = raw(dir.path());
    let overflow: i64 = c
        .query_row(
            "SELECT count(*) FROM dbstat WHERE pagetype = 'overflow'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(overflow, 0);
}

/// A bulk load that gives a key twice ends with the later value and no stray piece, whether
/// the earlier value was split and the later not, or the later one is exactly the split length.
#[test]
fn a_bulk_load_giving_a_key_twice_leaves_no_piece_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let first = [value(3 * SPLIT_AT, 1), value(3 * SPLIT_AT, 2), value(10, 3)];
    let later = [
        value(100, 4),
        value(SPLIT_AT, 5),
        value(2 * SPLIT_AT + 1, 6),
    ];
    let rows: Vec<_> = (first.iter().enumerate())
        .chain(later.iter().enumerate())
        .map(|(i, v)| Ok((Keyspace::Blobs, key(i), v.clone())))
        .collect();
    s.bulk_load(&mut rows.into_iter()).unwrap();
    let want: Vec<_> = later
        .iter()
        .enumerate()
        .map(|(i, v)| (key(i), v.clone()))
        .collect();
    check_reads(&s, &want);
    assert_eq!(pieces(dir.path()), 2, "key 2's two pieces only");
    // Replacing rows after the load fires the delete trigger again.
    s.put_one(
        Keyspace::Blobs,
        &key(2),
        &value(7, 7),
        WriteOptions::NO_SYNC,
    )
    .unwrap();
    assert_eq!(pieces(dir.path()), 0);
}
