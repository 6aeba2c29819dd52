//! Backup and restore: `backup`, `restore`, `restorereplica`, `check`.
//!
//! A backup directory holds `store/` (written by the engine's own online backup tool) and
//! `backup.json`, a manifest naming the family, the replica, the engine and the own row at the
//! time of the backup. `restore` refuses a directory without a complete manifest and a backup of
//! another replica than the one whose site it would overwrite; its steps are in [`restore`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use msite_core::incarnation_text;
use msite_core::store::Store;
use msite_core::Replica;
use serde::{Deserialize, Serialize};

use super::names;
use super::restore::{self, Existing};
use crate::backend::{AnyStore, BackendKind};
use crate::site::{open_site, Ctx, SiteConfig, SitePaths, SITE_FILE, SITE_FORMAT};
use crate::util;

/// The manifest's file name.
pub const MANIFEST: &str = "backup.json";

/// `backup.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `msite-backup`.
    pub kind: String,
    /// Format version of this file.
    pub format: u32,
    /// Family id (hex).
    pub family_id: String,
    /// Family name.
    pub family_name: String,
    /// Replica id (hex).
    pub replica_id: String,
    /// Replica name.
    pub replica_name: String,
    /// Storage engine.
    pub backend: String,
    /// When the backup was taken (UTC).
    pub time: String,
    /// When the backup was taken (ms since the Unix epoch).
    pub time_ms: u64,
    /// The own row at the time of the backup, by replica name.
    pub own_row: serde_json::Map<String, serde_json::Value>,
    /// The replica's incarnation at the time of the backup.
    pub incarnation: u64,
}

impl Manifest {
    /// Reads `BACKUP/backup.json`, refusing a directory that is not a backup.
    pub fn read(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            anyhow::anyhow!(
                "{} is not an msite backup (it has no {MANIFEST}); give the directory that `msite backup` wrote",
                dir.display()
            )
        })?;
        let m: Manifest = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; this backup cannot be trusted",
                path.display()
            )
        })?;
        if m.kind != "msite-backup" {
            bail!("{} is not an msite backup manifest", path.display());
        }
        m.check_fields(&path)?;
        if !dir.join("store").is_dir() {
            bail!(
                "the backup in {} has no store/ directory; it is incomplete",
                dir.display()
            );
        }
        Ok(m)
    }

    /// Refuses a manifest of a newer format or with a malformed identity.
    fn check_fields(&self, path: &Path) -> anyhow::Result<()> {
        let bad = |what: &str| {
            anyhow::anyhow!(
                "{} is incomplete ({what}); this backup cannot be trusted",
                path.display()
            )
        };
        if self.format > SITE_FORMAT {
            bail!(
                "{} has format {}, newer than this msite understands ({SITE_FORMAT}); use a newer msite",
                path.display(),
                self.format
            );
        }
        if msite_core::FamilyId::from_hex(&self.family_id).is_none() {
            return Err(bad("family_id is not a family id"));
        }
        if msite_core::ReplicaId::from_hex(&self.replica_id).is_none() {
            return Err(bad("replica_id is not a replica id"));
        }
        if self.replica_name.is_empty() || self.family_name.is_empty() {
            return Err(bad("a name is empty"));
        }
        Ok(())
    }

    /// The engine that wrote the backup, refused when this build lacks it.
    pub fn backend_kind(&self, dir: &Path) -> anyhow::Result<BackendKind> {
        let kind: BackendKind = self
            .backend
            .parse()
            .map_err(|e: String| anyhow::anyhow!("{}: {e}", dir.join(MANIFEST).display()))?;
        kind.ensure_compiled().with_context(|| {
            format!(
                "the backup {} was written by the {kind} backend",
                dir.display()
            )
        })?;
        Ok(kind)
    }
}

