//! The versioned object base: elements, versions, types, labels, names, mastership, digest.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use msite_core::content::Source;
use msite_core::{ReqMasterPolicy, VersionSel};
use serde::Serialize;
use serde_json::json;

use super::names;
use crate::site::Ctx;
use crate::util;

/// `msite mkelem`.
#[derive(Debug, Args)]
#[command(
    long_about = "Creates an element (a versioned file) named PATH with a `main` branch mastered \
by this replica. `msite checkin` creates elements by itself; mkelem makes one without content.",
    after_help = "Example:\n  msite mkelem src/main.c"
)]
pub struct Mkelem {
    /// The element's path (like src/main.c).
    pub path: String,
}

impl Mkelem {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        site.replica.mkelem(&self.path)?;
        ctx.say(format!(
            "Created element {}.",
            msite_core::replica::normalize_path(&self.path)?
        ));
        Ok(())
    }
}

/// `msite checkin`.
#[derive(Debug, Args)]
#[command(
    long_about = "Checks in FILE (or standard input) as a new version of element PATH on branch \
BRTYPE (default `main`), creating the element or the branch when needed. Only the master of a \
branch adds versions to it: develop on branch types mastered here (`msite mkbrtype`).",
    after_help = "Example:\n  msite checkin src/main.c -m 'fix the parser' ./main.c\n  echo hello | msite checkin README --branch sanfran_dev"
)]
pub struct Checkin {
    /// The element's path.
    pub path: String,
    /// The file whose content to check in (default: standard input).
    pub file: Option<PathBuf>,
    /// The branch type.
    #[arg(long, short, value_name = "BRTYPE", default_value = "main")]
    pub branch: String,
    /// The comment.
    #[arg(short = 'm', long = "message", value_name = "TEXT", default_value = "")]
    pub message: String,
}

impl Checkin {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        if self.file.is_none() && std::io::stdin().is_terminal() {
            anyhow::bail!(
                "no content for {}: give a FILE, or pipe the content into `msite checkin {}`",
                self.path,
                self.path
            );
        }
        let site = ctx.open()?;
        let r = &site.replica;
        // Standard input is spooled into a temporary file in the site directory, up to one
        // byte over the site's limit, so that it is streamed like a file.
        let spool = match &self.file {
            Some(_) => None,
            None => Some(spool_stdin(&site.paths.dir, r.max_version_bytes()?)?),
        };
        let file = match (&self.file, &spool) {
            (Some(f), _) => f.as_path(),
            (None, s) => s.as_ref().map_or(std::path::Path::new("-"), |s| s.path()),
        };
        let src = Source::File(file);
        let (author, msg) = (util::author(), &self.message);
        let (_, n) = r.checkin_from(&self.path, &self.branch, src, &author, msg)?;
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        let path = msite_core::replica::normalize_path(&self.path)?;
        ctx.say(format!(
            "Checked in {path}@@{}/{n} ({}).",
            self.branch,
            util::human_size(size)
        ));
        Ok(())
    }
}

/// Copies standard input into a temporary file in `dir`, refusing it once it passes `limit`.
fn spool_stdin(dir: &std::path::Path, limit: u64) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".checkin-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut input = std::io::stdin().lock().take(limit.saturating_add(1));
    let n = std::io::copy(&mut input, tmp.as_file_mut()).context("cannot read standard input")?;
    if n > limit {
        anyhow::bail!(msite_core::content::too_large("standard input", limit));
    }
    Ok(tmp)
}

/// `msite import`.
#[derive(Debug, Args)]
#[command(
    long_about = "Checks in a whole directory tree in one step: a new element for each new file, \
a new version where the content changed, nothing where it did not. Paths are relative to DIR.",
    after_help = "Example:\n  msite -C boston import ./src-tree -m 'import release 1.2'\n  msite -C sanfran import ./work --branch sanfran_dev"
)]
pub struct Import {
    /// The directory tree to check in.
    pub dir: PathBuf,
    /// The branch type.
    #[arg(long, short, value_name = "BRTYPE", default_value = "main")]
    pub branch: String,
    /// The comment of every version.
    #[arg(
        short = 'm',
        long = "message",
        value_name = "TEXT",
        default_value = "imported"
    )]
    pub message: String,
}

