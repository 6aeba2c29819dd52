//! Family and replicas: `init`, `mkreplica export|import`, `lsreplica`, `describe`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use msite_core::vob::NameKind;
use msite_core::{
    incarnation_text, ExportOutcome, HeldRequest, Incoming, ObjId, ObjectRef, Replica, ReplicaId,
    Selector, Status,
};
use serde::Serialize;
use serde_json::json;

use super::names;
use crate::backend::{AnyStore, BackendKind};
use crate::packets;
use crate::site::{ensure_no_site, Ctx, Site, SiteConfig, SitePaths};
use crate::util;

fn backend_or_default(b: Option<BackendKind>) -> anyhow::Result<BackendKind> {
    match b {
        Some(k) => {
            k.ensure_compiled()?;
            Ok(k)
        }
        None => BackendKind::default_kind().ok_or_else(|| {
            anyhow::anyhow!("this build has no storage backend; rebuild with `--features sqlite`")
        }),
    }
}

/// `msite init`.
#[derive(Debug, Args)]
#[command(
    long_about = "Creates a new family (a replicated database) whose first replica lives in DIR. \
DIR gets the store, the bays for packets and site.json. The new replica masters the `main` \
branch type and everything it creates.",
    after_help = "Example:\n  msite init /srv/msite/boston --family proj --replica boston\n  msite init sanfran-test --family test --replica sanfran --backend rocks\n  msite init /srv/msite/boston --family proj --replica boston --backend postgres --url 'host=/run/postgresql dbname=boston'"
)]
pub struct Init {
    /// The directory of the new site (default: -C DIR or the current directory).
    pub dir: Option<PathBuf>,
    /// The family's name.
    #[arg(long, value_name = "NAME")]
    pub family: String,
    /// The first replica's name.
    #[arg(long, value_name = "NAME")]
    pub replica: String,
    /// The storage engine (sqlite, rocks, postgres); default: the first one of this build.
    #[arg(long, value_name = "B")]
    pub backend: Option<BackendKind>,
    /// Where a server backend (postgres) keeps the store: a libpq connection string or URI
    /// naming the database (created if missing), without a password (use ~/.pgpass or peer
    /// authentication). The site directory's store/ then holds only this string.
    #[arg(long, value_name = "CONNINFO")]
    pub url: Option<String>,
    /// The largest version this site accepts, at check-in and import (e.g. 500M, 4G;
    /// default 4G). Kept in the store, so backups and restores keep it.
    #[arg(long, value_name = "SIZE", value_parser = util::parse_size)]
    pub max_version_size: Option<u64>,
}

impl Init {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let dir = self.dir.unwrap_or_else(|| ctx.dir.clone());
        let kind = backend_or_default(self.backend)?;
        ensure_no_site(&dir)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let paths = SitePaths::new(&dir);
        let store = AnyStore::create(kind, &paths.store(), self.url.as_deref())?;
        let r = Replica::init(store, ctx.env(), &self.family, &self.replica)?;
        if let Some(n) = self.max_version_size {
            r.set_max_version_bytes(n)?;
        }
        paths.make_bays()?;
        SiteConfig::of(&r, kind).write(&dir)?;
        tracing::info!(family = %r.family(), replica = %r.id(), "created family");
        ctx.say(format!(
            "Created family {} with replica {} in {} (backend {kind}).",
            r.family_name(),
            r.name(),
            dir.display()
        ));
        Ok(())
    }
}

/// `msite mkreplica`.
#[derive(Debug, Subcommand)]
pub enum Mkreplica {
    /// Create replica NAME (mastered here) and write its creation packet.
    Export(MkreplicaExport),
    /// Make the new replica's site in DIR from its creation packet.
    Import(MkreplicaImport),
}

impl Mkreplica {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Mkreplica::Export(a) => a.run(ctx),
            Mkreplica::Import(a) => a.run(ctx),
        }
    }
}

