//! The journal a bulk load writes under ([`SqliteStore::bulk_load`](crate::SqliteStore)).
//!
//! In WAL mode each page a load writes goes into the WAL at its commit, and the checkpoint
//! that follows copies it into the database file: every byte of a new replica's store was
//! written twice. Under a rollback journal a page is written once, into the database file, and
//! the journal keeps the changed pages as they were before, which for a new store is next to
//! nothing (pages beyond the file's old end are never journaled). Both are atomic and, with
//! `synchronous = FULL`, durable: a crash during the load leaves a hot journal, which the next
//! open rolls back, as a WAL without its commit is ignored.
//!
//! Rules:
//! * SQLite leaves WAL mode only when no other connection has the database open. The pool's
//!   idle readers are closed first; with any other connection open (a snapshot of this
//!   process, another process) the switch is refused at once, without waiting for locks, and
//!   the load runs in WAL mode as before.
//! * The writer returns to WAL mode after the load, whatever its outcome, waiting for locks as
//!   any write does. Opening a store sets WAL mode too, so a crash between the two leaves no
//!   store in rollback mode once it is opened again.

use std::time::Duration;

use msite_core::store::{Error, Result};
use rusqlite::Connection;

use crate::error::SqlResultExt;

/// The rollback journal's mode: the journal file is truncated, not deleted, at each commit.
const ROLLBACK: &str = "truncate";

/// Switches `conn`, the writer, from WAL mode to a rollback journal if no other connection
/// has the database open; returns whether it did. `busy` is the writer's usual busy timeout,
/// set again afterwards.
pub(crate) fn leave_wal(conn: &Connection, busy: Duration) -> Result<bool> {
    conn.busy_timeout(Duration::ZERO).r2e()?;
    let mode =
        conn.pragma_update_and_check(None, "journal_mode", ROLLBACK, |r| r.get::<_, String>(0));
    conn.busy_timeout(busy).r2e()?;
    // A refusal is SQLITE_BUSY, or the old mode given back.
    Ok(matches!(mode, Ok(m) if m.eq_ignore_ascii_case(ROLLBACK)))
}

/// Switches `conn`, the writer, back to WAL mode.
pub(crate) fn return_to_wal(conn: &Connection) -> Result<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .r2e()?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Invalid(format!(
            "after a bulk load the database stayed in journal mode {mode}, not WAL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use msite_core::store::{KeyRange, Keyspace, ReadView, Store, WriteBatch, WriteOptions};

    use crate::store::DB_FILE;
    use crate::SqliteStore;

    /// 2,000 content rows of 4,000 incompressible bytes (the load packs content into zstd
    /// blocks): about 8 MB of pages.
    fn load(s: &SqliteStore) -> u64 {
        let mut rng = msite_core::testkit::conformance::Rng::new(0x10ad);
        let mut rows = (0u32..2000)
            .map(move |i| Ok((Keyspace::Blobs, i.to_be_bytes().to_vec(), rng.bytes(4000))));
        s.bulk_load(&mut rows).unwrap()
    }

    fn put(s: &SqliteStore, key: &[u8]) {
        let mut b = s.batch();
        b.put(Keyspace::Meta, key, b"1");
        s.write(b, WriteOptions::SYNC).unwrap();
    }

    fn wal_bytes(dir: &std::path::Path) -> u64 {
        std::fs::metadata(dir.join(format!("{DB_FILE}-wal")))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The journal mode a new connection finds.
    fn journal_mode(dir: &std::path::Path) -> String {
        let c = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_bulk_load_into_a_new_store_writes_its_pages_once_and_returns_to_wal() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.get(Keyspace::Meta, b"absent").unwrap(), None);
        assert_eq!(load(&s), 2000);
        // Under WAL the commit put every page into the WAL (about 8 MB), which the checkpoint
        // leaves at its size.
        assert!(wal_bytes(dir.path()) < 1 << 20, "{}", wal_bytes(dir.path()));
        assert_eq!(journal_mode(dir.path()), "wal");
        let v = s
            .get(Keyspace::Blobs, &1999u32.to_be_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(v.len(), 4000);
        put(&s, b"after");
        assert!(!dir.path().join(format!("{DB_FILE}-journal")).exists());
    }

    #[test]
    fn a_bulk_load_writes_its_pages_as_it_goes_not_all_at_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let db = dir.path().join(DB_FILE);
        let grown = std::cell::Cell::new(0);
        let mut rng = msite_core::testkit::conformance::Rng::new(0x5b11);
        let mut rows = (0u32..2000).map(|i| {
            if i == 1500 {
                grown.set(std::fs::metadata(&db).unwrap().len());
            }
            Ok((Keyspace::Blobs, i.to_be_bytes().to_vec(), rng.bytes(4000)))
        });
        assert_eq!(s.bulk_load(&mut rows).unwrap(), 2000);
        // The first 1,500 rows are 6 MB of incompressible blocks; a page cache that held them
        // all until the commit left the file at its few pages of schema.
        assert!(grown.get() > 4 << 20, "{} bytes", grown.get());
    }

    #[test]
    fn a_bulk_load_beside_an_open_snapshot_runs_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        put(&s, b"before");
        let snap = s.snapshot().unwrap();
        assert_eq!(
            snap.get(Keyspace::Meta, b"before").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(load(&s), 2000);
        assert!(wal_bytes(dir.path()) > 4 << 20);
        let seen = snap.scan(Keyspace::Blobs, KeyRange::all()).unwrap().count();
        assert_eq!(seen, 0, "the snapshot keeps its view");
        drop(snap);
        assert_eq!(
            s.scan(Keyspace::Blobs, KeyRange::all()).unwrap().count(),
            2000
        );
        assert_eq!(journal_mode(dir.path()), "wal");
    }
}
