//! msite-store-sqlite's integration tests (one binary).
//!
//! `conformance`: the shared Store conformance suite from `msite_core::testkit`.
//! `conformance_packing`, `scenarios_packing`: both suites again on stores that pack their
//! rows into blocks of a few rows before every fifth write, so that every case reads and
//! writes across many blocks, and rows keep moving between tables and blocks.
//! `scenarios`: the multi-replica protocol scenarios (sync, mastership, restore and its hard
//! cases) from `msite_core::testkit`, every site a store of this backend.
//! `split`: large `blobs` values kept in pieces that fit in a page.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use msite_core::store::{Error, Result};
use msite_core::testkit::conformance::StoreFactory;
use msite_store_sqlite::{SqliteOptions, SqliteStore};

/// Opens [`SqliteStore`]s; every capability applies.
#[derive(Clone)]
struct SqliteFactory;

impl StoreFactory for SqliteFactory {
    type Store = SqliteStore;

    fn open(&self, dir: &Path) -> Result<SqliteStore> {
        SqliteStore::open(dir)
    }

    /// Overwrite the header and some middle bytes of a b-tree page in the middle of the
    /// database file. Opening and closing the store first checkpoints the WAL into the file.
    fn corrupt(&self, dir: &Path) -> Result<()> {
        drop(SqliteStore::open(dir)?);
        let path = dir.join("store.sqlite3");
        if std::fs::metadata(dir.join("store.sqlite3-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
            > 0
        {
            return Err(Error::Invalid(
                "the WAL was not checkpointed on close".into(),
            ));
        }
        let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut header = [0u8; 100];
        f.read_exact(&mut header)?;
        let page_size = match u16::from_be_bytes([header[16], header[17]]) {
            1 => 65536,
            n => u64::from(n),
        };
        let pages = f.metadata()?.len() / page_size;
        if pages < 8 {
            return Err(Error::Invalid(format!(
                "{} has only {pages} pages",
                path.display()
            )));
        }
        let page_start = (pages / 2) * page_size;
        // An invalid page type in the b-tree page header, and garbage in its cell area.
        f.seek(SeekFrom::Start(page_start))?;
        f.write_all(&[0xff; 12])?;
        f.seek(SeekFrom::Start(page_start + page_size / 2))?;
        f.write_all(&[0xa5; 64])?;
        f.sync_all()?;
        Ok(())
    }
}

/// Opens [`SqliteStore`]s that pack their rows into blocks of about 256 bytes of rows
/// (`blocks.rs`) before every fifth write.
#[derive(Clone)]
struct PackingFactory;

impl StoreFactory for PackingFactory {
    type Store = SqliteStore;

    fn open(&self, dir: &Path) -> Result<SqliteStore> {
        let options = SqliteOptions {
            block_bytes: 256,
            pack_every_writes: 5,
        };
        SqliteStore::open_with(dir, options)
    }

    fn corrupt(&self, dir: &Path) -> Result<()> {
        SqliteFactory.corrupt(dir)
    }
}

mod blocks;
mod split;

mod conformance {
    msite_core::store_conformance_tests!(super::SqliteFactory);
}

mod conformance_packing {
    msite_core::store_conformance_tests!(super::PackingFactory);
}

mod scenarios_packing {
    msite_core::protocol_scenario_tests!(super::PackingFactory);
}

mod scenarios {
    msite_core::protocol_scenario_tests!(super::SqliteFactory);
}
