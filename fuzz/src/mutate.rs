//! Structured mutations of a decoded packet, driven by the fuzzer's bytes.
//!
//! Each mutation changes one thing the protocol reads: a record dropped, duplicated, moved or
//! cut off; an entry's field (origin, number, incarnation, chain link, operation); a new entry;
//! a blob's bytes or a delta's frame, base or size; a header field (incarnations, targets and their reports, bases, the sender
//! row, control records, the keys, signed chain heads and signature of format 1.2, the age
//! recipients of 1.4). Entry hashes are recomputed unless the input asks to keep a stale
//! one, and [`rechain`] can relink every origin's entries in the packet, so that a mutation
//! reaches the apply logic instead of the first hash check.

use arbitrary::{Result, Unstructured};
use msite_packet::{decode_entry, encode_entry, entry_hash, wire, Record};

use crate::family::{Family, Packet};

/// Applies one mutation chosen by `u`.
pub fn mutate(u: &mut Unstructured<'_>, p: &mut Packet, f: &Family) -> Result<()> {
    let n = p.records.len();
    match u.int_in_range(0u8..=9)? {
        0 if n > 0 => {
            let i = u.choose_index(n)?;
            p.records.remove(i);
        }
        1 if n > 0 => {
            let i = u.choose_index(n)?;
            let j = u.choose_index(n + 1)?;
            let r = p.records[i].clone();
            p.records.insert(j, r);
        }
        2 if n > 1 => {
            let (i, j) = (u.choose_index(n)?, u.choose_index(n)?);
            p.records.swap(i, j);
        }
        3 if n > 0 => {
            let i = u.choose_index(n)?;
            p.records.truncate(i);
        }
        4 => mutate_entry(u, p, f)?,
        5 => insert_entry(u, p, f)?,
        6 => mutate_blob(u, p, f)?,
        7 => mutate_header(u, &mut p.header, f)?,
        8 => mutate_controls(u, &mut p.header, f)?,
        _ => mutate_trust(u, &mut p.header, f)?,
    }
    Ok(())
}

/// Relinks the entries of each origin that follow each other in the packet (`prev` set to
/// the hash of the origin's previous entry in the packet) and recomputes their hashes.
pub fn rechain(p: &mut Packet) {
    let mut last: Vec<(wire::Id, u64, wire::Hash)> = Vec::new();
    for rec in &mut p.records {
        let Record::Entry(bytes) = rec else { continue };
        let Ok(mut e) = decode_entry(bytes) else {
            continue;
        };
        if let Some(l) = last.iter_mut().find(|l| l.0 == e.origin) {
            if e.number == l.1.wrapping_add(1) {
                e.prev = l.2;
            }
        }
        e.hash = entry_hash(&e);
        *bytes = encode_entry(&e);
        match last.iter_mut().find(|l| l.0 == e.origin) {
            Some(l) => *l = (e.origin, e.number, e.hash),
            None => last.push((e.origin, e.number, e.hash)),
        }
    }
}

fn entry_indices(p: &Packet) -> Vec<usize> {
    (0..p.records.len())
        .filter(|i| matches!(p.records[*i], Record::Entry(_)))
        .collect()
}

fn mutate_entry(u: &mut Unstructured<'_>, p: &mut Packet, f: &Family) -> Result<()> {
    let idx = entry_indices(p);
    if idx.is_empty() {
        return Ok(());
    }
    let i = idx[u.choose_index(idx.len())?];
    let Record::Entry(bytes) = &p.records[i] else {
        return Ok(());
    };
    let Ok(mut e) = decode_entry(bytes) else {
        return Ok(());
    };
    match u.int_in_range(0u8..=5)? {
        0 => e.origin = replica(u, f)?,
        1 => e.number = number(u, e.number)?,
        2 => e.incarnation = number(u, e.incarnation)?,
        3 => e.time_ms = u.arbitrary()?,
        4 => e.prev = hash(u, f)?,
        _ => e.op = op(u, f)?,
    }
    if !u.ratio(1u8, 8)? {
        e.hash = entry_hash(&e);
    }
    p.records[i] = Record::Entry(encode_entry(&e));
    Ok(())
}

