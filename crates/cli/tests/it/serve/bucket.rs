//! The S3 route against a real S3-compatible server: `moto_server` (PyPI `moto[server]`,
//! installed by `cargo xtask test`), started on a loopback port by each test and stopped when
//! its [`Moto`] is dropped. Sites ship into the bucket and take their own prefix out of it,
//! from the command line (`export --ship`, `serve --once`) and as daemons.

use std::process::{Child, Command, Stdio};

use super::{converged, free_port, noise, wait_for, Daemon, PAUSE, POLLS};
use crate::{packets_in, Lab};

const BUCKET: &str = "msite-family";

/// A running moto_server, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts moto_server on a free loopback port and makes the test bucket.
    fn start(lab: &Lab) -> Moto {
        let python = std::env::var("MSITE_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = free_port();
        let log = std::fs::File::create(lab.path("moto.log")).expect("moto log");
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{python} -m moto.server`: {e}"));
        let moto = Moto { child, port };
        for _ in 0..POLLS {
            if ureq::put(&moto.url(BUCKET)).send_empty().is_ok() {
                return moto;
            }
            std::thread::sleep(PAUSE);
        }
        let log = std::fs::read_to_string(lab.path("moto.log")).unwrap_or_default();
        panic!(
            "moto_server did not answer on port {port}; it is installed by `cargo xtask test` \
             (`{python} -m pip install 'moto[server]'`); its log:\n{log}"
        );
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// The keys under `prefix` in the test bucket.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let url = self.url(&format!("{BUCKET}?list-type=2&prefix={prefix}"));
        let mut resp = ureq::get(&url).call().expect("list the bucket");
        let xml = resp.body_mut().read_to_string().expect("listing");
        xml.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// Puts an object of the operator's (or an intruder's) making.
    fn put(&self, key: &str, body: &[u8]) {
        ureq::put(&self.url(&format!("{BUCKET}/{key}")))
            .send(body)
            .expect("put an object");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// boston and sanfran, each shipping to the other through the bucket's `bay/` prefix.
fn two_sites_on_a_bucket(moto: &Moto, extra: &str) -> Lab {
    let mut lab = Lab::new();
    lab.envs = vec![
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ];
    lab.init("boston", "proj");
    lab.mkreplica("boston", "sanfran");
    for (site, other) in [("boston", "sanfran"), ("sanfran", "boston")] {
        let text = format!(
            "[serve]\nexport_every = \"2s\"\nretry_max = \"2s\"\n{extra}\n\
             [s3]\nendpoint = \"http://127.0.0.1:{port}\"\nallow_http = true\n\
             inbox = \"s3://{BUCKET}/bay\"\n\
             [sibling.{other}]\ns3 = \"s3://{BUCKET}/bay\"\n",
            port = moto.port
        );
        std::fs::write(lab.path(&format!("{site}/routes.toml")), text).expect("routes");
    }
    lab
}

#[test]
fn a_bucket_carries_packets_and_hostile_objects_stop_nothing() {
    let probe = Lab::new();
    let moto = Moto::start(&probe);
    let lab = two_sites_on_a_bucket(&moto, "max_packet_size = \"1M\"");
    lab.checkin("boston", "f", "one\n");
    let out = lab.export_with("boston", "sanfran", &["--ship"]);
    assert!(out.contains("Shipped sync_boston_to_sanfran_"), "{out}");
    assert!(packets_in(&lab.path("boston/bays/outgoing")).is_empty());
    let queued = moto.keys("bay/sanfran/");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(queued[0].starts_with("bay/sanfran/sync_boston_to_sanfran_"));

    // Beside the real part: damaged bytes under a packet name, an object too large for this
    // site, and an object whose name is not a packet part's.
    moto.put(
        "bay/sanfran/forged_1_0.msp",
        b"MSITE but not really a packet",
    );
    moto.put("bay/sanfran/huge_1_0.msp", &noise(1_200_000, 7));
    moto.put("bay/sanfran/notes.txt", b"an operator's notes");
    let out = lab.run(&["-C", "sanfran", "serve", "--once"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "refusals exit 1: {stdout}");
    assert!(stdout.contains("Took sync_boston_to_sanfran_"), "{stdout}");
    assert!(
        stdout.contains("Refused forged_1_0.msp from the bucket: not a packet"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "Refused huge_1_0.msp from the bucket: 1200000 bytes, more than max_packet_size"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("1 imported"), "{stdout}");
    assert_eq!(lab.ok(&["-C", "sanfran", "cat", "f"]), "one\n");
    assert_eq!(
        moto.keys("bay/sanfran/"),
        vec!["bay/sanfran/notes.txt".to_string()],
        "taken and refused parts are deleted; what is not a part is left alone"
    );
    let left: Vec<_> = std::fs::read_dir(lab.path("sanfran/bays/incoming"))
        .expect("bay")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "no download left behind: {left:?}");

    // And back: sanfran's acknowledgement reaches boston the same way.
    let out = lab.ok(&["-C", "boston", "serve", "--once"]);
    assert!(out.contains("Took sync_sanfran_to_boston_"), "{out}");
    assert_eq!(lab.digest("boston"), lab.digest("sanfran"));
}

#[test]
fn two_daemons_converge_through_a_bucket_with_a_multipart_part() {
    let probe = Lab::new();
    let moto = Moto::start(&probe);
    let lab = two_sites_on_a_bucket(&moto, "");
    let boston = Daemon::start(&lab, "boston", "boston.log");
    let sanfran = Daemon::start(&lab, "sanfran", "sanfran.log");
    // 12 MB of incompressible content: its part goes up as a multipart upload.
    let big = noise(12 << 20, 3);
    std::fs::write(lab.path("big.bin"), &big).expect("write");
    super::ok_soon(&lab, &["-C", "boston", "checkin", "big.bin", "big.bin"]);
    super::ok_soon(&lab, &["-C", "sanfran", "mkbrtype", "dev"]);
    wait_for("both changes everywhere", &[&boston, &sanfran], || {
        converged(&lab, &["boston", "sanfran"])
            && lab.run(&["-C", "sanfran", "cat", "big.bin"]).stdout.len() == big.len()
    });
    let got = lab.run(&["-C", "sanfran", "cat", "big.bin"]).stdout;
    assert!(got == big, "the multipart part arrived byte for byte");
    let requests = std::fs::read_to_string(probe.path("moto.log")).unwrap_or_default();
    assert!(
        requests.contains("?uploads"),
        "the large part went up as a multipart upload:\n{requests}"
    );
    assert!(
        boston.log().contains("shipped") && sanfran.log().contains("received from the bucket"),
        "{}\n-----\n{}",
        boston.log(),
        sanfran.log()
    );
    assert_eq!(boston.terminate(), Some(0));
    assert_eq!(sanfran.terminate(), Some(0));
}
