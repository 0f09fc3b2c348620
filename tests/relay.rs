//! Rendezvous and relay (docs/PROTOCOL.md §7.10) on 127.0.0.0/8: a peer the index cannot reach
//! (it advertises a port nobody listens on) registers as reached through the relay, keeps a
//! control channel, and is downloaded from through the index with the peers' TLS inside.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use peershare::content::{ContentId, Digest};
use peershare::index::{IndexClient, IndexConfig, RelayConfig, RelayRouted};
use peershare::node::{ShareConfig, ShareHandle, start_share};
use peershare::peer::PeerClient;
use peershare::protocol::relay::{RelayConnect, reach};
use peershare::protocol::{ErrorCode, Limits, ProtocolError};
use peershare::tls::PeerStream;
use tokio::net::TcpListener;

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

/// A sharing peer that advertises a port nobody listens on: the index cannot reach it.
async fn start_hidden_peer(
    dir: &std::path::Path,
    index: &str,
    state: &std::path::Path,
) -> ShareHandle {
    let mut config = ShareConfig::new(
        vec![dir.to_path_buf()],
        Some(index.to_string()),
        state.to_path_buf(),
    );
    config.advertise = Some(("127.0.0.1".into(), dead_port().await));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_share(config, listener).await.expect("share")
}

/// A directory `shared` in `tmp` holding one file.
fn shared_dir(tmp: &Path, name: &str, body: &[u8]) -> PathBuf {
    let shared = tmp.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join(name), body).unwrap();
    shared
}

#[tokio::test]
async fn an_unreachable_peer_registers_through_the_relay_and_listens() {
    let tmp = tempfile::tempdir().unwrap();
    let index = start_index(&tmp.path().join("i.sqlite"), Duration::from_secs(90)).await;
    let shared = shared_dir(tmp.path(), "behind-nat.txt", b"hello from behind a NAT");
    let mut share = start_hidden_peer(&shared, &index.addr(), &tmp.path().join("s")).await;
    let status = share
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("registered through the relay, control channel open");
    assert_eq!(status.reach.as_deref(), Some(reach::RELAY));
    assert_eq!(status.reachable_at, None);
    assert!(
        status
            .observed
            .as_deref()
            .is_some_and(|o| o.starts_with("127.0.0.1:")),
        "{status:?}"
    );
    let mut c = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let found = c.search("behind-nat", 10).await.unwrap();
    let hit = &found.files[0].peers[0];
    // Listed by key, never at an address it claimed.
    assert_eq!((hit.host.as_str(), hit.port), ("", 0));
    assert_eq!(hit.reach.as_deref(), Some(reach::RELAY));
    assert!(hit.key.is_some());
    share.shutdown().await;
    index.stop().await;
}

#[tokio::test]
async fn no_relay_keeps_unreachable_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = "127.0.0.1:0".parse().unwrap();
    let config = IndexConfig {
        relay: RelayConfig {
            enabled: false,
            ..RelayConfig::default()
        },
        ..IndexConfig::default()
    };
    let index = start_index_with(&tmp.path().join("i.sqlite"), addr, config).await;
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let mut share = start_hidden_peer(&shared, &index.addr(), &tmp.path().join("s")).await;
    let status = share
        .wait_for(Duration::from_secs(20), |s| s.last_error.is_some())
        .await
        .expect("refused");
    let e = status.last_error.unwrap();
    assert!(
        e.contains("could not reach this peer") && e.contains("--no-relay"),
        "{e}"
    );
    assert_eq!(status.reach, None);
    share.shutdown().await;
    index.stop().await;
}

