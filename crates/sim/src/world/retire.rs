//! Retiring a replica for good (docs/protocol.md §10): the operator's procedure, its refusals,
//! the shut-down replica's stale packets, and the final checks of what retirement promises.
//!
//! A schedule may close one replica (drawn from its own generator, so a schedule that retires
//! nobody is the one it was before retirement existed). From the drawn step on, the closing
//! replica makes no local change and is neither restored nor a creator; it still exports and
//! imports, so that its last packets reach the family, and its neighbours are linked to each
//! other. Its operator hands its own replica object to a live sibling if it masters it (only
//! that object's master may retire it), and may try to retire it there itself (refused while
//! it masters anything else; then the master of its replica object does it). The retiring
//! replica runs `rmreplica` only once it holds every entry the closing one made, or when a
//! sibling's report says it holds more than the retiring replica (the refusal is then due).
//! Retired by another, the replica stops at once (no packet in or out); retired by itself, it
//! keeps exchanging packets (it numbers nothing more). The operator follows what the
//! survivors hold of the retirement: a stopped replica whose retirement they all lost runs
//! again until retired anew, and stops again if the retirement comes back. It is shut down once
//! every survivor holds the retirement: packets for it are dropped,
//! its packets in flight still arrive, and what only it held is gone with it. The master of
//! its replica object takes over what it mastered (`chmaster --all --from`, refused before
//! the retirement), and a survivor may be restored from a copy that does not know the
//! retirement. After healing (and fork repair), the operator finishes a retirement still under
//! way, takes over again what handovers in flight gave the retired replica, moves one
//! taken-over object on, and the family heals again; the final checks then see that every
//! survivor forgot the replica (no sibling, no estimate row, retention not held back by it),
//! that nothing is mastered by it any more, and that the moved object moved everywhere.

use msite_core::retain::Kept;
use msite_core::{CoreError, ObjectRef, ReplicaId};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Mode, World};
use crate::backend::SimBackend;

/// Where a schedule's retirement stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Nobody closed yet.
    Planned,
    /// Closed: no local changes, still exchanging packets until it is retired.
    Draining,
    /// Retired itself (it numbers nothing any more): still exchanging packets until a
    /// survivor holds the retirement.
    SelfRetired,
    /// Retired by the master of its replica object: stopped (no packet in or out), and kept
    /// until every survivor holds the retirement; started again (back to `Draining`) if the
    /// survivors lose it ([`World::follow_retirement`]).
    Retired,
    /// Retired and shut down.
    Gone,
}

/// A schedule's retirement: whether and when it closes a replica, and what happened since.
pub(super) struct Retire {
    rng: ChaCha8Rng,
    /// The step from which a replica closes (None: this schedule retires nobody).
    close_at: Option<usize>,
    site: Option<usize>,
    stage: Stage,
    /// The step at which the replica was shut down.
    gone_at: usize,
    /// The master of the replica object has still to take over what it masters.
    takeover_pending: bool,
    /// The site that retired it (or, after a lost retirement came back, one that holds it).
    by: Option<usize>,
    /// A survivor the operator restored from a backup older than the shut-down.
    restored_survivor: Option<usize>,
    /// The retirement could not be finished in a lossy schedule (checks skipped).
    abandoned: bool,
    /// The objects taken over from the retired replica.
    taken: Vec<ObjectRef>,
    /// A taken-over object the operator moved on after healing, and its new master.
    moved: Option<(ObjectRef, ReplicaId)>,
}

impl Retire {
    /// Draws whether a schedule of `steps` steps closes a replica (four in ten, when
    /// `enabled`: profile `retire`), and from which step (in its first two thirds).
    pub(super) fn draw(seed: u64, steps: usize, enabled: bool) -> Retire {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7e71_2e5e_a1b0_c0de);
        let close_at = rng
            .gen_bool(0.4)
            .then(|| rng.gen_range(0..=steps * 2 / 3))
            .filter(|_| enabled);
        Retire {
            rng,
            close_at,
            site: None,
            stage: Stage::Planned,
            gone_at: 0,
            takeover_pending: false,
            by: None,
            restored_survivor: None,
            abandoned: false,
            taken: Vec::new(),
            moved: None,
        }
    }
}

