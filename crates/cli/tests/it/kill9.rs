//! Kill -9 at varied moments during the long-running commands: `syncreplica import` of a
//! packet large enough to commit in prefixes, `syncreplica export`, `backup`, `import DIR` and
//! `mkreplica import`.
//!
//! Each round starts from copies of template sites, runs the command and sends it SIGKILL,
//! then checks the state it left: the store passes `msite check`, and what the command
//! promises holds (an import continues where the killed one stopped and applies each entry
//! once; a tree import is all or nothing; a killed backup is never taken for a complete one).
//! The next run of the command must complete, and the sites must reach equal digests.
//!
//! Kill moments follow a fixed schedule over a reference run of the same command without a
//! kill: even rounds kill after a fraction of its duration, odd rounds once the directory the
//! command writes has grown by a fraction of what the reference run wrote (so kills also land
//! inside a commit or a file being written). The fractions are spread evenly; delays and sizes
//! decide only when a kill falls, every assertion is about state. `MSITE_KILL9_ROUNDS=N` sets
//! the rounds per scenario (default 6; odd rounds of the packet import kill twice).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{copy_dir, packets_in, Lab};

const DEFAULT_ROUNDS: usize = 6;

fn rounds() -> usize {
    std::env::var("MSITE_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_ROUNDS)
}

/// How many kills landed, how many runs finished before their kill, and what the killed
/// runs left (for the report: the kills fell at different moments).
#[derive(Default)]
struct Tally {
    killed: usize,
    finished_first: usize,
    left: BTreeMap<&'static str, usize>,
}

impl Tally {
    fn left(&mut self, what: &'static str) {
        *self.left.entry(what).or_default() += 1;
    }

    fn report(&self, scenario: &str) {
        eprintln!(
            "kill9 {scenario}: {} runs killed, {} finished before their kill; killed runs left: {:?}",
            self.killed, self.finished_first, self.left
        );
        assert!(self.killed > 0, "{scenario}: no kill landed");
    }
}

/// When to kill: after a delay, or once a directory holds at least so many bytes.
#[derive(Debug, Clone)]
enum Moment {
    After(Duration),
    Grown(PathBuf, u64),
}

/// A reference run of a command: how long it took and how much the directory it writes grew.
struct Reference {
    span: Duration,
    dir_before: u64,
    dir_growth: u64,
}

impl Reference {
    /// Runs `msite ARGS` to completion, measuring it; `dir` is the directory it writes.
    fn measure(lab: &Lab, args: &[&str], dir: &str) -> Reference {
        let dir_before = dir_size(&lab.path(dir));
        let t = Instant::now();
        lab.ok(args);
        Reference {
            span: t.elapsed(),
            dir_before,
            dir_growth: dir_size(&lab.path(dir)).saturating_sub(dir_before),
        }
    }

    /// The kill moment of round `i` of `n` for a run writing into `dir`: fractions spread
    /// evenly over 110% of the duration (even rounds) or 100% of the growth (odd rounds).
    fn moment(&self, lab: &Lab, i: usize, n: usize, dir: &str) -> Moment {
        let f = (i as f64 + 0.5) / n as f64;
        if i.is_multiple_of(2) {
            Moment::After(self.span.mul_f64(1.1 * f))
        } else {
            let bytes = self.dir_before + (self.dir_growth as f64 * f) as u64;
            Moment::Grown(lab.path(dir), bytes.max(1))
        }
    }
}

/// The bytes of the files under `dir` (0 if it does not exist).
fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Runs `msite ARGS` in the lab and sends it SIGKILL at `when`, unless it finished first.
/// Returns whether the signal ended it.
fn kill_at(lab: &Lab, args: &[&str], when: &Moment, tally: &mut Tally) -> bool {
    // The lab's command: its directory and environment (the scratch PostgreSQL server a
    // new store is made on, in the postgres row).
    let mut child = lab
        .std_cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start msite");
    let start = Instant::now();
    let finished = loop {
        if let Some(status) = child.try_wait().expect("poll msite") {
            break Some(status);
        }
        let due = match when {
            Moment::After(d) => start.elapsed() >= *d,
            Moment::Grown(dir, bytes) => dir_size(dir) >= *bytes,
        };
        if due {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let status = match finished {
        Some(status) => status,
        None => {
            // Killing a process that exited but is not yet reaped is harmless.
            let _ = child.kill();
            child.wait().expect("wait for msite")
        }
    };
    let killed = status.signal() == Some(9);
    if killed {
        tally.killed += 1;
    } else {
        assert!(
            status.success(),
            "msite {} failed before its kill: {status:?}",
            args.join(" ")
        );
        tally.finished_first += 1;
    }
    killed
}

/// Writes `n` files of `size` bytes under `dir` that zstd cannot shrink and that differ from
/// each other (a xorshift stream, so the same call writes the same tree).
fn write_tree(lab: &Lab, dir: &str, n: usize, size: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        let bytes = super::xorshift_words(&mut x, size);
        let p = lab.path(&format!("{dir}/d{}/f{i}.bin", i % 16));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    }
}

/// `msite check` passes at `site`.
fn intact(lab: &Lab, site: &str) {
    let out = lab.ok(&["-C", site, "check"]);
    assert!(out.contains("intact"), "{out}");
}

/// The template family: site `a` and its sibling `b`, made from `a` before `a` imports
/// `n` files of `size` bytes.
fn family(n: usize, size: usize) -> Lab {
    let lab = Lab::new();
    lab.init("a", "proj");
    lab.mkreplica("a", "b");
    write_tree(&lab, "tree", n, size);
    lab.ok(&["-C", "a", "import", "tree", "-m", "big"]);
    lab
}

fn copy_site(lab: &Lab, from: &str, to: &str) {
    let dest = lab.path(to);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).expect("remove old copy");
    }
    copy_dir(&lab.path(from), &dest);
}

