//! [`AnyStore`]: a store of any compiled backend, chosen at run time, implementing [`Store`]
//! by delegation (`Box<dyn Store>` cannot work: `Store` has associated types), with
//! [`AnyBatch`] and [`AnySnapshot`] as its associated types.
//!
//! A backend is one variant in each of the three enums (same name, same feature) and one arm
//! of [`each!`]; everything else goes through its [`Engine`] implementation.

use std::path::Path;

use msite_core::store::{
    Error, KeyRange, KeyValue, Keyspace, PairFn, ReadView, Result, ScanIter, Store, WriteBatch,
    WriteOptions,
};

use crate::{BackendKind, Engine};

/// A store of any compiled backend.
pub enum AnyStore {
    /// RocksDB.
    #[cfg(feature = "rocks")]
    Rocks(crate::RocksStore),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(crate::SqliteStore),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(crate::PgStore),
    /// The reference store.
    #[cfg(feature = "mem")]
    Mem(crate::MemStore),
}

/// The write batch of an [`AnyStore`].
pub enum AnyBatch {
    /// RocksDB.
    #[cfg(feature = "rocks")]
    Rocks(<crate::RocksStore as Store>::Batch),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(<crate::SqliteStore as Store>::Batch),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(<crate::PgStore as Store>::Batch),
    /// The reference store.
    #[cfg(feature = "mem")]
    Mem(<crate::MemStore as Store>::Batch),
}

/// The snapshot of an [`AnyStore`].
pub enum AnySnapshot<'a> {
    /// RocksDB.
    #[cfg(feature = "rocks")]
    Rocks(<crate::RocksStore as Store>::Snapshot<'a>),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(<crate::SqliteStore as Store>::Snapshot<'a>),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(<crate::PgStore as Store>::Snapshot<'a>),
    /// The reference store.
    #[cfg(feature = "mem")]
    Mem(<crate::MemStore as Store>::Snapshot<'a>),
    /// Keeps the lifetime used in a build without backends; never constructed.
    #[doc(hidden)]
    Never(std::marker::PhantomData<&'a ()>, std::convert::Infallible),
}

/// Runs `$body` with `$s` bound to the concrete value inside `$value`, an [`AnyStore`],
/// [`AnyBatch`] or [`AnySnapshot`] (named by `$enum`); `$extra` arms follow the backends'.
macro_rules! each {
    ($enum:ident, $value:expr, $s:pat => $body:expr $(, $extra:pat => $ebody:expr)*) => {
        match $value {
            #[cfg(feature = "rocks")]
            $enum::Rocks($s) => $body,
            #[cfg(feature = "sqlite")]
            $enum::Sqlite($s) => $body,
            #[cfg(feature = "postgres")]
            $enum::Postgres($s) => $body,
            #[cfg(feature = "mem")]
            $enum::Mem($s) => $body,
            $($extra => $ebody,)*
        }
    };
}

impl AnyStore {
    /// Opens (creating it if needed) the store of backend `kind` in directory `dir`.
    pub fn open(kind: BackendKind, dir: &Path) -> anyhow::Result<AnyStore> {
        kind.ensure_compiled()?;
        let store = crate::with_engine!(kind, E => E::open(dir).map(E::into_any))
            .unwrap_or_else(|absent| Err(Error::Invalid(absent.to_string())));
        store.map_err(|e| {
            anyhow::Error::new(e)
                .context(format!("cannot open the {kind} store in {}", dir.display()))
        })
    }

    /// Creates a new store of backend `kind` in directory `dir` (missing or empty). `url`
    /// names the server and database of a networked backend (required there) and is refused
    /// for the embedded ones, which keep the store in `dir` itself.
    pub fn create(kind: BackendKind, dir: &Path, url: Option<&str>) -> anyhow::Result<AnyStore> {
        kind.ensure_compiled()?;
        let store =
            crate::with_engine!(kind, E => <E as Engine>::create(dir, url).map(E::into_any))
                .unwrap_or_else(|absent| Err(Error::Invalid(absent.to_string())));
        store.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot create the {kind} store in {}",
                dir.display()
            ))
        })
    }

    /// Makes a new store directory `dest` from a backup written by [`Store::backup`] of a
    /// store of backend `kind`; a networked engine puts the store where `url` says (default:
    /// beside the backed-up one).
    pub fn restore_backup_as(
        kind: BackendKind,
        backup: &Path,
        dest: &Path,
        url: Option<&str>,
    ) -> anyhow::Result<()> {
        kind.ensure_compiled()?;
        let res = crate::with_engine!(kind, E => E::restore_backup_to(backup, dest, url))
            .unwrap_or_else(|absent| Err(Error::Invalid(absent.to_string())));
        res.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot restore the {kind} backup {} into {}",
                backup.display(),
                dest.display()
            ))
        })
    }

    /// The backend of this store.
    pub fn kind(&self) -> BackendKind {
        each!(AnyStore, *self, ref s => kind_of(s))
    }
}

