//! Sealed packets at the command line (`SPEC.md` §9, docs/protocol.md §8): each site's age
//! identity (kept in its store), sealing the part files an export wrote, and unsealing the
//! sealed files of a bay, in place, before the usual import reads them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use anyhow::Context;
use msite_backends::AnyStore;
use msite_core::Replica;
use msite_packet::sealed::{self, SealedLabel};

/// This site's age identity (made and kept in the store at its first use).
pub fn site_identity(r: &Replica<AnyStore>) -> anyhow::Result<age::x25519::Identity> {
    let text = r.sealing_identity(|| {
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret()
            .to_string()
    })?;
    parse_identity(&text).context("the sealing identity kept in this store is damaged")
}

/// Keeps this site's recipient as the one its packets announce (docs/protocol.md §8,
/// "Sealing as a family policy"): siblings seal to it when the family's policy says so.
pub fn announce_recipient(r: &Replica<AnyStore>) -> anyhow::Result<()> {
    let rcpt = site_identity(r)?.to_public().to_string();
    r.set_own_recipient(&rcpt)?;
    Ok(())
}

/// An identity from an age identity file's text (the first `AGE-SECRET-KEY-1…` line).
pub fn parse_identity(text: &str) -> anyhow::Result<age::x25519::Identity> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .ok_or_else(|| anyhow::anyhow!("no AGE-SECRET-KEY-1 line found"))?;
    age::x25519::Identity::from_str(line).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Whether the file at `path` is sealed.
pub fn is_sealed_file(path: &Path) -> bool {
    let mut prefix = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut prefix))
        .is_ok()
        && sealed::is_sealed(&prefix)
}

/// The label of a sealed file.
pub fn label_of(path: &Path) -> anyhow::Result<SealedLabel> {
    let mut f = BufReader::new(File::open(path)?);
    Ok(sealed::read_label(&mut f)?)
}

/// Seals each of `parts` in place for `recipients` (streamed through a file beside it, then
/// renamed over it, so a crash leaves either the plain or the sealed part).
pub fn seal_parts(
    parts: &[PathBuf],
    recipients: &[String],
    for_names: &[String],
) -> anyhow::Result<()> {
    let keys = sealed::parse_recipients(recipients)?;
    let label = SealedLabel {
        recipients: recipients.to_vec(),
        for_names: for_names.to_vec(),
    };
    for p in parts {
        let tmp = side_file(p, "sealing");
        let mut inner = BufReader::new(File::open(p)?);
        let mut out = BufWriter::new(File::create(&tmp)?);
        sealed::seal(&mut inner, &mut out, &keys, &label)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, p).with_context(|| format!("cannot replace {}", p.display()))?;
    }
    Ok(())
}

/// Unseals the sealed file `path` into `dest` with `id`, streamed.
pub fn unseal_to(path: &Path, dest: &Path, id: &age::x25519::Identity) -> anyhow::Result<()> {
    let f = BufReader::new(File::open(path)?);
    let (_, mut plain) = sealed::unseal(f, std::slice::from_ref(id))
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = BufWriter::new(File::create(dest)?);
    std::io::copy(&mut plain, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Unseals in place every sealed file among `files` with this site's identity; returns the
/// files that could not be opened, each with the sentence why (left as they are).
pub fn unseal_in_place(files: &[PathBuf], id: &age::x25519::Identity) -> Vec<(PathBuf, String)> {
    let mut refused = Vec::new();
    for p in files.iter().filter(|p| is_sealed_file(p)) {
        let tmp = side_file(p, "unsealing");
        let done = unseal_to(p, &tmp, id).and_then(|_| Ok(std::fs::rename(&tmp, p)?));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            refused.push((p.clone(), format!("{e:#}")));
        }
    }
    refused
}

fn side_file(p: &Path, what: &str) -> PathBuf {
    let mut name = p.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}"));
    p.with_file_name(name)
}
