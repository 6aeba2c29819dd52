//! Encode then decode, in memory and through files.

use crate::common::*;
use msite_packet::wire::*;
use msite_packet::*;

#[test]
fn in_memory_round_trip() {
    let items = checkins(id(2), 1, 50, 300);
    let recs = records_of(&items);
    let opts = WriteOptions {
        chunk_size: 1000,
        ..WriteOptions::new(id(9))
    };
    let bytes = encode_to_vec(Kind::Update, &update_header(), recs.clone(), &opts).unwrap();
    let (info, header, got) = decode_from_slice(&bytes).unwrap();
    assert_eq!(header, update_header());
    assert_eq!(
        info,
        PacketInfo {
            version: FormatVersion { major: 1, minor: 0 },
            kind: Kind::Update,
            part: 1,
            parts: 1,
            packet_id: id(9)
        }
    );
    assert_eq!(got, recs);
}
