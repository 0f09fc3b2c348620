//! `Downloader`: fetches a file's pieces from all its sources at once, verifying each before writing it.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

use super::names::{partial_path, publish, sanitize_file_name};
use super::swarm::PieceScheduler;
use super::writeback::start_writeback;
use crate::content::{ContentId, PieceError, PieceVerifier};
use crate::peer::{PartialFile, Partials};
use crate::peer::{PeerClient, PeerClientError};
use crate::protocol::{Info, Limits, ProtocolError, bitmap_has, code};
use crate::rate::RateLimiter;

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

/// What one source did for a download.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub peer_id: Option<u64>,
    pub addr: String,
    /// Verified bytes this source delivered.
    pub bytes: u64,
    pub pieces: u64,
    /// Pieces from this source that failed verification (never written).
    pub pieces_rejected: u64,
    /// Why the source stopped being used, if it failed.
    pub error: Option<String>,
}

/// What a finished download did.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    pub content_id: ContentId,
    pub path: PathBuf,
    pub size: u64,
    pub seconds: f64,
    /// Bytes fetched from peers in this run.
    pub bytes_fetched: u64,
    /// Bytes found already verified in a partial download from an earlier run.
    pub bytes_resumed: u64,
    pub pieces_rejected: u64,
    pub sources: Vec<SourceReport>,
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
    pub total: u64,
    pub done: u64,
    pub sources: usize,
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
    #[error("{path} is being downloaded by another process")]
    Locked { path: PathBuf },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not download {id} from any of {count} sources{kept}: {reasons}")]
    AllSourcesFailed {
        id: ContentId,
        count: usize,
        /// Says where the verified part was kept for a later resume, if anywhere.
        kept: String,
        reasons: String,
    },
}

/// What the first usable source told: its connection, the file's info and checked piece
/// hashes, and the last piece (verified) when it could send it.
struct Bootstrap {
    client: PeerClient,
    info: Info,
    verifier: Arc<PieceVerifier>,
    last_piece: Option<crate::protocol::Piece>,
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
    #[error("dropped after {0} pieces that failed verification")]
    TooManyBad(u32),
    #[error("has nothing left that is still needed")]
    NothingToOffer,
    #[error(transparent)]
    Local(DownloadError),
}

impl From<ProtocolError> for SourceFailure {
    fn from(e: ProtocolError) -> Self {
        SourceFailure::Client(e.into())
    }
}

type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Downloads files into a directory. Configure, then call [`Downloader::download`].
#[derive(Clone)]
pub struct Downloader {
    /// Connection time limits; the read limit is how long a source may stall. Default: 15 s read, 30 s write.
    pub limits: Limits,
    /// Piece requests kept in flight per source. Default: 16 (4 MiB).
    pub window: usize,
    /// Most sources used at once. Default: 16.
    pub max_sources: usize,
    /// Bad pieces after which a source is dropped. Default: 3.
    pub max_bad_pieces: u32,
    /// How long to wait before asking a busy source again. Default: 1 s.
    pub busy_retry: Duration,
    /// Shared limit on download bandwidth. Default: none.
    pub rate: Option<Arc<RateLimiter>>,
    /// Called as pieces are verified and sources come and go.
    pub progress: Option<ProgressFn>,
    /// Where to publish the download in progress so this peer serves its verified pieces. Default: none.
    pub partials: Option<Partials>,
}

impl Default for Downloader {
    fn default() -> Self {
        Downloader {
            limits: Limits {
                read_timeout: Duration::from_secs(15),
                write_timeout: Duration::from_secs(30),
            },
            window: 16,
            max_sources: 16,
            max_bad_pieces: 3,
            busy_retry: Duration::from_secs(1),
            rate: None,
            progress: None,
            partials: None,
        }
    }
}

/// Verified pieces are verified and written by at most this many blocking tasks per source.
const MAX_PENDING_WRITES: usize = 4;

