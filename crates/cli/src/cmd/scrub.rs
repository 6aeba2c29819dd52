//! `msite scrub`: oplog retention on demand (docs/protocol.md §9). Sets the restore window
//! (kept in the store) and drops the oplog entries every sibling holds and held one window
//! ago, printing per origin what was dropped and why the rest is kept.

use clap::Args;
use msite_core::retain::{parse_window, window_text, ScrubReport};
use serde_json::json;

use crate::site::Ctx;

/// `msite scrub`.
#[derive(Debug, Args)]
#[command(
    long_about = "Drops oplog entries this replica no longer needs, so that its store does not \
grow for ever. An entry is dropped only when every sibling has said, in its own packets, that \
it holds it, and had already said so one restore window ago: a sibling restored from a backup \
younger than the window still gets back everything it lost. The versioned files and the \
digest do not change; what is dropped is only the history siblings already hold.\n\n\
The restore window is off by default (nothing is ever dropped). Set it with --keep to the age \
of the oldest backup you would restore from: e.g. --keep 30d when backups are kept 30 days. \
The setting stays in the store; --keep never turns retention off again. A scrub run before \
the window has passed since the first one drops nothing: it records what the siblings hold \
now, and later scrubs drop what they held then.\n\n\
A sibling that needs dropped entries (restored from a backup older than the window) is told \
so, at both ends, and must be re-created from a fresh creation packet. Once entries are \
dropped, new replicas are made at a sibling that keeps its whole history.",
    after_help = "Example:\n  msite -C boston scrub --keep 30d --dry-run\n  msite -C boston scrub --keep 30d\n  msite -C boston scrub"
)]
pub struct Scrub {
    /// Set the restore window first: a duration (30d, 12h, 90m, 45s), 0 (drop as soon as every
    /// sibling holds an entry) or never (retention off, the default).
    #[arg(long, value_name = "DURATION")]
    pub keep: Option<String>,
    /// Only say what would be dropped (under --keep's window, if given); change nothing, not
    /// even the stored window.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

impl Scrub {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let window = match &self.keep {
            Some(text) => Some(parse_window(text).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => None,
        };
        let site = ctx.open()?;
        let r = &site.replica;
        if let (Some(w), false) = (window, self.dry_run) {
            r.set_retention_window(w)?;
        }
        let report = match window {
            Some(w) => r.scrub_with_window(w, self.dry_run)?,
            None => r.scrub(self.dry_run)?,
        };
        if self.json {
            return ctx.json(&to_json(&report));
        }
        say_report(ctx, &r.name(), &report);
        Ok(())
    }
}

fn say_report(ctx: &Ctx, name: &str, report: &ScrubReport) {
    let verb = if report.dry_run {
        "would drop"
    } else {
        "dropped"
    };
    ctx.say(format!(
        "Retention at {name}: restore window {}; {verb} {} oplog {}.",
        window_text(report.window_ms),
        report.entries_dropped,
        if report.entries_dropped == 1 {
            "entry"
        } else {
            "entries"
        }
    ));
    for line in &report.origins {
        ctx.say(format!("  {}", crate::util::esc(&line.to_string())));
    }
}

fn to_json(report: &ScrubReport) -> serde_json::Value {
    let origins: Vec<serde_json::Value> = report
        .origins
        .iter()
        .map(|l| {
            json!({
                "origin": l.name,
                "held": l.held,
                "dropped_before": l.dropped_before,
                "dropped": l.dropped,
                "why": l.to_string(),
            })
        })
        .collect();
    json!({
        "window_ms": report.window_ms,
        "dry_run": report.dry_run,
        "entries_dropped": report.entries_dropped,
        "origins": origins,
    })
}
