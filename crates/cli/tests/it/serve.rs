//! `msite serve` with real processes: daemons on loopback addresses push packets to each other
//! and import them with no operator step. Every daemon is a [`Daemon`], killed and reaped when
//! dropped, so a failing assertion leaves no process behind; every wait is a bounded loop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{packets_in, Lab};

#[cfg(feature = "s3")]
mod bucket;

/// The most polls of one wait (250 ms apart: generous, the machine may be loaded).
const POLLS: usize = 1200;
/// The pause between two polls (the polls open stores too: leave the daemons room).
const PAUSE: Duration = Duration::from_millis(250);

pub(crate) const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A running `msite serve`, its log in `LOGNAME.log` of the lab.
pub(crate) struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub(crate) fn start(lab: &Lab, site: &str, log: &str) -> Daemon {
        let log = lab.path(log);
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(assert_cmd::cargo::cargo_bin("msite"))
            .current_dir(lab.path(""))
            .args(["-C", site, "serve"])
            .envs(lab.envs.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "msite_cli=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start msite serve");
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code.
    pub(crate) fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        child.wait().expect("wait").code()
    }

    /// SIGKILL, at once.
    fn kill9(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("wait");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback port nobody listens on now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Writes `site`'s routes file: listening on `port`, with `siblings` as (name, TOML value).
pub(crate) fn routes(
    lab: &Lab,
    site: &str,
    port: Option<u16>,
    extra: &str,
    siblings: &[(&str, String)],
) {
    std::fs::write(lab.path("token"), TOKEN).expect("token");
    let listen = port
        .map(|p| format!("listen = [\"127.0.0.1:{p}\"]\n"))
        .unwrap_or_default();
    let mut text = format!(
        "[serve]\n{listen}token_file = \"../token\"\nexport_every = \"2s\"\nretry_max = \"2s\"\n{extra}\n"
    );
    for (name, way) in siblings {
        text.push_str(&format!("[sibling.{name}]\n{way}\n"));
    }
    std::fs::write(lab.path(&format!("{site}/routes.toml")), text).expect("routes");
}

pub(crate) fn url(port: u16) -> String {
    format!("url = \"http://127.0.0.1:{port}\"")
}

/// Routes between boston and sanfran over HTTP, each listening on a free port with `extra`
/// in its routes file.
fn http_pair(lab: &Lab, extra: &str) {
    let (pb, ps) = (free_port(), free_port());
    routes(lab, "boston", Some(pb), extra, &[("sanfran", url(ps))]);
    routes(lab, "sanfran", Some(ps), extra, &[("boston", url(pb))]);
}

/// Polls `cond` until it holds; panics with `what` and the daemons' logs otherwise.
pub(crate) fn wait_for(what: &str, daemons: &[&Daemon], mut cond: impl FnMut() -> bool) {
    for _ in 0..POLLS {
        if cond() {
            return;
        }
        std::thread::sleep(PAUSE);
    }
    let logs: Vec<String> = daemons.iter().map(|d| d.log()).collect();
    panic!(
        "gave up waiting for {what}; logs:\n{}",
        logs.join("\n-----\n")
    );
}

/// The digest of `site`, or `None` while a daemon holds its store.
fn digest(lab: &Lab, site: &str) -> Option<String> {
    let out = lab.run(&["-C", site, "digest"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `msite ARGS` retried while a daemon holds the store; its stdout.
pub(crate) fn ok_soon(lab: &Lab, args: &[&str]) -> String {
    for _ in 0..POLLS {
        let out = lab.run(args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("in use by another process"),
            "msite {}: {err}",
            args.join(" ")
        );
        std::thread::sleep(PAUSE);
    }
    panic!("msite {} never got the store", args.join(" "));
}

pub(crate) fn converged(lab: &Lab, sites: &[&str]) -> bool {
    let d: Vec<Option<String>> = sites.iter().map(|s| digest(lab, s)).collect();
    d[0].is_some() && d.iter().all(|x| *x == d[0])
}

/// A hub family whose spokes reach each other through boston; returns the ports.
pub(crate) fn hub_with_routes(lab: &Lab) -> [u16; 3] {
    let ports = [free_port(), free_port(), free_port()];
    routes(
        lab,
        "boston",
        Some(ports[0]),
        "",
        &[("sanfran", url(ports[1])), ("bangalore", url(ports[2]))],
    );
    routes(
        lab,
        "sanfran",
        Some(ports[1]),
        "",
        &[
            ("boston", url(ports[0])),
            ("bangalore", "via = \"boston\"".into()),
        ],
    );
    routes(
        lab,
        "bangalore",
        Some(ports[2]),
        "",
        &[("boston", url(ports[0]))],
    );
    ports
}

#[test]
fn three_daemons_in_a_hub_converge_with_no_operator_step() {
    let lab = Lab::hub(None);
    hub_with_routes(&lab);
    let d: Vec<Daemon> = ["boston", "sanfran", "bangalore"]
        .iter()
        .map(|s| Daemon::start(&lab, s, &format!("{s}.log")))
        .collect();
    wait_for(
        "the daemons to start",
        &d.iter().collect::<Vec<_>>(),
        || d.iter().all(|x| x.log().contains("msite serve started")),
    );
    // One daemon per site.
    let err = lab.fails(1, &["-C", "sanfran", "serve"]);
    assert!(err.contains("another `msite serve` runs"), "{err}");
    // Changes at each spoke, made while the daemons run.
    lab.write("a.c", "int sanfran;\n");
    lab.write("b.c", "int bangalore;\n");
    ok_soon(&lab, &["-C", "sanfran", "mkbrtype", "sf_dev"]);
    ok_soon(&lab, &["-C", "sanfran", "checkin", "src/a.c", "a.c"]);
    ok_soon(&lab, &["-C", "bangalore", "checkin", "src/b.c", "b.c"]);
    let all = ["boston", "sanfran", "bangalore"];
    let refs: Vec<&Daemon> = d.iter().collect();
    wait_for("the three sites to converge", &refs, || {
        converged(&lab, &all)
            && all.iter().all(|s| {
                let o = lab.run(&["-C", s, "cat", "src/a.c"]);
                let p = lab.run(&["-C", s, "cat", "src/b.c"]);
                o.stdout == b"int sanfran;\n" && p.stdout == b"int bangalore;\n"
            })
    });
    // sanfran's route to bangalore goes through boston, which forwarded its packets, and
    // bangalore took them though it has no route to sanfran: every outgoing bay drains.
    assert!(
        d[0].log().contains("outgoing (forwarded)"),
        "{}",
        d[0].log()
    );
    wait_for("every outgoing bay to drain", &refs, || {
        all.iter()
            .all(|s| packets_in(&lab.path(&format!("{s}/bays/outgoing"))).is_empty())
    });
    for (s, x) in all.iter().zip(d) {
        let log = x.log.clone();
        assert_eq!(x.terminate(), Some(0), "{s} stops cleanly on SIGTERM");
        let text = std::fs::read_to_string(log).expect("log");
        assert!(text.contains("msite serve stopped"), "{text}");
    }
    for s in all {
        assert!(packets_in(&lab.path(&format!("{s}/bays/refused"))).is_empty());
    }
}

#[test]
fn a_sibling_down_for_a_while_gets_everything_when_it_comes_back() {
    let lab = Lab::pair();
    // Parts of at most 64 KiB: a packet travels in several parts, imported once all are in.
    http_pair(&lab, "part_size = \"64K\"");
    let boston = Daemon::start(&lab, "boston", "boston.log");
    let big = noise(200 << 10, 3);
    std::fs::write(lab.path("big"), &big).expect("write");
    ok_soon(&lab, &["-C", "boston", "checkin", "big", "big"]);
    for i in 0..3 {
        lab.write(&format!("f{i}"), &format!("version {i}\n"));
        ok_soon(
            &lab,
            &[
                "-C",
                "boston",
                "checkin",
                &format!("f{i}"),
                &format!("f{i}"),
            ],
        );
    }
    wait_for("failed shipments to sanfran", &[&boston], || {
        boston.log().matches("shipment failed").count() >= 3
    });
    assert!(!packets_in(&lab.path("boston/bays/outgoing")).is_empty());
    let sanfran = Daemon::start(&lab, "sanfran", "sanfran.log");
    wait_for("sanfran to catch up", &[&boston, &sanfran], || {
        converged(&lab, &["boston", "sanfran"])
            && packets_in(&lab.path("boston/bays/outgoing")).is_empty()
    });
    for i in 0..3 {
        let out = ok_soon(&lab, &["-C", "sanfran", "cat", &format!("f{i}")]);
        assert_eq!(out, format!("version {i}\n"));
    }
    assert!(lab.run(&["-C", "sanfran", "cat", "big"]).stdout == big);
    assert!(
        boston.log().contains(".p1of"),
        "the packet went in parts: {}",
        boston.log()
    );
}

/// Bytes that zstd cannot shrink (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    crate::xorshift_words(&mut seed, len)
}

/// The size of the upload of a part in `site`'s incoming bay, while one is under way.
fn upload_size(lab: &Lab, site: &str) -> Option<u64> {
    let dir = lab.path(&format!("{site}/bays/incoming"));
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        (n.starts_with('.') && n.ends_with(".upload"))
            .then(|| e.metadata().map(|m| m.len()).unwrap_or(0))
    })
}

#[test]
fn a_daemon_killed_mid_upload_resumes_and_applies_once() {
    let lab = Lab::pair();
    // Slow shipping, so that the kills land in the middle of the upload.
    http_pair(&lab, "ship_rate = \"1M\"");
    let content = noise(6 << 20, 7);
    std::fs::write(lab.path("big.bin"), &content).expect("write");
    lab.ok(&["-C", "boston", "checkin", "big.bin", "big.bin"]);
    let mut sanfran = Daemon::start(&lab, "sanfran", "sanfran-1.log");
    let mut boston = Daemon::start(&lab, "boston", "boston-1.log");
    // The receiver dies first, then the sender, each with part of the packet received.
    let mut sizes = Vec::new();
    for round in 0..2 {
        let before = sizes.last().copied().unwrap_or(0);
        wait_for("part of the upload to arrive", &[&boston, &sanfran], || {
            upload_size(&lab, "sanfran").is_some_and(|n| n > before + (1 << 20))
        });
        if round == 0 {
            sanfran.kill9();
            sanfran = Daemon::start(&lab, "sanfran", "sanfran-2.log");
        } else {
            boston.kill9();
            boston = Daemon::start(&lab, "boston", "boston-2.log");
        }
        sizes.push(upload_size(&lab, "sanfran").expect("the upload is kept"));
    }
    assert!(sizes[0] < sizes[1], "{sizes:?}");
    wait_for(
        "sanfran to hold the big version",
        &[&boston, &sanfran],
        || converged(&lab, &["boston", "sanfran"]),
    );
    let out = lab
        .cmd()
        .args(["-C", "sanfran", "cat", "big.bin"])
        .output()
        .expect("cat");
    assert!(out.stdout == content, "the content arrived whole");
    let hist = ok_soon(&lab, &["-C", "sanfran", "lshistory", "big.bin"]);
    assert_eq!(hist.matches("big.bin@@").count(), 1, "{hist}");
    // The restarted receiver and the restarted sender both went on where the bytes stopped.
    assert!(
        sanfran.log().contains("resuming an upload"),
        "{}",
        sanfran.log()
    );
    assert!(
        boston.log().contains("resuming a shipment"),
        "{}",
        boston.log()
    );
    assert!(packets_in(&lab.path("sanfran/bays/refused")).is_empty());
}

/// One hostile push: headers, announced size, name, expected status and words.
type Case<'a> = (Vec<(&'a str, &'a str)>, u64, &'a str, u16, &'a str);

fn put(port: u16, name: &str, total: u64, headers: &[(&str, &str)]) -> (u16, String) {
    put_at(port, name, (0, total), b"not a packet", headers)
}

/// `PUT /v1/packets/NAME?offset=&total=` with `body`: the status and the answer's text.
fn put_at(
    port: u16,
    name: &str,
    (offset, total): (u64, u64),
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.put(format!(
        "http://127.0.0.1:{port}/v1/packets/{name}?offset={offset}&total={total}"
    ));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).expect("request");
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), text)
}

