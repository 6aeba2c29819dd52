//! [`PgStore`]: opening and creating, the writer and its retried transactions, reads.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msite_core::store::{scan_each_by_scan, PairFn};
use msite_core::store::{
    Error, KeyRange, KeyValue, Keyspace, OpKind, PoisonFlag, ReadView, RecordedOp, Result,
    ScanIter, Store, WriteOptions,
};
use postgres::error::SqlState;

use crate::conn::{table, Conn};
use crate::error::{is_retryable, PgResultExt, BACKEND};
use crate::iter::{PgIter, ReadConn};
use crate::pool::{lock, Pool, Pooled};
use crate::settings::ConnSettings;
use crate::snapshot::PgSnapshot;
use crate::PgBatch;

/// The longest key the store accepts. A B-tree index entry must fit in a third of a page
/// (2704 bytes with 8 KiB pages, less the entry's own header); 2 KiB leaves room for it and
/// is far above the keys msite makes.
pub const MAX_KEY_LEN: usize = 2048;
/// The environment variable naming a server on which [`PgStore::open`] of an empty directory
/// creates a new database (what the simulator and the bench use).
pub const SERVER_ENV: &str = "MSITE_PG_SERVER";
/// The key of the session advisory lock that makes the open exclusive (advisory locks are
/// per database). The bytes of "msite" as a number.
const LOCK_KEY: i64 = 0x6d_73_69_74_65;
/// How long an open waits for the lock of a session that is ending (see `take_lock`).
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How many times a transaction is run before a serialization failure is given up on.
const MAX_ATTEMPTS: u32 = 30;
/// Rows, and key and value bytes, per multi-row statement of a batch.
const RUN_ROWS: usize = 4096;
const RUN_BYTES: usize = 16 << 20;

/// The writer connection (it also holds the store's advisory lock) and its current
/// `synchronous_commit` setting.
struct Writer {
    conn: Conn,
    synchronous: bool,
}

/// An ordered key-value store in a PostgreSQL database. See the [crate documentation](crate).
pub struct PgStore {
    dir: PathBuf,
    settings: Box<ConnSettings>,
    writer: Mutex<Box<Writer>>,
    pool: Arc<Pool>,
    poisoned: PoisonFlag,
    retries: AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("dir", &self.dir)
            .field("database", &self.settings.dbname())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Restores `backup` into a new database and makes `dest` the store directory that names
    /// it: on the server `url` names (its `dbname`, if given, is the new database's name), or
    /// by default on the backed-up store's server under a fresh name.
    pub fn restore_backup_to(backup: &Path, dest: &Path, url: Option<&str>) -> Result<()> {
        let server = url.map(ConnSettings::parse).transpose()?;
        crate::vendor::restore(backup, dest, server.as_ref())
    }

    /// Open the store whose connection settings are in `dir` (`DIR/conninfo`). A missing or
    /// empty `dir` gets a new store in a new database on the server named by
    /// `$MSITE_PG_SERVER` (a connection string without a database), if it is set; otherwise
    /// that is an error that says how to create one ([`PgStore::create`]).
    ///
    /// Fails with [`Error::Locked`] if the database is open by another store, here or in
    /// another process or on another machine.
    pub fn open(dir: &Path) -> Result<Self> {
        if let Some(settings) = ConnSettings::read(dir)? {
            return Self::open_with(dir, settings);
        }
        match std::env::var(SERVER_ENV) {
            Ok(server) => {
                let server = ConnSettings::parse(&server)?;
                let db = format!("msite_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
                Self::create(dir, server.with_dbname(&db).conninfo())
            }
            Err(_) => Err(Error::Invalid(format!(
                "{} holds no PostgreSQL connection settings ({}); create the store with `msite init DIR --backend postgres --url CONNINFO`",
                dir.display(),
                crate::settings::CONNINFO_FILE
            ))),
        }
    }

    /// Create a store in the database `conninfo` names (creating the database if it does not
    /// exist; an existing one must hold no store) and write its connection settings into
    /// `dir`, which must be missing or empty.
    pub fn create(dir: &Path, conninfo: &str) -> Result<Self> {
        let settings = ConnSettings::parse(conninfo)?;
        msite_core::store::prepare_empty_dir(dir)?;
        ensure_database(&settings)?;
        let store = Self::open_with(dir, settings.clone())?;
        if store
            .scan(Keyspace::Meta, KeyRange::all())?
            .next()
            .is_some()
        {
            return Err(Error::Invalid(format!(
                "the database {} already holds an msite store; name a new database",
                settings.dbname()
            )));
        }
        settings.write(dir)?;
        Ok(store)
    }

    fn open_with(dir: &Path, settings: ConnSettings) -> Result<Self> {
        let mut conn = Conn::connect(&settings)?;
        if !take_lock(&mut conn)? {
            return Err(Error::Locked {
                path: dir.to_path_buf(),
            });
        }
        let mut ddl = String::from("SET synchronous_commit = off;");
        for ks in Keyspace::ALL {
            ddl.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {} (k bytea PRIMARY KEY, v bytea NOT NULL);",
                table(ks)
            ));
        }
        conn.client.batch_execute(&ddl).p2e()?;
        Ok(PgStore {
            dir: dir.to_path_buf(),
            pool: Pool::new(settings.clone()),
            settings: Box::new(settings),
            writer: Mutex::new(Box::new(Writer {
                conn,
                synchronous: false,
            })),
            poisoned: PoisonFlag::default(),
            retries: AtomicU64::new(0),
        })
    }

    /// The store directory (it holds the connection settings).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The connection settings.
    pub fn settings(&self) -> &ConnSettings {
        &self.settings
    }

    /// How many transactions were run again after a serialization failure or a deadlock
    /// since the store was opened.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub(crate) fn reader(&self) -> Result<Pooled> {
        self.pool.take()
    }

    /// Apply `batch` in one transaction, run again whole (guards included) after a
    /// serialization failure, up to [`MAX_ATTEMPTS`] times.
    fn write_locked(&self, w: &mut Writer, batch: &PgBatch, opts: WriteOptions) -> Result<()> {
        if w.synchronous != opts.sync {
            let level = if opts.sync { "on" } else { "off" };
            w.conn
                .client
                .batch_execute(&format!("SET synchronous_commit = {level}"))
                .p2e()?;
            w.synchronous = opts.sync;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = apply(&mut w.conn, batch, opts);
            if res.is_err() && !w.conn.client.is_closed() {
                // Ends the failed transaction; if even that fails, the next BEGIN says so.
                let _ = w.conn.client.batch_execute("ROLLBACK");
            }
            match res {
                Err(e) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1 << attempt.min(7)));
                }
                other => return other,
            }
        }
    }
}

