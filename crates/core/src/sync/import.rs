//! Import of one logical packet (PROTOCOL §4): the assessment's verdict, what a refused
//! packet still teaches about its sender, and the application of an importable one.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use msite_packet::{wire, Record};

use crate::content;
use crate::error::{CoreError, Refusal, Result};
use crate::ids::{Hash, ReplicaId, ZERO_HASH};
use crate::keys;
use crate::model::{Entry, Op, Row};
use crate::replica::{txn_u64, Appender, Replica, StoredEntry};
use crate::store::{Keyspace, Store, WriteOptions};
use crate::txn::Txn;

use super::ack::RecvState;
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

pub(super) const PREFIX_COMMIT_ENTRIES: u64 = 50_000;

/// Bytes buffered in an import's transaction before a prefix commit: keeps the memory of an
/// import bounded whatever the packet's size.
pub(super) const PREFIX_COMMIT_BYTES: usize = 16 << 20;

/// Feeds a content record (`Blob` or `BlobPiece`) to `intake`, then commits a consistent
/// prefix once the transaction holds more than [`PREFIX_COMMIT_BYTES`]. Returns the hash of the
/// content the record completed, if it completed one. Other records are not content: no-op.
pub(super) fn take_content<S: Store>(
    txn: &mut Txn<'_, S>,
    intake: &mut content::Intake,
    rec: Record,
) -> Result<Option<Hash>> {
    let done = match rec {
        Record::Blob { hash, bytes } => Some(intake.blob(txn, hash, bytes)?),
        Record::BlobPiece {
            hash,
            total,
            offset,
            bytes,
        } => intake.piece(txn, hash, total, offset, &bytes)?,
        _ => None,
    };
    if txn.size() > PREFIX_COMMIT_BYTES {
        txn.commit_prefix(WriteOptions::NO_SYNC)?;
    }
    Ok(done)
}

impl<S: Store> Replica<S> {
    /// Imports one logical packet (PROTOCOL §4). A refused packet changes nothing.
    pub fn import(&self, pkt: Incoming<'_>) -> Result<ImportOutcome> {
        let h = pkt.header.clone();
        let res = self.import_packet(pkt);
        if let Err(CoreError::Refused(Refusal::RolledBack {
            sender,
            theirs,
            ours,
        })) = &res
        {
            // Whether the sender's row showed it or an entry of our own the packet carries
            // (whose chain continues ours), the lock must outlive this refusal: otherwise the
            // replica keeps exporting and nobody runs `restorereplica`, and restorations
            // awaiting it never complete (found by the simulator, seed 110087152).
            self.mark_rolled_back(&format!(
                "{sender} holds this replica's entries up to {theirs} but it holds only up to {ours} (restored without `msite restore`)"
            ))?;
        }
        if let Err(CoreError::Refused(Refusal::SenderHoldsRetired { .. })) = &res {
            // The sender's own restore request is news about the sender, as for a stale
            // packet: without it we never send the sender the newer history that makes it
            // give up the retired entries (found by the simulator, seed 42008201).
            self.learn_sender_request(&h)?;
        }
        if let Err(CoreError::Refused(Refusal::Divergent { .. } | Refusal::RolledBack { .. })) =
            &res
        {
            // A packet refused for its content still has an authentic header: the sender's
            // incarnation is news about the sender (K1). Without it, after a restore with
            // `--override` or a partial `--wait-for`, the replica that reports the fork keeps
            // believing the sender's old incarnation, and its packets are refused as stale.
            let k = keys::peer(keys::peers::INCARNATION, &ReplicaId(h.sender.0));
            let mut txn = Txn::new(&self.store);
            if h.sender_incarnation > txn_u64(&txn, Keyspace::Peers, &k)? {
                txn.put(Keyspace::Peers, &k, &h.sender_incarnation.to_be_bytes());
                txn.commit(WriteOptions::SYNC)?;
            }
        }
        res
    }

    /// A packet of `sender` was refused as stale (for an older incarnation of the sender or
    /// of this replica). Either it is an old packet still in flight, or its sender is put back
    /// to a copy older than a restoration (its own or ours) and cannot know it: if nothing of
    /// ours reaches it, it sends stale packets forever, and a fork it may have made stays
    /// unreported. So the next export to it sends at least a probe, whose header names both
    /// incarnations we know (found by the simulator, seeds 80176217 and 110205868).
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

