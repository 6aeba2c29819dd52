//! The family at a glance: one status document ([`StatusDoc`]) computed from the store (the
//! epoch matrix, the restoration state), the site's bays (packets waiting, refused ones with
//! their reasons) and its packet history ([`crate::history`]). `msite status` prints it
//! ([`text`]) or gives it as JSON; `msite serve` renders it as the status page, gives it at
//! `/api/status` and as Prometheus metrics ([`metrics`]).
//!
//! Rules kept: nothing here writes; what a waiting packet needs is core's assessment through
//! the same function `lspacket` uses (the words of `syncreplica import`); every text that comes
//! from a packet, a file name or a `.reason` file is escaped and bounded, and lists are bounded
//! (with the total given beside), so a hostile or huge bay cannot blow up the page; a file in a
//! bay that is no regular file is never opened.

pub mod metrics;
pub mod text;

use std::path::{Path, PathBuf};
use std::time::Duration;

use msite_core::ReplicaId;
use serde::{Deserialize, Serialize};

use crate::history::{self, Direction, Record};
use crate::packets;
use crate::site::Site;
use crate::util;

/// The format version of the document.
pub const STATUS_FORMAT: u32 = 1;
/// How many packets of a bay the document lists (the totals count them all).
pub const MAX_LISTED: usize = 200;
/// The longest reason or verdict text kept.
const MAX_TEXT: usize = 500;
/// How much of a `.reason` file is read.
const REASON_READ: u64 = 4096;
/// How long a sibling may go unheard before it is marked late, without a routes file.
pub const DEFAULT_LATE_AFTER: Duration = Duration::from_secs(86_400);

/// The status of one site and what it knows of its family.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusDoc {
    /// The document's format version.
    pub format: u32,
    /// When it was computed (UTC).
    pub generated: String,
    /// The same, in milliseconds since the Unix epoch.
    pub generated_ms: u64,
    /// The family's name.
    pub family: String,
    /// The family's id (hex).
    pub family_id: String,
    /// This site's replica.
    pub replica: String,
    /// How long a sibling may go unheard before it is late, in seconds.
    pub late_after_s: u64,
    /// This replica's restoration state.
    pub restore: RestoreState,
    /// One row per sibling, by name.
    pub siblings: Vec<SiblingRow>,
    /// Packets in the incoming bay (at most [`MAX_LISTED`]), oldest first.
    pub incoming: Vec<BayPacket>,
    /// How many packets the incoming bay holds in all.
    pub incoming_total: usize,
    /// Of them, how many must wait (for another packet, for their other parts).
    pub waiting_total: usize,
    /// Refused packets in the refused bay (at most [`MAX_LISTED`]), newest first.
    pub refused: Vec<RefusedPacket>,
    /// How many refused packets the refused bay holds in all.
    pub refused_total: usize,
    /// Part files waiting in the outgoing bay to be shipped.
    pub outgoing_total: usize,
    /// The epoch matrix (as `lsepoch --json`).
    pub epoch: Epoch,
    /// Lines of the history file that could not be read (skipped).
    pub history_unreadable: usize,
    /// Replicas the family retired (`msite rmreplica`), by name: no siblings any more, so
    /// not in `siblings`; their packets are refused.
    #[serde(default)]
    pub retired: Vec<String>,
    /// This replica's mastership requests that their master refused (policy `deny`), until
    /// it asks again.
    #[serde(default)]
    pub mastership_denied: Vec<DeniedRequest>,
}

/// A mastership request of this replica that its master refused.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeniedRequest {
    /// The object, as a selector (`brtype:NAME`, `elem:PATH`, …).
    pub object: String,
    /// The master that refused it.
    pub by: String,
    /// When it refused (UTC, the master's clock).
    pub time: String,
}

/// The refused mastership requests of the replica.
fn denied(site: &Site) -> anyhow::Result<Vec<DeniedRequest>> {
    let r = &site.replica;
    Ok(r.denied_requests()?
        .into_iter()
        .map(|d| DeniedRequest {
            object: util::esc(&r.describe_object(&d.object)),
            by: r.replica_name(&d.master),
            time: util::utc_time(d.time_ms),
        })
        .collect())
}

/// This replica's restoration state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestoreState {
    /// `normal`, `restored` (from a backup; run `restorereplica`), `recovering` or
    /// `rolled_back`.
    pub state: String,
    /// Whether the replica refuses local changes and exports now.
    pub locked: bool,
    /// While rolled back: why.
    pub reason: Option<String>,
    /// While recovering: the incarnation of its restore request.
    pub incarnation: Option<u64>,
    /// While recovering: the siblings whose recovery update it still waits for.
    pub awaiting: Vec<String>,
    /// Siblings whose restoration is in progress (their restore request held here).
    pub siblings_restoring: Vec<String>,
}

