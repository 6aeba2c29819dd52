//! The file writer: atomic appearance, part splitting, grouping parts, reading logical packets.

use std::path::PathBuf;

use crate::common::*;
use msite_packet::wire::*;
use msite_packet::*;

fn write_split(dir: &std::path::Path, stem: &str, id_n: u8, max: u64, recs: &[Record]) -> Written {
    let opts = WriteOptions {
        max_part_size: Some(max),
        chunk_size: 4096,
        ..WriteOptions::new(id(id_n))
    };
    let mut w = PacketWriter::create(dir, stem, Kind::Update, &update_header(), opts).unwrap();
    for r in recs {
        w.push_record(r).unwrap();
    }
    w.finish().unwrap()
}

fn names(ps: &[PathBuf]) -> Vec<String> {
    ps.iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn dir_listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn single_part_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records_of(&checkins(id(2), 1, 20, 100));
    let opts = WriteOptions::new(id(9));
    let mut w =
        PacketWriter::create(dir.path(), "sync_a", Kind::Update, &update_header(), opts).unwrap();
    for r in &recs {
        w.push_record(r).unwrap();
    }
    // Nothing with a final name exists before finish.
    assert_eq!(
        dir_listing(dir.path()),
        vec![".sync_a.p1.msp.tmp".to_string()]
    );
    let written = w.finish().unwrap();
    assert_eq!(names(&written.parts), vec!["sync_a.msp"]);
    assert_eq!(dir_listing(dir.path()), vec!["sync_a.msp".to_string()]);
    assert_eq!(
        (written.records, written.entries, written.blobs),
        (40, 20, 20)
    );
    assert_eq!(
        written.bytes,
        std::fs::metadata(&written.parts[0]).unwrap().len()
    );
    assert!(written.warnings.is_empty());
    let got: Vec<Record> = open(&written.parts[0])
        .unwrap()
        .records()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, recs);
    // Never overwrites.
    let mut w = PacketWriter::create(
        dir.path(),
        "sync_a",
        Kind::Update,
        &update_header(),
        WriteOptions::new(id(9)),
    )
    .unwrap();
    w.push_record(&recs[0]).unwrap();
    assert!(matches!(w.finish(), Err(EncodeError::Exists(_))));
    assert_eq!(dir_listing(dir.path()), vec!["sync_a.msp".to_string()]);
}

#[test]
fn dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = PacketWriter::create(
        dir.path(),
        "x",
        Kind::Update,
        &update_header(),
        WriteOptions::new(id(9)),
    )
    .unwrap();
    w.push_entry(&[1, 2, 3]).unwrap();
    drop(w);
    assert_eq!(dir_listing(dir.path()), Vec::<String>::new());
}

#[test]
fn split_parts_group_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records_of(&checkins(id(2), 1, 60, 500));
    let w = write_split(dir.path(), "big", 9, 16 << 10, &recs);
    let n = w.parts.len();
    assert!(n >= 3, "expected several parts, got {n}");
    assert!(w.warnings.is_empty());
    let expect: Vec<String> = (1..=n).map(|i| format!("big.p{i}of{n}.msp")).collect();
    assert_eq!(names(&w.parts), expect);
    for (i, p) in w.parts.iter().enumerate() {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len <= 16 << 10, "part {p:?} has {len} bytes");
        let info = part_info(p).unwrap();
        assert_eq!(
            (info.part, info.parts, info.packet_id),
            (i as u32 + 1, n as u32, id(9))
        );
    }
    // Group from a shuffled list, then read in order.
    let mut shuffled = w.parts.clone();
    shuffled.reverse();
    let g = group_parts(&shuffled);
    assert!(g.unreadable.is_empty());
    assert_eq!(g.packets.len(), 1);
    let lp = &g.packets[0];
    assert!(lp.is_complete(), "{:?}", lp.problems);
    let got: Vec<Record> = lp.records().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(got, recs);
    // Each part alone is a self-contained, verifiable file.
    let total: u64 = w.parts.iter().map(|p| summarize(p).unwrap().records).sum();
    assert_eq!(total, recs.len() as u64);
}