/// `msite mkreplica export`.
#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("sealing").required(true).args(["encrypt_to", "no_encrypt"])),
    long_about = "Creates the replica object NAME, mastered by this replica, and writes a creation \
packet holding everything the new replica needs: a snapshot of the database as it is now \
(every element, version, label and content), which the new site loads in bulk rather than \
replaying, and of the history only what the restore window (`msite scrub --keep`) tells this \
replica to keep. With retention off (the default), every change travels too, since a sibling \
restored from any backup may need them back: the new replica then holds the whole history, as \
one made with --history does. With retention on, only the few recent changes a sibling may \
still lack travel, so the packet costs what the tree costs however long the history is; the \
new replica cannot hand a sibling the changes left out of it, and cannot give up entries its \
snapshot holds (`msite repairfork`, or a sibling's restoration that retires entries): it must \
then be re-created. --history writes every change ever made instead, for the new site to \
replay (refused once `msite scrub` dropped some). The new site's operator \
first runs `msite identity --new FILE` and sends you the two lines it prints: the `age1…` \
recipient for --encrypt-to and the signing key for --key. The key is written into this \
replica's history with the entry that creates NAME, so every sibling knows it before NAME sends \
anything and refuses a packet of NAME signed by any other key. The packet carries the whole \
database, so it is sealed (encrypted with age) to the recipient; --no-encrypt writes it in the \
clear. Ship the packet to the new site and run `msite mkreplica import PACKET DIR --identity \
FILE` there.",
    after_help = "Example:\n  msite identity --new sanfran.age        # at the new site: prints RECIPIENT and KEY\n  msite -C boston mkreplica export sanfran --encrypt-to age1…(RECIPIENT) --key 3f1c…(KEY)\n  msite -C boston mkreplica export bangalore --out /mnt/usb --no-encrypt --key 9a0b…\n  msite -C boston mkreplica export tokyo --history --no-encrypt --key 5d2e…   (every change, replayed at the new site)"
)]
pub struct MkreplicaExport {
    /// The new replica's name (unique in the family).
    pub name: String,
    /// Where to write the packet (default: the outgoing bay).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seal the packet to this age recipient (`age1…`); repeat for several.
    #[arg(long, value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Write the creation packet unencrypted (anyone holding it can read the database).
    #[arg(long)]
    pub no_encrypt: bool,
    /// Carry every change ever made, for the new site to replay, instead of a snapshot of the
    /// database (slower on a long history; refused once `msite scrub` dropped some changes).
    #[arg(long, conflicts_with = "snapshot")]
    pub history: bool,
    /// Carry a snapshot of the database as it is now (the default; kept for scripts written
    /// when the history was).
    #[arg(long)]
    pub snapshot: bool,
    /// The new replica's signing key: the 64 hex digits `msite identity --new` printed at the
    /// new site.
    #[arg(long, value_name = "KEY", required = true)]
    pub key: String,
}

impl MkreplicaExport {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let out = self.out.clone().unwrap_or_else(|| site.paths.outgoing());
        let r = &site.replica;
        crate::site::remove_unfinished(r, &out);
        msite_packet::sealed::parse_recipients(&self.encrypt_to)?;
        let key = self.signing_key()?;
        let plan = match self.history {
            true => r.plan_mkreplica(&self.name, &key)?,
            false => r.plan_mkreplica_snapshot(&self.name, &key)?,
        };
        if let [only] = &self.encrypt_to[..] {
            // The new site's recipient, until it announces it itself (`seal-policy`).
            r.note_recipient(&plan.target, only)?;
        }
        let pb = util::spinner(ctx, format!("writing the creation packet of {}", self.name));
        let outcome = r.write_plan_to_dir(&plan, &out, None);
        pb.finish_and_clear();
        match outcome? {
            ExportOutcome::Written {
                parts,
                entries,
                blobs,
                bytes,
                ..
            } => self.say_written(ctx, r, &parts, (entries, blobs, bytes))?,
            ExportOutcome::Nothing => ctx.say("Nothing was written."),
        }
        Ok(())
    }

    /// The new replica's public signing key, parsed from --key.
    fn signing_key(&self) -> anyhow::Result<msite_packet::wire::PublicKey> {
        msite_core::sync::parse_public_key(&self.key).ok_or_else(|| {
            anyhow::anyhow!(
                "{} is not a signing key; give the 64 hex digits `msite identity --new` printed at the new site",
                self.key
            )
        })
    }

    /// Says what the creation packet `parts` holds (`counts`: entries, rows or blobs, bytes),
    /// seals it to --encrypt-to's recipients if any, and says how the new site imports it.
    fn say_written(
        &self,
        ctx: &Ctx,
        r: &Replica<AnyStore>,
        parts: &[PathBuf],
        counts: (u64, u64, u64),
    ) -> anyhow::Result<()> {
        let (entries, blobs, bytes) = counts;
        let what = match self.history {
            true => format!("history, {}", util::count(entries, "entry", "entries")),
            false => format!("snapshot, {}", util::count(blobs, "row", "rows")),
        };
        ctx.say(format!(
            "Created replica {} (mastered by {}); its creation packet ({what}, {}):",
            self.name,
            r.name(),
            util::human_size(bytes)
        ));
        if !self.encrypt_to.is_empty() {
            crate::seal::seal_parts(parts, &self.encrypt_to, std::slice::from_ref(&self.name))?;
            ctx.say(format!(
                "  sealed for {} ({})",
                self.name,
                self.encrypt_to.join(", ")
            ));
        }
        for p in parts {
            ctx.say(format!("  {}", p.display()));
        }
        ctx.say(format!(
            "Ship it to the new site and run there: msite mkreplica import {} DIR{}",
            parts
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            " --identity FILE"
        ));
        Ok(())
    }
}

