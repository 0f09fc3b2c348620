//! What one served connection uploaded, per file: counted as pieces are sent, shown to the
//! node's "uploads now", and logged (one line at info) when a file's last piece is sent or
//! the connection ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use tracing::info;

use super::PeerServer;
use crate::content::{ContentId, Digest, PieceLayout};

/// Files one connection keeps upload counts of at most: past it they are logged and
/// forgotten (a downloader fetching thousands of files over one connection mostly completes
/// each, which logs it at once).
const MAX_UPLOADS_TRACKED: usize = 256;

/// Characters of a client's key fingerprint an upload's log line shows.
const UPLOAD_KEY_CHARS: usize = 12;

/// Pieces of one file sent on one connection: logged (at info) when the file's last piece
/// has been sent, or when the connection ends.
struct Upload {
    name: String,
    pieces: u64,
    piece_count: u64,
    bytes: u64,
    started: Instant,
}

/// One connection's uploads not logged yet; logs them when dropped (the connection is over).
pub(super) struct Uploads<'a> {
    server: &'a PeerServer,
    conn_id: u64,
    addr: SocketAddr,
    /// The key the client proved in the TLS handshake.
    key: Digest,
    files: HashMap<ContentId, Upload>,
}

impl<'a> Uploads<'a> {
    pub(super) fn new(server: &'a PeerServer, conn_id: u64, addr: SocketAddr, key: Digest) -> Self {
        Uploads {
            server,
            conn_id,
            addr,
            key,
            files: HashMap::new(),
        }
    }

    /// Counts a piece of `id` sent; logs the file's upload once its last piece is sent.
    pub(super) fn uploaded(&mut self, id: ContentId, bytes: u64) {
        if !self.files.contains_key(&id) {
            if self.files.len() >= MAX_UPLOADS_TRACKED {
                self.log_uploads();
            }
            let Some(f) = self.server.find(&id) else {
                return;
            };
            self.files.insert(
                id,
                Upload {
                    name: f.name,
                    pieces: 0,
                    piece_count: PieceLayout::new(f.size).piece_count(),
                    bytes: 0,
                    started: Instant::now(),
                },
            );
        }
        if let Some(u) = self.files.get_mut(&id) {
            u.pieces += 1;
            u.bytes += bytes;
            if let Some(now) = &self.server.config.uploads {
                match u.pieces >= u.piece_count {
                    true => now.done(self.conn_id, &id),
                    false => now.set(
                        self.conn_id,
                        id,
                        super::UploadNow {
                            to: self.addr.to_string(),
                            key: crate::identity::Fingerprint(self.key).to_string(),
                            name: u.name.clone(),
                            bytes: u.bytes,
                            pieces: u.pieces,
                            piece_count: u.piece_count,
                        },
                    ),
                }
            }
            if u.pieces >= u.piece_count
                && let Some(u) = self.files.remove(&id)
            {
                self.log_upload(&u);
            }
        }
    }

    /// Logs (and forgets) every upload not logged yet.
    pub(super) fn log_uploads(&mut self) {
        for (id, u) in std::mem::take(&mut self.files) {
            self.log_upload(&u);
            if let Some(now) = &self.server.config.uploads {
                now.done(self.conn_id, &id);
            }
        }
    }

    /// One line at info: to whom (address, short key fingerprint), what, how much, how long.
    fn log_upload(&self, u: &Upload) {
        let outcome = match u.pieces >= u.piece_count {
            true => crate::metrics::UploadOutcome::Complete,
            false => crate::metrics::UploadOutcome::Partial,
        };
        crate::metrics::node().uploads.get(outcome).inc();
        let key = crate::identity::Fingerprint(self.key).to_string();
        let short = key.get(..UPLOAD_KEY_CHARS).unwrap_or(&key);
        info!(
            "uploaded {:?} to {} (key {short}): {} bytes, {} of {} pieces, in {:.2}s",
            u.name,
            self.addr,
            u.bytes,
            u.pieces,
            u.piece_count,
            u.started.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Uploads<'_> {
    /// The connection is over: what was uploaded on it and not logged yet is.
    fn drop(&mut self) {
        self.log_uploads();
        if let Some(now) = &self.server.config.uploads {
            now.closed(self.conn_id);
        }
    }
}
