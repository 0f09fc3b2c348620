//! How a downloader reaches a source over the UDP transport (docs/PROTOCOL.md §1.2, §7.11):
//! QUIC to the source's address, or, when the source cannot be reached directly, a hole
//! punch coordinated by the index, from one UDP socket that talks to both
//! ([`super::connect_source`] decides when).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::content::Digest;
use crate::peer::{PeerClient, PeerClientError};
use crate::protocol::{
    Connection, ErrorReply, Limits, Message, PunchGo, PunchRequest, UdpIndexReply, punch,
};
use crate::tls::Tls;
use crate::tls::quic::{QuicStream, Role};

/// Longest a hole punch may take, from the request to the index to the source's `Welcome`;
/// then the downloader gives up on it and falls back to the relay
/// ([`super::connect_source`]).
pub const PUNCH_DEADLINE: Duration = Duration::from_secs(5);
/// Longest wait for the index's answer to a `PunchRequest` (within [`PUNCH_DEADLINE`]).
pub const PUNCH_ANSWER: Duration = Duration::from_secs(3);
/// How long a hole punch runs alone before the relay races it (whichever connects first is
/// used): a punch through endpoint-independent NATs takes a few round trips, and one through
/// a symmetric NAT never succeeds, so its source is reached this soon instead of after
/// [`PUNCH_DEADLINE`] ([`super::connect_source`]).
pub const PUNCH_HEAD_START: Duration = Duration::from_secs(2);
/// A source whose punch failed (or lost to the relay) is not punched to again by the same
/// route for this long: its next connections go to the relay at once.
pub const PUNCH_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Sources whose failed punch a route remembers at most (the oldest is forgotten first).
const MAX_PUNCH_FAILURES: usize = 1024;

/// Which transport a downloader tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// TCP, then a hole punch over UDP when TCP cannot reach the source.
    #[default]
    Auto,
    /// QUIC straight to the source's address (its UDP port has the TCP port's number).
    Quic,
}

/// A downloader's UDP socket, and the index it asks for hole punches.
pub struct UdpRoute {
    endpoint: quinn::Endpoint,
    transport: Transport,
    /// `(address, key)` of the index that coordinates punches, when there is one.
    index: Option<(String, Option<Digest>)>,
    /// The connection to the index (opened on the first punch, kept for the next).
    control: tokio::sync::Mutex<Option<Connection<QuicStream>>>,
    /// Sources (peer ids at the index) whose punch failed, and when.
    failed: std::sync::Mutex<std::collections::HashMap<u64, tokio::time::Instant>>,
}

