//! Helpers shared by the integration tests: servers on ephemeral loopback ports, test data, b3sum.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use peershare::identity::Identity;
use peershare::index::{IndexConfig, IndexServer, IndexStore};
use peershare::node::{ShareConfig, ShareHandle, start_share};
use peershare::tls::Tls;
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

/// The TLS setup of the index whose database is `db` (its key is kept there).
pub fn index_tls(db: &Path) -> Tls {
    let store = peershare::index::GroupStore::open(db).expect("open store");
    let mut store = store;
    Tls::new(&Identity::from_secret(
        store.index_secret().expect("index key"),
    ))
    .expect("tls")
}

/// A client's TLS setup with a fresh key.
pub fn client_tls() -> Tls {
    Tls::ephemeral().expect("tls")
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
    let task = tokio::spawn(
        IndexServer::new(store, config, index_tls(db)).run(listener, shutdown.clone()),
    );
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

/// How a [`fake_peer`] misbehaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Flip a byte of these pieces.
    pub corrupt: Option<fn(u32) -> bool>,
    /// Close the connection after sending this many pieces (over all connections).
    pub die_after: Option<u64>,
    /// Stop answering (but keep the connection) after this many pieces.
    pub stall_after: Option<u64>,
    /// Wait this long before each piece.
    pub delay: std::time::Duration,
    /// The name it reports.
    pub name: String,
    /// Claim this size instead of the real one (and cut pieces by it).
    pub lie_size: Option<u64>,
    /// Answer every `GetPiece` with BUSY, "… you are number 3 in the queue".
    pub busy: bool,
    /// Say in `Have` that it has only these pieces (a partial source).
    pub have: Option<fn(u32) -> bool>,
    /// Answer `GetPiece` for these pieces with NOT_FOUND.
    pub not_found: Option<fn(u32) -> bool>,
    /// Accept connections and never send a byte.
    pub silent: bool,
    /// Answer `GetHashes` with as many made-up hashes as asked for (up to 16384).
    pub junk_hashes: bool,
    /// Counts the `GetPiece` requests received, over all connections.
    pub piece_requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Counts the piece hashes sent, and the largest `count` asked for in one `GetHashes`.
    pub hashes_sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub largest_hash_request: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The secret of the key it proves in TLS (`None`: a fresh one), e.g. to register it.
    pub secret: Option<[u8; 32]>,
    /// Offer only these features in `Welcome` (`Some(&[])`: a build from before features).
    pub features: Option<&'static [&'static str]>,
    /// Counts the `GetHave` requests received, over all connections.
    pub have_requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A peer speaking the real protocol from memory, misbehaving as told; returns its address