#[test]
fn pushes_without_the_token_or_from_strangers_are_refused() {
    let lab = Lab::pair();
    let p = free_port();
    routes(
        &lab,
        "boston",
        Some(p),
        "max_packet_size = \"1M\"",
        &[("sanfran", url(free_port()))],
    );
    let boston = Daemon::start(&lab, "boston", "boston.log");
    wait_for("the daemon to start", &[&boston], || {
        boston.log().contains("msite serve started")
    });
    let family = std::fs::read_to_string(lab.path("boston/site.json")).expect("site.json");
    let family: serde_json::Value = serde_json::from_str(&family).expect("json");
    let fam = family["family_id"].as_str().expect("family id");
    let bearer = format!("Bearer {TOKEN}");
    let good = [
        ("authorization", bearer.as_str()),
        ("x-msite-family", fam),
        ("x-msite-sender", "sanfran"),
    ];
    // (headers, announced size, name, expected status, expected words)
    let cases: Vec<Case<'_>> = vec![
        (vec![good[1], good[2]], 12, "a.msp", 401, "token"),
        (
            vec![
                ("authorization", "Bearer wrong-token-0000000"),
                good[1],
                good[2],
            ],
            12,
            "a.msp",
            401,
            "token",
        ),
        (
            vec![good[0], ("x-msite-family", "00"), good[2]],
            12,
            "a.msp",
            403,
            "unknown family",
        ),
        (
            vec![good[0], good[1], ("x-msite-sender", "mallory")],
            12,
            "a.msp",
            403,
            "unknown sender",
        ),
        (good.to_vec(), 2 << 20, "a.msp", 413, "max_packet_size"),
        (
            good.to_vec(),
            12,
            "..%2Fescape.msp",
            400,
            "not a packet file name",
        ),
        (good.to_vec(), 12, "a.msp", 422, "not a packet"),
    ];
    for (headers, total, name, code, why) in cases {
        let (got, text) = put(p, name, total, &headers);
        assert_eq!(
            (got, text.contains(why)),
            (code, true),
            "{name} {headers:?}: {text}"
        );
    }
    // The resume protocol: a short body is kept and answered with how far it got; a PUT at
    // the wrong offset is told where the receiver is; the rest completes the part, which is
    // then checked (and refused: these bytes are no packet).
    let text = b"not a packet";
    let at = |o: u64, body: &[u8]| put_at(p, "b.msp", (o, 12), body, &good);
    assert_eq!(
        at(0, &text[..5]),
        (202, r#"{"received":5,"complete":false}"#.into())
    );
    assert_eq!(
        at(0, &text[..5]),
        (409, r#"{"received":5,"complete":false}"#.into())
    );
    let (code, why) = at(5, &text[5..]);
    assert_eq!((code, why.contains("not a packet")), (422, true), "{why}");
    // Nothing was kept: no file in the bay, no upload left over from the refused one.
    let left: Vec<_> = std::fs::read_dir(lab.path("boston/bays/incoming"))
        .expect("bay")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Sets a file's modification time `hours` back (`touch -d`).
fn age(path: &Path, hours: u32) {
    let ok = Command::new("touch")
        .args(["-d", &format!("{hours} hours ago")])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "touch -d");
}

#[test]
fn export_ship_and_serve_once_carry_packets_for_cron_users() {
    let lab = Lab::pair();
    // boston ships into sanfran's incoming bay (a mounted share); sanfran runs from cron.
    routes(
        &lab,
        "boston",
        None,
        "",
        &[("sanfran", "dir = \"../sanfran/bays/incoming\"".into())],
    );
    routes(
        &lab,
        "sanfran",
        None,
        "",
        &[("boston", "dir = \"../boston/bays/incoming\"".into())],
    );
    lab.checkin("boston", "f", "one\n");
    let out = lab.export_with("boston", "sanfran", &["--ship"]);
    assert!(out.contains("Shipped sync_boston_to_sanfran_"), "{out}");
    assert!(packets_in(&lab.path("boston/bays/outgoing")).is_empty());
    let out = lab.ok(&["-C", "sanfran", "serve", "--once"]);
    assert!(
        out.contains("1 imported") && out.contains("0 undeliverable"),
        "{out}"
    );
    assert_eq!(lab.ok(&["-C", "sanfran", "cat", "f"]), "one\n");
    lab.ok(&["-C", "boston", "serve", "--once"]);
    assert_eq!(lab.digest("boston"), lab.digest("sanfran"));
    // A sibling that cannot be reached: the packet is kept, reported past its expiry, exit 4.
    routes(
        &lab,
        "boston",
        None,
        "expiry = \"1h\"",
        &[("sanfran", url(free_port()))],
    );
    lab.checkin("boston", "g", "two\n");
    let err = lab.fails(1, &["-C", "boston", "serve", "--once"]);
    assert!(err.contains("1 shipment failed"), "{err}");
    let queued = packets_in(&lab.path("boston/bays/outgoing"));
    assert_eq!(queued.len(), 1, "the packet stays queued");
    age(&queued[0], 2);
    let err = lab.fails(4, &["-C", "boston", "serve", "--once"]);
    assert!(
        err.contains("could not be delivered within the expiry"),
        "{err}"
    );
    assert_eq!(
        packets_in(&lab.path("boston/bays/outgoing")),
        queued,
        "kept, never dropped"
    );
}

#[test]
fn a_spoke_restored_from_backup_is_unlocked_by_the_daemons() {
    let lab = Lab::hub(None);
    hub_with_routes(&lab);
    let all = ["boston", "sanfran", "bangalore"];
    let mut d: Vec<Daemon> = all
        .iter()
        .map(|s| Daemon::start(&lab, s, &format!("{s}-1.log")))
        .collect();
    ok_soon(&lab, &["-C", "sanfran", "mkbrtype", "sf"]);
    ok_soon(&lab, &["-C", "sanfran", "backup", "bk"]);
    // A change made after the backup, which only the siblings will hold when sanfran is lost.
    lab.write("n", "after backup\n");
    ok_soon(
        &lab,
        &["-C", "sanfran", "checkin", "n", "n", "--branch", "sf"],
    );
    let refs: Vec<&Daemon> = d.iter().collect();
    wait_for("the change to reach boston and bangalore", &refs, || {
        converged(&lab, &all)
    });
    // sanfran loses its store: its daemon is stopped, the backup restored.
    let sanfran = d.remove(1);
    assert_eq!(sanfran.terminate(), Some(0));
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("rm store");
    lab.ok(&["restore", "bk", "sanfran"]);
    lab.ok(&["-C", "sanfran", "restorereplica"]);
    d.insert(1, Daemon::start(&lab, "sanfran", "sanfran-2.log"));
    let refs: Vec<&Daemon> = d.iter().collect();
    wait_for("sanfran to be unlocked after restoration", &refs, || {
        d[1].log()
            .contains("Database sanfran is unlocked after restoration.")
    });
    wait_for("the family to converge again", &refs, || {
        converged(&lab, &all)
    });
    assert_eq!(
        ok_soon(&lab, &["-C", "sanfran", "cat", "n@@sf"]),
        "after backup\n"
    );
    // Unlocked: sanfran takes local changes again, and they travel.
    lab.write("m", "new life\n");
    ok_soon(
        &lab,
        &["-C", "sanfran", "checkin", "m", "m", "--branch", "sf"],
    );
    wait_for("the new change to reach bangalore", &refs, || {
        lab.run(&["-C", "bangalore", "cat", "m@@sf"]).stdout == b"new life\n"
    });
}

/// Makes `site`'s TLS certificate for 127.0.0.1; returns its fingerprint line.
fn new_cert(lab: &Lab, site: &str) -> String {
    let out = lab.ok(&["-C", site, "serve", "--new-cert", "--name", "127.0.0.1"]);
    assert!(out.contains("Fingerprint: sha256:"), "{out}");
    out
}

/// The HTTPS agent of `site` (its certificate as the client's) pinning `pinned`'s certificate.
fn agent_of(lab: &Lab, site: &str, pinned: &str) -> ureq::Agent {
    let text = "[serve]\ntls_cert = \"tls/site.pem\"\ntls_key = \"tls/site.key\"\n";
    let path = lab.path(&format!("{site}/routes-probe.toml"));
    let routes = msite_cli::serve::Routes::parse(text, &path).expect("routes");
    let cert = lab.path(&format!("{pinned}/tls/site.pem"));
    msite_cli::serve::tls::agent(&routes, Some(&cert)).expect("agent")
}

#[test]
fn tls_with_pinned_certificates_carries_packets_and_refuses_strangers() {
    let lab = Lab::pair();
    lab.init("mallory", "other");
    lab.init("eve", "other");
    for s in ["boston", "sanfran", "mallory", "eve"] {
        new_cert(&lab, s);
    }
    let err = lab.fails(1, &["-C", "boston", "serve", "--new-cert"]);
    assert!(err.contains("already exists"), "{err}");
    let (pb, ps) = (free_port(), free_port());
    // Handshakes may take a day: a stalled one must not hold up the others (below).
    let tls = "tls_cert = \"tls/site.pem\"\ntls_key = \"tls/site.key\"\nhandshake_timeout = \"1d\"";
    let https = |port: u16, peer: &str| {
        format!("url = \"https://127.0.0.1:{port}\"\ncert = \"../{peer}/tls/site.pem\"")
    };
    routes(
        &lab,
        "boston",
        Some(pb),
        tls,
        &[("sanfran", https(ps, "sanfran"))],
    );
    routes(
        &lab,
        "sanfran",
        Some(ps),
        tls,
        &[("boston", https(pb, "boston"))],
    );
    let boston = Daemon::start(&lab, "boston", "boston.log");
    let sanfran = Daemon::start(&lab, "sanfran", "sanfran.log");
    // Clients that connect and never say a word, open for the whole test: each one's handshake
    // waits its day, and every other connection is served meanwhile.
    let mut stalled = Vec::new();
    for port in [ps, ps, pb] {
        wait_for("the daemon to listen", &[&boston, &sanfran], || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|c| stalled.push(c))
                .is_ok()
        });
    }
    lab.write("f", "over TLS\n");
    ok_soon(&lab, &["-C", "boston", "checkin", "f", "f"]);
    wait_for(
        "sanfran to get the version over TLS",
        &[&boston, &sanfran],
        || lab.run(&["-C", "sanfran", "cat", "f"]).stdout == b"over TLS\n",
    );
    let url = format!("https://127.0.0.1:{ps}/v1/health");
    // boston's own agent reaches sanfran (the check that the probes below can succeed at all).
    let ok = agent_of(&lab, "boston", "sanfran").get(&url).call();
    assert!(ok.is_ok_and(|r| r.status() == 200));
    // A client whose certificate sanfran does not pin is refused in the handshake.
    let stranger = agent_of(&lab, "eve", "sanfran").get(&url).call();
    assert!(stranger.is_err(), "{stranger:?}");
    // A pusher that pins another certificate than the one sanfran shows refuses to talk.
    let wrong_pin = agent_of(&lab, "boston", "mallory").get(&url).call();
    assert!(wrong_pin.is_err(), "{wrong_pin:?}");
    // Plain HTTP to a TLS site gets nowhere.
    let plain = format!("http://127.0.0.1:{ps}/v1/health");
    assert!(agent_of(&lab, "boston", "sanfran")
        .get(&plain)
        .call()
        .is_err());
    assert!(
        sanfran.log().contains("TLS handshake refused"),
        "{}",
        sanfran.log()
    );
    assert_eq!(
        stalled.len(),
        3,
        "the stalled clients stayed connected throughout"
    );
}

