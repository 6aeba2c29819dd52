//! Snapshot creation (docs/protocol.md §7): a replica made from the creator's object base is
//! indistinguishable from one made from the whole history — digest, what it knows of its
//! siblings, syncing both ways, mastership, restore — and a damaged snapshot never becomes a
//! replica.

use crate::{CoreError, ImportOutcome, Refusal};

use super::*;

/// Three sites with history: check-ins everywhere (two versions of one file, so content is
/// stored as a delta), a label, a branch type mastered at r1, a restoration of r2 completed
/// (an incarnation and a restore complete), a key rotation at r1; settled over the mesh.
fn storied_family<F: StoreFactory>(factory: &F, seed: u64) -> Family<'_, F> {
    let mut f = Family::new(factory, 3, seed);
    for round in 0..3u8 {
        for i in 0..3 {
            let body = [vec![round; 3000], vec![i as u8; 50]].concat();
            f.sites[i]
                .checkin(&format!("f{i}"), "main", &body, "u", "")
                .unwrap();
        }
    }
    f.sites[1].mkbrtype("dev").unwrap();
    f.sites[0].mklbtype("REL1").unwrap();
    f.settle(&mesh(3));
    let v2 = VersionSel::parse("f0@@main/2").unwrap();
    f.sites[0].mklabel("REL1", &v2).unwrap();
    f.sites[1].rekey().unwrap();
    let backup = f.backup(2);
    f.sites[2].checkin("late", "main", b"x", "u", "").unwrap();
    f.settle(&mesh(3));
    f.restore(2, &backup);
    f.sites[2].restorereplica(&[], false).unwrap();
    f.settle(&mesh(3));
    assert!(f.sites[2].status().unwrap().recovering.is_none());
    f.assert_converged();
    f
}

/// What a replica knows of each site of the family beyond the object base.
fn sibling_facts<S: Store>(r: &Replica<S>, ids: &[ReplicaId]) -> Vec<(u64, u64, Option<[u8; 32]>)> {
    ids.iter()
        .map(|id| {
            (
                r.incarnation_of(id).unwrap(),
                r.completed_incarnation(id).unwrap(),
                r.public_key(id).unwrap(),
            )
        })
        .collect()
}

/// A snapshot-made replica holds the creator's digest and the same facts about its siblings
/// as a history-made one; its oplog starts at the heads (its chains verify from there), and
/// both then converge with the family through ordinary packets, in both directions.
pub fn case_snapshot_replica_is_indistinguishable_from_a_history_one<F: StoreFactory>(factory: &F) {
    let mut f = storied_family(factory, 400);
    let s = f.mkreplica_snapshot(0, "snap");
    assert_eq!(f.sites[s].digest().unwrap(), f.sites[0].digest().unwrap());
    assert_eq!(f.sites[s].own_row().unwrap(), f.sites[0].own_row().unwrap());
    // Without a restore window the creator keeps every entry for a restored sibling, and so
    // does the snapshot: its oplog is the creator's.
    for o in 0..3 {
        let held = |r: usize| f.sites[r].entries_of(&f.id(o)).unwrap();
        assert_eq!(held(s), held(0));
    }
    // With retention on (a window of 0) the oplog of the next holds only what some sibling of
    // the creator has not acknowledged: of r0, the entries that created the two snapshot
    // replicas and gave them their keys; of r1, nothing.
    f.sites[0].set_retention_window(Some(0)).unwrap();
    let s = f.mkreplica_snapshot(0, "snap0");
    assert!(f.sites[s].entries_of(&f.id(1)).unwrap().is_empty());
    let r0_held: Vec<&str> = f.sites[s]
        .entries_of(&f.id(0))
        .unwrap()
        .iter()
        .map(|e| e.op.name())
        .collect();
    assert_eq!(r0_held, ["mkreplica", "vouch", "mkreplica", "vouch"]);
    let ids: Vec<ReplicaId> = (0..3).map(|i| f.id(i)).collect();
    let h = f.mkreplica(0, "hist");
    assert_eq!(
        sibling_facts(&f.sites[s], &ids),
        sibling_facts(&f.sites[h], &ids)
    );
    let sel = VersionSel::parse("f1@@main/3").unwrap();
    assert_eq!(f.sites[s].cat(&sel).unwrap(), f.sites[h].cat(&sel).unwrap());
    f.sites[s]
        .checkin("from-snap", "main", b"s", "u", "")
        .unwrap();
    f.sites[h]
        .checkin("from-hist", "main", b"h", "u", "")
        .unwrap();
    f.sites[1]
        .checkin("f1", "main", b"r1 again", "u", "")
        .unwrap();
    f.settle(&mesh(6));
    f.assert_converged();
    assert_no_reuse(&f);
    assert!(f.sites[s].verify_chains().unwrap() >= 3);
    assert_eq!(
        f.sites[h]
            .cat(&VersionSel::parse("from-snap@@main/1").unwrap())
            .unwrap(),
        b"s"
    );
}

