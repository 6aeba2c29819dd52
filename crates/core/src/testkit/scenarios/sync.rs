//! Synchronisation: convergence, topologies, lost/duplicated/reordered packets, mastership.

use crate::{CoreError, ImportOutcome, Refusal, VersionSel};

use super::*;

fn work<F: StoreFactory>(f: &Family<'_, F>, i: usize, tag: &str) {
    let s = &f.sites[i];
    let br = format!("{}_dev", f.names[i]);
    s.mkbrtype(&br).unwrap();
    s.checkin(
        &format!("{tag}/a.txt"),
        "main",
        tag.as_bytes(),
        "u",
        "first",
    )
    .unwrap();
    s.checkin(&format!("{tag}/a.txt"), &br, b"on branch", "u", "branch")
        .unwrap();
}

/// Hub chain and mesh converge.
pub fn case_hub_chain_and_mesh_converge<F: StoreFactory>(factory: &F) {
    for (topo, edges) in [("hub", hub(4)), ("chain", chain(4)), ("mesh", mesh(4))] {
        let f = Family::new(factory, 4, 7);
        f.settle(&edges);
        for i in 0..4 {
            work(&f, i, &format!("{topo}{i}"));
        }
        f.settle(&edges);
        f.assert_converged();
        assert_no_reuse(&f);
        let s3 = &f.sites[3];
        let sel = VersionSel::parse(&format!("{topo}0/a.txt")).unwrap();
        assert_eq!(s3.cat(&sel).unwrap(), format!("{topo}0").as_bytes());
    }
}

/// Waiting packet names what it needs then applies.
pub fn case_waiting_packet_names_what_it_needs_then_applies<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 1);
    f.settle(&[(0, 1)]);
    f.sites[0].checkin("x", "main", b"1", "u", "").unwrap();
    let p1 = f.export(0, 1).unwrap();
    f.sites[0].checkin("x", "main", b"2", "u", "").unwrap();
    let p2 = f.export(0, 1).unwrap();
    match f.import(1, p2.clone()).unwrap() {
        ImportOutcome::Waiting(needs) => {
            assert_eq!(needs.len(), 1);
            let msg = needs[0].to_string();
            assert!(msg.starts_with("needs r0 up to "), "{msg}");
            assert!(msg.contains(", has "), "{msg}");
        }
        other => panic!("expected waiting, got {other:?}"),
    }
    assert!(applied(&f.import(1, p1.clone()).unwrap()));
    assert!(applied(&f.import(1, p2.clone()).unwrap()));
    assert_eq!(f.import(1, p2).unwrap(), ImportOutcome::AlreadyApplied);
    assert_eq!(f.import(1, p1).unwrap(), ImportOutcome::AlreadyApplied);
    f.settle(&[(0, 1)]);
    f.assert_converged();
}

/// Lost packet is resent without an operator.
pub fn case_lost_packet_is_resent_without_an_operator<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 2);
    f.settle(&[(0, 1)]);
    f.sites[0].checkin("x", "main", b"1", "u", "").unwrap();
    let _lost = f.export(0, 1).unwrap();
    // The last packet is lost and nothing new happens: no report can show the gap, so the
    // next exports resend it once the resend interval has passed since it was sent.
    f.settle(&[(0, 1)]);
    assert_ne!(f.sites[0].digest().unwrap(), f.sites[1].digest().unwrap());
    f.env.advance(crate::keys::DEFAULT_RESEND_MS);
    f.settle(&[(0, 1)]);
    f.assert_converged();
    // A lost packet followed by a later one: the later one waits, the report shows the gap.
    f.sites[0].checkin("x", "main", b"2", "u", "").unwrap();
    let _lost = f.export(0, 1).unwrap();
    f.sites[0].checkin("x", "main", b"3", "u", "").unwrap();
    let p = f.export(0, 1).unwrap();
    assert!(matches!(f.import(1, p).unwrap(), ImportOutcome::Waiting(_)));
    f.settle(&[(0, 1)]);
    f.assert_converged();
    assert_eq!(
        f.sites[1].cat(&VersionSel::parse("x").unwrap()).unwrap(),
        b"3"
    );
}

