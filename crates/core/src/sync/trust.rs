//! Signed packets and origin-authenticated history (docs/protocol.md, "Trust").
//!
//! Every replica holds an Ed25519 signing key in its store (Meta, never in a packet); the
//! public keys are replicated state, listed in every packet header and pinned by the first
//! authentic header that names them. A packet's header is signed by its sender; every entry
//! it carries is covered by a chain head that the entry's *origin* signed, so a relay can
//! neither forge nor alter, reorder or replace another origin's entries: the per-origin hash
//! chains link each entry to the signed head, and one signature check per head authenticates
//! everything before it. Control records a replica relays for others (restore requests,
//! provisional acknowledgements) carry their owner's signature, kept here to relay them.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use msite_packet::{sign, wire};

use crate::error::{CoreError, Refusal, Result};
use crate::ids::{Hash, PacketId, ReplicaId};
use crate::keys;
use crate::store::{Keyspace, ReadView, Store};
use crate::txn::Txn;

/// Meta: this replica's Ed25519 secret key (32 bytes). A backup of the store holds it.
pub(crate) const SIGNING_KEY: &[u8] = b"signing_key";

/// Own entries between two chain heads this replica signs in one packet: an importer commits
/// a large packet in prefixes only where every origin's last entry is at a verified head.
const OWN_HEAD_EVERY: u64 = 25_000;

/// The fingerprint operators compare out of band: the first 16 bytes of BLAKE3 of the public
/// key, as eight groups of four hex digits.
pub fn fingerprint(key: &wire::PublicKey) -> String {
    let h = blake3::hash(key);
    let hex = crate::ids::hex(&h.as_bytes()[..16]);
    hex.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("-")
}

/// What a verified header vouches for: its chain heads, by origin and number, each verified
/// with its origin's key; and the keys it announced (a replica's key this replica does not
/// hold yet, listed after the one it holds) that verified something, which the packet's
/// entries must then bring in force (a `RotateKey` or `VouchKey` applied).
#[derive(Debug, Default, Clone)]
pub(super) struct Heads {
    /// Verified chain heads.
    pub(super) at: BTreeMap<(ReplicaId, u64), Hash>,
    /// Keys used on announcement, by replica.
    pub(super) announced: BTreeMap<ReplicaId, wire::PublicKey>,
    /// The replicas among them of which no key at all is held here (not yet heard of).
    pub(super) unknown: std::collections::BTreeSet<ReplicaId>,
    /// The key the sender's signature verified with.
    pub(super) signed_by: wire::PublicKey,
}

/// Generates this replica's signing key into `txn` unless the store has one (stores made
/// before keys existed get theirs when first opened), and pins its public key.
pub(crate) fn ensure_signing_key<S: Store>(
    txn: &mut Txn<'_, S>,
    env: &dyn crate::env::Env,
    me: &ReplicaId,
) -> Result<()> {
    if txn.get(Keyspace::Meta, SIGNING_KEY)?.is_some() {
        return Ok(());
    }
    let sk = SigningKey::from_bytes(&env.secret_key());
    txn.put(Keyspace::Meta, SIGNING_KEY, &sk.to_bytes());
    txn.put(
        Keyspace::Peers,
        &keys::peer(keys::peers::PUBLIC_KEY, me),
        sk.verifying_key().as_bytes(),
    );
    Ok(())
}

/// The public key pinned here for `r`, if any.
pub(crate) fn public_key_in<R: ReadView + ?Sized>(
    r: &R,
    who: &ReplicaId,
) -> Result<Option<wire::PublicKey>> {
    Ok(
        r.get(Keyspace::Peers, &keys::peer(keys::peers::PUBLIC_KEY, who))?
            .and_then(|v| v.try_into().ok()),
    )
}

fn unauthentic(sender: &str, detail: String) -> CoreError {
    CoreError::Refused(Refusal::Unauthentic {
        sender: sender.to_string(),
        detail,
    })
}

pub(super) fn verifies(key: &wire::PublicKey, msg: &[u8], sig: &wire::Signature) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    vk.verify(msg, &ed25519_dalek::Signature::from_bytes(sig))
        .is_ok()
}

/// The key a header lists last for `who` (the one in force at the sender), if any.
pub(super) fn listed_key(h: &wire::Header, who: &ReplicaId) -> Option<wire::PublicKey> {
    listed_for(h, who).pop()
}

/// The keys a header lists for `who`, oldest first (the last is the one in force at the
/// sender).
fn listed_for(h: &wire::Header, who: &ReplicaId) -> Vec<wire::PublicKey> {
    h.keys
        .iter()
        .filter(|k| k.replica.0 == who.0)
        .map(|k| k.key)
        .collect()
}