/// One sibling.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiblingRow {
    /// Its name.
    pub name: String,
    /// Its id (hex).
    pub id: String,
    /// The last packet from it (any outcome).
    pub last_in: Option<Exchange>,
    /// The last packet to it (exported or shipped).
    pub last_out: Option<Exchange>,
    /// The last successful exchange either way (UTC), if any.
    pub last_ok: Option<String>,
    /// The same, in milliseconds since the Unix epoch.
    pub last_ok_ms: Option<u64>,
    /// Entries this replica holds that it believes the sibling lacks.
    pub they_lack: u64,
    /// Entries the sibling is believed to hold that this replica lacks.
    pub we_lack: u64,
    /// Packets from it that wait in the incoming bay.
    pub waiting: usize,
    /// Packets from it in the refused bay.
    pub refused: usize,
    /// Whether this (recovering) replica waits for its recovery update.
    pub awaited: bool,
    /// `ok` (heard from within `late_after_s`), `late`, or `never` (no packet recorded).
    pub heard: String,
    /// The fingerprint of its signing key; always null until packets are signed.
    pub key_fingerprint: Option<String>,
    /// Where it stands against this replica's oplog retention.
    #[serde(default)]
    pub retention: RetentionStanding,
}

/// Where a sibling stands against this replica's retention (docs/protocol.md §9).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RetentionStanding {
    /// `off` (no restore window here), `ok`, `at_risk` (not heard from for more than half
    /// the window: a restore request of its may come after entries it needs are dropped) or
    /// `behind` (by its own word it lacks entries this replica no longer keeps; also when
    /// retention is off now but dropped them earlier).
    pub state: String,
    /// The sentence for the operator, unless `off` or `ok`.
    pub note: Option<String>,
}

impl RetentionStanding {
    fn new(state: &str, note: Option<String>) -> Self {
        RetentionStanding {
            state: state.to_string(),
            note,
        }
    }
}

/// The standing of sibling `name` from where its word puts it, the restore window here
/// (None: off) and how long it has been silent (None: never heard from).
fn classify_retention(
    name: &str,
    sibling: msite_core::retain::SiblingRetention,
    window_ms: Option<u64>,
    silent_ms: Option<u64>,
) -> RetentionStanding {
    use msite_core::retain::{window_text, SiblingRetention};
    if let SiblingRetention::Behind {
        origin,
        first,
        last,
        exact,
    } = sibling
    {
        let by = match exact {
            true => "its restore request",
            false => "its last report",
        };
        let note = format!(
            "{} lacks entries {first}..{last} of origin {} by {by}, and this replica no longer keeps them (retention): if it does lack them, re-create it from a fresh creation packet",
            util::esc(name),
            util::esc(&origin)
        );
        return RetentionStanding::new("behind", Some(note));
    }
    let Some(window) = window_ms else {
        return RetentionStanding::new("off", None);
    };
    // A window of 0 drops what every sibling holds at once: no silence is too long for it.
    if window == 0 || silent_ms.is_none_or(|s| s <= window / 2) {
        return RetentionStanding::new("ok", None);
    }
    RetentionStanding::new(
        "at_risk",
        Some(format!(
            "{} has not been heard from for more than half the restore window ({}): if it is restored from a backup now, its restore request may arrive after this replica dropped entries it needs, and it would have to be re-created",
            util::esc(name),
            window_text(Some(window))
        )),
    )
}

/// One packet exchanged, from the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Exchange {
    /// When (UTC).
    pub time: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The packet's file name.
    pub packet: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// `applied`, `already`, `refused`, `exported` or `shipped`.
    pub result: String,
    /// Why (a refusal), or the hub it went through.
    pub detail: Option<String>,
}

/// A packet in the incoming bay.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BayPacket {
    /// The (first part's) file name, with the parts present when split.
    pub packet: String,
    /// Its sender.
    pub sender: Option<String>,
    /// Its size in bytes (the parts present).
    pub bytes: u64,
    /// `importable`, `waiting`, `incomplete`, `applied`, `locked`, `unreadable`, or a
    /// refusal code as `lspacket --json` gives (`stale`, `rolled_back`, …).
    pub verdict: String,
    /// What it needs or why not, in the words of `syncreplica import`.
    pub here: String,
}

