//! `IndexServer`: accepts peers and clients, authenticates registrations, answers searches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::address_check::AddressChecks;
use super::cache::CacheConfig;
use super::handler::{Handler, Remote};
use super::relay::{RelayConfig, RelayHub};
use super::{IndexStore, PrivateGroup};
use crate::identity::Identity;
use crate::metrics::{ConnectionError, IndexMetrics};
use crate::protocol::{
    Connection, Connections, HANDSHAKE_TIMEOUT, Limits, MAX_FRAME_LEN, MemoryBudget, ServeLimits,
    ServerSide, accept_loop,
};
use crate::query::now_ms;
use crate::tls::{Tls, secure_admitted};

/// Default of [`IndexConfig::lease`].
pub const LEASE: Duration = Duration::from_secs(90);
/// Default of [`IndexConfig::forget_after`].
pub const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default of [`IndexConfig::max_connections`].
pub const MAX_CONNECTIONS: usize = 1024;
/// Default of [`IndexConfig::max_connections_per_ip`].
pub const MAX_CONNECTIONS_PER_IP: usize = 64;
/// Default of [`IndexConfig::limits`]: longest wait for a client's next message.
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Default of [`IndexConfig::limits`]: longest time to send one reply.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`IndexConfig::frame_timeout`].
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`IndexConfig::request_memory`].
pub const REQUEST_MEMORY: usize = 64 * 1024 * 1024;
/// Default of [`IndexConfig::shutdown_grace`].
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of an index server.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// How long a registration stays live without a heartbeat. Default: [`LEASE`].
    pub lease: Duration,
    /// How long a peer that is not heard from is kept (with its files, its id reserved for its
    /// key) before it is forgotten; at least two leases. Ephemeral peers are forgotten after
    /// [`EPHEMERAL_PURGE_LEASES`] leases. Default: [`FORGET_AFTER`].
    pub forget_after: Duration,
    /// Most connections open at once; a new one beyond it closes the connection waiting
    /// longest for a request (see [`ServeLimits`]). Default: [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Most connections from one address once half of `max_connections` are open.
    /// Default: [`MAX_CONNECTIONS_PER_IP`].
    pub max_connections_per_ip: usize,
    /// Longest wait for a new connection's `Hello`. Default: [`HANDSHAKE_TIMEOUT`] (5 s).
    pub handshake_timeout: Duration,
    /// Per-connection time limits. Default: [`READ_TIMEOUT`] to receive a message,
    /// [`WRITE_TIMEOUT`] to send one.
    pub limits: Limits,
    /// Longest time from a request's first byte to its last. Default: [`FRAME_TIMEOUT`].
    pub frame_timeout: Duration,
    /// Bytes all connections may hold together in requests above 16 KiB as they arrive
    /// (see [`MemoryBudget`]). Default: [`REQUEST_MEMORY`].
    pub request_memory: usize,
    /// How long shutdown waits for open connections. Default: [`SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
    /// Recent search replies kept for repeated queries. Default: [`CacheConfig::default`].
    pub search_cache: CacheConfig,
    /// Word searches computed at once (the rest wait their turn, repeated queries are served
    /// from the cache meanwhile). Default: the number of CPUs.
    pub search_threads: usize,
    /// Rendezvous and relay (§7.10). Default: [`RelayConfig::default`] (on).
    pub relay: RelayConfig,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            lease: LEASE,
            forget_after: FORGET_AFTER,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            limits: Limits {
                read_timeout: READ_TIMEOUT,
                write_timeout: WRITE_TIMEOUT,
            },
            frame_timeout: FRAME_TIMEOUT,
            request_memory: REQUEST_MEMORY,
            shutdown_grace: SHUTDOWN_GRACE,
            search_cache: CacheConfig::default(),
            search_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            relay: RelayConfig::default(),
        }
    }
}

/// The indexing server over an already-bound listener.
pub struct IndexServer {
    store: Arc<IndexStore>,
    tls: Tls,
    /// Set for a private index: only members get in.
    group: Option<Arc<PrivateGroup>>,
    /// The checks of registering peers' addresses.
    checks: AddressChecks,
    config: IndexConfig,
    searches: Arc<Semaphore>,
    connections: Connections,
    budget: MemoryBudget,
    metrics: IndexMetrics,
    relay: RelayHub,
}

impl IndexServer {
    /// A server over `store` (opened by the caller), with these settings, proving the key of
    /// `tls` to its clients.
    pub fn new(mut store: IndexStore, config: IndexConfig, tls: Tls) -> Self {
        store.configure(config.lease.as_millis() as i64, config.search_cache);
        let metrics = IndexMetrics::default();
        IndexServer {
            relay: RelayHub::new(config.relay.clone(), metrics.clone()),
            store: Arc::new(store),
            tls: tls.clone(),
            group: None,
            checks: AddressChecks::new(tls.clone()),
            searches: Arc::new(Semaphore::new(config.search_threads.max(1))),
            connections: Connections::new(ServeLimits {
                max_connections: config.max_connections,
                max_per_ip: config.max_connections_per_ip,
                handshake_timeout: config.handshake_timeout,
                grace: config.shutdown_grace,
            }),
            budget: MemoryBudget::new(config.request_memory),
            metrics,
            config,
        }
    }

    /// Makes this a private index: only the members of its group, which `identity` (the key
    /// of its [`Tls`]) signs certificates for, may do anything but join.
    pub fn private(mut self, identity: Identity) -> Self {
        self.group = Some(PrivateGroup::new(identity));
        self
    }

