//! The restore procedure (PROTOCOL §6) and its hard cases.

use std::path::Path;

use crate::testkit::{FaultPlan, FaultyStore};
use crate::{CoreError, ImportOutcome, Refusal};

use super::*;

fn unlocked(o: &Option<ImportOutcome>) -> bool {
    matches!(o, Some(ImportOutcome::Applied { unlocked: true, .. }))
}

/// Site `i`'s restoration has completed; a local change there is accepted again, and after
/// settling along `edges` the family converges with no number reused.
fn unlocked_then_converges<F: StoreFactory>(
    f: &Family<'_, F>,
    i: usize,
    path: &str,
    content: &[u8],
    edges: &[(usize, usize)],
) {
    assert!(f.sites[i].status().unwrap().recovering.is_none());
    f.sites[i].checkin(path, "main", content, "u", "").unwrap();
    f.settle(edges);
    f.assert_converged();
    assert_no_reuse(f);
}

/// Restore recovers own entries sent before the failure.
pub fn case_restore_recovers_own_entries_sent_before_the_failure<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 20);
    f.settle(&hub(3));
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    let backup = f.backup(1);
    f.sites[1].checkin("a", "main", b"2", "u", "").unwrap();
    f.sites[1].checkin("b", "main", b"3", "u", "").unwrap();
    f.settle(&hub(3));
    let lost_row = f.sites[1].own_row().unwrap();
    f.restore(1, &backup);
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

/// Packet built before the restore is refused naming both incarnations.
pub fn case_packet_built_before_the_restore_is_refused_naming_both_incarnations<F: StoreFactory>(
    factory: &F,
) {
    let mut f = Family::new(factory, 2, 21);
    f.settle(&[(0, 1)]);
    let backup = f.backup(1);
    f.sites[0].checkin("a", "main", b"1", "u", "").unwrap();
    let old = f.export(0, 1).unwrap();
    f.restore(1, &backup);
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
                msg.contains(&format!("incarnation {}", crate::incarnation_text(had)))
                    && msg.contains(&format!(
                        "incarnation {}",
                        crate::incarnation_text(expected)
                    )),
                "{msg}"
            );
        }
        other => panic!("expected a stale refusal, got {other}"),
    }
}

/// Snapshot rollback is caught before a number is reused.
pub fn case_snapshot_rollback_is_caught_before_a_number_is_reused<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 22);
    f.settle(&[(0, 1)]);
    let snap = f.backup(1);
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.snapshot_rollback(1, &snap);
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
    unlocked_then_converges(&f, 1, "c", b"y", &[(0, 1)]);
}

/// Snapshot rollback that writes first is refused as divergent by the sibling.
pub fn case_snapshot_rollback_that_writes_first_is_refused_as_divergent_by_the_sibling<
    F: StoreFactory,
