//! `SourceTiming`: how long to wait on a source and how soon to ask a busy one again, shared by the full [`Downloader`](super::Downloader) and the small-file [`SourceLinks`](super::SourceLinks).

use std::time::Duration;

use crate::protocol::Limits;

/// Default time a source may take to send its next message before it counts as stalled.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Default time sending one message to a source may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default first pause of the full downloader before it asks a busy source again (it doubles
/// with each `BUSY` in a row, up to [`BUSY_RETRY_MAX`](super::BUSY_RETRY_MAX)).
pub const BUSY_RETRY: Duration = Duration::from_millis(500);
/// Default pause of a small-file link before it asks a busy source again: requests it gets
/// back are meanwhile taken by another connection to the same source that holds a slot.
pub const LINK_BUSY_RETRY: Duration = Duration::from_secs(1);

/// When to give up waiting on a source and when to ask a busy one again.
#[derive(Debug, Clone, Copy)]
pub struct SourceTiming {
    /// Connection time limits; the read limit is how long a source may stall. Default:
    /// [`READ_TIMEOUT`] to receive a message, [`WRITE_TIMEOUT`] to send one.
    pub limits: Limits,
    /// Pause before asking a busy source again. Default: [`BUSY_RETRY`] for the
    /// [`Downloader`](super::Downloader), [`LINK_BUSY_RETRY`] for a
    /// [`LinkConfig`](super::LinkConfig).
    pub busy_retry: Duration,
}

impl Default for SourceTiming {
    /// The full downloader's: [`READ_TIMEOUT`], [`WRITE_TIMEOUT`], [`BUSY_RETRY`].
    fn default() -> Self {
        SourceTiming {
            limits: Limits {
                read_timeout: READ_TIMEOUT,
                write_timeout: WRITE_TIMEOUT,
            },
            busy_retry: BUSY_RETRY,
        }
    }
}
