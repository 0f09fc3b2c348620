//! The path table of the name index: each live file found by a keyed 128-bit hash of (peer id,
//! path), so no path is kept.
//!
//! Invariants: the table holds exactly the live slots, each under the first word of its
//! record's key. The hash is keyed with a secret drawn at random, so no peer can aim for
//! collisions.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::records::FileRec;
use crate::index::chunked::Chunked;
use crate::index::postings::Slot;

/// Live slots by the keyed hash of their (peer id, path).
#[derive(Debug)]
pub(super) struct PathTable {
    /// The key of [`PathTable::key`].
    secret: [u8; 32],
    by_key: HashTable<Slot>,
}

impl Default for PathTable {
    fn default() -> PathTable {
        PathTable {
            secret: secret(),
            by_key: HashTable::new(),
        }
    }
}

/// 32 random bytes: from the operating system, or (should that fail) from std's randomly
/// keyed hasher.
fn secret() -> [u8; 32] {
    crate::identity::random_bytes().unwrap_or_else(|_| {
        let s = RandomState::new();
        let mut b = [0u8; 32];
        for (i, chunk) in b.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&s.hash_one(i).to_le_bytes());
        }
        b
    })
}

/// The first word of a slot's key: what the table hashes it by.
fn hash_of(files: &Chunked<FileRec>, s: Slot) -> u64 {
    files.get(s as usize).map_or(0, |r| r.key[0])
}

impl PathTable {
    /// The 128-bit BLAKE3 hash of (peer id, path) keyed with this table's secret.
    pub(super) fn key(&self, peer: u64, path: &str) -> [u64; 2] {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(&peer.to_le_bytes());
        h.update(path.as_bytes());
        let b = h.finalize();
        let b = b.as_bytes();
        let word = |i: usize| u64::from_le_bytes(std::array::from_fn(|j| b[i * 8 + j]));
        [word(0), word(1)]
    }

    /// The slot whose record has this key.
    pub(super) fn find(&self, key: [u64; 2], files: &Chunked<FileRec>) -> Option<Slot> {
        self.by_key
            .find(key[0], |&s| {
                files.get(s as usize).is_some_and(|r| r.key == key)
            })
            .copied()
    }

    /// Adds a slot whose record (in `files`) has this key, which no other slot has.
    pub(super) fn insert(&mut self, key: [u64; 2], slot: Slot, files: &Chunked<FileRec>) {
        self.by_key
            .insert_unique(key[0], slot, |&s| hash_of(files, s));
    }

    /// Takes out a slot whose record has this key.
    pub(super) fn remove(&mut self, key: [u64; 2], slot: Slot) {
        if let Ok(e) = self.by_key.find_entry(key[0], |&s| s == slot) {
            e.remove();
        }
    }

    /// Renumbers the slots (their keys unchanged).
    pub(super) fn renumber(&mut self, m: impl Fn(Slot) -> Slot) {
        for s in self.by_key.iter_mut() {
            *s = m(*s);
        }
    }

    /// Gives back spare capacity.
    pub(super) fn shrink(&mut self, files: &Chunked<FileRec>) {
        self.by_key.shrink_to_fit(|&s| hash_of(files, s));
    }

    /// How many slots the table holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::memory::records::DEAD;

    #[test]
    fn finds_inserted_slots_by_full_key_and_forgets_removed_ones() {
        let t0 = PathTable::default();
        let mut t = PathTable::default();
        assert_ne!(t.key(1, "a"), t.key(2, "a"), "the peer is hashed too");
        assert_ne!(
            t.key(1, "a"),
            t0.key(1, "a"),
            "each table has its own secret"
        );
        let mut files = Chunked::new(DEAD);
        let (a, b) = (t.key(1, "a"), t.key(1, "b"));
        // A key differing only in its second word lands in the same bucket.
        let twin = [a[0], a[1] ^ 1];
        for (slot, key) in [a, b, twin].into_iter().enumerate() {
            files.push(FileRec { key, ..DEAD });
            t.insert(key, slot as Slot, &files);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t.find(a, &files), t.find(b, &files), t.find(twin, &files)),
            (Some(0), Some(1), Some(2))
        );
        t.remove(a, 0);
        assert_eq!((t.find(a, &files), t.find(twin, &files)), (None, Some(2)));
        t.renumber(|s| s + 10);
        let mut moved = Chunked::new(DEAD);
        for _ in 0..11 {
            moved.push(DEAD);
        }
        moved.push(FileRec { key: b, ..DEAD });
        moved.push(FileRec { key: twin, ..DEAD });
        assert_eq!(
            (t.find(b, &moved), t.find(twin, &moved)),
            (Some(11), Some(12)),
            "renumbered, not re-keyed"
        );
        t.shrink(&moved);
        assert_eq!(t.len(), 2);
    }
}