>(
    factory: &F,
) {
    let mut f = Family::new(factory, 2, 23);
    f.settle(&[(0, 1)]);
    let snap = f.backup(1);
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.snapshot_rollback(1, &snap);
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

/// Site `i` is locked as rolled back by `err`, a refusal naming its own fork: the message
/// tells the operator to run `restorereplica`, and local changes and exports are refused.
fn locked_by_own_fork<F: StoreFactory>(f: &Family<'_, F>, i: usize, err: &CoreError) {
    assert!(
        matches!(err, CoreError::Refused(Refusal::OwnFork { origin, .. }) if *origin == f.names[i]),
        "{err}"
    );
    assert!(err.to_string().contains("msite restorereplica"), "{err}");
    let reason = f.sites[i].status().unwrap().rolled_back;
    assert!(reason.is_some_and(|r| r.contains("twice")));
    assert!(matches!(
        f.sites[i].checkin("z", "main", b"z", "u", ""),
        Err(CoreError::Locked(_))
    ));
    assert!(f.sites[i].export_to_parts(&f.id(0), None).is_err());
}

/// A site put back by a file copy that checks in again reuses one of its own numbers; the
/// sibling's next packet, whose base names the other entry under that number, locks it as
/// rolled back (invariant 8), and the packet changes nothing else.
pub fn case_rolled_back_site_that_numbered_again_locks_itself_at_a_base<F: StoreFactory>(
    factory: &F,
) {
    let mut f = Family::new(factory, 2, 40);
    f.settle(&[(0, 1)]);
    let snap = f.backup(1);
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.snapshot_rollback(1, &snap);
    f.sites[1].checkin("a", "main", b"other", "u", "").unwrap();
    assert!(f.sites[1].status().unwrap().rolled_back.is_none());
    f.sites[0].checkin("b", "main", b"x", "u", "").unwrap();
    let p = f.export(0, 1).unwrap();
    let before = f.sites[1].digest().unwrap();
    let own = f.sites[1].own_row().unwrap();
    let err = f.import(1, p.clone()).unwrap_err();
    locked_by_own_fork(&f, 1, &err);
    assert_eq!(before, f.sites[1].digest().unwrap());
    assert_eq!(own, f.sites[1].own_row().unwrap());
    // The lock holds for the next import too.
    assert!(matches!(f.import(1, p), Err(CoreError::Locked(m)) if m.contains("restorereplica")));
}

/// The same, when the other entry arrives as an entry a third replica relays (it never
/// talked to the rolled-back site, so it sends all it holds of it): the entry under the
/// reused number locks the site.
pub fn case_rolled_back_site_that_numbered_again_locks_itself_on_a_relayed_entry<
    F: StoreFactory,
>(
    factory: &F,
) {
    let mut f = Family::new(factory, 3, 41);
    f.settle(&hub(3));
    let snap = f.backup(1);
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&hub(3));
    f.snapshot_rollback(1, &snap);
    f.sites[1].checkin("a", "main", b"other", "u", "").unwrap();
    let p = f.export(2, 1).unwrap();
    let before = f.sites[1].digest().unwrap();
    let err = f.import(1, p).unwrap_err();
    locked_by_own_fork(&f, 1, &err);
    assert_eq!(before, f.sites[1].digest().unwrap());
}

/// A third replica that relays an older restore request of a sibling than the one held
/// here is refused as stale (PROTOCOL §6.4), changing nothing; our next packet gives it the
/// newer request, and the family completes the restoration and converges.
pub fn case_an_older_restore_request_relayed_by_a_third_replica_is_refused_as_stale<
    F: StoreFactory,
>(
    factory: &F,
) {
    let mut f = Family::new(factory, 3, 42);
    f.settle(&mesh(3));
    let backup = f.backup(2);
    f.restore(2, &backup);
    f.sites[2].restorereplica(&[], false).unwrap();
    let older = f.sites[2].status().unwrap().incarnation;
    let p = f.export(2, 1).unwrap();
    assert!(applied(&f.import(1, p).unwrap()));
    // Lost again before anything else moved; the newer request reaches r0 only.
    f.restore(2, &backup);
    f.sites[2].restorereplica(&[], false).unwrap();
    let newer = f.sites[2].status().unwrap().incarnation;
    assert!(newer > older);
    let p = f.export(2, 0).unwrap();
    assert!(applied(&f.import(0, p).unwrap()));
    f.sites[1].checkin("c", "main", b"1", "u", "").unwrap();
    let relay = f.export(1, 0).unwrap();
    let before = (f.sites[0].digest().unwrap(), f.sites[0].own_row().unwrap());
    match f.import(0, relay).unwrap_err() {
        CoreError::Refused(Refusal::StaleRequest {
            sender,
            replica,
            had,
            held,
        }) => {
            assert_eq!((sender.as_str(), replica.as_str()), ("r1", "r2"));
            assert_eq!((had, held), (older, newer));
        }
        other => panic!("expected a stale refusal, got {other}"),
    }
    assert_eq!(
        before,
        (f.sites[0].digest().unwrap(), f.sites[0].own_row().unwrap())
    );
    f.settle(&mesh(3));
    assert!(f.sites[2].status().unwrap().recovering.is_none());
    f.assert_converged();
    assert_no_reuse(&f);
}

