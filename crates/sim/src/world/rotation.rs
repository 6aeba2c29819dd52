//! Key rotation in the random phase (docs/protocol.md §8, "Key rotation"): a replica runs
//! `msite rekey` with a packet it signed just before in flight, delivered after the rotation
//! (to the target directly or after the rotation reached it through others), and its operator
//! backs up right after, as `rekey` asks: a backup older than the last rekey holds the
//! rotated-out key, so the operator restores only from backups taken after it.
//!
//! Only profile `rekey` rotates keys: some of its schedules still fail (docs/protocol.md §8,
//! "Not done"), so it is not in the default run.

use rand::seq::SliceRandom;

use super::{is_refusal_of_local_change, World};
use crate::backend::SimBackend;

impl<B: SimBackend> World<B> {
    /// Site `i` sends a packet on one of its links, then runs `rekey`. Whether the rotation
    /// happened is read from the store (a crash may come after its commit); then older backups
    /// are discarded and, when the schedule restores, a new one is taken.
    pub(super) fn rekey(&mut self, i: usize) {
        let outs: Vec<(usize, usize)> = self.links.keys().filter(|l| l.0 == i).copied().collect();
        if let Some(&(a, b)) = outs.choose(&mut self.rng) {
            if let Some(pkt) = self.export(a, b, true) {
                self.send(pkt);
            }
        }
        let id = self.sites[i].id;
        let before = self.rep(i).public_key(&id).ok().flatten();
        let r = self.mutate(i, "rekey", true, |r| r.rekey());
        let after = self.rep(i).public_key(&id).ok().flatten();
        match r {
            Some(Err(e)) if is_refusal_of_local_change(&e) => self.stats.ops_refused += 1,
            Some(Err(e)) => self.violation(format!("{}: rekey failed: {e}", self.sites[i].name)),
            _ => {}
        }
        if after != before {
            self.stats.rotations += 1;
            self.ev(|w| format!("{}: rekey", w.sites[i].name));
            self.sites[i].backups.clear();
            if self.p.restores > 0 {
                self.backup(i);
            }
        }
        self.observe(i);
    }
}
