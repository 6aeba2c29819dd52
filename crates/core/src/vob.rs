//! The versioned object base: how each operation changes the replicated state, and the
//! queries over it.
//!
//! State lives in the `State` keyspace (and content in `Blobs`), keyed so that its bytes depend
//! only on the set of entries applied, never on their order of arrival: objects are named by
//! the id of the entry that created them, and a name that two replicas created concurrently
//! is indexed under both ids — the smallest id wins the plain name everywhere, and the other
//! stays reachable as `NAME@REPLICA` (the replica that created it). This is what makes the
//! [state digest](digest) equal exactly when two replicas hold the same content.

use crate::codec::{Dec, Enc};
use crate::error::{CoreError, Result};
use crate::ids::{Hash, ObjId, ReplicaId};
use crate::model::{Entry, ObjectRef, Op};
use crate::store::{KeyRange, Keyspace, ReadView, Store};
use crate::txn::Txn;

const FAMILY: u8 = b'F';
const REPLICA: u8 = b'R';
const BRTYPE: u8 = b'B';
const LBTYPE: u8 = b'L';
const ELEMENT: u8 = b'E';
const BRANCH: u8 = b'H';
const VERSION: u8 = b'V';
const LABEL: u8 = b'l';
const NAME: u8 = b'N';

/// The namespaces of names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// Replica names.
    Replica,
    /// Branch type names.
    BrType,
    /// Label type names.
    LbType,
    /// Element path names.
    Element,
}

impl NameKind {
    fn byte(self) -> u8 {
        match self {
            NameKind::Replica => REPLICA,
            NameKind::BrType => BRTYPE,
            NameKind::LbType => LBTYPE,
            NameKind::Element => ELEMENT,
        }
    }
    /// The selector prefix (`replica`, `brtype`, `lbtype`, `elem`).
    pub fn label(self) -> &'static str {
        match self {
            NameKind::Replica => "replica",
            NameKind::BrType => "brtype",
            NameKind::LbType => "lbtype",
            NameKind::Element => "elem",
        }
    }
}

fn key1(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    // One allocation of the final size: keys are built for every entry applied.
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(tag);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn replica_obj(r: &ReplicaId) -> ObjId {
    ObjId {
        origin: *r,
        number: 0,
    }
}

fn name_prefix(kind: NameKind, name: &str) -> Vec<u8> {
    let mut k = vec![NAME, kind.byte()];
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}

/// A replica object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaObj {
    /// Its id.
    pub id: ReplicaId,
    /// Its name.
    pub name: String,
    /// The replica that masters it.
    pub master: ReplicaId,
    /// The entry that created it.
    pub created_by: ObjId,
}

/// A branch or label type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeObj {
    /// Its id.
    pub id: ObjId,
    /// Its name.
    pub name: String,
    /// Its master.
    pub master: ReplicaId,
}

/// An element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementObj {
    /// Its id.
    pub id: ObjId,
    /// Its path name.
    pub path: String,
    /// Its master.
    pub master: ReplicaId,
    /// Whether its name was removed.
    pub removed: bool,
}

/// A branch of an element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchObj {
    /// The element.
    pub elem: ObjId,
    /// The branch type.
    pub brtype: ObjId,
    /// Its master.
    pub master: ReplicaId,
    /// The latest version number (0: none yet).
    pub latest: u64,
}

/// A version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionObj {
    /// The element.
    pub elem: ObjId,
    /// The branch type.
    pub brtype: ObjId,
    /// Its number on the branch.
    pub number: u64,
    /// Content hash.
    pub content: Hash,
    /// Content size.
    pub size: u64,
    /// Author.
    pub author: String,
    /// Time at the origin.
    pub time_ms: u64,
    /// Comment.
    pub comment: String,
    /// The entry that created it.
    pub entry: ObjId,
}

/// A label on a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelObj {
    /// Label type.
    pub lbtype: ObjId,
    /// Branch type of the labelled version.
    pub brtype: ObjId,
    /// Version number.
    pub version: u64,
}

fn dec_type(id: ObjId, v: &[u8]) -> Result<TypeObj> {
    let mut d = Dec::new(v, "type");
    let t = TypeObj {
        id,
        name: d.str()?,
        master: d.rid()?,
    };
    d.end()?;
    Ok(t)
}

