//! The family at a glance: `msite status` (text and `--json`) on a family driven by hand into
//! interesting states, and — with the `serve` feature — the daemons' status page loaded in a
//! real headless Chromium, `/api/status` and `/metrics` read over HTTP.
//!
//! The browser tests need Chromium (Debian's `chromium`; `cargo xtask test` installs it as
//! root): without it they fail, naming what to install. `MSITE_CHROMIUM` names another binary.
//! With `MSITE_STATUS_SCREENSHOT=FILE` the status page test also writes a screenshot there
//! (how docs/status.png was made).

use serde_json::Value;

use super::Lab;

/// A family where boston holds a change no sibling has, and sanfran holds a packet from boston
/// that must wait (the packet before it was lost) and a hostile file refused.
fn drive_to_interesting_states(lab: &Lab) {
    lab.write("a.c", "one\n");
    lab.ok(&["-C", "boston", "checkin", "src/a.c", "a.c"]);
    lab.send("boston", "sanfran");
    lab.import("sanfran");
    // A packet lost on the way, then one that needs it.
    lab.ok(&["-C", "boston", "mkbrtype", "lost"]);
    let lost = lab.path("lost");
    std::fs::create_dir_all(&lost).expect("mkdir");
    lab.export_to_dir("boston", "sanfran", "lost");
    lab.ok(&["-C", "boston", "mkbrtype", "after_lost"]);
    lab.send("boston", "sanfran");
    lab.write(
        "sanfran/bays/incoming/evil<img src=x onerror=alert(1)>.msp",
        "not a packet\n",
    );
    let out = lab.run(&["-C", "sanfran", "syncreplica", "import"]);
    assert_eq!(out.status.code(), Some(1), "one refused, one waiting");
    // A local change at boston that no export carried yet: every sibling lacks it.
    lab.ok(&["-C", "boston", "mkbrtype", "unsent"]);
}

fn sibling<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["siblings"]
        .as_array()
        .expect("siblings")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no sibling {name} in {doc:#}"))
}

#[test]
fn status_shows_siblings_behind_waiting_and_refused_packets() {
    let lab = Lab::hub(None);
    drive_to_interesting_states(&lab);
    let sf = lab.json(&["-C", "sanfran", "status", "--json"]);
    assert_eq!(sf["format"], 1);
    assert_eq!(sf["replica"], "sanfran");
    assert_eq!(sf["restore"]["state"], "normal");
    assert_eq!(sf["restore"]["locked"], false);
    let boston = sibling(&sf, "boston");
    assert_eq!(boston["waiting"], 1, "{sf:#}");
    assert_eq!(boston["last_in"]["result"], "applied", "{sf:#}");
    assert_eq!(boston["heard"], "ok");
    // boston's key as pinned at sanfran: the fingerprint boston's own site shows.
    let own = lab.json(&["-C", "boston", "lsreplica", "--json"]);
    let own = own["replicas"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == "boston"))
        .map(|r| r["key_fingerprint"].clone());
    assert!(boston["key_fingerprint"].is_string(), "{sf:#}");
    assert_eq!(Some(boston["key_fingerprint"].clone()), own);
    assert_eq!(sibling(&sf, "bangalore")["heard"], "never");
    assert_eq!(sf["waiting_total"], 1);
    let waiting = &sf["incoming"][0];
    assert_eq!(waiting["verdict"], "waiting", "{sf:#}");
    assert_eq!(waiting["sender"], "boston");
    let here = waiting["here"].as_str().expect("here");
    assert!(here.starts_with("must wait: needs boston up to"), "{here}");
    assert_eq!(sf["refused_total"], 1);
    let refused = &sf["refused"][0];
    assert!(
        refused["file"].as_str().unwrap().starts_with("evil<img"),
        "{sf:#}"
    );
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("not an msite packet"),
        "{sf:#}"
    );
    // boston: both siblings lack its unsent change; sanfran's last packet out is recorded.
    let bo = lab.json(&["-C", "boston", "status", "--json"]);
    for s in ["sanfran", "bangalore"] {
        assert!(
            sibling(&bo, s)["they_lack"].as_u64().unwrap() >= 1,
            "{bo:#}"
        );
        assert_eq!(sibling(&bo, s)["we_lack"], 0, "{bo:#}");
    }
    assert_eq!(sibling(&bo, "sanfran")["last_out"]["result"], "exported");
    assert_eq!(bo["epoch"]["origins"][0], "boston");
    assert_eq!(bo["epoch"]["rows"][0]["own"], true);
    // The text summary says the same.
    let text = lab.ok(&["-C", "sanfran", "status"]);
    assert!(
        text.contains("Replica sanfran of family proj: normal."),
        "{text}"
    );
    assert!(text.contains("waiting: sync_boston_to_sanfran"), "{text}");
    assert!(text.contains("must wait: needs boston up to"), "{text}");
    assert!(
        text.contains("refused") && text.contains("evil<img"),
        "{text}"
    );
}

