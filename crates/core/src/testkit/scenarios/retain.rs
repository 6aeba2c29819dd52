//! Oplog retention (docs/protocol.md §9): what `msite scrub` drops, that the object base and
//! the hash chains survive it, and the refusal a sibling behind retention gets on both sides.

use crate::retain::{Kept, ScrubReport, SiblingRetention};
use crate::{CoreError, ImportOutcome, Refusal};

use super::*;

/// A few check-ins at every site, settled over the mesh.
fn busy_family<F: StoreFactory>(factory: &F, seed: u64) -> Family<'_, F> {
    let f = Family::new(factory, 3, seed);
    for round in 0..3u8 {
        for i in 0..3 {
            let path = format!("f{i}");
            f.sites[i]
                .checkin(&path, "main", &[round, i as u8], "u", "")
                .unwrap();
        }
    }
    f.settle(&mesh(3));
    f.assert_converged();
    f
}

fn line<'r>(report: &'r ScrubReport, name: &str) -> &'r crate::retain::OriginScrub {
    report
        .origins
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("the scrub report has no line for origin {name}"))
}

/// The refusal's message, from an import error.
fn behind_retention(res: Result<ImportOutcome, CoreError>) -> String {
    match res {
        Err(CoreError::Refused(r @ Refusal::BehindRetention { .. })) => r.to_string(),
        other => panic!("expected a refusal as behind retention, got {other:?}"),
    }
}

/// By default nothing is dropped; with a window of 0 a scrub drops what every sibling holds,
/// the digest does not change, and later entries of every origin still apply and their
/// chains verify from the retained base.
pub fn case_scrub_keeps_the_digest_and_later_entries_chain_on<F: StoreFactory>(factory: &F) {
    let f = busy_family(factory, 300);
    let off = f.sites[0].scrub(false).unwrap();
    assert_eq!(off.entries_dropped, 0);
    assert!(off.origins.iter().all(|l| l.why == Kept::NoWindow));
    let before = f.digests();
    f.sites[0].set_retention_window(Some(0)).unwrap();
    let dry = f.sites[0].scrub(true).unwrap();
    assert!(dry.entries_dropped > 0);
    assert_eq!(f.sites[0].entries_of(&f.id(1)).unwrap()[0].number, 1);
    let done = f.sites[0].scrub(false).unwrap();
    assert_eq!(done.entries_dropped, dry.entries_dropped);
    for i in 0..3 {
        let l = line(&done, &f.names[i]);
        assert_eq!((l.dropped, l.why.clone()), (l.held, Kept::Nothing), "{l}");
        assert!(f.sites[0].entries_of(&f.id(i)).unwrap().is_empty());
    }
    assert_eq!(f.digests(), before, "scrubbing changed a digest");
    assert_eq!(f.sites[0].scrub(false).unwrap().entries_dropped, 0);
    let dropped_row = f.sites[0].own_row().unwrap();
    for i in 0..3 {
        f.sites[i]
            .checkin("later", "main", &[9, i as u8], "u", "")
            .unwrap();
    }
    f.settle(&mesh(3));
    f.assert_converged();
    assert_no_reuse(&f);
    let later: u64 = (f.sites[0].own_row().unwrap().0.values().sum::<u64>())
        - dropped_row.0.values().sum::<u64>();
    assert!(later >= 3);
    assert_eq!(
        f.sites[0].verify_chains().unwrap(),
        later,
        "r0 holds the later entries only"
    );
    assert!(f.sites[1].verify_chains().unwrap() > later);
}

