//! `PeerServer`: answers other peers' requests for a file's info, piece hashes and pieces, by content id only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use blake3::hazmat::ChainingValue;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::slots::SlotPolicy;
use super::{Catalog, PartialFile, Partials, UploadSlots};
use crate::content::{ContentId, Digest};
use crate::protocol::CatalogQuery;
use crate::protocol::{
    CatalogEntry, CatalogResults, Connection, Connections, HANDSHAKE_TIMEOUT, LENGTH_PREFIX_LEN,
    Limits, MAX_SEARCH_LIMIT, ProtocolError, SMALL_FRAME_LEN, ServeLimits, ServerSide, accept_loop,
};
use crate::query::{FileFacts, Query};
use crate::rate::RateLimiter;
use crate::tls::{PeerStream, Tls, secure_admitted};

mod handler;
mod open;
mod quic;
mod uploads;

use self::handler::Handler;

/// Largest request frame (`length` field) a peer accepts: every request it answers is a few
/// dozen bytes (a query at most [`MAX_QUERY_LEN`]), so this fits a connection's own small
/// buffer and no request needs memory shared with other connections.
pub const MAX_REQUEST_FRAME_LEN: usize = SMALL_FRAME_LEN - LENGTH_PREFIX_LEN;

/// Default of [`PeerConfig::max_connections`].
pub const MAX_CONNECTIONS: usize = 256;
/// Default of [`PeerConfig::max_connections_per_ip`].
pub const MAX_CONNECTIONS_PER_IP: usize = 16;
/// Default of [`PeerConfig::frame_timeout`].
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`PeerConfig::upload_slots`].
pub const UPLOAD_SLOTS: usize = 8;

/// Settings of a peer's server side.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Most connections open at once; a new one beyond it closes the connection waiting
    /// longest for a request. Default: [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Most connections from one address once half of `max_connections` are open.
    /// Default: [`MAX_CONNECTIONS_PER_IP`].
    pub max_connections_per_ip: usize,
    /// Longest wait for a new connection's `Hello`. Default: [`HANDSHAKE_TIMEOUT`] (5 s).
    pub handshake_timeout: Duration,
    /// Per-connection time limits. Default: [`Limits::default`].
    pub limits: Limits,
    /// Longest time from a request's first byte to its last. Default: [`FRAME_TIMEOUT`].
    pub frame_timeout: Duration,
    /// Peers sent pieces at once; the others are answered `BUSY` with their queue place.
    /// Default: [`UPLOAD_SLOTS`].
    pub upload_slots: usize,
    /// Upload slots one address keeps while others wait. Default: [`SLOTS_PER_IP`](super::SLOTS_PER_IP) (2).
    pub upload_slots_per_ip: usize,
    /// Shared limit on upload bandwidth. Default: none.
    pub upload_rate: Option<Arc<RateLimiter>>,
    /// Where the uploads in progress are shown (a node's status). Default: nowhere.
    pub uploads: Option<UploadsNow>,
}

/// The uploads in progress, by connection and file, for a status page: a file appears with
/// its first piece sent and goes when its last one is (or its connection ends).
#[derive(Debug, Clone, Default)]
pub struct UploadsNow(
    Arc<std::sync::Mutex<std::collections::HashMap<(u64, ContentId), UploadNow>>>,
);

/// One file being uploaded on one connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UploadNow {
    /// To whom: the client's address.
    pub to: String,
    /// The client's key fingerprint.
    pub key: String,
    /// The file's name.
    pub name: String,
    /// Bytes sent so far.
    pub bytes: u64,
    /// Pieces sent so far, and in the file.
    pub pieces: u64,
    /// Pieces in the file.
    pub piece_count: u64,
}

impl UploadsNow {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(u64, ContentId), UploadNow>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every upload in progress, by client address.
    pub fn list(&self) -> Vec<UploadNow> {
        let mut v: Vec<UploadNow> = self.map().values().cloned().collect();
        v.sort_by(|a, b| (&a.to, &a.name).cmp(&(&b.to, &b.name)));
        v
    }

    pub(super) fn set(&self, conn: u64, id: ContentId, u: UploadNow) {
        self.map().insert((conn, id), u);
    }

    pub(super) fn done(&self, conn: u64, id: &ContentId) {
        self.map().remove(&(conn, *id));
    }

    pub(super) fn closed(&self, conn: u64) {
        self.map().retain(|(c, _), _| *c != conn);
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            limits: Limits::default(),
            frame_timeout: FRAME_TIMEOUT,
            upload_slots: UPLOAD_SLOTS,
            upload_slots_per_ip: super::slots::SLOTS_PER_IP,
            upload_rate: None,
            uploads: None,
        }
    }
}

/// Serves the catalog's files to other peers.
#[derive(Clone)]
pub struct PeerServer {
    catalog: watch::Receiver<Arc<Catalog>>,
    tls: Tls,
    roots: Arc<Vec<PathBuf>>,
    config: PeerConfig,
    /// Woken when a file on disk no longer matches the catalog, so the owner rescans.
    stale: Arc<Notify>,
    slots: Arc<UploadSlots>,
    next_conn: Arc<AtomicU64>,
    partials: Partials,
    connections: Connections,
    /// Set when this peer volunteers as a relay (`share --relay`).
    desk: Option<super::RelayDesk>,
}

/// What a peer knows of a file it serves: complete and shared, or partial.
pub(super) struct Served {
    pub size: u64,
    pub name: String,
    pub piece_hashes: Arc<Vec<ChainingValue>>,
    pub partial: Option<Arc<PartialFile>>,
}

