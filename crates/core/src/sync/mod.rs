//! Synchronisation (PROTOCOL §3–7), one concern per module:
//!
//! - [`packet`]: writing a plan's records into part files or memory, reading a packet's parts
//!   back as one stream ([`Incoming`]).
//! - [`delta`]: which content travels as a delta against a base the target holds.
//! - [`export`]: planning the next update packet to a target ([`ExportPlan`]).
//! - [`assess`]: the checks of §4 steps 1–5 on a header ([`Assessment`]).
//! - [`import`]: importing a packet, refused or applied ([`ImportOutcome`]): the pipeline.
//! - [`apply`]: the apply loop, each entry checked against what is held, then applied.
//! - [`ack`]: acknowledgements and reports, the resending of lost packets (§5).
//! - [`controls`]: restore requests, provisional acknowledgements and mastership requests a
//!   packet carries.
//! - [`create`]: replica creation (§7).
//! - [`snapshot`]: snapshot creation: the object base as rows, bulk-loaded (§7, format 1.4).
//! - [`row_batch`]: rows handed between the two threads of a snapshot export or load, in reused
//!   buffers.
//! - [`trust`]: signing keys, packet signatures and origin-signed chain heads.
//! - [`decisions`]: fork repair decisions signed by their decider (format 1.5).
//! - [`rekey`]: key rotation (`msite rekey`) and vouching for a lost key (`msite vouch`).
//! - [`reports`]: siblings' signed statements of their rows, relayed to a restoring replica so
//!   that its estimates of siblings it never hears from directly rise on evidence.
//! - [`sitekey`]: a new replica's key, announced in the entries that create it.
//! - [`sealing`]: the family's sealing policy and the replicas' age recipients.

mod ack;
mod apply;
mod assess;
mod controls;
mod create;
mod decisions;
mod delta;
mod export;
mod import;
mod packet;
mod rekey;
mod reports;
mod row_batch;
pub(crate) mod sealing;
mod sitekey;
pub(crate) mod snapshot;
mod trust;

pub use assess::{Assessment, Need};
pub(crate) use decisions::DecisionCheck;
pub use export::ExportPlan;
pub use import::ImportOutcome;
pub use packet::{ExportOutcome, Incoming, RecordSink};
pub use sealing::SealPolicy;
pub use sitekey::{parse_public_key, SiteKey};
pub use snapshot::{interrupted_creation, CREATING};
pub(crate) use trust::ensure_signing_key;
pub use trust::{fingerprint, signature_status_listed, SignatureStatus};

use std::collections::BTreeMap;

use crate::error::Result;
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::Row;
use crate::replica::{get_u64, read_row, Replica};
use crate::store::{Keyspace, Store};

impl<S: Store> Replica<S> {
    /// The epoch matrix: own row, then each sibling's estimate row.
    pub fn epoch_matrix(&self) -> Result<Vec<(ReplicaId, Row)>> {
        let mut out = vec![(self.me, self.own_row()?)];
        let retired = self.retired()?;
        for r in self.view().replicas()? {
            if r.id != self.me && !retired.contains(&r.id) {
                out.push((r.id, self.estimate(&r.id)?));
            }
        }
        Ok(out)
    }

    /// What `target` holds by its own latest report (its packet's sender row), if it ever
    /// reported on our current incarnation (retention counts only what siblings say).
    pub fn reported_row(&self, target: &ReplicaId) -> Result<Option<Row>> {
        let send = Self::send_state(&self.store, target)?;
        Ok(send.have_report.then_some(send.reported_row))
    }

    /// Local apply sequence of the last applied entry (for tests).
    pub fn last_lsn(&self) -> Result<u64> {
        Ok(get_u64(&self.store, Keyspace::Meta, keys::NEXT_LSN)?.saturating_sub(1))
    }

    /// The own row as a plain map (for tests and listings).
    pub fn own_row_map(&self) -> Result<BTreeMap<ReplicaId, u64>> {
        Ok(read_row(&self.store, keys::OWN_PREFIX)?.0)
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests;
