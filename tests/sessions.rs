//! A peer's sessions with the index: reconnecting after index restarts, one live session per
//! identity, one process per state directory, throw-away identities of `get`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use peershare::identity::Identity;
use peershare::index::{IndexClient, IndexConfig};
use peershare::protocol::{FileEntry, Limits};

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
    let mut c = IndexClient::connect(&ix.addr(), Limits::default())
        .await
        .unwrap();
    assert_eq!(c.search("phoenix", 10).await.unwrap().files.len(), 1);
    eprintln!("registered again after each restart in {took:?}");
    peer.shutdown().await;
    ix.stop().await;
}
