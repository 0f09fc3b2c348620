//! Every message of the index and peer protocols, defined once in a table that gives each its
//! fixed tag, its name and its payload encoding; the protocols' request and reply sets.
//!
//! Payloads are MessagePack maps keyed by field name ([`super::payloads`]), except `Piece`,
//! whose payload is a 4-byte big-endian piece index followed by the raw piece bytes. Tags never
//! change meaning and are never reused. Ranges (docs/PROTOCOL.md §5): 0x00 reserved; 0x01-0x0f
//! both protocols; 0x10-0x3f the index protocol; 0x40-0x7f the peer protocol (0x52-0x5f kept
//! for catalog and DHT messages); 0x80-0xff reserved for later layers (an encrypted transport).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::payloads::*;
use super::punch::{PunchGo, PunchListen, PunchRequest};
use super::relay::{Incoming, RelayAccept, RelayConnect, RelayVia, Relayed};
use super::{Frame, MAX_CONTROL_PAYLOAD, PIECE_HEADER_LEN, ProtocolError};

/// The protocol version this build speaks (both lowest and highest).
pub const PROTOCOL_VERSION: u32 = 1;

/// Optional features a client asks for in [`Hello::features`] and a server agrees to in
/// [`Welcome::features`]. A client sends a feature's messages only when the server agreed.
pub mod feature {
    /// `GetHave`/`Have`: which pieces a peer has of a file it is still downloading.
    pub const HAVE: &str = "have";
    /// `CatalogQuery`/`CatalogResults`: asking a peer directly which of its files match.
    pub const CATALOG: &str = "catalog";
    /// Every feature this build knows.
    pub const ALL: [&str; 2] = [HAVE, CATALOG];
}

/// The tokens of `$b`, ignoring `$a`: lets a repetition over an optional payload type bind a
/// name written in the calling macro (so the binding and its use share hygiene).
macro_rules! pick {
    ($a:ty, $b:ident) => {
        $b
    };
}

/// How a payload is written and read: `map` (MessagePack map), `results` and `listing` (a map
/// reserved at its likely size), `unit` (an empty map), `raw` (the piece layout).
macro_rules! codec {
    (@enc map, $name:expr, $m:expr) => {
        encode_map($name, $m, 512)
    };
    (@enc results, $name:expr, $m:expr) => {
        // About 200 bytes per file with one peer, reserved at once.
        encode_map($name, $m, 64 + 256 * $m.files.len())
    };
    (@enc listing, $name:expr, $m:expr) => {
        // About 100 bytes per entry beside its name, reserved at once.
        encode_map($name, $m, 128 + 128 * ($m.dirs.len() + $m.files.len()))
    };
    (@enc unit, $name:expr) => {
        encode_map($name, &Empty {}, 8)
    };
    (@enc raw, $name:expr, $m:expr) => {
        Ok(encode_piece($m))
    };
    (@dec map, $var:path, $name:expr, $frame:ident) => {
        decode_map($name, &$frame.payload).map($var)
    };
    (@dec results, $var:path, $name:expr, $frame:ident) => {
        decode_map($name, &$frame.payload).map($var)
    };
    (@dec listing, $var:path, $name:expr, $frame:ident) => {
        decode_map($name, &$frame.payload).map($var)
    };
    (@dec unit, $var:path, $name:expr, $frame:ident) => {
        decode_map::<Empty>($name, &$frame.payload).map(|_| $var)
    };
    (@dec raw, $var:path, $name:expr, $frame:ident) => {
        decode_piece($name, &$frame).map($var)
    };
}

