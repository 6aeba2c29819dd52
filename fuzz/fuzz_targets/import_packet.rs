//! Fuzz target: importing any packet into a replica keeps the store's invariants.
//!
//! The importer is replica `c` of a small in-memory family (see `msite_fuzz::family`). An
//! input that starts with the packet magic is imported as one raw part (the envelope and
//! framing mode); any other input drives structured mutations (`msite_fuzz::mutate`) of the
//! family's real packets, one to three of them imported in turn into the same store, each
//! re-encoded by msite-packet's writer so that its checksums and hashes are valid
//! (`msite_fuzz::drive`). After every import the checks of `msite_fuzz::check` run: the oplog
//! is a whole hash chain, a packet not applied changes nothing but news about its sender, an
//! applied one only adds entries and importing it again does nothing.
//!
//! With `MSITE_FUZZ_WRITE_SEEDS=DIR` in the environment the target writes its seed corpus (the
//! family's real packets and a few structured inputs) into DIR and exits.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use msite_fuzz::family::{self, Family};

fn family() -> &'static Family {
    static FAMILY: OnceLock<Family> = OnceLock::new();
    FAMILY.get_or_init(|| family::build().expect("the fuzz family builds"))
}

fuzz_target!(
    init: {
        if let Ok(dir) = std::env::var("MSITE_FUZZ_WRITE_SEEDS") {
            family().write_seeds(std::path::Path::new(&dir)).expect("write the seeds");
            std::process::exit(0);
        }
        family();
    },
    |data: &[u8]| msite_fuzz::drive::run(family(), data, &mut |_| {})
);
