//! Restoring a replica from backup (PROTOCOL §6): the *restored* mark, `restorereplica`,
//! restore requests and their acknowledgements at siblings, and restore complete.
//!
//! Local state (never replicated): the *restored* mark set by `msite restore`, the
//! *recovering* record (incarnation, restored row, the awaited siblings and what each one's
//! acknowledgement said), and the *rolled back* mark set when a sibling shows that this
//! replica lost entries of its own. Replicated state: acknowledgements and restore complete are
//! numbered entries; restore requests and provisional acknowledgements (from a replica that is
//! itself recovering, which may not number anything yet) are control records that every
//! replica propagates in every packet until the matching restore complete arrives.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{Dec, Enc};
use crate::env::incarnation_text;
use crate::error::{CoreError, Result};
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::{Entry, Op, Row};
use crate::replica::{get_u64, Appender, Replica, StoredEntry};
use crate::store::{KeyRange, Keyspace, ReadView, Store, WriteOptions};
use crate::txn::Txn;

/// The local restoration state of a recovering replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovering {
    /// The new incarnation.
    pub incarnation: u64,
    /// The own row as restored.
    pub row: Row,
    /// Whether the awaited set was named by the operator (`--wait-for`); otherwise every
    /// sibling is awaited, including ones learned of while recovering.
    pub explicit: bool,
    /// Awaited siblings still flagged *expected to send recovery update*, each with the
    /// `held` count of its acknowledgement once one arrived (the flag clears when this replica
    /// holds that many of its own entries).
    pub awaited: BTreeMap<ReplicaId, Option<u64>>,
    /// Every acknowledgement received for this incarnation (sibling → `held`), kept after its
    /// flag cleared, so that amending the awaited set never waits again for an answer that
    /// already came.
    pub acks: BTreeMap<ReplicaId, u64>,
    /// The siblings whose numbered acknowledgement for this incarnation arrived: theirs is the
    /// answer from then on, and provisional ones from them are ignored.
    pub numbered: BTreeSet<ReplicaId>,
}

impl Recovering {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new().u64(self.incarnation);
        e = self
            .row
            .encode(e)
            .bool(self.explicit)
            .u64(self.awaited.len() as u64);
        for (r, held) in &self.awaited {
            e = e.rid(r);
            e = match held {
                Some(h) => e.u8(1).u64(*h),
                None => e.u8(0),
            };
        }
        e = e.u64(self.acks.len() as u64);
        for (r, held) in &self.acks {
            e = e.rid(r).u64(*held);
        }
        e = e.u64(self.numbered.len() as u64);
        for r in &self.numbered {
            e = e.rid(r);
        }
        e.done()
    }

    fn decode(v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v, "recovering state");
        let incarnation = d.u64()?;
        let row = Row::decode(&mut d)?;
        let explicit = d.bool()?;
        let n = d.u64()?;
        let mut awaited = BTreeMap::new();
        for _ in 0..n {
            let r = d.rid()?;
            let held = match d.u8()? {
                0 => None,
                _ => Some(d.u64()?),
            };
            awaited.insert(r, held);
        }
        let n = d.u64()?;
        let mut acks = BTreeMap::new();
        for _ in 0..n {
            let r = d.rid()?;
            acks.insert(r, d.u64()?);
        }
        let mut numbered = BTreeSet::new();
        for _ in 0..d.u64()? {
            numbered.insert(d.rid()?);
        }
        d.end()?;
        Ok(Recovering {
            incarnation,
            row,
            explicit,
            awaited,
            acks,
            numbered,
        })
    }

    /// This restoration amended by `restorereplica`: the incarnation is kept, the awaited set
    /// becomes `awaited_ids`, and acknowledgements already received still count.
    fn amended(mut self, awaited_ids: &[ReplicaId], explicit: bool) -> Self {
        self.awaited = awaited_ids
            .iter()
            .map(|id| (*id, self.acks.get(id).copied()))
            .collect();
        self.explicit = explicit;
        self
    }

    /// Records an acknowledgement from `acker` for this incarnation.
    /// A numbered acknowledgement: the acker's own answer, in its own oplog order, so it
    /// supersedes provisional ones (which may have counted entries the acker has since given
    /// up as retired).
    fn record_numbered_ack(&mut self, acker: ReplicaId, held: u64) {
        self.numbered.insert(acker);
        self.acks.insert(acker, held);
        if let Some(slot) = self.awaited.get_mut(&acker) {
            *slot = Some(held);
        }
    }

    /// Records a provisional acknowledgement from `acker` (one that counts here: see
    /// `restoration_is_older`). The latest one received is the answer: an acker never raises
    /// its provisional `held` for one incarnation, it only lowers it when it gives up entries
    /// a newer timeline retired (K19), so an older answer arriving late only asks for more.
    /// Keeping the largest would wait forever for retired entries once the acker lowered its
    /// answer. Ignored once the acker's numbered acknowledgement came.
    fn record_ack(&mut self, acker: ReplicaId, held: u64) {
        if self.numbered.contains(&acker) {
            return;
        }
        self.acks.insert(acker, held);
        if let Some(slot) = self.awaited.get_mut(&acker) {
            *slot = Some(held);
        }
    }
}

/// A restore request held by a sibling for propagation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRequest {
    /// The restoring replica.
    pub replica: ReplicaId,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its own row as restored.
    pub row: Row,
}

/// A provisional acknowledgement held for propagation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionalAck {
    /// The acknowledging (itself recovering) replica.
    pub acker: ReplicaId,
    /// The restoring replica.
    pub replica: ReplicaId,
    /// The incarnation acknowledged.
    pub incarnation: u64,
    /// How many of the restoring replica's entries the acker held.
    pub held: u64,
}

/// The restoration-related state of a replica, for `lsreplica --long` and the guards.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Status {
    /// Restored from a backup; `restorereplica` has not run.
    pub restored: bool,
    /// Why the replica refuses local changes after a detected rollback.
    pub rolled_back: Option<String>,
    /// The recovering state.
    pub recovering: Option<Recovering>,
    /// This replica's incarnation.
    pub incarnation: u64,
}

/// What `restorereplica` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreStart {
    /// The incarnation of the request.
    pub incarnation: u64,
    /// Whether this amended a restoration already in progress.
    pub amended: bool,
    /// The awaited siblings (names).
    pub awaiting: Vec<String>,
    /// Whether the restoration completed at once (`--override`, or nobody to wait for).
    pub completed: bool,
}

/// Own entries no sibling is known to hold ([`Replica::own_entries_no_sibling_holds`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnheldOwn {
    /// How many (numbers `first..=last`; 0 when every own entry is held by some sibling).
    pub count: u64,
    /// The first number no sibling is known to hold.
    pub first: u64,
    /// The last own number.
    pub last: u64,
    /// The first few of them, in number order.
    pub first_entries: Vec<Entry>,
}

fn dec_request(replica: ReplicaId, v: &[u8]) -> Result<HeldRequest> {
    let mut d = Dec::new(v, "restore request");
    let incarnation = d.u64()?;
    let row = Row::decode(&mut d)?;
    d.end()?;
    Ok(HeldRequest {
        replica,
        incarnation,
        row,
    })
}

fn enc_request(r: &HeldRequest) -> Vec<u8> {
    r.row.encode(Enc::new().u64(r.incarnation)).done()
}

impl<S: Store> Replica<S> {
    /// The restoration-related state.
    pub fn status(&self) -> Result<Status> {
        let s = &self.store;
        let rolled_back = match s.get(Keyspace::Meta, keys::ROLLED_BACK)? {
            Some(v) => Some(Dec::new(&v, "rolled back").str()?),
            None => None,
        };
        let recovering = match s.get(Keyspace::Meta, keys::RECOVERING)? {
            Some(v) => Some(Recovering::decode(&v)?),
            None => None,
        };
        Ok(Status {
            restored: s.get(Keyspace::Meta, keys::RESTORED)?.is_some(),
            rolled_back,
            recovering,
            incarnation: self.incarnation_of(&self.me)?,
        })
    }