/// The message table: for each message its tag constant, number, variant, payload type and
/// codec. Generates [`tag`], [`Message`] with `tag`/`name`/`encode_payload`/`decode`,
/// [`tag_name`] and [`MESSAGES`] (which the wire tests walk).
macro_rules! messages {
    ($( $(#[$doc:meta])* $konst:ident = $tag:literal, $var:ident $( ( $ty:ty ) )?, $codec:ident; )*) => {
        /// Message tags, fixed numbers (see the module documentation for the ranges).
        pub mod tag {
            $(
                #[doc = concat!("The tag of `", stringify!($var), "`.")]
                pub const $konst: u8 = $tag;
            )*
        }

        /// Any message of either protocol.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Message {
            $( $(#[$doc])* $var $( ($ty) )?, )*
        }

        /// Every message as (tag, name), in tag order.
        pub const MESSAGES: &[(u8, &str)] = &[ $( ($tag, stringify!($var)), )* ];

        /// The name of the message a tag stands for (`"unknown"` for a tag no message has).
        pub fn tag_name(t: u8) -> &'static str {
            match t {
                $( $tag => stringify!($var), )*
                _ => "unknown",
            }
        }

        impl Message {
            /// The message's tag.
            pub fn tag(&self) -> u8 {
                match self {
                    $( Message::$var { .. } => $tag, )*
                }
            }

            /// Encodes the payload (without length prefix and tag).
            pub fn encode_payload(&self) -> Result<Bytes, ProtocolError> {
                match self {
                    $(
                        Message::$var $( (pick!($ty, m)) )? =>
                            codec!(@enc $codec, stringify!($var) $(, pick!($ty, m))?),
                    )*
                }
            }

            /// Decodes a frame into a message; unknown tags and malformed payloads are errors.
            pub fn decode(frame: Frame) -> Result<Message, ProtocolError> {
                match frame.tag {
                    $( $tag => codec!(@dec $codec, Message::$var, stringify!($var), frame), )*
                    tag => Err(ProtocolError::UnknownTag { tag }),
                }
            }
        }
    };
}

messages! {
    /// A client opens every connection with it (both protocols).
    HELLO = 0x01, Hello(Hello), map;
    /// The server's answer to `Hello`.
    WELCOME = 0x02, Welcome(Welcome), map;
    /// An error answer to any request.
    ERROR = 0x03, Error(ErrorReply), map;
    /// Index: register a peer.
    REGISTER = 0x10, Register(Register), map;
    /// Index: the answer to `Register`.
    REGISTERED = 0x11, Registered(Registered), map;
    /// Index: a batch of file-list changes.
    UPDATE_FILES = 0x12, UpdateFiles(UpdateFiles), map;
    /// Index: the answer to `UpdateFiles`, `Heartbeat` and `Unregister`.
    ACK = 0x13, Ack(Ack), map;
    /// Index: renews the peer's lease.
    HEARTBEAT = 0x14, Heartbeat, unit;
    /// Index: the peer leaves.
    UNREGISTER = 0x15, Unregister, unit;
    /// Index: join a private group with an invite.
    JOIN = 0x16, Join(Join), map;
    /// Index: the answer to `Join`.
    JOINED = 0x17, Joined(Joined), map;
    /// Index: open this connection as a registered peer's control channel (§7.10).
    LISTEN = 0x18, Listen, unit;
    /// Index: pushed on a control channel: someone wants to reach the peer.
    INCOMING = 0x19, Incoming(Incoming), map;
    /// Index: a connection to a peer through the index's relay.
    RELAY_CONNECT = 0x1a, RelayConnect(RelayConnect), map;
    /// Index, or a volunteer's peer port: one side of a relayed connection.
    RELAY_ACCEPT = 0x1b, RelayAccept(RelayAccept), map;
    /// Index or volunteer: the answer to `RelayConnect` and `RelayAccept`: the splice starts.
    RELAYED = 0x1c, Relayed(Relayed), map;
    /// Index (UDP transport): coordinate a hole punch to a peer (§7.11).
    PUNCH_REQUEST = 0x1d, PunchRequest(PunchRequest), map;
    /// Index (UDP transport): where to send packets now, to punch (§7.11).
    PUNCH_GO = 0x1e, PunchGo(PunchGo), map;
    /// Index (UDP transport): a peer listens for punches; the answer says its address (§7.11).
    PUNCH_LISTEN = 0x1f, PunchListen(PunchListen), map;
    /// Index: find files.
    SEARCH = 0x20, Search(Search), map;
    /// Index: the answer to `Search`.
    SEARCH_RESULTS = 0x21, SearchResults(SearchResults), results;
    /// Index: list the registered peers.
    LIST_PEERS = 0x22, ListPeers, unit;
    /// Index: the answer to `ListPeers`.
    PEER_LIST = 0x23, PeerList(PeerList), map;
    /// Index: list what a peer shares under a directory.
    BROWSE = 0x24, Browse(Browse), map;
    /// Index: the answer to `Browse`.
    LISTING = 0x25, Listing(Listing), listing;
    /// Index: the answer to `RelayConnect` when a volunteer relays: where to go.
    RELAY_VIA = 0x26, RelayVia(RelayVia), map;
    /// Peer: about a file.
    GET_INFO = 0x40, GetInfo(GetInfo), map;
    /// Peer: the answer to `GetInfo`.
    INFO = 0x41, Info(Info), map;
    /// Peer: a run of piece hashes.
    GET_HASHES = 0x42, GetHashes(GetHashes), map;
    /// Peer: the answer to `GetHashes`.
    HASHES = 0x43, Hashes(Hashes), map;
    /// Peer: one piece.
    GET_PIECE = 0x44, GetPiece(GetPiece), map;
    /// Peer: the answer to `GetPiece` (raw payload).
    PIECE = 0x45, Piece(Piece), raw;
    /// Peer: which pieces it has (feature `have`).
    GET_HAVE = 0x46, GetHave(GetHave), map;
    /// Peer: the answer to `GetHave`.
    HAVE = 0x47, Have(Have), map;
    /// Peer: which of its files match (feature `catalog`).
    CATALOG_QUERY = 0x50, CatalogQuery(CatalogQuery), map;
    /// Peer: the answer to `CatalogQuery`.
    CATALOG_RESULTS = 0x51, CatalogResults(CatalogResults), map;
}

impl Message {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        tag_name(self.tag())
    }
}

/// One protocol's requests or replies: a subset of [`Message`] that a server or client decodes
/// into, so a message of the other protocol (or the other direction) is an error of the
/// decoder, not a branch of every handler.
macro_rules! message_set {
    ($(#[$doc:meta])* $set:ident, $what:literal: $( $var:ident $( ($ty:ty) )? ),* $(,)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $set {
            $(
                #[doc = concat!("[`Message::", stringify!($var), "`]")]
                $var $( ($ty) )?,
            )*
        }

        impl MessageSet for $set {
            const WHAT: &'static str = $what;
        }

        impl $set {
            /// What the set is, in errors: "expected an index request, received ...".
            pub const WHAT: &'static str = $what;

            /// Decodes a frame of this set; a message outside it is [`ProtocolError::Unexpected`].
            pub fn decode(frame: Frame) -> Result<$set, ProtocolError> {
                $set::try_from(Message::decode(frame)?)
            }

            /// The message's name, for errors and logs.
            pub fn name(&self) -> &'static str {
                match self {
                    $( $set::$var { .. } => stringify!($var), )*
                }
            }
        }

        impl TryFrom<Message> for $set {
            type Error = ProtocolError;

            fn try_from(m: Message) -> Result<$set, ProtocolError> {
                match m {
                    $( Message::$var $( (pick!($ty, m)) )? => Ok($set::$var $( (pick!($ty, m)) )?), )*
                    #[allow(unreachable_patterns)]
                    other => Err(ProtocolError::Unexpected {
                        expected: $what,
                        received: other.name(),
                    }),
                }
            }
        }

        impl From<$set> for Message {
            fn from(m: $set) -> Message {
                match m {
                    $( $set::$var $( (pick!($ty, m)) )? => Message::$var $( (pick!($ty, m)) )?, )*
                }
            }
        }
    };
}

