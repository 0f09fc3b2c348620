//! The fuzz targets' properties over their seeds and over every input in `fuzz/corpus`, on stable Rust, in every test run.
//!
//! The seeds are one message of every kind (the wire tests' examples among them) and the
//! hostile frames the hardening tests send. `fuzz/corpus/<target>/seed-*` must hold exactly
//! these bytes; after a deliberate change of the wire format, write them again with
//! `PEERSHARE_WRITE_SEEDS=1 cargo test --test fuzz_corpus`.

use std::path::{Path, PathBuf};

use peershare::content::{ContentId, Digest};
use peershare::protocol::fuzz;
use peershare::protocol::*;

fn id(b: u8) -> ContentId {
    ContentId::from_bytes([b; 32])
}

fn peer_hit(k: u64, have: Option<Vec<u8>>) -> PeerHit {
    PeerHit {
        key: None,
        peer_id: k,
        host: "127.0.0.1".into(),
        port: 40_000,
        shared_at: 1_700_000_000_000,
        last_seen: -1,
        have,
        path: Some("music/Isaac.py".into()),
        reach: None,
    }
}

/// A membership certificate of fixed keys.
fn cert() -> Membership {
    let index = peershare::identity::Identity::from_secret([7; 32]);
    let member = peershare::identity::Identity::from_secret([9; 32]);
    Membership::issue(&index, member.public_key(), 1_800_000_000_000)
}

/// One message of every kind, by name.
fn samples() -> Vec<(&'static str, Message)> {
    vec![
        (
            "hello",
            Message::Hello(Hello {
                version_min: 1,
                version_max: 1,
                agent: "peershare/0.1.0".into(),
                features: vec![],
                membership: None,
            }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                version: 1,
                agent: "peershare/0.1.0".into(),
                nonce: Digest([7; 32]),
                features: vec![],
                membership: Some(cert()),
                revoked: None,
            }),
        ),
        (
            "error",
            Message::Error(ErrorReply::new(
                ErrorCode::Busy,
                "all upload slots taken; you are number 3 in the queue",
            )),
        ),
        (
            "register",
            Message::Register(Register {
                public_key: Digest([1; 32]),
                signature: vec![2; 64],
                host: "[::1]".into(),
                port: 50_000,
                catalog_digest: Digest([3; 32]),
                file_count: 70_000,
                ephemeral: true,
                relay: false,
                via: false,
            }),
        ),
        (
            "registered",
            Message::Registered(Registered {
                peer_id: 300,
                in_sync: false,
                lease_secs: 90,
                host: "10.0.0.1".into(),
                observed: None,
                reach: None,
                relay: None,
            }),
        ),
        (
            "update_files",
            Message::UpdateFiles(UpdateFiles {
                reset: true,
                upsert: vec![
                    FileEntry {
                        path: "music/Isaac.py".into(),
                        name: "Isaac.py".into(),
                        size: 262_145,
                        content_id: id(0xab),
                        mtime: -5,
                        have: None,
                    },
                    FileEntry {
                        path: "part".into(),
                        name: "\u{202e}gnp.exe".into(),
                        size: 1 << 42,
                        content_id: id(0xcd),
                        mtime: 1_700_000_000,
                        have: Some(vec![0xc0, 0x40]),
                    },
                ],
                remove: vec!["old/file".into()],
                digest: Some(Digest([9; 32])),
            }),
        ),
        (
            "ack",
            Message::Ack(Ack {
                files: 65_536,
                membership: Some(cert()),
                revoked: Some(vec![Digest([3; 32])]),
            }),
        ),
        ("heartbeat", Message::Heartbeat),
        ("unregister", Message::Unregister),
        (
            "join",
            Message::Join(Join {
                secret: vec![5; 32],
            }),
        ),
        (
            "joined",
            Message::Joined(Joined {
                membership: cert(),
                dht_secret: vec![6; 32],
            }),
        ),
        (
            "search",
            Message::Search(Search {
                query: "isaac py -old \"my song\"".into(),
                limit: 100,
                exts: vec!["py".into()],
                min_size: Some(1),
                offset: 100,
                ..Search::default()
            }),
        ),
        (
            "search_results",
            Message::SearchResults(SearchResults {
                files: vec![FileHit {
                    name: "Isaac.py".into(),
                    size: 17,
                    content_id: id(0x11),
                    // Without a key and with one (nil and bin 32 on the wire).
                    peers: vec![
                        peer_hit(1, None),
                        PeerHit {
                            key: Some(Digest([4; 32])),
                            ..peer_hit(u64::MAX, Some(vec![0x80]))
                        },
                    ],
                }],
                truncated: true,
                total: 1,
                estimated: true,
            }),
        ),
        ("list_peers", Message::ListPeers),
        (
            "peer_list",
            Message::PeerList(PeerList {
                peers: vec![PeerRecord {
                    peer_id: 2,
                    host: "192.0.2.1".into(),
                    port: 1,
                    files: 4_294_967_296,
                    last_seen: 0,
                    live: false,
                }],
            }),
        ),
        (
            "browse",
            Message::Browse(Browse {
                peer_id: 3,
                path: "docs/python3".into(),
                recursive: true,
                offset: 1000,
                limit: 1000,
            }),
        ),
        (
            "listing",
            Message::Listing(Listing {
                peer_id: 3,
                path: "docs".into(),
                file: false,
                dirs: vec![DirEntry {
                    name: "python3".into(),
                    size: 4 << 40,
                    files: 2,
                }],
                files: vec![ListedFile {
                    path: "changelog.gz".into(),
                    size: 0,
                    content_id: id(0x44),
                    mtime: -1,
                }],
                total: 4_294_967_296,
                next: Some(2),
            }),
        ),
        (
            "get_info",
            Message::GetInfo(GetInfo {
                content_id: id(0xab),
            }),
        ),
        (
            "info",
            Message::Info(Info {
                content_id: id(0xab),
                size: 4 << 40,
                piece_size: 262_144,
                name: "big.iso".into(),
            }),
        ),
        (
            "get_hashes",
            Message::GetHashes(GetHashes {
                content_id: id(0xab),
                start: 0,
                count: 16_384,
            }),
        ),
        (
            "hashes",
            Message::Hashes(Hashes {
                start: 32,
                hashes: vec![5; 96],
            }),
        ),
        (
            "get_piece",
            Message::GetPiece(GetPiece {
                content_id: id(0x11),
                index: 300,
            }),
        ),
        (
            "piece",
            Message::Piece(Piece {
                index: 2,
                data: bytes::Bytes::from_static(b"abc"),
            }),
        ),
        (
            "get_have",
            Message::GetHave(GetHave {
                content_id: id(0x22),
            }),
        ),
        (
            "have",
            Message::Have(Have {
                content_id: id(0x22),
                pieces: 10,
                bitmap: vec![0xc0, 0x40],
            }),
        ),
        (
            "catalog_query",
            Message::CatalogQuery(CatalogQuery {
                query: "isaac".into(),
                limit: 20,
                max_size: Some(1 << 20),
                ..CatalogQuery::default()
            }),
        ),
        (
            "catalog_results",
            Message::CatalogResults(CatalogResults {
                files: vec![CatalogEntry {
                    name: "Isaac.py".into(),
                    size: 0,
                    content_id: id(0x33),
                    path: Some("code/Isaac.py".into()),
                }],
                truncated: false,
            }),
        ),
    ]
}