/// `msite mkreplica import`.
#[derive(Debug, Args)]
#[command(
    long_about = "Makes the site of a new replica in DIR from the creation packet that \
`msite mkreplica export` wrote at its creator. The new replica then syncs like any other.",
    after_help = "Example:\n  msite mkreplica import repl_boston_to_sanfran_1700000000000_0.msp /srv/msite/sanfran\n  msite mkreplica import repl_boston_to_sanfran_1700000000000_0.msp /srv/msite/sanfran --backend postgres --url 'host=/run/postgresql dbname=sanfran'"
)]
pub struct MkreplicaImport {
    /// The creation packet (any of its parts; the others are looked for next to it).
    pub packet: PathBuf,
    /// The directory of the new site.
    pub dir: PathBuf,
    /// The storage engine (sqlite, rocks, postgres); default: the first one of this build.
    #[arg(long, value_name = "B")]
    pub backend: Option<BackendKind>,
    /// Where a server backend (postgres) keeps the store: a libpq connection string or URI
    /// naming the database (created if missing), without a password (use ~/.pgpass or peer
    /// authentication). The site directory's store/ then holds only this string.
    #[arg(long, value_name = "CONNINFO")]
    pub url: Option<String>,
    /// The largest version this site accepts, at check-in and import (e.g. 500M, 4G;
    /// default 4G). Kept in the store, so backups and restores keep it.
    #[arg(long, value_name = "SIZE", value_parser = util::parse_size)]
    pub max_version_size: Option<u64>,
    /// The age identity file (`msite identity --new FILE`) that opens a sealed creation
    /// packet; the new site keeps it as its identity.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl MkreplicaImport {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let kind = backend_or_default(self.backend)?;
        ensure_no_site(&self.dir)?;
        let mut files = packets::with_sibling_parts(std::slice::from_ref(&self.packet));
        let (identity, _plain) = unseal_creation(&mut files, self.identity.as_deref())?;
        let key = site_key_of(&files[0], self.identity.as_deref(), identity.as_deref())?;
        let pkt = Incoming::from_files(&files)?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let paths = SitePaths::new(&self.dir);
        let store = AnyStore::create(kind, &paths.store(), self.url.as_deref())?;
        let pb = util::spinner(ctx, "making the new replica");
        let made = Replica::create_from_packet(store, ctx.env(), pkt, &key);
        pb.finish_and_clear();
        let r = match made {
            Ok(r) => r,
            Err(e) => {
                // Leave no half-made site behind.
                let _ = std::fs::remove_dir_all(paths.store());
                return Err(e.into());
            }
        };
        if let Some(n) = self.max_version_size {
            r.set_max_version_bytes(n)?;
        }
        if let Some(id) = identity {
            r.set_sealing_identity(&id)?;
        }
        paths.make_bays()?;
        SiteConfig::of(&r, kind).write(&self.dir)?;
        ctx.say(format!(
            "Created replica {} of family {} in {} (backend {kind}); it holds {} entries.",
            util::esc(&r.name()),
            util::esc(r.family_name()),
            self.dir.display(),
            r.own_row()?.0.values().sum::<u64>()
        ));
        Ok(())
    }
}