/// The key to check `who`'s signatures with now: the one pinned here. A key not pinned here is
/// never trusted on first use (docs/protocol.md §8): the last one the header lists serves
/// provisionally (recorded in `announced`), and the packet's entries must bring it in force
/// (the creator's entry announcing a new replica's key, a rotation or a vouch) — except in a
/// creation packet, whose keys are its new replica's starting point (`creation`). A header
/// that lists another key for a replica whose key is pinned here is refused (a key swapped in
/// transit), unless it lists the pinned key before it: a rotation this replica has not applied
/// yet, which the key then serves provisionally too. A header listing a key the replica
/// rotated out is behind, not forged: the pinned key serves.
fn key_for<R: ReadView + ?Sized>(
    r: &R,
    h: &wire::Header,
    who: &ReplicaId,
    (name, sender): (&str, &str),
    creation: bool,
    announced: &mut BTreeMap<ReplicaId, wire::PublicKey>,
) -> Result<wire::PublicKey> {
    let listed = listed_for(h, who);
    let Some(pinned) = public_key_in(r, who)? else {
        let last = listed.last().copied().ok_or_else(|| {
            unauthentic(
                sender,
                format!("no public key of {name} is known here or listed in the packet"),
            )
        })?;
        if !creation {
            announced.insert(*who, last);
        }
        return Ok(last);
    };
    let Some(&last) = listed.last() else {
        return Ok(pinned);
    };
    let replaced = super::rekey::old_keys(r, who)?;
    if last == pinned || replaced.iter().any(|(_, k)| *k == last) {
        return Ok(pinned);
    }
    if listed.contains(&pinned) {
        announced.insert(*who, last);
        return Ok(last);
    }
    Err(unauthentic(
        sender,
        format!(
            "the packet lists key {} for {name}, but this replica holds key {} for it (a key swapped in transit)",
            fingerprint(&last),
            fingerprint(&pinned)
        ),
    ))
}

impl<S: Store> crate::replica::Replica<S> {
    /// This replica's signing key; a store made before keys existed gets one now (its first
    /// export), which its siblings pin from that packet's header.
    pub(super) fn signing_key(&self) -> Result<SigningKey> {
        if self.store.get(Keyspace::Meta, SIGNING_KEY)?.is_none() {
            let mut txn = Txn::new(&self.store);
            ensure_signing_key(&mut txn, self.env.as_ref(), &self.me)?;
            txn.commit(crate::store::WriteOptions::SYNC)?;
        }
        let v = self.store.get(Keyspace::Meta, SIGNING_KEY)?;
        let bytes: [u8; 32] = v.and_then(|v| v.try_into().ok()).ok_or_else(|| {
            CoreError::Codec(crate::codec::CodecError {
                what: "signing key",
            })
        })?;
        Ok(SigningKey::from_bytes(&bytes))
    }

    /// The public key of replica `r` as pinned here.
    pub fn public_key(&self, r: &ReplicaId) -> Result<Option<wire::PublicKey>> {
        public_key_in(&self.store, r)
    }

    /// Every public key pinned here, sorted by replica; each replica's replaced keys come
    /// first, oldest first, so the last listed is the one in force (a receiver that holds an
    /// older one sees the rotation announced).
    pub(super) fn known_keys(&self) -> Result<Vec<wire::KeyCell>> {
        let prefix = [keys::peers::PUBLIC_KEY];
        let mut out = Vec::new();
        for kv in self
            .store
            .scan(Keyspace::Peers, crate::store::KeyRange::prefix(&prefix))?
        {
            let (k, v) = kv?;
            if let (Ok(id), Ok(key)) = (k[1..].try_into(), v.try_into()) {
                let replica = wire::Id(id);
                for (_, old) in super::rekey::old_keys(&self.store, &ReplicaId(id))? {
                    out.push(wire::KeyCell::new(replica, old));
                }
                out.push(wire::KeyCell::new(replica, key));
            }
        }
        self.attach_recipients(&mut out)?;
        Ok(out)
    }

    /// Signs a planned header for the packet `packet_id`: the keys known here, then the
    /// sender's signature over the whole header (its chain heads included).
    pub(super) fn signed_header(
        &self,
        h: &wire::Header,
        kind: wire::Kind,
        packet_id: &wire::Id,
    ) -> Result<wire::Header> {
        let mut h = h.clone();
        h.keys = self.known_keys()?;
        h.signature = wire::NO_SIGNATURE;
        let sk = self.signing_key()?;
        h.signature = sk
            .sign(&sign::header_message(packet_id, kind, &h))
            .to_bytes();
        Ok(h)
    }

    /// Signs `h` as this replica would for packet `packet_id` (keys listed as they are in
    /// `h`): what a relay, which holds its own key, can do to a header it alters. For the
    /// forgery scenarios.
    #[cfg(feature = "testkit")]
    pub fn sign_header_for_test(
        &self,
        h: &mut wire::Header,
        kind: wire::Kind,
        packet_id: &wire::Id,
    ) {
        h.signature = wire::NO_SIGNATURE;
        let sk = self.signing_key().expect("a signing key");
        h.signature = sk
            .sign(&sign::header_message(packet_id, kind, h))
            .to_bytes();
    }

