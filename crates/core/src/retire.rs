//! Retiring a replica for good (`msite rmreplica`, `msite chmaster --all --from`;
//! docs/protocol.md §10, "Retiring a replica").
//!
//! A retirement is a numbered entry `RmReplica { replica, last }`: the family keeps the retired
//! replica's entries up to `last` (what the retiring replica held of it) and refuses any later
//! one, and every packet whose sender is retired. Its record in the object base (State key
//! `X` ++ id) is what every rule reads, so it replicates like any change and is in the digest.
//! Once it applies, the replica is no sibling any more: it leaves the siblings every packet
//! names, the default awaited set of a restoration (and an awaited set in progress), the
//! acknowledgement floor of retention, the epoch matrix and the targets of `export --all`.
//!
//! The rules keep the object base a function of the set of entries (invariant 4):
//! - only the master of the replica object (its creator, unless handed on) retires another
//!   replica, and only it takes over what the retired replica mastered, so no two sites take
//!   one object over at once;
//! - a takeover follows the retirement in its author's chain, and every entry of the retired
//!   replica the family keeps precedes the retirement, so every replica applies a takeover
//!   after everything the retired replica did to that object;
//! - a replica retires itself only when it masters nothing (it hands its objects to live
//!   siblings first, while it can), and two retirements of one replica keep the smaller `last`.

use std::collections::{BTreeMap, BTreeSet};

use msite_packet::wire;

use crate::codec::{Dec, Enc};
use crate::error::{CoreError, Refusal, Result};
use crate::ids::{ObjId, ReplicaId};
use crate::keys;
use crate::model::{Entry, ObjectRef, Op};
use crate::replica::Replica;
use crate::store::{KeyRange, Keyspace, ReadView, Store};
use crate::txn::Txn;

/// The State tag of retirement records (outside every other tag of `vob.rs`).
const RETIRED: u8 = b'X';

/// A replica the family retired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retirement {
    /// The retired replica.
    pub replica: ReplicaId,
    /// The last of its entries the family keeps.
    pub last: u64,
    /// The `rmreplica` entry that retired it.
    pub by: ObjId,
}

fn key(r: &ReplicaId) -> Vec<u8> {
    let mut k = vec![RETIRED];
    k.extend_from_slice(&r.0);
    k
}

fn decode(replica: ReplicaId, v: &[u8]) -> Result<Retirement> {
    let mut d = Dec::new(v, "retirement");
    let out = Retirement {
        replica,
        last: d.u64()?,
        by: d.oid()?,
    };
    d.end()?;
    Ok(out)
}

/// Applies an `rmreplica` entry: of two retirements of one replica the one with the smaller
/// `(last, entry id)` stands, whatever the order they arrive in.
pub(crate) fn apply<S: Store>(
    txn: &mut Txn<'_, S>,
    e: &Entry,
    replica: &ReplicaId,
    last: u64,
) -> Result<()> {
    let new = Retirement {
        replica: *replica,
        last,
        by: e.id(),
    };
    let keep_old =
        matches!(retirement_in(&*txn, replica)?, Some(old) if (old.last, old.by) <= (last, new.by));
    if !keep_old {
        let v = Enc::new().u64(new.last).oid(&new.by).done();
        txn.put(Keyspace::State, &key(replica), &v);
    }
    Ok(())
}

/// The retirement of `r`, if the family retired it.
pub fn retirement_in<R: ReadView + ?Sized>(r: &R, id: &ReplicaId) -> Result<Option<Retirement>> {
    match r.get(Keyspace::State, &key(id))? {
        Some(v) => Ok(Some(decode(*id, &v)?)),
        None => Ok(None),
    }
}

/// Every retirement, by replica id.
pub fn retirements_in<R: ReadView + ?Sized>(r: &R) -> Result<Vec<Retirement>> {
    let mut out = Vec::new();
    for kv in r.scan(Keyspace::State, KeyRange::prefix(&[RETIRED]))? {
        let (k, v) = kv?;
        if let Ok(id) = <[u8; 16]>::try_from(&k[1..]) {
            out.push(decode(ReplicaId(id), &v)?);
        }
    }
    Ok(out)
}

impl<S: Store> Replica<S> {
    /// The retirement of `id`, if the family retired it.
    pub fn retirement(&self, id: &ReplicaId) -> Result<Option<Retirement>> {
        retirement_in(&self.store, id)
    }

