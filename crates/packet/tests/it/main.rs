//! The integration tests of `msite-packet`: one binary (house style), one module per area.

mod common;
mod entry;
mod files;
mod roundtrip;
