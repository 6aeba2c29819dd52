//! The writer's side of packed blocks (`blocks.rs` states the rules): packing a keyspace's
//! rows at `compact`, unpacking the block a write touches, and checking blocks.

use std::ops::Bound;

use msite_core::store::{Error, Keyspace, Result};
use rusqlite::Connection;

use crate::blocks::{self, Block, BlockMeta, Packs, Ranges, COMPACTED, MAX_PACKED_ROW, PACKED};
use crate::error::SqlResultExt;
use crate::store::sql;

const INSERT_BLOCK: &str = "INSERT INTO kv_packed (ks, first_k, last_k, v) VALUES (?1, ?2, ?3, ?4)";
const DELETE_BLOCK: &str = "DELETE FROM kv_packed WHERE id = ?1";

/// The writer's map of where each packed keyspace's blocks lie (first key → last key and
/// id), read from the database on first use and forgotten whenever a transaction that may
/// have changed blocks does not commit, so it never disagrees with the database.
#[derive(Default)]
pub(crate) struct BlockIndex {
    loaded: Option<[Ranges; PACKED.len()]>,
}

impl BlockIndex {
    /// Drop the map; the next write reads it again.
    pub(crate) fn forget(&mut self) {
        self.loaded = None;
    }

    /// The map of the packed keyspace in `slot` ([`blocks::packed_slot`]).
    fn map(&mut self, conn: &Connection, slot: usize) -> Result<&mut Ranges> {
        let maps = match &mut self.loaded {
            Some(maps) => maps,
            unloaded @ None => {
                let mut maps: [Ranges; PACKED.len()] = Default::default();
                for (map, ks) in maps.iter_mut().zip(PACKED) {
                    *map = blocks::ranges(conn, ks)?;
                }
                unloaded.insert(maps)
            }
        };
        Ok(&mut maps[slot])
    }

    /// The slot of `ks` when writes to it must look at blocks (`Packs::active`).
    fn slot(packs: &Packs, ks: Keyspace) -> Option<usize> {
        blocks::packed_slot(ks).filter(|_| packs.active(ks))
    }

    /// Before `key` of `ks` is written or deleted inside `tx`: moves the block that holds it,
    /// if any, back into the table.
    pub(crate) fn release(
        &mut self,
        tx: &Connection,
        packs: &Packs,
        ks: Keyspace,
        key: &[u8],
    ) -> Result<()> {
        let Some(slot) = Self::slot(packs, ks) else {
            return Ok(());
        };
        let covering = self
            .map(tx, slot)?
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .filter(|(_, (last, _))| key <= last.as_slice())
            .map(BlockMeta::of);
        if let Some(meta) = covering {
            let block = packs.load(tx, ks, &meta)?;
            if block.value(key).is_some() {
                unpack(tx, ks, &meta, &block)?;
                self.map(tx, slot)?.remove(&meta.first);
            }
        }
        Ok(())
    }

    /// Before the keys `start..end` of `ks` are deleted inside `tx`: drops the blocks wholly
    /// inside the range and moves those across its edges back into the table.
    pub(crate) fn release_range(
        &mut self,
        tx: &Connection,
        packs: &Packs,
        ks: Keyspace,
        start: &[u8],
        end: &[u8],
    ) -> Result<()> {
        let Some(slot) = Self::slot(packs, ks) else {
            return Ok(());
        };
        let map = self.map(tx, slot)?;
        // The block that may cover `start`, and every block that starts inside the range.
        let from = map
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .map(|(f, _)| f.clone());
        let lower = from.map_or(Bound::Included(start.to_vec()), Bound::Included);
        let touched: Vec<BlockMeta> = map
            .range((lower, Bound::Excluded(end.to_vec())))
            .filter(|(_, (last, _))| last.as_slice() >= start)
            .map(BlockMeta::of)
            .collect();
        for meta in touched {
            if meta.first.as_slice() >= start && meta.last.as_slice() < end {
                tx.prepare_cached(DELETE_BLOCK)
                    .r2e()?
                    .execute([meta.id])
                    .r2e()?;
            } else {
                let block = packs.load(tx, ks, &meta)?;
                unpack(tx, ks, &meta, &block)?;
            }
            self.map(tx, slot)?.remove(&meta.first);
        }
        Ok(())
    }
}

/// Moves `block`'s rows into the table and deletes the block. A row the table already has
/// (which the rules forbid) takes the block's value, the one readers saw.
fn unpack(tx: &Connection, ks: Keyspace, meta: &BlockMeta, block: &Block) -> Result<()> {
    let insert = format!(
        "INSERT OR REPLACE INTO {} (k, v) VALUES (?1, ?2)",
        sql(ks).table
    );
    let mut st = tx.prepare_cached(&insert).r2e()?;
    for i in 0..block.len() {
        let (k, v) = block.row(i);
        st.execute([k, v]).r2e()?;
    }
    tx.prepare_cached(DELETE_BLOCK)
        .r2e()?
        .execute([meta.id])
        .r2e()?;
    Ok(())
}

