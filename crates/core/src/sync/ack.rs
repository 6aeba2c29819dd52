//! Acknowledgements and lost packets (PROTOCOL §5).
//!
//! Content packets to a target are numbered (per target, per sender incarnation). Every
//! packet reports, for its target, the highest sequence of the target's packets that the
//! sender has applied and the highest it has seen. A sender learns that a packet was lost when
//! the report shows a later packet seen but an earlier one not applied (the later one waits
//! for it), or when it has nothing new to send but packets are still unacknowledged after the
//! target has reported at least once; either way it lowers its estimate to what the target
//! reported and resends. A replica that has nothing to send but new acknowledgements to give
//! sends a small acknowledgement-only packet (sequence 0), which itself needs no
//! acknowledgement, so the exchange settles.

use msite_packet::wire;

use crate::codec::{be_u64, Dec, Enc};
use crate::error::Result;
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::Row;
use crate::replica::{get_u64, Replica};
use crate::store::{Keyspace, ReadView, Store, WriteOptions};
use crate::txn::Txn;

use super::assess::carries_own_request;

/// Sending state towards one target (reports are about our current incarnation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SendState {
    pub(super) last_seq: u64,
    pub(super) applied: u64,
    pub(super) seen: u64,
    pub(super) have_report: bool,
    pub(super) reported_row: Row,
}

impl SendState {
    pub(super) fn encode(&self) -> Vec<u8> {
        let e = Enc::new()
            .u64(self.last_seq)
            .u64(self.applied)
            .u64(self.seen)
            .bool(self.have_report);
        self.reported_row.encode(e).done()
    }
    pub(super) fn decode(v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v, "send state");
        let s = SendState {
            last_seq: d.u64()?,
            applied: d.u64()?,
            seen: d.u64()?,
            have_report: d.bool()?,
            reported_row: Row::decode(&mut d)?,
        };
        d.end()?;
        Ok(s)
    }
}

/// Receiving state from one sender (about the sender's incarnation `sender_inc`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RecvState {
    pub(super) sender_inc: u64,
    pub(super) applied: u64,
    pub(super) seen: u64,
    pub(super) reported_applied: u64,
    pub(super) reported_seen: u64,
    /// Whether we ever sent this sender a packet (a first, acknowledgement-only packet tells
    /// it that we answer, so it may resend what we never acknowledged).
    pub(super) reported: bool,
}

impl RecvState {
    pub(super) fn encode(&self) -> Vec<u8> {
        Enc::new()
            .u64(self.sender_inc)
            .u64(self.applied)
            .u64(self.seen)
            .u64(self.reported_applied)
            .u64(self.reported_seen)
            .bool(self.reported)
            .done()
    }
    pub(super) fn decode(v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v, "receive state");
        let s = RecvState {
            sender_inc: d.u64()?,
            applied: d.u64()?,
            seen: d.u64()?,
            reported_applied: d.u64()?,
            reported_seen: d.u64()?,
            reported: d.bool()?,
        };
        d.end()?;
        Ok(s)
    }
}

pub(super) fn load<R: ReadView + ?Sized, T>(
    r: &R,
    key: &[u8],
    f: impl Fn(&[u8]) -> Result<T>,
) -> Result<Option<T>> {
    match r.get(Keyspace::Peers, key)? {
        Some(v) => Ok(Some(f(&v)?)),
        None => Ok(None),
    }
}

impl<S: Store> Replica<S> {
    pub(super) fn send_state<R: ReadView + ?Sized>(r: &R, target: &ReplicaId) -> Result<SendState> {
        Ok(load(r, &keys::peer(keys::peers::SEND, target), SendState::decode)?.unwrap_or_default())
    }

    pub(super) fn recv_state<R: ReadView + ?Sized>(r: &R, sender: &ReplicaId) -> Result<RecvState> {
        Ok(load(r, &keys::peer(keys::peers::RECV, sender), RecvState::decode)?.unwrap_or_default())
    }

