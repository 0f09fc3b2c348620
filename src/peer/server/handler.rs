//! One connection a peer serves: the handshake, then each request answered by its own method (pieces of small files read ahead together).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::PeerServer;
use super::open::{OpenFile, Opened, read_piece};
use super::uploads::Uploads;
use crate::content::{ContentId, Digest, PIECE_SIZE, PieceLayout};
use crate::protocol::{
    CatalogQuery, Connection, ErrorCode, ErrorReply, GetHashes, GetHave, GetInfo, GetPiece, Hashes,
    Have, Info, MAX_HASHES_PER_REPLY, MAX_QUERY_LEN, Message, PeerReply, PeerRequest, Piece,
    ProtocolError, bitmap_from, feature,
};
use crate::query::now_ms;
use crate::tls::PeerStream;

/// Files one connection keeps open between requests.
const MAX_OPEN_PER_CONNECTION: usize = 32;

/// Requests read ahead of the one being answered at most, and files of at most a piece opened
/// with its file at most (as many as a downloader keeps in flight on one connection).
const MAX_OPENED_AHEAD: usize = 32;
/// Bytes of the files opened ahead read along at most (so a connection holds at most this
/// much, besides the piece it answers, and a descriptor for each of those files until they
/// are answered).
const MAX_BYTES_READ_AHEAD: u64 = 1024 * 1024;

/// A connection's state: the files it has open, and the requests read ahead of the one being
/// answered (pipelined behind it) with the files they ask for, opened together with its own.
pub(super) struct Handler<'a> {
    server: &'a PeerServer,
    conn: Connection<PeerStream>,
    conn_id: u64,
    ip: IpAddr,
    addr: SocketAddr,
    /// The key the client proved in the TLS handshake.
    key: Digest,
    /// What was uploaded on this connection, per file, not logged yet.
    uploads: Uploads<'a>,
    open: HashMap<ContentId, Arc<OpenFile>>,
    ahead: VecDeque<Result<Message, ProtocolError>>,
    opened: HashMap<ContentId, Opened>,
    /// The features agreed in the handshake: messages of others are refused.
    features: Vec<String>,
}

