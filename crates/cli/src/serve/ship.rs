//! Shipping: the outgoing bay is the queue. Each packet part file there is sent along the route
//! to the replica its header addresses — pushed to a daemon over HTTP (resuming at the byte the
//! receiver says it has), or copied into a directory (under a hidden name, then renamed) — and
//! removed from the bay once the receiver has kept it.
//!
//! Rules kept: a part leaves the bay only after the receiver answered that it is kept (so a
//! crash anywhere loses nothing, and at worst sends a part twice, which the import skips as
//! already applied); a failed part is tried again after a wait that doubles up to the routes
//! file's `retry_max`; a part older than its route's expiry is reported undeliverable (once per
//! daemon run) and kept, and still tried; replica-creation packets and parts for replicas with no
//! route stay where they are for the operator.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};

use super::receive::{Progress, FAMILY_HEADER, SENDER_HEADER};
use super::routes::{Routes, Way};
use super::Shared;
use crate::packets;

/// The sender's read buffer.
const READ_BUFFER: usize = 1 << 20;
/// The first wait after a failed attempt.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A part's failed attempts.
#[derive(Debug)]
struct Backoff {
    attempts: u32,
    next: Instant,
    reported_expired: bool,
}

/// What one pass over the bay did.
#[derive(Debug, Default)]
pub struct ShipReport {
    /// Parts delivered: (file name, sibling, first hop).
    pub shipped: Vec<(String, String, String)>,
    /// Parts that failed this time, with why (they stay queued).
    pub failed: Vec<(String, String)>,
    /// Parts past their expiry (kept in the bay).
    pub undeliverable: Vec<String>,
}

impl ShipReport {
    /// The report as lines for the terminal.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (f, to, hop) in &self.shipped {
            let via = if hop == to {
                String::new()
            } else {
                format!(" via {hop}")
            };
            out.push(format!("Shipped {f} to {to}{via}."));
        }
        for (f, why) in &self.failed {
            out.push(format!(
                "Could not ship {f}: {why}; it stays in the outgoing bay."
            ));
        }
        for f in &self.undeliverable {
            out.push(format!(
                "{f} is past its expiry and still undelivered; it stays in the outgoing bay."
            ));
        }
        out
    }

    /// The exit code as an error: 4 undeliverable, 1 failed.
    pub fn into_result(self) -> anyhow::Result<()> {
        super::exit_for(self.undeliverable.len(), self.failed.len(), 0)
    }
}

/// Ships the outgoing bay; keeps the backoff of failed parts between passes.
pub struct Shipper {
    /// One HTTP agent per first hop (each pins its own certificate).
    agents: BTreeMap<String, ureq::Agent>,
    /// One bucket client per bucket URL (made on first use).
    #[cfg(feature = "s3")]
    buckets: BTreeMap<String, super::bucket::Bucket>,
    backoff: BTreeMap<PathBuf, Backoff>,
    retry_max: Duration,
}

impl Shipper {
    /// A shipper for `routes`.
    pub fn new(routes: &Routes) -> Shipper {
        Shipper {
            agents: BTreeMap::new(),
            #[cfg(feature = "s3")]
            buckets: BTreeMap::new(),
            backoff: BTreeMap::new(),
            retry_max: routes.retry_max,
        }
    }

    /// The agent for first hop `hop` (made on first use).
    fn agent(&mut self, s: &Shared, hop: &str) -> anyhow::Result<ureq::Agent> {
        if let Some(a) = self.agents.get(hop) {
            return Ok(a.clone());
        }
        let pinned = s.routes.siblings.get(hop).and_then(|r| r.cert.as_deref());
        let a = super::tls::agent(&s.routes, pinned)?;
        self.agents.insert(hop.to_string(), a.clone());
        Ok(a)
    }

    /// Puts `file` into the bucket at `url`, under first hop `hop`'s prefix.
    #[cfg(feature = "s3")]
    fn put_into_bucket(
        &mut self,
        s: &Shared,
        url: &str,
        hop: &str,
        file: &Path,
    ) -> anyhow::Result<()> {
        if !self.buckets.contains_key(url) {
            let b = super::bucket::Bucket::open(url, &s.routes.s3)?;
            self.buckets.insert(url.to_string(), b);
        }
        self.buckets[url].put_part(hop, file, s)
    }

