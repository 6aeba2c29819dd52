//! The restore procedure (PROTOCOL §6) and its hard cases.

use msite_core::testkit::MemStore;
use msite_core::{CoreError, ImportOutcome, Refusal, Replica};

use crate::harness::*;

/// Replaces site `i` by a copy of `backup` (what `msite restore` does) and marks it restored.
fn restore(f: &mut Family, i: usize, backup: &MemStore) {
    let r = Replica::open(backup.deep_copy(), env_arc(&f.env)).unwrap();
    r.mark_restored().unwrap();
    f.sites[i] = r;
}

/// Like restore, but without the mark (a file-system copy).
fn snapshot_rollback(f: &mut Family, i: usize, backup: &MemStore) {
    f.sites[i] = Replica::open(backup.deep_copy(), env_arc(&f.env)).unwrap();
}

fn unlocked(o: &Option<ImportOutcome>) -> bool {
    matches!(o, Some(ImportOutcome::Applied { unlocked: true, .. }))
}

#[test]
fn restore_recovers_own_entries_sent_before_the_failure() {
    let mut f = Family::new(3, 20);
    f.settle(&hub(3));
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    let backup = f.sites[1].store().deep_copy();
    f.sites[1].checkin("a", "main", b"2", "u", "").unwrap();
    f.sites[1].checkin("b", "main", b"3", "u", "").unwrap();
    f.settle(&hub(3));
    let lost_row = f.sites[1].own_row().unwrap();
    restore(&mut f, 1, &backup);
    // Locked until restorereplica.
    assert!(matches!(
        f.sites[1].checkin("c", "main", b"x", "u", ""),
        Err(CoreError::Locked(_))
    ));
    assert!(f.sites[1].export_to_parts(&f.id(0), None).is_err());
    let start = f.sites[1].restorereplica(&[], false).unwrap();
    assert_eq!(start.awaiting.len(), 2);
    // Restore then write before any sibling answered: refused.
    assert!(matches!(
        f.sites[1].checkin("c", "main", b"x", "u", ""),
        Err(CoreError::Locked(_))
    ));
    // Hub topology: the recovering site talks to the hub only.
    let mut done = false;
    for _ in 0..10 {
        f.sync(1, 0);
        f.sync(0, 2);
        f.sync(2, 0);
        if unlocked(&f.sync(0, 1)) {
            done = true;
            break;
        }
    }
    assert!(done, "restoration did not complete");
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    let own = f.sites[1].own_row().unwrap();
    assert!(
        own.get(&f.id(1)) > lost_row.get(&f.id(1)),
        "own entries were recovered, then restore complete"
    );
    f.sites[1].checkin("c", "main", b"after", "u", "").unwrap();
    f.settle(&hub(3));
    f.assert_converged();
    assert_no_reuse(&f);
    // The requests are gone everywhere.
    for s in &f.sites {
        assert!(s.held_requests().unwrap().is_empty());
    }
}

#[test]
fn packet_built_before_the_restore_is_refused_naming_both_incarnations() {
    let mut f = Family::new(2, 21);
    f.settle(&[(0, 1)]);
    let backup = f.sites[1].store().deep_copy();
    f.sites[0].checkin("a", "main", b"1", "u", "").unwrap();
    let old = f.export(0, 1).unwrap();
    restore(&mut f, 1, &backup);
    f.sites[1].restorereplica(&[], false).unwrap();
    let inc = f.sites[1].status().unwrap().incarnation;
    let err = f.import(1, old).unwrap_err();
    match err {
        CoreError::Refused(Refusal::StaleTarget { had, expected, .. }) => {
            assert_eq!(had, 0);
            assert_eq!(expected, inc);
            let msg = CoreError::Refused(Refusal::StaleTarget {
                had,
                expected,
                sender: "r0".into(),
            })
            .to_string();
            assert!(
                msg.contains(&format!("incarnation {had}"))
                    && msg.contains(&format!("incarnation {expected}")),
                "{msg}"
            );
        }
        other => panic!("expected a stale refusal, got {other}"),
    }
}

