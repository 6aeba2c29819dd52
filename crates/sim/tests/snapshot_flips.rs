//! Found by the simulator (seed 1, the first run with snapshot creation): a snapshot creation
//! packet with a byte of its trailer changed made a replica, because the importer stopped
//! reading at the snapshot-end record, before the trailer whose hash is checked. Every byte of
//! the packet after the envelope's patched fields must matter.

use std::sync::Arc;

use msite_core::testkit::MemStore;
use msite_core::{Env, Incoming, Replica, SimEnv, SiteKey};

#[test]
fn no_changed_byte_of_a_snapshot_packet_makes_a_replica() {
    let e: Arc<dyn Env> = Arc::new(SimEnv::new(5));
    let r0 = Replica::init(MemStore::new(), e.clone(), "fam", "r0").unwrap();
    r0.checkin("a", "main", b"hello", "u", "").unwrap();
    let key = SiteKey::from_secret([3; 32]);
    let plan = r0.plan_mkreplica_snapshot("r1", &key.public()).unwrap();
    let parts = r0.write_plan_to_parts(&plan, None).unwrap();
    let n = parts[0].len();
    let accepted: Vec<usize> = (msite_packet::format::ENVELOPE_LEN..n)
        .filter(|&i| {
            let mut p = parts.clone();
            p[0][i] ^= 0x5a;
            Incoming::from_parts(p, "changed")
                .and_then(|pkt| Replica::create_from_packet(MemStore::new(), e.clone(), pkt, &key))
                .is_ok()
        })
        .collect();
    assert!(
        accepted.is_empty(),
        "changed bytes accepted: {accepted:?} of {n}"
    );
    Replica::create_from_packet(
        MemStore::new(),
        e,
        Incoming::from_parts(parts, "whole").unwrap(),
        &key,
    )
    .unwrap();
}
