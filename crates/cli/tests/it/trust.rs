//! Sealed packets and signing keys at the command line (issue #20): sealed update and creation
//! packets, `lspacket` on them, a packet sealed for another site refused with a clear message,
//! a large sealed packet imported, and `rekey` reaching the siblings.

use super::*;

/// The recipient `msite identity` prints for `site`.
fn recipient(lab: &Lab, site: &str) -> String {
    lab.ok(&["-C", site, "identity"]).trim().to_string()
}

/// Exports from `from` to `to`, sealed to `rcpt`, into `to`'s incoming bay.
fn send_sealed(lab: &Lab, from: &str, to: &str, rcpt: &str) -> Vec<PathBuf> {
    lab.send_with(from, to, &["--encrypt-to", rcpt])
}

#[test]
fn a_sealed_update_packet_imports_at_its_site_only() {
    let lab = Lab::hub(None);
    lab.settle();
    lab.ok(&["-C", "boston", "mkbrtype", "secret_branch"]);
    let files = send_sealed(&lab, "boston", "sanfran", &recipient(&lab, "sanfran"));
    let raw = std::fs::read(&files[0]).unwrap();
    assert!(
        !raw.windows(13).any(|w| w == b"secret_branch"),
        "the sealed packet shows no name in the clear"
    );
    let listed = lab.ok(&["-C", "sanfran", "lspacket"]);
    assert!(
        listed.contains("sealed packet (age) for sanfran"),
        "{listed}"
    );
    assert!(listed.contains("this site's identity opens it"), "{listed}");
    let json = lab.json(&["-C", "sanfran", "lspacket", "--json"]);
    assert_eq!(json["sealed"][0]["for"][0], "sanfran", "{json}");
    assert_eq!(json["sealed"][0]["opens_here"], true, "{json}");
    let out = lab.import("sanfran");
    assert!(out.contains("1 applied"), "{out}");
    lab.ok(&["-C", "boston", "mkbrtype", "second"]);
    let wrong = recipient(&lab, "bangalore");
    send_sealed(&lab, "boston", "sanfran", &wrong);
    let before = lab.digest("sanfran");
    let err = lab.fails(1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(
        err.contains("sealed for sanfran") && err.contains(&wrong),
        "the refusal names who it is sealed for: {err}"
    );
    assert!(err.contains("not among the recipients"), "{err}");
    assert_eq!(lab.digest("sanfran"), before, "nothing applied");
    assert_eq!(packets_in(&lab.path("sanfran/bays/refused")).len(), 1);
}

#[test]
fn a_creation_packet_must_be_sealed_or_say_no_encrypt() {
    let lab = Lab::new();
    lab.init("boston", "proj");
    let err = lab.fails(2, &["-C", "boston", "mkreplica", "export", "delhi"]);
    assert!(
        err.contains("--encrypt-to") && err.contains("--no-encrypt"),
        "{err}"
    );
    let (rcpt, key) = lab.new_identity("delhi.age");
    let args = ["-C", "boston", "mkreplica", "export", "delhi", "--out", "t"];
    let bad = lab.fails(
        1,
        &[&args[..], &["--encrypt-to", "nope", "--key", &key]].concat(),
    );
    assert!(bad.contains("nope is not an age recipient"), "{bad}");
    let err = lab.fails(2, &[&args[..], &["--encrypt-to", &rcpt]].concat());
    assert!(
        err.contains("--key"),
        "the new replica's key is required: {err}"
    );
    let bad = lab.fails(1, &[&args[..], &["--no-encrypt", "--key", "nope"]].concat());
    assert!(bad.contains("nope is not a signing key"), "{bad}");
    lab.ok(&[&args[..], &["--encrypt-to", &rcpt, "--key", &key]].concat());
    let pkt = packets_in(&lab.path("t")).pop().unwrap();
    let pkt = pkt.to_string_lossy().into_owned();
    let err = lab.fails(1, &["mkreplica", "import", &pkt, "delhi"]);
    assert!(err.contains("--identity FILE"), "{err}");
    assert!(
        !lab.path("delhi/store").exists(),
        "no site made without the identity"
    );
    lab.new_identity("other.age");
    let import = ["mkreplica", "import", &pkt, "delhi", "--identity"];
    let err = lab.fails(1, &[&import[..], &["other.age"]].concat());
    assert!(err.contains("not among the recipients"), "{err}");
    lab.ok(&[&import[..], &["delhi.age"]].concat());
    assert_eq!(
        recipient(&lab, "delhi"),
        rcpt,
        "the new site keeps the identity"
    );
    let id = lab.json(&["-C", "delhi", "identity", "--json"]);
    assert_eq!(
        id["key"],
        key.as_str(),
        "delhi signs with the key of its file"
    );
    let listed = lab.ok(&["-C", "boston", "lsreplica", "--long"]);
    let fp = id["fingerprint"].as_str().unwrap();
    assert!(listed.contains(fp), "boston holds delhi's key: {listed}");
}

/// The creation packet carries the key the new site's operator gave: a site made with another
/// identity file is refused, naming both keys' fingerprints, and no site is left behind.
#[test]
fn a_creation_packet_for_another_key_is_refused() {
    let lab = Lab::new();
    lab.init("boston", "proj");
    let delhi = lab.json(&["identity", "--new", "delhi.age", "--json"]);
    let key = delhi["key"].as_str().unwrap();
    let args = ["-C", "boston", "mkreplica", "export", "delhi", "--out", "t"];
    lab.ok(&[&args[..], &["--no-encrypt", "--key", key]].concat());
    let pkt = packets_in(&lab.path("t")).pop().unwrap();
    let pkt = pkt.to_string_lossy().into_owned();
    let other = lab.json(&["identity", "--new", "other.age", "--json"]);
    let err = lab.fails(
        1,
        &[
            "mkreplica",
            "import",
            &pkt,
            "delhi",
            "--identity",
            "other.age",
        ],
    );
    for fp in [&delhi["fingerprint"], &other["fingerprint"]] {
        assert!(err.contains(fp.as_str().unwrap()), "{err} names {fp}");
    }
    assert!(!lab.path("delhi/store").exists(), "no site left behind");
    lab.ok(&[
        "mkreplica",
        "import",
        &pkt,
        "delhi",
        "--identity",
        "delhi.age",
    ]);
    lab.ok(&["-C", "delhi", "mkbrtype", "from_delhi"]);
    lab.export_to_dir("delhi", "boston", "boston/bays/incoming");
    let out = lab.import("boston");
    assert!(out.contains("1 applied"), "{out}");
}

#[test]
fn a_large_sealed_packet_imports() {
    let lab = Lab::hub(None);
    lab.settle();
    // About 6 MiB of content that does not compress, in one packet.
    let big = xorshift_bytes(6 << 20);
    std::fs::write(lab.path("big.bin"), &big).unwrap();
    lab.ok(&["-C", "boston", "mkelem", "big.bin"]);
    let src = lab.path("big.bin").to_string_lossy().into_owned();
    lab.ok(&["-C", "boston", "checkin", "big.bin", &src, "-m", "big"]);
    let files = send_sealed(&lab, "boston", "sanfran", &recipient(&lab, "sanfran"));
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 6 << 20);
    let out = lab.import("sanfran");
    assert!(out.contains("1 applied"), "{out}");
    let cat = lab
        .cmd()
        .args(["-C", "sanfran", "cat", "big.bin@@main/1"])
        .output()
        .unwrap();
    assert!(cat.stdout == big, "the content arrives whole");
}

