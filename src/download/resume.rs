//! The resume phase of a download: what an earlier run left in the partial file is re-checked piece by piece, and the swarm is set up around what is verified.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rayon::prelude::*;
use tokio::sync::Notify;
use tracing::info;

use super::Downloader;
use super::bootstrap::Bootstrap;
use super::error::DownloadError;
use super::names::sanitize_file_name;
use super::open::OpenDownload;
use super::scheduler::PieceScheduler;
use super::swarm::{Swarm, lock_live};
use crate::content::{ContentId, PieceVerifier};
use crate::peer::{PartialFile, Partials, PeerClient};

/// A download ready for its workers: the swarm, the first source's connection to reuse, and
/// the name it will be published under.
pub(super) struct Resumed {
    pub(super) swarm: Arc<Swarm>,
    pub(super) client: PeerClient,
    /// The sanitized file name.
    pub(super) name: String,
    /// Bytes found verified in the partial file.
    pub(super) resumed: u64,
    /// Keeps the download listed among the partial files this peer serves until it ends.
    pub(super) unpublish: Unpublish,
}

impl Downloader {
    /// Re-checks the partial file against the piece hashes, writes the last piece the first
    /// source sent during bootstrap, lists the download among the partial files this peer
    /// serves (if any), and builds the swarm.
    pub(super) async fn resume(
        &self,
        job: &OpenDownload<'_>,
        first_k: usize,
        first: Bootstrap,
        name_hint: Option<&str>,
    ) -> Result<Resumed, DownloadError> {
        let Bootstrap {
            client,
            info,
            verifier,
            last_piece,
        } = first;
        let (id, file) = (job.id, &job.file);
        let (mut done, resumed) = recheck(file.clone(), verifier.clone())
            .await
            .map_err(|e| job.write_err(e))?;
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
                .map_err(|e| job.write_err(std::io::Error::other(e)))?
                .map_err(|e| job.write_err(e))?;
            done[p.index as usize] = true;
            first_bytes = p.data.len() as u64;
            crate::metrics::node().piece_verified(first_bytes);
            let mut l = lock_live(&job.live);
            l[first_k].bytes += first_bytes;
            l[first_k].pieces += 1;
        }
        if resumed > 0 {
            info!(
                "resuming {id}: {resumed} bytes already verified in {}",
                job.temp.display()
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
        let unpublish = Unpublish(self.partials.clone(), id);
        let swarm = Arc::new(Swarm {
            shared,
            id,
            verifier: verifier.clone(),
            file: file.clone(),
            temp: job.temp.clone(),
            sched: Mutex::new(PieceScheduler::new(done)),
            changed: Notify::new(),
            finished: Notify::new(),
            done_bytes: AtomicU64::new(resumed + first_bytes),
            active: AtomicUsize::new(0),
            last_progress: Mutex::new(Instant::now()),
            live: job.live.clone(),
        });
        Ok(Resumed {
            swarm,
            client,
            name,
            resumed,
            unpublish,
        })
    }
}

/// Takes a download out of the partial-file registry when it ends, however it ends.
pub(super) struct Unpublish(Option<Partials>, ContentId);

impl Drop for Unpublish {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            p.remove(&self.1);
        }
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
