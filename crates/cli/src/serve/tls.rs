//! TLS for `msite serve`: every site has its own self-signed certificate (`msite serve
//! --new-cert`), and each site's routes file pins the certificates of its siblings. Both ends
//! authenticate: the pusher checks that the receiver shows exactly the pinned certificate of the
//! sibling it addresses (that certificate is the only root it trusts for the connection), and
//! the receiver accepts a connection only from a client certificate pinned for one of its
//! siblings. rustls with ring as the only crypto provider.
//!
//! Rules kept: a pinned certificate is trusted only as itself (no other certificate chains to a
//! self-signed leaf); a site with `tls_cert` listens with TLS only; handshakes run side by side
//! (at most [`MAX_HANDSHAKES`] at once), so a client that stalls its handshake holds up no other
//! connection, and one that fails or outlasts `handshake_timeout` is dropped alone.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::routes::Routes;

/// Where `--new-cert` writes, in the site directory.
pub const CERT_FILE: &str = "tls/site.pem";
/// The private key beside it (mode 0600).
pub const KEY_FILE: &str = "tls/site.key";

/// The most TLS handshakes in progress at once; further connections wait in the kernel's
/// accept queue until one ends.
pub const MAX_HANDSHAKES: usize = 64;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 fingerprint of a certificate, as `sha256:` and 64 hex digits.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex_of(&sha2::Sha256::digest(der)))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes this site's certificate and key for the host names and addresses `names`; returns
/// the certificate's path and fingerprint. Refuses to overwrite an existing one.
pub fn new_cert(site: &Path, names: &[String]) -> anyhow::Result<(std::path::PathBuf, String)> {
    let (cert_path, key_path) = (site.join(CERT_FILE), site.join(KEY_FILE));
    if cert_path.exists() || key_path.exists() {
        bail!(
            "{} already exists; remove it (and tell the siblings the new fingerprint) to make another",
            cert_path.display()
        );
    }
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .context("a --name is not a host name or an address")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("msite site {}", names.join(" ")),
    );
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2200, 1, 1);
    let key = rcgen::KeyPair::generate().context("cannot make a key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot make the certificate")?;
    std::fs::create_dir_all(cert_path.parent().expect("tls/"))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    Ok((cert_path, fingerprint(cert.der())))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::File::options();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut f, bytes)?;
    Ok(())
}

/// The certificates in the PEM file `path`.
pub fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read a certificate from {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| anyhow::anyhow!("cannot read the private key {}: {e}", path.display()))
}

/// The server side: this site's certificate, client certificates pinned to the siblings'.
pub fn acceptor(routes: &Routes) -> anyhow::Result<Option<TlsAcceptor>> {
    let Some((cert, key_path)) = &routes.tls else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for (name, r) in &routes.siblings {
        if let Some(c) = &r.cert {
            for der in certs(c)? {
                roots
                    .add(der)
                    .with_context(|| format!("the pinned certificate of {name} is not usable"))?;
            }
        }
    }
    if roots.is_empty() {
        bail!("[serve] tls_cert is set but no sibling has a pinned `cert`: nobody could push here");
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .context("cannot check client certificates")?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key(key_path)?)
        .context("this site's certificate and key do not fit together")?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// The client side towards a sibling whose certificate is pinned in `pinned`: that certificate
/// is the only root, and this site's certificate is shown as the client's.
pub fn agent(routes: &Routes, pinned: Option<&Path>) -> anyhow::Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(provider());
    if let Some(p) = pinned {
        let roots: Vec<ureq::tls::Certificate<'static>> = certs(p)?
            .into_iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
    }
    if let Some((cert, key_path)) = &routes.tls {
        let chain: Vec<ureq::tls::Certificate<'static>> = certs(cert)?
            .into_iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let pem = std::fs::read(key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        let k = ureq::tls::PrivateKey::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", key_path.display()))?;
        tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, k)));
    }
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(300)))
        .tls_config(tls.build())
        .build()
        .into())
}

/// A TCP listener whose connections are TLS: what `axum::serve` is given on a TLS site. Each
/// accepted connection's handshake runs as a task of its own; `accept` hands axum whichever
/// handshake completes first.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    timeout: Duration,
    handshakes: tokio::task::JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Connections of `tcp` through `acceptor`, each handshake given at most `timeout`.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor, timeout: Duration) -> Self {
        TlsListener {
            tcp,
            acceptor,
            timeout,
            handshakes: tokio::task::JoinSet::new(),
        }
    }

    /// Starts the handshake of a new connection.
    fn start(&mut self, tcp: TcpStream, addr: SocketAddr) {
        let (acceptor, timeout) = (self.acceptor.clone(), self.timeout);
        self.handshakes.spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some((tls, addr)),
                Ok(Err(e)) => {
                    tracing::warn!(peer = %addr, error = %e, "TLS handshake refused");
                    None
                }
                Err(_) => {
                    tracing::warn!(peer = %addr, "TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((tcp, addr)) => self.start(tcp, addr),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Who is on the other end of a connection: the fingerprint of its client certificate (TLS),
/// or nothing (plain HTTP).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// `sha256:…` of the client certificate.
    pub fingerprint: Option<String>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let (_, conn) = stream.io().get_ref();
        let fingerprint = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| fingerprint(c.as_ref()));
        Peer { fingerprint }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(_: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Peer::default()
    }
}

/// The fingerprints of the certificates pinned for each sibling.
pub fn pins(routes: &Routes) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
    let mut out = std::collections::BTreeMap::new();
    for (name, r) in &routes.siblings {
        if let Some(c) = &r.cert {
            let fps = certs(c)?.iter().map(|d| fingerprint(d.as_ref())).collect();
            out.insert(name.clone(), fps);
        }
    }
    Ok(out)
}
