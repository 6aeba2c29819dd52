//! A new replica's key travels in the creator's entries (docs/protocol.md §8, "A new
//! replica's key"): siblings know it before the new replica sends anything, a key swapped
//! inside the creation packet is refused, and a packet of the new replica signed by any other
//! key is refused naming the key expected.

use ed25519_dalek::{Signer, SigningKey};
use msite_packet::{decode_entry, encode_entry, entry_hash, sign, wire, Record};

use super::trust::{fingerprint_of_at, refused_unchanged, Decoded};
use super::*;

/// `d` re-signed by `attacker` as sender, listing `attacker`'s key for `who`; with `heads`,
/// `who`'s chain heads are re-signed by the attacker too.
fn resigned_as(d: &mut Decoded, who: &ReplicaId, attacker: &SigningKey, heads: bool) {
    let pk = attacker.verifying_key().to_bytes();
    for k in &mut d.header.keys {
        if k.replica.0 == who.0 {
            k.key = pk;
        }
    }
    if heads {
        for h in d.header.heads.iter_mut().filter(|h| h.origin.0 == who.0) {
            let msg = sign::head_message(&d.header.family, &h.origin, h.number, &h.hash);
            h.signature = attacker.sign(&msg).to_bytes();
        }
    }
    d.header.signature = wire::NO_SIGNATURE;
    let msg = sign::header_message(&d.id, d.kind, &d.header);
    d.header.signature = attacker.sign(&msg).to_bytes();
}

/// The hub makes r3 with the key r3's site made; r2 learns that key from the hub's entries
/// before r3 sends anything. A packet of r3 signed by another key is refused at r2 naming
/// r3's key; at r1, which has not heard of r3 yet, it is refused when its chain heads do not
/// verify, and when the hub's entries it carries give r3 a key other than the one it used;
/// r3's genuine packets apply everywhere after.
pub fn case_new_replica_key_is_known_before_its_first_packet<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 60);
    f.settle(&hub(3));
    let r3 = f.mkreplica(0, "r3");
    let key = f.sites[r3]
        .public_key(&f.id(r3))
        .unwrap()
        .expect("r3's key");
    let expected = crate::sync::fingerprint(&key);
    f.sync(0, 2)
        .expect("the hub's entries creating r3 reach r2");
    assert_eq!(fingerprint_of_at(&f, 2, r3), expected, "r2 holds r3's key");
    assert_eq!(f.sites[1].public_key(&f.id(r3)).unwrap(), None);
    f.sites[r3].mkbrtype("from-r3").unwrap();
    let to_r2 = f.export(r3, 2).expect("r3's change");
    let to_r1 = f.export(r3, 1).expect("r3's change and the hub's entries");
    let attacker = SigningKey::from_bytes(&[13; 32]);
    let mut forged = Decoded::new(&to_r2);
    resigned_as(&mut forged, &f.id(r3), &attacker, true);
    refused_unchanged(&f, 2, forged.encode(), &expected);
    let mut forged = Decoded::new(&to_r1);
    resigned_as(&mut forged, &f.id(r3), &attacker, false);
    refused_unchanged(&f, 1, forged.encode(), "chain head");
    // Heads re-signed too: the hub's entries the packet carries give r3 another key.
    resigned_as(&mut forged, &f.id(r3), &attacker, true);
    refused_unchanged(
        &f,
        1,
        forged.encode(),
        &format!("key {expected} (a key swapped"),
    );
    assert_eq!(f.sites[1].public_key(&f.id(r3)).unwrap(), None);
    assert!(applied(&f.import(2, to_r2).unwrap()));
    assert!(applied(&f.import(1, to_r1).unwrap()));
    assert_eq!(fingerprint_of_at(&f, 1, r3), expected, "r1 learnt r3's key");
    let mut edges = hub(3);
    edges.extend([(0, r3), (r3, 0)]);
    f.settle(&edges);
    f.assert_converged();
}

