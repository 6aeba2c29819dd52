//! The integration tests of `msite-packet`: one binary (house style), one module per area.

mod badinput;
mod common;
mod delta;
mod entry;
mod files;
mod golden;
mod pieces;
mod props;
mod roundtrip;
mod spec;
