//! Synchronisation: `syncreplica export|import` (and `import --watch`), `lspacket`, `lsepoch`,
//! `chepoch`.
//!
//! Import from the incoming bay: part files are grouped into logical packets; complete ones are
//! imported oldest first; applied (or already applied) packets leave the bay; refused ones move
//! to `bays/refused/` with a `.reason` file beside them (under a name no earlier refusal uses:
//! `NAME`, `NAME.1`, …); packets that must wait stay, and are retried whenever another packet
//! applied, until no more progress is made.
//!
//! No single file stops a site's imports. Bay entries that are no regular file (FIFOs,
//! directories, dangling links) are never opened and are moved aside like unreadable files. A
//! packet the store fails on (an engine error such as SQLite's "string or blob too big") is
//! refused with the store's message, the store is reopened (a failed durable write poisons it),
//! and the run goes on. The run stops, leaving the packet in the bay, only when the replica is
//! locked until `msite restorereplica`, when the store cannot be used at all (poisoned, locked
//! by another process, corrupt), or when it fails on two packets in a row: then the site, not
//! the packets, is at fault, and refusing packets would only move good ones aside.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{ArgGroup, Args, Subcommand};
use msite_core::{
    incarnation_text, Assessment, CoreError, ExportOutcome, ImportOutcome, Incoming, PacketId,
    Refusal, Replica, ReplicaId, Row,
};
use msite_packet::wire;
use serde_json::json;

use super::names;
use crate::backend::AnyStore;
use crate::history::{self, Direction, Outcome, Record};
use crate::packets::{self, Group};
use crate::site::{Ctx, Site};
use crate::util::{self, Exit, EXIT_ERROR, EXIT_WAITING};

/// `msite syncreplica`.
#[derive(Debug, Subcommand)]
pub enum Syncreplica {
    /// Write update packets for siblings.
    Export(Export),
    /// Import packets (the given files, or the incoming bay).
    Import(Import),
}

impl Syncreplica {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Syncreplica::Export(a) => a.run(ctx),
            Syncreplica::Import(a) => a.run(ctx),
        }
    }
}

/// `msite syncreplica export`.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("target").required(true).args(["to", "all"])),
    long_about = "Writes one update packet for sibling NAME (or, with --all, one per sibling) \
holding what this replica believes the sibling lacks, into the outgoing bay (or --out DIR). \
Ship the files to the sibling's incoming bay by any means. When there is nothing to send, no \
file is written and the command says so. A lost packet is resent by itself on a later export \
once the sibling's packets show it missing.\n\nSealing: with --encrypt-to, each packet is sealed (encrypted \
with age) to the recipients given. Without it, when the family's policy seals every packet \
(`msite seal-policy always`), each packet is sealed to its target's own recipient, which every \
replica announces in its packets; --no-encrypt writes it in the clear this once. A target whose \
recipient is not known here yet gets nothing, and the command says so.",
    after_help = "Example:\n  msite -C boston syncreplica export --to sanfran\n  msite -C boston syncreplica export --all --max-size 10M\n  msite -C sanfran syncreplica export --to boston --out /mnt/usb\n  msite -C sanfran syncreplica export --all --ship\n  msite -C boston syncreplica export --to sanfran --encrypt-to age1…(sanfran's `msite identity`)"
)]
pub struct Export {
    /// The sibling to write for (`msite lsreplica` lists them); or --all.
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// Write one packet for every sibling.
    #[arg(long)]
    pub all: bool,
    /// Where to write (default: the outgoing bay).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Split packets into parts of at most SIZE bytes (e.g. 500K, 10M, 1G).
    #[arg(long, value_name = "SIZE", value_parser = util::parse_size)]
    pub max_size: Option<u64>,
    /// Then ship the outgoing bay along the routes file, as `msite serve` does.
    #[arg(long, conflicts_with = "out")]
    pub ship: bool,
    /// With --ship: the routes file (default: routes.toml in the site directory).
    #[arg(long, value_name = "FILE", requires = "ship")]
    pub routes: Option<PathBuf>,
    /// Seal (encrypt) each packet with age to RECIPIENT (`age1…`, what `msite identity`
    /// prints at the target site); repeat for several. Only that site can then import it.
    #[arg(long, value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Write the packets in the clear even when the family's policy seals every packet.
    #[arg(long, conflicts_with = "encrypt_to")]
    pub no_encrypt: bool,
}

/// What one export wrote, for callers that route packets (the demo).
#[derive(Debug, Clone)]
pub struct Exported {
    /// The target's name.
    pub target: String,
    /// The part files written (empty: nothing to send).
    pub parts: Vec<PathBuf>,
}

impl Export {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let (ship, routes) = (self.ship, self.routes.clone());
        self.export(ctx)?;
        if ship {
            return ship_bay(ctx, routes.as_deref());
        }
        Ok(())
    }

    /// Seals the parts just written for `name` to `recipients` (SPEC §9), if any.
    fn seal(
        &self,
        ctx: &Ctx,
        parts: &[PathBuf],
        name: &str,
        recipients: &[String],
    ) -> anyhow::Result<()> {
        if !recipients.is_empty() {
            crate::seal::seal_parts(parts, recipients, &[name.to_string()])?;
            ctx.say(format!("  sealed for {name} ({})", recipients.join(", ")));
        }
        Ok(())
    }

    /// The recipients to seal a packet for `t` to: --encrypt-to's; else, when the family's
    /// policy seals every packet (and not --no-encrypt), `t`'s replicated recipient, or an
    /// error naming the way out when it is not known here yet.
    fn recipients_for(
        &self,
        r: &Replica<AnyStore>,
        t: &ReplicaId,
        name: &str,
    ) -> anyhow::Result<Vec<String>> {
        let always = r.seal_policy()?.is_some_and(|p| p.always);
        if !self.encrypt_to.is_empty() || self.no_encrypt || !always {
            return Ok(self.encrypt_to.clone());
        }
        match r.recipient_of(t)? {
            Some(rcpt) => Ok(vec![rcpt]),
            None => anyhow::bail!(
                "the family seals every packet (`msite seal-policy`), but no age recipient of {name} is known here yet, so nothing was written for it; {name} announces its recipient in its packets: import one from it, or give --encrypt-to (what `msite identity` prints at {name}) or --no-encrypt"
            ),
        }
    }

    /// The siblings to write for: --to NAME, or every sibling not retired (retired replicas
    /// get nothing, docs/protocol.md §10; --to NAME says so).
    fn targets(&self, r: &Replica<AnyStore>) -> anyhow::Result<Vec<ReplicaId>> {
        let retired = r.retired()?;
        Ok(match &self.to {
            Some(name) => vec![sibling_by_name(r, name)?],
            None => r
                .view()
                .replicas()?
                .into_iter()
                .map(|x| x.id)
                .filter(|id| *id != r.id())
                .filter(|id| !retired.contains(id))
                .collect(),
        })
    }

    /// Exports and returns what was written.
    pub fn export(self, ctx: &Ctx) -> anyhow::Result<Vec<Exported>> {
        // Bad recipients are refused before anything is written in the clear.
        msite_packet::sealed::parse_recipients(&self.encrypt_to)?;
        let site = ctx.open()?;
        let r = &site.replica;
        // Every packet announces this site's recipient, so siblings can seal to it.
        crate::seal::announce_recipient(r)?;
        let out = self.out.clone().unwrap_or_else(|| site.paths.outgoing());
        if self.out.is_some() {
            crate::site::remove_unfinished(r, &out);
        }
        let targets = self.targets(r)?;
        if targets.is_empty() {
            ctx.say(format!(
                "{} has no siblings yet; create one with `msite mkreplica export NAME`",
                r.name()
            ));
        }
        let mut written = Vec::new();
        let mut unsealable = Vec::new();
        for t in targets {
            let name = util::esc(&r.replica_name(&t));
            let recipients = match self.recipients_for(r, &t, &name) {
                Ok(x) => x,
                Err(e) => {
                    unsealable.push(format!("{e:#}"));
                    continue;
                }
            };
            let Some(plan) = r.plan_export(&t)? else {
                ctx.say(format!("Nothing to send to {name}."));
                written.push(Exported {
                    target: name,
                    parts: Vec::new(),
                });
                continue;
            };
            tracing::info!(target = %name, entries = plan.entry_count, reason = plan.reason, "exporting");
            let pb = util::spinner(
                ctx,
                format!("exporting {} entries to {name}", plan.entry_count),
            );
            let res = r.write_plan_to_dir(&plan, &out, self.max_size);
            pb.finish_and_clear();
            match res? {
                ExportOutcome::Nothing => {
                    ctx.say(format!("Nothing to send to {name}."));
                    written.push(Exported {
                        target: name,
                        parts: Vec::new(),
                    });
                }
                ExportOutcome::Written {
                    parts,
                    entries,
                    blobs,
                    bytes,
                    warnings,
                    reason,
                } => {
                    let what = match reason {
                        "update" => String::new(),
                        other => format!(" [{other}]"),
                    };
                    ctx.say(format!(
                        "Wrote a packet for {name}{what}: {}, {}, {}{}",
                        util::count(entries, "entry", "entries"),
                        util::count(blobs, "content blob", "content blobs"),
                        util::human_size(bytes),
                        if parts.len() > 1 {
                            format!(", {} parts", parts.len())
                        } else {
                            String::new()
                        }
                    ));
                    self.seal(ctx, &parts, &name, &recipients)?;
                    for p in &parts {
                        ctx.say(format!("  {}", p.display()));
                    }
                    record_export(&site, &name, &parts, bytes);
                    for w in warnings {
                        ctx.say(format!("  warning: {w}"));
                    }
                    written.push(Exported {
                        target: name,
                        parts,
                    });
                }
            }
        }
        if !unsealable.is_empty() {
            anyhow::bail!("{}", unsealable.join("; and "));
        }
        Ok(written)
    }
}

