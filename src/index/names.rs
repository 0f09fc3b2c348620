//! `Names`: the file paths of the in-memory index, back to back in one byte arena. Each entry
//! is laid out `[directories and '/'][name][directory length: u16][stamp: i64]` and addressed by
//! the span of its name, so the name (what ranking compares) is read directly, the whole path
//! (what matching reads) is the bytes just before it, and the stamp (the file's modification
//! time) sits at a fixed place after it.
//!
//! Entries of removed files stay behind as counted garbage until [`Names::compact`] moves the
//! live ones together again.

use std::borrow::Cow;

/// Where a name lies in a [`Names`] arena (a 48-bit offset and a 16-bit length).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameSpan {
    lo: u32,
    hi: u16,
    len: u16,
}

impl NameSpan {
    /// The span of the empty name.
    pub const EMPTY: NameSpan = NameSpan {
        lo: 0,
        hi: 0,
        len: 0,
    };

    fn at(start: usize, len: usize) -> NameSpan {
        NameSpan {
            lo: start as u32,
            hi: (start >> 32) as u16,
            len: len as u16,
        }
    }

    fn start(self) -> usize {
        ((self.hi as usize) << 32) | self.lo as usize
    }

    /// The name's length in bytes.
    pub fn len(self) -> usize {
        self.len as usize
    }

    fn end(self) -> usize {
        self.start() + self.len()
    }
}

/// The paths of the in-memory index, back to back, with a count of the bytes of removed ones.
#[derive(Debug, Default)]
pub struct Names {
    bytes: Vec<u8>,
    garbage: usize,
}

/// Bytes after each name: the directory length (u16) and the stamp (i64).
const TAIL: usize = 2 + 8;

impl Names {
    /// The longest name, and the longest directory part, kept whole; longer ones (which the
    /// server refuses anyway) are cut at a character boundary.
    pub const MAX_LEN: usize = u16::MAX as usize;

    /// Appends a path (`/`-separated, the name last) with its stamp, and returns where its
    /// name lies.
    pub fn push(&mut self, stamp: i64, path: &str) -> NameSpan {
        let (dir, name) = match path.rfind('/') {
            Some(i) => path.split_at(i + 1),
            None => ("", path),
        };
        let (dir, name) = (cut(dir), cut(name));
        self.bytes.extend_from_slice(dir.as_bytes());
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes
            .extend_from_slice(&(dir.len() as u16).to_le_bytes());
        self.bytes.extend_from_slice(&stamp.to_le_bytes());
        NameSpan::at(start, name.len())
    }

    /// The directory length stored after a name.
    fn dir_len(&self, s: NameSpan) -> usize {
        self.bytes
            .get(s.end()..s.end() + 2)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u16::from_le_bytes(b) as usize)
    }

    /// Replaces the stamp of a name.
    pub fn set_stamp(&mut self, s: NameSpan, stamp: i64) {
        if let Some(b) = self.bytes.get_mut(s.end() + 2..s.end() + TAIL) {
            b.copy_from_slice(&stamp.to_le_bytes());
        }
    }

    /// The stamp pushed with a name (0 for [`NameSpan::EMPTY`] in an empty arena).
    pub fn stamp(&self, s: NameSpan) -> i64 {
        self.bytes
            .get(s.end() + 2..s.end() + TAIL)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_le_bytes)
    }

    /// The bytes of a name (UTF-8, as pushed).
    pub fn get(&self, s: NameSpan) -> &[u8] {
        self.bytes.get(s.start()..s.end()).unwrap_or(&[])
    }

    /// The bytes of the whole path a name ends (UTF-8, as pushed).
    pub fn path(&self, s: NameSpan) -> &[u8] {
        let from = s.start().saturating_sub(self.dir_len(s));
        self.bytes.get(from..s.end()).unwrap_or(&[])
    }

    /// A name as text (borrowed: names are pushed as `&str`).
    pub fn text(&self, s: NameSpan) -> Cow<'_, str> {
        String::from_utf8_lossy(self.get(s))
    }

    /// A path as text (borrowed: paths are pushed as `&str`).
    pub fn path_text(&self, s: NameSpan) -> Cow<'_, str> {
        String::from_utf8_lossy(self.path(s))
    }

    /// Counts an entry as garbage (its file is gone).
    pub fn release(&mut self, s: NameSpan) {
        self.garbage += self.dir_len(s) + s.len() + TAIL;
    }

    /// Bytes in the arena, garbage included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes of entries released since the last compaction.
    pub fn garbage(&self) -> usize {
        self.garbage
    }

    /// Whether the entries of `spans` lie in the arena in this order (so [`Names::compact`]
    /// can work in place).
    pub fn in_order(&self, spans: impl Iterator<Item = NameSpan>) -> bool {
        let mut end = 0;
        spans.into_iter().all(|s| {
            let ok = s.start().saturating_sub(self.dir_len(s)) >= end;
            end = s.end() + TAIL;
            ok
        })
    }

    /// Moves the live entries (`spans`) together in that order and updates the spans: in place
    /// when `in_order` (see [`Names::in_order`]), otherwise through a fresh arena.
    pub fn compact<'a>(&mut self, spans: impl Iterator<Item = &'a mut NameSpan>, in_order: bool) {
        if in_order {
            let mut at = 0;
            for s in spans {
                let dir = self.dir_len(*s);
                let from = s.start() - dir;
                self.bytes.copy_within(from..s.end() + TAIL, at);
                *s = NameSpan::at(at + dir, s.len());
                at += dir + s.len() + TAIL;
            }
            self.bytes.truncate(at);
            self.bytes.shrink_to_fit();
        } else {
            let mut fresh = Vec::with_capacity(self.bytes.len() - self.garbage);
            for s in spans {
                let dir = self.dir_len(*s);
                let from = s.start() - dir;
                let start = fresh.len() + dir;
                fresh.extend_from_slice(self.bytes.get(from..s.end() + TAIL).unwrap_or(&[]));
                *s = NameSpan::at(start, s.len());
            }
            self.bytes = fresh;
        }
        self.garbage = 0;
    }

    /// Gives back spare capacity.
    pub fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
    }
}

