//! The random phase: each step draws one action; local changes, and mutating calls that may
//! crash (the replica is then restarted).

use msite_core::testkit::FaultyStore;
use msite_core::{CoreError, Env, ReplicaId, VersionSel};
use rand::seq::SliceRandom;
use rand::Rng;

use super::{env_arc, is_refusal_of_local_change, short, Backup, Mode, Rep, World};
use crate::backend::SimBackend;

/// The body every small checked-in version shares after its own first line (so that a new
/// version is related to the one before it, and packets carry it as a delta).
const SHARED_BODY: &[u8] = b"fn shared() {\n    // the same lines in every version of every file\n    let a = 1;\n    let b = 2;\n    let c = a + b;\n    println!(\"{c}\");\n}\n// end of the shared body of simulated versions\n";

/// What a local change drew: the site's name and own branch type, and the names and
/// content its command may use.
struct Change {
    me: String,
    own_br: String,
    path: String,
    br: String,
    lb: String,
    sel: String,
    to: String,
    content: Vec<u8>,
}

impl<B: SimBackend> World<B> {
    /// Runs a mutating call, maybe with a failing write armed. `None`: it crashed (the replica
    /// was restarted).
    pub(super) fn mutate<T>(
        &mut self,
        i: usize,
        what: &str,
        faults: bool,
        f: impl FnOnce(&Rep<B>) -> Result<T, CoreError>,
    ) -> Option<Result<T, CoreError>> {
        let plan = self.sites[i].plan.clone();
        let fired = plan.faults_fired();
        let mut armed = String::new();
        if faults && self.p.p_crash > 0.0 && self.rng.gen_bool(self.p.p_crash) {
            if self.rng.gen_bool(0.5) {
                let k = self.rng.gen_range(1..=3);
                plan.fail_nth_write(k);
                armed = format!("write {k} fails");
            } else {
                let k = self.rng.gen_range(1..=2);
                plan.fail_nth_sync_write(k);
                armed = format!("synced write {k} applies, then fails");
            }
        }
        let r = f(self.rep(i));
        plan.disarm();
        if plan.faults_fired() > fired {
            self.stats.crashes += 1;
            let outcome = match &r {
                Ok(_) => "ok".to_string(),
                Err(e) => short(e),
            };
            self.ev(|w| {
                format!(
                    "CRASH at {} during {what} ({armed}; call returned: {outcome}); restart",
                    w.sites[i].name
                )
            });
            self.restart(i);
            return None;
        }
        Some(r)
    }

    /// Restarts replica `i`: a new wrapper around the same store, reopened (on a real backend,
    /// closed and opened again from its directory).
    pub(super) fn restart(&mut self, i: usize) {
        let rep = self.sites[i].rep.take().expect("replica present");
        let inner = rep.into_store().into_inner();
        let inner = self.backend.reopen(inner).expect("reopening a store");
        let store = FaultyStore::new(inner, self.sites[i].plan.clone());
        let rep = msite_core::Replica::open(store, env_arc(&self.env)).expect("reopen after crash");
        self.sites[i].rep = Some(rep);
        self.check_integrity(i, "after a crash");
        self.observe(i);
    }

    /// One step of the random phase: the clock advances by up to 5 s, then one action is
    /// drawn by its weight ([`Self::draw_action`]) and run at random sites.
    pub(super) fn random_step(&mut self) {
        self.env.advance(self.rng.gen_range(0..5000));
        let act = self.draw_action();
        let n = self.sites.len();
        match act {
            0 => {
                let i = self.rng.gen_range(0..n);
                self.local_change(i);
            }
            1 => self.export_on_a_link(),
            2 => {
                if let Some(pkt) = self.take_in_flight(true) {
                    let to = pkt.to;
                    self.deliver(pkt, true);
                    self.settle_bay(to, true);
                }
            }
            3 => {
                let i = self.rng.gen_range(0..n);
                self.settle_bay(i, true);
            }
            4 => {
                let i = self.rng.gen_range(0..n);
                self.backup(i);
            }
            5 => {
                let i = self.rng.gen_range(0..n);
                let m = self.draw_mode(i);
                self.restore(i, Some(m));
            }
            6 => self.restore_several(n),
            7 => {
                let i = self.rng.gen_range(0..n);
                self.restore(i, None);
            }
            8 => {
                let from = self.rng.gen_range(0..n);
                self.mkreplica(from, true);
            }
            9 => self.repair_locked(true),
            12 => {
                let i = self.rng.gen_range(0..n);
                self.scrub(i);
            }
            10 => self.amend_a_recovery(n),
            13 => {
                let i = self.rng.gen_range(0..n);
                self.rekey(i);
            }
            _ => {}
        }
        self.retire_step();
    }

