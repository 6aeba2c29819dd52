//! `msite-packet`: the versioned wire format of msite's update and replica-creation packets.
//! It encodes and decodes; it knows nothing of storage. The format is specified in `SPEC.md`.
#![deny(missing_docs)]

pub mod wire;