/// Records an exported packet in the site's history.
fn record_export(site: &Site, to: &str, parts: &[PathBuf], bytes: u64) {
    let first = parts.first().map(|p| file_name(p)).unwrap_or_default();
    let rec = Record::now(
        Direction::Out,
        Some(to),
        &first,
        bytes,
        Outcome::Exported,
        None,
    );
    history::record(&site.paths.dir, rec);
}

/// A file's name as text (for messages and the history).
fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| util::esc(&n.to_string_lossy()))
        .unwrap_or_default()
}

/// The bytes `files` hold together (what is there now).
fn size_of(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(feature = "serve")]
fn ship_bay(ctx: &Ctx, routes: Option<&Path>) -> anyhow::Result<()> {
    crate::serve::ship_now(ctx, routes)
}

#[cfg(not(feature = "serve"))]
fn ship_bay(_: &Ctx, _: Option<&Path>) -> anyhow::Result<()> {
    anyhow::bail!("this msite was built without shipping (cargo feature `serve`); copy the packets from the outgoing bay by other means")
}

/// How many sibling names an error about an unknown one lists.
const SIBLINGS_NAMED: usize = 10;

/// The sibling `--to NAME` names; an unknown name is answered with the siblings this replica
/// knows (a bounded list) and where to see them all.
pub(super) fn sibling_by_name(r: &Replica<AnyStore>, name: &str) -> anyhow::Result<ReplicaId> {
    match r.view().replica_by_name(name) {
        Err(CoreError::NotFound(_)) => {}
        other => return Ok(other?),
    }
    let mut siblings: Vec<String> = r
        .view()
        .replicas()?
        .into_iter()
        .filter(|x| x.id != r.id())
        .map(|x| util::esc(&r.replica_name(&x.id)))
        .collect();
    siblings.sort();
    let known = if siblings.is_empty() {
        "it knows no sibling yet (create one with `msite mkreplica export NAME`)".to_string()
    } else {
        format!(
            "the siblings it knows are {}",
            util::bounded_list(siblings, ", ", SIBLINGS_NAMED)
        )
    };
    anyhow::bail!(
        "replica {} knows no sibling named {}: {known}; `msite lsreplica` lists every replica of the family",
        util::esc(&r.name()),
        util::bounded_line(&util::esc(name), 100)
    )
}

/// `msite syncreplica import`.
#[derive(Debug, Args)]
#[command(
    long_about = "Imports packets: the FILEs given, or every packet in the incoming bay. Parts of \
a split packet are grouped and imported together once all are there. Applied packets leave the \
bay; a packet that must wait for another one stays, and the reason is printed (\"needs boston up \
to 872, has 756\"); it is retried whenever another packet applies. A refused packet changes \
nothing and is moved to bays/refused/ with a .reason file (never overwriting an earlier one); \
so are files that are not packets, entries that are not regular files (never opened), and a \
packet the store fails on. Only a store that cannot be used stops the run.\n\n\
Exit code: 0 when every packet was applied or had been applied before, 3 when some must wait, \
1 when one was refused.\n\n\
--watch keeps importing packets as they arrive (checking every second) until Ctrl-C or \
--max-seconds; interrupting is safe, each import is atomic.",
    after_help = "Example:\n  msite -C sanfran syncreplica import\n  msite -C sanfran syncreplica import /mnt/usb/sync_boston_to_sanfran_*.msp\n  msite -C sanfran syncreplica import --watch"
)]
pub struct Import {
    /// Packet files (default: every packet in the incoming bay).
    pub files: Vec<PathBuf>,
    /// Keep importing packets as they arrive in the incoming bay.
    #[arg(long, conflicts_with = "files")]
    pub watch: bool,
    /// With --watch: stop after N seconds.
    #[arg(long, value_name = "N", requires = "watch")]
    pub max_seconds: Option<u64>,
}

/// The tally of an import run.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Packets applied.
    pub applied: usize,
    /// Packets that had been applied before.
    pub already: usize,
    /// Packets that must wait, with why.
    pub waiting: Vec<(String, String)>,
    /// Packets refused, with why.
    pub refused: Vec<(String, String)>,
    /// Whether an import unlocked this replica after restoration.
    pub unlocked: bool,
}

impl Tally {
    /// The exit code: 1 on refusal, 3 when some wait, 0 otherwise.
    pub fn code(&self) -> i32 {
        if !self.refused.is_empty() {
            EXIT_ERROR
        } else if !self.waiting.is_empty() {
            EXIT_WAITING
        } else {
            0
        }
    }

    /// The error that carries the exit code, if it is not 0.
    pub fn into_result(self) -> anyhow::Result<Tally> {
        match self.code() {
            0 => Ok(self),
            code if code == EXIT_ERROR => {
                let (name, why) = &self.refused[0];
                let more = if self.refused.len() > 1 {
                    format!(" (and {} more)", self.refused.len() - 1)
                } else {
                    String::new()
                };
                Err(Exit {
                    code,
                    message: Some(format!("error: refused {name}{more}: {why}")),
                }
                .into())
            }
            code => {
                let (name, why) = &self.waiting[0];
                let n = self.waiting.len();
                Err(Exit {
                    code,
                    message: Some(format!(
                        "{n} packet{} must wait and stay{} in the incoming bay: {name} {why}",
                        if n == 1 { "" } else { "s" },
                        if n == 1 { "s" } else { "" }
                    )),
                }
                .into())
            }
        }
    }
}

