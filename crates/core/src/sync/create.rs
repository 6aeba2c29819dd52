//! Replica creation (PROTOCOL §7): planning a new replica's creation packet, and making the
//! new replica's store from it.

use std::collections::BTreeMap;

use msite_packet::{wire, Record};

use crate::content;
use crate::error::{CoreError, Result};
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::{Entry, Op, Row};
use crate::replica::{Appender, Replica};
use crate::store::{Keyspace, Store, WriteOptions};
use crate::txn::Txn;

use super::apply::{take_content, PREFIX_COMMIT_BYTES, PREFIX_COMMIT_ENTRIES};
use super::export::ExportPlan;
use super::packet::Incoming;
use super::trust::HeadCheck;

impl<S: Store> Replica<S> {
    /// Creates replica `name` (mastered here), whose signing key is `key` (made at the new
    /// site, `SiteKey`), and plans its history creation packet: every entry and every content
    /// held here, and the incarnations known here (`msite mkreplica export --history`).
    /// Refused once retention dropped entries here; [`Replica::plan_mkreplica_snapshot`]
    /// (the command's default) works then too.
    pub fn plan_mkreplica(&self, name: &str, key: &wire::PublicKey) -> Result<ExportPlan> {
        if let Some(why) = self.history_dropped(
            "make a history creation packet",
            "make a snapshot creation packet instead (`msite mkreplica export` without --history)",
        )? {
            return Err(crate::error::CoreError::Invalid(why));
        }
        let new_id = self.append_create_replica(name, key)?;
        let own = self.own_row()?;
        let ranges: Vec<(ReplicaId, u64, u64)> = own.0.iter().map(|(o, n)| (*o, 1, *n)).collect();
        let mut plan = self.creation_plan(new_id, &own, ranges)?;
        plan.header.heads = self.heads_for(&plan.ranges)?;
        Ok(plan)
    }

    /// The creation plan of replica `new_id` holding `own`, carrying the entries of `ranges`
    /// (none for a snapshot): header, controls and incarnations as both kinds carry them.
    pub(super) fn creation_plan(
        &self,
        new_id: ReplicaId,
        own: &Row,
        ranges: Vec<(ReplicaId, u64, u64)>,
    ) -> Result<ExportPlan> {
        let entry_count = ranges.iter().map(|(_, from, to)| to + 1 - from).sum();
        let comment = self.incarnations_comment()?;
        let st = self.status()?;
        let to = wire::Target {
            replica: wire::Id(new_id.0),
            incarnation: 0,
            packet_seq: 0,
            ack_incarnation: 0,
            applied_seq: 0,
            seen_seq: 0,
        };
        let controls = self.controls(None)?;
        let mut header = self.header(st.incarnation, to, Vec::new(), own, controls)?;
        header.new_replica = wire::Id(new_id.0);
        header.comment = comment;
        Ok(ExportPlan {
            target: new_id,
            kind: wire::Kind::ReplicaCreation,
            header,
            ranges,
            all_blobs: true,
            delta_held: None,
            seq: 0,
            snapshot: false,
            advance_to: Some(own.clone()),
            report: (0, 0),
            entry_count,
            reason: "replica creation",
            refusals: Vec::new(),
        })
    }

    /// Appends the entry that creates replica `name` with a new id, mastered here, holding
    /// what this replica holds with this entry, then the entry giving it `key`; a name must
    /// be new, printable, without `@`.
    pub(super) fn append_create_replica(
        &self,
        name: &str,
        key: &wire::PublicKey,
    ) -> Result<ReplicaId> {
        self.check_writable()?;
        crate::replica::no_control("replica name", name)?;
        if name.is_empty() || name.contains('\0') || name.contains('@') {
            return Err(CoreError::Invalid(format!(
                "`{name}` is not a valid replica name"
            )));
        }
        if !self
            .view()
            .named(crate::vob::NameKind::Replica, name)?
            .is_empty()
        {
            return Err(CoreError::Exists(format!("replica:{name}")));
        }
        let new_id = ReplicaId(self.env.random_id());
        self.local_change(|r, t, ap| {
            let mut row = crate::replica::read_row(t, keys::OWN_PREFIX)?;
            let n = row.get(&r.me) + 1;
            row.set(r.me, n);
            r.append_local(
                t,
                ap,
                Op::CreateReplica {
                    replica: new_id,
                    name: name.into(),
                    row,
                },
            )?;
            r.announce_new_replica_key(t, ap, new_id, key)
        })?;
        Ok(new_id)
    }

