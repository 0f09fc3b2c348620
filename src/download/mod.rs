//! Downloading a file by content id from all its sources at once: every piece verified before it is written, published under its final name only when complete, resumable.
//!
//! The full path is [`Downloader`]: its phases live in `open`, `bootstrap`, `resume`, `worker`
//! (over the shared `Swarm` and its [`PieceScheduler`]) and `downloader` (which runs them and
//! publishes). Files of one piece take the short path, [`SmallFileFetcher`] over
//! [`SourceLinks`]. Both use [`SourceTiming`] for how long to wait on a source.

mod batch_write;
mod bootstrap;
mod downloader;
mod error;
mod links;
mod names;
mod open;
mod relayed;
mod report;
mod resume;
mod scheduler;
mod settings;
mod small;
mod swarm;
pub mod udp;
mod worker;
mod writeback;

pub use downloader::{
    BUSY_RETRY_MAX, Downloader, MAX_BAD_PIECES, MAX_QUEUE_WAIT, MAX_SOURCES, STALL_TIMEOUT, WINDOW,
};
pub use error::DownloadError;
pub use links::{
    LINK_CONNECTIONS, LINK_IDLE_CLOSE, LINK_MAX_BUSY, LINK_MAX_FRUITLESS, LINK_WINDOW, LinkConfig,
    LinkError, SourceLinks,
};
pub use names::{
    DirIdentity, MAX_TARGET_DEPTH, make_subdirs, open_subdirs, publish, sanitize_file_name,
    sanitize_relative_path, still_subdir, through_handle,
};
pub use relayed::{RelayRoute, connect_relayed, connect_source, reached, route};
pub use report::{DownloadReport, Progress, Route, Source, SourceReport};
pub use scheduler::PieceScheduler;
pub use settings::{BUSY_RETRY, LINK_BUSY_RETRY, READ_TIMEOUT, SourceTiming, WRITE_TIMEOUT};
pub use small::{SmallFetchError, SmallFileFetcher};
