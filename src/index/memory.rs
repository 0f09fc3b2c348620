//! `NameIndex`: what searches read, in memory beside the durable store: file names by trigram, files by content id, peer liveness.
//!
//! The store applies every change here right after committing it to SQLite (under its writer
//! lock), so a search sees exactly what was acknowledged.
//!
//! Files are fixed-size records in one vector, numbered by slot. A new file always takes a
//! slot after every existing one; removed files leave a dead record behind until a rebuild
//! renumbers the live ones. So the trigram postings ([`Postings`]) stay sorted and
//! delta-coded, and a query's candidates are the intersection of its trigrams' lists: exact
//! for 3-byte words, confirmed by a substring test for longer ones (postings of dead records
//! are skipped until the rebuild drops them).
//!
//! No path is kept: a file is found by a keyed 128-bit hash of (peer id, path). Names live in
//! one arena ([`Names`]); content ids and peers are interned to numbers, and the files of each
//! content id and of each peer are doubly linked through their records.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use bytes::Bytes;
use hashbrown::HashTable;

use self::exact::{ExactNames, NameSource};
use self::order::OrderCell;
pub use self::order::OrderKeys;
use self::rank::{Ranked, Ranker};
use super::chunked::Chunked;
use super::names::{NameSpan, Names};
use super::postings::{Intersection, Postings, Slot, trigrams_into};
use crate::content::ContentId;
use crate::protocol::{FileEntry, FileHit, PeerHit, PeerHitRef, ProtocolError};
use crate::query::{Query, contains_ci, lower};

mod exact;
mod name_keys;
mod order;
mod rank;
#[cfg(test)]
mod tests;

/// How [`NameIndex::search_by`] finds matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// The order for broad word queries, the postings for the rest.
    Auto,
    /// The rank order (should the order read more than the budget, the postings).
    #[cfg_attr(not(test), allow(dead_code))]
    Order,
    /// The postings of the words' trigrams.
    #[cfg_attr(not(test), allow(dead_code))]
    Postings,
}

/// What answering a word query from the postings reads.
#[derive(Debug, Clone, Copy)]
struct PostingsReads {
    /// At most how many files can match (names to read): the length of the shortest list of
    /// the words' trigrams (every file when no word has one).
    most: usize,
    /// Entries of the lists merged to find them.
    merged: usize,
}

/// How much of the index a search may read before it gives up.
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    /// Files read (a cache miss or two each): in rank order, those named exactly as the
    /// query, those added since the order was made, those whose signature matched and the
    /// other files of their content ids; a content id's files; the names the postings give.
    pub names: usize,
    /// Signatures of the rank order passed over (8 bytes each, read in order), or entries of
    /// the postings lists merged.
    pub signatures: usize,
}

impl Reads {
    /// No limit.
    pub const ALL: Reads = Reads {
        names: usize::MAX,
        signatures: usize::MAX,
    };
    /// What a search answered on a connection's own thread may read: about 50 µs of work,
    /// against the 10-20 µs it costs to hand a search to another thread and back.
    pub const QUICK: Reads = Reads {
        names: 512,
        signatures: 32_768,
    };
}

/// Most matching files one search groups and ranks; past it the reply says `truncated`.
pub const MAX_SEARCH_ROWS: usize = 200_000;

/// No slot (ends a list), no content, no peer; as a record's peer, marks a removed file.
const NONE: u32 = u32::MAX;

/// A trigram's list joins the intersection when it is at most this many times as long as
/// the shortest (longer ones cost more to read than confirming the candidates by name).
const INTERSECT_RATIO: usize = 8;

/// One cache line per file (aligned, so a search reading a record touches one line).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct FileRec {
    /// The keyed hash of (peer id, path): see [`NameIndex::path_key`].
    key: [u64; 2],
    size: u64,
    shared_at: i64,
    name: NameSpan,
    /// The peer's number ([`NONE`]: the file was removed).
    peer: u32,
    content: u32,
    /// Neighbours among the files of the same content id.
    cprev: Slot,
    cnext: Slot,
    /// Neighbours among the files of the same peer.
    pprev: Slot,
    pnext: Slot,
}