    /// A waiting packet still teaches (§4, §5): the sender's incarnation and its own restore
    /// request, that we saw the packet (our next report tells the sender that an earlier
    /// packet of its is missing), and, the first time we see it, its report on our packets.
    pub(super) fn note_waiting(&self, h: &wire::Header) -> Result<()> {
        self.learn_sender_request(h)?;
        let sender = ReplicaId(h.sender.0);
        let me_t = h.targets.iter().find(|t| t.replica.0 == self.me.0).cloned();
        let mut recv = Self::recv_state(&self.store, &sender)?;
        if recv.sender_inc != h.sender_incarnation {
            let newer = h.sender_incarnation > recv.sender_inc;
            recv = RecvState {
                sender_inc: h.sender_incarnation,
                ..Default::default()
            };
            if newer {
                // Our reports must name the sender's new incarnation even before any of its
                // packets applies here: otherwise it ignores them, never learns that its
                // packet was lost, and two replicas whose packets wait at each other stay
                // silent.
                let mut txn = Txn::new(&self.store);
                txn.put(
                    Keyspace::Peers,
                    &keys::peer(keys::peers::RECV, &sender),
                    &recv.encode(),
                );
                txn.commit(WriteOptions::SYNC)?;
            }
        }
        let Some(t) = me_t else { return Ok(()) };
        if t.packet_seq <= recv.seen {
            return Ok(());
        }
        recv.seen = t.packet_seq;
        let mut txn = Txn::new(&self.store);
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::RECV, &sender),
            &recv.encode(),
        );
        // Its report on our packets is news about the sender too: two replicas whose
        // packets wait at each other would otherwise never learn that theirs were lost.
        let sender_name = self.replica_name(&sender);
        let sender_holds_request = self
            .store
            .get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, &sender))?
            .is_some();
        let mut notes = Vec::new();
        Self::take_report(
            &mut txn,
            &sender,
            &sender_name,
            &t,
            &Row::from_wire(&h.sender_row),
            self.status()?.incarnation,
            sender_holds_request,
            true,
            &mut notes,
        )?;
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }

    /// What an applied packet tells about its sender (§4 step 7, §5), written into the
    /// import's transaction: our estimate of the sender, its report on our packets
    /// (`our_incarnation` is ours), what we received of its packets, and its incarnation.
    pub(super) fn take_news(
        &self,
        txn: &mut Txn<'_, S>,
        h: &wire::Header,
        me_t: &wire::Target,
        sender_name: &str,
        our_incarnation: u64,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let sender = ReplicaId(h.sender.0);
        let sender_row = Row::from_wire(&h.sender_row);
        let sender_holds_request = txn
            .get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, &sender))?
            .is_some();
        let revives = revives_completed(txn, h)?;
        let newest = {
            let r = Self::recv_state(txn, &sender)?;
            me_t.packet_seq > 0
                && (r.sender_inc != h.sender_incarnation || me_t.packet_seq > r.seen)
        };
        if revives {
            // The sender still asks for a restoration we saw complete: its store was put back
            // to a copy taken while it recovered (a snapshot rollback; K15). Its row is exact:
            // set our estimate to it, so our next packet gives back what it lost, including
            // its restore complete, which moves it to a new incarnation.
            set_estimate(txn, &sender, &sender_row)?;
        } else if carries_own_request(h) {
            self.raise_estimate_of_recovering(txn, &sender, &sender_row)?;
            if newest {
                lower_estimate_to(txn, &sender, &sender_row)?;
            }
        } else if !sender_holds_request {
            crate::restore::raise_estimate(txn, &sender, &sender_row)?;
        }
        Self::take_report(
            txn,
            &sender,
            sender_name,
            me_t,
            &sender_row,
            our_incarnation,
            sender_holds_request,
            newest,
            notes,
        )?;
        note_applied(txn, h, me_t)
    }

    /// Takes the sender's report on our packets (PROTOCOL §5): what it applied and saw of
    /// them. A later packet of ours seen but an earlier one not applied means one was lost:
    /// the estimate drops to what the sender holds, so the next export resends.
    pub(super) fn take_report(
        txn: &mut Txn<'_, S>,
        sender: &ReplicaId,
        sender_name: &str,
        me_t: &wire::Target,
        sender_row: &Row,
        our_incarnation: u64,
        sender_holds_request: bool,
        newest: bool,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        if me_t.ack_incarnation != our_incarnation {
            return Ok(());
        }
        let mut send = Self::send_state(txn, sender)?;
        // The sender's newest packet (its sequence above any seen, so not a reordered old
        // one) reports less of ours applied than an earlier report did: its store was put
        // back to an older copy that lost only other origins' entries, which no check
        // detects (K11). Its reports and row are the truth now: take them as they are.
        let regressed = newest && !sender_holds_request && me_t.applied_seq < send.applied;
        if regressed {
            send.applied = me_t.applied_seq;
            send.seen = me_t.seen_seq;
        } else {
            send.applied = send.applied.max(me_t.applied_seq);
            send.seen = send.seen.max(me_t.seen_seq);
        }
        send.have_report = true;
        send.reported_row = sender_row.clone();
        // The sender reports having seen more of our packets than we ever sent under this
        // incarnation: our store was put back to an older copy (a snapshot rollback that lost
        // no own entry) and forgot packets it had sent, or a crash lost a packet whose sending
        // state was already written (K11). Number our
        // next packet above what it has seen, and resend from what it holds.
        let forgotten = me_t.seen_seq > send.last_seq;
        if forgotten {
            send.last_seq = me_t.seen_seq;
        }
        // Likewise, the newest packet says it applied our packet `applied_seq`, yet its row
        // lacks entries that packet brought it to: resend from what it holds (rows only grow).
        let lost_since = regressed
            || forgotten
            || (newest
                && me_t.applied_seq > 0
                && !sender_holds_request
                && lacks_what_it_applied(txn, sender, me_t.applied_seq, sender_row)?);
        if lost_since
            || (me_t.seen_seq > me_t.applied_seq
                && send.last_seq > send.applied
                && !sender_holds_request)
        {
            // A later packet of ours waits at the sender: an earlier one was lost.
            // Lower the estimate to what the sender holds, so the next export resends.
            set_estimate(txn, sender, sender_row)?;
            notes.push(format!(
                "{sender_name} is missing a packet from this replica; the next export to it resends what it lacks"
            ));
        }
        forget_acknowledged_exports(txn, sender, send.applied)?;
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::SEND, sender),
            &send.encode(),
        );
        Ok(())
    }

    /// How many content packets to `target` are not yet acknowledged.
    pub fn unacknowledged(&self, target: &ReplicaId) -> Result<u64> {
        let s = Self::send_state(&self.store, target)?;
        Ok(s.last_seq.saturating_sub(s.applied))
    }
}