/// Inserts a block of `ks` whose rows run from `first` to `last`, compressed into `data`.
fn insert_compressed(
    tx: &Connection,
    ks: Keyspace,
    first: &[u8],
    last: &[u8],
    data: &[u8],
) -> Result<()> {
    tx.prepare_cached(INSERT_BLOCK)
        .r2e()?
        .execute(rusqlite::params![ks.name(), first, last, data])
        .r2e()?;
    Ok(())
}

/// Packs every row of the [`COMPACTED`] keyspaces, inside `tx`, into blocks of about
/// `block_bytes`: the blocks there are are unpacked first, so the new ones are full and
/// cover disjoint ranges. Memory stays at one block and one chunk of rows. Returns the
/// number of blocks made.
pub(crate) fn repack(tx: &Connection, packs: &Packs, block_bytes: usize) -> Result<u64> {
    let mut made = 0;
    for ks in COMPACTED {
        for meta in blocks::all(tx, ks)? {
            let block = packs.load(tx, ks, &meta)?;
            unpack(tx, ks, &meta, &block)?;
        }
        made += pack_table(tx, ks, block_bytes)?;
    }
    Ok(made)
}

/// Packs the table of `ks` into blocks, in key order. A row longer than [`MAX_PACKED_ROW`]
/// stays in the table and closes the block before it.
fn pack_table(tx: &Connection, ks: Keyspace, block_bytes: usize) -> Result<u64> {
    let mut made = 0;
    let mut run = BlockRun::default();
    let mut zstd = BlockZstd::new(blocks::LEVEL)?;
    let mut after = Bound::Unbounded;
    loop {
        let mut chunk = std::collections::VecDeque::new();
        let done = crate::iter::refill(tx, ks, &after, &Bound::Unbounded, &mut chunk)?;
        if let Some((k, _)) = chunk.back() {
            after = Bound::Excluded(k.clone());
        }
        for (k, v) in chunk {
            if k.len() + v.len() > MAX_PACKED_ROW {
                made += write_block(tx, ks, &mut run, &mut zstd)?;
                continue;
            }
            run.push(&k, &v);
            if run.raw.len() >= block_bytes {
                made += write_block(tx, ks, &mut run, &mut zstd)?;
            }
        }
        if done {
            break;
        }
    }
    made += write_block(tx, ks, &mut run, &mut zstd)?;
    Ok(made)
}

/// Writes `run` (consecutive rows of the table of `ks`) as one block and deletes its rows
/// from the table; nothing for an empty run. Returns the number of blocks written.
fn write_block(
    tx: &Connection,
    ks: Keyspace,
    run: &mut BlockRun,
    zstd: &mut BlockZstd,
) -> Result<u64> {
    if !run.insert(tx, ks, zstd)? {
        return Ok(0);
    }
    let delete = format!("DELETE FROM {} WHERE k >= ?1 AND k <= ?2", sql(ks).table);
    tx.prepare_cached(&delete)
        .r2e()?
        .execute([&run.first, &run.last])
        .r2e()?;
    run.clear();
    Ok(1)
}

/// Consecutive rows of one keyspace gathered for one block, encoded as the block holds them
/// ([`Block::append_row`]): no allocation per row. `compact` and a bulk load both build
/// their blocks this way.
#[derive(Default)]
struct BlockRun {
    raw: Vec<u8>,
    /// The number of rows in `raw`, and the first and last of their keys.
    rows: usize,
    first: Vec<u8>,
    last: Vec<u8>,
}

impl BlockRun {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        if self.rows == 0 {
            self.first.clear();
            self.first.extend_from_slice(key);
        }
        self.last.clear();
        self.last.extend_from_slice(key);
        Block::append_row(&mut self.raw, key, value);
        self.rows += 1;
    }

    /// Inserts the rows as one block of `ks`, compressed by `zstd`; false (nothing
    /// inserted) for no rows. The run keeps its rows and keys until [`BlockRun::clear`].
    fn insert(&self, tx: &Connection, ks: Keyspace, zstd: &mut BlockZstd) -> Result<bool> {
        if self.rows == 0 {
            return Ok(false);
        }
        insert_compressed(
            tx,
            ks,
            &self.first,
            &self.last,
            zstd.compress(ks, &self.raw)?,
        )?;
        Ok(true)
    }

    fn clear(&mut self) {
        self.raw.clear();
        self.rows = 0;
    }
}

/// The zstd level of the blocks a bulk load writes: the fastest regular level, since the
/// load waits for them (`compact` packs at [`blocks::LEVEL`]).
const BULK_LEVEL: i32 = 1;