impl Import {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        refuse_tree_holding_site(&self.dir, &site.paths.dir)?;
        let total = count_files(&self.dir);
        let pb = util::bar(ctx, total, format!("importing {}", self.dir.display()));
        let res = site.replica.import_tree(
            &self.dir,
            &self.branch,
            &util::author(),
            &self.message,
            |n| pb.set_position(n),
        );
        pb.finish_and_clear();
        let t = res?;
        ctx.say(format!(
            "Imported {} on {}: {} new elements, {} new versions, {} unchanged.",
            self.dir.display(),
            self.branch,
            t.new_elements,
            t.new_versions,
            t.unchanged
        ));
        Ok(())
    }
}

/// Refuses to import a tree that holds the site itself (its store and bays would be checked in).
fn refuse_tree_holding_site(tree: &std::path::Path, site: &std::path::Path) -> anyhow::Result<()> {
    let tree_abs = tree
        .canonicalize()
        .with_context(|| format!("cannot read {}", tree.display()))?;
    let site_abs = site
        .canonicalize()
        .with_context(|| format!("cannot read {}", site.display()))?;
    if site_abs.starts_with(&tree_abs) {
        anyhow::bail!(
            "{} contains the site directory {} (its store and bays would be checked in); import a directory outside the site",
            tree.display(),
            site.display()
        );
    }
    Ok(())
}

fn count_files(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// `msite cat`.
#[derive(Debug, Args)]
#[command(
    long_about = "Prints the content of a version: PATH (latest on main), PATH@@BRTYPE (latest on \
that branch) or PATH@@BRTYPE/N (version N; the first version checked in on a branch is 1).",
    after_help = "Example:\n  msite cat src/main.c\n  msite cat src/main.c@@sanfran_dev/2 > old.c"
)]
pub struct Cat {
    /// The version: PATH[@@BRTYPE[/N]].
    #[arg(value_name = "PATH[@@BRTYPE/N]")]
    pub sel: String,
}

impl Cat {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let sel = VersionSel::parse(&self.sel)?;
        ctx.write_raw_with(|out| site.replica.cat_to(&sel, out).map(|_| ()))?;
        Ok(())
    }
}

/// `msite ls`.
#[derive(Debug, Args)]
#[command(
    long_about = "Lists element names (those whose name was not removed), optionally only those \
starting with PREFIX. --long adds the master and the branches.",
    after_help = "Example:\n  msite ls\n  msite ls src/ --long\n  msite ls --json"
)]
pub struct Ls {
    /// Only names starting with PREFIX.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Show master and branches.
    #[arg(short, long)]
    pub long: bool,
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

/// One element of `ls --json` (docs/cli-json.md), printed as text from the same fields.
#[derive(Serialize)]
struct ElementRow {
    path: String,
    master: String,
    branches: Vec<BranchRow>,
}

/// One branch of an [`ElementRow`].
#[derive(Serialize)]
struct BranchRow {
    brtype: String,
    latest: u64,
    master: String,
}

impl ElementRow {
    /// `ls --long`'s line: the path, its master, and every branch with its latest version.
    fn long_line(&self) -> String {
        let brs: Vec<String> = self
            .branches
            .iter()
            .map(|b| format!("{}/{}", util::esc(&b.brtype), b.latest))
            .collect();
        format!(
            "{}  master={}  {}",
            util::esc(&self.path),
            util::esc(&self.master),
            brs.join(" ")
        )
    }
}

impl Ls {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        let v = r.view();
        let mut items = Vec::new();
        for (path, el) in v.ls(&self.prefix)? {
            let branches = v
                .branches(&el.id)?
                .into_iter()
                .map(|b| BranchRow {
                    brtype: names::brtype(r, &b.brtype),
                    latest: b.latest,
                    master: r.replica_name(&b.master),
                })
                .collect();
            let master = r.replica_name(&el.master);
            items.push(ElementRow {
                path,
                master,
                branches,
            });
        }
        if self.json {
            return ctx.json(&json!({ "elements": items }));
        }
        for it in &items {
            ctx.say(if self.long {
                it.long_line()
            } else {
                util::esc(&it.path)
            });
        }
        Ok(())
    }
}

