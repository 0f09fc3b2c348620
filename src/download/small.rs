//! `SmallFileFetcher`: files of one piece fetched with one request each over reused connections.
//!
//! A file no larger than a piece is a single BLAKE3 chunk group, so its content id is the hash
//! of its bytes: one `GetPiece(id, 0)` answered with bytes that hash to `id` is the whole file,
//! verified, with no `GetInfo`, `GetHashes` or bootstrap. Requests go through [`SourceLinks`]
//! (a few pipelined connections per source) and files through a [`BatchWriter`] (one sync per
//! batch). Anything unusual (a partial download left by an earlier run, bytes that do not hash
//! to the id, a source error) is left to the full [`Downloader`](super::Downloader), which
//! retries other sources and resumes: the caller falls back to it on any `Err`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::batch_write::BatchWriter;
use super::links::{LinkConfig, LinkError, SourceLinks};
use super::names::partial_path;
use super::report::{DownloadReport, Route, Source, SourceReport};
use crate::content::{ContentId, PIECE_SIZE};
use crate::rate::RateLimiter;
use crate::tls::Tls;

/// The content id of a partial download's file name (`.<hex>.peershare-part`).
fn partial_id(name: &str) -> Option<ContentId> {
    name.strip_prefix('.')?
        .strip_suffix(crate::peer::PARTIAL_SUFFIX)?
        .parse()
        .ok()
}

/// Threads writing small files. One: files made in one directory contend for its lock, so a
/// second writer costs system time without adding speed.
const WRITER_THREADS: usize = 1;

/// Why the one-request path did not deliver a file (the full downloader then takes over).
#[derive(Debug, thiserror::Error)]
pub enum SmallFetchError {
    /// The source did not deliver the whole file.
    #[error(transparent)]
    Source(#[from] LinkError),
    #[error("a partial download of {0} is already there (the full downloader resumes it)")]
    /// A partial download is in the target directory: the full downloader resumes it.
    PartialExists(PathBuf),
    #[error("writing {path}: {source}")]
    /// The file could not be written.
    Write {
        /// The file being written.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

impl SmallFetchError {
    /// Whether the full downloader could do better (anything but a local write failure).
    pub fn worth_retrying(&self) -> bool {
        !matches!(self, SmallFetchError::Write { .. })
    }
}

/// Fetches single-piece files over a few pipelined connections per source.
pub struct SmallFileFetcher {
    rate: Option<Arc<RateLimiter>>,
    links: SourceLinks,
    writer: BatchWriter,
    /// Ids with a partial download in the target directory when the fetcher started (listed
    /// once instead of looked for file by file).
    partials: std::collections::HashSet<ContentId>,
}

impl SmallFileFetcher {
    /// Sources listed by the index `relay` are reached through it when they have no address,
    /// or theirs cannot be connected to (§7.10).
    pub fn with_relay(mut self, relay: Option<super::RelayRoute>) -> Self {
        self.links = self.links.with_relay(relay);
        self
    }

    /// Starts the writer thread the files go through; `dir` is the target directory, whose
    /// partial downloads are left to the full downloader.
    pub fn new(
        links: LinkConfig,
        tls: Option<Tls>,
        rate: Option<Arc<RateLimiter>>,
        dir: &Path,
    ) -> std::io::Result<Self> {
        let partials = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| partial_id(&e.ok()?.file_name().to_string_lossy()))
            .collect();
        Ok(SmallFileFetcher {
            rate,
            links: SourceLinks::new(links, tls),
            writer: BatchWriter::spawn(WRITER_THREADS)?,
            partials,
        })
    }

    /// Reaches sources over this UDP socket too (QUIC, hole punching).
    pub fn with_udp(mut self, udp: Option<Arc<super::udp::UdpRoute>>) -> Self {
        self.links = self.links.with_udp(udp);
        self
    }

    /// Whether a file of `size` bytes (as the index says; untrusted, only a hint) fits one piece.
    pub fn fits(size: u64) -> bool {
        size <= PIECE_SIZE
    }

    /// Fetches `id` from `source` with one request and checks the bytes are the whole file;
    /// with them, how the connection reached the source.
    pub async fn receive(
        &self,
        id: ContentId,
        source: &Source,
        dir: &Path,
    ) -> Result<(Bytes, Route), SmallFetchError> {
        if self.partials.contains(&id) {
            return Err(SmallFetchError::PartialExists(partial_path(dir, &id)));
        }
        let (data, route) = self.links.fetch_whole(source, id).await?;
        if let Some(rate) = &self.rate {
            rate.take(data.len() as u64).await;
        }
        Ok((data, route))
    }

    /// Writes verified bytes of `id` durably in `dir` as `name` (sanitized; " (1)" etc. added
    /// rather than replacing anything), batched with other files being stored.
    pub async fn store(
        &self,
        id: ContentId,
        source: &Source,
        dir: &Path,
        name: &str,
        (data, route): (Bytes, Route),
        started: Instant,
    ) -> Result<DownloadReport, SmallFetchError> {
        let temp = partial_path(dir, &id);
        let len = data.len() as u64;
        let path = match self.writer.write(dir, temp.clone(), name, data).await {
            Ok(path) => path,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SmallFetchError::PartialExists(temp));
            }
            Err(source) => return Err(SmallFetchError::Write { path: temp, source }),
        };
        Ok(DownloadReport {
            content_id: id,
            path,
            size: len,
            seconds: started.elapsed().as_secs_f64(),
            bytes_fetched: len,
            bytes_resumed: 0,
            pieces_rejected: 0,
            sources: vec![SourceReport {
                peer_id: source.peer_id,
                addr: source.addr.clone(),
                bytes: len,
                pieces: 1,
                pieces_rejected: 0,
                error: None,
                // The pipelined links do not report their connections.
                cipher_suite: None,
                reached: Some(route.how),
                relay: route.relay,
            }],
            already_had: false,
        })
    }
}
