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
    pub(super) seq: u64,
    pub(super) advance_to: Option<Row>,
    pub(super) report: (u64, u64),
    /// Entries the packet will carry.
    pub entry_count: u64,
    /// Why the packet is sent (for messages): "update", "resend", "acknowledgement",
    /// "restore request", "replica creation".
    pub reason: &'static str,
}

impl<S: Store> Replica<S> {
    pub(super) fn controls(&self, own_request: Option<HeldRequest>) -> Result<Vec<wire::Control>> {
        let mut out = Vec::new();
        let mut push = |r: &HeldRequest| {
            out.push(wire::Control::RestoreRequest {
                replica: wire::Id(r.replica.0),
                incarnation: r.incarnation,
                row: r.row.to_wire(),
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
            });
        }
        Ok(out)
    }

    /// Whether this recovering replica's packets also carry entries: only while it holds
    /// another replica's restore request. Two replicas restoring at once must relay the
    /// acknowledgements of the siblings between them, or neither completes (found by the
    /// simulator); the entries are genuine, and no estimate advances while recovering.
    pub(super) fn relays_while_recovering(&self) -> Result<bool> {
        Ok(!held_requests_in(&self.store)?.is_empty())
    }

    pub(super) fn check_exportable(&self) -> Result<()> {
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
    pub fn plan_export(&self, target: &ReplicaId) -> Result<Option<ExportPlan>> {
        self.check_exportable()?;
        if *target == self.me {
            return Err(CoreError::Invalid(format!(
                "replica {} cannot send a packet to itself",
                self.name()
            )));
        }
        // A target this replica has not heard of yet (its creation entry is still on its way,
        // or this store predates it) can still be sent to: it needs our requests and
        // acknowledgements as much as anyone (found by the simulator). Names are resolved by
        // the caller; here any id but our own is a valid address.
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
        let mut reason = "update";
        let mut probe = false;
        let base = if st.recovering.is_some()
            && !target_recovering
            && !self.relays_while_recovering()?
        {
            // While recovering, packets carry the request (and answers to others) only.
            own.clone()
        } else {
            let mut base = self.estimate(target)?;
            let has_new = own.0.iter().any(|(o, n)| *n > base.get(o));
            if !has_new && !target_recovering && send.have_report && send.last_seq > send.applied {
                // Unacknowledged packets: resend from what the target is known to hold.
                let mut floor = send.reported_row.clone();
                if let Some(v) = self
                    .store
                    .get(Keyspace::Peers, &keys::export_log(target, send.applied))?
                {
                    floor.raise_to(&Row::decode(&mut Dec::new(&v, "export log"))?);
                }
                if own.0.iter().any(|(o, n)| *n > floor.get(o)) {
                    reason = "resend";
                    base = floor;
                }
            }
            if !has_new
                && !target_recovering
                && st.recovering.is_none()
                && !send.have_report
                && send.last_seq > send.applied
            {
                // Unacknowledged packets, and the target has never reported: its only report
                // may have been lost as well as our packet, and then neither side would ever
                // send again (K10). Send a probe: a numbered packet without entries whose base
                // is our estimate. The target applies it if it holds the base, or keeps it
                // waiting; either way its next export reports, and a report that shows a
                // packet missing makes us resend. On a one-way link, where the target never
                // reports, every export with nothing new sends one such header-only packet.
                probe = true;
                reason = "probe";
            }
            if !has_new && !target_recovering && st.recovering.is_none() && !probe {
                // Keepalive: after a day (by default) without a packet to this sibling, send a
                // probe. A sibling put back to an older copy that lost only other origins'
                // entries has nothing to say and cannot know it; the probe waits there, its
                // report shows the gap, and we resend (K11, found by the simulator, seed
                // 70001233). On a healthy link it applies at once and costs one small packet.
                let last = get_u64(
                    &self.store,
                    Keyspace::Peers,
                    &keys::peer(keys::peers::LAST_SENT, target),
                )?;
                if last > 0 && self.env.now_ms().saturating_sub(last) >= self.keepalive_ms()? {
                    probe = true;
                    reason = "keepalive";
                } else if self
                    .store
                    .get(
                        Keyspace::Peers,
                        &keys::peer(keys::peers::ANSWER_STALE, target),
                    )?
                    .is_some()
                {
                    probe = true;
                    reason = "answer to a stale packet";
                }
            }
            base
        };
        let mut ranges = Vec::new();
        let mut entry_count = 0;
        for (o, n) in &own.0 {
            let b = base.get(o);
            if *n > b {
                ranges.push((*o, b + 1, *n));
                entry_count += n - b;
            }
        }
        let content = !ranges.is_empty() || !controls.is_empty() || probe;
        if !content
            && recv.reported
            && recv.applied == recv.reported_applied
            && recv.seen == recv.reported_seen
        {
            return Ok(None);
        }
        if !content {
            reason = "acknowledgement";
        } else if ranges.is_empty() && !probe {
            reason = "restore request";
        }
        let seq = if content { send.last_seq + 1 } else { 0 };
        let mut bases = Vec::new();
        // Prerequisites matter only for the entries carried: a packet without entries (a
        // restore request, an acknowledgement) can be imported whatever the target holds.
        // A probe carries the base too: it is applied only once the target holds it.
        for (o, n) in base.0.iter().filter(|_| !ranges.is_empty() || probe) {
            let b = (*n).min(own.get(o));
            if b == 0 {
                continue;
            }
            let hash = Self::entry_hash_at(&self.store, o, b)?.unwrap_or(ZERO_HASH);
            bases.push(wire::Base {
                origin: wire::Id(o.0),
                number: b,
                hash,
            });
        }
        if ranges.is_empty() && !probe && send.have_report && st.recovering.is_none() {
            // A packet without entries carries bases only where the target is known to hold
            // them (its last report, capped by the estimate), so it never waits, yet the
            // target checks our hashes there: a fork made by `--override` is reported at the
            // first exchange even when no packet carries that origin's entries (K14). Not
            // while we recover: our store is a copy that may hold entries a newer restoration
            // retired, which we give up when the newer ones arrive (K13); our bases would only
            // make the target report a fork that is already being repaired (seed 42008201).
            for (o, n) in base.0.iter() {
                let b = (*n).min(own.get(o)).min(send.reported_row.get(o));
                if b == 0 {
                    continue;
                }
                let hash = Self::entry_hash_at(&self.store, o, b)?.unwrap_or(ZERO_HASH);
                bases.push(wire::Base {
                    origin: wire::Id(o.0),
                    number: b,
                    hash,
                });
            }
        }
        let header = wire::Header {
            family: wire::Id(self.family.0),
            family_name: self.family_name.clone(),
            sender: wire::Id(self.me.0),
            sender_name: self.name(),
            sender_incarnation: st.incarnation,
            targets: vec![wire::Target {
                replica: wire::Id(target.0),
                incarnation: self.incarnation_of(target)?,
                packet_seq: seq,
                ack_incarnation: recv.sender_inc,
                applied_seq: recv.applied,
                seen_seq: recv.seen,
            }],
            bases,
            sender_row: self.sender_row(&own)?,
            controls,
            created_ms: self.env.now_ms(),
            new_replica: wire::Id::default(),
            comment: String::new(),
        };
        let advance_to = if target_recovering || st.recovering.is_some() {
            None
        } else {
            Some(own)
        };
        Ok(Some(ExportPlan {
            target: *target,
            kind: wire::Kind::Update,
            header,
            ranges,
            all_blobs: false,
            seq,
            advance_to,
            report: (recv.applied, recv.seen),
            entry_count,
            reason,
        }))
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
            txn.put(
                Keyspace::Peers,
                &keys::peer(keys::peers::LAST_SENT, t),
                &self.env.now_ms().to_be_bytes(),
            );
            txn.delete(Keyspace::Peers, &keys::peer(keys::peers::ANSWER_STALE, t));
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
