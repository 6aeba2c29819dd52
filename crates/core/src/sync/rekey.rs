//! Key rotation and vouching (docs/protocol.md §8, "Key rotation and loss").
//!
//! A replica's signing key changes only through a replicated entry: `RotateKey` (`msite
//! rekey`), which the old key proves, or `VouchKey` (`msite vouch`), made by another replica
//! for one whose key is lost or compromised. Each replica keeps, per sibling, the key in force
//! now (`PUBLIC_KEY`) and the keys it replaced with the last entry each covers (`OLD_KEY`), so
//! a chain head of an entry before a rotation still verifies with the key of its time, while a
//! packet header is accepted only with the key in force now.

use ed25519_dalek::{Signer, SigningKey};
use msite_packet::{sign, wire};

use super::trust::{fingerprint, public_key_in, verifies, SIGNING_KEY};
use crate::error::{CoreError, Refusal, Result};
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::{Entry, Op};
use crate::replica::{get_u64, Replica};
use crate::store::{KeyRange, Keyspace, ReadView, Store};
use crate::txn::Txn;

/// Peers tag of a replaced key: (tag, replica, last number it covers, u64 BE) → the key.
pub(crate) const OLD_KEY: u8 = crate::keys::peers::OLD_KEY;

/// The tag replaced keys had until it was found shared with `keys::peers::GIVEN_UP`; stores
/// written then keep theirs under it, so they are still read.
const LEGACY_OLD_KEY: u8 = 30;

fn old_key_prefix(who: &ReplicaId) -> Vec<u8> {
    keys::peer(OLD_KEY, who)
}

fn old_key_key(who: &ReplicaId, until: u64) -> Vec<u8> {
    let mut k = old_key_prefix(who);
    k.extend_from_slice(&until.to_be_bytes());
    k
}

/// The keys `who` replaced, oldest first, each with the last of its entries it covers.
pub(crate) fn old_keys<R: ReadView + ?Sized>(
    r: &R,
    who: &ReplicaId,
) -> Result<Vec<(u64, wire::PublicKey)>> {
    let mut out = Vec::new();
    for tag in [OLD_KEY, LEGACY_OLD_KEY] {
        for kv in r.scan(Keyspace::Peers, KeyRange::prefix(&keys::peer(tag, who)))? {
            let (k, v) = kv?;
            let until = k.get(17..25).and_then(|b| b.try_into().ok());
            // Only a 32-byte value is a key: under the legacy tag, fork repair's given-up
            // entries (`GIVEN_UP`) share the layout and are longer.
            if let (Some(until), Ok(key)) = (until.map(u64::from_be_bytes), v.try_into()) {
                out.push((until, key));
            }
        }
    }
    out.sort_by_key(|(until, _)| *until);
    Ok(out)
}

/// The key that covers entry `number` of `who`: the oldest replaced key whose range holds it,
/// else the key in force now.
pub(crate) fn key_at<R: ReadView + ?Sized>(
    r: &R,
    who: &ReplicaId,
    number: u64,
) -> Result<Option<wire::PublicKey>> {
    for (until, key) in old_keys(r, who)? {
        if number <= until {
            return Ok(Some(key));
        }
    }
    public_key_in(r, who)
}

/// The keys `who` replaced by a rotation of its own (a `RotateKey` entry held here at the
/// number the key covers up to), oldest first, each with that number. Unlike a key a vouch
/// replaced (lost or compromised), such a key was only ever held by `who` until it rotated, so
/// whatever it signed, `who` stated before that entry. A rotation entry retention dropped
/// still counts (its record stays); in a store from before that record it is not found.
pub(crate) fn rotated_keys<R: ReadView + ?Sized>(
    r: &R,
    who: &ReplicaId,
) -> Result<Vec<(u64, wire::PublicKey)>> {
    let mut out = Vec::new();
    for (until, key) in old_keys(r, who)? {
        if rotation_at(r, who, until)? {
            out.push((until, key));
        }
    }
    Ok(out)
}

