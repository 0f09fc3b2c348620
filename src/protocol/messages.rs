//! Every message of the index and peer protocols, with its fixed tag and its payload encoding.
//!
//! Payloads are MessagePack maps keyed by field name, except `Piece`, whose payload is a
//! 4-byte big-endian piece index followed by the raw piece bytes. Tags never change meaning.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Frame, MAX_CONTROL_PAYLOAD, PIECE_HEADER_LEN, ProtocolError};
use crate::content::{ContentId, Digest};

/// The protocol version this build speaks (both lowest and highest).
pub const PROTOCOL_VERSION: u32 = 1;

/// Message tags. Fixed numbers: a new message takes a new number, an old one is never reused.
pub mod tag {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const ERROR: u8 = 0x03;
    pub const REGISTER: u8 = 0x10;
    pub const REGISTERED: u8 = 0x11;
    pub const UPDATE_FILES: u8 = 0x12;
    pub const ACK: u8 = 0x13;
    pub const HEARTBEAT: u8 = 0x14;
    pub const UNREGISTER: u8 = 0x15;
    pub const SEARCH: u8 = 0x20;
    pub const SEARCH_RESULTS: u8 = 0x21;
    pub const LIST_PEERS: u8 = 0x22;
    pub const PEER_LIST: u8 = 0x23;
    pub const GET_INFO: u8 = 0x40;
    pub const INFO: u8 = 0x41;
    pub const GET_HASHES: u8 = 0x42;
    pub const HASHES: u8 = 0x43;
    pub const GET_PIECE: u8 = 0x44;
    pub const PIECE: u8 = 0x45;
    pub const GET_HAVE: u8 = 0x46;
    pub const HAVE: u8 = 0x47;
    pub const CATALOG_QUERY: u8 = 0x50;
    pub const CATALOG_RESULTS: u8 = 0x51;
}

