//! Oplog retention: scrubs under the schedule's restore window, and a site left behind what
//! its siblings still keep.

use msite_core::{CoreError, Env};

use super::World;
use crate::backend::SimBackend;

impl<B: SimBackend> World<B> {
    /// `msite scrub` at site `i` under the schedule's restore window, with the faults of any
    /// mutating call. A locked or recovering replica refuses; the state digest must not change.
    pub(super) fn scrub(&mut self, i: usize) {
        let Some(w) = self.p.retain_ms else { return };
        if self.gone(i) {
            return;
        }
        let before = self.rep(i).digest().ok();
        let name = self.sites[i].name.clone();
        match self.mutate(i, "scrub", true, |r| r.scrub_with_window(Some(w), false)) {
            None => {}
            Some(Ok(report)) => {
                self.stats.scrubs += 1;
                self.stats.scrubbed += report.entries_dropped;
                self.scrubbed_any |= report.entries_dropped > 0;
                if report.entries_dropped > 0 {
                    self.sites[i].scrub_dropped_ms = Some(self.env.now_ms());
                }
                let dropped = report.entries_dropped;
                self.ev(|_| format!("scrub at {name}: dropped {dropped} entries"));
                if self.rep(i).digest().ok() != before {
                    self.violation(format!("scrub at {name} changed its digest"));
                }
            }
            Some(Err(CoreError::Locked(m))) => {
                self.ev(|_| format!("scrub at {name} refused: {m}"));
            }
            Some(Err(e)) => self.violation(format!("scrub at {name} failed: {e}")),
        }
        self.check_integrity(i, "after a scrub");
    }

    /// Site `keeper` dropped entries site `behind` needs. The operator restores only backups
    /// younger than half the window, but the guarantee also needs the restore request to
    /// reach the siblings before the copy is a window old (docs/protocol.md §9): a site locked
    /// as rolled back long before its operator ran `restorereplica` may miss it. Then the
    /// keeper's last dropping scrub came more than a window after the copy was taken, the
    /// site is told to be re-created, and the schedule is outside the guarantee (lossy, not
    /// converging); anything else is a violation.
    pub(super) fn behind_retention(&mut self, keeper: usize, behind: usize, what: String) {
        let w = self.p.retain_ms.unwrap_or(0);
        let late = match (
            self.sites[behind].copy_taken_ms,
            self.sites[keeper].scrub_dropped_ms,
        ) {
            (Some(copy), Some(dropped)) => dropped > copy + w,
            _ => false,
        };
        if !late {
            self.violation(what);
            return;
        }
        if !self.beyond_window {
            self.stats.beyond_window += 1;
        }
        self.beyond_window = true;
        let name = self.sites[behind].name.clone();
        self.set_lossy(format!(
            "{name}'s restore request came more than a window after its copy was taken: {what}"
        ));
    }
}
