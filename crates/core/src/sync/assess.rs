//! The checks of PROTOCOL §4 steps 1–5 on a packet's header, in order, without changing
//! anything: whether a packet could be imported here now ([`Assessment`]).

use msite_packet::wire;

use crate::error::{CoreError, Refusal, Result};
use crate::ids::{PacketId, ReplicaId};
use crate::keys;
use crate::model::Row;
use crate::replica::Replica;
use crate::restore::Status;
use crate::store::{Keyspace, Store};

/// Whether a packet carries its sender's own restore request: the sender is recovering, and
/// its store is a restored copy.
pub(super) fn carries_own_request(h: &wire::Header) -> bool {
    h.controls.iter().any(
        |c| matches!(c, wire::Control::RestoreRequest { replica, .. } if replica.0 == h.sender.0),
    )
}

/// One origin a waiting packet needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The origin.
    pub origin: ReplicaId,
    /// Its name.
    pub origin_name: String,
    /// The packet needs entries up to this number.
    pub needs: u64,
    /// This replica has up to this number.
    pub has: u64,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "needs {} up to {}, has {}",
            self.origin_name, self.needs, self.has
        )
    }
}

/// Whether a packet could be imported here now (checks of PROTOCOL §4 steps 1–5).
#[derive(Debug)]
pub enum Assessment {
    /// It can be imported now.
    Importable,
    /// It was imported before.
    AlreadyApplied,
    /// It must wait for other packets.
    Waiting(Vec<Need>),
    /// It shows this replica lost entries of its own.
    RolledBack(Refusal),
    /// The family knows a newer incarnation of this replica than this store has.
    NewerIncarnationKnown {
        /// The incarnation the sender believes.
        known: u64,
        /// Ours.
        ours: u64,
        /// The sender.
        sender: String,
    },
    /// It is refused.
    Refused(CoreError),
}

impl<S: Store> Replica<S> {
    /// The sender's name as its header gives it, else as this replica knows it.
    pub(crate) fn sender_name(&self, h: &wire::Header) -> String {
        if h.sender_name.is_empty() {
            self.replica_name(&ReplicaId(h.sender.0))
        } else {
            h.sender_name.clone()
        }
    }

    /// Runs the checks of PROTOCOL §4 steps 1–5 on a packet's header without changing
    /// anything: whether it could be imported here now (`msite lspacket` uses this). The
    /// checks run in this order, and the first that fails gives the verdict.
    pub fn assess(
        &self,
        h: &wire::Header,
        kind: wire::Kind,
        packet_id: &PacketId,
        src: &str,
    ) -> Result<Assessment> {
        let me_t = match self.addressed_here(h, kind, src) {
            Ok(t) => t,
            Err(refused) => return Ok(Assessment::Refused(refused)),
        };
        // Nothing of a header is believed before its signature verifies (PROTOCOL "Trust").
        if let Err(unsigned) = self.check_signature(h, kind, packet_id, src) {
            return Ok(Assessment::Refused(unsigned));
        }
        let st = self.status()?;
        if let Some(locked) = self.import_lock(&st) {
            return Ok(Assessment::Refused(locked));
        }
        if let Some(retired) = self.retired_sender(h)? {
            return Ok(Assessment::Refused(CoreError::Refused(retired)));
        }
        // 8. Importing the same packet again does nothing.
        if self
            .store
            .get(Keyspace::Peers, &keys::imported(packet_id))?
            .is_some()
        {
            return Ok(Assessment::AlreadyApplied);
        }
        let sender_name = self.sender_name(h);
        if let Some(a) = self.check_incarnations(h, me_t, &st, &sender_name)? {
            return Ok(a);
        }
        if st.recovering.is_none() {
            if let Some(refusal) = self.relays_older_request(h, &sender_name)? {
                return Ok(Assessment::Refused(CoreError::Refused(refusal)));
            }
        }
        let own = self.own_row()?;
        if let Some(refusal) = self.shows_rollback(h, &own, &st, &sender_name) {
            return Ok(Assessment::RolledBack(refusal));
        }
        let needs = self.prerequisites_missing(h, &own);
        if !needs.is_empty() {
            return Ok(Assessment::Waiting(needs));
        }
        if let Some(a) = self.diverges_at_base(h, &st, sender_name)? {
            return Ok(a);
        }
        Ok(Assessment::Importable)
    }