/// Whether a core error is the packet's fault (refuse it) rather than the site's (stop).
fn is_refusal(e: &CoreError) -> bool {
    matches!(
        e,
        CoreError::Refused(_)
            | CoreError::Malformed(_)
            | CoreError::Unreadable(_)
            | CoreError::Entry(_)
    )
}

/// What a failed import means for the packet and for the run. No single packet stops a run:
/// only a replica locked until `msite restorereplica`, a store that cannot be used at all
/// (poisoned, locked by another process, corrupt), or a store that fails on two packets in a
/// row stops it, leaving the packet in the bay.
#[derive(Debug)]
enum Verdict {
    /// Refuse the packet, with why.
    Refuse(String),
    /// The store failed on this packet (the error's text): refuse it, reopen the store (a
    /// failed durable write poisons it until reopened), go on with the next packet.
    StoreFailed(String),
    /// Stop the run; the packet stays.
    Stop(CoreError),
}

fn verdict(e: CoreError) -> Verdict {
    use msite_core::store::Error as StoreError;
    if is_refusal(&e) {
        return Verdict::Refuse(e.to_string());
    }
    match e {
        CoreError::Locked(_)
        | CoreError::Store(
            StoreError::Poisoned | StoreError::Locked { .. } | StoreError::Corruption(_),
        ) => Verdict::Stop(e),
        CoreError::Store(_) | CoreError::Codec(_) => Verdict::StoreFailed(e.to_string()),
        other => Verdict::Refuse(format!("it cannot be imported: {other}")),
    }
}

/// The refusal reason of a packet the store failed on.
fn store_failure_reason(err: &str) -> String {
    format!(
        "the store failed while importing it ({err}); if the site rather than the packet was at fault (a full disk), fix it and move the packet back into the incoming bay"
    )
}

/// The error that stops a run at packet `name`.
fn stop(name: &str, e: impl std::fmt::Display, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot import {name}: {}; {why}: it stays in the incoming bay and nothing more is imported in this run — run `msite check`, fix the site and import again",
        util::esc(&e.to_string())
    )
}

