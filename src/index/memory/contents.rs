//! Content ids of the name index interned to small numbers, each with the head of the list of
//! the files that have it.
//!
//! Invariants: a number is in the hash table exactly while its list is not empty; a number
//! whose list empties is freed and may be handed to another id. Ids come from peers, so the
//! table's hasher is randomly keyed.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::{NONE, Slot, reuse_or_push};
use crate::content::ContentId;

/// One content number's record.
#[derive(Debug)]
pub(super) struct ContentRec {
    /// The content id.
    pub(super) id: ContentId,
    /// The first file with this content id ([`NONE`]: the number is free).
    pub(super) head: Slot,
}

/// Content ids by number, and numbers by content id.
#[derive(Debug, Default)]
pub(super) struct ContentIds {
    recs: Vec<ContentRec>,
    free: Vec<u32>,
    by_id: HashTable<u32>,
    hasher: RandomState,
}

impl ContentIds {
    /// The record of content number `n` (`None` for [`NONE`]).
    #[inline]
    pub(super) fn get(&self, n: u32) -> Option<&ContentRec> {
        self.recs.get(n as usize)
    }

    /// How many numbers were ever given (in use or free).
    pub(super) fn len(&self) -> usize {
        self.recs.len()
    }

    /// How many content ids are in use.
    pub(super) fn in_use(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no content id is in use.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The numbers in use.
    #[cfg(test)]
    pub(super) fn numbers(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_id.iter().copied()
    }

    fn hash(&self, id: &ContentId) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The number of a content id in use.
    pub(super) fn number(&self, id: &ContentId) -> Option<u32> {
        let recs = &self.recs;
        self.by_id
            .find(self.hash(id), |&c| {
                recs.get(c as usize).is_some_and(|r| r.id == *id)
            })
            .copied()
    }

    /// The number of a content id, made (with an empty list) if it has none.
    pub(super) fn intern(&mut self, id: ContentId) -> u32 {
        if let Some(c) = self.number(&id) {
            return c;
        }
        let rec = ContentRec { id, head: NONE };
        let c = reuse_or_push(&mut self.recs, &mut self.free, rec);
        let hash = self.hash(&id);
        let (recs, hasher) = (&self.recs, &self.hasher);
        self.by_id.insert_unique(hash, c, |&c| {
            recs.get(c as usize).map_or(0, |r| hasher.hash_one(r.id))
        });
        c
    }

    /// Sets the head of content number `n`'s list (nothing if `n` is not a number).
    pub(super) fn set_head(&mut self, n: u32, head: Slot) {
        if let Some(c) = self.recs.get_mut(n as usize) {
            c.head = head;
        }
    }

    /// Frees content number `n` if its list is empty.
    pub(super) fn release_if_empty(&mut self, n: u32) {
        let Some(c) = self.recs.get(n as usize) else {
            return;
        };
        if c.head == NONE {
            let hash = self.hash(&c.id);
            if let Ok(e) = self.by_id.find_entry(hash, |&c| c == n) {
                e.remove();
            }
            self.free.push(n);
        }
    }

    /// Renumbers the heads of the files' lists after the files were renumbered.
    pub(super) fn renumber_heads(&mut self, m: impl Fn(Slot) -> Slot) {
        for c in &mut self.recs {
            c.head = m(c.head);
        }
    }

    /// Gives back spare capacity.
    pub(super) fn shrink(&mut self) {
        self.recs.shrink_to_fit();
        let (recs, hasher) = (&self.recs, &self.hasher);
        self.by_id
            .shrink_to_fit(|&c| recs.get(c as usize).map_or(0, |r| hasher.hash_one(r.id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ContentId {
        ContentId::from_bytes([n; 32])
    }

    #[test]
    fn interns_frees_empty_numbers_and_reuses_them() {
        let mut c = ContentIds::default();
        let a = c.intern(id(1));
        assert_eq!(c.intern(id(1)), a, "one number per id");
        let b = c.intern(id(2));
        assert_ne!(a, b);
        c.set_head(a, 5);
        c.release_if_empty(a);
        assert_eq!(c.number(&id(1)), Some(a), "a number with files stays");
        c.set_head(a, NONE);
        c.release_if_empty(a);
        assert_eq!(c.number(&id(1)), None);
        assert_eq!(c.intern(id(3)), a, "a freed number is reused");
        assert_eq!(c.get(a).map(|r| r.id), Some(id(3)));
        assert_eq!(c.numbers().count(), 2);
        c.release_if_empty(NONE);
        c.set_head(NONE, 1);
    }
}
