//! What a download reports: its sources, progress while it runs, and the summary when it ends.

use std::path::PathBuf;

use serde::Serialize;

use crate::content::{ContentId, Digest};

/// A peer that has the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The peer's id at the index, when known.
    pub peer_id: Option<u64>,
    /// `HOST:PORT` of the peer; empty for a peer reached only through a relay.
    pub addr: String,
    /// The key the peer must prove it holds (as the index listed it); `None`: any key.
    #[serde(skip)]
    pub key: Option<Digest>,
}

impl Source {
    /// How the source is named in messages: its peer id and address, or the address alone.
    pub(super) fn label(&self) -> String {
        match (self.peer_id, self.addr.as_str()) {
            (Some(id), "") => format!("peer {id} (through the relay)"),
            (Some(id), addr) => format!("peer {id} ({addr})"),
            (None, addr) => addr.to_string(),
        }
    }
}

/// What one source did for a download.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The peer's id at the index, when known.
    pub peer_id: Option<u64>,
    /// `HOST:PORT` of the peer.
    pub addr: String,
    /// Verified bytes this source delivered.
    pub bytes: u64,
    /// Verified pieces this source delivered.
    pub pieces: u64,
    /// Pieces from this source that failed verification (never written).
    pub pieces_rejected: u64,
    /// Why the source stopped being used, if it failed.
    pub error: Option<String>,
    /// The TLS cipher suite of the connection to it (e.g. `TLS13_AES_128_GCM_SHA256`), when
    /// known.
    pub cipher_suite: Option<&'static str>,
    /// How it was reached, once connected: `"direct"`, `"punched"` (over UDP after a hole punch,
    /// §7.11), or `"relayed"` (§7.10).
    pub reached: Option<&'static str>,
    /// Relayed: the relay's `IP:PORT`, the index's or a member's volunteering as one (§7.10).
    pub relay: Option<String>,
}

/// How a connection reached its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// As [`SourceReport::reached`].
    pub how: &'static str,
    /// As [`SourceReport::relay`].
    pub relay: Option<String>,
}

/// What a finished download did.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    /// The file downloaded.
    pub content_id: ContentId,
    /// Where it was published under its final name.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// How long the download took, in seconds.
    pub seconds: f64,
    /// Bytes fetched from peers in this run.
    pub bytes_fetched: u64,
    /// Bytes found already verified in a partial download from an earlier run.
    pub bytes_resumed: u64,
    /// Pieces that failed verification, from all sources together (never written).
    pub pieces_rejected: u64,
    /// What each source did, in the order they were given.
    pub sources: Vec<SourceReport>,
    /// Nothing was downloaded: a file with this content id was already at `path` (see
    /// `node::HaveAlready`).
    pub already_had: bool,
}

impl DownloadReport {
    /// Sources that delivered at least one verified piece.
    pub fn sources_used(&self) -> usize {
        self.sources.iter().filter(|s| s.pieces > 0).count()
    }
}

/// A progress update: verified bytes out of the total, and how many sources are sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The file's size in bytes.
    pub total: u64,
    /// Verified bytes so far, resumed ones included.
    pub done: u64,
    /// Sources sending pieces now.
    pub sources: usize,
    /// While some source answers `BUSY`: the best place in a queue for an upload slot that a
    /// source told (0 when the sources that are busy told none).
    pub queued: Option<u32>,
}