fn in_dir(file: &Path, dir: &Path) -> bool {
    match (
        file.parent().and_then(|p| p.canonicalize().ok()),
        dir.canonicalize().ok(),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Whether something (a file, a link, even a dangling one) is at `p`.
fn taken(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// A name in `dir` for a refused `name` that neither it nor its `.reason` file uses yet:
/// `NAME`, then `NAME.1`, `NAME.2`, …; refused packets and their reasons are evidence, never
/// overwritten. (The site lock is held, so no other msite writes into the refused bay.)
fn refused_dest(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let mut k = 0u64;
    loop {
        let mut n = name.to_owned();
        if k > 0 {
            n.push(format!(".{k}"));
        }
        let dest = dir.join(&n);
        if !taken(&dest) && !taken(&reason_path(&dest)) {
            return dest;
        }
        k += 1;
    }
}

fn reason_path(dest: &Path) -> PathBuf {
    let mut why = dest.as_os_str().to_owned();
    why.push(".reason");
    PathBuf::from(why)
}

/// Moves `files` to the refused bay, each with a `.reason` file; returns where they went.
fn move_refused(site: &Site, files: &[PathBuf], reason: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dir = site.paths.refused();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut moved = Vec::new();
    for f in files {
        let Some(name) = f.file_name() else { continue };
        if !taken(f) {
            // Already moved: a file unreadable on its own, refused before its packet.
            continue;
        }
        let dest = refused_dest(&dir, name);
        std::fs::rename(f, &dest)
            .with_context(|| format!("cannot move {} to {}", util::esc_path(f), dir.display()))?;
        let why = reason_path(&dest);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&why)
            .and_then(|mut w| std::io::Write::write_all(&mut w, format!("{reason}\n").as_bytes()))
            .with_context(|| format!("cannot write {}", util::esc_path(&why)))?;
        moved.push(dest);
    }
    Ok(moved)
}

/// Refuses packet `name` (its `files`): moves them to the refused bay when they are in the
/// incoming bay, says so, and counts it.
fn refuse(
    ctx: &Ctx,
    site: &Site,
    (name, files, movable): (&str, &[PathBuf], bool),
    (why, header): (String, Option<&wire::Header>),
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let full = util::esc(&why);
    let why = util::bounded_line(&full, 400);
    let sender = header.map(|h| util::esc(&sender_name(&site.replica, h)));
    let rec = Record::now(
        Direction::In,
        sender.as_deref(),
        name,
        size_of(files),
        Outcome::Refused,
        Some(&why),
    );
    history::record(&site.paths.dir, rec);
    if movable {
        move_refused(site, files, &full)?;
        ctx.say(format!(
            "Refused {name}: {why}; moved it to {}.",
            site.paths.refused().display()
        ));
    } else {
        ctx.say(format!("Refused {name}: {why}"));
    }
    tally.refused.push((name.to_string(), why));
    Ok(())
}

/// Removes the files of an imported packet from the bay; a file that cannot be removed is
/// reported and left (importing it again changes nothing).
fn remove_files(ctx: &Ctx, files: &[PathBuf]) {
    for f in files {
        match std::fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => ctx.say(format!(
                "warning: cannot remove the imported {} ({e}); remove it by hand",
                util::esc_path(f)
            )),
        }
    }
}

/// How one packet's import went.
enum Step {
    Applied,
    Already,
    Refused,
    Waiting(String),
    /// The store failed (its error's text); the packet is still where it was.
    StoreFailed(String),
}

/// A packet's name for messages, its files, and whether they are in the incoming bay.
fn placement(site: &Site, g: &Group) -> (String, Vec<PathBuf>, bool) {
    let files = g.paths();
    let incoming = site.paths.incoming();
    let movable = files.iter().all(|f| in_dir(f, &incoming));
    (g.display(), files, movable)
}

/// Imports the complete packets among `groups` (retrying waiting ones after progress); reports
/// each result through `ctx`. Files in the incoming bay leave it: applied ones are removed,
/// refused ones moved to the refused bay. `reported`: waiting packets whose reason was already
/// printed (watch mode), not printed again. Returns the site, reopened if the store failed.
fn import_groups(
    ctx: &Ctx,
    mut site: Site,
    mut groups: Vec<Group>,
    reported: &mut BTreeMap<String, String>,
) -> anyhow::Result<(Site, Tally)> {
    let mut tally = Tally::default();
    // Oldest first; a sender's packets in sequence order.
    let me = site.replica.id();
    groups.sort_by_key(|g| (g.header.created_ms, g.seq_for(&me)));
    let (mut pending, partial): (Vec<Group>, Vec<Group>) =
        groups.into_iter().partition(|g| g.complete());
    for g in partial {
        let why = format!("waits for its other parts: {}", g.problems());
        tally.waiting.push((g.display(), why));
    }
    let mut last_needs: BTreeMap<String, String> = BTreeMap::new();
    let mut store_failed = false;
    loop {
        let mut progress = false;
        let mut still = Vec::new();
        for g in pending {
            match import_one(ctx, &site, &g, &mut tally, reported)? {
                Step::Applied => progress = true,
                Step::Already | Step::Refused => {}
                Step::Waiting(why) => {
                    last_needs.insert(g.display(), why);
                    still.push(g);
                }
                Step::StoreFailed(err) => {
                    let (name, files, movable) = placement(&site, &g);
                    if store_failed {
                        let why = "the store failed on the packet before too, so the site rather than the packets is likely at fault";
                        return Err(stop(&name, err, why));
                    }
                    let why = store_failure_reason(&err);
                    let place = (name.as_str(), files.as_slice(), movable);
                    refuse(ctx, &site, place, (why, Some(&g.header)), &mut tally)?;
                    site = reopen(ctx, site)?;
                    store_failed = true;
                    continue;
                }
            }
            store_failed = false;
        }
        pending = still;
        if !progress || pending.is_empty() {
            break;
        }
    }
    for g in pending {
        let name = g.display();
        let why = last_needs.get(&name).cloned().unwrap_or_default();
        say_waiting(ctx, &name, &why, reported);
        tally.waiting.push((name, why));
    }
    Ok((site, tally))
}

/// Says that packet `name` must wait, unless that was said already (watch mode).
fn say_waiting(ctx: &Ctx, name: &str, why: &str, reported: &mut BTreeMap<String, String>) {
    if reported.get(name).map(String::as_str) != Some(why) {
        ctx.say(format!(
            "{name} must wait: {why}; it stays in the incoming bay."
        ));
        reported.insert(name.to_string(), why.to_string());
    }
}

/// Closes and opens the site again: a store whose durable write failed refuses every write
/// until it is reopened (and reopening finds out what reached the disk).
fn reopen(ctx: &Ctx, site: Site) -> anyhow::Result<Site> {
    drop(site);
    ctx.open()
        .context("the store failed on a packet and cannot be opened again; run `msite check`")
}

/// Says that packet `name` from `sender` applied (`counts`: entries applied, already held).
fn say_applied(ctx: &Ctx, name: &str, sender: &str, counts: (u64, u64), notes: &[String]) {
    let (applied, skipped) = counts;
    let held = if skipped > 0 {
        format!(" ({skipped} already held)")
    } else {
        String::new()
    };
    let entries = util::count(applied, "entry", "entries");
    ctx.say(format!("Applied {name} from {sender}: {entries}{held}."));
    for n in notes {
        ctx.say(util::esc(n));
    }
}

/// Imports one complete packet and reports the result.
fn import_one(
    ctx: &Ctx,
    site: &Site,
    g: &Group,
    tally: &mut Tally,
    reported: &mut BTreeMap<String, String>,
) -> anyhow::Result<Step> {
    let r = &site.replica;
    let (name, files, movable) = placement(site, g);
    tracing::info!(packet = %name, parts = files.len(), "importing");
    let pb = util::spinner(ctx, format!("importing {name}"));
    let res = Incoming::from_files(&files).and_then(|pkt| r.import(pkt));
    pb.finish_and_clear();
    let outcome = match res {
        Ok(o) => o,
        Err(e) => {
            return match verdict(e) {
                Verdict::Refuse(why) => {
                    reported.remove(&name);
                    let place = (name.as_str(), files.as_slice(), movable);
                    refuse(ctx, site, place, (why, Some(&g.header)), tally)?;
                    Ok(Step::Refused)
                }
                Verdict::StoreFailed(err) => Ok(Step::StoreFailed(err)),
                Verdict::Stop(e @ CoreError::Locked(_)) => Err(anyhow::anyhow!(
                    "cannot import {name}: {}; the packets stay in the incoming bay",
                    util::esc(&e.to_string())
                )),
                Verdict::Stop(e) => Err(stop(&name, e, "the site's store cannot be used")),
            }
        }
    };
    let bytes = size_of(&files);
    let step = match outcome {
        ImportOutcome::Applied {
            applied,
            skipped,
            notes,
            unlocked,
        } => {
            tally.applied += 1;
            tally.unlocked |= unlocked;
            let sender = util::esc(&sender_name(r, &g.header));
            say_applied(ctx, &name, &sender, (applied, skipped), &notes);
            Step::Applied
        }
        ImportOutcome::AlreadyApplied => {
            tally.already += 1;
            ctx.say(format!("{name} was imported before; nothing changed."));
            Step::Already
        }
        ImportOutcome::Waiting(needs) => {
            let why = needs.iter().map(|n| n.to_string()).collect::<Vec<_>>();
            return Ok(Step::Waiting(util::esc(&util::bounded_list(why, ", ", 5))));
        }
    };
    reported.remove(&name);
    record_import(site, g, &name, bytes, &step);
    if movable {
        remove_files(ctx, &files);
    }
    Ok(step)
}

/// Records an imported packet in the site's history.
fn record_import(site: &Site, g: &Group, name: &str, bytes: u64, step: &Step) {
    let done = match step {
        Step::Applied => Outcome::Applied,
        _ => Outcome::Already,
    };
    let sender = util::esc(&sender_name(&site.replica, &g.header));
    let rec = Record::now(Direction::In, Some(&sender), name, bytes, done, None);
    history::record(&site.paths.dir, rec);
}

fn sender_name(r: &Replica<AnyStore>, h: &wire::Header) -> String {
    let id = ReplicaId(h.sender.0);
    if r.view().replica(&id).ok().flatten().is_some() {
        r.replica_name(&id)
    } else if !h.sender_name.is_empty() {
        h.sender_name.clone()
    } else {
        id.short()
    }
}

impl Import {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        self.import(ctx).map(|_| ())
    }

    /// Imports and returns the tally (an `Err` carries exit code 1 or 3).
    pub fn import(self, ctx: &Ctx) -> anyhow::Result<Tally> {
        if !self.files.is_empty() {
            packets::check_given(&self.files)?;
        }
        let site = ctx.open()?;
        if self.watch {
            return watch(ctx, site, self.max_seconds);
        }
        let from_bay = self.files.is_empty();
        let bay = if from_bay {
            packets::bay_entries(&site.paths.incoming())?
        } else {
            packets::BayEntries {
                files: packets::with_sibling_parts(&self.files),
                odd: Vec::new(),
            }
        };
        if bay.files.is_empty() && bay.odd.is_empty() {
            ctx.say(format!(
                "No packets in the incoming bay ({}).",
                site.paths.incoming().display()
            ));
            return Ok(Tally::default());
        }
        let (files, sealed_refused) = unseal_files(&site, bay.files)?;
        let (groups, mut bad) = packets::group_files(&files);
        bad.extend(sealed_refused);
        let mut pre = Tally::default();
        refuse_non_packets(ctx, &site, bay.odd, bad, false, &mut pre)?;
        let (_, mut tally) = import_groups(ctx, site, groups, &mut BTreeMap::new())?;
        tally.refused.splice(0..0, pre.refused);
        ctx.say(summary(&tally));
        tally.into_result()
    }
}

/// Splits the sealed files off `files`: each described from its readable label (who it is
/// for), and whether this site's identity is among its recipients.
fn split_sealed(
    site: Option<&Site>,
    files: &[PathBuf],
) -> anyhow::Result<(Vec<PathBuf>, Vec<serde_json::Value>)> {
    let (sealed, plain): (Vec<_>, Vec<_>) = files
        .iter()
        .cloned()
        .partition(|p| crate::seal::is_sealed_file(p));
    if sealed.is_empty() {
        return Ok((plain, Vec::new()));
    }
    let mine = match site {
        Some(s) => Some(
            crate::seal::site_identity(&s.replica)?
                .to_public()
                .to_string(),
        ),
        None => None,
    };
    let docs = sealed
        .iter()
        .map(|p| match crate::seal::label_of(p) {
            Ok(l) => json!({ "file": p.display().to_string(), "for": l.for_names,
                "recipients": l.recipients,
                "opens_here": mine.as_ref().map(|m| l.recipients.contains(m)) }),
            Err(e) => json!({ "file": p.display().to_string(), "error": format!("{e:#}") }),
        })
        .collect();
    Ok((plain, docs))
}

