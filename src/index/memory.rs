//! `NameIndex`: what searches read, in memory beside the durable store: file paths by trigram, files by content id, peer liveness.
//!
//! The store applies every change here right after committing it to SQLite (under its writer
//! lock), so a search sees exactly what was acknowledged.
//!
//! Files are fixed-size records in one vector, numbered by slot. A new file always takes a
//! slot after every existing one; removed files leave a dead record behind until a rebuild
//! renumbers the live ones. So the trigram postings ([`Postings`](super::postings::Postings)) of
//! the lowercased paths stay sorted and delta-coded, and a query's candidates are the
//! intersection of its words' trigrams' lists, confirmed by testing the query on the file
//! (postings of dead records are skipped until the rebuild drops them).
//!
//! Each file's path within its share (the name last) lives in one arena ([`Names`]) with its
//! modification time; a file is found by a keyed 128-bit hash of (peer id, path). Content ids
//! and peers are interned to numbers, and the files of each content id and of each peer are
//! doubly linked through their records.
//!
//! `NameIndex` composes parts that each keep their own invariants (and tests):
//! [`records`] (the file records and their links), [`paths`] (the path table), [`peers`] (the
//! peer table), [`contents`] (the content-id interner), [`trigrams`] (the trigram index),
//! [`exact`] (the exact-name table), [`order`] (the rank order); [`lookup`] answers queries
//! from them, [`rank`] ranks the matches, [`rebuild`] renumbers and compacts. This file adds, replaces and removes files, keeping the parts in step.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use self::contents::ContentIds;
use self::exact::{ExactNames, NameSource};
#[cfg(test)]
use self::lookup::Plan;
pub use self::lookup::{Reads, SearchFound};
use self::order::OrderCell;
pub use self::order::OrderKeys;
use self::paths::PathTable;
pub use self::peers::PeerState;
use self::peers::PeerTable;
use self::records::{DEAD, FileRec};
use self::trigrams::TrigramIndex;
use super::chunked::Chunked;
use super::names::Names;
use super::postings::Slot;
use crate::content::ContentId;
use crate::protocol::FileEntry;
use crate::query::{FileFacts, lower};

mod contents;
mod exact;
mod lookup;
mod name_keys;
mod order;
mod paths;
mod peers;
mod rank;
mod rebuild;
mod records;
#[cfg(test)]
mod tests;
mod trigrams;

/// No slot (ends a list), no content, no peer; as a record's peer, marks a removed file.
const NONE: u32 = u32::MAX;

/// What the index holds, counted for the metrics ([`IndexStore::counts`](crate::index::IndexStore::counts)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCounts {
    /// Files, one per peer sharing it.
    pub rows: usize,
    /// Distinct content ids.
    pub files: usize,
    /// Peers remembered (registered at least once, not forgotten).
    pub peers_known: usize,
    /// Peers online and heard from within the lease.
    pub peers_live: usize,
}

/// What searches read, composed of the parts in this module's files: see the module doc.
#[derive(Debug)]
pub struct NameIndex {
    /// The file records by slot ([`records`]).
    files: Chunked<FileRec>,
    /// Live records among them.
    live: usize,
    /// The records' paths (stamped with their modification times).
    names: Names,
    /// Live slots by the keyed hash of (peer id, path) ([`paths`]).
    paths: PathTable,
    /// Files by their lowercased name (for exact matches).
    by_name: ExactNames,
    /// Files in rank order, for broad searches (see [`order`]).
    order: OrderCell,
    /// Keys the hashes of lowercased names in `by_name` (names come from peers).
    name_hasher: RandomState,
    /// Bumped by every renumbering of the slots ([`NameIndex::rebuild`]).
    epoch: u64,
    /// Content ids interned, with the heads of their files' lists ([`contents`]).
    contents: ContentIds,
    /// Peers interned, with their state and the heads of their files' lists ([`peers`]).
    peers: PeerTable,
    /// `have` bitmaps of files still downloading (few, so kept apart).
    haves: HashMap<Slot, Box<[u8]>>,
    /// The postings of the names' trigrams ([`trigrams`]).
    trigrams: TrigramIndex,
    /// Bumped by every change a search could see (see [`NameIndex::generation`]).
    generation: u64,
    /// The lease (ms): a heartbeat after a longer silence brings a peer back into results.
    lease_ms: i64,
}

impl Default for NameIndex {
    fn default() -> NameIndex {
        NameIndex {
            files: Chunked::new(DEAD),
            live: 0,
            names: Names::default(),
            paths: PathTable::default(),
            by_name: ExactNames::default(),
            order: OrderCell::default(),
            name_hasher: RandomState::new(),
            epoch: 0,
            contents: ContentIds::default(),
            peers: PeerTable::default(),
            haves: HashMap::new(),
            trigrams: TrigramIndex::default(),
            generation: 0,
            lease_ms: 0,
        }
    }
}

