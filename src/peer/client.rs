//! `PeerClient`: one connection to another peer, asking for a file's info, piece hashes and pieces.

use std::time::Duration;

use crate::content::{ContentId, Digest, MAX_FILE_SIZE, PIECE_HASH_LEN, PIECE_SIZE};
use crate::protocol::relay::{RelayAccept, RelayToken, Relayed};
use crate::protocol::{
    CatalogQuery, CatalogResults, Connection, GetHashes, GetHave, GetInfo, GetPiece, Have, Info,
    Limits, MAX_HASHES_PER_REPLY, Message, PeerReply, Piece, ProtocolError, feature,
};
use crate::tls::quic::{QuicStream, Role};
use crate::tls::{DialError, PeerStream, RelayIo, Tls, TlsError, dial};

/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerClientError {
    /// No connection.
    #[error("cannot reach peer {}: {source}", crate::text::Escaped(.addr))]
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// In a private group: the peer is not a member of ours.
    #[error("peer {} is not a member of this group: {source}", crate::text::Escaped(.addr))]
    NotMember {
        /// The address tried.
        addr: String,
        /// Why.
        source: crate::group::AdmitError,
    },
    /// The secure channel could not be set up, or the peer holds another key than expected.
    #[error("peer {}: {source}", crate::text::Escaped(.addr))]
    Secure {
        /// The address tried.
        addr: String,
        /// Why.
        source: TlsError,
    },
    /// The connection failed, or the peer answered with an error.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The peer answered about another file.
    #[error("peer sent info for {received}, asked for {expected}")]
    WrongFile {
        /// The file asked about.
        expected: ContentId,
        /// The file answered about.
        received: ContentId,
    },
    /// The peer offers a file over [`MAX_FILE_SIZE`].
    #[error("peer offers a file of {received} bytes; the limit is {max}")]
    TooLarge {
        /// The limit.
        max: u64,
        /// The size offered.
        received: u64,
    },
    /// The peer uses another piece size than [`PIECE_SIZE`].
    #[error("peer uses pieces of {received} bytes; this version needs {expected}")]
    PieceSize {
        /// [`PIECE_SIZE`].
        expected: u64,
        /// The peer's.
        received: u64,
    },
    /// The peer sent more piece hashes than asked for.
    #[error("peer sent {received} bytes of piece hashes from {start}, expected at most {expected}")]
    BadHashes {
        /// The first piece asked for.
        start: u32,
        /// Bytes expected at most.
        expected: usize,
        /// Bytes received.
        received: usize,
    },
    /// The peer did not agree to the feature this request needs (an older peer).
    #[error("the peer does not support {feature:?}")]
    Unsupported {
        /// The feature ([`crate::protocol::feature`]).
        feature: &'static str,
    },
}

/// How a connection reached its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    /// Straight to the address the peer listed.
    Direct,
    /// Over UDP after a hole punch coordinated by the index (§7.11).
    Punched,
}

/// A connection to a peer, after the handshake.
pub struct PeerClient {
    /// How it reached the peer.
    reach: Reach,
    /// The relay that carries the connection (`IP:PORT`), when relayed.
    relay: Option<String>,
    conn: Connection<PeerStream>,
    /// The features usable on this connection (see [`PeerClient::connect`]).
    features: Vec<&'static str>,
    /// The key the peer proved it holds.
    key: Digest,
}

