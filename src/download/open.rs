//! The first phase of a download: the partial file in the target directory, opened and locked for this process.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::error::DownloadError;
use super::names::partial_path;
use super::report::Source;
use super::swarm::{LiveSources, SourceLive};
use crate::content::ContentId;

/// A download whose partial file is open and locked: what every later phase reads.
pub(super) struct OpenDownload<'a> {
    pub(super) id: ContentId,
    /// The sources in use, at most [`Downloader::max_sources`](super::Downloader::max_sources).
    pub(super) sources: &'a [Source],
    /// The target directory.
    pub(super) dir: &'a Path,
    pub(super) started: Instant,
    /// The partial file's path (`.<hex>.peershare-part` in `dir`).
    pub(super) temp: PathBuf,
    /// The partial file, holding this process's exclusive `flock` until its last handle closes.
    pub(super) file: Arc<File>,
    /// Whether an earlier run left bytes in the partial file.
    pub(super) earlier_run: bool,
    /// What each source did and is doing, by its place in `sources`.
    pub(super) live: LiveSources,
}

impl<'a> OpenDownload<'a> {
    /// Makes `dir`, opens (or creates) the partial file of `id` in it without following a
    /// link, and locks it so that two processes never download into the same file.
    pub(super) fn open(
        id: ContentId,
        sources: &'a [Source],
        dir: &'a Path,
    ) -> Result<Self, DownloadError> {
        let started = Instant::now();
        let target = |source| DownloadError::Target {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(target)?;
        let temp = partial_path(dir, &id);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .map_err(target)?;
        if !file.metadata().map_err(target)?.is_file() {
            return Err(target(std::io::Error::other(
                "the partial download is not a regular file",
            )));
        }
        let earlier_run = file.metadata().map(|m| m.len() > 0).unwrap_or(false);
        // SAFETY: flock on a valid, open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(DownloadError::Locked { path: temp });
        }
        let live: LiveSources = Arc::new(Mutex::new(
            sources.iter().map(|_| SourceLive::default()).collect(),
        ));
        Ok(OpenDownload {
            id,
            sources,
            dir,
            started,
            temp,
            file: Arc::new(file),
            earlier_run,
            live,
        })
    }

    /// A failure to write the partial file.
    pub(super) fn write_err(&self, source: std::io::Error) -> DownloadError {
        DownloadError::Write {
            path: self.temp.clone(),
            source,
        }
    }
}
