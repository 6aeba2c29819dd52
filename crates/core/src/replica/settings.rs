//! Local settings of a replica, not replicated: the keepalive and resend intervals, the
//! largest version accepted, and the policy for mastership requests.

use crate::codec::be_u64;
use crate::content;
use crate::error::Result;
use crate::ids::ReplicaId;
use crate::keys;
use crate::store::{Keyspace, Store, WriteOptions};

use super::{Replica, ReqMasterPolicy};

impl<S: Store> Replica<S> {
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
}
