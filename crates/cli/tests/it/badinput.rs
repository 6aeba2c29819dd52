//! The bad-input matrix: one test per class of input a hostile courier or a careless operator
//! can produce. Every case checks the exit code, that every line printed is at most
//! [`MAX_LINE`] characters and holds no raw control character, that the site's digest is
//! unchanged and `msite check` passes, and that the next genuine packet still applies.
//!
//! The cases run on the build's default backend; with the `rocks` feature each also runs on
//! RocksDB (`…_on_rocks`), except the store failure, which is made with an SQLite trigger.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::{packets_in, Lab};

/// The longest line any bad input may make msite print.
const MAX_LINE: usize = 500;

/// A guard against a command that hangs (on a FIFO): it is killed, and the test fails.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Stamps `$case` into a test on the default backend and, with the `rocks` feature, on RocksDB.
macro_rules! matrix {
    ($name:ident, $rocks:ident, $case:ident) => {
        #[test]
        fn $name() {
            $case(None);
        }

        #[cfg(feature = "rocks")]
        #[test]
        fn $rocks() {
            $case(Some("rocks"));
        }
    };
}

/// A settled hub family (boston, sanfran, bangalore) holding one element.
fn family(backend: Option<&'static str>) -> Lab {
    let lab = Lab::hub(backend);
    lab.checkin("boston", "seed.c", "int seed;\n");
    lab.settle();
    lab
}

/// Every line of `out` is bounded and free of raw control characters, and nothing panicked.
pub(super) fn assert_clean(out: &Output) {
    for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            let n = line.chars().count();
            let head: String = line.chars().take(200).collect();
            assert!(
                n <= MAX_LINE,
                "{what} has a line of {n} characters: {head:?}…"
            );
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "{what} has a raw control character: {head:?}"
            );
        }
        assert!(
            !text.contains("panicked") && !text.contains("internal error"),
            "{what}: {text}"
        );
    }
}

/// Runs `msite ARGS…` (killed if it hangs); asserts the exit code and clean output; returns
/// stdout and stderr.
pub(super) fn expect(lab: &Lab, code: i32, args: &[&str]) -> (String, String) {
    let out = lab
        .cmd()
        .args(args)
        .timeout(HANG_GUARD)
        .output()
        .expect("run msite");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "msite {}: expected exit code {code}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" ")
    );
    assert_clean(&out);
    (stdout, stderr)
}

