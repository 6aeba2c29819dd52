//! The daemon's rounds, on one thread: import what the incoming bay holds (the import path of
//! `syncreplica import`), export for every sibling of the routes file whose export is due, and
//! wake the shippers (with `--once`: ship the outgoing bay itself). A round runs on every arrival (the receiver wakes the worker) and every
//! `poll` interval.
//!
//! Rules kept: no export for a sibling while a packet of this replica for it waits in the
//! outgoing bay (it would repeat what is queued; the next export after delivery carries it
//! all); otherwise an export for a sibling is due when the entries this replica holds changed since
//! the last round's exports (the operator's changes and this round's imports alike: a hub passes
//! on what it received), and otherwise every `export_every` (which also carries
//! acknowledgements and restoration answers); a store that cannot be opened now (an
//! operator's command holds it) skips the round's import and exports, which the next round does;
//! the bay is imported when its files or the entries held changed since the last import (or
//! every 30 s), so packets that must wait are not re-read every second; the stop flag is looked
//! at between steps, never inside one; when the operator set a restore window (`msite scrub
//! --keep`), the first round and then one round an hour scrub the oplog (docs/protocol.md §9),
//! logging what was kept and why; a scrub the replica refuses (it recovers) waits an hour.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use super::ship::{ShipReport, Shipper};
use super::Shared;
use crate::cmd::sync::{Export, Import};
use crate::site::Ctx;
use crate::util::{Exit, EXIT_ERROR};

/// How long packets that wait in the incoming bay, with nothing changed, wait before the
/// import looks at them again.
const IMPORT_AGAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// How often the daemon scrubs when a restore window is set: retention is in no hurry, and a
/// scrub reads every sibling's state.
const SCRUB_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The names and sizes of what the incoming bay holds under packet names; `None` when empty.
fn bay_signature(dir: &std::path::Path) -> Option<u64> {
    let bay = crate::packets::bay_entries(dir).ok()?;
    if bay.files.is_empty() && bay.odd.is_empty() {
        return None;
    }
    let mut h = blake3::Hasher::new();
    for f in bay.files.iter().chain(bay.odd.iter().map(|(p, _)| p)) {
        h.update(f.as_os_str().as_encoded_bytes());
        let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        h.update(&len.to_le_bytes());
    }
    Some(super::fingerprint(&h.finalize()))
}

/// What one round did.
#[derive(Debug, Default)]
pub struct RoundReport {
    /// Packets imported (applied or already applied).
    pub imported: usize,
    /// Packets refused by the import.
    pub refused: usize,
    /// Packets written for siblings.
    pub exported: usize,
    /// Oplog entries the round's scrub dropped.
    pub scrubbed: u64,
    /// The shipping pass.
    pub ship: ShipReport,
    /// Steps that failed, with why.
    pub errors: Vec<String>,
}

impl RoundReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let mut lines: Vec<String> = self.errors.iter().map(|e| format!("error: {e}")).collect();
        lines.extend(self.ship.lines());
        if self.scrubbed > 0 {
            lines.push(format!(
                "Scrubbed {} oplog entries every sibling holds (retention).",
                self.scrubbed
            ));
        }
        lines.push(format!(
            "Round done: {} imported, {} refused, {} exported, {} shipped, {} failed to ship, {} undeliverable.",
            self.imported,
            self.refused,
            self.exported,
            self.ship.shipped.len(),
            self.ship.failed.len(),
            self.ship.undeliverable.len()
        ));
        lines.join("\n")
    }

    /// The exit code of `serve --once` as an error.
    pub fn into_result(self) -> anyhow::Result<()> {
        if !self.errors.is_empty() && self.ship.undeliverable.is_empty() {
            return Err(Exit {
                code: EXIT_ERROR,
                message: None,
            }
            .into());
        }
        super::exit_for(
            self.ship.undeliverable.len(),
            self.ship.failed.len(),
            self.refused,
        )
    }
}