/// Most piece hashes in one `Hashes` reply (512 KiB of hashes).
pub const MAX_HASHES_PER_REPLY: u32 = 16 * 1024;
/// Longest search query, in bytes.
pub const MAX_QUERY_LEN: usize = 1024;
/// Most results a search may ask for.
pub const MAX_SEARCH_LIMIT: u32 = 1000;
/// Longest relative path of a shared file, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// Error codes carried by [`ErrorReply`].
pub mod code {
    pub const BAD_REQUEST: u16 = 1;
    pub const NOT_FOUND: u16 = 2;
    pub const UNAUTHORIZED: u16 = 3;
    pub const UNSUPPORTED_VERSION: u16 = 4;
    pub const BUSY: u16 = 5;
    pub const INTERNAL: u16 = 6;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version_min: u32,
    pub version_max: u32,
    pub agent: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    pub agent: String,
    /// Fresh random bytes a peer signs to register (index only; zeros from a peer).
    pub nonce: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct ErrorReply {
    pub code: u16,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// Ed25519 public key of the peer.
    pub public_key: Digest,
    /// Ed25519 signature of `REGISTER_CONTEXT || nonce`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// Host other peers reach this peer at; empty or unspecified: the address the index sees.
    pub host: String,
    pub port: u16,
    /// Digest of the peer's whole file list ([`crate::peer::Catalog::digest`]).
    pub catalog_digest: Digest,
    pub file_count: u64,
    /// A short-lived peer (a downloader sharing what it has so far): the index forgets it
    /// when it unregisters or long after its lease ran out. Absent means false.
    #[serde(default)]
    pub ephemeral: bool,
}

/// What a peer signs to register: this context string, then the index's nonce.
pub const REGISTER_CONTEXT: &[u8] = b"peershare register v1\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub peer_id: u64,
    /// The index already holds exactly this file list: no need to send it.
    pub in_sync: bool,
    /// Seconds a registration stays live without a heartbeat.
    pub lease_secs: u32,
    /// The host the index recorded for the peer.
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the shared directory, `/`-separated; unique per peer.
    pub path: String,
    pub name: String,
    pub size: u64,
    pub content_id: ContentId,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// For a file still downloading: which pieces the peer has verified (see [`Have`]).
    /// Absent for a complete file.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub have: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFiles {
    /// Remove every file of the peer before applying this batch.
    pub reset: bool,
    pub upsert: Vec<FileEntry>,
    pub remove: Vec<String>,
    /// Catalog digest once this batch is applied; `None` while more batches follow.
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Files the index now holds for the peer.
    pub files: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Search {
    pub query: String,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHit {
    pub peer_id: u64,
    pub host: String,
    pub port: u16,
    /// When the index first received the file from this peer, ms since the Unix epoch.
    pub shared_at: i64,
    /// When the index last heard from this peer, ms since the Unix epoch.
    pub last_seen: i64,
    /// Set when the peer is still downloading the file: its verified pieces (see [`Have`]).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub have: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHit {
    pub name: String,
    pub size: u64,
    pub content_id: ContentId,
    pub peers: Vec<PeerHit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResults {
    pub files: Vec<FileHit>,
    /// More files matched than were returned.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub peer_id: u64,
    pub host: String,
    pub port: u16,
    pub files: u64,
    pub last_seen: i64,
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    pub peers: Vec<PeerRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetInfo {
    pub content_id: ContentId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub content_id: ContentId,
    pub size: u64,
    pub piece_size: u32,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetHashes {
    pub content_id: ContentId,
    pub start: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    pub start: u32,
    #[serde(with = "serde_bytes")]
    pub hashes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPiece {
    pub content_id: ContentId,
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetHave {
    pub content_id: ContentId,
}

/// Which pieces a peer can send: bit `i % 8` (most significant first) of byte `i / 8` is
/// set when piece `i` is verified. A complete file has every bit of its pieces set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Have {
    pub content_id: ContentId,
    pub pieces: u32,
    #[serde(with = "serde_bytes")]
    pub bitmap: Vec<u8>,
}

/// Asks a peer which of its shared files match `query` (the index's matching rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogQuery {
    pub query: String,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub name: String,
    pub size: u64,
    pub content_id: ContentId,
}

/// One entry per distinct matching file the peer shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogResults {
    pub files: Vec<CatalogEntry>,
    pub truncated: bool,
}

/// Whether bit `i` of a [`Have`] bitmap is set.
pub fn bitmap_has(bitmap: &[u8], i: u32) -> bool {
    bitmap
        .get((i / 8) as usize)
        .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

/// A [`Have`] bitmap from a per-piece flag list.
pub fn bitmap_from(flags: impl IntoIterator<Item = bool>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in flags.into_iter().enumerate() {
        if i % 8 == 0 {
            out.push(0);
        }
        if f && let Some(last) = out.last_mut() {
            *last |= 0x80 >> (i % 8);
        }
    }
    out
}

/// A piece's bytes. Encoded raw: index (u32 BE) then data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub index: u32,
    pub data: Bytes,
}

/// Any message of either protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Error(ErrorReply),
    Register(Register),
    Registered(Registered),
    UpdateFiles(UpdateFiles),
    Ack(Ack),
    Heartbeat,
    Unregister,
    Search(Search),
    SearchResults(SearchResults),
    ListPeers,
    PeerList(PeerList),
    GetInfo(GetInfo),
    Info(Info),
    GetHashes(GetHashes),
    Hashes(Hashes),
    GetPiece(GetPiece),
    Piece(Piece),
    GetHave(GetHave),
    Have(Have),
    CatalogQuery(CatalogQuery),
    CatalogResults(CatalogResults),
}

fn encode_map<T: Serialize>(name: &'static str, v: &T) -> Result<Bytes, ProtocolError> {
    // Room for most messages at once (growing from empty took five reallocations each).
    encode_map_sized(name, v, 512)
}

fn encode_map_sized<T: Serialize>(
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

impl Message {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        tag_name(self.tag())
    }

    pub fn tag(&self) -> u8 {
        match self {
            Message::Hello(_) => tag::HELLO,
            Message::Welcome(_) => tag::WELCOME,
            Message::Error(_) => tag::ERROR,
            Message::Register(_) => tag::REGISTER,
            Message::Registered(_) => tag::REGISTERED,
            Message::UpdateFiles(_) => tag::UPDATE_FILES,
            Message::Ack(_) => tag::ACK,
            Message::Heartbeat => tag::HEARTBEAT,
            Message::Unregister => tag::UNREGISTER,
            Message::Search(_) => tag::SEARCH,
            Message::SearchResults(_) => tag::SEARCH_RESULTS,
            Message::ListPeers => tag::LIST_PEERS,
            Message::PeerList(_) => tag::PEER_LIST,
            Message::GetInfo(_) => tag::GET_INFO,
            Message::Info(_) => tag::INFO,
            Message::GetHashes(_) => tag::GET_HASHES,
            Message::Hashes(_) => tag::HASHES,
            Message::GetPiece(_) => tag::GET_PIECE,
            Message::Piece(_) => tag::PIECE,
            Message::GetHave(_) => tag::GET_HAVE,
            Message::Have(_) => tag::HAVE,
            Message::CatalogQuery(_) => tag::CATALOG_QUERY,
            Message::CatalogResults(_) => tag::CATALOG_RESULTS,
        }
    }

    /// Encodes the payload (without length prefix and tag).
    pub fn encode_payload(&self) -> Result<Bytes, ProtocolError> {
        let n = self.name();
        match self {
            Message::Hello(m) => encode_map(n, m),
            Message::Welcome(m) => encode_map(n, m),
            Message::Error(m) => encode_map(n, m),
            Message::Register(m) => encode_map(n, m),
            Message::Registered(m) => encode_map(n, m),
            Message::UpdateFiles(m) => encode_map(n, m),
            Message::Ack(m) => encode_map(n, m),
            Message::Heartbeat | Message::Unregister | Message::ListPeers => {
                encode_map(n, &Empty {})
            }
            Message::Search(m) => encode_map(n, m),
            // About 200 bytes per file with one peer: reserved at once (a reply of 100 files
            // grew through six reallocations of up to 20 KB each).
            Message::SearchResults(m) => encode_map_sized(n, m, 64 + 256 * m.files.len()),
            Message::PeerList(m) => encode_map(n, m),
            Message::GetInfo(m) => encode_map(n, m),
            Message::Info(m) => encode_map(n, m),
            Message::GetHashes(m) => encode_map(n, m),
            Message::Hashes(m) => encode_map(n, m),
            Message::GetPiece(m) => encode_map(n, m),
            Message::GetHave(m) => encode_map(n, m),
            Message::Have(m) => encode_map(n, m),
            Message::CatalogQuery(m) => encode_map(n, m),
            Message::CatalogResults(m) => encode_map(n, m),
            Message::Piece(p) => {
                let mut b = BytesMut::with_capacity(PIECE_HEADER_LEN + p.data.len());
                b.put_u32(p.index);
                b.extend_from_slice(&p.data);
                Ok(b.freeze())
            }
        }
    }

    /// Decodes a frame into a message; unknown tags and malformed payloads are errors.
    pub fn decode(frame: Frame) -> Result<Message, ProtocolError> {
        let p = &frame.payload[..];
        let n = tag_name(frame.tag);
        Ok(match frame.tag {
            tag::HELLO => Message::Hello(decode_map(n, p)?),
            tag::WELCOME => Message::Welcome(decode_map(n, p)?),
            tag::ERROR => Message::Error(decode_map(n, p)?),
            tag::REGISTER => Message::Register(decode_map(n, p)?),
            tag::REGISTERED => Message::Registered(decode_map(n, p)?),
            tag::UPDATE_FILES => Message::UpdateFiles(decode_map(n, p)?),
            tag::ACK => Message::Ack(decode_map(n, p)?),
            tag::HEARTBEAT => decode_map::<Empty>(n, p).map(|_| Message::Heartbeat)?,
            tag::UNREGISTER => decode_map::<Empty>(n, p).map(|_| Message::Unregister)?,
            tag::SEARCH => Message::Search(decode_map(n, p)?),
            tag::SEARCH_RESULTS => Message::SearchResults(decode_map(n, p)?),
            tag::LIST_PEERS => decode_map::<Empty>(n, p).map(|_| Message::ListPeers)?,
            tag::PEER_LIST => Message::PeerList(decode_map(n, p)?),
            tag::GET_INFO => Message::GetInfo(decode_map(n, p)?),
            tag::INFO => Message::Info(decode_map(n, p)?),
            tag::GET_HASHES => Message::GetHashes(decode_map(n, p)?),
            tag::HASHES => Message::Hashes(decode_map(n, p)?),
            tag::GET_PIECE => Message::GetPiece(decode_map(n, p)?),
            tag::GET_HAVE => Message::GetHave(decode_map(n, p)?),
            tag::HAVE => Message::Have(decode_map(n, p)?),
            tag::CATALOG_QUERY => Message::CatalogQuery(decode_map(n, p)?),
            tag::CATALOG_RESULTS => Message::CatalogResults(decode_map(n, p)?),
            tag::PIECE => {
                if p.len() < PIECE_HEADER_LEN {
                    return Err(ProtocolError::Malformed {
                        message: n,
                        reason: format!("{} bytes, shorter than the piece header", p.len()),
                    });
                }
                let index = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                Message::Piece(Piece {
                    index,
                    data: frame.payload.slice(PIECE_HEADER_LEN..),
                })
            }
            tag => return Err(ProtocolError::UnknownTag { tag }),
        })
    }
}

/// The name of the message a tag stands for.
pub fn tag_name(t: u8) -> &'static str {
    match t {
        tag::HELLO => "Hello",
        tag::WELCOME => "Welcome",
        tag::ERROR => "Error",
        tag::REGISTER => "Register",
        tag::REGISTERED => "Registered",
        tag::UPDATE_FILES => "UpdateFiles",
        tag::ACK => "Ack",
        tag::HEARTBEAT => "Heartbeat",
        tag::UNREGISTER => "Unregister",
        tag::SEARCH => "Search",
        tag::SEARCH_RESULTS => "SearchResults",
        tag::LIST_PEERS => "ListPeers",
        tag::PEER_LIST => "PeerList",
        tag::GET_INFO => "GetInfo",
        tag::INFO => "Info",
        tag::GET_HASHES => "GetHashes",
        tag::HASHES => "Hashes",
        tag::GET_PIECE => "GetPiece",
        tag::PIECE => "Piece",
        tag::GET_HAVE => "GetHave",
        tag::HAVE => "Have",
        tag::CATALOG_QUERY => "CatalogQuery",
        tag::CATALOG_RESULTS => "CatalogResults",
        _ => "unknown",
    }
}

impl ErrorReply {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
        }
    }
}