/// A protocol's requests or replies ([`IndexRequest`], [`PeerRequest`], ...).
pub trait MessageSet: TryFrom<Message, Error = ProtocolError> {
    /// What the set is, in errors: "an index request".
    const WHAT: &'static str;
}

message_set! {
    /// What a client may send an index.
    IndexRequest, "an index request":
    Hello(Hello), Register(Register), UpdateFiles(UpdateFiles), Heartbeat, Unregister,
    Search(Search), ListPeers, Join(Join), Browse(Browse),
    Listen, RelayConnect(RelayConnect), RelayAccept(RelayAccept),
}

message_set! {
    /// What an index sends back.
    IndexReply, "an index reply":
    Welcome(Welcome), Error(ErrorReply), Registered(Registered), Ack(Ack),
    SearchResults(SearchResults), PeerList(PeerList), Joined(Joined), Listing(Listing),
    Incoming(Incoming), Relayed(Relayed), RelayVia(RelayVia),
}

message_set! {
    /// What a client may send the index over the UDP transport (§7.11).
    UdpIndexRequest, "a request to the index over UDP":
    Hello(Hello), PunchRequest(PunchRequest), PunchListen(PunchListen),
}

message_set! {
    /// What the index sends over the UDP transport.
    UdpIndexReply, "a reply of the index over UDP":
    Welcome(Welcome), Error(ErrorReply), PunchGo(PunchGo), PunchListen(PunchListen),
}

