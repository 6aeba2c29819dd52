//! Rows packed into compressed blocks by `compact` (`src/blocks.rs`, `src/pack.rs`): the oplog
//! and the object base leave their tables and take a fraction of the space, a write moves
//! back only the block that holds its key, a damaged block is reported as corruption, never
//! read as a wrong answer, and a store of a later layout is refused.

use msite_core::store::{
    Error, KeyRange, Keyspace, ReadView, Store, StoreExt, WriteBatch, WriteOptions,
};
use msite_store_sqlite::{SqliteOptions, SqliteStore};
use rusqlite::Connection;

type Rows = Vec<(Vec<u8>, Vec<u8>)>;
/// Rows for a bulk load: keyspace, key, value.
type LoadRows = Vec<(Keyspace, Vec<u8>, Vec<u8>)>;

fn raw(dir: &std::path::Path) -> Connection {
    Connection::open(dir.join("store.sqlite3")).unwrap()
}

fn count(conn: &Connection, query: &str) -> i64 {
    conn.query_row(query, [], |r| r.get(0)).unwrap()
}

fn blocks_of(conn: &Connection, ks: &str) -> i64 {
    count(
        conn,
        &format!("SELECT count(*) FROM kv_packed WHERE ks = '{ks}'"),
    )
}

/// Oplog-like rows: entries that repeat their origin, parent and field names, as canonical
/// entries do.
fn oplog_rows(n: u32) -> Rows {
    (0..n)
        .map(|i| {
            let k = [b"origin-0000000r0".as_slice(), &u64::from(i).to_be_bytes()].concat();
            let v = format!(
                "entry {{ origin: r0, number: {i}, parent: {}, op: checkin {{ element: e{}, \
                 branch: main, content: c{i} }} }}",
                i.saturating_sub(1),
                i % 97
            );
            (k, v.into_bytes())
        })
        .collect()
}

fn write_all(s: &SqliteStore, ks: Keyspace, rows: &Rows) {
    for chunk in rows.chunks(500) {
        let mut b = s.batch();
        for (k, v) in chunk {
            b.put(ks, k, v);
        }
        s.write(b, WriteOptions::SYNC).unwrap();
    }
}

fn scan(s: &impl ReadView, ks: Keyspace) -> Rows {
    s.scan(ks, KeyRange::all())
        .unwrap()
        .map(|kv| kv.unwrap())
        .collect()
}

/// `compact` empties the tables of the oplog and the object base into blocks, leaves Meta
/// alone, reads every row back the same, and keeps the rows in less than half their bytes.
#[test]
fn compact_packs_the_oplog_and_the_object_base() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let oplog = oplog_rows(20_000);
    let state: Rows = (0..5_000u32)
        .map(|i| {
            (
                format!("e/{i:06}/main/1").into_bytes(),
                b"version of element, by r0".to_vec(),
            )
        })
        .collect();
    write_all(&s, Keyspace::Oplog, &oplog);
    write_all(&s, Keyspace::State, &state);
    s.put_one(Keyspace::Meta, b"identity", b"r0", WriteOptions::SYNC)
        .unwrap();
    let bytes: usize = oplog
        .iter()
        .chain(&state)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    s.compact().unwrap();
    let conn = raw(dir.path());
    assert_eq!(count(&conn, "SELECT count(*) FROM kv_oplog"), 0);
    assert_eq!(count(&conn, "SELECT count(*) FROM kv_state"), 0);
    assert_eq!(count(&conn, "SELECT count(*) FROM kv_meta"), 1);
    assert!(
        blocks_of(&conn, "oplog") > 10,
        "one block per 64 KiB of rows"
    );
    assert!(blocks_of(&conn, "state") > 1);
    assert_eq!(scan(&s, Keyspace::Oplog), oplog);
    assert_eq!(scan(&s, Keyspace::State), state);
    assert_eq!(
        s.get(Keyspace::Oplog, &oplog[12_345].0).unwrap(),
        Some(oplog[12_345].1.clone())
    );
    let size = s.size_on_disk().unwrap();
    assert!(
        size < bytes as u64 / 2,
        "{size} bytes on disk for {bytes} bytes of repetitive rows"
    );
    s.check_integrity().unwrap();
}