    /// Whether our restoration awaits `sibling` and `sibling` is restoring too, having begun
    /// after us: its provisional acknowledgement does not count here (K32), so it answers
    /// with the numbered acknowledgement it makes when its own restoration completes.
    pub fn awaits_completion_of(&self, sibling: &ReplicaId) -> Result<bool> {
        let txn = Txn::new(&self.store);
        let Some(rec) = Self::recovering_in(&txn)? else {
            return Ok(false);
        };
        let restoring = txn
            .get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, sibling))?
            .is_some();
        Ok(rec.awaited.contains_key(sibling)
            && restoring
            && !self.restoration_is_older(&txn, sibling, &rec)?)
    }

    pub(crate) fn recovering_in(txn: &Txn<'_, S>) -> Result<Option<Recovering>> {
        match txn.get(Keyspace::Meta, keys::RECOVERING)? {
            Some(v) => Ok(Some(Recovering::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Marks the store *restored* (done by `msite restore` on the store it made): it refuses
    /// local changes, exports and imports until `restorereplica` runs.
    pub fn mark_restored(&self) -> Result<()> {
        use crate::store::StoreExt;
        let v = Enc::new().u64(self.env.now_ms()).done();
        self.store
            .put_one(Keyspace::Meta, keys::RESTORED, &v, WriteOptions::SYNC)?;
        Ok(())
    }

    /// Marks the replica rolled back (a sibling showed it lost entries of its own).
    pub(crate) fn mark_rolled_back(&self, reason: &str) -> Result<()> {
        let mut txn = Txn::new(&self.store);
        Self::lock_rolled_back(&mut txn, reason);
        Ok(txn.commit(WriteOptions::SYNC)?)
    }

    /// Locks the replica as rolled back in `txn`, for `reason` (what showed it): local changes,
    /// exports and imports are refused until `restorereplica` (invariant 8).
    pub(crate) fn lock_rolled_back(txn: &mut Txn<'_, S>, reason: &str) {
        txn.put(
            Keyspace::Meta,
            keys::ROLLED_BACK,
            &Enc::new().str(reason).done(),
        );
    }

    /// Whether a packet's base naming a different entry under our own `number` (whose
    /// incarnation the base does not say) shows that this replica numbered it twice: no
    /// restoration of ours began a new timeline at or below it, so both entries belong to the
    /// timeline this replica is on, and only a copy put back without `msite restore` numbers
    /// one number twice. Otherwise the other entry may be one an `--override` restoration of
    /// ours retired: a fork, not a rollback.
    pub(crate) fn own_number_reused(&self, number: u64) -> Result<bool> {
        let txn = Txn::new(&self.store);
        Ok(Self::restore_complete_within(&txn, &self.me, 0, number)?.is_none())
    }

    /// Restore requests held for propagation.
    pub fn held_requests(&self) -> Result<Vec<HeldRequest>> {
        held_requests_in(&self.store)
    }

    /// Provisional acknowledgements held for propagation.
    pub fn provisional_acks(&self) -> Result<Vec<ProvisionalAck>> {
        prov_acks_in(&self.store)
    }

    /// The incarnation of `r`'s last completed restoration, if any.
    pub fn completed_incarnation(&self, r: &ReplicaId) -> Result<u64> {
        get_u64(
            &self.store,
            Keyspace::Peers,
            &keys::peer(keys::peers::COMPLETED, r),
        )
    }

    /// Every sibling this store knows of: its replica objects, and the siblings heard of in
    /// packet headers (one created after a backup, or whose creation entry the store lost, is
    /// known only that way; K3). Packets name them all in their sender row (with 0 where the
    /// sender holds none of their entries), so that what one replica heard of reaches the
    /// others, and a restoration can await a sibling that only a relay knew of.
    pub fn known_siblings(&self) -> Result<std::collections::BTreeSet<ReplicaId>> {
        let mut siblings: std::collections::BTreeSet<ReplicaId> =
            self.view().replicas()?.into_iter().map(|r| r.id).collect();
        for kv in self
            .store
            .scan(Keyspace::Peers, KeyRange::prefix(&[keys::peers::HEARD]))?
        {
            let (k, _) = kv?;
            if let Ok(id) = <[u8; 16]>::try_from(&k[1..]) {
                siblings.insert(ReplicaId(id));
            }
        }
        // Siblings a restoration awaits or heard from (one named by id by the operator may be
        // known nowhere else).
        if let Some(v) = self.store.get(Keyspace::Meta, keys::RECOVERING)? {
            let rec = Recovering::decode(&v)?;
            siblings.extend(rec.awaited.keys().copied());
            siblings.extend(rec.acks.keys().copied());
        }
        siblings.remove(&self.me);
        // A retired replica is no sibling any more (docs/protocol.md §10).
        for r in self.retired()? {
            siblings.remove(&r);
        }
        Ok(siblings)
    }

    /// This replica's own entries that no sibling is known to hold: those numbered above the
    /// largest number of ours that any sibling's estimate row gives (an export advances the
    /// target's estimate, so an entry never exported is always among them). Replacing the store
    /// loses them for the family. `sample` bounds how many are decoded into
    /// [`UnheldOwn::first_entries`].
    pub fn own_entries_no_sibling_holds(&self, sample: usize) -> Result<UnheldOwn> {
        let last = self.own_row()?.get(&self.me);
        let mut held = 0;
        for s in self.known_siblings()? {
            held = held.max(self.estimate(&s)?.get(&self.me));
        }
        let mut first_entries = Vec::new();
        if last > held {
            let lo = keys::oplog(&self.me, held + 1);
            let hi = keys::oplog(&self.me, u64::MAX);
            let range = KeyRange::between(lo.to_vec(), hi.to_vec());
            for kv in self.store.scan(Keyspace::Oplog, range)?.take(sample) {
                let (_, v) = kv?;
                first_entries.push(Entry::decode_verified(&StoredEntry::decode(&v)?.canonical)?);
            }
        }
        Ok(UnheldOwn {
            count: last.saturating_sub(held),
            first: held + 1,
            last,
            first_entries,
        })
    }

    /// Starts (or, while recovering, amends) the restoration procedure.
    ///
    /// `wait_for`: the awaited siblings (empty: every sibling, and any learned of later).
    /// `override_`: complete now without waiting (entries not yet recovered may be lost; the
    /// hash chains will report any conflict, see docs/protocol.md).
    pub fn restorereplica(&self, wait_for: &[ReplicaId], override_: bool) -> Result<RestoreStart> {
        self.start_restoration(wait_for, &[], override_)
    }

    /// `restorereplica` in default mode (every sibling this store knows of, and any heard of
    /// while recovering) that also awaits `also`: siblings the operator names because the
    /// restored store cannot know them (created from this replica after the backup, and heard
    /// of by no sibling; PROTOCOL §6.9, docs/protocol.md "Decision (K3)").
    pub fn restorereplica_also(&self, also: &[ReplicaId], override_: bool) -> Result<RestoreStart> {
        self.start_restoration(&[], also, override_)
    }

    fn start_restoration(
        &self,
        wait_for: &[ReplicaId],
        also: &[ReplicaId],
        override_: bool,
    ) -> Result<RestoreStart> {
        if wait_for.iter().chain(also).any(|w| *w == self.me) {
            return Err(CoreError::Invalid(
                "a replica cannot wait for itself".into(),
            ));
        }
        self.refuse_awaiting_retired(wait_for.iter().chain(also))?;
        let mut txn = Txn::new(&self.store);
        let existing = Self::restoration_to_amend(&txn)?;
        let amended = existing.is_some();
        let awaited_ids = self.awaited_ids(wait_for, also)?;
        let explicit = !wait_for.is_empty();
        let rec = match existing {
            Some(rec) => rec.amended(&awaited_ids, explicit),
            None => self.new_restoration(&mut txn, &awaited_ids, explicit)?,
        };
        txn.delete(Keyspace::Meta, keys::RESTORED);
        txn.delete(Keyspace::Meta, keys::ROLLED_BACK);
        txn.put(Keyspace::Meta, keys::RECOVERING, &rec.encode());
        let mut ap = Appender::load(&txn)?;
        let completed = self.maybe_complete(&mut txn, &mut ap, override_)?;
        let still = Self::recovering_in(&txn)?
            .map(|r| r.awaited)
            .unwrap_or_default();
        let awaiting = still.keys().map(|r| self.replica_name(r)).collect();
        txn.commit(WriteOptions::SYNC)?;
        Ok(RestoreStart {
            incarnation: rec.incarnation,
            amended,
            awaiting,
            completed,
        })
    }

    /// A restoration cannot await a replica retired here: it will never answer (the default
    /// awaited set leaves retired replicas out; an operator naming one is told so).
    fn refuse_awaiting_retired<'a>(
        &self,
        named: impl Iterator<Item = &'a ReplicaId>,
    ) -> Result<()> {
        for id in named {
            if let Some(r) = self.retirement(id)? {
                return Err(CoreError::Invalid(format!(
                    "replica {} was retired by {} (`msite rmreplica`) and will never answer; leave it out of the replicas to wait for",
                    self.replica_name(id),
                    self.retired_by_name(&r)
                )));
            }
        }
        Ok(())
    }

    /// The restoration `restorereplica` amends: the one in progress, unless the store was put
    /// back from a backup or found rolled back. Such a store always starts a new restoration,
    /// even when the backup was taken while an earlier one was in progress: amending that
    /// record would keep an incarnation whose old packets still pass, and the siblings, which
    /// saw this replica get further under it, would never resend.
    fn restoration_to_amend(txn: &Txn<'_, S>) -> Result<Option<Recovering>> {
        let copied = txn.get(Keyspace::Meta, keys::RESTORED)?.is_some()
            || txn.get(Keyspace::Meta, keys::ROLLED_BACK)?.is_some();
        if copied {
            Ok(None)
        } else {
            Self::recovering_in(txn)
        }
    }

    /// The siblings a restoration awaits: `wait_for` when given, else every sibling this store
    /// knows of and `also`.
    fn awaited_ids(&self, wait_for: &[ReplicaId], also: &[ReplicaId]) -> Result<Vec<ReplicaId>> {
        if !wait_for.is_empty() {
            return Ok(wait_for.to_vec());
        }
        let mut siblings = self.known_siblings()?;
        siblings.extend(also.iter().copied());
        Ok(siblings.into_iter().collect())
    }

    /// A new restoration: incarnation `max(now, recorded + 1)`, the own row as restored, every
    /// awaited sibling without an acknowledgement yet, and packet sequences restarted.
    fn new_restoration(
        &self,
        txn: &mut Txn<'_, S>,
        awaited_ids: &[ReplicaId],
        explicit: bool,
    ) -> Result<Recovering> {
        let inc_key = keys::peer(keys::peers::INCARNATION, &self.me);
        let recorded = get_u64(&*txn, Keyspace::Peers, &inc_key)?;
        let incarnation = self.env.now_ms().max(recorded + 1);
        let row = crate::replica::read_row(&self.store, keys::OWN_PREFIX)?;
        txn.put(Keyspace::Peers, &inc_key, &incarnation.to_be_bytes());
        restart_packet_sequences(txn)?;
        Ok(Recovering {
            incarnation,
            row,
            explicit,
            awaited: awaited_ids.iter().map(|id| (*id, None)).collect(),
            acks: BTreeMap::new(),
            numbered: BTreeSet::new(),
        })
    }

    /// Clears flags whose acknowledgement is satisfied and, when none is left (or on
    /// `force`), creates restore complete and unlocks. Returns whether it completed.
    pub(crate) fn maybe_complete(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        force: bool,
    ) -> Result<bool> {
        let Some(mut rec) = Self::recovering_in(txn)? else {
            return Ok(false);
        };
        let own = get_u64(txn, Keyspace::Epochs, &keys::own(&self.me))?;
        rec.awaited
            .retain(|_, held| !matches!(held, Some(h) if own >= *h));
        if !rec.awaited.is_empty() && !force {
            txn.put(Keyspace::Meta, keys::RECOVERING, &rec.encode());
            return Ok(false);
        }
        txn.delete(Keyspace::Meta, keys::RECOVERING);
        let row = crate::replica::read_row(txn, keys::OWN_PREFIX)?;
        let mut row_after = row.clone();
        row_after.set(self.me, own + 1);
        txn.put(
            Keyspace::Peers,
            &keys::restore_complete_at(&self.me, own + 1),
            &[],
        );
        lower_estimates_below(txn, &self.me, own + 1)?;
        self.append_local(
            txn,
            ap,
            Op::RestoreComplete {
                incarnation: rec.incarnation,
                row: row_after,
            },
        )?;
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::COMPLETED, &self.me),
            &rec.incarnation.to_be_bytes(),
        );
        self.number_provisional_acks(txn, ap)?;
        Ok(true)
    }

    /// Our own provisional acknowledgements were answers given while we could not number
    /// entries; at completion numbered acknowledgements replace them for requests still held.
    fn number_provisional_acks(&self, txn: &mut Txn<'_, S>, ap: &mut Appender) -> Result<()> {
        let held = held_requests_in(txn)?;
        for (k, _) in txn.scan_prefix(Keyspace::Peers, &[keys::peers::PROV_ACK])? {
            if k.len() == 33 && k[17..33] == self.me.0 {
                txn.delete(Keyspace::Peers, &k);
            }
        }
        for req in held {
            let held_n = get_u64(txn, Keyspace::Epochs, &keys::own(&req.replica))?;
            self.append_local(
                txn,
                ap,
                Op::RestoreAck {
                    replica: req.replica,
                    incarnation: req.incarnation,
                    held: held_n,
                },
            )?;
        }
        Ok(())
    }

    /// Handles a restore request received in a packet (directly or relayed): a request that
    /// is news is held for propagation, the estimate of its replica rolls back to its row,
    /// and it is acknowledged (provisionally while this replica recovers itself).
    pub(crate) fn on_request(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        req: &HeldRequest,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        if req.replica == self.me {
            return self.on_own_request_echoed(txn, req, notes);
        }
        if !self.request_is_news(txn, req)? {
            return Ok(());
        }
        let key = keys::peer(keys::peers::REQUEST, &req.replica);
        txn.put(Keyspace::Peers, &key, &enc_request(req));
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::INCARNATION, &req.replica),
            &req.incarnation.to_be_bytes(),
        );
        Self::roll_estimate_back(txn, req)?;
        // Its reports about our packets restart under its new incarnation.
        txn.delete(
            Keyspace::Peers,
            &keys::peer(keys::peers::RECV, &req.replica),
        );
        self.acknowledge_request(txn, ap, req, notes)
    }

    /// Our own request, echoed back by a sibling. One newer than ours means this store is
    /// older than a restoration the family already saw (a clock that went back): move our
    /// request past it, or the siblings would ignore it as superseded.
    fn on_own_request_echoed(
        &self,
        txn: &mut Txn<'_, S>,
        req: &HeldRequest,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        if let Some(mut rec) = Self::recovering_in(txn)? {
            if req.incarnation > rec.incarnation {
                let now_uses = self.move_request_past(txn, &mut rec, req.incarnation);
                notes.push(format!(
                    "the family holds a newer restore request of this replica; this restoration now uses incarnation {}",
                    incarnation_text(now_uses)
                ));
            }
        }
        Ok(())
    }

    /// Whether another replica's request changes anything here. Not when that replica is
    /// retired (its restoration concerns nobody, docs/protocol.md §10), when that restoration
    /// is over (never resurrect it), or when the same request or a newer one is held.
    fn request_is_news(&self, txn: &Txn<'_, S>, req: &HeldRequest) -> Result<bool> {
        if crate::retire::retirement_in(txn, &req.replica)?.is_some() {
            return Ok(false);
        }
        let completed = get_u64(
            txn,
            Keyspace::Peers,
            &keys::peer(keys::peers::COMPLETED, &req.replica),
        )?;
        if req.incarnation <= completed {
            return Ok(false);
        }
        Ok(match held_request_of(txn, &req.replica)? {
            Some(held) => held.incarnation < req.incarnation,
            None => true,
        })
    }

    /// Rolls the estimate of the requesting replica back to what it now holds: its request's
    /// row, but not past a restore complete within it. The restored copy may be older than a
    /// restoration of that origin that retired what the copy holds from that restoration's
    /// restore complete on (K13). Without the hashes of the copy we cannot tell, so give back
    /// from the earliest such restore complete within the carried row: where the copy holds
    /// the same entries they are skipped, where it holds retired ones the replica sees the
    /// newer timeline and replaces them.
    fn roll_estimate_back(txn: &mut Txn<'_, S>, req: &HeldRequest) -> Result<()> {
        for (k, _) in txn.scan_prefix(Keyspace::Epochs, &keys::estimate_prefix(&req.replica))? {
            txn.delete(Keyspace::Epochs, &k);
        }
        for (o, n) in &req.row.0 {
            let n = match Self::restore_complete_within(txn, o, 0, *n)? {
                Some(c) => c - 1,
                None => *n,
            };
            txn.put(
                Keyspace::Epochs,
                &keys::estimate(&req.replica, o),
                &n.to_be_bytes(),
            );
        }
        Ok(())
    }

    /// Acknowledges a restore request with how many of its replica's entries we hold: a
    /// numbered `RestoreAck`, or, while this replica recovers and may number nothing, a
    /// provisional acknowledgement. A replica that applied its own retirement numbers nothing
    /// after it (its siblings would refuse the entry and every later packet of its, the last
    /// one carrying the retirement included), and nobody awaits it: it does not acknowledge.
    fn acknowledge_request(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        req: &HeldRequest,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let held = get_u64(txn, Keyspace::Epochs, &keys::own(&req.replica))?;
        let name = self.replica_name(&req.replica);
        if crate::retire::retirement_in(&*txn, &self.me)?.is_some() {
            notes.push(format!(
                "received the restore request of {name}; not acknowledged: this replica is retired"
            ));
        } else if Self::recovering_in(txn)?.is_some() {
            let k = keys::peer2(keys::peers::PROV_ACK, &req.replica, &self.me);
            txn.put(
                Keyspace::Peers,
                &k,
                &Enc::new().u64(req.incarnation).u64(held).done(),
            );
            notes.push(format!(
                "received the restore request of {name} (incarnation {}); acknowledged provisionally while this replica recovers",
                incarnation_text(req.incarnation)
            ));
        } else {
            self.append_local(
                txn,
                ap,
                Op::RestoreAck {
                    replica: req.replica,
                    incarnation: req.incarnation,
                    held,
                },
            )?;
            notes.push(format!(
                "received the restore request of {name} (incarnation {}); acknowledged, and its packets will carry everything since its restored row",
                incarnation_text(req.incarnation)
            ));
        }
        Ok(())
    }

    /// The lowest number `c` of a restore complete of `origin` known here with
    /// `above < c <= at_most`: where a restoration of `origin` began a new timeline.
    fn restore_complete_within(
        txn: &Txn<'_, S>,
        origin: &ReplicaId,
        above: u64,
        at_most: u64,
    ) -> Result<Option<u64>> {
        let prefix = keys::peer(keys::peers::RESTORE_COMPLETE_AT, origin);
        for (k, _) in txn.scan_prefix(Keyspace::Peers, &prefix)? {
            if let Ok(b) = <[u8; 8]>::try_from(&k[prefix.len()..]) {
                let c = u64::from_be_bytes(b);
                if c > above {
                    return Ok((c <= at_most).then_some(c));
                }
            }
        }
        Ok(None)
    }

    /// Raises the estimate of a recovering `sender` to the row its packet carries, but not
    /// past a restore complete it has not been shown to hold: its copy may be older than that
    /// restoration and hold retired entries there (K13; see `on_request`).
    pub(crate) fn raise_estimate_of_recovering(
        &self,
        txn: &mut Txn<'_, S>,
        sender: &ReplicaId,
        row: &Row,
    ) -> Result<()> {
        for (o, n) in &row.0 {
            let k = keys::estimate(sender, o);
            let cur = get_u64(txn, Keyspace::Epochs, &k)?;
            let n = match Self::restore_complete_within(txn, o, cur, *n)? {
                Some(c) => c - 1,
                None => *n,
            };
            if n > cur {
                txn.put(Keyspace::Epochs, &k, &n.to_be_bytes());
            }
        }
        Ok(())
    }

    /// Whether the entry held here under `theirs`' number was made under a later incarnation of
    /// its origin than `theirs` (so `theirs` belongs to a timeline a restoration retired).
    pub(crate) fn holds_newer(&self, txn: &Txn<'_, S>, theirs: &Entry) -> Result<bool> {
        match txn.get(Keyspace::Oplog, &keys::oplog(&theirs.origin, theirs.number))? {
            Some(v) => {
                let ours = Entry::decode_verified(&StoredEntry::decode(&v)?.canonical)?;
                Ok(ours.incarnation > theirs.incarnation)
            }
            None => Ok(false),
        }
    }

    /// While recovering: `theirs` arrived under a number this store already holds for its
    /// origin, with a different entry. If `theirs` was made under a later incarnation of its
    /// origin than the entry held here, the held one belongs to a timeline that a restoration
    /// of that origin retired (only the origin numbers its entries, so two entries under one
    /// number mean it numbered again after a restoration, and incarnations grow with each
    /// restoration): this store is a copy older than that restoration (K13). Removes the held
    /// entries of that origin from that number on and rebuilds the object base from the
    /// entries that remain, in apply order; returns a note for the operator. Returns `None`
    /// (and changes nothing) when the held entry is the same or the newer one.
    ///
    /// In default mode no other entry can depend on the removed ones: they never reached a
    /// replica that outlived the restoration that retired them, or that restoration would
    /// have recovered them. After `--override` one may; then the rebuild fails and the packet
    /// is refused as divergent (the fork is reported, nothing is applied). The whole rebuild is part of the import's transaction, so a crash leaves the
    /// store as it was before. Content the packet being imported carries (`arriving_blobs`)
    /// stays even if only removed entries referred to it so far.
    pub(crate) fn retire_if_superseded(
        &self,
        txn: &mut Txn<'_, S>,
        theirs: &Entry,
        arriving_blobs: &std::collections::HashSet<crate::ids::Hash>,
    ) -> Result<Option<String>> {
        let o = theirs.origin;
        let Some(v) = txn.get(Keyspace::Oplog, &keys::oplog(&o, theirs.number))? else {
            return Ok(None);
        };
        let held = StoredEntry::decode(&v)?;
        if held.hash == theirs.hash {
            return Ok(None);
        }
        let ours = Entry::decode_verified(&held.canonical)?;
        if ours.incarnation >= theirs.incarnation {
            return Ok(None);
        }
        if let Some(why) = self.cannot_give_up(
            &o,
            theirs.number,
            "give up entries a newer restoration retired",
        )? {
            return Err(CoreError::Refused(crate::error::Refusal::Other(why)));
        }
        let (removed, last) =
            self.give_up_from(txn, &o, theirs.number, arriving_blobs, true, &mut |_, _| {
                Ok(())
            })?;
        Ok(Some(format!(
            "this store held {removed} entries of {} (numbers {}..={last}) that its restoration of incarnation {} replaced: the store is older than that restoration; they were removed and the newer history applied",
            self.replica_name(&o),
            theirs.number,
            incarnation_text(theirs.incarnation)
        )))
    }

    /// Gives up every entry of origin `o` numbered `from` or above (the machinery shared by
    /// retired entries, K13, and fork repair, `fork.rs`): each is shown to `visit` before it
    /// goes, the own row of `o` drops to `from - 1`, no estimate counts them any more,
    /// provisional acknowledgements that counted them are lowered (and, on `retired`, the
    /// acknowledgements of our own restoration: nobody can give retired entries back), and
    /// the object base is rebuilt from the remaining oplog in apply order. Returns how many
    /// entries went and the last number among them. Refused as divergent (the caller drops
    /// the transaction) when this replica's own creation is among them or another origin's
    /// entry builds on them.
    pub(crate) fn give_up_from(
        &self,
        txn: &mut Txn<'_, S>,
        o: &ReplicaId,
        from: u64,
        arriving_blobs: &std::collections::HashSet<crate::ids::Hash>,
        retired: bool,
        visit: &mut dyn FnMut(&Txn<'_, S>, &StoredEntry) -> Result<()>,
    ) -> Result<(u64, u64)> {
        let (removed, last, removed_blobs) = self.remove_entries_from(txn, o, from, visit)?;
        match from - 1 {
            0 => txn.delete(Keyspace::Epochs, &keys::own(o)),
            n => txn.put(Keyspace::Epochs, &keys::own(o), &n.to_be_bytes()),
        }
        self.lower_counts_of(txn, o, from - 1, retired)?;
        self.rebuild_without(txn, o, from, removed_blobs, arriving_blobs)?;
        Ok((removed, last))
    }

    /// Deletes the entries of `o` numbered `from` or above, each shown to `visit` first.
    /// Returns how many, the last number, and the content they referred to.
    fn remove_entries_from(
        &self,
        txn: &mut Txn<'_, S>,
        o: &ReplicaId,
        from: u64,
        visit: &mut dyn FnMut(&Txn<'_, S>, &StoredEntry) -> Result<()>,
    ) -> Result<(u64, u64, BTreeSet<crate::ids::Hash>)> {
        let start = keys::oplog(o, from);
        let (mut removed, mut last) = (0u64, from);
        let mut removed_blobs = BTreeSet::new();
        for (k, v) in txn.scan_prefix(Keyspace::Oplog, &o.0)? {
            if k.as_slice() < start.as_slice() {
                continue;
            }
            let stored = StoredEntry::decode(&v)?;
            if let Op::CreateReplica { replica, .. } = Entry::decode_verified(&stored.canonical)?.op
            {
                if replica == self.me {
                    // Our own creation reached us, so that timeline outlived the
                    // restoration (one with --override): a fork, not a retired copy.
                    return Err(CoreError::Refused(crate::error::Refusal::Divergent {
                        origin: self.replica_name(o),
                        number: from,
                        detail: "the entries it replaced include this replica's own creation"
                            .into(),
                        also: Vec::new(),
                    }));
                }
            }
            visit(txn, &stored)?;
            removed_blobs.extend(stored.blob);
            txn.delete(Keyspace::Oplog, &k);
            removed += 1;
            if let Ok(b) = <[u8; 8]>::try_from(&k[16..]) {
                last = last.max(u64::from_be_bytes(b));
            }
        }
        Ok((removed, last, removed_blobs))
    }

    /// No count of what we hold of `o` goes above `cap` any more: our estimates of every
    /// sibling, our provisional acknowledgement of `o`'s restoration, and (on `retired`) the
    /// acknowledgements our own restoration received.
    fn lower_counts_of(
        &self,
        txn: &mut Txn<'_, S>,
        o: &ReplicaId,
        cap: u64,
        retired: bool,
    ) -> Result<()> {
        // While recovering we relay what we hold, so siblings may hold the entries given up
        // here from us: our estimates of them must not count them, or our next packets take
        // their retired copies for the newer entries and are refused as divergent at the base.
        // Lowering an estimate only resends.
        for (k, v) in txn.scan_prefix(Keyspace::Epochs, keys::ESTIMATES_PREFIX)? {
            let counts_them = k.len() == 1 + 2 * o.0.len() && k[1 + o.0.len()..] == o.0;
            if counts_them && crate::codec::be_u64(&v)? > cap {
                txn.put(Keyspace::Epochs, &k, &cap.to_be_bytes());
            }
        }
        if *o != self.me {
            // Our provisional acknowledgement of `o`'s restoration counted the entries given up
            // here: it now says what we hold.
            let k = keys::peer2(keys::peers::PROV_ACK, o, &self.me);
            if let Some(v) = txn.get(Keyspace::Peers, &k)? {
                let mut d = Dec::new(&v, "provisional ack");
                let (inc, held) = (d.u64()?, d.u64()?);
                if held > cap {
                    txn.put(Keyspace::Peers, &k, &Enc::new().u64(inc).u64(cap).done());
                }
            }
        }
        if *o == self.me && retired {
            // An acknowledgement that counted our entries from the replaced timeline asks for
            // entries nobody can give back any more.
            if let Some(mut rec) = Self::recovering_in(txn)? {
                for held in rec.awaited.values_mut().flatten() {
                    *held = (*held).min(cap);
                }
                for held in rec.acks.values_mut() {
                    *held = (*held).min(cap);
                }
                txn.put(Keyspace::Meta, keys::RECOVERING, &rec.encode());
            }
        }
        Ok(())
    }

    /// Rebuilds the object base from the snapshot base, if any, and the remaining oplog above
    /// it in apply order, and deletes the content only the removed entries referred to (unless
    /// the packet being imported carries it). Refused as divergent when a remaining entry
    /// builds on the removed ones.
    fn rebuild_without(
        &self,
        txn: &mut Txn<'_, S>,
        o: &ReplicaId,
        from: u64,
        mut removed_blobs: BTreeSet<crate::ids::Hash>,
        arriving_blobs: &std::collections::HashSet<crate::ids::Hash>,
    ) -> Result<()> {
        for (k, _) in txn.scan_prefix(Keyspace::State, &[])? {
            txn.delete(Keyspace::State, &k);
        }
        // A replica made from a snapshot starts from the snapshot's rows, which hold every
        // entry at or below their row (cannot_give_up refused when the removed ones are there).
        crate::sync::snapshot::restore_base(txn, &mut removed_blobs)?;
        let base = crate::sync::snapshot::base_row(&*txn)?;
        let mut kept = Vec::new();
        for (_, v) in txn.scan_prefix(Keyspace::Oplog, &[])? {
            let s = StoredEntry::decode(&v)?;
            if let Some(b) = &s.blob {
                removed_blobs.remove(b);
            }
            kept.push((s.lsn, s.canonical));
        }
        // Content only the removed entries referred to goes with them (the state digest
        // covers which content a replica holds).
        for b in removed_blobs
            .iter()
            .filter(|b| !arriving_blobs.contains(*b))
        {
            crate::content::delete_in(txn, b)?;
        }
        kept.sort_unstable_by_key(|(lsn, _)| *lsn);
        for (_, canonical) in kept {
            let e = Entry::decode_verified(&canonical)?;
            if e.number <= base.get(&e.origin) {
                continue;
            }
            if let Err(err) = crate::vob::apply(txn, &e) {
                // An entry of another origin builds on a replaced one: they had reached other
                // replicas after all (a restoration with --override or a partial --wait-for
                // replaced them). That is a fork, reported as such; the caller drops the
                // transaction, so nothing of this attempt is kept.
                return Err(CoreError::Refused(crate::error::Refusal::Divergent {
                    origin: self.replica_name(o),
                    number: from,
                    detail: format!(
                        "entry {} of {} held here builds on the entries it replaced ({err})",
                        e.number,
                        self.replica_name(&e.origin)
                    ),
                    also: Vec::new(),
                }));
            }
        }
        Ok(())
    }

    /// Moves this recovering replica's request past incarnation `known` (a newer request of
    /// it that the family holds, or a restoration of it already completed): a new incarnation
    /// `max(known, now) + 1`, and the acknowledgements cleared, since they answered the old
    /// one. Returns the new incarnation.
    pub(crate) fn move_request_past(
        &self,
        txn: &mut Txn<'_, S>,
        rec: &mut Recovering,
        known: u64,
    ) -> u64 {
        rec.incarnation = known.max(self.env.now_ms()) + 1;
        for held in rec.awaited.values_mut() {
            *held = None;
        }
        rec.acks.clear();
        rec.numbered.clear();
        txn.put(Keyspace::Meta, keys::RECOVERING, &rec.encode());
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::INCARNATION, &self.me),
            &rec.incarnation.to_be_bytes(),
        );
        rec.incarnation
    }

    /// A sibling believes a newer incarnation of this replica than this store has: the store
    /// is older than the replica's last restoration. While recovering, the request moves to a
    /// newer incarnation (so siblings accept it); otherwise the replica is rolled back.
    pub(crate) fn on_newer_incarnation(
        &self,
        known: u64,
        ours: u64,
        sender: &str,
    ) -> Result<CoreError> {
        let mut txn = Txn::new(&self.store);
        if let Some(mut rec) = Self::recovering_in(&txn)? {
            self.move_request_past(&mut txn, &mut rec, known);
            txn.commit(WriteOptions::SYNC)?;
            return Ok(CoreError::Refused(crate::error::Refusal::Other(format!(
                "{sender} knows incarnation {} of this replica, newer than its restore request's {} (the store is older than a previous restoration); the request now uses incarnation {}: export to the siblings again",
                incarnation_text(known),
                incarnation_text(ours),
                incarnation_text(rec.incarnation)
            ))));
        }
        let reason = format!(
            "{sender} knows incarnation {} of this replica but this store has incarnation {} (it is older than the replica's last restoration)",
            incarnation_text(known),
            incarnation_text(ours)
        );
        drop(txn);
        self.mark_rolled_back(&reason)?;
        Ok(CoreError::Locked(format!(
            "replica {} refuses this packet and local changes: {reason}; run `msite restorereplica`",
            self.name()
        )))
    }

    /// A sibling showed itself in an authentic packet header (whatever the import's outcome):
    /// while this replica recovers with the default waiting set, it joins the awaited set.
    /// The restored store may not know it (created after the backup, or its creation entry
    /// lost with the store), yet it may hold entries of ours that the restore lost; completing
    /// without its acknowledgement would number them again (K3).
    pub(crate) fn note_sibling(&self, txn: &mut Txn<'_, S>, sibling: &ReplicaId) -> Result<()> {
        if *sibling == self.me || crate::retire::retirement_in(&*txn, sibling)?.is_some() {
            return Ok(());
        }
        let hk = keys::peer(keys::peers::HEARD, sibling);
        if txn.get(Keyspace::Peers, &hk)?.is_none() {
            txn.put(Keyspace::Peers, &hk, &[]);
        }
        Self::await_if_recovering(txn, sibling)
    }

    /// While this replica recovers with the default awaited set, a sibling it learns of
    /// is awaited too, unless it already answered.
    fn await_if_recovering(txn: &mut Txn<'_, S>, sibling: &ReplicaId) -> Result<()> {
        if let Some(mut rec) = Self::recovering_in(txn)? {
            if !rec.explicit
                && !rec.awaited.contains_key(sibling)
                && !rec.acks.contains_key(sibling)
            {
                rec.awaited.insert(*sibling, None);
                txn.put(Keyspace::Meta, keys::RECOVERING, &rec.encode());
            }
        }
        Ok(())
    }

    /// Handles a provisional acknowledgement received in a packet.
    pub(crate) fn on_provisional_ack(
        &self,
        txn: &mut Txn<'_, S>,
        a: &ProvisionalAck,
    ) -> Result<()> {
        if a.acker == self.me {
            // Our own answer relayed back: we are its authority (it may be one we replaced
            // with a numbered acknowledgement, or lowered).
            return Ok(());
        }
        if a.replica == self.me {
            if let Some(mut rec) = Self::recovering_in(txn)? {
                if rec.incarnation == a.incarnation
                    && self.restoration_is_older(txn, &a.acker, &rec)?
                {
                    rec.record_ack(a.acker, a.held);
                    txn.put(Keyspace::Meta, keys::RECOVERING, &rec.encode());
                }
            }
            return Ok(());
        }
        // Relay it while the request it answers is held here.
        if let Some(v) = txn.get(
            Keyspace::Peers,
            &keys::peer(keys::peers::REQUEST, &a.replica),
        )? {
            let held = dec_request(a.replica, &v)?;
            if held.incarnation == a.incarnation {
                let k = keys::peer2(keys::peers::PROV_ACK, &a.replica, &a.acker);
                txn.put(
                    Keyspace::Peers,
                    &k,
                    &Enc::new().u64(a.incarnation).u64(a.held).done(),
                );
            }
        }
        Ok(())
    }

    /// Whether `acker`'s restoration, as held here, is older than ours: its request's
    /// `(incarnation, id)` below our own. Only such a provisional acknowledgement counts
    /// (K32).
    ///
    /// A provisional answer is what a recovering store knows *now*, and its restoration may
    /// still bring back more: an acknowledgement of our request that its earlier self had
    /// numbered (with a larger `held`) before it lost it, or our entries that a sibling holds.
    /// An acker whose restoration began after ours may have seen our request before it lost
    /// its store; one that began before ours cannot have. Waiting for the numbered
    /// acknowledgement of every younger recovering acker (it numbers one when it completes,
    /// and it counts our provisional answer, since ours is older) cannot deadlock: the
    /// youngest restoration in any set of replicas awaiting each other counts every other
    /// answer, completes first, and its numbered acknowledgements let the next one complete.
    /// An acker whose request we do not hold yet does not count either: its request travels
    /// with its provisional acknowledgements, so a later packet settles it.
    fn restoration_is_older(
        &self,
        txn: &Txn<'_, S>,
        acker: &ReplicaId,
        rec: &Recovering,
    ) -> Result<bool> {
        let key = keys::peer(keys::peers::REQUEST, acker);
        Ok(match txn.get(Keyspace::Peers, &key)? {
            Some(v) => {
                let theirs = dec_request(*acker, &v)?;
                (theirs.incarnation, acker.0) < (rec.incarnation, self.me.0)
            }
            None => false,
        })
    }

    /// Protocol effects of applying an entry (beyond the object base).
    pub(crate) fn on_entry(&self, txn: &mut Txn<'_, S>, e: &Entry) -> Result<()> {
        match &e.op {
            Op::RmReplica { replica, .. } => self.on_retired(txn, replica)?,
            Op::DenyMaster { object, requester } if *requester == self.me => {
                crate::denied::record(txn, object, &e.origin, e.time_ms);
            }
            Op::RestoreAck {
                replica,
                incarnation,
                held,
            } if *replica == self.me => {
                if let Some(mut rec) = Self::recovering_in(txn)? {
                    if rec.incarnation == *incarnation {
                        rec.record_numbered_ack(e.origin, *held);
                        txn.put(Keyspace::Meta, keys::RECOVERING, &rec.encode());
                    }
                }
            }
            Op::RestoreComplete { incarnation, row } => {
                self.on_restore_complete(txn, &e.origin, e.number, *incarnation, row)?
            }
            Op::CreateReplica { replica, row, .. } if *replica != self.me => {
                self.on_replica_created(txn, replica, row)?
            }
            _ => {}
        }
        Ok(())
    }

    /// A restore complete of `origin` numbered `number` is applied: the completed incarnation
    /// is recorded, the request and provisional acknowledgements it ends are forgotten, and
    /// the estimate of `origin` is set to the carried row.
    fn on_restore_complete(
        &self,
        txn: &mut Txn<'_, S>,
        origin: &ReplicaId,
        number: u64,
        incarnation: u64,
        row: &Row,
    ) -> Result<()> {
        txn.put(
            Keyspace::Peers,
            &keys::restore_complete_at(origin, number),
            &[],
        );
        lower_estimates_below(txn, origin, number)?;
        // Our own restore complete, given back while we recover under that (or an older)
        // incarnation: that restoration already completed, and this store is a copy taken
        // before it did (a snapshot rollback; K15). The siblings ignore a request they saw
        // complete, so move to a new incarnation, as for a newer incarnation known elsewhere.
        if let Some(mut rec) = Self::recovering_in(txn)?.filter(|_| *origin == self.me) {
            if rec.incarnation <= incarnation {
                self.move_request_past(txn, &mut rec, incarnation);
                restart_packet_sequences(txn)?;
            }
        }
        let ck = keys::peer(keys::peers::COMPLETED, origin);
        if incarnation > get_u64(txn, Keyspace::Peers, &ck)? {
            txn.put(Keyspace::Peers, &ck, &incarnation.to_be_bytes());
        }
        let newer_request = Self::forget_completed_request(txn, origin, incarnation)?;
        if *origin != self.me && !newer_request {
            Self::set_estimate_to_completed_row(txn, origin, row)?;
        }
        Ok(())
    }

    /// Deletes `origin`'s request and the provisional acknowledgements of it up to the
    /// completed `incarnation`. Returns whether a newer request of `origin` stays held.
    fn forget_completed_request(
        txn: &mut Txn<'_, S>,
        origin: &ReplicaId,
        incarnation: u64,
    ) -> Result<bool> {
        let rk = keys::peer(keys::peers::REQUEST, origin);
        let mut newer_request = false;
        if let Some(held) = held_request_of(&*txn, origin)? {
            if held.incarnation <= incarnation {
                txn.delete(Keyspace::Peers, &rk);
            } else {
                newer_request = true;
            }
        }
        for (k, v) in
            txn.scan_prefix(Keyspace::Peers, &keys::peer(keys::peers::PROV_ACK, origin))?
        {
            let inc = Dec::new(&v, "provisional ack").u64()?;
            if inc <= incarnation {
                txn.delete(Keyspace::Peers, &k);
            }
        }
        Ok(newer_request)
    }

    /// Sets the estimate of `origin` to the row its restore complete carries: exactly what the
    /// replica held when it completed. Set rather than only raised: a sibling that never saw
    /// the request (a partial `--wait-for` or `--override` restore) would otherwise keep
    /// believing the replica holds entries it lost. Not called when a newer request of
    /// `origin` is held: an older restoration's restore complete arriving after it says
    /// nothing about what the replica holds now, the newer request's row governs, and an
    /// estimate above what the replica holds makes every packet to it wait (K16).
    fn set_estimate_to_completed_row(
        txn: &mut Txn<'_, S>,
        origin: &ReplicaId,
        row: &Row,
    ) -> Result<()> {
        for (k, _) in txn.scan_prefix(Keyspace::Epochs, &keys::estimate_prefix(origin))? {
            txn.delete(Keyspace::Epochs, &k);
        }
        for (o, n) in &row.0 {
            txn.put(
                Keyspace::Epochs,
                &keys::estimate(origin, o),
                &n.to_be_bytes(),
            );
        }
        Ok(())
    }

    /// Another replica's creation entry is applied: its estimate rises to the row it started
    /// with, and a restoration in default mode awaits it (unless its acknowledgement already
    /// came: it may arrive before the creation entry, K3).
    fn on_replica_created(
        &self,
        txn: &mut Txn<'_, S>,
        replica: &ReplicaId,
        row: &Row,
    ) -> Result<()> {
        raise_estimate(txn, replica, row)?;
        Self::await_if_recovering(txn, replica)
    }
}

