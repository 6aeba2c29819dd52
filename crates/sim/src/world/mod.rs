//! One simulated family and the schedule that drives it.
//!
//! # A schedule
//! The seed draws the parameters ([`Params`]): how many replicas (2–7, some created
//! mid-run), a topology (mesh, hub or chain, some links one-way), fault rates, which kinds of
//! restore may happen, and how many random steps run. Each step is one action: a local change
//! at a random replica, an export along a link into that link's in-flight pool (where it may
//! be lost, duplicated or corrupted), a delivery of a random packet of a pool (so packets are
//! delayed and reordered), a retry of the packets waiting in a replica's incoming bay, a
//! backup, a restore or a snapshot rollback, a new replica, or an operator running
//! `restorereplica` on a locked replica, and the retirement of a replica (see [`retire`]). Any write to a replica's store may fail (an armed
//! [`FaultPlan`]); the replica is then restarted by reopening its store, and a packet whose
//! import crashed stays in the incoming bay to be imported again.
//!
//! # Healing and the invariants (PROTOCOL §8)
//! After the random phase every packet in flight is delivered, locked replicas get
//! `restorereplica` (as an operator would), and every replica exports to every neighbour (all
//! links two-way) and the target imports at once, round after round, until nothing moves.
//! Checked continuously: no reuse (every `(origin, number)` any replica holds names one
//! entry), no stale apply (an applied packet never believed an older incarnation of its target
//! or of its sender than the target had), a refused or corrupted packet changes nothing, and
//! after every crash the own row matches the oplog. Checked at the end: convergence (equal
//! own rows and digests), no loss (every entry that reached a replica other than its origin
//! is held everywhere), completion (no replica recovering, no held requests or provisional
//! acknowledgements left), and integrity of every replica.
//!
//! # Lossy schedules
//! `--override`, an explicit `--wait-for` set, and a snapshot-rolled-back replica that makes a
//! local change before a sibling's packet reveals the rollback may lose entries by design.
//! Such a schedule is *lossy*: "no loss" is not checked, and a reused number is allowed only
//! if some import reported it (a divergent or rolled-back refusal naming that origin). When
//! two live replicas still hold different entries under one number after healing, the
//! operator repairs the fork (`msite repairfork` at the first differing number, at a replica
//! holding one timeline, keeping it or the other; counted as `fork_repairs`) and the family
//! heals again. Only if live conflicts remain after that is convergence and completion not
//! checked (counted as `unconvergeable`).

mod checks;
mod delivery;
mod diagnose;
mod dump;
mod forks;
mod heal;
mod observe;
mod packets;
mod params;
mod replicas;
mod restore;
mod retention;
mod retire;
mod rotation;
mod steps;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use msite_core::testkit::{FaultPlan, FaultyStore};
use msite_core::{CoreError, Env, Hash, ReplicaId, Row, SimEnv};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::backend::SimBackend;
use crate::ledger::Ledger;
use crate::{Config, Outcome, Stats};

pub use diagnose::{FIXED_BUGS, KNOWN_BUGS};
pub use params::{Params, Topology};

/// A replica of the family, on its backend's store under the fault-injecting wrapper.
type Rep<B> = msite_core::Replica<FaultyStore<<B as SimBackend>::Store>>;

/// The most replicas a family has.
pub const MAX_SITES: usize = 7;
/// Heal rounds (every link, both ways) before "did not converge".
pub const HEAL_ROUNDS: usize = 80;

/// How a restored replica runs `restorereplica`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    Default,
    WaitFor(Vec<ReplicaId>),
    Override,
}

#[derive(Clone, Debug)]
struct Packet {
    serial: u64,
    from: usize,
    to: usize,
    parts: Vec<Vec<u8>>,
    born: usize,
    corrupt: bool,
    /// Forged by a malicious relay or a third party (see `forge`); also `corrupt`.
    forged: bool,
}

