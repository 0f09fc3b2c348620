//! What the node's API shows: the serializable views of items, the share, the node's status,
//! search results and the events pushed to subscribers (plain data).

use serde::Serialize;

use super::Settings;
use crate::node::ShareStatus;
use crate::node::queue::{Counts, Item};

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