/// One paragraph per sealed file: who it is for, and whether it opens here.
fn say_sealed(ctx: &Ctx, sealed: &[serde_json::Value]) {
    for d in sealed {
        let file = d["file"].as_str().unwrap_or_default();
        if let Some(e) = d["error"].as_str() {
            ctx.say(format!("{file}: a damaged sealed packet: {e}"));
            continue;
        }
        let list = |k: &str| {
            d[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        let here = match d["opens_here"].as_bool() {
            Some(true) => "; this site's identity opens it (syncreplica import unseals it)",
            Some(false) => "; this site's identity is not among its recipients",
            None => "",
        };
        ctx.say(format!(
            "{file}: sealed packet (age) for {} (recipients {}){here}",
            list("for"),
            list("recipients")
        ));
    }
}

/// Files refused before import, each with the sentence why.
type Refusals = Vec<(PathBuf, String)>;

/// Unseals the sealed files among `files` in place with this site's identity (SPEC §9); returns
/// the files to import and those that could not be unsealed, each with the sentence why.
fn unseal_files(site: &Site, files: Vec<PathBuf>) -> anyhow::Result<(Vec<PathBuf>, Refusals)> {
    if !files.iter().any(|p| crate::seal::is_sealed_file(p)) {
        return Ok((files, Vec::new()));
    }
    let id = crate::seal::site_identity(&site.replica)?;
    let refused = crate::seal::unseal_in_place(&files, &id);
    let files = files
        .into_iter()
        .filter(|p| !refused.iter().any(|(r, _)| r == p))
        .collect();
    Ok((files, refused))
}

/// Refuses what is not a packet: `odd` bay entries that are no regular file (never opened)
/// and `bad` files that cannot be read as packets. Those in the incoming bay are moved to the
/// refused bay, so that none stays there for ever. `settled_only`: refuse an unreadable file
/// only once it has not changed for a while (watch mode: it may still be being copied in).
fn refuse_non_packets(
    ctx: &Ctx,
    site: &Site,
    odd: Vec<(PathBuf, String)>,
    bad: Vec<(PathBuf, String)>,
    settled_only: bool,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let odd = odd
        .into_iter()
        .map(|(p, what)| (p, not_regular_text(&what)));
    for (path, why) in odd.chain(bad) {
        let settled = || {
            std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(10))
                .unwrap_or(true)
        };
        if settled_only && !settled() {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| util::esc(&n.to_string_lossy()))
            .unwrap_or_default();
        let movable = in_dir(&path, &site.paths.incoming());
        refuse(
            ctx,
            site,
            (&name, std::slice::from_ref(&path), movable),
            (why, None),
            tally,
        )?;
    }
    Ok(())
}

fn summary(t: &Tally) -> String {
    format!(
        "{} applied, {} already applied, {} waiting, {} refused.",
        t.applied,
        t.already,
        t.waiting.len(),
        t.refused.len()
    )
}

fn watch(ctx: &Ctx, mut site: Site, max_seconds: Option<u64>) -> anyhow::Result<Tally> {
    let start = Instant::now();
    let incoming = site.paths.incoming();
    ctx.say(format!(
        "Watching {} for packets (Ctrl-C stops; each import is atomic).",
        incoming.display()
    ));
    let mut reported = BTreeMap::new();
    let mut total = Tally::default();
    let mut last_waiting = Vec::new();
    loop {
        let bay = packets::bay_entries(&incoming)?;
        // A sealed file still being copied fails to unseal; it is refused only once settled.
        let (files, sealed_refused) = unseal_files(&site, bay.files)?;
        let (groups, mut bad) = packets::group_files(&files);
        bad.extend(sealed_refused);
        refuse_non_packets(ctx, &site, bay.odd, bad, true, &mut total)?;
        if groups.is_empty() {
            last_waiting.clear();
        } else {
            let (s, t) = import_groups(ctx, site, groups, &mut reported)?;
            site = s;
            total.applied += t.applied;
            total.already += t.already;
            total.refused.extend(t.refused);
            total.unlocked |= t.unlocked;
            last_waiting = t.waiting;
        }
        if max_seconds.is_some_and(|m| start.elapsed() >= Duration::from_secs(m)) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    total.waiting = last_waiting;
    ctx.say(format!("Stopped watching. {}", summary(&total)));
    total.into_result()
}

/// `msite lspacket`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows what packet files hold: kind, family, sender, targets, base and sender's \
rows, entries per origin, restore requests carried, parts and format version, after verifying \
every checksum, and whether its signature verifies (with the keys the site pinned; outside a \
site, with the keys the packet lists). Run inside a site (or with -C), it also says whether each packet can be \
imported there now, must wait (and for what), or would be refused (and why). Without FILE, \
inside a site (or with -C), it lists every packet in the incoming bay, then every packet in the \
outgoing bay, each described the same way under a line naming its bay (or saying it is empty). \
Incarnations print as UTC times (0: never restored); --json keeps the numbers.",
    after_help = "Example:\n  msite -C sanfran lspacket\n  msite lspacket bays/outgoing/*.msp\n  msite -C sanfran lspacket sanfran/bays/incoming/*.msp --long\n  msite lspacket packet.msp --json"
)]
pub struct Lspacket {
    /// Packet files (parts of one packet are shown together); none: every packet in the
    /// site's incoming and outgoing bays.
    pub files: Vec<PathBuf>,
    /// Also list every entry the packet carries.
    #[arg(short, long)]
    pub long: bool,
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

/// Names replicas by id: from the site when there is one, else from the packet header.
struct Namer<'a> {
    site: Option<&'a Site>,
    header: &'a wire::Header,
}

impl Namer<'_> {
    fn name(&self, id: &[u8; 16]) -> String {
        let rid = ReplicaId(*id);
        if let Some(s) = self.site {
            if s.replica.view().replica(&rid).ok().flatten().is_some() {
                return s.replica.replica_name(&rid);
            }
        }
        if *id == self.header.sender.0 && !self.header.sender_name.is_empty() {
            return self.header.sender_name.clone();
        }
        rid.short()
    }

    fn row(&self, row: &wire::Row) -> serde_json::Map<String, serde_json::Value> {
        row.iter()
            .map(|c| (self.name(&c.origin.0), serde_json::Value::from(c.number)))
            .collect()
    }
}

/// How many items of a list from a packet (row cells, origins) a line shows.
const LIST_MAX: usize = 10;

/// How many targets of a packet a line shows (each names an incarnation, a time).
const TARGETS_MAX: usize = 5;

fn row_text(m: &serde_json::Map<String, serde_json::Value>) -> String {
    if m.is_empty() {
        return "(empty)".into();
    }
    let cells = m.iter().map(|(k, v)| format!("{}:{v}", util::esc(k)));
    util::bounded_list(cells, " ", LIST_MAX)
}

