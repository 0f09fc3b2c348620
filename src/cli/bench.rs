//! `peershare bench`: a load generator for the index (fill it with synthetic peers, then search or look up under load).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::connect;
use peershare::content::{ContentId, Digest};
use peershare::identity::Identity;
use peershare::index::IndexClient;
use peershare::protocol::{FileEntry, Frame, Limits, Message, tag};
use peershare::tls::Tls;

/// Words synthetic file names are made of (so one-word queries hit a spread of files).
const WORDS: &[&str] = &[
    "isaac",
    "newton",
    "report",
    "holiday",
    "music",
    "album",
    "live",
    "remix",
    "draft",
    "final",
    "lecture",
    "notes",
    "photo",
    "beach",
    "winter",
    "summer",
    "budget",
    "plan",
    "thesis",
    "code",
    "backup",
    "video",
    "trailer",
    "episode",
    "season",
    "chapter",
    "book",
    "manual",
    "invoice",
    "scan",
    "garden",
    "recipe",
    "travel",
    "family",
    "concert",
    "podcast",
    "interview",
    "paper",
    "slides",
    "map",
];

/// The synthetic file `n` (deterministic: the same `n` always gives the same entry).
pub fn synthetic_file(n: u64) -> FileEntry {
    let w = |k: u64| WORDS[(k % WORDS.len() as u64) as usize];
    let name = format!("{} {} {} {n}.dat", w(n), w(n / 7 + 3), w(n / 53 + 11));
    FileEntry {
        path: format!("set-{}/{name}", n / 1000),
        name,
        size: 1000 + n % 100_000,
        content_id: ContentId::from(blake3::hash(&n.to_le_bytes())),
        mtime: 0,
        have: None,
    }
}

/// Registers `peers` synthetic peers sharing `files` synthetic files between them.
pub async fn populate(index: &str, files: u64, peers: u64) -> anyhow::Result<()> {
    let peers = peers.max(1);
    let per_peer = files.div_ceil(peers);
    let started = Instant::now();
    let (addr, _) = peershare::identity::split_address(index)?;
    let index_key = connect(index).await?.server_key();
    for p in 0..peers {
        let me = Identity::ephemeral()?;
        let tls = Tls::new(&me)?;
        // The index checks that the peer answers at the address it registers, with its key:
        // a listener that completes the TLS handshakes, while it registers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let prover = tokio::spawn({
            let tls = tls.clone();
            async move {
                while let Ok((s, _)) = listener.accept().await {
                    let _ = tls.accept(s, Duration::from_secs(5), b"").await;
                }
            }
        });
        let mut c =
            IndexClient::connect(addr, Some(&tls), Some(index_key), Limits::default()).await?;
        let registered = c
            .register(&me, "127.0.0.1", port, Digest::default(), per_peer)
            .await;
        prover.abort();
        registered?;
        let first = p * per_peer;
        let entries: Vec<FileEntry> = (first..(first + per_peer).min(files))
            .map(synthetic_file)
            .collect();
        c.sync_files(true, entries, Vec::new(), Digest([p as u8; 32]))
            .await?;
        // Keep the registration alive long enough to benchmark: the connection stays open
        // until the process ends, but the lease is renewed only while we run; use a long lease.
        std::mem::forget(c);
    }
    let secs = started.elapsed().as_secs_f64();
    super::outln!(
        "registered {files} files from {peers} peers in {secs:.2} s ({:.0} files/s)",
        files as f64 / secs
    )?;
    Ok(())
}

/// Whether a search reply lists at least one file: decoded in full, or (cheaply) by its tag and
/// the first bytes of its payload, a map whose first entry `files` is not an empty array.
fn found_something(frame: Frame, full: bool) -> bool {
    if full {
        return match Message::decode(frame) {
            Ok(Message::SearchResults(r)) => !r.files.is_empty(),
            _ => false,
        };
    }
    // A map of 3 entries, or 4 with `estimated`, whose first key is "files".
    const FILES: &[u8] = b"\xa5files";
    const EMPTY_ARRAY: u8 = 0x90;
    frame.tag == tag::SEARCH_RESULTS
        && matches!(frame.payload.first(), Some(0x83 | 0x84))
        && frame.payload.get(1..).is_some_and(|p| p.starts_with(FILES))
        && frame
            .payload
            .get(1 + FILES.len())
            .is_some_and(|&b| b != EMPTY_ARRAY)
}

/// What one load run measured.
pub struct LoadReport {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs `clients` connections, each sending requests back to back for `duration`.
pub async fn load(
    index: &str,
    clients: usize,
    duration: Duration,
    lookup: bool,
    files: u64,
) -> anyhow::Result<LoadReport> {
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let deadline = Instant::now() + duration;
    for k in 0..clients {
        let mut c = connect(index).await.context("connecting a load client")?;
        let errors = errors.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut n = k as u64 * 7919;
            while Instant::now() < deadline {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let q = if lookup {
                    synthetic_file((n >> 33) % files.max(1)).content_id.to_hex()
                } else {
                    WORDS[((n >> 33) % WORDS.len() as u64) as usize].to_string()
                };
                let t = Instant::now();
                let reply = c.search_frame(&q, if lookup { 1 } else { 100 }).await;
                let elapsed = t.elapsed();
                // Every 64th reply is decoded in full; the rest are checked from their first bytes.
                let full = lat.len() % 64 == 0;
                if reply.is_ok_and(|frame| found_something(frame, full)) {
                    lat.push(elapsed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        });
    }
    let started = Instant::now();
    let mut all: Vec<Duration> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r?);
    }
    let seconds = started.elapsed().as_secs_f64().max(duration.as_secs_f64());
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    Ok(LoadReport {
        requests: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cheap_check_agrees_with_decoding() {
        use peershare::protocol::{FileHit, SearchResults};
        let frame = |files: Vec<FileHit>, estimated: bool| {
            let m = Message::SearchResults(SearchResults {
                files,
                truncated: false,
                total: 0,
                estimated,
            });
            Frame {
                tag: m.tag(),
                payload: m.encode_payload().unwrap(),
            }
        };
        let f = synthetic_file(1);
        let hit = FileHit {
            name: f.name,
            size: f.size,
            content_id: f.content_id,
            peers: Vec::new(),
        };
        for full in [false, true] {
            for estimated in [false, true] {
                assert!(found_something(frame(vec![hit.clone()], estimated), full));
                assert!(!found_something(frame(Vec::new(), estimated), full));
            }
            let err = Message::Error(peershare::protocol::ErrorReply::new(
                peershare::protocol::ErrorCode::BadRequest,
                "no",
            ));
            let err = Frame {
                tag: err.tag(),
                payload: err.encode_payload().unwrap(),
            };
            assert!(!found_something(err, full));
        }
    }

    #[test]
    fn synthetic_files_are_stable_and_distinct() {
        assert_eq!(synthetic_file(5), synthetic_file(5));
        assert_ne!(synthetic_file(5).content_id, synthetic_file(6).content_id);
        assert!(synthetic_file(123).name.ends_with(" 123.dat"));
    }
}