impl BayPacket {
    /// Whether the packet must wait (for another packet, or its other parts).
    pub fn waits(&self) -> bool {
        matches!(self.verdict.as_str(), "waiting" | "incomplete" | "locked")
    }
}

/// A packet in the refused bay.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefusedPacket {
    /// Its file name in the refused bay.
    pub file: String,
    /// Its sender, when the file is a readable packet.
    pub sender: Option<String>,
    /// The reason (its `.reason` file, bounded).
    pub reason: String,
    /// When it was refused (UTC, the `.reason` file's time).
    pub time: String,
}

/// The epoch matrix.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Epoch {
    /// The origins (columns): this replica first, then by name.
    pub origins: Vec<String>,
    /// The rows: this replica's own row first, then each sibling's estimate row.
    pub rows: Vec<EpochRow>,
}

/// One row of the epoch matrix.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRow {
    /// Whose row.
    pub replica: String,
    /// Whether it is the own row (exact) rather than an estimate.
    pub own: bool,
    /// The highest entry number per origin, in the order of `origins`.
    pub cells: Vec<u64>,
}

/// What the document is computed with.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a sibling may go unheard before it is late.
    pub late_after: Duration,
    /// Now, in milliseconds since the Unix epoch.
    pub now_ms: u64,
}

impl Options {
    /// Options for now with `late_after`.
    pub fn now(late_after: Duration) -> Options {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Options { late_after, now_ms }
    }
}

/// Computes the status of `site`.
pub fn collect(site: &Site, opts: &Options) -> anyhow::Result<StatusDoc> {
    let r = &site.replica;
    let restore = restore_state(site)?;
    let (incoming, incoming_total) = incoming(site)?;
    let (refused, refused_total) = refused(site);
    let (records, history_unreadable) = history::read(&site.paths.dir);
    let epoch = epoch(site)?;
    let outgoing_total = packets::bay_files(&site.paths.outgoing())?.len();
    let mut siblings = Vec::new();
    let retired_ids = r.retired()?;
    let mut retired: Vec<String> = retired_ids.iter().map(|id| r.replica_name(id)).collect();
    retired.sort();
    let live = |x: &msite_core::vob::ReplicaObj| x.id != r.id() && !retired_ids.contains(&x.id);
    let window_ms = r.retention_window()?;
    for x in r.view().replicas()?.into_iter().filter(live) {
        let mut row = sibling_row(site, &x.id, &records, opts, window_ms)?;
        let name = row.name.clone();
        let from = |s: &Option<String>| s.as_deref() == Some(name.as_str());
        row.waiting = incoming
            .iter()
            .filter(|p| from(&p.sender) && p.waits())
            .count();
        row.refused = refused.iter().filter(|p| from(&p.sender)).count();
        row.awaited = restore.awaiting.contains(&name);
        siblings.push(row);
    }
    siblings.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StatusDoc {
        format: STATUS_FORMAT,
        generated: util::utc_time(opts.now_ms),
        generated_ms: opts.now_ms,
        family: r.family_name().to_string(),
        family_id: r.family().to_hex(),
        replica: r.name(),
        late_after_s: opts.late_after.as_secs(),
        restore,
        waiting_total: incoming.iter().filter(|p| p.waits()).count(),
        siblings,
        incoming,
        incoming_total,
        refused,
        refused_total,
        outgoing_total,
        epoch,
        history_unreadable,
        retired,
        mastership_denied: denied(site)?,
    })
}

/// The restoration state of this replica, and the restorations of others held here.
fn restore_state(site: &Site) -> anyhow::Result<RestoreState> {
    let r = &site.replica;
    let st = r.status()?;
    let mut state = "normal";
    if st.restored {
        state = "restored";
    }
    if st.rolled_back.is_some() {
        state = "rolled_back";
    }
    let mut awaiting = Vec::new();
    if let Some(rec) = &st.recovering {
        state = "recovering";
        awaiting = rec.awaited.keys().map(|id| r.replica_name(id)).collect();
        awaiting.sort();
    }
    let siblings_restoring = r
        .held_requests()?
        .iter()
        .map(|h| r.replica_name(&h.replica))
        .collect();
    Ok(RestoreState {
        state: state.to_string(),
        locked: state != "normal",
        reason: st.rolled_back.map(|w| util::bounded_line(&w, MAX_TEXT)),
        incarnation: st.recovering.map(|rec| rec.incarnation),
        awaiting,
        siblings_restoring,
    })
}