#[test]
fn rekey_reaches_the_siblings_and_vouch_restores_a_lost_key() {
    let lab = Lab::hub(None);
    lab.settle();
    let out = lab.ok(&["-C", "sanfran", "rekey"]);
    let fp = out
        .split_whitespace()
        .nth(5)
        .unwrap()
        .trim_end_matches(';')
        .to_string();
    lab.ok(&["-C", "sanfran", "mkbrtype", "after_rekey"]);
    lab.settle();
    for site in ["boston", "bangalore"] {
        let long = lab.ok(&["-C", site, "lsreplica", "--long"]);
        assert!(
            long.contains(&fp),
            "{site} holds sanfran's new key {fp}:\n{long}"
        );
    }
    let lost = lab.ok(&["-C", "bangalore", "rekey", "--lost"]);
    let key = lost.lines().last().unwrap().trim().to_string();
    assert_eq!(key.len(), 64, "{lost}");
    let err = lab.fails(1, &["-C", "boston", "vouch", "boston", "--key", &key]);
    assert!(err.contains("cannot vouch for its own key"), "{err}");
    lab.ok(&["-C", "boston", "vouch", "bangalore", "--key", &key]);
    lab.ok(&["-C", "bangalore", "mkbrtype", "after_loss"]);
    lab.settle();
    assert_eq!(lab.digest("boston"), lab.digest("bangalore"));
    assert_eq!(lab.digest("boston"), lab.digest("sanfran"));
}