/// Whether the packet could be imported at `site` now, as a verdict code and a sentence:
/// core's assessment ([`Replica::assess`], the checks import runs), worded for a listing.
pub(crate) fn assess(site: &Site, g: &Group) -> anyhow::Result<(&'static str, String)> {
    let r = &site.replica;
    let h = &g.header;
    let id = PacketId(g.lp.packet_id.0);
    Ok(match r.assess(h, g.lp.kind, &id, "the packet")? {
        Assessment::Importable => {
            let sender_row = Row::from_wire(&h.sender_row);
            if r.own_row()?.covers(&sender_row) && h.controls.is_empty() {
                (
                    "importable",
                    "can be imported now (this replica already holds everything it carries)"
                        .into(),
                )
            } else {
                ("importable", "can be imported now".into())
            }
        }
        Assessment::AlreadyApplied => (
            "applied",
            "imported here before; importing it again changes nothing".into(),
        ),
        Assessment::Waiting(needs) => {
            let needs = needs.iter().map(|n| n.to_string());
            (
                "waiting",
                format!("must wait: {}", util::bounded_list(needs, ", ", 5)),
            )
        }
        Assessment::RolledBack(Refusal::RolledBack {
            sender,
            theirs,
            ours,
        }) => (
            "rolled_back",
            format!(
                "refused: it shows that this replica lost entries of its own ({sender} holds them up to {theirs}, this replica only up to {ours}); importing it locks this replica until `msite restorereplica`"
            ),
        ),
        Assessment::RolledBack(Refusal::OwnFork { sender, number, .. }) => (
            "rolled_back",
            format!(
                "refused: it shows that this replica numbered {number} of its own twice ({sender} holds a different entry {number}: it was put back to an older copy without `msite restore`); importing it locks this replica until `msite restorereplica`"
            ),
        ),
        Assessment::RolledBack(r) => ("rolled_back", format!("refused: {r}")),
        Assessment::NewerIncarnationKnown {
            known,
            ours,
            sender,
        } => (
            "newer_incarnation",
            format!(
                "refused: {sender} knows incarnation {} of this replica, but this store has incarnation {} (it is older than the replica's last restoration)",
                incarnation_text(known),
                incarnation_text(ours)
            ),
        ),
        Assessment::Refused(e) => refusal_verdict(g.lp.kind, e),
    })
}

/// The verdict code and sentence of a refusal by [`Replica::assess`].
fn refusal_verdict(kind: wire::Kind, e: CoreError) -> (&'static str, String) {
    match e {
        _ if kind == wire::Kind::ReplicaCreation => ("creation", e.to_string()),
        CoreError::Refused(
            r @ (Refusal::StaleTarget { .. }
            | Refusal::StaleSender { .. }
            | Refusal::StaleRequest { .. }),
        ) => ("stale", format!("refused: {r}")),
        CoreError::Refused(r @ Refusal::NotAddressed { .. }) => ("not_addressed", r.to_string()),
        CoreError::Locked(m) => ("locked", format!("not now: {m}")),
        e => ("refused", format!("refused: {e}")),
    }
}

/// The refusal text of a bay entry that is no regular file.
fn not_regular_text(what: &str) -> String {
    format!("not a regular file ({what}), so it was never opened")
}

