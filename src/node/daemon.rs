//! The long-running node: a share ([`start_share`]) plus the download queue ([`Queue`]) and
//! the runner that works through it, behind one handle ([`NodeHandle`]) that an HTTP API or
//! a UI calls: add, pause, resume, cancel, reorder; status, search, settings; live events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mainline::async_dht::AsyncDht;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::queue::{Counts, Item, ItemKind, ItemState, NewItem, Queue, QueueError};
use super::{
    FolderFile, FolderSpec, GetError, GetEvent, GetOptions, HaveAlready, ShareConfig, ShareHandle,
    ShareStatus, add_dht_sources, download_hit, get_tree, lookup_many, start_share,
};
use crate::content::{ContentId, Digest};
use crate::index::IndexClient;
use crate::peer::HashStatus;
use crate::protocol::{FileHit, Limits, MAX_SEARCH_LIMIT, PeerRecord, Search};
use crate::rate::RateLimiter;
use crate::tls::Tls;

/// The settings file in the state directory (JSON).
pub const SETTINGS_FILE: &str = "node-settings.json";

/// Most downloads a node runs at once, at most (the `parallel` setting's ceiling).
pub const MAX_PARALLEL: usize = 64;

/// Most upload slots the setting takes.
pub const MAX_UPLOAD_SLOTS: usize = 1024;

/// Most files a query item downloads; more matching refuses the item.
pub const MAX_QUERY_FILES: usize = 10_000;

/// How often live progress is sent to event subscribers.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Events kept for a slow subscriber before it misses some (it is told, and reloads).
pub const EVENT_BUFFER: usize = 1024;

/// Sources of an item shown, at most.
const MAX_SOURCES_SHOWN: usize = 32;

/// What a user may change while the node runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Limit on download bandwidth in bytes per second (0: none).
    pub max_download_rate: u64,
    /// Limit on upload bandwidth in bytes per second (0: none).
    pub max_upload_rate: u64,
    /// Peers served at once. Applies from the node's next start (the peer server sizes its
    /// slots when it starts).
    pub upload_slots: usize,
    /// Queue items downloaded at once (1..=[`MAX_PARALLEL`]).
    pub parallel: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_download_rate: 0,
            max_upload_rate: 0,
            upload_slots: crate::peer::UPLOAD_SLOTS,
            parallel: 3,
        }
    }
}

/// A change of some settings (`None`: unchanged).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// See [`Settings::max_download_rate`].
    pub max_download_rate: Option<u64>,
    /// See [`Settings::max_upload_rate`].
    pub max_upload_rate: Option<u64>,
    /// See [`Settings::upload_slots`].
    pub upload_slots: Option<usize>,
    /// See [`Settings::parallel`].
    pub parallel: Option<usize>,
}

/// Why the node refused something (the HTTP layer maps these to status codes).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// From the queue (unknown id, a state that does not allow it, the database).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A value out of range or malformed.
    #[error("{0}")]
    BadValue(String),
    /// The node has no index (searching, browsing and folders need one).
    #[error("no index: start the node with --index")]
    NoIndex,
    /// The index could not be asked.
    #[error("index: {0}")]
    Index(String),
    /// Writing a file in the state directory failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How the node is set up.
pub struct NodeConfig {
    /// The share (directories, index, DHT, group, peer server settings).
    pub share: ShareConfig,
    /// Where downloads go.
    pub output: PathBuf,
    /// The key the index and sources see when downloading: a member's in a private group
    /// (`None`: fresh anonymous keys).
    pub tls: Option<Tls>,
    /// A DHT node to find more sources through, when the DHT is on.
    pub dht: Option<AsyncDht>,
    /// Settings to start with when the state directory has none saved.
    pub settings: Settings,
    /// Also look in these directories for files already downloaded.
    pub look_in: Vec<PathBuf>,
}

/// A source of a running item and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceView {
    /// Its id at the index (0: found through the DHT).
    pub peer_id: u64,
    /// `HOST:PORT`.
    pub address: String,
    /// How it is reached: `direct` (to its address, TCP or QUIC), `punched` (over UDP after a
    /// hole punch, docs/PROTOCOL.md §7.11) or `relayed` (through the index, §7.10); as the
    /// index lists it until a file from it is done.
    pub reached: &'static str,
    /// Where it keeps the file in its share, when the index said (a folder download of
    /// `PEER_ID:` + its directory gets the file's folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// An item as the API shows it: stored fields and, while it runs, its live figures.
#[derive(Debug, Clone, Serialize)]
pub struct ItemView {
    /// The stored item.
    #[serde(flatten)]
    pub item: Item,
    /// Bytes per second now (running items).
    pub rate: Option<u64>,
    /// Seconds left at this rate, when known.
    pub eta_seconds: Option<u64>,
    /// Sources sending pieces now.
    pub active_sources: usize,
    /// Its sources and how each is reached.
    pub sources: Vec<SourceView>,
}

/// A page of the queue.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The items, in queue order.
    pub items: Vec<ItemView>,
    /// Items in all (in the state asked for).
    pub total: u64,
    /// Where this page starts.
    pub offset: usize,
}

/// What the share is doing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShareView {
    /// The directories shared.
    pub roots: Vec<String>,
    /// Scanned and serving (false while the first scan runs).
    pub started: bool,
    /// Why the share could not start, if it could not.
    pub error: Option<String>,
    /// The share's own status, once started.
    pub status: Option<ShareStatusView>,
    /// Hashing progress of the scan in progress (or the last one).
    pub hashing: Option<HashView>,
    /// The address pieces are served on.
    pub listen: Option<String>,
}

