//! `SmallFileFetcher`: files of one piece fetched with one request each over reused connections.
//!
//! A file no larger than a piece is a single BLAKE3 chunk group, so its content id is the hash
//! of its bytes: one `GetPiece(id, 0)` answered with bytes that hash to `id` is the whole file,
//! verified, with no `GetInfo`, `GetHashes` or bootstrap. Connections to a source are kept and
//! reused for the next file; files are written through a [`BatchWriter`] (one sync per batch). Anything unusual (a partial download left by an earlier run, bytes
//! that do not hash to the id, a source error) is left to the full [`Downloader`](super::Downloader),
//! which retries other sources and resumes: the caller falls back to it on any `Err`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use super::batch_write::BatchWriter;
use super::fetch::{DownloadReport, Source, SourceReport};
use crate::content::{ContentId, PIECE_SIZE};
use crate::peer::{PARTIAL_SUFFIX, PeerClient, PeerClientError};
use crate::protocol::Limits;
use crate::rate::RateLimiter;

/// Idle connections kept per source.
const MAX_IDLE_PER_SOURCE: usize = 16;

/// Why the one-request path did not deliver a file (the full downloader then takes over).
#[derive(Debug, thiserror::Error)]
pub enum SmallFetchError {
    #[error(transparent)]
    Source(#[from] PeerClientError),
    #[error("sent piece {received} where 0 was due")]
    WrongPiece { received: u32 },
    #[error("sent {len} bytes that do not hash to {id}")]
    NotTheFile { id: ContentId, len: usize },
    #[error("a partial download of {0} is already there (the full downloader resumes it)")]
    PartialExists(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SmallFetchError {
    /// Whether the full downloader could do better (anything but a local write failure).
    pub fn worth_retrying(&self) -> bool {
        !matches!(self, SmallFetchError::Write { .. })
    }
}

/// Fetches single-piece files, keeping connections to sources open between files.
pub struct SmallFileFetcher {
    limits: Limits,
    rate: Option<Arc<RateLimiter>>,
    idle: Mutex<HashMap<String, Vec<PeerClient>>>,
    writer: BatchWriter,
}

impl SmallFileFetcher {
    /// Starts the writer thread the files go through.
    pub fn new(limits: Limits, rate: Option<Arc<RateLimiter>>) -> std::io::Result<Self> {
        Ok(SmallFileFetcher {
            limits,
            rate,
            idle: Mutex::new(HashMap::new()),
            writer: BatchWriter::spawn()?,
        })
    }

    /// Whether a file of `size` bytes (as the index says; untrusted, only a hint) fits one piece.
    pub fn fits(size: u64) -> bool {
        size <= PIECE_SIZE
    }

    fn take_idle(&self, addr: &str) -> Option<PeerClient> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(addr).and_then(Vec::pop)
    }

    fn put_idle(&self, addr: &str, client: PeerClient) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr.to_string()).or_default();
        if list.len() < MAX_IDLE_PER_SOURCE {
            list.push(client);
        }
    }

    /// Fetches `id` from `source` with one request and checks the bytes are the whole file.
    pub async fn receive(
        &self,
        id: ContentId,
        source: &Source,
        dir: &Path,
    ) -> Result<Bytes, SmallFetchError> {
        let temp = dir.join(format!(".{}{PARTIAL_SUFFIX}", id.to_hex()));
        if std::fs::symlink_metadata(&temp).is_ok() {
            return Err(SmallFetchError::PartialExists(temp));
        }
        let mut client = match self.take_idle(&source.addr) {
            Some(c) => c,
            None => PeerClient::connect(&source.addr, self.limits).await?,
        };
        client.request_piece(id, 0).await?;
        client.flush().await?;
        let piece = client.next_piece().await?;
        if piece.index != 0 {
            return Err(SmallFetchError::WrongPiece {
                received: piece.index,
            });
        }
        // Hashing a piece takes microseconds; the bytes are the whole file only if they hash
        // to the id as a root (a piece of a larger file does not).
        if piece.data.len() as u64 > PIECE_SIZE || ContentId::from(blake3::hash(&piece.data)) != id
        {
            return Err(SmallFetchError::NotTheFile {
                id,
                len: piece.data.len(),
            });
        }
        self.put_idle(&source.addr, client);
        if let Some(rate) = &self.rate {
            rate.take(piece.data.len() as u64).await;
        }
        Ok(piece.data)
    }

    /// Writes verified bytes of `id` durably in `dir` as `name` (sanitized; " (1)" etc. added
    /// rather than replacing anything), batched with other files being stored.
    pub async fn store(
        &self,
        id: ContentId,
        source: &Source,
        dir: &Path,
        name: &str,
        data: Bytes,
        started: Instant,
    ) -> Result<DownloadReport, SmallFetchError> {
        let temp = dir.join(format!(".{}{PARTIAL_SUFFIX}", id.to_hex()));
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
            }],
        })
    }
}
