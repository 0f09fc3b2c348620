//! An index and several peers in one process: register, search, download, follow changes, expire, restart.

mod common;

use std::time::Duration;

use common::*;
use peershare::content::{ContentId, PIECE_SIZE};
use peershare::identity::Identity;
use peershare::index::IndexClient;
use peershare::protocol::{ErrorCode, FileEntry, Limits};

async fn client(ix: &TestIndex) -> IndexClient {
    IndexClient::connect(&ix.addr(), None, None, Limits::default())
        .await
        .expect("connect")
}

#[tokio::test]
async fn downloads_match_b3sum_at_interesting_sizes() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    let out = t.path().join("out");
    std::fs::create_dir_all(&share).unwrap();
    let p = PIECE_SIZE as usize;
    let sizes = [0, 1, p - 1, p, p + 1, 7 * p + 123];
    for (i, size) in sizes.iter().enumerate() {
        std::fs::write(
            share.join(format!("file-{size}.bin")),
            data(*size, i as u64),
        )
        .unwrap();
    }
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let peer = start_peer(&share, Some(ix.addr()), &t.path().join("p1")).await;
    let mut c = client(&ix).await;
    for size in sizes {
        let name = format!("file-{size}.bin");
        let r = c.search(&name, 10).await.unwrap();
        let hit = r
            .files
            .iter()
            .find(|f| f.name == name)
            .expect("found by name");
        assert_eq!(hit.size, size as u64);
        assert_eq!(hit.content_id.to_hex(), b3sum(&share.join(&name)));
        assert!(hit.peers[0].key.is_some(), "the index lists the peer's key");
        let dl = peershare::download::Downloader::default();
        let sources = vec![peershare::download::Source {
            key: hit.peers[0].key,
            peer_id: Some(hit.peers[0].peer_id),
            addr: format!("{}:{}", hit.peers[0].host, hit.peers[0].port),
        }];
        let rep = dl
            .download(hit.content_id, &sources, &out, Some(&hit.name))
            .await
            .unwrap();
        assert_eq!(rep.path, out.join(&name));
        assert_eq!(b3sum(&rep.path), hit.content_id.to_hex(), "size {size}");
        assert_eq!(
            std::fs::read(&rep.path).unwrap(),
            std::fs::read(share.join(&name)).unwrap()
        );
    }
    assert_eq!(
        files_in(&out).len(),
        sizes.len(),
        "no partial files left behind"
    );
    peer.shutdown().await;
    ix.stop().await;
}

#[tokio::test]
async fn search_groups_by_content_and_ranks_exact_names_first() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir_all(a.join("deep")).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("deep/Isaac.py"), b"same bytes").unwrap();
    std::fs::write(b.join("isaac.py"), b"same bytes").unwrap();
    std::fs::write(b.join("old isaac.py.bak"), b"other").unwrap();
    std::fs::write(b.join("unrelated.txt"), b"zzz").unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let pa = start_peer(&a, Some(ix.addr()), &t.path().join("pa")).await;
    let pb = start_peer(&b, Some(ix.addr()), &t.path().join("pb")).await;
    let mut c = client(&ix).await;
    let r = c.search("SAAC", 100).await.unwrap();
    assert_eq!(r.files.len(), 2, "{r:?}");
    assert_eq!(r.files[0].peers.len(), 2, "one entry, both peers");
    assert_eq!(
        r.files[0].content_id,
        ContentId::from(blake3::hash(b"same bytes"))
    );
    let r = c.search("isaac.py", 100).await.unwrap();
    assert!(
        r.files[0].name.eq_ignore_ascii_case("isaac.py"),
        "exact match first: {r:?}"
    );
    let r = c.search("isaac bak", 100).await.unwrap();
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].name, "old isaac.py.bak");
    let id = ContentId::from(blake3::hash(b"zzz"));
    let r = c.search(&id.to_hex(), 100).await.unwrap();
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].name, "unrelated.txt");
    let r = c.search("py", 1).await.unwrap();
    assert_eq!(r.files.len(), 1);
    assert!(r.truncated, "the reply says results were cut");
    let peers = c.list_peers().await.unwrap();
    assert_eq!(peers.peers.len(), 2);
    assert!(peers.peers.iter().all(|p| p.live));
    pa.shutdown().await;
    pb.shutdown().await;
    ix.stop().await;
}

