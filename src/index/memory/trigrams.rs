//! The trigram index of the name index: for each trigram of a lowercased name, the postings list
//! of the slots whose names hold it; with the counts that decide when to rebuild it.
//!
//! Invariants: `postings` is the number of entries of all lists; `stale` counts those of removed
//! files (still listed until a rebuild drops them).

use std::collections::HashMap;

use crate::index::postings::{Postings, Slot, trigrams_into};

/// A trigram's list joins the intersection when it is at most this many times as long as
/// the shortest (longer ones cost more to read than confirming the candidates by name).
pub(super) const INTERSECT_RATIO: usize = 8;

/// What answering a word query from the postings reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct PostingsReads {
    /// At most how many files can match (names to read): the length of the shortest list of
    /// the words' trigrams (every file when no word has one).
    pub(super) most: usize,
    /// Entries of the lists merged to find them.
    pub(super) merged: usize,
}

/// Postings lists by trigram.
#[derive(Debug, Default)]
pub(super) struct TrigramIndex {
    lists: HashMap<[u8; 3], Postings>,
    postings: usize,
    stale: usize,
    scratch: Vec<[u8; 3]>,
}

impl TrigramIndex {
    /// The list of `tri`, if any name holds it.
    #[inline]
    pub(super) fn get(&self, tri: &[u8; 3]) -> Option<&Postings> {
        self.lists.get(tri)
    }

    /// Adds `slot` (above every slot listed) to the lists of the trigrams of `lowered`.
    pub(super) fn add(&mut self, slot: Slot, lowered: &str) {
        let mut t = std::mem::take(&mut self.scratch);
        trigrams_into(lowered, &mut t);
        for tri in &t {
            if self.lists.entry(*tri).or_default().push(slot) {
                self.postings += 1;
            }
        }
        self.scratch = t;
    }

    /// Counts the entries of a removed file named `lowered` as stale.
    pub(super) fn removed(&mut self, lowered: &str) {
        let mut t = std::mem::take(&mut self.scratch);
        trigrams_into(lowered, &mut t);
        self.stale += t.len();
        self.scratch = t;
    }

    /// Whether removed files hold most entries (and enough to be worth a rebuild).
    pub(super) fn mostly_stale(&self) -> bool {
        self.stale >= 1024 && self.stale * 2 >= self.postings
    }

    /// Entries of all lists.
    #[cfg(test)]
    pub(super) fn postings(&self) -> usize {
        self.postings
    }

    /// Every list.
    #[cfg(test)]
    pub(super) fn lists(&self) -> impl Iterator<Item = &Postings> {
        self.lists.values()
    }

    /// Drops every list (before the slots are renumbered and listed again).
    pub(super) fn clear(&mut self) {
        self.lists = HashMap::new();
        self.postings = 0;
        self.stale = 0;
    }

    /// Gives back spare capacity.
    pub(super) fn shrink(&mut self) {
        for p in self.lists.values_mut() {
            p.shrink();
        }
        self.lists.shrink_to_fit();
    }

    /// What reading the lists of these words' trigrams costs, with `live` files in all.
    pub(super) fn reads(&self, words: &[String], live: usize) -> PostingsReads {
        let mut t = Vec::new();
        let mut lens = Vec::new();
        for w in words.iter().filter(|w| w.len() >= 3) {
            trigrams_into(w, &mut t);
            for tri in &t {
                lens.push((*tri, self.lists.get(tri).map_or(0, Postings::len)));
            }
        }
        lens.sort_unstable();
        lens.dedup();
        let most = lens.iter().map(|&(_, n)| n).min().unwrap_or(live);
        let kept = |n: usize| n <= most.saturating_mul(INTERSECT_RATIO);
        PostingsReads {
            most,
            merged: lens.iter().map(|&(_, n)| n).filter(|&n| kept(n)).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_entries_stale_ones_and_reads() {
        let mut t = TrigramIndex::default();
        t.add(0, "abcd"); // abc, bcd
        t.add(1, "abcx"); // abc, bcx
        t.add(1, "abcx"); // not above the last: not listed twice
        assert_eq!(t.postings(), 4);
        assert_eq!(
            t.get(b"abc").map(|p| p.iter().collect::<Vec<_>>()),
            Some(vec![0, 1])
        );
        assert!(t.get(b"zzz").is_none());
        let r = t.reads(&["abcd".into()], 2);
        assert_eq!((r.most, r.merged), (1, 3), "bcd once, abc twice");
        let r = t.reads(&["ab".into()], 2);
        assert_eq!((r.most, r.merged), (2, 0), "no trigram: every live file");
        t.removed("abcd");
        assert!(!t.mostly_stale(), "too few to rebuild for");
        for s in 2..1000 {
            t.add(s, "abc");
            t.removed("abc");
            t.removed("abc");
        }
        assert!(t.mostly_stale());
        t.clear();
        assert_eq!((t.postings(), t.lists().count()), (0, 0));
        assert!(!t.mostly_stale());
    }
}
