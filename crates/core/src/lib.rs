//! `msite-core`: the replication protocol and the versioned object base of msite.
//!
//! Everything here is written over the [`store::Store`] trait and never names a storage
//! engine (an xtask tidy test enforces that the dependency tree holds none). Packets are
//! encoded by `msite-packet`; this crate converts its domain types to the wire types there.
#![deny(missing_docs)]

pub mod store;

#[cfg(feature = "testkit")]
pub mod testkit;

pub mod codec;
pub mod content;
pub mod denied;
pub mod env;
pub mod error;
pub mod fork;
pub mod ids;
pub mod keys;
pub mod model;
pub mod packed;
pub mod replica;
pub mod restore;
pub mod retain;
pub mod retire;
pub mod sync;
pub mod txn;
pub mod vob;

pub use env::{incarnation_text, utc_millis, utc_seconds, Env, SimEnv, SystemEnv};
pub use error::{CoreError, Refusal, Result};
pub use fork::{ForkDecision, ForkRepair, GivenUp, KeepTimeline};
pub use ids::{FamilyId, Hash, ObjId, PacketId, ReplicaId};
pub use model::{Entry, ObjectRef, Op, Row};
pub use replica::{Replica, ReqMasterPolicy, Selector, TreeImport, VersionSel};
pub use restore::{HeldRequest, ProvisionalAck, Recovering, RestoreStart, Status, UnheldOwn};
pub use sync::{
    Assessment, ExportOutcome, ExportPlan, ImportOutcome, Incoming, Need, RecordSink, SealPolicy,
    SiteKey,
};