/// and the count of pieces it has sent.
pub async fn fake_peer(
    bytes: Vec<u8>,
    how: Behaviour,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use peershare::content::{Digest, PIECE_SIZE, PieceLayout};
    use peershare::protocol::{
        Connection, ErrorCode, ErrorReply, Hashes, Info, Limits, Message, Piece,
    };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    std::fs::write(&path, &bytes).expect("write");
    let (id, cvs) =
        peershare::content::hash_file(&path, bytes.len() as u64, &|_| {}).expect("hash");
    let hashes: Arc<Vec<u8>> = Arc::new(cvs.iter().flatten().copied().collect());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let (bytes, counter, how) = (Arc::new(bytes), sent.clone(), Arc::new(how));
    let tls = match how.secret {
        Some(secret) => Tls::new(&Identity::from_secret(secret)).expect("tls"),
        None => client_tls(),
    };
    tokio::spawn(async move {
        let _dir = dir;
        while let Ok((s, _)) = listener.accept().await {
            let (bytes, hashes, counter, how, tls) = (
                bytes.clone(),
                hashes.clone(),
                counter.clone(),
                how.clone(),
                tls.clone(),
            );
            tokio::spawn(async move {
                if how.silent {
                    let _held = s;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                let Ok(s) = tls.accept(s, Duration::from_secs(10), b"").await else {
                    return;
                };
                let mut c = Connection::new(s.stream, Limits::default());
                let offered = how.features.unwrap_or(&peershare::protocol::feature::ALL);
                if c.server_handshake(Digest::default(), offered, None)
                    .await
                    .is_err()
                {
                    return;
                }
                let claimed = how.lie_size.unwrap_or(bytes.len() as u64);
                let layout = PieceLayout::new(claimed);
                while let Ok(Some(m)) = c.read_message().await {
                    let reply = match m {
                        Message::GetInfo(_) => Message::Info(Info {
                            content_id: id,
                            size: claimed,
                            piece_size: PIECE_SIZE as u32,
                            name: how.name.clone(),
                        }),
                        Message::GetHave(g) => {
                            how.have_requests.fetch_add(1, Ordering::SeqCst);
                            Message::Have(peershare::protocol::Have {
                                content_id: g.content_id,
                                pieces: layout.piece_count() as u32,
                                bitmap: peershare::protocol::bitmap_from(
                                    (0..layout.piece_count())
                                        .map(|i| how.have.is_none_or(|f| f(i as u32))),
                                ),
                            })
                        }
                        Message::GetHashes(g) if how.junk_hashes => {
                            let total = layout.hash_count();
                            let n = u64::from(g.count.min(16384))
                                .min(total.saturating_sub(u64::from(g.start)));
                            how.largest_hash_request
                                .fetch_max(u64::from(g.count), Ordering::SeqCst);
                            how.hashes_sent.fetch_add(n, Ordering::SeqCst);
                            let hashes = (u64::from(g.start)..u64::from(g.start) + n)
                                .flat_map(|i| {
                                    let mut h = [0x5a; 32];
                                    h[..8].copy_from_slice(&i.to_le_bytes());
                                    h
                                })
                                .collect();
                            Message::Hashes(Hashes {
                                start: g.start,
                                hashes,
                            })
                        }
                        Message::GetHashes(g) => Message::Hashes(Hashes {
                            start: g.start,
                            hashes: hashes.get(g.start as usize * 32..).unwrap_or(&[]).to_vec(),
                        }),
                        Message::GetPiece(_) if how.busy => {
                            how.piece_requests.fetch_add(1, Ordering::SeqCst);
                            Message::Error(ErrorReply::new(
                                ErrorCode::Busy,
                                "all upload slots taken; you are number 3 in the queue",
                            ))
                        }
                        Message::GetPiece(g) if how.not_found.is_some_and(|f| f(g.index)) => {
                            how.piece_requests.fetch_add(1, Ordering::SeqCst);
                            Message::Error(ErrorReply::new(
                                ErrorCode::NotFound,
                                "not verified here yet",
                            ))
                        }
                        Message::GetPiece(g) => {
                            how.piece_requests.fetch_add(1, Ordering::SeqCst);
                            let n = counter.load(Ordering::SeqCst);
                            if how.die_after.is_some_and(|d| n >= d) {
                                return;
                            }
                            if how.stall_after.is_some_and(|d| n >= d) {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            }
                            tokio::time::sleep(how.delay).await;
                            let i = u64::from(g.index);
                            let start = (layout.piece_offset(i) as usize).min(bytes.len());
                            let end = (start + layout.piece_len(i) as usize).min(bytes.len());
                            let mut data = bytes[start..end].to_vec();
                            if how.corrupt.is_some_and(|f| f(g.index)) && !data.is_empty() {
                                data[0] ^= 0x80;
                            }
                            counter.fetch_add(1, Ordering::SeqCst);
                            Message::Piece(Piece {
                                index: g.index,
                                data: data.into(),
                            })
                        }
                        _ => Message::Error(ErrorReply::new(ErrorCode::BadRequest, "no")),
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

/// An index server like [`start_index`], listening on `addr` (e.g. the address of one just
/// stopped, to restart it where its peers look for it) and configured by `config`.
pub async fn start_index_with(db: &Path, addr: SocketAddr, config: IndexConfig) -> TestIndex {
    let store = IndexStore::open(db).expect("open store");
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        IndexServer::new(store, config, index_tls(db)).run(listener, shutdown.clone()),
    );
    TestIndex {
        addr,
        shutdown,
        task,
    }
}

/// Runs the `peershare` binary to the end with `args`, `home` as its state directory and no
/// index from the environment, stdin empty.
pub fn run_peershare(args: &[&str], home: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_peershare"))
        .args(args)
        .env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run peershare")
}

/// Runs the `peershare` menu (no arguments) to the end with `script` as its input.
pub fn run_menu(home: &Path, script: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_peershare"))
        .env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn peershare");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write the script");
    child.wait_with_output().expect("menu output")
}

/// A peer as the index sees it when it registers, without serving files: its TLS setup, and
/// a listener on 127.0.0.1 that proves its key to whoever connects (the index checks the
/// registered address so before listing it). Register with host "127.0.0.1" and [`port`](Self::port).
pub struct FakePeer {
    /// The TLS setup of the peer's key: connect to the index with it to register as the peer.
    pub tls: Tls,
    /// The port of the listener proving the key.
    pub port: u16,
    task: JoinHandle<()>,
}

impl FakePeer {
    /// A listener proving `me`'s key.
    pub async fn new(me: &Identity) -> FakePeer {
        let tls = Tls::new(me).expect("tls");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let prover = tls.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let prover = prover.clone();
                tokio::spawn(async move {
                    let _ = prover.accept(s, Duration::from_secs(5), b"").await;
                });
            }
        });
        FakePeer { tls, port, task }
    }

    /// A connection to the index at `addr` with this peer's key.
    pub async fn connect(&self, addr: &str) -> peershare::index::IndexClient {
        peershare::index::IndexClient::connect(
            addr,
            Some(&self.tls),
            None,
            peershare::protocol::Limits::default(),
        )
        .await
        .expect("connect to the index")
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS connection to `addr` with a fresh key, for writing raw frames as an attacker would.
pub async fn raw_secure(addr: &str) -> peershare::tls::SecureStream {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    client_tls()
        .connect(tcp, None, Duration::from_secs(10))
        .await
        .expect("TLS handshake")
        .stream
}

/// A private index on 127.0.0.1:0 with its database at `db`, as `index --private` runs it,
/// with a 3 s lease (so sharing members heartbeat, and learn removals, every second).
pub struct PrivateIndex {
    /// `HOST:PORT`.
    pub addr: String,
    /// Its database (which holds its key).
    pub db: PathBuf,
    /// Its key: the group's.
    pub key: peershare::content::Digest,
    shutdown: CancellationToken,
}

impl Drop for PrivateIndex {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a [`PrivateIndex`].
pub async fn start_private_index(db: &Path) -> PrivateIndex {
    let store = IndexStore::open(db).expect("open store");
    let secret = store.index_secret().expect("index key");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let shutdown = CancellationToken::new();
    let config = IndexConfig {
        lease: Duration::from_secs(3),
        ..IndexConfig::default()
    };
    let server =
        IndexServer::new(store, config, index_tls(db)).private(Identity::from_secret(secret));
    tokio::spawn(server.run(listener, shutdown.clone()));
    PrivateIndex {
        addr,
        db: db.to_path_buf(),
        key: Identity::from_secret(secret).public_key(),
        shutdown,
    }
}

/// Joins the private index at `addr` (key `key`, database `db`) with a fresh invite as `who`:
/// its TLS setup as a member.
pub async fn join_private(
    addr: &str,
    key: peershare::content::Digest,
    db: &Path,
    who: &Identity,
) -> Tls {
    use peershare::group::{GroupState, Invite};
    use peershare::identity::Fingerprint;
    let store = peershare::index::GroupStore::open(db).expect("group store");
    let invite = Invite::new(addr.to_string(), Fingerprint(key)).expect("invite");
    let now = peershare::query::now_ms();
    store
        .create_invite(&invite.secret_hash(), 1, now + 3_600_000, now)
        .expect("create invite");
    let tls = Tls::new(who).expect("tls");
    let mut c = peershare::index::IndexClient::connect(
        addr,
        Some(&tls),
        Some(key),
        peershare::protocol::Limits::default(),
    )
    .await
    .expect("connect");
    let m = c.join(&invite.secret).await.expect("joined").membership;
    assert_eq!((m.group, m.member), (key, who.public_key()));
    tls.with_group(std::sync::Arc::new(GroupState::new(key, Some(m))))
}

impl PrivateIndex {
    /// Joins this index as `who` with a fresh invite ([`join_private`]): its TLS as a member.
    pub async fn member(&self, who: &Identity) -> Tls {
        join_private(&self.addr, self.key, &self.db, who).await
    }

    /// Removes `key` from the group, as `peershare members remove` does.
    pub fn remove(&self, key: &peershare::content::Digest) {
        let mut store = peershare::index::GroupStore::open(&self.db).expect("group store");
        let row = store.member(key).expect("read").expect("a member");
        store
            .revoke_member(row.id, peershare::query::now_ms())
            .expect("revoke");
    }

    /// A member sharing `dir` with its key in `state` and `tls` (joined already), registered
    /// and in sync.
    pub async fn share_as(&self, dir: &Path, state: &Path, tls: &Tls) -> ShareHandle {
        let mut config = ShareConfig::new(
            vec![dir.to_path_buf()],
            Some(self.addr.clone()),
            state.to_path_buf(),
        );
        config.index_key = Some(self.key);
        config.group = tls.group().cloned();
        config.debounce = Duration::from_millis(100);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut h = start_share(config, listener).await.expect("share");
        let s = h
            .wait_for(Duration::from_secs(20), |s| s.in_sync)
            .await
            .expect("status");
        assert!(s.in_sync, "the member registered: {s:?}");
        h
    }
}

/// Which output of a [`Running`] process is read line by line (the other is discarded).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    Stdout,
    Stderr,
    Both,
}

/// A running process whose output lines are collected in the background; killed and reaped
/// when dropped.
pub struct Running {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    /// Spawns `cmd` with `input` (if any) written to its stdin, reading `which` output.
    pub fn spawn_lines(
        mut cmd: std::process::Command,
        input: Option<&str>,
        which: Lines,
    ) -> Running {
        use std::io::{BufRead, Write};
        use std::process::Stdio;
        let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let mut child = cmd
            .stdin(piped(input.is_some()))
            .stdout(piped(which != Lines::Stderr))
            .stderr(piped(which != Lines::Stdout))
            .spawn()
            .expect("spawn");
        if let Some(text) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(text.as_bytes()).expect("write stdin");
        }
        let (tx, lines) = std::sync::mpsc::channel();
        let mut outs: Vec<Box<dyn std::io::Read + Send>> = Vec::new();
        if let Some(o) = child.stdout.take() {
            outs.push(Box::new(o));
        }
        if let Some(e) = child.stderr.take() {
            outs.push(Box::new(e));
        }
        for out in outs {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 30 s) for a line containing `needle`; returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?}; saw {:?}", self.seen);
    }

    /// A line containing `needle` among those seen already, else the next one (with both
    /// outputs read, their lines arrive in either order).
    pub fn seen_or_wait(&mut self, needle: &str) -> String {
        match self.seen.iter().find(|l| l.contains(needle)) {
            Some(l) => l.clone(),
            None => self.wait_line(needle),
        }
    }

    /// The word of the line with `needle` that starts with `prefix`.
    pub fn word(&mut self, needle: &str, prefix: &str) -> String {
        let l = self.wait_line(needle);
        l.split_whitespace()
            .find(|w| w.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}... in {l:?}"))
            .to_string()
    }

    /// The `127.0.0.1:PORT` of the "listening on" line.
    pub fn listening(&mut self) -> String {
        self.word("listening on", "127.0.0.1:")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An index like [`start_index`] that does not relay (`index --no-relay`): a peer it cannot
/// reach is refused `UNREACHABLE`, as the address-check tests expect.
pub async fn start_index_no_relay(db: &Path, lease: Duration) -> TestIndex {
    let config = IndexConfig {
        lease,
        relay: peershare::index::RelayConfig {
            enabled: false,
            ..Default::default()
        },
        ..IndexConfig::default()
    };
    start_index_with(db, "127.0.0.1:0".parse().expect("addr"), config).await
}

/// The one source that sent something for the first file of a successful `get --json` run
/// (its output `out`).
pub fn the_used_source(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("get --json");
    let sources = doc["downloads"][0]["sources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let used: Vec<_> = sources
        .iter()
        .filter(|s| s["bytes"].as_u64() > Some(0))
        .cloned()
        .collect();
    assert_eq!(used.len(), 1, "one source sent the file: {sources:?}");
    used[0].clone()
}

/// Downloads the first of `files` (search hits of the index at `index`, key `index_key`) into
/// `out` through the relays that index arranges, as `tls` (or a fresh key): its report, and
/// how long it took.
pub async fn get_relayed(
    index: &str,
    index_key: peershare::content::Digest,
    files: &[peershare::protocol::FileHit],
    out: &Path,
    tls: Option<Tls>,
) -> (peershare::download::DownloadReport, Duration) {
    let opts = peershare::node::GetOptions {
        tls,
        relay: Some(peershare::download::RelayRoute {
            index: index.to_string(),
            index_key: Some(index_key),
        }),
        ..peershare::node::GetOptions::default()
    };
    let started = std::time::Instant::now();
    let report = peershare::node::download_all(files, out, &opts, 1)
        .await
        .remove(0)
        .expect("downloaded through a relay");
    (report, started.elapsed())
}