/// One sibling's row: what the epoch matrix and the history say of it.
fn sibling_row(
    site: &Site,
    id: &ReplicaId,
    records: &[Record],
    opts: &Options,
    window_ms: Option<u64>,
) -> anyhow::Result<SiblingRow> {
    let r = &site.replica;
    let name = r.replica_name(id);
    let (own, est) = (r.own_row()?, r.estimate(id)?);
    let origins: Vec<ReplicaId> = own.0.keys().chain(est.0.keys()).copied().collect();
    let mut seen = std::collections::BTreeSet::new();
    let (mut they_lack, mut we_lack) = (0, 0);
    for o in origins.into_iter().filter(|o| seen.insert(*o)) {
        let (a, b) = (own.get(&o), est.get(&o));
        they_lack += a.saturating_sub(b);
        we_lack += b.saturating_sub(a);
    }
    let mine = |dir: Direction| {
        records
            .iter()
            .rev()
            .find(|x| x.dir == dir && x.sibling.as_deref() == Some(name.as_str()))
    };
    let (last_in, last_out) = (mine(Direction::In), mine(Direction::Out));
    let last_ok_ms = records
        .iter()
        .rev()
        .find(|x| x.outcome.ok() && x.sibling.as_deref() == Some(name.as_str()))
        .map(|x| x.at_ms);
    let heard = match last_in {
        None => "never",
        Some(x) if opts.now_ms.saturating_sub(x.at_ms) > opts.late_after.as_millis() as u64 => {
            "late"
        }
        Some(_) => "ok",
    };
    Ok(SiblingRow {
        id: id.to_hex(),
        last_in: last_in.map(exchange),
        last_out: last_out.map(exchange),
        last_ok: last_ok_ms.map(util::utc_time),
        last_ok_ms,
        they_lack,
        we_lack,
        waiting: 0,
        refused: 0,
        awaited: false,
        heard: heard.to_string(),
        key_fingerprint: r.public_key(id)?.map(|k| msite_core::sync::fingerprint(&k)),
        retention: classify_retention(
            &name,
            r.sibling_retention(id)?,
            window_ms,
            last_in.map(|x| opts.now_ms.saturating_sub(x.at_ms)),
        ),
        name,
    })
}

/// A history record as the document shows it.
fn exchange(x: &Record) -> Exchange {
    Exchange {
        time: util::utc_time(x.at_ms),
        at_ms: x.at_ms,
        packet: x.packet.clone(),
        bytes: x.bytes,
        result: format!("{:?}", x.outcome).to_lowercase(),
        detail: x.detail.clone(),
    }
}

/// The packets of the incoming bay with what each needs (at most [`MAX_LISTED`]), and how many
/// there are in all.
fn incoming(site: &Site) -> anyhow::Result<(Vec<BayPacket>, usize)> {
    let bay = packets::bay_entries(&site.paths.incoming())?;
    let (mut groups, bad) = packets::group_files(&bay.files);
    let me = site.replica.id();
    groups.sort_by_key(|g| (g.header.created_ms, g.seq_for(&me)));
    let total = groups.len() + bad.len() + bay.odd.len();
    let mut out = Vec::new();
    for g in groups.iter().take(MAX_LISTED) {
        let (verdict, here) = if g.complete() {
            crate::cmd::lspacket::assess(site, g)?
        } else {
            (
                "incomplete",
                format!("waits for its other parts: {}", g.problems()),
            )
        };
        let sender = site.replica.replica_name(&ReplicaId(g.header.sender.0));
        out.push(BayPacket {
            packet: util::bounded_line(&g.display(), MAX_TEXT),
            sender: Some(util::esc(&sender)),
            bytes: util::files_size(&g.paths()),
            verdict: verdict.to_string(),
            here: util::bounded_line(&util::esc(&here), MAX_TEXT),
        });
    }
    let odd = bay
        .odd
        .into_iter()
        .map(|(p, what)| (p, format!("not a regular file ({what})")));
    for (p, why) in bad.into_iter().chain(odd) {
        if out.len() >= MAX_LISTED {
            break;
        }
        out.push(BayPacket {
            packet: name_of(&p),
            sender: None,
            bytes: 0,
            verdict: "unreadable".into(),
            here: util::bounded_line(
                &util::esc(&format!("the next import refuses it: {why}")),
                MAX_TEXT,
            ),
        });
    }
    Ok((out, total))
}

/// A file's name, escaped and bounded.
fn name_of(p: &Path) -> String {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    util::bounded_line(&util::esc(&n), MAX_TEXT)
}