/// The zstd level of the content blocks a bulk load writes when a sample of them compresses.
/// msite-core stores content compressed where that pays, so these blocks gain little from
/// compressing; a negative level turns zstd's entropy coding off and keeps only its matches
/// (a third of the store thread went to Huffman-coding incompressible content at level 1,
/// BENCHMARKS.md stop 40).
const BULK_CONTENT_LEVEL: i32 = -5;

/// The bytes at the start of a content block compressed to judge it. A block whose sample
/// shrinks by less than 1/[`SKIP_BELOW_SAVING`] is written at zstd's fastest level, which
/// stores it nearly as is at several GB/s (a new replica's incompressible content took a
/// tenth of its SQLite import at [`BULK_CONTENT_LEVEL`], BENCHMARKS.md stop 41).
const CONTENT_SAMPLE: usize = 8 << 10;
/// See [`CONTENT_SAMPLE`].
const SKIP_BELOW_SAVING: usize = 32;

/// The zstd compressors the blocks of one `compact` or bulk load share, so that no block makes
/// a compression context of its own (content judged by its sample, the rest at one regular
/// level); and the buffer each block is compressed into.
struct BlockZstd {
    regular: zstd::bulk::Compressor<'static>,
    content: zstd::bulk::Compressor<'static>,
    stored: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

impl BlockZstd {
    /// Compressors for blocks of the [`COMPACTED`] keyspaces at `regular`, and of content.
    fn new(regular: i32) -> Result<Self> {
        Ok(BlockZstd {
            regular: zstd::bulk::Compressor::new(regular)?,
            content: zstd::bulk::Compressor::new(BULK_CONTENT_LEVEL)?,
            stored: zstd::bulk::Compressor::new(zstd::zstd_safe::min_c_level())?,
            out: Vec::new(),
        })
    }

    /// The block of the rows `raw` of `ks`: content judged by its sample first.
    fn compress(&mut self, ks: Keyspace, raw: &[u8]) -> Result<&[u8]> {
        let c = match ks {
            Keyspace::Blobs if !self.sample_compresses(raw)? => &mut self.stored,
            Keyspace::Blobs => &mut self.content,
            _ => &mut self.regular,
        };
        self.out.clear();
        self.out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        c.compress_to_buffer(raw, &mut self.out)?;
        Ok(&self.out)
    }

    /// Whether the first [`CONTENT_SAMPLE`] bytes of `raw` shrink by at least
    /// 1/[`SKIP_BELOW_SAVING`] at [`BULK_CONTENT_LEVEL`] (a block not much longer than its
    /// sample is always compressed).
    fn sample_compresses(&mut self, raw: &[u8]) -> Result<bool> {
        if raw.len() < 2 * CONTENT_SAMPLE {
            return Ok(true);
        }
        self.out.clear();
        self.out
            .reserve(zstd::zstd_safe::compress_bound(CONTENT_SAMPLE));
        let kept = self
            .content
            .compress_to_buffer(&raw[..CONTENT_SAMPLE], &mut self.out)?;
        Ok(kept <= CONTENT_SAMPLE - CONTENT_SAMPLE / SKIP_BELOW_SAVING)
    }
}

/// Where a bulk load's row goes ([`BulkPacker::take`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placed {
    /// Into a block: nothing more to write.
    Block,
    /// To the table; no block holds its key (its keyspace is being packed and the key comes
    /// after every packed one), so none needs moving.
    TableOutsideBlocks,
    /// To the table, as any write: the block that holds its key, if one does, moves first.
    Table,
}

/// A bulk load's rows of the [`PACKED`] keyspaces written straight into blocks, as `compact`
/// would leave them, instead of a row insert each. A keyspace is packed only while the load
/// can keep the rules without looking: its table and blocks were empty when the load began,
/// and its keys keep ascending. The first key that does not closes the keyspace's last block,
/// and its rows from then on go to the table as any write does. A row longer than
/// [`MAX_PACKED_ROW`] goes to the table and the packing goes on past it: the block around it
/// spans its key, which the rules allow (a large content's pieces among small contents).
pub(crate) struct BulkPacker {
    runs: [Option<BulkRun>; PACKED.len()],
    block_bytes: usize,
    /// Blocks written since [`BulkPacker::wrote_blocks`] last said so.
    fresh: bool,
    /// Made at the first block.
    zstd: Option<BlockZstd>,
}

/// The rows of one keyspace waiting for their block.
#[derive(Default)]
struct BulkRun {
    rows: BlockRun,
    /// The last key given before those of `rows`: the last of the blocks written so far, or
    /// a row too long for a block that went to the table. The next key must be above it.
    passed: Option<Vec<u8>>,
}