#[test]
fn missing_duplicate_and_foreign_parts_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records_of(&checkins(id(2), 1, 40, 500));
    let w = write_split(dir.path(), "a", 9, 12 << 10, &recs);
    let n = w.parts.len() as u32;
    assert!(n >= 3);
    // Missing part 2.
    let some: Vec<PathBuf> = w
        .parts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, p)| p.clone())
        .collect();
    let g = group_parts(&some);
    let msgs: Vec<String> = g.packets[0]
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        msgs,
        vec![format!("part 2 of {n} of packet {} is missing", id(9))]
    );
    match logical_packet(&some) {
        Err(DecodeError::Parts(m)) => assert_eq!(m, msgs[0]),
        other => panic!("expected Parts error, got {other:?}"),
    }
    // Duplicate part 1 (a copy under another name).
    let copy = dir.path().join("copy.msp");
    std::fs::copy(&w.parts[0], &copy).unwrap();
    let mut dup = w.parts.clone();
    dup.push(copy.clone());
    let g = group_parts(&dup);
    assert_eq!(
        g.packets[0].problems,
        vec![PartProblem::Duplicate {
            packet: id(9),
            index: 1,
            count: n,
            paths: vec![w.parts[0].clone(), copy]
        }]
    );
    // A part of another packet among them.
    let other = write_split(dir.path(), "b", 8, 12 << 10, &recs);
    let mut mixed = w.parts.clone();
    mixed.push(other.parts[0].clone());
    match logical_packet(&mixed).map_err(|e| e.root().to_string()) {
        Err(m) => assert_eq!(
            m,
            format!(
                "part belongs to packet {}, expected a part of packet {}",
                id(8),
                id(9)
            )
        ),
        Ok(_) => panic!("mixed parts accepted"),
    }
    let mut lp = logical_packet(&w.parts).unwrap();
    lp.parts[1].1 = other.parts[1].clone();
    let err = lp.records().unwrap().find_map(|r| r.err()).unwrap();
    assert!(
        matches!(err.root(), DecodeError::WrongPacket { expected, found } if *expected == id(9) && *found == id(8)),
        "{err}"
    );
}

#[test]
fn oversized_record_gets_its_own_part_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7u8; 50_000];
    let recs = vec![
        Record::Entry(vec![1; 100]),
        Record::Blob {
            hash: h(1),
            bytes: big.clone(),
        },
        Record::Entry(vec![2; 100]),
    ];
    let opts = WriteOptions {
        max_part_size: Some(8 << 10),
        chunk_size: 1024,
        zstd_level: 0,
        ..WriteOptions::new(id(5))
    };
    let mut w =
        PacketWriter::create(dir.path(), "o", Kind::Update, &update_header(), opts).unwrap();
    for r in &recs {
        w.push_record(r).unwrap();
    }
    let w = w.finish().unwrap();
    assert_eq!(w.parts.len(), 3);
    assert_eq!(w.warnings.len(), 1, "{:?}", w.warnings);
    assert!(
        w.warnings[0].contains("part 2 holds it alone"),
        "{}",
        w.warnings[0]
    );
    let lp = logical_packet(&w.parts).unwrap();
    let got: Vec<Record> = lp.records().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(got, recs);
}

#[test]
fn empty_packet_is_one_valid_part() {
    let bytes = encode_to_vec(
        Kind::ReplicaCreation,
        &update_header(),
        Vec::new(),
        &WriteOptions::new(id(3)),
    )
    .unwrap();
    let (info, header, recs) = decode_from_slice(&bytes).unwrap();
    assert_eq!(
        (info.kind, info.parts, header, recs),
        (Kind::ReplicaCreation, 1, update_header(), vec![])
    );
}

#[test]
fn summary_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkins(id(2), 11, 3, 10);
    let b = checkins(id(3), 1, 4, 10);
    let mut recs = records_of(&a);
    recs.extend(records_of(&b));
    let w = write_split(dir.path(), "s", 9, 1 << 30, &recs);
    let s = summarize(&w.parts[0]).unwrap();
    assert_eq!(
        s,
        Summary {
            path: Some(w.parts[0].clone()),
            info: PacketInfo {
                version: FormatVersion { major: 1, minor: 0 },
                kind: Kind::Update,
                part: 1,
                parts: 1,
                packet_id: id(9)
            },
            header: update_header(),
            records: 14,
            entries: 7,
            per_origin: vec![
                OriginEntries {
                    origin: id(2),
                    entries: 3,
                    first: 11,
                    last: 13
                },
                OriginEntries {
                    origin: id(3),
                    entries: 4,
                    first: 1,
                    last: 4
                },
            ],
            blobs: 7,
            blob_bytes: 70,
            bytes: std::fs::metadata(&w.parts[0]).unwrap().len(),
        }
    );
    let es: Vec<Entry> = entries(&w.parts[0])
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<Entry> = a.iter().chain(&b).map(|(e, _)| e.clone()).collect();
    assert_eq!(es, want);
}

#[test]
fn unreadable_files_are_reported_by_group_parts() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records_of(&checkins(id(2), 1, 3, 10));
    let w = write_split(dir.path(), "g", 9, 1 << 20, &recs);
    let junk = dir.path().join("junk.msp");
    std::fs::write(
        &junk,
        b"not a packet at all, but long enough for an envelope......",
    )
    .unwrap();
    let g = group_parts(&[junk.clone(), w.parts[0].clone()]);
    assert_eq!(g.packets.len(), 1);
    assert_eq!(g.packets[0].parts, vec![(1, w.parts[0].clone())]);
    assert!(g.packets[0].is_complete());
    assert_eq!(g.unreadable.len(), 1);
    assert_eq!(g.unreadable[0].0, junk);
    assert!(matches!(
        g.unreadable[0].1.root(),
        DecodeError::BadMagic { .. }
    ));
    assert!(g.unreadable[0]
        .1
        .to_string()
        .starts_with(&junk.display().to_string()));
}

