//! Retiring a replica (docs/protocol.md §10): the family forgets it (restorations do not await
//! it, retention does not wait for it), its objects are taken over only after it is retired,
//! and its packets are refused with nothing changed.

use crate::retain::Kept;
use crate::{CoreError, ObjectRef, Refusal};

use super::*;

/// The live sites `live` hold the same own row and digest.
fn assert_live_converged<F: StoreFactory>(f: &Family<'_, F>, live: &[usize]) {
    let (a, rest) = live.split_first().expect("a live site");
    for b in rest {
        assert_eq!(
            f.sites[*a].own_row().unwrap(),
            f.sites[*b].own_row().unwrap(),
            "own rows differ between {} and {}",
            f.names[*a],
            f.names[*b]
        );
        assert_eq!(
            f.sites[*a].digest().unwrap(),
            f.sites[*b].digest().unwrap(),
            "digests differ between {} and {}",
            f.names[*a],
            f.names[*b]
        );
    }
}

/// What an import at `i` of `parts` changed nothing of: (own row, digest) before and after.
fn refused_unchanged<F: StoreFactory>(f: &Family<'_, F>, i: usize, parts: Vec<Vec<u8>>) -> Refusal {
    let before = (f.sites[i].own_row().unwrap(), f.sites[i].digest().unwrap());
    let refusal = match f.import(i, parts) {
        Err(CoreError::Refused(r)) => r,
        other => panic!("expected a refusal at {}, got {other:?}", f.names[i]),
    };
    let after = (f.sites[i].own_row().unwrap(), f.sites[i].digest().unwrap());
    assert_eq!(before, after, "a refused packet changed {}", f.names[i]);
    refusal
}

/// r2 is retired by r0 (which created it, so masters its replica object); r1 is then restored
/// from a backup taken *before* the retirement: its default awaited set names r2, and the
/// retirement, arriving with r0's recovery update, takes r2 out of it, so the restoration
/// completes on r0's answer alone. A restoration started after the retirement never names r2,
/// and one told to wait for r2 is refused.
pub fn case_retired_replica_is_not_awaited_by_a_later_restoration<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 700);
    f.settle(&hub(3));
    f.sites[2].checkin("r2file", "main", b"2", "u", "").unwrap();
    f.settle(&hub(3));
    let backup = f.backup(1);
    let retired = f.sites[0].rmreplica("r2").unwrap();
    assert_eq!(retired.last, f.sites[0].own_row().unwrap().get(&f.id(2)));
    f.sites[1].checkin("a", "main", b"1", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    assert!(!f.sites[1].known_siblings().unwrap().contains(&f.id(2)));
    f.restore(1, &backup);
    let start = f.sites[1].restorereplica(&[], false).unwrap();
    assert_eq!(
        start.awaiting.len(),
        2,
        "the old store still knows r2 as live"
    );
    let mut done = false;
    for _ in 0..10 {
        f.sync(1, 0);
        if matches!(
            f.sync(0, 1),
            Some(ImportOutcome::Applied { unlocked: true, .. })
        ) {
            done = true;
            break;
        }
    }
    assert!(done, "the restoration waited for the retired r2");
    f.settle(&[(0, 1)]);
    assert_live_converged(&f, &[0, 1]);
    // A restoration that starts now awaits r0 only, and one that names r2 is refused
    // (it would never answer), with the store left restored and locked.
    let backup = f.backup(1);
    f.restore(1, &backup);
    let err = f.sites[1]
        .restorereplica(&[f.id(0), f.id(2)], false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("r2 was retired by r0") && err.contains("leave it out"),
        "{err}"
    );
    assert!(f.sites[1].status().unwrap().restored);
    assert_eq!(
        f.sites[1].restorereplica(&[], false).unwrap().awaiting,
        vec!["r0".to_string()]
    );
}

/// Retention's minimum over the siblings' reports excludes a retired replica: before r0
/// retires the silent r2, a scrub keeps everything since r2's last report (naming r2); after,
/// it drops what r1 holds.
pub fn case_retention_scrubs_past_a_retired_replicas_old_acknowledgement<F: StoreFactory>(
    factory: &F,
) {
    let f = Family::new(factory, 3, 710);
    for i in 0..3 {
        f.sites[i]
            .checkin(&format!("f{i}"), "main", &[i as u8], "u", "")
            .unwrap();
    }
    f.settle(&mesh(3));
    let acked_by_r2 = f.sites[0].own_row().unwrap().get(&f.id(0));
    // r2 goes silent; r0 and r1 go on.
    for round in 0..3u8 {
        f.sites[0]
            .checkin("f0", "main", &[9, round], "u", "")
            .unwrap();
        f.sites[1]
            .checkin("f1", "main", &[8, round], "u", "")
            .unwrap();
    }
    f.settle(&[(0, 1)]);
    f.sites[0].set_retention_window(Some(0)).unwrap();
    let before = f.sites[0].scrub(false).unwrap();
    let mine = before.origins.iter().find(|l| l.name == "r0").unwrap();
    assert_eq!(mine.dropped, acked_by_r2, "{mine}");
    assert!(
        matches!(&mine.why, Kept::Sibling { name, .. } if name == "r2"),
        "{mine}"
    );
    f.sites[0].rmreplica("r2").unwrap();
    f.settle(&[(0, 1)]);
    let after = f.sites[0].scrub(false).unwrap();
    let mine = after.origins.iter().find(|l| l.name == "r0").unwrap();
    assert_eq!(
        (mine.dropped, mine.why.clone()),
        (mine.held, Kept::Nothing),
        "{mine}"
    );
    assert!(f.sites[0].entries_of(&f.id(0)).unwrap().is_empty());
    assert!(after.entries_dropped > 0);
    assert_live_converged(&f, &[0, 1]);
}