/// Copies `packet` into the incoming bay of `site`.
fn deliver(lab: &Lab, packet: &Path, site: &str) {
    let bay = lab.path(&format!("{site}/bays/incoming"));
    std::fs::create_dir_all(&bay).expect("bay");
    std::fs::copy(packet, bay.join(packet.file_name().expect("name"))).expect("copy packet");
}

/// Writes `from`'s update packet for `to` into `dir` and returns it (one part).
fn export_to(lab: &Lab, from: &str, to: &str, dir: &str) -> std::path::PathBuf {
    lab.export_to_dir(from, to, dir);
    let mut files = packets_in(&lab.path(dir));
    assert_eq!(files.len(), 1, "one packet in {dir}");
    files.remove(0)
}

/// (a) `syncreplica import` of a packet of about 21 MB (2,600 files, 5,200 entries), above
/// the 16 MB at which an import commits a prefix: every kill leaves an intact store, the next
/// run completes, the result equals a reference import without kills, and the packet imported
/// again changes nothing.
#[test]
fn a_killed_import_continues_and_applies_each_entry_once() {
    let lab = family(2_600, 8 << 10);
    let packet = export_to(&lab, "a", "b", "pkt");
    copy_site(&lab, "b", "ref");
    deliver(&lab, &packet, "ref");
    let run = Reference::measure(&lab, &["-C", "ref", "syncreplica", "import"], "ref/store");
    let reference = lab.digest("ref");
    assert_eq!(reference, lab.digest("a"));
    let (start, full) = (held_of(&lab, "b", "a"), held_of(&lab, "ref", "a"));
    let n = rounds();
    let mut tally = Tally::default();
    for i in 0..n {
        copy_site(&lab, "b", "b1");
        deliver(&lab, &packet, "b1");
        // Odd rounds kill the run that continues a killed import too.
        let kills = if i % 2 == 1 { 2 } else { 1 };
        let mut held = start;
        for k in 0..kills {
            let at = run.moment(&lab, (i + k * (n / 2 + 1)) % n, n, "b1/store");
            let import = ["-C", "b1", "syncreplica", "import"];
            let killed = kill_at(&lab, &import, &at, &mut tally);
            intact(&lab, "b1");
            let now = held_of(&lab, "b1", "a");
            assert!(held <= now && now <= full, "{held} -> {now} of {full}");
            if killed {
                tally.left(match now {
                    n if n == start => "nothing",
                    n if n == full => "everything",
                    _ => "a prefix",
                });
            }
            held = now;
        }
        lab.ok(&["-C", "b1", "syncreplica", "import"]);
        intact(&lab, "b1");
        assert_eq!(lab.digest("b1"), reference, "round {i}");
        assert!(packets_in(&lab.path("b1/bays/incoming")).is_empty());
        deliver(&lab, &packet, "b1");
        lab.ok(&["-C", "b1", "syncreplica", "import"]);
        assert_eq!(lab.digest("b1"), reference, "round {i}: imported again");
    }
    tally.report("syncreplica import");
}