/// A relayed connection by hand: `RelayConnect` by key, then the peer protocol's TLS inside
/// (requiring the listed key) and a `GetInfo` answered by the hidden peer.
#[tokio::test]
async fn relay_connect_reaches_the_peer_with_tls_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let index = start_index(&tmp.path().join("i.sqlite"), Duration::from_secs(90)).await;
    let body = data(700_000, 7);
    let shared = shared_dir(tmp.path(), "f.bin", &body);
    let mut share = start_hidden_peer(&shared, &index.addr(), &tmp.path().join("s")).await;
    share
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("listening");
    let mut c = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let found = c.search("f.bin", 10).await.unwrap();
    let hit = found.files[0].peers[0].clone();
    let key: Digest = hit.key.unwrap();
    let id: ContentId = found.files[0].content_id;
    let tls = client_tls();
    let client = IndexClient::connect(&index.addr(), Some(&tls), None, Limits::default())
        .await
        .unwrap();
    let rc = RelayConnect {
        peer_id: Some(hit.peer_id),
        key: Some(key),
        avoid: Vec::new(),
        via: false,
    };
    let routed = client
        .relay_connect(rc, Duration::from_secs(15))
        .await
        .expect("relayed");
    let RelayRouted::Here(io, relayed) = routed else {
        panic!("no volunteer here: the index relays itself");
    };
    assert_eq!(relayed.peer, key);
    let (stream, proved) = tls
        .connect_over(
            io,
            "127.0.0.1".parse().unwrap(),
            Some(key),
            Duration::from_secs(10),
        )
        .await
        .expect("TLS inside");
    assert_eq!(proved, key);
    let stream = PeerStream::Relayed(Box::new(tokio_rustls::TlsStream::Client(stream)));
    let mut peer = PeerClient::over(stream, key, &tls, Limits::default(), "relayed")
        .await
        .unwrap();
    assert!(peer.is_relayed());
    let info = peer.info(id).await.unwrap();
    assert_eq!(info.size, body.len() as u64);
    share.shutdown().await;
    index.stop().await;
}

/// Requests for peers that do not exist, are not listening, or name themselves, get their
/// own error codes; the connection stays usable.
#[tokio::test]
async fn relay_connect_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let index = start_index(&tmp.path().join("i.sqlite"), Duration::from_secs(90)).await;
    let shared = shared_dir(tmp.path(), "x.txt", b"x");
    // Reached directly: registered, but not listening.
    let direct = start_peer(&shared, Some(index.addr()), &tmp.path().join("d")).await;
    let id = direct.status.borrow().peer_id.unwrap();
    assert_eq!(direct.status.borrow().reach.as_deref(), Some(reach::DIRECT));
    let code_of = |e: peershare::index::IndexClientError| match e {
        peershare::index::IndexClientError::Protocol {
            source: ProtocolError::Remote(r),
            ..
        } => (r.kind(), r.message),
        other => panic!("{other}"),
    };
    let cases = [
        (
            RelayConnect {
                peer_id: Some(999_999),
                key: None,
                avoid: Vec::new(),
                via: false,
            },
            ErrorCode::NotFound,
            "no peer 999999",
        ),
        (
            RelayConnect {
                peer_id: None,
                key: Some(Digest([9; 32])),
                avoid: Vec::new(),
                via: false,
            },
            ErrorCode::NotFound,
            "no peer with key",
        ),
        (
            RelayConnect {
                peer_id: None,
                key: None,
                avoid: Vec::new(),
                via: false,
            },
            ErrorCode::BadRequest,
            "names no peer",
        ),
        (
            RelayConnect {
                peer_id: Some(id),
                key: Some(Digest([9; 32])),
                avoid: Vec::new(),
                via: false,
            },
            ErrorCode::BadRequest,
            "does not hold",
        ),
        (
            RelayConnect {
                peer_id: Some(id),
                key: None,
                avoid: Vec::new(),
                via: false,
            },
            ErrorCode::Unreachable,
            "not listening",
        ),
    ];
    for (rc, code, text) in cases {
        let client = IndexClient::connect(&index.addr(), None, None, Limits::default())
            .await
            .unwrap();
        let e = client
            .relay_connect(rc, Duration::from_secs(5))
            .await
            .err()
            .expect("refused");
        let (got, message) = code_of(e);
        assert_eq!(got, Some(code), "{message}");
        assert!(message.contains(text), "{message}");
    }
    direct.shutdown().await;
    index.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Attacks: raw requests against the rendezvous and the relay.

use peershare::identity::Identity;
use peershare::index::{ControlEvent, IndexClientError, MAX_RELAY_PENDING_PER_IP};
use peershare::protocol::relay::{RelayToken, incoming_kind};
use peershare::tls::Tls;

/// The code and message of an index's error reply.
fn refusal(e: IndexClientError) -> (Option<ErrorCode>, String) {
    match e {
        IndexClientError::Protocol {
            source: ProtocolError::Remote(r),
            ..
        } => (r.kind(), r.message),
        other => panic!("not an error reply: {other}"),
    }
}

/// An index whose relay requests wait `wait` for their peer.
async fn index_waiting(db: &std::path::Path, wait: Duration) -> TestIndex {
    let config = IndexConfig {
        relay: RelayConfig {
            pending_timeout: wait,
            ..RelayConfig::default()
        },
        ..IndexConfig::default()
    };
    start_index_with(db, "127.0.0.1:0".parse().unwrap(), config).await
}