/// After a compaction into many blocks: overwriting or deleting a packed key moves its one
/// block back into the table; a new key inside a block's range leaves the blocks alone; a
/// range delete drops the blocks inside it and unpacks those across its edges.
#[test]
fn a_write_moves_back_only_the_block_that_holds_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open_with(
        dir.path(),
        SqliteOptions {
            block_bytes: 1024,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let mut model: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
        oplog_rows(1_000).into_iter().collect();
    write_all(&s, Keyspace::Oplog, &model.clone().into_iter().collect());
    s.compact().unwrap();
    let conn = raw(dir.path());
    let blocks = blocks_of(&conn, "oplog");
    assert!(blocks > 50, "{blocks} blocks");
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();

    s.put_one(
        Keyspace::Oplog,
        &keys[500],
        b"rewritten",
        WriteOptions::SYNC,
    )
    .unwrap();
    model.insert(keys[500].clone(), b"rewritten".to_vec());
    assert_eq!(blocks_of(&conn, "oplog"), blocks - 1);
    let in_table = count(&conn, "SELECT count(*) FROM kv_oplog");
    assert!(in_table > 1, "the block's other rows came back with it");

    let between = [keys[700].clone(), vec![0]].concat();
    s.put_one(Keyspace::Oplog, &between, b"new", WriteOptions::SYNC)
        .unwrap();
    model.insert(between, b"new".to_vec());
    assert_eq!(
        blocks_of(&conn, "oplog"),
        blocks - 1,
        "a new key unpacks nothing"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM kv_oplog"), in_table + 1);

    s.delete_one(Keyspace::Oplog, &keys[10], WriteOptions::SYNC)
        .unwrap();
    model.remove(&keys[10]);
    let mut b = s.batch();
    b.delete_range(Keyspace::Oplog, &keys[105], &keys[895]);
    s.write(b, WriteOptions::SYNC).unwrap();
    model.retain(|k, _| k < &keys[105] || k >= &keys[895]);
    assert!(blocks_of(&conn, "oplog") < blocks / 4);
    assert_eq!(
        scan(&s, Keyspace::Oplog),
        model.clone().into_iter().collect::<Rows>()
    );
    s.check_integrity().unwrap();
    s.compact().unwrap();
    assert_eq!(count(&conn, "SELECT count(*) FROM kv_oplog"), 0);
    assert_eq!(
        scan(&s, Keyspace::Oplog),
        model.into_iter().collect::<Rows>()
    );
}

/// A store in `dir` holding `rows` of the oplog, packed into blocks of about 4 KiB of rows
/// by `compact`, and closed.
fn packed_store(dir: &std::path::Path, rows: &Rows) {
    let options = SqliteOptions {
        block_bytes: 4096,
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(dir, options).unwrap();
    write_all(&s, Keyspace::Oplog, rows);
    s.compact().unwrap();
}

/// A block whose bytes were damaged on disk fails the read of a key in it, a scan across it
/// and the integrity check, as corruption; a key in an intact block still reads.
#[test]
fn a_damaged_block_is_corruption_not_a_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let rows = oplog_rows(2_000);
    packed_store(dir.path(), &rows);
    let conn = raw(dir.path());
    let (id, len, damaged_key): (i64, i64, Vec<u8>) = conn
        .query_row(
            "SELECT id, length(v), first_k FROM kv_packed ORDER BY first_k LIMIT 1 OFFSET 3",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    conn.execute(
        "UPDATE kv_packed SET v = CAST(substr(v, 1, ?2) || zeroblob(16) AS BLOB) WHERE id = ?1",
        [id, len / 2],
    )
    .unwrap();
    drop(conn);
    let s = SqliteStore::open(dir.path()).unwrap();
    match s.get(Keyspace::Oplog, &damaged_key) {
        Err(Error::Corruption(msg)) => assert!(msg.contains("packed block"), "{msg}"),
        other => panic!("a damaged block read as {other:?}"),
    }
    assert!(s
        .scan(Keyspace::Oplog, KeyRange::all())
        .unwrap()
        .any(|kv| kv.is_err()));
    assert!(matches!(s.check_integrity(), Err(Error::Corruption(_))));
    assert_eq!(
        s.get(Keyspace::Oplog, &rows[0].0).unwrap(),
        Some(rows[0].1.clone())
    );
}

/// A block whose recorded range does not match its rows fails the integrity check.
#[test]
fn a_block_with_a_wrong_range_fails_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    packed_store(dir.path(), &oplog_rows(2_000));
    raw(dir.path())
        .execute(
            "UPDATE kv_packed SET last_k = CAST(last_k || x'00' AS BLOB) \
             WHERE id = (SELECT id FROM kv_packed ORDER BY first_k LIMIT 1)",
            [],
        )
        .unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    match s.check_integrity() {
        Err(Error::Corruption(msg)) => assert!(msg.contains("outside its recorded range"), "{msg}"),
        other => panic!("a block with a wrong range checked as {other:?}"),
    }
}

/// A store records its layout (SQLite's `user_version`), and one marked with a later layout
/// is refused with a message that says to upgrade, before anything reads or writes it.
#[test]
fn a_store_of_a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let conn = raw(dir.path());
    let layout: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(layout, 2);
    conn.pragma_update(None, "user_version", 3).unwrap();
    drop(conn);
    match SqliteStore::open(dir.path()) {
        Err(Error::Invalid(msg)) => assert!(msg.contains("upgrade msite"), "{msg}"),
        other => panic!("a store of layout 3 opened as {other:?}"),
    }
}

/// A store of layout 1 (content never in blocks) opens, reads as it is, and is marked with
/// layout 2 from then on, so a release of layout 1 no longer opens it: that release would not
/// look for content in blocks.
#[test]
fn a_store_of_layout_1_opens_and_is_marked_2() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    s.put_one(Keyspace::Blobs, b"c", b"content", WriteOptions::SYNC)
        .unwrap();
    drop(s);
    let conn = raw(dir.path());
    conn.pragma_update(None, "user_version", 1).unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(s.get(Keyspace::Blobs, b"c").unwrap().unwrap(), b"content");
    let layout: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(layout, 2);
}

