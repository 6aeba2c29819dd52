//! `msite-sim`: a deterministic, FoundationDB-style simulator of msite's replication protocol.
//!
//! One seed gives one schedule, bit for bit: a family of 2–7 replicas on in-memory stores
//! (or, with `--backend sqlite|rocks`, real engines in temporary directories: see
//! [`backend`]; wrapped in [`FaultyStore`](msite_core::testkit::FaultyStore) for crash
//! injection), a
//! topology, a workload of every kind of change, and faults — lost, duplicated, delayed,
//! reordered, corrupted and forged packets (a malicious relay), crashes at any write of an import, an export or a local
//! change, backups, restores (default, `--wait-for`, `--override`, several at once, from older
//! backups) and snapshot rollbacks. Everything goes through the real protocol code and the
//! real packet format. After the random phase the family is healed (everything delivered,
//! then every replica exports to every neighbour until nothing moves) and the invariants of
//! PROTOCOL §8 are checked; some are also checked continuously (see [`world`]).
//!
//! Nothing here reads the wall clock or iterates a hash map to decide anything: the protocol
//! runs on [`msite_core::SimEnv`] and every decision comes from one ChaCha generator.

pub mod backend;
pub mod ledger;
pub mod snapshot;
pub mod world;

use std::fmt;

use msite_backends::BackendKind;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The schedule's seed.
    pub seed: u64,
    /// Override the number of random steps drawn from the seed (for shrinking).
    pub steps: Option<usize>,
    /// Override the maximum number of replicas drawn from the seed (for shrinking).
    pub replicas: Option<usize>,
    /// Record the event trace.
    pub verbose: bool,
    /// Narrow the schedules (the default draws everything).
    pub profile: Profile,
    /// The stores the replicas run on.
    pub backend: Backend,
}

/// Which store engine the replicas run on: one per [`BackendKind`] (the one list of
/// backends), converted both ways by exhaustive matches, so a new backend does not compile
/// until the simulator names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// In-memory stores (`MemStore`); backups and restores are deep copies. Always built.
    #[default]
    Mem,
    /// SQLite stores in temporary directories (feature `sqlite`).
    Sqlite,
    /// RocksDB stores in temporary directories (feature `rocks`).
    Rocks,
    /// PostgreSQL stores, a new database each, on the server `MSITE_PG_SERVER` names (the
    /// binary starts a scratch server when it is unset; feature `postgres`).
    Postgres,
}

impl Backend {
    /// The backend of `kind`.
    pub fn of(kind: BackendKind) -> Backend {
        match kind {
            BackendKind::Mem => Backend::Mem,
            BackendKind::Sqlite => Backend::Sqlite,
            BackendKind::Rocks => Backend::Rocks,
            BackendKind::Postgres => Backend::Postgres,
        }
    }

    /// The kind of this backend in the one list.
    pub fn kind(self) -> BackendKind {
        match self {
            Backend::Mem => BackendKind::Mem,
            Backend::Sqlite => BackendKind::Sqlite,
            Backend::Rocks => BackendKind::Rocks,
            Backend::Postgres => BackendKind::Postgres,
        }
    }