/// Sibling created after the backup joins the awaited set.
pub fn case_sibling_created_after_the_backup_joins_the_awaited_set<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 24);
    f.settle(&[(0, 1)]);
    let backup = f.backup(1);
    let c = f.mkreplica(1, "late");
    f.sites[c].checkin("late/x", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1), (1, c)]);
    f.restore(1, &backup);
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

/// Two replicas restoring at once both complete.
pub fn case_two_replicas_restoring_at_once_both_complete<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 25);
    f.settle(&mesh(3));
    let b1 = f.backup(1);
    let b2 = f.backup(2);
    f.sites[1].checkin("one", "main", b"1", "u", "").unwrap();
    f.sites[2].checkin("two", "main", b"2", "u", "").unwrap();
    f.settle(&mesh(3));
    f.restore(1, &b1);
    f.restore(2, &b2);
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

/// Two restorations at once, the younger one's sibling having acknowledged the older before
/// it lost its store (K32, found by the simulator, seeds 150451356 and 150898154). Site 0 is
/// restored; site 2 answers first (it lacks 0's last entries), site 1 holds them, answers
/// counting them and passes both to site 2, then is restored from a copy older than all of it.
/// Recovering, site 1 answers site 0 provisionally from that copy. That answer must not
/// complete site 0's restoration (it would number the lost entries' numbers again, which
/// site 2 holds): site 0 waits for site 1's numbered acknowledgement, made when site 1's own
/// restoration completes, by when site 1 holds the entries again.
pub fn case_a_sibling_restored_after_acknowledging_answers_when_its_own_restoration_completes<
    F: StoreFactory,
>(
    factory: &F,
) {
    let mut f = Family::new(factory, 3, 33);
    f.settle(&mesh(3));
    let b0 = f.backup(0);
    let b1 = f.backup(1);
    f.sites[0].checkin("lost", "main", b"0", "u", "").unwrap();
    f.sync(0, 1);
    let n = f.sites[0].own_row().unwrap().get(&f.id(0));
    let lost = f.sites[0].entry(&f.id(0), n).unwrap().unwrap().hash;
    f.restore(0, &b0);
    f.sites[0].restorereplica(&[], false).unwrap();
    f.sync(0, 2);
    f.sync(2, 0);
    let rec = f.sites[0].status().unwrap().recovering.unwrap();
    assert!(!rec.awaited.contains_key(&f.id(2)), "site 2 answered");
    f.sync(0, 1);
    f.sync(1, 2);
    assert_eq!(f.sites[2].entry(&f.id(0), n).unwrap().unwrap().hash, lost);
    f.restore(1, &b1);
    f.sites[1].restorereplica(&[], false).unwrap();
    for _ in 0..3 {
        f.sync(1, 0);
        f.sync(0, 1);
    }
    assert!(
        f.sites[0].status().unwrap().recovering.is_some(),
        "a provisional answer from a younger restoration does not complete the older one"
    );
    assert!(f.sites[0].awaits_completion_of(&f.id(1)).unwrap());
    for _ in 0..10 {
        for (a, b) in mesh(3) {
            f.sync(a, b);
            f.sync(b, a);
        }
    }
    for s in &f.sites {
        assert!(
            s.status().unwrap().recovering.is_none(),
            "a restoration did not complete"
        );
    }
    assert_eq!(f.sites[0].entry(&f.id(0), n).unwrap().unwrap().hash, lost);
    unlocked_then_converges(&f, 0, "after", b"1", &mesh(3));
}

/// Restoring again from an older backup.
pub fn case_restoring_again_from_an_older_backup<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 26);
    f.settle(&[(0, 1)]);
    let old = f.backup(1);
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    let newer = f.backup(1);
    f.restore(1, &newer);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.settle(&[(0, 1)]);
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    f.sites[1].checkin("b", "main", b"2", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.restore(1, &old);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.settle(&[(0, 1)]);
    unlocked_then_converges(&f, 1, "c", b"3", &[(0, 1)]);
}

