//! A replica: its identity, its oplog and epoch matrix, and the local changes of the
//! versioned object base (each one an entry of this replica's oplog).
//!
//! Synchronisation lives in [`crate::sync`], restoration in [`crate::restore`].

use std::path::Path;
use std::sync::Arc;

use crate::codec::{be_u64, Dec, Enc};
use crate::content::{self, Source, Staged};
use crate::env::Env;
use crate::error::{CoreError, Result};
use crate::ids::{FamilyId, Hash, ObjId, ReplicaId, ZERO_HASH};
use crate::keys;
use crate::model::{Entry, ObjectRef, Op, Row};
use crate::store::{KeyRange, Keyspace, ReadView, Store, WriteOptions};
use crate::txn::Txn;
use crate::vob::{self, NameKind, View};

/// A replica of a family, over a store.
pub struct Replica<S: Store> {
    pub(crate) store: S,
    pub(crate) env: Arc<dyn Env>,
    pub(crate) me: ReplicaId,
    pub(crate) family: FamilyId,
    pub(crate) family_name: String,
}

/// What a local record of the oplog holds besides the canonical entry.
///
/// # Layout of an oplog value
/// - Current: `lsn u64, tag u8, [offset u16], canonical`. Tag [`StoredEntry::PLAIN`] for an
///   entry without content; tag [`StoredEntry::CONTENT`] for a check-in, whose content hash is
///   `canonical[offset..offset + 32]`. The entry hash is the canonical encoding's last 32
///   bytes (it always ends with the hash field), so it is not stored again.
/// - Earlier stores: `lsn u64, hash [32], 0 | 1, [content hash 32 if 1], canonical`, still
///   read as is. The two are told apart by the old layout's hash, which equals the record's
///   last 32 bytes; in the current layout those bytes would have to equal the tag and the
///   start of the canonical encoding, which hashes over them (a BLAKE3 fixed point).
pub(crate) struct StoredEntry {
    pub lsn: u64,
    pub hash: Hash,
    pub blob: Option<Hash>,
    pub canonical: Vec<u8>,
}

impl StoredEntry {
    /// Tag of a current-layout record of an entry without content.
    const PLAIN: u8 = 2;
    /// Tag of a current-layout record of a check-in (content offset follows).
    const CONTENT: u8 = 3;

    pub(crate) fn encode(lsn: u64, e: &Entry, canonical: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 3 + canonical.len());
        v.extend_from_slice(&lsn.to_be_bytes());
        match &e.op {
            Op::Checkin { content, .. } => {
                let at = canonical.windows(32).position(|w| w == content);
                match at.and_then(|at| u16::try_from(at).ok()) {
                    Some(at) => {
                        v.push(Self::CONTENT);
                        v.extend_from_slice(&at.to_be_bytes());
                    }
                    // Not expected (the content hash is an early field of a check-in):
                    // the earlier layout carries it whole.
                    None => return Self::encode_v1(lsn, e, canonical),
                }
            }
            _ => v.push(Self::PLAIN),
        }
        v.extend_from_slice(canonical);
        v
    }

    /// The earlier layout (see the type's documentation).
    pub(crate) fn encode_v1(lsn: u64, e: &Entry, canonical: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 32 + 33 + canonical.len());
        v.extend_from_slice(&lsn.to_be_bytes());
        v.extend_from_slice(&e.hash);
        match &e.op {
            Op::Checkin { content, .. } => {
                v.push(1);
                v.extend_from_slice(content);
            }
            _ => v.push(0),
        }
        v.extend_from_slice(canonical);
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<StoredEntry> {
        let bad = || {
            CoreError::Codec(crate::codec::CodecError {
                what: "oplog record",
            })
        };
        if v.len() < 9 + 34 {
            return Err(bad());
        }
        let lsn = be_u64(&v[..8])?;
        if v.len() >= 41 + 34 && v[40] <= 1 && v[8..40] == v[v.len() - 32..] {
            return Self::decode_v1(lsn, v).ok_or_else(bad);
        }
        let (blob, canonical) = match v[8] {
            Self::PLAIN => (None, &v[9..]),
            Self::CONTENT if v.len() >= 11 => {
                let at = usize::from(u16::from_be_bytes([v[9], v[10]]));
                let c = &v[11..];
                let h: Hash = c
                    .get(at..at + 32)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?;
                (Some(h), c)
            }
            _ => return Err(bad()),
        };
        let n = canonical.len();
        if n < 34 || canonical[n - 34..n - 32] != [0xc4, 0x20] {
            return Err(bad());
        }
        Ok(StoredEntry {
            lsn,
            hash: canonical[n - 32..].try_into().map_err(|_| bad())?,
            blob,
            canonical: canonical.to_vec(),
        })
    }

    /// A record in the earlier layout.
    fn decode_v1(lsn: u64, v: &[u8]) -> Option<StoredEntry> {
        let hash: Hash = v[8..40].try_into().ok()?;
        let (blob, rest) = match v[40] {
            0 => (None, &v[41..]),
            1 if v.len() >= 73 => (Some(v[41..73].try_into().ok()?), &v[73..]),
            _ => return None,
        };
        Some(StoredEntry {
            lsn,
            hash,
            blob,
            canonical: rest.to_vec(),
        })
    }
}

/// Tracks the apply sequence and own numbering inside one transaction.
pub(crate) struct Appender {
    pub next_lsn: u64,
}

impl Appender {
    pub(crate) fn load<S: Store>(txn: &Txn<'_, S>) -> Result<Self> {
        let next_lsn = match txn.get(Keyspace::Meta, keys::NEXT_LSN)? {
            Some(v) => be_u64(&v)?,
            None => 1,
        };
        Ok(Appender { next_lsn })
    }

