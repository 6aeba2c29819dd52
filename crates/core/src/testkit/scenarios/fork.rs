//! Fork repair scenarios (`msite repairfork`, docs/protocol.md "Divergence and fork repair"):
//! two timelines of one origin, the operator keeps one, the family converges on it, and the
//! entries of the other are kept for the operator with their content.

use msite_packet::wire;

use super::trust::{refused_unchanged, Decoded};
use super::{hub, Family};
use crate::testkit::conformance::StoreFactory;
use crate::{CoreError, ImportOutcome, KeepTimeline, Refusal, VersionSel};

/// A fork of r1's history: r1 checks in `one` (timeline A), every sibling gets it along
/// `edges`, then r1 is restored from a backup older than that with `--override` and checks in
/// `one` again (timeline B). Returns the packet r1 sent r0 afterwards, refused as divergent,
/// and the number the refusal names.
fn fork_r1<F: StoreFactory>(
    f: &mut Family<'_, F>,
    edges: &[(usize, usize)],
) -> (Vec<Vec<u8>>, u64) {
    f.settle(edges);
    let backup = f.backup(1);
    f.sites[1]
        .checkin("one", "main", b"timeline A", "u", "")
        .unwrap();
    f.settle(edges);
    f.restore(1, &backup);
    assert!(f.sites[1].restorereplica(&[], true).unwrap().completed);
    f.sites[1]
        .checkin("one", "main", b"timeline B", "u", "")
        .unwrap();
    let p = f.export(1, 0).unwrap();
    let number = match f.import(0, p.clone()) {
        Err(CoreError::Refused(Refusal::Divergent { origin, number, .. })) if origin == "r1" => {
            number
        }
        other => panic!("expected a divergent refusal naming r1, got {other:?}"),
    };
    (p, number)
}

/// Imports `p` at the snapshot-made replica `s`, which must refuse it because giving up the
/// entries it needs would undo rows its snapshot brought, telling the operator to re-create it.
fn refused_for_recreation<F: StoreFactory>(f: &Family<'_, F>, s: usize, p: Vec<Vec<u8>>) {
    match f.import(s, p) {
        Err(CoreError::Refused(Refusal::Other(m))) => assert!(
            m.contains("came with the snapshot it was made from")
                && m.contains("re-create it from a fresh creation packet"),
            "{m}"
        ),
        other => panic!("expected the re-create refusal, got {other:?}"),
    }
}

/// Exchanges along `edges` for `rounds` rounds, as the operators' scheduled exports and
/// imports would, whatever each import says (refusals included).
fn exchange<F: StoreFactory>(f: &Family<'_, F>, edges: &[(usize, usize)], rounds: usize) {
    for _ in 0..rounds {
        for &(a, b) in edges {
            for (x, y) in [(a, b), (b, a)] {
                if let Ok(Some(p)) = f.sites[x].export_to_parts(&f.id(y), None) {
                    let _ = f.import(y, p);
                }
            }
        }
    }
}

/// What every site holds of `one` after the repair.
fn one_everywhere<F: StoreFactory>(f: &Family<'_, F>, want: &[u8]) {
    for (i, s) in f.sites.iter().enumerate() {
        let got = s.cat(&VersionSel::parse("one").unwrap()).unwrap();
        assert_eq!(got, want, "content of one at {}", f.names[i]);
    }
}

/// The given-up entries at site `i` hold a check-in with `content`.
fn gave_up_content<F: StoreFactory>(f: &Family<'_, F>, i: usize, content: &[u8]) {
    let given = f.sites[i].given_up_entries().unwrap();
    assert!(
        given
            .iter()
            .any(|g| g.entry.op.name() == "checkin" && g.content.as_deref() == Some(content)),
        "{} keeps the given-up check-in with its content: {given:?}",
        f.names[i]
    );
}

