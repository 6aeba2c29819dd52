//! [`SqliteStore`]: opening, the writer, the reader pool and the vendor tools.

use std::fs::{self, File};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use msite_core::store::{
    dir_bytes, lock_dir, prepare_empty_dir, BulkRows, Error, KeyRange, KeyValue, Keyspace, OpKind,
    PoisonFlag, ReadView, RecordedOp, Result, ScanIter, Store, WriteOptions,
};
use msite_core::store::{scan_each_by_scan, EarlySyncEvery, PairFn};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{CachedStatement, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::blocks::{self, Memo, Packs};
use crate::error::{map, SqlResultExt, BACKEND};
use crate::iter::{ReadConn, SqliteIter};
use crate::journal;
use crate::pack::{self, BlockIndex};
use crate::snapshot::SqliteSnapshot;
use crate::split;
use crate::SqliteBatch;

/// The database file inside the store directory.
pub(crate) const DB_FILE: &str = "store.sqlite3";
const LOCK_FILE: &str = "LOCK";
/// Reader connections kept open for reuse.
const MAX_IDLE_READERS: usize = 16;
/// Page size of new stores. Larger than SQLite's 4 KiB default: a large import writes each
/// page to the WAL and again at the checkpoint, one system call per page each time, and
/// splits pages less often (see BENCHMARKS.md, "Import, export and restore").
const PAGE_SIZE: i64 = 16384;
/// Enough for every per-keyspace statement and every scan shape.
const STATEMENT_CACHE: usize = 128;

/// The SQL of one keyspace's table.
pub(crate) struct KsSql {
    pub(crate) table: &'static str,
    pub(crate) create: &'static str,
    pub(crate) get: &'static str,
    pub(crate) put: &'static str,
    pub(crate) delete: &'static str,
    pub(crate) delete_range: &'static str,
}

macro_rules! ks_sql {
    ($table:literal) => {
        KsSql {
            table: $table,
            create: concat!(
                "CREATE TABLE IF NOT EXISTS ",
                $table,
                " (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
            ),
            get: concat!("SELECT v FROM ", $table, " WHERE k = ?1"),
            put: concat!("INSERT OR REPLACE INTO ", $table, " (k, v) VALUES (?1, ?2)"),
            delete: concat!("DELETE FROM ", $table, " WHERE k = ?1"),
            delete_range: concat!("DELETE FROM ", $table, " WHERE k >= ?1 AND k < ?2"),
        }
    };
}

/// Indexed by `Keyspace as usize`, i.e. in the order of [`Keyspace::ALL`] (a test checks).
const SQL: [KsSql; 6] = [
    ks_sql!("kv_meta"),
    ks_sql!("kv_oplog"),
    ks_sql!("kv_epochs"),
    ks_sql!("kv_peers"),
    ks_sql!("kv_state"),
    ks_sql!("kv_blobs"),
];

/// The SQL of `ks`'s table.
pub(crate) fn sql(ks: Keyspace) -> &'static KsSql {
    &SQL[ks as usize]
}

/// Rows per multi-row `INSERT OR REPLACE`: a run of puts into one keyspace, in ascending key
/// order, is written this many rows per statement execution, which saves SQLite's
/// per-statement work (binding, cursor set-up, halting) for all but the first row. Only
/// ascending runs: a multi-row statement keeps a statement journal, a copy of every page it
/// touches, which costs more than it saves when the rows land on scattered pages (unsorted
/// random keys: twice the CPU time). Rows of one statement are inserted in order anyway.
const PUT_ROWS: usize = 64;

/// The multi-row put statement of `ks` ([`PUT_ROWS`] rows).
fn put_many_sql(ks: Keyspace) -> &'static str {
    static SQL_MANY: OnceLock<Vec<String>> = OnceLock::new();
    &SQL_MANY.get_or_init(|| {
        Keyspace::ALL
            .iter()
            .map(|ks| {
                let mut q = format!("INSERT OR REPLACE INTO {} (k, v) VALUES ", sql(*ks).table);
                for i in 0..PUT_ROWS {
                    if i > 0 {
                        q.push(',');
                    }
                    q.push_str("(?,?)");
                }
                q
            })
            .collect()
    })[ks as usize]
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under these locks leaves a connection whose open transaction (if any) rolls
    // back when its `Transaction` guard drops, or an idle-connection list: both usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a connection waits for another's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).r2e()?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// The layout of the database this release reads and writes, kept in SQLite's
