//! Support for the `import_packet` fuzz target: a small family of in-memory replicas built
//! deterministically ([`family`]), structured mutations of the real packets it exchanges
//! ([`mutate`]), the invariants an import must keep ([`check`]), and one input run from bytes
//! to checked imports ([`drive`]).
//!
//! The target imports mutated packets into a copy of one replica's store and checks the store
//! after every import. Mutations act on the packet's records (entries, blobs, header fields)
//! and the packet is re-encoded by `msite-packet`'s writer, so checksums and entry hashes are
//! valid and the input reaches the protocol's checks rather than the decoder's.

pub mod check;
pub mod drive;
pub mod family;
pub mod mutate;
