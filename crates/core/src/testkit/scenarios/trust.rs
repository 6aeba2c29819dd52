//! Forgeries (issue #20): packets rewritten by someone who can write into a bay, with every
//! checksum and hash the format computes recomputed, are refused with the state unchanged;
//! the genuine packets still apply afterwards.

use ed25519_dalek::{Signer, SigningKey};
use msite_packet::{
    decode_entry, decode_from_slice, encode_entry, entry_hash, format, sign, wire, MemPacketWriter,
    Record, WriteOptions,
};

use crate::{CoreError, Refusal};

use super::*;

/// A decoded packet: its kind, id, header and records, re-encoded by [`Decoded::encode`]
/// with every checksum and hash of the format recomputed.
#[derive(Clone)]
pub(super) struct Decoded {
    pub(super) kind: wire::Kind,
    pub(super) id: wire::Id,
    pub(super) header: wire::Header,
    pub(super) records: Vec<Record>,
}

impl Decoded {
    pub(super) fn new(parts: &[Vec<u8>]) -> Self {
        let (info, header, _) = decode_from_slice(&parts[0]).expect("a packet");
        let records = parts
            .iter()
            .flat_map(|p| decode_from_slice(p).expect("a packet").2)
            .collect();
        Decoded {
            kind: info.kind,
            id: info.packet_id,
            header,
            records,
        }
    }

    pub(super) fn encode(&self) -> Vec<Vec<u8>> {
        let mut opts = WriteOptions::new(self.id);
        opts.minor = format::FORMAT_MINOR;
        let mut w = MemPacketWriter::new(self.kind, &self.header, opts).expect("a writer");
        for r in &self.records {
            w.push_record(r).expect("a record");
        }
        w.finish().expect("the packet").0
    }

    /// Replaces the content of the first check-in by `new`, then rewrites the entry's hash
    /// and the hash chain of every later entry of its origin, as a forger would.
    fn replace_first_checkin(&mut self, new: &[u8]) -> wire::Id {
        let new_hash: [u8; 32] = *blake3::hash(new).as_bytes();
        let mut origin = None;
        let mut relink: Option<[u8; 32]> = None;
        let mut old_hash = None;
        for r in &mut self.records {
            match r {
                Record::Entry(bytes) => {
                    let mut e = decode_entry(bytes).expect("an entry");
                    if origin.is_some_and(|o| o != e.origin) {
                        continue;
                    }
                    if let (None, wire::Op::Checkin { content, size, .. }) = (origin, &mut e.op) {
                        old_hash = Some(*content);
                        *content = new_hash;
                        *size = new.len() as u64;
                        origin = Some(e.origin);
                    } else if let Some(prev) = relink {
                        e.prev = prev;
                    } else {
                        continue;
                    }
                    e.hash = entry_hash(&e);
                    relink = Some(e.hash);
                    *bytes = encode_entry(&e);
                }
                Record::Blob { .. }
                | Record::BlobPiece { .. }
                | Record::Delta { .. }
                | Record::Row { .. }
                | Record::SnapshotEnd { .. } => {}
            }
        }
        for r in &mut self.records {
            if let Record::Blob { hash, bytes } = r {
                if Some(*hash) == old_hash {
                    *hash = new_hash;
                    *bytes = new.to_vec();
                }
            }
        }
        origin.expect("the packet carries a check-in")
    }
}

/// The import of `parts` at site `b` is refused as not authentic, its message naming `word`,
/// and site `b`'s digest and own row are unchanged.
pub(super) fn refused_unchanged<F: StoreFactory>(
    f: &Family<'_, F>,
    b: usize,
    parts: Vec<Vec<u8>>,
    word: &str,
) {
    let digest = f.sites[b].digest().unwrap();
    let row = f.sites[b].own_row().unwrap();
    match f.import(b, parts) {
        Err(CoreError::Refused(r @ Refusal::Unauthentic { .. })) => {
            let msg = r.to_string();
            assert!(msg.contains(word), "the refusal names {word}: {msg}");
            assert!(msg.contains("nothing of it was applied"), "{msg}");
        }
        other => panic!("a forgery was not refused as unauthentic: {other:?}"),
    }
    assert_eq!(
        f.sites[b].digest().unwrap(),
        digest,
        "the refusal changed the state"
    );
    assert_eq!(
        f.sites[b].own_row().unwrap(),
        row,
        "the refusal changed the own row"
    );
}