/// The refused bay's packets with their reasons, newest first (at most [`MAX_LISTED`]), and how
/// many there are in all.
fn refused(site: &Site) -> (Vec<RefusedPacket>, usize) {
    let dir = site.paths.refused();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return (Vec::new(), 0);
    };
    let mut reasons: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "reason"))
        .map(|p| {
            let t = std::fs::metadata(&p).and_then(|m| m.modified());
            (t.unwrap_or(std::time::UNIX_EPOCH), p)
        })
        .collect();
    reasons.sort_by(|a, b| b.cmp(a));
    let total = reasons.len();
    let out = reasons
        .into_iter()
        .take(MAX_LISTED)
        .map(|(t, p)| refused_one(site, &p, t))
        .collect();
    (out, total)
}

/// One refused packet: its `.reason` file at `why`, written at `t`.
fn refused_one(site: &Site, why: &Path, t: std::time::SystemTime) -> RefusedPacket {
    let file = why.with_extension("");
    let reason = read_bounded(why).unwrap_or_else(|| "(the reason file cannot be read)".into());
    // A FIFO or a directory moved aside is never opened.
    let sender = packets::not_regular(&file)
        .is_none()
        .then(|| msite_packet::open(&file).ok())
        .flatten()
        .map(|rd| {
            let h = rd.header();
            let id = ReplicaId(h.sender.0);
            match site.replica.view().replica(&id) {
                Ok(Some(_)) => site.replica.replica_name(&id),
                _ => id.short(),
            }
        });
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    RefusedPacket {
        file: name_of(&file),
        sender: sender.map(|s| util::esc(&s)),
        reason,
        time: util::utc_time(ms),
    }
}

/// The start of a text file, escaped and bounded; `None` when it cannot be read.
fn read_bounded(p: &Path) -> Option<String> {
    use std::io::Read as _;
    if packets::not_regular(p).is_some() {
        return None;
    }
    let mut buf = Vec::new();
    std::fs::File::open(p)
        .ok()?
        .take(REASON_READ)
        .read_to_end(&mut buf)
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    Some(util::bounded_line(&util::esc(text.trim_end()), MAX_TEXT))
}

/// The epoch matrix, with names.
fn epoch(site: &Site) -> anyhow::Result<Epoch> {
    let r = &site.replica;
    let mut origins: Vec<ReplicaId> = r.view().replicas()?.into_iter().map(|x| x.id).collect();
    origins.sort_by_key(|id| (*id != r.id(), r.replica_name(id)));
    let mut matrix = r.epoch_matrix()?;
    matrix.sort_by_key(|(id, _)| (*id != r.id(), r.replica_name(id)));
    let rows = matrix
        .iter()
        .map(|(id, row)| EpochRow {
            replica: r.replica_name(id),
            own: *id == r.id(),
            cells: origins.iter().map(|o| row.get(o)).collect(),
        })
        .collect();
    Ok(Epoch {
        origins: origins.iter().map(|o| r.replica_name(o)).collect(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use msite_core::retain::SiblingRetention;

    use super::*;

    const DAY: u64 = 86_400_000;

    #[test]
    fn a_sibling_silent_for_more_than_half_the_window_is_at_risk() {
        let standing = |window, silent| {
            classify_retention("sanfran", SiblingRetention::Covered, window, silent).state
        };
        assert_eq!(standing(None, Some(30 * DAY)), "off");
        assert_eq!(standing(Some(DAY), Some(DAY / 2)), "ok");
        assert_eq!(
            standing(Some(DAY), None),
            "ok",
            "never heard: holds nothing back"
        );
        assert_eq!(standing(Some(0), Some(30 * DAY)), "ok");
        let at_risk = classify_retention("sanfran", SiblingRetention::Whole, Some(DAY), Some(DAY));
        assert_eq!(at_risk.state, "at_risk");
        let note = at_risk.note.unwrap();
        assert!(
            note.contains(
                "sanfran has not been heard from for more than half the restore window (1d)"
            ),
            "{note}"
        );
    }

    #[test]
    fn a_sibling_behind_is_named_with_its_entries_even_with_retention_off_now() {
        let behind = SiblingRetention::Behind {
            origin: "boston\u{1b}[31m".into(),
            first: 1200,
            last: 1400,
            exact: false,
        };
        let s = classify_retention("sanfran", behind, None, None);
        assert_eq!(s.state, "behind");
        let note = s.note.unwrap();
        assert!(
            note.contains(
                "sanfran lacks entries 1200..1400 of origin boston\\u{1b}[31m by its last report"
            ),
            "{note}"
        );
        assert!(
            !note.contains('\u{1b}'),
            "no raw control characters: {note}"
        );
    }
}
