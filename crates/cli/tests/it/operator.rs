//! What an operator trips on, end to end through the binary: listing the bays, naming the
//! sibling to export to, incarnations printed as times, the import summary for given files,
//! and a locked replica reporting its lock before anything else.

use serde_json::Value;

use super::badinput::{assert_clean, expect};
use super::{packets_in, Lab};

/// A settled hub family (boston, sanfran, bangalore) holding one element.
fn family() -> Lab {
    let lab = Lab::hub(None);
    lab.checkin("boston", "seed.c", "int seed;\n");
    lab.settle();
    lab
}

/// sanfran with a packet from boston in its incoming bay and one for boston in its outgoing
/// bay.
fn sanfran_with_full_bays(lab: &Lab) {
    lab.checkin("boston", "in.c", "int incoming;\n");
    assert_eq!(lab.send("boston", "sanfran").len(), 1);
    lab.ok(&["-C", "sanfran", "mkbrtype", "sf"]);
    lab.ok(&["-C", "sanfran", "syncreplica", "export", "--to", "boston"]);
    assert_eq!(packets_in(&lab.path("sanfran/bays/outgoing")).len(), 1);
}

#[test]
fn lspacket_without_files_lists_the_packets_in_both_bays() {
    let lab = family();
    sanfran_with_full_bays(&lab);
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "lspacket"]);
    let incoming = out.find("incoming bay (").expect("an incoming bay line");
    let outgoing = out.find("outgoing bay (").expect("an outgoing bay line");
    assert!(incoming < outgoing, "{out}");
    let (in_part, out_part) = out.split_at(outgoing);
    assert!(in_part.contains("bays/incoming): 1 packet\n"), "{out}");
    assert!(out_part.contains("bays/outgoing): 1 packet\n"), "{out}");
    // Each packet is described as `lspacket FILE` would, under its bay.
    assert!(in_part.contains("  bay: incoming\n"), "{out}");
    assert!(in_part.contains("  sender: boston"), "{out}");
    assert!(in_part.contains("  here: can be imported now"), "{out}");
    assert!(out_part.contains("  bay: outgoing\n"), "{out}");
    assert!(out_part.contains("  sender: sanfran"), "{out}");
    assert!(out_part.contains("  targets: boston"), "{out}");
    assert!(!out_part.contains("  here:"), "{out}");
    // The same packet as `lspacket FILE` shows it.
    let file = packets_in(&lab.path("sanfran/bays/incoming")).remove(0);
    let one = lab.ok(&["-C", "sanfran", "lspacket", &file.display().to_string()]);
    let body: Vec<&str> = one.lines().skip(1).collect();
    for line in &body {
        assert!(in_part.contains(line), "{line:?} missing from:\n{out}");
    }
    // JSON keeps the listing's shape, with the bay of each packet.
    let v = lab.json(&["-C", "sanfran", "lspacket", "--json"]);
    let packets = v["packets"].as_array().expect("packets");
    let bays: Vec<&str> = packets.iter().filter_map(|p| p["bay"].as_str()).collect();
    assert_eq!(bays, ["incoming", "outgoing"], "{v}");
    assert_eq!(packets[0]["importable_here"], "importable", "{v}");
    assert_eq!(packets[1]["importable_here"], Value::Null, "{v}");
    assert_eq!(v["unreadable"], Value::Array(Vec::new()), "{v}");
    let given = lab.json(&[
        "-C",
        "sanfran",
        "lspacket",
        "--json",
        &file.display().to_string(),
    ]);
    assert_eq!(given["packets"][0]["bay"], Value::Null, "{given}");
}