fn insert_entry(u: &mut Unstructured<'_>, p: &mut Packet, f: &Family) -> Result<()> {
    let origin = replica(u, f)?;
    let last = p
        .records
        .iter()
        .rev()
        .filter_map(|r| match r {
            Record::Entry(b) => decode_entry(b).ok(),
            _ => None,
        })
        .find(|e| e.origin == origin);
    let (number, prev) = match &last {
        Some(l) => (l.number.wrapping_add(1), l.hash),
        None => (u.int_in_range(1u64..=12)?, hash(u, f)?),
    };
    let mut e = wire::Entry {
        origin,
        number,
        incarnation: u.int_in_range(0u64..=2)?,
        time_ms: u.arbitrary()?,
        prev,
        op: op(u, f)?,
        hash: [0; 32],
    };
    e.hash = entry_hash(&e);
    let at = u.choose_index(p.records.len() + 1)?;
    p.records.insert(at, Record::Entry(encode_entry(&e)));
    Ok(())
}

/// Changes a content record: a blob's bytes (and perhaps its hash to match), or a delta's
/// frame, base (another content the family carries, or any hash) or declared size.
fn mutate_blob(u: &mut Unstructured<'_>, p: &mut Packet, f: &Family) -> Result<()> {
    let idx: Vec<usize> = (0..p.records.len())
        .filter(|i| matches!(p.records[*i], Record::Blob { .. } | Record::Delta { .. }))
        .collect();
    if idx.is_empty() {
        return Ok(());
    }
    let i = idx[u.choose_index(idx.len())?];
    match &mut p.records[i] {
        Record::Blob { hash, bytes } => {
            let new: Vec<u8> = u.arbitrary()?;
            *bytes = new;
            if u.arbitrary()? {
                *hash = *blake3::hash(bytes).as_bytes();
            }
        }
        Record::Delta {
            base, size, frame, ..
        } => match u.int_in_range(0u8..=2)? {
            0 => *frame = u.arbitrary()?,
            1 if !f.blobs.is_empty() && u.arbitrary()? => {
                *base = f.blobs[u.choose_index(f.blobs.len())?].0;
            }
            1 => *base = u.arbitrary()?,
            _ => *size = u.arbitrary()?,
        },
        _ => {}
    }
    Ok(())
}

fn mutate_header(u: &mut Unstructured<'_>, h: &mut wire::Header, f: &Family) -> Result<()> {
    match u.int_in_range(0u8..=7)? {
        0 => h.sender_incarnation = number(u, h.sender_incarnation)?,
        1 => h.sender = replica(u, f)?,
        2 => h.family = wire::Id(u.arbitrary()?),
        3 => {
            if let Some(t) = pick(u, &mut h.targets)? {
                mutate_target(u, t)?;
            }
        }
        4 => {
            if let Some(b) = pick(u, &mut h.bases)? {
                b.number = number(u, b.number)?;
                b.hash = hash(u, f)?;
            }
        }
        5 => h.bases.push(wire::Base {
            origin: replica(u, f)?,
            number: u.int_in_range(0u64..=12)?,
            hash: hash(u, f)?,
        }),
        6 => {
            if let Some(c) = pick(u, &mut h.sender_row)? {
                c.number = number(u, c.number)?;
            }
        }
        _ => h.sender_row.push(wire::RowCell {
            origin: replica(u, f)?,
            number: u.int_in_range(0u64..=12)?,
        }),
    }
    Ok(())
}

/// One change to what format 1.2 signs with: a head dropped, moved, given another hash or
/// origin; a key replaced, dropped or given to another replica; the signature cleared or
/// damaged. (`drive` signs the header again afterwards, unless the input asks not to.)
fn mutate_trust(u: &mut Unstructured<'_>, h: &mut wire::Header, f: &Family) -> Result<()> {
    match u.int_in_range(0u8..=9)? {
        0 if !h.heads.is_empty() => {
            let i = u.choose_index(h.heads.len())?;
            h.heads.remove(i);
        }
        1 => {
            if let Some(x) = pick(u, &mut h.heads)? {
                x.number = number(u, x.number)?;
            }
        }
        2 => {
            if let Some(x) = pick(u, &mut h.heads)? {
                x.hash = hash(u, f)?;
            }
        }
        3 => {
            if let Some(x) = pick(u, &mut h.heads)? {
                x.origin = replica(u, f)?;
            }
        }
        4 => {
            if let Some(k) = pick(u, &mut h.keys)? {
                k.key = u.arbitrary()?;
            }
        }
        5 if !h.keys.is_empty() => {
            let i = u.choose_index(h.keys.len())?;
            h.keys.remove(i);
        }
        6 => {
            if let Some(k) = pick(u, &mut h.keys)? {
                k.replica = replica(u, f)?;
            }
        }
        // trust2 (1.4): a replica's age recipient and its signature.
        7 => {
            if let Some(k) = pick(u, &mut h.keys)? {
                let signature = k.recipient.as_ref().map_or(Ok([0; 64]), |_| signature(u))?;
                k.recipient = Some(wire::SignedRecipient {
                    recipient: name(u)?,
                    signature,
                    introduction: None,
                });
            }
        }
        8 => {
            if let Some(r) = pick(u, &mut h.keys)?.and_then(|k| k.recipient.as_mut()) {
                r.signature = signature(u)?;
            }
        }
        _ => {
            let i = u.choose_index(64)?;
            h.signature[i] ^= u.int_in_range(1u8..=255)?;
        }
    }
    Ok(())
}

