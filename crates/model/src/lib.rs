//! An abstract, exhaustively checked model of msite's epoch matrix and restore protocol
//! (PROTOCOL §3–§6, issue #6), built for [`stateright`].
//!
//! The model follows the protocol *as built* in `crates/core/src/sync/` and `restore.rs`,
//! not an idealised one: per-origin entry numbers; an own row (the oplog lengths) and
//! estimate rows; export sends the entries above the estimate and raises the estimate unless
//! the target is recovering; import checks incarnations (stale refusal, which still learns
//! the sender's own restore request; rollback detection),
//! prerequisites (the packet waits), divergence at the base and under held numbers, skips
//! held entries, then applies controls; restore requests and provisional acknowledgements are
//! control records carried in every packet until the restore completes; numbered
//! `RestoreAck` entries from non-recovering siblings carry `held`; the recovering replica
//! clears an awaited sibling once it has an ack for its incarnation and holds `held` of its
//! own entries (a provisional ack counts only from an older restoration, K32); completion appends `RestoreComplete`; siblings drop the request on applying
//! it and never resurrect an incarnation `<=` the completed one.
//!
//! It follows the design as fixed in commit e375191: `restorereplica` on a store marked
//! restored or rolled back always starts a new restoration (new incarnation, every sibling
//! awaited, no acknowledgements), discarding a recovering record that came with the backup;
//! on any other store it amends the running restoration, keeping the incarnation. The
//! recovering record keeps every acknowledgement received for its incarnation (`acks`), and
//! amending re-adds a sibling as already acknowledged when its ack is there.
//!
//! # Abstractions (what the model leaves out, on purpose)
//! - Entries carry no object-base operation: a local change is `Op::Write`. An entry's
//!   identity token is `(origin, number, life, op)`, where `life` counts how often its origin's
//!   store was replaced (restore from backup, snapshot rollback): two entries made under the
//!   same number in different lives are different entries, as their hashes would be.
//! - Hash chains are reduced to comparing tokens at the base and under held numbers.
//! - Packet ids (the "imported before" check) and the per-target sequence numbers that resend
//!   lost packets (§5) are not modelled. Re-importing a packet goes through the ordinary checks
//!   instead (they make it a no-op or a refusal). The loss-recovery mechanism appears only in
//!   the heal procedure as a "resync": a sender whose target is not recovering lowers its
//!   estimate to what the target holds, as the §5 acknowledgements eventually make it do.
//! - Entries in a packet are ordered by origin, then number (the real order is the apply
//!   order; the effects of one import commute, see `import`).
//! - Incarnations are a global logical clock (the real ones are timestamps), so a new
//!   incarnation is later than every earlier one.
//! - Default waiting mode only (`restorereplica` without `--wait-for` or `--override`), a
//!   fixed family of three replicas (no `mkreplica`), full mesh. Amending (`restorereplica`
//!   again while recovering) is an action of the model, but with a fixed waiting set it
//!   changes nothing in the correct protocol; it matters for [`Mutation::AmendForgetsAcks`].
//! - Oplog retention (`retain`): scrubs and a restore window of one tick, with the window's
//!   premise built into the actions (a store is put back only from a copy of the current
//!   window, and the window waits for restore requests to reach every sibling).
//! - A replica that is recovering and receives a packet naming a newer incarnation of itself
//!   (core: `on_newer_incarnation` moves the request to a newer incarnation) is not modelled:
//!   incarnations come from a global clock and a restored store always takes a new one, so
//!   this needs a mutation to happen.

// Rows and matrices are indexed by replica id throughout, as in the protocol's own words.
#![allow(clippy::needless_range_loop)]

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use stateright::{Model, Property};

pub mod retain;

use retain::Prerequisites;

/// Number of replicas.
pub const N: usize = 3;

/// A replica id (0..N).
pub type Rid = u8;

/// A row: per origin, a count of entries.
pub type Row = [u8; N];

const NAMES: [&str; N] = ["A", "B", "C"];

fn name(r: Rid) -> &'static str {
    NAMES[r as usize]
}

fn row_str(r: &Row) -> String {
    format!("[{} {} {}]", r[0], r[1], r[2])
}

/// The operation an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// A local change.
    Write,
    /// `RestoreAck`: the origin received `replica`'s request for `inc` holding `held` of its entries.
    Ack {
        /// The restoring replica.
        replica: Rid,
        /// Its incarnation.
        inc: u8,
        /// How many of its entries the acker held.
        held: u8,
    },
    /// `RestoreComplete` of the origin's restore `inc`, with the origin's row after it.
    Complete {
        /// The incarnation completed.
        inc: u8,
        /// The row carried.
        row: Row,
    },
}

/// An oplog entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// The origin.
    pub origin: Rid,
    /// Its number at the origin (1-based).
    pub number: u8,
    /// The origin's store generation when it was made (see the module docs).
    pub life: u8,
    /// What it records.
    pub op: Op,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", name(self.origin), self.number)?;
        if self.life > 0 {
            write!(f, "'{}", self.life)?;
        }
        match self.op {
            Op::Write => Ok(()),
            Op::Ack { replica, inc, held } => {
                write!(f, "(ack {}@{inc} held {held})", name(replica))
            }
            Op::Complete { inc, row } => write!(f, "(complete @{inc} {})", row_str(&row)),
        }
    }
}

/// A restore request (control record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Request {
    /// The restoring replica.
    pub replica: Rid,
    /// Its new incarnation.
    pub inc: u8,
    /// Its own row as restored.
    pub row: Row,
}

/// A provisional acknowledgement (control record) from a replica that is itself recovering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProvAck {
    /// The acknowledging replica.
    pub acker: Rid,
    /// The restoring replica.
    pub replica: Rid,
    /// The incarnation acknowledged.
    pub inc: u8,
    /// How many of `replica`'s entries the acker held.
    pub held: u8,
}

/// One awaited sibling's flag: `None` = not awaited; `Some(None)` = awaited, no ack yet;
/// `Some(Some(h))` = ack received, clears once the replica holds `h` of its own entries.
pub type Awaited = Option<Option<u8>>;

