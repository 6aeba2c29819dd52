//! Diagnosis: the known protocol bugs, and the tags a failing schedule's end state matches.

use msite_core::{ReplicaId, Row};

use super::World;
use crate::backend::SimBackend;

/// Known bugs that core has fixed: their signatures no longer explain a failure.
pub const FIXED_BUGS: &[&str] = &[
    "K1", "K2", "K3", "K4", "K5", "K6", "K7", "K8", "K9", "K10", "K11", "K12", "K13", "K14", "K15",
    "K16",
];

/// Known protocol bugs: tag and one-line diagnosis (docs/testing.md has the details).
pub const KNOWN_BUGS: &[(&str, &str)] = &[
    (
        "K1",
        "FIXED (a7bce56, 1a6bba5, 57f780e): a replica never learned a neighbour's new incarnation; its packets to the restored neighbour were refused as stale forever, and the neighbour's packets that would teach it were refused as stale, waited or were refused as divergent. Every authentic header now teaches the sender's incarnation (stale, waiting, divergent or rolled-back outcome), and stale or waiting ones its own restore request",
    ),
    (
        "K2",
        "FIXED in a7bce56 (export to replicas not yet known): a replica could not export to a neighbour it did not know; with either of them recovering, the request or the acknowledgement never crossed that link",
    ),
    (
        "K3",
        "FIXED (9ca9ab3 headers; b8cc45e: packets name every sibling their sender knows; the case nothing can know is the operator's --also-wait-for, which the simulator's operator performs): a restore completes without waiting for a sibling its restored store does not know (created after the backup) that holds its lost entries, when no packet from it or naming it arrived before the known siblings answered; its next entries reuse their numbers",
    ),
    (
        "K4",
        "FIXED in a7bce56: a replica could not export to (so not acknowledge) a neighbour it did not know yet; when that neighbour's first packet was lost it was never resent",
    ),
    (
        "K5",
        "FIXED in e375191 (amending keeps acks): restorereplica run again while recovering re-added siblings whose flag had cleared; their acknowledgement never came again",
    ),
    (
        "K6",
        "FIXED in a7bce56 (relay entries while two restorations overlap): a recovering replica relayed no entries, so acknowledgements between two overlapping restorations never arrived",
    ),
    (
        "K7",
        "FIXED in e375191 (a restored store starts a new restoration): restorereplica on a store restored from a backup taken while recovering kept that recovery's incarnation, so siblings' estimates stayed too high and their packets waited forever",
    ),
    (
        "K8",
        "FIXED in a7bce56 (restore complete sets the estimate exactly): after --override or a partial --wait-for, a sibling that never saw the request kept a too high estimate of the restored replica and never resent what it lost",
    ),
    (
        "K10",
        "FIXED in 310e9c7 (probe; reports of waiting packets): a lost acknowledgement-only packet and a lost update: the sender resent unacknowledged packets only after the target had reported once, and the target, whose only report was lost, had nothing new to say; neither side ever sent again",
    ),
    (
        "K11",
        "FIXED (3c68987, 28ec197, 8e3297d, 4bff496 keepalive): a sender's newest packet whose report regressed, or whose row lacks what an acknowledged packet brought, lowers the estimate and the acknowledgement state): a snapshot rollback that loses no entry of the replica's own that a sibling holds is never detected (detection looks at own entries only), yet it rolls back sync state: siblings keep too high estimates of it; still open when the rolled-back replica sends no packet numbered above what the sibling saw before",
    ),
    (
        "K13",
        "FIXED (59a4c56, 570e4c3, 4581469, 248c4a4, 8b0c598: a recovering store gives up entries a newer restoration retired; its relays of them are not forks): restoring from a backup older than the replica's previous restoration, when the backup holds own entries that restoration lost (never sent) and renumbered; still seen when another replica the restoration could not know of keeps the retired entries (K3) and reports the fork for ever",
    ),
    (
        "K14",
        "FIXED (d304514; 28ec197, 4581469: a divergent refusal names every origin that differs, at bases and in carried entries): entry-less packets carry bases where the target is known to hold them, so the case below is fixed; still open: a packet refused at its first divergent origin reports only that one, so in lossy schedules a second fork may stay unreported): after --override (or --wait-for) reused numbers, a sibling that held the old entries under them and whose estimate said so never received a packet with entries of that origin, so the fork was never reported (bases travelled only with entries); a restoration awaiting the overriding replica's acknowledgement, numbered in the reused range, never completed",
    ),
    (
        "K15",
        "FIXED in c66d0c0 (estimate set to the sender's row; own restore complete moves to a new incarnation): a snapshot rollback to a copy taken while the replica was recovering revived that recovery; siblings that saw it complete ignored its request and nothing told the replica to move to a newer incarnation, so it never completed",
    ),
    (
        "K12",
        "FIXED in b4ff674: a replica made from a creation packet did not run the entries' protocol effects; it took up a completed restoration's request when a sibling still relayed it, and relayed it forever",
    ),
    (
        "K16",
        "FIXED in 9b3649c: an older restoration's restore complete, applied after a newer request of the same replica, set the estimate to its row, above what the replica held; every packet to it waited for entries it had lost and it never completed",
    ),
    (
        "K9",
        "FIXED in a7bce56 (record an export before writing it): a crash between finishing a packet file and recording the export left a shipped packet whose sequence number the next export reused; an acknowledgement of one covered the other, lost, one, which was never resent",
    ),
];

