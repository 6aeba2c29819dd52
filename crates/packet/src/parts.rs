//! Logical packets made of part files: grouping parts by packet id ([`group_parts`]), reporting
//! missing, duplicated and inconsistent parts precisely, and reading a complete logical packet
//! in part order ([`LogicalPacket::records`]).

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::DecodeError;
use crate::format::{self, Envelope, FormatVersion};
use crate::read::{open, open_regular, PacketInfo, Record, Records};
use crate::wire::{Id, Kind};

/// Reads and verifies only the envelope of a part file (48 bytes), not its header or body.
pub fn part_info(path: impl AsRef<Path>) -> Result<PacketInfo, DecodeError> {
    let path = path.as_ref();
    let r = (|| {
        let mut f = open_regular(path)?;
        let mut b = [0u8; format::ENVELOPE_LEN];
        let mut got = 0;
        while got < b.len() {
            match f.read(&mut b[got..])? {
                0 => break,
                n => got += n,
            }
        }
        if got == 0 {
            return Err(DecodeError::Empty);
        }
        Envelope::check_prefix(&b[..got])?;
        if got < b.len() {
            return Err(DecodeError::Truncated {
                offset: got as u64,
                what: "envelope",
            });
        }
        let env = Envelope::parse(&b)?;
        Ok(PacketInfo {
            version: env.version,
            kind: env.kind,
            part: env.part_index,
            parts: env.part_count,
            packet_id: env.packet_id,
        })
    })();
    r.map_err(|e| e.in_file(path))
}

/// Something wrong with the set of parts of one logical packet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartProblem {
    /// Parts are missing: every index in `ranges` (inclusive, ascending, disjoint). There are
    /// at most as many ranges as part files found, plus one, whatever the claimed count.
    Missing {
        /// The packet.
        packet: Id,
        /// The missing indexes, as inclusive ranges.
        ranges: Vec<(u32, u32)>,
        /// The number of parts.
        count: u32,
    },
    /// Several files claim to be the same part.
    Duplicate {
        /// The packet.
        packet: Id,
        /// The part's index.
        index: u32,
        /// The number of parts.
        count: u32,
        /// The files.
        paths: Vec<PathBuf>,
    },
    /// A part disagrees with the others on the part count, kind or version.
    Inconsistent {
        /// The packet.
        packet: Id,
        /// The odd file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
}

impl fmt::Display for PartProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartProblem::Missing {
                packet,
                ranges,
                count,
            } => match ranges.as_slice() {
                [(a, b)] if a == b => {
                    write!(f, "part {a} of {count} of packet {packet} is missing")
                }
                _ => write!(
                    f,
                    "parts {} of {count} of packet {packet} are missing ({} parts)",
                    range_list(ranges),
                    missing_count(ranges)
                ),
            },
            PartProblem::Duplicate {
                packet,
                index,
                count,
                paths,
            } => {
                write!(
                    f,
                    "part {index} of {count} of packet {packet} is given {} times:",
                    paths.len()
                )?;
                for p in paths.iter().take(SHOWN) {
                    write!(f, " {}", p.display())?;
                }
                if paths.len() > SHOWN {
                    write!(f, " and {} more", paths.len() - SHOWN)?;
                }
                Ok(())
            }
            PartProblem::Inconsistent {
                packet,
                path,
                reason,
            } => {
                write!(f, "{}: part of packet {packet} {reason}", path.display())
            }
        }
    }
}

/// How many items a message lists before it says "and N more": every message about parts is
/// bounded, whatever number of parts or files a packet claims.
const SHOWN: usize = 3;

/// `2, 4-7, 9` for the first [`SHOWN`] ranges, then `and N more ranges`.
fn range_list(ranges: &[(u32, u32)]) -> String {
    let mut text = ranges
        .iter()
        .take(SHOWN)
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    if ranges.len() > SHOWN {
        text.push_str(&format!(" and {} more ranges", ranges.len() - SHOWN));
    }
    text
}

fn missing_count(ranges: &[(u32, u32)]) -> u64 {
    ranges.iter().map(|(a, b)| u64::from(b - a) + 1).sum()
}

/// The part files of one logical packet, as found by [`group_parts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalPacket {
    /// The logical packet id.
    pub packet_id: Id,
    /// Its kind (from its first part).
    pub kind: Kind,
    /// Format version (from its first part).
    pub version: FormatVersion,
    /// Number of parts (from its first part).
    pub part_count: u32,
    /// The part files found, ordered by part index (duplicates included, in input order).
    pub parts: Vec<(u32, PathBuf)>,
    /// What is wrong; empty when the packet is complete.
    pub problems: Vec<PartProblem>,
}