/// `msite backup`.
#[derive(Debug, Args)]
#[command(
    long_about = "Writes a backup of the site's store into DEST with the storage engine's own \
online backup tool (SQLite's backup API, RocksDB's checkpoints), consistent while the site \
stays in use, plus DEST/backup.json naming the replica, the engine and the own row at the time. \
DEST must not exist or be empty. The backup is written beside it as .NAME.msite-partial and \
renamed to DEST only when whole, so DEST never holds half a backup; what an interrupted backup \
left there is removed by the next backup to DEST.",
    after_help = "Example:\n  msite -C sanfran backup /backups/sanfran-2024-06-01\n  msite restore /backups/sanfran-2024-06-01 sanfran   # after losing the store"
)]
pub struct Backup {
    /// The new backup directory.
    pub dest: PathBuf,
}

impl Backup {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        if self.dest.exists()
            && std::fs::read_dir(&self.dest)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            bail!(
                "{} already exists and is not empty; give a new directory for the backup",
                self.dest.display()
            );
        }
        let staging = staging_dir(&self.dest)?;
        remove_leftover(&staging)?;
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))?;
        let own = r.own_row()?;
        let now = ctx.env().now_ms();
        let pb = util::spinner(ctx, format!("backing up {}", r.name()));
        let res = r.store().backup(&staging.join("store"));
        pb.finish_and_clear();
        res.with_context(|| format!("cannot back up {} into {}", r.name(), staging.display()))?;
        let m = Manifest {
            kind: "msite-backup".into(),
            format: SITE_FORMAT,
            family_id: r.family().to_hex(),
            family_name: r.family_name().to_string(),
            replica_id: r.id().to_hex(),
            replica_name: r.name(),
            backend: r.store().kind().name().into(),
            time: util::utc_time(now),
            time_ms: now,
            own_row: names::row_json(r, &own),
            incarnation: r.status()?.incarnation,
        };
        write_manifest(&staging, &m)?;
        publish(&staging, &self.dest)?;
        ctx.say(format!(
            "Backed up replica {} ({} store, own row {}) into {}.",
            util::esc(&r.name()),
            m.backend,
            util::esc(&names::row(r, &own)),
            self.dest.display()
        ));
        Ok(())
    }
}

/// Where `msite backup DEST` writes before the backup is whole: `.NAME.msite-partial` beside
/// DEST, so DEST itself only ever appears complete (a killed backup leaves this directory,
/// which the next backup to DEST removes, and DEST free).
fn staging_dir(dest: &Path) -> anyhow::Result<PathBuf> {
    let Some(name) = dest.file_name() else {
        bail!(
            "{} does not name a directory to create; give a new directory for the backup",
            dest.display()
        );
    };
    let mut staged = std::ffi::OsString::from(".");
    staged.push(name);
    staged.push(".msite-partial");
    Ok(dest.with_file_name(staged))
}

/// Removes what a killed backup left in `staging` (the directory is named for this DEST only).
fn remove_leftover(staging: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(staging) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot remove {}, left by an interrupted backup",
                staging.display()
            )
        }),
    }
}

/// Writes `backup.json` into `dir` durably.
fn write_manifest(dir: &Path, m: &Manifest) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = dir.join(MANIFEST);
    let mut text = serde_json::to_string_pretty(m)?;
    text.push('\n');
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Gives the whole backup in `staging` its name `dest` (an empty `dest` is replaced).
fn publish(staging: &Path, dest: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", dest.display())),
    }
    std::fs::rename(staging, dest)
        .with_context(|| format!("cannot rename {} to {}", staging.display(), dest.display()))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::site::sync_dir(parent)
}