    /// This replica's signature of its own chain head at `number` with hash `hash`, whatever
    /// it holds: what a replica running other code can sign. For the forgery tests.
    #[cfg(feature = "testkit")]
    pub fn sign_head_for_test(&self, number: u64, hash: &Hash) -> wire::SignedHead {
        let origin = wire::Id(self.me.0);
        let msg = sign::head_message(&wire::Id(self.family.0), &origin, number, hash);
        let sk = self.signing_key().expect("a signing key");
        wire::SignedHead {
            origin,
            number,
            hash: *hash,
            signature: sk.sign(&msg).to_bytes(),
        }
    }

    /// Signs control `c` as its owner would, when this replica is its owner. For the forgery
    /// tests and the fuzzer.
    #[cfg(feature = "testkit")]
    pub fn sign_control_for_test(&self, c: &mut wire::Control) {
        if c.owner().0 == self.me.0 {
            let msg = sign::control_message(&wire::Id(self.family.0), c);
            *c.signature_mut() = self
                .signing_key()
                .expect("a signing key")
                .sign(&msg)
                .to_bytes();
        }
    }

    /// The chain heads covering `ranges` (origin, first, last number carried): for our own
    /// entries, heads signed now at the last one and every [`OWN_HEAD_EVERY`] entries; for
    /// other origins, the heads held here within the range whose hash is still our entry's.
    pub(super) fn heads_for(
        &self,
        ranges: &[(ReplicaId, u64, u64)],
    ) -> Result<Vec<wire::SignedHead>> {
        let mut out = Vec::new();
        for (o, from, to) in ranges {
            if *o == self.me {
                let mut at: Vec<u64> = (*from..=*to)
                    .filter(|n| n.is_multiple_of(OWN_HEAD_EVERY))
                    .collect();
                if at.last() != Some(to) {
                    at.push(*to);
                }
                for n in at {
                    out.push(self.sign_own_head(n)?);
                }
            } else {
                out.extend(self.stored_heads(o, *from, *to)?);
            }
        }
        Ok(out)
    }

    fn sign_own_head(&self, number: u64) -> Result<wire::SignedHead> {
        let hash = Self::entry_hash_at(&self.store, &self.me, number)?.ok_or_else(|| {
            CoreError::Invalid(format!("entry {number} of this replica is missing"))
        })?;
        let origin = wire::Id(self.me.0);
        let msg = sign::head_message(&wire::Id(self.family.0), &origin, number, &hash);
        Ok(wire::SignedHead {
            origin,
            number,
            hash,
            signature: self.signing_key()?.sign(&msg).to_bytes(),
        })
    }

    /// The heads of origin `o` stored here for numbers `from..=to` that still name the
    /// entries held here.
    fn stored_heads(&self, o: &ReplicaId, from: u64, to: u64) -> Result<Vec<wire::SignedHead>> {
        let mut out = Vec::new();
        // Relayed only with the origin's key, which the header lists: without it, the
        // receiver could not check them, and the entries wait for the key.
        if self.public_key(o)?.is_none() {
            return Ok(out);
        }
        let prefix = keys::peer(keys::peers::HEAD, o);
        for kv in self
            .store
            .scan(Keyspace::Peers, crate::store::KeyRange::prefix(&prefix))?
        {
            let (k, v) = kv?;
            let Some(head) = decode_head(o, &k, &v) else {
                continue;
            };
            let held = Self::entry_hash_at(&self.store, o, head.number)?;
            if (from..=to).contains(&head.number) && held == Some(head.hash) {
                out.push(head);
            }
        }
        Ok(out)
    }

    /// The highest number of origin `o` up to `held` that a stored head covers (for our own
    /// entries: `held`): an export carries another origin's entries only up to there, and
    /// the rest waits for the origin's next signed head.
    pub(super) fn signed_up_to(&self, o: &ReplicaId, held: u64) -> Result<u64> {
        if *o == self.me {
            return Ok(held);
        }
        let heads = self.stored_heads(o, 1, held)?;
        Ok(heads.iter().map(|h| h.number).max().unwrap_or(0))
    }

    /// Checks a header's signature and its chain heads (PROTOCOL "Trust"); returns the heads,
    /// verified. Nothing is stored.
    pub(super) fn check_signature(
        &self,
        h: &wire::Header,
        kind: wire::Kind,
        packet_id: &PacketId,
        src: &str,
    ) -> Result<Heads> {
        let name = |r: &ReplicaId| {
            if r.0 == h.sender.0 {
                self.sender_name(h)
            } else {
                self.replica_name(r)
            }
        };
        check_header(&self.store, h, kind, packet_id, src, &name)
    }

