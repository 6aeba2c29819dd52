//! Replica creation both ways (docs/protocol.md §7): each new replica of a schedule is made
//! from the whole history or from a snapshot of the creator's object base, at random, and a
//! damaged snapshot must never become a replica.
//!
//! A creator whose retention dropped entries cannot write a history creation packet; then
//! the snapshot is used, as an operator told so by `msite mkreplica export` would.

use std::sync::Arc;

use msite_core::store::Store;
use msite_core::{CoreError, Env, ExportPlan, Hash, Incoming, Replica, ReplicaId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a new replica is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    /// From every entry (`mkreplica export --history`).
    History,
    /// From the object base as it is (`mkreplica export`, the default).
    Snapshot,
}

/// How the `n`th replica of schedule `seed` is made, and where (if at all) a damaged copy of
/// its snapshot packet is tried first: half the replicas from a snapshot, a fifth of those
/// after a damaged copy. Drawn from a generator of its own, so that the schedule's other
/// draws are those it had before creation had two ways (pinned seeds keep their schedules).
pub fn draw(seed: u64, n: usize) -> (Creation, Option<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x736e_6170_7368_6f74 ^ (n as u64) << 48);
    match rng.gen_bool(0.5) {
        true => (Creation::Snapshot, rng.gen_bool(0.2).then(|| rng.gen())),
        false => (Creation::History, None),
    }
}

/// The creation plan of `name` at `r`, made `how` (a snapshot where the history is gone and
/// `snapshots` allows one); with the way actually used.
pub fn plan<S: Store>(
    r: &Replica<S>,
    name: &str,
    key: &msite_packet::wire::PublicKey,
    how: Creation,
    snapshots: bool,
) -> msite_core::Result<(ExportPlan, Creation)> {
    if how == Creation::History {
        match r.plan_mkreplica(name, key) {
            Err(CoreError::Invalid(m))
                if snapshots && m.contains("make a snapshot creation packet instead") => {}
            other => return other.map(|p| (p, Creation::History)),
        }
    }
    r.plan_mkreplica_snapshot(name, key)
        .map(|p| (p, Creation::Snapshot))
}

/// Makes a replica in `store` from `parts` with one byte of the packet's body changed: the
/// packet layer or the snapshot's own checks must refuse it (the scenarios check that the
/// store left behind says it is an interrupted creation). Returns what went wrong, if anything.
pub fn damaged_copy_is_refused<S: Store>(
    parts: &[Vec<u8>],
    store: S,
    env: Arc<dyn Env>,
    key: &msite_core::SiteKey,
    at: usize,
) -> Option<String> {
    let mut bad = parts.to_vec();
    let last = bad.last_mut()?;
    let body = msite_packet::format::ENVELOPE_LEN;
    let i = body + at % (last.len() - body);
    last[i] ^= 0x5a;
    let made = Incoming::from_parts(bad, "damaged creation packet")
        .and_then(|pkt| Replica::create_from_packet(store, env, pkt, key));
    made.is_ok()
        .then(|| format!("a creation packet with byte {i} changed made a replica"))
}

/// The first entry of `o` to observe at `r` beyond the `observed` ones: the one after the
/// chain base when the base lies above them (a replica made from a snapshot holds the entries
/// up to its base in its object base only), with the base's number and hash to record.
pub fn held_from<S: Store>(
    r: &Replica<S>,
    o: &ReplicaId,
    observed: u64,
) -> (u64, Option<(u64, Hash)>) {
    match r.chain_base(o) {
        Ok(Some((b, h))) if b > observed => (b + 1, Some((b, h))),
        _ => (observed + 1, None),
    }
}

/// Whether a refusal says the importer must give up entries (a forked timeline, or entries a
/// newer restoration retired) but cannot rebuild its object base without the history it was
/// made without (or scrubbed): a replica made from a snapshot cannot undo what its snapshot
/// holds. The operator is told to re-create it; the schedule is then outside what the family
/// can repair by itself (lossy, convergence not checked), which the summary counts as
/// `recreate_needed`.
pub fn needs_recreation(message: &str) -> bool {
    message.contains("that needs its whole oplog")
        && message.contains("re-create it from a fresh creation packet")
}