/// Unseals the sealed parts among `files` into a temporary directory with the identity file
/// `identity` (replacing their paths); returns the identity's text and the directory, which
/// must live until the packet is read.
fn unseal_creation(
    files: &mut [PathBuf],
    identity: Option<&std::path::Path>,
) -> anyhow::Result<(Option<String>, Option<tempfile::TempDir>)> {
    if !files.iter().any(|p| crate::seal::is_sealed_file(p)) {
        let text = match identity {
            Some(path) => Some(read_identity(path)?),
            None => None,
        };
        return Ok((text, None));
    }
    let Some(path) = identity else {
        let label = crate::seal::label_of(&files[0])?;
        anyhow::bail!(
            "{} is sealed for {}; give the identity file made for it with --identity FILE",
            files[0].display(),
            label.for_names.join(", ")
        );
    };
    let text = read_identity(path)?;
    let id = crate::seal::parse_identity(&text)
        .with_context(|| format!("{} is not an age identity file", path.display()))?;
    let tmp = tempfile::tempdir()?;
    for f in files.iter_mut().filter(|p| crate::seal::is_sealed_file(p)) {
        let dest = tmp.path().join(f.file_name().unwrap_or_default());
        crate::seal::unseal_to(f, &dest, &id)?;
        *f = dest;
    }
    Ok((Some(text), Some(tmp)))
}

fn read_identity(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the identity file {}", path.display()))
}

/// The new site's signing key, from the identity file `path` (whose text is `text`) that
/// `msite identity --new` made: the key the creator announced with `mkreplica export --key`.
fn site_key_of(
    packet: &std::path::Path,
    path: Option<&std::path::Path>,
    text: Option<&str>,
) -> anyhow::Result<msite_core::SiteKey> {
    let (Some(path), Some(text)) = (path, text) else {
        anyhow::bail!(
            "{} makes a new site, whose signing key is in the identity file `msite identity --new FILE` made; give it with --identity FILE",
            packet.display()
        );
    };
    super::keys::signing_key_of(text).ok_or_else(|| {
        anyhow::anyhow!(
            "{} holds no msite signing key (made by an older msite or by age-keygen); make one with `msite identity --new FILE` and ask the creator for a creation packet made with the key it prints",
            path.display()
        )
    })
}