impl PeerServer {
    /// `roots` are the canonical shared directories: nothing outside them is ever read.
    /// Clients see the key of `tls`.
    pub fn new(
        catalog: watch::Receiver<Arc<Catalog>>,
        roots: Vec<PathBuf>,
        config: PeerConfig,
        stale: Arc<Notify>,
        tls: Tls,
    ) -> Self {
        PeerServer {
            catalog,
            tls,
            roots: Arc::new(roots),
            slots: Arc::new(UploadSlots::with_policy(SlotPolicy {
                per_ip: config.upload_slots_per_ip,
                ..SlotPolicy::new(config.upload_slots)
            })),
            connections: Connections::new(ServeLimits {
                max_connections: config.max_connections,
                max_per_ip: config.max_connections_per_ip,
                handshake_timeout: config.handshake_timeout,
                grace: Duration::from_secs(5),
            }),
            config,
            stale,
            next_conn: Arc::new(AtomicU64::new(1)),
            partials: Partials::default(),
            desk: None,
        }
    }

    /// Also serve the verified pieces of these downloads in progress.
    pub fn with_partials(mut self, partials: Partials) -> Self {
        self.partials = partials;
        self
    }

    /// Also carry the relayed connections the index assigns this volunteer (§7.10).
    pub fn with_relay_desk(mut self, desk: super::RelayDesk) -> Self {
        self.desk = Some(desk);
        self
    }

    /// The catalog as it is now.
    pub(super) fn snapshot(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// The TLS setup clients see (and our group, in a private one).
    pub(super) fn tls(&self) -> &Tls {
        &self.tls
    }

    /// The open connections (for their counts).
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        accept_loop(
            listener,
            self.connections.clone(),
            shutdown.clone(),
            |stream, addr, admission| {
                let (server, shutdown) = (self.clone(), shutdown.clone());
                async move {
                    let Some(secured) = secure_admitted(&server.tls, stream, &admission).await
                    else {
                        return;
                    };
                    let conn = Connection::server(
                        PeerStream::Direct(secured.stream),
                        server.config.limits,
                        ServerSide {
                            admission: Some(admission),
                            budget: None,
                            max_frame: MAX_REQUEST_FRAME_LEN,
                            frame_timeout: server.config.frame_timeout,
                        },
                    );
                    let key = secured.remote_key;
                    match server.handle(conn, addr, key, shutdown).await {
                        Ok(()) => debug!(%addr, "peer connection closed"),
                        Err(e) => info!(%addr, "peer connection closed: {e}"),
                    }
                }
            },
        )
        .await;
    }

    /// Serves one connection that came through a relay (§7.10), already secured end to end
    /// with `key`'s peer at `addr` (as the relaying index saw it). It is not counted in this
    /// server's connection table (its caller bounds relayed connections); its idle time is
    /// bounded by the connection's limits (its `Hello` included).
    pub async fn serve_relayed(
        &self,
        stream: PeerStream,
        addr: SocketAddr,
        key: Digest,
        shutdown: CancellationToken,
    ) -> Result<(), ProtocolError> {
        let conn = Connection::server(
            stream,
            self.config.limits,
            ServerSide {
                admission: None,
                budget: None,
                max_frame: MAX_REQUEST_FRAME_LEN,
                frame_timeout: self.config.frame_timeout,
            },
        );
        self.handle(conn, addr, key, shutdown).await
    }

    /// The TLS setup of this server (its key, and its group in a private one).
    pub fn tls_setup(&self) -> &Tls {
        &self.tls
    }

    async fn handle(
        &self,
        conn: Connection<PeerStream>,
        addr: SocketAddr,
        key: Digest,
        shutdown: CancellationToken,
    ) -> Result<(), ProtocolError> {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let r = Handler::new(self, conn, conn_id, addr, key)
            .run(shutdown)
            .await;
        self.slots.release(conn_id);
        r
    }

    /// The shared files matching the query and its filters, one per content id (at its first
    /// path in path order), skipping `offset` of them and sending at most `limit` (clamped to
    /// 1..=1000).
    pub(super) fn catalog_query(&self, query: &CatalogQuery) -> CatalogResults {
        let q = Query::with_filters(&query.query, query.filters());
        let limit = query.limit.clamp(1, MAX_SEARCH_LIMIT) as usize;
        let catalog = self.snapshot();
        let mut seen = std::collections::HashSet::new();
        let mut files = Vec::new();
        let mut truncated = false;
        let mut skip = query.offset as usize;
        for f in catalog.files() {
            let facts = FileFacts {
                path: f.rel_path.as_bytes(),
                size: f.size,
                mtime: f.mtime_ns.div_euclid(1_000_000_000),
            };
            if q.matches(&facts, &f.content_id) && seen.insert(f.content_id) {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if files.len() == limit {
                    truncated = true;
                    break;
                }
                files.push(CatalogEntry {
                    name: f.name.clone(),
                    size: f.size,
                    content_id: f.content_id,
                    path: Some(f.rel_path.clone()),
                });
            }
        }
        CatalogResults { files, truncated }
    }

    /// The file with this content id, shared or downloading.
    pub(super) fn find(&self, id: &ContentId) -> Option<Served> {
        if let Some(f) = self.snapshot().by_id(id).next() {
            return Some(Served {
                size: f.size,
                name: f.name.clone(),
                piece_hashes: f.piece_hashes.clone(),
                partial: None,
            });
        }
        self.partials.get(id).map(|p| Served {
            size: p.size,
            name: p.name.clone(),
            piece_hashes: p.piece_hashes.clone(),
            partial: Some(p),
        })
    }
}