impl<B: SimBackend> World<B> {
    /// Whether site `i` is closing or closed for good (it makes no local change, is not
    /// restored and creates no replica).
    pub(super) fn closing(&self, i: usize) -> bool {
        self.retire.site == Some(i) && self.retire.stage != Stage::Planned
    }

    /// Whether site `i` is not to be restored: it is closing. Its retirer may be restored
    /// (and lose the retirement: the stopped replica then runs again,
    /// [`Self::follow_retirement`]).
    pub(super) fn not_restored(&self, i: usize) -> bool {
        self.closing(i)
    }

    /// Whether site `i` was retired and stopped or shut down, or closed as stranded by a fork
    /// decision (it exports and imports nothing, and is no survivor).
    pub(super) fn gone(&self, i: usize) -> bool {
        self.sites[i].stranded
            || (self.retire.site == Some(i)
                && matches!(self.retire.stage, Stage::Retired | Stage::Gone))
    }

    /// The sites still running.
    pub(super) fn live_sites(&self) -> Vec<usize> {
        (0..self.sites.len()).filter(|&i| !self.gone(i)).collect()
    }

    /// Whether `a` knows `b` is retired (export to it is then refused, and not attempted).
    pub(super) fn knows_retired(&self, a: usize, b: usize) -> bool {
        matches!(self.rep(a).retirement(&self.sites[b].id), Ok(Some(_)))
    }

    /// A survivor `i` just put back to a copy that does not know the retirement is counted.
    pub(super) fn note_restore_before_retirement(&mut self, i: usize) {
        let retired = matches!(
            self.retire.stage,
            Stage::Retired | Stage::SelfRetired | Stage::Gone
        );
        if let Some(v) = self.retire.site.filter(|&v| retired && v != i) {
            if !self.knows_retired(i, v) {
                self.stats.restores_before_retirement += 1;
            }
        }
    }

    /// The retirement's part of a random step: closing a replica at the drawn step, then the
    /// operators' next move, drawn.
    pub(super) fn retire_step(&mut self) {
        match self.retire.stage {
            Stage::Planned => {
                if self.retire.close_at.is_some_and(|s| self.step >= s) {
                    self.close_a_replica();
                }
            }
            Stage::Draining => {
                if self.follow_retirement() {
                    return;
                }
                self.hand_on_own_object(true);
                if self.retire.rng.gen_bool(0.3) {
                    self.try_rmreplica(true);
                }
            }
            Stage::SelfRetired | Stage::Retired => {
                if self.follow_retirement() {
                    return;
                }
                self.shut_down_if_heard();
                self.take_over_if_pending();
            }
            Stage::Gone => {
                self.take_over_if_pending();
                if self.p.restores > 0 && self.retire.rng.gen_bool(0.05) {
                    self.restore_before_retirement();
                }
            }
        }
    }

    /// Closes a replica drawn among those that are not recovering nor locked, when at least
    /// two others remain: its operator hands on its replica object, may try `chmaster --all
    /// --from` too early at a sibling, and may try to retire it from itself.
    fn close_a_replica(&mut self) {
        let n = self.sites.len();
        let clean = |w: &Self, i: usize| {
            let s = &w.sites[i];
            s.pending.is_none()
                && !s.pending_copy
                && !s.snapshot_rolled
                && matches!(w.rep(i).status(), Ok(st) if st.recovering.is_none() && !st.restored && st.rolled_back.is_none())
        };
        let candidates: Vec<usize> = (0..n).filter(|&i| clean(self, i)).collect();
        if n < 3 {
            return;
        }
        let Some(&v) = candidates.choose(&mut self.retire.rng) else {
            return;
        };
        self.retire.site = Some(v);
        self.retire.stage = Stage::Draining;
        self.ev(|w| format!("operator: {} is closed for good", w.sites[v].name));
        self.link_neighbours(v);
        self.hand_on_own_object(true);
        if self.retire.rng.gen_bool(0.5) {
            self.takeover_too_early();
        }
        if self.retire.rng.gen_bool(0.5) {
            self.try_self_retirement();
        }
    }

