//! One client connection of the index: the handshake, then each request answered by its own method.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::address_check::{AddressChecks, CheckError, MAX_FAILED_CHECKS};
use super::relay::RelayHub;

mod relay_requests;
use super::store::Page;
use super::{IndexConfig, IndexStore, PrivateGroup, Session, StoreError};
use crate::content::{Digest, MAX_FILE_SIZE, PieceLayout};
use crate::identity::{random_bytes, verify_register};
use crate::metrics::{
    ConnectionError, IndexMetrics, IndexRequestKind, QueryKind, RegisterOutcome, SearchOutcome,
};
use crate::protocol::relay::reach;
use crate::protocol::{
    Ack, Admission, Connection, ErrorCode, ErrorReply, IndexReply, IndexRequest, Join, Joined,
    MAX_PATH_LEN, MAX_QUERY_LEN, MAX_SEARCH_LIMIT, MAX_SEARCH_OFFSET, Message, ProtocolError,
    Register, Registered, Search, UpdateFiles, WelcomeExtra, tag,
};
use crate::protocol::{Browse, Listing, MAX_BROWSE_LIMIT};
use crate::query::{Query, now_ms};
use crate::tls::SecureStream;

/// Refused `Join`s after which a connection's further ones are refused unread.
pub const MAX_FAILED_JOINS: u32 = 3;

/// Who is at the other end of a connection: where from, and the key it proved.
pub(super) struct Remote {
    pub(super) addr: SocketAddr,
    pub(super) key: Digest,
    /// The index's group, when it is private.
    pub(super) group: Option<Arc<PrivateGroup>>,
    /// The index's rendezvous and relay.
    pub(super) relay: RelayHub,
}

/// Why a request was not answered as asked.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    /// The client gets an error reply with this code; the connection goes on.
    #[error("{1}")]
    Refused(ErrorCode, String),
    /// The connection failed; it closes.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The store failed (or forgot the session: see [`RequestError::code`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A task on the blocking pool failed.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl RequestError {
    /// The code the client is told.
    pub(super) fn code(&self) -> ErrorCode {
        match self {
            RequestError::Refused(code, _) => *code,
            RequestError::Store(StoreError::UnknownPeer(_) | StoreError::Superseded(_)) => {
                ErrorCode::Unauthorized
            }
            RequestError::Protocol(_) | RequestError::Store(_) | RequestError::Join(_) => {
                ErrorCode::Internal
            }
        }
    }

    /// The error's kind, for the metrics.
    pub(super) fn kind(&self) -> ConnectionError {
        match self {
            RequestError::Protocol(e) => match e {
                ProtocolError::Timeout { .. } | ProtocolError::Handshake { .. } => {
                    ConnectionError::Timeout
                }
                ProtocolError::FrameTooLarge { .. }
                | ProtocolError::EmptyFrame
                | ProtocolError::UnknownTag { .. }
                | ProtocolError::Malformed { .. }
                | ProtocolError::Unexpected { .. }
                | ProtocolError::Remote(_) => ConnectionError::BadFrame,
                ProtocolError::TruncatedFrame { .. }
                | ProtocolError::Closed
                | ProtocolError::Io(_) => ConnectionError::Io,
                ProtocolError::Version { .. } => ConnectionError::UnsupportedVersion,
                ProtocolError::Evicted => ConnectionError::Evicted,
                ProtocolError::NoMemory { .. } => ConnectionError::NoMemory,
                ProtocolError::Refused(_) => ConnectionError::Forbidden,
            },
            other => code_kind(other.code()),
        }
    }

    fn refused(code: ErrorCode, why: impl Into<String>) -> RequestError {
        RequestError::Refused(code, why.into())
    }
}

