//! `Names`: the file paths of the in-memory index, back to back in one byte arena, each addressed by an offset and a length, with an 8-byte stamp (the file's modification time) before each.
//!
//! Names of removed files stay behind as counted garbage until [`Names::compact`] moves the
//! live names together again.

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

/// The names of the in-memory index, back to back, with a count of the bytes of removed ones.
#[derive(Debug, Default)]
pub struct Names {
    bytes: Vec<u8>,
    garbage: usize,
}

impl Names {
    /// The longest name kept whole; longer ones (which the server refuses anyway) are cut at
    /// a character boundary.
    pub const MAX_LEN: usize = u16::MAX as usize;

    /// Bytes of the stamp before each name.
    const STAMP: usize = 8;

    /// Appends a name (cut to [`Names::MAX_LEN`] bytes) after its stamp and returns where the
    /// name lies.
    pub fn push(&mut self, stamp: i64, name: &str) -> NameSpan {
        let mut len = name.len().min(Self::MAX_LEN);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        self.bytes.extend_from_slice(&stamp.to_le_bytes());
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&name.as_bytes()[..len]);
        NameSpan::at(start, len)
    }

    /// Replaces the stamp of a name.
    pub fn set_stamp(&mut self, s: NameSpan, stamp: i64) {
        if let Some(b) = s
            .start()
            .checked_sub(Self::STAMP)
            .and_then(|at| self.bytes.get_mut(at..s.start()))
        {
            b.copy_from_slice(&stamp.to_le_bytes());
        }
    }

    /// The stamp pushed with a name (0 for [`NameSpan::EMPTY`]).
    pub fn stamp(&self, s: NameSpan) -> i64 {
        s.start()
            .checked_sub(Self::STAMP)
            .and_then(|at| self.bytes.get(at..s.start()))
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_le_bytes)
    }

    /// The bytes of a name (UTF-8, as pushed).
    pub fn get(&self, s: NameSpan) -> &[u8] {
        self.bytes.get(s.start()..s.end()).unwrap_or(&[])
    }

    /// A name as text (borrowed: names are pushed as `&str`).
    pub fn text(&self, s: NameSpan) -> Cow<'_, str> {
        String::from_utf8_lossy(self.get(s))
    }

    /// Counts a name as garbage (its file is gone).
    pub fn release(&mut self, s: NameSpan) {
        self.garbage += Self::STAMP + s.len();
    }

    /// Bytes in the arena, garbage included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes of names released since the last compaction.
    pub fn garbage(&self) -> usize {
        self.garbage
    }

    /// Whether `spans` lie in the arena in this order (so [`Names::compact`] can work in place).
    pub fn in_order(spans: impl Iterator<Item = NameSpan>) -> bool {
        let mut end = 0;
        spans.into_iter().all(|s| {
            let ok = s.start() >= end + Self::STAMP;
            end = s.end();
            ok
        })
    }

    /// Moves the live names (`spans`) together in that order and updates the spans: in place
    /// when `in_order` (see [`Names::in_order`]), otherwise through a fresh arena.
    pub fn compact<'a>(&mut self, spans: impl Iterator<Item = &'a mut NameSpan>, in_order: bool) {
        if in_order {
            let mut at = 0;
            for s in spans {
                self.bytes.copy_within(s.start() - Self::STAMP..s.end(), at);
                *s = NameSpan::at(at + Self::STAMP, s.len());
                at += Self::STAMP + s.len();
            }
            self.bytes.truncate(at);
            self.bytes.shrink_to_fit();
        } else {
            let mut fresh = Vec::with_capacity(self.bytes.len() - self.garbage);
            for s in spans {
                fresh.extend_from_slice(&self.stamp(*s).to_le_bytes());
                let start = fresh.len();
                fresh.extend_from_slice(self.get(*s));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_in_place_or_through_a_copy() {
        let mut n = Names::default();
        let mut spans: Vec<Option<NameSpan>> = ["alpha", "beta", "gamma", "délta"]
            .iter()
            .enumerate()
            .map(|(i, s)| Some(n.push(i as i64 - 2, s)))
            .collect();
        if let Some(s) = spans[1].take() {
            n.release(s);
        }
        assert_eq!(n.garbage(), 8 + 4);
        assert!(Names::in_order(spans.iter().flatten().copied()));
        n.compact(spans.iter_mut().flatten(), true);
        assert_eq!(n.len(), 3 * 8 + "alphagammadélta".len());
        let stamps: Vec<i64> = spans.iter().flatten().map(|&s| n.stamp(s)).collect();
        assert_eq!(stamps, [-2, 0, 1], "stamps move with their names");
        assert_eq!(n.garbage(), 0);
        let text: Vec<String> = spans.iter().flatten().map(|&s| n.text(s).into()).collect();
        assert_eq!(text, ["alpha", "gamma", "délta"]);
        // Out of arena order: copied.
        spans.reverse();
        assert!(!Names::in_order(spans.iter().flatten().copied()));
        n.compact(spans.iter_mut().flatten(), false);
        let text: Vec<String> = spans.iter().flatten().map(|&s| n.text(s).into()).collect();
        assert_eq!(text, ["délta", "gamma", "alpha"]);
        assert_eq!(n.len(), 3 * 8 + "alphagammadélta".len());
        let stamps: Vec<i64> = spans.iter().flatten().map(|&s| n.stamp(s)).collect();
        assert_eq!(stamps, [1, 0, -2]);
        assert_eq!(n.stamp(NameSpan::EMPTY), 0);
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
    }
}
