//! The routes file (`routes.toml`, msite's `shipping.conf`): what `msite serve` listens on, the
//! family's shared push token, and per sibling how its packets travel — directly to its daemon's
//! URL, through a hub (another sibling's route), into a directory (a mounted share), or into an
//! S3-compatible bucket (`[s3]`: the endpoint, and the bucket this site takes its own packets
//! from).
//!
//! Rules the parser keeps: every sibling has exactly one way (`url`, `via`, `dir` or `s3`); a `via`
//! names a sibling that has a `url` or a `dir` (one hop, so no loop); listen addresses are
//! socket addresses (never a wildcard the file does not spell out); the token is at least 16
//! characters; an `https://` route needs the sibling's pinned `cert` and this site's own
//! `tls_cert` and `tls_key`. Unknown keys are refused, so a typo never silently turns a route off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Deserialize;

/// The routes file's default name, in the site directory.
pub const ROUTES_FILE: &str = "routes.toml";

/// The shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    serve: RawServe,
    #[serde(default)]
    sibling: BTreeMap<String, RawSibling>,
    #[serde(default)]
    s3: RawS3,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    #[serde(default)]
    allow_http: bool,
    inbox: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    #[serde(default)]
    listen: Vec<String>,
    token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_packet_size: Option<String>,
    part_size: Option<String>,
    poll: Option<String>,
    export_every: Option<String>,
    expiry: Option<String>,
    retry_max: Option<String>,
    ship_rate: Option<String>,
    handshake_timeout: Option<String>,
    late_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSibling {
    url: Option<String>,
    via: Option<String>,
    dir: Option<PathBuf>,
    s3: Option<String>,
    cert: Option<PathBuf>,
    export_every: Option<String>,
    expiry: Option<String>,
}

/// How packets reach a sibling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Way {
    /// Pushed over HTTP to the sibling's daemon (`http://HOST:PORT`).
    Url(String),
    /// Pushed to another sibling's daemon (the hub), which forwards it.
    Via(String),
    /// Copied into a directory (the sibling's incoming bay on a mounted share).
    Dir(PathBuf),
    /// Put into an S3-compatible bucket (`s3://BUCKET/PREFIX`), under `PREFIX/SIBLING/`, where
    /// the sibling's daemon takes it from.
    Bucket(String),
}

/// The `[s3]` table: how buckets are reached (credentials come from the environment:
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, as every S3 tool reads them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The S3-compatible server (`https://…`; none: AWS itself).
    pub endpoint: Option<String>,
    /// The region (none: from the environment, or `us-east-1`).
    pub region: Option<String>,
    /// Whether an `http://` endpoint is allowed (a server on a trusted network or loopback).
    pub allow_http: bool,
    /// The bucket this site takes its packets from (`s3://BUCKET/PREFIX`: the objects under
    /// `PREFIX/THIS-SITE/`).
    pub inbox: Option<String>,
}

/// One sibling's route.
#[derive(Clone, Debug)]
pub struct Route {
    /// How packets reach it.
    pub way: Way,
    /// How often an export for it runs even without local changes.
    pub export_every: Duration,
    /// How long a packet for it may wait before it is reported undeliverable.
    pub expiry: Duration,
    /// Its pinned TLS certificate (PEM), if any.
    pub cert: Option<PathBuf>,
}

/// A parsed routes file.
#[derive(Clone, Debug)]
pub struct Routes {
    /// Where it was read from.
    pub path: PathBuf,
    /// Addresses to listen on (none: ship only, receive nothing over HTTP).
    pub listen: Vec<SocketAddr>,
    /// This site's TLS certificate and key (PEM), if it uses TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The family's shared push token (an interim authentication; see docs/serve.md).
    pub token: Option<String>,
    /// The largest packet part accepted, in bytes.
    pub max_packet_size: u64,
    /// The size exports split packets to (a part holding one large content record may be
    /// larger, by up to the 1 MiB of a content piece).
    pub part_size: Option<u64>,
    /// How often the bays and the store are looked at.
    pub poll: Duration,
    /// The longest wait between two attempts to ship a packet.
    pub retry_max: Duration,
    /// The most bytes per second one shipment sends (none: as fast as the link goes).
    pub ship_rate: Option<u64>,
    /// The longest a client's TLS handshake may take before its connection is dropped.
    pub handshake_timeout: Duration,
    /// How long a sibling may go unheard before the status page marks it late.
    pub late_after: Duration,
    /// Per sibling name.
    pub siblings: BTreeMap<String, Route>,
    /// How buckets are reached, and this site's own.
    pub s3: S3Settings,
}