/// What every case ends with: `site`'s state is `digest` still, `msite check` passes, and a
/// genuine packet from a sibling applies.
fn still_healthy(lab: &Lab, site: &str, digest: &str) {
    assert_eq!(lab.digest(site), digest, "the bad input changed {site}");
    expect(lab, 0, &["-C", site, "check"]);
    let sender = if site == "bangalore" {
        "sanfran"
    } else {
        "bangalore"
    };
    let brtype = format!("fresh_{}", &digest[..12]);
    lab.ok(&["-C", sender, "mkbrtype", &brtype]);
    let files = lab.send(sender, site);
    assert!(!files.is_empty(), "{sender} wrote no packet");
    let mut args = vec!["-C", site, "syncreplica", "import"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let (out, _) = expect(lab, 0, &args);
    assert!(out.contains("Applied"), "{out}");
    lab.ok(&["-C", site, "describe", &format!("brtype:{brtype}")]);
}

/// A new change at boston and the packet for sanfran that carries it, written to `out` (not a
/// bay); returns its only part.
fn fresh_packet(lab: &Lab, tag: &str, out: &str) -> PathBuf {
    let f = lab.write(&format!("w/{tag}.c"), &format!("int {tag};\n"));
    lab.ok(&["-C", "boston", "checkin", &format!("{tag}.c"), &f]);
    lab.export_to_dir("boston", "sanfran", out);
    let mut parts = packets_in(&lab.path(out));
    assert_eq!(parts.len(), 1, "one part: {parts:?}");
    parts.pop().expect("a part")
}

fn bay(lab: &Lab, site: &str) -> PathBuf {
    lab.path(&format!("{site}/bays/incoming"))
}

/// The genuine `packet` moved into sanfran's bay and imported: it applies.
fn genuine_after(lab: &Lab, packet: &Path) {
    let dest = bay(lab, "sanfran").join(packet.file_name().expect("name"));
    std::fs::rename(packet, &dest).expect("move");
    let (out, _) = expect(lab, 0, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("1 applied"), "{out}");
}

/// CRC-32C (Castagnoli), as the packet envelope uses it.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `bytes` (a whole part) with its envelope claiming `count` parts, crc fixed: the part hash
/// reads these bytes as zeros, so the part stays valid.
fn claim_parts(bytes: &mut [u8], count: u32) {
    bytes[40..44].copy_from_slice(&count.to_le_bytes());
    let crc = crc32c(&bytes[..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
}

/// Refused bay entries of sanfran, by name.
fn refused(lab: &Lab) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(lab.path("sanfran/bays/refused"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// --- A: no single file stops a site's imports --------------------------------------------

/// An SQLite trigger makes the store fail on boston's packet (a large blob), as SQLite's own
/// "string or blob too big" would: that packet is refused with the store's reason, bangalore's
/// packet in the same bay still applies in the same run, and once the store accepts it the
/// refused packet applies when moved back.
#[cfg(feature = "sqlite")]
#[test]
fn a_store_error_on_one_packet_refuses_it_and_the_bay_goes_on() {
    let lab = family(None);
    let text = incompressible(1);
    let big = lab.write("w/big.bin", &text);
    lab.ok(&["-C", "boston", "checkin", "big.bin", &big]);
    let from_boston = lab.send("boston", "sanfran");
    lab.ok(&["-C", "bangalore", "mkbrtype", "bl_more"]);
    lab.send("bangalore", "sanfran");
    let db = big_blobs_fail(&lab, "sanfran", true);
    let (out, err) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("the store failed while importing it"), "{out}");
    assert!(out.contains("string or blob too big"), "{out}");
    assert!(
        out.contains("1 applied, 0 already applied, 0 waiting, 1 refused."),
        "{out}"
    );
    assert!(err.contains("refused"), "{err}");
    lab.ok(&["-C", "sanfran", "describe", "brtype:bl_more"]);
    let name = from_boston[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(refused(&lab).contains(&name), "{:?}", refused(&lab));
    assert!(packets_in(&bay(&lab, "sanfran")).is_empty());
    expect(&lab, 0, &["-C", "sanfran", "check"]);
    big_blobs_fail(&lab, "sanfran", false);
    assert!(db.exists());
    std::fs::rename(
        lab.path("sanfran/bays/refused").join(&name),
        bay(&lab, "sanfran").join(&name),
    )
    .expect("move back");
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("1 applied"), "{out}");
    assert_eq!(lab.ok(&["-C", "sanfran", "cat", "big.bin"]), text);
}

/// 320 KB of hex digits that do not compress below 100 KB.
#[cfg(feature = "sqlite")]
fn incompressible(seed: u64) -> String {
    let mut text = String::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ seed;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{x:016x}"));
    }
    text
}

/// Makes (`on`) or stops making `site`'s SQLite store fail on every blob over 100 KB, as
/// SQLite's own "string or blob too big" does over its limit; returns the database file.
#[cfg(feature = "sqlite")]
fn big_blobs_fail(lab: &Lab, site: &str, on: bool) -> PathBuf {
    let db = lab.path(&format!("{site}/store/store.sqlite3"));
    assert!(db.exists(), "the SQLite store file is {}", db.display());
    let conn = rusqlite::Connection::open(&db).expect("open the store");
    let sql = if on {
        "CREATE TRIGGER too_big BEFORE INSERT ON kv_blobs WHEN length(NEW.v) > 100000 \
         BEGIN SELECT RAISE(ABORT, 'string or blob too big'); END;"
    } else {
        "DROP TRIGGER too_big;"
    };
    conn.execute_batch(sql).expect("trigger");
    db
}

/// When the store fails on two packets in a row, the site rather than the packets is likely
/// at fault: the first is refused, the run stops with the second left in the bay (exit 1, one
/// line naming `msite check`), and the next run goes on from there.
#[cfg(feature = "sqlite")]
#[test]
fn a_store_failing_on_two_packets_in_a_row_stops_the_run() {
    let lab = family(None);
    for (site, seed) in [("boston", 1), ("bangalore", 2)] {
        let big = lab.write(&format!("w/{site}.bin"), &incompressible(seed));
        lab.ok(&["-C", site, "checkin", &format!("{site}.bin"), &big]);
        lab.send(site, "sanfran");
    }
    let digest = lab.digest("sanfran");
    big_blobs_fail(&lab, "sanfran", true);
    let (out, err) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
    assert_eq!(
        out.matches("the store failed while importing it").count(),
        1,
        "{out}"
    );
    assert!(
        err.contains("the store failed on the packet before too"),
        "{err}"
    );
    assert!(err.contains("msite check"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(packets_in(&bay(&lab, "sanfran")).len(), 1);
    assert_eq!(refused(&lab).len(), 2);
    assert_eq!(lab.digest("sanfran"), digest);
    let (out, _) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(
        out.contains("0 applied, 0 already applied, 0 waiting, 1 refused."),
        "{out}"
    );
    assert!(packets_in(&bay(&lab, "sanfran")).is_empty());
    assert_eq!(lab.digest("sanfran"), digest);
    expect(&lab, 0, &["-C", "sanfran", "check"]);
    // Once the store accepts them, the refused packets apply when moved back.
    big_blobs_fail(&lab, "sanfran", false);
    for p in packets_in(&lab.path("sanfran/bays/refused")) {
        std::fs::rename(&p, bay(&lab, "sanfran").join(p.file_name().expect("name")))
            .expect("move back");
    }
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("2 applied"), "{out}");
    lab.settle();
    assert_eq!(lab.digest("sanfran"), lab.digest("boston"));
}

/// A replica restored from a backup is locked until `msite restorereplica`: its packets are not
/// the packets' fault, so they stay in the bay, nothing is moved aside, and the message (exit
/// 1) names the next step.
fn locked_keeps_packets(backend: Option<&'static str>) {
    let lab = family(backend);
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("rm store");
    lab.ok(&["restore", "bk", "sanfran"]);
    let digest = lab.digest("sanfran");
    lab.ok(&["-C", "boston", "mkbrtype", "while_locked"]);
    let sent = lab.send("boston", "sanfran");
    let (_, err) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("msite restorereplica"), "{err}");
    assert!(err.contains("stay in the incoming bay"), "{err}");
    assert_eq!(packets_in(&bay(&lab, "sanfran")), sent);
    assert!(refused(&lab).is_empty(), "{:?}", refused(&lab));
    assert_eq!(lab.digest("sanfran"), digest);
    expect(&lab, 0, &["-C", "sanfran", "check"]);
}
matrix!(
    a_locked_replica_keeps_its_packets_in_the_bay,
    a_locked_replica_keeps_its_packets_in_the_bay_on_rocks,
    locked_keeps_packets
);

// --- B: bounded messages -------------------------------------------------------------------

/// A genuine part whose envelope claims 2^20 parts: one bounded line (a range and a count),
/// from import and from lspacket, text and JSON.
fn a_million_parts(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    let part = fresh_packet(&lab, "million", "held");
    let mut bytes = std::fs::read(&part).expect("read");
    claim_parts(&mut bytes, 1 << 20);
    let fake = bay(&lab, "sanfran").join("claims.p1of1048576.msp");
    std::fs::write(&fake, &bytes).expect("write");
    let (_, err) = expect(&lab, 3, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(
        err.contains("parts 2-1048576 of 1048576") && err.contains("(1048575 parts)"),
        "{err}"
    );
    let f = fake.display().to_string();
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "lspacket", &f]);
    assert!(out.contains("parts 2-1048576"), "{out}");
    let (json, _) = expect(&lab, 0, &["-C", "sanfran", "lspacket", &f, "--json"]);
    assert!(json.len() < 20_000, "{} bytes of JSON", json.len());
    std::fs::remove_file(&fake).expect("remove");
    // A header listing 30,000 origins in its rows and 30,000 targets: every list printed is
    // cut to a few items and a count.
    let long = rewrite_header(&lab, &part, &lab.path("long"), |h| {
        for k in 0..30_000u32 {
            let mut id = [0xa5; 16];
            id[..4].copy_from_slice(&k.to_le_bytes());
            let origin = msite_packet::wire::Id(id);
            h.bases.push(msite_packet::wire::Base {
                origin,
                number: 1,
                hash: [0; 32],
            });
            h.sender_row
                .push(msite_packet::wire::RowCell { origin, number: 1 });
            let mut t = h.targets[0].clone();
            t.replica = origin;
            h.targets.push(t);
        }
    });
    let l = long.display().to_string();
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "lspacket", &l]);
    assert!(out.contains("and 29991 more"), "{out}");
    std::fs::rename(&long, bay(&lab, "sanfran").join("long.msp")).expect("move");
    let (_, err) = expect(&lab, 3, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("more"), "{err}");
    std::fs::remove_file(bay(&lab, "sanfran").join("long.msp")).expect("remove");
    still_healthy(&lab, "sanfran", &digest);
    genuine_after(&lab, &part);
}
matrix!(
    a_packet_claiming_a_million_parts_gets_bounded_messages,
    a_packet_claiming_a_million_parts_gets_bounded_messages_on_rocks,
    a_million_parts
);

