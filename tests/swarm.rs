//! Swarm downloads: many sources at once, bad and vanishing sources, spreading by speed, rate limits, upload slots, resume after SIGKILL.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use peershare::content::{ContentId, PIECE_SIZE};
use peershare::download::{Downloader, Source, SourceTiming};
use peershare::identity::Identity;
use peershare::index::IndexClient;
use peershare::protocol::{FileEntry, Limits};
use peershare::rate::RateLimiter;

fn src(addr: &str, id: u64) -> Source {
    Source {
        key: None,
        peer_id: Some(id),
        addr: addr.to_string(),
    }
}

fn named(how: Behaviour) -> Behaviour {
    Behaviour {
        name: "f.bin".into(),
        ..how
    }
}

#[tokio::test]
async fn four_sources_one_corrupting_is_dropped_and_the_file_is_exact() {
    let bytes = data(40 * PIECE_SIZE as usize + 1234, 11);
    let id = ContentId::from(blake3::hash(&bytes));
    let mut sources = Vec::new();
    for k in 0..3 {
        let (a, _) = fake_peer(
            bytes.clone(),
            named(Behaviour {
                delay: Duration::from_millis(2),
                ..Default::default()
            }),
        )
        .await;
        sources.push(src(&a, k + 1));
    }
    let (bad, _) = fake_peer(
        bytes.clone(),
        named(Behaviour {
            corrupt: Some(|_| true),
            ..Default::default()
        }),
    )
    .await;
    sources.insert(1, src(&bad, 9));
    let out = tempfile::tempdir().unwrap();
    let rep = Downloader::default()
        .download(id, &sources, out.path(), None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&rep.path).unwrap(), bytes);
    assert_eq!(b3sum(&rep.path), id.to_hex());
    let bad_rep = rep.sources.iter().find(|s| s.peer_id == Some(9)).unwrap();
    assert!(
        bad_rep
            .error
            .as_deref()
            .unwrap_or("")
            .contains("dropped after 3"),
        "{bad_rep:?}"
    );
    assert!(
        bad_rep.pieces_rejected >= 3 && bad_rep.bytes == 0,
        "{bad_rep:?}"
    );
    assert_eq!(
        rep.sources.iter().map(|s| s.bytes).sum::<u64>(),
        bytes.len() as u64
    );
    assert!(
        rep.sources_used() >= 2,
        "pieces came from several sources: {:?}",
        rep.sources
    );
}