/// The *recovering* record of a replica.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Recovering {
    /// The incarnation of the request.
    pub inc: u8,
    /// The own row as restored.
    pub row: Row,
    /// Per sibling.
    pub awaited: [Awaited; N],
    /// Per sibling, the `held` of its answer for this incarnation (the numbered one once it
    /// came, else the latest provisional one), kept after the sibling's flag cleared
    /// (restore.rs `Recovering::acks`).
    pub acks: [Option<u8>; N],
    /// Per sibling, whether its numbered acknowledgement came (restore.rs
    /// `Recovering::numbered`).
    pub numbered: [bool; N],
}

impl Recovering {
    /// restore.rs `Recovering::record_numbered_ack`: the acker's numbered answer, which
    /// supersedes provisional ones; satisfies its flag if it is awaited.
    fn record_numbered_ack(&mut self, acker: Rid, held: u8) {
        self.numbered[acker as usize] = true;
        self.set_ack(acker, held);
    }

    /// restore.rs `Recovering::record_ack`: the latest provisional answer counts, unless the
    /// acker's numbered one came.
    fn record_ack(&mut self, acker: Rid, held: u8) {
        if !self.numbered[acker as usize] {
            self.set_ack(acker, held);
        }
    }

    fn set_ack(&mut self, acker: Rid, held: u8) {
        self.acks[acker as usize] = Some(held);
        if let Some(slot) = &mut self.awaited[acker as usize] {
            *slot = Some(held);
        }
    }
}

/// Everything a replica's store holds (what a backup copies).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Store {
    /// Oplog per origin; entry `n` of origin `o` is `log[o][n - 1]`. The own row is the lengths.
    pub log: [Vec<Entry>; N],
    /// Estimate rows per sibling (the own index is unused).
    pub est: [Row; N],
    /// Recorded incarnations (own at the own index).
    pub inc: [u8; N],
    /// Per replica, the incarnation of its last completed restore.
    pub completed: [u8; N],
    /// Restore requests held for propagation, per restoring replica.
    pub requests: [Option<Request>; N],
    /// Provisional acks held for propagation: `prov[replica][acker] = (inc, held)`.
    pub prov: [[Option<(u8, u8)>; N]; N],
    /// The recovering record.
    pub recovering: Option<Recovering>,
    /// Restored from a backup, `restorereplica` not yet run.
    pub restored: bool,
    /// A sibling showed that this replica lost entries of its own.
    pub rolled_back: bool,
    /// Ghost: how many restores from backup this store's history went through (a snapshot
    /// rollback brings back the count of the snapshot).
    pub restores: u8,
    /// Per sibling, the row of its latest packet about our current incarnation (its report of
    /// what it holds, §5); `None`: it never reported.
    pub reported: [Option<Row>; N],
    /// Per origin, entries `1..=dropped` are scrubbed (the last one kept as the chain base).
    pub dropped: Row,
    /// Retention's floor records: `(tick, row every sibling acknowledged then)`.
    pub floors: Vec<(u8, Row)>,
    /// Ghost: the tick this copy was taken (meaningful for backups).
    pub taken_at: u8,
}

impl Store {
    fn new() -> Store {
        Store {
            log: Default::default(),
            est: [[0; N]; N],
            inc: [0; N],
            completed: [0; N],
            requests: [None; N],
            prov: [[None; N]; N],
            recovering: None,
            restored: false,
            rolled_back: false,
            restores: 0,
            reported: [None; N],
            dropped: [0; N],
            floors: Vec::new(),
            taken_at: 0,
        }
    }

    /// The own row.
    pub fn own(&self) -> Row {
        let mut r = [0; N];
        for (o, l) in self.log.iter().enumerate() {
            r[o] = l.len() as u8;
        }
        r
    }

    fn entry(&self, origin: Rid, number: u8) -> Option<&Entry> {
        if number == 0 {
            return None;
        }
        self.log[origin as usize].get(number as usize - 1)
    }

    fn append_local(&mut self, me: Rid, life: u8, op: Op) {
        let number = self.log[me as usize].len() as u8 + 1;
        self.log[me as usize].push(Entry {
            origin: me,
            number,
            life,
            op,
        });
    }

    fn raise_estimate(&mut self, target: Rid, row: &Row) {
        for o in 0..N {
            self.est[target as usize][o] = self.est[target as usize][o].max(row[o]);
        }
    }

    fn is_locked(&self) -> bool {
        self.restored || self.rolled_back
    }
}

/// A packet in flight (header, entries, controls) plus ghost bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Packet {
    /// Sender.
    pub from: Rid,
    /// Target.
    pub to: Rid,
    /// The sender's incarnation.
    pub sender_inc: u8,
    /// The incarnation the sender believes the target has.
    pub target_inc: u8,
    /// The sender's own row.
    pub sender_row: Row,
    /// Per origin, the sender's entry at the base (the prerequisite and divergence check).
    pub bases: [Option<Entry>; N],
    /// Entries carried.
    pub entries: Vec<Entry>,
    /// Restore requests carried.
    pub requests: Vec<Request>,
    /// Provisional acks carried.
    pub prov: Vec<ProvAck>,
    /// Ghost: how many restores from backup the target's store had when the packet was built.
    pub target_restores: u8,
    /// Per origin, the sender's last scrubbed entry (the header comment `retained=`).
    pub retained: Row,
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}->{}@{} row {}",
            name(self.from),
            self.sender_inc,
            name(self.to),
            self.target_inc,
            row_str(&self.sender_row)
        )?;
        if !self.entries.is_empty() {
            let es: Vec<String> = self.entries.iter().map(|e| e.to_string()).collect();
            write!(f, " entries {}", es.join(" "))?;
        }
        for r in &self.requests {
            write!(f, " req({}@{} {})", name(r.replica), r.inc, row_str(&r.row))?;
        }
        for a in &self.prov {
            write!(
                f,
                " pack({} for {}@{} held {})",
                name(a.acker),
                name(a.replica),
                a.inc,
                a.held
            )?;
        }
        Ok(())
    }
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// The replicas' stores.
    pub reps: [Store; N],
    /// One backup per replica, at most.
    pub backups: [Option<Store>; N],
    /// Packets in flight.
    pub net: BTreeSet<Packet>,
    /// Packets exported so far (bounded).
    pub packets: u8,
    /// Local writes done per replica (bounded).
    pub writes: [u8; N],
    /// Backups taken per replica (bounded).
    pub backups_taken: [u8; N],
    /// Restores from backup per replica.
    pub restores: [u8; N],
    /// Snapshot rollbacks done (in total).
    pub rollbacks: u8,
    /// The incarnation clock.
    pub clock: u8,
    /// Store generation per replica (restores plus rollbacks).
    pub life: [u8; N],
    /// Ghost: a snapshot rollback of this replica that no `restorereplica` has followed yet.
    pub undetected_rollback: [bool; N],
    /// Ghost: a packet built before its target's restore changed the target's state.
    pub stale_applied: bool,
    /// The retention clock, in restore windows (see `retain`).
    pub time: u8,
    /// Scrubs done (in total).
    pub scrubs: u8,
    /// Windows passed.
    pub ticks: u8,
    /// Ghost: a replica needed entries its sender no longer kept.
    pub behind: bool,
}

