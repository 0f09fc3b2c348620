//! A peer's sessions with the index: reconnecting after index restarts, one live session per
//! identity, one process per state directory, throw-away identities of `get`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use peershare::content::Digest;
use peershare::identity::Identity;
use peershare::index::{IndexClient, IndexClientError, IndexConfig};
use peershare::protocol::{ErrorCode, FileEntry, Limits, ProtocolError};

fn config(lease: Duration) -> IndexConfig {
    IndexConfig {
        lease,
        ..IndexConfig::default()
    }
}

/// The index restarted 8 times on the same address: each time the sharing peer notices and is
/// registered again within 5 s (it used to wait twice as long after each restart, 30 s from
/// the 7th on).
#[tokio::test]
async fn a_peer_registers_again_quickly_after_every_index_restart() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("phoenix.txt"), b"rises again").unwrap();
    let db = t.path().join("ix.sqlite");
    // A 1 s lease: the peer heartbeats every 333 ms, so it notices an outage at once.
    let lease = Duration::from_secs(1);
    let mut ix = start_index_with(&db, "127.0.0.1:0".parse().unwrap(), config(lease)).await;
    let addr = ix.addr;
    let mut peer = start_peer(&share, Some(ix.addr()), &t.path().join("p")).await;
    let mut took = Vec::new();
    for round in 0..8 {
        ix.stop().await;
        peer.wait_for(Duration::from_secs(10), |s| !s.in_sync)
            .await
            .unwrap_or_else(|s| panic!("round {round}: outage not noticed: {s:?}"));
        ix = start_index_with(&db, addr, config(lease)).await;
        let started = Instant::now();
        let s = peer
            .wait_for(Duration::from_secs(5), |s| s.in_sync)
            .await
            .unwrap_or_else(|s| {
                panic!("round {round}: not registered again within 5 s after {took:?}: {s:?}")
            });
        took.push(started.elapsed());
        assert_eq!(s.files_registered, Some(1));
    }
    let mut c = IndexClient::connect(&ix.addr(), None, None, Limits::default())
        .await
        .unwrap();
    assert_eq!(c.search("phoenix", 10).await.unwrap().files.len(), 1);
    eprintln!("registered again after each restart in {took:?}");
    peer.shutdown().await;
    ix.stop().await;
}

