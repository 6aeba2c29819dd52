//! The final checks after healing: integrity, live conflicts, convergence, completion and no
//! loss.

use msite_core::{Hash, ReplicaId, Row};

use super::World;
use crate::backend::SimBackend;

impl<B: SimBackend> World<B> {
    /// The checks after healing: every replica's integrity, then live conflicts (allowed only
    /// when reported, in a lossy schedule); unless some remain or a site is behind retention
    /// outside the window, convergence, completion and no loss.
    pub(super) fn final_checks(&mut self) {
        let live = self.live_sites();
        for &i in &live {
            self.check_integrity(i, "at the end");
            self.observe(i);
        }
        let conflicts = self.live_conflicts();
        if !conflicts.is_empty() {
            self.check_live_conflicts(&conflicts);
            return;
        }
        if self.beyond_window {
            self.stats.unconvergeable = 1;
            self.ev(|_| {
                "a site is behind retention, outside the window: convergence and completion not checked".to_string()
            });
            return;
        }
        let rows: Vec<Option<Row>> = live.iter().map(|&i| self.rep(i).own_row().ok()).collect();
        self.check_convergence(&live, &rows);
        for &i in &live {
            self.check_completion(i);
        }
        self.check_no_loss(&rows);
    }

    /// Live replicas holding different entries under one number: a violation in a schedule
    /// that loses nothing; in a lossy one, unless an import reported the origin or the fork
    /// lies between replicas that never exchanged a packet. The schedule is unconvergeable.
    fn check_live_conflicts(&mut self, live: &[(ReplicaId, u64)]) {
        for (o, k) in live {
            let name = self.name_of(o);
            if self.lossy.is_empty() {
                self.violation(format!(
                    "live replicas hold different entries under {name} {k}"
                ));
            } else if !self.reported.contains(o) && self.fork_exposed(o, *k) {
                self.violation(format!("live replicas hold different entries under {name} {k}, and no import reported it"));
            } else if !self.reported.contains(o) {
                self.ev(|_| {
                    format!("fork of {name} {k} between replicas that never exchanged a packet: applied nowhere, seen by no import")
                });
            }
        }
        self.stats.unconvergeable = 1;
        self.ev(|_| {
            "live conflicts (reported): convergence and completion not checked".to_string()
        });
    }

    /// Convergence: every live replica's own row (`rows`, of the sites `live`) equals the
    /// first one's, and so does its state digest.
    fn check_convergence(&mut self, live: &[usize], rows: &[Option<Row>]) {
        let digests: Vec<Option<Hash>> = live.iter().map(|&i| self.rep(i).digest().ok()).collect();
        let first = self.sites[live[0]].name.clone();
        for k in 1..live.len() {
            let other = self.sites[live[k]].name.clone();
            if rows[k] != rows[0] {
                self.violation(format!(
                    "not converged: own rows of {first} and {other} differ"
                ));
            } else if digests[k] != digests[0] {
                self.violation(format!(
                    "not converged: digests of {first} and {other} differ with equal own rows"
                ));
            }
        }
    }

    /// Completion at site `i`: not recovering, not locked, no held restore requests and no
    /// provisional acknowledgements left.
    fn check_completion(&mut self, i: usize) {
        let name = self.sites[i].name.clone();
        match self.rep(i).status() {
            Ok(st) => {
                if st.recovering.is_some() {
                    self.violation(format!("{name} is still recovering after healing"));
                }
                if st.restored || st.rolled_back.is_some() {
                    self.violation(format!("{name} is still locked after healing"));
                }
            }
            Err(e) => self.violation(format!("status at {name} failed: {e}")),
        }
        if !self
            .rep(i)
            .held_requests()
            .map(|v| v.is_empty())
            .unwrap_or(false)
        {
            self.violation(format!("{name} still holds restore requests after healing"));
        }
        if !self
            .rep(i)
            .provisional_acks()
            .map(|v| v.is_empty())
            .unwrap_or(false)
        {
            self.violation(format!(
                "{name} still holds provisional acknowledgements after healing"
            ));
        }
    }

    /// No loss, in a schedule that loses nothing: every entry that reached a sibling and was
    /// not destroyed with every copy is held (the first five missing are reported).
    fn check_no_loss(&mut self, rows: &[Option<Row>]) {
        if self.lossy.is_empty() {
            if let Some(row) = rows[0].clone() {
                let missing: Vec<(ReplicaId, u64)> = self
                    .ledger
                    .reached
                    .keys()
                    .filter(|id| !self.ledger.destroyed.contains(id) && row.get(&id.0) < id.1)
                    .copied()
                    .collect();
                for (o, k) in missing.iter().take(5) {
                    let name = self.name_of(o);
                    self.violation(format!(
                        "lost: {name} {k} reached a sibling but is held nowhere after healing"
                    ));
                }
            }
        }
    }
}
