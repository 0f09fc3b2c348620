//! `PieceVerifier`: checks each piece of a file as it arrives, against piece hashes proven to add up to the content id.

use blake3::hazmat::ChainingValue;

use super::tree::{PieceLayout, hash_piece, root_from_piece_hashes};
use super::{ContentId, PIECE_HASH_LEN};

/// Why piece hashes or a piece were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PieceError {
    #[error("expected {expected} piece hashes for a file of {size} bytes, received {received}")]
    /// Not as many piece hashes as the size needs.
    HashCount {
        /// The file's size.
        size: u64,
        /// Hashes it needs.
        expected: u64,
        /// Hashes received.
        received: u64,
    },
    #[error("the piece hashes do not add up to content id {expected}")]
    /// The piece hashes do not hash up to the content id.
    HashesMismatch {
        /// The content id.
        expected: ContentId,
    },
    #[error("piece {index} is out of range: the file has {count} pieces")]
    /// A piece index past the last piece.
    OutOfRange {
        /// The index.
        index: u64,
        /// Pieces in the file.
        count: u64,
    },
    #[error("piece {index} should be {expected} bytes, received {received}")]
    /// A piece of the wrong length.
    Length {
        /// The piece.
        index: u64,
        /// Its length in the layout.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    #[error("piece {index} does not match its hash")]
    /// A piece whose bytes do not match its hash.
    Corrupt {
        /// The piece.
        index: u64,
    },
}

/// Checks pieces of one file as they arrive, against piece hashes already checked against the content id.
#[derive(Debug, Clone)]
pub struct PieceVerifier {
    id: ContentId,
    layout: PieceLayout,
    hashes: Vec<ChainingValue>,
}

impl PieceVerifier {
    /// A verifier over piece hashes already proven to add up to `id` (by [`HashFetch`](super::HashFetch)).
    pub(super) fn from_checked(
        id: ContentId,
        layout: PieceLayout,
        hashes: Vec<ChainingValue>,
    ) -> Self {
        PieceVerifier { id, layout, hashes }
    }

    /// Builds a verifier from untrusted piece hashes (32 bytes each, concatenated); fails
    /// unless they are exactly the ones that hash up to `id`.
    pub fn new(id: ContentId, size: u64, hashes: &[u8]) -> Result<Self, PieceError> {
        let layout = PieceLayout::new(size);
        let received = (hashes.len() / PIECE_HASH_LEN) as u64;
        if !hashes.len().is_multiple_of(PIECE_HASH_LEN) || received != layout.hash_count() {
            return Err(PieceError::HashCount {
                size,
                expected: layout.hash_count(),
                received,
            });
        }
        let hashes: Vec<ChainingValue> = hashes
            .chunks_exact(PIECE_HASH_LEN)
            .map(|c| {
                let mut cv = [0u8; 32];
                cv.copy_from_slice(c);
                cv
            })
            .collect();
        if !hashes.is_empty() && root_from_piece_hashes(&hashes) != Some(id) {
            return Err(PieceError::HashesMismatch { expected: id });
        }
        Ok(PieceVerifier { id, layout, hashes })
    }

    /// How the file is cut into pieces.
    pub fn layout(&self) -> PieceLayout {
        self.layout
    }

    /// The file's content id.
    pub fn content_id(&self) -> ContentId {
        self.id
    }

    /// The checked piece hashes (empty for a single-piece file).
    pub fn piece_hashes(&self) -> &[ChainingValue] {
        &self.hashes
    }

    /// Checks one piece; `Ok` only if every byte is right.
    pub fn verify(&self, index: u64, data: &[u8]) -> Result<(), PieceError> {
        let count = self.layout.piece_count();
        if index >= count {
            return Err(PieceError::OutOfRange { index, count });
        }
        let expected = self.layout.piece_len(index);
        if data.len() as u64 != expected {
            return Err(PieceError::Length {
                index,
                expected,
                received: data.len() as u64,
            });
        }
        let ok = if self.hashes.is_empty() {
            ContentId::from(blake3::hash(data)) == self.id
        } else {
            hash_piece(index, data) == self.hashes[index as usize]
        };
        if ok {
            Ok(())
        } else {
            Err(PieceError::Corrupt { index })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::PIECE_SIZE;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn forged_piece_hashes_are_rejected() {
        let size = 5 * PIECE_SIZE;
        let bytes = data(size as usize);
        let id = ContentId::from(blake3::hash(&bytes));
        let mut flat: Vec<u8> = (0..5)
            .flat_map(|i| {
                let s = (i * PIECE_SIZE) as usize;
                hash_piece(i, &bytes[s..s + PIECE_SIZE as usize])
            })
            .collect();
        assert!(PieceVerifier::new(id, size, &flat).is_ok());
        assert!(matches!(
            PieceVerifier::new(id, size, &flat[..64]),
            Err(PieceError::HashCount { .. })
        ));
        flat[40] ^= 1;
        assert_eq!(
            PieceVerifier::new(id, size, &flat).unwrap_err(),
            PieceError::HashesMismatch { expected: id }
        );
    }
}
