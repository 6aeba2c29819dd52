//! `msite scrub` end to end: off by default, --dry-run changes nothing, a scrub drops history
//! without changing the digest, says per origin what it kept and why, and refuses bad input.
//! `msite compact` after it: the store packed, the data unchanged.

use super::Lab;

#[test]
fn scrub_drops_history_every_sibling_holds_and_keeps_the_digest() {
    let lab = Lab::hub(None);
    lab.checkin("boston", "a.c", "int a;\n");
    lab.settle();
    let off = lab.ok(&["-C", "boston", "scrub"]);
    assert!(
        off.contains("restore window never (retention off); dropped 0 oplog entries"),
        "{off}"
    );
    assert!(off.contains("because no restore window is set"), "{off}");
    let digest = lab.digest("boston");
    let dry = lab.ok(&["-C", "boston", "scrub", "--keep", "0", "--dry-run"]);
    assert!(dry.contains("would drop"), "{dry}");
    assert!(dry.contains("origin boston: dropped 1.."), "{dry}");
    // The dry run stored nothing: the window is still off.
    let still_off = lab.json(&["-C", "boston", "scrub", "--dry-run", "--json"]);
    assert_eq!(still_off["window_ms"], serde_json::Value::Null);
    assert_eq!(still_off["entries_dropped"], 0);
    let done = lab.json(&["-C", "boston", "scrub", "--keep", "0", "--json"]);
    assert_eq!(done["window_ms"], 0);
    assert!(done["entries_dropped"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(lab.digest("boston"), digest);
    // Later work still replicates through the scrubbed hub, to one digest.
    lab.checkin("sanfran", "b.c", "int b;\n");
    lab.settle();
    let d = lab.digest("boston");
    assert_eq!(lab.digest("sanfran"), d);
    assert_eq!(lab.digest("bangalore"), d);
    assert_eq!(lab.ok(&["-C", "bangalore", "cat", "a.c"]), "int a;\n");
    // A history creation packet needs the whole history: refused here, naming the way out.
    let (_, key) = lab.new_identity("delhi-first.age");
    let err = lab.fails(
        1,
        &[
            "-C",
            "boston",
            "mkreplica",
            "export",
            "delhi",
            "--history",
            "--no-encrypt",
            "--key",
            &key,
        ],
    );
    assert!(
        err.contains(
            "make a snapshot creation packet instead (`msite mkreplica export` without --history)"
        ),
        "{err}"
    );
    // A snapshot (the default) works after the scrub: the new site holds the same database.
    lab.mkreplica("boston", "delhi");
    assert_eq!(lab.digest("delhi"), lab.digest("boston"));
    assert_eq!(lab.ok(&["-C", "delhi", "cat", "a.c"]), "int a;\n");
}

/// Both ways of making a replica give the same database: the snapshot (the default) and
/// the history (`--history`).
#[test]
fn mkreplica_makes_a_replica_from_a_snapshot_or_the_history() {
    let lab = Lab::hub(None);
    lab.checkin("boston", "a.c", "int a;\n");
    lab.mkreplica("boston", "tokyo");
    assert_eq!(lab.digest("tokyo"), lab.digest("boston"));
    lab.mkreplica_history("boston", "delhi");
    assert_eq!(lab.digest("delhi"), lab.digest("boston"));
    for site in ["tokyo", "delhi"] {
        assert_eq!(lab.ok(&["-C", site, "cat", "a.c"]), "int a;\n");
    }
}

/// `msite compact` packs the store after a scrub: it reports its sizes, the digest and the
/// files stay, the store is intact, and the family goes on replicating, new versions of
/// packed elements included.
#[test]
fn compact_after_a_scrub_keeps_the_data() {
    let lab = Lab::hub(None);
    for i in 0..20 {
        lab.checkin(
            "boston",
            &format!("f{i}.c"),
            &format!("int f{i};\n").repeat(200),
        );
    }
    lab.settle();
    lab.ok(&["-C", "boston", "scrub", "--keep", "0"]);
    let digest = lab.digest("boston");
    // The build's default backend: the cli-postgres row runs this on PostgreSQL.
    let v = lab.json(&["-C", "boston", "compact", "--json"]);
    assert_eq!(v["replica"], "boston");
    let backend = v["backend"].as_str().expect("backend");
    assert!(
        ["sqlite", "rocks", "postgres", "mem"].contains(&backend),
        "{v}"
    );
    // A store this small may even grow a little (RocksDB logs the compaction, writes new
    // options files): the shrinking is the conformance suite's case, on a real amount of data.
    let (before, after) = (v["bytes_before"].as_u64(), v["bytes_after"].as_u64());
    assert!(before > Some(0) && after > Some(0), "{v}");
    let text = lab.ok(&["-C", "boston", "compact"]);
    let said = format!("Compacted the {backend} store of boston: ");
    assert!(text.starts_with(&said), "{text}");
    assert_eq!(lab.digest("boston"), digest);
    assert!(lab.ok(&["-C", "boston", "check"]).contains("intact"));
    assert_eq!(
        lab.ok(&["-C", "boston", "cat", "f3.c"]),
        "int f3;\n".repeat(200)
    );
    // A new version of a file boston packed, and one from a sibling, replicate as before.
    lab.checkin("boston", "f3.c", "int f3_again;\n");
    lab.checkin("sanfran", "late.c", "int late;\n");
    lab.settle();
    assert_eq!(lab.digest("boston"), lab.digest("sanfran"));
    assert_eq!(lab.ok(&["-C", "sanfran", "cat", "f3.c"]), "int f3_again;\n");
    assert!(lab.ok(&["-C", "boston", "check"]).contains("intact"));
}

#[test]
fn scrub_refuses_a_window_it_cannot_read() {
    let lab = Lab::hub(None);
    let err = lab.fails(1, &["-C", "boston", "scrub", "--keep", "30"]);
    assert!(err.contains("is not a duration; write e.g. 30d"), "{err}");
}

#[cfg(feature = "serve")]
#[test]
fn serve_scrubs_when_a_window_is_set() {
    let lab = Lab::hub(None);
    lab.checkin("boston", "a.c", "int a;\n");
    lab.settle();
    std::fs::write(lab.path("token"), "0123456789abcdef0123456789abcdef").expect("token");
    let routes = "[serve]\ntoken_file = \"../token\"\n[sibling.sanfran]\ndir = \"../sanfran/bays/incoming\"\n";
    std::fs::write(lab.path("boston/routes.toml"), routes).expect("routes");
    // No window: the daemon drops nothing.
    let out = lab.ok(&["-C", "boston", "serve", "--once"]);
    assert!(!out.contains("Scrubbed"), "{out}");
    lab.ok(&["-C", "boston", "scrub", "--keep", "0", "--dry-run"]);
    let digest = lab.digest("boston");
    lab.ok(&["-C", "boston", "scrub", "--keep", "0"]);
    lab.checkin("sanfran", "b.c", "int b;\n");
    lab.settle();
    let out = lab.ok(&["-C", "boston", "serve", "--once"]);
    assert!(
        out.contains("oplog entries every sibling holds (retention)"),
        "{out}"
    );
    assert_ne!(lab.digest("boston"), digest, "b.c arrived");
    assert_eq!(lab.digest("boston"), lab.digest("sanfran"));
}

/// A spoke restored from a backup older than what the hub dropped is shown as behind
/// retention by the hub's status, with the way out; the other spoke is not.
#[test]
fn status_shows_a_sibling_behind_retention() {
    let lab = Lab::hub(None);
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    lab.checkin("boston", "a.c", "int a;\n");
    lab.settle();
    let off = lab.json(&["-C", "boston", "status", "--json"]);
    assert_eq!(off["siblings"][0]["retention"]["state"], "off", "{off}");
    lab.ok(&["-C", "boston", "scrub", "--keep", "0"]);
    let ok = lab.json(&["-C", "boston", "status", "--json"]);
    assert_eq!(ok["siblings"][1]["retention"]["state"], "ok", "{ok}");
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("rm store");
    lab.ok(&["restore", "bk", "sanfran"]);
    lab.ok(&["-C", "sanfran", "restorereplica"]);
    lab.send("sanfran", "boston");
    lab.import("boston");
    let v = lab.json(&["-C", "boston", "status", "--json"]);
    let row = |name: &str| {
        v["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no sibling {name}: {v}"))
    };
    assert_eq!(row("bangalore")["retention"]["state"], "ok", "{v}");
    let sanfran = row("sanfran");
    assert_eq!(sanfran["retention"]["state"], "behind", "{v}");
    let note = sanfran["retention"]["note"].as_str().unwrap();
    assert!(
        note.contains("sanfran lacks entries")
            && note.contains("of origin boston by its restore request"),
        "{note}"
    );
    assert!(
        note.contains("re-create it from a fresh creation packet"),
        "{note}"
    );
    let text = lab.ok(&["-C", "boston", "status"]);
    assert!(text.contains("Retention: sanfran lacks entries"), "{text}");
}
