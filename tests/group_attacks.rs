//! Regression tests for the attacks a review confirmed on private groups and the index's address
//! check (docs/PROTOCOL.md §4.2, §7.1), each asserting the fixed behaviour: a hostile server
//! cannot replace a member's certificate, and only the group's index sees it; invite secrets stay
//! out of link errors; `Joined` as specified decodes; the address check is bounded (failures per
//! connection, checks at once per address, one deadline); a removal or expiry ends connections
//! already open, and is never followed by a renewal; pins written at once are all kept; a member
//! sharing open at its private index is not listed there.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use peershare::content::{ContentId, Digest};
use peershare::group::{GroupState, Invite, Membership, ShareLink};
use peershare::identity::Identity;
use peershare::index::{
    GroupStore, IndexClient, IndexClientError, MAX_ADDRESS_CHECKS_PER_IP, MAX_FAILED_CHECKS,
};
use peershare::node::{KnownIndexes, ShareConfig, ShareHandle, start_share};
use peershare::peer::{PeerClient, PeerClientError};
use peershare::protocol::{
    Ack, Connection, ErrorCode, ErrorReply, Frame, Hello, Limits, Message, PROTOCOL_VERSION,
    ProtocolError, Welcome,
};
use peershare::tls::Tls;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn now() -> i64 {
    peershare::query::now_ms()
}

/// The error reply of a refused peer connection or request.
fn remote(e: &PeerClientError) -> Option<&ErrorReply> {
    match e {
        PeerClientError::Protocol(ProtocolError::Remote(r)) => Some(r),
        _ => None,
    }
}

/// The error reply of a refused index request.
fn index_remote(e: &IndexClientError) -> Option<&ErrorReply> {
    match e {
        IndexClientError::Protocol {
            source: ProtocolError::Remote(r),
            ..
        } => Some(r),
        _ => None,
    }
}

/// The code of an index request's error reply (panics on any other failure).
fn index_code(e: &IndexClientError) -> u16 {
    index_remote(e)
        .unwrap_or_else(|| panic!("not an error reply: {e:?}"))
        .code
}

fn key_of(state: &Path) -> Identity {
    Identity::load_or_create(state).expect("identity")
}

// ---------------------------------------------------------------------------------------------
// A private index in process (as `index --private` runs it).

impl PrivateIndex {
    /// The index's own identity (its secret is in its database).
    fn identity(&self) -> Identity {
        let mut store = GroupStore::open(&self.db).expect("group store");
        Identity::from_secret(store.index_secret().expect("index key"))
    }

    /// A member sharing `dir`, its key in `state` (it joins first), registered and in sync.
    async fn share(&self, dir: &Path, state: &Path) -> (ShareHandle, Tls) {
        let tls = self.member(&key_of(state)).await;
        (self.share_as(dir, state, &tls).await, tls)
    }
}

/// A private index with a member ("ann") sharing one file; the file's id.
async fn sharing_member(t: &Path) -> (PrivateIndex, ShareHandle, ContentId) {
    let ix = start_private_index(&t.join("ix/index.sqlite")).await;
    let files = t.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let bytes = data(70_000, 5);
    std::fs::write(files.join("plans.pdf"), &bytes).unwrap();
    let (sharer, _) = ix.share(&files, &t.join("ann")).await;
    let id = ContentId::from_bytes(*blake3::hash(&bytes).as_bytes());
    (ix, sharer, id)
}

/// Connects to a peer (bounded).
async fn peer_connect(addr: &str, tls: &Tls) -> Result<PeerClient, PeerClientError> {
    tokio::time::timeout(
        Duration::from_secs(15),
        PeerClient::connect(addr, Some(tls), None, Limits::default()),
    )
    .await
    .expect("connect finishes within 15 s")
}

// ---------------------------------------------------------------------------------------------
// 1. A hostile server cannot replace a member's certificate; only the group's index sees it.

