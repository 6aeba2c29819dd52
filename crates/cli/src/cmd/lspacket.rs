//! `msite lspacket`: what packet files hold, and whether each could be imported here.
//!
//! Each packet is described once, as a typed [`PacketDoc`]; `--json` serialises it (the
//! fields are documented in docs/cli-json.md) and the text listing prints from the same
//! fields, so the two cannot drift apart.

use std::path::{Path, PathBuf};

use clap::Args;
use msite_core::{incarnation_text, Assessment, CoreError, PacketId, Refusal, ReplicaId, Row};
use msite_packet::wire;
use serde::ser::SerializeMap;
use serde::Serialize;

use crate::packets::{self, Group};
use crate::site::{Ctx, Site};
use crate::util::{self, Exit};

/// `msite lspacket`.
#[derive(Debug, Args)]
#[command(
    long_about = "Shows what packet files hold: kind, family, sender, targets, base and sender's \
rows, entries per origin, restore requests carried, parts and format version, after verifying \
every checksum, and whether its signature verifies (with the keys the site pinned; outside a \
site, with the keys the packet lists). Run inside a site (or with -C), it also says whether each packet can be \
imported there now, must wait (and for what), or would be refused (and why). Without FILE, \
inside a site (or with -C), it lists every packet in the incoming bay, then every packet in the \
outgoing bay, each described the same way under a line naming its bay (or saying it is empty). \
Incarnations print as UTC times (0: never restored); --json keeps the numbers.",
    after_help = "Example:\n  msite -C sanfran lspacket\n  msite lspacket bays/outgoing/*.msp\n  msite -C sanfran lspacket sanfran/bays/incoming/*.msp --long\n  msite lspacket packet.msp --json"
)]
pub struct Lspacket {
    /// Packet files (parts of one packet are shown together); none: every packet in the
    /// site's incoming and outgoing bays.
    pub files: Vec<PathBuf>,
    /// Also list every entry the packet carries.
    #[arg(short, long)]
    pub long: bool,
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

/// Names replicas by id: from the site when there is one, else from the packet header.
struct Namer<'a> {
    site: Option<&'a Site>,
    header: &'a wire::Header,
}

impl Namer<'_> {
    fn name(&self, id: &[u8; 16]) -> String {
        let rid = ReplicaId(*id);
        if let Some(s) = self.site {
            if s.replica.view().replica(&rid).ok().flatten().is_some() {
                return s.replica.replica_name(&rid);
            }
        }
        if *id == self.header.sender.0 && !self.header.sender_name.is_empty() {
            return self.header.sender_name.clone();
        }
        rid.short()
    }

    /// A row with each origin named.
    fn row(&self, row: &wire::Row) -> NamedRow {
        NamedRow::new(row.iter().map(|c| (self.name(&c.origin.0), c.number)))
    }
}

/// How many items of a list from a packet (row cells, origins) a line shows.
const LIST_MAX: usize = 10;

/// How many targets of a packet a line shows (each names an incarnation, a time).
const TARGETS_MAX: usize = 5;

/// A row as `lspacket --json` gives it: an object from origin name to entry number, in the
/// packet's order (a name met twice keeps its first place and its last number).
#[derive(Debug, Default)]
struct NamedRow(Vec<(String, u64)>);

impl NamedRow {
    fn new(cells: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut row = NamedRow::default();
        for (name, n) in cells {
            match row.0.iter_mut().find(|(k, _)| *k == name) {
                Some(cell) => cell.1 = n,
                None => row.0.push((name, n)),
            }
        }
        row
    }

    /// The row for people: `boston:3 sanfran:7`, or `(empty)`.
    fn text(&self) -> String {
        if self.0.is_empty() {
            return "(empty)".into();
        }
        let cells = self.0.iter().map(|(k, v)| format!("{}:{v}", util::esc(k)));
        util::bounded_list(cells, " ", LIST_MAX)
    }
}

impl Serialize for NamedRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// One packet, as `lspacket` describes it (docs/cli-json.md, `msite lspacket --json`).
#[derive(Debug, Serialize)]
struct PacketDoc {
    files: Vec<PathBuf>,
    bay: Option<&'static str>,
    packet_id: String,
    kind: &'static str,
    format_version: String,
    parts: u32,
    parts_present: usize,
    complete: bool,
    family: FamilyDoc,
    sender: SenderDoc,
    targets: Vec<TargetDoc>,
    base_row: NamedRow,
    sender_row: NamedRow,
    entries: u64,
    entries_per_origin: Vec<OriginDoc>,
    contents: u64,
    content_bytes: u64,
    bytes: u64,
    controls: Vec<ControlDoc>,
    created: String,
    verified: bool,
    problem: Option<String>,
    signature: SignatureDoc,
    importable_here: Option<&'static str>,
    here: Option<String>,
    entry_list: Option<Vec<EntryDoc>>,
}

