//! The command tree: [`Cli`] (global options) and [`Command`] (one variant per command), with
//! one module per command group. Every command's `run` only parses its input, calls
//! `msite-core`, and prints what happened.

pub mod backup;
pub mod compact;
pub mod demo;
pub mod family;
pub mod fork;
pub mod keys;
pub mod lspacket;
pub mod resend;
pub mod restore;
pub mod scrub;
pub mod sealpolicy;
pub mod status;
pub mod sync;
pub mod tools;
pub mod vob;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::site::Ctx;

const ABOUT: &str = "msite: store-and-forward replication of a versioned database across sites";

const LONG_ABOUT: &str = "\
msite keeps several replicas of one versioned database (a family) in step across sites that \
exchange packets by any means: a shared directory, rsync, a USB stick. Each site develops on the \
branches it masters; `msite syncreplica export` writes what a sibling lacks into a packet, and \
`msite syncreplica import` applies the packets that arrive. A site lost to a disk failure is \
restored from a backup and recovers what it lost from its siblings (`msite restore`, \
`msite restorereplica`).

Every command works on the site in the current directory, or the one given with -C DIR.";

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  error, or a packet was refused (the message says why and what to do)
  2  usage error (unknown command or option)
  3  some packets must wait for others (they stay in the incoming bay)
  4  serve --once, export --ship: a packet is past its route's expiry (it stays queued)

Example: see the whole product at work in a temporary directory
  msite demo
  msite init boston --family proj --replica boston
  msite -C boston mkreplica export sanfran --encrypt-to age1… --key 3f1c…(both from msite identity --new at sanfran)";

/// The `msite` command line.
#[derive(Debug, Parser)]
#[command(
    name = "msite",
    version = crate::VERSION.as_str(),
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true,
    arg_required_else_help = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Work on the site in DIR instead of the current directory.
    #[arg(
        id = "site_dir",
        short = 'C',
        long = "site",
        value_name = "DIR",
        global = true
    )]
    pub dir: Option<PathBuf>,
    /// More log output on stderr (-v: steps, -vv: debugging); RUST_LOG works too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Never draw progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// While another process (a command, a daemon's round) holds the site's store, wait up to
    /// SECONDS for it before giving up; 0 fails at once.
    #[arg(
        long = "wait",
        value_name = "SECONDS",
        global = true,
        env = "MSITE_WAIT",
        default_value = "10",
        value_parser = parse_seconds
    )]
    pub wait: std::time::Duration,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether the command is the daemon (`msite serve`), which logs its steps.
    pub fn is_daemon(&self) -> bool {
        #[cfg(feature = "serve")]
        if let Command::Serve(_) = self.command {
            return true;
        }
        false
    }

    /// Runs the command.
    pub fn run(self) -> anyhow::Result<()> {
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from("."));
        let mut ctx = Ctx::new(dir).with_lock_wait(self.wait);
        if self.quiet {
            ctx.progress = false;
        }
        tracing::debug!(site = %ctx.dir.display(), command = ?self.command, "running");
        self.command.run(&ctx)
    }
}

