//! The storage engines a workload runs on, behind one small trait so that every workload is
//! written once and instantiated per engine. The engines are `msite-backends`' list: every
//! compiled [`Engine`] that is [for production](BackendKind::for_production) is a
//! [`Backend`], named in tables, JSON and child-process arguments by its engine name
//! (`sqlite`, `rocksdb`).

use std::path::Path;

use anyhow::{Context, Result};
use msite_backends::{BackendKind, Engine};
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
    /// microsecond-scale measurement does not share the CPUs with it.
    fn quiesce(store: &Self::S) -> Result<()>;
}

impl<E: Engine> Backend for E {
    type S = E;
    const NAME: &'static str = E::KIND.engine_name();

    fn open_store(dir: &Path) -> Result<E> {
        E::open(dir).with_context(|| format!("opening the {} store {}", Self::NAME, dir.display()))
    }

    fn quiesce(store: &E) -> Result<()> {
        Engine::quiesce(store)
            .with_context(|| format!("waiting for {}'s flushes and compactions", Self::NAME))
    }
}

/// The engines compiled in, by name: the production backends of this build.
pub fn compiled() -> Vec<&'static str> {
    BackendKind::available()
        .into_iter()
        .filter(|k| k.for_production())
        .map(BackendKind::engine_name)
        .collect()
}

/// Calls `$body` with the type alias `$B` bound to the backend named `$name` (an engine
/// name, or any name `--backend` accepts).
#[macro_export]
macro_rules! with_backend {
    ($name:expr, $B:ident => $body:expr) => {{
        #[allow(unused_imports)]
        use msite_backends::Engine as _;
        let name: &str = $name;
        match msite_backends::BackendKind::parse(name) {
            Some(kind) => msite_backends::with_engine!(kind, $B => $body)
                .map_err(|_| anyhow::anyhow!("backend {name} is not compiled in"))
                .and_then(|r| r),
            None => Err(anyhow::anyhow!("backend {name} is not compiled in")),
        }
    }};
}
