//! `start_share`: a sharing node: scan, serve, keep the index and the DHT told, follow changes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::register::Registration;
use crate::content::Digest;
use crate::dht::{DhtConfig, PublishConfig, run_publisher, start_node};
use crate::group::GroupState;
use crate::identity::{Identity, IdentityError, StateLock};
use crate::peer::{Catalog, PeerConfig, PeerServer, ScanError, ScanOptions, Scanner, watch_roots};
use crate::protocol::Limits;
use crate::tls::{Tls, TlsError};

/// How often a share rescans its directories without filesystem events.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(60);
/// How long a share waits after a filesystem event for more before rescanning.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// How often DHT announcements are renewed (DHT nodes forget them after about 30 minutes).
pub const DHT_REFRESH: Duration = Duration::from_secs(15 * 60);
/// Longest wait in [`ShareHandle::shutdown`] for the tasks (unregistering included) to end.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Settings of a sharing peer.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    /// Directories to share (recursively).
    pub roots: Vec<PathBuf>,
    /// Index server `HOST:PORT`; `None` serves without registering.
    pub index: Option<String>,
    /// The private group this peer is a member of: it serves members only, and presents its
    /// certificate. Default: none (an open index).
    pub group: Option<Arc<GroupState>>,
    /// The key the index must hold. Default: none, the key it shows on the first connection
    /// (then required on every later one).
    pub index_key: Option<Digest>,
    /// `HOST:PORT` other peers must use, when it differs from the listening address.
    /// Default: the listening port, at the address the index sees the peer connect from.
    pub advertise: Option<(String, u16)>,
    /// Where the identity key and hash cache live.
    pub state_dir: PathBuf,
    /// What the scanner shares (hidden files or not). Default: [`ScanOptions::default`].
    pub scan: ScanOptions,
    /// Rescan this often even without filesystem events. Default: [`RESCAN_INTERVAL`].
    pub rescan_interval: Duration,
    /// Wait this long after a filesystem event for more before rescanning. Default: [`DEBOUNCE`].
    pub debounce: Duration,
    /// How pieces are served (upload slots, rate). Default: [`PeerConfig::default`].
    pub peer: PeerConfig,
    /// Time limits of the connection to the index. Default: [`Limits::default`].
    pub index_limits: Limits,
    /// Also publish on the DHT, joined as a server node. Default: none.
    pub dht: Option<DhtConfig>,
    /// How often DHT announcements are renewed. Default: [`DHT_REFRESH`].
    pub dht_refresh: Duration,
    /// Most DHT announcements started per second. Default:
    /// [`crate::dht::DEFAULT_ANNOUNCE_RATE`].
    pub dht_rate: f64,
    /// Run the wish list of the state directory on this schedule, searching the index
    /// ([`super::WishList`]). Default: none.
    pub wishes: Option<super::WishSchedule>,
    /// Ask the router to forward the port (UPnP, PCP, NAT-PMP) and register the mapped
    /// address, unless `advertise` is given. Default: none (the CLI asks unless
    /// `--no-port-mapping`).
    pub port_mapping: Option<crate::portmap::PortMapConfig>,
    /// Announce this peer on the LAN with mDNS/DNS-SD ([`crate::lan`]) while it runs.
    /// Default: false.
    pub lan: bool,
    /// Volunteer as a relay for the other members of the index, within these bounds
    /// (`share --relay`, docs/PROTOCOL.md §7.10): the index takes it when it reaches this
    /// peer directly. Default: none.
    pub relay: Option<crate::splice::SpliceLimits>,
}

impl ShareConfig {
    /// Sharing `roots`, registered with `index` when given, with every other setting at its
    /// default.
    pub fn new(roots: Vec<PathBuf>, index: Option<String>, state_dir: PathBuf) -> Self {
        ShareConfig {
            roots,
            index,
            index_key: None,
            group: None,
            advertise: None,
            state_dir,
            scan: ScanOptions::default(),
            rescan_interval: RESCAN_INTERVAL,
            debounce: DEBOUNCE,
            peer: PeerConfig::default(),
            index_limits: Limits::default(),
            dht: None,
            dht_refresh: DHT_REFRESH,
            dht_rate: crate::dht::DEFAULT_ANNOUNCE_RATE,
            wishes: None,
            port_mapping: None,
            lan: false,
            relay: None,
        }
    }
}

