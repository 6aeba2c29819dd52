//! Domain types of the protocol: epoch rows, oplog entries and the operations of the
//! versioned object base, with explicit conversions to and from `msite-packet`'s wire types.

use std::collections::BTreeMap;

use msite_packet::wire;

use crate::codec::{CodecError, Dec, Enc};
use crate::ids::{FamilyId, Hash, ObjId, ReplicaId};

/// An epoch row: for each origin, the highest entry number held (absent means 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row(pub BTreeMap<ReplicaId, u64>);

impl Row {
    /// The number for `origin` (0 if absent).
    pub fn get(&self, origin: &ReplicaId) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }
    /// Sets the number for `origin` (removing zeros keeps rows canonical).
    pub fn set(&mut self, origin: ReplicaId, n: u64) {
        if n == 0 {
            self.0.remove(&origin);
        } else {
            self.0.insert(origin, n);
        }
    }
    /// Component-wise maximum with `other`.
    pub fn raise_to(&mut self, other: &Row) {
        for (o, &n) in &other.0 {
            if n > self.get(o) {
                self.set(*o, n);
            }
        }
    }
    /// Whether every component of `self` is at least `other`'s.
    pub fn covers(&self, other: &Row) -> bool {
        other.0.iter().all(|(o, &n)| self.get(o) >= n)
    }
    /// Encodes for local storage.
    pub fn encode(&self, enc: Enc) -> Enc {
        let mut e = enc.u64(self.0.len() as u64);
        for (o, n) in &self.0 {
            e = e.rid(o).u64(*n);
        }
        e
    }
    /// Decodes what [`Row::encode`] wrote.
    pub fn decode(d: &mut Dec<'_>) -> Result<Row, CodecError> {
        let n = d.u64()?;
        let mut row = Row::default();
        for _ in 0..n {
            let o = d.rid()?;
            let v = d.u64()?;
            row.set(o, v);
        }
        Ok(row)
    }
    /// To the wire form.
    pub fn to_wire(&self) -> wire::Row {
        self.0
            .iter()
            .map(|(o, n)| wire::RowCell {
                origin: wire::Id(o.0),
                number: *n,
            })
            .collect()
    }
    /// From the wire form (duplicates keep the highest number).
    pub fn from_wire(w: &wire::Row) -> Row {
        let mut row = Row::default();
        for c in w {
            let o = ReplicaId(c.origin.0);
            if c.number > row.get(&o) {
                row.set(o, c.number);
            }
        }
        row
    }
}

/// The kinds of mastered objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A replica object.
    Replica,
    /// A branch type.
    BrType,
    /// A label type.
    LbType,
    /// An element.
    Element,
    /// An element's branch.
    Branch,
}

/// A mastered object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectRef {
    /// A replica (named by its replica id).
    Replica(ReplicaId),
    /// A branch type.
    BrType(ObjId),
    /// A label type.
    LbType(ObjId),
    /// An element.
    Element(ObjId),
    /// An element's branch of a branch type.
    Branch {
        /// The element.
        elem: ObjId,
        /// The branch type.
        brtype: ObjId,
    },
}

