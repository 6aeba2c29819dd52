//! The family the `import_packet` target imports into: replicas `a`, `b` and `c` on
//! `MemStore`, built with a seeded `SimEnv` so that every run builds the same packets.
//!
//! `c` is the importer: its store is kept as it was right after its creation, and the packets
//! are the real update packets its siblings would send it: `a`'s work (p1), `b`'s, which
//! carries `a`'s too (p2), and more of `a`'s work that builds on p1 (p3).

use std::io::Cursor;
use std::sync::Arc;

use msite_core::testkit::{mkreplica_in_memory, MemStore};
use msite_core::{Env, Incoming, Replica, SimEnv, VersionSel};
use msite_packet::{decode_entry, wire, PacketReader, Record};

/// The seed of the family's environment (ids and clock).
const FAMILY_SEED: u64 = 0x6d73_6974_6566_757a;

/// The seed of the environment each fuzz input imports under.
pub const IMPORT_SEED: u64 = 0x1;

/// A decoded packet: what the mutations change before it is encoded again.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Update or replica creation.
    pub kind: wire::Kind,
    /// The header.
    pub header: wire::Header,
    /// The logical packet id.
    pub packet_id: wire::Id,
    /// Entries and blobs, in order.
    pub records: Vec<Record>,
}

/// The family, the importer's store and the packets for it.
pub struct Family {
    /// `c`'s store right after its creation.
    pub importer: MemStore,
    /// The real packets for `c`, decoded.
    pub packets: Vec<Packet>,
    /// The same packets as encoded by the exporters (one part each): the seed corpus.
    pub raw: Vec<Vec<u8>>,
    /// The replica ids `a`, `b`, `c`.
    pub replicas: Vec<wire::Id>,
    /// The ids of the objects the packets' entries create (every entry names one).
    pub objects: Vec<wire::ObjId>,
    /// The hashes of the entries the packets carry.
    pub entry_hashes: Vec<wire::Hash>,
    /// The content the packets carry.
    pub blobs: Vec<(wire::Hash, Vec<u8>)>,
    /// `a` and `b`, kept to sign mutated headers as their sender would (a mutation then
    /// reaches the checks behind the signature, as a malicious relay's packet would).
    pub signers: Vec<Rep>,
}

type Rep = Replica<MemStore>;
type Res<T> = msite_core::Result<T>;

fn sync(from: &Rep, to: &Rep) -> Res<()> {
    if let Some(parts) = from.export_to_parts(&to.id(), None)? {
        to.import(Incoming::from_parts(parts, "family")?)?;
    }
    Ok(())
}

fn export(from: &Rep, to: &Rep) -> Res<Vec<u8>> {
    let parts = from.export_to_parts(&to.id(), None)?.unwrap_or_default();
    parts
        .into_iter()
        .next()
        .ok_or_else(|| msite_core::CoreError::Invalid("the family exported nothing".into()))
}

/// Version `n` of `src/x.c`: versions share all but their first line, so that the second
/// travels as a delta against the first (format 1.3) in the packet that carries both.
fn x_version(n: &str) -> Vec<u8> {
    let mut v = format!("x {n}\n").into_bytes();
    for i in 0..8 {
        v.extend_from_slice(format!("int x_{i}(void) {{ return {i}; }}\n").as_bytes());
    }
    v
}

fn work_at_a(a: &Rep) -> Res<()> {
    a.mkbrtype("dev_a")?;
    a.mklbtype("REL")?;
    a.checkin("src/x.c", "main", &x_version("one"), "ann", "first")?;
    a.checkin("src/y.c", "main", b"y\n", "ann", "y")?;
    a.checkin("src/x.c", "main", &x_version("two"), "ann", "second")?;
    a.mklabel("REL", &VersionSel::parse("src/x.c@@main/1")?)?;
    Ok(())
}

fn work_at_b(b: &Rep) -> Res<()> {
    b.mkbrtype("dev_b")?;
    b.checkin("src/x.c", "dev_b", b"x on b\n", "bob", "b")?;
    b.reqmaster("lbtype:REL")?;
    Ok(())
}