/// A sibling that has not yet reported the newest entries keeps them, and the report names
/// it; with a window, a scrub drops only what every sibling had acknowledged a window ago.
pub fn case_scrub_keeps_what_a_sibling_or_the_window_still_needs<F: StoreFactory>(factory: &F) {
    let f = busy_family(factory, 301);
    f.sites[0].checkin("new", "main", b"n", "u", "").unwrap();
    f.sync(0, 1);
    f.sync(1, 0);
    let held = f.sites[0].own_row().unwrap().get(&f.id(0));
    f.sites[0].set_retention_window(Some(0)).unwrap();
    let r = f.sites[0].scrub(false).unwrap();
    let l = line(&r, "r0");
    assert!(l.dropped < held, "{l}");
    let why = Kept::Sibling {
        name: "r2".into(),
        acknowledged: l.dropped,
    };
    assert_eq!(l.why, why, "{l}");
    assert!(l
        .to_string()
        .contains("sibling r2 has only acknowledged up to"));
    f.settle(&mesh(3));
    let l = line(&f.sites[0].scrub(false).unwrap(), "r0").clone();
    assert_eq!((l.dropped, l.why), (held, Kept::Nothing));

    let g = busy_family(factory, 302);
    g.sites[1].set_retention_window(Some(10_000)).unwrap();
    let first = g.sites[1].scrub(false).unwrap();
    assert_eq!(first.entries_dropped, 0);
    assert!(first.origins.iter().all(|l| l.why == Kept::Window(None)));
    let then = g.sites[1].own_row().unwrap();
    g.sites[2].checkin("f2", "main", b"more", "u", "").unwrap();
    g.settle(&mesh(3));
    g.env.advance(10_001);
    let second = g.sites[1].scrub(false).unwrap();
    let l = line(&second, "r2");
    assert_eq!(l.dropped, then.get(&g.id(2)), "{l}");
    assert_eq!(l.why, Kept::Window(Some(then.get(&g.id(2)))), "{l}");
    assert!(l.dropped < l.held);
}

/// A site restored from a backup taken within the window recovers: what its siblings
/// dropped it had already acknowledged when the backup was taken.
pub fn case_restore_from_a_backup_within_the_window_recovers<F: StoreFactory>(factory: &F) {
    let mut f = busy_family(factory, 303);
    for i in [0, 2] {
        f.sites[i].set_retention_window(Some(10_000)).unwrap();
        f.sites[i].scrub(false).unwrap();
    }
    let backup = f.backup(1);
    f.sites[1].checkin("f1", "main", b"after", "u", "").unwrap();
    f.sites[0].checkin("f0", "main", b"after", "u", "").unwrap();
    f.settle(&mesh(3));
    f.env.advance(10_001);
    for i in [0, 2] {
        assert!(f.sites[i].scrub(false).unwrap().entries_dropped > 0);
    }
    f.restore(1, &backup);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.settle(&mesh(3));
    assert!(f.sites[1].status().unwrap().recovering.is_none());
    f.sites[1].checkin("f1", "main", b"again", "u", "").unwrap();
    f.settle(&mesh(3));
    f.assert_converged();
    assert_no_reuse(&f);
}

/// A site restored from a backup older than what its siblings kept is told, on both sides,
/// which entries the family no longer keeps, and never applies a packet with a gap.
pub fn case_restore_from_a_backup_older_than_the_window_is_refused_on_both_sides<
    F: StoreFactory,
>(
    factory: &F,
) {
    let mut f = busy_family(factory, 304);
    let backup = f.backup(1);
    let backup_row = f.sites[1].own_row().unwrap();
    f.sites[0].checkin("f0", "main", b"after", "u", "").unwrap();
    f.settle(&mesh(3));
    let standing =
        |f: &Family<'_, F>, sibling: usize| f.sites[0].sibling_retention(&f.id(sibling)).unwrap();
    assert_eq!(standing(&f, 1), SiblingRetention::Whole);
    for i in [0, 2] {
        f.sites[i].set_retention_window(Some(0)).unwrap();
        f.sites[i].scrub(false).unwrap();
    }
    assert_eq!(standing(&f, 1), SiblingRetention::Covered);
    f.restore(1, &backup);
    f.sites[1].restorereplica(&[], false).unwrap();
    let digest = f.sites[1].digest().unwrap();
    let req = f.export(1, 0).expect("the restore request");
    assert!(matches!(
        f.import(0, req),
        Ok(ImportOutcome::Applied { .. })
    ));
    let first = backup_row.get(&f.id(0)) + 1;
    assert!(
        matches!(standing(&f, 1), SiblingRetention::Behind { origin, first: n, exact: true, .. } if origin == "r0" && n == first),
        "{:?}",
        standing(&f, 1)
    );
    assert_eq!(standing(&f, 2), SiblingRetention::Covered);
    let plan = f.sites[0]
        .plan_export(&f.id(1))
        .unwrap()
        .expect("an answer");
    let expected = format!("replica r1 needs entries {first}..");
    let said = plan.refusals.join("\n");
    assert!(said.contains(&expected), "{said}");
    assert!(said.contains("which this family no longer keeps"), "{said}");
    assert!(
        said.contains("re-create it from a fresh creation packet"),
        "{said}"
    );
    let parts = f.sites[0].write_plan_to_parts(&plan, None).unwrap();
    let msg = behind_retention(f.import(1, parts));
    assert!(msg.contains(&expected), "{msg}");
    assert!(
        msg.contains("re-create it from a fresh creation packet"),
        "{msg}"
    );
    assert_eq!(
        f.sites[1].digest().unwrap(),
        digest,
        "a refused packet changed state"
    );
    assert!(f.sites[1].status().unwrap().recovering.is_some());
}

