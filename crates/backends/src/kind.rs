//! [`BackendKind`]: the one list of msite's storage engines and what the rest of the
//! repository needs to know about each.
//!
//! This file depends on nothing but `std`, so that `xtask`'s tidy checks can include it
//! (`#[path]`) and derive their dependency rules from the same list the programs use.

/// A storage engine, whether or not this build has it.
///
/// Adding a variant is the first step of adding a backend; every `match` on it (here, in
/// `msite-backends` and in the simulator) then names what else to write. The checklist is in
/// the documentation of `msite_core::store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// SQLite (the default).
    Sqlite,
    /// RocksDB.
    Rocks,
    /// PostgreSQL (a database on a server; the store directory holds its connection settings).
    Postgres,
    /// The reference log-structured store of msite-core's testkit (development only).
    Mem,
}

impl BackendKind {
    /// Every kind, in the order `--version` lists them (the first compiled one is the default).
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Sqlite,
        BackendKind::Rocks,
        BackendKind::Postgres,
        BackendKind::Mem,
    ];

    /// The name used on the command line, in `site.json` and as the cargo feature that
    /// builds the backend (in `msite-backends` and every crate that forwards it).
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Rocks => "rocks",
            BackendKind::Postgres => "postgres",
            BackendKind::Mem => "mem",
        }
    }

    /// Other spellings `--backend` accepts. The engine's own name (`Store::backend_name`) is
    /// one of them, so the bench's tables and child-process arguments parse back.
    pub const fn aliases(self) -> &'static [&'static str] {
        match self {
            BackendKind::Sqlite => &["sqlite3"],
            BackendKind::Rocks => &["rocksdb"],
            BackendKind::Postgres => &["postgresql", "pg"],
            BackendKind::Mem => &["memory"],
        }
    }

    /// What the engine's `Store::backend_name` returns; the bench labels its rows with it.
    pub const fn engine_name(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Rocks => "rocksdb",
            BackendKind::Postgres => "postgres",
            BackendKind::Mem => "memory",
        }
    }

    /// Whether sites may run on it in production (`false`: development and tests only; the
    /// bench skips it and unknown-backend messages do not offer it).
    pub const fn for_production(self) -> bool {
        match self {
            BackendKind::Sqlite | BackendKind::Rocks | BackendKind::Postgres => true,
            BackendKind::Mem => false,
        }
    }

    /// The workspace crate that implements the store, if it has its own (the reference store
    /// lives in `msite-core`'s testkit).
    pub const fn store_crate(self) -> Option<&'static str> {
        match self {
            BackendKind::Sqlite => Some("msite-store-sqlite"),
            BackendKind::Rocks => Some("msite-store-rocks"),
            BackendKind::Postgres => Some("msite-store-postgres"),
            BackendKind::Mem => None,
        }
    }

    /// The third-party crates that bring the engine itself; `msite-core`, `msite-packet` and
    /// the other backends must never depend on them.
    pub const fn engine_crates(self) -> &'static [&'static str] {
        match self {
            BackendKind::Sqlite => &["rusqlite", "libsqlite3-sys"],
            BackendKind::Rocks => &["rocksdb", "librocksdb-sys"],
            BackendKind::Postgres => &["postgres", "tokio-postgres"],
            BackendKind::Mem => &[],
        }
    }

    /// Whether the store lives on a server that `--url` names (the store directory then holds
    /// only the connection settings) rather than in the store directory itself.
    pub const fn networked(self) -> bool {
        matches!(self, BackendKind::Postgres)
    }

    /// The kind named `s` (its name or an alias, any case), if any.
    pub fn parse(s: &str) -> Option<BackendKind> {
        let s = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s || k.aliases().contains(&s.as_str()))
    }
}
