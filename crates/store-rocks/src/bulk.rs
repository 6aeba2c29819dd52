//! RocksDB's bulk path for [`Store::bulk_load`](msite_core::store::Store::bulk_load): each
//! sorted run is written to SST files with `SstFileWriter` and ingested into its column
//! family (moved, not copied), instead of going through the write-ahead log and the
//! memtables.
//!
//! Rules the loader keeps:
//! * A file holds one keyspace and strictly ascending keys. One file per keyspace is open at a
//!   time, so runs of different keyspaces may interleave row by row (a snapshot load writes
//!   each State row and its snapshot-base copy in Meta) without cutting files short; a
//!   keyspace's file is finished where its run ends (a key not above the last), or where it
//!   reaches [`SST_FILE_BYTES`], so memory and scratch space stay bounded by one file per
//!   keyspace whatever the size of the load.
//! * Each file is ingested as soon as it is finished, so within a keyspace a key given again
//!   in a later run gets a newer sequence number: the later value wins, as the contract says.
//!   Keyspaces are column families of their own, so the order between them does not matter.
//! * Ingestion syncs the file and the MANIFEST before it returns, so a load that returned is
//!   durable. The scratch directory ([`BULK_DIR`]) is emptied before and removed after every
//!   load; a crash leaves at most one unfinished file there, removed by the next load.

use std::fs;
use std::path::{Path, PathBuf};

use msite_core::store::{BulkRows, Keyspace, Result};
use rocksdb::{DBCompressionType, IngestExternalFileOptions, Options, SstFileWriter};

use crate::error::RocksResultExt;
use crate::store::{cf_options, RocksStore};

/// The scratch directory of a load, inside the store directory.
pub(crate) const BULK_DIR: &str = "bulk-load.tmp";

/// A file being written is finished (and ingested) once it reaches this size.
pub(crate) const SST_FILE_BYTES: u64 = 256 << 20;

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// Rows written.
    pub rows: u64,
    /// SST files ingested.
    pub files: u64,
}

/// The file being written: its keyspace, writer, path and last key.
struct OpenFile<'o> {
    ks: Keyspace,
    writer: SstFileWriter<'o>,
    path: PathBuf,
    last: Vec<u8>,
}

impl OpenFile<'_> {
    /// Whether `(ks, key)` may go into this file (same run, ascending, not full).
    fn takes(&self, ks: Keyspace, key: &[u8], max_bytes: u64) -> bool {
        self.ks == ks && key > self.last.as_slice() && self.writer.file_size() < max_bytes
    }
}

impl RocksStore {
    /// Loads `rows` through SST files of at most about `max_bytes` each; the writer lock is
    /// held by the caller.
    pub(crate) fn bulk_load_locked(&self, rows: BulkRows<'_>, max_bytes: u64) -> Result<Loaded> {
        let scratch = self.dir().join(BULK_DIR);
        empty_dir(&scratch)?;
        let res = self.load_files(rows, &scratch, max_bytes);
        let _ = fs::remove_dir_all(&scratch);
        res
    }

    fn load_files(&self, rows: BulkRows<'_>, scratch: &Path, max_bytes: u64) -> Result<Loaded> {
        let opts: Vec<Options> = Keyspace::ALL.iter().map(|ks| writer_options(*ks)).collect();
        // The open file of each keyspace, indexed by `Keyspace as usize`.
        let mut open: Vec<Option<OpenFile<'_>>> = Keyspace::ALL.iter().map(|_| None).collect();
        let (mut count, mut files) = (0u64, 0u64);
        rows.each_row(&mut |ks, key, value| {
            let slot = &mut open[ks as usize];
            let f = match slot.take() {
                Some(f) if f.takes(ks, key, max_bytes) => slot.insert(f),
                finished => {
                    if let Some(f) = finished {
                        self.ingest(f)?;
                    }
                    let path = scratch.join(format!("{files:08}.sst"));
                    files += 1;
                    let writer = SstFileWriter::create(&opts[ks as usize]);
                    writer.open(&path).r2e()?;
                    slot.insert(OpenFile {
                        ks,
                        writer,
                        path,
                        last: Vec::new(),
                    })
                }
            };
            f.writer.put(key, value).r2e()?;
            f.last.clear();
            f.last.extend_from_slice(key);
            count += 1;
            Ok(())
        })?;
        for f in open.into_iter().flatten() {
            self.ingest(f)?;
        }
        Ok(Loaded { rows: count, files })
    }

    /// Finishes `f` and moves it into its column family.
    fn ingest(&self, mut f: OpenFile<'_>) -> Result<()> {
        f.writer.finish().r2e()?;
        let mut io = IngestExternalFileOptions::default();
        io.set_move_files(true);
        self.db()
            .ingest_external_file_cf_opts(self.cf(f.ks)?, &io, vec![&f.path])
            .r2e()
    }
}

