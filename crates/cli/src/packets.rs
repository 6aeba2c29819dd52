//! Packet files as the CLI meets them: listing a bay, grouping part files into logical packets
//! (with the packet crate's [`msite_packet::group_parts`]), and reading a packet through for
//! `msite lspacket` ([`msite_packet::summarize`], [`msite_packet::entries`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use msite_core::ReplicaId;
use msite_packet::{wire, LogicalPacket};

/// The extension of packet part files.
pub const PACKET_EXT: &str = "msp";

/// A logical packet found among files: the packet crate's grouping plus its header.
#[derive(Clone, Debug)]
pub struct Group {
    /// The part files and what is wrong with them.
    pub lp: LogicalPacket,
    /// The header, read from the first readable part.
    pub header: wire::Header,
}

impl Group {
    /// Whether every part is present once.
    pub fn complete(&self) -> bool {
        self.lp.is_complete()
    }

    /// The part files, in part order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lp.parts.iter().map(|(_, p)| p.clone()).collect()
    }

    /// What is wrong with the set of parts, as one bounded sentence.
    pub fn problems(&self) -> String {
        crate::util::esc(&self.lp.problems_text())
    }

    /// A short name for messages: the first part's file name.
    pub fn display(&self) -> String {
        let name = self
            .lp
            .parts
            .first()
            .and_then(|(_, p)| p.file_name())
            .map(|n| crate::util::esc(&n.to_string_lossy()))
            .unwrap_or_else(|| self.lp.packet_id.to_hex());
        if self.lp.part_count > 1 {
            format!(
                "{name} ({} of {} parts)",
                self.lp.parts.len(),
                self.lp.part_count
            )
        } else {
            name
        }
    }

    /// The sender's packet sequence number towards `target` (0 when not addressed to it).
    pub fn seq_for(&self, target: &ReplicaId) -> u64 {
        self.header
            .targets
            .iter()
            .find(|t| t.replica.0 == target.0)
            .map(|t| t.packet_seq)
            .unwrap_or(0)
    }
}

/// The packet part files in `dir` (`*.msp`, not hidden, regular), sorted by name.
pub fn bay_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(bay_entries(dir)?.files)
}

/// What a bay holds under packet names.
#[derive(Debug, Default)]
pub struct BayEntries {
    /// Regular files (or links to them) named `*.msp`, sorted by name.
    pub files: Vec<PathBuf>,
    /// Entries named `*.msp` that are no regular file, with what they are (`a FIFO`, `a
    /// directory`, `a dangling symbolic link`): never opened, since opening a FIFO blocks.
    pub odd: Vec<(PathBuf, String)>,
}

/// The entries of `dir` named like packet part files (`*.msp`, not hidden), sorted by name.
pub fn bay_entries(dir: &Path) -> anyhow::Result<BayEntries> {
    let mut out = BayEntries::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for ent in rd {
        let ent = ent.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = ent.path();
        let hidden = ent.file_name().to_string_lossy().starts_with('.');
        if hidden || path.extension().and_then(|e| e.to_str()) != Some(PACKET_EXT) {
            continue;
        }
        match not_regular(&path) {
            None => out.files.push(path),
            Some(what) => out.odd.push((path, what)),
        }
    }
    out.files.sort();
    out.odd.sort();
    Ok(out)
}

/// What `path` is when it is no regular file (after following links), found without opening
/// it; `None` for a regular file.
pub fn not_regular(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) => Some(msite_packet::file_kind(m.file_type()).to_string()),
        Err(e) if std::fs::symlink_metadata(path).is_ok() => {
            Some(if e.kind() == std::io::ErrorKind::NotFound {
                "a dangling symbolic link".to_string()
            } else {
                format!("a symbolic link that cannot be followed: {}", e.kind())
            })
        }
        Err(e) => Some(format!("unreadable ({})", e.kind())),
    }
}

/// Checks that every file given by path exists and is a regular file, before any is opened.
pub fn check_given(paths: &[PathBuf]) -> anyhow::Result<()> {
    for f in paths {
        if std::fs::symlink_metadata(f).is_err() {
            anyhow::bail!(
                "packet file {} does not exist; check the path",
                crate::util::esc_path(f)
            );
        }
        if let Some(what) = not_regular(f) {
            anyhow::bail!(
                "{} is not a regular file ({what}); give a packet file",
                crate::util::esc_path(f)
            );
        }
    }
    Ok(())
}

