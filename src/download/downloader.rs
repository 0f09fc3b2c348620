//! `Downloader`: fetches a file's pieces from all its sources at once, verifying each before writing it.
//!
//! A download runs in phases, each a function of its own:
//! 1. open and lock ([`OpenDownload::open`]): the partial file in the target directory;
//! 2. bootstrap ([`Downloader::bootstrap_any`]): the first source to send piece hashes that
//!    add up to the content id sets the layout;
//! 3. resume ([`Downloader::resume`]): what an earlier run left is re-checked, the swarm built;
//! 4. workers ([`Downloader::run_workers`]): one per source, until every piece is verified,
//!    every source failed, or nothing was verified for the stall limit;
//! 5. publish ([`Downloader::publish_file`]): the file is synced and renamed to its final name.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{info, warn};

use super::error::DownloadError;
use super::names::publish;
use super::open::OpenDownload;
use super::report::{DownloadReport, Progress, Source};
use super::resume::Resumed;
use super::settings::SourceTiming;
use super::swarm::{SourceState, Swarm, lock_live, source_reports};
use crate::content::ContentId;
use crate::peer::{Partials, PeerClient};
use crate::rate::RateLimiter;
use crate::tls::Tls;

type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Default of [`Downloader::window`]: piece requests in flight per source (4 MiB).
pub const WINDOW: usize = 16;
/// Default of [`Downloader::max_sources`].
pub const MAX_SOURCES: usize = 16;
/// Default of [`Downloader::max_bad_pieces`].
pub const MAX_BAD_PIECES: u32 = 3;
/// Default of [`Downloader::max_queue_wait`] (`get --max-queue-wait`).
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(60);
/// Default of [`Downloader::stall_timeout`] (`get --stall-timeout`).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait between two `GetPiece` probes to a busy source: short enough that a slot the
/// peer keeps for us at the head of its queue is taken soon after it frees up.
pub const BUSY_RETRY_MAX: Duration = Duration::from_secs(2);

/// Downloads files into a directory. Configure, then call [`Downloader::download`].
#[derive(Clone)]
pub struct Downloader {
    /// Connection time limits (the read limit is how long a source may stall) and the first
    /// wait before asking a busy source again, which doubles with each `BUSY` in a row up to
    /// [`BUSY_RETRY_MAX`]. Default: [`SourceTiming::default`].
    pub timing: SourceTiming,
    /// Piece requests kept in flight per source. Default: [`WINDOW`].
    pub window: usize,
    /// Most sources used at once. Default: [`MAX_SOURCES`].
    pub max_sources: usize,
    /// Bad pieces after which a source is dropped. Default: [`MAX_BAD_PIECES`].
    pub max_bad_pieces: u32,
    /// How long a source may answer only `BUSY` before it is given up (`get --max-queue-wait`).
    /// Default: [`MAX_QUEUE_WAIT`].
    pub max_queue_wait: Duration,
    /// How long a download may go without a verified piece from any source (before the first
    /// source passes bootstrap: without a block of piece hashes received) before it fails
    /// (`get --stall-timeout`). Default: [`STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// Shared limit on download bandwidth. Default: none.
    pub rate: Option<Arc<RateLimiter>>,
    /// Called as pieces are verified and sources come and go. Default: none.
    pub progress: Option<ProgressFn>,
    /// Where to publish the download in progress so this peer serves its verified pieces. Default: none.
    pub partials: Option<Partials>,
    /// The key sources see: a member's in a private group. Default: none, a fresh anonymous
    /// key per connection.
    pub tls: Option<Tls>,
    /// A UDP socket for QUIC and hole punching (docs/PROTOCOL.md §7.11). Default: none, TCP
    /// only.
    pub udp: Option<Arc<super::udp::UdpRoute>>,
    /// The index that relays to the sources it listed (§7.10): the only way to a source
    /// without an address, and the way to one whose address cannot be connected to. Default:
    /// none.
    pub relay: Option<super::RelayRoute>,
}

