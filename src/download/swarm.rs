//! `Swarm`: the state all sources of one download share while their workers run.
//!
//! # Locks
//!
//! Each lock below guards one thing and is taken for a few statements. All are `std::sync`
//! locks, none is held across an `.await`, and none is held while another is taken, so there
//! is no order to keep; a new code path that needs two at once must take them in the order
//! listed and say so here.
//!
//! 1. [`Swarm::sched`] (`Mutex<PieceScheduler>`): which pieces are verified, queued, and being
//!    fetched by which source. A worker claims, completes, releases or rejects a piece under
//!    it; the download's supervising loop reads how many remain.
//! 2. [`Swarm::live`] (`Mutex<Vec<SourceLive>>`, shared with the bootstrap and resume phases
//!    before the swarm exists): what each source did and is doing, for progress, the report
//!    and the error of a download that fails. Outlives the workers, so a cancelled worker's
//!    record stays.
//! 3. [`Swarm::last_progress`] (`Mutex<Instant>`): when a piece was last verified, read by the
//!    stall check. (Bootstrap keeps its own `Mutex<Instant>` for the same purpose, when a
//!    block of piece hashes last arrived.)
//!
//! Counters ([`Swarm::done_bytes`], [`Swarm::active`]) are relaxed atomics read for display
//! only. Waking is by `Notify` ([`Swarm::changed`], [`Swarm::finished`]), never by holding a lock.
//! Progress callbacks run with no lock held.
//!
//! The partial file itself takes no lock: a piece is written with one positional write
//! (`pwrite`) by the blocking task that verified it, at the piece's own offset, so writes of
//! different pieces never overlap; two endgame copies of one piece that both pass
//! verification write the same bytes. A piece counts as verified (scheduler, `Have`) only
//! after its write returned. Across processes the file is held with an exclusive `flock`
//! taken when it is opened and released when the last handle to it closes. The
//! [`PartialFile`] other peers read is told of a piece with [`PartialFile::mark`] (an atomic
//! flag) after its write and before the scheduler, so it never offers a piece not yet on disk
//! (its own notes are in `peer/partial.rs`).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::error::queue_place;
use super::report::{Source, SourceReport};
use super::scheduler::PieceScheduler;
use crate::content::{ContentId, PieceVerifier};
use crate::peer::PartialFile;

/// What one source is doing, for progress and for the error of a download that stalls.
#[derive(Debug, Clone, Copy, Default)]
pub(super) enum SourceState {
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
pub(super) struct SourceLive {
    pub(super) bytes: u64,
    pub(super) pieces: u64,
    pub(super) rejected: u64,
    pub(super) error: Option<String>,
    pub(super) state: SourceState,
    /// The TLS cipher suite of its connection, once connected.
    pub(super) suite: Option<&'static str>,
    /// How it was reached, once connected (`"direct"`, `"punched"`, `"relayed"`).
    pub(super) reached: Option<&'static str>,
    /// The relay's `IP:PORT`, when relayed.
    pub(super) relay: Option<String>,
}

impl SourceLive {
    /// Why this source has not delivered, as of `now`.
    pub(super) fn why(&self, now: Instant) -> String {
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

/// What each source did and is doing, by its place in the source list.
pub(super) type LiveSources = Arc<Mutex<Vec<SourceLive>>>;

/// Locks the sources' records; a worker that panicked holding it left them usable.
pub(super) fn lock_live(
    live: &Mutex<Vec<SourceLive>>,
) -> std::sync::MutexGuard<'_, Vec<SourceLive>> {
    live.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state all sources of one download share.
pub(super) struct Swarm {
    pub(super) id: ContentId,
    pub(super) verifier: Arc<PieceVerifier>,
    pub(super) file: Arc<File>,
    pub(super) temp: PathBuf,
    /// Which piece each source fetches next; see the lock notes above.
    pub(super) sched: Mutex<PieceScheduler>,
    /// Woken whenever pieces are completed or given back, so idle workers look again.
    pub(super) changed: Notify,
    /// Woken (with a stored permit) when the last piece is verified.
    pub(super) finished: Notify,
    /// Verified bytes, resumed ones included.
    pub(super) done_bytes: AtomicU64,
    /// Workers with a connection that passed its checks.
    pub(super) active: AtomicUsize,
    /// When a piece was last verified.
    pub(super) last_progress: Mutex<Instant>,
    /// What each source did and is doing, by its place in the source list.
    pub(super) live: LiveSources,
    /// The same download as other peers see it, when it is shared while in progress.
    pub(super) shared: Option<Arc<PartialFile>>,
}

impl Swarm {
    /// Locks the scheduler (never across an `.await`).
    pub(super) fn sched(&self) -> std::sync::MutexGuard<'_, PieceScheduler> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many bytes piece `i` holds.
    pub(super) fn piece_len(&self, i: u32) -> u64 {
        self.verifier.layout().piece_len(u64::from(i))
    }

    /// Records what source `k` is doing now.
    pub(super) fn set_state(&self, k: usize, state: SourceState) {
        if let Some(s) = lock_live(&self.live).get_mut(k) {
            s.state = state;
        }
    }

    /// When a piece was last verified.
    pub(super) fn last_progress(&self) -> Instant {
        *self.last_progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The per-source reports of a download, from what its workers recorded.
pub(super) fn source_reports(
    sources: &[Source],
    live: &Mutex<Vec<SourceLive>>,
) -> Vec<SourceReport> {
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
            cipher_suite: l.suite,
            reached: l.reached,
            relay: l.relay.clone(),
        })
        .collect()
}