/// A creation packet whose entry announcing the new replica's key was changed to another key
/// (entry hash and chain recomputed) is refused, with the site's own key or the forger's;
/// a genuine packet made for another site key is refused naming both fingerprints; the
/// genuine packet then creates the replica, which signs with its site's key.
pub fn case_new_replica_key_swapped_in_the_creation_packet_is_refused<F: StoreFactory>(
    factory: &F,
) {
    let f = Family::new(factory, 1, 61);
    let key = crate::SiteKey::generate(&f.env);
    let plan = f.sites[0].plan_mkreplica("r1", &key.public()).unwrap();
    let genuine = f.sites[0].write_plan_to_parts(&plan, None).unwrap();
    let forger = crate::SiteKey::from_secret([21; 32]);
    let mut forged = Decoded::new(&genuine);
    let mut swapped = false;
    for r in &mut forged.records {
        if let Record::Entry(bytes) = r {
            let mut e = decode_entry(bytes).expect("an entry");
            if let wire::Op::VouchKey { key: k, .. } = &mut e.op {
                *k = forger.public();
                e.hash = entry_hash(&e);
                *bytes = encode_entry(&e);
                swapped = true;
            }
        }
    }
    assert!(
        swapped,
        "the creation packet announces r1's key in an entry"
    );
    let create = |parts: Vec<Vec<u8>>, k: &crate::SiteKey| {
        let dir = tempfile::tempdir().unwrap();
        let store = factory.open(dir.path()).unwrap();
        let pkt = Incoming::from_parts(parts, "creation").unwrap();
        Replica::create_from_packet(store, env_arc(&f.env), pkt, k).map(|r| r.public_key(&r.id()))
    };
    for k in [&key, &forger] {
        let err = create(forged.encode(), k).expect_err("a swapped key");
        assert!(err.to_string().contains("chain head"), "{err}");
    }
    let other = crate::SiteKey::from_secret([22; 32]);
    let err = create(genuine.clone(), &other).expect_err("made for another key");
    let fp = |k: &crate::SiteKey| crate::sync::fingerprint(&k.public());
    for want in [fp(&key), fp(&other)] {
        assert!(err.to_string().contains(&want), "{err} names {want}");
    }
    let made = create(genuine, &key).expect("the genuine packet").unwrap();
    assert_eq!(made, Some(key.public()));
}

/// A replica restored from a backup sends only restore requests while it recovers; a sibling
/// that never received the entries of its creator (so holds no key of it) checks its key from
/// the introduction in its key cell — its creator's entry announcing the key, under the
/// creator's signed chain head — instead of waiting for entries that will not come. A header
/// whose cell lists another key is not introduced by that entry: the packet does not apply,
/// and the sibling holds no key of it.
pub fn case_new_replica_is_introduced_by_its_creators_signed_entry<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 65);
    f.settle(&mesh(3));
    let r3 = f.mkreplica(1, "r3");
    f.settle(&[(1, r3)]);
    let backup = f.backup(r3);
    f.sites[r3].mkbrtype("lost").unwrap();
    f.settle(&[(1, r3)]);
    f.restore(r3, &backup);
    f.sites[r3].restorereplica(&[], false).unwrap();
    let genuine = f.export(r3, 2).expect("r3's restore request");
    let key = f.sites[r3]
        .public_key(&f.id(r3))
        .unwrap()
        .expect("r3's key");
    let attacker = SigningKey::from_bytes(&[23; 32]);
    let mut forged = Decoded::new(&genuine);
    resigned_as(&mut forged, &f.id(r3), &attacker, true);
    let digest = f.sites[2].digest().unwrap();
    let outcome = f.import(2, forged.encode());
    assert!(
        !matches!(outcome, Ok(ImportOutcome::Applied { .. })),
        "{outcome:?}"
    );
    assert_eq!(f.sites[2].digest().unwrap(), digest);
    assert_eq!(f.sites[2].public_key(&f.id(r3)).unwrap(), None);
    assert!(applied(&f.import(2, genuine).unwrap()));
    assert_eq!(f.sites[2].public_key(&f.id(r3)).unwrap(), Some(key));
    let held = |i: usize| f.sites[i].own_row().unwrap().get(&f.id(1));
    assert!(held(2) < held(1), "r2 still lacks r1's entries creating r3");
}
