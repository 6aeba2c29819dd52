//! Bad input: every truncation and every single-byte corruption of every golden fixture is
//! refused cleanly (an error, never a panic, never a clean end), and each kind of bad file gets
//! its typed error with a message naming the file.

use std::path::Path;

use crate::golden::fixture_files;
use msite_packet::*;

/// Reads a whole part from memory, draining the records: the only clean outcome is `Ok`.
fn read_all(bytes: &[u8]) -> Result<u64, DecodeError> {
    let r = PacketReader::new(bytes)?;
    let mut recs = r.records();
    recs.verify_rest().map(|s| s.records)
}

#[test]
fn fixtures_are_valid() {
    for f in fixture_files() {
        let b = std::fs::read(&f).unwrap();
        assert!(read_all(&b).unwrap() > 0, "{}", f.display());
    }
}

#[test]
fn every_truncation_is_refused() {
    for f in fixture_files() {
        let b = std::fs::read(&f).unwrap();
        for len in 0..b.len() {
            match read_all(&b[..len]) {
                Err(DecodeError::Empty) => assert_eq!(len, 0),
                Err(DecodeError::Truncated { offset, .. }) => {
                    assert_eq!(offset, len as u64, "{}", f.display())
                }
                other => panic!(
                    "{} cut at {len}: expected Truncated, got {other:?}",
                    f.display()
                ),
            }
        }
    }
}

#[test]
fn every_byte_flip_is_refused() {
    for f in fixture_files() {
        let b = std::fs::read(&f).unwrap();
        for at in 0..b.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut c = b.clone();
                c[at] ^= mask;
                assert!(
                    read_all(&c).is_err(),
                    "{}: flip {mask:#x} at {at} accepted",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    for f in fixture_files() {
        let mut b = std::fs::read(&f).unwrap();
        let n = b.len() as u64;
        b.extend_from_slice(b"junk");
        assert!(matches!(read_all(&b), Err(DecodeError::TrailingBytes { offset }) if offset == n));
    }
}

/// What a bad file's error must be.
type Expect = fn(&DecodeError) -> bool;

fn open_err(p: &Path) -> DecodeError {
    match open(p) {
        Ok(r) => match r.records().find_map(|r| r.err()) {
            Some(e) => e,
            None => panic!("{} read cleanly", p.display()),
        },
        Err(e) => e,
    }
}

#[test]
fn bad_files_get_typed_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(&fixture_files()[0]).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let cases: Vec<(std::path::PathBuf, Expect)> = vec![
        (write("empty.msp", b""), |e| matches!(e, DecodeError::Empty)),
        (write("text.msp", b"hello, this is not a packet\n"), |e| {
            matches!(e, DecodeError::BadMagic { .. })
        }),
        (write("short.msp", &good[..30]), |e| {
            matches!(
                e,
                DecodeError::Truncated {
                    offset: 30,
                    what: "envelope"
                }
            )
        }),
        (write("junk.msp", &[good.as_slice(), b"x"].concat()), |e| {
            matches!(e, DecodeError::TrailingBytes { .. })
        }),
        (
            write("chunk.msp", &{
                let mut c = good.clone();
                let n = c.len();
                c[n - 100] ^= 4;
                c
            }),
            |e| matches!(e, DecodeError::Checksum { what: "chunk", .. }),
        ),
        (
            write("header.msp", &{
                let mut c = good.clone();
                c[60] ^= 4;
                c
            }),
            |e| matches!(e, DecodeError::Checksum { what: "header", .. }),
        ),
        (
            write("trailer.msp", &{
                let mut c = good.clone();
                let n = c.len();
                c[n - 40] ^= 4;
                c
            }),
            |e| {
                matches!(
                    e,
                    DecodeError::Checksum {
                        what: "part hash",
                        ..
                    }
                )
            },
        ),
        (
            write("envelope.msp", &{
                let mut c = good.clone();
                c[20] ^= 4;
                c
            }),
            |e| {
                matches!(
                    e,
                    DecodeError::Checksum {
                        what: "envelope",
                        ..
                    }
                )
            },
        ),
        (dir.path().to_path_buf(), |e| {
            matches!(e, DecodeError::IsDirectory)
        }),
        (dir.path().join("absent.msp"), |e| {
            matches!(e, DecodeError::Io(_))
        }),
    ];
    for (p, ok) in cases {
        let e = open_err(&p);
        assert!(ok(e.root()), "{}: unexpected {e:?}", p.display());
        match &e {
            DecodeError::File { path, .. } => assert_eq!(path, &p),
            _ => panic!("{}: error does not name the file: {e:?}", p.display()),
        }
        assert!(e.to_string().starts_with(&p.display().to_string()), "{e}");
        // The same through summarize.
        let s = summarize(&p).unwrap_err();
        assert!(ok(s.root()), "{}: summarize gave {s:?}", p.display());
    }
}
