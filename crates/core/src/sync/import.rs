//! Import of one logical packet (PROTOCOL §4): the assessment's verdict, what a refused
//! packet still teaches about its sender, and the application of an importable one.

use std::collections::BTreeSet;

use msite_packet::{wire, Record};

use crate::error::{CoreError, Refusal, Result};
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::Entry;
use crate::replica::{get_u64, Appender, Replica};
use crate::store::{Keyspace, Store, WriteOptions};
use crate::txn::Txn;

use super::apply::EntryApply;
use super::assess::{carries_own_request, Assessment, Need};
use super::packet::Incoming;

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Applied.
    Applied {
        /// Entries applied.
        applied: u64,
        /// Entries already held (skipped).
        skipped: u64,
        /// Things the operator should know (acknowledgements made, unlock, …).
        notes: Vec<String>,
        /// Whether this import completed this replica's restoration.
        unlocked: bool,
    },
    /// This packet was imported before; nothing changed.
    AlreadyApplied,
    /// The packet must wait for others (it stays in the incoming bay).
    Waiting(Vec<Need>),
}

impl<S: Store> Replica<S> {
    /// Imports one logical packet (PROTOCOL §4). A refused packet changes nothing, except
    /// what [`Replica::after_refusal`] writes.
    pub fn import(&self, pkt: Incoming<'_>) -> Result<ImportOutcome> {
        let h = pkt.header.clone();
        let res = self.import_packet(pkt);
        if let Err(CoreError::Refused(r)) = &res {
            self.after_refusal(&h, r)?;
        }
        res
    }

    /// What a refused packet still does, in one write: a refusal that shows this replica
    /// lost entries of its own locks it as rolled back (invariant 8: otherwise it keeps
    /// numbering and exporting, nobody runs `restorereplica`, and restorations awaiting it
    /// never complete); a refusal for content teaches the sender's incarnation (K1: without
    /// it, after a restore with `--override` or a partial `--wait-for`, the replica that
    /// reports the fork keeps believing the sender's old incarnation, and its packets are
    /// refused as stale); one for holding retired entries teaches the sender's own restore
    /// request (K13: without it we never send the sender the newer history that makes it give
    /// them up).
    fn after_refusal(&self, h: &wire::Header, r: &Refusal) -> Result<()> {
        if let Refusal::SenderHoldsRetired { .. } = r {
            self.learn_sender_request(h)?;
        }
        let mut txn = Txn::new(&self.store);
        if let Some(reason) = rollback_reason(r) {
            Self::lock_rolled_back(&mut txn, &reason);
        }
        if r.forks_shown() && !crate::fork::decisions_in(&txn)?.is_empty() {
            // The sender may not know a fork decision held here: our answer carries it.
            let k = keys::peer(keys::peers::ANSWER_STALE, &ReplicaId(h.sender.0));
            txn.put(Keyspace::Peers, &k, &[1]);
        }
        if matches!(
            r,
            Refusal::Divergent { .. } | Refusal::RolledBack { .. } | Refusal::OwnFork { .. }
        ) {
            let k = keys::peer(keys::peers::INCARNATION, &ReplicaId(h.sender.0));
            if h.sender_incarnation > get_u64(&txn, Keyspace::Peers, &k)? {
                txn.put(Keyspace::Peers, &k, &h.sender_incarnation.to_be_bytes());
            }
        }
        if !txn.is_empty() {
            txn.commit(WriteOptions::SYNC)?;
        }
        Ok(())
    }

    /// A packet of `sender` was refused as stale (for an older incarnation of the sender or
    /// of this replica). Either it is an old packet still in flight, or its sender is put back
    /// to a copy older than a restoration (its own or ours) and cannot know it: if nothing of
    /// ours reaches it, it sends stale packets forever, and a fork it may have made stays
    /// unreported. So the next export to it sends at least a probe, whose header names both
    /// incarnations we know (K27).
    pub(super) fn answer_stale(&self, sender: &ReplicaId) -> Result<()> {
        use crate::store::StoreExt;
        self.store.put_one(
            Keyspace::Peers,
            &keys::peer(keys::peers::ANSWER_STALE, sender),
            &[1],
            WriteOptions::SYNC,
        )?;
        Ok(())
    }

