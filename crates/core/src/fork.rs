//! Fork repair (issue #18 item 3; docs/protocol.md §6 "Divergence and fork repair").
//!
//! A fork: two replicas hold different entries under one `(origin, number)` that no
//! restoration retired (after `restorereplica --override`, a partial `--wait-for`, or a store
//! put back without `msite restore`). The hash chains refuse every packet that meets both, so
//! nothing merges by itself. `msite repairfork` records the operator's **decision** at one
//! replica: at `(origin, number)` the timeline of this replica's entry is kept, or given up.
//!
//! The rules the code keeps:
//! - A decision is replicated state: every packet's header carries every decision its sender
//!   holds (format 1.3), and a receiver adopts the ones it lacks *before* assessing the packet,
//!   so a packet refused as divergent before the decision applies after it. A later
//!   `(decided_ms, decided_by)` supersedes an earlier decision for the same `(origin, number)`.
//! - A decision is signed by the replica where the operator made it, and a receiver adopts
//!   only decisions whose signature verifies with the decider's key (`sync/decisions.rs`):
//!   a relay carries decisions but cannot make one up or alter one.
//! - Adopting a decision gives up the entries of `origin` numbered `number` and above where
//!   this replica holds the given-up entry there, with the machinery that gives up retired
//!   entries (`Replica::give_up_from`), and lowers every sibling's estimate of `origin` below
//!   `number`, so the next exports carry the kept timeline to everyone.
//! - Nothing given up is dropped silently: each given-up entry (and its content) is kept in
//!   `Peers` under [`keys::peers::GIVEN_UP`] until the operator writes them out
//!   ([`Replica::given_up_entries`], `msite repairfork --dump`) and forgets them.
//! - An arriving entry of the given-up timeline is refused as divergent, and its sender gets
//!   an answer carrying the decision (so a sibling that has not heard of it gives it up).
//! - A replica that gives up entries of its own origin must get the kept ones back before it
//!   numbers again: unless it already recovers, it locks itself as rolled back, and
//!   `restorereplica` then completes once the siblings gave the kept entries back.

use msite_packet::wire;

use crate::codec::{Dec, Enc};
use crate::content;
use crate::error::{CoreError, Refusal, Result};
use crate::ids::{Hash, ReplicaId};
use crate::keys;
use crate::model::Entry;
use crate::replica::{Replica, StoredEntry};
use crate::store::{KeyRange, Keyspace, ReadView, Store, WriteOptions};
use crate::sync::DecisionCheck;
use crate::txn::Txn;

/// Peers tags of this module (chosen apart from the others in `keys::peers`).
mod tag {
    /// A fork decision (tag, origin, number).
    pub const DECISION: u8 = crate::keys::peers::FORK_DECISION;
    /// An entry given up by a fork decision, with its content (tag, origin, number).
    pub const GIVEN_UP: u8 = crate::keys::peers::GIVEN_UP;
}

/// An operator's decision between two timelines of one origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkDecision {
    /// The origin whose history forked.
    pub origin: ReplicaId,
    /// The first number under which the timelines differ.
    pub number: u64,
    /// The deciding replica's entry `(origin, number)`.
    pub hash: Hash,
    /// Whether the timeline of `hash` is kept (otherwise it is given up).
    pub keep: bool,
    /// The replica where the operator decided.
    pub decided_by: ReplicaId,
    /// When (ms since the Unix epoch, at the deciding replica).
    pub decided_ms: u64,
    /// The deciding replica's signature (`sync/decisions.rs`); all zeros in a decision made
    /// before format 1.5.
    pub signature: wire::Signature,
}

/// Which timeline `msite repairfork` keeps, seen from the replica where it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepTimeline {
    /// The timeline this replica holds: every other entry under that number is given up.
    This,
    /// The other one: this replica's entry under that number, and what follows it, is given up.
    Other,
}

/// An entry given up by a fork decision, kept until the operator writes it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GivenUp {
    /// The entry.
    pub entry: Entry,
    /// Its content (check-ins), as it was held.
    pub content: Option<Vec<u8>>,
}

/// What [`Replica::repair_fork`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkRepair {
    /// The decision recorded (and carried in every packet from now on).
    pub decision: ForkDecision,
    /// How many entries this replica gave up.
    pub given_up: u64,
    /// Whether this replica locked itself (it gave up entries of its own origin): run
    /// `restorereplica` to get the kept ones back.
    pub locked: bool,
}

impl ForkDecision {
    /// Whether a replica holding `held` under `(origin, number)` gives it up.
    pub fn gives_up(&self, held: &Hash) -> bool {
        (*held == self.hash) != self.keep
    }

    /// Whether this decision stands over `other`, made for the same fork: the later one, by
    /// the deciders' clocks, then by decider id.
    pub fn supersedes(&self, other: &ForkDecision) -> bool {
        (self.decided_ms, self.decided_by.0) > (other.decided_ms, other.decided_by.0)
    }