/// `msite restore`.
#[derive(Debug, Args)]
#[command(
    long_about = "Makes the site in DIR from a backup written by `msite backup`, after the site's \
storage was lost or damaged. DIR may be empty or hold the same replica's site; a backup of \
another replica or family is refused.\n\n\
The whole backup is checked before the site is touched: its backup.json, the engine's integrity \
check of a copy restored next to the site's store, and the identity of the replica in it. Only \
then does the copy take the store's place, by renames, so that a crash leaves the old store or \
the new one. The old store is moved aside (store.damaged-TIME when damaged, \
store.replaced-TIME otherwise), never deleted.\n\n\
A store in normal operation is not replaced without --force: restoring it drops the site's own \
changes that no sibling holds, which the restore lists. A store that is damaged, restored, \
recovering or locked is replaced without --force.\n\n\
The restored store is marked restored: it refuses local changes, exports and imports until \
`msite restorereplica` starts the restoration procedure, which recovers what the backup lacks \
from the siblings.",
    after_help = "Example:\n  msite restore /backups/sanfran-2024-06-01 /srv/msite/sanfran\n  msite -C /srv/msite/sanfran restorereplica\n  msite restore --force /backups/sanfran-2024-06-01 sanfran   # replace a store in normal operation\n  msite restore /backups/sanfran-2024-06-01 sanfran --url 'host=db2.sanfran.example dbname=msite_sanfran'   # PostgreSQL, onto another server"
)]
pub struct Restore {
    /// The backup directory (written by `msite backup`).
    pub backup: PathBuf,
    /// The site directory to restore (default: -C DIR or the current directory).
    pub dir: Option<PathBuf>,
    /// Replace a store in normal operation (its own changes no sibling holds are lost).
    #[arg(long)]
    pub force: bool,
    /// PostgreSQL: the server (and, with dbname=…, the new database) to restore into, when the
    /// backed-up store's server is lost (default: a new database beside the old one).
    #[arg(long, value_name = "CONNINFO")]
    pub url: Option<String>,
}

impl Restore {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let dir = self.dir.clone().unwrap_or_else(|| ctx.dir.clone());
        let m = Manifest::read(&self.backup)?;
        let kind = m.backend_kind(&self.backup)?;
        let site = self.site_config(&dir, &m)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let paths = SitePaths::new(&dir);
        restore::clean_leftovers(ctx, &paths)?;
        let old_kind = match &site {
            Some(cfg) => cfg.backend_kind()?,
            None => kind,
        };
        let (old, held_open) = restore::assess(old_kind, &paths.store(), ctx.env())?;
        if let Existing::Healthy { name, unheld } = &old {
            if !self.force {
                return Err(restore::refuse_healthy(&dir, name, unheld));
            }
        }
        let staged = restore::stage(ctx, kind, &self.backup, &m, &paths, self.url.as_deref())?;
        self.say_old(ctx, &dir, &old);
        // Closed before it is renamed: an engine may reach its files by path when closing.
        drop(held_open);
        if let Some(aside) = restore::switch(&paths, &old, ctx.env().now_ms())? {
            ctx.say(format!("Moved the old store aside to {}.", aside.display()));
        }
        if site.as_ref() != Some(&staged.config) {
            staged.config.write(&dir)?;
        }
        paths.make_bays()?;
        ctx.say(format!(
            "Restored replica {} of family {} in {} from the backup of {} (own row then: {}).",
            staged.config.replica_name,
            staged.config.family_name,
            dir.display(),
            m.time,
            staged.own_row
        ));
        ctx.say(format!(
            "The store is marked restored: it refuses local changes and exports until `msite restorereplica` runs (msite -C {} restorereplica).",
            dir.display()
        ));
        Ok(())
    }

    /// The site's `site.json`, if it has one, refused unless it names the backup's replica.
    fn site_config(&self, dir: &Path, m: &Manifest) -> anyhow::Result<Option<SiteConfig>> {
        if !dir.join(SITE_FILE).exists() {
            return Ok(None);
        }
        let cfg = SiteConfig::read(dir)?;
        if (&cfg.family_id, &cfg.replica_id, &cfg.replica_name)
            != (&m.family_id, &m.replica_id, &m.replica_name)
        {
            bail!(
                "{} is a backup of replica {} of family {}, but {} holds replica {} of family {}; restore it into {}'s site or an empty directory",
                self.backup.display(),
                m.replica_name,
                m.family_name,
                dir.display(),
                cfg.replica_name,
                cfg.family_name,
                m.replica_name
            );
        }
        Ok(Some(cfg))
    }

    /// Says what becomes of the store being replaced.
    fn say_old(&self, ctx: &Ctx, dir: &Path, old: &Existing) {
        match old {
            Existing::Absent => {}
            Existing::Damaged(why) => ctx.say(format!(
                "The old store in {} is damaged ({why}); replacing it.",
                dir.display()
            )),
            Existing::Standby(state) => ctx.say(format!(
                "The old store in {} is {state}; replacing it.",
                dir.display()
            )),
            Existing::Healthy { name, unheld } if unheld.count > 0 => ctx.say(format!(
                "Replacing the healthy store of {name} (--force): its {} are lost to the family (they were not exported first).",
                restore::describe_unheld(unheld)
            )),
            Existing::Healthy { name, .. } => ctx.say(format!(
                "Replacing the healthy store of {name} (--force): every own change of it is held by a sibling."
            )),
        }
    }
}