impl ObjectRef {
    /// The kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            ObjectRef::Replica(_) => ObjectKind::Replica,
            ObjectRef::BrType(_) => ObjectKind::BrType,
            ObjectRef::LbType(_) => ObjectKind::LbType,
            ObjectRef::Element(_) => ObjectKind::Element,
            ObjectRef::Branch { .. } => ObjectKind::Branch,
        }
    }

    fn to_wire(self) -> wire::ObjectRef {
        let w = |o: ObjId| wire::ObjId {
            origin: wire::Id(o.origin.0),
            number: o.number,
        };
        let (kind, id, sub) = match self {
            ObjectRef::Replica(r) => (
                wire::ObjectKind::Replica,
                wire::ObjId {
                    origin: wire::Id(r.0),
                    number: 0,
                },
                wire::ObjId::default(),
            ),
            ObjectRef::BrType(o) => (wire::ObjectKind::BrType, w(o), wire::ObjId::default()),
            ObjectRef::LbType(o) => (wire::ObjectKind::LbType, w(o), wire::ObjId::default()),
            ObjectRef::Element(o) => (wire::ObjectKind::Element, w(o), wire::ObjId::default()),
            ObjectRef::Branch { elem, brtype } => (wire::ObjectKind::Branch, w(elem), w(brtype)),
        };
        wire::ObjectRef { kind, id, sub }
    }

    fn from_wire(w: &wire::ObjectRef) -> ObjectRef {
        let o = |x: &wire::ObjId| ObjId {
            origin: ReplicaId(x.origin.0),
            number: x.number,
        };
        match w.kind {
            wire::ObjectKind::Replica => ObjectRef::Replica(ReplicaId(w.id.origin.0)),
            wire::ObjectKind::BrType => ObjectRef::BrType(o(&w.id)),
            wire::ObjectKind::LbType => ObjectRef::LbType(o(&w.id)),
            wire::ObjectKind::Element => ObjectRef::Element(o(&w.id)),
            wire::ObjectKind::Branch => ObjectRef::Branch {
                elem: o(&w.id),
                brtype: o(&w.sub),
            },
        }
    }
}

/// One change: the operations of the versioned object base and the protocol's own entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The family's first entry, at its first replica: creates the family, that replica's
    /// object and the `main` branch type (whose id is this entry's id).
    CreateFamily {
        /// Family id.
        family: FamilyId,
        /// Family name.
        family_name: String,
        /// The first replica's name.
        replica_name: String,
    },
    /// A new replica object, mastered by the creator.
    CreateReplica {
        /// The new replica.
        replica: ReplicaId,
        /// Its name.
        name: String,
        /// What the new replica starts with: the creator's own row including this entry.
        row: Row,
    },
    /// A new branch type.
    MkBrType {
        /// Name.
        name: String,
    },
    /// A new label type.
    MkLbType {
        /// Name.
        name: String,
    },
    /// A new element with a `main` branch mastered by its creator.
    MkElem {
        /// Path name.
        path: String,
        /// The `main` branch type.
        main: ObjId,
    },
    /// A new version on a branch (version 1 creates the branch).
    Checkin {
        /// Element.
        elem: ObjId,
        /// Branch type.
        brtype: ObjId,
        /// Version number on the branch (1, 2, …).
        version: u64,
        /// Content hash.
        content: Hash,
        /// Content size.
        size: u64,
        /// Author.
        author: String,
        /// Comment.
        comment: String,
    },
    /// Attach or move a label.
    MkLabel {
        /// Label type.
        lbtype: ObjId,
        /// Element.
        elem: ObjId,
        /// Branch type of the version.
        brtype: ObjId,
        /// Version number.
        version: u64,
    },
    /// Remove a label.
    RmLabel {
        /// Label type.
        lbtype: ObjId,
        /// Element.
        elem: ObjId,
    },
    /// Remove an element's name.
    RmName {
        /// Element.
        elem: ObjId,
    },
    /// Hand an object to another replica.
    ChMaster {
        /// Object.
        object: ObjectRef,
        /// New master.
        master: ReplicaId,
    },
    /// Ask an object's master for mastership.
    ReqMaster {
        /// Object.
        object: ObjectRef,
        /// Requesting replica.
        requester: ReplicaId,
    },
    /// Acknowledge a restore request.
    RestoreAck {
        /// Restoring replica.
        replica: ReplicaId,
        /// Its incarnation.
        incarnation: u64,
        /// How many of its own entries the acknowledging replica held.
        held: u64,
    },
    /// A restoration completed.
    RestoreComplete {
        /// The incarnation.
        incarnation: u64,
        /// The replica's own row at completion.
        row: Row,
    },
    /// A replica retired for good (`crate::retire`).
    RmReplica {
        /// The retired replica.
        replica: ReplicaId,
        /// The last of its entries the family keeps.
        last: u64,
    },
    /// The master refused a mastership request (policy `deny`): the requester is told.
    DenyMaster {
        /// The object.
        object: ObjectRef,
        /// The replica whose request was refused.
        requester: ReplicaId,
    },
    /// The origin's new signing key (`msite rekey`), proved by the key it replaces.
    RotateKey {
        /// The new public key, in force for the origin's entries after this one.
        key: wire::PublicKey,
        /// The replaced key's signature of `sign::rekey_message`.
        proof: wire::Signature,
    },
    /// The origin vouches for a new key of another replica (`msite vouch`).
    VouchKey {
        /// The replica given the key.
        replica: ReplicaId,
        /// The new public key.
        key: wire::PublicKey,
        /// The last entry of `replica` the old key covers.
        from: u64,
    },
    /// The family's sealing policy (`msite seal-policy`; `sync/sealing.rs`).
    SealPolicy {
        /// Whether every export seals its packet to the target's recipient.
        always: bool,
    },
}

