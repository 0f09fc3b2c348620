//! `Downloader`: fetches a file's pieces from its sources with pipelined requests, verifying each before writing it.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::names::{publish, sanitize_file_name};
use crate::content::{ContentId, PieceError, PieceVerifier};
use crate::peer::{PARTIAL_SUFFIX, PeerClient, PeerClientError};
use crate::protocol::{Limits, Piece, ProtocolError};

/// A peer that has the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The peer's id at the index, when known.
    pub peer_id: Option<u64>,
    /// `HOST:PORT` of the peer.
    pub addr: String,
}

impl Source {
    fn label(&self) -> String {
        match self.peer_id {
            Some(id) => format!("peer {id} ({})", self.addr),
            None => self.addr.clone(),
        }
    }
}

/// What a finished download did.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    pub content_id: ContentId,
    pub path: PathBuf,
    pub size: u64,
    pub seconds: f64,
    /// Sources that delivered verified pieces.
    pub sources_used: Vec<Source>,
    /// Pieces that failed verification (never written).
    pub pieces_rejected: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("no peer has {0}")]
    NoSources(ContentId),
    #[error("target directory {path}: {source}")]
    Target {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not download {id} from any of {count} sources: {reasons}")]
    AllSourcesFailed {
        id: ContentId,
        count: usize,
        reasons: String,
    },
}

