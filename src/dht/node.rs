//! `start_node`: joins the Mainline DHT (or a private network of it) as a client or a server node.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use mainline::async_dht::AsyncDht;
use mainline::{Dht, ServerSettings};

/// Default [`DhtConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`DhtConfig::max_keys`]: keys (info-hashes) a server node holds announcements for.
/// mainline's own default is 2,000, and libtorrent's `dht_max_torrents` is similar: fine on the
/// public DHT, where each node holds a sliver of every share, but on a small private network a
/// few nodes hold every key of every member, and one share of a few thousand files already
/// has more keys than that.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// Peers held per key by a server node (mainline's default is 500).
pub const MAX_PEERS_PER_KEY: usize = 200;
/// Peers held over all keys by a server node: with [`DEFAULT_MAX_KEYS`] this bounds what a
/// flood of announcements can make a node keep to about 25 MB.
pub const MAX_STORED_PEERS: usize = 500_000;

/// How to join the DHT.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Bootstrap nodes, `HOST:PORT`. Default: empty, meaning the public Mainline bootstrap
    /// nodes (unless `no_bootstrap`).
    pub bootstrap: Vec<String>,
    /// Contact no bootstrap node at all: the first node of a private network. Default: false.
    pub no_bootstrap: bool,
    /// UDP port to bind; 0 picks a free one. Default: 0.
    pub port: u16,
    /// Address to bind. Default: 0.0.0.0.
    pub bind: Ipv4Addr,
    /// Answer other nodes (server mode), as long-running peers should; a read-only client
    /// says so in every message (BEP 43) and is kept out of other nodes' routing tables.
    /// Default: true.
    pub server: bool,
    /// How long to wait for one node's answer before it counts as failed (two failures in a
    /// row drop a node). A lookup does not wait this long for a slow node: it goes on after
    /// a few round-trip times. Default: [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// Keys a server node holds announcements for, least recently used dropped first.
    /// Default: [`DEFAULT_MAX_KEYS`].
    pub max_keys: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            bootstrap: Vec::new(),
            no_bootstrap: false,
            port: 0,
            bind: Ipv4Addr::UNSPECIFIED,
            server: true,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// Starts a DHT node (it runs on its own thread until dropped).
///
/// The Mainline DHT is IPv4 only here (the `mainline` crate has no BEP 32), so a node that
/// cannot reach its bootstrap nodes over IPv4 (an IPv6-only host) is refused with an error
/// saying so, instead of sitting alone.
pub fn start_node(config: &DhtConfig) -> std::io::Result<AsyncDht> {
    if !config.no_bootstrap {
        ipv4_reaches(&config.bootstrap)?;
    }
    let mut b = Dht::builder();
    if config.no_bootstrap {
        b.no_bootstrap();
    } else if !config.bootstrap.is_empty() {
        b.bootstrap(&config.bootstrap);
    }
    if config.server {
        b.server_mode();
    }
    b.port(config.port)
        .bind_address(config.bind)
        .request_timeout(config.request_timeout)
        .server_settings(ServerSettings {
            // A client holds nothing for others.
            max_info_hashes: if config.server {
                config.max_keys.max(1)
            } else {
                1
            },
            max_peers_per_info_hash: MAX_PEERS_PER_KEY,
            max_total_peers: MAX_STORED_PEERS,
            ..Default::default()
        });
    Ok(b.build()?.as_async())
}

/// Where to probe for an IPv4 route when the public bootstrap nodes are used: any global
/// address goes by the default route (TEST-NET-1: nothing is sent, see [`ipv4_reaches`]).
const PUBLIC_PROBE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 6881);

/// Whether this host can reach the bootstrap nodes (none given: the public ones) over IPv4,
/// asked of the routing table: a UDP socket's `connect` chooses a route and sends nothing.
fn ipv4_reaches(bootstrap: &[String]) -> std::io::Result<()> {
    use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
    let ipv4_only = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::NetworkUnreachable,
            format!(
                "{what}: the DHT is IPv4 only (BEP 5; the mainline crate has no IPv6 DHT), so \
                 an IPv6-only host cannot join it; share and search through an index instead"
            ),
        )
    };
    let targets: Vec<SocketAddrV4> = if bootstrap.is_empty() {
        vec![PUBLIC_PROBE]
    } else {
        let mut v4 = Vec::new();
        let mut resolved = false;
        for b in bootstrap {
            // A name that does not resolve now is mainline's to report (it retries).
            if let Ok(addrs) = b.to_socket_addrs() {
                resolved = true;
                v4.extend(addrs.filter_map(|a| match a {
                    SocketAddr::V4(a) => Some(a),
                    SocketAddr::V6(_) => None,
                }));
            }
        }
        if resolved && v4.is_empty() {
            return Err(ipv4_only(format!(
                "no bootstrap node has an IPv4 address ({})",
                bootstrap.join(", ")
            )));
        }
        v4
    };
    if targets.is_empty() {
        return Ok(());
    }
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    if targets.iter().any(|t| socket.connect(t).is_ok()) {
        Ok(())
    } else {
        Err(ipv4_only(
            "this host has no IPv4 route to the bootstrap nodes".into(),
        ))
    }
}

#[cfg(test)]
mod ipv4_tests {
    use super::*;

    #[test]
    fn ipv6_bootstrap_nodes_are_refused_with_the_reason() {
        let e = ipv4_reaches(&["[::1]:6881".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("IPv4 only") && e.contains("[::1]:6881"), "{e}");
        assert!(ipv4_reaches(&["127.0.0.1:6881".into()]).is_ok());
    }
}
