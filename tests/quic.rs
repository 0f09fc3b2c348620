//! The UDP transport (QUIC) and hole punching through the index, on 127.0.0.0/8: a download
//! over QUIC verified with b3sum; raw-UDP attackers (garbage datagrams, a flood of Initial
//! packets, a client expecting another key) never stall the peer; the index's punch
//! requests and their refusals (unknown peer, a flood); a source whose TCP address cannot be
//! reached is reached through a punch.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use peershare::content::{ContentId, Digest};
use peershare::download::udp::{Transport, UdpRoute};
use peershare::download::{Source, connect_source};
use peershare::index::{IndexClient, IndexConfig, IndexServer, IndexStore};
use peershare::node::{GetOptions, download_all};
use peershare::peer::{PeerClient, PeerClientError, Reach};
use peershare::protocol::{
    Connection, ErrorCode, Limits, Message, ProtocolError, PunchRequest, UdpIndexReply,
};
use peershare::tls::quic::{QuicStream, Role};
use peershare::tls::{Tls, TlsError};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// An index with its UDP side on the same port number.
async fn start_udp_index(db: &std::path::Path) -> (String, Digest, CancellationToken) {
    let store = IndexStore::open(db).expect("store");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let tls = index_tls(db);
    let key = tls.public_key();
    let config = IndexConfig {
        lease: Duration::from_secs(5),
        ..IndexConfig::default()
    };
    let server = IndexServer::new(store, config, tls);
    let udp = server.udp();
    let endpoint = udp.bind(addr).expect("UDP on the index's port");
    tokio::spawn(udp.run(endpoint, stop.clone()));
    tokio::spawn(server.run(listener, stop.clone()));
    (addr.to_string(), key, stop)
}

/// A peer sharing `files` through `index`; waits until it is in sync and, with an index, until
/// the index sees its UDP socket.
async fn share(
    tmp: &std::path::Path,
    index: &str,
    index_key: Digest,
    files: &[(&str, Vec<u8>)],
) -> peershare::node::ShareHandle {
    let dir = tmp.join("shared");
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
    let mut config =
        peershare::node::ShareConfig::new(vec![dir], Some(index.to_string()), tmp.join("state"));
    config.index_key = Some(index_key);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut h = peershare::node::start_share(config, listener)
        .await
        .expect("share");
    h.wait_for(Duration::from_secs(20), |s| s.in_sync)
        .await
        .expect("in sync");
    let mut udp = h
        .udp
        .clone()
        .expect("the share binds UDP on its TCP port number");
    assert_eq!(
        udp.borrow().local.map(|a| a.port()),
        Some(h.local_addr.port()),
        "same port number as TCP"
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        udp.wait_for(|s| s.observed.is_some()),
    )
    .await
    .expect("the index tells the share its UDP address")
    .expect("status");
    h
}

fn quic_route(index: Option<(&str, Digest)>, transport: Transport) -> Arc<UdpRoute> {
    UdpRoute::new(
        "127.0.0.1:0".parse().expect("addr"),
        transport,
        index.map(|(a, k)| (a.to_string(), Some(k))),
    )
    .expect("UDP socket")
}

#[tokio::test]
async fn a_download_over_quic_is_verified_with_b3sum() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (index, index_key, stop) = start_udp_index(&tmp.path().join("index.db")).await;
    let big = data(3 * 1024 * 1024 + 17, 7);
    let small = data(3000, 8);
    let h = share(
        tmp.path(),
        &index,
        index_key,
        &[("big.bin", big.clone()), ("small.bin", small.clone())],
    )
    .await;
    let mut client = IndexClient::connect(&index, None, Some(index_key), Limits::default())
        .await
        .expect("index");
    let found = client.search(".bin", 10).await.expect("search");
    assert_eq!(found.files.len(), 2);
    let out = tmp.path().join("out");
    let opts = GetOptions {
        udp: Some(quic_route(None, Transport::Quic)),
        ..GetOptions::default()
    };
    let results = download_all(&found.files, &out, &opts, 2).await;
    for r in results {
        let r = r.expect("downloaded over QUIC");
        let want = if r.size == big.len() as u64 {
            &big
        } else {
            &small
        };
        assert_eq!(b3sum(&r.path), blake3::hash(want).to_hex().to_string());
        if r.size == big.len() as u64 {
            assert!(
                r.sources
                    .iter()
                    .any(|s| s.cipher_suite == Some("TLS13 over QUIC") && s.bytes > 0),
                "the pieces came over QUIC: {:?}",
                r.sources
            );
        }
    }
    h.shutdown().await;
    stop.cancel();
}

