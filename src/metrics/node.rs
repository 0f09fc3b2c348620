//! The node's metrics (`peershare_peer_*`, `peershare_download*`): one set per process, which
//! the peer server and the downloader count into wherever they are.

use std::sync::LazyLock;

use prometheus_client::registry::Registry;

use super::{ByLabel, Counter, labels};

labels!(
    /// How the upload of one file on one connection ended.
    pub enum UploadOutcome("outcome") {
        /// Every piece of the file was sent.
        Complete = "complete",
        /// The connection ended (or stopped asking) before every piece was sent.
        Partial = "partial",
    }
);

/// What the process's peer server served and its downloads fetched. Clones share their values.
#[derive(Debug, Clone, Default)]
pub struct NodeMetrics {
    /// Bytes of piece data sent to other peers.
    pub bytes_served: Counter,
    /// Pieces sent to other peers.
    pub pieces_served: Counter,
    /// Bytes carried between two other members as a volunteer relay (§7.10), both
    /// directions counted.
    pub bytes_relayed: Counter,
    /// Uploads of one file on one connection, by outcome.
    pub uploads: ByLabel<UploadOutcome, Counter>,
    /// Bytes of verified pieces downloaded (resumed bytes not counted).
    pub bytes_downloaded: Counter,
    /// Pieces downloaded and verified.
    pub pieces_verified: Counter,
    /// Pieces received that failed verification.
    pub pieces_rejected: Counter,
    /// Files whose download began (files already on disk not counted).
    pub downloads_started: Counter,
    /// Downloads completed, verified and published.
    pub downloads_finished: Counter,
    /// Downloads that failed.
    pub downloads_failed: Counter,
}

impl NodeMetrics {
    /// Counts a piece of `bytes` sent to another peer.
    pub fn piece_served(&self, bytes: u64) {
        self.pieces_served.inc();
        self.bytes_served.inc_by(bytes);
    }

    /// Counts a downloaded piece of `bytes` that passed verification.
    pub fn piece_verified(&self, bytes: u64) {
        self.pieces_verified.inc();
        self.bytes_downloaded.inc_by(bytes);
    }

    fn registry(&self) -> Registry {
        let mut r = Registry::default();
        let c = |r: &mut Registry, name: &str, help: &str, m: &Counter| {
            r.register(name, help, m.clone())
        };
        c(
            &mut r,
            "peershare_peer_bytes_served",
            "Bytes of piece data sent to other peers",
            &self.bytes_served,
        );
        c(
            &mut r,
            "peershare_peer_pieces_served",
            "Pieces sent to other peers",
            &self.pieces_served,
        );
        c(
            &mut r,
            "peershare_peer_bytes_relayed",
            "Bytes carried between two other members as a volunteer relay, both directions counted",
            &self.bytes_relayed,
        );
        r.register(
            "peershare_peer_uploads",
            "Uploads of one file to one connection, by outcome",
            self.uploads.clone(),
        );
        c(
            &mut r,
            "peershare_download_bytes",
            "Bytes of verified pieces downloaded, resumed bytes not counted",
            &self.bytes_downloaded,
        );
        c(
            &mut r,
            "peershare_download_pieces_verified",
            "Pieces downloaded and verified",
            &self.pieces_verified,
        );
        c(
            &mut r,
            "peershare_download_pieces_rejected",
            "Pieces received that failed verification",
            &self.pieces_rejected,
        );
        c(
            &mut r,
            "peershare_downloads_started",
            "Files whose download began, files already on disk not counted",
            &self.downloads_started,
        );
        c(
            &mut r,
            "peershare_downloads_finished",
            "Downloads completed, verified and published",
            &self.downloads_finished,
        );
        c(
            &mut r,
            "peershare_downloads_failed",
            "Downloads that failed",
            &self.downloads_failed,
        );
        r
    }
}

static NODE: LazyLock<NodeMetrics> = LazyLock::new(NodeMetrics::default);
static NODE_REGISTRY: LazyLock<Registry> = LazyLock::new(|| NODE.registry());

/// The process's node metrics, to count into.
pub fn node() -> &'static NodeMetrics {
    &NODE
}

/// The node's metrics as Prometheus text ([`super::CONTENT_TYPE`]), for the node's `/metrics`.
pub fn node_text() -> String {
    super::render(&NODE_REGISTRY)
}
