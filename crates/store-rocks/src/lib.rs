//! msite's [`Store`](msite_core::store::Store) for RocksDB. Read `msite_core::store`'s
//! documentation first: this crate only maps that contract onto RocksDB.
//!
//! # Layout
//!
//! A store is a RocksDB directory (RocksDB's own `LOCK`, `CURRENT`, `MANIFEST-*`, `*.log`,
//! `*.sst`, `*.blob`). Each [`Keyspace`](msite_core::store::Keyspace) is a column family
//! named after it (`meta`, `oplog`, …), with LZ4 compression and the default bytewise
//! comparator, which is exactly the contract's key order.
//!
//! # Mapping
//!
//! * **Writes**: a [`RocksBatch`] writes straight into one `rocksdb::WriteBatch` (atomic, also
//!   across a crash: the WAL record is all or nothing), sized at once when the caller says how
//!   large it will be; `write` takes the writer mutex, checks the `expect` guards (no other
//!   writer can come in between) and writes it.
//! * **Durability**: `WriteOptions::set_sync` (fsync of the WAL); an empty synced batch runs
//!   `FlushWAL(sync)`. A synced write that fails poisons the store.
//! * **Reads**: snapshots are `DB::snapshot()`; every scan is a raw iterator with explicit
//!   `iterate_lower_bound`/`iterate_upper_bound` (prefix iterators are never used) and checks
//!   each key against the range's end as well. A scan on the store is consistent: a RocksDB
//!   iterator pins the state it started on.
//! * **Small families**: `meta`, `epochs` and `peers` (entries per sibling or per packet,
//!   read a dozen times by every export, import and local change) have a bloom filter and
//!   are compacted after every flush, so a point read or a scan meets the memtable and one
//!   sorted run on disk (two while that compaction runs), however many flushes the history
//!   took; the large families keep RocksDB's defaults (no filter to build at every flush of
//!   an import).
//! * **Memory and close**: the memtables of all column families share one 64 MiB budget
//!   (`db_write_buffer_size`); the `blobs` family has at most two memtables of 32 MiB and keeps
//!   values of 4 KiB and more in blob files (RocksDB's integrated BlobDB: written at flush,
//!   never rewritten by compactions; uncompressed, no blob GC). Dropping the store flushes the
//!   memtables, so a clean close leaves no WAL to replay at the next open.
//! * **Bulk load** (a replica made from a snapshot): each sorted run is written to SST files
//!   (`SstFileWriter`, at most 256 MiB each) and ingested into its column family as soon as
//!   it is finished, bypassing the WAL and the memtables (`bulk.rs`).
//! * **Exclusive open**: msite's own `msite.lock` (an OS file lock) is taken before RocksDB
//!   touches the directory, then RocksDB's `LOCK`; failing either (from this or another
//!   process) is [`Error::Locked`](msite_core::store::Error::Locked). RocksDB starts a new
//!   diagnostic `LOG` before it takes its lock, so without msite's a waiting process rotated
//!   the running one's logs. Four logs are kept.
//! * **Vendor tools**: `backup` uses the `BackupEngine` (flushes, then copies the files
//!   with checksums into the backup directory, so a backup shares nothing with the store);
//!   `restore_backup` restores the latest backup into a new directory, verifying checksums;
//!   `check_integrity` reads every key of every column family with checksum verification.
//!   The database is opened with `paranoid_checks`. RocksDB's `Corruption` status becomes
//!   [`Error::Corruption`](msite_core::store::Error::Corruption).

mod batch;
mod bulk;
mod error;
mod iter;
mod snapshot;
mod store;

pub use batch::RocksBatch;
pub use iter::RocksIter;
pub use snapshot::RocksSnapshot;
pub use store::RocksStore;