/// `n` bytes that zstd cannot shrink, different for each `seed`.
pub(super) fn incompressible(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// 24 exports of a hub to a spoke between two replies, a new 16 KiB version before every
/// third: every export with nothing new sends nothing (the packets may only be on their
/// way), so the bytes shipped stay within a small factor of the new versions' bytes
/// (before, each such export re-shipped every unacknowledged entry: ten times as much
/// here). The spoke's reply acknowledges them all, and then nothing more is sent.
pub fn case_exports_between_two_replies_send_no_resend_storm<F: StoreFactory>(factory: &F) {
    const VERSION: usize = 16 << 10;
    let f = Family::new(factory, 2, 9);
    f.settle(&[(0, 1)]);
    let (mut shipped, mut new) = (0usize, 0usize);
    for k in 0..24u64 {
        if k % 3 == 0 {
            let body = incompressible(k, VERSION);
            f.sites[0].checkin("big", "main", &body, "u", "").unwrap();
            new += VERSION;
        }
        let Some(p) = f.export(0, 1) else {
            assert!(k % 3 != 0, "export {k} carried no new version");
            continue;
        };
        shipped += p.iter().map(Vec::len).sum::<usize>();
        assert!(applied(&f.import(1, p).unwrap()));
    }
    assert!(
        shipped <= new + new / 4,
        "{shipped} bytes shipped for {new} bytes of new versions"
    );
    assert!(f.sync(1, 0).is_some(), "the spoke's reply");
    assert_eq!(f.sites[0].unacknowledged(&f.id(1)).unwrap(), 0);
    assert!(f.export(0, 1).is_none(), "an acknowledged link still sends");
    f.assert_converged();
}

/// A reply that shows a gap (a later packet seen, an earlier one lost) makes the next export
/// resend at once, without waiting for the resend interval.
pub fn case_a_reported_gap_is_resent_at_once<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 10);
    f.settle(&[(0, 1)]);
    for k in 0..3u64 {
        f.sites[0]
            .checkin("x", "main", format!("{k}").as_bytes(), "u", "")
            .unwrap();
        let p = f.export(0, 1).unwrap();
        if k != 1 {
            let _ = f.import(1, p).unwrap();
        }
    }
    // The reply reports packet 3 seen but packet 2 not applied: the next export resends.
    f.sync(1, 0).unwrap();
    let resend = f.export(0, 1).expect("the gap is resent at once");
    assert!(applied(&f.import(1, resend).unwrap()));
    f.settle(&[(0, 1)]);
    f.assert_converged();
}

/// Settled exchange sends nothing.
pub fn case_settled_exchange_sends_nothing<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 3);
    f.settle(&hub(3));
    for (a, b) in hub(3) {
        assert!(f.export(a, b).is_none(), "{a}->{b} still sends");
        assert!(f.export(b, a).is_none(), "{b}->{a} still sends");
    }
}

/// Duplicated and reordered packets are harmless.
pub fn case_duplicated_and_reordered_packets_are_harmless<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 4);
    f.settle(&hub(3));
    let mut packets = Vec::new();
    for k in 0..5 {
        f.sites[1]
            .checkin("y", "main", format!("{k}").as_bytes(), "u", "")
            .unwrap();
        packets.push(f.export(1, 0).unwrap());
    }
    for p in packets.iter().rev().chain(packets.iter()) {
        let _ = f.import(0, p.clone()).unwrap();
    }
    f.settle(&hub(3));
    f.assert_converged();
    assert_no_reuse(&f);
}

/// Local change on an object mastered elsewhere is refused.
pub fn case_local_change_on_an_object_mastered_elsewhere_is_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 5);
    f.settle(&[(0, 1)]);
    f.sites[0]
        .checkin("owned/by/r0", "main", b"a", "u", "")
        .unwrap();
    f.settle(&[(0, 1)]);
    let err = f.sites[1]
        .checkin("owned/by/r0", "main", b"b", "u", "")
        .unwrap_err();
    match err {
        CoreError::NotMaster { master, .. } => assert_eq!(master, "r0"),
        other => panic!("expected NotMaster, got {other}"),
    }
}

/// Mastership moves back and forth by request and grant.
pub fn case_mastership_moves_back_and_forth_by_request_and_grant<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 6);
    f.settle(&[(0, 1)]);
    f.sites[0].mkbrtype("shared").unwrap();
    f.sites[0].checkin("m", "shared", b"r0", "u", "").unwrap();
    f.settle(&[(0, 1)]);
    assert!(f.sites[1].checkin("m", "shared", b"r1", "u", "").is_err());
    f.sites[1].reqmaster("branch:m@@shared").unwrap();
    f.settle(&[(0, 1)]);
    f.sites[1].checkin("m", "shared", b"r1", "u", "").unwrap();
    f.sites[1].chmaster("branch:m@@shared", "r0").unwrap();
    f.settle(&[(0, 1)]);
    f.sites[0]
        .checkin("m", "shared", b"r0 again", "u", "")
        .unwrap();
    f.settle(&[(0, 1)]);
    f.assert_converged();
    let sel = VersionSel::parse("m@@shared/3").unwrap();
    assert_eq!(f.sites[1].cat(&sel).unwrap(), b"r0 again");
}