/// Why a share could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The identity key or the state directory (in use by another process, say).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The identity key cannot be used for TLS.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The first scan of the shared directories.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The first scan's task panicked.
    #[error("scanner task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The listener has no local address.
    #[error("cannot read the listening address: {0}")]
    Listener(std::io::Error),
    /// The DHT node could not start.
    #[error("cannot join the DHT: {0}")]
    Dht(std::io::Error),
}

/// What a running share is doing, for the CLI and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareStatus {
    /// Files in the current catalog.
    pub files_shared: usize,
    /// Catalog scans completed.
    pub scans: u64,
    /// Peer id given by the index, once registered.
    pub peer_id: Option<u64>,
    /// Files the index acknowledged holding for this peer.
    pub files_registered: Option<u64>,
    /// The index holds exactly the current catalog.
    pub in_sync: bool,
    /// The last error talking to the index, if the last attempt failed.
    pub last_error: Option<String>,
    /// DHT keys announced in the last round (content ids and keywords), once one has run.
    pub dht_announced: Option<usize>,
    /// DHT keys the current catalog needs.
    pub dht_keys: usize,
    /// Announcement rounds completed (the first, changes, renewals, retries).
    pub dht_rounds: u64,
    /// The port mapped on the router, once it is (stays until the share stops).
    pub port_mapped: Option<crate::portmap::Mapped>,
    /// How the index says others reach this peer, once registered: `"direct"` at
    /// [`ShareStatus::reachable_at`], or `"relay"` through the index (§7.10).
    pub reach: Option<String>,
    /// `IP:PORT` others reach this peer at, when reached directly.
    pub reachable_at: Option<String>,
    /// The address the index sees this peer's connection come from (`IP:PORT`).
    pub observed: Option<String>,
    /// The control channel to the index is open (a peer reached through the relay, or a
    /// volunteer relay).
    pub listening: bool,
    /// With [`ShareConfig::relay`], once registered: whether the index took this peer as a
    /// volunteer relay (it takes only one it reaches directly).
    pub volunteer: Option<bool>,
    /// The key of the index registered with.
    pub index_key: Option<Digest>,
}