/// `--wait`'s value: a number of seconds, 0 or more (fractions allowed).
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|x| std::time::Duration::try_from_secs_f64(x).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds (0 or more)"))
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    // Family and replicas.
    /// Create a new family with its first replica.
    Init(family::Init),
    /// Create a replica: `export` here, then `import` at the new site.
    #[command(
        subcommand,
        after_help = "Example:\n  msite identity --new sanfran.age    # at the new site: prints its age1… recipient and its signing key\n  msite -C boston mkreplica export sanfran --encrypt-to age1… --key 3f1c…\n  msite mkreplica import boston/bays/outgoing/repl_boston_to_sanfran_*.msp sanfran --identity sanfran.age"
    )]
    Mkreplica(family::Mkreplica),
    /// List the replicas of the family.
    Lsreplica(family::Lsreplica),
    /// Retire a replica for good: the family forgets it and refuses its packets.
    Rmreplica(family::Rmreplica),
    /// Describe one object: replica:NAME, brtype:NAME, lbtype:NAME, elem:PATH, branch:PATH@@BR.
    Describe(family::Describe),

    // Synchronisation.
    /// Exchange packets with sibling replicas: `export` and `import`.
    #[command(
        subcommand,
        after_help = "Example:\n  msite -C boston syncreplica export --all\n  msite -C sanfran syncreplica import"
    )]
    Syncreplica(sync::Syncreplica),
    /// Show what packet files or the bays hold, and whether they can be imported here.
    Lspacket(lspacket::Lspacket),
    /// Show the epoch matrix: what this replica holds and believes its siblings hold.
    Lsepoch(sync::Lsepoch),
    /// Set what this replica believes a sibling holds (its estimate row).
    Chepoch(sync::Chepoch),
    /// Show the family at a glance: siblings behind, packets waiting and refused, restoration.
    Status(status::Status),
    /// Give this replica a new signing key (announced to the siblings, or after losing it).
    Rekey(keys::Rekey),
    /// Vouch for a sibling's new signing key after it lost its own.
    Vouch(keys::Vouch),
    /// Print this site's age recipient, for sealed packets (or make a new site's identity file).
    Identity(keys::Identity),
    /// Show or set the family's sealing policy (seal every packet to its target, or not).
    #[command(name = "seal-policy")]
    SealPolicy(sealpolicy::SealPolicy),

    // Backup and restore.
    /// Back up the site's store while it stays in use.
    Backup(backup::Backup),
    /// Make a site from a backup (after its storage was lost).
    Restore(backup::Restore),
    /// Start (or amend) the restoration of a replica restored from backup.
    Restorereplica(backup::Restorereplica),
    /// Repair a fork: keep one of two timelines of a replica's history, give up the other.
    Repairfork(fork::Repairfork),
    /// Check the store's integrity with the storage engine's own checker.
    Check(backup::Check),
    /// Drop the oplog history every sibling holds (retention); the files stay as they are.
    Scrub(scrub::Scrub),
    /// Pack the store with the storage engine's own tool and free the space of deleted rows.
    Compact(compact::Compact),

    // The versioned object base.
    /// Create an element (a versioned file) with a `main` branch.
    Mkelem(vob::Mkelem),
    /// Check in a new version of a file.
    Checkin(vob::Checkin),
    /// Check in a whole directory tree in one step.
    Import(vob::Import),
    /// Print the content of a version.
    Cat(vob::Cat),
    /// List element names.
    Ls(vob::Ls),
    /// List the versions of an element.
    Lshistory(vob::Lshistory),
    /// Create a branch type mastered here.
    Mkbrtype(vob::Mkbrtype),
    /// Create a label type mastered here.
    Mklbtype(vob::Mklbtype),
    /// Attach (or move) a label to a version.
    Mklabel(vob::Mklabel),
    /// Remove a label from an element.
    Rmlabel(vob::Rmlabel),
    /// Remove an element's name (its history stays).
    Rmname(vob::Rmname),
    /// Hand mastership of an object to another replica.
    Chmaster(vob::Chmaster),
    /// Ask the master of an object for its mastership.
    Reqmaster(vob::Reqmaster),
    /// Show or set what this replica does with mastership requests it receives.
    #[command(name = "reqmaster-policy")]
    ReqmasterPolicy(vob::ReqmasterPolicy),
    /// List mastership requests waiting for the operator (policy `manual`).
    Lsreqmaster(vob::Lsreqmaster),
    /// Show or set how long an export waits before resending unacknowledged entries.
    #[command(name = "resend-interval")]
    ResendInterval(resend::ResendInterval),
    /// Print the digest of the replicated state (equal digests mean equal content).
    Digest(vob::Digest),

    // Tools.
    /// Print a shell completion script.
    Completions(tools::Completions),
    /// Write manual pages.
    Man(tools::Man),
    /// Run a narrated demonstration: three sites, parallel work, a lost site restored.
    Demo(demo::Demo),

    // The daemon.
    /// Run this site as a daemon: receive, import, export and ship packets by itself.
    #[cfg(feature = "serve")]
    Serve(crate::serve::Serve),
}