/// A backup older than the previous restoration that holds entries that restoration retired
/// (made after the backup it restored from, never sent, numbered again since): restored, it
/// gives them up for the newer history, completes, and no number names two entries (K13).
pub fn case_backup_older_than_the_last_restoration_gives_up_the_entries_it_retired<
    F: StoreFactory,
>(
    factory: &F,
) {
    let mut f = Family::new(factory, 3, 27);
    f.settle(&hub(3));
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&hub(3));
    let first = f.backup(1);
    f.sites[1]
        .checkin("b", "main", b"never sent", "u", "")
        .unwrap();
    f.sites[1]
        .checkin("c", "main", b"never sent either", "u", "")
        .unwrap();
    let second = f.backup(1);
    // The disk is lost before those two entries left the site; the operator restores the
    // older backup, and the restoration numbers again from the entries the family held.
    f.restore(1, &first);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.settle(&hub(3));
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    f.sites[1]
        .checkin("b", "main", b"made again", "u", "")
        .unwrap();
    f.settle(&hub(3));
    let family_row = f.sites[0].own_row().unwrap();
    // Later the disk is lost again and the newer of the two backups is found: it is older than
    // the last restoration and holds the two retired entries under numbers used since.
    f.restore(1, &second);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.settle(&hub(3));
    assert!(
        f.sites[1].status().unwrap().recovering.is_none(),
        "the restoration completes"
    );
    let sel = VersionSel::parse("b").unwrap();
    assert_eq!(f.sites[1].cat(&sel).unwrap(), b"made again");
    assert!(
        f.sites[1].cat(&VersionSel::parse("c").unwrap()).is_err(),
        "the retired entry's element is gone"
    );
    assert!(f.sites[1].own_row().unwrap().get(&f.id(1)) > family_row.get(&f.id(1)));
    assert_no_reuse(&f);
    unlocked_then_converges(&f, 1, "d", b"3", &hub(3));
}

/// Running restorereplica again amends the set and keeps the incarnation.
pub fn case_running_restorereplica_again_amends_the_set_and_keeps_the_incarnation<
    F: StoreFactory,
>(
    factory: &F,
) {
    let mut f = Family::new(factory, 3, 27);
    f.settle(&hub(3));
    let b = f.backup(1);
    f.restore(1, &b);
    let s1 = f.sites[1].restorereplica(&[], false).unwrap();
    let s2 = f.sites[1].restorereplica(&[f.id(0)], false).unwrap();
    assert!(s2.amended);
    assert_eq!(s1.incarnation, s2.incarnation);
    assert_eq!(s2.awaiting, vec!["r0".to_string()]);
    f.sync(1, 0);
    assert!(unlocked(&f.sync(0, 1)));
}

/// Override completes at once.
pub fn case_override_completes_at_once<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 28);
    f.settle(&[(0, 1)]);
    let b = f.backup(1);
    f.restore(1, &b);
    let s = f.sites[1].restorereplica(&[], true).unwrap();
    assert!(s.completed);
    f.sites[1].checkin("x", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    f.assert_converged();
}

/// Lost duplicated and reordered packets during recovery.
pub fn case_lost_duplicated_and_reordered_packets_during_recovery<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 29);
    f.settle(&hub(3));
    let b = f.backup(2);
    f.sites[2].checkin("k", "main", b"1", "u", "").unwrap();
    f.settle(&hub(3));
    f.restore(2, &b);
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

