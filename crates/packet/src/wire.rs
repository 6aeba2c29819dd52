//! Wire types: the values a packet carries, as they are encoded on the wire.
//!
//! These types belong to the format, not to the protocol: `msite-core` has its own domain types
//! and converts to and from these explicitly. Changing a type here is a format change; see
//! `SPEC.md` for the version rules. Every struct is encoded by rmp-serde as a positional array
//! (`rmp_serde::to_vec`), so field order is part of the format: append new fields at the end
//! only, with `#[serde(default)]`, and bump the minor version (readers of an older minor
//! version skip the fields they do not know; see `SPEC.md` §6).
//!
//! Enum variants are encoded by *name* (rmp-serde's default: a one-entry map from the variant
//! name to its fields), so renaming a variant is a format change too. Byte strings ([`Id`],
//! [`Hash`](type@Hash)) are encoded as msgpack `bin`; in human-readable formats (JSON) they serialize as
//! lowercase hex.

use serde::{Deserialize, Serialize};

/// A 128-bit identifier (family, replica, logical packet).
///
/// Encoded as msgpack `bin 16` (`c4 10` + 16 bytes); as a hex string in human-readable formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 16]);

impl Id {
    /// The id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hexbytes::encode(&self.0)
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        hexbytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        hexbytes::deserialize(d).map(Id)
    }
}

/// A 32-byte BLAKE3 hash. Fields of this type are encoded as msgpack `bin 32` through
/// [`hexbytes`] (`#[serde(with = "hexbytes")]`).
pub type Hash = [u8; 32];

/// One cell of an epoch row: origin replica and the highest entry number held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCell {
    /// The origin replica.
    pub origin: Id,
    /// The highest number held for that origin.
    pub number: u64,
}

/// An epoch row, sorted by origin.
pub type Row = Vec<RowCell>;

/// One addressee of a packet, with what the sender believes and reports about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The target replica.
    pub replica: Id,
    /// The incarnation the sender believes the target has.
    pub incarnation: u64,
    /// This packet's sequence number among the sender's content packets to this target
    /// (0 for a packet that carries only acknowledgements).
    pub packet_seq: u64,
    /// The target's incarnation the two following fields refer to.
    pub ack_incarnation: u64,
    /// Highest sequence number of the target's packets that the sender has applied.
    pub applied_seq: u64,
    /// Highest sequence number of the target's packets that the sender has seen (applied,
    /// or waiting in its incoming bay).
    pub seen_seq: u64,
}

/// For one origin: the base number (the target must hold entries up to it) and the hash of
/// the sender's entry at the base (all zeros when the base is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The origin replica.
    pub origin: Id,
    /// The base number.
    pub number: u64,
    /// Hash of the sender's entry `(origin, number)`.
    #[serde(with = "hexbytes")]
    pub hash: Hash,
}

/// Control records: protocol messages that are not numbered oplog entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// A replica's request to be given back what it lost (PROTOCOL §6.2).
    RestoreRequest {
        /// The restoring replica.
        replica: Id,
        /// Its new incarnation.
        incarnation: u64,
        /// Its own row as restored.
        row: Row,
        /// (1.2) The restoring replica's signature over [`crate::sign::control_message`]
        /// (all zeros: unsigned), so that a relay cannot forge or alter it.
        #[serde(default = "no_signature", with = "hexbytes")]
        signature: Signature,
    },
    /// An acknowledgement of a restore request by a replica that is itself recovering and so
    /// may not create a numbered entry yet.
    ProvisionalAck {
        /// The acknowledging replica.
        acker: Id,
        /// The restoring replica.
        replica: Id,
        /// The incarnation acknowledged.
        incarnation: u64,
        /// How many of the restoring replica's own entries the acker held.
        held: u64,
        /// (1.2) The acker's signature over [`crate::sign::control_message`] (all zeros:
        /// unsigned).
        #[serde(default = "no_signature", with = "hexbytes")]
        signature: Signature,
    },
}

impl Control {
    /// The replica whose statement the control is, and which signs it: the restoring
    /// replica of a request, the acker of a provisional acknowledgement.
    pub fn owner(&self) -> Id {
        match self {
            Control::RestoreRequest { replica, .. } => *replica,
            Control::ProvisionalAck { acker, .. } => *acker,
        }
    }

