//! The long-running node: a share ([`start_share`]) plus the download queue ([`Queue`]) and
//! the runner that works through it, behind one handle ([`NodeHandle`]) that an HTTP API or
//! a UI calls: add, pause, resume, cancel, reorder; status, search, settings; live events.

mod items;
mod live;
mod runner;
mod search;
mod settings;
mod status;
mod views;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use mainline::async_dht::AsyncDht;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::queue::{ItemState, Queue, QueueError};
use super::{HaveAlready, ShareConfig, start_share};
use crate::content::Digest;
use crate::index::IndexClient;
use crate::peer::HashStatus;
use crate::protocol::{Limits, PeerRecord};
use crate::rate::RateLimiter;
use crate::tls::Tls;
use live::Live;
use settings::{check_settings, load_settings, save_settings};

pub use live::PROGRESS_INTERVAL;
pub use search::MAX_QUERY_FILES;
pub use settings::{MAX_PARALLEL, MAX_UPLOAD_SLOTS, SETTINGS_FILE, Settings, SettingsPatch};
pub use views::{
    HashView, ItemView, NodeEvent, NodeStatus, Page, SearchHit, SearchPage, ShareStatusView,
    ShareView, SourceView,
};

/// Events kept for a slow subscriber before it misses some (it is told, and reloads).
pub const EVENT_BUFFER: usize = 1024;

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
