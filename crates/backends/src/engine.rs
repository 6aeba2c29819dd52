//! [`Engine`]: what a program needs from a concrete store beyond [`Store`], and
//! [`with_engine!`](crate::with_engine), which runs generic code on the engine a
//! [`BackendKind`] names.
//!
//! The simulator and the bench are generic over the store type (they measure and drive the
//! engines themselves, not a dispatch enum); they pick the type at run time through
//! `with_engine!`. The CLI goes through [`AnyStore`], whose conversions are the `*_any`
//! methods here.

use std::path::{Path, PathBuf};

use msite_core::store::{Result, Store};

use crate::{AnyBatch, AnySnapshot, AnyStore, BackendKind};

/// A compiled storage engine: its kind, how to open it, and its place in [`AnyStore`].
pub trait Engine: Store + Sized {
    /// Which backend this is.
    const KIND: BackendKind;

    /// Opens the store in `dir`, creating it in an empty or missing directory.
    fn open(dir: &Path) -> Result<Self>;

    /// Creates a new store in the missing or empty directory `dir`. `url` is where a
    /// networked engine keeps it; an embedded engine keeps it in `dir` and refuses a `url`.
    fn create(dir: &Path, url: Option<&str>) -> Result<Self> {
        match url {
            None => Self::open(dir),
            Some(_) => Err(msite_core::store::Error::Invalid(format!(
                "the {} backend keeps its store in the site directory; --url is only for networked backends (postgres)",
                Self::KIND
            ))),
        }
    }

    /// Makes a new store directory `dest` from `backup`; `url` names where a networked engine
    /// puts the restored store (another server, when the old one is lost). An embedded engine
    /// keeps it in `dest` and refuses a `url`.
    fn restore_backup_to(backup: &Path, dest: &Path, url: Option<&str>) -> Result<()> {
        match url {
            None => Self::restore_backup(backup, dest),
            Some(_) => Err(msite_core::store::Error::Invalid(format!(
                "the {} backend keeps its store in the site directory; --url is only for networked backends (postgres)",
                Self::KIND
            ))),
        }
    }

    /// The directory the store lives in (`None` for a store held only in memory).
    fn dir(&self) -> Option<PathBuf>;

    /// Waits for the engine's background work (flushes, compactions), so a measurement does
    /// not share the CPUs with it. Required, so an engine with background work says so.
    fn quiesce(&self) -> Result<()>;

    /// The store as an [`AnyStore`].
    fn into_any(self) -> AnyStore;

    /// A batch of this engine as an [`AnyBatch`].
    fn batch_into_any(batch: Self::Batch) -> AnyBatch;

    /// The batch of this engine inside `batch`, or `None` if it belongs to another engine.
    fn batch_from_any(batch: AnyBatch) -> Option<Self::Batch>;