fn enc_type(t: &TypeObj) -> Vec<u8> {
    Enc::new().str(&t.name).rid(&t.master).done()
}

fn dec_elem(id: ObjId, v: &[u8]) -> Result<ElementObj> {
    let mut d = Dec::new(v, "element");
    let e = ElementObj {
        id,
        path: d.str()?,
        master: d.rid()?,
        removed: d.bool()?,
    };
    d.end()?;
    Ok(e)
}

fn enc_elem(e: &ElementObj) -> Vec<u8> {
    Enc::new()
        .str(&e.path)
        .rid(&e.master)
        .bool(e.removed)
        .done()
}

/// A branch record holds the branch's master. Its latest version is not kept there: it is
/// the last version key under the branch ([`latest_version`]), so a check-in on an existing
/// branch writes no branch record. The record's second field, the latest version when it
/// was kept, is written as 0 and ignored when read.
fn dec_branch<R: ReadView + ?Sized>(
    r: &R,
    elem: ObjId,
    brtype: ObjId,
    v: &[u8],
) -> Result<BranchObj> {
    let mut d = Dec::new(v, "branch");
    let master = d.rid()?;
    d.u64()?;
    d.end()?;
    Ok(BranchObj {
        elem,
        brtype,
        master,
        latest: latest_version(r, &elem, &brtype)?,
    })
}

fn enc_branch(master: &ReplicaId) -> Vec<u8> {
    Enc::with_capacity(16 + 10).rid(master).u64(0).done()
}

fn branch_key(elem: &ObjId, brtype: &ObjId) -> Vec<u8> {
    key1(BRANCH, &[&elem.to_bytes(), &brtype.to_bytes()])
}

/// The highest version number on a branch (0: none yet): its last version key.
pub(crate) fn latest_version<R: ReadView + ?Sized>(
    r: &R,
    elem: &ObjId,
    brtype: &ObjId,
) -> Result<u64> {
    let p = key1(VERSION, &[&elem.to_bytes(), &brtype.to_bytes()]);
    match r.last(Keyspace::State, KeyRange::prefix(&p))? {
        Some((k, _)) if k.len() == p.len() + 8 => Ok(crate::codec::be_u64(&k[p.len()..])?),
        Some(_) => Err(CoreError::Codec(crate::codec::CodecError {
            what: "version key",
        })),
        None => Ok(0),
    }
}

fn dec_replica(id: ReplicaId, v: &[u8]) -> Result<ReplicaObj> {
    let mut d = Dec::new(v, "replica");
    let r = ReplicaObj {
        id,
        name: d.str()?,
        master: d.rid()?,
        created_by: d.oid()?,
    };
    d.end()?;
    Ok(r)
}

fn enc_replica(r: &ReplicaObj) -> Vec<u8> {
    Enc::new()
        .str(&r.name)
        .rid(&r.master)
        .oid(&r.created_by)
        .done()
}

fn version_key(elem: &ObjId, brtype: &ObjId, n: u64) -> Vec<u8> {
    key1(
        VERSION,
        &[&elem.to_bytes(), &brtype.to_bytes(), &n.to_be_bytes()],
    )
}

fn dec_version(k: &[u8], v: &[u8]) -> Result<VersionObj> {
    let bad = || {
        CoreError::Codec(crate::codec::CodecError {
            what: "version key",
        })
    };
    if k.len() != 1 + 24 + 24 + 8 {
        return Err(bad());
    }
    let elem = ObjId::from_bytes(&k[1..25]).ok_or_else(bad)?;
    let brtype = ObjId::from_bytes(&k[25..49]).ok_or_else(bad)?;
    let number = crate::codec::be_u64(&k[49..57])?;
    let mut d = Dec::new(v, "version");
    let out = VersionObj {
        elem,
        brtype,
        number,
        content: d.hash()?,
        size: d.u64()?,
        author: d.str()?,
        time_ms: d.u64()?,
        comment: d.str()?,
        entry: d.oid()?,
    };
    d.end()?;
    Ok(out)
}

/// The content a State row refers to, if it is a version row.
pub(crate) fn version_content(k: &[u8], v: &[u8]) -> Result<Option<Hash>> {
    if k.first() != Some(&VERSION) {
        return Ok(None);
    }
    dec_version(k, v).map(|v| Some(v.content))
}

