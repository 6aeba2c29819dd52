//! msite-store-postgres's integration tests (one binary), every one against real PostgreSQL
//! servers that the tests start themselves ([`ScratchServer`]: a temporary directory, a Unix
//! socket only, stopped at the end): one server per test case, a database per store.
//!
//! `conformance`, `scenarios`: the shared Store conformance suite and the multi-replica
//! protocol scenarios from `msite_core::testkit`, on a server with PostgreSQL's defaults.
//! `serializable`: both again on a server whose transactions default to `SERIALIZABLE`, as on
//! distributed engines. `engine`: what only this backend has (the key limit, retries after
//! serialization failures, connection settings).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use msite_core::store::{Error, Result};
use msite_core::testkit::conformance::{StoreFactory, CHILD_TEST_ENV};
use msite_store_postgres::{ConnSettings, PgStore, ScratchOptions, ScratchServer};

mod engine;

/// Opens [`PgStore`]s in new databases of one scratch server, started at the first open of a
/// new store and stopped when the last clone of the factory is dropped (the case's end).
///
/// A case may hand a new store directory to a child process first, which then starts a server
/// of its own and is killed: the factory adopts that server when it opens the directory, so
/// it is stopped at the case's end too.
#[derive(Clone)]
pub struct PgFactory {
    opts: ScratchOptions,
    server: Arc<Mutex<Option<ScratchServer>>>,
    adopted: Arc<Mutex<Vec<ScratchServer>>>,
    databases: Arc<AtomicU64>,
}

impl Default for PgFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl PgFactory {
    /// A factory whose server keeps PostgreSQL's defaults (`READ COMMITTED`), without
    /// fsyncs (no test cuts the power; see [`ScratchOptions::no_fsync`]).
    pub fn new() -> Self {
        Self::with(ScratchOptions {
            serializable: false,
            no_fsync: true,
        })
    }

    /// A factory whose server runs transactions at `SERIALIZABLE` by default.
    pub fn serializable() -> Self {
        Self::with(ScratchOptions {
            serializable: true,
            no_fsync: true,
        })
    }

    fn with(opts: ScratchOptions) -> Self {
        PgFactory {
            opts,
            server: Arc::new(Mutex::new(None)),
            adopted: Arc::new(Mutex::new(Vec::new())),
            databases: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Run `f` on the server, starting it first if needed.
    pub fn with_server<T>(&self, f: impl FnOnce(&mut ScratchServer) -> T) -> T {
        let mut guard = self.server.lock().unwrap_or_else(|e| e.into_inner());
        let server = guard.get_or_insert_with(|| {
            ScratchServer::start(self.opts)
                .unwrap_or_else(|e| panic!("cannot start a scratch PostgreSQL server: {e}"))
        });
        f(server)
    }

    /// A connection string for a new database name on the server (created by the store).
    pub fn new_conninfo(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        self.with_server(|s| s.conninfo(&format!("store_{n}")))
    }
}

impl PgFactory {
    /// Adopt the scratch server `settings` names if this factory neither started nor adopted
    /// it (a child process's; see the type's documentation). A child process itself adopts
    /// nothing: the servers it finds belong to its parent.
    fn adopt_foreign_server(&self, settings: &ConnSettings) {
        if std::env::var_os(CHILD_TEST_ENV).is_some() {
            return;
        }
        let Some(host) = settings.unix_socket_dir() else {
            return;
        };
        let own = self.server.lock().unwrap_or_else(|e| e.into_inner());
        let mut adopted = self.adopted.lock().unwrap_or_else(|e| e.into_inner());
        let known = own.iter().chain(adopted.iter()).any(|s| s.dir() == host);
        if !known {
            if let Ok(server) = ScratchServer::adopt(&host) {
                adopted.push(server);
            }
        }
    }
}

impl StoreFactory for PgFactory {
    type Store = PgStore;

    fn open(&self, dir: &Path) -> Result<PgStore> {
        if let Some(settings) = ConnSettings::read(dir)? {
            self.adopt_foreign_server(&settings);
            return PgStore::open(dir);
        }
        PgStore::create(dir, &self.new_conninfo())
    }

    /// Overwrite bytes in the middle of a page in the middle of the `state` table's heap file,
    /// with the server stopped, so that the page's checksum no longer matches when it is read.
    fn corrupt(&self, dir: &Path) -> Result<()> {
        let file = {
            let s = PgStore::open(dir)?;
            let mut c = postgres::Client::connect(s.settings().conninfo(), postgres::NoTls)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            c.batch_execute("CHECKPOINT")
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let rel: String = c
                .query_one("SELECT pg_relation_filepath('kv_state')", &[])
                .map_err(|e| Error::Invalid(e.to_string()))?
                .get(0);
            rel
        };
        self.with_server(|server| -> Result<()> {
            server.stop()?;
            let path = server.data_dir().join(file);
            let len = std::fs::metadata(&path)?.len();
            let pages = len / 8192;
            if pages < 8 {
                return Err(Error::Invalid(format!(
                    "{} has only {pages} pages",
                    path.display()
                )));
            }
            let at = (pages / 2) * 8192 + 4096;
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            std::os::unix::fs::FileExt::write_all_at(&f, &[0xa5; 64], at)?;
            f.sync_all()?;
            server.start_server()?;
            Ok(())
        })
    }
}

mod conformance {
    msite_core::store_conformance_tests!(super::PgFactory::new());
}

mod scenarios {
    msite_core::protocol_scenario_tests!(super::PgFactory::new());
}

/// The same suites with every transaction `SERIALIZABLE` unless it says otherwise.
mod serializable {
    mod conformance {
        msite_core::store_conformance_tests!(crate::PgFactory::serializable());
    }

    mod scenarios {
        msite_core::protocol_scenario_tests!(crate::PgFactory::serializable());
    }
}