#[tokio::test]
async fn changes_in_the_shared_directory_reach_the_index() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("first.txt"), b"1").unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let peer = start_peer(&share, Some(ix.addr()), &t.path().join("p")).await;
    let mut c = client(&ix).await;
    std::fs::write(share.join("second.txt"), b"2").unwrap();
    std::fs::rename(share.join("first.txt"), share.join("renamed.txt")).unwrap();
    let found = eventually(Duration::from_secs(15), || async {
        let n = names(ix.addr(), "txt").await?;
        let has = |x: &str| n.iter().any(|m| m == x);
        (has("second.txt") && has("renamed.txt") && !has("first.txt")).then_some(())
    })
    .await;
    assert!(found.is_some(), "added and renamed files reached the index");
    std::fs::remove_file(share.join("second.txt")).unwrap();
    let gone = eventually(Duration::from_secs(15), || async {
        names(ix.addr(), "second").await?.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "removed file left the index");
    assert_eq!(c.search("renamed", 10).await.unwrap().files.len(), 1);
    peer.shutdown().await;
    // A clean shutdown unregisters: the files are gone at once.
    assert!(c.search("renamed", 10).await.unwrap().files.is_empty());
    ix.stop().await;
}

/// Names of the files the index finds for `query` (a fresh connection each time).
async fn names(addr: String, query: &'static str) -> Option<Vec<String>> {
    let mut c = IndexClient::connect(&addr, None, None, Limits::default())
        .await
        .ok()?;
    let r = c.search(query, 100).await.ok()?;
    Some(r.files.into_iter().map(|f| f.name).collect())
}

fn entry(path: &str, bytes: &[u8]) -> FileEntry {
    FileEntry {
        path: path.into(),
        name: path.rsplit('/').next().unwrap_or(path).into(),
        size: bytes.len() as u64,
        content_id: blake3::hash(bytes).into(),
        mtime: 0,
        have: None,
    }
}

#[tokio::test]
async fn expired_peers_vanish_and_come_back_without_resending() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(1)).await;
    let me = Identity::load_or_create(&t.path().join("me")).unwrap();
    let fp = FakePeer::new(&me).await;
    let digest = peershare::content::Digest([9; 32]);
    let mut c = fp.connect(&ix.addr()).await;
    let reg = c
        .register(&me, "127.0.0.1", fp.port, digest, 1)
        .await
        .unwrap();
    assert!(!reg.in_sync);
    c.sync_files(true, vec![entry("a/lonely.txt", b"x")], vec![], digest)
        .await
        .unwrap();
    assert_eq!(c.search("lonely", 10).await.unwrap().files.len(), 1);
    // No heartbeat: within one lease period it stops appearing.
    let gone = eventually(Duration::from_secs(5), || async {
        names(ix.addr(), "lonely").await?.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some());
    let peers = c.list_peers().await.unwrap();
    assert!(!peers.peers[0].live);
    // It comes back with the same list: the index says it is in sync, nothing is resent.
    let mut c2 = fp.connect(&ix.addr()).await;
    let again = c2
        .register(&me, "127.0.0.1", fp.port, digest, 1)
        .await
        .unwrap();
    assert!(again.in_sync);
    assert_eq!(again.peer_id, reg.peer_id, "same key, same peer id");
    assert_eq!(c2.search("lonely", 10).await.unwrap().files.len(), 1);
    ix.stop().await;
}

#[tokio::test]
async fn only_the_key_holder_changes_its_entries() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let mut anon = client(&ix).await;
    let err = anon
        .sync_files(
            true,
            vec![entry("x", b"x")],
            vec![],
            peershare::content::Digest::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("code {}", ErrorCode::Unauthorized)),
        "{err}"
    );
    let alice = Identity::load_or_create(&t.path().join("alice")).unwrap();
    let bob = Identity::load_or_create(&t.path().join("bob")).unwrap();
    let (fa, fb) = (FakePeer::new(&alice).await, FakePeer::new(&bob).await);
    let mut a = fa.connect(&ix.addr()).await;
    let ra = a
        .register(&alice, "127.0.0.1", fa.port, Default::default(), 0)
        .await
        .unwrap();
    a.sync_files(
        true,
        vec![entry("alice.txt", b"a")],
        vec![],
        Default::default(),
    )
    .await
    .unwrap();
    let mut b = fb.connect(&ix.addr()).await;
    let rb = b
        .register(&bob, "127.0.0.1", fb.port, Default::default(), 0)
        .await
        .unwrap();
    assert_ne!(ra.peer_id, rb.peer_id);
    // Bob's reset and removals touch only Bob's entries.
    b.sync_files(true, vec![], vec!["alice.txt".into()], Default::default())
        .await
        .unwrap();
    let r = b.search("alice", 10).await.unwrap();
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].peers[0].peer_id, ra.peer_id);
    ix.stop().await;
}

