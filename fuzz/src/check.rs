//! The invariants an import must keep, checked after every import of the fuzz target.
//!
//! * The oplog is whole: for every origin of the own row, entries 1..=n are there, each names
//!   its origin and number, its stored bytes hash to the hash it carries (`entries_of`
//!   verifies that), and it links to its predecessor's hash. (Not the hash of the entry
//!   re-encoded from core's model: the model keeps no unused object-reference fields, so an
//!   entry a forged packet carries with them set does not re-encode to its own bytes; core
//!   stores and sends the bytes as received.)
//! * A packet that is not applied (refused, waiting, already applied, unreadable) changes
//!   nothing of the replicated state: the state digest and every other origin's cell of the
//!   own row stay; the own cell may grow only by acknowledgements (`RestoreAck` entries) of a
//!   restore request the packet's sender makes for itself (news about the sender).
//! * An applied packet only adds entries (the importer is never recovering, so it gives none
//!   up), and importing it again does nothing.

use msite_core::testkit::MemStore;
use msite_core::{Hash, ImportOutcome, Op, Replica, ReplicaId, Result, Row};
use msite_packet::wire;

type Rep = Replica<MemStore>;

/// What is compared before and after an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The state digest.
    pub digest: Hash,
    /// The own row.
    pub row: Row,
}

/// Reads what an import may or may not change. Panics if the store cannot be read.
pub fn observe(r: &Rep) -> Observed {
    Observed {
        digest: r.digest().expect("digest of an in-memory store"),
        row: r.own_row().expect("own row of an in-memory store"),
    }
}

/// Checks that the oplog of every origin of the own row is a whole hash chain.
pub fn oplog_whole(r: &Rep) {
    let row = r.own_row().expect("own row");
    for (origin, n) in &row.0 {
        let entries = r.entries_of(origin).expect("oplog of an origin");
        assert_eq!(
            entries.len() as u64,
            *n,
            "own row says {n} entries of {origin:?}, the oplog holds {}",
            entries.len()
        );
        let mut prev = [0u8; 32];
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(e.origin, *origin, "oplog entry {} of another origin", k + 1);
            assert_eq!(e.number, k as u64 + 1, "oplog of {origin:?} has a gap");
            assert_eq!(
                e.prev, prev,
                "hash chain of {origin:?} broken at {}",
                e.number
            );
            prev = e.hash;
        }
    }
}

/// Whether the header carries its sender's own restore request.
fn carries_own_request(h: &wire::Header) -> bool {
    h.controls.iter().any(
        |c| matches!(c, wire::Control::RestoreRequest { replica, .. } if replica.0 == h.sender.0),
    )
}

/// Checks what a packet that was not applied may have changed.
pub fn unchanged(r: &Rep, before: &Observed, h: &wire::Header, what: &str) {
    let after = observe(r);
    let me = r.id();
    assert_eq!(after.digest, before.digest, "{what}, yet the state changed");
    let others = |row: &Row| -> Vec<(ReplicaId, u64)> {
        row.0
            .iter()
            .filter(|(o, n)| **o != me && **n > 0)
            .map(|(o, n)| (*o, *n))
            .collect()
    };
    assert_eq!(
        others(&after.row),
        others(&before.row),
        "{what}, yet it changed the own row"
    );
    let (was, is) = (before.row.get(&me), after.row.get(&me));
    if is == was {
        return;
    }
    assert!(
        is > was && carries_own_request(h),
        "{what}, yet own entries went from {was} to {is}"
    );
    for n in was + 1..=is {
        let e = r.entry(&me, n).expect("own entry").expect("own entry held");
        assert!(
            matches!(e.op, Op::RestoreAck { .. }),
            "{what}, yet it made own entry {n}: {:?}",
            e.op
        );
    }
}

/// Checks an applied import: rows only grew.
pub fn only_grew(before: &Observed, after: &Observed) {
    for (o, n) in &before.row.0 {
        assert!(
            after.row.get(o) >= *n,
            "an applied packet removed entries of {o:?}: {n} -> {}",
            after.row.get(o)
        );
    }
}

/// Checks an import's outcome against the store, given what it was before.
pub fn outcome(r: &Rep, before: &Observed, h: &wire::Header, res: &Result<ImportOutcome>) {
    oplog_whole(r);
    match res {
        Ok(ImportOutcome::Applied { .. }) => only_grew(before, &observe(r)),
        Ok(ImportOutcome::AlreadyApplied) => unchanged(r, before, h, "already applied"),
        Ok(ImportOutcome::Waiting(_)) => unchanged(r, before, h, "the packet waits"),
        Err(e) => unchanged(r, before, h, &format!("refused ({e})")),
    }
}
