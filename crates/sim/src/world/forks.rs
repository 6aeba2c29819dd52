//! Forks: the (origin, number) pairs live replicas hold differently, whether an import could
//! have seen them, and the operator's `repairfork` of each.

use std::collections::{BTreeMap, BTreeSet};

use msite_core::{Hash, ReplicaId};
use rand::seq::SliceRandom;
use rand::Rng;

use super::World;
use crate::backend::SimBackend;

impl<B: SimBackend> World<B> {
    /// The operator repairs the forks that keep a lossy schedule from converging, as
    /// docs/protocol.md "Divergence and fork repair" says: for each forked origin, at the first
    /// number where live replicas differ, `msite repairfork` at a replica holding one of the
    /// timelines, keeping it or the other (drawn); then the family heals again and must
    /// converge (the final checks). A third timeline takes another pass.
    pub(super) fn repair_forks(&mut self) {
        for _ in 0..3 {
            if !self.violations.is_empty() || self.lossy.is_empty() {
                return;
            }
            let mut first: BTreeMap<ReplicaId, u64> = BTreeMap::new();
            for (o, k) in self.live_conflicts() {
                let e = first.entry(o).or_insert(k);
                *e = (*e).min(k);
            }
            if first.is_empty() {
                return;
            }
            for (o, k) in first {
                self.repair_one_fork(o, k);
            }
            self.heal();
        }
    }

    /// The operator's procedure for replicas a fork decision stranded (docs/protocol.md,
    /// "Divergence and fork repair", the limit): a replica whose own creation entry the
    /// decision gives up refuses the kept timeline for good, so it is closed (it would be made
    /// again from a site on the kept timeline, a plain `mkreplica`, not modelled), and every
    /// restoration still awaiting it is amended with `--wait-for` the live siblings; then the
    /// family heals and must converge without it.
    pub(super) fn close_stranded_replicas(&mut self) {
        if !self.violations.is_empty() || self.live_conflicts().is_empty() {
            return;
        }
        let stranded: Vec<usize> = self
            .live_sites()
            .into_iter()
            .filter(|&i| self.creation_given_up(i))
            .collect();
        if stranded.is_empty() {
            return;
        }
        let ids: Vec<ReplicaId> = stranded.iter().map(|&i| self.sites[i].id).collect();
        for &i in &stranded {
            self.sites[i].stranded = true;
            self.sites[i].bay.clear();
            // Its operators remove what it sent and nobody imported yet: a closed replica's
            // packets speak for a timeline the family gave up.
            for pool in self.links.values_mut() {
                pool.retain(|p| p.from != i);
            }
            for site in self.sites.iter_mut() {
                site.bay.retain(|p| p.from != i);
            }
            self.stats.stranded_closed += 1;
            self.ev(|w| {
                format!(
                    "operator: {} is stranded (a fork decision gave up its creation): closed for good",
                    w.sites[i].name
                )
            });
        }
        for i in self.live_sites() {
            self.stop_awaiting(i, &ids);
        }
        self.heal_and_repair_forks();
    }

    /// Whether the family's standing fork decisions (the latest made for each forked
    /// number, among those live replicas hold) give up the entry that created site `i`, as
    /// `i` holds it.
    fn creation_given_up(&self, i: usize) -> bool {
        let me = self.sites[i].id;
        let Ok(Some(obj)) = self.rep(i).view().replica(&me) else {
            return false;
        };
        let by = obj.created_by;
        let mut standing: BTreeMap<(ReplicaId, u64), msite_core::ForkDecision> = BTreeMap::new();
        for j in self.live_sites() {
            for d in self.rep(j).fork_decisions().unwrap_or_default() {
                match standing.get(&(d.origin, d.number)) {
                    Some(s) if !d.supersedes(s) => {}
                    _ => {
                        standing.insert((d.origin, d.number), d);
                    }
                }
            }
        }
        standing
            .values()
            .filter(|d| d.origin == by.origin && d.number <= by.number)
            .any(|d| match self.rep(i).entry(&d.origin, d.number) {
                Ok(Some(e)) => d.gives_up(&e.hash),
                _ => false,
            })
    }

    /// `restorereplica --wait-for` at site `i`, when its restoration awaits one of `closed`:
    /// the siblings it awaits but those.
    fn stop_awaiting(&mut self, i: usize, closed: &[ReplicaId]) {
        let Ok(Some(rec)) = self.rep(i).status().map(|s| s.recovering) else {
            return;
        };
        if !rec.awaited.keys().any(|r| closed.contains(r)) {
            return;
        }
        let wait: Vec<ReplicaId> = rec
            .awaited
            .keys()
            .filter(|r| !closed.contains(r))
            .copied()
            .collect();
        let name = self.sites[i].name.clone();
        let named: Vec<String> = wait.iter().map(|r| self.name_of(r)).collect();
        self.ev(|_| {
            format!(
                "operator: restorereplica at {name} --wait-for {}",
                named.join(" ")
            )
        });
        match self.rep(i).restorereplica(&wait, wait.is_empty()) {
            Ok(start) => self.on_restorereplica_started(i, &name, start),
            Err(e) => self.violation(format!("restorereplica --wait-for at {name} failed: {e}")),
        }
    }

