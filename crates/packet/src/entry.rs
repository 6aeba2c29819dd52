//! The canonical encoding of an oplog entry and the entry hash.
//!
//! An entry's canonical encoding is `rmp_serde::to_vec(&entry)`: a msgpack array of the seven
//! fields of [`wire::Entry`] in declaration order. It is deterministic (msgpack's shortest
//! integer forms, no maps other than the one-key enum maps, no floats), and [`decode_entry`]
//! only accepts bytes that re-encode to themselves, so "canonical bytes" and "decodes" mean
//! the same thing.
//!
//! The hash (`SPEC.md` §5) is BLAKE3 over the same encoding of the first six fields as a
//! six-element array: byte `0x96` followed by exactly the bytes the canonical encoding has
//! between its `0x97` array marker and the trailing `c4 20 <hash>`. So the hash can be checked
//! from the canonical bytes without decoding ([`canonical_entry_hash`]).

use crate::error::DecodeError;
use crate::wire;

/// msgpack fixarray marker for the 7-field entry.
const ENTRY_MARKER: u8 = 0x97;
/// msgpack fixarray marker for the 6 hashed fields.
const HASHED_MARKER: u8 = 0x96;
/// `bin 8` marker and length 32: how the trailing hash field is encoded.
const HASH_FIELD_PREFIX: [u8; 2] = [0xc4, 0x20];
/// Length of the encoded hash field.
const HASH_FIELD_LEN: usize = 34;

/// The canonical encoding of `e` (deterministic bytes; see the module docs).
pub fn encode_entry(e: &wire::Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_entry(e, &mut out);
    out
}

/// Appends the canonical encoding of `e` to `out`.
pub fn write_entry(e: &wire::Entry, out: &mut Vec<u8>) {
    // Serializing these types into a Vec cannot fail: every sequence has a known length, there
    // are no maps with unknown length, no 128-bit integers, and writing to a Vec is infallible.
    if let Err(err) = rmp_serde::encode::write(out, e) {
        unreachable!("encoding a wire::Entry into a Vec failed: {err}");
    }
}

/// Decodes canonical entry bytes. Rejects trailing bytes and any encoding that is not the
/// canonical one (for example an integer in a longer form than needed). Verifies nothing about
/// `hash`: that is the protocol's job ([`entry_hash`], [`canonical_entry_hash`]).
pub fn decode_entry(bytes: &[u8]) -> Result<wire::Entry, DecodeError> {
    let e: wire::Entry =
        rmp_serde::from_slice(bytes).map_err(|source| DecodeError::msgpack("entry", source))?;
    let again = encode_entry(&e);
    if again != bytes {
        if bytes.len() > again.len() && bytes.starts_with(&again) {
            return Err(DecodeError::TrailingBytes {
                offset: again.len() as u64,
            });
        }
        return Err(DecodeError::NonCanonical);
    }
    Ok(e)
}

/// The entry hash of `e`: BLAKE3 over the canonical encoding of every field except `hash`
/// (`SPEC.md` §5). The value of `e.hash` does not matter.
pub fn entry_hash(e: &wire::Entry) -> wire::Hash {
    let bytes = encode_entry(e);
    match hash_canonical(&bytes) {
        Some(h) => h,
        // encode_entry always yields 0x97 … c4 20 <32 bytes>.
        None => unreachable!("canonical entry encoding has an unexpected shape"),
    }
}

/// The entry hash computed directly from canonical entry bytes, without decoding them; equal to
/// `entry_hash(&decode_entry(bytes)?)` for canonical bytes. Fails only when the bytes do not
/// have the shape of an encoded entry (it does not check that they decode).
pub fn canonical_entry_hash(bytes: &[u8]) -> Result<wire::Hash, DecodeError> {
    hash_canonical(bytes)
        .ok_or_else(|| DecodeError::malformed(0, "entry bytes do not have the shape of an entry"))
}

/// The hash stored in canonical entry bytes (their last 32 bytes), without decoding them.
pub fn canonical_entry_stored_hash(bytes: &[u8]) -> Result<wire::Hash, DecodeError> {
    if !has_entry_shape(bytes) {
        return Err(DecodeError::malformed(
            0,
            "entry bytes do not have the shape of an entry",
        ));
    }
    let mut h = [0u8; 32];
    h.copy_from_slice(&bytes[bytes.len() - 32..]);
    Ok(h)
}

fn has_entry_shape(bytes: &[u8]) -> bool {
    bytes.len() > 1 + HASH_FIELD_LEN
        && bytes[0] == ENTRY_MARKER
        && bytes[bytes.len() - HASH_FIELD_LEN..][..2] == HASH_FIELD_PREFIX
}

fn hash_canonical(bytes: &[u8]) -> Option<wire::Hash> {
    if !has_entry_shape(bytes) {
        return None;
    }
    let mut h = blake3::Hasher::new();
    h.update(&[HASHED_MARKER]);
    h.update(&bytes[1..bytes.len() - HASH_FIELD_LEN]);
    Some(*h.finalize().as_bytes())
}