/// Replicas made one after another from r0, before the earlier ones report: each later
/// snapshot counts the earlier new replicas as holding the row their creation carried, so it
/// carries only the entries made since (of r1, which reported, nothing; of r0, the creation
/// entries), not the oplog; the family then converges with all of them.
pub fn case_replicas_made_one_after_another_carry_only_recent_entries<F: StoreFactory>(
    factory: &F,
) {
    let mut f = storied_family(factory, 402);
    // Retention on: a snapshot leaves out what every other sibling acknowledged.
    f.sites[0].set_retention_window(Some(0)).unwrap();
    let first = f.mkreplica_snapshot(0, "snap1");
    let hist = f.mkreplica(0, "hist");
    let second = f.mkreplica_snapshot(0, "snap2");
    assert_eq!(
        f.sites[second].digest().unwrap(),
        f.sites[0].digest().unwrap()
    );
    assert!(f.sites[second].entries_of(&f.id(1)).unwrap().is_empty());
    let r0_held = f.sites[second].entries_of(&f.id(0)).unwrap();
    assert!(
        r0_held.iter().all(|e| matches!(
            e.op,
            crate::Op::CreateReplica { .. } | crate::Op::VouchKey { .. }
        )),
        "the second snapshot carried older entries of r0: {:?}",
        r0_held.iter().map(|e| e.op.name()).collect::<Vec<_>>()
    );
    f.sites[first].checkin("s1", "main", b"1", "u", "").unwrap();
    f.sites[hist].checkin("h", "main", b"h", "u", "").unwrap();
    f.sites[second]
        .checkin("s2", "main", b"2", "u", "")
        .unwrap();
    f.settle(&mesh(6));
    f.assert_converged();
    assert_no_reuse(&f);
}

/// Mastership moves to a snapshot-made replica and back, by request and grant.
pub fn case_mastership_moves_to_and_from_a_snapshot_replica<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 1, 401);
    f.sites[0].mkbrtype("shared").unwrap();
    f.sites[0].checkin("m", "shared", b"r0", "u", "").unwrap();
    let s = f.mkreplica_snapshot(0, "snap");
    assert!(f.sites[s].checkin("m", "shared", b"no", "u", "").is_err());
    f.sites[s].reqmaster("branch:m@@shared").unwrap();
    f.settle(&[(0, s)]);
    f.sites[s].checkin("m", "shared", b"snap", "u", "").unwrap();
    f.sites[s].chmaster("branch:m@@shared", "r0").unwrap();
    f.settle(&[(0, s)]);
    f.sites[0]
        .checkin("m", "shared", b"r0 again", "u", "")
        .unwrap();
    f.settle(&[(0, s)]);
    f.assert_converged();
    let sel = VersionSel::parse("m@@shared/3").unwrap();
    assert_eq!(f.sites[s].cat(&sel).unwrap(), b"r0 again");
}

