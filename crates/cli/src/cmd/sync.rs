//! Synchronisation: `syncreplica export|import` (and `import --watch`), `lsepoch`,
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
use msite_core::{CoreError, ExportOutcome, ImportOutcome, Incoming, Replica, ReplicaId};
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
            match self.recipients_for(r, &t, &name) {
                Ok(recipients) => {
                    written.push(self.export_to(ctx, &site, &t, name, &recipients, &out)?)
                }
                Err(e) => unsealable.push(format!("{e:#}")),
            }
        }
        if !unsealable.is_empty() {
            anyhow::bail!("{}", unsealable.join("; and "));
        }
        Ok(written)
    }

    /// Writes the packet for sibling `t` (named `name`) into `out`, sealed to `recipients`
    /// if any, and says what it holds; a sibling that lacks nothing gets no packet.
    fn export_to(
        &self,
        ctx: &Ctx,
        site: &Site,
        t: &ReplicaId,
        name: String,
        recipients: &[String],
        out: &Path,
    ) -> anyhow::Result<Exported> {
        let r = &site.replica;
        let Some(plan) = r.plan_export(t)? else {
            return Ok(nothing_to_send(ctx, name));
        };
        tracing::info!(target = %name, entries = plan.entry_count, reason = plan.reason, "exporting");
        let pb = util::spinner(
            ctx,
            format!("exporting {} entries to {name}", plan.entry_count),
        );
        let res = r.write_plan_to_dir(&plan, out, self.max_size);
        pb.finish_and_clear();
        let ExportOutcome::Written {
            parts,
            entries,
            blobs,
            bytes,
            warnings,
            reason,
        } = res?
        else {
            return Ok(nothing_to_send(ctx, name));
        };
        ctx.say(wrote_line(
            &name,
            reason,
            (entries, blobs, bytes),
            parts.len(),
        ));
        self.seal(ctx, &parts, &name, recipients)?;
        for p in &parts {
            ctx.say(format!("  {}", p.display()));
        }
        record_export(site, &name, &parts, bytes);
        for w in warnings {
            ctx.say(format!("  warning: {w}"));
        }
        Ok(Exported {
            target: name,
            parts,
        })
    }
}

/// Says that sibling `name` gets no packet.
fn nothing_to_send(ctx: &Ctx, name: String) -> Exported {
    ctx.say(format!("Nothing to send to {name}."));
    Exported {
        target: name,
        parts: Vec::new(),
    }
}

/// The line saying what the packet for `name` holds (`counts`: entries, content blobs,
/// bytes), with its reason unless it is a plain update and its part count if over one.
fn wrote_line(name: &str, reason: &str, counts: (u64, u64, u64), parts: usize) -> String {
    let (entries, blobs, bytes) = counts;
    let what = match reason {
        "update" => String::new(),
        other => format!(" [{other}]"),
    };
    format!(
        "Wrote a packet for {name}{what}: {}, {}, {}{}",
        util::count(entries, "entry", "entries"),
        util::count(blobs, "content blob", "content blobs"),
        util::human_size(bytes),
        if parts > 1 {
            format!(", {parts} parts")
        } else {
            String::new()
        }
    )
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
        util::files_size(files),
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

/// Imports one complete packet and reports the result. An applied or already applied
/// packet is recorded in the history and leaves the incoming bay; a waiting one stays.
fn import_one(
    ctx: &Ctx,
    site: &Site,
    g: &Group,
    tally: &mut Tally,
    reported: &mut BTreeMap<String, String>,
) -> anyhow::Result<Step> {
    let (name, files, movable) = placement(site, g);
    tracing::info!(packet = %name, parts = files.len(), "importing");
    let pb = util::spinner(ctx, format!("importing {name}"));
    let res = Incoming::from_files(&files).and_then(|pkt| site.replica.import(pkt));
    pb.finish_and_clear();
    let outcome = match res {
        Ok(o) => o,
        Err(e) => {
            let place = (name.as_str(), files.as_slice(), movable);
            return not_imported(ctx, site, g, place, e, tally, reported);
        }
    };
    let bytes = util::files_size(&files);
    let step = match outcome {
        ImportOutcome::Applied {
            applied,
            skipped,
            notes,
            unlocked,
        } => {
            tally.applied += 1;
            tally.unlocked |= unlocked;
            let sender = util::esc(&sender_name(&site.replica, &g.header));
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

/// What an import that failed with `e` means for the packet at `place` (name, files,
/// whether they are in the incoming bay): a refused packet is moved aside and said so; a
/// failed store is the caller's to handle; any other error stops the run, the packet staying.
fn not_imported(
    ctx: &Ctx,
    site: &Site,
    g: &Group,
    place: (&str, &[PathBuf], bool),
    e: CoreError,
    tally: &mut Tally,
    reported: &mut BTreeMap<String, String>,
) -> anyhow::Result<Step> {
    let name = place.0;
    match verdict(e) {
        Verdict::Refuse(why) => {
            reported.remove(name);
            refuse(ctx, site, place, (why, Some(&g.header)), tally)?;
            Ok(Step::Refused)
        }
        Verdict::StoreFailed(err) => Ok(Step::StoreFailed(err)),
        Verdict::Stop(e @ CoreError::Locked(_)) => Err(anyhow::anyhow!(
            "cannot import {name}: {}; the packets stay in the incoming bay",
            util::esc(&e.to_string())
        )),
        Verdict::Stop(e) => Err(stop(name, e, "the site's store cannot be used")),
    }
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
        .map(|(p, what)| (p, super::lspacket::not_regular_text(&what)));
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
