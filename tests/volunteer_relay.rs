//! Members volunteering as relays (`share --relay`, docs/PROTOCOL.md §7.10) on 127.0.0.0/8:
//! the index routes relay requests through them (`RelayVia`), even when it relays nothing
//! itself; a volunteer carries only what the index ordered between the two keys it named,
//! within its own rate cap; a volunteer that fails is passed over.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use peershare::content::Digest;
use peershare::identity::Identity;
use peershare::index::{IndexClient, IndexClientError, RelayRouted};
use peershare::node::{ShareConfig, ShareHandle, start_share};
use peershare::peer::{Catalog, PeerClient, PeerConfig, PeerServer};
use peershare::protocol::relay::{MAX_RELAY_AVOID, RelayConnect, RelayToken, reach};
use peershare::protocol::{ErrorCode, Limits, ProtocolError};
use peershare::splice::SpliceLimits;
use peershare::tls::Tls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

/// An index that relays nothing itself (`--no-relay`).
async fn index_without_relay(tmp: &Path) -> TestIndex {
    start_index_no_relay(&tmp.join("i.sqlite"), Duration::from_secs(90)).await
}

/// A share of `dir` at `index`: volunteering as a relay within `relay` when given, and
/// unreachable (advertising a dead port) when `hidden`.
async fn share(
    dir: &Path,
    index: &str,
    state: &Path,
    relay: Option<SpliceLimits>,
    hidden: bool,
) -> ShareHandle {
    let mut config = ShareConfig::new(
        vec![dir.to_path_buf()],
        Some(index.to_string()),
        state.to_path_buf(),
    );
    config.relay = relay;
    if hidden {
        config.advertise = Some(("127.0.0.1".into(), dead_port().await));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_share(config, listener).await.expect("share")
}

/// A volunteer sharing an empty directory, taken by the index and listening.
async fn volunteer(tmp: &Path, index: &str, name: &str, limits: SpliceLimits) -> ShareHandle {
    let empty = tmp.join(format!("{name}-empty"));
    std::fs::create_dir(&empty).unwrap();
    let mut v = share(&empty, index, &tmp.join(name), Some(limits), false).await;
    let status = v
        .wait_for(Duration::from_secs(20), |s| {
            s.volunteer == Some(true) && s.listening
        })
        .await
        .expect("taken as a volunteer relay, listening");
    assert_eq!(status.reach.as_deref(), Some(reach::DIRECT));
    v
}

/// A directory in `tmp` holding one file.
fn shared_dir(tmp: &Path, dir: &str, name: &str, body: &[u8]) -> PathBuf {
    let shared = tmp.join(dir);
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join(name), body).unwrap();
    shared
}

fn refusal(e: IndexClientError) -> (Option<ErrorCode>, String) {
    match e {
        IndexClientError::Protocol {
            source: ProtocolError::Remote(r),
            ..
        } => (r.kind(), r.message),
        other => (None, other.to_string()),
    }
}

fn peer_refusal(e: peershare::peer::PeerClientError) -> (Option<ErrorCode>, String) {
    match e {
        peershare::peer::PeerClientError::Protocol(ProtocolError::Remote(r)) => {
            (r.kind(), r.message)
        }
        other => (None, other.to_string()),
    }
}

/// Sends `RelayAccept {token}` on `client`; its refusal (it must be one).
async fn accept_refused(client: PeerClient, token: RelayToken) -> (Option<ErrorCode>, String) {
    let r = client.relay_accept(token, Duration::from_secs(5)).await;
    peer_refusal(r.err().expect("RelayAccept refused"))
}

/// A connection to the peer at `addr`, as `tls`'s key (or a fresh one), requiring `key`.
async fn peer_at(addr: &str, tls: Option<&Tls>, key: Option<Digest>) -> PeerClient {
    PeerClient::connect(addr, tls, key, Limits::default())
        .await
        .expect("connect to the peer")
}

