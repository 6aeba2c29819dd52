//! A family of in-memory replicas and a mail room of packets between them.

use std::collections::HashMap;
use std::sync::Arc;

use msite_core::testkit::MemStore;
use msite_core::{CoreError, ImportOutcome, Incoming, Replica, ReplicaId, SimEnv};

pub type R = Replica<MemStore>;

pub struct Family {
    pub env: SimEnv,
    pub sites: Vec<R>,
    pub names: Vec<String>,
}

pub fn env_arc(env: &SimEnv) -> Arc<dyn msite_core::Env> {
    Arc::new(env.clone())
}

impl Family {
    /// A family of `n` replicas named r0, r1, …, each created from r0.
    pub fn new(n: usize, seed: u64) -> Family {
        let env = SimEnv::new(seed);
        let first = Replica::init(MemStore::new(), env_arc(&env), "fam", "r0").unwrap();
        let mut f = Family {
            env,
            sites: vec![first],
            names: vec!["r0".into()],
        };
        for i in 1..n {
            f.mkreplica(0, &format!("r{i}"));
        }
        f
    }

    /// Creates a replica from site `from`.
    pub fn mkreplica(&mut self, from: usize, name: &str) -> usize {
        let plan = self.sites[from].plan_mkreplica(name).unwrap();
        let parts = self.sites[from].write_plan_to_parts(&plan, None).unwrap();
        let pkt = Incoming::from_parts(parts, "creation").unwrap();
        let r = Replica::create_from_packet(MemStore::new(), env_arc(&self.env), pkt).unwrap();
        self.sites.push(r);
        self.names.push(name.into());
        self.sites.len() - 1
    }

    pub fn id(&self, i: usize) -> ReplicaId {
        self.sites[i].id()
    }

    /// Exports from `a` for `b`; the packet's parts, if any.
    pub fn export(&self, a: usize, b: usize) -> Option<Vec<Vec<u8>>> {
        self.sites[a].export_to_parts(&self.id(b), None).unwrap()
    }

    pub fn import(&self, b: usize, parts: Vec<Vec<u8>>) -> Result<ImportOutcome, CoreError> {
        let pkt = Incoming::from_parts(parts, "packet")?;
        self.sites[b].import(pkt)
    }

    /// Exports from `a` to `b` and imports it; returns the outcome (None: nothing sent).
    /// A packet refused as stale (built before the target's restore was known) is dropped, as
    /// an operator would; any other refusal fails the test.
    pub fn sync(&self, a: usize, b: usize) -> Option<ImportOutcome> {
        let parts = self.export(a, b)?;
        match self.import(b, parts) {
            Ok(o) => Some(o),
            Err(CoreError::Refused(msite_core::Refusal::StaleTarget { .. })) => {
                Some(ImportOutcome::AlreadyApplied)
            }
            Err(e) => panic!(
                "import at {} of a packet from {} failed: {e}",
                self.names[b], self.names[a]
            ),
        }
    }

    /// Exchanges both ways along `edges` until nothing moves.
    pub fn settle(&self, edges: &[(usize, usize)]) {
        for _ in 0..50 {
            let mut moved = false;
            for &(a, b) in edges {
                moved |= self.sync(a, b).is_some();
                moved |= self.sync(b, a).is_some();
            }
            if !moved {
                return;
            }
        }
        panic!("the family did not settle in 50 rounds");
    }

    pub fn digests(&self) -> Vec<[u8; 32]> {
        self.sites.iter().map(|s| s.digest().unwrap()).collect()
    }

    pub fn assert_converged(&self) {
        let d = self.digests();
        let rows: Vec<_> = self.sites.iter().map(|s| s.own_row().unwrap()).collect();
        for i in 1..d.len() {
            assert_eq!(
                rows[0], rows[i],
                "own rows differ between r0 and {}",
                self.names[i]
            );
            assert_eq!(
                d[0], d[i],
                "digests differ between r0 and {}",
                self.names[i]
            );
        }
    }
}

pub fn mesh(n: usize) -> Vec<(usize, usize)> {
    let mut e = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            e.push((a, b));
        }
    }
    e
}

pub fn hub(n: usize) -> Vec<(usize, usize)> {
    (1..n).map(|i| (0, i)).collect()
}

pub fn chain(n: usize) -> Vec<(usize, usize)> {
    (1..n).map(|i| (i - 1, i)).collect()
}

/// Checks the "no reuse" invariant across sites: every (origin, number) names one entry.
pub fn assert_no_reuse(f: &Family) {
    let mut seen: HashMap<(ReplicaId, u64), [u8; 32]> = HashMap::new();
    for s in &f.sites {
        for (origin, _) in s.own_row().unwrap().0 {
            for e in s.entries_of(&origin).unwrap() {
                if let Some(h) = seen.insert((e.origin, e.number), e.hash) {
                    assert_eq!(
                        h, e.hash,
                        "entry {} of {:?} differs between sites",
                        e.number, e.origin
                    );
                }
            }
        }
    }
}

pub fn applied(o: &ImportOutcome) -> bool {
    matches!(o, ImportOutcome::Applied { .. })
}