/// Groups part files into logical packets. Files that cannot be read are returned apart, each
/// with the reason.
pub fn group_files(paths: &[PathBuf]) -> (Vec<Group>, Vec<(PathBuf, String)>) {
    let grouped = msite_packet::group_parts(paths);
    let mut bad: Vec<(PathBuf, String)> = grouped
        .unreadable
        .into_iter()
        .map(|(p, e)| (p, e.to_string()))
        .collect();
    let mut out = Vec::new();
    for lp in grouped.packets {
        let mut header = None;
        for (_, p) in &lp.parts {
            match msite_packet::open(p) {
                Ok(r) => {
                    header = Some(r.header().clone());
                    break;
                }
                Err(e) => bad.push((p.clone(), e.to_string())),
            }
        }
        if let Some(header) = header {
            out.push(Group { lp, header });
        }
    }
    (out, bad)
}

/// The given files plus, for a packet given with some parts only, its other parts found next
/// to them.
pub fn with_sibling_parts(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths.to_vec();
    let grouped = msite_packet::group_parts(paths);
    for lp in grouped.packets.iter().filter(|lp| !lp.is_complete()) {
        let Some(dir) = lp.parts.first().and_then(|(_, p)| p.parent()) else {
            continue;
        };
        let Ok(neighbours) = bay_files(dir) else {
            continue;
        };
        let near = msite_packet::group_parts(&neighbours);
        for n in near
            .packets
            .into_iter()
            .filter(|n| n.packet_id == lp.packet_id)
        {
            for (_, f) in n.parts {
                if !out.iter().any(|o| same_file(o, &f)) {
                    out.push(f);
                }
            }
        }
    }
    out
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Per-origin counts of the entries a packet carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginEntries {
    /// Entries.
    pub count: u64,
    /// Lowest number.
    pub first: u64,
    /// Highest number.
    pub last: u64,
}

/// What reading a whole packet found.
#[derive(Clone, Debug, Default)]
pub struct Contents {
    /// Entries per origin.
    pub per_origin: BTreeMap<ReplicaId, OriginEntries>,
    /// Entries, in packet order (kept only when asked): origin, number, operation name.
    pub entries: Vec<(ReplicaId, u64, String)>,
    /// Number of entries.
    pub entry_count: u64,
    /// Number of content records.
    pub blobs: u64,
    /// Bytes of content.
    pub blob_bytes: u64,
    /// Total size of the part files.
    pub bytes: u64,
    /// Whether every part was read and verified.
    pub verified: bool,
    /// The first problem found, if any.
    pub problem: Option<String>,
}

/// Reads a packet's parts through, verifying each, and counts what they hold.
pub fn read_contents(g: &Group, keep_entries: bool) -> Contents {
    let mut c = Contents {
        verified: true,
        ..Default::default()
    };
    for (_, path) in &g.lp.parts {
        match msite_packet::summarize(path) {
            Ok(s) => {
                c.entry_count += s.entries;
                c.blobs += s.blobs;
                c.blob_bytes += s.blob_bytes;
                c.bytes += s.bytes;
                for o in s.per_origin {
                    let slot = c.per_origin.entry(ReplicaId(o.origin.0)).or_default();
                    if slot.count == 0 || o.first < slot.first {
                        slot.first = o.first;
                    }
                    slot.last = slot.last.max(o.last);
                    slot.count += o.entries;
                }
            }
            Err(e) => {
                c.verified = false;
                c.problem.get_or_insert(e.to_string());
                continue;
            }
        }
        if keep_entries {
            match msite_packet::entries(path) {
                Ok(it) => {
                    for e in it {
                        match e {
                            Ok(e) => {
                                let op = msite_core::Op::from_wire(&e.op).name().to_string();
                                c.entries.push((ReplicaId(e.origin.0), e.number, op));
                            }
                            Err(e) => {
                                c.verified = false;
                                c.problem.get_or_insert(e.to_string());
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    c.verified = false;
                    c.problem.get_or_insert(e.to_string());
                }
            }
        }
    }
    if !g.complete() {
        c.verified = false;
        c.problem.get_or_insert(g.problems());
    }
    c
}