    /// Whether this build of the simulator has the backend: its cargo feature, named like the
    /// backend, is on in this crate (a feature another crate of the same build turned on in
    /// `msite-backends` does not count).
    pub fn is_built(self) -> bool {
        match self {
            Backend::Mem => true,
            Backend::Sqlite => cfg!(feature = "sqlite"),
            Backend::Rocks => cfg!(feature = "rocks"),
            Backend::Postgres => cfg!(feature = "postgres"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BackendKind::parse(s).map(Backend::of).ok_or_else(|| {
            let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown backend `{s}` ({})", names.join(", "))
        })
    }
}

/// Which schedules to draw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// Everything the seed draws, retirement included, and half the new replicas made from a
    /// snapshot creation packet (a fifth of those after a damaged copy was refused).
    #[default]
    All,
    /// No backups restored: synchronisation, packet faults and crashes only.
    Sync,
    /// Restores in default mode only (no `--override`, `--wait-for` or snapshot rollback).
    DefaultRestores,
    /// Every mutating call has a one-in-four chance of a failing write.
    Crashy,
    /// The default run's schedules without retirement: what this profile ran before snapshot
    /// creation joined the default run (a snapshot-made replica that must give up entries its
    /// snapshot holds is re-created, counted as `recreate_needed`; docs/testing.md).
    Snapshots,
    /// Everything the seed draws, and key rotations (`msite rekey`) at random replicas, a
    /// packet signed before each in flight. Not in the default run: rotation with recovery,
    /// and a new replica's vouched key rotated before a sibling learns it, still fail some
    /// schedules (docs/protocol.md §8, "Not done").
    Rekey,
    /// The default run's schedules (everything the seed draws, retirement included: four
    /// schedules in ten close a replica for good and retire it; docs/testing.md
    /// "Retirement"). The name stays for the commands and regression seeds that use it.
    Retire,
}

impl Profile {
    /// Whether the profile's schedules may retire a replica (`rmreplica`, `chmaster --all
    /// --from`): the default run's do. The narrowed profiles keep the schedules they had.
    pub fn retires(self) -> bool {
        matches!(self, Profile::All | Profile::Retire)
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::All => "all",
            Profile::Sync => "sync",
            Profile::DefaultRestores => "default-restores",
            Profile::Crashy => "crashy",
            Profile::Snapshots => "snapshots",
            Profile::Rekey => "rekey",
            Profile::Retire => "retire",
        })
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Profile::All),
            "sync" => Ok(Profile::Sync),
            "default-restores" => Ok(Profile::DefaultRestores),
            "crashy" => Ok(Profile::Crashy),
            "snapshots" => Ok(Profile::Snapshots),
            "rekey" => Ok(Profile::Rekey),
            "retire" => Ok(Profile::Retire),
            _ => Err(format!(
                "unknown profile `{s}` (all, sync, default-restores, crashy, snapshots, rekey, retire)"
            )),
        }
    }
}

/// Counters summed over schedules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Schedules run.
    pub schedules: u64,
    /// Random steps taken.
    pub steps: u64,
    /// Packets exported.
    pub packets: u64,
    /// Imports that applied.
    pub applied: u64,
    /// Entries applied by imports.
    pub entries_applied: u64,
    /// Local changes that succeeded.
    pub ops_ok: u64,
    /// Local changes the protocol refused (not master, exists, locked…).
    pub ops_refused: u64,
    /// Replicas created mid-run.
    pub mkreplicas: u64,
    /// Backups taken.
    pub backups: u64,
    /// Restores from backup followed by `restorereplica` (every mode).
    pub restores: u64,
    /// Restores completed with `--override`.
    pub overrides: u64,
    /// Restores with an explicit `--wait-for` set.
    pub wait_for: u64,
    /// `restorereplica` run again while recovering.
    pub amends: u64,
    /// Snapshot rollbacks (a copy opened without `msite restore`).
    pub rollbacks: u64,
    /// `restorereplica` run by the operator on a locked replica.
    pub operator_fixes: u64,
    /// Default-mode restorations where the operator also named, by id, replicas the site
    /// created after its backup (`restorereplica --also-wait-for`; PROTOCOL §6.9, K3).
    pub named_created: u64,
    /// Packets lost.
    pub lost: u64,
    /// Packets duplicated.
    pub duplicated: u64,
    /// Packets delivered after waiting in flight for several steps.
    pub delayed: u64,
    /// Packets delivered before an older one on the same link.
    pub reordered: u64,
    /// Corrupted packets delivered.
    pub corrupted: u64,
    /// Packets forged in flight (a relayed entry altered by its malicious sender, which signs
    /// the packet again; or an acknowledgement raised by a third party) and refused as not
    /// authentic.
    pub forged: u64,
    /// Crashes injected (a failed write, then a restart).
    pub crashes: u64,
    /// Imports that waited for prerequisites.
    pub waits: u64,
    /// Packets refused as stale.
    pub stale: u64,
    /// Packets refused as divergent.
    pub divergent: u64,
    /// Packets refused because their recovering sender relayed entries a newer restoration
    /// replaced (K13; the sender gives them up when it receives the newer ones).
    pub retired_relays: u64,
    /// Rollbacks detected by an import.
    pub rollback_detections: u64,
    /// Of those, the ones an import found as a different entry under one of the importer's
    /// own numbers (a rolled-back replica that numbered again; `Refusal::OwnFork`).
    pub own_forks: u64,
    /// Restore requests learned from packets refused as stale for their target.
    pub learned_from_stale: u64,
    /// Forks the operator repaired after healing (`msite repairfork`, one decision each),
    /// after which the family must converge.
    pub fork_repairs: u64,
    /// Schedules where entries may be lost by design (override, `--wait-for`, a rolled-back
    /// replica writing before detection).
    pub lossy: u64,
    /// Lossy schedules whose reported conflicts keep them from converging (convergence and
    /// completion not checked).
    pub unconvergeable: u64,
    /// Entries whose every copy was destroyed by restores of several replicas (exempt from
    /// the no-loss check).
    pub destroyed: u64,
    /// Scrubs run (oplog retention, docs/protocol.md §9).
    pub scrubs: u64,
    /// Oplog entries the scrubs dropped.
    pub scrubbed: u64,
    /// Exports and imports refused as needing entries retention dropped (exact refusals are
    /// violations; this counts the warnings on a sibling's report too).
    pub behind_retention: u64,
    /// Restores (`msite restore` + `restorereplica`) after a scrub dropped entries in the
    /// same schedule.
    pub restores_after_scrub: u64,
    /// Schedules where a site restored (or rolled back) from a copy asked for it more than a
    /// restore window after the copy was taken, and a scrub had dropped what it lacks: outside
    /// the retention guarantee (lossy; told to re-create the site; convergence not checked).
    pub beyond_window: u64,
    /// Replicas made from a snapshot creation packet (the others from the history).
    pub snapshot_creations: u64,
    /// Damaged snapshot creation packets refused (none may make a replica).
    pub damaged_snapshots: u64,
    /// Imports refused because the importer must give up entries its missing history would
    /// let it rebuild without (a snapshot-made or scrubbed replica; told to re-create it).
    pub recreate_needed: u64,
    /// Key rotations (`msite rekey`) in the random phase, each with a packet signed before
    /// it in flight.
    pub rotations: u64,
    /// Replicas retired (`msite rmreplica`, by the master of the replica object or by the
    /// replica itself; docs/protocol.md §10).
    pub retirements: u64,
    /// Of those, replicas that retired themselves.
    pub self_retirements: u64,
    /// `rmreplica` refused because a sibling reported holding more of the replica's entries
    /// than the retiring replica.
    pub rm_refused_behind: u64,
    /// `rmreplica` of itself refused because the replica still masters objects.
    pub rm_refused_masters: u64,
    /// `chmaster --all --from` refused because the replica was not retired (yet) there.
    pub takeover_refused: u64,
    /// Objects taken over from a retired replica (`chmaster --all --from`).
    pub taken_over: u64,
    /// Packets of a retired replica refused as such (stale packets still arriving).
    pub from_retired: u64,
    /// Restores of a surviving replica from a backup taken before the retirement.
    pub restores_before_retirement: u64,
    /// Retirements whose every copy at the survivors was lost (given up with a forked
    /// timeline, or rolled back) while the retired replica was stopped: it was started again.
    pub retirements_lost: u64,
    /// Replicas closed because a fork decision gave up their own creation.
    pub stranded_closed: u64,
}

