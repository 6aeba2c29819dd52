//! The steps of `msite restore` that keep a site usable whatever happens.
//!
//! The backup is restored into `store.staging` next to the site's store (same filesystem, so the
//! switch is a rename), opened, checked with the engine's integrity check, compared with its
//! manifest, marked restored and closed; only then is it renamed `store.ready`. The switch is two
//! renames: the old store aside, then `store.ready` to `store/`. A crash before the first leaves
//! the old store in place (the next restore removes the leftovers); a crash between them leaves
//! no `store/` and a `store.ready` that opening the site renames into place
//! ([`finish_interrupted_restore`]).
//!
//! A store in normal operation is replaced only when the operator says so (`--force`), after
//! being told which of its own changes no sibling is known to hold.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use msite_core::store::Store;
use msite_core::{Env, Replica, UnheldOwn};

use super::backup::{Manifest, MANIFEST};
use super::names;
use crate::backend::{AnyStore, BackendKind};
use crate::site::{finish_interrupted_restore, sync_dir, Ctx, SiteConfig, SitePaths};

/// How many of the changes a forced restore loses are listed by number and operation.
const LISTED: usize = 3;
/// Longest cause quoted when the old store is damaged.
const REASON_MAX: usize = 200;

/// What the store a restore would replace is.
pub enum Existing {
    /// No store, or an empty `store/` directory.
    Absent,
    /// Cannot be opened, or its integrity check fails (the cause, one bounded line).
    Damaged(String),
    /// Not in normal operation: restored, recovering, or locked after a rollback.
    Standby(&'static str),
    /// In normal operation: replacing it loses `unheld` for the family.
    Healthy {
        /// The replica's name.
        name: String,
        /// Its own changes no sibling is known to hold.
        unheld: UnheldOwn,
    },
}

/// The new store, checked and waiting in `store.ready`.
pub struct Staged {
    /// The site's configuration for it.
    pub config: SiteConfig,
    /// Its own row, with replica names.
    pub own_row: String,
}

/// Finishes an interrupted switch and removes what an unfinished restore left: a staging
/// directory, or a `store.ready` that never replaced the store still in place.
pub fn clean_leftovers(ctx: &Ctx, paths: &SitePaths) -> anyhow::Result<()> {
    finish_interrupted_restore(paths)?;
    for d in [paths.restore_staging(), paths.restore_ready()] {
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| {
                format!(
                    "cannot remove {}, left by an unfinished restore; remove it by hand",
                    d.display()
                )
            })?;
            ctx.say(format!(
                "Removed {}, left by an unfinished restore.",
                d.display()
            ));
        }
    }
    Ok(())
}

/// Opens the store in `store_dir` (engine `kind`) to tell what replacing it would cost, and
/// keeps it open (its lock held, so no other process starts using it) until the caller drops
/// it just before the switch. A store another process has open is refused: it is never moved
/// while in use.
pub fn assess(
    kind: BackendKind,
    store_dir: &Path,
    env: Arc<dyn Env>,
) -> anyhow::Result<(Existing, Option<AnyStore>)> {
    let empty = std::fs::read_dir(store_dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !store_dir.exists() || empty {
        return Ok((Existing::Absent, None));
    }
    // A store this build cannot open is not known to be damaged: it is never replaced unseen.
    kind.ensure_compiled().with_context(|| {
        format!(
            "cannot check the store in {} before replacing it",
            store_dir.display()
        )
    })?;
    match AnyStore::open(kind, store_dir) {
        Ok(store) => classify(store, env),
        Err(e) if is_locked(&e) => Err(e.context(format!(
            "stop the msite process using {} first",
            store_dir.display()
        ))),
        Err(e) => Ok((Existing::Damaged(reason(&e)), None)),
    }
}

fn classify(store: AnyStore, env: Arc<dyn Env>) -> anyhow::Result<(Existing, Option<AnyStore>)> {
    if let Err(e) = store.check_integrity() {
        return Ok((Existing::Damaged(reason(&e.into())), Some(store)));
    }
    let r = match Replica::open(store, env) {
        Ok(r) => r,
        Err(e) => return Ok((Existing::Damaged(reason(&e.into())), None)),
    };
    let st = r.status()?;
    let existing = if st.restored {
        Existing::Standby("restored from a backup")
    } else if st.recovering.is_some() {
        Existing::Standby("recovering")
    } else if st.rolled_back.is_some() {
        Existing::Standby("locked after a rollback")
    } else {
        Existing::Healthy {
            name: r.name(),
            unheld: r.own_entries_no_sibling_holds(LISTED)?,
        }
    };
    Ok((existing, Some(r.into_store())))
}

fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<msite_core::store::Error>(),
            Some(msite_core::store::Error::Locked { .. })
        )
    })
}

