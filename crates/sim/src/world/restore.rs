//! Restores: backups put back (`msite restore`, or a snapshot rollback) and the operator's
//! `restorereplica`.

use msite_core::testkit::FaultyStore;
use msite_core::{Env, ReplicaId, RestoreStart};
use rand::Rng;

use super::{env_arc, Mode, Rep, World};
use crate::backend::SimBackend;

impl<B: SimBackend> World<B> {
    /// The backups of site `i` its operator would restore from. With scrubs, the operator
    /// keeps backups for half the restore window: a site restored from one recovers if its
    /// request reaches the siblings within the other half (docs/protocol.md §9).
    pub(super) fn usable_backups(&self, i: usize) -> Vec<usize> {
        let all = 0..self.sites[i].backups.len();
        // (The simulated clock ticks at every reading: read it only when scrubs run, so a
        // schedule without them is the one it was before scrubs existed.)
        let Some(w) = self.p.retain_ms else {
            return all.collect();
        };
        let now = self.env.now_ms();
        all.filter(|&b| self.sites[i].backups[b].at_ms + w / 2 >= now)
            .collect()
    }

    /// Replaces replica `i` by a copy of one of its usable backups (drawn): `Some(mode)` is
    /// `msite restore` (the store is marked restored) followed by `restorereplica` (now or
    /// later), `None` is a snapshot rollback (a copied directory: no mark, no
    /// restorereplica).
    pub(super) fn restore(&mut self, i: usize, mode: Option<Mode>) {
        if self.not_restored(i) {
            return;
        }
        let usable = self.usable_backups(i);
        if usable.is_empty() {
            return;
        }
        let b = usable[self.rng.gen_range(0..usable.len())];
        self.restore_from(i, b, mode);
    }

    /// Replaces replica `i` by a copy of its backup `b`, as [`Self::restore`] says.
    pub(super) fn restore_from(&mut self, i: usize, b: usize, mode: Option<Mode>) {
        let from_step = self.sites[i].backups[b].step;
        if self.p.retain_ms.is_some() {
            self.sites[i].copy_taken_ms = Some(self.sites[i].backups[b].at_ms);
        }
        let Some(rep) = self.open_backup(i, b) else {
            return;
        };
        let name = self.sites[i].name.clone();
        self.remember_incarnations(i);
        self.sites[i].rep = Some(rep);
        self.sites[i].observed = self.rep(i).own_row().unwrap_or_default();
        self.note_restore_before_retirement(i);
        self.retire_forked_entries(i);
        self.sites[i].pending = None;
        self.sites[i].pending_copy = true;
        self.note_destroyed();
        match mode {
            None => {
                self.stats.rollbacks += 1;
                self.sites[i].snapshot_rolled = true;
                self.sites[i].undetected_rollback = true;
                self.ev(|_| {
                    format!("SNAPSHOT ROLLBACK of {name} to its backup of step {from_step}")
                });
            }
            Some(m) => self.mark_and_restorereplica(i, m, &name, from_step),
        }
    }