/// A key registered through the relay by hand (at a dead port), with its registration
/// connection (keep it: the registration ends with it).
async fn relayed_key(index: &str) -> (Identity, Tls, IndexClient, u64) {
    let me = Identity::ephemeral().unwrap();
    let tls = Tls::new(&me).unwrap();
    let mut c = IndexClient::connect(index, Some(&tls), None, Limits::default())
        .await
        .unwrap();
    let reg = c
        .register(&me, "127.0.0.1", dead_port().await, Digest::default(), 0)
        .await
        .unwrap();
    assert_eq!(reg.reach.as_deref(), Some(reach::RELAY));
    assert_eq!(reg.host, "");
    (me, tls, c, reg.peer_id)
}

#[tokio::test]
async fn listen_needs_a_registered_key_and_a_control_channel_answers_only_heartbeats() {
    let tmp = tempfile::tempdir().unwrap();
    let index = start_index(&tmp.path().join("i.sqlite"), Duration::from_secs(90)).await;
    // A key that never registered.
    let c = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let (code, why) = refusal(c.listen().await.err().expect("refused"));
    assert_eq!(code, Some(ErrorCode::Unauthorized), "{why}");
    assert!(why.contains("register"), "{why}");
    // A registered one: heartbeats are answered; anything else closes the channel.
    let (_me, tls, _reg, _) = relayed_key(&index.addr()).await;
    let c = IndexClient::connect(&index.addr(), Some(&tls), None, Limits::default())
        .await
        .unwrap();
    let mut ch = c.listen().await.expect("listening");
    ch.heartbeat().await.unwrap();
    assert!(matches!(ch.next().await.unwrap(), ControlEvent::Ack));
    // Garbage on the channel: raw, a Search.
    let mut raw = raw_secure(&index.addr()).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hello = peershare::protocol::Message::Hello(peershare::protocol::Hello {
        version_min: 1,
        version_max: 1,
        agent: "attacker".into(),
        features: vec![],
        membership: None,
    });
    let frame = |m: &peershare::protocol::Message| {
        let p = m.encode_payload().unwrap();
        let mut f = ((p.len() + 1) as u32).to_be_bytes().to_vec();
        f.push(m.tag());
        f.extend_from_slice(&p);
        f
    };
    raw.write_all(&frame(&hello)).await.unwrap();
    // Listen from this unregistered key, then a Search: refused, the connection stays usable
    // after the refusal of Listen.
    raw.write_all(&frame(&peershare::protocol::Message::Listen))
        .await
        .unwrap();
    raw.write_all(&frame(&peershare::protocol::Message::ListPeers))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Welcome, Error(UNAUTHORIZED), PeerList.
    while count_frames(&got) < 3 {
        let n = tokio::time::timeout_at(deadline, raw.read(&mut buf))
            .await
            .expect("replies")
            .unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let tags = frame_tags(&got);
    assert_eq!(tags, vec![0x02, 0x03, 0x23], "Welcome, Error, PeerList");
    // On a control channel of the registered key, anything but Heartbeat is refused and
    // closes it.
    let tcp = tokio::net::TcpStream::connect(index.addr()).await.unwrap();
    let mut raw = tls
        .connect(tcp, None, Duration::from_secs(5))
        .await
        .unwrap()
        .stream;
    raw.write_all(&frame(&hello)).await.unwrap();
    raw.write_all(&frame(&peershare::protocol::Message::Listen))
        .await
        .unwrap();
    let search = peershare::protocol::Message::Search(peershare::protocol::Search::default());
    raw.write_all(&frame(&search)).await.unwrap();
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout_at(deadline, raw.read(&mut buf))
            .await
            .expect("closed in time");
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    // Welcome, Ack (listening), Error (BAD_REQUEST), then the close.
    assert_eq!(frame_tags(&got), vec![0x02, 0x13, 0x03]);
    // The older channel of the same key was replaced by that one, and closed.
    assert!(
        ch.next().await.is_err(),
        "a newer Listen closes the older channel"
    );
    index.stop().await;
}

fn count_frames(b: &[u8]) -> usize {
    frame_tags(b).len()
}

fn frame_tags(mut b: &[u8]) -> Vec<u8> {
    let mut tags = Vec::new();
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if b.len() < 4 + len {
            break;
        }
        tags.push(b[4]);
        b = &b[4 + len..];
    }
    tags
}

