//! Export planning (PROTOCOL §3, §5): what the next update packet to a target carries.
//!
//! The base for a target is the estimate row; the packet carries, for each origin, the entries
//! above the base up to the own row, merged across origins in this replica's apply order (the
//! local apply sequence number, LSN, stored with each oplog record), so the order is causal.
//! Each origin's range is one bounded scan of the oplog, so the cost grows with what is sent,
//! never with history. A packet with nothing new may still be sent: a resend, a probe, a
//! keepalive, an answer to a stale packet, a restore request or an acknowledgement.

use msite_packet::wire;

use crate::codec::{Dec, Enc};
use crate::error::{CoreError, Result};
use crate::ids::{ReplicaId, ZERO_HASH};
use crate::keys;
use crate::model::Row;
use crate::replica::{get_u64, Replica};
use crate::restore::{held_requests_in, prov_acks_in, HeldRequest};
use crate::store::{Keyspace, Store, WriteOptions};
use crate::txn::Txn;

use super::ack::{RecvState, SendState};

/// A packet to write: header plus the ranges of entries it carries.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// The target.
    pub target: ReplicaId,
    /// Kind of packet.
    pub kind: wire::Kind,
    /// The header.
    pub header: wire::Header,
    pub(super) ranges: Vec<(ReplicaId, u64, u64)>,
    pub(super) all_blobs: bool,
    /// What the target holds by its latest report, when content may go as deltas against
    /// versions it holds (`sync/delta.rs`); None: only against content earlier in the packet.
    pub(super) delta_held: Option<Row>,
    pub(super) seq: u64,
    /// A snapshot creation packet: rows of the object base, not entries (`sync/snapshot.rs`).
    pub(super) snapshot: bool,
    pub(super) advance_to: Option<Row>,
    pub(super) report: (u64, u64),
    /// Entries the packet will carry.
    pub entry_count: u64,
    /// Why the packet is sent (for messages): "update", "resend", "acknowledgement",
    /// "restore request", "replica creation".
    pub reason: &'static str,
    /// Entries the target needs that retention dropped here, one refusal each (the packet
    /// carries what follows them; the target refuses it with the same message).
    pub refusals: Vec<String>,
}

impl<S: Store> Replica<S> {
    pub(super) fn controls(&self, own_request: Option<HeldRequest>) -> Result<Vec<wire::Control>> {
        let mut out = Vec::new();
        let mut push = |r: &HeldRequest| {
            out.push(wire::Control::RestoreRequest {
                replica: wire::Id(r.replica.0),
                incarnation: r.incarnation,
                row: r.row.to_wire(),
                signature: wire::NO_SIGNATURE,
            })
        };
        if let Some(r) = &own_request {
            push(r);
        }
        for r in held_requests_in(&self.store)? {
            push(&r);
        }
        for a in prov_acks_in(&self.store)? {
            out.push(wire::Control::ProvisionalAck {
                acker: wire::Id(a.acker.0),
                replica: wire::Id(a.replica.0),
                incarnation: a.incarnation,
                held: a.held,
                signature: wire::NO_SIGNATURE,
            });
        }
        self.sign_controls(out)
    }

    /// Whether this recovering replica's packets also carry entries: only while it holds
    /// another replica's restore request. Two replicas restoring at once must relay the
    /// acknowledgements of the siblings between them, or neither completes; the entries are genuine, and no estimate advances while recovering.
    pub(super) fn relays_while_recovering(&self) -> Result<bool> {
        Ok(!held_requests_in(&self.store)?.is_empty())
    }

    pub(crate) fn check_exportable(&self) -> Result<()> {
        let st = self.status()?;
        if st.restored {
            return Err(CoreError::Locked(format!(
                "replica {} was restored from a backup and refuses exports until the restoration procedure runs; run `msite restorereplica`",
                self.name()
            )));
        }
        if let Some(reason) = st.rolled_back {
            return Err(CoreError::Locked(format!(
                "replica {} refuses exports: {reason}; run `msite restorereplica`",
                self.name()
            )));
        }
        Ok(())
    }