    /// The control's signature field.
    pub fn signature(&self) -> &Signature {
        match self {
            Control::RestoreRequest { signature, .. }
            | Control::ProvisionalAck { signature, .. } => signature,
        }
    }

    /// The control's signature field, to set.
    pub fn signature_mut(&mut self) -> &mut Signature {
        match self {
            Control::RestoreRequest { signature, .. }
            | Control::ProvisionalAck { signature, .. } => signature,
        }
    }
}

/// The kind of an object that has a master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectKind {
    /// A replica object.
    Replica,
    /// A branch type.
    BrType,
    /// A label type.
    LbType,
    /// An element.
    Element,
    /// An element's branch; `id` is the element, `sub` the branch type.
    Branch,
}

/// A reference to a mastered object. Objects are named by the entry that created them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// What kind of object.
    pub kind: ObjectKind,
    /// The object's id (for a branch: the element's id).
    pub id: ObjId,
    /// For a branch: the branch type's id; otherwise unused (all zero).
    pub sub: ObjId,
}

/// The id of a replicated object: the `(origin, number)` of the entry that created it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct ObjId {
    /// Origin replica of the creating entry.
    pub origin: Id,
    /// Number of the creating entry.
    pub number: u64,
}

/// The operations of the versioned object base and the protocol's numbered entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create the family's first replica (entry 1 of the first replica).
    CreateFamily {
        /// Family id.
        family: Id,
        /// Family name.
        family_name: String,
        /// The first replica's name.
        replica_name: String,
    },
    /// Create a replica object (mastered by the creator).
    CreateReplica {
        /// The new replica's id.
        replica: Id,
        /// Its name.
        name: String,
        /// What the new replica starts with: the creator's own row, this entry included.
        row: Row,
    },
    /// Create a branch type.
    MkBrType {
        /// Its name.
        name: String,
    },
    /// Create a label type.
    MkLbType {
        /// Its name.
        name: String,
    },
    /// Create an element with a `main` branch.
    MkElem {
        /// Its path name.
        path: String,
        /// The `main` branch type's id.
        main: ObjId,
    },
    /// Append a version to a branch. Versions on a branch, `main` included, are numbered from 1:
    /// the first version appended to a branch is version 1.
    Checkin {
        /// The element.
        elem: ObjId,
        /// The branch type.
        brtype: ObjId,
        /// The new version's number on the branch.
        version: u64,
        /// BLAKE3 of the content; the content travels as a blob record.
        #[serde(with = "hexbytes")]
        content: Hash,
        /// Content length in bytes.
        size: u64,
        /// Author.
        author: String,
        /// Comment.
        comment: String,
    },
    /// Attach (or move) a label.
    MkLabel {
        /// Label type.
        lbtype: ObjId,
        /// Element.
        elem: ObjId,
        /// Branch type of the labelled version.
        brtype: ObjId,
        /// Version number on that branch.
        version: u64,
    },
    /// Remove a label.
    RmLabel {
        /// Label type.
        lbtype: ObjId,
        /// Element.
        elem: ObjId,
    },
    /// Remove an element's name (history stays).
    RmName {
        /// Element.
        elem: ObjId,
    },
    /// Hand an object to another replica.
    ChMaster {
        /// The object.
        object: ObjectRef,
        /// The new master.
        master: Id,
    },
    /// Ask the master of an object for it.
    ReqMaster {
        /// The object.
        object: ObjectRef,
        /// The requesting replica (the entry's origin).
        requester: Id,
    },
    /// Acknowledge a restore request (PROTOCOL §6.4).
    RestoreAck {
        /// The restoring replica.
        replica: Id,
        /// Its incarnation being acknowledged.
        incarnation: u64,
        /// How many of the restoring replica's own entries the acker held.
        held: u64,
    },
    /// A restoration finished (PROTOCOL §6.6).
    RestoreComplete {
        /// The incarnation that completed.
        incarnation: u64,
        /// The replica's own row at completion.
        row: Row,
    },
    /// Retire a replica for good (`msite rmreplica`, docs/protocol.md §10). Added after
    /// format 1.2 was first written: an msite without it cannot decode such an entry (SPEC §5).
    RmReplica {
        /// The retired replica.
        replica: Id,
        /// The last of its entries the family keeps: later ones are refused everywhere.
        last: u64,
    },
    /// The master refused a mastership request (policy `deny`), so the requester is told.
    /// Added after format 1.2 was first written, like `RmReplica` (SPEC §5).
    DenyMaster {
        /// The object.
        object: ObjectRef,
        /// The replica whose request was refused.
        requester: Id,
    },
    /// The origin's new signing key (`msite rekey`): in force for the origin's entries after
    /// this one. `proof` is the signature of [`crate::sign::rekey_message`] by the key it
    /// replaces (SPEC §8).
    RotateKey {
        /// The new Ed25519 public key.
        #[serde(with = "hexbytes")]
        key: PublicKey,
        /// The old key's signature of the rotation.
        #[serde(with = "hexbytes")]
        proof: Signature,
    },
    /// The origin vouches for a new signing key of another replica whose key was lost or
    /// compromised (`msite vouch`): in force for that replica's entries after `from`.
    VouchKey {
        /// The replica given the key.
        replica: Id,
        /// The new Ed25519 public key.
        #[serde(with = "hexbytes")]
        key: PublicKey,
        /// The last entry of that replica the old key covers: its entries after it must be
        /// signed with `key`.
        from: u64,
    },
    /// The family's sealing policy (`msite seal-policy`): with `always`, every export seals
    /// its packet to the target's replicated age recipient. The latest `(time_ms, origin)`
    /// wins.
    SealPolicy {
        /// Whether every packet is sealed.
        always: bool,
    },
}