#[tokio::test]
async fn tokens_are_for_their_key_and_go_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let index = index_waiting(&tmp.path().join("i.sqlite"), Duration::from_secs(1)).await;
    let (_me, tls, _reg, id) = relayed_key(&index.addr()).await;
    let c = IndexClient::connect(&index.addr(), Some(&tls), None, Limits::default())
        .await
        .unwrap();
    let mut ch = c.listen().await.unwrap();
    // A requester asks; the listener is told, with the requester's key.
    let requester = client_tls();
    let rq = IndexClient::connect(&index.addr(), Some(&requester), None, Limits::default())
        .await
        .unwrap();
    let asking = tokio::spawn(async move {
        rq.relay_connect(
            RelayConnect {
                peer_id: Some(id),
                key: None,
                avoid: Vec::new(),
                via: false,
            },
            Duration::from_secs(10),
        )
        .await
    });
    let incoming = match tokio::time::timeout(Duration::from_secs(5), ch.next())
        .await
        .unwrap()
        .unwrap()
    {
        ControlEvent::Incoming(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(incoming.kind, incoming_kind::RELAY);
    assert_eq!(incoming.from, requester.public_key());
    // Another key cannot take the token.
    let thief = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let (code, why) = refusal(
        thief
            .relay_accept(incoming.token, Duration::from_secs(5))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(code, Some(ErrorCode::Forbidden), "{why}");
    // Nobody accepts within the index's wait: the requester is told, the token goes stale.
    let (code, why) = refusal(asking.await.unwrap().err().expect("not accepted"));
    assert_eq!(code, Some(ErrorCode::Unreachable), "{why}");
    assert!(why.contains("did not accept"), "{why}");
    let late = IndexClient::connect(&index.addr(), Some(&tls), None, Limits::default())
        .await
        .unwrap();
    let (code, why) = refusal(
        late.relay_accept(incoming.token, Duration::from_secs(5))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(code, Some(ErrorCode::Forbidden), "{why}");
    assert!(why.contains("unknown or expired"), "{why}");
    // A made-up token, too.
    let guess = IndexClient::connect(&index.addr(), Some(&tls), None, Limits::default())
        .await
        .unwrap();
    let (code, _) = refusal(
        guess
            .relay_accept(RelayToken([7; 16]), Duration::from_secs(5))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(code, Some(ErrorCode::Forbidden));
    index.stop().await;
}

/// A flood of relay requests at a peer that never accepts: those beyond the bound get BUSY
/// at once, and the index keeps answering everyone else meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_relay_requests_never_stalls_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let index = index_waiting(&tmp.path().join("i.sqlite"), Duration::from_secs(2)).await;
    let (_me, tls, _reg, id) = relayed_key(&index.addr()).await;
    let c = IndexClient::connect(&index.addr(), Some(&tls), None, Limits::default())
        .await
        .unwrap();
    // Listening, but never reading: its Incoming queue fills up too.
    let _ch = c.listen().await.unwrap();
    let flood = 40;
    let mut tasks = Vec::new();
    for _ in 0..flood {
        let addr = index.addr();
        tasks.push(tokio::spawn(async move {
            let rq = IndexClient::connect(&addr, None, None, Limits::default())
                .await
                .unwrap();
            let started = std::time::Instant::now();
            let r = rq
                .relay_connect(
                    RelayConnect {
                        peer_id: Some(id),
                        key: None,
                        avoid: Vec::new(),
                        via: false,
                    },
                    Duration::from_secs(10),
                )
                .await;
            (refusal(r.err().expect("never accepted")), started.elapsed())
        }));
    }
    // Meanwhile a search is answered at once.
    let mut other = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    other.search("anything", 10).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "search took {:?}",
        started.elapsed()
    );
    let (mut busy, mut waited) = (0, 0);
    for t in tasks {
        let ((code, why), took) = t.await.unwrap();
        match code {
            Some(ErrorCode::Busy) => {
                busy += 1;
                assert!(
                    took < Duration::from_secs(1),
                    "BUSY at once, not after {took:?}: {why}"
                );
            }
            Some(ErrorCode::Unreachable) => waited += 1,
            other => panic!("{other:?}: {why}"),
        }
    }
    assert!(waited <= MAX_RELAY_PENDING_PER_IP, "{waited} waited");
    assert_eq!(busy + waited, flood);
    // Once they are gone, a new request waits its turn again (and is not refused BUSY).
    let rq = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let (code, _) = refusal(
        rq.relay_connect(
            RelayConnect {
                peer_id: Some(id),
                key: None,
                avoid: Vec::new(),
                via: false,
            },
            Duration::from_secs(10),
        )
        .await
        .err()
        .unwrap(),
    );
    assert_eq!(code, Some(ErrorCode::Unreachable));
    index.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary: share says how it is reachable, get says how each source was reached.

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

fn start_bin(args: &[&str], home: &std::path::Path) -> Running {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX");
    Running::spawn_lines(cmd, None, Lines::Stdout)
}

#[test]
fn share_says_how_it_is_reachable_and_get_says_relayed() {
    let t = tempfile::tempdir().unwrap();
    let shared = t.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let body = data(3 * 262_144 + 11, 3);
    std::fs::write(shared.join("far.bin"), &body).unwrap();
    let mut index = start_bin(&["index", "--listen", "127.0.0.1:0"], &t.path().join("ix"));
    let ix = index.listening();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let advertise = dead.local_addr().unwrap().to_string();
    drop(dead);
    let dir = shared.to_str().unwrap();
    let mut hidden = start_bin(
        &[
            "share",
            dir,
            "--index",
            &ix,
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            &advertise,
        ],
        &t.path().join("hidden"),
    );
    let line = hidden.wait_line("reachable through the index's relay");
    assert!(
        line.contains("127.0.0.1:"),
        "says where the index sees it: {line}"
    );
    // A peer the index reaches says where.
    let other = t.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("near.txt"), b"near").unwrap();
    let mut direct = start_bin(
        &[
            "share",
            other.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "127.0.0.1:0",
        ],
        &t.path().join("direct"),
    );
    let at = direct.wait_line("reachable at ");
    assert!(at.contains("reachable at 127.0.0.1:"), "{at}");

    let id = b3sum(&shared.join("far.bin"));
    let dl = t.path().join("dl");
    let home = t.path().join("client");
    let out = run_peershare(
        &[
            "get",
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--json",
            "--index",
            &ix,
            // Reached through the relay, not after a hole punch (tests/quic.rs).
            "--no-punch",
        ],
        &home,
    );
    let used = [the_used_source(&out)];
    assert_eq!(used[0]["reached"], "relayed");
    assert_eq!(used[0]["relay"], ix.as_str());
    assert_eq!(used[0]["bytes"], body.len() as u64);
    assert_eq!(b3sum(&dl.join("far.bin")), id);
    // A one-piece file from the peer reached directly says so too.
    let near = b3sum(&other.join("near.txt"));
    let out = run_peershare(
        &[
            "get",
            &near,
            "-o",
            dl.to_str().unwrap(),
            "--json",
            "--index",
            &ix,
        ],
        &home,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let source = &doc["downloads"][0]["sources"][0];
    assert_eq!(source["reached"], "direct", "{doc}");
    assert!(source["relay"].is_null(), "{doc}");
    // Without --json: a line on stderr per file.
    let out = run_peershare(
        &[
            "get",
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--index",
            &ix,
            "--redownload",
            "--no-punch",
        ],
        &home,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("from peer 1 (relayed via {ix}, 768.0 KiB)")),
        "{err}"
    );
    drop(direct);
    drop(hidden);
    drop(index);
}

/// `--relay-rate` and each member's share of it (a quarter): one member's download through a
/// relay capped at 1 MiB/s goes at most at 256 KiB/s. (A lower bound on the time: the cap is
/// a correctness property; speed itself is not asserted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gets_its_share_of_the_relay_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let config = IndexConfig {
        relay: RelayConfig {
            rate: 1024 * 1024,
            ..RelayConfig::default()
        },
        ..IndexConfig::default()
    };
    let index = start_index_with(
        &tmp.path().join("i.sqlite"),
        "127.0.0.1:0".parse().unwrap(),
        config,
    )
    .await;
    let body = data(640 * 1024, 11);
    let shared = shared_dir(tmp.path(), "capped.bin", &body);
    let mut share = start_hidden_peer(&shared, &index.addr(), &tmp.path().join("s")).await;
    share
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("listening");
    let mut c = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let found = c.search("capped", 10).await.unwrap();
    let out = tmp.path().join("out");
    let (report, took) = get_relayed(&index.addr(), c.server_key(), &found.files, &out, None).await;
    assert_eq!(std::fs::read(out.join("capped.bin")).unwrap(), body);
    assert_eq!(report.sources[0].reached, Some("relayed"));
    // 640 KiB at 256 KiB/s: 2.5 s (the whole rate would take 0.6 s).
    assert!(
        took >= Duration::from_millis(1800),
        "took {took:?}: faster than a member's share"
    );
    share.shutdown().await;
    index.stop().await;
}

