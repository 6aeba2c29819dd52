//! Versions larger than a chunk and the per-site limit on a version's size, end to end:
//! check-in over the limit (from a file and from an endless one), a packet over the
//! receiver's limit moved aside while the next packet applies, and a version of a few MiB
//! going through export, import and `cat` byte for byte.

use super::*;

/// The limit these tests give a site: small, so that the tests stay fast.
const LIMIT: &str = "1M";
const LIMIT_BYTES: usize = 1 << 20;

/// Deterministic, incompressible content of `len` bytes.
fn content(len: usize) -> Vec<u8> {
    xorshift_bytes(len)
}

fn write_bytes(lab: &Lab, rel: &str, bytes: &[u8]) -> String {
    std::fs::write(lab.path(rel), bytes).expect("write");
    rel.to_string()
}

/// The one line an error prints: stderr holds exactly one non-empty line.
fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    lines[0]
}

/// boston (default limit), sanfran (limit [`LIMIT`]) and bangalore, settled.
fn family_with_a_small_site() -> Lab {
    let lab = Lab::new();
    lab.init("boston", "proj");
    let (_, pkt) = lab.creation_packet("boston", "sanfran", "t", false, &[]);
    lab.ok(&[
        "mkreplica",
        "import",
        &pkt,
        "sanfran",
        "--max-version-size",
        LIMIT,
        "--identity",
        "sanfran.age",
    ]);
    lab.mkreplica("boston", "bangalore");
    lab.settle();
    lab
}

#[test]
fn a_checkin_over_the_site_limit_fails_with_one_line_and_changes_nothing() {
    let lab = Lab::new();
    lab.init_with("boston", "proj", &["--max-version-size", LIMIT]);
    let before = lab.digest("boston");
    let f = write_bytes(&lab, "big.bin", &content(LIMIT_BYTES + 1));
    let err = lab.fails(1, &["-C", "boston", "checkin", "big.bin", &f]);
    let line = one_line(&err);
    assert!(line.contains("big.bin"), "{line}");
    assert!(
        line.contains(&format!("limit of {LIMIT_BYTES} bytes")),
        "{line}"
    );
    assert_eq!(lab.digest("boston"), before);
    // An endless file stops at the limit with the same error.
    #[cfg(unix)]
    {
        let err = lab.fails(1, &["-C", "boston", "checkin", "zero", "/dev/zero"]);
        assert!(one_line(&err).contains("limit"), "{err}");
        assert_eq!(lab.digest("boston"), before);
    }
    // Content at the limit checks in.
    let f = write_bytes(&lab, "ok.bin", &content(LIMIT_BYTES));
    lab.ok(&["-C", "boston", "checkin", "ok.bin", &f]);
}

#[test]
fn a_packet_over_the_receivers_limit_is_moved_aside_and_the_next_one_applies() {
    let lab = family_with_a_small_site();
    let f = write_bytes(&lab, "big.bin", &content(2 * LIMIT_BYTES + 5));
    lab.ok(&["-C", "boston", "checkin", "big.bin", &f]);
    let big = lab.send("boston", "sanfran");
    assert_eq!(big.len(), 1);
    lab.ok(&["-C", "bangalore", "mkbrtype", "bl_dev"]);
    lab.send("bangalore", "sanfran");
    let before = lab.digest("sanfran");
    let err = lab.fails(1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains(&LIMIT_BYTES.to_string()), "{err}");
    let name = big[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(lab.path(&format!("sanfran/bays/refused/{name}")).exists());
    let reason = std::fs::read_to_string(lab.path(&format!("sanfran/bays/refused/{name}.reason")))
        .expect("reason");
    assert!(reason.contains(&LIMIT_BYTES.to_string()), "{reason}");
    assert!(packets_in(&lab.path("sanfran/bays/incoming")).is_empty());
    assert_ne!(lab.digest("sanfran"), before, "bangalore's packet applied");
    let d = lab.ok(&["-C", "sanfran", "describe", "brtype:bl_dev"]);
    assert!(d.contains("bangalore"), "{d}");
}

#[test]
fn a_version_of_a_few_mib_round_trips_through_export_import_and_cat() {
    let lab = Lab::pair();
    let data = content(3 * LIMIT_BYTES + 123);
    let f = write_bytes(&lab, "big.bin", &data);
    lab.ok(&["-C", "boston", "checkin", "data/big.bin", &f, "-m", "big"]);
    lab.send("boston", "sanfran");
    lab.import("sanfran");
    let out = lab.run(&["-C", "sanfran", "cat", "data/big.bin"]);
    assert!(out.status.success());
    assert!(out.stdout == data, "cat at sanfran differs from the file");
    assert_eq!(lab.digest("sanfran"), lab.digest("boston"));
}

#[test]
fn standard_input_over_the_limit_is_refused_and_within_it_checks_in() {
    let lab = Lab::new();
    lab.init_with("boston", "proj", &["--max-version-size", LIMIT]);
    let before = lab.digest("boston");
    let out = lab
        .cmd()
        .args(["-C", "boston", "checkin", "piped.bin"])
        .write_stdin(content(LIMIT_BYTES + 1))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&String::from_utf8_lossy(&out.stderr)).to_string();
    assert!(
        line.contains("standard input") && line.contains("limit"),
        "{line}"
    );
    assert_eq!(lab.digest("boston"), before);
    let data = content(LIMIT_BYTES);
    let out = lab
        .cmd()
        .args(["-C", "boston", "checkin", "piped.bin"])
        .write_stdin(data.clone())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cat = lab.run(&["-C", "boston", "cat", "piped.bin"]);
    assert!(cat.stdout == data, "piped content differs");
    // No spool file is left in the site directory.
    let left: Vec<_> = std::fs::read_dir(lab.path("boston"))
        .expect("site dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".checkin-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