/// The first datagram a QUIC client sends: a valid Initial packet, to replay.
async fn captured_initial() -> Vec<u8> {
    let sink = UdpSocket::bind("127.0.0.1:0").await.expect("sink");
    let to = sink.local_addr().expect("addr");
    let endpoint =
        peershare::tls::quic::bind("127.0.0.1:0".parse().expect("a"), None).expect("endpoint");
    let tls = client_tls();
    let attempt = tokio::spawn(async move {
        let _ = tls
            .connect_quic(&endpoint, to, None, Role::Client, Duration::from_secs(2))
            .await;
    });
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sink.recv_from(&mut buf))
        .await
        .expect("an Initial within 5 s")
        .expect("recv");
    attempt.abort();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn garbage_an_initial_flood_and_a_wrong_key_never_stall_the_peer() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (index, index_key, stop) = start_udp_index(&tmp.path().join("index.db")).await;
    let bytes = data(600 * 1024, 3);
    let h = share(tmp.path(), &index, index_key, &[("f.bin", bytes.clone())]).await;
    let peer: SocketAddr = h.local_addr;
    let id = ContentId::from_bytes(*blake3::hash(&bytes).as_bytes());
    let initial = captured_initial().await;
    assert!(
        initial.len() >= 1200,
        "a client's Initial is padded to 1200 bytes"
    );
    assert_eq!(initial[0] & 0xf0, 0xc0, "a long-header Initial packet");

    // The attackers, from 127.0.0.2: garbage of every size, and the Initial replayed from
    // 300 source ports, 3 times each; all while a real client downloads.
    let flood = tokio::spawn(async move {
        let mut sent = 0usize;
        let garbage = UdpSocket::bind("127.0.0.2:0").await.expect("bind");
        for i in 0..3000usize {
            let mut d = data(1 + (i * 37) % 1500, i as u64);
            if i % 3 == 0 {
                // Looks like a long header, then nonsense.
                d[0] = 0xc0 | (d[0] & 0x0f);
            }
            if garbage.send_to(&d, peer).await.is_ok() {
                sent += 1;
            }
        }
        for _ in 0..300 {
            let s = UdpSocket::bind("127.0.0.2:0").await.expect("bind");
            for _ in 0..3 {
                if s.send_to(&initial, peer).await.is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    });

    // A client expecting another key is refused, and says which key the peer holds.
    let endpoint =
        peershare::tls::quic::bind("127.0.0.1:0".parse().expect("a"), None).expect("endpoint");
    let wrong = Digest([9; 32]);
    match PeerClient::connect_quic(&endpoint, peer, None, Some(wrong), Limits::default()).await {
        Err(PeerClientError::Secure {
            source: TlsError::WrongKey { .. },
            ..
        }) => {}
        other => panic!("expected a wrong-key refusal, got {:?}", other.err()),
    }

    // Meanwhile a real client is served over QUIC, within a few seconds.
    let started = Instant::now();
    let mut c = tokio::time::timeout(
        Duration::from_secs(15),
        PeerClient::connect_quic(&endpoint, peer, None, None, Limits::default()),
    )
    .await
    .expect("connected in time despite the flood")
    .expect("connected");
    assert!(c.is_quic());
    let info = c.info(id).await.expect("info");
    assert_eq!(info.size, bytes.len() as u64);
    c.request_piece(id, 0).await.expect("request");
    c.flush().await.expect("flush");
    let piece = c.next_piece().await.expect("piece");
    assert_eq!(&piece.data[..], &bytes[..256 * 1024]);
    println!(
        "served over QUIC during the flood in {:?}",
        started.elapsed()
    );
    let sent = flood.await.expect("flood");
    assert!(sent > 3000, "the flood was sent ({sent} datagrams)");

    // After the flood, still served, over QUIC and TCP.
    let mut c = PeerClient::connect_quic(&endpoint, peer, None, None, Limits::default())
        .await
        .expect("QUIC after the flood");
    assert_eq!(c.info(id).await.expect("info").size, bytes.len() as u64);
    let mut t = PeerClient::connect(&peer.to_string(), None, None, Limits::default())
        .await
        .expect("TCP after the flood");
    assert_eq!(t.info(id).await.expect("info").size, bytes.len() as u64);
    h.shutdown().await;
    stop.cancel();
}

/// A raw QUIC client of the index's UDP side, said `Hello`.
async fn index_udp_client(
    endpoint: &quinn::Endpoint,
    index: &str,
    index_key: Digest,
) -> Connection<QuicStream> {
    let mut c = index_udp_conn(&client_tls(), endpoint, index, index_key).await;
    c.client_handshake(None).await.expect("welcome");
    c
}

/// A raw QUIC connection to the index's UDP side with `tls`'s key, before its `Hello`.
async fn index_udp_conn(
    tls: &Tls,
    endpoint: &quinn::Endpoint,
    index: &str,
    index_key: Digest,
) -> Connection<QuicStream> {
    let (conn, _) = tls
        .connect_quic(
            endpoint,
            index.parse().expect("addr"),
            Some(index_key),
            Role::Client,
            Duration::from_secs(5),
        )
        .await
        .expect("QUIC to the index");
    Connection::new(
        QuicStream::open(conn).await.expect("stream"),
        Limits::default(),
    )
}

async fn punch_reply(
    c: &mut Connection<QuicStream>,
    peer_id: u64,
) -> Result<UdpIndexReply, ProtocolError> {
    c.request(&Message::PunchRequest(PunchRequest { peer_id }))
        .await
        .and_then(UdpIndexReply::try_from)
}

#[tokio::test]
async fn a_source_unreachable_over_tcp_is_reached_through_a_punch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (index, index_key, stop) = start_udp_index(&tmp.path().join("index.db")).await;
    let bytes = data(300 * 1024, 11);
    let h = share(tmp.path(), &index, index_key, &[("p.bin", bytes.clone())]).await;
    let mut client = IndexClient::connect(&index, None, Some(index_key), Limits::default())
        .await
        .expect("index");
    let found = client.search("p.bin", 10).await.expect("search");
    let hit = &found.files[0].peers[0];
    let key = hit.key.expect("key");

    // The address listed cannot be reached (a closed TCP port): the downloader asks the
    // index for a punch and reaches the peer over QUIC at the address the index saw.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let route = quic_route(Some((&index, index_key)), Transport::Auto);
    let source = |addr: String| Source {
        peer_id: Some(hit.peer_id),
        addr,
        key: Some(key),
    };
    let mut c = connect_source(&source(dead), None, None, Some(&route), Limits::default())
        .await
        .expect("reached through a punch");
    assert_eq!(c.reach(), Reach::Punched);
    assert!(c.is_quic());
    let id = found.files[0].content_id;
    assert_eq!(c.info(id).await.expect("info").size, bytes.len() as u64);
    let punches = h.udp.as_ref().expect("udp").borrow().punches;
    assert!(punches >= 1, "the index told the share to punch");

    // The address listed works: no punch.
    let c = connect_source(
        &source(h.local_addr.to_string()),
        None,
        None,
        Some(&route),
        Limits::default(),
    )
    .await
    .expect("direct");
    assert_eq!(c.reach(), Reach::Direct);
    h.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn punch_requests_for_unknown_peers_and_floods_are_refused_and_never_stall_the_index() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (index, index_key, stop) = start_udp_index(&tmp.path().join("index.db")).await;
    let h = share(tmp.path(), &index, index_key, &[("q.bin", data(5000, 1))]).await;
    let endpoint =
        peershare::tls::quic::bind("127.0.0.3:0".parse().expect("a"), None).expect("endpoint");
    let mut c = index_udp_client(&endpoint, &index, index_key).await;

    // Unknown peer: NOT_FOUND, and the connection stays usable.
    match punch_reply(&mut c, 999_999).await {
        Err(ProtocolError::Remote(e)) => {
            assert_eq!(e.kind(), Some(ErrorCode::NotFound), "{}", e.message);
            assert!(e.message.contains("not registered"), "{}", e.message);
        }
        other => panic!("unknown peer: {other:?}"),
    }
    // A flood: past the burst, BUSY with the reason; the index keeps answering searches.
    let mut client = IndexClient::connect(&index, None, Some(index_key), Limits::default())
        .await
        .expect("index");
    let peer_id = client.search("q.bin", 1).await.expect("search").files[0].peers[0].peer_id;
    let (mut ok, mut busy) = (0, 0);
    let started = Instant::now();
    for _ in 0..200 {
        match punch_reply(&mut c, peer_id).await {
            Ok(UdpIndexReply::PunchGo(_)) => ok += 1,
            Err(ProtocolError::Remote(e)) if e.kind() == Some(ErrorCode::Busy) => {
                assert!(
                    e.message.contains("too many punch requests"),
                    "{}",
                    e.message
                );
                busy += 1
            }
            other => panic!("during the flood: {other:?}"),
        }
    }
    println!("200 punch requests answered in {:?}", started.elapsed());
    assert!(
        ok <= 10 + 5,
        "at most the burst (and what refilled) goes through: {ok}"
    );
    assert!(busy >= 180, "the rest is refused: {busy}");
    let t = Instant::now();
    client
        .search("q.bin", 1)
        .await
        .expect("the index still answers");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Another address is not held back by the flood of the first.
    let other =
        peershare::tls::quic::bind("127.0.0.4:0".parse().expect("a"), None).expect("endpoint");
    let mut c2 = index_udp_client(&other, &index, index_key).await;
    assert!(matches!(
        punch_reply(&mut c2, peer_id).await,
        Ok(UdpIndexReply::PunchGo(_))
    ));
    // Garbage after Hello closes only that connection.
    drop(c);
    h.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn a_peer_that_does_not_listen_is_refused_as_unreachable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (index, index_key, stop) = start_udp_index(&tmp.path().join("index.db")).await;
    // A peer registered over TCP only (a build without the UDP side).
    let db_dir = tmp.path().join("p");
    std::fs::create_dir_all(&db_dir).expect("dir");
    let peer = start_peer_tcp_only(&index, index_key, &db_dir).await;
    let endpoint =
        peershare::tls::quic::bind("127.0.0.1:0".parse().expect("a"), None).expect("endpoint");
    let mut c = index_udp_client(&endpoint, &index, index_key).await;
    match punch_reply(&mut c, peer).await {
        Err(ProtocolError::Remote(e)) => {
            assert_eq!(e.kind(), Some(ErrorCode::Unreachable), "{}", e.message);
            assert!(e.message.contains("does not listen"), "{}", e.message);
        }
        other => panic!("not listening: {other:?}"),
    }
    stop.cancel();
}