#[derive(Debug, Serialize)]
struct FamilyDoc {
    name: String,
    id: String,
}

#[derive(Debug, Serialize)]
struct SenderDoc {
    name: String,
    id: String,
    incarnation: u64,
}

#[derive(Debug, Serialize)]
struct TargetDoc {
    name: String,
    id: String,
    incarnation: u64,
    packet_seq: u64,
}

/// One origin's entries in a packet.
#[derive(Debug, Serialize)]
struct OriginDoc {
    origin: String,
    entries: u64,
    first: u64,
    last: u64,
}

impl OriginDoc {
    /// For people: `boston 3..7`, with the count when the numbers are not dense.
    fn text(&self) -> String {
        let range = match self.first == self.last {
            true => format!("{}", self.first),
            false => format!("{}..{}", self.first, self.last),
        };
        let gaps = match self.entries != self.last.saturating_sub(self.first) + 1 {
            true => format!(" ({} entries)", self.entries),
            false => String::new(),
        };
        format!("{} {range}{gaps}", plain(&self.origin))
    }
}

/// A control record a packet carries.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ControlDoc {
    RestoreRequest {
        replica: String,
        incarnation: u64,
        row: NamedRow,
    },
    ProvisionalAck {
        acker: String,
        replica: String,
        incarnation: u64,
        held: u64,
    },
}

impl ControlDoc {
    fn new(n: &Namer<'_>, ctl: &wire::Control) -> Self {
        match ctl {
            wire::Control::RestoreRequest {
                replica,
                incarnation,
                row,
                ..
            } => ControlDoc::RestoreRequest {
                replica: n.name(&replica.0),
                incarnation: *incarnation,
                row: n.row(row),
            },
            wire::Control::ProvisionalAck {
                acker,
                replica,
                incarnation,
                held,
                ..
            } => ControlDoc::ProvisionalAck {
                acker: n.name(&acker.0),
                replica: n.name(&replica.0),
                incarnation: *incarnation,
                held: *held,
            },
        }
    }

    /// The record as a line of text.
    fn text(&self) -> String {
        match self {
            ControlDoc::RestoreRequest {
                replica,
                incarnation,
                row,
            } => format!(
                "  restore request: {} incarnation {} row {}",
                plain(replica),
                incarnation_text(*incarnation),
                row.text()
            ),
            ControlDoc::ProvisionalAck {
                acker,
                replica,
                incarnation,
                held,
            } => format!(
                "  provisional acknowledgement: {} of {}'s restore (incarnation {}, held {held})",
                plain(acker),
                plain(replica),
                incarnation_text(*incarnation)
            ),
        }
    }
}

/// Whether a packet's signature verifies: `status` is `verified`, `unsigned` or `invalid`;
/// `keys` says whose keys it was checked with (`site`: the ones pinned at the site, `listed`:
/// the ones the packet itself lists).
#[derive(Debug, Serialize)]
struct SignatureDoc {
    status: &'static str,
    key_fingerprint: Option<String>,
    detail: Option<String>,
    keys: &'static str,
    text: String,
}

impl SignatureDoc {
    fn new(s: &msite_core::sync::SignatureStatus, at_site: bool) -> Self {
        use msite_core::sync::SignatureStatus as S;
        let (status, key_fingerprint, detail) = match s {
            S::Verified { key } => ("verified", Some(key.clone()), None),
            S::Unsigned => ("unsigned", None, None),
            S::Invalid(why) => ("invalid", None, Some(why.clone())),
        };
        SignatureDoc {
            status,
            key_fingerprint,
            detail,
            keys: if at_site { "site" } else { "listed" },
            text: s.to_string(),
        }
    }
}

/// One entry of a packet (`--long`).
#[derive(Debug, Serialize)]
struct EntryDoc {
    origin: String,
    number: u64,
    op: String,
}

/// A file that is no readable packet.
#[derive(Debug, Serialize)]
struct UnreadableDoc {
    file: PathBuf,
    bay: Option<&'static str>,
    error: String,
}