    /// Plans the update packet for `target` (None: nothing to send).
    ///
    /// Any id but our own is a valid address, also a target this replica has not heard of
    /// yet (its creation entry is still on its way, or this store predates it): it needs our
    /// requests and acknowledgements as much as anyone. Names are resolved by the caller.
    ///
    /// The steps: check the target; read both sides' state; choose the base and clamp it to
    /// what retention keeps; cut the ranges at signed heads; stop if there is nothing to say;
    /// then number the packet, choose its bases and build its header.
    pub fn plan_export(&self, target: &ReplicaId) -> Result<Option<ExportPlan>> {
        self.check_export_target(target)?;
        let st = self.status()?;
        let own = self.own_row()?;
        let send = Self::send_state(&self.store, target)?;
        let recv = Self::recv_state(&self.store, target)?;
        let target_recovering = self
            .store
            .get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, target))?
            .is_some();
        let own_request = st.recovering.as_ref().map(|r| HeldRequest {
            replica: self.me,
            incarnation: r.incarnation,
            row: r.row.clone(),
        });
        let controls = self.controls(own_request)?;
        let recovering = st.recovering.is_some();
        let mut base = self.export_base(target, recovering, &own, &send, target_recovering)?;
        let refusals = self.clamp_to_retained(target, &mut base.row, &own)?;
        // Other origins' entries travel only up to a head their origin signed (the rest
        // waits for the origin's next head), and the estimate advances only that far.
        let own = self.signed_row(&own)?;
        let (ranges, entry_count) = ranges_above(&own, &base.row);
        let content = !ranges.is_empty() || !controls.is_empty() || base.probe;
        if !content && nothing_to_acknowledge(&recv) {
            return Ok(None);
        }
        base.reason = reason_without_entries(&base, content, ranges.is_empty());
        let seq = if content { send.last_seq + 1 } else { 0 };
        let bases = self.export_bases(&base, &own, ranges.is_empty(), &send, recovering)?;
        let to = self.export_target(target, seq, &recv)?;
        let mut header = self.header(st.incarnation, to, bases, &own, controls)?;
        header.heads = self.heads_for(&ranges)?;
        header.comment = crate::retain::retained_comment(&self.store)?;
        header.reports =
            self.reports_for(target, st.incarnation, &own, recovering, target_recovering)?;
        // No estimate advances while either side recovers.
        let advance_to = (!target_recovering && !recovering).then_some(own);
        // Deltas against what the target holds only while neither side recovers, as above.
        let delta_held = match advance_to {
            Some(_) => self.reported_row(target)?,
            None => None,
        };
        Ok(Some(ExportPlan {
            target: *target,
            kind: wire::Kind::Update,
            header,
            ranges,
            all_blobs: false,
            delta_held,
            seq,
            snapshot: false,
            advance_to,
            report: (recv.applied, recv.seen),
            entry_count,
            reason: base.reason,
            refusals,
        }))
    }

    /// Refuses an export from a replica that may not export, to itself, or to a retired
    /// sibling.
    fn check_export_target(&self, target: &ReplicaId) -> Result<()> {
        self.check_exportable()?;
        if *target == self.me {
            return Err(CoreError::Invalid(format!(
                "replica {} cannot send a packet to itself",
                self.name()
            )));
        }
        self.check_target_live(target)
    }

    /// The bases of the packet: the prerequisites of what it carries (entries or a probe);
    /// for a packet without entries, also the bases the target is known to hold, unless we
    /// recover (see [`Self::known_bases`]).
    fn export_bases(
        &self,
        base: &ExportBase,
        own: &Row,
        no_entries: bool,
        send: &SendState,
        recovering: bool,
    ) -> Result<Vec<wire::Base>> {
        let mut bases = Vec::new();
        if !no_entries || base.probe {
            bases = self.prerequisites(&base.row, own)?;
        }
        if no_entries && !base.probe && send.have_report && !recovering {
            bases.extend(self.known_bases(&base.row, own, &send.reported_row)?);
        }
        Ok(bases)
    }

    /// The packet's address: `target` at the incarnation we know, the packet's number `seq`,
    /// and our acknowledgement of what it sent us (`recv`).
    fn export_target(
        &self,
        target: &ReplicaId,
        seq: u64,
        recv: &RecvState,
    ) -> Result<wire::Target> {
        Ok(wire::Target {
            replica: wire::Id(target.0),
            incarnation: self.incarnation_of(target)?,
            packet_seq: seq,
            ack_incarnation: recv.sender_inc,
            applied_seq: recv.applied,
            seen_seq: recv.seen,
        })
    }

    /// The header of a packet from this replica (incarnation `incarnation`) to `to`, with
    /// `bases`, our row `own` (naming every sibling we know of) and `controls`, created now.
    pub(super) fn header(
        &self,
        incarnation: u64,
        to: wire::Target,
        bases: Vec<wire::Base>,
        own: &Row,
        controls: Vec<wire::Control>,
    ) -> Result<wire::Header> {
        Ok(wire::Header {
            family: wire::Id(self.family.0),
            family_name: self.family_name.clone(),
            sender: wire::Id(self.me.0),
            sender_name: self.name(),
            sender_incarnation: incarnation,
            targets: vec![to],
            bases,
            sender_row: self.sender_row(own)?,
            controls,
            created_ms: self.env.now_ms(),
            new_replica: wire::Id::default(),
            comment: String::new(),
            keys: Vec::new(),
            heads: Vec::new(),
            signature: wire::NO_SIGNATURE,
            fork_decisions: self.fork_decisions_wire()?,
            reports: Vec::new(),
            snapshot: 0,
        })
    }

    /// The own row, each other origin's cell lowered to the last head its origin signed
    /// that is held here.
    fn signed_row(&self, own: &Row) -> Result<Row> {
        let mut out = Row::default();
        for (o, n) in &own.0 {
            out.set(*o, self.signed_up_to(o, *n)?);
        }
        Ok(out)
    }

    /// Where the packet to `target` starts, and why it is sent. While this replica recovers,
    /// its packets carry the request (and answers to others) only, unless the target
    /// recovers too or we relay for others. Otherwise the base is our estimate of the target,
    /// lowered to resend what it lost, and a packet with no new entries may still be a probe.
    fn export_base(
        &self,
        target: &ReplicaId,
        recovering: bool,
        own: &Row,
        send: &SendState,
        target_recovering: bool,
    ) -> Result<ExportBase> {
        let update = |row| ExportBase {
            row,
            reason: "update",
            probe: false,
        };
        if recovering && !target_recovering && !self.relays_while_recovering()? {
            let row = self.rotation_base(target)?.unwrap_or_else(|| own.clone());
            return Ok(update(row));
        }
        let mut base = update(self.estimate(target)?);
        let has_new = own.0.iter().any(|(o, n)| *n > base.row.get(o));
        if has_new || target_recovering {
            return Ok(base);
        }
        let unacknowledged = send.last_seq > send.applied;
        if send.have_report && unacknowledged && self.resend_due(target)? {
            if let Some(floor) = self.resend_floor(target, own, send)? {
                base.reason = "resend";
                base.row = floor;
            }
        }
        if recovering {
            return Ok(base);
        }
        if !send.have_report && unacknowledged {
            // The target has never reported: its only report may have been lost as well as
            // our packet, and then neither side would ever send again (K10). A probe is a
            // numbered packet without entries whose base is our estimate: the target applies
            // it if it holds the base, or keeps it waiting; either way its next export
            // reports, and a report that shows a packet missing makes us resend. On a one-way
            // link, where the target never reports, every export with nothing new sends one.
            base.probe = true;
            base.reason = "probe";
        } else if let Some(reason) = self.keepalive(target)? {
            base.probe = true;
            base.reason = reason;
        }
        Ok(base)
    }

    /// The base of this recovering replica's packet to `target` when its last key rotation
    /// may not have reached it: `None` when the target reported, on this incarnation, holding
    /// the rotation; else the estimate, with this replica's own cell lowered below the
    /// rotation and that report. This replica signs with the rotated key, which the target holds only once it
    /// applied the `RotateKey` entry; it waits for that entry while the sender holds it, and
    /// the entry may be held nowhere else (its other packets lost, or given up with an older
    /// incarnation). Without it the target would wait for ever and the restoration would
    /// await it for ever. So the packet carries what a relaying replica's does (everything
    /// from the estimate), this replica's own entries from there: genuine entries, and no
    /// estimate advances while recovering.
    fn rotation_base(&self, target: &ReplicaId) -> Result<Option<Row>> {
        let Some(&(rotation, _)) = super::rekey::rotated_keys(&self.store, &self.me)?.last() else {
            return Ok(None);
        };
        let reported = self.reported_row(target)?.map(|r| r.get(&self.me));
        if reported.is_some_and(|held| held >= rotation) {
            return Ok(None);
        }
        let mut row = self.estimate(target)?;
        let from = (rotation - 1)
            .min(row.get(&self.me))
            .min(reported.unwrap_or(u64::MAX));
        row.set(self.me, from);
        Ok(Some(row))
    }

    /// Whether unacknowledged entries go to `target` again on an export with nothing new:
    /// only a resend interval after the last packet that carried entries to it. A gap the
    /// target reports lowers our estimate of it (`sync/ack.rs`), so what it lost goes at the
    /// next export whatever the time; without one, the packets may only be on their way, and
    /// resending them at every export would multiply traffic by the number of exports between
    /// two replies. The interval bounds how long a packet lost without a later one is missed.
    fn resend_due(&self, target: &ReplicaId) -> Result<bool> {
        let last = get_u64(
            &self.store,
            Keyspace::Peers,
            &keys::peer(keys::peers::LAST_ENTRIES, target),
        )?;
        Ok(self.env.now_ms().saturating_sub(last) >= self.resend_ms(target)?)
    }

    /// With packets unacknowledged: what the target is known to hold (its last report,
    /// raised to what the last packet it applied brought), when we hold more than that.
    fn resend_floor(&self, target: &ReplicaId, own: &Row, send: &SendState) -> Result<Option<Row>> {
        let mut floor = send.reported_row.clone();
        if let Some(v) = self
            .store
            .get(Keyspace::Peers, &keys::export_log(target, send.applied))?
        {
            floor.raise_to(&Row::decode(&mut Dec::new(&v, "export log"))?);
        }
        Ok(own
            .0
            .iter()
            .any(|(o, n)| *n > floor.get(o))
            .then_some(floor))
    }

    /// Why a probe goes to `target` with nothing new, if one does: a keepalive after a day
    /// (by default) without a packet to it, or an answer to a stale packet it sent. A sibling
    /// put back to an older copy that lost only other origins' entries has nothing to say and
    /// cannot know it; the probe waits there, its report shows the gap, and we resend (K11).
    /// On a healthy link it applies at once and costs one small packet.
    fn keepalive(&self, target: &ReplicaId) -> Result<Option<&'static str>> {
        let last = get_u64(
            &self.store,
            Keyspace::Peers,
            &keys::peer(keys::peers::LAST_SENT, target),
        )?;
        if last > 0 && self.env.now_ms().saturating_sub(last) >= self.keepalive_ms()? {
            return Ok(Some("keepalive"));
        }
        let stale = self
            .store
            .get(
                Keyspace::Peers,
                &keys::peer(keys::peers::ANSWER_STALE, target),
            )?
            .is_some();
        Ok(stale.then_some("answer to a stale packet"))
    }

    /// The prerequisites of a packet that carries entries above `base` (or is a probe): for
    /// each origin, the entry at the base (capped by what we hold), which the target must
    /// hold before it applies the packet. A packet without entries (a restore request, an
    /// acknowledgement) has none: it can be imported whatever the target holds.
    fn prerequisites(&self, base: &Row, own: &Row) -> Result<Vec<wire::Base>> {
        self.bases_at(base.0.iter().map(|(o, n)| (*o, (*n).min(own.get(o)))))
    }

    /// The bases of a packet without entries: only where the target is known to hold them
    /// (its last report, capped by the estimate), so it never waits, yet the target checks our
    /// hashes there: a fork made by `--override` is reported at the first exchange even when
    /// no packet carries that origin's entries (K14). Not while we recover: our store is a
    /// copy that may hold entries a newer restoration retired, which we give up when the
    /// newer ones arrive (K13); our bases would only make the target report a fork that is
    /// already being repaired.
    fn known_bases(&self, base: &Row, own: &Row, reported: &Row) -> Result<Vec<wire::Base>> {
        self.bases_at(
            base.0
                .iter()
                .map(|(o, n)| (*o, (*n).min(own.get(o)).min(reported.get(o)))),
        )
    }

    /// A base (the hash of our entry there) for each `(origin, number)` above 0.
    fn bases_at(&self, at: impl Iterator<Item = (ReplicaId, u64)>) -> Result<Vec<wire::Base>> {
        let mut bases = Vec::new();
        for (o, b) in at.filter(|(_, b)| *b > 0) {
            if self.dropped_by_retention(&o, b)? {
                // Below the chain's base: no hash to offer (every sibling held it).
                continue;
            }
            let hash = Self::entry_hash_at(&self.store, &o, b)?.unwrap_or(ZERO_HASH);
            bases.push(wire::Base {
                origin: wire::Id(o.0),
                number: b,
                hash,
            });
        }
        Ok(bases)
    }

    /// Records that the plan's packet was written.
    pub fn commit_export(&self, plan: &ExportPlan) -> Result<()> {
        let mut txn = Txn::new(&self.store);
        if plan.kind == wire::Kind::Update {
            let t = &plan.target;
            let mut send = Self::send_state(&self.store, t)?;
            if plan.seq > 0 {
                send.last_seq = plan.seq;
                let row = plan
                    .advance_to
                    .clone()
                    .unwrap_or_else(|| Row::from_wire(&plan.header.sender_row));
                txn.put(
                    Keyspace::Peers,
                    &keys::export_log(t, plan.seq),
                    &row.encode(Enc::new()).done(),
                );
                txn.put(
                    Keyspace::Peers,
                    &keys::peer(keys::peers::SEND, t),
                    &send.encode(),
                );
            }
            if let Some(row) = &plan.advance_to {
                for (o, n) in &row.0 {
                    txn.put(Keyspace::Epochs, &keys::estimate(t, o), &n.to_be_bytes());
                }
            }
            self.record_sent(&mut txn, plan);
            let mut recv = Self::recv_state(&self.store, t)?;
            recv.reported_applied = plan.report.0;
            recv.reported_seen = plan.report.1;
            recv.reported = true;
            txn.put(
                Keyspace::Peers,
                &keys::peer(keys::peers::RECV, t),
                &recv.encode(),
            );
        } else if let Some(row) = &plan.advance_to {
            for (o, n) in &row.0 {
                txn.put(
                    Keyspace::Epochs,
                    &keys::estimate(&plan.target, o),
                    &n.to_be_bytes(),
                );
            }
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }

    /// Records when the plan's packet went to its target (the keepalive counts from it) and,
    /// if it carries entries, when entries last did (the resend interval counts from that);
    /// it answers any stale packet of the target.
    fn record_sent(&self, txn: &mut Txn<'_, S>, plan: &ExportPlan) {
        let t = &plan.target;
        let now = self.env.now_ms().to_be_bytes();
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::LAST_SENT, t),
            &now,
        );
        if plan.entry_count > 0 {
            txn.put(
                Keyspace::Peers,
                &keys::peer(keys::peers::LAST_ENTRIES, t),
                &now,
            );
        }
        txn.delete(Keyspace::Peers, &keys::peer(keys::peers::ANSWER_STALE, t));
    }

    /// The sender row of a packet: the own row, plus a cell with number 0 for every other
    /// sibling this replica knows of (K3: what one replica heard of reaches the others; a
    /// receiver treats every origin of a sender row as a sibling heard of, and a 0 cell as
    /// holding none of its entries, which is what it means).
    pub(super) fn sender_row(&self, own: &Row) -> Result<wire::Row> {
        let mut row = own.to_wire();
        for s in self.known_siblings()? {
            if own.get(&s) == 0 {
                row.push(wire::RowCell {
                    origin: wire::Id(s.0),
                    number: 0,
                });
            }
        }
        row.sort_unstable_by_key(|c| c.origin.0);
        Ok(row)
    }
}

