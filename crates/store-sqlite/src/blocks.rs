//! Rows of the oplog, the object base and content packed into compressed blocks, and reading
//! them.
//!
//! SQLite keeps every row as it is, where RocksDB compresses its files block by block: on a
//! real history the oplog and the state rows took 4.1 MB in SQLite and 1.7 MB in RocksDB
//! (BENCHMARKS.md, "Store size after `msite compact`"). So [`Store::compact`] (`msite
//! compact`, as `git gc` packs a repository) moves the rows of the [`COMPACTED`] keyspaces
//! into blocks: runs of consecutive rows of about [`DEFAULT_BLOCK_BYTES`], each compressed
//! with zstd as one unit and kept as one row of `kv_packed` (`pack.rs` writes them). A bulk
//! load (a new replica's snapshot) writes the rows of the [`PACKED`] keyspaces, content
//! included, straight into blocks when their tables are empty (`pack::BulkPacker`): a few
//! hundred block inserts instead of a row insert per row of the object base and per small
//! content.
//!
//! The rules every reader and writer keeps:
//! * **A key is in its keyspace's table or in one block, never both.** A get reads the one
//!   block whose range covers the key, then the table; a scan merges the table's rows with
//!   the blocks' rows in key order.
//! * **A keyspace's blocks cover disjoint key ranges** `[first_k, last_k]`, the first and last
//!   key each holds. Rows of the table may lie between and inside those ranges: a new key is
//!   written to the table and leaves the blocks alone.
//! * **A block never changes.** Writing or deleting a key that a block holds first moves the
//!   whole block back into the table (`pack.rs`), until the next `compact` packs it again.
//! * **Block ids are never reused** (`AUTOINCREMENT`), so a decoded block is cached by its id
//!   for the life of the store: a reader on an older snapshot that still sees a block the
//!   writer has since unpacked reads the same rows.
//!
//! A block's bytes are one zstd frame of its rows, each `u32` key length, key, `u32` value
//! length, value (little-endian), in ascending key order. A block that does not decode to
//! rows in that order, inside its recorded range, is [`Error::Corruption`].
//!
//! [`Store::compact`]: msite_core::store::Store::compact

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use lru::LruCache;
use msite_core::store::{Error, KeyRange, KeyValue, Keyspace, Result};
use rusqlite::{Connection, OptionalExtension};

use crate::error::SqlResultExt;

/// The keyspaces whose rows may lie in blocks: those `compact` packs ([`COMPACTED`]), and
/// content, which only a bulk load packs (`pack::BulkPacker`). The small tables are not worth
/// it.
pub(crate) const PACKED: [Keyspace; 3] = [Keyspace::Oplog, Keyspace::State, Keyspace::Blobs];

/// The keyspaces `compact` packs: the oplog (written once, read in runs by exports) and the
/// object base (rows rarely rewritten). Not content: msite-core compresses it already where
/// that pays, and repacking it would rewrite most of the store at every `compact`. A bulk
/// load packs a new replica's small content because a block insert per few hundred rows is
/// what makes the load fast; `compact` leaves those blocks as they are.
pub(crate) const COMPACTED: [Keyspace; 2] = [Keyspace::Oplog, Keyspace::State];

/// Raw bytes of rows gathered into one block by default. At 64 KiB a block of the serde
/// history's oplog compresses to about 22 KB: larger than a page, so SQLite keeps it in full
/// overflow pages (blocks of 16 KiB compressed to 4–6 KB, two to a page, and left a third of
/// each page empty), and zstd sees the repeats between many entries.
pub const DEFAULT_BLOCK_BYTES: usize = 64 << 10;
/// The largest block size a store accepts: what a reader decompresses at most per block.
pub const MAX_BLOCK_BYTES: usize = 512 << 10;
/// Rows longer than this (key and value) stay in the table; a block holds at most
/// `block_bytes` of rows plus one such row.
pub(crate) const MAX_PACKED_ROW: usize = 16 << 10;
/// What a block may decompress to, at most; a frame claiming more is damaged.
const MAX_RAW: usize = MAX_BLOCK_BYTES + MAX_PACKED_ROW + 8;
/// zstd's level for blocks: `compact` is rare, reads are many, and higher levels gained 1 %
/// on the serde history.
pub(crate) const LEVEL: i32 = 3;
/// Decoded blocks kept per store: at most 4 MiB of default-sized blocks.
const CACHED_BLOCKS: NonZeroUsize = NonZeroUsize::new(64).unwrap();

