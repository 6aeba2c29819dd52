//! End-to-end tests of the `msite` binary: separate site directories, packets carried between
//! them as files, every check made on what the binary prints and its exit code.
//!
//! Sites are made with the build's default backend; with the `rocks` feature the hub, restore
//! and demo tests also run on RocksDB (`…_on_rocks`). When PostgreSQL is the build's default
//! (`--no-default-features --features postgres`), every lab starts its own scratch server and
//! `msite` makes each new store in a new database there (`MSITE_PG_SERVER`); `postgres.rs`
//! runs the seed's procedure with explicit `--url`s.

mod badinput;
mod bigcontent;
mod forkrepair;
#[cfg(unix)]
mod kill9;
mod operator;
#[cfg(feature = "postgres")]
mod postgres;
mod restore_safety;
mod retire;
mod scrub;
#[cfg(feature = "serve")]
mod serve;
mod status;
mod trust;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use tempfile::TempDir;

/// A family of sites in one temporary directory.
struct Lab {
    root: TempDir,
    backend: Option<&'static str>,
    /// Environment for every msite process of the lab (e.g. an S3 server's credentials).
    envs: Vec<(String, String)>,
    /// The lab's PostgreSQL server, when PostgreSQL is the build's default backend; stopped
    /// when the lab is dropped (declared last: dropped after the sites' processes ended).
    #[cfg(feature = "postgres")]
    server: Option<msite_cli::backend::ScratchServer>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            root: tempfile::tempdir().expect("temp dir"),
            backend: None,
            envs: Vec::new(),
            #[cfg(feature = "postgres")]
            server: (msite_cli::backend::BackendKind::default_kind()
                == Some(msite_cli::backend::BackendKind::Postgres))
            .then(|| {
                msite_cli::backend::ScratchServer::start(msite_cli::backend::ScratchOptions {
                    no_fsync: true,
                    ..Default::default()
                })
                .expect("a scratch PostgreSQL server")
            }),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// `msite` in the lab directory with the lab's environment, as a process to spawn.
    fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("msite"));
        c.current_dir(self.root.path())
            .env_remove("RUST_LOG")
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        #[cfg(feature = "postgres")]
        if let Some(server) = &self.server {
            c.env("MSITE_PG_SERVER", server.server_conninfo());
        }
        c
    }

    /// `msite ARGS…` in the lab directory; must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run msite");
        assert!(
            out.status.success(),
            "msite {} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `msite ARGS…`, whatever happens.
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run msite")
    }

    /// `msite ARGS…`, whatever happens: what it printed, stdout then stderr.
    fn said(&self, args: &[&str]) -> String {
        let out = self.run(args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `msite ARGS…` must fail with `code`; returns stderr (and checks stdout has no panic).
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "msite {}: expected exit code {code}\nstdout:\n{}\nstderr:\n{stderr}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("internal error"),
            "{stderr}"
        );
        stderr
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("msite {} printed no JSON ({e}):\n{text}", args.join(" ")))
    }

    fn init(&self, name: &str, family: &str) {
        self.init_with(name, family, &[]);
    }

    /// `msite init NAME --family FAMILY --replica NAME` with the lab's backend and `extra`.
    fn init_with(&self, name: &str, family: &str, extra: &[&str]) {
        let mut args = vec!["init", name, "--family", family, "--replica", name];
        if let Some(b) = self.backend {
            args.extend(["--backend", b]);
        }
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// A new site's identity file `file` (`msite identity --new`): the recipient and the
    /// signing key it prints, for `mkreplica export --encrypt-to … --key …`.
    fn new_identity(&self, file: &str) -> (String, String) {
        let out = self.ok(&["identity", "--new", file]);
        let mut lines = out.lines().map(|l| l.trim().to_string());
        let recipient = lines.next().expect("a recipient");
        (recipient, lines.next().expect("a signing key"))
    }

    /// Creates replica `name` at `creator` and makes its site (the default: a snapshot
    /// creation packet); checks that the packet says it carries a snapshot.
    fn mkreplica(&self, creator: &str, name: &str) {
        let said = self.mkreplica_with(creator, name, &[]);
        assert!(said.contains("(snapshot, "), "{said}");
    }

    /// Creates replica `name` at `creator` from a history creation packet and makes its site;
    /// checks that the packet says it carries the history.
    fn mkreplica_history(&self, creator: &str, name: &str) {
        let said = self.mkreplica_with(creator, name, &["--history"]);
        assert!(said.contains("(history, "), "{said}");
    }

    /// Creates replica `name` at `creator` with `extra` export options; what the export said.
    fn mkreplica_with(&self, creator: &str, name: &str, extra: &[&str]) -> String {
        // Sealed, as by default: the new site's operator makes an identity file first.
        let id_file = format!("{name}.age");
        let (said, pkt) =
            self.creation_packet(creator, name, &format!("transfer-{name}"), true, extra);
        let mut args = vec![
            "mkreplica",
            "import",
            pkt.as_str(),
            name,
            "--identity",
            &id_file,
        ];
        if let Some(b) = self.backend {
            args.extend(["--backend", b]);
        }
        self.ok(&args);
        said
    }

    /// boston with one sibling, sanfran.
    fn pair() -> Lab {
        let lab = Lab::new();
        lab.init("boston", "proj");
        lab.mkreplica("boston", "sanfran");
        lab
    }

    /// Writes the creation packet of replica `name` at `creator` into `out`, after making the
    /// new site's identity file `NAME.age`: sealed to its recipient, or (`sealed` false) with
    /// `--no-encrypt`; `extra`: more export options. What the export said, and the packet.
    fn creation_packet(
        &self,
        creator: &str,
        name: &str,
        out: &str,
        sealed: bool,
        extra: &[&str],
    ) -> (String, String) {
        let (recipient, key) = self.new_identity(&format!("{name}.age"));
        let seal = match sealed {
            true => vec!["--encrypt-to", recipient.as_str()],
            false => vec!["--no-encrypt"],
        };
        let export = ["-C", creator, "mkreplica", "export", name, "--out", out];
        let said = self.ok(&[&export[..], &seal, &["--key", &key], extra].concat());
        let pkt = packets_in(&self.path(out))
            .pop()
            .expect("a creation packet");
        (said, pkt.to_string_lossy().into_owned())
    }

    /// boston (hub) with spokes sanfran and bangalore.
    fn hub(backend: Option<&'static str>) -> Lab {
        let lab = Lab {
            backend,
            ..Lab::new()
        };
        lab.init("boston", "proj");
        lab.mkreplica("boston", "sanfran");
        lab.mkreplica("boston", "bangalore");
        lab
    }

    /// `syncreplica export` from `from` to `to`, written into `dir`; what it printed.
    fn export_to_dir(&self, from: &str, to: &str, dir: &str) -> String {
        self.export_with(from, to, &["--out", dir])
    }

    /// `syncreplica export --to TO` at `from` with `extra` options; what it printed.
    fn export_with(&self, from: &str, to: &str, extra: &[&str]) -> String {
        let export = ["-C", from, "syncreplica", "export", "--to", to];
        self.ok(&[&export[..], extra].concat())
    }

    /// Exports from `from` to `to` straight into `to`'s incoming bay; returns the files.
    fn send(&self, from: &str, to: &str) -> Vec<PathBuf> {
        self.send_with(from, to, &[])
    }

    /// [`Lab::send`] with `extra` export options.
    fn send_with(&self, from: &str, to: &str, extra: &[&str]) -> Vec<PathBuf> {
        let before = packets_in(&self.path(&format!("{to}/bays/incoming")));
        let bay = format!("{to}/bays/incoming");
        self.export_with(from, to, &[&["--out", bay.as_str()][..], extra].concat());
        packets_in(&self.path(&bay))
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect()
    }

    /// Imports `site`'s incoming bay; exit code 0 or 3 accepted.
    fn import(&self, site: &str) -> String {
        let out = self.run(&["-C", site, "syncreplica", "import"]);
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(3),
            "import at {site} exited {code:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sync rounds through the hub until nothing is left to send.
    fn settle(&self) {
        for _ in 0..8 {
            let mut moved = 0;
            for s in ["sanfran", "bangalore"] {
                moved += self.send(s, "boston").len();
            }
            self.import("boston");
            for s in ["sanfran", "bangalore"] {
                moved += self.send("boston", s).len();
            }
            for s in ["sanfran", "bangalore"] {
                self.import(s);
            }
            if moved == 0 {
                return;
            }
        }
        panic!("the family did not settle in 8 rounds");
    }

    fn digest(&self, site: &str) -> String {
        let d = self.ok(&["-C", site, "digest"]);
        let d = d.trim_end().to_string();
        assert_eq!(
            d.len(),
            64,
            "a digest is 64 hex digits alone on one line: {d:?}"
        );
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
        d
    }

    /// Writes `content` to `rel` in the lab and checks it in at `site` as element `rel`.
    fn checkin(&self, site: &str, rel: &str, content: &str) {
        self.write(rel, content);
        self.ok(&["-C", site, "checkin", rel, rel]);
    }

    fn write(&self, rel: &str, content: &str) -> String {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
        rel.to_string()
    }
}

/// Bytes that zstd cannot shrink: `len` bytes of a xorshift stream that continues from `*x`,
/// eight bytes a step (the same state gives the same bytes).
fn xorshift_words(x: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes that zstd cannot shrink: the low bytes of `len` steps of a xorshift stream from a
/// fixed seed (the same length gives the same bytes).
fn xorshift_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn packets_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "msp"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn hub_family_converges(backend: Option<&'static str>) {
    let lab = Lab::hub(backend);
    // boston imports a tree on main.
    lab.write("tree/src/a.c", "int a;\n");
    lab.write("tree/src/b.c", "int b;\n");
    lab.write("tree/README", "hello\n");
    let out = lab.ok(&["-C", "boston", "import", "tree", "-m", "first"]);
    assert!(out.contains("3 new elements"), "{out}");
    lab.settle();
    // Parallel work on branches each site masters.
    lab.ok(&["-C", "sanfran", "mkbrtype", "sf_dev"]);
    let f = lab.write("w/sf.c", "int a = 1; /* sanfran */\n");
    lab.ok(&[
        "-C", "sanfran", "checkin", "src/a.c", &f, "--branch", "sf_dev", "-m", "sf",
    ]);
    lab.ok(&["-C", "bangalore", "mkbrtype", "bl_dev"]);
    let f = lab.write("w/bl.c", "int b = 2; /* bangalore */\n");
    lab.ok(&[
        "-C",
        "bangalore",
        "checkin",
        "src/b.c",
        &f,
        "--branch",
        "bl_dev",
        "-m",
        "bl",
    ]);
    let f = lab.write("w/bo.c", "int a = 0; /* boston v2 */\n");
    lab.ok(&["-C", "boston", "checkin", "src/a.c", &f, "-m", "v2"]);
    lab.ok(&["-C", "boston", "mklbtype", "REL"]);
    lab.ok(&["-C", "boston", "mklabel", "REL", "src/a.c@@main/1"]);
    lab.settle();
    let d = lab.digest("boston");
    assert_eq!(lab.digest("sanfran"), d);
    assert_eq!(lab.digest("bangalore"), d);
    // Content arrived: bangalore sees sanfran's branch, sanfran sees boston's main.
    assert_eq!(
        lab.ok(&["-C", "bangalore", "cat", "src/a.c@@sf_dev/1"]),
        "int a = 1; /* sanfran */\n"
    );
    assert_eq!(
        lab.ok(&["-C", "sanfran", "cat", "src/a.c"]),
        "int a = 0; /* boston v2 */\n"
    );
    assert_eq!(
        lab.ok(&["-C", "sanfran", "cat", "src/a.c@@main/1"]),
        "int a;\n"
    );
    let hist = lab.ok(&["-C", "sanfran", "lshistory", "src/a.c"]);
    assert!(hist.contains("REL"), "{hist}");
    // Bays are empty once everything applied.
    for s in ["boston", "sanfran", "bangalore"] {
        assert!(packets_in(&lab.path(&format!("{s}/bays/incoming"))).is_empty());
    }
}

#[test]
fn a_hub_family_converges_to_one_digest() {
    hub_family_converges(None);
}

#[cfg(feature = "rocks")]
#[test]
fn a_hub_family_converges_to_one_digest_on_rocks() {
    hub_family_converges(Some("rocks"));
}

#[test]
fn the_demo_restores_a_site_and_converges() {
    demo_restores_and_converges(None);
}

#[cfg(feature = "rocks")]
#[test]
fn the_demo_restores_a_site_and_converges_on_rocks() {
    demo_restores_and_converges(Some("rocks"));
}

fn demo_restores_and_converges(backend: Option<&'static str>) {
    let lab = Lab::new();
    let mut args = vec!["demo", "--keep", "kept"];
    if let Some(b) = backend {
        args.extend(["--backend", b]);
    }
    let out = lab.ok(&args);
    assert!(
        out.contains("Database sanfran is unlocked after restoration."),
        "{out}"
    );
    assert!(out.contains("replica is recovering"), "{out}");
    assert!(
        out.contains("replica is expected to send recovery update"),
        "{out}"
    );
    assert!(out.contains("the family has converged"), "{out}");
    // The three digests printed at the end are equal, and so are the kept sites'.
    let d = lab.digest("kept/boston");
    assert_eq!(lab.digest("kept/sanfran"), d);
    assert_eq!(lab.digest("kept/bangalore"), d);
    assert_eq!(out.matches(&d).count(), 3, "{out}");
}

#[test]
fn version_lists_the_compiled_backends() {
    let lab = Lab::new();
    let v = lab.ok(&["--version"]);
    assert!(v.starts_with("msite ") && v.contains("(backends: "), "{v}");
    #[cfg(feature = "sqlite")]
    assert!(v.contains("sqlite"), "{v}");
    #[cfg(feature = "rocks")]
    assert!(v.contains("rocks"), "{v}");
}

#[test]
fn a_backend_missing_from_the_build_is_named() {
    let lab = Lab::new();
    for b in ["sqlite", "rocks"] {
        let out = lab.run(&[
            "init",
            "x",
            "--family",
            "f",
            "--replica",
            "x",
            "--backend",
            b,
        ]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!(
                    "the {b} backend is not available in this build; this build has: "
                )),
                "{err}"
            );
            assert_eq!(out.status.code(), Some(1));
        }
        let _ = std::fs::remove_dir_all(lab.path("x"));
    }
    let err = lab.fails(
        2,
        &[
            "init",
            "x",
            "--family",
            "f",
            "--replica",
            "x",
            "--backend",
            "oracle",
        ],
    );
    assert!(err.contains("unknown backend"), "{err}");
}

