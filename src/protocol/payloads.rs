//! The payload of every message: what each field means, with the limits a receiver checks.
//!
//! Payloads are MessagePack maps keyed by field name (unknown fields are ignored, so a field
//! can be added without a new version), except [`Piece`]'s, which is raw: see
//! [`super::messages`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::content::{ContentId, Digest};

/// Most piece hashes in one `Hashes` reply (512 KiB of hashes).
pub const MAX_HASHES_PER_REPLY: u32 = 16 * 1024;
/// Longest search query, in bytes.
pub const MAX_QUERY_LEN: usize = 1024;
/// Most results a search may ask for.
pub const MAX_SEARCH_LIMIT: u32 = 1000;
/// Longest relative path of a shared file, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// The client's first message: the protocol versions it speaks and the features it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Lowest protocol version the client speaks.
    pub version_min: u32,
    /// Highest protocol version the client speaks.
    pub version_max: u32,
    /// Software name and version, for logs (e.g. `peershare/0.1.0`).
    pub agent: String,
    /// Optional features the client can use ([`feature`](super::feature)); absent means none.
    /// Decoding keeps at most [`MAX_FEATURES`](super::MAX_FEATURES) names.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "super::handshake::bounded_features"
    )]
    pub features: Vec<String>,
    /// A member of a private group proves it to the peers of the group with its certificate
    /// (§4.2). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
}

/// The server's answer to [`Hello`]: the version chosen and the features agreed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version of the rest of the connection.
    pub version: u32,
    /// Software name and version, for logs.
    pub agent: String,
    /// Fresh random bytes a peer signs to register (index only; zeros from a peer).
    pub nonce: Digest,
    /// The features of the client's [`Hello`] this server supports too: only these may be
    /// used on the connection. Absent means none. Decoding keeps at most
    /// [`MAX_FEATURES`](super::MAX_FEATURES) names.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "super::handshake::bounded_features"
    )]
    pub features: Vec<String>,
    /// From a private index to a member: a fresh certificate. From a peer of a private group:
    /// its own (§4.2). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
    /// From a private index to a member: the keys removed from the group whose certificates
    /// may not have expired yet, as in `Ack` (§4.2). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Vec<Digest>>,
}

/// A private index's statement that `member` belongs to its group until `expires` (checked
/// and issued by [`crate::group`]). MessagePack map with named fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The group: the index's public key, which signs.
    pub group: Digest,
    /// The member's public key.
    pub member: Digest,
    /// When the certificate stops being valid, in ms since the Unix epoch.
    pub expires: i64,
    /// Ed25519 signature by `group` over `"peershare membership v1\0" || group || member ||
    /// expires` (i64 big-endian): 64 bytes when well formed.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Asks a private index to admit this connection's key with an invite.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// The invite's secret (32 bytes); the index keeps only a hash of it.
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
}

/// The answer to [`Join`]: the new member's certificate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// The certificate, for this connection's key.
    pub membership: Membership,
    /// The secret the group's DHT keys are made with (docs/PROTOCOL.md §10.7), 32 bytes.
    #[serde(with = "serde_bytes")]
    pub dht_secret: Vec<u8>,
}

/// An error answer to a request: a code ([`ErrorCode`], kept as a number since a newer peer
/// may send one this build does not know) and a line for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct ErrorReply {
    /// The [`ErrorCode`] number.
    pub code: u16,
    /// What went wrong, in one line.
    pub message: String,
}

/// A peer registers with the index, proving its key by signing the index's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// Ed25519 public key of the peer.
    pub public_key: Digest,
    /// Ed25519 signature of `REGISTER_CONTEXT || nonce`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// Host other peers reach this peer at; empty or unspecified: the address the index sees.
    pub host: String,
    /// Port other peers reach this peer at.
    pub port: u16,
    /// Digest of the peer's whole file list ([`crate::peer::Catalog::digest`]).
    pub catalog_digest: Digest,
    /// Files in that list.
    pub file_count: u64,
    /// A short-lived peer (a downloader sharing what it has so far): the index forgets it
    /// when it unregisters or long after its lease ran out. Absent means false.
    #[serde(default)]
    pub ephemeral: bool,
    /// The peer volunteers as a relay for the other members (`share --relay`, §7.10): its
    /// peer port carries relayed connections the index assigns it. Absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay: bool,
    /// Listening for relayed connections (§7.10), the peer accepts them at the volunteer relay
    /// an `Incoming` names (`via`); a build before volunteers does not say so, and the index
    /// then relays to it itself. Absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub via: bool,
}