/// `chmaster --all --from r1` is refused while r1 is live, and at a replica that does not
/// master r1's replica object; after r0 retires r1 it moves r1's branch type, element and
/// branch to r0, the change replicates, and r0 can check in where only r1 could before.
pub fn case_chmaster_all_from_needs_the_retirement_and_replicates<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 720);
    let rel = f.sites[1].mkbrtype("rel").unwrap();
    f.sites[1].checkin("f1", "main", b"1", "u", "").unwrap();
    f.settle(&hub(3));
    let err = f.sites[0].chmaster_all_from("r1").unwrap_err().to_string();
    assert!(
        err.contains("still exports") && err.contains("rmreplica r1"),
        "{err}"
    );
    assert!(f.sites[0].checkin("f1", "main", b"x", "u", "").is_err());
    f.sites[0].rmreplica("r1").unwrap();
    f.settle(&[(0, 2)]);
    let err = f.sites[2].chmaster_all_from("r1").unwrap_err();
    assert!(matches!(err, CoreError::NotMaster { .. }), "{err}");
    let moved = f.sites[0].chmaster_all_from("r1").unwrap();
    assert!(moved.contains(&ObjectRef::BrType(rel)), "{moved:?}");
    assert_eq!(
        moved.len(),
        3,
        "brtype, element and its main branch: {moved:?}"
    );
    assert!(f.sites[0].view().mastered_by(&f.id(1)).unwrap().is_empty());
    f.sites[0].checkin("f1", "main", b"2", "u", "").unwrap();
    f.settle(&[(0, 2)]);
    let v = f.sites[2].view();
    assert_eq!(v.master_of(&ObjectRef::BrType(rel)).unwrap(), f.id(0));
    assert!(v.mastered_by(&f.id(1)).unwrap().is_empty());
    assert_live_converged(&f, &[0, 2]);
    assert!(f.sites[0].chmaster_all_from("r1").unwrap().is_empty());
}

/// Nothing is handed to a retired replica: `chmaster` to it is refused, naming the
/// retirement; and a mastership request it made before it was retired, arriving at the master
/// with its retirement, is not granted (the object would never change again): the master
/// keeps it and says why.
pub fn case_mastership_is_not_handed_to_a_retired_replica<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 730);
    let rel = ObjectRef::BrType(f.sites[2].mkbrtype("rel").unwrap());
    f.settle(&hub(3));
    f.sites[1].reqmaster("brtype:rel").unwrap();
    assert!(applied(
        &f.sync(1, 0).expect("r1's request reaches the hub")
    ));
    f.sites[0].rmreplica("r1").unwrap();
    let notes = match f
        .sync(0, 2)
        .expect("the request and the retirement reach r2")
    {
        ImportOutcome::Applied { notes, .. } => notes,
        other => panic!("r2 did not apply the hub's packet: {other:?}"),
    };
    assert!(
        notes
            .iter()
            .any(|n| n.contains("requested by r1 not granted") && n.contains("retired by r0")),
        "{notes:?}"
    );
    assert_eq!(f.sites[2].view().master_of(&rel).unwrap(), f.id(2));
    let err = f.sites[2]
        .chmaster("brtype:rel", "r1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("r1 was retired by r0") && err.contains("give it to a live replica"),
        "{err}"
    );
    f.sites[2].chmaster("brtype:rel", "r0").unwrap();
    f.settle(&[(0, 2)]);
    assert_eq!(f.sites[0].view().master_of(&rel).unwrap(), f.id(0));
    assert_live_converged(&f, &[0, 2]);
}

/// r0 retires r1 while r1 (unaware) checks in again: r1's packet to r0 is refused as from a
/// retired replica; r2, which took r1's late entry before it heard of the retirement, refuses
/// the retirement (it would hold entries past it), and r0 refuses r2's relay of the late
/// entry: every refusal names it, and changes nothing.
pub fn case_packets_from_a_retired_replica_are_refused_with_state_unchanged<F: StoreFactory>(
    factory: &F,
) {
    let f = Family::new(factory, 3, 730);
    f.settle(&mesh(3));
    f.sites[0].rmreplica("r1").unwrap();
    f.sites[1]
        .checkin("late", "main", b"late", "u", "")
        .unwrap();
    let from_r1 = f.export(1, 0).unwrap();
    let r = refused_unchanged(&f, 0, from_r1);
    assert!(matches!(r, Refusal::SenderRetired { .. }), "{r}");
    assert!(r.to_string().contains("was retired by r0"), "{r}");
    assert!(f.sync(1, 2).is_some());
    let retirement = f.export(0, 2).unwrap();
    let r = refused_unchanged(&f, 2, retirement);
    assert!(matches!(r, Refusal::PastRetirement { .. }), "{r}");
    let relay = f.export(2, 0).unwrap();
    let r = refused_unchanged(&f, 0, relay);
    assert!(
        r.to_string().contains("kept working after it was retired"),
        "{r}"
    );
    assert!(f.sites[0].export_to_parts(&f.id(1), None).is_err());
}