    /// A live site other than the closing one, drawn.
    fn other_live_site(&mut self) -> Option<usize> {
        let v = self.retire.site;
        let others: Vec<usize> = self
            .live_sites()
            .into_iter()
            .filter(|&i| Some(i) != v)
            .collect();
        others.choose(&mut self.retire.rng).copied()
    }

    /// The closing replica's operator hands its own replica object to a live sibling when it
    /// masters it: only that object's master may retire it, and a retired replica can hand
    /// nothing on.
    fn hand_on_own_object(&mut self, faults: bool) {
        let Some(v) = self.retire.site else { return };
        if !self.masters_own_object(v) || self.retire.stage != Stage::Draining {
            return;
        }
        let Some(to) = self.other_live_site() else {
            return;
        };
        if self
            .rep(v)
            .view()
            .replica_by_name(&self.sites[to].name)
            .is_err()
        {
            return;
        }
        let (sel, tn) = (
            format!("replica:{}", self.sites[v].name),
            self.sites[to].name.clone(),
        );
        match self.mutate(v, "chmaster", faults, |r| r.chmaster(&sel, &tn)) {
            None => {}
            Some(Ok(())) => self.ev(|_| format!("operator: chmaster {sel} -> {tn}")),
            Some(Err(e)) => self.violation(format!("chmaster {sel} -> {tn} failed: {e}")),
        }
        self.observe(v);
    }

    /// Whether site `v` masters its own replica object, by its own view.
    fn masters_own_object(&self, v: usize) -> bool {
        let me = self.sites[v].id;
        matches!(self.rep(v).view().master_of(&ObjectRef::Replica(me)), Ok(m) if m == me)
    }

    /// `chmaster --all --from` at a live sibling before the closing replica is retired there:
    /// refused (not retired, or not the master of its replica object).
    fn takeover_too_early(&mut self) {
        let (Some(v), Some(at)) = (self.retire.site, self.other_live_site()) else {
            return;
        };
        if self.knows_retired(at, v) {
            return;
        }
        let vn = self.sites[v].name.clone();
        match self.mutate(at, "chmaster --all --from", true, |r| {
            r.chmaster_all_from(&vn)
        }) {
            None => {}
            Some(Err(
                CoreError::Invalid(_) | CoreError::NotMaster { .. } | CoreError::NotFound(_),
            )) => {
                self.stats.takeover_refused += 1;
                self.ev(|w| {
                    format!(
                        "chmaster --all --from {vn} at {}: refused",
                        w.sites[at].name
                    )
                });
            }
            Some(Err(CoreError::Locked(_))) => {}
            Some(r) => self.violation(format!(
                "chmaster --all --from {vn} at {} before its retirement: {r:?}",
                self.sites[at].name
            )),
        }
    }

    /// `rmreplica` of the closing replica at itself: refused while it masters objects other
    /// than its own replica object (it then waits for the master of that object).
    fn try_self_retirement(&mut self) {
        let Some(v) = self.retire.site else { return };
        if self.masters_own_object(v) {
            return;
        }
        let me = self.sites[v].id;
        let vn = self.sites[v].name.clone();
        let masters_others = match self.rep(v).view().mastered_by(&me) {
            Ok(objs) => objs.iter().any(|o| *o != ObjectRef::Replica(me)),
            Err(_) => return,
        };
        let mut res = self.mutate(v, "rmreplica", true, |r| r.rmreplica(&vn));
        if res.is_none() {
            // A crash after the entry was written still retired it.
            res = self.retirement_after_crash(v, v);
        }
        match res {
            None => {}
            Some(Ok(_)) if !masters_others => {
                self.stats.retirements += 1;
                self.stats.self_retirements += 1;
                self.retire.stage = Stage::SelfRetired;
                self.ev(|_| format!("operator: rmreplica {vn} at {vn} itself"));
            }
            Some(Err(CoreError::Invalid(m))) if masters_others && m.contains("still masters") => {
                self.stats.rm_refused_masters += 1;
                self.ev(|_| format!("rmreplica {vn} at {vn}: refused: {m}"));
            }
            Some(r) => self.violation(format!(
                "rmreplica {vn} at itself (masters others: {masters_others}): {r:?}"
            )),
        }
        self.observe(v);
    }

