//! Delivery: a packet imported at its target, checked against what the import may change,
//! the refusals it may meet, and the incoming bay of packets to import again.

use msite_core::{
    CoreError, ForkDecision, Hash, ImportOutcome, Incoming, Refusal, ReplicaId, Row, Status,
};

use super::{short, Packet, World};
use crate::backend::SimBackend;

/// Packets kept in an incoming bay (older ones are deleted, as an operator would).
const BAY_LIMIT: usize = 64;

/// What a target held before an import: its own row, digest and status.
struct Before {
    own: Option<Row>,
    digest: Option<Hash>,
    status: Option<Status>,
}

/// A delivered packet as messages name it: target, sender and serial.
struct Delivery {
    tn: String,
    fname: String,
    serial: u64,
}

/// What a packet's header says, against what its target knew before the import.
struct HeaderFacts {
    sender: ReplicaId,
    hdr_target_inc: Option<u64>,
    hdr_sender_inc: u64,
    my_inc: u64,
    recorded_sender_inc: u64,
    /// The header believes an older incarnation of the target or of the sender.
    stale: bool,
    /// The header carries the sender's own restore request.
    has_sender_request: bool,
    /// The target, rolled back by a snapshot not yet detected, forgot the sender's newer
    /// incarnation (see `header_facts`).
    forgot_sender_restore: bool,
}

/// What a packet the target did not apply may still have changed.
#[derive(Clone, Copy)]
struct Allowed {
    /// The target learned the sender's restore request (its acknowledgement only).
    learned: bool,
    /// The target adopted a fork repair decision the header carried.
    adopted: bool,
}

impl<B: SimBackend> World<B> {
    /// Imports `pkt` at its target and checks what the import did: whatever the outcome, a
    /// stale packet changes nothing but what [`Self::check_import_effects`] allows, and a
    /// packet not applied changes nothing at all ([`Self::check_outcome`]).
    pub(super) fn deliver(&mut self, pkt: Packet, faults: bool) {
        let to = pkt.to;
        if self.gone(to) {
            return;
        }
        self.exchanged.insert((pkt.from, to));
        let d = Delivery {
            tn: self.sites[to].name.clone(),
            fname: self.sites[pkt.from].name.clone(),
            serial: pkt.serial,
        };
        if pkt.corrupt {
            self.stats.corrupted += 1;
        }
        let before = Before {
            own: self.rep(to).own_row().ok(),
            digest: self.rep(to).digest().ok(),
            status: self.rep(to).status().ok(),
        };
        let Some(inc) = self.read_packet(&pkt, &d) else {
            return;
        };
        let facts = self.header_facts(to, &inc, &before);
        let before_decisions = self.rep(to).fork_decisions().ok();
        let res = self.mutate(to, "import", faults, |r| r.import(inc));
        let allowed = self.check_import_effects(to, &d, &before, &facts, before_decisions, &res);
        let Some(res) = res else {
            // Crashed: the packet file stays in the incoming bay.
            if !pkt.corrupt {
                self.push_bay(to, pkt);
            }
            self.observe(to);
            return;
        };
        self.check_outcome(pkt, res, &d, &before, allowed);
    }

