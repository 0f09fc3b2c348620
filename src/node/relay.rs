//! A sharing node the index cannot reach, or one volunteering as a relay: its control channel
//! to the index (`Listen`), kept alive with heartbeats and reopened when it fails; the relayed
//! connections it accepts when the index announces one (`Incoming`), at the index or at the
//! volunteer the index names, served by its peer server with the peers' own TLS inside; and,
//! as a volunteer, the connections the index asks it to carry (docs/PROTOCOL.md §7.10).

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
use crate::peer::{PeerClient, PeerServer, RelayDesk};
use crate::protocol::Limits;
use crate::protocol::relay::{CARRY_TIMEOUT, Incoming, incoming_kind, reach};
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
    /// Set when this node volunteers as a relay.
    pub desk: Option<RelayDesk>,
    pub limits: Limits,
    pub status: Arc<watch::Sender<ShareStatus>>,
    pub shutdown: CancellationToken,
}

impl RelayListener {
    /// Keeps a control channel open while the index says this node is reached through a
    /// relay, took it as a volunteer relay, or reaches it at a private address, until
    /// shutdown.
    pub async fn run(self) {
        let mut status = self.status.subscribe();
        let served = Arc::new(Semaphore::new(MAX_RELAYED_SERVED));
        let mut wait = Duration::from_millis(500);
        loop {
            let relayed = |s: &ShareStatus| {
                s.reach.as_deref() == Some(reach::RELAY)
                    || s.volunteer == Some(true)
                    || at_a_private_address(s)
            };
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
    /// [`MAX_RELAYED_SERVED`]), or takes a volunteer's carry order; other kinds are for other
    /// builds, and ignored.
    fn incoming(&self, i: Incoming, index_key: Digest, served: &Arc<Semaphore>) {
        if i.kind == incoming_kind::CARRY {
            match &self.desk {
                Some(desk) => {
                    if let Err(why) = desk.order(&i) {
                        warn!("not carrying a relayed connection for the index: {why}");
                    }
                }
                None => debug!("ignoring a carry order: this node does not volunteer as a relay"),
            }
            return;
        }
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

/// Whether the index reached this node at a private address (RFC 1918, shared, link-local,
/// unique local): an index on the node's own LAN does, while peers outside that LAN cannot
/// connect there, and reach it through the relay instead when it listens.
fn at_a_private_address(s: &ShareStatus) -> bool {
    s.reach.as_deref() == Some(reach::DIRECT)
        && s.reachable_at
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .is_some_and(|a| !a.ip().is_loopback() && !crate::index::is_public(a.ip()))
}

async fn sleep_until_some(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Accepts one relay request: a new connection to the index (or to the volunteer relay the
/// `Incoming` names, requiring its key), `RelayAccept`, then the peer protocol's TLS as the
/// server, requiring the key that asked, and the peer server's usual handling (membership in
/// a private group included).
async fn accept(
    index: &str,
    index_key: Digest,
    tls: &Tls,
    server: &PeerServer,
    limits: Limits,
    i: Incoming,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (io, relayed, relay_addr) = match (&i.via, i.via_key) {
        (Some(via), Some(via_key)) => {
            let relay_addr: SocketAddr = via.parse().map_err(|_| {
                format!("the index named a volunteer relay at {via:?}, not IP:PORT")
            })?;
            let client = PeerClient::connect(via, Some(tls), Some(via_key), limits)
                .await
                .map_err(|e| e.to_string())?;
            let (io, relayed) = client
                .relay_accept(i.token, CARRY_TIMEOUT)
                .await
                .map_err(|e| format!("volunteer relay at {via}: {e}"))?;
            (io, relayed, relay_addr)
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err("the index named a volunteer relay without its address and key".into());
        }
        (None, None) => {
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
            (io, relayed, index_addr)
        }
    };
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
        .unwrap_or(relay_addr);
    let stream = PeerStream::Relayed(Box::new(tokio_rustls::TlsStream::Server(stream)));
    server
        .serve_relayed(stream, addr, key, shutdown)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{Catalog, PeerConfig};

    /// An `Incoming` of a kind this build does not know is ignored (a newer index may send
    /// one, e.g. for hole punching): nothing is started for it, while a relay request takes
    /// one of the relayed connections served (here it then fails: no index there).
    #[tokio::test]
    async fn unknown_incoming_kinds_are_ignored() {
        let tls = Tls::ephemeral().unwrap();
        let (_catalog_tx, catalog) = watch::channel(Arc::new(Catalog::new(Vec::new())));
        let server = PeerServer::new(
            catalog,
            Vec::new(),
            PeerConfig::default(),
            Arc::new(tokio::sync::Notify::new()),
            tls.clone(),
        );
        let (status, _) = watch::channel(ShareStatus::default());
        let listener = RelayListener {
            // Nothing listens on port 1.
            index: "127.0.0.1:1".into(),
            index_key: None,
            tls,
            server,
            desk: None,
            limits: Limits::default(),
            status: Arc::new(status),
            shutdown: CancellationToken::new(),
        };
        let served = Arc::new(Semaphore::new(MAX_RELAYED_SERVED));
        let incoming = |kind: &str| Incoming {
            token: crate::protocol::relay::RelayToken([1; 16]),
            from: Digest([2; 32]),
            kind: kind.into(),
            to: None,
            via: None,
            via_key: None,
        };
        listener.incoming(incoming("punch"), Digest([3; 32]), &served);
        listener.incoming(incoming(""), Digest([3; 32]), &served);
        assert_eq!(served.available_permits(), MAX_RELAYED_SERVED);
        listener.incoming(incoming(incoming_kind::RELAY), Digest([3; 32]), &served);
        assert_eq!(served.available_permits(), MAX_RELAYED_SERVED - 1);
        // The attempt fails (nothing at the index's address) and gives its permit back.
        for _ in 0..100 {
            if served.available_permits() == MAX_RELAYED_SERVED {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the failed relay attempt kept its permit");
    }
}
