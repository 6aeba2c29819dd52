//! `msite serve`: the site daemon. It receives packets that siblings push over HTTP into the
//! incoming bay ([`receive`]), imports every arrival with the import path of `syncreplica
//! import`, exports for each sibling of the routes file ([`routes`]) after local changes and on
//! a schedule, and ships the outgoing bay — the queue, which survives restarts — along the
//! routes, retrying with backoff ([`ship`]). [`worker`] runs imports and exports on one thread;
//! each first hop has a shipper thread of its own, so a slow sibling holds up neither the
//! others nor the imports.
//!
//! Rules kept here: one daemon per site (`serve.lock`, an OS file lock); the store is opened
//! only for the length of one step, so the operator's commands keep working beside the daemon;
//! on SIGTERM or Ctrl-C no new request or step starts and the running step finishes (each import
//! and export is atomic; an interrupted upload stays resumable); the daemon binds only the
//! addresses its routes file lists.

#[cfg(feature = "s3")]
pub mod bucket;
pub mod page;
pub mod receive;
pub mod routes;
pub mod ship;
pub mod tls;
pub mod worker;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use clap::Args;

use crate::site::{Ctx, SitePaths};
use crate::util::Exit;
pub use routes::Routes;

/// Exit code of `msite serve --once` and `export --ship`: a packet could not be delivered
/// within its expiry (it stays in the outgoing bay).
pub const EXIT_UNDELIVERABLE: i32 = 4;

/// The lock file that keeps a second daemon off a site.
pub const LOCK_FILE: &str = "serve.lock";

/// `msite serve`.
#[derive(Debug, Args)]
#[command(
    long_about = "Runs this site as a daemon: receives the packets siblings push over HTTP into \
the incoming bay and imports each at once; exports for every sibling of the routes file after \
local changes and on its schedule; ships the outgoing bay along the routes (to a sibling's \
daemon, through a hub, or into a directory), retrying with backoff. A packet not delivered \
within its route's expiry is reported and kept. SIGTERM or Ctrl-C stops it after the running \
step; nothing is half-applied. One daemon per site.\n\n\
--once runs one round (import the bay, export for every route, ship, no HTTP server) and exits: \
0 when all went, 1 when a packet was refused or a shipment failed, 4 when a packet is past its \
expiry. The routes file is described in docs/serve.md.",
    after_help = "Example:\n  msite -C boston serve --new-cert --name boston.example.org\n  msite -C boston serve\n  msite -C boston serve --routes /etc/msite/boston-routes.toml\n  msite -C sanfran serve --once"
)]
pub struct Serve {
    /// The routes file (default: routes.toml in the site directory).
    #[arg(long, value_name = "FILE")]
    pub routes: Option<PathBuf>,
    /// Run one round (import, export, ship) and exit; for cron.
    #[arg(long, conflicts_with = "new_cert")]
    pub once: bool,
    /// Make this site's TLS certificate and key (tls/site.pem, tls/site.key) and print the
    /// fingerprint; give the host names and addresses siblings reach it by with --name.
    #[arg(long)]
    pub new_cert: bool,
    /// With --new-cert: a host name or address of this site (repeat for several).
    #[arg(long, value_name = "HOST", requires = "new_cert")]
    pub name: Vec<String>,
}

/// What the HTTP side and the worker share.
pub struct Shared {
    /// The site's paths.
    pub paths: SitePaths,
    /// This replica's id and name.
    pub me: ([u8; 16], String),
    /// The family's id.
    pub family: [u8; 16],
    /// The routes file.
    pub routes: Routes,
    /// The fingerprints of each sibling's pinned certificates.
    pub pins: BTreeMap<String, Vec<String>>,
    /// The replicas the store knows, by id (refreshed every round).
    pub known: RwLock<BTreeMap<[u8; 16], String>>,
    /// Names of the uploads being received now.
    pub uploading: Mutex<std::collections::BTreeSet<String>>,
    /// Set on SIGTERM / Ctrl-C.
    pub stop: AtomicBool,
    /// Wakes the worker (an arrival, a stop).
    pub wake: std::sync::mpsc::SyncSender<()>,
    /// Wake the shippers (a new part in the outgoing bay, a stop).
    pub ship_wakes: Vec<std::sync::mpsc::SyncSender<()>>,
    /// The last status document the views computed, and when ([`page`]).
    pub status: Mutex<Option<(std::time::Instant, crate::status::StatusDoc)>>,
}

