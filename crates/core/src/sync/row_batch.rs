//! Rows handed from one thread to another in batches that own their bytes in one buffer.
//!
//! A snapshot export reads rows on one thread and writes them into the packet on another; a
//! snapshot load reads the packet on one thread and writes the rows into the store on another
//! (`snapshot.rs`). Sent one allocation per key and per value, every row was allocated by one
//! thread and freed by the other: the allocator's cross-thread frees were a third of the
//! export's writing thread and a fifth of each thread of a load (BENCHMARKS.md, stop 39). A
//! [`RowBatch`] copies the rows' bytes back to back into one buffer instead, and the receiver
//! hands each spent batch back for the sender to fill again, so the two threads exchange a
//! few buffers and allocate nothing for the rows once they run.
//!
//! Memory stays bounded: a batch is sent once it holds [`BATCH_ROWS`] rows or
//! [`BATCH_BYTES`] bytes, at most two wait for the writer, and a spent batch that one very
//! long row grew beyond [`KEEP_BYTES`] is dropped rather than kept for reuse.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Rows a batch holds at most.
const BATCH_ROWS: usize = 1024;
/// The bytes of rows a batch holds at most (besides its last row).
const BATCH_BYTES: usize = 1 << 20;
/// The largest buffer a spent batch keeps for reuse.
const KEEP_BYTES: usize = 4 * BATCH_BYTES;

/// Rows (space, key, value) whose keys and values lie back to back in one buffer. The space
/// is what the two sides name it: a packet's row space (`u8`) or a store's [`Keyspace`].
///
/// [`Keyspace`]: crate::store::Keyspace
#[derive(Debug)]
pub(super) struct RowBatch<S> {
    bytes: Vec<u8>,
    /// Per row: its space and the lengths of its key and value, in order.
    rows: Vec<(S, usize, usize)>,
    /// The sender's rows turned out damaged after these: this batch is its last.
    failed: bool,
}

impl<S> Default for RowBatch<S> {
    fn default() -> Self {
        RowBatch {
            bytes: Vec::new(),
            rows: Vec::new(),
            failed: false,
        }
    }
}

impl<S: Copy> RowBatch<S> {
    /// Appends a row, copying its bytes.
    pub(super) fn push(&mut self, space: S, key: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.rows.push((space, key.len(), value.len()));
    }

    /// Whether the batch should go: it holds [`BATCH_ROWS`] rows or [`BATCH_BYTES`] bytes.
    fn is_full(&self) -> bool {
        self.rows.len() >= BATCH_ROWS || self.bytes.len() >= BATCH_BYTES
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows in the order they were pushed.
    pub(super) fn iter(&self) -> impl Iterator<Item = (S, &[u8], &[u8])> {
        let mut at = 0;
        self.rows.iter().map(move |&(space, k, v)| {
            let (key, value) = self.bytes[at..at + k + v].split_at(k);
            at += k + v;
            (space, key, value)
        })
    }

    /// Empties the batch for reuse; None when its buffer grew too large to keep.
    fn spent(mut self) -> Option<RowBatch<S>> {
        if self.bytes.capacity() > KEEP_BYTES {
            return None;
        }
        self.bytes.clear();
        self.rows.clear();
        self.failed = false;
        Some(self)
    }
}

/// The reading side: fills a batch and sends it when full, reusing spent batches.
pub(super) struct RowSender<S> {
    to: SyncSender<RowBatch<S>>,
    spent: Receiver<RowBatch<S>>,
    batch: RowBatch<S>,
}

/// The writing side: receives full batches and gives each back once written.
pub(super) struct RowReceiver<S> {
    from: Receiver<RowBatch<S>>,
    spent: SyncSender<RowBatch<S>>,
}

/// A sender and a receiver of row batches: at most two full batches wait, and the receiver
/// returns spent ones, so about five batches exist at most.
pub(super) fn row_channel<S>() -> (RowSender<S>, RowReceiver<S>) {
    let (to, from) = sync_channel(2);
    let (spent_to, spent) = sync_channel(4);
    let sender = RowSender {
        to,
        spent,
        batch: RowBatch::default(),
    };
    (
        sender,
        RowReceiver {
            from,
            spent: spent_to,
        },
    )
}

impl<S: Copy> RowSender<S> {
    /// Adds a row; a full batch goes over. False: the receiver is gone.
    pub(super) fn push(&mut self, space: S, key: &[u8], value: &[u8]) -> bool {
        self.batch.push(space, key, value);
        !self.batch.is_full() || self.send()
    }

    /// Hands over the rows gathered so far. False: the receiver is gone.
    pub(super) fn send(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let next = self.spent.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.batch, next);
        self.to.send(full).is_ok()
    }