/// The error kind of an error reply with `code`.
fn code_kind(code: ErrorCode) -> ConnectionError {
    match code {
        ErrorCode::BadRequest => ConnectionError::BadRequest,
        ErrorCode::NotFound => ConnectionError::NotFound,
        ErrorCode::Unauthorized => ConnectionError::Unauthorized,
        ErrorCode::UnsupportedVersion => ConnectionError::UnsupportedVersion,
        ErrorCode::Busy => ConnectionError::Busy,
        ErrorCode::Internal => ConnectionError::Internal,
        ErrorCode::Forbidden => ConnectionError::Forbidden,
        ErrorCode::Unreachable => ConnectionError::Unreachable,
    }
}

/// What the index sends back: a reply, or a `SearchResults` payload already encoded.
enum Reply {
    Message(IndexReply),
    Encoded(Bytes),
}

/// A connection's state: its stream, the session it registered, and the index's shared parts.
pub(super) struct Handler {
    conn: Connection<SecureStream>,
    addr: SocketAddr,
    /// The key the client proved in the TLS handshake.
    key: Digest,
    group: Option<Arc<PrivateGroup>>,
    /// In a private group: the key is a member (checked at the handshake, set by `Join`).
    member: bool,
    checks: AddressChecks,
    /// Address checks that failed on this connection.
    failed_checks: u32,
    /// `Join`s refused on this connection.
    failed_joins: u32,
    store: Arc<IndexStore>,
    config: IndexConfig,
    /// Word searches computed at once, across connections.
    searches: Arc<Semaphore>,
    /// What a peer signs to register on this connection.
    nonce: Digest,
    peer: Authenticated,
    metrics: IndexMetrics,
    relay: RelayHub,
}

impl Handler {
    pub(super) fn new(
        conn: Connection<SecureStream>,
        remote: Remote,
        store: Arc<IndexStore>,
        config: IndexConfig,
        searches: Arc<Semaphore>,
        checks: AddressChecks,
        metrics: &IndexMetrics,
    ) -> Handler {
        Handler {
            conn,
            // An IPv4 client of a dual-stack listener is known by its IPv4 address.
            addr: crate::protocol::listen::canonical(remote.addr),
            key: remote.key,
            group: remote.group,
            member: false,
            checks,
            failed_checks: 0,
            failed_joins: 0,
            peer: Authenticated {
                store: store.clone(),
                session: None,
                relay: remote.relay.clone(),
                key: remote.key,
            },
            store,
            config,
            searches,
            nonce: Digest::default(),
            metrics: metrics.clone(),
            relay: remote.relay,
        }
    }