/// The state all sources of one download share.
struct Swarm {
    id: ContentId,
    verifier: Arc<PieceVerifier>,
    file: Arc<File>,
    temp: PathBuf,
    sched: Mutex<PieceScheduler>,
    changed: Notify,
    done_bytes: AtomicU64,
    active: AtomicUsize,
    /// The same download as other peers see it, when it is shared while in progress.
    shared: Option<Arc<PartialFile>>,
}

impl Swarm {
    fn sched(&self) -> std::sync::MutexGuard<'_, PieceScheduler> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn piece_len(&self, i: u32) -> u64 {
        self.verifier.layout().piece_len(u64::from(i))
    }
}

enum WriteFailure {
    Corrupt(PieceError),
    Local(std::io::Error),
}

type WriteTask = JoinHandle<Result<(), WriteFailure>>;

impl Downloader {
    fn report_progress(&self, swarm: &Swarm) {
        if let Some(f) = &self.progress {
            f(Progress {
                total: swarm.verifier.layout().size,
                done: swarm.done_bytes.load(Ordering::Relaxed),
                sources: swarm.active.load(Ordering::Relaxed),
            });
        }
    }

    /// Downloads `id` into `dir` from `sources`, all at once. A partial download of the same
    /// file left in `dir` by an earlier run is re-checked and resumed. `name_hint` (untrusted)
    /// names the result; without it the first source's name is used.
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
        let sources = &sources[..sources.len().min(self.max_sources.max(1))];
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
        let file = Arc::new(file);
        let mut reports: Vec<SourceReport> = sources
            .iter()
            .map(|s| SourceReport {
                peer_id: s.peer_id,
                addr: s.addr.clone(),
                bytes: 0,
                pieces: 0,
                pieces_rejected: 0,
                error: None,
            })
            .collect();

        // The first source that answers with piece hashes adding up to `id` sets the layout.
        let mut first = None;
        for (k, s) in sources.iter().enumerate() {
            match self.bootstrap(s, id, &file).await {
                Ok(x) => {
                    first = Some((k, x));
                    break;
                }
                Err(e) => {
                    warn!("{}: {e}", s.label());
                    if matches!(e, SourceFailure::Pieces(PieceError::Corrupt { .. })) {
                        reports[k].pieces_rejected += 1;
                    }
                    reports[k].error = Some(e.to_string());
                }
            }
        }
        let Some((
            first_k,
            Bootstrap {
                client,
                info,
                verifier,
                last_piece,
            },
        )) = first
        else {
            return Err(self.fail(id, &temp, None, earlier_run, &reports));
        };
        let write_err = |source| DownloadError::Write {
            path: temp.clone(),
            source,
        };
        let (mut done, resumed) = recheck(file.clone(), verifier.clone())
            .await
            .map_err(write_err)?;
        let mut first_bytes = 0;
        if let Some(p) = last_piece
            && !done[p.index as usize]
        {
            let (f, off) = (
                file.clone(),
                verifier.layout().piece_offset(u64::from(p.index)),
            );
            let data = p.data.clone();
            tokio::task::spawn_blocking(move || f.write_all_at(&data, off))
                .await
                .map_err(|e| write_err(std::io::Error::other(e)))?
                .map_err(write_err)?;
            done[p.index as usize] = true;
            first_bytes = p.data.len() as u64;
            reports[first_k].bytes += first_bytes;
            reports[first_k].pieces += 1;
        }
        if resumed > 0 {
            info!(
                "resuming {id}: {resumed} bytes already verified in {}",
                temp.display()
            );
        }
        let name = name_hint
            .map(sanitize_file_name)
            .unwrap_or_else(|| sanitize_file_name(&info.name));
        let shared = self.partials.as_ref().map(|p| {
            let f = Arc::new(PartialFile::new(&name, &verifier, file.clone(), &done));
            p.insert(f.clone());
            f
        });
        let _unpublish = Unpublish(self.partials.clone(), id);
        let swarm = Arc::new(Swarm {
            shared,
            id,
            verifier: verifier.clone(),
            file: file.clone(),
            temp: temp.clone(),
            sched: Mutex::new(PieceScheduler::new(done)),
            changed: Notify::new(),
            done_bytes: AtomicU64::new(resumed + first_bytes),
            active: AtomicUsize::new(0),
        });
        self.report_progress(&swarm);

