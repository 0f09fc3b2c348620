//! Connecting to a source: directly at its address, or through a relay (docs/PROTOCOL.md
//! §7.10) when the index lists it as reached so, or when connecting directly fails: the
//! index's own, or a member volunteering as one that the index names. Through a relay, the
//! peer protocol's TLS runs end to end inside the relay's, requiring the key the index listed.

use std::time::Duration;

use tracing::debug;

use super::report::Source;
use super::udp::{PUNCH_HEAD_START, UdpRoute};
use crate::content::Digest;
use crate::index::{IndexClient, RELAY_PENDING_TIMEOUT, RelayRouted};
use crate::peer::{PeerClient, PeerClientError};
use crate::protocol::Limits;
use crate::protocol::relay::{CARRY_TIMEOUT, RelayConnect, RelayVia};
use crate::tls::{PeerStream, RelayIo, Tls};

/// Volunteer relays one connection tries at most: one that fails is named in the next
/// `RelayConnect`'s `avoid` (and the index then relays itself, when it does).
const MAX_VOLUNTEERS_TRIED: usize = 2;

/// How long the TLS handshake inside a relayed connection may take (as a direct one's).
const RELAYED_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The index through which sources it cannot reach are relayed: the one that listed them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayRoute {
    /// The index's `HOST:PORT`.
    pub index: String,
    /// The key it must hold (`None`: any; the caller pinned it when it searched).
    pub index_key: Option<Digest>,
}

/// How a connection reached its source, for reports: [`reached`], and the relay's address
/// when relayed.
pub fn route(client: &PeerClient) -> super::report::Route {
    super::report::Route {
        how: reached(client),
        relay: client.relay().map(str::to_string),
    }
}

/// How a source was reached, for reports: `"direct"`, `"punched"` (over UDP after a hole
/// punch, §7.11) or `"relayed"`.
pub fn reached(client: &PeerClient) -> &'static str {
    match (client.is_relayed(), client.reach()) {
        (true, _) => "relayed",
        (false, crate::peer::Reach::Punched) => "punched",
        (false, crate::peer::Reach::Direct) => "direct",
    }
}

/// Connects to `source` as `tls`'s key (a fresh anonymous key if `None`): directly, unless it
/// has no address (over TCP, or QUIC when `udp` prefers it); when it has none, or connecting
/// directly failed and the index listed it (a peer id and a key), through a hole punch over
/// `udp` (§7.11) raced by `relay` once it ran [`PUNCH_HEAD_START`] alone, or through `relay`
/// at once when a punch to it failed lately.
pub async fn connect_source(
    source: &Source,
    tls: Option<&Tls>,
    relay: Option<&RelayRoute>,
    udp: Option<&UdpRoute>,
    limits: Limits,
) -> Result<PeerClient, PeerClientError> {
    let listed = source.key.is_some() && source.peer_id.is_some();
    let punch = udp.filter(|u| u.punches() && listed);
    if !source.addr.is_empty() {
        let direct = match udp {
            Some(u) => {
                u.connect_direct(&source.addr, tls, source.key, limits)
                    .await
            }
            None => PeerClient::connect(&source.addr, tls, source.key, limits).await,
        };
        match direct {
            // Only a connection that could not be made: a peer that answered with another key
            // is not asked again through the relay.
            Err(e @ PeerClientError::Connect { .. })
                if (relay.is_some() || punch.is_some()) && listed =>
            {
                debug!("{}: {e}; trying a hole punch or the relay", source.label());
            }
            r => return r,
        }
    }
    if let (Some(u), Some(id)) = (punch, source.peer_id)
        && !u.punch_failed_lately(id)
    {
        return punch_racing_the_relay(u, id, source, tls, relay, limits).await;
    }
    connect_relayed(source, tls, relay, limits).await
}

/// A hole punch to `id`, raced by the relay once it ran [`PUNCH_HEAD_START`] alone: the first
/// connection made is used (the other attempt is dropped), and a punch that failed or lost is
/// remembered by `u` (its source's next connections go to the relay at once).
async fn punch_racing_the_relay(
    u: &UdpRoute,
    id: u64,
    source: &Source,
    tls: Option<&Tls>,
    relay: Option<&RelayRoute>,
    limits: Limits,
) -> Result<PeerClient, PeerClientError> {
    let punched = |r: Result<PeerClient, String>| {
        r.map(|mut c| {
            c.set_reach(crate::peer::Reach::Punched);
            c
        })
    };
    let punch = u.punch(tls, id, source.key, limits);
    tokio::pin!(punch);
    tokio::select! {
        r = &mut punch => match punched(r) {
            Ok(c) => return Ok(c),
            Err(why) => {
                debug!("{}: hole punch failed: {why}", source.label());
                u.punch_failed(id);
                return connect_relayed(source, tls, relay, limits).await;
            }
        },
        () = tokio::time::sleep(PUNCH_HEAD_START) => {}
    }
    let relayed = connect_relayed(source, tls, relay, limits);
    tokio::pin!(relayed);
    tokio::select! {
        r = &mut punch => match punched(r) {
            Ok(c) => Ok(c),
            Err(why) => {
                debug!("{}: hole punch failed: {why}", source.label());
                u.punch_failed(id);
                relayed.await
            }
        },
        r = &mut relayed => match r {
            Ok(c) => {
                debug!("{}: the relay connected before the hole punch", source.label());
                u.punch_failed(id);
                Ok(c)
            }
            // No relay, or it failed: the punch may still make it within its deadline.
            Err(e) => match punched(punch.await) {
                Ok(c) => Ok(c),
                Err(why) => {
                    debug!("{}: hole punch failed: {why}", source.label());
                    u.punch_failed(id);
                    Err(e)
                }
            },
        },
    }
}

