//! A site directory: `site.json` (who lives here and on which engine), `store/` (the engine's
//! directory), and the bays `bays/incoming`, `bays/outgoing` (and `bays/refused`, made on
//! demand). [`Ctx`] carries what every command needs: the site directory from `-C`, where output
//! goes, whether progress bars may be drawn, and how long to wait for a store another process
//! holds (`--wait`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use msite_core::{Env, Replica, SystemEnv};
use serde::{Deserialize, Serialize};

use crate::backend::{AnyStore, BackendKind};

/// The site configuration file's name.
pub const SITE_FILE: &str = "site.json";
/// The format version written into `site.json`.
pub const SITE_FORMAT: u32 = 1;

/// What `site.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteConfig {
    /// Format version of this file.
    pub format: u32,
    /// The storage engine of `store/`.
    pub backend: String,
    /// The family's id (32 hex digits).
    pub family_id: String,
    /// The family's name.
    pub family_name: String,
    /// This replica's id (32 hex digits).
    pub replica_id: String,
    /// This replica's name.
    pub replica_name: String,
}

impl SiteConfig {
    /// The configuration of `r`'s site.
    pub fn of(r: &Replica<AnyStore>, backend: BackendKind) -> SiteConfig {
        SiteConfig {
            format: SITE_FORMAT,
            backend: backend.name().to_string(),
            family_id: r.family().to_hex(),
            family_name: r.family_name().to_string(),
            replica_id: r.id().to_hex(),
            replica_name: r.name(),
        }
    }

    /// Reads `DIR/site.json`.
    pub fn read(dir: &Path) -> anyhow::Result<SiteConfig> {
        let path = dir.join(SITE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} holds no msite site (no {SITE_FILE}); create one with `msite init` or `msite mkreplica import`",
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let cfg: SiteConfig = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; it should describe the site's replica (see `msite init --help`)",
                path.display()
            )
        })?;
        if cfg.format > SITE_FORMAT {
            bail!(
                "{} has format {}, newer than this msite understands ({SITE_FORMAT}); use a newer msite",
                path.display(),
                cfg.format
            );
        }
        Ok(cfg)
    }

    /// Writes `DIR/site.json` atomically.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(SITE_FILE);
        let tmp = dir.join(format!(".{SITE_FILE}.tmp"));
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// The first field of this file that disagrees with replica `r` of the store, as one
    /// sentence naming the field, both values and what to do. Only the replica id (which every
    /// command checks) unless `all`: the family id and the names too (`msite check`).
    pub fn mismatch(&self, r: &Replica<AnyStore>, dir: &Path, all: bool) -> Option<String> {
        let fields = [
            ("replica_id", &self.replica_id, r.id().to_hex()),
            ("family_id", &self.family_id, r.family().to_hex()),
            ("replica_name", &self.replica_name, r.name()),
            (
                "family_name",
                &self.family_name,
                r.family_name().to_string(),
            ),
        ];
        let count = if all { fields.len() } else { 1 };
        let (field, theirs, ours) = fields
            .into_iter()
            .take(count)
            .find(|(_, file, store)| *file != store)?;
        Some(format!(
            "{} disagrees with its store: {field} is \"{}\" in {SITE_FILE} but \"{}\" in the store; if the store is the right one, correct {SITE_FILE}, otherwise the site directory was assembled from two sites — restore the right store with `msite restore`",
            dir.join(SITE_FILE).display(),
            crate::util::esc(theirs),
            crate::util::esc(&ours)
        ))
    }

    /// The backend named in the file.
    pub fn backend_kind(&self) -> anyhow::Result<BackendKind> {
        self.backend
            .parse::<BackendKind>()
            .map_err(|e| anyhow::anyhow!("site.json: {e}"))
    }
}

/// The paths of a site directory.
#[derive(Clone, Debug)]
pub struct SitePaths {
    /// The site directory.
    pub dir: PathBuf,
}

impl SitePaths {
    /// The paths of site `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SitePaths { dir: dir.into() }
    }
    /// The engine's directory.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }
    /// Where packets wait to be imported.
    pub fn incoming(&self) -> PathBuf {
        self.dir.join("bays").join("incoming")
    }
    /// Where `msite restore` builds the new store; never trusted (the next restore removes it).
    pub fn restore_staging(&self) -> PathBuf {
        self.dir.join("store.staging")
    }
    /// The new store of `msite restore`, checked, marked restored and closed: it becomes
    /// `store/` once the old store is moved aside.
    pub fn restore_ready(&self) -> PathBuf {
        self.dir.join("store.ready")
    }
    /// Where exported packets wait to be shipped.
    pub fn outgoing(&self) -> PathBuf {
        self.dir.join("bays").join("outgoing")
    }
    /// Where refused packets are moved, each with a `.reason` file.
    pub fn refused(&self) -> PathBuf {
        self.dir.join("bays").join("refused")
    }
    /// Makes the bays.
    pub fn make_bays(&self) -> anyhow::Result<()> {
        for d in [self.incoming(), self.outgoing()] {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(())
    }
}