/// `user_version`: 1 since the packed blocks (`kv_packed`) and the content pieces
/// (`kv_blobs_tail`), which a release before them would not see (it would read a packed
/// store as empty); 2 since content may lie in blocks too (a bulk load packs it), which a
/// release of layout 1 would not look for. 0: written before the marker, which is the same
/// layout without blocks. A store marked with a later layout is refused, so a release never
/// misreads what a newer one wrote; an earlier one is read as it is (it holds no blocks this
/// release would miss) and marked with this layout at its first open.
pub(crate) const STORE_LAYOUT: i64 = 2;

/// The writer's page cache, in KiB.
const WRITER_CACHE_KIB: i64 = 64 << 10;

/// The writer's page cache during a bulk load, in KiB. A load writes pages once and reads
/// few back, and a transaction's dirty pages stay in the cache until they no longer fit: with
/// the writer's 64 MiB, a new replica's whole store was written at the commit, after the
/// packet had been read, and the commit was a sixth of the import. With 1 MiB the pages go
/// to the file as the load goes, while the packet's thread is still reading (BENCHMARKS.md,
/// stop 41).
const BULK_CACHE_KIB: i64 = 1 << 10;

/// The bytes of rows a bulk load takes in between two background syncs of the database file.
const EARLY_SYNC_BYTES: u64 = 4 << 20;

/// Sets `conn`'s page cache to `kib` KiB.
fn set_cache_kib(conn: &Connection, kib: i64) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -kib)
}

/// The writer connection to the database in `dir`: WAL mode, its pragmas, every table.
fn open_writer(dir: &Path) -> Result<Connection> {
    let conn = Connection::open(dir.join(DB_FILE)).r2e()?;
    configure(&conn)?;
    check_layout(&conn, dir)?;
    // Takes effect only while the database is still empty (a new store): an existing
    // store keeps the page size it was created with.
    conn.pragma_update(None, "page_size", PAGE_SIZE).r2e()?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .r2e()?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Backend {
            backend: BACKEND,
            source: format!(
                "could not switch {} to WAL mode (got {mode})",
                dir.display()
            )
            .into(),
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL").r2e()?;
    set_cache_kib(&conn, WRITER_CACHE_KIB).r2e()?;
    // Statement journals (a multi-row put needs one, to undo a half-done statement) in
    // memory rather than in a temporary file: they hold a few pages and never need to
    // survive a crash (the transaction's own WAL frames do).
    conn.pragma_update(None, "temp_store", "MEMORY").r2e()?;
    conn.pragma_update(None, split::WRITER_PRAGMA.0, split::WRITER_PRAGMA.1)
        .r2e()?;
    let mut create = String::new();
    for ks in Keyspace::ALL {
        create.push_str(sql(ks).create);
        create.push_str(";\n");
    }
    create.push_str(split::create_sql());
    create.push_str(blocks::CREATE_SQL);
    conn.execute_batch(&create).r2e()?;
    conn.pragma_update(None, "user_version", STORE_LAYOUT)
        .r2e()?;
    Ok(conn)
}

/// Refuses a database whose layout is later than [`STORE_LAYOUT`].
fn check_layout(conn: &Connection, dir: &Path) -> Result<()> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .r2e()?;
    if found > STORE_LAYOUT {
        return Err(Error::Invalid(format!(
            "the SQLite store in {} was written by a newer release of msite (store layout \
             {found}; this release knows up to {STORE_LAYOUT}); upgrade msite to open it",
            dir.display()
        )));
    }
    Ok(())
}

/// The writer connection, the `synchronous` setting it currently has, and where the packed
/// blocks lie.
struct Writer {
    conn: Connection,
    synchronous_full: bool,
    blocks: BlockIndex,
    /// Writes since the last pack, for [`SqliteOptions::pack_every_writes`].
    writes_since_pack: u32,
}

