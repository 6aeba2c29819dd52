//! `msite repairfork`: the operator's decision between two forked timelines of one origin
//! (docs/protocol.md "Divergence and fork repair"), and the files of what was given up.
//!
//! The decision is recorded here and travels in every packet (core's `fork.rs`); each site
//! that gives up entries keeps them with their content until `--dump` writes them out, one
//! text file per entry (and the content of each check-in beside it) for the operator to
//! re-apply by hand.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use msite_core::{Entry, GivenUp, KeepTimeline, Op, Replica, ReplicaId};

use crate::backend::AnyStore;
use crate::site::Ctx;
use crate::util;

/// How many of the entries given up are listed before asking for `--yes`.
const LISTED: usize = 10;

/// Which timeline is kept, seen from this site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Keep {
    /// The timeline this site holds: every other entry under that number is given up.
    This,
    /// The other one: this site's entry under that number, and what follows it, is given up.
    Other,
}

/// `msite repairfork`.
#[derive(Debug, Args)]
#[command(
    long_about = "Repairs a fork: two timelines of one replica's history that the family holds \
under the same numbers (after `restorereplica --override`, a partial --wait-for, or a store put \
back without `msite restore`), which makes imports refuse packets as divergent for good. Run it \
at a site that holds one of the two timelines, with the origin and the number the divergent \
refusal names (the first number where the timelines differ: compare `msite lshistory` at both \
sites when unsure), and say which timeline the family keeps. The decision travels in every \
packet from now on; each site that holds the other timeline gives up its entries from that \
number on, keeps them with their content, and then accepts the kept timeline. A site that gives \
up changes of its own is locked until `msite restorereplica` gets the kept ones back.\n\n\
Nothing is dropped silently: --dump DIR writes every entry given up at this site (one text file \
each, and the content of each check-in) to re-apply by hand. Giving up entries here asks for \
--yes after listing them. Without arguments it lists the decisions this site holds and how many \
given-up entries wait to be written out.",
    after_help = "Example:\n  msite -C boston syncreplica import   # refused: divergent history: sanfran 42\n  msite -C boston repairfork --origin sanfran --number 42 --keep this\n  msite -C boston syncreplica export --all\n  msite -C sanfran syncreplica import   # gives up its timeline B, then: msite -C sanfran restorereplica\n  msite -C sanfran repairfork --dump given-up   # the changes of timeline B, to re-apply by hand"
)]
pub struct Repairfork {
    /// The replica whose history forked, by name or id.
    #[arg(long, value_name = "NAME", requires_all = ["number", "keep"])]
    pub origin: Option<String>,
    /// The first number under which the timelines differ (the divergent refusal names it).
    #[arg(long, value_name = "N", requires = "origin")]
    pub number: Option<u64>,
    /// Which timeline the family keeps: `this` (the one this site holds) or `other`.
    #[arg(long, value_enum, requires = "origin")]
    pub keep: Option<Keep>,
    /// Write every entry given up at this site to DIR (then forget them here).
    #[arg(long, value_name = "DIR")]
    pub dump: Option<PathBuf>,
    /// Give up this site's entries without asking again.
    #[arg(long)]
    pub yes: bool,
}

impl Repairfork {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        if let (Some(origin), Some(number), Some(keep)) = (&self.origin, self.number, self.keep) {
            let origin = replica_id(r, origin)?;
            let keep = match keep {
                Keep::This => KeepTimeline::This,
                Keep::Other => KeepTimeline::Other,
            };
            if !self.confirmed(ctx, r, &origin, number, keep)? {
                return Ok(());
            }
            self.decide(ctx, r, &origin, number, keep)?;
        } else if self.dump.is_none() {
            show_decisions(ctx, r)?;
        }
        let given = r.given_up_entries()?;
        match &self.dump {
            Some(dir) => {
                write_dump(r, dir, &given)?;
                r.forget_given_up()?;
                ctx.say(format!(
                    "Wrote {} given-up entries to {} (see its README.txt).",
                    given.len(),
                    dir.display()
                ));
            }
            None if !given.is_empty() => ctx.say(format!(
                "{} given-up entries are kept here; write them out with `msite -C {} repairfork --dump DIR`.",
                given.len(),
                ctx.dir.display()
            )),
            None => {}
        }
        Ok(())
    }

    /// Lists what this site gives up; true when it may go ahead (nothing, or `--yes`).
    fn confirmed(
        &self,
        ctx: &Ctx,
        r: &Replica<AnyStore>,
        origin: &ReplicaId,
        number: u64,
        keep: KeepTimeline,
    ) -> anyhow::Result<bool> {
        let lose = r.fork_preview(origin, number, keep)?;
        if lose.is_empty() || self.yes {
            return Ok(true);
        }
        ctx.say(format!(
            "Keeping the other timeline gives up {} entries of {} here (numbers {}..={}):",
            lose.len(),
            util::esc(&r.replica_name(origin)),
            number,
            lose.last().map(|e| e.number).unwrap_or(number)
        ));
        for e in lose.iter().take(LISTED) {
            ctx.say(format!("  {}", describe(r, e)));
        }
        if lose.len() > LISTED {
            ctx.say(format!("  … and {} more", lose.len() - LISTED));
        }
        ctx.say("They are kept for `--dump DIR` and never dropped silently. Run again with --yes to give them up.");
        Ok(false)
    }

    fn decide(
        &self,
        ctx: &Ctx,
        r: &Replica<AnyStore>,
        origin: &ReplicaId,
        number: u64,
        keep: KeepTimeline,
    ) -> anyhow::Result<()> {
        let done = r.repair_fork(origin, number, keep)?;
        let which = if done.decision.keep {
            "this site's"
        } else {
            "the other"
        };
        ctx.say(format!(
            "Decided: the family keeps {which} timeline of {} from number {number}; every packet from {} carries the decision.",
            util::esc(&r.replica_name(origin)),
            util::esc(&r.name())
        ));
        if done.given_up > 0 {
            ctx.say(format!("Gave up {} entries here.", done.given_up));
        }
        if done.locked {
            ctx.say(format!(
                "{} is locked: run `msite -C {} restorereplica` to get the kept entries back from the siblings.",
                util::esc(&r.name()),
                ctx.dir.display()
            ));
        }
        Ok(())
    }
}

