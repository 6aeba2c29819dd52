//! Fuzz target: importing any packet into a replica keeps the store's invariants.
//!
//! The importer is replica `c` of a small in-memory family (see `msite_fuzz::family`). An
//! input that starts with the packet magic is imported as one raw part (the envelope and
//! framing mode); any other input drives structured mutations (`msite_fuzz::mutate`) of the
//! family's real packets, one to three of them imported in turn into the same store, each
//! re-encoded by msite-packet's writer so that its checksums and hashes are valid. After every
//! import the checks of `msite_fuzz::check` run: the oplog is a whole hash chain, a packet not
//! applied changes nothing but news about its sender, an applied one only adds entries and
//! importing it again does nothing.
//!
//! With `MSITE_FUZZ_WRITE_SEEDS=DIR` in the environment the target writes its seed corpus (the
//! family's real packets and a few structured inputs) into DIR and exits.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::arbitrary::{self, Unstructured};
use libfuzzer_sys::fuzz_target;
use msite_core::testkit::MemStore;
use msite_core::{Env, ImportOutcome, Incoming, Replica, SimEnv};
use msite_fuzz::check;
use msite_fuzz::family::{self, Family};
use msite_fuzz::mutate::{mutate, rechain};
use msite_packet::{format::MAGIC, wire, MemPacketWriter, WriteOptions};

fn family() -> &'static Family {
    static FAMILY: OnceLock<Family> = OnceLock::new();
    FAMILY.get_or_init(|| family::build().expect("the fuzz family builds"))
}

fn write_seeds(dir: &str) {
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir).expect("seed directory");
    for (i, p) in family().raw.iter().enumerate() {
        std::fs::write(dir.join(format!("packet-{}.msp", i + 1)), p).expect("write seed");
    }
    // Structured inputs: the three packets in turn, then p3 before p1 (p3 waits).
    let structured: [&[u8]; 2] = [&[2, 0, 0, 0, 1, 0, 0, 2, 0, 0], &[1, 2, 0, 0, 0, 0, 0]];
    for (i, s) in structured.iter().enumerate() {
        std::fs::write(dir.join(format!("structured-{}", i + 1)), s).expect("write seed");
    }
}

/// One packet built from the input: a family packet, mutated, encoded again.
fn packet(u: &mut Unstructured<'_>, f: &Family) -> arbitrary::Result<Vec<Vec<u8>>> {
    let mut p = u.choose(&f.packets)?.clone();
    for _ in 0..u.int_in_range(0u8..=6)? {
        mutate(u, &mut p, f)?;
    }
    if u.arbitrary()? {
        rechain(&mut p);
    }
    if u.ratio(1u8, 4)? {
        p.packet_id = wire::Id(u.arbitrary()?);
    }
    let mut opts = WriteOptions::new(p.packet_id);
    opts.zstd_level = 0;
    opts.chunk_size = u.int_in_range(64usize..=4096)?;
    if u.ratio(1u8, 4)? {
        opts.max_part_size = Some(u.int_in_range(256u64..=4096)?);
    }
    let encode = || -> Result<Vec<Vec<u8>>, msite_packet::EncodeError> {
        let mut w = MemPacketWriter::new(p.kind, &p.header, opts)?;
        for r in &p.records {
            w.push_record(r)?;
        }
        Ok(w.finish()?.0)
    };
    encode().map_err(|_| arbitrary::Error::IncorrectFormat)
}

/// Imports one packet and checks the store; an applied packet is imported a second time.
fn import(r: &Replica<MemStore>, parts: Vec<Vec<u8>>) {
    let Ok(inc) = Incoming::from_parts(parts.clone(), "fuzz input") else {
        return;
    };
    let h = inc.header.clone();
    let before = check::observe(r);
    let res = r.import(inc);
    check::outcome(r, &before, &h, &res);
    if !matches!(res, Ok(ImportOutcome::Applied { .. })) {
        return;
    }
    let st = r.status().expect("status");
    let before = check::observe(r);
    let inc = Incoming::from_parts(parts, "fuzz input again").expect("it was read once");
    let again = r.import(inc);
    check::outcome(r, &before, &h, &again);
    if !st.restored && st.rolled_back.is_none() {
        assert!(
            matches!(again, Ok(ImportOutcome::AlreadyApplied)),
            "an applied packet imported again: {again:?}"
        );
    }
}

fuzz_target!(
    init: {
        if let Ok(dir) = std::env::var("MSITE_FUZZ_WRITE_SEEDS") {
            write_seeds(&dir);
            std::process::exit(0);
        }
        family();
    },
    |data: &[u8]| {
        let f = family();
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(family::IMPORT_SEED));
        let r = Replica::open(f.importer.deep_copy(), env).expect("open the importer");
        if data.starts_with(&MAGIC) {
            import(&r, vec![data.to_vec()]);
            return;
        }
        let mut u = Unstructured::new(data);
        for _ in 0..u.int_in_range(1u8..=3).unwrap_or(1) {
            match packet(&mut u, f) {
                Ok(parts) => import(&r, parts),
                Err(_) => return,
            }
        }
    }
);
