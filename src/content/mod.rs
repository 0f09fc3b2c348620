//! Content addressing: a file is named by its BLAKE3 hash and cut into pieces that are subtrees of the BLAKE3 tree.

mod hash_fetch;
mod hashing;
mod id;
mod mapped;
mod tree;
mod verifier;

pub use hash_fetch::{HASH_BLOCK, HashFetch};
pub use hashing::{hash_file, hash_open_file};
pub use id::{ContentId, Digest, ParseContentIdError};
pub use tree::{PieceLayout, hash_piece, root_from_piece_hashes};
pub use verifier::{PieceError, PieceVerifier};

/// Bytes in a piece: 256 chunks of 1 KiB, a complete BLAKE3 subtree. Protocol version 1 fixes it.
pub const PIECE_SIZE: u64 = 256 * 1024;
/// Bytes of one piece hash (a BLAKE3 chaining value).
pub const PIECE_HASH_LEN: usize = 32;
/// Largest file this version transfers: 4 TiB (16 Mi pieces, 512 MiB of piece hashes).
pub const MAX_FILE_SIZE: u64 = 1 << 42;