    /// Heals the family, then repairs the forks a lossy schedule left (a step of the
    /// operator's procedures after healing: a restore from an old backup can bring a fork
    /// back).
    pub(super) fn heal_and_repair_forks(&mut self) {
        self.heal();
        self.repair_forks();
    }

    /// `msite repairfork --origin o --number k` at a replica drawn among those holding an
    /// entry there, keeping its timeline or the other one (drawn).
    pub(super) fn repair_one_fork(&mut self, o: ReplicaId, k: u64) {
        let holders: Vec<usize> = self
            .live_sites()
            .into_iter()
            .filter(|&i| matches!(self.rep(i).entry(&o, k), Ok(Some(_))))
            .collect();
        let Some(&at) = holders.choose(&mut self.rng) else {
            return;
        };
        let (this, other) = (
            msite_core::KeepTimeline::This,
            msite_core::KeepTimeline::Other,
        );
        let first = if self.rng.gen_bool(0.5) { this } else { other };
        let (on, sn) = (self.name_of(&o), self.sites[at].name.clone());
        let mut last_err = None;
        // A site cannot give up the timeline that created it; told so, the operator keeps it.
        for keep in [first, if first == this { other } else { this }] {
            self.ev(|_| {
                format!("operator: repairfork --origin {on} --number {k} --keep {keep:?} at {sn}")
            });
            match self.rep(at).repair_fork(&o, k, keep) {
                Ok(r) => {
                    self.stats.fork_repairs += 1;
                    self.ev(|_| {
                        format!(
                            "  gave up {} entries here, locked: {}",
                            r.given_up, r.locked
                        )
                    });
                    self.observe(at);
                    return;
                }
                Err(e) => {
                    self.ev(|_| format!("  refused: {e}"));
                    last_err = Some(e);
                }
            }
        }
        if let Some(e) = last_err {
            self.violation(format!("repairfork at {sn} failed both ways: {e}"));
        }
    }

    /// Whether live replicas hold different entries under one number (so the family cannot
    /// converge), every such conflict having been reported by an import.
    pub(super) fn live_conflicts_reported(&mut self) -> bool {
        let live = self.live_conflicts();
        !live.is_empty()
            && !self.lossy.is_empty()
            && live
                .iter()
                .all(|(o, k)| self.reported.contains(o) || !self.fork_exposed(o, *k))
    }

    /// Whether two replicas holding different entries under `(o, k)` ever had a packet
    /// delivered between them. A fork between replicas that never exchange anything (every
    /// path between them is blocked, e.g. by another, reported fork, or by packets that wait
    /// for prerequisites an `--override` lost) is applied nowhere and no import can see it
    /// (K30); once they exchange, it must be reported.
    pub(super) fn fork_exposed(&self, o: &ReplicaId, k: u64) -> bool {
        let held: Vec<(usize, Hash)> = self
            .live_sites()
            .into_iter()
            .filter_map(|i| match self.rep(i).entry(o, k) {
                Ok(Some(e)) => Some((i, e.hash)),
                _ => None,
            })
            .collect();
        held.iter().any(|(i, a)| {
            held.iter().any(|(j, b)| {
                a != b && (self.exchanged.contains(&(*i, *j)) || self.exchanged.contains(&(*j, *i)))
            })
        })
    }

    /// (origin, number) pairs that two live replicas hold with different hashes.
    pub(super) fn live_conflicts(&self) -> Vec<(ReplicaId, u64)> {
        let mut held: BTreeMap<(ReplicaId, u64), Hash> = BTreeMap::new();
        let mut out = BTreeSet::new();
        let ids: Vec<ReplicaId> = self.sites.iter().map(|s| s.id).collect();
        for i in self.live_sites() {
            let r = self.rep(i);
            for o in &ids {
                // A scrubbed prefix still names its last entry by hash (the chain's base).
                let base = r.chain_base(o).ok().flatten();
                let entries = r.entries_of(o).unwrap_or_default();
                let pairs = base
                    .into_iter()
                    .chain(entries.iter().map(|e| (e.number, e.hash)));
                for (number, hash) in pairs {
                    match held.get(&(*o, number)) {
                        Some(h) if *h != hash => {
                            out.insert((*o, number));
                        }
                        Some(_) => {}
                        None => {
                            held.insert((*o, number), hash);
                        }
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}
