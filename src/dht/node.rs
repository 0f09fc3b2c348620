//! `start_node`: joins the Mainline DHT (or a private network of it) as a client or a server node.

use std::net::Ipv4Addr;
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
pub fn start_node(config: &DhtConfig) -> std::io::Result<AsyncDht> {
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
