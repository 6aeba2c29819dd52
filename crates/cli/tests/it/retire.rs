//! Retiring a replica end to end (docs/protocol.md §10): `msite rmreplica`, then
//! `msite chmaster --all --from`, what `lsreplica`, `status` and `export` show afterwards, and
//! a packet of the retired replica refused with nothing changed.

use super::badinput::expect;
use super::{packets_in, Lab};

/// A settled hub family where sanfran masters a branch type and an element.
fn family() -> Lab {
    let lab = Lab::hub(None);
    lab.checkin("boston", "seed.c", "int seed;\n");
    lab.ok(&["-C", "sanfran", "mkbrtype", "sf"]);
    lab.checkin("sanfran", "sf.c", "int sf;\n");
    lab.settle();
    lab
}

#[test]
fn a_retired_replica_is_forgotten_and_its_objects_taken_over() {
    let lab = family();
    let (_, err) = expect(
        &lab,
        1,
        &["-C", "boston", "chmaster", "--all", "--from", "sanfran"],
    );
    assert!(
        err.contains("still exports") && err.contains("msite rmreplica sanfran"),
        "{err}"
    );
    let out = lab.ok(&["-C", "boston", "rmreplica", "sanfran"]);
    assert!(out.contains("Retired replica sanfran"), "{out}");
    assert!(out.contains("still masters 3 object(s)"), "{out}");
    let out = lab.ok(&["-C", "boston", "chmaster", "--all", "--from", "sanfran"]);
    assert!(
        out.contains("3 object(s) that sanfran mastered are now mastered by boston"),
        "{out}"
    );
    // boston may now change what only sanfran could.
    lab.checkin("boston", "sf.c", "int sf2;\n");
    listings_show_the_retirement(&lab);
}

/// lsreplica, status and export at boston after sanfran's retirement; bangalore takes it.
fn listings_show_the_retirement(lab: &Lab) {
    let ls = lab.ok(&["-C", "boston", "lsreplica"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with("sanfran"))
        .expect("sanfran listed");
    assert!(line.contains("retired by boston"), "{ls}");
    let v = lab.json(&["-C", "boston", "lsreplica", "--json"]);
    let sf = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "sanfran")
        .unwrap();
    assert_eq!(sf["retired"]["by"], "boston", "{v}");
    let st = lab.json(&["-C", "boston", "status", "--json"]);
    assert_eq!(st["retired"], serde_json::json!(["sanfran"]), "{st}");
    let names: Vec<&str> = st["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["bangalore"], "{st}");
    assert!(lab
        .ok(&["-C", "boston", "status"])
        .contains("Retired (msite rmreplica"));
    let (_, err) = expect(
        lab,
        1,
        &["-C", "boston", "syncreplica", "export", "--to", "sanfran"],
    );
    assert!(err.contains("sanfran was retired by boston"), "{err}");
    // export --all writes for bangalore only; the change reaches it.
    let bay = "bangalore/bays/incoming";
    let out = lab.ok(&[
        "-C",
        "boston",
        "syncreplica",
        "export",
        "--all",
        "--out",
        bay,
    ]);
    assert!(
        !out.contains("sanfran"),
        "export --all wrote for the retired replica: {out}"
    );
    assert!(!packets_in(&lab.path(bay)).is_empty(), "{out}");
    lab.import("bangalore");
    assert_eq!(lab.digest("boston"), lab.digest("bangalore"));
    let ls = lab.ok(&["-C", "bangalore", "lsreplica"]);
    assert!(ls.contains("retired by boston"), "{ls}");
    let d = lab.ok(&["-C", "bangalore", "describe", "brtype:sf"]);
    assert!(d.contains("boston"), "{d}");
}

#[test]
fn a_packet_of_a_retired_replica_is_refused_and_changes_nothing() {
    let lab = family();
    lab.ok(&["-C", "boston", "rmreplica", "sanfran"]);
    // sanfran does not know yet, and works on.
    lab.checkin("sanfran", "late.c", "int late;\n");
    let before = lab.digest("boston");
    assert_eq!(lab.send("sanfran", "boston").len(), 1);
    let (out, err) = expect(&lab, 1, &["-C", "boston", "syncreplica", "import"]);
    let all = format!("{out}{err}");
    assert!(
        all.contains("replica sanfran was retired by boston"),
        "{all}"
    );
    assert_eq!(lab.digest("boston"), before);
    assert_eq!(packets_in(&lab.path("boston/bays/refused")).len(), 1);
}

#[test]
fn the_requester_of_a_denied_mastership_request_is_told() {
    let lab = family();
    lab.ok(&["-C", "boston", "reqmaster-policy", "deny"]);
    lab.ok(&["-C", "sanfran", "reqmaster", "brtype:main"]);
    assert_eq!(lab.send("sanfran", "boston").len(), 1);
    let out = lab.import("boston");
    assert!(
        out.contains("sanfran is told with the next packets"),
        "{out}"
    );
    assert_eq!(lab.send("boston", "sanfran").len(), 1);
    let out = lab.import("sanfran");
    assert!(
        out.contains("boston refused this replica's request for mastership of brtype:main"),
        "{out}"
    );
    let text = lab.ok(&["-C", "sanfran", "status"]);
    assert!(
        text.contains("Mastership of brtype:main was refused by boston"),
        "{text}"
    );
    let st = lab.json(&["-C", "sanfran", "status", "--json"]);
    assert_eq!(st["mastership_denied"][0]["by"], "boston", "{st}");
    assert_eq!(st["mastership_denied"][0]["object"], "brtype:main", "{st}");
}