/// A replica retires itself only when it masters nothing; its last packet carries the
/// retirement, after which it takes no changes and its siblings forget it.
pub fn case_a_replica_retires_itself_once_it_masters_nothing<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 740);
    f.settle(&hub(3));
    f.sites[2].mkbrtype("b2").unwrap();
    let err = f.sites[2].rmreplica("r2").unwrap_err().to_string();
    assert!(
        err.contains("still masters 1 object") && err.contains("brtype:b2"),
        "{err}"
    );
    f.sites[2].chmaster("brtype:b2", "r0").unwrap();
    f.sites[2].rmreplica("r2").unwrap();
    let err = f.sites[2].checkin("x", "main", b"x", "u", "").unwrap_err();
    assert!(err.to_string().contains("was retired by r2"), "{err}");
    let last = f.export(2, 0).expect("its last packet");
    assert!(
        applied(&f.import(0, last.clone()).unwrap()),
        "its last packet is taken"
    );
    f.settle(&[(0, 1)]);
    for i in 0..2 {
        assert!(f.sites[i].retirement(&f.id(2)).unwrap().is_some());
        assert!(!f.sites[i].known_siblings().unwrap().contains(&f.id(2)));
        let matrix = f.sites[i].epoch_matrix().unwrap();
        assert!(matrix.iter().all(|(id, _)| *id != f.id(2)));
    }
    assert_live_converged(&f, &[0, 1]);
    let r = refused_unchanged(&f, 0, last);
    assert!(matches!(r, Refusal::SenderRetired { .. }), "{r}");
}

/// A replica that retired itself numbers nothing after its retirement, not even the
/// acknowledgement of a sibling's restore request it imports before it stops: its packets,
/// the one carrying the retirement included, stay acceptable to the siblings that have not
/// applied the retirement yet (found by the simulator: seed 26 of the retirement runs).
pub fn case_a_self_retired_replica_does_not_acknowledge_a_restore_request<F: StoreFactory>(
    factory: &F,
) {
    let mut f = Family::new(factory, 3, 780);
    f.settle(&hub(3));
    let backup = f.backup(1);
    f.sites[2].rmreplica("r2").unwrap();
    let made = f.sites[2].own_row().unwrap().get(&f.id(2));
    f.restore(1, &backup);
    f.sites[1].restorereplica(&[], false).unwrap();
    let request = f.export(1, 0).expect("r1's restore request");
    assert!(applied(&f.import(0, request).unwrap()));
    let relayed = f.export(0, 2).expect("r0 relays the request to r2");
    f.import(2, relayed).unwrap();
    assert_eq!(
        f.sites[2].own_row().unwrap().get(&f.id(2)),
        made,
        "the retired r2 numbered an entry after its retirement"
    );
    let last = f.export(2, 0).expect("r2's last packet");
    assert!(
        applied(&f.import(0, last).unwrap()),
        "r0 takes r2's last packet, which carries its retirement"
    );
    assert!(f.sites[0].retirement(&f.id(2)).unwrap().is_some());
    f.settle(&[(0, 1)]);
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    assert_live_converged(&f, &[0, 1]);
}

/// A restoration of a replica that is then retired concerns nobody: the retiring replica and
/// every one that applies the retirement stop holding and propagating its restore request.
pub fn case_a_retired_replicas_restore_request_is_no_longer_propagated<F: StoreFactory>(
    factory: &F,
) {
    let mut f = Family::new(factory, 3, 760);
    f.settle(&hub(3));
    let backup = f.backup(2);
    f.restore(2, &backup);
    f.sites[2].restorereplica(&[], false).unwrap();
    f.sync(2, 0);
    f.sync(0, 1);
    let held = |i: usize| f.sites[i].held_requests().unwrap().len();
    assert_eq!((held(0), held(1)), (1, 1), "r0 and r1 hold r2's request");
    f.sites[0].rmreplica("r2").unwrap();
    assert_eq!(held(0), 0, "the retiring replica dropped the request");
    f.settle(&[(0, 1)]);
    assert_eq!(held(1), 0, "the retirement dropped it at r1");
    let from_r2 = f.export(2, 1).expect("r2 still sends its request");
    let r = refused_unchanged(&f, 1, from_r2);
    assert!(matches!(r, Refusal::SenderRetired { .. }), "{r}");
    assert_eq!(held(1), 0, "a refused packet of r2 teaches nothing");
    assert_live_converged(&f, &[0, 1]);
}