    /// Stores an entry (oplog record, own row, object base effects) in `txn`.
    pub(crate) fn store_entry<S: Store>(
        &mut self,
        txn: &mut Txn<'_, S>,
        e: &Entry,
        canonical: &[u8],
    ) -> Result<()> {
        vob::apply(txn, e)?;
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        txn.put_owned(
            Keyspace::Oplog,
            keys::oplog(&e.origin, e.number).to_vec(),
            StoredEntry::encode(lsn, e, canonical),
        );
        txn.put_owned(
            Keyspace::Epochs,
            keys::own(&e.origin),
            e.number.to_be_bytes().to_vec(),
        );
        txn.put(Keyspace::Meta, keys::NEXT_LSN, &self.next_lsn.to_be_bytes());
        if e.incarnation > 0 {
            let k = keys::peer(keys::peers::INCARNATION, &e.origin);
            let known = match txn.get(Keyspace::Peers, &k)? {
                Some(v) => be_u64(&v)?,
                None => 0,
            };
            if e.incarnation > known {
                txn.put(Keyspace::Peers, &k, &e.incarnation.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// Reads a big-endian u64 value (0 if absent) from any view: a store, a snapshot, or a
/// transaction (which sees its own writes).
pub(crate) fn get_u64<R: ReadView + ?Sized>(r: &R, ks: Keyspace, key: &[u8]) -> Result<u64> {
    match r.get(ks, key)? {
        Some(v) => Ok(be_u64(&v)?),
        None => Ok(0),
    }
}

/// Reads the row stored under `prefix` in Epochs (cells keyed by prefix ++ origin) from any
/// view, a transaction included.
pub(crate) fn read_row<R: ReadView + ?Sized>(r: &R, prefix: &[u8]) -> Result<Row> {
    let mut row = Row::default();
    for kv in r.scan(Keyspace::Epochs, KeyRange::prefix(prefix))? {
        let (k, v) = kv?;
        if k.len() != prefix.len() + 16 {
            continue;
        }
        let origin = ReplicaId(
            k[prefix.len()..]
                .try_into()
                .map_err(|_| CoreError::Codec(crate::codec::CodecError { what: "epoch key" }))?,
        );
        row.set(origin, be_u64(&v)?);
    }
    Ok(row)
}

/// A mastership-request policy: what this replica does with requests for objects it masters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqMasterPolicy {
    /// Grant at once, on import (the default).
    Allow,
    /// Refuse (the request is logged).
    Deny,
    /// Keep the request for the operator, who grants it with `chmaster`.
    Manual,
}

impl ReqMasterPolicy {
    fn byte(self) -> u8 {
        match self {
            ReqMasterPolicy::Allow => 0,
            ReqMasterPolicy::Deny => 1,
            ReqMasterPolicy::Manual => 2,
        }
    }
    /// Parses `allow`, `deny` or `manual`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(ReqMasterPolicy::Allow),
            "deny" => Some(ReqMasterPolicy::Deny),
            "manual" => Some(ReqMasterPolicy::Manual),
            _ => None,
        }
    }
    /// The policy's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReqMasterPolicy::Allow => "allow",
            ReqMasterPolicy::Deny => "deny",
            ReqMasterPolicy::Manual => "manual",
        }
    }
}

/// A parsed object selector (`replica:NAME`, `brtype:NAME`, `lbtype:NAME`, `elem:PATH`,
/// `branch:PATH@@BRTYPE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// A replica.
    Replica(String),
    /// A branch type.
    BrType(String),
    /// A label type.
    LbType(String),
    /// An element.
    Elem(String),
    /// An element's branch.
    Branch(String, String),
}

impl Selector {
    /// Parses a selector.
    pub fn parse(s: &str) -> Result<Selector> {
        let (kind, name) = s.split_once(':').ok_or_else(|| {
            CoreError::Invalid(format!(
                "`{s}` is not a selector; write replica:NAME, brtype:NAME, lbtype:NAME, elem:PATH or branch:PATH@@BRTYPE"
            ))
        })?;
        if name.is_empty() {
            return Err(CoreError::Invalid(format!(
                "selector `{s}` has no name after the colon"
            )));
        }
        Ok(match kind {
            "replica" => Selector::Replica(name.into()),
            "brtype" => Selector::BrType(name.into()),
            "lbtype" => Selector::LbType(name.into()),
            "elem" => Selector::Elem(name.into()),
            "branch" => {
                let (p, b) = name.split_once("@@").ok_or_else(|| {
                    CoreError::Invalid(format!("branch selector `{s}` needs the form branch:PATH@@BRTYPE"))
                })?;
                Selector::Branch(p.into(), b.into())
            }
            other => {
                return Err(CoreError::Invalid(format!(
                    "unknown selector kind `{other}` in `{s}`; use replica, brtype, lbtype, elem or branch"
                )))
            }
        })
    }
}

/// A version selector `PATH[@@BRTYPE[/N]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionSel {
    /// Element path.
    pub path: String,
    /// Branch type (default `main`).
    pub brtype: String,
    /// Version (default: latest).
    pub number: Option<u64>,
}

impl VersionSel {
    /// Parses `PATH`, `PATH@@BRTYPE` or `PATH@@BRTYPE/N`.
    pub fn parse(s: &str) -> Result<VersionSel> {
        match s.split_once("@@") {
            None => Ok(VersionSel {
                path: s.into(),
                brtype: "main".into(),
                number: None,
            }),
            Some((p, rest)) => {
                let (b, n) = match rest.rsplit_once('/') {
                    Some((b, n)) if n.eq_ignore_ascii_case("latest") => (b, None),
                    Some((b, n)) => {
                        let n: u64 = n.parse().map_err(|_| {
                            CoreError::Invalid(format!("`{n}` in `{s}` is not a version number"))
                        })?;
                        (b, Some(n))
                    }
                    None => (rest, None),
                };
                Ok(VersionSel {
                    path: p.into(),
                    brtype: b.into(),
                    number: n,
                })
            }
        }
    }
}

/// The result of [`Replica::import_tree`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeImport {
    /// Elements created.
    pub new_elements: u64,
    /// Versions checked in.
    pub new_versions: u64,
    /// Files whose content was unchanged.
    pub unchanged: u64,
}

fn validate_name(what: &str, name: &str) -> Result<()> {
    no_control(&format!("{what} name"), name)?;
    if name.is_empty() || name.contains("@@") {
        return Err(CoreError::Invalid(format!(
            "`{name}` is not a valid {what} name (empty, or containing `@@`)"
        )));
    }
    Ok(())
}

/// Refuses a text the operator gives (a name, a path, a comment) that holds a control
/// character other than those `allowed`: every site would print it, and a terminal obeys
/// escape sequences. The message shows the text and the character escaped.
pub(crate) fn no_control_but(what: &str, text: &str, allowed: &[char]) -> Result<()> {
    match text
        .chars()
        .find(|c| c.is_control() && !allowed.contains(c))
    {
        None => Ok(()),
        Some(c) => {
            let shown: String = text.chars().take(80).collect();
            Err(CoreError::Invalid(format!(
                "the {what} \"{}\" contains the control character {}; use printable characters only",
                shown.escape_debug(),
                c.escape_debug()
            )))
        }
    }
}