pub(super) fn fingerprint_of<F: StoreFactory>(f: &Family<'_, F>, i: usize) -> String {
    crate::sync::fingerprint(&f.sites[i].public_key(&f.id(i)).unwrap().expect("a key"))
}

/// A version's content replaced with every hash recomputed is refused (the origin's signed
/// chain head no longer matches), and so is the same forgery with the head rewritten too (the
/// header's signature then fails); the genuine packet applies afterwards.
pub fn case_content_forged_with_hashes_recomputed_is_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 31);
    f.settle(&[(0, 1)]);
    f.sites[0]
        .checkin("a.txt", "main", b"genuine", "u", "")
        .unwrap();
    f.sites[0]
        .checkin("a.txt", "main", b"genuine 2", "u", "")
        .unwrap();
    let genuine = f.export(0, 1).unwrap();
    let mut forged = Decoded::new(&genuine);
    forged.replace_first_checkin(b"forged");
    refused_unchanged(&f, 1, forged.encode(), "r0 signed");
    let last = forged.records.iter().rev().find_map(|r| match r {
        Record::Entry(b) => Some(decode_entry(b).unwrap()),
        _ => None,
    });
    let last = last.expect("entries");
    for h in &mut forged.header.heads {
        if h.origin == last.origin && h.number == last.number {
            h.hash = last.hash;
        }
    }
    refused_unchanged(&f, 1, forged.encode(), &fingerprint_of(&f, 0));
    assert!(applied(&f.import(1, genuine).unwrap()));
    let text = f.sites[1]
        .cat(&VersionSel::parse("a.txt").unwrap())
        .unwrap();
    assert_eq!(text, b"genuine 2");
    f.settle(&[(0, 1)]);
    f.assert_converged();
}

/// An acknowledgement forged into a sibling's packet (claiming it applied a packet it never
/// received) is refused, and the export after the resend interval still carries the
/// unacknowledged change.
pub fn case_forged_acknowledgement_is_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 32);
    f.settle(&[(0, 1)]);
    f.sites[0].mkbrtype("dev").unwrap();
    let lost = f.export(0, 1).unwrap();
    let seq = decode_from_slice(&lost[0]).unwrap().1.targets[0].packet_seq;
    drop(lost);
    f.sites[1].mkbrtype("other").unwrap();
    let mut ack = Decoded::new(&f.export(1, 0).unwrap());
    ack.header.targets[0].applied_seq = seq;
    ack.header.targets[0].seen_seq = seq;
    refused_unchanged(&f, 0, ack.encode(), &fingerprint_of(&f, 1));
    // Nobody reported a gap: the lost change is resent once the resend interval has passed
    // (docs/protocol.md §5, "Resends"), which a forged acknowledgement would have prevented.
    f.env.advance(crate::keys::DEFAULT_RESEND_MS);
    let resent = f.export(0, 1).expect("the change is sent again");
    assert!(applied(&f.import(1, resent).unwrap()));
    f.settle(&[(0, 1)]);
    f.assert_converged();
}

/// A hub that alters an entry of another origin it relays, even when it signs the packet
/// with its own key, is refused: the origin's chain head does not match; a hub that also
/// drops the head is refused for entries no head covers.
pub fn case_relayed_entry_altered_by_the_hub_is_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 33);
    f.settle(&hub(3));
    f.sites[1]
        .checkin("b.txt", "main", b"from r1", "u", "")
        .unwrap();
    f.sync(1, 0).expect("r1 to the hub");
    let genuine = f.export(0, 2).unwrap();
    let mut forged = Decoded::new(&genuine);
    let origin = forged.replace_first_checkin(b"altered by the hub");
    assert_eq!(origin.0, f.id(1).0, "the altered entry is r1's");
    f.sites[0].sign_header_for_test(&mut forged.header, forged.kind, &forged.id);
    refused_unchanged(&f, 2, forged.encode(), "r1 signed");
    forged.header.heads.retain(|h| h.origin != origin);
    f.sites[0].sign_header_for_test(&mut forged.header, forged.kind, &forged.id);
    refused_unchanged(
        &f,
        2,
        forged.encode(),
        "not covered by a chain head r1 signed",
    );
    assert!(applied(&f.import(2, genuine).unwrap()));
    f.settle(&hub(3));
    f.assert_converged();
}