/// An action of the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A local change at a replica.
    Write(Rid),
    /// `syncreplica export` from a replica to a sibling.
    Export(Rid, Rid),
    /// Import a packet and remove it from the network.
    Deliver(Packet),
    /// Import a packet and keep a copy in flight (duplication).
    Duplicate(Packet),
    /// Lose a packet.
    Lose(Packet),
    /// `msite backup`.
    Backup(Rid),
    /// `msite restore` from the backup (the store is marked restored).
    Restore(Rid),
    /// `msite restorereplica` (default waiting set).
    RestoreReplica(Rid),
    /// A file-system snapshot rollback to the backup, without `msite restore`.
    Rollback(Rid),
    /// `msite scrub` under a one-window restore window.
    Scrub(Rid),
    /// A restore window passes.
    Tick,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Write(r) => write!(f, "write at {}", name(*r)),
            Action::Export(r, t) => write!(f, "export {} -> {}", name(*r), name(*t)),
            Action::Deliver(p) => write!(f, "deliver {p}"),
            Action::Duplicate(p) => write!(f, "deliver (keeping a duplicate) {p}"),
            Action::Lose(p) => write!(f, "lose {p}"),
            Action::Backup(r) => write!(f, "backup {}", name(*r)),
            Action::Restore(r) => write!(f, "restore {} from its backup", name(*r)),
            Action::RestoreReplica(r) => write!(f, "restorereplica at {}", name(*r)),
            Action::Rollback(r) => write!(f, "snapshot rollback of {} to its backup", name(*r)),
            Action::Scrub(r) => write!(f, "scrub at {}", name(*r)),
            Action::Tick => write!(f, "a restore window passes"),
        }
    }
}

/// A deliberate protocol bug, to show the checker finds violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Siblings do not roll their estimate back to the request's row.
    NoEstimateRollback,
    /// The restoring replica completes at once, without waiting (it reuses numbers).
    CompleteWithoutWaiting,
    /// Import does not refuse packets with an older target incarnation.
    NoStaleCheck,
    /// Siblings forget the completed incarnation: a request `<=` it is held again.
    ResurrectRequests,
    /// The first bug the model found, put back: `restorereplica` on a store restored from a
    /// backup (or rolled back) amends the recovering record that came with it, keeping its
    /// incarnation, instead of starting a new restoration.
    AmendRestoredStore,
    /// The second bug the model found, put back: amending rebuilds the awaited set from the
    /// current flags, so a sibling whose flag already cleared is awaited again with no ack.
    AmendForgetsAcks,
    /// K32, found by the simulator, put back: a recovering replica counts a provisional
    /// acknowledgement from any recovering sibling, even one whose restoration began after
    /// its own (whose earlier self may have acknowledged more before it lost its store).
    ProvisionalFromYounger,
    /// Scrub drops what every sibling acknowledges now, ignoring the restore window.
    ScrubWithoutWindow,
    /// Scrub trusts the estimates (what was sent) instead of the siblings' reports.
    ScrubByEstimate,
}

impl Mutation {
    /// Every mutation.
    pub const ALL: [Mutation; 9] = [
        Mutation::NoEstimateRollback,
        Mutation::CompleteWithoutWaiting,
        Mutation::NoStaleCheck,
        Mutation::ResurrectRequests,
        Mutation::AmendRestoredStore,
        Mutation::AmendForgetsAcks,
        Mutation::ProvisionalFromYounger,
        Mutation::ScrubWithoutWindow,
        Mutation::ScrubByEstimate,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::NoEstimateRollback => "no-estimate-rollback",
            Mutation::CompleteWithoutWaiting => "complete-without-waiting",
            Mutation::NoStaleCheck => "no-stale-check",
            Mutation::ResurrectRequests => "resurrect-requests",
            Mutation::AmendRestoredStore => "amend-restored-store",
            Mutation::AmendForgetsAcks => "amend-forgets-acks",
            Mutation::ProvisionalFromYounger => "provisional-from-younger",
            Mutation::ScrubWithoutWindow => "scrub-without-window",
            Mutation::ScrubByEstimate => "scrub-by-estimate",
        }
    }
}