message_set! {
    /// What a client may send a peer.
    PeerRequest, "a peer request":
    Hello(Hello), GetInfo(GetInfo), GetHashes(GetHashes), GetPiece(GetPiece), GetHave(GetHave),
    CatalogQuery(CatalogQuery), RelayAccept(RelayAccept),
}

message_set! {
    /// What a peer sends back.
    PeerReply, "a peer reply":
    Welcome(Welcome), Error(ErrorReply), Info(Info), Hashes(Hashes), Piece(Piece), Have(Have),
    CatalogResults(CatalogResults), Relayed(Relayed),
}

fn encode_map<T: Serialize>(
    name: &'static str,
    v: &T,
    room: usize,
) -> Result<Bytes, ProtocolError> {
    let mut bytes = Vec::with_capacity(room.min(MAX_CONTROL_PAYLOAD));
    rmp_serde::encode::write_named(&mut bytes, v).map_err(|e| ProtocolError::Malformed {
        message: name,
        reason: e.to_string(),
    })?;
    if bytes.len() > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::FrameTooLarge {
            max: MAX_CONTROL_PAYLOAD,
            received: bytes.len(),
        });
    }
    Ok(Bytes::from(bytes))
}

fn decode_map<T: DeserializeOwned>(name: &'static str, payload: &[u8]) -> Result<T, ProtocolError> {
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::FrameTooLarge {
            max: MAX_CONTROL_PAYLOAD,
            received: payload.len(),
        });
    }
    rmp_serde::from_slice(payload).map_err(|e| ProtocolError::Malformed {
        message: name,
        reason: e.to_string(),
    })
}

fn encode_piece(p: &Piece) -> Bytes {
    let mut b = BytesMut::with_capacity(PIECE_HEADER_LEN + p.data.len());
    b.put_u32(p.index);
    b.extend_from_slice(&p.data);
    b.freeze()
}

fn decode_piece(name: &'static str, frame: &Frame) -> Result<Piece, ProtocolError> {
    let p = &frame.payload[..];
    if p.len() < PIECE_HEADER_LEN {
        return Err(ProtocolError::Malformed {
            message: name,
            reason: format!("{} bytes, shorter than the piece header", p.len()),
        });
    }
    Ok(Piece {
        index: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
        data: frame.payload.slice(PIECE_HEADER_LEN..),
    })
}