    /// A snapshot of this engine as an [`AnySnapshot`].
    fn snapshot_into_any(snapshot: Self::Snapshot<'_>) -> AnySnapshot<'_>;
}

/// The four [`AnyStore`] conversions of [`Engine`] for the engine whose variant (in
/// [`AnyStore`], [`AnyBatch`] and [`AnySnapshot`] alike) is `$variant`.
macro_rules! any_conversions {
    ($variant:ident) => {
        fn into_any(self) -> AnyStore {
            AnyStore::$variant(self)
        }

        fn batch_into_any(batch: Self::Batch) -> AnyBatch {
            AnyBatch::$variant(batch)
        }

        fn batch_from_any(batch: AnyBatch) -> Option<Self::Batch> {
            #[allow(unreachable_patterns)]
            match batch {
                AnyBatch::$variant(b) => Some(b),
                _ => None,
            }
        }

        fn snapshot_into_any(snapshot: Self::Snapshot<'_>) -> AnySnapshot<'_> {
            AnySnapshot::$variant(snapshot)
        }
    };
}

#[cfg(feature = "sqlite")]
impl Engine for crate::SqliteStore {
    const KIND: BackendKind = BackendKind::Sqlite;

    fn open(dir: &Path) -> Result<Self> {
        crate::SqliteStore::open(dir)
    }

    fn dir(&self) -> Option<PathBuf> {
        Some(crate::SqliteStore::dir(self).to_path_buf())
    }

    fn quiesce(&self) -> Result<()> {
        Ok(())
    }

    any_conversions!(Sqlite);
}

#[cfg(feature = "rocks")]
impl Engine for crate::RocksStore {
    const KIND: BackendKind = BackendKind::Rocks;

    fn open(dir: &Path) -> Result<Self> {
        crate::RocksStore::open(dir)
    }

    fn dir(&self) -> Option<PathBuf> {
        Some(crate::RocksStore::dir(self).to_path_buf())
    }

    fn quiesce(&self) -> Result<()> {
        self.wait_for_background_work()
    }

    any_conversions!(Rocks);
}

#[cfg(feature = "postgres")]
impl Engine for crate::PgStore {
    const KIND: BackendKind = BackendKind::Postgres;

    fn open(dir: &Path) -> Result<Self> {
        crate::PgStore::open(dir)
    }

    fn create(dir: &Path, url: Option<&str>) -> Result<Self> {
        match url {
            Some(url) => crate::PgStore::create(dir, url),
            None => crate::PgStore::open(dir),
        }
    }

    fn restore_backup_to(backup: &Path, dest: &Path, url: Option<&str>) -> Result<()> {
        crate::PgStore::restore_backup_to(backup, dest, url)
    }

    fn dir(&self) -> Option<PathBuf> {
        Some(crate::PgStore::dir(self).to_path_buf())
    }

    fn quiesce(&self) -> Result<()> {
        Ok(())
    }

    any_conversions!(Postgres);
}

#[cfg(feature = "mem")]
impl Engine for crate::MemStore {
    const KIND: BackendKind = BackendKind::Mem;

    fn open(dir: &Path) -> Result<Self> {
        crate::MemStore::open(dir)
    }

    fn dir(&self) -> Option<PathBuf> {
        crate::MemStore::dir(self)
    }

    fn quiesce(&self) -> Result<()> {
        Ok(())
    }

    any_conversions!(Mem);
}

/// Runs `$body` with the type alias `$E` bound to the [`Engine`] of the
/// [`BackendKind`] `$kind`: `Ok(body)`, or `Err(NotCompiled)` when this build lacks it (the
/// body is then not compiled for it).
///
/// ```text
/// let store = msite_backends::with_engine!(kind, E => E::open(dir).map(E::into_any))?;
/// ```
#[macro_export]
macro_rules! with_engine {
    ($kind:expr, $E:ident => $body:expr) => {
        match $kind {
            $crate::BackendKind::Sqlite => $crate::__with_sqlite!($E => $body),
            $crate::BackendKind::Rocks => $crate::__with_rocks!($E => $body),
            $crate::BackendKind::Postgres => $crate::__with_postgres!($E => $body),
            $crate::BackendKind::Mem => $crate::__with_mem!($E => $body),
        }
    };
}

// The arms of `with_engine!`, one pair per backend: the feature is tested here, where it is
// this crate's feature, not in the crate that calls `with_engine!`. Without the feature the
// body is not compiled for the backend.

#[cfg(feature = "sqlite")]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_sqlite {
    ($E:ident => $body:expr) => {{
        type $E = $crate::SqliteStore;
        ::core::result::Result::<_, $crate::NotCompiled>::Ok($body)
    }};
}

#[cfg(not(feature = "sqlite"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_sqlite {
    ($E:ident => $body:expr) => {
        ::core::result::Result::Err($crate::NotCompiled($crate::BackendKind::Sqlite))
    };
}

#[cfg(feature = "rocks")]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_rocks {
    ($E:ident => $body:expr) => {{
        type $E = $crate::RocksStore;
        ::core::result::Result::<_, $crate::NotCompiled>::Ok($body)
    }};
}

#[cfg(not(feature = "rocks"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_rocks {
    ($E:ident => $body:expr) => {
        ::core::result::Result::Err($crate::NotCompiled($crate::BackendKind::Rocks))
    };
}

#[cfg(feature = "postgres")]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_postgres {
    ($E:ident => $body:expr) => {{
        type $E = $crate::PgStore;
        ::core::result::Result::<_, $crate::NotCompiled>::Ok($body)
    }};
}

#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_postgres {
    ($E:ident => $body:expr) => {
        ::core::result::Result::Err($crate::NotCompiled($crate::BackendKind::Postgres))
    };
}

#[cfg(feature = "mem")]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_mem {
    ($E:ident => $body:expr) => {{
        type $E = $crate::MemStore;
        ::core::result::Result::<_, $crate::NotCompiled>::Ok($body)
    }};
}

#[cfg(not(feature = "mem"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_mem {
    ($E:ident => $body:expr) => {
        ::core::result::Result::Err($crate::NotCompiled($crate::BackendKind::Mem))
    };
}
