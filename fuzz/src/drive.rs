//! One fuzz input, from bytes to checked imports: what the `import_packet` target runs, and
//! what `examples/outcomes.rs` replays over a corpus to count the outcomes.
//!
//! An input that starts with the packet magic is imported as one raw part. Any other input
//! drives one to three structured packets ([`packet`]), imported in turn into the same copy of
//! the importer's store. Every import is checked ([`crate::check`]); an applied packet is
//! imported a second time, which must do nothing.

use std::sync::Arc;

use arbitrary::Unstructured;
use msite_core::testkit::MemStore;
use msite_core::{Env, ImportOutcome, Incoming, Replica, SimEnv};
use msite_packet::{format::MAGIC, wire, MemPacketWriter, WriteOptions};

use crate::check;
use crate::family::{Family, IMPORT_SEED};
use crate::mutate::{mutate, rechain};

/// What became of one import, for counting.
pub type Outcome = msite_core::Result<ImportOutcome>;

/// Runs one input against a fresh copy of the importer; `seen` is told every import's outcome.
pub fn run(f: &Family, data: &[u8], seen: &mut dyn FnMut(&Outcome)) {
    let env: Arc<dyn Env> = Arc::new(SimEnv::new(IMPORT_SEED));
    let r = Replica::open(f.importer.deep_copy(), env).expect("open the importer");
    if data.starts_with(&MAGIC) {
        import(&r, vec![data.to_vec()], seen);
        return;
    }
    let mut u = Unstructured::new(data);
    for _ in 0..u.int_in_range(1u8..=3).unwrap_or(1) {
        match packet(&mut u, f) {
            Ok(parts) => import(&r, parts, seen),
            Err(_) => return,
        }
    }
}

/// One packet built from the input: a family packet, mutated, encoded again.
pub fn packet(u: &mut Unstructured<'_>, f: &Family) -> arbitrary::Result<Vec<Vec<u8>>> {
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
    // Mostly signed again by the sender (a relay's forgery, or an honest sender's odd packet):
    // then the mutation meets the checks behind the signature; otherwise the signature's own.
    if !u.ratio(1u8, 4)? {
        f.resign(&mut p);
    }
    let mut opts = WriteOptions::new(p.packet_id);
    opts.minor = msite_packet::format::FORMAT_MINOR;
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
fn import(r: &Replica<MemStore>, parts: Vec<Vec<u8>>, seen: &mut dyn FnMut(&Outcome)) {
    let Ok(inc) = Incoming::from_parts(parts.clone(), "fuzz input") else {
        return;
    };
    let h = inc.header.clone();
    let before = check::observe(r);
    let res = r.import(inc);
    check::outcome(r, &before, &h, &res);
    seen(&res);
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