/// Puts `item` at a freed index of `items` if there is one, else at the end; returns its index.
fn reuse_or_push<T>(items: &mut Vec<T>, free: &mut Vec<u32>, item: T) -> u32 {
    match free.pop().filter(|&i| (i as usize) < items.len()) {
        Some(i) => {
            items[i as usize] = item;
            i
        }
        None => {
            items.push(item);
            (items.len() - 1) as u32
        }
    }
}

impl NameIndex {
    /// How many files the index holds (of every peer, live or not).
    pub fn files(&self) -> usize {
        self.live
    }

    /// How many files (rows), distinct content ids and peers (remembered, and live: online and
    /// heard from at or after `live_since`) the index holds, for the metrics.
    pub fn counts(&self, live_since: i64) -> IndexCounts {
        let (peers_known, peers_live) = self.peers.counts(live_since);
        IndexCounts {
            rows: self.live,
            files: self.contents.in_use(),
            peers_known,
            peers_live,
        }
    }

    /// A number that changes whenever a search's answer may have changed: files added,
    /// removed or renamed, peers registered, leaving, or heard from after their lease ran out.
    /// (A lease running out with time alone does not change it.)
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets the lease, so that heartbeats of live peers leave the generation alone.
    /// Until it is set, every heartbeat counts as a change.
    pub fn set_lease_ms(&mut self, lease_ms: i64) {
        self.lease_ms = lease_ms;
    }

    /// When the first lease of a peer live now (seen at or after `live_since`) runs out, in ms:
    /// until then, with the generation unchanged, every search answers the same.
    pub fn first_expiry(&self, live_since: i64) -> Option<i64> {
        self.peers.first_expiry(live_since, self.lease_ms)
    }

    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn rec(&self, slot: Slot) -> Option<&FileRec> {
        self.files.get(slot as usize).filter(|r| r.live())
    }

    /// The name of file `slot`: its path's last component.
    fn name(&self, slot: Slot) -> &[u8] {
        self.rec(slot).map_or(&[], |r| self.names.get(r.name))
    }

    /// The hash of a lowercased name in [`NameIndex::by_name`].
    fn name_hash(&self, lower: &str) -> u64 {
        self.name_hasher.hash_one(lower)
    }

    fn slot_name_hash(&self, slot: Slot) -> u64 {
        self.name_hash(&lower(&String::from_utf8_lossy(self.name(slot))))
    }

