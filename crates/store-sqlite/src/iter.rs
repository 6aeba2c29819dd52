//! [`SqliteIter`]: ordered, bounded scans fetched in chunks.
//!
//! Each refill runs `SELECT k, v … WHERE <bounds> ORDER BY k LIMIT 512` and stops early once
//! 8 MiB of data are buffered; the next refill resumes after the last key returned. No
//! statement stays open between calls to `next`, and the read transaction the scan runs in
//! (the snapshot's, or the scan's own) keeps the chunks consistent with each other. In a
//! packed keyspace the table's rows are merged with the blocks' rows (`blocks.rs`), which
//! the same transaction reads.

use std::collections::VecDeque;
use std::ops::{Bound, Deref};

use msite_core::store::{KeyRange, KeyValue, Keyspace, Result};
use rusqlite::types::ToSql;
use rusqlite::Connection;

use crate::blocks::{BlockRows, Memo, Packs};
use crate::error::SqlResultExt;
use crate::split;
use crate::store::{sql, Reader};

/// Rows fetched per refill.
const CHUNK_ROWS: usize = 512;
/// Bytes buffered per refill, at most (one row more than this).
const CHUNK_BYTES: usize = 8 << 20;

/// The connection a scan reads through: a snapshot's, or its own read transaction.
pub(crate) enum ReadConn<'a> {
    Borrowed(&'a Reader<'a>),
    Owned(Reader<'a>),
}

impl Deref for ReadConn<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            ReadConn::Borrowed(r) => r,
            ReadConn::Owned(r) => r,
        }
    }
}

impl ReadConn<'_> {
    fn packs(&self) -> &Packs {
        match self {
            ReadConn::Borrowed(r) => r.packs(),
            ReadConn::Owned(r) => r.packs(),
        }
    }
}

/// A scan of a [`SqliteStore`](crate::SqliteStore) or [`SqliteSnapshot`](crate::SqliteSnapshot).
pub struct SqliteIter<'a> {
    conn: ReadConn<'a>,
    ks: Keyspace,
    next_start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    buf: VecDeque<KeyValue>,
    done: bool,
    /// The blocks' rows, in a packed keyspace of a store that has blocks.
    blocks: Option<BlockRows>,
    failed: bool,
}

impl<'a> SqliteIter<'a> {
    pub(crate) fn new(conn: ReadConn<'a>, ks: Keyspace, range: KeyRange) -> Self {
        let blocks = conn.packs().active(ks).then(|| BlockRows::new(ks, &range));
        SqliteIter {
            conn,
            ks,
            next_start: range.start,
            end: range.end,
            buf: VecDeque::new(),
            done: false,
            blocks,
            failed: false,
        }
    }

    /// Refills the table's rows when they ran out.
    fn fill(&mut self) -> Result<()> {
        if self.buf.is_empty() && !self.done {
            self.done = refill(
                &self.conn,
                self.ks,
                &self.next_start,
                &self.end,
                &mut self.buf,
            )?;
            if let Some((k, _)) = self.buf.back() {
                self.next_start = Bound::Excluded(k.clone());
            }
        }
        Ok(())
    }

    /// The next row of the merge of the table's rows and the blocks' rows, in key order.
    /// A key in both (which the rules forbid) yields the block's row, as a get would.
    fn step(&mut self) -> Result<Option<KeyValue>> {
        self.fill()?;
        let Some(blocks) = self.blocks.as_mut() else {
            return Ok(self.buf.pop_front());
        };
        if !blocks.ready(&self.conn, self.conn.packs())? {
            return Ok(self.buf.pop_front());
        }
        match self.buf.front() {
            Some((k, _)) if k.as_slice() < blocks.key() => Ok(self.buf.pop_front()),
            Some((k, _)) if k.as_slice() == blocks.key() => {
                self.buf.pop_front();
                Ok(Some(blocks.take()))
            }
            _ => Ok(Some(blocks.take())),
        }
    }
}

/// Whether the bounds select no key at all (start after end, or equal and excluded).
fn range_is_empty(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    match (start, end) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
            s >= e
        }
    }
}