    /// The controls of a packet about to be planned, signed: our own by us, others' with the
    /// signature their owner made, as received. A control whose owner's signature is not held
    /// here (learned before signatures existed) is not relayed: its owner sends it again.
    pub(super) fn sign_controls(&self, controls: Vec<wire::Control>) -> Result<Vec<wire::Control>> {
        let family = wire::Id(self.family.0);
        let mut out = Vec::with_capacity(controls.len());
        for mut c in controls {
            let msg = sign::control_message(&family, &c);
            // A control is relayed only with its owner's key, which the header lists.
            if self.public_key(&ReplicaId(c.owner().0))?.is_none() {
                continue;
            }
            if c.owner().0 == self.me.0 {
                *c.signature_mut() = self.signing_key()?.sign(&msg).to_bytes();
            } else {
                let k = keys::control_sig(blake3::hash(&msg).as_bytes());
                match self.store.get(Keyspace::Peers, &k)? {
                    Some(v) => match v.try_into() {
                        Ok(sig) => *c.signature_mut() = sig,
                        Err(_) => continue,
                    },
                    None => continue,
                }
                if !self.relayable(&c, &msg)? {
                    continue;
                }
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Whether another replica's control `c` (message `msg`) verifies with a key held here
    /// for its owner: the one in force, or one the owner rotated out (it signed the control
    /// before its rotation; siblings accept that too). One signed with a key this replica does
    /// not hold (checked with a key the owner's own packet listed, its rotation not applied
    /// here yet) would be refused by the siblings that hold what this replica holds: it is
    /// relayed once this replica holds that key, when its siblings that do not yet wait for
    /// the rotation the packet carries.
    fn relayable(&self, c: &wire::Control, msg: &[u8]) -> Result<bool> {
        let owner = ReplicaId(c.owner().0);
        Ok(control_keys_held(&self.store, &owner)?
            .iter()
            .any(|k| verifies(k, msg, c.signature())))
    }

    /// Keeps the owner's signature of control `c` (verified with the header), to relay it.
    pub(super) fn take_control_signature(&self, txn: &mut Txn<'_, S>, c: &wire::Control) {
        if *c.signature() != wire::NO_SIGNATURE {
            let msg = sign::control_message(&wire::Id(self.family.0), c);
            let k = keys::control_sig(blake3::hash(&msg).as_bytes());
            txn.put(Keyspace::Peers, &k, c.signature());
        }
    }

    /// Stores an authentic header's chain heads of other origins (for relaying), keeping one
    /// older head per [`OWN_HEAD_EVERY`] entries of each origin besides the newest, and its
    /// controls' signatures. The caller pins the keys it lists first ([`pin_keys_in_force`]
    /// or [`pin_oldest_listed_keys`]).
    pub(super) fn take_heads(&self, txn: &mut Txn<'_, S>, h: &wire::Header) -> Result<()> {
        for head in h.heads.iter().filter(|x| x.origin.0 != self.me.0) {
            let o = ReplicaId(head.origin.0);
            let mut v = Vec::with_capacity(96);
            v.extend_from_slice(&head.hash);
            v.extend_from_slice(&head.signature);
            txn.put(Keyspace::Peers, &keys::head(&o, head.number), &v);
            prune_heads(txn, &o, head.number)?;
        }
        for c in &h.controls {
            self.take_control_signature(txn, c);
        }
        self.take_recipients(txn, h)
    }
}

/// Pins, for each replica whose key is not pinned yet, the last key a creation header lists
/// for it: the one in force at its creator (a pinned key is never replaced: the header's
/// check refused a different one). A snapshot creation replays no rotation, so it starts
/// from the keys in force.
pub(super) fn pin_keys_in_force<S: Store>(txn: &mut Txn<'_, S>, h: &wire::Header) -> Result<()> {
    pin_first_unpinned(txn, h.keys.iter().rev())
}

/// Pins, for each replica whose key is not pinned yet, the first key a header lists for it
/// (the oldest its sender knows): before a history creation's entries apply, and after any
/// other authentic header's. Later keys come in force only through the entries that announce
/// them (a rotation checks its proof with the key it replaces and keeps that key for the
/// entries before it). Pinning the last listed key instead left the keys before it unknown,
/// so a sibling still listing an older key looked like "a key swapped in transit" (simulator,
/// `--profile rekey` seed 45: a restored replica pinned a rotated key from a sibling's
/// restore request).
pub(super) fn pin_oldest_listed_keys<S: Store>(
    txn: &mut Txn<'_, S>,
    h: &wire::Header,
) -> Result<()> {
    pin_first_unpinned(txn, h.keys.iter())
}

/// Pins, for each replica whose key is not pinned yet, the first of `cells` that names it.
fn pin_first_unpinned<'a, S: Store>(
    txn: &mut Txn<'_, S>,
    cells: impl Iterator<Item = &'a wire::KeyCell>,
) -> Result<()> {
    for k in cells {
        let who = ReplicaId(k.replica.0);
        if public_key_in(txn, &who)?.is_none() {
            txn.put(
                Keyspace::Peers,
                &keys::peer(keys::peers::PUBLIC_KEY, &who),
                &k.key,
            );
        }
    }
    Ok(())
}

/// Removes the heads of origin `o` below `newest` in the same run of [`OWN_HEAD_EVERY`]
/// numbers: each run keeps its highest head, so the heads held grow with the origin's
/// history divided by that run, not with the packets received.
fn prune_heads<S: Store>(txn: &mut Txn<'_, S>, o: &ReplicaId, newest: u64) -> Result<()> {
    for (k, v) in txn.scan_prefix(Keyspace::Peers, &keys::peer(keys::peers::HEAD, o))? {
        if let Some(old) = decode_head(o, &k, &v) {
            if old.number < newest && old.number / OWN_HEAD_EVERY == newest / OWN_HEAD_EVERY {
                txn.delete(Keyspace::Peers, &k);
            }
        }
    }
    Ok(())
}

/// The sender's signature of a header, with the keys pinned in `r` (or listed), then every
/// chain head with its origin's key; `name` names replicas in refusals.
fn check_header<R: ReadView + ?Sized>(
    r: &R,
    h: &wire::Header,
    kind: wire::Kind,
    packet_id: &PacketId,
    src: &str,
    name: &dyn Fn(&ReplicaId) -> String,
) -> Result<Heads> {
    let sender = ReplicaId(h.sender.0);
    let sender_name = name(&sender);
    let mut announced = BTreeMap::new();
    let creation = kind == wire::Kind::ReplicaCreation;
    let key = key_for(
        r,
        h,
        &sender,
        (&sender_name, &sender_name),
        creation,
        &mut announced,
    )?;
    if h.signature == wire::NO_SIGNATURE {
        return Err(unauthentic(
            &sender_name,
            format!(
                "{src} is unsigned, but this replica accepts only packets signed by {sender_name}'s key {}",
                fingerprint(&key)
            ),
        ));
    }
    let msg = sign::header_message(&wire::Id(packet_id.0), kind, h);
    let signed_by = if verifies(&key, &msg, &h.signature) {
        key
    } else if let Some(old) = key_of_its_time(r, h, &sender, &msg)? {
        old
    } else {
        return Err(unauthentic(
            &sender_name,
            format!(
                "the signature of {src} does not verify with {sender_name}'s key {}",
                fingerprint(&key)
            ),
        ));
    };
    for k in &h.keys {
        let who = ReplicaId(k.replica.0);
        key_for(
            r,
            h,
            &who,
            (&name(&who), &sender_name),
            true,
            &mut BTreeMap::new(),
        )?;
    }
    let signer = (sender, signed_by);
    check_controls(r, h, (&sender_name, creation), signer, name, &mut announced)?;
    let at = check_heads(r, h, (&sender_name, creation), name, &mut announced)?;
    let mut unknown = std::collections::BTreeSet::new();
    for who in announced.keys() {
        if public_key_in(r, who)?.is_none() {
            unknown.insert(*who);
        }
    }
    Ok(Heads {
        at,
        announced,
        unknown,
        signed_by,
    })
}

/// A key `sender` rotated out that signed header `h` (message `msg`) in its own time: the
/// header states that the sender holds its own entries only below the rotation entry that
/// retired the key. Only the sender ever held that key, and it signed with it only before
/// that entry (the rotation switches keys in the entry's own transaction), so such a header is
/// a genuine packet made before the rotation and delivered late, which the protocol handles
/// like any late packet; one that states an own entry at or past the rotation is not.
fn key_of_its_time<R: ReadView + ?Sized>(
    r: &R,
    h: &wire::Header,
    sender: &ReplicaId,
    msg: &[u8],
) -> Result<Option<wire::PublicKey>> {
    let own = crate::model::Row::from_wire(&h.sender_row).get(sender);
    Ok(super::rekey::rotated_keys(r, sender)?
        .into_iter()
        .find(|(until, k)| own < *until && verifies(k, msg, &h.signature))
        .map(|(_, k)| k))
}

/// The keys held here that sign `owner`'s controls: the one in force, then those the owner
/// rotated out (only it held them, and it signed with each before its rotation).
fn control_keys_held<R: ReadView + ?Sized>(
    r: &R,
    owner: &ReplicaId,
) -> Result<Vec<wire::PublicKey>> {
    let mut keys: Vec<wire::PublicKey> = public_key_in(r, owner)?.into_iter().collect();
    keys.extend(
        super::rekey::rotated_keys(r, owner)?
            .into_iter()
            .map(|(_, k)| k),
    );
    Ok(keys)
}

/// Each control record, verified with its owner's key: a relay cannot forge or alter another
/// replica's restore request or provisional acknowledgement.
fn check_controls<R: ReadView + ?Sized>(
    r: &R,
    h: &wire::Header,
    (sender_name, creation): (&str, bool),
    (sender, signed_by): (ReplicaId, wire::PublicKey),
    name: &dyn Fn(&ReplicaId) -> String,
    announced: &mut BTreeMap<ReplicaId, wire::PublicKey>,
) -> Result<()> {
    for c in &h.controls {
        let owner = ReplicaId(c.owner().0);
        let who = name(&owner);
        let key = key_for(r, h, &owner, (&who, sender_name), creation, announced)?;
        let what = match c {
            wire::Control::RestoreRequest { .. } => "restore request",
            wire::Control::ProvisionalAck { .. } => "provisional acknowledgement",
        };
        // The sender's own controls were signed with the key that signed its header (a key of
        // their time, for a packet made before a rotation); a relayed one may have been signed
        // with the key held here while the header announces a later one, or before its owner
        // rotated its key (only the owner held the rotated-out key).
        let also = (owner == sender).then_some(signed_by);
        let msg = sign::control_message(&h.family, c);
        let by = |k: &wire::PublicKey| verifies(k, &msg, c.signature());
        let held = control_keys_held(r, &owner)?;
        if !std::iter::once(key).chain(also).chain(held).any(|k| by(&k)) {
            return Err(unauthentic(
                sender_name,
                format!(
                    "the {what} of {who} the packet carries is not signed by {who}'s key {}",
                    fingerprint(&key)
                ),
            ));
        }
    }
    Ok(())
}

/// Each chain head in the header, verified with its origin's key: the key that covers that
/// entry here (a head from before a rotation keeps its old key's signature), or the key in
/// force now (an origin signs every head it exports with its current key), or a key the origin
/// rotated out after that entry (it signed heads of its entries so far, old ones included,
/// while that key was in force), or a key the header announces for the origin after the one
/// held here (provisional, as for [`key_for`]).
fn check_heads<R: ReadView + ?Sized>(
    r: &R,
    h: &wire::Header,
    (sender_name, creation): (&str, bool),
    name: &dyn Fn(&ReplicaId) -> String,
    announced: &mut BTreeMap<ReplicaId, wire::PublicKey>,
) -> Result<BTreeMap<(ReplicaId, u64), Hash>> {
    let mut heads = BTreeMap::new();
    for head in &h.heads {
        let o = ReplicaId(head.origin.0);
        let origin = name(&o);
        let key = key_for(r, h, &o, (&origin, sender_name), creation, announced)?;
        let msg = sign::head_message(&h.family, &head.origin, head.number, &head.hash);
        // A head of the receiving replica's own chain may come from an older timeline of its
        // own (after `--override`, which reuses numbers), signed with a key the newer timeline
        // rotated out at a lower number: the receiver held every key it rotated out, and the
        // head, once authentic, is compared with its own entries (a fork is reported).
        let own_chain = h.targets.iter().any(|t| t.replica.0 == o.0);
        let rotated = super::rekey::rotated_keys(r, &o)?
            .into_iter()
            .filter(|(until, _)| own_chain || head.number <= *until)
            .map(|(_, k)| k);
        let held: Vec<_> = std::iter::once(key)
            .chain(super::rekey::key_at(r, &o, head.number)?)
            .chain(rotated)
            .collect();
        let provisional = provisional_keys(r, h, &o)?;
        let by = |k: &&wire::PublicKey| verifies(k, &msg, &head.signature);
        if held.iter().find(by).is_none() {
            if provisional.iter().find(by).is_some() {
                // Signed with a key announced after the one held: the entries must bring it in.
                announced.entry(o).or_insert(key);
            } else {
                return Err(unauthentic(
                    sender_name,
                    format!(
                        "the packet's chain head {} of {origin} is not signed by {origin}'s key {}",
                        head.number,
                        fingerprint(&key)
                    ),
                ));
            }
        }
        heads.insert((o, head.number), head.hash);
    }
    Ok(heads)
}

/// The keys a header lists for `o` after the one pinned here (rotations not applied here
/// yet), or every key it lists when none is pinned (first use).
pub(super) fn provisional_keys<R: ReadView + ?Sized>(
    r: &R,
    h: &wire::Header,
    o: &ReplicaId,
) -> Result<Vec<wire::PublicKey>> {
    let listed = listed_for(h, o);
    Ok(match public_key_in(r, o)? {
        None => listed,
        Some(pinned) => match listed.iter().position(|k| *k == pinned) {
            Some(i) => listed[i + 1..].to_vec(),
            None => Vec::new(),
        },
    })
}

/// The signature status of a header checked against the keys in `r`.
fn status_of<R: ReadView + ?Sized>(
    r: &R,
    h: &wire::Header,
    kind: wire::Kind,
    packet_id: &PacketId,
    name: &dyn Fn(&ReplicaId) -> String,
) -> Result<SignatureStatus> {
    if h.signature == wire::NO_SIGNATURE {
        return Ok(SignatureStatus::Unsigned);
    }
    match check_header(r, h, kind, packet_id, "the packet", name) {
        Ok(heads) => Ok(SignatureStatus::Verified {
            key: fingerprint(&heads.signed_by),
        }),
        Err(CoreError::Refused(Refusal::Unauthentic { detail, .. })) => {
            Ok(SignatureStatus::Invalid(detail))
        }
        Err(e) => Err(e),
    }
}

/// A view of an empty store: a packet checked without a site has only the keys it lists.
struct NoKeys;

impl ReadView for NoKeys {
    fn get(&self, _: Keyspace, _: &[u8]) -> crate::store::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn scan(
        &self,
        _: Keyspace,
        _: crate::store::KeyRange,
    ) -> crate::store::Result<crate::store::ScanIter<'_>> {
        Ok(Box::new(std::iter::empty()))
    }
    fn last(
        &self,
        _: Keyspace,
        _: crate::store::KeyRange,
    ) -> crate::store::Result<Option<crate::store::KeyValue>> {
        Ok(None)
    }
    fn scan_each(
        &self,
        _: Keyspace,
        _: crate::store::KeyRange,
        _: &mut crate::store::PairFn<'_>,
    ) -> crate::store::Result<()> {
        Ok(())
    }
}

/// A stored head of origin `o` from its Peers key and value.
fn decode_head(o: &ReplicaId, k: &[u8], v: &[u8]) -> Option<wire::SignedHead> {
    let number = u64::from_be_bytes(k.get(17..25)?.try_into().ok()?);
    Some(wire::SignedHead {
        origin: wire::Id(o.0),
        number,
        hash: v.get(..32)?.try_into().ok()?,
        signature: v.get(32..96)?.try_into().ok()?,
    })
}

/// The chain-head check of one packet's entries, as they apply: an entry at a head's number
/// must have the head's hash, and each origin's last applied entry must be at a head. With
/// the hash chain (each entry names its predecessor's hash, checked on apply), that proves
/// every applied entry is the origin's own, unaltered and in its place.
pub(super) struct HeadCheck {
    heads: BTreeMap<(ReplicaId, u64), Hash>,
    /// Keys the header used on announcement, each still to be brought in force by an entry.
    announced: BTreeMap<ReplicaId, wire::PublicKey>,
    /// Replicas of which no key was held here when the packet came.
    unknown: std::collections::BTreeSet<ReplicaId>,
    /// Of those, the ones the packet's entries gave another key than the one it used.
    conflict: BTreeMap<ReplicaId, wire::PublicKey>,
    /// Per origin: the last number applied that no head covers yet.
    pending: BTreeMap<ReplicaId, u64>,
    /// A prefix commit is due, waiting for every origin to reach a head.
    due: bool,
    sender: String,
}

impl HeadCheck {
    /// A check against `heads` (verified) of a packet from `sender`.
    pub(super) fn new(heads: Heads, sender: &str) -> Self {
        HeadCheck {
            heads: heads.at,
            announced: heads.announced,
            unknown: heads.unknown,
            conflict: BTreeMap::new(),
            pending: BTreeMap::new(),
            due: false,
            sender: sender.to_string(),
        }
    }