/// [`ShareStatus`] for the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShareStatusView {
    /// Files shared.
    pub files_shared: usize,
    /// Scans done.
    pub scans: u64,
    /// Our id at the index, once registered.
    pub peer_id: Option<u64>,
    /// Files the index has from us.
    pub files_registered: Option<u64>,
    /// The index has our current list.
    pub in_sync: bool,
    /// The last error talking to the index, if any.
    pub last_error: Option<String>,
    /// Keys announced on the DHT in the last round (when publishing there).
    pub dht_announced: Option<usize>,
    /// How other peers reach this node, as the index found: `"direct"` (at `reachable_at`)
    /// or `"relay"` (through the index, docs/PROTOCOL.md §7.10); `None` before registering.
    pub reach: Option<String>,
    /// `IP:PORT` other peers reach this node at, when reached directly.
    pub reachable_at: Option<String>,
    /// With `--relay`, once registered: whether the index took this node as a volunteer
    /// relay for the other members (§7.10).
    pub relaying: Option<bool>,
}

impl From<&ShareStatus> for ShareStatusView {
    fn from(s: &ShareStatus) -> Self {
        ShareStatusView {
            files_shared: s.files_shared,
            scans: s.scans,
            peer_id: s.peer_id,
            files_registered: s.files_registered,
            in_sync: s.in_sync,
            last_error: s.last_error.clone(),
            dht_announced: s.dht_announced,
            reach: s.reach.clone(),
            reachable_at: s.reachable_at.clone(),
            relaying: s.volunteer,
        }
    }
}

/// How hashing goes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct HashView {
    /// Files hashed.
    pub files_done: u64,
    /// Files to hash.
    pub files: u64,
    /// Bytes hashed.
    pub bytes_done: u64,
    /// Bytes to hash.
    pub bytes: u64,
}

/// The node at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Items per state.
    pub queue: Counts,
    /// The running items.
    pub transfers: Vec<ItemView>,
    /// The share.
    pub share: ShareView,
    /// The peers sending to us now, and how each is reached.
    pub peers: Vec<SourceView>,
    /// What is being uploaded now, to whom.
    pub uploads: Vec<crate::peer::UploadNow>,
    /// The settings.
    pub settings: Settings,
    /// The index's address, if any.
    pub index: Option<String>,
    /// Whether the DHT is used.
    pub dht: bool,
    /// Whether the index is a private group's (we are a member).
    pub private: bool,
    /// Where downloads go.
    pub output: String,
}

/// A search result with an "already have" mark.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// Its content id.
    pub content_id: String,
    /// A name it is shared under.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Where its sources keep it (their paths in their shares; distinct, at most 8).
    pub paths: Vec<String>,
    /// Who has it.
    pub sources: Vec<SourceView>,
    /// Downloaded already (done in the queue, or found in the output or a look-in directory).
    pub have: bool,
}

/// A page of search results.
#[derive(Debug, Clone, Serialize)]
pub struct SearchPage {
    /// The results, best first.
    pub results: Vec<SearchHit>,
    /// How many matched in all (an estimate when `estimated`).
    pub total: u64,
    /// `total` is an estimate.
    pub estimated: bool,
}

/// A change pushed to event subscribers.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    /// Items were added.
    Added {
        /// Their ids.
        ids: Vec<i64>,
    },
    /// An item changed state (or was moved).
    Item {
        /// The item now.
        item: Box<ItemView>,
    },
    /// Items were removed.
    Removed {
        /// Their ids (empty with `finished`: every finished one).
        ids: Vec<i64>,
        /// Every finished item was removed.
        finished: bool,
    },
    /// The live figures of the running items.
    Progress {
        /// The running items.
        items: Vec<ItemView>,
    },
    /// The share's status changed.
    Share {
        /// The share now.
        share: Box<ShareView>,
    },
    /// The settings changed.
    Settings {
        /// The settings now.
        settings: Settings,
    },
}

/// Live figures of a running item.
#[derive(Default)]
struct Live {
    /// Bytes of the files of the item still downloading, by their position.
    files: HashMap<usize, (u64, u64, usize)>,
    /// Bytes of the files done.
    bytes_finished: u64,
    files_done: u64,
    files_total: Option<u64>,
    bytes_total: Option<u64>,
    sources: Vec<SourceView>,
    rate: f64,
    sample: Option<(Instant, u64)>,
}

impl Live {
    fn bytes_done(&self) -> u64 {
        self.bytes_finished + self.files.values().map(|f| f.0).sum::<u64>()
    }

    fn add_sources(&mut self, hit: &FileHit) {
        for p in &hit.peers {
            if self.sources.len() >= MAX_SOURCES_SHOWN {
                return;
            }
            let address = crate::protocol::host::socket_addr(&p.host, p.port)
                .map(|a| a.to_string())
                .unwrap_or_else(|_| format!("{}:{}", p.host, p.port));
            if !self.sources.iter().any(|s| s.address == address) {
                self.sources.push(SourceView {
                    peer_id: p.peer_id,
                    address,
                    // Until connected, as the index lists it (§7.10).
                    reached: match p.reach.as_deref() {
                        Some(crate::protocol::relay::reach::RELAY) => "relayed",
                        _ => "direct",
                    },
                    path: p.path.clone(),
                });
            }
        }
    }

    /// How each source of a finished file was reached, as its download found.
    fn reached(&mut self, sources: &[crate::download::SourceReport]) {
        for r in sources {
            let Some(how) = r.reached else { continue };
            if let Some(s) = self.sources.iter_mut().find(|s| {
                (!r.addr.is_empty() && s.address == r.addr)
                    || r.peer_id.is_some_and(|id| id != 0 && id == s.peer_id)
            }) {
                s.reached = how;
            }
        }
    }

