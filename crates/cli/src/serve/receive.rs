//! Receiving: the HTTP endpoints siblings push packet part files to.
//!
//! `GET /v1/packets/NAME` says how many bytes of NAME have arrived (`{"received": N,
//! "complete": B}`); `PUT /v1/packets/NAME?offset=N&total=T` appends the body at byte N of a
//! part of T bytes. So an upload broken at any point resumes where the receiver's disk says it
//! stopped. Bytes go to `bays/incoming/.NAME.upload` (hidden: the import never sees it); once
//! all T are there the part is read through (envelope, header, every checksum), its family,
//! sender (a replica of the family the store knows) and target are checked, and only then is it renamed into the incoming bay (addressed
//! here) or the outgoing bay (addressed to a sibling this site routes to: forwarded as a hub),
//! and the worker woken to import it.
//!
//! Rules kept: every request carries the family's token (`Authorization: Bearer`, compared in
//! constant time) and the family id (`X-Msite-Family`), checked before a byte of body is
//! written; a part is at most the routes file's `max_packet_size`, and no more bytes than
//! announced are written; one upload per name at a time; names are plain file names ending in
//! `.msp`. `GET /v1/health` answers without a token and says only that the daemon runs. With
//! `tls_cert` in the routes file every connection is TLS with a client certificate pinned for
//! a sibling ([`super::tls`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;

use super::tls::Peer;
use super::Shared;
use crate::util;

/// The header that names the family.
pub const FAMILY_HEADER: &str = "x-msite-family";
/// The header that names the pushing replica.
pub const SENDER_HEADER: &str = "x-msite-sender";
/// The receiver's write buffer.
const WRITE_BUFFER: usize = 1 << 20;
/// The longest part file name accepted.
const MAX_NAME: usize = 200;

/// Binds every listen address (and nothing else).
pub async fn bind(addrs: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .with_context(|| format!("cannot listen on {a}"))?;
        out.push(l);
    }
    Ok(out)
}

/// The endpoints: packet uploads, and the read-only status views ([`super::page`]).
pub fn router(shared: Arc<Shared>) -> Router {
    super::page::routes(Router::new())
        .route("/v1/health", get(health))
        .route("/v1/packets/{name}", get(progress).put(upload))
        .with_state(shared)
}

/// Serves on `listeners` until SIGTERM or Ctrl-C; requests running then may finish.
pub async fn serve(shared: Arc<Shared>, listeners: Vec<TcpListener>) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let acceptor = super::tls::acceptor(&shared.routes)?;
    let mut tasks = Vec::new();
    for l in listeners {
        let app = router(shared.clone());
        tasks.push(match &acceptor {
            Some(a) => {
                let tls =
                    super::tls::TlsListener::new(l, a.clone(), shared.routes.handshake_timeout);
                spawn_server(tls, app, rx.clone())
            }
            None => spawn_server(l, app, rx.clone()),
        });
    }
    shutdown_signal().await;
    tracing::info!("stopping: no new request is taken; the running step finishes");
    shared
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    shared.wake();
    let _ = tx.send(true);
    for t in tasks {
        match tokio::time::timeout(std::time::Duration::from_secs(10), t).await {
            Ok(Ok(r)) => r.context("the HTTP server failed")?,
            Ok(Err(e)) => anyhow::bail!("the HTTP server task failed: {e}"),
            Err(_) => {
                tracing::warn!("an upload still running at shutdown was cut; it resumes later")
            }
        }
    }
    Ok(())
}

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Serves `app` on `l` until `stop` turns true.
fn spawn_server<L>(l: L, app: Router, mut stop: tokio::sync::watch::Receiver<bool>) -> ServerTask
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    for<'a> Peer: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    tokio::spawn(async move {
        axum::serve(l, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn health(State(s): State<Arc<Shared>>) -> String {
    format!("msite serve: replica {} is up\n", util::esc(&s.me.1))
}

/// How far an upload got.
#[derive(Debug, Serialize, Deserialize)]
pub struct Progress {
    /// Bytes received (all of them when complete).
    pub received: u64,
    /// Whether the part is kept already.
    pub complete: bool,
}

/// Where an upload writes to.
#[derive(Debug, Deserialize)]
pub struct UploadAt {
    offset: u64,
    total: u64,
}

fn refuse(code: StatusCode, why: impl std::fmt::Display) -> Response {
    let text = util::bounded_line(&util::esc(&why.to_string()), 500);
    (code, format!("{text}\n")).into_response()
}

/// Checks the token, the family and the pushing sibling before anything else is looked at;
/// the refusal when one is wrong.
fn unauthorized(s: &Shared, h: &HeaderMap, peer: &Peer) -> Option<Response> {
    authorize(s, h, peer)
        .err()
        .map(|(code, why)| refuse(code, why))
}

fn authorize(s: &Shared, h: &HeaderMap, peer: &Peer) -> Result<(), (StatusCode, String)> {
    let Some(token) = s.routes.token.as_deref() else {
        return Err((StatusCode::FORBIDDEN, "this site takes no pushes".into()));
    };
    let given = h
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // blake3::Hash compares in constant time.
    if blake3::hash(given.as_bytes()) != blake3::hash(token.as_bytes()) {
        return Err((StatusCode::UNAUTHORIZED, "wrong or missing token".into()));
    }
    let family = h
        .get(FAMILY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if family != msite_packet::wire::Id(s.family).to_hex() {
        return Err((StatusCode::FORBIDDEN, "unknown family".into()));
    }
    let sender = h
        .get(SENDER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !s.routes.siblings.contains_key(sender) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("unknown sender `{sender}`: not in the routes file"),
        ));
    }
    // Over TLS the client certificate must be the one pinned for the named sender.
    if s.routes.tls.is_some() {
        let pinned = s.pins.get(sender).map(Vec::as_slice).unwrap_or_default();
        if !peer
            .fingerprint
            .as_ref()
            .is_some_and(|f| pinned.contains(f))
        {
            let why = format!("the client certificate is not the one pinned for `{sender}`");
            return Err((StatusCode::FORBIDDEN, why));
        }
    }
    Ok(())
}

