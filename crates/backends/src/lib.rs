//! `msite-backends`: the one list of msite's storage engines, used by the CLI, the simulator
//! and the bench.
//!
//! - [`BackendKind`] names every backend, compiled into this build or not (so
//!   `--backend rocks` parses everywhere and a build without RocksDB can say so), with what
//!   the repository needs to know about each (name, aliases, engine name, store crate,
//!   engine crates: see [`kind`](BackendKind::name)).
//! - [`AnyStore`] (with [`AnyBatch`], [`AnySnapshot`]) is a store of any compiled backend,
//!   chosen at run time: what the CLI opens.
//! - [`Engine`] and [`with_engine!`] run code that is generic over the store type on the
//!   engine a `BackendKind` names: what the simulator and the bench do.
//!
//! Backends are cargo features of this crate named like the backends (`sqlite`, `rocks`,
//! `postgres`, `mem`); the CLI, the simulator and the bench forward their own features of the same names.
//! A build without any backend compiles (every dispatch is then empty) but opens nothing.
//!
//! How to add a backend, step by step, is in the documentation of `msite_core::store`.

// A build without any backend compiles with every dispatch empty; the lints below would only
// flag that emptiness.
#![cfg_attr(
    not(any(
        feature = "sqlite",
        feature = "rocks",
        feature = "postgres",
        feature = "mem"
    )),
    allow(
        unused_variables,
        unreachable_code,
        unused_imports,
        unused_macros,
        dead_code
    )
)]

mod any;
mod engine;
mod kind;

use std::fmt;
use std::str::FromStr;

pub use any::{AnyBatch, AnySnapshot, AnyStore};
pub use engine::Engine;
pub use kind::BackendKind;

#[cfg(feature = "mem")]
pub use msite_core::testkit::MemStore;
/// A throwaway PostgreSQL server (temporary directory, Unix socket only) for tests, the
/// simulator and the bench.
#[cfg(feature = "postgres")]
pub use msite_store_postgres::{PgStore, ScratchOptions, ScratchServer};
#[cfg(feature = "rocks")]
pub use msite_store_rocks::RocksStore;
#[cfg(feature = "sqlite")]
pub use msite_store_sqlite::SqliteStore;

/// A backend this build does not have: what [`with_engine!`] returns for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotCompiled(pub BackendKind);

impl fmt::Display for NotCompiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.0;
        write!(
            f,
            "the {kind} backend is not available in this build; this build has: {} (rebuild with `--features {kind}` to add it)",
            BackendKind::available_list()
        )
    }
}

impl std::error::Error for NotCompiled {}

impl BackendKind {
    /// Whether this build has the backend (the feature of its name is on in this crate).
    pub fn compiled(self) -> bool {
        let engine: Result<BackendKind, NotCompiled> = crate::with_engine!(self, E => E::KIND);
        engine.is_ok()
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
            Err(NotCompiled(self).into())
        }
    }
}