/// Whether the packet's sender asks for a restoration of its own that we saw complete.
fn revives_completed<S: Store>(txn: &Txn<'_, S>, h: &wire::Header) -> Result<bool> {
    let sender = ReplicaId(h.sender.0);
    let completed = get_u64(
        txn,
        Keyspace::Peers,
        &keys::peer(keys::peers::COMPLETED, &sender),
    )?;
    Ok(h.controls.iter().any(|c| {
        matches!(c, wire::Control::RestoreRequest { replica, incarnation, .. }
            if replica.0 == sender.0 && *incarnation <= completed)
    }))
}

/// Sets the estimate of `target` to `row` exactly.
fn set_estimate<S: Store>(txn: &mut Txn<'_, S>, target: &ReplicaId, row: &Row) -> Result<()> {
    for (k, _) in txn.scan_prefix(Keyspace::Epochs, &keys::estimate_prefix(target))? {
        txn.delete(Keyspace::Epochs, &k);
    }
    for (o, n) in &row.0 {
        txn.put(
            Keyspace::Epochs,
            &keys::estimate(target, o),
            &n.to_be_bytes(),
        );
    }
    Ok(())
}

/// A recovering replica's row only grows, unless its store was put back to a copy taken
/// earlier in the same restoration (a snapshot; the request keeps its incarnation, so we do
/// not roll back on it): its newest packet's row is exact, and an estimate above it makes
/// every packet to it wait (K11). Lowers each cell of the estimate of `target` above `row`.
fn lower_estimate_to<S: Store>(txn: &mut Txn<'_, S>, target: &ReplicaId, row: &Row) -> Result<()> {
    for (o, n) in &crate::replica::read_row(txn, &keys::estimate_prefix(target))?.0 {
        if row.get(o) < *n {
            txn.put(
                Keyspace::Epochs,
                &keys::estimate(target, o),
                &row.get(o).to_be_bytes(),
            );
        }
    }
    Ok(())
}

/// Records the sender's packet as applied and seen (under the sender's incarnation), and the
/// sender's incarnation when it is newer than the one recorded.
fn note_applied<S: Store>(
    txn: &mut Txn<'_, S>,
    h: &wire::Header,
    me_t: &wire::Target,
) -> Result<()> {
    let sender = ReplicaId(h.sender.0);
    let mut recv = Replica::<S>::recv_state(txn, &sender)?;
    if recv.sender_inc != h.sender_incarnation {
        recv = RecvState {
            sender_inc: h.sender_incarnation,
            ..Default::default()
        };
    }
    recv.applied = recv.applied.max(me_t.packet_seq);
    recv.seen = recv.seen.max(me_t.packet_seq);
    txn.put(
        Keyspace::Peers,
        &keys::peer(keys::peers::RECV, &sender),
        &recv.encode(),
    );
    let k = keys::peer(keys::peers::INCARNATION, &sender);
    if h.sender_incarnation > get_u64(txn, Keyspace::Peers, &k)? {
        txn.put(Keyspace::Peers, &k, &h.sender_incarnation.to_be_bytes());
    }
    Ok(())
}

/// Whether `sender_row` lacks entries that our packet `applied` brought the sender to (the
/// row this replica recorded when it exported that packet).
fn lacks_what_it_applied<S: Store>(
    txn: &Txn<'_, S>,
    sender: &ReplicaId,
    applied: u64,
    sender_row: &Row,
) -> Result<bool> {
    match txn.get(Keyspace::Peers, &keys::export_log(sender, applied))? {
        Some(v) => {
            let after = Row::decode(&mut Dec::new(&v, "export log"))?;
            Ok(after.0.iter().any(|(o, n)| sender_row.get(o) < *n))
        }
        None => Ok(false),
    }
}

/// Forgets the rows recorded for our packets to `target` below `applied`: it acknowledged
/// them.
fn forget_acknowledged_exports<S: Store>(
    txn: &mut Txn<'_, S>,
    target: &ReplicaId,
    applied: u64,
) -> Result<()> {
    for (k, _) in txn.scan_prefix(
        Keyspace::Peers,
        &keys::peer(keys::peers::EXPORT_LOG, target),
    )? {
        if k.len() == 25 && be_u64(&k[17..])? < applied {
            txn.delete(Keyspace::Peers, &k);
        }
    }
    Ok(())
}