#[tokio::test]
async fn index_restart_keeps_what_it_acknowledged() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("ix.sqlite");
    let ix = start_index(&db, Duration::from_secs(60)).await;
    let me = Identity::load_or_create(&t.path().join("me")).unwrap();
    let fp = FakePeer::new(&me).await;
    let mut c = fp.connect(&ix.addr()).await;
    let index_key = c.server_key();
    let reg = c
        .register(&me, "127.0.0.1", fp.port, Default::default(), 0)
        .await
        .unwrap();
    let many: Vec<FileEntry> = (0..30_000)
        .map(|i| {
            entry(
                &format!(
                    "music/album-{}/{}-track-with-a-rather-long-name-{i}.flac",
                    i / 12,
                    "x".repeat(20)
                ),
                format!("{i}").as_bytes(),
            )
        })
        .collect();
    let n = c
        .sync_files(true, many, vec![], peershare::content::Digest([1; 32]))
        .await
        .unwrap();
    assert_eq!(n, 30_000, "every batch acknowledged");
    drop(c);
    ix.stop().await;
    let ix = start_index(&db, Duration::from_secs(60)).await;
    // The restarted index proves the key it had: a client expecting that key gets in.
    let mut c = IndexClient::connect(
        &ix.addr(),
        Some(&fp.tls),
        Some(index_key),
        Limits::default(),
    )
    .await
    .expect("the index keeps its key across restarts");
    let r = c.search("track name 29999", 10).await.unwrap();
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].peers[0].peer_id, reg.peer_id);
    let again = c
        .register(
            &me,
            "127.0.0.1",
            fp.port,
            peershare::content::Digest([1; 32]),
            30_000,
        )
        .await
        .unwrap();
    assert!(again.in_sync);
    assert_eq!(
        again.peer_id, reg.peer_id,
        "peer id stable across index restarts"
    );
    ix.stop().await;
}