impl Routes {
    /// Reads and checks the routes file at `path`.
    pub fn read(path: &Path) -> anyhow::Result<Routes> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the routes file {}; write one as docs/serve.md shows",
                path.display()
            )
        })?;
        Self::parse(&text, path)
            .with_context(|| format!("the routes file {} is not usable", path.display()))
    }

    /// Parses routes from `text`; relative paths are taken from `path`'s directory.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Routes> {
        let raw: RawFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let s = raw.serve;
        let default_every = dur(s.export_every.as_deref(), "export_every", 60)?;
        let default_expiry = dur(s.expiry.as_deref(), "expiry", 7 * 86_400)?;
        let mut siblings = BTreeMap::new();
        for (name, r) in &raw.sibling {
            let route = sibling(name, r, base, default_every, default_expiry)?;
            siblings.insert(name.clone(), route);
        }
        check_vias(&siblings)?;
        let listen = listen_addrs(&s.listen)?;
        let tls = tls_files(&s, base, &siblings)?;
        let token = match &s.token_file {
            Some(f) => Some(read_token(&base.join(f))?),
            None => None,
        };
        let s3 = s3_settings(raw.s3, &siblings)?;
        let needs_token = !listen.is_empty()
            || siblings
                .values()
                .any(|r| matches!(r.way, Way::Url(_) | Way::Via(_)));
        if needs_token && token.is_none() {
            bail!("[serve] token_file is missing: pushing and receiving over HTTP need the family's shared token");
        }
        let max_packet_size = size(s.max_packet_size.as_deref(), "max_packet_size")?;
        let max_packet_size = max_packet_size.unwrap_or(4 << 30);
        let ship_rate = size(s.ship_rate.as_deref(), "ship_rate")?;
        let part_size = size(s.part_size.as_deref(), "part_size")?;
        Ok(Routes {
            path: path.to_path_buf(),
            tls,
            ship_rate,
            part_size,
            listen,
            token,
            max_packet_size,
            poll: dur(s.poll.as_deref(), "poll", 1)?,
            retry_max: dur(s.retry_max.as_deref(), "retry_max", 300)?,
            handshake_timeout: dur(s.handshake_timeout.as_deref(), "handshake_timeout", 10)?,
            late_after: dur(s.late_after.as_deref(), "late_after", 86_400)?,
            siblings,
            s3,
        })
    }

    /// The first hop towards sibling `name`: itself, or the hub its route goes through.
    pub fn hop(&self, name: &str) -> Option<(&str, &Route)> {
        let (key, r) = self.siblings.get_key_value(name)?;
        match &r.way {
            Way::Via(hub) => self
                .siblings
                .get_key_value(hub)
                .map(|(k, v)| (k.as_str(), v)),
            _ => Some((key.as_str(), r)),
        }
    }
}

fn sibling(
    name: &str,
    r: &RawSibling,
    base: &Path,
    every: Duration,
    expiry: Duration,
) -> anyhow::Result<Route> {
    let ways = [
        r.url.is_some(),
        r.via.is_some(),
        r.dir.is_some(),
        r.s3.is_some(),
    ];
    if ways.iter().filter(|w| **w).count() != 1 {
        bail!("sibling {name}: give exactly one of url, via, dir and s3");
    }
    let way = if let Some(u) = &r.url {
        let u = u.trim_end_matches('/');
        if !u.starts_with("http://") && !u.starts_with("https://") {
            bail!("sibling {name}: url `{u}` must start with http:// or https://");
        }
        Way::Url(u.to_string())
    } else if let Some(v) = &r.via {
        Way::Via(v.clone())
    } else if let Some(b) = &r.s3 {
        Way::Bucket(bucket_url(b).map_err(|e| anyhow::anyhow!("sibling {name}: {e}"))?)
    } else {
        Way::Dir(base.join(r.dir.as_ref().expect("one way is set")))
    };
    Ok(Route {
        way,
        export_every: dur(r.export_every.as_deref(), "export_every", every.as_secs())?,
        expiry: dur(r.expiry.as_deref(), "expiry", expiry.as_secs())?,
        cert: r.cert.as_ref().map(|c| base.join(c)),
    })
}