/// Whether `name` is a plain part file name.
pub(super) fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME
        && name.ends_with(".msp")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn upload_path(s: &Shared, name: &str) -> PathBuf {
    s.paths.incoming().join(format!(".{name}.upload"))
}

/// Removes uploads that no sender has continued for longer than the longest expiry of the
/// routes file (their sender gave up; the packets are resent by later exports). Run at start.
pub fn remove_stale_uploads(s: &Shared) {
    let longest = s.routes.siblings.values().map(|r| r.expiry).max();
    let Some(longest) = longest else { return };
    let Ok(rd) = std::fs::read_dir(s.paths.incoming()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let age = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        let upload = name.starts_with('.') && name.ends_with(".upload");
        if upload && age.is_some_and(|a| a > longest) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(file = %name, "removed an upload abandoned past the longest expiry")
                }
                Err(err) => {
                    tracing::warn!(file = %name, error = %err, "cannot remove an abandoned upload")
                }
            }
        }
    }
}

/// The size of `name` if it is kept already (in either bay).
pub(super) fn kept_size(s: &Shared, name: &str) -> Option<u64> {
    [s.paths.incoming(), s.paths.outgoing()]
        .iter()
        .find_map(|d| std::fs::metadata(d.join(name)).ok().map(|m| m.len()))
}

async fn progress(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(name): UrlPath<String>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&s, &h, &peer) {
        return r;
    }
    if !valid_name(&name) {
        return refuse(StatusCode::BAD_REQUEST, "not a packet file name");
    }
    match kept_size(&s, &name) {
        Some(n) => answer(StatusCode::OK, n, true),
        None => {
            let have = std::fs::metadata(upload_path(&s, &name)).map(|m| m.len());
            answer(StatusCode::OK, have.unwrap_or(0), false)
        }
    }
}

/// Marks an upload as running; removed when dropped.
struct Uploading<'a>(&'a Shared, String);