impl LogicalPacket {
    /// True when every part is present once and the parts agree.
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }

    /// What is wrong, as one bounded sentence: the first few problems, then how many more.
    pub fn problems_text(&self) -> String {
        let mut text = self
            .problems
            .iter()
            .take(SHOWN)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        if self.problems.len() > SHOWN {
            text.push_str(&format!(
                "; and {} more problems",
                self.problems.len() - SHOWN
            ));
        }
        text
    }

    /// The part files in order (one per index), if the packet is complete.
    pub fn ordered_paths(&self) -> Result<Vec<PathBuf>, DecodeError> {
        if !self.problems.is_empty() {
            return Err(DecodeError::Parts(self.problems_text()));
        }
        Ok(self.parts.iter().map(|(_, p)| p.clone()).collect())
    }

    /// Reads every record of the complete logical packet, part after part, verifying each part
    /// fully and checking that it belongs to this packet and carries the same header.
    pub fn records(&self) -> Result<LogicalRecords, DecodeError> {
        LogicalRecords::new(self.packet_id, self.ordered_paths()?)
    }
}

/// The result of [`group_parts`].
#[derive(Debug)]
pub struct GroupedParts {
    /// Logical packets, in the order their first part was given.
    pub packets: Vec<LogicalPacket>,
    /// Files whose envelope could not be read, with why.
    pub unreadable: Vec<(PathBuf, DecodeError)>,
}

/// Groups part files by logical packet id and orders them by part index; reports missing,
/// duplicated and inconsistent parts. Reads only each file's envelope.
pub fn group_parts(paths: &[PathBuf]) -> GroupedParts {
    let mut packets: Vec<LogicalPacket> = Vec::new();
    let mut unreadable = Vec::new();
    for path in paths {
        let info = match part_info(path) {
            Ok(i) => i,
            Err(e) => {
                unreadable.push((path.clone(), e));
                continue;
            }
        };
        let lp = match packets.iter_mut().find(|p| p.packet_id == info.packet_id) {
            Some(lp) => lp,
            None => {
                packets.push(LogicalPacket {
                    packet_id: info.packet_id,
                    kind: info.kind,
                    version: info.version,
                    part_count: info.parts,
                    parts: Vec::new(),
                    problems: Vec::new(),
                });
                let last = packets.len() - 1;
                &mut packets[last]
            }
        };
        let mut reasons = Vec::new();
        if info.parts != lp.part_count {
            reasons.push(format!(
                "says it has {} parts, not {}",
                info.parts, lp.part_count
            ));
        }
        if info.kind != lp.kind {
            reasons.push(format!("is of kind {:?}, not {:?}", info.kind, lp.kind));
        }
        if info.version != lp.version {
            reasons.push(format!("has format {}, not {}", info.version, lp.version));
        }
        if reasons.is_empty() {
            lp.parts.push((info.part, path.clone()));
        } else {
            lp.problems.push(PartProblem::Inconsistent {
                packet: lp.packet_id,
                path: path.clone(),
                reason: reasons.join(", "),
            });
        }
    }
    for lp in &mut packets {
        lp.parts.sort_by_key(|(i, _)| *i);
        let mut problems = part_set_problems(lp);
        problems.append(&mut lp.problems);
        lp.problems = problems;
    }
    GroupedParts {
        packets,
        unreadable,
    }
}

/// The missing and duplicated parts of `lp` (whose parts are sorted by index), in time
/// linear in the files found, not in the part count the files claim.
fn part_set_problems(lp: &LogicalPacket) -> Vec<PartProblem> {
    let mut problems = Vec::new();
    let mut ranges = Vec::new();
    let mut next = 1u32;
    for chunk in lp.parts.chunk_by(|a, b| a.0 == b.0) {
        let index = chunk[0].0;
        if index > next {
            ranges.push((next, index - 1));
        }
        next = index.saturating_add(1);
        if chunk.len() > 1 {
            problems.push(PartProblem::Duplicate {
                packet: lp.packet_id,
                index,
                count: lp.part_count,
                paths: chunk.iter().map(|(_, p)| p.clone()).collect(),
            });
        }
    }
    if next <= lp.part_count {
        ranges.push((next, lp.part_count));
    }
    if !ranges.is_empty() {
        problems.insert(
            0,
            PartProblem::Missing {
                packet: lp.packet_id,
                ranges,
                count: lp.part_count,
            },
        );
    }
    problems
}

