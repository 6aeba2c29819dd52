//! Errors of the protocol and the object base. Storage errors stay separate
//! ([`crate::store::Error`]) and are wrapped here. Every message is one sentence that names
//! the object and says what to do next: the CLI prints them as they are.

use crate::codec::CodecError;
use crate::env::incarnation_text;
use crate::model::EntryError;

/// Errors of `msite-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A local record is damaged.
    #[error("the store holds a damaged record: {0}; run `msite check` and restore from backup if it fails")]
    Codec(#[from] CodecError),
    /// A name or selector matches nothing.
    #[error(
        "{0} does not exist here; check the name (`msite ls`, `msite lsreplica`, `msite describe`)"
    )]
    NotFound(String),
    /// A name is already taken.
    #[error("{0} already exists")]
    Exists(String),
    /// A local change to an object this replica does not master.
    #[error("{object} is mastered by replica {master}, not by this replica ({me}); change it there, or ask for mastership with `msite reqmaster`")]
    NotMaster {
        /// The object.
        object: String,
        /// Its master.
        master: String,
        /// This replica.
        me: String,
    },
    /// The replica refuses local changes (or exports) in its present state.
    #[error("{0}")]
    Locked(String),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// A packet's content breaks the protocol's rules.
    #[error("malformed packet content: {0}")]
    Malformed(String),
    /// A packet cannot be read.
    #[error("{0}")]
    Unreadable(String),
    /// A packet is refused; nothing was applied.
    #[error("{0}")]
    Refused(Refusal),
    /// An entry cannot be trusted.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// A file-system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl CoreError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another family's packet.
    WrongFamily {
        /// The packet's family.
        packet: String,
        /// This replica's family.
        ours: String,
    },
    /// Not addressed to this replica.
    NotAddressed {
        /// Addressees.
        targets: String,
        /// This replica.
        me: String,
    },
    /// Built before this replica's restore.
    StaleTarget {
        /// The incarnation the packet believed.
        had: u64,
        /// This replica's incarnation.
        expected: u64,
        /// Sender.
        sender: String,
    },
    /// Built by a sender before the sender's restore.
    StaleSender {
        /// Sender.
        sender: String,
        /// The packet's sender incarnation.
        had: u64,
        /// The sender's incarnation recorded here.
        expected: u64,
    },
    /// Relays a restore request of a third replica older than the one held here (PROTOCOL
    /// §6.4): its sender has not seen the newer restoration yet.
    StaleRequest {
        /// Sender.
        sender: String,
        /// The replica whose restore request it relays.
        replica: String,
        /// The relayed request's incarnation.
        had: u64,
        /// The incarnation of the request held here.
        held: u64,
    },
    /// The sender's history of an origin differs from ours.
    Divergent {
        /// Origin.
        origin: String,
        /// Entry number.
        number: u64,
        /// Detail.
        detail: String,
        /// Other origins whose history differs at the packet's bases, with the number where
        /// it was seen: every fork a packet shows is reported, not only the first (K14).
        also: Vec<(String, u64)>,
    },
    /// The sender recovers from a copy that differs from this replica's history of `origin`
    /// at `number`: an entry made under an earlier incarnation than ours, or (at the packet's
    /// base) a differing hash. Its copy is older than a restoration of `origin`; it gives it up
    /// when it receives the newer history, or reports the divergence if its copy is the newer
    /// (K13). Not a fork to report here.
    SenderHoldsRetired {
        /// The sender.
        sender: String,
        /// The origin.
        origin: String,
        /// The entry number.
        number: u64,
        /// Other origins whose histories differ in the packet, with the first differing
        /// number each: forks the refusal reports too (K35).
        also: Vec<(String, u64)>,
    },
    /// The packet (or the export) needs entries its sender has dropped by retention: a gap
    /// this sender can never fill (docs/protocol.md §9).
    BehindRetention {
        /// The replica that lacks the entries.
        replica: String,
        /// Their origin.
        origin: String,
        /// The first entry missing.
        first: u64,
        /// The last entry dropped.
        last: u64,
        /// The replica that dropped them.
        keeper: String,
    },
    /// This replica has lost entries of its own (restored without restorereplica).
    RolledBack {
        /// Sender that holds more.
        sender: String,
        /// What the sender holds of our entries.
        theirs: u64,
        /// What we hold.
        ours: u64,
    },
    /// The packet is unsigned, or a signature in it does not verify with the key this
    /// replica holds (docs/protocol.md, "Trust").
    Unauthentic {
        /// The sender the header names.
        sender: String,
        /// What does not verify, naming the key expected.
        detail: String,
    },
    /// A sibling holds a different entry under one of this replica's own numbers, made on the
    /// same timeline (not one an `--override` restoration of this replica retired): this
    /// replica numbered it twice, so it was put back to an older copy without `msite restore`
    /// and has lost entries of its own (ARCHITECTURE.md invariant 8).
    OwnFork {
        /// The sender that holds the other entry.
        sender: String,
        /// This replica's name (the origin of the two entries).
        origin: String,
        /// The number used twice.
        number: u64,
        /// Other origins whose histories differ in the packet, with the first differing
        /// number each (K14).
        also: Vec<(String, u64)>,
    },
    /// The sender was retired (`msite rmreplica`): the family takes nothing more from it.
    SenderRetired {
        /// The sender.
        sender: String,
        /// The replica whose `rmreplica` retired it.
        by: String,
    },
    /// An entry of a retired replica past the last one the family keeps, or a retirement
    /// that would leave this replica holding such entries (docs/protocol.md §10).
    PastRetirement {
        /// The retired replica.
        replica: String,
        /// The last entry of it the family keeps.
        last: u64,
        /// The entry past it (one the packet carries, or the highest held here).
        number: u64,
        /// The replica whose `rmreplica` retired it.
        by: String,
    },
    /// Other.
    Other(String),
}