/// A packet signed by a key the receiver does not hold for its sender is refused naming the
/// key expected, whether the forger lists its key for the sender or not; an unsigned packet
/// is refused too.
pub fn case_packet_signed_by_an_unknown_key_is_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 34);
    f.settle(&[(0, 1)]);
    f.sites[0].mkbrtype("dev").unwrap();
    let genuine = f.export(0, 1).unwrap();
    let mut forged = Decoded::new(&genuine);
    let attacker = SigningKey::from_bytes(&[7; 32]);
    let sign_as_attacker = |d: &mut Decoded| {
        d.header.signature = wire::NO_SIGNATURE;
        let msg = sign::header_message(&d.id, d.kind, &d.header);
        d.header.signature = attacker.sign(&msg).to_bytes();
    };
    sign_as_attacker(&mut forged);
    refused_unchanged(&f, 1, forged.encode(), &fingerprint_of(&f, 0));
    for k in &mut forged.header.keys {
        if k.replica.0 == f.id(0).0 {
            k.key = attacker.verifying_key().to_bytes();
        }
    }
    sign_as_attacker(&mut forged);
    refused_unchanged(&f, 1, forged.encode(), "a key swapped in transit");
    let mut unsigned = Decoded::new(&genuine);
    unsigned.header.signature = wire::NO_SIGNATURE;
    refused_unchanged(&f, 1, unsigned.encode(), "is unsigned");
    assert!(applied(&f.import(1, genuine).unwrap()));
}

/// A creation packet whose creator key was swapped is refused, whether or not the forger
/// signed the header with the swapped key (the creator's chain heads then fail); nothing is
/// created from it, and the genuine packet creates the replica.
pub fn case_key_swapped_in_the_creation_packet_is_refused<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 1, 35);
    f.sites[0].mkbrtype("dev").unwrap();
    let key = crate::SiteKey::generate(&f.env);
    let plan = f.sites[0].plan_mkreplica("r1", &key.public()).unwrap();
    let genuine = f.sites[0].write_plan_to_parts(&plan, None).unwrap();
    let mut forged = Decoded::new(&genuine);
    let attacker = SigningKey::from_bytes(&[9; 32]);
    for k in &mut forged.header.keys {
        k.key = attacker.verifying_key().to_bytes();
    }
    let create = |parts: Vec<Vec<u8>>| {
        let dir = tempfile::tempdir().unwrap();
        let store = factory.open(dir.path()).unwrap();
        let pkt = Incoming::from_parts(parts, "creation").unwrap();
        Replica::create_from_packet(store, env_arc(&f.env), pkt, &key).map(|_| ())
    };
    let err = create(forged.encode()).expect_err("a swapped key");
    assert!(err.to_string().contains("does not verify"), "{err}");
    forged.header.signature = wire::NO_SIGNATURE;
    let msg = sign::header_message(&forged.id, forged.kind, &forged.header);
    forged.header.signature = attacker.sign(&msg).to_bytes();
    let err = create(forged.encode()).expect_err("heads signed by the real key");
    assert!(err.to_string().contains("chain head"), "{err}");
    let pkt = Incoming::from_parts(genuine, "creation").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = factory.open(dir.path()).unwrap();
    let r1 = Replica::create_from_packet(store, env_arc(&f.env), pkt, &key);
    let r1 = r1.expect("the genuine creation packet");
    assert_eq!(
        r1.public_key(&f.id(0)).unwrap(),
        f.sites[0].public_key(&f.id(0)).unwrap(),
        "the new replica pins the creator's key"
    );
    assert_eq!(
        r1.public_key(&r1.id()).unwrap(),
        Some(key.public()),
        "the new replica signs with the key its site made"
    );
    let _ = &mut f;
}

/// A restore request a hub relays for a restoring sibling, altered by the hub (its row
/// lowered, so that the others would believe the sibling lost more) and the packet signed with
/// the hub's own key, is refused naming the sibling whose signature it lacks; the genuine
/// relayed request applies.
pub fn case_relayed_restore_request_altered_by_the_hub_is_refused<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 36);
    f.settle(&hub(3));
    let backup = f.backup(1);
    f.sites[1].mkbrtype("lost").unwrap();
    f.settle(&hub(3));
    f.restore(1, &backup);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.sync(1, 0).expect("r1's request reaches the hub");
    let genuine = f.export(0, 2).expect("the hub relays the request");
    let mut forged = Decoded::new(&genuine);
    let mut altered = false;
    for c in &mut forged.header.controls {
        if let wire::Control::RestoreRequest { replica, row, .. } = c {
            if replica.0 == f.id(1).0 {
                row.iter_mut().for_each(|cell| cell.number = 0);
                altered = true;
            }
        }
    }
    assert!(altered, "the hub's packet relays r1's request");
    f.sites[0].sign_header_for_test(&mut forged.header, forged.kind, &forged.id);
    refused_unchanged(&f, 2, forged.encode(), "restore request of r1");
    assert!(f.import(2, genuine).is_ok());
}

