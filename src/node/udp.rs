//! A share's UDP side (docs/PROTOCOL.md §1.2, §7.11): the peer protocol over QUIC on the TCP
//! listener's port number, and a connection from that same socket to the index, kept open
//! with keepalives, over which the index says the address it sees and asks for hole punches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::content::Digest;
use crate::peer::PeerServer;
use crate::protocol::{Connection, Limits, Message, PunchListen, UdpIndexReply, punch};
use crate::tls::Tls;
use crate::tls::quic::{QuicStream, Role};

/// How often a listening peer says `PunchListen` again: the index's read limit on the
/// connection is longer, and the answer refreshes the address seen.
pub const LISTEN_REFRESH: Duration = Duration::from_secs(30);
/// Longest wait for the index's answer on the listening connection.
pub const LISTEN_ANSWER: Duration = Duration::from_secs(10);
/// First wait before reconnecting to the index after the listening connection failed;
/// doubles up to [`LISTEN_RETRY_MAX`].
pub const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between reconnections.
pub const LISTEN_RETRY_MAX: Duration = Duration::from_secs(60);
/// Punches (outgoing QUIC handshakes that open our NAT toward a downloader) at once; more are
/// dropped (the index already limits them per target).
pub const MAX_PUNCHES: usize = 16;
/// How long our side of a punch keeps sending (its handshake attempt is then dropped).
pub const PUNCH_SEND: Duration = Duration::from_secs(5);

/// What the share's UDP side shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpStatus {
    /// The UDP address served on.
    pub local: Option<SocketAddr>,
    /// The address the index sees our UDP socket at (our NAT's mapping), once it said.
    pub observed: Option<SocketAddr>,
    /// Punches the index asked us to make.
    pub punches: u64,
}

/// Binds UDP on `local` (the TCP listener's address), serves `server` over QUIC on it, and
/// when `index` is given keeps a listening connection to it. `None` (logged) when the port
/// cannot be bound: the share then serves TCP only.
pub(super) fn start(
    server: &PeerServer,
    tls: &Tls,
    local: SocketAddr,
    index: Option<(String, Option<Digest>)>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Option<watch::Receiver<UdpStatus>> {
    let endpoint = match crate::tls::quic::bind(local, Some(tls)) {
        Ok(e) => e,
        Err(e) => {
            warn!("no UDP transport on {local} (TCP only, no hole punching): {e}");
            return None;
        }
    };
    let (tx, rx) = watch::channel(UdpStatus {
        local: endpoint.local_addr().ok(),
        ..Default::default()
    });
    tasks.spawn(server.clone().run_quic(endpoint.clone(), shutdown.clone()));
    if let Some((index, key)) = index {
        let listener = Listener {
            endpoint,
            tls: tls.clone(),
            index,
            key,
            status: Arc::new(tx),
            punches: Arc::new(Semaphore::new(MAX_PUNCHES)),
        };
        tasks.spawn(listener.run(shutdown.clone()));
    }
    Some(rx)
}

struct Listener {
    endpoint: quinn::Endpoint,
    tls: Tls,
    index: String,
    key: Option<Digest>,
    status: Arc<watch::Sender<UdpStatus>>,
    punches: Arc<Semaphore>,
}

impl Listener {
    /// Keeps a listening connection open until `shutdown`, reconnecting with backoff.
    async fn run(mut self, shutdown: CancellationToken) {
        let mut wait = LISTEN_RETRY;
        loop {
            let r = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.listen() => r,
            };
            match r {
                Ok(()) => wait = LISTEN_RETRY,
                Err(e) => debug!(index = %self.index, "UDP listening connection: {e}"),
            }
            self.status.send_modify(|s| s.observed = None);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(LISTEN_RETRY_MAX);
        }
    }

    /// One listening connection, until it fails.
    async fn listen(&mut self) -> Result<(), String> {
        let addr = tokio::net::lookup_host(self.index.as_str())
            .await
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let (conn, key) = self
            .tls
            .connect_quic(&self.endpoint, addr, self.key, Role::Control, LISTEN_ANSWER)
            .await
            .map_err(|e| e.to_string())?;
        // Pinned from now on: a reconnection must reach the same index.
        self.key = Some(key);
        let stream = QuicStream::open(conn).await.map_err(|e| e.to_string())?;
        let limits = Limits {
            read_timeout: LISTEN_REFRESH + LISTEN_ANSWER,
            write_timeout: LISTEN_ANSWER,
        };
        let mut c = Connection::new(stream, limits);
        c.client_handshake(self.tls.membership())
            .await
            .map_err(|e| e.to_string())?;
        let mut refresh = tokio::time::interval(LISTEN_REFRESH);
        loop {
            tokio::select! {
                _ = refresh.tick() => {
                    c.send(&Message::PunchListen(PunchListen::default()))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                m = c.read_message() => {
                    let m = m.map_err(|e| e.to_string())?.ok_or("closed by the index")?;
                    match UdpIndexReply::try_from(m).map_err(|e| e.to_string())? {
                        UdpIndexReply::PunchListen(l) => {
                            let seen = l.observed.as_deref().and_then(punch::parse_addr);
                            if seen != self.status.borrow().observed {
                                info!(observed = ?seen, "the index sees our UDP socket at this address");
                            }
                            self.status.send_modify(|s| s.observed = seen);
                        }
                        UdpIndexReply::PunchGo(go) => self.punch(go),
                        UdpIndexReply::Error(e) => return Err(e.message),
                        UdpIndexReply::Welcome(_) => return Err("a second Welcome".into()),
                    }
                }
            }
        }
    }

    /// Sends QUIC packets to a downloader's address from our socket, opening our NAT's
    /// mapping toward it: its own connection attempt then gets through. Our attempt itself
    /// never completes (the downloader accepts no connections) and is dropped.
    fn punch(&self, go: crate::protocol::PunchGo) {
        let Some(addr) = punch::parse_addr(&go.addr) else {
            return;
        };
        let Ok(permit) = self.punches.clone().try_acquire_owned() else {
            debug!(%addr, "punch dropped: too many at once");
            return;
        };
        self.status.send_modify(|s| s.punches += 1);
        debug!(%addr, "punching toward a downloader");
        let (endpoint, tls) = (self.endpoint.clone(), self.tls.clone());
        tokio::spawn(async move {
            let _ = tls
                .connect_quic(&endpoint, addr, None, Role::Control, PUNCH_SEND)
                .await;
            drop(permit);
        });
    }
}