    /// Serves the connection until the client leaves, an error closes it, or shutdown.
    pub(super) async fn run(mut self, shutdown: CancellationToken) -> Result<(), RequestError> {
        self.nonce =
            Digest(random_bytes().map_err(|e| ProtocolError::Io(std::io::Error::other(e)))?);
        // A member of a private index gets a fresh certificate and the keys removed.
        let mut extra = WelcomeExtra::default();
        if let Some(g) = self.group.clone() {
            let key = self.key;
            let welcome = self
                .blocking(move |s| match g.is_member(s, &key)? {
                    true => g.renewal(s, &key),
                    false => Ok(None),
                })
                .await?;
            self.member = welcome.is_some();
            if let Some((membership, revoked)) = welcome {
                extra.membership = Some(membership);
                extra.revoked = Some(revoked);
            }
        }
        if self
            .conn
            .server_handshake_admitting(self.nonce, &[], extra, |_| Ok(()))
            .await?
            .is_none()
        {
            return Ok(());
        }
        loop {
            let Some(msg) = self.conn.next_request(&shutdown).await? else {
                return Ok(());
            };
            let request: IndexRequest = self.conn.request_of(msg, "the index").await?;
            // Rendezvous and relay requests take the connection over (§7.10).
            let request = match request {
                r @ (IndexRequest::Listen
                | IndexRequest::RelayConnect(_)
                | IndexRequest::RelayAccept(_)) => match self.relay_request(r, &shutdown).await? {
                    Some(handler) => {
                        self = handler;
                        continue;
                    }
                    None => return Ok(()),
                },
                r => r,
            };
            let reply = match self.answer(request).await {
                Ok(reply) => reply,
                Err(e @ RequestError::Refused(..)) => refusal(&e),
                Err(RequestError::Store(StoreError::UnknownPeer(id))) => {
                    // Forgotten (an expired ephemeral peer): it must register again.
                    self.peer.end_relay_session();
                    self.peer.session = None;
                    refusal(&RequestError::refused(
                        ErrorCode::Unauthorized,
                        format!("peer {id} is not registered any more; register again"),
                    ))
                }
                Err(RequestError::Store(StoreError::Superseded(id))) => {
                    // Its key registered on another connection since: the newest session wins.
                    self.peer.session = None;
                    info!(peer_id = id, addr = %self.addr, "superseded session refused");
                    refusal(&RequestError::refused(
                        ErrorCode::Unauthorized,
                        format!("superseded by a newer session of peer {id}"),
                    ))
                }
                Err(e) => {
                    self.conn
                        .send_error(e.code(), format!("index failure: {e}"))
                        .await;
                    return Err(e);
                }
            };
            if let Reply::Message(IndexReply::Error(e)) = &reply {
                let code = e.kind().unwrap_or(ErrorCode::Internal);
                self.metrics.errors.get(code_kind(code)).inc();
            }
            if self.peer.session.is_some() {
                // Registered: closed to make room only after every unregistered connection.
                self.conn.admission().map(Admission::trusted);
            }
            let sent = match reply {
                Reply::Message(m) => self.conn.reply(&Message::from(m)).await,
                Reply::Encoded(payload) => {
                    self.conn.reply_encoded(tag::SEARCH_RESULTS, &payload).await
                }
            };
            match sent {
                Ok(()) => {}
                Err(ProtocolError::FrameTooLarge { .. }) => {
                    self.metrics.errors.get(ConnectionError::Internal).inc();
                    self.conn
                        .send_error(
                            ErrorCode::Internal,
                            "reply too large; ask for fewer results",
                        )
                        .await;
                }
                // A reply cut off midway leaves the stream out of step: close it.
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn answer(&mut self, request: IndexRequest) -> Result<Reply, RequestError> {
        self.metrics.requests.get(request_kind(&request)).inc();
        if let Some(g) = &self.group
            && !matches!(request, IndexRequest::Join(_))
        {
            let revoked = g.is_revoked(&self.key);
            if revoked || !self.member {
                let (code, why) = super::group::forbidden(revoked);
                return Err(RequestError::refused(code, why));
            }
        }
        let reply = match request {
            IndexRequest::Join(j) => IndexReply::Joined(self.join(j).await?),
            IndexRequest::Hello(_) => {
                return Err(RequestError::refused(
                    ErrorCode::BadRequest,
                    "Hello comes once, first",
                ));
            }
            IndexRequest::Search(s) => return self.search(s).await.map(Reply::Encoded),
            IndexRequest::Register(r) => {
                let r = self.register(r).await;
                let outcome = match r {
                    Ok(_) => RegisterOutcome::Accepted,
                    Err(_) => RegisterOutcome::Refused,
                };
                self.metrics.registrations.get(outcome).inc();
                IndexReply::Registered(r?)
            }
            IndexRequest::UpdateFiles(u) => IndexReply::Ack(self.update_files(u).await?),
            IndexRequest::Heartbeat => IndexReply::Ack(self.heartbeat().await?),
            IndexRequest::Unregister => IndexReply::Ack(self.unregister().await?),
            IndexRequest::Browse(b) => IndexReply::Listing(self.browse(b).await?),
            IndexRequest::ListPeers => {
                let since = now_ms() - self.lease_ms();
                IndexReply::PeerList(self.blocking(move |s| s.peers(since)).await?)
            }
            IndexRequest::Listen | IndexRequest::RelayConnect(_) | IndexRequest::RelayAccept(_) => {
                // Taken over in `run` before this.
                return Err(RequestError::refused(
                    ErrorCode::Internal,
                    "relay request answered out of turn",
                ));
            }
        };
        Ok(Reply::Message(reply))
    }

    fn lease_ms(&self) -> i64 {
        self.config.lease.as_millis() as i64
    }

    fn session(&self) -> Result<Session, RequestError> {
        self.peer
            .session
            .ok_or_else(|| RequestError::refused(ErrorCode::Unauthorized, "register first"))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&IndexStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RequestError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store)).await??)
    }