/// How many entries of `origin` `site` holds (its own row in `lsepoch`).
fn held_of(lab: &Lab, site: &str, origin: &str) -> u64 {
    let v = lab.json(&["-C", site, "lsepoch", "--json"]);
    let rows = v["rows"].as_array().expect("rows");
    let own = rows.iter().find(|r| r["own"] == true).expect("own row");
    own["row"][origin].as_u64().unwrap_or(0)
}

/// Exchanges packets between `a` and `b` (straight into each other's incoming bays) until
/// their digests are equal; a packet a killed export left unfinished is resent after `b`'s
/// acknowledgements show it lost.
fn converge(lab: &Lab, a: &str, b: &str) {
    for _ in 0..6 {
        if lab.digest(a) == lab.digest(b) {
            return;
        }
        for (from, to, name) in [(a, b, "b"), (b, a, "a")] {
            let bay = format!("{to}/bays/incoming");
            lab.export_to_dir(from, name, &bay);
            lab.import(to);
        }
    }
    assert_eq!(lab.digest(a), lab.digest(b), "{a} and {b} did not converge");
}

/// (b) `syncreplica export`: every kill leaves an intact store, the next run completes, and
/// the two sites converge through the acknowledgements.
#[test]
fn a_killed_export_leaves_an_intact_store_and_the_sites_converge() {
    let lab = family(1_500, 1 << 10);
    copy_site(&lab, "a", "a1");
    let export = ["-C", "a1", "syncreplica", "export", "--to", "b"];
    let run = Reference::measure(&lab, &[&export[..], &["--out", "out"]].concat(), "out");
    let n = rounds();
    let mut tally = Tally::default();
    for i in 0..n {
        copy_site(&lab, "a", "a1");
        copy_site(&lab, "b", "b1");
        let into_b = [&export[..], &["--out", "b1/bays/incoming"]].concat();
        let at = run.moment(&lab, i, n, "b1/bays/incoming");
        if kill_at(&lab, &into_b, &at, &mut tally) {
            tally.left(export_left(&lab, "b1/bays/incoming"));
        }
        intact(&lab, "a1");
        lab.ok(&into_b);
        intact(&lab, "a1");
        converge(&lab, "a1", "b1");
        intact(&lab, "b1");
    }
    assert_eq!(lab.digest("a1"), lab.digest("a"));
    tally.report("syncreplica export");
}

/// What a killed export left in `dir`: a finished packet, an unfinished (hidden, temporary)
/// part, or nothing.
fn export_left(lab: &Lab, dir: &str) -> &'static str {
    if !packets_in(&lab.path(dir)).is_empty() {
        return "a packet";
    }
    let temp = std::fs::read_dir(lab.path(dir)).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    });
    if temp {
        "an unfinished part"
    } else {
        "nothing"
    }
}

