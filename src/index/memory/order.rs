//! Files in rank order (content ids of more files first, then by name), so that a broad search reads its best matches first and stops after `limit` of them.
//!
//! A search ranks groups (the files of one content id) by exact whole-name match, then live
//! peers, then name. The number of files a content id has bounds its live peers, so in this
//! order every group after the cursor ranks at best with the cursor's file count and name.
//! Once the `limit`-th best group kept beats that, nothing later can enter the result. Exact
//! matches are looked up by name first ([`NameIndex::exact_named`]).
//!
//! The order is a snapshot of the slots live when it was built: files removed since are dead
//! records (skipped), and files added since have slots at or past its `end` (read apart, and
//! the order rebuilt once they are many). A file never changes content id in place (a new
//! content id takes a new slot), so a group's files counted when the order was built stay an
//! upper bound of its members there. The renumbering rebuild of [`NameIndex`] drops the order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rayon::slice::ParallelSliceMut;

use super::rank::{Ranker, prefix};
use super::{NameIndex, Slot, all_in};
use crate::index::postings::{equals_ci, lower};
use crate::index::search::Query;
use crate::protocol::FileHit;

/// Files added since the order was built that a search reads one by one before the order is
/// rebuilt: this many, plus one per [`TAIL_PER_ORDERED`] ordered files.
const TAIL_MIN: usize = if cfg!(test) { 64 } else { 4096 };
const TAIL_PER_ORDERED: usize = 64;

/// The trigrams of a lowercased name (or of query words) as a 64-bit Bloom signature: one
/// bit per trigram. A name can hold a word only if its signature has every bit of the word's.
fn signature(lower: &str) -> u64 {
    lower.as_bytes().windows(3).fold(0, |sig, w| {
        let t = u64::from(w[0]) | u64::from(w[1]) << 8 | u64::from(w[2]) << 16;
        sig | 1 << (t.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
    })
}

/// A run of the order whose files' content ids had `files` files each.
#[derive(Debug, Clone, Copy)]
struct Class {
    files: u32,
    start: usize,
    end: usize,
}

/// The live slots below `end`, by (files of their content id, most first; name; slot), each
/// with the [`signature`] of its name, so that a search tests most names without reading them.
#[derive(Debug, Default)]
pub(super) struct RankOrder {
    end: Slot,
    slots: Vec<Slot>,
    signatures: Vec<u64>,
    classes: Vec<Class>,
}

/// The current [`RankOrder`]: built by the first search that needs it, while writers wait
/// (searches hold the index for reading), and replaced by a later search once many files
/// were added.
#[derive(Debug, Default)]
pub(super) struct OrderCell {
    current: Mutex<Option<Arc<RankOrder>>>,
    building: AtomicBool,
}

impl RankOrder {
    fn build(ix: &NameIndex) -> RankOrder {
        let end = ix.files.len() as Slot;
        let mut count = vec![0u32; ix.contents.len()];
        for r in ix.files.iter().filter(|r| r.live()) {
            if let Some(c) = count.get_mut(r.content as usize) {
                *c += 1;
            }
        }
        let mut keys: Vec<(u32, u64, Slot)> = ix
            .files
            .iter()
            .enumerate()
            .filter(|(_, r)| r.live())
            .map(|(s, r)| {
                let files = count.get(r.content as usize).copied().unwrap_or(1);
                (u32::MAX - files, prefix(ix.names.get(r.name)), s as Slot)
            })
            .collect();
        drop(count);
        keys.par_sort_unstable();
        for run in keys.chunk_by_mut(|a, b| a.0 == b.0 && a.1 == b.1) {
            if run.len() > 1 {
                run.sort_unstable_by(|a, b| ix.name(a.2).cmp(ix.name(b.2)).then(a.2.cmp(&b.2)));
            }
        }
        let mut classes: Vec<Class> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match classes.last_mut() {
                Some(c) if c.files == u32::MAX - k.0 => c.end = i + 1,
                _ => classes.push(Class {
                    files: u32::MAX - k.0,
                    start: i,
                    end: i + 1,
                }),
            }
        }
        let slots: Vec<Slot> = keys.iter().map(|k| k.2).collect();
        drop(keys);
        let signatures = slots
            .iter()
            .map(|&s| {
                ix.rec(s)
                    .map_or(0, |r| signature(&lower(&ix.names.text(r.name))))
            })
            .collect();
        RankOrder {
            end,
            slots,
            signatures,
            classes,
        }
    }

    fn tail_max(&self) -> usize {
        TAIL_MIN + self.slots.len() / TAIL_PER_ORDERED
    }
}

impl OrderCell {
    /// The newest order, built or rebuilt first when missing or behind by many files (unless
    /// another search is at it: then whatever there is).
    fn get(&self, ix: &NameIndex) -> Option<Arc<RankOrder>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let fresh = current
            .as_ref()
            .is_some_and(|o| ix.files.len() - o.end as usize <= o.tail_max());
        if fresh || self.building.swap(true, Ordering::Acquire) {
            return current;
        }
        let built = Arc::new(RankOrder::build(ix));
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(built.clone());
        self.building.store(false, Ordering::Release);
        crate::release_free_memory();
        Some(built)
    }
}

impl NameIndex {
    /// The live files named exactly `whole` (ignoring case).
    pub(super) fn exact_named(&self, whole: &str) -> Vec<Slot> {
        let mut out: Vec<Slot> = self
            .by_name
            .iter_hash(self.name_hash(whole))
            .copied()
            .filter(|&s| {
                self.rec(s)
                    .is_some_and(|r| equals_ci(self.names.get(r.name), whole))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Answers a word query by reading files in rank order, or gives up (`None`) once it
    /// has read more than `budget` files of the order.
    pub(super) fn search_in_order(
        &self,
        query: &Query,
        limit: usize,
        live_since: i64,
        budget: usize,
    ) -> Option<(Vec<FileHit>, bool)> {
        let Query::Words { words, whole } = query else {
            return None;
        };
        let order = self.order.get(self)?;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let mut ranker = Ranker::new(self, query, limit, live_since);
        let mut done: HashSet<u32> = HashSet::new();
        let take = |ranker: &mut Ranker, done: &mut HashSet<u32>, slot: Slot| {
            if let Some(r) = self.rec(slot)
                && done.insert(r.content)
            {
                ranker.add_group(slot);
            }
        };
        if !whole.is_empty() {
            for slot in self.exact_named(whole) {
                take(&mut ranker, &mut done, slot);
            }
        }
        for slot in order.end..self.files.len() as Slot {
            if self
                .rec(slot)
                .is_some_and(|r| all_in(self.names.get(r.name), &words))
            {
                take(&mut ranker, &mut done, slot);
            }
        }
        let wanted = words.iter().fold(0, |sig, w| sig | signature(w));
        let mut read = 0;
        for class in &order.classes {
            let slots = order.slots.get(class.start..class.end)?;
            let signatures = order.signatures.get(class.start..class.end)?;
            for (&slot, &sig) in slots.iter().zip(signatures) {
                if sig & wanted != wanted {
                    continue;
                }
                read += 1;
                if read > budget {
                    return None;
                }
                let Some(r) = self.rec(slot) else {
                    continue;
                };
                let name = self.names.get(r.name);
                if !all_in(name, &words) || done.contains(&r.content) {
                    continue;
                }
                if ranker.stops_before(class.files, name) {
                    if ranker.group_is_live(slot) {
                        return Some(ranker.finish(true));
                    }
                    continue;
                }
                take(&mut ranker, &mut done, slot);
            }
        }
        Some(ranker.finish(false))
    }
}