/// A server speaking the index protocol from a script: it records every `Hello`, answers it
/// with `Welcome` carrying `cert`, and every `Heartbeat` with `ack`.
async fn scripted_server(
    tls: Tls,
    cert: Option<Membership>,
    ack: Ack,
) -> (String, mpsc::UnboundedReceiver<Hello>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (tls, cert, ack, tx) = (tls.clone(), cert.clone(), ack.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(secured) = tls.accept(s, Duration::from_secs(5), b"").await else {
                    return;
                };
                let mut c = Connection::new(secured.stream, Limits::default());
                let Ok(Some(Message::Hello(hello))) = c.read_message().await else {
                    return;
                };
                let _ = tx.send(hello);
                let welcome = Welcome {
                    version: PROTOCOL_VERSION,
                    agent: "scripted".into(),
                    nonce: Digest([9; 32]),
                    features: vec![],
                    membership: cert,
                    revoked: None,
                };
                if c.send(&Message::Welcome(welcome)).await.is_err() {
                    return;
                }
                while let Ok(Some(m)) = c.read_message().await {
                    let reply = match m {
                        Message::Heartbeat => Message::Ack(ack.clone()),
                        _ => Message::Error(ErrorReply::new(ErrorCode::BadRequest, "no")),
                    };
                    if c.send(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn next_hello(rx: &mut mpsc::UnboundedReceiver<Hello>) -> Hello {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a Hello within 10 s")
        .expect("server running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_server_cannot_replace_a_members_certificate_nor_learn_it() {
    let t = tempfile::tempdir().unwrap();
    let (ix, sharer, id) = sharing_member(t.path()).await;
    let sharer_addr = sharer.local_addr.to_string();
    let me = Identity::from_secret([0x33; 32]);
    let tls = ix.member(&me).await;
    let genuine = tls.membership().expect("a certificate");
    // What a hostile server would have us present: a certificate of our group for our key,
    // lasting forever, unsigned.
    let forged = Membership {
        group: ix.key,
        member: me.public_key(),
        expires: i64::MAX,
        signature: vec![0; 64],
    };
    // The sharing member, whose key a hostile server would like us to stop trusting.
    let sharer_key = peer_connect(&sharer_addr, &tls)
        .await
        .expect("a member is served")
        .key();
    let hostile_ack = Ack {
        files: 0,
        membership: Some(forged.clone()),
        revoked: Some(vec![sharer_key]),
    };

    // An open index (any key but the group's): it learns nothing of our membership, and what
    // it says of it, in Welcome and in Ack, is not taken.
    let (addr, mut hellos) =
        scripted_server(client_tls(), Some(forged.clone()), hostile_ack.clone()).await;
    let mut c = IndexClient::connect(&addr, Some(&tls), None, Limits::default())
        .await
        .expect("connect to the hostile index");
    let hello = next_hello(&mut hellos).await;
    assert_eq!(
        hello.membership, None,
        "the certificate was presented to an index that is not the group's"
    );
    assert_eq!(
        tls.membership().as_ref(),
        Some(&genuine),
        "taken from Welcome"
    );
    c.heartbeat().await.expect("the hostile index's Ack");
    assert_eq!(tls.membership().as_ref(), Some(&genuine), "taken from Ack");

    // A server holding the group's key (the index, damaged or buggy): it does see the
    // certificate, and an unsigned one from it is not taken either.
    let (addr, mut hellos) = scripted_server(
        Tls::new(&ix.identity()).unwrap(),
        Some(forged.clone()),
        Ack {
            revoked: None,
            ..hostile_ack.clone()
        },
    )
    .await;
    let mut c = IndexClient::connect(&addr, Some(&tls), Some(ix.key), Limits::default())
        .await
        .expect("connect to the server with the group's key");
    let hello = next_hello(&mut hellos).await;
    assert_eq!(
        hello.membership.as_ref(),
        Some(&genuine),
        "the group's index is shown the certificate"
    );
    c.heartbeat().await.expect("Ack");
    assert_eq!(
        tls.membership().as_ref(),
        Some(&genuine),
        "unsigned, yet taken"
    );

    // A hostile peer saying the same in its Welcome: refused as a source, changing nothing.
    let (addr, _hellos) = scripted_server(client_tls(), Some(forged.clone()), hostile_ack).await;
    let e = peer_connect(&addr, &tls)
        .await
        .err()
        .expect("a peer without a valid certificate is refused");
    assert!(matches!(e, PeerClientError::NotMember { .. }), "{e:?}");
    assert_eq!(tls.membership().as_ref(), Some(&genuine));

    // We still present the genuine certificate: the group's sharing member serves us (and we
    // still trust it: the hostile index's `revoked` was not taken either).
    let mut c = peer_connect(&sharer_addr, &tls)
        .await
        .expect("still served by the group's members");
    assert_eq!(c.info(id).await.expect("info").name, "plans.pdf");
    // The group's own index still renews it.
    IndexClient::connect(&ix.addr, Some(&tls), Some(ix.key), Limits::default())
        .await
        .expect("connect to the group's index");
    let renewed = tls.membership().expect("a certificate");
    assert!(renewed.expires >= genuine.expires, "{renewed:?}");
    assert_eq!(renewed.check(&ix.key, &me.public_key(), now()), Ok(()));
    sharer.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Invite secrets stay out of link errors.

#[test]
fn a_link_with_a_broken_invite_does_not_repeat_the_secret() {
    let invite = Invite {
        index: "example.org:4000".into(),
        key: Identity::from_secret([7; 32]).fingerprint(),
        secret: [0x5a; 32],
    };
    let link = ShareLink {
        content_id: ContentId::from_bytes([1; 32]),
        name: "a.txt".into(),
        size: 3,
        index: None,
        invite: Some(invite.clone()),
    };
    let good = link.to_string();
    assert_eq!(good.parse::<ShareLink>().expect("the link parses"), link);
    let secret = data_encoding::BASE32_NOPAD
        .encode(&invite.secret)
        .to_ascii_lowercase();
    // Any 12 characters of it in a row would give much of it away.
    let leaks = |text: &str| {
        (0..=secret.len() - 12).any(|i| text.to_ascii_lowercase().contains(&secret[i..i + 12]))
    };
    assert!(leaks(&good), "the check finds the secret where it is");
    // Broken percent-encoding at the end, in the middle, and bytes that are not UTF-8.
    let at = good.find("invite=").expect("invite=") + "invite=".len();
    for broken in [
        format!("{good}%Z"),
        format!("{good}%"),
        format!("{}%G{}", &good[..at + 40], &good[at + 40..]),
        format!("{good}%FF"),
    ] {
        let e = broken.parse::<ShareLink>().expect_err("a broken invite");
        let (text, debug) = (e.to_string(), format!("{e:?}"));
        assert!(text.contains("invite="), "{text}");
        assert!(
            text.contains("(not shown: it holds a secret)"),
            "says why the value is not shown: {text}"
        );
        assert!(!leaks(&text), "the secret is in the error: {text}");
        assert!(
            !leaks(&debug),
            "the secret is in the error's Debug: {debug}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. `Joined` as specified decodes.

/// MessagePack `str` of up to 31 bytes.
fn fixstr(s: &str) -> Vec<u8> {
    assert!(s.len() < 32);
    let mut v = vec![0xa0 | s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// MessagePack `bin 8`.
fn bin(b: &[u8]) -> Vec<u8> {
    let mut v = vec![0xc4, b.len() as u8];
    v.extend_from_slice(b);
    v
}

#[test]
fn joined_decodes_from_the_fields_the_spec_lists() {
    let index = Identity::from_secret([1; 32]);
    let cert = Membership::issue(&index, Digest([2; 32]), 1_800_000_000_000);
    // §4.2: the certificate is a map {group: bin32, member: bin32, expires: i64, signature:
    // bin (64)}; §10.7: `Joined.dht_secret` carries the group's 32-byte DHT secret.
    let mut membership = vec![0x84];
    membership.extend(fixstr("group"));
    membership.extend(bin(&cert.group.0));
    membership.extend(fixstr("member"));
    membership.extend(bin(&cert.member.0));
    membership.extend(fixstr("expires"));
    membership.push(0xd3); // int 64
    membership.extend(cert.expires.to_be_bytes());
    membership.extend(fixstr("signature"));
    membership.extend(bin(&cert.signature));
    let mut payload = vec![0x82];
    payload.extend(fixstr("membership"));
    payload.extend(&membership);
    payload.extend(fixstr("dht_secret"));
    payload.extend(bin(&[0x42; 32]));

    let frame = Frame {
        tag: 0x17,
        payload: payload.clone().into(),
    };
    match Message::decode(frame).expect("Joined as specified decodes") {
        Message::Joined(j) => {
            assert_eq!(j.membership, cert);
            assert_eq!(j.dht_secret, vec![0x42; 32]);
            assert_eq!(
                j.membership.check(&index.public_key(), &Digest([2; 32]), 0),
                Ok(())
            );
        }
        other => panic!("not Joined: {other:?}"),
    }
    // And it is what this build sends.
    let ours = Message::Joined(peershare::protocol::Joined {
        membership: cert,
        dht_secret: vec![0x42; 32],
    });
    let encoded = ours.encode_payload().expect("encode");
    let back = Message::decode(Frame {
        tag: ours.tag(),
        payload: encoded,
    })
    .expect("decode");
    assert_eq!(back, ours);
    assert_eq!(ours.tag(), 0x17);
}

// ---------------------------------------------------------------------------------------------
// 4. The address check is bounded.

/// A TLS endpoint proving `tls`'s key; the address of each connection it accepted, in order.
async fn counting_key_server(tls: Tls) -> (u16, Arc<Mutex<Vec<SocketAddr>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, from)) = l.accept().await {
            log.lock().unwrap().push(from);
            let tls = tls.clone();
            tokio::spawn(async move {
                let _ = tls.accept(s, Duration::from_secs(5), b"").await;
            });
        }
    });
    (port, seen)
}

/// A listener that accepts connections and never says a byte; how many it accepted.
async fn silent_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (port, n)
}

/// An identity and a connection to the open index at `addr` with its key.
async fn registrant(addr: &str) -> (Identity, IndexClient) {
    let me = Identity::ephemeral().unwrap();
    let c = IndexClient::connect(addr, Some(&Tls::new(&me).unwrap()), None, Limits::default())
        .await
        .expect("connect to the index");
    (me, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_address_checks_stop_after_four_on_a_connection() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_index_no_relay(&t.path().join("ix.sqlite"), Duration::from_secs(30)).await;
    let (me, mut c) = registrant(&ix.addr()).await;
    // Another key answers there: every check fails.
    let (port, seen) = counting_key_server(client_tls()).await;
    for i in 0..MAX_FAILED_CHECKS + 6 {
        let e = c
            .register(&me, "127.0.0.1", port, Digest::default(), 0)
            .await
            .expect_err("nothing holding the key is there");
        let r = index_remote(&e).unwrap_or_else(|| panic!("not an error reply: {e:?}"));
        assert_eq!(r.code, ErrorCode::Unreachable, "{r:?}");
        assert_eq!(
            r.message.contains("too many failed checks"),
            i >= MAX_FAILED_CHECKS,
            "Register {i}: {r:?}"
        );
    }
    // Connections reach a listener in the order they were made: once our own probe is seen,
    // every connection the index made before it is counted.
    let probe = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let probe_addr = probe.local_addr().unwrap();
    let before_probe = eventually(Duration::from_secs(5), || {
        let seen = seen.clone();
        async move {
            let seen = seen.lock().unwrap();
            seen.iter().position(|a| *a == probe_addr)
        }
    })
    .await
    .expect("the probe reaches the target");
    assert_eq!(
        before_probe,
        MAX_FAILED_CHECKS as usize,
        "connections the index made to the target for {} Registers",
        MAX_FAILED_CHECKS + 6
    );
    // Another connection gets its own checks (the limit is per connection).
    let (me2, mut c2) = registrant(&ix.addr()).await;
    let e = c2
        .register(&me2, "127.0.0.1", port, Digest::default(), 0)
        .await
        .expect_err("another key is there");
    assert!(
        !index_remote(&e).unwrap().message.contains("too many"),
        "{e:?}"
    );
    ix.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_checks_beyond_four_from_one_address_get_busy_at_once() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_index_no_relay(&t.path().join("ix.sqlite"), Duration::from_secs(30)).await;
    let (silent, accepted) = silent_listener().await;
    // Four registrations whose checks wait on a listener that never answers.
    let mut waiting = Vec::new();
    for _ in 0..MAX_ADDRESS_CHECKS_PER_IP {
        let (me, mut c) = registrant(&ix.addr()).await;
        waiting.push(tokio::spawn(async move {
            let start = Instant::now();
            let r = c
                .register(&me, "127.0.0.1", silent, Digest::default(), 0)
                .await;
            (r.map(|_| ()), start.elapsed())
        }));
    }
    let all_in_flight = eventually(Duration::from_secs(4), || {
        let n = accepted.clone();
        async move { (n.load(Ordering::SeqCst) == MAX_ADDRESS_CHECKS_PER_IP).then_some(()) }
    })
    .await;
    assert!(
        all_in_flight.is_some(),
        "the index connects for each of the four: {} seen",
        accepted.load(Ordering::SeqCst)
    );

    // A fifth, from the same address, at a peer that does hold its key: BUSY, at once.
    let me = Identity::ephemeral().unwrap();
    let fake = FakePeer::new(&me).await;
    let mut c = fake.connect(&ix.addr()).await;
    let start = Instant::now();
    let e = c
        .register(&me, "127.0.0.1", fake.port, Digest::default(), 0)
        .await
        .expect_err("no turn left for this address");
    let took = start.elapsed();
    assert_eq!(index_code(&e), ErrorCode::Busy, "{e:?}");
    assert!(took < Duration::from_secs(1), "BUSY took {took:?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        MAX_ADDRESS_CHECKS_PER_IP,
        "no check was queued"
    );

    // The four end UNREACHABLE within the one deadline, and give their turns back.
    for w in waiting {
        let (r, took) = w.await.unwrap();
        let e = r.expect_err("no key at the silent listener");
        assert_eq!(index_code(&e), ErrorCode::Unreachable, "{e:?}");
        assert!(took < Duration::from_secs(7), "a check took {took:?}");
    }
    c.register(&me, "127.0.0.1", fake.port, Digest::default(), 0)
        .await
        .expect("a turn again once the checks ended");
    ix.stop().await;
}

/// One deadline for connect and handshake: a target that is slow to accept the connection
/// (its accept queue is full for a few seconds) and then says nothing is given up 5 s after
/// the check began, not 5 s after the connection was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_check_has_one_deadline_for_connect_and_handshake() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_index_no_relay(&t.path().join("ix.sqlite"), Duration::from_secs(30)).await;
    // A listener whose accept queue holds one connection; a first one fills it, so later
    // connections wait (their SYNs dropped) until it is taken.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let _filler = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();

    let (me, mut c) = registrant(&ix.addr()).await;
    let start = Instant::now();
    let check = tokio::spawn(async move {
        let r = c
            .register(&me, "127.0.0.1", port, Digest::default(), 0)
            .await;
        (r.map(|_| ()), start.elapsed())
    });
    // Time-based: free the queue after 2.5 s; the index's connection then gets in, and is
    // held without a byte.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_first, _) = listener.accept().await.unwrap();
    let (_second, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("the index's connection gets in")
        .unwrap();
    let connected_after = start.elapsed();
    assert!(
        connected_after >= Duration::from_millis(2400),
        "the index's connect was held back ({connected_after:?})"
    );
    let (r, took) = tokio::time::timeout(Duration::from_secs(15), check)
        .await
        .expect("the check ends")
        .unwrap();
    let e = r.expect_err("nothing answers");
    assert_eq!(index_code(&e), ErrorCode::Unreachable, "{e:?}");
    assert!(
        took < Duration::from_secs(7),
        "connected after {connected_after:?}, the check ended after {took:?}"
    );
    ix.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. A removal, or an expiry, ends a connection already open.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_members_open_connection_is_refused_on_its_next_request() {
    let t = tempfile::tempdir().unwrap();
    let (ix, sharer, id) = sharing_member(t.path()).await;
    let addr = sharer.local_addr.to_string();
    let bob_id = Identity::from_secret([0xb0; 32]);
    let bob = ix.member(&bob_id).await;
    let mut open = peer_connect(&addr, &bob).await.expect("a member is served");
    open.info(id).await.expect("served while a member");

    ix.remove(&bob_id.public_key());
    // The sharing member has the removal once it refuses Bob's new connections (from its
    // next heartbeat, within a lease).
    let refused = eventually(Duration::from_secs(10), || {
        let (addr, bob) = (addr.clone(), bob.clone());
        async move {
            match peer_connect(&addr, &bob).await {
                Err(e) => Some(e),
                Ok(mut c) => c.info(id).await.err(),
            }
        }
    })
    .await
    .expect("the sharing member learns of the removal");
    assert_eq!(
        remote(&refused).map(|r| r.code),
        Some(ErrorCode::Forbidden.number()),
        "{refused:?}"
    );

    // The connection opened before: its next request is refused, then it is closed.
    let e = open
        .info(id)
        .await
        .expect_err("a removed member is not served");
    let r = remote(&e).unwrap_or_else(|| panic!("not an error reply: {e:?}"));
    assert_eq!(r.code, ErrorCode::Forbidden, "{r:?}");
    assert!(r.message.contains("removed"), "{r:?}");
    let e = open.info(id).await.expect_err("closed");
    assert!(remote(&e).is_none(), "the connection stays open: {e:?}");
    sharer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_connection_ends_when_the_clients_certificate_expires() {
    let t = tempfile::tempdir().unwrap();
    let (ix, sharer, id) = sharing_member(t.path()).await;
    let addr = sharer.local_addr.to_string();
    let carl = Identity::from_secret([0xca; 32]);
    let expires = now() + 2_000;
    let cert = Membership::issue(&ix.identity(), carl.public_key(), expires);
    let tls = Tls::new(&carl)
        .unwrap()
        .with_group(Arc::new(GroupState::new(ix.key, Some(cert))));
    let mut open = peer_connect(&addr, &tls)
        .await
        .expect("a valid certificate is served");
    open.info(id).await.expect("served while valid");
    // Time-based: wait for the expiry.
    let left = u64::try_from(expires + 200 - now()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(left)).await;
    let e = open.info(id).await.expect_err("an expired certificate");
    let r = remote(&e).unwrap_or_else(|| panic!("not an error reply: {e:?}"));
    assert_eq!(r.code, ErrorCode::Forbidden, "{r:?}");
    assert!(r.message.contains("expired"), "{r:?}");
    sharer.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. A removal is never followed by a renewal.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_right_after_a_removal_is_forbidden_and_renews_nothing() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_private_index(&t.path().join("ix/index.sqlite")).await;
    let me = Identity::from_secret([0xc0; 32]);
    let fake = FakePeer::new(&me).await;
    // Several rounds: join (again), register, heartbeat; remove, and heartbeat at once.
    for round in 0..3 {
        let tls = ix.member(&me).await;
        let mut c = IndexClient::connect(&ix.addr, Some(&tls), Some(ix.key), Limits::default())
            .await
            .expect("connect");
        c.register(&me, "127.0.0.1", fake.port, Digest::default(), 0)
            .await
            .expect("a member registers");
        c.heartbeat().await.expect("a member's heartbeat");
        let before = tls.membership().expect("a certificate");

        ix.remove(&me.public_key());
        let e = c.heartbeat().await.expect_err("removed");
        let r = index_remote(&e).unwrap_or_else(|| panic!("round {round}: {e:?}"));
        assert_eq!(r.code, ErrorCode::Forbidden, "round {round}: {r:?}");
        assert!(r.message.contains("removed"), "round {round}: {r:?}");
        assert_eq!(
            tls.membership().as_ref(),
            Some(&before),
            "round {round}: renewed after the removal"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Pins written at once are all kept.

#[test]
fn pins_written_from_many_threads_at_once_are_all_kept() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    let key = |i: u8| Identity::from_secret([i + 1; 32]).fingerprint();
    let threads: Vec<_> = (0..8u8)
        .map(|i| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let k = KnownIndexes::new(&dir);
                (0..30u8)
                    .filter_map(|j| k.pin(&format!("10.0.{i}.{j}:4000"), key(i)).err())
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let errors: Vec<String> = threads
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(errors, Vec::<String>::new(), "pin failed");
    let k = KnownIndexes::new(&dir);
    let mut lost = Vec::new();
    for i in 0..8u8 {
        for j in 0..30u8 {
            let addr = format!("10.0.{i}.{j}:4000");
            if k.pinned(&addr).expect("read pins") != Some(key(i)) {
                lost.push(addr);
            }
        }
    }
    assert!(lost.is_empty(), "{} of 240 pins lost: {lost:?}", lost.len());
}

// ---------------------------------------------------------------------------------------------
// 8. A member sharing open at its private index is not listed there.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sharing_without_its_group_at_its_index_is_not_listed() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_private_index(&t.path().join("ix/index.sqlite")).await;
    let files = t.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let bytes = data(70_000, 9);
    std::fs::write(files.join("plans.pdf"), &bytes).unwrap();
    let state = t.path().join("ann");
    let _ann = ix.member(&key_of(&state)).await;
    // Shared at the group's index, but without the group (open).
    let mut config = ShareConfig::new(vec![files.clone()], Some(ix.addr.clone()), state.clone());
    config.index_key = Some(ix.key);
    config.group = None;
    config.debounce = Duration::from_millis(100);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut h = start_share(config, listener).await.unwrap();
    let s = h
        .wait_for(Duration::from_secs(20), |s| {
            s.in_sync || s.last_error.is_some()
        })
        .await
        .unwrap_or_else(|s| panic!("neither registered nor refused: {s:?}"));
    let why = s.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("share as a member of its group"),
        "registered open with its group's index: {s:?}"
    );
    assert_eq!((s.peer_id, s.in_sync), (None, false), "{s:?}");

    // Not listed: a member finds neither the peer nor its file.
    let bob = ix.member(&Identity::from_secret([0xb0; 32])).await;
    let mut c = IndexClient::connect(&ix.addr, Some(&bob), Some(ix.key), Limits::default())
        .await
        .expect("connect");
    let port = h.local_addr.port();
    let peers = c.list_peers().await.expect("list peers").peers;
    assert!(peers.iter().all(|p| p.port != port), "listed: {peers:?}");
    let hits = c.search("plans", 10).await.expect("search").files;
    assert!(hits.is_empty(), "its file is listed: {hits:?}");
    // And a stranger gets nothing from the index to reach it by.
    let mut stranger = IndexClient::connect(&ix.addr, None, Some(ix.key), Limits::default())
        .await
        .expect("connect");
    let e = stranger
        .search("plans", 10)
        .await
        .expect_err("not a member");
    assert_eq!(index_code(&e), ErrorCode::Forbidden, "{e:?}");
    h.shutdown().await;
}
