//! The family's sealing policy and its replicas' age recipients, as replicated state
//! (docs/protocol.md §8, "Sealing as a family policy").
//!
//! Each replica announces its own age recipient in the key cell of its key in force (format
//! 1.4), signed with that key: a relay repeats the cell with the owner's signature or not at
//! all, and a receiver takes a recipient only when it verifies with the key it holds for that
//! replica. The policy is an entry (`SealPolicy`), so it reaches every replica, relays and
//! creation packets included, authenticated by its origin's chain heads; the entry with the
//! latest `(time_ms, origin)` wins, so every replica settles on the same policy whatever the
//! order it applies them in. msite-core keeps both; the sealing itself is the CLI's.

use ed25519_dalek::Signer;
use msite_packet::{sign, wire};

use super::trust::{public_key_in, verifies};
use crate::error::Result;
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::{Entry, Op};
use crate::replica::Replica;
use crate::store::{Keyspace, Store};
use crate::txn::Txn;

/// Peers row of the policy in force (replicated state: a snapshot carries it): time_ms (u64
/// BE), origin (16 bytes), always (1 byte).
fn seal_policy_key() -> Vec<u8> {
    keys::peer(keys::peers::SEAL_POLICY, &ReplicaId([0; 16]))
}

/// Peers tag of a replica's age recipient: (tag, replica) → signature (64 bytes, zeros for
/// our own: signed when a header lists it) then the recipient's text.
const RECIPIENT: u8 = keys::peers::RECIPIENT;

/// The family's sealing policy, as this replica holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealPolicy {
    /// Whether every export seals its packet to the target's recipient.
    pub always: bool,
    /// The replica whose entry set it.
    pub set_by: ReplicaId,
    /// When, in ms since the Unix epoch at that replica.
    pub time_ms: u64,
}

fn decode_policy(v: &[u8]) -> Option<SealPolicy> {
    Some(SealPolicy {
        time_ms: u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
        set_by: ReplicaId(v.get(8..24)?.try_into().ok()?),
        always: *v.get(24)? == 1,
    })
}

/// Applies a `SealPolicy` entry: it replaces the policy held unless that one is later by
/// `(time_ms, origin)` (the same order everywhere, so every replica ends with the same one).
pub(crate) fn apply<S: Store>(txn: &mut Txn<'_, S>, e: &Entry, always: bool) -> Result<()> {
    if let Some(held) = txn
        .get(Keyspace::Peers, &seal_policy_key())?
        .and_then(|v| decode_policy(&v))
    {
        if (held.time_ms, held.set_by.0) > (e.time_ms, e.origin.0) {
            return Ok(());
        }
    }
    let mut v = e.time_ms.to_be_bytes().to_vec();
    v.extend_from_slice(&e.origin.0);
    v.push(always as u8);
    txn.put(Keyspace::Peers, &seal_policy_key(), &v);
    Ok(())
}

impl<S: Store> Replica<S> {
    /// The family's sealing policy held here; `None` when no replica ever set one (packets
    /// are then sealed only when the export command asks).
    pub fn seal_policy(&self) -> Result<Option<SealPolicy>> {
        Ok(self
            .store
            .get(Keyspace::Peers, &seal_policy_key())?
            .and_then(|v| decode_policy(&v)))
    }

    /// `msite seal-policy always|never`: sets the family's policy, in an entry of this
    /// replica that reaches every sibling.
    pub fn set_seal_policy(&self, always: bool) -> Result<()> {
        self.local_change(|r, t, ap| {
            r.append_local(t, ap, Op::SealPolicy { always })?;
            Ok(())
        })
    }

    /// Keeps `recipient` (`age1…`) as this replica's own, announced in every header from now.
    pub fn set_own_recipient(&self, recipient: &str) -> Result<()> {
        if self.recipient_of(&self.me)?.as_deref() == Some(recipient) {
            return Ok(());
        }
        let mut txn = Txn::new(&self.store);
        let mut v = wire::NO_SIGNATURE.to_vec();
        v.extend_from_slice(recipient.as_bytes());
        txn.put(Keyspace::Peers, &keys::peer(RECIPIENT, &self.me), &v);
        txn.commit(crate::store::WriteOptions::SYNC)?;
        Ok(())
    }