/// `s` cut to [`Names::MAX_LEN`] bytes at a character boundary.
fn cut(s: &str) -> &str {
    let mut len = s.len().min(Names::MAX_LEN);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    &s[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_in_place_or_through_a_copy() {
        let mut n = Names::default();
        let paths = ["a/alpha", "beta", "x/y/gamma", "délta"];
        let mut spans: Vec<Option<NameSpan>> = paths
            .iter()
            .enumerate()
            .map(|(i, s)| Some(n.push(i as i64 - 2, s)))
            .collect();
        if let Some(s) = spans[1].take() {
            n.release(s);
        }
        assert_eq!(n.garbage(), 4 + TAIL);
        assert!(n.in_order(spans.iter().flatten().copied()));
        n.compact(spans.iter_mut().flatten(), true);
        let live = "a/alphax/y/gammadélta".len() + 3 * TAIL;
        assert_eq!(n.len(), live);
        assert_eq!(n.garbage(), 0);
        let text: Vec<String> = spans.iter().flatten().map(|&s| n.text(s).into()).collect();
        assert_eq!(text, ["alpha", "gamma", "délta"]);
        let whole: Vec<String> = spans
            .iter()
            .flatten()
            .map(|&s| n.path_text(s).into())
            .collect();
        assert_eq!(whole, ["a/alpha", "x/y/gamma", "délta"]);
        let stamps: Vec<i64> = spans.iter().flatten().map(|&s| n.stamp(s)).collect();
        assert_eq!(stamps, [-2, 0, 1], "stamps move with their names");
        // Out of arena order: copied.
        spans.reverse();
        assert!(!n.in_order(spans.iter().flatten().copied()));
        n.compact(spans.iter_mut().flatten(), false);
        let whole: Vec<String> = spans
            .iter()
            .flatten()
            .map(|&s| n.path_text(s).into())
            .collect();
        assert_eq!(whole, ["délta", "x/y/gamma", "a/alpha"]);
        assert_eq!(n.len(), live);
        let stamps: Vec<i64> = spans.iter().flatten().map(|&s| n.stamp(s)).collect();
        assert_eq!(stamps, [1, 0, -2]);
        if let Some(s) = spans[1] {
            n.set_stamp(s, 77);
            assert_eq!((n.stamp(s), n.text(s).as_ref()), (77, "gamma"));
        }
    }

    #[test]
    fn overlong_names_are_cut_at_a_character_boundary() {
        let mut n = Names::default();
        let long = "é".repeat(40_000);
        let s = n.push(0, &long);
        assert!(s.len() <= Names::MAX_LEN);
        assert!(long.starts_with(n.text(s).as_ref()));
        assert_eq!(
            n.get(NameSpan::at(1 << 40, 3)),
            b"",
            "out of range reads nothing"
        );
        assert_eq!(n.path(NameSpan::at(1 << 40, 3)), b"");
    }
}