const _: () = assert!(std::mem::size_of::<FileRec>() == 64);

/// What fills unused records.
const DEAD: FileRec = FileRec {
    key: [0; 2],
    size: 0,
    shared_at: 0,
    name: NameSpan::EMPTY,
    peer: NONE,
    content: NONE,
    cprev: NONE,
    cnext: NONE,
    pprev: NONE,
    pnext: NONE,
};

impl FileRec {
    fn live(&self) -> bool {
        self.peer != NONE
    }

    /// Whether no other file has this content id.
    fn alone(&self) -> bool {
        self.cprev == NONE && self.cnext == NONE
    }
}

#[derive(Debug, Clone)]
pub struct PeerState {
    pub host: Box<str>,
    pub port: u16,
    pub last_seen: i64,
    pub online: bool,
}

#[derive(Debug)]
struct PeerRec {
    id: u64,
    /// `None` until registered (files may be loaded before, and stay invisible).
    state: Option<PeerState>,
    head: Slot,
}

#[derive(Debug)]
struct ContentRec {
    id: ContentId,
    /// The first file with this content id ([`NONE`]: the number is free).
    head: Slot,
}

#[derive(Debug)]
pub struct NameIndex {
    files: Chunked<FileRec>,
    live: usize,
    names: Names,
    /// The key of [`NameIndex::path_key`], drawn at random so no peer can aim for collisions.
    path_secret: [u8; 32],
    /// Live slots by their record's `key`.
    by_path: HashTable<Slot>,
    /// Files by their lowercased name (for exact matches).
    by_name: ExactNames,
    /// Files in rank order, for broad searches (see [`order`]).
    order: OrderCell,
    /// Bumped by every renumbering of the slots ([`NameIndex::rebuild`]).
    epoch: u64,
    contents: Vec<ContentRec>,
    free_contents: Vec<u32>,
    /// Content numbers by content id (hashed with `content_hasher`: ids come from peers).
    by_content: HashTable<u32>,
    content_hasher: RandomState,
    peers: Vec<PeerRec>,
    free_peers: Vec<u32>,
    peer_numbers: HashMap<u64, u32>,
    /// `have` bitmaps of files still downloading (few, so kept apart).
    haves: HashMap<Slot, Box<[u8]>>,
    trigrams: HashMap<[u8; 3], Postings>,
    postings: usize,
    /// Postings of removed files.
    stale: usize,
    /// Bumped by every change a search could see (see [`NameIndex::generation`]).
    generation: u64,
    /// The lease (ms): a heartbeat after a longer silence brings a peer back into results.
    lease_ms: i64,
    scratch: Vec<[u8; 3]>,
}