/// The blocks' table and its range index (run at every open; `IF NOT EXISTS` throughout).
/// A rowid table, not `WITHOUT ROWID`: its rows may be far larger than a page.
pub(crate) const CREATE_SQL: &str = "\
    CREATE TABLE IF NOT EXISTS kv_packed (id INTEGER PRIMARY KEY AUTOINCREMENT, \
      ks TEXT NOT NULL, first_k BLOB NOT NULL, last_k BLOB NOT NULL, v BLOB NOT NULL);\n\
    CREATE UNIQUE INDEX IF NOT EXISTS kv_packed_range ON kv_packed (ks, first_k, last_k);\n";

const META: &str = "SELECT id, first_k, last_k FROM kv_packed WHERE ks = ?1";
const BODY: &str = "SELECT v FROM kv_packed WHERE id = ?1";

/// Where `ks` stands in [`PACKED`], if its rows may lie in blocks: the slot of per-keyspace
/// state.
pub(crate) fn packed_slot(ks: Keyspace) -> Option<usize> {
    PACKED.iter().position(|p| *p == ks)
}

/// Where a block lies: its id and the first and last keys it holds.
#[derive(Clone, Debug)]
pub(crate) struct BlockMeta {
    pub(crate) id: i64,
    pub(crate) first: Vec<u8>,
    pub(crate) last: Vec<u8>,
}

impl BlockMeta {
    /// The block an entry of [`Ranges`] describes.
    pub(crate) fn of((first, (last, id)): (&Vec<u8>, &(Vec<u8>, i64))) -> BlockMeta {
        BlockMeta {
            id: *id,
            first: first.clone(),
            last: last.clone(),
        }
    }

    /// The block a row of the [`META`] query describes.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlockMeta> {
        Ok(BlockMeta {
            id: r.get(0)?,
            first: r.get(1)?,
            last: r.get(2)?,
        })
    }
}

/// Where one keyspace's blocks lie: first key → last key and id.
pub(crate) type Ranges = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

/// The ranges of every block of `ks`, in one query.
pub(crate) fn ranges(conn: &Connection, ks: Keyspace) -> Result<Ranges> {
    Ok(all(conn, ks)?
        .into_iter()
        .map(|m| (m.first, (m.last, m.id)))
        .collect())
}

/// The block ranges a snapshot has read, kept for its life, so that its lookups find their
/// block without a query. True for the whole snapshot: it is one read transaction.
#[derive(Default)]
pub(crate) struct Memo([OnceLock<Ranges>; PACKED.len()]);

impl Memo {
    /// Callers look at blocks of packed keyspaces only ([`Packs::active`]); any other has none.
    fn find(&self, conn: &Connection, ks: Keyspace, which: Which<'_>) -> Result<Option<BlockMeta>> {
        let Some(slot) = packed_slot(ks).map(|at| &self.0[at]) else {
            return Ok(None);
        };
        let map = match slot.get() {
            Some(map) => map,
            None => {
                let loaded = ranges(conn, ks)?;
                slot.get_or_init(|| loaded)
            }
        };
        let hit = match which {
            Which::AtOrBelow(k) => map
                .range::<[u8], _>((Bound::Unbounded, Bound::Included(k)))
                .next_back(),
            Which::Below(k) => map
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(k)))
                .next_back(),
            Which::Above(k) => map
                .range::<[u8], _>((Bound::Excluded(k), Bound::Unbounded))
                .next(),
            Which::First => map.iter().next(),
            Which::Last => map.iter().next_back(),
        };
        Ok(hit.map(BlockMeta::of))
    }
}

/// The block of `ks` that `which` names: from the snapshot's memo if there is one, else by a
/// query.
fn locate(
    conn: &Connection,
    memo: Option<&Memo>,
    ks: Keyspace,
    which: Which<'_>,
) -> Result<Option<BlockMeta>> {
    match memo {
        Some(memo) => memo.find(conn, ks, which),
        None => find(conn, ks, which),
    }
}

