//! The `msite` command line.
fn main() {}