/// The content hash and the creating entry of version `version - 1` of `elem` on `brtype`,
/// if there is one: the base of a new version's delta (see [`pack_version`]).
pub(crate) fn previous_version<R: ReadView + ?Sized>(
    r: &R,
    elem: &ObjId,
    brtype: &ObjId,
    version: u64,
) -> Result<Option<(Hash, ObjId)>> {
    let Some(p) = version.checked_sub(1).filter(|p| *p > 0) else {
        return Ok(None);
    };
    let k = version_key(elem, brtype, p);
    match r.get(Keyspace::State, &k)? {
        Some(v) => dec_version(&k, &v).map(|v| Some((v.content, v.entry))),
        None => Ok(None),
    }
}

fn missing(what: &str, id: &ObjId) -> CoreError {
    CoreError::Malformed(format!(
        "an entry refers to {what} {}:{} which this replica does not hold",
        id.origin.short(),
        id.number
    ))
}

/// Applies one entry's operation to the object base inside `txn`.
pub fn apply<S: Store>(txn: &mut Txn<'_, S>, e: &Entry) -> Result<()> {
    match &e.op {
        Op::CreateFamily {
            family,
            family_name,
            replica_name,
        } => create_family(txn, e, family, family_name, replica_name),
        Op::CreateReplica { replica, name, .. } => put_replica(
            txn,
            &ReplicaObj {
                id: *replica,
                name: name.clone(),
                master: e.origin,
                created_by: e.id(),
            },
        ),
        Op::MkBrType { name } => new_type(txn, BRTYPE, e, name),
        Op::MkLbType { name } => new_type(txn, LBTYPE, e, name),
        Op::MkElem { path, main } => mk_elem(txn, e, path, main),
        Op::Checkin {
            elem,
            brtype,
            version,
            content,
            size,
            author,
            comment,
        } => checkin(
            txn,
            e,
            CheckinOp {
                elem,
                brtype,
                version: *version,
                content,
                size: *size,
                author,
                comment,
            },
        )?,
        Op::MkLabel {
            lbtype,
            elem,
            brtype,
            version,
        } => {
            let k = key1(LABEL, &[&elem.to_bytes(), &lbtype.to_bytes()]);
            txn.put(
                Keyspace::State,
                &k,
                &Enc::new().oid(brtype).u64(*version).done(),
            );
        }
        Op::RmLabel { lbtype, elem } => {
            let k = key1(LABEL, &[&elem.to_bytes(), &lbtype.to_bytes()]);
            txn.delete(Keyspace::State, &k);
        }
        Op::RmName { elem } => {
            let mut el = get_element(txn, elem)?.ok_or_else(|| missing("element", elem))?;
            el.removed = true;
            txn.put(
                Keyspace::State,
                &key1(ELEMENT, &[&elem.to_bytes()]),
                &enc_elem(&el),
            );
        }
        Op::ChMaster { object, master } => set_master(txn, object, *master)?,
        Op::RmReplica { replica, last } => crate::retire::apply(txn, e, replica, *last)?,
        // Protocol effects only (restore.rs, sync/trust.rs).
        Op::ReqMaster { .. }
        | Op::DenyMaster { .. }
        | Op::RestoreAck { .. }
        | Op::RestoreComplete { .. }
        | Op::RotateKey { .. }
        | Op::VouchKey { .. } => {}
        Op::SealPolicy { always } => crate::sync::sealing::apply(txn, e, *always)?,
    }
    Ok(())
}

/// The family's first entry: the family record, its first replica and the `main` branch type.
fn create_family<S: Store>(
    txn: &mut Txn<'_, S>,
    e: &Entry,
    family: &crate::ids::FamilyId,
    family_name: &str,
    replica_name: &str,
) {
    let id = e.id();
    txn.put(
        Keyspace::State,
        &[FAMILY],
        &Enc::new().raw(&family.0).str(family_name).done(),
    );
    put_replica(
        txn,
        &ReplicaObj {
            id: e.origin,
            name: replica_name.to_owned(),
            master: e.origin,
            created_by: id,
        },
    );
    put_type(
        txn,
        BRTYPE,
        &TypeObj {
            id,
            name: "main".into(),
            master: e.origin,
        },
        true,
    );
}