#[test]
fn bad_write_options_are_refused() {
    let h = update_header();
    let bad = |o: WriteOptions| {
        matches!(
            MemPacketWriter::new(Kind::Update, &h, o),
            Err(EncodeError::InvalidOptions(_))
        )
    };
    assert!(bad(WriteOptions {
        chunk_size: 0,
        ..WriteOptions::new(id(1))
    }));
    assert!(bad(WriteOptions {
        chunk_size: (16 << 20) + 1,
        ..WriteOptions::new(id(1))
    }));
    assert!(bad(WriteOptions {
        zstd_level: 1000,
        ..WriteOptions::new(id(1))
    }));
    assert!(bad(WriteOptions {
        max_part_size: Some(100),
        ..WriteOptions::new(id(1))
    }));
    let split = WriteOptions {
        max_part_size: Some(1 << 20),
        ..WriteOptions::new(id(1))
    };
    assert!(matches!(
        encode_to_vec(Kind::Update, &h, vec![], &split),
        Err(EncodeError::InvalidOptions(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        PacketWriter::create(
            dir.path(),
            "../up",
            Kind::Update,
            &h,
            WriteOptions::new(id(1))
        ),
        Err(EncodeError::InvalidOptions(_))
    ));
}

#[test]
fn record_much_larger_than_a_chunk_round_trips() {
    let big = crate::common::noise(5, 3 << 20);
    let recs = vec![
        Record::Blob {
            hash: h(3),
            bytes: big,
        },
        Record::Entry(vec![9; 10]),
    ];
    let opts = WriteOptions {
        chunk_size: 4096,
        ..WriteOptions::new(id(4))
    };
    let bytes = encode_to_vec(Kind::Update, &update_header(), recs.clone(), &opts).unwrap();
    let r = PacketReader::new(bytes.as_slice()).unwrap();
    let mut it = r.records();
    let got: Vec<Record> = it.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(got, recs);
    let st = it.stats();
    assert!(st.verified);
    assert_eq!(
        (st.records, st.entries, st.blobs, st.blob_bytes),
        (2, 1, 1, 3 << 20)
    );
    assert!(st.chunks > 700, "{} chunks", st.chunks);
}

#[test]
fn part_problems_are_ranges_and_bounded_lists() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records_of(&checkins(id(2), 1, 60, 500));
    let w = write_split(dir.path(), "r", 9, 8 << 10, &recs);
    let n = w.parts.len() as u32;
    assert!(n >= 5, "{n} parts");
    // Parts 1 and 3 only, part 1 five times.
    let mut given = vec![w.parts[0].clone(), w.parts[2].clone()];
    for k in 0..4 {
        let copy = dir.path().join(format!("copy{k}.msp"));
        std::fs::copy(&w.parts[0], &copy).unwrap();
        given.push(copy);
    }
    let g = group_parts(&given);
    let lp = &g.packets[0];
    assert_eq!(
        lp.problems[0],
        PartProblem::Missing {
            packet: id(9),
            ranges: vec![(2, 2), (4, n)],
            count: n
        }
    );
    let text = lp.problems_text();
    assert!(
        text.starts_with(&format!(
            "parts 2, 4-{n} of {n} of packet {} are missing ({} parts); part 1 of {n}",
            id(9),
            n - 2
        )),
        "{text}"
    );
    assert!(text.ends_with(" and 2 more"), "{text}");
}

#[cfg(unix)]
#[test]
fn fifos_are_refused_without_being_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.msp");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    // Opening a FIFO for reading would block until a writer comes: these return at once.
    for e in [
        part_info(&fifo).unwrap_err(),
        open(&fifo).err().unwrap(),
        group_parts(std::slice::from_ref(&fifo))
            .unreadable
            .pop()
            .unwrap()
            .1,
    ] {
        assert!(matches!(e.root(), DecodeError::NotRegular("a FIFO")), "{e}");
        assert!(e
            .to_string()
            .ends_with("is not a regular file (a FIFO), not a packet file"));
    }
}

#[test]
fn unfinished_parts_are_found_by_stem_prefix_only() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        ".sync_a_to_b_1_2.p1.msp.tmp",
        ".sync_a_to_b_1_2.p12.msp.tmp",
        ".sync_c_to_a_1_2.p1.msp.tmp",
        ".sync_a_to_b_1_2.px.msp.tmp",
        "sync_a_to_b_1_2.p1.msp.tmp",
        ".sync_a_to_b_1_2.p1.msp",
    ] {
        std::fs::write(dir.path().join(name), b"x").unwrap();
    }
    let found = unfinished_parts(dir.path(), "sync_a_to_").unwrap();
    assert_eq!(
        names(&found),
        [
            ".sync_a_to_b_1_2.p1.msp.tmp",
            ".sync_a_to_b_1_2.p12.msp.tmp"
        ]
    );
    assert!(unfinished_parts(&dir.path().join("none"), "x")
        .unwrap()
        .is_empty());
}
