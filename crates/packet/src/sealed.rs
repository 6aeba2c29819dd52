//! Sealed packets (`SPEC.md` §9): a packet part file encrypted with `age` to X25519
//! recipients, inside an outer envelope that stays readable.
//!
//! A sealed file is the 8-byte magic [`SEALED_MAGIC`], a u16 LE version (1), a u32 LE length
//! and that many bytes of [`SealedLabel`] (msgpack: who the packet is for), a CRC-32C of
//! everything before it, then an age file (binary) whose plaintext is the part file, byte for
//! byte. Sealing is a wrapping around any part of any minor version, so it needs no packet
//! version of its own. Both ways stream through age's 64 KiB chunks: memory does not grow with
//! the packet. The label is not authenticated (anyone can rewrite it); the inner packet's
//! signature is what the importer trusts.

use std::io::{self, BufRead, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The magic of a sealed file (PNG-style like the packet's, "MSE" for sealed envelope).
pub const SEALED_MAGIC: [u8; 8] = [0x89, b'M', b'S', b'E', 0x0d, 0x0a, 0x1a, 0x0a];
/// The sealed envelope version this code writes and reads.
pub const SEALED_VERSION: u16 = 1;
/// A label longer than this is refused (it names a few recipients).
const MAX_LABEL: u32 = 64 * 1024;

/// Who a sealed packet is for, readable without a key (not authenticated).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedLabel {
    /// The age recipients (`age1…`) it is encrypted to.
    pub recipients: Vec<String>,
    /// The names of the replicas it is for, as the sender wrote them.
    pub for_names: Vec<String>,
}

/// Why a sealed file cannot be sealed or opened; each message names the next step.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The outer envelope is damaged.
    #[error("the sealed envelope is damaged ({0}); ask the sender to export the packet again")]
    Damaged(&'static str),
    /// A recipient is not an age X25519 recipient.
    #[error("{0} is not an age recipient (expected `age1…`, as `msite identity` prints it)")]
    BadRecipient(String),
    /// None of the identities given opens the packet.
    #[error("this packet is sealed for {0}, and this site's identity is not among the recipients; import it at the site it is for, or ask the sender to seal it to this site's `msite identity`")]
    NotForUs(String),
    /// age refused the file (damaged, or not an age file).
    #[error("the sealed packet does not decrypt: {0}")]
    Age(String),
}

/// Whether a file starting with `prefix` is sealed.
pub fn is_sealed(prefix: &[u8]) -> bool {
    prefix.len() >= 8 && prefix[..8] == SEALED_MAGIC
}

/// Parses age X25519 recipients (`age1…`).
pub fn parse_recipients(list: &[String]) -> Result<Vec<age::x25519::Recipient>, SealError> {
    list.iter()
        .map(|s| {
            age::x25519::Recipient::from_str(s.trim())
                .map_err(|_| SealError::BadRecipient(s.clone()))
        })
        .collect()
}

/// Seals the part file read from `inner` into `out` for `recipients`, streaming. Returns the
/// bytes of plaintext sealed.
pub fn seal(
    inner: &mut impl Read,
    out: &mut impl Write,
    recipients: &[age::x25519::Recipient],
    label: &SealedLabel,
) -> Result<u64, SealError> {
    let body = rmp_serde::to_vec(label).expect("a label always encodes");
    let mut head = Vec::with_capacity(18 + body.len());
    head.extend_from_slice(&SEALED_MAGIC);
    head.extend_from_slice(&SEALED_VERSION.to_le_bytes());
    head.extend_from_slice(&(body.len() as u32).to_le_bytes());
    head.extend_from_slice(&body);
    let crc = crc32c::crc32c(&head);
    out.write_all(&head)?;
    out.write_all(&crc.to_le_bytes())?;
    let dyn_recipients = recipients.iter().map(|r| r as &dyn age::Recipient);
    let enc = age::Encryptor::with_recipients(dyn_recipients)
        .map_err(|e| SealError::Age(e.to_string()))?;
    let mut w = enc.wrap_output(&mut *out)?;
    let n = io::copy(inner, &mut w)?;
    w.finish()?;
    Ok(n)
}

/// Reads the outer envelope of a sealed file, leaving `r` at the age file.
pub fn read_label(r: &mut impl Read) -> Result<SealedLabel, SealError> {
    let mut fixed = [0u8; 14];
    r.read_exact(&mut fixed)?;
    if !is_sealed(&fixed) {
        return Err(SealError::Damaged("not a sealed file"));
    }
    if u16::from_le_bytes([fixed[8], fixed[9]]) != SEALED_VERSION {
        return Err(SealError::Damaged(
            "unknown sealed envelope version; upgrade msite",
        ));
    }
    let len = u32::from_le_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]);
    if len > MAX_LABEL {
        return Err(SealError::Damaged("label too long"));
    }
    let mut body = vec![0u8; len as usize + 4];
    r.read_exact(&mut body)?;
    let (label, crc) = body.split_at(len as usize);
    let mut crc_in = crc32c::crc32c(&fixed);
    crc_in = crc32c::crc32c_append(crc_in, label);
    if crate::format::VERIFY_CHECKSUMS && crc_in.to_le_bytes() != crc {
        return Err(SealError::Damaged("label checksum"));
    }
    rmp_serde::from_slice(label).map_err(|_| SealError::Damaged("label"))
}

