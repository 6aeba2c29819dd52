//! Oplog retention (docs/protocol.md §9): dropping the oplog entries every sibling holds, so
//! that a store does not grow for ever, without breaking a sibling's restoration.
//!
//! The rule: a replica drops entry `(origin, n)` only when
//! 1. every sibling it knows of has acknowledged holding it, by its own report (the sender row
//!    of its latest packet applied here; a sibling whose restore request is held here, or
//!    that never reported, holds nothing), and
//! 2. every sibling had already acknowledged it one *restore window* ago (the operator's
//!    setting, `policy` key [`WINDOW`]; absent: nothing is ever dropped). Each scrub records
//!    the acknowledged row with the local time ([`FLOOR_PREFIX`]); a scrub drops at most what
//!    the newest record at least a window old shows. A sibling held what it reported before
//!    it sent the report, so any backup of it taken within the window holds it too, and its
//!    restoration gets everything above it back from this replica.
//!
//! The object base keeps the state the dropped entries made (state rows and content are not
//! touched, so the digest does not change). Each origin's hash chain stays verifiable: the
//! number and hash of the last dropped entry are kept as the chain's base ([`BASE_PREFIX`]),
//! which [`Replica::entry_hash_at`] answers for the dropped entry.
//!
//! A sibling that needs dropped entries gets a clear refusal on both sides: the export names
//! them ([`Replica::clamp_to_retained`]) and still sends what it can, its header's comment
//! names where this replica's history starts ([`retained_comment`]), and the importer refuses
//! such a packet as [`Refusal::BehindRetention`] rather than waiting for ever.

use std::collections::BTreeMap;

use msite_packet::wire;

use crate::codec::{be_u64, Dec, Enc};
use crate::error::{CoreError, Refusal, Result};
use crate::ids::{Hash, ReplicaId};
use crate::keys;
use crate::model::Row;
use crate::replica::Replica;
use crate::restore::held_requests_in;
use crate::store::{KeyRange, Keyspace, ReadView, Store, WriteOptions};
use crate::sync::Need;
use crate::txn::Txn;

/// Meta: the restore window in milliseconds (absent: retention is off, nothing is dropped).
pub const WINDOW: &[u8] = b"retain.window_ms";
/// Meta prefix (++ origin): the number and hash of the last dropped entry of an origin.
pub const BASE_PREFIX: &[u8] = b"retain.base.";
/// Meta prefix (++ origin): the number up to which the family may no longer keep an origin's
/// entries (u64 BE): what this replica's own scrubs dropped, or, for a replica made from a
/// snapshot, what its creator's had (its chain base may lie above: the entries between are
/// kept by its siblings, not by it). Absent: the chain base's number.
pub const DROPPED_PREFIX: &[u8] = b"retain.dropped.";
/// Meta prefix (++ local time, big-endian ms): the row every sibling had acknowledged then.
pub const FLOOR_PREFIX: &[u8] = b"retain.floor.";
/// Entries deleted per commit: each commit is a consistent prefix (entries and chain base).
const DELETE_BATCH: u64 = 50_000;
/// A new floor record is kept only when the newest is older than this fraction of the window,
/// so the records stay few (at most about this many) however often scrub runs.
const FLOOR_RECORDS_PER_WINDOW: u64 = 16;
/// The header comment's tag naming where the sender's history of each origin starts.
const COMMENT_TAG: &str = "retained=";

/// Why an origin's oplog is kept from where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// No restore window is set: retention is off.
    NoWindow,
    /// A sibling has acknowledged only up to `acknowledged`.
    Sibling {
        /// The sibling's name.
        name: String,
        /// What it holds of the origin by its own latest report.
        acknowledged: u64,
    },
    /// Every sibling holds more now, but one window ago they had acknowledged only this much
    /// (`None`: no record that old yet; the first scrub writes one).
    Window(Option<u64>),
    /// Every entry held is dropped (every sibling holds them all, also one window ago).
    Nothing,
}

