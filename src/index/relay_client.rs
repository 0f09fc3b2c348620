//! The peers' side of rendezvous and relay (docs/PROTOCOL.md §7.10) on an [`IndexClient`]:
//! a control channel (`Listen`, then `Incoming` pushed by the index), and the two ends of a
//! relayed connection (`RelayConnect` and `RelayAccept`, each answered `Relayed`, or
//! `RelayVia` when a volunteer carries it).

use std::time::Duration;

use super::{IndexClient, IndexClientError};
use crate::protocol::relay::{Incoming, RelayAccept, RelayConnect, RelayToken, RelayVia, Relayed};
use crate::protocol::{IndexReply, Message, ProtocolError};
use crate::tls::{RelayIo, SecureStream};

/// How the index answered a `RelayConnect`.
// Made once per relay request and taken apart at once: the stream stays unboxed, as in
// `PeerStream`.
#[allow(clippy::large_enum_variant)]
pub enum RelayRouted {
    /// It relays the connection itself: the stream carries the peer's bytes.
    Here(RelayIo, Relayed),
    /// A volunteer carries it: go there. The index connection, for another request.
    Via(Box<IndexClient>, RelayVia),
}

/// What a control channel brings.
#[derive(Debug)]
pub enum ControlEvent {
    /// The answer to a `Heartbeat`.
    Ack,
    /// Someone wants to reach this peer.
    Incoming(Incoming),
}

/// An open control channel: send [`ControlChannel::heartbeat`] every
/// [`LISTEN_KEEPALIVE`](super::LISTEN_KEEPALIVE), read [`ControlChannel::next`].
pub struct ControlChannel {
    client: IndexClient,
}

impl ControlChannel {
    /// Sends a keepalive (answered by an [`ControlEvent::Ack`]).
    pub async fn heartbeat(&mut self) -> Result<(), IndexClientError> {
        let c = &mut self.client;
        c.conn.send(&Message::Heartbeat).await.map_err(|e| c.err(e))
    }

    /// The next event. Cancel-safe.
    pub async fn next(&mut self) -> Result<ControlEvent, IndexClientError> {
        let c = &mut self.client;
        let m = c.conn.recv().await.map_err(|e| c.err(e))?;
        match IndexReply::try_from(m).map_err(|e| c.err(e))? {
            IndexReply::Ack(_) => Ok(ControlEvent::Ack),
            IndexReply::Incoming(i) => Ok(ControlEvent::Incoming(i)),
            other => Err(c.err(ProtocolError::unexpected("Incoming", other.name()))),
        }
    }
}

impl IndexClient {
    /// Opens this connection as the control channel of the key it was made with, which must
    /// be registered (on another connection).
    pub async fn listen(mut self) -> Result<ControlChannel, IndexClientError> {
        match self.call(&Message::Listen).await? {
            IndexReply::Ack(_) => Ok(ControlChannel { client: self }),
            other => Err(self.err(ProtocolError::unexpected("Ack", other.name()))),
        }
    }

    /// Asks for a relayed connection to a peer. Once the index answers `Relayed`, the
    /// connection carries the peer's bytes (run the peer protocol's TLS over it); when it
    /// answers `RelayVia`, a volunteer carries it, and this connection stays usable for
    /// another request. Waits at most `wait` for the peer to accept (the index gives up
    /// first, with an error).
    pub async fn relay_connect(
        mut self,
        rc: RelayConnect,
        wait: Duration,
    ) -> Result<RelayRouted, IndexClientError> {
        let reply = match tokio::time::timeout(wait, self.call(&Message::RelayConnect(rc))).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(self.err(ProtocolError::Timeout {
                    secs: wait.as_secs(),
                }));
            }
        };
        match reply {
            IndexReply::Relayed(r) => {
                let (stream, rest, _) = self.conn.into_parts();
                Ok(RelayRouted::Here(RelayIo::new(stream, rest), r))
            }
            IndexReply::RelayVia(via) => Ok(RelayRouted::Via(Box::new(self), via)),
            other => Err(self.err(ProtocolError::unexpected("Relayed", other.name()))),
        }
    }

    /// Accepts the relay request `token` announced by an `Incoming`.
    pub async fn relay_accept(
        self,
        token: RelayToken,
        wait: Duration,
    ) -> Result<(RelayIo, Relayed), IndexClientError> {
        self.relayed(Message::RelayAccept(RelayAccept { token }), wait)
            .await
    }

    async fn relayed(
        mut self,
        msg: Message,
        wait: Duration,
    ) -> Result<(RelayIo, Relayed), IndexClientError> {
        let reply = match tokio::time::timeout(wait, self.call(&msg)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(self.err(ProtocolError::Timeout {
                    secs: wait.as_secs(),
                }));
            }
        };
        match reply {
            IndexReply::Relayed(r) => {
                let (stream, rest, _) = self.conn.into_parts();
                Ok((RelayIo::new(stream, rest), r))
            }
            other => Err(self.err(ProtocolError::unexpected("Relayed", other.name()))),
        }
    }

    /// The stream of this connection (for its peer address).
    pub fn stream(&self) -> &SecureStream {
        self.conn.get_ref()
    }
}
