//! The family's sealing policy and the replicas' age recipients are replicated state
//! (docs/protocol.md §8, "Sealing as a family policy"): each replica's own recipient reaches
//! every sibling through relays, signed by its owner, and the policy converges to the latest
//! setting at every replica.

use msite_packet::wire;

use super::trust::Decoded;
use super::*;

fn rcpt(i: usize) -> String {
    format!("age1recipient{i}")
}

/// Each replica's recipient, announced in its packets, reaches every sibling through the hub,
/// and a replica made later gets them all in its creation packet; after a rekey the owner's
/// next packets sign it again and siblings keep it.
pub fn case_recipients_are_replicated_through_relays<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 62);
    for i in 0..3 {
        f.sites[i].set_own_recipient(&rcpt(i)).unwrap();
        f.sites[i].mkbrtype(&format!("b{i}")).unwrap();
    }
    f.settle(&hub(3));
    for at in 0..3 {
        for of in 0..3 {
            let held = f.sites[at].recipient_of(&f.id(of)).unwrap();
            assert_eq!(held, Some(rcpt(of)), "site {at} holds r{of}'s recipient");
        }
    }
    let r3 = f.mkreplica(0, "r3");
    assert_eq!(f.sites[r3].recipient_of(&f.id(2)).unwrap(), Some(rcpt(2)));
    f.sites[2].rekey().unwrap();
    f.sites[2].set_own_recipient("age1after").unwrap();
    let mut edges = hub(3);
    edges.push((0, r3));
    f.settle(&edges);
    for at in [0, 1, r3] {
        let held = f.sites[at].recipient_of(&f.id(2)).unwrap();
        assert_eq!(held.as_deref(), Some("age1after"), "site {at}");
    }
}

/// A hub that changes another replica's recipient in the header it relays (and signs the
/// header with its own key) cannot make the receiver take it: the recipient lacks its owner's
/// signature. The owner's genuine announcement is taken afterwards.
pub fn case_recipient_altered_by_a_relay_is_not_taken<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 63);
    f.settle(&hub(3));
    f.sites[2].set_own_recipient(&rcpt(2)).unwrap();
    f.sites[2].mkbrtype("from-r2").unwrap();
    f.sync(2, 0).expect("r2's change reaches the hub");
    let genuine = f.export(0, 1).expect("the hub relays r2's change");
    let mut forged = Decoded::new(&genuine);
    let mut altered = false;
    for c in forged.header.keys.iter_mut() {
        if let Some(r) = c.recipient.as_mut().filter(|_| c.replica.0 == f.id(2).0) {
            r.recipient = "age1attacker".into();
            altered = true;
        }
    }
    assert!(altered, "the hub relays r2's recipient");
    forged.id = wire::Id([0x77; 16]);
    f.sites[0].sign_header_for_test(&mut forged.header, forged.kind, &forged.id);
    assert!(applied(&f.import(1, forged.encode()).unwrap()));
    assert_eq!(f.sites[1].recipient_of(&f.id(2)).unwrap(), None);
    f.sites[2].mkbrtype("again").unwrap();
    f.settle(&hub(3));
    assert_eq!(f.sites[1].recipient_of(&f.id(2)).unwrap(), Some(rcpt(2)));
}

/// `seal-policy` is an entry: every replica ends with the latest setting, whatever the order
/// in which concurrent settings reach it, and a replica made later starts with it.
pub fn case_seal_policy_converges_to_the_latest_setting<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 64);
    f.settle(&hub(3));
    assert_eq!(f.sites[1].seal_policy().unwrap(), None);
    f.sites[2].set_seal_policy(true).unwrap();
    f.settle(&hub(3));
    for i in 0..3 {
        let p = f.sites[i].seal_policy().unwrap().expect("a policy");
        assert!(p.always, "site {i}");
        assert_eq!(p.set_by, f.id(2));
    }
    f.sites[1].set_seal_policy(false).unwrap();
    f.env.advance(10);
    f.sites[2].set_seal_policy(true).unwrap();
    // r2's later setting reaches r1 through the hub only after r1's earlier one went out.
    f.settle(&hub(3));
    for i in 0..3 {
        let p = f.sites[i].seal_policy().unwrap().expect("a policy");
        assert!(p.always, "site {i}: the later setting wins");
    }
    let r3 = f.mkreplica(1, "r3");
    assert!(f.sites[r3].seal_policy().unwrap().expect("a policy").always);
}