/// A running share; dropping it does not stop it: call [`ShareHandle::shutdown`].
pub struct ShareHandle {
    /// The address pieces are served on.
    pub local_addr: SocketAddr,
    /// The DHT node's UDP address, when publishing on the DHT.
    pub dht_addr: Option<std::net::SocketAddrV4>,
    /// The LAN announcement: its service instance name, or why there is none (with
    /// [`ShareConfig::lan`]).
    pub lan: Option<Result<String, String>>,
    /// The UDP transport's state (its address, the address the index sees it at), when the
    /// port could be bound.
    pub udp: Option<watch::Receiver<super::UdpStatus>>,
    /// What the share is doing; changes whenever the status does.
    pub status: watch::Receiver<ShareStatus>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl ShareHandle {
    /// Stops serving, unregisters from the index and waits for the tasks, at most
    /// [`SHUTDOWN_WAIT`].
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, self.tasks.wait()).await;
    }

    /// Waits until `pred` holds for the status, or `timeout` passes; returns the last status.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&ShareStatus) -> bool,
    ) -> Result<ShareStatus, ShareStatus> {
        let r = tokio::time::timeout(timeout, self.status.wait_for(|s| pred(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match r {
            Ok(Ok(s)) => Ok(s),
            _ => Err(self.status.borrow().clone()),
        }
    }
}

/// Scans the shared directories, then serves them on `listener` and keeps the index informed.
pub async fn start_share(
    config: ShareConfig,
    listener: TcpListener,
) -> Result<ShareHandle, ShareError> {
    // Before anything else: a second process on this identity must not even scan.
    let lock = StateLock::acquire(&config.state_dir)?;
    let identity = Identity::load_or_create(&config.state_dir)?;
    let mut tls = Tls::new(&identity)?;
    if let Some(group) = &config.group {
        tls = tls.with_group(group.clone());
    }
    let local_addr = listener.local_addr().map_err(ShareError::Listener)?;
    let scanner = Arc::new(Scanner::new(
        &config.roots,
        &config.state_dir,
        config.scan.clone(),
    )?);
    let first = {
        let s = scanner.clone();
        tokio::task::spawn_blocking(move || s.scan()).await??
    };
    info!(
        "sharing {} files from {}",
        first.len(),
        config
            .roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let first = Arc::new(first);
    let (catalog_tx, catalog_rx) = watch::channel(first.clone());
    let (status_tx, status_rx) = watch::channel(ShareStatus {
        files_shared: first.len(),
        scans: 1,
        ..Default::default()
    });
    let status_tx = Arc::new(status_tx);
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let stale = Arc::new(Notify::new());

    let mut server = PeerServer::new(
        catalog_rx.clone(),
        scanner.roots(),
        config.peer.clone(),
        stale.clone(),
        tls.clone(),
    );
    let desk = config.relay.map(crate::peer::RelayDesk::new);
    if let Some(desk) = &desk {
        server = server.with_relay_desk(desk.clone());
    }
    // The UDP transport on the same port number, listening for punches through the index.
    let udp = super::udp::start(
        &server,
        &tls,
        local_addr,
        config.index.clone().map(|i| (i, config.index_key)),
        &tasks,
        &shutdown,
    );
    if let Some(index) = config.index.clone() {
        tasks.spawn(
            super::relay::RelayListener {
                index,
                index_key: config.index_key,
                tls: tls.clone(),
                server: server.clone(),
                desk,
                limits: config.index_limits,
                status: status_tx.clone(),
                shutdown: shutdown.clone(),
            }
            .run(),
        );
    }
    tasks.spawn(server.run(listener, shutdown.clone()));
    tasks.spawn(rescan_loop(
        scanner,
        config.clone(),
        catalog_tx,
        status_tx.clone(),
        stale,
        shutdown.clone(),
    ));
    let mut dht_addr = None;
    // A member without its group's DHT secret (a record from before it existed) must not
    // announce the group's files in public.
    let group_without_secret = config
        .group
        .as_ref()
        .is_some_and(|g| g.dht_secret().is_none());
    if group_without_secret && config.dht.is_some() {
        warn!("not publishing on the DHT: this membership has no group DHT secret; join again");
    }
    if let Some(dht_config) = config.dht.as_ref().filter(|_| !group_without_secret) {
        let dht = start_node(dht_config).map_err(ShareError::Dht)?;
        dht_addr = Some(dht.info().await.local_addr());
        let port = config
            .advertise
            .as_ref()
            .map_or(local_addr.port(), |(_, p)| *p);
        let mut publish = PublishConfig::new(port);
        if let Some(secret) = config.group.as_ref().and_then(|g| g.dht_secret()) {
            publish.keys = crate::dht::KeySpace::group(secret);
        }
        publish.refresh = config.dht_refresh;
        publish.rate = config.dht_rate;
        let st = status_tx.clone();
        tasks.spawn(run_publisher(
            dht,
            publish,
            catalog_rx.clone(),
            move |ok, keys| {
                st.send_modify(|s| {
                    s.dht_announced = Some(ok);
                    s.dht_keys = keys;
                    s.dht_rounds += 1;
                })
            },
            shutdown.clone(),
        ));
    }
    let lan = config
        .lan
        .then(|| super::lan::announce(&tls, local_addr, &tasks, shutdown.clone()));
    if let (Some(schedule), Some(index)) = (config.wishes.clone(), config.index.clone()) {
        let runner = super::wishes::WishRunner {
            list: super::WishList::new(&config.state_dir),
            index,
            index_key: config.index_key,
            known: super::KnownIndexes::new(&config.state_dir),
            tls: tls.clone(),
            schedule,
        };
        tasks.spawn(runner.run(status_rx.clone(), shutdown.clone()));
    } else if config.wishes.is_some()
        && super::WishList::new(&config.state_dir)
            .load()
            .is_ok_and(|w| !w.is_empty())
    {
        warn!("the wishes are not run: they search an index, and this share has none");
    }
    // The port mapping runs beside the serving, which does not wait for it; the registration
    // does (at most portmap::MAP_TIMEOUT), to register the mapped address.
    let mapping = port_mapping(&config, local_addr, &status_tx, &tasks, &shutdown);
    // The state directory stays locked until the index has been told this peer left (or the
    // share stops, without an index).
    if let Some(index) = config.index.clone() {
        let (status, stop) = (status_tx, shutdown.clone());
        tasks.spawn(async move {
            let mut config = config;
            if let Some(external) = mapping.await {
                // An index inside our own networks reaches the LAN address; the mapped one
                // would need the router to loop it back (hairpinning), which many cannot.
                if index_is_public(&index).await {
                    config.advertise = Some((external.ip().to_string(), external.port()));
                } else {
                    info!("the index is on this network: registering the local address, not {external}");
                }
            }
            Registration {
                index,
                index_key: config.index_key,
                identity,
                tls,
                config,
                local_addr,
                catalog: catalog_rx,
                status,
                shutdown: stop,
            }
            .run()
            .await;
            drop(lock);
        });
    } else {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            stop.cancelled().await;
            drop(lock);
        });
    }
    Ok(ShareHandle {
        local_addr,
        dht_addr,
        lan,
        udp,
        status: status_rx,
        shutdown,
        tasks,
    })
}

/// Whether the index `HOST:PORT[#KEY]` is on the public internet (a name: any of its
/// addresses; one that does not resolve within a few seconds counts as public).
async fn index_is_public(index: &str) -> bool {
    let addr = index.split('#').next().unwrap_or(index);
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::lookup_host(addr)).await {
        Ok(Ok(mut addrs)) => addrs.any(|a| crate::index::is_public(a.ip())),
        _ => true,
    }
}

