//! `msite rekey` and `msite vouch`: rotating this replica's signing key, and vouching for a
//! sibling's new key after it lost its own (docs/protocol.md §8, "Key rotation and loss").

use clap::Args;

use msite_core::SiteKey;

use super::Ctx;

/// `msite rekey`.
#[derive(Debug, Args)]
#[command(
    long_about = "Gives this replica a new signing key. Without --lost, the new key is announced \
in an entry signed with the old one: each sibling checks it against the key it holds and from then \
on accepts only the new key for this replica's packets. Back the store up afterwards: a backup \
older than the rekey holds the old key, which the siblings no longer accept.\n\nWith --lost (the \
old key is lost, or compromised, or this store was restored from a backup older than its last \
rekey), the new key is made without an announcement, which nobody could verify: the siblings \
refuse this replica's packets until an operator of another replica vouches for the key with \
`msite vouch`. The command prints the new public key to give that operator.",
    after_help = "Example:\n  msite -C boston rekey\n  msite -C boston backup /backups/boston-after-rekey\n  msite -C boston rekey --lost    # then, at sanfran: msite vouch boston --key <printed key>"
)]
pub struct Rekey {
    /// The old key is lost or compromised: make a new key that a sibling must vouch for.
    #[arg(long)]
    pub lost: bool,
}

impl Rekey {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        if self.lost {
            let (fp, key) = site.replica.rekey_lost()?;
            ctx.say(format!(
                "This replica now signs with key {fp}, which no sibling accepts yet.\nGive this public key to the operator of another replica, who runs `msite vouch {} --key {key}`:\n{key}",
                site.replica.name()
            ));
        } else {
            let fp = site.replica.rekey()?;
            ctx.say(format!(
                "This replica now signs with key {fp}; the rotation reaches its siblings with the next packets. Back up the store now: an older backup holds the old key."
            ));
        }
        Ok(())
    }
}

/// `msite vouch`.
#[derive(Debug, Args)]
#[command(
    long_about = "Vouches that replica NAME, whose signing key was lost or compromised, now signs \
with KEY (the public key `msite rekey --lost` printed at NAME, given to you out of band: check it \
with NAME's operator by voice or another channel you trust). The vouch is an entry of this replica, \
signed by this replica's key: every sibling that applies it accepts KEY for NAME's packets from \
then on. Any replica but NAME itself may vouch; the entry stays in the history for every \
operator to see.",
    after_help = "Example:\n  msite -C sanfran vouch boston --key 3f1c…(64 hex digits)\n  msite -C sanfran syncreplica export --all"
)]
pub struct Vouch {
    /// The replica whose new key this is.
    pub name: String,
    /// Its new public key: 64 hex digits, as `msite rekey --lost` printed them.
    #[arg(long)]
    pub key: String,
}

impl Vouch {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let site = ctx.open()?;
        let (fp, from) = site.replica.vouch(&self.name, &self.key)?;
        ctx.say(format!(
            "Vouched for key {fp} of {}: its entries after {from} must be signed with it. The vouch reaches the siblings with the next packets.",
            self.name
        ));
        Ok(())
    }
}

/// `msite identity`.
#[derive(Debug, Args)]
#[command(
    long_about = "Prints this site's age recipient (`age1…`): give it to the operators of the \
siblings, who seal the packets they send here with `syncreplica export --encrypt-to`. The \
identity that opens them is kept in this site's store (made at first use; backups hold it).\n\n\
With --new FILE, makes a new identity in FILE (readable by you only) without any site: an age \
identity and the new site's signing key. It prints two lines, the recipient and the signing \
key's public half (64 hex digits), which the operator of a site not made yet sends to the \
creator for `mkreplica export NAME --encrypt-to RECIPIENT --key KEY`, then gives FILE to \
`mkreplica import --identity FILE`. The siblings learn the key from the creator's entries, so \
no packet of the new replica signed by another key is ever accepted.",
    after_help = "Example:\n  msite -C sanfran identity\n  msite identity --new ~/sanfran.age    # before the site exists; prints the recipient and the key\n  msite identity --new ~/sanfran.age --json"
)]
pub struct Identity {
    /// Make a new identity in FILE instead of showing the site's.
    #[arg(long, value_name = "FILE")]
    pub new: Option<std::path::PathBuf>,
    /// One JSON document on stdout (see docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
}

/// `msite identity --json`.
#[derive(Debug, serde::Serialize)]
pub struct IdentityInfo {
    /// The age recipient (`age1…`) that seals packets for this site.
    pub recipient: String,
    /// The signing key's public half, 64 hex digits (`mkreplica export --key`).
    pub key: String,
    /// The signing key's fingerprint, as `lsreplica --long` shows it.
    pub fingerprint: String,
}

impl Identity {
    /// Runs the command.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let (id, key) = match &self.new {
            Some(path) => {
                let key = SiteKey::generate(ctx.env().as_ref());
                (new_identity_file(path, &key)?, key.public())
            }
            None => {
                let site = ctx.open()?;
                let key = site.replica.public_key(&site.replica.id())?;
                let id = crate::seal::site_identity(&site.replica)?;
                (id, key.unwrap_or_default())
            }
        };
        let info = IdentityInfo {
            recipient: id.to_public().to_string(),
            key: msite_core::ids::hex(&key),
            fingerprint: msite_core::sync::fingerprint(&key),
        };
        if self.json {
            return ctx.json(&info);
        }
        ctx.say(&info.recipient);
        if self.new.is_some() {
            ctx.say(&info.key);
        }
        Ok(())
    }
}

/// The line of an identity file that keeps the new site's signing key (a comment to age).
const SIGNING_KEY_LINE: &str = "# msite signing key (secret): ";

/// Writes a new age identity and signing key to `path` (mode 0600 on Unix; refuses to
/// overwrite).
fn new_identity_file(
    path: &std::path::Path,
    key: &SiteKey,
) -> anyhow::Result<age::x25519::Identity> {
    use age::secrecy::ExposeSecret;
    use std::io::Write;
    let id = age::x25519::Identity::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot create {}: {e}; choose a new file name",
            path.display()
        )
    })?;
    writeln!(f, "# public key: {}", id.to_public())?;
    writeln!(
        f,
        "# msite signing key (public): {}",
        msite_core::ids::hex(&key.public())
    )?;
    writeln!(
        f,
        "{SIGNING_KEY_LINE}{}",
        msite_core::ids::hex(key.secret())
    )?;
    writeln!(f, "{}", id.to_string().expose_secret())?;
    Ok(id)
}

/// The signing key an identity file made by `msite identity --new` keeps.
pub fn signing_key_of(text: &str) -> Option<SiteKey> {
    let hex = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(SIGNING_KEY_LINE.trim_end()))?
        .trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(SiteKey::from_secret(out))
}
