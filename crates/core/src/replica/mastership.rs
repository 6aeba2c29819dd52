//! Mastership: the check that this replica masters an object, handing an object over
//! (`chmaster`), asking its master for it (`reqmaster`), the policy for requests that reach
//! this replica ([`ReqMasterPolicy`]) and the requests kept for the operator.

use crate::codec::{Dec, Enc};
use crate::error::{CoreError, Result};
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::{ObjectRef, Op};
use crate::store::{KeyRange, Keyspace, Store, WriteOptions};
use crate::txn::Txn;

use super::{Replica, Selector};

/// A mastership-request policy: what this replica does with requests for objects it masters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqMasterPolicy {
    /// Grant at once, on import (the default).
    Allow,
    /// Refuse (the request is logged).
    Deny,
    /// Keep the request for the operator, who grants it with `chmaster`.
    Manual,
}

impl ReqMasterPolicy {
    pub(super) fn byte(self) -> u8 {
        match self {
            ReqMasterPolicy::Allow => 0,
            ReqMasterPolicy::Deny => 1,
            ReqMasterPolicy::Manual => 2,
        }
    }
    /// Parses `allow`, `deny` or `manual`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(ReqMasterPolicy::Allow),
            "deny" => Some(ReqMasterPolicy::Deny),
            "manual" => Some(ReqMasterPolicy::Manual),
            _ => None,
        }
    }
    /// The policy's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReqMasterPolicy::Allow => "allow",
            ReqMasterPolicy::Deny => "deny",
            ReqMasterPolicy::Manual => "manual",
        }
    }
}

impl<S: Store> Replica<S> {
    pub(crate) fn require_master(&self, object: &ObjectRef, what: &str) -> Result<()> {
        let master = self.view().master_of(object)?;
        if master != self.me {
            return Err(CoreError::NotMaster {
                object: what.into(),
                master: self.replica_name(&master),
                me: self.name(),
            });
        }
        Ok(())
    }

    /// Hands an object mastered here to `to`.
    pub fn chmaster(&self, sel: &str, to: &str) -> Result<()> {
        self.check_writable()?;
        let s = Selector::parse(sel)?;
        let object = self.resolve_selector(&s)?;
        let to_name = to;
        let to = self.view().replica_by_name(to)?;
        self.require_master(&object, sel)?;
        if let Some(r) = self.retirement(&to)? {
            return Err(CoreError::Invalid(format!(
                "replica {to_name} was retired by {} (`msite rmreplica`): it makes no changes any more, so nobody could change {sel} again; give it to a live replica",
                self.retired_by_name(&r)
            )));
        }
        if to == self.me {
            return Err(CoreError::Invalid(format!(
                "{sel} is already mastered by this replica"
            )));
        }
        self.local_change(|r, t, ap| {
            r.append_local(t, ap, Op::ChMaster { object, master: to })?;
            Ok(())
        })?;
        self.clear_master_requests(&object)
    }

    /// Asks the master of an object for mastership; the request travels in packets.
    pub fn reqmaster(&self, sel: &str) -> Result<String> {
        self.check_writable()?;
        let s = Selector::parse(sel)?;
        let object = self.resolve_selector(&s)?;
        let master = self.view().master_of(&object)?;
        if master == self.me {
            return Err(CoreError::Invalid(format!(
                "{sel} is already mastered by this replica"
            )));
        }
        self.local_change(|r, t, ap| {
            r.append_local(
                t,
                ap,
                Op::ReqMaster {
                    object,
                    requester: r.me,
                },
            )?;
            // Asking again replaces an earlier refusal's notice.
            crate::denied::clear(t, &object);
            Ok(())
        })?;
        Ok(self.replica_name(&master))
    }

    /// Mastership requests waiting for the operator: (object, requester).
    pub fn pending_master_requests(&self) -> Result<Vec<(ObjectRef, ReplicaId)>> {
        let mut out = Vec::new();
        for kv in self.store.scan(
            Keyspace::Peers,
            KeyRange::prefix(&[keys::peers::MASTER_REQUEST]),
        )? {
            let (_, v) = kv?;
            let mut d = Dec::new(&v, "master request");
            let obj = decode_objref(&mut d)?;
            let req = d.rid()?;
            out.push((obj, req));
        }
        Ok(out)
    }

    fn clear_master_requests(&self, object: &ObjectRef) -> Result<()> {
        let p = master_request_prefix(object);
        let mut txn = Txn::new(&self.store);
        for (k, _) in txn.scan_prefix(Keyspace::Peers, &p)? {
            txn.delete(Keyspace::Peers, &k);
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }
}

pub(crate) fn encode_objref(e: Enc, o: &ObjectRef) -> Enc {
    match o {
        ObjectRef::Replica(r) => e.u8(0).rid(r),
        ObjectRef::BrType(id) => e.u8(1).oid(id),
        ObjectRef::LbType(id) => e.u8(2).oid(id),
        ObjectRef::Element(id) => e.u8(3).oid(id),
        ObjectRef::Branch { elem, brtype } => e.u8(4).oid(elem).oid(brtype),
    }
}

pub(crate) fn decode_objref(d: &mut Dec<'_>) -> Result<ObjectRef> {
    Ok(match d.u8()? {
        0 => ObjectRef::Replica(d.rid()?),
        1 => ObjectRef::BrType(d.oid()?),
        2 => ObjectRef::LbType(d.oid()?),
        3 => ObjectRef::Element(d.oid()?),
        4 => ObjectRef::Branch {
            elem: d.oid()?,
            brtype: d.oid()?,
        },
        _ => {
            return Err(CoreError::Codec(crate::codec::CodecError {
                what: "object reference",
            }))
        }
    })
}

pub(crate) fn master_request_prefix(o: &ObjectRef) -> Vec<u8> {
    let mut k = vec![keys::peers::MASTER_REQUEST];
    k.extend_from_slice(&encode_objref(Enc::new(), o).done());
    k
}