    async fn register(&mut self, r: Register) -> Result<Registered, RequestError> {
        if r.public_key != self.key {
            return Err(RequestError::refused(
                ErrorCode::Unauthorized,
                "Register's key is not the key this connection proved in its TLS handshake",
            ));
        }
        if !verify_register(&r.public_key, &self.nonce, &r.signature) {
            return Err(RequestError::refused(
                ErrorCode::Unauthorized,
                "bad signature",
            ));
        }
        if r.port == 0 {
            return Err(RequestError::refused(
                ErrorCode::BadRequest,
                "invalid port 0",
            ));
        }
        let seen_ip = self.addr.ip();
        // Clients connect only to IP literals (they never resolve a name from the network), so
        // the index records nothing else, in one canonical form.
        let host = if r.host.is_empty() {
            seen_ip.to_string()
        } else {
            // `::ffff:a.b.c.d` is the IPv4 address a.b.c.d.
            match crate::protocol::host::parse_ip(&r.host).map(|ip| ip.to_canonical()) {
                Some(ip) if ip.is_unspecified() => seen_ip.to_string(),
                Some(ip) => ip.to_string(),
                None => {
                    return Err(RequestError::refused(
                        ErrorCode::BadRequest,
                        "invalid host: an IP address, or empty",
                    ));
                }
            }
        };
        // A peer the index cannot reach is reached through its relay instead, by its key: it
        // is recorded without an address (host empty, port 0), so no one can list an
        // address that was not checked (§7.10).
        let relayed = match self.check_address(&host, r.port, r.via).await {
            Ok(()) => false,
            Err(RequestError::Refused(ErrorCode::Unreachable, why))
                if self.relay.can_relay(r.via) =>
            {
                debug!(peer = %self.addr, "registered through the relay: {why}");
                true
            }
            Err(e) => return Err(e),
        };
        let (host, port) = match relayed {
            true => (String::new(), 0),
            false => (host, r.port),
        };
        // A volunteer relay must be reached directly: others connect to its peer port.
        let volunteer = (r.relay && !relayed && !r.ephemeral)
            .then(|| crate::protocol::host::socket_addr(&host, r.port).ok())
            .flatten()
            .map(|a| a.to_string());
        let (key, digest, h, eph) = (r.public_key, r.catalog_digest, host.clone(), r.ephemeral);
        let (session, in_sync) = self
            .blocking(move |s| s.register(&key, &h, port, &digest, eph, now_ms()))
            .await?;
        info!(peer_id = session.peer_id, host = %host, port, relayed, volunteer = volunteer.is_some(), "peer registered");
        // A session this connection held before is superseded by this one.
        self.peer.session = Some(session);
        let volunteers = volunteer.is_some();
        self.relay
            .registered(self.key, session.peer_id, session.number, volunteer, r.via);
        Ok(Registered {
            peer_id: session.peer_id,
            in_sync,
            lease_secs: self.config.lease.as_secs().max(1) as u32,
            host,
            observed: Some(self.addr.to_string()),
            reach: Some(match relayed {
                true => reach::RELAY.into(),
                false => reach::DIRECT.into(),
            }),
            relay: r.relay.then_some(volunteers),
        })
    }