/// `msite lshistory`.
#[derive(Debug, Args)]
#[command(
    long_about = "Lists the versions of an element, branch by branch: number, time, author, size, \
comment, and the labels on it.",
    after_help = "Example:\n  msite lshistory src/main.c\n  msite lshistory src/main.c --json"
)]
pub struct Lshistory {
    /// The element's path.
    pub path: String,
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

/// One version of `lshistory --json` (docs/cli-json.md), printed as text from the same fields.
#[derive(Serialize)]
struct VersionRow {
    version: String,
    brtype: String,
    number: u64,
    time: String,
    author: String,
    size: u64,
    comment: String,
    origin: String,
    labels: Vec<String>,
}

impl VersionRow {
    /// The text line: `PATH@@BRANCH/N  TIME  AUTHOR  SIZE  "COMMENT"  (LABELS)`.
    fn line(&self, path: &str) -> String {
        let comment = format!("\"{}\"", util::esc(&self.comment));
        let labels = if self.labels.is_empty() {
            String::new()
        } else {
            let l: Vec<String> = self.labels.iter().map(|x| util::esc(x)).collect();
            format!("  ({})", l.join(", "))
        };
        format!(
            "{}@@{}  {}  {}  {}  {comment}{labels}",
            util::esc(path),
            util::esc(&self.version),
            self.time,
            util::esc(&self.author),
            util::human_size(self.size),
        )
    }
}

impl Lshistory {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        let v = r.view();
        let el = v.element_by_path(&self.path)?;
        let labels = v.labels(&el.id)?;
        let mut versions = Vec::new();
        for ver in v.versions(&el.id)? {
            let brtype = names::brtype(r, &ver.brtype);
            versions.push(VersionRow {
                version: format!("{brtype}/{}", ver.number),
                brtype,
                number: ver.number,
                time: util::utc_time(ver.time_ms),
                author: ver.author.clone(),
                size: ver.size,
                comment: ver.comment.clone(),
                origin: r.replica_name(&ver.entry.origin),
                labels: labels
                    .iter()
                    .filter(|l| l.brtype == ver.brtype && l.version == ver.number)
                    .map(|l| names::lbtype(r, &l.lbtype))
                    .collect(),
            });
        }
        if self.json {
            return ctx.json(&json!({ "path": el.path, "master": r.replica_name(&el.master), "removed": el.removed, "versions": versions }));
        }
        for ver in &versions {
            ctx.say(ver.line(&el.path));
        }
        Ok(())
    }
}

/// `msite mkbrtype`.
#[derive(Debug, Args)]
#[command(
    long_about = "Creates a branch type mastered by this replica: only this replica can add \
versions on branches of this type, so sites develop in parallel on branch types they master.",
    after_help = "Example:\n  msite -C sanfran mkbrtype sanfran_dev"
)]
pub struct Mkbrtype {
    /// The branch type's name.
    pub name: String,
}

impl Mkbrtype {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        site.replica.mkbrtype(&self.name)?;
        ctx.say(format!(
            "Created branch type {} (mastered by {}).",
            self.name,
            site.name()
        ));
        Ok(())
    }
}

/// `msite mklbtype`.
#[derive(Debug, Args)]
#[command(
    long_about = "Creates a label type mastered by this replica; only its master attaches, moves \
and removes labels of this type.",
    after_help = "Example:\n  msite -C boston mklbtype RELEASE_1.0"
)]
pub struct Mklbtype {
    /// The label type's name.
    pub name: String,
}

impl Mklbtype {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        site.replica.mklbtype(&self.name)?;
        ctx.say(format!(
            "Created label type {} (mastered by {}).",
            self.name,
            site.name()
        ));
        Ok(())
    }
}

