//! Files in rank order (content ids of more files first, then by name), so that a broad search reads its best matches first and stops after `limit` of them.
//!
//! A search ranks groups (the files of one content id) by exact whole-name match, then a name
//! holding every word, then live peers, then name. The number of files a content id has bounds
//! its live peers, so in this order every group after the cursor ranks at best with the
//! cursor's file count and name. Once the `limit`-th best group kept is an exact match, or
//! holds every word in its name and beats that, nothing later can enter the result. Exact
//! matches are looked up by name first ([`NameIndex::exact_named`]). A search that stops early
//! has not seen every match: its count is an estimate, the length of the shortest postings
//! list of its words' trigrams (the files that may hold them all).
//!
//! The order is a snapshot of the slots live when it was built: files removed since are dead
//! records (skipped), and files added since have slots at or past its `end` (read apart, and
//! the order rebuilt once they are many). A file never changes content id in place (a new
//! content id takes a new slot), so a group's files counted when the order was built stay an
//! upper bound of its members there. The renumbering rebuild of [`NameIndex`] drops the order.
//!
//! Making it: a search that finds the order missing or behind reads its keys
//! ([`NameIndex::order_wanted`], under the readers' lock, in one pass over the records, during
//! which writers wait), and the store sorts them on a thread of its own and installs the result
//! ([`NameIndex::install_order`]); meanwhile searches read the postings. Names are ordered by
//! their first 16 bytes only, so sorting needs only the keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hashbrown::HashSet;
use rayon::prelude::*;

use super::name_keys::name_key;
use super::rank::{Ranked, Ranker};
use super::{NameIndex, Reads, Slot};
use crate::content::ContentId;
use crate::query::{Query, equals_ci, lower};

/// Files added since the order was built that a search reads one by one before the order is
/// rebuilt: this many, plus one per [`TAIL_PER_ORDERED`] ordered files.
const TAIL_MIN: usize = if cfg!(test) { 64 } else { 4096 };
const TAIL_PER_ORDERED: usize = 64;

/// The trigrams of a lowercased path (or of query words) as a 64-bit Bloom signature: one
/// bit per trigram. A path can hold a word only if its signature has every bit of the word's.
fn signature(lower: &str) -> u64 {
    lowered_signature(lower.as_bytes(), |b| b)
}