/// The receiving ends of the wake-ups: the worker's, and one per first hop for its shipper.
pub struct Wakes {
    /// The worker's.
    pub worker: std::sync::mpsc::Receiver<()>,
    /// Each first hop's shipper.
    pub shippers: Vec<(String, std::sync::mpsc::Receiver<()>)>,
}

impl Shared {
    /// Wakes the worker; a wake already pending is enough.
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Wakes every shipper.
    pub fn wake_shippers(&self) {
        for w in &self.ship_wakes {
            let _ = w.try_send(());
        }
    }

    /// Whether the daemon is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether the store knows a replica named `name`.
    pub fn known_name(&self, name: &str) -> bool {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|n| n == name)
    }

    /// The name of replica `id`, if the store knows it.
    pub fn name_of(&self, id: &[u8; 16]) -> Option<String> {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

/// What one look into the store tells the daemon.
pub struct Identity {
    /// This replica's id and name.
    pub me: ([u8; 16], String),
    /// The family's id.
    pub family: [u8; 16],
    /// The replicas the store knows, by id.
    pub known: BTreeMap<[u8; 16], String>,
    /// A fingerprint of the entries this replica holds (its own row): it changes with every
    /// local change and every applied packet.
    pub held: u64,
}

/// How long the daemon waits for a store that another process (an operator's command) holds
/// before it puts the step off to the next round.
pub const DAEMON_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub use crate::site::store_busy;

/// The identity of the site in `ctx` (the store is opened and closed again).
pub fn identity(ctx: &Ctx) -> anyhow::Result<Identity> {
    let site = ctx.open()?;
    let r = &site.replica;
    let known = r
        .view()
        .replicas()?
        .into_iter()
        .map(|x| (x.id.0, r.replica_name(&x.id)))
        .collect();
    let held = blake3::hash(format!("{:?}", r.own_row()?).as_bytes());
    Ok(Identity {
        me: (r.id().0, r.name()),
        family: r.family().0,
        known,
        held: fingerprint(&held),
    })
}

/// Builds the shared state for the site in `ctx` with `routes`; returns it and the wake-up
/// receivers.
pub fn shared(ctx: &Ctx, routes: Routes) -> anyhow::Result<(Arc<Shared>, Wakes)> {
    let id = identity(ctx)?;
    let pins = tls::pins(&routes)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let hops = routes
        .siblings
        .iter()
        .filter(|(_, r)| !matches!(r.way, routes::Way::Via(_)))
        .map(|(n, _)| n.clone());
    let (mut ship_wakes, mut shippers) = (Vec::new(), Vec::new());
    for hop in hops {
        let (t, r) = std::sync::mpsc::sync_channel(1);
        ship_wakes.push(t);
        shippers.push((hop, r));
    }
    let s = Shared {
        paths: ctx.paths(),
        me: id.me,
        family: id.family,
        routes,
        pins,
        known: RwLock::new(id.known),
        uploading: Mutex::default(),
        stop: AtomicBool::new(false),
        wake: tx,
        ship_wakes,
        status: Mutex::default(),
    };
    let wakes = Wakes {
        worker: rx,
        shippers,
    };
    Ok((Arc::new(s), wakes))
}

/// The routes file for the site in `ctx`: `given`, or routes.toml in the site directory.
pub fn load_routes(ctx: &Ctx, given: Option<&Path>) -> anyhow::Result<Routes> {
    let path = given
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ctx.dir.join(routes::ROUTES_FILE));
    Routes::read(&path)
}

