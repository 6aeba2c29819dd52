//! A replica: its identity, and the one way a local change is made (check the replica is
//! writable, append an entry to the own oplog in one durable transaction).
//!
//! The other concerns of a replica live beside this file, one each:
//! - `oplog.rs`: how an entry is stored (record layout, the appender) and read back;
//! - `epochs.rs`: the own row, estimate rows and recorded incarnations;
//! - `names.rs`: selectors, version selectors and the rules for names, paths and texts;
//! - `changes.rs`: the local changes of the versioned object base (types, elements, check-ins,
//!   labels) and reading a version's content;
//! - `mastership.rs`: handing over and asking for mastership, and the policy for requests;
//! - `settings.rs`: local, unreplicated settings (keepalive, resends, version size, policy).
//!
//! Synchronisation lives in [`crate::sync`], restoration in [`crate::restore`].

mod changes;
mod epochs;
mod mastership;
mod names;
mod oplog;
mod settings;

pub use changes::TreeImport;
pub use mastership::ReqMasterPolicy;
pub use names::{normalize_path, Selector, VersionSel};

pub(crate) use epochs::{get_u64, read_row};
pub(crate) use mastership::{decode_objref, encode_objref, master_request_prefix};
pub(crate) use names::no_control;
pub(crate) use oplog::{Appender, StoredEntry};

use std::sync::Arc;

use crate::codec::{Dec, Enc};
use crate::env::Env;
use crate::error::{CoreError, Result};
use crate::ids::{FamilyId, Hash, ReplicaId, ZERO_HASH};
use crate::keys;
use crate::model::{Entry, Op};
use crate::store::{Keyspace, Store, WriteOptions};
use crate::txn::Txn;
use crate::vob::{self, View};

use names::validate_name;

/// A replica of a family, over a store.
pub struct Replica<S: Store> {
    pub(crate) store: S,
    pub(crate) env: Arc<dyn Env>,
    pub(crate) me: ReplicaId,
    pub(crate) family: FamilyId,
    pub(crate) family_name: String,
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

    /// The state digest.
    pub fn digest(&self) -> Result<Hash> {
        let snap = self.store.snapshot()?;
        vob::digest(&snap)
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
}

pub(crate) fn identity(family: &FamilyId, family_name: &str, me: &ReplicaId) -> Vec<u8> {
    Enc::new().raw(&family.0).str(family_name).rid(me).done()
}