/// The user's story: at an index that relays nothing, a peer it cannot reach is registered
/// all the same while a member volunteers, and downloaded from through the volunteer; a peer
/// asking to volunteer that the index cannot reach is not taken; when the volunteer leaves,
/// the index says no one relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_carries_what_the_index_does_not_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let index = index_without_relay(tmp.path()).await;
    let v = volunteer(tmp.path(), &index.addr(), "v", SpliceLimits::default()).await;
    let body = data(700_000, 5);
    let shared = shared_dir(tmp.path(), "shared", "carried.bin", &body);
    // It asks to volunteer too, but the index cannot reach it: not taken, reached through one.
    let mut hidden = share(
        &shared,
        &index.addr(),
        &tmp.path().join("h"),
        Some(SpliceLimits::default()),
        true,
    )
    .await;
    let status = hidden
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("registered through a volunteer's relay, listening");
    assert_eq!(status.reach.as_deref(), Some(reach::RELAY));
    assert_eq!(status.volunteer, Some(false));
    let hidden_id = status.peer_id.unwrap();

    let mut c = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let found = c.search("carried", 10).await.unwrap();
    assert_eq!(found.files[0].peers[0].reach.as_deref(), Some(reach::RELAY));
    let before = peershare::metrics::node().bytes_relayed.get();
    let out = tmp.path().join("out");
    let (report, _) = get_relayed(&index.addr(), c.server_key(), &found.files, &out, None).await;
    assert_eq!(std::fs::read(out.join("carried.bin")).unwrap(), body);
    assert_eq!(report.sources[0].reached, Some("relayed"));
    let v_addr = v.local_addr.to_string();
    assert_eq!(report.sources[0].relay.as_deref(), Some(v_addr.as_str()));
    assert_eq!(report.sources[0].bytes, body.len() as u64);
    let carried = peershare::metrics::node().bytes_relayed.get() - before;
    assert!(
        carried > body.len() as u64,
        "the volunteer counted {carried} bytes"
    );

    // The volunteer leaves: no one relays now.
    v.shutdown().await;
    let refused = eventually(Duration::from_secs(10), || {
        let addr = index.addr();
        async move {
            let rq = IndexClient::connect(&addr, None, None, Limits::default())
                .await
                .ok()?;
            let rc = RelayConnect {
                peer_id: Some(hidden_id),
                key: None,
                avoid: Vec::new(),
                via: true,
            };
            match rq.relay_connect(rc, Duration::from_secs(5)).await {
                Err(e) => Some(refusal(e)),
                Ok(_) => None,
            }
        }
    })
    .await
    .expect("refused once the volunteer is gone");
    assert_eq!(refused.0, Some(ErrorCode::Unreachable), "{}", refused.1);
    assert!(
        refused.1.contains("no member volunteering as a relay"),
        "{}",
        refused.1
    );
    hidden.shutdown().await;
    index.stop().await;
}