async fn client(addr: &str) -> IndexClient {
    IndexClient::connect(addr, None, None, Limits::default())
        .await
        .expect("connect")
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

/// The code and message of the index's `Error` reply, if that is what `r` is.
fn refusal<T: std::fmt::Debug>(r: Result<T, IndexClientError>) -> (u16, String) {
    match r {
        Err(IndexClientError::Protocol {
            source: ProtocolError::Remote(e),
            ..
        }) => (e.code, e.message),
        other => panic!("expected an Error reply, got {other:?}"),
    }
}

/// How many files the index finds for `query` (a fresh connection each time).
async fn hits(addr: &str, query: &str) -> usize {
    client(addr)
        .await
        .search(query, 100)
        .await
        .unwrap()
        .files
        .len()
}

/// Two sessions of one key (a stale connection, or a copied key): the newer one wins, and
/// nothing the older one sends afterwards (not even `Unregister`) changes the newer one's
/// entries, before or after the index restarts.
#[tokio::test]
async fn a_second_session_of_one_key_never_undoes_the_first() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("ix.sqlite");
    let ix = start_index(&db, Duration::from_secs(60)).await;
    let me = Identity::load_or_create(&t.path().join("me")).unwrap();
    // One key proven at two addresses: the older session's and the newer one's.
    let (old, new) = (FakePeer::new(&me).await, FakePeer::new(&me).await);
    let mut a = old.connect(&ix.addr()).await;
    let ra = a
        .register(&me, "127.0.0.1", old.port, Digest([1; 32]), 1)
        .await
        .unwrap();
    a.sync_files(
        true,
        vec![entry("alpha.txt", b"a")],
        vec![],
        Digest([1; 32]),
    )
    .await
    .unwrap();
    let mut b = new.connect(&ix.addr()).await;
    let rb = b
        .register(&me, "127.0.0.1", new.port, Digest([2; 32]), 1)
        .await
        .unwrap();
    assert_eq!(rb.peer_id, ra.peer_id, "one key, one peer");
    b.sync_files(true, vec![entry("beta.txt", b"b")], vec![], Digest([2; 32]))
        .await
        .unwrap();
    // Everything the older session asks to change is refused, and says why.
    let (c, why) = refusal(a.heartbeat().await);
    assert_eq!(c, ErrorCode::Unauthorized);
    assert!(why.contains("superseded"), "{why}");
    let (c, _) = refusal(
        a.sync_files(
            true,
            vec![entry("gamma.txt", b"c")],
            vec![],
            Digest([3; 32]),
        )
        .await,
    );
    assert_eq!(c, ErrorCode::Unauthorized);
    let (c, _) = refusal(a.unregister().await);
    assert_eq!(c, ErrorCode::Unauthorized);
    // The older connection is still usable, for searches at least.
    let found = a.search("beta", 10).await.unwrap();
    assert_eq!(found.files.len(), 1);
    assert_eq!(found.files[0].peers[0].port, new.port, "the newer address");
    assert_eq!(hits(&ix.addr(), "alpha").await, 0);
    assert_eq!(hits(&ix.addr(), "gamma").await, 0);
    let peers = b.list_peers().await.unwrap().peers;
    assert_eq!(peers.len(), 1);
    assert!(peers[0].live && peers[0].files == 1, "{peers:?}");
    // The newer session still works.
    b.heartbeat().await.unwrap();
    drop((a, b));
    ix.stop().await;
    let ix = start_index(&db, Duration::from_secs(60)).await;
    assert_eq!(hits(&ix.addr(), "beta").await, 1, "kept across a restart");
    assert_eq!(hits(&ix.addr(), "alpha").await, 0);
    // Registering again on the same connection supersedes that connection's own session.
    let mut c = new.connect(&ix.addr()).await;
    c.register(&me, "127.0.0.1", new.port, Digest([2; 32]), 1)
        .await
        .unwrap();
    let again = c
        .register(&me, "127.0.0.1", new.port, Digest([2; 32]), 1)
        .await
        .unwrap();
    assert!(again.in_sync);
    c.unregister().await.unwrap();
    assert_eq!(
        hits(&ix.addr(), "beta").await,
        0,
        "the newest session leaves"
    );
    ix.stop().await;
}

/// A second `share` on the same state directory (the same identity) is refused with a one-line
/// message naming the directory and the process holding it; `search` needs no lock; once the
/// holder is killed (no clean exit), the directory is free again.
#[test]
fn a_second_share_on_one_state_directory_is_refused() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let share = share.to_str().unwrap();
    let args = ["share", share, "--no-index", "--listen", "127.0.0.1:0"];
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_peershare"))
            .args(args)
            .env("PEERSHARE_HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Its output is read to the end (not dropped after the line): a share whose stdout is
    // closed stops at its next line, which would free the state directory.
    let listening = |child: &mut std::process::Child| {
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "the share started"
        );
    };
    let mut first = start();
    listening(&mut first);
    let mut second = Command::new(env!("CARGO_BIN_EXE_peershare"))
        .args(args)
        .env("PEERSHARE_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a second share that is not refused would run until killed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            second.kill().unwrap();
            first.kill().unwrap();
            panic!("a second share on the same state directory kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "refused: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&home.display().to_string()) && err.contains(&format!("pid {}", first.id())),
        "names the directory and the holder: {err}"
    );
    // A search takes no lock (it fails here only because no index runs).
    let search = Command::new(env!("CARGO_BIN_EXE_peershare"))
        .args(["search", "x", "--index", "127.0.0.1:1"])
        .env("PEERSHARE_HOME", &home)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&search.stderr).contains("in use"),
        "{search:?}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let mut third = start();
    listening(&mut third);
    third.kill().unwrap();
    third.wait().unwrap();
}