/// `msite lsreplica`.
#[derive(Debug, Args)]
#[command(
    long_about = "Lists the replicas this site knows. --long adds each one's id, master, \
incarnation and signing-key fingerprint (compare it out of band with the one the replica's own \
site shows), and the restoration state: `replica is recovering` for this replica while it \
recovers from a backup, `replica is expected to send recovery update` for each sibling it \
still waits for, and restore requests this site holds and propagates for others.",
    after_help = "Example:\n  msite -C sanfran lsreplica\n  msite -C sanfran lsreplica --long\n  msite -C sanfran lsreplica --json"
)]
pub struct Lsreplica {
    /// Show id, master, incarnation and restoration state.
    #[arg(short, long)]
    pub long: bool,
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

/// One replica in `lsreplica --json`.
#[derive(Debug, Serialize)]
pub struct ReplicaInfo {
    /// Name.
    pub name: String,
    /// Id (hex).
    pub id: String,
    /// Master replica's name.
    pub master: String,
    /// Incarnation as recorded here.
    pub incarnation: u64,
    /// Whether it is this site's replica.
    pub this_replica: bool,
    /// For this replica: `normal`, `restored`, `recovering` or `rolled_back`; for siblings: null.
    pub state: Option<String>,
    /// For this replica while rolled back: why.
    pub rolled_back_reason: Option<String>,
    /// For this replica while recovering: the incarnation of its restore request.
    pub recovering_incarnation: Option<u64>,
    /// For a sibling: whether this (recovering) replica waits for its recovery update.
    pub expected_to_send_recovery_update: bool,
    /// For a sibling: the restore request of it that this site holds and propagates.
    pub held_restore_request: Option<serde_json::Value>,
    /// The incarnation of its last completed restoration known here (0: none).
    pub completed_incarnation: u64,
    /// The fingerprint of its public signing key as pinned here (null: no key known yet, until
    /// a packet of it arrives), for comparing out of band.
    pub key_fingerprint: Option<String>,
    /// The annotations `--long` prints, in order.
    pub annotations: Vec<String>,
    /// When the family retired it (`msite rmreplica`): `{"by": NAME, "last": N}`, the
    /// replica whose entry retired it and the last of its entries the family keeps; else null.
    pub retired: Option<serde_json::Value>,
}

/// A retired replica's `retired` field and annotation (`msite rmreplica`).
fn retired_info(
    r: &Replica<AnyStore>,
    id: &msite_core::ReplicaId,
    annotations: &mut Vec<String>,
) -> anyhow::Result<Option<serde_json::Value>> {
    Ok(r.retirement(id)?.map(|x| {
        let by = r.retired_by_name(&x);
        annotations.push(format!(
            "retired by {by}: the family keeps its entries up to {} and refuses its packets",
            x.last
        ));
        json!({ "by": by, "last": x.last })
    }))
}

/// Collects what `lsreplica` shows.
pub fn replica_infos(r: &Replica<AnyStore>) -> anyhow::Result<Vec<ReplicaInfo>> {
    let st = r.status()?;
    let held = r.held_requests()?;
    let mut replicas = r.view().replicas()?;
    // This replica first, then the others by name.
    replicas.sort_by_key(|x| (x.id != r.id(), r.replica_name(&x.id)));
    replicas
        .iter()
        .map(|obj| replica_info(r, &st, &held, &obj.id, &obj.master))
        .collect()
}

/// What `lsreplica` shows of replica `id` (mastered by `master`): its annotations come in
/// this order: this replica's own state, the wait for its recovery update, its retirement,
/// the restore request of it held here.
fn replica_info(
    r: &Replica<AnyStore>,
    st: &Status,
    held: &[HeldRequest],
    id: &ReplicaId,
    master: &ReplicaId,
) -> anyhow::Result<ReplicaInfo> {
    let me = *id == r.id();
    let mut annotations = Vec::new();
    let own = if me {
        own_state(st, &mut annotations)
    } else {
        OwnState::default()
    };
    let awaited = !me
        && st
            .recovering
            .as_ref()
            .is_some_and(|rec| rec.awaited.contains_key(id));
    if awaited {
        annotations.push("replica is expected to send recovery update".to_string());
        if r.awaits_completion_of(id)? {
            annotations.push(
                "it is restoring too, since after this replica: it answers when its own restoration completes"
                    .to_string(),
            );
        }
    }
    let retired = retired_info(r, id, &mut annotations)?;
    let held_req = held.iter().find(|h| h.replica == *id);
    if let Some(h) = held_req {
        annotations.push(format!(
            "restore request (incarnation {}) held here and propagated until its restoration completes",
            incarnation_text(h.incarnation)
        ));
    }
    Ok(ReplicaInfo {
        name: r.replica_name(id),
        id: id.to_hex(),
        master: r.replica_name(master),
        incarnation: r.incarnation_of(id)?,
        this_replica: me,
        state: own.state,
        rolled_back_reason: own.rolled_back_reason,
        recovering_incarnation: own.recovering_incarnation,
        expected_to_send_recovery_update: awaited,
        held_restore_request: held_req
            .map(|h| json!({ "incarnation": h.incarnation, "row": names::row_json(r, &h.row) })),
        completed_incarnation: r.completed_incarnation(id)?,
        key_fingerprint: r.public_key(id)?.map(|k| msite_core::sync::fingerprint(&k)),
        annotations,
        retired,
    })
}

/// This replica's state fields in `lsreplica` (all `None` for a sibling).
#[derive(Default)]
struct OwnState {
    state: Option<String>,
    rolled_back_reason: Option<String>,
    recovering_incarnation: Option<u64>,
}

/// This replica's state from its status `st`, with an annotation for each way it is not
/// normal; when several hold, the state is the last of restored, rolled back, recovering.
fn own_state(st: &Status, annotations: &mut Vec<String>) -> OwnState {
    let mut own = OwnState {
        state: Some("normal".to_string()),
        ..OwnState::default()
    };
    if st.restored {
        own.state = Some("restored".into());
        annotations.push("restored from backup: run msite restorereplica".to_string());
    }
    if let Some(reason) = &st.rolled_back {
        own.state = Some("rolled_back".into());
        own.rolled_back_reason = Some(reason.clone());
        annotations.push(format!(
            "replica is rolled back: {reason}: run msite restorereplica"
        ));
    }
    if let Some(rec) = &st.recovering {
        own.state = Some("recovering".into());
        own.recovering_incarnation = Some(rec.incarnation);
        annotations.push("replica is recovering".to_string());
    }
    own
}

impl Lsreplica {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        let infos = replica_infos(r)?;
        if self.json {
            return ctx.json(&lsreplica_json(r, infos)?);
        }
        for i in &infos {
            if self.long {
                say_long(ctx, i);
            } else {
                say_short(ctx, i);
            }
        }
        if self.long {
            say_recovering(ctx, r)?;
        }
        Ok(())
    }
}