/// A snapshot-made replica restored from its own backup recovers what it sent out since, from
/// its siblings, and the family converges.
pub fn case_snapshot_replica_restores_from_its_backup<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 402);
    f.sites[0].checkin("a", "main", b"1", "u", "").unwrap();
    let s = f.mkreplica_snapshot(0, "snap");
    f.settle(&mesh(3));
    let backup = f.backup(s);
    f.sites[s].checkin("b", "main", b"2", "u", "").unwrap();
    f.settle(&mesh(3));
    let lost = f.sites[s].own_row().unwrap().get(&f.id(s));
    f.restore(s, &backup);
    f.sites[s].restorereplica(&[], false).unwrap();
    f.settle(&mesh(3));
    assert!(f.sites[s].status().unwrap().recovering.is_none());
    assert!(f.sites[s].own_row().unwrap().get(&f.id(s)) > lost);
    f.sites[s].checkin("c", "main", b"3", "u", "").unwrap();
    f.settle(&mesh(3));
    f.assert_converged();
    assert_no_reuse(&f);
}

/// A sibling restored from a copy older than the snapshot needs entries from below the
/// snapshot replica's heads: the snapshot replica's packet is refused, naming them, never
/// applied with a gap; the creator, which keeps them, serves it, and then the snapshot
/// replica's packets apply.
pub fn case_sibling_older_than_the_snapshot_is_served_or_refused<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 403);
    f.settle(&mesh(2));
    let old = f.backup(1);
    f.sites[0].checkin("a", "main", b"1", "u", "").unwrap();
    f.sites[1].checkin("b", "main", b"2", "u", "").unwrap();
    f.settle(&mesh(2));
    // Retention on at the creator, so the snapshot leaves out what r1 acknowledged.
    f.sites[0].set_retention_window(Some(0)).unwrap();
    let s = f.mkreplica_snapshot(0, "snap");
    f.restore(1, &old);
    f.sites[1].restorereplica(&[], false).unwrap();
    let digest = f.sites[1].digest().unwrap();
    // The snapshot replica learns the restore request, then answers it.
    f.sync(1, s);
    if let Some(parts) = f.export(s, 1) {
        match f.import(1, parts) {
            Err(CoreError::Refused(r @ Refusal::BehindRetention { .. })) => {
                let msg = r.to_string();
                assert!(msg.contains("needs entries"), "{msg}");
                assert_eq!(f.sites[1].digest().unwrap(), digest, "a gap was applied");
            }
            Ok(ImportOutcome::Waiting { .. }) => {}
            other => panic!("expected a refusal or a wait, got {other:?}"),
        }
    }
    f.settle(&[(0, 1), (0, s)]);
    f.settle(&mesh(3));
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    f.assert_converged();
}

/// A creator with no other sibling makes a replica from a snapshot, then loses its disk and is
/// restored from a backup older than some of its entries: the snapshot replica is the only
/// site that can give them back, so without a restore window (retention off) the snapshot
/// carried them as oplog records, and the restoration gets every one of them back and
/// completes. (The snapshot's chain base used to be what every other sibling had acknowledged,
/// here everything: the new replica held those entries in its object base only, and the
/// restoration could not complete.)
pub fn case_creator_restored_after_a_snapshot_gets_its_entries_back<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 1, 405);
    f.sites[0].checkin("a", "main", b"1", "u", "").unwrap();
    let backup = f.backup(0);
    f.sites[0].checkin("b", "main", b"2", "u", "").unwrap();
    f.sites[0].mkbrtype("dev").unwrap();
    let s = f.mkreplica_snapshot(0, "snap");
    let held = f.sites[0].own_row().unwrap().get(&f.id(0));
    assert!(
        f.sites[s].chain_base(&f.id(0)).unwrap().is_none(),
        "the whole oplog travels without a window"
    );
    f.restore(0, &backup);
    // The restored store predates the new replica: the operator names it.
    let snap = f.id(s);
    f.sites[0].restorereplica_also(&[snap], false).unwrap();
    f.settle(&[(0, s)]);
    assert!(f.sites[0].status().unwrap().recovering.is_none());
    assert!(f.sites[0].own_row().unwrap().get(&f.id(0)) > held);
    let b = crate::VersionSel::parse("b").unwrap();
    assert_eq!(f.sites[0].cat(&b).unwrap(), b"2");
    f.sites[0].checkin("c", "main", b"3", "u", "").unwrap();
    f.settle(&[(0, s)]);
    f.assert_converged();
    assert_no_reuse(&f);
}