#[test]
fn sigterm_during_an_import_leaves_nothing_half_applied() {
    let lab = Lab::pair();
    let content = noise(40 << 20, 11);
    std::fs::write(lab.path("big.bin"), &content).expect("write");
    lab.ok(&["-C", "boston", "checkin", "big.bin", "big.bin"]);
    // The packet arrives by hand (a courier), the daemon imports it.
    let bay = "sanfran/bays/incoming";
    lab.export_to_dir("boston", "sanfran", bay);
    routes(&lab, "sanfran", None, "", &[("boston", url(free_port()))]);
    let sanfran = Daemon::start(&lab, "sanfran", "sanfran-1.log");
    wait_for("the import to start", &[&sanfran], || {
        sanfran.log().contains("importing packet=")
    });
    let log = sanfran.log.clone();
    assert_eq!(sanfran.terminate(), Some(0), "SIGTERM is a clean stop");
    let text = std::fs::read_to_string(log).expect("log");
    assert!(text.contains("msite serve stopped"), "{text}");
    // Whatever the moment, the store is whole, and the packet either applied or still waits.
    lab.ok(&["-C", "sanfran", "check"]);
    let applied = lab.run(&["-C", "sanfran", "cat", "big.bin"]).stdout == content;
    assert_eq!(applied, packets_in(&lab.path(bay)).is_empty(), "{text}");
    let sanfran = Daemon::start(&lab, "sanfran", "sanfran-2.log");
    wait_for("the version at sanfran", &[&sanfran], || {
        lab.run(&["-C", "sanfran", "cat", "big.bin"]).stdout == content
    });
    let hist = ok_soon(&lab, &["-C", "sanfran", "lshistory", "big.bin"]);
    assert_eq!(hist.matches("big.bin@@").count(), 1, "{hist}");
}