    /// After a crash during `rmreplica` of `v` at `at`: the retirement, if the entry was
    /// written before the crash (the command then did its work).
    fn retirement_after_crash(
        &self,
        at: usize,
        v: usize,
    ) -> Option<Result<msite_core::retire::Retirement, CoreError>> {
        let r = self.rep(at).retirement(&self.sites[v].id).ok().flatten()?;
        (r.by.origin == self.sites[at].id).then_some(Ok(r))
    }

    /// The live site that, by its own view, masters the closing replica's replica object.
    fn retirer(&self) -> Option<usize> {
        let v = self.retire.site?;
        let obj = ObjectRef::Replica(self.sites[v].id);
        self.live_sites().into_iter().find(|&i| {
            i != v && matches!(self.rep(i).view().master_of(&obj), Ok(m) if m == self.sites[i].id)
        })
    }

    /// The most of replica `v`'s entries a sibling's latest report at `r` says it holds.
    fn most_reported(&self, r: usize, v: usize) -> u64 {
        let vid = self.sites[v].id;
        self.sites
            .iter()
            .filter_map(|s| self.rep(r).reported_row(&s.id).ok().flatten())
            .map(|row| row.get(&vid))
            .max()
            .unwrap_or(0)
    }

    /// The master of the closing replica's replica object runs `rmreplica` when it holds every
    /// entry the closing replica made (then it must succeed, with that `last`), or when a
    /// sibling's report says it holds more than the retirer (then it must be refused).
    /// Returns whether the replica was retired.
    fn try_rmreplica(&mut self, faults: bool) -> bool {
        let (Some(v), Some(r)) = (self.retire.site, self.retirer()) else {
            return false;
        };
        let vid = self.sites[v].id;
        let made = self.rep(v).own_row().map(|x| x.get(&vid)).unwrap_or(0);
        let held = self.rep(r).own_row().map(|x| x.get(&vid)).unwrap_or(0);
        let reported = self.most_reported(r, v);
        let due_refusal = held < made && reported > held;
        if held < made && !due_refusal {
            return false;
        }
        let (vn, rn) = (self.sites[v].name.clone(), self.sites[r].name.clone());
        let mut res = self.mutate(r, "rmreplica", faults, |x| x.rmreplica(&vn));
        if res.is_none() {
            res = self.retirement_after_crash(r, v);
        }
        self.observe(r);
        match res {
            None | Some(Err(CoreError::Locked(_))) => false,
            Some(Err(CoreError::Invalid(m)))
                if due_refusal && m.contains("import its packets first") =>
            {
                self.stats.rm_refused_behind += 1;
                self.ev(|_| format!("rmreplica {vn} at {rn}: refused: {m}"));
                false
            }
            Some(Ok(ret)) if !due_refusal => {
                if ret.last != made {
                    self.violation(format!(
                        "rmreplica {vn} at {rn} keeps its entries up to {}, but it made {made}",
                        ret.last
                    ));
                }
                self.stats.retirements += 1;
                self.ev(|_| format!("operator: rmreplica {vn} at {rn} (last {})", ret.last));
                if self.retire.stage == Stage::Draining {
                    self.retire.stage = Stage::Retired;
                    self.retire.by = Some(r);
                }
                self.retire.takeover_pending = true;
                true
            }
            Some(r) => {
                self.violation(format!(
                    "rmreplica {vn} at {rn} (holds {held}, it made {made}, reported {reported}): {r:?}"
                ));
                false
            }
        }
    }

    /// The master of the retired replica's replica object takes over what it masters, at a
    /// drawn moment, until it did.
    fn take_over_if_pending(&mut self) {
        if self.retire.takeover_pending && self.retire.rng.gen_bool(0.5) {
            self.take_over(true);
        }
    }