/// Keep timeline A (the one the siblings hold), decided at r0: r1 gives up its own entries
/// of timeline B, locks itself until `restorereplica` gets timeline A back, and the family
/// converges with equal digests; r1 keeps the given-up check-in for the operator.
pub fn case_fork_repair_keeps_timeline_a<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 60);
    let (_, k) = fork_r1(&mut f, &[(0, 1)]);
    let r = f.sites[0]
        .repair_fork(&f.id(1), k, KeepTimeline::This)
        .unwrap();
    assert_eq!((r.given_up, r.locked), (0, false));
    let p = f
        .export(0, 1)
        .expect("the decision travels even with nothing new");
    let err = f.import(1, p).unwrap_err();
    assert!(
        matches!(err, CoreError::Locked(_)) || matches!(err, CoreError::Refused(_)),
        "{err}"
    );
    let reason = f.sites[1]
        .status()
        .unwrap()
        .rolled_back
        .expect("r1 locks itself");
    assert!(reason.contains("fork repair"), "{reason}");
    gave_up_content(&f, 1, b"timeline B");
    f.sites[1].restorereplica(&[], false).unwrap();
    exchange(&f, &[(0, 1)], 4);
    assert!(
        f.sites[1].status().unwrap().recovering.is_none(),
        "r1 completes"
    );
    f.settle(&[(0, 1)]);
    f.assert_converged();
    one_everywhere(&f, b"timeline A");
}

/// Keep timeline B (the restored replica's), decided at r1: r0 gives up timeline A of r1,
/// keeps it for the operator, and the family converges on B.
pub fn case_fork_repair_keeps_timeline_b<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 61);
    let (_, k) = fork_r1(&mut f, &[(0, 1)]);
    let r = f.sites[1]
        .repair_fork(&f.id(1), k, KeepTimeline::This)
        .unwrap();
    assert_eq!((r.given_up, r.locked), (0, false));
    exchange(&f, &[(0, 1)], 2);
    f.settle(&[(0, 1)]);
    f.assert_converged();
    one_everywhere(&f, b"timeline B");
    gave_up_content(&f, 0, b"timeline A");
    assert!(f.sites[1].given_up_entries().unwrap().is_empty());
}

/// The dump holds every given-up entry from the fork's number on, each in number order and
/// verified, with the content of the check-in; forgetting them empties it.
pub fn case_fork_repair_keeps_the_given_up_content<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 62);
    let (_, k) = fork_r1(&mut f, &[(0, 1)]);
    let preview = f.sites[0]
        .fork_preview(&f.id(1), k, KeepTimeline::Other)
        .unwrap();
    let r = f.sites[0]
        .repair_fork(&f.id(1), k, KeepTimeline::Other)
        .unwrap();
    assert_eq!(r.given_up as usize, preview.len());
    let given = f.sites[0].given_up_entries().unwrap();
    let numbers: Vec<u64> = given.iter().map(|g| g.entry.number).collect();
    let want: Vec<u64> = preview.iter().map(|e| e.number).collect();
    assert_eq!(numbers, want);
    assert_eq!(numbers.first(), Some(&k));
    assert!(given.iter().all(|g| g.entry.origin == f.id(1)));
    gave_up_content(&f, 0, b"timeline A");
    assert!(f.sites[0].entry(&f.id(1), k).unwrap().is_none());
    assert_eq!(f.sites[0].forget_given_up().unwrap() as usize, given.len());
    assert!(f.sites[0].given_up_entries().unwrap().is_empty());
}

/// The decision reaches a spoke through the hub: r1 decides to keep its timeline B; r2 holds
/// timeline A and talks only to the hub r0, which relays the decision with timeline B.
pub fn case_fork_repair_decision_is_relayed_through_a_hub<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 63);
    let (_, k) = fork_r1(&mut f, &hub(3));
    assert!(
        f.sites[2].entry(&f.id(1), k).unwrap().is_some(),
        "r2 holds A"
    );
    f.sites[1]
        .repair_fork(&f.id(1), k, KeepTimeline::This)
        .unwrap();
    exchange(&f, &hub(3), 3);
    assert_eq!(
        f.sites[2].fork_decisions().unwrap().len(),
        1,
        "r2 got it from r0"
    );
    f.settle(&hub(3));
    f.assert_converged();
    one_everywhere(&f, b"timeline B");
    gave_up_content(&f, 2, b"timeline A");
}

