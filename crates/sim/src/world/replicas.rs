//! The family's replicas: the first one, new ones made from a creation packet (from history
//! or a snapshot), and the links between them.

use std::collections::BTreeMap;

use msite_core::testkit::{FaultPlan, FaultyStore};
use msite_core::{Incoming, ReqMasterPolicy, Row};
use rand::Rng;

use super::{env_arc, is_refusal_of_local_change, short, Rep, Site, Topology, World};
use crate::backend::SimBackend;

impl<B: SimBackend> World<B> {
    /// A new, empty store from the backend (a failure is the backend's, not the protocol's).
    pub(super) fn new_store(&mut self) -> B::Store {
        self.backend.new_store().expect("a new store")
    }

    /// Adds a site running `rep` (a tenth of them deny mastership requests; every one
    /// resends at the schedule's interval) and observes it.
    pub(super) fn new_site(&mut self, rep: Rep<B>, plan: FaultPlan, name: String) -> usize {
        let id = rep.id();
        if self.rng.gen_bool(0.1) {
            let _ = rep.set_reqmaster_policy(ReqMasterPolicy::Deny);
        }
        let _ = rep.set_resend_ms(None, self.p.resend_ms);
        self.sites.push(Site {
            name,
            id,
            rep: Some(rep),
            plan,
            backups: Vec::new(),
            bay: Vec::new(),
            observed: Row::default(),
            snapshot_rolled: false,
            undetected_rollback: false,
            incarnations_before_rollback: BTreeMap::new(),
            recovering_when_observed: false,
            created_by: None,
            copy_taken_ms: None,
            scrub_dropped_ms: None,
            pending: None,
            pending_copy: false,
            forgot_siblings: false,
            amended_copy: false,
            stranded: false,
        });
        let i = self.sites.len() - 1;
        self.observe(i);
        i
    }

    /// Links sites `a` and `b` (an edge of the heal); with probability `one_way` the link
    /// runs one way only in the random phase (direction drawn).
    pub(super) fn link(&mut self, a: usize, b: usize, one_way: f64) {
        self.edges.insert((a.min(b), a.max(b)));
        if one_way > 0.0 && self.rng.gen_bool(one_way) {
            let (x, y) = if self.rng.gen_bool(0.5) {
                (a, b)
            } else {
                (b, a)
            };
            self.links.entry((x, y)).or_default();
            self.ev(|_| format!("link r{x} -> r{y} (one-way)"));
        } else {
            self.links.entry((a, b)).or_default();
            self.links.entry((b, a)).or_default();
        }
    }

    /// The first replica (`r0`, a new family), the other initial ones made from random
    /// existing ones, and the links of the drawn topology.
    pub(super) fn setup(&mut self) {
        let plan = FaultPlan::new();
        let first = msite_core::Replica::init(
            FaultyStore::new(self.new_store(), plan.clone()),
            env_arc(&self.env),
            "fam",
            "r0",
        )
        .expect("init");
        self.new_site(first, plan, "r0".into());
        for _ in 1..self.p.initial {
            let from = self.rng.gen_range(0..self.sites.len());
            self.mkreplica(from, false);
        }
        let n = self.sites.len();
        let ow = self.p.one_way;
        match self.p.topology {
            Topology::Mesh => {
                for a in 0..n {
                    for b in a + 1..n {
                        self.link(a, b, ow);
                    }
                }
            }
            Topology::Hub => {
                for b in 1..n {
                    self.link(0, b, ow);
                }
            }
            Topology::Chain => {
                for b in 1..n {
                    self.link(b - 1, b, ow);
                }
            }
        }
    }