    /// The §4 pipeline: the header's checks (steps 1–5, [`Replica::assess`]), what any
    /// authentic header addressed to us teaches, then the packet applied, kept waiting or
    /// refused.
    pub(super) fn import_packet(&self, pkt: Incoming<'_>) -> Result<ImportOutcome> {
        let adopted = self.adopt_decisions_of(&pkt)?;
        let mut out = self.import_assessed(pkt);
        if let Ok(ImportOutcome::Applied { notes, .. }) = &mut out {
            notes.splice(0..0, adopted);
        }
        out
    }

    /// The fork repair decisions an authentic packet addressed to us carries, adopted before
    /// its assessment (`fork.rs`): a packet refused as divergent before the decision applies
    /// after it. Returns notes for the operator.
    fn adopt_decisions_of(&self, pkt: &Incoming<'_>) -> Result<Vec<String>> {
        let h = &pkt.header;
        if h.fork_decisions.is_empty()
            || self.addressed_here(h, pkt.kind, &pkt.source).is_err()
            || self
                .check_signature(h, pkt.kind, &pkt.packet_id, &pkt.source)
                .is_err()
        {
            return Ok(Vec::new());
        }
        self.adopt_carried_decisions(h)
    }

    fn import_assessed(&self, mut pkt: Incoming<'_>) -> Result<ImportOutcome> {
        let h = pkt.header.clone();
        let src = pkt.source.clone();
        let sender = ReplicaId(h.sender.0);
        self.pin_introduced(&h)?;
        let assessment = self.assess(&h, pkt.kind, &pkt.packet_id, &src)?;
        if names_siblings(&assessment) {
            self.note_siblings(&h)?;
        }
        match assessment {
            Assessment::Importable => self.apply_packet(pkt, &h),
            Assessment::AlreadyApplied => Ok(ImportOutcome::AlreadyApplied),
            Assessment::Waiting(needs) => {
                self.note_waiting(&h)?;
                if let Some(r) = self.behind_senders_retention(&h, &needs) {
                    // The sender no longer keeps what this packet waits for.
                    return Err(CoreError::Refused(r));
                }
                Ok(ImportOutcome::Waiting(needs))
            }
            Assessment::Refused(CoreError::Refused(r @ Refusal::StaleRequest { .. })) => {
                // Built by a sender that has not seen a newer restoration of a third replica;
                // everything about the sender itself is current. It teaches what a waiting
                // packet does (its own request, that we saw it, its report on our packets):
                // without the report, a sender whose copies of our packets wait for one it
                // lost never gets it again, and keeps relaying the old request (found by the
                // simulator). Our answer carries the newer request.
                self.note_waiting(&h)?;
                self.answer_stale(&sender)?;
                Err(CoreError::Refused(r))
            }
            Assessment::Refused(CoreError::Refused(r @ Refusal::StaleTarget { .. })) => {
                // The packet was built before our restore was known to its sender, but the
                // sender's own restore request in it is news about the sender, not content
                // built against our old state: learn it (without it, two replicas restored at
                // once refuse each other's packets forever). Nothing else of the packet is
                // applied.
                self.learn_sender_request(&h)?;
                self.answer_stale(&sender)?;
                Err(CoreError::Refused(r))
            }
            Assessment::Refused(CoreError::Refused(r @ Refusal::StaleSender { .. })) => {
                self.answer_stale(&sender)?;
                Err(self.with_later_forks(
                    CoreError::Refused(r),
                    &mut pkt.records,
                    &[],
                    &self.sender_name(&h),
                )?)
            }
            // Forks the carried entries show beyond the bases are reported too (K14).
            Assessment::Refused(e) => {
                Err(self.with_later_forks(e, &mut pkt.records, &[], &self.sender_name(&h))?)
            }
            // Marked rolled back by `import`, as for a carried entry that shows it.
            Assessment::RolledBack(refusal) => Err(CoreError::Refused(refusal)),
            Assessment::NewerIncarnationKnown {
                known,
                ours,
                sender,
            } => Err(self.on_newer_incarnation(known, ours, &sender)?),
        }
    }

    /// An authentic header of our family addressed to us: its sender, and every origin of its
    /// sender row, is a sibling, whatever becomes of the packet (K3).
    fn note_siblings(&self, h: &wire::Header) -> Result<()> {
        let mut txn = Txn::new(&self.store);
        self.note_sibling(&mut txn, &ReplicaId(h.sender.0))?;
        for c in &h.sender_row {
            self.note_sibling(&mut txn, &ReplicaId(c.origin.0))?;
        }
        if !txn.is_empty() {
            txn.commit(WriteOptions::SYNC)?;
        }
        Ok(())
    }