/// Concurrent same name types resolve the same everywhere.
pub fn case_concurrent_same_name_types_resolve_the_same_everywhere<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 8);
    f.settle(&mesh(3));
    f.sites[1].mkbrtype("dev").unwrap();
    f.sites[2].mkbrtype("dev").unwrap();
    // Deliver in opposite orders.
    f.sync(1, 0);
    f.sync(2, 0);
    f.sync(2, 1);
    f.sync(1, 2);
    f.settle(&mesh(3));
    f.assert_converged();
    let winners: Vec<_> = f
        .sites
        .iter()
        .map(|s| {
            s.view()
                .resolve(crate::vob::NameKind::BrType, "dev")
                .unwrap()
        })
        .collect();
    assert!(winners.iter().all(|w| *w == winners[0]));
    let loser_origin = if winners[0].origin == f.id(1) {
        "r2"
    } else {
        "r1"
    };
    for s in &f.sites {
        let q = s
            .view()
            .resolve(crate::vob::NameKind::BrType, &format!("dev@{loser_origin}"))
            .unwrap();
        assert_ne!(q, winners[0]);
    }
}

/// Foreign and misaddressed packets are refused.
pub fn case_foreign_and_misaddressed_packets_are_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 9);
    let g = Family::new(factory, 2, 10);
    f.settle(&hub(3));
    f.sites[0].checkin("z", "main", b"1", "u", "").unwrap();
    let to1 = f.export(0, 1).unwrap();
    let err = f.import(2, to1.clone()).unwrap_err();
    assert!(
        matches!(err, CoreError::Refused(Refusal::NotAddressed { .. })),
        "{err}"
    );
    let err = g.import(1, to1).unwrap_err();
    assert!(
        matches!(err, CoreError::Refused(Refusal::WrongFamily { .. })),
        "{err}"
    );
    let before = f.sites[2].digest().unwrap();
    assert_eq!(before, f.sites[2].digest().unwrap());
}

/// Corrupted packet is refused and changes nothing.
pub fn case_corrupted_packet_is_refused_and_changes_nothing<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 11);
    f.settle(&[(0, 1)]);
    f.sites[0]
        .checkin("c", "main", &[7u8; 5000], "u", "")
        .unwrap();
    let p = f.export(0, 1).unwrap();
    let before = f.sites[1].digest().unwrap();
    let mut bad = p.clone();
    let n = bad[0].len();
    bad[0][n / 2] ^= 0x40;
    assert!(f.import(1, bad).is_err());
    let mut cut = p.clone();
    cut[0].truncate(n - 3);
    assert!(f.import(1, cut).is_err());
    assert_eq!(before, f.sites[1].digest().unwrap());
    assert!(applied(&f.import(1, p).unwrap()));
}

/// Replica created from a non first replica joins.
pub fn case_replica_created_from_a_non_first_replica_joins<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 2, 12);
    f.settle(&[(0, 1)]);
    f.sites[1].checkin("from1", "main", b"x", "u", "").unwrap();
    let c = f.mkreplica(1, "c");
    f.sites[c].checkin("fromc", "main", b"y", "u", "").unwrap();
    f.settle(&[(0, 1), (1, c)]);
    f.assert_converged();
    assert_no_reuse(&f);
}

/// Import tree versions only what changed: content equal to the latest version on the branch
/// is skipped, content equal to an older one (a revert) and content at a path whose element was
/// removed are checked in, and an unchanged file on a branch another replica masters is still
/// refused.
pub fn case_import_tree_versions_only_what_changed<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 13);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src/sub")).unwrap();
    std::fs::write(dir.path().join("src/a.c"), "a").unwrap();
    std::fs::write(dir.path().join("src/sub/b.c"), "b").unwrap();
    let r = f.sites[0]
        .import_tree(dir.path(), "main", "u", "import", |_| {})
        .unwrap();
    assert_eq!((r.new_elements, r.new_versions, r.unchanged), (2, 2, 0));
    std::fs::write(dir.path().join("src/a.c"), "a2").unwrap();
    let r = f.sites[0]
        .import_tree(dir.path(), "main", "u", "import", |_| {})
        .unwrap();
    assert_eq!((r.new_elements, r.new_versions, r.unchanged), (0, 1, 1));
    assert_eq!(
        f.sites[0]
            .cat(&VersionSel::parse("src/a.c@@main/2").unwrap())
            .unwrap(),
        b"a2"
    );
    std::fs::write(dir.path().join("src/a.c"), "a").unwrap();
    f.sites[0].rmname("src/sub/b.c").unwrap();
    let r = f.sites[0]
        .import_tree(dir.path(), "main", "u", "import", |_| {})
        .unwrap();
    assert_eq!((r.new_elements, r.new_versions, r.unchanged), (1, 2, 0));
    let a3 = VersionSel::parse("src/a.c@@main/3").unwrap();
    assert_eq!(f.sites[0].cat(&a3).unwrap(), b"a");

    f.sites[0].chmaster("branch:src/a.c@@main", "r1").unwrap();
    let before = f.sites[0].digest().unwrap();
    let refused = f.sites[0].import_tree(dir.path(), "main", "u", "import", |_| {});
    assert!(
        matches!(refused, Err(CoreError::NotMaster { .. })),
        "{refused:?}"
    );
    assert_eq!(f.sites[0].digest().unwrap(), before);
}
