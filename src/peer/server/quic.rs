//! Serving the peer protocol over the UDP transport (docs/PROTOCOL.md §1.2): the same
//! handler, limits, membership and slot rules as TCP, in the same table of connections.

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{MAX_REQUEST_FRAME_LEN, PeerServer};
use crate::protocol::{Connection, ServerSide};
use crate::tls::PeerStream;
use crate::tls::quic::accept_loop;

impl PeerServer {
    /// Serves the peer protocol over QUIC on `endpoint` (made with this server's [`Tls`]
    /// as its server configuration, [`crate::tls::quic::endpoint`]) until `shutdown`.
    ///
    /// [`Tls`]: crate::tls::Tls
    pub async fn run_quic(self, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
        let connections = self.connections.clone();
        let stop = shutdown.clone();
        accept_loop(
            endpoint,
            connections,
            shutdown,
            move |stream, addr, key, admission| {
                let (server, shutdown) = (self.clone(), stop.clone());
                async move {
                    let conn = Connection::server(
                        PeerStream::Quic(stream),
                        server.config.limits,
                        ServerSide {
                            admission: Some(admission),
                            budget: None,
                            max_frame: MAX_REQUEST_FRAME_LEN,
                            frame_timeout: server.config.frame_timeout,
                        },
                    );
                    match server.handle(conn, addr, key, shutdown).await {
                        Ok(()) => debug!(%addr, "peer connection (QUIC) closed"),
                        Err(e) => info!(%addr, "peer connection (QUIC) closed: {e}"),
                    }
                }
            },
        )
        .await;
    }
}
