//! The bootstrap phase of a download: the first source to send piece hashes that add up to the content id sets the file's layout.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::warn;

use super::Downloader;
use super::error::SourceFailure;
use super::open::OpenDownload;
use super::report::Source;
use super::swarm::lock_live;
use crate::content::{ContentId, HashFetch, PieceError, PieceVerifier};
use crate::peer::{PeerClient, PeerClientError};
use crate::protocol::{ErrorCode, Info, Piece, ProtocolError};

/// What the first usable source told: its connection, the file's info and checked piece
/// hashes, and the last piece (verified) when it could send it.
pub(super) struct Bootstrap {
    pub(super) client: PeerClient,
    pub(super) info: Info,
    pub(super) verifier: Arc<PieceVerifier>,
    pub(super) last_piece: Option<Piece>,
}

/// Bootstrap asks the next source too when the ones asked so far have not passed within this
/// long, so a silent or slow first source does not hold up the download.
const BOOTSTRAP_STAGGER: Duration = Duration::from_secs(1);

impl Downloader {
    /// Bootstraps from the sources in order, asking the next one as well whenever those asked
    /// so far have neither passed nor failed within [`BOOTSTRAP_STAGGER`], or one fails; the
    /// first to pass wins and the others are cancelled (they are still used as sources).
    /// Gives up when none has received a block of piece hashes for `stall_timeout` (`Err(true)`)
    /// or all have failed (`Err(false)`). Failures are recorded in `live`.
    pub(super) async fn bootstrap_any(
        &self,
        job: &OpenDownload<'_>,
    ) -> Result<(usize, Bootstrap), bool> {
        let (sources, id, file, live) = (job.sources, job.id, &job.file, &*job.live);
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
                            crate::metrics::node().pieces_rejected.inc();
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
        let mut client = super::connect_source(
            s,
            self.tls.as_ref(),
            self.relay.as_ref(),
            self.udp.as_deref(),
            self.timing.limits,
        )
        .await?;
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
}