    /// Before entry `number` of `origin` (hash `hash`, named `name`) is applied.
    pub(super) fn entry(
        &mut self,
        origin: ReplicaId,
        number: u64,
        hash: &Hash,
        name: &str,
    ) -> Result<()> {
        match self.heads.get(&(origin, number)) {
            Some(signed) if signed != hash => Err(unauthentic(
                &self.sender,
                format!(
                    "entry {number} of {name} differs from the chain head {name} signed (altered in transit)"
                ),
            )),
            Some(_) => {
                self.pending.remove(&origin);
                Ok(())
            }
            None => {
                self.pending.insert(origin, number);
                Ok(())
            }
        }
    }

    /// Whether to commit a prefix now: `due` (the apply loop's count or size rule) is kept
    /// until every entry applied so far is covered by a head, and the prefix committed then.
    pub(super) fn prefix_now(&mut self, due: bool) -> bool {
        self.due |= due;
        let now = self.due && self.pending.is_empty() && self.announced.is_empty();
        if now {
            self.due = false;
        }
        now
    }

    /// After an entry brought `key` in force for `who` (a rotation or a vouch applied). What
    /// counts is the key the entries leave in force: a new replica's key vouched by its
    /// creator and then rotated by the replica ends at the rotation's key.
    pub(super) fn key_applied(&mut self, who: &ReplicaId, key: &wire::PublicKey) {
        match self.announced.get(who) {
            Some(k) if k == key => {
                self.announced.remove(who);
                self.conflict.remove(who);
            }
            Some(_) if self.unknown.contains(who) => {
                self.conflict.insert(*who, *key);
            }
            _ => {}
        }
    }

