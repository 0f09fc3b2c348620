//! `Chunked`: a vector kept in fixed-size chunks, so that growing it never moves, copies or frees what it already holds.
//!
//! The index's file records are over-aligned (one cache line each), and the allocator cannot
//! grow such a block in place: a plain `Vec` would copy all records and free the old block at
//! every doubling, and freeing blocks that large makes the C allocator serve later large
//! requests from its heap, where they fragment it.

use std::ops::{Index, IndexMut};

/// Elements per chunk.
const CHUNK: usize = 1024;

/// A vector of `Copy` records kept in chunks of [`CHUNK`] elements: growing it never moves
/// what it already holds.
#[derive(Debug)]
pub struct Chunked<T> {
    chunks: Vec<Box<[T]>>,
    len: usize,
    /// What fills the unused end of the last chunk.
    fill: T,
}

impl<T: Copy> Chunked<T> {
    /// An empty vector whose unused slots hold `fill`.
    pub fn new(fill: T) -> Chunked<T> {
        Chunked {
            chunks: Vec::new(),
            len: 0,
            fill,
        }
    }

    /// How many elements were pushed (and not truncated).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Element `i`, if below [`Chunked::len`].
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    /// Element `i` to change, if below [`Chunked::len`].
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    /// Appends an element.
    pub fn push(&mut self, v: T) {
        if self.len == self.chunks.len() * CHUNK {
            self.chunks.push(vec![self.fill; CHUNK].into_boxed_slice());
        }
        self.len += 1;
        let i = self.len - 1;
        if let Some(slot) = self.get_mut(i) {
            *slot = v;
        }
    }

    /// Keeps the first `len` elements (and the chunks they need).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        self.len = len;
        self.chunks.truncate(len.div_ceil(CHUNK));
        self.chunks.shrink_to_fit();
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }

    /// The elements in order, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks
            .iter_mut()
            .flat_map(|c| c.iter_mut())
            .take(self.len)
    }
}

impl<T: Copy> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(v) => v,
            None => panic!("index {i} out of {} elements", self.len),
        }
    }
}

impl<T: Copy> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(i) {
            Some(v) => v,
            None => panic!("index {i} out of {len} elements"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks_across_chunks() {
        let mut c = Chunked::new(0u32);
        for i in 0..(3 * CHUNK as u32 + 5) {
            c.push(i);
        }
        assert_eq!(c.len(), 3 * CHUNK + 5);
        assert_eq!(c[CHUNK + 7], CHUNK as u32 + 7);
        assert_eq!(c.get(3 * CHUNK + 5), None, "past the end");
        assert!(c.iter().copied().eq(0..(3 * CHUNK as u32 + 5)));
        c.truncate(CHUNK + 1);
        assert_eq!(c.chunks.len(), 2);
        assert_eq!(c.iter().count(), CHUNK + 1);
        c.push(99);
        c.push(100);
        assert_eq!(c[CHUNK + 2], 100);
        assert_eq!(c.iter().last(), Some(&100));
        for v in c.iter_mut() {
            *v += 1;
        }
        assert_eq!(c[0], 1);
        c.truncate(0);
        assert_eq!((c.len(), c.chunks.len()), (0, 0));
    }
}