impl Stats {
    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Stats) {
        macro_rules! sum { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        sum!(
            schedules,
            steps,
            packets,
            applied,
            entries_applied,
            ops_ok,
            ops_refused,
            mkreplicas,
            backups,
            restores,
            overrides,
            wait_for,
            amends,
            rollbacks,
            operator_fixes,
            named_created,
            lost,
            duplicated,
            delayed,
            reordered,
            corrupted,
            forged,
            crashes,
            waits,
            stale,
            divergent,
            retired_relays,
            rollback_detections,
            own_forks,
            learned_from_stale,
            fork_repairs,
            lossy,
            unconvergeable,
            destroyed,
            scrubs,
            scrubbed,
            behind_retention,
            restores_after_scrub,
            beyond_window,
            snapshot_creations,
            damaged_snapshots,
            recreate_needed,
            rotations,
            retirements,
            self_retirements,
            rm_refused_behind,
            rm_refused_masters,
            takeover_refused,
            taken_over,
            from_retired,
            restores_before_retirement,
            retirements_lost,
            stranded_closed
        );
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "restores={} lost={} duplicated={} reordered={} corrupted={} forged={} crashes={} rollbacks={} overrides={} \
             wait_for={} amends={} delayed={} backups={} mkreplicas={} packets={} applied={} entries={} ops={} \
             refused_ops={} waits={} stale={} divergent={} retired_relays={} rollback_detections={} own_forks={} fork_repairs={} learned_from_stale={} operator_fixes={} named_created={} lossy={} \
             unconvergeable={} destroyed={} scrubs={} scrubbed={} behind_retention={} restores_after_scrub={} beyond_window={} \
             snapshot_creations={} damaged_snapshots={} recreate_needed={} rotations={} retirements={} self_retirements={} \
             rm_refused_behind={} rm_refused_masters={} takeover_refused={} taken_over={} from_retired={} \
             restores_before_retirement={} retirements_lost={} stranded_closed={} steps={}",
            self.restores,
            self.lost,
            self.duplicated,
            self.reordered,
            self.corrupted,
            self.forged,
            self.crashes,
            self.rollbacks,
            self.overrides,
            self.wait_for,
            self.amends,
            self.delayed,
            self.backups,
            self.mkreplicas,
            self.packets,
            self.applied,
            self.entries_applied,
            self.ops_ok,
            self.ops_refused,
            self.waits,
            self.stale,
            self.divergent,
            self.retired_relays,
            self.rollback_detections,
            self.own_forks,
            self.fork_repairs,
            self.learned_from_stale,
            self.operator_fixes,
            self.named_created,
            self.lossy,
            self.unconvergeable,
            self.destroyed,
            self.scrubs,
            self.scrubbed,
            self.behind_retention,
            self.restores_after_scrub,
            self.beyond_window,
            self.snapshot_creations,
            self.damaged_snapshots,
            self.recreate_needed,
            self.rotations,
            self.retirements,
            self.self_retirements,
            self.rm_refused_behind,
            self.rm_refused_masters,
            self.takeover_refused,
            self.taken_over,
            self.from_retired,
            self.restores_before_retirement,
            self.retirements_lost,
            self.stranded_closed,
            self.steps
        )
    }
}

