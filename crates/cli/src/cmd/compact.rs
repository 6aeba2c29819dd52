//! `msite compact`: packs the site's store with the storage engine's own tool
//! ([`Store::compact`]), as `git gc` packs a repository, and says what it took before and after.

use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Args;
use msite_core::store::Store;
use serde_json::json;

use crate::site::Ctx;
use crate::util;

/// `msite compact`.
#[derive(Debug, Args)]
#[command(
    long_about = "Packs the site's store with the storage engine's own tool and hands the space \
of deleted and overwritten rows back to the file system: RocksDB compacts everything into its \
compressed bottom level (recently written data sits uncompressed until then), SQLite and \
PostgreSQL run VACUUM (PostgreSQL: VACUUM FULL). No data changes. Run it after `msite scrub` \
has dropped history, or now and then on a busy site, as `git gc` is run on a repository.\n\n\
It needs free space for a second copy of what stays. Other commands on the site wait while \
SQLite or PostgreSQL rewrites the store.",
    after_help = "Example:\n  msite -C boston compact"
)]
pub struct Compact {
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

impl Compact {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        if let Some(m) = site.config.mismatch(r, &ctx.dir, true) {
            bail!(m);
        }
        let store = r.store();
        let before = store.size_on_disk()?;
        let started = Instant::now();
        let pb = util::spinner(ctx, "compacting the store");
        let res = store.compact();
        pb.finish_and_clear();
        res.with_context(|| {
            format!(
                "compacting the store of {} in {} failed; nothing in it changed (if the disk is \
                 full, free space for a second copy of the store and run it again)",
                util::esc(&r.name()),
                ctx.dir.display()
            )
        })?;
        let secs = started.elapsed().as_secs_f64();
        let after = store.size_on_disk()?;
        if self.json {
            return ctx.json(&json!({
                "replica": r.name(),
                "backend": store.kind().to_string(),
                "bytes_before": before,
                "bytes_after": after,
                "seconds": secs,
            }));
        }
        ctx.say(format!(
            "Compacted the {} store of {}: {} before, {} now, in {secs:.1} s.",
            store.kind(),
            util::esc(&r.name()),
            util::human_size(before),
            util::human_size(after),
        ));
        Ok(())
    }
}