/// The other forks a refusal names, as the tail of its message.
fn also_differ(also: &[(String, u64)]) -> String {
    also.iter()
        .map(|(o, n)| format!("; entry {n} of origin {o} differs too"))
        .collect()
}

impl Refusal {
    /// The number of the first fork a refusal that reports forks names.
    pub(crate) fn first_fork_number(&self) -> Option<u64> {
        match self {
            Refusal::Divergent { number, .. }
            | Refusal::SenderHoldsRetired { number, .. }
            | Refusal::OwnFork { number, .. } => Some(*number),
            _ => None,
        }
    }

    /// Whether the refusal shows a fork (divergent, own fork, or a sender holding retired
    /// entries).
    pub(crate) fn forks_shown(&self) -> bool {
        self.first_fork_number().is_some()
    }

    /// The first fork's origin and the other forks, for the refusals that report forks
    /// (divergent, and a sender holding retired entries).
    pub(crate) fn forks_mut(&mut self) -> Option<(&str, &mut Vec<(String, u64)>)> {
        match self {
            Refusal::Divergent { origin, also, .. }
            | Refusal::SenderHoldsRetired { origin, also, .. }
            | Refusal::OwnFork { origin, also, .. } => Some((origin.as_str(), also)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Refusal {
    /// Each refusal's message, one arm per variant. A flat match on purpose, although long:
    /// its length is the messages' text, not logic; a reader finds a message by its variant,
    /// a new variant is one more arm, and splitting by group would only add a second match
    /// to keep in step with this one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::WrongFamily { packet, ours } => write!(
                f,
                "the packet belongs to family {packet}, but this replica is in family {ours}; it was sent to the wrong site"
            ),
            Refusal::NotAddressed { targets, me } => write!(
                f,
                "the packet is addressed to {targets}, not to this replica ({me}); import it at its addressee"
            ),
            Refusal::StaleTarget { had, expected, sender } => write!(
                f,
                "stale packet from {sender}: it was built for incarnation {} of this replica, which now has incarnation {} (the packet predates a restore); nothing was applied, and {sender} will send what is needed once it has this replica's restore request",
                incarnation_text(*had),
                incarnation_text(*expected)
            ),
            Refusal::StaleSender { sender, had, expected } => write!(
                f,
                "stale packet: it was built by {sender} at incarnation {}, but {sender} has since been restored (incarnation {}); nothing was applied",
                incarnation_text(*had),
                incarnation_text(*expected)
            ),
            Refusal::StaleRequest { sender, replica, had, held } => write!(
                f,
                "stale packet from {sender}: it relays the restore request of {replica} for incarnation {}, but this replica holds a newer one (incarnation {}); nothing was applied, and {sender} gets the newer request with this replica's next packet",
                incarnation_text(*had),
                incarnation_text(*held)
            ),
            Refusal::Divergent {
                origin,
                number,
                detail,
                also,
            } => {
                let also = also_differ(also);
                write!(
                    f,
                    "divergent history: entry {number} of origin {origin} differs between the sender and this replica ({detail}{also}); nothing was applied — a replica was restored without `msite restorereplica` or with --override; decide which timeline the family keeps and run `msite repairfork --origin {origin} --number {number} --keep this|other` (docs/protocol.md, 'Divergence and fork repair')"
                )
            }
            Refusal::SenderHoldsRetired {
                sender,
                origin,
                number,
                also,
            } => {
                let also = also_differ(also);
                write!(
                    f,
                    "{sender} is recovering, and its copy of {origin}'s history differs from this replica's at entry {number} (its store is older than a restoration of {origin}{also}); nothing was applied: {sender} gives up its copy when it imports this replica's next packet, or reports the divergence if its copy is the newer"
                )
            }
            Refusal::BehindRetention {
                replica,
                origin,
                first,
                last,
                keeper,
            } => write!(
                f,
                "replica {replica} needs entries {first}..{last} of origin {origin}, which this family no longer keeps ({keeper} dropped them by retention); re-create it from a fresh creation packet"
            ),
            Refusal::RolledBack { sender, theirs, ours } => write!(
                f,
                "this replica has lost entries of its own: {sender} holds its entries up to {theirs}, but it holds only up to {ours} (it was restored from a copy without `msite restore`); it now refuses local changes — run `msite restorereplica` to recover them"
            ),
            Refusal::Unauthentic { sender, detail } => write!(
                f,
                "packet not authentic: {detail}; nothing of it was applied — compare the key fingerprints with `msite lsreplica --long` at {sender} and here"
            ),
            Refusal::OwnFork {
                sender,
                origin,
                number,
                also,
            } => {
                let also = also_differ(also);
                write!(
                    f,
                    "this replica has lost entries of its own: {sender} holds a different entry {number} of origin {origin} (this replica), so this replica numbered {number} twice — it was put back to an older copy without `msite restore`{also}; nothing was applied and it now refuses local changes and imports — run `msite restorereplica` (docs/protocol.md, 'Rollback')"
                )
            }
            Refusal::SenderRetired { sender, by } => write!(
                f,
                "replica {sender} was retired by {by} (`msite rmreplica`), so its packets are refused and nothing of this one was applied; if {sender} is still in use, its operator must stop it (its work since the retirement reaches the family only by hand)"
            ),
            Refusal::PastRetirement { replica, last, number, by } => write!(
                f,
                "entry {number} of replica {replica} comes after its retirement by {by}, which keeps its entries up to {last} only: {replica} kept working after it was retired; nothing of this packet was applied — see docs/protocol.md, 'Retiring a replica'"
            ),
            Refusal::Other(s) => f.write_str(s),
        }
    }
}

/// Result of core operations.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
