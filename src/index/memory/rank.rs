//! Ranking search matches: grouped by content id, the best `limit` groups kept as they come (exact whole-name match first, then more live peers, then name, then content id).

use std::cmp::Ordering;

use super::{NONE, NameIndex, Slot};
use crate::index::postings::equals_ci;
use crate::index::search::Query;
use crate::protocol::{FileHit, PeerHit};

/// A name's first 8 bytes as a number that orders like the name (ties need the whole name).
fn prefix(name: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    let n = name.len().min(8);
    k[..n].copy_from_slice(&name[..n]);
    u64::from_be_bytes(k)
}

/// A matching content id as ranked: exact whole-name match first, then more live peers, then
/// name (of `first`), then content id.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// [`prefix`] of the name.
    key: u64,
    /// The file whose name stands for the group: the first exact match, else the first match.
    first: Slot,
    peers: u32,
    /// Where the group's members start in [`Ranker::shared`] ([`NONE`]: `first` alone).
    start: u32,
    exact: bool,
}

fn order(ix: &NameIndex, a: &Group, b: &Group) -> Ordering {
    b.exact
        .cmp(&a.exact)
        .then(b.peers.cmp(&a.peers))
        .then(a.key.cmp(&b.key))
        .then_with(|| ix.name(a.first).cmp(ix.name(b.first)))
        .then_with(|| ix.content_id(a.first).cmp(&ix.content_id(b.first)))
}

/// The best `limit` groups of those offered, without keeping the others.
struct TopK<'a> {
    ix: &'a NameIndex,
    limit: usize,
    seen: usize,
    groups: Vec<Group>,
    /// The worst group kept once `groups` was cut to `limit`: worse ones are turned away.
    bound: Option<Group>,
}

impl TopK<'_> {
    fn offer(&mut self, g: Group) {
        self.seen += 1;
        if self.limit == 0
            || self
                .bound
                .is_some_and(|b| order(self.ix, &g, &b) != Ordering::Less)
        {
            return;
        }
        self.groups.push(g);
        if self.groups.len() >= self.limit.saturating_mul(2).saturating_add(64) {
            self.cut();
            self.bound = self.groups.last().copied();
        }
    }

    /// Keeps the best `limit`, the worst of them last.
    fn cut(&mut self) {
        if self.groups.len() > self.limit && self.limit > 0 {
            let ix = self.ix;
            self.groups
                .select_nth_unstable_by(self.limit - 1, |a, b| order(ix, a, b));
        }
        self.groups.truncate(self.limit);
    }

    fn finish(mut self) -> (Vec<Group>, bool) {
        self.cut();
        let ix = self.ix;
        self.groups.sort_by(|a, b| order(ix, a, b));
        (self.groups, self.seen > self.limit)
    }
}

/// Groups matching files by content id and ranks the groups. A file whose content id no other
/// file has is a group of its own at once; the others are gathered, sorted and grouped at the
/// end, one member per (content id, peer): that peer's earliest `shared_at`.
pub struct Ranker<'a> {
    ix: &'a NameIndex,
    whole: Option<&'a str>,
    live_since: i64,
    top: TopK<'a>,
    /// (content, peer, slot) of matches sharing their content id with other files.
    shared: Vec<(u32, u32, Slot)>,
}

impl<'a> Ranker<'a> {
    pub fn new(ix: &'a NameIndex, query: &'a Query, limit: usize, live_since: i64) -> Ranker<'a> {
        let whole = match query {
            Query::Words { whole, .. } if !whole.is_empty() => Some(whole.as_str()),
            _ => None,
        };
        Ranker {
            ix,
            whole,
            live_since,
            top: TopK {
                ix,
                limit,
                seen: 0,
                groups: Vec::new(),
                bound: None,
            },
            shared: Vec::new(),
        }
    }

    fn exact(&self, name: &[u8]) -> bool {
        self.whole.is_some_and(|w| equals_ci(name, w))
    }

    pub fn add(&mut self, slot: Slot) {
        let ix = self.ix;
        let Some(r) = ix.rec(slot) else {
            return;
        };
        if !ix
            .peer_state(r.peer)
            .is_some_and(|p| p.online && p.last_seen >= self.live_since)
        {
            return;
        }
        if r.alone() {
            let name = ix.names.get(r.name);
            let g = Group {
                key: prefix(name),
                first: slot,
                peers: 1,
                start: NONE,
                exact: self.exact(name),
            };
            self.top.offer(g);
        } else {
            self.shared.push((r.content, r.peer, slot));
        }
    }

    pub fn finish(mut self) -> (Vec<FileHit>, bool) {
        let ix = self.ix;
        let mut m = std::mem::take(&mut self.shared);
        let peer_id = |p: u32| ix.peers.get(p as usize).map_or(0, |p| p.id);
        let shared_at = |s: Slot| ix.rec(s).map_or(i64::MAX, |r| r.shared_at);
        m.sort_unstable_by_key(|&(c, p, s)| (c, peer_id(p), shared_at(s), s));
        let (mut i, mut kept) = (0, 0);
        while i < m.len() {
            let c = m[i].0;
            let (mut first, mut exact) = (NONE, NONE);
            let start = kept;
            let mut j = i;
            while j < m.len() && m[j].0 == c {
                let (_, p, s) = m[j];
                first = first.min(s);
                if s < exact && self.exact(ix.name(s)) {
                    exact = s;
                }
                if j == i || p != m[j - 1].1 {
                    m[kept] = m[j];
                    kept += 1;
                }
                j += 1;
            }
            let first = if exact != NONE { exact } else { first };
            let g = Group {
                key: prefix(ix.name(first)),
                first,
                peers: (kept - start) as u32,
                start: start as u32,
                exact: exact != NONE,
            };
            self.top.offer(g);
            i = j;
        }
        m.truncate(kept);
        let (groups, truncated) = self.top.finish();
        let files = groups
            .into_iter()
            .filter_map(|g| {
                let head = ix.rec(g.first)?;
                let peers: Vec<PeerHit> = if g.start == NONE {
                    ix.peer_hit(g.first).into_iter().collect()
                } else {
                    let range = g.start as usize..(g.start + g.peers) as usize;
                    m.get(range)?
                        .iter()
                        .filter_map(|&(_, _, s)| ix.peer_hit(s))
                        .collect()
                };
                Some(FileHit {
                    name: ix.names.text(head.name).into_owned(),
                    size: head.size,
                    content_id: ix.content_id(g.first)?,
                    peers,
                })
            })
            .collect();
        (files, truncated)
    }
}