/// An open site: its configuration and its replica.
pub struct Site {
    /// Paths.
    pub paths: SitePaths,
    /// `site.json`.
    pub config: SiteConfig,
    /// The replica.
    pub replica: Replica<AnyStore>,
}

impl Site {
    /// The replica's name.
    pub fn name(&self) -> String {
        self.replica.name()
    }
}

/// Where command output goes.
#[derive(Clone)]
enum Sink {
    Stdout,
    Buffer(Arc<std::sync::Mutex<Vec<u8>>>),
}

/// What every command gets.
#[derive(Clone)]
pub struct Ctx {
    /// The site directory (`-C`, default: the current directory).
    pub dir: PathBuf,
    /// Prefix of every output line (the demo indents command output).
    pub indent: String,
    /// Whether progress bars may be drawn (stderr is a terminal and not `--quiet`).
    pub progress: bool,
    /// How long [`Ctx::open`] waits while another process holds the site's store (zero: fail
    /// at once).
    pub lock_wait: Duration,
    sink: Sink,
    env: Arc<dyn Env>,
}

impl Ctx {
    /// A context for site `dir` writing to stdout.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Ctx {
            dir: dir.into(),
            indent: String::new(),
            progress: std::io::stderr().is_terminal(),
            lock_wait: Duration::ZERO,
            sink: Sink::Stdout,
            env: Arc::new(SystemEnv),
        }
    }

    /// The same context for another site directory.
    pub fn at(&self, dir: impl Into<PathBuf>) -> Self {
        Ctx {
            dir: dir.into(),
            ..self.clone()
        }
    }

    /// A context whose output is kept in memory (see [`Ctx::take_output`]).
    pub fn buffered(dir: impl Into<PathBuf>) -> Self {
        Ctx {
            sink: Sink::Buffer(Arc::default()),
            progress: false,
            ..Ctx::new(dir)
        }
    }

    /// The output kept by a buffered context, emptied.
    pub fn take_output(&self) -> String {
        match &self.sink {
            Sink::Stdout => String::new(),
            Sink::Buffer(b) => {
                let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
                String::from_utf8_lossy(&std::mem::take(&mut *b)).into_owned()
            }
        }
    }

    /// The clock and id source.
    pub fn env(&self) -> Arc<dyn Env> {
        self.env.clone()
    }

    /// The site's paths.
    pub fn paths(&self) -> SitePaths {
        SitePaths::new(self.dir.clone())
    }

    /// Prints one line of output (with the context's indent); a control character other than
    /// a newline or a tab is printed as an escape (names from packets and the store are escaped
    /// before, with [`crate::util::esc`]; this is the last guard).
    pub fn say(&self, line: impl AsRef<str>) {
        let mut text = String::new();
        for l in line.as_ref().split('\n') {
            text.push_str(&self.indent);
            text.push_str(&crate::util::bounded_line(l, usize::MAX));
            text.push('\n');
        }
        self.write_raw(text.as_bytes());
    }

    /// Writes bytes as they are (used by `cat` and JSON output).
    pub fn write_raw(&self, bytes: &[u8]) {
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                // A closed pipe (`msite ls | head`) is not an error worth reporting.
                let _ = out.write_all(bytes).and_then(|()| out.flush());
            }
            Sink::Buffer(b) => b
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes),
        }
    }

    /// Writes bytes that `f` produces piece by piece (`cat` of large content), without
    /// holding them; a closed pipe ends the output quietly, as in [`Ctx::write_raw`].
    pub fn write_raw_with(
        &self,
        f: impl FnOnce(&mut dyn Write) -> msite_core::Result<()>,
    ) -> msite_core::Result<()> {
        let res = match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
                f(&mut out).and_then(|()| {
                    out.flush()
                        .map_err(|e| msite_core::CoreError::io("writing the content", e))
                })
            }
            Sink::Buffer(b) => {
                let mut out = Vec::new();
                let r = f(&mut out);
                b.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&out);
                r
            }
        };
        match res {
            Err(msite_core::CoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Prints `value` as one pretty JSON document.
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        self.write_raw(text.as_bytes());
        Ok(())
    }

    /// The same context, waiting up to `wait` for a store another process holds.
    pub fn with_lock_wait(&self, wait: Duration) -> Self {
        Ctx {
            lock_wait: wait,
            ..self.clone()
        }
    }

    /// Opens the site in the context's directory. While another process holds the store, tries
    /// again (pauses growing from 5 ms to 20 ms: a store is often held for only milliseconds) until [`Ctx::lock_wait`] has passed; the
    /// processes waiting for one site take it in turn, in no particular order.
    pub fn open(&self) -> anyhow::Result<Site> {
        let deadline = Instant::now() + self.lock_wait;
        let mut pause = Duration::from_millis(5);
        loop {
            match open_site(&self.dir, self.env()) {
                Err(e) if store_busy(&e) && Instant::now() < deadline => {
                    std::thread::sleep(pause.min(deadline - Instant::now()));
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) if store_busy(&e) && !self.lock_wait.is_zero() => {
                    return Err(e.context(format!(
                        "waited {} s for the store (`--wait SECONDS` waits longer)",
                        self.lock_wait.as_secs_f64()
                    )))
                }
                other => return other,
            }
        }
    }
}