/// What a scrub did (or would do) to one origin's oplog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginScrub {
    /// The origin.
    pub origin: ReplicaId,
    /// Its name.
    pub name: String,
    /// The highest entry held (the own row).
    pub held: u64,
    /// Entries up to this number were dropped before this scrub.
    pub dropped_before: u64,
    /// Entries up to this number are dropped after it.
    pub dropped: u64,
    /// Why the entries above [`OriginScrub::dropped`] are kept.
    pub why: Kept,
}

impl std::fmt::Display for OriginScrub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.dropped {
            0 => write!(f, "origin {}: dropped nothing", self.name)?,
            n => write!(f, "origin {}: dropped 1..{n}", self.name)?,
        }
        if self.dropped > self.dropped_before {
            write!(f, " ({} now)", self.dropped - self.dropped_before)?;
        }
        if self.dropped >= self.held {
            return write!(f, ", keeps only its chain base");
        }
        write!(f, ", kept from {} because ", self.dropped + 1)?;
        match &self.why {
            Kept::NoWindow => write!(f, "no restore window is set (retention is off)"),
            Kept::Sibling { name, acknowledged } => write!(
                f,
                "sibling {name} has only acknowledged up to {acknowledged}"
            ),
            Kept::Window(Some(n)) => write!(
                f,
                "of the restore window: one window ago the siblings had acknowledged only up to {n}"
            ),
            Kept::Window(None) => write!(
                f,
                "of the restore window: no record of the siblings' acknowledgements is a window old yet"
            ),
            Kept::Nothing => Ok(()),
        }
    }
}

/// Where a sibling stands against this replica's retention (`msite status` warns with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiblingRetention {
    /// This replica has dropped nothing.
    Whole,
    /// By its own word the sibling holds everything this replica dropped (or it never said).
    Covered,
    /// By its own word it lacks entries `first..=last` of `origin`, which this replica no
    /// longer keeps: it must be re-created if it really lacks them. `exact`: its restore
    /// request says so (it does lack them); otherwise its last report does.
    Behind {
        /// The origin's name.
        origin: String,
        /// The first entry it lacks.
        first: u64,
        /// The last entry dropped here.
        last: u64,
        /// Whether a restore request (not only a report) says so.
        exact: bool,
    },
}

/// What `msite scrub` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubReport {
    /// The restore window (None: retention off).
    pub window_ms: Option<u64>,
    /// Whether nothing was changed (`--dry-run`).
    pub dry_run: bool,
    /// One line per origin held.
    pub origins: Vec<OriginScrub>,
    /// Entries dropped by this scrub (or that it would drop).
    pub entries_dropped: u64,
}

/// What a sibling that never reported counts as holding, for a floor.
#[derive(Clone, Copy)]
enum Unreported {
    /// Nothing: retention drops only what every sibling said it holds.
    HoldsNothing,
    /// The row its `CreateReplica` entry carried (a snapshot's chain base).
    HoldsItsCreationRow,
}

/// The row every sibling acknowledges and, per origin, the sibling with the least.
struct Floor {
    row: Row,
    limiter: BTreeMap<ReplicaId, String>,
}

/// The chain base of `origin` at `r`: the number and hash of its last dropped entry.
pub(crate) fn retained_base<R: ReadView + ?Sized>(
    r: &R,
    origin: &ReplicaId,
) -> Result<Option<(u64, Hash)>> {
    let Some(v) = r.get(Keyspace::Meta, &base_key(origin))? else {
        return Ok(None);
    };
    let mut d = Dec::new(&v, "retained base");
    let n = d.u64()?;
    let h = d.hash()?;
    d.end()?;
    Ok(Some((n, h)))
}