/// What a peer signs to register: this context string, then the index's nonce.
pub const REGISTER_CONTEXT: &[u8] = b"peershare register v1\0";

/// The index's answer to [`Register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The peer's id at this index (stable for its key).
    pub peer_id: u64,
    /// The index already holds exactly this file list: no need to send it.
    pub in_sync: bool,
    /// Seconds a registration stays live without a heartbeat.
    pub lease_secs: u32,
    /// The host the index recorded for the peer (empty for a peer reached through the relay).
    pub host: String,
    /// The address the index sees this connection come from, `IP:PORT` (§7.10): behind a NAT,
    /// the router's public side. Absent from an index built before relays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// How others reach the peer: [`reach::DIRECT`](super::relay::reach::DIRECT) at `host`
    /// and its port, or [`reach::RELAY`](super::relay::reach::RELAY) through the index (§7.10).
    /// Absent from an index built before relays (then: direct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<String>,
    /// To a `Register` with `relay`: whether the index takes this peer as a volunteer relay
    /// (only a peer it reaches directly, once its control channel is open). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<bool>,
}

/// One shared file, as a peer tells the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the shared directory, `/`-separated; unique per peer.
    pub path: String,
    /// The file's name (the last component of `path`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub content_id: ContentId,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// For a file still downloading: which pieces the peer has verified (see [`Have`]).
    /// Absent for a complete file.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub have: Option<Vec<u8>>,
}

/// A batch of changes to a peer's file list at the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFiles {
    /// Remove every file of the peer before applying this batch.
    pub reset: bool,
    /// Files added or changed.
    pub upsert: Vec<FileEntry>,
    /// Paths of files removed.
    pub remove: Vec<String>,
    /// Catalog digest once this batch is applied; `None` while more batches follow.
    pub digest: Option<Digest>,
}

/// The index's answer to [`UpdateFiles`], `Heartbeat` and `Unregister`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Files the index now holds for the peer.
    pub files: u64,
    /// In answer to `Heartbeat` from a private index: the member's renewed certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
    /// In answer to `Heartbeat` from a private index: the keys removed from the group whose
    /// certificates may not have expired yet (at most [`MAX_REVOKED`]); sharing peers refuse them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Vec<Digest>>,
}

// The secrets stay out of logs and error messages.
impl std::fmt::Debug for Join {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Join {{ secret: ({} bytes, not shown) }}",
            self.secret.len()
        )
    }
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("membership", &self.membership)
            .field("dht_secret", &"(not shown)")
            .finish()
    }
}

/// Most revoked keys an `Ack` carries (32 bytes each).
pub const MAX_REVOKED: usize = 8192;

/// The payload of messages that carry nothing (an empty map).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Asks the index for files matching a query (words, or a content id in hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Search {
    /// The query, at most [`MAX_QUERY_LEN`] bytes.
    pub query: String,
    /// Most files wanted, at most [`MAX_SEARCH_LIMIT`].
    pub limit: u32,
    /// Extensions (lowercase, without the dot) the file's name must end in; empty: any
    /// (PROTOCOL §7.5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exts: Vec<String>,
    /// Least size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    /// Greatest size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Modified at or after, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer: Option<i64>,
    /// Modified before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older: Option<i64>,
    /// Ranked files to skip before the first one sent (paging), at most [`MAX_SEARCH_OFFSET`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Most ranked files a search may skip ([`Search::offset`]).
pub const MAX_SEARCH_OFFSET: u32 = 200_000;

macro_rules! filters_of {
    ($t:ty) => {
        impl $t {
            /// The request's filters, for matching.
            pub fn filters(&self) -> crate::query::Filters {
                crate::query::Filters {
                    exts: self.exts.clone(),
                    min_size: self.min_size,
                    max_size: self.max_size,
                    newer: self.newer,
                    older: self.older,
                }
                .normalized()
            }

            /// Sets the request's filters.
            pub fn set_filters(&mut self, f: crate::query::Filters) {
                self.exts = f.exts;
                self.min_size = f.min_size;
                self.max_size = f.max_size;
                self.newer = f.newer;
                self.older = f.older;
            }
        }
    };
}
filters_of!(Search);
filters_of!(CatalogQuery);