/// `msite restorereplica`.
#[derive(Debug, Args)]
#[command(
    long_about = "Starts the restoration procedure of a replica restored from backup: gives it a \
new incarnation, and sends a restore request in every packet it exports until every awaited \
sibling (all of them by default, or those named with --wait-for) has sent back what the backup \
lacks. Until then the replica is locked: only `msite syncreplica import` changes it. When the \
last awaited sibling's update is imported, it prints `Database NAME is unlocked after \
restoration.`\n\n\
Run again while recovering to change the awaited set (the incarnation stays). --override \
completes at once without waiting: it lists the siblings it stops waiting for and asks for \
--yes when none has answered. Entries the backup lacks may then be lost, and a number may be \
used twice: the hash chains report such a fork, and `msite repairfork` repairs it.",
    after_help = "Example:\n  msite -C sanfran restorereplica\n  msite -C sanfran syncreplica export --to boston\n  msite -C sanfran restorereplica --wait-for boston   # amend: wait for boston only\n  msite -C sanfran restorereplica --also-wait-for 3f6d0c1e2a4b5c6d7e8f90a1b2c3d4e5   # and for a replica made here after the backup (its id)"
)]
pub struct Restorereplica {
    /// Wait only for these siblings, by name or by id (default: all siblings this store knows
    /// of; a sibling created after the backup that no other sibling has heard of must be named
    /// by its id).
    #[arg(long, value_name = "NAME", num_args = 1..)]
    pub wait_for: Vec<String>,
    /// Wait for every sibling this store knows of (the default) and also for these, by name or
    /// by id: replicas this site created after the backup, which the restored store cannot
    /// know and which no other sibling may have heard of yet.
    #[arg(long, value_name = "ID", num_args = 1.., conflicts_with = "wait_for")]
    pub also_wait_for: Vec<String>,
    /// Complete now without waiting (entries not yet recovered may be lost). Lists the
    /// siblings it stops waiting for; asks for --yes when none of them has answered.
    #[arg(long = "override")]
    pub override_: bool,
    /// With --override: complete even though no sibling has answered.
    #[arg(long, requires = "override_")]
    pub yes: bool,
}