    /// Keeps `recipient` for replica `who` when none is known here: what the creator of a new
    /// replica sealed its creation packet to. Used here only; it is relayed only once `who`
    /// announces (and signs) it itself.
    pub fn note_recipient(&self, who: &ReplicaId, recipient: &str) -> Result<()> {
        if self.recipient_of(who)?.is_some() {
            return Ok(());
        }
        let mut txn = Txn::new(&self.store);
        let mut v = wire::NO_SIGNATURE.to_vec();
        v.extend_from_slice(recipient.as_bytes());
        txn.put(Keyspace::Peers, &keys::peer(RECIPIENT, who), &v);
        txn.commit(crate::store::WriteOptions::SYNC)?;
        Ok(())
    }

    /// The age recipient of replica `r` known here (its own announcement, verified).
    pub fn recipient_of(&self, r: &ReplicaId) -> Result<Option<String>> {
        Ok(self.recipient_entry(r)?.map(|(_, text)| text))
    }

    fn recipient_entry(&self, r: &ReplicaId) -> Result<Option<(wire::Signature, String)>> {
        let Some(v) = self.store.get(Keyspace::Peers, &keys::peer(RECIPIENT, r))? else {
            return Ok(None);
        };
        let (Some(sig), Ok(text)) = (
            v.get(..64).and_then(|s| s.try_into().ok()),
            String::from_utf8(v.get(64..).unwrap_or_default().to_vec()),
        ) else {
            return Ok(None);
        };
        Ok(Some((sig, text)))
    }

    /// Puts the recipients known here into `cells` (a header's keys), on the last cell of each
    /// replica (its key in force): ours signed now with our key, others' with the signature
    /// their owner made, when it still verifies with the cell's key (an owner that rotated
    /// its key announces again with its next header).
    pub(super) fn attach_recipients(&self, cells: &mut [wire::KeyCell]) -> Result<()> {
        let family = wire::Id(self.family.0);
        for i in 0..cells.len() {
            let last = cells
                .get(i + 1)
                .is_none_or(|n| n.replica != cells[i].replica);
            let who = ReplicaId(cells[i].replica.0);
            let introduction = match who == self.me {
                true => self.introduction()?,
                false => None,
            };
            let mut held = self.recipient_entry(&who)?;
            if held.is_none() && introduction.is_some() {
                // No recipient yet: an empty one, to carry the introduction.
                held = Some((wire::NO_SIGNATURE, String::new()));
            }
            let Some((sig, text)) = held.filter(|_| last) else {
                continue;
            };
            let msg = sign::recipient_message(&family, &cells[i].replica, &text);
            let sig = if who == self.me {
                self.signing_key()?.sign(&msg).to_bytes()
            } else if verifies(&cells[i].key, &msg, &sig) {
                sig
            } else {
                continue;
            };
            cells[i].recipient = Some(wire::SignedRecipient {
                recipient: text,
                signature: sig,
                introduction,
            });
        }
        Ok(())
    }

    /// Takes the recipients an authentic header announces for siblings: each only with its
    /// owner's signature, by the key this replica holds for the owner (after the packet's
    /// entries applied); any other is left out, not refused (it may predate a rotation).
    pub(super) fn take_recipients(&self, txn: &mut Txn<'_, S>, h: &wire::Header) -> Result<()> {
        for c in &h.keys {
            let Some(r) = c.recipient.as_ref().filter(|r| !r.recipient.is_empty()) else {
                continue;
            };
            let who = ReplicaId(c.replica.0);
            if who == self.me || public_key_in(txn, &who)? != Some(c.key) {
                continue;
            }
            let msg = sign::recipient_message(&h.family, &c.replica, &r.recipient);
            if verifies(&c.key, &msg, &r.signature) {
                let mut v = r.signature.to_vec();
                v.extend_from_slice(r.recipient.as_bytes());
                txn.put(Keyspace::Peers, &keys::peer(RECIPIENT, &who), &v);
            }
        }
        Ok(())
    }
}