/// Checks an `s3://BUCKET[/PREFIX]` URL; returns it without a trailing `/`.
fn bucket_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim_end_matches('/');
    let Some(rest) = url.strip_prefix("s3://") else {
        bail!("`{url}` must be a bucket URL like s3://BUCKET/PREFIX");
    };
    let bucket = rest.split('/').next().unwrap_or("");
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c);
    if bucket.len() < 3 || !bucket.chars().all(plain) {
        bail!("`{url}` does not name a bucket (3-63 lower-case letters, digits, dots and dashes)");
    }
    Ok(url.to_string())
}

/// The `[s3]` table: an `http://` endpoint needs `allow_http`, a bucket route or inbox needs a
/// build with the `s3` feature.
fn s3_settings(raw: RawS3, siblings: &BTreeMap<String, Route>) -> anyhow::Result<S3Settings> {
    let inbox = raw
        .inbox
        .as_deref()
        .map(bucket_url)
        .transpose()
        .map_err(|e| anyhow::anyhow!("[s3] inbox: {e}"))?;
    if let Some(e) = &raw.endpoint {
        if !e.starts_with("http://") && !e.starts_with("https://") {
            bail!(
                "[s3] endpoint `{e}` must start with https:// (or http:// with allow_http = true)"
            );
        }
        if e.starts_with("http://") && !raw.allow_http {
            bail!("[s3] endpoint `{e}` is plain HTTP: set allow_http = true if that is meant (loopback or a trusted network only)");
        }
    }
    let uses_buckets =
        inbox.is_some() || siblings.values().any(|r| matches!(r.way, Way::Bucket(_)));
    if uses_buckets && !cfg!(feature = "s3") {
        bail!("this msite was built without S3 routes: rebuild it with `cargo build --release -p msite-cli --features s3`");
    }
    Ok(S3Settings {
        endpoint: raw.endpoint.map(|e| e.trim_end_matches('/').to_string()),
        region: raw.region,
        allow_http: raw.allow_http,
        inbox,
    })
}

fn listen_addrs(addrs: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    addrs
        .iter()
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "listen address `{a}` is not an address with a port, like 127.0.0.1:7401"
                )
            })
        })
        .collect()
}

/// This site's certificate and key; every `https://` route needs them and its sibling's cert.
fn tls_files(
    s: &RawServe,
    base: &Path,
    siblings: &BTreeMap<String, Route>,
) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
        (None, None) => None,
        _ => bail!("[serve] give both tls_cert and tls_key, or neither"),
    };
    for (name, r) in siblings {
        let https = matches!(&r.way, Way::Url(u) if u.starts_with("https://"));
        if https && (r.cert.is_none() || tls.is_none()) {
            bail!("sibling {name}: an https:// url needs its pinned `cert` and this site's [serve] tls_cert and tls_key");
        }
    }
    Ok(tls)
}