/// (c) `backup`: the site is untouched by the kill; the backup directory appears only whole
/// (the backup is written beside it as `.NAME.msite-partial`, which odd rounds watch grow),
/// and a whole one restores to the same digest. The next backup into the same directory
/// completes without the operator removing anything.
#[test]
fn a_killed_backup_is_never_taken_for_a_complete_one() {
    let lab = family(1_500, 1 << 10);
    let digest = lab.digest("a");
    let run = Reference::measure(&lab, &["-C", "a", "backup", "bk-timing"], "bk-timing");
    let n = rounds();
    let mut tally = Tally::default();
    for i in 0..n {
        let bk = format!("bk{i}");
        let at = run.moment(&lab, i, n, &format!(".{bk}.msite-partial"));
        let killed = kill_at(&lab, &["-C", "a", "backup", &bk], &at, &mut tally);
        intact(&lab, "a");
        assert_eq!(lab.digest("a"), digest);
        let restored = format!("restored{i}");
        if lab.path(&bk).exists() {
            assert!(manifest_written(&lab, &bk), "{bk} exists but is not whole");
            if killed {
                tally.left("a complete backup");
            }
            restores_to(&lab, &bk, &restored, &digest);
            continue;
        }
        let partial = lab.path(&format!(".{bk}.msite-partial")).exists();
        tally.left(if partial {
            "an unfinished backup beside DEST"
        } else {
            "no backup"
        });
        lab.ok(&["-C", "a", "backup", &bk]);
        assert!(
            !lab.path(&format!(".{bk}.msite-partial")).exists(),
            "the next backup left the partial one behind"
        );
        restores_to(&lab, &bk, &format!("{restored}b"), &digest);
    }
    tally.report("backup");
}

/// Whether `bk/backup.json` holds a whole JSON document (`backup` writes it last; a kill
/// while it is written leaves it cut short).
fn manifest_written(lab: &Lab, bk: &str) -> bool {
    std::fs::read_to_string(lab.path(&format!("{bk}/backup.json")))
        .ok()
        .is_some_and(|t| serde_json::from_str::<Value>(&t).is_ok())
}

fn restores_to(lab: &Lab, bk: &str, site: &str, digest: &str) {
    lab.ok(&["restore", bk, site]);
    intact(lab, site);
    assert_eq!(
        lab.digest(site),
        digest,
        "the backup {bk} restores another state"
    );
}

/// The number of elements `site` lists, and whether every one has exactly one version.
fn elements(lab: &Lab, site: &str) -> (usize, bool) {
    let v = lab.json(&["-C", site, "ls", "--json"]);
    let els = v["elements"].as_array().expect("elements").clone();
    let once = els.iter().all(|e| {
        let b: &Vec<Value> = e["branches"].as_array().expect("branches");
        b.len() == 1 && b[0]["latest"] == 1
    });
    (els.len(), once)
}

/// (d) `import DIR`: one transaction, so a kill leaves none or all of the tree; the next run
/// completes, a second import finds every file unchanged, and the sibling converges.
#[test]
fn a_killed_tree_import_is_all_or_nothing() {
    let lab = Lab::new();
    lab.init("a", "proj");
    lab.mkreplica("a", "b");
    let files = 1_500;
    write_tree(&lab, "tree", files, 1 << 10);
    copy_site(&lab, "a", "a1");
    let run = Reference::measure(&lab, &["-C", "a1", "import", "tree"], "a1/store");
    let n = rounds();
    let mut tally = Tally::default();
    for i in 0..n {
        copy_site(&lab, "a", "a1");
        let at = run.moment(&lab, i, n, "a1/store");
        let killed = kill_at(&lab, &["-C", "a1", "import", "tree"], &at, &mut tally);
        intact(&lab, "a1");
        let (count, once) = elements(&lab, "a1");
        assert!(
            count == 0 || count == files,
            "a killed import left {count} elements"
        );
        if killed {
            tally.left(if count == 0 { "nothing" } else { "everything" });
        }
        assert!(once, "a file was checked in twice");
        lab.ok(&["-C", "a1", "import", "tree"]);
        assert_eq!(elements(&lab, "a1"), (files, true));
        let again = lab.ok(&["-C", "a1", "import", "tree"]);
        assert!(again.contains(&format!("{files} unchanged")), "{again}");
    }
    copy_site(&lab, "b", "b1");
    converge(&lab, "a1", "b1");
    assert_eq!(elements(&lab, "b1"), (files, true));
    tally.report("import DIR");
}

