//! `msite-core`: the replication protocol and the versioned object base of msite.
//!
//! Everything here is written over the [`store::Store`] trait and never names a storage
//! engine (an xtask tidy test enforces that the dependency tree holds none). Packets are
//! encoded by `msite-packet`; this crate converts its domain types to the wire types there.
#![deny(missing_docs)]

pub mod store;

#[cfg(feature = "testkit")]
pub mod testkit;
