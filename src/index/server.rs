//! `IndexServer`: accepts peers and clients, authenticates registrations, answers searches.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::cache::CacheConfig;
use super::{IndexStore, Session, StoreError};
use crate::content::{Digest, MAX_FILE_SIZE, PieceLayout};
use crate::identity::{random_bytes, verify_register};
use crate::protocol::{
    Ack, Admission, Connection, Connections, ErrorReply, HANDSHAKE_TIMEOUT, Limits, MAX_FRAME_LEN,
    MAX_PATH_LEN, MAX_QUERY_LEN, MAX_SEARCH_LIMIT, MemoryBudget, Message, ProtocolError, Register,
    Registered, Search, ServeLimits, ServerSide, UpdateFiles, accept_loop, code, tag,
};
use crate::query::{Query, now_ms};

/// Settings of an index server.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// How long a registration stays live without a heartbeat. Default: 90 s.
    pub lease: Duration,
    /// How long a peer that is not heard from is kept (with its files, its id reserved for its
    /// key) before it is forgotten; at least two leases. Ephemeral peers are forgotten after
    /// [`EPHEMERAL_PURGE_LEASES`] leases. Default: 7 days.
    pub forget_after: Duration,
    /// Most connections open at once; a new one beyond it closes the connection waiting
    /// longest for a request (see [`ServeLimits`]). Default: 1024.
    pub max_connections: usize,
    /// Most connections from one address once half of `max_connections` are open. Default: 64.
    pub max_connections_per_ip: usize,
    /// Longest wait for a new connection's `Hello`. Default: [`HANDSHAKE_TIMEOUT`] (5 s).
    pub handshake_timeout: Duration,
    /// Per-connection time limits. Default: 120 s to receive a message, 30 s to send one.
    pub limits: Limits,
    /// Longest time from a request's first byte to its last. Default: 30 s.
    pub frame_timeout: Duration,
    /// Bytes all connections may hold together in requests above 16 KiB as they arrive
    /// (see [`MemoryBudget`]). Default: 64 MiB.
    pub request_memory: usize,
    /// How long shutdown waits for open connections. Default: 5 s.
    pub shutdown_grace: Duration,
    /// Recent search replies kept for repeated queries. Default: [`CacheConfig::default`].
    pub search_cache: CacheConfig,
    /// Word searches computed at once (the rest wait their turn, repeated queries are served
    /// from the cache meanwhile). Default: the number of CPUs.
    pub search_threads: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            lease: Duration::from_secs(90),
            forget_after: Duration::from_secs(7 * 24 * 3600),
            max_connections: 1024,
            max_connections_per_ip: 64,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            limits: Limits {
                read_timeout: Duration::from_secs(120),
                write_timeout: Duration::from_secs(30),
            },
            frame_timeout: Duration::from_secs(30),
            request_memory: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(5),
            search_cache: CacheConfig::default(),
            search_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// The indexing server over an already-bound listener.
pub struct IndexServer {
    store: Arc<IndexStore>,
    config: IndexConfig,
    searches: Arc<Semaphore>,
    connections: Connections,
    budget: MemoryBudget,
}

#[derive(Debug, thiserror::Error)]
enum HandlerError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl IndexServer {
    pub fn new(mut store: IndexStore, config: IndexConfig) -> Self {
        store.configure(config.lease.as_millis() as i64, config.search_cache);
        IndexServer {
            store: Arc::new(store),
            searches: Arc::new(Semaphore::new(config.search_threads.max(1))),
            connections: Connections::new(ServeLimits {
                max_connections: config.max_connections,
                max_per_ip: config.max_connections_per_ip,
                handshake_timeout: config.handshake_timeout,
                grace: config.shutdown_grace,
            }),
            budget: MemoryBudget::new(config.request_memory),
            config,
        }
    }

    /// The open connections (for their counts).
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// The memory all connections share for large requests.
    pub fn memory_budget(&self) -> MemoryBudget {
        self.budget.clone()
    }

