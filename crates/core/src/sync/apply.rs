//! The apply loop of an import (PROTOCOL §4 step 6): a packet's records in order, content
//! into the import's transaction, each entry checked against what this replica holds and
//! then applied.
//!
//! For each entry, in this order: a recovering replica gives up what a newer restoration of
//! the entry's origin retired; an entry already held is skipped when its hash matches ours,
//! and is a fork otherwise (of our own origin and not retired by a restoration of ours, it
//! shows that this replica numbered it twice: rolled back); a new entry must be the next of
//! its origin, continue the origin's hash chain, not be one of our own (that shows we lost
//! it), and have its content here or in the packet. A refusal names every fork the rest of
//! the packet shows.

use std::collections::{BTreeMap, HashSet};

use msite_packet::Record;

use crate::content;
use crate::error::{CoreError, Refusal, Result};
use crate::ids::{Hash, ReplicaId, ZERO_HASH};
use crate::model::{Entry, ObjectRef, Op, Row};
use crate::replica::{Appender, Replica};
use crate::store::{Store, WriteOptions};
use crate::txn::Txn;

use super::trust::HeadCheck;

/// Entries applied between two prefix commits of one import.
pub(super) const PREFIX_COMMIT_ENTRIES: u64 = 50_000;

/// Bytes buffered in an import's transaction before a prefix commit: keeps the memory of an
/// import bounded whatever the packet's size. A prefix is held about three times over while it
/// commits (the transaction's overlay, the store's batch, the engine's own copy), so this is
/// kept small: 4 MiB brings the import of a 1 GiB packet to 144 / 137 MiB peak RSS (SQLite /
/// RocksDB) from 168 / 166 MiB at 16 MiB, at the same speed (BENCHMARKS.md, stop 40).
pub(super) const PREFIX_COMMIT_BYTES: usize = 4 << 20;

/// Feeds a content record (`Blob`, `BlobPiece` or `Delta`) to `intake`, then commits a consistent
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
        Record::Delta {
            hash,
            base,
            size,
            frame,
        } => Some(intake.delta(txn, (hash, base), size, &frame)?),
        _ => None,
    };
    if txn.size() > PREFIX_COMMIT_BYTES {
        txn.commit_prefix(WriteOptions::NO_SYNC)?;
    }
    Ok(done)
}

/// The state of the apply loop for one packet, borrowing the replica it applies to.
pub(super) struct EntryApply<'r, S: Store> {
    replica: &'r Replica<S>,
    src: String,
    sender_name: String,
    recovering: bool,
    sender_recovering: bool,
    /// The highest number held of each origin, as the packet's entries apply.
    held: BTreeMap<ReplicaId, u64>,
    /// The hash of the last entry applied of each origin: the chain the next one continues.
    last_hash: BTreeMap<ReplicaId, Hash>,
    blobs_seen: HashSet<Hash>,
    intake: content::Intake,
    /// Origins whose entries this packet made us give up before a refusal: the refusal
    /// discards that too, so it names them with the forks.
    given_up: Vec<(String, u64)>,
    /// Entries applied.
    pub(super) applied: u64,
    /// Entries already held (skipped).
    pub(super) skipped: u64,
    /// Mastership requests applied, answered after the import commits.
    pub(super) grants: Vec<(ObjectRef, ReplicaId)>,
    /// Things the operator should know.
    pub(super) notes: Vec<String>,
    /// The origin-signed chain heads every applied entry must reach.
    pub(super) heads: HeadCheck,
    /// The fork repair decisions held here: an entry of a timeline one gives up is refused.
    pub(super) decisions: Vec<crate::fork::ForkDecision>,
}

impl<'r, S: Store> EntryApply<'r, S> {
    /// A loop over a packet from `sender_name` (`sender_recovering`: it carries its own restore
    /// request) into a replica holding `own`, accepting content up to `limit` bytes.
    pub(super) fn new(
        replica: &'r Replica<S>,
        own: &Row,
        limit: u64,
        src: &str,
        sender_name: &str,
        sender_recovering: bool,
        recovering: bool,
    ) -> Self {
        EntryApply {
            replica,
            src: src.to_string(),
            sender_name: sender_name.to_string(),
            recovering,
            sender_recovering,
            held: own.0.clone(),
            last_hash: BTreeMap::new(),
            blobs_seen: HashSet::new(),
            intake: content::Intake::new(limit, src),
            given_up: Vec::new(),
            applied: 0,
            skipped: 0,
            grants: Vec::new(),
            notes: Vec::new(),
            heads: HeadCheck::new(Default::default(), sender_name),
            decisions: Vec::new(),
        }
    }

