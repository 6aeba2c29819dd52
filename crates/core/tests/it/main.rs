//! msite-core's integration tests (one binary; needs the `testkit` feature).
//!
//! `conformance`: the shared Store conformance suite, run against the persistent
//! [`MemStore`], the reference every other backend is compared with.
//!
//! `scenarios`: the multi-replica protocol scenarios (sync, mastership, restore), every site a
//! persistent [`MemStore`] in its own directory.

use std::path::Path;

use msite_core::store::{Error, Result};
use msite_core::testkit::conformance::StoreFactory;
use msite_core::testkit::MemStore;

/// Opens [`MemStore`]s backed by their directory, so every capability applies.
#[derive(Clone)]
struct MemFactory;

impl StoreFactory for MemFactory {
    type Store = MemStore;

    fn open(&self, dir: &Path) -> Result<MemStore> {
        MemStore::open(dir)
    }

    /// Flip bytes in the middle of the log: a complete record then fails its checksum.
    fn corrupt(&self, dir: &Path) -> Result<()> {
        let path = dir.join("memstore.log");
        let mut bytes = std::fs::read(&path)?;
        if bytes.len() < 1024 {
            return Err(Error::Invalid(format!(
                "{} is too small to damage",
                path.display()
            )));
        }
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes)?;
        Ok(())
    }
}

mod conformance {
    msite_core::store_conformance_tests!(super::MemFactory);
}

mod scenarios {
    msite_core::protocol_scenario_tests!(super::MemFactory);
}