/// An old signed packet replayed after newer ones (its signature still verifies) changes
/// nothing: the packet id was recorded when it applied; and its header copied into a new packet
/// id, to dodge that record, no longer verifies.
pub fn case_replayed_old_signed_packet_changes_nothing<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 37);
    f.settle(&[(0, 1)]);
    f.sites[0].mkbrtype("one").unwrap();
    let old = f.export(0, 1).unwrap();
    assert!(applied(&f.import(1, old.clone()).unwrap()));
    f.sites[0].mkbrtype("two").unwrap();
    f.settle(&[(0, 1)]);
    let digest = f.sites[1].digest().unwrap();
    let again = f.import(1, old.clone()).unwrap();
    assert_eq!(again, ImportOutcome::AlreadyApplied);
    assert_eq!(f.sites[1].digest().unwrap(), digest);
    let mut moved = Decoded::new(&old);
    moved.id = wire::Id([0x5a; 16]);
    refused_unchanged(&f, 1, moved.encode(), "does not verify");
}

/// After `msite rekey` at r1, a header r1's rotated-out key signs that states an own entry of
/// r1 at or past the rotation is refused at r2, naming r1 and its new key, with the state
/// unchanged: r1 signed with that key only before the rotation (only a copy of the old key can
/// sign such a header). r1's packets signed with the new key apply, directly and relayed
/// through the hub, and every site holds the new key.
pub fn case_packet_signed_by_a_rotated_key_is_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 38);
    f.settle(&hub(3));
    let old_fp = fingerprint_of(&f, 1);
    f.sites[1].mkbrtype("before").unwrap();
    let genuine = f.export(1, 2).expect("a packet with r1's change");
    let rotation = f.sites[1].own_row().unwrap().get(&f.id(1)) + 1;
    let mut past = Decoded::new(&genuine);
    past.id = wire::Id([0x6b; 16]);
    for c in &mut past.header.sender_row {
        if c.origin.0 == f.id(1).0 {
            c.number = rotation;
        }
    }
    f.sites[1].sign_header_for_test(&mut past.header, past.kind, &past.id);
    let new_fp = f.sites[1].rekey().unwrap();
    assert_ne!(new_fp, old_fp, "rekey makes a new key");
    f.sites[1].mkbrtype("after").unwrap();
    f.settle(&hub(3));
    refused_unchanged(&f, 2, past.encode(), &new_fp);
    f.assert_converged();
    for i in 0..3 {
        assert_eq!(
            fingerprint_of_at(&f, i, 1),
            new_fp,
            "site {i} holds r1's new key"
        );
    }
}

/// A packet r1 signed before its `msite rekey`, delivered to r2 after r2 applied the rotation
/// (through the hub), is a late genuine packet, not a forgery: its header states only r1's
/// entries before the rotation, which the rotated-out key covered. It imports like any late
/// packet whose entries are all held (nothing new applies, the state is unchanged), and the
/// family converges.
pub fn case_packet_signed_before_a_rotation_applies_after_it<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 42);
    f.settle(&hub(3));
    f.sites[1].mkbrtype("one").unwrap();
    let late = f
        .export(1, 2)
        .expect("r1's change, signed with its old key");
    let new_fp = f.sites[1].rekey().unwrap();
    assert!(applied(
        &f.sync(1, 0).expect("the rotation reaches the hub")
    ));
    assert!(applied(&f.sync(0, 2).expect("and r2")));
    assert_eq!(
        fingerprint_of_at(&f, 2, 1),
        new_fp,
        "r2 applied the rotation"
    );
    let digest = f.sites[2].digest().unwrap();
    match f.import(2, late) {
        Ok(ImportOutcome::Applied { applied: 0, .. }) => {}
        other => panic!("the late packet signed before the rotation was not taken: {other:?}"),
    }
    assert_eq!(f.sites[2].digest().unwrap(), digest, "everything was held");
    f.sites[1].mkbrtype("two").unwrap();
    f.settle(&hub(3));
    f.assert_converged();
}

