//! The UDP transport (docs/PROTOCOL.md §1.2): QUIC (quinn) secured by the same TLS 1.3
//! identity, certificates, verifiers and ALPN as TCP, one bidirectional stream per connection
//! carrying the frames of §2 unchanged. It exists for hole punching through NATs (§7.11): UDP
//! mappings can be opened from both sides at once, TCP ones hardly ever.
//!
//! Memory a remote end can make us hold is bounded by quinn's limits set here: connections not
//! yet handled ([`MAX_INCOMING`], [`INCOMING_BUFFER`], [`INCOMING_BUFFER_TOTAL`]), one stream
//! per connection and no datagrams, and receive windows per role ([`Role`]). How many
//! connections are open at once is the server's own table of connections, shared with TCP.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, EndpointConfig, IdleTimeout, TransportConfig, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{ALPN, Tls, TlsError, key_of, setup};
use crate::content::Digest;
use crate::identity::Fingerprint;

/// A connection idle this long (no packet either way) is closed. Longer than the requests'
/// read limits ([`crate::protocol::Limits`]), which decide first.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often a connection that must stay open through NATs (a peer's to its index, §7.11)
/// sends a QUIC PING: well under the 30 s many NATs keep an idle UDP mapping.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// New connections whose first packets arrived but which the server has not taken or refused
/// yet (quinn's queue in front of the accept loop).
pub const MAX_INCOMING: usize = 256;
/// Bytes buffered for one such connection before it is taken.
pub const INCOMING_BUFFER: u64 = 64 * 1024;
/// Bytes buffered for all of them together.
pub const INCOMING_BUFFER_TOTAL: u64 = 4 * 1024 * 1024;
/// Handshakes in progress above which a new connection from an address not yet proven is sent
/// a Retry first (RFC 9000 §8.1): a flood of Initial packets from forged or replaying sources
/// then costs one stateless packet each.
pub const RETRY_ABOVE: usize = 32;

/// Receive window of a serving peer's or index's connection: requests are small frames.
pub const SERVER_RECEIVE_WINDOW: u32 = 128 * 1024;
/// Bytes a serving peer keeps in flight unacknowledged on one connection: only connections
/// holding an upload slot are sent pieces, so all together hold at most the slots times this.
pub const SERVER_SEND_WINDOW: u64 = 2 * 1024 * 1024;
/// Receive window of a downloader's connection: enough for several pieces in flight.
pub const CLIENT_RECEIVE_WINDOW: u32 = 4 * 1024 * 1024;

/// The round-trip time a client assumes before it measured one (RFC 9002 says 333 ms); its
/// first retransmission comes after about three times this.
pub const INITIAL_RTT: Duration = Duration::from_millis(100);

/// Which end a transport configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A peer or index answering requests.
    Server,
    /// A downloader or client.
    Client,
    /// A connection kept open to the index through NATs: small windows, keepalives.
    Control,
}

/// The transport limits of `role`: one bidirectional stream, no datagrams.
pub fn transport(role: Role) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    let recv = match role {
        Role::Server | Role::Control => SERVER_RECEIVE_WINDOW,
        Role::Client => CLIENT_RECEIVE_WINDOW,
    };
    t.max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None)
        .stream_receive_window(VarInt::from_u32(recv))
        .receive_window(VarInt::from_u32(recv))
        .send_window(match role {
            Role::Server => SERVER_SEND_WINDOW,
            Role::Client | Role::Control => 256 * 1024,
        })
        .max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok())
        .keep_alive_interval((role == Role::Control).then_some(KEEPALIVE));
    if role != Role::Server {
        // A punch's first packets are often lost (they reach the other NAT before its own
        // packets opened it): retransmit after ~0.3 s rather than RFC 9002's ~1 s.
        t.initial_rtt(INITIAL_RTT);
    }
    Arc::new(t)
}