/// A relay cannot alter a decision it relays or make one up (decisions are signed by their
/// decider): the hub flips the timeline r1's decision keeps, or adds a decision attributed to
/// r1 under a copied signature, and signs the packet as itself; r2 refuses both with its state
/// unchanged. A made-up unsigned decision is not adopted. The genuine packet then applies.
pub fn case_fork_decision_altered_or_made_up_by_a_relay_is_refused<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 64);
    let (_, k) = fork_r1(&mut f, &hub(3));
    f.sites[1]
        .repair_fork(&f.id(1), k, KeepTimeline::This)
        .unwrap();
    exchange(&f, &[(0, 1)], 2);
    let genuine = f.export(0, 2).expect("the hub relays the decision");
    let relayed = Decoded::new(&genuine);
    assert_eq!(relayed.header.fork_decisions.len(), 1);
    assert!(relayed.header.fork_decisions[0].is_signed());

    let mut flipped = relayed.clone();
    flipped.header.fork_decisions[0].keep ^= true;
    f.sites[0].sign_header_for_test(&mut flipped.header, flipped.kind, &flipped.id);
    refused_unchanged(
        &f,
        2,
        flipped.encode(),
        "fork repair decision attributed to r1",
    );

    let mut made_up = relayed.clone();
    let mut extra = made_up.header.fork_decisions[0].clone();
    extra.number += 1;
    made_up.header.fork_decisions.push(extra.clone());
    f.sites[0].sign_header_for_test(&mut made_up.header, made_up.kind, &made_up.id);
    refused_unchanged(&f, 2, made_up.encode(), "does not verify with r1's key");

    let mut unsigned = relayed.clone();
    extra.signature = wire::NO_SIGNATURE;
    unsigned.header.fork_decisions = vec![extra];
    f.sites[0].sign_header_for_test(&mut unsigned.header, unsigned.kind, &unsigned.id);
    let _ = f.import(2, unsigned.encode());
    assert!(
        f.sites[2].fork_decisions().unwrap().is_empty(),
        "an unsigned decision is not adopted"
    );

    f.import(2, genuine).expect("the genuine packet applies");
    assert_eq!(f.sites[2].fork_decisions().unwrap().len(), 1);
    f.settle(&hub(3));
    f.assert_converged();
    one_everywhere(&f, b"timeline B");
}

/// The packet refused as divergent before the repair is imported again after it and
/// applies; one from the given-up timeline's side built later is refused until the decision
/// reaches it.
pub fn case_fork_repair_accepts_the_packet_refused_before<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 64);
    let (refused, k) = fork_r1(&mut f, &[(0, 1)]);
    f.sites[0]
        .repair_fork(&f.id(1), k, KeepTimeline::Other)
        .unwrap();
    match f.import(0, refused) {
        Ok(ImportOutcome::Applied { applied, .. }) => assert!(applied > 0),
        other => panic!("the packet refused before applies after the repair: {other:?}"),
    }
    f.settle(&[(0, 1)]);
    f.assert_converged();
    one_everywhere(&f, b"timeline B");
}

