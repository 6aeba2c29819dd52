//! Wire types: the values a packet carries, as they are encoded on the wire.
//!
//! These types belong to the format, not to the protocol: `msite-core` has its own domain types
//! and converts to and from these explicitly. Changing a type here is a format change; see
//! `SPEC.md` for the version rules. Every struct is encoded by rmp-serde as a positional array
//! (`rmp_serde::to_vec`), so field order is part of the format: append new fields at the end
//! only, with `#[serde(default)]`, and bump the minor version.

use serde::{Deserialize, Serialize};

/// A 128-bit identifier (family, replica, logical packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Id(pub [u8; 16]);

/// A 32-byte BLAKE3 hash.
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
    },
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
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
    /// Append a version to a branch (creating the branch when `version` is 1... or 0 for main).
    Checkin {
        /// The element.
        elem: ObjId,
        /// The branch type.
        brtype: ObjId,
        /// The new version's number on the branch.
        version: u64,
        /// BLAKE3 of the content; the content travels as a blob record.
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
}

/// One oplog entry as it travels. `hash` is BLAKE3 over the canonical encoding of every other
/// field (see [`crate::entry`]).
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
    pub prev: Hash,
    /// The change.
    pub op: Op,
    /// The entry's own hash.
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}