/// Packet sequences restart under a new incarnation: the sending state and export log
/// towards every sibling are dropped.
pub(crate) fn restart_packet_sequences<S: Store>(txn: &mut Txn<'_, S>) -> Result<()> {
    for tag in [keys::peers::SEND, keys::peers::EXPORT_LOG] {
        for (k, _) in txn.scan_prefix(Keyspace::Peers, &[tag])? {
            txn.delete(Keyspace::Peers, &k);
        }
    }
    Ok(())
}

/// A restore complete of `origin` numbered `at` is recorded: a restoration we hold a request
/// of may come from a copy older than it (K13). Where its row reaches `at`, give back from just
/// below it, as `on_request` does for restore completes known when the request came; our own restore
/// complete included.
fn lower_estimates_below<S: Store>(
    txn: &mut Txn<'_, S>,
    origin: &ReplicaId,
    at: u64,
) -> Result<()> {
    for req in held_requests_in(txn)? {
        let k = keys::estimate(&req.replica, origin);
        if req.row.get(origin) >= at && get_u64(txn, Keyspace::Epochs, &k)? >= at {
            txn.put(Keyspace::Epochs, &k, &(at - 1).to_be_bytes());
        }
    }
    Ok(())
}

/// Raises `target`'s estimate row to at least `row`.
pub(crate) fn raise_estimate<S: Store>(
    txn: &mut Txn<'_, S>,
    target: &ReplicaId,
    row: &Row,
) -> Result<()> {
    for (o, n) in &row.0 {
        let k = keys::estimate(target, o);
        if *n > get_u64(txn, Keyspace::Epochs, &k)? {
            txn.put(Keyspace::Epochs, &k, &n.to_be_bytes());
        }
    }
    Ok(())
}