/// [`no_control_but`] with no exception: names and paths are one line of printable text.
pub(crate) fn no_control(what: &str, text: &str) -> Result<()> {
    no_control_but(what, text, &[])
}

impl<S: Store> Replica<S> {
    /// Creates a new family whose first replica lives in `store` (which must be empty).
    pub fn init(
        store: S,
        env: Arc<dyn Env>,
        family_name: &str,
        replica_name: &str,
    ) -> Result<Self> {
        validate_name("family", family_name)?;
        validate_name("replica", replica_name)?;
        if store.get(Keyspace::Meta, keys::IDENTITY)?.is_some() {
            return Err(CoreError::Exists("a replica in this store".into()));
        }
        let family = FamilyId(env.random_id());
        let me = ReplicaId(env.random_id());
        let r = Replica {
            store,
            env,
            me,
            family,
            family_name: family_name.into(),
        };
        let mut txn = Txn::new(&r.store);
        txn.put(
            Keyspace::Meta,
            keys::IDENTITY,
            &identity(&family, family_name, &me),
        );
        let mut ap = Appender::load(&txn)?;
        let op = Op::CreateFamily {
            family,
            family_name: family_name.into(),
            replica_name: replica_name.into(),
        };
        r.append_local(&mut txn, &mut ap, op)?;
        crate::sync::ensure_signing_key(&mut txn, r.env.as_ref(), &me)?;
        txn.commit(WriteOptions::SYNC)?;
        Ok(r)
    }

    /// Opens the replica held in `store`.
    pub fn open(store: S, env: Arc<dyn Env>) -> Result<Self> {
        if let Some(why) = crate::sync::interrupted_creation(&store)? {
            return Err(CoreError::Invalid(why));
        }
        let v = store.get(Keyspace::Meta, keys::IDENTITY)?.ok_or_else(|| {
            CoreError::NotFound("a replica in this store (the store is empty)".into())
        })?;
        let mut d = Dec::new(&v, "identity");
        let family = FamilyId(
            d.raw(16)?
                .try_into()
                .map_err(|_| CoreError::Codec(crate::codec::CodecError { what: "identity" }))?,
        );
        let family_name = d.str()?;
        let me = d.rid()?;
        Ok(Replica {
            store,
            env,
            me,
            family,
            family_name,
        })
    }