#[test]
fn lspacket_says_when_a_bay_is_empty_and_what_to_give_outside_a_site() {
    let lab = family();
    let (out, _) = expect(&lab, 0, &["-C", "bangalore", "lspacket"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("incoming bay (") && lines[0].ends_with("bays/incoming): empty"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("outgoing bay (") && lines[1].ends_with("bays/outgoing): empty"),
        "{out}"
    );
    let v = lab.json(&["-C", "bangalore", "lspacket", "--json"]);
    assert_eq!(v["packets"], Value::Array(Vec::new()), "{v}");
    // A file in the bay that is no packet is listed, with its bay, not skipped.
    std::fs::write(lab.path("bangalore/bays/incoming/junk.msp"), "not a packet").expect("write");
    let (out, _) = expect(&lab, 0, &["-C", "bangalore", "lspacket"]);
    assert!(
        out.contains("bays/incoming): 0 packets, 1 file that is no readable packet"),
        "{out}"
    );
    assert!(out.contains("junk.msp: unreadable: "), "{out}");
    let v = lab.json(&["-C", "bangalore", "lspacket", "--json"]);
    assert_eq!(v["unreadable"][0]["bay"], "incoming", "{v}");
    // Outside a site there is no bay: a usage error that says what to give.
    let (_, err) = expect(&lab, 2, &["lspacket"]);
    assert!(
        err.contains("the current directory holds no site")
            && err.contains("lspacket FILE")
            && err.contains("-C DIR")
            && err.contains("bays"),
        "{err}"
    );
}

#[test]
fn export_without_a_target_names_both_ways_to_give_one() {
    let lab = Lab::hub(None);
    let (_, err) = expect(&lab, 2, &["-C", "boston", "syncreplica", "export"]);
    assert!(
        err.contains("--to <NAME>") && err.contains("--all"),
        "{err}"
    );
    let (_, err) = expect(
        &lab,
        2,
        &[
            "-C",
            "boston",
            "syncreplica",
            "export",
            "--to",
            "sanfran",
            "--all",
        ],
    );
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn export_to_an_unknown_sibling_names_the_known_ones_and_lsreplica() {
    let lab = Lab::hub(None);
    let (_, err) = expect(
        &lab,
        1,
        &["-C", "boston", "syncreplica", "export", "--to", "nosuch"],
    );
    assert!(err.contains("no sibling named nosuch"), "{err}");
    assert!(
        err.contains("the siblings it knows are bangalore, sanfran"),
        "{err}"
    );
    assert!(
        err.contains("`msite lsreplica`") && !err.contains("`msite ls`"),
        "{err}"
    );
    // The list is bounded: ten names, then how many more.
    for i in 0..10 {
        lab.mkreplica("boston", &format!("s{i:02}"));
    }
    let (_, err) = expect(
        &lab,
        1,
        &["-C", "boston", "syncreplica", "export", "--to", "nosuch"],
    );
    assert!(
        err.contains("are bangalore, s00, s01, s02, s03, s04, s05, s06, s07, s08, and 2 more;"),
        "{err}"
    );
}

#[test]
fn importing_given_files_prints_the_summary_line() {
    let lab = family();
    lab.checkin("boston", "g.c", "int given;\n");
    lab.export_to_dir("boston", "sanfran", "given");
    let file = packets_in(&lab.path("given")).remove(0);
    let file = file.display().to_string();
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "syncreplica", "import", &file]);
    assert!(
        out.ends_with("1 applied, 0 already applied, 0 waiting, 0 refused.\n"),
        "{out}"
    );
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "syncreplica", "import", &file]);
    assert!(
        out.ends_with("0 applied, 1 already applied, 0 waiting, 0 refused.\n"),
        "{out}"
    );
}

/// sanfran restored from a backup taken before boston handed it label type REL, then (with
/// `restorereplica`) recovering.
fn sanfran_restored_after_a_handover(lab: &Lab) {
    lab.ok(&["-C", "boston", "mklbtype", "REL"]);
    lab.settle();
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    lab.ok(&["-C", "boston", "chmaster", "lbtype:REL", "sanfran"]);
    lab.settle();
    lab.ok(&["-C", "sanfran", "mklabel", "REL", "seed.c"]);
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("lose sanfran's store");
    lab.ok(&["restore", "bk", "sanfran"]);
}