/// Attacks on a volunteer's desk with a real token: another key cannot use it (and does not
/// use it up), an unknown token and a peer that does not volunteer are refused, too many
/// volunteers avoided is a bad request; the token's own key is then relayed to the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_carries_only_for_the_keys_the_index_named() {
    let tmp = tempfile::tempdir().unwrap();
    let index = index_without_relay(tmp.path()).await;
    let v = volunteer(tmp.path(), &index.addr(), "v", SpliceLimits::default()).await;
    let v_addr = v.local_addr.to_string();
    let shared = shared_dir(tmp.path(), "shared", "a.txt", b"hello");
    let mut hidden = share(&shared, &index.addr(), &tmp.path().join("h"), None, true).await;
    let status = hidden
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("listening");
    let hidden_id = status.peer_id.unwrap();
    let plain = shared_dir(tmp.path(), "plain", "b.txt", b"plain");
    let plain_peer = start_peer(&plain, Some(index.addr()), &tmp.path().join("p")).await;

    let asker = client_tls();
    let rq = IndexClient::connect(&index.addr(), Some(&asker), None, Limits::default())
        .await
        .unwrap();
    // More avoided volunteers than the bound: refused, the connection goes on.
    let too_many = RelayConnect {
        peer_id: Some(hidden_id),
        key: None,
        avoid: vec![Digest([1; 32]); MAX_RELAY_AVOID + 1],
        via: true,
    };
    let e = IndexClient::connect(&index.addr(), Some(&asker), None, Limits::default())
        .await
        .unwrap()
        .relay_connect(too_many, Duration::from_secs(5))
        .await
        .err()
        .expect("refused");
    assert_eq!(refusal(e).0, Some(ErrorCode::BadRequest));
    let rc = RelayConnect {
        peer_id: Some(hidden_id),
        key: None,
        avoid: Vec::new(),
        via: true,
    };
    let RelayRouted::Via(_, via) = rq.relay_connect(rc, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("the index relays nothing itself: a volunteer must carry it");
    };
    assert_eq!(via.addr, v_addr);

    // Another key with the token: refused, and the token still works for its own key.
    let thief = peer_at(&via.addr, None, Some(via.key)).await;
    let (code, why) = accept_refused(thief, via.token).await;
    assert_eq!(code, Some(ErrorCode::Forbidden), "{why}");
    assert!(why.contains("unknown or expired relay token"), "{why}");
    // A token the index never gave.
    let guess = peer_at(&via.addr, Some(&asker), Some(via.key)).await;
    let (code, _) = accept_refused(guess, RelayToken([7; 16])).await;
    assert_eq!(code, Some(ErrorCode::Forbidden));
    // RelayAccept after another request: refused, the token is not used up.
    let mut late = peer_at(&via.addr, Some(&asker), Some(via.key)).await;
    assert!(
        late.info(peershare::content::ContentId::from_bytes([3; 32]))
            .await
            .is_err()
    );
    let (code, why) = accept_refused(late, via.token).await;
    assert_eq!(code, Some(ErrorCode::BadRequest), "{why}");
    assert!(why.contains("comes first"), "{why}");
    // A peer that does not volunteer.
    let plain_addr = plain_peer.local_addr.to_string();
    let not_a_relay = peer_at(&plain_addr, Some(&asker), None).await;
    let (code, why) = accept_refused(not_a_relay, via.token).await;
    assert_eq!(code, Some(ErrorCode::BadRequest), "{why}");
    assert!(why.contains("does not relay"), "{why}");

    // The asker's own key: relayed to the hidden peer, whose key the volunteer names.
    let mine = peer_at(&via.addr, Some(&asker), Some(via.key)).await;
    let (io, relayed) = mine
        .relay_accept(via.token, Duration::from_secs(20))
        .await
        .expect("relayed");
    let (stream, proved) = asker
        .connect_over(
            io,
            "127.0.0.1".parse().unwrap(),
            Some(relayed.peer),
            Duration::from_secs(10),
        )
        .await
        .expect("the peers' TLS inside the volunteer's");
    assert_eq!(proved, relayed.peer);
    let stream =
        peershare::tls::PeerStream::Relayed(Box::new(tokio_rustls::TlsStream::Client(stream)));
    let mut p = PeerClient::over(stream, proved, &asker, Limits::default(), "relayed")
        .await
        .expect("Hello inside");
    let found = c_search(&index.addr(), "a.txt").await;
    let info = p.info(found).await.expect("GetInfo through the volunteer");
    assert_eq!(info.size, 5);
    drop(p);
    plain_peer.shutdown().await;
    hidden.shutdown().await;
    v.shutdown().await;
    index.stop().await;
}

async fn c_search(index: &str, q: &str) -> peershare::content::ContentId {
    let mut c = IndexClient::connect(index, None, None, Limits::default())
        .await
        .unwrap();
    c.search(q, 10).await.unwrap().files[0].content_id
}

