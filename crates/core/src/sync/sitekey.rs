//! A new replica's signing key travels in the entries that create it (docs/protocol.md §8,
//! "A new replica's key"): no sibling trusts a key on first use.
//!
//! The new site's operator makes the key first ([`SiteKey`], `msite identity --new`) and gives
//! its public half to the creator, whose `mkreplica export --key` appends, right after the
//! `CreateReplica` entry and in the same transaction, a `VouchKey { replica: new, key, from: 0 }`
//! entry of its own. That entry is covered by the creator's signed chain heads like every
//! other, so every sibling learns the key from the creator's history, before the new replica
//! sends anything; the secret never leaves the new site. The new site checks, when it takes its
//! creation packet, that the packet gives it the key whose secret it holds.

use ed25519_dalek::SigningKey;
use msite_packet::wire;

use msite_packet::sign;

use super::trust::{fingerprint, public_key_in, verifies, SIGNING_KEY};
use crate::error::{CoreError, Refusal, Result};
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::{Entry, Op};
use crate::replica::{Appender, Replica};
use crate::store::{Keyspace, Store};
use crate::txn::Txn;

/// A site's Ed25519 signing key (its 32-byte secret), made before its replica exists.
#[derive(Clone)]
pub struct SiteKey([u8; 32]);

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "SiteKey({})", fingerprint(&self.public()))
    }
}

impl SiteKey {
    /// A new key from the environment's randomness.
    pub fn generate(env: &dyn crate::env::Env) -> SiteKey {
        SiteKey(env.secret_key())
    }

    /// The key with this secret.
    pub fn from_secret(secret: [u8; 32]) -> SiteKey {
        SiteKey(secret)
    }

    /// The secret, as kept in an identity file.
    pub fn secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key, which the creator announces.
    pub fn public(&self) -> wire::PublicKey {
        SigningKey::from_bytes(&self.0).verifying_key().to_bytes()
    }
}

/// A public key from 64 hex digits (as `msite identity` prints it), checked to be a valid
/// Ed25519 point.
pub fn parse_public_key(hex: &str) -> Option<wire::PublicKey> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    ed25519_dalek::VerifyingKey::from_bytes(&out).ok()?;
    Some(out)
}

impl<S: Store> Replica<S> {
    /// In the transaction that creates replica `new`: this replica vouches for its key, from
    /// its first entry on, and holds that key for it from now.
    pub(super) fn announce_new_replica_key(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        new: ReplicaId,
        key: &wire::PublicKey,
    ) -> Result<()> {
        self.append_local(
            txn,
            ap,
            Op::VouchKey {
                replica: new,
                key: *key,
                from: 0,
            },
        )?;
        super::rekey::replace_key(txn, &new, key, 0)
    }