    /// Checks that the peer at `host:port` holds this connection's key, so that no one can
    /// list someone else's address ([`AddressChecks`]). `UNREACHABLE` if it does not; after
    /// [`MAX_FAILED_CHECKS`] failures on this connection, its registrations are refused
    /// unchecked.
    async fn check_address(
        &mut self,
        host: &str,
        port: u16,
        via: bool,
    ) -> Result<(), RequestError> {
        let target = crate::protocol::host::socket_addr(host, port)
            .map_err(|e| RequestError::refused(ErrorCode::BadRequest, e.to_string()))?;
        // The reply does not say what failed (refused, timed out, another key): the index
        // must not serve as a port scanner of hosts it can reach. Its log says.
        let unreachable = format!(
            "the index could not reach this peer at {target} holding its key; \
             the address must reach this peer's own port (see --advertise)"
        );
        let unreachable = match self.relay.can_relay(via) {
            true => unreachable,
            false => format!("{unreachable}; this index does not relay (--no-relay)"),
        };
        if self.failed_checks >= MAX_FAILED_CHECKS {
            return Err(RequestError::refused(
                ErrorCode::Unreachable,
                format!("{unreachable} (too many failed checks on this connection)"),
            ));
        }
        match self.checks.check(self.addr.ip(), target, self.key).await {
            Ok(()) => Ok(()),
            Err(CheckError::Busy) => Err(RequestError::refused(
                ErrorCode::Busy,
                "the index is checking other addresses; register again later",
            )),
            Err(CheckError::OutOfScope) => {
                self.failed_checks += 1;
                Err(RequestError::refused(
                    ErrorCode::Unreachable,
                    match self.relay.can_relay(via) {
                        true => {
                            format!("{target} is inside a network this peer does not connect from")
                        }
                        false => format!(
                            "{target} is inside a network this peer does not connect from; \
                             this index does not relay (--no-relay)"
                        ),
                    },
                ))
            }
            Err(CheckError::Failed(why)) => {
                self.failed_checks += 1;
                debug!(%target, peer = %self.addr, "address check failed: {why}");
                Err(RequestError::refused(ErrorCode::Unreachable, unreachable))
            }
        }
    }

    async fn update_files(&mut self, u: UpdateFiles) -> Result<Ack, RequestError> {
        let session = self.session()?;
        check_update(&u).map_err(|why| RequestError::refused(ErrorCode::BadRequest, why))?;
        let files = self
            .blocking(move |s| s.update_files(&session, &u, now_ms()))
            .await?;
        Ok(Ack {
            files,
            membership: None,
            revoked: None,
        })
    }

    async fn heartbeat(&mut self) -> Result<Ack, RequestError> {
        let session = self.session()?;
        self.blocking(move |s| s.heartbeat(&session, now_ms()))
            .await?;
        let mut ack = Ack {
            files: 0,
            membership: None,
            revoked: None,
        };
        if let Some(g) = self.group.clone() {
            let key = self.key;
            let Some((membership, revoked)) = self.blocking(move |s| g.renewal(s, &key)).await?
            else {
                let (code, why) = super::group::forbidden(true);
                return Err(RequestError::refused(code, why));
            };
            ack.membership = Some(membership);
            ack.revoked = Some(revoked);
        }
        Ok(ack)
    }

    async fn join(&mut self, j: Join) -> Result<Joined, RequestError> {
        let Some(g) = self.group.clone() else {
            return Err(RequestError::refused(
                ErrorCode::BadRequest,
                "this index is open: anyone may use it without joining",
            ));
        };
        // Each try is a write transaction: a connection gets a few, not a guessing loop.
        if self.failed_joins >= MAX_FAILED_JOINS {
            return Err(RequestError::refused(
                ErrorCode::Forbidden,
                "too many failed joins on this connection",
            ));
        }
        let key = self.key;
        match self.blocking(move |s| g.join(s, &key, &j.secret)).await? {
            Ok(joined) => {
                self.member = true;
                Ok(joined)
            }
            Err((code, why)) => {
                self.failed_joins += 1;
                Err(RequestError::refused(code, why))
            }
        }
    }