/// The restore requests of other replicas held here, from any view (a transaction included).
/// The restore request of `replica` held here for propagation, if any.
pub(crate) fn held_request_of<R: ReadView + ?Sized>(
    r: &R,
    replica: &ReplicaId,
) -> Result<Option<HeldRequest>> {
    match r.get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, replica))? {
        Some(v) => Ok(Some(dec_request(*replica, &v)?)),
        None => Ok(None),
    }
}

pub(crate) fn held_requests_in<R: ReadView + ?Sized>(r: &R) -> Result<Vec<HeldRequest>> {
    let mut out = Vec::new();
    for kv in r.scan(Keyspace::Peers, KeyRange::prefix(&[keys::peers::REQUEST]))? {
        let (k, v) = kv?;
        let id = ReplicaId(k[1..].try_into().map_err(|_| {
            CoreError::Codec(crate::codec::CodecError {
                what: "request key",
            })
        })?);
        out.push(dec_request(id, &v)?);
    }
    Ok(out)
}

pub(crate) fn prov_acks_in<R: ReadView + ?Sized>(r: &R) -> Result<Vec<ProvisionalAck>> {
    let mut out = Vec::new();
    for kv in r.scan(Keyspace::Peers, KeyRange::prefix(&[keys::peers::PROV_ACK]))? {
        let (k, v) = kv?;
        if k.len() != 33 {
            continue;
        }
        let bad = || {
            CoreError::Codec(crate::codec::CodecError {
                what: "provisional ack key",
            })
        };
        let replica = ReplicaId(k[1..17].try_into().map_err(|_| bad())?);
        let acker = ReplicaId(k[17..33].try_into().map_err(|_| bad())?);
        let mut d = Dec::new(&v, "provisional ack");
        out.push(ProvisionalAck {
            acker,
            replica,
            incarnation: d.u64()?,
            held: d.u64()?,
        });
    }
    Ok(out)
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::sync::Arc;

    use crate::error::{CoreError, Refusal};
    use crate::testkit::MemStore;
    use crate::{Env, Incoming, Replica, SimEnv};

    type R = Replica<MemStore>;

    fn create(from: &R, name: &str, env: &Arc<dyn Env>) -> R {
        crate::testkit::mkreplica_in_memory(from, name, env.clone()).unwrap()
    }

    fn send(a: &R, b: &R) {
        if let Some(p) = a.export_to_parts(&b.id(), None).unwrap() {
            let _ = b.import(Incoming::from_parts(p, "packet").unwrap());
        }
    }

    /// Own entries above every sibling's estimate are the ones no sibling holds: an export
    /// takes them out (it advances the target's estimate), later changes come back in.
    #[test]
    fn own_entries_no_sibling_holds_are_those_above_every_estimate() {
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(5));
        let r0: R = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
        let r1 = create(&r0, "r1", &env);
        send(&r0, &r1);
        let none = r0.own_entries_no_sibling_holds(3).unwrap();
        assert_eq!(none.count, 0);
        assert!(none.first_entries.is_empty());
        r0.mkbrtype("dev").unwrap();
        r0.mkelem("a").unwrap();
        r0.mkelem("b").unwrap();
        r0.mkelem("c").unwrap();
        let last = r0.own_row().unwrap().get(&r0.id());
        let u = r0.own_entries_no_sibling_holds(2).unwrap();
        assert_eq!((u.count, u.first, u.last), (4, last - 3, last));
        let names: Vec<(u64, &str)> = u
            .first_entries
            .iter()
            .map(|e| (e.number, e.op.name()))
            .collect();
        assert_eq!(names, vec![(last - 3, "mkbrtype"), (last - 2, "mkelem")]);
        send(&r0, &r1);
        assert_eq!(r0.own_entries_no_sibling_holds(2).unwrap().count, 0);
        r0.mkelem("d").unwrap();
        let u = r0.own_entries_no_sibling_holds(2).unwrap();
        assert_eq!((u.count, u.first, u.last), (1, last + 1, last + 1));
    }

    /// K3 (found by the simulator, seed 108): r0 creates r2 after its backup, then is restored
    /// from it. Its store does not know r2, which holds r0's creation entry. A packet from r2,
    /// even one refused as stale, shows r2 exists: the restoration must wait for r2 and get the
    /// entry back, instead of completing on r1's answer and numbering another entry under it.
    #[test]
    fn a_sibling_heard_of_in_a_stale_header_joins_the_awaited_set() {
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(3));
        let r0: R = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
        let r1 = create(&r0, "r1", &env);
        for _ in 0..3 {
            send(&r0, &r1);
            send(&r1, &r0);
        }
        let backup = r0.store().deep_copy();
        let r2 = create(&r0, "r2", &env);
        let created = r0.own_row().unwrap().get(&r0.id());
        let entry = r0.entry(&r0.id(), created).unwrap().unwrap();
        // r2's packet, built before r0's restore, is on its way.
        r2.mkelem("x").unwrap();
        let stale = r2.export_to_parts(&r0.id(), None).unwrap().unwrap();
        // r0 is restored from the backup that predates r2.
        let r0: R = Replica::open(backup, env).unwrap();
        r0.mark_restored().unwrap();
        let start = r0.restorereplica(&[], false).unwrap();
        assert_eq!(start.awaiting, vec!["r1".to_string()]);
        assert!(r0
            .import(Incoming::from_parts(stale, "stale").unwrap())
            .is_err());
        // r1 answers; r0 must still wait for r2.
        send(&r0, &r1);
        send(&r1, &r0);
        let rec = r0.status().unwrap().recovering.expect("still recovering");
        assert!(rec.awaited.contains_key(&r2.id()));
        // r2 gets the request and gives back r0's creation entry; then r0 completes.
        for _ in 0..4 {
            send(&r0, &r2);
            send(&r2, &r0);
            send(&r0, &r1);
            send(&r1, &r0);
        }
        assert!(r0.status().unwrap().recovering.is_none());
        assert_eq!(
            r0.entry(&r0.id(), created).unwrap().unwrap().hash,
            entry.hash
        );
    }

    /// K3, the case a relay knows of (found by the simulator, seed 20000366): r1 creates r2
    /// after the backups of r0 and r1; r0's last entry reaches r2 through r1; then both r0 and
    /// r1 are restored. Only r2 holds that entry, and r0 never hears from r2 (it talks to r1
    /// only). r1 heard of r2 from r2's (stale) packet; r1's packets name every sibling it knows
    /// in their sender row, so r0 awaits r2 instead of completing on r1's provisional answer and
    /// numbering another entry under the lost one's number.
    #[test]
    fn a_sibling_only_a_relay_heard_of_joins_the_awaited_set() {
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(5));
        let r0: R = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
        let r1 = create(&r0, "r1", &env);
        for _ in 0..3 {
            send(&r0, &r1);
            send(&r1, &r0);
        }
        let b0 = r0.store().deep_copy();
        let b1 = r1.store().deep_copy();
        let r2 = create(&r1, "r2", &env);
        r0.mkelem("lost").unwrap();
        send(&r0, &r1);
        send(&r1, &r2);
        let n = r0.own_row().unwrap().get(&r0.id());
        let lost = r0.entry(&r0.id(), n).unwrap().unwrap().hash;
        assert_eq!(r2.entry(&r0.id(), n).unwrap().unwrap().hash, lost);
        r2.mkelem("r2 was here").unwrap();
        let from_r2 = r2.export_to_parts(&r1.id(), None).unwrap().unwrap();
        let r0: R = Replica::open(b0, env.clone()).unwrap();
        r0.mark_restored().unwrap();
        r0.restorereplica(&[], false).unwrap();
        let r1: R = Replica::open(b1, env).unwrap();
        r1.mark_restored().unwrap();
        r1.restorereplica(&[], false).unwrap();
        // r2's packet, built before r1's restore, is refused but shows r2 to r1.
        assert!(r1
            .import(Incoming::from_parts(from_r2, "from r2").unwrap())
            .is_err());
        send(&r0, &r1);
        send(&r1, &r0);
        let rec = r0.status().unwrap().recovering.expect("still recovering");
        assert!(
            rec.awaited.contains_key(&r2.id()),
            "r0 awaits r2, which only r1 knows of"
        );
        for _ in 0..8 {
            send(&r0, &r1);
            send(&r1, &r0);
            send(&r1, &r2);
            send(&r2, &r1);
        }
        assert!(r0.status().unwrap().recovering.is_none(), "r0 completes");
        assert!(r1.status().unwrap().recovering.is_none(), "r1 completes");
        assert_eq!(r0.entry(&r0.id(), n).unwrap().unwrap().hash, lost);
        assert_eq!(r0.digest().unwrap(), r2.digest().unwrap());
    }

    /// K11 remainder (found by the simulator, seed 70001233): r1 is put back to a copy that
    /// lacks r0's last entry (a snapshot that lost no entry of r1's own). Neither side has
    /// anything to say, and r0 believes r1 up to date. After a day of silence r0's export
    /// sends a keepalive probe, which waits at r1; r1's answer shows the gap, and r0 resends.
    #[test]
    fn keepalive_probe_repairs_a_sibling_put_back_to_an_older_copy() {
        let sim = SimEnv::new(6);
        let env: Arc<dyn Env> = Arc::new(sim.clone());
        let r0: R = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
        let r1 = create(&r0, "r1", &env);
        for _ in 0..3 {
            send(&r0, &r1);
            send(&r1, &r0);
        }
        let copy = r1.store().deep_copy();
        r0.mkelem("x").unwrap();
        for _ in 0..3 {
            send(&r0, &r1);
            send(&r1, &r0);
        }
        let r1: R = Replica::open(copy, env).unwrap();
        assert!(r0.export_to_parts(&r1.id(), None).unwrap().is_none());
        assert!(r1.export_to_parts(&r0.id(), None).unwrap().is_none());
        assert_ne!(r0.own_row().unwrap(), r1.own_row().unwrap());
        sim.advance(crate::keys::DEFAULT_KEEPALIVE_MS + 1);
        for _ in 0..4 {
            send(&r0, &r1);
            send(&r1, &r0);
        }
        assert_eq!(r0.own_row().unwrap(), r1.own_row().unwrap());
        assert_eq!(r0.digest().unwrap(), r1.digest().unwrap());
    }

    /// K27 (found by the simulator, seed 80176217): r1 completes a restoration, then is put
    /// back to a copy taken before it (incarnation 0 again). r0 believes r1 up to date and has
    /// nothing to send; r1's packets are refused as stale. Before the fix nothing answered
    /// them, so r1 never learned it was put back and kept sending stale packets. Now r0's next
    /// export answers with a probe whose header names r1's newer incarnation: r1 locks itself
    /// and tells the operator to run `restorereplica`.
    #[test]
    fn a_stale_packet_is_answered_so_a_sender_put_back_learns_it() {
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(7));
        let r0: R = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
        let r1 = create(&r0, "r1", &env);
        for _ in 0..3 {
            send(&r0, &r1);
            send(&r1, &r0);
        }
        let before_restore = r1.store().deep_copy();
        let r1: R = Replica::open(r1.store().deep_copy(), env.clone()).unwrap();
        r1.mark_restored().unwrap();
        r1.restorereplica(&[], false).unwrap();
        for _ in 0..3 {
            send(&r1, &r0);
            send(&r0, &r1);
        }
        assert!(r1.status().unwrap().recovering.is_none());
        assert!(r0.export_to_parts(&r1.id(), None).unwrap().is_none());
        // Put back to the copy from before the restoration: it knows nothing of it.
        let r1: R = Replica::open(before_restore, env).unwrap();
        r1.mkelem("made after the copy came back").unwrap();
        let stale = r1.export_to_parts(&r0.id(), None).unwrap().unwrap();
        let row = r0.own_row().unwrap();
        assert!(matches!(
            r0.import(Incoming::from_parts(stale, "stale").unwrap()),
            Err(CoreError::Refused(Refusal::StaleSender { .. }))
        ));
        assert_eq!(r0.own_row().unwrap(), row, "a stale packet applies nothing");
        let answer = r0
            .export_to_parts(&r1.id(), None)
            .unwrap()
            .expect("a stale packet is answered");
        let err = r1
            .import(Incoming::from_parts(answer, "answer").unwrap())
            .unwrap_err();
        assert!(matches!(err, CoreError::Locked(_)), "{err}");
        assert!(err.to_string().contains("restorereplica"), "{err}");
        assert!(r1.status().unwrap().rolled_back.is_some());
        assert!(r1.mkelem("refused").is_err(), "local changes are refused");
        // The answer is sent once: with nothing new, the next export is empty again.
        assert!(r0.export_to_parts(&r1.id(), None).unwrap().is_none());
    }

    /// K15 (found by the simulator, seed 3029359, and by the model check): a file-system
    /// snapshot taken while r0 recovered, put back after the restoration completed, revived
    /// the recovery. r1 ignored the request (it saw that incarnation complete) and nothing
    /// moved r0 to a newer incarnation: it never completed.
    #[test]
    fn snapshot_of_a_recovering_store_moves_to_a_new_incarnation() {
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(4));
        let r0: R = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
        let r1 = create(&r0, "r1", &env);
        for _ in 0..3 {
            send(&r0, &r1);
            send(&r1, &r0);
        }
        let backup = r0.store().deep_copy();
        let r0: R = Replica::open(backup, env.clone()).unwrap();
        r0.mark_restored().unwrap();
        let first = r0.restorereplica(&[], false).unwrap().incarnation;
        let snapshot = r0.store().deep_copy();
        for _ in 0..3 {
            send(&r0, &r1);
            send(&r1, &r0);
        }
        assert!(r0.status().unwrap().recovering.is_none());
        assert_eq!(r1.completed_incarnation(&r0.id()).unwrap(), first);
        // The snapshot comes back, without the restored mark.
        let r0: R = Replica::open(snapshot, env).unwrap();
        assert_eq!(r0.status().unwrap().recovering.unwrap().incarnation, first);
        for _ in 0..6 {
            send(&r0, &r1);
            send(&r1, &r0);
        }
        assert!(r0.status().unwrap().recovering.is_none(), "never completed");
        assert!(r0.status().unwrap().incarnation > first);
        assert_eq!(r0.own_row().unwrap(), r1.own_row().unwrap());
        assert_eq!(r0.digest().unwrap(), r1.digest().unwrap());
    }
}