fn lowered_signature(bytes: &[u8], fold: impl Fn(u8) -> u8) -> u64 {
    bytes.windows(3).fold(0, |sig, w| {
        let t = u64::from(fold(w[0])) | u64::from(fold(w[1])) << 8 | u64::from(fold(w[2])) << 16;
        sig | 1 << (t.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
    })
}

/// The [`signature`] of a stored path, lowercased as searches lowercase it.
fn name_signature(name: &[u8]) -> u64 {
    if name.is_ascii() {
        lowered_signature(name, |b| b.to_ascii_lowercase())
    } else {
        signature(&lower(&String::from_utf8_lossy(name)))
    }
}

/// A run of the order whose files' content ids had `files` files each.
#[derive(Debug, Clone, Copy)]
struct Class {
    files: u32,
    start: usize,
    end: usize,
}

/// The live slots below `end`, by (files of their content id, most first; first 16 bytes of
/// the name; slot), each with the [`signature`] of its path, so that a search tests most paths
/// without reading them. Names equal in their first 16 bytes are not ordered among themselves,
/// so a search stops only at a name whose first 16 bytes come after those of its last result.
#[derive(Debug, Default)]
pub struct RankOrder {
    /// The renumbering of [`NameIndex`] whose slots these are.
    epoch: u64,
    end: Slot,
    slots: Vec<Slot>,
    signatures: Vec<u64>,
    classes: Vec<Class>,
}

/// What a [`RankOrder`] is made of, read from the index under its lock; sorting it into the
/// order ([`OrderKeys::into_order`]) needs no lock.
pub struct OrderKeys {
    epoch: u64,
    end: Slot,
    /// (files of the content id reversed and the name's first 4 bytes, its next 8, its next
    /// 4, slot).
    keys: Vec<(u64, u64, u32, Slot)>,
    signatures: Vec<u64>,
}

/// The current [`RankOrder`], and whether a new one is being made.
#[derive(Debug, Default)]
pub(super) struct OrderCell {
    current: Mutex<Option<Arc<RankOrder>>>,
    building: AtomicBool,
}

impl OrderKeys {
    fn gather(ix: &NameIndex) -> OrderKeys {
        let mut count = vec![0u32; ix.contents.len()];
        for r in ix.files.iter().filter(|r| r.live()) {
            if let Some(c) = count.get_mut(r.content as usize) {
                *c += 1;
            }
        }
        // On every core: the readers' lock is held meanwhile, and writers wait for it.
        let live = |s: usize| ix.files.get(s).filter(|r| r.live());
        let signatures: Vec<u64> = (0..ix.files.len())
            .into_par_iter()
            .map(|s| live(s).map_or(0, |r| name_signature(ix.names.path(r.name))))
            .collect();
        let keys: Vec<(u64, u64, u32, Slot)> = (0..ix.files.len())
            .into_par_iter()
            .filter_map(|s| {
                let r = live(s)?;
                let files = count.get(r.content as usize).copied().unwrap_or(1);
                let key = name_key(ix.names.get(r.name));
                Some((
                    u64::from(u32::MAX - files) << 32 | (key >> 96) as u64,
                    (key >> 32) as u64,
                    key as u32,
                    s as Slot,
                ))
            })
            .collect();
        OrderKeys {
            epoch: ix.epoch,
            end: ix.files.len() as Slot,
            keys,
            signatures,
        }
    }

    /// Sorts the keys into the order (on every core).
    pub fn into_order(self) -> RankOrder {
        let OrderKeys {
            epoch,
            end,
            mut keys,
            signatures: by_slot,
        } = self;
        keys.par_sort_unstable();
        let files_of = |k: &(u64, u64, u32, Slot)| u32::MAX - (k.0 >> 32) as u32;
        let mut classes: Vec<Class> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match classes.last_mut() {
                Some(c) if c.files == files_of(k) => c.end = i + 1,
                _ => classes.push(Class {
                    files: files_of(k),
                    start: i,
                    end: i + 1,
                }),
            }
        }
        let slots: Vec<Slot> = keys.iter().map(|k| k.3).collect();
        drop(keys);
        let signatures = slots
            .iter()
            .map(|&s| by_slot.get(s as usize).copied().unwrap_or(0))
            .collect();
        RankOrder {
            epoch,
            end,
            slots,
            signatures,
            classes,
        }
    }
}

impl RankOrder {
    /// How many files it orders.
    #[cfg(test)]
    pub(super) fn files(&self) -> usize {
        self.slots.len()
    }

    fn tail_max(&self) -> usize {
        TAIL_MIN + self.slots.len() / TAIL_PER_ORDERED
    }
}