/// Without arguments: the fork decisions this site holds (and carries in every packet).
fn show_decisions(ctx: &Ctx, r: &Replica<AnyStore>) -> anyhow::Result<()> {
    let ds = r.fork_decisions()?;
    if ds.is_empty() {
        ctx.say("No fork decisions. To repair a fork: msite repairfork --origin NAME --number N --keep this|other");
    }
    for d in ds {
        let hash: String = d.hash[..4].iter().map(|b| format!("{b:02x}")).collect();
        let verb = if d.keep { "keeps" } else { "gives up" };
        ctx.say(format!(
            "Fork of {} at {}: the family {verb} the timeline whose entry there is {hash}… (decided at {}, {}).",
            util::esc(&r.replica_name(&d.origin)),
            d.number,
            util::esc(&r.replica_name(&d.decided_by)),
            msite_core::utc_millis(d.decided_ms)
        ));
    }
    Ok(())
}

/// A replica by name, or by id (one this store knows only by id).
fn replica_id(r: &Replica<AnyStore>, name: &str) -> anyhow::Result<ReplicaId> {
    match r.view().replica_by_name(name) {
        Ok(id) => Ok(id),
        Err(e) => ReplicaId::from_hex(name).ok_or_else(|| {
            anyhow::anyhow!("{e}; name the origin as the divergent refusal does, or by its id")
        }),
    }
}

/// One line about an entry, in the operator's words.
fn describe(r: &Replica<AnyStore>, e: &Entry) -> String {
    let what = match &e.op {
        Op::MkElem { path, .. } => format!("mkelem {}", util::esc(path)),
        Op::Checkin {
            version,
            size,
            author,
            comment,
            ..
        } => format!(
            "checkin version {version} ({size} bytes) by {} \"{}\"",
            util::esc(author),
            util::esc(comment)
        ),
        other => other.name().to_string(),
    };
    format!(
        "{} {}: {what}",
        util::esc(&r.replica_name(&e.origin)),
        e.number
    )
}

/// Writes one text file per given-up entry (and the content of each check-in beside it) and
/// a README listing them, into `dir` (created if missing).
fn write_dump(r: &Replica<AnyStore>, dir: &Path, given: &[GivenUp]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut readme = String::from(
        "Entries given up by a fork repair (msite repairfork), to re-apply by hand.\n\
         Each NAME-NUMBER.txt describes one; NAME-NUMBER.content is a check-in's content\n\
         (re-apply with `msite checkin PATH NAME-NUMBER.content` at the site that masters the branch).\n\n",
    );
    for g in given {
        let stem = format!("{}-{}", r.replica_name(&g.entry.origin), g.entry.number);
        let line = describe(r, &g.entry);
        std::fs::write(
            dir.join(format!("{stem}.txt")),
            format!("{line}\n\n{:#?}\n", g.entry),
        )
        .with_context(|| format!("cannot write {stem}.txt in {}", dir.display()))?;
        if let Some(c) = &g.content {
            std::fs::write(dir.join(format!("{stem}.content")), c)
                .with_context(|| format!("cannot write {stem}.content in {}", dir.display()))?;
        }
        readme.push_str(&line);
        readme.push('\n');
    }
    let mut f = std::fs::File::create(dir.join("README.txt"))
        .with_context(|| format!("cannot write README.txt in {}", dir.display()))?;
    f.write_all(readme.as_bytes())?;
    Ok(())
}