/// A sibling put back to an older copy (no restore) after the others dropped what it lost
/// reports less than it had; the resend that would need the dropped entries is refused on
/// both sides rather than leaving a silent gap.
pub fn case_sibling_put_back_behind_retention_is_refused_on_both_sides<F: StoreFactory>(
    factory: &F,
) {
    let mut f = Family::new(factory, 3, 305);
    f.settle(&mesh(3));
    let old = f.backup(2);
    for n in 0..3u8 {
        f.sites[0].checkin("a", "main", &[n], "u", "").unwrap();
    }
    f.settle(&mesh(3));
    f.sites[0].set_retention_window(Some(0)).unwrap();
    assert!(f.sites[0].scrub(false).unwrap().entries_dropped > 0);
    f.snapshot_rollback(2, &old);
    let digest = f.sites[2].digest().unwrap();
    // Nothing to say on either side until r0's keepalive probe: it waits at r2 for entries r0
    // dropped (refused, naming them); r2's report shows the gap, and r0's resend is refused
    // at r0 too.
    f.env.advance(crate::keys::DEFAULT_KEEPALIVE_MS + 1);
    let (mut at_export, mut at_import) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        if let Some(plan) = f.sites[0].plan_export(&f.id(2)).unwrap() {
            at_export.extend(plan.refusals.clone());
            let parts = f.sites[0].write_plan_to_parts(&plan, None).unwrap();
            if let Err(e) = f.import(2, parts) {
                at_import.push(behind_retention(Err(e)));
            }
        }
        if let Some(p) = f.export(2, 0) {
            f.import(0, p).unwrap();
        }
    }
    let said = at_export.join("\n");
    assert!(
        said.contains("r2 last reported holding r0 only up to"),
        "{said}"
    );
    assert!(
        said.contains("this replica no longer keeps entries up to"),
        "{said}"
    );
    let msg = at_import.join("\n");
    assert!(msg.contains("replica r2 needs entries"), "{msg}");
    assert!(
        msg.contains("re-create it from a fresh creation packet"),
        "{msg}"
    );
    assert_eq!(
        f.sites[2].digest().unwrap(),
        digest,
        "a packet with a gap applied"
    );
    // A history creation packet needs the whole history: refused at r0 (a snapshot works, see
    // snapshot.rs), fine at r1.
    let err = f.sites[0]
        .plan_mkreplica("r3", &[7; 32])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("make a snapshot creation packet instead"),
        "{err}"
    );
    f.mkreplica(1, "r3");
}

/// A sibling that resends entries this replica dropped (its estimate lowered, as after a lost
/// packet) gets them skipped, not refused as divergent: every sibling held them, and what
/// follows continues the retained chain base (found by the simulator, seed 533).
pub fn case_a_resend_from_below_the_chain_base_is_skipped<F: StoreFactory>(factory: &F) {
    let f = busy_family(factory, 306);
    f.sites[1].set_retention_window(Some(0)).unwrap();
    assert!(f.sites[1].scrub(false).unwrap().entries_dropped > 0);
    let r0 = f.id(0);
    f.sites[2].chepoch(&f.id(1), &[(r0, 0)]).unwrap();
    f.sites[0].checkin("f0", "main", b"next", "u", "").unwrap();
    f.sync(0, 2);
    let digest = f.sites[1].digest().unwrap();
    let parts = f
        .export(2, 1)
        .expect("a packet from the start of r0's history");
    match f.import(1, parts) {
        Ok(ImportOutcome::Applied {
            applied, skipped, ..
        }) => {
            assert!(applied >= 1, "the new entry applies");
            assert!(skipped > 0, "the dropped ones are skipped");
        }
        other => panic!("expected the packet to apply, got {other:?}"),
    }
    assert_ne!(f.sites[1].digest().unwrap(), digest);
    f.settle(&mesh(3));
    f.assert_converged();
    assert!(f.sites[1].verify_chains().unwrap() > 0);
}
