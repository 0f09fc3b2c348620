//! The DHT node on the wire, as other implementations and attackers see it: raw KRPC over UDP
//! (BEP 5, 43) against peershare's node, with no DHT library on the other side.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use mainline::Id;
use peershare::dht::{DhtConfig, start_node};
use serde_bencode::value::Value;

type Dict = HashMap<Vec<u8>, Value>;

fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

fn dict(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

fn get<'a>(d: &'a Dict, key: &str) -> Option<&'a Value> {
    d.get(key.as_bytes())
}

fn get_bytes<'a>(d: &'a Dict, key: &str) -> Option<&'a [u8]> {
    match get(d, key)? {
        Value::Bytes(b) => Some(b),
        _ => None,
    }
}

fn get_dict<'a>(d: &'a Dict, key: &str) -> Option<&'a Dict> {
    match get(d, key)? {
        Value::Dict(x) => Some(x),
        _ => None,
    }
}

/// A KRPC endpoint on its own UDP socket, with its own node id.
struct Raw {
    sock: UdpSocket,
    id: [u8; 20],
}

impl Raw {
    fn new() -> Raw {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Raw {
            sock,
            id: *Id::random().as_bytes(),
        }
    }

    fn addr(&self) -> SocketAddrV4 {
        match self.sock.local_addr().expect("addr") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to IPv4"),
        }
    }

    fn send(&self, to: SocketAddrV4, msg: &Value) {
        let b = serde_bencode::to_bytes(msg).expect("encode");
        self.sock.send_to(&b, to).expect("send");
    }

    /// The next message from `from` within `wait`, decoded.
    fn recv_from(&self, from: SocketAddrV4, wait: Duration) -> Option<Dict> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.sock.recv_from(&mut buf) {
                Ok((n, SocketAddr::V4(a))) if a == from => {
                    if let Ok(Value::Dict(d)) = serde_bencode::from_bytes::<Value>(&buf[..n]) {
                        return Some(d);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Sends query `q` with transaction id `t` and waits for the answer carrying that id.
    fn query(
        &self,
        to: SocketAddrV4,
        t: &[u8],
        q: &str,
        mut args: Vec<(&str, Value)>,
        ro: bool,
    ) -> Option<Dict> {
        args.push(("id", bytes(&self.id)));
        let mut msg = vec![
            ("t", bytes(t)),
            ("y", bytes(b"q")),
            ("q", bytes(q.as_bytes())),
            ("a", dict(args)),
        ];
        if ro {
            msg.push(("ro", Value::Int(1)));
        }
        self.send(to, &dict(msg));
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let d = self.recv_from(to, deadline - Instant::now())?;
            if get_bytes(&d, "t") == Some(t) {
                return Some(d);
            }
        }
        None
    }

    fn ping(&self, to: SocketAddrV4, t: &[u8]) -> Option<Dict> {
        self.query(to, t, "ping", vec![], false)
    }

    /// The addresses of the compact `nodes` of a find_node answer.
    fn find_node(&self, to: SocketAddrV4, ro: bool) -> Vec<SocketAddrV4> {
        let target = *Id::random().as_bytes();
        let r = self
            .query(to, b"fn", "find_node", vec![("target", bytes(&target))], ro)
            .expect("find_node answered");
        let nodes = get_dict(&r, "r")
            .and_then(|r| get_bytes(r, "nodes"))
            .unwrap_or_default();
        nodes
            .chunks_exact(26)
            .map(|c| {
                SocketAddrV4::new(
                    Ipv4Addr::new(c[20], c[21], c[22], c[23]),
                    u16::from_be_bytes([c[24], c[25]]),
                )
            })
            .collect()
    }
}

fn node_config() -> DhtConfig {
    DhtConfig {
        bind: Ipv4Addr::LOCALHOST,
        server: true,
        no_bootstrap: true,
        ..Default::default()
    }
}

async fn addr_of(dht: &mainline::async_dht::AsyncDht) -> SocketAddrV4 {
    dht.info().await.local_addr()
}

/// libtorrent sends 2-byte transaction ids, mainline 8.0.1 read only 4-byte ones; any length a
/// client may use is answered with the same bytes. Too long ids and garbage get no answer and
/// do not stop the node.
#[tokio::test]
async fn any_transaction_id_is_echoed_and_garbage_is_ignored() {
    let node = start_node(&node_config()).expect("node");
    let at = addr_of(&node).await;
    let raw = Raw::new();
    let mut ids = Vec::new();
    for t in [
        &b"a"[..],
        b"aa",
        b"\x00\x01\x02\x03",
        b"12345678",
        &[7u8; 16],
    ] {
        let r = raw
            .ping(at, t)
            .unwrap_or_else(|| panic!("no answer to t={t:?}"));
        assert_eq!(get_bytes(&r, "y"), Some(&b"r"[..]));
        assert_eq!(get_bytes(&r, "t"), Some(t));
        let id = get_dict(&r, "r")
            .and_then(|r| get_bytes(r, "id"))
            .map(<[u8]>::to_vec);
        ids.push(id.expect("an id"));
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one node id: {ids:?}");
    assert_eq!(ids[0], node.info().await.id().as_bytes().to_vec());

    // A 17-byte transaction id is refused (nothing to echo that large).
    assert!(raw.ping(at, &[1u8; 17]).is_none());
    // Garbage, truncated bencode, and a list nested as deep as a datagram allows.
    let deep = [vec![b'l'; 1400], vec![b'e'; 1400]].concat();
    for junk in [
        &b"xyz"[..],
        b"d1:t",
        b"d1:ti5e1:y1:qe",
        b"d1:t2:aa1:y1:q1:q4:pinge",
        &deep,
    ] {
        raw.sock.send_to(junk, at).expect("send");
    }
    // Still answering.
    assert!(raw.ping(at, b"ok").is_some());
}

/// A fake node F is the only bootstrap node of a peershare node N. Every query N sends carries
/// N's own node id and a 2-byte transaction id, and an announcement gets its token with
/// `get_peers` (BEP 5), never with BEP 44's `get`, which nodes without BEP 44 refuse.
// Two workers: the announcement runs on one while the fake node blocks on its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_carry_one_id_and_announce_tokens_come_from_get_peers() {
    let fake = Raw::new();
    let f_addr = fake.addr();
    let node = start_node(&DhtConfig {
        bootstrap: vec![f_addr.to_string()],
        no_bootstrap: false,
        ..node_config()
    })
    .expect("node");
    let n_addr = addr_of(&node).await;
    let n_id = node.info().await.id().as_bytes().to_vec();

    let key = Id::random();
    let announce = {
        let node = node.clone();
        tokio::spawn(async move { node.announce_peer_outcome(key, Some(4242)).await })
    };

    let answer = |t: &[u8], r: Vec<(&str, Value)>| {
        let mut r = r;
        r.push(("id", bytes(&fake.id)));
        fake.send(
            n_addr,
            &dict(vec![("t", bytes(t)), ("y", bytes(b"r")), ("r", dict(r))]),
        );
    };
    let mut seen: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut announced_with = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while announced_with.is_none() && Instant::now() < deadline {
        let Some(q) = fake.recv_from(n_addr, Duration::from_millis(200)) else {
            continue;
        };
        if get_bytes(&q, "y") != Some(b"q") {
            continue;
        }
        let t = get_bytes(&q, "t").unwrap_or_default().to_vec();
        let name = String::from_utf8_lossy(get_bytes(&q, "q").unwrap_or_default()).to_string();
        let a = get_dict(&q, "a").cloned().unwrap_or_default();
        let id = get_bytes(&a, "id").unwrap_or_default().to_vec();
        seen.push((name.clone(), t.clone(), id));
        match name.as_str() {
            "ping" | "find_node" => answer(&t, vec![("nodes", bytes(b""))]),
            "get_peers" => answer(&t, vec![("token", bytes(b"tok3n")), ("nodes", bytes(b""))]),
            "announce_peer" => {
                announced_with = Some((
                    get_bytes(&a, "token").map(<[u8]>::to_vec),
                    get_bytes(&a, "info_hash").map(<[u8]>::to_vec),
                    get(&a, "port").cloned(),
                ));
                answer(&t, vec![]);
            }
            _ => answer(&t, vec![]),
        }
    }
    let outcome = tokio::time::timeout(Duration::from_secs(10), announce)
        .await
        .expect("announce finished")
        .expect("task")
        .unwrap_or_else(|e| panic!("announce failed: {e}; queries seen: {seen:?}"));
    assert_eq!((outcome.stored_at, outcome.sent_to), (1, 1));
    let (token, info_hash, port) = announced_with.expect("an announce_peer reached the fake node");
    assert_eq!(token.as_deref(), Some(&b"tok3n"[..]));
    assert_eq!(info_hash.as_deref(), Some(&key.as_bytes()[..]));
    assert_eq!(port, Some(Value::Int(4242)));
    assert!(!seen.iter().any(|(q, _, _)| q == "get"), "{seen:?}");
    let get_peers_at = seen.iter().position(|(q, _, _)| q == "get_peers");
    let announce_at = seen.iter().position(|(q, _, _)| q == "announce_peer");
    assert!(
        get_peers_at < announce_at && get_peers_at.is_some(),
        "{seen:?}"
    );
    for (q, t, id) in &seen {
        assert_eq!(
            t.len(),
            2,
            "{q} sent with a {}-byte transaction id",
            t.len()
        );
        assert_eq!(id, &n_id, "{q} sent under another node id");
    }
}

/// BEP 43: a read-only node (a `search --dht` that exits) is never handed out by a node it
/// asked, even a node with no bootstrap (which adds the nodes that ask it, to get started).
#[tokio::test]
async fn read_only_nodes_are_not_handed_out() {
    let node = start_node(&node_config()).expect("node");
    let at = addr_of(&node).await;
    let (reader, server, asker) = (Raw::new(), Raw::new(), Raw::new());
    reader.find_node(at, true);
    server.find_node(at, false);
    let handed = asker.find_node(at, true);
    assert!(handed.contains(&server.addr()), "{handed:?}");
    assert!(!handed.contains(&reader.addr()), "{handed:?}");
    assert!(!handed.contains(&asker.addr()), "{handed:?}");
}

/// A node that stops answering leaves the routing table after its requests time out (two in
/// a row), so it is no longer handed out.
#[tokio::test]
async fn a_node_that_stops_answering_is_dropped() {
    let fake = Raw::new();
    let f_addr = fake.addr();
    let node = start_node(&DhtConfig {
        bootstrap: vec![f_addr.to_string()],
        no_bootstrap: false,
        request_timeout: Duration::from_millis(300),
        ..node_config()
    })
    .expect("node");
    let n_addr = addr_of(&node).await;
    let asker = Raw::new();

    // F answers N's bootstrap queries, and is then in N's table.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut listed = false;
    while !listed && Instant::now() < deadline {
        if let Some(q) = fake.recv_from(n_addr, Duration::from_millis(100))
            && get_bytes(&q, "y") == Some(b"q")
        {
            let t = get_bytes(&q, "t").unwrap_or_default();
            let r = dict(vec![("id", bytes(&fake.id)), ("nodes", bytes(b""))]);
            fake.send(
                n_addr,
                &dict(vec![("t", bytes(t)), ("y", bytes(b"r")), ("r", r)]),
            );
        }
        listed = asker.find_node(n_addr, true).contains(&f_addr);
    }
    assert!(listed, "the answering node was never in the table");

    // F goes silent; N's lookups time out on it.
    let mut lookups = 0;
    while asker.find_node(n_addr, true).contains(&f_addr) {
        assert!(lookups < 20, "still handed out after {lookups} lookups");
        lookups += 1;
        let mut s = node.get_peers(Id::random());
        use futures_lite::StreamExt;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while s.next().await.is_some() {}
        })
        .await;
        // The timeouts are noticed once a request is older than the timeout.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(lookups >= 1, "dropped before it failed");
}