/// A new branch or label type named `name`, mastered by the entry's origin.
fn new_type<S: Store>(txn: &mut Txn<'_, S>, kind: u8, e: &Entry, name: &str) {
    let ty = TypeObj {
        id: e.id(),
        name: name.to_owned(),
        master: e.origin,
    };
    put_type(txn, kind, &ty, true);
}

/// A new element: its record, its name index row and its first branch.
fn mk_elem<S: Store>(txn: &mut Txn<'_, S>, e: &Entry, path: &str, main: &ObjId) {
    let id = e.id();
    let el = ElementObj {
        id,
        path: path.to_owned(),
        master: e.origin,
        removed: false,
    };
    txn.put_owned(
        Keyspace::State,
        key1(ELEMENT, &[&id.to_bytes()]),
        enc_elem(&el),
    );
    txn.put_owned(
        Keyspace::State,
        name_key(NameKind::Element, path, &id),
        Vec::new(),
    );
    put_branch(txn, &id, main, &e.origin);
}

/// The fields of an `Op::Checkin`, borrowed.
struct CheckinOp<'a> {
    elem: &'a ObjId,
    brtype: &'a ObjId,
    version: u64,
    content: &'a Hash,
    size: u64,
    author: &'a str,
    comment: &'a str,
}

/// A new version on a branch; the branch record is written only when the branch is new.
fn checkin<S: Store>(txn: &mut Txn<'_, S>, e: &Entry, op: CheckinOp<'_>) -> Result<()> {
    let CheckinOp {
        elem,
        brtype,
        version,
        content,
        size,
        author,
        comment,
    } = op;
    // A branch exists only for an element this replica holds (elements are never deleted), so
    // the element is read only when the branch is new. A check-in on an existing branch writes
    // no branch record (its latest version is the last version key): one row fewer per check-in.
    if txn
        .get(Keyspace::State, &branch_key(elem, brtype))?
        .is_none()
    {
        if get_element(txn, elem)?.is_none() {
            return Err(missing("element", elem));
        }
        put_branch(txn, elem, brtype, &e.origin);
    }
    // Room for the hash, three varints, two length-prefixed strings and an id.
    let v = Enc::with_capacity(32 + 3 * 10 + author.len() + comment.len() + 2 * 10 + 24)
        .raw(content)
        .u64(size)
        .str(author)
        .u64(e.time_ms)
        .str(comment)
        .oid(&e.id())
        .done();
    txn.put_owned(Keyspace::State, version_key(elem, brtype, version), v);
    pack_version(txn, elem, brtype, version, content, size)
}

fn name_key(kind: NameKind, name: &str, id: &ObjId) -> Vec<u8> {
    let mut k = name_prefix(kind, name);
    k.extend_from_slice(&id.to_bytes());
    k
}

fn put_replica<S: Store>(txn: &mut Txn<'_, S>, r: &ReplicaObj) {
    txn.put(Keyspace::State, &key1(REPLICA, &[&r.id.0]), &enc_replica(r));
    txn.put(
        Keyspace::State,
        &name_key(NameKind::Replica, &r.name, &replica_obj(&r.id)),
        &[],
    );
}

fn put_type<S: Store>(txn: &mut Txn<'_, S>, tag: u8, t: &TypeObj, index: bool) {
    txn.put(
        Keyspace::State,
        &key1(tag, &[&t.id.to_bytes()]),
        &enc_type(t),
    );
    if index {
        let kind = if tag == BRTYPE {
            NameKind::BrType
        } else {
            NameKind::LbType
        };
        txn.put(Keyspace::State, &name_key(kind, &t.name, &t.id), &[]);
    }
}

fn put_branch<S: Store>(txn: &mut Txn<'_, S>, elem: &ObjId, brtype: &ObjId, master: &ReplicaId) {
    txn.put_owned(
        Keyspace::State,
        branch_key(elem, brtype),
        enc_branch(master),
    );
}

fn get_element<S: Store>(txn: &Txn<'_, S>, id: &ObjId) -> Result<Option<ElementObj>> {
    match txn.get(Keyspace::State, &key1(ELEMENT, &[&id.to_bytes()]))? {
        Some(v) => Ok(Some(dec_elem(*id, &v)?)),
        None => Ok(None),
    }
}