/// Which block of a keyspace a query asks for.
enum Which<'k> {
    /// The block with the largest first key at or below the key: the only one that can hold it.
    AtOrBelow(&'k [u8]),
    /// The block with the largest first key below the key.
    Below(&'k [u8]),
    /// The block with the smallest first key above the key: the next one in order.
    Above(&'k [u8]),
    First,
    Last,
}

/// The block of `ks` that `which` names, if there is one.
fn find(conn: &Connection, ks: Keyspace, which: Which<'_>) -> Result<Option<BlockMeta>> {
    let (cond, key, order) = match which {
        Which::AtOrBelow(k) => (" AND first_k <= ?2", Some(k), "DESC"),
        Which::Below(k) => (" AND first_k < ?2", Some(k), "DESC"),
        Which::Above(k) => (" AND first_k > ?2", Some(k), "ASC"),
        Which::First => ("", None, "ASC"),
        Which::Last => ("", None, "DESC"),
    };
    let query = format!("{META}{cond} ORDER BY first_k {order} LIMIT 1");
    let mut st = conn.prepare_cached(&query).r2e()?;
    match key {
        Some(k) => st.query_row(rusqlite::params![ks.name(), k], BlockMeta::from_row),
        None => st.query_row([ks.name()], BlockMeta::from_row),
    }
    .optional()
    .r2e()
}

/// Every block of `ks`, in key order.
pub(crate) fn all(conn: &Connection, ks: Keyspace) -> Result<Vec<BlockMeta>> {
    let mut st = conn
        .prepare_cached(&format!("{META} ORDER BY first_k"))
        .r2e()?;
    let rows = st.query_map([ks.name()], BlockMeta::from_row).r2e()?;
    rows.collect::<rusqlite::Result<_>>().r2e()
}

/// A decoded block: its raw bytes and where each row lies in them, in ascending key order.
/// Rows are sliced out of the one buffer, not copied: a lookup in a freshly read block costs
/// its decompression and one pass over its lengths.
pub(crate) struct Block {
    raw: Vec<u8>,
    rows: Vec<RowAt>,
}

/// Where one row of a block lies in its raw bytes.
struct RowAt {
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

impl Block {
    /// Appends a row to `raw` as a block holds it before compressing: `u32` key length, key,
    /// `u32` value length, value (little-endian). `key.len() + value.len() + 8` bytes.
    pub(crate) fn append_row(raw: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        for part in [key, value] {
            raw.extend_from_slice(&(part.len() as u32).to_le_bytes());
            raw.extend_from_slice(part);
        }
    }

    /// The rows of block `meta` of `ks` from its stored bytes, checked against its range.
    pub(crate) fn decode(ks: Keyspace, meta: &BlockMeta, data: &[u8]) -> Result<Block> {
        let damaged = |what: &str| {
            Error::Corruption(format!(
                "packed block {} of keyspace {ks} is damaged ({what}); \
                 restore the store from a backup",
                meta.id
            ))
        };
        let raw = zstd::bulk::decompress(data, MAX_RAW).map_err(|_| damaged("not zstd"))?;
        let mut rows: Vec<RowAt> = Vec::new();
        let mut at = 0;
        while at < raw.len() {
            let (Some(key), Some(value)) = (part_at(&raw, &mut at), part_at(&raw, &mut at)) else {
                return Err(damaged("truncated row"));
            };
            if rows
                .last()
                .is_some_and(|prev| raw[prev.key.clone()] >= raw[key.clone()])
            {
                return Err(damaged("keys out of order"));
            }
            rows.push(RowAt { key, value });
        }
        let block = Block { raw, rows };
        match (block.rows.first(), block.rows.last()) {
            (Some(first), Some(last))
                if block.raw[first.key.clone()] == meta.first[..]
                    && block.raw[last.key.clone()] == meta.last[..] =>
            {
                Ok(block)
            }
            _ => Err(damaged("rows outside its recorded range")),
        }
    }

    /// The number of rows.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The key of row `i`.
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        &self.raw[self.rows[i].key.clone()]
    }

    /// Row `i`, copied out.
    pub(crate) fn row(&self, i: usize) -> KeyValue {
        let at = &self.rows[i];
        (
            self.raw[at.key.clone()].to_vec(),
            self.raw[at.value.clone()].to_vec(),
        )
    }

    /// The value of `key`, if the block holds it.
    pub(crate) fn value(&self, key: &[u8]) -> Option<&[u8]> {
        let i = self
            .rows
            .partition_point(|r| &self.raw[r.key.clone()] < key);
        let at = self.rows.get(i)?;
        (self.raw[at.key.clone()] == *key).then(|| &self.raw[at.value.clone()])
    }

    /// The number of rows inside `end`, an upper bound.
    fn end_position(&self, end: &Bound<Vec<u8>>) -> usize {
        match end {
            Bound::Unbounded => self.rows.len(),
            Bound::Included(e) => self
                .rows
                .partition_point(|r| self.raw[r.key.clone()] <= e[..]),
            Bound::Excluded(e) => self
                .rows
                .partition_point(|r| self.raw[r.key.clone()] < e[..]),
        }
    }

    /// The index of the first row at or after `start`.
    fn position(&self, start: &Bound<Vec<u8>>) -> usize {
        match start {
            Bound::Unbounded => 0,
            Bound::Included(s) => self
                .rows
                .partition_point(|r| self.raw[r.key.clone()] < s[..]),
            Bound::Excluded(s) => self
                .rows
                .partition_point(|r| self.raw[r.key.clone()] <= s[..]),
        }
    }
}

/// The place of the length-prefixed part of `raw` at `*at`, if `raw` holds a whole one;
/// moves `*at` past it.
fn part_at(raw: &[u8], at: &mut usize) -> Option<std::ops::Range<usize>> {
    let len = u32::from_le_bytes(raw.get(*at..*at + 4)?.try_into().ok()?) as usize;
    let part = *at + 4..(*at + 4).checked_add(len)?;
    raw.get(part.clone())?;
    *at = part.end;
    Some(part)
}

/// Block `meta` of `ks`, read from the database and decoded (no cache).
pub(crate) fn read_block(conn: &Connection, ks: Keyspace, meta: &BlockMeta) -> Result<Block> {
    let data: Vec<u8> = conn
        .prepare_cached(BODY)
        .r2e()?
        .query_row([meta.id], |r| r.get(0))
        .r2e()?;
    Block::decode(ks, meta, &data)
}

/// What a store knows of its blocks beyond the database: whether there may be any, and the
/// blocks it decoded lately.
pub(crate) struct Packs {
    /// False only while no block exists in any transaction of this store: set at open when
    /// the table has rows, and before a `compact` that makes blocks commits. Readers skip
    /// every block lookup while it is false.
    present: AtomicBool,
    cache: Mutex<LruCache<i64, Arc<Block>>>,
}

impl Packs {
    /// The state of the store whose database `conn` opens.
    pub(crate) fn open(conn: &Connection) -> Result<Packs> {
        let present: bool = conn
            .query_row("SELECT EXISTS (SELECT 1 FROM kv_packed)", [], |r| r.get(0))
            .r2e()?;
        Ok(Packs {
            present: AtomicBool::new(present),
            cache: Mutex::new(LruCache::new(CACHED_BLOCKS)),
        })
    }

    /// Whether a read of `ks` must look at blocks.
    pub(crate) fn active(&self, ks: Keyspace) -> bool {
        packed_slot(ks).is_some() && self.present.load(Ordering::SeqCst)
    }

    /// Called before a transaction that makes blocks commits.
    pub(crate) fn mark_present(&self) {
        self.present.store(true, Ordering::SeqCst);
    }

    /// Block `meta` of `ks`, from the cache or decoded from the database.
    pub(crate) fn load(
        &self,
        conn: &Connection,
        ks: Keyspace,
        meta: &BlockMeta,
    ) -> Result<Arc<Block>> {
        let cache = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = cache().get(&meta.id) {
            return Ok(Arc::clone(b));
        }
        let block = Arc::new(read_block(conn, ks, meta)?);
        cache().put(meta.id, Arc::clone(&block));
        Ok(block)
    }

    /// The value of `key` in the blocks of `ks`.
    pub(crate) fn get(
        &self,
        conn: &Connection,
        memo: Option<&Memo>,
        ks: Keyspace,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        if !self.active(ks) {
            return Ok(None);
        }
        match locate(conn, memo, ks, Which::AtOrBelow(key))? {
            Some(meta) if key <= meta.last.as_slice() => {
                Ok(self.load(conn, ks, &meta)?.value(key).map(<[u8]>::to_vec))
            }
            _ => Ok(None),
        }
    }

    /// The row with the largest key of `ks` in `range` that a block holds. Only the block
    /// with the largest first key inside the range's end can hold it: every later block
    /// starts beyond the end, and every earlier one ends below this one's first key.
    pub(crate) fn last(
        &self,
        conn: &Connection,
        memo: Option<&Memo>,
        ks: Keyspace,
        range: &KeyRange,
    ) -> Result<Option<KeyValue>> {
        if !self.active(ks) || range.is_empty() {
            return Ok(None);
        }
        let which = match &range.end {
            Bound::Included(e) => Which::AtOrBelow(e),
            Bound::Excluded(e) => Which::Below(e),
            Bound::Unbounded => Which::Last,
        };
        let Some(meta) = locate(conn, memo, ks, which)? else {
            return Ok(None);
        };
        let block = self.load(conn, ks, &meta)?;
        let below_end = block.end_position(&range.end);
        let last = below_end
            .checked_sub(1)
            .filter(|&i| range.contains(block.key(i)));
        Ok(last.map(|i| block.row(i)))
    }
}

/// The rows of a keyspace's blocks inside a range, in key order, block by block: the block
/// half of a scan (`iter.rs` merges it with the table's rows).
pub(crate) struct BlockRows {
    ks: Keyspace,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    /// The block being read and the index of its next row.
    current: Option<(BlockMeta, Arc<Block>, usize)>,
    done: bool,
}

impl BlockRows {
    pub(crate) fn new(ks: Keyspace, range: &KeyRange) -> Self {
        BlockRows {
            ks,
            start: range.start.clone(),
            end: range.end.clone(),
            current: None,
            done: range.is_empty(),
        }
    }

    /// Moves to the next row inside the range, loading blocks as needed; false when none is left.
    pub(crate) fn ready(&mut self, conn: &Connection, packs: &Packs) -> Result<bool> {
        while !self.done {
            if let Some((_, block, at)) = &self.current {
                if *at < block.len() {
                    self.done = !self.below_end(block.key(*at));
                    return Ok(!self.done);
                }
            }
            let next = match (&self.current, &self.start) {
                (Some((meta, _, _)), _) => find(conn, self.ks, Which::Above(&meta.first))?,
                (None, Bound::Included(s) | Bound::Excluded(s)) => {
                    match find(conn, self.ks, Which::AtOrBelow(s))? {
                        Some(meta) => Some(meta),
                        None => find(conn, self.ks, Which::First)?,
                    }
                }
                (None, Bound::Unbounded) => find(conn, self.ks, Which::First)?,
            };
            match next {
                Some(meta) if self.below_end(&meta.first) => {
                    let block = packs.load(conn, self.ks, &meta)?;
                    let at = block.position(&self.start);
                    self.current = Some((meta, block, at));
                }
                _ => self.done = true,
            }
        }
        Ok(false)
    }

    /// The key of the row [`ready`](Self::ready) moved to.
    pub(crate) fn key(&self) -> &[u8] {
        match &self.current {
            Some((_, block, at)) => block.key(*at),
            None => unreachable!("BlockRows::key without a ready row"),
        }
    }

    /// Takes the row [`ready`](Self::ready) moved to.
    pub(crate) fn take(&mut self) -> KeyValue {
        match &mut self.current {
            Some((_, block, at)) => {
                *at += 1;
                block.row(*at - 1)
            }
            None => unreachable!("BlockRows::take without a ready row"),
        }
    }

    fn below_end(&self, k: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => k <= e.as_slice(),
            Bound::Excluded(e) => k < e.as_slice(),
            Bound::Unbounded => true,
        }
    }
}