/// A peer that has a file, in search results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHit {
    /// The peer's id at the index (0: found elsewhere, e.g. through the DHT).
    pub peer_id: u64,
    /// Its IP address (never a name).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Its Ed25519 public key: a downloader requires the peer at `host:port` to prove it holds
    /// this key in the TLS handshake. The index always sends it; `None` only for a source
    /// found through the DHT, which carries addresses alone.
    pub key: Option<Digest>,
    /// When the index first received the file from this peer, ms since the Unix epoch.
    pub shared_at: i64,
    /// When the index last heard from this peer, ms since the Unix epoch.
    pub last_seen: i64,
    /// Set when the peer is still downloading the file: its verified pieces (see [`Have`]).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub have: Option<Vec<u8>>,
    /// Where the peer keeps the file: its path within the peer's share (`/`-separated, the
    /// name last). The index always sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `"relay"` for a peer reached only through the index's relay (its `host` is empty and
    /// its `port` 0, §7.10); absent for one reached directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<String>,
}

/// A distinct file (one content id) in search results, with the live peers that have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHit {
    /// A name it is shared under (see PROTOCOL §5 for which).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub content_id: ContentId,
    /// Who has it.
    pub peers: Vec<PeerHit>,
}

/// The index's answer to [`Search`], best first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResults {
    /// The files.
    pub files: Vec<FileHit>,
    /// More files matched than were returned (past `offset + limit`).
    pub truncated: bool,
    /// How many distinct files (content ids) matched in all (PROTOCOL §7.5).
    #[serde(default)]
    pub total: u64,
    /// Set when `total` is an estimate: the index stopped before reading every match.
    #[serde(default, skip_serializing_if = "is_false")]
    pub estimated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A registered peer, in the index's [`PeerList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Its id.
    pub peer_id: u64,
    /// Its IP address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Files it shares.
    pub files: u64,
    /// When the index last heard from it, ms since the Unix epoch.
    pub last_seen: i64,
    /// Its lease has not run out.
    pub live: bool,
}

/// The index's answer to `ListPeers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// The peers.
    pub peers: Vec<PeerRecord>,
}

/// Asks a peer about a file it shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetInfo {
    /// The file.
    pub content_id: ContentId,
}

/// A peer's answer to [`GetInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The file.
    pub content_id: ContentId,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes per piece ([`crate::content::PIECE_SIZE`]).
    pub piece_size: u32,
    /// The name the peer shares it under.
    pub name: String,
}

/// Asks a peer for a run of a file's piece hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetHashes {
    /// The file.
    pub content_id: ContentId,
    /// First piece.
    pub start: u32,
    /// Pieces, at most [`MAX_HASHES_PER_REPLY`].
    pub count: u32,
}

/// A peer's answer to [`GetHashes`]: 32 bytes per piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    /// First piece.
    pub start: u32,
    /// The hashes, concatenated.
    #[serde(with = "serde_bytes")]
    pub hashes: Vec<u8>,
}

/// Asks a peer for one piece of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPiece {
    /// The file.
    pub content_id: ContentId,
    /// The piece.
    pub index: u32,
}

/// Asks a peer which pieces of a file it has (feature [`HAVE`](super::feature::HAVE)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetHave {
    /// The file.
    pub content_id: ContentId,
}

/// Which pieces a peer can send: bit `i % 8` (most significant first) of byte `i / 8` is
/// set when piece `i` is verified. A complete file has every bit of its pieces set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Have {
    /// The file.
    pub content_id: ContentId,
    /// Pieces in the file.
    pub pieces: u32,
    /// The bitmap, `pieces.div_ceil(8)` bytes.
    #[serde(with = "serde_bytes")]
    pub bitmap: Vec<u8>,
}

/// Asks a peer which of its shared files match `query` (the index's matching rule; feature
/// [`CATALOG`](super::feature::CATALOG)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CatalogQuery {
    /// The query, at most [`MAX_QUERY_LEN`] bytes.
    pub query: String,
    /// Most files wanted, at most [`MAX_SEARCH_LIMIT`].
    pub limit: u32,
    /// Extensions (lowercase, without the dot) the file's name must end in; empty: any
    /// (PROTOCOL §7.5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exts: Vec<String>,
    /// Least size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    /// Greatest size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Modified at or after, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer: Option<i64>,
    /// Modified before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older: Option<i64>,
    /// Ranked files to skip before the first one sent (paging), at most [`MAX_SEARCH_OFFSET`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u32,
}