/// `msite mklabel`.
#[derive(Debug, Args)]
#[command(
    long_about = "Attaches a label of type LBTYPE to a version (PATH: latest on main; \
PATH@@BRTYPE/N: that version), moving it if the element already has one.",
    after_help = "Example:\n  msite mklabel RELEASE_1.0 src/main.c\n  msite mklabel RELEASE_1.0 src/main.c@@sanfran_dev/3"
)]
pub struct Mklabel {
    /// The label type.
    pub lbtype: String,
    /// The version: PATH[@@BRTYPE[/N]].
    #[arg(value_name = "PATH[@@BRTYPE/N]")]
    pub sel: String,
}

impl Mklabel {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let sel = VersionSel::parse(&self.sel)?;
        site.replica.mklabel(&self.lbtype, &sel)?;
        let (_, _, n) = site.replica.resolve_version(&sel)?;
        ctx.say(format!(
            "Labelled {}@@{}/{n} {}.",
            sel.path, sel.brtype, self.lbtype
        ));
        Ok(())
    }
}

/// `msite rmlabel`.
#[derive(Debug, Args)]
#[command(
    long_about = "Removes the label of type LBTYPE from element PATH.",
    after_help = "Example:\n  msite rmlabel RELEASE_1.0 src/main.c"
)]
pub struct Rmlabel {
    /// The label type.
    pub lbtype: String,
    /// The element's path.
    pub path: String,
}

impl Rmlabel {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        site.replica.rmlabel(&self.lbtype, &self.path)?;
        ctx.say(format!("Removed label {} from {}.", self.lbtype, self.path));
        Ok(())
    }
}

/// `msite rmname`.
#[derive(Debug, Args)]
#[command(
    long_about = "Removes an element's name: it no longer appears in `msite ls`, but its history \
stays in every replica.",
    after_help = "Example:\n  msite rmname docs/obsolete.txt"
)]
pub struct Rmname {
    /// The element's path.
    pub path: String,
}

impl Rmname {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        site.replica.rmname(&self.path)?;
        ctx.say(format!(
            "Removed the name {} (its history stays).",
            self.path
        ));
        Ok(())
    }
}

/// `msite chmaster`.
#[derive(Debug, Args)]
#[command(
    long_about = "Hands mastership of an object mastered here to replica REPLICA. The change \
travels in packets; from then on only REPLICA may change the object. SELECTOR is brtype:NAME, \
lbtype:NAME, elem:PATH, branch:PATH@@BRTYPE or replica:NAME.

With --all --from NAME, this replica takes over every object that NAME masters. NAME must be \
retired first (`msite rmreplica NAME`), and this must be the replica that masters \
replica:NAME: then no other site can take the same objects at once.",
    after_help = "Examples:\n  msite -C boston chmaster brtype:release bangalore\n  msite -C boston chmaster branch:src/main.c@@main sanfran\n  # sanfran is closed for good: retire it, then take over what it mastered\n  msite -C boston rmreplica sanfran\n  msite -C boston chmaster --all --from sanfran"
)]
pub struct Chmaster {
    /// The object.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub selector: Option<String>,
    /// The new master.
    #[arg(required_unless_present = "all")]
    pub replica: Option<String>,
    /// Take over every object the retired replica --from NAME masters.
    #[arg(long, requires = "from")]
    pub all: bool,
    /// With --all: the retired replica whose objects this replica takes over.
    #[arg(long, value_name = "NAME", requires = "all")]
    pub from: Option<String>,
}

impl Chmaster {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        if let (true, Some(from)) = (self.all, &self.from) {
            let moved = r.chmaster_all_from(from)?;
            let from = crate::util::esc(from);
            ctx.say(match moved.len() {
                0 => format!("{from} masters nothing; nothing to take over."),
                n => format!(
                    "{n} object(s) that {from} mastered are now mastered by {}; the change reaches the siblings with the next packets.",
                    r.name()
                ),
            });
            return Ok(());
        }
        let (Some(selector), Some(replica)) = (self.selector, self.replica) else {
            anyhow::bail!("chmaster needs SELECTOR REPLICA, or --all --from NAME");
        };
        r.chmaster(&selector, &replica)?;
        ctx.say(format!(
            "{selector} is now mastered by {replica}; the change reaches it with the next packets."
        ));
        Ok(())
    }
}