/// A packet r1 signed with its new key that reaches r2 before the packet carrying the
/// rotation waits (nothing of it applied: its key is not in force at r2 yet) instead of being
/// refused; once the rotation applies, it applies too.
pub fn case_packet_signed_with_a_new_key_waits_for_the_rotation<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 43);
    f.settle(&hub(3));
    let new_fp = f.sites[1].rekey().unwrap();
    let rotation = f.export(1, 2).expect("the rotation");
    f.sites[0].mkbrtype("zero").unwrap();
    assert!(applied(&f.sync(0, 1).expect("r0's change reaches r1")));
    let early = f
        .export(1, 2)
        .expect("r1 relays r0's change, signed with its new key");
    let digest = f.sites[2].digest().unwrap();
    let row = f.sites[2].own_row().unwrap();
    match f.import(2, early.clone()) {
        Ok(ImportOutcome::Waiting(needs)) => assert!(
            needs.iter().any(|n| n.origin == f.id(1)),
            "it waits for r1's entries: {needs:?}"
        ),
        other => panic!("the early packet did not wait: {other:?}"),
    }
    assert_eq!(f.sites[2].digest().unwrap(), digest, "nothing applied");
    assert_eq!(f.sites[2].own_row().unwrap(), row, "nothing applied");
    assert!(applied(&f.import(2, rotation).unwrap()));
    assert!(applied(&f.import(2, early).unwrap()), "it applies now");
    assert_eq!(fingerprint_of_at(&f, 2, 1), new_fp);
    f.settle(&hub(3));
    f.assert_converged();
}

/// A replica that rotated its key, backed up (as `msite rekey` says to) and lost its store
/// before the rotation left it recovers: its restore request is signed with the new key, which
/// its siblings hold only once they applied the `RotateKey` entry that only it holds. Its
/// packets carry its entries since what each sibling holds, so the siblings apply the
/// rotation, answer the request, and the restoration completes (before: each sibling waited
/// for the rotation, and the replica awaited their answers, for ever; simulator seed 37).
pub fn case_restored_replica_whose_rotation_never_left_it_recovers<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 44);
    f.settle(&hub(3));
    let fp = f.sites[1].rekey().unwrap();
    let backup = f.backup(1);
    f.restore(1, &backup);
    f.sites[1].restorereplica(&[], false).unwrap();
    f.settle(&hub(3));
    assert!(
        f.sites[1].status().unwrap().recovering.is_none(),
        "r1's restoration completed"
    );
    for i in [0, 2] {
        assert_eq!(
            fingerprint_of_at(&f, i, 1),
            fp,
            "site {i} holds r1's new key"
        );
    }
    f.sites[1].mkbrtype("after").unwrap();
    f.settle(&hub(3));
    f.assert_converged();
}

/// A rotation whose proof is not signed by the rotating replica's key is refused: a hub that
/// slips a `RotateKey` of r1 into r1's chain cannot sign r1's chain head over it.
pub fn case_forged_rotation_is_refused<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 2, 39);
    f.settle(&[(0, 1)]);
    let fp = fingerprint_of(&f, 1);
    f.sites[1].rekey().unwrap();
    let genuine = f.export(1, 0).expect("the rotation");
    let mut forged = Decoded::new(&genuine);
    let attacker = SigningKey::from_bytes(&[11; 32]).verifying_key().to_bytes();
    for r in &mut forged.records {
        if let Record::Entry(bytes) = r {
            let mut e = decode_entry(bytes).expect("an entry");
            if let wire::Op::RotateKey { key, .. } = &mut e.op {
                *key = attacker;
                e.hash = entry_hash(&e);
                *bytes = encode_entry(&e);
            }
        }
    }
    refused_unchanged(&f, 0, forged.encode(), "r1");
    assert_eq!(
        fingerprint_of_at(&f, 0, 1),
        fp,
        "the hub still holds r1's old key"
    );
    assert!(applied(&f.import(0, genuine).unwrap()));
}