    /// Reads a packet's parts. Only a corrupted packet may be unreadable (it is then refused
    /// and dropped); any other unreadable packet is a violation.
    fn read_packet(&mut self, pkt: &Packet, d: &Delivery) -> Option<Incoming<'static>> {
        let serial = d.serial;
        match Incoming::from_parts(pkt.parts.clone(), &format!("packet #{serial}")) {
            Ok(i) => Some(i),
            Err(e) => {
                let (tn, fname) = (&d.tn, &d.fname);
                if pkt.corrupt {
                    self.ev(|_| {
                        format!(
                            "import #{serial} at {tn}: corrupted packet refused ({})",
                            short(&e)
                        )
                    });
                } else {
                    self.violation(format!(
                        "packet #{serial} from {fname} to {tn} is unreadable: {e}"
                    ));
                }
                None
            }
        }
    }

    /// What the header of a packet for site `to` says, against what `to` knew before the
    /// import. A packet is stale when the header believes an older incarnation of its target
    /// than the target has, or of its sender than the target recorded.
    ///
    /// A replica put back to a snapshot that forgot the sender's newer incarnation, before
    /// any packet showed it its rollback, cannot tell a packet the sender built before its
    /// restore from a current one (K25): applying it is a consequence of the rollback, like
    /// a local change before detection (`forgot_sender_restore`); the fork it may make must
    /// then be reported.
    fn header_facts(&self, to: usize, inc: &Incoming<'_>, before: &Before) -> HeaderFacts {
        let me = self.sites[to].id;
        let sender = ReplicaId(inc.header.sender.0);
        let hdr_target_inc = inc
            .header
            .targets
            .iter()
            .find(|t| t.replica.0 == me.0)
            .map(|t| t.incarnation);
        let hdr_sender_inc = inc.header.sender_incarnation;
        let my_inc = before.status.as_ref().map(|s| s.incarnation).unwrap_or(0);
        let recorded_sender_inc = self.rep(to).incarnation_of(&sender).unwrap_or(0);
        let stale =
            hdr_target_inc.is_some_and(|h| h < my_inc) || hdr_sender_inc < recorded_sender_inc;
        let has_sender_request = inc.header.controls.iter().any(|c| {
            matches!(c, msite_packet::wire::Control::RestoreRequest { replica, .. } if replica.0 == sender.0)
        });
        let forgot_sender_restore = self.sites[to].undetected_rollback
            && self.sites[to]
                .incarnations_before_rollback
                .get(&sender)
                .is_some_and(|known| *known > hdr_sender_inc);
        HeaderFacts {
            sender,
            hdr_target_inc,
            hdr_sender_inc,
            my_inc,
            recorded_sender_inc,
            stale,
            has_sender_request,
            forgot_sender_restore,
        }
    }

    /// Checks what an import changed, whatever its outcome, and returns the changes a packet
    /// not applied may still make. A fork repair decision the header carries is adopted
    /// before the packet is assessed (docs/protocol.md "Divergence and fork repair"): a
    /// refused or stale packet may give up entries that way, and only that way. A stale
    /// packet changes the own row only by a learned restore request or an adopted decision.
    fn check_import_effects(
        &mut self,
        to: usize,
        d: &Delivery,
        before: &Before,
        facts: &HeaderFacts,
        before_decisions: Option<Vec<ForkDecision>>,
        res: &Option<Result<ImportOutcome, CoreError>>,
    ) -> Allowed {
        let (tn, fname, serial) = (&d.tn, &d.fname, d.serial);
        let after_own = self.rep(to).own_row().ok();
        let adopted = self.rep(to).fork_decisions().ok() != before_decisions;
        if facts.forgot_sender_restore
            && (after_own != before.own || self.rep(to).digest().ok() != before.digest)
        {
            self.set_lossy(format!(
                "{tn}, rolled back by a snapshot that forgot {fname}'s restoration, applied packet #{serial} {fname} built before it"
            ));
        }
        let learned = self.learned_sender_request(to, d, before, facts, res, &after_own);
        if facts.stale && after_own != before.own && !learned && !adopted {
            let HeaderFacts {
                hdr_target_inc,
                my_inc,
                hdr_sender_inc,
                recorded_sender_inc,
                ..
            } = facts;
            self.violation(format!(
                "stale packet #{serial} from {fname} changed {tn} (target incarnation in header {hdr_target_inc:?}, {tn} had {my_inc}; sender incarnation {hdr_sender_inc}, recorded {recorded_sender_inc})"
            ));
        }
        Allowed { learned, adopted }
    }

    /// Whether the import learned the sender's own restore request from a packet it did not
    /// apply. A packet refused as stale for its target, or for relaying retired entries
    /// (K13), or one that must wait, may still teach the sender's own restore request (so
    /// that two replicas restored at once do not refuse each other forever, docs/protocol.md
    /// §4): the only change allowed is this replica's numbered acknowledgement of that
    /// request. That acknowledgement is an entry of this replica's own and is recorded at
    /// once (a replica rolled back by a snapshot that no packet has shown its rollback yet
    /// may number it under a number its earlier self used, as for a local change; K26).
    fn learned_sender_request(
        &mut self,
        to: usize,
        d: &Delivery,
        before: &Before,
        facts: &HeaderFacts,
        res: &Option<Result<ImportOutcome, CoreError>>,
        after_own: &Option<Row>,
    ) -> bool {
        let stale_target_refusal = matches!(
            res,
            None | Some(Err(CoreError::Refused(
                Refusal::StaleTarget { .. }
                    | Refusal::StaleRequest { .. }
                    | Refusal::SenderHoldsRetired { .. }
            ))) | Some(Ok(ImportOutcome::Waiting(_)))
        );
        let learned = stale_target_refusal
            && facts.has_sender_request
            && *after_own != before.own
            && self.only_acks_of(to, before.own.as_ref(), &facts.sender);
        if learned {
            let (tn, fname, serial) = (&d.tn, &d.fname, d.serial);
            self.stats.learned_from_stale += 1;
            self.ev(|_| {
                format!("  {tn} learned {fname}'s restore request from the stale packet #{serial}")
            });
            self.observe(to);
        }
        learned
    }

    /// Checks an import's outcome: an applied packet must not be a corrupted one; a packet
    /// already applied, waiting or refused must change nothing beyond what is `allowed`; a
    /// waiting one goes to the incoming bay, a refused one to [`Self::on_import_error`].
    fn check_outcome(
        &mut self,
        pkt: Packet,
        res: Result<ImportOutcome, CoreError>,
        d: &Delivery,
        before: &Before,
        allowed: Allowed,
    ) {
        let to = pkt.to;
        let (tn, serial) = (&d.tn, d.serial);
        match res {
            Ok(ImportOutcome::Applied {
                applied,
                unlocked,
                notes,
                ..
            }) => self.on_applied(&pkt, d, applied, unlocked, &notes),
            Ok(ImportOutcome::AlreadyApplied) => {
                self.ev(|_| format!("import #{serial} at {tn}: already applied"));
                if let Some(v) = self.changed_anyway(to, d, before, allowed, "was already applied")
                {
                    self.violation(v);
                }
            }
            Ok(ImportOutcome::Waiting(needs)) => {
                self.stats.waits += 1;
                self.ev(|_| {
                    format!(
                        "import #{serial} at {tn}: waits ({})",
                        needs
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
                if let Some(v) = self.changed_anyway(to, d, before, allowed, "waited") {
                    self.violation(v);
                }
                if !pkt.corrupt {
                    self.push_bay(to, pkt);
                }
            }
            Err(e) => {
                let what = format!("was refused ({})", short(&e));
                if let Some(v) = self.changed_anyway(to, d, before, allowed, &what) {
                    self.violation(v);
                }
                let was_rolled_back = before
                    .status
                    .as_ref()
                    .and_then(|s| s.rolled_back.as_ref())
                    .is_some();
                self.on_import_error(to, pkt, e, was_rolled_back);
            }
        }
    }

    /// A violation if a packet that was not applied (`what` it did instead) changed the
    /// target's own row or state beyond what is `allowed`.
    fn changed_anyway(
        &self,
        to: usize,
        d: &Delivery,
        before: &Before,
        allowed: Allowed,
        what: &str,
    ) -> Option<String> {
        let own = self.rep(to).own_row().ok();
        let dig = self.rep(to).digest().ok();
        if !allowed.learned && !allowed.adopted && (own != before.own || dig != before.digest) {
            let (tn, fname, serial) = (&d.tn, &d.fname, d.serial);
            Some(format!(
                "packet #{serial} from {fname} {what} but changed {tn}'s own row or state"
            ))
        } else {
            None
        }
    }

    /// An applied packet: a corrupted one must never be applied; what it brought is
    /// recorded in the ledger.
    fn on_applied(
        &mut self,
        pkt: &Packet,
        d: &Delivery,
        applied: u64,
        unlocked: bool,
        notes: &[String],
    ) {
        let to = pkt.to;
        let (tn, fname, serial) = (&d.tn, &d.fname, d.serial);
        if pkt.corrupt {
            self.violation(format!(
                "corrupted packet #{serial} from {fname} was applied at {tn}"
            ));
        }
        self.stats.applied += 1;
        self.stats.entries_applied += applied;
        self.ev(|w| {
            let awaited = match w.rep(to).status().ok().and_then(|s| s.recovering) {
                Some(rc) => format!(
                    " [still recovering, awaiting {}]",
                    rc.awaited
                        .iter()
                        .map(|(a, h)| format!("{}={h:?}", w.name_of(a)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            };
            format!(
                "import #{serial} at {tn}: applied {applied}{}; {}{awaited}",
                if unlocked { ", UNLOCKED" } else { "" },
                notes.join(" | ")
            )
        });
        self.observe(to);
    }

    /// Whether every entry `i` holds beyond `before` is its own acknowledgement of `sender`'s
    /// restore request.
    pub(super) fn only_acks_of(&self, i: usize, before: Option<&Row>, sender: &ReplicaId) -> bool {
        let me = self.sites[i].id;
        let Ok(now) = self.rep(i).own_row() else {
            return false;
        };
        let before = before.cloned().unwrap_or_default();
        for (o, n) in &now.0 {
            let from = before.get(o);
            if *n > from && *o != me {
                return false;
            }
            for k in from + 1..=*n {
                match self.rep(i).entry(o, k) {
                    Ok(Some(e)) if matches!(&e.op, msite_core::Op::RestoreAck { replica, .. } if replica == sender) =>
                        {}
                    _ => return false,
                }
            }
        }
        true
    }

    /// Checks a refused import. A refusal ([`Self::on_refusal`]) is counted and may make the
    /// schedule lossy; a locked target keeps the packet in its bay (and may have just detected
    /// its rollback); a corrupted packet may be unreadable; any other error is a violation.
    pub(super) fn on_import_error(
        &mut self,
        to: usize,
        pkt: Packet,
        e: CoreError,
        was_rolled_back: bool,
    ) {
        let tn = self.sites[to].name.clone();
        let fname = self.sites[pkt.from].name.clone();
        let serial = pkt.serial;
        let msg = short(&e);
        self.ev(|_| format!("import #{serial} at {tn}: refused: {msg}"));
        match e {
            CoreError::Refused(r) => self.on_refusal(to, &pkt, r),
            CoreError::Locked(_) => {
                let now = self.rep(to).status().ok().and_then(|s| s.rolled_back);
                if now.is_some() && !was_rolled_back {
                    self.on_rollback_detected(to, serial);
                }
                self.push_bay(to, pkt);
            }
            CoreError::Malformed(_) | CoreError::Unreadable(_) | CoreError::Entry(_)
                if pkt.corrupt => {}
            other => self.violation(format!(
                "import of packet #{serial} from {fname} at {tn} failed: {other}"
            )),
        }
    }

    /// Checks a packet refused by the protocol (`r`). Divergence is allowed only in a lossy
    /// schedule (or for a corrupted packet); a rolled-back or own-fork refusal is allowed only
    /// at a replica a snapshot rolled back; the forks a refusal names are reported; a packet
    /// behind retention must be outside the window; a forgery must be refused as not
    /// authentic; a replica that must be re-created takes the schedule outside the guarantee.
    fn on_refusal(&mut self, to: usize, pkt: &Packet, r: Refusal) {
        let tn = self.sites[to].name.clone();
        let fname = self.sites[pkt.from].name.clone();
        let serial = pkt.serial;
        match r {
            Refusal::StaleTarget { .. }
            | Refusal::StaleSender { .. }
            | Refusal::StaleRequest { .. } => {
                self.stats.stale += 1;
            }
            Refusal::Divergent {
                origin,
                number,
                also,
                ..
            } => {
                self.stats.divergent += 1;
                self.mark_reported(&origin, &also);
                if self.lossy.is_empty() && !pkt.corrupt {
                    self.violation(format!(
                        "packet #{serial} from {fname} refused at {tn} as divergent ({origin} {number}) in a schedule that loses nothing"
                    ));
                }
            }
            Refusal::RolledBack { .. } => self.on_rollback_detected(to, serial),
            Refusal::OwnFork { also, .. } => {
                // The importer numbered one of its numbers twice: it locks itself as rolled
                // back; the other forks it names are reported too.
                self.stats.own_forks += 1;
                let name = self.sites[to].name.clone();
                self.mark_reported(&name, &also);
                self.on_rollback_detected(to, serial);
            }
            Refusal::SenderHoldsRetired { origin, also, .. } => {
                // The refusal names the origins whose histories differ: the operator is told.
                self.mark_reported(&origin, &also);
                // A recovering sender relayed entries a newer restoration replaced (K13); core
                // says so only for a packet carrying the sender's own restore request and an
                // entry older (by incarnation) than ours. What follows is checked as usual:
                // the sender must give them up and the family converge.
                self.stats.retired_relays += 1;
            }
            r @ Refusal::BehindRetention { .. } => {
                self.stats.behind_retention += 1;
                let what = format!("packet #{serial} from {fname} refused at {tn}: {r}");
                self.behind_retention(pkt.from, to, what);
            }
            Refusal::Other(m) if m.contains("export to the siblings again") => {
                // A recovering store older than a restoration the family knows moved its
                // request to a newer incarnation; the packet is dropped.
            }
            // A forgery is refused as not authentic: the origin's signed chain head no longer
            // matches the altered entry, or the raised acknowledgement breaks the sender's
            // signature.
            // A retired replica's packets still in flight are refused whole (§10).
            Refusal::SenderRetired { .. } if self.closing(pkt.from) => {
                self.stats.from_retired += 1;
            }
            Refusal::Unauthentic { .. } if pkt.forged => {
                self.stats.forged += 1;
            }
            Refusal::Other(m) if crate::snapshot::needs_recreation(&m) => {
                self.stats.recreate_needed += 1;
                self.beyond_window = true;
                self.set_lossy(format!(
                    "packet #{serial} from {fname} refused at {tn}: {m}"
                ));
            }
            other => self.violation(format!(
                "import of packet #{serial} from {fname} at {tn} failed: {}",
                CoreError::Refused(other)
            )),
        }
    }

    /// Records the forks a refusal names (`origin`, then `also`) as reported. A store that
    /// lost a replica's object names it by its short id.
    pub(super) fn mark_reported(&mut self, origin: &str, also: &[(String, u64)]) {
        for name in std::iter::once(origin).chain(also.iter().map(|(o, _)| o.as_str())) {
            if let Some(s) = self
                .sites
                .iter()
                .find(|s| s.name == name || s.id.short() == name)
            {
                self.reported.insert(s.id);
            }
        }
    }

    /// Site `to` refused packet `serial` as showing its rollback: the rollback is detected
    /// (and reported); only a replica a snapshot rolled back may be refused so, unless the
    /// schedule is lossy.
    pub(super) fn on_rollback_detected(&mut self, to: usize, serial: u64) {
        self.stats.rollback_detections += 1;
        let tn = self.sites[to].name.clone();
        self.reported.insert(self.sites[to].id);
        if !self.sites[to].snapshot_rolled && self.lossy.is_empty() {
            self.violation(format!(
                "{tn} refused packet #{serial} as a rollback, but it was never rolled back"
            ));
        }
        self.sites[to].undetected_rollback = false;
    }

    /// Keeps `pkt` in site `i`'s incoming bay to import again (once; the oldest is deleted
    /// beyond `BAY_LIMIT`).
    pub(super) fn push_bay(&mut self, i: usize, pkt: Packet) {
        let bay = &mut self.sites[i].bay;
        if bay.iter().any(|p| p.serial == pkt.serial) {
            return;
        }
        bay.push(pkt);
        if bay.len() > BAY_LIMIT {
            bay.remove(0);
        }
    }

    /// Retries the packets in `i`'s incoming bay until a pass applies nothing.
    pub(super) fn settle_bay(&mut self, i: usize, faults: bool) {
        loop {
            let bay = std::mem::take(&mut self.sites[i].bay);
            if bay.is_empty() {
                return;
            }
            let before = self.stats.applied;
            for pkt in bay {
                self.deliver(pkt, faults);
            }
            if self.stats.applied == before {
                return;
            }
        }
    }
}