    fn key(&self) -> Vec<u8> {
        origin_number_key(tag::DECISION, &self.origin, self.number)
    }

    /// The stored value: the signature is left out of an unsigned decision, as stores
    /// written before format 1.5 hold it.
    fn encode(&self) -> Vec<u8> {
        let enc = Enc::new()
            .raw(&self.hash)
            .bool(self.keep)
            .rid(&self.decided_by)
            .u64(self.decided_ms);
        match self.signature == wire::NO_SIGNATURE {
            true => enc.done(),
            false => enc.raw(&self.signature).done(),
        }
    }

    fn decode(origin: ReplicaId, number: u64, v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v, "fork decision");
        let hash = d.hash()?;
        let keep = d.bool()?;
        let decided_by = d.rid()?;
        let decided_ms = d.u64()?;
        let mut signature = wire::NO_SIGNATURE;
        if !d.is_empty() {
            signature.copy_from_slice(d.raw(64)?);
        }
        d.end()?;
        Ok(ForkDecision {
            origin,
            number,
            hash,
            keep,
            decided_by,
            decided_ms,
            signature,
        })
    }

    /// The decision as the packet header carries it.
    pub fn to_wire(&self) -> wire::ForkDecision {
        wire::ForkDecision {
            origin: wire::Id(self.origin.0),
            number: self.number,
            hash: self.hash,
            keep: self.keep,
            decided_by: wire::Id(self.decided_by.0),
            decided_ms: self.decided_ms,
            signature: self.signature,
        }
    }

    /// A decision a packet header carries.
    pub fn from_wire(w: &wire::ForkDecision) -> Self {
        ForkDecision {
            origin: ReplicaId(w.origin.0),
            number: w.number,
            hash: w.hash,
            keep: w.keep,
            decided_by: ReplicaId(w.decided_by.0),
            decided_ms: w.decided_ms,
            signature: w.signature,
        }
    }
}