struct Backup<T> {
    step: usize,
    /// The simulated time it was taken (the operator restores only backups younger than
    /// half the restore window when scrubs run).
    at_ms: u64,
    store: T,
}

struct Site<B: SimBackend> {
    name: String,
    id: ReplicaId,
    rep: Option<Rep<B>>,
    plan: FaultPlan,
    backups: Vec<Backup<B::Backup>>,
    bay: Vec<Packet>,
    observed: Row,
    /// Ever rolled back by a snapshot (rolled-back refusals are then expected).
    snapshot_rolled: bool,
    /// Rolled back by a snapshot and not yet detected nor repaired.
    undetected_rollback: bool,
    /// Siblings' incarnations the replica knew before its latest snapshot rollback (the copy
    /// may have forgotten some; K25).
    incarnations_before_rollback: BTreeMap<ReplicaId, u64>,
    /// Whether the replica was recovering when last observed (an import that gives up retired
    /// entries may also complete the restoration).
    recovering_when_observed: bool,
    /// The site whose replica made this one (`mkreplica`); its operator knows.
    created_by: Option<usize>,
    /// When the copy this site runs on was taken (restored or rolled back; retention only).
    copy_taken_ms: Option<u64>,
    /// When a scrub here last dropped entries.
    scrub_dropped_ms: Option<u64>,
    /// Restored (marked); `restorereplica` not yet run, with this mode.
    pending: Option<Mode>,
    /// The store is a copy put back by a restore or rollback, and `restorereplica` has not
    /// run on it yet.
    pending_copy: bool,
    /// Ran `restorereplica` while its store did not know some existing sibling.
    forgot_siblings: bool,
    /// Restored from a backup taken while it recovered, and `restorereplica` amended that
    /// recovery (kept its incarnation).
    amended_copy: bool,
    /// Closed for good: a fork decision gave up the entry that created it (docs/protocol.md
    /// "Divergence and fork repair", the limit); it exchanges nothing and is no survivor.
    stranded: bool,
}

/// The simulated family.
pub struct World<B: SimBackend> {
    rng: ChaCha8Rng,
    env: SimEnv,
    p: Params,
    sites: Vec<Site<B>>,
    links: BTreeMap<(usize, usize), Vec<Packet>>,
    edges: BTreeSet<(usize, usize)>,
    step: usize,
    serial: u64,
    stats: Stats,
    violations: Vec<String>,
    trace: Vec<String>,
    verbose: bool,
    ledger: Ledger,
    lossy: Vec<String>,
    /// Whether a scrub has dropped entries in this schedule (restores after it are counted).
    scrubbed_any: bool,
    /// A site needs entries a scrub dropped after its copy was a window old: outside the
    /// retention guarantee, so it cannot converge (see `behind_retention`).
    beyond_window: bool,
    /// Origins some import reported a conflict for.
    reported: BTreeSet<ReplicaId>,
    /// (sender, target) site pairs between which a packet was ever delivered (applied or not).
    exchanged: BTreeSet<(usize, usize)>,
    seed: u64,
    /// Known protocol bugs this schedule's violations match (see [`KNOWN_BUGS`]).
    known: BTreeSet<&'static str>,
    /// The schedule's retirement of a replica, if it draws one.
    retire: retire::Retire,
    /// Where the stores come from (last: dropped after the replicas, with their directories).
    backend: B,
}

/// The simulated environment as the replicas take it.
fn env_arc(env: &SimEnv) -> Arc<dyn Env> {
    Arc::new(env.clone())
}