/// One oplog entry as it travels. `hash` is BLAKE3 over the canonical encoding of every other
/// field (see [`crate::entry_hash`] and `SPEC.md` §5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Origin replica.
    pub origin: Id,
    /// Number at the origin (1, 2, …).
    pub number: u64,
    /// The origin's incarnation when the entry was made.
    pub incarnation: u64,
    /// The origin's clock, milliseconds since the Unix epoch (informational).
    pub time_ms: u64,
    /// Hash of the origin's previous entry (zeros for number 1).
    #[serde(with = "hexbytes")]
    pub prev: Hash,
    /// The change.
    pub op: Op,
    /// The entry's own hash.
    #[serde(with = "hexbytes")]
    pub hash: Hash,
}

/// The kind of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// An update packet between existing replicas.
    Update,
    /// A replica-creation packet.
    ReplicaCreation,
}

/// The header of a packet (every physical part carries the same header).
///
/// Serialized by hand ([`Header::serialize`]): the fields from 1.3 on are left out at the end
/// of the array while they and every field after them hold their defaults, so a header that
/// uses none of them is byte for byte the older minor's header, and a field is never read at
/// another field's position.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Header {
    /// The family.
    pub family: Id,
    /// The family's name (informational).
    pub family_name: String,
    /// The sending replica.
    pub sender: Id,
    /// The sender's name (informational).
    pub sender_name: String,
    /// The sender's incarnation.
    pub sender_incarnation: u64,
    /// The addressees.
    pub targets: Vec<Target>,
    /// Per origin: base number and the sender's hash at it.
    pub bases: Vec<Base>,
    /// The sender's own row when the packet was made (a receipt the target can trust).
    pub sender_row: Row,
    /// Control records (restore requests being propagated, provisional acks).
    pub controls: Vec<Control>,
    /// Creation time at the sender, ms since the Unix epoch.
    pub created_ms: u64,
    /// For a replica-creation packet: the new replica's id; otherwise zeros.
    pub new_replica: Id,
    /// Free-form comment.
    pub comment: String,
    /// (1.2) Every public key the sender knows, one per replica, sorted by replica
    /// (`SPEC.md` §8).
    #[serde(default)]
    pub keys: Vec<KeyCell>,
    /// (1.2) Origin-signed chain heads covering the entries the packet carries, sorted by
    /// origin and number (`SPEC.md` §8).
    #[serde(default)]
    pub heads: Vec<SignedHead>,
    /// (1.2) The sender's Ed25519 signature over [`crate::sign::header_message`]; all zeros
    /// ([`NO_SIGNATURE`]) in an unsigned packet.
    #[serde(default = "no_signature", with = "hexbytes")]
    pub signature: Signature,
    /// (1.3) Fork repair decisions the sender holds (`SPEC.md` §3): every packet carries them
    /// all, so that every replica of the family gives up the same timeline. Omitted when
    /// empty, so a header without any is byte for byte a 1.2 header.
    #[serde(default)]
    pub fork_decisions: Vec<ForkDecision>,
    /// (1.4) Rows that replicas stated about themselves, each signed by its replica
    /// (`SPEC.md` §3): the sender's own, and those of siblings the sender relays to a
    /// restoring target. Left out while it and every later field are at their defaults
    /// (see [`Header::serialize`]).
    #[serde(default)]
    pub reports: Vec<SignedReport>,
    /// (1.4) Non-zero in a snapshot creation packet: the layout version of the object base
    /// rows it carries (records `85`, `86`; `SPEC.md` §4, "1.4: snapshot creation"). Zero
    /// (left out) in every other packet.
    #[serde(default)]
    pub snapshot: u64,
}