/// Registers a peer over TCP only; returns its id.
async fn start_peer_tcp_only(index: &str, index_key: Digest, _dir: &std::path::Path) -> u64 {
    let identity = peershare::identity::Identity::ephemeral().expect("key");
    let tls = Tls::new(&identity).expect("tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Answers the index's address check (a TLS handshake on the registered port).
    let server_tls = tls.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let t = server_tls.clone();
            tokio::spawn(async move {
                let _ = t.accept(s, Duration::from_secs(5), b"").await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let mut client = IndexClient::connect(index, Some(&tls), Some(index_key), Limits::default())
        .await
        .expect("index");
    let registered = client
        .register(&identity, "127.0.0.1", port, Digest::default(), 0)
        .await
        .expect("registered");
    // Keep the connection (and so the registration) open.
    let id = registered.peer_id;
    tokio::spawn(async move {
        let _ = client.heartbeat().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(client);
    });
    id
}

/// A private index with its UDP side, and a member's TLS setup after joining with an invite.
async fn private_udp_index(
    db: &std::path::Path,
) -> (
    String,
    Digest,
    CancellationToken,
    peershare::index::IndexUdp,
) {
    use peershare::identity::Identity;
    let store = IndexStore::open(db).expect("store");
    let secret = store.index_secret().expect("index key");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let server = IndexServer::new(store, IndexConfig::default(), index_tls(db))
        .private(Identity::from_secret(secret));
    let udp = server.udp();
    let endpoint = udp.bind(addr).expect("UDP on the index's port");
    tokio::spawn(udp.clone().run(endpoint, stop.clone()));
    tokio::spawn(server.run(listener, stop.clone()));
    (
        addr.to_string(),
        Identity::from_secret(secret).public_key(),
        stop,
        udp,
    )
}

#[tokio::test]
async fn over_quic_a_private_group_serves_and_punches_for_members_only() {
    use peershare::identity::Identity;
    let tmp = tempfile::tempdir().expect("tmp");
    let db = tmp.path().join("index.db");
    let (index, index_key, stop, udp) = private_udp_index(&db).await;
    let state = tmp.path().join("member");
    std::fs::create_dir_all(&state).expect("dir");
    let member_key = Identity::load_or_create(&state).expect("key");
    let member = join_private(&index, index_key, &db, &member_key).await;
    let dir = tmp.path().join("shared");
    std::fs::create_dir_all(&dir).expect("dir");
    let bytes = data(70_000, 5);
    std::fs::write(dir.join("m.bin"), &bytes).expect("write");
    let mut config = peershare::node::ShareConfig::new(vec![dir], Some(index.clone()), state);
    config.index_key = Some(index_key);
    config.group = member.group().cloned();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut h = peershare::node::start_share(config, listener)
        .await
        .expect("share");
    h.wait_for(Duration::from_secs(20), |s| s.in_sync)
        .await
        .expect("in sync");
    // The member listens for punches over the private index's UDP side.
    let mut status = h.udp.clone().expect("udp");
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.observed.is_some()),
    )
    .await
    .expect("the member listens")
    .expect("status");
    assert_eq!(udp.listening(), 1);
    let id = ContentId::from_bytes(*blake3::hash(&bytes).as_bytes());
    let endpoint =
        peershare::tls::quic::bind("127.0.0.1:0".parse().expect("a"), None).expect("endpoint");

    // A stranger is refused by the member's peer over QUIC, as over TCP.
    match PeerClient::connect_quic(&endpoint, h.local_addr, None, None, Limits::default()).await {
        Err(PeerClientError::Protocol(ProtocolError::Remote(e))) => {
            assert_eq!(e.kind(), Some(ErrorCode::Forbidden), "{}", e.message);
        }
        Err(other) => panic!("stranger: {other}"),
        Ok(_) => panic!("a stranger was served over QUIC"),
    }
    // ... and by the private index's UDP side (at Hello).
    let tls = client_tls();
    let mut c = index_udp_conn(&tls, &endpoint, &index, index_key).await;
    match c.client_handshake(None).await {
        Err(ProtocolError::Remote(e)) => {
            assert_eq!(e.kind(), Some(ErrorCode::Forbidden), "{}", e.message)
        }
        other => panic!("a stranger at the private index's UDP side: {other:?}"),
    }

    // Another member is served over QUIC, and gets a punch to the member.
    let other = join_private(&index, index_key, &db, &Identity::ephemeral().expect("key")).await;
    let mut c = PeerClient::connect_quic(
        &endpoint,
        h.local_addr,
        Some(&other),
        None,
        Limits::default(),
    )
    .await
    .expect("a member is served over QUIC");
    assert_eq!(c.info(id).await.expect("info").size, bytes.len() as u64);
    let mut c = index_udp_conn(&other, &endpoint, &index, index_key).await;
    c.client_handshake(other.membership())
        .await
        .expect("a member is welcome");
    let mut client = IndexClient::connect(&index, Some(&other), Some(index_key), Limits::default())
        .await
        .expect("index");
    let peer_id = client.search("m.bin", 1).await.expect("search").files[0].peers[0].peer_id;
    assert!(matches!(
        punch_reply(&mut c, peer_id).await,
        Ok(UdpIndexReply::PunchGo(_))
    ));
    h.shutdown().await;
    stop.cancel();
}