impl OrderCell {
    /// Drops the order (its slots were renumbered); one being made is refused when it comes.
    pub(super) fn forget(&mut self) {
        *self.current.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The order last installed, if any.
    pub(super) fn current(&self) -> Option<Arc<RankOrder>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl NameIndex {
    /// When the rank order is missing, or behind by many files, and no one is making a new
    /// one: what to make it of (the caller then owes [`NameIndex::install_order`] a call).
    pub fn order_wanted(&self) -> Option<OrderKeys> {
        let fresh = self.order.current().is_some_and(|o| {
            o.epoch == self.epoch && self.files.len() - o.end as usize <= o.tail_max()
        });
        if fresh || self.order.building.swap(true, Ordering::Acquire) {
            return None;
        }
        let started = std::time::Instant::now();
        let keys = OrderKeys::gather(self);
        tracing::debug!(
            "rank order: keys of {} files read in {:?}",
            keys.keys.len(),
            started.elapsed()
        );
        Some(keys)
    }

    /// Takes a new rank order (`None`: making it failed), unless the files were renumbered
    /// since its keys were read.
    pub fn install_order(&self, order: Option<RankOrder>) {
        if let Some(order) = order.filter(|o| o.epoch == self.epoch) {
            *self.order.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(order));
        }
        self.order.building.store(false, Ordering::Release);
    }

    /// Makes the rank order now, if it is wanted (tests, and callers with no thread to spare).
    pub fn refresh_order(&self) {
        if let Some(keys) = self.order_wanted() {
            self.install_order(Some(keys.into_order()));
        }
    }

    /// The live files named exactly `whole` (ignoring case).
    pub(super) fn exact_named(&self, whole: &str) -> Vec<Slot> {
        let mut out: Vec<Slot> = self
            .by_name
            .named(self.name_hash(whole), whole, self)
            .into_iter()
            .filter(|&s| {
                self.rec(s)
                    .is_some_and(|r| equals_ci(self.names.get(r.name), whole))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Answers a word query by reading files in rank order, or gives up (`None`) once it
    /// would read more than `budget` names in that order, or more than `reads` allows in all
    /// (files named exactly as the query, files added since the order was made, names read
    /// in order and the files of the groups they belong to; signatures passed over).
    pub(super) fn search_in_order(
        &self,
        query: &Query<ContentId>,
        offset: usize,
        limit: usize,
        live_since: i64,
        (budget, estimate): (usize, usize),
        reads: Reads,
    ) -> Option<Ranked<'_>> {
        let Query::Words { words, whole, .. } = query else {
            return None;
        };
        let order = self.order.current().filter(|o| o.epoch == self.epoch)?;
        let mut ranker = Ranker::new(self, query, offset, limit, live_since);
        ranker.limit_reads(reads.names);
        let mut done: HashSet<u32> = HashSet::with_capacity(limit.saturating_mul(2).min(4096));
        let take = |ranker: &mut Ranker, done: &mut HashSet<u32>, slot: Slot| {
            if let Some(r) = self.rec(slot)
                && done.insert(r.content)
            {
                ranker.add_group(slot);
            }
            !ranker.over()
        };
        if !whole.is_empty() {
            if !ranker.spend(self.by_name.count(self.name_hash(whole), whole, self)) {
                return None;
            }
            for slot in self.exact_named(whole) {
                if !take(&mut ranker, &mut done, slot) {
                    return None;
                }
            }
        }
        // Files added since the order was made are read one by one.
        if !ranker.spend(self.files.len().saturating_sub(order.end as usize)) {
            return None;
        }
        for slot in order.end..self.files.len() as Slot {
            if self
                .rec(slot)
                .is_some_and(|r| query.matches_facts(&self.facts(r)))
                && !take(&mut ranker, &mut done, slot)
            {
                return None;
            }
        }
        let wanted = words.iter().fold(0, |sig, w| sig | signature(w));
        let (mut read, mut passed) = (0, 0);
        for class in &order.classes {
            let slots = order.slots.get(class.start..class.end)?;
            let signatures = order.signatures.get(class.start..class.end)?;
            let mut rest = slots.iter().zip(signatures);
            loop {
                // The next files whose signatures match, their records and names read
                // together (their cache misses overlap), then tested one by one.
                let mut batch = [0 as Slot; 16];
                let mut n = 0;
                let mut passed_all = false;
                for (&slot, &sig) in rest.by_ref() {
                    passed += 1;
                    if passed > reads.signatures {
                        passed_all = true;
                        break;
                    }
                    if sig & wanted == wanted {
                        batch[n] = slot;
                        n += 1;
                        if n == batch.len() {
                            break;
                        }
                    }
                }
                self.warm(&batch[..n]);
                for &slot in &batch[..n] {
                    read += 1;
                    if read > budget || !ranker.spend(1) {
                        return None;
                    }
                    let Some(r) = self.rec(slot) else {
                        continue;
                    };
                    if !query.matches_facts(&self.facts(r)) || done.contains(&r.content) {
                        continue;
                    }
                    let name = self.names.get(r.name);
                    if ranker.stops_before(class.files, name) {
                        if ranker.group_is_live(slot) {
                            return Some(ranker.finish_estimated(estimate as u64));
                        }
                        if ranker.over() {
                            return None;
                        }
                        // Its other files are not read again.
                        done.insert(r.content);
                        continue;
                    }
                    if !take(&mut ranker, &mut done, slot) {
                        return None;
                    }
                }
                if passed_all {
                    return None;
                }
                if n == 0 {
                    break;
                }
            }
        }
        Some(ranker.finish(false))
    }
}
