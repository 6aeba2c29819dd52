//! msite-store-rocks's integration tests (one binary).
//!
//! `conformance`: the shared Store conformance suite from `msite_core::testkit`.
//! `scenarios`: the multi-replica protocol scenarios (sync, mastership, restore and its hard
//! cases) from `msite_core::testkit`, every site a store of this backend.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use msite_core::store::{Error, Result};
use msite_core::testkit::conformance::StoreFactory;
use msite_store_rocks::RocksStore;

/// Opens [`RocksStore`]s; every capability applies.
#[derive(Clone)]
struct RocksFactory;

impl StoreFactory for RocksFactory {
    type Store = RocksStore;

    fn open(&self, dir: &Path) -> Result<RocksStore> {
        RocksStore::open(dir)
    }

    /// Flush everything into SST files, close, then flip bytes in the middle (a data block)
    /// of the largest SST file.
    fn corrupt(&self, dir: &Path) -> Result<()> {
        RocksStore::open(dir)?.flush()?;
        let mut largest: Option<(u64, std::path::PathBuf)> = None;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "sst") {
                let len = std::fs::metadata(&path)?.len();
                if largest.as_ref().is_none_or(|(l, _)| len > *l) {
                    largest = Some((len, path));
                }
            }
        }
        let Some((len, path)) = largest else {
            return Err(Error::Invalid(format!("no SST file in {}", dir.display())));
        };
        let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut bytes = [0u8; 64];
        f.seek(SeekFrom::Start(len / 2))?;
        f.read_exact(&mut bytes)?;
        for b in &mut bytes {
            *b ^= 0x5a;
        }
        f.seek(SeekFrom::Start(len / 2))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        Ok(())
    }
}

mod conformance {
    msite_core::store_conformance_tests!(super::RocksFactory);
}

mod scenarios {
    msite_core::protocol_scenario_tests!(super::RocksFactory);
}
