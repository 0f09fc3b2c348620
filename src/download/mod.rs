//! Downloading a file by content id: every piece verified before it is written, published under its final name only when complete.

mod fetch;
mod names;

pub use fetch::{DownloadError, DownloadReport, Downloader, Source};
pub use names::{publish, sanitize_file_name};
