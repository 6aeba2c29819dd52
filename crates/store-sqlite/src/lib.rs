//! msite's `Store` for sqlite. Read `msite_core::store`'s documentation first.
