//! Fork repair decisions signed by the replica that decided (docs/protocol.md §6,
//! "Divergence and fork repair"; packet format 1.5).
//!
//! A decision makes every replica that holds the entry it gives up drop that entry and what
//! follows it, so whoever could make one up, or alter one in transit, could make the family
//! give up any origin's history. The header's signature proves only who *sent* a decision; a
//! hub relays its siblings' decisions. The rules the code keeps:
//! - The deciding replica signs each decision (`sign::decision_message`) when the operator
//!   makes it, and the signature is kept with it and relayed unchanged.
//! - A receiver adopts a decision only when that signature verifies with a key it holds for
//!   the decider: the key in force or one the decider replaced (a decision outlives its
//!   decider's key rotations).
//! - A decision whose signature does not verify with any of them is a forgery: the packet
//!   carrying it is refused as not authentic, with nothing of it applied.
//! - A decision that cannot be checked here (unsigned, as decisions made before format 1.5
//!   are, by a decider whose key is not held here yet, or signed with a key the packet's
//!   header lists for the decider after the ones held here: a rotation not applied here yet)
//!   is neither adopted from that packet nor relayed; the decider's own packets carry it,
//!   signed, to everyone, and a packet after the rotation applied brings it in.

use ed25519_dalek::Signer;
use msite_packet::{sign, wire};

use super::rekey::old_keys;
use super::trust::{fingerprint, provisional_keys, public_key_in, verifies};
use crate::error::{CoreError, Refusal, Result};
use crate::ids::ReplicaId;
use crate::replica::Replica;
use crate::store::Store;

/// What a receiver can tell of a carried decision's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecisionCheck {
    /// It verifies with a key held here for the decider: adopt it.
    Authentic,
    /// It cannot be checked here (unsigned, or the decider's key is not held): skip it.
    Unverifiable,
}

impl<S: Store> Replica<S> {
    /// This replica's signature of its own decision `d`.
    pub(crate) fn sign_decision(&self, d: &wire::ForkDecision) -> Result<wire::Signature> {
        let msg = sign::decision_message(&wire::Id(self.family.0), d);
        Ok(self.signing_key()?.sign(&msg).to_bytes())
    }

    /// Checks a decision that a packet from `sender` (header `h`) carries against the keys
    /// held here for its decider, then the later ones `h` lists for it. A signature that
    /// verifies with none of them refuses the packet.
    pub(crate) fn check_decision(
        &self,
        d: &wire::ForkDecision,
        h: &wire::Header,
        sender: &str,
    ) -> Result<DecisionCheck> {
        if !d.is_signed() {
            return Ok(DecisionCheck::Unverifiable);
        }
        let decider = ReplicaId(d.decided_by.0);
        let mut held: Vec<wire::PublicKey> = old_keys(&self.store, &decider)?
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        held.extend(public_key_in(&self.store, &decider)?);
        let Some(in_force) = held.last().copied() else {
            return Ok(DecisionCheck::Unverifiable);
        };
        let msg = sign::decision_message(&wire::Id(self.family.0), d);
        if held.iter().any(|k| verifies(k, &msg, &d.signature)) {
            return Ok(DecisionCheck::Authentic);
        }
        let later = provisional_keys(&self.store, h, &decider)?;
        if later.iter().any(|k| verifies(k, &msg, &d.signature)) {
            return Ok(DecisionCheck::Unverifiable);
        }
        Err(CoreError::Refused(Refusal::Unauthentic {
            sender: sender.to_string(),
            detail: format!(
                "it carries a fork repair decision attributed to {} (entry {} of {}) whose signature does not verify with {}'s key {} (a decision made up or altered in transit)",
                self.replica_name(&decider),
                d.number,
                self.replica_name(&ReplicaId(d.origin.0)),
                self.replica_name(&decider),
                fingerprint(&in_force)
            ),
        }))
    }
}