    /// Makes the replica store of a new replica from its identity, without any entry yet.
    pub(crate) fn create_empty(
        store: S,
        env: Arc<dyn Env>,
        family: FamilyId,
        family_name: &str,
        me: ReplicaId,
    ) -> Result<Self> {
        if store.get(Keyspace::Meta, keys::IDENTITY)?.is_some() {
            return Err(CoreError::Exists("a replica in this store".into()));
        }
        Ok(Replica {
            store,
            env,
            me,
            family,
            family_name: family_name.into(),
        })
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.me
    }
    /// The family's id.
    pub fn family(&self) -> FamilyId {
        self.family
    }
    /// The family's name.
    pub fn family_name(&self) -> &str {
        &self.family_name
    }
    /// This replica's name.
    pub fn name(&self) -> String {
        self.view().replica_name(&self.me)
    }
    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }
    /// Gives the store back (closing the replica).
    pub fn into_store(self) -> S {
        self.store
    }
    /// The environment.
    pub fn env(&self) -> &Arc<dyn Env> {
        &self.env
    }
    /// Queries over the object base.
    pub fn view(&self) -> View<'_, S> {
        View::new(&self.store)
    }
    /// The display name of any replica.
    pub fn replica_name(&self, id: &ReplicaId) -> String {
        self.view().replica_name(id)
    }

    /// The own row.
    pub fn own_row(&self) -> Result<Row> {
        read_row(&self.store, keys::OWN_PREFIX)
    }

    /// The estimate row for `target`.
    pub fn estimate(&self, target: &ReplicaId) -> Result<Row> {
        read_row(&self.store, &keys::estimate_prefix(target))
    }

    /// The incarnation recorded for `r` (this replica's own for `r == id()`).
    pub fn incarnation_of(&self, r: &ReplicaId) -> Result<u64> {
        get_u64(
            &self.store,
            Keyspace::Peers,
            &keys::peer(keys::peers::INCARNATION, r),
        )
    }

    /// Sets an estimate row (`chepoch`). The own row is refused.
    pub fn chepoch(&self, target: &ReplicaId, cells: &[(ReplicaId, u64)]) -> Result<()> {
        if *target == self.me {
            return Err(CoreError::Invalid(format!(
                "the own row of {} is exact and cannot be changed; chepoch sets a sibling's estimate row",
                self.name()
            )));
        }
        if self.view().replica(target)?.is_none() {
            return Err(CoreError::NotFound(format!("replica:{}", target.short())));
        }
        let mut txn = Txn::new(&self.store);
        for (o, n) in cells {
            txn.put(
                Keyspace::Epochs,
                &keys::estimate(target, o),
                &n.to_be_bytes(),
            );
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }

    /// The state digest.
    pub fn digest(&self) -> Result<Hash> {
        let snap = self.store.snapshot()?;
        vob::digest(&snap)
    }

    /// The hash of our entry `(origin, number)`, if held.
    pub(crate) fn entry_hash_at<R: ReadView + ?Sized>(
        r: &R,
        origin: &ReplicaId,
        number: u64,
    ) -> Result<Option<Hash>> {
        if number == 0 {
            return Ok(Some(ZERO_HASH));
        }
        match r.get(Keyspace::Oplog, &keys::oplog(origin, number))? {
            Some(v) => Ok(Some(StoredEntry::decode(&v)?.hash)),
            // A dropped prefix keeps its last entry's hash as the chain's base (retain.rs).
            None => Ok(crate::retain::retained_base(r, origin)?
                .and_then(|(n, h)| (n == number).then_some(h))),
        }
    }

    /// An entry of the oplog, decoded.
    pub fn entry(&self, origin: &ReplicaId, number: u64) -> Result<Option<Entry>> {
        match self
            .store
            .get(Keyspace::Oplog, &keys::oplog(origin, number))?
        {
            Some(v) => {
                let s = StoredEntry::decode(&v)?;
                Ok(Some(Entry::decode_verified(&s.canonical)?))
            }
            None => Ok(None),
        }
    }

    /// Every entry of one origin, in number order (for `lshistory`-style dumps and tests).
    pub fn entries_of(&self, origin: &ReplicaId) -> Result<Vec<Entry>> {
        let lo = keys::oplog(origin, 0);
        let hi = keys::oplog(origin, u64::MAX);
        let mut out = Vec::new();
        for kv in self
            .store
            .scan(Keyspace::Oplog, KeyRange::between(lo.to_vec(), hi.to_vec()))?
        {
            let (_, v) = kv?;
            let s = StoredEntry::decode(&v)?;
            out.push(Entry::decode_verified(&s.canonical)?);
        }
        Ok(out)
    }

    /// Refuses local changes unless the replica is in normal operation.
    pub(crate) fn check_writable(&self) -> Result<()> {
        let st = self.status()?;
        if st.restored {
            return Err(CoreError::Locked(format!(
                "replica {} was restored from a backup and refuses local changes and exports until the restoration procedure runs; run `msite restorereplica`",
                self.name()
            )));
        }
        if let Some(reason) = st.rolled_back {
            return Err(CoreError::Locked(format!(
                "replica {} refuses local changes: {reason}; run `msite restorereplica`",
                self.name()
            )));
        }
        if let Some(rec) = &st.recovering {
            return Err(CoreError::Locked(format!(
                "replica {} is locked while it recovers from a restore (`msite restorereplica`): it waits for recovery updates from {}; only `msite syncreplica import` of their packets can change it until then (see `msite lsreplica --long`)",
                self.name(),
                self.awaited_names(rec)
            )));
        }
        match self.retired_lock()? {
            Some(locked) => Err(locked),
            None => Ok(()),
        }
    }

    /// The siblings a recovering replica still waits for, as a bounded list of names.
    fn awaited_names(&self, rec: &crate::restore::Recovering) -> String {
        const SHOWN: usize = 5;
        let mut names: Vec<String> = rec.awaited.keys().map(|id| self.replica_name(id)).collect();
        names.sort();
        if names.len() > SHOWN {
            let more = names.len() - SHOWN;
            names.truncate(SHOWN);
            names.push(format!("and {more} more"));
        }
        if names.is_empty() {
            "no sibling (its next import completes the restoration)".to_string()
        } else {
            names.join(", ")
        }
    }

    /// Appends a local entry inside `txn` and applies it.
    pub(crate) fn append_local(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        op: Op,
    ) -> Result<Entry> {
        let own = get_u64(txn, Keyspace::Epochs, &keys::own(&self.me))?;
        let prev = if own == 0 {
            ZERO_HASH
        } else {
            Self::entry_hash_at(txn, &self.me, own)?.ok_or_else(|| {
                CoreError::Codec(crate::codec::CodecError {
                    what: "own row points past the oplog",
                })
            })?
        };
        let inc = get_u64(
            txn,
            Keyspace::Peers,
            &keys::peer(keys::peers::INCARNATION, &self.me),
        )?;
        let e = Entry::new(self.me, own + 1, inc, self.env.now_ms(), prev, op);
        let canonical = e.encode();
        ap.store_entry(txn, &e, &canonical)?;
        Ok(e)
    }

    /// Runs `f` in one local transaction that appends entries, after checking the replica
    /// accepts local changes; commits durably. Every public local change checks the lock
    /// ([`Self::check_writable`]) before it reads the object base too: a locked replica's
    /// names and masterships may predate its backup, so the lock is what the operator must
    /// hear first.
    pub(crate) fn local_change<T>(
        &self,
        f: impl FnOnce(&Self, &mut Txn<'_, S>, &mut Appender) -> Result<T>,
    ) -> Result<T> {
        self.check_writable()?;
        let mut txn = Txn::new(&self.store);
        let mut ap = Appender::load(&txn)?;
        let out = f(self, &mut txn, &mut ap)?;
        txn.commit(WriteOptions::SYNC)?;
        Ok(out)
    }

    pub(crate) fn require_master(&self, object: &ObjectRef, what: &str) -> Result<()> {
        let master = self.view().master_of(object)?;
        if master != self.me {
            return Err(CoreError::NotMaster {
                object: what.into(),
                master: self.replica_name(&master),
                me: self.name(),
            });
        }
        Ok(())
    }

    /// Creates a branch type mastered here.
    pub fn mkbrtype(&self, name: &str) -> Result<ObjId> {
        self.check_writable()?;
        validate_name("branch type", name)?;
        if !self.view().named(NameKind::BrType, name)?.is_empty() {
            return Err(CoreError::Exists(format!("brtype:{name}")));
        }
        self.local_change(|r, t, ap| {
            Ok(r.append_local(t, ap, Op::MkBrType { name: name.into() })?
                .id())
        })
    }

    /// Creates a label type mastered here.
    pub fn mklbtype(&self, name: &str) -> Result<ObjId> {
        self.check_writable()?;
        validate_name("label type", name)?;
        if !self.view().named(NameKind::LbType, name)?.is_empty() {
            return Err(CoreError::Exists(format!("lbtype:{name}")));
        }
        self.local_change(|r, t, ap| {
            Ok(r.append_local(t, ap, Op::MkLbType { name: name.into() })?
                .id())
        })
    }

    fn main_brtype(&self) -> Result<ObjId> {
        self.view().resolve(NameKind::BrType, "main")
    }

    /// Creates an element with a `main` branch.
    pub fn mkelem(&self, path: &str) -> Result<ObjId> {
        self.check_writable()?;
        let path = normalize_path(path)?;
        if self.view().element_by_path(&path).is_ok() {
            return Err(CoreError::Exists(format!("elem:{path}")));
        }
        let main = self.main_brtype()?;
        self.local_change(|r, t, ap| {
            Ok(r.append_local(
                t,
                ap,
                Op::MkElem {
                    path: path.clone(),
                    main,
                },
            )?
            .id())
        })
    }

    /// Checks in `content` as a new version of `path` on branch type `brtype` (creating the
    /// element and the branch when needed). Returns the element and the version number.
    pub fn checkin(
        &self,
        path: &str,
        brtype: &str,
        content: &[u8],
        author: &str,
        comment: &str,
    ) -> Result<(ObjId, u64)> {
        self.checkin_from(path, brtype, Source::Bytes(content), author, comment)
    }

    /// Checks in the content of `src` like [`Replica::checkin`], streaming it: memory stays
    /// bounded whatever its size, and content over the site's limit is refused after reading
    /// no more than the limit.
    pub fn checkin_from(
        &self,
        path: &str,
        brtype: &str,
        src: Source<'_>,
        author: &str,
        comment: &str,
    ) -> Result<(ObjId, u64)> {
        let path = normalize_path(path)?;
        check_text(author, comment)?;
        self.check_writable()?;
        let what = match src {
            Source::Bytes(_) => format!("the content for {path}"),
            Source::File(f) => f.display().to_string(),
        };
        let staged = content::stage(&self.store, src, &what, self.max_version_bytes()?)?;
        let hash = staged.hash;
        let out = self.local_change(|r, t, ap| {
            r.checkin_in(t, ap, &path, brtype, staged, author, comment, false)
        });
        if out.is_err() {
            // Best effort: leftover chunks are invisible, this only frees their space.
            let _ = content::discard_staged(&self.store, &hash);
        }
        out.map(|(e, v, _)| (e, v))
    }

    /// Sets the largest version this replica accepts, at check-in and import. Local, not
    /// replicated.
    pub fn set_max_version_bytes(&self, bytes: u64) -> Result<()> {
        crate::store::StoreExt::put_one(
            &self.store,
            Keyspace::Meta,
            keys::MAX_VERSION_BYTES,
            &bytes.to_be_bytes(),
            WriteOptions::SYNC,
        )?;
        Ok(())
    }

    /// The largest version this replica accepts, in bytes.
    pub fn max_version_bytes(&self) -> Result<u64> {
        Ok(
            match self.store.get(Keyspace::Meta, keys::MAX_VERSION_BYTES)? {
                Some(v) => be_u64(&v)?,
                None => content::DEFAULT_MAX_VERSION_BYTES,
            },
        )
    }

    /// Inside a transaction: check in one file. With `only_if_changed`, no version is made
    /// when the branch's latest version already has this content. Returns (element, version,
    /// what happened: 0 unchanged, 1 new version, 2 new element).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn checkin_in(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        path: &str,
        brtype_name: &str,
        staged: Staged,
        author: &str,
        comment: &str,
        only_if_changed: bool,
    ) -> Result<(ObjId, u64, u8)> {
        let brtype = txn_resolve(txn, NameKind::BrType, brtype_name)?;
        let (elem, created) = self.element_for_checkin(txn, ap, path)?;
        let latest = self.latest_on_own_branch(txn, &elem, &brtype, path, brtype_name)?;
        let (hash, size) = (staged.hash, staged.size);
        if only_if_changed && latest > 0 {
            let held = View::new(&*txn).version(&elem, &brtype, latest)?;
            if held.is_some_and(|v| v.content == hash) {
                return Ok((elem, latest, 0));
            }
        }
        staged.put_head(txn)?;
        let version = latest + 1;
        self.append_local(
            txn,
            ap,
            Op::Checkin {
                elem,
                brtype,
                version,
                content: hash,
                size,
                author: author.into(),
                comment: comment.into(),
            },
        )?;
        Ok((elem, version, if created { 2 } else { 1 }))
    }

    /// The element at `path`, made (an `MkElem` entry) when there is none; whether it was made.
    fn element_for_checkin(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        path: &str,
    ) -> Result<(ObjId, bool)> {
        if let Some(id) = txn_element_by_path(txn, path)? {
            return Ok((id, false));
        }
        let main = txn_resolve(txn, NameKind::BrType, "main")?;
        let op = Op::MkElem {
            path: path.into(),
            main,
        };
        Ok((self.append_local(txn, ap, op)?.id(), true))
    }

    /// The latest version on the branch `brtype` of `elem` (0: the branch has none yet),
    /// refused unless this replica masters the branch or, for a branch not yet started, its
    /// branch type.
    fn latest_on_own_branch(
        &self,
        txn: &Txn<'_, S>,
        elem: &ObjId,
        brtype: &ObjId,
        path: &str,
        brtype_name: &str,
    ) -> Result<u64> {
        let view = View::new(txn);
        let (master, object, latest) = match view.branch(elem, brtype)? {
            Some(b) => (b.master, format!("branch {path}@@{brtype_name}"), b.latest),
            None => {
                let t = view
                    .type_obj(NameKind::BrType, brtype)?
                    .ok_or_else(|| CoreError::NotFound(format!("brtype:{brtype_name}")))?;
                let object = format!("brtype:{brtype_name} (needed to start a branch on {path})");
                (t.master, object, 0)
            }
        };
        if master != self.me {
            return Err(CoreError::NotMaster {
                object,
                master: self.replica_name(&master),
                me: self.name(),
            });
        }
        Ok(latest)
    }

    /// Checks in a whole directory tree in one transaction: new elements for new files, new
    /// versions where content changed.
    pub fn import_tree(
        &self,
        dir: &Path,
        brtype: &str,
        author: &str,
        comment: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<TreeImport> {
        check_text(author, comment)?;
        let files = walk(dir)?;
        let limit = self.max_version_bytes()?;
        self.local_change(|r, t, ap| {
            let mut out = TreeImport::default();
            for (i, (rel, abs)) in files.iter().enumerate() {
                let what = abs.display().to_string();
                let staged = content::stage(&r.store, Source::File(abs), &what, limit)?;
                match r
                    .checkin_in(t, ap, rel, brtype, staged, author, comment, true)?
                    .2
                {
                    0 => out.unchanged += 1,
                    1 => out.new_versions += 1,
                    _ => {
                        out.new_elements += 1;
                        out.new_versions += 1;
                    }
                }
                progress(i as u64 + 1);
            }
            Ok(out)
        })
    }

    /// Resolves a version selector to (element, branch type, version number).
    pub fn resolve_version(&self, sel: &VersionSel) -> Result<(ObjId, ObjId, u64)> {
        let v = self.view();
        let el = v.element_by_path(&sel.path)?;
        let bt = v.resolve(NameKind::BrType, &sel.brtype)?;
        let br = v
            .branch(&el.id, &bt)?
            .ok_or_else(|| CoreError::NotFound(format!("branch {}@@{}", sel.path, sel.brtype)))?;
        let n = sel.number.unwrap_or(br.latest);
        if n == 0 || v.version(&el.id, &bt, n)?.is_none() {
            return Err(CoreError::NotFound(format!(
                "version {}@@{}/{}",
                sel.path,
                sel.brtype,
                if n == 0 {
                    "(no version checked in yet)".to_string()
                } else {
                    n.to_string()
                }
            )));
        }
        Ok((el.id, bt, n))
    }

    /// Writes the content of a version to `out`, chunk by chunk; returns its size.
    pub fn cat_to(&self, sel: &VersionSel, out: &mut dyn std::io::Write) -> Result<u64> {
        let (e, b, n) = self.resolve_version(sel)?;
        let snap = self.store.snapshot()?;
        let v = View::new(&snap);
        let ver = v
            .version(&e, &b, n)?
            .ok_or_else(|| CoreError::NotFound("version".into()))?;
        let mut rd = v.blob_reader(&ver.content)?.ok_or_else(|| {
            CoreError::Codec(crate::codec::CodecError {
                what: "version content missing from the store",
            })
        })?;
        let mut written = 0u64;
        while let Some(chunk) = rd.next_chunk()? {
            out.write_all(&chunk)
                .map_err(|e| CoreError::io("writing the content", e))?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// The content of a version.
    pub fn cat(&self, sel: &VersionSel) -> Result<Vec<u8>> {
        let (e, b, n) = self.resolve_version(sel)?;
        let v = self.view();
        let ver = v
            .version(&e, &b, n)?
            .ok_or_else(|| CoreError::NotFound("version".into()))?;
        v.blob(&ver.content)?.ok_or_else(|| {
            CoreError::Codec(crate::codec::CodecError {
                what: "version content missing from the store",
            })
        })
    }

    /// Attaches (or moves) a label of type `lbtype` to a version.
    pub fn mklabel(&self, lbtype: &str, sel: &VersionSel) -> Result<()> {
        self.check_writable()?;
        let lb = self.view().resolve(NameKind::LbType, lbtype)?;
        self.require_master(&ObjectRef::LbType(lb), &format!("lbtype:{lbtype}"))?;
        let (elem, brtype, version) = self.resolve_version(sel)?;
        self.local_change(|r, t, ap| {
            r.append_local(
                t,
                ap,
                Op::MkLabel {
                    lbtype: lb,
                    elem,
                    brtype,
                    version,
                },
            )?;
            Ok(())
        })
    }

    /// Removes a label from an element.
    pub fn rmlabel(&self, lbtype: &str, path: &str) -> Result<()> {
        self.check_writable()?;
        let v = self.view();
        let lb = v.resolve(NameKind::LbType, lbtype)?;
        self.require_master(&ObjectRef::LbType(lb), &format!("lbtype:{lbtype}"))?;
        let el = v.element_by_path(path)?;
        if !v.labels(&el.id)?.iter().any(|l| l.lbtype == lb) {
            return Err(CoreError::NotFound(format!("label {lbtype} on {path}")));
        }
        self.local_change(|r, t, ap| {
            r.append_local(
                t,
                ap,
                Op::RmLabel {
                    lbtype: lb,
                    elem: el.id,
                },
            )?;
            Ok(())
        })
    }

    /// Removes an element's name (history stays).
    pub fn rmname(&self, path: &str) -> Result<()> {
        self.check_writable()?;
        let el = self.view().element_by_path(path)?;
        self.require_master(&ObjectRef::Element(el.id), &format!("elem:{path}"))?;
        self.local_change(|r, t, ap| {
            r.append_local(t, ap, Op::RmName { elem: el.id })?;
            Ok(())
        })
    }

    /// Resolves a selector to the object it names.
    pub fn resolve_selector(&self, sel: &Selector) -> Result<ObjectRef> {
        let v = self.view();
        Ok(match sel {
            Selector::Replica(n) => ObjectRef::Replica(v.replica_by_name(n)?),
            Selector::BrType(n) => ObjectRef::BrType(v.resolve(NameKind::BrType, n)?),
            Selector::LbType(n) => ObjectRef::LbType(v.resolve(NameKind::LbType, n)?),
            Selector::Elem(p) => ObjectRef::Element(v.element_by_path(p)?.id),
            Selector::Branch(p, b) => {
                let el = v.element_by_path(p)?;
                let bt = v.resolve(NameKind::BrType, b)?;
                if v.branch(&el.id, &bt)?.is_none() {
                    return Err(CoreError::NotFound(format!("branch:{p}@@{b}")));
                }
                ObjectRef::Branch {
                    elem: el.id,
                    brtype: bt,
                }
            }
        })
    }

    /// Hands an object mastered here to `to`.
    pub fn chmaster(&self, sel: &str, to: &str) -> Result<()> {
        self.check_writable()?;
        let s = Selector::parse(sel)?;
        let object = self.resolve_selector(&s)?;
        let to = self.view().replica_by_name(to)?;
        self.require_master(&object, sel)?;
        if to == self.me {
            return Err(CoreError::Invalid(format!(
                "{sel} is already mastered by this replica"
            )));
        }
        self.local_change(|r, t, ap| {
            r.append_local(t, ap, Op::ChMaster { object, master: to })?;
            Ok(())
        })?;
        self.clear_master_requests(&object)
    }

    /// Asks the master of an object for mastership; the request travels in packets.
    pub fn reqmaster(&self, sel: &str) -> Result<String> {
        self.check_writable()?;
        let s = Selector::parse(sel)?;
        let object = self.resolve_selector(&s)?;
        let master = self.view().master_of(&object)?;
        if master == self.me {
            return Err(CoreError::Invalid(format!(
                "{sel} is already mastered by this replica"
            )));
        }
        self.local_change(|r, t, ap| {
            r.append_local(
                t,
                ap,
                Op::ReqMaster {
                    object,
                    requester: r.me,
                },
            )?;
            // Asking again replaces an earlier refusal's notice.
            crate::denied::clear(t, &object);
            Ok(())
        })?;
        Ok(self.replica_name(&master))
    }

    /// Sets the keepalive interval: after this long without a packet to a sibling, an export
    /// with nothing new sends a probe (docs/protocol.md, "Keepalive"). Local, not replicated.
    pub fn set_keepalive_ms(&self, ms: u64) -> Result<()> {
        crate::store::StoreExt::put_one(
            &self.store,
            Keyspace::Meta,
            keys::KEEPALIVE,
            &ms.max(1).to_be_bytes(),
            WriteOptions::SYNC,
        )?;
        Ok(())
    }

    /// The keepalive interval in milliseconds.
    pub fn keepalive_ms(&self) -> Result<u64> {
        Ok(match self.store.get(Keyspace::Meta, keys::KEEPALIVE)? {
            Some(v) => be_u64(&v)?,
            None => keys::DEFAULT_KEEPALIVE_MS,
        })
    }

    /// Sets the resend interval, for every sibling (`target` None) or for one: an export
    /// with nothing new resends entries a sibling has not acknowledged only this long after
    /// the last packet that carried entries to it, unless the sibling reported a gap
    /// (docs/protocol.md §5, "Resends"). Local, not replicated.
    pub fn set_resend_ms(&self, target: Option<&ReplicaId>, ms: u64) -> Result<()> {
        let key = match target {
            Some(t) => keys::peer(keys::peers::RESEND, t),
            None => keys::RESEND.to_vec(),
        };
        let space = match target {
            Some(_) => Keyspace::Peers,
            None => Keyspace::Meta,
        };
        crate::store::StoreExt::put_one(
            &self.store,
            space,
            &key,
            &ms.max(1).to_be_bytes(),
            WriteOptions::SYNC,
        )?;
        Ok(())
    }

    /// The replica's resend interval in milliseconds, for siblings without one of their own
    /// (absent: [`keys::DEFAULT_RESEND_MS`]).
    pub fn site_resend_ms(&self) -> Result<u64> {
        Ok(match self.store.get(Keyspace::Meta, keys::RESEND)? {
            Some(v) => be_u64(&v)?,
            None => keys::DEFAULT_RESEND_MS,
        })
    }

    /// The resend interval in milliseconds for `target` (its own if set, else the
    /// replica's, else [`keys::DEFAULT_RESEND_MS`]).
    pub fn resend_ms(&self, target: &ReplicaId) -> Result<u64> {
        let own = self
            .store
            .get(Keyspace::Peers, &keys::peer(keys::peers::RESEND, target))?;
        match own {
            Some(v) => Ok(be_u64(&v)?),
            None => self.site_resend_ms(),
        }
    }

    /// Sets the policy for mastership requests that reach this replica.
    pub fn set_reqmaster_policy(&self, p: ReqMasterPolicy) -> Result<()> {
        use crate::store::StoreExt;
        self.store.put_one(
            Keyspace::Meta,
            keys::REQMASTER_POLICY,
            &[p.byte()],
            WriteOptions::SYNC,
        )?;
        Ok(())
    }

    /// The policy for mastership requests.
    pub fn reqmaster_policy(&self) -> Result<ReqMasterPolicy> {
        Ok(
            match self
                .store
                .get(Keyspace::Meta, keys::REQMASTER_POLICY)?
                .as_deref()
            {
                Some([1]) => ReqMasterPolicy::Deny,
                Some([2]) => ReqMasterPolicy::Manual,
                _ => ReqMasterPolicy::Allow,
            },
        )
    }

    /// Mastership requests waiting for the operator: (object, requester).
    pub fn pending_master_requests(&self) -> Result<Vec<(ObjectRef, ReplicaId)>> {
        let mut out = Vec::new();
        for kv in self.store.scan(
            Keyspace::Peers,
            KeyRange::prefix(&[keys::peers::MASTER_REQUEST]),
        )? {
            let (_, v) = kv?;
            let mut d = Dec::new(&v, "master request");
            let obj = decode_objref(&mut d)?;
            let req = d.rid()?;
            out.push((obj, req));
        }
        Ok(out)
    }

    fn clear_master_requests(&self, object: &ObjectRef) -> Result<()> {
        let p = master_request_prefix(object);
        let mut txn = Txn::new(&self.store);
        for (k, _) in txn.scan_prefix(Keyspace::Peers, &p)? {
            txn.delete(Keyspace::Peers, &k);
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }
}

pub(crate) fn identity(family: &FamilyId, family_name: &str, me: &ReplicaId) -> Vec<u8> {
    Enc::new().raw(&family.0).str(family_name).rid(me).done()
}

pub(crate) fn encode_objref(e: Enc, o: &ObjectRef) -> Enc {
    match o {
        ObjectRef::Replica(r) => e.u8(0).rid(r),
        ObjectRef::BrType(id) => e.u8(1).oid(id),
        ObjectRef::LbType(id) => e.u8(2).oid(id),
        ObjectRef::Element(id) => e.u8(3).oid(id),
        ObjectRef::Branch { elem, brtype } => e.u8(4).oid(elem).oid(brtype),
    }
}

pub(crate) fn decode_objref(d: &mut Dec<'_>) -> Result<ObjectRef> {
    Ok(match d.u8()? {
        0 => ObjectRef::Replica(d.rid()?),
        1 => ObjectRef::BrType(d.oid()?),
        2 => ObjectRef::LbType(d.oid()?),
        3 => ObjectRef::Element(d.oid()?),
        4 => ObjectRef::Branch {
            elem: d.oid()?,
            brtype: d.oid()?,
        },
        _ => {
            return Err(CoreError::Codec(crate::codec::CodecError {
                what: "object reference",
            }))
        }
    })
}

pub(crate) fn master_request_prefix(o: &ObjectRef) -> Vec<u8> {
    let mut k = vec![keys::peers::MASTER_REQUEST];
    k.extend_from_slice(&encode_objref(Enc::new(), o).done());
    k
}

fn txn_resolve<S: Store>(txn: &Txn<'_, S>, kind: NameKind, name: &str) -> Result<ObjId> {
    let tag = match kind {
        NameKind::Replica => b'R',
        NameKind::BrType => b'B',
        NameKind::LbType => b'L',
        NameKind::Element => b'E',
    };
    let mut p = vec![b'N', tag];
    p.extend_from_slice(name.as_bytes());
    p.push(0);
    for (k, _) in txn.scan_prefix(Keyspace::State, &p)? {
        if let Some(id) = ObjId::from_bytes(&k[p.len()..]) {
            return Ok(id);
        }
    }
    // NAME@REPLICA falls back to the read-only resolver (no new types are made in a txn).
    View::new(txn.store()).resolve(kind, name)
}

fn txn_element_by_path<S: Store>(txn: &Txn<'_, S>, path: &str) -> Result<Option<ObjId>> {
    let mut p = vec![b'N', b'E'];
    p.extend_from_slice(path.as_bytes());
    p.push(0);
    for (k, _) in txn.scan_prefix(Keyspace::State, &p)? {
        if let Some(id) = ObjId::from_bytes(&k[p.len()..]) {
            let mut ek = vec![b'E'];
            ek.extend_from_slice(&id.to_bytes());
            if let Some(v) = txn.get(Keyspace::State, &ek)? {
                let mut d = Dec::new(&v, "element");
                d.str()?;
                d.rid()?;
                if !d.bool()? {
                    return Ok(Some(id));
                }
            }
        }
    }
    Ok(None)
}

/// Refuses an author or a comment of a check-in with control characters (a comment may span
/// lines and hold tabs).
fn check_text(author: &str, comment: &str) -> Result<()> {
    no_control("author name", author)?;
    no_control_but("comment", comment, &['\n', '\t'])
}

/// Normalises an element path: forward slashes, no leading `./` or `/`, no empty or `..`
/// components.
pub fn normalize_path(p: &str) -> Result<String> {
    no_control("element path", p)?;
    let parts: Vec<&str> = p
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.iter().any(|c| *c == ".." || c.contains('\0')) || p.contains("@@")
    {
        return Err(CoreError::Invalid(format!(
            "`{p}` is not a valid element path (use a relative path like src/main.c, without `..` or `@@`)"
        )));
    }
    Ok(parts.join("/"))
}

fn walk(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| CoreError::io(format!("reading {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(CoreError::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d)
            .map_err(|e| CoreError::io(format!("reading {}", d.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| CoreError::io(format!("reading {}", d.display()), e))?;
            let ft = ent
                .file_type()
                .map_err(|e| CoreError::io(format!("reading {}", ent.path().display()), e))?;
            let path = ent.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path.strip_prefix(dir).map_err(|_| {
                    CoreError::Invalid(format!("{} is outside {}", path.display(), dir.display()))
                })?;
                let rel = rel.to_string_lossy().replace('\\', "/");
                out.push((normalize_path(&rel)?, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use std::sync::Arc;

    use crate::testkit::MemStore;
    use crate::{CoreError, Env, Replica, SimEnv};

    /// Every local change that names something refuses control characters, naming the
    /// character as an escape; a comment may span lines.
    #[test]
    fn names_with_control_characters_are_refused_at_creation() {
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(3));
        let bad = Replica::init(MemStore::new(), env.clone(), "fam", "r\u{1b}[2J");
        assert!(
            matches!(bad, Err(CoreError::Invalid(m)) if m.contains("control character \\u{1b}"))
        );
        let r = Replica::init(MemStore::new(), env, "fam", "r0").unwrap();
        let before = r.digest().unwrap();
        let errors = [
            r.mkbrtype("dev\n").unwrap_err(),
            r.mklbtype("REL\r").unwrap_err(),
            r.mkelem("src/\u{7}.c").unwrap_err(),
            r.checkin("a.c", "main", b"x", "me\u{1b}", "c").unwrap_err(),
            r.checkin("a.c", "main", b"x", "me", "c\u{1b}[31m")
                .unwrap_err(),
            r.plan_mkreplica("tok\tyo", &[7; 32]).unwrap_err(),
        ];
        for (e, shown) in errors
            .iter()
            .zip(["\\n", "\\r", "\\u{7}", "\\u{1b}", "\\u{1b}", "\\t"])
        {
            let m = e.to_string();
            assert!(
                m.contains(&format!("the control character {shown};")),
                "{m}"
            );
            assert!(!m.chars().any(char::is_control), "{m:?}");
        }
        assert_eq!(r.digest().unwrap(), before);
        r.checkin("a.c", "main", b"x", "me", "two\nlines\tand a tab")
            .unwrap();
    }

    /// Oplog records are written in the current layout (smaller than the earlier one by the
    /// entry hash and, for a check-in, the content hash) and records in the earlier layout,
    /// as stores written before it hold, read back the same: a replica whose oplog was
    /// rewritten in the earlier layout still makes a new replica with its state.
    #[test]
    fn oplog_records_of_both_layouts_read_back_the_same() {
        use super::StoredEntry;
        use crate::model::{Entry, Op};
        use crate::store::{KeyRange, Keyspace, ReadView, Store, WriteBatch, WriteOptions};
        let env: Arc<dyn Env> = Arc::new(SimEnv::new(3));
        let r = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
        r.checkin("a.c", "main", b"one", "me", "c").unwrap();
        r.checkin("a.c", "main", b"two", "me", "c").unwrap();
        let records: Vec<(Vec<u8>, Vec<u8>)> = r
            .store()
            .scan(Keyspace::Oplog, KeyRange::all())
            .unwrap()
            .map(|kv| kv.unwrap())
            .collect();
        let mut checkins = 0;
        let mut old = r.store().batch();
        for (k, v) in &records {
            let s = StoredEntry::decode(v).unwrap();
            let e = Entry::decode_verified(&s.canonical).unwrap();
            let content = match &e.op {
                Op::Checkin { content, .. } => Some(*content),
                _ => None,
            };
            checkins += usize::from(content.is_some());
            assert_eq!((s.hash, s.blob), (e.hash, content));
            let v1 = StoredEntry::encode_v1(s.lsn, &e, &s.canonical);
            assert_eq!(v1.len(), v.len() + if content.is_some() { 62 } else { 32 });
            let s1 = StoredEntry::decode(&v1).unwrap();
            assert_eq!(
                (s1.lsn, s1.hash, s1.blob, &s1.canonical),
                (s.lsn, s.hash, s.blob, &s.canonical)
            );
            old.put(Keyspace::Oplog, k, &v1);
        }
        assert_eq!(checkins, 2);
        r.store().write(old, WriteOptions::SYNC).unwrap();
        let copy = crate::testkit::mkreplica_in_memory(&r, "r1", env).unwrap();
        assert_eq!(copy.digest().unwrap(), r.digest().unwrap());
        let damaged = [&records[0].1[..8], &[9u8], &records[0].1[9..]].concat();
        assert!(
            StoredEntry::decode(&damaged).is_err(),
            "an unknown tag is an error"
        );
    }
}