/// Take the store's advisory lock. A session that held it and has just ended (a process that
/// exited or was killed) keeps it until the server has ended that session's backend, a few
/// milliseconds later: a lock still held is tried again for up to [`LOCK_WAIT`] before the
/// open gives up.
fn take_lock(conn: &mut Conn) -> Result<bool> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let locked: bool = conn
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .p2e()?
            .get(0);
        if locked || std::time::Instant::now() >= deadline {
            return Ok(locked);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for PgStore {
    /// Releases the advisory lock before the connection closes, so that the next open (in
    /// this process or the next command) finds it free at once rather than after the server
    /// has noticed the closed session.
    fn drop(&mut self) {
        let w = self.writer.get_mut().unwrap_or_else(|e| e.into_inner());
        if !w.conn.client.is_closed() {
            let _ = w
                .conn
                .client
                .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]);
        }
    }
}

/// Whether a store error is a PostgreSQL error that asks for the transaction to run again.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Backend { source, .. } => source
            .downcast_ref::<postgres::Error>()
            .is_some_and(is_retryable),
        _ => false,
    }
}

/// Create the database `settings` names if it does not exist, connected to the server's
/// maintenance database (`postgres`, as `createdb` does).
fn ensure_database(settings: &ConnSettings) -> Result<()> {
    match Conn::connect(settings) {
        Ok(_) => Ok(()),
        Err(Error::Backend { source, .. })
            if source
                .downcast_ref::<postgres::Error>()
                .and_then(postgres::Error::code)
                == Some(&SqlState::INVALID_CATALOG_NAME) =>
        {
            create_database(settings, &settings.dbname())
        }
        Err(e) => Err(e),
    }
}

/// `CREATE DATABASE name` on the server of `settings`.
pub(crate) fn create_database(settings: &ConnSettings, name: &str) -> Result<()> {
    let mut admin = Conn::connect(&settings.with_dbname("postgres"))?;
    admin
        .client
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
        .p2e()
}

/// An SQL identifier, quoted.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One attempt at a batch: `BEGIN`, the guards, the operations in order (runs of puts or
/// deletes into one keyspace as one statement each), `COMMIT`.
fn apply(conn: &mut Conn, batch: &PgBatch, opts: WriteOptions) -> Result<()> {
    if batch.ops().is_empty() && batch.expects().is_empty() {
        if opts.sync {
            // A transaction with an id writes a commit record, and a synchronous commit
            // flushes the log up to it: every earlier asynchronous commit is durable after it.
            conn.client
                .batch_execute("BEGIN; SELECT txid_current(); COMMIT")
                .p2e()?;
        }
        return Ok(());
    }
    conn.client.batch_execute("BEGIN").p2e()?;
    for e in batch.expects() {
        let (key, expected) = batch.guard(e);
        if conn.get(e.ks, key)?.as_deref() != expected {
            return Err(Error::Precondition { keyspace: e.ks });
        }
    }
    let ops = batch.ops();
    let mut at = 0;
    while at < ops.len() {
        at = apply_run(conn, batch, ops, at)?;
    }
    conn.client.batch_execute("COMMIT").p2e()
}