/// Peers key of the record that entry `number` of `who` rotated its key.
fn rotation_record_key(who: &ReplicaId, number: u64) -> Vec<u8> {
    let mut k = keys::peer(keys::peers::ROTATED, who);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// Whether entry `number` of `who` is a rotation of `who`'s key: recorded when it applied
/// (so a scrub that drops the entry keeps it), or, in a store from before that record, read
/// from the entry itself while it is held.
fn rotation_at<R: ReadView + ?Sized>(r: &R, who: &ReplicaId, number: u64) -> Result<bool> {
    if r.get(Keyspace::Peers, &rotation_record_key(who, number))?
        .is_some()
    {
        return Ok(true);
    }
    let Some(v) = r.get(Keyspace::Oplog, &keys::oplog(who, number))? else {
        return Ok(false);
    };
    let stored = crate::replica::StoredEntry::decode(&v)?;
    Ok(matches!(
        Entry::decode_verified(&stored.canonical).map(|e| e.op),
        Ok(Op::RotateKey { .. })
    ))
}

/// Makes `key` the key in force for `who`, keeping the one it replaces for entries up to
/// `until`.
pub(super) fn replace_key<S: Store>(
    txn: &mut Txn<'_, S>,
    who: &ReplicaId,
    key: &wire::PublicKey,
    until: u64,
) -> Result<()> {
    if let Some(old) = public_key_in(txn, who)? {
        txn.put(Keyspace::Peers, &old_key_key(who, until), &old);
    }
    txn.put(
        Keyspace::Peers,
        &keys::peer(keys::peers::PUBLIC_KEY, who),
        key,
    );
    Ok(())
}

/// Brings `key` in force for `who` by its rotation entry `number` (unless it already is: a
/// replica that learnt the key first from a header), and records that the entry rotated the
/// key, apart from the entry, which retention may drop.
fn take_rotation<S: Store>(
    txn: &mut Txn<'_, S>,
    who: &ReplicaId,
    key: &wire::PublicKey,
    number: u64,
) -> Result<()> {
    if public_key_in(txn, who)? != Some(*key) {
        replace_key(txn, who, key, number)?;
    }
    txn.put(Keyspace::Peers, &rotation_record_key(who, number), &[]);
    Ok(())
}

fn forged(sender: &str, detail: String) -> CoreError {
    CoreError::Refused(Refusal::Unauthentic {
        sender: sender.to_string(),
        detail,
    })
}

impl<S: Store> Replica<S> {
    /// Applies the key change of entry `e` (a `RotateKey` or `VouchKey`), if it is one: the
    /// rotation's proof must verify with the key it replaces. `sender` names the packet's
    /// sender in a refusal. Returns the replica and key now in force.
    pub(super) fn apply_key_entry(
        &self,
        txn: &mut Txn<'_, S>,
        e: &Entry,
        sender: &str,
    ) -> Result<Option<(ReplicaId, wire::PublicKey)>> {
        match &e.op {
            Op::RotateKey { key, proof } => {
                self.check_rotation(txn, e, key, proof, sender)?;
                take_rotation(txn, &e.origin, key, e.number)?;
                Ok(Some((e.origin, *key)))
            }
            // A replica does not vouch for itself (that is a rotation, which the old key must
            // prove): such an entry changes nothing, at every replica alike.
            Op::VouchKey { replica, key, from } if *replica != e.origin => {
                if public_key_in(txn, replica)? != Some(*key) {
                    replace_key(txn, replica, key, *from)?;
                }
                Ok(Some((*replica, *key)))
            }
            _ => Ok(None),
        }
    }

    /// A rotation's proof, checked with the key that covers the entry before it. A replica
    /// that pinned the new key already (first use, from a header listing it) has nothing to
    /// check it with and nothing to change.
    fn check_rotation(
        &self,
        txn: &Txn<'_, S>,
        e: &Entry,
        key: &wire::PublicKey,
        proof: &wire::Signature,
        sender: &str,
    ) -> Result<()> {
        if public_key_in(txn, &e.origin)? == Some(*key) {
            return Ok(());
        }
        let name = self.replica_name(&e.origin);
        // No key of the origin held here: this replica learns its keys from this packet, on
        // first use like the keys the header lists (a new replica's creation packet).
        let Some(old) = key_at(txn, &e.origin, e.number)? else {
            return Ok(());
        };
        let msg = sign::rekey_message(
            &wire::Id(self.family.0),
            &wire::Id(e.origin.0),
            e.number,
            &e.prev,
            key,
        );
        // The key of its time first; then any key the origin replaced (a store whose history
        // of the origin's keys differs, as after `rekey --lost`): either way the proof needs a
        // key the origin held, and the entry's place in its chain is covered by the heads.
        let replaced = old_keys(txn, &e.origin)?.into_iter().map(|(_, k)| k);
        if std::iter::once(old)
            .chain(replaced)
            .any(|k| verifies(&k, &msg, proof))
        {
            return Ok(());
        }
        Err(forged(
            sender,
            format!(
                "entry {} of {name} announces key {}, but its proof is not signed by {name}'s key {} (a forged rotation)",
                e.number,
                fingerprint(key),
                fingerprint(&old)
            ),
        ))
    }

    /// `msite rekey`: a new signing key for this replica, announced in an entry signed with
    /// the old one; from then on its siblings accept only the new key. Returns the new key's
    /// fingerprint.
    pub fn rekey(&self) -> Result<String> {
        let old = self.signing_key()?;
        let new = SigningKey::from_bytes(&self.env.secret_key());
        let pk = new.verifying_key().to_bytes();
        self.local_change(|r, t, ap| {
            let own = get_u64(t, Keyspace::Epochs, &keys::own(&r.me))?;
            let prev = match own {
                0 => crate::ids::ZERO_HASH,
                n => Self::entry_hash_at(t, &r.me, n)?.unwrap_or(crate::ids::ZERO_HASH),
            };
            let msg = sign::rekey_message(
                &wire::Id(r.family.0),
                &wire::Id(r.me.0),
                own + 1,
                &prev,
                &pk,
            );
            let proof = old.sign(&msg).to_bytes();
            let e = r.append_local(t, ap, Op::RotateKey { key: pk, proof })?;
            t.put(Keyspace::Meta, SIGNING_KEY, &new.to_bytes());
            take_rotation(t, &r.me, &pk, e.number)
        })?;
        Ok(fingerprint(&pk))
    }

    /// `msite rekey --lost`: a new signing key for this replica whose old key is lost (a
    /// backup older than its last rekey) or compromised, announced by no entry: its siblings
    /// refuse its packets until one of them vouches for the new key (`msite vouch`). Returns
    /// the new key's fingerprint and the public key in hex, for the vouching operator.
    pub fn rekey_lost(&self) -> Result<(String, String)> {
        let new = SigningKey::from_bytes(&self.env.secret_key());
        let pk = new.verifying_key().to_bytes();
        let mut txn = Txn::new(&self.store);
        let own = get_u64(&txn, Keyspace::Epochs, &keys::own(&self.me))?;
        txn.put(Keyspace::Meta, SIGNING_KEY, &new.to_bytes());
        replace_key(&mut txn, &self.me, &pk, own)?;
        txn.commit(crate::store::WriteOptions::SYNC)?;
        Ok((fingerprint(&pk), crate::ids::hex(&pk)))
    }

    /// `msite vouch NAME --key PUBLICKEY`: this replica vouches that replica `name`'s key is
    /// now `key_hex` (64 hex digits, as `msite rekey --lost` printed it at `name`): the
    /// lost-key procedure, docs/protocol.md §8. Returns the key's fingerprint and the last
    /// entry of `name` the old key still covers.
    pub fn vouch(&self, name: &str, key_hex: &str) -> Result<(String, u64)> {
        let who = self.view().replica_by_name(name)?;
        if who == self.me {
            return Err(CoreError::Invalid(format!(
                "a replica cannot vouch for its own key; run `msite rekey` at {name}, or have a sibling vouch for it"
            )));
        }
        let key = super::sitekey::parse_public_key(key_hex).ok_or_else(|| {
            CoreError::Invalid(format!(
                "{key_hex} is not a public key; give the 64 hex digits `msite rekey --lost` printed at {name}"
            ))
        })?;
        let from = get_u64(&self.store, Keyspace::Epochs, &keys::own(&who))?;
        self.local_change(|r, t, ap| {
            r.append_local(
                t,
                ap,
                Op::VouchKey {
                    replica: who,
                    key,
                    from,
                },
            )?;
            replace_key(t, &who, &key, from)
        })?;
        Ok((fingerprint(&key), from))
    }
}

/// Meta: this site's identity for sealed packets (an age secret key, as text), made at its
/// first use; a backup holds it. msite-core only keeps it: the sealing is the CLI's.
const SEALING_IDENTITY: &[u8] = b"sealing_identity";

impl<S: Store> Replica<S> {
    /// This site's identity for sealed packets; `make` makes one when the store has none yet.
    pub fn sealing_identity(&self, make: impl FnOnce() -> String) -> Result<String> {
        if let Some(v) = self.store.get(Keyspace::Meta, SEALING_IDENTITY)? {
            return String::from_utf8(v).map_err(|_| {
                CoreError::Codec(crate::codec::CodecError {
                    what: "sealing identity",
                })
            });
        }
        let id = make();
        self.set_sealing_identity(&id)?;
        Ok(id)
    }

    /// Keeps `identity` as this site's identity for sealed packets (the one a creation packet
    /// was sealed to, so that later packets to this site can use the same recipient).
    pub fn set_sealing_identity(&self, identity: &str) -> Result<()> {
        let mut txn = Txn::new(&self.store);
        txn.put(Keyspace::Meta, SEALING_IDENTITY, identity.as_bytes());
        txn.commit(crate::store::WriteOptions::SYNC)?;
        Ok(())
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::store::StoreExt;
    use crate::store::WriteOptions;
    use crate::testkit::MemStore;

    /// Keys replaced under the legacy tag are still found; a given-up entry sharing that
    /// layout is not taken for a key.
    #[test]
    fn replaced_keys_under_the_legacy_tag_are_still_read() {
        let s = MemStore::new();
        let who = ReplicaId([7; 16]);
        let row = |tag: u8, until: u64| {
            let mut k = keys::peer(tag, &who);
            k.extend_from_slice(&until.to_be_bytes());
            k
        };
        let put = |k: &[u8], v: &[u8]| s.put_one(Keyspace::Peers, k, v, WriteOptions::SYNC);
        put(&row(LEGACY_OLD_KEY, 5), &[1; 32]).unwrap();
        put(&row(LEGACY_OLD_KEY, 6), &[9; 200]).unwrap();
        put(&row(OLD_KEY, 9), &[2; 32]).unwrap();
        assert_eq!(
            old_keys(&s, &who).unwrap(),
            vec![(5, [1; 32]), (9, [2; 32])]
        );
        assert_eq!(key_at(&s, &who, 3).unwrap(), Some([1; 32]));
        assert_eq!(key_at(&s, &who, 7).unwrap(), Some([2; 32]));
    }
}
