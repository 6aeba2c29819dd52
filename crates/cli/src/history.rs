//! The packet history of a site: `history.jsonl` in the site directory, one JSON record per
//! line for each packet that came in (applied, already applied, refused) or went out
//! (exported, shipped). `syncreplica import`/`export` and `msite serve` (its imports and
//! exports run the same functions; its shippers and receiver add `shipped` and pushed
//! packets refused at the door) append to it; `msite status` and the status page read it for
//! "last packet in / out" per sibling and the history view.
//!
//! Rules kept: the file is bounded — when it passes [`MAX_BYTES`] the oldest records are
//! dropped, keeping the newest [`KEEP`] (written to a temporary file and renamed over, so a
//! reader sees the old file or the new one); writers take the OS lock of `history.lock`, so
//! the daemon's threads and an operator's command never interleave or lose a record; every
//! text field is bounded (names and reasons come from packets and may be hostile) and a line
//! that does not parse is skipped by readers, never fatal. Recording is best effort: a failure
//! is logged and the command's own outcome stands.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The history file's name in the site directory.
pub const HISTORY_FILE: &str = "history.jsonl";
/// The lock file writers take.
pub const LOCK_FILE: &str = "history.lock";
/// The size past which the oldest records are dropped.
pub const MAX_BYTES: u64 = 1 << 20;
/// How many records are kept when the file is cut back.
pub const KEEP: usize = 2000;
/// The longest packet name kept.
const MAX_NAME: usize = 200;
/// The longest detail (a reason) kept.
const MAX_DETAIL: usize = 300;

/// Which way a packet went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Arrived at this site.
    In,
    /// Written or shipped by this site.
    Out,
}

/// What became of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Imported: its entries applied.
    Applied,
    /// Imported before; nothing changed.
    Already,
    /// Refused (moved to the refused bay, or turned away at the daemon's door).
    Refused,
    /// Written into the outgoing bay (or `--out DIR`).
    Exported,
    /// Delivered along the routes file.
    Shipped,
}

impl Outcome {
    /// Whether the exchange succeeded (for "last successful exchange").
    pub fn ok(self) -> bool {
        !matches!(self, Outcome::Refused)
    }

    /// The word used in listings.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Already => "already applied",
            Outcome::Refused => "refused",
            Outcome::Exported => "exported",
            Outcome::Shipped => "shipped",
        }
    }
}

/// One record of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// In or out.
    pub dir: Direction,
    /// The sibling it came from or went to (`None`: not known, e.g. a file that is no packet).
    pub sibling: Option<String>,
    /// The packet's (first part's) file name.
    pub packet: String,
    /// Its size in bytes (all parts).
    pub bytes: u64,
    /// What became of it.
    pub outcome: Outcome,
    /// Why, for a refusal; where to, for a shipment through a hub.
    pub detail: Option<String>,
}

impl Record {
    /// A record made now, its texts bounded.
    pub fn now(
        dir: Direction,
        sibling: Option<&str>,
        packet: &str,
        bytes: u64,
        outcome: Outcome,
        detail: Option<&str>,
    ) -> Record {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Record {
            at_ms,
            dir,
            sibling: sibling.map(|s| crate::util::bounded_line(s, MAX_NAME)),
            packet: crate::util::bounded_line(packet, MAX_NAME),
            bytes,
            outcome,
            detail: detail.map(|d| crate::util::bounded_line(d, MAX_DETAIL)),
        }
    }
}

/// The history file of site `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(HISTORY_FILE)
}

/// Appends `rec` to the history of site `dir`; a failure is logged, not returned.
pub fn record(dir: &Path, rec: Record) {
    if let Err(e) = append(dir, &[rec]) {
        tracing::warn!(site = %dir.display(), error = %format!("{e:#}"), "cannot record the packet in the site's history");
    }
}

/// Appends `recs` under the writers' lock, then cuts the file back if it grew past
/// [`MAX_BYTES`].
pub fn append(dir: &Path, recs: &[Record]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .with_context(|| format!("cannot open {}", dir.join(LOCK_FILE).display()))?;
    lock.lock().context("cannot lock the history")?;
    let file = path(dir);
    let mut text = String::new();
    for r in recs {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    let mut f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    if f.metadata().map(|m| m.len()).unwrap_or(0) > MAX_BYTES {
        cut_back(&file, KEEP)?;
    }
    Ok(())
}

/// Keeps the newest `keep` lines of `file` (atomically: a temporary file renamed over it).
fn cut_back(file: &Path, keep: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(keep);
    let tmp = file.with_extension("jsonl.tmp");
    let mut out = lines[start..].join("\n");
    out.push('\n');
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Every record of site `dir`'s history, oldest first; lines that do not parse are skipped
/// (counted in the second value). No history yet: none.
pub fn read(dir: &Path) -> (Vec<Record>, usize) {
    let Ok(f) = std::fs::File::open(path(dir)) else {
        return (Vec::new(), 0);
    };
    let mut out = Vec::new();
    let mut bad = 0;
    for line in std::io::BufReader::new(f).lines() {
        let Ok(line) = line else {
            bad += 1;
            continue;
        };
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => out.push(r),
            Err(_) if line.trim().is_empty() => {}
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Record {
        Record::now(
            Direction::In,
            Some("boston"),
            &format!("sync_{i}.msp"),
            i,
            Outcome::Applied,
            None,
        )
    }

    #[test]
    fn records_come_back_in_order_and_bad_lines_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        record(d.path(), rec(1));
        std::fs::OpenOptions::new()
            .append(true)
            .open(path(d.path()))
            .unwrap()
            .write_all(b"{not json\n\n")
            .unwrap();
        record(d.path(), rec(2));
        let (recs, bad) = read(d.path());
        assert_eq!(recs.iter().map(|r| r.bytes).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(bad, 1);
    }

    #[test]
    fn the_file_stays_bounded_and_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let batch: Vec<Record> = (0..KEEP as u64 * 10).map(rec).collect();
        for chunk in batch.chunks(500) {
            append(d.path(), chunk).unwrap();
        }
        let size = std::fs::metadata(path(d.path())).unwrap().len();
        assert!(size <= MAX_BYTES, "{size} bytes");
        let (recs, _) = read(d.path());
        assert!(
            recs.len() >= KEEP && recs.len() < KEEP * 4,
            "{}",
            recs.len()
        );
        assert_eq!(recs.last().unwrap().bytes, KEEP as u64 * 10 - 1);
    }

    #[test]
    fn hostile_texts_are_bounded() {
        let long = "x".repeat(10_000);
        let r = Record::now(
            Direction::Out,
            Some(&long),
            &long,
            0,
            Outcome::Refused,
            Some(&long),
        );
        assert!(r.packet.chars().count() < MAX_NAME + 40);
        assert!(r.sibling.unwrap().chars().count() < MAX_NAME + 40);
        assert!(r.detail.unwrap().chars().count() < MAX_DETAIL + 40);
    }
}