/// The result of one schedule.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Invariant violations (empty: the schedule passed).
    pub violations: Vec<String>,
    /// Counters.
    pub stats: Stats,
    /// The event trace (only with [`Config::verbose`]).
    pub trace: Vec<String>,
    /// Random steps this schedule drew (after overrides).
    pub steps: usize,
    /// Maximum replicas this schedule drew (after overrides).
    pub replicas: usize,
    /// Known protocol bugs the violations match (tags of [`world::KNOWN_BUGS`]).
    pub known: Vec<&'static str>,
}

/// Runs one schedule. A panic in the protocol code is caught and reported as a violation.
pub fn run_schedule(cfg: &Config) -> Outcome {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_on(cfg)));
    match r {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".into());
            Outcome {
                seed: cfg.seed,
                violations: vec![format!("panic: {msg}")],
                stats: Stats {
                    schedules: 1,
                    ..Default::default()
                },
                ..Default::default()
            }
        }
    }
}

/// Runs one schedule on the backend `cfg` names: in memory, or on the engine of its kind.
fn run_on(cfg: &Config) -> Outcome {
    let backend = cfg.backend;
    if backend == Backend::Mem {
        return world::World::run(cfg, backend::MemBackend);
    }
    if !backend.is_built() {
        panic!("this msite-sim was built without the {backend} backend (cargo feature `{backend}`)")
    }
    msite_backends::with_engine!(backend.kind(), E => world::World::run(
        cfg,
        backend::DirBackend::<E>::new().expect("a temporary directory"),
    ))
    .unwrap_or_else(|absent| panic!("{absent}"))
}

/// Shrinks a failing schedule: the smallest step count and replica cap (tried in that order,
/// halving then trimming) for which the same seed still fails. Returns `(steps, replicas)`.
pub fn shrink(
    seed: u64,
    steps: usize,
    replicas: usize,
    profile: Profile,
    backend: Backend,
) -> (usize, usize) {
    // A shrunk schedule must fail the same way: explained by the same known bugs (or by none).
    let class = run_schedule(&Config {
        seed,
        steps: Some(steps),
        replicas: Some(replicas),
        verbose: false,
        profile,
        backend,
    })
    .known;
    let fails = |s: usize, r: usize| {
        let o = run_schedule(&Config {
            seed,
            steps: Some(s),
            replicas: Some(r),
            verbose: false,
            profile,
            backend,
        });
        !o.violations.is_empty() && o.known == class
    };
    let mut s = steps;
    let mut r = replicas;
    // Fewer steps: binary search for the shortest failing prefix (a prefix of the same draws).
    let (mut lo, mut hi) = (0usize, s);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(mid, r) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if fails(hi, r) {
        s = hi;
    }
    // Fewer replicas (the draws change, so test each).
    while r > 2 && fails(s, r - 1) {
        r -= 1;
    }
    (s, r)
}