    /// Applies every record of the packet into `txn`; the chain-head check's verdict
    /// ([`HeadCheck::finish`]) is the caller's. A refusal as divergent or as holding
    /// retired entries also names the forks in the rest of `records` and the origins given up.
    pub(super) fn run(
        &mut self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        records: &mut dyn Iterator<Item = Result<Record>>,
    ) -> Result<()> {
        while let Some(rec) = records.next() {
            match rec? {
                rec @ (Record::Blob { .. } | Record::BlobPiece { .. } | Record::Delta { .. }) => {
                    if let Some(h) = take_content(txn, &mut self.intake, rec)? {
                        self.blobs_seen.insert(h);
                    }
                }
                Record::Row { .. } | Record::SnapshotEnd { .. } => {
                    return Err(CoreError::Malformed(format!(
                        "{}: an update packet carries object-base rows, which only a snapshot creation packet may",
                        self.src
                    )));
                }
                Record::Entry(bytes) => {
                    if let Err(err) = self.entry(txn, ap, &bytes) {
                        let err = self.replica.with_later_forks(
                            err,
                            records,
                            &self.given_up,
                            &self.sender_name,
                        )?;
                        return Err(err);
                    }
                }
            }
        }
        self.intake.idle()
    }

    /// One entry: skipped when held, otherwise checked and applied.
    fn entry(&mut self, txn: &mut Txn<'_, S>, ap: &mut Appender, bytes: &[u8]) -> Result<()> {
        self.intake.idle()?;
        let e = Entry::decode_verified(bytes)
            .map_err(|e| CoreError::Malformed(format!("{}: {e}", self.src)))?;
        self.check_decisions(&e)?;
        let held = self.held_after_retiring(txn, &e)?;
        if e.number <= held {
            return self.skip_held(txn, &e);
        }
        self.check_next(txn, &e, held)?;
        self.replica.check_retirement_entry(txn, &e, &self.held)?;
        let name = self.replica.replica_name(&e.origin);
        self.heads.entry(e.origin, e.number, &e.hash, &name)?;
        self.apply(txn, ap, &e, bytes)
    }

    /// An entry of a timeline that a fork decision held here gives up is refused as
    /// divergent (`fork.rs`): the sender gets the decision in our answer and gives it up.
    fn check_decisions(&self, e: &Entry) -> Result<()> {
        let Some(d) = self
            .decisions
            .iter()
            .find(|d| d.origin == e.origin && d.number == e.number && d.gives_up(&e.hash))
        else {
            return Ok(());
        };
        Err(CoreError::Refused(Refusal::Divergent {
            origin: self.replica.replica_name(&e.origin),
            number: e.number,
            detail: format!(
                "{} sent the timeline that the fork repair decided at {} gives up; it gives it up when it gets the decision",
                self.sender_name,
                self.replica.replica_name(&d.decided_by)
            ),
            also: Vec::new(),
        }))
    }

    /// The number held of the entry's origin. A recovering store may be older than a
    /// restoration of that origin that retired what it holds here: the newer timeline
    /// replaces it (see `retire_if_superseded`), and what is held drops below the entry.
    fn held_after_retiring(&mut self, txn: &mut Txn<'_, S>, e: &Entry) -> Result<u64> {
        let held = self.held.get(&e.origin).copied().unwrap_or(0);
        if e.number > held || !self.recovering {
            return Ok(held);
        }
        let Some(removed) = self
            .replica
            .retire_if_superseded(txn, e, &self.blobs_seen)?
        else {
            return Ok(held);
        };
        self.given_up
            .push((self.replica.replica_name(&e.origin), e.number));
        self.notes.push(removed);
        self.held.insert(e.origin, e.number - 1);
        self.last_hash.remove(&e.origin);
        Ok(e.number - 1)
    }

    /// An entry already held is skipped when it is ours; a different entry under the same
    /// number is a fork, unless a recovering sender relays an entry a newer restoration of
    /// its origin replaced (the sender gives it up when it receives ours).
    fn skip_held(&mut self, txn: &Txn<'_, S>, e: &Entry) -> Result<()> {
        let ours = match Replica::<S>::entry_hash_at(txn, &e.origin, e.number)? {
            Some(h) => h,
            // Dropped here by retention once every sibling held it (a resend from below our
            // chain's base): nothing to compare; what follows continues the retained base.
            None if self.replica.dropped_by_retention(&e.origin, e.number)? => {
                self.skipped += 1;
                return Ok(());
            }
            None => ZERO_HASH,
        };
        if ours == e.hash {
            self.skipped += 1;
            return Ok(());
        }
        let origin = self.replica.replica_name(&e.origin);
        if e.origin == self.replica.me && !self.recovering && !self.replica.holds_newer(txn, e)? {
            // Not an entry an `--override` restoration of ours retired (ours would be of a
            // later incarnation): this replica numbered it twice, so it was rolled back.
            return Err(CoreError::Refused(Refusal::OwnFork {
                sender: self.sender_name.clone(),
                origin,
                number: e.number,
                also: Vec::new(),
            }));
        }
        if self.sender_recovering && self.replica.holds_newer(txn, e)? {
            return Err(CoreError::Refused(Refusal::SenderHoldsRetired {
                sender: self.sender_name.clone(),
                origin,
                number: e.number,
                also: Vec::new(),
            }));
        }
        if let Some(why) = self.decided_below_chain_base(txn, e)? {
            return Err(CoreError::Refused(Refusal::Other(why)));
        }
        Err(CoreError::Refused(Refusal::Divergent {
            origin,
            number: e.number,
            detail: format!(
                "{} has a different entry under the same number",
                self.sender_name
            ),
            also: Vec::new(),
        }))
    }