    /// A retired replica is shut down once every survivor holds the retirement and everything
    /// the replica made: a restore of one survivor from an older backup then cannot lose the
    /// retirement with every copy (the others give it back).
    fn shut_down_if_heard(&mut self) {
        let Some(v) = self.retire.site else { return };
        let vid = self.sites[v].id;
        let made = self.rep(v).own_row().map(|x| x.get(&vid)).unwrap_or(0);
        let heard = self.live_sites().into_iter().all(|i| {
            i == v
                || (self.knows_retired(i, v)
                    && self.rep(i).own_row().map(|x| x.get(&vid)).unwrap_or(0) >= made)
        });
        if heard {
            self.shut_down();
            self.retire.takeover_pending = true;
        }
    }

    /// The operator follows what the survivors hold of the retirement: a replica retired by
    /// another and stopped is started again, as closing, when no survivor holds its
    /// retirement any more (the retirer lost the entry, by a restore, a rollback or a given-up
    /// timeline, before any sibling got it: until it is retired anew it must answer what the
    /// family asks of it, a restoration may await it); a closing replica is stopped again
    /// when a survivor holds its retirement once more (the retirer was restored from a copy
    /// that has it). Returns whether the stage changed.
    pub(super) fn follow_retirement(&mut self) -> bool {
        let Some(v) = self.retire.site else {
            return false;
        };
        let holder = self
            .live_sites()
            .into_iter()
            .filter(|&i| i != v)
            .find(|&i| self.knows_retired(i, v));
        match (self.retire.stage, holder) {
            (Stage::Retired, None) => {
                self.stats.retirements_lost += 1;
                self.retire.stage = Stage::Draining;
                self.retire.by = None;
                self.retire.takeover_pending = false;
                self.retire.taken.clear();
                self.ev(|w| {
                    format!(
                        "operator: no survivor holds the retirement of {} any more; it runs again, closing, until it is retired anew",
                        w.sites[v].name
                    )
                });
                true
            }
            (Stage::Draining, Some(h)) => {
                self.retire.stage = Stage::Retired;
                self.retire.by = Some(h);
                self.retire.takeover_pending = true;
                self.ev(|w| {
                    format!(
                        "operator: {} holds the retirement of {} again; it stops again",
                        w.sites[h].name, w.sites[v].name
                    )
                });
                true
            }
            _ => false,
        }
    }

    /// Shuts the retired replica down: its bay is emptied, and entries only it held are gone
    /// with it.
    fn shut_down(&mut self) {
        let Some(v) = self.retire.site else { return };
        self.retire.stage = Stage::Gone;
        self.retire.gone_at = self.step;
        self.sites[v].bay.clear();
        self.ev(|w| format!("operator: {} is shut down", w.sites[v].name));
        self.note_destroyed();
    }

    /// Links the neighbours of closing site `v` to each other (two-way): the family must stay
    /// connected without it.
    fn link_neighbours(&mut self, v: usize) {
        let neighbours: Vec<usize> = self
            .edges
            .iter()
            .filter_map(|&(a, b)| match (a == v, b == v) {
                (true, _) => Some(b),
                (_, true) => Some(a),
                _ => None,
            })
            .collect();
        for (k, &a) in neighbours.iter().enumerate() {
            for &b in &neighbours[k + 1..] {
                self.link(a, b, 0.0);
            }
        }
    }

    /// The master of the retired replica's replica object takes over what it masters
    /// (`chmaster --all --from`); a crash or a lock leaves it for later.
    fn take_over(&mut self, faults: bool) {
        let (Some(v), Some(r)) = (self.retire.site, self.retirer()) else {
            return;
        };
        let (vn, rn) = (self.sites[v].name.clone(), self.sites[r].name.clone());
        match self.mutate(r, "chmaster --all --from", faults, |x| {
            x.chmaster_all_from(&vn)
        }) {
            None | Some(Err(CoreError::Locked(_))) => {}
            Some(Ok(objs)) => {
                self.stats.taken_over += objs.len() as u64;
                self.retire.taken.extend(objs.iter().copied());
                self.retire.takeover_pending = false;
                self.ev(|_| {
                    format!(
                        "operator: chmaster --all --from {vn} at {rn}: {} objects",
                        objs.len()
                    )
                });
            }
            Some(Err(CoreError::Invalid(m))) if !self.knows_retired(r, v) => {
                // The retirer was put back to a copy older than its retirement of the replica.
                self.stats.takeover_refused += 1;
                self.ev(|_| format!("chmaster --all --from {vn} at {rn}: refused: {m}"));
            }
            Some(Err(e)) => {
                self.violation(format!("chmaster --all --from {vn} at {rn} failed: {e}"))
            }
        }
        self.observe(r);
    }