/// Starts mapping the port on the router when the config asks for it (and no address to
/// advertise is given); the future gives the mapped external address, or `None` at once
/// when nothing is asked.
fn port_mapping(
    config: &ShareConfig,
    local_addr: SocketAddr,
    status: &Arc<watch::Sender<ShareStatus>>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> impl std::future::Future<Output = Option<SocketAddr>> + Send + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel();
    match config
        .port_mapping
        .clone()
        .filter(|_| config.advertise.is_none())
    {
        Some(pm) => {
            let (status, stop) = (status.clone(), shutdown.clone());
            tasks.spawn(async move {
                let lease = tokio::select! {
                    _ = stop.cancelled() => None,
                    l = crate::portmap::map_port(local_addr, pm) => l,
                };
                let Some(lease) = lease else {
                    let _ = tx.send(None);
                    return;
                };
                let mapped = lease.mapped().clone();
                info!("reachable at {mapped}");
                let _ = tx.send(Some(mapped.external));
                status.send_modify(|s| s.port_mapped = Some(mapped));
                lease.keep(stop).await;
            });
        }
        None => {
            let _ = tx.send(None);
        }
    }
    async move { rx.await.ok().flatten() }
}

async fn rescan_loop(
    scanner: Arc<Scanner>,
    config: ShareConfig,
    catalog_tx: watch::Sender<Arc<Catalog>>,
    status: Arc<watch::Sender<ShareStatus>>,
    stale: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let (_watcher, mut events) = match watch_roots(&scanner.roots()) {
        Ok((w, rx)) => (Some(w), rx),
        Err(e) => {
            warn!(
                "cannot watch the shared directories ({e}); rescanning every {:?}",
                config.rescan_interval
            );
            (None, tokio::sync::mpsc::channel(1).1)
        }
    };
    let mut tick = tokio::time::interval(config.rescan_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = stale.notified() => {}
            Some(()) = events.recv() => {
                // Let a burst of changes settle, then rescan once.
                tokio::time::sleep(config.debounce).await;
                while events.try_recv().is_ok() {}
            }
        }
        let s = scanner.clone();
        let catalog = match tokio::task::spawn_blocking(move || s.scan()).await {
            Ok(Ok(c)) => Arc::new(c),
            Ok(Err(e)) => {
                warn!("rescan failed: {e}");
                continue;
            }
            Err(e) => {
                warn!("rescan task failed: {e}");
                continue;
            }
        };
        let changed = catalog.digest() != catalog_tx.borrow().digest();
        status.send_modify(|st| {
            st.scans += 1;
            st.files_shared = catalog.len();
        });
        if changed {
            info!("shared files changed: now {} files", catalog.len());
            let _ = catalog_tx.send(catalog);
        }
    }
}