    /// Draws the action of a step by weight. Restores happen only when the schedule drew
    /// them (snapshot rollbacks only with every kind), new replicas only below the maximum,
    /// scrubs only with a restore window; 11 is a quiet step; 13 a key rotation, only in
    /// profile `rekey`.
    fn draw_action(&mut self) -> u32 {
        let can_grow = self.sites.len() < self.p.max_sites;
        let r = self.p.restores;
        let scrubs = if self.p.retain_ms.is_some() { 10 } else { 0 };
        let acts: [(u32, u32); 14] = [
            (0, 30),                                // local change
            (1, 22),                                // export
            (2, 25),                                // deliver
            (3, 3),                                 // retry a bay
            (4, if r > 0 { 4 } else { 0 }),         // backup
            (5, if r > 0 { 3 } else { 0 }),         // restore
            (6, if r > 0 { 1 } else { 0 }),         // restore several at once
            (7, if r > 1 { 1 } else { 0 }),         // snapshot rollback
            (8, if can_grow { 2 } else { 0 }),      // mkreplica
            (9, 3),                                 // operator repairs locked replicas
            (10, if r > 0 { 1 } else { 0 }),        // restorereplica again while recovering
            (11, 2),                                // a quiet step
            (12, scrubs),                           // scrub (oplog retention)
            (13, if self.p.rekey { 2 } else { 0 }), // rekey (profile `rekey`)
        ];
        let total: u32 = acts.iter().map(|a| a.1).sum();
        let mut x = self.rng.gen_range(0..total);
        let mut act = 11;
        for (a, w) in acts {
            if x < w {
                act = a;
                break;
            }
            x -= w;
        }
        act
    }

    /// Exports along a random link and puts the packet in flight, with the link's faults.
    fn export_on_a_link(&mut self) {
        let keys: Vec<(usize, usize)> = self.links.keys().copied().collect();
        if let Some(&(a, b)) = keys.choose(&mut self.rng) {
            if let Some(pkt) = self.export(a, b, true) {
                self.send(pkt);
            }
        }
    }

    /// Takes a backup of site `i` (when scrubs run, stamped with the simulated time, which
    /// the clock is read for only then). A failing backup is the backend's violation.
    pub(super) fn backup(&mut self, i: usize) {
        if self.gone(i) {
            return;
        }
        let rep = self.sites[i].rep.as_ref().expect("replica present");
        match self.backend.backup(rep.store().inner()) {
            Ok(store) => {
                let step = self.step;
                let at_ms = match self.p.retain_ms {
                    Some(_) => self.env.now_ms(),
                    None => 0,
                };
                self.sites[i].backups.push(Backup { step, at_ms, store });
                self.stats.backups += 1;
                self.ev(|w| format!("backup of {}", w.sites[i].name));
            }
            Err(e) => self.violation(format!("backup of {} failed: {e}", self.sites[i].name)),
        }
    }

