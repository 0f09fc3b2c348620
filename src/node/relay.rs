//! A sharing node the index cannot reach: its control channel to the index (`Listen`), kept
//! alive with heartbeats and reopened when it fails, and the relayed connections it accepts
//! when the index announces one (`Incoming`), served by its peer server with the peers' own
//! TLS inside (docs/PROTOCOL.md §7.10).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ShareStatus;
use crate::content::Digest;
use crate::identity::Fingerprint;
use crate::index::{
    ControlEvent, IndexClient, IndexClientError, LISTEN_KEEPALIVE, RELAY_PENDING_TIMEOUT,
};
use crate::peer::PeerServer;
use crate::protocol::Limits;
use crate::protocol::relay::{Incoming, incoming_kind, reach};
use crate::tls::{PeerStream, Tls};

/// Relayed connections a sharing node serves at once; an `Incoming` beyond it is ignored
/// (the requester's wait times out at the index).
pub const MAX_RELAYED_SERVED: usize = 32;
/// How long a sharing node waits for the `Ack` of a control channel's heartbeat before it
/// takes the channel for dead and opens another.
pub const LISTEN_ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest wait before reopening a control channel after failures.
const REOPEN_MAX: Duration = Duration::from_secs(30);

/// What a node's control channel needs.
pub(super) struct RelayListener {
    pub index: String,
    pub index_key: Option<Digest>,
    pub tls: Tls,
    pub server: PeerServer,
    pub limits: Limits,
    pub status: Arc<watch::Sender<ShareStatus>>,
    pub shutdown: CancellationToken,
}

impl RelayListener {
    /// Keeps a control channel open while the index says this node is reached through its
    /// relay, until shutdown.
    pub async fn run(self) {
        let mut status = self.status.subscribe();
        let served = Arc::new(Semaphore::new(MAX_RELAYED_SERVED));
        let mut wait = Duration::from_millis(500);
        loop {
            let relayed = |s: &ShareStatus| s.reach.as_deref() == Some(reach::RELAY);
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = status.wait_for(relayed) => if r.is_err() { return },
            }
            // The index key pinned by the registration, once it connected.
            let key = self.status.borrow().index_key.or(self.index_key);
            let stopped = async {
                let _ = status.wait_for(|s| !relayed(s)).await;
            };
            let r = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                () = stopped => Ok(()),
                r = self.channel(key, &served) => r,
            };
            self.status.send_modify(|s| s.listening = false);
            if let Err(e) = r {
                warn!(
                    "control channel to index {}: {e}; reopening in {wait:?}",
                    self.index
                );
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(REOPEN_MAX);
            } else {
                wait = Duration::from_millis(500);
            }
        }
    }

    /// One control channel, until it fails.
    async fn channel(
        &self,
        index_key: Option<Digest>,
        served: &Arc<Semaphore>,
    ) -> Result<(), IndexClientError> {
        let client =
            IndexClient::connect(&self.index, Some(&self.tls), index_key, self.limits).await?;
        let index_key = client.server_key();
        let mut channel = client.listen().await?;
        info!(
            "listening for relayed connections through index {}",
            self.index
        );
        self.status.send_modify(|s| s.listening = true);
        let mut beat = tokio::time::interval(LISTEN_KEEPALIVE);
        beat.tick().await;
        let mut unanswered: Option<tokio::time::Instant> = None;
        loop {
            let ack_due = unanswered.map(|t| t + LISTEN_ACK_TIMEOUT);
            tokio::select! {
                _ = beat.tick() => {
                    channel.heartbeat().await?;
                    unanswered.get_or_insert_with(tokio::time::Instant::now);
                }
                () = sleep_until_some(ack_due) => {
                    return Err(IndexClientError::Protocol {
                        addr: self.index.clone(),
                        source: crate::protocol::ProtocolError::Timeout {
                            secs: LISTEN_ACK_TIMEOUT.as_secs(),
                        },
                    });
                }
                e = channel.next() => match e? {
                    ControlEvent::Ack => unanswered = None,
                    ControlEvent::Incoming(i) => self.incoming(i, index_key, served),
                },
            }
        }
    }

    /// An `Incoming`: accepts a relay request in its own task (within
    /// [`MAX_RELAYED_SERVED`]); other kinds are for other builds, and ignored.
    fn incoming(&self, i: Incoming, index_key: Digest, served: &Arc<Semaphore>) {
        if i.kind != incoming_kind::RELAY {
            debug!(kind = %crate::text::Escaped(&i.kind), "ignoring an Incoming of a kind this build does not know");
            return;
        }
        let Ok(permit) = served.clone().try_acquire_owned() else {
            warn!(
                "ignoring a relay request: {MAX_RELAYED_SERVED} relayed connections served already"
            );
            return;
        };
        let (index, tls, server, limits, shutdown) = (
            self.index.clone(),
            self.tls.clone(),
            self.server.clone(),
            self.limits,
            self.shutdown.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let from = Fingerprint(i.from);
            match accept(&index, index_key, &tls, &server, limits, i, shutdown).await {
                Ok(()) => debug!(%from, "relayed connection closed"),
                Err(e) => info!(%from, "relayed connection: {e}"),
            }
        });
    }
}

async fn sleep_until_some(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Accepts one relay request: a new connection to the index, `RelayAccept`, then the peer
/// protocol's TLS as the server, requiring the key that asked, and the peer server's usual
/// handling (membership in a private group included).
async fn accept(
    index: &str,
    index_key: Digest,
    tls: &Tls,
    server: &PeerServer,
    limits: Limits,
    i: Incoming,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let client = IndexClient::connect(index, Some(tls), Some(index_key), limits)
        .await
        .map_err(|e| e.to_string())?;
    let index_addr = client
        .stream()
        .get_ref()
        .0
        .peer_addr()
        .map_err(|e| e.to_string())?;
    let (io, relayed) = client
        .relay_accept(i.token, RELAY_PENDING_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if relayed.peer != i.from {
        return Err("the index relayed another key than it announced".into());
    }
    let handshake = crate::protocol::HANDSHAKE_TIMEOUT;
    let (stream, key) = tls
        .accept_over(io, handshake)
        .await
        .map_err(|e| format!("TLS inside the relay: {e}"))?;
    // The index vouches for the key that asked; the TLS inside proves it end to end.
    if key != relayed.peer {
        return Err(format!(
            "the relayed peer proved {}, not the key {} the index announced",
            Fingerprint(key),
            Fingerprint(relayed.peer)
        ));
    }
    let addr: SocketAddr = relayed
        .addr
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or(index_addr);
    let stream = PeerStream::Relayed(Box::new(tokio_rustls::TlsStream::Server(stream)));
    server
        .serve_relayed(stream, addr, key, shutdown)
        .await
        .map_err(|e| e.to_string())
}
