//! Downloading a file by content id from all its sources at once: every piece verified before it is written, published under its final name only when complete, resumable.

mod batch_write;
mod fetch;
mod links;
mod names;
mod small;
mod swarm;
mod writeback;

pub use fetch::{DownloadError, DownloadReport, Downloader, Progress, Source, SourceReport};
pub use links::{LinkConfig, LinkError, SourceLinks};
pub use names::{publish, sanitize_file_name};
pub use small::{SmallFetchError, SmallFileFetcher};
pub use swarm::PieceScheduler;