    /// Restores two or three of the `n` sites at once (drawn), each with its own mode.
    fn restore_several(&mut self, n: usize) {
        let k = self.rng.gen_range(2..=3.min(n));
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut self.rng);
        for &i in idx.iter().take(k) {
            let m = self.draw_mode(i);
            self.restore(i, Some(m));
        }
    }

    /// The operator runs `restorereplica` again, with a drawn mode, at a recovering site
    /// (drawn among the `n`), amending its restoration.
    fn amend_a_recovery(&mut self, n: usize) {
        let recovering: Vec<usize> = (0..n)
            .filter(|&i| matches!(self.rep(i).status(), Ok(st) if st.recovering.is_some()))
            .collect();
        if let Some(&i) = recovering.choose(&mut self.rng) {
            let m = self.draw_mode(i);
            self.stats.amends += 1;
            self.ev(|w| {
                format!(
                    "restorereplica again at {} while it recovers",
                    w.sites[i].name
                )
            });
            self.run_restorereplica(i, m, true);
        }
    }

    /// The mode of a restore at site `i`: default unless the schedule draws every kind; then
    /// six in ten default, two `--wait-for` a drawn set of the siblings it knows (default if
    /// none is drawn), two `--override`.
    pub(super) fn draw_mode(&mut self, i: usize) -> Mode {
        if self.p.restores < 2 {
            return Mode::Default;
        }
        match self.rng.gen_range(0..10) {
            0..=5 => Mode::Default,
            6..=7 => {
                let sibs: Vec<ReplicaId> = match self.rep(i).view().replicas() {
                    Ok(v) => v
                        .into_iter()
                        .map(|r| r.id)
                        .filter(|r| *r != self.sites[i].id)
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let mut pick: Vec<ReplicaId> = sibs
                    .into_iter()
                    .filter(|_| self.rng.gen_bool(0.5))
                    .collect();
                if pick.is_empty() {
                    return Mode::Default;
                }
                pick.sort();
                Mode::WaitFor(pick)
            }
            _ => Mode::Override,
        }
    }

    /// A local change at site `i`, drawn ([`Self::draw_change`], then its kind) and run as a
    /// mutating call: a refusal the command may give is counted, any other error is a
    /// violation; what it made is recorded.
    pub(super) fn local_change(&mut self, i: usize) {
        if self.closing(i) {
            return;
        }
        let c = self.draw_change(i);
        let kind = self.rng.gen_range(0..100);
        let (what, r) = self.run_change(i, kind, &c);
        let me = &c.me;
        match r {
            None => {}
            Some(Ok(())) => {
                self.stats.ops_ok += 1;
                self.ev(|_| format!("{me}: {what}"));
            }
            Some(Err(e)) if is_refusal_of_local_change(&e) => {
                self.stats.ops_refused += 1;
            }
            Some(Err(e)) => self.violation(format!("{me}: {what} failed: {e}")),
        }
        self.observe(i);
    }

    /// Draws the names and content a local change at site `i` may use: a path, a branch
    /// type (some private to the site), a label type, a mastership selector, a replica to
    /// hand mastership to, and a version's content.
    fn draw_change(&mut self, i: usize) -> Change {
        let me = self.sites[i].name.clone();
        let own_br = format!("{me}_dev");
        let brs = [
            "main".to_string(),
            own_br.clone(),
            "dev".into(),
            "feature".into(),
        ];
        let lbs = ["REL1", "REL2", "BL"];
        let paths = [
            "a.c".to_string(),
            "b.c".into(),
            "src/x.rs".into(),
            "doc/readme".into(),
            format!("{me}/own.txt"),
            format!("{me}/notes"),
        ];
        // Nobody hands work to a replica closed for good.
        let names: Vec<String> = (0..self.sites.len())
            .filter(|&i| !self.closing(i))
            .map(|i| self.sites[i].name.clone())
            .collect();
        let path = paths.choose(&mut self.rng).cloned().unwrap_or_default();
        let br = brs.choose(&mut self.rng).cloned().unwrap_or_default();
        let lb = lbs
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("BL")
            .to_string();
        let sel = match self.rng.gen_range(0..5) {
            0 => format!("brtype:{br}"),
            1 => format!("lbtype:{lb}"),
            2 => format!("elem:{path}"),
            3 => format!("branch:{path}@@{br}"),
            _ => format!(
                "replica:{}",
                names.choose(&mut self.rng).cloned().unwrap_or_default()
            ),
        };
        let to = names.choose(&mut self.rng).cloned().unwrap_or_default();
        let content = self.draw_content(&me);
        Change {
            me,
            own_br,
            path,
            br,
            lb,
            sel,
            to,
            content,
        }
    }

    /// A version's content: one in twenty is 1–6 KB of random bytes; the others are a unique
    /// first line over a body every small version shares, as versions of one file do, so
    /// that packets carry them as deltas against versions the target holds.
    fn draw_content(&mut self, me: &str) -> Vec<u8> {
        let big = self.rng.gen_bool(0.05);
        if big {
            (0..self.rng.gen_range(1000..6000))
                .map(|_| self.rng.gen())
                .collect()
        } else {
            let mut v = format!("{me}-{}-{}\n", self.step, self.rng.gen::<u16>()).into_bytes();
            v.extend_from_slice(SHARED_BODY);
            v
        }
    }

    /// Runs the local change of `kind` (0–99, weighted: check-ins are the most frequent) with
    /// the drawn names; returns what it was and its outcome (`None`: it crashed).
    fn run_change(
        &mut self,
        i: usize,
        kind: i32,
        c: &Change,
    ) -> (String, Option<Result<(), CoreError>>) {
        let Change {
            own_br,
            path,
            br,
            lb,
            sel,
            to,
            content,
            ..
        } = c;
        match kind {
            0..=7 => {
                let name = if self.rng.gen_bool(0.5) { own_br } else { br };
                (
                    format!("mkbrtype {name}"),
                    self.mutate(i, "mkbrtype", true, |r| r.mkbrtype(name).map(|_| ())),
                )
            }
            8..=13 => (
                format!("mklbtype {lb}"),
                self.mutate(i, "mklbtype", true, |r| r.mklbtype(lb).map(|_| ())),
            ),
            14..=21 => (
                format!("mkelem {path}"),
                self.mutate(i, "mkelem", true, |r| r.mkelem(path).map(|_| ())),
            ),
            22..=61 => {
                let b = if self.rng.gen_bool(0.6) { "main" } else { br };
                (
                    format!("checkin {path}@@{b} ({} bytes)", content.len()),
                    self.mutate(i, "checkin", true, |r| {
                        r.checkin(path, b, content, "sim", "c").map(|_| ())
                    }),
                )
            }
            62..=71 => {
                let vs = VersionSel {
                    path: path.clone(),
                    brtype: br.clone(),
                    number: None,
                };
                (
                    format!("mklabel {lb} {path}@@{br}"),
                    self.mutate(i, "mklabel", true, |r| r.mklabel(lb, &vs)),
                )
            }
            72..=76 => (
                format!("rmlabel {lb} {path}"),
                self.mutate(i, "rmlabel", true, |r| r.rmlabel(lb, path)),
            ),
            77..=80 => (
                format!("rmname {path}"),
                self.mutate(i, "rmname", true, |r| r.rmname(path)),
            ),
            81..=90 => (
                format!("chmaster {sel} -> {to}"),
                self.mutate(i, "chmaster", true, |r| r.chmaster(sel, to)),
            ),
            _ => (
                format!("reqmaster {sel}"),
                self.mutate(i, "reqmaster", true, |r| r.reqmaster(sel).map(|_| ())),
            ),
        }
    }
}