    /// Updates the rate from the bytes done now (smoothed over samples a second or more apart).
    fn sample(&mut self, now: Instant) {
        let done = self.bytes_done();
        match self.sample {
            Some((at, before)) if now.duration_since(at) >= Duration::from_secs(1) => {
                let r = done.saturating_sub(before) as f64 / now.duration_since(at).as_secs_f64();
                self.rate = if self.rate == 0.0 {
                    r
                } else {
                    0.5 * self.rate + 0.5 * r
                };
                self.sample = Some((now, done));
            }
            Some(_) => {}
            None => self.sample = Some((now, done)),
        }
    }
}

struct Inner {
    queue: Arc<Queue>,
    settings: Mutex<Settings>,
    state_dir: PathBuf,
    output: PathBuf,
    index: Option<String>,
    index_key: Option<Digest>,
    /// The UDP socket downloads punch through the index with (§7.11), when there is an index.
    udp: Option<Arc<crate::download::udp::UdpRoute>>,
    private: bool,
    tls: Option<Tls>,
    dht: Option<AsyncDht>,
    /// The peers announced on the LAN, watched while the node announces itself there.
    lan: Option<crate::lan::Watch>,
    /// Where files already downloaded are looked for (the output first).
    look_in: Vec<PathBuf>,
    download_rate: Arc<RateLimiter>,
    upload_rate: Arc<RateLimiter>,
    uploads: crate::peer::UploadsNow,
    live: Mutex<HashMap<i64, Live>>,
    running: Mutex<HashMap<i64, tokio::task::AbortHandle>>,
    wake: Notify,
    events: broadcast::Sender<NodeEvent>,
    share: Mutex<ShareView>,
    hashing: Mutex<Option<HashView>>,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running node; cheap to clone. [`NodeHandle::shutdown`] stops it.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
    tasks: tokio_util::task::TaskTracker,
}

impl NodeHandle {
    /// Opens the queue and the settings in the share's state directory, starts the queue
    /// runner, and starts the share on `peer_listener` in the background (its first scan may
    /// take long; [`NodeHandle::status`] shows its progress meanwhile).
    pub fn start(
        mut config: NodeConfig,
        peer_listener: TcpListener,
    ) -> Result<NodeHandle, NodeError> {
        let state_dir = config.share.state_dir.clone();
        let queue = Arc::new(Queue::open(&state_dir)?);
        let settings = load_settings(&state_dir).unwrap_or(config.settings.clone());
        check_settings(&settings)?;
        let download_rate = Arc::new(RateLimiter::new(1));
        download_rate.set_bytes_per_sec(settings.max_download_rate);
        let upload_rate = Arc::new(RateLimiter::new(1));
        upload_rate.set_bytes_per_sec(settings.max_upload_rate);
        config.share.peer.upload_rate = Some(upload_rate.clone());
        config.share.peer.upload_slots = settings.upload_slots.max(1);
        let uploads = crate::peer::UploadsNow::default();
        config.share.peer.uploads = Some(uploads.clone());
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        // Files already downloaded: a listing is made per item (a HaveAlready keeps its first
        // listing), the hashes cached in the state directory. (Files we share are marked in
        // searches by our own peer id, not by listing the share each time.)
        let mut look_in = vec![config.output.clone()];
        look_in.extend(config.look_in.iter().cloned());
        let inner = Arc::new(Inner {
            queue,
            settings: Mutex::new(settings),
            look_in,
            state_dir,
            output: config.output.clone(),
            index: config.share.index.clone(),
            index_key: config.share.index_key,
            udp: config.share.index.as_deref().and_then(|index| {
                crate::download::udp::UdpRoute::for_index(index, config.share.index_key)
            }),
            private: config.share.group.is_some(),
            tls: config.tls.clone(),
            dht: config.dht.clone(),
            lan: config
                .share
                .lan
                .then(|| watch_lan(config.tls.as_ref()))
                .flatten(),
            download_rate,
            upload_rate,
            uploads,
            live: Mutex::default(),
            running: Mutex::default(),
            wake: Notify::new(),
            events,
            share: Mutex::new(ShareView {
                roots: config
                    .share
                    .roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect(),
                ..ShareView::default()
            }),
            hashing: Mutex::default(),
            stop: CancellationToken::new(),
        });
        let handle = NodeHandle {
            inner,
            tasks: tokio_util::task::TaskTracker::new(),
        };
        // Hashing progress of the share's scans.
        let weak = Arc::downgrade(&handle.inner);
        let earlier = config.share.scan.progress.take();
        config.share.scan.progress = Some(Arc::new(move |st: HashStatus| {
            if let Some(inner) = weak.upgrade() {
                *lock(&inner.hashing) = Some(HashView {
                    files_done: st.files_done,
                    files: st.files,
                    bytes_done: st.bytes_done,
                    bytes: st.bytes,
                });
            }
            if let Some(f) = &earlier {
                f(st);
            }
        }));
        handle
            .tasks
            .spawn(handle.clone().run_share(config.share, peer_listener));
        handle.tasks.spawn(handle.clone().run_queue());
        handle.tasks.spawn(handle.clone().tick());
        Ok(handle)
    }