/// A volunteer that the index names but that does not carry (here: a registered key whose
/// peer server does not relay) is passed over: the downloader asks again, avoiding it, and
/// the index relays itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_that_fails_is_passed_over() {
    let tmp = tempfile::tempdir().unwrap();
    let index = start_index(&tmp.path().join("i.sqlite"), Duration::from_secs(90)).await;
    // The false volunteer: a peer server with its key, no desk, and a control channel.
    let me = Identity::ephemeral().unwrap();
    let tls = Tls::new(&me).unwrap();
    let (_catalog_tx, catalog) = tokio::sync::watch::channel(Arc::new(Catalog::new(Vec::new())));
    let server = PeerServer::new(
        catalog,
        Vec::new(),
        PeerConfig::default(),
        Arc::new(tokio::sync::Notify::new()),
        tls.clone(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(listener, stop.clone()));
    let mut reg = IndexClient::connect(&index.addr(), Some(&tls), None, Limits::default())
        .await
        .unwrap();
    let r = reg
        .register_volunteer(&me, "127.0.0.1", port, Digest::default(), 0)
        .await
        .unwrap();
    assert_eq!(r.relay, Some(true));
    let channel = IndexClient::connect(&index.addr(), Some(&tls), None, Limits::default())
        .await
        .unwrap()
        .listen()
        .await
        .unwrap();

    let body = data(300_000, 9);
    let shared = shared_dir(tmp.path(), "shared", "fallback.bin", &body);
    let mut hidden = share(&shared, &index.addr(), &tmp.path().join("h"), None, true).await;
    hidden
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("listening");
    let mut c = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let found = c.search("fallback", 10).await.unwrap();
    // The index names the false volunteer first; it refuses to carry.
    let hit = &found.files[0].peers[0];
    let rc = RelayConnect {
        peer_id: Some(hit.peer_id),
        key: hit.key,
        avoid: Vec::new(),
        via: true,
    };
    let rq = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let RelayRouted::Via(_, via) = rq.relay_connect(rc, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("a volunteer listens: the index must name it");
    };
    assert_eq!(via.key, me.public_key());
    let (code, _) = accept_refused(peer_at(&via.addr, None, Some(via.key)).await, via.token).await;
    assert_eq!(code, Some(ErrorCode::BadRequest));
    // A requester built before volunteers (no `via`) is relayed by the index itself.
    let rc = RelayConnect {
        peer_id: Some(hit.peer_id),
        key: hit.key,
        avoid: Vec::new(),
        via: false,
    };
    let rq = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    match rq.relay_connect(rc, Duration::from_secs(15)).await.unwrap() {
        RelayRouted::Here(_, relayed) => assert_eq!(Some(relayed.peer), hit.key),
        RelayRouted::Via(..) => panic!("sent a requester that does not know volunteers to one"),
    }
    let out = tmp.path().join("out");
    let (report, _) = get_relayed(&index.addr(), c.server_key(), &found.files, &out, None).await;
    assert_eq!(std::fs::read(out.join("fallback.bin")).unwrap(), body);
    assert_eq!(report.sources[0].reached, Some("relayed"));
    let ix = index.addr();
    assert_eq!(
        report.sources[0].relay.as_deref(),
        Some(ix.as_str()),
        "the index relayed it"
    );
    drop(channel);
    drop(reg);
    hidden.shutdown().await;
    stop.cancel();
    index.stop().await;
}

/// `share --relay-rate` and each member's quarter of it: a download through a volunteer
/// capped at 1 MiB/s goes at most at 256 KiB/s. (A lower bound on the time: the cap is a
/// correctness property; speed itself is not asserted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_keeps_its_rate_cap_per_member() {
    let tmp = tempfile::tempdir().unwrap();
    let index = index_without_relay(tmp.path()).await;
    let limits = SpliceLimits {
        rate: 1024 * 1024,
        ..SpliceLimits::default()
    };
    let v = volunteer(tmp.path(), &index.addr(), "v", limits).await;
    let body = data(640 * 1024, 12);
    let shared = shared_dir(tmp.path(), "shared", "capped.bin", &body);
    let mut hidden = share(&shared, &index.addr(), &tmp.path().join("h"), None, true).await;
    hidden
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
    hidden.shutdown().await;
    v.shutdown().await;
    index.stop().await;
}