    /// Serves until `shutdown` is cancelled, then waits up to the grace period for connections.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        tokio::spawn(purge_loop(
            self.store.clone(),
            self.config.lease,
            self.config.forget_after,
            shutdown.clone(),
        ));
        let connections = self.connections.clone();
        accept_loop(
            listener,
            connections,
            shutdown.clone(),
            |stream, addr, admission| {
                let (store, config, shutdown) =
                    (self.store.clone(), self.config.clone(), shutdown.clone());
                let searches = self.searches.clone();
                let conn = Connection::server(
                    stream,
                    config.limits,
                    ServerSide {
                        admission: Some(admission),
                        budget: Some(self.budget.clone()),
                        max_frame: MAX_FRAME_LEN,
                        frame_timeout: config.frame_timeout,
                    },
                );
                async move {
                    match handle(conn, addr, store, &config, &searches, shutdown).await {
                        Ok(()) => debug!(%addr, "connection closed"),
                        Err(e) => info!(%addr, "connection closed: {e}"),
                    }
                }
            },
        )
        .await;
    }
}

/// Ephemeral peers not heard from for this many leases are forgotten. One whose connection
/// closes is forgotten at once; this catches one whose connection hangs.
pub const EPHEMERAL_PURGE_LEASES: u32 = 2;

/// Every lease period, forgets ephemeral peers whose lease ran out
/// [`EPHEMERAL_PURGE_LEASES`] leases ago and other peers not seen for `forget_after`.
async fn purge_loop(
    store: Arc<IndexStore>,
    lease: Duration,
    forget_after: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(lease.max(Duration::from_secs(1)));
    // Saturating: an absurdly long setting means "never", not a wrapped-around negative age.
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let forget_after = ms(forget_after.max(lease.saturating_mul(2)));
    let ephemeral_after = ms(lease.saturating_mul(EPHEMERAL_PURGE_LEASES));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let (ephemeral, others) = (
            now.saturating_sub(ephemeral_after),
            now.saturating_sub(forget_after),
        );
        match blocking(&store, move |s| s.purge(ephemeral, others)).await {
            Ok(0) => {}
            Ok(n) => info!("forgot {n} peers not heard from for long"),
            Err(e) => tracing::warn!("forgetting expired peers: {e}"),
        }
    }
}

/// The session a connection registered; when the connection ends without `Unregister`
/// (closed, timed out, dropped at shutdown), the store is told, so an ephemeral peer is
/// forgotten at once.
struct Authenticated {
    store: Arc<IndexStore>,
    session: Option<Session>,
}

impl Drop for Authenticated {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let store = self.store.clone();
        let closed = move || match store.connection_closed(&session) {
            Ok(true) => debug!(peer_id = session.peer_id, "ephemeral peer left"),
            Ok(false) => {}
            Err(e) => tracing::warn!(peer_id = session.peer_id, "closing its session: {e}"),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(closed)),
            Err(_) => closed(),
        }
    }
}

async fn blocking<T: Send + 'static>(
    store: &Arc<IndexStore>,
    f: impl FnOnce(&IndexStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HandlerError> {
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || f(&store)).await??)
}

fn check_update(u: &UpdateFiles) -> Result<(), String> {
    let bad = |s: &str| s.is_empty() || s.len() > MAX_PATH_LEN || s.contains('\0');
    for f in &u.upsert {
        if bad(&f.path) || bad(&f.name) {
            return Err(format!("invalid path or name {:?}", f.path));
        }
        if f.size > MAX_FILE_SIZE {
            return Err(format!(
                "{:?}: {} bytes is over the limit of {MAX_FILE_SIZE}",
                f.path, f.size
            ));
        }
        let want = PieceLayout::new(f.size).piece_count().div_ceil(8) as usize;
        if let Some(h) = &f.have
            && h.len() != want
        {
            return Err(format!(
                "{:?}: have bitmap of {} bytes, expected {want}",
                f.path,
                h.len()
            ));
        }
    }
    if u.remove.iter().any(|p| bad(p)) {
        return Err("invalid path in remove".into());
    }
    Ok(())
}

