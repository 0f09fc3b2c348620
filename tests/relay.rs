//! Rendezvous and relay (docs/PROTOCOL.md §7.10) on 127.0.0.0/8: a peer the index cannot reach
//! (it advertises a port nobody listens on) registers as reached through the relay, keeps a
//! control channel, and is downloaded from through the index with the peers' TLS inside.

mod common;

use std::time::Duration;

use common::*;
use peershare::content::{ContentId, Digest};
use peershare::index::{IndexClient, IndexConfig, RelayConfig};
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

#[tokio::test]
async fn an_unreachable_peer_registers_through_the_relay_and_listens() {
    let tmp = tempfile::tempdir().unwrap();
    let index = start_index(&tmp.path().join("i.sqlite"), Duration::from_secs(90)).await;
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("behind-nat.txt"), b"hello from behind a NAT").unwrap();
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
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let body = data(700_000, 7);
    std::fs::write(shared.join("f.bin"), &body).unwrap();
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
    };
    let (io, relayed) = client
        .relay_connect(rc, Duration::from_secs(15))
        .await
        .expect("relayed");
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
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("x.txt"), b"x").unwrap();
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
            },
            ErrorCode::NotFound,
            "no peer 999999",
        ),
        (
            RelayConnect {
                peer_id: None,
                key: Some(Digest([9; 32])),
            },
            ErrorCode::NotFound,
            "no peer with key",
        ),
        (
            RelayConnect {
                peer_id: None,
                key: None,
            },
            ErrorCode::BadRequest,
            "names no peer",
        ),
        (
            RelayConnect {
                peer_id: Some(id),
                key: Some(Digest([9; 32])),
            },
            ErrorCode::BadRequest,
            "does not hold",
        ),
        (
            RelayConnect {
                peer_id: Some(id),
                key: None,
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
