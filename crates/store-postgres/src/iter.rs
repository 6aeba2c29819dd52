//! [`PgIter`]: ordered, bounded scans fetched in chunks by key (`WHERE k > last ORDER BY k
//! LIMIT n`), each chunk an index range read. No cursor stays open between calls to `next`;
//! the read transaction the scan runs in (the snapshot's, or the scan's own) keeps the chunks
//! consistent with each other. The chunk size adapts to the rows' size so that a chunk holds
//! about 8 MiB: few round trips for small rows, bounded memory for large values.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Mutex;

use msite_core::store::{KeyRange, KeyValue, Keyspace, Result};

use crate::pool::{lock, Pooled};

/// Rows of the first chunk (small: the values may be large).
const FIRST_ROWS: i64 = 8;
/// Rows of a chunk, at most.
const MAX_ROWS: i64 = 1024;
/// The bytes a chunk aims at.
const CHUNK_BYTES: usize = 8 << 20;

/// The connection a scan reads through: a snapshot's, or its own read transaction.
pub(crate) enum ReadConn<'a> {
    Borrowed(&'a Mutex<Pooled>),
    Owned(Pooled),
}

/// A scan of a [`PgStore`](crate::PgStore) or [`PgSnapshot`](crate::PgSnapshot).
pub struct PgIter<'a> {
    conn: ReadConn<'a>,
    ks: Keyspace,
    next_start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    buf: VecDeque<KeyValue>,
    rows: i64,
    done: bool,
}

impl<'a> PgIter<'a> {
    pub(crate) fn new(conn: ReadConn<'a>, ks: Keyspace, range: KeyRange) -> Self {
        let done = range.is_empty();
        PgIter {
            conn,
            ks,
            next_start: range.start,
            end: range.end,
            buf: VecDeque::new(),
            rows: FIRST_ROWS,
            done,
        }
    }

    fn refill(&mut self) -> Result<()> {
        let chunk = match &mut self.conn {
            ReadConn::Borrowed(m) => {
                lock(m).range(self.ks, &self.next_start, &self.end, false, self.rows)?
            }
            ReadConn::Owned(c) => {
                c.range(self.ks, &self.next_start, &self.end, false, self.rows)?
            }
        };
        let n = chunk.len() as i64;
        self.done = n < self.rows;
        let bytes: usize = chunk.iter().map(|(k, v)| k.len() + v.len()).sum();
        if n > 0 {
            let per_row = (bytes / n as usize).max(1);
            self.rows = ((CHUNK_BYTES / per_row) as i64).clamp(1, MAX_ROWS);
        }
        if let Some((k, _)) = chunk.last() {
            self.next_start = Bound::Excluded(k.clone());
        }
        self.buf.extend(chunk);
        Ok(())
    }
}

impl Iterator for PgIter<'_> {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            if let Err(e) = self.refill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.buf.pop_front().map(Ok)
    }
}
