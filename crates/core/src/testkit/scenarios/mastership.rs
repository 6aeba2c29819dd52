//! Mastership requests a master refuses (issue #18 item 5): the requester is told.

use crate::{ImportOutcome, ObjectRef, ReqMasterPolicy};

use super::*;

/// The notes of an import that applied.
fn notes(o: Option<ImportOutcome>) -> Vec<String> {
    match o {
        Some(ImportOutcome::Applied { notes, .. }) => notes,
        other => panic!("expected an applied packet, got {other:?}"),
    }
}

/// r0 (policy deny) refuses r1's request: the refusal is an entry that reaches r1, whose
/// import says so and which keeps the notice until it asks again; a relay carries it too.
pub fn case_a_denied_mastership_request_is_reported_to_the_requester<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 750);
    f.settle(&hub(3));
    f.sites[0]
        .set_reqmaster_policy(ReqMasterPolicy::Deny)
        .unwrap();
    let bt = f.sites[0].mkbrtype("rel").unwrap();
    f.settle(&hub(3));
    f.sites[2].reqmaster("brtype:rel").unwrap();
    let at_master = notes(f.sync(2, 0));
    assert!(
        at_master.iter().any(|n| n.contains("r2 is told")),
        "{at_master:?}"
    );
    assert!(f.sites[2].denied_requests().unwrap().is_empty());
    let at_requester = notes(f.sync(0, 2));
    assert!(
        at_requester
            .iter()
            .any(|n| n.contains("r0 refused this replica's request for mastership of brtype:rel")),
        "{at_requester:?}"
    );
    let denied = f.sites[2].denied_requests().unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(
        (denied[0].object, denied[0].master),
        (ObjectRef::BrType(bt), f.id(0))
    );
    // Only the requester keeps a notice; the master still masters the object.
    f.settle(&hub(3));
    assert!(f.sites[1].denied_requests().unwrap().is_empty());
    assert_eq!(
        f.sites[2].view().master_of(&ObjectRef::BrType(bt)).unwrap(),
        f.id(0)
    );
    f.assert_converged();
    f.sites[2].reqmaster("brtype:rel").unwrap();
    assert!(f.sites[2].denied_requests().unwrap().is_empty());
}