#[test]
fn every_listing_speaks_json() {
    let lab = Lab::hub(None);
    lab.write("t/x.txt", "x\n");
    lab.ok(&["-C", "boston", "import", "t"]);
    lab.ok(&["-C", "boston", "mklbtype", "L"]);
    lab.ok(&["-C", "boston", "mklabel", "L", "x.txt"]);

    let v = lab.json(&["-C", "boston", "lsreplica", "--json"]);
    assert_eq!(v["this_replica"], "boston");
    assert_eq!(v["family"]["name"], "proj");
    let reps = v["replicas"].as_array().expect("replicas");
    assert_eq!(reps.len(), 3);
    for r in reps {
        for f in [
            "name",
            "id",
            "master",
            "incarnation",
            "this_replica",
            "state",
            "annotations",
            "expected_to_send_recovery_update",
        ] {
            assert!(r.get(f).is_some(), "lsreplica --json lacks {f}: {r}");
        }
    }
    assert_eq!(reps[0]["name"], "boston");
    assert_eq!(reps[0]["state"], "normal");

    let v = lab.json(&["-C", "boston", "lsepoch", "--json"]);
    assert_eq!(v["replica"], "boston");
    assert!(v["rows"][0]["own"].as_bool().expect("own"));
    assert!(
        v["rows"][0]["row"]["boston"]
            .as_u64()
            .expect("own row cell")
            >= 4
    );
    assert_eq!(v["rows"].as_array().expect("rows").len(), 3);

    let v = lab.json(&["-C", "boston", "ls", "--json"]);
    assert_eq!(v["elements"][0]["path"], "x.txt");
    assert_eq!(v["elements"][0]["master"], "boston");

    let v = lab.json(&["-C", "boston", "lshistory", "x.txt", "--json"]);
    assert_eq!(v["path"], "x.txt");
    assert_eq!(v["versions"][0]["version"], "main/1");
    assert_eq!(v["versions"][0]["labels"][0], "L");
    for f in ["number", "time", "author", "size", "comment", "origin"] {
        assert!(
            v["versions"][0].get(f).is_some(),
            "lshistory --json lacks {f}"
        );
    }

    let v = lab.json(&["-C", "boston", "describe", "elem:x.txt", "--json"]);
    assert_eq!(v["kind"], "elem");
    assert_eq!(v["master"], "boston");
    assert_eq!(v["branches"][0]["brtype"], "main");

    let v = lab.json(&["-C", "boston", "lsreqmaster", "--json"]);
    assert_eq!(v["policy"], "allow");
    assert!(v["requests"].as_array().expect("requests").is_empty());

    let files = lab.send("boston", "sanfran");
    let f = files[0].to_string_lossy().into_owned();
    let v = lab.json(&["-C", "sanfran", "lspacket", &f, "--json"]);
    let p = &v["packets"][0];
    assert_eq!(p["kind"], "update");
    assert_eq!(p["sender"]["name"], "boston");
    assert_eq!(p["targets"][0]["name"], "sanfran");
    assert_eq!(p["importable_here"], "importable");
    assert_eq!(p["verified"], true);
    assert!(p["entries"].as_u64().expect("entries") >= 3);
    for k in [
        "packet_id",
        "format_version",
        "parts",
        "family",
        "base_row",
        "sender_row",
        "entries_per_origin",
        "controls",
        "created",
    ] {
        assert!(p.get(k).is_some(), "lspacket --json lacks {k}");
    }
    // The signature verifies with boston's key as sanfran pinned it, which is the key boston
    // itself shows (lsreplica, describe).
    let fp = lab.json(&["-C", "boston", "lsreplica", "--json"])["replicas"][0]["key_fingerprint"]
        .clone();
    assert!(fp.as_str().is_some_and(|s| s.len() == 39), "{fp}");
    assert_eq!(p["signature"]["status"], "verified");
    assert_eq!(p["signature"]["keys"], "site");
    assert_eq!(p["signature"]["key_fingerprint"], fp);
    let at_sanfran = lab.json(&["-C", "sanfran", "describe", "replica:boston", "--json"]);
    assert_eq!(at_sanfran["key_fingerprint"], fp);
    let long = lab.ok(&["-C", "sanfran", "lsreplica", "--long"]);
    assert!(
        long.contains(&format!("signing key: {}", fp.as_str().unwrap())),
        "{long}"
    );
    // Outside any site: no verdict; the signature is checked with the keys the packet lists.
    let v = lab.json(&["lspacket", &f, "--json"]);
    assert_eq!(v["packets"][0]["importable_here"], Value::Null);
    assert_eq!(v["packets"][0]["signature"]["status"], "verified");
    assert_eq!(v["packets"][0]["signature"]["keys"], "listed");
}