fn set_master<S: Store>(txn: &mut Txn<'_, S>, object: &ObjectRef, master: ReplicaId) -> Result<()> {
    match object {
        ObjectRef::Replica(r) => {
            let k = key1(REPLICA, &[&r.0]);
            let v = txn
                .get(Keyspace::State, &k)?
                .ok_or_else(|| missing("replica", &replica_obj(r)))?;
            let mut obj = dec_replica(*r, &v)?;
            obj.master = master;
            txn.put(Keyspace::State, &k, &enc_replica(&obj));
        }
        ObjectRef::BrType(id) | ObjectRef::LbType(id) => {
            let tag = if matches!(object, ObjectRef::BrType(_)) {
                BRTYPE
            } else {
                LBTYPE
            };
            let k = key1(tag, &[&id.to_bytes()]);
            let v = txn
                .get(Keyspace::State, &k)?
                .ok_or_else(|| missing("type", id))?;
            let mut t = dec_type(*id, &v)?;
            t.master = master;
            put_type(txn, tag, &t, false);
        }
        ObjectRef::Element(id) => {
            let mut el = get_element(txn, id)?.ok_or_else(|| missing("element", id))?;
            el.master = master;
            txn.put(
                Keyspace::State,
                &key1(ELEMENT, &[&id.to_bytes()]),
                &enc_elem(&el),
            );
        }
        ObjectRef::Branch { elem, brtype } => {
            // The record holds the master only: rewriting it needs nothing else of the branch.
            if txn
                .get(Keyspace::State, &branch_key(elem, brtype))?
                .is_none()
            {
                return Err(missing("branch of element", elem));
            }
            put_branch(txn, elem, brtype, &master);
        }
    }
    Ok(())
}

/// Read-only queries over a replica's object base.
pub struct View<'a, R: ReadView + ?Sized> {
    r: &'a R,
}

impl<'a, R: ReadView + ?Sized> View<'a, R> {
    /// Queries over `r`.
    pub fn new(r: &'a R) -> Self {
        View { r }
    }