/// Whether `e` says the store is held by another process.
pub fn store_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<msite_core::store::Error>(),
            Some(msite_core::store::Error::Locked { .. })
        )
    })
}

/// Opens the site in `dir`.
pub fn open_site(dir: &Path, env: Arc<dyn Env>) -> anyhow::Result<Site> {
    if !dir.is_dir() {
        bail!(
            "{} holds no msite site (no such directory); create one with `msite init` or `msite mkreplica import`",
            dir.display()
        );
    }
    let config = SiteConfig::read(dir)?;
    let kind = config.backend_kind()?;
    kind.ensure_compiled()
        .with_context(|| format!("the site in {} uses the {kind} backend", dir.display()))?;
    let paths = SitePaths::new(dir);
    finish_interrupted_restore(&paths)?;
    if !paths.store().is_dir() {
        bail!(
            "the site in {} has no store (store/ is missing); if its storage was lost, restore it from a backup with `msite restore BACKUP {}`",
            dir.display(),
            dir.display()
        );
    }
    tracing::debug!(dir = %dir.display(), backend = %kind, "opening site");
    let store = AnyStore::open(kind, &paths.store())?;
    let replica = Replica::open(store, env)
        .with_context(|| format!("cannot open the replica in {}", dir.display()))?;
    if let Some(m) = config.mismatch(&replica, dir, false) {
        bail!(m);
    }
    remove_unfinished(&replica, &paths.outgoing());
    Ok(Site {
        paths,
        config,
        replica,
    })
}

/// Completes a restore stopped between moving the old store aside and renaming the new one
/// into place: with no `store/`, a `store.ready` (checked and marked restored before it got that
/// name) becomes the store.
pub fn finish_interrupted_restore(paths: &SitePaths) -> anyhow::Result<()> {
    let (ready, store) = (paths.restore_ready(), paths.store());
    if store.exists() || !ready.is_dir() {
        return Ok(());
    }
    std::fs::rename(&ready, &store)
        .with_context(|| format!("cannot rename {} to {}", ready.display(), store.display()))?;
    sync_dir(&paths.dir)
}

/// Makes the renames in `dir` durable.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the directory {}", dir.display()))
}

/// Removes the part files that an interrupted export of `r` left in `dir` (the store is open,
/// so its lock is held and no export of this site runs). A failure is logged, not fatal: the
/// files only take space.
pub fn remove_unfinished(r: &Replica<AnyStore>, dir: &Path) {
    match r.remove_unfinished_packets(dir) {
        Ok(removed) => {
            for f in removed {
                tracing::info!(file = %f.display(), "removed an unfinished packet file of an interrupted export");
            }
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove unfinished packet files")
        }
    }
}

/// Refuses to make a site in `dir` if one is there already.
pub fn ensure_no_site(dir: &Path) -> anyhow::Result<()> {
    if dir.join(SITE_FILE).exists() {
        let who = SiteConfig::read(dir)
            .map(|c| format!("replica {} of family {}", c.replica_name, c.family_name))
            .unwrap_or_else(|_| "a site".to_string());
        bail!(
            "{} already holds {who}; choose an empty directory (or `msite restore` a backup into it)",
            dir.display()
        );
    }
    let store = SitePaths::new(dir).store();
    if store.exists()
        && std::fs::read_dir(&store)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already has a store/ directory but no {SITE_FILE}, as an interrupted `msite mkreplica import` or `msite init` leaves it: it is not a site; remove {} (or move it away) and run the command again, or choose another directory",
            dir.display(),
            store.display()
        );
    }
    Ok(())
}