/// A bulk load writes the oplog and object-base rows straight into blocks when their tables
/// are empty (a new replica's snapshot), and rows into a keyspace that already holds some go
/// to the table; either way every row reads back, a later write to a packed key moves only
/// its block, and the integrity check passes.
#[test]
fn a_bulk_load_into_empty_keyspaces_writes_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    s.put_one(Keyspace::State, b"a-before", b"held", WriteOptions::SYNC)
        .unwrap();
    let oplog = oplog_rows(20_000);
    let state: Rows = (0..3_000u32)
        .map(|i| (format!("s/{i:06}").into_bytes(), vec![b'v'; 40]))
        .collect();
    let mut rows = oplog
        .iter()
        .map(|(k, v)| Ok((Keyspace::Oplog, k.clone(), v.clone())))
        .chain(
            state
                .iter()
                .map(|(k, v)| Ok((Keyspace::State, k.clone(), v.clone()))),
        );
    assert_eq!(s.bulk_load(&mut rows).unwrap(), 23_000);
    let conn = raw(dir.path());
    assert!(blocks_of(&conn, "oplog") > 10, "the oplog is packed");
    assert_eq!(count(&conn, "SELECT count(*) FROM kv_oplog"), 0);
    assert_eq!(blocks_of(&conn, "state"), 0, "State held a row already");
    assert_eq!(count(&conn, "SELECT count(*) FROM kv_state"), 3_001);
    assert_eq!(scan(&s, Keyspace::Oplog), oplog);
    let (k, _) = &oplog[7_000];
    s.put_one(Keyspace::Oplog, k, b"rewritten", WriteOptions::SYNC)
        .unwrap();
    assert_eq!(s.get(Keyspace::Oplog, k).unwrap().unwrap(), b"rewritten");
    let in_table = count(&conn, "SELECT count(*) FROM kv_oplog");
    assert!(
        in_table > 1 && in_table < 2_000,
        "one block moved: {in_table}"
    );
    s.check_integrity().unwrap();
}

