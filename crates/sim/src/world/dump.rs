//! The state of every replica, traced at the end of a failing verbose run.

use std::collections::BTreeMap;

use msite_core::{ReplicaId, Row};

use super::World;
use crate::backend::SimBackend;

/// Site names by replica id, for the dump (an unknown id prints as its short form).
struct Names(BTreeMap<ReplicaId, String>);

impl Names {
    /// The name of `id`.
    fn nm(&self, id: &ReplicaId) -> String {
        self.0.get(id).cloned().unwrap_or_else(|| id.short())
    }

    /// A row as `name:number` pairs.
    fn row(&self, r: &Row) -> String {
        r.0.iter()
            .map(|(o, n)| format!("{}:{n}", self.nm(o)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl<B: SimBackend> World<B> {
    /// Traces every replica's state (verbose runs).
    pub(super) fn dump_state(&mut self) {
        if !self.verbose {
            return;
        }
        let names = Names(self.sites.iter().map(|s| (s.id, s.name.clone())).collect());
        let lines: Vec<String> = (0..self.sites.len())
            .map(|i| self.state_line(i, &names))
            .collect();
        for l in lines {
            self.ev(|_| l);
        }
    }

    /// One replica's state: incarnation, restoration in progress, own row, held restore
    /// requests, provisional acknowledgements, the incarnations it knows and the sites it
    /// knows.
    fn state_line(&self, i: usize, names: &Names) -> String {
        let r = self.rep(i);
        let own = r.own_row().map(|x| names.row(&x)).unwrap_or_default();
        let st = r.status().ok();
        let inc = st.as_ref().map(|s| s.incarnation).unwrap_or(0);
        let rec = st.as_ref().and_then(|s| s.recovering.clone()).map(|rc| {
            format!(
                " RECOVERING inc {} row [{}] awaiting {{{}}}",
                rc.incarnation,
                names.row(&rc.row),
                rc.awaited
                    .iter()
                    .map(|(a, h)| format!("{}={h:?}", names.nm(a)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        let reqs = r
            .held_requests()
            .unwrap_or_default()
            .iter()
            .map(|q| {
                let row = names.row(&q.row);
                format!("{}@{} [{row}]", names.nm(&q.replica), q.incarnation)
            })
            .collect::<Vec<_>>()
            .join("; ");
        let packs = r
            .provisional_acks()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let (acker, replica) = (names.nm(&a.acker), names.nm(&a.replica));
                format!("{acker}->{replica}@{} held {}", a.incarnation, a.held)
            })
            .collect::<Vec<_>>()
            .join("; ");
        let incs = self
            .sites
            .iter()
            .map(|s| format!("{}={}", s.name, r.incarnation_of(&s.id).unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" ");
        let known = self
            .sites
            .iter()
            .filter(|s| matches!(r.view().replica(&s.id), Ok(Some(_))))
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "state {}: inc {inc}{} own [{own}] requests [{reqs}] prov-acks [{packs}] incarnations [{incs}] knows [{known}]",
            self.sites[i].name,
            rec.unwrap_or_default()
        )
    }
}