/// The bays `lspacket` lists when given no file, with whether their packets are assessed
/// for import here (the outgoing bay holds packets this replica wrote for others).
fn bays(site: &Site) -> [(&'static str, PathBuf, bool); 2] {
    [
        ("incoming", site.paths.incoming(), true),
        ("outgoing", site.paths.outgoing(), false),
    ]
}

impl Lspacket {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        // Inside a site (or with -C), say whether each packet can be imported there.
        let site = if ctx.dir.join(crate::site::SITE_FILE).exists() {
            Some(ctx.open()?)
        } else {
            None
        };
        if self.files.is_empty() {
            let Some(site) = site else {
                return Err(Exit {
                    code: crate::util::EXIT_USAGE,
                    message: Some(format!(
                        "error: no packet files given and {} holds no site; give packet files (`msite lspacket FILE…`), or run inside a site (or with -C DIR) to list the packets in its bays",
                        if ctx.dir == Path::new(".") {
                            "the current directory".to_string()
                        } else {
                            util::esc_path(&ctx.dir)
                        }
                    )),
                }
                .into());
            };
            return self.list_bays(ctx, &site);
        }
        packets::check_given(&self.files)?;
        let (files, sealed) = split_sealed(site.as_ref(), &self.files)?;
        let (groups, bad) = packets::group_files(&files);
        if let Some((p, why)) = bad.first() {
            if groups.is_empty() && bad.len() == 1 {
                anyhow::bail!(
                    "{} is not a readable packet: {}",
                    util::esc_path(p),
                    util::esc(why)
                );
            }
        }
        let docs = groups
            .iter()
            .map(|g| self.describe(site.as_ref(), g, (None, true)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.json {
            return ctx.json(
                &json!({ "packets": docs, "unreadable": unreadable_json(&bad, None),
                "sealed": sealed }),
            );
        }
        say_sealed(ctx, &sealed);
        say_unreadable(ctx, &bad);
        for (g, d) in groups.iter().zip(&docs) {
            say_packet(ctx, g, d);
        }
        Ok(())
    }

    /// Without files: every packet in the site's incoming and outgoing bays, each described
    /// as `lspacket FILE` would, under a line naming its bay (or saying that it is empty).
    fn list_bays(&self, ctx: &Ctx, site: &Site) -> anyhow::Result<()> {
        let mut all_docs = Vec::new();
        let mut all_bad = Vec::new();
        let mut all_sealed = Vec::new();
        for (bay, dir, assessed) in bays(site) {
            let entries = packets::bay_entries(&dir)?;
            let (files, sealed) = split_sealed(Some(site), &entries.files)?;
            let (groups, mut bad) = packets::group_files(&files);
            bad.extend(
                entries
                    .odd
                    .into_iter()
                    .map(|(p, what)| (p, not_regular_text(&what))),
            );
            let docs = groups
                .iter()
                .map(|g| self.describe(Some(site), g, (Some(bay), assessed)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if self.json {
                all_bad.extend(unreadable_json(&bad, Some(bay)));
                all_docs.extend(docs);
                all_sealed.extend(sealed);
                continue;
            }
            say_bay(ctx, bay, &dir, groups.len() + sealed.len(), bad.len());
            say_sealed(ctx, &sealed);
            say_unreadable(ctx, &bad);
            for (g, d) in groups.iter().zip(&docs) {
                say_packet(ctx, g, d);
            }
        }
        if self.json {
            return ctx.json(
                &json!({ "packets": all_docs, "unreadable": all_bad, "sealed": all_sealed }),
            );
        }
        Ok(())
    }

    /// The description of one packet (the JSON document; text is printed from it). `site`:
    /// the site it is listed at (it names replicas); `bay`: the bay it was listed from, and
    /// whether to say if it can be imported at the site.
    fn describe(
        &self,
        site: Option<&Site>,
        g: &Group,
        (bay, assessed): (Option<&str>, bool),
    ) -> anyhow::Result<serde_json::Value> {
        let c = packets::read_contents(g, self.long);
        let h = &g.header;
        let n = Namer { site, header: h };
        let (verdict, here) = match site.filter(|_| assessed) {
            Some(s) => {
                let (v, t) = assess(s, g)?;
                (Some(v), Some(t))
            }
            None => (None, None),
        };
        let id = PacketId(g.lp.packet_id.0);
        let signature = match site {
            Some(s) => s.replica.signature_status(h, g.lp.kind, &id)?,
            None => msite_core::sync::signature_status_listed(h, g.lp.kind, &id),
        };
        let per_origin: Vec<serde_json::Value> = c
            .per_origin
            .iter()
            .map(|(o, e)| json!({ "origin": n.name(&o.0), "entries": e.count, "first": e.first, "last": e.last }))
            .collect();
        Ok(json!({
            "files": g.paths(),
            "bay": bay,
            "packet_id": g.lp.packet_id.to_hex(),
            "kind": match g.lp.kind { wire::Kind::Update => "update", wire::Kind::ReplicaCreation => "replica_creation" },
            "format_version": g.lp.version.to_string(),
            "parts": g.lp.part_count,
            "parts_present": g.lp.parts.len(),
            "complete": g.complete(),
            "family": { "name": h.family_name, "id": h.family.to_hex() },
            "sender": { "name": n.name(&h.sender.0), "id": h.sender.to_hex(), "incarnation": h.sender_incarnation },
            "targets": h.targets.iter().map(|t| json!({
                "name": n.name(&t.replica.0), "id": t.replica.to_hex(), "incarnation": t.incarnation, "packet_seq": t.packet_seq
            })).collect::<Vec<_>>(),
            "base_row": h.bases.iter().map(|b| (n.name(&b.origin.0), serde_json::Value::from(b.number))).collect::<serde_json::Map<_, _>>(),
            "sender_row": n.row(&h.sender_row),
            "entries": c.entry_count,
            "entries_per_origin": per_origin,
            "contents": c.blobs,
            "content_bytes": c.blob_bytes,
            "bytes": c.bytes,
            "controls": controls_json(&n, &h.controls),
            "created": util::utc_time(h.created_ms),
            "verified": c.verified,
            "problem": c.problem,
            "signature": signature_json(&signature, site.is_some()),
            "importable_here": verdict,
            "here": here,
            "entry_list": if self.long {
                Some(c.entries.iter().map(|(o, num, op)| json!({ "origin": n.name(&o.0), "number": num, "op": op })).collect::<Vec<_>>())
            } else { None },
        }))
    }
}

/// Whether a packet's signature verifies, as `lspacket --json` gives it: `status` is
/// `verified`, `unsigned` or `invalid`; `keys` says whose keys it was checked with (`site`:
/// the ones pinned at the site, `listed`: the ones the packet itself lists).
fn signature_json(s: &msite_core::sync::SignatureStatus, at_site: bool) -> serde_json::Value {
    use msite_core::sync::SignatureStatus as S;
    let (status, key, detail) = match s {
        S::Verified { key } => ("verified", Some(key.clone()), None),
        S::Unsigned => ("unsigned", None, None),
        S::Invalid(why) => ("invalid", None, Some(why.clone())),
    };
    json!({
        "status": status,
        "key_fingerprint": key,
        "detail": detail,
        "keys": if at_site { "site" } else { "listed" },
        "text": s.to_string(),
    })
}

/// The control records a packet carries, as `lspacket --json` lists them.
fn controls_json(n: &Namer<'_>, controls: &[wire::Control]) -> Vec<serde_json::Value> {
    controls
        .iter()
        .map(|ctl| match ctl {
            wire::Control::RestoreRequest { replica, incarnation, row, .. } => json!({
                "type": "restore_request", "replica": n.name(&replica.0), "incarnation": incarnation, "row": n.row(row)
            }),
            wire::Control::ProvisionalAck { acker, replica, incarnation, held, .. } => json!({
                "type": "provisional_ack", "acker": n.name(&acker.0), "replica": n.name(&replica.0),
                "incarnation": incarnation, "held": held
            }),
        })
        .collect()
}

/// The files that are no readable packet, as `lspacket --json` lists them.
fn unreadable_json(bad: &[(PathBuf, String)], bay: Option<&str>) -> Vec<serde_json::Value> {
    bad.iter()
        .map(|(p, why)| json!({ "file": p, "bay": bay, "error": why }))
        .collect()
}

/// The line that opens a bay's listing: where it is and what it holds, or that it is empty.
fn say_bay(ctx: &Ctx, bay: &str, dir: &Path, packets: usize, unreadable: usize) {
    let what = match (packets, unreadable) {
        (0, 0) => "empty".to_string(),
        (p, 0) => util::count(p as u64, "packet", "packets"),
        (p, u) => format!(
            "{}, {}",
            util::count(p as u64, "packet", "packets"),
            util::count(
                u as u64,
                "file that is no readable packet",
                "files that are no readable packet"
            )
        ),
    };
    ctx.say(format!("{bay} bay ({}): {what}", util::esc_path(dir)));
}

fn say_unreadable(ctx: &Ctx, bad: &[(PathBuf, String)]) {
    for (p, why) in bad {
        ctx.say(format!(
            "{}: unreadable: {}",
            util::esc_path(p),
            util::bounded_line(&util::esc(why), 500)
        ));
    }
}

/// An incarnation from a JSON document, for people.
fn incarnation_of_json(v: &serde_json::Value) -> String {
    v.as_u64().map(incarnation_text).unwrap_or_else(|| plain(v))
}

/// Prints one packet's description as text.
fn say_packet(ctx: &Ctx, g: &Group, d: &serde_json::Value) {
    ctx.say(format!("packet {}", g.display()));
    if let Some(bay) = d["bay"].as_str() {
        ctx.say(format!("  bay: {bay}"));
    }
    ctx.say(format!(
        "  kind: {}, format {}, {} part{}{}, id {}",
        d["kind"].as_str().unwrap_or("?"),
        g.lp.version,
        g.lp.part_count,
        if g.lp.part_count == 1 { "" } else { "s" },
        if g.complete() {
            String::new()
        } else {
            format!(" ({})", g.problems())
        },
        g.lp.packet_id.to_hex()
    ));
    ctx.say(format!(
        "  family: {} ({})",
        util::esc(&g.header.family_name),
        g.header.family.to_hex()
    ));
    ctx.say(format!(
        "  sender: {} (incarnation {})",
        plain(&d["sender"]["name"]),
        incarnation_text(g.header.sender_incarnation)
    ));
    let targets = d["targets"].as_array().into_iter().flatten().map(|t| {
        format!(
            "{} (incarnation {}, packet {})",
            plain(&t["name"]),
            incarnation_of_json(&t["incarnation"]),
            t["packet_seq"]
        )
    });
    ctx.say(format!(
        "  targets: {}",
        util::bounded_list(targets, ", ", TARGETS_MAX)
    ));
    let empty = serde_json::Map::new();
    ctx.say(format!(
        "  base row: {}",
        row_text(d["base_row"].as_object().unwrap_or(&empty))
    ));
    ctx.say(format!(
        "  sender's row: {}",
        row_text(d["sender_row"].as_object().unwrap_or(&empty))
    ));
    say_contents(ctx, d);
}

/// One origin's entries in a packet, for people: `boston 3..7`, with the count if not dense.
fn origin_entries_text(o: &serde_json::Value) -> String {
    let (first, last, n) = (
        o["first"].as_u64().unwrap_or(0),
        o["last"].as_u64().unwrap_or(0),
        o["entries"].as_u64().unwrap_or(0),
    );
    let range = if first == last {
        format!("{first}")
    } else {
        format!("{first}..{last}")
    };
    let gaps = if n != last.saturating_sub(first) + 1 {
        format!(" ({n} entries)")
    } else {
        String::new()
    };
    format!("{} {range}{gaps}", plain(&o["origin"]))
}

/// Prints what a packet carries, whether it verified, and whether it can be imported here.
fn say_contents(ctx: &Ctx, d: &serde_json::Value) {
    let per: Vec<String> = d["entries_per_origin"]
        .as_array()
        .into_iter()
        .flatten()
        .map(origin_entries_text)
        .collect();
    ctx.say(format!(
        "  entries: {}{}",
        d["entries"],
        if per.is_empty() {
            String::new()
        } else {
            format!(" ({})", util::bounded_list(per, ", ", LIST_MAX))
        }
    ));
    ctx.say(format!(
        "  content blobs: {} ({})",
        d["contents"],
        util::human_size(d["content_bytes"].as_u64().unwrap_or(0))
    ));
    for ctl in d["controls"].as_array().into_iter().flatten() {
        ctx.say(control_text(ctl));
    }
    ctx.say(format!(
        "  created: {}, {} bytes",
        d["created"].as_str().unwrap_or("?"),
        d["bytes"]
    ));
    ctx.say(format!(
        "  signature: {}{}",
        d["signature"]["text"].as_str().unwrap_or("?"),
        if d["signature"]["keys"] == "listed" {
            " (checked with the keys the packet lists; run inside a site to check with its keys)"
        } else {
            ""
        }
    ));
    ctx.say(format!(
        "  verified: {}",
        if d["verified"].as_bool() == Some(true) {
            "yes".to_string()
        } else {
            format!("no: {}", plain(&d["problem"]))
        }
    ));
    if let Some(here) = d["here"].as_str() {
        ctx.say(format!("  here: {}", util::esc(here)));
    }
    for e in d["entry_list"].as_array().into_iter().flatten() {
        ctx.say(format!(
            "    {}:{} {}",
            plain(&e["origin"]),
            e["number"],
            plain(&e["op"])
        ));
    }
}

/// A control record of a packet as a line of text.
fn control_text(ctl: &serde_json::Value) -> String {
    match ctl["type"].as_str() {
        Some("restore_request") => format!(
            "  restore request: {} incarnation {} row {}",
            plain(&ctl["replica"]),
            incarnation_of_json(&ctl["incarnation"]),
            row_text(ctl["row"].as_object().unwrap_or(&serde_json::Map::new()))
        ),
        _ => format!(
            "  provisional acknowledgement: {} of {}'s restore (incarnation {}, held {})",
            plain(&ctl["acker"]),
            plain(&ctl["replica"]),
            incarnation_of_json(&ctl["incarnation"]),
            ctl["held"]
        ),
    }
}

/// A JSON value as text for people: strings unquoted, with control characters escaped and
/// at most 500 characters (a problem quoted from a packet can be long).
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => util::bounded_line(&util::esc(s), 500),
        other => other.to_string(),
    }
}

/// `msite lsepoch`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows the epoch matrix: the own row (exact: for each origin, the highest entry \
this replica holds) and, for each sibling, the estimate row (what this replica believes the \
sibling holds; exports send what is above it). With NAME, only that replica's row.",
    after_help = "Example:\n  msite -C boston lsepoch\n  msite -C boston lsepoch sanfran\n  msite -C boston lsepoch --json"
)]
pub struct Lsepoch {
    /// Only this replica's row.
    pub name: Option<String>,
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

impl Lsepoch {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        let mut matrix = r.epoch_matrix()?;
        if let Some(name) = &self.name {
            let id = r.view().replica_by_name(name)?;
            matrix.retain(|(x, _)| *x == id);
        }
        let origins: Vec<ReplicaId> = {
            let mut all: Vec<ReplicaId> = r.view().replicas()?.into_iter().map(|x| x.id).collect();
            all.sort_by_key(|id| (*id != r.id(), r.replica_name(id)));
            all
        };
        if self.json {
            let rows: Vec<serde_json::Value> = matrix
                .iter()
                .map(|(id, row)| {
                    json!({
                        "replica": r.replica_name(id),
                        "own": *id == r.id(),
                        "row": names::row_json(r, row),
                    })
                })
                .collect();
            return ctx.json(&json!({ "replica": r.name(), "origins": origins.iter().map(|o| r.replica_name(o)).collect::<Vec<_>>(), "rows": rows }));
        }
        let shown = |id: &ReplicaId| util::esc(&r.replica_name(id));
        let w = origins
            .iter()
            .map(|o| shown(o).chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let label_w = matrix
            .iter()
            .map(|(id, _)| shown(id).chars().count() + 12)
            .max()
            .unwrap_or(20);
        let mut head = format!("{:label_w$}", "row of");
        for o in &origins {
            head.push_str(&format!(" {:>w$}", shown(o)));
        }
        ctx.say(head);
        for (id, row) in &matrix {
            let label = if *id == r.id() {
                format!("{} (own)", shown(id))
            } else {
                format!("{} (estimate)", shown(id))
            };
            let mut line = format!("{label:label_w$}");
            for o in &origins {
                line.push_str(&format!(" {:>w$}", row.get(o)));
            }
            ctx.say(line);
        }
        Ok(())
    }
}

/// `msite chepoch`.
#[derive(Debug, Args)]
#[command(
    long_about = "Sets cells of the estimate row for sibling NAME: what this replica believes NAME \
holds of each origin. Lowering a cell makes the next export resend from there (useful after a \
packet was lost and the sibling cannot report it); raising one skips entries. The own row is \
exact and cannot be set.",
    after_help = "Example:\n  msite -C boston chepoch sanfran boston=120 bangalore=40"
)]
pub struct Chepoch {
    /// The sibling whose estimate row to set.
    pub name: String,
    /// Cells to set, as ORIGIN=N.
    #[arg(required = true, value_name = "ORIGIN=N")]
    pub cells: Vec<String>,
}