    /// The ids of every retired replica.
    pub fn retired(&self) -> Result<BTreeSet<ReplicaId>> {
        Ok(retirements_in(&self.store)?
            .into_iter()
            .map(|r| r.replica)
            .collect())
    }

    /// The name of the replica whose entry retired a replica.
    pub fn retired_by_name(&self, r: &Retirement) -> String {
        self.replica_name(&r.by.origin)
    }

    /// Retires replica `name` for good (`msite rmreplica`): one entry, which the family
    /// applies as it travels. See the module doc for who may, and why.
    pub fn rmreplica(&self, name: &str) -> Result<Retirement> {
        self.check_writable()?;
        let id = self.view().replica_by_name(name)?;
        if let Some(r) = self.retirement(&id)? {
            return Err(CoreError::Invalid(format!(
                "replica {name} is already retired (by {}); nothing to do",
                self.retired_by_name(&r)
            )));
        }
        if id == self.me {
            self.check_masters_nothing()?;
        } else {
            self.require_master(&ObjectRef::Replica(id), &format!("replica:{name}"))?;
            self.check_nobody_holds_more(&id, name)?;
        }
        let last = self.own_row()?.get(&id);
        let e = self.local_change(|r, t, ap| {
            let e = r.append_local(t, ap, Op::RmReplica { replica: id, last })?;
            r.on_retired(t, &id)?;
            Ok(e)
        })?;
        Ok(Retirement {
            replica: id,
            last,
            by: e.id(),
        })
    }

    /// A replica retires itself only when it masters nothing but its own replica object:
    /// afterwards only the master of its replica object could move what it masters.
    fn check_masters_nothing(&self) -> Result<()> {
        let mine: Vec<ObjectRef> = self
            .view()
            .mastered_by(&self.me)?
            .into_iter()
            .filter(|o| *o != ObjectRef::Replica(self.me))
            .collect();
        let Some(first) = mine.first() else {
            return Ok(());
        };
        Err(CoreError::Invalid(format!(
            "replica {} still masters {} object(s) (the first: {}); hand them to a sibling first with `msite chmaster SELECTOR REPLICA`, or retire this replica from the replica that masters replica:{} and take them over there with `msite chmaster --all --from {}`",
            self.name(),
            mine.len(),
            self.describe_object(first),
            self.name(),
            self.name()
        )))
    }

    /// Retiring `id` keeps its entries up to what this replica holds: refused while a sibling
    /// says (in its latest packet) that it holds more of them, which would be lost.
    fn check_nobody_holds_more(&self, id: &ReplicaId, name: &str) -> Result<()> {
        let ours = self.own_row()?.get(id);
        let mut siblings = self.known_siblings()?;
        siblings.insert(*id);
        for s in siblings {
            let theirs = self.reported_row(&s)?.unwrap_or_default().get(id);
            if theirs > ours {
                return Err(CoreError::Invalid(format!(
                    "replica {} holds entries of {name} up to {theirs}, this replica only up to {ours}; import its packets first (`msite syncreplica import`), so that nothing {name} made is lost, then run rmreplica again",
                    self.replica_name(&s)
                )));
            }
        }
        Ok(())
    }

    /// Takes over every object replica `name` masters (`msite chmaster --all --from`): one
    /// `chmaster` entry each, in one local change. Refused until `name` is retired, and at
    /// any replica but the one that masters `name`'s replica object. Returns what moved.
    pub fn chmaster_all_from(&self, name: &str) -> Result<Vec<ObjectRef>> {
        self.check_writable()?;
        let id = self.view().replica_by_name(name)?;
        if id == self.me {
            return Err(CoreError::Invalid(format!(
                "replica {name} is this replica; hand its objects to a sibling with `msite chmaster SELECTOR REPLICA`"
            )));
        }
        if self.retirement(&id)?.is_none() {
            return Err(CoreError::Invalid(format!(
                "replica {name} still exports: its objects can only be taken over once it is retired; stop it, then run `msite rmreplica {name}` at the replica that masters replica:{name} ({})",
                self.replica_name(&self.view().master_of(&ObjectRef::Replica(id))?)
            )));
        }
        self.require_master(&ObjectRef::Replica(id), &format!("replica:{name}"))?;
        let objects = self.view().mastered_by(&id)?;
        if objects.is_empty() {
            return Ok(objects);
        }
        self.local_change(|r, t, ap| {
            for object in &objects {
                r.append_local(
                    t,
                    ap,
                    Op::ChMaster {
                        object: *object,
                        master: r.me,
                    },
                )?;
            }
            Ok(())
        })?;
        Ok(objects)
    }

