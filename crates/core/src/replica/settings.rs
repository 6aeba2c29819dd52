//! Local settings of a replica, not replicated: the keepalive and resend intervals, the
//! largest version accepted, and the policy for mastership requests.

use crate::codec::be_u64;
use crate::content;
use crate::error::Result;
use crate::ids::ReplicaId;
use crate::keys;
use crate::store::{Keyspace, ReadView, Store, StoreExt, WriteOptions};

use super::{Replica, ReqMasterPolicy};

/// A local setting held as a u64 (big-endian) under one key: the value read when it was never
/// set is `default`.
#[derive(Clone, Copy)]
struct U64Setting {
    space: Keyspace,
    key: &'static [u8],
    default: u64,
}

impl U64Setting {
    const KEEPALIVE_MS: U64Setting = U64Setting {
        space: Keyspace::Meta,
        key: keys::KEEPALIVE,
        default: keys::DEFAULT_KEEPALIVE_MS,
    };
    const RESEND_MS: U64Setting = U64Setting {
        space: Keyspace::Meta,
        key: keys::RESEND,
        default: keys::DEFAULT_RESEND_MS,
    };
    const MAX_VERSION_BYTES: U64Setting = U64Setting {
        space: Keyspace::Meta,
        key: keys::MAX_VERSION_BYTES,
        default: content::DEFAULT_MAX_VERSION_BYTES,
    };

    /// The value held in `r`, or the default.
    fn get<R: ReadView + ?Sized>(self, r: &R) -> Result<u64> {
        Ok(match r.get(self.space, self.key)? {
            Some(v) => be_u64(&v)?,
            None => self.default,
        })
    }

    /// Writes `v`, durably.
    fn set<S: Store>(self, store: &S, v: u64) -> Result<()> {
        store.put_one(self.space, self.key, &v.to_be_bytes(), WriteOptions::SYNC)?;
        Ok(())
    }
}

impl<S: Store> Replica<S> {
    /// Sets the keepalive interval: after this long without a packet to a sibling, an export
    /// with nothing new sends a probe (docs/protocol.md, "Keepalive"). Local, not replicated.
    pub fn set_keepalive_ms(&self, ms: u64) -> Result<()> {
        U64Setting::KEEPALIVE_MS.set(&self.store, ms.max(1))
    }

    /// The keepalive interval in milliseconds.
    pub fn keepalive_ms(&self) -> Result<u64> {
        U64Setting::KEEPALIVE_MS.get(&self.store)
    }

    /// Sets the resend interval, for every sibling (`target` None) or for one: an export
    /// with nothing new resends entries a sibling has not acknowledged only this long after
    /// the last packet that carried entries to it, unless the sibling reported a gap
    /// (docs/protocol.md §5, "Resends"). Local, not replicated.
    pub fn set_resend_ms(&self, target: Option<&ReplicaId>, ms: u64) -> Result<()> {
        let Some(t) = target else {
            return U64Setting::RESEND_MS.set(&self.store, ms.max(1));
        };
        let key = keys::peer(keys::peers::RESEND, t);
        let v = ms.max(1).to_be_bytes();
        self.store
            .put_one(Keyspace::Peers, &key, &v, WriteOptions::SYNC)?;
        Ok(())
    }

    /// The replica's resend interval in milliseconds, for siblings without one of their own
    /// (absent: [`keys::DEFAULT_RESEND_MS`]).
    pub fn site_resend_ms(&self) -> Result<u64> {
        U64Setting::RESEND_MS.get(&self.store)
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

    /// Sets the largest version this replica accepts, at check-in and import. Local, not
    /// replicated.
    pub fn set_max_version_bytes(&self, bytes: u64) -> Result<()> {
        U64Setting::MAX_VERSION_BYTES.set(&self.store, bytes)
    }

    /// The largest version this replica accepts, in bytes.
    pub fn max_version_bytes(&self) -> Result<u64> {
        U64Setting::MAX_VERSION_BYTES.get(&self.store)
    }

    /// Sets the policy for mastership requests that reach this replica.
    pub fn set_reqmaster_policy(&self, p: ReqMasterPolicy) -> Result<()> {
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
}