/// Bounds of the exploration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Local writes per replica.
    pub writes: u8,
    /// Backups per replica.
    pub backups: u8,
    /// Restores from backup in total.
    pub restores: u8,
    /// Snapshot rollbacks in total.
    pub rollbacks: u8,
    /// Packets in flight at most.
    pub in_flight: usize,
    /// Packets exported in total (the scheduler bound; healing is not bounded).
    pub packets: u8,
    /// Replicas that may write, back up, restore, roll back (others only sync).
    pub actors: Vec<Rid>,
    /// Scrubs in total (any replica may scrub).
    pub scrubs: u8,
    /// Restore windows that may pass.
    pub ticks: u8,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            writes: 2,
            backups: 1,
            restores: 1,
            rollbacks: 0,
            in_flight: 2,
            packets: 6,
            actors: vec![0, 1, 2],
            scrubs: 0,
            ticks: 0,
        }
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actors: Vec<&str> = self.actors.iter().map(|r| name(*r)).collect();
        write!(
            f,
            "{N} replicas, writes <= {} per replica, backups <= {} per replica, restores <= {} in total, snapshot rollbacks <= {}, packets <= {} in total and <= {} in flight, faults at {}",
            self.writes,
            self.backups,
            self.restores,
            self.rollbacks,
            self.packets,
            self.in_flight,
            actors.join(",")
        )?;
        if self.scrubs > 0 || self.ticks > 0 {
            write!(
                f,
                ", scrubs <= {}, restore windows passing <= {}",
                self.scrubs, self.ticks
            )?;
        }
        Ok(())
    }
}

/// The configurations `msite-model` checks when given no bounds.
pub fn suite() -> Vec<(&'static str, Bounds)> {
    let b = Bounds::default();
    vec![
        (
            "one restore, two writes",
            Bounds {
                writes: 2,
                actors: vec![0],
                packets: 5,
                ..b.clone()
            },
        ),
        (
            "two replicas restore",
            Bounds {
                writes: 1,
                actors: vec![0, 1],
                restores: 2,
                packets: 3,
                ..b.clone()
            },
        ),
        (
            "backup taken while recovering",
            Bounds {
                writes: 1,
                actors: vec![0],
                backups: 2,
                restores: 2,
                packets: 5,
                ..b.clone()
            },
        ),
        (
            "snapshot rollback",
            Bounds {
                writes: 1,
                actors: vec![0],
                rollbacks: 1,
                packets: 5,
                ..b.clone()
            },
        ),
        ("scrubbed prefix", scrubbed_prefix()),
    ]
}

/// The retention configuration of the suite: B writes, backs up and is restored while any
/// replica scrubs twice and a restore window may pass. It finds both retention
/// mutations (`ScrubWithoutWindow`, `ScrubByEstimate`).
pub fn scrubbed_prefix() -> Bounds {
    Bounds {
        writes: 1,
        actors: vec![1],
        packets: 4,
        scrubs: 2,
        ticks: 1,
        ..Bounds::default()
    }
}

/// Counters filled while checking.
#[derive(Debug, Default)]
pub struct Stats {
    /// States on which the heal check ran.
    pub healed: AtomicUsize,
    /// States from which healing did not complete every restore.
    pub not_completed: AtomicUsize,
    /// States from which healing completed every restore but did not converge.
    pub not_converged: AtomicUsize,
    /// Longest heal, in rounds.
    pub max_rounds: AtomicUsize,
}

/// The model.
#[derive(Clone, Debug)]
pub struct ProtocolModel {
    /// Bounds.
    pub bounds: Bounds,
    /// A deliberate bug, if any.
    pub mutation: Option<Mutation>,
    /// Counters.
    pub stats: Arc<Stats>,
}

/// Why an import did not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (the state may or may not have changed).
    Applied,
    /// Waits for prerequisites; nothing changed.
    Waiting,
    /// Refused; the reason. The replica may have marked itself rolled back.
    Refused(&'static str),
}

/// The refusal of a packet built for an older incarnation of its target.
pub const STALE_TARGET: &str = "stale target incarnation";

/// Names of the properties.
pub mod props {
    /// No `(origin, number)` names two different entries in any two oplogs.
    pub const NO_REUSE: &str = "no reuse";
    /// A packet built before its target's restore never changes the target's state.
    pub const NO_STALE_APPLY: &str = "no stale apply";
    /// Every entry of O held by another replica survives O's restore.
    pub const NO_LOSS: &str = "no loss";
    /// From every state, healing (no new faults) completes every restore and converges.
    pub const COMPLETION: &str = "every restore can complete (heal)";
    /// No replica ever needs entries its sender no longer keeps (retention, §9).
    pub const NEVER_BEHIND: &str = "never behind retention";
    /// Reachability: a scrub dropped an entry.
    pub const SOME_SCRUBBED: &str = "sometimes: a scrub drops an entry";
    /// Reachability: some restore completed.
    pub const SOME_COMPLETE: &str = "sometimes: a restore completes";
    /// Reachability: a lost entry of the restoring replica came back from a sibling.
    pub const SOME_RECOVERED: &str = "sometimes: a restoring replica recovers its own entry";
    /// Reachability: two replicas recover at once.
    pub const SOME_TWO_RECOVERING: &str = "sometimes: two replicas recover at once";
}

impl ProtocolModel {
    /// The model with `bounds`, no mutation.
    pub fn new(bounds: Bounds) -> Self {
        ProtocolModel {
            bounds,
            mutation: None,
            stats: Arc::new(Stats::default()),
        }
    }

    /// The model with a deliberate bug.
    pub fn mutated(bounds: Bounds, m: Mutation) -> Self {
        ProtocolModel {
            mutation: Some(m),
            ..Self::new(bounds)
        }
    }

    fn has(&self, m: Mutation) -> bool {
        self.mutation == Some(m)
    }

    fn initial(&self) -> State {
        State {
            reps: [Store::new(), Store::new(), Store::new()],
            backups: [None, None, None],
            net: BTreeSet::new(),
            packets: 0,
            writes: [0; N],
            backups_taken: [0; N],
            restores: [0; N],
            rollbacks: 0,
            clock: 0,
            life: [0; N],
            undetected_rollback: [false; N],
            stale_applied: false,
            time: 0,
            scrubs: 0,
            ticks: 0,
            behind: false,
        }
    }