fn frame(m: &Message) -> Vec<u8> {
    let payload = m.encode_payload().expect("samples encode");
    let mut v = Frame::header(m.tag(), payload.len())
        .expect("samples fit")
        .to_vec();
    v.extend_from_slice(&payload);
    v
}

/// Every seed file: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stream = Vec::new();
    for (name, m) in samples() {
        let f = frame(&m);
        out.push(("message", format!("seed-{name}"), f[4..].to_vec()));
        stream.extend_from_slice(&f);
    }
    out.push(("frames", "seed-every-message".into(), stream.clone()));
    // Hostile streams: an empty frame, one just over the limit, a truncated one, an unknown
    // tag, a payload that is not a map.
    let over = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    let hostile: [(&str, Vec<u8>); 5] = [
        ("empty-frame", vec![0, 0, 0, 0]),
        ("oversized", over.to_vec()),
        ("truncated", stream[..stream.len() - 3].to_vec()),
        ("unknown-tag", vec![0, 0, 0, 2, 0x52, 0x80]),
        ("not-a-map", vec![0, 0, 0, 3, 0x01, 0x92, 0x01]),
    ];
    for (name, bytes) in hostile {
        out.push(("frames", format!("seed-{name}"), bytes));
    }
    // One file of two peers, the first with a key and the second without: name "", size 1,
    // id 0x11…, then peer id 127, host "::1", port 65535, shared_at 0, last_seen -1, no have,
    // key 0xab…; peer id 0, host "", port 0, times 0, have [0x80], no key; truncated.
    let keyed_peers = [
        &[1, 0, 2][..],
        &[0x11; 32],
        &[2, 4, 3, b':', b':', b'1', 12, 0, 22, 0, 0, 0xab],
        &[0, 0, 0, 0, 0, 1, 0x80, 1, 1],
    ]
    .concat();
    let replies: [(&str, &[u8]); 4] = [
        ("empty", &[]),
        ("one-file", &[1, 3, b'a', b'b', b'c', 21, 0x11, 0x22]),
        (
            "edges",
            &[8, 47, 255, 0, 1, 2, 3, 4, 5, 6, 7, 38, 39, 40, 41, 4, 9, 9],
        ),
        ("keyed-peers", &keyed_peers),
    ];
    for (name, bytes) in replies {
        out.push(("search_reply", format!("seed-{name}"), bytes.to_vec()));
    }
    out
}

fn run(target: &str, data: &[u8]) {
    match target {
        "frames" => fuzz::frames(data),
        "message" => fuzz::message(data),
        "search_reply" => fuzz::search_reply(data),
        other => panic!("no fuzz target {other}"),
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn every_seed_keeps_the_properties_and_is_in_the_corpus() {
    let write = std::env::var_os("PEERSHARE_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        run(target, &bytes);
        let path = corpus_dir().join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().expect("in a folder")).expect("corpus folder");
            std::fs::write(&path, &bytes).expect("seed written");
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (PEERSHARE_WRITE_SEEDS=1 writes it)",
                    path.display()
                )
            });
            assert_eq!(on_disk, bytes, "{} is out of date", path.display());
        }
    }
}

#[test]
fn the_whole_fuzz_corpus_replays_without_breaking_a_property() {
    let mut replayed = 0;
    for target in ["frames", "message", "search_reply"] {
        let dir = corpus_dir().join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            let result = std::panic::catch_unwind(|| run(target, &data));
            assert!(result.is_ok(), "{} breaks a property", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= seeds().len(), "only {replayed} inputs replayed");
}