/// The `lsreplica --json` document.
fn lsreplica_json(
    r: &Replica<AnyStore>,
    infos: Vec<ReplicaInfo>,
) -> anyhow::Result<serde_json::Value> {
    // The awaited set by id too: a sibling named by id that this store has no replica
    // object for (created after the backup) appears only here.
    let recovering = r.status()?.recovering.map(|rec| {
        let awaiting: Vec<_> = rec
            .awaited
            .keys()
            .map(|id| json!({ "name": r.replica_name(id), "id": id.to_hex() }))
            .collect();
        json!({ "incarnation": rec.incarnation, "awaiting": awaiting })
    });
    Ok(json!({
        "family": { "name": r.family_name(), "id": r.family().to_hex() },
        "this_replica": r.name(),
        "recovering": recovering,
        "replicas": infos,
    }))
}

/// One replica on one line: its name, whether it is this replica, its annotations.
fn say_short(ctx: &Ctx, i: &ReplicaInfo) {
    let mut line = util::esc(&i.name);
    if i.this_replica {
        line.push_str("  (this replica)");
    }
    if !i.annotations.is_empty() {
        line.push_str(&format!("  [{}]", util::esc(&i.annotations.join("; "))));
    }
    ctx.say(line);
}

/// One replica for `lsreplica --long`: a line for each field and annotation.
fn say_long(ctx: &Ctx, i: &ReplicaInfo) {
    let this = if i.this_replica {
        " (this replica)"
    } else {
        ""
    };
    ctx.say(format!("replica \"{}\"{this}", util::esc(&i.name)));
    ctx.say(format!("  id: {}", i.id));
    ctx.say(format!("  master replica: {}", util::esc(&i.master)));
    ctx.say(format!(
        "  incarnation: {}",
        incarnation_text(i.incarnation)
    ));
    ctx.say(format!(
        "  signing key: {}",
        i.key_fingerprint
            .as_deref()
            .unwrap_or("not known here yet (pinned from its first packet)")
    ));
    for a in &i.annotations {
        ctx.say(format!("  {}", util::esc(a)));
    }
}

/// While this replica recovers: which siblings' recovery updates it still waits for.
fn say_recovering(ctx: &Ctx, r: &Replica<AnyStore>) -> anyhow::Result<()> {
    if let Some(rec) = r.status()?.recovering {
        let waiting: Vec<String> = rec
            .awaited
            .keys()
            .map(|id| util::esc(&r.replica_name(id)))
            .collect();
        ctx.say(format!(
            "{} is recovering (incarnation {}); waiting for recovery updates from: {}",
            util::esc(&r.name()),
            incarnation_text(rec.incarnation),
            if waiting.is_empty() {
                "nobody".to_string()
            } else {
                waiting.join(", ")
            }
        ));
    }
    Ok(())
}

