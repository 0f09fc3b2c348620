//! `PieceScheduler`: which piece each source fetches next, shared by all sources of one download.
//!
//! Pieces wait in a queue; a source claims the next one it has not failed before. A faster
//! source empties its request window sooner and so claims more. When the queue is empty, an
//! idle source may also fetch a piece still in flight at another source (endgame), so one slow
//! source cannot hold up the finish; the first verified copy wins.

use std::collections::{HashSet, VecDeque};

/// Most sources fetching the same piece at once in endgame.
const MAX_COPIES: u8 = 2;

/// Which piece each source of one download fetches next; see the module notes.
#[derive(Debug)]
pub struct PieceScheduler {
    done: Vec<bool>,
    remaining: u64,
    queue: VecDeque<u32>,
    /// Sources currently fetching each piece.
    fetching: Vec<u8>,
    /// (piece, source) pairs where the source sent a bad copy.
    refused: HashSet<(u32, usize)>,
}

impl PieceScheduler {
    /// `done[i]` says piece `i` is already verified on disk.
    pub fn new(done: Vec<bool>) -> Self {
        let queue: VecDeque<u32> = (0..done.len() as u32)
            .filter(|i| !done[*i as usize])
            .collect();
        PieceScheduler {
            remaining: queue.len() as u64,
            fetching: vec![0; done.len()],
            done,
            queue,
            refused: HashSet::new(),
        }
    }

    /// Pieces not verified yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whether piece `piece` is verified (an index past the end counts as done).
    pub fn is_done(&self, piece: u32) -> bool {
        self.done.get(piece as usize).copied().unwrap_or(true)
    }

    /// The next piece for `source`, for which `mine(piece)` says whether it already has that
    /// piece in hand (requested or being verified); `None` if nothing is left for it now.
    pub fn claim(&mut self, source: usize, mine: impl Fn(u32) -> bool) -> Option<u32> {
        self.claim_from(source, mine, |_| true)
    }

    /// Like [`PieceScheduler::claim`], for a source that has only the pieces `has` accepts.
    pub fn claim_from(
        &mut self,
        source: usize,
        mine: impl Fn(u32) -> bool,
        has: impl Fn(u32) -> bool,
    ) -> Option<u32> {
        let pos = self
            .queue
            .iter()
            .position(|i| has(*i) && !self.refused.contains(&(*i, source)));
        if let Some(pos) = pos {
            let piece = self.queue.remove(pos)?;
            self.fetching[piece as usize] += 1;
            return Some(piece);
        }
        // Endgame: help with a piece still in flight elsewhere.
        let piece = (0..self.done.len() as u32).find(|&i| {
            let k = i as usize;
            !self.done[k]
                && self.fetching[k] > 0
                && self.fetching[k] < MAX_COPIES
                && !mine(i)
                && has(i)
                && !self.refused.contains(&(i, source))
        })?;
        self.fetching[piece as usize] += 1;
        Some(piece)
    }

    fn unclaim(&mut self, piece: u32) {
        let k = piece as usize;
        self.fetching[k] = self.fetching[k].saturating_sub(1);
        if !self.done[k] && self.fetching[k] == 0 && !self.queue.contains(&piece) {
            self.queue.push_front(piece);
        }
    }

    /// The source gives the piece back unfetched (it failed, stalled or is busy).
    pub fn release(&mut self, piece: u32) {
        self.unclaim(piece);
    }

    /// The piece arrived and verified; `true` if it was not done before.
    pub fn complete(&mut self, piece: u32) -> bool {
        let k = piece as usize;
        self.fetching[k] = self.fetching[k].saturating_sub(1);
        if self.done[k] {
            return false;
        }
        self.done[k] = true;
        self.remaining -= 1;
        self.queue.retain(|i| *i != piece);
        true
    }

    /// `source` sent a bad copy: never ask it for this piece again.
    pub fn reject(&mut self, piece: u32, source: usize) {
        self.refused.insert((piece, source));
        self.unclaim(piece);
    }

    /// Whether any piece is being fetched by anyone.
    pub fn anything_in_flight(&self) -> bool {
        self.fetching.iter().any(|f| *f > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_in_order_then_endgame_then_done() {
        let mut s = PieceScheduler::new(vec![false, true, false]);
        assert_eq!(s.remaining(), 2);
        let mut a: VecDeque<u32> = VecDeque::new();
        a.push_back(s.claim(0, |i| a.contains(&i)).unwrap());
        assert_eq!(a[0], 0);
        a.push_back(s.claim(0, |i| a.contains(&i)).unwrap());
        assert_eq!(a[1], 2);
        assert_eq!(
            s.claim(0, |i| a.contains(&i)),
            None,
            "source 0 has everything left in hand"
        );
        assert_eq!(
            s.claim(1, |_| false),
            Some(0),
            "endgame: source 1 duplicates piece 0"
        );
        assert!(s.complete(0));
        assert!(!s.complete(0), "second copy ignored");
        assert!(s.complete(2));
        assert_eq!(s.remaining(), 0);
        assert!(!s.anything_in_flight());
    }

    #[test]
    fn released_and_rejected_pieces_go_to_others() {
        let mut s = PieceScheduler::new(vec![false; 2]);
        let none = |_| false;
        assert_eq!(s.claim(0, none), Some(0));
        s.reject(0, 0);
        assert_eq!(
            s.claim(0, none),
            Some(1),
            "source 0 is not asked for piece 0 again"
        );
        assert_eq!(s.claim(1, none), Some(0));
        s.release(0);
        assert_eq!(s.claim(0, |i| i == 1), None);
        assert_eq!(s.claim(2, none), Some(0));
    }
}