/// A sealed packet (SPEC §9), from its readable label, or the reason its label is unreadable.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum SealedDoc {
    Label {
        file: String,
        #[serde(rename = "for")]
        for_names: Vec<String>,
        recipients: Vec<String>,
        opens_here: Option<bool>,
    },
    Damaged {
        file: String,
        error: String,
    },
}

impl SealedDoc {
    /// One paragraph: who it is for, and whether it opens here.
    fn text(&self) -> String {
        match self {
            SealedDoc::Damaged { file, error } => {
                format!("{file}: a damaged sealed packet: {error}")
            }
            SealedDoc::Label {
                file,
                for_names,
                recipients,
                opens_here,
            } => {
                let here = match opens_here {
                    Some(true) => "; this site's identity opens it (syncreplica import unseals it)",
                    Some(false) => "; this site's identity is not among its recipients",
                    None => "",
                };
                format!(
                    "{file}: sealed packet (age) for {} (recipients {}){here}",
                    for_names.join(", "),
                    recipients.join(", ")
                )
            }
        }
    }
}

/// What `lspacket --json` prints.
#[derive(Debug, Serialize)]
struct Listing {
    packets: Vec<PacketDoc>,
    unreadable: Vec<UnreadableDoc>,
    sealed: Vec<SealedDoc>,
}

/// Splits the sealed files off `files`: each described from its readable label (who it is
/// for), and whether this site's identity is among its recipients.
fn split_sealed(
    site: Option<&Site>,
    files: &[PathBuf],
) -> anyhow::Result<(Vec<PathBuf>, Vec<SealedDoc>)> {
    let (sealed, plain): (Vec<_>, Vec<_>) = files
        .iter()
        .cloned()
        .partition(|p| crate::seal::is_sealed_file(p));
    if sealed.is_empty() {
        return Ok((plain, Vec::new()));
    }
    let mine = match site {
        Some(s) => Some(
            crate::seal::site_identity(&s.replica)?
                .to_public()
                .to_string(),
        ),
        None => None,
    };
    let docs = sealed
        .iter()
        .map(|p| {
            let file = p.display().to_string();
            match crate::seal::label_of(p) {
                Ok(l) => SealedDoc::Label {
                    file,
                    opens_here: mine.as_ref().map(|m| l.recipients.contains(m)),
                    for_names: l.for_names,
                    recipients: l.recipients,
                },
                Err(e) => SealedDoc::Damaged {
                    file,
                    error: format!("{e:#}"),
                },
            }
        })
        .collect();
    Ok((plain, docs))
}

/// Whether the packet could be imported at `site` now, as a verdict code and a sentence:
/// core's assessment ([`Replica::assess`], the checks import runs), worded for a listing.
pub(crate) fn assess(site: &Site, g: &Group) -> anyhow::Result<(&'static str, String)> {
    let r = &site.replica;
    let h = &g.header;
    let id = PacketId(g.lp.packet_id.0);
    Ok(match r.assess(h, g.lp.kind, &id, "the packet")? {
        Assessment::Importable => {
            let sender_row = Row::from_wire(&h.sender_row);
            if r.own_row()?.covers(&sender_row) && h.controls.is_empty() {
                (
                    "importable",
                    "can be imported now (this replica already holds everything it carries)"
                        .into(),
                )
            } else {
                ("importable", "can be imported now".into())
            }
        }
        Assessment::AlreadyApplied => (
            "applied",
            "imported here before; importing it again changes nothing".into(),
        ),
        Assessment::Waiting(needs) => {
            let needs = needs.iter().map(|n| n.to_string());
            (
                "waiting",
                format!("must wait: {}", util::bounded_list(needs, ", ", 5)),
            )
        }
        Assessment::RolledBack(Refusal::RolledBack {
            sender,
            theirs,
            ours,
        }) => (
            "rolled_back",
            format!(
                "refused: it shows that this replica lost entries of its own ({sender} holds them up to {theirs}, this replica only up to {ours}); importing it locks this replica until `msite restorereplica`"
            ),
        ),
        Assessment::RolledBack(Refusal::OwnFork { sender, number, .. }) => (
            "rolled_back",
            format!(
                "refused: it shows that this replica numbered {number} of its own twice ({sender} holds a different entry {number}: it was put back to an older copy without `msite restore`); importing it locks this replica until `msite restorereplica`"
            ),
        ),
        Assessment::RolledBack(r) => ("rolled_back", format!("refused: {r}")),
        Assessment::NewerIncarnationKnown {
            known,
            ours,
            sender,
        } => (
            "newer_incarnation",
            format!(
                "refused: {sender} knows incarnation {} of this replica, but this store has incarnation {} (it is older than the replica's last restoration)",
                incarnation_text(known),
                incarnation_text(ours)
            ),
        ),
        Assessment::Refused(e) => refusal_verdict(g.lp.kind, e),
    })
}

