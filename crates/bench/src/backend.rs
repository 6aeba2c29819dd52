//! The storage engines a workload runs on, behind one small trait so that every workload is
//! written once and instantiated per engine (`sqlite` and, with the `rocks` feature, `rocksdb`).

use std::path::Path;

use anyhow::{Context, Result};
use msite_core::store::Store;

/// A storage engine the benchmarks can open.
pub trait Backend: 'static {
    /// The engine's store.
    type S: Store;
    /// The name used in the table, the JSON and the child-process arguments.
    const NAME: &'static str;
    /// Opens (creating if needed) the store in `dir`.
    fn open_store(dir: &Path) -> Result<Self::S>;
    /// Waits for the engine's background work on `store` (flushes, compactions), so a
    /// microsecond-scale measurement does not share the CPUs with it. Default: none to wait for.
    fn quiesce(_store: &Self::S) -> Result<()> {
        Ok(())
    }
}

/// SQLite (`msite-store-sqlite`).
#[cfg(feature = "sqlite")]
pub struct Sqlite;

#[cfg(feature = "sqlite")]
impl Backend for Sqlite {
    type S = msite_store_sqlite::SqliteStore;
    const NAME: &'static str = "sqlite";
    fn open_store(dir: &Path) -> Result<Self::S> {
        msite_store_sqlite::SqliteStore::open(dir)
            .with_context(|| format!("opening the sqlite store {}", dir.display()))
    }
}

/// RocksDB (`msite-store-rocks`).
#[cfg(feature = "rocks")]
pub struct Rocks;

#[cfg(feature = "rocks")]
impl Backend for Rocks {
    type S = msite_store_rocks::RocksStore;
    const NAME: &'static str = "rocksdb";
    fn open_store(dir: &Path) -> Result<Self::S> {
        msite_store_rocks::RocksStore::open(dir)
            .with_context(|| format!("opening the rocksdb store {}", dir.display()))
    }
    fn quiesce(store: &Self::S) -> Result<()> {
        store
            .wait_for_background_work()
            .context("waiting for rocksdb's flushes and compactions")
    }
}

/// The engines compiled in, by name.
pub fn compiled() -> Vec<&'static str> {
    [
        cfg!(feature = "sqlite").then_some("sqlite"),
        cfg!(feature = "rocks").then_some("rocksdb"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Calls `$body` with the type alias `$B` bound to the backend named `$name`.
#[macro_export]
macro_rules! with_backend {
    ($name:expr, $B:ident => $body:expr) => {{
        match $name {
            #[cfg(feature = "sqlite")]
            "sqlite" => {
                type $B = $crate::backend::Sqlite;
                $body
            }
            #[cfg(feature = "rocks")]
            "rocksdb" => {
                type $B = $crate::backend::Rocks;
                $body
            }
            other => Err(anyhow::anyhow!("backend {other} is not compiled in")),
        }
    }};
}