/// In a private group a volunteer carries for members only: a member behind a NAT is
/// downloaded from by another member through a member volunteering (membership checked end to
/// end, inside), while a stranger is refused at the volunteer's `Hello`, before it can send a
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_private_group_a_volunteer_carries_for_members_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ix = start_private_index(&tmp.path().join("ix.sqlite")).await;
    let member_share = |dir: PathBuf, state: PathBuf, tls: Tls, relay, hidden| {
        let ix_addr = ix.addr.clone();
        let ix_key = ix.key;
        async move {
            let mut config = ShareConfig::new(vec![dir], Some(ix_addr), state);
            config.index_key = Some(ix_key);
            config.group = tls.group().cloned();
            config.relay = relay;
            if hidden {
                config.advertise = Some(("127.0.0.1".into(), dead_port().await));
            }
            start_share(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
                .await
                .unwrap()
        }
    };
    let v_state = tmp.path().join("v");
    let v_tls = ix
        .member(&Identity::load_or_create(&v_state).unwrap())
        .await;
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut v = member_share(empty, v_state, v_tls, Some(SpliceLimits::default()), false).await;
    v.wait_for(Duration::from_secs(20), |s| {
        s.volunteer == Some(true) && s.listening
    })
    .await
    .expect("a member volunteering, listening");

    let body = data(300_000, 4);
    let shared = shared_dir(tmp.path(), "shared", "members-only.bin", &body);
    let a_state = tmp.path().join("a");
    let a_tls = ix
        .member(&Identity::load_or_create(&a_state).unwrap())
        .await;
    let mut a = member_share(shared, a_state, a_tls, None, true).await;
    a.wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("a member registered through a relay, listening");
    let a_id = a.status.borrow().peer_id.unwrap();

    let b_tls = ix.member(&Identity::ephemeral().unwrap()).await;
    let mut c = IndexClient::connect(&ix.addr, Some(&b_tls), Some(ix.key), Limits::default())
        .await
        .unwrap();
    let found = c.search("members-only", 10).await.unwrap();
    let out = tmp.path().join("out");
    let (report, _) = get_relayed(&ix.addr, ix.key, &found.files, &out, Some(b_tls.clone())).await;
    assert_eq!(report.sources[0].reached, Some("relayed"));
    assert_eq!(std::fs::read(out.join("members-only.bin")).unwrap(), body);

    // A member's token, taken to the volunteer by a stranger: refused at Hello.
    let rq = IndexClient::connect(&ix.addr, Some(&b_tls), Some(ix.key), Limits::default())
        .await
        .unwrap();
    let rc = RelayConnect {
        peer_id: Some(a_id),
        key: None,
        avoid: Vec::new(),
        via: true,
    };
    let RelayRouted::Via(_, via) = rq.relay_connect(rc, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("a member volunteers: the index must name it");
    };
    let stranger = PeerClient::connect(&via.addr, None, Some(via.key), Limits::default()).await;
    let why = match stranger {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a stranger was welcomed by a private group's volunteer"),
    };
    assert!(why.contains("member"), "{why}");
    a.shutdown().await;
    v.shutdown().await;
}

