//! Storage engines chosen at build time (cargo features) and at run time (`--backend`).
//!
//! [`BackendKind`] is always compiled, so `--backend rocks` parses in every build and a build
//! without RocksDB can say so. [`AnyStore`] is the one place that names the concrete stores: an
//! enum with one variant per compiled backend that implements [`Store`] by delegation
//! (`Box<dyn Store>` cannot work: `Store` has associated types), with [`AnyBatch`] and
//! [`AnySnapshot`] as its associated types.
//!
//! A build without any backend compiles (every match is then empty) but cannot open a site.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use msite_core::store::{
    Error, KeyRange, KeyValue, Keyspace, ReadView, Result, ScanIter, Store, WriteBatch,
    WriteOptions,
};

#[cfg(feature = "mem")]
use msite_core::testkit::MemStore;
#[cfg(feature = "rocks")]
use msite_store_rocks::RocksStore;
#[cfg(feature = "sqlite")]
use msite_store_sqlite::SqliteStore;

/// A storage engine, whether or not this build has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// SQLite (the default).
    Sqlite,
    /// RocksDB.
    Rocks,
    /// The reference log-structured store of msite-core's testkit (development only).
    Mem,
}

impl BackendKind {
    /// Every kind, in the order `--version` lists them.
    pub const ALL: [BackendKind; 3] = [BackendKind::Sqlite, BackendKind::Rocks, BackendKind::Mem];

    /// The name used on the command line and in `site.json`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Rocks => "rocks",
            BackendKind::Mem => "mem",
        }
    }

    /// Whether this build has the backend.
    pub fn compiled(self) -> bool {
        match self {
            BackendKind::Sqlite => cfg!(feature = "sqlite"),
            BackendKind::Rocks => cfg!(feature = "rocks"),
            BackendKind::Mem => cfg!(feature = "mem"),
        }
    }

    /// The backends of this build.
    pub fn available() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.compiled()).collect()
    }

    /// The backend new sites get when `--backend` is not given: the first compiled one.
    pub fn default_kind() -> Option<BackendKind> {
        Self::available().into_iter().next()
    }

    /// The list of compiled backends, for messages and `--version`.
    pub fn available_list() -> String {
        let names: Vec<&str> = Self::available().into_iter().map(|k| k.name()).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    }

    /// Fails with a message naming the backends of this build unless `self` is one of them.
    pub fn ensure_compiled(self) -> anyhow::Result<()> {
        if self.compiled() {
            Ok(())
        } else {
            anyhow::bail!(
                "the {} backend is not available in this build; this build has: {} (rebuild with `--features {}` to add it)",
                self.name(),
                Self::available_list(),
                self.name()
            )
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sqlite" | "sqlite3" => Ok(BackendKind::Sqlite),
            "rocks" | "rocksdb" => Ok(BackendKind::Rocks),
            "mem" | "memory" => Ok(BackendKind::Mem),
            _ => Err(format!(
                "unknown backend `{s}`; the backends are sqlite and rocks (this build has: {})",
                BackendKind::available_list()
            )),
        }
    }
}

/// A store of any compiled backend.
pub enum AnyStore {
    /// RocksDB.
    #[cfg(feature = "rocks")]
    Rocks(RocksStore),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
    /// The reference store.
    #[cfg(feature = "mem")]
    Mem(MemStore),
}

/// The write batch of an [`AnyStore`].
pub enum AnyBatch {
    /// RocksDB.
    #[cfg(feature = "rocks")]
    Rocks(<RocksStore as Store>::Batch),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(<SqliteStore as Store>::Batch),
    /// The reference store.
    #[cfg(feature = "mem")]
    Mem(<MemStore as Store>::Batch),
}