/// Amending after some siblings answered does not wait for them again.
pub fn case_amending_after_some_siblings_answered_does_not_wait_for_them_again<F: StoreFactory>(
    factory: &F,
) {
    // Found by the model check: re-running restorereplica in default mode re-flagged
    // siblings whose acknowledgement had already arrived, and they never answer twice.
    let mut f = Family::new(factory, 3, 30);
    f.settle(&hub(3));
    let b = f.backup(1);
    f.restore(1, &b);
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

/// Restoring a backup taken while recovering starts a new incarnation.
pub fn case_restoring_a_backup_taken_while_recovering_starts_a_new_incarnation<F: StoreFactory>(
    factory: &F,
) {
    // Found by the model check and the simulator: amending the backup's recovery record kept
    // the incarnation, so old acknowledgements passed and a number could be reused.
    let mut f = Family::new(factory, 2, 31);
    f.settle(&[(0, 1)]);
    let b1 = f.backup(1);
    f.restore(1, &b1);
    let first = f.sites[1].restorereplica(&[], false).unwrap();
    let b2 = f.backup(1);
    f.sync(1, 0);
    let old_ack = f.export(0, 1).unwrap();
    assert!(matches!(
        f.import(1, old_ack.clone()).unwrap(),
        ImportOutcome::Applied { unlocked: true, .. }
    ));
    f.settle(&[(0, 1)]);
    f.restore(1, &b2);
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
    unlocked_then_converges(&f, 1, "after", b"x", &[(0, 1)]);
}

/// Opens `F`'s stores inside a [`FaultyStore`] that shares one [`FaultPlan`]: the plan counts
/// the writes of every site of a family.
struct FaultyFactory<F> {
    inner: F,
    plan: FaultPlan,
}

impl<F: StoreFactory> StoreFactory for FaultyFactory<F> {
    type Store = FaultyStore<F::Store>;

    fn capabilities(&self) -> crate::testkit::conformance::Capabilities {
        self.inner.capabilities()
    }

    fn open(&self, dir: &Path) -> crate::store::Result<Self::Store> {
        Ok(FaultyStore::new(self.inner.open(dir)?, self.plan.clone()))
    }

    fn corrupt(&self, dir: &Path) -> crate::store::Result<()> {
        self.inner.corrupt(dir)
    }
}

/// Whether `e` is a write failure injected by a [`FaultPlan`].
fn injected(e: &CoreError) -> bool {
    e.to_string().contains("injected fault")
}

/// Runs `op` at site `i`; when an injected write failure makes it fail, the site's process
/// "dies": its store is reopened from its directory and the operator runs the same step again.
fn step<F: StoreFactory, T>(
    f: &mut Family<'_, F>,
    i: usize,
    crashes: &mut u32,
    op: impl Fn(&Family<'_, F>) -> Result<T, CoreError>,
) -> T {
    for _ in 0..3 {
        match op(f) {
            Ok(v) => return v,
            Err(e) if injected(&e) => {
                *crashes += 1;
                f.reopen(i);
            }
            Err(e) => panic!("step at {} failed: {e}", f.names[i]),
        }
    }
    panic!("a step at {} failed three times", f.names[i]);
}

/// Exports from `a` to `b` and imports there, each step surviving a crash; a stale packet is
/// dropped as an operator would. Returns the import's outcome (None: nothing to send).
fn deliver<F: StoreFactory>(
    f: &mut Family<'_, F>,
    a: usize,
    b: usize,
    crashes: &mut u32,
) -> Option<ImportOutcome> {
    let parts = step(f, a, crashes, |f| {
        f.sites[a].export_to_parts(&f.id(b), None)
    })?;
    let outcome = step(f, b, crashes, |f| match f.import(b, parts.clone()) {
        Err(CoreError::Refused(Refusal::StaleTarget { .. })) => Ok(ImportOutcome::AlreadyApplied),
        other => other,
    });
    Some(outcome)
}

/// A crash at any write of the restore procedure, at the restored site or at a sibling, is
/// survived: the process starts again, the operator repeats the step that failed, the
/// restoration completes with the site's own entries recovered, and no number is reused.
pub fn case_crash_at_any_write_of_the_procedure_resumes<F: StoreFactory + Clone>(factory: &F) {
    let mut k = 1;
    loop {
        let plan = FaultPlan::new();
        let faulty = FaultyFactory {
            inner: factory.clone(),
            plan: plan.clone(),
        };
        let mut f = Family::new(&faulty, 3, 40 + k);
        f.settle(&hub(3));
        f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
        let backup = f.backup(1);
        f.sites[1].checkin("a", "main", b"2", "u", "").unwrap();
        f.sites[1].checkin("b", "main", b"3", "u", "").unwrap();
        f.settle(&hub(3));
        let lost = f.sites[1].own_row().unwrap().get(&f.id(1));
        f.snapshot_rollback(1, &backup);

        plan.fail_nth_write(k);
        let mut crashes = 0;
        step(&mut f, 1, &mut crashes, |f| f.sites[1].mark_restored());
        step(&mut f, 1, &mut crashes, |f| {
            f.sites[1].restorereplica(&[], false)
        });
        let mut done = false;
        for _ in 0..10 {
            deliver(&mut f, 1, 0, &mut crashes);
            deliver(&mut f, 0, 2, &mut crashes);
            deliver(&mut f, 2, 0, &mut crashes);
            if unlocked(&deliver(&mut f, 0, 1, &mut crashes)) {
                done = true;
                break;
            }
        }
        let fired = plan.faults_fired();
        plan.disarm();
        assert!(done, "crash at write {k}: the restoration did not complete");
        assert!(
            f.sites[1].own_row().unwrap().get(&f.id(1)) > lost,
            "crash at write {k}: own entries were not recovered"
        );
        f.sites[1].checkin("c", "main", b"after", "u", "").unwrap();
        f.settle(&hub(3));
        f.assert_converged();
        assert_no_reuse(&f);
        assert_eq!(u64::from(crashes), fired, "every injected failure was seen");
        if fired == 0 {
            // The procedure has fewer than k writes: every write point has been crashed at.
            assert!(k > 5, "the procedure wrote only {} times", k - 1);
            break;
        }
        k += 1;
    }
}

/// A sibling created after the backup that only it knows of (its creation entry, and every
/// entry after it, went to that sibling alone) cannot be found by the default awaited set; the
/// operator, who made it, names it by id with `--wait-for`, and the restoration waits for it:
/// it completes only after that sibling answered, with the lost entries recovered and no
/// number reused.
pub fn case_sibling_known_only_to_the_lost_store_is_awaited_when_named_by_id<F: StoreFactory>(
    factory: &F,
) {
    let mut f = Family::new(factory, 2, 25);
    f.settle(&[(0, 1)]);
    let backup = f.backup(1);
    let c = f.mkreplica(1, "late");
    f.sites[1].checkin("r1/x", "main", b"1", "u", "").unwrap();
    f.sites[1].checkin("r1/y", "main", b"2", "u", "").unwrap();
    // r1's newest entries, its creation of `late` among them, reach `late` and nobody else.
    f.settle(&[(1, c)]);
    let lost = f.sites[1].own_row().unwrap().get(&f.id(1));
    assert!(f.sites[c].own_row().unwrap().get(&f.id(1)) == lost);
    assert!(f.sites[0].own_row().unwrap().get(&f.id(1)) < lost);
    let late = f.id(c);
    f.restore(1, &backup);
    // The documented procedure: default mode, plus the replica made here after the backup,
    // named by its id (`restorereplica --also-wait-for ID`).
    let start = f.sites[1].restorereplica_also(&[late], false).unwrap();
    assert_eq!(start.awaiting.len(), 2, "{:?}", start.awaiting);
    assert!(
        start.awaiting.contains(&"r0".to_string()),
        "{:?}",
        start.awaiting
    );
    // r0 answers first: it lacks r1's newest entries, so the restoration must go on waiting.
    f.sync(1, 0);
    assert!(!unlocked(&f.sync(0, 1)));
    assert!(f.sites[1].status().unwrap().recovering.is_some());
    // `late` speaks to r1 (its creator); r1 then answers it with the request, and `late`'s
    // acknowledgement completes the restoration.
    let mut done = false;
    for _ in 0..6 {
        if unlocked(&f.sync(c, 1)) {
            done = true;
            break;
        }
        f.sync(1, c);
    }
    assert!(done, "the restoration did not complete after late answered");
    assert!(
        f.sites[1].own_row().unwrap().get(&f.id(1)) > lost,
        "r1's entries that only late held were not recovered"
    );
    f.sites[1].checkin("r1/z", "main", b"3", "u", "").unwrap();
    f.settle(&[(0, 1), (1, c)]);
    f.assert_converged();
    assert_no_reuse(&f);
}
