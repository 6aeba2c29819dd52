//! The simulator's ledgers of entries, for the "no reuse" and "no loss" invariants.
//!
//! * `reached`: every entry that ever reached a replica other than its origin, with its hash.
//!   A replica that later holds a *different* entry under the same `(origin, number)` shows a
//!   *conflict* (a reused number). An entry that never left its origin and was thrown away by
//!   a restore of its origin is not in the ledger: its number is reused by the origin's next
//!   entry, unavoidably and invisibly (no replica ever held both), and PROTOCOL §8 does not
//!   count it as loss either ("every entry that reached any replica other than its origin").
//!   A packet still in flight that carries such an entry is caught when it is applied (then
//!   the entry has reached a sibling) or refused by the hash chains.
//! * `destroyed`: reached entries whose every copy a restore or rollback threw away (several
//!   replicas restored to backups older than the entry): no protocol can bring those back, so
//!   they are exempt from "no loss" (and counted), and their origin may reuse their numbers
//!   (no live replica can hold both entries).

use std::collections::{BTreeMap, BTreeSet};

use msite_core::{Hash, ReplicaId};

/// An entry's id.
pub type EntryId = (ReplicaId, u64);

/// The ledgers.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Entries that reached a replica other than their origin.
    pub reached: BTreeMap<EntryId, Hash>,
    /// Entry ids that named two different entries, with both hashes.
    pub conflicts: BTreeMap<EntryId, (Hash, Hash)>,
    /// Reached entries whose every copy was thrown away by restores.
    pub destroyed: BTreeSet<EntryId>,
    /// Entries whose number their origin used again after every copy was destroyed, by hash:
    /// a copy revived from an older backup is not a new conflict (the restoration that reused
    /// the number retired it; core gives it up, K13), but it must be gone when the family
    /// settles, which the final convergence check sees.
    pub retired: BTreeMap<EntryId, BTreeSet<Hash>>,
    /// Destroyed entries that a replica held again afterwards (a packet in flight carried
    /// them).
    pub resurfaced: BTreeSet<EntryId>,
}

impl Ledger {
    /// Records that a replica (`holder`) holds entry `id` with `hash`. Returns the other hash
    /// if this reuses a number.
    pub fn record(&mut self, holder: ReplicaId, id: EntryId, hash: Hash) -> Option<Hash> {
        match self.reached.get(&id) {
            Some(h) if *h != hash && self.destroyed.contains(&id) => {
                // Every copy of the old entry was thrown away by restores of several replicas
                // before any replica held this one: its origin reused the number unavoidably,
                // and no replica can hold both. The new entry is live: from now on it is the
                // one that must not be lost, and a third entry under the number is a conflict.
                self.retired.entry(id).or_default().insert(*h);
                self.destroyed.remove(&id);
                self.reached.insert(id, hash);
                None
            }
            Some(h)
                if *h != hash
                    && self
                        .retired
                        .get(&id)
                        .is_some_and(|r| r.contains(h) && !r.contains(&hash)) =>
            {
                // The entry recorded as reached was retired since: the newer timeline's entry
                // under the number is the live one.
                self.reached.insert(id, hash);
                None
            }
            Some(h) if *h != hash && self.retired.get(&id).is_some_and(|r| r.contains(&hash)) => {
                // A retired entry, revived by a restore from a backup older than the
                // restoration that retired it.
                None
            }
            Some(h) if *h != hash => {
                self.conflicts.entry(id).or_insert((*h, hash));
                Some(*h)
            }
            Some(_) => None,
            // A retired entry revived from an older backup never counts as reached: the family
            // gives it up (K13), and the number belongs to the newer timeline.
            None if self.retired.get(&id).is_some_and(|r| r.contains(&hash)) => None,
            None => {
                if holder != id.0 {
                    self.reached.insert(id, hash);
                }
                None
            }
        }
    }
}