    /// Ships the parts whose first hop is `hop` until the daemon stops: a pass on every
    /// wake-up (a new part) and every `poll` interval.
    pub fn run(mut self, s: &Shared, hop: &str, wake: std::sync::mpsc::Receiver<()>) {
        while !s.stopping() {
            self.ship_bay(s, false, Some(hop));
            match wake.recv_timeout(s.routes.poll) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Sends every part of the outgoing bay that is due (`all`: due or not), only those whose
    /// first hop is `only` if given.
    pub fn ship_bay(&mut self, s: &Shared, all: bool, only: Option<&str>) -> ShipReport {
        let mut report = ShipReport::default();
        let files = match packets::bay_files(&s.paths.outgoing()) {
            Ok(f) => f,
            Err(e) => {
                report
                    .failed
                    .push(("the outgoing bay".into(), format!("{e:#}")));
                return report;
            }
        };
        self.backoff.retain(|p, _| files.contains(p));
        for f in files {
            if s.stopping() {
                break;
            }
            let due = self
                .backoff
                .get(&f)
                .is_none_or(|b| b.next <= Instant::now());
            if all || due {
                self.ship_one(s, &f, only, &mut report);
            }
        }
        report
    }

    fn ship_one(&mut self, s: &Shared, file: &Path, only: Option<&str>, report: &mut ShipReport) {
        let name = file_name(file);
        let Some((to, hop, way, expiry)) = destination(s, file) else {
            return;
        };
        if only.is_some_and(|h| h != hop) {
            return;
        }
        let res = match way {
            Way::Url(base) => self.agent(s, &hop).and_then(|a| push(&a, s, &base, file)),
            #[cfg(feature = "s3")]
            Way::Bucket(url) => self.put_into_bucket(s, &url, &hop, file),
            _ => copy_or_refuse(&hop, &way, file),
        };
        match res {
            Ok(()) => {
                tracing::info!(packet = %name, to = %to, via = %hop, "shipped");
                record_shipped(s, file, &name, &to, &hop);
                self.backoff.remove(file);
                if let Err(e) = std::fs::remove_file(file) {
                    tracing::warn!(packet = %name, error = %e, "shipped, but cannot remove it from the outgoing bay");
                }
                report.shipped.push((name, to, hop));
            }
            Err(e) => {
                let why = crate::util::bounded_line(&crate::util::esc(&format!("{e:#}")), 300);
                let b = self.backoff.entry(file.to_path_buf()).or_insert(Backoff {
                    attempts: 0,
                    next: Instant::now(),
                    reported_expired: false,
                });
                b.attempts += 1;
                let wait = FIRST_RETRY
                    .saturating_mul(1 << b.attempts.min(16))
                    .min(self.retry_max);
                b.next = Instant::now() + wait;
                tracing::warn!(packet = %name, to = %to, via = %hop, error = %why, retry_in_s = wait.as_secs(), "shipment failed");
                if expired(file, expiry) {
                    if !b.reported_expired {
                        tracing::error!(packet = %name, to = %to, "undeliverable: past its expiry; it stays in the outgoing bay");
                        b.reported_expired = true;
                    }
                    report.undeliverable.push(name.clone());
                }
                report.failed.push((name, why));
            }
        }
    }
}

/// Records a delivered part in the site's history (before it leaves the outgoing bay).
fn record_shipped(s: &Shared, file: &Path, name: &str, to: &str, hop: &str) {
    use crate::history::{Direction, Outcome, Record};
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let via = (hop != to).then(|| format!("via {hop}"));
    let rec = Record::now(
        Direction::Out,
        Some(to),
        &crate::util::esc(name),
        bytes,
        Outcome::Shipped,
        via.as_deref(),
    );
    crate::history::record(&s.paths.dir, rec);
}

/// The file name of part `f`, as the bays and receivers name it.
pub(super) fn file_name(f: &Path) -> String {
    f.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where a part goes: (sibling, first hop, the hop's way, the sibling's expiry); `None` for
/// parts that stay (replica creation, no route, unreadable: the import's checks answer those).
fn destination(s: &Shared, file: &Path) -> Option<(String, String, Way, Duration)> {
    let header = match msite_packet::open(file) {
        Ok(r) => r.header().clone(),
        Err(e) => {
            tracing::debug!(file = %file.display(), error = %e, "not shipped: unreadable");
            return None;
        }
    };
    if header.new_replica.0 != [0; 16] {
        return None;
    }
    let target = header
        .targets
        .iter()
        .find_map(|t| s.name_of(&t.replica.0))?;
    let Some((hop, route)) = s.routes.hop(&target) else {
        tracing::debug!(file = %file.display(), to = %target, "not shipped: no route");
        return None;
    };
    let expiry = s
        .routes
        .siblings
        .get(&target)
        .map(|r| r.expiry)
        .unwrap_or(route.expiry);
    Some((target, hop.to_string(), route.way.clone(), expiry))
}

fn expired(file: &Path, expiry: Duration) -> bool {
    std::fs::metadata(file)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > expiry)
        .unwrap_or(false)
}

fn copy_or_refuse(hop: &str, way: &Way, file: &Path) -> anyhow::Result<()> {
    match way {
        Way::Dir(dir) => copy_into(dir, file),
        Way::Url(_) => bail!("route to {hop} needs an HTTP agent"),
        Way::Via(_) => bail!("route to {hop} goes through another hub"),
        Way::Bucket(_) => {
            bail!("route to {hop} is a bucket, and this msite was built without the s3 feature")
        }
    }
}

/// Copies `file` into `dir` under a hidden name, then renames it, so a reader of `dir` never
/// sees half a part.
fn copy_into(dir: &Path, file: &Path) -> anyhow::Result<()> {
    let name = file_name(file);
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::copy(file, &tmp).with_context(|| format!("cannot copy into {}", dir.display()))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all())?;
    std::fs::rename(&tmp, dir.join(&name))?;
    crate::site::sync_dir(dir)
}

/// Pushes `file` to the daemon at `base`, from the byte it already has.
fn push(agent: &ureq::Agent, s: &Shared, base: &str, file: &Path) -> anyhow::Result<()> {
    let name = file_name(file);
    let size = std::fs::metadata(file)?.len();
    let url = format!("{base}/v1/packets/{name}");
    let token = format!("Bearer {}", s.routes.token.as_deref().unwrap_or(""));
    let family = msite_packet::wire::Id(s.family).to_hex();
    let mut resp = agent
        .get(&url)
        .header("authorization", &token)
        .header(FAMILY_HEADER, &family)
        .header(SENDER_HEADER, &s.me.1)
        .call()
        .with_context(|| format!("cannot reach {base}"))?;
    let at = answer(&mut resp)?;
    if at.complete {
        return Ok(());
    }
    let offset = at.received.min(size);
    if offset > 0 {
        tracing::info!(packet = %name, offset, total = size, "resuming a shipment");
    }
    let mut f = std::fs::File::open(file)?;
    f.seek(SeekFrom::Start(offset))?;
    let reader = std::io::BufReader::with_capacity(READ_BUFFER, f.take(size - offset));
    let mut body = Paced::new(reader, s);
    let mut resp = agent
        .put(format!("{url}?offset={offset}&total={size}"))
        .header("authorization", &token)
        .header(FAMILY_HEADER, &family)
        .header(SENDER_HEADER, &s.me.1)
        .send(ureq::SendBody::from_reader(&mut body))
        .with_context(|| format!("the upload to {base} broke off"))?;
    let done = answer(&mut resp)?;
    if !done.complete {
        bail!("{base} has {} of {size} bytes", done.received);
    }
    Ok(())
}

/// The receiver's answer: its progress, or its refusal as an error.
fn answer(resp: &mut ureq::http::Response<ureq::Body>) -> anyhow::Result<Progress> {
    let status = resp.status();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    if status.is_success() || status.as_u16() == 409 {
        if let Ok(p) = serde_json::from_str::<Progress>(&text) {
            return Ok(p);
        }
    }
    bail!("the receiver answered {status}: {}", text.trim())
}

/// A reader that keeps to the routes file's `ship_rate` and gives up when the daemon stops
/// (the receiver keeps what arrived; the next run resumes there).
struct Paced<'a, R> {
    inner: R,
    shared: &'a Shared,
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl<'a, R: Read> Paced<'a, R> {
    fn new(inner: R, shared: &'a Shared) -> Self {
        Paced {
            inner,
            shared,
            rate: shared.routes.ship_rate,
            start: Instant::now(),
            sent: 0,
        }
    }
}

impl<R: Read> Read for Paced<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.shared.stopping() {
            return Err(std::io::Error::other("the daemon is stopping"));
        }
        let want = match self.rate {
            Some(rate) => buf.len().min((rate / 10).max(1) as usize),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..want])?;
        self.sent += n as u64;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(n)
    }
}