    /// A replica on a copy of backup `b` of site `i`, with the site's fault plan. A failure
    /// to copy or open it is a violation.
    fn open_backup(&mut self, i: usize, b: usize) -> Option<Rep<B>> {
        let copy = match self.backend.restore(&self.sites[i].backups[b].store) {
            Ok(s) => s,
            Err(e) => {
                self.violation(format!(
                    "restoring the backup of {} failed: {e}",
                    self.sites[i].name
                ));
                return None;
            }
        };
        match msite_core::Replica::open(
            FaultyStore::new(copy, self.sites[i].plan.clone()),
            env_arc(&self.env),
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                self.violation(format!(
                    "opening the backup of {} failed: {e}",
                    self.sites[i].name
                ));
                None
            }
        }
    }

    /// Keeps, for each site, the highest incarnation replica `i` knew before its store is
    /// replaced (a snapshot copy may have forgotten some; K25).
    fn remember_incarnations(&mut self, i: usize) {
        let known_before: Vec<(ReplicaId, u64)> = self
            .sites
            .iter()
            .map(|s| (s.id, self.rep(i).incarnation_of(&s.id).unwrap_or(0)))
            .collect();
        for (id, inc) in known_before {
            let slot = self.sites[i]
                .incarnations_before_rollback
                .entry(id)
                .or_insert(0);
            *slot = (*slot).max(inc);
        }
    }

    /// Records as retired the entries of the copy now at `i` that belong to a timeline the
    /// family left. The copy may hold entries whose numbers their origin used again since (a
    /// restoration that did not recover them): such an entry is retired, not a new conflict,
    /// when it travels on (core gives it up, K13; the final checks see whether it did). Once
    /// the copy's chain of an origin differs from what reached the family, every later entry
    /// of the copy's chain is of that retired timeline too, reached or not.
    fn retire_forked_entries(&mut self, i: usize) {
        let ids: Vec<ReplicaId> = self.sites.iter().map(|s| s.id).collect();
        for o in &ids {
            let mut forked = false;
            for e in self.rep(i).entries_of(o).unwrap_or_default() {
                forked |= matches!(self.ledger.reached.get(&(e.origin, e.number)), Some(h) if *h != e.hash);
                if forked {
                    self.ledger
                        .retired
                        .entry((e.origin, e.number))
                        .or_default()
                        .insert(e.hash);
                }
            }
        }
    }

    /// `msite restore` of site `i` (named `name`, from its backup of `from_step`): the store
    /// is marked restored, and the operator runs `restorereplica` with mode `m` now (seven
    /// times in ten) or later.
    fn mark_and_restorereplica(&mut self, i: usize, m: Mode, name: &str, from_step: usize) {
        self.stats.restores += 1;
        if self.scrubbed_any {
            self.stats.restores_after_scrub += 1;
        }
        self.sites[i].undetected_rollback = false;
        if let Err(e) = self.rep(i).mark_restored() {
            self.violation(format!("mark_restored at {name} failed: {e}"));
        }
        self.ev(|_| format!("RESTORE of {name} from its backup of step {from_step} ({m:?})"));
        if self.rng.gen_bool(0.7) {
            self.run_restorereplica(i, m, true);
        } else {
            self.sites[i].pending = Some(m);
        }
    }

    /// The operator runs `restorereplica` at site `i` in mode `m`, naming the sites it
    /// created that the restored store does not know ([`Self::also_wait_for`]). A crash
    /// leaves it to run again later; otherwise [`Self::on_restorereplica_started`].
    pub(super) fn run_restorereplica(&mut self, i: usize, m: Mode, faults: bool) {
        // The operator leaves out replicas `lsreplica` marks retired (core refuses to await
        // them); a wait-for list left empty by that is the default mode.
        let m = match m {
            Mode::WaitFor(w) => {
                let live: Vec<ReplicaId> = w
                    .into_iter()
                    .filter(|r| !matches!(self.rep(i).retirement(r), Ok(Some(_))))
                    .collect();
                match live.is_empty() {
                    true => Mode::Default,
                    false => Mode::WaitFor(live),
                }
            }
            m => m,
        };
        let (wait, ov) = match &m {
            Mode::Default => (Vec::new(), false),
            Mode::WaitFor(w) => (w.clone(), false),
            Mode::Override => (Vec::new(), true),
        };
        let name = self.sites[i].name.clone();
        // The operator runs a lossy mode: the schedule is lossy from this call on, even if it
        // crashes, since a failing write may still apply (a durable write whose sync failed)
        // and the restart's checks then already see its effect.
        if ov {
            self.stats.overrides += 1;
            self.set_lossy(format!("{name} restored with --override"));
        }
        if !wait.is_empty() {
            self.stats.wait_for += 1;
            self.set_lossy(format!("{name} restored with --wait-for"));
        }
        let also = self.also_wait_for(i, &m, &name);
        match self.mutate(i, "restorereplica", faults, |r| {
            if also.is_empty() {
                r.restorereplica(&wait, ov)
            } else {
                r.restorereplica_also(&also, ov)
            }
        }) {
            None => {
                // Crashed: the operator runs it again later.
                self.sites[i].pending = Some(m);
            }
            Some(Ok(start)) => self.on_restorereplica_started(i, &name, start),
            Some(Err(e)) => self.violation(format!("restorereplica at {name} failed: {e}")),
        }
    }

    /// The documented procedure (PROTOCOL §6.9, docs/protocol.md K3): in default mode the
    /// operator also names, by id, the replicas site `i` created that the restored store does
    /// not list (made after the backup); nothing in the store can tell of them.
    fn also_wait_for(&mut self, i: usize, m: &Mode, name: &str) -> Vec<ReplicaId> {
        let also: Vec<ReplicaId> = if matches!(m, Mode::Default) {
            (0..self.sites.len())
                .filter(|&j| self.sites[j].created_by == Some(i) && !self.sites[j].stranded)
                .map(|j| self.sites[j].id)
                .filter(|id| matches!(self.rep(i).view().replica(id), Ok(None)))
                .collect()
        } else {
            Vec::new()
        };
        if !also.is_empty() {
            self.stats.named_created += 1;
            let named: Vec<String> = also.iter().map(|id| self.name_of(id)).collect();
            self.ev(|_| {
                format!(
                    "operator: restorereplica at {name} --also-wait-for {} (created here after the backup)",
                    named.join(" ")
                )
            });
        }
        also
    }

    /// After `restorereplica` started (or amended) site `i`'s restoration: whether its store
    /// forgot a sibling, whether it amended the recovery a copy recorded, and that its
    /// restore is no longer pending. Amending the restoration recorded in a snapshot put back
    /// without `msite restore` detects nothing: the store still does not know that its
    /// earlier self completed that restoration, and may complete it again under the same
    /// number before a packet shows the rollback (the limit of docs/protocol.md, "snapshot
    /// rollback before detection"; the model keeps the rollback undetected here too; K34).
    pub(super) fn on_restorereplica_started(&mut self, i: usize, name: &str, start: RestoreStart) {
        let me = self.sites[i].id;
        let others: Vec<ReplicaId> = self
            .sites
            .iter()
            .map(|s| s.id)
            .filter(|id| *id != me)
            .collect();
        let forgot = others
            .iter()
            .any(|id| matches!(self.rep(i).view().replica(id), Ok(None)));
        if forgot && !start.amended {
            self.sites[i].forgot_siblings = true;
            self.ev(|_| "its restored store does not know every sibling".to_string());
        }
        let amended_copy = start.amended && self.sites[i].pending_copy;
        if amended_copy {
            self.sites[i].amended_copy = true;
            self.ev(|_| {
                "restorereplica amended the recovery recorded in the backup (same incarnation)"
                    .to_string()
            });
        }
        self.sites[i].pending_copy = false;
        self.sites[i].pending = None;
        if !amended_copy {
            self.sites[i].undetected_rollback = false;
        }
        self.ev(|_| {
            format!(
                "restorereplica at {name}: incarnation {}, awaiting [{}]{}{}",
                start.incarnation,
                start.awaiting.join(", "),
                if start.amended { ", amended" } else { "" },
                if start.completed {
                    ", completed at once"
                } else {
                    ""
                }
            )
        });
        self.observe(i);
    }

    /// The operator runs `restorereplica` where a replica is locked (restored or rolled back).
    pub(super) fn repair_locked(&mut self, faults: bool) {
        for i in 0..self.sites.len() {
            let st = match self.rep(i).status() {
                Ok(s) => s,
                Err(e) => {
                    self.violation(format!("status at {} failed: {e}", self.sites[i].name));
                    continue;
                }
            };
            let pending = self.sites[i].pending.clone();
            if st.restored || st.rolled_back.is_some() || pending.is_some() {
                self.stats.operator_fixes += 1;
                let name = self.sites[i].name.clone();
                self.ev(|_| {
                    format!(
                        "operator: restorereplica at {name} (restored {}, rolled back {:?})",
                        st.restored, st.rolled_back
                    )
                });
                self.run_restorereplica(i, pending.unwrap_or(Mode::Default), faults);
                self.settle_bay(i, faults);
            }
        }
    }
}