impl PeerClient {
    /// Connects to a peer at `addr` (an IP address and port) as `tls`'s key (a fresh anonymous key if `None`), secures the
    /// connection, requiring the peer to hold `expect` when given, and says `Hello`.
    pub async fn connect(
        addr: &str,
        tls: Option<&Tls>,
        expect: Option<Digest>,
        limits: Limits,
    ) -> Result<PeerClient, PeerClientError> {
        let err = |source| PeerClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        // Peers' addresses come from the network: an IP literal and a port, never a name for
        // the system resolver to look up.
        let ip: std::net::SocketAddr = addr.parse().map_err(|_| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an IP address and port",
            ))
        })?;
        let handshake = CONNECT_TIMEOUT.min(limits.read_timeout);
        let (tls, secured) = dial(&ip.to_string(), tls, expect, CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|e| match e {
                DialError::Connect(source) => err(source),
                DialError::Secure(source) => PeerClientError::Secure {
                    addr: addr.to_string(),
                    source,
                },
            })?;
        let stream = PeerStream::Direct(secured.stream);
        PeerClient::over(stream, secured.remote_key, &tls, limits, addr).await
    }

    /// Connects to a peer at `addr` over QUIC (§1.2) from `endpoint`, as [`PeerClient::connect`]
    /// does over TCP (a fresh anonymous key if `tls` is `None`).
    pub async fn connect_quic(
        endpoint: &quinn::Endpoint,
        addr: std::net::SocketAddr,
        tls: Option<&Tls>,
        expect: Option<Digest>,
        limits: Limits,
    ) -> Result<PeerClient, PeerClientError> {
        let name = addr.to_string();
        let secure = |source| PeerClientError::Secure {
            addr: name.clone(),
            source,
        };
        let tls = Tls::or_ephemeral(tls).map_err(secure)?;
        let handshake = CONNECT_TIMEOUT.min(limits.read_timeout);
        let (conn, key) = tls
            .connect_quic(endpoint, addr, expect, Role::Client, handshake)
            .await
            .map_err(secure)?;
        let stream = QuicStream::open(conn)
            .await
            .map_err(|source| PeerClientError::Connect {
                addr: name.clone(),
                source,
            })?;
        PeerClient::over(PeerStream::Quic(stream), key, &tls, limits, &name).await
    }

    /// Says `Hello` on a connection secured with `key`'s peer (`addr` names it in errors):
    /// direct, or through a relay (§7.10).
    pub async fn over(
        stream: PeerStream,
        key: Digest,
        tls: &Tls,
        limits: Limits,
        addr: &str,
    ) -> Result<PeerClient, PeerClientError> {
        let mut conn = Connection::new(stream, limits);
        let welcome = conn.client_handshake(tls.membership()).await?;
        // In a private group, a source must be a member too (one found through the DHT has
        // no other check; one the index listed may have been removed since).
        if let Some(group) = tls.group() {
            group
                .admit(welcome.membership.as_ref(), &key, crate::query::now_ms())
                .map_err(|source| PeerClientError::NotMember {
                    addr: addr.to_string(),
                    source,
                })?;
        }
        // A `Welcome` with no features comes from a build made before them, when `GetHave`
        // and `CatalogQuery` were plain version 1 messages (a current peer agrees to every
        // feature we ask for). Names we did not ask for are ignored.
        let features = match welcome.features.is_empty() {
            true => feature::ALL.to_vec(),
            false => feature::ALL
                .into_iter()
                .filter(|f| welcome.features.iter().any(|w| w == f))
                .collect(),
        };
        Ok(PeerClient {
            reach: Reach::Direct,
            relay: None,
            conn,
            features,
            key,
        })
    }

    /// The key the peer proved it holds.
    pub fn key(&self) -> Digest {
        self.key
    }

    /// The TLS cipher suite of the connection, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub fn cipher_suite(&self) -> &'static str {
        self.conn.get_ref().cipher_suite()
    }

    /// How the connection reached the peer.
    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// Records how the connection reached the peer.
    pub fn set_reach(&mut self, reach: Reach) {
        self.reach = reach;
    }

    /// The relay that carries the connection (`IP:PORT`: the index's, or a volunteer's),
    /// when relayed.
    pub fn relay(&self) -> Option<&str> {
        self.relay.as_deref()
    }

    /// Records the relay that carries the connection.
    pub fn set_relay(&mut self, relay: String) {
        self.relay = Some(relay);
    }

    /// Whether the connection runs over the UDP transport (QUIC).
    pub fn is_quic(&self) -> bool {
        self.conn.get_ref().is_quic()
    }

    /// Whether the connection goes through a relay (§7.10).
    pub fn is_relayed(&self) -> bool {
        self.conn.get_ref().is_relayed()
    }

    /// Whether the peer agreed to use `feature` ([`crate::protocol::feature`]) on this connection.
    pub fn supports(&self, feature: &str) -> bool {
        self.features.contains(&feature)
    }

    fn require(&self, feature: &'static str) -> Result<(), PeerClientError> {
        match self.supports(feature) {
            true => Ok(()),
            false => Err(PeerClientError::Unsupported { feature }),
        }
    }

    /// Sends a request and reads its reply, which must be a peer reply (an `Error` is
    /// [`ProtocolError::Remote`]).
    async fn ask(&mut self, request: &Message) -> Result<PeerReply, PeerClientError> {
        Ok(PeerReply::try_from(self.conn.request(request).await?)?)
    }

    /// Sends `RelayAccept {token}` to a member volunteering as a relay (§7.10) and waits at
    /// most `wait` for its `Relayed`: from then on the connection carries the other end's
    /// bytes (run the peers' own TLS over the stream returned). Over TCP only.
    pub async fn relay_accept(
        mut self,
        token: RelayToken,
        wait: Duration,
    ) -> Result<(RelayIo, Relayed), PeerClientError> {
        let msg = Message::RelayAccept(RelayAccept { token });
        let reply = tokio::time::timeout(wait, self.ask(&msg))
            .await
            .map_err(|_| ProtocolError::Timeout {
                secs: wait.as_secs(),
            })??;
        let PeerReply::Relayed(relayed) = reply else {
            return Err(ProtocolError::unexpected("Relayed", reply.name()).into());
        };
        match self.conn.into_parts() {
            (PeerStream::Direct(stream), rest, _) => Ok((RelayIo::new(stream, rest), relayed)),
            _ => Err(ProtocolError::Refused("a relay is reached over TCP only".into()).into()),
        }
    }

    /// What the peer says of a file: size, piece size, name (checked against our limits).
    pub async fn info(&mut self, id: ContentId) -> Result<Info, PeerClientError> {
        match self
            .ask(&Message::GetInfo(GetInfo { content_id: id }))
            .await?
        {
            PeerReply::Info(i) if i.content_id != id => Err(PeerClientError::WrongFile {
                expected: id,
                received: i.content_id,
            }),
            PeerReply::Info(i) if u64::from(i.piece_size) != PIECE_SIZE => {
                Err(PeerClientError::PieceSize {
                    expected: PIECE_SIZE,
                    received: u64::from(i.piece_size),
                })
            }
            PeerReply::Info(i) if i.size > MAX_FILE_SIZE => Err(PeerClientError::TooLarge {
                max: MAX_FILE_SIZE,
                received: i.size,
            }),
            PeerReply::Info(i) => Ok(i),
            other => Err(ProtocolError::unexpected("Info", other.name()).into()),
        }
    }

    /// One `GetHashes` reply: up to `count` piece hashes from `start`, concatenated and
    /// unverified (check them with [`crate::content::HashFetch`]). Fails unless the reply
    /// starts at `start` and holds 1 to `count` whole hashes.
    pub async fn hashes(
        &mut self,
        id: ContentId,
        start: u32,
        count: u32,
    ) -> Result<Vec<u8>, PeerClientError> {
        let count = count.min(MAX_HASHES_PER_REPLY);
        let req = Message::GetHashes(GetHashes {
            content_id: id,
            start,
            count,
        });
        match self.ask(&req).await? {
            PeerReply::Hashes(h)
                if h.start == start
                    && !h.hashes.is_empty()
                    && h.hashes.len().is_multiple_of(PIECE_HASH_LEN)
                    && h.hashes.len() <= count as usize * PIECE_HASH_LEN =>
            {
                Ok(h.hashes)
            }
            PeerReply::Hashes(h) => Err(PeerClientError::BadHashes {
                start,
                expected: count as usize * PIECE_HASH_LEN,
                received: h.hashes.len(),
            }),
            other => Err(ProtocolError::unexpected("Hashes", other.name()).into()),
        }
    }

    /// Which pieces the peer can send now (all of them, unless it is still downloading).
    /// [`PeerClientError::Unsupported`] if the peer did not agree to [`feature::HAVE`].
    pub async fn have(&mut self, id: ContentId) -> Result<Have, PeerClientError> {
        self.require(feature::HAVE)?;
        match self
            .ask(&Message::GetHave(GetHave { content_id: id }))
            .await?
        {
            PeerReply::Have(h) if h.content_id == id => Ok(h),
            PeerReply::Have(h) => Err(PeerClientError::WrongFile {
                expected: id,
                received: h.content_id,
            }),
            other => Err(ProtocolError::unexpected("Have", other.name()).into()),
        }
    }

    /// The peer's shared files that match the query (with its filters);
    /// [`PeerClientError::Unsupported`] if the peer did not agree to [`feature::CATALOG`].
    pub async fn catalog_query(
        &mut self,
        query: CatalogQuery,
    ) -> Result<CatalogResults, PeerClientError> {
        self.require(feature::CATALOG)?;
        let q = Message::CatalogQuery(query);
        match self.ask(&q).await? {
            PeerReply::CatalogResults(r) => Ok(r),
            other => Err(ProtocolError::unexpected("CatalogResults", other.name()).into()),
        }
    }

    /// Queues a piece request (sent on the next flush); replies come back in request order.
    pub async fn request_piece(
        &mut self,
        id: ContentId,
        index: u32,
    ) -> Result<(), PeerClientError> {
        let req = Message::GetPiece(GetPiece {
            content_id: id,
            index,
        });
        Ok(self.conn.queue(&req).await?)
    }

    /// Sends the queued piece requests.
    pub async fn flush(&mut self) -> Result<(), PeerClientError> {
        Ok(self.conn.flush().await?)
    }

    /// The next piece reply. Cancel-safe.
    pub async fn next_piece(&mut self) -> Result<Piece, PeerClientError> {
        match PeerReply::try_from(self.conn.recv().await?)? {
            PeerReply::Piece(p) => Ok(p),
            other => Err(ProtocolError::unexpected("Piece", other.name()).into()),
        }
    }
}