/// A file in [`CatalogResults`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The name the peer shares it under.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub content_id: ContentId,
    /// Its path within the peer's share (`/`-separated, the name last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One entry per distinct matching file the peer shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogResults {
    /// The files.
    pub files: Vec<CatalogEntry>,
    /// More matched than were sent.
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
    /// Which piece.
    pub index: u32,
    /// Its bytes.
    pub data: Bytes,
}

/// What an [`ErrorReply`] says went wrong. The numbers are fixed; a new code takes a new number.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or breaks a limit.
    BadRequest = 1,
    /// The file (or the peer) is unknown.
    NotFound = 2,
    /// Register first, or the session was superseded or forgotten.
    Unauthorized = 3,
    /// No protocol version in common.
    UnsupportedVersion = 4,
    /// All upload slots are taken: try again later.
    Busy = 5,
    /// The server failed.
    Internal = 6,
    /// This key may not do that here: not a member of the private group, or revoked.
    Forbidden = 7,
    /// The index could not reach the registering peer at the address it gave, holding its key.
    Unreachable = 8,
}

impl ErrorCode {
    /// Every code, in number order.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::Unauthorized,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::Forbidden,
        ErrorCode::Unreachable,
    ];

    /// The code's number on the wire.
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// The code with this number, if this build knows it.
    pub fn from_number(n: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.number() == n)
    }
}

/// The number, as error lines show it ("... (code 3)").
impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// So that `reply.code == ErrorCode::Busy` reads as it means.
impl PartialEq<ErrorCode> for u16 {
    fn eq(&self, code: &ErrorCode) -> bool {
        *self == code.number()
    }
}

impl ErrorReply {
    /// An error reply with a code and a line for people.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code: code.number(),
            message: message.into(),
        }
    }

    /// The code, when this build knows it.
    pub fn kind(&self) -> Option<ErrorCode> {
        ErrorCode::from_number(self.code)
    }
}

/// Most entries a [`Browse`] may ask for in one [`Listing`].
pub const MAX_BROWSE_LIMIT: u32 = 1000;

/// Asks the index for what a peer shares under a directory (docs/PROTOCOL.md §7.9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Browse {
    /// The peer, by its id at the index (as `ListPeers` and search results give it).
    pub peer_id: u64,
    /// A directory of the peer's share, `/`-separated, relative to its shared directory;
    /// `""` or `"/"` is the top. At most [`MAX_PATH_LEN`] bytes; no `.` or `..` component, no
    /// empty component inside, no backslash or NUL.
    pub path: String,
    /// Every file below `path` (each with its path relative to `path`), instead of the
    /// directories and files directly in it.
    pub recursive: bool,
    /// Entries to skip, for paging.
    pub offset: u32,
    /// Most entries wanted, `1..=`[`MAX_BROWSE_LIMIT`].
    pub limit: u32,
}

/// A directory in a [`Listing`], with what is below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Its name (one path component).
    pub name: String,
    /// Bytes of every file below it.
    pub size: u64,
    /// Files below it (in every subdirectory).
    pub files: u64,
}

/// A file in a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedFile {
    /// Relative to the directory asked for: its name, or, in a recursive listing, its path
    /// (`/`-separated).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub content_id: ContentId,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

/// The index's answer to [`Browse`]: one page of the directory's entries, directories first
/// (by name, byte order), then files (by path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The peer.
    pub peer_id: u64,
    /// The path asked for, normalized (no leading or trailing `/`; `""` for the top).
    pub path: String,
    /// `path` names a file, not a directory: `files` holds it alone (with its name as path).
    pub file: bool,
    /// Directories on this page.
    pub dirs: Vec<DirEntry>,
    /// Files on this page.
    pub files: Vec<ListedFile>,
    /// Entries in the whole listing (directories and files; in a recursive one, files).
    pub total: u64,
    /// The `offset` of the next page; `None` on the last.
    pub next: Option<u32>,
}