    /// A survivor is restored (default mode) from a backup taken before its replica was shut
    /// down, when one has any (counted if the copy does not know the retirement).
    fn restore_before_retirement(&mut self) -> bool {
        let at = self.retire.gone_at;
        let with_old: Vec<(usize, usize)> = self
            .live_sites()
            .into_iter()
            .filter(|&i| !self.closing(i))
            .filter_map(|i| {
                let usable = self.usable_backups(i);
                let old = usable
                    .into_iter()
                    .rev()
                    .find(|&b| self.sites[i].backups[b].step < at);
                old.map(|b| (i, b))
            })
            .collect();
        let Some(&(i, b)) = with_old.choose(&mut self.retire.rng) else {
            return false;
        };
        self.ev(|w| {
            format!(
                "operator: restore {} from a backup taken before the retirement",
                w.sites[i].name
            )
        });
        self.retire.restored_survivor = Some(i);
        self.restore_from(i, b, Some(Mode::Default));
        true
    }

    /// After healing: a retirement still under way is finished (the retirer now holds what
    /// the replica made), a survivor may be restored from a backup older than it, a
    /// retirement a restore took back is run again, and what handovers in flight gave the
    /// retired replica is taken over again; then one taken-over object is moved on. The
    /// family heals after each round.
    pub(super) fn finish_retirement(&mut self) {
        if self.retire.stage == Stage::Planned || !self.violations.is_empty() {
            return;
        }
        for _ in 0..3 {
            self.retire_after_healing();
            if self.retire.stage == Stage::Gone || !self.violations.is_empty() {
                break;
            }
        }
        if self.retire.stage != Stage::Gone {
            self.retire_failed("no survivor but the retirer holds the retirement after healing");
            return;
        }
        if self.p.restores > 0
            && self.retire.restored_survivor.is_none()
            && self.restore_before_retirement()
        {
            self.heal_and_repair_forks();
        }
        for _ in 0..3 {
            if !self.violations.is_empty() {
                return;
            }
            let v = self.retire.site.expect("a retired site");
            if let Some(r) = self.retirer() {
                if !self.knows_retired(r, v) {
                    self.try_rmreplica(false);
                }
            }
            let vid = self.sites[v].id;
            let masters = |w: &Self, i: usize| {
                w.rep(i)
                    .view()
                    .mastered_by(&vid)
                    .map(|o| o.len())
                    .unwrap_or(0)
            };
            if self.retire.takeover_pending
                || self.live_sites().into_iter().any(|i| masters(self, i) > 0)
            {
                self.take_over(false);
            }
            self.heal_and_repair_forks();
        }
        self.move_a_taken_object();
    }

    /// The retirement could not be finished: a violation, unless the schedule is lossy (its
    /// forks may keep the retirer from holding what the replica made); the retirement's checks
    /// are then skipped.
    fn retire_failed(&mut self, what: &str) {
        if self.lossy.is_empty() {
            self.violation(what.to_string());
        } else {
            self.retire.abandoned = true;
            self.ev(|_| format!("{what} (lossy schedule: retirement checks skipped)"));
        }
    }

    /// One move of the operator after healing: a closed replica is retired (handing on its
    /// replica object first if it masters it), and a retired one shut down once heard.
    fn retire_after_healing(&mut self) {
        let v = self.retire.site.expect("a closing site");
        if self.retire.stage == Stage::Draining && self.masters_own_object(v) {
            self.hand_on_own_object(false);
            self.heal_and_repair_forks();
        }
        if self.retire.stage == Stage::Draining && !self.try_rmreplica(false) {
            self.retire_failed("the retirer could not retire the closed replica after healing");
            return;
        }
        self.heal_and_repair_forks();
        self.shut_down_if_heard();
    }