fn check_vias(siblings: &BTreeMap<String, Route>) -> anyhow::Result<()> {
    for (name, r) in siblings {
        if let Way::Via(hub) = &r.way {
            match siblings.get(hub).map(|h| &h.way) {
                None => bail!("sibling {name} goes via {hub}, which has no route of its own"),
                Some(Way::Via(_)) => {
                    bail!("sibling {name} goes via {hub}, which goes via another sibling; name the hub itself")
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.trim().to_string();
    if token.len() < MIN_TOKEN_LEN || !token.chars().all(|c| c.is_ascii_graphic()) {
        bail!(
            "the token in {} must be at least {MIN_TOKEN_LEN} printable characters without spaces (e.g. `openssl rand -hex 32`)",
            path.display()
        );
    }
    Ok(token)
}

/// Parses an optional size (`10M`, `1G`).
fn size(text: Option<&str>, key: &str) -> anyhow::Result<Option<u64>> {
    text.map(|t| crate::util::parse_size(t).map_err(|e| anyhow::anyhow!("{key}: {e}")))
        .transpose()
}

/// Parses a duration: `90`, `90s`, `5m`, `2h`, `7d`; `None` gives `default_secs`.
fn dur(text: Option<&str>, key: &str, default_secs: u64) -> anyhow::Result<Duration> {
    match text {
        None => Ok(Duration::from_secs(default_secs)),
        Some(t) => crate::util::parse_duration(t).map_err(|e| anyhow::anyhow!("{key}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Routes> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "0123456789abcdef0123\n").unwrap();
        Routes::parse(text, &dir.path().join(ROUTES_FILE))
    }

    #[test]
    fn a_hub_topology_parses_with_its_defaults() {
        let r = parse(
            "[serve]\nlisten = [\"127.0.0.1:7401\"]\ntoken_file = \"tok\"\nexpiry = \"2h\"\npart_size = \"10M\"\n\
             [sibling.boston]\nurl = \"http://127.0.0.1:7400/\"\nexport_every = \"5s\"\n\
             [sibling.bangalore]\nvia = \"boston\"\n",
        )
        .unwrap();
        assert_eq!(r.listen, vec!["127.0.0.1:7401".parse().unwrap()]);
        assert_eq!(r.token.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!((r.part_size, r.max_packet_size), (Some(10 << 20), 4 << 30));
        let b = &r.siblings["boston"];
        assert_eq!(b.way, Way::Url("http://127.0.0.1:7400".into()));
        assert_eq!(b.export_every, Duration::from_secs(5));
        assert_eq!(b.expiry, Duration::from_secs(7200));
        assert_eq!(
            r.siblings["bangalore"].export_every,
            Duration::from_secs(60)
        );
        assert_eq!(r.hop("bangalore").unwrap().0, "boston");
        assert_eq!(r.hop("boston").unwrap().0, "boston");
        assert!(r.hop("nobody").is_none());
    }

    #[test]
    fn mistakes_are_refused_with_the_key_named() {
        let cases = [
            (
                "[sibling.a]\ndir = \"x\"\nurl = \"http://h:1\"\n",
                "exactly one",
            ),
            ("[sibling.a]\ns3 = \"http://b/p\"\n", "bucket URL"),
            (
                "[sibling.a]\ns3 = \"s3://B_/p\"\n",
                "does not name a bucket",
            ),
            (
                "[s3]\nendpoint = \"http://127.0.0.1:9000\"\n",
                "allow_http = true",
            ),
            ("[sibling.a]\nvia = \"b\"\n", "no route of its own"),
            (
                "[sibling.a]\ndir = \"x\"\n[sibling.b]\nvia = \"a\"\n[sibling.c]\nvia = \"b\"\n",
                "goes via another",
            ),
            (
                "[serve]\nlisten = [\"localhost\"]\ntoken_file = \"tok\"\n",
                "not an address",
            ),
            (
                "[serve]\nlisten = [\"127.0.0.1:1\"]\n",
                "token_file is missing",
            ),
            (
                "[sibling.a]\nurl = \"ftp://h:1\"\n[serve]\ntoken_file = \"tok\"\n",
                "http://",
            ),
            (
                "[sibling.a]\nurl = \"https://h:1\"\n[serve]\ntoken_file = \"tok\"\n",
                "pinned `cert`",
            ),
            ("[serve]\ntls_cert = \"c\"\n", "both tls_cert and tls_key"),
            (
                "[sibling.a]\ndir = \"x\"\nexport_every = \"5y\"\n",
                "export_every",
            ),
            (
                "[sibling.a]\ndir = \"x\"\nexpory = \"5d\"\n",
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[cfg(feature = "s3")]
    #[test]
    fn bucket_routes_need_no_token() {
        let r = parse(
            "[s3]\nendpoint = \"http://127.0.0.1:9000/\"\nallow_http = true\ninbox = \"s3://family-bay/msite/\"\n\
             [sibling.boston]\ns3 = \"s3://family-bay/msite\"\n[sibling.bangalore]\nvia = \"boston\"\n",
        );
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("token_file is missing"),
            "a via route pushes over HTTP: {e}"
        );
        let r = parse(
            "[s3]\nendpoint = \"http://127.0.0.1:9000/\"\nallow_http = true\ninbox = \"s3://family-bay/msite/\"\n\
             [sibling.boston]\ns3 = \"s3://family-bay/msite\"\n",
        )
        .unwrap();
        assert_eq!(
            r.siblings["boston"].way,
            Way::Bucket("s3://family-bay/msite".into())
        );
        assert_eq!(r.s3.inbox.as_deref(), Some("s3://family-bay/msite"));
        assert_eq!(r.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(r.token.is_none());
    }

    #[test]
    fn a_short_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "short").unwrap();
        let e = Routes::parse(
            "[serve]\ntoken_file = \"tok\"\n",
            &dir.path().join("r.toml"),
        );
        assert!(format!("{:#}", e.unwrap_err()).contains("at least 16"));
    }
}
