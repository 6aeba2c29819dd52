//! msite's [`Store`](msite_core::store::Store) for SQLite. Read `msite_core::store`'s
//! documentation first: this crate only maps that contract onto SQLite.
//!
//! # Layout
//!
//! A store is a directory:
//!
//! ```text
//! DIR/LOCK             held with an OS file lock (std `File::try_lock`) while the store is open
//! DIR/store.sqlite3    the database, in WAL mode (plus its -wal and -shm files while open;
//!                      a -journal file while a bulk load runs under a rollback journal)
//! ```
//!
//! Each [`Keyspace`](msite_core::store::Keyspace) is a table
//! `kv_NAME (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID`; SQLite compares BLOBs with
//! `memcmp`, shorter first, which is exactly the contract's key order. New stores use 16 KiB
//! pages (SQLite's default is 4 KiB; an existing store keeps the page size it was made with).
//! A `blobs` value longer than 3,840 bytes keeps its first 3,840 bytes in its row and the rest
//! in pieces in `kv_blobs_tail`, so that no row spills into a mostly empty overflow page
//! (`split.rs`). `compact` packs the rows of the oplog and the object base into zstd blocks of
//! about 64 KiB of rows, one row of `kv_packed` each (`blocks.rs`, `pack.rs`), and a bulk load
//! into empty tables writes those rows, and small content, as blocks from the start (content
//! only ever gets into blocks that way): reads look in the one block
//! whose range covers the key, then in the table, and a write to a packed key moves its block
//! back into the table first. SQLite's `user_version` holds the layout
//! (`STORE_LAYOUT`); a store of a later layout than this release knows is refused.
//!
//! # Mapping
//!
//! * **Writes** go through one writer connection behind a mutex: a [`SqliteBatch`] becomes one
//!   `BEGIN IMMEDIATE … COMMIT` transaction. Guards are checked inside it before any operation
//!   runs; a failed guard rolls it back. Operations run in batch order, one prepared statement
//!   per keyspace and kind; a run of 64 puts into one keyspace in ascending key order is one
//!   multi-row `INSERT OR REPLACE` (its statement journal is kept in memory).
//! * **Durability**: a synced write commits with `PRAGMA synchronous = FULL` (WAL fsynced at
//!   commit), an unsynced one with `NORMAL` (WAL fsynced only at checkpoints: a power failure
//!   may lose the last transactions whole, never part of one). An empty synced batch fsyncs the
//!   WAL file, so it still makes earlier unsynced writes durable. A bulk load into a store no
//!   other connection has open (a new replica's) runs under a rollback journal, which writes
//!   each page once instead of into the WAL and again at the checkpoint (`journal.rs`).
//! * **Poisoning**: a synced write that fails for any reason but a guard poisons the store.
//! * **Reads** use a small pool of reader connections. A [`SqliteSnapshot`] is a read
//!   transaction held on one of them (WAL readers never block the writer). Scans fetch chunks
//!   of at most 512 rows or 8 MiB and resume after the last key, so no statement stays open
//!   between calls; a scan on the store itself runs in its own read transaction, so it is
//!   consistent too. A live snapshot or iterator keeps checkpoints from recycling the WAL, so
//!   keep them short.
//! * **Vendor tools**: `backup` is SQLite's online backup API, copying every page in one step
//!   within one read transaction; `restore_backup` copies back the same way and runs
//!   `PRAGMA quick_check`; `check_integrity` is `PRAGMA integrity_check` and then decodes
//!   every packed block; `compact` packs blocks, then runs `VACUUM`. `SQLITE_CORRUPT` and
//!   `SQLITE_NOTADB` become [`Error::Corruption`](msite_core::store::Error::Corruption).

mod blocks;
mod error;
mod iter;
mod journal;
mod pack;
mod snapshot;
mod split;
mod store;

/// The batch of a [`SqliteStore`]: msite-core's [`RecordedBatch`], replayed into one
/// `BEGIN IMMEDIATE` transaction by `write`.
///
/// [`RecordedBatch`]: msite_core::store::RecordedBatch
pub type SqliteBatch = msite_core::store::RecordedBatch;
pub use blocks::{DEFAULT_BLOCK_BYTES, MAX_BLOCK_BYTES};
pub use iter::SqliteIter;
pub use snapshot::SqliteSnapshot;
pub use store::{SqliteOptions, SqliteStore};