async fn handle(
    mut conn: Connection<TcpStream>,
    addr: SocketAddr,
    store: Arc<IndexStore>,
    config: &IndexConfig,
    searches: &Arc<Semaphore>,
    shutdown: CancellationToken,
) -> Result<(), HandlerError> {
    let nonce = Digest(random_bytes().map_err(|e| ProtocolError::Io(std::io::Error::other(e)))?);
    if conn.server_handshake(nonce).await?.is_none() {
        return Ok(());
    }
    let lease_ms = config.lease.as_millis() as i64;
    let mut peer = Authenticated {
        store: store.clone(),
        session: None,
    };
    loop {
        let Some(msg) = conn.next_request(&shutdown).await? else {
            return Ok(());
        };
        let name = msg.name();
        let reply = match msg {
            Message::Search(s) => match search(&store, s, lease_ms, searches).await {
                Ok(Ok(payload)) => Ok(Some(Reply::Encoded(payload))),
                Ok(Err(e)) => Ok(Some(Reply::Message(Message::Error(e)))),
                Err(e) => Err(e),
            },
            msg => answer(
                msg,
                &store,
                &mut peer.session,
                &nonce,
                addr,
                config,
                lease_ms,
            )
            .await
            .map(|m| m.map(Reply::Message)),
        };
        if peer.session.is_some() {
            // Registered: closed to make room only after every unregistered connection.
            conn.admission().map(Admission::trusted);
        }
        let reply = match reply {
            Ok(Some(m)) => m,
            Ok(None) => {
                conn.send_error(
                    code::BAD_REQUEST,
                    format!("{name} is not a request the index answers"),
                )
                .await;
                return Err(ProtocolError::Unexpected {
                    expected: "an index request",
                    received: name,
                }
                .into());
            }
            Err(HandlerError::Store(StoreError::UnknownPeer(id))) => {
                // Forgotten (an expired ephemeral peer): it must register again.
                peer.session = None;
                Reply::Message(Message::Error(ErrorReply::new(
                    code::UNAUTHORIZED,
                    format!("peer {id} is not registered any more; register again"),
                )))
            }
            Err(HandlerError::Store(StoreError::Superseded(id))) => {
                // Its key registered on another connection since: the newest session wins.
                peer.session = None;
                info!(peer_id = id, %addr, "superseded session refused");
                Reply::Message(Message::Error(ErrorReply::new(
                    code::UNAUTHORIZED,
                    format!("superseded by a newer session of peer {id}"),
                )))
            }
            Err(e) => {
                conn.send_error(code::INTERNAL, format!("index failure: {e}"))
                    .await;
                return Err(e);
            }
        };
        let sent = match &reply {
            Reply::Message(m) => conn.reply(m).await,
            Reply::Encoded(payload) => conn.reply_encoded(tag::SEARCH_RESULTS, payload).await,
        };
        match sent {
            Ok(()) => {}
            Err(ProtocolError::FrameTooLarge { .. }) => {
                conn.send_error(code::INTERNAL, "reply too large; ask for fewer results")
                    .await;
            }
            // A reply cut off midway leaves the stream out of step: close it.
            Err(e) => return Err(e.into()),
        }
    }
}

/// The reply to one request; `None` for a message the index does not answer.
async fn answer(
    msg: Message,
    store: &Arc<IndexStore>,
    peer: &mut Option<Session>,
    nonce: &Digest,
    addr: SocketAddr,
    config: &IndexConfig,
    lease_ms: i64,
) -> Result<Option<Message>, HandlerError> {
    let reply = match msg {
        Message::Register(r) => match register(store, &r, nonce, addr.ip(), config).await? {
            Ok((session, reg)) => {
                info!(peer_id = session.peer_id, host = %reg.host, port = r.port, "peer registered");
                // A session this connection held before is superseded by this one.
                *peer = Some(session);
                Message::Registered(reg)
            }
            Err(e) => Message::Error(e),
        },
        Message::UpdateFiles(u) => match (*peer, check_update(&u)) {
            (None, _) => unauthorized(),
            (Some(_), Err(why)) => Message::Error(ErrorReply::new(code::BAD_REQUEST, why)),
            (Some(session), Ok(())) => {
                let files =
                    blocking(store, move |s| s.update_files(&session, &u, now_ms())).await?;
                Message::Ack(Ack { files })
            }
        },
        Message::Heartbeat => match *peer {
            None => unauthorized(),
            Some(session) => {
                blocking(store, move |s| s.heartbeat(&session, now_ms())).await?;
                Message::Ack(Ack { files: 0 })
            }
        },
        Message::Unregister => match *peer {
            None => unauthorized(),
            Some(session) => {
                blocking(store, move |s| s.unregister(&session)).await?;
                *peer = None;
                info!(peer_id = session.peer_id, "peer unregistered");
                Message::Ack(Ack { files: 0 })
            }
        },
        Message::ListPeers => {
            let since = now_ms() - lease_ms;
            Message::PeerList(blocking(store, move |s| s.peers(since)).await?)
        }
        _ => return Ok(None),
    };
    Ok(Some(reply))
}