/// The options of a keyspace's SST files: its column family's, except that the files of
/// content and of Meta are not compressed. Content values are msite's own zstd frames
/// (`packed.rs` in msite-core), content that packing found incompressible, or pieces of large
/// content, which the family's ordinary writes keep uncompressed in blob files anyway; a
/// snapshot load's Meta rows are the snapshot base's zstd blocks. LZ4 finds next to nothing
/// in them, and compressing content was a third of a snapshot load's writing thread. A writer
/// compresses with the options' last per-level type, so that list goes too.
fn writer_options(ks: Keyspace) -> Options {
    let mut opts = cf_options(ks);
    if matches!(ks, Keyspace::Blobs | Keyspace::Meta) {
        opts.set_compression_type(DBCompressionType::None);
        opts.set_compression_per_level(&[]);
    }
    opts
}

/// Makes `dir` an empty directory (removing what an interrupted load left).
fn empty_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    fs::create_dir_all(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use msite_core::store::{KeyRange, ReadView, Store};

    use super::*;

    /// `n` rows of 1000 bytes that do not compress (a value's first byte is its index).
    fn rows(n: u32, ks: Keyspace) -> Vec<(Keyspace, Vec<u8>, Vec<u8>)> {
        let mut rng = msite_core::testkit::conformance::Rng::new(u64::from(n));
        (0..n)
            .map(|i| {
                let mut v = rng.bytes(1000);
                v[0] = i as u8;
                (ks, format!("k{i:08}").into_bytes(), v)
            })
            .collect()
    }

    /// A run larger than a file is split into several files, all ingested, none left over.
    #[test]
    fn a_large_run_goes_in_as_several_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let all = rows(2_000, Keyspace::State);
        let mut it = all.clone().into_iter().map(Ok);
        let writer = store.lock_writer();
        let loaded = store.bulk_load_locked(&mut it, 64 << 10).unwrap();
        drop(writer);
        assert_eq!(loaded.rows, 2_000);
        assert!(loaded.files >= 20, "2 MB in files of 64 KiB: {loaded:?}");
        assert!(
            !dir.path().join(BULK_DIR).exists(),
            "the scratch dir is gone"
        );
        let back: Vec<_> = store
            .scan(Keyspace::State, KeyRange::all())
            .unwrap()
            .map(|kv| kv.unwrap())
            .collect();
        let want: Vec<_> = all.into_iter().map(|(_, k, v)| (k, v)).collect();
        assert_eq!(back, want);
    }

    /// Runs of two keyspaces interleaved row by row (as a snapshot load writes each State row
    /// and its base copy in Meta) go into one file per keyspace, not one file per row: a
    /// 100k-file tree's snapshot once made about 20,000 files here and ran out of file
    /// descriptors. A key given again later in a keyspace still wins.
    #[test]
    fn interleaved_keyspaces_share_a_file_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let state = rows(3_000, Keyspace::State);
        let meta = rows(3_000, Keyspace::Meta);
        let mut all: Vec<_> = state
            .iter()
            .cloned()
            .zip(meta.iter().cloned())
            .flat_map(|(a, b)| [a, b])
            .collect();
        all.push((Keyspace::State, b"k00000000".to_vec(), b"again".to_vec()));
        let mut it = all.into_iter().map(Ok);
        let writer = store.lock_writer();
        let loaded = store.bulk_load_locked(&mut it, SST_FILE_BYTES).unwrap();
        drop(writer);
        assert_eq!(loaded.rows, 6_001);
        assert_eq!(
            loaded.files, 3,
            "one file per keyspace, one for the key given again"
        );
        assert_eq!(
            store.get(Keyspace::State, b"k00000000").unwrap().unwrap(),
            b"again"
        );
        for (ks, want) in [(Keyspace::State, &state), (Keyspace::Meta, &meta)] {
            let back = store.scan(ks, KeyRange::all()).unwrap().count();
            assert_eq!(back, want.len(), "{ks:?}");
        }
        assert_eq!(
            store.get(Keyspace::Meta, b"k00002999").unwrap().unwrap(),
            meta[2999].2
        );
    }

    /// What an interrupted load left in the scratch directory does not disturb the next.
    #[test]
    fn leftovers_of_an_interrupted_load_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let scratch = dir.path().join(BULK_DIR);
        fs::create_dir_all(&scratch).unwrap();
        fs::write(scratch.join("00000000.sst"), b"half a file").unwrap();
        let mut it = rows(10, Keyspace::Meta).into_iter().map(Ok);
        assert_eq!(store.bulk_load(&mut it).unwrap(), 10);
        assert!(!scratch.exists());
        assert_eq!(
            store.get(Keyspace::Meta, b"k00000009").unwrap().unwrap()[0],
            9
        );
    }
}
