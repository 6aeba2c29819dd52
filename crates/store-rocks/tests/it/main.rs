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

/// Large values (the `blobs` column family keeps values of 4 KiB and more in blob files):
/// they survive a flush, a close, a backup and its restore, and damage to a blob file is found
/// by `check_integrity`.
mod blob_files {
    use msite_core::store::{Keyspace, ReadView, Store, StoreExt, WriteBatch, WriteOptions};
    use msite_store_rocks::RocksStore;

    use super::*;

    fn value(i: u8) -> Vec<u8> {
        (0..64 * 1024u32)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i)
            .collect()
    }

    fn blob_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "blob"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn large_values_round_trip_through_blob_files_backup_and_restore() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, bak, restored) = (
            tmp.path().join("s"),
            tmp.path().join("b"),
            tmp.path().join("r"),
        );
        {
            let s = RocksStore::open(&dir).unwrap();
            let mut b = s.batch();
            b.reserve(8, 8 * 64 * 1024);
            for i in 0..8u8 {
                b.put(Keyspace::Blobs, &[i], &value(i));
            }
            b.put(Keyspace::Blobs, b"small", b"inline");
            s.write(b, WriteOptions::SYNC).unwrap();
            s.flush().unwrap();
            assert!(!blob_files(&dir).is_empty(), "no blob file written");
            s.check_integrity().unwrap();
            s.backup(&bak).unwrap();
        }
        for d in [&dir, &restored] {
            if d == &restored {
                RocksStore::restore_backup(&bak, d).unwrap();
            }
            let s = RocksStore::open(d).unwrap();
            for i in 0..8u8 {
                assert_eq!(s.get(Keyspace::Blobs, &[i]).unwrap(), Some(value(i)));
            }
            assert_eq!(
                s.get(Keyspace::Blobs, b"small").unwrap().as_deref(),
                Some(&b"inline"[..])
            );
            s.put_one(Keyspace::Blobs, b"later", &value(9), WriteOptions::SYNC)
                .unwrap();
            s.check_integrity().unwrap();
        }
    }

    #[test]
    fn damage_to_a_blob_file_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        {
            let s = RocksStore::open(&dir).unwrap();
            let mut b = s.batch();
            for i in 0..8u8 {
                b.put(Keyspace::Blobs, &[i], &value(i));
            }
            s.write(b, WriteOptions::SYNC).unwrap();
        }
        let files = blob_files(&dir);
        let path = files.first().expect("a blob file after close");
        let len = std::fs::metadata(path).unwrap().len();
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut bytes = [0u8; 64];
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.read_exact(&mut bytes).unwrap();
        for b in &mut bytes {
            *b ^= 0x5a;
        }
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
        let s = RocksStore::open(&dir).unwrap();
        assert!(matches!(s.check_integrity(), Err(Error::Corruption(_))));
    }

    #[test]
    fn a_batch_is_written_only_to_its_own_store() {
        let tmp = tempfile::tempdir().unwrap();
        let s1 = RocksStore::open(&tmp.path().join("1")).unwrap();
        let s2 = RocksStore::open(&tmp.path().join("2")).unwrap();
        let mut b = s1.batch();
        b.put(Keyspace::Meta, b"k", b"v");
        assert!(matches!(
            s2.write(b, WriteOptions::NO_SYNC),
            Err(Error::Invalid(_))
        ));
        assert_eq!(s2.get(Keyspace::Meta, b"k").unwrap(), None);
    }
}