#[test]
fn a_locked_replica_reports_its_lock_before_mastership() {
    let lab = family();
    sanfran_restored_after_a_handover(&lab);
    let label = ["-C", "sanfran", "mklabel", "REL", "seed.c"];
    // Restored, restorereplica not run yet.
    let (_, err) = expect(&lab, 1, &label);
    assert!(
        err.contains("restored from a backup") && err.contains("`msite restorereplica`"),
        "{err}"
    );
    assert!(!err.contains("mastered by"), "{err}");
    // Recovering: the lock, naming restorereplica and the siblings it waits for.
    lab.ok(&["-C", "sanfran", "restorereplica"]);
    let (_, err) = expect(&lab, 1, &label);
    assert!(
        err.contains("locked while it recovers")
            && err.contains("`msite restorereplica`")
            && err.contains("waits for recovery updates from bangalore, boston"),
        "{err}"
    );
    assert!(!err.contains("mastered by"), "{err}");
    // Every other local change too, whatever it would have found in the object base.
    let (_, key) = lab.new_identity("bangalore2.age");
    for args in [
        &["-C", "sanfran", "rmlabel", "REL", "seed.c"][..],
        &["-C", "sanfran", "chmaster", "lbtype:REL", "bangalore"],
        &["-C", "sanfran", "reqmaster", "lbtype:REL"],
        &["-C", "sanfran", "rmname", "seed.c"],
        &["-C", "sanfran", "mklbtype", "REL"],
        &["-C", "sanfran", "mkbrtype", "main"],
        &[
            "-C",
            "sanfran",
            "mkreplica",
            "export",
            "bangalore",
            "--no-encrypt",
            "--key",
            &key,
        ],
    ] {
        let (_, err) = expect(&lab, 1, args);
        assert!(err.contains("locked while it recovers"), "{args:?}: {err}");
    }
}

/// The incarnation `site` records for itself (`lsreplica --json`).
fn own_incarnation(lab: &Lab, site: &str) -> u64 {
    let v = lab.json(&["-C", site, "lsreplica", "--json"]);
    v["replicas"][0]["incarnation"]
        .as_u64()
        .expect("incarnation")
}

/// `text` shows `inc` as a time and never as the raw number.
fn shows_incarnation_as_time(text: &str, inc: u64) {
    let time = msite_core::incarnation_text(inc);
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    assert!(text.contains(&time), "{time} missing from:\n{text}");
    assert!(!text.contains(&inc.to_string()), "raw {inc} in:\n{text}");
}

#[test]
fn incarnations_are_printed_as_utc_times_and_kept_as_numbers_in_json() {
    let lab = family();
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    // A packet for sanfran from before its restore, kept aside.
    lab.ok(&["-C", "boston", "mkbrtype", "late"]);
    lab.export_to_dir("boston", "sanfran", "drawer");
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("lose sanfran's store");
    lab.ok(&["restore", "bk", "sanfran"]);
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "restorereplica"]);
    let inc = own_incarnation(&lab, "sanfran");
    assert!(out.contains("new incarnation 20"), "{out}");
    shows_incarnation_as_time(&out, inc);
    let (long, _) = expect(&lab, 0, &["-C", "sanfran", "lsreplica", "--long"]);
    shows_incarnation_as_time(&long, inc);
    assert!(long.contains("  incarnation: 0 (never restored)"), "{long}");
    let (desc, _) = expect(&lab, 0, &["-C", "sanfran", "describe", "replica:sanfran"]);
    shows_incarnation_as_time(&desc, inc);
    let v = lab.json(&["-C", "sanfran", "describe", "replica:sanfran", "--json"]);
    assert_eq!(v["incarnation"].as_u64(), Some(inc), "{v}");
    // The packets sanfran now writes carry its restore request.
    lab.ok(&["-C", "sanfran", "syncreplica", "export", "--to", "boston"]);
    let (pk, _) = expect(&lab, 0, &["-C", "sanfran", "lspacket"]);
    assert!(
        pk.contains("  restore request: sanfran incarnation 20"),
        "{pk}"
    );
    shows_incarnation_as_time(&pk, inc);
    // The stale packet: assessed, then refused, both incarnations as text.
    let stale = packets_in(&lab.path("drawer"))
        .remove(0)
        .display()
        .to_string();
    let (pk, _) = expect(&lab, 0, &["-C", "sanfran", "lspacket", &stale]);
    assert!(
        pk.contains("incarnation 0 (never restored) of this replica"),
        "{pk}"
    );
    shows_incarnation_as_time(&pk, inc);
    let out = lab.run(&["-C", "sanfran", "syncreplica", "import", &stale]);
    assert_clean(&out);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stale"), "{err}");
    shows_incarnation_as_time(&err, inc);
}

