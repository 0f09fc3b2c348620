//! Why a download failed ([`DownloadError`]) and why one of its sources stopped being used.

use std::path::PathBuf;

use crate::content::{ContentId, PieceError};
use crate::peer::PeerClientError;
use crate::protocol::ProtocolError;

/// Why a download did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No source was given.
    #[error("no peer has {0}")]
    NoSources(ContentId),
    /// The target directory or the partial file in it could not be made or opened.
    #[error("target directory {path}: {source}")]
    Target {
        /// The target directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process holds the lock on the partial file.
    #[error("{path} is being downloaded by another process")]
    Locked {
        /// The partial file.
        path: PathBuf,
    },
    /// Writing, syncing or publishing the file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The partial file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// No piece was verified for the stall limit ([`Downloader::stall_timeout`](super::Downloader::stall_timeout)).
    #[error("no progress on {id} for {secs} s{kept}: {reasons}")]
    Stalled {
        /// The file.
        id: ContentId,
        /// The stall limit, in seconds.
        secs: u64,
        /// Says where the verified part was kept for a later resume, if anywhere.
        kept: String,
        /// Every source and why it did not deliver.
        reasons: String,
    },
    /// Every source failed before the file was complete.
    #[error("could not download {id} from any of {count} sources{kept}: {reasons}")]
    AllSourcesFailed {
        /// The file.
        id: ContentId,
        /// Sources tried.
        count: usize,
        /// Says where the verified part was kept for a later resume, if anywhere.
        kept: String,
        /// Every source and why it did not deliver.
        reasons: String,
    },
}

/// Why one source stopped being used.
#[derive(Debug, thiserror::Error)]
pub(super) enum SourceFailure {
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

/// The place in a `BUSY` answer's message ("… you are number P in the queue"), for display
/// only: the message is text for humans, not part of the protocol.
pub(super) fn queue_position(message: &str) -> Option<u32> {
    let rest = &message[message.find("number ")? + "number ".len()..];
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// A queue place for messages.
pub(super) fn queue_place(position: Option<u32>) -> String {
    match position {
        Some(p) => format!("queue position {p}"),
        None => "queue position unknown".to_string(),
    }
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