    /// The replicas whose key the header used on announcement (a key held here listed before
    /// it) that no entry of the packet has brought in force.
    pub(super) fn unconfirmed(&self) -> Vec<ReplicaId> {
        self.announced
            .keys()
            .filter(|w| !self.unknown.contains(w))
            .copied()
            .collect()
    }

    /// After the last record: refuses the packet if an origin's entries end past its last
    /// signed head, or a key the header announced was not brought in force by its entries —
    /// for a replica of which no key was held here, only when its entries gave it another key
    /// (the creator's entry, a rotation or a vouch); otherwise that key is taken on first use
    /// (`name` names replicas).
    pub(super) fn finish(&self, name: impl Fn(&ReplicaId) -> String) -> Result<()> {
        if let Some((w, key)) = self.conflict.iter().next() {
            let used = self.announced.get(w).copied();
            let who = name(w);
            return Err(unauthentic(
                &self.sender,
                format!(
                    "the packet uses key {} for {who}, but its entries give {who} key {} (a key swapped in transit)",
                    used.map(|k| fingerprint(&k)).unwrap_or_default(),
                    fingerprint(key)
                ),
            ));
        }
        let held = |w: &&ReplicaId| !self.unknown.contains(w);
        if let Some((who, key)) = self.announced.iter().find(|(w, _)| held(w)) {
            let who = name(who);
            return Err(unauthentic(
                &self.sender,
                format!(
                    "the packet uses key {} for {who}, but carries no entry giving {who} that key (its creation, a rotation or a vouch): a key swapped in transit",
                    fingerprint(key)
                ),
            ));
        }
        match self.pending.iter().next() {
            None => Ok(()),
            Some((o, n)) => Err(unauthentic(
                &self.sender,
                format!(
                    "entry {n} of {} is not covered by a chain head {} signed",
                    name(o),
                    name(o)
                ),
            )),
        }
    }
}

/// Whether a packet's signature verifies, as `lspacket` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// The sender's signature and every chain head verify, with the key of `key`'s
    /// fingerprint (pinned at the site, or, without one, the key the packet lists).
    Verified {
        /// The fingerprint of the sender's key used.
        key: String,
    },
    /// The packet carries no signature (format 1.0 or 1.1, or a 1.2 header without one).
    Unsigned,
    /// A signature does not verify, or a key differs from the one pinned: the sentence says
    /// which.
    Invalid(String),
}