    /// `syncreplica export` from `i` to `t` (core `sync/export.rs` `plan_export` + `commit_export`).
    /// Returns the packet, or None when refused or there is nothing to send.
    pub fn export(&self, s: &mut State, i: Rid, t: Rid) -> Option<Packet> {
        let target_restores = s.reps[t as usize].restores;
        let r = &mut s.reps[i as usize];
        if r.is_locked() {
            return None;
        }
        let own = r.own();
        let target_recovering = r.requests[t as usize].is_some();
        let mut requests = Vec::new();
        if let Some(rec) = &r.recovering {
            requests.push(Request {
                replica: i,
                inc: rec.inc,
                row: rec.row,
            });
        }
        requests.extend(r.requests.iter().flatten().copied());
        let mut prov = Vec::new();
        for (replica, row) in r.prov.iter().enumerate() {
            for (acker, a) in row.iter().enumerate() {
                if let Some((inc, held)) = a {
                    prov.push(ProvAck {
                        acker: acker as Rid,
                        replica: replica as Rid,
                        inc: *inc,
                        held: *held,
                    });
                }
            }
        }
        let base = if r.recovering.is_some() && !target_recovering {
            own
        } else {
            r.est[t as usize]
        };
        let mut base = base;
        let lacks = r.requests[t as usize].is_some_and(|q| r.lacks_retained(&q.row));
        r.clamp_to_retained(&mut base);
        let mut entries = Vec::new();
        for o in 0..N {
            for n in base[o]..own[o] {
                entries.push(r.log[o][n as usize]);
            }
        }
        if entries.is_empty() && requests.is_empty() && prov.is_empty() {
            return None;
        }
        let mut bases = [None; N];
        if !entries.is_empty() {
            for o in 0..N {
                bases[o] = r.entry(o as Rid, base[o].min(own[o])).copied();
            }
        }
        let p = Packet {
            from: i,
            to: t,
            sender_inc: r.inc[i as usize],
            target_inc: r.inc[t as usize],
            sender_row: own,
            bases,
            entries,
            requests,
            prov,
            target_restores,
            retained: r.dropped,
        };
        if !target_recovering && r.recovering.is_none() {
            for o in 0..N {
                if own[o] > 0 {
                    r.est[t as usize][o] = own[o];
                }
            }
        }
        // The exact refusal: the target's restore request shows it lacks scrubbed entries.
        s.behind |= lacks;
        Some(p)
    }

    /// `syncreplica import` of `p` at its target (core `sync/import.rs` `import`), in the same order of checks.
    pub fn import(&self, s: &mut State, p: &Packet) -> Outcome {
        let me = p.to;
        let life = s.life[me as usize];
        let r = &mut s.reps[me as usize];
        if r.is_locked() {
            return Outcome::Refused("locked (restored or rolled back)");
        }
        let my_inc = r.inc[me as usize];
        if p.target_inc < my_inc && !self.has(Mutation::NoStaleCheck) {
            // core `sync/controls.rs` `learn_sender_request`: the sender's own restore request and incarnation
            // are news about the sender, not content built against our old state (two
            // replicas restored at once learn each other's request this way). Nothing else
            // of the packet is applied.
            let mut n = r.clone();
            for q in p.requests.iter().filter(|q| q.replica == p.from) {
                self.on_request(&mut n, me, life, q);
            }
            if p.sender_inc > n.inc[p.from as usize] {
                n.inc[p.from as usize] = p.sender_inc;
            }
            *r = n;
            return Outcome::Refused(STALE_TARGET);
        }
        if p.target_inc > my_inc && r.recovering.is_none() {
            r.rolled_back = true;
            return Outcome::Refused("sender knows a newer incarnation: rolled back");
        }
        if p.sender_inc < r.inc[p.from as usize] {
            return Outcome::Refused("stale sender incarnation");
        }
        let own = r.own();
        if p.sender_row[me as usize] > own[me as usize] && r.recovering.is_none() {
            r.rolled_back = true;
            return Outcome::Refused("sender holds more of our entries: rolled back");
        }
        match retain::prerequisites(&own, p) {
            Prerequisites::Held => {}
            Prerequisites::Wait => return Outcome::Waiting,
            Prerequisites::BehindRetention => return Outcome::Refused(retain::BEHIND_RETENTION),
        }
        for b in p.bases.iter().flatten() {
            if r.hash_known(b.origin, b.number) && r.entry(b.origin, b.number) != Some(b) {
                return Outcome::Refused("divergent at the base");
            }
        }
        // Apply in a transaction: a refusal below leaves `r` untouched.
        let mut n = r.clone();
        let recovering = n.recovering.is_some();
        for e in &p.entries {
            let h = n.log[e.origin as usize].len() as u8;
            if e.number <= h {
                if n.hash_known(e.origin, e.number) && n.entry(e.origin, e.number) != Some(e) {
                    return Outcome::Refused("divergent entry under a held number");
                }
                continue;
            }
            if e.number != h + 1 {
                return Outcome::Refused("malformed: gap");
            }
            if e.origin == me && !recovering {
                return Outcome::Refused("own entry while not recovering");
            }
            n.log[e.origin as usize].push(*e);
            self.on_entry(&mut n, me, e);
        }
        for q in &p.requests {
            self.on_request(&mut n, me, life, q);
        }
        for a in &p.prov {
            on_prov_ack(&mut n, me, a, self.has(Mutation::ProvisionalFromYounger));
        }
        let sender_holds_request = n.requests[p.from as usize].is_some();
        let sender_recovering_own = p.requests.iter().any(|q| q.replica == p.from);
        if !sender_holds_request || sender_recovering_own {
            n.raise_estimate(p.from, &p.sender_row);
        }
        if p.sender_inc > n.inc[p.from as usize] {
            n.inc[p.from as usize] = p.sender_inc;
        }
        n.take_report(me, p);
        if recovering {
            self.maybe_complete(&mut n, me, life, false);
        }
        *r = n;
        Outcome::Applied
    }

