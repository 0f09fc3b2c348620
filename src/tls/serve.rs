//! The server side of the secure channel, under a server's connection limits: the TLS
//! handshake of a new connection is bounded in time and ends early if the server evicts it.

use std::sync::LazyLock;

use tokio::net::TcpStream;
use tracing::debug;

use super::{Secured, Tls};
use crate::protocol::{Admission, error_frame};
use crate::protocol::{ErrorCode, PROTOCOL_VERSION};

/// What a client that speaks the protocol in plain text (a build from before TLS) is told.
static PLAINTEXT_REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    error_frame(
        ErrorCode::UnsupportedVersion,
        &format!(
            "this server speaks protocol version {PROTOCOL_VERSION} over TLS 1.3 only; upgrade peershare"
        ),
    )
});

/// Secures a newly accepted connection: `None` (logged) if the handshake fails, takes longer
/// than the admission's handshake limit, or the server evicts the connection meanwhile.
pub async fn secure_admitted(
    tls: &Tls,
    stream: TcpStream,
    admission: &Admission,
) -> Option<Secured> {
    let addr = stream.peer_addr().ok();
    let limit = admission.handshake_time_left();
    tokio::select! {
        _ = admission.evicted().cancelled() => None,
        r = tls.accept(stream, limit, &PLAINTEXT_REFUSAL) => match r {
            Ok(s) => Some(s),
            Err(e) => {
                debug!(?addr, "TLS: {e}");
                None
            }
        },
    }
}