impl Chepoch {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        let target = r.view().replica_by_name(&self.name)?;
        let mut cells = Vec::new();
        for c in &self.cells {
            let (o, n) = c
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("`{c}` is not ORIGIN=N (for example boston=120)"))?;
            let n: u64 = n
                .parse()
                .map_err(|_| anyhow::anyhow!("`{n}` in `{c}` is not a number"))?;
            cells.push((r.view().replica_by_name(o)?, n));
        }
        r.chepoch(&target, &cells)?;
        ctx.say(format!(
            "The estimate row for {} is now: {}",
            util::esc(&r.replica_name(&target)),
            util::esc(&names::row(r, &r.estimate(&target)?))
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use msite_core::store::Error as StoreError;
    use msite_core::{CoreError, Refusal};

    use super::{verdict, Verdict};

    /// What stops a run, what refuses a packet and what refuses it and reopens the store.
    #[test]
    fn only_the_site_stops_a_run() {
        let stops = [
            CoreError::Locked("replica x was restored".into()),
            CoreError::Store(StoreError::Poisoned),
            CoreError::Store(StoreError::Corruption("bad page".into())),
        ];
        for e in stops {
            assert!(matches!(verdict(e), Verdict::Stop(_)));
        }
        let backend = StoreError::Backend {
            backend: "sqlite",
            source: "string or blob too big".into(),
        };
        assert!(matches!(
            verdict(CoreError::Store(backend)),
            Verdict::StoreFailed(m) if m.contains("string or blob too big")
        ));
        let refused = [
            CoreError::Refused(Refusal::Other("stale".into())),
            CoreError::Malformed("bad op".into()),
            CoreError::Unreadable("truncated".into()),
            CoreError::NotFound("elem:x".into()),
            CoreError::Invalid("odd".into()),
        ];
        for e in refused {
            assert!(matches!(verdict(e), Verdict::Refuse(_)));
        }
    }
}
