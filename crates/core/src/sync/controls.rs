//! What a packet asks of this replica besides its entries: restore requests and provisional
//! acknowledgements (control records, PROTOCOL §6), and mastership requests imported for
//! objects mastered here.

use msite_packet::wire;

use crate::codec::Enc;
use crate::error::Result;
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::{Op, Row};
use crate::replica::{get_u64, Appender, Replica};
use crate::restore::{HeldRequest, ProvisionalAck};
use crate::store::{Keyspace, Store, WriteOptions};
use crate::txn::Txn;

impl<S: Store> Replica<S> {
    /// Handles a packet's control records (restore requests, provisional acknowledgements).
    pub(super) fn apply_controls(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        controls: &[wire::Control],
        notes: &mut Vec<String>,
    ) -> Result<()> {
        for c in controls {
            match c {
                wire::Control::RestoreRequest {
                    replica,
                    incarnation,
                    row,
                    ..
                } => {
                    let req = HeldRequest {
                        replica: ReplicaId(replica.0),
                        incarnation: *incarnation,
                        row: Row::from_wire(row),
                    };
                    self.on_request(txn, ap, &req, notes)?;
                }
                wire::Control::ProvisionalAck {
                    acker,
                    replica,
                    incarnation,
                    held,
                    ..
                } => {
                    let a = ProvisionalAck {
                        acker: ReplicaId(acker.0),
                        replica: ReplicaId(replica.0),
                        incarnation: *incarnation,
                        held: *held,
                    };
                    self.on_provisional_ack(txn, &a)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn learn_sender_request(&self, h: &wire::Header) -> Result<()> {
        let sender = ReplicaId(h.sender.0);
        let mut txn = Txn::new(&self.store);
        let mut ap = Appender::load(&txn)?;
        let mut notes = Vec::new();
        for c in &h.controls {
            if let wire::Control::RestoreRequest {
                replica,
                incarnation,
                row,
                ..
            } = c
            {
                if replica.0 == sender.0 {
                    // Relayed later with its signature, and with the key that checks it.
                    self.take_control_signature(&mut txn, c);
                    super::trust::pin_oldest_listed_keys(&mut txn, h)?;
                    let req = HeldRequest {
                        replica: sender,
                        incarnation: *incarnation,
                        row: Row::from_wire(row),
                    };
                    self.on_request(&mut txn, &mut ap, &req, &mut notes)?;
                }
            }
        }
        // The sender's own incarnation is news about the sender too: without it our packets
        // to a replica whose restoration already completed stay stale forever.
        let k = keys::peer(keys::peers::INCARNATION, &sender);
        if h.sender_incarnation > get_u64(&txn, Keyspace::Peers, &k)? {
            txn.put(Keyspace::Peers, &k, &h.sender_incarnation.to_be_bytes());
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }

    /// Handles mastership requests just imported for objects this replica masters.
    pub(super) fn process_master_requests(
        &self,
        grants: &[(crate::model::ObjectRef, ReplicaId)],
    ) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        let policy = self.reqmaster_policy()?;
        for (object, requester) in grants {
            if *requester == self.me || self.view().master_of(object).ok() != Some(self.me) {
                continue;
            }
            let who = self.replica_name(requester);
            if let Some(r) = self.retirement(requester)? {
                // Made before the request's maker was retired: granted, the object could never
                // change again (nothing a retired replica makes is taken).
                notes.push(format!(
                    "mastership requested by {who} not granted: {who} was retired by {}",
                    self.retired_by_name(&r)
                ));
                continue;
            }
            match policy {
                crate::replica::ReqMasterPolicy::Allow if self.check_writable().is_ok() => {
                    self.local_change(|r, t, ap| {
                        r.append_local(
                            t,
                            ap,
                            Op::ChMaster {
                                object: *object,
                                master: *requester,
                            },
                        )?;
                        Ok(())
                    })?;
                    notes.push(format!("granted mastership requested by {who}"));
                }
                crate::replica::ReqMasterPolicy::Deny => {
                    notes.push(self.deny_master(object, requester, &who)?);
                }
                _ => {
                    let mut k = crate::replica::master_request_prefix(object);
                    k.extend_from_slice(&requester.0);
                    let v = crate::replica::encode_objref(Enc::new(), object)
                        .rid(requester)
                        .done();
                    use crate::store::StoreExt;
                    self.store
                        .put_one(Keyspace::Peers, &k, &v, WriteOptions::SYNC)?;
                    notes.push(format!("{who} asks for mastership of an object mastered here; grant it with `msite chmaster`"));
                }
            }
        }
        Ok(notes)
    }
}
