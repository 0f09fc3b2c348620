//! `IndexClient`: one connection to an index server, for searching, listing peers and registering.

use std::time::Duration;

use std::sync::Arc;

use crate::content::Digest;
use crate::group::GroupState;
use crate::identity::Identity;
use crate::protocol::{
    Ack, Connection, ErrorReply, FileEntry, Frame, IndexReply, Join, Joined, Limits,
    MAX_CONTROL_PAYLOAD, Message, PeerList, ProtocolError, Register, Registered, Search,
    SearchResults, UpdateFiles, Welcome,
};
use crate::protocol::{Browse, Listing};
use crate::tls::{DialError, SecureStream, Tls, TlsError, dial};

/// Requests [`IndexClient::search_many`] keeps in flight.
pub const PIPELINE_WINDOW: usize = 64;

/// How long connecting to the index may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
/// Why a request to the index failed.
pub enum IndexClientError {
    #[error("cannot reach the index at {addr}: {source}")]
    /// No connection.
    Connect {
        /// The index's address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The secure channel could not be set up, or the index holds another key than expected.
    #[error("index at {addr}: {source}")]
    Secure {
        /// The index's address.
        addr: String,
        /// Why.
        source: TlsError,
    },
    #[error("index at {addr}: {source}")]
    /// The connection failed, or the index answered with an error.
    Protocol {
        /// The index's address.
        addr: String,
        /// What failed.
        source: ProtocolError,
    },
}

/// A connection to an index, after the handshake.
pub struct IndexClient {
    pub(super) conn: Connection<SecureStream>,
    welcome: Welcome,
    addr: String,
    key: Digest,
    /// Our key.
    own_key: Digest,
    /// Our group, when we are a member of a private one.
    group: Option<Arc<GroupState>>,
}

impl IndexClient {
    /// Connects to `addr` (`HOST:PORT`) as `tls`'s key (a fresh anonymous key if `None`), secures the connection, requiring the
    /// index to hold `expect` when given, and performs the opening exchange.
    pub async fn connect(
        addr: &str,
        tls: Option<&Tls>,
        expect: Option<Digest>,
        limits: Limits,
    ) -> Result<IndexClient, IndexClientError> {
        let handshake = CONNECT_TIMEOUT.min(limits.read_timeout);
        let (tls, secured) = dial(addr, tls, expect, CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|e| match e {
                DialError::Connect(source) => IndexClientError::Connect {
                    addr: addr.to_string(),
                    source,
                },
                DialError::Secure(source) => IndexClientError::Secure {
                    addr: addr.to_string(),
                    source,
                },
            })?;
        let key = secured.remote_key;
        let mut conn = Connection::new(secured.stream, limits);
        let welcome = conn
            // Our certificate goes to our group's index only.
            .client_handshake(
                tls.group()
                    .filter(|g| g.group() == key)
                    .and_then(|g| g.membership()),
            )
            .await
            .map_err(|source| IndexClientError::Protocol {
                addr: addr.to_string(),
                source,
            })?;
        // A private index renews a member's certificate on every connection (checked: only the
        // group's index can sign one), and says who was removed (taken from it alone).
        if let Some(group) = tls.group().filter(|g| g.group() == key) {
            if let Some(m) = &welcome.membership {
                group.renewed(m.clone(), &tls.public_key(), crate::query::now_ms());
            }
            if let Some(revoked) = &welcome.revoked {
                group.set_revoked(revoked.iter().copied());
            }
        }
        Ok(IndexClient {
            conn,
            welcome,
            addr: addr.to_string(),
            key,
            own_key: tls.public_key(),
            group: tls.group().cloned(),
        })
    }

    /// The key the index proved it holds.
    pub fn server_key(&self) -> Digest {
        self.key
    }

    /// The cipher suite of the connection, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub fn cipher_suite(&self) -> &'static str {
        crate::tls::suite_of(self.conn.get_ref())
    }

