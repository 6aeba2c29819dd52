//! `msite status`: the family at a glance from this site — per sibling the last packet in and
//! out, entries behind each way, packets waiting and refused, and the restoration state (the
//! document of [`crate::status`], the same one `msite serve` shows at `/` and `/api/status`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::site::Ctx;
use crate::status::{self, Options, DEFAULT_LATE_AFTER};
use crate::util;

/// `msite status`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows the family at a glance from this site: for each sibling the last packet \
in and out (time, result, size), the entries it lacks and this replica lacks (from the epoch \
matrix), the packets from it that wait in the incoming bay or were refused, and whether it was \
heard from within --late-after; then this replica's restoration state (restored, recovering and \
whom it awaits, rolled back) and the packets that wait, with what each needs, and those refused, \
with why. `msite serve` shows the same as a web page. --json gives the document described in \
docs/cli-json.md.",
    after_help = "Example:\n  msite -C boston status\n  msite -C boston status --json\n  msite -C boston status --late-after 2h"
)]
pub struct Status {
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
    /// Mark a sibling late when no packet from it arrived for this long (e.g. 30m, 2h, 1d;
    /// default: `late_after` of the routes file, else 1d).
    #[arg(long, value_name = "DURATION", value_parser = util::parse_duration)]
    pub late_after: Option<Duration>,
    /// The routes file to read `late_after` from (default: routes.toml in the site directory).
    #[arg(long, value_name = "FILE")]
    pub routes: Option<PathBuf>,
}

impl Status {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let late_after = match self.late_after {
            Some(d) => d,
            None => late_after_of_routes(ctx, self.routes.as_deref())?,
        };
        let site = ctx.open()?;
        let doc = status::collect(&site, &Options::now(late_after))?;
        if self.json {
            return ctx.json(&doc);
        }
        for line in status::text::lines(&doc) {
            ctx.say(line);
        }
        Ok(())
    }
}

/// `late_after` of the routes file given, or of routes.toml when the site has one.
#[cfg(feature = "serve")]
fn late_after_of_routes(ctx: &Ctx, given: Option<&std::path::Path>) -> anyhow::Result<Duration> {
    let default = ctx.dir.join(crate::serve::routes::ROUTES_FILE);
    if given.is_none() && !default.exists() {
        return Ok(DEFAULT_LATE_AFTER);
    }
    Ok(crate::serve::load_routes(ctx, given)?.late_after)
}

#[cfg(not(feature = "serve"))]
fn late_after_of_routes(_: &Ctx, given: Option<&std::path::Path>) -> anyhow::Result<Duration> {
    if given.is_some() {
        anyhow::bail!("this msite was built without `msite serve` (cargo feature `serve`) and cannot read a routes file; give --late-after instead");
    }
    Ok(DEFAULT_LATE_AFTER)
}
