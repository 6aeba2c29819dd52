//! `msite seal-policy`: the family's sealing policy (docs/protocol.md §8, "Sealing as a
//! family policy"). Unlike the site-local settings, it is replicated: an entry that reaches
//! every sibling, the latest one winning.

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::site::Ctx;
use crate::util;

/// The policies `msite seal-policy` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Seal {
    /// Every export seals each packet to its target's recipient.
    Always,
    /// Packets are sealed only when the export command asks (--encrypt-to).
    Never,
}

/// `msite seal-policy`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows or sets the family's sealing policy. With `always`, every export \
(`syncreplica export`, and `msite serve`'s shipping) seals each packet with age to its target's \
recipient, so a lost stick or a copied share shows nothing of the database; with `never`, \
packets are sealed only when the export asks (--encrypt-to). The policy is an entry of this \
replica that reaches every sibling with the next packets (the latest setting wins), and every \
replica announces its own recipient in its packets, so no recipient needs to be given by hand. \
One export can still choose: --encrypt-to seals to the recipients given, --no-encrypt writes \
in the clear. Only set `always` once every site runs an msite that knows it.",
    after_help = "Example:\n  msite -C boston seal-policy\n  msite -C boston seal-policy always\n  msite -C boston seal-policy --json"
)]
pub struct SealPolicy {
    /// The new policy (none: show the one in force).
    #[arg(value_enum)]
    pub policy: Option<Seal>,
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

impl SealPolicy {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        if let Some(p) = self.policy {
            r.set_seal_policy(p == Seal::Always)?;
        }
        let held = r.seal_policy()?;
        let policy = match &held {
            Some(p) if p.always => "always",
            _ => "never",
        };
        if self.json {
            return ctx.json(&json!({
                "policy": policy,
                "set_by": held.as_ref().map(|p| r.replica_name(&p.set_by)),
                "set_ms": held.as_ref().map(|p| p.time_ms),
            }));
        }
        let family = util::esc(r.family_name());
        ctx.say(match &held {
            Some(p) => format!(
                "Family {family} seals {} (set at {} on {}).",
                if p.always {
                    "every packet to its target's recipient"
                } else {
                    "packets only when the export asks (--encrypt-to)"
                },
                util::esc(&r.replica_name(&p.set_by)),
                msite_core::utc_seconds(p.time_ms)
            ),
            None => format!(
                "Family {family} has no sealing policy: packets are sealed only when the export asks (--encrypt-to)."
            ),
        });
        Ok(())
    }
}