/// The replicas' statuses at the end of a failing schedule, as diagnosis reads them.
struct EndState {
    st: Vec<Option<msite_core::Status>>,
}

impl EndState {
    /// The incarnation replica `i` is recovering to, if it is recovering.
    fn rec_inc(&self, i: usize) -> Option<u64> {
        self.st[i]
            .as_ref()
            .and_then(|s| s.recovering.as_ref().map(|r| r.incarnation))
    }

    /// Replica `i`'s incarnation (0 when its status could not be read).
    fn inc(&self, i: usize) -> u64 {
        self.st[i].as_ref().map(|s| s.incarnation).unwrap_or(0)
    }

    /// Replica `i`'s restoration in progress, if any.
    fn recovering(&self, i: usize) -> Option<msite_core::Recovering> {
        self.st[i].as_ref().and_then(|s| s.recovering.clone())
    }
}

impl<B: SimBackend> World<B> {
    /// Tags the violations with the known protocol bugs whose signature the end state shows.
    /// Each tag's rule is one step below; a fixed bug's tag becomes a violation of its own.
    pub(super) fn diagnose(&mut self) {
        let n = self.sites.len();
        let end = EndState {
            st: (0..n).map(|i| self.rep(i).status().ok()).collect(),
        };
        self.diagnose_unlearned_restores(&end);
        self.diagnose_cleared_flags(&end);
        // K7: a replica restored from a backup taken while it recovered kept that recovery's
        // incarnation, so its siblings' estimates of it stay too high.
        if self.sites.iter().any(|s| s.amended_copy) {
            self.known.insert("K7");
        }
        let own_rows: Vec<Option<Row>> = (0..n).map(|i| self.rep(i).own_row().ok()).collect();
        if own_rows.iter().any(|r| *r != own_rows[0]) {
            self.diagnose_high_estimates(&end, &own_rows);
        }
        self.diagnose_recovering_origins(&end);
        self.diagnose_unreported_forks();
        self.diagnose_unrelayed_acks(&end);
        self.diagnose_unknown_neighbours(&end);
        self.diagnose_old_incarnations(&end);
        self.report_known_tags();
    }