/// `msite reqmaster`.
#[derive(Debug, Args)]
#[command(
    long_about = "Asks the master of an object for its mastership. The request travels in \
packets; the master grants it on import when its policy is `allow` (the default), refuses it \
with `deny` (the refusal travels back: this replica's import says so and `msite status` shows \
it until you ask again), or keeps it for its operator with `manual` (see \
`msite reqmaster-policy`).",
    after_help = "Example:\n  msite -C sanfran reqmaster brtype:release\n  msite -C sanfran syncreplica export --to boston"
)]
pub struct Reqmaster {
    /// The object.
    pub selector: String,
}

impl Reqmaster {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let master = site.replica.reqmaster(&self.selector)?;
        ctx.say(format!(
            "Asked {master} for mastership of {}; the request reaches it with the next packets to it (msite syncreplica export --to {master}).",
            self.selector
        ));
        Ok(())
    }
}

/// `msite reqmaster-policy`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows or sets what this replica does with mastership requests for objects it \
masters: `allow` grants them on import, `deny` refuses them, `manual` keeps them for the \
operator (`msite lsreqmaster`, then `msite chmaster`).",
    after_help = "Example:\n  msite -C boston reqmaster-policy\n  msite -C boston reqmaster-policy manual"
)]
pub struct ReqmasterPolicy {
    /// The new policy: allow, deny or manual (none: show the current one).
    #[arg(value_parser = ["allow", "deny", "manual"])]
    pub policy: Option<String>,
}

impl ReqmasterPolicy {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        if let Some(p) = &self.policy {
            let p = ReqMasterPolicy::parse(p).ok_or_else(|| {
                anyhow::anyhow!("`{p}` is not a policy; use allow, deny or manual")
            })?;
            r.set_reqmaster_policy(p)?;
        }
        ctx.say(format!(
            "Mastership requests at {}: {}",
            r.name(),
            r.reqmaster_policy()?.as_str()
        ));
        Ok(())
    }
}

/// `msite lsreqmaster`.
#[derive(Debug, Args)]
#[command(
    long_about = "Lists the mastership requests kept for the operator (policy `manual`). Grant \
one with `msite chmaster SELECTOR REPLICA`.",
    after_help = "Example:\n  msite -C boston lsreqmaster\n  msite -C boston lsreqmaster --json"
)]
pub struct Lsreqmaster {
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

impl Lsreqmaster {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let r = &site.replica;
        let reqs: Vec<serde_json::Value> = r
            .pending_master_requests()?
            .iter()
            .map(|(o, who)| json!({ "object": names::object(r, o), "requester": r.replica_name(who) }))
            .collect();
        if self.json {
            return ctx
                .json(&json!({ "policy": r.reqmaster_policy()?.as_str(), "requests": reqs }));
        }
        if reqs.is_empty() {
            ctx.say("No mastership requests are waiting.");
        }
        for q in &reqs {
            ctx.say(format!(
                "{} asks for {} (grant: msite chmaster {} {})",
                util::esc(q["requester"].as_str().unwrap_or("?")),
                util::esc(q["object"].as_str().unwrap_or("?")),
                util::esc(q["object"].as_str().unwrap_or("?")),
                util::esc(q["requester"].as_str().unwrap_or("?"))
            ));
        }
        Ok(())
    }
}

/// `msite digest`.
#[derive(Debug, Args)]
#[command(
    long_about = "Prints the digest of the replicated state, in hex, alone on one line. Two \
replicas with equal digests hold exactly the same elements, versions, types, labels and \
masters.",
    after_help = "Example:\n  msite -C boston digest\n  [ \"$(msite -C boston digest)\" = \"$(msite -C sanfran digest)\" ] && echo converged"
)]
pub struct Digest {}

impl Digest {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        ctx.say(digest_hex(ctx)?);
        Ok(())
    }
}

/// The digest of the site of `ctx`, in hex.
pub fn digest_hex(ctx: &Ctx) -> anyhow::Result<String> {
    let site = ctx.open()?;
    Ok(msite_core::ids::hex(&site.replica.digest()?))
}
