//! Estimates after a restoration (docs/protocol.md §6 "Estimates after a restoration"): a
//! restored spoke's estimates of the spokes it never hears from rise on their signed reports,
//! relayed by the hub, and never on the hub's own word.

use msite_packet::wire;

use crate::ImportOutcome;

use super::sync::incompressible;
use super::*;

/// Bytes of each check-in of the history.
const VERSION: usize = 4 << 10;

/// A hub family r0 (hub) – r1, r2, r3 with `VERSION`-byte check-ins at every site; r1 backed
/// up at the start, restored after the history was made, and recovered through the hub until
/// the family settles. Returns the family and the bytes of the history made after the backup.
fn restored_spoke<F: StoreFactory>(factory: &F) -> (Family<'_, F>, usize) {
    let mut f = Family::new(factory, 4, 41);
    f.settle(&hub(4));
    let backup = f.backup(1);
    let mut history = 0;
    for k in 0..8u64 {
        for s in 0..4 {
            let path = format!("f{s}");
            let body = incompressible(k * 4 + s as u64 + 1, VERSION);
            f.sites[s].checkin(&path, "main", &body, "u", "").unwrap();
            history += VERSION;
        }
        f.settle(&hub(4));
    }
    f.restore(1, &backup);
    f.sites[1].restorereplica(&[], false).unwrap();
    for _ in 0..10 {
        if f.sites[1].status().unwrap().recovering.is_none() {
            break;
        }
        f.sync(1, 0);
        for s in [2, 3] {
            f.sync(0, s);
            f.sync(s, 0);
        }
        f.sync(0, 1);
    }
    assert!(
        f.sites[1].status().unwrap().recovering.is_none(),
        "the restoration did not complete"
    );
    f.settle(&hub(4));
    f.assert_converged();
    (f, history)
}

/// Four replicas on a hub; spoke r1 is restored from an early backup and recovers through the
/// hub. Its first direct packet to spoke r2, which it never heard from, carries its one new
/// version, not the history since the backup: r2's signed report, relayed by the hub while r1
/// restored, raised r1's estimate of r2. The packet applies at r2 at once (the estimate was
/// not too high) and the family converges.
pub fn case_direct_export_after_a_restoration_sends_only_what_is_new<F: StoreFactory>(factory: &F) {
    let (f, history) = restored_spoke(factory);
    f.sites[1]
        .checkin("new", "main", &incompressible(99, VERSION), "u", "")
        .unwrap();
    let p = f.export(1, 2).expect("the new version goes");
    let bytes: usize = p.iter().map(Vec::len).sum();
    assert!(
        bytes < 2 * VERSION,
        "{bytes} bytes for one new version of {VERSION} bytes ({history} bytes of history)"
    );
    match f.import(2, p).unwrap() {
        ImportOutcome::Applied {
            applied, skipped, ..
        } => {
            assert_eq!(applied, 2, "the new element and its version");
            // What r2 got after its last report the hub relayed (r1's restore complete, the
            // hub's last acknowledgements) may go again: an estimate is a lower bound.
            assert!(skipped <= 4, "{skipped} entries r2 held went again");
        }
        o => panic!("the direct packet did not apply at r2: {o:?}"),
    }
    f.settle(&[(0, 1), (0, 2), (0, 3), (1, 2)]);
    f.assert_converged();
    assert_no_reuse(&f);
}

/// A report the hub makes up (or alters) for r2 does not verify with r2's key: the restored
/// r1 ignores it and keeps its estimate of r2; r2's genuine report, which the hub relayed,
/// raises it. Nothing is refused either way.
pub fn case_a_report_the_relay_made_up_raises_no_estimate<F: StoreFactory>(factory: &F) {
    let (f, _) = restored_spoke(factory);
    let r2 = f.id(2);
    let genuine = f.sites[1]
        .reports_kept_for_test()
        .unwrap()
        .into_iter()
        .find(|r| r.replica.0 == r2.0)
        .expect("r1 keeps the report of r2 that the hub relayed");
    // The operator lowers r1's estimate of r2 to nothing (`msite chepoch`).
    let zeros: Vec<_> = genuine
        .row
        .iter()
        .map(|c| (ReplicaId(c.origin.0), 0))
        .collect();
    f.sites[1].chepoch(&r2, &zeros).unwrap();
    let low = f.sites[1].estimate(&r2).unwrap();
    let mut altered = genuine.clone();
    altered.made_ms += 1;
    let mut invented = genuine.clone();
    invented.signature = wire::NO_SIGNATURE;
    for forged in [altered, invented] {
        f.sites[1]
            .take_reports_for_test(&f.id(0), std::slice::from_ref(&forged))
            .unwrap();
        assert_eq!(
            f.sites[1].estimate(&r2).unwrap(),
            low,
            "a forged report counted"
        );
    }
    f.sites[1]
        .take_reports_for_test(&f.id(0), std::slice::from_ref(&genuine))
        .unwrap();
    let raised = f.sites[1].estimate(&r2).unwrap();
    for c in &genuine.row {
        assert_eq!(
            raised.get(&ReplicaId(c.origin.0)),
            c.number,
            "the genuine report counts"
        );
    }
}