impl Op {
    /// A short name for listings.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateFamily { .. } => "create_family",
            Op::CreateReplica { .. } => "mkreplica",
            Op::MkBrType { .. } => "mkbrtype",
            Op::MkLbType { .. } => "mklbtype",
            Op::MkElem { .. } => "mkelem",
            Op::Checkin { .. } => "checkin",
            Op::MkLabel { .. } => "mklabel",
            Op::RmLabel { .. } => "rmlabel",
            Op::RmName { .. } => "rmname",
            Op::ChMaster { .. } => "chmaster",
            Op::ReqMaster { .. } => "reqmaster",
            Op::RestoreAck { .. } => "ackrestorereplica",
            Op::RestoreComplete { .. } => "restore_complete",
            Op::RmReplica { .. } => "rmreplica",
            Op::DenyMaster { .. } => "denymaster",
            Op::RotateKey { .. } => "rekey",
            Op::VouchKey { .. } => "vouch",
            Op::SealPolicy { .. } => "seal-policy",
        }
    }

    /// To the wire form.
    ///
    /// One flat match on purpose (about 100 lines): each arm copies one variant field by field,
    /// the compiler checks that every variant has an arm, and [`Op::from_wire`] lists the same
    /// arms in the same order, so the two read side by side. Splitting it by family would put a
    /// second, unreachable match into every part.
    pub fn to_wire(&self) -> wire::Op {
        let w = |o: &ObjId| wire::ObjId {
            origin: wire::Id(o.origin.0),
            number: o.number,
        };
        match self {
            Op::CreateFamily {
                family,
                family_name,
                replica_name,
            } => wire::Op::CreateFamily {
                family: wire::Id(family.0),
                family_name: family_name.clone(),
                replica_name: replica_name.clone(),
            },
            Op::CreateReplica { replica, name, row } => wire::Op::CreateReplica {
                replica: wire::Id(replica.0),
                name: name.clone(),
                row: row.to_wire(),
            },
            Op::MkBrType { name } => wire::Op::MkBrType { name: name.clone() },
            Op::MkLbType { name } => wire::Op::MkLbType { name: name.clone() },
            Op::MkElem { path, main } => wire::Op::MkElem {
                path: path.clone(),
                main: w(main),
            },
            Op::Checkin {
                elem,
                brtype,
                version,
                content,
                size,
                author,
                comment,
            } => wire::Op::Checkin {
                elem: w(elem),
                brtype: w(brtype),
                version: *version,
                content: *content,
                size: *size,
                author: author.clone(),
                comment: comment.clone(),
            },
            Op::MkLabel {
                lbtype,
                elem,
                brtype,
                version,
            } => wire::Op::MkLabel {
                lbtype: w(lbtype),
                elem: w(elem),
                brtype: w(brtype),
                version: *version,
            },
            Op::RmLabel { lbtype, elem } => wire::Op::RmLabel {
                lbtype: w(lbtype),
                elem: w(elem),
            },
            Op::RmName { elem } => wire::Op::RmName { elem: w(elem) },
            Op::ChMaster { object, master } => wire::Op::ChMaster {
                object: object.to_wire(),
                master: wire::Id(master.0),
            },
            Op::ReqMaster { object, requester } => wire::Op::ReqMaster {
                object: object.to_wire(),
                requester: wire::Id(requester.0),
            },
            Op::RestoreAck {
                replica,
                incarnation,
                held,
            } => wire::Op::RestoreAck {
                replica: wire::Id(replica.0),
                incarnation: *incarnation,
                held: *held,
            },
            Op::RestoreComplete { incarnation, row } => wire::Op::RestoreComplete {
                incarnation: *incarnation,
                row: row.to_wire(),
            },
            Op::RmReplica { replica, last } => wire::Op::RmReplica {
                replica: wire::Id(replica.0),
                last: *last,
            },
            Op::DenyMaster { object, requester } => wire::Op::DenyMaster {
                object: object.to_wire(),
                requester: wire::Id(requester.0),
            },
            Op::RotateKey { key, proof } => wire::Op::RotateKey {
                key: *key,
                proof: *proof,
            },
            Op::VouchKey { replica, key, from } => wire::Op::VouchKey {
                replica: wire::Id(replica.0),
                key: *key,
                from: *from,
            },
            Op::SealPolicy { always } => wire::Op::SealPolicy { always: *always },
        }
    }

    /// From the wire form: the inverse of [`Op::to_wire`], arm for arm in the same order.
    pub fn from_wire(w: &wire::Op) -> Op {
        let o = |x: &wire::ObjId| ObjId {
            origin: ReplicaId(x.origin.0),
            number: x.number,
        };
        match w {
            wire::Op::CreateFamily {
                family,
                family_name,
                replica_name,
            } => Op::CreateFamily {
                family: FamilyId(family.0),
                family_name: family_name.clone(),
                replica_name: replica_name.clone(),
            },
            wire::Op::CreateReplica { replica, name, row } => Op::CreateReplica {
                replica: ReplicaId(replica.0),
                name: name.clone(),
                row: Row::from_wire(row),
            },
            wire::Op::MkBrType { name } => Op::MkBrType { name: name.clone() },
            wire::Op::MkLbType { name } => Op::MkLbType { name: name.clone() },
            wire::Op::MkElem { path, main } => Op::MkElem {
                path: path.clone(),
                main: o(main),
            },
            wire::Op::Checkin {
                elem,
                brtype,
                version,
                content,
                size,
                author,
                comment,
            } => Op::Checkin {
                elem: o(elem),
                brtype: o(brtype),
                version: *version,
                content: *content,
                size: *size,
                author: author.clone(),
                comment: comment.clone(),
            },
            wire::Op::MkLabel {
                lbtype,
                elem,
                brtype,
                version,
            } => Op::MkLabel {
                lbtype: o(lbtype),
                elem: o(elem),
                brtype: o(brtype),
                version: *version,
            },
            wire::Op::RmLabel { lbtype, elem } => Op::RmLabel {
                lbtype: o(lbtype),
                elem: o(elem),
            },
            wire::Op::RmName { elem } => Op::RmName { elem: o(elem) },
            wire::Op::ChMaster { object, master } => Op::ChMaster {
                object: ObjectRef::from_wire(object),
                master: ReplicaId(master.0),
            },
            wire::Op::ReqMaster { object, requester } => Op::ReqMaster {
                object: ObjectRef::from_wire(object),
                requester: ReplicaId(requester.0),
            },
            wire::Op::RestoreAck {
                replica,
                incarnation,
                held,
            } => Op::RestoreAck {
                replica: ReplicaId(replica.0),
                incarnation: *incarnation,
                held: *held,
            },
            wire::Op::RestoreComplete { incarnation, row } => Op::RestoreComplete {
                incarnation: *incarnation,
                row: Row::from_wire(row),
            },
            wire::Op::RmReplica { replica, last } => Op::RmReplica {
                replica: ReplicaId(replica.0),
                last: *last,
            },
            wire::Op::DenyMaster { object, requester } => Op::DenyMaster {
                object: ObjectRef::from_wire(object),
                requester: ReplicaId(requester.0),
            },
            wire::Op::RotateKey { key, proof } => Op::RotateKey {
                key: *key,
                proof: *proof,
            },
            wire::Op::VouchKey { replica, key, from } => Op::VouchKey {
                replica: ReplicaId(replica.0),
                key: *key,
                from: *from,
            },
            wire::Op::SealPolicy { always } => Op::SealPolicy { always: *always },
        }
    }
}