    async fn run_share(self, config: ShareConfig, listener: TcpListener) {
        let started = tokio::select! {
            r = start_share(config, listener) => r,
            () = self.inner.stop.cancelled() => return,
        };
        let mut share = match started {
            Ok(s) => s,
            Err(e) => {
                let e = crate::text::error_chain(&e);
                tracing::error!("the share did not start: {e}");
                lock(&self.inner.share).error = Some(e);
                self.share_changed();
                return;
            }
        };
        {
            let mut v = lock(&self.inner.share);
            v.started = true;
            v.listen = Some(share.local_addr.to_string());
            v.status = Some((&*share.status.borrow()).into());
        }
        self.share_changed();
        loop {
            tokio::select! {
                changed = share.status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let st = (&*share.status.borrow_and_update()).into();
                    lock(&self.inner.share).status = Some(st);
                    self.share_changed();
                }
                () = self.inner.stop.cancelled() => break,
            }
        }
        ShareHandle::shutdown(share).await;
    }

    fn share_changed(&self) {
        let share = Box::new(self.share_view());
        let _ = self.inner.events.send(NodeEvent::Share { share });
    }

    fn share_view(&self) -> ShareView {
        let mut v = lock(&self.inner.share).clone();
        v.hashing = *lock(&self.inner.hashing);
        v
    }

    /// Sends the running items' live figures every [`PROGRESS_INTERVAL`].
    async fn tick(self) {
        let mut every = tokio::time::interval(PROGRESS_INTERVAL);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = self.inner.stop.cancelled() => return,
            }
            if self.inner.events.receiver_count() == 0 || lock(&self.inner.running).is_empty() {
                continue;
            }
            if let Ok((items, _)) = self
                .inner
                .queue
                .list(Some(ItemState::Running), 0, MAX_PARALLEL)
            {
                let items = items.into_iter().map(|i| self.view(i)).collect();
                let _ = self.inner.events.send(NodeEvent::Progress { items });
            }
        }
    }

    /// Starts queued items, in order, while fewer than `parallel` run.
    async fn run_queue(self) {
        loop {
            loop {
                let parallel = lock(&self.inner.settings).parallel;
                if lock(&self.inner.running).len() >= parallel || self.inner.stop.is_cancelled() {
                    break;
                }
                let next = match self.inner.queue.next_queued() {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!("queue: {e}");
                        break;
                    }
                };
                let item = match self.inner.queue.set_state(next.id, ItemState::Running) {
                    Ok(item) => item,
                    Err(e) => {
                        tracing::error!("queue: {e}");
                        break;
                    }
                };
                self.start_item(item);
            }
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = self.inner.stop.cancelled() => return,
            }
        }
    }

    fn start_item(&self, item: Item) {
        let id = item.id;
        lock(&self.inner.live).insert(
            id,
            Live {
                bytes_total: item.bytes_total.or(item.size),
                files_total: item.files_total,
                ..Live::default()
            },
        );
        let me = self.clone();
        // The entry goes in before the task can end (it removes it), under the same lock.
        let mut running = lock(&self.inner.running);
        let task = self.tasks.spawn(async move {
            let result = me.run_item(&item).await;
            me.end_item(id, result);
        });
        running.insert(id, task.abort_handle());
        drop(running);
        self.item_changed(id);
    }

    fn end_item(&self, id: i64, result: Result<Option<String>, String>) {
        if lock(&self.inner.running).remove(&id).is_none() {
            // Paused or cancelled meanwhile: that is its state now.
            return;
        }
        let live = lock(&self.inner.live).remove(&id);
        if let Some(l) = &live {
            let _ = self.inner.queue.set_progress(
                id,
                l.bytes_done(),
                l.bytes_total,
                l.files_done,
                l.files_total,
            );
        }
        if let Err(e) = self.inner.queue.finish(id, result) {
            tracing::warn!("queue item {id}: {e}");
        }
        self.item_changed(id);
        self.inner.wake.notify_one();
    }

    fn item_changed(&self, id: i64) {
        if let Ok(item) = self.inner.queue.get(id) {
            let item = Box::new(self.view(item));
            let _ = self.inner.events.send(NodeEvent::Item { item });
        }
    }

    fn view(&self, item: Item) -> ItemView {
        let live = lock(&self.inner.live);
        match live
            .get(&item.id)
            .filter(|_| item.state == ItemState::Running)
        {
            Some(l) => {
                let mut item = item;
                item.bytes_done = l.bytes_done();
                item.bytes_total = l.bytes_total.or(item.bytes_total);
                item.files_done = l.files_done;
                item.files_total = l.files_total.or(item.files_total);
                let rate = l.rate as u64;
                let eta_seconds = match (item.bytes_total, rate) {
                    (Some(t), r) if r > 0 => Some(t.saturating_sub(item.bytes_done) / r),
                    _ => None,
                };
                ItemView {
                    rate: Some(rate),
                    eta_seconds,
                    active_sources: l.files.values().map(|f| f.2).sum(),
                    sources: l.sources.clone(),
                    item,
                }
            }
            None => ItemView {
                item,
                rate: None,
                eta_seconds: None,
                active_sources: 0,
                sources: Vec::new(),
            },
        }
    }

    /// Download options for item `id`: its progress goes to its live figures.
    fn options(&self, id: i64) -> GetOptions {
        let weak = Arc::downgrade(&self.inner);
        let events: super::EventSink = Arc::new(move |e: GetEvent<'_>| {
            let Some(inner) = weak.upgrade() else { return };
            let mut live = lock(&inner.live);
            let Some(l) = live.get_mut(&id) else { return };
            match e {
                GetEvent::Found { hit, .. } | GetEvent::Started { hit, .. } => l.add_sources(hit),
                GetEvent::Progress { n, progress } => {
                    l.files
                        .insert(n, (progress.done, progress.total, progress.sources));
                    l.sample(Instant::now());
                }
                GetEvent::Done { n, result } => {
                    l.files.remove(&n);
                    l.files_done += 1;
                    if let Ok(r) = result {
                        l.bytes_finished += r.size;
                        l.reached(&r.sources);
                    }
                    l.sample(Instant::now());
                }
                _ => {}
            }
        });
        GetOptions {
            max_peers: 16,
            rate: Some(self.inner.download_rate.clone()),
            events: Some(events),
            tls: self.inner.tls.clone(),
            have_already: Some(self.have_already()),
            // Peers the index cannot reach are reached through it (§7.10).
            relay: self
                .inner
                .index
                .clone()
                .map(|index| crate::download::RelayRoute {
                    index,
                    index_key: self.inner.index_key,
                }),
            // Sources no one can connect to are punched to through the index (§7.11).
            udp: self.inner.udp.clone(),
            ..GetOptions::default()
        }
    }

    /// A fresh look for files on disk (it sees files added since the last one).
    fn have_already(&self) -> Arc<HaveAlready> {
        Arc::new(HaveAlready::new(
            self.inner.look_in[1..].to_vec(),
            Some(&self.inner.state_dir),
        ))
    }

    async fn connect(&self) -> Result<IndexClient, NodeError> {
        let addr = self.inner.index.as_deref().ok_or(NodeError::NoIndex)?;
        IndexClient::connect(
            addr,
            self.inner.tls.as_ref(),
            self.inner.index_key,
            Limits::default(),
        )
        .await
        .map_err(|e| NodeError::Index(crate::text::error_chain(&e)))
    }

    /// Downloads one item; where it was saved (a file's path, a folder's directory).
    async fn run_item(&self, item: &Item) -> Result<Option<String>, String> {
        let opts = self.options(item.id);
        let parallel = lock(&self.inner.settings).parallel;
        let line = |e: &dyn std::error::Error| crate::text::error_chain(e);
        match item.kind {
            ItemKind::File => {
                let id: ContentId = item.target.parse().map_err(|e| format!("{e}"))?;
                let hit = self.find(id, item).await.map_err(|e| line(&e))?;
                if let Some(l) = lock(&self.inner.live).get_mut(&item.id) {
                    l.bytes_total = Some(hit.size);
                    l.files_total = Some(1);
                    l.add_sources(&hit);
                }
                let _ = self
                    .inner
                    .queue
                    .set_progress(item.id, 0, Some(hit.size), 0, Some(1));
                let _ = self.inner.queue.set_info(item.id, &hit.name, hit.size);
                let r = download_hit(&hit, 0, &self.inner.output, &opts)
                    .await
                    .map_err(|e| line(&e))?;
                if let Some(l) = lock(&self.inner.live).get_mut(&item.id) {
                    l.files.clear();
                    l.bytes_finished = r.size;
                    l.files_done = 1;
                }
                Ok(Some(r.path.display().to_string()))
            }
            ItemKind::Folder => {
                let spec = FolderSpec::parse(&item.target)
                    .ok_or_else(|| format!("{:?} is not PEER:PATH", item.target))?;
                let mut client = self.connect().await.map_err(|e| line(&e))?;
                let listed = super::list_folder(&mut client, &spec)
                    .await
                    .map_err(|e| line(&e))?;
                self.listed(item.id, &listed);
                let outcomes = get_tree(&mut client, listed, &self.inner.output, &opts, parallel)
                    .await
                    .map_err(|e| line(&e))?;
                self.outcomes(item.id, outcomes.into_iter().map(|o| (o.path, o.result)))
            }
            ItemKind::Query => {
                let mut client = self.connect().await.map_err(|e| line(&e))?;
                let listed = matching(&mut client, &item.target)
                    .await
                    .map_err(|e| line(&e))?;
                self.listed(item.id, &listed);
                let outcomes = get_tree(&mut client, listed, &self.inner.output, &opts, parallel)
                    .await
                    .map_err(|e| line(&e))?;
                self.outcomes(item.id, outcomes.into_iter().map(|o| (o.path, o.result)))
            }
        }
    }

    fn listed(&self, id: i64, listed: &[FolderFile]) {
        let total: u64 = listed.iter().map(|f| f.size).sum();
        if let Some(l) = lock(&self.inner.live).get_mut(&id) {
            l.bytes_total = Some(total);
            l.files_total = Some(listed.len() as u64);
        }
        let _ = self
            .inner
            .queue
            .set_progress(id, 0, Some(total), 0, Some(listed.len() as u64));
    }

    /// A folder's or query's result: its directory when every file came, else how many failed
    /// and the first error.
    fn outcomes(
        &self,
        id: i64,
        outcomes: impl Iterator<Item = (PathBuf, Result<crate::download::DownloadReport, GetError>)>,
    ) -> Result<Option<String>, String> {
        let (mut n, mut failed, mut first, mut bytes) = (0, 0, None, 0);
        for (_, r) in outcomes {
            n += 1;
            match r {
                Ok(r) => bytes += r.size,
                Err(e) => {
                    failed += 1;
                    first.get_or_insert_with(|| crate::text::error_chain(&e));
                }
            }
        }
        // Files found already there (or copied) tell no event: count them here.
        if let Some(l) = lock(&self.inner.live).get_mut(&id) {
            l.files.clear();
            l.files_done = n - failed;
            l.bytes_finished = bytes;
        }
        match first {
            None => Ok(Some(self.inner.output.display().to_string())),
            Some(e) => Err(format!("{failed} of {n} files failed; the first: {e}")),
        }
    }

    /// The sources of `id`: the index's (and the DHT's) now, else those it was added with.
    async fn find(&self, id: ContentId, item: &Item) -> Result<FileHit, GetError> {
        let mut found: Option<FileHit> = None;
        let mut why = None;
        if self.inner.index.is_some() {
            match self.connect().await {
                Ok(mut c) => match lookup_many(&mut c, &[id]).await {
                    Ok(mut r) => match r.pop() {
                        Some(Ok(hit)) => found = Some(hit),
                        Some(Err(e)) => why = Some(e),
                        None => {}
                    },
                    Err(e) => why = Some(GetError::IndexLost(crate::text::error_chain(&e))),
                },
                Err(e) => why = Some(GetError::IndexLost(e.to_string())),
            }
        }
        if let Some(dht) = &self.inner.dht {
            found = Some(add_dht_sources(dht, id, found, self.inner.tls.as_ref()).await);
        }
        if let Some(lan) = &self.inner.lan {
            let peers = lan.peers();
            if !peers.is_empty() {
                let tls = self.inner.tls.as_ref();
                found = Some(super::add_lan_sources(&peers, id, found, tls).await);
            }
        }
        let mut hit = found.unwrap_or(FileHit {
            name: String::new(),
            size: item.size.unwrap_or(0),
            content_id: id,
            peers: Vec::new(),
        });
        if hit.peers.is_empty() {
            hit.peers = item.sources.clone();
        }
        if hit.name.is_empty() {
            hit.name = item.name.clone();
        }
        if hit.size == 0 {
            hit.size = item.size.unwrap_or(0);
        }
        match hit.peers.is_empty() {
            true => Err(why.unwrap_or(GetError::NoSource(id))),
            false => Ok(hit),
        }
    }

    /// Adds items at the end of the queue; their ids.
    pub fn add(&self, items: Vec<NewItem>) -> Result<Vec<i64>, NodeError> {
        if items.len() > super::queue::MAX_ADD {
            return Err(NodeError::BadValue(format!(
                "at most {} items at once",
                super::queue::MAX_ADD
            )));
        }
        for it in &items {
            check_new(it)?;
        }
        let ids = self.inner.queue.add(&items)?;
        let _ = self
            .inner
            .events
            .send(NodeEvent::Added { ids: ids.clone() });
        self.inner.wake.notify_one();
        Ok(ids)
    }

    /// One item.
    pub fn item(&self, id: i64) -> Result<ItemView, NodeError> {
        Ok(self.view(self.inner.queue.get(id)?))
    }

    /// A page of the queue (only items in `state`, if given).
    pub fn list(
        &self,
        state: Option<ItemState>,
        offset: usize,
        limit: usize,
    ) -> Result<Page, NodeError> {
        let (items, total) = self.inner.queue.list(state, offset, limit)?;
        Ok(Page {
            items: items.into_iter().map(|i| self.view(i)).collect(),
            total,
            offset,
        })
    }

    /// Stops a running item, or sets one aside: `to` is paused or cancelled. Its partial
    /// files stay (a paused item resumes from them).
    fn stop_item(&self, id: i64, to: ItemState) -> Result<ItemView, NodeError> {
        let task = lock(&self.inner.running).remove(&id);
        if let Some(task) = &task {
            task.abort();
        }
        let live = lock(&self.inner.live).remove(&id);
        if let Some(l) = live {
            let _ = self.inner.queue.set_progress(
                id,
                l.bytes_done(),
                l.bytes_total,
                l.files_done,
                l.files_total,
            );
        }
        let item = self.inner.queue.set_state(id, to)?;
        if task.is_some() {
            self.inner.wake.notify_one();
        }
        self.item_changed(id);
        Ok(self.view(item))
    }

    /// Pauses item `id` (queued or running).
    pub fn pause(&self, id: i64) -> Result<ItemView, NodeError> {
        self.stop_item(id, ItemState::Paused)
    }

    /// Cancels item `id` (queued, running, paused or failed).
    pub fn cancel(&self, id: i64) -> Result<ItemView, NodeError> {
        self.stop_item(id, ItemState::Cancelled)
    }

    /// Queues item `id` again (paused, or failed: a retry).
    pub fn resume(&self, id: i64) -> Result<ItemView, NodeError> {
        let item = self.inner.queue.set_state(id, ItemState::Queued)?;
        self.item_changed(id);
        self.inner.wake.notify_one();
        Ok(self.view(item))
    }

    /// Moves item `id` to `position` in the queue (0: first).
    pub fn move_to(&self, id: i64, position: usize) -> Result<ItemView, NodeError> {
        self.inner.queue.move_to(id, position)?;
        self.item_changed(id);
        Ok(self.view(self.inner.queue.get(id)?))
    }

    /// Removes a finished item.
    pub fn remove(&self, id: i64) -> Result<(), NodeError> {
        self.inner.queue.remove(id)?;
        let _ = self.inner.events.send(NodeEvent::Removed {
            ids: vec![id],
            finished: false,
        });
        Ok(())
    }

    /// Removes every finished item; how many.
    pub fn remove_finished(&self) -> Result<usize, NodeError> {
        let n = self.inner.queue.remove_finished()?;
        let _ = self.inner.events.send(NodeEvent::Removed {
            ids: Vec::new(),
            finished: true,
        });
        Ok(n)
    }

    /// The node at a glance.
    pub fn status(&self) -> Result<NodeStatus, NodeError> {
        let (running, _) = self
            .inner
            .queue
            .list(Some(ItemState::Running), 0, MAX_PARALLEL)?;
        let transfers: Vec<ItemView> = running.into_iter().map(|i| self.view(i)).collect();
        let mut peers: Vec<SourceView> = Vec::new();
        for t in &transfers {
            for s in &t.sources {
                if !peers.iter().any(|p| p.address == s.address) {
                    peers.push(s.clone());
                }
            }
        }
        Ok(NodeStatus {
            queue: self.inner.queue.counts()?,
            transfers,
            share: self.share_view(),
            peers,
            uploads: self.inner.uploads.list(),
            settings: self.settings(),
            index: self.inner.index.clone(),
            dht: self.inner.dht.is_some(),
            private: self.inner.private,
            output: self.inner.output.display().to_string(),
        })
    }

    /// The share's status.
    pub fn share(&self) -> ShareView {
        self.share_view()
    }

    /// The settings.
    pub fn settings(&self) -> Settings {
        lock(&self.inner.settings).clone()
    }

    /// Changes settings, checked first, saved in the state directory; the settings now.
    pub fn set_settings(&self, patch: SettingsPatch) -> Result<Settings, NodeError> {
        let mut s = self.settings();
        if let Some(v) = patch.max_download_rate {
            s.max_download_rate = v;
        }
        if let Some(v) = patch.max_upload_rate {
            s.max_upload_rate = v;
        }
        if let Some(v) = patch.upload_slots {
            s.upload_slots = v;
        }
        if let Some(v) = patch.parallel {
            s.parallel = v;
        }
        check_settings(&s)?;
        save_settings(&self.inner.state_dir, &s)?;
        self.inner
            .download_rate
            .set_bytes_per_sec(s.max_download_rate);
        self.inner.upload_rate.set_bytes_per_sec(s.max_upload_rate);
        *lock(&self.inner.settings) = s.clone();
        let _ = self.inner.events.send(NodeEvent::Settings {
            settings: s.clone(),
        });
        // More parallel downloads may start now.
        self.inner.wake.notify_one();
        Ok(s)
    }

    /// Searches the index and, when the node uses it, the DHT (one merged list, as
    /// `search --dht` shows): a page of results, each marked when we have it already.
    pub async fn search(
        &self,
        query: &str,
        offset: u32,
        limit: u32,
    ) -> Result<SearchPage, NodeError> {
        if blank(query) {
            return Err(NodeError::BadValue("the query is empty".into()));
        }
        if offset > crate::protocol::MAX_SEARCH_OFFSET {
            return Err(NodeError::BadValue(format!(
                "offset must be at most {}",
                crate::protocol::MAX_SEARCH_OFFSET
            )));
        }
        if limit == 0 || limit > MAX_SEARCH_LIMIT {
            return Err(NodeError::BadValue(format!(
                "limit must be 1..={MAX_SEARCH_LIMIT}"
            )));
        }
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(NodeError::BadValue(format!(
                "the query is longer than {MAX_QUERY_CHARS} characters"
            )));
        }
        let search = Search {
            query: query.to_string(),
            limit,
            offset,
            ..Search::default()
        };
        let from_index = match self.inner.index.is_some() {
            true => {
                let found = async {
                    let mut client = self.connect().await?;
                    client
                        .search_with(search.clone())
                        .await
                        .map_err(|e| NodeError::Index(crate::text::error_chain(&e)))
                }
                .await;
                match (found, self.inner.dht.is_some() || self.inner.lan.is_some()) {
                    (Ok(r), _) => Some(r),
                    // With the DHT or the LAN, an index that cannot be asked leaves their
                    // results.
                    (Err(e), true) => {
                        tracing::warn!("search: {e}; the DHT or the LAN only");
                        None
                    }
                    (Err(e), false) => return Err(e),
                }
            }
            false => None,
        };
        let lan_peers = self.inner.lan.as_ref().map(|w| w.peers());
        let (files, total, estimated) = match (&self.inner.dht, lan_peers) {
            (None, None) => match from_index {
                Some(r) => (r.files, r.total, r.estimated),
                None => return Err(NodeError::NoIndex),
            },
            (dht, lan_peers) => {
                let mut catalog = crate::protocol::CatalogQuery {
                    query: search.query.clone(),
                    limit,
                    offset,
                    ..Default::default()
                };
                catalog.set_filters(search.filters());
                let tls = self.inner.tls.as_ref();
                let from_dht = async {
                    match dht {
                        Some(dht) => crate::dht::find_files(dht, &catalog, tls).await,
                        None => Vec::new(),
                    }
                };
                let from_lan = async {
                    match &lan_peers {
                        Some(peers) => crate::lan::find_files(peers, &catalog, tls).await,
                        None => Vec::new(),
                    }
                };
                let (from_dht, from_lan) = tokio::join!(from_dht, from_lan);
                use crate::peer::ask::Origin;
                let (files, _, total) = crate::peer::ask::merge_answers(
                    from_index.as_ref(),
                    &[(Origin::Dht, &from_dht), (Origin::Lan, &from_lan)],
                    query,
                    limit as usize,
                );
                let estimated = from_index.as_ref().is_some_and(|r| r.estimated)
                    || from_dht
                        .iter()
                        .chain(&from_lan)
                        .any(|(_, (_, r))| r.truncated);
                let files: Vec<FileHit> = files
                    .into_iter()
                    .map(|f| FileHit {
                        name: f.name,
                        size: f.size,
                        content_id: f.content_id,
                        peers: f.peers.into_iter().map(|p| p.peer).collect(),
                    })
                    .collect();
                let total = total.max(u64::from(offset) + files.len() as u64);
                (files, total, estimated)
            }
        };
        // One look on disk for the whole page (it lists the directories once).
        let on_disk = self.have_already();
        let own = lock(&self.inner.share)
            .status
            .as_ref()
            .and_then(|s| s.peer_id);
        let mut results = Vec::with_capacity(files.len());
        for f in files {
            let have = own.is_some_and(|me| f.peers.iter().any(|p| p.peer_id == me))
                || self.have(&f, &on_disk).await;
            let mut paths: Vec<String> = Vec::new();
            for p in f.peers.iter().filter_map(|p| p.path.clone()) {
                if paths.len() < 8 && !paths.contains(&p) {
                    paths.push(p);
                }
            }
            let mut live = Live::default();
            live.add_sources(&f);
            results.push(SearchHit {
                content_id: f.content_id.to_hex(),
                name: f.name,
                size: f.size,
                paths,
                sources: live.sources,
                have,
            });
        }
        Ok(SearchPage {
            results,
            total,
            estimated,
        })
    }

    /// Whether the file is downloaded already: done in the queue, or found on disk.
    async fn have(&self, f: &FileHit, on_disk: &Arc<HaveAlready>) -> bool {
        if self.inner.queue.has_done(&f.content_id).unwrap_or(false) {
            return true;
        }
        let (have, id, size, out) = (
            on_disk.clone(),
            f.content_id,
            f.size,
            self.inner.output.clone(),
        );
        tokio::task::spawn_blocking(move || have.find(&id, size, &out).is_some())
            .await
            .unwrap_or(false)
    }

    /// The peers registered with the index (a private group's members sharing now).
    pub async fn peers(&self) -> Result<Vec<PeerRecord>, NodeError> {
        let mut client = self.connect().await?;
        Ok(client
            .list_peers()
            .await
            .map_err(|e| NodeError::Index(crate::text::error_chain(&e)))?
            .peers)
    }

    /// Whether the index is a private group's.
    pub fn private(&self) -> bool {
        self.inner.private
    }

    /// Live changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Stops the runner (running items are queued again, and resume from their partial files
    /// at the next start; after a kill they are queued again when the queue is opened) and the
    /// share.
    pub async fn shutdown(self) {
        self.inner.stop.cancel();
        let running: Vec<_> = lock(&self.inner.running).drain().collect();
        for (id, task) in running {
            task.abort();
            let _ = self.inner.queue.set_state(id, ItemState::Queued);
        }
        self.tasks.close();
        let _ = tokio::time::timeout(super::SHUTDOWN_WAIT * 2, self.tasks.wait()).await;
    }

    /// Waits until the node is told to stop.
    pub async fn stopped(&self) {
        self.inner.stop.cancelled().await
    }

    /// A watch of nothing but whether the node stopped (for servers built on it).
    pub fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }
}