/// Takes the site's daemon lock, or says which site is served already.
fn lock_site(ctx: &Ctx) -> anyhow::Result<File> {
    let path = ctx.dir.join(LOCK_FILE);
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `msite serve` runs for the site in {} ({} is locked); stop it first",
            ctx.dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

impl Serve {
    /// Runs the daemon (or one round with `--once`).
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        if self.new_cert {
            return new_cert(ctx, &self.name);
        }
        let ctx = &ctx.with_lock_wait(DAEMON_LOCK_WAIT);
        let routes = load_routes(ctx, self.routes.as_deref())?;
        let _lock = lock_site(ctx)?;
        let (shared, wakes) = shared(ctx, routes)?;
        if self.once {
            return once(ctx, shared);
        }
        daemon(ctx, shared, wakes)
    }
}

/// `--new-cert`: makes the site's certificate and says what to put where.
fn new_cert(ctx: &Ctx, names: &[String]) -> anyhow::Result<()> {
    crate::site::SiteConfig::read(&ctx.dir)?;
    let names = if names.is_empty() {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        names.to_vec()
    };
    let (path, fp) = tls::new_cert(&ctx.dir, &names)?;
    ctx.say(format!(
        "Wrote {} and {} for {}.",
        path.display(),
        ctx.dir.join(tls::KEY_FILE).display(),
        names.join(", ")
    ));
    ctx.say(format!("Fingerprint: {fp}"));
    ctx.say("Give each sibling a copy of the certificate (its `cert` for this site); set tls_cert and tls_key in this site's routes file.");
    Ok(())
}

/// One round for cron: take the bucket inbox, import, export for every route, ship once; the
/// exit code tells.
fn once(ctx: &Ctx, shared: Arc<Shared>) -> anyhow::Result<()> {
    let (inbox_lines, inbox_refused, inbox_errors) = take_inbox_once(&shared)?;
    for line in inbox_lines {
        ctx.say(line);
    }
    let mut w = worker::Worker::new(ctx, shared.clone(), true);
    let mut report = w.round(true, true);
    report.refused += inbox_refused;
    report.errors.extend(inbox_errors);
    ctx.say(report.summary());
    report.into_result()
}

/// `--once` with an `[s3] inbox`: one look into it; (lines, refused, errors).
#[cfg(feature = "s3")]
fn take_inbox_once(shared: &Shared) -> anyhow::Result<(Vec<String>, usize, Vec<String>)> {
    let Some(url) = &shared.routes.s3.inbox else {
        return Ok((Vec::new(), 0, Vec::new()));
    };
    let report = bucket::Bucket::open(url, &shared.routes.s3)?.take_inbox(shared);
    Ok((report.lines(), report.refused.len(), report.errors))
}

#[cfg(not(feature = "s3"))]
fn take_inbox_once(_: &Shared) -> anyhow::Result<(Vec<String>, usize, Vec<String>)> {
    // The routes file refuses an inbox in a build without S3.
    Ok((Vec::new(), 0, Vec::new()))
}

/// The daemon's inbox thread: takes the bucket inbox every `poll` until the daemon stops, and
/// wakes the worker when something arrived.
#[cfg(feature = "s3")]
fn spawn_inbox(shared: &Arc<Shared>) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    let Some(url) = shared.routes.s3.inbox.clone() else {
        return Ok(None);
    };
    let bucket = bucket::Bucket::open(&url, &shared.routes.s3)?;
    let shared = shared.clone();
    let t = std::thread::Builder::new()
        .name("msite-inbox".into())
        .spawn(move || {
            while !shared.stopping() {
                let report = bucket.take_inbox(&shared);
                for e in &report.errors {
                    tracing::warn!(inbox = %url, error = %e, "bucket inbox");
                }
                if !report.kept.is_empty() {
                    for (name, bay) in &report.kept {
                        tracing::info!(packet = %name, bay, "received from the bucket");
                    }
                    shared.wake();
                    shared.wake_shippers();
                }
                sleep_unless_stopping(&shared, shared.routes.poll);
            }
        })
        .context("cannot start the inbox thread")?;
    Ok(Some(t))
}

