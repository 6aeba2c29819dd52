//! The checks of PROTOCOL §4 steps 1–5 on a packet's header, in order, without changing
//! anything: whether a packet could be imported here now ([`Assessment`]).

use msite_packet::wire;

use crate::error::{CoreError, Refusal, Result};
use crate::ids::{PacketId, ReplicaId};
use crate::keys;
use crate::model::Row;
use crate::replica::Replica;
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
    pub(super) fn sender_name(&self, h: &wire::Header) -> String {
        if h.sender_name.is_empty() {
            self.replica_name(&ReplicaId(h.sender.0))
        } else {
            h.sender_name.clone()
        }
    }

    /// Runs the checks of PROTOCOL §4 steps 1–5 on a packet's header without changing
    /// anything: whether it could be imported here now (`msite lspacket` uses this).
    pub fn assess(
        &self,
        h: &wire::Header,
        kind: wire::Kind,
        packet_id: &PacketId,
        src: &str,
    ) -> Result<Assessment> {
        if kind != wire::Kind::Update {
            return Ok(Assessment::Refused(CoreError::Refused(Refusal::Other(format!(
                "{src} is a replica-creation packet; make a new site from it with `msite mkreplica import`"
            )))));
        }
        // 2. Family and target.
        if h.family.0 != self.family.0 {
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::WrongFamily {
                    packet: format!("{} ({})", h.family_name, crate::ids::hex(&h.family.0[..4])),
                    ours: format!("{} ({})", self.family_name, self.family.short()),
                },
            )));
        }
        let sender = ReplicaId(h.sender.0);
        let Some(me_t) = h.targets.iter().find(|t| t.replica.0 == self.me.0) else {
            let names: Vec<String> = h
                .targets
                .iter()
                .map(|t| self.replica_name(&ReplicaId(t.replica.0)))
                .collect();
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::NotAddressed {
                    targets: names.join(", "),
                    me: self.name(),
                },
            )));
        };
        if sender == self.me {
            return Ok(Assessment::Refused(CoreError::Refused(Refusal::Other(
                format!("{src} was written by this replica itself"),
            ))));
        }
        let st = self.status()?;
        if st.restored {
            return Ok(Assessment::Refused(CoreError::Locked(format!(
                "replica {} was restored from a backup; run `msite restorereplica` before importing packets",
                self.name()
            ))));
        }
        if let Some(reason) = &st.rolled_back {
            return Ok(Assessment::Refused(CoreError::Locked(format!(
                "replica {} refuses imports: {reason}; run `msite restorereplica` first",
                self.name()
            ))));
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
        // 3. Incarnations.
        if me_t.incarnation < st.incarnation {
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::StaleTarget {
                    had: me_t.incarnation,
                    expected: st.incarnation,
                    sender: sender_name,
                },
            )));
        }
        if me_t.incarnation > st.incarnation {
            return Ok(Assessment::NewerIncarnationKnown {
                known: me_t.incarnation,
                ours: st.incarnation,
                sender: sender_name,
            });
        }
        let recorded = self.incarnation_of(&sender)?;
        if h.sender_incarnation < recorded {
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::StaleSender {
                    sender: sender_name,
                    had: h.sender_incarnation,
                    expected: recorded,
                },
            )));
        }
        // No silent rollback: the sender holds more of our own entries than we do. Not from a
        // recovering sender's row: its store is a restored copy, which may hold our entries
        // that our last restoration retired (K13; found by the simulator, seed 80111077).
        let own = self.own_row()?;
        let sender_row = Row::from_wire(&h.sender_row);
        if sender_row.get(&self.me) > own.get(&self.me)
            && st.recovering.is_none()
            && !carries_own_request(h)
        {
            return Ok(Assessment::RolledBack(Refusal::RolledBack {
                sender: sender_name,
                theirs: sender_row.get(&self.me),
                ours: own.get(&self.me),
            }));
        }
        // 4. Prerequisites.
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
        if !needs.is_empty() {
            return Ok(Assessment::Waiting(needs));
        }
        // 5. Divergence at the base: every origin that differs is named.
        let mut forks = Vec::new();
        for b in &h.bases {
            let o = ReplicaId(b.origin.0);
            let ours = Self::entry_hash_at(&self.store, &o, b.number)?;
            if ours != Some(b.hash) {
                forks.push((self.replica_name(&o), b.number));
            }
        }
        let sender_recovering = carries_own_request(h);
        if !forks.is_empty() && sender_recovering {
            // The sender's store is a restored copy: the fork is one it repairs or reports
            // when our next packet reaches it (K13; found by the simulator, seed 42001263).
            let (origin, number) = forks.remove(0);
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::SenderHoldsRetired {
                    sender: sender_name,
                    origin,
                    number,
                    also: forks,
                },
            )));
        }
        if !forks.is_empty() {
            let (origin, number) = forks.remove(0);
            return Ok(Assessment::Refused(CoreError::Refused(
                Refusal::Divergent {
                    origin,
                    number,
                    detail: format!("{sender_name}'s entry at its base differs from ours"),
                    also: forks,
                },
            )));
        }
        Ok(Assessment::Importable)
    }
}