    /// Applies an importable packet in one transaction (§4 steps 6–8): its entries, its
    /// control records, what it tells about its sender, its id, and whether it completes our
    /// restoration. Mastership requests it brought are answered after the commit.
    fn apply_packet(&self, mut pkt: Incoming<'_>, h: &wire::Header) -> Result<ImportOutcome> {
        let me_t = h
            .targets
            .iter()
            .find(|t| t.replica.0 == self.me.0)
            .cloned()
            .ok_or_else(|| CoreError::Invalid("packet lost its target".into()))?;
        let st = self.status()?;
        let own = self.own_row()?;
        let sender_name = self.sender_name(h);
        let recovering = st.recovering.is_some();
        let mut txn = Txn::new(&self.store);
        let mut ap = Appender::load(&txn)?;
        let limit = self.max_version_bytes()?;
        pkt.set_content_limit(limit);
        let heads = self.check_signature(h, pkt.kind, &pkt.packet_id, &pkt.source)?;
        let mut run = EntryApply::new(
            self,
            &own,
            limit,
            &pkt.source,
            &sender_name,
            carries_own_request(h),
            recovering,
        );
        run.heads = super::trust::HeadCheck::new(heads, &sender_name);
        run.decisions = crate::fork::decisions_in(&txn)?;
        run.run(&mut txn, &mut ap, &mut pkt.records)?;
        if let Some(needs) = self.awaiting_key_entry(&txn, h, &own, &run.heads)? {
            // Dropped uncommitted: nothing of the packet applies before its keys are in force.
            return Ok(ImportOutcome::Waiting(needs));
        }
        run.heads.finish(|o| self.replica_name(o))?;
        super::trust::pin_oldest_listed_keys(&mut txn, h)?;
        self.take_heads(&mut txn, h)?;
        let mut notes = std::mem::take(&mut run.notes);
        self.apply_controls(&mut txn, &mut ap, &h.controls, &mut notes)?;
        self.take_news(&mut txn, h, &me_t, &sender_name, st.incarnation, &mut notes)?;
        self.take_reports(&mut txn, &ReplicaId(h.sender.0), &h.reports)?;
        txn.put(Keyspace::Peers, &keys::imported(&pkt.packet_id), &[]);
        let unlocked = recovering && self.maybe_complete(&mut txn, &mut ap, false)?;
        if unlocked {
            notes.push(format!(
                "Database {} is unlocked after restoration.",
                self.name()
            ));
        }
        txn.commit(WriteOptions::SYNC)?;
        if !run.grants.is_empty() {
            notes.extend(self.process_master_requests(&run.grants)?);
        }
        Ok(ImportOutcome::Applied {
            applied: run.applied,
            skipped: run.skipped,
            notes,
            unlocked,
        })
    }

    /// A packet whose header used a key announced after the one held here (a rotation or a
    /// vouch this replica has not applied), whose entries did not bring it in force, while its
    /// sender holds entries this replica does not (in `txn`, the packet's entries applied):
    /// the entry that brings the key may be among them, in a packet still on its way, so this
    /// one waits for them, as a packet whose bases are missing does. Returns what it waits
    /// for; `None` when nothing is awaited (then no entry will bring the key: it is refused).
    fn awaiting_key_entry(
        &self,
        txn: &Txn<'_, S>,
        h: &wire::Header,
        own: &crate::model::Row,
        heads: &super::trust::HeadCheck,
    ) -> Result<Option<Vec<Need>>> {
        if heads.unconfirmed().is_empty() {
            return Ok(None);
        }
        let mut needs = Vec::new();
        for (origin, theirs) in crate::model::Row::from_wire(&h.sender_row).0 {
            let held = get_u64(txn, Keyspace::Epochs, &keys::own(&origin))?;
            if theirs > held {
                needs.push(Need {
                    origin,
                    origin_name: self.replica_name(&origin),
                    needs: theirs,
                    has: own.get(&origin),
                });
            }
        }
        Ok((!needs.is_empty()).then_some(needs))
    }