impl UdpRoute {
    /// A UDP socket on `bind` (port 0: any), trying `transport` first, punching through
    /// `index` (its `HOST:PORT`; UDP on the same port number) when given.
    pub fn new(
        bind: SocketAddr,
        transport: Transport,
        index: Option<(String, Option<Digest>)>,
    ) -> std::io::Result<Arc<UdpRoute>> {
        Ok(Arc::new(UdpRoute {
            endpoint: crate::tls::quic::bind(bind, None)?,
            transport,
            index,
            control: tokio::sync::Mutex::new(None),
            failed: std::sync::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// The route a downloader takes to punch through `index` (`HOST:PORT[#KEY]`, as the user
    /// gave it) requiring `key`: a socket on the IPv6 wildcard (dual stack) where the system
    /// has IPv6, else on IPv4's; `None` (after a warning) when no socket can be bound or the
    /// address is not one.
    pub fn for_index(index: &str, key: Option<Digest>) -> Option<Arc<UdpRoute>> {
        let (addr, _) = crate::identity::split_address(index).ok()?;
        let target = Some((addr.to_string(), key));
        let any = |ip: std::net::IpAddr| SocketAddr::from((ip, 0));
        UdpRoute::new(
            any(std::net::Ipv6Addr::UNSPECIFIED.into()),
            Transport::Auto,
            target.clone(),
        )
        .or_else(|_| {
            UdpRoute::new(
                any(std::net::Ipv4Addr::UNSPECIFIED.into()),
                Transport::Auto,
                target,
            )
        })
        .map_err(|e| tracing::warn!("no UDP socket for hole punching: {e}"))
        .ok()
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Asks the index to punch to `peer_id`; the answer says where to connect.
    async fn ask_index(&self, tls: &Tls, peer_id: u64) -> Result<PunchGo, String> {
        let Some((index, index_key)) = &self.index else {
            return Err("no index to coordinate a hole punch".into());
        };
        let mut control = self.control.lock().await;
        for attempt in 0..2 {
            if control.is_none() {
                let addr = tokio::net::lookup_host(index.as_str())
                    .await
                    .map_err(|e| format!("index {index}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("index {index}: no address"))?;
                let (conn, _) = tls
                    .connect_quic(&self.endpoint, addr, *index_key, Role::Client, PUNCH_ANSWER)
                    .await
                    .map_err(|e| format!("index {index} over UDP: {e}"))?;
                let stream = QuicStream::open(conn)
                    .await
                    .map_err(|e| format!("index {index} over UDP: {e}"))?;
                let limits = Limits {
                    read_timeout: PUNCH_ANSWER,
                    write_timeout: PUNCH_ANSWER,
                };
                let mut c = Connection::new(stream, limits);
                c.client_handshake(tls.membership())
                    .await
                    .map_err(|e| format!("index {index} over UDP: {e}"))?;
                *control = Some(c);
            }
            let Some(c) = control.as_mut() else {
                continue;
            };
            match c
                .request(&Message::PunchRequest(PunchRequest { peer_id }))
                .await
            {
                Ok(m) => {
                    return match UdpIndexReply::try_from(m) {
                        Ok(UdpIndexReply::PunchGo(go)) => Ok(go),
                        Ok(UdpIndexReply::Error(ErrorReply { message, .. })) => {
                            Err(format!("the index refused the hole punch: {message}"))
                        }
                        Ok(other) => Err(format!("the index answered {}", other.name())),
                        Err(e) => Err(e.to_string()),
                    };
                }
                // A connection the index closed meanwhile: open a new one, once.
                Err(crate::protocol::ProtocolError::Remote(e)) => {
                    return Err(format!("the index refused the hole punch: {}", e.message));
                }
                Err(e) => {
                    *control = None;
                    if attempt == 1 {
                        return Err(format!("index {index} over UDP: {e}"));
                    }
                }
            }
        }
        Err("no answer from the index".into())
    }

    /// Whether this route can ask an index for hole punches.
    pub fn punches(&self) -> bool {
        self.index.is_some()
    }

    fn failures(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, tokio::time::Instant>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a punch to `peer_id` failed within [`PUNCH_RETRY_AFTER`].
    pub fn punch_failed_lately(&self, peer_id: u64) -> bool {
        self.failures()
            .get(&peer_id)
            .is_some_and(|t| t.elapsed() < PUNCH_RETRY_AFTER)
    }

    /// Remembers that a punch to `peer_id` failed or lost to the relay.
    pub fn punch_failed(&self, peer_id: u64) {
        let mut f = self.failures();
        if f.len() >= MAX_PUNCH_FAILURES {
            f.retain(|_, t| t.elapsed() < PUNCH_RETRY_AFTER);
            if f.len() >= MAX_PUNCH_FAILURES
                && let Some(oldest) = f.iter().min_by_key(|(_, t)| **t).map(|(id, _)| *id)
            {
                f.remove(&oldest);
            }
        }
        f.insert(peer_id, tokio::time::Instant::now());
    }

    /// Connects to a source at `addr` directly: over TCP, or QUIC to the same port number
    /// when this route prefers it.
    pub async fn connect_direct(
        &self,
        addr: &str,
        tls: Option<&Tls>,
        expect: Option<Digest>,
        limits: Limits,
    ) -> Result<PeerClient, PeerClientError> {
        match (self.transport, addr.parse::<SocketAddr>()) {
            (Transport::Quic, Ok(a)) => {
                PeerClient::connect_quic(&self.endpoint, a, tls, expect, limits).await
            }
            _ => PeerClient::connect(addr, tls, expect, limits).await,
        }
    }

    /// Connects to the source `peer_id` through a hole punch: the index tells it to send to
    /// our socket's address while we connect to its socket's, all within [`PUNCH_DEADLINE`].
    pub async fn punch(
        &self,
        tls: Option<&Tls>,
        peer_id: u64,
        expect: Option<Digest>,
        limits: Limits,
    ) -> Result<PeerClient, String> {
        let tls = Tls::or_ephemeral(tls).map_err(|e| e.to_string())?;
        let work = async {
            let go = self.ask_index(&tls, peer_id).await?;
            let addr = punch::parse_addr(&go.addr)
                .ok_or_else(|| "the index sent a bad address".to_string())?;
            if let (Some(want), Ok(got)) = (expect, <[u8; 32]>::try_from(go.key.as_slice()))
                && Digest(got) != want
            {
                return Err("the index names another key for this peer".to_string());
            }
            debug!(peer_id, %addr, observed = ?go.observed, "punching");
            PeerClient::connect_quic(&self.endpoint, addr, Some(&tls), expect, limits)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(PUNCH_DEADLINE, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "hole punch not done within {}s",
                PUNCH_DEADLINE.as_secs()
            )),
        }
    }
}

#[cfg(test)]
mod memo_tests {
    use super::*;

    /// A failed punch is remembered for `PUNCH_RETRY_AFTER`, for at most
    /// `MAX_PUNCH_FAILURES` sources (the oldest forgotten first).
    #[tokio::test(start_paused = true)]
    async fn failed_punches_are_remembered_for_a_while_and_bounded() {
        let route = UdpRoute::new("127.0.0.1:0".parse().unwrap(), Transport::Auto, None).unwrap();
        assert!(!route.punch_failed_lately(7));
        route.punch_failed(7);
        assert!(route.punch_failed_lately(7));
        tokio::time::advance(PUNCH_RETRY_AFTER).await;
        assert!(!route.punch_failed_lately(7), "forgotten after a while");
        for id in 0..MAX_PUNCH_FAILURES as u64 {
            route.punch_failed(id);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        route.punch_failed(5_000);
        assert_eq!(route.failures().len(), MAX_PUNCH_FAILURES);
        assert!(!route.punch_failed_lately(0), "the oldest went first");
        assert!(route.punch_failed_lately(1) && route.punch_failed_lately(5_000));
    }
}