impl<'a> Handler<'a> {
    pub(super) fn new(
        server: &'a PeerServer,
        conn: Connection<PeerStream>,
        conn_id: u64,
        addr: SocketAddr,
        key: Digest,
    ) -> Handler<'a> {
        Handler {
            server,
            conn,
            conn_id,
            ip: addr.ip(),
            addr,
            key,
            uploads: Uploads::new(server, conn_id, addr, key),
            open: HashMap::new(),
            ahead: VecDeque::new(),
            opened: HashMap::new(),
            features: Vec::new(),
        }
    }

    /// Serves the connection until the client leaves, an error closes it, or shutdown.
    pub(super) async fn run(mut self, shutdown: CancellationToken) -> Result<(), ProtocolError> {
        let tls = self.server.tls();
        let key = self.key;
        // In a private group, only members are served: a stranger gets the refusal as the
        // only reply to its Hello, and learns nothing (not even our certificate).
        let admit = |hello: &crate::protocol::Hello| match tls.group() {
            Some(group) => group
                .admit(hello.membership.as_ref(), &key, now_ms())
                .map_err(|e| e.to_string()),
            None => Ok(()),
        };
        let greeted = self
            .conn
            .server_handshake_admitting(
                Digest::default(),
                &feature::ALL,
                crate::protocol::WelcomeExtra {
                    membership: tls.membership(),
                    revoked: None,
                },
                admit,
            )
            .await?;
        // The certificate the client was admitted with: checked again before every request,
        // so a removal or its expiry ends a connection already open.
        let admitted = match greeted {
            // A client that lists no features at all was written before features, when these
            // messages were simply part of version 1: it is answered as before.
            Some((hello, _)) if hello.features.is_empty() => {
                self.features = feature::ALL.iter().map(|f| f.to_string()).collect();
                hello.membership
            }
            Some((hello, welcome)) => {
                self.features = welcome.features;
                hello.membership
            }
            None => return Ok(()),
        };
        // A relayed connection at a volunteer (§7.10) starts with RelayAccept.
        let mut first = true;
        loop {
            if shutdown.is_cancelled() && !self.ahead.is_empty() {
                let _ = self.conn.flush().await;
                return Ok(());
            }
            let msg = match self.ahead.pop_front() {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return Err(self.conn.refuse(e).await),
                None => {
                    self.opened.clear();
                    match self.conn.next_request(&shutdown).await? {
                        Some(msg) => msg,
                        None => return Ok(()),
                    }
                }
            };
            let request: PeerRequest = self.conn.request_of(msg, "a peer").await?;
            // Checked in full at Hello; before each request only what can change: expiry and
            // removal (no signature to verify on the download path).
            let expires = admitted.as_ref().map_or(i64::MIN, |m| m.expires);
            if let Some(group) = tls.group()
                && let Err(e) = group.still_admits(&key, expires, now_ms())
            {
                let why = e.to_string();
                self.conn
                    .send_error(ErrorCode::Forbidden, why.clone())
                    .await;
                return Err(ProtocolError::Refused(why));
            }
            if let PeerRequest::RelayAccept(ra) = request {
                return match first {
                    true => self.relay_accept(ra.token, shutdown).await,
                    false => {
                        let why = "RelayAccept comes first on a connection, or not at all";
                        self.conn.send_error(ErrorCode::BadRequest, why).await;
                        Err(ProtocolError::Refused(why.into()))
                    }
                };
            }
            first = false;
            let piece_of = match &request {
                PeerRequest::GetPiece(r) => Some(r.content_id),
                _ => None,
            };
            let reply = match request {
                PeerRequest::Hello(_) => Err(bad_request("Hello comes once, first".into())),
                PeerRequest::GetInfo(r) => self.info(r),
                PeerRequest::CatalogQuery(q) => self
                    .agreed("CatalogQuery", feature::CATALOG)
                    .and_then(|()| self.catalog(q)),
                PeerRequest::GetHave(r) => self
                    .agreed("GetHave", feature::HAVE)
                    .and_then(|()| self.have(r)),
                PeerRequest::GetHashes(r) => self.hashes(r),
                PeerRequest::GetPiece(r) => self.piece(r).await?,
                PeerRequest::RelayAccept(_) => Err(bad_request("RelayAccept comes first".into())),
            };
            let reply = reply.map_or_else(Message::Error, Message::from);
            // Replies to requests read ahead wait in the send buffer and leave together.
            match self.ahead.is_empty() {
                true => self.conn.reply(&reply).await?,
                false => self.conn.queue(&reply).await?,
            }
            if let Some(id) = piece_of {
                self.server.slots.sent(self.conn_id);
                if let Message::Piece(p) = &reply {
                    crate::metrics::node().piece_served(p.data.len() as u64);
                    self.uploads.uploaded(id, p.data.len() as u64);
                }
            }
        }
    }

    /// A `RelayAccept`: this connection is one end of a relayed connection the index gave
    /// this volunteer (§7.10), if it is one; else refused like any request it does not serve.
    async fn relay_accept(
        mut self,
        token: crate::protocol::relay::RelayToken,
        shutdown: CancellationToken,
    ) -> Result<(), ProtocolError> {
        let Some(desk) = self.server.desk.clone() else {
            let why = "this peer does not relay for others (it shares without --relay)";
            self.conn.send_error(ErrorCode::BadRequest, why).await;
            return Err(ProtocolError::Refused(why.into()));
        };
        // A relay inside a relay, or over QUIC, is not offered: the ends connect over TCP.
        if !matches!(self.conn.get_ref(), PeerStream::Direct(_)) {
            let why = "RelayAccept is taken on a direct TCP connection only";
            self.conn.send_error(ErrorCode::BadRequest, why).await;
            return Err(ProtocolError::Refused(why.into()));
        }
        let Handler {
            conn, addr, key, ..
        } = self;
        desk.accept(conn, addr, key, token, shutdown).await
    }

    /// Whether `feature` was agreed on this connection; the refusal of `message` if not.
    fn agreed(&self, message: &str, feature: &str) -> Result<(), ErrorReply> {
        match self.features.iter().any(|f| f == feature) {
            true => Ok(()),
            false => Err(bad_request(format!(
                "{message} needs the feature \"{feature}\", which was not agreed in Hello/Welcome"
            ))),
        }
    }

    fn info(&self, GetInfo { content_id }: GetInfo) -> Result<PeerReply, ErrorReply> {
        let f = self
            .server
            .find(&content_id)
            .ok_or_else(|| not_found(&content_id))?;
        Ok(PeerReply::Info(Info {
            content_id,
            size: f.size,
            piece_size: PIECE_SIZE as u32,
            name: f.name,
        }))
    }

    fn catalog(&self, query: CatalogQuery) -> Result<PeerReply, ErrorReply> {
        if query.query.len() > MAX_QUERY_LEN {
            return Err(bad_request("query too long".into()));
        }
        query.filters().check().map_err(bad_request)?;
        Ok(PeerReply::CatalogResults(self.server.catalog_query(&query)))
    }

    fn have(&self, GetHave { content_id }: GetHave) -> Result<PeerReply, ErrorReply> {
        let f = self
            .server
            .find(&content_id)
            .ok_or_else(|| not_found(&content_id))?;
        let layout = PieceLayout::new(f.size);
        let bitmap = match &f.partial {
            Some(p) => p.bitmap(),
            None => bitmap_from((0..layout.piece_count()).map(|_| true)),
        };
        Ok(PeerReply::Have(Have {
            content_id,
            pieces: layout.piece_count() as u32,
            bitmap,
        }))
    }

    fn hashes(
        &self,
        GetHashes {
            content_id,
            start,
            count,
        }: GetHashes,
    ) -> Result<PeerReply, ErrorReply> {
        let f = self
            .server
            .find(&content_id)
            .ok_or_else(|| not_found(&content_id))?;
        let (start_us, total) = (start as usize, f.piece_hashes.len());
        let count = count.min(MAX_HASHES_PER_REPLY) as usize;
        if start_us > total {
            return Err(bad_request(format!(
                "start {start} beyond {total} piece hashes"
            )));
        }
        let end = (start_us + count).min(total);
        let hashes = f.piece_hashes[start_us..end]
            .iter()
            .flatten()
            .copied()
            .collect();
        Ok(PeerReply::Hashes(Hashes { start, hashes }))
    }

    /// A piece, if an upload slot is free: from a file this connection has open, else opened
    /// together with those of the requests for small files buffered behind it.
    async fn piece(
        &mut self,
        GetPiece { content_id, index }: GetPiece,
    ) -> Result<Result<PeerReply, ErrorReply>, ProtocolError> {
        if let Err(place) = self.server.slots.acquire(self.conn_id, self.ip) {
            return Ok(Err(ErrorReply::new(
                ErrorCode::Busy,
                format!("all upload slots taken; you are number {place} in the queue"),
            )));
        }
        let (file, prefetched) = match self.open.get(&content_id) {
            Some(f) => (Some(f.clone()), None),
            None => {
                if !self.opened.contains_key(&content_id) {
                    let wanted = self.look_ahead(content_id, index);
                    let opened = self.server.open_many(wanted).await;
                    self.opened.extend(opened);
                }
                match self.opened.remove(&content_id) {
                    Some((f, prefetched)) => {
                        let f = Arc::new(f);
                        // A downloader reusing the connection for many files must not hold a
                        // descriptor open for each of them.
                        if self.open.len() >= MAX_OPEN_PER_CONNECTION {
                            self.open.clear();
                        }
                        self.open.insert(content_id, f.clone());
                        // (Read for this request, or for an earlier one of the same file that
                        // was turned away.)
                        let read = prefetched.filter(|(i, _)| *i == index);
                        (Some(f), read.map(|(_, r)| r))
                    }
                    None => (None, None),
                }
            }
        };
        let Some(f) = file else {
            return Ok(Err(not_found(&content_id)));
        };
        if u64::from(index) >= f.layout.piece_count() {
            return Ok(Err(bad_request(format!(
                "piece {index} out of range ({} pieces)",
                f.layout.piece_count()
            ))));
        }
        if f.partial.as_ref().is_some_and(|p| !p.has(index)) {
            return Ok(Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("piece {index} of {content_id} is not verified here yet"),
            )));
        }
        let read = match prefetched {
            Some(read) => read,
            None => read_piece(f, index).await,
        };
        match read {
            Ok(data) => {
                if let Some(rate) = &self.server.config.upload_rate {
                    // Replies held back for pipelined requests leave before this one waits
                    // its turn at the limiter.
                    self.conn.flush().await?;
                    rate.take(data.len() as u64).await;
                }
                Ok(Ok(PeerReply::Piece(Piece { index, data })))
            }
            Err(e) => {
                warn!("reading piece {index} of {content_id}: {e}");
                self.open.remove(&content_id);
                self.server.stale.notify_one();
                Ok(Err(not_found(&content_id)))
            }
        }
    }

    /// `id`'s file, and those of the requests for small files already buffered behind its
    /// request (read into `ahead`, to be answered in turn): the files one blocking task opens.
    fn look_ahead(&mut self, id: ContentId, index: u32) -> Vec<(ContentId, u32)> {
        let catalog = self.server.snapshot();
        let size = |id: &ContentId| catalog.by_id(id).next().map(|f| f.size);
        let mut wanted = vec![(id, index)];
        let mut bytes = 0;
        while wanted.len() < MAX_OPENED_AHEAD && self.ahead.len() < MAX_OPENED_AHEAD {
            let Some(next) = self.conn.buffered_request() else {
                break;
            };
            let malformed = next.is_err();
            if let Ok(Message::GetPiece(g)) = &next
                && !self.open.contains_key(&g.content_id)
                && !wanted.iter().any(|(w, _)| *w == g.content_id)
                && let Some(len) = size(&g.content_id).filter(|&n| n <= PIECE_SIZE)
                && bytes + len <= MAX_BYTES_READ_AHEAD
            {
                bytes += len;
                wanted.push((g.content_id, g.index));
            }
            self.ahead.push_back(next);
            if malformed {
                break;
            }
        }
        wanted
    }
}

fn not_found(id: &ContentId) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::NotFound,
        format!("this peer does not share {id}"),
    )
}

fn bad_request(why: String) -> ErrorReply {
    ErrorReply::new(ErrorCode::BadRequest, why)
}
