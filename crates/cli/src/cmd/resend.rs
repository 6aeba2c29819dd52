//! `msite resend-interval`: how long an export waits before it sends again the entries a
//! sibling has not acknowledged, when the sibling reported no gap (docs/protocol.md §5,
//! "Resends"). The setting is local to the site, for every sibling or for one.

use clap::Args;
use msite_core::keys::DEFAULT_RESEND_MS;

use super::sync::sibling_by_name;
use crate::site::Ctx;
use crate::util;

/// `msite resend-interval`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows or sets the resend interval. An export with nothing new sends again the \
entries a sibling has not acknowledged only when the sibling has reported a gap (a later packet \
arrived, an earlier one did not), or when this long has passed since the last packet that \
carried entries to it; otherwise it writes nothing (or a small probe), so exporting every hour \
to a sibling that answers once a day ships each change once. A packet lost with no later one \
behind it is resent after the interval. Default 6h; with --to, for one sibling only.",
    after_help = "Example:\n  msite -C boston resend-interval\n  msite -C boston resend-interval 2h\n  msite -C boston resend-interval 30m --to bangalore"
)]
pub struct ResendInterval {
    /// The new interval: a number with s, m, h or d (none: show the current one).
    #[arg(value_parser = util::parse_duration_ms)]
    pub interval: Option<u64>,
    /// Set or show the interval for this sibling only (`msite lsreplica` lists them).
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
}

impl ResendInterval {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        let target = match &self.to {
            Some(name) => Some(sibling_by_name(r, name)?),
            None => None,
        };
        if let Some(ms) = self.interval {
            r.set_resend_ms(target.as_ref(), ms)?;
        }
        let (ms, whom) = match &target {
            Some(t) => (
                r.resend_ms(t)?,
                format!("to {}", util::esc(&r.replica_name(t))),
            ),
            None => (r.site_resend_ms()?, "to its siblings".to_string()),
        };
        let default = if ms == DEFAULT_RESEND_MS {
            " (the default)"
        } else {
            ""
        };
        ctx.say(format!(
            "{} resends unacknowledged entries {whom} after {}{default}, or at once when a gap is reported.",
            util::esc(&r.name()),
            util::duration_text(ms)
        ));
        Ok(())
    }
}