/// `msite describe`.
#[derive(Debug, Args)]
#[command(
    long_about = "Describes one object: who masters it and what it holds. SELECTOR is \
replica:NAME, brtype:NAME, lbtype:NAME, elem:PATH or branch:PATH@@BRTYPE. A name created \
concurrently at two sites is reachable as NAME@REPLICA for the one that lost the plain name.",
    after_help = "Example:\n  msite describe brtype:sanfran_dev\n  msite describe elem:src/main.c --json\n  msite describe replica:bangalore"
)]
pub struct Describe {
    /// The object: replica:NAME, brtype:NAME, lbtype:NAME, elem:PATH, branch:PATH@@BRTYPE.
    pub selector: String,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

impl Describe {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let doc = describe(&site, &self.selector)?;
        if self.json {
            return ctx.json(&doc);
        }
        print_value(ctx, &doc, 0);
        Ok(())
    }
}

fn print_value(ctx: &Ctx, v: &serde_json::Value, depth: usize) {
    let pad = "  ".repeat(depth);
    if let serde_json::Value::Object(m) = v {
        for (k, val) in m {
            match val {
                serde_json::Value::Object(_) => {
                    ctx.say(format!("{pad}{}:", util::esc(k)));
                    print_value(ctx, val, depth + 1);
                }
                serde_json::Value::Array(items) => {
                    ctx.say(format!(
                        "{pad}{}:{}",
                        util::esc(k),
                        if items.is_empty() { " (none)" } else { "" }
                    ));
                    for it in items {
                        match it {
                            serde_json::Value::Object(_) => {
                                let line = it
                                    .as_object()
                                    .map(|o| {
                                        o.iter()
                                            .map(|(k, v)| format!("{}={}", util::esc(k), plain(v)))
                                            .collect::<Vec<_>>()
                                            .join(" ")
                                    })
                                    .unwrap_or_default();
                                ctx.say(format!("{pad}  - {line}"));
                            }
                            other => ctx.say(format!("{pad}  - {}", plain(other))),
                        }
                    }
                }
                other => ctx.say(format!("{pad}{}: {}", util::esc(k), field_text(k, other))),
            }
        }
    }
}