    /// The incarnations known here (restored replicas only), as the creation packet's comment
    /// carries them: `id=inc` pairs joined by commas.
    fn incarnations_comment(&self) -> Result<String> {
        let mut pairs = Vec::new();
        for r in self.view().replicas()? {
            let inc = self.incarnation_of(&r.id)?;
            if inc > 0 {
                pairs.push(format!("{}={inc}", r.id.to_hex()));
            }
        }
        Ok(pairs.join(","))
    }

    /// Makes a new replica in `store` from a replica-creation packet: its entries with their
    /// protocol effects, as import applies them, the incarnations and controls it carries,
    /// our estimate of its sender, then the identity, in one transaction. `key` is the new
    /// site's signing key: the packet's creation entries must announce its public half.
    pub fn create_from_packet(
        store: S,
        env: std::sync::Arc<dyn crate::env::Env>,
        mut pkt: Incoming<'_>,
        key: &super::SiteKey,
    ) -> Result<Replica<S>> {
        let h = pkt.header.clone();
        if pkt.kind != wire::Kind::ReplicaCreation {
            return Err(CoreError::Invalid(format!(
                "{} is an update packet, not a replica-creation packet (import it with `msite syncreplica import` at its target)",
                pkt.source
            )));
        }
        let me = ReplicaId(h.new_replica.0);
        let family = crate::ids::FamilyId(h.family.0);
        if let Some(why) = super::snapshot::interrupted_creation(&store)? {
            return Err(CoreError::Invalid(why));
        }
        let r = Replica::create_empty(store, env, family, &h.family_name, me)?;
        // The family's keys come with the packet: its signature and chain heads are checked
        // with the keys it lists (the new replica knows no others yet).
        let heads = r.check_signature(&h, pkt.kind, &pkt.packet_id, &pkt.source)?;
        let (mut txn, mut ap) = match h.snapshot {
            0 => r.take_history(&mut pkt, heads)?,
            _ => r.take_snapshot(&mut pkt, heads)?,
        };
        super::trust::pin_keys_in_force(&mut txn, &h)?;
        r.take_heads(&mut txn, &h)?;
        r.take_own_signing_key(&mut txn, key, &pkt.source, &r.sender_name(&h))?;
        r.keep_introduction(&mut txn, &h)?;
        take_incarnations(&mut txn, &h.comment);
        let sender = ReplicaId(h.sender.0);
        crate::restore::raise_estimate(&mut txn, &sender, &Row::from_wire(&h.sender_row))?;
        let mut notes = Vec::new();
        r.apply_controls(&mut txn, &mut ap, &h.controls, &mut notes)?;
        txn.put(
            Keyspace::Meta,
            keys::IDENTITY,
            &crate::replica::identity(&family, &h.family_name, &me),
        );
        txn.commit(WriteOptions::SYNC)?;
        Ok(r)
    }