#[test]
fn a_sibling_not_heard_from_within_late_after_is_late() {
    let lab = Lab::hub(None);
    drive_to_interesting_states(&lab);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let doc = lab.json(&["-C", "sanfran", "status", "--json", "--late-after", "1s"]);
    assert_eq!(sibling(&doc, "boston")["heard"], "late", "{doc:#}");
    assert_eq!(doc["late_after_s"], 1);
    let doc = lab.json(&["-C", "sanfran", "status", "--json", "--late-after", "1h"]);
    assert_eq!(sibling(&doc, "boston")["heard"], "ok", "{doc:#}");
    let err = lab.fails(2, &["-C", "sanfran", "status", "--late-after", "soon"]);
    assert!(err.contains("not a duration"), "{err}");
}

#[test]
fn the_history_records_packets_in_and_out() {
    let lab = Lab::hub(None);
    drive_to_interesting_states(&lab);
    let text = std::fs::read_to_string(lab.path("sanfran/history.jsonl")).expect("history");
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
        .collect();
    let outcomes: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r["dir"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(outcomes, [("in", "applied"), ("in", "refused")], "{text}");
    assert_eq!(recs[0]["sibling"], "boston");
    assert!(recs[0]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(recs[1]["sibling"], Value::Null);
    let bo = std::fs::read_to_string(lab.path("boston/history.jsonl")).expect("history");
    assert_eq!(
        bo.lines().filter(|l| l.contains("\"exported\"")).count(),
        3,
        "{bo}"
    );
}

#[cfg(feature = "serve")]
mod browser {
    //! The status page of real daemons, in headless Chromium.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use serde_json::Value;

    use super::super::serve::{
        converged, free_port, hub_with_routes, ok_soon, routes, url, wait_for, Daemon,
    };
    use super::super::Lab;

    /// The browser: `MSITE_CHROMIUM`, or `chromium` / `chromium-browser` / `google-chrome` on
    /// the PATH. None is a failure, never a skip: CI installs it.
    fn chromium() -> PathBuf {
        if let Some(p) = std::env::var_os("MSITE_CHROMIUM") {
            return PathBuf::from(p);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            for name in ["chromium", "chromium-browser", "google-chrome"] {
                if dir.join(name).is_file() {
                    return dir.join(name);
                }
            }
        }
        panic!("the status page tests load the page in headless Chromium, and none is installed: install it (Debian: `apt-get install chromium`; `cargo xtask test` does it as root) or set MSITE_CHROMIUM to the browser");
    }

    /// Runs headless Chromium with `args` and a profile of its own in the lab; its stdout.
    /// The wait is bounded: a browser still running after it is killed and the test fails.
    fn browse(lab: &Lab, args: &[String]) -> String {
        let profile = lab.path(&format!("chromium-{}", free_port()));
        let out = lab.path(&format!("chromium-{}.out", free_port()));
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        for _ in 0..600 {
            if let Some(st) = child.try_wait().expect("wait") {
                assert!(st.success(), "chromium {args:?} failed: {st}");
                return std::fs::read_to_string(&out).expect("chromium output");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromium {args:?} did not finish");
    }

    /// The DOM of `http://127.0.0.1:PORT/PATH` after the browser loaded it.
    fn dom(lab: &Lab, port: u16, path: &str) -> String {
        browse(
            lab,
            &[
                "--dump-dom".into(),
                format!("http://127.0.0.1:{port}{path}"),
            ],
        )
    }

    /// `GET` over plain HTTP: the status and the body.
    fn get(port: u16, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .get(format!("http://127.0.0.1:{port}{path}"))
            .call()
            .expect("request");
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (resp.status().as_u16(), text)
    }

    /// The JSON status document, retried while the store is busy for a moment (503).
    fn api(port: u16) -> Value {
        for _ in 0..200 {
            let (code, text) = get(port, "/api/status");
            if code == 200 {
                return serde_json::from_str(&text).expect("JSON");
            }
            assert_eq!(code, 503, "{text}");
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        panic!("/api/status never answered");
    }

    /// Parses the Prometheus text format: every sample by `name{labels}`; checks that each
    /// sample's family was announced with `# TYPE` before it.
    fn metrics(port: u16) -> BTreeMap<String, f64> {
        let (code, text) = get(port, "/metrics");
        assert_eq!(code, 200, "{text}");
        let mut typed = std::collections::BTreeSet::new();
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                typed.insert(it.next().expect("name").to_string());
                assert_eq!(it.next(), Some("gauge"), "{line}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (key, value) = line.rsplit_once(' ').expect("sample");
            let name = key.split('{').next().expect("name");
            assert!(typed.contains(name), "{name} sampled before its # TYPE");
            out.insert(key.to_string(), value.parse::<f64>().expect("a number"));
        }
        out
    }

    /// The `<tr>` of the sibling table that names `name`.
    fn row<'a>(dom: &'a str, name: &str) -> &'a str {
        let cell = format!("<td>{name}</td>");
        let at = dom
            .find(&cell)
            .unwrap_or_else(|| panic!("no row for {name}:\n{dom}"));
        let start = dom[..at].rfind("<tr").expect("row start");
        let end = at + dom[at..].find("</tr>").expect("row end");
        &dom[start..end]
    }

    /// Phase one: three daemons exchange packets (history in and out), sanfran is backed up.
    fn run_a_family(lab: &Lab) {
        hub_with_routes(lab);
        let all = ["boston", "sanfran", "bangalore"];
        let d: Vec<Daemon> = all
            .iter()
            .map(|s| Daemon::start(lab, s, &format!("{s}-1.log")))
            .collect();
        let refs: Vec<&Daemon> = d.iter().collect();
        ok_soon(lab, &["-C", "sanfran", "mkbrtype", "sf"]);
        wait_for("the family to converge", &refs, || converged(lab, &all));
        wait_for("boston to record a packet from sanfran", &refs, || {
            std::fs::read_to_string(lab.path("boston/history.jsonl"))
                .is_ok_and(|t| t.contains("\"sibling\":\"sanfran\"") && t.contains("\"applied\""))
        });
        ok_soon(lab, &["-C", "sanfran", "backup", "bk"]);
        for x in d {
            assert_eq!(x.terminate(), Some(0));
        }
    }

    /// Phase two, by hand: sanfran restored and recovering (awaiting boston and bangalore);
    /// a packet from bangalore waiting at boston (the one before it lost); a hostile file
    /// refused at boston; a change at boston that bangalore lacks.
    fn drive(lab: &Lab) {
        std::fs::remove_dir_all(lab.path("sanfran/store")).expect("rm store");
        lab.ok(&["restore", "bk", "sanfran"]);
        lab.ok(&["-C", "sanfran", "restorereplica"]);
        lab.ok(&["-C", "bangalore", "mkbrtype", "bg_lost"]);
        std::fs::create_dir_all(lab.path("lost")).expect("mkdir");
        lab.export_to_dir("bangalore", "boston", "lost");
        lab.ok(&["-C", "bangalore", "mkbrtype", "bg_waits"]);
        lab.send("bangalore", "boston");
        lab.write(
            "boston/bays/incoming/evil<img src=x onerror=alert(1)>.msp",
            "no\n",
        );
        assert_eq!(
            lab.run(&["-C", "boston", "syncreplica", "import"])
                .status
                .code(),
            Some(1)
        );
        lab.ok(&["-C", "boston", "mkbrtype", "bos_unsent"]);
    }

    /// Phase three: boston and sanfran serve again; their routes lead only to ports nobody
    /// listens on (bangalore is down, and boston has no route to it), so nothing moves.
    fn serve_again(lab: &Lab) -> ([u16; 2], Vec<Daemon>) {
        let (pb, ps) = (free_port(), free_port());
        let dead = url(free_port());
        routes(lab, "boston", Some(pb), "", &[("sanfran", dead.clone())]);
        let sib = [("boston", dead.clone()), ("bangalore", dead)];
        routes(lab, "sanfran", Some(ps), "", &sib);
        let d = vec![
            Daemon::start(lab, "boston", "boston-2.log"),
            Daemon::start(lab, "sanfran", "sanfran-2.log"),
        ];
        let refs: Vec<&Daemon> = d.iter().collect();
        wait_for("the daemons to start", &refs, || {
            d.iter().all(|x| x.log().contains("msite serve started"))
        });
        ([pb, ps], d)
    }

    #[test]
    fn the_status_page_shows_the_family_in_a_real_browser() {
        let lab = Lab::hub(None);
        run_a_family(&lab);
        drive(&lab);
        let ([pb, ps], daemons) = serve_again(&lab);
        let doc = api(pb);
        let behind = doc["siblings"][0]["they_lack"].as_u64().unwrap();
        assert_eq!(doc["siblings"][0]["name"], "bangalore");
        assert!(behind >= 1, "{doc:#}");
        let page = dom(&lab, pb, "/");
        assert!(page.contains("msite boston: status"), "{page}");
        // bangalore: behind, one packet waiting; sanfran: heard from.
        let bg = row(&page, "bangalore");
        // They lack, we lack, waiting, refused, in that order.
        let cells = [behind, 0, 1, 0].map(|n| format!("<td class=\"n\">{n}</td>"));
        assert!(bg.contains(&cells.concat()), "{bg}");
        let sf = row(&page, "sanfran");
        assert!(
            sf.contains("class=\"ok\"") && sf.contains("applied"),
            "{sf}"
        );
        assert!(page.contains("must wait: needs bangalore up to"), "{page}");
        // The hostile file name is text, never markup.
        assert!(
            page.contains("evil&lt;img src=x onerror=alert(1)&gt;.msp"),
            "{page}"
        );
        assert!(!page.contains("<img"), "{page}");
        assert!(
            page.contains("Normal: not restoring, not locked."),
            "{page}"
        );
        // sanfran: recovering, awaiting both siblings.
        let page = dom(&lab, ps, "/");
        assert!(
            page.contains("awaiting recovery updates from bangalore, boston."),
            "{page}"
        );
        for s in ["boston", "bangalore"] {
            assert!(row(&page, s).contains("<td>awaited</td>"), "{page}");
        }
        let epoch = dom(&lab, pb, "/epoch");
        assert!(
            epoch.contains("boston (own)") && epoch.contains("bangalore (estimate)"),
            "{epoch}"
        );
        let history = dom(&lab, pb, "/history");
        for word in ["shipped", "applied", "refused", "exported"] {
            assert!(
                history.contains(&format!("<td>{word}</td>")),
                "{word}: {history}"
            );
        }
        if let Some(shot) = std::env::var_os("MSITE_STATUS_SCREENSHOT") {
            screenshot(&lab, pb, Path::new(&shot));
        }
        drop(daemons);
    }

    fn screenshot(lab: &Lab, port: u16, to: &Path) {
        let to = std::path::absolute(to).expect("path");
        browse(
            lab,
            &[
                format!("--screenshot={}", to.display()),
                "--window-size=1200,800".into(),
                "--hide-scrollbars".into(),
                format!("http://127.0.0.1:{port}/"),
            ],
        );
        assert!(to.is_file(), "no screenshot at {}", to.display());
    }

    /// boston's metrics: a packet waiting from bangalore, one refused, bangalore behind, the
    /// last exchange with sanfran within the hour.
    fn boston_metrics(pb: u16) {
        let m = metrics(pb);
        let at = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:#?}"));
        let b = "replica=\"boston\"";
        assert_eq!(
            at(&format!(
                "msite_packets_waiting{{{b},sibling=\"bangalore\"}}"
            )),
            1.0
        );
        assert_eq!(at(&format!("msite_packets_waiting_total{{{b}}}")), 1.0);
        assert_eq!(at(&format!("msite_packets_refused_total{{{b}}}")), 1.0);
        let behind =
            format!("msite_entries_behind{{{b},sibling=\"bangalore\",direction=\"they_lack\"}}");
        assert!(at(&behind) >= 1.0);
        assert_eq!(at(&format!("msite_restoration_in_progress{{{b}}}")), 0.0);
        let last = at(&format!(
            "msite_last_exchange_timestamp_seconds{{{b},sibling=\"sanfran\"}}"
        ));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(last > now - 3600.0 && last <= now, "{last}");
    }

    #[test]
    fn metrics_and_the_json_api_answer_over_http() {
        let lab = Lab::hub(None);
        run_a_family(&lab);
        drive(&lab);
        let ([pb, ps], daemons) = serve_again(&lab);
        boston_metrics(pb);
        let m = metrics(ps);
        let s = "replica=\"sanfran\"";
        assert_eq!(m[&format!("msite_restoration_in_progress{{{s}}}")], 1.0);
        assert_eq!(m[&format!("msite_locked{{{s}}}")], 1.0);
        for sib in ["boston", "bangalore"] {
            assert_eq!(
                m[&format!("msite_restoration_awaiting{{{s},sibling=\"{sib}\"}}")],
                1.0
            );
        }
        let doc = api(ps);
        assert_eq!(doc["restore"]["state"], "recovering");
        assert_eq!(
            doc["restore"]["awaiting"],
            serde_json::json!(["bangalore", "boston"])
        );
        // The JSON API and `msite status --json` give the same document.
        let cli: Value = serde_json::from_str(&ok_soon(
            &lab,
            &[
                "-C",
                "sanfran",
                "status",
                "--json",
                "--routes",
                "sanfran/routes.toml",
            ],
        ))
        .expect("JSON");
        assert_eq!(cli["restore"], doc["restore"]);
        assert_eq!(cli["siblings"].as_array().map(Vec::len), Some(2));
        // Read-only: a write to a view is refused.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = agent
            .put(format!("http://127.0.0.1:{pb}/api/status"))
            .send(&b"x"[..])
            .expect("request");
        assert_eq!(resp.status().as_u16(), 405);
        drop(daemons);
    }
}