impl Command {
    /// Runs the command on the site of `ctx`.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Command::Init(a) => a.run(ctx),
            Command::Mkreplica(a) => a.run(ctx),
            Command::Lsreplica(a) => a.run(ctx),
            Command::Rmreplica(a) => a.run(ctx),
            Command::Describe(a) => a.run(ctx),
            Command::Rekey(a) => a.run(ctx),
            Command::Vouch(a) => a.run(ctx),
            Command::Identity(a) => a.run(ctx),
            Command::SealPolicy(a) => a.run(ctx),
            Command::Syncreplica(a) => a.run(ctx),
            Command::Lspacket(a) => a.run(ctx),
            Command::Lsepoch(a) => a.run(ctx),
            Command::Chepoch(a) => a.run(ctx),
            Command::Status(a) => a.run(ctx),
            Command::Backup(a) => a.run(ctx),
            Command::Restore(a) => a.run(ctx),
            Command::Restorereplica(a) => a.run(ctx),
            Command::Repairfork(a) => a.run(ctx),
            Command::Check(a) => a.run(ctx),
            Command::Scrub(a) => a.run(ctx),
            Command::Compact(a) => a.run(ctx),
            Command::Mkelem(a) => a.run(ctx),
            Command::Checkin(a) => a.run(ctx),
            Command::Import(a) => a.run(ctx),
            Command::Cat(a) => a.run(ctx),
            Command::Ls(a) => a.run(ctx),
            Command::Lshistory(a) => a.run(ctx),
            Command::Mkbrtype(a) => a.run(ctx),
            Command::Mklbtype(a) => a.run(ctx),
            Command::Mklabel(a) => a.run(ctx),
            Command::Rmlabel(a) => a.run(ctx),
            Command::Rmname(a) => a.run(ctx),
            Command::Chmaster(a) => a.run(ctx),
            Command::Reqmaster(a) => a.run(ctx),
            Command::ReqmasterPolicy(a) => a.run(ctx),
            Command::Lsreqmaster(a) => a.run(ctx),
            Command::ResendInterval(a) => a.run(ctx),
            Command::Digest(a) => a.run(ctx),
            Command::Completions(a) => a.run(ctx),
            Command::Man(a) => a.run(ctx),
            Command::Demo(a) => a.run(ctx),
            #[cfg(feature = "serve")]
            Command::Serve(a) => a.run(ctx),
        }
    }
}

/// Names of objects for messages and listings.
pub mod names {
    use msite_core::store::Store;
    use msite_core::vob::NameKind;
    use msite_core::{ObjId, ObjectRef, Replica, Row};

    /// The display name of a branch type (`NAME` or `NAME@CREATOR`).
    pub fn brtype<S: Store>(r: &Replica<S>, id: &ObjId) -> String {
        type_name(r, NameKind::BrType, id)
    }

    /// The display name of a label type.
    pub fn lbtype<S: Store>(r: &Replica<S>, id: &ObjId) -> String {
        type_name(r, NameKind::LbType, id)
    }

    fn type_name<S: Store>(r: &Replica<S>, kind: NameKind, id: &ObjId) -> String {
        let v = r.view();
        match v.type_obj(kind, id) {
            Ok(Some(t)) => v.display_name(kind, &t.name, id).unwrap_or(t.name),
            _ => format!("{}:{}", id.origin.short(), id.number),
        }
    }

    /// The path of an element.
    pub fn elem<S: Store>(r: &Replica<S>, id: &ObjId) -> String {
        match r.view().element(id) {
            Ok(Some(e)) => e.path,
            _ => format!("{}:{}", id.origin.short(), id.number),
        }
    }

    /// An object as a selector: `brtype:NAME`, `elem:PATH`, `branch:PATH@@BR`, `replica:NAME`.
    pub fn object<S: Store>(r: &Replica<S>, o: &ObjectRef) -> String {
        match o {
            ObjectRef::Replica(id) => format!("replica:{}", r.replica_name(id)),
            ObjectRef::BrType(id) => format!("brtype:{}", brtype(r, id)),
            ObjectRef::LbType(id) => format!("lbtype:{}", lbtype(r, id)),
            ObjectRef::Element(id) => format!("elem:{}", elem(r, id)),
            ObjectRef::Branch { elem: e, brtype: b } => {
                format!("branch:{}@@{}", elem(r, e), brtype(r, b))
            }
        }
    }

    /// A row with replica names: `boston:12 sanfran:4`.
    pub fn row<S: Store>(r: &Replica<S>, row: &Row) -> String {
        if row.0.is_empty() {
            return "(empty)".to_string();
        }
        row.0
            .iter()
            .map(|(o, n)| format!("{}:{n}", r.replica_name(o)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A row as a JSON object keyed by replica name.
    pub fn row_json<S: Store>(
        r: &Replica<S>,
        row: &Row,
    ) -> serde_json::Map<String, serde_json::Value> {
        row.0
            .iter()
            .map(|(o, n)| (r.replica_name(o), serde_json::Value::from(*n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str) {
            let help = cmd
                .get_after_help()
                .map(|s| s.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Example"),
                "`{path}` has no example in its help"
            );
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&super::Cli::command(), "msite");
    }
}