#[tokio::test]
async fn a_client_beyond_the_connection_limit_takes_the_place_of_the_idle_one() {
    // Issue 12 changed this: extra clients used to wait in the accept queue behind idle ones.
    let t = tempfile::tempdir().unwrap();
    let store = peershare::index::IndexStore::open(&t.path().join("ix.sqlite")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = peershare::index::IndexConfig {
        max_connections: 1,
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(
        peershare::index::IndexServer::new(store, config, common::client_tls())
            .run(listener, stop.clone()),
    );
    let mut first = IndexClient::connect(&addr, None, None, Limits::default())
        .await
        .unwrap();
    assert!(first.search("x", 1).await.unwrap().files.is_empty());
    // The first client now waits for its next request: the second one takes its place at once.
    let mut second = tokio::time::timeout(
        Duration::from_secs(5),
        IndexClient::connect(&addr, None, None, Limits::default()),
    )
    .await
    .expect("served at once, not queued behind an idle client")
    .unwrap();
    assert!(second.search("x", 1).await.unwrap().files.is_empty());
    assert!(
        first.search("x", 1).await.is_err(),
        "the idle client was closed to make room"
    );
    stop.cancel();
}

#[tokio::test]
async fn repeated_searches_see_every_acknowledged_change_at_once() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(1)).await;
    let me = Identity::load_or_create(&t.path().join("me")).unwrap();
    let fp = FakePeer::new(&me).await;
    let digest = peershare::content::Digest([3; 32]);
    let mut c = fp.connect(&ix.addr()).await;
    let mut reader = client(&ix).await;
    c.register(&me, "127.0.0.1", fp.port, digest, 2)
        .await
        .unwrap();
    c.sync_files(true, vec![entry("alpha one", b"1")], vec![], digest)
        .await
        .unwrap();
    let count = |r: peershare::protocol::SearchResults| r.files.len();
    // The same query twice: the second answer comes from the cache, and is the same.
    let first = reader.search("ALPHA", 10).await.unwrap();
    assert_eq!(reader.search("alpha", 10).await.unwrap(), first);
    assert_eq!(count(first), 1);
    c.sync_files(false, vec![entry("alpha two", b"2")], vec![], digest)
        .await
        .unwrap();
    assert_eq!(count(reader.search("alpha", 10).await.unwrap()), 2, "added");
    c.sync_files(false, vec![], vec!["alpha one".into()], digest)
        .await
        .unwrap();
    let left = reader.search("alpha", 10).await.unwrap();
    assert_eq!(left.files[0].name, "alpha two", "removed");
    assert_eq!(count(left), 1);
    // The lease runs out with no heartbeat: gone (the cache keeps an answer 1 s at most).
    let gone = eventually(Duration::from_secs(5), || async {
        names(ix.addr(), "alpha").await?.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "an expired peer leaves the results");
    // A heartbeat brings it back at once, although the same query was just answered.
    c.heartbeat().await.unwrap();
    assert_eq!(count(reader.search("alpha", 10).await.unwrap()), 1, "back");
    c.unregister().await.unwrap();
    assert_eq!(count(reader.search("alpha", 10).await.unwrap()), 0, "left");
    ix.stop().await;
}

/// The code and message of the index's `Error` reply, if that is what `r` is.
fn refusal<T: std::fmt::Debug>(r: Result<T, peershare::index::IndexClientError>) -> (u16, String) {
    match r {
        Err(peershare::index::IndexClientError::Protocol {
            source: peershare::protocol::ProtocolError::Remote(e),
            ..
        }) => (e.code, e.message),
        other => panic!("expected an Error reply, got {other:?}"),
    }
}

/// Nobody can list someone else's address: B, on its own connection with its own key, can
/// register neither A's address (the index finds A's key answering there, not B's) nor A's
/// key (not the key B's connection proved); nothing B sends then reaches the search results.
#[tokio::test]
async fn nobody_can_list_someone_elses_address() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_index_no_relay(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let alice = Identity::load_or_create(&t.path().join("alice")).unwrap();
    let bob = Identity::load_or_create(&t.path().join("bob")).unwrap();
    let fa = FakePeer::new(&alice).await;
    let mut a = fa.connect(&ix.addr()).await;
    let ra = a
        .register(&alice, "127.0.0.1", fa.port, Default::default(), 0)
        .await
        .unwrap();
    a.sync_files(
        true,
        vec![entry("shared.txt", b"alice's bytes")],
        vec![],
        Default::default(),
    )
    .await
    .unwrap();
    let bob_tls = peershare::tls::Tls::new(&bob).unwrap();
    let mut b = IndexClient::connect(&ix.addr(), Some(&bob_tls), None, Limits::default())
        .await
        .unwrap();
    // Bob's key, Alice's address: Alice's key answers there.
    let (code, why) = refusal(
        b.register(&bob, "127.0.0.1", fa.port, Default::default(), 0)
            .await,
    );
    assert_eq!(code, ErrorCode::Unreachable, "{why}");
    assert!(
        why.contains(&format!("127.0.0.1:{}", fa.port)),
        "names the address: {why}"
    );
    // Alice's key in the Register, on Bob's connection (even signed by Alice's key).
    let (code, why) = refusal(
        b.register(&alice, "127.0.0.1", fa.port, Default::default(), 0)
            .await,
    );
    assert_eq!(code, ErrorCode::Unauthorized, "{why}");
    // Bob has no session: what it sends is refused and listed nowhere.
    let (code, why) = refusal(
        b.sync_files(
            true,
            vec![
                entry("shared.txt", b"alice's bytes"),
                entry("bogus.txt", b"bob's"),
            ],
            vec![],
            Default::default(),
        )
        .await,
    );
    assert_eq!(code, ErrorCode::Unauthorized, "{why}");
    let mut c = client(&ix).await;
    let r = c.search("shared", 10).await.unwrap();
    assert_eq!(r.files.len(), 1, "{r:?}");
    assert_eq!(r.files[0].peers.len(), 1, "only Alice holds it: {r:?}");
    let hit = &r.files[0].peers[0];
    assert_eq!(hit.peer_id, ra.peer_id);
    assert_eq!(hit.key, Some(alice.public_key()));
    assert_eq!((hit.host.as_str(), hit.port), ("127.0.0.1", fa.port));
    assert!(c.search("bogus", 10).await.unwrap().files.is_empty());
    let peers = c.list_peers().await.unwrap().peers;
    assert_eq!(peers.len(), 1, "Bob is not listed: {peers:?}");
    assert_eq!(peers[0].peer_id, ra.peer_id);
    ix.stop().await;
}
