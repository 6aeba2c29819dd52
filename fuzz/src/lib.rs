//! Support for the `import_packet` fuzz target: a small family of in-memory replicas built
//! deterministically ([`family`]), structured mutations of the real packets it exchanges
//! ([`mutate`]), and the invariants an import must keep ([`check`]).
//!
//! The target imports mutated packets into a copy of one replica's store and checks the store
//! after every import. Mutations act on the packet's records (entries, blobs, header fields)
//! and the packet is re-encoded by `msite-packet`'s writer, so checksums and entry hashes are
//! valid and the input reaches the protocol's checks rather than the decoder's.

pub mod check;
pub mod family;
pub mod mutate;