/// The backend of an engine's store.
fn kind_of<E: Engine>(_: &E) -> BackendKind {
    E::KIND
}

/// A new batch of `store`, as an [`AnyBatch`].
fn any_batch<E: Engine>(store: &E) -> AnyBatch {
    E::batch_into_any(store.batch())
}

/// A snapshot of `store`, as an [`AnySnapshot`].
fn any_snapshot<E: Engine>(store: &E) -> Result<AnySnapshot<'_>> {
    store.snapshot().map(E::snapshot_into_any)
}

/// Applies `batch` to `store` if it is a batch of the same engine.
fn write_any<E: Engine>(store: &E, batch: AnyBatch, opts: WriteOptions) -> Result<()> {
    match E::batch_from_any(batch) {
        Some(batch) => store.write(batch, opts),
        None => Err(Error::Invalid(
            "a write batch was applied to a store of another backend".into(),
        )),
    }
}

impl ReadView for AnyStore {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        each!(AnyStore, *self, ref s => s.get(ks, key))
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        each!(AnyStore, *self, ref s => s.scan(ks, range))
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        each!(AnyStore, *self, ref s => s.last(ks, range))
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        each!(AnyStore, *self, ref s => s.scan_each(ks, range, f))
    }
}

impl ReadView for AnySnapshot<'_> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        each!(AnySnapshot, *self, ref s => s.get(ks, key), AnySnapshot::Never(_, never) => match never {})
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        each!(AnySnapshot, *self, ref s => s.scan(ks, range), AnySnapshot::Never(_, never) => match never {})
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        each!(AnySnapshot, *self, ref s => s.last(ks, range), AnySnapshot::Never(_, never) => match never {})
    }

    fn scan_each(&self, ks: Keyspace, range: KeyRange, f: &mut PairFn<'_>) -> Result<()> {
        each!(AnySnapshot, *self, ref s => s.scan_each(ks, range, f), AnySnapshot::Never(_, never) => match never {})
    }
}

impl WriteBatch for AnyBatch {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        each!(AnyBatch, *self, ref mut b => b.put(ks, key, value))
    }

    fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        each!(AnyBatch, *self, ref mut b => b.delete(ks, key))
    }

    fn delete_range(&mut self, ks: Keyspace, start: &[u8], end: &[u8]) {
        each!(AnyBatch, *self, ref mut b => b.delete_range(ks, start, end))
    }

    fn expect(&mut self, ks: Keyspace, key: &[u8], expected: Option<&[u8]>) {
        each!(AnyBatch, *self, ref mut b => b.expect(ks, key, expected))
    }

    fn len(&self) -> usize {
        each!(AnyBatch, *self, ref b => b.len())
    }

    fn reserve(&mut self, ops: usize, bytes: usize) {
        each!(AnyBatch, *self, ref mut b => b.reserve(ops, bytes))
    }
}

impl Store for AnyStore {
    type Batch = AnyBatch;
    type Snapshot<'a> = AnySnapshot<'a>;

    fn backend_name(&self) -> &'static str {
        each!(AnyStore, *self, ref s => s.backend_name())
    }

    fn batch(&self) -> AnyBatch {
        each!(AnyStore, *self, ref s => any_batch(s))
    }

    fn write(&self, batch: AnyBatch, opts: WriteOptions) -> Result<()> {
        each!(AnyStore, *self, ref s => write_any(s, batch, opts))
    }

    fn snapshot(&self) -> Result<AnySnapshot<'_>> {
        each!(AnyStore, *self, ref s => any_snapshot(s))
    }

    fn bulk_load(&self, rows: msite_core::store::BulkRows<'_>) -> Result<u64> {
        each!(AnyStore, *self, ref s => s.bulk_load(rows))
    }

    fn backup(&self, dest: &Path) -> Result<()> {
        each!(AnyStore, *self, ref s => s.backup(dest))
    }

    fn check_integrity(&self) -> Result<()> {
        each!(AnyStore, *self, ref s => s.check_integrity())
    }

    fn compact(&self) -> Result<()> {
        each!(AnyStore, *self, ref s => s.compact())
    }

    fn size_on_disk(&self) -> Result<u64> {
        each!(AnyStore, *self, ref s => s.size_on_disk())
    }

    /// An `AnyStore` does not know which engine wrote a backup: use
    /// [`AnyStore::restore_backup_as`], which takes the backend from the backup's manifest.
    fn restore_backup(backup: &Path, _dest: &Path) -> Result<()> {
        Err(Error::Invalid(format!(
            "cannot tell which storage engine wrote the backup {}; restore it with `msite restore`, which reads the backend from backup.json",
            backup.display()
        )))
    }
}