    /// Every object indexed under `name` in `kind`, smallest id (the winner) first.
    pub fn named(&self, kind: NameKind, name: &str) -> Result<Vec<ObjId>> {
        let p = name_prefix(kind, name);
        let mut out = Vec::new();
        for kv in self.r.scan(Keyspace::State, KeyRange::prefix(&p))? {
            let (k, _) = kv?;
            if let Some(id) = ObjId::from_bytes(&k[p.len()..]) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Resolves `NAME` (the winner) or `NAME@REPLICA` (the object of that name created at
    /// REPLICA) to an id.
    pub fn resolve(&self, kind: NameKind, name: &str) -> Result<ObjId> {
        let not_found = || CoreError::NotFound(format!("{}:{name}", kind.label()));
        if let Ok(ids) = self.named(kind, name) {
            if let Some(first) = ids.first() {
                return Ok(*first);
            }
        }
        if let Some((base, at)) = name.rsplit_once('@') {
            if kind != NameKind::Replica || !at.is_empty() {
                let origin = self
                    .resolve(NameKind::Replica, at)
                    .map_err(|_| not_found())?
                    .origin;
                let ids = self.named(kind, base)?;
                if let Some(id) = ids.into_iter().find(|id| id.origin == origin) {
                    return Ok(id);
                }
            }
        }
        Err(not_found())
    }

    /// The display name of an object: `NAME` for the winner, `NAME@CREATOR` otherwise.
    pub fn display_name(&self, kind: NameKind, name: &str, id: &ObjId) -> Result<String> {
        let ids = self.named(kind, name)?;
        if ids.first() == Some(id) || ids.is_empty() {
            return Ok(name.to_string());
        }
        let creator = self
            .replica(&id.origin)?
            .map(|r| r.name)
            .unwrap_or_else(|| id.origin.short());
        Ok(format!("{name}@{creator}"))
    }

    /// The family record (id, name).
    pub fn family(&self) -> Result<Option<(crate::ids::FamilyId, String)>> {
        match self.r.get(Keyspace::State, &[FAMILY])? {
            Some(v) => {
                let mut d = Dec::new(&v, "family");
                let id =
                    crate::ids::FamilyId(d.raw(16)?.try_into().map_err(|_| {
                        CoreError::Codec(crate::codec::CodecError { what: "family" })
                    })?);
                let name = d.str()?;
                Ok(Some((id, name)))
            }
            None => Ok(None),
        }
    }

    /// A replica object.
    pub fn replica(&self, id: &ReplicaId) -> Result<Option<ReplicaObj>> {
        match self.r.get(Keyspace::State, &key1(REPLICA, &[&id.0]))? {
            Some(v) => Ok(Some(dec_replica(*id, &v)?)),
            None => Ok(None),
        }
    }

    /// Every replica object, by id.
    pub fn replicas(&self) -> Result<Vec<ReplicaObj>> {
        let mut out = Vec::new();
        for kv in self.r.scan(Keyspace::State, KeyRange::prefix(&[REPLICA]))? {
            let (k, v) = kv?;
            let id = ReplicaId(k[1..].try_into().map_err(|_| {
                CoreError::Codec(crate::codec::CodecError {
                    what: "replica key",
                })
            })?);
            out.push(dec_replica(id, &v)?);
        }
        Ok(out)
    }

    /// A replica's display name (its id's prefix if unknown).
    pub fn replica_name(&self, id: &ReplicaId) -> String {
        match self.replica(id) {
            Ok(Some(r)) => self
                .display_name(NameKind::Replica, &r.name, &replica_obj(id))
                .unwrap_or(r.name),
            _ => id.short(),
        }
    }

    /// Resolves a replica name (or 32-hex id) to its id.
    pub fn replica_by_name(&self, name: &str) -> Result<ReplicaId> {
        if let Ok(id) = self.resolve(NameKind::Replica, name) {
            return Ok(id.origin);
        }
        if let Some(id) = ReplicaId::from_hex(name) {
            if self.replica(&id)?.is_some() {
                return Ok(id);
            }
        }
        Err(CoreError::NotFound(format!("replica:{name}")))
    }

    /// A branch or label type.
    pub fn type_obj(&self, kind: NameKind, id: &ObjId) -> Result<Option<TypeObj>> {
        let tag = if kind == NameKind::BrType {
            BRTYPE
        } else {
            LBTYPE
        };
        match self.r.get(Keyspace::State, &key1(tag, &[&id.to_bytes()]))? {
            Some(v) => Ok(Some(dec_type(*id, &v)?)),
            None => Ok(None),
        }
    }

    /// Every type of `kind` (BrType or LbType).
    pub fn types(&self, kind: NameKind) -> Result<Vec<TypeObj>> {
        let tag = if kind == NameKind::BrType {
            BRTYPE
        } else {
            LBTYPE
        };
        let mut out = Vec::new();
        for kv in self.r.scan(Keyspace::State, KeyRange::prefix(&[tag]))? {
            let (k, v) = kv?;
            if let Some(id) = ObjId::from_bytes(&k[1..]) {
                out.push(dec_type(id, &v)?);
            }
        }
        Ok(out)
    }

    /// An element by id.
    pub fn element(&self, id: &ObjId) -> Result<Option<ElementObj>> {
        match self
            .r
            .get(Keyspace::State, &key1(ELEMENT, &[&id.to_bytes()]))?
        {
            Some(v) => Ok(Some(dec_elem(*id, &v)?)),
            None => Ok(None),
        }
    }

    /// Resolves a path (or `PATH@REPLICA`) to a live element: among the elements indexed
    /// under the path, the smallest id whose name was not removed.
    pub fn element_by_path(&self, path: &str) -> Result<ElementObj> {
        for id in self.named(NameKind::Element, path)? {
            if let Some(el) = self.element(&id)? {
                if !el.removed {
                    return Ok(el);
                }
            }
        }
        if let Some((base, at)) = path.rsplit_once('@') {
            if let Ok(origin) = self.replica_by_name(at) {
                for id in self.named(NameKind::Element, base)? {
                    if id.origin == origin {
                        if let Some(el) = self.element(&id)? {
                            return Ok(el);
                        }
                    }
                }
            }
        }
        Err(CoreError::NotFound(format!("elem:{path}")))
    }

    /// Every element (removed ones included), in id order.
    pub fn elements(&self) -> Result<Vec<ElementObj>> {
        let mut out = Vec::new();
        for kv in self.r.scan(Keyspace::State, KeyRange::prefix(&[ELEMENT]))? {
            let (k, v) = kv?;
            if let Some(id) = ObjId::from_bytes(&k[1..]) {
                out.push(dec_elem(id, &v)?);
            }
        }
        Ok(out)
    }

    /// Live element names starting with `prefix`, in name order, each with its element
    /// (a name held by several live elements is listed once per element, the losers qualified).
    pub fn ls(&self, prefix: &str) -> Result<Vec<(String, ElementObj)>> {
        let mut p = vec![NAME, ELEMENT];
        p.extend_from_slice(prefix.as_bytes());
        let mut out = Vec::new();
        let mut current: Option<String> = None;
        for kv in self.r.scan(Keyspace::State, KeyRange::prefix(&p))? {
            let (k, _) = kv?;
            if k.len() < 2 + 1 + 24 {
                continue;
            }
            let name_bytes = &k[2..k.len() - 25];
            let id = match ObjId::from_bytes(&k[k.len() - 24..]) {
                Some(id) => id,
                None => continue,
            };
            let name = String::from_utf8_lossy(name_bytes).into_owned();
            let el = match self.element(&id)? {
                Some(el) if !el.removed => el,
                _ => continue,
            };
            let first = !matches!(&current, Some(n) if *n == name);
            current = Some(name.clone());
            if first {
                out.push((name, el));
            } else {
                let creator = self.replica_name(&id.origin);
                out.push((format!("{name}@{creator}"), el));
            }
        }
        Ok(out)
    }

    /// A branch.
    pub fn branch(&self, elem: &ObjId, brtype: &ObjId) -> Result<Option<BranchObj>> {
        match self.r.get(Keyspace::State, &branch_key(elem, brtype))? {
            Some(v) => Ok(Some(dec_branch(self.r, *elem, *brtype, &v)?)),
            None => Ok(None),
        }
    }

    /// Every branch of an element.
    pub fn branches(&self, elem: &ObjId) -> Result<Vec<BranchObj>> {
        let p = key1(BRANCH, &[&elem.to_bytes()]);
        let mut out = Vec::new();
        for kv in self.r.scan(Keyspace::State, KeyRange::prefix(&p))? {
            let (k, v) = kv?;
            if let Some(bt) = ObjId::from_bytes(&k[p.len()..]) {
                out.push(dec_branch(self.r, *elem, bt, &v)?);
            }
        }
        Ok(out)
    }

    /// Every object `master` masters, in key order (replica objects, types, elements, then
    /// branches): what `msite chmaster --all --from` takes over. One scan of each kind.
    pub fn mastered_by(&self, master: &ReplicaId) -> Result<Vec<ObjectRef>> {
        let mut out: Vec<ObjectRef> = self
            .replicas()?
            .into_iter()
            .filter(|r| r.master == *master)
            .map(|r| ObjectRef::Replica(r.id))
            .collect();
        for (kind, wrap) in [
            (
                NameKind::BrType,
                ObjectRef::BrType as fn(ObjId) -> ObjectRef,
            ),
            (NameKind::LbType, ObjectRef::LbType),
        ] {
            let types = self.types(kind)?.into_iter();
            out.extend(types.filter(|t| t.master == *master).map(|t| wrap(t.id)));
        }
        let elements = self.elements()?.into_iter();
        out.extend(
            elements
                .filter(|e| e.master == *master)
                .map(|e| ObjectRef::Element(e.id)),
        );
        out.extend(self.branches_mastered_by(master)?);
        Ok(out)
    }

    /// Every branch `master` masters: one scan of the branch records (which hold only the
    /// master), without reading any branch's versions.
    fn branches_mastered_by(&self, master: &ReplicaId) -> Result<Vec<ObjectRef>> {
        let mut out = Vec::new();
        for kv in self.r.scan(Keyspace::State, KeyRange::prefix(&[BRANCH]))? {
            let (k, v) = kv?;
            let (Some(elem), Some(brtype)) = (
                k.get(1..25).and_then(ObjId::from_bytes),
                k.get(25..).and_then(ObjId::from_bytes),
            ) else {
                continue;
            };
            if Dec::new(&v, "branch").rid()? == *master {
                out.push(ObjectRef::Branch { elem, brtype });
            }
        }
        Ok(out)
    }

    /// A version.
    pub fn version(&self, elem: &ObjId, brtype: &ObjId, n: u64) -> Result<Option<VersionObj>> {
        let k = version_key(elem, brtype, n);
        match self.r.get(Keyspace::State, &k)? {
            Some(v) => Ok(Some(dec_version(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Every version of an element, by branch type then number.
    pub fn versions(&self, elem: &ObjId) -> Result<Vec<VersionObj>> {
        let p = key1(VERSION, &[&elem.to_bytes()]);
        let mut out = Vec::new();
        for kv in self.r.scan(Keyspace::State, KeyRange::prefix(&p))? {
            let (k, v) = kv?;
            out.push(dec_version(&k, &v)?);
        }
        Ok(out)
    }

    /// The labels on an element.
    pub fn labels(&self, elem: &ObjId) -> Result<Vec<LabelObj>> {
        let p = key1(LABEL, &[&elem.to_bytes()]);
        let mut out = Vec::new();
        for kv in self.r.scan(Keyspace::State, KeyRange::prefix(&p))? {
            let (k, v) = kv?;
            let lbtype = ObjId::from_bytes(&k[p.len()..]).ok_or(CoreError::Codec(
                crate::codec::CodecError { what: "label key" },
            ))?;
            let mut d = Dec::new(&v, "label");
            out.push(LabelObj {
                lbtype,
                brtype: d.oid()?,
                version: d.u64()?,
            });
            d.end()?;
        }
        Ok(out)
    }

    /// Content by hash, whole in memory (see [`View::blob_reader`] for large content).
    pub fn blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        crate::content::read_all(self.r, hash)
    }

    /// Content by hash, streamed chunk by chunk.
    pub fn blob_reader(&self, hash: &Hash) -> Result<Option<crate::content::Reader<'_, R>>> {
        crate::content::open(self.r, hash)
    }

    /// The master of an object, or NotFound.
    pub fn master_of(&self, object: &ObjectRef) -> Result<ReplicaId> {
        let nf = |what: &str| CoreError::NotFound(what.to_string());
        Ok(match object {
            ObjectRef::Replica(r) => self.replica(r)?.ok_or_else(|| nf("replica"))?.master,
            ObjectRef::BrType(id) => {
                self.type_obj(NameKind::BrType, id)?
                    .ok_or_else(|| nf("brtype"))?
                    .master
            }
            ObjectRef::LbType(id) => {
                self.type_obj(NameKind::LbType, id)?
                    .ok_or_else(|| nf("lbtype"))?
                    .master
            }
            ObjectRef::Element(id) => self.element(id)?.ok_or_else(|| nf("element"))?.master,
            ObjectRef::Branch { elem, brtype } => {
                self.branch(elem, brtype)?
                    .ok_or_else(|| nf("branch"))?
                    .master
            }
        })
    }
}

/// Stores a new version's content packed (see [`crate::packed`]): a delta against the
/// previous version on its branch where that pays, else compressed whole where that pays.
/// Content larger than a chunk stays as it is.
fn pack_version<S: Store>(
    txn: &mut Txn<'_, S>,
    elem: &ObjId,
    brtype: &ObjId,
    version: u64,
    content: &Hash,
    size: u64,
) -> Result<()> {
    if size > crate::content::CHUNK_LEN as u64 {
        return Ok(());
    }
    let prev = match version.checked_sub(1).filter(|p| *p > 0) {
        Some(p) => txn.get(Keyspace::State, &version_key(elem, brtype, p))?,
        None => None,
    };
    let base: Option<Hash> = prev.and_then(|v| v.get(..32)?.try_into().ok());
    crate::packed::pack(txn, content, base.as_ref())
}

/// The state digest: BLAKE3 over every key and value of the object base and every content
/// hash, in key order (once per content, however it is chunked). Equal digests mean equal
/// replicated content.
pub fn digest<R: ReadView + ?Sized>(r: &R) -> Result<Hash> {
    let mut h = blake3::Hasher::new();
    h.update(b"msite-state-digest-v1");
    for kv in r.scan(Keyspace::State, KeyRange::all())? {
        let (k, v) = kv?;
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(&k);
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(&v);
    }
    h.update(b"blobs");
    let mut last: Option<Hash> = None;
    for kv in r.scan(Keyspace::Blobs, KeyRange::all())? {
        let (k, _) = kv?;
        if let Some(head) = crate::content::head_of(&k).filter(|h| last != Some(*h)) {
            h.update(&head);
            last = Some(head);
        }
    }
    Ok(*h.finalize().as_bytes())
}