/// The production backends' names, as a sentence: `sqlite and rocks`.
fn production_names() -> String {
    let names: Vec<&str> = BackendKind::ALL
        .into_iter()
        .filter(|k| k.for_production())
        .map(BackendKind::name)
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_string(),
        None => String::new(),
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
        BackendKind::parse(s).ok_or_else(|| {
            format!(
                "unknown backend `{s}`; the backends are {} (this build has: {})",
                production_names(),
                BackendKind::available_list()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use msite_core::store::{
        KeyRange, Keyspace, ReadView, Store, StoreExt, WriteBatch, WriteOptions,
    };

    use super::*;

    #[test]
    fn every_name_and_alias_parses_back_to_its_kind_alone() {
        let mut seen = std::collections::BTreeSet::new();
        for k in BackendKind::ALL {
            for name in std::iter::once(k.name()).chain(k.aliases().iter().copied()) {
                assert!(seen.insert(name), "{name} names two backends");
                assert_eq!(name.parse::<BackendKind>(), Ok(k));
                assert_eq!(name.to_uppercase().parse::<BackendKind>(), Ok(k));
            }
            assert_eq!(
                BackendKind::parse(k.engine_name()),
                Some(k),
                "the bench labels rows with {} and parses them back",
                k.engine_name()
            );
        }
        let err = "oracle".parse::<BackendKind>().unwrap_err();
        assert!(
            err.starts_with(
                "unknown backend `oracle`; the backends are sqlite, rocks and postgres"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_absent_backend_is_named_with_the_available_ones() {
        for k in BackendKind::ALL {
            assert_eq!(k.compiled(), BackendKind::available().contains(&k));
            if !k.compiled() {
                let msg = k.ensure_compiled().unwrap_err().to_string();
                assert!(
                    msg.starts_with(&format!(
                        "the {k} backend is not available in this build; this build has: {}",
                        BackendKind::available_list()
                    )),
                    "{msg}"
                );
                let dir = tempfile::tempdir().unwrap();
                assert!(AnyStore::open(k, dir.path()).is_err());
            }
        }
    }

    /// Every compiled backend opens through `AnyStore` as itself, with every dispatch arm
    /// wired to it: a forgotten arm opens another engine, names another, or loses the write.
    /// (A build without backends has nothing to open.)
    /// A networked backend's store goes into a database of a scratch server started here.
    #[cfg(any(
        feature = "sqlite",
        feature = "rocks",
        feature = "postgres",
        feature = "mem"
    ))]
    #[test]
    fn every_compiled_backend_opens_as_itself_through_any_store() {
        for k in BackendKind::available() {
            let dir = tempfile::tempdir().unwrap();
            #[cfg(feature = "postgres")]
            let server = k
                .networked()
                .then(|| msite_store_postgres::ScratchServer::start(Default::default()).unwrap());
            #[cfg(feature = "postgres")]
            let url = server.as_ref().map(|s| s.conninfo("anystore"));
            #[cfg(not(feature = "postgres"))]
            let url: Option<String> = None;
            let store = AnyStore::create(k, &dir.path().join("store"), url.as_deref()).unwrap();
            assert_eq!(store.kind(), k);
            assert_eq!(store.backend_name(), k.engine_name());
            let mut batch = store.batch();
            batch.put(Keyspace::Meta, b"k", b"v");
            store.write(batch, WriteOptions::SYNC).unwrap();
            store
                .put_one(Keyspace::Meta, b"l", b"w", WriteOptions::SYNC)
                .unwrap();
            let snap = store.snapshot().unwrap();
            assert_eq!(snap.get(Keyspace::Meta, b"k").unwrap(), Some(b"v".to_vec()));
            let last = snap.last(Keyspace::Meta, KeyRange::all()).unwrap();
            assert_eq!(last, Some((b"l".to_vec(), b"w".to_vec())));
            drop(snap);
            store.backup(&dir.path().join("backup")).unwrap();
            drop(store);
            if !k.networked() {
                let err = AnyStore::restore_backup_as(
                    k,
                    &dir.path().join("backup"),
                    &dir.path().join("elsewhere"),
                    Some("host=/tmp dbname=x"),
                )
                .unwrap_err();
                assert!(
                    format!("{err:#}").contains("--url is only for networked"),
                    "{err:#}"
                );
            }
            AnyStore::restore_backup_as(k, &dir.path().join("backup"), &dir.path().join("r"), None)
                .unwrap();
            let restored = AnyStore::open(k, &dir.path().join("r")).unwrap();
            assert_eq!(
                restored.get(Keyspace::Meta, b"l").unwrap(),
                Some(b"w".to_vec())
            );
        }
    }

    #[test]
    fn with_engine_binds_the_engine_of_the_kind() {
        for k in BackendKind::ALL {
            assert_eq!(
                with_engine!(k, E => E::KIND),
                if k.compiled() {
                    Ok(k)
                } else {
                    Err(NotCompiled(k))
                }
            );
        }
    }
}
