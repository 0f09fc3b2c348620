//! The payloads of hole punching through the index over the UDP transport (docs/PROTOCOL.md
//! §7.11): `PunchRequest`, `PunchGo` and `PunchListen`.

use serde::{Deserialize, Serialize};

/// Longest address text accepted in these payloads: an IPv6 address with brackets and port.
pub const MAX_ADDR_LEN: usize = 64;

/// A downloader asks the index to coordinate a hole punch to a registered peer (by its id at
/// the index), on a QUIC connection from the socket it will connect to the peer from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchRequest {
    /// The peer's id at the index (`PeerHit.peer_id`).
    pub peer_id: u64,
}

/// Where to send QUIC packets now, as the index sees it. The answer to `PunchRequest` (the
/// target's address; `observed` the requester's own), and what the index pushes to the target
/// on its listening connection (the requester's address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchGo {
    /// `IP:PORT` (IPv6 in brackets) to send to.
    pub addr: String,
    /// The key the other end will prove (the target's in the answer to `PunchRequest`, the
    /// requester's in a push).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The receiver's own address as the index sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
}

/// A peer listens for punches on this connection (sent without `observed`); the index answers
/// with the same message carrying the address it sees the connection come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchListen {
    /// In the index's answer: the peer's UDP address as the index sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
}

/// Parses an address from a punch message: an IP literal and port, within [`MAX_ADDR_LEN`].
pub fn parse_addr(s: &str) -> Option<std::net::SocketAddr> {
    (s.len() <= MAX_ADDR_LEN).then(|| s.parse().ok()).flatten()
}