/// Apply the run of operations starting at `ops[at]` (consecutive puts, or deletes, into one
/// keyspace, or one range delete); the index after it.
fn apply_run(conn: &mut Conn, batch: &PgBatch, ops: &[RecordedOp], at: usize) -> Result<usize> {
    let op = &ops[at];
    let t = table(op.ks);
    if op.kind == OpKind::DeleteRange {
        let (a, b) = (batch.key(op), batch.value(op));
        if a < b {
            conn.execute(
                &format!("DELETE FROM {t} WHERE k >= $1 AND k < $2"),
                &[&a, &b],
            )?;
        }
        return Ok(at + 1);
    }
    let mut end = at;
    let mut bytes = 0;
    while end < ops.len()
        && end - at < RUN_ROWS
        && (end == at || bytes < RUN_BYTES)
        && ops[end].kind == op.kind
        && ops[end].ks == op.ks
    {
        bytes += batch.key(&ops[end]).len() + batch.value(&ops[end]).len();
        end += 1;
    }
    let run = &ops[at..end];
    match op.kind {
        OpKind::Delete => {
            let keys: Vec<&[u8]> = run.iter().map(|o| batch.key(o)).collect();
            conn.execute(&format!("DELETE FROM {t} WHERE k = ANY($1)"), &[&keys])?;
        }
        _ => put_run(conn, batch, t, run)?,
    }
    Ok(end)
}

/// A run of puts into table `t` as one statement. One statement may not write a key twice:
/// the later put of a key wins, as it would have applied last.
fn put_run(conn: &mut Conn, batch: &PgBatch, t: &str, run: &[RecordedOp]) -> Result<()> {
    let mut latest: HashMap<&[u8], usize> = HashMap::with_capacity(run.len());
    let (mut keys, mut values): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
    for o in run {
        let (k, v) = (batch.key(o), batch.value(o));
        match latest.get(k) {
            Some(&i) => values[i] = v,
            None => {
                latest.insert(k, keys.len());
                keys.push(k);
                values.push(v);
            }
        }
    }
    conn.execute(
        &format!(
            "INSERT INTO {t} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
             ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        ),
        &[&keys, &values],
    )?;
    Ok(())
}

/// Refuse a batch that puts a key longer than [`MAX_KEY_LEN`], before anything is sent.
fn check_keys(batch: &PgBatch) -> Result<()> {
    for op in batch.ops() {
        let key = batch.key(op);
        if op.kind == OpKind::Put && key.len() > MAX_KEY_LEN {
            return Err(Error::Invalid(format!(
                "a key of {} bytes in keyspace {} is longer than the PostgreSQL store's limit of {MAX_KEY_LEN} bytes (an index entry must fit in a third of a page); nothing was written",
                key.len(),
                op.ks
            )));
        }
    }
    Ok(())
}

impl ReadView for PgStore {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.reader()?.get(ks, key)
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        let mut r = self.reader()?;
        r.begin_snapshot()?;
        Ok(Box::new(PgIter::new(ReadConn::Owned(r), ks, range)))
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        self.reader()?.last(ks, &range)
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        scan_each_by_scan(self, ks, range, f)
    }
}

impl Store for PgStore {
    type Batch = PgBatch;
    type Snapshot<'a> = PgSnapshot<'a>;

    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn batch(&self) -> PgBatch {
        PgBatch::default()
    }

    fn write(&self, batch: PgBatch, opts: WriteOptions) -> Result<()> {
        let mut w = lock(&self.writer);
        self.poisoned.check()?;
        check_keys(&batch)?;
        let res = self.write_locked(&mut w, &batch, opts);
        self.poisoned.observe(opts, &res);
        res
    }

    fn snapshot(&self) -> Result<PgSnapshot<'_>> {
        let mut r = self.reader()?;
        r.begin_snapshot()?;
        Ok(PgSnapshot {
            conn: Mutex::new(r),
            _store: PhantomData,
        })
    }

    fn backup(&self, dest: &Path) -> Result<()> {
        crate::vendor::backup(&self.settings, dest)
    }

    fn check_integrity(&self) -> Result<()> {
        crate::vendor::check(&mut *self.reader()?)
    }

    /// `VACUUM (FULL)` of the store's tables, on the writer connection: each table is
    /// rewritten without its dead rows under an exclusive lock, so other readers and writers of
    /// the site wait for it table by table.
    fn compact(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        self.poisoned.check()?;
        let tables: Vec<&str> = Keyspace::ALL.iter().map(|ks| table(*ks)).collect();
        w.conn
            .client
            .batch_execute(&format!("VACUUM (FULL) {}", tables.join(", ")))
            .p2e()
    }

    fn size_on_disk(&self) -> Result<u64> {
        let sum: Vec<String> = Keyspace::ALL
            .iter()
            .map(|ks| format!("pg_total_relation_size('{}')", table(*ks)))
            .collect();
        let row = self
            .reader()?
            .client
            .query_one(&format!("SELECT ({})::bigint", sum.join(" + ")), &[])
            .p2e()?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    fn restore_backup(backup: &Path, dest: &Path) -> Result<()> {
        Self::restore_backup_to(backup, dest, None)
    }
}