impl Tls {
    /// The QUIC server configuration of this identity: the TCP server's TLS configuration
    /// (TLS 1.3, ALPN, client keys required, no tickets), quinn's connection limits.
    pub fn quic_server(&self) -> Result<quinn::ServerConfig, TlsError> {
        let crypto = QuicServerConfig::try_from(self.inner.server.clone()).map_err(setup)?;
        let mut c = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        c.transport_config(transport(Role::Server))
            .max_incoming(MAX_INCOMING)
            .incoming_buffer_size(INCOMING_BUFFER)
            .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL)
            // The address a connection was made from is what the index reports and punches
            // to: a connection may not move (a NAT rebinding ends it).
            .migration(false);
        Ok(c)
    }

    /// Connects over QUIC from `endpoint` to `addr`, requiring the server to hold `expect`
    /// (any key if `None`), within `deadline`; returns the connection and the key it proved.
    pub async fn connect_quic(
        &self,
        endpoint: &Endpoint,
        addr: SocketAddr,
        expect: Option<Digest>,
        role: Role,
        deadline: Duration,
    ) -> Result<(quinn::Connection, Digest), TlsError> {
        let (config, verifier) = self.client_config(expect)?;
        let crypto = QuicClientConfig::try_from(Arc::new(config)).map_err(setup)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport(role));
        // An IP address as the server name: no SNI is sent, as over TCP.
        let connecting = endpoint
            .connect_with(client, addr, &addr.ip().to_string())
            .map_err(|e| TlsError::Handshake(e.to_string()))?;
        let conn = match tokio::time::timeout(deadline, connecting).await {
            Err(_) => return Err(TlsError::TimedOut(deadline.as_millis() as u64)),
            Ok(Err(e)) => {
                return Err(match (expect, verifier.seen()) {
                    (Some(expected), Some(found)) if expected != found => TlsError::WrongKey {
                        expected: Fingerprint(expected),
                        found: Fingerprint(found),
                    },
                    _ => TlsError::Handshake(e.to_string()),
                });
            }
            Ok(Ok(c)) => c,
        };
        let key = remote_key(&conn)?;
        Ok((conn, key))
    }
}

/// A UDP endpoint on `socket` serving as `tls` (when given) and able to connect out: a
/// peer's or index's serving socket is also the one its own outgoing connections use, so the
/// NAT mapping the index sees is the one others reach it through.
pub fn endpoint(socket: std::net::UdpSocket, server: Option<&Tls>) -> Result<Endpoint, TlsError> {
    let server = server.map(Tls::quic_server).transpose()?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| TlsError::Setup("QUIC needs a Tokio runtime".into()))?;
    Endpoint::new(EndpointConfig::default(), server, socket, runtime).map_err(setup)
}

/// Binds a UDP endpoint on `addr` (port 0: any free port).
pub fn bind(addr: SocketAddr, server: Option<&Tls>) -> std::io::Result<Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    endpoint(socket, server).map_err(std::io::Error::other)
}

