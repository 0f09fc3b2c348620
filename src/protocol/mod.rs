//! The wire protocol shared by the index and the peers: framing, messages, and a connection that speaks them.

mod connection;
mod frame;
pub mod fuzz;
pub mod host;
mod messages;
mod ranked;
mod search_reply;
mod serve;

pub use connection::{Connection, Limits, MemoryBudget, ServerSide};
pub use frame::{
    Frame, LENGTH_PREFIX_LEN, MAX_CONTROL_PAYLOAD, MAX_FRAME_LEN, PIECE_HEADER_LEN, SMALL_FRAME_LEN,
};
pub use messages::*;
pub use search_reply::{PeerHitRef, SearchResultsWriter};
pub use serve::{
    Admission, Connections, HANDSHAKE_TIMEOUT, ServeLimits, ServeStats, accept_loop, connect_tcp,
    raise_open_file_limit,
};

/// Errors of the framing and message layer. Each closes only the connection it happened on.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame of {received} bytes exceeds the limit of {max}")]
    FrameTooLarge { max: usize, received: usize },
    #[error("frame of length zero (no tag)")]
    EmptyFrame,
    #[error("unknown message tag {tag:#04x}")]
    UnknownTag { tag: u8 },
    #[error("malformed {message} payload: {reason}")]
    Malformed {
        message: &'static str,
        reason: String,
    },
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    TruncatedFrame { buffered: usize },
    #[error("no complete message within {secs} s")]
    Timeout { secs: u64 },
    #[error("expected {expected}, received {received}")]
    Unexpected {
        expected: &'static str,
        received: &'static str,
    },
    #[error("the remote side answered with an error: {0}")]
    Remote(ErrorReply),
    #[error(
        "no protocol version in common: we speak {ours_min}..={ours_max}, they {theirs_min}..={theirs_max}"
    )]
    Version {
        ours_min: u32,
        ours_max: u32,
        theirs_min: u32,
        theirs_max: u32,
    },
    #[error("connection closed by the remote side")]
    Closed,
    #[error("no Hello within {millis} ms")]
    Handshake { millis: u64 },
    #[error("closed to make room for another connection (the server is at its connection limit)")]
    Evicted,
    #[error(
        "no memory to receive a frame of {bytes} bytes within {secs} s: the server's memory for requests is in use"
    )]
    NoMemory { bytes: usize, secs: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