    /// A refusal as divergent, or as holding retired entries (K35), also names every other
    /// origin whose entries in the rest of the packet differ from ours, so each fork the packet
    /// shows is reported, not only the first (K14), and then the origins in `given_up`: entries
    /// of theirs the packet had made this recovering replica give up before the refusal, which
    /// discards that as well (K29). When the rest of the packet shows `sender` holding a
    /// different entry under one of our own numbers that no restoration of ours retired, the
    /// refusal becomes [`Refusal::OwnFork`] (this replica is rolled back; invariant 8), naming
    /// the other forks. Other errors pass through.
    pub(super) fn with_later_forks(
        &self,
        mut err: CoreError,
        records: &mut dyn Iterator<Item = Result<Record>>,
        given_up: &[(String, u64)],
        sender: &str,
    ) -> Result<CoreError> {
        let CoreError::Refused(refusal) = &mut err else {
            return Ok(err);
        };
        let Some((origin, also)) = refusal.forks_mut() else {
            return Ok(err);
        };
        let mut named: Vec<&str> = vec![origin];
        named.extend(also.iter().map(|(o, _)| o.as_str()));
        let (more, own_fork) = self.later_forks(records, &named)?;
        also.extend(more);
        for (o, n) in given_up {
            if o != origin && !also.iter().any(|(a, _)| a == o) {
                also.push((o.clone(), *n));
            }
        }
        let Some(number) = own_fork else {
            return Ok(err);
        };
        let mut others = vec![(origin.to_string(), 0)];
        others.extend(std::mem::take(also));
        if let Some(first) = refusal.first_fork_number() {
            others[0].1 = first;
        }
        Ok(CoreError::Refused(Refusal::OwnFork {
            sender: sender.to_string(),
            origin: self.name(),
            number,
            also: others,
        }))
    }

    /// After a packet is found divergent at the origins named in `reported`: the other
    /// origins whose entries in the rest of the packet differ from the ones held here, so that
    /// the refusal reports every fork the packet shows, not only the first (K14), and the
    /// first of our own numbers under which it carries a different entry that no restoration
    /// of ours retired (made on our timeline: this replica numbered it twice). Nothing is
    /// applied.
    pub(super) fn later_forks(
        &self,
        records: &mut dyn Iterator<Item = Result<Record>>,
        reported: &[&str],
    ) -> Result<(Forks, Option<u64>)> {
        let mut seen: BTreeSet<String> = reported.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let mut own_fork = None;
        let me = self.name();
        for rec in records {
            let Ok(Record::Entry(bytes)) = rec else {
                continue;
            };
            let Ok(e) = Entry::decode_verified(&bytes) else {
                continue;
            };
            let Some(ours) = Self::entry_hash_at(&self.store, &e.origin, e.number)? else {
                continue;
            };
            if ours == e.hash {
                continue;
            }
            if own_fork.is_none() && !seen.contains(&me) && self.own_entry_reused(&e)? {
                own_fork = Some(e.number);
                continue;
            }
            let name = self.replica_name(&e.origin);
            if !seen.contains(&name) {
                seen.insert(name.clone());
                out.push((name, e.number));
            }
        }
        Ok((out, own_fork))
    }

    /// Whether `theirs`, a different entry than ours under one of our own numbers, shows
    /// that this replica numbered it twice: we do not recover, and ours is not of a later
    /// incarnation (which would make theirs one a restoration of ours retired).
    fn own_entry_reused(&self, theirs: &Entry) -> Result<bool> {
        if theirs.origin != self.me || self.status()?.recovering.is_some() {
            return Ok(false);
        }
        Ok(!self.holds_newer(&Txn::new(&self.store), theirs)?)
    }
}

/// Origins whose histories differ, each with the first number where they do.
type Forks = Vec<(String, u64)>;

/// Why a refusal locks this replica as rolled back, as the lock records it (`msite status`
/// and every refused command show it), or `None` when it does not show that this replica
/// lost entries of its own.
fn rollback_reason(r: &Refusal) -> Option<String> {
    match r {
        Refusal::RolledBack {
            sender,
            theirs,
            ours,
        } => Some(format!(
            "{sender} holds this replica's entries up to {theirs} but it holds only up to {ours} (restored without `msite restore`)"
        )),
        Refusal::OwnFork { sender, number, .. } => Some(format!(
            "{sender} holds a different entry {number} of this replica's own, so it numbered {number} twice (put back to an older copy without `msite restore`)"
        )),
        _ => None,
    }
}

/// Whether the assessment comes from an authentic header of our family addressed to us, whose
/// sender and sender row name siblings.
fn names_siblings(a: &Assessment) -> bool {
    matches!(
        a,
        Assessment::Importable
            | Assessment::Waiting(_)
            | Assessment::RolledBack(_)
            | Assessment::Refused(CoreError::Refused(
                Refusal::StaleTarget { .. }
                    | Refusal::StaleRequest { .. }
                    | Refusal::StaleSender { .. }
                    | Refusal::Divergent { .. }
                    | Refusal::SenderHoldsRetired { .. }
            ))
    )
}
