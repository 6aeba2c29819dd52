//! Identifiers: families, replicas, replicated objects and content hashes.

use std::fmt;

/// A BLAKE3 hash (entries, content).
pub type Hash = [u8; 32];

/// The all-zero hash, used as the "previous" hash of an origin's first entry.
pub const ZERO_HASH: Hash = [0; 32];

macro_rules! id128 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// The id as lower-case hex.
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }

            /// Parses 32 hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                let bytes = unhex(s)?;
                Some($name(bytes.try_into().ok()?))
            }

            /// The first 8 hex digits, for messages.
            pub fn short(&self) -> String {
                hex(&self.0[..4])
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id128!(
    /// The random 128-bit id of a family.
    FamilyId
);
id128!(
    /// The random 128-bit id of a replica.
    ReplicaId
);
id128!(
    /// The id of one logical packet.
    PacketId
);

/// The id of a replicated object: the `(origin, number)` of the entry that created it.
/// Ids are assigned deterministically, so every replica names an object the same way, and
/// ordering them gives the same winner everywhere when two objects share a name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct ObjId {
    /// Origin of the creating entry.
    pub origin: ReplicaId,
    /// Number of the creating entry.
    pub number: u64,
}

impl ObjId {
    /// Encoded length in keys.
    pub const LEN: usize = 24;

    /// The 24-byte key form (origin, big-endian number).
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(&self.origin.0);
        out[16..].copy_from_slice(&self.number.to_be_bytes());
        out
    }

    /// Parses the key form.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 24 {
            return None;
        }
        let origin = ReplicaId(b[..16].try_into().ok()?);
        let number = u64::from_be_bytes(b[16..].try_into().ok()?);
        Some(ObjId { origin, number })
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses hex (either case); `None` on odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let id = ReplicaId([0xab; 16]);
        assert_eq!(ReplicaId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ReplicaId::from_hex("zz"), None);
        let o = ObjId {
            origin: id,
            number: 7,
        };
        assert_eq!(ObjId::from_bytes(&o.to_bytes()), Some(o));
    }
}