#[test]
fn errors_name_the_object_and_what_to_do() {
    let lab = Lab::hub(None);
    // Unknown selector and object.
    let err = lab.fails(1, &["-C", "boston", "describe", "elem:nope.c"]);
    assert!(
        err.starts_with("msite: error: ") && err.contains("elem:nope.c does not exist"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    let err = lab.fails(1, &["-C", "boston", "describe", "gadget:x"]);
    assert!(err.contains("unknown selector kind `gadget`"), "{err}");
    let err = lab.fails(1, &["-C", "boston", "describe", "replica:tokyo"]);
    assert!(err.contains("replica:tokyo does not exist"), "{err}");
    // Not a site.
    std::fs::create_dir_all(lab.path("empty")).expect("mkdir");
    let err = lab.fails(1, &["-C", "empty", "ls"]);
    assert!(err.contains("holds no msite site (no site.json); create one with `msite init` or `msite mkreplica import`"), "{err}");
    // Mastered elsewhere: names the master.
    lab.checkin("boston", "f.c", "x\n");
    lab.settle();
    let err = lab.fails(1, &["-C", "sanfran", "checkin", "f.c", "f.c", "-m", "no"]);
    assert!(err.contains("mastered by replica boston"), "{err}");
    let err = lab.fails(1, &["-C", "sanfran", "mkbrtype", "main"]);
    assert!(err.contains("already exists"), "{err}");
    // Usage errors exit 2.
    lab.fails(2, &["-C", "boston", "frobnicate"]);
    lab.fails(2, &["-C", "boston", "syncreplica", "export"]);
}

/// lspacket's verdict is core's assessment, the checks import runs: a copy of a packet that
/// was imported before is `applied`, not importable.
#[test]
fn lspacket_says_a_packet_imported_before_changes_nothing() {
    let lab = Lab::hub(None);
    lab.checkin("boston", "a", "1\n");
    let sent = lab.send("boston", "sanfran");
    assert_eq!(sent.len(), 1);
    std::fs::create_dir_all(lab.path("copy")).expect("mkdir");
    let copy = lab.path("copy").join(sent[0].file_name().expect("name"));
    std::fs::copy(&sent[0], &copy).expect("copy");
    let f = copy.to_string_lossy().into_owned();
    let v = lab.json(&["-C", "sanfran", "lspacket", &f, "--json"]);
    assert_eq!(v["packets"][0]["importable_here"], "importable");
    lab.import("sanfran");
    let v = lab.json(&["-C", "sanfran", "lspacket", &f, "--json"]);
    assert_eq!(v["packets"][0]["importable_here"], "applied", "{v}");
    let text = lab.ok(&["-C", "sanfran", "lspacket", &f]);
    assert!(text.contains("imported here before"), "{text}");
}

#[test]
fn a_packet_that_must_wait_exits_3_and_applies_later() {
    let lab = Lab::hub(None);
    lab.checkin("boston", "a", "1\n");
    // Two packets to sanfran; the first is held back.
    lab.export_to_dir("boston", "sanfran", "held");
    lab.checkin("boston", "a", "2\n");
    let second = lab.send("boston", "sanfran");
    assert_eq!(second.len(), 1);
    let out = lab.run(&["-C", "sanfran", "syncreplica", "import"]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let re = predicate::str::is_match(r"needs boston up to \d+, has \d+").expect("regex");
    assert!(re.eval(&stdout), "{stdout}");
    assert!(re.eval(&stderr), "{stderr}");
    assert!(second[0].exists(), "a waiting packet stays in the bay");
    // lspacket says the same.
    let f = second[0].to_string_lossy().into_owned();
    let v = lab.json(&["-C", "sanfran", "lspacket", &f, "--json"]);
    assert_eq!(v["packets"][0]["importable_here"], "waiting");
    // The held packet arrives: both apply, in order.
    for p in packets_in(&lab.path("held")) {
        let name = p.file_name().expect("name").to_owned();
        std::fs::rename(&p, lab.path("sanfran/bays/incoming").join(name)).expect("move");
    }
    let out = lab.ok(&["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("2 applied"), "{out}");
    assert_eq!(lab.ok(&["-C", "sanfran", "cat", "a"]), "2\n");
}

#[test]
fn split_packets_are_grouped_and_imported_together() {
    let lab = Lab::hub(None);
    // Content that does not compress away: hex of a simple pseudo-random sequence.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..12 {
        let mut text = String::new();
        for _ in 0..400 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            text.push_str(&format!("{x:016x}"));
        }
        lab.write(&format!("big/f{i}.bin"), &text);
    }
    lab.ok(&["-C", "boston", "import", "big"]);
    let files = {
        let bay = "sanfran/bays/incoming";
        lab.export_with("boston", "sanfran", &["--out", bay, "--max-size", "8K"]);
        packets_in(&lab.path(bay))
    };
    assert!(files.len() > 1, "the packet was split: {files:?}");
    // With one part missing, the packet waits (exit 3) and names the missing part.
    let last = files.last().expect("a part").clone();
    std::fs::rename(&last, lab.path("part.tmp")).expect("move");
    let err = lab.fails(3, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("missing"), "{err}");
    std::fs::rename(lab.path("part.tmp"), &last).expect("move back");
    let out = lab.ok(&["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("1 applied"), "{out}");
    assert_eq!(lab.digest("sanfran"), lab.digest("boston"));
}

#[test]
fn restore_locks_the_replica_refuses_stale_packets_and_recovers() {
    restore_procedure(None);
}

#[cfg(feature = "rocks")]
#[test]
fn restore_locks_the_replica_refuses_stale_packets_and_recovers_on_rocks() {
    restore_procedure(Some("rocks"));
}

fn restore_procedure(backend: Option<&'static str>) {
    let lab = Lab::hub(backend);
    lab.ok(&["-C", "sanfran", "mkbrtype", "sf"]);
    lab.settle();
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(lab.path("bk/backup.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(m["replica_name"], "sanfran");
    assert_eq!(m["family_name"], "proj");
    // Work after the backup reaches the hub.
    lab.write("n", "after backup\n");
    lab.ok(&["-C", "sanfran", "checkin", "n", "n", "--branch", "sf"]);
    lab.send("sanfran", "boston");
    lab.import("boston");
    // A packet built for sanfran before its restore, left in a drawer.
    lab.checkin("boston", "b", "boston\n");
    lab.export_to_dir("boston", "sanfran", "drawer");
    // Storage lost; restore refuses what is not a backup of this replica.
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("rm store");
    std::fs::create_dir_all(lab.path("notabackup")).expect("mkdir");
    let err = lab.fails(1, &["restore", "notabackup", "sanfran"]);
    assert!(err.contains("is not an msite backup"), "{err}");
    lab.ok(&["-C", "bangalore", "backup", "bk-bangalore"]);
    let err = lab.fails(1, &["restore", "bk-bangalore", "sanfran"]);
    assert!(
        err.contains("is a backup of replica bangalore") && err.contains("holds replica sanfran"),
        "{err}"
    );
    let out = lab.ok(&["restore", "bk", "sanfran"]);
    assert!(
        out.contains("refuses local changes and exports until `msite restorereplica`"),
        "{out}"
    );
    // Locked: no local change, no export.
    let err = lab.fails(1, &["-C", "sanfran", "checkin", "n", "n", "--branch", "sf"]);
    assert!(err.contains("restorereplica"), "{err}");
    let err = lab.fails(
        1,
        &["-C", "sanfran", "syncreplica", "export", "--to", "boston"],
    );
    assert!(err.contains("restorereplica"), "{err}");
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "restored");
    let long = lab.ok(&["-C", "sanfran", "lsreplica", "--long"]);
    assert!(
        long.contains("restored from backup: run msite restorereplica"),
        "{long}"
    );
    // restorereplica: recovering, awaiting both siblings.
    let out = lab.ok(&["-C", "sanfran", "restorereplica"]);
    assert!(out.contains("incarnation"), "{out}");
    let long = lab.ok(&["-C", "sanfran", "lsreplica", "--long"]);
    assert!(long.contains("replica is recovering"), "{long}");
    assert_eq!(
        long.matches("replica is expected to send recovery update")
            .count(),
        2,
        "{long}"
    );
    let err = lab.fails(1, &["-C", "sanfran", "mkbrtype", "x"]);
    assert!(err.contains("locked while it recovers"), "{err}");
    // The packet from the drawer is stale: refused, naming both incarnations, moved aside.
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    let inc = v["replicas"][0]["incarnation"]
        .as_u64()
        .expect("incarnation");
    assert!(inc > 0);
    for p in packets_in(&lab.path("drawer")) {
        std::fs::rename(
            &p,
            lab.path("sanfran/bays/incoming")
                .join(p.file_name().expect("name")),
        )
        .expect("move");
    }
    let err = lab.fails(1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(
        err.contains("stale")
            && err.contains("incarnation 0")
            && err.contains(&format!(
                "incarnation {}",
                msite_core::incarnation_text(inc)
            )),
        "{err}"
    );
    let refused = packets_in(&lab.path("sanfran/bays/refused"));
    assert_eq!(refused.len(), 1);
    let reason =
        std::fs::read_to_string(format!("{}.reason", refused[0].display())).expect("reason file");
    assert!(reason.contains("stale"), "{reason}");
    // Recovery through the hub unlocks it and the family converges, the lost version included.
    let mut unlocked = false;
    for _ in 0..6 {
        lab.send("sanfran", "boston");
        lab.import("boston");
        lab.send("boston", "bangalore");
        lab.import("bangalore");
        lab.send("bangalore", "boston");
        lab.import("boston");
        lab.send("boston", "sanfran");
        if lab
            .import("sanfran")
            .contains("Database sanfran is unlocked after restoration.")
        {
            unlocked = true;
            break;
        }
    }
    assert!(unlocked, "sanfran was never unlocked");
    lab.settle();
    assert_eq!(lab.ok(&["-C", "sanfran", "cat", "n@@sf"]), "after backup\n");
    let d = lab.digest("boston");
    assert_eq!(lab.digest("sanfran"), d);
    assert_eq!(lab.digest("bangalore"), d);
}

/// Copies the store's files: on an embedded default backend only (a PostgreSQL store directory
/// holds a connection string, and copying it copies no data).
#[cfg(any(feature = "sqlite", feature = "rocks", not(feature = "postgres")))]
#[test]
fn a_replica_rolled_back_by_a_copy_refuses_changes() {
    let lab = Lab::hub(None);
    lab.settle();
    // A copy of sanfran's store taken behind msite's back.
    copy_dir(&lab.path("sanfran/store"), &lab.path("sanfran-copy"));
    lab.ok(&["-C", "sanfran", "mkbrtype", "sf"]);
    lab.send("sanfran", "boston");
    lab.import("boston");
    lab.checkin("boston", "b", "b\n");
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("rm");
    copy_dir(&lab.path("sanfran-copy"), &lab.path("sanfran/store"));
    lab.send("boston", "sanfran");
    let err = lab.fails(1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(
        err.contains("lost entries of its own") && err.contains("restorereplica"),
        "{err}"
    );
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "rolled_back");
    let long = lab.ok(&["-C", "sanfran", "lsreplica", "--long"]);
    assert!(long.contains("rolled back"), "{long}");
    let err = lab.fails(1, &["-C", "sanfran", "mkbrtype", "other"]);
    assert!(err.contains("restorereplica"), "{err}");
}

/// A site put back by a file copy that then makes a change reuses one of its own numbers;
/// the next packet of a sibling that holds the other entry locks it as rolled back, and the
/// message names `restorereplica` (invariant 8).
#[cfg(any(feature = "sqlite", feature = "rocks", not(feature = "postgres")))]
#[test]
fn a_rolled_back_site_that_numbered_again_locks_itself_on_its_own_fork() {
    let lab = Lab::hub(None);
    lab.settle();
    copy_dir(&lab.path("sanfran/store"), &lab.path("sanfran-copy"));
    lab.ok(&["-C", "sanfran", "mkbrtype", "sf"]);
    lab.send("sanfran", "boston");
    lab.import("boston");
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("rm");
    copy_dir(&lab.path("sanfran-copy"), &lab.path("sanfran/store"));
    // Nothing tells sanfran yet: it numbers its next change as it numbered sf.
    lab.ok(&["-C", "sanfran", "mkbrtype", "other"]);
    lab.checkin("boston", "b", "b\n");
    lab.send("boston", "sanfran");
    let ls = lab.ok(&["-C", "sanfran", "lspacket"]);
    assert!(
        ls.contains("numbered") && ls.contains("twice") && ls.contains("importing it locks"),
        "{ls}"
    );
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(
        v["replicas"][0]["state"], "normal",
        "lspacket changed nothing"
    );
    let err = lab.fails(1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(
        err.contains("numbered") && err.contains("twice") && err.contains("`msite restorereplica`"),
        "{err}"
    );
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "rolled_back");
    let err = lab.fails(1, &["-C", "sanfran", "mkbrtype", "third"]);
    assert!(
        err.contains("twice") && err.contains("restorereplica"),
        "{err}"
    );
    let err = lab.fails(
        1,
        &["-C", "sanfran", "syncreplica", "export", "--to", "boston"],
    );
    assert!(err.contains("restorereplica"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn watch_imports_packets_as_they_arrive() {
    let lab = Lab::hub(None);
    lab.checkin("boston", "w", "watched\n");
    lab.send("boston", "sanfran");
    let out = lab.ok(&[
        "-C",
        "sanfran",
        "syncreplica",
        "import",
        "--watch",
        "--max-seconds",
        "1",
    ]);
    assert!(out.contains("Applied"), "{out}");
    assert_eq!(lab.ok(&["-C", "sanfran", "cat", "w"]), "watched\n");
}

#[test]
fn the_object_base_commands_work() {
    let lab = Lab::hub(None);
    lab.ok(&["-C", "boston", "mkelem", "docs/a.txt"]);
    let out = lab
        .cmd()
        .args(["-C", "boston", "checkin", "docs/a.txt", "-m", "from stdin"])
        .write_stdin("piped\n")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        lab.ok(&["-C", "boston", "cat", "docs/a.txt@@main/1"]),
        "piped\n"
    );
    assert_eq!(lab.ok(&["-C", "boston", "ls", "docs/"]), "docs/a.txt\n");
    lab.ok(&["-C", "boston", "mklbtype", "GOOD"]);
    lab.ok(&["-C", "boston", "mklabel", "GOOD", "docs/a.txt"]);
    lab.ok(&["-C", "boston", "rmlabel", "GOOD", "docs/a.txt"]);
    lab.ok(&["-C", "boston", "rmname", "docs/a.txt"]);
    assert_eq!(lab.ok(&["-C", "boston", "ls"]), "");
    lab.ok(&["-C", "boston", "mkbrtype", "rel"]);
    lab.ok(&["-C", "boston", "chmaster", "brtype:rel", "bangalore"]);
    let d = lab.ok(&["-C", "boston", "describe", "brtype:rel"]);
    assert!(d.contains("master: bangalore"), "{d}");
    // reqmaster travels to the master, which grants it by default.
    lab.ok(&["-C", "boston", "mklbtype", "SHARED"]);
    lab.settle();
    let out = lab.ok(&["-C", "sanfran", "reqmaster", "lbtype:SHARED"]);
    assert!(out.contains("Asked boston"), "{out}");
    lab.settle();
    let d = lab.json(&["-C", "sanfran", "describe", "lbtype:SHARED", "--json"]);
    assert_eq!(d["master"], "sanfran");
    let p = lab.ok(&["-C", "boston", "reqmaster-policy", "manual"]);
    assert!(p.contains("manual"), "{p}");
    lab.ok(&["-C", "boston", "check"]);
    // chepoch refuses the own row and sets an estimate.
    let err = lab.fails(1, &["-C", "boston", "chepoch", "boston", "boston=1"]);
    assert!(err.contains("own row"), "{err}");
    let out = lab.ok(&["-C", "boston", "chepoch", "sanfran", "boston=1"]);
    assert!(out.contains("boston:1"), "{out}");
}

#[test]
fn completions_and_manual_pages_are_generated() {
    let lab = Lab::new();
    for sh in ["bash", "zsh", "fish"] {
        let out = lab.ok(&["completions", sh]);
        assert!(out.contains("syncreplica"), "{sh}");
    }
    lab.ok(&["man", "man"]);
    assert!(lab.path("man/msite.1").exists());
    assert!(lab.path("man/msite-syncreplica-import.1").exists());
}

#[test]
fn every_command_explains_itself_with_an_example() {
    let lab = Lab::new();
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["mkreplica"],
        &["mkreplica", "export"],
        &["mkreplica", "import"],
        &["lsreplica"],
        &["describe"],
        &["rekey"],
        &["vouch"],
        &["identity"],
        &["seal-policy"],
        &["syncreplica"],
        &["syncreplica", "export"],
        &["syncreplica", "import"],
        &["lspacket"],
        &["lsepoch"],
        &["chepoch"],
        &["backup"],
        &["restore"],
        &["restorereplica"],
        &["check"],
        &["mkelem"],
        &["checkin"],
        &["import"],
        &["cat"],
        &["ls"],
        &["lshistory"],
        &["mkbrtype"],
        &["mklbtype"],
        &["mklabel"],
        &["rmlabel"],
        &["rmname"],
        &["chmaster"],
        &["reqmaster"],
        &["reqmaster-policy"],
        &["lsreqmaster"],
        &["resend-interval"],
        &["digest"],
        &["completions"],
        &["man"],
        &["demo"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let out = lab.ok(&args);
        assert!(
            out.contains("Example"),
            "msite {} --help has no example:\n{out}",
            c.join(" ")
        );
    }
    let top = lab.ok(&["--help"]);
    assert!(
        top.contains("Exit codes") && top.contains("3  some packets must wait"),
        "{top}"
    );
}

#[test]
fn an_unreadable_packet_is_refused_and_moved_aside_with_its_reason() {
    let lab = Lab::hub(None);
    std::fs::write(
        lab.path("sanfran/bays/incoming/junk.msp"),
        b"not a packet at all",
    )
    .expect("write");
    let err = lab.fails(1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("junk.msp"), "{err}");
    assert!(lab.path("sanfran/bays/refused/junk.msp").exists());
    let reason =
        std::fs::read_to_string(lab.path("sanfran/bays/refused/junk.msp.reason")).expect("reason");
    assert!(!reason.trim().is_empty());
    assert!(packets_in(&lab.path("sanfran/bays/incoming")).is_empty());
    // A packet for another replica is refused the same way, naming its addressee.
    lab.settle();
    lab.ok(&["-C", "boston", "mkbrtype", "more"]);
    lab.send("boston", "bangalore");
    for p in packets_in(&lab.path("bangalore/bays/incoming")) {
        std::fs::rename(
            &p,
            lab.path("sanfran/bays/incoming")
                .join(p.file_name().expect("name")),
        )
        .expect("move");
    }
    let err = lab.fails(1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("addressed to bangalore"), "{err}");
    // An empty bay is fine.
    let out = lab.ok(&["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("No packets"), "{out}");
}

#[test]
fn sites_are_not_made_over_sites_or_from_their_own_tree() {
    let lab = Lab::hub(None);
    let err = lab.fails(
        1,
        &["init", "boston", "--family", "again", "--replica", "x"],
    );
    assert!(err.contains("already holds replica boston"), "{err}");
    let err = lab.fails(1, &["-C", "boston", "import", "."]);
    assert!(err.contains("contains the site directory"), "{err}");
    let err = lab.fails(1, &["-C", "boston", "lspacket", "nothing-here.msp"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = lab.fails(1, &["-C", "boston", "backup", "boston"]);
    assert!(err.contains("not empty"), "{err}");
    let text = lab.ok(&["-C", "boston", "describe", "replica:sanfran"]);
    assert!(text.starts_with("kind: replica"), "{text}");
}

#[test]
fn restorereplica_waits_for_a_sibling_named_by_id_when_the_backup_cannot_know_its_name() {
    let lab = Lab::hub(None);
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    std::fs::remove_dir_all(lab.path("sanfran")).expect("lose sanfran's disk");
    lab.ok(&["restore", "bk", "sanfran"]);
    // A name the restored store does not know: the message says to give the id.
    let err = lab.fails(
        1,
        &["-C", "sanfran", "restorereplica", "--wait-for", "late"],
    );
    assert!(
        err.contains("late") && err.contains("created after this backup") && err.contains("id"),
        "{err}"
    );
    // By id, with the known hub: both are awaited.
    let id = "0123456789abcdef0123456789abcdef";
    let out = lab.ok(&[
        "-C",
        "sanfran",
        "restorereplica",
        "--wait-for",
        "boston",
        id,
    ]);
    assert!(out.contains("Waiting for recovery updates from:"), "{out}");
    assert!(out.contains("boston") && out.contains(&id[..8]), "{out}");
    let long = lab.json(&["-C", "sanfran", "lsreplica", "--long", "--json"]);
    let awaiting: Vec<&str> = long["recovering"]["awaiting"]
        .as_array()
        .expect("recovering.awaiting")
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert!(awaiting.contains(&id), "{long}");
    assert_eq!(awaiting.len(), 2, "{long}");
    // The documented procedure: every sibling the store knows of, and also the replica made
    // here after the backup (amending keeps the incarnation).
    let err = lab.fails(
        2,
        &[
            "-C",
            "sanfran",
            "restorereplica",
            "--wait-for",
            "boston",
            "--also-wait-for",
            id,
        ],
    );
    assert!(err.contains("cannot be used with"), "{err}");
    let out = lab.ok(&["-C", "sanfran", "restorereplica", "--also-wait-for", id]);
    assert!(out.contains("Amended"), "{out}");
    let long = lab.json(&["-C", "sanfran", "lsreplica", "--long", "--json"]);
    let awaiting: Vec<(String, String)> = long["recovering"]["awaiting"]
        .as_array()
        .expect("recovering.awaiting")
        .iter()
        .map(|a| (a["name"].to_string(), a["id"].to_string()))
        .collect();
    assert!(awaiting.iter().any(|(_, i)| i.contains(id)), "{long}");
    assert!(awaiting.iter().any(|(n, _)| n.contains("boston")), "{long}");
}