fn mutate_target(u: &mut Unstructured<'_>, t: &mut wire::Target) -> Result<()> {
    match u.int_in_range(0u8..=4)? {
        0 => t.incarnation = number(u, t.incarnation)?,
        1 => t.packet_seq = number(u, t.packet_seq)?,
        2 => t.ack_incarnation = number(u, t.ack_incarnation)?,
        3 => t.applied_seq = number(u, t.applied_seq)?,
        _ => t.seen_seq = number(u, t.seen_seq)?,
    }
    Ok(())
}

fn mutate_controls(u: &mut Unstructured<'_>, h: &mut wire::Header, f: &Family) -> Result<()> {
    if !h.controls.is_empty() && u.arbitrary()? {
        let i = u.choose_index(h.controls.len())?;
        h.controls.remove(i);
        return Ok(());
    }
    let c = if u.arbitrary()? {
        wire::Control::RestoreRequest {
            replica: replica(u, f)?,
            incarnation: u.int_in_range(0u64..=3)?,
            row: row(u, f)?,
            signature: wire::NO_SIGNATURE,
        }
    } else {
        wire::Control::ProvisionalAck {
            acker: replica(u, f)?,
            replica: replica(u, f)?,
            incarnation: u.int_in_range(0u64..=3)?,
            held: u.int_in_range(0u64..=12)?,
            signature: wire::NO_SIGNATURE,
        }
    };
    h.controls.push(c);
    Ok(())
}

fn pick<'a, T>(u: &mut Unstructured<'_>, v: &'a mut [T]) -> Result<Option<&'a mut T>> {
    if v.is_empty() {
        return Ok(None);
    }
    let i = u.choose_index(v.len())?;
    Ok(v.get_mut(i))
}

/// A number near `old` most of the time, sometimes anything.
fn number(u: &mut Unstructured<'_>, old: u64) -> Result<u64> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 => old.wrapping_add(1),
        1 => old.wrapping_sub(1),
        2 => 0,
        3 => u.int_in_range(0u64..=16)?,
        _ => u.arbitrary()?,
    })
}

/// One of the family's replicas, or (rarely) a stranger.
fn replica(u: &mut Unstructured<'_>, f: &Family) -> Result<wire::Id> {
    if u.ratio(1u8, 8)? {
        return Ok(wire::Id(u.arbitrary()?));
    }
    Ok(*u.choose(&f.replicas)?)
}

/// A hash the family knows (an entry's or a blob's), zeros, or anything.
fn hash(u: &mut Unstructured<'_>, f: &Family) -> Result<wire::Hash> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => [0; 32],
        1 if !f.blobs.is_empty() => u.choose(&f.blobs)?.0,
        2 if !f.entry_hashes.is_empty() => *u.choose(&f.entry_hashes)?,
        _ => u.arbitrary()?,
    })
}

fn object_id(u: &mut Unstructured<'_>, f: &Family) -> Result<wire::ObjId> {
    if f.objects.is_empty() || u.ratio(1u8, 8)? {
        return Ok(wire::ObjId {
            origin: replica(u, f)?,
            number: u.int_in_range(0u64..=16)?,
        });
    }
    Ok(*u.choose(&f.objects)?)
}