/// The worker: its context (output buffered into the log), the shipper, and what it remembers
/// between rounds.
pub struct Worker {
    ctx: Ctx,
    shared: Arc<Shared>,
    shipper: Shipper,
    held: Option<u64>,
    held_at_export: Option<u64>,
    /// The bay and the entries held after the last import, and when it ran.
    last_import: Option<(Option<u64>, Option<u64>, Instant)>,
    exported_at: BTreeMap<String, Instant>,
    /// When the last scrub ran (or was found not wanted).
    scrubbed_at: Option<Instant>,
    /// Whether rounds ship too (`--once`); otherwise the shippers are woken.
    ships: bool,
}

impl Worker {
    /// A worker for the site of `ctx`.
    pub fn new(ctx: &Ctx, shared: Arc<Shared>, ships: bool) -> Worker {
        let mut ctx = Ctx::buffered(ctx.dir.clone());
        ctx.progress = false;
        Worker {
            shipper: Shipper::new(&shared.routes),
            ctx,
            shared,
            held: None,
            held_at_export: None,
            last_import: None,
            exported_at: BTreeMap::new(),
            scrubbed_at: None,
            ships,
        }
    }

    /// Runs rounds until the daemon stops: one per wake-up or poll interval.
    pub fn run(mut self, wake: Receiver<()>) {
        while !self.shared.stopping() {
            self.round(false, false);
            match wake.recv_timeout(self.shared.routes.poll) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// One round. `all_exports`: export for every sibling now; `all_ships`: try every part
    /// now, whatever its backoff.
    pub fn round(&mut self, all_exports: bool, all_ships: bool) -> RoundReport {
        let mut report = RoundReport::default();
        self.refresh_known(&mut report);
        if report.errors.is_empty() && !self.shared.stopping() {
            self.import(all_exports, &mut report);
        }
        if report.errors.is_empty() && !self.shared.stopping() {
            self.export(all_exports, &mut report);
        }
        if report.errors.is_empty() && !self.shared.stopping() {
            self.scrub(&mut report);
        }
        if self.ships && !self.shared.stopping() {
            report.ship = self.shipper.ship_bay(&self.shared, all_ships, None);
        } else if report.exported > 0 {
            self.shared.wake_shippers();
        }
        report
    }

    /// Logs what the CLI functions printed.
    fn log_output(&self) {
        for line in self
            .ctx
            .take_output()
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            if line.starts_with("Nothing to send") {
                tracing::debug!(site = %self.shared.me.1, "{line}");
            } else {
                tracing::info!(site = %self.shared.me.1, "{line}");
            }
        }
    }

    fn refresh_known(&mut self, report: &mut RoundReport) {
        match super::identity(&self.ctx) {
            Ok(id) => {
                *self.shared.known.write().unwrap_or_else(|p| p.into_inner()) = id.known;
                self.held = Some(id.held);
            }
            Err(e) => {
                let why = crate::error_text(&e);
                tracing::info!(error = %why, "the store cannot be opened now; trying again next round");
                report.errors.push(why);
            }
        }
    }

    /// Imports the incoming bay when something may have changed for it: its files, the
    /// entries held (a local change), or `IMPORT_AGAIN` passed (a store unlocked by the
    /// operator's `restorereplica`); `force` imports anyway.
    fn import(&mut self, force: bool, report: &mut RoundReport) {
        let bay = bay_signature(&self.shared.paths.incoming());
        if bay.is_none() {
            return;
        }
        let same = self
            .last_import
            .as_ref()
            .is_some_and(|(b, h, at)| *b == bay && *h == self.held && at.elapsed() < IMPORT_AGAIN);
        if same && !force {
            return;
        }
        let run = Import {
            files: Vec::new(),
            watch: false,
            max_seconds: None,
        };
        let res = run.import(&self.ctx);
        self.log_output();
        let busy = res.as_ref().err().is_some_and(super::store_busy);
        self.last_import = (!busy).then(|| {
            let bay = bay_signature(&self.shared.paths.incoming());
            (bay, self.held, Instant::now())
        });
        match res {
            Ok(t) => report.imported += t.applied + t.already,
            Err(e) => match e.downcast_ref::<Exit>() {
                // Waiting packets stay in the bay; the next arrival retries them.
                Some(x) if x.code == crate::util::EXIT_WAITING => {}
                Some(x) if x.code == EXIT_ERROR => report.refused += 1,
                _ => {
                    let why = crate::error_text(&e);
                    if super::store_busy(&e) {
                        tracing::info!(error = %why, "import put off: the store is busy");
                    } else {
                        tracing::warn!(error = %why, "import failed");
                    }
                    report.errors.push(why);
                }
            },
        }
    }

    /// Scrubs when a restore window is set and the last scrub is an hour old. A busy store
    /// is tried again next round; a refusal (the replica recovers) or a failure is logged and
    /// tried again in an hour, and fails no round: retention can wait.
    fn scrub(&mut self, report: &mut RoundReport) {
        if self.scrubbed_at.is_some_and(|t| t.elapsed() < SCRUB_EVERY) {
            return;
        }
        let res = self.ctx.open().and_then(|site| {
            let r = &site.replica;
            match r.retention_window()? {
                Some(_) => Ok(Some(r.scrub(false)?)),
                None => Ok(None),
            }
        });
        match res {
            Err(e) if super::store_busy(&e) => return,
            Err(e) => {
                let why = crate::error_text(&e);
                tracing::warn!(site = %self.shared.me.1, error = %why, "scrub not done");
            }
            Ok(None) => {}
            Ok(Some(s)) => {
                report.scrubbed += s.entries_dropped;
                for line in &s.origins {
                    tracing::info!(site = %self.shared.me.1, "scrub: {line}");
                }
            }
        }
        self.scrubbed_at = Some(Instant::now());
    }

    fn export(&mut self, all: bool, report: &mut RoundReport) {
        // Imports of this round changed what is held: look again.
        if report.imported > 0 {
            let mut r = RoundReport::default();
            self.refresh_known(&mut r);
        }
        let changed = self.held != self.held_at_export;
        let queued = self.queued_for();
        let siblings: Vec<(String, std::time::Duration)> = self
            .shared
            .routes
            .siblings
            .iter()
            .map(|(n, r)| (n.clone(), r.export_every))
            .collect();
        for (name, every) in siblings {
            let due = all
                || changed
                || self
                    .exported_at
                    .get(&name)
                    .is_none_or(|t| t.elapsed() >= every);
            if !due || self.shared.stopping() {
                continue;
            }
            if queued.contains(&name) {
                // Its last packet still waits to be shipped: a new one would only repeat it.
                // The export is due again once the queue has drained.
                continue;
            }
            if !self.shared.known_name(&name) {
                // A sibling created after this replica: its creation arrives with the hub's
                // packets; until then there is nothing to address to it.
                tracing::debug!(to = %name, "not exported: this replica does not know the sibling yet");
                continue;
            }
            self.export_to(name, report);
        }
        self.held_at_export = self.held;
    }

    /// Writes the packet for sibling `name` into the outgoing bay, split at the routes file's
    /// `part_size`.
    fn export_to(&mut self, name: String, report: &mut RoundReport) {
        let run = Export {
            to: Some(name.clone()),
            all: false,
            out: None,
            max_size: self.shared.routes.part_size,
            ship: false,
            routes: None,
            encrypt_to: Vec::new(),
            no_encrypt: false,
        };
        let res = run.export(&self.ctx);
        self.log_output();
        match res {
            Ok(w) => {
                report.exported += w.iter().filter(|x| !x.parts.is_empty()).count();
                self.exported_at.insert(name, Instant::now());
            }
            Err(e) => {
                let why = crate::error_text(&e);
                if super::store_busy(&e) {
                    tracing::info!(to = %name, error = %why, "export put off: the store is busy");
                } else {
                    tracing::warn!(to = %name, error = %why, "export failed");
                }
                report.errors.push(why);
            }
        }
    }

    /// The siblings for which a packet of this replica waits in the outgoing bay.
    fn queued_for(&self) -> std::collections::BTreeSet<String> {
        let files = crate::packets::bay_files(&self.shared.paths.outgoing()).unwrap_or_default();
        files
            .iter()
            .filter_map(|f| msite_packet::open(f).ok().map(|r| r.header().clone()))
            .filter(|h| h.sender.0 == self.shared.me.0 && h.new_replica.0 == [0; 16])
            .flat_map(|h| h.targets.into_iter())
            .filter_map(|t| self.shared.name_of(&t.replica.0))
            .collect()
    }
}