/// Where an update packet starts and why it is sent.
struct ExportBase {
    /// Entries above this row are carried.
    row: Row,
    /// Why the packet is sent (see [`ExportPlan::reason`]).
    reason: &'static str,
    /// A numbered packet whose base is sent even without entries, so the target reports.
    probe: bool,
}

/// Whether a packet with nothing new would tell the target nothing either: it has heard from
/// us before, and our last report already acknowledged everything it sent.
fn nothing_to_acknowledge(recv: &RecvState) -> bool {
    recv.reported && recv.applied == recv.reported_applied && recv.seen == recv.reported_seen
}

/// Why a packet is sent once its contents are known: without anything new it is an
/// acknowledgement; with controls but no entries and no probe, a restore request; otherwise
/// the reason its base gave.
fn reason_without_entries(base: &ExportBase, content: bool, no_entries: bool) -> &'static str {
    if !content {
        "acknowledgement"
    } else if no_entries && !base.probe {
        "restore request"
    } else {
        base.reason
    }
}

/// For each origin where `own` is above `base`: the range of entries the packet carries,
/// and how many entries that is in all.
fn ranges_above(own: &Row, base: &Row) -> (Vec<(ReplicaId, u64, u64)>, u64) {
    let mut ranges = Vec::new();
    let mut entry_count = 0;
    for (o, n) in &own.0 {
        let b = base.get(o);
        if *n > b {
            ranges.push((*o, b + 1, *n));
            entry_count += n - b;
        }
    }
    (ranges, entry_count)
}