/// `seal-policy always` at one site reaches the family; then every export seals each packet to
/// its target's recipient, which the sites announced in their packets, without --encrypt-to;
/// `--no-encrypt` writes one in the clear; `never` turns it off everywhere.
#[test]
fn the_family_seal_policy_seals_every_export_to_its_target() {
    let lab = Lab::hub(None);
    lab.settle();
    let shown = lab.ok(&["-C", "sanfran", "seal-policy"]);
    assert!(shown.contains("has no sealing policy"), "{shown}");
    lab.ok(&["-C", "bangalore", "seal-policy", "always"]);
    lab.settle();
    let policy = lab.json(&["-C", "sanfran", "seal-policy", "--json"]);
    assert_eq!(policy["policy"], "always", "{policy}");
    assert_eq!(policy["set_by"], "bangalore", "{policy}");
    lab.ok(&["-C", "boston", "mkbrtype", "secret_branch"]);
    let bay = "sanfran/bays/incoming";
    let out = lab.export_to_dir("boston", "sanfran", bay);
    let sanfran = recipient(&lab, "sanfran");
    assert!(
        out.contains(&format!("sealed for sanfran ({sanfran})")),
        "{out}"
    );
    let files = packets_in(&lab.path(bay));
    let raw = std::fs::read(&files[0]).unwrap();
    assert!(raw.starts_with(b"\x89MSE"), "a sealed envelope (SPEC §9)");
    assert!(lab.import("sanfran").contains("1 applied"));
    lab.ok(&["-C", "boston", "mkbrtype", "open_branch"]);
    let args = ["-C", "boston", "syncreplica", "export", "--to", "bangalore"];
    let out = lab.ok(&[&args[..], &["--out", "clear", "--no-encrypt"]].concat());
    assert!(!out.contains("sealed for"), "{out}");
    let raw = std::fs::read(&packets_in(&lab.path("clear"))[0]).unwrap();
    assert!(raw.starts_with(b"\x89MSP"), "a plain part, in the clear");
    // A replica made under the policy is sealed to at once: its creator keeps the recipient
    // its creation packet was sealed to.
    lab.mkreplica("boston", "delhi");
    let out = lab.ok(&["-C", "boston", "syncreplica", "export", "--to", "delhi"]);
    assert!(out.contains("sealed for delhi"), "{out}");
    lab.ok(&["-C", "sanfran", "seal-policy", "never"]);
    lab.settle();
    let policy = lab.json(&["-C", "boston", "seal-policy", "--json"]);
    assert_eq!(policy["policy"], "never", "{policy}");
}
