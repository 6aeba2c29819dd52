//! The state of every replica, traced at the end of a failing verbose run.

use std::collections::BTreeMap;

use msite_core::{ReplicaId, Row};

use super::World;
use crate::backend::SimBackend;

impl<B: SimBackend> World<B> {
    /// Traces every replica's state (verbose runs).
    pub(super) fn dump_state(&mut self) {
        if !self.verbose {
            return;
        }
        let names: BTreeMap<ReplicaId, String> =
            self.sites.iter().map(|s| (s.id, s.name.clone())).collect();
        let nm = |id: &ReplicaId| names.get(id).cloned().unwrap_or_else(|| id.short());
        let row = |r: &Row| {
            r.0.iter()
                .map(|(o, n)| format!("{}:{n}", nm(o)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut lines = Vec::new();
        for i in 0..self.sites.len() {
            let r = self.rep(i);
            let own = r.own_row().map(|x| row(&x)).unwrap_or_default();
            let st = r.status().ok();
            let inc = st.as_ref().map(|s| s.incarnation).unwrap_or(0);
            let rec = st.as_ref().and_then(|s| s.recovering.clone()).map(|rc| {
                format!(
                    " RECOVERING inc {} row [{}] awaiting {{{}}}",
                    rc.incarnation,
                    row(&rc.row),
                    rc.awaited
                        .iter()
                        .map(|(a, h)| format!("{}={h:?}", nm(a)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            let reqs = r
                .held_requests()
                .unwrap_or_default()
                .iter()
                .map(|q| format!("{}@{} [{}]", nm(&q.replica), q.incarnation, row(&q.row)))
                .collect::<Vec<_>>()
                .join("; ");
            let packs = r
                .provisional_acks()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    format!(
                        "{}->{}@{} held {}",
                        nm(&a.acker),
                        nm(&a.replica),
                        a.incarnation,
                        a.held
                    )
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
            lines.push(format!(
                "state {}: inc {inc}{} own [{own}] requests [{reqs}] prov-acks [{packs}] incarnations [{incs}] knows [{known}]",
                self.sites[i].name,
                rec.unwrap_or_default()
            ));
        }
        for l in lines {
            self.ev(|_| l);
        }
    }
}