    /// Why this replica cannot take the timeline `e` belongs to, when a fork decision held
    /// here on `e`'s origin, at or below `e.number`, fell below its chain base (it was made
    /// from a snapshot, or scrubbed): adopting the decision could not tell which timeline the
    /// replica held there, and a different entry above shows it holds the given-up one,
    /// which it cannot give up without the history (`Replica::cannot_give_up`).
    fn decided_below_chain_base(&self, txn: &Txn<'_, S>, e: &Entry) -> Result<Option<String>> {
        let what = "give up entries of a forked timeline";
        for d in &self.decisions {
            if d.origin != e.origin || d.number > e.number {
                continue;
            }
            if Replica::<S>::entry_hash_at(txn, &d.origin, d.number)?.is_none() {
                return self.replica.cannot_give_up(&d.origin, d.number, what);
            }
        }
        Ok(None)
    }

    /// A new entry must be the next of its origin and continue its hash chain; an entry of
    /// our own shows that we lost it (unless we recover); its content must be here or in the
    /// packet.
    fn check_next(&self, txn: &Txn<'_, S>, e: &Entry, held: u64) -> Result<()> {
        let name = || self.replica.replica_name(&e.origin);
        if e.number != held + 1 {
            return Err(CoreError::Malformed(format!(
                "{}: entry {} of {} arrives before entry {}",
                self.src,
                e.number,
                name(),
                held + 1
            )));
        }
        let prev = match self.last_hash.get(&e.origin) {
            Some(h) => *h,
            // The held entry, or the chain's base when retention dropped it.
            None => Replica::<S>::entry_hash_at(txn, &e.origin, held)?.unwrap_or(ZERO_HASH),
        };
        if e.prev != prev {
            if self.own_beyond_row(e)? {
                return Err(CoreError::Refused(Refusal::RolledBack {
                    sender: self.sender_name.clone(),
                    theirs: e.number,
                    ours: held,
                }));
            }
            return Err(CoreError::Refused(Refusal::Divergent {
                origin: name(),
                number: e.number,
                detail: "its hash chain does not continue this replica's".into(),
                also: Vec::new(),
            }));
        }
        if e.origin == self.replica.me && !self.recovering {
            return Err(CoreError::Refused(Refusal::RolledBack {
                sender: self.sender_name.clone(),
                theirs: e.number,
                ours: held,
            }));
        }
        if let Op::Checkin { content, size, .. } = &e.op {
            if !self.blobs_seen.contains(content) && !content::contains_sized(txn, content, *size)?
            {
                return Err(CoreError::Malformed(format!(
                    "{}: entry {} of {} refers to content the packet does not carry",
                    self.src,
                    e.number,
                    name()
                )));
            }
        }
        Ok(())
    }

    /// Whether `e`, an entry beyond our row whose chain does not continue ours, is one of our
    /// own from our present timeline (not older than our incarnation, so no restoration of
    /// ours retired it): we lost it and what it continues, so we are rolled back.
    fn own_beyond_row(&self, e: &Entry) -> Result<bool> {
        Ok(e.origin == self.replica.me
            && !self.recovering
            && e.incarnation >= self.replica.status()?.incarnation)
    }

    /// Stores the entry and applies its effects. A very large packet commits in consistent
    /// prefixes; a crash leaves a prefix that the next import continues from.
    fn apply(
        &mut self,
        txn: &mut Txn<'_, S>,
        ap: &mut Appender,
        e: &Entry,
        bytes: &[u8],
    ) -> Result<()> {
        ap.store_entry(txn, e, bytes)?;
        self.replica.on_entry(txn, e)?;
        if let Some((who, key)) = self.replica.apply_key_entry(txn, e, &self.sender_name)? {
            self.heads.key_applied(&who, &key);
        }
        if let Op::ReqMaster { object, requester } = &e.op {
            self.grants.push((*object, *requester));
        }
        if let Op::DenyMaster { object, requester } = &e.op {
            if *requester == self.replica.me {
                self.notes.push(self.replica.denied_note(object, &e.origin));
            }
        }
        self.held.insert(e.origin, e.number);
        self.last_hash.insert(e.origin, e.hash);
        self.applied += 1;
        // A prefix is committed only where every applied entry is covered by a signed head:
        // a refusal later in the packet must not leave unauthenticated entries behind.
        let due =
            self.applied.is_multiple_of(PREFIX_COMMIT_ENTRIES) || txn.size() > PREFIX_COMMIT_BYTES;
        if self.heads.prefix_now(due) {
            txn.commit_prefix(WriteOptions::NO_SYNC)?;
        }
        Ok(())
    }
}