/// Every origin's chain base at `r` (one per origin with a dropped prefix).
pub(crate) fn retained_bases<R: ReadView + ?Sized>(r: &R) -> Result<BTreeMap<ReplicaId, u64>> {
    let mut out = BTreeMap::new();
    for kv in r.scan(Keyspace::Meta, KeyRange::prefix(BASE_PREFIX))? {
        let (k, _) = kv?;
        if let Ok(id) = <[u8; 16]>::try_from(&k[BASE_PREFIX.len()..]) {
            let origin = ReplicaId(id);
            if let Some((n, _)) = retained_base(r, &origin)? {
                out.insert(origin, n);
            }
        }
    }
    Ok(out)
}

/// The value of a chain base: the number and hash of the last entry below the oplog.
pub(crate) fn base_value(n: u64, hash: &Hash) -> Vec<u8> {
    Enc::new().u64(n).raw(hash).done()
}

/// The key of an origin's dropped mark ([`DROPPED_PREFIX`]).
pub(crate) fn dropped_key(origin: &ReplicaId) -> Vec<u8> {
    let mut k = DROPPED_PREFIX.to_vec();
    k.extend_from_slice(&origin.0);
    k
}

/// Up to which number the family may no longer keep `origin`'s entries, as far as this
/// replica knows ([`DROPPED_PREFIX`]; 0: it keeps them all).
pub(crate) fn dropped_mark<R: ReadView + ?Sized>(r: &R, origin: &ReplicaId) -> Result<u64> {
    match r.get(Keyspace::Meta, &dropped_key(origin))? {
        Some(v) => Ok(be_u64(&v)?),
        None => Ok(retained_base(r, origin)?.map_or(0, |(n, _)| n)),
    }
}

pub(crate) fn base_key(origin: &ReplicaId) -> Vec<u8> {
    let mut k = BASE_PREFIX.to_vec();
    k.extend_from_slice(&origin.0);
    k
}