impl Drop for Uploading<'_> {
    fn drop(&mut self) {
        self.0
            .uploading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

fn answer(code: StatusCode, received: u64, complete: bool) -> Response {
    (code, Json(Progress { received, complete })).into_response()
}

/// Why an upload of `name` (of `total` bytes) is not taken at all, if it is not.
fn inadmissible(s: &Shared, name: &str, total: u64) -> Option<Response> {
    if !valid_name(name) {
        return Some(refuse(StatusCode::BAD_REQUEST, "not a packet file name"));
    }
    let max = s.routes.max_packet_size;
    if total == 0 || total > max {
        let why = format!("a part of {total} bytes is over this site's max_packet_size of {max}");
        return Some(refuse(StatusCode::PAYLOAD_TOO_LARGE, why));
    }
    None
}

async fn upload(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(name): UrlPath<String>,
    Query(at): Query<UploadAt>,
    h: HeaderMap,
    body: Body,
) -> Response {
    if let Some(r) = unauthorized(&s, &h, &peer).or_else(|| inadmissible(&s, &name, at.total)) {
        return r;
    }
    let fresh = (s.uploading.lock().unwrap_or_else(|p| p.into_inner())).insert(name.clone());
    if !fresh {
        let why = "this part is being received on another connection";
        return refuse(StatusCode::CONFLICT, why);
    }
    let _guard = Uploading(&s, name.clone());
    if let Some(n) = kept_size(&s, &name) {
        return answer(StatusCode::OK, n, true);
    }
    let path = upload_path(&s, &name);
    let mut have = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if have > at.total {
        // Longer than the part now announced: not a prefix of it; start again.
        let _ = std::fs::remove_file(&path);
        have = 0;
    }
    if have != at.offset {
        return answer(StatusCode::CONFLICT, have, false);
    }
    if have > 0 {
        tracing::info!(packet = %name, offset = have, total = at.total, "resuming an upload");
    }
    match append(&path, body, have, at.total).await {
        Ok(got) if got < at.total => answer(StatusCode::ACCEPTED, got, false),
        Ok(got) => {
            tracing::debug!(packet = %name, bytes = got, "all bytes arrived; checking the part");
            let sender = h
                .get(SENDER_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            finish(s.clone(), (name, sender), path, got).await
        }
        Err(e) => {
            tracing::warn!(packet = %name, error = %e, "upload broken off; it resumes on the next attempt");
            refuse(StatusCode::BAD_REQUEST, e)
        }
    }
}

/// Checks and keeps a complete upload (off the async threads: it reads the whole part).
async fn finish(
    s: Arc<Shared>,
    (name, sender): (String, String),
    path: PathBuf,
    got: u64,
) -> Response {
    let (s2, n2) = (s.clone(), name.clone());
    match tokio::task::spawn_blocking(move || keep(&s2, &n2, &path)).await {
        Ok(Ok(bay)) => {
            tracing::info!(packet = %name, bytes = got, bay, "received");
            s.wake();
            s.wake_shippers();
            answer(StatusCode::CREATED, got, true)
        }
        Ok(Err(why)) => {
            tracing::warn!(packet = %name, reason = %why, "refused a pushed packet");
            // The pusher is authenticated and named in the routes file: its name is safe.
            let rec = crate::history::Record::now(
                crate::history::Direction::In,
                Some(&sender),
                &name,
                got,
                crate::history::Outcome::Refused,
                Some(&format!("refused at the door: {why}")),
            );
            crate::history::record(&s.paths.dir, rec);
            refuse(StatusCode::UNPROCESSABLE_ENTITY, why)
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Appends `body` to `path` (which holds `have` bytes), never past `total`; returns the size
/// reached. What arrived before a broken connection is kept (synced) for the next attempt.
async fn append(path: &Path, body: Body, have: u64, total: u64) -> anyhow::Result<u64> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Large writes: each write of a tokio file is a trip to the blocking pool.
    let mut f = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut size = have;
    let mut body = body;
    let res: anyhow::Result<()> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| anyhow::anyhow!("the connection broke: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if size + data.len() as u64 > total {
                anyhow::bail!("the body is longer than the announced {total} bytes");
            }
            f.write_all(&data).await?;
            size += data.len() as u64;
        }
        Ok(())
    }
    .await;
    f.flush().await?;
    f.get_ref().sync_data().await?;
    res.map(|()| size)
}

/// Checks a complete upload and moves it into the bay it belongs to; the reason when refused
/// (the upload is removed then: the sender's next export carries what it held).
pub(super) fn keep(s: &Shared, name: &str, upload: &Path) -> Result<&'static str, String> {
    let res = check(s, upload);
    let bay = match res {
        Ok(bay) => bay,
        Err(why) => {
            let _ = std::fs::remove_file(upload);
            return Err(why);
        }
    };
    let (dir, label) = match bay {
        Bay::Incoming => (s.paths.incoming(), "incoming"),
        Bay::Forward => (s.paths.outgoing(), "outgoing (forwarded)"),
    };
    let _ = std::fs::create_dir_all(&dir);
    std::fs::rename(upload, dir.join(name)).map_err(|e| format!("cannot keep it: {e}"))?;
    let _ = crate::site::sync_dir(&dir);
    Ok(label)
}

enum Bay {
    Incoming,
    Forward,
}

/// Reads the part through and checks family, sender (a replica the store knows, not this one)
/// and target.
fn check(s: &Shared, upload: &Path) -> Result<Bay, String> {
    let r = msite_packet::open(upload).map_err(|e| format!("not a packet: {e}"))?;
    let h = r.header().clone();
    drop(r);
    msite_packet::summarize(upload).map_err(|e| format!("damaged packet: {e}"))?;
    if h.family.0 != s.family {
        return Err("the packet belongs to another family".into());
    }
    if s.name_of(&h.sender.0).is_none() {
        let id = h.sender.to_hex();
        return Err(format!(
            "unknown sender {id}: this replica does not know it"
        ));
    }
    // The pusher is authenticated and in the routes file; the packet's own sender may be any
    // other replica of the family (a hub relays for replicas this site has no route to).
    if h.sender.0 == s.me.0 {
        return Err("the packet was sent by this replica itself".into());
    }
    if h.targets.iter().any(|t| t.replica.0 == s.me.0) {
        return Ok(Bay::Incoming);
    }
    for t in &h.targets {
        if let Some(n) = s.name_of(&t.replica.0) {
            if s.routes.siblings.contains_key(&n) {
                return Ok(Bay::Forward);
            }
        }
    }
    Err("the packet is addressed neither to this replica nor to a sibling it routes to".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_packet_file_names_are_taken() {
        for ok in ["sync_a_to_b_1_0.msp", "x.p1of2.msp", "A-b.c.msp"] {
            assert!(super::valid_name(ok), "{ok}");
        }
        let long = format!("{}.msp", "a".repeat(200));
        for bad in [
            "../x.msp",
            ".hidden.msp",
            "a/b.msp",
            "x.msp.tmp",
            "x y.msp",
            "",
            &long,
            "x\nmsp",
        ] {
            assert!(!super::valid_name(bad), "{bad:?}");
        }
    }
}