impl BulkRun {
    /// Whether `key` comes after every key given to this run: in its rows, its blocks, or
    /// the table.
    fn ascends_to(&self, key: &[u8]) -> bool {
        (self.rows.rows == 0 || self.rows.last.as_slice() < key)
            && self.passed.as_ref().is_none_or(|k| k.as_slice() < key)
    }

    /// Writes the rows as one block of `ks` (nothing for none) and empties the run; returns
    /// whether it wrote one. The compressors are made at the load's first block.
    fn write(
        &mut self,
        tx: &Connection,
        ks: Keyspace,
        zstd: &mut Option<BlockZstd>,
    ) -> Result<bool> {
        if self.rows.rows == 0 {
            return Ok(false);
        }
        let z = match zstd {
            Some(z) => z,
            None => zstd.insert(BlockZstd::new(BULK_LEVEL)?),
        };
        self.rows.insert(tx, ks, z)?;
        self.passed = Some(std::mem::take(&mut self.rows.last));
        self.rows.clear();
        Ok(true)
    }
}

impl BulkPacker {
    /// A packer for a load inside `tx`, for the keyspaces that hold nothing yet.
    pub(crate) fn new(tx: &Connection, block_bytes: usize) -> Result<Self> {
        let mut runs: [Option<BulkRun>; PACKED.len()] = Default::default();
        for (run, ks) in runs.iter_mut().zip(PACKED) {
            let held = format!(
                "SELECT EXISTS (SELECT 1 FROM {}) OR EXISTS (SELECT 1 FROM kv_packed WHERE ks = ?1)",
                sql(ks).table
            );
            let held: bool = tx.query_row(&held, [ks.name()], |r| r.get(0)).r2e()?;
            if !held {
                *run = Some(BulkRun::default());
            }
        }
        Ok(BulkPacker {
            runs,
            block_bytes,
            fresh: false,
            zstd: None,
        })
    }

    /// Takes a copy of the row into a block when its keyspace is still packed; otherwise says
    /// how the caller writes it to the table.
    pub(crate) fn take(
        &mut self,
        tx: &Connection,
        ks: Keyspace,
        key: &[u8],
        value: &[u8],
    ) -> Result<Placed> {
        let Some(slot) = blocks::packed_slot(ks) else {
            return Ok(Placed::Table);
        };
        let Some(run) = self.runs[slot].as_mut() else {
            return Ok(Placed::Table);
        };
        if !run.ascends_to(key) {
            self.fresh |= run.write(tx, ks, &mut self.zstd)?;
            self.runs[slot] = None;
            return Ok(Placed::Table);
        }
        if key.len() + value.len() > MAX_PACKED_ROW {
            run.passed = Some(key.to_vec());
            return Ok(Placed::TableOutsideBlocks);
        }
        run.rows.push(key, value);
        if run.rows.raw.len() >= self.block_bytes {
            self.fresh |= run.write(tx, ks, &mut self.zstd)?;
        }
        Ok(Placed::Block)
    }

    /// Writes the blocks still open.
    pub(crate) fn finish(&mut self, tx: &Connection) -> Result<()> {
        for (run, ks) in self.runs.iter_mut().zip(PACKED) {
            if let Some(mut run) = run.take() {
                self.fresh |= run.write(tx, ks, &mut self.zstd)?;
            }
        }
        Ok(())
    }

    /// Whether blocks were written since the last call: readers and the writer's map of
    /// blocks must then look again.
    pub(crate) fn wrote_blocks(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }
}

/// Checks every block for `check_integrity`: each decodes to ordered rows inside its range,
/// the ranges of a keyspace are disjoint, and no key is both in a block and in the table.
pub(crate) fn verify(conn: &Connection) -> Result<()> {
    for ks in PACKED {
        let mut previous_last: Option<Vec<u8>> = None;
        for meta in blocks::all(conn, ks)? {
            if previous_last.as_ref().is_some_and(|p| *p >= meta.first) {
                return Err(Error::Corruption(format!(
                    "packed blocks of keyspace {ks} overlap at block {}",
                    meta.id
                )));
            }
            let block = blocks::read_block(conn, ks, &meta)?;
            let query = format!("SELECT k FROM {} WHERE k >= ?1 AND k <= ?2", sql(ks).table);
            let mut st = conn.prepare_cached(&query).r2e()?;
            let mut rows = st.query([&meta.first, &meta.last]).r2e()?;
            while let Some(row) = rows.next().r2e()? {
                let k: Vec<u8> = row.get(0).r2e()?;
                if block.value(&k).is_some() {
                    return Err(Error::Corruption(format!(
                        "a key of keyspace {ks} is both in packed block {} and in its table",
                        meta.id
                    )));
                }
            }
            previous_last = Some(meta.last);
        }
    }
    Ok(())
}