/// One oplog entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Origin replica.
    pub origin: ReplicaId,
    /// Number at the origin.
    pub number: u64,
    /// The origin's incarnation when the entry was made.
    pub incarnation: u64,
    /// The origin's clock (informational).
    pub time_ms: u64,
    /// Hash of the origin's previous entry.
    pub prev: Hash,
    /// The change.
    pub op: Op,
    /// This entry's hash.
    pub hash: Hash,
}

impl Entry {
    /// The entry's id as an object id (objects created by it carry this id).
    pub fn id(&self) -> ObjId {
        ObjId {
            origin: self.origin,
            number: self.number,
        }
    }

    /// Builds an entry and computes its hash.
    pub fn new(
        origin: ReplicaId,
        number: u64,
        incarnation: u64,
        time_ms: u64,
        prev: Hash,
        op: Op,
    ) -> Entry {
        let mut e = Entry {
            origin,
            number,
            incarnation,
            time_ms,
            prev,
            op,
            hash: [0; 32],
        };
        e.hash = msite_packet::entry_hash(&e.to_wire());
        e
    }

    /// To the wire form.
    pub fn to_wire(&self) -> wire::Entry {
        wire::Entry {
            origin: wire::Id(self.origin.0),
            number: self.number,
            incarnation: self.incarnation,
            time_ms: self.time_ms,
            prev: self.prev,
            op: self.op.to_wire(),
            hash: self.hash,
        }
    }