    /// An object as a selector an operator can type (`brtype:NAME`, `elem:PATH`, …).
    pub fn describe_object(&self, o: &ObjectRef) -> String {
        let v = self.view();
        let type_name = |kind, id: &ObjId| match v.type_obj(kind, id) {
            Ok(Some(t)) => v.display_name(kind, &t.name, id).unwrap_or(t.name),
            _ => format!("{}:{}", id.origin.short(), id.number),
        };
        let path = |id: &ObjId| match v.element(id) {
            Ok(Some(e)) => e.path,
            _ => format!("{}:{}", id.origin.short(), id.number),
        };
        use crate::vob::NameKind;
        match o {
            ObjectRef::Replica(r) => format!("replica:{}", self.replica_name(r)),
            ObjectRef::BrType(id) => format!("brtype:{}", type_name(NameKind::BrType, id)),
            ObjectRef::LbType(id) => format!("lbtype:{}", type_name(NameKind::LbType, id)),
            ObjectRef::Element(id) => format!("elem:{}", path(id)),
            ObjectRef::Branch { elem, brtype } => format!(
                "branch:{}@@{}",
                path(elem),
                type_name(NameKind::BrType, brtype)
            ),
        }
    }

    /// A packet whose sender the family retired is refused whole (§10): whatever it made
    /// after its retirement is not the family's.
    pub(crate) fn retired_sender(&self, h: &wire::Header) -> Result<Option<Refusal>> {
        let sender = ReplicaId(h.sender.0);
        Ok(self.retirement(&sender)?.map(|r| Refusal::SenderRetired {
            sender: self.sender_name(h),
            by: self.retired_by_name(&r),
        }))
    }

    /// An entry about to be applied: refused when its origin is retired and it comes after
    /// the last entry the family keeps, and when it is a retirement that would leave this
    /// replica holding entries past it (`held`: the highest held of each origin).
    pub(crate) fn check_retirement_entry(
        &self,
        txn: &Txn<'_, S>,
        e: &Entry,
        held: &BTreeMap<ReplicaId, u64>,
    ) -> Result<()> {
        let past = |r: &Retirement, number: u64| {
            CoreError::Refused(Refusal::PastRetirement {
                replica: self.replica_name(&r.replica),
                last: r.last,
                number,
                by: self.replica_name(&r.by.origin),
            })
        };
        if let Some(r) = retirement_in(txn, &e.origin)? {
            if e.number > r.last {
                return Err(past(&r, e.number));
            }
        }
        if let Op::RmReplica { replica, last } = &e.op {
            let ours = held.get(replica).copied().unwrap_or(0);
            if ours > *last {
                let r = Retirement {
                    replica: *replica,
                    last: *last,
                    by: e.id(),
                };
                return Err(past(&r, ours));
            }
        }
        Ok(())
    }

    /// A retirement applied here: a restoration in progress stops awaiting the retired
    /// replica (it will never answer), and a restore request of it held here is no longer
    /// propagated (nobody waits for that restoration any more).
    pub(crate) fn on_retired(&self, txn: &mut Txn<'_, S>, replica: &ReplicaId) -> Result<()> {
        txn.delete(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, replica));
        if let Some(mut rec) = Self::recovering_in(txn)? {
            if rec.awaited.remove(replica).is_some() {
                txn.put(Keyspace::Meta, keys::RECOVERING, &rec.encode());
            }
        }
        Ok(())
    }

    /// The lock of a replica the family retired: it takes no local change any more.
    pub(crate) fn retired_lock(&self) -> Result<Option<CoreError>> {
        Ok(self.retirement(&self.me)?.map(|r| {
            CoreError::Locked(format!(
                "replica {} was retired by {} (`msite rmreplica`) and takes no changes any more; its siblings refuse its packets — work at a live sibling (`msite lsreplica`)",
                self.name(),
                self.retired_by_name(&r)
            ))
        }))
    }

    /// Export to a retired replica is refused: nothing it receives reaches the family again.
    pub(crate) fn check_target_live(&self, target: &ReplicaId) -> Result<()> {
        match self.retirement(target)? {
            Some(r) => Err(CoreError::Invalid(format!(
                "replica {} was retired by {} (`msite rmreplica`); nothing is exported to it any more",
                self.replica_name(target),
                self.retired_by_name(&r)
            ))),
            None => Ok(()),
        }
    }
}