fn bound_value(b: &Bound<Vec<u8>>) -> Option<&Vec<u8>> {
    match b {
        Bound::Included(v) | Bound::Excluded(v) => Some(v),
        Bound::Unbounded => None,
    }
}

/// The `WHERE` clause (empty for an unbounded range) selecting `start..end` with the named
/// parameters `:s` and `:e`, and those parameters.
fn filter<'b>(
    start: &'b Bound<Vec<u8>>,
    end: &'b Bound<Vec<u8>>,
) -> (String, Vec<(&'static str, &'b dyn ToSql)>) {
    let mut conds = Vec::with_capacity(2);
    match start {
        Bound::Included(_) => conds.push("k >= :s"),
        Bound::Excluded(_) => conds.push("k > :s"),
        Bound::Unbounded => {}
    }
    match end {
        Bound::Included(_) => conds.push("k <= :e"),
        Bound::Excluded(_) => conds.push("k < :e"),
        Bound::Unbounded => {}
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let mut params: Vec<(&str, &dyn ToSql)> = Vec::with_capacity(2);
    if let Some(s) = bound_value(start) {
        params.push((":s", s));
    }
    if let Some(e) = bound_value(end) {
        params.push((":e", e));
    }
    (clause, params)
}

/// The pair with the largest key of `ks` in `range`: one `ORDER BY k DESC LIMIT 1` query,
/// which SQLite answers from the end of the primary-key range.
pub(crate) fn last_in(
    conn: &Connection,
    packs: &Packs,
    memo: Option<&Memo>,
    ks: Keyspace,
    range: &KeyRange,
) -> Result<Option<KeyValue>> {
    let in_table = last_row_in(conn, ks, range)?;
    let in_blocks = packs.last(conn, memo, ks, range)?;
    Ok(match (in_table, in_blocks) {
        (Some(t), Some(b)) if b.0 > t.0 => Some(b),
        (Some(t), _) => Some(t),
        (None, b) => b,
    })
}

/// [`last_in`] of the table alone.
fn last_row_in(conn: &Connection, ks: Keyspace, range: &KeyRange) -> Result<Option<KeyValue>> {
    if range_is_empty(&range.start, &range.end) {
        return Ok(None);
    }
    let (clause, params) = filter(&range.start, &range.end);
    let query = format!(
        "SELECT k, v FROM {}{clause} ORDER BY k DESC LIMIT 1",
        sql(ks).table
    );
    let mut stmt = conn.prepare_cached(&query).r2e()?;
    let mut rows = stmt.query(params.as_slice()).r2e()?;
    match rows.next().r2e()? {
        Some(row) => {
            let (k, mut v): (Vec<u8>, Vec<u8>) = (row.get(0).r2e()?, row.get(1).r2e()?);
            split::join_tail(conn, ks, &k, &mut v)?;
            Ok(Some((k, v)))
        }
        None => Ok(None),
    }
}

/// Fetch the next chunk of the table's rows into `buf`; returns whether the table has no
/// more rows in the range.
pub(crate) fn refill(
    conn: &Connection,
    ks: Keyspace,
    start: &Bound<Vec<u8>>,
    end: &Bound<Vec<u8>>,
    buf: &mut VecDeque<KeyValue>,
) -> Result<bool> {
    if range_is_empty(start, end) {
        return Ok(true);
    }
    let (clause, params) = filter(start, end);
    let query = format!(
        "SELECT k, v FROM {}{clause} ORDER BY k LIMIT {CHUNK_ROWS}",
        sql(ks).table
    );
    let mut stmt = conn.prepare_cached(&query).r2e()?;
    let mut rows = stmt.query(params.as_slice()).r2e()?;
    let (mut n, mut bytes) = (0, 0);
    while let Some(row) = rows.next().r2e()? {
        let k: Vec<u8> = row.get(0).r2e()?;
        let mut v: Vec<u8> = row.get(1).r2e()?;
        split::join_tail(conn, ks, &k, &mut v)?;
        n += 1;
        bytes += k.len() + v.len();
        buf.push_back((k, v));
        if bytes >= CHUNK_BYTES {
            return Ok(false);
        }
    }
    Ok(n < CHUNK_ROWS)
}

impl Iterator for SqliteIter<'_> {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(row) => row.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