    /// This index's UDP side (§7.11), sharing its store, key, group and connection table:
    /// run it on a UDP endpoint bound to the same port number.
    pub fn udp(&self) -> super::IndexUdp {
        super::IndexUdp::new(
            self.store.clone(),
            self.tls.clone(),
            self.group.clone(),
            self.connections.clone(),
            self.config.clone(),
        )
    }

    /// Tests: starts recording every byte the relay forwards.
    #[cfg(test)]
    pub(crate) fn relay_tap(&self) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
        self.relay.tap()
    }

    /// The open connections (for their counts).
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// The memory all connections share for large requests.
    pub fn memory_budget(&self) -> MemoryBudget {
        self.budget.clone()
    }

    /// This server's metrics, and what renders them with its state.
    pub fn metrics(&self) -> IndexMetricsSource {
        IndexMetricsSource {
            metrics: self.metrics.clone(),
            registry: Arc::new(self.metrics.registry()),
            store: self.store.clone(),
            connections: self.connections.clone(),
            lease: self.config.lease,
        }
    }

    /// Serves until `shutdown` is cancelled, then waits up to the grace period for connections.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        tokio::spawn(purge_loop(
            self.store.clone(),
            self.config.lease,
            self.config.forget_after,
            shutdown.clone(),
        ));
        if let Some(g) = &self.group {
            tokio::spawn(g.clone().refresh_loop(self.store.clone(), shutdown.clone()));
        }
        let connections = self.connections.clone();
        accept_loop(
            listener,
            connections,
            shutdown.clone(),
            |stream, addr, admission| {
                let (store, config, shutdown) =
                    (self.store.clone(), self.config.clone(), shutdown.clone());
                let searches = self.searches.clone();
                let metrics = self.metrics.clone();
                metrics.connections.inc();
                let (tls, checks, budget, group, relay) = (
                    self.tls.clone(),
                    self.checks.clone(),
                    self.budget.clone(),
                    self.group.clone(),
                    self.relay.clone(),
                );
                async move {
                    let Some(secured) = secure_admitted(&tls, stream, &admission).await else {
                        metrics.errors.get(ConnectionError::Tls).inc();
                        return;
                    };
                    let conn = Connection::server(
                        secured.stream,
                        config.limits,
                        ServerSide {
                            admission: Some(admission),
                            budget: Some(budget),
                            max_frame: MAX_FRAME_LEN,
                            frame_timeout: config.frame_timeout,
                        },
                    );
                    let remote = Remote {
                        addr,
                        key: secured.remote_key,
                        group,
                        relay,
                    };
                    let handler =
                        Handler::new(conn, remote, store, config, searches, checks, &metrics);
                    match handler.run(shutdown).await {
                        Ok(()) => debug!(%addr, "connection closed"),
                        Err(e) => {
                            metrics.errors.get(e.kind()).inc();
                            info!(%addr, "connection closed: {e}")
                        }
                    }
                }
            },
        )
        .await;
    }
}

/// An index server's metrics with what renders them: its gauges are read from the server's
/// state (its store and its connections) each time.
#[derive(Clone)]
pub struct IndexMetricsSource {
    metrics: IndexMetrics,
    registry: Arc<prometheus_client::registry::Registry>,
    store: Arc<IndexStore>,
    connections: Connections,
    lease: Duration,
}

impl IndexMetricsSource {
    /// The counters, to read (tests) or add to.
    pub fn metrics(&self) -> &IndexMetrics {
        &self.metrics
    }

    /// The metrics' text now, in the Prometheus text format ([`crate::metrics::CONTENT_TYPE`]).
    /// Blocks for a moment if a write holds the name index.
    pub fn render(&self) -> String {
        let m = &self.metrics;
        let stats = self.connections.stats();
        m.connections_open.set(stats.open as i64);
        m.connections_refused
            .inner()
            .store(stats.refused, Ordering::Relaxed);
        m.connections_evicted
            .inner()
            .store(stats.evicted, Ordering::Relaxed);
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let counts = self.store.counts(now_ms().saturating_sub(lease_ms));
        m.rows.set(counts.rows as i64);
        m.files.set(counts.files as i64);
        m.peers_known.set(counts.peers_known as i64);
        m.peers_live.set(counts.peers_live as i64);
        crate::metrics::render(&self.registry)
    }
}

/// Ephemeral peers not heard from for this many leases are forgotten. One whose connection
/// closes is forgotten at once; this catches one whose connection hangs.
pub const EPHEMERAL_PURGE_LEASES: u32 = 2;

/// Every lease period, forgets ephemeral peers whose lease ran out
/// [`EPHEMERAL_PURGE_LEASES`] leases ago and other peers not seen for `forget_after`.
async fn purge_loop(
    store: Arc<IndexStore>,
    lease: Duration,
    forget_after: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(lease.max(Duration::from_secs(1)));
    // Saturating: an absurdly long setting means "never", not a wrapped-around negative age.
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let forget_after = ms(forget_after.max(lease.saturating_mul(2)));
    let ephemeral_after = ms(lease.saturating_mul(EPHEMERAL_PURGE_LEASES));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let (ephemeral, others) = (
            now.saturating_sub(ephemeral_after),
            now.saturating_sub(forget_after),
        );
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.purge(ephemeral, others)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!("forgot {n} peers not heard from for long"),
            Ok(Err(e)) => tracing::warn!("forgetting expired peers: {e}"),
            Err(e) => tracing::warn!("forgetting expired peers: {e}"),
        }
    }
}