/// A bulk load judges each content block by a sample: content that compresses only against
/// its neighbours (each row incompressible alone, all of them alike) is still compressed,
/// content that does not compress is written as it is; every row reads back.
#[test]
fn a_bulk_load_compresses_the_content_blocks_whose_sample_compresses() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let mut rng = msite_core::testkit::conformance::Rng::new(0xb10c);
    let alike = rng.bytes(1_000);
    let content: Rows = (0..400u32)
        .map(|i| {
            let value = match i < 200 {
                true => rng.bytes(1_000),
                false => alike.clone(),
            };
            (format!("c/{i:06}").into_bytes(), value)
        })
        .collect();
    let mut rows = content
        .iter()
        .map(|(k, v)| Ok((Keyspace::Blobs, k.clone(), v.clone())));
    assert_eq!(s.bulk_load(&mut rows).unwrap(), 400);
    let conn = raw(dir.path());
    let stored = |cmp: &str| {
        count(
            &conn,
            &format!("SELECT sum(length(v)) FROM kv_packed WHERE ks = 'blobs' AND first_k {cmp} CAST('c/000200' AS BLOB)"),
        )
    };
    let raw_half = 200 * (1_000 + 8 + 8);
    assert!(
        stored("<") >= raw_half,
        "noise: {} of {raw_half}",
        stored("<")
    );
    assert!(
        stored(">=") < raw_half / 10,
        "alike: {} of {raw_half}",
        stored(">=")
    );
    assert_eq!(scan(&s, Keyspace::Blobs), content);
    s.check_integrity().unwrap();
}

/// A store of blocks of 256 bytes whose State holds a row, and rows to load into it: oplog
/// rows 0..100 (into blocks), a State row (to the table, which reads the writer's map of
/// blocks), then oplog rows 100..200 (into blocks written after that map was read).
fn store_whose_load_reads_the_writers_map_mid_load(
    dir: &std::path::Path,
) -> (SqliteStore, LoadRows) {
    let options = SqliteOptions {
        block_bytes: 256,
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(dir, options).unwrap();
    s.put_one(Keyspace::State, b"held", b"before", WriteOptions::SYNC)
        .unwrap();
    let oplog = |from: u32, to: u32| -> LoadRows {
        (from..to)
            .map(|i| (Keyspace::Oplog, i.to_be_bytes().to_vec(), vec![b'o'; 60]))
            .collect()
    };
    let mut rows = oplog(0, 100);
    rows.push((Keyspace::State, b"new".to_vec(), b"row".to_vec()));
    rows.extend(oplog(100, 200));
    (s, rows)
}

/// A bulk load whose writer map of blocks was read mid-load (a row of a keyspace that holds
/// rows already goes to the table) still sees the blocks written after that: a key given again
/// later in the load, which one of those blocks holds, moves that block back and ends with
/// the later value, never in a block and the table both.
#[test]
fn a_key_given_again_in_a_bulk_load_moves_a_block_written_after_the_writers_map_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let (s, mut rows) = store_whose_load_reads_the_writers_map_mid_load(dir.path());
    // Key 150 again: its block was written after the map was read.
    rows.push((
        Keyspace::Oplog,
        150u32.to_be_bytes().to_vec(),
        b"later".to_vec(),
    ));
    let n = rows.len() as u64;
    let mut it = rows.into_iter().map(Ok);
    assert_eq!(s.bulk_load(&mut it).unwrap(), n);
    let got = s.get(Keyspace::Oplog, &150u32.to_be_bytes()).unwrap();
    assert_eq!(got.as_deref(), Some(&b"later"[..]));
    s.check_integrity().unwrap();
    assert_eq!(scan(&s, Keyspace::Oplog).len(), 200);
}

/// Content rows of a bulk load: small ones (ascending keys, as a snapshot gives them), with a
/// row too long for a block and a row of exactly `split.rs`'s head length among them.
fn content_rows() -> Rows {
    let mut rows: Rows = (0..2_000u32)
        .map(|i| {
            (
                format!("c/{i:06}").into_bytes(),
                format!("content {i}").into_bytes(),
            )
        })
        .collect();
    rows[700].1 = vec![b'L'; 40 << 10];
    rows[900].1 = vec![b'S'; 3_840];
    rows[1_100].1 = vec![b'M'; 9_000];
    rows
}