impl Restorereplica {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        let resolve = |names: &[String]| -> anyhow::Result<Vec<msite_core::ReplicaId>> {
            let mut ids = Vec::new();
            for n in names {
                ids.push(match r.view().replica_by_name(n) {
                    Ok(id) => id,
                    // A sibling this store never heard of (created from this replica after
                    // the backup) can only be named by its id.
                    Err(e) => msite_core::ReplicaId::from_hex(n).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{e}. If {n} was created after this backup, this store cannot know \
its name: give its id instead (`msite -C SITE lsreplica --long` at that site shows it)."
                        )
                    })?,
                });
            }
            Ok(ids)
        };
        if self.override_ && !self.override_confirmed(ctx, r)? {
            return Ok(());
        }
        let start = if self.also_wait_for.is_empty() {
            r.restorereplica(&resolve(&self.wait_for)?, self.override_)?
        } else {
            r.restorereplica_also(&resolve(&self.also_wait_for)?, self.override_)?
        };
        let name = util::esc(&r.name());
        if start.amended {
            ctx.say(format!(
                "Amended the restoration of {name} (incarnation {} unchanged).",
                incarnation_text(start.incarnation)
            ));
        } else {
            ctx.say(format!(
                "Started the restoration of {name}: new incarnation {}.",
                incarnation_text(start.incarnation)
            ));
        }
        if start.completed {
            ctx.say(format!("Database {name} is unlocked after restoration."));
        } else {
            ctx.say(format!(
                "Waiting for recovery updates from: {}.",
                util::esc(&start.awaiting.join(", "))
            ));
            ctx.say(format!(
                "{name} is locked until then. Send the restore request to its siblings (msite -C {} syncreplica export --all, or --to the hub) and import their answers.",
                ctx.dir.display()
            ));
        }
        Ok(())
    }
}

impl Restorereplica {
    /// `--override`: says which siblings the restoration stops waiting for and what each one
    /// answered; false (nothing changed) when none answered and `--yes` was not given.
    fn override_confirmed(&self, ctx: &Ctx, r: &Replica<AnyStore>) -> anyhow::Result<bool> {
        let st = r.status()?;
        let rec = st
            .recovering
            .filter(|_| !st.restored && st.rolled_back.is_none());
        let (awaited, acks) = match rec {
            Some(rec) => (rec.awaited.keys().copied().collect(), rec.acks),
            None => (
                r.known_siblings()?.into_iter().collect::<Vec<_>>(),
                Default::default(),
            ),
        };
        if awaited.is_empty() {
            return Ok(true);
        }
        let name = util::esc(&r.name());
        let own = r.own_row()?.get(&r.id());
        ctx.say(format!(
            "--override completes the restoration of {name} without waiting for:"
        ));
        for s in &awaited {
            let sib = util::esc(&r.replica_name(s));
            ctx.say(match acks.get(s) {
                Some(held) => format!("  {sib}: answered, holds {name}'s changes up to {held} (this store has {own})"),
                None => format!("  {sib}: no answer yet; changes of {name} it holds above {own} would be numbered again here (a fork: `msite repairfork`)"),
            });
        }
        if acks.is_empty() && !self.yes {
            ctx.say("No sibling has answered: nothing changed. Run again with --yes to complete anyway.");
            return Ok(false);
        }
        Ok(true)
    }
}

/// `msite check`.
#[derive(Debug, Args)]
#[command(
    long_about = "Runs the storage engine's own integrity checker over the site's store \
(SQLite's integrity_check, RocksDB's checksum verification) and reports damage. A damaged store \
is best replaced: `msite restore` a backup, then `msite restorereplica`.",
    after_help = "Example:\n  msite -C sanfran check"
)]
pub struct Check {}

impl Check {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = open_site(&ctx.dir, ctx.env())?;
        let r = &site.replica;
        if let Some(m) = site.config.mismatch(r, &ctx.dir, true) {
            bail!(m);
        }
        let pb = util::spinner(ctx, "checking the store");
        let res = r.store().check_integrity();
        pb.finish_and_clear();
        res.with_context(|| {
            format!(
                "the store of {} in {} is damaged; restore it from a backup (`msite restore BACKUP {}`) and run `msite restorereplica`",
                r.name(),
                ctx.dir.display(),
                ctx.dir.display()
            )
        })?;
        ctx.say(format!(
            "The {} store of {} is intact.",
            r.store().kind(),
            util::esc(&r.name())
        ));
        Ok(())
    }
}