/// A field of a description as text: incarnations (raw numbers in JSON) as UTC times.
fn field_text(key: &str, v: &serde_json::Value) -> String {
    match v.as_u64() {
        Some(n) if key.ends_with("incarnation") => incarnation_text(n),
        _ => plain(v),
    }
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => util::esc(s),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The description of one object, as JSON (printed as text or as is).
pub fn describe(site: &Site, selector: &str) -> anyhow::Result<serde_json::Value> {
    let r = &site.replica;
    let sel = Selector::parse(selector)?;
    let obj = r.resolve_selector(&sel)?;
    let master = r.replica_name(&r.view().master_of(&obj)?);
    match obj {
        ObjectRef::Replica(id) => describe_replica(r, &id, master),
        ObjectRef::BrType(id) => Ok(describe_type(r, NameKind::BrType, &id, master)),
        ObjectRef::LbType(id) => Ok(describe_type(r, NameKind::LbType, &id, master)),
        ObjectRef::Element(id) => describe_element(r, &id, master, selector),
        ObjectRef::Branch { elem, brtype } => {
            let b = r
                .view()
                .branch(&elem, &brtype)?
                .ok_or_else(|| anyhow::anyhow!("{selector} vanished"))?;
            Ok(json!({
                "kind": "branch",
                "elem": names::elem(r, &elem),
                "brtype": names::brtype(r, &brtype),
                "master": master,
                "latest": b.latest,
            }))
        }
    }
}

/// A replica's description: its `lsreplica` annotations included.
fn describe_replica(
    r: &Replica<AnyStore>,
    id: &ReplicaId,
    master: String,
) -> anyhow::Result<serde_json::Value> {
    let o = r
        .view()
        .replica(id)?
        .ok_or_else(|| anyhow::anyhow!("replica:{} vanished", id.short()))?;
    let info = replica_infos(r)?.into_iter().find(|i| i.id == id.to_hex());
    Ok(json!({
        "kind": "replica",
        "name": r.replica_name(id),
        "id": id.to_hex(),
        "master": master,
        "created_by": format!("{}:{}", r.replica_name(&o.created_by.origin), o.created_by.number),
        "incarnation": r.incarnation_of(id)?,
        "this_replica": *id == r.id(),
        "key_fingerprint": r.public_key(id)?.map(|k| msite_core::sync::fingerprint(&k)),
        "annotations": info.map(|i| i.annotations).unwrap_or_default(),
    }))
}

/// A branch type's or label type's description (`kind` says which).
fn describe_type(
    r: &Replica<AnyStore>,
    kind: NameKind,
    id: &ObjId,
    master: String,
) -> serde_json::Value {
    let name = if kind == NameKind::BrType {
        names::brtype(r, id)
    } else {
        names::lbtype(r, id)
    };
    json!({
        "kind": kind.label(),
        "name": name,
        "id": format!("{}:{}", r.replica_name(&id.origin), id.number),
        "master": master,
    })
}

/// An element's description: its branches and labels.
fn describe_element(
    r: &Replica<AnyStore>,
    id: &ObjId,
    master: String,
    selector: &str,
) -> anyhow::Result<serde_json::Value> {
    let v = r.view();
    let el = v
        .element(id)?
        .ok_or_else(|| anyhow::anyhow!("elem:{selector} vanished"))?;
    let mut branches = Vec::new();
    for b in v.branches(id)? {
        branches.push(json!({
            "brtype": names::brtype(r, &b.brtype),
            "master": r.replica_name(&b.master),
            "latest": b.latest,
        }));
    }
    let mut labels = Vec::new();
    for l in v.labels(id)? {
        labels.push(json!({
            "lbtype": names::lbtype(r, &l.lbtype),
            "version": format!("{}/{}", names::brtype(r, &l.brtype), l.version),
        }));
    }
    Ok(json!({
        "kind": "elem",
        "path": el.path,
        "id": format!("{}:{}", r.replica_name(&id.origin), id.number),
        "master": master,
        "removed": el.removed,
        "branches": branches,
        "labels": labels,
    }))
}

/// `msite rmreplica`.
#[derive(Debug, Args)]
#[command(
    long_about = "Retires replica NAME for good: a site that is closed, or whose storage is lost \
with no backup worth restoring. The retirement travels in packets like any change; every \
replica that takes it forgets NAME: no restoration waits for it, retention (`msite scrub`) \
no longer waits for its acknowledgement, nothing is exported to it, and its packets are \
refused. The family keeps NAME's entries up to what this replica holds of them now.

Run it at the replica that masters replica:NAME (the one that created it, unless mastership \
was handed on), after NAME stopped and its last packets were imported here. A replica may \
also retire itself, once it masters nothing: hand its objects to live siblings first \
(`msite chmaster`), then export one last time. Objects a retired replica still masters are \
taken over with `msite chmaster --all --from NAME`. `msite lsreplica` keeps listing NAME, \
marked retired.

Keep NAME's store until a sibling other than this replica lists NAME as retired: if this \
replica loses the retirement before that (restored from an older backup, or its timeline given \
up by `msite repairfork`), the family no longer knows NAME is retired and a restoration may wait \
for it. Then start NAME again (making no changes), and retire it anew once its last packets are \
imported here.",
    after_help = "Examples:\n  # sanfran is closed for good; boston created it\n  msite -C boston rmreplica sanfran\n  msite -C boston chmaster --all --from sanfran\n  msite -C boston syncreplica export --all\n\n  # bangalore closes itself down after handing over its branch type\n  msite -C bangalore chmaster brtype:rel boston\n  msite -C bangalore rmreplica bangalore\n  msite -C bangalore syncreplica export --all"
)]
pub struct Rmreplica {
    /// The replica to retire (`msite lsreplica` lists them).
    pub name: String,
}

impl Rmreplica {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        let done = r.rmreplica(&self.name)?;
        let name = util::esc(&self.name);
        ctx.say(format!(
            "Retired replica {name}: the family keeps its entries up to {} and refuses its packets from now on; the retirement reaches the siblings with the next packets (msite syncreplica export --all).",
            done.last
        ));
        let left = r.view().mastered_by(&done.replica)?.len();
        if left > 0 && done.replica != r.id() {
            ctx.say(format!(
                "{name} still masters {left} object(s); take them over with `msite chmaster --all --from {name}`."
            ));
        }
        Ok(())
    }
}
