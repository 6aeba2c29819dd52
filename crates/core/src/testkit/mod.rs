//! Test support shared by every backend and by the simulator: the in-memory reference store,
//! the fault-injecting wrapper, the one conformance suite and the protocol scenarios.
//!
//! * [`MemStore`]: the reference [`Store`](crate::store::Store), a `BTreeMap` per keyspace.
//!   Pure in memory ([`MemStore::new`]) for the simulator and unit tests, or backed by a
//!   checksummed log in a directory ([`MemStore::open`]) so that it can pass the whole
//!   conformance suite, durability and corruption detection included.
//! * [`FaultyStore`]: wraps any store and, driven by a shared [`FaultPlan`], fails chosen
//!   writes, poisons itself after a failed durable write, and simulates crashes that lose
//!   unsynced writes or tear the last one.
//! * [`bench`]: the store-ceiling workload every backend's benchmark runs.
//! * [`conformance`]: the one suite every backend must pass, stamped into a backend's tests by
//!   [`store_conformance_tests!`](crate::store_conformance_tests).
//! * [`mkreplica_in_memory`]: a new in-memory replica made from another through the real
//!   creation packet, for unit tests.
//! * [`scenarios`]: multi-replica protocol scenarios (sync, mastership, restore and its hard
//!   cases) that every backend runs too, stamped by
//!   [`protocol_scenario_tests!`](crate::protocol_scenario_tests).

pub mod bench;
pub mod conformance;
mod faulty;
mod mem;
pub mod scenarios;

use std::sync::Arc;

use crate::{Env, Incoming, Replica};

/// A new in-memory replica named `name`, created from `from` through the real creation packet
/// (what `mkreplica export` at `from` and `mkreplica import` at the new site do).
pub fn mkreplica_in_memory(
    from: &Replica<MemStore>,
    name: &str,
    env: Arc<dyn Env>,
) -> crate::Result<Replica<MemStore>> {
    let key = crate::SiteKey::generate(env.as_ref());
    let plan = from.plan_mkreplica(name, &key.public())?;
    let parts = from.write_plan_to_parts(&plan, None)?;
    Replica::create_from_packet(
        MemStore::new(),
        env,
        Incoming::from_parts(parts, "creation")?,
        &key,
    )
}

pub use faulty::{Crash, FaultPlan, FaultyBatch, FaultyStore, JOURNAL_LIMIT};
pub use mem::{MemBatch, MemIter, MemSnapshot, MemStore};