/// One bounded line without control characters.
fn reason(e: &anyhow::Error) -> String {
    let text: String = crate::error_text(e)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match text.char_indices().nth(REASON_MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// `N own changes no sibling is known to hold (numbers A-B: A op, A+1 op, …)`.
pub fn describe_unheld(u: &UnheldOwn) -> String {
    let mut listed: Vec<String> = u
        .first_entries
        .iter()
        .map(|e| format!("{} {}", e.number, e.op.name()))
        .collect();
    if u.count > listed.len() as u64 {
        listed.push("…".into());
    }
    let range = if u.first == u.last {
        format!("number {}", u.first)
    } else {
        format!("numbers {}-{}", u.first, u.last)
    };
    format!(
        "{} no sibling is known to hold ({range}: {})",
        crate::util::count(u.count, "own change", "own changes"),
        listed.join(", ")
    )
}

/// The refusal to replace a store in normal operation without `--force`.
pub fn refuse_healthy(dir: &Path, name: &str, unheld: &UnheldOwn) -> anyhow::Error {
    let loss = if unheld.count == 0 {
        "every own change of it is held by a sibling, but the restored store stays locked until `msite restorereplica` completes".to_string()
    } else {
        format!(
            "restoring would lose its {}, unless exported first (msite -C {} syncreplica export --all)",
            describe_unheld(unheld),
            dir.display()
        )
    };
    anyhow::anyhow!(
        "the store of {name} in {} is healthy and in normal operation, so it was not replaced: {loss}; give --force to replace it anyway",
        dir.display()
    )
}

/// Restores the backup into `store.staging`, checks it and renames it `store.ready`. On failure
/// removes the staging directory: the site is as it was.
pub fn stage(
    ctx: &Ctx,
    kind: BackendKind,
    backup: &Path,
    m: &Manifest,
    paths: &SitePaths,
    url: Option<&str>,
) -> anyhow::Result<Staged> {
    let staging = paths.restore_staging();
    let pb = crate::util::spinner(ctx, format!("restoring {}", m.replica_name));
    let res = build_staged(ctx, kind, backup, m, &staging, url);
    pb.finish_and_clear();
    let res = res.and_then(|staged| {
        sync_dir(&staging)?;
        std::fs::rename(&staging, paths.restore_ready())
            .with_context(|| format!("cannot rename {}", staging.display()))?;
        sync_dir(&paths.dir)?;
        Ok(staged)
    });
    if res.is_err() {
        // A partial copy is never trusted; removing it is best effort (the next restore retries).
        let _ = std::fs::remove_dir_all(&staging);
    }
    res.with_context(|| {
        format!(
            "the backup {} was not restored and the site in {} is unchanged",
            backup.display(),
            paths.dir.display()
        )
    })
}

fn build_staged(
    ctx: &Ctx,
    kind: BackendKind,
    backup: &Path,
    m: &Manifest,
    staging: &Path,
    url: Option<&str>,
) -> anyhow::Result<Staged> {
    AnyStore::restore_backup_as(kind, &backup.join("store"), staging, url)?;
    let store = AnyStore::open(kind, staging)?;
    store
        .check_integrity()
        .context("the restored copy fails the engine's integrity check")?;
    let r =
        Replica::open(store, ctx.env()).context("the restored copy holds no readable replica")?;
    let (id, family, name) = (r.id().to_hex(), r.family().to_hex(), r.name());
    if id != m.replica_id || family != m.family_id || name != m.replica_name {
        bail!(
            "its store holds replica {name} ({id}) of family {family}, not replica {} ({}) of family {} as its {MANIFEST} says; this backup cannot be trusted",
            m.replica_name,
            m.replica_id,
            m.family_id
        );
    }
    r.mark_restored()?;
    Ok(Staged {
        config: SiteConfig::of(&r, kind),
        own_row: names::row(&r, &r.own_row()?),
    })
}

/// Moves the old store aside (kept, never deleted) and `store.ready` into its place; returns
/// where the old store went.
pub fn switch(paths: &SitePaths, old: &Existing, now_ms: u64) -> anyhow::Result<Option<PathBuf>> {
    let store = paths.store();
    let aside = match old {
        Existing::Absent if store.exists() => {
            std::fs::remove_dir(&store)
                .with_context(|| format!("cannot remove the empty {}", store.display()))?;
            None
        }
        Existing::Absent => None,
        Existing::Damaged(_) => Some(paths.dir.join(format!("store.damaged-{now_ms}"))),
        Existing::Standby(_) | Existing::Healthy { .. } => {
            Some(paths.dir.join(format!("store.replaced-{now_ms}")))
        }
    };
    if let Some(a) = &aside {
        std::fs::rename(&store, a)
            .with_context(|| format!("cannot move the old store aside to {}", a.display()))?;
        sync_dir(&paths.dir)?;
    }
    finish_interrupted_restore(paths)?;
    if !store.is_dir() {
        bail!(
            "the new store did not take the place of {}; run `msite restore` again",
            store.display()
        );
    }
    Ok(aside)
}
