//! The daemon's rounds, on one thread: import what the incoming bay holds (the import path of
//! `syncreplica import`), export for every sibling of the routes file whose export is due, ship
//! the outgoing bay. A round runs on every arrival (the receiver wakes the worker) and every
//! `poll` interval.
//!
//! Rules kept: no export for a sibling while a packet of this replica for it waits in the
//! outgoing bay (it would repeat what is queued; the next export after delivery carries it
//! all); otherwise an export for a sibling is due when the entries this replica holds changed since
//! the last round's exports (the operator's changes and this round's imports alike: a hub passes
//! on what it received), and otherwise every `export_every` (which also carries
//! acknowledgements and restoration answers); a store that cannot be opened now (an
//! operator's command holds it) skips the round's import and exports, which the next round does;
//! the stop flag is looked at between steps, never inside one.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use super::ship::{ShipReport, Shipper};
use super::Shared;
use crate::cmd::sync::{Export, Import};
use crate::site::Ctx;
use crate::util::{Exit, EXIT_ERROR};

/// What one round did.
#[derive(Debug, Default)]
pub struct RoundReport {
    /// Packets imported (applied or already applied).
    pub imported: usize,
    /// Packets refused by the import.
    pub refused: usize,
    /// Packets written for siblings.
    pub exported: usize,
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
    exported_at: BTreeMap<String, Instant>,
}

impl Worker {
    /// A worker for the site of `ctx`.
    pub fn new(ctx: &Ctx, shared: Arc<Shared>) -> Worker {
        let mut ctx = Ctx::buffered(ctx.dir.clone());
        ctx.progress = false;
        Worker {
            shipper: Shipper::new(&shared.routes),
            ctx,
            shared,
            held: None,
            held_at_export: None,
            exported_at: BTreeMap::new(),
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
            self.import(&mut report);
        }
        if report.errors.is_empty() && !self.shared.stopping() {
            self.export(all_exports, &mut report);
        }
        if !self.shared.stopping() {
            report.ship = self.shipper.ship_bay(&self.shared, all_ships);
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

    fn import(&mut self, report: &mut RoundReport) {
        let has_packets = crate::packets::bay_entries(&self.shared.paths.incoming())
            .map(|b| !b.files.is_empty() || !b.odd.is_empty())
            .unwrap_or(false);
        if !has_packets {
            return;
        }
        let run = Import {
            files: Vec::new(),
            watch: false,
            max_seconds: None,
        };
        let res = run.import(&self.ctx);
        self.log_output();
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

    /// Writes the packet for sibling `name` into the outgoing bay, in parts no larger than
    /// the routes file's `max_packet_size`.
    fn export_to(&mut self, name: String, report: &mut RoundReport) {
        let run = Export {
            to: Some(name.clone()),
            all: false,
            out: None,
            max_size: Some(self.shared.routes.max_packet_size),
            ship: false,
            routes: None,
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