/// What the index sends back: a message, or a `SearchResults` payload already encoded.
enum Reply {
    Message(Message),
    Encoded(Bytes),
}

/// Answers a search: from the cache when the same query was answered since the index last
/// changed; a content id, or a word query that reads little of the index, inline; other word
/// queries on the blocking pool, at most `searches` at a time.
async fn search(
    store: &Arc<IndexStore>,
    Search { query, limit }: Search,
    lease_ms: i64,
    searches: &Arc<Semaphore>,
) -> Result<Result<Bytes, ErrorReply>, HandlerError> {
    if query.len() > MAX_QUERY_LEN {
        return Ok(Err(ErrorReply::new(code::BAD_REQUEST, "query too long")));
    }
    let limit = limit.clamp(1, MAX_SEARCH_LIMIT) as usize;
    let query = Query::parse(&query);
    if let Some(hit) = store.cached_search(&query, limit) {
        return Ok(Ok(hit));
    }
    // A content id, or a word query that reads little of the index, is answered here, on the
    // connection's thread (handing it to another thread and back would cost more), unless a
    // writer holds the index right now: then it waits its turn on the blocking pool.
    if let Some(r) = store.try_search_here(&query, limit, now_ms() - lease_ms) {
        return Ok(too_large_is_an_answer(r));
    }
    let _permit = searches.acquire().await;
    // Another connection may have answered the same query while this one waited.
    if let Some(hit) = store.cached_search(&query, limit) {
        return Ok(Ok(hit));
    }
    let store = store.clone();
    let r = tokio::task::spawn_blocking(move || {
        store.search_payload(&query, limit, now_ms() - lease_ms)
    })
    .await?;
    Ok(too_large_is_an_answer(r))
}

/// A reply over the frame limit is answered with an error (the connection stays usable).
fn too_large_is_an_answer(r: Result<Bytes, ProtocolError>) -> Result<Bytes, ErrorReply> {
    r.map_err(|e| match e {
        ProtocolError::FrameTooLarge { .. } => {
            ErrorReply::new(code::INTERNAL, "reply too large; ask for fewer results")
        }
        other => ErrorReply::new(code::INTERNAL, format!("encoding the reply: {other}")),
    })
}

fn unauthorized() -> Message {
    Message::Error(ErrorReply::new(code::UNAUTHORIZED, "register first"))
}

async fn register(
    store: &Arc<IndexStore>,
    r: &Register,
    nonce: &Digest,
    seen_ip: IpAddr,
    config: &IndexConfig,
) -> Result<Result<(Session, Registered), ErrorReply>, HandlerError> {
    if !verify_register(&r.public_key, nonce, &r.signature) {
        return Ok(Err(ErrorReply::new(code::UNAUTHORIZED, "bad signature")));
    }
    if r.port == 0 {
        return Ok(Err(ErrorReply::new(code::BAD_REQUEST, "invalid port 0")));
    }
    // Clients connect only to IP literals (they never resolve a name from the network), so
    // the index records nothing else, in one canonical form.
    let host = if r.host.is_empty() {
        seen_ip.to_string()
    } else {
        match crate::protocol::host::parse_ip(&r.host) {
            Some(ip) if ip.is_unspecified() => seen_ip.to_string(),
            Some(ip) => ip.to_string(),
            None => {
                return Ok(Err(ErrorReply::new(
                    code::BAD_REQUEST,
                    "invalid host: an IP address, or empty",
                )));
            }
        }
    };
    let (key, digest, port, h, eph) = (
        r.public_key,
        r.catalog_digest,
        r.port,
        host.clone(),
        r.ephemeral,
    );
    let (session, in_sync) = blocking(store, move |s| {
        s.register(&key, &h, port, &digest, eph, now_ms())
    })
    .await?;
    Ok(Ok((
        session,
        Registered {
            peer_id: session.peer_id,
            in_sync,
            lease_secs: config.lease.as_secs().max(1) as u32,
            host,
        },
    )))
}
