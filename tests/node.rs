//! The library's node API as a program built on it uses it: look ids up, download a list,
//! follow progress through events, tell failures apart by their type.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use peershare::content::{ContentId, Digest, PIECE_SIZE};
use peershare::index::IndexClient;
use peershare::node::{GetError, GetEvent, GetOptions, Lookup, download_stream};
use peershare::protocol::Limits;

/// What the event sink saw, in a form a test can compare.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Started(usize, u64),
    Progress(usize, u64, u64),
    Finished(usize),
    IndexLost,
}

fn recorder() -> (GetOptions, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let opts = GetOptions {
        events: Some(Arc::new(move |e: GetEvent<'_>| {
            let s = match e {
                GetEvent::Started { n, hit } => Seen::Started(n, hit.size),
                GetEvent::Progress { n, progress } => {
                    Seen::Progress(n, progress.done, progress.total)
                }
                GetEvent::Finished { n } => Seen::Finished(n),
                GetEvent::IndexLost { .. } => Seen::IndexLost,
                _ => return,
            };
            sink.lock().unwrap().push(s);
        })),
        ..GetOptions::default()
    };
    (opts, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_looked_up_and_downloaded_in_order_with_progress_for_full_downloads() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let big = data(3 * PIECE_SIZE as usize + 17, 1);
    let small = data(1000, 2);
    std::fs::write(share.join("big.bin"), &big).unwrap();
    std::fs::write(share.join("small.bin"), &small).unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let peer = start_peer(&share, Some(ix.addr()), &t.path().join("p")).await;

    let unknown = ContentId(Digest([7; 32]));
    let ids = vec![
        blake3::hash(&big).into(),
        unknown,
        blake3::hash(&small).into(),
    ];
    let lookup = Lookup {
        index: Some(ix.addr()),
        client: Some(
            IndexClient::connect(&ix.addr(), None, None, Limits::default())
                .await
                .unwrap(),
        ),
        dht: None,
        lan: None,
    };
    let (opts, seen) = recorder();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let lookups = tokio::spawn({
        let opts = opts.clone();
        async move { lookup.run(ids, &opts, tx).await }
    });
    let out = t.path().join("out");
    let results = download_stream(rx, 3, &out, &opts, 2).await;
    lookups.await.unwrap();

    let r0 = results[0].as_ref().expect("big file downloaded");
    assert_eq!(r0.path, out.join("big.bin"));
    assert_eq!(std::fs::read(&r0.path).unwrap(), big);
    assert!(
        matches!(&results[1], Err(GetError::NoSource(id)) if *id == unknown),
        "{:?}",
        results[1]
    );
    assert_eq!(
        results[1].as_ref().unwrap_err().to_string(),
        format!("no live peer shares {unknown}")
    );
    let r2 = results[2].as_ref().expect("small file downloaded");
    assert_eq!(std::fs::read(&r2.path).unwrap(), small);

    // The full download of the big file is told from start to end; the small file, fetched
    // in one request, is not; the unknown id has no download to tell of.
    let seen = seen.lock().unwrap().clone();
    let size = big.len() as u64;
    assert_eq!(seen.first(), Some(&Seen::Started(0, size)), "{seen:?}");
    assert_eq!(seen.last(), Some(&Seen::Finished(0)), "{seen:?}");
    let progress: Vec<(u64, u64)> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Progress(0, done, total) => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "never backwards"
    );
    assert_eq!(progress.last(), Some(&(size, size)), "ends complete");
    assert!(
        seen.iter().all(|s| !matches!(
            s,
            Seen::Started(n, _) | Seen::Progress(n, ..) | Seen::Finished(n) if *n != 0
        )),
        "{seen:?}"
    );
    peer.shutdown().await;
    ix.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_index_fails_the_remaining_ids_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let client = IndexClient::connect(&ix.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let addr = ix.addr();
    ix.stop().await;
    let lookup = Lookup {
        index: Some(addr.clone()),
        client: Some(client),
        dht: None,
        lan: None,
    };
    let (opts, seen) = recorder();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let ids: Vec<ContentId> = (0..3u8).map(|k| ContentId(Digest([k; 32]))).collect();
    tokio::time::timeout(Duration::from_secs(20), lookup.run(ids, &opts, tx))
        .await
        .expect("the lookup gives up in time");
    let mut got = Vec::new();
    while let Ok((n, r)) = rx.try_recv() {
        got.push((n, r));
    }
    assert_eq!(got.len(), 3);
    for (k, (n, r)) in got.iter().enumerate() {
        assert_eq!(*n, k);
        match r {
            Err(GetError::IndexLost(why)) => {
                assert!(why.starts_with("index lookup failed: "), "{why}");
                assert!(why.contains(&addr), "names the index: {why}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Without the DHT there is nothing to fall back on: no event says "using the DHT only".
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_peer_that_lacks_the_file_is_a_typed_error() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("f.bin"), data(2 * PIECE_SIZE as usize, 3)).unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let peer = start_peer(&share, Some(ix.addr()), &t.path().join("p")).await;
    let mut c = IndexClient::connect(&ix.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let found = c.search("f.bin", 10).await.unwrap();
    let hit = &found.files[0];
    let opts = GetOptions {
        only_peer: Some(hit.peers[0].peer_id + 100),
        ..GetOptions::default()
    };
    let out = t.path().join("out");
    let r = peershare::node::download_hit(hit, 0, &out, &opts).await;
    match r {
        Err(GetError::NotOnPeer { peer, id }) => {
            assert_eq!(peer, hit.peers[0].peer_id + 100);
            assert_eq!(id, hit.content_id);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !out.exists() || files_in(&out).is_empty(),
        "nothing written"
    );
    peer.shutdown().await;
    ix.stop().await;
}