    /// Creates a replica from `from` through the real creation packet (from history, or a
    /// snapshot in the `snapshots` profile, where a damaged copy of it must be refused first
    /// when drawn). A refusal at `from` makes nothing; any other failure is a violation.
    /// With `link`, the new site is linked to `from` and maybe to another site. Returns
    /// whether it made one.
    pub(super) fn mkreplica(&mut self, from: usize, link: bool) -> bool {
        if self.closing(from) {
            return false;
        }
        let name = format!("r{}", self.sites.len());
        let key = msite_core::SiteKey::generate(&self.env);
        let (how, damaged_at) = match self.p.snapshots {
            true => crate::snapshot::draw(self.seed, self.sites.len()),
            false => (crate::snapshot::Creation::History, None),
        };
        let Some((plan, how)) = self.plan_creation(from, &name, &key, how) else {
            return false;
        };
        self.observe(from);
        let Some(pkt) = self.write_creation(from, &name, &key, &plan, how, damaged_at) else {
            return false;
        };
        let fp = FaultPlan::new();
        let rep = match msite_core::Replica::create_from_packet(
            FaultyStore::new(self.new_store(), fp.clone()),
            env_arc(&self.env),
            pkt,
            &key,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!("creating {name} from its packet failed: {e}"));
                return false;
            }
        };
        let i = self.new_site(rep, fp, name.clone());
        self.sites[i].created_by = Some(from);
        self.stats.mkreplicas += 1;
        if how == crate::snapshot::Creation::Snapshot {
            // What the family dropped, the new replica knows as dropped (its creator's scrubs).
            self.sites[i].scrub_dropped_ms = self.sites[from].scrub_dropped_ms;
            self.stats.snapshot_creations += 1;
        }
        self.ev(|w| format!("mkreplica {name} from {}", w.sites[from].name));
        if link {
            self.link_new_site(from, i);
        }
        true
    }

    /// `mkreplica` at `from` plans the creation packet of `name`: a refusal (the command may
    /// refuse) is traced, any other error is a violation.
    fn plan_creation(
        &mut self,
        from: usize,
        name: &str,
        key: &msite_core::SiteKey,
        how: crate::snapshot::Creation,
    ) -> Option<(msite_core::ExportPlan, crate::snapshot::Creation)> {
        match crate::snapshot::plan(self.rep(from), name, &key.public(), how, self.p.snapshots) {
            Ok(p) => Some(p),
            Err(e) if is_refusal_of_local_change(&e) => {
                self.ev(|w| {
                    format!(
                        "mkreplica {name} at {} refused: {}",
                        w.sites[from].name,
                        short(&e)
                    )
                });
                None
            }
            Err(e) => {
                self.violation(format!(
                    "mkreplica {name} at {} failed: {e}",
                    self.sites[from].name
                ));
                None
            }
        }
    }

    /// Writes the creation packet of `name` at `from` and reads it back. A snapshot creation
    /// drawn as damaged (`damaged_at`) first checks that a damaged copy is refused.
    fn write_creation(
        &mut self,
        from: usize,
        name: &str,
        key: &msite_core::SiteKey,
        plan: &msite_core::ExportPlan,
        how: crate::snapshot::Creation,
        damaged_at: Option<usize>,
    ) -> Option<Incoming<'static>> {
        let parts = match self.rep(from).write_plan_to_parts(plan, None) {
            Ok(p) => p,
            Err(e) => {
                self.violation(format!("writing the creation packet of {name} failed: {e}"));
                return None;
            }
        };
        if let (crate::snapshot::Creation::Snapshot, Some(at)) = (how, damaged_at) {
            let store = self.new_store();
            let env = env_arc(&self.env);
            match crate::snapshot::damaged_copy_is_refused(&parts, store, env, key, at) {
                Some(v) => self.violation(v),
                None => self.stats.damaged_snapshots += 1,
            }
        }
        match Incoming::from_parts(parts, "creation packet") {
            Ok(p) => Some(p),
            Err(e) => {
                self.violation(format!("reading the creation packet of {name} failed: {e}"));
                None
            }
        }
    }

    /// Links new site `i` two-way to its creator `from`, and in half the cases to another
    /// site too (drawn, with the schedule's chance of a one-way link).
    fn link_new_site(&mut self, from: usize, i: usize) {
        self.link(from, i, 0.0);
        if self.rng.gen_bool(0.5) {
            let other = self.rng.gen_range(0..i);
            if other != from {
                let ow = self.p.one_way;
                self.link(other, i, ow);
            }
        }
    }
}