/// Every file matching `query` at the index, at the path its first source keeps it under (as
/// `get --query` does); refused past [`MAX_QUERY_FILES`] or when none does.
async fn matching(client: &mut IndexClient, query: &str) -> Result<Vec<FolderFile>, NodeError> {
    let search = Search {
        query: query.to_string(),
        ..Search::default()
    };
    super::matching_files(client, search, MAX_QUERY_FILES)
        .await
        .map_err(|e| match e {
            super::MatchError::Index(e) => NodeError::Index(crate::text::error_chain(&e)),
            e @ super::MatchError::TooMany { .. } => {
                NodeError::BadValue(format!("{e}; narrow the query"))
            }
            e @ super::MatchError::None(_) => NodeError::BadValue(e.to_string()),
        })
}

/// The longest query the API takes, in characters: at most 4 bytes each, so always within the
/// index's [`crate::protocol::MAX_QUERY_LEN`] bytes (the API document's `maxLength`).
pub const MAX_QUERY_CHARS: usize = crate::protocol::MAX_QUERY_LEN / 4;

/// The longest target or name of a queue item, in characters (the API document's `maxLength`).
pub const MAX_TEXT: usize = 4096;

/// A query of nothing but spaces, tabs and line breaks (exactly the API document's rule, so
/// that what it calls valid is what the node accepts).
fn blank(query: &str) -> bool {
    query.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

fn check_new(it: &NewItem) -> Result<(), NodeError> {
    let bad = |m: String| Err(NodeError::BadValue(m));
    match it.kind {
        ItemKind::File if it.target.parse::<ContentId>().is_err() => bad(format!(
            "{:?} is not a content id (64 hex digits)",
            it.target
        )),
        ItemKind::Folder if FolderSpec::parse(&it.target).is_none() => {
            bad(format!("{:?} is not PEER:PATH", it.target))
        }
        ItemKind::Query if blank(&it.target) => bad("the query is empty".into()),
        _ if it.target.chars().count() > MAX_TEXT || it.name.chars().count() > MAX_TEXT => bad(
            format!("a target or name is longer than {MAX_TEXT} characters"),
        ),
        _ if it.sources.len() > 256 => bad("more than 256 sources".into()),
        _ => Ok(()),
    }
}

fn check_settings(s: &Settings) -> Result<(), NodeError> {
    if !(1..=MAX_PARALLEL).contains(&s.parallel) {
        return Err(NodeError::BadValue(format!(
            "parallel must be 1..={MAX_PARALLEL}"
        )));
    }
    if !(1..=MAX_UPLOAD_SLOTS).contains(&s.upload_slots) {
        return Err(NodeError::BadValue(format!(
            "upload_slots must be 1..={MAX_UPLOAD_SLOTS}"
        )));
    }
    Ok(())
}

fn load_settings(state_dir: &std::path::Path) -> Option<Settings> {
    let text = std::fs::read_to_string(state_dir.join(SETTINGS_FILE)).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("{SETTINGS_FILE}: {e}; using the defaults");
            None
        }
    }
}

fn save_settings(state_dir: &std::path::Path, s: &Settings) -> Result<(), NodeError> {
    let path = state_dir.join(SETTINGS_FILE);
    let tmp = state_dir.join(format!("{SETTINGS_FILE}.tmp"));
    let text = serde_json::to_string_pretty(s).map_err(|e| NodeError::BadValue(e.to_string()))?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The LAN watch of a node that announces itself there; none (with a warning) where mDNS
/// cannot run.
fn watch_lan(tls: Option<&Tls>) -> Option<crate::lan::Watch> {
    match crate::lan::Watch::start(crate::lan::Browser::of(tls)) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("not watching the LAN for peers: {e}");
            None
        }
    }
}