/// In a private group: a member behind a NAT is downloaded from by another member through the
/// relay (membership checked end to end, inside), and a stranger's `RelayConnect` is refused:
/// the relay carries no traffic for strangers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_groups_relay_serves_members_only() {
    use peershare::download::RelayRoute;
    use peershare::node::{GetOptions, download_all};
    let tmp = tempfile::tempdir().unwrap();
    let ix = start_private_index(&tmp.path().join("ix.sqlite")).await;
    let body = data(300_000, 2);
    let shared = shared_dir(tmp.path(), "members-only.bin", &body);
    let state = tmp.path().join("a");
    let a_tls = ix.member(&Identity::load_or_create(&state).unwrap()).await;
    let mut config = ShareConfig::new(vec![shared], Some(ix.addr.clone()), state);
    config.index_key = Some(ix.key);
    config.group = a_tls.group().cloned();
    config.advertise = Some(("127.0.0.1".into(), dead_port().await));
    let mut share = start_share(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    share
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("a member registered through the relay, listening");
    let a_id = share.status.borrow().peer_id.unwrap();

    let b_tls = ix.member(&Identity::ephemeral().unwrap()).await;
    let mut c = IndexClient::connect(&ix.addr, Some(&b_tls), Some(ix.key), Limits::default())
        .await
        .unwrap();
    let found = c.search("members-only", 10).await.unwrap();
    assert_eq!(found.files[0].peers[0].reach.as_deref(), Some(reach::RELAY));
    let opts = GetOptions {
        tls: Some(b_tls.clone()),
        relay: Some(RelayRoute {
            index: ix.addr.clone(),
            index_key: Some(ix.key),
        }),
        ..GetOptions::default()
    };
    let out = tmp.path().join("out");
    let report = download_all(&found.files, &out, &opts, 1)
        .await
        .remove(0)
        .expect("a member downloads");
    assert_eq!(report.sources[0].reached, Some("relayed"));
    assert_eq!(std::fs::read(out.join("members-only.bin")).unwrap(), body);

    // A stranger: refused before anything is relayed.
    let stranger = IndexClient::connect(&ix.addr, None, Some(ix.key), Limits::default())
        .await
        .unwrap();
    let e = stranger
        .relay_connect(
            RelayConnect {
                peer_id: Some(a_id),
                key: None,
                avoid: Vec::new(),
                via: false,
            },
            Duration::from_secs(5),
        )
        .await
        .err()
        .expect("refused");
    let (code, why) = refusal(e);
    assert_eq!(code, Some(ErrorCode::Forbidden), "{why}");
    share.shutdown().await;
}

