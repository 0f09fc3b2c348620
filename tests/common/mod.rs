//! Helpers shared by the integration tests: servers on ephemeral loopback ports, test data, b3sum.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use peershare::index::{IndexConfig, IndexServer, IndexStore};
use peershare::peer::{ShareConfig, ShareHandle, start_share};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestIndex {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl TestIndex {
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// An index server on 127.0.0.1:0 with its database at `db`.
pub async fn start_index(db: &Path, lease: Duration) -> TestIndex {
    let store = IndexStore::open(db).expect("open store");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let config = IndexConfig {
        lease,
        ..IndexConfig::default()
    };
    let task = tokio::spawn(IndexServer::new(store, config).run(listener, shutdown.clone()));
    TestIndex {
        addr,
        shutdown,
        task,
    }
}

/// A sharing peer on 127.0.0.1:0; waits until the index (if any) holds its files.
pub async fn start_peer(dir: &Path, index: Option<String>, state: &Path) -> ShareHandle {
    let mut config = ShareConfig::new(vec![dir.to_path_buf()], index.clone(), state.to_path_buf());
    config.debounce = Duration::from_millis(100);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut h = start_share(config, listener).await.expect("share");
    if index.is_some() {
        h.wait_for(Duration::from_secs(20), |s| s.in_sync)
            .await
            .expect("peer registered and in sync");
    }
    h
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What `b3sum` prints for a file (the test fails if b3sum is missing: CI installs it).
pub fn b3sum(path: &Path) -> String {
    let out = std::process::Command::new("b3sum")
        .arg("--no-names")
        .arg(path)
        .output()
        .expect("b3sum must be installed (Debian package b3sum)");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// Waits until `f` returns `Some`, polling every 50 ms, at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}