        let mut workers = JoinSet::new();
        let mut client = Some(client);
        // Nothing left after bootstrap and re-check (a single-piece file, a finished resume):
        // no source needs to be contacted again.
        let needed = swarm.sched().remaining() > 0;
        for (k, s) in sources.iter().enumerate().skip(first_k).filter(|_| needed) {
            if k != first_k && reports[k].error.is_some() {
                continue;
            }
            let (this, swarm, s) = (self.clone(), swarm.clone(), s.clone());
            let c = if k == first_k { client.take() } else { None };
            workers.spawn(async move {
                let mut rep = SourceReportDelta::default();
                let r = this.worker(&swarm, k, &s, c, &mut rep).await;
                (k, rep, r.err().map(|e| (s.label(), e.to_string())))
            });
        }
        while let Some(joined) = workers.join_next().await {
            let Ok((k, delta, err)) = joined else {
                continue;
            };
            reports[k].bytes += delta.bytes;
            reports[k].pieces += delta.pieces;
            reports[k].pieces_rejected += delta.rejected;
            if let Some((label, e)) = err {
                if swarm.sched().remaining() > 0 {
                    warn!("{label}: {e}");
                }
                reports[k].error = Some(e);
            }
        }
        if swarm.sched().remaining() > 0 {
            return Err(self.fail(id, &temp, Some(&swarm), earlier_run, &reports));
        }
        let (f, size) = (file.clone(), verifier.layout().size);
        // Every piece is verified, so the size is proven: drop anything beyond it, then sync.
        tokio::task::spawn_blocking(move || f.set_len(size).and_then(|()| f.sync_all()))
            .await
            .map_err(|e| write_err(std::io::Error::other(e)))?
            .map_err(write_err)?;
        let path = publish(&temp, dir, &name).map_err(write_err)?;
        drop(file);
        info!("downloaded {id} to {}", path.display());
        let size = verifier.layout().size;
        Ok(DownloadReport {
            content_id: id,
            path,
            size,
            seconds: started.elapsed().as_secs_f64(),
            bytes_fetched: reports.iter().map(|r| r.bytes).sum(),
            bytes_resumed: resumed,
            pieces_rejected: reports.iter().map(|r| r.pieces_rejected).sum(),
            sources: reports,
        })
    }

    /// Builds the failure, keeping the partial file only if it holds verified pieces.
    fn fail(
        &self,
        id: ContentId,
        temp: &Path,
        swarm: Option<&Swarm>,
        earlier_run: bool,
        reports: &[SourceReport],
    ) -> DownloadError {
        let verified = swarm
            .map(|s| s.done_bytes.load(Ordering::Relaxed))
            .unwrap_or(0);
        let kept = if verified > 0 {
            format!(
                " ({verified} verified bytes kept in {} for a later resume)",
                temp.display()
            )
        } else if earlier_run {
            // Not checked this time: what an earlier run left stays for the next one.
            format!(
                " (the partial download in {} is kept for a later resume)",
                temp.display()
            )
        } else {
            let _ = std::fs::remove_file(temp);
            String::new()
        };
        let reasons = reports
            .iter()
            .filter_map(|r| {
                let label = Source {
                    peer_id: r.peer_id,
                    addr: r.addr.clone(),
                }
                .label();
                let bad = match r.pieces_rejected {
                    0 => String::new(),
                    n => format!(" ({n} of its pieces did not match their hash)"),
                };
                r.error.as_ref().map(|e| format!("{label}: {e}{bad}"))
            })
            .collect::<Vec<_>>()
            .join("; ");
        DownloadError::AllSourcesFailed {
            id,
            count: reports.len(),
            kept,
            reasons,
        }
    }

    /// Connects to a source and learns the file's size and verified piece hashes.
    async fn bootstrap(
        &self,
        s: &Source,
        id: ContentId,
        file: &Arc<File>,
    ) -> Result<Bootstrap, SourceFailure> {
        let mut client = PeerClient::connect(&s.addr, self.limits).await?;
        let info = client.info(id).await?;
        let hashes = client.piece_hashes(id, info.size).await?;
        let verifier = Arc::new(PieceVerifier::new(id, info.size, &hashes)?);
        // The last piece's hash covers its length, so checking it proves the size before
        // anything on disk is sized by it. A source that cannot send it yet (partial, busy)
        // still sets the layout; the last piece is then checked when it arrives.
        let last = (verifier.layout().piece_count() - 1) as u32;
        let (f, v) = (file.clone(), verifier.clone());
        let on_disk = tokio::task::spawn_blocking(move || {
            let (i, layout) = (u64::from(last), v.layout());
            let mut buf = vec![0u8; layout.piece_len(i) as usize];
            f.read_exact_at(&mut buf, layout.piece_offset(i)).is_ok() && v.verify(i, &buf).is_ok()
        })
        .await
        .unwrap_or(false);
        if on_disk {
            return Ok(Bootstrap {
                client,
                info,
                verifier,
                last_piece: None,
            });
        }
        client.request_piece(id, last).await?;
        client.flush().await?;
        let last_piece = match client.next_piece().await {
            Ok(p) if p.index == last => {
                verifier.verify(u64::from(last), &p.data)?;
                Some(p)
            }
            Ok(p) => {
                return Err(SourceFailure::OutOfOrder {
                    expected: last,
                    received: p.index,
                });
            }
            Err(PeerClientError::Protocol(ProtocolError::Remote(e)))
                if e.code == code::NOT_FOUND || e.code == code::BUSY =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Bootstrap {
            client,
            info,
            verifier,
            last_piece,
        })
    }

    /// Fetches pieces from one source until the file is complete or the source fails.
    async fn worker(
        &self,
        swarm: &Swarm,
        k: usize,
        source: &Source,
        client: Option<PeerClient>,
        rep: &mut SourceReportDelta,
    ) -> Result<(), SourceFailure> {
        let mut client = match client {
            Some(c) => c,
            None => {
                let mut c = PeerClient::connect(&source.addr, self.limits).await?;
                let info = c.info(swarm.id).await?;
                let expected = swarm.verifier.layout().size;
                if info.size != expected {
                    return Err(SourceFailure::SizeMismatch {
                        expected,
                        received: info.size,
                    });
                }
                c
            }
        };
        swarm.active.fetch_add(1, Ordering::Relaxed);
        self.report_progress(swarm);
        let mut w = WorkerState::default();
        let result = self.fetch_loop(swarm, k, &mut client, &mut w, rep).await;
        // Keep what was verified; give back what was not.
        let mut result = result;
        while let Some((i, t)) = w.writes.pop_front() {
            if let Err(e) = self.finish_write(swarm, k, i, t.await, rep) {
                result = result.and(Err(e));
            }
        }
        {
            let mut sched = swarm.sched();
            for i in w.mine.drain(..) {
                sched.release(i);
            }
        }
        swarm.active.fetch_sub(1, Ordering::Relaxed);
        swarm.changed.notify_waiters();
        self.report_progress(swarm);
        result
    }

    async fn fetch_loop(
        &self,
        swarm: &Swarm,
        k: usize,
        client: &mut PeerClient,
        w: &mut WorkerState,
        rep: &mut SourceReportDelta,
    ) -> Result<(), SourceFailure> {
        let pieces = swarm.verifier.layout().piece_count() as u32;
        w.refresh_have(client, swarm.id, pieces).await?;
        let mut busy_until: Option<Instant> = None;
        let mut last_new_piece = Instant::now();
        loop {
            if busy_until.is_some_and(|t| Instant::now() >= t) {
                busy_until = None;
            }
            if busy_until.is_none() {
                let mut sent = false;
                while w.mine.len() < self.window {
                    let (mine, writes, have) = (&w.mine, &w.writes, &w.have);
                    let in_hand = |i: u32| mine.contains(&i) || writes.iter().any(|(x, _)| *x == i);
                    let has = |i: u32| have.as_ref().is_none_or(|b| bitmap_has(b, i));
                    let Some(i) = swarm.sched().claim_from(k, in_hand, has) else {
                        break;
                    };
                    // In `mine` first, so the worker's cleanup gives it back if sending fails.
                    w.mine.push_back(i);
                    client.request_piece(swarm.id, i).await?;
                    sent = true;
                }
                if sent {
                    client.flush().await?;
                }
            }
            if w.mine.is_empty() && w.writes.is_empty() {
                let (remaining, in_flight) = {
                    let s = swarm.sched();
                    (s.remaining(), s.anything_in_flight())
                };
                if remaining == 0 {
                    return Ok(());
                }
                if w.have.is_some() {
                    // A partial source: wait for it to verify more pieces, unless it stopped.
                    if last_new_piece.elapsed() > self.limits.read_timeout {
                        return Err(SourceFailure::NothingToOffer);
                    }
                    tokio::time::sleep(PARTIAL_POLL).await;
                    if w.refresh_have(client, swarm.id, pieces).await? {
                        last_new_piece = Instant::now();
                    }
                    continue;
                }
                if !in_flight && busy_until.is_none() {
                    return Err(SourceFailure::NothingToOffer);
                }
                let notified = swarm.changed.notified();
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
            tokio::select! {
                biased;
                r = oldest(&mut w.writes), if !w.writes.is_empty() => {
                    if let Some((i, _)) = w.writes.pop_front() {
                        self.finish_write(swarm, k, i, r, rep)?;
                    }
                }
                piece = client.next_piece(), if !w.mine.is_empty() && w.writes.len() < MAX_PENDING_WRITES => {
                    let expected = w.mine.front().copied().unwrap_or(u32::MAX);
                    match piece {
                        Ok(piece) => {
                            w.mine.pop_front();
                            if piece.index != expected {
                                swarm.sched().release(expected);
                                return Err(SourceFailure::OutOfOrder { expected, received: piece.index });
                            }
                            if swarm.sched().is_done(expected) {
                                swarm.sched().complete(expected); // an endgame copy arrived second
                                continue;
                            }
                            if let Some(rate) = &self.rate {
                                rate.take(piece.data.len() as u64).await;
                            }
                            let (v, f, data) = (swarm.verifier.clone(), swarm.file.clone(), piece.data);
                            w.writes.push_back((expected, tokio::task::spawn_blocking(move || {
                                let i = u64::from(expected);
                                v.verify(i, &data).map_err(WriteFailure::Corrupt)?;
                                let off = v.layout().piece_offset(i);
                                f.write_all_at(&data, off).map_err(WriteFailure::Local)?;
                                start_writeback(&f, off, data.len());
                                Ok(())
                            })));
                        }
                        Err(PeerClientError::Protocol(ProtocolError::Remote(e))) if e.code == code::BUSY => {
                            w.mine.pop_front();
                            swarm.sched().release(expected);
                            swarm.changed.notify_waiters();
                            busy_until = Some(Instant::now() + self.busy_retry);
                        }
                        Err(PeerClientError::Protocol(ProtocolError::Remote(e)))
                            if e.code == code::NOT_FOUND && w.have.is_some() =>
                        {
                            // A partial source lost track of a piece: ask others, ask it again later.
                            w.mine.pop_front();
                            swarm.sched().release(expected);
                            swarm.changed.notify_waiters();
                            w.refresh_have(client, swarm.id, pieces).await?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    fn finish_write(
        &self,
        swarm: &Swarm,
        k: usize,
        i: u32,
        r: Result<Result<(), WriteFailure>, tokio::task::JoinError>,
        rep: &mut SourceReportDelta,
    ) -> Result<(), SourceFailure> {
        let local = |source| {
            SourceFailure::Local(DownloadError::Write {
                path: swarm.temp.clone(),
                source,
            })
        };
        match r {
            Ok(Ok(())) => {
                if let Some(p) = &swarm.shared {
                    p.mark(i);
                }
                if swarm.sched().complete(i) {
                    let len = swarm.piece_len(i);
                    swarm.done_bytes.fetch_add(len, Ordering::Relaxed);
                    rep.bytes += len;
                    rep.pieces += 1;
                    self.report_progress(swarm);
                }
                swarm.changed.notify_waiters();
                Ok(())
            }
            Ok(Err(WriteFailure::Corrupt(e))) => {
                swarm.sched().reject(i, k);
                swarm.changed.notify_waiters();
                rep.rejected += 1;
                warn!("piece {i} of {} failed verification: {e}", swarm.id);
                if rep.rejected >= u64::from(self.max_bad_pieces) {
                    Err(SourceFailure::TooManyBad(self.max_bad_pieces))
                } else {
                    Ok(())
                }
            }
            Ok(Err(WriteFailure::Local(e))) => {
                swarm.sched().release(i);
                Err(local(e))
            }
            Err(e) => {
                swarm.sched().release(i);
                Err(local(std::io::Error::other(e)))
            }
        }
    }
}

/// How often an idle worker asks a partial source which pieces it has now.
const PARTIAL_POLL: Duration = Duration::from_millis(250);

/// One source's requests in flight, pieces being verified, and what it can send.
#[derive(Default)]
struct WorkerState {
    mine: VecDeque<u32>,
    writes: VecDeque<(u32, WriteTask)>,
    /// `None` when the source has the whole file; else its `Have` bitmap.
    have: Option<Vec<u8>>,
}

impl WorkerState {
    /// Asks the source which pieces it has; `true` if it has more than before.
    async fn refresh_have(
        &mut self,
        client: &mut PeerClient,
        id: ContentId,
        pieces: u32,
    ) -> Result<bool, SourceFailure> {
        let h = client.have(id).await?;
        let count = |b: &[u8]| (0..pieces).filter(|i| bitmap_has(b, *i)).count();
        let now = count(&h.bitmap);
        let before = self.have.as_deref().map(count).unwrap_or(pieces as usize);
        self.have = (now < pieces as usize).then_some(h.bitmap);
        Ok(now > before || self.have.is_none())
    }
}

#[derive(Default)]
struct SourceReportDelta {
    bytes: u64,
    pieces: u64,
    rejected: u64,
}

/// Takes a download out of the partial-file registry when it ends, however it ends.
struct Unpublish(Option<Partials>, ContentId);

impl Drop for Unpublish {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            p.remove(&self.1);
        }
    }
}

/// Waits for the oldest pending write (forever if there is none).
async fn oldest(
    writes: &mut VecDeque<(u32, WriteTask)>,
) -> Result<Result<(), WriteFailure>, tokio::task::JoinError> {
    match writes.front_mut() {
        Some((_, h)) => h.await,
        None => std::future::pending().await,
    }
}

/// Sizes the partial file and checks every piece already in it; returns which pieces are
/// verified and how many bytes they hold. Nothing on disk is trusted without this check.
async fn recheck(
    file: Arc<File>,
    verifier: Arc<PieceVerifier>,
) -> std::io::Result<(Vec<bool>, u64)> {
    tokio::task::spawn_blocking(move || {
        let layout = verifier.layout();
        let had = file.metadata()?.len();
        // Only grow: what an earlier run left is never cut before the size is proven.
        if had < layout.size {
            file.set_len(layout.size)?;
        }
        let count = layout.piece_count();
        if had == 0 {
            return Ok((vec![false; count as usize], 0));
        }
        let done: Vec<bool> = (0..count)
            .into_par_iter()
            .map(|i| {
                let len = layout.piece_len(i);
                if layout.piece_offset(i) + len > had {
                    return false;
                }
                let mut buf = vec![0u8; len as usize];
                file.read_exact_at(&mut buf, layout.piece_offset(i)).is_ok()
                    && verifier.verify(i, &buf).is_ok()
            })
            .collect();
        let bytes = (0..count)
            .filter(|i| done[*i as usize])
            .map(|i| layout.piece_len(i))
            .sum();
        Ok((done, bytes))
    })
    .await
    .map_err(std::io::Error::other)?
}