fn floor_key(at_ms: u64) -> Vec<u8> {
    let mut k = FLOOR_PREFIX.to_vec();
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

/// The header comment naming where a sender's history of each origin starts
/// (`retained=ORIGIN:N,…`, ids in hex, N the last dropped entry); empty when nothing is dropped.
pub(crate) fn retained_comment<R: ReadView + ?Sized>(r: &R) -> Result<String> {
    let mut cells = Vec::new();
    for o in retained_bases(r)?.keys() {
        let n = dropped_mark(r, o)?;
        if n > 0 {
            cells.push(format!("{}:{n}", hex(&o.0)));
        }
    }
    if cells.is_empty() {
        return Ok(String::new());
    }
    Ok(format!("{COMMENT_TAG}{}", cells.join(",")))
}

/// The sender's chain bases a packet's comment names (malformed cells are ignored: the
/// comment is informational, and an old sender writes none).
pub(crate) fn parse_retained_comment(comment: &str) -> BTreeMap<ReplicaId, u64> {
    let mut out = BTreeMap::new();
    let Some(cells) = comment.strip_prefix(COMMENT_TAG) else {
        return out;
    };
    for cell in cells.split(',') {
        let Some((id, n)) = cell.split_once(':') else {
            continue;
        };
        if let (Some(id), Ok(n)) = (unhex16(id), n.parse::<u64>()) {
            out.insert(ReplicaId(id), n);
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses a restore window as an operator writes it: `never`, or a number with a unit
/// `s`, `m`, `h`, `d` (`0` drops what every sibling holds at once). Returns milliseconds.
pub fn parse_window(text: &str) -> std::result::Result<Option<u64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    if t == "0" {
        return Ok(Some(0));
    }
    let (num, unit) = t.split_at(t.len().saturating_sub(1));
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match num.parse::<u64>() {
        Ok(n) if ms > 0 => n.checked_mul(ms).map(Some).ok_or_else(|| {
            format!("restore window {text:?} is too long; give at most a few years")
        }),
        _ => Err(format!(
            "restore window {text:?} is not a duration; write e.g. 30d, 12h, 90m, 0 or never"
        )),
    }
}

/// A window in the operator's words (the largest unit that divides it).
pub fn window_text(window_ms: Option<u64>) -> String {
    match window_ms {
        None => "never (retention off)".to_string(),
        Some(0) => "0 (drop what every sibling holds)".to_string(),
        Some(ms) => {
            for (unit, len) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
                if ms % len == 0 {
                    return format!("{}{unit}", ms / len);
                }
            }
            format!("{}s", ms.div_ceil(1000))
        }
    }
}

impl<S: Store> Replica<S> {
    /// Whether entry `n` of `origin` was dropped here before the chain's base (its hash is
    /// gone; every sibling held it).
    pub(crate) fn dropped_by_retention(&self, origin: &ReplicaId, n: u64) -> Result<bool> {
        Ok(retained_base(&self.store, origin)?.is_some_and(|(d, _)| n < d))
    }

    /// Why `what` (something that needs every entry from the first, such as a creation
    /// packet or rebuilding the object base) cannot be done once retention has dropped any
    /// (None: the whole history is here).
    pub(crate) fn history_dropped(&self, what: &str, next: &str) -> Result<Option<String>> {
        let Some((o, n)) = retained_bases(&self.store)?.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(format!(
            "replica {} cannot {what}: that needs its whole oplog, and retention dropped entries 1..{n} of origin {} (`msite scrub`); {next}",
            self.name(),
            self.replica_name(&o)
        )))
    }

    /// The chain base of `origin`: the number and hash of its last entry dropped here.
    pub fn chain_base(&self, origin: &ReplicaId) -> Result<Option<(u64, Hash)>> {
        retained_base(&self.store, origin)
    }

    /// Checks every origin's hash chain from its retained base (or its first entry) to the
    /// own row: each held entry continues the one before, the first the chain's base.
    /// Returns how many entries were checked.
    pub fn verify_chains(&self) -> Result<u64> {
        let mut checked = 0;
        for (o, held) in &self.own_row()?.0 {
            let (from, mut prev) = match retained_base(&self.store, o)? {
                Some((n, h)) => (n + 1, h),
                None => (1, crate::ids::ZERO_HASH),
            };
            for n in from..=*held {
                let e = self.entry(o, n)?.ok_or_else(|| {
                    CoreError::Invalid(format!(
                        "entry {n} of {} is missing from the oplog; run `msite check`",
                        self.replica_name(o)
                    ))
                })?;
                if e.prev != prev {
                    return Err(CoreError::Invalid(format!(
                        "entry {n} of {} does not continue its hash chain; run `msite check`",
                        self.replica_name(o)
                    )));
                }
                prev = e.hash;
                checked += 1;
            }
        }
        Ok(checked)
    }

    /// The restore window (None: retention off, the default).
    pub fn retention_window(&self) -> Result<Option<u64>> {
        match self.store.get(Keyspace::Meta, WINDOW)? {
            Some(v) => Ok(Some(be_u64(&v)?)),
            None => Ok(None),
        }
    }

    /// Sets the restore window (None turns retention off). Kept in the store, so a backup
    /// and its restore keep it.
    pub fn set_retention_window(&self, window_ms: Option<u64>) -> Result<()> {
        let mut txn = Txn::new(&self.store);
        match window_ms {
            Some(ms) => txn.put(Keyspace::Meta, WINDOW, &ms.to_be_bytes()),
            None => txn.delete(Keyspace::Meta, WINDOW),
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }

    /// Drops what the retention rule allows (nothing with `dry_run`), and says per origin what
    /// was kept and why. Refused while the replica is restored, rolled back or recovering:
    /// then what it holds is not settled.
    pub fn scrub(&self, dry_run: bool) -> Result<ScrubReport> {
        self.scrub_with_window(self.retention_window()?, dry_run)
    }

    /// [`Replica::scrub`] under `window` rather than the stored one (what `scrub --keep W
    /// --dry-run` shows before the window is set).
    pub fn scrub_with_window(&self, window: Option<u64>, dry_run: bool) -> Result<ScrubReport> {
        self.check_scrubbable()?;
        let own = self.own_row()?;
        let floor = self.acknowledged_floor(&own)?;
        let now = self.env.now_ms();
        let then = match window {
            Some(w) => self.acknowledged_a_window_ago(now, w, &floor.row)?,
            None => Some(floor.row.clone()),
        };
        let mut report = ScrubReport {
            window_ms: window,
            dry_run,
            origins: Vec::new(),
            entries_dropped: 0,
        };
        for (o, held) in &own.0 {
            let line = self.origin_scrub(o, *held, window, &floor, then.as_ref())?;
            report.entries_dropped += line.dropped - line.dropped_before;
            if !dry_run && line.dropped > line.dropped_before {
                self.drop_prefix(o, line.dropped_before, line.dropped)?;
            }
            report.origins.push(line);
        }
        if let (Some(w), false) = (window, dry_run) {
            self.record_floor(now, w, &floor.row)?;
        }
        Ok(report)
    }

    fn check_scrubbable(&self) -> Result<()> {
        self.check_exportable()?;
        if self.status()?.recovering.is_some() {
            return Err(CoreError::Locked(format!(
                "replica {} is recovering from a restore and keeps its whole oplog until the restoration completes; run `msite scrub` after it is unlocked",
                self.name()
            )));
        }
        Ok(())
    }

    /// What one origin's oplog keeps: up to what every sibling acknowledges now and did one
    /// window ago (`then`), never less than what is already dropped.
    fn origin_scrub(
        &self,
        o: &ReplicaId,
        held: u64,
        window: Option<u64>,
        floor: &Floor,
        then: Option<&Row>,
    ) -> Result<OriginScrub> {
        let before = retained_base(&self.store, o)?.map_or(0, |(n, _)| n);
        let now_acked = floor.row.get(o).min(held);
        let then_acked = then.map(|r| r.get(o).min(held));
        let (upto, why) = match (window, then_acked) {
            (None, _) => (0, Kept::NoWindow),
            (Some(_), Some(t)) if t < now_acked => (t, Kept::Window(Some(t))),
            (Some(_), None) => (0, Kept::Window(None)),
            (Some(_), Some(_)) if now_acked >= held => (held, Kept::Nothing),
            (Some(_), Some(_)) => (
                now_acked,
                Kept::Sibling {
                    name: floor.limiter.get(o).cloned().unwrap_or_default(),
                    acknowledged: now_acked,
                },
            ),
        };
        Ok(OriginScrub {
            origin: *o,
            name: self.replica_name(o),
            held,
            dropped_before: before,
            dropped: upto.max(before),
            why,
        })
    }

    /// Per origin, the least any sibling acknowledges by its own latest report (a recovering
    /// sibling, or one that never reported: nothing).
    fn acknowledged_floor(&self, own: &Row) -> Result<Floor> {
        self.acknowledged_floor_but(own, None, Unreported::HoldsNothing)
    }

    /// Per origin, the least every sibling but `skip` holds: what a snapshot of this replica
    /// may leave out of the new replica's oplog (`skip`: the new replica, which holds
    /// everything in its object base). As [`Replica::acknowledged_floor`], except that a
    /// sibling that never reported counts as holding the row its creation carried: every
    /// incarnation of it holds that much, and it needs nothing below it from the new replica.
    /// So replicas made one after another from one site, before the earlier ones report, do
    /// not each carry the whole oplog.
    pub(crate) fn acknowledged_row_but(&self, own: &Row, skip: &ReplicaId) -> Result<Row> {
        Ok(self
            .acknowledged_floor_but(own, Some(skip), Unreported::HoldsItsCreationRow)?
            .row)
    }

    /// Per origin, what a snapshot of this replica may leave out of the new replica's oplog,
    /// given what every other sibling holds now (`acked`, [`Replica::acknowledged_row_but`]):
    /// what retention could drop here, by the same restore window (rule 2 above). Without a
    /// window nothing: a sibling restored from any backup, the creator included, must find
    /// every entry it lost held as an entry somewhere, and the new replica may be the only
    /// other site (a retirement can make it so later). With a window of 0, `acked`; with a
    /// longer one, only what every sibling had also acknowledged one window ago.
    pub(crate) fn outside_restore_window(&self, acked: Row) -> Result<Row> {
        let Some(window) = self.retention_window()? else {
            return Ok(Row::default());
        };
        let then = self
            .acknowledged_a_window_ago(self.env.now_ms(), window, &acked)?
            .unwrap_or_default();
        let both = acked.0.iter().map(|(o, n)| (*o, (*n).min(then.get(o))));
        Ok(Row(both.collect()))
    }

    /// What every sibling had acknowledged one `window` before `now` (rule 2): the newest
    /// floor record at least that old (None: none yet), or `acked_now` for a window of 0.
    fn acknowledged_a_window_ago(
        &self,
        now: u64,
        window: u64,
        acked_now: &Row,
    ) -> Result<Option<Row>> {
        if window == 0 {
            return Ok(Some(acked_now.clone()));
        }
        Ok(self.floor_at(now.saturating_sub(window))?.map(|(_, r)| r))
    }

    /// The row the `CreateReplica` entry of sibling `s` carried, when this replica holds
    /// that entry (nothing otherwise: it was dropped by retention or came with a snapshot).
    fn creation_row(&self, s: &ReplicaId) -> Result<Row> {
        let Some(obj) = self.view().replica(s)? else {
            return Ok(Row::default());
        };
        let by = obj.created_by;
        Ok(match self.entry(&by.origin, by.number)?.map(|e| e.op) {
            Some(crate::model::Op::CreateReplica { replica, row, .. }) if replica == *s => row,
            _ => Row::default(),
        })
    }

    fn acknowledged_floor_but(
        &self,
        own: &Row,
        skip: Option<&ReplicaId>,
        unreported: Unreported,
    ) -> Result<Floor> {
        let recovering: std::collections::BTreeSet<ReplicaId> = held_requests_in(&self.store)?
            .into_iter()
            .map(|r| r.replica)
            .collect();
        let mut floor = Floor {
            row: own.clone(),
            limiter: BTreeMap::new(),
        };
        for s in self
            .known_siblings()?
            .into_iter()
            .filter(|s| Some(s) != skip)
        {
            // A recovering sibling's copy may hold entries a newer restoration retired, which
            // it gives up (K13): it counts as holding nothing until it completes.
            let acked = match recovering.contains(&s) {
                true => Row::default(),
                false => match (self.reported_row(&s)?, unreported) {
                    (Some(reported), _) => reported,
                    (None, Unreported::HoldsNothing) => Row::default(),
                    (None, Unreported::HoldsItsCreationRow) => self.creation_row(&s)?,
                },
            };
            for (o, n) in floor.row.0.iter_mut() {
                if acked.get(o) < *n {
                    *n = acked.get(o);
                    floor.limiter.insert(*o, self.replica_name(&s));
                }
            }
        }
        Ok(floor)
    }

    /// The newest floor record made at or before `cutoff` (local ms), if any.
    fn floor_at(&self, cutoff: u64) -> Result<Option<(u64, Row)>> {
        let mut best = None;
        for kv in self
            .store
            .scan(Keyspace::Meta, KeyRange::prefix(FLOOR_PREFIX))?
        {
            let (k, v) = kv?;
            let at = be_u64(&k[FLOOR_PREFIX.len()..])?;
            if at > cutoff {
                break;
            }
            best = Some((at, Row::decode(&mut Dec::new(&v, "retention floor"))?));
        }
        Ok(best)
    }

    /// Records what every sibling acknowledges now (unless a record younger than a
    /// sixteenth of the window exists), and forgets the records older than the newest one a
    /// window old, which every later scrub supersedes.
    fn record_floor(&self, now: u64, window: u64, row: &Row) -> Result<()> {
        let mut txn = Txn::new(&self.store);
        let keep_from = self.floor_at(now.saturating_sub(window))?.map(|(at, _)| at);
        let mut newest = None;
        for (k, _) in txn.scan_prefix(Keyspace::Meta, FLOOR_PREFIX)? {
            let at = be_u64(&k[FLOOR_PREFIX.len()..])?;
            if keep_from.is_some_and(|from| at < from) {
                txn.delete(Keyspace::Meta, &k);
            }
            newest = Some(at);
        }
        let spacing = window / FLOOR_RECORDS_PER_WINDOW;
        if newest.is_none_or(|at| now.saturating_sub(at) >= spacing.max(1)) {
            txn.put(
                Keyspace::Meta,
                &floor_key(now),
                &row.encode(Enc::new()).done(),
            );
        }
        txn.commit(WriteOptions::SYNC)?;
        Ok(())
    }

    /// Deletes entries `from + 1 ..= to` of `origin`, in consistent batches: each commit
    /// deletes a run of entries and records the last one's hash as the chain's base.
    fn drop_prefix(&self, origin: &ReplicaId, from: u64, to: u64) -> Result<()> {
        let mut start = from + 1;
        while start <= to {
            let end = to.min(start + DELETE_BATCH - 1);
            let hash = Self::entry_hash_at(&self.store, origin, end)?.ok_or_else(|| {
                CoreError::Invalid(format!(
                    "entry {end} of {} is missing from the oplog, so it cannot become the chain's base; run `msite check`",
                    self.replica_name(origin)
                ))
            })?;
            let mut txn = Txn::new(&self.store);
            for n in start..=end {
                txn.delete(Keyspace::Oplog, &keys::oplog(origin, n));
            }
            txn.put(Keyspace::Meta, &base_key(origin), &base_value(end, &hash));
            txn.put(Keyspace::Meta, &dropped_key(origin), &end.to_be_bytes());
            txn.commit(WriteOptions::SYNC)?;
            start = end + 1;
        }
        Ok(())
    }

    /// Raises the export `base` for `target` to each origin's chain base, since the entries
    /// below it are gone; a target known to hold them is fine (its hash is compared at the
    /// base). For one that lacks them by its restore request (exact: what its copy holds)
    /// this returns the refusal; for one whose last report says less (which may be an old
    /// packet arriving late) a warning that says so. The caller shows them; the packet still
    /// carries what follows, and a target that lacks the entries refuses it, naming them.
    pub(crate) fn clamp_to_retained(
        &self,
        target: &ReplicaId,
        base: &mut Row,
        own: &Row,
    ) -> Result<Vec<String>> {
        let bases = retained_bases(&self.store)?;
        if bases.is_empty() {
            return Ok(Vec::new());
        }
        let (exact, known) = self.known_held_by(target)?;
        let mut refusals = Vec::new();
        for (o, d) in bases {
            let b = base.get(&o);
            if b >= d || own.get(&o) <= b {
                continue;
            }
            let m = dropped_mark(&self.store, &o)?;
            let k = known.as_ref().map(|k| k.get(&o));
            if k.is_some_and(|k| k >= m && k < d) {
                // Below a snapshot's chain base but above what the family dropped: the
                // target's packet waits until a sibling that keeps them sends them.
                refusals.push(format!(
                    "{} holds {} only up to {}, and this replica (made from a snapshot) holds its entries only after {d}: {} gets {}..{d} from a sibling that keeps them before this packet applies",
                    self.replica_name(target),
                    self.replica_name(&o),
                    k.unwrap_or(0),
                    self.replica_name(target),
                    k.unwrap_or(0) + 1
                ));
            }
            // A target that never said what it holds (made after the scrub from a sibling)
            // may well hold them: it refuses the packet itself if it does not.
            if known.as_ref().is_some_and(|k| k.get(&o) < m) {
                let known = known.as_ref().map_or(0, |k| k.get(&o));
                let r = Refusal::BehindRetention {
                    replica: self.replica_name(target),
                    origin: self.replica_name(&o),
                    first: known.max(b) + 1,
                    last: m,
                    keeper: self.name(),
                };
                refusals.push(match exact {
                    true => r.to_string(),
                    false => format!(
                        "{} last reported holding {} only up to {known}, and this replica no longer keeps entries up to {m}: if it lacks them it refuses this packet, saying so, and must be re-created from a fresh creation packet",
                        self.replica_name(target),
                        self.replica_name(&o)
                    ),
                });
            }
            base.set(o, d);
        }
        Ok(refusals)
    }

    /// What `target` holds by its own word: its restore request's row while it holds one
    /// here (exact: true), else its latest report (None: it never said).
    fn known_held_by(&self, target: &ReplicaId) -> Result<(bool, Option<Row>)> {
        if let Some(r) = held_requests_in(&self.store)?
            .into_iter()
            .find(|r| r.replica == *target)
        {
            return Ok((true, Some(r.row)));
        }
        Ok((false, self.reported_row(target)?))
    }

    /// Where `sibling` stands against this replica's retention: whether what it holds, by
    /// its restore request or its last report, reaches every chain base here.
    pub fn sibling_retention(&self, sibling: &ReplicaId) -> Result<SiblingRetention> {
        let bases = retained_bases(&self.store)?;
        if bases.is_empty() {
            return Ok(SiblingRetention::Whole);
        }
        let (exact, Some(known)) = self.known_held_by(sibling)? else {
            return Ok(SiblingRetention::Covered);
        };
        let behind = bases.into_iter().find(|(o, d)| known.get(o) < *d);
        Ok(match behind {
            None => SiblingRetention::Covered,
            Some((o, d)) => SiblingRetention::Behind {
                origin: self.replica_name(&o),
                first: known.get(&o) + 1,
                last: d,
                exact,
            },
        })
    }

    /// A packet that must wait for entries its sender no longer keeps (its comment names
    /// where the sender's history starts) would wait for ever: the refusal for it.
    pub(crate) fn behind_senders_retention(
        &self,
        h: &wire::Header,
        needs: &[Need],
    ) -> Option<Refusal> {
        let kept = parse_retained_comment(&h.comment);
        needs.iter().find_map(|n| {
            let d = kept.get(&n.origin).copied().unwrap_or(0);
            (n.has < d).then(|| Refusal::BehindRetention {
                replica: self.name(),
                origin: n.origin_name.clone(),
                first: n.has + 1,
                last: d,
                keeper: h.sender_name.clone(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_in_the_operators_units() {
        assert_eq!(parse_window("never"), Ok(None));
        assert_eq!(parse_window("0"), Ok(Some(0)));
        assert_eq!(parse_window("30d"), Ok(Some(30 * 86_400_000)));
        assert_eq!(parse_window("90m"), Ok(Some(90 * 60_000)));
        assert!(parse_window("30").is_err());
        assert!(parse_window("d").is_err());
        assert!(parse_window("99999999999999999d").is_err());
        assert_eq!(window_text(Some(30 * 86_400_000)), "30d");
        assert_eq!(window_text(Some(90 * 60_000)), "90m");
    }

    #[test]
    fn the_comment_round_trips_and_ignores_garbage() {
        let a = ReplicaId([7; 16]);
        let comment = format!("{COMMENT_TAG}{}:12,zz:3,{}:x", hex(&a.0), hex(&[1; 16]));
        let parsed = parse_retained_comment(&comment);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed.get(&a), Some(&12));
        assert!(parse_retained_comment("r1=5").is_empty());
    }
}