/// The own-fork lock of issue #18 item 1: a site put back by a file copy numbers again and is
/// locked; `restorereplica` alone stalls (the siblings hold the other entry under that
/// number); repairing the fork by giving up its own timeline lets it complete, and it gets
/// the family's entries back.
pub fn case_fork_repair_unblocks_restorereplica_after_an_own_fork<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 65);
    f.settle(&[(0, 1)]);
    let snap = f.backup(1);
    // The first number the copy numbers again: where the two timelines begin to differ (the
    // refusal at a base names the base, which may be later).
    let first = f.sites[1].own_row().unwrap().get(&f.id(1)) + 1;
    f.sites[1]
        .checkin("one", "main", b"family's", "u", "")
        .unwrap();
    f.settle(&[(0, 1)]);
    f.snapshot_rollback(1, &snap);
    f.sites[1]
        .checkin("one", "main", b"numbered twice", "u", "")
        .unwrap();
    f.sites[0].checkin("zero", "main", b"0", "u", "").unwrap();
    let p = f.export(0, 1).unwrap();
    match f.import(1, p) {
        Err(CoreError::Refused(Refusal::OwnFork { number, .. })) => assert!(number >= first),
        other => panic!("expected an own fork, got {other:?}"),
    }
    f.sites[1].restorereplica(&[], false).unwrap();
    exchange(&f, &[(0, 1)], 4);
    assert!(f.sites[1].status().unwrap().recovering.is_some(), "stalls");
    let r = f.sites[1]
        .repair_fork(&f.id(1), first, KeepTimeline::Other)
        .unwrap();
    assert!(r.given_up > 0 && !r.locked, "recovering: no new lock");
    exchange(&f, &[(0, 1)], 4);
    assert!(
        f.sites[1].status().unwrap().recovering.is_none(),
        "completes"
    );
    f.settle(&[(0, 1)]);
    f.assert_converged();
    one_everywhere(&f, b"family's");
    gave_up_content(&f, 1, b"numbered twice");
}

/// A replica made from a snapshot gives up a forked timeline that reached it after its
/// snapshot: it rebuilds its object base from the snapshot's rows (its snapshot base: retention
/// is on at the creator and r1 reported, so not every entry travelled) and the entries above
/// them. The given-up check-in's content stays, since a version of the snapshot holds it too.
pub fn case_fork_repair_at_a_snapshot_replica_above_its_base<F: StoreFactory>(factory: &F) {
    fork_repair_above_the_base(factory, false);
}

/// The same, at a replica whose snapshot base an earlier release stored (a copy of each
/// State row, not blocks): the rebuild reads it as it reads the blocks.
pub fn case_fork_repair_above_a_snapshot_base_of_an_earlier_release<F: StoreFactory>(factory: &F) {
    fork_repair_above_the_base(factory, true);
}

fn fork_repair_above_the_base<F: StoreFactory>(factory: &F, earlier_release: bool) {
    let mut f = Family::new(factory, 2, 66);
    f.sites[0]
        .checkin("other", "main", b"timeline A", "u", "")
        .unwrap();
    f.settle(&[(0, 1)]);
    f.sites[0].set_retention_window(Some(0)).unwrap();
    let s = f.mkreplica_snapshot(0, "s");
    assert!(f.sites[s].has_snapshot_base().unwrap());
    if earlier_release {
        crate::sync::snapshot::store_base_as_rows(f.sites[s].store()).unwrap();
    }
    let (_, k) = fork_r1(&mut f, &hub(3));
    assert!(
        f.sites[s].entry(&f.id(1), k).unwrap().is_some(),
        "s holds A"
    );
    f.sites[1]
        .repair_fork(&f.id(1), k, KeepTimeline::This)
        .unwrap();
    exchange(&f, &hub(3), 3);
    f.settle(&hub(3));
    f.assert_converged();
    one_everywhere(&f, b"timeline B");
    gave_up_content(&f, s, b"timeline A");
    let other = f.sites[s].cat(&VersionSel::parse("other").unwrap());
    assert_eq!(other.unwrap(), b"timeline A");
}