    /// What matching needs of a record.
    #[inline]
    fn facts(&self, r: &FileRec) -> FileFacts<'_> {
        FileFacts {
            path: self.names.path(r.name),
            size: r.size,
            mtime: self.names.stamp(r.name),
        }
    }

    fn content_id(&self, slot: Slot) -> Option<ContentId> {
        let r = self.rec(slot)?;
        self.contents.get(r.content).map(|c| c.id)
    }

    #[inline]
    fn peer_state(&self, peer: u32) -> Option<&PeerState> {
        self.peers.get(peer)?.state.as_ref()
    }

    /// Registers a peer (or updates it), making its files visible.
    pub fn set_peer(&mut self, id: u64, state: PeerState) {
        let n = self.peers.number_or_insert(id);
        self.peers.rec_mut(n).state = Some(state);
        self.changed();
    }

    /// Records that the peer was heard from at `now`.
    pub fn heartbeat(&mut self, id: u64, now: i64) {
        let lease = self.lease_ms;
        let Some(p) = self.peers.by_id_mut(id).and_then(|p| p.state.as_mut()) else {
            return;
        };
        let was_live = p.online && lease > 0 && now - p.last_seen < lease;
        p.last_seen = now;
        p.online = true;
        if !was_live {
            self.changed();
        }
    }

    /// Marks the peer offline: its files drop out of results until it registers again.
    pub fn set_offline(&mut self, id: u64) {
        if let Some(p) = self.peers.by_id_mut(id).and_then(|p| p.state.as_mut()) {
            p.online = false;
        }
        self.changed();
    }

    /// Forgets a peer and its files.
    pub fn forget_peer(&mut self, id: u64) {
        self.remove_all(id);
        if let Some(p) = self.peers.by_id_mut(id) {
            p.state = None;
        }
        self.peers.release_if_unused(id);
        self.changed();
    }

    /// The 128-bit BLAKE3 hash of (peer id, path) keyed with this index's secret.
    #[inline]
    fn path_key(&self, peer: u64, path: &str) -> [u64; 2] {
        self.paths.key(peer, path)
    }

    /// The live slot whose record has this key.
    #[inline]
    fn find_path(&self, key: [u64; 2]) -> Option<Slot> {
        self.paths.find(key, &self.files)
    }

    fn drop_slot(&mut self, slot: Slot) {
        let Some(&rec) = self.rec(slot) else {
            return;
        };
        self.unlink_content(slot);
        self.unlink_peer(slot);
        self.paths.remove(rec.key, slot);
        self.unindex_exact(slot);
        self.haves.remove(&slot);
        self.trigrams
            .removed(&lower(&self.names.path_text(rec.name)));
        self.names.release(rec.name);
        self.files[slot as usize].peer = NONE;
        self.live -= 1;
        self.changed();
    }

    /// Removes every file of a peer.
    pub fn remove_all(&mut self, peer: u64) {
        if let Some(n) = self.peers.number(peer) {
            let mut at = self.peers.get(n).map_or(NONE, |p| p.head);
            while let Some(r) = self.rec(at) {
                let next = r.pnext;
                self.drop_slot(at);
                at = next;
            }
            self.peers.release_if_unused(peer);
        }
        self.maybe_rebuild();
    }

    /// Removes the file at `path` of `peer`, if there is one.
    pub fn remove(&mut self, peer: u64, path: &str) {
        if let Some(slot) = self.find_path(self.path_key(peer, path)) {
            self.drop_slot(slot);
            self.peers.release_if_unused(peer);
        }
    }

    /// Adds or replaces a file; `shared_at` is kept when the content did not change.
    pub fn upsert(&mut self, peer: u64, f: &FileEntry, now: i64) {
        let key = self.path_key(peer, &f.path);
        let mut shared_at = now;
        if let Some(slot) = self.find_path(key) {
            let old = self.files[slot as usize];
            let same_content = self.content_id(slot) == Some(f.content_id);
            if same_content {
                shared_at = old.shared_at;
            }
            if same_content && self.names.path(old.name) == shown_path(f).as_bytes() {
                // Same path and content: the postings stand; update the record where it is.
                // (A new content id takes a new slot, so its lists stay in slot order.)
                self.names.set_stamp(old.name, f.mtime);
                let r = &mut self.files[slot as usize];
                r.size = f.size;
                r.shared_at = shared_at;
                match &f.have {
                    Some(h) => self.haves.insert(slot, h.clone().into_boxed_slice()),
                    None => self.haves.remove(&slot),
                };
                self.changed();
                return;
            }
            self.drop_slot(slot);
        }
        let Ok(slot) = Slot::try_from(self.files.len()) else {
            return;
        };
        if slot == NONE {
            return;
        }
        let peer_number = self.peers.number_or_insert(peer);
        self.files.push(FileRec {
            key,
            size: f.size,
            shared_at,
            name: self.names.push(f.mtime, &shown_path(f)),
            // Unlinked until the two calls below link it.
            ..DEAD
        });
        self.link_content(slot, f.content_id);
        self.link_peer(slot, peer_number);
        self.live += 1;
        self.paths.insert(key, slot, &self.files);
        self.index_exact(slot);
        self.index_name(slot);
        if let Some(h) = &f.have {
            self.haves.insert(slot, h.clone().into_boxed_slice());
        }
        self.changed();
    }

    /// Adds `slot`'s path to the postings of its trigrams.
    fn index_name(&mut self, slot: Slot) {
        let Some(&r) = self.rec(slot) else {
            return;
        };
        self.trigrams
            .add(slot, &lower(&self.names.path_text(r.name)));
    }

    /// Adds a live slot to [`NameIndex::by_name`].
    fn index_exact(&mut self, slot: Slot) {
        let mut by_name = std::mem::take(&mut self.by_name);
        let lowered = lower(&String::from_utf8_lossy(self.name(slot))).into_owned();
        by_name.insert(self.name_hash(&lowered), slot, &lowered, &*self);
        self.by_name = by_name;
    }

    /// Takes a slot (still live) out of [`NameIndex::by_name`].
    fn unindex_exact(&mut self, slot: Slot) {
        let mut by_name = std::mem::take(&mut self.by_name);
        let lowered = lower(&String::from_utf8_lossy(self.name(slot))).into_owned();
        by_name.remove(self.name_hash(&lowered), slot, &lowered, &*self);
        self.by_name = by_name;
    }

    /// Loads a file as stored (with its stored `shared_at`).
    pub fn load(&mut self, peer: u64, f: &FileEntry, shared_at: i64) {
        self.upsert(peer, f, shared_at);
    }
}

/// The path a file is listed under: the directory of its `path` with its `name` (the same as
/// `path` for every entry the index accepts, whose name is its path's last component).
fn shown_path(f: &FileEntry) -> std::borrow::Cow<'_, str> {
    match f.path.rsplit_once('/') {
        Some((_, last)) if last == f.name => f.path.as_str().into(),
        Some((dir, _)) => format!("{dir}/{}", f.name).into(),
        None => f.name.as_str().into(),
    }
}

impl NameSource for NameIndex {
    fn live_name(&self, slot: Slot) -> Option<&[u8]> {
        self.rec(slot).map(|r| self.names.get(r.name))
    }

    fn lower_hash(&self, slot: Slot) -> u64 {
        self.slot_name_hash(slot)
    }
}