    /// The retirer hands one object it took over from the retired replica to another
    /// survivor (it must be able to: the object can change again), and the family heals. An
    /// object whose selector now names another object (a path named again) is skipped.
    fn move_a_taken_object(&mut self) {
        let (Some(r), Some(to)) = (self.retirer(), self.other_live_site()) else {
            return;
        };
        if to == r {
            return;
        }
        let tn = self.sites[to].name.clone();
        let mut mine = self
            .rep(r)
            .view()
            .mastered_by(&self.sites[r].id)
            .unwrap_or_default();
        mine.retain(|o| self.retire.taken.contains(o));
        let mut changed = false;
        for obj in mine {
            let sel = self.rep(r).describe_object(&obj);
            match self.rep(r).chmaster(&sel, &tn) {
                Ok(()) => {
                    changed = true;
                    self.ev(|w| format!("operator: chmaster {sel} -> {tn} at {}", w.sites[r].name));
                    // Unless the selector named another object (a path named again).
                    if matches!(self.rep(r).view().master_of(&obj), Ok(m) if m == self.sites[to].id)
                    {
                        self.retire.moved = Some((obj, self.sites[to].id));
                        break;
                    }
                }
                Err(CoreError::NotMaster { .. }) => {}
                Err(e) => {
                    self.violation(format!("chmaster {sel} -> {tn} after the takeover: {e}"));
                    return;
                }
            }
        }
        if changed {
            self.heal_and_repair_forks();
        }
    }

    /// What retirement promises, at every survivor after healing: the replica is retired, no
    /// sibling and no estimate row, retention is not held back by it, it masters nothing, and
    /// the object moved after the takeover has its new master.
    pub(super) fn check_retirement(&mut self) {
        let Some(v) = self.retire.site else { return };
        if self.retire.stage != Stage::Gone
            || self.retire.abandoned
            || self.stats.unconvergeable > 0
            || !self.violations.is_empty()
        {
            return;
        }
        for i in self.live_sites() {
            self.check_forgotten_at(i, v);
        }
    }

    /// The checks of [`Self::check_retirement`] at survivor `i` for retired site `v`.
    fn check_forgotten_at(&mut self, i: usize, v: usize) {
        let (vid, vn, n) = (
            self.sites[v].id,
            self.sites[v].name.clone(),
            self.sites[i].name.clone(),
        );
        let rep = self.rep(i);
        let mut bad = Vec::new();
        if !self.knows_retired(i, v) {
            bad.push("does not know it is retired".to_string());
        }
        if rep
            .known_siblings()
            .map(|s| s.contains(&vid))
            .unwrap_or(true)
        {
            bad.push("still counts it a sibling".into());
        }
        if rep
            .epoch_matrix()
            .map(|m| m.iter().any(|(r, _)| *r == vid))
            .unwrap_or(true)
        {
            bad.push("still has its estimate row".into());
        }
        // Its own replica object may come back to it by a mastership request it made before
        // it retired itself and that its master granted before hearing of the retirement
        // (docs/protocol.md §10, "Not done"); anything else must have been taken over.
        if let Ok(objs) = rep.view().mastered_by(&vid) {
            if let Some(o) = objs.iter().find(|o| **o != ObjectRef::Replica(vid)) {
                bad.push(format!(
                    "still has {} mastered by it",
                    rep.describe_object(o)
                ));
            }
        }
        if let Some((obj, to)) = self.retire.moved {
            if !matches!(rep.view().master_of(&obj), Ok(m) if m == to) {
                bad.push(format!("did not move {} on", rep.describe_object(&obj)));
            }
        }
        if let Ok(report) = rep.scrub_with_window(Some(0), true) {
            if report
                .origins
                .iter()
                .any(|o| matches!(&o.why, Kept::Sibling { name, .. } if *name == vn))
            {
                bad.push("keeps entries for it (retention)".into());
            }
        }
        for b in bad {
            self.violation(format!("{n}, after {vn} was retired: {b}"));
        }
    }
}