#[cfg(not(feature = "s3"))]
fn spawn_inbox(_: &Arc<Shared>) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    Ok(None)
}

/// Sleeps for `d`, in short steps so a stop is seen within 100 ms.
#[cfg(feature = "s3")]
fn sleep_unless_stopping(shared: &Shared, d: std::time::Duration) {
    let step = std::time::Duration::from_millis(100);
    let start = std::time::Instant::now();
    while !shared.stopping() && start.elapsed() < d {
        std::thread::sleep(step.min(d));
    }
}

/// The daemon: the HTTP server on the tokio runtime, the worker on its own thread, both
/// stopped by SIGTERM or Ctrl-C.
fn daemon(ctx: &Ctx, shared: Arc<Shared>, wakes: Wakes) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let listeners = rt.block_on(receive::bind(&shared.routes.listen))?;
    receive::remove_stale_uploads(&shared);
    tracing::info!(
        site = %shared.me.1,
        routes = %shared.routes.path.display(),
        listen = ?shared.routes.listen,
        siblings = ?shared.routes.siblings.keys().collect::<Vec<_>>(),
        "msite serve started"
    );
    let mut threads = Vec::new();
    for (hop, wake) in wakes.shippers {
        let shared = shared.clone();
        let t = std::thread::Builder::new()
            .name(format!("msite-ship-{hop}"))
            .spawn(move || ship::Shipper::new(&shared.routes).run(&shared, &hop, wake))
            .context("cannot start a shipper thread")?;
        threads.push(t);
    }
    let worker = {
        let (ctx, shared, wake) = (ctx.clone(), shared.clone(), wakes.worker);
        std::thread::Builder::new()
            .name("msite-worker".into())
            .spawn(move || worker::Worker::new(&ctx, shared, false).run(wake))
            .context("cannot start the worker thread")?
    };
    threads.push(worker);
    threads.extend(spawn_inbox(&shared)?);
    let served = rt.block_on(receive::serve(shared.clone(), listeners));
    shared.stop.store(true, Ordering::Relaxed);
    shared.wake();
    shared.wake_shippers();
    for t in threads {
        let _ = t.join();
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    tracing::info!(site = %shared.me.1, "msite serve stopped");
    served
}

/// `syncreplica export --ship`: ships the outgoing bay once along the routes.
pub fn ship_now(ctx: &Ctx, routes_file: Option<&Path>) -> anyhow::Result<()> {
    let routes = load_routes(ctx, routes_file)?;
    let (shared, _wake) = shared(ctx, routes)?;
    let mut shipper = ship::Shipper::new(&shared.routes);
    let report = shipper.ship_bay(&shared, true, None);
    for line in report.lines() {
        ctx.say(line);
    }
    report.into_result()
}

/// The error that carries a round's exit code: 4 undeliverable, 1 refused or failed.
fn exit_for(undeliverable: usize, failed: usize, refused: usize) -> anyhow::Result<()> {
    if undeliverable > 0 {
        return Err(Exit {
            code: EXIT_UNDELIVERABLE,
            message: Some(format!(
                "{undeliverable} packet{} could not be delivered within the expiry of {} route and stay{} in the outgoing bay",
                if undeliverable == 1 { "" } else { "s" },
                if undeliverable == 1 { "its" } else { "their" },
                if undeliverable == 1 { "s" } else { "" },
            )),
        }
        .into());
    }
    if failed + refused > 0 {
        return Err(Exit {
            code: crate::util::EXIT_ERROR,
            message: Some(format!(
                "{failed} shipment{} failed (the packets stay queued) and {refused} packet{} refused",
                if failed == 1 { "" } else { "s" },
                if refused == 1 { " was" } else { "s were" },
            )),
        }
        .into());
    }
    Ok(())
}

/// The first 8 bytes of a BLAKE3 hash as a number: a cheap fingerprint of what changed.
pub(crate) fn fingerprint(hash: &blake3::Hash) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}
