//! Pieces: fixed-size subtrees of a file's BLAKE3 tree, hashed alone and checked against the content id.
//!
//! A file of `n` pieces has `n` piece hashes (non-root chaining values). Merged pairwise the way
//! BLAKE3 builds its tree (the left subtree holds the largest power of two of pieces below `n`),
//! they give the root hash, which is the content id. A downloader that holds the piece hashes and
//! has checked them against the content id can check every piece on its own, as it arrives.
//! A file of a single piece (up to [`PIECE_SIZE`] bytes, the empty file included) has no piece
//! hashes: its one piece is checked by hashing it whole.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use super::{ContentId, PIECE_SIZE};

/// How a file of a given size is cut into pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceLayout {
    /// The file's size in bytes.
    pub size: u64,
}

impl PieceLayout {
    /// The layout of a file of `size` bytes.
    pub fn new(size: u64) -> Self {
        PieceLayout { size }
    }

    /// Number of pieces; the empty file has one (empty) piece.
    pub fn piece_count(&self) -> u64 {
        self.size.div_ceil(PIECE_SIZE).max(1)
    }

    /// Number of piece hashes a peer sends for this file: 0 for a single piece.
    pub fn hash_count(&self) -> u64 {
        let n = self.piece_count();
        if n == 1 { 0 } else { n }
    }

    /// Where piece `index` starts in the file.
    pub fn piece_offset(&self, index: u64) -> u64 {
        index * PIECE_SIZE
    }

    /// How many bytes piece `index` holds (the last may be short; 0 past the end).
    pub fn piece_len(&self, index: u64) -> u64 {
        let start = self.piece_offset(index);
        self.size.saturating_sub(start).min(PIECE_SIZE)
    }
}

/// The chaining value of piece `index` of a file with more than one piece.
pub fn hash_piece(index: u64, data: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * PIECE_SIZE);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// The chaining value of the subtree over `cvs` (at least one), merged the way BLAKE3 builds its tree.
pub(super) fn merge(cvs: &[ChainingValue]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let split = left_len(cvs.len());
    merge_subtrees_non_root(&merge(&cvs[..split]), &merge(&cvs[split..]), Mode::Hash)
}

/// Largest power of two strictly below `n` (n ≥ 2): how many pieces the left subtree holds.
fn left_len(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root hash of at least two piece hashes; `None` for fewer.
pub fn root_from_piece_hashes(cvs: &[ChainingValue]) -> Option<ContentId> {
    if cvs.len() < 2 {
        return None;
    }
    let split = left_len(cvs.len());
    let root = merge_subtrees_root(&merge(&cvs[..split]), &merge(&cvs[split..]), Mode::Hash);
    Some(root.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_subtree_sizes() {
        assert_eq!(left_len(2), 1);
        assert_eq!(left_len(3), 2);
        assert_eq!(left_len(4), 2);
        assert_eq!(left_len(5), 4);
        assert_eq!(left_len(9), 8);
    }
}
