//! Pins the wire format byte for byte: if one of these changes, docs/PROTOCOL.md and every other client change too.

use bytes::BytesMut;
use peershare::content::ContentId;
use peershare::content::Digest;
use peershare::protocol::*;

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
fn search_with_filters_frame_hexdump() {
    // Filters and the offset follow `limit`, each left out when unset (so a plain search is
    // the version 1 bytes).
    let m = Message::Search(Search {
        query: "a".into(),
        limit: 10,
        exts: vec!["pdf".into()],
        min_size: Some(1024),
        newer: Some(1_700_000_000),
        offset: 100,
        ..Search::default()
    });
    let want = "00 00 00 3a 20 86 \
                a5 71 75 65 72 79 a1 61 \
                a5 6c 69 6d 69 74 0a \
                a4 65 78 74 73 91 a3 70 64 66 \
                a8 6d 69 6e 5f 73 69 7a 65 cd 04 00 \
                a5 6e 65 77 65 72 ce 65 53 f1 00 \
                a6 6f 66 66 73 65 74 64";
    assert_eq!(
        hex(&frame_bytes(&m)),
        want.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    round_trip(&m);
    let plain = Message::Search(Search {
        query: "a".into(),
        limit: 10,
        ..Search::default()
    });
    assert_eq!(
        hex(&frame_bytes(&plain)),
        "00 00 00 11 20 82 a5 71 75 65 72 79 a1 61 a5 6c 69 6d 69 74 0a"
    );
}

#[test]
fn hello_frame_hexdump() {
    // A Hello without features (as a client written before features, or one wanting none,
    // sends it): the version 1 bytes.
    let m = Message::Hello(Hello {
        version_min: 1,
        version_max: 1,
        agent: "peershare/0.1.0".into(),
        features: vec![],
        membership: None,
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
fn volunteer_relay_frames_hexdump() {
    let m = Message::RelayVia(relay::RelayVia {
        token: relay::RelayToken([1; 16]),
        addr: "203.0.113.9:4000".into(),
        key: Digest([2; 32]),
    });
    // Tag 0x26, a map of 3: token bin 16 (c4 10), addr str 16 (b0), key bin 32 (c4 20).
    let want = format!(
        "00 00 00 56 26 83 a5 74 6f 6b 65 6e c4 10 {} \
         a4 61 64 64 72 b0 32 30 33 2e 30 2e 31 31 33 2e 39 3a 34 30 30 30 \
         a3 6b 65 79 c4 20 {}",
        ["01"; 16].join(" "),
        ["02"; 32].join(" ")
    );
    assert_eq!(
        hex(&frame_bytes(&m)),
        want.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    round_trip(&m);
    // A carry order: kind "carry" and `to`; `via` and `via_key` left out.
    let m = Message::Incoming(relay::Incoming {
        token: relay::RelayToken([1; 16]),
        from: Digest([3; 32]),
        kind: "carry".into(),
        to: Some(Digest([4; 32])),
        via: None,
        via_key: None,
    });
    let want = format!(
        "00 00 00 71 19 84 a5 74 6f 6b 65 6e c4 10 {} \
         a4 66 72 6f 6d c4 20 {} \
         a4 6b 69 6e 64 a5 63 61 72 72 79 \
         a2 74 6f c4 20 {}",
        ["01"; 16].join(" "),
        ["03"; 32].join(" "),
        ["04"; 32].join(" ")
    );
    assert_eq!(
        hex(&frame_bytes(&m)),
        want.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    round_trip(&m);
    // Register with `relay`: the field is sent only when true.
    let r = |relay| {
        Message::Register(Register {
            public_key: Digest([1; 32]),
            signature: vec![2; 64],
            host: String::new(),
            port: 7,
            catalog_digest: Digest([3; 32]),
            file_count: 1,
            ephemeral: false,
            relay,
            via: false,
        })
    };
    let (off, on) = (frame_bytes(&r(false)), frame_bytes(&r(true)));
    assert_eq!(hex(&on[on.len() - 7..]), "a5 72 65 6c 61 79 c3");
    assert_eq!(on.len(), off.len() + 7);
    round_trip(&r(true));
    // The relay fields of Incoming and RelayConnect.
    round_trip(&Message::Incoming(relay::Incoming {
        token: relay::RelayToken([4; 16]),
        from: Digest([5; 32]),
        kind: "relay".into(),
        to: None,
        via: Some("[2001:db8::9]:4000".into()),
        via_key: Some(Digest([9; 32])),
    }));
    round_trip(&Message::RelayConnect(relay::RelayConnect {
        peer_id: None,
        key: Some(Digest([6; 32])),
        avoid: vec![Digest([9; 32])],
        via: true,
    }));
}

#[test]
fn browse_and_listing_frames_hexdump() {
    let m = Message::Browse(Browse {
        peer_id: 3,
        path: "docs".into(),
        recursive: false,
        offset: 0,
        limit: 100,
    });
    // A map of 5: peer_id 3, path "docs", recursive false, offset 0, limit 100.
    let want = "00 00 00 2f 24 85 \
                a7 70 65 65 72 5f 69 64 03 \
                a4 70 61 74 68 a4 64 6f 63 73 \
                a9 72 65 63 75 72 73 69 76 65 c2 \
                a6 6f 66 66 73 65 74 00 \
                a5 6c 69 6d 69 74 64";
    assert_eq!(
        hex(&frame_bytes(&m)),
        want.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    round_trip(&m);
    let m = Message::Listing(Listing {
        peer_id: 3,
        path: "".into(),
        file: false,
        dirs: vec![DirEntry {
            name: "a".into(),
            size: 300,
            files: 2,
        }],
        files: vec![],
        total: 1,
        next: None,
    });
    // A map of 7; the DirEntry a map of 3 (size 300 = cd 01 2c); next nil (c0).
    let want = "00 00 00 48 25 87 \
                a7 70 65 65 72 5f 69 64 03 \
                a4 70 61 74 68 a0 \
                a4 66 69 6c 65 c2 \
                a4 64 69 72 73 91 83 a4 6e 61 6d 65 a1 61 a4 73 69 7a 65 cd 01 2c a5 66 69 6c 65 73 02 \
                a5 66 69 6c 65 73 90 \
                a5 74 6f 74 61 6c 01 \
                a4 6e 65 78 74 c0";
    assert_eq!(
        hex(&frame_bytes(&m)),
        want.split_whitespace().collect::<Vec<_>>().join(" ")
    );
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

/// The spec's table (docs/PROTOCOL.md §3), written out apart from the code's table: a tag that
/// moves, a message renamed or one missing from either fails here.
const SPEC: [(&str, u8); 36] = [
    ("Hello", 0x01),
    ("Welcome", 0x02),
    ("Error", 0x03),
    ("Register", 0x10),
    ("Registered", 0x11),
    ("UpdateFiles", 0x12),
    ("Ack", 0x13),
    ("Heartbeat", 0x14),
    ("Unregister", 0x15),
    ("Join", 0x16),
    ("Joined", 0x17),
    ("Listen", 0x18),
    ("Incoming", 0x19),
    ("RelayConnect", 0x1a),
    ("RelayAccept", 0x1b),
    ("Relayed", 0x1c),
    ("PunchRequest", 0x1d),
    ("PunchGo", 0x1e),
    ("PunchListen", 0x1f),
    ("Search", 0x20),
    ("SearchResults", 0x21),
    ("ListPeers", 0x22),
    ("PeerList", 0x23),
    ("Browse", 0x24),
    ("Listing", 0x25),
    ("RelayVia", 0x26),
    ("GetInfo", 0x40),
    ("Info", 0x41),
    ("GetHashes", 0x42),
    ("Hashes", 0x43),
    ("GetPiece", 0x44),
    ("Piece", 0x45),
    ("GetHave", 0x46),
    ("Have", 0x47),
    ("CatalogQuery", 0x50),
    ("CatalogResults", 0x51),
];

/// One message of every kind, with fields that are not all defaults.
/// A membership certificate as a private index issues it (fixed keys: its bytes are fixed).
fn cert() -> Membership {
    let index = peershare::identity::Identity::from_secret([7; 32]);
    let member = peershare::identity::Identity::from_secret([9; 32]);
    Membership::issue(&index, member.public_key(), 1_800_000_000_000)
}

fn one_of_each() -> Vec<Message> {
    let id = ContentId::from_bytes([0x22; 32]);
    let hit = FileHit {
        name: "a.txt".into(),
        size: 5,
        content_id: id,
        peers: vec![PeerHit {
            peer_id: 3,
            host: "10.0.0.1".into(),
            port: 4000,
            key: Some(Digest([5; 32])),
            shared_at: 1,
            last_seen: 2,
            have: Some(vec![0x80]),
            path: Some("docs/a.txt".into()),
            reach: None,
        }],
    };
    vec![
        Message::Hello(Hello {
            version_min: 1,
            version_max: 1,
            agent: "x".into(),
            features: vec![feature::HAVE.into()],
            membership: None,
        }),
        Message::Welcome(Welcome {
            version: 1,
            agent: "y".into(),
            nonce: Digest([9; 32]),
            features: vec![feature::CATALOG.into()],
            membership: Some(cert()),
            revoked: Some(vec![Digest([4; 32])]),
        }),
        Message::Error(ErrorReply::new(ErrorCode::Busy, "busy")),
        Message::Register(Register {
            public_key: Digest([1; 32]),
            signature: vec![2; 64],
            host: String::new(),
            port: 7,
            catalog_digest: Digest([3; 32]),
            file_count: 1,
            ephemeral: true,
            relay: false,
            via: false,
        }),
        Message::Registered(Registered {
            peer_id: 4,
            in_sync: false,
            lease_secs: 90,
            host: "10.0.0.2".into(),
            observed: None,
            reach: None,
            relay: None,
        }),
        Message::UpdateFiles(UpdateFiles {
            reset: true,
            upsert: vec![FileEntry {
                path: "d/a.txt".into(),
                name: "a.txt".into(),
                size: 5,
                content_id: id,
                mtime: 6,
                have: None,
            }],
            remove: vec!["old".into()],
            digest: Some(Digest([5; 32])),
        }),
        Message::Ack(Ack {
            files: 1,
            membership: Some(cert()),
            revoked: Some(vec![Digest([8; 32])]),
        }),
        Message::Heartbeat,
        Message::Unregister,
        Message::Join(Join {
            secret: vec![3; 32],
        }),
        Message::Joined(Joined {
            membership: cert(),
            dht_secret: vec![6; 32],
        }),
        Message::Listen,
        Message::Incoming(relay::Incoming {
            token: relay::RelayToken([4; 16]),
            from: Digest([5; 32]),
            kind: "relay".into(),
            to: None,
            via: None,
            via_key: None,
        }),
        Message::RelayConnect(relay::RelayConnect {
            peer_id: Some(3),
            key: Some(Digest([6; 32])),
            avoid: Vec::new(),
            via: false,
        }),
        Message::RelayAccept(relay::RelayAccept {
            token: relay::RelayToken([4; 16]),
        }),
        Message::Relayed(relay::Relayed {
            peer: Digest([7; 32]),
            addr: Some("203.0.113.5:4000".into()),
        }),
        Message::PunchRequest(PunchRequest { peer_id: 3 }),
        Message::PunchGo(PunchGo {
            addr: "203.0.113.7:50001".into(),
            key: vec![8; 32],
            observed: Some("198.51.100.2:6000".into()),
        }),
        Message::PunchListen(PunchListen {
            observed: Some("198.51.100.3:40000".into()),
        }),
        Message::Search(Search {
            query: "a -b \"c d\"".into(),
            limit: 10,
            exts: vec!["pdf".into()],
            min_size: Some(1),
            max_size: Some(2),
            newer: Some(-3),
            older: Some(4),
            offset: 100,
        }),
        Message::SearchResults(SearchResults {
            files: vec![hit],
            truncated: true,
            total: 7,
            estimated: false,
        }),
        Message::ListPeers,
        Message::PeerList(PeerList {
            peers: vec![PeerRecord {
                peer_id: 3,
                host: "10.0.0.1".into(),
                port: 4000,
                files: 1,
                last_seen: 2,
                live: true,
            }],
        }),
        Message::Browse(Browse {
            peer_id: 3,
            path: "docs".into(),
            recursive: true,
            offset: 2,
            limit: 10,
        }),
        Message::Listing(Listing {
            peer_id: 3,
            path: "docs".into(),
            file: false,
            dirs: vec![DirEntry {
                name: "python3".into(),
                size: 9,
                files: 2,
            }],
            files: vec![ListedFile {
                path: "a.txt".into(),
                size: 5,
                content_id: id,
                mtime: 7,
            }],
            total: 12,
            next: Some(4),
        }),
        Message::RelayVia(relay::RelayVia {
            token: relay::RelayToken([4; 16]),
            addr: "203.0.113.9:4000".into(),
            key: Digest([9; 32]),
        }),
        Message::GetInfo(GetInfo { content_id: id }),
        Message::Info(Info {
            content_id: id,
            size: 5,
            piece_size: 262_144,
            name: "a.txt".into(),
        }),
        Message::GetHashes(GetHashes {
            content_id: id,
            start: 0,
            count: 1,
        }),
        Message::Hashes(Hashes {
            start: 0,
            hashes: vec![7; 32],
        }),
        Message::GetPiece(GetPiece {
            content_id: id,
            index: 0,
        }),
        Message::Piece(Piece {
            index: 0,
            data: bytes::Bytes::from_static(b"hello"),
        }),
        Message::GetHave(GetHave { content_id: id }),
        Message::Have(Have {
            content_id: id,
            pieces: 3,
            bitmap: vec![0xa0],
        }),
        Message::CatalogQuery(CatalogQuery {
            query: "a".into(),
            limit: 5,
            exts: vec!["mp3".into()],
            offset: 5,
            ..CatalogQuery::default()
        }),
        Message::CatalogResults(CatalogResults {
            files: vec![CatalogEntry {
                name: "a.txt".into(),
                size: 5,
                content_id: id,
                path: Some("music/a.txt".into()),
            }],
            truncated: false,
        }),
    ]
}

#[test]
fn every_message_has_the_spec_tag_and_name_and_round_trips() {
    assert_eq!(
        MESSAGES,
        &SPEC.map(|(n, t)| (t, n))[..],
        "the table is the spec"
    );
    let all = one_of_each();
    assert_eq!(all.len(), SPEC.len());
    for (m, (name, tag)) in all.iter().zip(SPEC) {
        assert_eq!(m.tag(), tag, "{name}");
        assert_eq!(m.name(), name);
        assert_eq!(tag_name(tag), name);
        let bytes = frame_bytes(m);
        assert_eq!(bytes[4], tag, "{name}: the tag byte follows the length");
        round_trip(m);
    }
    assert_eq!(tag_name(0x30), "unknown");
    let unknown = Frame {
        tag: 0x30,
        payload: bytes::Bytes::from_static(&[0x80]),
    };
    assert!(matches!(
        Message::decode(unknown),
        Err(ProtocolError::UnknownTag { tag: 0x30 })
    ));
}

#[test]
fn each_protocol_decodes_only_its_own_messages() {
    let sets: [(&str, &[&str]); 6] = [
        (
            IndexRequest::WHAT,
            &[
                "Hello",
                "Register",
                "UpdateFiles",
                "Heartbeat",
                "Unregister",
                "Search",
                "ListPeers",
                "Join",
                "Browse",
                "Listen",
                "RelayConnect",
                "RelayAccept",
            ],
        ),
        (
            IndexReply::WHAT,
            &[
                "Welcome",
                "Error",
                "Registered",
                "Ack",
                "SearchResults",
                "PeerList",
                "Joined",
                "Listing",
                "Incoming",
                "Relayed",
                "RelayVia",
            ],
        ),
        (
            PeerRequest::WHAT,
            &[
                "Hello",
                "GetInfo",
                "GetHashes",
                "GetPiece",
                "GetHave",
                "CatalogQuery",
                "RelayAccept",
            ],
        ),
        (
            PeerReply::WHAT,
            &[
                "Welcome",
                "Error",
                "Info",
                "Hashes",
                "Piece",
                "Have",
                "CatalogResults",
                "Relayed",
            ],
        ),
        (
            UdpIndexRequest::WHAT,
            &["Hello", "PunchRequest", "PunchListen"],
        ),
        (
            UdpIndexReply::WHAT,
            &["Welcome", "Error", "PunchGo", "PunchListen"],
        ),
    ];
    for m in one_of_each() {
        let frame = || {
            let mut buf = BytesMut::from(&frame_bytes(&m)[..]);
            Frame::parse(&mut buf).unwrap().unwrap()
        };
        let results = [
            IndexRequest::decode(frame()).map(|r| (r.name(), Message::from(r))),
            IndexReply::decode(frame()).map(|r| (r.name(), Message::from(r))),
            PeerRequest::decode(frame()).map(|r| (r.name(), Message::from(r))),
            PeerReply::decode(frame()).map(|r| (r.name(), Message::from(r))),
            UdpIndexRequest::decode(frame()).map(|r| (r.name(), Message::from(r))),
            UdpIndexReply::decode(frame()).map(|r| (r.name(), Message::from(r))),
        ];
        for ((what, members), r) in sets.iter().zip(results) {
            match r {
                Ok((name, back)) => {
                    assert!(members.contains(&m.name()), "{what} took {}", m.name());
                    assert_eq!(name, m.name());
                    assert_eq!(back, m);
                }
                Err(ProtocolError::Unexpected { expected, received }) => {
                    assert!(!members.contains(&m.name()), "{what} refused {}", m.name());
                    assert_eq!((expected, received), (*what, m.name()));
                }
                Err(e) => panic!("{what}, {}: {e}", m.name()),
            }
        }
    }
}

#[test]
fn hello_and_welcome_with_features_hexdump() {
    let m = Message::Hello(Hello {
        version_min: 1,
        version_max: 1,
        agent: "p".into(),
        features: vec!["have".into(), "catalog".into()],
        membership: None,
    });
    let want = "00 00 00 3b 01 84 \
                ab 76 65 72 73 69 6f 6e 5f 6d 69 6e 01 \
                ab 76 65 72 73 69 6f 6e 5f 6d 61 78 01 \
                a5 61 67 65 6e 74 a1 70 \
                a8 66 65 61 74 75 72 65 73 92 a4 68 61 76 65 a7 63 61 74 61 6c 6f 67";
    assert_eq!(
        hex(&frame_bytes(&m)),
        want.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    round_trip(&m);
    let w = Message::Welcome(Welcome {
        version: 1,
        agent: "p".into(),
        nonce: Digest([0; 32]),
        features: vec!["have".into()],
        membership: None,
        revoked: None,
    });
    let mut want = String::from(
        "00 00 00 4a 02 84 a7 76 65 72 73 69 6f 6e 01 a5 61 67 65 6e 74 a1 70 a5 6e 6f 6e 63 65 c4 20",
    );
    for _ in 0..32 {
        want.push_str(" 00");
    }
    want.push_str(" a8 66 65 61 74 75 72 65 73 91 a4 68 61 76 65");
    assert_eq!(hex(&frame_bytes(&w)), want);
    round_trip(&w);
    // A Welcome without the field (a server from before features) decodes as "no features".
    let old = Message::Welcome(Welcome {
        version: 1,
        agent: "p".into(),
        nonce: Digest([0; 32]),
        features: vec![],
        membership: None,
        revoked: None,
    });
    assert!(!hex(&frame_bytes(&old)).contains("a8 66 65 61 74 75 72 65 73"));
    round_trip(&old);
}

#[test]
fn a_features_list_is_decoded_only_as_far_as_it_can_matter() {
    // A Hello whose features are 200,000 empty names (about 200 KB on the wire).
    let mut payload = vec![0x84];
    for (k, v) in [("version_min", 1u8), ("version_max", 1)] {
        payload.push(0xa0 | k.len() as u8);
        payload.extend(k.as_bytes());
        payload.push(v);
    }
    payload.extend([0xa5]);
    payload.extend(b"agent");
    payload.extend([0xa1, b'x', 0xa8]);
    payload.extend(b"features");
    let n: u32 = 200_000;
    payload.push(0xdd);
    payload.extend(n.to_be_bytes());
    payload.extend(std::iter::repeat_n(0xa0, n as usize - 2));
    payload.extend([0xa4]);
    payload.extend(b"have");
    payload.extend([0xa4]);
    payload.extend(b"have");
    let frame = Frame {
        tag: tag::HELLO,
        payload: bytes::Bytes::from(payload),
    };
    let Message::Hello(h) = Message::decode(frame).unwrap() else {
        panic!("not a Hello")
    };
    // The first MAX_FEATURES names are kept, the rest skipped: "have" at the end is not seen.
    assert_eq!(h.features.len(), MAX_FEATURES);
    assert!(h.features.iter().all(String::is_empty));
    // Names longer than MAX_FEATURE_LEN are dropped; short ones around them kept.
    let long = "x".repeat(MAX_FEATURE_LEN + 1);
    let m = Message::Hello(Hello {
        version_min: 1,
        version_max: 1,
        agent: "x".into(),
        features: vec!["have".into(), long, "catalog".into()],
        membership: None,
    });
    let mut buf = BytesMut::from(&frame_bytes(&m)[..]);
    let Message::Hello(h) = Message::decode(Frame::parse(&mut buf).unwrap().unwrap()).unwrap()
    else {
        panic!("not a Hello")
    };
    assert_eq!(h.features, ["have", "catalog"]);
}

#[test]
fn error_codes_keep_their_numbers_and_unknown_ones_survive() {
    let spec = [
        (ErrorCode::BadRequest, 1),
        (ErrorCode::NotFound, 2),
        (ErrorCode::Unauthorized, 3),
        (ErrorCode::UnsupportedVersion, 4),
        (ErrorCode::Busy, 5),
        (ErrorCode::Internal, 6),
        (ErrorCode::Forbidden, 7),
        (ErrorCode::Unreachable, 8),
    ];
    assert_eq!(ErrorCode::ALL.len(), spec.len());
    for (c, n) in spec {
        assert_eq!(c.number(), n);
        assert_eq!(ErrorCode::from_number(n), Some(c));
        assert!(n == c);
    }
    // A code from a newer peer is kept as a number, not refused.
    let m = Message::Error(ErrorReply {
        code: 77,
        message: "later".into(),
    });
    round_trip(&m);
    let Message::Error(e) = m else { unreachable!() };
    assert_eq!(e.kind(), None);
    assert_eq!(e.to_string(), "later (code 77)");
}