    /// restore.rs `on_entry`: protocol effects of an applied entry.
    fn on_entry(&self, n: &mut Store, me: Rid, e: &Entry) {
        match e.op {
            Op::Write => {}
            Op::Ack { replica, inc, held } => {
                if replica == me {
                    if let Some(rec) = &mut n.recovering {
                        if rec.inc == inc {
                            rec.record_numbered_ack(e.origin, held);
                        }
                    }
                }
            }
            Op::Complete { inc, row } => {
                let o = e.origin as usize;
                if inc > n.completed[o] && !self.has(Mutation::ResurrectRequests) {
                    n.completed[o] = inc;
                }
                if matches!(n.requests[o], Some(q) if q.inc <= inc) {
                    n.requests[o] = None;
                }
                for a in n.prov[o].iter_mut() {
                    if matches!(a, Some((i, _)) if *i <= inc) {
                        *a = None;
                    }
                }
                if e.origin != me {
                    n.raise_estimate(e.origin, &row);
                }
            }
        }
    }

    /// restore.rs `on_request`.
    fn on_request(&self, n: &mut Store, me: Rid, life: u8, q: &Request) {
        let rr = q.replica as usize;
        if q.replica == me || q.inc <= n.completed[rr] {
            return;
        }
        if matches!(n.requests[rr], Some(h) if h.inc >= q.inc) {
            return;
        }
        n.requests[rr] = Some(*q);
        n.inc[rr] = q.inc;
        if !self.has(Mutation::NoEstimateRollback) {
            n.est[rr] = q.row;
        }
        let held = n.log[rr].len() as u8;
        if n.recovering.is_some() {
            n.prov[rr][me as usize] = Some((q.inc, held));
        } else {
            n.append_local(
                me,
                life,
                Op::Ack {
                    replica: q.replica,
                    inc: q.inc,
                    held,
                },
            );
        }
    }

    /// restore.rs `maybe_complete`: clears satisfied flags; completes when none is left.
    fn maybe_complete(&self, n: &mut Store, me: Rid, life: u8, force: bool) -> bool {
        let own = n.log[me as usize].len() as u8;
        let Some(rec) = &mut n.recovering else {
            return false;
        };
        for slot in rec.awaited.iter_mut() {
            if matches!(slot, Some(Some(h)) if own >= *h) {
                *slot = None;
            }
        }
        if rec.awaited.iter().any(|s| s.is_some()) && !force {
            return false;
        }
        let inc = rec.inc;
        n.recovering = None;
        let mut row = n.own();
        row[me as usize] = own + 1;
        n.append_local(me, life, Op::Complete { inc, row });
        n.completed[me as usize] = inc;
        for replica in 0..N {
            n.prov[replica][me as usize] = None;
        }
        for q in n.requests.iter().flatten().copied().collect::<Vec<_>>() {
            let held = n.log[q.replica as usize].len() as u8;
            n.append_local(
                me,
                life,
                Op::Ack {
                    replica: q.replica,
                    inc: q.inc,
                    held,
                },
            );
        }
        true
    }

    /// `restorereplica` at `i` (default waiting set: every sibling), restore.rs
    /// `restorereplica`. A store marked restored or rolled back starts a new restoration (new
    /// incarnation `max(now, recorded + 1)`, every sibling awaited, no acks), discarding any
    /// recovering record that came with it; otherwise a running restoration is amended: the
    /// incarnation is kept and a sibling whose ack is in `acks` is awaited as acknowledged.
    pub fn restorereplica(&self, s: &mut State, i: Rid) {
        let life = s.life[i as usize];
        let r = &mut s.reps[i as usize];
        let copied = r.is_locked();
        let existing = if copied && !self.has(Mutation::AmendRestoredStore) {
            None
        } else {
            r.recovering.take()
        };
        let rec = match existing {
            Some(mut rec) => {
                let mut awaited: [Awaited; N] = [None; N];
                for (sib, slot) in awaited.iter_mut().enumerate() {
                    if sib != i as usize {
                        *slot = Some(if self.has(Mutation::AmendForgetsAcks) {
                            rec.awaited[sib].flatten()
                        } else {
                            rec.acks[sib]
                        });
                    }
                }
                rec.awaited = awaited;
                rec
            }
            None => {
                let inc = (s.clock + 1).max(r.inc[i as usize] + 1);
                s.clock = inc;
                r.inc[i as usize] = inc;
                let mut awaited: [Awaited; N] = [None; N];
                for (sib, slot) in awaited.iter_mut().enumerate() {
                    if sib != i as usize {
                        *slot = Some(None);
                    }
                }
                Recovering {
                    inc,
                    row: r.own(),
                    awaited,
                    acks: [None; N],
                    numbered: [false; N],
                }
            }
        };
        r.recovering = Some(rec);
        r.restored = false;
        r.rolled_back = false;
        if copied {
            // The operator answered the lock; a rollback nobody detected stays undetected
            // when a running restoration is merely amended.
            s.undetected_rollback[i as usize] = false;
        }
        let force = self.has(Mutation::CompleteWithoutWaiting);
        let mut n = r.clone();
        self.maybe_complete(&mut n, i, life, force);
        s.reps[i as usize] = n;
    }

    /// Imports `p`, recording (ghost) whether a packet built before its target's restore
    /// changed the target. Marking the target rolled back is not a change: it is the refusal
    /// that detects a snapshot rollback.
    fn deliver(&self, s: &mut State, p: &Packet) -> Outcome {
        let before = s.reps[p.to as usize].clone();
        let out = self.import(s, p);
        let after = Store {
            rolled_back: before.rolled_back,
            ..s.reps[p.to as usize].clone()
        };
        // Learning the sender's own request from a stale packet is not applying it.
        if p.target_restores < before.restores
            && after != before
            && out != Outcome::Refused(STALE_TARGET)
        {
            s.stale_applied = true;
        }
        if out == Outcome::Refused(retain::BEHIND_RETENTION) {
            s.behind = true;
        }
        out
    }

    fn can_act(&self, r: Rid) -> bool {
        self.bounds.actors.contains(&r)
    }