/// The lost-key procedure: r1 makes a key no entry announces (`rekey --lost`, as after losing
/// it); its packets are refused until the hub's operator vouches for the key (`msite vouch`);
/// then r1's packets apply everywhere, the vouch relayed by the hub to r2.
pub fn case_lost_key_is_vouched_for_by_a_sibling<F: StoreFactory>(factory: &F) {
    let f = Family::new(factory, 3, 40);
    f.settle(&hub(3));
    let (lost_fp, hex) = f.sites[1].rekey_lost().unwrap();
    f.sites[1].mkbrtype("later").unwrap();
    let refused = f.export(1, 0).expect("r1's change");
    refused_unchanged(&f, 0, refused, "a key swapped in transit");
    let bad = f.sites[0].vouch("r0", &hex).unwrap_err();
    assert!(
        bad.to_string().contains("cannot vouch for its own key"),
        "{bad}"
    );
    let (fp, _) = f.sites[0].vouch("r1", &hex).unwrap();
    assert_eq!(fp, lost_fp, "the vouch names the key r1 made");
    f.settle(&hub(3));
    // The refused change is resent after the resend interval (docs/protocol.md §5).
    f.env.advance(crate::keys::DEFAULT_RESEND_MS);
    f.settle(&hub(3));
    f.assert_converged();
    for i in 0..3 {
        assert_eq!(
            fingerprint_of_at(&f, i, 1),
            fp,
            "site {i} holds the vouched key"
        );
    }
}

pub(super) fn fingerprint_of_at<F: StoreFactory>(
    f: &Family<'_, F>,
    at: usize,
    of: usize,
) -> String {
    crate::sync::fingerprint(&f.sites[at].public_key(&f.id(of)).unwrap().expect("a key"))
}

/// Keys rotated before a replica is made reach it in its creation packet: r1 rotates twice,
/// then the hub makes r3, which pins r1's current key, converges with the family, and keeps
/// accepting r1's packets relayed by the hub; a third rotation reaches r3 as well.
pub fn case_rotated_keys_reach_a_replica_made_later<F: StoreFactory>(factory: &F) {
    let mut f = Family::new(factory, 3, 41);
    f.settle(&hub(3));
    f.sites[1].rekey().unwrap();
    f.sites[1].mkbrtype("one").unwrap();
    let fp = f.sites[1].rekey().unwrap();
    f.settle(&hub(3));
    let r3 = f.mkreplica(0, "r3");
    assert_eq!(fingerprint_of_at(&f, r3, 1), fp, "r3 pins r1's current key");
    let edges = hub(4);
    f.settle(&edges);
    f.assert_converged();
    let fp = f.sites[1].rekey().unwrap();
    f.sites[1].mkbrtype("two").unwrap();
    f.settle(&edges);
    f.assert_converged();
    assert_eq!(
        fingerprint_of_at(&f, r3, 1),
        fp,
        "r3 follows r1's next rotation"
    );
}

/// A replica restored from a backup taken before its last `msite rekey` holds only the key
/// that rotation replaced. Its restore request, signed with that key, is accepted (it states
/// only entries from before the rotation); the siblings' answers, which relay that request
/// back with the rotated key announced, apply; and it takes back everything it lost, its own
/// rotation and the changes after it included: the restoration completes. Its packets since
/// then, still signed with the replaced key, are refused naming the key expected: the operator
/// runs the lost-key procedure (`rekey --lost` here, `vouch` at a sibling), and the family
/// converges with its next change.
pub fn case_restore_from_a_backup_older_than_a_rekey_takes_everything_back<F: StoreFactory>(
    factory: &F,
) {
    let mut f = Family::new(factory, 3, 46);
    f.settle(&hub(3));
    f.sites[1].mkbrtype("before").unwrap();
    f.settle(&hub(3));
    let backup = f.backup(1);
    let rotated_fp = f.sites[1].rekey().unwrap();
    f.sites[1].mkbrtype("after").unwrap();
    f.settle(&hub(3));
    let digest = f.sites[0].digest().unwrap();
    f.restore(1, &backup);
    f.sites[1].restorereplica(&[], false).unwrap();
    assert!(applied(&f.sync(1, 0).expect("r1's restore request")));
    assert!(applied(&f.sync(0, 2).expect("relayed to r2")));
    assert!(applied(&f.sync(2, 0).expect("r2's answer")));
    assert!(applied(&f.sync(0, 1).expect("the hub's answers")));
    assert!(
        f.sites[1].status().unwrap().recovering.is_none(),
        "r1's restoration completed"
    );
    assert_eq!(
        f.sites[1].digest().unwrap(),
        digest,
        "r1 took everything back"
    );
    f.sites[1].mkbrtype("later").unwrap();
    let refused = f.export(1, 0).expect("r1's change");
    refused_unchanged(&f, 0, refused, &rotated_fp);
    let (_, hex) = f.sites[1].rekey_lost().unwrap();
    f.sites[0].vouch("r1", &hex).unwrap();
    // r1's packets since its restoration were refused: they go again after the resend interval.
    f.env.advance(crate::keys::DEFAULT_RESEND_MS);
    f.settle(&hub(3));
    f.assert_converged();
}
