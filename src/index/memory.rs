//! `NameIndex`: what searches read, in memory beside the durable store: file names by trigram, files by content id, peer liveness.
//!
//! The store applies every change here right after committing it to SQLite (under its writer
//! lock), so a search sees exactly what was acknowledged. Names are found through trigram
//! postings: the candidates of a query are the smallest posting list among its words'
//! trigrams, each confirmed by a case-insensitive substring test. Postings are append-only;
//! entries of removed or renamed files go stale and are skipped (the confirmation rejects
//! them) until a rebuild drops them.

use std::collections::HashMap;

use super::search::Query;
use crate::content::ContentId;
use crate::protocol::{FileEntry, FileHit, PeerHit};

type Slot = u32;

/// Most matching files one search groups and ranks; past it the reply says `truncated`.
pub const MAX_SEARCH_ROWS: usize = 200_000;

#[derive(Debug)]
struct FileRec {
    peer: u64,
    name: Box<str>,
    size: u64,
    content: ContentId,
    shared_at: i64,
    /// The next file with the same content id ([`NONE`] ends the list).
    next: Slot,
}

/// No slot: the end of a content id's list.
const NONE: Slot = Slot::MAX;

#[derive(Debug, Clone)]
pub struct PeerState {
    pub host: Box<str>,
    pub port: u16,
    pub last_seen: i64,
    pub online: bool,
}

#[derive(Debug, Default)]
pub struct NameIndex {
    files: Vec<Option<FileRec>>,
    free: Vec<Slot>,
    by_peer: HashMap<u64, HashMap<Box<str>, Slot>>,
    /// The first file of each content id; the rest follow through [`FileRec::next`].
    by_content: HashMap<ContentId, Slot>,
    /// `have` bitmaps of files still downloading (few, so kept apart).
    haves: HashMap<Slot, Box<[u8]>>,
    trigrams: HashMap<[u8; 3], Vec<Slot>>,
    postings: usize,
    stale: usize,
    peers: HashMap<u64, PeerState>,
    /// Bumped by every change a search could see (see [`NameIndex::generation`]).
    generation: u64,
    /// The lease (ms): a heartbeat after a longer silence brings a peer back into results.
    lease_ms: i64,
}

/// The distinct trigrams of a lowercased string's bytes.
fn trigrams_of(lower: &str) -> Vec<[u8; 3]> {
    let mut t: Vec<[u8; 3]> = lower
        .as_bytes()
        .windows(3)
        .map(|w| [w[0], w[1], w[2]])
        .collect();
    t.sort_unstable();
    t.dedup();
    t
}

fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(s)
    } else if s.is_ascii() {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Owned(s.to_lowercase())
    }
}