/// The snapshot of an [`AnyStore`].
pub enum AnySnapshot<'a> {
    /// RocksDB.
    #[cfg(feature = "rocks")]
    Rocks(<RocksStore as Store>::Snapshot<'a>),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(<SqliteStore as Store>::Snapshot<'a>),
    /// The reference store.
    #[cfg(feature = "mem")]
    Mem(<MemStore as Store>::Snapshot<'a>),
    /// Keeps the lifetime used in a build without backends; never constructed.
    #[doc(hidden)]
    Never(std::marker::PhantomData<&'a ()>, std::convert::Infallible),
}

/// Runs `$body` with `$s` bound to the concrete value inside an `AnyStore`-like enum.
macro_rules! each {
    ($enum:ident, $value:expr, $s:pat => $body:expr) => {
        match $value {
            #[cfg(feature = "rocks")]
            $enum::Rocks($s) => $body,
            #[cfg(feature = "sqlite")]
            $enum::Sqlite($s) => $body,
            #[cfg(feature = "mem")]
            $enum::Mem($s) => $body,
        }
    };
}

impl AnyStore {
    /// Opens (creating it if needed) the store of backend `kind` in directory `dir`.
    pub fn open(kind: BackendKind, dir: &Path) -> anyhow::Result<AnyStore> {
        kind.ensure_compiled()?;
        let _ = dir;
        let store: Result<AnyStore> = match kind {
            #[cfg(feature = "rocks")]
            BackendKind::Rocks => RocksStore::open(dir).map(AnyStore::Rocks),
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite => SqliteStore::open(dir).map(AnyStore::Sqlite),
            #[cfg(feature = "mem")]
            BackendKind::Mem => MemStore::open(dir).map(AnyStore::Mem),
            #[allow(unreachable_patterns)]
            _ => unreachable_backend(kind),
        };
        store.map_err(|e| {
            anyhow::Error::new(e)
                .context(format!("cannot open the {kind} store in {}", dir.display()))
        })
    }

    /// Makes a new store directory `dest` from a backup written by [`Store::backup`] of a
    /// store of backend `kind`.
    pub fn restore_backup_as(kind: BackendKind, backup: &Path, dest: &Path) -> anyhow::Result<()> {
        kind.ensure_compiled()?;
        let _ = (backup, dest);
        let res: Result<()> = match kind {
            #[cfg(feature = "rocks")]
            BackendKind::Rocks => RocksStore::restore_backup(backup, dest),
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite => SqliteStore::restore_backup(backup, dest),
            #[cfg(feature = "mem")]
            BackendKind::Mem => MemStore::restore_backup(backup, dest),
            #[allow(unreachable_patterns)]
            _ => unreachable_backend(kind),
        };
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
        match *self {
            #[cfg(feature = "rocks")]
            AnyStore::Rocks(_) => BackendKind::Rocks,
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(_) => BackendKind::Sqlite,
            #[cfg(feature = "mem")]
            AnyStore::Mem(_) => BackendKind::Mem,
        }
    }
}

fn unreachable_backend<T>(kind: BackendKind) -> Result<T> {
    Err(Error::Invalid(format!(
        "the {kind} backend is not available in this build; this build has: {}",
        BackendKind::available_list()
    )))
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
}

impl ReadView for AnySnapshot<'_> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match *self {
            #[cfg(feature = "rocks")]
            AnySnapshot::Rocks(ref s) => s.get(ks, key),
            #[cfg(feature = "sqlite")]
            AnySnapshot::Sqlite(ref s) => s.get(ks, key),
            #[cfg(feature = "mem")]
            AnySnapshot::Mem(ref s) => s.get(ks, key),
            AnySnapshot::Never(_, never) => match never {},
        }
    }

    fn scan(&self, ks: Keyspace, range: KeyRange) -> Result<ScanIter<'_>> {
        match *self {
            #[cfg(feature = "rocks")]
            AnySnapshot::Rocks(ref s) => s.scan(ks, range),
            #[cfg(feature = "sqlite")]
            AnySnapshot::Sqlite(ref s) => s.scan(ks, range),
            #[cfg(feature = "mem")]
            AnySnapshot::Mem(ref s) => s.scan(ks, range),
            AnySnapshot::Never(_, never) => match never {},
        }
    }

    fn last(&self, ks: Keyspace, range: KeyRange) -> Result<Option<KeyValue>> {
        match *self {
            #[cfg(feature = "rocks")]
            AnySnapshot::Rocks(ref s) => s.last(ks, range),
            #[cfg(feature = "sqlite")]
            AnySnapshot::Sqlite(ref s) => s.last(ks, range),
            #[cfg(feature = "mem")]
            AnySnapshot::Mem(ref s) => s.last(ks, range),
            AnySnapshot::Never(_, never) => match never {},
        }
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
        match *self {
            #[cfg(feature = "rocks")]
            AnyStore::Rocks(ref s) => AnyBatch::Rocks(s.batch()),
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(ref s) => AnyBatch::Sqlite(s.batch()),
            #[cfg(feature = "mem")]
            AnyStore::Mem(ref s) => AnyBatch::Mem(s.batch()),
        }
    }

    fn write(&self, batch: AnyBatch, opts: WriteOptions) -> Result<()> {
        #[allow(unreachable_patterns)]
        match (self, batch) {
            #[cfg(feature = "rocks")]
            (AnyStore::Rocks(s), AnyBatch::Rocks(b)) => s.write(b, opts),
            #[cfg(feature = "sqlite")]
            (AnyStore::Sqlite(s), AnyBatch::Sqlite(b)) => s.write(b, opts),
            #[cfg(feature = "mem")]
            (AnyStore::Mem(s), AnyBatch::Mem(b)) => s.write(b, opts),
            _ => Err(Error::Invalid(
                "a write batch was applied to a store of another backend".into(),
            )),
        }
    }

    fn snapshot(&self) -> Result<AnySnapshot<'_>> {
        match *self {
            #[cfg(feature = "rocks")]
            AnyStore::Rocks(ref s) => s.snapshot().map(AnySnapshot::Rocks),
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(ref s) => s.snapshot().map(AnySnapshot::Sqlite),
            #[cfg(feature = "mem")]
            AnyStore::Mem(ref s) => s.snapshot().map(AnySnapshot::Mem),
        }
    }

    fn backup(&self, dest: &Path) -> Result<()> {
        each!(AnyStore, *self, ref s => s.backup(dest))
    }

    fn check_integrity(&self) -> Result<()> {
        each!(AnyStore, *self, ref s => s.check_integrity())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!("sqlite".parse::<BackendKind>(), Ok(BackendKind::Sqlite));
        assert_eq!("RocksDB".parse::<BackendKind>(), Ok(BackendKind::Rocks));
        assert!("oracle".parse::<BackendKind>().is_err());
    }

    #[test]
    fn a_missing_backend_names_the_available_ones() {
        for k in BackendKind::ALL {
            if !k.compiled() {
                let msg = k.ensure_compiled().unwrap_err().to_string();
                assert!(
                    msg.contains("not available in this build; this build has:"),
                    "{msg}"
                );
            }
        }
    }
}
