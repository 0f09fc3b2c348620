//! `HashFetch`: a file's piece hashes received from an untrusted source, checked block by block against the content id.

use blake3::hazmat::ChainingValue;

use super::tree::{PieceLayout, merge, root_from_piece_hashes};
use super::verifier::{PieceError, PieceVerifier};
use super::{ContentId, PIECE_HASH_LEN};

/// Piece hashes a downloader holds unchecked at most, and the unit [`HashFetch`] checks them in:
/// 16,384 hashes (512 KiB, one `Hashes` reply at most), the pieces of 4 GiB.
pub const HASH_BLOCK: u64 = 16 * 1024;

/// Receives a file's piece hashes from an untrusted source and checks them against the content
/// id, never holding more than one block ([`HASH_BLOCK`] hashes) that is not checked yet, however
/// large a file the source claims. Free of I/O: the caller asks for [`HashFetch::next_request`]
/// and hands each reply to [`HashFetch::receive`].
///
/// Blocks are aligned runs of `HASH_BLOCK` piece hashes (the last may be shorter). Each is a
/// complete subtree of the file's BLAKE3 tree, and the tree over the blocks' chaining values has
/// the same root as the tree over all piece hashes, so:
/// - a file of at most one block: its hashes (at most 512 KiB) are received and checked whole;
/// - a larger file: a first pass receives each block, keeps only its chaining value (32 bytes)
///   and drops the hashes; the chaining values must add up to the content id. A second pass
///   receives the blocks again, each checked against its chaining value before it is kept.
///   A source that lies about the size or the hashes is caught at the end of the first pass
///   having made us hold one block and `32 / HASH_BLOCK` of the claimed size (32 KiB for 4 TiB);
///   only hashes already proven are ever held in bulk.
pub struct HashFetch {
    id: ContentId,
    layout: PieceLayout,
    total: u64,
    /// Hashes of the current pass received so far.
    received: u64,
    /// The block being received (unchecked), at most `HASH_BLOCK`.
    block: Vec<ChainingValue>,
    /// First pass: the chaining values of the blocks so far; second pass: all of them, checked.
    block_cvs: Vec<ChainingValue>,
    second_pass: bool,
    /// Checked hashes.
    checked: Vec<ChainingValue>,
}

impl HashFetch {
    /// Starts receiving the piece hashes of `id`, a file of `size` bytes as the source claims.
    pub fn new(id: ContentId, size: u64) -> Self {
        let layout = PieceLayout::new(size);
        HashFetch {
            id,
            layout,
            total: layout.hash_count(),
            received: 0,
            block: Vec::new(),
            block_cvs: Vec::new(),
            second_pass: false,
            checked: Vec::new(),
        }
    }

    /// The hashes to ask for next, `(start, count)` (never beyond the current block), or
    /// `None` when all are received and checked.
    pub fn next_request(&self) -> Option<(u64, u64)> {
        if self.received >= self.total {
            return None;
        }
        let block_end = ((self.received / HASH_BLOCK) + 1) * HASH_BLOCK;
        Some((self.received, block_end.min(self.total) - self.received))
    }

    /// Whether the current pass is the second (a file of more than one block).
    pub fn second_pass(&self) -> bool {
        self.second_pass
    }

    /// Hashes held that are not checked yet (for tests of the bound).
    pub fn unchecked_len(&self) -> usize {
        self.block.len()
    }

    /// Takes the hashes of the reply to [`HashFetch::next_request`]: 32 bytes each, at least
    /// one and at most the count asked for. Fails if they are malformed or do not add up.
    pub fn receive(&mut self, hashes: &[u8]) -> Result<(), PieceError> {
        let Some((start, count)) = self.next_request() else {
            return Err(self.count_error(self.total + 1));
        };
        let n = (hashes.len() / PIECE_HASH_LEN) as u64;
        if hashes.is_empty() || !hashes.len().is_multiple_of(PIECE_HASH_LEN) || n > count {
            return Err(self.count_error(start + n));
        }
        self.block
            .extend(hashes.chunks_exact(PIECE_HASH_LEN).map(|c| {
                let mut cv = [0u8; 32];
                cv.copy_from_slice(c);
                cv
            }));
        self.received += n;
        if n < count {
            return Ok(());
        }
        // A block is complete.
        let mismatch = PieceError::HashesMismatch { expected: self.id };
        if self.total <= HASH_BLOCK {
            if root_from_piece_hashes(&self.block) != Some(self.id) {
                return Err(mismatch);
            }
            self.checked = std::mem::take(&mut self.block);
            return Ok(());
        }
        let cv = merge(&self.block);
        if !self.second_pass {
            self.block.clear();
            self.block_cvs.push(cv);
            if self.received == self.total {
                if root_from_piece_hashes(&self.block_cvs) != Some(self.id) {
                    return Err(mismatch);
                }
                self.second_pass = true;
                self.received = 0;
                self.block = Vec::new();
                // Proven: the file really has this many pieces.
                self.checked.reserve_exact(self.total as usize);
            }
            return Ok(());
        }
        let j = (start / HASH_BLOCK) as usize;
        if self.block_cvs.get(j) != Some(&cv) {
            return Err(mismatch);
        }
        self.checked.append(&mut self.block);
        Ok(())
    }

