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
use crate::content::{ContentId, HashFetch, PieceError, PieceVerifier};
use crate::peer::{PartialFile, Partials};
use crate::peer::{PeerClient, PeerClientError};
use crate::protocol::{ErrorCode, Info, Limits, ProtocolError, bitmap_has};
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
    /// While some source answers `BUSY`: the best place in a queue for an upload slot that a
    /// source told (0 when the sources that are busy told none).
    pub queued: Option<u32>,
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
    #[error("no progress on {id} for {secs} s{kept}: {reasons}")]
    Stalled {
        id: ContentId,
        secs: u64,
        kept: String,
        reasons: String,
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
    #[error("busy ({}) for {secs} s: gave up waiting for an upload slot", queue_place(*.position))]
    QueueWait { position: Option<u32>, secs: u64 },
    #[error(
        "claimed piece {piece} in its Have but answered NOT_FOUND for it {times} times in a row"
    )]
    Unsent { piece: u32, times: u32 },
    #[error("sent no block of piece hashes for {0} s")]
    SlowBootstrap(u64),
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
    /// First wait before asking a busy source again; it doubles with each `BUSY` in a row, up
    /// to [`BUSY_RETRY_MAX`]. Default: 500 ms.
    pub busy_retry: Duration,
    /// How long a source may answer only `BUSY` before it is given up (`get --max-queue-wait`).
    /// Default: 60 s.
    pub max_queue_wait: Duration,
    /// How long a download may go without a verified piece from any source (before the first
    /// source passes bootstrap: without a block of piece hashes received) before it fails
    /// (`get --stall-timeout`). Default: 60 s.
    pub stall_timeout: Duration,
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
            busy_retry: Duration::from_millis(500),
            max_queue_wait: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(60),
            rate: None,
            progress: None,
            partials: None,
        }
    }
}

/// Longest wait between two `GetPiece` probes to a busy source: short enough that a slot the
/// peer keeps for us at the head of its queue is taken soon after it frees up.
pub const BUSY_RETRY_MAX: Duration = Duration::from_secs(2);

/// `NOT_FOUND` answers in a row for pieces a partial source claims in its `Have` after which
/// it is dropped; before each new request it is left alone [`UNSENT_RETRY`] times 2^(n-1).
const MAX_UNSENT: u32 = 3;
const UNSENT_RETRY: Duration = Duration::from_millis(500);

/// Bootstrap asks the next source too when the ones asked so far have not passed within this
/// long, so a silent or slow first source does not hold up the download.
const BOOTSTRAP_STAGGER: Duration = Duration::from_secs(1);

/// Verified pieces are verified and written by at most this many blocking tasks per source.
const MAX_PENDING_WRITES: usize = 4;

/// The place in a `BUSY` answer's message ("… you are number P in the queue"), for display
/// only: the message is text for humans, not part of the protocol.
fn queue_position(message: &str) -> Option<u32> {
    let rest = &message[message.find("number ")? + "number ".len()..];
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

fn queue_place(position: Option<u32>) -> String {
    match position {
        Some(p) => format!("queue position {p}"),
        None => "queue position unknown".to_string(),
    }
}

/// What one source is doing, for progress and for the error of a download that stalls.
#[derive(Debug, Clone, Copy, Default)]
enum SourceState {
    /// Not asked yet, or connecting.
    #[default]
    Starting,
    /// Pieces requested; `since` the last verified piece or the start.
    Fetching { since: Instant },
    /// Answering `BUSY` since `since`.
    Busy {
        position: Option<u32>,
        since: Instant,
    },
    /// A partial source with nothing we need, since `since`.
    PartialIdle { since: Instant },
    /// A partial source answering `NOT_FOUND` for pieces it claims.
    Unsent { piece: u32, times: u32 },
}

/// What one source did and is doing, kept outside its worker so it survives the worker being
/// cancelled.
#[derive(Debug, Default)]
struct SourceLive {
    bytes: u64,
    pieces: u64,
    rejected: u64,
    error: Option<String>,
    state: SourceState,
}

impl SourceLive {
    /// Why this source has not delivered, as of `now`.
    fn why(&self, now: Instant) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let secs = |t: Instant| now.saturating_duration_since(t).as_secs();
        match self.state {
            SourceState::Starting => "did not get as far as sending pieces".to_string(),
            SourceState::Fetching { since } => {
                format!("sent no verified piece for {} s", secs(since))
            }
            SourceState::Busy { position, since } => {
                format!("busy ({}) for {} s", queue_place(position), secs(since))
            }
            SourceState::PartialIdle { since } => format!(
                "partial source with no piece still needed for {} s",
                secs(since)
            ),
            SourceState::Unsent { piece, times } => {
                format!("claimed piece {piece} it never sent (NOT_FOUND {times} times)")
            }
        }
    }
}