/// (e) `mkreplica import` of a snapshot creation packet of about 21 MB, loaded in one
/// transaction (under a rollback journal on SQLite, `journal.rs` in msite-store-sqlite): a
/// kill leaves no site, unless it fell after the site's file, the last step. A new run into
/// the same directory either completes or refuses, saying
/// that what the killed run left is an interrupted creation to remove; once it is removed the
/// import completes, with the digest of an import that was never killed.
#[test]
fn a_killed_creation_leaves_no_half_made_replica() {
    let lab = family(2_600, 8 << 10);
    let (_, pkt) = lab.creation_packet("a", "c", "pkt", false, &[]);
    let import = [
        "mkreplica",
        "import",
        pkt.as_str(),
        "c",
        "--identity",
        "c.age",
    ];
    let run = Reference::measure(&lab, &import, "c");
    let reference = lab.digest("c");
    let objects = state_rows(&open_store(&lab.path("c/store")));
    let n = rounds();
    let mut tally = Tally::default();
    for i in 0..n {
        std::fs::remove_dir_all(lab.path("c")).expect("remove the last replica");
        let killed = kill_at(&lab, &import, &run.moment(&lab, i, n, "c"), &mut tally);
        if killed && lab.path("c/site.json").exists() {
            // The site's file is written last (atomically): the kill fell after it.
            tally.left("a complete site");
        } else if killed {
            left_store_is_consistent(&lab.path("c/store"), objects);
            let again = lab.run(&import);
            if again.status.success() {
                tally.left("nothing the next run minded");
            } else {
                let err = String::from_utf8_lossy(&again.stderr).into_owned();
                assert!(
                    err.contains("interrupted `msite mkreplica import`"),
                    "{err}"
                );
                assert!(err.contains("remove "), "{err}");
                tally.left("an interrupted creation");
                std::fs::remove_dir_all(lab.path("c")).expect("remove it, as told");
                lab.ok(&import);
            }
        }
        intact(&lab, "c");
        assert_eq!(lab.digest("c"), reference, "round {i}");
    }
    tally.report("mkreplica import");
}

/// What a killed creation left in `store` (if anything) opens and passes the engine's own
/// checker (on SQLite, the hot journal of a load killed while committing is rolled back). It
/// holds the interrupted-creation mark, or no object, or (killed after the store's last commit,
/// before the site's file) all `objects` of the reference run.
fn left_store_is_consistent(store: &Path, objects: usize) {
    if !store_was_made(store) {
        return; // Killed before the engine made the store.
    }
    use msite_core::store::Store;
    let s = open_store(store);
    s.check_integrity()
        .expect("and passes the engine's checker");
    let marked = msite_core::sync::interrupted_creation(&s)
        .expect("read the mark")
        .is_some();
    let held = state_rows(&s);
    assert!(
        marked || held == 0 || held == objects,
        "a store without the mark holds {held} of {objects} objects"
    );
}

/// Whether the engine made a store in `store`: the file each engine writes first (SQLite's
/// database, RocksDB's `CURRENT`, PostgreSQL's connection settings) is there.
fn store_was_made(store: &Path) -> bool {
    ["store.sqlite3", "CURRENT", "conninfo"]
        .iter()
        .any(|f| store.join(f).exists())
}

/// Opens the store in `store`. A PostgreSQL server may still hold the killed command's
/// session, and with it the store's lock, for a moment: the open waits up to 10 s for it.
fn open_store(store: &Path) -> msite_cli::backend::AnyStore {
    use msite_cli::backend::{AnyStore, BackendKind};
    let kind = BackendKind::default_kind().expect("a backend");
    for _ in 0..100 {
        match AnyStore::open(kind, store) {
            Err(e) if is_locked(&e) => std::thread::sleep(Duration::from_millis(100)),
            opened => return opened.expect("the store a killed creation left opens"),
        }
    }
    panic!("the store a killed creation left stayed locked for 10 s");
}

fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<msite_core::store::Error>(),
            Some(msite_core::store::Error::Locked { .. })
        )
    })
}

fn state_rows(s: &msite_cli::backend::AnyStore) -> usize {
    use msite_core::store::{KeyRange, Keyspace, ReadView};
    s.scan(Keyspace::State, KeyRange::all())
        .expect("scan")
        .count()
}