    /// The heal procedure: no new faults; the operator runs `restorereplica` where a replica
    /// asks for it; every packet is delivered, every replica exports to every sibling, and a
    /// quiescent system resyncs lost packets (§5). Returns the healed state and the rounds
    /// used, or the state where it gave up.
    pub fn heal(&self, start: &State) -> Result<(State, usize), Box<(State, &'static str)>> {
        const MAX_ROUNDS: usize = 24;
        let mut s = start.clone();
        for round in 0..MAX_ROUNDS {
            for i in 0..N as Rid {
                if s.reps[i as usize].is_locked() {
                    self.restorereplica(&mut s, i);
                }
            }
            // Deliver until only waiting packets are left.
            loop {
                let mut progress = false;
                for p in s.net.clone() {
                    if self.deliver(&mut s, &p) != Outcome::Waiting {
                        s.net.remove(&p);
                        progress = true;
                    }
                }
                if !progress {
                    break;
                }
            }
            if s.reps.iter().any(|r| r.is_locked()) {
                continue;
            }
            // Only packets that wait for prerequisites are left in flight.
            if healed(&s) {
                return Ok((s, round));
            }
            // Quiescent but not converged: the §5 acknowledgements lower the estimates of
            // targets that are not recovering to what they hold, so lost packets are resent.
            for i in 0..N {
                for t in 0..N {
                    if i != t && s.reps[i].requests[t].is_none() && s.reps[t].recovering.is_none() {
                        let own_t = s.reps[t].own();
                        for o in 0..N {
                            s.reps[i].est[t][o] = s.reps[i].est[t][o].min(own_t[o]);
                        }
                    }
                }
            }
            for i in 0..N as Rid {
                for t in 0..N as Rid {
                    if i != t {
                        if let Some(p) = self.export(&mut s, i, t) {
                            s.net.insert(p);
                        }
                    }
                }
            }
        }
        if s.reps
            .iter()
            .any(|r| r.recovering.is_some() || r.is_locked())
        {
            Err(Box::new((s, "a replica is still recovering")))
        } else {
            Err(Box::new((
                s,
                "no replica is recovering but the replicas did not converge",
            )))
        }
    }
}

/// restore.rs `on_provisional_ack`: an acknowledgement for our restoration counts only when
/// the acker's restoration, as held here, is older than ours (`restoration_is_older`, K32).
fn on_prov_ack(n: &mut Store, me: Rid, a: &ProvAck, count_any: bool) {
    if a.replica == me {
        let older = |rec: &Recovering| matches!(n.requests[a.acker as usize], Some(q) if (q.inc, a.acker) < (rec.inc, me));
        let counts =
            matches!(&n.recovering, Some(rec) if rec.inc == a.inc && (count_any || older(rec)));
        if let Some(rec) = &mut n.recovering {
            if counts {
                rec.record_ack(a.acker, a.held);
            }
        }
        return;
    }
    if matches!(n.requests[a.replica as usize], Some(q) if q.inc == a.inc) {
        n.prov[a.replica as usize][a.acker as usize] = Some((a.inc, a.held));
    }
}

/// The heal goal: nobody recovering or locked, identical oplogs, no request or provisional
/// ack left anywhere (no stale requests).
pub fn healed(s: &State) -> bool {
    let first = &s.reps[0].log;
    s.reps.iter().all(|r| {
        r.recovering.is_none()
            && !r.is_locked()
            && r.log == *first
            && r.requests.iter().all(|q| q.is_none())
            && r.prov.iter().flatten().all(|a| a.is_none())
    })
}

/// No `(origin, number)` names two different entries in two oplogs.
pub fn no_reuse(s: &State) -> bool {
    for o in 0..N {
        let longest = s.reps.iter().map(|r| r.log[o].len()).max().unwrap_or(0);
        for k in 0..longest {
            let mut seen: Option<&Entry> = None;
            for r in &s.reps {
                if let Some(e) = r.log[o].get(k) {
                    match seen {
                        Some(x) if x != e => return false,
                        _ => seen = Some(e),
                    }
                }
            }
        }
    }
    true
}

/// Every entry of origin O that another replica holds is held by O, unless O is in the middle
/// of a restore (restored, recovering, rolled back, or rolled back without knowing it yet).
pub fn no_loss(s: &State) -> bool {
    for o in 0..N {
        let origin = &s.reps[o];
        if origin.recovering.is_some() || origin.is_locked() || s.undetected_rollback[o] {
            continue;
        }
        for (i, r) in s.reps.iter().enumerate() {
            if i != o && r.log[o].len() > origin.log[o].len() {
                return false;
            }
        }
    }
    true
}