    /// The history creation's records: every entry with its effects, and the content, in a
    /// transaction (committed in prefixes) that the caller completes.
    fn take_history<'s>(
        &'s self,
        pkt: &mut Incoming<'_>,
        heads: super::trust::Heads,
    ) -> Result<(Txn<'s, S>, Appender)> {
        let mut check = HeadCheck::new(heads, &self.sender_name(&pkt.header));
        let mut txn = Txn::new(&self.store);
        let mut ap = Appender::load(&txn)?;
        // Each replica's oldest listed key first: the history's rotations then bring the later
        // ones in force, each checked with its proof, and keep every replaced key with the
        // entries it covers, as at the siblings that applied them (which may still hold one).
        super::trust::pin_oldest_listed_keys(&mut txn, &pkt.header)?;
        if !self.take_creation_records(&mut txn, &mut ap, pkt, &mut check)? {
            return Err(CoreError::Malformed(format!(
                "{}: the packet does not create the replica it names",
                pkt.source
            )));
        }
        check.finish(|o| self.replica_name(o))?;
        Ok((txn, ap))
    }

    /// The snapshot creation's rows, bulk-loaded (`sync/snapshot.rs`); then a transaction,
    /// which the caller completes, that writes the own row and removes the creation mark.
    /// Every chain head the header names at a base must carry the base's hash.
    fn take_snapshot<'s>(
        &'s self,
        pkt: &mut Incoming<'_>,
        heads: super::trust::Heads,
    ) -> Result<(Txn<'s, S>, Appender)> {
        let loaded = self.load_snapshot(pkt)?;
        let (own, next_lsn) = (loaded.own, loaded.next_lsn);
        for ((o, n), hash) in &heads.at {
            let held = Self::entry_hash_at(&self.store, o, *n)?;
            if own.get(o) == *n && held != Some(*hash) {
                return Err(CoreError::Malformed(format!(
                    "{}: the chain base of {} differs from the head its origin signed; the new store is left unusable: remove it and ask the creator for a new packet",
                    pkt.source,
                    self.replica_name(o)
                )));
            }
        }
        if !self.view().replicas()?.iter().any(|r| r.id == self.me) {
            return Err(CoreError::Malformed(format!(
                "{}: the snapshot does not hold the replica it creates",
                pkt.source
            )));
        }
        let mut txn = Txn::new(&self.store);
        for (o, n) in &own.0 {
            txn.put(Keyspace::Epochs, &keys::own(o), &n.to_be_bytes());
        }
        txn.put(Keyspace::Meta, keys::NEXT_LSN, &next_lsn.to_be_bytes());
        if loaded.keep_base {
            txn.put(
                Keyspace::Meta,
                super::snapshot::BASE_ROW,
                &super::snapshot::base_row_value(&own),
            );
        }
        txn.delete(Keyspace::Meta, super::snapshot::CREATING);
        let ap = Appender::load(&txn)?;
        Ok((txn, ap))
    }

    /// Stores every record of a creation packet (entries of each origin from 1, in order)
    /// with each entry's protocol effects, as import applies them: without them a new replica
    /// does not know which restorations already completed, and takes up a completed
    /// restoration's request when a sibling still relays it. Returns whether an entry creates
    /// this replica.
    fn take_creation_records(
        &self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        pkt: &mut Incoming<'_>,
        check: &mut HeadCheck,
    ) -> Result<bool> {
        let mut held: BTreeMap<ReplicaId, u64> = BTreeMap::new();
        let mut found_self = false;
        let mut intake = content::Intake::new(u64::MAX, &pkt.source);
        for rec in &mut pkt.records {
            let bytes = match rec? {
                Record::Entry(bytes) => bytes,
                Record::Row { .. } | Record::SnapshotEnd { .. } => {
                    return Err(CoreError::Malformed(format!(
                        "{}: a history creation packet carries object-base rows, which only a snapshot creation packet may",
                        pkt.source
                    )));
                }
                rec => {
                    take_content(txn, &mut intake, rec)?;
                    continue;
                }
            };
            intake.idle()?;
            let e = Entry::decode_verified(&bytes)
                .map_err(|e| CoreError::Malformed(format!("{}: {e}", pkt.source)))?;
            let h_o = held.get(&e.origin).copied().unwrap_or(0);
            if e.number != h_o + 1 {
                return Err(CoreError::Malformed(format!(
                    "{}: entries of one origin are not contiguous",
                    pkt.source
                )));
            }
            check.entry(e.origin, e.number, &e.hash, &self.replica_name(&e.origin))?;
            if let Op::CreateReplica { replica, .. } = &e.op {
                found_self |= *replica == self.me;
            }
            ap.store_entry(txn, &e, &bytes)?;
            self.on_entry(txn, &e)?;
            if let Some((who, key)) = self.apply_key_entry(txn, &e, &pkt.source)? {
                check.key_applied(&who, &key);
            }
            held.insert(e.origin, e.number);
            let due = ap.next_lsn.is_multiple_of(PREFIX_COMMIT_ENTRIES)
                || txn.size() > PREFIX_COMMIT_BYTES;
            if check.prefix_now(due) {
                txn.commit_prefix(WriteOptions::NO_SYNC)?;
            }
        }
        intake.idle()?;
        Ok(found_self)
    }
}

/// Records the incarnations a creation packet's comment carries (`id=inc` pairs; others
/// are ignored).
fn take_incarnations<S: Store>(txn: &mut Txn<'_, S>, comment: &str) {
    for pair in comment.split(',').filter(|s| !s.is_empty()) {
        if let Some((id, inc)) = pair.split_once('=') {
            if let (Some(id), Ok(inc)) = (ReplicaId::from_hex(id), inc.parse::<u64>()) {
                txn.put(
                    Keyspace::Peers,
                    &keys::peer(keys::peers::INCARNATION, &id),
                    &inc.to_be_bytes(),
                );
            }
        }
    }
}