/// An ephemeral peer (a `get` sharing its downloads in progress) lives only as long as its
/// connection: when the connection closes without `Unregister` (the `get` was killed), the
/// index forgets it at once, not a lease later. `ListPeers` never counts it. A peer with a
/// long-term key, by contrast, stays live for its lease (it may be back in a moment).
#[tokio::test]
async fn a_killed_downloader_is_forgotten_when_its_connection_closes() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let addr = ix.addr();
    let mut partial = entry("partial/x", b"half a file");
    partial.have = Some(vec![0x80]);
    let throwaway = Identity::ephemeral().unwrap();
    let ft = FakePeer::new(&throwaway).await;
    let mut eph = ft.connect(&addr).await;
    eph.register_as(&throwaway, "127.0.0.1", ft.port, Digest::default(), 0, true)
        .await
        .unwrap();
    eph.sync_files(true, vec![partial.clone()], vec![], Digest::default())
        .await
        .unwrap();
    let me = Identity::load_or_create(&t.path().join("me")).unwrap();
    let fm = FakePeer::new(&me).await;
    let mut long = fm.connect(&addr).await;
    long.register(&me, "127.0.0.1", fm.port, Digest([4; 32]), 1)
        .await
        .unwrap();
    long.sync_files(true, vec![entry("kept.txt", b"k")], vec![], Digest([4; 32]))
        .await
        .unwrap();
    assert_eq!(hits(&addr, "partial").await, 1, "a partial source is found");
    let peers = long.list_peers().await.unwrap().peers;
    assert_eq!(
        peers.len(),
        1,
        "throw-away identities are not listed: {peers:?}"
    );
    assert_eq!(peers[0].port, fm.port);
    // Its key reconnects on a second connection; the first one closing must not remove it.
    let mut eph2 = ft.connect(&addr).await;
    eph2.register_as(&throwaway, "127.0.0.1", ft.port, Digest::default(), 0, true)
        .await
        .unwrap();
    drop(eph);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hits(&addr, "partial").await,
        1,
        "the newer connection holds it"
    );
    // Killed: the connection closes with no Unregister.
    drop(eph2);
    drop(long);
    let gone = eventually(Duration::from_secs(5), || async {
        (hits(&addr, "partial").await == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "forgotten once its connection closed");
    assert_eq!(
        hits(&addr, "kept").await,
        1,
        "a long-term peer stays for its lease"
    );
    ix.stop().await;
}

/// Peers not heard from for `forget_after` are forgotten, files and all; an ephemeral peer
/// whose connection hangs (open, silent) is forgotten after two leases; a peer that keeps
/// its heartbeat going is kept.
#[tokio::test]
async fn peers_not_heard_from_for_long_are_forgotten() {
    let t = tempfile::tempdir().unwrap();
    let lease = Duration::from_secs(1);
    let config = IndexConfig {
        lease,
        forget_after: Duration::from_secs(2),
        ..IndexConfig::default()
    };
    let ix = start_index_with(
        &t.path().join("ix.sqlite"),
        "127.0.0.1:0".parse().unwrap(),
        config,
    )
    .await;
    let addr = ix.addr();
    let (gone_key, alive_key) = (
        Identity::load_or_create(&t.path().join("gone")).unwrap(),
        Identity::load_or_create(&t.path().join("alive")).unwrap(),
    );
    let hung_key = Identity::ephemeral().unwrap();
    let (fg, fh, fa) = (
        FakePeer::new(&gone_key).await,
        FakePeer::new(&hung_key).await,
        FakePeer::new(&alive_key).await,
    );
    let mut gone = fg.connect(&addr).await;
    let rg = gone
        .register(&gone_key, "127.0.0.1", fg.port, Digest([5; 32]), 1)
        .await
        .unwrap();
    gone.sync_files(true, vec![entry("gone.txt", b"g")], vec![], Digest([5; 32]))
        .await
        .unwrap();
    drop(gone);
    let mut hung = fh.connect(&addr).await;
    hung.register_as(&hung_key, "127.0.0.1", fh.port, Digest::default(), 0, true)
        .await
        .unwrap();
    let mut alive = fa.connect(&addr).await;
    let ra = alive
        .register(&alive_key, "127.0.0.1", fa.port, Digest([7; 32]), 0)
        .await
        .unwrap();
    let mut listed = client(&addr).await;
    let started = Instant::now();
    let mut forgotten = false;
    while started.elapsed() < Duration::from_secs(8) {
        alive.heartbeat().await.unwrap();
        let ids: Vec<u64> = listed
            .list_peers()
            .await
            .unwrap()
            .peers
            .iter()
            .map(|p| p.peer_id)
            .collect();
        assert!(ids.contains(&ra.peer_id), "a live peer is kept");
        if !ids.contains(&rg.peer_id) {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        forgotten,
        "a peer silent for longer than --forget-after is forgotten"
    );
    eprintln!("forgotten after {:?}", started.elapsed());
    // Its files went with it: they are not held for a peer that is never coming back.
    let db = rusqlite_count(&t.path().join("ix.sqlite"), "SELECT count(*) FROM files");
    assert_eq!(db, 0, "the forgotten peer's files are deleted");
    // Coming back, the key is a new peer, told to send its list.
    let mut back = fg.connect(&addr).await;
    let again = back
        .register(&gone_key, "127.0.0.1", fg.port, Digest([5; 32]), 1)
        .await
        .unwrap();
    assert!(!again.in_sync && again.peer_id != rg.peer_id, "{again:?}");
    // The hung ephemeral peer was forgotten within two leases (and a purge period).
    let db = t.path().join("ix.sqlite");
    let purged = eventually(Duration::from_secs(5), || async {
        let left = rusqlite_count(&db, "SELECT count(*) FROM peers WHERE ephemeral=1");
        (left == 0).then_some(())
    })
    .await;
    assert!(purged.is_some(), "the hung ephemeral peer is forgotten");
    let told = refusal(hung.heartbeat().await);
    assert_eq!(
        told.0,
        ErrorCode::Unauthorized,
        "told to register again: {told:?}"
    );
    ix.stop().await;
}

/// A count from the index database, read beside the running index.
fn rusqlite_count(db: &std::path::Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A sharing peer whose registration another process takes over (a copy of its key) notices
/// at its next heartbeat, says why, and registers again after one lease: the index then holds
/// its files, and the other session is the superseded one.
#[tokio::test]
async fn a_share_whose_session_is_taken_over_notices_and_takes_it_back() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("mine.txt"), b"mine").unwrap();
    let lease = Duration::from_secs(1);
    let ix = start_index_with(
        &t.path().join("ix.sqlite"),
        "127.0.0.1:0".parse().unwrap(),
        config(lease),
    )
    .await;
    let state = t.path().join("p");
    let mut peer = start_peer(&share, Some(ix.addr()), &state).await;
    let copy = Identity::load_or_create(&state).unwrap();
    // The other process proves the copied key at its own address.
    let fc = FakePeer::new(&copy).await;
    let mut other = fc.connect(&ix.addr()).await;
    other
        .register(&copy, "127.0.0.1", fc.port, Digest([9; 32]), 1)
        .await
        .unwrap();
    other
        .sync_files(
            true,
            vec![entry("intruder.txt", b"i")],
            vec![],
            Digest([9; 32]),
        )
        .await
        .unwrap();
    let s = peer
        .wait_for(Duration::from_secs(5), |s| {
            s.last_error
                .as_ref()
                .is_some_and(|e| e.contains("superseded"))
        })
        .await
        .expect("the peer notices its session was superseded");
    assert!(!s.in_sync);
    peer.wait_for(Duration::from_secs(5), |s| s.in_sync)
        .await
        .expect("registered again after a lease");
    assert_eq!(hits(&ix.addr(), "mine").await, 1);
    assert_eq!(hits(&ix.addr(), "intruder").await, 0);
    let (c, why) = refusal(other.heartbeat().await);
    assert_eq!(c, ErrorCode::Unauthorized, "{why}");
    peer.shutdown().await;
    ix.stop().await;
}
