//! Packets on the links: exports, the link's faults (loss, duplication, corruption and
//! forgery) and taking a packet out of flight (maybe reordered).

use msite_core::{CoreError, ExportPlan, ReplicaId};
use rand::seq::SliceRandom;
use rand::Rng;

use super::{Packet, World};
use crate::backend::SimBackend;

/// A packet delivered after this many steps in flight counts as delayed.
const DELAYED_STEPS: usize = 8;

impl<B: SimBackend> World<B> {
    /// Exports from `a` for `b` through `write_plan_to_parts`, which records the export the
    /// way `write_plan_to_dir` does (a crash while it runs leaves no finished packet). A
    /// locked exporter or an unknown target exports nothing; any other failure is a
    /// violation. Nothing is exported by or to a shut-down replica, to a replica `a` knows
    /// retired, nor by a retired replica to a sibling that knows it (it would be refused).
    pub(super) fn export(&mut self, a: usize, b: usize, faults: bool) -> Option<Packet> {
        if self.gone(a) || self.gone(b) || self.knows_retired(a, b) || self.knows_retired(b, a) {
            return None;
        }
        let target = self.sites[b].id;
        let plan = match self.rep(a).plan_export(&target) {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(CoreError::Locked(_)) | Err(CoreError::NotFound(_)) => return None,
            Err(e) => {
                self.violation(format!(
                    "export {} -> {} failed: {e}",
                    self.sites[a].name, self.sites[b].name
                ));
                return None;
            }
        };
        let parts = self.write_export(a, b, &plan, faults)?;
        self.serial += 1;
        self.stats.packets += 1;
        let serial = self.serial;
        self.note_export_refusals(a, b, serial, &plan);
        let seq = plan
            .header
            .targets
            .first()
            .map(|t| t.packet_seq)
            .unwrap_or(0);
        let (an, bn) = (self.sites[a].name.clone(), self.sites[b].name.clone());
        self.ev(|_| {
            format!(
                "export #{serial} {an} -> {bn}: {} ({} entries, seq {seq}, {} part(s))",
                plan.reason,
                plan.entry_count,
                parts.len()
            )
        });
        Some(Packet {
            serial,
            from: a,
            to: b,
            parts,
            born: self.step,
            corrupt: false,
            forged: false,
        })
    }