impl Default for Downloader {
    fn default() -> Self {
        Downloader {
            timing: SourceTiming::default(),
            window: WINDOW,
            max_sources: MAX_SOURCES,
            max_bad_pieces: MAX_BAD_PIECES,
            max_queue_wait: MAX_QUEUE_WAIT,
            stall_timeout: STALL_TIMEOUT,
            rate: None,
            progress: None,
            partials: None,
            tls: None,
            udp: None,
            relay: None,
        }
    }
}

impl Downloader {
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
        let job = OpenDownload::open(id, sources, dir)?;
        // The first source that answers with piece hashes adding up to `id` sets the layout.
        let (first_k, first) = match self.bootstrap_any(&job).await {
            Ok(first) => first,
            Err(stalled) => return Err(self.fail(&job, None, stalled)),
        };
        let Resumed {
            swarm,
            client,
            name,
            resumed,
            unpublish: _unpublish,
        } = self.resume(&job, first_k, first, name_hint).await?;
        self.report_progress(&swarm);
        let stalled = self.run_workers(&job, &swarm, first_k, client).await;
        if swarm.sched().remaining() > 0 {
            return Err(self.fail(&job, Some(&swarm), stalled));
        }
        self.publish_file(job, &swarm, &name, resumed).await
    }

    /// Runs a worker for every source not already failed (the first reuses its bootstrap
    /// connection) until every worker has stopped, the last piece is verified (workers still
    /// waiting on replies are then cancelled), or nothing was verified for
    /// [`Downloader::stall_timeout`]; returns whether it stalled.
    pub(super) async fn run_workers(
        &self,
        job: &OpenDownload<'_>,
        swarm: &Arc<Swarm>,
        first_k: usize,
        client: PeerClient,
    ) -> bool {
        let live = &job.live;
        let mut workers = JoinSet::new();
        let mut client = Some(client);
        // Nothing left after bootstrap and re-check (a single-piece file, a finished resume):
        // no source needs to be contacted again.
        let needed = swarm.sched().remaining() > 0;
        for (k, s) in job.sources.iter().enumerate().filter(|_| needed) {
            if k != first_k && lock_live(live)[k].error.is_some() {
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
                    lock_live(live)[k].error = Some(e);
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
        stalled
    }

    /// Every piece is verified, so the size is proven: drops anything beyond it, syncs, and
    /// renames the partial file to `name` in the target directory (never replacing a file).
    pub(super) async fn publish_file(
        &self,
        job: OpenDownload<'_>,
        swarm: &Swarm,
        name: &str,
        resumed: u64,
    ) -> Result<DownloadReport, DownloadError> {
        let (f, size) = (job.file.clone(), swarm.verifier.layout().size);
        tokio::task::spawn_blocking(move || f.set_len(size).and_then(|()| f.sync_all()))
            .await
            .map_err(|e| job.write_err(std::io::Error::other(e)))?
            .map_err(|e| job.write_err(e))?;
        let path = publish(&job.temp, job.dir, name).map_err(|e| job.write_err(e))?;
        info!("downloaded {} to {}", job.id, path.display());
        let reports = source_reports(job.sources, &job.live);
        Ok(DownloadReport {
            content_id: job.id,
            path,
            size,
            seconds: job.started.elapsed().as_secs_f64(),
            bytes_fetched: reports.iter().map(|r| r.bytes).sum(),
            bytes_resumed: resumed,
            pieces_rejected: reports.iter().map(|r| r.pieces_rejected).sum(),
            sources: reports,
            already_had: false,
        })
    }

    /// Tells the progress callback, if any, where the download stands.
    pub(super) fn report_progress(&self, swarm: &Swarm) {
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

    /// Builds the failure, keeping the partial file only if it holds verified pieces; names
    /// every source and why it did not deliver.
    fn fail(&self, job: &OpenDownload<'_>, swarm: Option<&Swarm>, stalled: bool) -> DownloadError {
        let (id, temp) = (job.id, &job.temp);
        let verified = swarm
            .map(|s| s.done_bytes.load(Ordering::Relaxed))
            .unwrap_or(0);
        let kept = if verified > 0 {
            format!(
                " ({verified} verified bytes kept in {} for a later resume)",
                temp.display()
            )
        } else if job.earlier_run {
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
        let reasons = job
            .sources
            .iter()
            .zip(lock_live(&job.live).iter())
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
            count: job.sources.len(),
            kept,
            reasons,
        }
    }
}
