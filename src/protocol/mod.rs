//! The wire protocol shared by the index and the peers: framing, messages, and a connection that speaks them.

mod connection;
mod frame;
pub mod fuzz;
mod handshake;
pub mod host;
pub mod listen;
mod messages;
mod payloads;
pub mod punch;
mod ranked;
pub mod relay;
mod search_reply;
mod serve;

pub use connection::{Connection, Limits, MemoryBudget, ServerSide};
pub use frame::{
    Frame, LENGTH_PREFIX_LEN, MAX_CONTROL_PAYLOAD, MAX_FRAME_LEN, PIECE_HEADER_LEN, SMALL_FRAME_LEN,
};
pub use handshake::{MAX_FEATURE_LEN, MAX_FEATURES, WelcomeExtra, agent};
pub use messages::{
    IndexReply, IndexRequest, MESSAGES, Message, MessageSet, PROTOCOL_VERSION, PeerReply,
    PeerRequest, UdpIndexReply, UdpIndexRequest, feature, tag, tag_name,
};
pub use payloads::*;
pub use punch::{PunchGo, PunchListen, PunchRequest};
pub use search_reply::{PeerHitRef, SearchResultsWriter};
pub use serve::{
    Admission, Connections, HANDSHAKE_TIMEOUT, ServeLimits, ServeStats, accept_loop, connect_tcp,
    error_frame, raise_open_file_limit,
};

/// Errors of the framing and message layer. Each closes only the connection it happened on.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A frame longer than the limit (checked before anything is allocated).
    #[error("frame of {received} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The limit.
        max: usize,
        /// The length announced.
        received: usize,
    },
    /// A frame of length zero.
    #[error("frame of length zero (no tag)")]
    EmptyFrame,
    /// A tag no message has.
    #[error("unknown message tag {tag:#04x}")]
    UnknownTag {
        /// The tag.
        tag: u8,
    },
    /// A payload that does not decode as its message.
    #[error("malformed {message} payload: {reason}")]
    Malformed {
        /// The message's name.
        message: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    TruncatedFrame {
        /// Bytes of the frame received.
        buffered: usize,
    },
    /// Nothing complete arrived in time.
    #[error("no complete message within {secs} s")]
    Timeout {
        /// The limit, in seconds.
        secs: u64,
    },
    /// A message other than the one (or the kind) expected.
    #[error("expected {expected}, received {received}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// The name of what came.
        received: &'static str,
    },
    /// The other side answered with an error.
    #[error("the remote side answered with an error: {0}")]
    Remote(ErrorReply),
    #[error(
        "no protocol version in common: we speak {ours_min}..={ours_max}, they {theirs_min}..={theirs_max}"
    )]
    /// No protocol version in common.
    Version {
        /// Our lowest.
        ours_min: u32,
        /// Our highest.
        ours_max: u32,
        /// Their lowest.
        theirs_min: u32,
        /// Their highest.
        theirs_max: u32,
    },
    /// The other side closed the connection.
    #[error("connection closed by the remote side")]
    Closed,
    /// No `Hello` within the handshake deadline.
    #[error("no Hello within {millis} ms")]
    Handshake {
        /// The deadline, in ms.
        millis: u64,
    },
    /// Closed by the server to make room for another connection.
    #[error("closed to make room for another connection (the server is at its connection limit)")]
    Evicted,
    /// The server's memory for large requests stayed in use too long.
    #[error(
        "no memory to receive a frame of {bytes} bytes within {secs} s: the server's memory for requests is in use"
    )]
    NoMemory {
        /// The frame's length.
        bytes: usize,
        /// How long it waited.
        secs: u64,
    },
    /// We refused the other side (it is not a member of our private group, say), told it
    /// why, and closed.
    #[error("refused: {0}")]
    Refused(String),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    /// A reply other than the one expected (a client's view: `expected` names the message,
    /// `received` the one that came).
    pub fn unexpected(expected: &'static str, received: &'static str) -> ProtocolError {
        ProtocolError::Unexpected { expected, received }
    }
}
