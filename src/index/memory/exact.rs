//! Files by their lowercased name, one table entry per distinct name, for exact-name matches.
//!
//! Files of one name share an entry (a list of slots), so many files of one name (a million
//! `README.md`s, or one peer announcing a million `x`) cost no more to add or remove than
//! files of distinct names: identical hashes never pile up along one probe path.
//!
//! Every entry is found again by the name of its first slot, which is always a live file: a
//! single file's entry goes with it, and a list drops its dead first slots whenever its first
//! slot is removed. Slots removed from further down a list stay until they come first, or
//! until the renumbering rebuild of [`NameIndex`](super::NameIndex) makes the table anew;
//! lookups skip them.

use std::collections::VecDeque;

use hashbrown::HashTable;

use super::{Slot, reuse_or_push};
use crate::query::equals_ci;

/// Marks an entry that is an index into [`ExactNames::lists`] rather than a slot.
const LIST: u32 = 1 << 31;

#[derive(Debug, Default)]
pub(super) struct ExactNames {
    table: HashTable<u32>,
    lists: Vec<VecDeque<Slot>>,
    free_lists: Vec<u32>,
}

/// What the table needs to know of the index: the name of a live slot, and the hash of a
/// lowercased name.
pub(super) trait NameSource {
    fn live_name(&self, slot: Slot) -> Option<&[u8]>;
    fn lower_hash(&self, slot: Slot) -> u64;
}

impl ExactNames {
    fn first(&self, e: u32) -> Option<Slot> {
        if e & LIST == 0 {
            Some(e)
        } else {
            self.lists.get((e & !LIST) as usize)?.front().copied()
        }
    }

    /// Whether entry `e` is the entry of the name `lower`.
    fn is_named(&self, e: u32, lower: &str, ix: &impl NameSource) -> bool {
        self.first(e)
            .and_then(|s| ix.live_name(s))
            .is_some_and(|n| equals_ci(n, lower))
    }

    /// Adds a live `slot` named `lower` (lowercased), whose hash is `hash`. (A slot past
    /// 2³¹ is not indexed: no index holds that many.)
    pub fn insert(&mut self, hash: u64, slot: Slot, lower: &str, ix: &impl NameSource) {
        if slot & LIST != 0 {
            return;
        }
        let found = self
            .table
            .find(hash, |&e| self.is_named(e, lower, ix))
            .copied();
        match found {
            Some(e) if e & LIST != 0 => {
                if let Some(list) = self.lists.get_mut((e & !LIST) as usize) {
                    list.push_back(slot);
                }
            }
            Some(single) => {
                let list = VecDeque::from([single, slot]);
                let i = reuse_or_push(&mut self.lists, &mut self.free_lists, list);
                if let Ok(entry) = self.table.find_entry(hash, |&e| e == single) {
                    *entry.into_mut() = LIST | i;
                }
            }
            None => {
                let mut table = std::mem::take(&mut self.table);
                table.insert_unique(hash, slot, |&e| {
                    self.first(e).map_or(0, |s| ix.lower_hash(s))
                });
                self.table = table;
            }
        }
    }

    /// Takes out `slot` named `lower` (still live when this is called), whose hash is `hash`.
    pub fn remove(&mut self, hash: u64, slot: Slot, lower: &str, ix: &impl NameSource) {
        let Some(&e) = self.table.find(hash, |&e| self.is_named(e, lower, ix)) else {
            return;
        };
        let emptied = if e & LIST == 0 {
            e == slot
        } else {
            let Some(list) = self.lists.get_mut((e & !LIST) as usize) else {
                return;
            };
            if list.front() == Some(&slot) {
                list.pop_front();
                while list.front().is_some_and(|&s| ix.live_name(s).is_none()) {
                    list.pop_front();
                }
            }
            if list.is_empty() {
                *list = VecDeque::new();
                self.free_lists.push(e & !LIST);
                true
            } else {
                false
            }
        };
        if emptied && let Ok(entry) = self.table.find_entry(hash, |&x| x == e) {
            entry.remove();
        }
    }

    /// The slots named `lower`, live or not (the caller checks), in the order they came.
    pub fn named(&self, hash: u64, lower: &str, ix: &impl NameSource) -> Vec<Slot> {
        match self.table.find(hash, |&e| self.is_named(e, lower, ix)) {
            None => Vec::new(),
            Some(&e) if e & LIST == 0 => vec![e],
            Some(&e) => self
                .lists
                .get((e & !LIST) as usize)
                .map_or_else(Vec::new, |l| l.iter().copied().collect()),
        }
    }

    /// How many slots are named `lower` (live or not), without listing them.
    pub fn count(&self, hash: u64, lower: &str, ix: &impl NameSource) -> usize {
        match self.table.find(hash, |&e| self.is_named(e, lower, ix)) {
            None => 0,
            Some(&e) if e & LIST == 0 => 1,
            Some(&e) => self.lists.get((e & !LIST) as usize).map_or(0, |l| l.len()),
        }
    }

    /// Gives back spare capacity.
    pub fn shrink(&mut self, ix: &impl NameSource) {
        let mut table = std::mem::take(&mut self.table);
        table.shrink_to_fit(|&e| self.first(e).map_or(0, |s| ix.lower_hash(s)));
        self.table = table;
        for l in &mut self.lists {
            l.shrink_to_fit();
        }
    }
}