/// Connects to `source` through `relay`.
pub async fn connect_relayed(
    source: &Source,
    tls: Option<&Tls>,
    relay: Option<&RelayRoute>,
    limits: Limits,
) -> Result<PeerClient, PeerClientError> {
    let fail = |addr: String, why: String| PeerClientError::Connect {
        addr,
        source: std::io::Error::other(why),
    };
    let (Some(route), Some(key)) = (relay, source.key) else {
        // The error says "peer …" itself.
        let who = source.label();
        return Err(fail(
            who.strip_prefix("peer ").unwrap_or(&who).to_string(),
            "reached only through a relay, and none is known".into(),
        ));
    };
    let label = match source.peer_id {
        Some(id) => format!("{id} through the relay of {}", route.index),
        None => format!("through the relay of {}", route.index),
    };
    // One key for both: the reached peer requires that the key inside is the one that asked.
    let tls = Tls::or_ephemeral(tls).map_err(|e| PeerClientError::Secure {
        addr: label.clone(),
        source: e,
    })?;
    let connect = || async {
        let client = IndexClient::connect(&route.index, Some(&tls), route.index_key, limits)
            .await
            .map_err(|e| fail(label.clone(), e.to_string()))?;
        let ip = client
            .stream()
            .get_ref()
            .0
            .peer_addr()
            .map_err(|e| fail(label.clone(), e.to_string()))?
            .ip();
        Ok::<_, PeerClientError>((client, ip))
    };
    // The index answers within its own wait for the peer; this one only guards against an
    // index that does not.
    let wait = RELAY_PENDING_TIMEOUT + Duration::from_secs(5);
    let mut avoid = Vec::new();
    loop {
        let (client, index_ip) = connect().await?;
        let rc = RelayConnect {
            peer_id: source.peer_id,
            key: Some(key),
            avoid: avoid.clone(),
            via: true,
        };
        let routed = client
            .relay_connect(rc, wait)
            .await
            .map_err(|e| fail(label.clone(), e.to_string()))?;
        let via = match routed {
            RelayRouted::Here(io, _) => {
                let mut c = inside(io, index_ip, key, &tls, limits, &label).await?;
                c.set_relay(route.index.clone());
                return Ok(c);
            }
            RelayRouted::Via(_, via) => via,
        };
        let through = match source.peer_id {
            Some(id) => format!("{id} through the volunteer relay at {}", via.addr),
            None => format!("through the volunteer relay at {}", via.addr),
        };
        // Whatever fails through a volunteer, up to the peer's Hello inside (a volunteer may
        // splice to the wrong place), counts against it.
        let r = match through_volunteer(&via, &tls, limits).await {
            Ok((io, ip)) => inside(io, ip, key, &tls, limits, &through).await,
            Err(why) => Err(fail(through.clone(), why)),
        };
        match r {
            Ok(mut c) => {
                c.set_relay(via.addr.clone());
                return Ok(c);
            }
            Err(e) if avoid.len() + 1 < MAX_VOLUNTEERS_TRIED => {
                debug!("{e}; asking the index again, passing this volunteer over");
                avoid.push(via.key);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The peer protocol over a relayed stream: TLS as the client requiring `key` (the key the
/// index listed), then `Hello`.
async fn inside(
    io: RelayIo,
    ip: std::net::IpAddr,
    key: Digest,
    tls: &Tls,
    limits: Limits,
    label: &str,
) -> Result<PeerClient, PeerClientError> {
    let deadline = RELAYED_HANDSHAKE_TIMEOUT.min(limits.read_timeout);
    let (stream, proved) = tls
        .connect_over(io, ip, Some(key), deadline)
        .await
        .map_err(|source| PeerClientError::Secure {
            addr: label.to_string(),
            source,
        })?;
    let stream = PeerStream::Relayed(Box::new(tokio_rustls::TlsStream::Client(stream)));
    PeerClient::over(stream, proved, tls, limits, label).await
}

/// The requester's end at a volunteer relay: a connection to its peer port, requiring its
/// key, and `RelayAccept` with the index's token; the stream and the volunteer's IP.
async fn through_volunteer(
    via: &RelayVia,
    tls: &Tls,
    limits: Limits,
) -> Result<(RelayIo, std::net::IpAddr), String> {
    let ip = via
        .addr
        .parse::<std::net::SocketAddr>()
        .map_err(|_| {
            format!(
                "the index named a volunteer relay at {:?}, not IP:PORT",
                via.addr
            )
        })?
        .ip();
    let relay = PeerClient::connect(&via.addr, Some(tls), Some(via.key), limits)
        .await
        .map_err(|e| e.to_string())?;
    let (io, _) = relay
        .relay_accept(via.token, CARRY_TIMEOUT + Duration::from_secs(5))
        .await
        .map_err(|e| format!("volunteer relay at {}: {e}", via.addr))?;
    Ok((io, ip))
}