impl Model for ProtocolModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.initial()]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        let b = &self.bounds;
        let total_restores: u8 = s.restores.iter().sum();
        for i in 0..N as Rid {
            let r = &s.reps[i as usize];
            let iu = i as usize;
            let actor = self.can_act(i);
            if actor
                && s.writes[iu] < b.writes
                && !r.is_locked()
                && r.recovering.is_none()
                && !s.undetected_rollback[iu]
            {
                actions.push(Action::Write(i));
            }
            if s.net.len() < b.in_flight && s.packets < b.packets && !r.is_locked() {
                for t in 0..N as Rid {
                    if t != i {
                        actions.push(Action::Export(i, t));
                    }
                }
            }
            if actor && s.backups_taken[iu] < b.backups && !r.is_locked() {
                actions.push(Action::Backup(i));
            }
            let young_backup = matches!(&s.backups[iu], Some(c) if c.taken_at == s.time);
            if actor && young_backup && total_restores < b.restores && !r.restored {
                actions.push(Action::Restore(i));
            }
            // On a locked store it starts a new restoration; while recovering it amends one.
            if r.is_locked() || r.recovering.is_some() {
                actions.push(Action::RestoreReplica(i));
            }
            if actor && young_backup && s.rollbacks < b.rollbacks && !r.is_locked() {
                actions.push(Action::Rollback(i));
            }
            if self.can_scrub(s, i) {
                actions.push(Action::Scrub(i));
            }
        }
        if self.can_tick(s) {
            actions.push(Action::Tick);
        }
        for p in &s.net {
            actions.push(Action::Deliver(p.clone()));
            actions.push(Action::Duplicate(p.clone()));
            actions.push(Action::Lose(p.clone()));
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Write(i) => {
                let life = s.life[i as usize];
                s.reps[i as usize].append_local(i, life, Op::Write);
                s.writes[i as usize] += 1;
            }
            Action::Export(i, t) => {
                let p = self.export(&mut s, i, t)?;
                s.net.insert(p);
                s.packets += 1;
            }
            Action::Deliver(p) => {
                if self.deliver(&mut s, &p) == Outcome::Waiting {
                    return None;
                }
                s.net.remove(&p);
            }
            Action::Duplicate(p) => {
                if self.deliver(&mut s, &p) == Outcome::Waiting {
                    return None;
                }
            }
            Action::Lose(p) => {
                s.net.remove(&p);
            }
            Action::Backup(i) => {
                let mut copy = s.reps[i as usize].clone();
                copy.taken_at = s.time;
                s.backups[i as usize] = Some(copy);
                s.backups_taken[i as usize] += 1;
            }
            Action::Restore(i) => {
                let mut st = s.backups[i as usize].clone()?;
                s.restores[i as usize] += 1;
                st.restored = true;
                st.restores = s.restores[i as usize];
                s.reps[i as usize] = st;
                s.life[i as usize] += 1;
            }
            Action::RestoreReplica(i) => self.restorereplica(&mut s, i),
            Action::Scrub(i) => {
                self.scrub(&mut s, i);
                s.scrubs += 1;
            }
            Action::Tick => {
                s.time += 1;
                s.ticks += 1;
            }
            Action::Rollback(i) => {
                s.reps[i as usize] = s.backups[i as usize].clone()?;
                s.rollbacks += 1;
                s.life[i as usize] += 1;
                s.undetected_rollback[i as usize] = true;
            }
        }
        if s == *last {
            return None;
        }
        Some(s)
    }

    fn format_action(&self, action: &Action) -> String {
        action.to_string()
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut props = vec![
            Property::always(props::NO_REUSE, |_, s: &State| no_reuse(s)),
            Property::always(props::NO_STALE_APPLY, |_, s: &State| !s.stale_applied),
            Property::always(props::NO_LOSS, |_, s: &State| no_loss(s)),
            Property::always(props::NEVER_BEHIND, |_, s: &State| retain::never_behind(s)),
            Property::always(props::COMPLETION, |m: &ProtocolModel, s: &State| {
                m.stats.healed.fetch_add(1, Ordering::Relaxed);
                match m.heal(s) {
                    Ok((_, rounds)) => {
                        m.stats.max_rounds.fetch_max(rounds, Ordering::Relaxed);
                        true
                    }
                    Err(e) => {
                        let why = e.1;
                        if why.starts_with("a replica") {
                            m.stats.not_completed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            m.stats.not_converged.fetch_add(1, Ordering::Relaxed);
                        }
                        false
                    }
                }
            }),
            Property::sometimes(props::SOME_COMPLETE, |_, s: &State| {
                s.reps.iter().any(|r| r.completed.iter().any(|c| *c > 0))
            }),
            Property::sometimes(props::SOME_RECOVERED, |_, s: &State| {
                s.reps.iter().enumerate().any(|(i, r)| matches!(&r.recovering, Some(rec) if r.log[i].len() as u8 > rec.row[i]))
            }),
            Property::sometimes(props::SOME_TWO_RECOVERING, |_, s: &State| {
                s.reps.iter().filter(|r| r.recovering.is_some()).count() >= 2
            }),
        ];
        if self.bounds.scrubs > 0 {
            props.push(Property::sometimes(props::SOME_SCRUBBED, |_, s: &State| {
                s.reps.iter().any(|r| r.dropped.iter().any(|d| *d > 0))
            }));
        }
        props
    }
}

/// A compact, multi-line description of a state (for counterexamples).
pub fn describe(s: &State) -> String {
    let mut out = String::new();
    for (i, r) in s.reps.iter().enumerate() {
        let log: Vec<String> = r.log.iter().flatten().map(|e| e.to_string()).collect();
        out.push_str(&format!(
            "  {}: inc {} own {} log [{}]",
            NAMES[i],
            r.inc[i],
            row_str(&r.own()),
            log.join(" ")
        ));
        for t in 0..N {
            if t != i {
                out.push_str(&format!(" est{}={}", NAMES[t], row_str(&r.est[t])));
            }
        }
        if let Some(rec) = &r.recovering {
            let aw: Vec<String> = rec
                .awaited
                .iter()
                .enumerate()
                .filter_map(|(k, a)| {
                    a.map(|h| {
                        format!(
                            "{}:{}",
                            NAMES[k],
                            h.map_or("-".to_string(), |h| h.to_string())
                        )
                    })
                })
                .collect();
            let acks: Vec<String> = rec
                .acks
                .iter()
                .enumerate()
                .filter_map(|(k, a)| a.map(|h| format!("{}:{h}", NAMES[k])))
                .collect();
            out.push_str(&format!(
                " RECOVERING@{} row {} awaiting {{{}}} acks {{{}}}",
                rec.inc,
                row_str(&rec.row),
                aw.join(","),
                acks.join(",")
            ));
        }
        if r.dropped.iter().any(|d| *d > 0) {
            out.push_str(&format!(" scrubbed {}", row_str(&r.dropped)));
        }
        if r.restored {
            out.push_str(" RESTORED");
        }
        if r.rolled_back {
            out.push_str(" ROLLED-BACK");
        }
        for q in r.requests.iter().flatten() {
            out.push_str(&format!(
                " holds req({}@{})",
                NAMES[q.replica as usize], q.inc
            ));
        }
        let done: Vec<String> = r
            .completed
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(k, c)| format!("{}@{c}", NAMES[k]))
            .collect();
        if !done.is_empty() {
            out.push_str(&format!(" completed {{{}}}", done.join(",")));
        }
        out.push('\n');
    }
    for p in &s.net {
        out.push_str(&format!("  in flight: {p}\n"));
    }
    if s.time > 0 {
        out.push_str(&format!("  restore windows passed: {}\n", s.time));
    }
    out
}

#[cfg(test)]
mod tests;
