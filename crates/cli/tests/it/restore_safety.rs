//! `msite restore` onto an existing site: the whole backup is checked before the site is
//! touched, a store in normal operation is replaced only with `--force` (after naming the own
//! changes that would be lost), and what a stopped restore leaves behind never costs the site
//! its store.

use std::path::Path;

use super::{copy_dir, Lab};

/// Truncates every file under `dir` to half its size (what a copy cut short leaves).
fn truncate_files(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            truncate_files(&p);
        } else if e.file_name() != "LOCK" {
            let len = std::fs::metadata(&p).expect("metadata").len();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .expect("open");
            f.set_len(len / 2).expect("truncate");
        }
    }
}

/// The names in `dir` that start with `prefix`.
fn entries_starting(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The site is as it was: same digest, intact store, nothing moved aside, a change succeeds.
fn assert_untouched(lab: &Lab, site: &str, digest: &str) {
    assert_eq!(lab.digest(site), digest);
    lab.ok(&["-C", site, "check"]);
    let dir = lab.path(site);
    assert!(entries_starting(&dir, "store.").is_empty(), "{dir:?}");
    let v = lab.json(&["-C", site, "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "normal", "{v}");
    lab.write("after", "still works\n");
    lab.ok(&["-C", site, "checkin", "after-refusal", "after"]);
}

/// A hub family, settled, with a backup of sanfran in `bk`.
fn family_with_backup() -> Lab {
    let lab = Lab::hub(None);
    lab.ok(&["-C", "sanfran", "mkbrtype", "sf"]);
    lab.settle();
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    lab
}

#[test]
fn a_truncated_backup_is_refused_and_the_site_keeps_working() {
    let lab = family_with_backup();
    truncate_files(&lab.path("bk/store"));
    let digest = lab.digest("sanfran");
    let err = lab.fails(1, &["restore", "--force", "bk", "sanfran"]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("bk was not restored and the site in sanfran is unchanged"),
        "{err}"
    );
    assert_untouched(&lab, "sanfran", &digest);
}

#[test]
fn a_backup_of_another_replica_or_family_is_refused_before_anything_changes() {
    let lab = family_with_backup();
    lab.ok(&["-C", "bangalore", "backup", "bk-bangalore"]);
    lab.init("elsewhere", "other");
    lab.ok(&["-C", "elsewhere", "backup", "bk-other"]);
    let digest = lab.digest("sanfran");
    let err = lab.fails(1, &["restore", "--force", "bk-other", "sanfran"]);
    assert!(
        err.contains("is a backup of replica elsewhere of family other"),
        "{err}"
    );
    // bangalore's store behind a manifest that claims to be sanfran's.
    let ours: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lab.path("bk/backup.json")).expect("manifest"),
    )
    .expect("json");
    let mut forged: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lab.path("bk-bangalore/backup.json")).expect("manifest"),
    )
    .expect("json");
    forged["replica_id"] = ours["replica_id"].clone();
    forged["replica_name"] = ours["replica_name"].clone();
    std::fs::write(lab.path("bk-bangalore/backup.json"), forged.to_string()).expect("write");
    let err = lab.fails(1, &["restore", "--force", "bk-bangalore", "sanfran"]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("holds replica bangalore")
            && err.contains("cannot be trusted")
            && err.contains("the site in sanfran is unchanged"),
        "{err}"
    );
    // A manifest cut short is refused too.
    std::fs::write(
        lab.path("bk-bangalore/backup.json"),
        "{\"kind\": \"msite-backup\"",
    )
    .expect("write");
    let err = lab.fails(1, &["restore", "--force", "bk-bangalore", "sanfran"]);
    assert!(err.contains("backup.json is damaged"), "{err}");
    assert_untouched(&lab, "sanfran", &digest);
}

#[test]
fn a_healthy_site_is_replaced_only_with_force_which_names_what_is_lost() {
    let lab = family_with_backup();
    // Two own changes no sibling has: never exported.
    lab.ok(&["-C", "sanfran", "mkbrtype", "late"]);
    lab.ok(&["-C", "sanfran", "mklbtype", "REL1"]);
    let digest = lab.digest("sanfran");
    let err = lab.fails(1, &["restore", "bk", "sanfran"]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("--force")
            && err.contains("2 own changes no sibling is known to hold (numbers ")
            && err.contains("mkbrtype, ")
            && err.contains("mklbtype)")
            && err.contains("unless exported first"),
        "{err}"
    );
    assert_untouched(&lab, "sanfran", &digest);
    // The check-in made by assert_untouched adds to the unexported changes.
    let out = lab.ok(&["restore", "--force", "bk", "sanfran"]);
    let lost: u64 = out
        .split("Replacing the healthy store of sanfran (--force): its ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of lost changes in {out}"));
    assert!(lost >= 3, "{out}");
    assert!(
        out.contains("own changes no sibling is known to hold (numbers ")
            && out.contains("mkbrtype, ")
            && out.contains(", …)") == (lost > 3)
            && out.contains("are lost to the family"),
        "{out}"
    );
    assert_eq!(
        entries_starting(&lab.path("sanfran"), "store.replaced-").len(),
        1
    );
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "restored", "{v}");
    // Nothing left to lose once everything is exported: the refusal says so.
    lab.ok(&["-C", "bangalore", "backup", "bk-b"]);
    let err = lab.fails(1, &["restore", "bk-b", "bangalore"]);
    assert!(
        err.contains("every own change of it is held by a sibling") && err.contains("--force"),
        "{err}"
    );
}