    /// Writes an export plan of `a` for `b` as a mutating call, split into small parts when
    /// the schedule draws it (with faults). A part size below what the header alone takes is
    /// refused before anything is recorded, and the packet is then written as one part.
    /// `None`: it crashed or failed (a violation).
    fn write_export(
        &mut self,
        a: usize,
        b: usize,
        plan: &ExportPlan,
        faults: bool,
    ) -> Option<Vec<Vec<u8>>> {
        let mut max = None;
        if faults && self.p.p_split > 0.0 && self.rng.gen_bool(self.p.p_split) {
            max = Some(self.rng.gen_range(600..4000));
        }
        let (an, bn) = (self.sites[a].name.clone(), self.sites[b].name.clone());
        match self.mutate(a, "export", faults, |r| {
            match r.write_plan_to_parts(plan, max) {
                Err(CoreError::Unreadable(m)) if max.is_some() && m.contains("too small") => {
                    r.write_plan_to_parts(plan, None)
                }
                other => other,
            }
        }) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                self.violation(format!("export {an} -> {bn} failed: {e}"));
                None
            }
        }
    }

    /// Checks the refusals an export plan carries. A refusal on a restore request's row is
    /// exact: the target is behind what the family keeps ([`Self::behind_retention`]); a
    /// warning on a report may come from an old packet arriving late (the import side says
    /// if entries are missing).
    fn note_export_refusals(&mut self, a: usize, b: usize, serial: u64, plan: &ExportPlan) {
        let (an, bn) = (self.sites[a].name.clone(), self.sites[b].name.clone());
        for r in &plan.refusals {
            self.stats.behind_retention += 1;
            if r.contains("which this family no longer keeps") {
                self.behind_retention(a, b, format!("export #{serial} {an} -> {bn}: {r}"));
            } else {
                self.ev(|_| format!("export #{serial} {an} -> {bn}: {r}"));
            }
        }
    }

    /// Puts a packet in flight, with the link's faults.
    pub(super) fn send(&mut self, pkt: Packet) {
        let key = (pkt.from, pkt.to);
        if self.p.p_loss > 0.0 && self.rng.gen_bool(self.p.p_loss) {
            self.stats.lost += 1;
            self.ev(|_| format!("packet #{} lost", pkt.serial));
            return;
        }
        let mut copies = vec![pkt];
        if self.p.p_dup > 0.0 && self.rng.gen_bool(self.p.p_dup) {
            self.stats.duplicated += 1;
            let mut c = copies[0].clone();
            self.serial += 1;
            c.serial = self.serial;
            self.ev(|_| format!("packet #{} duplicated as #{}", copies[0].serial, c.serial));
            copies.push(c);
        }
        if self.p.p_corrupt > 0.0 && self.rng.gen_bool(self.p.p_corrupt) {
            let mut c = copies[0].clone();
            self.corrupt(&mut c);
            if self.rng.gen_bool(0.5) {
                // The damaged copy replaces the packet (the good one is lost).
                copies[0] = c;
            } else {
                self.serial += 1;
                c.serial = self.serial;
                copies.push(c);
            }
        }
        self.links.entry(key).or_default().extend(copies);
    }

    /// Forges a packet in flight as a malicious relay would: the first fork repair decision
    /// it carries is flipped; otherwise the last carried entry of another origin that the
    /// target does not hold yet is altered, its hash and the origin's chain in the packet
    /// recomputed. Either way the header is signed again with the sender's own key. A packet
    /// that carries neither gets its acknowledgement raised instead, by a third party who
    /// cannot sign. Returns what was done, or None when the packet cannot be read.
    pub(super) fn forge(&self, p: &mut Packet) -> Option<String> {
        use msite_packet::{decode_entry, encode_entry, entry_hash, Record};
        let (info, mut header, mut records) =
            msite_packet::decode_parts(p.parts.iter().map(|b| b.as_slice())).ok()?;
        let sender = header.sender;
        let target = self.rep(p.to);
        let victim = records.iter().rev().find_map(|r| match r {
            Record::Entry(b) => decode_entry(b).ok().filter(|e| {
                e.origin != sender
                    && target
                        .own_row()
                        .is_ok_and(|row| row.get(&ReplicaId(e.origin.0)) < e.number)
            }),
            _ => None,
        });
        let kind = info.kind;
        let what = if let Some(d) = header.fork_decisions.first_mut() {
            // A decision carried is altered by the relay, which signs the packet as itself
            // but cannot sign as the decider.
            d.keep ^= true;
            self.rep(p.from)
                .sign_header_for_test(&mut header, kind, &info.packet_id);
            "the timeline a relayed fork repair decision keeps flipped by its sender".to_string()
        } else {
            match victim {
                Some(v) => {
                    let mut relink = None;
                    for r in &mut records {
                        let Record::Entry(b) = r else { continue };
                        let Ok(mut e) = decode_entry(b) else { continue };
                        if e.origin != v.origin || e.number < v.number {
                            continue;
                        }
                        if e.number == v.number {
                            e.time_ms ^= 1;
                        } else if let Some(prev) = relink {
                            e.prev = prev;
                        }
                        e.hash = entry_hash(&e);
                        relink = Some(e.hash);
                        *b = encode_entry(&e);
                    }
                    self.rep(p.from)
                        .sign_header_for_test(&mut header, kind, &info.packet_id);
                    format!(
                        "entry {} of a relayed origin altered by its sender",
                        v.number
                    )
                }
                None => {
                    header.targets.first_mut()?.applied_seq += 1;
                    "acknowledgement raised by a third party".to_string()
                }
            }
        };
        let mut opts = msite_packet::WriteOptions::new(info.packet_id);
        opts.minor = msite_packet::format::FORMAT_MINOR;
        let mut w = msite_packet::MemPacketWriter::new(info.kind, &header, opts).ok()?;
        for r in &records {
            w.push_record(r).ok()?;
        }
        p.parts = w.finish().ok()?.0;
        Some(what)
    }

    /// Damages a packet in flight: a quarter of the time forged when it can be
    /// ([`Self::forge`]), otherwise a bit flipped, a part truncated, a part missing or bytes
    /// appended (drawn).
    pub(super) fn corrupt(&mut self, p: &mut Packet) {
        p.corrupt = true;
        if self.rng.gen_bool(0.25) {
            if let Some(what) = self.forge(p) {
                p.forged = true;
                let serial = p.serial;
                self.ev(|_| format!("packet #{serial} forged: {what}"));
                return;
            }
        }
        let k = self.rng.gen_range(0..p.parts.len());
        let how = self.rng.gen_range(0..4);
        let what = {
            let part = &mut p.parts[k];
            match how {
                0 | 1 if !part.is_empty() => {
                    let at = self.rng.gen_range(0..part.len());
                    let bit = 1u8 << self.rng.gen_range(0..8);
                    part[at] ^= bit;
                    format!("bit flipped at byte {at} of part {}", k + 1)
                }
                2 if !part.is_empty() => {
                    let to = self.rng.gen_range(0..part.len());
                    part.truncate(to);
                    format!("part {} truncated to {to} bytes", k + 1)
                }
                _ if p.parts.len() > 1 => {
                    p.parts.remove(k);
                    format!("part {} missing", k + 1)
                }
                _ => {
                    let extra = self.rng.gen_range(1..64);
                    for _ in 0..extra {
                        let b = self.rng.gen();
                        p.parts[k].push(b);
                    }
                    format!("{extra} bytes appended to part {}", k + 1)
                }
            }
        };
        let serial = p.serial;
        self.ev(|_| format!("packet #{serial} corrupted: {what}"));
    }

    /// Takes a packet from a random non-empty pool (a random one of it, with reordering).
    pub(super) fn take_in_flight(&mut self, faults: bool) -> Option<Packet> {
        let keys: Vec<(usize, usize)> = self
            .links
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| *k)
            .collect();
        let key = *keys.choose(&mut self.rng)?;
        let reorder = faults && self.p.p_reorder > 0.0 && self.rng.gen_bool(self.p.p_reorder);
        let pool = self.links.get_mut(&key)?;
        let idx = if reorder {
            self.rng.gen_range(0..pool.len())
        } else {
            0
        };
        let pkt = pool.remove(idx);
        if idx > 0 {
            self.stats.reordered += 1;
        }
        if self.step.saturating_sub(pkt.born) >= DELAYED_STEPS {
            self.stats.delayed += 1;
        }
        Some(pkt)
    }
}
