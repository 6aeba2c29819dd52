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
//! `restorereplica` on a locked replica. Any write to a replica's store may fail (an armed
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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use msite_core::testkit::{FaultPlan, FaultyStore};
use msite_core::{
    CoreError, Env, Hash, ImportOutcome, Incoming, Refusal, ReplicaId, ReqMasterPolicy, Row,
    SimEnv, VersionSel,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::SimBackend;
use crate::ledger::Ledger;
use crate::{Config, Outcome, Stats};

/// The body every small checked-in version shares after its own first line (so that a new
/// version is related to the one before it, and packets carry it as a delta).
const SHARED_BODY: &[u8] = b"fn shared() {\n    // the same lines in every version of every file\n    let a = 1;\n    let b = 2;\n    let c = a + b;\n    println!(\"{c}\");\n}\n// end of the shared body of simulated versions\n";

/// A replica of the family, on its backend's store under the fault-injecting wrapper.
type Rep<B> = msite_core::Replica<FaultyStore<<B as SimBackend>::Store>>;

/// Known bugs that core has fixed: their signatures no longer explain a failure.
pub const FIXED_BUGS: &[&str] = &[
    "K1", "K2", "K3", "K4", "K5", "K6", "K7", "K8", "K9", "K10", "K11", "K12", "K13", "K14", "K15",
    "K16",
];

/// Known protocol bugs: tag and one-line diagnosis (docs/testing.md has the details).
pub const KNOWN_BUGS: &[(&str, &str)] = &[
    (
        "K1",
        "FIXED (a7bce56, 1a6bba5, 57f780e): a replica never learned a neighbour's new incarnation; its packets to the restored neighbour were refused as stale forever, and the neighbour's packets that would teach it were refused as stale, waited or were refused as divergent. Every authentic header now teaches the sender's incarnation (stale, waiting, divergent or rolled-back outcome), and stale or waiting ones its own restore request",
    ),
    (
        "K2",
        "FIXED in a7bce56 (export to replicas not yet known): a replica could not export to a neighbour it did not know; with either of them recovering, the request or the acknowledgement never crossed that link",
    ),
    (
        "K3",
        "FIXED (9ca9ab3 headers; b8cc45e: packets name every sibling their sender knows; the case nothing can know is the operator's --also-wait-for, which the simulator's operator performs): a restore completes without waiting for a sibling its restored store does not know (created after the backup) that holds its lost entries, when no packet from it or naming it arrived before the known siblings answered; its next entries reuse their numbers",
    ),
    (
        "K4",
        "FIXED in a7bce56: a replica could not export to (so not acknowledge) a neighbour it did not know yet; when that neighbour's first packet was lost it was never resent",
    ),
    (
        "K5",
        "FIXED in e375191 (amending keeps acks): restorereplica run again while recovering re-added siblings whose flag had cleared; their acknowledgement never came again",
    ),
    (
        "K6",
        "FIXED in a7bce56 (relay entries while two restorations overlap): a recovering replica relayed no entries, so acknowledgements between two overlapping restorations never arrived",
    ),
    (
        "K7",
        "FIXED in e375191 (a restored store starts a new restoration): restorereplica on a store restored from a backup taken while recovering kept that recovery's incarnation, so siblings' estimates stayed too high and their packets waited forever",
    ),
    (
        "K8",
        "FIXED in a7bce56 (restore complete sets the estimate exactly): after --override or a partial --wait-for, a sibling that never saw the request kept a too high estimate of the restored replica and never resent what it lost",
    ),
    (
        "K10",
        "FIXED in 310e9c7 (probe; reports of waiting packets): a lost acknowledgement-only packet and a lost update: the sender resent unacknowledged packets only after the target had reported once, and the target, whose only report was lost, had nothing new to say; neither side ever sent again",
    ),
    (
        "K11",
        "FIXED (3c68987, 28ec197, 8e3297d, 4bff496 keepalive): a sender's newest packet whose report regressed, or whose row lacks what an acknowledged packet brought, lowers the estimate and the acknowledgement state): a snapshot rollback that loses no entry of the replica's own that a sibling holds is never detected (detection looks at own entries only), yet it rolls back sync state: siblings keep too high estimates of it; still open when the rolled-back replica sends no packet numbered above what the sibling saw before",
    ),
    (
        "K13",
        "FIXED (59a4c56, 570e4c3, 4581469, 248c4a4, 8b0c598: a recovering store gives up entries a newer restoration retired; its relays of them are not forks): restoring from a backup older than the replica's previous restoration, when the backup holds own entries that restoration lost (never sent) and renumbered; still seen when another replica the restoration could not know of keeps the retired entries (K3) and reports the fork for ever",
    ),
    (
        "K14",
        "FIXED (d304514; 28ec197, 4581469: a divergent refusal names every origin that differs, at bases and in carried entries): entry-less packets carry bases where the target is known to hold them, so the case below is fixed; still open: a packet refused at its first divergent origin reports only that one, so in lossy schedules a second fork may stay unreported): after --override (or --wait-for) reused numbers, a sibling that held the old entries under them and whose estimate said so never received a packet with entries of that origin, so the fork was never reported (bases travelled only with entries); a restoration awaiting the overriding replica's acknowledgement, numbered in the reused range, never completed",
    ),
    (
        "K15",
        "FIXED in c66d0c0 (estimate set to the sender's row; own restore complete moves to a new incarnation): a snapshot rollback to a copy taken while the replica was recovering revived that recovery; siblings that saw it complete ignored its request and nothing told the replica to move to a newer incarnation, so it never completed",
    ),
    (
        "K12",
        "FIXED in b4ff674: a replica made from a creation packet did not run the entries' protocol effects; it took up a completed restoration's request when a sibling still relayed it, and relayed it forever",
    ),
    (
        "K16",
        "FIXED in 9b3649c: an older restoration's restore complete, applied after a newer request of the same replica, set the estimate to its row, above what the replica held; every packet to it waited for entries it had lost and it never completed",
    ),
    (
        "K9",
        "FIXED in a7bce56 (record an export before writing it): a crash between finishing a packet file and recording the export left a shipped packet whose sequence number the next export reused; an acknowledgement of one covered the other, lost, one, which was never resent",
    ),
];

/// The most replicas a family has.
pub const MAX_SITES: usize = 7;
/// Heal rounds (every link, both ways) before "did not converge".
pub const HEAL_ROUNDS: usize = 80;

/// The time between two heal rounds: an hour, as scheduled exports would run.
const HEAL_ROUND_MS: u64 = 60 * 60 * 1000;
/// A packet delivered after this many steps in flight counts as delayed.
const DELAYED_STEPS: usize = 8;
/// Packets kept in an incoming bay (older ones are deleted, as an operator would).
const BAY_LIMIT: usize = 64;

/// A topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every pair linked.
    Mesh,
    /// Everyone linked to the first replica.
    Hub,
    /// Each replica linked to the previous one.
    Chain,
}

/// How a restored replica runs `restorereplica`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    Default,
    WaitFor(Vec<ReplicaId>),
    Override,
}

/// What the seed drew.
#[derive(Clone, Debug)]
pub struct Params {
    /// Replicas at the start.
    pub initial: usize,
    /// Replicas at most (the rest are created mid-run).
    pub max_sites: usize,
    /// Random steps.
    pub steps: usize,
    /// Topology.
    pub topology: Topology,
    /// Probability that a link is one-way in the random phase.
    pub one_way: f64,
    /// Packet loss rate.
    pub p_loss: f64,
    /// Packet duplication rate.
    pub p_dup: f64,
    /// Packet corruption rate.
    pub p_corrupt: f64,
    /// Probability a delivery takes a random packet of the pool rather than the oldest.
    pub p_reorder: f64,
    /// Probability that a mutating call gets a failing write armed.
    pub p_crash: f64,
    /// Probability that an export is split into small parts.
    pub p_split: f64,
    /// 0: no restores; 1: default-mode restores; 2: every kind (override, wait-for, rollback).
    pub restores: u8,
    /// The restore window sites scrub with (None: no scrubs). Drawn from its own generator,
    /// so a schedule without scrubs is the same as before scrubs existed.
    pub retain_ms: Option<u64>,
    /// Every replica's resend interval (ms): short ones resend in the random phase, the
    /// default only after the heal's day (docs/protocol.md §5, "Resends").
    pub resend_ms: u64,
    /// Whether new replicas are made from snapshots too (profile `snapshots`).
    pub snapshots: bool,
}

impl Params {
    fn draw(rng: &mut ChaCha8Rng, cfg: &Config) -> Params {
        let initial = rng.gen_range(2..=MAX_SITES);
        let max_sites = rng.gen_range(initial..=MAX_SITES);
        let steps = rng.gen_range(10..=160);
        let topology = [Topology::Mesh, Topology::Hub, Topology::Chain][rng.gen_range(0..3)];
        let mut pick = |c: &[f64]| c[rng.gen_range(0..c.len())];
        let one_way = pick(&[0.0, 0.0, 0.2, 0.5]);
        let p_loss = pick(&[0.0, 0.0, 0.05, 0.15, 0.3]);
        let p_dup = pick(&[0.0, 0.05, 0.2]);
        let p_corrupt = pick(&[0.0, 0.0, 0.03, 0.1]);
        let p_reorder = pick(&[0.0, 0.3, 0.8]);
        let p_crash = pick(&[0.0, 0.0, 0.02, 0.08]);
        let p_split = pick(&[0.0, 0.0, 0.3]);
        let restores = match rng.gen_range(0..10) {
            0..=3 => 0,
            4..=6 => 1,
            _ => 2,
        };
        let resend_ms =
            [10_000, 60_000, 600_000, msite_core::keys::DEFAULT_RESEND_MS][rng.gen_range(0..4)];
        let mut p = Params {
            initial,
            max_sites,
            steps,
            topology,
            one_way,
            p_loss,
            p_dup,
            p_corrupt,
            p_reorder,
            p_crash,
            p_split,
            restores,
            retain_ms: draw_retention(cfg.seed),
            resend_ms,
            snapshots: false,
        };
        if let Some(cap) = cfg.replicas {
            p.max_sites = p.max_sites.min(cap.max(2));
            p.initial = p.initial.min(p.max_sites);
        }
        if let Some(s) = cfg.steps {
            p.steps = s;
        }
        // Profiles narrow a schedule after the draws, so a seed keeps its other parameters.
        match cfg.profile {
            crate::Profile::All => {}
            crate::Profile::Sync => p.restores = 0,
            crate::Profile::DefaultRestores => p.restores = 1,
            crate::Profile::Crashy => p.p_crash = 0.25,
            crate::Profile::Snapshots => p.snapshots = true,
        }
        p
    }
}

/// The restore window of a schedule's scrubs: none in half the schedules, else 0 (drop what
/// every sibling holds; no backup is then young enough to restore from), or a window of 15 s
/// or 45 s of simulated time (a step advances the clock by up to 5 s, 2.5 s on average, so a
/// schedule of up to 160 steps sees scrubs drop entries and sites restored after it).
fn draw_retention(seed: u64) -> Option<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5c4b_0b1e_7e7a_1a11);
    match rng.gen_range(0..20) {
        0..=9 => None,
        10..=12 => Some(0),
        13..=15 => Some(15_000),
        _ => Some(45_000),
    }
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
    /// Where the stores come from (last: dropped after the replicas, with their directories).
    backend: B,
}