/// A flood of relay requests routed to a volunteer is bounded as one the index relays itself:
/// from one address, at most `MAX_RELAY_PENDING_PER_IP` wait at once, then `BUSY`, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_volunteers_is_bounded_per_address() {
    let tmp = tempfile::tempdir().unwrap();
    let index = index_without_relay(tmp.path()).await;
    let v = volunteer(tmp.path(), &index.addr(), "v", SpliceLimits::default()).await;
    let shared = shared_dir(tmp.path(), "shared", "a.txt", b"flood");
    let mut hidden = share(&shared, &index.addr(), &tmp.path().join("h"), None, true).await;
    let status = hidden
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("listening");
    let id = status.peer_id.unwrap();
    let mut routed = 0;
    let mut busy = None;
    let started = std::time::Instant::now();
    for _ in 0..peershare::index::MAX_RELAY_PENDING_PER_IP + 1 {
        let rq = IndexClient::connect(&index.addr(), None, None, Limits::default())
            .await
            .unwrap();
        let rc = RelayConnect {
            peer_id: Some(id),
            key: None,
            avoid: Vec::new(),
            via: true,
        };
        match rq.relay_connect(rc, Duration::from_secs(5)).await {
            Ok(RelayRouted::Via(..)) => routed += 1,
            Ok(RelayRouted::Here(..)) => panic!("the index relays nothing itself"),
            Err(e) => {
                busy = Some(refusal(e));
                break;
            }
        }
    }
    assert_eq!(routed, peershare::index::MAX_RELAY_PENDING_PER_IP);
    let (code, why) = busy.expect("refused beyond the bound");
    assert_eq!(code, Some(ErrorCode::Busy), "{why}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
    hidden.shutdown().await;
    v.shutdown().await;
    index.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary: `share --relay` says whether the index took it, `get` goes through it.

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

fn start_bin(args: &[&str], home: &Path) -> Running {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX");
    Running::spawn_lines(cmd, None, Lines::Both)
}

#[test]
fn share_relay_says_so_and_get_goes_through_it() {
    let t = tempfile::tempdir().unwrap();
    let mut index = start_bin(
        &["index", "--listen", "127.0.0.1:0", "--no-relay"],
        &t.path().join("ix"),
    );
    let ix = index.listening();
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut v = start_bin(
        &[
            "share",
            empty.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "127.0.0.1:0",
            "--relay",
            "--relay-rate",
            "0",
        ],
        &t.path().join("v"),
    );
    v.wait_line("relaying for the other members through this peer's port");
    let body = data(2 * 262_144 + 5, 8);
    let shared = shared_dir(t.path(), "shared", "through.bin", &body);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let advertise = dead.local_addr().unwrap().to_string();
    drop(dead);
    // It asks to volunteer too, but the index cannot connect to it: it says so.
    let mut hidden = start_bin(
        &[
            "share",
            shared.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            &advertise,
            "--relay",
        ],
        &t.path().join("hidden"),
    );
    hidden.wait_line("reachable through the index's relay");
    hidden.wait_line("not relaying for others");
    let id = b3sum(&shared.join("through.bin"));
    let dl = t.path().join("dl");
    let out = run_peershare(
        &[
            "get",
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--json",
            "--index",
            &ix,
            "--no-punch",
        ],
        &t.path().join("client"),
    );
    let used = [the_used_source(&out)];
    assert_eq!(used[0]["reached"], "relayed");
    let relay = used[0]["relay"].as_str().unwrap_or_default();
    assert!(
        relay.starts_with("127.0.0.1:") && relay != ix,
        "relayed by the volunteer, not the index: {relay}"
    );
    assert_eq!(b3sum(&dl.join("through.bin")), id);
    // --relay-rate means nothing without --relay.
    let out = run_peershare(
        &["share", empty.to_str().unwrap(), "--relay-rate", "1MiB"],
        &t.path().join("bad"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--relay"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(hidden);
    drop(v);
    drop(index);
}

/// The two ends at a volunteer, as raw clients: the same end twice is refused while the first
/// keeps its place; the listening end (told `via` on its control channel) joins and both get
/// `Relayed` naming the other; an end whose other never comes is told so once the order
/// expires (`CARRY_TIMEOUT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ends_meet_at_the_volunteer_once_each() {
    use peershare::index::ControlEvent;
    use peershare::protocol::relay::{CARRY_TIMEOUT, incoming_kind};
    let tmp = tempfile::tempdir().unwrap();
    let index = index_without_relay(tmp.path()).await;
    let v = volunteer(tmp.path(), &index.addr(), "v", SpliceLimits::default()).await;
    // A listening peer by hand: registered at a dead port, its control channel read here.
    let l_id = Identity::ephemeral().unwrap();
    let l_tls = Tls::new(&l_id).unwrap();
    let mut reg = IndexClient::connect(&index.addr(), Some(&l_tls), None, Limits::default())
        .await
        .unwrap();
    let r = reg
        .register(&l_id, "127.0.0.1", dead_port().await, Digest::default(), 0)
        .await
        .unwrap();
    assert_eq!(r.reach.as_deref(), Some(reach::RELAY));
    let mut channel = IndexClient::connect(&index.addr(), Some(&l_tls), None, Limits::default())
        .await
        .unwrap()
        .listen()
        .await
        .unwrap();
    let asker = client_tls();
    let ask = || async {
        let rq = IndexClient::connect(&index.addr(), Some(&asker), None, Limits::default())
            .await
            .unwrap();
        let rc = RelayConnect {
            peer_id: Some(r.peer_id),
            key: None,
            avoid: Vec::new(),
            via: true,
        };
        match rq.relay_connect(rc, Duration::from_secs(5)).await.unwrap() {
            RelayRouted::Via(_, via) => via,
            RelayRouted::Here(..) => panic!("the index relays nothing itself"),
        }
    };
    let via = ask().await;
    let told = match tokio::time::timeout(Duration::from_secs(5), channel.next())
        .await
        .expect("told in time")
        .unwrap()
    {
        ControlEvent::Incoming(i) => i,
        ControlEvent::Ack => panic!("no Incoming"),
    };
    assert_eq!(told.kind, incoming_kind::RELAY);
    assert_eq!(told.token, via.token);
    assert_eq!(told.from, asker.public_key());
    assert_eq!(told.via.as_deref(), Some(via.addr.as_str()));
    assert_eq!(told.via_key, Some(via.key));

    let end = |tls: Tls| {
        let (addr, key, token) = (via.addr.clone(), via.key, via.token);
        async move {
            peer_at(&addr, Some(&tls), Some(key))
                .await
                .relay_accept(token, Duration::from_secs(20))
                .await
        }
    };
    // The same end twice at once: one of them is refused, the other keeps its place.
    let mut a = tokio::spawn(end(asker.clone()));
    let mut b = tokio::spawn(end(asker.clone()));
    let (refused, first) = tokio::select! {
        r = &mut a => (r.unwrap(), b),
        r = &mut b => (r.unwrap(), a),
    };
    let again = peer_refusal(refused.err().expect("one end relayed to itself"));
    assert_eq!(again.0, Some(ErrorCode::Forbidden), "{}", again.1);
    let (_, to_listener) = end(l_tls.clone()).await.expect("the listening end joins");
    assert_eq!(to_listener.peer, asker.public_key());
    assert!(
        to_listener
            .addr
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    let (_, to_asker) = first.await.unwrap().expect("the first end is relayed");
    assert_eq!(to_asker.peer, l_id.public_key());
    assert_eq!(to_asker.addr, None);

    // An order whose other end never comes.
    let via = ask().await;
    let started = std::time::Instant::now();
    let alone = peer_at(&via.addr, Some(&asker), Some(via.key))
        .await
        .relay_accept(via.token, CARRY_TIMEOUT + Duration::from_secs(10))
        .await;
    let (code, why) = peer_refusal(alone.err().expect("refused"));
    assert_eq!(code, Some(ErrorCode::Unreachable), "{why}");
    assert!(why.contains("did not come within"), "{why}");
    assert!(started.elapsed() < CARRY_TIMEOUT + Duration::from_secs(5));
    drop(channel);
    drop(reg);
    v.shutdown().await;
    index.stop().await;
}
