//! Large values of the `blobs` keyspace kept in pieces that fit in a B-tree page.
//!
//! A `WITHOUT ROWID` table keeps at most about 4 KB of a row in its B-tree page (with 16 KiB
//! pages); the rest of a larger row goes to overflow pages of its own, and the last of them is
//! mostly empty. Stored content (whole versions, deltas) is often a few kilobytes more than
//! that: on the serde history a tenth of the store was empty overflow space
//! (BENCHMARKS.md, "Real history"). So a `blobs` value longer than [`SPLIT_AT`] bytes, up to
//! [`SPLIT_MAX`], is kept as its first [`SPLIT_AT`] bytes in `kv_blobs` and the rest in rows of
//! `kv_blobs_tail` (`k`, piece number `n`, at most [`SPLIT_AT`] bytes each), which fill pages
//! as other rows do. Longer values (chunks of large content: 1 MiB) stay whole: their overflow
//! chain wastes at most part of one page, a small share of them, and a piece per 3.8 KB would
//! cost a row insert each.
//!
//! The rule a reader follows: a `kv_blobs` value of exactly [`SPLIT_AT`] bytes is followed by
//! its key's `kv_blobs_tail` pieces, in order, if there are any. Values written whole before
//! this layout (longer or shorter) read as they are.
//!
//! Keeping the tail table true:
//! * Writing a value whose row is [`SPLIT_AT`] bytes long (split, or exactly that long)
//!   deletes the key's old pieces before writing its own ([`put_tail`]): rare, so cheap.
//! * A row of [`SPLIT_AT`] bytes that is deleted, or replaced by `INSERT OR REPLACE`, takes
//!   its pieces with it: a delete trigger, which fires on a replace because the writer
//!   connection turns on `recursive_triggers` ([`WRITER_PRAGMA`]). That is what a split value
//!   rewritten smaller (a whole version rewritten as a delta) needs.
//! * A bulk load turns `recursive_triggers` off: under it every insert into `kv_blobs` first
//!   looks for a row to replace (SQLite's own replace writes over it in place), which cost 17 %
//!   of a snapshot load of small files. The pieces a load's own later row left without their
//!   head are deleted at its end instead ([`drop_orphans`]).

use std::sync::OnceLock;

use msite_core::store::{Keyspace, Result};
use rusqlite::{Connection, OptionalExtension};

use crate::error::SqlResultExt;
use crate::store::sql;

/// The longest `blobs` value kept whole in its row, and the length of each piece: with a key
/// of up to 200 bytes a row stays inside a 16 KiB page's local limit (4,085 bytes of payload).
pub(crate) const SPLIT_AT: usize = 3_840;

/// The longest value kept in pieces (the head and 15 pieces).
pub(crate) const SPLIT_MAX: usize = 16 * SPLIT_AT;

/// What the writer connection sets so that replacing a row fires the delete trigger.
pub(crate) const WRITER_PRAGMA: (&str, bool) = ("recursive_triggers", true);

/// The tail table and its trigger (run at every open; `IF NOT EXISTS` throughout).
pub(crate) fn create_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "CREATE TABLE IF NOT EXISTS kv_blobs_tail \
               (k BLOB NOT NULL, n INTEGER NOT NULL, v BLOB NOT NULL, PRIMARY KEY (k, n)) \
               WITHOUT ROWID;\n\
             CREATE TRIGGER IF NOT EXISTS kv_blobs_tail_deleted AFTER DELETE ON kv_blobs \
               WHEN length(OLD.v) = {SPLIT_AT} \
               BEGIN DELETE FROM kv_blobs_tail WHERE k = OLD.k; END;\n"
        )
    })
}

const TAIL_GET: &str = "SELECT v FROM kv_blobs_tail WHERE k = ?1 ORDER BY n";
const TAIL_PUT: &str = "INSERT INTO kv_blobs_tail (k, n, v) VALUES (?1, ?2, ?3)";
const TAIL_DELETE: &str = "DELETE FROM kv_blobs_tail WHERE k = ?1";

/// Deletes the pieces whose key's row is not [`SPLIT_AT`] bytes long (a bulk load's).
pub(crate) fn drop_orphans(conn: &Connection) -> Result<()> {
    conn.execute(
        &format!(
            "DELETE FROM kv_blobs_tail WHERE NOT EXISTS \
               (SELECT 1 FROM kv_blobs b WHERE b.k = kv_blobs_tail.k AND length(b.v) = {SPLIT_AT})"
        ),
        [],
    )
    .r2e()?;
    Ok(())
}

/// Whether a value of `ks` this long is kept in pieces.
fn is_split(ks: Keyspace, len: usize) -> bool {
    ks == Keyspace::Blobs && len > SPLIT_AT && len <= SPLIT_MAX
}

/// What the row of `ks` itself keeps of `v`.
pub(crate) fn head(ks: Keyspace, v: &[u8]) -> &[u8] {
    if is_split(ks, v.len()) {
        &v[..SPLIT_AT]
    } else {
        v
    }
}

/// Writes the pieces of `v` beyond its [`head`], after its row was written, in place of
/// the key's old pieces. Nothing for a row shorter or longer than [`SPLIT_AT`].
pub(crate) fn put_tail(conn: &Connection, ks: Keyspace, k: &[u8], v: &[u8]) -> Result<()> {
    if ks != Keyspace::Blobs || head(ks, v).len() != SPLIT_AT {
        return Ok(());
    }
    conn.prepare_cached(TAIL_DELETE).r2e()?.execute([k]).r2e()?;
    if !is_split(ks, v.len()) {
        return Ok(());
    }
    let mut st = conn.prepare_cached(TAIL_PUT).r2e()?;
    for (n, piece) in v[SPLIT_AT..].chunks(SPLIT_AT).enumerate() {
        st.execute(rusqlite::params![k, n as i64, piece]).r2e()?;
    }
    Ok(())
}

/// Completes `v`, the row of `k` in `ks` as stored, with its pieces, if it has any.
pub(crate) fn join_tail(conn: &Connection, ks: Keyspace, k: &[u8], v: &mut Vec<u8>) -> Result<()> {
    if ks != Keyspace::Blobs || v.len() != SPLIT_AT {
        return Ok(());
    }
    let mut st = conn.prepare_cached(TAIL_GET).r2e()?;
    let mut rows = st.query([k]).r2e()?;
    while let Some(row) = rows.next().r2e()? {
        let piece: Vec<u8> = row.get(0).r2e()?;
        v.extend_from_slice(&piece);
    }
    Ok(())
}

/// The whole value of `k` in `ks`, read through `conn`.
pub(crate) fn get(conn: &Connection, ks: Keyspace, k: &[u8]) -> Result<Option<Vec<u8>>> {
    let v: Option<Vec<u8>> = conn
        .prepare_cached(sql(ks).get)
        .r2e()?
        .query_row([k], |row| row.get(0))
        .optional()
        .r2e()?;
    match v {
        Some(mut v) => {
            join_tail(conn, ks, k, &mut v)?;
            Ok(Some(v))
        }
        None => Ok(None),
    }
}