#[test]
fn snapshot_rollback_is_caught_before_a_number_is_reused() {
    let mut f = Family::new(2, 22);
    f.settle(&[(0, 1)]);
    let snap = f.sites[1].store().deep_copy();
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    snapshot_rollback(&mut f, 1, &snap);
    f.sites[0].checkin("b", "main", b"x", "u", "").unwrap();
    let p = f.export(0, 1).unwrap();
    let err = f.import(1, p).unwrap_err();
    assert!(
        matches!(err, CoreError::Refused(Refusal::RolledBack { .. })),
        "{err}"
    );
    assert!(matches!(
        f.sites[1].checkin("c", "main", b"y", "u", ""),
        Err(CoreError::Locked(_))
    ));
    f.sites[1].restorereplica(&[], false).unwrap();
    for _ in 0..5 {
        f.settle(&[(0, 1)]);
    }
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    f.sites[1].checkin("c", "main", b"y", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.assert_converged();
    assert_no_reuse(&f);
}

#[test]
fn snapshot_rollback_that_writes_first_is_refused_as_divergent_by_the_sibling() {
    let mut f = Family::new(2, 23);
    f.settle(&[(0, 1)]);
    let snap = f.sites[1].store().deep_copy();
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    snapshot_rollback(&mut f, 1, &snap);
    f.sites[1].checkin("a", "main", b"other", "u", "").unwrap();
    let p = f.export(1, 0).unwrap();
    let before = f.sites[0].digest().unwrap();
    let err = f.import(0, p).unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::Refused(Refusal::Divergent { .. })
                | CoreError::Refused(Refusal::RolledBack { .. })
        ),
        "{err}"
    );
    assert_eq!(before, f.sites[0].digest().unwrap());
}

#[test]
fn sibling_created_after_the_backup_joins_the_awaited_set() {
    let mut f = Family::new(2, 24);
    f.settle(&[(0, 1)]);
    let backup = f.sites[1].store().deep_copy();
    let c = f.mkreplica(1, "late");
    f.sites[c].checkin("late/x", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1), (1, c)]);
    restore(&mut f, 1, &backup);
    let start = f.sites[1].restorereplica(&[], false).unwrap();
    assert_eq!(start.awaiting, vec!["r0".to_string()]);
    // r0 answers first: the creation entry of `late` comes back, and `late` joins the set.
    f.sync(1, 0);
    let o = f.sync(0, 1);
    assert!(!unlocked(&o));
    let rec = f.sites[1]
        .status()
        .unwrap()
        .recovering
        .expect("still recovering");
    assert!(
        rec.awaited.contains_key(&f.id(c)),
        "late was not added to the awaited set"
    );
    f.sync(1, c);
    assert!(unlocked(&f.sync(c, 1)));
    f.settle(&[(0, 1), (1, c)]);
    f.assert_converged();
    assert_no_reuse(&f);
}

#[test]
fn two_replicas_restoring_at_once_both_complete() {
    let mut f = Family::new(3, 25);
    f.settle(&mesh(3));
    let b1 = f.sites[1].store().deep_copy();
    let b2 = f.sites[2].store().deep_copy();
    f.sites[1].checkin("one", "main", b"1", "u", "").unwrap();
    f.sites[2].checkin("two", "main", b"2", "u", "").unwrap();
    f.settle(&mesh(3));
    restore(&mut f, 1, &b1);
    restore(&mut f, 2, &b2);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.sites[2].restorereplica(&[], false).unwrap();
    for _ in 0..20 {
        for (a, b) in mesh(3) {
            f.sync(a, b);
            f.sync(b, a);
        }
        if f.sites
            .iter()
            .all(|s| s.status().unwrap().recovering.is_none())
        {
            break;
        }
    }
    for s in &f.sites {
        assert!(
            s.status().unwrap().recovering.is_none(),
            "a restoration did not complete"
        );
    }
    f.settle(&mesh(3));
    f.assert_converged();
    assert_no_reuse(&f);
    for s in &f.sites {
        assert!(s.held_requests().unwrap().is_empty());
        assert!(s.provisional_acks().unwrap().is_empty());
    }
}