fn env_arc(env: &SimEnv) -> Arc<dyn Env> {
    Arc::new(env.clone())
}

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
    /// Runs the schedule `cfg` describes on stores of `backend`.
    pub fn run(cfg: &Config, backend: B) -> Outcome {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let p = Params::draw(&mut rng, cfg);
        let mut w = World {
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
            backend,
        };
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
            w.final_checks();
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

    fn ev(&mut self, f: impl FnOnce(&Self) -> String) {
        if self.verbose {
            let s = f(self);
            self.trace.push(format!("[{:>3}] {s}", self.step));
        }
    }

    fn violation(&mut self, s: String) {
        let s = format!("step {}: {s}", self.step);
        if self.verbose {
            self.trace.push(format!("[{:>3}] VIOLATION {s}", self.step));
        }
        self.violations.push(s);
    }

    fn rep(&self, i: usize) -> &Rep<B> {
        self.sites[i].rep.as_ref().expect("replica present")
    }

    fn name_of(&self, id: &ReplicaId) -> String {
        self.sites
            .iter()
            .find(|s| s.id == *id)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| id.short())
    }

    fn set_lossy(&mut self, why: String) {
        self.ev(|_| format!("schedule is lossy from here: {why}"));
        self.lossy.push(why);
    }

    // ---------------------------------------------------------------- setup

    /// A new, empty store from the backend (a failure is the backend's, not the protocol's).
    fn new_store(&mut self) -> B::Store {
        self.backend.new_store().expect("a new store")
    }

    fn new_site(&mut self, rep: Rep<B>, plan: FaultPlan, name: String) -> usize {
        let id = rep.id();
        if self.rng.gen_bool(0.1) {
            let _ = rep.set_reqmaster_policy(ReqMasterPolicy::Deny);
        }
        let _ = rep.set_resend_ms(None, self.p.resend_ms);
        self.sites.push(Site {
            name,
            id,
            rep: Some(rep),
            plan,
            backups: Vec::new(),
            bay: Vec::new(),
            observed: Row::default(),
            snapshot_rolled: false,
            undetected_rollback: false,
            incarnations_before_rollback: BTreeMap::new(),
            recovering_when_observed: false,
            created_by: None,
            copy_taken_ms: None,
            scrub_dropped_ms: None,
            pending: None,
            pending_copy: false,
            forgot_siblings: false,
            amended_copy: false,
        });
        let i = self.sites.len() - 1;
        self.observe(i);
        i
    }

    fn link(&mut self, a: usize, b: usize, one_way: f64) {
        self.edges.insert((a.min(b), a.max(b)));
        if one_way > 0.0 && self.rng.gen_bool(one_way) {
            let (x, y) = if self.rng.gen_bool(0.5) {
                (a, b)
            } else {
                (b, a)
            };
            self.links.entry((x, y)).or_default();
            self.ev(|_| format!("link r{x} -> r{y} (one-way)"));
        } else {
            self.links.entry((a, b)).or_default();
            self.links.entry((b, a)).or_default();
        }
    }

    fn setup(&mut self) {
        let plan = FaultPlan::new();
        let first = msite_core::Replica::init(
            FaultyStore::new(self.new_store(), plan.clone()),
            env_arc(&self.env),
            "fam",
            "r0",
        )
        .expect("init");
        self.new_site(first, plan, "r0".into());
        for _ in 1..self.p.initial {
            let from = self.rng.gen_range(0..self.sites.len());
            self.mkreplica(from, false);
        }
        let n = self.sites.len();
        let ow = self.p.one_way;
        match self.p.topology {
            Topology::Mesh => {
                for a in 0..n {
                    for b in a + 1..n {
                        self.link(a, b, ow);
                    }
                }
            }
            Topology::Hub => {
                for b in 1..n {
                    self.link(0, b, ow);
                }
            }
            Topology::Chain => {
                for b in 1..n {
                    self.link(b - 1, b, ow);
                }
            }
        }
    }

    /// Creates a replica from `from` (through the real creation packet). Returns whether it did.
    fn mkreplica(&mut self, from: usize, link: bool) -> bool {
        let name = format!("r{}", self.sites.len());
        let key = msite_core::SiteKey::generate(&self.env);
        let (how, damaged_at) = match self.p.snapshots {
            true => crate::snapshot::draw(self.seed, self.sites.len()),
            false => (crate::snapshot::Creation::History, None),
        };
        let (plan, how) = match crate::snapshot::plan(
            self.rep(from),
            &name,
            &key.public(),
            how,
            self.p.snapshots,
        ) {
            Ok(p) => p,
            Err(e) if is_refusal_of_local_change(&e) => {
                self.ev(|w| {
                    format!(
                        "mkreplica {name} at {} refused: {}",
                        w.sites[from].name,
                        short(&e)
                    )
                });
                return false;
            }
            Err(e) => {
                self.violation(format!(
                    "mkreplica {name} at {} failed: {e}",
                    self.sites[from].name
                ));
                return false;
            }
        };
        self.observe(from);
        let parts = match self.rep(from).write_plan_to_parts(&plan, None) {
            Ok(p) => p,
            Err(e) => {
                self.violation(format!("writing the creation packet of {name} failed: {e}"));
                return false;
            }
        };
        if let (crate::snapshot::Creation::Snapshot, Some(at)) = (how, damaged_at) {
            let store = self.new_store();
            let env = env_arc(&self.env);
            match crate::snapshot::damaged_copy_is_refused(&parts, store, env, &key, at) {
                Some(v) => self.violation(v),
                None => self.stats.damaged_snapshots += 1,
            }
        }
        let pkt = match Incoming::from_parts(parts, "creation packet") {
            Ok(p) => p,
            Err(e) => {
                self.violation(format!("reading the creation packet of {name} failed: {e}"));
                return false;
            }
        };
        let fp = FaultPlan::new();
        let rep = match msite_core::Replica::create_from_packet(
            FaultyStore::new(self.new_store(), fp.clone()),
            env_arc(&self.env),
            pkt,
            &key,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!("creating {name} from its packet failed: {e}"));
                return false;
            }
        };
        let i = self.new_site(rep, fp, name.clone());
        self.sites[i].created_by = Some(from);
        self.stats.mkreplicas += 1;
        if how == crate::snapshot::Creation::Snapshot {
            // What the family dropped, the new replica knows as dropped (its creator's scrubs).
            self.sites[i].scrub_dropped_ms = self.sites[from].scrub_dropped_ms;
            self.stats.snapshot_creations += 1;
        }
        self.ev(|w| format!("mkreplica {name} from {}", w.sites[from].name));
        if link {
            self.link(from, i, 0.0);
            if self.rng.gen_bool(0.5) {
                let other = self.rng.gen_range(0..i);
                if other != from {
                    let ow = self.p.one_way;
                    self.link(other, i, ow);
                }
            }
        }
        true
    }

    // ---------------------------------------------------------------- ledger

    /// Records the entries `i` holds beyond what was last observed there.
    fn observe(&mut self, i: usize) {
        let own = match self.rep(i).own_row() {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!("{}: own_row failed: {e}", self.sites[i].name));
                return;
            }
        };
        let me = self.sites[i].id;
        let observed = self.sites[i].observed.clone();
        if self.sites[i].undetected_rollback && own.get(&me) > observed.get(&me) {
            // Any own entry (a local change, or a mastership grant an import made) of a replica
            // rolled back by a snapshot, before a sibling revealed the rollback, may reuse a number.
            let name = self.sites[i].name.clone();
            self.set_lossy(format!(
                "{name}, rolled back by a snapshot, made an entry before detection"
            ));
        }
        // A recovering replica whose store is older than a restoration of some origin gives
        // up that origin's retired entries for the newer timeline (K13, docs/protocol.md): its
        // row of that origin goes down. Whether it gave up the right ones is for the other
        // checks (no reuse, no loss, convergence) to say.
        let recovering_now = matches!(self.rep(i).status(), Ok(s) if s.recovering.is_some());
        // A copy stops mattering to retention once its site is back in normal operation.
        let normal = matches!(self.rep(i).status(),
            Ok(s) if s.recovering.is_none() && !s.restored && s.rolled_back.is_none());
        if normal && !self.sites[i].undetected_rollback {
            self.sites[i].copy_taken_ms = None;
        }
        let recovering = recovering_now || self.sites[i].recovering_when_observed;
        self.sites[i].recovering_when_observed = recovering_now;
        for (o, from) in &observed.0 {
            if own.get(o) < *from && recovering {
                let (on, sn) = (self.name_of(o), self.sites[i].name.clone());
                let to = own.get(o);
                self.ev(|_| {
                    format!(
                        "  {sn} gave up {on} {}..={from}, retired by a newer restoration",
                        to + 1
                    )
                });
            } else if own.get(o) < *from && self.gave_up_by_repair(i, o, own.get(o)) {
                let (on, sn) = (self.name_of(o), self.sites[i].name.clone());
                let to = own.get(o);
                self.ev(|_| format!("  {sn} gave up {on} {}..={from} by a fork repair", to + 1));
            } else if own.get(o) < *from {
                let name = self.name_of(o);
                self.violation(format!(
                    "{}: own row of {name} went down from {from} to {} without a restore",
                    self.sites[i].name,
                    own.get(o)
                ));
            }
        }
        for (o, n) in &own.0 {
            let (from, base) = crate::snapshot::held_from(self.rep(i), o, observed.get(o));
            if let Some((b, h)) = base {
                if let Some(other) = self.ledger.record(me, (*o, b), h) {
                    self.on_conflict(i, *o, b, other, h);
                }
            }
            for k in from..=*n {
                let e = match self.rep(i).entry(o, k) {
                    Ok(Some(e)) => e,
                    Ok(None) => {
                        let name = self.name_of(o);
                        self.violation(format!(
                            "{}: own row says {name} {n} but entry {k} is missing",
                            self.sites[i].name
                        ));
                        continue;
                    }
                    Err(e) => {
                        self.violation(format!(
                            "{}: reading entry {k} failed: {e}",
                            self.sites[i].name
                        ));
                        continue;
                    }
                };
                if self.verbose {
                    let op = match &e.op {
                        msite_core::Op::RestoreAck {
                            replica,
                            incarnation,
                            held,
                        } => {
                            format!(
                                "RestoreAck({} inc {incarnation} held {held})",
                                self.name_of(replica)
                            )
                        }
                        msite_core::Op::RestoreComplete { incarnation, .. } => {
                            format!("RestoreComplete(inc {incarnation})")
                        }
                        msite_core::Op::CreateReplica { name, .. } => {
                            format!("CreateReplica({name})")
                        }
                        other => {
                            let d = format!("{other:?}");
                            d.split([' ', '{', '(']).next().unwrap_or("").to_string()
                        }
                    };
                    let (on, sn) = (self.name_of(o), self.sites[i].name.clone());
                    self.ev(|_| format!("  {sn} holds {on}:{k} {op} ({})", short_hash(&e.hash)));
                }
                let id = (*o, k);
                if self.ledger.destroyed.contains(&id)
                    && self.ledger.reached.get(&id) == Some(&e.hash)
                    && self.ledger.resurfaced.insert(id)
                {
                    // Every stored copy was thrown away by restores of several replicas, but a
                    // packet sent before them still carried it (seed 130204345): no replica can
                    // know of a packet in flight whose sender was restored since, so its origin
                    // may have numbered the number again; the fork must then be reported.
                    let (on, sn) = (self.name_of(o), self.sites[i].name.clone());
                    self.set_lossy(format!(
                        "{on} {k}, whose every stored copy restores destroyed, came back to {sn} from a packet in flight"
                    ));
                }
                if let Some(other) = self.ledger.record(me, id, e.hash) {
                    self.on_conflict(i, *o, k, other, e.hash);
                }
            }
        }
        self.sites[i].observed = own;
    }

    /// Whether site `i` holds a fork decision on `o` that gives up its entries above `to`.
    fn gave_up_by_repair(&self, i: usize, o: &ReplicaId, to: u64) -> bool {
        self.rep(i)
            .fork_decisions()
            .is_ok_and(|ds| ds.iter().any(|d| d.origin == *o && d.number <= to + 1))
    }

    // ---------------------------------------------------------------- fork repair

    /// The operator repairs the forks that keep a lossy schedule from converging, as
    /// docs/protocol.md "Divergence and fork repair" says: for each forked origin, at the first
    /// number where live replicas differ, `msite repairfork` at a replica holding one of the
    /// timelines, keeping it or the other (drawn); then the family heals again and must
    /// converge (the final checks). A third timeline takes another pass.
    fn repair_forks(&mut self) {
        for _ in 0..3 {
            if !self.violations.is_empty() || self.lossy.is_empty() {
                return;
            }
            let mut first: BTreeMap<ReplicaId, u64> = BTreeMap::new();
            for (o, k) in self.live_conflicts() {
                let e = first.entry(o).or_insert(k);
                *e = (*e).min(k);
            }
            if first.is_empty() {
                return;
            }
            for (o, k) in first {
                self.repair_one_fork(o, k);
            }
            self.heal();
        }
    }

    /// `msite repairfork --origin o --number k` at a replica drawn among those holding an
    /// entry there, keeping its timeline or the other one (drawn).
    fn repair_one_fork(&mut self, o: ReplicaId, k: u64) {
        let holders: Vec<usize> = (0..self.sites.len())
            .filter(|&i| matches!(self.rep(i).entry(&o, k), Ok(Some(_))))
            .collect();
        let Some(&at) = holders.choose(&mut self.rng) else {
            return;
        };
        let (this, other) = (
            msite_core::KeepTimeline::This,
            msite_core::KeepTimeline::Other,
        );
        let first = if self.rng.gen_bool(0.5) { this } else { other };
        let (on, sn) = (self.name_of(&o), self.sites[at].name.clone());
        let mut last_err = None;
        // A site cannot give up the timeline that created it; told so, the operator keeps it.
        for keep in [first, if first == this { other } else { this }] {
            self.ev(|_| {
                format!("operator: repairfork --origin {on} --number {k} --keep {keep:?} at {sn}")
            });
            match self.rep(at).repair_fork(&o, k, keep) {
                Ok(r) => {
                    self.stats.fork_repairs += 1;
                    self.ev(|_| {
                        format!(
                            "  gave up {} entries here, locked: {}",
                            r.given_up, r.locked
                        )
                    });
                    self.observe(at);
                    return;
                }
                Err(e) => {
                    self.ev(|_| format!("  refused: {e}"));
                    last_err = Some(e);
                }
            }
        }
        if let Some(e) = last_err {
            self.violation(format!("repairfork at {sn} failed both ways: {e}"));
        }
    }

    fn on_conflict(&mut self, i: usize, o: ReplicaId, k: u64, a: Hash, b: Hash) {
        let name = self.name_of(&o);
        let msg = format!(
            "number reused: {name} {k} names two entries ({} at first, {} now held at {})",
            short_hash(&a),
            short_hash(&b),
            self.sites[i].name
        );
        if self.lossy.is_empty() {
            if let Some(oi) = self.sites.iter().position(|s| s.id == o) {
                // K3: the origin's restore did not wait for a holder of the old entry that
                // its store does not know.
                let unknown_holder = (0..self.sites.len()).any(|j| {
                    j != oi
                        && matches!(self.rep(j).entry(&o, k), Ok(Some(e)) if e.hash == a)
                        && matches!(self.rep(oi).view().replica(&self.sites[j].id), Ok(None))
                });
                if self.sites[oi].forgot_siblings || unknown_holder {
                    self.known.insert("K3");
                }
            }
            self.violation(msg);
        } else {
            self.ev(|_| format!("{msg} (lossy schedule: allowed if reported)"));
        }
    }

    /// After a store was replaced: entries that reached a sibling but are now held nowhere.
    fn note_destroyed(&mut self) {
        let rows: Vec<Row> = (0..self.sites.len())
            .filter_map(|i| self.rep(i).own_row().ok())
            .collect();
        let mut gone = Vec::new();
        for (id, hash) in &self.ledger.reached {
            if self.ledger.destroyed.contains(id) {
                continue;
            }
            // Held means this very entry: a store put back from an older timeline may hold
            // another entry under the number.
            let held = rows.iter().enumerate().any(|(i, r)| {
                r.get(&id.0) >= id.1
                    && matches!(self.rep(i).entry(&id.0, id.1), Ok(Some(e)) if e.hash == *hash)
            });
            if !held {
                gone.push(*id);
            }
        }
        for id in gone {
            self.stats.destroyed += 1;
            let name = self.name_of(&id.0);
            self.ev(|_| {
                format!(
                    "every copy of {name} {} is gone (restores of several replicas)",
                    id.1
                )
            });
            self.ledger.destroyed.insert(id);
        }
    }

    /// The own row matches the oplog, numbers are contiguous and the hash chains hold.
    fn check_integrity(&mut self, i: usize, when: &str) {
        let ids: Vec<ReplicaId> = self.sites.iter().map(|s| s.id).collect();
        let own = match self.rep(i).own_row() {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!(
                    "{} {when}: own_row failed: {e}",
                    self.sites[i].name
                ));
                return;
            }
        };
        for o in ids {
            let entries = match self.rep(i).entries_of(&o) {
                Ok(v) => v,
                Err(e) => {
                    self.violation(format!(
                        "{} {when}: entries_of failed: {e}",
                        self.sites[i].name
                    ));
                    return;
                }
            };
            // A scrubbed prefix: the chain continues from the retained base.
            let (base, mut prev) = self
                .rep(i)
                .chain_base(&o)
                .ok()
                .flatten()
                .unwrap_or((0, [0u8; 32]));
            for (k, e) in entries.iter().enumerate() {
                let k = k + base as usize;
                if e.number != k as u64 + 1 || e.origin != o || e.prev != prev {
                    let name = self.name_of(&o);
                    self.violation(format!(
                        "{} {when}: the oplog of {name} is broken at entry {} (number {}, chain {})",
                        self.sites[i].name,
                        k + 1,
                        e.number,
                        if e.prev == prev { "ok" } else { "broken" }
                    ));
                    break;
                }
                prev = e.hash;
            }
            if entries.len() as u64 + base != own.get(&o) {
                let name = self.name_of(&o);
                self.violation(format!(
                    "{} {when}: own row says {name} {} but the oplog holds {} entries",
                    self.sites[i].name,
                    own.get(&o),
                    entries.len()
                ));
            }
        }
    }

    /// `msite scrub` at site `i` under the schedule's restore window, with the faults of any
    /// mutating call. A locked or recovering replica refuses; the state digest must not change.
    fn scrub(&mut self, i: usize) {
        let Some(w) = self.p.retain_ms else { return };
        let before = self.rep(i).digest().ok();
        let name = self.sites[i].name.clone();
        match self.mutate(i, "scrub", true, |r| r.scrub_with_window(Some(w), false)) {
            None => {}
            Some(Ok(report)) => {
                self.stats.scrubs += 1;
                self.stats.scrubbed += report.entries_dropped;
                self.scrubbed_any |= report.entries_dropped > 0;
                if report.entries_dropped > 0 {
                    self.sites[i].scrub_dropped_ms = Some(self.env.now_ms());
                }
                let dropped = report.entries_dropped;
                self.ev(|_| format!("scrub at {name}: dropped {dropped} entries"));
                if self.rep(i).digest().ok() != before {
                    self.violation(format!("scrub at {name} changed its digest"));
                }
            }
            Some(Err(CoreError::Locked(m))) => {
                self.ev(|_| format!("scrub at {name} refused: {m}"));
            }
            Some(Err(e)) => self.violation(format!("scrub at {name} failed: {e}")),
        }
        self.check_integrity(i, "after a scrub");
    }

    /// Site `keeper` dropped entries site `behind` needs. The operator restores only backups
    /// younger than half the window, but the guarantee also needs the restore request to
    /// reach the siblings before the copy is a window old (docs/protocol.md §9): a site locked
    /// as rolled back long before its operator ran `restorereplica` may miss it. Then the
    /// keeper's last dropping scrub came more than a window after the copy was taken, the
    /// site is told to be re-created, and the schedule is outside the guarantee (lossy, not
    /// converging); anything else is a violation.
    fn behind_retention(&mut self, keeper: usize, behind: usize, what: String) {
        let w = self.p.retain_ms.unwrap_or(0);
        let late = match (
            self.sites[behind].copy_taken_ms,
            self.sites[keeper].scrub_dropped_ms,
        ) {
            (Some(copy), Some(dropped)) => dropped > copy + w,
            _ => false,
        };
        if !late {
            self.violation(what);
            return;
        }
        if !self.beyond_window {
            self.stats.beyond_window += 1;
        }
        self.beyond_window = true;
        let name = self.sites[behind].name.clone();
        self.set_lossy(format!(
            "{name}'s restore request came more than a window after its copy was taken: {what}"
        ));
    }

    // ---------------------------------------------------------------- crashes

    /// Runs a mutating call, maybe with a failing write armed. `None`: it crashed (the replica
    /// was restarted).
    fn mutate<T>(
        &mut self,
        i: usize,
        what: &str,
        faults: bool,
        f: impl FnOnce(&Rep<B>) -> Result<T, CoreError>,
    ) -> Option<Result<T, CoreError>> {
        let plan = self.sites[i].plan.clone();
        let fired = plan.faults_fired();
        let mut armed = String::new();
        if faults && self.p.p_crash > 0.0 && self.rng.gen_bool(self.p.p_crash) {
            if self.rng.gen_bool(0.5) {
                let k = self.rng.gen_range(1..=3);
                plan.fail_nth_write(k);
                armed = format!("write {k} fails");
            } else {
                let k = self.rng.gen_range(1..=2);
                plan.fail_nth_sync_write(k);
                armed = format!("synced write {k} applies, then fails");
            }
        }
        let r = f(self.rep(i));
        plan.disarm();
        if plan.faults_fired() > fired {
            self.stats.crashes += 1;
            let outcome = match &r {
                Ok(_) => "ok".to_string(),
                Err(e) => short(e),
            };
            self.ev(|w| {
                format!(
                    "CRASH at {} during {what} ({armed}; call returned: {outcome}); restart",
                    w.sites[i].name
                )
            });
            self.restart(i);
            return None;
        }
        Some(r)
    }

    /// Restarts replica `i`: a new wrapper around the same store, reopened (on a real backend,
    /// closed and opened again from its directory).
    fn restart(&mut self, i: usize) {
        let rep = self.sites[i].rep.take().expect("replica present");
        let inner = rep.into_store().into_inner();
        let inner = self.backend.reopen(inner).expect("reopening a store");
        let store = FaultyStore::new(inner, self.sites[i].plan.clone());
        let rep = msite_core::Replica::open(store, env_arc(&self.env)).expect("reopen after crash");
        self.sites[i].rep = Some(rep);
        self.check_integrity(i, "after a crash");
        self.observe(i);
    }

    // ---------------------------------------------------------------- the random phase

    fn random_step(&mut self) {
        self.env.advance(self.rng.gen_range(0..5000));
        let can_grow = self.sites.len() < self.p.max_sites;
        let r = self.p.restores;
        let scrubs = if self.p.retain_ms.is_some() { 10 } else { 0 };
        let acts: [(u32, u32); 13] = [
            (0, 30),                           // local change
            (1, 22),                           // export
            (2, 25),                           // deliver
            (3, 3),                            // retry a bay
            (4, if r > 0 { 4 } else { 0 }),    // backup
            (5, if r > 0 { 3 } else { 0 }),    // restore
            (6, if r > 0 { 1 } else { 0 }),    // restore several at once
            (7, if r > 1 { 1 } else { 0 }),    // snapshot rollback
            (8, if can_grow { 2 } else { 0 }), // mkreplica
            (9, 3),                            // operator repairs locked replicas
            (10, if r > 0 { 1 } else { 0 }),   // restorereplica again while recovering
            (11, 2),                           // a quiet step
            (12, scrubs),                      // scrub (oplog retention)
        ];
        let total: u32 = acts.iter().map(|a| a.1).sum();
        let mut x = self.rng.gen_range(0..total);
        let mut act = 11;
        for (a, w) in acts {
            if x < w {
                act = a;
                break;
            }
            x -= w;
        }
        let n = self.sites.len();
        match act {
            0 => {
                let i = self.rng.gen_range(0..n);
                self.local_change(i);
            }
            1 => {
                let keys: Vec<(usize, usize)> = self.links.keys().copied().collect();
                if let Some(&(a, b)) = keys.choose(&mut self.rng) {
                    if let Some(pkt) = self.export(a, b, true) {
                        self.send(pkt);
                    }
                }
            }
            2 => {
                if let Some(pkt) = self.take_in_flight(true) {
                    let to = pkt.to;
                    self.deliver(pkt, true);
                    self.settle_bay(to, true);
                }
            }
            3 => {
                let i = self.rng.gen_range(0..n);
                self.settle_bay(i, true);
            }
            4 => {
                let i = self.rng.gen_range(0..n);
                let rep = self.sites[i].rep.as_ref().expect("replica present");
                match self.backend.backup(rep.store().inner()) {
                    Ok(store) => {
                        let step = self.step;
                        let at_ms = match self.p.retain_ms {
                            Some(_) => self.env.now_ms(),
                            None => 0,
                        };
                        self.sites[i].backups.push(Backup { step, at_ms, store });
                        self.stats.backups += 1;
                        self.ev(|w| format!("backup of {}", w.sites[i].name));
                    }
                    Err(e) => {
                        self.violation(format!("backup of {} failed: {e}", self.sites[i].name))
                    }
                }
            }
            5 => {
                let i = self.rng.gen_range(0..n);
                let m = self.draw_mode(i);
                self.restore(i, Some(m));
            }
            6 => {
                let k = self.rng.gen_range(2..=3.min(n));
                let mut idx: Vec<usize> = (0..n).collect();
                idx.shuffle(&mut self.rng);
                for &i in idx.iter().take(k) {
                    let m = self.draw_mode(i);
                    self.restore(i, Some(m));
                }
            }
            7 => {
                let i = self.rng.gen_range(0..n);
                self.restore(i, None);
            }
            8 => {
                let from = self.rng.gen_range(0..n);
                self.mkreplica(from, true);
            }
            9 => self.repair_locked(true),
            12 => {
                let i = self.rng.gen_range(0..n);
                self.scrub(i);
            }
            10 => {
                let recovering: Vec<usize> = (0..n)
                    .filter(|&i| matches!(self.rep(i).status(), Ok(st) if st.recovering.is_some()))
                    .collect();
                if let Some(&i) = recovering.choose(&mut self.rng) {
                    let m = self.draw_mode(i);
                    self.stats.amends += 1;
                    self.ev(|w| {
                        format!(
                            "restorereplica again at {} while it recovers",
                            w.sites[i].name
                        )
                    });
                    self.run_restorereplica(i, m, true);
                }
            }
            _ => {}
        }
    }

    fn draw_mode(&mut self, i: usize) -> Mode {
        if self.p.restores < 2 {
            return Mode::Default;
        }
        match self.rng.gen_range(0..10) {
            0..=5 => Mode::Default,
            6..=7 => {
                let sibs: Vec<ReplicaId> = match self.rep(i).view().replicas() {
                    Ok(v) => v
                        .into_iter()
                        .map(|r| r.id)
                        .filter(|r| *r != self.sites[i].id)
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let mut pick: Vec<ReplicaId> = sibs
                    .into_iter()
                    .filter(|_| self.rng.gen_bool(0.5))
                    .collect();
                if pick.is_empty() {
                    return Mode::Default;
                }
                pick.sort();
                Mode::WaitFor(pick)
            }
            _ => Mode::Override,
        }
    }

    fn local_change(&mut self, i: usize) {
        let me = self.sites[i].name.clone();
        let own_br = format!("{me}_dev");
        let brs = [
            "main".to_string(),
            own_br.clone(),
            "dev".into(),
            "feature".into(),
        ];
        let lbs = ["REL1", "REL2", "BL"];
        let paths = [
            "a.c".to_string(),
            "b.c".into(),
            "src/x.rs".into(),
            "doc/readme".into(),
            format!("{me}/own.txt"),
            format!("{me}/notes"),
        ];
        let names: Vec<String> = self.sites.iter().map(|s| s.name.clone()).collect();
        let path = paths.choose(&mut self.rng).cloned().unwrap_or_default();
        let br = brs.choose(&mut self.rng).cloned().unwrap_or_default();
        let lb = lbs
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("BL")
            .to_string();
        let sel = match self.rng.gen_range(0..5) {
            0 => format!("brtype:{br}"),
            1 => format!("lbtype:{lb}"),
            2 => format!("elem:{path}"),
            3 => format!("branch:{path}@@{br}"),
            _ => format!(
                "replica:{}",
                names.choose(&mut self.rng).cloned().unwrap_or_default()
            ),
        };
        let to = names.choose(&mut self.rng).cloned().unwrap_or_default();
        let big = self.rng.gen_bool(0.05);
        let content: Vec<u8> = if big {
            (0..self.rng.gen_range(1000..6000))
                .map(|_| self.rng.gen())
                .collect()
        } else {
            // A unique first line over a body every small version shares, as versions of
            // one file do: packets carry them as deltas against versions the target holds.
            let mut v = format!("{me}-{}-{}\n", self.step, self.rng.gen::<u16>()).into_bytes();
            v.extend_from_slice(SHARED_BODY);
            v
        };
        let kind = self.rng.gen_range(0..100);
        let (what, r): (String, Option<Result<(), CoreError>>) = match kind {
            0..=7 => {
                let name = if self.rng.gen_bool(0.5) {
                    own_br.clone()
                } else {
                    br.clone()
                };
                (
                    format!("mkbrtype {name}"),
                    self.mutate(i, "mkbrtype", true, |r| r.mkbrtype(&name).map(|_| ())),
                )
            }
            8..=13 => (
                format!("mklbtype {lb}"),
                self.mutate(i, "mklbtype", true, |r| r.mklbtype(&lb).map(|_| ())),
            ),
            14..=21 => (
                format!("mkelem {path}"),
                self.mutate(i, "mkelem", true, |r| r.mkelem(&path).map(|_| ())),
            ),
            22..=61 => {
                let b = if self.rng.gen_bool(0.6) {
                    "main".to_string()
                } else {
                    br.clone()
                };
                (
                    format!("checkin {path}@@{b} ({} bytes)", content.len()),
                    self.mutate(i, "checkin", true, |r| {
                        r.checkin(&path, &b, &content, "sim", "c").map(|_| ())
                    }),
                )
            }
            62..=71 => {
                let vs = VersionSel {
                    path: path.clone(),
                    brtype: br.clone(),
                    number: None,
                };
                (
                    format!("mklabel {lb} {path}@@{br}"),
                    self.mutate(i, "mklabel", true, |r| r.mklabel(&lb, &vs)),
                )
            }
            72..=76 => (
                format!("rmlabel {lb} {path}"),
                self.mutate(i, "rmlabel", true, |r| r.rmlabel(&lb, &path)),
            ),
            77..=80 => (
                format!("rmname {path}"),
                self.mutate(i, "rmname", true, |r| r.rmname(&path)),
            ),
            81..=90 => (
                format!("chmaster {sel} -> {to}"),
                self.mutate(i, "chmaster", true, |r| r.chmaster(&sel, &to)),
            ),
            _ => (
                format!("reqmaster {sel}"),
                self.mutate(i, "reqmaster", true, |r| r.reqmaster(&sel).map(|_| ())),
            ),
        };
        match r {
            None => {}
            Some(Ok(())) => {
                self.stats.ops_ok += 1;
                self.ev(|_| format!("{me}: {what}"));
            }
            Some(Err(e)) if is_refusal_of_local_change(&e) => {
                self.stats.ops_refused += 1;
            }
            Some(Err(e)) => self.violation(format!("{me}: {what} failed: {e}")),
        }
        self.observe(i);
    }

    // ---------------------------------------------------------------- packets

    /// Exports from `a` for `b` through `write_plan_to_parts`, which records the export the
    /// way `write_plan_to_dir` does (a crash while it runs leaves no finished packet).
    fn export(&mut self, a: usize, b: usize, faults: bool) -> Option<Packet> {
        let target = self.sites[b].id;
        let plan = match self.rep(a).plan_export(&target) {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(CoreError::Locked(_)) | Err(CoreError::NotFound(_)) => return None,
            Err(e) => {
                self.violation(format!(
                    "export {} -> {} failed: {e}",
                    self.sites[a].name, self.sites[b].name
                ));
                return None;
            }
        };
        let mut max = None;
        if faults && self.p.p_split > 0.0 && self.rng.gen_bool(self.p.p_split) {
            max = Some(self.rng.gen_range(600..4000));
        }
        let (an, bn) = (self.sites[a].name.clone(), self.sites[b].name.clone());
        let parts = match self.mutate(a, "export", faults, |r| {
            match r.write_plan_to_parts(&plan, max) {
                // A part size below what the header alone takes (refused before anything is
                // recorded): one part.
                Err(CoreError::Unreadable(m)) if max.is_some() && m.contains("too small") => {
                    r.write_plan_to_parts(&plan, None)
                }
                other => other,
            }
        }) {
            None => return None,
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                self.violation(format!("export {an} -> {bn} failed: {e}"));
                return None;
            }
        };
        self.serial += 1;
        self.stats.packets += 1;
        let serial = self.serial;
        for r in &plan.refusals {
            // A refusal on a restore request's row is exact; a warning on a report may come
            // from an old packet arriving late (the import side says if entries are missing).
            self.stats.behind_retention += 1;
            if r.contains("which this family no longer keeps") {
                self.behind_retention(a, b, format!("export #{serial} {an} -> {bn}: {r}"));
            } else {
                self.ev(|_| format!("export #{serial} {an} -> {bn}: {r}"));
            }
        }
        let seq = plan
            .header
            .targets
            .first()
            .map(|t| t.packet_seq)
            .unwrap_or(0);
        self.ev(|_| {
            format!(
                "export #{serial} {an} -> {bn}: {} ({} entries, seq {seq}, {} part(s))",
                plan.reason,
                plan.entry_count,
                parts.len()
            )
        });
        Some(Packet {
            serial,
            from: a,
            to: b,
            parts,
            born: self.step,
            corrupt: false,
            forged: false,
        })
    }

    /// Puts a packet in flight, with the link's faults.
    fn send(&mut self, pkt: Packet) {
        let key = (pkt.from, pkt.to);
        if self.p.p_loss > 0.0 && self.rng.gen_bool(self.p.p_loss) {
            self.stats.lost += 1;
            self.ev(|_| format!("packet #{} lost", pkt.serial));
            return;
        }
        let mut copies = vec![pkt];
        if self.p.p_dup > 0.0 && self.rng.gen_bool(self.p.p_dup) {
            self.stats.duplicated += 1;
            let mut c = copies[0].clone();
            self.serial += 1;
            c.serial = self.serial;
            self.ev(|_| format!("packet #{} duplicated as #{}", copies[0].serial, c.serial));
            copies.push(c);
        }
        if self.p.p_corrupt > 0.0 && self.rng.gen_bool(self.p.p_corrupt) {
            let mut c = copies[0].clone();
            self.corrupt(&mut c);
            if self.rng.gen_bool(0.5) {
                // The damaged copy replaces the packet (the good one is lost).
                copies[0] = c;
            } else {
                self.serial += 1;
                c.serial = self.serial;
                copies.push(c);
            }
        }
        self.links.entry(key).or_default().extend(copies);
    }

    /// Forges a packet in flight as a malicious relay would: the last carried entry of another
    /// origin that the target does not hold yet is altered, its hash and the origin's chain in
    /// the packet recomputed, and the header signed again with the sender's own key. A packet
    /// that relays nothing new gets its acknowledgement raised instead, by a third party who
    /// cannot sign. Returns what was done, or None when the packet cannot be read.
    fn forge(&self, p: &mut Packet) -> Option<String> {
        use msite_packet::{decode_entry, encode_entry, entry_hash, Record};
        let (info, mut header, mut records) =
            msite_packet::decode_parts(p.parts.iter().map(|b| b.as_slice())).ok()?;
        let sender = header.sender;
        let target = self.rep(p.to);
        let victim = records.iter().rev().find_map(|r| match r {
            Record::Entry(b) => decode_entry(b).ok().filter(|e| {
                e.origin != sender
                    && target
                        .own_row()
                        .is_ok_and(|row| row.get(&ReplicaId(e.origin.0)) < e.number)
            }),
            _ => None,
        });
        let what = match victim {
            Some(v) => {
                let mut relink = None;
                for r in &mut records {
                    let Record::Entry(b) = r else { continue };
                    let Ok(mut e) = decode_entry(b) else { continue };
                    if e.origin != v.origin || e.number < v.number {
                        continue;
                    }
                    if e.number == v.number {
                        e.time_ms ^= 1;
                    } else if let Some(prev) = relink {
                        e.prev = prev;
                    }
                    e.hash = entry_hash(&e);
                    relink = Some(e.hash);
                    *b = encode_entry(&e);
                }
                let kind = info.kind;
                self.rep(p.from)
                    .sign_header_for_test(&mut header, kind, &info.packet_id);
                format!(
                    "entry {} of a relayed origin altered by its sender",
                    v.number
                )
            }
            None => {
                header.targets.first_mut()?.applied_seq += 1;
                "acknowledgement raised by a third party".to_string()
            }
        };
        let mut opts = msite_packet::WriteOptions::new(info.packet_id);
        opts.minor = msite_packet::format::FORMAT_MINOR;
        let mut w = msite_packet::MemPacketWriter::new(info.kind, &header, opts).ok()?;
        for r in &records {
            w.push_record(r).ok()?;
        }
        p.parts = w.finish().ok()?.0;
        Some(what)
    }

    fn corrupt(&mut self, p: &mut Packet) {
        p.corrupt = true;
        if self.rng.gen_bool(0.25) {
            if let Some(what) = self.forge(p) {
                p.forged = true;
                let serial = p.serial;
                self.ev(|_| format!("packet #{serial} forged: {what}"));
                return;
            }
        }
        let k = self.rng.gen_range(0..p.parts.len());
        let how = self.rng.gen_range(0..4);
        let what = {
            let part = &mut p.parts[k];
            match how {
                0 | 1 if !part.is_empty() => {
                    let at = self.rng.gen_range(0..part.len());
                    let bit = 1u8 << self.rng.gen_range(0..8);
                    part[at] ^= bit;
                    format!("bit flipped at byte {at} of part {}", k + 1)
                }
                2 if !part.is_empty() => {
                    let to = self.rng.gen_range(0..part.len());
                    part.truncate(to);
                    format!("part {} truncated to {to} bytes", k + 1)
                }
                _ if p.parts.len() > 1 => {
                    p.parts.remove(k);
                    format!("part {} missing", k + 1)
                }
                _ => {
                    let extra = self.rng.gen_range(1..64);
                    for _ in 0..extra {
                        let b = self.rng.gen();
                        p.parts[k].push(b);
                    }
                    format!("{extra} bytes appended to part {}", k + 1)
                }
            }
        };
        let serial = p.serial;
        self.ev(|_| format!("packet #{serial} corrupted: {what}"));
    }

    /// Takes a packet from a random non-empty pool (a random one of it, with reordering).
    fn take_in_flight(&mut self, faults: bool) -> Option<Packet> {
        let keys: Vec<(usize, usize)> = self
            .links
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| *k)
            .collect();
        let key = *keys.choose(&mut self.rng)?;
        let reorder = faults && self.p.p_reorder > 0.0 && self.rng.gen_bool(self.p.p_reorder);
        let pool = self.links.get_mut(&key)?;
        let idx = if reorder {
            self.rng.gen_range(0..pool.len())
        } else {
            0
        };
        let pkt = pool.remove(idx);
        if idx > 0 {
            self.stats.reordered += 1;
        }
        if self.step.saturating_sub(pkt.born) >= DELAYED_STEPS {
            self.stats.delayed += 1;
        }
        Some(pkt)
    }

    /// Imports `pkt` at its target and checks what the import did.
    fn deliver(&mut self, pkt: Packet, faults: bool) {
        let to = pkt.to;
        self.exchanged.insert((pkt.from, to));
        let tn = self.sites[to].name.clone();
        let fname = self.sites[pkt.from].name.clone();
        let serial = pkt.serial;
        if pkt.corrupt {
            self.stats.corrupted += 1;
        }
        let before_own = self.rep(to).own_row().ok();
        let before_digest = self.rep(to).digest().ok();
        let before_status = self.rep(to).status().ok();
        let inc = match Incoming::from_parts(pkt.parts.clone(), &format!("packet #{serial}")) {
            Ok(i) => i,
            Err(e) => {
                if pkt.corrupt {
                    self.ev(|_| {
                        format!(
                            "import #{serial} at {tn}: corrupted packet refused ({})",
                            short(&e)
                        )
                    });
                } else {
                    self.violation(format!(
                        "packet #{serial} from {fname} to {tn} is unreadable: {e}"
                    ));
                }
                return;
            }
        };
        let me = self.sites[to].id;
        let sender = ReplicaId(inc.header.sender.0);
        let hdr_target_inc = inc
            .header
            .targets
            .iter()
            .find(|t| t.replica.0 == me.0)
            .map(|t| t.incarnation);
        let hdr_sender_inc = inc.header.sender_incarnation;
        let my_inc = before_status.as_ref().map(|s| s.incarnation).unwrap_or(0);
        let recorded_sender_inc = self.rep(to).incarnation_of(&sender).unwrap_or(0);
        let stale =
            hdr_target_inc.is_some_and(|h| h < my_inc) || hdr_sender_inc < recorded_sender_inc;

        let has_sender_request = inc.header.controls.iter().any(|c| {
            matches!(c, msite_packet::wire::Control::RestoreRequest { replica, .. } if replica.0 == sender.0)
        });
        // A replica put back to a snapshot that forgot the sender's newer incarnation, before
        // any packet showed it its rollback, cannot tell a packet the sender built before its
        // restore from a current one (K25): applying it is a consequence of the rollback, like
        // a local change before detection; the fork it may make must then be reported.
        let forgot_sender_restore = self.sites[to].undetected_rollback
            && self.sites[to]
                .incarnations_before_rollback
                .get(&sender)
                .is_some_and(|known| *known > hdr_sender_inc);
        let before_decisions = self.rep(to).fork_decisions().ok();
        let res = self.mutate(to, "import", faults, |r| r.import(inc));
        let after_own = self.rep(to).own_row().ok();
        // A fork repair decision the header carries is adopted before the packet is assessed
        // (docs/protocol.md "Divergence and fork repair"): a refused or stale packet may give
        // up entries that way, and only that way.
        let adopted = self.rep(to).fork_decisions().ok() != before_decisions;
        if forgot_sender_restore
            && (after_own != before_own || self.rep(to).digest().ok() != before_digest)
        {
            self.set_lossy(format!(
                "{tn}, rolled back by a snapshot that forgot {fname}'s restoration, applied packet #{serial} {fname} built before it"
            ));
        }
        // A packet refused as stale for its target, or for relaying retired entries (K13), or
        // one that must wait, may still teach the sender's own restore request (core's design since the simulator found two
        // replicas restored at once refusing each other forever, docs/protocol.md §4): the
        // only change allowed is this replica's numbered acknowledgement of that request.
        let stale_target_refusal = matches!(
            res,
            None | Some(Err(CoreError::Refused(
                Refusal::StaleTarget { .. }
                    | Refusal::StaleRequest { .. }
                    | Refusal::SenderHoldsRetired { .. }
            ))) | Some(Ok(ImportOutcome::Waiting(_)))
        );
        let learned = stale_target_refusal
            && has_sender_request
            && after_own != before_own
            && self.only_acks_of(to, before_own.as_ref(), &sender);
        if learned {
            self.stats.learned_from_stale += 1;
            self.ev(|_| {
                format!("  {tn} learned {fname}'s restore request from the stale packet #{serial}")
            });
            // The acknowledgement is an entry of this replica's own: record it now (a replica
            // rolled back by a snapshot that no packet has shown its rollback yet may number it
            // under a number its earlier self used, as for a local change; K26).
            self.observe(to);
        }
        if stale && after_own != before_own && !learned && !adopted {
            self.violation(format!(
                "stale packet #{serial} from {fname} changed {tn} (target incarnation in header {hdr_target_inc:?}, {tn} had {my_inc}; sender incarnation {hdr_sender_inc}, recorded {recorded_sender_inc})"
            ));
        }
        let Some(res) = res else {
            // Crashed: the packet file stays in the incoming bay.
            if !pkt.corrupt {
                self.push_bay(to, pkt);
            }
            self.observe(to);
            return;
        };
        let unchanged = |w: &Self, what: &str| -> Option<String> {
            let own = w.rep(to).own_row().ok();
            let dig = w.rep(to).digest().ok();
            if !learned && !adopted && (own != before_own || dig != before_digest) {
                Some(format!(
                    "packet #{serial} from {fname} {what} but changed {tn}'s own row or state"
                ))
            } else {
                None
            }
        };
        match res {
            Ok(ImportOutcome::Applied {
                applied,
                unlocked,
                notes,
                ..
            }) => {
                if pkt.corrupt {
                    self.violation(format!(
                        "corrupted packet #{serial} from {fname} was applied at {tn}"
                    ));
                }
                self.stats.applied += 1;
                self.stats.entries_applied += applied;
                self.ev(|w| {
                    let awaited = match w.rep(to).status().ok().and_then(|s| s.recovering) {
                        Some(rc) => format!(
                            " [still recovering, awaiting {}]",
                            rc.awaited
                                .iter()
                                .map(|(a, h)| format!("{}={h:?}", w.name_of(a)))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        None => String::new(),
                    };
                    format!(
                        "import #{serial} at {tn}: applied {applied}{}; {}{awaited}",
                        if unlocked { ", UNLOCKED" } else { "" },
                        notes.join(" | ")
                    )
                });
                self.observe(to);
            }
            Ok(ImportOutcome::AlreadyApplied) => {
                self.ev(|_| format!("import #{serial} at {tn}: already applied"));
                if let Some(v) = unchanged(self, "was already applied") {
                    self.violation(v);
                }
            }
            Ok(ImportOutcome::Waiting(needs)) => {
                self.stats.waits += 1;
                self.ev(|_| {
                    format!(
                        "import #{serial} at {tn}: waits ({})",
                        needs
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
                if let Some(v) = unchanged(self, "waited") {
                    self.violation(v);
                }
                if !pkt.corrupt {
                    self.push_bay(to, pkt);
                }
            }
            Err(e) => {
                if let Some(v) = unchanged(self, &format!("was refused ({})", short(&e))) {
                    self.violation(v);
                }
                self.on_import_error(
                    to,
                    pkt,
                    e,
                    before_status.and_then(|s| s.rolled_back).is_some(),
                );
            }
        }
    }

    /// Whether every entry `i` holds beyond `before` is its own acknowledgement of `sender`'s
    /// restore request.
    fn only_acks_of(&self, i: usize, before: Option<&Row>, sender: &ReplicaId) -> bool {
        let me = self.sites[i].id;
        let Ok(now) = self.rep(i).own_row() else {
            return false;
        };
        let before = before.cloned().unwrap_or_default();
        for (o, n) in &now.0 {
            let from = before.get(o);
            if *n > from && *o != me {
                return false;
            }
            for k in from + 1..=*n {
                match self.rep(i).entry(o, k) {
                    Ok(Some(e)) if matches!(&e.op, msite_core::Op::RestoreAck { replica, .. } if replica == sender) =>
                        {}
                    _ => return false,
                }
            }
        }
        true
    }

    fn on_import_error(&mut self, to: usize, pkt: Packet, e: CoreError, was_rolled_back: bool) {
        let tn = self.sites[to].name.clone();
        let fname = self.sites[pkt.from].name.clone();
        let serial = pkt.serial;
        let msg = short(&e);
        self.ev(|_| format!("import #{serial} at {tn}: refused: {msg}"));
        match e {
            CoreError::Refused(Refusal::StaleTarget { .. })
            | CoreError::Refused(Refusal::StaleSender { .. })
            | CoreError::Refused(Refusal::StaleRequest { .. }) => {
                self.stats.stale += 1;
            }
            CoreError::Refused(Refusal::Divergent {
                origin,
                number,
                also,
                ..
            }) => {
                self.stats.divergent += 1;
                self.mark_reported(&origin, &also);
                if self.lossy.is_empty() && !pkt.corrupt {
                    self.violation(format!(
                        "packet #{serial} from {fname} refused at {tn} as divergent ({origin} {number}) in a schedule that loses nothing"
                    ));
                }
            }
            CoreError::Refused(Refusal::RolledBack { .. }) => self.on_rollback_detected(to, serial),
            CoreError::Refused(Refusal::OwnFork { also, .. }) => {
                // The importer numbered one of its numbers twice: it locks itself as rolled
                // back; the other forks it names are reported too.
                self.stats.own_forks += 1;
                let name = self.sites[to].name.clone();
                self.mark_reported(&name, &also);
                self.on_rollback_detected(to, serial);
            }
            CoreError::Refused(Refusal::SenderHoldsRetired { origin, also, .. }) => {
                // The refusal names the origins whose histories differ: the operator is told.
                self.mark_reported(&origin, &also);
                // A recovering sender relayed entries a newer restoration replaced (K13); core
                // says so only for a packet carrying the sender's own restore request and an
                // entry older (by incarnation) than ours. What follows is checked as usual:
                // the sender must give them up and the family converge.
                self.stats.retired_relays += 1;
            }
            CoreError::Refused(r @ Refusal::BehindRetention { .. }) => {
                self.stats.behind_retention += 1;
                let what = format!("packet #{serial} from {fname} refused at {tn}: {r}");
                self.behind_retention(pkt.from, to, what);
            }
            CoreError::Refused(Refusal::Other(m)) if m.contains("export to the siblings again") => {
                // A recovering store older than a restoration the family knows moved its
                // request to a newer incarnation; the packet is dropped.
            }
            CoreError::Locked(_) => {
                let now = self.rep(to).status().ok().and_then(|s| s.rolled_back);
                if now.is_some() && !was_rolled_back {
                    self.on_rollback_detected(to, serial);
                }
                self.push_bay(to, pkt);
            }
            CoreError::Malformed(_) | CoreError::Unreadable(_) | CoreError::Entry(_)
                if pkt.corrupt => {}
            // A forgery is refused as not authentic: the origin's signed chain head no longer
            // matches the altered entry, or the raised acknowledgement breaks the sender's
            // signature.
            CoreError::Refused(Refusal::Unauthentic { .. }) if pkt.forged => {
                self.stats.forged += 1;
            }
            CoreError::Refused(Refusal::Other(m)) if crate::snapshot::needs_recreation(&m) => {
                self.stats.recreate_needed += 1;
                self.beyond_window = true;
                self.set_lossy(format!(
                    "packet #{serial} from {fname} refused at {tn}: {m}"
                ));
            }
            other => self.violation(format!(
                "import of packet #{serial} from {fname} at {tn} failed: {other}"
            )),
        }
    }

    /// Records the forks a refusal names (`origin`, then `also`) as reported. A store that
    /// lost a replica's object names it by its short id.
    fn mark_reported(&mut self, origin: &str, also: &[(String, u64)]) {
        for name in std::iter::once(origin).chain(also.iter().map(|(o, _)| o.as_str())) {
            if let Some(s) = self
                .sites
                .iter()
                .find(|s| s.name == name || s.id.short() == name)
            {
                self.reported.insert(s.id);
            }
        }
    }

    fn on_rollback_detected(&mut self, to: usize, serial: u64) {
        self.stats.rollback_detections += 1;
        let tn = self.sites[to].name.clone();
        self.reported.insert(self.sites[to].id);
        if !self.sites[to].snapshot_rolled && self.lossy.is_empty() {
            self.violation(format!(
                "{tn} refused packet #{serial} as a rollback, but it was never rolled back"
            ));
        }
        self.sites[to].undetected_rollback = false;
    }

    fn push_bay(&mut self, i: usize, pkt: Packet) {
        let bay = &mut self.sites[i].bay;
        if bay.iter().any(|p| p.serial == pkt.serial) {
            return;
        }
        bay.push(pkt);
        if bay.len() > BAY_LIMIT {
            bay.remove(0);
        }
    }

    /// Retries the packets in `i`'s incoming bay until a pass applies nothing.
    fn settle_bay(&mut self, i: usize, faults: bool) {
        loop {
            let bay = std::mem::take(&mut self.sites[i].bay);
            if bay.is_empty() {
                return;
            }
            let before = self.stats.applied;
            for pkt in bay {
                self.deliver(pkt, faults);
            }
            if self.stats.applied == before {
                return;
            }
        }
    }

    // ---------------------------------------------------------------- restores

    /// The backups of site `i` its operator would restore from. With scrubs, the operator
    /// keeps backups for half the restore window: a site restored from one recovers if its
    /// request reaches the siblings within the other half (docs/protocol.md §9).
    fn usable_backups(&self, i: usize) -> Vec<usize> {
        let all = 0..self.sites[i].backups.len();
        // (The simulated clock ticks at every reading: read it only when scrubs run, so a
        // schedule without them is the one it was before scrubs existed.)
        let Some(w) = self.p.retain_ms else {
            return all.collect();
        };
        let now = self.env.now_ms();
        all.filter(|&b| self.sites[i].backups[b].at_ms + w / 2 >= now)
            .collect()
    }

    /// Replaces replica `i` by a copy of one of its backups: `Some(mode)` is `msite restore`
    /// (the store is marked restored) followed by `restorereplica` (now or later), `None` is a
    /// snapshot rollback (a copied directory: no mark, no restorereplica).
    fn restore(&mut self, i: usize, mode: Option<Mode>) {
        let usable = self.usable_backups(i);
        if usable.is_empty() {
            return;
        }
        let b = usable[self.rng.gen_range(0..usable.len())];
        let from_step = self.sites[i].backups[b].step;
        if self.p.retain_ms.is_some() {
            self.sites[i].copy_taken_ms = Some(self.sites[i].backups[b].at_ms);
        }
        let copy = match self.backend.restore(&self.sites[i].backups[b].store) {
            Ok(s) => s,
            Err(e) => {
                self.violation(format!(
                    "restoring the backup of {} failed: {e}",
                    self.sites[i].name
                ));
                return;
            }
        };
        let rep = match msite_core::Replica::open(
            FaultyStore::new(copy, self.sites[i].plan.clone()),
            env_arc(&self.env),
        ) {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!(
                    "opening the backup of {} failed: {e}",
                    self.sites[i].name
                ));
                return;
            }
        };
        let name = self.sites[i].name.clone();
        let known_before: Vec<(ReplicaId, u64)> = self
            .sites
            .iter()
            .map(|s| (s.id, self.rep(i).incarnation_of(&s.id).unwrap_or(0)))
            .collect();
        for (id, inc) in known_before {
            let slot = self.sites[i]
                .incarnations_before_rollback
                .entry(id)
                .or_insert(0);
            *slot = (*slot).max(inc);
        }
        self.sites[i].rep = Some(rep);
        self.sites[i].observed = self.rep(i).own_row().unwrap_or_default();
        // The copy may hold entries whose numbers their origin used again since (a
        // restoration that did not recover them): such an entry is retired, not a new
        // conflict, when it travels on (core gives it up, K13; the final checks see whether it
        // did).
        // Once the copy's chain of an origin differs from what reached the family, every later
        // entry of the copy's chain is of that retired timeline too, reached or not (found by
        // seed 130210128: an entry numbered after the fork point, revived and relayed by a
        // recovering copy before it gave it up, was then counted as reached).
        let ids: Vec<ReplicaId> = self.sites.iter().map(|s| s.id).collect();
        for o in &ids {
            let mut forked = false;
            for e in self.rep(i).entries_of(o).unwrap_or_default() {
                forked |= matches!(self.ledger.reached.get(&(e.origin, e.number)), Some(h) if *h != e.hash);
                if forked {
                    self.ledger
                        .retired
                        .entry((e.origin, e.number))
                        .or_default()
                        .insert(e.hash);
                }
            }
        }
        self.sites[i].pending = None;
        self.sites[i].pending_copy = true;
        self.note_destroyed();
        match mode {
            None => {
                self.stats.rollbacks += 1;
                self.sites[i].snapshot_rolled = true;
                self.sites[i].undetected_rollback = true;
                self.ev(|_| {
                    format!("SNAPSHOT ROLLBACK of {name} to its backup of step {from_step}")
                });
            }
            Some(m) => {
                self.stats.restores += 1;
                if self.scrubbed_any {
                    self.stats.restores_after_scrub += 1;
                }
                self.sites[i].undetected_rollback = false;
                if let Err(e) = self.rep(i).mark_restored() {
                    self.violation(format!("mark_restored at {name} failed: {e}"));
                }
                self.ev(|_| {
                    format!("RESTORE of {name} from its backup of step {from_step} ({m:?})")
                });
                if self.rng.gen_bool(0.7) {
                    self.run_restorereplica(i, m, true);
                } else {
                    self.sites[i].pending = Some(m);
                }
            }
        }
    }

    fn run_restorereplica(&mut self, i: usize, m: Mode, faults: bool) {
        let (wait, ov) = match &m {
            Mode::Default => (Vec::new(), false),
            Mode::WaitFor(w) => (w.clone(), false),
            Mode::Override => (Vec::new(), true),
        };
        let name = self.sites[i].name.clone();
        // The operator runs a lossy mode: the schedule is lossy from this call on, even if it
        // crashes, since a failing write may still apply (a durable write whose sync failed)
        // and the restart's checks then already see its effect.
        if ov {
            self.stats.overrides += 1;
            self.set_lossy(format!("{name} restored with --override"));
        }
        if !wait.is_empty() {
            self.stats.wait_for += 1;
            self.set_lossy(format!("{name} restored with --wait-for"));
        }
        // The documented procedure (PROTOCOL §6.9, docs/protocol.md K3): in default mode the
        // operator also names, by id, the replicas this site created that the restored store
        // does not list (made after the backup); nothing in the store can tell of them.
        let also: Vec<ReplicaId> = if matches!(m, Mode::Default) {
            (0..self.sites.len())
                .filter(|&j| self.sites[j].created_by == Some(i))
                .map(|j| self.sites[j].id)
                .filter(|id| matches!(self.rep(i).view().replica(id), Ok(None)))
                .collect()
        } else {
            Vec::new()
        };
        if !also.is_empty() {
            self.stats.named_created += 1;
            let named: Vec<String> = also.iter().map(|id| self.name_of(id)).collect();
            self.ev(|_| {
                format!(
                    "operator: restorereplica at {name} --also-wait-for {} (created here after the backup)",
                    named.join(" ")
                )
            });
        }
        match self.mutate(i, "restorereplica", faults, |r| {
            if also.is_empty() {
                r.restorereplica(&wait, ov)
            } else {
                r.restorereplica_also(&also, ov)
            }
        }) {
            None => {
                // Crashed: the operator runs it again later.
                self.sites[i].pending = Some(m);
            }
            Some(Ok(start)) => {
                let me = self.sites[i].id;
                let others: Vec<ReplicaId> = self
                    .sites
                    .iter()
                    .map(|s| s.id)
                    .filter(|id| *id != me)
                    .collect();
                let forgot = others
                    .iter()
                    .any(|id| matches!(self.rep(i).view().replica(id), Ok(None)));
                if forgot && !start.amended {
                    self.sites[i].forgot_siblings = true;
                    self.ev(|_| "its restored store does not know every sibling".to_string());
                }
                let amended_copy = start.amended && self.sites[i].pending_copy;
                if amended_copy {
                    self.sites[i].amended_copy = true;
                    self.ev(|_| "restorereplica amended the recovery recorded in the backup (same incarnation)".to_string());
                }
                self.sites[i].pending_copy = false;
                self.sites[i].pending = None;
                if !amended_copy {
                    self.sites[i].undetected_rollback = false;
                }
                // Amending the restoration recorded in a snapshot put back without `msite
                // restore` detects nothing: the store still does not know that its earlier self
                // completed that restoration, and may complete it again under the same number
                // before a packet shows the rollback (the limit of docs/protocol.md, "snapshot
                // rollback before detection"; the model keeps the rollback undetected here too).
                // Found by the simulator, seed 180281979 (K34).
                self.ev(|_| {
                    format!(
                        "restorereplica at {name}: incarnation {}, awaiting [{}]{}{}",
                        start.incarnation,
                        start.awaiting.join(", "),
                        if start.amended { ", amended" } else { "" },
                        if start.completed {
                            ", completed at once"
                        } else {
                            ""
                        }
                    )
                });
                self.observe(i);
            }
            Some(Err(e)) => self.violation(format!("restorereplica at {name} failed: {e}")),
        }
    }

    /// The operator runs `restorereplica` where a replica is locked (restored or rolled back).
    fn repair_locked(&mut self, faults: bool) {
        for i in 0..self.sites.len() {
            let st = match self.rep(i).status() {
                Ok(s) => s,
                Err(e) => {
                    self.violation(format!("status at {} failed: {e}", self.sites[i].name));
                    continue;
                }
            };
            let pending = self.sites[i].pending.clone();
            if st.restored || st.rolled_back.is_some() || pending.is_some() {
                self.stats.operator_fixes += 1;
                let name = self.sites[i].name.clone();
                self.ev(|_| {
                    format!(
                        "operator: restorereplica at {name} (restored {}, rolled back {:?})",
                        st.restored, st.rolled_back
                    )
                });
                self.run_restorereplica(i, pending.unwrap_or(Mode::Default), faults);
                self.settle_bay(i, faults);
            }
        }
    }

    // ---------------------------------------------------------------- healing

    /// Exports along every link, both ways, until nothing moves (true) or `HEAL_ROUNDS` pass.
    /// A round is the operators' scheduled exports, an hour apart: packets a sibling has not
    /// acknowledged are resent once the resend interval has passed (docs/protocol.md §5),
    /// also while other packets keep moving.
    fn heal_rounds(&mut self, first_round: usize) -> bool {
        for round in 0..HEAL_ROUNDS {
            self.step = self.p.steps + 2 + first_round + round;
            if round > 0 {
                self.env.advance(HEAL_ROUND_MS);
            }
            self.repair_locked(false);
            let mut moved = false;
            let edges: Vec<(usize, usize)> = self.edges.iter().copied().collect();
            for (a, b) in edges {
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(pkt) = self.export(x, y, false) {
                        moved = true;
                        self.deliver(pkt, false);
                        self.settle_bay(y, false);
                    }
                }
            }
            if !moved {
                return true;
            }
            if self.violations.len() > 20 {
                return false;
            }
        }
        false
    }

    fn heal(&mut self) {
        self.ev(|_| "---- heal".to_string());
        self.step = self.p.steps + 1;
        self.repair_locked(false);
        while let Some(pkt) = self.take_in_flight(false) {
            let to = pkt.to;
            self.deliver(pkt, false);
            self.settle_bay(to, false);
        }
        for i in 0..self.sites.len() {
            self.settle_bay(i, false);
        }
        let mut settled = self.heal_rounds(0);
        if settled {
            // A day passes and the operators' scheduled exports run again: the keepalive
            // (docs/protocol.md) probes links that have been silent that long. It repairs a
            // sibling put back to an older copy that lost only other origins' entries and so
            // has nothing to say (K11).
            self.ev(|_| "---- a day later".to_string());
            self.env.advance(msite_core::keys::DEFAULT_KEEPALIVE_MS + 1);
            settled = self.heal_rounds(HEAL_ROUNDS);
        }
        if self.violations.len() > 20 {
            return;
        }
        // A site behind retention outside the window keeps asking and being refused (the
        // operator re-creates it; the simulator does not).
        if !settled && !self.live_conflicts_reported() && !self.beyond_window {
            self.violation(format!(
                "did not converge: packets still moving after {HEAL_ROUNDS} heal rounds"
            ));
        }
    }

    /// Whether live replicas hold different entries under one number (so the family cannot
    /// converge), every such conflict having been reported by an import.
    fn live_conflicts_reported(&mut self) -> bool {
        let live = self.live_conflicts();
        !live.is_empty()
            && !self.lossy.is_empty()
            && live
                .iter()
                .all(|(o, k)| self.reported.contains(o) || !self.fork_exposed(o, *k))
    }

    /// Whether two replicas holding different entries under `(o, k)` ever had a packet
    /// delivered between them. A fork between replicas that never exchange anything (every
    /// path between them is blocked, e.g. by another, reported fork, or by packets that wait
    /// for prerequisites an `--override` lost) is applied nowhere and no import can see it
    /// (found by seed 140186951, a chain with six `--override` restorations); once they
    /// exchange, it must be reported.
    fn fork_exposed(&self, o: &ReplicaId, k: u64) -> bool {
        let held: Vec<(usize, Hash)> = (0..self.sites.len())
            .filter_map(|i| match self.rep(i).entry(o, k) {
                Ok(Some(e)) => Some((i, e.hash)),
                _ => None,
            })
            .collect();
        held.iter().any(|(i, a)| {
            held.iter().any(|(j, b)| {
                a != b && (self.exchanged.contains(&(*i, *j)) || self.exchanged.contains(&(*j, *i)))
            })
        })
    }

    /// (origin, number) pairs that two live replicas hold with different hashes.
    fn live_conflicts(&self) -> Vec<(ReplicaId, u64)> {
        let mut held: BTreeMap<(ReplicaId, u64), Hash> = BTreeMap::new();
        let mut out = BTreeSet::new();
        let ids: Vec<ReplicaId> = self.sites.iter().map(|s| s.id).collect();
        for s in &self.sites {
            let r = s.rep.as_ref().expect("replica present");
            for o in &ids {
                // A scrubbed prefix still names its last entry by hash (the chain's base).
                let base = r.chain_base(o).ok().flatten();
                let entries = r.entries_of(o).unwrap_or_default();
                let pairs = base
                    .into_iter()
                    .chain(entries.iter().map(|e| (e.number, e.hash)));
                for (number, hash) in pairs {
                    match held.get(&(*o, number)) {
                        Some(h) if *h != hash => {
                            out.insert((*o, number));
                        }
                        Some(_) => {}
                        None => {
                            held.insert((*o, number), hash);
                        }
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// Traces every replica's state (verbose runs).
    fn dump_state(&mut self) {
        if !self.verbose {
            return;
        }
        let names: BTreeMap<ReplicaId, String> =
            self.sites.iter().map(|s| (s.id, s.name.clone())).collect();
        let nm = |id: &ReplicaId| names.get(id).cloned().unwrap_or_else(|| id.short());
        let row = |r: &Row| {
            r.0.iter()
                .map(|(o, n)| format!("{}:{n}", nm(o)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut lines = Vec::new();
        for i in 0..self.sites.len() {
            let r = self.rep(i);
            let own = r.own_row().map(|x| row(&x)).unwrap_or_default();
            let st = r.status().ok();
            let inc = st.as_ref().map(|s| s.incarnation).unwrap_or(0);
            let rec = st.as_ref().and_then(|s| s.recovering.clone()).map(|rc| {
                format!(
                    " RECOVERING inc {} row [{}] awaiting {{{}}}",
                    rc.incarnation,
                    row(&rc.row),
                    rc.awaited
                        .iter()
                        .map(|(a, h)| format!("{}={h:?}", nm(a)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            let reqs = r
                .held_requests()
                .unwrap_or_default()
                .iter()
                .map(|q| format!("{}@{} [{}]", nm(&q.replica), q.incarnation, row(&q.row)))
                .collect::<Vec<_>>()
                .join("; ");
            let packs = r
                .provisional_acks()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    format!(
                        "{}->{}@{} held {}",
                        nm(&a.acker),
                        nm(&a.replica),
                        a.incarnation,
                        a.held
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let incs = self
                .sites
                .iter()
                .map(|s| format!("{}={}", s.name, r.incarnation_of(&s.id).unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(" ");
            let known = self
                .sites
                .iter()
                .filter(|s| matches!(r.view().replica(&s.id), Ok(Some(_))))
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
                .join(",");
            lines.push(format!(
                "state {}: inc {inc}{} own [{own}] requests [{reqs}] prov-acks [{packs}] incarnations [{incs}] knows [{known}]",
                self.sites[i].name,
                rec.unwrap_or_default()
            ));
        }
        for l in lines {
            self.ev(|_| l);
        }
    }

    /// Tags the violations with the known protocol bugs whose signature the end state shows.
    fn diagnose(&mut self) {
        let n = self.sites.len();
        let st: Vec<Option<msite_core::Status>> =
            (0..n).map(|i| self.rep(i).status().ok()).collect();
        let rec_inc = |i: usize| {
            st[i]
                .as_ref()
                .and_then(|s| s.recovering.as_ref().map(|r| r.incarnation))
        };
        let edges: Vec<(usize, usize)> = self.edges.iter().copied().collect();
        for (a, b) in edges {
            for (r, nb) in [(a, b), (b, a)] {
                let Some(inc) = rec_inc(r) else { continue };
                let nb_knows = self.rep(nb).incarnation_of(&self.sites[r].id).unwrap_or(0);
                if nb_knows >= inc {
                    continue;
                }
                // `nb` never learned of `r`'s restore and its packets to `r` are stale.
                let r_knows_nb =
                    matches!(self.rep(r).view().replica(&self.sites[nb].id), Ok(Some(_)));
                if let Some(nb_inc) = rec_inc(nb) {
                    let r_sees = self.rep(r).incarnation_of(&self.sites[nb].id).unwrap_or(0);
                    if r_sees < nb_inc {
                        self.known.insert("K1");
                    }
                }
                if !r_knows_nb {
                    self.known.insert("K2");
                }
            }
        }
        // K5: a recovering replica awaits a sibling whose acknowledgement of this very
        // incarnation it already holds (an amend re-added a flag that had been cleared).
        for (i, sti) in st.iter().enumerate() {
            let Some(rc) = sti.as_ref().and_then(|s| s.recovering.clone()) else {
                continue;
            };
            let me = self.sites[i].id;
            for (sib, held) in &rc.awaited {
                if held.is_some() {
                    continue;
                }
                let acked = self
                    .rep(i)
                    .entries_of(sib)
                    .unwrap_or_default()
                    .iter()
                    .any(|e| {
                        matches!(&e.op, msite_core::Op::RestoreAck { replica, incarnation, .. }
                        if *replica == me && *incarnation == rc.incarnation)
                    });
                if acked {
                    self.known.insert("K5");
                }
            }
        }
        // K7: a replica restored from a backup taken while it recovered kept that recovery's
        // incarnation, so its siblings' estimates of it stay too high.
        if self.sites.iter().any(|s| s.amended_copy) {
            self.known.insert("K7");
        }
        // K8: the family did not converge and a replica believes a neighbour holds entries
        // the neighbour does not hold (an estimate never rolled back after a restore).
        let own_rows: Vec<Option<Row>> = (0..n).map(|i| self.rep(i).own_row().ok()).collect();
        if own_rows.iter().any(|r| *r != own_rows[0]) {
            for &(a, b) in &self.edges {
                for (x, y) in [(a, b), (b, a)] {
                    let (Ok(est), Some(Some(own))) =
                        (self.rep(x).estimate(&self.sites[y].id), own_rows.get(y))
                    else {
                        continue;
                    };
                    if est.0.iter().any(|(o, k)| *k > own.get(o)) && rec_inc(y).is_none() {
                        self.known.insert("K8");
                    }
                }
            }
        }
        // K10: the family did not converge, a replica still has unacknowledged packets to a
        // neighbour and believes the neighbour holds more than it does: it waits for a report
        // before resending, and the neighbour, having reported once, has nothing more to say.
        if own_rows.iter().any(|r| *r != own_rows[0]) {
            for &(a, b) in &self.edges {
                for (x, y) in [(a, b), (b, a)] {
                    let unacked = self.rep(x).unacknowledged(&self.sites[y].id).unwrap_or(0);
                    let (Ok(est), Some(Some(own))) =
                        (self.rep(x).estimate(&self.sites[y].id), own_rows.get(y))
                    else {
                        continue;
                    };
                    if unacked > 0
                        && est.0.iter().any(|(o, k)| *k > own.get(o))
                        && rec_inc(x).is_none()
                        && rec_inc(y).is_none()
                    {
                        self.known.insert("K10");
                    }
                }
            }
        }
        // K11: the family did not converge and a replica believes a neighbour that was rolled
        // back by a snapshot holds more than it does (a rollback that lost only other origins'
        // entries is never detected, and acknowledgement state only ever rises).
        if own_rows.iter().any(|r| *r != own_rows[0]) {
            for &(a, b) in &self.edges {
                for (x, y) in [(a, b), (b, a)] {
                    let (Ok(est), Some(Some(own))) =
                        (self.rep(x).estimate(&self.sites[y].id), own_rows.get(y))
                    else {
                        continue;
                    };
                    if (self.sites[y].snapshot_rolled || self.sites[x].snapshot_rolled)
                        && est.0.iter().any(|(o, k)| *k > own.get(o))
                    {
                        self.known.insert("K11");
                    }
                }
            }
        }
        // K13: live replicas hold different entries under a number of a replica that is still
        // recovering (its backup predates its previous restoration and revived own entries
        // that restoration had lost and renumbered).
        for (o, _) in self.live_conflicts() {
            if let Some(oi) = self.sites.iter().position(|s| s.id == o) {
                if rec_inc(oi).is_some() {
                    self.known.insert("K13");
                }
            }
        }
        // K15: a recovering replica whose restoration a sibling already saw complete (a store
        // put back from a copy of an older recovery): the sibling ignores its request for ever.
        for (i, sti) in st.iter().enumerate() {
            let Some(rc) = sti.as_ref().and_then(|s| s.recovering.clone()) else {
                continue;
            };
            let me = self.sites[i].id;
            let seen_complete = (0..n).any(|j| {
                j != i && self.rep(j).completed_incarnation(&me).unwrap_or(0) >= rc.incarnation
            });
            if seen_complete {
                self.known.insert("K15");
            }
        }
        // K14: live replicas hold different entries under a number (a lossy restore reused
        // it) and no import ever reported it: no packet carried that origin's entries across.
        if !self.lossy.is_empty() {
            for (o, _) in self.live_conflicts() {
                if !self.reported.contains(&o) {
                    self.known.insert("K14");
                }
            }
        }
        // K6: a replica acknowledged a recovering replica's request with a numbered entry, but
        // the acknowledgement never reached it while another replica recovers too (a recovering
        // replica's packets carry its request only, so it relays nobody's entries).
        let recovering_count = (0..n).filter(|&i| rec_inc(i).is_some()).count();
        if recovering_count >= 2 {
            for (i, sti) in st.iter().enumerate() {
                let Some(rc) = sti.as_ref().and_then(|s| s.recovering.clone()) else {
                    continue;
                };
                let me = self.sites[i].id;
                for (sib, held) in &rc.awaited {
                    let Some(j) = self.sites.iter().position(|s| s.id == *sib) else {
                        continue;
                    };
                    if held.is_some() || rec_inc(j).is_some() {
                        continue;
                    }
                    let acked_there = self.rep(j).entries_of(sib).unwrap_or_default().iter().any(
                        |e| {
                            matches!(&e.op, msite_core::Op::RestoreAck { replica, incarnation, .. }
                            if *replica == me && *incarnation == rc.incarnation)
                        },
                    );
                    if acked_there {
                        self.known.insert("K6");
                    }
                }
            }
        }
        // K4: the family did not converge and a replica cannot export to a neighbour it does
        // not know (so it cannot acknowledge that neighbour's packets, and a lost one is never
        // resent).
        let rows: Vec<Option<Row>> = (0..n).map(|i| self.rep(i).own_row().ok()).collect();
        for &(a, b) in &self.edges {
            for (x, y) in [(a, b), (b, a)] {
                let knows = matches!(self.rep(x).view().replica(&self.sites[y].id), Ok(Some(_)));
                if !knows && (rec_inc(x).is_some() || rec_inc(y).is_some()) {
                    self.known.insert("K2");
                }
            }
        }
        if rows.iter().any(|r| *r != rows[0]) {
            for &(a, b) in &self.edges {
                for (x, y) in [(a, b), (b, a)] {
                    let knows =
                        matches!(self.rep(x).view().replica(&self.sites[y].id), Ok(Some(_)));
                    if !knows && rec_inc(x).is_none() && rec_inc(y).is_none() {
                        self.known.insert("K4");
                    }
                }
            }
        }
        // K1 in general: after healing, a replica still does not know a neighbour's current
        // incarnation (the neighbour restored, whether still recovering or completed).
        for &(a, b) in &self.edges {
            let inc = |i: usize| st[i].as_ref().map(|s| s.incarnation).unwrap_or(0);
            let a_sees_b = self.rep(a).incarnation_of(&self.sites[b].id).unwrap_or(0);
            let b_sees_a = self.rep(b).incarnation_of(&self.sites[a].id).unwrap_or(0);
            if a_sees_b < inc(b) || b_sees_a < inc(a) {
                self.known.insert("K1");
            }
        }
        let tags: Vec<&str> = self.known.iter().copied().collect();
        for t in tags {
            let what = KNOWN_BUGS
                .iter()
                .find(|k| k.0 == t)
                .map(|k| k.1)
                .unwrap_or("");
            if FIXED_BUGS.contains(&t) {
                // A fixed bug's symptom explains nothing: a regression, or a new bug.
                self.known.remove(t);
                self.violations.push(format!(
                    "diagnosis: the symptoms resemble {t}, which is fixed (a regression, or a new bug): {what}"
                ));
            } else {
                self.violations
                    .push(format!("diagnosis: matches open bug {t}: {what}"));
            }
        }
    }

    fn final_checks(&mut self) {
        let n = self.sites.len();
        for i in 0..n {
            self.check_integrity(i, "at the end");
            self.observe(i);
        }
        let live = self.live_conflicts();
        if !live.is_empty() {
            for (o, k) in &live {
                let name = self.name_of(o);
                if self.lossy.is_empty() {
                    self.violation(format!(
                        "live replicas hold different entries under {name} {k}"
                    ));
                } else if !self.reported.contains(o) && self.fork_exposed(o, *k) {
                    self.violation(format!("live replicas hold different entries under {name} {k}, and no import reported it"));
                } else if !self.reported.contains(o) {
                    self.ev(|_| {
                        format!("fork of {name} {k} between replicas that never exchanged a packet: applied nowhere, seen by no import")
                    });
                }
            }
            self.stats.unconvergeable = 1;
            self.ev(|_| {
                "live conflicts (reported): convergence and completion not checked".to_string()
            });
            return;
        }
        if self.beyond_window {
            self.stats.unconvergeable = 1;
            self.ev(|_| {
                "a site is behind retention, outside the window: convergence and completion not checked".to_string()
            });
            return;
        }
        // Convergence.
        let rows: Vec<Option<Row>> = (0..n).map(|i| self.rep(i).own_row().ok()).collect();
        let digests: Vec<Option<Hash>> = (0..n).map(|i| self.rep(i).digest().ok()).collect();
        for i in 1..n {
            if rows[i] != rows[0] {
                self.violation(format!(
                    "not converged: own rows of {} and {} differ",
                    self.sites[0].name, self.sites[i].name
                ));
            } else if digests[i] != digests[0] {
                self.violation(format!(
                    "not converged: digests of {} and {} differ with equal own rows",
                    self.sites[0].name, self.sites[i].name
                ));
            }
        }
        // Completion.
        for i in 0..n {
            let name = self.sites[i].name.clone();
            match self.rep(i).status() {
                Ok(st) => {
                    if st.recovering.is_some() {
                        self.violation(format!("{name} is still recovering after healing"));
                    }
                    if st.restored || st.rolled_back.is_some() {
                        self.violation(format!("{name} is still locked after healing"));
                    }
                }
                Err(e) => self.violation(format!("status at {name} failed: {e}")),
            }
            if !self
                .rep(i)
                .held_requests()
                .map(|v| v.is_empty())
                .unwrap_or(false)
            {
                self.violation(format!("{name} still holds restore requests after healing"));
            }
            if !self
                .rep(i)
                .provisional_acks()
                .map(|v| v.is_empty())
                .unwrap_or(false)
            {
                self.violation(format!(
                    "{name} still holds provisional acknowledgements after healing"
                ));
            }
        }
        // No loss.
        if self.lossy.is_empty() {
            if let Some(row) = rows[0].clone() {
                let missing: Vec<(ReplicaId, u64)> = self
                    .ledger
                    .reached
                    .keys()
                    .filter(|id| !self.ledger.destroyed.contains(id) && row.get(&id.0) < id.1)
                    .copied()
                    .collect();
                for (o, k) in missing.iter().take(5) {
                    let name = self.name_of(o);
                    self.violation(format!(
                        "lost: {name} {k} reached a sibling but is held nowhere after healing"
                    ));
                }
            }
        }
    }
}

fn short_hash(h: &Hash) -> String {
    h[..4].iter().map(|b| format!("{b:02x}")).collect()
}