// --- C: non-regular files ------------------------------------------------------------------

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(st.success());
}

/// A FIFO given by path is an error, not a hang; in the bay, a FIFO, a dangling link and a
/// directory named like packets are refused and moved aside, and a genuine packet beside
/// them applies in the same run.
#[cfg(unix)]
fn non_regular_files(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    let fifo = lab.path("pipe.msp");
    mkfifo(&fifo);
    let f = fifo.display().to_string();
    for args in [
        vec!["-C", "sanfran", "syncreplica", "import", f.as_str()],
        vec!["-C", "sanfran", "lspacket", f.as_str()],
    ] {
        let (_, err) = expect(&lab, 1, &args);
        assert!(err.contains("is not a regular file (a FIFO)"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let b = bay(&lab, "sanfran");
    mkfifo(&b.join("fifo.msp"));
    std::os::unix::fs::symlink(lab.path("nowhere.msp"), b.join("dangling.msp")).expect("link");
    std::fs::create_dir(b.join("dir.msp")).expect("mkdir");
    let (out, _) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
    for (name, what) in [
        ("fifo.msp", "a FIFO"),
        ("dangling.msp", "a dangling symbolic link"),
        ("dir.msp", "a directory"),
    ] {
        assert!(
            out.contains(&format!("Refused {name}: not a regular file ({what}")),
            "{out}"
        );
    }
    assert_eq!(
        refused(&lab),
        [
            "dangling.msp",
            "dangling.msp.reason",
            "dir.msp",
            "dir.msp.reason",
            "fifo.msp",
            "fifo.msp.reason"
        ]
    );
    assert!(std::fs::read_dir(&b).expect("bay").next().is_none());
    still_healthy(&lab, "sanfran", &digest);
    let digest = lab.digest("sanfran");
    // And in the same run as bad entries, a genuine packet applies.
    let part = fresh_packet(&lab, "beside", "held");
    mkfifo(&b.join("again.msp"));
    std::fs::rename(&part, b.join(part.file_name().expect("name"))).expect("move");
    let (out, _) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(
        out.contains("1 applied, 0 already applied, 0 waiting, 1 refused."),
        "{out}"
    );
    assert_ne!(lab.digest("sanfran"), digest);
}
#[cfg(unix)]
matrix!(
    non_regular_files_are_never_opened_and_never_stay_in_the_bay,
    non_regular_files_are_never_opened_and_never_stay_in_the_bay_on_rocks,
    non_regular_files
);

// --- D: refusal evidence is never overwritten ----------------------------------------------

fn evidence_kept(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    for (k, junk) in [b"first junk".as_slice(), b"second junk", b"third junk"]
        .iter()
        .enumerate()
    {
        std::fs::write(bay(&lab, "sanfran").join("same.msp"), junk).expect("write");
        let (_, err) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
        assert!(err.contains("same.msp"), "{err}");
        let dest = if k == 0 {
            "same.msp".to_string()
        } else {
            format!("same.msp.{k}")
        };
        let kept = std::fs::read(lab.path("sanfran/bays/refused").join(&dest)).expect("kept");
        assert_eq!(kept, *junk);
        let reason = lab
            .path("sanfran/bays/refused")
            .join(format!("{dest}.reason"));
        assert!(std::fs::read_to_string(reason)
            .expect("reason")
            .contains("not an msite packet"));
    }
    assert_eq!(refused(&lab).len(), 6, "{:?}", refused(&lab));
    still_healthy(&lab, "sanfran", &digest);
}
matrix!(
    refusal_evidence_is_never_overwritten,
    refusal_evidence_is_never_overwritten_on_rocks,
    evidence_kept
);

// --- E: control characters ----------------------------------------------------------------

/// Names with control characters are refused at creation, naming the character as an escape;
/// a multi-line comment is accepted and listed escaped; a packet whose header holds control
/// characters is listed escaped.
fn control_characters(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("boston");
    let f = lab.write("w/ctl.c", "int c;\n");
    let (_, key) = lab.new_identity("tokyo.age");
    for (args, shown) in [
        (vec!["-C", "boston", "mkbrtype", "evil\nname"], "\\n"),
        (vec!["-C", "boston", "mklbtype", "red\u{1b}[31m"], "\\u{1b}"),
        (vec!["-C", "boston", "mkelem", "a\rb.c"], "\\r"),
        (
            vec!["-C", "boston", "checkin", "x\u{7}.c", f.as_str()],
            "\\u{7}",
        ),
        (
            vec![
                "-C",
                "boston",
                "checkin",
                "ok.c",
                f.as_str(),
                "-m",
                "bad\u{1b}]0;title\u{7}",
            ],
            "\\u{1b}",
        ),
        (
            vec![
                "-C",
                "boston",
                "mkreplica",
                "export",
                "tok\nyo",
                "--no-encrypt",
                "--key",
                &key,
            ],
            "\\n",
        ),
    ] {
        let (_, err) = expect(&lab, 1, &args);
        assert!(
            err.contains(&format!("contains the control character {shown}")),
            "{err}"
        );
    }
    assert_eq!(
        lab.digest("boston"),
        digest,
        "a refused name changed boston"
    );
    lab.ok(&[
        "-C",
        "boston",
        "checkin",
        "ml.c",
        &f,
        "-m",
        "line one\nline two",
    ]);
    let (hist, _) = expect(&lab, 0, &["-C", "boston", "lshistory", "ml.c"]);
    assert!(hist.contains("\"line one\\nline two\""), "{hist}");
    assert_eq!(hist.lines().count(), 1, "{hist}");
    // A header carrying control characters (as a hostile sibling could write) is listed
    // escaped, inside a site and outside.
    let part = fresh_packet(&lab, "hdr", "held");
    let evil = rewrite_header(&lab, &part, &lab.path("evil"), |h| {
        h.family_name = "proj\u{1b}[2J\nforged line".into();
        h.sender_name = "bos\u{1b}[31mton".into();
    });
    let e = evil.display().to_string();
    let (out, _) = expect(&lab, 0, &["lspacket", &e]);
    assert!(out.contains("proj\\u{1b}[2J\\nforged line"), "{out}");
    assert!(out.contains("bos\\u{1b}[31mton"), "{out}");
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "lspacket", &e]);
    assert!(out.contains("proj\\u{1b}[2J\\nforged line"), "{out}");
    let digest = lab.digest("sanfran");
    still_healthy(&lab, "sanfran", &digest);
}
matrix!(
    control_characters_are_refused_in_names_and_escaped_in_listings,
    control_characters_are_refused_in_names_and_escaped_in_listings_on_rocks,
    control_characters
);

/// The packet `part` written again into `dir` with its header changed by `f` (and a new
/// packet id): what a sibling running other code could send.
fn rewrite_header(
    lab: &Lab,
    part: &Path,
    dir: &Path,
    f: impl FnOnce(&mut msite_packet::wire::Header),
) -> PathBuf {
    rewrite(lab, part, dir, f, |_| {})
}

/// The packet `part` (boston's) written again into `dir` with its header changed by `f` and
/// its records by `g` (and a packet id made from `dir`'s name), signed with boston's key: what
/// boston would send if it ran other code.
fn rewrite(
    lab: &Lab,
    part: &Path,
    dir: &Path,
    f: impl FnOnce(&mut msite_packet::wire::Header),
    g: impl FnOnce(&mut Vec<msite_packet::Record>),
) -> PathBuf {
    let r = msite_packet::open(part).expect("open");
    let kind = r.info().kind;
    let mut header = r.header().clone();
    f(&mut header);
    let mut records: Vec<msite_packet::Record> =
        r.records().collect::<Result<_, _>>().expect("records");
    g(&mut records);
    let mut id = [7u8; 16];
    for (i, b) in dir.to_string_lossy().bytes().enumerate() {
        id[i % 16] = id[i % 16].rotate_left(3) ^ b;
    }
    std::fs::create_dir_all(dir).expect("mkdir");
    let id = msite_packet::wire::Id(id);
    let env: std::sync::Arc<dyn msite_core::Env> = std::sync::Arc::new(msite_core::SystemEnv);
    let boston = msite_cli::site::open_site(&lab.path("boston"), env).expect("boston's site");
    // boston's chain heads name the hashes of its entries as rewritten, signed again.
    for head in &mut header.heads {
        let entry = records.iter().find_map(|r| match r {
            msite_packet::Record::Entry(b) => msite_packet::decode_entry(b)
                .ok()
                .filter(|e| e.origin == head.origin && e.number == head.number),
            _ => None,
        });
        if let (Some(e), true) = (entry, head.origin.0 == boston.replica.id().0) {
            *head = boston.replica.sign_head_for_test(e.number, &e.hash);
        }
    }
    boston.replica.sign_header_for_test(&mut header, kind, &id);
    drop(boston);
    let mut opts = msite_packet::WriteOptions::new(id);
    opts.minor = msite_packet::format::FORMAT_MINOR;
    let mut w =
        msite_packet::PacketWriter::create(dir, "rewritten", kind, &header, opts).expect("writer");
    for rec in &records {
        w.push_record(rec).expect("record");
    }
    let mut written = w.finish().expect("finish");
    written.parts.pop().expect("a part")
}

/// The entries of boston's packet made again with the new element's path changed to one with
/// control characters, the hash chain recomputed: what a sibling running older or hostile code
/// could send. It applies (the family's history is not refused), and every listing shows the
/// path escaped, while JSON carries it as it is.
fn foreign_control_name(backend: Option<&'static str>) {
    let lab = family(backend);
    let part = fresh_packet(&lab, "plain", "held");
    let evil = "evil\n\u{1b}[31m.c";
    let forged = rewrite(
        &lab,
        &part,
        &lab.path("forged"),
        |_| {},
        |r| rename_new_element(r, evil),
    );
    std::fs::rename(&forged, bay(&lab, "sanfran").join("forged.msp")).expect("move");
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("1 applied"), "{out}");
    let shown = "evil\\n\\u{1b}[31m.c";
    let selector = format!("elem:{evil}");
    for args in [
        vec!["-C", "sanfran", "ls"],
        vec!["-C", "sanfran", "ls", "--long"],
        vec!["-C", "sanfran", "lshistory", evil],
        vec!["-C", "sanfran", "describe", selector.as_str()],
    ] {
        let (out, _) = expect(&lab, 0, &args);
        assert!(out.contains(shown), "{}: {out}", args.join(" "));
    }
    let (json, _) = expect(&lab, 0, &["-C", "sanfran", "ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let paths: Vec<&str> = v["elements"]
        .as_array()
        .expect("elements")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        paths.contains(&evil),
        "JSON carries the name as it is: {paths:?}"
    );
    let digest = lab.digest("sanfran");
    still_healthy(&lab, "sanfran", &digest);
}
matrix!(
    a_siblings_name_with_control_characters_applies_and_prints_escaped,
    a_siblings_name_with_control_characters_applies_and_prints_escaped_on_rocks,
    foreign_control_name
);

/// Renames the element the entries among `records` create to `path`, and re-chains the hashes.
fn rename_new_element(records: &mut [msite_packet::Record], path: &str) {
    use msite_packet::{decode_entry, encode_entry, entry_hash, wire, Record};
    let mut prev: Option<wire::Hash> = None;
    for rec in records.iter_mut() {
        let Record::Entry(bytes) = rec else { continue };
        let mut e = decode_entry(bytes).expect("entry");
        if let Some(p) = prev {
            e.prev = p;
        }
        if let wire::Op::MkElem { path: p, .. } = &mut e.op {
            *p = path.to_string();
        }
        e.hash = entry_hash(&e);
        prev = Some(e.hash);
        *bytes = encode_entry(&e);
    }
}

// --- F: site.json that disagrees with its store --------------------------------------------

fn site_json_mismatch(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    let path = lab.path("sanfran/site.json");
    let good = std::fs::read_to_string(&path).expect("site.json");
    let v: serde_json::Value = serde_json::from_str(&good).expect("json");
    for field in ["replica_name", "family_id", "replica_id"] {
        let mut bad = v.clone();
        let wrong = if field == "replica_name" {
            "tokyo".to_string()
        } else {
            "0".repeat(32)
        };
        bad[field] = serde_json::Value::String(wrong.clone());
        std::fs::write(&path, serde_json::to_string_pretty(&bad).expect("json")).expect("write");
        let (_, err) = expect(&lab, 1, &["-C", "sanfran", "check"]);
        let ours = v[field].as_str().expect("a string");
        assert!(
            err.contains(&format!(
                "{field} is \"{wrong}\" in site.json but \"{ours}\" in the store"
            )),
            "{err}"
        );
        assert!(err.contains("msite restore"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    std::fs::write(&path, good).expect("write");
    still_healthy(&lab, "sanfran", &digest);
}
matrix!(
    check_reports_a_site_json_that_disagrees_with_its_store,
    check_reports_a_site_json_that_disagrees_with_its_store_on_rocks,
    site_json_mismatch
);

// --- G: leftovers of an interrupted export ------------------------------------------------

fn leftovers(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    let out = lab.path("sanfran/bays/outgoing");
    let usb = lab.path("usb");
    std::fs::create_dir_all(&usb).expect("mkdir");
    let own = [
        out.join(".sync_sanfran_to_boston_1700000000000_7.p1.msp.tmp"),
        out.join(".sync_sanfran_to_boston_1700000000000_7.p2.msp.tmp"),
        usb.join(".repl_sanfran_to_tokyo_1700000000000_1.p1.msp.tmp"),
    ];
    let others = [
        out.join(".sync_boston_to_sanfran_1700000000000_7.p1.msp.tmp"),
        out.join("notes.tmp"),
        usb.join(".sync_bangalore_to_boston_1700000000000_3.p1.msp.tmp"),
    ];
    for p in own.iter().chain(&others) {
        std::fs::write(p, b"half a packet").expect("write");
    }
    // Any command that opens the site clears its outgoing bay; an export clears its --out.
    lab.ok(&["-C", "sanfran", "lsepoch"]);
    assert!(!own[0].exists() && !own[1].exists());
    assert!(own[2].exists(), "only the export into usb/ clears usb/");
    lab.ok(&["-C", "sanfran", "mkbrtype", "sf_more"]);
    lab.export_to_dir("sanfran", "boston", "usb");
    assert!(!own[2].exists());
    for p in &others {
        assert!(p.exists(), "{} is not sanfran's and must stay", p.display());
    }
    let digest2 = lab.digest("sanfran");
    assert_ne!(digest, digest2);
    still_healthy(&lab, "sanfran", &digest2);
}
matrix!(
    an_interrupted_exports_temporary_files_are_removed_by_the_next_command,
    an_interrupted_exports_temporary_files_are_removed_by_the_next_command_on_rocks,
    leftovers
);

// --- Classes that already held ------------------------------------------------------------

/// Truncated copies of a genuine packet and copies with single bits flipped (envelope, header,
/// body, trailer) are each refused and moved aside; the genuine packet applies afterwards.
fn damaged(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    let part = fresh_packet(&lab, "damaged", "held");
    let bytes = std::fs::read(&part).expect("read");
    let n = bytes.len();
    let mut bad: Vec<Vec<u8>> = [0, 7, 47, 60, n / 2, n - 57, n - 1]
        .iter()
        .map(|&k| bytes[..k].to_vec())
        .collect();
    for pos in [3, 20, 50, n / 2, n - 40, n - 1] {
        let mut b = bytes.clone();
        b[pos] ^= 0x10;
        bad.push(b);
    }
    for b in &bad {
        std::fs::write(bay(&lab, "sanfran").join("damaged.msp"), b).expect("write");
        let (_, err) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
        assert!(err.contains("refused"), "{err}");
        assert!(packets_in(&bay(&lab, "sanfran")).is_empty());
        assert_eq!(lab.digest("sanfran"), digest);
    }
    assert_eq!(refused(&lab).len(), 2 * bad.len());
    still_healthy(&lab, "sanfran", &digest);
    genuine_after(&lab, &part);
}
matrix!(
    truncated_and_bit_flipped_packets_are_refused,
    truncated_and_bit_flipped_packets_are_refused_on_rocks,
    damaged
);

/// A chunk replaced by a zstd frame of 1 GiB of zeros (stated size unchanged): refused
/// without decompressing more than the chunk's stated size.
fn bomb(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    let part = fresh_packet(&lab, "bomb", "held");
    let bytes = std::fs::read(&part).expect("read");
    let header_len = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes")) as usize;
    let chunk = 48 + header_len + 4;
    assert_eq!(bytes[chunk], 0x01, "a chunk follows the header");
    let clen = u32::from_le_bytes(bytes[chunk + 8..chunk + 12].try_into().expect("4")) as usize;
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).expect("encoder");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &zeros).expect("compress");
    }
    let frame = enc.finish().expect("finish");
    let mut head = bytes[chunk..chunk + 12].to_vec();
    head[1] = 1;
    head[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    let mut crc_input = head.clone();
    crc_input.extend_from_slice(&frame);
    let mut out = bytes[..chunk].to_vec();
    out.extend_from_slice(&head);
    out.extend_from_slice(&crc32c(&crc_input).to_le_bytes());
    out.extend_from_slice(&frame);
    out.extend_from_slice(&bytes[chunk + 16 + clen..]);
    std::fs::write(bay(&lab, "sanfran").join("bomb.msp"), &out).expect("write");
    let (_, err) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("does not decompress"), "{err}");
    still_healthy(&lab, "sanfran", &digest);
    genuine_after(&lab, &part);
}
matrix!(
    a_zstd_bomb_is_refused,
    a_zstd_bomb_is_refused_on_rocks,
    bomb
);

/// A packet of another family is refused and changes nothing.
fn foreign(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    lab.init("tokyo", "other");
    lab.mkreplica("tokyo", "sanfran2");
    lab.ok(&["-C", "tokyo", "mkbrtype", "tk"]);
    lab.export_to_dir("tokyo", "sanfran2", "sanfran/bays/incoming");
    let (_, err) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("belongs to family other"), "{err}");
    still_healthy(&lab, "sanfran", &digest);
}
matrix!(
    a_foreign_familys_packet_is_refused,
    a_foreign_familys_packet_is_refused_on_rocks,
    foreign
);

