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

    /// What is wrong with the set of parts, as one sentence.
    pub fn problems(&self) -> String {
        self.lp
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A short name for messages: the first part's file name.
    pub fn display(&self) -> String {
        let name = self
            .lp
            .parts
            .first()
            .and_then(|(_, p)| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
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

/// The packet part files in `dir` (`*.msp`, not hidden), sorted by name.
pub fn bay_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for ent in rd {
        let ent = ent.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = ent.path();
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) == Some(PACKET_EXT) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
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
