//! `cargo xtask`: msite's build tasks.
fn main() {}
