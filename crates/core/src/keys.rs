//! Key layouts of the protocol's keyspaces (Meta, Oplog, Epochs, Peers). The object base's
//! keys are in [`crate::vob`]. All numbers in keys are big-endian so that keys sort by number.

use crate::ids::{PacketId, ReplicaId};

/// Meta: identity (family id, family name, own replica id).
pub const IDENTITY: &[u8] = b"identity";
/// Meta: present when the store was restored from a backup and `restorereplica` has not run.
pub const RESTORED: &[u8] = b"restored";
/// Meta: the local restoration state while recovering.
pub const RECOVERING: &[u8] = b"recovering";
/// Meta: present when a sibling showed that this replica lost entries of its own.
pub const ROLLED_BACK: &[u8] = b"rolled_back";
/// Meta: the next local apply sequence number.
pub const NEXT_LSN: &[u8] = b"next_lsn";
/// Meta: the mastership-request policy.
pub const REQMASTER_POLICY: &[u8] = b"policy.reqmaster";
/// Meta: the keepalive interval in milliseconds (absent: [`DEFAULT_KEEPALIVE_MS`]).
pub const KEEPALIVE: &[u8] = b"policy.keepalive_ms";
/// Meta: the largest version this replica accepts, in bytes (absent:
/// [`crate::content::DEFAULT_MAX_VERSION_BYTES`]).
pub const MAX_VERSION_BYTES: &[u8] = b"policy.max_version_bytes";
/// Meta: the resend interval in milliseconds (absent: [`DEFAULT_RESEND_MS`]).
pub const RESEND: &[u8] = b"policy.resend_ms";
/// Six hours: after this long without a packet carrying entries to a sibling that has not
/// acknowledged them all, an export with nothing new resends them (docs/protocol.md §5,
/// "Resends").
pub const DEFAULT_RESEND_MS: u64 = 6 * 60 * 60 * 1000;
/// One day: after this long without a packet to a sibling, an export with nothing new sends
/// a probe anyway (docs/protocol.md, "Keepalive").
pub const DEFAULT_KEEPALIVE_MS: u64 = 24 * 60 * 60 * 1000;

/// Oplog key of entry `(origin, number)`.
pub fn oplog(origin: &ReplicaId, number: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&origin.0);
    k[16..].copy_from_slice(&number.to_be_bytes());
    k
}

/// Epochs key of the own row's cell for `origin`.
pub fn own(origin: &ReplicaId) -> Vec<u8> {
    let mut k = vec![0u8];
    k.extend_from_slice(&origin.0);
    k
}

/// Epochs prefix of the own row.
pub const OWN_PREFIX: &[u8] = &[0];

/// Epochs prefix of every estimate row (prefix ++ target ++ origin).
pub const ESTIMATES_PREFIX: &[u8] = &[1];

/// Epochs prefix of the estimate row for `target`.
pub fn estimate_prefix(target: &ReplicaId) -> Vec<u8> {
    let mut k = ESTIMATES_PREFIX.to_vec();
    k.extend_from_slice(&target.0);
    k
}

/// Epochs key of the estimate for `target`, origin `origin`.
pub fn estimate(target: &ReplicaId, origin: &ReplicaId) -> Vec<u8> {
    let mut k = estimate_prefix(target);
    k.extend_from_slice(&origin.0);
    k
}