    /// From the wire form.
    pub fn from_wire(w: &wire::Entry) -> Entry {
        Entry {
            origin: ReplicaId(w.origin.0),
            number: w.number,
            incarnation: w.incarnation,
            time_ms: w.time_ms,
            prev: w.prev,
            op: Op::from_wire(&w.op),
            hash: w.hash,
        }
    }

    /// The canonical encoding (what is stored in the oplog and carried in packets).
    pub fn encode(&self) -> Vec<u8> {
        msite_packet::encode_entry(&self.to_wire())
    }

    /// Decodes a canonical encoding and checks that the carried hash is the entry's hash.
    pub fn decode_verified(bytes: &[u8]) -> Result<Entry, EntryError> {
        let w = msite_packet::decode_entry(bytes)
            .map_err(|e| EntryError::Undecodable(e.to_string()))?;
        let computed = msite_packet::canonical_entry_hash(bytes)
            .map_err(|e| EntryError::Undecodable(e.to_string()))?;
        if computed != w.hash {
            return Err(EntryError::BadHash {
                origin: ReplicaId(w.origin.0),
                number: w.number,
            });
        }
        Ok(Entry::from_wire(&w))
    }
}

/// An entry in a packet or the oplog that cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The bytes are not an entry.
    #[error("an entry cannot be decoded: {0}")]
    Undecodable(String),
    /// The hash it carries is not its hash.
    #[error("entry {number} of origin {origin} carries a hash that does not match its content")]
    BadHash {
        /// Origin.
        origin: ReplicaId,
        /// Number.
        number: u64,
    },
}