#[test]
fn the_resend_interval_is_shown_and_set_for_all_siblings_or_one() {
    let lab = Lab::hub(None);
    let (out, _) = expect(&lab, 0, &["-C", "boston", "resend-interval"]);
    assert!(
        out.contains(
            "boston resends unacknowledged entries to its siblings after 6h (the default)"
        ),
        "{out}"
    );
    let (out, _) = expect(&lab, 0, &["-C", "boston", "resend-interval", "90m"]);
    assert!(
        out.contains("to its siblings after 90m, or at once"),
        "{out}"
    );
    let to = ["-C", "boston", "resend-interval", "--to", "sanfran"];
    let (out, _) = expect(&lab, 0, &to);
    assert!(out.contains("to sanfran after 90m"), "{out}");
    let (out, _) = expect(&lab, 0, &[&to[..], &["1d"]].concat());
    assert!(out.contains("to sanfran after 1d"), "{out}");
    let (out, _) = expect(
        &lab,
        0,
        &["-C", "boston", "resend-interval", "--to", "bangalore"],
    );
    assert!(out.contains("to bangalore after 90m"), "{out}");
    let (_, err) = expect(&lab, 2, &["-C", "boston", "resend-interval", "6"]);
    assert!(
        err.contains("no time unit") && err.contains("like 6h"),
        "{err}"
    );
    let (_, err) = expect(
        &lab,
        1,
        &["-C", "boston", "resend-interval", "--to", "nosuch"],
    );
    assert!(err.contains("`msite lsreplica`"), "{err}");
}

#[test]
fn an_older_restore_request_relayed_by_a_third_replica_is_refused_as_stale() {
    let lab = family();
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    // sanfran's first restoration: its request reaches boston only.
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("lose sanfran's store");
    lab.ok(&["restore", "bk", "sanfran"]);
    lab.ok(&["-C", "sanfran", "restorereplica"]);
    let older = own_incarnation(&lab, "sanfran");
    lab.send("sanfran", "boston");
    lab.import("boston");
    // Lost again; the second restoration's request reaches bangalore only.
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("lose sanfran's store again");
    lab.ok(&["restore", "bk", "sanfran"]);
    lab.ok(&["-C", "sanfran", "restorereplica"]);
    let newer = own_incarnation(&lab, "sanfran");
    assert!(newer > older);
    lab.send("sanfran", "bangalore");
    lab.import("bangalore");
    // boston relays the older request to bangalore: refused as stale, with both times.
    lab.send("boston", "bangalore");
    let text = lab.said(&["-C", "bangalore", "syncreplica", "import"]);
    assert!(
        text.contains("stale packet from boston: it relays the restore request of sanfran"),
        "{text}"
    );
    assert!(
        text.contains(&msite_core::incarnation_text(older)),
        "{text}"
    );
    assert!(
        text.contains(&msite_core::incarnation_text(newer)),
        "{text}"
    );
    assert!(
        text.contains("0 applied, 0 already applied, 0 waiting, 1 refused."),
        "{text}"
    );
    // bangalore's answer gives boston the newer request; then everything settles.
    lab.send("bangalore", "boston");
    lab.import("boston");
    lab.settle();
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "normal", "{v}");
}
