//! Signed reports: what a sibling says it holds, relayed to a restoring replica (docs/protocol.md
//! §6 "Estimates after a restoration", packet format 1.4).
//!
//! A restored replica's estimates are its backup's. For a sibling it talks to directly the
//! first packet from that sibling sets them right (the sender row), but for a sibling it never
//! hears from (a spoke behind a hub) they stay at backup values, and its first direct packet to
//! it would carry nearly the whole history. The rule that fixes it keeps estimates honest:
//!
//! - **Evidence only.** An estimate is raised only to what the sibling itself stated it holds:
//!   every update packet carries its sender's *report* (incarnation, own row, time), signed by
//!   the sender's key over [`sign::report_message`], so that a relay can carry it on but cannot
//!   alter or invent it. A relay's own word about a sibling is never believed: a too-high
//!   estimate would keep entries from that sibling, a too-low one only costs bytes.
//! - **Relayed to a restoring replica.** A replica keeps the newest report of each sibling
//!   (by incarnation, then time), and its packets to a sibling whose restore request it holds
//!   carry every report it keeps of the others that is still current here (made under the
//!   incarnation recorded here, no restore request of that replica held): exactly the packets
//!   that the restoring replica recovers from.
//! - **Taken with care.** A report raises the estimate of its replica only when its signature
//!   verifies with the key pinned here, the replica is not retired, no restore request of it is
//!   held here (its request's row governs), its incarnation is the one recorded here, and then
//!   at most to our own row (entries we do not hold are not ours to send anyway) and below
//!   every fork decision about that origin (the report may predate the decision). A report
//!   that fails a check is ignored, never refused: it only ever saves bytes.
//! - A recovering replica sends no report of its own (its copy may hold entries a newer
//!   restoration retired).

use ed25519_dalek::Signer;
use msite_packet::{sign, wire};

use crate::codec::{Dec, Enc};
use crate::error::Result;
use crate::ids::ReplicaId;
use crate::keys;
use crate::model::Row;
use crate::replica::{get_u64, Replica};
use crate::store::{KeyRange, Keyspace, ReadView, Store};
use crate::txn::Txn;

/// A report kept here, decoded.
fn decode(replica: ReplicaId, v: &[u8]) -> Result<wire::SignedReport> {
    let mut d = Dec::new(v, "signed report");
    let incarnation = d.u64()?;
    let made_ms = d.u64()?;
    let row = Row::decode(&mut d)?.to_wire();
    let signature: wire::Signature = d.raw(64)?.try_into().expect("64 bytes");
    d.end()?;
    Ok(wire::SignedReport {
        replica: wire::Id(replica.0),
        incarnation,
        made_ms,
        row,
        signature,
    })
}

fn encode(r: &wire::SignedReport) -> Vec<u8> {
    let e = Enc::new().u64(r.incarnation).u64(r.made_ms);
    Row::from_wire(&r.row).encode(e).raw(&r.signature).done()
}

/// The report of `replica` kept here, if any.
fn kept<R: ReadView + ?Sized>(r: &R, replica: &ReplicaId) -> Result<Option<wire::SignedReport>> {
    match r.get(Keyspace::Peers, &keys::peer(keys::peers::REPORT, replica))? {
        Some(v) => Ok(Some(decode(*replica, &v)?)),
        None => Ok(None),
    }
}

/// Every report kept here.
fn all_kept<R: ReadView + ?Sized>(r: &R) -> Result<Vec<wire::SignedReport>> {
    let mut out = Vec::new();
    for kv in r.scan(Keyspace::Peers, KeyRange::prefix(&[keys::peers::REPORT]))? {
        let (k, v) = kv?;
        if let Ok(id) = <[u8; 16]>::try_from(&k[1..]) {
            out.push(decode(ReplicaId(id), &v)?);
        }
    }
    Ok(out)
}