impl std::fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureStatus::Verified { key } => write!(f, "verifies (sender's key {key})"),
            SignatureStatus::Unsigned => f.write_str("unsigned (refused at import)"),
            SignatureStatus::Invalid(why) => write!(f, "does not verify: {why}"),
        }
    }
}

impl<S: Store> crate::replica::Replica<S> {
    /// Whether the packet's signature and chain heads verify with the keys pinned here (keys
    /// not pinned yet: as the packet lists them).
    pub fn signature_status(
        &self,
        h: &wire::Header,
        kind: wire::Kind,
        packet_id: &PacketId,
    ) -> Result<SignatureStatus> {
        status_of(&self.store, h, kind, packet_id, &|r| self.replica_name(r))
    }
}

/// Whether the packet's signature and chain heads verify with the keys the packet itself
/// lists (no site: a check of consistency; compare the fingerprint out of band).
pub fn signature_status_listed(
    h: &wire::Header,
    kind: wire::Kind,
    packet_id: &PacketId,
) -> SignatureStatus {
    let name = |r: &ReplicaId| {
        if r.0 == h.sender.0 && !h.sender_name.is_empty() {
            h.sender_name.clone()
        } else {
            r.short()
        }
    };
    status_of(&NoKeys, h, kind, packet_id, &name)
        .unwrap_or_else(|e| SignatureStatus::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(b: u8) -> ReplicaId {
        ReplicaId([b; 16])
    }

    #[test]
    fn a_prefix_waits_until_every_origin_reaches_a_head() {
        let mut heads = Heads::default();
        heads.at.insert((rid(1), 2), [2; 32]);
        heads.at.insert((rid(2), 1), [7; 32]);
        let mut c = HeadCheck::new(heads, "s");
        c.entry(rid(1), 1, &[1; 32], "a").unwrap();
        assert!(!c.prefix_now(true), "entry 1 of a is not at a head yet");
        c.entry(rid(1), 2, &[2; 32], "a").unwrap();
        assert!(
            c.prefix_now(false),
            "the due commit happens once a reaches its head"
        );
        assert!(!c.prefix_now(false), "and only once");
        c.entry(rid(2), 1, &[7; 32], "b").unwrap();
        c.finish(|_| "x".into()).unwrap();
    }

    #[test]
    fn an_entry_that_differs_from_its_head_or_ends_past_it_is_refused() {
        let mut heads = Heads::default();
        heads.at.insert((rid(1), 2), [2; 32]);
        let mut c = HeadCheck::new(heads.clone(), "hub");
        let err = c.entry(rid(1), 2, &[9; 32], "a").unwrap_err();
        assert!(
            err.to_string()
                .contains("differs from the chain head a signed"),
            "{err}"
        );
        let mut c = HeadCheck::new(heads, "hub");
        c.entry(rid(1), 2, &[2; 32], "a").unwrap();
        c.entry(rid(1), 3, &[3; 32], "a").unwrap();
        let err = c.finish(|_| "a".into()).unwrap_err();
        assert!(
            err.to_string().contains("entry 3 of a is not covered"),
            "{err}"
        );
    }
}