fn origin_number_key(tag: u8, origin: &ReplicaId, number: u64) -> Vec<u8> {
    let mut k = keys::peer(tag, origin);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// The origin and number of a key made by [`origin_number_key`].
fn split_key(k: &[u8]) -> Option<(ReplicaId, u64)> {
    let origin = <[u8; 16]>::try_from(k.get(1..17)?).ok()?;
    let number = <[u8; 8]>::try_from(k.get(17..25)?).ok()?;
    Some((ReplicaId(origin), u64::from_be_bytes(number)))
}

/// Every fork decision held in `r`.
pub(crate) fn decisions_in<R: ReadView + ?Sized>(r: &R) -> Result<Vec<ForkDecision>> {
    let mut out = Vec::new();
    for kv in r.scan(Keyspace::Peers, KeyRange::prefix(&[tag::DECISION]))? {
        let (k, v) = kv?;
        let (origin, number) = split_key(&k).ok_or_else(|| {
            CoreError::Codec(crate::codec::CodecError {
                what: "fork decision key",
            })
        })?;
        out.push(ForkDecision::decode(origin, number, &v)?);
    }
    Ok(out)
}

impl<S: Store> Replica<S> {
    /// Records the operator's decision on the fork of `origin` at `number` (the number a
    /// divergent refusal names) and applies it here: with [`KeepTimeline::Other`] this
    /// replica gives up its entries of `origin` from `number` on. Allowed while locked or
    /// recovering (a rolled-back replica repairs its own fork this way). Every packet carries
    /// the decision from now on, so each sibling applies it too.
    pub fn repair_fork(
        &self,
        origin: &ReplicaId,
        number: u64,
        keep: KeepTimeline,
    ) -> Result<ForkRepair> {
        let hash = self.held_at_fork(origin, number)?;
        let mut decision = ForkDecision {
            origin: *origin,
            number,
            hash,
            keep: keep == KeepTimeline::This,
            decided_by: self.me,
            decided_ms: self.env.now_ms(),
            signature: wire::NO_SIGNATURE,
        };
        decision.signature = self.sign_decision(&decision.to_wire())?;
        let mut txn = Txn::new(&self.store);
        let given_up = self.adopt_decision(&mut txn, &decision).map_err(|e| match e {
            CoreError::Refused(r) => CoreError::Invalid(format!(
                "replica {} cannot give up its timeline of {} from {number} ({r}); keep it (`--keep this`), or decide at a replica that can; nothing changed",
                self.name(),
                self.replica_name(origin)
            )),
            other => other,
        })?;
        let locked = given_up > 0 && *origin == self.me && Self::recovering_in(&txn)?.is_none();
        txn.commit(WriteOptions::SYNC)?;
        Ok(ForkRepair {
            decision,
            given_up,
            locked,
        })
    }

    /// The entries `repair_fork(origin, number, keep)` would give up here, for the operator
    /// to see before confirming. Changes nothing.
    pub fn fork_preview(
        &self,
        origin: &ReplicaId,
        number: u64,
        keep: KeepTimeline,
    ) -> Result<Vec<Entry>> {
        self.held_at_fork(origin, number)?;
        if keep == KeepTimeline::This {
            return Ok(Vec::new());
        }
        Ok(self
            .entries_of(origin)?
            .into_iter()
            .filter(|e| e.number >= number)
            .collect())
    }

    /// The hash of this replica's entry at the fork, or why the repair cannot start here.
    fn held_at_fork(&self, origin: &ReplicaId, number: u64) -> Result<Hash> {
        let name = self.replica_name(origin);
        if number == 0 {
            return Err(CoreError::Invalid(
                "entry numbers start at 1; give the number the divergent refusal names".into(),
            ));
        }
        match self.entry(origin, number)? {
            Some(e) => Ok(e.hash),
            None => Err(CoreError::NotFound(format!(
                "replica {} holds no entry {number} of {name}, so it holds neither timeline there; run `msite repairfork` at a replica that holds one (the number is the one the divergent refusal names)",
                self.name()
            ))),
        }
    }

    /// Every fork decision held here.
    pub fn fork_decisions(&self) -> Result<Vec<ForkDecision>> {
        decisions_in(&self.store)
    }

    /// The decisions a packet header carries: every signed one held here, and this
    /// replica's own, signed now if it was made before format 1.5. Another replica's unsigned
    /// decision is not relayed (`sync/decisions.rs`): its decider sends it.
    pub(crate) fn fork_decisions_wire(&self) -> Result<Vec<wire::ForkDecision>> {
        let mut out = Vec::new();
        for d in self.fork_decisions()? {
            let mut w = d.to_wire();
            if !w.is_signed() && d.decided_by == self.me {
                w.signature = self.sign_decision(&w)?;
            }
            if w.is_signed() {
                out.push(w);
            }
        }
        Ok(out)
    }

    /// Entries given up here by fork decisions and not yet forgotten, in origin and number
    /// order, with their content.
    pub fn given_up_entries(&self) -> Result<Vec<GivenUp>> {
        let mut out = Vec::new();
        for kv in self
            .store
            .scan(Keyspace::Peers, KeyRange::prefix(&[tag::GIVEN_UP]))?
        {
            let (_, v) = kv?;
            let mut d = Dec::new(&v, "given-up entry");
            let entry = Entry::decode_verified(d.bytes()?)?;
            let content = match d.u8()? {
                0 => None,
                _ => Some(d.bytes()?.to_vec()),
            };
            d.end()?;
            out.push(GivenUp { entry, content });
        }
        Ok(out)
    }

    /// Forgets the given-up entries (after the operator wrote them out). Returns how many.
    pub fn forget_given_up(&self) -> Result<u64> {
        let mut txn = Txn::new(&self.store);
        let mut n = 0;
        for (k, _) in txn.scan_prefix(Keyspace::Peers, &[tag::GIVEN_UP])? {
            txn.delete(Keyspace::Peers, &k);
            n += 1;
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(n)
    }

    /// Adopts the decisions an authentic header addressed to us carries that this replica
    /// lacks (or that supersede its own), in one write, before the packet is assessed. Only
    /// decisions signed by their decider are adopted, and one whose signature does not verify
    /// refuses the packet before any is (`sync/decisions.rs`). Returns notes for the operator.
    pub(crate) fn adopt_carried_decisions(&self, h: &wire::Header) -> Result<Vec<String>> {
        let sender = self.replica_name(&ReplicaId(h.sender.0));
        let mut authentic = Vec::new();
        for w in &h.fork_decisions {
            if self.check_decision(w, h, &sender)? == DecisionCheck::Authentic {
                authentic.push(ForkDecision::from_wire(w));
            }
        }
        let mut txn = Txn::new(&self.store);
        let mut notes = Vec::new();
        for d in authentic {
            let n = self.adopt_decision(&mut txn, &d)?;
            if n > 0 {
                notes.push(format!(
                    "the fork repair decided at {} gave up {n} entries of {} from number {} here; `msite repairfork --dump DIR` writes them out",
                    self.replica_name(&d.decided_by),
                    self.replica_name(&d.origin),
                    d.number
                ));
            }
        }
        if !txn.is_empty() {
            txn.commit(WriteOptions::SYNC)?;
        }
        Ok(notes)
    }

    /// Records `d` unless a decision for the same fork held here is as new, and applies it.
    /// Returns how many entries this replica gave up.
    fn adopt_decision(&self, txn: &mut Txn<'_, S>, d: &ForkDecision) -> Result<u64> {
        if let Some(v) = txn.get(Keyspace::Peers, &d.key())? {
            if !d.supersedes(&ForkDecision::decode(d.origin, d.number, &v)?) {
                return Ok(0);
            }
        }
        txn.put(Keyspace::Peers, &d.key(), &d.encode());
        self.resend_from(txn, &d.origin, d.number)?;
        // The next export to every sibling carries the decision, even with nothing new (a
        // probe, as for an answer to a stale packet).
        for s in self.known_siblings()? {
            txn.put(
                Keyspace::Peers,
                &keys::peer(keys::peers::ANSWER_STALE, &s),
                &[1],
            );
        }
        let given_up = match Self::entry_hash_at(txn, &d.origin, d.number)? {
            Some(held) if d.gives_up(&held) => self.give_up_timeline(txn, d)?,
            _ => 0,
        };
        if d.origin == self.me {
            self.own_fork_decided(txn, d, given_up)?;
        }
        Ok(given_up)
    }

    /// A decision on our own origin: while we recover, the acknowledgements received may
    /// count entries of the given-up timeline (a sibling answered before it gave them up), so
    /// the request moves to a new incarnation and every sibling answers again with what it
    /// holds now (the decision travels in the same headers, ahead of the request). Otherwise,
    /// having given up entries of our own, we lock until `restorereplica` gets the kept ones.
    fn own_fork_decided(
        &self,
        txn: &mut Txn<'_, S>,
        d: &ForkDecision,
        given_up: u64,
    ) -> Result<()> {
        if let Some(mut rec) = Self::recovering_in(txn)? {
            let inc = rec.incarnation;
            self.move_request_past(txn, &mut rec, inc);
            crate::restore::restart_packet_sequences(txn)?;
        } else if given_up > 0 {
            Self::lock_rolled_back(
                txn,
                &format!(
                    "a fork repair gave up this replica's own entries from number {} (`msite repairfork`); the siblings hold the kept ones",
                    d.number
                ),
            );
        }
        Ok(())
    }

    /// Every sibling's estimate of `origin` drops below `number`: the next export to each
    /// carries the kept timeline from there (a sibling that holds it skips it).
    fn resend_from(&self, txn: &mut Txn<'_, S>, origin: &ReplicaId, number: u64) -> Result<()> {
        let cap = number - 1;
        for (k, v) in txn.scan_prefix(Keyspace::Epochs, keys::ESTIMATES_PREFIX)? {
            let of_origin =
                k.len() == 1 + 2 * origin.0.len() && k[1 + origin.0.len()..] == origin.0;
            if of_origin && crate::codec::be_u64(&v)? > cap {
                txn.put(Keyspace::Epochs, &k, &cap.to_be_bytes());
            }
        }
        Ok(())
    }

    /// Gives up this replica's entries of the decision's origin from its number on, keeping
    /// each (with its content) for the operator, and the origin's signed chain heads of the
    /// given-up timeline. Returns how many went.
    fn give_up_timeline(&self, txn: &mut Txn<'_, S>, d: &ForkDecision) -> Result<u64> {
        if let Some(why) =
            self.cannot_give_up(&d.origin, d.number, "give up entries of a forked timeline")?
        {
            return Err(CoreError::Refused(Refusal::Other(why)));
        }
        let mut kept: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut visit = |t: &Txn<'_, S>, s: &StoredEntry| -> Result<()> {
            kept.push(given_up_record(t, s)?);
            Ok(())
        };
        let none = std::collections::HashSet::new();
        let (removed, _) = self.give_up_from(txn, &d.origin, d.number, &none, false, &mut visit)?;
        for (k, v) in kept {
            txn.put(Keyspace::Peers, &k, &v);
        }
        // The given-up timeline's signed heads and restore completes go with it.
        for t in [keys::peers::HEAD, keys::peers::RESTORE_COMPLETE_AT] {
            for (k, _) in txn.scan_prefix(Keyspace::Peers, &keys::peer(t, &d.origin))? {
                if matches!(split_key(&k), Some((_, n)) if n >= d.number) {
                    txn.delete(Keyspace::Peers, &k);
                }
            }
        }
        Ok(removed)
    }
}

/// The key and value that keep a given-up entry and its content for the operator.
fn given_up_record<S: Store>(t: &Txn<'_, S>, s: &StoredEntry) -> Result<(Vec<u8>, Vec<u8>)> {
    let e = Entry::decode_verified(&s.canonical)?;
    let body = match &s.blob {
        Some(b) => content::read_all(t, b)?,
        None => None,
    };
    let enc = Enc::new().bytes(&s.canonical);
    let enc = match body {
        Some(c) => enc.u8(1).bytes(&c),
        None => enc.u8(0),
    };
    Ok((
        origin_number_key(tag::GIVEN_UP, &e.origin, e.number),
        enc.done(),
    ))
}