/// Peers tags.
pub mod peers {
    /// Recorded incarnation of a replica.
    pub const INCARNATION: u8 = 1;
    /// Sending state towards a target.
    pub const SEND: u8 = 2;
    /// Export log: the estimate row after each content packet, by sequence.
    pub const EXPORT_LOG: u8 = 3;
    /// Receiving state from a sender.
    pub const RECV: u8 = 4;
    /// A restore request held for propagation.
    pub const REQUEST: u8 = 5;
    /// The latest completed incarnation of a replica.
    pub const COMPLETED: u8 = 6;
    /// A provisional acknowledgement held for propagation (replica, acker).
    pub const PROV_ACK: u8 = 7;
    /// A logical packet already imported.
    pub const IMPORTED: u8 = 8;
    /// A mastership request waiting for the operator (manual policy).
    pub const MASTER_REQUEST: u8 = 9;
    /// A sibling heard of in a packet header (its sender, or an origin of its row), whether
    /// or not this store holds its creation entry.
    pub const HEARD: u8 = 10;
    /// The number of a replica's restore complete entry (tag, replica, number): where a
    /// restoration of that replica began a new timeline, retiring whatever an older copy held
    /// at and above that number (K13).
    pub const RESTORE_COMPLETE_AT: u8 = 11;
    /// When this replica last wrote a packet to a target (ms since the Unix epoch).
    pub const LAST_SENT: u8 = 12;
    /// A packet of this sibling was refused as stale (built for an older incarnation of the
    /// sibling or of this replica than the ones recorded here): the next export to it sends at
    /// least a probe, so that a sibling put back to a copy older than a restoration learns it
    /// from our header (K27, K28).
    pub const ANSWER_STALE: u8 = 13;
    /// When this replica last wrote a packet carrying entries to a target (ms since the Unix
    /// epoch): an unacknowledged packet is resent without a reported gap only a resend
    /// interval after it.
    pub const LAST_ENTRIES: u8 = 17;
    /// The resend interval for one target, in milliseconds (absent: the replica's own,
    /// Meta [`super::RESEND`]).
    pub const RESEND: u8 = 18;
    /// A replica's Ed25519 public key, pinned by the first authentic header that listed it.
    pub const PUBLIC_KEY: u8 = 14;
    /// A chain head signed by its origin (tag, origin, number): hash then signature.
    pub const HEAD: u8 = 15;
    /// A control record's signature by its owner (tag, BLAKE3 of the signed message), kept
    /// to relay the control with it.
    pub const CONTROL_SIG: u8 = 16;
    /// A mastership request of this replica that its master refused (tag, object): the
    /// master's id and when it refused, until this replica asks again (`crate::denied`).
    pub const DENIED: u8 = 19;
    /// A fork repair decision (tag, origin, number; `fork.rs`).
    pub const FORK_DECISION: u8 = 29;
    /// An entry a fork decision gave up here, with its content, kept until the operator
    /// writes it out (tag, origin, number; `fork.rs`).
    pub const GIVEN_UP: u8 = 30;
    /// The newest signed report of a sibling's own row received here (tag, replica), kept
    /// to relay to a restoring replica (`sync/reports.rs`).
    pub const REPORT: u8 = 40;
    /// A key a replica's rotation replaced (tag, replica, number; `sync/rekey.rs`).
    pub const OLD_KEY: u8 = 31;
    /// A replica's age recipient, signed by its key (tag, replica; `sync/sealing.rs`).
    pub const RECIPIENT: u8 = 41;
    /// The family's sealing policy (tag, sixteen zero bytes; `sync/sealing.rs`).
    pub const SEAL_POLICY: u8 = 42;
    /// A replica's own rotation of its key (tag, replica, number of its `RotateKey` entry),
    /// kept when retention drops the entry (`sync/rekey.rs`).
    pub const ROTATED: u8 = 43;

    /// Every tag above: each names one kind of row, so no two may be equal.
    pub const ALL: [u8; 26] = [
        INCARNATION,
        SEND,
        EXPORT_LOG,
        RECV,
        REQUEST,
        COMPLETED,
        PROV_ACK,
        IMPORTED,
        MASTER_REQUEST,
        HEARD,
        RESTORE_COMPLETE_AT,
        LAST_SENT,
        ANSWER_STALE,
        LAST_ENTRIES,
        RESEND,
        PUBLIC_KEY,
        HEAD,
        CONTROL_SIG,
        DENIED,
        FORK_DECISION,
        GIVEN_UP,
        REPORT,
        OLD_KEY,
        RECIPIENT,
        SEAL_POLICY,
        ROTATED,
    ];
}

/// Peers key of the owner's signature of a control record whose signed message hashes to
/// `message_hash`.
pub fn control_sig(message_hash: &[u8; 32]) -> Vec<u8> {
    let mut k = vec![peers::CONTROL_SIG];
    k.extend_from_slice(message_hash);
    k
}

/// Peers key of the stored chain head of `origin` at `number`.
pub fn head(origin: &ReplicaId, number: u64) -> Vec<u8> {
    let mut k = peer(peers::HEAD, origin);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// Peers key of a restore complete of `replica` numbered `number`.
pub fn restore_complete_at(replica: &ReplicaId, number: u64) -> Vec<u8> {
    let mut k = peer(peers::RESTORE_COMPLETE_AT, replica);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// A Peers key: tag then replica id.
pub fn peer(tag: u8, r: &ReplicaId) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(&r.0);
    k
}

/// A Peers key: tag, two replica ids.
pub fn peer2(tag: u8, a: &ReplicaId, b: &ReplicaId) -> Vec<u8> {
    let mut k = peer(tag, a);
    k.extend_from_slice(&b.0);
    k
}

/// Export log key.
pub fn export_log(target: &ReplicaId, seq: u64) -> Vec<u8> {
    let mut k = peer(peers::EXPORT_LOG, target);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Imported-packet marker key.
pub fn imported(id: &PacketId) -> Vec<u8> {
    let mut k = vec![peers::IMPORTED];
    k.extend_from_slice(&id.0);
    k
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_peers_tag_names_one_kind_of_row() {
        let mut tags = super::peers::ALL.to_vec();
        tags.sort_unstable();
        let n = tags.len();
        tags.dedup();
        assert_eq!(
            tags.len(),
            n,
            "two Peers tags are equal: {:?}",
            super::peers::ALL
        );
    }
}
