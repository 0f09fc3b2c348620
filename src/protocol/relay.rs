//! The payloads of rendezvous and relay (docs/PROTOCOL.md §7.10): a peer the index cannot
//! reach keeps a control channel open (`Listen`), on which the index tells it who wants to
//! reach it (`Incoming`); a downloader asks for a relayed connection (`RelayConnect`), the
//! peer answers on a new connection (`RelayAccept`), and the index splices the two
//! (`Relayed`), the peers' own TLS running end to end inside.

use serde::{Deserialize, Serialize};

use crate::content::Digest;

/// Bytes of a relay token.
pub const RELAY_TOKEN_LEN: usize = 16;

/// What an [`Incoming`] asks of the listening peer. A peer ignores kinds it does not know
/// (a newer index may add some), so a new kind is a new constant here and a branch there.
pub mod incoming_kind {
    /// Open a new connection to the index (or to the volunteer `Incoming.via` names) and send
    /// `RelayAccept {token}`.
    pub const RELAY: &str = "relay";
    /// To a member that volunteers as a relay: expect `RelayAccept {token}` from `from` and
    /// from `to` on connections to its peer port, and splice the two.
    pub const CARRY: &str = "carry";
}

/// Relayed connections a volunteer relay holds ordered and not yet joined by both ends, at
/// once: beyond it the volunteer drops an order (and the index stops sending it more).
pub const MAX_CARRY_ORDERS: usize = 32;
/// Of those, at once, requested by one key.
pub const MAX_CARRY_ORDERS_PER_KEY: usize = 8;
/// How long a volunteer's order waits for both ends after it came (the index gives the
/// listening peer 10 s to accept; this leaves room for the order's own way).
pub const CARRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Volunteers a downloader may ask the index to pass over in one `RelayConnect`
/// ([`RelayConnect::avoid`]); more is `BAD_REQUEST`.
pub const MAX_RELAY_AVOID: usize = 8;

/// How the index says a peer is reached, in `Registered.reach` and `PeerHit.reach`.
pub mod reach {
    /// At the address the index checked (§7.1).
    pub const DIRECT: &str = "direct";
    /// Only through the index's relay, by its key (§7.10).
    pub const RELAY: &str = "relay";
}

/// A random token naming one relay request, carried as a MessagePack `bin` of 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RelayToken(pub [u8; RELAY_TOKEN_LEN]);

impl Serialize for RelayToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelayToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = serde_bytes::ByteBuf::deserialize(d)?;
        <[u8; RELAY_TOKEN_LEN]>::try_from(b.as_ref())
            .map(RelayToken)
            .map_err(|_| serde::de::Error::invalid_length(b.len(), &"a relay token of 16 bytes"))
    }
}

/// Index → listening peer, on its control channel: someone wants to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// Names the request: sent back in `RelayAccept`.
    pub token: RelayToken,
    /// The key of the peer that asked (it proved it to the index).
    pub from: Digest,
    /// What is asked ([`incoming_kind`]); unknown kinds are ignored.
    pub kind: String,
    /// `carry`: the key of the listening peer, the other end to splice with `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Digest>,
    /// `relay` through a volunteer: where to send `RelayAccept`, the volunteer's peer port
    /// `IP:PORT`. Absent: to the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// `relay` through a volunteer: the key it must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_key: Option<Digest>,
}

/// Downloader → index: a relayed connection to a peer, named by its id at this index or by
/// its key (at least one; both must then name the same peer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayConnect {
    /// The peer's id, as `PeerHit.peer_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<u64>,
    /// The peer's key, as `PeerHit.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Digest>,
    /// Keys of volunteer relays not to route through (they failed this requester); at most
    /// [`MAX_RELAY_AVOID`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<Digest>,
    /// The requester follows `RelayVia` to a volunteer relay (a build before volunteers does
    /// not say so, and the index then relays it itself). Absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub via: bool,
}

/// Index → downloader, instead of `Relayed`: a member volunteering as a relay carries this
/// connection. Connect to its peer port, requiring `key`, and send `RelayAccept {token}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayVia {
    /// Names the relayed connection at the volunteer.
    pub token: RelayToken,
    /// The volunteer's peer port, `IP:PORT` (an IPv6 address in brackets).
    pub addr: String,
    /// The volunteer's key.
    pub key: Digest,
}

/// Listening peer → index, on a new connection: accepts the relay request `token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAccept {
    /// From the `Incoming`.
    pub token: RelayToken,
}

/// Index (or volunteer) → both ends: from the next byte on, this connection carries the other end's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relayed {
    /// The other end's key, as it proved it to the index.
    pub peer: Digest,
    /// To the accepting peer: the requester's address as the index sees it (`IP:PORT`), for
    /// its logs and per-address limits. Absent to the requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}
