//! `start_node`: joins the Mainline DHT (or a private network of it) as a client or a server node.

use std::net::Ipv4Addr;
use std::time::Duration;

use mainline::Dht;
use mainline::async_dht::AsyncDht;

/// How to join the DHT.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Bootstrap nodes, `HOST:PORT`. Default: empty, meaning the public Mainline bootstrap nodes.
    pub bootstrap: Vec<String>,
    /// UDP port to bind; 0 picks a free one. Default: 0.
    pub port: u16,
    /// Address to bind. Default: 0.0.0.0.
    pub bind: Ipv4Addr,
    /// Answer other nodes (server mode), as long-running peers should. Default: true.
    pub server: bool,
    /// How long to wait for one node's answer. Default: 2 s.
    pub request_timeout: Duration,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            bootstrap: Vec::new(),
            port: 0,
            bind: Ipv4Addr::UNSPECIFIED,
            server: true,
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// Starts a DHT node (it runs on its own thread until dropped).
pub fn start_node(config: &DhtConfig) -> std::io::Result<AsyncDht> {
    let mut b = Dht::builder();
    if !config.bootstrap.is_empty() {
        b.bootstrap(&config.bootstrap);
    }
    if config.server {
        b.server_mode();
    }
    b.port(config.port)
        .bind_address(config.bind)
        .request_timeout(config.request_timeout);
    Ok(b.build()?.as_async())
}