/// The key a QUIC connection's remote end proved, after checking ALPN `peershare/1` was
/// agreed (as the TCP handshake checks them).
pub fn remote_key(conn: &quinn::Connection) -> Result<Digest, TlsError> {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(ALPN) {
        return Err(TlsError::Handshake(format!(
            "the remote end did not agree ALPN {:?}",
            String::from_utf8_lossy(ALPN)
        )));
    }
    let certs = conn
        .peer_identity()
        .and_then(|i| {
            i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or_else(|| TlsError::BadCertificate("no certificate".into()))?;
    let cert = certs
        .first()
        .ok_or_else(|| TlsError::BadCertificate("no certificate".into()))?;
    key_of(cert)
}

/// The one bidirectional stream of a QUIC connection, as a byte stream the protocol's
/// [`crate::protocol::Connection`] runs on. Dropping it closes the connection.
pub struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    conn: quinn::Connection,
}

impl QuicStream {
    /// Opens the stream (client side): it reaches the server with the first bytes written.
    pub async fn open(conn: quinn::Connection) -> Result<QuicStream, std::io::Error> {
        let (send, recv) = conn.open_bi().await.map_err(std::io::Error::other)?;
        Ok(QuicStream { send, recv, conn })
    }

    /// Takes the client's stream (server side), waiting at most `deadline` for it.
    pub async fn accept(
        conn: quinn::Connection,
        deadline: Duration,
    ) -> Result<QuicStream, std::io::Error> {
        let (send, recv) = tokio::time::timeout(deadline, conn.accept_bi())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no stream opened"))?
            .map_err(std::io::Error::other)?;
        Ok(QuicStream { send, recv, conn })
    }

    /// The connection the stream belongs to.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }
}

/// How long a dropped stream's connection stays open for the other end to acknowledge what
/// was written last (an error reply before closing, say), at most.
pub const LINGER: Duration = Duration::from_secs(3);

impl Drop for QuicStream {
    fn drop(&mut self) {
        // Closing the connection at once would discard data not yet acknowledged: finish the
        // stream and close once the other end has it all (or LINGER passed).
        let _ = self.send.finish();
        let stopped = self.send.stopped();
        let conn = self.conn.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = tokio::time::timeout(LINGER, stopped).await;
                    conn.close(VarInt::from_u32(0), b"");
                });
            }
            Err(_) => conn.close(VarInt::from_u32(0), b""),
        }
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

/// Accepts QUIC connections on `endpoint` until `shutdown`, within the limits of
/// `connections` (the same table as the server's TCP connections): each is admitted (or
/// refused when no room can be made), its handshake and its stream must come within the
/// admission's handshake limit, then `handler` serves its stream with the key it proved.
/// Under a flood of new connections from unproven addresses, Retry is asked first
/// ([`RETRY_ABOVE`]). Then waits up to the grace period for the open ones.
pub async fn accept_loop<F, Fut>(
    endpoint: Endpoint,
    connections: crate::protocol::Connections,
    shutdown: tokio_util::sync::CancellationToken,
    handler: F,
) where
    F: Fn(QuicStream, SocketAddr, Digest, crate::protocol::Admission) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tracker = tokio_util::task::TaskTracker::new();
    let handshaking = Arc::new(AtomicUsize::new(0));
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let addr = incoming.remote_address();
        if !incoming.remote_address_validated()
            && handshaking.load(Ordering::Relaxed) >= RETRY_ABOVE
            && incoming.may_retry()
        {
            let _ = incoming.retry();
            continue;
        }
        let Some(admission) = connections.admit(addr.ip()) else {
            tracing::debug!(%addr, "QUIC refused: every connection is being served");
            incoming.refuse();
            continue;
        };
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%addr, "QUIC: {e}");
                continue;
            }
        };
        handshaking.fetch_add(1, Ordering::Relaxed);
        let count = HandshakeCount(handshaking.clone());
        let handler = handler.clone();
        tracker.spawn(async move {
            let limit = admission.handshake_time_left();
            let secured = tokio::select! {
                _ = admission.evicted().cancelled() => None,
                r = tokio::time::timeout(limit, async {
                    let conn = connecting.await.map_err(|e| e.to_string())?;
                    let key = remote_key(&conn).map_err(|e| e.to_string())?;
                    let stream = QuicStream::accept(conn, admission.handshake_time_left())
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((stream, key))
                }) => match r {
                    Ok(Ok(x)) => Some(x),
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, "QUIC: {e}");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "QUIC: handshake not finished in time");
                        None
                    }
                },
            };
            drop(count);
            if let Some((stream, key)) = secured {
                handler(stream, addr, key, admission).await;
            }
        });
    }
    tracker.close();
    let grace = connections.grace();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("shutdown: QUIC connections still open after {grace:?}");
    }
    endpoint.close(VarInt::from_u32(0), b"shutting down");
}

/// Counts a handshake in progress until dropped.
struct HandshakeCount(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for HandshakeCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
