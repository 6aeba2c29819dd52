//! Telling a requester that its mastership request was refused (issue #18 item 5;
//! docs/protocol.md §2, "Mastership requests").
//!
//! A master whose policy is `deny` appends a numbered `DenyMaster { object, requester }` entry
//! when it imports a request, so the refusal travels to the requester like any change (through
//! relays too). The entry changes nothing in the object base. The requester, applying it,
//! keeps a notice (Peers `DENIED` ++ object: the master and when it refused) that
//! `msite status` shows and its import prints, until it asks for that object again.

use crate::codec::{Dec, Enc};
use crate::error::Result;
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::{ObjectRef, Op};
use crate::replica::{decode_objref, encode_objref, Replica};
use crate::store::{KeyRange, Keyspace, Store};
use crate::txn::Txn;

/// A refused mastership request of this replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The object asked for.
    pub object: ObjectRef,
    /// The master that refused.
    pub master: ReplicaId,
    /// When it refused (the master's clock, ms since the Unix epoch).
    pub time_ms: u64,
}

fn key(object: &ObjectRef) -> Vec<u8> {
    let mut k = vec![keys::peers::DENIED];
    k.extend_from_slice(&encode_objref(Enc::new(), object).done());
    k
}

/// Records, at the requester, that `master` refused its request for `object`.
pub(crate) fn record<S: Store>(
    txn: &mut Txn<'_, S>,
    object: &ObjectRef,
    master: &ReplicaId,
    time_ms: u64,
) {
    let v = Enc::new().rid(master).u64(time_ms).done();
    txn.put(Keyspace::Peers, &key(object), &v);
}

/// Forgets the notice for `object` (the requester asks again).
pub(crate) fn clear<S: Store>(txn: &mut Txn<'_, S>, object: &ObjectRef) {
    txn.delete(Keyspace::Peers, &key(object));
}

impl<S: Store> Replica<S> {
    /// The master refuses `requester`'s request for `object` (policy `deny`) with an entry
    /// that tells the requester; returns the import's note. A locked replica (restored,
    /// recovering) numbers nothing: it only notes the refusal, as before.
    pub(crate) fn deny_master(
        &self,
        object: &ObjectRef,
        requester: &ReplicaId,
        who: &str,
    ) -> Result<String> {
        if self.check_writable().is_err() {
            return Ok(format!(
                "refused a mastership request from {who} (policy: deny)"
            ));
        }
        let op = Op::DenyMaster {
            object: *object,
            requester: *requester,
        };
        self.local_change(|r, t, ap| r.append_local(t, ap, op))?;
        Ok(format!(
            "refused a mastership request from {who} (policy: deny); {who} is told with the next packets"
        ))
    }

    /// The note an import prints when it brings a refusal of our request.
    pub(crate) fn denied_note(&self, object: &ObjectRef, master: &ReplicaId) -> String {
        format!(
            "{} refused this replica's request for mastership of {} (its policy is deny); ask its operator, who can hand it over with `msite chmaster`",
            self.replica_name(master),
            self.describe_object(object)
        )
    }

    /// This replica's mastership requests that their master refused, oldest object first.
    pub fn denied_requests(&self) -> Result<Vec<Denied>> {
        let mut out = Vec::new();
        let range = KeyRange::prefix(&[keys::peers::DENIED]);
        for kv in self.store.scan(Keyspace::Peers, range)? {
            let (k, v) = kv?;
            let object = decode_objref(&mut Dec::new(&k[1..], "denied object"))?;
            let mut d = Dec::new(&v, "denied request");
            out.push(Denied {
                object,
                master: d.rid()?,
                time_ms: d.u64()?,
            });
        }
        Ok(out)
    }
}