/// Reads the given part files as one logical packet: they must all be parts of one packet,
/// each part exactly once. Returns the complete packet, or an error naming what is wrong (a
/// part of another packet, a missing or duplicated part, an unreadable file).
pub fn logical_packet(paths: &[PathBuf]) -> Result<LogicalPacket, DecodeError> {
    let g = group_parts(paths);
    if let Some((_, e)) = g.unreadable.into_iter().next() {
        return Err(e);
    }
    let mut packets = g.packets.into_iter();
    let first = packets
        .next()
        .ok_or_else(|| DecodeError::Parts("no packet files given".into()))?;
    if let Some(other) = packets.next() {
        let path = other
            .parts
            .first()
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        return Err(DecodeError::WrongPacket {
            expected: first.packet_id,
            found: other.packet_id,
        }
        .in_file(path));
    }
    if !first.problems.is_empty() {
        return Err(DecodeError::Parts(first.problems_text()));
    }
    Ok(first)
}

/// Iterator over the records of a logical packet, part after part; see
/// [`LogicalPacket::records`]. Ends cleanly only after the last part's trailer is verified.
pub struct LogicalRecords {
    packet_id: Id,
    paths: Vec<PathBuf>,
    next_part: usize,
    first: Option<(PacketInfo, Vec<u8>)>,
    current: Option<Records<BufReader<File>>>,
    failed: bool,
}

impl LogicalRecords {
    fn new(packet_id: Id, paths: Vec<PathBuf>) -> Result<Self, DecodeError> {
        let mut me = LogicalRecords {
            packet_id,
            paths,
            next_part: 0,
            first: None,
            current: None,
            failed: false,
        };
        me.open_next()?;
        Ok(me)
    }

    /// The header of the packet (from its first part).
    pub fn header(&self) -> Option<&crate::wire::Header> {
        self.current.as_ref().map(|r| r.header())
    }

    fn open_next(&mut self) -> Result<bool, DecodeError> {
        let Some(path) = self.paths.get(self.next_part) else {
            self.current = None;
            return Ok(false);
        };
        let r = open(path)?;
        let info = r.info().clone();
        let err = |e: DecodeError| Err(e.in_file(path));
        if info.packet_id != self.packet_id {
            return err(DecodeError::WrongPacket {
                expected: self.packet_id,
                found: info.packet_id,
            });
        }
        let index = self.next_part as u32 + 1;
        if info.part != index || info.parts != self.paths.len() as u32 {
            return err(DecodeError::Parts(format!(
                "expected part {index} of {}, found part {} of {}",
                self.paths.len(),
                info.part,
                info.parts
            )));
        }
        match &self.first {
            None => self.first = Some((info, r.header_bytes().to_vec())),
            Some((fi, fh)) => {
                if fi.kind != info.kind || fi.version != info.version {
                    return err(DecodeError::Parts(
                        "part differs from part 1 in kind or version".into(),
                    ));
                }
                if fh.as_slice() != r.header_bytes() {
                    return err(DecodeError::Parts(
                        "part carries a different header than part 1".into(),
                    ));
                }
            }
        }
        self.current = Some(r.records());
        self.next_part += 1;
        Ok(true)
    }
}

impl Iterator for LogicalRecords {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let cur = self.current.as_mut()?;
            match cur.next() {
                Some(Ok(r)) => return Some(Ok(r)),
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                None => match self.open_next() {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                },
            }
        }
    }
}

impl std::iter::FusedIterator for LogicalRecords {}

/// Reads a multi-part packet held in memory (parts in any order), verifying each part and that
/// they form exactly one complete logical packet. For the simulator and tests.
pub fn decode_parts<R: Read>(
    parts: impl IntoIterator<Item = R>,
) -> Result<(PacketInfo, crate::wire::Header, Vec<Record>), DecodeError> {
    let mut read = Vec::new();
    for p in parts {
        let r = crate::read::PacketReader::new(p)?;
        let info = r.info().clone();
        let header_bytes = r.header_bytes().to_vec();
        let header = r.header().clone();
        let recs = r.records().collect::<Result<Vec<_>, _>>()?;
        read.push((info, header_bytes, header, recs));
    }
    read.sort_by_key(|(i, ..)| i.part);
    let Some((first, fh, header, _)) = read.first() else {
        return Err(DecodeError::Parts("no parts given".into()));
    };
    let (first, fh, header) = (first.clone(), fh.clone(), header.clone());
    for (k, (info, hb, _, _)) in read.iter().enumerate() {
        if info.packet_id != first.packet_id {
            return Err(DecodeError::WrongPacket {
                expected: first.packet_id,
                found: info.packet_id,
            });
        }
        if info.part != k as u32 + 1
            || info.parts != read.len() as u32
            || info.kind != first.kind
            || info.version != first.version
            || *hb != fh
        {
            return Err(DecodeError::Parts(format!(
                "parts of packet {} do not form a complete packet: have {} parts, \
                 part {} says it is part {} of {}",
                first.packet_id,
                read.len(),
                k + 1,
                info.part,
                info.parts
            )));
        }
    }
    let records = read.into_iter().flat_map(|(.., r)| r).collect();
    let info = PacketInfo { part: 1, ..first };
    Ok((info, header, records))
}
