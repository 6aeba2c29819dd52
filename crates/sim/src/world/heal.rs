//! Healing: after the random phase, every packet in flight is delivered and the family
//! exports along every link, both ways, until nothing moves.

use super::{World, HEAL_ROUNDS};
use crate::backend::SimBackend;

/// The time between two heal rounds: an hour, as scheduled exports would run.
const HEAL_ROUND_MS: u64 = 60 * 60 * 1000;

impl<B: SimBackend> World<B> {
    /// Exports along every link, both ways, until nothing moves (true) or `HEAL_ROUNDS` pass.
    /// A round is the operators' scheduled exports, an hour apart: packets a sibling has not
    /// acknowledged are resent once the resend interval has passed (docs/protocol.md §5),
    /// also while other packets keep moving.
    pub(super) fn heal_rounds(&mut self, first_round: usize) -> bool {
        for round in 0..HEAL_ROUNDS {
            self.step = self.p.steps + 2 + first_round + round;
            if round > 0 {
                self.env.advance(HEAL_ROUND_MS);
            }
            self.follow_retirement();
            self.repair_locked(false);
            let mut moved = false;
            let edges: Vec<(usize, usize)> = self.edges.iter().copied().collect();
            for (a, b) in edges {
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(pkt) = self.export(x, y, false) {
                        moved = true;
                        self.deliver(pkt, false);
                        self.settle_bay(y, false);
                    }
                }
            }
            if !moved {
                return true;
            }
            if self.violations.len() > 20 {
                return false;
            }
        }
        false
    }

    /// Heals the family: a stopped replica whose retirement was lost is started again (and a
    /// restarted one whose retirement came back stopped again), locked replicas get `restorereplica`, every packet in flight and in
    /// the bays is delivered, then heal rounds run until nothing moves, and again a day
    /// later. Not settling is a violation unless live conflicts were reported or a site is
    /// behind retention outside the window.
    pub(super) fn heal(&mut self) {
        self.ev(|_| "---- heal".to_string());
        self.step = self.p.steps + 1;
        self.follow_retirement();
        self.repair_locked(false);
        while let Some(pkt) = self.take_in_flight(false) {
            let to = pkt.to;
            self.deliver(pkt, false);
            self.settle_bay(to, false);
        }
        for i in 0..self.sites.len() {
            self.settle_bay(i, false);
        }
        let mut settled = self.heal_rounds(0);
        if settled {
            // A day passes and the operators' scheduled exports run again: the keepalive
            // (docs/protocol.md) probes links that have been silent that long. It repairs a
            // sibling put back to an older copy that lost only other origins' entries and so
            // has nothing to say (K11).
            self.ev(|_| "---- a day later".to_string());
            self.env.advance(msite_core::keys::DEFAULT_KEEPALIVE_MS + 1);
            settled = self.heal_rounds(HEAL_ROUNDS);
        }
        if self.violations.len() > 20 {
            return;
        }
        // A site behind retention outside the window keeps asking and being refused (the
        // operator re-creates it; the simulator does not).
        if !settled && !self.live_conflicts_reported() && !self.beyond_window {
            self.violation(format!(
                "did not converge: packets still moving after {HEAL_ROUNDS} heal rounds"
            ));
        }
    }
}