/// Whether `name` contains `needle` (already lowercase), ignoring case.
fn contains_ci(name: &str, needle: &str) -> bool {
    if name.is_ascii() && needle.is_ascii() {
        let (h, n) = (name.as_bytes(), needle.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        name.to_lowercase().contains(needle)
    }
}

impl NameIndex {
    pub fn files(&self) -> usize {
        self.files.len() - self.free.len()
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

    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    pub fn set_peer(&mut self, id: u64, state: PeerState) {
        self.peers.insert(id, state);
        self.changed();
    }

    pub fn heartbeat(&mut self, id: u64, now: i64) {
        let lease = self.lease_ms;
        let Some(p) = self.peers.get_mut(&id) else {
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
        if let Some(p) = self.peers.get_mut(&id) {
            p.online = false;
        }
        self.changed();
    }

    /// Forgets a peer and its files.
    pub fn forget_peer(&mut self, id: u64) {
        self.remove_all(id);
        self.peers.remove(&id);
        self.changed();
    }

    fn drop_slot(&mut self, slot: Slot) {
        if let Some(rec) = self.files.get_mut(slot as usize).and_then(Option::take) {
            // Unlink from its content id's list.
            match self.by_content.get(&rec.content).copied() {
                Some(head) if head == slot => {
                    if rec.next == NONE {
                        self.by_content.remove(&rec.content);
                    } else {
                        self.by_content.insert(rec.content, rec.next);
                    }
                }
                Some(mut at) => {
                    let mut guard = self.files.len();
                    while at != NONE && guard > 0 {
                        guard -= 1;
                        let Some(Some(r)) = self.files.get_mut(at as usize) else {
                            break;
                        };
                        if r.next == slot {
                            r.next = rec.next;
                            break;
                        }
                        at = r.next;
                    }
                }
                None => {}
            }
            self.haves.remove(&slot);
            self.stale += trigrams_of(&lower(&rec.name)).len();
            self.free.push(slot);
            self.changed();
        }
    }

    /// Removes every file of a peer.
    pub fn remove_all(&mut self, peer: u64) {
        if let Some(paths) = self.by_peer.remove(&peer) {
            for (_, slot) in paths {
                self.drop_slot(slot);
            }
        }
        self.maybe_rebuild();
    }

    pub fn remove(&mut self, peer: u64, path: &str) {
        if let Some(slot) = self.by_peer.get_mut(&peer).and_then(|m| m.remove(path)) {
            self.drop_slot(slot);
        }
    }

    /// Adds or replaces a file; `shared_at` is kept when the content did not change.
    pub fn upsert(&mut self, peer: u64, f: &FileEntry, now: i64) {
        let existing = self
            .by_peer
            .get(&peer)
            .and_then(|m| m.get(f.path.as_str()))
            .copied();
        let mut shared_at = now;
        if let Some(slot) = existing {
            if let Some(old) = self.files.get(slot as usize).and_then(Option::as_ref)
                && old.content == f.content_id
            {
                shared_at = old.shared_at;
            }
            self.drop_slot(slot);
        }
        let rec = FileRec {
            peer,
            name: f.name.as_str().into(),
            size: f.size,
            content: f.content_id,
            shared_at,
            next: self.by_content.get(&f.content_id).copied().unwrap_or(NONE),
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.files[s as usize] = Some(rec);
                s
            }
            None => {
                self.files.push(Some(rec));
                (self.files.len() - 1) as Slot
            }
        };
        for t in trigrams_of(&lower(&f.name)) {
            self.trigrams.entry(t).or_default().push(slot);
            self.postings += 1;
        }
        self.by_content.insert(f.content_id, slot);
        if let Some(h) = &f.have {
            self.haves.insert(slot, h.clone().into_boxed_slice());
        }
        self.by_peer
            .entry(peer)
            .or_default()
            .insert(f.path.as_str().into(), slot);
        self.changed();
    }

    /// Every file with content id `id`.
    fn same_content(&self, id: &ContentId) -> Vec<Slot> {
        let mut out = Vec::new();
        let mut at = self.by_content.get(id).copied().unwrap_or(NONE);
        while at != NONE && out.len() < self.files.len() {
            out.push(at);
            at = self
                .files
                .get(at as usize)
                .and_then(Option::as_ref)
                .map_or(NONE, |r| r.next);
        }
        out
    }

    /// Gives back the spare capacity of the postings (after loading or a rebuild).
    pub fn shrink(&mut self) {
        for v in self.trigrams.values_mut() {
            v.shrink_to_fit();
        }
        self.trigrams.shrink_to_fit();
        self.files.shrink_to_fit();
    }

    /// Loads a file as stored (with its stored `shared_at`).
    pub fn load(&mut self, peer: u64, f: &FileEntry, shared_at: i64) {
        self.upsert(peer, f, shared_at);
    }

    /// Drops stale postings once they are most of the postings.
    pub fn maybe_rebuild(&mut self) {
        if self.stale < 1024 || self.stale * 2 < self.postings {
            return;
        }
        self.trigrams.clear();
        self.postings = 0;
        for (slot, rec) in self.files.iter().enumerate() {
            if let Some(rec) = rec {
                for t in trigrams_of(&lower(&rec.name)) {
                    self.trigrams.entry(t).or_default().push(slot as Slot);
                    self.postings += 1;
                }
            }
        }
        self.shrink();
        self.stale = 0;
    }

    /// Candidate slots for a word query: the smallest posting list of any trigram of any word
    /// of 3 bytes or more; `None` when no word is that long (every file is a candidate).
    fn candidates(&self, words: &[String]) -> Option<&[Slot]> {
        let mut best: Option<&[Slot]> = None;
        for w in words.iter().filter(|w| w.len() >= 3) {
            for t in trigrams_of(w) {
                let list = self.trigrams.get(&t).map(Vec::as_slice).unwrap_or(&[]);
                if best.is_none_or(|b| list.len() < b.len()) {
                    best = Some(list);
                }
            }
        }
        best
    }

    /// Files matching `query` shared by live peers (online and seen at or after `live_since`).
    pub fn search(&self, query: &Query, limit: usize, live_since: i64) -> (Vec<FileHit>, bool) {
        let live = |peer: u64| {
            self.peers
                .get(&peer)
                .filter(|p| p.online && p.last_seen >= live_since)
        };
        let mut slots: Vec<Slot> = match query {
            Query::Id(id) => self.same_content(id),
            Query::Words { words, .. } => {
                let test = |slot: &Slot| {
                    self.files
                        .get(*slot as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(|r| words.iter().all(|w| contains_ci(&r.name, w)))
                };
                match self.candidates(words) {
                    Some(list) => list.iter().copied().filter(test).collect(),
                    None => (0..self.files.len() as Slot).filter(test).collect(),
                }
            }
        };
        slots.sort_unstable();
        slots.dedup();
        let cut = slots.len() > MAX_SEARCH_ROWS;
        slots.truncate(MAX_SEARCH_ROWS);
        let (files, truncated) = self.rank(slots, query, limit, &live);
        (files, truncated || cut)
    }

    /// Groups matching slots by content id and ranks the groups as the index does (exact name
    /// first, then more live peers, then name), without copying anything but the `limit` kept.
    /// One flat list of (group, peer, slot) members is sorted once; no per-group allocation.
    fn rank<'a>(
        &'a self,
        slots: Vec<Slot>,
        query: &Query,
        limit: usize,
        live: &dyn Fn(u64) -> Option<&'a PeerState>,
    ) -> (Vec<FileHit>, bool) {
        struct Group {
            first: Slot,
            exact: bool,
            peers: u32,
            start: u32,
        }
        let whole = match query {
            Query::Words { whole, .. } if !whole.is_empty() => Some(whole.as_str()),
            _ => None,
        };
        let is_exact = |name: &str| {
            whole.is_some_and(|w| {
                if name.is_ascii() && w.is_ascii() {
                    name.eq_ignore_ascii_case(w)
                } else {
                    name.to_lowercase() == w
                }
            })
        };
        let rec = |s: Slot| self.files.get(s as usize).and_then(Option::as_ref);
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<ContentId, u32> = HashMap::new();
        let mut members: Vec<(u32, u64, Slot)> = Vec::with_capacity(slots.len());
        for slot in slots {
            let Some(r) = rec(slot) else { continue };
            if live(r.peer).is_none() {
                continue;
            }
            let k = *index.entry(r.content).or_insert_with(|| {
                groups.push(Group {
                    first: slot,
                    exact: false,
                    peers: 0,
                    start: 0,
                });
                (groups.len() - 1) as u32
            });
            let g = &mut groups[k as usize];
            if !g.exact && is_exact(&r.name) {
                g.exact = true;
                g.first = slot;
            }
            members.push((k, r.peer, slot));
        }
        drop(index);
        // One member per (file, peer): the earliest time that peer shared it.
        let shared = |s: Slot| rec(s).map_or(i64::MAX, |r| r.shared_at);
        members.sort_unstable_by_key(|&(k, peer, s)| (k, peer, shared(s)));
        members.dedup_by_key(|m| (m.0, m.1));
        for (i, &(k, _, _)) in members.iter().enumerate().rev() {
            let g = &mut groups[k as usize];
            g.peers += 1;
            g.start = i as u32;
        }
        let name = |s: Slot| rec(s).map_or("", |r| &r.name);
        let content = |s: Slot| rec(s).map(|r| r.content);
        let truncated = groups.len() > limit;
        let order = |a: &Group, b: &Group| {
            b.exact
                .cmp(&a.exact)
                .then(b.peers.cmp(&a.peers))
                .then_with(|| name(a.first).cmp(name(b.first)))
                .then_with(|| content(a.first).cmp(&content(b.first)))
        };
        if groups.len() > limit {
            groups.select_nth_unstable_by(limit, order);
            groups.truncate(limit);
        }
        groups.sort_by(order);
        let files = groups
            .into_iter()
            .filter_map(|g| {
                let head = rec(g.first)?;
                let range = g.start as usize..(g.start + g.peers) as usize;
                let peers: Vec<PeerHit> = members
                    .get(range)?
                    .iter()
                    .filter_map(|&(_, peer, s)| {
                        let r = rec(s)?;
                        let p = live(peer)?;
                        Some(PeerHit {
                            peer_id: peer,
                            host: p.host.to_string(),
                            port: p.port,
                            shared_at: r.shared_at,
                            last_seen: p.last_seen,
                            have: self.haves.get(&s).map(|h| h.to_vec()),
                        })
                    })
                    .collect();
                Some(FileHit {
                    name: head.name.to_string(),
                    size: head.size,
                    content_id: head.content,
                    peers,
                })
            })
            .collect();
        (files, truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, name: &str, id: u8) -> FileEntry {
        FileEntry {
            path: path.into(),
            name: name.into(),
            size: 1,
            content_id: ContentId::from_bytes([id; 32]),
            mtime: 0,
            have: None,
        }
    }

    /// An index with peer 1 online.
    fn one_live_peer() -> NameIndex {
        let mut ix = NameIndex::default();
        let live = PeerState {
            host: "h".into(),
            port: 1,
            last_seen: 0,
            online: true,
        };
        ix.set_peer(1, live);
        ix
    }

    fn names(ix: &NameIndex, q: &str) -> Vec<String> {
        let mut v: Vec<String> = ix
            .search(&Query::parse(q), 1000, 0)
            .0
            .into_iter()
            .map(|f| f.name)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn substring_words_ids_and_liveness() {
        let mut ix = NameIndex::default();
        let live = PeerState {
            host: "h".into(),
            port: 1,
            last_seen: 10,
            online: true,
        };
        ix.set_peer(1, live.clone());
        ix.set_peer(
            2,
            PeerState {
                last_seen: 1,
                ..live
            },
        );
        ix.upsert(1, &entry("a/Isaac.py", "Isaac.py", 1), 5);
        ix.upsert(1, &entry("b", "Straße Ünïcode.txt", 2), 5);
        ix.upsert(1, &entry("c", "go", 3), 5);
        ix.upsert(2, &entry("d", "isaac old.py", 4), 5);
        assert_eq!(names(&ix, "saac"), ["Isaac.py", "isaac old.py"]);
        assert_eq!(names(&ix, "ISAAC py"), ["Isaac.py", "isaac old.py"]);
        assert_eq!(names(&ix, "ünï"), ["Straße Ünïcode.txt"]);
        assert_eq!(names(&ix, "go"), ["go"], "short words scan every name");
        assert_eq!(names(&ix, &ContentId::from_bytes([3; 32]).to_hex()), ["go"]);
        let (hits, _) = ix.search(&Query::parse("isaac"), 10, 5);
        assert_eq!(hits.len(), 1, "peer 2 expired");
        // Rename, remove, reset: stale postings never show.
        ix.upsert(1, &entry("a/Isaac.py", "Newton.py", 1), 9);
        assert_eq!(names(&ix, "isaac"), ["isaac old.py"]);
        assert_eq!(
            ix.search(&Query::parse("newton"), 1, 0).0[0].peers[0].shared_at,
            5,
            "same content keeps its time"
        );
        ix.remove(1, "c");
        assert!(names(&ix, "go").is_empty());
        ix.remove_all(2);
        assert!(names(&ix, "isaac").is_empty());
        assert_eq!(ix.files(), 2);
    }

    #[test]
    fn generation_moves_with_every_change_a_search_could_see() {
        let mut ix = one_live_peer();
        ix.set_lease_ms(1000);
        let mut g = ix.generation();
        let mut moved = |ix: &NameIndex| {
            let m = ix.generation() != g;
            g = ix.generation();
            m
        };
        ix.upsert(1, &entry("a", "a.txt", 1), 0);
        assert!(moved(&ix), "added");
        ix.heartbeat(1, 500);
        assert!(!moved(&ix), "a live peer's heartbeat changes nothing");
        ix.heartbeat(1, 1600);
        assert!(moved(&ix), "heard from after its lease ran out");
        ix.upsert(1, &entry("a", "b.txt", 1), 0);
        assert!(moved(&ix), "renamed");
        ix.remove(1, "a");
        assert!(moved(&ix), "removed");
        ix.set_offline(1);
        assert!(moved(&ix), "offline");
        ix.heartbeat(1, 1700);
        assert!(moved(&ix), "back online");
        ix.forget_peer(1);
        assert!(moved(&ix), "forgotten");
    }

    #[test]
    fn files_of_one_content_id_stay_linked_through_removals() {
        let mut ix = one_live_peer();
        for p in 2..=4 {
            ix.set_peer(
                p,
                PeerState {
                    host: "h".into(),
                    port: p as u16,
                    last_seen: 0,
                    online: true,
                },
            );
        }
        let id = ContentId::from_bytes([9; 32]);
        for p in 1..=4 {
            ix.upsert(p, &entry(&format!("f{p}"), "same.bin", 9), 0);
        }
        let peers = |ix: &NameIndex| -> Vec<u64> {
            let hits = ix.search(&Query::Id(id), 10, 0).0;
            hits.first()
                .map(|f| f.peers.iter().map(|p| p.peer_id).collect())
                .unwrap_or_default()
        };
        assert_eq!(peers(&ix), [1, 2, 3, 4]);
        ix.remove(3, "f3"); // middle
        assert_eq!(peers(&ix), [1, 2, 4]);
        ix.remove(4, "f4"); // head (the latest added)
        assert_eq!(peers(&ix), [1, 2]);
        ix.remove(1, "f1"); // last
        assert_eq!(peers(&ix), [2]);
        let mut partial = entry("f2", "same.bin", 9);
        partial.have = Some(vec![0x80]);
        ix.upsert(2, &partial, 0);
        assert_eq!(
            ix.search(&Query::Id(id), 10, 0).0[0].peers[0].have,
            Some(vec![0x80])
        );
        ix.remove(2, "f2");
        assert!(peers(&ix).is_empty());
        assert!(ix.by_content.is_empty() && ix.haves.is_empty());
    }

    #[test]
    fn renaming_one_file_over_and_over_keeps_postings_bounded() {
        let mut ix = one_live_peer();
        for n in 0..20_000 {
            ix.upsert(
                1,
                &entry("same/path", &format!("a fresh name number {n}"), 1),
                0,
            );
            ix.maybe_rebuild();
        }
        assert!(
            ix.postings < 10_000,
            "{} postings for one file",
            ix.postings
        );
        assert_eq!(names(&ix, "number 19999"), ["a fresh name number 19999"]);
    }

    #[test]
    fn matches_a_brute_force_search_after_churn() {
        let words = ["alpha", "beta", "gamma", "delta", "ab", "x"];
        let mut ix = one_live_peer();
        let mut truth: HashMap<String, String> = HashMap::new();
        let mut x: u64 = 42;
        for step in 0..5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let path = format!("p{}", x % 700);
            if x.is_multiple_of(5) {
                ix.remove(1, &path);
                truth.remove(&path);
            } else {
                let name = format!(
                    "{} {}{} {step}",
                    words[(x % 6) as usize],
                    words[(x / 6 % 6) as usize],
                    x % 97
                );
                let mut e = entry(&path, &name, 0);
                e.content_id = blake3::hash(name.as_bytes()).into();
                ix.upsert(1, &e, 0);
                truth.insert(path, name);
            }
        }
        for q in ["alpha", "ta", "gamma delta", "x", "a", "bet 1", "zzz"] {
            let query = Query::parse(q);
            let Query::Words { words: qw, .. } = &query else {
                unreachable!()
            };
            let mut want: Vec<String> = truth
                .values()
                .filter(|n| qw.iter().all(|w| n.to_lowercase().contains(w.as_str())))
                .cloned()
                .collect();
            want.sort();
            want.dedup();
            let mut got: Vec<String> = ix
                .search(&query, 100_000, 0)
                .0
                .into_iter()
                .map(|f| f.name)
                .collect();
            got.sort();
            assert_eq!(got, want, "{q}");
        }
    }
}