impl<S: Store> Replica<S> {
    /// The reports a packet to `target` carries: ours (unless this replica recovers), and,
    /// when `target` restores (we hold its request), every report kept here of the others.
    pub(super) fn reports_for(
        &self,
        target: &ReplicaId,
        incarnation: u64,
        own: &Row,
        recovering: bool,
        target_recovering: bool,
    ) -> Result<Vec<wire::SignedReport>> {
        let mut out = Vec::new();
        if !recovering {
            out.push(self.own_report(incarnation, own)?);
        }
        if target_recovering {
            let retired = self.retired()?;
            for r in all_kept(&self.store)? {
                let who = ReplicaId(r.replica.0);
                if who != *target
                    && who != self.me
                    && !retired.contains(&who)
                    && self.report_is_current(&r)?
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Whether a kept report still says what its replica holds, as far as this replica knows:
    /// made under the incarnation recorded here, and no restore request of that replica held
    /// (a restoration's store may hold less than its report before it).
    fn report_is_current(&self, r: &wire::SignedReport) -> Result<bool> {
        let who = ReplicaId(r.replica.0);
        let recorded = get_u64(
            &self.store,
            Keyspace::Peers,
            &keys::peer(keys::peers::INCARNATION, &who),
        )?;
        Ok(r.incarnation == recorded
            && crate::restore::held_request_of(&self.store, &who)?.is_none())
    }

    /// This replica's report of its own row `own`, signed.
    fn own_report(&self, incarnation: u64, own: &Row) -> Result<wire::SignedReport> {
        let mut r = wire::SignedReport {
            replica: wire::Id(self.me.0),
            incarnation,
            made_ms: self.env.now_ms(),
            row: own.to_wire(),
            signature: wire::NO_SIGNATURE,
        };
        let msg = sign::report_message(&wire::Id(self.family.0), &r);
        r.signature = self.signing_key()?.sign(&msg).to_bytes();
        Ok(r)
    }

    /// Takes the reports of a packet from `sender` applied here: each authentic one is kept (if
    /// newer than the one kept) to relay, and raises the estimate of its replica (unless that
    /// is the sender, whose row the header already gives) as the module doc says.
    pub(super) fn take_reports(
        &self,
        txn: &mut Txn<'_, S>,
        sender: &ReplicaId,
        reports: &[wire::SignedReport],
    ) -> Result<()> {
        for r in reports {
            let who = ReplicaId(r.replica.0);
            if who == self.me || !self.report_is_authentic(txn, r)? {
                continue;
            }
            if crate::retire::retirement_in(&*txn, &who)?.is_some() {
                continue;
            }
            let newer = match kept(&*txn, &who)? {
                Some(k) => (r.incarnation, r.made_ms) > (k.incarnation, k.made_ms),
                None => true,
            };
            if newer {
                txn.put(
                    Keyspace::Peers,
                    &keys::peer(keys::peers::REPORT, &who),
                    &encode(r),
                );
            }
            if who != *sender {
                self.raise_estimate_from_report(txn, &who, r)?;
            }
        }
        Ok(())
    }

    /// Whether `r` is signed by the key pinned here for its replica.
    fn report_is_authentic(&self, txn: &Txn<'_, S>, r: &wire::SignedReport) -> Result<bool> {
        let who = ReplicaId(r.replica.0);
        let Some(key) = super::trust::public_key_in(txn, &who)? else {
            return Ok(false);
        };
        let msg = sign::report_message(&wire::Id(self.family.0), r);
        Ok(super::trust::verifies(&key, &msg, &r.signature))
    }

    /// Raises our estimate of `who` to its report `r`, capped by our own row and below every
    /// fork decision about an origin; nothing when a request of `who` is held here or the
    /// report is of another incarnation than the one recorded.
    fn raise_estimate_from_report(
        &self,
        txn: &mut Txn<'_, S>,
        who: &ReplicaId,
        r: &wire::SignedReport,
    ) -> Result<()> {
        let recorded = get_u64(
            &*txn,
            Keyspace::Peers,
            &keys::peer(keys::peers::INCARNATION, who),
        )?;
        let held_request = crate::restore::held_request_of(&*txn, who)?.is_some();
        if held_request || r.incarnation != recorded {
            return Ok(());
        }
        let decisions = crate::fork::decisions_in(&*txn)?;
        let mut row = Row::default();
        for cell in &r.row {
            let o = ReplicaId(cell.origin.0);
            let own = get_u64(&*txn, Keyspace::Epochs, &keys::own(&o))?;
            let below_forks = decisions
                .iter()
                .filter(|d| d.origin == o)
                .map(|d| d.number - 1)
                .min()
                .unwrap_or(u64::MAX);
            row.set(o, cell.number.min(own).min(below_forks));
        }
        crate::restore::raise_estimate(txn, who, &row)
    }
}

#[cfg(feature = "testkit")]
impl<S: Store> Replica<S> {
    /// Every sibling's report kept here, to relay (for the scenarios).
    pub fn reports_kept_for_test(&self) -> Result<Vec<wire::SignedReport>> {
        all_kept(&self.store)
    }

    /// Takes `reports` as if a packet of `sender` applied here had carried them: what a relay
    /// that alters or invents a report achieves (for the scenarios).
    pub fn take_reports_for_test(
        &self,
        sender: &ReplicaId,
        reports: &[wire::SignedReport],
    ) -> Result<()> {
        let mut txn = Txn::new(&self.store);
        self.take_reports(&mut txn, sender, reports)?;
        txn.commit(crate::store::WriteOptions::SYNC)?;
        Ok(())
    }
}