/// What a flood of announcements can make a node keep is bounded: at most `max_keys` keys
/// (the least recently announced go first), and one entry per announcing address however many
/// node ids it announces under.
#[tokio::test]
async fn announcements_are_bounded_and_stored_once_per_address() {
    let node = start_node(&DhtConfig {
        max_keys: 50,
        ..node_config()
    })
    .expect("node");
    let at = addr_of(&node).await;
    let raw = Raw::new();
    let first = *Id::random().as_bytes();
    let r = raw
        .query(
            at,
            b"gp",
            "get_peers",
            vec![("info_hash", bytes(&first))],
            false,
        )
        .expect("get_peers answered");
    let token = get_dict(&r, "r")
        .and_then(|r| get_bytes(r, "token"))
        .expect("a token")
        .to_vec();
    let announce = |raw: &Raw, key: &[u8; 20], port: i64| {
        let r = raw.query(
            at,
            b"an",
            "announce_peer",
            vec![
                ("info_hash", bytes(key)),
                ("port", Value::Int(port)),
                ("token", bytes(&token)),
            ],
            false,
        );
        assert!(
            r.as_ref().is_some_and(|r| get_bytes(r, "y") == Some(b"r")),
            "{r:?}"
        );
    };
    let values = |raw: &Raw, key: &[u8; 20]| -> usize {
        let r = raw
            .query(
                at,
                b"gv",
                "get_peers",
                vec![("info_hash", bytes(key))],
                false,
            )
            .expect("get_peers answered");
        match get_dict(&r, "r").and_then(|r| get(r, "values")) {
            Some(Value::List(v)) => v.len(),
            _ => 0,
        }
    };

    // The same address under ten node ids is one peer.
    let mut liar = Raw::new();
    let shared = *Id::random().as_bytes();
    let token_for = |raw: &Raw| {
        let r = raw
            .query(
                at,
                b"gt",
                "get_peers",
                vec![("info_hash", bytes(&shared))],
                false,
            )
            .expect("answered");
        get_dict(&r, "r")
            .and_then(|r| get_bytes(r, "token"))
            .expect("token")
            .to_vec()
    };
    let liar_token = token_for(&liar);
    for _ in 0..10 {
        liar.id = *Id::random().as_bytes();
        let r = liar.query(
            at,
            b"an",
            "announce_peer",
            vec![
                ("info_hash", bytes(&shared)),
                ("port", Value::Int(7000)),
                ("token", bytes(&liar_token)),
            ],
            false,
        );
        assert!(r.is_some());
    }
    assert_eq!(values(&raw, &shared), 1);

    // 200 keys into a node that holds 50: the oldest are gone, the newest there.
    announce(&raw, &first, 1000);
    assert_eq!(values(&raw, &first), 1);
    let mut last = first;
    for i in 0..200 {
        last = *Id::random().as_bytes();
        announce(&raw, &last, 2000 + i);
    }
    assert_eq!(
        values(&raw, &first),
        0,
        "the oldest key was kept past the cap"
    );
    assert_eq!(values(&raw, &last), 1);
    // And the node still answers.
    assert!(raw.ping(at, b"ok").is_some());
}