/// A bulk load packs small content into blocks and goes on packing past a row too long for a
/// block, which goes to the table; every row reads back (by get, by scan, after a reopen), the
/// integrity check passes, a later write or delete of a packed key moves only its block, and
/// `compact` leaves content blocks as they are.
#[test]
fn a_bulk_load_packs_content_around_a_row_too_long_for_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        block_bytes: 1024,
        ..SqliteOptions::default()
    };
    let rows = content_rows();
    {
        let s = SqliteStore::open_with(dir.path(), options.clone()).unwrap();
        let mut it = rows
            .iter()
            .map(|(k, v)| Ok((Keyspace::Blobs, k.clone(), v.clone())));
        assert_eq!(s.bulk_load(&mut it).unwrap(), 2_000);
        let conn = raw(dir.path());
        assert!(blocks_of(&conn, "blobs") > 10, "content is packed");
        let in_table: Vec<Vec<u8>> = conn
            .prepare("SELECT k FROM kv_blobs")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|k| k.unwrap())
            .collect();
        assert_eq!(
            in_table,
            vec![rows[700].0.clone()],
            "only the long row is in the table: those after it are packed too"
        );
        assert_eq!(scan(&s, Keyspace::Blobs), rows);
        for i in [0, 699, 700, 701, 900, 1_100, 1_999] {
            let (k, v) = &rows[i];
            assert_eq!(
                s.get(Keyspace::Blobs, k).unwrap().as_ref(),
                Some(v),
                "row {i}"
            );
        }
        s.check_integrity().unwrap();
    }
    let s = SqliteStore::open_with(dir.path(), options.clone()).unwrap();
    assert_eq!(scan(&s, Keyspace::Blobs), rows, "after a reopen");
    let conn = raw(dir.path());
    let blocks = blocks_of(&conn, "blobs");
    s.compact().unwrap();
    assert_eq!(
        blocks_of(&conn, "blobs"),
        blocks,
        "compact leaves content blocks alone"
    );
    let mut expected = rows.clone();
    s.put_one(
        Keyspace::Blobs,
        &rows[900].0,
        b"rewritten",
        WriteOptions::SYNC,
    )
    .unwrap();
    expected[900].1 = b"rewritten".to_vec();
    s.delete_one(Keyspace::Blobs, &rows[1_100].0, WriteOptions::SYNC)
        .unwrap();
    expected.remove(1_100);
    assert_eq!(scan(&s, Keyspace::Blobs), expected);
    let moved = blocks - blocks_of(&conn, "blobs");
    assert!(
        (1..=2).contains(&moved),
        "only the blocks of the two keys moved: {moved}"
    );
    s.check_integrity().unwrap();
}

/// A key given again after a row too long for a block, in the same bulk load, is not packed
/// beside it: it goes to the table and ends with the later value, in one place only.
#[test]
fn a_key_given_again_after_a_row_too_long_for_a_block_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let rows: Vec<(Keyspace, Vec<u8>, Vec<u8>)> = vec![
        (Keyspace::Blobs, b"a".to_vec(), b"small".to_vec()),
        (Keyspace::Blobs, b"b".to_vec(), vec![b'L'; 40 << 10]),
        (Keyspace::Blobs, b"b".to_vec(), b"later".to_vec()),
        (Keyspace::Blobs, b"c".to_vec(), b"after".to_vec()),
    ];
    let mut it = rows.into_iter().map(Ok);
    assert_eq!(s.bulk_load(&mut it).unwrap(), 4);
    assert_eq!(s.get(Keyspace::Blobs, b"b").unwrap().unwrap(), b"later");
    assert_eq!(
        scan(&s, Keyspace::Blobs),
        vec![
            (b"a".to_vec(), b"small".to_vec()),
            (b"b".to_vec(), b"later".to_vec()),
            (b"c".to_vec(), b"after".to_vec()),
        ]
    );
    s.check_integrity().unwrap();
}

/// A write after a bulk load whose writer map of blocks was read mid-load (a row of a
/// keyspace that held rows went to the table) moves the block written after that map was
/// read: the key ends with the new value, never in a block and the table both.
#[test]
fn a_write_after_a_bulk_load_moves_a_block_written_after_the_writers_map_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let (s, rows) = store_whose_load_reads_the_writers_map_mid_load(dir.path());
    let mut it = rows.into_iter().map(Ok);
    assert_eq!(s.bulk_load(&mut it).unwrap(), 201);
    let key = 150u32.to_be_bytes();
    s.put_one(Keyspace::Oplog, &key, b"after", WriteOptions::SYNC)
        .unwrap();
    assert_eq!(s.get(Keyspace::Oplog, &key).unwrap().unwrap(), b"after");
    s.check_integrity().unwrap();
}
