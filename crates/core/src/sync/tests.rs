//! Two replicas exchanging packets after losses and rollbacks: lost packets are resent
//! (PROTOCOL §5) and refused packets still teach what they must.

use std::sync::Arc;

use crate::testkit::MemStore;
use crate::{Env, Incoming, Replica, SimEnv};

type R = Replica<MemStore>;

fn pair() -> (R, R) {
    let env: Arc<dyn Env> = Arc::new(SimEnv::new(7));
    let r0: R = Replica::init(MemStore::new(), env.clone(), "fam", "r0").unwrap();
    let r1 = crate::testkit::mkreplica_in_memory(&r0, "r1", env).unwrap();
    (r0, r1)
}

/// Exports from `a` to `b` and imports it (a waiting packet stays "in the bay": dropped
/// here, the sender resends). Returns whether a packet was sent.
fn sync(a: &R, b: &R) -> bool {
    match a.export_to_parts(&b.id(), None).unwrap() {
        Some(p) => {
            b.import(Incoming::from_parts(p, "packet").unwrap())
                .unwrap();
            true
        }
        None => false,
    }
}

/// K10 (found by the simulator, seed 2113 of the sync profile): the target's first,
/// acknowledgement-only packet is lost, and so is the sender's update. Before the fix the
/// sender resent only after a first report and the target had nothing new to say: with
/// two-way exchange nobody ever sent again (PROTOCOL §5).
#[test]
fn lost_first_report_and_lost_update_are_recovered_by_two_way_exchange() {
    let (r0, r1) = pair();
    // r1's first contact (an acknowledgement-only packet) is lost.
    assert!(r1.export_to_parts(&r0.id(), None).unwrap().is_some());
    r0.mkelem("a.txt").unwrap();
    // r0's update is lost too.
    assert!(r0.export_to_parts(&r1.id(), None).unwrap().is_some());
    for _ in 0..6 {
        sync(&r0, &r1);
        sync(&r1, &r0);
    }
    assert_eq!(r0.own_row().unwrap(), r1.own_row().unwrap());
    assert_eq!(r0.digest().unwrap(), r1.digest().unwrap());
    // And the exchange settles.
    assert!(!sync(&r0, &r1) && !sync(&r1, &r0));
}

/// K1 (the remainder): after `restorereplica --override` renumbered an entry a sibling
/// holds, the sibling refuses the restored replica's packets as divergent; it must still
/// learn the replica's new incarnation from them, or its own packets to the replica stay
/// stale forever and the fork is never reported there.
#[test]
fn a_divergent_packet_still_teaches_the_senders_incarnation() {
    let (r0, r1) = pair();
    for _ in 0..3 {
        sync(&r0, &r1);
        sync(&r1, &r0);
    }
    let env: Arc<dyn Env> = Arc::new(SimEnv::new(8));
    let backup = r0.store().deep_copy();
    r0.mkelem("lost.txt").unwrap();
    sync(&r0, &r1);
    let r0: R = Replica::open(backup, env).unwrap();
    r0.mark_restored().unwrap();
    let start = r0.restorereplica(&[], true).unwrap();
    assert!(start.completed);
    let p = r0.export_to_parts(&r1.id(), None).unwrap().unwrap();
    let res = r1.import(Incoming::from_parts(p, "packet").unwrap());
    assert!(
        matches!(
            res,
            Err(crate::CoreError::Refused(crate::Refusal::Divergent { .. }))
        ),
        "{res:?}"
    );
    assert_eq!(r1.incarnation_of(&r0.id()).unwrap(), start.incarnation);
}

/// K11 (partly): r1 is put back to a snapshot that lacks only r0's latest entry (none of
/// its own), so no check sees a rollback. Once r1's newest packet reports having applied
/// the packet that brought that entry while its row lacks it, r0 resends.
#[test]
fn a_report_contradicting_the_senders_row_resends_what_it_lost() {
    let (r0, r1) = pair();
    for _ in 0..3 {
        sync(&r0, &r1);
        sync(&r1, &r0);
    }
    let env: Arc<dyn Env> = Arc::new(SimEnv::new(9));
    let snapshot = r1.store().deep_copy();
    r0.mkelem("a.txt").unwrap();
    sync(&r0, &r1);
    sync(&r1, &r0);
    let r1: R = Replica::open(snapshot, env).unwrap();
    for i in 0..6 {
        r1.mkelem(&format!("b{i}.txt")).unwrap();
        sync(&r1, &r0);
        sync(&r0, &r1);
    }
    assert_eq!(r0.own_row().unwrap(), r1.own_row().unwrap());
    assert_eq!(r0.digest().unwrap(), r1.digest().unwrap());
}