/// An error's message, cut to 160 characters for the trace.
fn short(e: &CoreError) -> String {
    let s = e.to_string();
    if s.len() > 160 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(160).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

/// Whether a local command's error is one it may give (not master, exists, not found,
/// locked, invalid) rather than a failure.
fn is_refusal_of_local_change(e: &CoreError) -> bool {
    matches!(
        e,
        CoreError::NotMaster { .. }
            | CoreError::Exists(_)
            | CoreError::NotFound(_)
            | CoreError::Locked(_)
            | CoreError::Invalid(_)
    )
}

impl<B: SimBackend> World<B> {
    /// Runs the schedule `cfg` describes on stores of `backend`: the random phase (stopped
    /// early after 20 violations), then, if nothing was violated, healing, fork repairs and
    /// the final checks; a failing schedule's state is dumped and diagnosed.
    pub fn run(cfg: &Config, backend: B) -> Outcome {
        let mut w = World::new(cfg, backend);
        w.ev(|w| format!("params: {:?}", w.p));
        w.setup();
        for step in 0..w.p.steps {
            w.step = step + 1;
            w.random_step();
            if w.violations.len() > 20 {
                break;
            }
        }
        w.stats.steps = w.p.steps as u64;
        if w.violations.is_empty() {
            w.heal();
            w.repair_forks();
            w.close_stranded_replicas();
            w.finish_retirement();
            w.final_checks();
            w.check_retirement();
        }
        if !w.lossy.is_empty() {
            w.stats.lossy = 1;
        }
        if !w.violations.is_empty() {
            w.dump_state();
            w.diagnose();
        }
        Outcome {
            seed: w.seed,
            violations: w.violations,
            stats: w.stats,
            trace: w.trace,
            steps: w.p.steps,
            replicas: w.p.max_sites,
            known: w.known.into_iter().collect(),
        }
    }

    /// An empty family for `cfg`: the seed's generator, whose first draws are the schedule's
    /// parameters, and the simulated clock.
    fn new(cfg: &Config, backend: B) -> World<B> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let p = Params::draw(&mut rng, cfg);
        let retire = retire::Retire::draw(cfg.seed, p.steps, cfg.profile.retires());
        World {
            rng,
            env: SimEnv::new(cfg.seed),
            p,
            sites: Vec::new(),
            links: BTreeMap::new(),
            edges: BTreeSet::new(),
            step: 0,
            serial: 0,
            stats: Stats {
                schedules: 1,
                ..Default::default()
            },
            violations: Vec::new(),
            trace: Vec::new(),
            verbose: cfg.verbose,
            ledger: Ledger::default(),
            lossy: Vec::new(),
            scrubbed_any: false,
            beyond_window: false,
            reported: BTreeSet::new(),
            exchanged: BTreeSet::new(),
            seed: cfg.seed,
            known: BTreeSet::new(),
            retire,
            backend,
        }
    }

    /// Traces an event (verbose runs only; `f` is not called otherwise).
    fn ev(&mut self, f: impl FnOnce(&Self) -> String) {
        if self.verbose {
            let s = f(self);
            self.trace.push(format!("[{:>3}] {s}", self.step));
        }
    }

    /// Records a violation at the current step.
    fn violation(&mut self, s: String) {
        let s = format!("step {}: {s}", self.step);
        if self.verbose {
            self.trace.push(format!("[{:>3}] VIOLATION {s}", self.step));
        }
        self.violations.push(s);
    }

    /// Site `i`'s replica (always present between calls).
    fn rep(&self, i: usize) -> &Rep<B> {
        self.sites[i].rep.as_ref().expect("replica present")
    }

    /// The site name of replica `id` (its short id if no site has it).
    fn name_of(&self, id: &ReplicaId) -> String {
        self.sites
            .iter()
            .find(|s| s.id == *id)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| id.short())
    }

    /// Makes the schedule lossy from here on, for reason `why`.
    fn set_lossy(&mut self, why: String) {
        self.ev(|_| format!("schedule is lossy from here: {why}"));
        self.lossy.push(why);
    }
}

/// The first four bytes of a hash, in hex.
fn short_hash(h: &Hash) -> String {
    h[..4].iter().map(|b| format!("{b:02x}")).collect()
}