type LiveSources = Arc<Mutex<Vec<SourceLive>>>;

fn lock_live(live: &Mutex<Vec<SourceLive>>) -> std::sync::MutexGuard<'_, Vec<SourceLive>> {
    live.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state all sources of one download share.
struct Swarm {
    id: ContentId,
    verifier: Arc<PieceVerifier>,
    file: Arc<File>,
    temp: PathBuf,
    sched: Mutex<PieceScheduler>,
    changed: Notify,
    /// Woken (with a stored permit) when the last piece is verified.
    finished: Notify,
    done_bytes: AtomicU64,
    active: AtomicUsize,
    /// When a piece was last verified.
    last_progress: Mutex<Instant>,
    live: LiveSources,
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

    fn set_state(&self, k: usize, state: SourceState) {
        if let Some(s) = lock_live(&self.live).get_mut(k) {
            s.state = state;
        }
    }

    fn last_progress(&self) -> Instant {
        *self.last_progress.lock().unwrap_or_else(|p| p.into_inner())
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
            let queued = lock_live(&swarm.live)
                .iter()
                .filter(|s| s.error.is_none())
                .filter_map(|s| match s.state {
                    SourceState::Busy { position, .. } => Some(position.unwrap_or(0)),
                    _ => None,
                })
                .min();
            f(Progress {
                total: swarm.verifier.layout().size,
                done: swarm.done_bytes.load(Ordering::Relaxed),
                sources: swarm.active.load(Ordering::Relaxed),
                queued,
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
        let live: LiveSources = Arc::new(Mutex::new(
            sources.iter().map(|_| SourceLive::default()).collect(),
        ));

        // The first source that answers with piece hashes adding up to `id` sets the layout.
        let (
            first_k,
            Bootstrap {
                client,
                info,
                verifier,
                last_piece,
            },
        ) = match self.bootstrap_any(sources, id, &file, &live).await {
            Ok(first) => first,
            Err(stalled) => {
                return Err(self.fail(id, &temp, None, earlier_run, sources, &live, stalled));
            }
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
            let mut l = lock_live(&live);
            l[first_k].bytes += first_bytes;
            l[first_k].pieces += 1;
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
            finished: Notify::new(),
            done_bytes: AtomicU64::new(resumed + first_bytes),
            active: AtomicUsize::new(0),
            last_progress: Mutex::new(Instant::now()),
            live: live.clone(),
        });
        self.report_progress(&swarm);

        let mut workers = JoinSet::new();
        let mut client = Some(client);
        // Nothing left after bootstrap and re-check (a single-piece file, a finished resume):
        // no source needs to be contacted again.
        let needed = swarm.sched().remaining() > 0;
        for (k, s) in sources.iter().enumerate().filter(|_| needed) {
            if k != first_k && lock_live(&live)[k].error.is_some() {
                continue;
            }
            let (this, swarm, s) = (self.clone(), swarm.clone(), s.clone());
            let c = if k == first_k { client.take() } else { None };
            workers.spawn(async move {
                let r = this.worker(&swarm, k, &s, c).await;
                (k, r.err().map(|e| (s.label(), e.to_string())))
            });
        }
        let mut stalled = false;
        // Until every worker has stopped, the last piece is verified (workers still waiting on
        // replies are then cancelled), or nothing was verified for `stall_timeout`.
        while swarm.sched().remaining() > 0 {
            let stall_at =
                tokio::time::Instant::from_std(swarm.last_progress() + self.stall_timeout);
            tokio::select! {
                joined = workers.join_next() => {
                    let Some(joined) = joined else { break };
                    let Ok((k, Some((label, e)))) = joined else { continue };
                    if swarm.sched().remaining() > 0 {
                        warn!("{label}: {e}");
                    }
                    lock_live(&live)[k].error = Some(e);
                }
                () = swarm.finished.notified() => {}
                () = tokio::time::sleep_until(stall_at) => {
                    if swarm.last_progress().elapsed() >= self.stall_timeout {
                        stalled = true;
                        break;
                    }
                }
            }
        }
        // Stop the workers still running (waiting on a silent source, or stalled) and wait
        // for them to let go of their pieces.
        workers.abort_all();
        while workers.join_next().await.is_some() {}
        if swarm.sched().remaining() > 0 {
            return Err(self.fail(
                id,
                &temp,
                Some(&swarm),
                earlier_run,
                sources,
                &live,
                stalled,
            ));
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
        let reports = source_reports(sources, &live);
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

    /// Builds the failure, keeping the partial file only if it holds verified pieces; names
    /// every source and why it did not deliver.
    #[allow(clippy::too_many_arguments)]
    fn fail(
        &self,
        id: ContentId,
        temp: &Path,
        swarm: Option<&Swarm>,
        earlier_run: bool,
        sources: &[Source],
        live: &Mutex<Vec<SourceLive>>,
        stalled: bool,
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
        let now = Instant::now();
        let reasons = sources
            .iter()
            .zip(lock_live(live).iter())
            .map(|(s, l)| {
                let bad = match l.rejected {
                    0 => String::new(),
                    n => format!(" ({n} of its pieces did not match their hash)"),
                };
                format!("{}: {}{bad}", s.label(), l.why(now))
            })
            .collect::<Vec<_>>()
            .join("; ");
        if stalled {
            return DownloadError::Stalled {
                id,
                secs: self.stall_timeout.as_secs(),
                kept,
                reasons,
            };
        }
        DownloadError::AllSourcesFailed {
            id,
            count: sources.len(),
            kept,
            reasons,
        }
    }

    /// Bootstraps from the sources in order, asking the next one as well whenever those asked
    /// so far have neither passed nor failed within [`BOOTSTRAP_STAGGER`], or one fails; the
    /// first to pass wins and the others are cancelled (they are still used as sources).
    /// Gives up when none has received a block of piece hashes for `stall_timeout` (`Err(true)`)
    /// or all have failed (`Err(false)`). Failures are recorded in `live`.
    async fn bootstrap_any(
        &self,
        sources: &[Source],
        id: ContentId,
        file: &Arc<File>,
        live: &Mutex<Vec<SourceLive>>,
    ) -> Result<(usize, Bootstrap), bool> {
        // When a bootstrap last received a whole block of piece hashes (or the start).
        let progress = Arc::new(Mutex::new(Instant::now()));
        let last_progress = || *progress.lock().unwrap_or_else(|p| p.into_inner());
        let mut tries = JoinSet::new();
        let mut next = 0;
        let mut next_at = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            if next < sources.len() && (tries.is_empty() || now >= next_at) {
                let (this, s, file) = (self.clone(), sources[next].clone(), file.clone());
                let (k, progress) = (next, progress.clone());
                tries.spawn(async move { (k, this.bootstrap(&s, id, &file, &progress).await) });
                next += 1;
                next_at = now + BOOTSTRAP_STAGGER;
            }
            if tries.is_empty() {
                return Err(false);
            }
            let deadline = tokio::time::Instant::from_std(last_progress() + self.stall_timeout);
            tokio::select! {
                joined = tries.join_next() => match joined {
                    Some(Ok((k, Ok(b)))) => return Ok((k, b)),
                    Some(Ok((k, Err(e)))) => {
                        warn!("{}: {e}", sources[k].label());
                        let mut l = lock_live(live);
                        if matches!(e, SourceFailure::Pieces(PieceError::Corrupt { .. })) {
                            l[k].rejected += 1;
                        }
                        l[k].error = Some(e.to_string());
                        // Ask the next source at once.
                        next_at = tokio::time::Instant::now();
                    }
                    _ => {}
                },
                () = tokio::time::sleep_until(next_at), if next < sources.len() => {}
                () = tokio::time::sleep_until(deadline) => {
                    if last_progress().elapsed() < self.stall_timeout {
                        continue;
                    }
                    let secs = self.stall_timeout.as_secs();
                    let mut l = lock_live(live);
                    for s in l.iter_mut().take(next).filter(|s| s.error.is_none()) {
                        s.error = Some(SourceFailure::SlowBootstrap(secs).to_string());
                    }
                    return Err(true);
                }
            }
        }
    }

    /// Connects to a source and learns the file's size and verified piece hashes.
    async fn bootstrap(
        &self,
        s: &Source,
        id: ContentId,
        file: &Arc<File>,
        progress: &Mutex<Instant>,
    ) -> Result<Bootstrap, SourceFailure> {
        let mut client = PeerClient::connect(&s.addr, self.limits).await?;
        let info = client.info(id).await?;
        // At most one block of hashes is held unchecked, whatever size the source claims.
        let mut fetch = HashFetch::new(id, info.size);
        while let Some((start, count)) = fetch.next_request() {
            // `Info.size` is at most MAX_FILE_SIZE, so piece indexes fit a u32.
            let (start, count) = (
                u32::try_from(start).unwrap_or(u32::MAX),
                u32::try_from(count).unwrap_or(u32::MAX),
            );
            let hashes = client.hashes(id, start, count).await?;
            fetch.receive(&hashes)?;
            if fetch.unchecked_len() == 0 {
                // A whole block arrived: progress, as far as the stall limit is concerned.
                *progress.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            }
        }
        let verifier = Arc::new(fetch.finish()?);
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
                if e.code == ErrorCode::NotFound || e.code == ErrorCode::Busy =>
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
        swarm.set_state(
            k,
            SourceState::Fetching {
                since: Instant::now(),
            },
        );
        self.report_progress(swarm);
        let mut w = WorkerState::default();
        let result = self.fetch_loop(swarm, k, source, &mut client, &mut w).await;
        // Keep what was verified; give back what was not.
        let mut result = result;
        while let Some((i, t)) = w.writes.pop_front() {
            if let Err(e) = self.finish_write(swarm, k, i, t.await) {
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
        source: &Source,
        client: &mut PeerClient,
        w: &mut WorkerState,
    ) -> Result<(), SourceFailure> {
        let pieces = swarm.verifier.layout().piece_count() as u32;
        w.refresh_have(client, swarm.id, pieces).await?;
        // No new `GetPiece` before this (backing off a busy source or one that did not send
        // a piece it claimed); meanwhile replies already in flight are still read.
        let mut pause_until: Option<Instant> = None;
        let mut busy: Option<BusySpell> = None;
        // NOT_FOUND answers in a row for pieces this partial source claims.
        let mut unsent = 0u32;
        // A `GetHave` is due once the replies to the pieces in flight are read (they come
        // first: replies are in request order).
        let mut have_due = false;
        let mut last_new_piece = Instant::now();
        // Whether `SourceState::Fetching` is what the others see for this source.
        let mut shown_fetching = true;
        loop {
            if pause_until.is_some_and(|t| Instant::now() >= t) {
                pause_until = None;
            }
            if have_due && w.mine.is_empty() {
                have_due = false;
                if w.refresh_have(client, swarm.id, pieces).await? {
                    last_new_piece = Instant::now();
                }
                continue;
            }
            if pause_until.is_none() && !have_due {
                // While a source is busy or holding back pieces, one request probes it.
                let limit = if busy.is_some() || unsent > 0 {
                    1
                } else {
                    self.window
                };
                let mut sent = false;
                while w.mine.len() < limit {
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
                if let Some(t) = pause_until {
                    let notified = swarm.changed.notified();
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(t.into()) => {}
                    }
                    continue;
                }
                if w.have.is_some() {
                    // A partial source: wait for it to verify more pieces, unless it stopped.
                    shown_fetching = false;
                    swarm.set_state(
                        k,
                        SourceState::PartialIdle {
                            since: last_new_piece,
                        },
                    );
                    if last_new_piece.elapsed() > self.limits.read_timeout {
                        return Err(SourceFailure::NothingToOffer);
                    }
                    tokio::time::sleep(PARTIAL_POLL).await;
                    if w.refresh_have(client, swarm.id, pieces).await? {
                        last_new_piece = Instant::now();
                    }
                    continue;
                }
                if !in_flight {
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
                        self.finish_write(swarm, k, i, r)?;
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
                            let was_busy = busy.take().is_some();
                            unsent = 0;
                            if !shown_fetching {
                                shown_fetching = true;
                                swarm.set_state(k, SourceState::Fetching { since: Instant::now() });
                                if was_busy {
                                    self.report_progress(swarm);
                                }
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
                        Err(PeerClientError::Protocol(ProtocolError::Remote(e))) if e.code == ErrorCode::Busy => {
                            w.mine.pop_front();
                            swarm.sched().release(expected);
                            swarm.changed.notify_waiters();
                            let now = Instant::now();
                            let position = queue_position(&e.message);
                            let spell = busy.get_or_insert_with(|| {
                                warn!(
                                    "{}: all upload slots taken, {}; asking again for up to {} s",
                                    source.label(),
                                    queue_place(position),
                                    self.max_queue_wait.as_secs()
                                );
                                BusySpell { since: now, retry: self.busy_retry }
                            });
                            let waited = now.saturating_duration_since(spell.since);
                            if waited >= self.max_queue_wait {
                                return Err(SourceFailure::QueueWait { position, secs: waited.as_secs() });
                            }
                            // One pause per round of answers: the `BUSY`s to requests sent
                            // together do not each double it.
                            // The last probe goes out when the wait runs out.
                            if pause_until.is_none() {
                                let give_up = spell.since + self.max_queue_wait;
                                pause_until = Some((now + spell.retry).min(give_up));
                                spell.retry = (spell.retry * 2).min(BUSY_RETRY_MAX);
                            }
                            shown_fetching = false;
                            swarm.set_state(k, SourceState::Busy { position, since: spell.since });
                            self.report_progress(swarm);
                        }
                        Err(PeerClientError::Protocol(ProtocolError::Remote(e)))
                            if e.code == ErrorCode::NotFound && w.have.is_some() =>
                        {
                            // A partial source does not send a piece it claimed: ask others,
                            // ask it again after a pause, drop it if it goes on.
                            w.mine.pop_front();
                            swarm.sched().release(expected);
                            swarm.changed.notify_waiters();
                            unsent += 1;
                            shown_fetching = false;
                            swarm.set_state(k, SourceState::Unsent { piece: expected, times: unsent });
                            if unsent >= MAX_UNSENT {
                                return Err(SourceFailure::Unsent { piece: expected, times: unsent });
                            }
                            have_due = true;
                            if pause_until.is_none() {
                                pause_until = Some(Instant::now() + UNSENT_RETRY * 2u32.pow(unsent - 1));
                            }
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
                let (newly, left) = {
                    let mut s = swarm.sched();
                    (s.complete(i), s.remaining())
                };
                if newly {
                    let len = swarm.piece_len(i);
                    swarm.done_bytes.fetch_add(len, Ordering::Relaxed);
                    *swarm
                        .last_progress
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Instant::now();
                    {
                        let mut l = lock_live(&swarm.live);
                        l[k].bytes += len;
                        l[k].pieces += 1;
                        if let SourceState::Fetching { since } = &mut l[k].state {
                            *since = Instant::now();
                        }
                    }
                    self.report_progress(swarm);
                    if left == 0 {
                        swarm.finished.notify_one();
                    }
                }
                swarm.changed.notify_waiters();
                Ok(())
            }
            Ok(Err(WriteFailure::Corrupt(e))) => {
                swarm.sched().reject(i, k);
                swarm.changed.notify_waiters();
                let rejected = {
                    let mut l = lock_live(&swarm.live);
                    l[k].rejected += 1;
                    l[k].rejected
                };
                warn!("piece {i} of {} failed verification: {e}", swarm.id);
                if rejected >= u64::from(self.max_bad_pieces) {
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

/// A run of `BUSY` answers from one source: since when, and the pause before the next probe.
struct BusySpell {
    since: Instant,
    retry: Duration,
}

/// The per-source reports of a download, from what its workers recorded.
fn source_reports(sources: &[Source], live: &Mutex<Vec<SourceLive>>) -> Vec<SourceReport> {
    sources
        .iter()
        .zip(lock_live(live).iter())
        .map(|(s, l)| SourceReport {
            peer_id: s.peer_id,
            addr: s.addr.clone(),
            bytes: l.bytes,
            pieces: l.pieces,
            pieces_rejected: l.rejected,
            error: l.error.clone(),
        })
        .collect()
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
        // A peer without the feature serves complete files only.
        if !client.supports(crate::protocol::feature::HAVE) {
            self.have = None;
            return Ok(true);
        }
        let h = client.have(id).await?;
        let count = |b: &[u8]| (0..pieces).filter(|i| bitmap_has(b, *i)).count();
        let now = count(&h.bitmap);
        let before = self.have.as_deref().map(count).unwrap_or(pieces as usize);
        self.have = (now < pieces as usize).then_some(h.bitmap);
        Ok(now > before || self.have.is_none())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_place_is_read_from_busy_messages_for_display_only() {
        let m = "all upload slots taken; you are number 3 in the queue";
        assert_eq!(queue_position(m), Some(3));
        assert_eq!(queue_position("number 12"), Some(12));
        assert_eq!(queue_position("busy"), None);
        assert_eq!(queue_position("number x"), None);
        assert_eq!(queue_position("number 99999999999999999999"), None);
        assert_eq!(queue_place(None), "queue position unknown");
    }
}
