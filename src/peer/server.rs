//! `PeerServer`: answers other peers' requests for a file's info, piece hashes and pieces, by content id only.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::open::{OpenFile, Opened, read_piece};
use super::slots::SlotPolicy;
use super::{Catalog, PartialFile, Partials, UploadSlots};
use crate::content::{ContentId, Digest, PIECE_SIZE, PieceLayout};
use crate::protocol::{
    CatalogEntry, CatalogQuery, CatalogResults, Connection, Connections, GetHashes, GetHave,
    GetInfo, GetPiece, HANDSHAKE_TIMEOUT, Hashes, Have, Info, LENGTH_PREFIX_LEN, Limits,
    MAX_HASHES_PER_REPLY, MAX_QUERY_LEN, MAX_SEARCH_LIMIT, Message, Piece, ProtocolError,
    SMALL_FRAME_LEN, ServeLimits, ServerSide, accept_loop, bitmap_from, code,
};
use crate::query::Query;
use crate::rate::RateLimiter;
use blake3::hazmat::ChainingValue;
use std::sync::atomic::{AtomicU64, Ordering};

mod open;

/// Files one connection keeps open between requests.
const MAX_OPEN_PER_CONNECTION: usize = 32;

/// Requests read ahead of the one being answered at most, and files of at most a piece opened
/// with its file at most (as many as a downloader keeps in flight on one connection).
const MAX_OPENED_AHEAD: usize = 32;
/// Bytes of the files opened ahead read along at most (so a connection holds at most this
/// much, besides the piece it answers, and a descriptor for each of those files until they
/// are answered).
const MAX_BYTES_READ_AHEAD: u64 = 1024 * 1024;

/// Largest request frame (`length` field) a peer accepts: every request it answers is a few
/// dozen bytes (a query at most [`MAX_QUERY_LEN`]), so this fits a connection's own small
/// buffer and no request needs memory shared with other connections.
pub const MAX_REQUEST_FRAME_LEN: usize = SMALL_FRAME_LEN - LENGTH_PREFIX_LEN;

/// Settings of a peer's server side.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Most connections open at once; a new one beyond it closes the connection waiting
    /// longest for a request. Default: 256.
    pub max_connections: usize,
    /// Most connections from one address once half of `max_connections` are open. Default: 16.
    pub max_connections_per_ip: usize,
    /// Longest wait for a new connection's `Hello`. Default: [`HANDSHAKE_TIMEOUT`] (5 s).
    pub handshake_timeout: Duration,
    /// Per-connection time limits. Default: 60 s to receive a request, 60 s to send a reply.
    pub limits: Limits,
    /// Longest time from a request's first byte to its last. Default: 10 s.
    pub frame_timeout: Duration,
    /// Peers sent pieces at once; the others are answered `BUSY` with their queue place. Default: 8.
    pub upload_slots: usize,
    /// Upload slots one address keeps while others wait. Default: [`super::slots::SLOTS_PER_IP`] (2).
    pub upload_slots_per_ip: usize,
    /// Shared limit on upload bandwidth. Default: none.
    pub upload_rate: Option<Arc<RateLimiter>>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            max_connections: 256,
            max_connections_per_ip: 16,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            limits: Limits::default(),
            frame_timeout: Duration::from_secs(10),
            upload_slots: 8,
            upload_slots_per_ip: super::slots::SLOTS_PER_IP,
            upload_rate: None,
        }
    }
}

/// Serves the catalog's files to other peers.
#[derive(Clone)]
pub struct PeerServer {
    catalog: Arc<RwLock<Arc<Catalog>>>,
    roots: Arc<Vec<PathBuf>>,
    config: PeerConfig,
    /// Woken when a file on disk no longer matches the catalog, so the owner rescans.
    stale: Arc<Notify>,
    slots: Arc<UploadSlots>,
    next_conn: Arc<AtomicU64>,
    partials: Partials,
    connections: Connections,
}

/// What a peer knows of a file it serves: complete and shared, or partial.
struct Served {
    size: u64,
    name: String,
    piece_hashes: Arc<Vec<ChainingValue>>,
    partial: Option<Arc<PartialFile>>,
}

impl PeerServer {
    /// `roots` are the canonical shared directories: nothing outside them is ever read.
    pub fn new(
        catalog: Arc<RwLock<Arc<Catalog>>>,
        roots: Vec<PathBuf>,
        config: PeerConfig,
        stale: Arc<Notify>,
    ) -> Self {
        PeerServer {
            catalog,
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
        }
    }

    /// Also serve the verified pieces of these downloads in progress.
    pub fn with_partials(mut self, partials: Partials) -> Self {
        self.partials = partials;
        self
    }

