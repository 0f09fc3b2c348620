//! Untrusted input: corrupt pieces, hostile names, symlinks out of the share, garbage and oversized frames, idle connections.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use peershare::content::{ContentId, Digest, PIECE_SIZE, PieceLayout, hash_file};
use peershare::download::{DownloadError, Downloader, Source};
use peershare::index::IndexClient;
use peershare::peer::PeerClient;
use peershare::protocol::{
    Connection, ErrorReply, Hashes, Info, Limits, Message, Piece, ProtocolError, code,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A peer that serves `bytes` correctly except that it flips one byte of the pieces in `corrupt`.
/// Counts the pieces it sent.
async fn fake_peer(bytes: Vec<u8>, corrupt: Vec<u32>, name: &str) -> (String, Arc<AtomicU64>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, &bytes).unwrap();
    let (id, cvs) = hash_file(&path, bytes.len() as u64, &|_| {}).unwrap();
    let hashes: Vec<u8> = cvs.iter().flatten().copied().collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let (bytes, name, counter) = (Arc::new(bytes), name.to_string(), sent.clone());
    tokio::spawn(async move {
        let _dir = dir;
        while let Ok((s, _)) = listener.accept().await {
            let (bytes, hashes, corrupt, name, counter) = (
                bytes.clone(),
                hashes.clone(),
                corrupt.clone(),
                name.clone(),
                counter.clone(),
            );
            tokio::spawn(async move {
                let mut c = Connection::new(s, Limits::default());
                if c.server_handshake(Digest::default()).await.is_err() {
                    return;
                }
                let layout = PieceLayout::new(bytes.len() as u64);
                while let Ok(Some(m)) = c.read_message().await {
                    let reply = match m {
                        Message::GetInfo(_) => Message::Info(Info {
                            content_id: id,
                            size: bytes.len() as u64,
                            piece_size: PIECE_SIZE as u32,
                            name: name.clone(),
                        }),
                        Message::GetHashes(g) => Message::Hashes(Hashes {
                            start: g.start,
                            hashes: hashes[g.start as usize * 32..].to_vec(),
                        }),
                        Message::GetPiece(g) => {
                            let i = u64::from(g.index);
                            let start = layout.piece_offset(i) as usize;
                            let mut data =
                                bytes[start..start + layout.piece_len(i) as usize].to_vec();
                            if corrupt.contains(&g.index) && !data.is_empty() {
                                data[0] ^= 0x80;
                            }
                            counter.fetch_add(1, Ordering::SeqCst);
                            Message::Piece(Piece {
                                index: g.index,
                                data: data.into(),
                            })
                        }
                        _ => Message::Error(ErrorReply::new(code::BAD_REQUEST, "no")),
                    };
                    if c.send(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, sent)
}

fn src(addr: &str, id: u64) -> Source {
    Source {
        peer_id: Some(id),
        addr: addr.to_string(),
    }
}

#[tokio::test]
async fn a_corrupt_piece_is_caught_and_refetched_from_another_source() {
    let bytes = data(9 * PIECE_SIZE as usize + 17, 1);
    let id = ContentId::from(blake3::hash(&bytes));
    let (bad, bad_sent) = fake_peer(bytes.clone(), vec![3], "f.bin").await;
    let (good, good_sent) = fake_peer(bytes.clone(), vec![], "f.bin").await;
    let out = tempfile::tempdir().unwrap();
    let d = Downloader {
        window: 1,
        ..Downloader::default()
    };
    let rep = d
        .download(id, &[src(&bad, 1), src(&good, 2)], out.path(), None)
        .await
        .unwrap();
    assert_eq!(rep.pieces_rejected, 1);
    assert_eq!(std::fs::read(&rep.path).unwrap(), bytes);
    assert_eq!(b3sum(&rep.path), id.to_hex());
    // The bad source is caught at piece 3, not at the end: at most the request window (1)
    // and the pieces being verified (4) follow it; the correct ones among them are kept.
    let from_bad = bad_sent.load(Ordering::SeqCst);
    assert!(
        (4..=4 + 1 + 4).contains(&from_bad),
        "bad source sent {from_bad}"
    );
    let from_good = good_sent.load(Ordering::SeqCst);
    assert!(
        from_good <= 10 - 3,
        "pieces 0..3, verified from the bad source, are not refetched ({from_good})"
    );
    assert!(
        from_good + (from_bad - 1) >= 10,
        "every piece came from somewhere"
    );
}

#[tokio::test]
async fn when_every_source_corrupts_no_file_appears() {
    for size in [100usize, 3 * PIECE_SIZE as usize] {
        let bytes = data(size, 2);
        let id = ContentId::from(blake3::hash(&bytes));
        let (a, _) = fake_peer(bytes.clone(), vec![0, 1, 2], "x.bin").await;
        let (b, _) = fake_peer(bytes.clone(), vec![0], "x.bin").await;
        let out = tempfile::tempdir().unwrap();
        let err = Downloader::default()
            .download(id, &[src(&a, 1), src(&b, 2)], out.path(), Some("x.bin"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DownloadError::AllSourcesFailed { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("does not match"), "{err}");
        assert!(
            files_in(out.path()).is_empty(),
            "neither final nor partial file left"
        );
    }
}

#[tokio::test]
async fn hostile_names_land_inside_the_target_directory() {
    let bytes = data(1000, 3);
    let id = ContentId::from(blake3::hash(&bytes));
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("dl");
    for (name, want) in [
        ("../../escape.txt", "escape.txt"),
        ("/etc/passwd", "passwd"),
        ("..", "download"),
        ("a/../../b\0\n.txt", "b.txt"),
        ("escape.txt", "escape (1).txt"),
    ] {
        let (peer, _) = fake_peer(bytes.clone(), vec![], name).await;
        let rep = Downloader::default()
            .download(id, &[src(&peer, 1)], &target, None)
            .await
            .unwrap();
        assert_eq!(rep.path, target.join(want), "name {name:?}");
    }
    assert_eq!(
        files_in(out.path()),
        vec![target.clone()],
        "nothing written beside the target"
    );
    assert_eq!(files_in(&target).len(), 5);
}

#[tokio::test]
async fn symlinks_out_of_the_share_are_never_served() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(t.path().join("secret"), b"top secret").unwrap();
    std::os::unix::fs::symlink(t.path().join("secret"), share.join("innocent.txt")).unwrap();
    std::fs::write(share.join("ok.txt"), b"0123456789").unwrap();
    let peer = start_peer(&share, None, &t.path().join("state")).await;
    let addr = peer.local_addr.to_string();
    let mut c = PeerClient::connect(&addr, Limits::default()).await.unwrap();
    let secret = ContentId::from(blake3::hash(b"top secret"));
    let err = c.info(secret).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("code {}", code::NOT_FOUND)),
        "{err}"
    );
    // A shared file swapped for a symlink after the scan is not served either.
    let ok = ContentId::from(blake3::hash(b"0123456789"));
    assert_eq!(c.info(ok).await.unwrap().size, 10);
    std::fs::write(t.path().join("secret2"), b"SECRET0123").unwrap();
    std::fs::remove_file(share.join("ok.txt")).unwrap();
    std::os::unix::fs::symlink(t.path().join("secret2"), share.join("ok.txt")).unwrap();
    let mut c2 = PeerClient::connect(&addr, Limits::default()).await.unwrap();
    c2.request_piece(ok, 0).await.unwrap();
    c2.flush().await.unwrap();
    let r = c2.next_piece().await;
    assert!(r.is_err(), "a swapped-in symlink must not be served: {r:?}");
    peer.shutdown().await;
}

async fn raw_exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "server closes the connection instead of waiting");
    got
}

fn hello_frame() -> Vec<u8> {
    let m = Message::Hello(peershare::protocol::Hello {
        version_min: 1,
        version_max: 1,
        agent: "test".into(),
    });
    let p = m.encode_payload().unwrap();
    let mut v = ((p.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(m.tag());
    v.extend_from_slice(&p);
    v
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_only_their_connection() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("still-here.txt"), b"yes").unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let peer = start_peer(&share, Some(ix.addr()), &t.path().join("p")).await;
    let peer_addr = peer.local_addr.to_string();
    let mut after_hello = hello_frame();
    after_hello.extend_from_slice(&[0, 0, 0, 3, 0x7f, 1, 2]); // unknown tag
    let mut bad_payload = hello_frame();
    bad_payload.extend_from_slice(&[0, 0, 0, 3, 0x20, 0xc1, 0xc1]); // Search with invalid MessagePack
    let attacks: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        vec![0, 0, 0, 0],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        after_hello,
        bad_payload,
    ];
    for addr in [ix.addr(), peer_addr.clone()] {
        for a in &attacks {
            raw_exchange(&addr, a).await;
        }
    }
    let mut c = IndexClient::connect(&ix.addr(), Limits::default())
        .await
        .unwrap();
    assert_eq!(
        c.search("still", 10).await.unwrap().files.len(),
        1,
        "index still answers"
    );
    let mut p = PeerClient::connect(&peer_addr, Limits::default())
        .await
        .unwrap();
    assert_eq!(
        p.info(ContentId::from(blake3::hash(b"yes")))
            .await
            .unwrap()
            .size,
        3,
        "peer still answers"
    );
    peer.shutdown().await;
    ix.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_is_rejected_by_the_reader_before_allocation() {
    let (a, b) = tokio::io::duplex(1024);
    let mut reader = Connection::new(a, Limits::default());
    let mut w = b;
    w.write_all(&(64u32 * 1024 * 1024).to_be_bytes())
        .await
        .unwrap();
    match reader.read_frame().await {
        Err(ProtocolError::FrameTooLarge { received, .. }) => {
            assert_eq!(received, 64 * 1024 * 1024)
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn idle_and_slow_connections_time_out() {
    let t = tempfile::tempdir().unwrap();
    let store = peershare::index::IndexStore::open(&t.path().join("ix.sqlite")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = peershare::index::IndexConfig {
        limits: Limits {
            read_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_secs(5),
        },
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(peershare::index::IndexServer::new(store, config).run(listener, stop.clone()));
    // Says nothing: closed.
    raw_exchange(&addr, &[]).await;
    // Starts a frame and never finishes it: closed.
    raw_exchange(&addr, &[0, 0, 0, 50, 1]).await;
    stop.cancel();
}
