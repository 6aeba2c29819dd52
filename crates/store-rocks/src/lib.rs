//! msite's `Store` for rocks. Read `msite_core::store`'s documentation first.
