//! The stores a simulated family runs on: in memory (the default) or a real engine in
//! directories.
//!
//! A [`SimBackend`] makes a replica's new store, takes a backup of a store and makes a store
//! from a backup. The world wraps each store in a [`FaultyStore`](msite_core::testkit::FaultyStore)
//! for crash injection whatever the backend, so crashes roll back unsynced writes the same
//! way on every engine.
//!
//! - [`MemBackend`]: [`MemStore`]s; a backup is a [`MemStore::deep_copy`] and so is a restore
//!   (the simulator's historical behaviour, bit for bit).
//! - [`DirBackend`] (an [`Engine`](msite_backends::Engine) of `msite-backends`, built by the
//!   simulator's feature of the backend's name): each store lives in a fresh directory
//!   under one temporary directory per schedule; a backup is [`Store::backup`] into a new
//!   directory and a restore is [`Store::restore_backup`] into a new directory, then an open
//!   — what `msite backup` and `msite restore` do; a restart after a crash closes the store
//!   and opens its directory again. Directory names are a counter and never reach a decision
//!   of the schedule.

use msite_core::store::Store;
use msite_core::testkit::MemStore;

/// Where a simulated family's stores come from.
pub trait SimBackend {
    /// The store a replica runs on (under the fault-injecting wrapper).
    type Store: Store;
    /// A backup of a store.
    type Backup;

    /// A new, empty store for a new replica.
    fn new_store(&mut self) -> Result<Self::Store, String>;

    /// A backup of `store`, as the engine's backup tool takes it.
    fn backup(&mut self, store: &Self::Store) -> Result<Self::Backup, String>;

    /// A new store made from `backup`, opened.
    fn restore(&mut self, backup: &Self::Backup) -> Result<Self::Store, String>;

    /// `store` after a restart: closed and opened again where it lives on disk (in memory,
    /// the same store).
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, String>;
}

/// In-memory stores: backups and restores are deep copies.
#[derive(Debug, Default)]
pub struct MemBackend;

impl SimBackend for MemBackend {
    type Store = MemStore;
    type Backup = MemStore;

    fn new_store(&mut self) -> Result<MemStore, String> {
        Ok(MemStore::new())
    }

    fn backup(&mut self, store: &MemStore) -> Result<MemStore, String> {
        Ok(store.deep_copy())
    }

    fn restore(&mut self, backup: &MemStore) -> Result<MemStore, String> {
        Ok(backup.deep_copy())
    }

    fn reopen(&mut self, store: MemStore) -> Result<MemStore, String> {
        Ok(store)
    }
}

pub use dir::DirBackend;

mod dir {
    use std::marker::PhantomData;
    use std::path::PathBuf;

    use msite_backends::Engine;

    use super::SimBackend;

    /// Stores of a real engine, each in its own directory under one temporary directory
    /// (removed when the backend is dropped, at the end of the schedule).
    pub struct DirBackend<E> {
        root: tempfile::TempDir,
        next: u64,
        engine: PhantomData<fn() -> E>,
    }

    impl<E> std::fmt::Debug for DirBackend<E> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("DirBackend")
                .field("root", &self.root.path())
                .field("next", &self.next)
                .finish()
        }
    }

    impl<E: Engine> DirBackend<E> {
        /// A backend whose stores are engine `E`'s, under a new temporary directory.
        pub fn new() -> std::io::Result<Self> {
            Ok(DirBackend {
                root: tempfile::Builder::new().prefix("msite-sim-").tempdir()?,
                next: 0,
                engine: PhantomData,
            })
        }

        /// A new directory name under the root, and its name for messages (no temporary path:
        /// messages stay the same from run to run).
        fn fresh(&mut self, kind: &str) -> (PathBuf, String) {
            self.next += 1;
            let name = format!("{kind}-{}", self.next);
            (self.root.path().join(&name), name)
        }
    }

    /// A backup: the directory the engine's backup tool wrote, and its short name.
    #[derive(Debug)]
    pub struct DirBackup {
        dir: PathBuf,
        name: String,
    }

    impl<E: Engine> SimBackend for DirBackend<E> {
        type Store = E;
        type Backup = DirBackup;

        fn new_store(&mut self) -> Result<E, String> {
            let (dir, name) = self.fresh("store");
            E::open(&dir).map_err(|e| format!("opening a new store in {name}: {e}"))
        }

        fn backup(&mut self, store: &E) -> Result<DirBackup, String> {
            let (dir, name) = self.fresh("backup");
            store
                .backup(&dir)
                .map_err(|e| format!("backing up into {name}: {e}"))?;
            Ok(DirBackup { dir, name })
        }

        fn restore(&mut self, backup: &DirBackup) -> Result<E, String> {
            let (dir, name) = self.fresh("store");
            E::restore_backup(&backup.dir, &dir)
                .map_err(|e| format!("restoring {} into {name}: {e}", backup.name))?;
            E::open(&dir).map_err(|e| format!("opening the restored store {name}: {e}"))
        }

        fn reopen(&mut self, store: E) -> Result<E, String> {
            let dir = store
                .dir()
                .ok_or_else(|| "reopening a store that lives in no directory".to_string())?;
            drop(store);
            E::open(&dir).map_err(|e| {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                format!("reopening {name}: {e}")
            })
        }
    }
}