/// A scrubbed replica cannot make a history creation packet, but makes a snapshot one; the new
/// replica converges with the family.
pub fn case_snapshot_after_scrub<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 404);
    for n in 0..4u8 {
        f.sites[n as usize % 2]
            .checkin("f", "main", &[n], "u", "")
            .ok();
        f.settle(&mesh(2));
    }
    f.sites[0].set_retention_window(Some(0)).unwrap();
    assert!(f.sites[0].scrub(false).unwrap().entries_dropped > 0);
    assert!(f.sites[0].plan_mkreplica("hist", &[7; 32]).is_err());
    let s = f.mkreplica_snapshot(0, "snap");
    assert_eq!(f.sites[s].digest().unwrap(), f.sites[0].digest().unwrap());
    f.sites[s].checkin("g", "main", b"s", "u", "").unwrap();
    f.settle(&mesh(3));
    f.assert_converged();
}

/// A snapshot packet cut short, or with a row changed, is refused; the new store is left
/// marked, and opening it says it is an interrupted creation and what to do. A whole copy of
/// the same packet then makes the replica in a fresh store.
pub fn case_damaged_snapshot_is_refused_and_the_store_says_so<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 1, 405);
    for i in 0..20u8 {
        f.sites[0]
            .checkin(&format!("f{i}"), "main", &[i; 100], "u", "")
            .unwrap();
    }
    let parts = f.snapshot_packet(0, "snap");
    let cut = rewrite(&parts, |rows| {
        rows.pop();
    });
    let (err, dir) = f.create_from("snap", cut).unwrap_err();
    assert!(err.to_string().contains("snapshot-end"), "{err}");
    match f.open_replica(&dir) {
        Err(e) => assert!(
            e.to_string().contains("interrupted replica creation"),
            "{e}"
        ),
        Ok(_) => panic!("a store from a cut snapshot opened as a replica"),
    }
    let changed = rewrite(&parts, |rows| {
        if let Some(msite_packet::Record::Row { value, .. }) = rows.get_mut(3) {
            value.push(0);
        }
    });
    let (err, _) = f.create_from("snap", changed).unwrap_err();
    assert!(err.to_string().contains("differ"), "{err}");
    let s = f.create_from("snap", parts).unwrap();
    assert_eq!(f.sites[s].digest().unwrap(), f.sites[0].digest().unwrap());
}

/// The packet of `parts` with its records changed by `edit`, written again as a valid packet
/// (same header and id): damage the packet layer cannot see, only the snapshot's own checks.
fn rewrite(parts: &[Vec<u8>], edit: impl FnOnce(&mut Vec<msite_packet::Record>)) -> Vec<Vec<u8>> {
    let (info, header, mut recs) =
        msite_packet::decode_parts(parts.iter().map(|p| p.as_slice())).unwrap();
    edit(&mut recs);
    let mut opts = msite_packet::WriteOptions::new(info.packet_id);
    opts.minor = info.version.minor;
    let mut w = msite_packet::MemPacketWriter::new(info.kind, &header, opts).unwrap();
    for r in &recs {
        w.push_record(r).unwrap();
    }
    w.finish().unwrap().0
}