impl Default for NameIndex {
    fn default() -> NameIndex {
        NameIndex {
            files: Chunked::new(DEAD),
            live: 0,
            names: Names::default(),
            path_secret: secret(),
            by_path: HashTable::new(),
            by_name: ExactNames::default(),
            order: OrderCell::default(),
            epoch: 0,
            contents: Vec::new(),
            free_contents: Vec::new(),
            by_content: HashTable::new(),
            content_hasher: RandomState::new(),
            peers: Vec::new(),
            free_peers: Vec::new(),
            peer_numbers: HashMap::new(),
            haves: HashMap::new(),
            trigrams: HashMap::new(),
            postings: 0,
            stale: 0,
            generation: 0,
            lease_ms: 0,
            scratch: Vec::new(),
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

/// Whether `name` contains every word (lowercase), ignoring case.
fn all_in(name: &[u8], words: &[&str]) -> bool {
    words.iter().all(|w| contains_ci(name, w))
}

impl NameIndex {
    pub fn files(&self) -> usize {
        self.live
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
        self.peers
            .iter()
            .filter_map(|p| p.state.as_ref())
            .filter(|s| s.online && s.last_seen >= live_since)
            .map(|s| s.last_seen.saturating_add(self.lease_ms))
            .min()
    }

    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn rec(&self, slot: Slot) -> Option<&FileRec> {
        self.files.get(slot as usize).filter(|r| r.live())
    }

    fn name(&self, slot: Slot) -> &[u8] {
        self.rec(slot).map_or(&[], |r| self.names.get(r.name))
    }

    fn content_id(&self, slot: Slot) -> Option<ContentId> {
        let r = self.rec(slot)?;
        self.contents.get(r.content as usize).map(|c| c.id)
    }

    fn peer_state(&self, peer: u32) -> Option<&PeerState> {
        self.peers.get(peer as usize)?.state.as_ref()
    }

    /// The peer's number, made on first sight.
    fn peer_number(&mut self, id: u64) -> u32 {
        if let Some(&n) = self.peer_numbers.get(&id) {
            return n;
        }
        let rec = PeerRec {
            id,
            state: None,
            head: NONE,
        };
        let n = reuse_or_push(&mut self.peers, &mut self.free_peers, rec);
        self.peer_numbers.insert(id, n);
        n
    }

    /// Frees a peer's number once it has neither state nor files.
    fn release_peer_if_unused(&mut self, id: u64) {
        let Some(&n) = self.peer_numbers.get(&id) else {
            return;
        };
        if let Some(p) = self.peers.get(n as usize)
            && p.state.is_none()
            && p.head == NONE
        {
            self.peer_numbers.remove(&id);
            self.free_peers.push(n);
        }
    }

    pub fn set_peer(&mut self, id: u64, state: PeerState) {
        let n = self.peer_number(id);
        self.peers[n as usize].state = Some(state);
        self.changed();
    }

    pub fn heartbeat(&mut self, id: u64, now: i64) {
        let lease = self.lease_ms;
        let Some(p) = self
            .peer_numbers
            .get(&id)
            .and_then(|&n| self.peers.get_mut(n as usize))
            .and_then(|p| p.state.as_mut())
        else {
            return;
        };
        let was_live = p.online && lease > 0 && now - p.last_seen < lease;
        p.last_seen = now;
        p.online = true;
        if !was_live {
            self.changed();
        }
    }

    pub fn set_offline(&mut self, id: u64) {
        if let Some(p) = self
            .peer_numbers
            .get(&id)
            .and_then(|&n| self.peers.get_mut(n as usize))
            .and_then(|p| p.state.as_mut())
        {
            p.online = false;
        }
        self.changed();
    }

    /// Forgets a peer and its files.
    pub fn forget_peer(&mut self, id: u64) {
        self.remove_all(id);
        if let Some(p) = self
            .peer_numbers
            .get(&id)
            .and_then(|&n| self.peers.get_mut(n as usize))
        {
            p.state = None;
        }
        self.release_peer_if_unused(id);
        self.changed();
    }

    /// The 128-bit BLAKE3 hash of (peer id, path) keyed with this index's secret.
    fn path_key(&self, peer: u64, path: &str) -> [u64; 2] {
        let mut h = blake3::Hasher::new_keyed(&self.path_secret);
        h.update(&peer.to_le_bytes());
        h.update(path.as_bytes());
        let b = h.finalize();
        let b = b.as_bytes();
        let word = |i: usize| u64::from_le_bytes(std::array::from_fn(|j| b[i * 8 + j]));
        [word(0), word(1)]
    }

    fn find_path(&self, key: [u64; 2]) -> Option<Slot> {
        let files = &self.files;
        self.by_path
            .find(key[0], |&s| {
                files.get(s as usize).is_some_and(|r| r.key == key)
            })
            .copied()
    }

    fn content_hash(&self, id: &ContentId) -> u64 {
        self.content_hasher.hash_one(id)
    }

    /// The hash of a lowercased name in [`NameIndex::by_name`].
    fn name_hash(&self, lower: &str) -> u64 {
        self.content_hasher.hash_one(lower)
    }

    fn slot_name_hash(&self, slot: Slot) -> u64 {
        self.rec(slot)
            .map_or(0, |r| self.name_hash(&lower(&self.names.text(r.name))))
    }

    fn content_number(&self, id: &ContentId) -> Option<u32> {
        let contents = &self.contents;
        self.by_content
            .find(self.content_hash(id), |&c| {
                contents.get(c as usize).is_some_and(|r| r.id == *id)
            })
            .copied()
    }

    /// Puts `slot` at the head of its content id's list (the content interned if new).
    fn link_content(&mut self, slot: Slot, id: ContentId) {
        let c = match self.content_number(&id) {
            Some(c) => c,
            None => {
                let rec = ContentRec { id, head: NONE };
                let c = reuse_or_push(&mut self.contents, &mut self.free_contents, rec);
                let hash = self.content_hash(&id);
                let (contents, hasher) = (&self.contents, &self.content_hasher);
                self.by_content.insert_unique(hash, c, |&c| {
                    contents
                        .get(c as usize)
                        .map_or(0, |r| hasher.hash_one(r.id))
                });
                c
            }
        };
        let head = self.contents[c as usize].head;
        if let Some(r) = self.files.get_mut(head as usize) {
            r.cprev = slot;
        }
        let r = &mut self.files[slot as usize];
        r.content = c;
        r.cprev = NONE;
        r.cnext = head;
        self.contents[c as usize].head = slot;
    }

    /// Takes `slot` out of its content id's list (freeing the content number when it empties).
    fn unlink_content(&mut self, slot: Slot) {
        let r = self.files[slot as usize];
        if let Some(p) = self.files.get_mut(r.cprev as usize) {
            p.cnext = r.cnext;
        } else if let Some(c) = self.contents.get_mut(r.content as usize) {
            c.head = r.cnext;
        }
        if let Some(n) = self.files.get_mut(r.cnext as usize) {
            n.cprev = r.cprev;
        }
        let Some(c) = self.contents.get(r.content as usize) else {
            return;
        };
        if c.head == NONE {
            let hash = self.content_hash(&c.id);
            let number = r.content;
            if let Ok(e) = self.by_content.find_entry(hash, |&c| c == number) {
                e.remove();
            }
            self.free_contents.push(number);
        }
    }

    fn link_peer(&mut self, slot: Slot, peer: u32) {
        let head = self.peers[peer as usize].head;
        if let Some(r) = self.files.get_mut(head as usize) {
            r.pprev = slot;
        }
        let r = &mut self.files[slot as usize];
        r.peer = peer;
        r.pprev = NONE;
        r.pnext = head;
        self.peers[peer as usize].head = slot;
    }

    fn unlink_peer(&mut self, slot: Slot) {
        let r = self.files[slot as usize];
        if let Some(p) = self.files.get_mut(r.pprev as usize) {
            p.pnext = r.pnext;
        } else if let Some(p) = self.peers.get_mut(r.peer as usize) {
            p.head = r.pnext;
        }
        if let Some(n) = self.files.get_mut(r.pnext as usize) {
            n.pprev = r.pprev;
        }
    }

    fn drop_slot(&mut self, slot: Slot) {
        let Some(&rec) = self.rec(slot) else {
            return;
        };
        self.unlink_content(slot);
        self.unlink_peer(slot);
        if let Ok(e) = self.by_path.find_entry(rec.key[0], |&s| s == slot) {
            e.remove();
        }
        self.unindex_exact(slot);
        self.haves.remove(&slot);
        let mut t = std::mem::take(&mut self.scratch);
        trigrams_into(&lower(&self.names.text(rec.name)), &mut t);
        self.stale += t.len();
        self.scratch = t;
        self.names.release(rec.name);
        self.files[slot as usize].peer = NONE;
        self.live -= 1;
        self.changed();
    }

    /// Removes every file of a peer.
    pub fn remove_all(&mut self, peer: u64) {
        if let Some(&n) = self.peer_numbers.get(&peer) {
            let mut at = self.peers.get(n as usize).map_or(NONE, |p| p.head);
            while let Some(r) = self.rec(at) {
                let next = r.pnext;
                self.drop_slot(at);
                at = next;
            }
            self.release_peer_if_unused(peer);
        }
        self.maybe_rebuild();
    }

    pub fn remove(&mut self, peer: u64, path: &str) {
        if let Some(slot) = self.find_path(self.path_key(peer, path)) {
            self.drop_slot(slot);
            self.release_peer_if_unused(peer);
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
            if same_content && self.names.get(old.name) == f.name.as_bytes() {
                // Same name and content: the postings and the rank order stand; update the
                // record where it is. (A new content id takes a new slot: see [`order`].)
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
        let peer_number = self.peer_number(peer);
        self.files.push(FileRec {
            key,
            size: f.size,
            shared_at,
            name: self.names.push(&f.name),
            peer: NONE,
            content: NONE,
            cprev: NONE,
            cnext: NONE,
            pprev: NONE,
            pnext: NONE,
        });
        self.link_content(slot, f.content_id);
        self.link_peer(slot, peer_number);
        self.live += 1;
        let files = &self.files;
        self.by_path.insert_unique(key[0], slot, |&s| {
            files.get(s as usize).map_or(0, |r| r.key[0])
        });
        self.index_exact(slot);
        self.index_name(slot);
        if let Some(h) = &f.have {
            self.haves.insert(slot, h.clone().into_boxed_slice());
        }
        self.changed();
    }

    /// Adds `slot`'s name to the postings of its trigrams.
    fn index_name(&mut self, slot: Slot) {
        let Some(&r) = self.rec(slot) else {
            return;
        };
        let mut t = std::mem::take(&mut self.scratch);
        trigrams_into(&lower(&self.names.text(r.name)), &mut t);
        for tri in &t {
            if self.trigrams.entry(*tri).or_default().push(slot) {
                self.postings += 1;
            }
        }
        self.scratch = t;
    }

    /// Adds a live slot to [`NameIndex::by_name`].
    fn index_exact(&mut self, slot: Slot) {
        let mut by_name = std::mem::take(&mut self.by_name);
        let name = self.rec(slot).map_or(NameSpan::EMPTY, |r| r.name);
        let text = self.names.text(name);
        let lowered = lower(&text);
        by_name.insert(self.name_hash(&lowered), slot, &lowered, &*self);
        self.by_name = by_name;
    }

    /// Takes a slot (still live) out of [`NameIndex::by_name`].
    fn unindex_exact(&mut self, slot: Slot) {
        let mut by_name = std::mem::take(&mut self.by_name);
        let name = self.rec(slot).map_or(NameSpan::EMPTY, |r| r.name);
        let text = self.names.text(name);
        let lowered = lower(&text);
        by_name.remove(self.name_hash(&lowered), slot, &lowered, &*self);
        self.by_name = by_name;
    }

    /// Gives back spare capacity (after loading or a rebuild).
    pub fn shrink(&mut self) {
        for p in self.trigrams.values_mut() {
            p.shrink();
        }
        self.trigrams.shrink_to_fit();
        self.names.shrink();
        self.contents.shrink_to_fit();
        let files = &self.files;
        self.by_path
            .shrink_to_fit(|&s| files.get(s as usize).map_or(0, |r| r.key[0]));
        let mut by_name = std::mem::take(&mut self.by_name);
        by_name.shrink(&*self);
        self.by_name = by_name;
        let (contents, hasher) = (&self.contents, &self.content_hasher);
        self.by_content.shrink_to_fit(|&c| {
            contents
                .get(c as usize)
                .map_or(0, |r| hasher.hash_one(r.id))
        });
    }

    /// Loads a file as stored (with its stored `shared_at`).
    pub fn load(&mut self, peer: u64, f: &FileEntry, shared_at: i64) {
        self.upsert(peer, f, shared_at);
    }

    /// Renumbers the files and rebuilds the postings once removed files hold most of them
    /// (postings or records); otherwise compacts the names once garbage is most of them.
    pub fn maybe_rebuild(&mut self) {
        let dead = self.files.len() - self.live;
        if (self.stale >= 1024 && self.stale * 2 >= self.postings)
            || (dead >= 1024 && dead * 2 >= self.files.len())
        {
            self.rebuild();
        } else if self.names.garbage() >= 1 << 16 && self.names.garbage() * 2 >= self.names.len() {
            let in_order = Names::in_order(self.files.iter().filter(|r| r.live()).map(|r| r.name));
            let live = self
                .files
                .iter_mut()
                .filter(|r| r.live())
                .map(|r| &mut r.name);
            self.names.compact(live, in_order);
        }
    }

    /// Drops the dead records (live ones keep their order), the garbage names and the stale
    /// postings.
    fn rebuild(&mut self) {
        let mut map = vec![NONE; self.files.len()];
        let mut n: Slot = 0;
        for (old, r) in self.files.iter().enumerate() {
            if r.live() {
                map[old] = n;
                n += 1;
            }
        }
        let m = |s: Slot| map.get(s as usize).copied().unwrap_or(NONE);
        let mut w = 0;
        for old in 0..self.files.len() {
            let mut r = self.files[old];
            if !r.live() {
                continue;
            }
            r.cprev = m(r.cprev);
            r.cnext = m(r.cnext);
            r.pprev = m(r.pprev);
            r.pnext = m(r.pnext);
            self.files[w] = r;
            w += 1;
        }
        self.files.truncate(w);
        for c in &mut self.contents {
            c.head = m(c.head);
        }
        for p in &mut self.peers {
            p.head = m(p.head);
        }
        for s in self.by_path.iter_mut() {
            *s = m(*s);
        }
        self.by_name = ExactNames::default();
        self.epoch += 1;
        self.order.forget();
        self.haves = std::mem::take(&mut self.haves)
            .into_iter()
            .map(|(s, h)| (m(s), h))
            .collect();
        drop(map);
        let in_order = Names::in_order(self.files.iter().map(|r| r.name));
        self.names
            .compact(self.files.iter_mut().map(|r| &mut r.name), in_order);
        self.trigrams = HashMap::new();
        self.postings = 0;
        self.stale = 0;
        for slot in 0..self.files.len() as Slot {
            self.index_name(slot);
            self.index_exact(slot);
        }
        self.shrink();
    }

    /// Calls `found` with each live slot whose name contains every word, in slot order,
    /// until it returns false.
    fn each_match(&self, words: &[String], mut found: impl FnMut(Slot) -> bool) {
        let mut tris: Vec<[u8; 3]> = Vec::new();
        let mut t = Vec::new();
        for w in words.iter().filter(|w| w.len() >= 3) {
            trigrams_into(w, &mut t);
            tris.extend_from_slice(&t);
        }
        tris.sort_unstable();
        tris.dedup();
        if tris.is_empty() {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            for (slot, r) in self.files.iter().enumerate() {
                if r.live() && all_in(self.names.get(r.name), &words) && !found(slot as Slot) {
                    return;
                }
            }
            return;
        }
        let mut lists: Vec<(&[u8; 3], &Postings)> = Vec::with_capacity(tris.len());
        for tri in &tris {
            match self.trigrams.get(tri) {
                Some(p) => lists.push((tri, p)),
                None => return,
            }
        }
        lists.sort_by_key(|(_, p)| p.len());
        let shortest = lists[0].1.len();
        lists.retain(|(_, p)| p.len() <= shortest.saturating_mul(INTERSECT_RATIO));
        // A 3-byte word whose list is intersected needs no confirming.
        let confirm: Vec<&str> = words
            .iter()
            .filter(|w| !(w.len() == 3 && lists.iter().any(|(t, _)| t[..] == *w.as_bytes())))
            .map(String::as_str)
            .collect();
        let lists: Vec<&Postings> = lists.into_iter().map(|(_, p)| p).collect();
        let mut candidates = Intersection::new(&lists);
        let mut batch = [0; 32];
        loop {
            let mut n = 0;
            for (b, slot) in batch.iter_mut().zip(&mut candidates) {
                *b = slot;
                n += 1;
            }
            if n == 0 {
                return;
            }
            self.warm(&batch[..n]);
            for &slot in &batch[..n] {
                let Some(r) = self.rec(slot) else {
                    continue;
                };
                if (confirm.is_empty() || all_in(self.names.get(r.name), &confirm)) && !found(slot)
                {
                    return;
                }
            }
        }
    }

    /// Reads the records and names of `slots` in two tight loops, so that their cache misses
    /// overlap instead of each waiting behind the tests of the one before.
    pub(super) fn warm(&self, slots: &[Slot]) {
        let mut sum = 0u32;
        for &s in slots {
            sum = sum.wrapping_add(self.files.get(s as usize).map_or(0, |r| r.peer));
        }
        for &s in slots {
            let first = self
                .files
                .get(s as usize)
                .and_then(|r| self.names.get(r.name).first());
            sum = sum.wrapping_add(first.copied().map_or(0, u32::from));
        }
        std::hint::black_box(sum);
    }

    /// What reading the postings of these words' trigrams costs ([`NameIndex::each_match`]).
    fn postings_reads(&self, words: &[String]) -> PostingsReads {
        let mut t = Vec::new();
        let mut lens = Vec::new();
        for w in words.iter().filter(|w| w.len() >= 3) {
            trigrams_into(w, &mut t);
            for tri in &t {
                lens.push((*tri, self.trigrams.get(tri).map_or(0, Postings::len)));
            }
        }
        lens.sort_unstable();
        lens.dedup();
        let most = lens.iter().map(|&(_, n)| n).min().unwrap_or(self.live);
        let kept = |n: usize| n <= most.saturating_mul(INTERSECT_RATIO);
        PostingsReads {
            most,
            merged: lens.iter().map(|&(_, n)| n).filter(|&n| kept(n)).sum(),
        }
    }

    /// Files matching `query` shared by live peers (online and seen at or after `live_since`).
    ///
    /// A broad word query reads files in rank order and stops after the best `limit`
    /// ([`order`]); a narrow one, or one whose matches are mostly not live, reads the
    /// postings of its trigrams and ranks every match.
    pub fn search(
        &self,
        query: &Query<ContentId>,
        limit: usize,
        live_since: i64,
    ) -> (Vec<FileHit>, bool) {
        self.search_by(query, limit, live_since, Plan::Auto).hits()
    }

    /// [`NameIndex::search`] as the `SearchResults` payload, written straight from the index.
    pub fn search_encoded(
        &self,
        query: &Query<ContentId>,
        limit: usize,
        live_since: i64,
    ) -> Result<Bytes, ProtocolError> {
        self.search_by(query, limit, live_since, Plan::Auto)
            .encode()
    }

    /// [`NameIndex::search_encoded`] if it reads at most [`Reads::QUICK`] of the index, so
    /// it can be answered on a connection's own thread; `None` if it would read more.
    pub fn search_quick_encoded(
        &self,
        query: &Query<ContentId>,
        limit: usize,
        live_since: i64,
    ) -> Option<Result<Bytes, ProtocolError>> {
        let quick = Reads::QUICK;
        let found = match query {
            Query::Id(id) => {
                let head = self.group_head(id);
                if self.group_len(head, quick.names) > quick.names {
                    return None;
                }
                self.by_id(query, head, limit, live_since)
            }
            Query::Words { words, .. } => {
                match self.without_postings(query, words, limit, live_since, Plan::Auto, quick) {
                    Ok(found) => found,
                    Err(p) if p.most <= quick.names && p.merged <= quick.signatures => {
                        self.by_postings(query, limit, live_since)
                    }
                    Err(_) => return None,
                }
            }
        };
        Some(found.encode())
    }

    fn search_by(
        &self,
        query: &Query<ContentId>,
        limit: usize,
        live_since: i64,
        plan: Plan,
    ) -> Ranked<'_> {
        match query {
            Query::Id(id) => self.by_id(query, self.group_head(id), limit, live_since),
            Query::Words { words, .. } => {
                match self.without_postings(query, words, limit, live_since, plan, Reads::ALL) {
                    Ok(found) => found,
                    Err(_) => self.by_postings(query, limit, live_since),
                }
            }
        }
    }

    /// The first file of a content id's list ([`NONE`]: nobody has it).
    fn group_head(&self, id: &ContentId) -> Slot {
        self.content_number(id)
            .and_then(|c| self.contents.get(c as usize))
            .map_or(NONE, |c| c.head)
    }

    /// How many files are on the list starting at `head`, counting no further than `most + 1`.
    fn group_len(&self, mut head: Slot, most: usize) -> usize {
        let mut n = 0;
        while let Some(f) = self.rec(head)
            && n <= most
        {
            n += 1;
            head = f.cnext;
        }
        n
    }

    /// A content id's group: the files on its list.
    fn by_id(
        &self,
        query: &Query<ContentId>,
        head: Slot,
        limit: usize,
        live_since: i64,
    ) -> Ranked<'_> {
        let mut ranker = Ranker::new(self, query, limit, live_since);
        if head != NONE {
            ranker.add_group(head);
        }
        ranker.finish(false)
    }

    /// A broad word query read in rank order, within `reads`; otherwise `Err`: what the
    /// postings would read to answer it.
    fn without_postings(
        &self,
        query: &Query<ContentId>,
        words: &[String],
        limit: usize,
        live_since: i64,
        plan: Plan,
        reads: Reads,
    ) -> Result<Ranked<'_>, PostingsReads> {
        // Reading the order costs about (limit / share of files matching) signatures at a
        // nanosecond or two each, the postings about `most` names at a hundred or so: the
        // order wins once 64 · most² > limit · files.
        let postings = self.postings_reads(words);
        let most = postings.most;
        let broad = 64 * (most as u128).pow(2) > (limit as u128 + 1) * self.live as u128;
        let budget = match plan {
            Plan::Order => usize::MAX,
            Plan::Auto => most.max(limit),
            Plan::Postings => return Err(postings),
        };
        if plan == Plan::Order {
            self.refresh_order();
        }
        if (broad || plan == Plan::Order)
            && let Some(found) = self.search_in_order(query, limit, live_since, budget, reads)
        {
            return Ok(found);
        }
        Err(postings)
    }

    /// Every match of a word query, from the postings of its trigrams, ranked.
    fn by_postings(&self, query: &Query<ContentId>, limit: usize, live_since: i64) -> Ranked<'_> {
        let mut ranker = Ranker::new(self, query, limit, live_since);
        let mut matched = 0;
        let mut cut = false;
        let take = |slot: Slot| {
            if matched == MAX_SEARCH_ROWS {
                cut = true;
                return false;
            }
            matched += 1;
            ranker.add(slot);
            true
        };
        if let Query::Words { words, .. } = query {
            self.each_match(words, take);
        }
        ranker.finish(cut)
    }

    fn peer_hit(&self, slot: Slot) -> Option<PeerHit> {
        self.peer_hit_ref(slot).map(|p| PeerHit {
            peer_id: p.peer_id,
            host: p.host.to_string(),
            port: p.port,
            shared_at: p.shared_at,
            last_seen: p.last_seen,
            have: p.have.map(<[u8]>::to_vec),
        })
    }

    /// The peer of file `slot` as a search lists it (`None`: its peer is not known).
    fn peer_hit_ref(&self, slot: Slot) -> Option<PeerHitRef<'_>> {
        let r = self.rec(slot)?;
        let p = self.peers.get(r.peer as usize)?;
        let s = p.state.as_ref()?;
        Some(PeerHitRef {
            peer_id: p.id,
            host: &s.host,
            port: s.port,
            shared_at: r.shared_at,
            last_seen: s.last_seen,
            have: self.haves.get(&slot).map(|h| &h[..]),
        })
    }

    /// Whether [`NameIndex::peer_hit_ref`] lists file `slot`'s peer (without reading the rest).
    fn lists_peer(&self, slot: Slot) -> bool {
        self.rec(slot)
            .and_then(|r| self.peers.get(r.peer as usize))
            .is_some_and(|p| p.state.is_some())
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
