//! Trigram postings of the in-memory index: per trigram, the increasing slots of the names that contain it, delta-coded as varints, and their intersection.
//!
//! Slots are only ever appended above every slot already listed (the index numbers new files
//! after all existing ones and renumbers only when it rebuilds every list), so a list is
//! sorted, has no duplicates, and costs about one byte per entry for common trigrams.

/// A file's number in the index.
pub type Slot = u32;

/// The slots of the names containing one trigram, in increasing order.
#[derive(Debug, Default)]
pub struct Postings {
    /// Gaps between successive `slot + 1` values (the first from 0), as LEB128 varints.
    bytes: Vec<u8>,
    /// The last slot appended, plus one (0 while empty).
    end: u32,
    len: u32,
}

impl Postings {
    /// How many slots the list holds.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Appends `slot`, which must be above every slot in the list; returns false (and leaves
    /// the list alone) when it is not.
    pub fn push(&mut self, slot: Slot) -> bool {
        let Some(next) = slot.checked_add(1).filter(|&n| n > self.end) else {
            return false;
        };
        let mut gap = next - self.end;
        if self.bytes.len() + 5 > self.bytes.capacity() {
            // Grow by half rather than double: lists are many and mostly long-lived.
            let more = (self.bytes.capacity() / 2).max(8);
            self.bytes.reserve_exact(more);
        }
        while gap >= 0x80 {
            self.bytes.push((gap as u8 & 0x7f) | 0x80);
            gap >>= 7;
        }
        self.bytes.push(gap as u8);
        self.end = next;
        self.len += 1;
        true
    }

    /// The slots in increasing order.
    pub fn iter(&self) -> Cursor<'_> {
        Cursor {
            bytes: &self.bytes,
            pos: 0,
            acc: 0,
        }
    }

    /// Gives back spare capacity.
    pub fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
    }
}

/// Reads a [`Postings`] list in order.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u32,
}

impl Iterator for Cursor<'_> {
    type Item = Slot;

    #[inline]
    fn next(&mut self) -> Option<Slot> {
        let mut gap: u32 = 0;
        let mut shift = 0;
        loop {
            let b = *self.bytes.get(self.pos)?;
            self.pos += 1;
            gap |= u32::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b < 0x80 {
                break;
            }
            shift += 7;
        }
        self.acc = self.acc.wrapping_add(gap);
        Some(self.acc.wrapping_sub(1))
    }
}

/// The slots present in every one of some lists, in increasing order.
pub struct Intersection<'a> {
    lead: Cursor<'a>,
    /// The other lists, each with the slot it stands on (`None` before the first read).
    rest: Vec<(Cursor<'a>, Option<Slot>)>,
}

impl<'a> Intersection<'a> {
    /// The intersection of `lists` (put the shortest first); empty when there are none.
    pub fn new(lists: &[&'a Postings]) -> Intersection<'a> {
        let mut it = lists.iter();
        let lead = it.next().map_or(
            Cursor {
                bytes: &[],
                pos: 0,
                acc: 0,
            },
            |p| p.iter(),
        );
        Intersection {
            lead,
            rest: it.map(|p| (p.iter(), None)).collect(),
        }
    }
}

impl Iterator for Intersection<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        'candidates: loop {
            let want = self.lead.next()?;
            for (cursor, at) in &mut self.rest {
                loop {
                    match *at {
                        Some(s) if s == want => break,
                        Some(s) if s > want => continue 'candidates,
                        _ => *at = Some(cursor.next()?),
                    }
                }
            }
            return Some(want);
        }
    }
}

/// Puts the distinct trigrams of `lower`'s bytes (sorted) into `out`.
pub fn trigrams_into(lower: &str, out: &mut Vec<[u8; 3]>) {
    out.clear();
    out.extend(lower.as_bytes().windows(3).map(|w| [w[0], w[1], w[2]]));
    out.sort_unstable();
    out.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(slots: &[Slot]) -> Postings {
        let mut p = Postings::default();
        for &s in slots {
            assert!(p.push(s));
        }
        p
    }

    #[test]
    fn round_trips_gaps_of_every_width() {
        let slots = [
            0,
            1,
            2,
            130,
            131,
            20_000,
            3_000_000,
            400_000_000,
            u32::MAX - 1,
        ];
        let p = list(&slots);
        assert_eq!(p.iter().collect::<Vec<_>>(), slots);
        assert_eq!(p.len(), slots.len());
        let mut p = list(&[5, 9]);
        assert!(!p.push(9), "not above the last");
        assert!(!p.push(3));
        assert!(!p.push(u32::MAX), "no slot number u32::MAX");
        assert_eq!(p.iter().collect::<Vec<_>>(), [5, 9]);
        assert_eq!(Postings::default().iter().next(), None);
    }

    #[test]
    fn intersects_sorted_lists() {
        let a = list(&(0..1000).step_by(3).collect::<Vec<_>>());
        let b = list(&(0..1000).step_by(5).collect::<Vec<_>>());
        let c = list(&[0, 15, 16, 30, 999]);
        let got: Vec<Slot> = Intersection::new(&[&c, &a, &b]).collect();
        assert_eq!(got, [0, 15, 30]);
        let got: Vec<Slot> = Intersection::new(&[&a, &b]).collect();
        assert_eq!(got, (0..1000).step_by(15).collect::<Vec<_>>());
        assert_eq!(Intersection::new(&[&a]).count(), a.len());
        assert_eq!(Intersection::new(&[]).next(), None);
        let empty = Postings::default();
        assert_eq!(Intersection::new(&[&empty, &a]).next(), None);
    }

    #[test]
    fn trigrams_are_distinct_and_sorted() {
        let mut t = Vec::new();
        trigrams_into("abcabc", &mut t);
        assert_eq!(t, [*b"abc", *b"bca", *b"cab"]);
    }
}
