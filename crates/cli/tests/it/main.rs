//! End-to-end tests of the `msite` binary.
