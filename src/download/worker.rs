//! One source's worker: fetches the pieces the scheduler gives it, each verified and written by a blocking task, and backs off a busy source.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::warn;

use super::error::{DownloadError, SourceFailure, queue_place, queue_position};
use super::report::Source;
use super::swarm::{SourceState, Swarm, lock_live};
use super::writeback::start_writeback;
use super::{BUSY_RETRY_MAX, Downloader};
use crate::content::{ContentId, PieceError};
use crate::peer::{PeerClient, PeerClientError};
use crate::protocol::{ErrorCode, ProtocolError, bitmap_has};

/// `NOT_FOUND` answers in a row for pieces a partial source claims in its `Have` after which
/// it is dropped; before each new request it is left alone [`UNSENT_RETRY`] times 2^(n-1).
const MAX_UNSENT: u32 = 3;
const UNSENT_RETRY: Duration = Duration::from_millis(500);

/// Verified pieces are verified and written by at most this many blocking tasks per source.
const MAX_PENDING_WRITES: usize = 4;

/// Why a piece handed to a blocking task was not written.
enum WriteFailure {
    /// It failed verification.
    Corrupt(PieceError),
    /// Writing it failed.
    Local(std::io::Error),
}

type WriteTask = JoinHandle<Result<(), WriteFailure>>;

impl Downloader {
    /// Fetches pieces from one source until the file is complete or the source fails.
    pub(super) async fn worker(
        &self,
        swarm: &Swarm,
        k: usize,
        source: &Source,
        client: Option<PeerClient>,
    ) -> Result<(), SourceFailure> {
        let mut client = match client {
            Some(c) => c,
            None => {
                let mut c = super::connect_source(
                    source,
                    self.tls.as_ref(),
                    self.relay.as_ref(),
                    self.udp.as_deref(),
                    self.timing.limits,
                )
                .await?;
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
        if let Some(l) = lock_live(&swarm.live).get_mut(k) {
            l.suite = Some(client.cipher_suite());
            l.reached = Some(super::reached(&client));
            l.relay = client.relay().map(str::to_string);
        }
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

    /// Keeps up to [`Downloader::window`] pieces requested from the source, hands each reply
    /// to a blocking task that verifies and writes it, and backs off a busy source or one that
    /// holds back pieces it claims.
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
                    if last_new_piece.elapsed() > self.timing.limits.read_timeout {
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
                                BusySpell { since: now, retry: self.timing.busy_retry }
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

    /// Settles a piece whose blocking task ended: a written one is complete (and offered to
    /// other peers), a corrupt one is refused from this source (which is dropped after
    /// [`Downloader::max_bad_pieces`]), one that could not be written fails the download.
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
                    crate::metrics::node().piece_verified(len);
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
                crate::metrics::node().pieces_rejected.inc();
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

/// Waits for the oldest pending write (forever if there is none).
async fn oldest(
    writes: &mut VecDeque<(u32, WriteTask)>,
) -> Result<Result<(), WriteFailure>, tokio::task::JoinError> {
    match writes.front_mut() {
        Some((_, h)) => h.await,
        None => std::future::pending().await,
    }
}