#[tokio::test]
async fn sources_that_die_or_stall_cost_only_their_pieces_in_flight() {
    let bytes = data(30 * PIECE_SIZE as usize, 12);
    let id = ContentId::from(blake3::hash(&bytes));
    let (dies, _) = fake_peer(
        bytes.clone(),
        named(Behaviour {
            die_after: Some(5),
            ..Default::default()
        }),
    )
    .await;
    let (stalls, _) = fake_peer(
        bytes.clone(),
        named(Behaviour {
            stall_after: Some(5),
            ..Default::default()
        }),
    )
    .await;
    let (slow, _) = fake_peer(
        bytes.clone(),
        named(Behaviour {
            delay: Duration::from_millis(5),
            ..Default::default()
        }),
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let d = Downloader {
        timing: SourceTiming {
            limits: Limits {
                read_timeout: Duration::from_secs(1),
                write_timeout: Duration::from_secs(5),
            },
            ..SourceTiming::default()
        },
        ..Downloader::default()
    };
    let rep = d
        .download(
            id,
            &[src(&dies, 1), src(&stalls, 2), src(&slow, 3)],
            out.path(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&rep.path).unwrap(), bytes);
    let err = |p: u64| {
        rep.sources
            .iter()
            .find(|s| s.peer_id == Some(p))
            .unwrap()
            .error
            .clone()
    };
    assert!(err(1).is_some(), "{:?}", rep.sources);
    // The stalled source is dropped at the read limit, unless the others finish first: the
    // download then ends at once (issue 12) and it is simply no longer asked.
    assert!(
        err(2).is_none_or(|e| e.contains("no complete message within")),
        "{:?}",
        rep.sources
    );
    let pieces = |p: u64| {
        rep.sources
            .iter()
            .find(|s| s.peer_id == Some(p))
            .unwrap()
            .pieces
    };
    assert!(pieces(2) <= 5, "{:?}", rep.sources);
    assert!(err(3).is_none());
}

#[tokio::test]
async fn a_faster_source_delivers_more_pieces() {
    let bytes = data(48 * PIECE_SIZE as usize, 13);
    let id = ContentId::from(blake3::hash(&bytes));
    let (slow, _) = fake_peer(
        bytes.clone(),
        named(Behaviour {
            delay: Duration::from_millis(40),
            ..Default::default()
        }),
    )
    .await;
    let (fast, _) = fake_peer(bytes.clone(), named(Behaviour::default())).await;
    let out = tempfile::tempdir().unwrap();
    let d = Downloader {
        window: 4,
        ..Downloader::default()
    };
    let rep = d
        .download(id, &[src(&slow, 1), src(&fast, 2)], out.path(), None)
        .await
        .unwrap();
    assert_eq!(b3sum(&rep.path), id.to_hex());
    let bytes_of = |p: u64| {
        rep.sources
            .iter()
            .find(|s| s.peer_id == Some(p))
            .unwrap()
            .bytes
    };
    assert!(
        bytes_of(2) > 2 * bytes_of(1),
        "fast {} slow {}",
        bytes_of(2),
        bytes_of(1)
    );
}

#[tokio::test]
async fn upload_and_download_rate_limits_hold() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let size = 3 * 1024 * 1024;
    std::fs::write(share.join("r.bin"), data(size, 14)).unwrap();
    let id = ContentId::from(blake3::hash(&data(size, 14)));
    let rate = 2 * 1024 * 1024u64;
    let mut config =
        peershare::node::ShareConfig::new(vec![share.clone()], None, t.path().join("p"));
    config.peer.upload_rate = Some(Arc::new(RateLimiter::new(rate)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = peershare::node::start_share(config, listener)
        .await
        .unwrap();
    let addr = peer.local_addr.to_string();
    let expected = size as f64 / rate as f64;
    let started = Instant::now();
    let rep = Downloader::default()
        .download(id, &[src(&addr, 1)], &t.path().join("a"), None)
        .await
        .unwrap();
    let up = started.elapsed().as_secs_f64();
    assert_eq!(b3sum(&rep.path), id.to_hex());
    assert!(
        up >= 0.7 * expected,
        "upload limit: {up:.2}s for {expected:.2}s worth"
    );
    // The same from an unlimited peer, limited on the downloading side.
    let (free, _) = fake_peer(data(size, 14), named(Behaviour::default())).await;
    let d = Downloader {
        rate: Some(Arc::new(RateLimiter::new(rate))),
        ..Downloader::default()
    };
    let started = Instant::now();
    d.download(id, &[src(&free, 2)], &t.path().join("b"), None)
        .await
        .unwrap();
    let down = started.elapsed().as_secs_f64();
    assert!(
        down >= 0.7 * expected,
        "download limit: {down:.2}s for {expected:.2}s worth"
    );
    eprintln!(
        "rate {rate} B/s, {size} bytes: expected {expected:.2}s, upload-limited {up:.2}s, download-limited {down:.2}s"
    );
    peer.shutdown().await;
}

#[tokio::test]
async fn peers_beyond_the_upload_slots_wait_their_turn() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let bytes = data(6 * PIECE_SIZE as usize, 15);
    std::fs::write(share.join("s.bin"), &bytes).unwrap();
    let id = ContentId::from(blake3::hash(&bytes));
    let mut config =
        peershare::node::ShareConfig::new(vec![share.clone()], None, t.path().join("p"));
    config.peer.upload_slots = 1;
    config.peer.upload_rate = Some(Arc::new(RateLimiter::new(8 * 1024 * 1024)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = peershare::node::start_share(config, listener)
        .await
        .unwrap();
    let addr = peer.local_addr.to_string();
    let d = Downloader {
        timing: SourceTiming {
            busy_retry: Duration::from_millis(50),
            ..SourceTiming::default()
        },
        ..Downloader::default()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..3 {
        let (d, addr, dir) = (d.clone(), addr.clone(), t.path().join(format!("d{n}")));
        tasks.spawn(async move { d.download(id, &[src(&addr, 1)], &dir, None).await });
    }
    while let Some(r) = tasks.join_next().await {
        let rep = r.unwrap().unwrap();
        assert_eq!(std::fs::read(&rep.path).unwrap(), bytes);
    }
    peer.shutdown().await;
}

#[tokio::test]
async fn sigkill_then_the_same_get_resumes_without_refetching() {
    let t = tempfile::tempdir().unwrap();
    let pieces = 120u64;
    let bytes = data((pieces * PIECE_SIZE) as usize - 999, 16);
    let id = ContentId::from(blake3::hash(&bytes));
    let (peer_addr, sent) = fake_peer(
        bytes.clone(),
        named(Behaviour {
            delay: Duration::from_millis(8),
            secret: Some([42; 32]),
            ..Default::default()
        }),
    )
    .await;
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    // The fake peer's own key: the index checks it answers at the address registered.
    let me = Identity::from_secret([42; 32]);
    let tls = peershare::tls::Tls::new(&me).unwrap();
    let mut c = IndexClient::connect(&ix.addr(), Some(&tls), None, Limits::default())
        .await
        .unwrap();
    let port: u16 = peer_addr.rsplit(':').next().unwrap().parse().unwrap();
    c.register(&me, "127.0.0.1", port, Default::default(), 1)
        .await
        .unwrap();
    let entry = FileEntry {
        path: "f.bin".into(),
        name: "f.bin".into(),
        size: bytes.len() as u64,
        content_id: id,
        mtime: 0,
        have: None,
    };
    c.sync_files(true, vec![entry], vec![], Default::default())
        .await
        .unwrap();
    let out = t.path().join("out");
    let get = || {
        Command::new(env!("CARGO_BIN_EXE_peershare"))
            .args([
                "get",
                &id.to_hex(),
                "-o",
                out.to_str().unwrap(),
                "--index",
                &ix.addr(),
            ])
            .env("PEERSHARE_HOME", t.path().join("client"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for fraction in [3, 2] {
        let mut child = get();
        let goal = pieces / fraction;
        let found = eventually(Duration::from_secs(60), || {
            let n = sent.load(Ordering::SeqCst);
            async move { (n >= goal).then_some(()) }
        })
        .await;
        assert!(found.is_some(), "download made progress");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            !out.join("f.bin").exists(),
            "no final file before completion"
        );
    }
    let child = get();
    let outp = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(outp.status.success());
    assert_eq!(
        String::from_utf8_lossy(&outp.stdout).trim(),
        out.join("f.bin").display().to_string()
    );
    assert_eq!(b3sum(&out.join("f.bin")), id.to_hex());
    assert_eq!(
        files_in(&out),
        vec![out.join("f.bin")],
        "the partial file is gone"
    );
    // Only pieces in flight at each kill (at most the request window plus those being written) were fetched twice.
    let total = sent.load(Ordering::SeqCst);
    eprintln!("pieces sent over three runs: {total} for a file of {pieces}");
    assert!(
        total <= pieces + 2 * (16 + 4),
        "sent {total} pieces for a file of {pieces}"
    );
    ix.stop().await;
}

#[tokio::test]
async fn several_downloads_at_once_with_a_json_summary() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut ids = Vec::new();
    for n in 0..4u64 {
        let content = data(2 * PIECE_SIZE as usize + n as usize, 20 + n);
        std::fs::write(a.join(format!("m{n}.bin")), &content).unwrap();
        std::fs::write(b.join(format!("copy-{n}.bin")), &content).unwrap();
        ids.push(ContentId::from(blake3::hash(&content)).to_hex());
    }
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let pa = start_peer(&a, Some(ix.addr()), &t.path().join("pa")).await;
    let pb = start_peer(&b, Some(ix.addr()), &t.path().join("pb")).await;
    let out = t.path().join("out");
    let mut args = vec!["get".to_string()];
    args.extend(ids.iter().cloned());
    args.extend(
        [
            "-o",
            out.to_str().unwrap(),
            "--index",
            &ix.addr(),
            "--parallel",
            "2",
            "--max-peers",
            "1",
            "--json",
        ]
        .map(String::from),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_peershare"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let downloads = doc["downloads"].as_array().unwrap();
    assert_eq!(downloads.len(), 4);
    for (d, id) in downloads.iter().zip(&ids) {
        assert_eq!(d["content_id"], id.as_str());
        assert_eq!(
            b3sum(std::path::Path::new(d["path"].as_str().unwrap())),
            *id
        );
        let per_source: u64 = d["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(per_source, d["size"].as_u64().unwrap());
        assert_eq!(d["pieces_rejected"], 0);
        assert!(d["seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(
            d["sources"].as_array().unwrap().len(),
            1,
            "--max-peers 1: one source of the two"
        );
        assert_eq!(d["sources_used"], 1);
    }
    pa.shutdown().await;
    pb.shutdown().await;
    ix.stop().await;
}

#[tokio::test]
async fn a_peer_serves_what_it_has_verified_while_still_downloading() {
    let t = tempfile::tempdir().unwrap();
    let seed_dir = t.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let size = 6 * 1024 * 1024;
    let bytes = data(size, 30);
    std::fs::write(seed_dir.join("spread.bin"), &bytes).unwrap();
    let id = ContentId::from(blake3::hash(&bytes));
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    // A: the only complete copy, slow to upload.
    let mut config =
        peershare::node::ShareConfig::new(vec![seed_dir], Some(ix.addr()), t.path().join("a"));
    config.peer.upload_rate = Some(Arc::new(RateLimiter::new(1024 * 1024)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut a = peershare::node::start_share(config, listener)
        .await
        .unwrap();
    a.wait_for(Duration::from_secs(20), |s| s.in_sync)
        .await
        .unwrap();
    // B: the real binary, downloading from A and serving what it has verified.
    let out_b = t.path().join("b");
    let mut b = Command::new(env!("CARGO_BIN_EXE_peershare"))
        .args([
            "get",
            &id.to_hex(),
            "-o",
            out_b.to_str().unwrap(),
            "--index",
            &ix.addr(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("PEERSHARE_HOME", t.path().join("bhome"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The index lists B as a partial source.
    let hit = eventually(Duration::from_secs(20), || async {
        let mut c = IndexClient::connect(&ix.addr(), None, None, Limits::default())
            .await
            .ok()?;
        let r = c.search(&id.to_hex(), 1).await.ok()?;
        let hit = r.files.into_iter().next()?;
        hit.peers.iter().any(|p| p.have.is_some()).then_some(hit)
    })
    .await
    .expect("B listed as a partial source");
    let b_id = hit.peers.iter().find(|p| p.have.is_some()).unwrap().peer_id;
    // C downloads from both (B listed first) while B is still downloading, and gets pieces from B.
    let mut sources: Vec<Source> = hit
        .peers
        .iter()
        .map(|p| src(&format!("{}:{}", p.host, p.port), p.peer_id))
        .collect();
    sources.sort_by_key(|s| s.peer_id != Some(b_id));
    let rep = Downloader::default()
        .download(id, &sources, &t.path().join("c"), None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&rep.path).unwrap(), bytes);
    let from_b = rep
        .sources
        .iter()
        .find(|s| s.peer_id == Some(b_id))
        .unwrap()
        .bytes;
    assert!(
        from_b > 0,
        "C got pieces from B while B was downloading: {:?}",
        rep.sources
    );
    eprintln!(
        "C took {:.2}s; from B {from_b} of {size} bytes",
        rep.seconds
    );
    let status = tokio::task::spawn_blocking(move || b.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(b3sum(&out_b.join("spread.bin")), id.to_hex());
    // B unregistered: it is forgotten, and only A remains.
    let mut c = IndexClient::connect(&ix.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let peers = c.list_peers().await.unwrap().peers;
    assert_eq!(peers.len(), 1, "{peers:?}");
    a.shutdown().await;
    ix.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_come_whole_and_verified_from_a_mix_of_good_and_bad_sources() {
    use peershare::node::{GetOptions, download_all};
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let sizes = [
        0,
        1,
        10_240,
        PIECE_SIZE as usize - 1,
        PIECE_SIZE as usize,
        777,
    ];
    let mut hits = Vec::new();
    let mut want = Vec::new();
    for (k, &size) in sizes.iter().enumerate() {
        let bytes = data(size, 900 + k as u64);
        let id = ContentId::from(blake3::hash(&bytes));
        let name = format!("small {k}.bin");
        let bad = Behaviour {
            corrupt: Some(|_| true),
            name: name.clone(),
            ..Behaviour::default()
        };
        let good = Behaviour {
            name: name.clone(),
            ..Behaviour::default()
        };
        let (bad_addr, _) = fake_peer(bytes.clone(), bad).await;
        let (good_addr, _) = fake_peer(bytes.clone(), good).await;
        // File k is first tried at source k % 2: the corrupting one for even k.
        hits.push(hit_at(&name, &bytes, &[(1, &bad_addr), (2, &good_addr)]));
        assert_eq!(hits[k].content_id, id);
        want.push((name, bytes));
    }
    // An earlier run's partial download of file 2 (garbage): re-checked and replaced, not trusted.
    std::fs::create_dir_all(&out).unwrap();
    let stale = out.join(format!(".{}.peershare-part", hits[2].content_id.to_hex()));
    std::fs::write(&stale, vec![0xAA; 10_240]).unwrap();
    let results = download_all(&hits, &out, &GetOptions::default(), 3).await;
    for (k, (r, (name, bytes))) in results.iter().zip(&want).enumerate() {
        let r = r.as_ref().expect("downloaded");
        assert_eq!(r.path, out.join(name));
        assert_eq!(&std::fs::read(&r.path).unwrap(), bytes, "{name}");
        // From the honest source: one request; otherwise the full downloader took over.
        let one_request = r.sources.len() == 1 && r.sources[0].peer_id == Some(2);
        assert_eq!(one_request, k % 2 == 1, "{name}: {:?}", r.sources);
    }
    // Nothing else is left: no partial files, no extra copies.
    assert_eq!(files_in(&out).len(), sizes.len());
    assert!(!stale.exists());
    // Fetching the same files again never replaces the first copies.
    let again = download_all(&hits[..2], &out, &GetOptions::default(), 2).await;
    let second = again[1].as_ref().expect("downloaded again");
    assert_eq!(second.path, out.join("small 1 (1).bin"));
    assert_eq!(files_in(&out).len(), sizes.len() + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_from_a_peer_with_one_upload_slot() {
    use peershare::node::{GetOptions, download_all};
    use peershare::protocol::FileHit;
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let mut hits = Vec::new();
    for k in 0..300u64 {
        let bytes = data(100 + k as usize * 37, 3000 + k);
        let name = format!("n{k:03}.dat");
        std::fs::write(share.join(&name), &bytes).unwrap();
        hits.push((name, bytes));
    }
    let mut config =
        peershare::node::ShareConfig::new(vec![share.clone()], None, t.path().join("p"));
    config.peer.upload_slots = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = peershare::node::start_share(config, listener)
        .await
        .unwrap();
    let addr = peer.local_addr.to_string();
    let files: Vec<FileHit> = hits
        .iter()
        .map(|(name, bytes)| hit_at(name, bytes, &[(7, &addr)]))
        .collect();
    // Two connections to a peer that serves one: the busy one gives its requests back to the
    // one holding the slot instead of waiting out its retries (30 s and more).
    let out = t.path().join("out");
    let results = tokio::time::timeout(
        Duration::from_secs(20),
        download_all(&files, &out, &GetOptions::default(), 8),
    )
    .await
    .expect("done well before a busy connection gives up");
    assert_downloaded(&results, &hits, &out);
    assert_eq!(files_in(&out).len(), hits.len());
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_small_files_from_a_rate_limited_peer_arrive_one_by_one() {
    use peershare::download::{LinkConfig, SourceLinks};
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let mut ids = Vec::new();
    for k in 0..16u64 {
        let bytes = data(1024, 7000 + k);
        std::fs::write(share.join(format!("r{k}")), &bytes).unwrap();
        ids.push(ContentId::from(blake3::hash(&bytes)));
    }
    let mut config =
        peershare::node::ShareConfig::new(vec![share.clone()], None, t.path().join("p"));
    config.peer.upload_rate = Some(Arc::new(RateLimiter::new(8 * 1024)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = peershare::node::start_share(config, listener)
        .await
        .unwrap();
    // All 16 requests in flight on one connection, a reply due every 1/8 s, and a read limit
    // of 1 s: replies must leave as they are ready, not once all 16 (2 s) waited at the limiter.
    let links = SourceLinks::new(
        LinkConfig {
            timing: SourceTiming {
                limits: Limits {
                    read_timeout: Duration::from_secs(1),
                    write_timeout: Duration::from_secs(5),
                },
                ..LinkConfig::default().timing
            },
            connections: 1,
            ..LinkConfig::default()
        },
        None,
    );
    let source = Source {
        peer_id: None,
        addr: peer.local_addr.to_string(),
        key: None,
    };
    let results = join_all(
        ids.iter()
            .map(|&id| links.fetch_whole(&source, id))
            .collect(),
    )
    .await;
    for (r, id) in results.into_iter().zip(&ids) {
        let (bytes, route) = r.expect("delivered within the read limit");
        assert_eq!(ContentId::from(blake3::hash(&bytes)), *id);
        assert_eq!((route.how, route.relay), ("direct", None));
    }
    peer.shutdown().await;
}

/// Runs futures concurrently (in this task) and collects their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let mut pending: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut done: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (k, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        done[k] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for d in done {
        out.extend(d);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_of_a_source_that_is_always_busy_come_from_the_others() {
    use peershare::node::{GetOptions, download_all};
    use peershare::protocol::FileHit;
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let mut files = Vec::new();
    for k in 0..20u64 {
        let bytes = data(500 + k as usize, 8000 + k);
        std::fs::write(share.join(format!("b{k:02}")), &bytes).unwrap();
        files.push((format!("b{k:02}"), bytes));
    }
    let mut peers = Vec::new();
    for (n, slots) in [(1, 1), (2, 8)] {
        let mut config = peershare::node::ShareConfig::new(
            vec![share.clone()],
            None,
            t.path().join(format!("p{n}")),
        );
        config.peer.upload_slots = slots;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.push(
            peershare::node::start_share(config, listener)
                .await
                .unwrap(),
        );
    }
    // Someone else holds peer 1's only upload slot for the whole test.
    let busy_addr = peers[0].local_addr.to_string();
    let mut holder =
        peershare::peer::PeerClient::connect(&busy_addr, None, None, Limits::default())
            .await
            .unwrap();
    let first = ContentId::from(blake3::hash(&files[0].1));
    holder.request_piece(first, 0).await.unwrap();
    holder.flush().await.unwrap();
    holder.next_piece().await.expect("the holder has the slot");
    let addrs: Vec<String> = peers.iter().map(|p| p.local_addr.to_string()).collect();
    let sources = [(1, addrs[0].as_str()), (2, addrs[1].as_str())];
    let hits: Vec<FileHit> = files.iter().map(|(n, b)| hit_at(n, b, &sources)).collect();
    let out = t.path().join("out");
    // Half the files are first asked of the busy peer: it is given up after a few rounds
    // (not after 30 BUSY answers each), and the full downloader gets them from peer 2.
    // (Five rounds take about 2 s; 30 `BUSY` answers a request, 1 s apart, would overrun the
    // 10 s bound below.)
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        download_all(&hits, &out, &GetOptions::default(), 4),
    )
    .await
    .expect("well before each request used up its BUSY answers");
    assert_downloaded(&results, &files, &out);
    drop(holder);
    for p in peers {
        p.shutdown().await;
    }
}

/// A search hit for `bytes` named `name`, shared by the given `(peer id, "HOST:PORT")` sources.
fn hit_at(name: &str, bytes: &[u8], sources: &[(u64, &str)]) -> peershare::protocol::FileHit {
    peershare::protocol::FileHit {
        name: name.into(),
        size: bytes.len() as u64,
        content_id: blake3::hash(bytes).into(),
        peers: sources
            .iter()
            .map(|&(peer_id, addr)| {
                let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
                peershare::protocol::PeerHit {
                    peer_id,
                    host: host.into(),
                    port: port.parse().expect("port"),
                    key: None,
                    shared_at: 0,
                    last_seen: 0,
                    have: None,
                    path: None,
                    reach: None,
                }
            })
            .collect(),
    }
}

/// Every download succeeded, landed in `out` under its name and holds exactly its bytes.
fn assert_downloaded(
    results: &[Result<peershare::download::DownloadReport, peershare::node::GetError>],
    files: &[(String, Vec<u8>)],
    out: &std::path::Path,
) {
    assert_eq!(results.len(), files.len());
    for (r, (name, bytes)) in results.iter().zip(files) {
        let r = r.as_ref().expect("downloaded");
        assert_eq!(r.path, out.join(name));
        assert_eq!(&std::fs::read(&r.path).unwrap(), bytes, "{name}");
    }
}

/// Issue 12: a silent extra source delayed publishing a verified file by the 15 s read limit,
/// and a silent first source delayed the whole download by as much. Either way round, an
/// honest source now finishes the download at once.
#[tokio::test]
async fn a_silent_source_delays_neither_the_start_nor_the_end() {
    let bytes = data(10 * PIECE_SIZE as usize + 3, 70);
    let id = ContentId::from(blake3::hash(&bytes));
    let (silent, _) = fake_peer(
        bytes.clone(),
        named(Behaviour {
            silent: true,
            ..Default::default()
        }),
    )
    .await;
    let (honest, _) = fake_peer(bytes.clone(), named(Behaviour::default())).await;
    for (first, second) in [(&silent, &honest), (&honest, &silent)] {
        let out = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let rep = Downloader::default()
            .download(id, &[src(first, 1), src(second, 2)], out.path(), None)
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(std::fs::read(&rep.path).unwrap(), bytes);
        eprintln!(
            "silent source {}: {took:?}",
            if first == &silent { "first" } else { "second" }
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    // Alone, it ends the download after the stall limit, not the read limit, and is named.
    let out = tempfile::tempdir().unwrap();
    let d = Downloader {
        stall_timeout: Duration::from_secs(1),
        ..Downloader::default()
    };
    let started = Instant::now();
    let err = d
        .download(id, &[src(&silent, 1)], out.path(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        err.starts_with(&format!("no progress on {id} for 1 s"))
            && err.contains("peer 1 (127.0.0.1:")
            && err.contains("sent no block of piece hashes for 1 s"),
        "{err}"
    );
    assert!(files_in(out.path()).is_empty());
}

/// Issue 12: a one-piece file whose only source answers every request with BUSY kept `get`
/// running for good. The one-request path gives the source up after a few rounds, and the
/// full downloader after `--max-queue-wait`; the error names the source's queue place.
#[tokio::test]
async fn a_small_file_whose_only_source_is_always_busy_fails_after_a_bounded_wait() {
    use peershare::node::{GetOptions, download_all};
    let bytes = data(1000, 71);
    let busy = named(Behaviour {
        busy: true,
        ..Default::default()
    });
    let requests = busy.piece_requests.clone();
    let (addr, _) = fake_peer(bytes.clone(), busy).await;
    let hits = [hit_at("s.bin", &bytes, &[(1, &addr)])];
    let out = tempfile::tempdir().unwrap();
    let opts = GetOptions {
        max_queue_wait: Some(Duration::from_secs(1)),
        ..GetOptions::default()
    };
    let started = Instant::now();
    let results = tokio::time::timeout(
        Duration::from_secs(30),
        download_all(&hits, out.path(), &opts, 1),
    )
    .await
    .expect("get ends");
    let err = format!("{:#}", results[0].as_ref().unwrap_err());
    assert!(err.contains("busy (queue position 3) for 1 s"), "{err}");
    let n = requests.load(Ordering::SeqCst);
    eprintln!("gave up after {:?} and {n} requests", started.elapsed());
    // Five rounds of one request on the one-request path, then bootstrap's request, one, and
    // the probes of one second.
    assert!(n <= 5 + 1 + 1 + 3, "{n} requests");
    assert!(files_in(out.path()).is_empty());
}
