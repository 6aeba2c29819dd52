//! msite's [`Store`](msite_core::store::Store) for PostgreSQL. Read `msite_core::store`'s
//! documentation first: this crate only maps that contract onto a database server.
//!
//! # Layout
//!
//! The store lives in a database on a server; the store directory only says where:
//!
//! ```text
//! DIR/conninfo    one libpq connection string (no password: see below)
//! ```
//!
//! Each [`Keyspace`](msite_core::store::Keyspace) is a table
//! `kv_NAME (k bytea PRIMARY KEY, v bytea NOT NULL)`. `bytea` has no collation: it compares
//! with `memcmp`, shorter first, which is exactly the contract's key order, whatever the
//! database's locale. A B-tree index entry must fit in a third of a page, so keys longer than
//! [`MAX_KEY_LEN`] (2 KiB) are refused with [`Error::Invalid`](msite_core::store::Error) before
//! anything is sent (msite's keys are a few dozen bytes). Values are content chunks of at most
//! 1 MiB (core's chunking), stored out of line by TOAST.
//!
//! Passwords never go into `conninfo`: a connection string with one is refused. They come from
//! the password file as libpq reads it (`$PGPASSFILE`, else `~/.pgpass`, only if no one but its
//! owner can read it), or there are none (peer authentication over the Unix socket).
//!
//! # Mapping
//!
//! * **Client**: the blocking [`postgres`] crate (the `Store` trait is synchronous; it runs
//!   tokio-postgres on a private runtime), without TLS: connect over a Unix socket or a
//!   trusted network.
//! * **Exclusive open**: the writer connection holds the session advisory lock
//!   `pg_try_advisory_lock(0x6d73697465)` (per database) for the store's life; a second open,
//!   from anywhere, gets [`Error::Locked`](msite_core::store::Error). The lock ends with the
//!   session, so a killed process never leaves it behind.
//! * **Writes** go through that one connection behind a mutex: a [`PgBatch`] (core's
//!   `RecordedBatch`) becomes one transaction: `BEGIN`, a `SELECT` per guard (a failed guard
//!   rolls back), then the operations in batch order, each run of puts (or deletes) into one
//!   keyspace as one statement (`INSERT … SELECT * FROM unnest($1::bytea[], $2::bytea[]) ON
//!   CONFLICT (k) DO UPDATE`, the later put of a key winning; `DELETE … WHERE k = ANY($1)`),
//!   then `COMMIT`. A batch costs a few round trips, not one per operation.
//! * **Retries**: a transaction that fails with SQLSTATE `40001` (serialization failure) or
//!   `40P01` (deadlock), at any statement or at `COMMIT`, is rolled back and run again whole,
//!   guards included, up to 30 times with a growing pause ([`PgStore::retries`] counts them).
//!   The writer runs at the server's default isolation level, so the same code is right at
//!   `READ COMMITTED` (PostgreSQL's default; one writer per store) and at `SERIALIZABLE`
//!   (distributed engines); the tests run every suite both ways.
//! * **Durability**: the writer's session runs with `synchronous_commit = off`; a synced write
//!   sets it `on` first. An unsynced commit may be lost whole in a server crash, never half. An
//!   empty synced batch commits a transaction with an id (`txid_current()`), whose synchronous
//!   commit flushes the log over every earlier asynchronous one.
//! * **Reads**: a small pool of reader connections. A [`PgSnapshot`] is a `REPEATABLE READ
//!   READ ONLY` transaction held on one of them, its snapshot taken at once. Scans fetch chunks
//!   (`WHERE k > $last ORDER BY k LIMIT n`, `n` sized to about 8 MiB per chunk); a scan on the
//!   store runs in a snapshot transaction of its own. `last` is `ORDER BY k DESC LIMIT 1`, an
//!   index seek.
//! * **Vendor tools** (see `vendor.rs`): `backup` is `pg_dump --format=directory` of the
//!   store's tables (consistent, online, one database: chosen over `pg_basebackup`, which
//!   copies the whole cluster), `restore_backup` is `pg_restore --single-transaction` into a
//!   new database on the same server, `check_integrity` runs amcheck's `verify_heapam` (with
//!   TOAST) and `bt_index_check(…, heapallindexed)` on every table, what `pg_amcheck` runs.
//!   Damaged pages (`XX001`, with data checksums) and indexes (`XX002`) become
//!   [`Error::Corruption`](msite_core::store::Error).
//!
//! # Distributed engines that speak PostgreSQL's protocol
//!
//! See the section "CockroachDB and YugabyteDB" in `docs/postgres.md` (checked against their
//! documentation, what each difference means here and how it is handled).

mod conn;
mod error;
mod iter;
mod pool;
pub mod scratch;
pub mod settings;
mod snapshot;
mod store;
pub mod tools;
mod vendor;

/// The batch of a [`PgStore`]: msite-core's [`RecordedBatch`], replayed into one transaction
/// by `write`.
///
/// [`RecordedBatch`]: msite_core::store::RecordedBatch
pub type PgBatch = msite_core::store::RecordedBatch;
pub use iter::PgIter;
pub use scratch::{ScratchOptions, ScratchServer};
pub use settings::ConnSettings;
pub use snapshot::PgSnapshot;
pub use store::{PgStore, MAX_KEY_LEN, SERVER_ENV};