/// Why one source stopped being used.
#[derive(Debug, thiserror::Error)]
enum SourceFailure {
    #[error(transparent)]
    Client(#[from] PeerClientError),
    #[error(transparent)]
    Pieces(#[from] PieceError),
    #[error("sent piece {received} where {expected} was due")]
    OutOfOrder { expected: u32, received: u32 },
    #[error("reports {received} bytes where the first source said {expected}")]
    SizeMismatch { expected: u64, received: u64 },
    #[error(transparent)]
    Local(DownloadError),
}

impl From<ProtocolError> for SourceFailure {
    fn from(e: ProtocolError) -> Self {
        SourceFailure::Client(e.into())
    }
}

type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// Downloads files into a directory. Configure, then call [`Downloader::download`].
#[derive(Clone)]
pub struct Downloader {
    /// Time limits of each peer connection. Default: [`Limits::default`].
    pub limits: Limits,
    /// Piece requests kept in flight per source. Default: 32 (8 MiB).
    pub window: usize,
    /// Called with the byte count of each verified piece.
    pub progress: Option<ProgressFn>,
    /// Called once the file size is known.
    pub on_size: Option<ProgressFn>,
}

impl Default for Downloader {
    fn default() -> Self {
        Downloader {
            limits: Limits::default(),
            window: 32,
            progress: None,
            on_size: None,
        }
    }
}

/// Pieces verified and written so far, and where.
struct Partial {
    id: ContentId,
    temp: PathBuf,
    file: Arc<File>,
    verifier: Option<Arc<PieceVerifier>>,
    done: Vec<bool>,
    remaining: u64,
    name: Option<String>,
    rejected: u64,
}

const MAX_PENDING_WRITES: usize = 4;

impl Downloader {
    /// Downloads `id` into `dir` from `sources` (tried in order; a failing source hands over
    /// to the next one, keeping every verified piece). `name_hint` (untrusted) names the result;
    /// without it the first source's name is used.
    pub async fn download(
        &self,
        id: ContentId,
        sources: &[Source],
        dir: &Path,
        name_hint: Option<&str>,
    ) -> Result<DownloadReport, DownloadError> {
        if sources.is_empty() {
            return Err(DownloadError::NoSources(id));
        }
        let started = Instant::now();
        let target = |source| DownloadError::Target {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(target)?;
        let temp = dir.join(format!(".{}{PARTIAL_SUFFIX}", id.to_hex()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(target)?;
        let mut partial = Partial {
            id,
            temp: temp.clone(),
            file: Arc::new(file),
            verifier: None,
            done: Vec::new(),
            remaining: u64::MAX,
            name: name_hint.map(sanitize_file_name),
            rejected: 0,
        };
        let mut used = Vec::new();
        let mut reasons = Vec::new();
        for source in sources {
            let before = partial.remaining;
            let r = self.fetch_from(source, &mut partial).await;
            if partial.remaining < before {
                used.push(source.clone());
            }
            match r {
                Ok(()) => break,
                Err(SourceFailure::Local(e)) => {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e);
                }
                Err(e) => {
                    warn!("{}: {e}", source.label());
                    reasons.push(format!("{}: {e}", source.label()));
                }
            }
        }
        if partial.remaining != 0 {
            let _ = std::fs::remove_file(&temp);
            return Err(DownloadError::AllSourcesFailed {
                id,
                count: sources.len(),
                reasons: reasons.join("; "),
            });
        }
        let size = partial
            .verifier
            .as_ref()
            .map(|v| v.layout().size)
            .unwrap_or(0);
        let name = partial.name.clone().unwrap_or_else(|| id.to_hex());
        let write_err = |source| DownloadError::Write {
            path: temp.clone(),
            source,
        };
        let f = partial.file.clone();
        tokio::task::spawn_blocking(move || f.sync_all())
            .await
            .map_err(|e| write_err(std::io::Error::other(e)))?
            .map_err(write_err)?;
        let path = publish(&temp, dir, &name).map_err(write_err)?;
        info!("downloaded {id} to {}", path.display());
        Ok(DownloadReport {
            content_id: id,
            path,
            size,
            seconds: started.elapsed().as_secs_f64(),
            sources_used: used,
            pieces_rejected: partial.rejected,
        })
    }

    async fn fetch_from(&self, source: &Source, p: &mut Partial) -> Result<(), SourceFailure> {
        let mut client = PeerClient::connect(&source.addr, self.limits).await?;
        let info = client.info(p.id).await?;
        let verifier = match &p.verifier {
            Some(v) if v.layout().size != info.size => {
                return Err(SourceFailure::SizeMismatch {
                    expected: v.layout().size,
                    received: info.size,
                });
            }
            Some(v) => v.clone(),
            None => {
                let hashes = client.piece_hashes(p.id, info.size).await?;
                let v = Arc::new(PieceVerifier::new(p.id, info.size, &hashes)?);
                p.file.set_len(info.size).map_err(|source| {
                    SourceFailure::Local(DownloadError::Write {
                        path: p.temp.clone(),
                        source,
                    })
                })?;
                let count = v.layout().piece_count();
                p.done = vec![false; count as usize];
                p.remaining = count;
                p.verifier = Some(v.clone());
                if let Some(f) = &self.on_size {
                    f(info.size);
                }
                v
            }
        };
        if p.name.is_none() {
            p.name = Some(sanitize_file_name(&info.name));
        }
        let mut todo: VecDeque<u32> = (0..p.done.len() as u32)
            .filter(|i| !p.done[*i as usize])
            .collect();
        let mut inflight: VecDeque<u32> = VecDeque::new();
        let mut writes: VecDeque<JoinHandle<Result<u32, SourceFailure>>> = VecDeque::new();
        let result: Result<(), SourceFailure> = async {
            loop {
                let mut sent = false;
                while inflight.len() < self.window {
                    let Some(i) = todo.pop_front() else { break };
                    client.request_piece(p.id, i).await?;
                    inflight.push_back(i);
                    sent = true;
                }
                if sent {
                    client.flush().await?;
                }
                if inflight.is_empty() && writes.is_empty() {
                    return Ok(());
                }
                tokio::select! {
                    biased;
                    r = oldest(&mut writes), if !writes.is_empty() => {
                        writes.pop_front();
                        self.finish_write(p, r)?;
                    }
                    piece = client.next_piece(), if !inflight.is_empty() && writes.len() < MAX_PENDING_WRITES => {
                        let piece = piece?;
                        let expected = inflight.pop_front().unwrap_or(u32::MAX);
                        if piece.index != expected {
                            return Err(SourceFailure::OutOfOrder { expected, received: piece.index });
                        }
                        writes.push_back(spawn_write(verifier.clone(), p.file.clone(), p.temp.clone(), piece));
                    }
                }
            }
        }
        .await;
        // Whatever happened, keep the pieces already verified and being written.
        let mut first_err = result.err();
        while let Some(w) = writes.pop_front() {
            if let Err(e) = self.finish_write(p, w.await) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn finish_write(&self, p: &mut Partial, r: WriteResult) -> Result<(), SourceFailure> {
        let r = r.map_err(|e| {
            SourceFailure::Local(DownloadError::Write {
                path: p.temp.clone(),
                source: std::io::Error::other(e),
            })
        })?;
        match r {
            Ok(i) => {
                if !p.done[i as usize] {
                    p.done[i as usize] = true;
                    p.remaining -= 1;
                    if let (Some(f), Some(v)) = (&self.progress, &p.verifier) {
                        f(v.layout().piece_len(u64::from(i)));
                    }
                }
                Ok(())
            }
            Err(e) => {
                if matches!(e, SourceFailure::Pieces(_)) {
                    p.rejected += 1;
                }
                Err(e)
            }
        }
    }
}

type WriteResult = Result<Result<u32, SourceFailure>, tokio::task::JoinError>;

/// Waits for the oldest pending write (forever if there is none).
async fn oldest(writes: &mut VecDeque<JoinHandle<Result<u32, SourceFailure>>>) -> WriteResult {
    match writes.front_mut() {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

/// Verifies a piece and writes it at its offset, off the async threads.
fn spawn_write(
    v: Arc<PieceVerifier>,
    file: Arc<File>,
    temp: PathBuf,
    piece: Piece,
) -> JoinHandle<Result<u32, SourceFailure>> {
    tokio::task::spawn_blocking(move || {
        let i = u64::from(piece.index);
        v.verify(i, &piece.data)?;
        file.write_all_at(&piece.data, v.layout().piece_offset(i))
            .map_err(|source| SourceFailure::Local(DownloadError::Write { path: temp, source }))?;
        Ok(piece.index)
    })
}