#[test]
fn restoring_again_from_an_older_backup() {
    let mut f = Family::new(2, 26);
    f.settle(&[(0, 1)]);
    let old = f.sites[1].store().deep_copy();
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    let newer = f.sites[1].store().deep_copy();
    restore(&mut f, 1, &newer);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.settle(&[(0, 1)]);
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    f.sites[1].checkin("b", "main", b"2", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    restore(&mut f, 1, &old);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.settle(&[(0, 1)]);
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    f.sites[1].checkin("c", "main", b"3", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.assert_converged();
    assert_no_reuse(&f);
}

#[test]
fn running_restorereplica_again_amends_the_set_and_keeps_the_incarnation() {
    let mut f = Family::new(3, 27);
    f.settle(&hub(3));
    let b = f.sites[1].store().deep_copy();
    restore(&mut f, 1, &b);
    let s1 = f.sites[1].restorereplica(&[], false).unwrap();
    let s2 = f.sites[1].restorereplica(&[f.id(0)], false).unwrap();
    assert!(s2.amended);
    assert_eq!(s1.incarnation, s2.incarnation);
    assert_eq!(s2.awaiting, vec!["r0".to_string()]);
    f.sync(1, 0);
    assert!(unlocked(&f.sync(0, 1)));
}

#[test]
fn override_completes_at_once() {
    let mut f = Family::new(2, 28);
    f.settle(&[(0, 1)]);
    let b = f.sites[1].store().deep_copy();
    restore(&mut f, 1, &b);
    let s = f.sites[1].restorereplica(&[], true).unwrap();
    assert!(s.completed);
    f.sites[1].checkin("x", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.assert_converged();
}

#[test]
fn lost_duplicated_and_reordered_packets_during_recovery() {
    let mut f = Family::new(3, 29);
    f.settle(&hub(3));
    let b = f.sites[2].store().deep_copy();
    f.sites[2].checkin("k", "main", b"1", "u", "").unwrap();
    f.settle(&hub(3));
    restore(&mut f, 2, &b);
    f.sites[2].restorereplica(&[], false).unwrap();
    let req = f.export(2, 0).unwrap();
    let _lost = f.export(2, 0).unwrap();
    let _ = f.import(0, req.clone()).unwrap();
    let _ = f.import(0, req).unwrap();
    let a = f.export(0, 2).unwrap();
    let a2 = f.export(0, 2).unwrap();
    let _ = f.import(2, a2).unwrap();
    let _ = f.import(2, a).unwrap();
    f.sync(2, 1);
    f.sync(1, 2);
    f.settle(&hub(3));
    assert!(f.sites[2].status().unwrap().recovering.is_none());
    f.assert_converged();
    assert_no_reuse(&f);
}

#[test]
fn amending_after_some_siblings_answered_does_not_wait_for_them_again() {
    // Found by the model check: re-running restorereplica in default mode re-flagged
    // siblings whose acknowledgement had already arrived, and they never answer twice.
    let mut f = Family::new(3, 30);
    f.settle(&hub(3));
    let b = f.sites[1].store().deep_copy();
    restore(&mut f, 1, &b);
    f.sites[1]
        .restorereplica(&[f.id(0), f.id(2)], false)
        .unwrap();
    f.sync(1, 0);
    let _ = f.sync(0, 1); // r0 acknowledges; r2 has not answered yet
    let rec = f.sites[1].status().unwrap().recovering.unwrap();
    assert!(!rec.awaited.contains_key(&f.id(0)));
    let again = f.sites[1].restorereplica(&[], false).unwrap();
    assert!(again.amended);
    assert_eq!(
        again.awaiting,
        vec!["r2".to_string()],
        "r0 answered already"
    );
    f.sync(1, 2);
    assert!(unlocked(&f.sync(2, 1)));
}

#[test]
fn restoring_a_backup_taken_while_recovering_starts_a_new_incarnation() {
    // Found by the model check and the simulator: amending the backup's recovery record kept
    // the incarnation, so old acknowledgements passed and a number could be reused.
    let mut f = Family::new(2, 31);
    f.settle(&[(0, 1)]);
    let b1 = f.sites[1].store().deep_copy();
    restore(&mut f, 1, &b1);
    let first = f.sites[1].restorereplica(&[], false).unwrap();
    let b2 = f.sites[1].store().deep_copy();
    f.sync(1, 0);
    let old_ack = f.export(0, 1).unwrap();
    assert!(matches!(
        f.import(1, old_ack.clone()).unwrap(),
        ImportOutcome::Applied { unlocked: true, .. }
    ));
    f.settle(&[(0, 1)]);
    restore(&mut f, 1, &b2);
    let second = f.sites[1].restorereplica(&[], false).unwrap();
    assert!(!second.amended);
    assert!(second.incarnation > first.incarnation);
    assert!(
        f.import(1, old_ack).is_err(),
        "an acknowledgement of the old incarnation must not pass"
    );
    for _ in 0..3 {
        f.settle(&[(0, 1)]);
    }
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    f.sites[1].checkin("after", "main", b"x", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.assert_converged();
    assert_no_reuse(&f);
}
