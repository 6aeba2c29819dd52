//! [`RocksIter`]: an ordered, bounded scan over a raw RocksDB iterator.

use std::ops::Bound;

use msite_core::store::{KeyRange, KeyValue, Keyspace, PairFn, Result};
use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions, DB};

use crate::error::map;

/// Read options for a scan of `range` in `ks`: explicit lower and upper bounds, checksums
/// verified. `Included(e)` as the end becomes the exclusive upper bound `e ++ [0x00]`, the
/// smallest key after `e`. A scan of content, or of a whole keyspace, leaves the block cache
/// alone: those scans (a snapshot's export, a digest) read every block once, and caching the
/// blocks allocated fresh memory for each one and pushed out the rows that are read again
/// (content: a third of an export's reading; the object base's whole scan, a tenth,
/// BENCHMARKS.md stop 41).
pub(crate) fn scan_options(ks: Keyspace, range: &KeyRange) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_verify_checksums(true);
    let whole = matches!(
        (&range.start, &range.end),
        (Bound::Unbounded, Bound::Unbounded)
    );
    ro.fill_cache(ks != Keyspace::Blobs && !whole);
    match &range.start {
        Bound::Included(s) | Bound::Excluded(s) => ro.set_iterate_lower_bound(s.clone()),
        Bound::Unbounded => {}
    }
    match &range.end {
        Bound::Included(e) => {
            let mut upper = e.clone();
            upper.push(0);
            ro.set_iterate_upper_bound(upper);
        }
        Bound::Excluded(e) => ro.set_iterate_upper_bound(e.clone()),
        Bound::Unbounded => {}
    }
    ro
}

/// The pair with the largest key in `range`, read by `it`, a raw iterator made with
/// [`scan_options`]`(range)`: one seek to the last key below the upper bound.
pub(crate) fn last_in(
    mut it: DBRawIteratorWithThreadMode<'_, DB>,
    range: &KeyRange,
) -> Result<Option<KeyValue>> {
    if range.is_empty() {
        return Ok(None);
    }
    it.seek_to_last();
    let (Some(k), Some(v)) = (it.key(), it.value()) else {
        return it.status().map(|()| None).map_err(map);
    };
    // Only an excluded start equal to the last key, or a misconfigured bound, lands here.
    if !range.contains(k) {
        return Ok(None);
    }
    Ok(Some((k.to_vec(), v.to_vec())))
}

/// A scan of a [`RocksStore`](crate::RocksStore) or [`RocksSnapshot`](crate::RocksSnapshot).
pub struct RocksIter<'a> {
    it: DBRawIteratorWithThreadMode<'a, DB>,
    range: KeyRange,
    positioned: bool,
    done: bool,
}

impl<'a> RocksIter<'a> {
    pub(crate) fn new(it: DBRawIteratorWithThreadMode<'a, DB>, range: KeyRange) -> Self {
        let done = range.is_empty();
        RocksIter {
            it,
            range,
            positioned: false,
            done,
        }
    }
}

impl RocksIter<'_> {
    /// Moves to the next pair of the range and lends it (None at its end).
    fn advance(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        if self.done {
            return Ok(None);
        }
        if self.positioned {
            self.it.next();
        } else {
            self.positioned = true;
            match &self.range.start {
                Bound::Included(s) | Bound::Excluded(s) => self.it.seek(s),
                Bound::Unbounded => self.it.seek_to_first(),
            }
            if let Bound::Excluded(s) = &self.range.start {
                if self.it.key() == Some(s.as_slice()) {
                    self.it.next();
                }
            }
        }
        let (Some(k), Some(v)) = (self.it.key(), self.it.value()) else {
            self.done = true;
            return self.it.status().map(|()| None).map_err(map);
        };
        // The upper bound already stops the iterator; this check costs little and keeps a
        // misconfigured bound from ever leaking keys outside the range.
        if !self.range.contains(k) {
            self.done = true;
            return Ok(None);
        }
        Ok(Some((k, v)))
    }

    /// Lends each pair to `f` until it returns false ([`ReadView::scan_each`]).
    ///
    /// [`ReadView::scan_each`]: msite_core::store::ReadView::scan_each
    pub(crate) fn each(mut self, f: &mut PairFn<'_>) -> Result<()> {
        while let Some((k, v)) = self.advance()? {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }
}

impl Iterator for RocksIter<'_> {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.advance() {
            Ok(Some((k, v))) => Some(Ok((k.to_vec(), v.to_vec()))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
