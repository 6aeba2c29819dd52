//! Oplog retention in the model (docs/protocol.md §9, core `retain.rs`): scrubbing a prefix
//! of the oplog, the restore window, and what a packet does when its target needs entries
//! its sender no longer keeps.
//!
//! # Abstractions
//! - Time is a global tick ([`crate::State::time`]); the restore window is one tick. A scrub
//!   at tick `t` drops at most what the newest floor record made at tick `t − 1` or earlier
//!   shows, and at most what every sibling acknowledges now (core `origin_scrub`). Within a
//!   tick the model keeps only the latest record, the most a real scrub could use.
//! - The guarantee's premise, as the operator reads it: a site is put back (restore or
//!   snapshot rollback) only from a copy taken in the current tick (younger than the window),
//!   and its restore request reaches every sibling before the window passes. So the clock
//!   does not tick while a replica is put back and has not yet asked, or recovers with a
//!   request some sibling does not hold yet ([`mail_pending`]).
//! - A dropped entry stays in [`crate::Store::log`] as a ghost (the properties compare
//!   identities); [`crate::Store::dropped`] says which prefix the replica no longer has. As in
//!   core, an entry below the chain base has no hash: it is neither compared nor sent.

use crate::{Mutation, Packet, ProtocolModel, Rid, Row, State, Store, N};

/// The refusal of a packet that would wait for entries its sender no longer keeps.
pub const BEHIND_RETENTION: &str = "behind the sender's retention";

impl Store {
    /// Per origin, the least any sibling acknowledges by its own latest report (core
    /// `acknowledged_floor`): a sibling whose restore request is held here, or that never
    /// reported, holds nothing.
    fn acknowledged_floor(&self, me: Rid, by_estimate: bool) -> Row {
        let mut floor = self.own();
        for s in (0..N).filter(|s| *s != me as usize) {
            let acked = match (self.requests[s].is_some(), by_estimate) {
                (true, _) => [0; N],
                (false, true) => self.est[s],
                (false, false) => self.reported[s].unwrap_or([0; N]),
            };
            for o in 0..N {
                floor[o] = floor[o].min(acked[o]);
            }
        }
        floor
    }

    /// The newest floor record made at or before `cutoff`.
    fn floor_at(&self, cutoff: u8) -> Option<Row> {
        self.floors
            .iter()
            .filter(|(at, _)| *at <= cutoff)
            .max_by_key(|(at, _)| *at)
            .map(|(_, row)| *row)
    }

    /// Keeps `row` as the record of tick `now` (replacing an earlier one of the same tick) and
    /// forgets the records older than the newest one a window old (core `record_floor`).
    fn record_floor(&mut self, now: u8, row: Row) {
        let keep_from = now.checked_sub(1).and_then(|c| {
            self.floors
                .iter()
                .filter(|(at, _)| *at <= c)
                .map(|(at, _)| *at)
                .max()
        });
        self.floors
            .retain(|(at, _)| *at != now && keep_from.is_none_or(|from| *at >= from));
        self.floors.push((now, row));
        self.floors.sort();
    }

    /// The export base of `origin` after retention: a base below the chain base starts at it.
    pub(crate) fn clamp_to_retained(&self, base: &mut Row) {
        for o in 0..N {
            base[o] = base[o].max(self.dropped[o]);
        }
    }

    /// Whether a replica holding `row` lacks entries this one scrubbed.
    pub(crate) fn lacks_retained(&self, row: &Row) -> bool {
        (0..N).any(|o| row[o] < self.dropped[o])
    }

    /// Whether the hash of entry `number` of `origin` is still known here (at or above the
    /// chain base); a check against an entry below it is skipped, as in core.
    pub(crate) fn hash_known(&self, origin: Rid, number: u8) -> bool {
        number >= self.dropped[origin as usize]
    }

    /// Takes the sender's report: the row of a packet about our current incarnation.
    pub(crate) fn take_report(&mut self, me: Rid, p: &Packet) {
        if p.target_inc == self.inc[me as usize] {
            self.reported[p.from as usize] = Some(p.sender_row);
        }
    }
}

impl ProtocolModel {
    /// `msite scrub` at `i` under a one-tick window (core `scrub_with_window`).
    pub(crate) fn scrub(&self, s: &mut State, i: Rid) {
        let now = s.time;
        let r = &mut s.reps[i as usize];
        let own = r.own();
        let floor = r.acknowledged_floor(i, self.has(Mutation::ScrubByEstimate));
        let then = match self.has(Mutation::ScrubWithoutWindow) {
            true => Some(floor),
            false => now.checked_sub(1).and_then(|c| r.floor_at(c)),
        };
        for o in 0..N {
            let upto = match then {
                None => 0,
                Some(t) => t[o].min(floor[o]).min(own[o]),
            };
            r.dropped[o] = r.dropped[o].max(upto);
        }
        r.record_floor(now, floor);
    }

    /// Whether `i` may scrub (core `check_scrubbable`: not locked, not recovering).
    pub(crate) fn can_scrub(&self, s: &State, i: Rid) -> bool {
        let r = &s.reps[i as usize];
        s.scrubs < self.bounds.scrubs && !r.is_locked() && r.recovering.is_none()
    }

    /// Whether the window may pass now (see the module docs).
    pub(crate) fn can_tick(&self, s: &State) -> bool {
        s.ticks < self.bounds.ticks && !mail_pending(s)
    }
}

/// A replica put back from a copy has not yet asked its siblings for what it lost, or its
/// restore request has not reached every sibling.
pub fn mail_pending(s: &State) -> bool {
    (0..N).any(|i| {
        let r = &s.reps[i];
        if r.is_locked() || s.undetected_rollback[i] {
            return true;
        }
        let Some(rec) = &r.recovering else {
            return false;
        };
        (0..N).filter(|t| *t != i).any(|t| {
            let sib = &s.reps[t];
            let holds = matches!(sib.requests[i], Some(q) if q.inc >= rec.inc);
            !holds && sib.completed[i] < rec.inc
        })
    })
}

/// Whether a packet's prerequisites are held (core `import`'s step 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prerequisites {
    /// Every base is held.
    Held,
    /// A base is missing: the packet waits (a sibling may still send the entries).
    Wait,
    /// A base is missing and its sender no longer keeps the entries below it: waiting would
    /// be for ever, so the packet is refused (core `behind_senders_retention`).
    BehindRetention,
}

/// The prerequisites of `p` at a replica whose own row is `own`.
pub(crate) fn prerequisites(own: &Row, p: &Packet) -> Prerequisites {
    let mut out = Prerequisites::Held;
    for b in p.bases.iter().flatten() {
        let have = own[b.origin as usize];
        if have < b.number {
            if have < p.retained[b.origin as usize] {
                return Prerequisites::BehindRetention;
            }
            out = Prerequisites::Wait;
        }
    }
    out
}

/// A sibling ever needed entries its sender no longer kept (ghost, set at delivery).
pub fn never_behind(s: &State) -> bool {
    !s.behind
}