    pub(super) fn err(&self, source: ProtocolError) -> IndexClientError {
        IndexClientError::Protocol {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Sends a request and reads its reply, which must be an index reply (an `Error` is
    /// [`ProtocolError::Remote`]).
    pub(super) async fn call(&mut self, msg: &Message) -> Result<IndexReply, IndexClientError> {
        let reply = self.conn.request(msg).await.map_err(|e| self.err(e))?;
        IndexReply::try_from(reply).map_err(|e| self.err(e))
    }

    /// The files matching `query`, at most `limit`.
    pub async fn search(
        &mut self,
        query: &str,
        limit: u32,
    ) -> Result<SearchResults, IndexClientError> {
        self.search_with(Search {
            query: query.to_string(),
            limit,
            ..Search::default()
        })
        .await
    }

    /// Sends a search with filters or an offset ([`Search`]) and returns the reply.
    pub async fn search_with(&mut self, search: Search) -> Result<SearchResults, IndexClientError> {
        self.conn
            .send(&Message::Search(search))
            .await
            .map_err(|e| self.err(e))?;
        let frame = match self.conn.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(self.err(ProtocolError::Closed)),
            Err(e) => return Err(self.err(e)),
        };
        match Message::decode(frame) {
            Ok(Message::SearchResults(r)) => Ok(r),
            Ok(Message::Error(e)) => Err(self.err(ProtocolError::Remote(e))),
            Ok(other) => Err(self.err(ProtocolError::unexpected("SearchResults", other.name()))),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Sends many searches over this connection, up to [`PIPELINE_WINDOW`] in flight at once,
    /// and returns their results in order (one round trip per window, not per query); a search
    /// the index refused (an `Error` reply) fails alone.
    pub async fn search_many(
        &mut self,
        queries: &[String],
        limit: u32,
    ) -> Result<Vec<Result<SearchResults, ErrorReply>>, IndexClientError> {
        let mut out = Vec::with_capacity(queries.len());
        let mut sent = 0;
        while out.len() < queries.len() {
            while sent < queries.len() && sent - out.len() < PIPELINE_WINDOW {
                let msg = Message::Search(Search {
                    query: queries[sent].clone(),
                    limit,
                    ..Search::default()
                });
                self.conn.queue(&msg).await.map_err(|e| self.err(e))?;
                sent += 1;
            }
            self.conn.flush().await.map_err(|e| self.err(e))?;
            match self.conn.recv().await {
                Ok(Message::SearchResults(r)) => out.push(Ok(r)),
                Err(ProtocolError::Remote(e)) => out.push(Err(e)),
                Ok(other) => {
                    return Err(self.err(ProtocolError::unexpected("SearchResults", other.name())));
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(out)
    }

    /// Sends a search and returns the reply frame undecoded (for load generators, whose own
    /// decoding would otherwise cost more than the index's answer).
    pub async fn search_frame(
        &mut self,
        query: &str,
        limit: u32,
    ) -> Result<Frame, IndexClientError> {
        let msg = Message::Search(Search {
            query: query.to_string(),
            limit,
            ..Search::default()
        });
        self.conn.send(&msg).await.map_err(|e| self.err(e))?;
        match self.conn.read_frame().await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(self.err(ProtocolError::Closed)),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The peers registered (live or not).
    pub async fn list_peers(&mut self) -> Result<PeerList, IndexClientError> {
        match self.call(&Message::ListPeers).await? {
            IndexReply::PeerList(r) => Ok(r),
            other => Err(self.err(ProtocolError::unexpected("PeerList", other.name()))),
        }
    }

    /// One page of what peer `peer_id` shares under `path` (docs/PROTOCOL.md §7.9).
    pub async fn browse(&mut self, b: Browse) -> Result<Listing, IndexClientError> {
        match self.call(&Message::Browse(b)).await? {
            IndexReply::Listing(l) => Ok(l),
            other => Err(self.err(ProtocolError::unexpected("Listing", other.name()))),
        }
    }

    /// Registers this peer, signed with `identity`.
    pub async fn register(
        &mut self,
        identity: &Identity,
        host: &str,
        port: u16,
        catalog_digest: Digest,
        file_count: u64,
    ) -> Result<Registered, IndexClientError> {
        self.register_as(identity, host, port, catalog_digest, file_count, false)
            .await
    }

    /// Registers, saying whether this is a short-lived (ephemeral) peer.
    pub async fn register_as(
        &mut self,
        identity: &Identity,
        host: &str,
        port: u16,
        catalog_digest: Digest,
        file_count: u64,
        ephemeral: bool,
    ) -> Result<Registered, IndexClientError> {
        let r = self.register_message(identity, host, port, catalog_digest, file_count);
        self.send_register(Register { ephemeral, ..r }).await
    }

    /// Registers as `register` does, with `relay`: volunteering as a relay for the other
    /// members (`share --relay`, §7.10); `Registered.relay` says whether the index took it.
    pub async fn register_volunteer(
        &mut self,
        identity: &Identity,
        host: &str,
        port: u16,
        catalog_digest: Digest,
        file_count: u64,
    ) -> Result<Registered, IndexClientError> {
        let r = self.register_message(identity, host, port, catalog_digest, file_count);
        self.send_register(Register { relay: true, ..r }).await
    }

    /// A `Register` of a lasting peer that does not volunteer; it accepts relayed
    /// connections at a volunteer (`via`), as every build since volunteers does.
    fn register_message(
        &self,
        identity: &Identity,
        host: &str,
        port: u16,
        catalog_digest: Digest,
        file_count: u64,
    ) -> Register {
        Register {
            public_key: identity.public_key(),
            signature: identity.sign_register(&self.welcome.nonce),
            host: host.to_string(),
            port,
            catalog_digest,
            file_count,
            ephemeral: false,
            relay: false,
            via: true,
        }
    }

    async fn send_register(&mut self, r: Register) -> Result<Registered, IndexClientError> {
        match self.call(&Message::Register(r)).await? {
            IndexReply::Registered(r) => Ok(r),
            other => Err(self.err(ProtocolError::unexpected("Registered", other.name()))),
        }
    }

    async fn update(&mut self, u: UpdateFiles) -> Result<Ack, IndexClientError> {
        match self.call(&Message::UpdateFiles(u)).await? {
            IndexReply::Ack(a) => Ok(a),
            other => Err(self.err(ProtocolError::unexpected("Ack", other.name()))),
        }
    }

    /// Sends file changes in as many batches as the frame limit needs. Every batch commits on
    /// its own; only the last one carries `digest`, so an interrupted sync leaves the index
    /// knowing it is out of date. Returns the file count the index holds afterwards.
    pub async fn sync_files(
        &mut self,
        reset: bool,
        upsert: Vec<FileEntry>,
        remove: Vec<String>,
        digest: Digest,
    ) -> Result<u64, IndexClientError> {
        let budget = MAX_CONTROL_PAYLOAD * 3 / 4;
        let mut batch = UpdateFiles {
            reset,
            upsert: Vec::new(),
            remove: Vec::new(),
            digest: None,
        };
        let mut used = 0;
        for path in remove {
            used += path.len() + 8;
            batch.remove.push(path);
            if used > budget {
                let next = UpdateFiles {
                    reset: false,
                    ..empty_update()
                };
                self.update(std::mem::replace(&mut batch, next)).await?;
                used = 0;
            }
        }
        for f in upsert {
            used += f.path.len() + f.name.len() + f.have.as_ref().map_or(0, Vec::len) + 128;
            batch.upsert.push(f);
            if used > budget {
                self.update(std::mem::replace(&mut batch, empty_update()))
                    .await?;
                used = 0;
            }
        }
        batch.digest = Some(digest);
        Ok(self.update(batch).await?.files)
    }

    /// Renews this session's lease.
    pub async fn heartbeat(&mut self) -> Result<(), IndexClientError> {
        match self.call(&Message::Heartbeat).await? {
            IndexReply::Ack(ack) => {
                // A private index renews our certificate and lists the keys it removed.
                // Only the group's own index says who was removed.
                if let Some(group) = self.group.as_ref().filter(|g| g.group() == self.key) {
                    if let Some(m) = ack.membership {
                        group.renewed(m, &self.own_key, crate::query::now_ms());
                    }
                    if let Some(revoked) = ack.revoked {
                        group.set_revoked(revoked);
                    }
                }
                Ok(())
            }
            other => Err(self.err(ProtocolError::unexpected("Ack", other.name()))),
        }
    }

    /// Joins the index's private group with an invite's secret; returns our certificate (also
    /// kept by our group state, if any) and the group's DHT secret.
    pub async fn join(&mut self, secret: &[u8; 32]) -> Result<Joined, IndexClientError> {
        let msg = Message::Join(Join {
            secret: secret.to_vec(),
        });
        match self.call(&msg).await? {
            IndexReply::Joined(j) => {
                if let Some(group) = &self.group {
                    group.renewed(j.membership.clone(), &self.own_key, crate::query::now_ms());
                }
                Ok(j)
            }
            other => Err(self.err(ProtocolError::unexpected("Joined", other.name()))),
        }
    }

    /// The `Welcome` the index answered with (a private index's certificate for us in it).
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Ends this session: the index drops the peer from results.
    pub async fn unregister(&mut self) -> Result<(), IndexClientError> {
        match self.call(&Message::Unregister).await? {
            IndexReply::Ack(_) => Ok(()),
            other => Err(self.err(ProtocolError::unexpected("Ack", other.name()))),
        }
    }
}

fn empty_update() -> UpdateFiles {
    UpdateFiles {
        reset: false,
        upsert: Vec::new(),
        remove: Vec::new(),
        digest: None,
    }
}