    /// K1 and K2: a neighbour never learned a recovering replica's restore (its packets to it
    /// are stale); K1 when the replica does not know the neighbour's own newer incarnation
    /// either, K2 when the replica does not know the neighbour at all.
    fn diagnose_unlearned_restores(&mut self, end: &EndState) {
        let edges: Vec<(usize, usize)> = self.edges.iter().copied().collect();
        for (a, b) in edges {
            for (r, nb) in [(a, b), (b, a)] {
                let Some(inc) = end.rec_inc(r) else { continue };
                let nb_knows = self.rep(nb).incarnation_of(&self.sites[r].id).unwrap_or(0);
                if nb_knows >= inc {
                    continue;
                }
                let r_knows_nb =
                    matches!(self.rep(r).view().replica(&self.sites[nb].id), Ok(Some(_)));
                if let Some(nb_inc) = end.rec_inc(nb) {
                    let r_sees = self.rep(r).incarnation_of(&self.sites[nb].id).unwrap_or(0);
                    if r_sees < nb_inc {
                        self.known.insert("K1");
                    }
                }
                if !r_knows_nb {
                    self.known.insert("K2");
                }
            }
        }
    }

    /// K5: a recovering replica awaits a sibling whose acknowledgement of this very
    /// incarnation it already holds (an amend re-added a flag that had been cleared).
    fn diagnose_cleared_flags(&mut self, end: &EndState) {
        for i in 0..end.st.len() {
            let Some(rc) = end.recovering(i) else {
                continue;
            };
            let me = self.sites[i].id;
            for (sib, held) in &rc.awaited {
                if held.is_some() {
                    continue;
                }
                if self.holds_ack_of(i, sib, me, rc.incarnation) {
                    self.known.insert("K5");
                }
            }
        }
    }

    /// Whether replica `at` holds an acknowledgement by `acker` of `replica`'s restoration
    /// `incarnation`.
    fn holds_ack_of(&self, at: usize, acker: &ReplicaId, replica: ReplicaId, inc: u64) -> bool {
        self.rep(at)
            .entries_of(acker)
            .unwrap_or_default()
            .iter()
            .any(|e| {
                matches!(&e.op, msite_core::Op::RestoreAck { replica: r, incarnation, .. }
                if *r == replica && *incarnation == inc)
            })
    }

    /// In a family that did not converge, a replica believes a neighbour holds entries the
    /// neighbour does not hold: K8 when the neighbour is not recovering (an estimate never
    /// rolled back after a restore); K10 when neither recovers and packets to it are still
    /// unacknowledged (the sender waits for a report, and the neighbour, having reported
    /// once, has nothing more to say); K11 when either was rolled back by a snapshot (a
    /// rollback that lost only other origins' entries is never detected, and acknowledgement
    /// state only ever rises).
    fn diagnose_high_estimates(&mut self, end: &EndState, own_rows: &[Option<Row>]) {
        let edges: Vec<(usize, usize)> = self.edges.iter().copied().collect();
        for (a, b) in edges {
            for (x, y) in [(a, b), (b, a)] {
                let unacked = self.rep(x).unacknowledged(&self.sites[y].id).unwrap_or(0);
                let (Ok(est), Some(Some(own))) =
                    (self.rep(x).estimate(&self.sites[y].id), own_rows.get(y))
                else {
                    continue;
                };
                if !est.0.iter().any(|(o, k)| *k > own.get(o)) {
                    continue;
                }
                if end.rec_inc(y).is_none() {
                    self.known.insert("K8");
                }
                if unacked > 0 && end.rec_inc(x).is_none() && end.rec_inc(y).is_none() {
                    self.known.insert("K10");
                }
                if self.sites[y].snapshot_rolled || self.sites[x].snapshot_rolled {
                    self.known.insert("K11");
                }
            }
        }
    }

    /// K13: live replicas hold different entries under a number of a replica that is still
    /// recovering (its backup predates its previous restoration and revived own entries that
    /// restoration had lost and renumbered). K15: a recovering replica whose restoration a
    /// sibling already saw complete (a store put back from a copy of an older recovery): the
    /// sibling ignores its request for ever.
    fn diagnose_recovering_origins(&mut self, end: &EndState) {
        for (o, _) in self.live_conflicts() {
            if let Some(oi) = self.sites.iter().position(|s| s.id == o) {
                if end.rec_inc(oi).is_some() {
                    self.known.insert("K13");
                }
            }
        }
        let n = end.st.len();
        for i in 0..n {
            let Some(rc) = end.recovering(i) else {
                continue;
            };
            let me = self.sites[i].id;
            let seen_complete = (0..n).any(|j| {
                j != i && self.rep(j).completed_incarnation(&me).unwrap_or(0) >= rc.incarnation
            });
            if seen_complete {
                self.known.insert("K15");
            }
        }
    }