/// Opens a sealed file read from `r` with `identities`: its label, and a streaming reader of
/// the part file inside (age checks each 64 KiB chunk as it is read).
pub fn unseal<R: BufRead>(
    mut r: R,
    identities: &[age::x25519::Identity],
) -> Result<(SealedLabel, impl Read), SealError> {
    let label = read_label(&mut r)?;
    let dec = age::Decryptor::new_buffered(r).map_err(|e| SealError::Age(e.to_string()))?;
    let ids = identities.iter().map(|i| i as &dyn age::Identity);
    match dec.decrypt(ids) {
        Ok(reader) => Ok((label, reader)),
        Err(age::DecryptError::NoMatchingKeys) => {
            let who = format!(
                "{} (recipients {})",
                label.for_names.join(", "),
                label.recipients.join(", ")
            );
            Err(SealError::NotForUs(who))
        }
        Err(e) => Err(SealError::Age(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_for(id: &age::x25519::Identity, plain: &[u8]) -> Vec<u8> {
        let label = SealedLabel {
            recipients: vec![id.to_public().to_string()],
            for_names: vec!["sanfran".into()],
        };
        let mut out = Vec::new();
        seal(&mut &plain[..], &mut out, &[id.to_public()], &label).unwrap();
        out
    }

    #[test]
    fn a_sealed_file_opens_with_its_identity_and_its_label_reads_without() {
        let id = age::x25519::Identity::generate();
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = sealed_for(&id, &plain);
        assert!(is_sealed(&sealed));
        assert!(
            !sealed.windows(64).any(|w| w == &plain[1000..1064]),
            "encrypted"
        );
        let label = read_label(&mut &sealed[..]).unwrap();
        assert_eq!(label.for_names, vec!["sanfran".to_string()]);
        let (_, mut r) = unseal(&sealed[..], &[id]).unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, plain);
    }

    #[test]
    fn the_wrong_identity_is_refused_naming_who_it_is_for() {
        let id = age::x25519::Identity::generate();
        let sealed = sealed_for(&id, b"packet");
        let other = age::x25519::Identity::generate();
        let err = unseal(&sealed[..], &[other]).err().expect("refused");
        assert!(err.to_string().contains("sealed for sanfran"), "{err}");
    }

    #[test]
    fn a_damaged_label_is_refused() {
        let id = age::x25519::Identity::generate();
        let mut sealed = sealed_for(&id, b"packet");
        sealed[16] ^= 1;
        let err = read_label(&mut &sealed[..]).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
