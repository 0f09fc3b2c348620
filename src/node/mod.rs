//! A sharing node: the parts below it (peer server, index session, DHT publisher, downloader)
//! put together into what a user runs: [`start_share`] shares directories, [`download_all`]
//! and [`Lookup`] find and fetch files.
//!
//! This is the layer a command-line tool, a daemon or an HTTP API builds on; nothing here
//! prints or parses arguments.

mod daemon;
mod folder;
mod get;
mod have_already;
mod lan;
mod lookup;
mod member;
pub mod queue;
mod register;
mod relay;
#[cfg(test)]
mod relay_tests;
mod share;
mod trust;
mod udp;
mod wishes;

pub use daemon::{
    EVENT_BUFFER, HashView, ItemView, MAX_PARALLEL, MAX_QUERY_FILES, MAX_UPLOAD_SLOTS, NodeConfig,
    NodeError, NodeEvent, NodeHandle, NodeStatus, PROGRESS_INTERVAL, Page, SETTINGS_FILE,
    SearchHit, SearchPage, Settings, SettingsPatch, ShareStatusView, ShareView, SourceView,
};
pub use folder::{
    FolderError, FolderFile, FolderOutcome, FolderSpec, MAX_FOLDER_FILES, MatchError, get_folder,
    get_tree, list_folder, matching_files,
};
pub use get::{
    EventSink, GetEvent, GetOptions, MAX_SMALL_IN_FLIGHT, already_have, download_all, download_hit,
    download_stream, download_stream_into, sources_of, sources_via,
};
pub use have_already::{CHECKS_AT_ONCE, HaveAlready, MAX_LISTED};
pub use lookup::{LOOKUP_BATCH, Lookup, add_dht_sources, add_lan_sources, lookup_many};
pub use register::{RECONNECT_MAX, RECONNECT_MIN, TAKEN_OVER_MAX};
pub use share::{
    DEBOUNCE, DHT_REFRESH, RESCAN_INTERVAL, SHUTDOWN_WAIT, ShareConfig, ShareError, ShareHandle,
    ShareStatus, start_share,
};

pub use member::{MEMBERSHIP_FILE, MemberFileError, MemberRecord};
pub use trust::{KNOWN_INDEXES, KnownIndexes, TrustError};
pub use udp::{LISTEN_REFRESH, LISTEN_RETRY, LISTEN_RETRY_MAX, MAX_PUNCHES, PUNCH_SEND, UdpStatus};
pub use wishes::{
    FETCHED_DIR, MAX_FETCHED_IDS, MAX_WISH_MATCHES, MAX_WISH_NEW, MAX_WISHES, WISH_BATCH,
    WISH_FIRST_WAIT, WISH_INTERVAL, WISHES_FILE, Wish, WishError, WishEvent, WishList, WishOptions,
    WishRound, WishSchedule, check_wish, run_round,
};

use crate::content::ContentId;
use crate::download::{DownloadError, SmallFetchError};
use crate::protocol::ErrorReply;

/// Why one file of a download list was not downloaded.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Neither the index nor the DHT knows a live peer with the file.
    #[error("no live peer shares {0}")]
    NoSource(ContentId),
    /// `only_peer` was set, and that peer does not have the file.
    #[error("peer {peer} does not share {id}")]
    NotOnPeer {
        /// The peer asked for.
        peer: u64,
        /// The file.
        id: ContentId,
    },
    /// The index answered the lookup with an error.
    #[error("the index refused to look {id} up: {reply}")]
    Refused {
        /// The file.
        id: ContentId,
        /// The index's answer.
        reply: ErrorReply,
    },
    /// The index connection broke and could not be opened again.
    #[error("{0}")]
    IndexLost(String),
    /// Neither an index nor the DHT was given.
    #[error("no index")]
    NoIndex,
    /// The download itself failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The one-request fetch of a small file failed in a way another source would not fix.
    #[error(transparent)]
    Small(#[from] SmallFetchError),
    /// The task downloading the file panicked or was cancelled.
    #[error("download task failed")]
    TaskFailed,
    /// A file of a folder (`get PEER:PATH`) failed: its path under the target directory.
    #[error("{}: {source}", path.display())]
    InFolder {
        /// The file's path under the target directory.
        path: std::path::PathBuf,
        /// Why.
        source: Box<GetError>,
    },
    /// A file of a folder whose content is another file's, copied from it, which failed.
    #[error("{path} (the same content) was not downloaded: {why}")]
    SameContent {
        /// The other file, under the target directory.
        path: std::path::PathBuf,
        /// Why it was not.
        why: String,
    },
}