    /// At the new site, after its creation packet's entries were applied: the packet must give
    /// this replica the key whose secret the site holds; the secret is then kept (Meta).
    /// `source` names the packet and `creator` its sender in a refusal.
    pub(super) fn take_own_signing_key(
        &self,
        txn: &mut Txn<'_, S>,
        key: &SiteKey,
        source: &str,
        creator: &str,
    ) -> Result<()> {
        let mine = key.public();
        let given = public_key_in(txn, &self.me)?;
        if given != Some(mine) {
            let detail = match given {
                None => format!(
                    "{source} does not announce a key for the new replica (made by an msite without `mkreplica export --key`); ask the creator for a new creation packet made with --key {}",
                    crate::ids::hex(&mine)
                ),
                Some(other) => format!(
                    "{source} gives the new replica key {}, but this site's key is {} (a key swapped in the creation packet, or a packet made for another identity file)",
                    fingerprint(&other),
                    fingerprint(&mine)
                ),
            };
            return Err(CoreError::Refused(Refusal::Unauthentic {
                sender: creator.to_string(),
                detail,
            }));
        }
        txn.put(Keyspace::Meta, SIGNING_KEY, key.secret());
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::PUBLIC_KEY, &self.me),
            &mine,
        );
        Ok(())
    }

    /// At the new site: keeps the creator's entry announcing this replica's key, with the
    /// creator's chain head at it from the creation header (`h`), as this replica's
    /// introduction (sent in its own key cell, see [`Self::pin_introduced`]).
    pub(super) fn keep_introduction(&self, txn: &mut Txn<'_, S>, h: &wire::Header) -> Result<()> {
        for head in h.heads.iter().filter(|x| x.origin.0 == h.sender.0) {
            let key = keys::oplog(&ReplicaId(head.origin.0), head.number);
            let Some(v) = txn.get(Keyspace::Oplog, &key)? else {
                continue;
            };
            let canonical = crate::replica::StoredEntry::decode(&v)?.canonical;
            let Ok(e) = Entry::decode_verified(&canonical) else {
                continue;
            };
            if matches!(e.op, Op::VouchKey { replica, .. } if replica == self.me) {
                // origin (16), number (8), hash (32), signature (64), then the entry.
                let mut v = head.origin.0.to_vec();
                v.extend_from_slice(&head.number.to_be_bytes());
                v.extend_from_slice(&head.hash);
                v.extend_from_slice(&head.signature);
                v.extend_from_slice(&canonical);
                txn.put(Keyspace::Meta, INTRODUCTION, &v);
            }
        }
        Ok(())
    }

    /// This replica's introduction, if it was made with one.
    pub(super) fn introduction(&self) -> Result<Option<wire::Introduction>> {
        let Some(v) = self.store.get(Keyspace::Meta, INTRODUCTION)? else {
            return Ok(None);
        };
        let head = || -> Option<wire::SignedHead> {
            Some(wire::SignedHead {
                origin: wire::Id(v.get(..16)?.try_into().ok()?),
                number: u64::from_be_bytes(v.get(16..24)?.try_into().ok()?),
                hash: v.get(24..56)?.try_into().ok()?,
                signature: v.get(56..120)?.try_into().ok()?,
            })
        };
        Ok(head().map(|head| wire::Introduction {
            entry: v[120..].to_vec(),
            head,
        }))
    }

    /// Before an import: a sender of which no key is held here, whose own key cell carries
    /// its introduction — its creator's `VouchKey` entry giving it that key, with the
    /// creator's chain head at the entry, signed by the key held here for the creator — has
    /// that key pinned now, as the entry will when it arrives: the creator's signature, not
    /// first use, vouches for it. Anything else changes nothing.
    pub(super) fn pin_introduced(&self, h: &wire::Header) -> Result<()> {
        let sender = ReplicaId(h.sender.0);
        if h.family.0 != self.family.0 || public_key_in(&self.store, &sender)?.is_some() {
            return Ok(());
        }
        let Some(cell) = h.keys.iter().rev().find(|c| c.replica.0 == sender.0) else {
            return Ok(());
        };
        let intro = cell
            .recipient
            .as_ref()
            .and_then(|r| r.introduction.as_ref());
        let Some(intro) = intro else { return Ok(()) };
        let Ok(e) = Entry::decode_verified(&intro.entry) else {
            return Ok(());
        };
        let gives = matches!(e.op, Op::VouchKey { replica, key, .. } if replica == sender && key == cell.key);
        let head = &intro.head;
        if !gives || head.origin.0 != e.origin.0 || head.number != e.number || head.hash != e.hash {
            return Ok(());
        }
        let msg = sign::head_message(&h.family, &head.origin, head.number, &head.hash);
        let by = super::rekey::key_at(&self.store, &e.origin, e.number)?;
        let replaced = super::rekey::old_keys(&self.store, &e.origin)?;
        let keys = by.into_iter().chain(replaced.into_iter().map(|(_, k)| k));
        if keys
            .into_iter()
            .any(|k| verifies(&k, &msg, &head.signature))
        {
            let mut txn = Txn::new(&self.store);
            super::rekey::replace_key(&mut txn, &sender, &cell.key, 0)?;
            txn.commit(crate::store::WriteOptions::SYNC)?;
        }
        Ok(())
    }
}

/// Meta: this replica's introduction (msgpack of `wire::Introduction`).
const INTRODUCTION: &[u8] = b"introduction";