    async fn unregister(&mut self) -> Result<Ack, RequestError> {
        let session = self.session()?;
        self.blocking(move |s| s.unregister(&session)).await?;
        self.peer.end_relay_session();
        self.peer.session = None;
        self.metrics.unregistrations.inc();
        info!(peer_id = session.peer_id, "peer unregistered");
        Ok(Ack {
            files: 0,
            membership: None,
            revoked: None,
        })
    }

    /// Answers a `Browse` (§7.9) from SQLite on the blocking pool: its work is one range of
    /// the peer's files, read once.
    async fn browse(&self, b: Browse) -> Result<Listing, RequestError> {
        if b.limit == 0 || b.limit > MAX_BROWSE_LIMIT {
            return Err(RequestError::refused(
                ErrorCode::BadRequest,
                format!("limit {} is not within 1..={MAX_BROWSE_LIMIT}", b.limit),
            ));
        }
        let path = super::normalize_browse_path(&b.path).map_err(|why| {
            RequestError::refused(ErrorCode::BadRequest, format!("bad path: {why}"))
        })?;
        let live_since = now_ms() - self.lease_ms();
        // A first page reads a whole listing (up to MAX_BROWSE_BYTES): such reads share the
        // permits of long searches, so their memory is bounded too.
        let _permit = self.searches.acquire().await;
        let Browse {
            peer_id,
            recursive,
            offset,
            limit,
            ..
        } = b;
        self.blocking(move |s| s.browse(peer_id, &path, recursive, offset, limit, live_since))
            .await?
            .map_err(|super::BrowseRefused(code, why)| RequestError::refused(code, why))
    }

    /// Answers a search: from the cache when the same query was answered since the index last
    /// changed; a content id, or a word query that reads little of the index, inline; other
    /// word queries on the blocking pool, at most `searches` at a time.
    async fn search(&self, s: Search) -> Result<Bytes, RequestError> {
        let started = std::time::Instant::now();
        // A search refused before its query is read counts as words.
        let mut kind = QueryKind::Words;
        let r = self.search_answer(s, &mut kind).await;
        let outcome = match &r {
            Ok((_, true)) => SearchOutcome::Cached,
            Ok((_, false)) => SearchOutcome::Answered,
            Err(_) => SearchOutcome::Refused,
        };
        self.metrics.searches_of(kind).get(outcome).inc();
        if outcome != SearchOutcome::Refused {
            let seconds = started.elapsed().as_secs_f64();
            self.metrics.search_seconds.get(kind).observe(seconds);
        }
        r.map(|(payload, _)| payload)
    }

    /// [`Handler::search`]'s answer, and whether it came from the cache; sets `kind` to what
    /// the query asks for once it is read.
    async fn search_answer(
        &self,
        s: Search,
        kind: &mut QueryKind,
    ) -> Result<(Bytes, bool), RequestError> {
        if s.query.len() > MAX_QUERY_LEN {
            return Err(RequestError::refused(
                ErrorCode::BadRequest,
                "query too long",
            ));
        }
        if s.offset > MAX_SEARCH_OFFSET {
            return Err(RequestError::refused(
                ErrorCode::BadRequest,
                format!(
                    "offset {} is over the limit of {MAX_SEARCH_OFFSET}",
                    s.offset
                ),
            ));
        }
        let filters = s.filters();
        if let Err(e) = filters.check() {
            return Err(RequestError::refused(ErrorCode::BadRequest, e));
        }
        let limit = s.limit.clamp(1, MAX_SEARCH_LIMIT) as usize;
        let query = Query::with_filters(&s.query, filters);
        if let Query::Id(_) = query {
            *kind = QueryKind::ContentId;
        }
        let page = Page {
            offset: s.offset as usize,
            limit,
        };
        let store = &self.store;
        if let Some(hit) = store.cached_search(&query, page) {
            return Ok((hit, true));
        }
        let lease_ms = self.lease_ms();
        // A content id, or a word query that reads little of the index, is answered here, on
        // the connection's thread (handing it to another thread and back would cost more),
        // unless a writer holds the index right now: then it waits its turn on the blocking pool.
        if let Some(r) = store.try_search_here(&query, page, now_ms() - lease_ms) {
            return too_large_is_refused(r).map(|b| (b, false));
        }
        let _permit = self.searches.acquire().await;
        // Another connection may have answered the same query while this one waited.
        if let Some(hit) = store.cached_search(&query, page) {
            return Ok((hit, true));
        }
        let store = store.clone();
        let r = tokio::task::spawn_blocking(move || {
            store.search_payload(&query, page, now_ms() - lease_ms)
        })
        .await?;
        too_large_is_refused(r).map(|b| (b, false))
    }
}

