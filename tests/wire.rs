//! Pins the wire format byte for byte: if one of these changes, docs/PROTOCOL.md and every other client change too.

use bytes::BytesMut;
use peershare::content::ContentId;
use peershare::protocol::{Frame, GetPiece, Hello, MAX_FRAME_LEN, Message, Piece, tag};

fn frame_bytes(m: &Message) -> Vec<u8> {
    let payload = m.encode_payload().unwrap();
    let mut v = Frame::header(m.tag(), payload.len()).unwrap().to_vec();
    v.extend_from_slice(&payload);
    v
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn round_trip(m: &Message) {
    let mut buf = BytesMut::from(&frame_bytes(m)[..]);
    let f = Frame::parse(&mut buf).unwrap().unwrap();
    assert_eq!(&Message::decode(f).unwrap(), m);
    assert!(buf.is_empty());
}

#[test]
fn hello_frame_hexdump() {
    let m = Message::Hello(Hello {
        version_min: 1,
        version_max: 1,
        agent: "peershare/0.1.0".into(),
    });
    let want = "00 00 00 32 01 83 \
                ab 76 65 72 73 69 6f 6e 5f 6d 69 6e 01 \
                ab 76 65 72 73 69 6f 6e 5f 6d 61 78 01 \
                a5 61 67 65 6e 74 \
                af 70 65 65 72 73 68 61 72 65 2f 30 2e 31 2e 30";
    assert_eq!(
        hex(&frame_bytes(&m)),
        want.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    round_trip(&m);
}

#[test]
fn get_piece_frame_hexdump() {
    let m = Message::GetPiece(GetPiece {
        content_id: ContentId::from_bytes([0x11; 32]),
        index: 300,
    });
    let mut want = String::from("00 00 00 38 44 82 aa 63 6f 6e 74 65 6e 74 5f 69 64 c4 20");
    for _ in 0..32 {
        want.push_str(" 11");
    }
    want.push_str(" a5 69 6e 64 65 78 cd 01 2c");
    assert_eq!(hex(&frame_bytes(&m)), want);
    round_trip(&m);
}

#[test]
fn piece_frame_is_raw() {
    let m = Message::Piece(Piece {
        index: 2,
        data: bytes::Bytes::from_static(b"abc"),
    });
    assert_eq!(hex(&frame_bytes(&m)), "00 00 00 08 45 00 00 00 02 61 62 63");
    round_trip(&m);
}

#[test]
fn tags_never_shift_and_the_frame_limit_follows_the_piece_size() {
    let tags = [
        (tag::HELLO, 0x01),
        (tag::WELCOME, 0x02),
        (tag::ERROR, 0x03),
        (tag::REGISTER, 0x10),
        (tag::REGISTERED, 0x11),
        (tag::UPDATE_FILES, 0x12),
        (tag::ACK, 0x13),
        (tag::HEARTBEAT, 0x14),
        (tag::UNREGISTER, 0x15),
        (tag::SEARCH, 0x20),
        (tag::SEARCH_RESULTS, 0x21),
        (tag::LIST_PEERS, 0x22),
        (tag::PEER_LIST, 0x23),
        (tag::GET_INFO, 0x40),
        (tag::INFO, 0x41),
        (tag::GET_HASHES, 0x42),
        (tag::HASHES, 0x43),
        (tag::GET_PIECE, 0x44),
        (tag::PIECE, 0x45),
    ];
    for (got, want) in tags {
        assert_eq!(got, want);
    }
    assert_eq!(MAX_FRAME_LEN, 1 + 1024 * 1024);
    assert_eq!(hex(&frame_bytes(&Message::Heartbeat)), "00 00 00 02 14 80");
}