/// The verdict code and sentence of a refusal by [`Replica::assess`].
fn refusal_verdict(kind: wire::Kind, e: CoreError) -> (&'static str, String) {
    match e {
        _ if kind == wire::Kind::ReplicaCreation => ("creation", e.to_string()),
        CoreError::Refused(
            r @ (Refusal::StaleTarget { .. }
            | Refusal::StaleSender { .. }
            | Refusal::StaleRequest { .. }),
        ) => ("stale", format!("refused: {r}")),
        CoreError::Refused(r @ Refusal::NotAddressed { .. }) => ("not_addressed", r.to_string()),
        CoreError::Locked(m) => ("locked", format!("not now: {m}")),
        e => ("refused", format!("refused: {e}")),
    }
}

/// The refusal text of a bay entry that is no regular file.
pub(super) fn not_regular_text(what: &str) -> String {
    format!("not a regular file ({what}), so it was never opened")
}

/// The bays `lspacket` lists when given no file, with whether their packets are assessed
/// for import here (the outgoing bay holds packets this replica wrote for others).
fn bays(site: &Site) -> [(&'static str, PathBuf, bool); 2] {
    [
        ("incoming", site.paths.incoming(), true),
        ("outgoing", site.paths.outgoing(), false),
    ]
}

impl Lspacket {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        // Inside a site (or with -C), say whether each packet can be imported there.
        let site = if ctx.dir.join(crate::site::SITE_FILE).exists() {
            Some(ctx.open()?)
        } else {
            None
        };
        if self.files.is_empty() {
            let Some(site) = site else {
                return Err(no_site(ctx).into());
            };
            return self.list_bays(ctx, &site);
        }
        packets::check_given(&self.files)?;
        let (files, sealed) = split_sealed(site.as_ref(), &self.files)?;
        let (groups, bad) = packets::group_files(&files);
        if let Some((p, why)) = bad.first() {
            if groups.is_empty() && bad.len() == 1 {
                anyhow::bail!(
                    "{} is not a readable packet: {}",
                    util::esc_path(p),
                    util::esc(why)
                );
            }
        }
        let docs = groups
            .iter()
            .map(|g| self.describe(site.as_ref(), g, (None, true)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.json {
            let unreadable = unreadable_docs(bad, None);
            return ctx.json(&Listing {
                packets: docs,
                unreadable,
                sealed,
            });
        }
        say_sealed(ctx, &sealed);
        say_unreadable(ctx, &bad);
        for (g, d) in groups.iter().zip(&docs) {
            say_packet(ctx, g, d);
        }
        Ok(())
    }

    /// Without files: every packet in the site's incoming and outgoing bays, each described
    /// as `lspacket FILE` would, under a line naming its bay (or saying that it is empty).
    fn list_bays(&self, ctx: &Ctx, site: &Site) -> anyhow::Result<()> {
        let mut all = Listing {
            packets: Vec::new(),
            unreadable: Vec::new(),
            sealed: Vec::new(),
        };
        for (bay, dir, assessed) in bays(site) {
            let entries = packets::bay_entries(&dir)?;
            let (files, sealed) = split_sealed(Some(site), &entries.files)?;
            let (groups, mut bad) = packets::group_files(&files);
            bad.extend(
                entries
                    .odd
                    .into_iter()
                    .map(|(p, what)| (p, not_regular_text(&what))),
            );
            let docs = groups
                .iter()
                .map(|g| self.describe(Some(site), g, (Some(bay), assessed)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if self.json {
                all.unreadable.extend(unreadable_docs(bad, Some(bay)));
                all.packets.extend(docs);
                all.sealed.extend(sealed);
                continue;
            }
            say_bay(ctx, bay, &dir, groups.len() + sealed.len(), bad.len());
            say_sealed(ctx, &sealed);
            say_unreadable(ctx, &bad);
            for (g, d) in groups.iter().zip(&docs) {
                say_packet(ctx, g, d);
            }
        }
        if self.json {
            return ctx.json(&all);
        }
        Ok(())
    }

    /// The description of one packet. `site`: the site it is listed at (it names replicas);
    /// `bay`: the bay it was listed from, and whether to say if it can be imported at the site.
    fn describe(
        &self,
        site: Option<&Site>,
        g: &Group,
        (bay, assessed): (Option<&'static str>, bool),
    ) -> anyhow::Result<PacketDoc> {
        let c = packets::read_contents(g, self.long);
        let h = &g.header;
        let n = Namer { site, header: h };
        let (importable_here, here) = match site.filter(|_| assessed) {
            Some(s) => {
                let (v, t) = assess(s, g)?;
                (Some(v), Some(t))
            }
            None => (None, None),
        };
        let id = PacketId(g.lp.packet_id.0);
        let signature = match site {
            Some(s) => s.replica.signature_status(h, g.lp.kind, &id)?,
            None => msite_core::sync::signature_status_listed(h, g.lp.kind, &id),
        };
        let entry_list = self.long.then(|| entry_docs(&n, &c.entries));
        Ok(PacketDoc {
            files: g.paths(),
            bay,
            packet_id: g.lp.packet_id.to_hex(),
            kind: kind_name(g.lp.kind),
            format_version: g.lp.version.to_string(),
            parts: g.lp.part_count,
            parts_present: g.lp.parts.len(),
            complete: g.complete(),
            family: FamilyDoc {
                name: h.family_name.clone(),
                id: h.family.to_hex(),
            },
            sender: SenderDoc {
                name: n.name(&h.sender.0),
                id: h.sender.to_hex(),
                incarnation: h.sender_incarnation,
            },
            targets: h.targets.iter().map(|t| target_doc(&n, t)).collect(),
            base_row: NamedRow::new(h.bases.iter().map(|b| (n.name(&b.origin.0), b.number))),
            sender_row: n.row(&h.sender_row),
            entries: c.entry_count,
            entries_per_origin: origin_docs(&n, &c.per_origin),
            contents: c.blobs,
            content_bytes: c.blob_bytes,
            bytes: c.bytes,
            controls: h.controls.iter().map(|x| ControlDoc::new(&n, x)).collect(),
            created: util::utc_time(h.created_ms),
            verified: c.verified,
            problem: c.problem,
            signature: SignatureDoc::new(&signature, site.is_some()),
            importable_here,
            here,
            entry_list,
        })
    }
}

/// The usage error of `lspacket` without files outside a site.
fn no_site(ctx: &Ctx) -> Exit {
    let dir = if ctx.dir == Path::new(".") {
        "the current directory".to_string()
    } else {
        util::esc_path(&ctx.dir)
    };
    Exit {
        code: crate::util::EXIT_USAGE,
        message: Some(format!(
            "error: no packet files given and {dir} holds no site; give packet files (`msite lspacket FILE…`), or run inside a site (or with -C DIR) to list the packets in its bays"
        )),
    }
}

fn kind_name(kind: wire::Kind) -> &'static str {
    match kind {
        wire::Kind::Update => "update",
        wire::Kind::ReplicaCreation => "replica_creation",
    }
}

fn target_doc(n: &Namer<'_>, t: &wire::Target) -> TargetDoc {
    TargetDoc {
        name: n.name(&t.replica.0),
        id: t.replica.to_hex(),
        incarnation: t.incarnation,
        packet_seq: t.packet_seq,
    }
}

fn origin_docs(
    n: &Namer<'_>,
    per_origin: &std::collections::BTreeMap<ReplicaId, packets::OriginEntries>,
) -> Vec<OriginDoc> {
    per_origin
        .iter()
        .map(|(o, e)| OriginDoc {
            origin: n.name(&o.0),
            entries: e.count,
            first: e.first,
            last: e.last,
        })
        .collect()
}

fn entry_docs(n: &Namer<'_>, entries: &[(ReplicaId, u64, String)]) -> Vec<EntryDoc> {
    entries
        .iter()
        .map(|(o, number, op)| EntryDoc {
            origin: n.name(&o.0),
            number: *number,
            op: op.clone(),
        })
        .collect()
}

fn unreadable_docs(bad: Vec<(PathBuf, String)>, bay: Option<&'static str>) -> Vec<UnreadableDoc> {
    bad.into_iter()
        .map(|(file, error)| UnreadableDoc { file, bay, error })
        .collect()
}

fn say_sealed(ctx: &Ctx, sealed: &[SealedDoc]) {
    for d in sealed {
        ctx.say(d.text());
    }
}

/// Prints one packet's description as text.
fn say_packet(ctx: &Ctx, g: &Group, d: &PacketDoc) {
    ctx.say(format!("packet {}", g.display()));
    if let Some(bay) = d.bay {
        ctx.say(format!("  bay: {bay}"));
    }
    let problems = match g.complete() {
        true => String::new(),
        false => format!(" ({})", g.problems()),
    };
    ctx.say(format!(
        "  kind: {}, format {}, {}{problems}, id {}",
        d.kind,
        g.lp.version,
        util::count(g.lp.part_count as u64, "part", "parts"),
        d.packet_id
    ));
    ctx.say(format!(
        "  family: {} ({})",
        util::esc(&d.family.name),
        d.family.id
    ));
    ctx.say(format!(
        "  sender: {} (incarnation {})",
        plain(&d.sender.name),
        incarnation_text(d.sender.incarnation)
    ));
    let targets = d.targets.iter().map(|t| {
        format!(
            "{} (incarnation {}, packet {})",
            plain(&t.name),
            incarnation_text(t.incarnation),
            t.packet_seq
        )
    });
    ctx.say(format!(
        "  targets: {}",
        util::bounded_list(targets, ", ", TARGETS_MAX)
    ));
    ctx.say(format!("  base row: {}", d.base_row.text()));
    ctx.say(format!("  sender's row: {}", d.sender_row.text()));
    say_contents(ctx, d);
}

/// Prints what a packet carries, whether it verified, and whether it can be imported here.
fn say_contents(ctx: &Ctx, d: &PacketDoc) {
    let per: Vec<String> = d.entries_per_origin.iter().map(OriginDoc::text).collect();
    let per = match per.is_empty() {
        true => String::new(),
        false => format!(" ({})", util::bounded_list(per, ", ", LIST_MAX)),
    };
    ctx.say(format!("  entries: {}{per}", d.entries));
    ctx.say(format!(
        "  content blobs: {} ({})",
        d.contents,
        util::human_size(d.content_bytes)
    ));
    for ctl in &d.controls {
        ctx.say(ctl.text());
    }
    ctx.say(format!("  created: {}, {} bytes", d.created, d.bytes));
    let listed = match d.signature.keys {
        "listed" => {
            " (checked with the keys the packet lists; run inside a site to check with its keys)"
        }
        _ => "",
    };
    ctx.say(format!("  signature: {}{listed}", d.signature.text));
    let verified = match (d.verified, &d.problem) {
        (true, _) => "yes".to_string(),
        (false, Some(p)) => format!("no: {}", plain(p)),
        (false, None) => "no".to_string(),
    };
    ctx.say(format!("  verified: {verified}"));
    if let Some(here) = &d.here {
        ctx.say(format!("  here: {}", util::esc(here)));
    }
    for e in d.entry_list.iter().flatten() {
        ctx.say(format!(
            "    {}:{} {}",
            plain(&e.origin),
            e.number,
            plain(&e.op)
        ));
    }
}

/// Text from a packet for people: control characters escaped, at most 500 characters (a
/// problem quoted from a packet can be long).
fn plain(s: &str) -> String {
    util::bounded_line(&util::esc(s), 500)
}
/// The line that opens a bay's listing: where it is and what it holds, or that it is empty.
fn say_bay(ctx: &Ctx, bay: &str, dir: &Path, packets: usize, unreadable: usize) {
    let what = match (packets, unreadable) {
        (0, 0) => "empty".to_string(),
        (p, 0) => util::count(p as u64, "packet", "packets"),
        (p, u) => format!(
            "{}, {}",
            util::count(p as u64, "packet", "packets"),
            util::count(
                u as u64,
                "file that is no readable packet",
                "files that are no readable packet"
            )
        ),
    };
    ctx.say(format!("{bay} bay ({}): {what}", util::esc_path(dir)));
}

fn say_unreadable(ctx: &Ctx, bad: &[(PathBuf, String)]) {
    for (p, why) in bad {
        ctx.say(format!(
            "{}: unreadable: {}",
            util::esc_path(p),
            util::bounded_line(&util::esc(why), 500)
        ));
    }
}