/// With the relay, registering someone else's address still lists no one there: the key that
/// does not answer at that address is registered as reached through the relay, at no address.
#[tokio::test]
async fn someone_elses_address_is_never_listed_through_the_relay_either() {
    let tmp = tempfile::tempdir().unwrap();
    let index = start_index(&tmp.path().join("i.sqlite"), Duration::from_secs(90)).await;
    let shared = shared_dir(tmp.path(), "a.txt", b"alice");
    let alice = start_peer(&shared, Some(index.addr()), &tmp.path().join("a")).await;
    let alice_port = alice.local_addr.port();
    let bob = Identity::ephemeral().unwrap();
    let mut c = IndexClient::connect(
        &index.addr(),
        Some(&Tls::new(&bob).unwrap()),
        None,
        Limits::default(),
    )
    .await
    .unwrap();
    let reg = c
        .register(&bob, "127.0.0.1", alice_port, Digest::default(), 0)
        .await
        .unwrap();
    assert_eq!(reg.reach.as_deref(), Some(reach::RELAY));
    assert_eq!(reg.host, "");
    let peers = c.list_peers().await.unwrap().peers;
    let at_alices: Vec<_> = peers.iter().filter(|p| p.port == alice_port).collect();
    assert_eq!(at_alices.len(), 1, "only Alice at her address: {peers:?}");
    assert_eq!(at_alices[0].peer_id, alice.status.borrow().peer_id.unwrap());
    let bobs = peers.iter().find(|p| p.peer_id == reg.peer_id).unwrap();
    assert_eq!((bobs.host.as_str(), bobs.port), ("", 0));
    alice.shutdown().await;
    index.stop().await;
}