    /// Steps 1–2: an update packet (not a replica-creation one) of our family, addressed to
    /// us (our entry among its targets), not written by us.
    pub(super) fn addressed_here<'h>(
        &self,
        h: &'h wire::Header,
        kind: wire::Kind,
        src: &str,
    ) -> std::result::Result<&'h wire::Target, CoreError> {
        if kind != wire::Kind::Update {
            return Err(CoreError::Refused(Refusal::Other(format!(
                "{src} is a replica-creation packet; make a new site from it with `msite mkreplica import`"
            ))));
        }
        if h.family.0 != self.family.0 {
            return Err(CoreError::Refused(Refusal::WrongFamily {
                packet: format!("{} ({})", h.family_name, crate::ids::hex(&h.family.0[..4])),
                ours: format!("{} ({})", self.family_name, self.family.short()),
            }));
        }
        let Some(me_t) = h.targets.iter().find(|t| t.replica.0 == self.me.0) else {
            let names: Vec<String> = h
                .targets
                .iter()
                .map(|t| self.replica_name(&ReplicaId(t.replica.0)))
                .collect();
            return Err(CoreError::Refused(Refusal::NotAddressed {
                targets: names.join(", "),
                me: self.name(),
            }));
        };
        if h.sender.0 == self.me.0 {
            return Err(CoreError::Refused(Refusal::Other(format!(
                "{src} was written by this replica itself"
            ))));
        }
        Ok(me_t)
    }

    /// A store restored from a backup or found rolled back imports nothing until
    /// `restorereplica` runs.
    fn import_lock(&self, st: &Status) -> Option<CoreError> {
        if st.restored {
            return Some(CoreError::Locked(format!(
                "replica {} was restored from a backup; run `msite restorereplica` before importing packets",
                self.name()
            )));
        }
        let reason = st.rolled_back.as_ref()?;
        Some(CoreError::Locked(format!(
            "replica {} refuses imports: {reason}; run `msite restorereplica` first",
            self.name()
        )))
    }

    /// Step 3, incarnations: a packet built for an older incarnation of this replica, or
    /// from an older incarnation of its sender than one recorded here, is stale; one built
    /// for a newer incarnation of this replica shows that the family knows a newer one.
    fn check_incarnations(
        &self,
        h: &wire::Header,
        me_t: &wire::Target,
        st: &Status,
        sender_name: &str,
    ) -> Result<Option<Assessment>> {
        let sender = sender_name.to_string();
        if me_t.incarnation < st.incarnation {
            return Ok(Some(Assessment::Refused(CoreError::Refused(
                Refusal::StaleTarget {
                    had: me_t.incarnation,
                    expected: st.incarnation,
                    sender,
                },
            ))));
        }
        if me_t.incarnation > st.incarnation {
            return Ok(Some(Assessment::NewerIncarnationKnown {
                known: me_t.incarnation,
                ours: st.incarnation,
                sender,
            }));
        }
        let recorded = self.incarnation_of(&ReplicaId(h.sender.0))?;
        if h.sender_incarnation < recorded {
            return Ok(Some(Assessment::Refused(CoreError::Refused(
                Refusal::StaleSender {
                    sender,
                    had: h.sender_incarnation,
                    expected: recorded,
                },
            ))));
        }
        Ok(None)
    }

    /// Step 3, restore requests (PROTOCOL §6.4): a packet that relays a third replica's
    /// restore request older than the one held here is stale, as the seed refuses it; its
    /// sender has not seen the newer restoration, and our next packet to it carries the newer
    /// request. (Our own request and the sender's are judged by the incarnation checks; a
    /// request of a restoration already completed here is simply over.) Not while this
    /// replica recovers: it needs the sender's packets to complete, and the sender may refuse
    /// ours until they arrive (a recovering copy holding retired entries, K13), so the older
    /// request is ignored instead: refusing it there could leave both waiting for ever.
    fn relays_older_request(&self, h: &wire::Header, sender: &str) -> Result<Option<Refusal>> {
        for c in &h.controls {
            let wire::Control::RestoreRequest {
                replica,
                incarnation,
                ..
            } = c
            else {
                continue;
            };
            let r = ReplicaId(replica.0);
            if r == self.me || replica.0 == h.sender.0 {
                continue;
            }
            let Some(held) = crate::restore::held_request_of(&self.store, &r)? else {
                continue;
            };
            if held.incarnation > *incarnation {
                return Ok(Some(Refusal::StaleRequest {
                    sender: sender.to_string(),
                    replica: self.replica_name(&r),
                    had: *incarnation,
                    held: held.incarnation,
                }));
            }
        }
        Ok(None)
    }

    /// No silent rollback: the sender holds more of our own entries than we do. Not from a
    /// recovering sender's row (nor while we recover): its store is a restored copy, which may
    /// hold our entries that our last restoration retired (K13).
    fn shows_rollback(
        &self,
        h: &wire::Header,
        own: &Row,
        st: &Status,
        sender_name: &str,
    ) -> Option<Refusal> {
        let sender_row = Row::from_wire(&h.sender_row);
        let theirs = sender_row.get(&self.me);
        let ours = own.get(&self.me);
        (theirs > ours && st.recovering.is_none() && !carries_own_request(h)).then(|| {
            Refusal::RolledBack {
                sender: sender_name.to_string(),
                theirs,
                ours,
            }
        })
    }

    /// Step 4, prerequisites: every base of the packet that this replica does not hold yet.
    fn prerequisites_missing(&self, h: &wire::Header, own: &Row) -> Vec<Need> {
        let mut needs = Vec::new();
        for b in &h.bases {
            let o = ReplicaId(b.origin.0);
            if own.get(&o) < b.number {
                needs.push(Need {
                    origin: o,
                    origin_name: self.replica_name(&o),
                    needs: b.number,
                    has: own.get(&o),
                });
            }
        }
        needs
    }

    /// Step 5, divergence at the base: every origin whose entry at the base differs from ours
    /// is named. From a recovering sender it is not a fork: its store is a restored copy that
    /// holds entries a newer restoration retired, which it gives up when our next packet
    /// reaches it (K13). A different entry under one of our own numbers that no restoration
    /// of ours retired shows that this replica numbered it twice: it is rolled back
    /// (invariant 8), whoever the sender.
    fn diverges_at_base(
        &self,
        h: &wire::Header,
        st: &Status,
        sender: String,
    ) -> Result<Option<Assessment>> {
        let mut forks = Vec::new();
        let mut own_fork = None;
        for b in &h.bases {
            let o = ReplicaId(b.origin.0);
            let ours = Self::entry_hash_at(&self.store, &o, b.number)?;
            if ours.is_none() && self.dropped_by_retention(&o, b.number)? {
                // Retention dropped it after every sibling held it: nothing to compare; the
                // chain is checked from the retained base on.
                continue;
            }
            if ours != Some(b.hash) {
                if o == self.me && st.recovering.is_none() && self.own_number_reused(b.number)? {
                    own_fork = Some(b.number);
                } else {
                    forks.push((self.replica_name(&o), b.number));
                }
            }
        }
        if let Some(number) = own_fork {
            return Ok(Some(Assessment::RolledBack(Refusal::OwnFork {
                sender,
                origin: self.name(),
                number,
                also: forks,
            })));
        }
        if forks.is_empty() {
            return Ok(None);
        }
        let (origin, number) = forks.remove(0);
        let refusal = if carries_own_request(h) {
            Refusal::SenderHoldsRetired {
                sender,
                origin,
                number,
                also: forks,
            }
        } else {
            Refusal::Divergent {
                origin,
                number,
                detail: format!("{sender}'s entry at its base differs from ours"),
                also: forks,
            }
        };
        Ok(Some(Assessment::Refused(CoreError::Refused(refusal))))
    }
}