#[test]
fn a_damaged_store_is_replaced_without_force() {
    let lab = family_with_backup();
    truncate_files(&lab.path("sanfran/store"));
    let out = lab.ok(&["restore", "bk", "sanfran"]);
    assert!(
        out.contains("The old store in sanfran is damaged ("),
        "{out}"
    );
    assert_eq!(
        entries_starting(&lab.path("sanfran"), "store.damaged-").len(),
        1
    );
    lab.ok(&["-C", "sanfran", "check"]);
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "restored", "{v}");
    // A restored store is replaced without --force as well.
    let out = lab.ok(&["restore", "bk", "sanfran"]);
    assert!(
        out.contains("is restored from a backup; replacing it"),
        "{out}"
    );
}

#[test]
fn a_leftover_staging_dir_is_removed_by_the_next_restore() {
    let lab = family_with_backup();
    // A restore killed while copying: a partial staging copy next to the intact store.
    std::fs::create_dir_all(lab.path("sanfran/store.staging")).expect("mkdir");
    std::fs::write(lab.path("sanfran/store.staging/store.sqlite3"), "partial").expect("write");
    lab.ok(&["-C", "sanfran", "check"]);
    // The disk is lost afterwards; the next restore cleans up and works.
    std::fs::remove_dir_all(lab.path("sanfran/store")).expect("rm store");
    let out = lab.ok(&["restore", "bk", "sanfran"]);
    assert!(
        out.contains("store.staging, left by an unfinished restore"),
        "{out}"
    );
    assert!(!lab.path("sanfran/store.staging").exists());
    lab.ok(&["-C", "sanfran", "check"]);
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "restored", "{v}");
}

#[test]
fn a_restore_stopped_between_its_renames_leaves_a_usable_store() {
    let lab = family_with_backup();
    // A checked, restored copy of the backup, as a restore leaves it in store.ready.
    lab.ok(&["restore", "bk", "scratch"]);
    copy_dir(&lab.path("scratch/store"), &lab.path("sanfran/store.ready"));
    // Stopped before the old store moved: the old store is in use, the next restore drops
    // the ready copy.
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "normal", "{v}");
    assert!(lab.path("sanfran/store.ready").exists());
    let err = lab.fails(1, &["restore", "bk", "sanfran"]);
    assert!(err.contains("--force"), "{err}");
    assert!(!lab.path("sanfran/store.ready").exists());
    // Stopped after the old store moved aside: opening the site puts the new one in place.
    copy_dir(&lab.path("scratch/store"), &lab.path("sanfran/store.ready"));
    std::fs::rename(
        lab.path("sanfran/store"),
        lab.path("sanfran/store.replaced-1"),
    )
    .expect("move aside");
    let v = lab.json(&["-C", "sanfran", "lsreplica", "--json"]);
    assert_eq!(v["replicas"][0]["state"], "restored", "{v}");
    assert!(lab.path("sanfran/store").is_dir() && !lab.path("sanfran/store.ready").exists());
    lab.ok(&["-C", "sanfran", "check"]);
}

/// A store of an engine this build lacks cannot be checked, so it is not replaced.
#[cfg(not(feature = "rocks"))]
#[test]
fn a_store_this_build_cannot_open_is_not_replaced() {
    let lab = family_with_backup();
    let site_json = lab.path("sanfran/site.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&site_json).expect("site.json"))
            .expect("json");
    cfg["backend"] = "rocks".into();
    std::fs::write(&site_json, cfg.to_string()).expect("write");
    let err = lab.fails(1, &["restore", "--force", "bk", "sanfran"]);
    assert!(
        err.contains("cannot check the store in sanfran/store before replacing it")
            && err.contains("rocks backend is not available"),
        "{err}"
    );
    assert!(entries_starting(&lab.path("sanfran"), "store.").is_empty());
    assert!(lab.path("sanfran/store").is_dir());
}