    pub(super) fn import_packet(&self, mut pkt: Incoming<'_>) -> Result<ImportOutcome> {
        let h = pkt.header.clone();
        let src = pkt.source.clone();
        let sender = ReplicaId(h.sender.0);
        let assessment = self.assess(&h, pkt.kind, &pkt.packet_id, &src)?;
        if matches!(
            assessment,
            Assessment::Importable
                | Assessment::Waiting(_)
                | Assessment::RolledBack(_)
                | Assessment::Refused(CoreError::Refused(
                    Refusal::StaleTarget { .. }
                        | Refusal::StaleSender { .. }
                        | Refusal::Divergent { .. }
                        | Refusal::SenderHoldsRetired { .. }
                ))
        ) {
            // An authentic header of our family addressed to us: its sender is a sibling,
            // whatever becomes of the packet (K3).
            let mut txn = Txn::new(&self.store);
            self.note_sibling(&mut txn, &sender)?;
            for c in &h.sender_row {
                self.note_sibling(&mut txn, &ReplicaId(c.origin.0))?;
            }
            if !txn.is_empty() {
                txn.commit(WriteOptions::SYNC)?;
            }
        }
        match assessment {
            Assessment::Importable => {}
            Assessment::AlreadyApplied => return Ok(ImportOutcome::AlreadyApplied),
            Assessment::Refused(CoreError::Refused(r @ Refusal::StaleTarget { .. })) => {
                // The packet was built before our restore was known to its sender, but the
                // sender's own restore request in it is news about the sender, not content
                // built against our old state: learn it (without it, two replicas restored at
                // once refuse each other's packets forever; found by the simulator). Nothing
                // else of the packet is applied.
                self.learn_sender_request(&h)?;
                self.answer_stale(&sender)?;
                return Err(CoreError::Refused(r));
            }
            Assessment::Refused(CoreError::Refused(r @ Refusal::StaleSender { .. })) => {
                self.answer_stale(&sender)?;
                return Err(self.with_later_forks(CoreError::Refused(r), &mut pkt.records, &[])?);
            }
            // Forks the carried entries show beyond the bases are reported too (K14).
            Assessment::Refused(e) => {
                return Err(self.with_later_forks(e, &mut pkt.records, &[])?)
            }
            // Marked rolled back by `import`, as for a carried entry that shows it.
            Assessment::RolledBack(refusal) => return Err(CoreError::Refused(refusal)),
            Assessment::NewerIncarnationKnown {
                known,
                ours,
                sender,
            } => {
                return Err(self.on_newer_incarnation(known, ours, &sender)?);
            }
            Assessment::Waiting(needs) => {
                // A waiting packet still tells us the sender's incarnation and its own restore
                // request (found by the simulator: otherwise a request carried only by a
                // waiting packet is never learned).
                self.learn_sender_request(&h)?;
                // Remember that we saw this packet: our next report tells the sender that an
                // earlier packet of its is missing.
                let me_t = h.targets.iter().find(|t| t.replica.0 == self.me.0).cloned();
                let mut recv = Self::recv_state(&self.store, &sender)?;
                if recv.sender_inc != h.sender_incarnation {
                    let newer = h.sender_incarnation > recv.sender_inc;
                    recv = RecvState {
                        sender_inc: h.sender_incarnation,
                        ..Default::default()
                    };
                    if newer {
                        // Our reports must name the sender's new incarnation even before any
                        // of its packets applies here: otherwise it ignores them, never learns
                        // that its packet was lost, and two replicas whose packets wait at
                        // each other stay silent (found by the simulator, seed 61134246).
                        let mut txn = Txn::new(&self.store);
                        txn.put(
                            Keyspace::Peers,
                            &keys::peer(keys::peers::RECV, &sender),
                            &recv.encode(),
                        );
                        txn.commit(WriteOptions::SYNC)?;
                    }
                }
                if let Some(t) = me_t {
                    if t.packet_seq > recv.seen {
                        recv.seen = t.packet_seq;
                        let mut txn = Txn::new(&self.store);
                        txn.put(
                            Keyspace::Peers,
                            &keys::peer(keys::peers::RECV, &sender),
                            &recv.encode(),
                        );
                        // Its report on our packets is news about the sender too (the first
                        // time we see the packet): two replicas whose packets wait at each
                        // other would otherwise never learn that theirs were lost.
                        let sender_name = self.replica_name(&sender);
                        let sender_holds_request = self
                            .store
                            .get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, &sender))?
                            .is_some();
                        let mut notes = Vec::new();
                        Self::take_report(
                            &mut txn,
                            &sender,
                            &sender_name,
                            &t,
                            &Row::from_wire(&h.sender_row),
                            self.status()?.incarnation,
                            sender_holds_request,
                            true,
                            &mut notes,
                        )?;
                        txn.commit(WriteOptions::SYNC)?;
                    }
                }
                return Ok(ImportOutcome::Waiting(needs));
            }
        }
        let me_t = h
            .targets
            .iter()
            .find(|t| t.replica.0 == self.me.0)
            .cloned()
            .ok_or_else(|| CoreError::Invalid("packet lost its target".into()))?;
        let st = self.status()?;
        let own = self.own_row()?;
        let sender_row = Row::from_wire(&h.sender_row);
        let sender_name = if h.sender_name.is_empty() {
            self.replica_name(&sender)
        } else {
            h.sender_name.clone()
        };
        // 6. Apply entries, then control records.
        let recovering = st.recovering.is_some();
        let sender_recovering = carries_own_request(&h);
        let mut txn = Txn::new(&self.store);
        let mut ap = Appender::load(&txn)?;
        let mut held: BTreeMap<ReplicaId, u64> = own.0.clone();
        let mut applied = 0u64;
        let mut skipped = 0u64;
        let mut last_hash: BTreeMap<ReplicaId, Hash> = BTreeMap::new();
        let mut grants = Vec::new();
        let mut blobs_seen: HashSet<Hash> = HashSet::new();
        let limit = self.max_version_bytes()?;
        pkt.set_content_limit(limit);
        let mut intake = content::Intake::new(limit, &src);
        let mut notes = Vec::new();
        // Origins whose entries this packet made us give up (K13) before a refusal: the
        // refusal discards that too, so it names them with the forks (found by the simulator,
        // seed 120167559).
        let mut given_up: Vec<(String, u64)> = Vec::new();
        while let Some(rec) = pkt.records.next() {
            match rec? {
                rec @ (Record::Blob { .. } | Record::BlobPiece { .. }) => {
                    if let Some(h) = take_content(&mut txn, &mut intake, rec)? {
                        blobs_seen.insert(h);
                    }
                }
                Record::Entry(bytes) => {
                    intake.idle()?;
                    let e = Entry::decode_verified(&bytes)
                        .map_err(|e| CoreError::Malformed(format!("{src}: {e}")))?;
                    let mut h_o = held.get(&e.origin).copied().unwrap_or(0);
                    if e.number <= h_o && recovering {
                        // A recovering store may be older than a restoration of this origin
                        // that retired what it holds here: the newer timeline replaces it
                        // (K13; see `retire_history`).
                        let retired = match self.retire_if_superseded(&mut txn, &e, &blobs_seen) {
                            Ok(r) => r,
                            Err(err) => {
                                return Err(self.with_later_forks(
                                    err,
                                    &mut pkt.records,
                                    &given_up,
                                )?);
                            }
                        };
                        if let Some(removed) = retired {
                            given_up.push((self.replica_name(&e.origin), e.number));
                            notes.push(removed);
                            held.insert(e.origin, e.number - 1);
                            last_hash.remove(&e.origin);
                            h_o = e.number - 1;
                        }
                    }
                    if e.number <= h_o {
                        let ours =
                            match txn.get(Keyspace::Oplog, &keys::oplog(&e.origin, e.number))? {
                                Some(v) => StoredEntry::decode(&v)?.hash,
                                None => ZERO_HASH,
                            };
                        if ours != e.hash {
                            let origin = self.replica_name(&e.origin);
                            if sender_recovering && self.holds_newer(&txn, &e)? {
                                // The sender recovers from a copy older than a restoration of
                                // that origin and relays an entry it replaced: not a fork; the
                                // sender gives it up when it receives ours (K13).
                                let err = CoreError::Refused(Refusal::SenderHoldsRetired {
                                    sender: sender_name.clone(),
                                    origin,
                                    number: e.number,
                                    also: Vec::new(),
                                });
                                return Err(self.with_later_forks(
                                    err,
                                    &mut pkt.records,
                                    &given_up,
                                )?);
                            }
                            let err = CoreError::Refused(Refusal::Divergent {
                                origin,
                                number: e.number,
                                detail: format!(
                                    "{sender_name} has a different entry under the same number"
                                ),
                                also: Vec::new(),
                            });
                            return Err(self.with_later_forks(err, &mut pkt.records, &given_up)?);
                        }
                        skipped += 1;
                        continue;
                    }
                    if e.number != h_o + 1 {
                        return Err(CoreError::Malformed(format!(
                            "{src}: entry {} of {} arrives before entry {}",
                            e.number,
                            self.replica_name(&e.origin),
                            h_o + 1
                        )));
                    }
                    let prev = match last_hash.get(&e.origin) {
                        Some(h) => *h,
                        None => match h_o {
                            0 => ZERO_HASH,
                            n => match txn.get(Keyspace::Oplog, &keys::oplog(&e.origin, n))? {
                                Some(v) => StoredEntry::decode(&v)?.hash,
                                None => ZERO_HASH,
                            },
                        },
                    };
                    if e.prev != prev {
                        let err = CoreError::Refused(Refusal::Divergent {
                            origin: self.replica_name(&e.origin),
                            number: e.number,
                            detail: "its hash chain does not continue this replica's".into(),
                            also: Vec::new(),
                        });
                        return Err(self.with_later_forks(err, &mut pkt.records, &given_up)?);
                    }
                    if e.origin == self.me && !recovering {
                        return Err(CoreError::Refused(Refusal::RolledBack {
                            sender: sender_name.clone(),
                            theirs: e.number,
                            ours: h_o,
                        }));
                    }
                    if let Op::Checkin { content, size, .. } = &e.op {
                        if !blobs_seen.contains(content)
                            && !content::contains_sized(&txn, content, *size)?
                        {
                            return Err(CoreError::Malformed(format!(
                                "{src}: entry {} of {} refers to content the packet does not carry",
                                e.number,
                                self.replica_name(&e.origin)
                            )));
                        }
                    }
                    ap.store_entry(&mut txn, &e, &bytes)?;
                    self.on_entry(&mut txn, &e)?;
                    if let Op::ReqMaster { object, requester } = &e.op {
                        grants.push((*object, *requester));
                    }
                    held.insert(e.origin, e.number);
                    last_hash.insert(e.origin, e.hash);
                    applied += 1;
                    if applied.is_multiple_of(PREFIX_COMMIT_ENTRIES)
                        || txn.size() > PREFIX_COMMIT_BYTES
                    {
                        // A very large packet commits in consistent prefixes; a crash leaves a
                        // prefix that the next import continues from.
                        txn.commit_prefix(WriteOptions::NO_SYNC)?;
                    }
                }
            }
        }
        intake.idle()?;
        self.apply_controls(&mut txn, &mut ap, &h.controls, &mut notes)?;
        // 7. Estimates and acknowledgements.
        let sender_holds_request = txn
            .get(Keyspace::Peers, &keys::peer(keys::peers::REQUEST, &sender))?
            .is_some();
        let completed_sender = txn_u64(
            &txn,
            Keyspace::Peers,
            &keys::peer(keys::peers::COMPLETED, &sender),
        )?;
        let sender_revives_completed = h.controls.iter().any(|c| {
            matches!(c, wire::Control::RestoreRequest { replica, incarnation, .. }
                if replica.0 == sender.0 && *incarnation <= completed_sender)
        });
        let newest = {
            let r = Self::recv_state(&txn, &sender)?;
            me_t.packet_seq > 0
                && (r.sender_inc != h.sender_incarnation || me_t.packet_seq > r.seen)
        };
        if sender_revives_completed {
            // The sender still asks for a restoration we saw complete: its store was put back
            // to a copy taken while it recovered (a snapshot rollback; K15). Its row is exact:
            // set our estimate to it, so our next packet gives back what it lost, including
            // its restore complete, which moves it to a new incarnation.
            for (k, _) in txn.scan_prefix(Keyspace::Epochs, &keys::estimate_prefix(&sender))? {
                txn.delete(Keyspace::Epochs, &k);
            }
            for (o, n) in &sender_row.0 {
                txn.put(
                    Keyspace::Epochs,
                    &keys::estimate(&sender, o),
                    &n.to_be_bytes(),
                );
            }
        } else if sender_recovering {
            self.raise_estimate_of_recovering(&mut txn, &sender, &sender_row)?;
            if newest {
                // A recovering replica's row only grows, unless its store was put back to a
                // copy taken earlier in the same restoration (a snapshot; the request keeps
                // its incarnation, so we do not roll back on it): its newest packet's row is
                // exact, and an estimate above it makes every packet to it wait (K11, found by
                // the simulator, seed 34001402).
                for (o, n) in
                    &crate::replica::read_row_txn(&txn, &keys::estimate_prefix(&sender))?.0
                {
                    if sender_row.get(o) < *n {
                        txn.put(
                            Keyspace::Epochs,
                            &keys::estimate(&sender, o),
                            &sender_row.get(o).to_be_bytes(),
                        );
                    }
                }
            }
        } else if !sender_holds_request {
            crate::restore::raise_estimate(&mut txn, &sender, &sender_row)?;
        }
        Self::take_report(
            &mut txn,
            &sender,
            &sender_name,
            &me_t,
            &sender_row,
            st.incarnation,
            sender_holds_request,
            newest,
            &mut notes,
        )?;
        let mut recv = Self::recv_state(&txn, &sender)?;
        if recv.sender_inc != h.sender_incarnation {
            recv = RecvState {
                sender_inc: h.sender_incarnation,
                ..Default::default()
            };
        }
        recv.applied = recv.applied.max(me_t.packet_seq);
        recv.seen = recv.seen.max(me_t.packet_seq);
        txn.put(
            Keyspace::Peers,
            &keys::peer(keys::peers::RECV, &sender),
            &recv.encode(),
        );
        if h.sender_incarnation
            > txn_u64(
                &txn,
                Keyspace::Peers,
                &keys::peer(keys::peers::INCARNATION, &sender),
            )?
        {
            txn.put(
                Keyspace::Peers,
                &keys::peer(keys::peers::INCARNATION, &sender),
                &h.sender_incarnation.to_be_bytes(),
            );
        }
        txn.put(Keyspace::Peers, &keys::imported(&pkt.packet_id), &[]);
        let unlocked = recovering && self.maybe_complete(&mut txn, &mut ap, false)?;
        if unlocked {
            notes.push(format!(
                "Database {} is unlocked after restoration.",
                self.name()
            ));
        }
        txn.commit(WriteOptions::SYNC)?;
        if !grants.is_empty() {
            notes.extend(self.process_master_requests(&grants)?);
        }
        Ok(ImportOutcome::Applied {
            applied,
            skipped,
            notes,
            unlocked,
        })
    }

    /// A refusal as divergent, or as holding retired entries (K35, found by the simulator,
    /// seed 180505535: a second fork stayed unnamed behind the first), also names every other
    /// origin whose entries in the rest of the packet differ from ours, so each fork the packet
    /// shows is reported, not only the first (K14), and then the origins in `given_up`: entries
    /// of theirs the packet had made this recovering replica give up before the refusal, which
    /// discards that as well (K29).
    /// Other errors pass through.
    pub(super) fn with_later_forks(
        &self,
        mut err: CoreError,
        records: &mut dyn Iterator<Item = Result<Record>>,
        given_up: &[(String, u64)],
    ) -> Result<CoreError> {
        let CoreError::Refused(refusal) = &mut err else {
            return Ok(err);
        };
        let Some((origin, also)) = refusal.forks_mut() else {
            return Ok(err);
        };
        let mut named: Vec<&str> = vec![origin];
        named.extend(also.iter().map(|(o, _)| o.as_str()));
        let more = self.later_forks(records, &named)?;
        also.extend(more);
        for (o, n) in given_up {
            if o != origin && !also.iter().any(|(a, _)| a == o) {
                also.push((o.clone(), *n));
            }
        }
        Ok(err)
    }

    /// After a packet is found divergent at the origins named in `reported`: the other
    /// origins whose entries in the rest of the packet differ from the ones held here, so that
    /// the refusal reports every fork the packet shows, not only the first (K14). Nothing is
    /// applied.
    pub(super) fn later_forks(
        &self,
        records: &mut dyn Iterator<Item = Result<Record>>,
        reported: &[&str],
    ) -> Result<Vec<(String, u64)>> {
        let mut seen: BTreeSet<String> = reported.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        for rec in records {
            let Ok(Record::Entry(bytes)) = rec else {
                continue;
            };
            let Ok(e) = Entry::decode_verified(&bytes) else {
                continue;
            };
            if let Some(ours) = Self::entry_hash_at(&self.store, &e.origin, e.number)? {
                let name = self.replica_name(&e.origin);
                if ours != e.hash && !seen.contains(&name) {
                    seen.insert(name.clone());
                    out.push((name, e.number));
                }
            }
        }
        Ok(out)
    }
}