/// Fields of [`Header`] up to `signature`: the 1.2 header's fifteen fields.
const HEADER_FIXED_FIELDS: usize = 15;

impl Header {
    /// How many fields the header's array holds: the fifteen of 1.2, then each later field up
    /// to the last one that is not at its default.
    fn field_count(&self) -> usize {
        if self.snapshot != 0 {
            HEADER_FIXED_FIELDS + 3
        } else if !self.reports.is_empty() {
            HEADER_FIXED_FIELDS + 2
        } else if !self.fork_decisions.is_empty() {
            HEADER_FIXED_FIELDS + 1
        } else {
            HEADER_FIXED_FIELDS
        }
    }
}

/// Writes the signature as [`hexbytes`] does, inside a struct.
struct SigField<'a>(&'a Signature);

impl Serialize for SigField<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        hexbytes::serialize(self.0, s)
    }
}

impl Serialize for Header {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let n = self.field_count();
        let mut st = s.serialize_struct("Header", n)?;
        st.serialize_field("family", &self.family)?;
        st.serialize_field("family_name", &self.family_name)?;
        st.serialize_field("sender", &self.sender)?;
        st.serialize_field("sender_name", &self.sender_name)?;
        st.serialize_field("sender_incarnation", &self.sender_incarnation)?;
        st.serialize_field("targets", &self.targets)?;
        st.serialize_field("bases", &self.bases)?;
        st.serialize_field("sender_row", &self.sender_row)?;
        st.serialize_field("controls", &self.controls)?;
        st.serialize_field("created_ms", &self.created_ms)?;
        st.serialize_field("new_replica", &self.new_replica)?;
        st.serialize_field("comment", &self.comment)?;
        st.serialize_field("keys", &self.keys)?;
        st.serialize_field("heads", &self.heads)?;
        st.serialize_field("signature", &SigField(&self.signature))?;
        if n > HEADER_FIXED_FIELDS {
            st.serialize_field("fork_decisions", &self.fork_decisions)?;
        }
        if n > HEADER_FIXED_FIELDS + 1 {
            st.serialize_field("reports", &self.reports)?;
        }
        if n > HEADER_FIXED_FIELDS + 2 {
            st.serialize_field("snapshot", &self.snapshot)?;
        }
        st.end()
    }
}

/// (1.4) A replica's statement of its own row ("this replica holds these entries"), signed by
/// its key over [`crate::sign::report_message`], so that a relay can carry it to siblings that
/// receive no packet of that replica, and cannot alter it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// The replica whose row it is (and whose key signed it).
    pub replica: Id,
    /// The replica's incarnation when it made the statement.
    pub incarnation: u64,
    /// When it made the statement, ms since the Unix epoch at that replica.
    pub made_ms: u64,
    /// Its own row then.
    pub row: Row,
    /// The replica's signature.
    #[serde(with = "hexbytes")]
    pub signature: Signature,
}

/// (1.3) An operator's decision between two timelines of one origin (`msite repairfork`):
/// at `(origin, number)` the family keeps the entry whose hash is `hash` (`keep`) or gives
/// up the entry whose hash is `hash` (`!keep`), with everything the origin numbered after it
/// on that timeline. A later `(decided_ms, decided_by)` supersedes an earlier decision for the
/// same `(origin, number)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkDecision {
    /// The origin whose history forked.
    pub origin: Id,
    /// The first number under which the two timelines hold different entries.
    pub number: u64,
    /// The hash of the deciding replica's entry `(origin, number)`.
    #[serde(with = "hexbytes")]
    pub hash: Hash,
    /// Whether the timeline of `hash` is the one kept (otherwise it is the one given up).
    pub keep: bool,
    /// The replica where the operator decided.
    pub decided_by: Id,
    /// When, in ms since the Unix epoch at the deciding replica.
    pub decided_ms: u64,
    /// (1.5) The deciding replica's signature over [`crate::sign::decision_message`], so that
    /// a relay can carry the decision but cannot make one up or alter it (docs/protocol.md
    /// §6, "Divergence and fork repair"). All zeros ([`NO_SIGNATURE`]) in an unsigned
    /// decision, which is then left out of the decision's array: an unsigned decision is a
    /// 1.3 decision byte for byte.
    #[serde(
        default = "no_signature",
        with = "hexbytes",
        skip_serializing_if = "is_no_signature"
    )]
    pub signature: Signature,
}