/// A replica made from a snapshot that holds the forked timeline in its snapshot rows cannot
/// give it up (the history below is not there): it refuses the decision's packet, telling the
/// operator to re-create it, and changes nothing; the other sites converge. (Retention is on
/// at the creator, so some entries stay out of the snapshot and the new replica keeps a
/// snapshot base; r2 never reports, so the snapshot carries the given-up entries as oplog
/// records above its chain bases and the new replica knows which entry it holds there.)
pub fn case_fork_repair_at_a_snapshot_replica_within_its_base<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 67);
    let (_, k) = fork_r1(&mut f, &[(0, 1)]);
    f.sites[0].set_retention_window(Some(0)).unwrap();
    let s = f.mkreplica_snapshot(0, "s");
    assert!(f.sites[s].has_snapshot_base().unwrap());
    let before = f.sites[s].digest().unwrap();
    f.sites[1]
        .repair_fork(&f.id(1), k, KeepTimeline::This)
        .unwrap();
    exchange(&f, &[(0, 1)], 3);
    f.settle(&[(0, 1)]);
    let p = f.export(0, s).expect("r0 sends the decision");
    refused_for_recreation(&f, s, p);
    assert_eq!(f.sites[s].digest().unwrap(), before);
    assert!(f.sites[s].fork_decisions().unwrap().is_empty());
    assert_eq!(f.sites[0].digest().unwrap(), f.sites[1].digest().unwrap());
}

/// A replica made from a snapshot that carried every entry (retention off at the creator,
/// the default) keeps no snapshot base: it holds the whole oplog, as a history-made replica
/// does, so it gives up a forked timeline its snapshot holds as one would, and the family
/// converges on the kept timeline.
pub fn case_fork_repair_at_a_snapshot_replica_with_the_whole_oplog<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 68);
    let (_, k) = fork_r1(&mut f, &[(0, 1)]);
    let s = f.mkreplica_snapshot(0, "s");
    assert!(!f.sites[s].has_snapshot_base().unwrap());
    assert!(f.sites[s].chain_base(&f.id(1)).unwrap().is_none());
    assert!(
        f.sites[s].entry(&f.id(1), k).unwrap().is_some(),
        "s holds A"
    );
    f.sites[1]
        .repair_fork(&f.id(1), k, KeepTimeline::This)
        .unwrap();
    let pairs = [(0, 1), (0, s)];
    exchange(&f, &pairs, 3);
    f.settle(&pairs);
    assert!(f.sites[s].fork_decisions().unwrap().len() == 1);
    assert_eq!(f.sites[s].digest().unwrap(), f.sites[1].digest().unwrap());
    assert_eq!(f.sites[0].digest().unwrap(), f.sites[1].digest().unwrap());
}

/// A fork decision whose number lies below a snapshot replica's chain base: every sibling had
/// acknowledged the given-up timeline past it when the snapshot was made, so the snapshot
/// carries no entry there, and adopting the decision cannot tell which timeline the replica
/// holds. The kept timeline's next entry shows it: the replica refuses it, telling the operator
/// to re-create it (not as a new fork, which a repair would not mend), and changes nothing.
pub fn case_fork_repair_below_a_snapshot_replicas_chain_base<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 68);
    f.settle(&[(0, 1)]);
    let backup = f.backup(1);
    let k = f.sites[1].own_row().unwrap().get(&f.id(1)) + 1;
    for text in [&b"timeline A"[..], b"timeline A again"] {
        f.sites[1].checkin("one", "main", text, "u", "").unwrap();
    }
    f.settle(&[(0, 1)]);
    // Retention on at the creator: the snapshot leaves out what r1 acknowledged.
    f.sites[0].set_retention_window(Some(0)).unwrap();
    let s = f.mkreplica_snapshot(0, "s");
    assert!(
        f.sites[s].entry(&f.id(1), k).unwrap().is_none(),
        "below the chain base"
    );
    f.restore(1, &backup);
    assert!(f.sites[1].restorereplica(&[], true).unwrap().completed);
    for text in [&b"timeline B"[..], b"timeline B again"] {
        f.sites[1].checkin("one", "main", text, "u", "").unwrap();
    }
    f.sites[1]
        .repair_fork(&f.id(1), k, KeepTimeline::This)
        .unwrap();
    exchange(&f, &[(0, 1)], 3);
    f.settle(&[(0, 1)]);
    let before = f.sites[s].digest().unwrap();
    let p = f.export(0, s).expect("r0 sends the kept timeline");
    refused_for_recreation(&f, s, p);
    assert_eq!(f.sites[s].digest().unwrap(), before);
    assert_eq!(f.sites[0].digest().unwrap(), f.sites[1].digest().unwrap());
}