    fn count_error(&self, received: u64) -> PieceError {
        PieceError::HashCount {
            size: self.layout.size,
            expected: self.total,
            received,
        }
    }

    /// The verifier, once every hash is received and checked.
    pub fn finish(self) -> Result<PieceVerifier, PieceError> {
        if self.next_request().is_some() || self.checked.len() as u64 != self.total {
            return Err(self.count_error(self.checked.len() as u64));
        }
        Ok(PieceVerifier::from_checked(
            self.id,
            self.layout,
            self.checked,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{PIECE_SIZE, hash_file};

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Leaf chaining values standing in for piece hashes (the tree over them is what counts).
    fn leaves(n: u64, seed: u8) -> Vec<ChainingValue> {
        (0..n)
            .map(|i| {
                let mut h = blake3::Hasher::new();
                h.update(&[seed]).update(&i.to_le_bytes());
                *h.finalize().as_bytes()
            })
            .collect()
    }

    /// Feeds `fetch` from `source`, replies of at most `reply` hashes; returns the requests
    /// made and the most hashes it held unchecked at any time.
    fn feed(
        fetch: &mut HashFetch,
        source: &dyn Fn(bool, u64) -> ChainingValue,
        reply: u64,
    ) -> Result<(u64, usize), PieceError> {
        let (mut requests, mut most) = (0, 0);
        while let Some((start, count)) = fetch.next_request() {
            requests += 1;
            let second = fetch.second_pass();
            let n = count.min(reply);
            let bytes: Vec<u8> = (start..start + n).flat_map(|i| source(second, i)).collect();
            fetch.receive(&bytes)?;
            most = most.max(fetch.unchecked_len());
            assert!(requests < 1_000_000, "endless");
        }
        Ok((requests, most))
    }

    #[test]
    fn hashes_checked_block_by_block_give_the_same_verifier() {
        let b = HASH_BLOCK;
        // One block exactly, several with a short last one (of 1 and of 5), exact blocks.
        for (n, reply) in [(b, b), (2 * b + 1, b), (3 * b + 5, 5000), (2 * b, 7000)] {
            let cvs = leaves(n, 1);
            let id = root_from_piece_hashes(&cvs).unwrap();
            let size = n * PIECE_SIZE - 3;
            let mut fetch = HashFetch::new(id, size);
            let (requests, most) = feed(&mut fetch, &|_, i| cvs[i as usize], reply).unwrap();
            let v = fetch.finish().unwrap();
            assert_eq!(v.piece_hashes(), &cvs[..], "{n} hashes");
            assert!(most <= b as usize, "{most} unchecked");
            let passes = if n > b { 2 } else { 1 };
            assert!(requests >= passes * n.div_ceil(b), "{requests}");
        }
        // A real small file goes through the same path as before.
        let bytes = data(5 * PIECE_SIZE as usize + 9);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &bytes).unwrap();
        let (id, cvs) = hash_file(&path, bytes.len() as u64, &|_| {}).unwrap();
        let mut fetch = HashFetch::new(id, bytes.len() as u64);
        feed(&mut fetch, &|_, i| cvs[i as usize], 2).unwrap();
        fetch
            .finish()
            .unwrap()
            .verify(5, &bytes[5 * PIECE_SIZE as usize..])
            .unwrap();
        // A single-piece file has no hashes at all.
        let one = blake3::hash(b"x").into();
        let fetch = HashFetch::new(one, 1);
        assert_eq!(fetch.next_request(), None);
        fetch.finish().unwrap().verify(0, b"x").unwrap();
    }

    #[test]
    fn a_lie_about_size_or_hashes_is_caught_holding_one_block_at_most() {
        let b = HASH_BLOCK;
        let honest = leaves(2 * b + 3, 2);
        let id = root_from_piece_hashes(&honest).unwrap();
        // A source claiming 8 blocks' worth of pieces for this id, with hashes of its own:
        // caught at the end of the first pass, having held one block and kept none.
        let mut fetch = HashFetch::new(id, 8 * b * PIECE_SIZE);
        let junk = leaves(8 * b, 3);
        let e = feed(&mut fetch, &|_, i| junk[i as usize], b).unwrap_err();
        assert_eq!(e, PieceError::HashesMismatch { expected: id });
        assert!(fetch.unchecked_len() <= b as usize);
        assert!(!fetch.second_pass() && fetch.checked.capacity() == 0);
        // A source whose second pass differs from its first: caught at that block.
        let mut fetch = HashFetch::new(id, honest.len() as u64 * PIECE_SIZE);
        let switch = |second: bool, i: u64| {
            let mut cv = honest[i as usize];
            if second && i == b + 7 {
                cv[0] ^= 1;
            }
            cv
        };
        let e = feed(&mut fetch, &switch, b).unwrap_err();
        assert_eq!(e, PieceError::HashesMismatch { expected: id });
        assert_eq!(fetch.checked.len() as u64, b, "the first block was kept");
        // Malformed replies: too many, empty, not whole hashes.
        let mut fetch = HashFetch::new(id, honest.len() as u64 * PIECE_SIZE);
        assert!(fetch.receive(&[]).is_err());
        assert!(fetch.receive(&[0; 33]).is_err());
        assert!(fetch.receive(&vec![0; (b as usize + 1) * 32]).is_err());
    }
}