impl ForkDecision {
    /// Whether the decision carries its decider's signature (a field of minor version 1.5).
    pub fn is_signed(&self) -> bool {
        !is_no_signature(&self.signature)
    }
}

/// An Ed25519 public key (32 bytes).
pub type PublicKey = [u8; 32];

/// An Ed25519 signature (64 bytes).
pub type Signature = [u8; 64];

/// The signature field of an unsigned header.
pub const NO_SIGNATURE: Signature = [0; 64];

fn no_signature() -> Signature {
    NO_SIGNATURE
}

fn is_no_signature(s: &Signature) -> bool {
    *s == NO_SIGNATURE
}

/// (1.2) A replica's public signing key, as a packet header lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCell {
    /// The replica.
    pub replica: Id,
    /// Its Ed25519 public key.
    #[serde(with = "hexbytes")]
    pub key: PublicKey,
    // trust2 fields (1.4): the replica's age recipient, announced by the replica itself.
    /// (1.4) The replica's age recipient for sealed packets, signed by it, on the cell of its
    /// key in force; left out of the cell when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<SignedRecipient>,
}

impl KeyCell {
    /// A cell without a recipient.
    pub fn new(replica: Id, key: PublicKey) -> KeyCell {
        KeyCell {
            replica,
            key,
            recipient: None,
        }
    }
}

/// (1.4) A replica's age recipient (`age1…`) with the replica's signature of
/// [`crate::sign::recipient_message`] by the key of its cell (an empty recipient announces
/// none), and, on a sender's own cell, its introduction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecipient {
    /// The recipient.
    pub recipient: String,
    /// The signature.
    #[serde(with = "hexbytes")]
    pub signature: Signature,
    /// The creator's entry announcing the sender's key, with the creator's chain head at it:
    /// what lets a sibling that has not received the creator's entries yet check the sender's
    /// key (docs/protocol.md §8). Left out when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduction: Option<Introduction>,
}

/// (1.4) A replica's introduction: the canonical bytes of its creator's `VouchKey` entry
/// that announced the replica's key (SPEC §5), and the creator's chain head at that entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    /// The entry's canonical encoding.
    pub entry: Vec<u8>,
    /// The creator's signed head at the entry.
    pub head: SignedHead,
}

/// (1.2) An origin's signature over the head of its hash chain: entry `number` of `origin`
/// has hash `hash` (signed over [`crate::sign::head_message`] by the origin's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// The origin replica.
    pub origin: Id,
    /// The entry number.
    pub number: u64,
    /// The hash of the origin's entry at `number`.
    #[serde(with = "hexbytes")]
    pub hash: Hash,
    /// The origin's signature.
    #[serde(with = "hexbytes")]
    pub signature: Signature,
}

/// Serde helpers for fixed-size byte strings: msgpack `bin` in binary formats, lowercase hex in
/// human-readable ones (JSON). Use as `#[serde(with = "hexbytes")]` on a `[u8; N]` field.
pub mod hexbytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    /// Lowercase hex of `bytes`.
    pub fn encode(bytes: &[u8]) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
        s
    }

    /// Parses exactly `N` bytes of hex (either case).
    pub fn decode<const N: usize>(s: &str) -> Option<[u8; N]> {
        let b = s.as_bytes();
        if b.len() != N * 2 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = [0u8; N];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
        }
        Some(out)
    }

    /// Serializes `N` bytes as `bin` (or hex when human-readable).
    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    /// Deserializes exactly `N` bytes from `bin` (or hex when human-readable).
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        struct V<const N: usize>;
        impl<const N: usize> Visitor<'_> for V<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                decode(v).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V::<N>)
        } else {
            d.deserialize_bytes(V::<N>)
        }
    }
}