    /// Hands over the rows gathered so far as the last ones: what followed them is damaged,
    /// which the receiver reports ([`RowReceiver::each`] returns false).
    pub(super) fn fail(mut self) {
        self.batch.failed = true;
        // The receiver may be gone already: then nobody needs to hear it.
        let _ = self.to.send(self.batch);
    }
}

impl<S: Copy> RowReceiver<S> {
    /// Calls `write` on each row of each batch, in order, until the sender is gone (true),
    /// a batch the sender marked failed was written (false, [`RowSender::fail`]), or `write`
    /// fails (its error).
    pub(super) fn each<E>(
        &self,
        mut write: impl FnMut(S, &[u8], &[u8]) -> Result<(), E>,
    ) -> Result<bool, E> {
        for batch in self.from.iter() {
            for (space, key, value) in batch.iter() {
                write(space, key, value)?;
            }
            if batch.failed {
                return Ok(false);
            }
            if let Some(spent) = batch.spent() {
                // The sender may be gone, or have enough spare batches: dropping is fine.
                let _ = self.spent.try_send(spent);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row comes out as it went in, in order, across batch boundaries and through
    /// reused buffers, whatever the rows' sizes (empty keys and values, one row longer than
    /// a batch).
    #[test]
    fn rows_cross_in_order_through_reused_batches() {
        let rows: Vec<(u8, Vec<u8>, Vec<u8>)> = (0..5000u32)
            .map(|i| {
                let value_len = match i {
                    7 => 3 * BATCH_BYTES,
                    _ => (i as usize * 37) % 900,
                };
                let key = i.to_be_bytes()[..(i % 5) as usize].to_vec();
                ((i % 3) as u8, key, vec![(i % 251) as u8; value_len])
            })
            .collect();
        let (mut tx, rx) = row_channel::<u8>();
        let got = std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let mut got = Vec::new();
                let whole = rx.each(|sp, k, v| {
                    got.push((sp, k.to_vec(), v.to_vec()));
                    Ok::<_, ()>(())
                });
                assert_eq!(whole, Ok(true));
                got
            });
            for (sp, k, v) in &rows {
                assert!(tx.push(*sp, k, v));
            }
            assert!(tx.send());
            drop(tx);
            writer.join().unwrap()
        });
        assert_eq!(got.len(), rows.len());
        assert!(got == rows, "a row changed on its way");
    }

    /// A sender that fails hands over the rows it gathered, then the receiver reports the
    /// failure instead of a clean end.
    #[test]
    fn a_failed_sender_ends_the_rows_with_a_failure() {
        let (mut tx, rx) = row_channel::<u8>();
        let writer = std::thread::spawn(move || {
            let mut keys = Vec::new();
            let whole = rx.each(|_, k, _| {
                keys.push(k.to_vec());
                Ok::<_, ()>(())
            });
            (whole, keys)
        });
        for i in 0..3000u32 {
            assert!(tx.push(0, &i.to_be_bytes(), b"v"));
        }
        tx.fail();
        let (whole, keys) = writer.join().unwrap();
        assert_eq!(whole, Ok(false));
        assert_eq!(keys.len(), 3000, "the rows before the failure still arrive");
        let (mut tx, rx) = row_channel::<u8>();
        assert!(tx.push(0, b"k", b"v") && tx.send());
        drop(tx);
        assert_eq!(rx.each(|_, _, _| Ok::<_, ()>(())), Ok(true));
    }

    /// A batch is full at its row count or its byte count, whichever comes first.
    #[test]
    fn a_batch_is_full_at_its_row_or_byte_limit() {
        let mut b = RowBatch::<u8>::default();
        for _ in 0..BATCH_ROWS - 1 {
            b.push(0, b"k", b"v");
        }
        assert!(!b.is_full());
        b.push(0, b"k", b"v");
        assert!(b.is_full());
        let mut b = RowBatch::<u8>::default();
        b.push(0, b"k", &vec![0; BATCH_BYTES - 2]);
        assert!(!b.is_full());
        b.push(0, b"", b"x");
        assert!(b.is_full());
    }

    /// A spent batch comes back empty; one that a long row grew too large is not kept.
    #[test]
    fn a_spent_batch_is_emptied_or_dropped_when_too_large() {
        let mut b = RowBatch::<u8>::default();
        b.push(1, b"key", b"value");
        let b = b.spent().expect("a small batch is kept");
        assert!(b.is_empty() && b.bytes.is_empty());
        let mut big = RowBatch::<u8>::default();
        big.push(1, b"key", &vec![0; KEEP_BYTES + 1]);
        assert!(big.spent().is_none());
    }
}