/// A packet imported again (a replay) changes nothing and exits 0.
fn replayed(backend: Option<&'static str>) {
    let lab = family(backend);
    let part = fresh_packet(&lab, "replay", "held");
    let copy = lab.path("replay-copy.msp");
    std::fs::copy(&part, &copy).expect("copy");
    genuine_after(&lab, &part);
    let digest = lab.digest("sanfran");
    std::fs::rename(&copy, bay(&lab, "sanfran").join("replay.msp")).expect("move");
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(
        out.contains("was imported before; nothing changed"),
        "{out}"
    );
    assert!(packets_in(&bay(&lab, "sanfran")).is_empty());
    still_healthy(&lab, "sanfran", &digest);
}
matrix!(
    a_replayed_packet_changes_nothing,
    a_replayed_packet_changes_nothing_on_rocks,
    replayed
);

/// Parts of two split packets under one name prefix are told apart by packet id: each waits
/// for its own missing parts (exit 3), and both apply once their parts are all there.
fn mixed_parts(backend: Option<&'static str>) {
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    let mut split = Vec::new();
    for (site, dir) in [("boston", "from-boston"), ("bangalore", "from-bangalore")] {
        let mut text = String::new();
        for i in 0..3000u32 {
            text.push_str(&format!("{site} {:08x}\n", i.wrapping_mul(2_654_435_761)));
        }
        let f = lab.write(&format!("w/{site}.txt"), &text);
        lab.ok(&["-C", site, "checkin", &format!("{site}.txt"), &f]);
        lab.ok(&[
            "-C",
            site,
            "syncreplica",
            "export",
            "--to",
            "sanfran",
            "--out",
            dir,
            "--max-size",
            "8K",
        ]);
        let parts = packets_in(&lab.path(dir));
        assert!(parts.len() >= 2, "{parts:?}");
        split.push(parts);
    }
    let n = |v: &Vec<PathBuf>| v.len();
    let b = bay(&lab, "sanfran");
    std::fs::copy(
        &split[0][0],
        b.join(format!("mix.p1of{}.msp", n(&split[0]))),
    )
    .expect("copy");
    std::fs::copy(
        &split[1][1],
        b.join(format!("mix.p2of{}.msp", n(&split[1]))),
    )
    .expect("copy");
    let (_, err) = expect(&lab, 3, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(err.contains("2 packets must wait"), "{err}");
    assert_eq!(lab.digest("sanfran"), digest);
    expect(&lab, 0, &["-C", "sanfran", "check"]);
    for f in packets_in(&b) {
        std::fs::remove_file(f).expect("remove");
    }
    for parts in &split {
        for p in parts {
            std::fs::rename(p, b.join(p.file_name().expect("name"))).expect("move");
        }
    }
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("2 applied"), "{out}");
    let digest = lab.digest("sanfran");
    still_healthy(&lab, "sanfran", &digest);
}
matrix!(
    parts_of_two_packets_under_one_name_are_told_apart,
    parts_of_two_packets_under_one_name_are_told_apart_on_rocks,
    mixed_parts
);