/// The kind of a request, for the metrics.
fn request_kind(r: &IndexRequest) -> IndexRequestKind {
    match r {
        IndexRequest::Hello(_) => IndexRequestKind::Hello,
        IndexRequest::Join(_) => IndexRequestKind::Join,
        IndexRequest::Register(_) => IndexRequestKind::Register,
        IndexRequest::UpdateFiles(_) => IndexRequestKind::UpdateFiles,
        IndexRequest::Heartbeat => IndexRequestKind::Heartbeat,
        IndexRequest::Unregister => IndexRequestKind::Unregister,
        IndexRequest::Search(_) => IndexRequestKind::Search,
        IndexRequest::Browse(_) => IndexRequestKind::Browse,
        IndexRequest::ListPeers => IndexRequestKind::ListPeers,
        IndexRequest::Listen => IndexRequestKind::Listen,
        IndexRequest::RelayConnect(_) => IndexRequestKind::RelayConnect,
        IndexRequest::RelayAccept(_) => IndexRequestKind::RelayAccept,
    }
}

/// The error reply for a refused request.
fn refusal(e: &RequestError) -> Reply {
    Reply::Message(IndexReply::Error(ErrorReply::new(e.code(), e.to_string())))
}

/// A reply over the frame limit is answered with an error (the connection stays usable).
fn too_large_is_refused(r: Result<Bytes, ProtocolError>) -> Result<Bytes, RequestError> {
    r.map_err(|e| match e {
        ProtocolError::FrameTooLarge { .. } => RequestError::refused(
            ErrorCode::Internal,
            "reply too large; ask for fewer results",
        ),
        other => RequestError::refused(ErrorCode::Internal, format!("encoding the reply: {other}")),
    })
}

/// Checks a batch of file-list changes against the limits of PROTOCOL §4.
fn check_update(u: &UpdateFiles) -> Result<(), String> {
    let bad = |s: &str| s.is_empty() || s.len() > MAX_PATH_LEN || s.contains('\0');
    for f in &u.upsert {
        if bad(&f.path) || bad(&f.name) {
            return Err(format!("invalid path or name {:?}", f.path));
        }
        if f.path.rsplit('/').next() != Some(f.name.as_str()) {
            return Err(format!(
                "{:?}: the name {:?} is not the path's last component",
                f.path, f.name
            ));
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

/// The session a connection registered; when the connection ends without `Unregister`
/// (closed, timed out, dropped at shutdown), the store is told, so an ephemeral peer is
/// forgotten at once.
struct Authenticated {
    store: Arc<IndexStore>,
    session: Option<Session>,
    /// Told when the session ends, so it stops reaching the peer by this key.
    relay: RelayHub,
    key: Digest,
}

impl Authenticated {
    /// The relay forgets this session (unregistered, or forgotten by the store).
    fn end_relay_session(&self) {
        if let Some(s) = &self.session {
            self.relay.session_ended(&self.key, s.number);
        }
    }
}

impl Drop for Authenticated {
    fn drop(&mut self) {
        self.end_relay_session();
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