impl Writer {
    /// Commits from now on with `synchronous = FULL` (`full`) or `NORMAL`.
    fn set_synchronous_full(&mut self, full: bool) -> Result<()> {
        if self.synchronous_full != full {
            let level = if full { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", level).r2e()?;
            self.synchronous_full = full;
        }
        Ok(())
    }
}

/// How a [`SqliteStore`] is tuned; [`SqliteStore::open`] uses the default.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Raw bytes of rows that `compact` gathers into one compressed block (`blocks.rs`), at
    /// most [`MAX_BLOCK_BYTES`](crate::MAX_BLOCK_BYTES). Tests use small blocks to make many.
    pub block_bytes: usize,
    /// For tests: before every `pack_every_writes`-th write (0, the default: never), pack
    /// the store's rows into blocks as `compact` does (without its `VACUUM`), so that a test
    /// suite runs on a store whose rows keep moving between tables and blocks.
    pub pack_every_writes: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            block_bytes: blocks::DEFAULT_BLOCK_BYTES,
            pack_every_writes: 0,
        }
    }
}

/// An ordered key-value store in a SQLite database. See the [crate documentation](crate).
pub struct SqliteStore {
    dir: PathBuf,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    poisoned: PoisonFlag,
    /// Boxed: the block cache would make the store (and `AnyStore`) several times larger.
    pub(crate) packs: Box<Packs>,
    options: SqliteOptions,
    /// The lock on `DIR/LOCK`; dropped (and so released) after the connections above.
    _lock: File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating it if needed) the store in directory `dir`.
    ///
    /// Fails with [`Error::Locked`] if the directory is open elsewhere (in this process or
    /// another) and with [`Error::Corruption`] if SQLite finds the database damaged.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, SqliteOptions::default())
    }

    /// [`open`](Self::open) with the given tuning.
    pub fn open_with(dir: &Path, options: SqliteOptions) -> Result<Self> {
        if !(1..=blocks::MAX_BLOCK_BYTES).contains(&options.block_bytes) {
            return Err(Error::Invalid(format!(
                "a SQLite block size of {} bytes is outside 1..={}",
                options.block_bytes,
                blocks::MAX_BLOCK_BYTES
            )));
        }
        fs::create_dir_all(dir)?;
        let lock = lock_dir(dir, LOCK_FILE)?;
        let conn = open_writer(dir)?;
        let packs = Box::new(Packs::open(&conn)?);
        Ok(SqliteStore {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                conn,
                synchronous_full: false,
                blocks: BlockIndex::default(),
                writes_since_pack: 0,
            }),
            readers: Mutex::new(Vec::new()),
            poisoned: PoisonFlag::default(),
            packs,
            options,
            _lock: lock,
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A reader connection from the pool (or a new one), in autocommit mode.
    pub(crate) fn reader(&self) -> Result<Reader<'_>> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    self.dir.join(DB_FILE),
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .r2e()?;
                configure(&c)?;
                c.pragma_update(None, "query_only", true).r2e()?;
                c
            }
        };
        Ok(Reader {
            conn: Some(conn),
            store: self,
            in_txn: false,
            memo: None,
        })
    }

    /// Packs the store before a write when [`SqliteOptions::pack_every_writes`] says so. A
    /// failed pack fails the write before it starts.
    fn pack_if_due(&self, w: &mut Writer) -> Result<()> {
        if self.options.pack_every_writes == 0 {
            return Ok(());
        }
        w.writes_since_pack += 1;
        if w.writes_since_pack < self.options.pack_every_writes {
            return Ok(());
        }
        w.writes_since_pack = 0;
        repack(w, &self.packs, self.options.block_bytes).map(|_| ())
    }

    /// A reader for one read of `ks` outside a snapshot. Where blocks are read too, the two
    /// queries run in one read transaction, or a `compact` or an unpacking write committed
    /// between them could hide a row that was there all along.
    fn consistent_reader(&self, ks: Keyspace) -> Result<Reader<'_>> {
        let mut r = self.reader()?;
        if self.packs.active(ks) {
            r.begin_read()?;
        }
        Ok(r)
    }

    fn write_locked(&self, w: &mut Writer, batch: &SqliteBatch, opts: WriteOptions) -> Result<()> {
        if batch.ops().is_empty() && batch.expects().is_empty() {
            return if opts.sync { self.sync_wal() } else { Ok(()) };
        }
        w.set_synchronous_full(opts.sync)?;
        let res = self.write_in_transaction(w, batch);
        if res.is_err() {
            w.blocks.forget(); // It may describe blocks of the rolled-back transaction.
        }
        res
    }

    fn write_in_transaction(&self, w: &mut Writer, batch: &SqliteBatch) -> Result<()> {
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .r2e()?;
        // On an error, dropping `tx` rolls the transaction back.
        check_expects(&tx, &self.packs, batch)?;
        write_ops(&tx, &self.packs, &mut w.blocks, batch)?;
        tx.commit().r2e()
    }

    /// [`Store::bulk_load`]: every row in one `IMMEDIATE` transaction, each keyspace's insert
    /// prepared once, committed with `synchronous = FULL`. The rows arrive sorted, so SQLite
    /// appends to its B-trees; pages the cache cannot hold spill into the journal or the
    /// database file, so memory stays at the cache size. When no other connection is open (a
    /// new replica's store) the load runs under a rollback journal, which writes each page
    /// once (`journal.rs`); either way a crash rolls the whole load back. Only the commit can
    /// poison the store: a damaged input rolls back. Rows of the packed keyspaces go straight
    /// into blocks while their tables are empty (`pack::BulkPacker`).
    fn bulk_load_locked(&self, w: &mut Writer, rows: BulkRows<'_>) -> Result<u64> {
        w.set_synchronous_full(true)?;
        lock(&self.readers).clear();
        let rollback = journal::leave_wal(&w.conn, BUSY_TIMEOUT)?;
        // The load's settings, the writer's again whatever the load's outcome: the pragma off
        // (split.rs says why) and the small page cache (`BULK_CACHE_KIB`).
        let (pragma, on) = split::WRITER_PRAGMA;
        let loaded = w
            .conn
            .pragma_update(None, pragma, !on)
            .and_then(|()| set_cache_kib(&w.conn, BULK_CACHE_KIB))
            .r2e()
            .and_then(|()| self.bulk_load_in_one_transaction(w, rows));
        if loaded.is_err() {
            w.blocks.forget();
        }
        let restored = w
            .conn
            .pragma_update(None, pragma, on)
            .and_then(|()| set_cache_kib(&w.conn, WRITER_CACHE_KIB))
            .r2e();
        let wal = match rollback {
            true => journal::return_to_wal(&w.conn),
            false => Ok(()),
        };
        let rows = loaded?;
        restored?;
        wal?;
        Ok(rows)
    }

    fn bulk_load_in_one_transaction(&self, w: &mut Writer, rows: BulkRows<'_>) -> Result<u64> {
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .r2e()?;
        let mut puts: [Option<CachedStatement<'_>>; 6] = std::array::from_fn(|_| None);
        let mut packer = pack::BulkPacker::new(&tx, self.options.block_bytes)?;
        let mut count = 0u64;
        // The pages the small cache spills reach the file as the load goes; synced in the
        // background as they gather, they no longer wait for the commit's fsync (a sixth of
        // a new replica's import, BENCHMARKS.md stop 41).
        let mut early = EarlySyncEvery::start(&self.dir.join(DB_FILE), EARLY_SYNC_BYTES);
        rows.each_row(&mut |ks, k, v| {
            count += 1;
            early.wrote((k.len() + v.len()) as u64);
            match packer.take(&tx, ks, k, v)? {
                pack::Placed::Block => return Ok(()),
                pack::Placed::TableOutsideBlocks => {}
                pack::Placed::Table => {
                    // A row given again must move the block that holds its key.
                    self.take_new_blocks(&mut packer, &mut w.blocks);
                    w.blocks.release(&tx, &self.packs, ks, k)?;
                }
            }
            prepared(&tx, &mut puts[ks as usize], sql(ks).put)?
                .execute([k, split::head(ks, v)])
                .r2e()?;
            split::put_tail(&tx, ks, k, v)
        })?;
        drop(puts);
        packer.finish(&tx)?;
        // Also when the map was read mid-load: the next write must see every block.
        self.take_new_blocks(&mut packer, &mut w.blocks);
        split::drop_orphans(&tx)?;
        let res = tx.commit().r2e();
        self.poisoned.observe(WriteOptions::SYNC, &res);
        res.map(|()| count)
    }

    /// After a bulk load wrote blocks: readers must look for blocks, and the writer's map of
    /// them, if it was read before, lacks the new ones (it is read again when next needed).
    fn take_new_blocks(&self, packer: &mut pack::BulkPacker, blocks: &mut BlockIndex) {
        if packer.wrote_blocks() {
            self.packs.mark_present();
            blocks.forget();
        }
    }

    /// An empty synced write makes earlier unsynced commits durable: they are all in the WAL.
    fn sync_wal(&self) -> Result<()> {
        match File::open(self.dir.join(format!("{DB_FILE}-wal"))) {
            Ok(f) => Ok(f.sync_all()?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The value of `key` in `ks`: in the block that holds it, else in its row (`blocks.rs`: a
/// key is in one of them, never both). The block first, because after a `compact` most keys
/// are there, and a snapshot's `memo` finds their block without a query.
pub(crate) fn get_value(
    conn: &Connection,
    packs: &Packs,
    memo: Option<&Memo>,
    ks: Keyspace,
    key: &[u8],
) -> Result<Option<Vec<u8>>> {
    match packs.get(conn, memo, ks, key)? {
        Some(v) => Ok(Some(v)),
        None => split::get(conn, ks, key),
    }
}

/// Every guard of the batch must hold (the key's current value equals the expected one).
fn check_expects(tx: &Connection, packs: &Packs, batch: &SqliteBatch) -> Result<()> {
    for e in batch.expects() {
        let (key, expected) = batch.guard(e);
        let current = get_value(tx, packs, None, e.ks, key)?;
        if current.as_deref() != expected {
            return Err(Error::Precondition { keyspace: e.ks });
        }
    }
    Ok(())
}

/// Writes the batch's operations in order.
fn write_ops(
    tx: &Connection,
    packs: &Packs,
    blocks: &mut BlockIndex,
    batch: &SqliteBatch,
) -> Result<()> {
    let mut statements = Statements::new(tx, packs, blocks);
    let ops = batch.ops();
    let mut at = 0;
    while at < ops.len() {
        if is_sorted_put_run(batch, &ops[at..]) {
            statements.put_run(batch, &ops[at..at + PUT_ROWS])?;
            at += PUT_ROWS;
        } else {
            statements.one(batch, &ops[at])?;
            at += 1;
        }
    }
    Ok(())
}

/// Whether `ops` starts with [`PUT_ROWS`] puts into one keyspace in ascending key order (as a
/// sorted overlay yields them): those go to SQLite as one multi-row statement.
fn is_sorted_put_run(batch: &SqliteBatch, ops: &[RecordedOp]) -> bool {
    let Some(run) = ops.get(..PUT_ROWS) else {
        return false;
    };
    run.iter()
        .all(|o| o.kind == OpKind::Put && o.ks == run[0].ks)
        && run.windows(2).all(|w| batch.key(&w[0]) < batch.key(&w[1]))
}

/// The write statements of one transaction, prepared on first use, one per keyspace and kind.
struct Statements<'tx> {
    tx: &'tx Connection,
    packs: &'tx Packs,
    blocks: &'tx mut BlockIndex,
    puts: [Option<CachedStatement<'tx>>; 6],
    put_runs: [Option<CachedStatement<'tx>>; 6],
    deletes: [Option<CachedStatement<'tx>>; 6],
}

impl<'tx> Statements<'tx> {
    fn new(tx: &'tx Connection, packs: &'tx Packs, blocks: &'tx mut BlockIndex) -> Self {
        Statements {
            tx,
            packs,
            blocks,
            puts: std::array::from_fn(|_| None),
            put_runs: std::array::from_fn(|_| None),
            deletes: std::array::from_fn(|_| None),
        }
    }

    /// Writes a sorted run of [`PUT_ROWS`] puts into one keyspace with one execution.
    fn put_run(&mut self, batch: &SqliteBatch, run: &[RecordedOp]) -> Result<()> {
        let ks = run[0].ks;
        for o in run {
            self.blocks.release(self.tx, self.packs, ks, batch.key(o))?;
        }
        let st = prepared(self.tx, &mut self.put_runs[ks as usize], put_many_sql(ks))?;
        for (n, o) in run.iter().enumerate() {
            st.raw_bind_parameter(2 * n + 1, batch.key(o)).r2e()?;
            st.raw_bind_parameter(2 * n + 2, split::head(ks, batch.value(o)))
                .r2e()?;
        }
        st.raw_execute().r2e()?;
        for o in run {
            split::put_tail(self.tx, ks, batch.key(o), batch.value(o))?;
        }
        Ok(())
    }

    /// Writes one operation.
    fn one(&mut self, batch: &SqliteBatch, op: &RecordedOp) -> Result<()> {
        let (a, b) = (batch.key(op), batch.value(op));
        let slot = op.ks as usize;
        match op.kind {
            OpKind::Put => {
                self.blocks.release(self.tx, self.packs, op.ks, a)?;
                prepared(self.tx, &mut self.puts[slot], sql(op.ks).put)?
                    .execute([a, split::head(op.ks, b)])
                    .r2e()?;
                split::put_tail(self.tx, op.ks, a, b)?;
            }
            OpKind::Delete => {
                self.blocks.release(self.tx, self.packs, op.ks, a)?;
                prepared(self.tx, &mut self.deletes[slot], sql(op.ks).delete)?
                    .execute([a])
                    .r2e()?;
            }
            // An empty or inverted range deletes nothing.
            OpKind::DeleteRange if a < b => {
                self.blocks
                    .release_range(self.tx, self.packs, op.ks, a, b)?;
                self.tx
                    .prepare_cached(sql(op.ks).delete_range)
                    .r2e()?
                    .execute([a, b])
                    .r2e()?;
            }
            OpKind::DeleteRange => {}
        }
        Ok(())
    }
}

/// The statement in `slot`, prepared from `text` the first time.
fn prepared<'s, 'tx>(
    tx: &'tx Connection,
    slot: &'s mut Option<CachedStatement<'tx>>,
    text: &str,
) -> Result<&'s mut CachedStatement<'tx>> {
    Ok(match slot {
        Some(st) => st,
        None => slot.insert(tx.prepare_cached(text).r2e()?),
    })
}

/// [`Store::compact`], first step: packs the rows of the packed keyspaces into blocks
/// (`pack.rs`), in one synced transaction. Returns the number of blocks made.
fn repack(w: &mut Writer, packs: &Packs, block_bytes: usize) -> Result<u64> {
    w.set_synchronous_full(true)?;
    // Whatever the outcome, the map is read again: the transaction rewrites every block.
    w.blocks.forget();
    let tx = w
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .r2e()?;
    let made = pack::repack(&tx, packs, block_bytes)?;
    if made > 0 {
        packs.mark_present();
    }
    tx.commit().r2e()?;
    Ok(made)
}

/// [`Store::compact`], second step: `VACUUM` rebuilds the database in full pages without
/// free ones, then a truncating checkpoint moves it out of the WAL. The rebuild is committed
/// synced; its transient copy goes to a temporary file, not memory (`temp_store = MEMORY`
/// would hold a copy of the whole database in RAM), and `MEMORY` is set again afterwards.
fn vacuum(w: &mut Writer) -> Result<()> {
    w.set_synchronous_full(true)?;
    w.conn.pragma_update(None, "temp_store", "FILE").r2e()?;
    let vacuumed = w.conn.execute_batch("VACUUM").r2e();
    w.conn.pragma_update(None, "temp_store", "MEMORY").r2e()?;
    vacuumed?;
    // A reader still on an older snapshot keeps part of the WAL until it ends: the
    // checkpoint then does what it can, and SQLite's automatic checkpoints do the rest.
    w.conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .r2e()
}

/// Copy the database `src` into a new database file `to` with the online backup API, in one
/// step, i.e. within one read transaction of `src`: a consistent copy.
fn copy_database(src: &Connection, to: &Path) -> Result<()> {
    let mut dst = Connection::open(to).r2e()?;
    {
        let backup = Backup::new(src, &mut dst).r2e()?;
        let mut busy = 0;
        loop {
            match backup.step(-1).r2e()? {
                StepResult::Done => break,
                StepResult::More => {}
                _ if busy < 1000 => {
                    busy += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    return Err(Error::Backend {
                        backend: BACKEND,
                        source: "the online backup kept finding the database busy".into(),
                    })
                }
            }
        }
    }
    dst.close().map_err(|(_, e)| map(e))?;
    if let Some(dir) = to.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A pooled reader connection; returns to the pool on drop (after ending its transaction).
pub(crate) struct Reader<'a> {
    /// Always `Some` until dropped.
    conn: Option<Connection>,
    store: &'a SqliteStore,
    in_txn: bool,
    /// The block ranges a snapshot read (`blocks.rs`); only snapshots keep one. Boxed: a
    /// range map per packed keyspace made every reader (and each backend's snapshot enum)
    /// carry it inline.
    memo: Option<Box<Memo>>,
}

impl Reader<'_> {
    /// What the store knows of its packed blocks.
    pub(crate) fn packs(&self) -> &Packs {
        &self.store.packs
    }

    /// The snapshot's memo of block ranges, if this reader keeps one.
    pub(crate) fn memo(&self) -> Option<&Memo> {
        self.memo.as_deref()
    }

    /// Start a read transaction and pin its snapshot by reading from the database.
    pub(crate) fn begin_read(&mut self) -> Result<()> {
        self.execute_batch("BEGIN DEFERRED").r2e()?;
        self.in_txn = true;
        // In WAL mode the snapshot is taken by the first read, not by BEGIN.
        self.prepare_cached(sql(Keyspace::Meta).get)
            .r2e()?
            .query_row([&b""[..]], |r| r.get::<_, Vec<u8>>(0))
            .optional()
            .r2e()?;
        Ok(())
    }
}

impl Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match &self.conn {
            Some(c) => c,
            // `conn` is only taken in `drop`.
            None => unreachable!("reader connection used after drop"),
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.in_txn && conn.execute_batch("ROLLBACK").is_err() {
            return; // A connection in an unknown state is closed, not reused.
        }
        let mut pool = lock(&self.store.readers);
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
    }
}

impl ReadView for SqliteStore {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        get_value(&*self.consistent_reader(ks)?, &self.packs, None, ks, key)
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        let mut r = self.reader()?;
        r.begin_read()?;
        Ok(Box::new(SqliteIter::new(ReadConn::Owned(r), ks, range)))
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        crate::iter::last_in(&*self.consistent_reader(ks)?, &self.packs, None, ks, &range)
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        scan_each_by_scan(self, ks, range, f)
    }
}

impl Store for SqliteStore {
    type Batch = SqliteBatch;
    type Snapshot<'a> = SqliteSnapshot<'a>;

    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn batch(&self) -> SqliteBatch {
        SqliteBatch::default()
    }

    fn write(&self, batch: SqliteBatch, opts: WriteOptions) -> Result<()> {
        let mut w = lock(&self.writer);
        self.poisoned.check()?;
        self.pack_if_due(&mut w)?;
        let res = self.write_locked(&mut w, &batch, opts);
        self.poisoned.observe(opts, &res);
        res
    }

    fn bulk_load(&self, rows: BulkRows<'_>) -> Result<u64> {
        let mut w = lock(&self.writer);
        self.poisoned.check()?;
        self.bulk_load_locked(&mut w, rows)
    }

    fn snapshot(&self) -> Result<SqliteSnapshot<'_>> {
        let mut r = self.reader()?;
        r.begin_read()?;
        r.memo = Some(Box::default());
        Ok(SqliteSnapshot { reader: r })
    }

    fn backup(&self, dest: &Path) -> Result<()> {
        prepare_empty_dir(dest)?;
        let r = self.reader()?;
        copy_database(&r, &dest.join(DB_FILE))
    }

    fn check_integrity(&self) -> Result<()> {
        let mut r = self.reader()?;
        integrity_check(&r, "integrity_check")?;
        r.begin_read()?;
        pack::verify(&r)
    }

    fn compact(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        self.poisoned.check()?;
        let packed = repack(&mut w, &self.packs, self.options.block_bytes).map(|_| ());
        self.poisoned.observe(WriteOptions::SYNC, &packed);
        packed?;
        vacuum(&mut w)
    }

    fn size_on_disk(&self) -> Result<u64> {
        dir_bytes(&self.dir)
    }

    fn restore_backup(backup: &Path, dest: &Path) -> Result<()> {
        let src_path = backup.join(DB_FILE);
        if !src_path.is_file() {
            return Err(Error::Invalid(format!(
                "{} holds no SQLite store backup",
                backup.display()
            )));
        }
        prepare_empty_dir(dest)?;
        let src = Connection::open_with_flags(&src_path, OpenFlags::SQLITE_OPEN_READ_ONLY).r2e()?;
        integrity_check(&src, "quick_check")?;
        copy_database(&src, &dest.join(DB_FILE))
    }
}

/// Run `PRAGMA integrity_check` or `quick_check`; anything but a single "ok" is corruption.
fn integrity_check(conn: &Connection, pragma: &str) -> Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}")).r2e()?;
    let found: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .r2e()?
        .collect::<rusqlite::Result<_>>()
        .r2e()?;
    if found.len() == 1 && found[0] == "ok" {
        Ok(())
    } else {
        Err(Error::Corruption(found.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of puts long enough for the multi-row statement keep the batch's order: ascending
    /// runs (written PUT_ROWS rows per statement) and unsorted runs with repeated keys
    /// (written row by row) mix, a later put of the same key wins, and a delete after a run
    /// removes what the run wrote.
    #[test]
    fn long_put_runs_apply_in_order() {
        use msite_core::store::WriteBatch;
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let mut b = s.batch();
        let mut model = BTreeMap::new();
        let mut put = |b: &mut SqliteBatch, k: Vec<u8>, v: Vec<u8>| {
            b.put(Keyspace::State, &k, &v);
            model.insert(k, v);
        };
        for i in 0..(2 * PUT_ROWS as u32 + 5) {
            put(&mut b, format!("k{i:03}").into_bytes(), b"first".to_vec());
        }
        b.put(Keyspace::Meta, b"other", b"x");
        for i in 0..(3 * PUT_ROWS as u32 + 7) {
            // Keys repeat within what would be one statement's rows (i % 50).
            put(
                &mut b,
                format!("k{:03}", i % 50).into_bytes(),
                i.to_be_bytes().to_vec(),
            );
        }
        for i in 100..(100 + PUT_ROWS as u32) {
            put(&mut b, format!("k{i:03}").into_bytes(), b"again".to_vec());
        }
        b.delete(Keyspace::State, b"k007");
        b.delete(Keyspace::State, b"k120");
        model.remove(b"k007".as_slice());
        model.remove(b"k120".as_slice());
        s.write(b, WriteOptions::SYNC).unwrap();
        let got: BTreeMap<Vec<u8>, Vec<u8>> = s
            .scan(Keyspace::State, KeyRange::all())
            .unwrap()
            .map(|kv| kv.unwrap())
            .collect();
        assert_eq!(got, model);
        assert_eq!(
            s.get(Keyspace::Meta, b"other").unwrap(),
            Some(b"x".to_vec())
        );
    }

    #[test]
    fn sql_table_order_matches_keyspace_order() {
        for ks in Keyspace::ALL {
            assert_eq!(sql(ks).table, format!("kv_{}", ks.name()));
        }
    }
}