fn more_work_at_a(a: &Rep) -> Res<()> {
    a.rmname("src/y.c")?;
    a.checkin("src/z.c", "dev_a", b"z\n", "ann", "z")?;
    a.mklabel("REL", &VersionSel::parse("src/x.c@@main/2")?)?;
    Ok(())
}

/// Builds the family. Deterministic: the same packets, byte for byte, on every call.
pub fn build() -> Res<Family> {
    let env: Arc<dyn Env> = Arc::new(SimEnv::new(FAMILY_SEED));
    let a = Replica::init(MemStore::new(), env.clone(), "fam", "a")?;
    let b = mkreplica_in_memory(&a, "b", env.clone())?;
    let c = mkreplica_in_memory(&a, "c", env)?;
    let importer = c.store().deep_copy();
    work_at_a(&a)?;
    sync(&a, &b)?;
    work_at_b(&b)?;
    let p1 = export(&a, &c)?;
    let p2 = export(&b, &c)?;
    more_work_at_a(&a)?;
    let p3 = export(&a, &c)?;
    let raw = vec![p1, p2, p3];
    let mut packets = Vec::new();
    for bytes in &raw {
        packets.push(decode(bytes)?);
    }
    let replicas = [&a, &b, &c].iter().map(|r| wire::Id(r.id().0)).collect();
    let mut family = Family {
        importer,
        packets,
        raw,
        replicas,
        objects: Vec::new(),
        entry_hashes: Vec::new(),
        blobs: Vec::new(),
        signers: vec![a, b],
    };
    family.collect_contents();
    Ok(family)
}

fn decode(bytes: &[u8]) -> Res<Packet> {
    let bad = |e: msite_packet::DecodeError| msite_core::CoreError::Unreadable(e.to_string());
    let r = PacketReader::new(Cursor::new(bytes)).map_err(bad)?;
    let kind = r.info().kind;
    let packet_id = r.info().packet_id;
    let header = r.header().clone();
    let records = r.records().collect::<Result<Vec<_>, _>>().map_err(bad)?;
    Ok(Packet {
        kind,
        header,
        packet_id,
        records,
    })
}

impl Family {
    /// Signs `p`'s controls owned by `a` or `b` with their owner's key, and its header with
    /// its sender's key when the sender is `a` or `b` (`c`, the importer, and strangers have no
    /// key here: what they would sign stays as it is).
    pub fn resign(&self, p: &mut Packet) {
        for c in &mut p.header.controls {
            for s in &self.signers {
                s.sign_control_for_test(c);
            }
        }
        if let Some(s) = self.signers.iter().find(|s| s.id().0 == p.header.sender.0) {
            s.sign_header_for_test(&mut p.header, p.kind, &p.packet_id);
        }
    }

    /// Writes the seed corpus into `dir`: the family's real packets and a few structured
    /// inputs (their bytes pick the packets, mutations and encodings).
    pub fn write_seeds(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (i, p) in self.raw.iter().enumerate() {
            std::fs::write(dir.join(format!("packet-{}.msp", i + 1)), p)?;
        }
        let structured: [&[u8]; 3] = [
            &[2, 0, 0, 0, 1, 0, 0, 2, 0, 0],
            &[1, 2, 0, 0, 0, 0, 0],
            &[0, 1, 9, 3, 0, 1, 1, 0, 0, 0],
        ];
        for (i, s) in structured.iter().enumerate() {
            std::fs::write(dir.join(format!("structured-{}", i + 1)), s)?;
        }
        Ok(())
    }

    /// Fills `objects`, `entry_hashes` and `blobs` from the packets.
    fn collect_contents(&mut self) {
        for rec in self.packets.iter().flat_map(|p| &p.records) {
            // `if let`, not `match`: a record kind added to the format is simply not collected.
            if let Record::Entry(bytes) = rec {
                if let Ok(e) = decode_entry(bytes) {
                    self.objects.push(wire::ObjId {
                        origin: e.origin,
                        number: e.number,
                    });
                    self.entry_hashes.push(e.hash);
                }
            }
            if let Record::Blob { hash, bytes } = rec {
                self.blobs.push((*hash, bytes.clone()));
            }
        }
        self.objects.sort();
        self.objects.dedup();
    }
}