/// While one msite works on a site, a second is refused with the lock error: at once with
/// `--wait 0`, after its wait with `--wait SECONDS`.
fn two_processes(backend: Option<&'static str>) {
    use std::io::BufRead as _;
    let lab = family(backend);
    let digest = lab.digest("sanfran");
    let mut watcher = std::process::Command::new(assert_cmd::cargo::cargo_bin("msite"))
        .current_dir(lab.path(""))
        .args([
            "-C",
            "sanfran",
            "syncreplica",
            "import",
            "--watch",
            "--max-seconds",
            "300",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    std::io::BufReader::new(watcher.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    assert!(first.starts_with("Watching"), "{first}");
    let (_, err) = expect(
        &lab,
        1,
        &["-C", "sanfran", "--wait", "0", "mkbrtype", "second"],
    );
    assert!(err.contains("in use by another process"), "{err}");
    assert!(!err.contains("waited"), "{err}");
    let (_, err) = expect(
        &lab,
        1,
        &["-C", "sanfran", "--wait", "0.3", "mkbrtype", "second"],
    );
    assert!(err.contains("waited 0.3 s for the store"), "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    let (_, err) = expect(
        &lab,
        2,
        &["-C", "sanfran", "--wait=-1", "mkbrtype", "second"],
    );
    assert!(err.contains("not a number of seconds"), "{err}");
    watcher.kill().expect("kill");
    watcher.wait().expect("wait");
    still_healthy(&lab, "sanfran", &digest);
}
matrix!(
    a_second_process_on_a_site_gets_the_lock_error,
    a_second_process_on_a_site_gets_the_lock_error_on_rocks,
    two_processes
);

/// Eight processes checking in to one site at once all succeed: each waits its turn for the
/// store (`--wait`, 10 s by default, longer here for a loaded machine), none is refused, and
/// every version is there once.
fn eight_writers(backend: Option<&'static str>) {
    let lab = family(backend);
    for i in 0..8 {
        for round in 0..3 {
            lab.write(
                &format!("w{i}r{round}.c"),
                &format!("int w{i} = {round};\n"),
            );
        }
    }
    std::thread::scope(|s| {
        for i in 0..8 {
            let lab = &lab;
            s.spawn(move || {
                for round in 0..3 {
                    let (el, file) = (format!("w{i}.c"), format!("w{i}r{round}.c"));
                    let msg = format!("writer {i} round {round}");
                    let args = [
                        "-C", "sanfran", "--wait", "600", "checkin", &el, &file, "-m", &msg,
                    ];
                    let out = lab.run(&args);
                    assert!(
                        out.status.success(),
                        "writer {i}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
        }
    });
    for i in 0..8 {
        let hist = lab.ok(&["-C", "sanfran", "lshistory", &format!("w{i}.c")]);
        for round in 0..3 {
            let msg = format!("writer {i} round {round}");
            assert_eq!(hist.matches(&msg).count(), 1, "{hist}");
        }
    }
    lab.ok(&["-C", "sanfran", "check"]);
}
matrix!(
    eight_processes_checking_in_at_once_take_turns,
    eight_processes_checking_in_at_once_take_turns_on_rocks,
    eight_writers
);

/// A packet whose acknowledgement was raised after boston signed it (the header written again
/// with every checksum valid, but not signed again) is refused in one sentence naming boston
/// and the fingerprint of boston's key, moved to the refused bay, and changes nothing;
/// `lspacket` says its signature does not verify.
fn forged_ack(backend: Option<&'static str>) {
    let lab = family(backend);
    let part = fresh_packet(&lab, "ack", "held");
    let r = msite_packet::open(&part).expect("open");
    let (kind, id) = (r.info().kind, r.info().packet_id);
    let mut header = r.header().clone();
    let records: Vec<msite_packet::Record> =
        r.records().collect::<Result<_, _>>().expect("records");
    header.targets[0].applied_seq += 5;
    let dir = lab.path("forged-ack");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut opts = msite_packet::WriteOptions::new(id);
    opts.minor = msite_packet::format::FORMAT_MINOR;
    let mut w =
        msite_packet::PacketWriter::create(&dir, "forged", kind, &header, opts).expect("writer");
    for rec in &records {
        w.push_record(rec).expect("record");
    }
    let forged = w.finish().expect("finish").parts.pop().expect("a part");
    let f = forged.display().to_string();
    let (out, _) = expect(&lab, 0, &["-C", "sanfran", "lspacket", &f]);
    assert!(out.contains("signature: does not verify"), "{out}");
    let fp = lab.json(&["-C", "boston", "lsreplica", "--json"])["replicas"][0]["key_fingerprint"]
        .as_str()
        .expect("boston's key")
        .to_string();
    let digest = lab.digest("sanfran");
    std::fs::rename(&forged, bay(&lab, "sanfran").join("forged.msp")).expect("move");
    let (out, _) = expect(&lab, 1, &["-C", "sanfran", "syncreplica", "import"]);
    assert!(out.contains("packet not authentic"), "{out}");
    assert!(out.contains(&fp) && out.contains("boston"), "{out}");
    assert!(
        refused(&lab).contains(&"forged.msp".to_string()),
        "{:?}",
        refused(&lab)
    );
    still_healthy(&lab, "sanfran", &digest);
}
matrix!(
    a_forged_acknowledgement_is_refused_naming_the_senders_key,
    a_forged_acknowledgement_is_refused_naming_the_senders_key_on_rocks,
    forged_ack
);
