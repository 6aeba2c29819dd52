//! Continuous checks: what each replica holds is recorded in the ledger after every change
//! (no reuse, no unexplained loss), entries every copy of which is gone are noted, and each
//! replica's oplog is checked for integrity.

use msite_core::{Entry, Hash, ReplicaId, Row};

use super::{short_hash, World};
use crate::backend::SimBackend;

impl<B: SimBackend> World<B> {
    /// Records the entries `i` holds beyond what was last observed there: no row of the
    /// own row goes down unless explained ([`Self::check_rows_down`]), and every entry held
    /// is recorded in the ledger, where one number naming two entries is a conflict.
    pub(super) fn observe(&mut self, i: usize) {
        let own = match self.rep(i).own_row() {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!("{}: own_row failed: {e}", self.sites[i].name));
                return;
            }
        };
        let me = self.sites[i].id;
        let observed = self.sites[i].observed.clone();
        if self.sites[i].undetected_rollback && own.get(&me) > observed.get(&me) {
            // Any own entry (a local change, or a mastership grant an import made) of a replica
            // rolled back by a snapshot, before a sibling revealed the rollback, may reuse a number.
            let name = self.sites[i].name.clone();
            self.set_lossy(format!(
                "{name}, rolled back by a snapshot, made an entry before detection"
            ));
        }
        let recovering = self.note_recovering(i);
        self.check_rows_down(i, &own, &observed, recovering);
        for (o, n) in &own.0 {
            let (from, base) = crate::snapshot::held_from(self.rep(i), o, observed.get(o));
            if let Some((b, h)) = base {
                if let Some(other) = self.ledger.record(me, (*o, b), h) {
                    self.on_conflict(i, *o, b, other, h);
                }
            }
            for k in from..=*n {
                self.record_entry(i, *o, k, *n);
            }
        }
        self.sites[i].observed = own;
    }

    /// Whether site `i` is recovering now or was when last observed (an import that gives up
    /// retired entries may also complete the restoration). A copy stops mattering to
    /// retention once its site is back in normal operation.
    fn note_recovering(&mut self, i: usize) -> bool {
        let recovering_now = matches!(self.rep(i).status(), Ok(s) if s.recovering.is_some());
        let normal = matches!(self.rep(i).status(),
            Ok(s) if s.recovering.is_none() && !s.restored && s.rolled_back.is_none());
        if normal && !self.sites[i].undetected_rollback {
            self.sites[i].copy_taken_ms = None;
        }
        let recovering = recovering_now || self.sites[i].recovering_when_observed;
        self.sites[i].recovering_when_observed = recovering_now;
        recovering
    }

    /// A row of `i`'s own row goes down only without a restore when explained: a recovering
    /// replica whose store is older than a restoration of some origin gives up that origin's
    /// retired entries for the newer timeline (K13, docs/protocol.md), and a fork repair
    /// decision gives up the entries above its number. Whether it gave up the right ones is
    /// for the other checks (no reuse, no loss, convergence) to say.
    fn check_rows_down(&mut self, i: usize, own: &Row, observed: &Row, recovering: bool) {
        for (o, from) in &observed.0 {
            if own.get(o) < *from && recovering {
                let (on, sn) = (self.name_of(o), self.sites[i].name.clone());
                let to = own.get(o);
                self.ev(|_| {
                    format!(
                        "  {sn} gave up {on} {}..={from}, retired by a newer restoration",
                        to + 1
                    )
                });
            } else if own.get(o) < *from && self.gave_up_by_repair(i, o, own.get(o)) {
                let (on, sn) = (self.name_of(o), self.sites[i].name.clone());
                let to = own.get(o);
                self.ev(|_| format!("  {sn} gave up {on} {}..={from} by a fork repair", to + 1));
            } else if own.get(o) < *from {
                let name = self.name_of(o);
                self.violation(format!(
                    "{}: own row of {name} went down from {from} to {} without a restore",
                    self.sites[i].name,
                    own.get(o)
                ));
            }
        }
    }

    /// Records entry `k` of origin `o` held at `i` (whose own row says `n`) in the ledger.
    /// Every stored copy of an entry may have been thrown away by restores of several
    /// replicas while a packet sent before them still carried it: no replica can know of a
    /// packet in flight whose sender was restored since, so its origin may have numbered the
    /// number again; such an entry coming back makes the schedule lossy (the fork must then
    /// be reported).
    fn record_entry(&mut self, i: usize, o: ReplicaId, k: u64, n: u64) {
        let me = self.sites[i].id;
        let e = match self.rep(i).entry(&o, k) {
            Ok(Some(e)) => e,
            Ok(None) => {
                let name = self.name_of(&o);
                self.violation(format!(
                    "{}: own row says {name} {n} but entry {k} is missing",
                    self.sites[i].name
                ));
                return;
            }
            Err(e) => {
                self.violation(format!(
                    "{}: reading entry {k} failed: {e}",
                    self.sites[i].name
                ));
                return;
            }
        };
        if self.verbose {
            self.trace_held(i, &o, k, &e);
        }
        let id = (o, k);
        if self.ledger.destroyed.contains(&id)
            && self.ledger.reached.get(&id) == Some(&e.hash)
            && self.ledger.resurfaced.insert(id)
        {
            let (on, sn) = (self.name_of(&o), self.sites[i].name.clone());
            self.set_lossy(format!(
                "{on} {k}, whose every stored copy restores destroyed, came back to {sn} from a packet in flight"
            ));
        }
        if let Some(other) = self.ledger.record(me, id, e.hash) {
            self.on_conflict(i, o, k, other, e.hash);
        }
    }

    /// Traces that `i` holds entry `k` of `o`, naming its operation.
    fn trace_held(&mut self, i: usize, o: &ReplicaId, k: u64, e: &Entry) {
        let op = match &e.op {
            msite_core::Op::RestoreAck {
                replica,
                incarnation,
                held,
            } => {
                format!(
                    "RestoreAck({} inc {incarnation} held {held})",
                    self.name_of(replica)
                )
            }
            msite_core::Op::RestoreComplete { incarnation, .. } => {
                format!("RestoreComplete(inc {incarnation})")
            }
            msite_core::Op::CreateReplica { name, .. } => {
                format!("CreateReplica({name})")
            }
            other => {
                let d = format!("{other:?}");
                d.split([' ', '{', '(']).next().unwrap_or("").to_string()
            }
        };
        let (on, sn) = (self.name_of(o), self.sites[i].name.clone());
        self.ev(|_| format!("  {sn} holds {on}:{k} {op} ({})", short_hash(&e.hash)));
    }

    /// Whether site `i` holds a fork decision on `o` that gives up its entries above `to`.
    pub(super) fn gave_up_by_repair(&self, i: usize, o: &ReplicaId, to: u64) -> bool {
        self.rep(i)
            .fork_decisions()
            .is_ok_and(|ds| ds.iter().any(|d| d.origin == *o && d.number <= to + 1))
    }

    /// Number `k` of `o` names two entries (`a` first, `b` now at `i`): a violation in a
    /// schedule that loses nothing (tagged K3 when the origin's restore could not know a
    /// holder of the old entry); in a lossy schedule, allowed if an import reports it.
    pub(super) fn on_conflict(&mut self, i: usize, o: ReplicaId, k: u64, a: Hash, b: Hash) {
        let name = self.name_of(&o);
        let msg = format!(
            "number reused: {name} {k} names two entries ({} at first, {} now held at {})",
            short_hash(&a),
            short_hash(&b),
            self.sites[i].name
        );
        if self.lossy.is_empty() {
            if let Some(oi) = self.sites.iter().position(|s| s.id == o) {
                // K3: the origin's restore did not wait for a holder of the old entry that
                // its store does not know.
                let unknown_holder = (0..self.sites.len()).any(|j| {
                    j != oi
                        && matches!(self.rep(j).entry(&o, k), Ok(Some(e)) if e.hash == a)
                        && matches!(self.rep(oi).view().replica(&self.sites[j].id), Ok(None))
                });
                if self.sites[oi].forgot_siblings || unknown_holder {
                    self.known.insert("K3");
                }
            }
            self.violation(msg);
        } else {
            self.ev(|_| format!("{msg} (lossy schedule: allowed if reported)"));
        }
    }

    /// After a store was replaced: entries that reached a sibling but are now held nowhere.
    pub(super) fn note_destroyed(&mut self) {
        let live = self.live_sites();
        let rows: Vec<(usize, Row)> = live
            .iter()
            .filter_map(|&i| self.rep(i).own_row().ok().map(|r| (i, r)))
            .collect();
        let mut gone = Vec::new();
        for (id, hash) in &self.ledger.reached {
            if self.ledger.destroyed.contains(id) {
                continue;
            }
            // Held means this very entry: a store put back from an older timeline may hold
            // another entry under the number.
            let held = rows.iter().any(|(i, r)| {
                r.get(&id.0) >= id.1
                    && matches!(self.rep(*i).entry(&id.0, id.1), Ok(Some(e)) if e.hash == *hash)
            });
            if !held {
                gone.push(*id);
            }
        }
        for id in gone {
            self.stats.destroyed += 1;
            let name = self.name_of(&id.0);
            self.ev(|_| {
                format!(
                    "every copy of {name} {} is gone (restores of several replicas)",
                    id.1
                )
            });
            self.ledger.destroyed.insert(id);
        }
    }

    /// The own row matches the oplog, numbers are contiguous and the hash chains hold.
    pub(super) fn check_integrity(&mut self, i: usize, when: &str) {
        let ids: Vec<ReplicaId> = self.sites.iter().map(|s| s.id).collect();
        let own = match self.rep(i).own_row() {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!(
                    "{} {when}: own_row failed: {e}",
                    self.sites[i].name
                ));
                return;
            }
        };
        for o in ids {
            let entries = match self.rep(i).entries_of(&o) {
                Ok(v) => v,
                Err(e) => {
                    self.violation(format!(
                        "{} {when}: entries_of failed: {e}",
                        self.sites[i].name
                    ));
                    return;
                }
            };
            // A scrubbed prefix: the chain continues from the retained base.
            let (base, mut prev) = self
                .rep(i)
                .chain_base(&o)
                .ok()
                .flatten()
                .unwrap_or((0, [0u8; 32]));
            for (k, e) in entries.iter().enumerate() {
                let k = k + base as usize;
                if e.number != k as u64 + 1 || e.origin != o || e.prev != prev {
                    let name = self.name_of(&o);
                    self.violation(format!(
                        "{} {when}: the oplog of {name} is broken at entry {} (number {}, chain {})",
                        self.sites[i].name,
                        k + 1,
                        e.number,
                        if e.prev == prev { "ok" } else { "broken" }
                    ));
                    break;
                }
                prev = e.hash;
            }
            if entries.len() as u64 + base != own.get(&o) {
                let name = self.name_of(&o);
                self.violation(format!(
                    "{} {when}: own row says {name} {} but the oplog holds {} entries",
                    self.sites[i].name,
                    own.get(&o),
                    entries.len()
                ));
            }
        }
    }
}
