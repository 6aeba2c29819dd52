//! Fork repair end to end (`msite repairfork`, docs/tour.md "Repairing a fork"): a site
//! restored with `--override` numbers again what its siblings already hold; the hub keeps the
//! family's timeline, the restored site gives up its own, gets the kept one back with
//! `restorereplica`, and writes what it gave up to files; the family converges.

use super::{packets_in, Lab};

/// The number a divergent refusal names in `text` ("entry N of origin NAME").
fn fork_number(text: &str, origin: &str) -> u64 {
    let tail = format!(" of origin {origin}");
    let at = text
        .find(&tail)
        .unwrap_or_else(|| panic!("no fork of {origin} in: {text}"));
    let head = &text[..at];
    let digits: String = head
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().expect("a number")
}

#[test]
fn a_fork_after_override_is_repaired_and_the_given_up_change_is_written_out() {
    let lab = Lab::hub(None);
    lab.settle();
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    let a = lab.write("a", "timeline A\n");
    lab.ok(&["-C", "sanfran", "checkin", "a", &a]);
    lab.settle();
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("rm store");
    lab.ok(&["restore", "bk", "sanfran"]);
    // --override with no answer yet: listed, and nothing changes without --yes.
    let out = lab.ok(&["-C", "sanfran", "restorereplica", "--override"]);
    assert!(out.contains("boston: no answer yet"), "{out}");
    assert!(out.contains("Run again with --yes"), "{out}");
    let err = lab.fails(1, &["-C", "sanfran", "mkbrtype", "x"]);
    assert!(err.contains("restorereplica"), "{err}");
    let out = lab.ok(&["-C", "sanfran", "restorereplica", "--override", "--yes"]);
    assert!(out.contains("is unlocked after restoration"), "{out}");
    let b = lab.write("b", "timeline B\n");
    lab.ok(&["-C", "sanfran", "checkin", "a", &b]);
    // The hub refuses sanfran's packet as divergent, naming the number and the command.
    lab.send("sanfran", "boston");
    let text = lab.said(&["-C", "boston", "syncreplica", "import"]);
    assert!(text.contains("msite repairfork"), "{text}");
    let n = fork_number(&text, "sanfran");
    // The hub keeps the family's timeline (A).
    let out = lab.ok(&[
        "-C",
        "boston",
        "repairfork",
        "--origin",
        "sanfran",
        "--number",
        &n.to_string(),
        "--keep",
        "this",
    ]);
    assert!(out.contains("Decided"), "{out}");
    let out = lab.ok(&["-C", "boston", "repairfork"]);
    assert!(
        out.contains(&format!("Fork of sanfran at {n}: the family keeps")),
        "{out}"
    );
    lab.send("boston", "sanfran");
    // sanfran adopts the decision, gives up its own timeline and locks itself.
    let err = lab.fails(1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("fork repair gave up"), "{err}");
    assert!(err.contains("restorereplica"), "{err}");
    lab.ok(&["-C", "sanfran", "restorereplica"]);
    // The packet that locked it predates the restoration: refused as stale, moved aside.
    let err = lab.fails(1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("stale packet from boston"), "{err}");
    lab.settle();
    // What sanfran gave up is written out, its content byte for byte.
    let out = lab.ok(&["-C", "sanfran", "repairfork", "--dump", "given-up"]);
    assert!(out.contains("given-up entries"), "{out}");
    let dumped: Vec<_> = std::fs::read_dir(lab.path("given-up"))
        .expect("dump dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(dumped.iter().any(|p| p.ends_with("README.txt")));
    let contents: Vec<String> = dumped
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "content"))
        .map(|p| std::fs::read_to_string(p).expect("content"))
        .collect();
    assert!(
        contents.contains(&"timeline B\n".to_string()),
        "{contents:?}"
    );
    // Converged on timeline A, one digest everywhere.
    for s in ["boston", "sanfran", "bangalore"] {
        assert_eq!(lab.ok(&["-C", s, "cat", "a"]), "timeline A\n", "at {s}");
    }
    let d = lab.digest("boston");
    assert_eq!(lab.digest("sanfran"), d);
    assert_eq!(lab.digest("bangalore"), d);
    assert!(packets_in(&lab.path("boston/bays/incoming")).is_empty());
}

#[test]
fn repairfork_lists_decisions_and_refuses_a_fork_it_cannot_see() {
    let lab = Lab::hub(None);
    let err = lab.fails(2, &["-C", "boston", "repairfork", "--origin", "sanfran"]);
    assert!(
        err.contains("--number") || err.contains("required"),
        "{err}"
    );
    let out = lab.ok(&["-C", "boston", "repairfork"]);
    assert!(out.contains("No fork decisions"), "{out}");
    let err = lab.fails(
        1,
        &[
            "-C",
            "boston",
            "repairfork",
            "--origin",
            "sanfran",
            "--number",
            "99",
            "--keep",
            "this",
        ],
    );
    assert!(err.contains("holds no entry 99 of sanfran"), "{err}");
}