    /// K14: live replicas hold different entries under a number (a lossy restore reused it)
    /// and no import ever reported it: no packet carried that origin's entries across.
    fn diagnose_unreported_forks(&mut self) {
        if !self.lossy.is_empty() {
            for (o, _) in self.live_conflicts() {
                if !self.reported.contains(&o) {
                    self.known.insert("K14");
                }
            }
        }
    }

    /// K6: a replica acknowledged a recovering replica's request with a numbered entry, but
    /// the acknowledgement never reached it while another replica recovers too (a recovering
    /// replica's packets carry its request only, so it relays nobody's entries).
    fn diagnose_unrelayed_acks(&mut self, end: &EndState) {
        let n = end.st.len();
        let recovering_count = (0..n).filter(|&i| end.rec_inc(i).is_some()).count();
        if recovering_count < 2 {
            return;
        }
        for i in 0..n {
            let Some(rc) = end.recovering(i) else {
                continue;
            };
            let me = self.sites[i].id;
            for (sib, held) in &rc.awaited {
                let Some(j) = self.sites.iter().position(|s| s.id == *sib) else {
                    continue;
                };
                if held.is_some() || end.rec_inc(j).is_some() {
                    continue;
                }
                if self.holds_ack_of(j, sib, me, rc.incarnation) {
                    self.known.insert("K6");
                }
            }
        }
    }

    /// A replica does not know a linked neighbour: K2 when either of them recovers (the
    /// request or its acknowledgement cannot cross); K4 when neither does and the family did
    /// not converge (it cannot acknowledge that neighbour's packets, and a lost one is never
    /// resent).
    fn diagnose_unknown_neighbours(&mut self, end: &EndState) {
        let n = end.st.len();
        let rows: Vec<Option<Row>> = (0..n).map(|i| self.rep(i).own_row().ok()).collect();
        let diverged = rows.iter().any(|r| *r != rows[0]);
        let edges: Vec<(usize, usize)> = self.edges.iter().copied().collect();
        for (a, b) in edges {
            for (x, y) in [(a, b), (b, a)] {
                let knows = matches!(self.rep(x).view().replica(&self.sites[y].id), Ok(Some(_)));
                let either_recovers = end.rec_inc(x).is_some() || end.rec_inc(y).is_some();
                if !knows && either_recovers {
                    self.known.insert("K2");
                }
                if !knows && !either_recovers && diverged {
                    self.known.insert("K4");
                }
            }
        }
    }

    /// K1 in general: after healing, a replica still does not know a neighbour's current
    /// incarnation (the neighbour restored, whether still recovering or completed).
    fn diagnose_old_incarnations(&mut self, end: &EndState) {
        let edges: Vec<(usize, usize)> = self.edges.iter().copied().collect();
        for (a, b) in edges {
            let a_sees_b = self.rep(a).incarnation_of(&self.sites[b].id).unwrap_or(0);
            let b_sees_a = self.rep(b).incarnation_of(&self.sites[a].id).unwrap_or(0);
            if a_sees_b < end.inc(b) || b_sees_a < end.inc(a) {
                self.known.insert("K1");
            }
        }
    }

    /// Reports each matched tag as a violation line: a fixed bug's symptom explains nothing
    /// (a regression, or a new bug) and its tag is dropped; an open bug's tag stays.
    fn report_known_tags(&mut self) {
        let tags: Vec<&str> = self.known.iter().copied().collect();
        for t in tags {
            let what = KNOWN_BUGS
                .iter()
                .find(|k| k.0 == t)
                .map(|k| k.1)
                .unwrap_or("");
            if FIXED_BUGS.contains(&t) {
                self.known.remove(t);
                self.violations.push(format!(
                    "diagnosis: the symptoms resemble {t}, which is fixed (a regression, or a new bug): {what}"
                ));
            } else {
                self.violations
                    .push(format!("diagnosis: matches open bug {t}: {what}"));
            }
        }
    }
}