    fn snapshot(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
                let conn = Connection::server(
                    stream,
                    self.config.limits,
                    ServerSide {
                        admission: Some(admission),
                        budget: None,
                        max_frame: MAX_REQUEST_FRAME_LEN,
                        frame_timeout: self.config.frame_timeout,
                    },
                );
                let ip = addr.ip();
                async move {
                    match server.handle(conn, ip, shutdown).await {
                        Ok(()) => debug!(%addr, "peer connection closed"),
                        Err(e) => info!(%addr, "peer connection closed: {e}"),
                    }
                }
            },
        )
        .await;
    }

    async fn handle(
        &self,
        conn: Connection<TcpStream>,
        ip: IpAddr,
        shutdown: CancellationToken,
    ) -> Result<(), ProtocolError> {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let r = self.serve(conn, conn_id, ip, shutdown).await;
        self.slots.release(conn_id);
        r
    }

    async fn serve(
        &self,
        mut conn: Connection<TcpStream>,
        conn_id: u64,
        ip: IpAddr,
        shutdown: CancellationToken,
    ) -> Result<(), ProtocolError> {
        if conn.server_handshake(Digest::default()).await?.is_none() {
            return Ok(());
        }
        let mut open: HashMap<ContentId, Arc<OpenFile>> = HashMap::new();
        // Requests read ahead of the one being answered (pipelined behind it), and the files
        // they ask for, opened together with its own.
        let mut ahead: VecDeque<Result<Message, ProtocolError>> = VecDeque::new();
        let mut opened: HashMap<ContentId, Opened> = HashMap::new();
        loop {
            if shutdown.is_cancelled() && !ahead.is_empty() {
                let _ = conn.flush().await;
                return Ok(());
            }
            let msg = match ahead.pop_front() {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return Err(conn.refuse(e).await),
                None => {
                    opened.clear();
                    match conn.next_request(&shutdown).await? {
                        Some(msg) => msg,
                        None => return Ok(()),
                    }
                }
            };
            let is_piece = matches!(msg, Message::GetPiece(_));
            let reply = match msg {
                Message::GetInfo(GetInfo { content_id }) => match self.find(&content_id) {
                    Some(f) => Message::Info(Info {
                        content_id,
                        size: f.size,
                        piece_size: PIECE_SIZE as u32,
                        name: f.name,
                    }),
                    None => not_found(&content_id),
                },
                Message::CatalogQuery(CatalogQuery { query, limit }) => {
                    if query.len() > MAX_QUERY_LEN {
                        bad_request("query too long".into())
                    } else {
                        Message::CatalogResults(self.catalog_query(&query, limit))
                    }
                }
                Message::GetHave(GetHave { content_id }) => match self.find(&content_id) {
                    Some(f) => {
                        let layout = PieceLayout::new(f.size);
                        let bitmap = match &f.partial {
                            Some(p) => p.bitmap(),
                            None => bitmap_from((0..layout.piece_count()).map(|_| true)),
                        };
                        Message::Have(Have {
                            content_id,
                            pieces: layout.piece_count() as u32,
                            bitmap,
                        })
                    }
                    None => not_found(&content_id),
                },
                Message::GetHashes(GetHashes {
                    content_id,
                    start,
                    count,
                }) => match self.find(&content_id) {
                    Some(f) => {
                        let (start_us, total) = (start as usize, f.piece_hashes.len());
                        let count = count.min(MAX_HASHES_PER_REPLY) as usize;
                        if start_us > total {
                            bad_request(format!("start {start} beyond {total} piece hashes"))
                        } else {
                            let end = (start_us + count).min(total);
                            let hashes = f.piece_hashes[start_us..end]
                                .iter()
                                .flatten()
                                .copied()
                                .collect();
                            Message::Hashes(Hashes { start, hashes })
                        }
                    }
                    None => not_found(&content_id),
                },
                Message::GetPiece(GetPiece { content_id, index }) => 'piece: {
                    if let Err(place) = self.slots.acquire(conn_id, ip) {
                        break 'piece Message::Error(crate::protocol::ErrorReply::new(
                            code::BUSY,
                            format!("all upload slots taken; you are number {place} in the queue"),
                        ));
                    }
                    let (file, prefetched) = match open.get(&content_id) {
                        Some(f) => (Some(f.clone()), None),
                        None => {
                            if !opened.contains_key(&content_id) {
                                let wanted = self
                                    .look_ahead(&mut conn, &mut ahead, &open, content_id, index);
                                opened.extend(self.open_many(wanted).await);
                            }
                            match opened.remove(&content_id) {
                                Some((f, prefetched)) => {
                                    let f = Arc::new(f);
                                    // A downloader reusing the connection for many files must
                                    // not hold a descriptor open for each of them.
                                    if open.len() >= MAX_OPEN_PER_CONNECTION {
                                        open.clear();
                                    }
                                    open.insert(content_id, f.clone());
                                    // (Read for this request, or for an earlier one of the
                                    // same file that was turned away.)
                                    let read = prefetched.filter(|(i, _)| *i == index);
                                    (Some(f), read.map(|(_, r)| r))
                                }
                                None => (None, None),
                            }
                        }
                    };
                    match file {
                        None => not_found(&content_id),
                        Some(f) if u64::from(index) >= f.layout.piece_count() => {
                            bad_request(format!(
                                "piece {index} out of range ({} pieces)",
                                f.layout.piece_count()
                            ))
                        }
                        Some(f) if f.partial.as_ref().is_some_and(|p| !p.has(index)) => {
                            Message::Error(crate::protocol::ErrorReply::new(
                                code::NOT_FOUND,
                                format!("piece {index} of {content_id} is not verified here yet"),
                            ))
                        }
                        Some(f) => match match prefetched {
                            Some(read) => read,
                            None => read_piece(f, index).await,
                        } {
                            Ok(data) => {
                                if let Some(rate) = &self.config.upload_rate {
                                    // Replies held back for pipelined requests leave before
                                    // this one waits its turn at the limiter.
                                    conn.flush().await?;
                                    rate.take(data.len() as u64).await;
                                }
                                Message::Piece(Piece { index, data })
                            }
                            Err(e) => {
                                warn!("reading piece {index} of {content_id}: {e}");
                                open.remove(&content_id);
                                self.stale.notify_one();
                                not_found(&content_id)
                            }
                        },
                    }
                }
                other => {
                    conn.send_error(
                        code::BAD_REQUEST,
                        format!("{} is not a request a peer answers", other.name()),
                    )
                    .await;
                    return Err(ProtocolError::Unexpected {
                        expected: "a peer request",
                        received: other.name(),
                    });
                }
            };
            // Replies to requests read ahead wait in the send buffer and leave together.
            match ahead.is_empty() {
                true => conn.reply(&reply).await?,
                false => conn.queue(&reply).await?,
            }
            if is_piece {
                self.slots.sent(conn_id);
            }
        }
    }

    /// `id`'s file, and those of the requests for small files already buffered behind its
    /// request (read into `ahead`, to be answered in turn): the files one blocking task opens.
    fn look_ahead<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        &self,
        conn: &mut Connection<S>,
        ahead: &mut VecDeque<Result<Message, ProtocolError>>,
        open: &HashMap<ContentId, Arc<OpenFile>>,
        id: ContentId,
        index: u32,
    ) -> Vec<(ContentId, u32)> {
        let catalog = self.snapshot();
        let size = |id: &ContentId| catalog.by_id(id).next().map(|f| f.size);
        let mut wanted = vec![(id, index)];
        let mut bytes = 0;
        while wanted.len() < MAX_OPENED_AHEAD && ahead.len() < MAX_OPENED_AHEAD {
            let Some(next) = conn.buffered_request() else {
                break;
            };
            let malformed = next.is_err();
            if let Ok(Message::GetPiece(g)) = &next
                && !open.contains_key(&g.content_id)
                && !wanted.iter().any(|(w, _)| *w == g.content_id)
                && let Some(len) = size(&g.content_id).filter(|&n| n <= PIECE_SIZE)
                && bytes + len <= MAX_BYTES_READ_AHEAD
            {
                bytes += len;
                wanted.push((g.content_id, g.index));
            }
            ahead.push_back(next);
            if malformed {
                break;
            }
        }
        wanted
    }

    /// The shared files matching `query`, one per content id, at most `limit` (clamped to 1..=1000).
    fn catalog_query(&self, query: &str, limit: u32) -> CatalogResults {
        let q = Query::parse(query);
        let limit = limit.clamp(1, MAX_SEARCH_LIMIT) as usize;
        let catalog = self.snapshot();
        let mut seen = std::collections::HashSet::new();
        let mut files = Vec::new();
        let mut truncated = false;
        for f in catalog.files() {
            if q.matches(&f.name, &f.content_id) && seen.insert(f.content_id) {
                if files.len() == limit {
                    truncated = true;
                    break;
                }
                files.push(CatalogEntry {
                    name: f.name.clone(),
                    size: f.size,
                    content_id: f.content_id,
                });
            }
        }
        CatalogResults { files, truncated }
    }

    fn find(&self, id: &ContentId) -> Option<Served> {
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

fn not_found(id: &ContentId) -> Message {
    Message::Error(crate::protocol::ErrorReply::new(
        code::NOT_FOUND,
        format!("this peer does not share {id}"),
    ))
}

fn bad_request(why: String) -> Message {
    Message::Error(crate::protocol::ErrorReply::new(code::BAD_REQUEST, why))
}