fn object_ref(u: &mut Unstructured<'_>, f: &Family) -> Result<wire::ObjectRef> {
    let kind = *u.choose(&[
        wire::ObjectKind::Replica,
        wire::ObjectKind::BrType,
        wire::ObjectKind::LbType,
        wire::ObjectKind::Element,
        wire::ObjectKind::Branch,
    ])?;
    Ok(wire::ObjectRef {
        kind,
        id: object_id(u, f)?,
        sub: object_id(u, f)?,
    })
}

fn row(u: &mut Unstructured<'_>, f: &Family) -> Result<wire::Row> {
    let mut row = Vec::new();
    for id in &f.replicas {
        if u.arbitrary()? {
            row.push(wire::RowCell {
                origin: *id,
                number: u.int_in_range(0u64..=12)?,
            });
        }
    }
    Ok(row)
}

fn name(u: &mut Unstructured<'_>) -> Result<String> {
    let names = [
        "main", "dev_a", "dev_b", "REL", "src/x.c", "src/y.c", "new", "",
    ];
    Ok(if u.ratio(1u8, 8)? {
        u.arbitrary()?
    } else {
        u.choose(&names)?.to_string()
    })
}

fn op(u: &mut Unstructured<'_>, f: &Family) -> Result<wire::Op> {
    Ok(match u.int_in_range(0u8..=17)? {
        0 => wire::Op::CreateFamily {
            family: wire::Id(u.arbitrary()?),
            family_name: name(u)?,
            replica_name: name(u)?,
        },
        1 => wire::Op::CreateReplica {
            replica: replica(u, f)?,
            name: name(u)?,
            row: row(u, f)?,
        },
        2 => wire::Op::MkBrType { name: name(u)? },
        3 => wire::Op::MkLbType { name: name(u)? },
        4 => wire::Op::MkElem {
            path: name(u)?,
            main: object_id(u, f)?,
        },
        5 => checkin(u, f)?,
        6 => wire::Op::MkLabel {
            lbtype: object_id(u, f)?,
            elem: object_id(u, f)?,
            brtype: object_id(u, f)?,
            version: u.int_in_range(0u64..=3)?,
        },
        7 => wire::Op::RmLabel {
            lbtype: object_id(u, f)?,
            elem: object_id(u, f)?,
        },
        8 => wire::Op::RmName {
            elem: object_id(u, f)?,
        },
        9 => wire::Op::ChMaster {
            object: object_ref(u, f)?,
            master: replica(u, f)?,
        },
        10 => wire::Op::ReqMaster {
            object: object_ref(u, f)?,
            requester: replica(u, f)?,
        },
        11 => wire::Op::RestoreAck {
            replica: replica(u, f)?,
            incarnation: u.int_in_range(0u64..=3)?,
            held: u.int_in_range(0u64..=12)?,
        },
        12 => wire::Op::RestoreComplete {
            incarnation: u.int_in_range(0u64..=3)?,
            row: row(u, f)?,
        },
        13 => wire::Op::RmReplica {
            replica: replica(u, f)?,
            last: u.int_in_range(0u64..=12)?,
        },
        14 => wire::Op::DenyMaster {
            object: object_ref(u, f)?,
            requester: replica(u, f)?,
        },
        // Key changes (issue #20): a rotation with an arbitrary key and proof, a vouch.
        15 => wire::Op::RotateKey {
            key: u.arbitrary()?,
            proof: signature(u)?,
        },
        16 => wire::Op::VouchKey {
            replica: replica(u, f)?,
            key: u.arbitrary()?,
            from: u.int_in_range(0u64..=12)?,
        },
        // trust2 (1.4): the family's sealing policy.
        _ => wire::Op::SealPolicy {
            always: u.arbitrary()?,
        },
    })
}

fn signature(u: &mut Unstructured<'_>) -> Result<wire::Signature> {
    let mut s = [0u8; 64];
    u.fill_buffer(&mut s)?;
    Ok(s)
}

fn checkin(u: &mut Unstructured<'_>, f: &Family) -> Result<wire::Op> {
    let (content, size) = match f.blobs.is_empty() || u.ratio(1u8, 8)? {
        true => (hash(u, f)?, u.int_in_range(0u64..=64)?),
        false => {
            let b = u.choose(&f.blobs)?;
            (b.0, b.1.len() as u64)
        }
    };
    Ok(wire::Op::Checkin {
        elem: object_id(u, f)?,
        brtype: object_id(u, f)?,
        version: u.int_in_range(0u64..=4)?,
        content,
        size,
        author: name(u)?,
        comment: name(u)?,
    })
}
