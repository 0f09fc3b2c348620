//! Ranking search matches: grouped by content id, the best `offset + limit` groups kept as they come (exact whole-name match first, then a name holding every word, then more live peers, then name, then content id), and all of them counted.

use std::cmp::Ordering;

use bytes::Bytes;

use super::SearchFound;
use super::name_keys::{name_key, prefix};
use super::{FileRec, NONE, NameIndex, Slot};
use crate::content::ContentId;
use crate::protocol::{FileHit, ProtocolError, SearchResultsWriter};
use crate::query::Query;
use crate::query::equals_ci;

/// A matching content id as ranked: exact whole-name match first, then a name holding every
/// word, then more live peers, then name (of `first`), then content id.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// [`prefix`] of the name.
    key: u64,
    /// The file whose name stands for the group: of its exact matches, else of its matches
    /// whose name holds every word, else of its matches, the one whose name is least in byte
    /// order.
    first: Slot,
    peers: u32,
    /// Where the group's members start in [`Ranker::members`] ([`NONE`]: `first` alone).
    start: u32,
    exact: bool,
    /// Whether `first`'s name holds every word (not only its directories).
    in_name: bool,
}

fn order(ix: &NameIndex, a: &Group, b: &Group) -> Ordering {
    b.exact
        .cmp(&a.exact)
        .then(b.in_name.cmp(&a.in_name))
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
    /// Whether `bound` is the worst of `groups` (no group was taken since the last cut).
    settled: bool,
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
        self.settled = false;
        if self.groups.len() >= self.limit.saturating_mul(2).saturating_add(64) {
            self.settle();
        }
    }

    fn settle(&mut self) {
        self.cut();
        self.bound = self.groups.last().copied();
        self.settled = true;
    }

    /// The worst of the best `limit` groups so far, once `limit` were offered.
    fn kth(&mut self) -> Option<Group> {
        if self.limit == 0 || self.groups.len() < self.limit {
            return None;
        }
        if !self.settled {
            self.settle();
        }
        self.bound
    }

    /// Keeps the best `limit`, the worst of them last.
    fn cut(&mut self) {
        if self.groups.len() >= self.limit && self.limit > 0 {
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

/// Groups matching files by content id and ranks the groups, one member per (content id,
/// peer): that peer's earliest `shared_at`.
///
/// Files come one of two ways. [`Ranker::add`] takes every match in any order: a file whose
/// content id no other file has is a group of its own at once; the others are gathered,
/// sorted and grouped at the end. [`Ranker::add_group`] ranks a content id's whole group at
/// once, reading the files of its list: for a content-id lookup, and for searches that read
/// files in rank order and stop early ([`Ranker::stops_before`]).
pub struct Ranker<'a, 'q> {
    ix: &'a NameIndex,
    query: &'q Query<ContentId>,
    whole: Option<&'q str>,
    live_since: i64,
    /// Groups skipped before the page.
    offset: usize,
    top: TopK<'a>,
    /// (content, peer, slot) of matches sharing their content id with other files.
    shared: Vec<(u32, u32, Slot)>,
    /// The members of ranked groups of several files, each group's together.
    members: Vec<Slot>,
    /// Files the search has read: its own reads ([`Ranker::spend`]) and those of walking
    /// whole groups ([`Ranker::add_group`], [`Ranker::group_is_live`]).
    spent: usize,
    /// Most files it may read ([`Ranker::limit_reads`]); a group walk that would read more
    /// stops and offers nothing, and the search is to be given up ([`Ranker::over`]).
    allowance: usize,
}

impl<'a, 'q> Ranker<'a, 'q> {
    /// A ranker keeping the best `limit` groups after the first `offset` of files matching
    /// `query` shared by peers live since `live_since`.
    pub fn new(
        ix: &'a NameIndex,
        query: &'q Query<ContentId>,
        offset: usize,
        limit: usize,
        live_since: i64,
    ) -> Ranker<'a, 'q> {
        let whole = match query {
            Query::Words { whole, .. } => Some(whole.as_str()).filter(|w| !w.is_empty()),
            Query::Id(_) => None,
        };
        let limit = offset.saturating_add(limit);
        Ranker {
            ix,
            query,
            whole,
            live_since,
            offset,
            top: TopK {
                ix,
                limit,
                seen: 0,
                groups: Vec::with_capacity(limit.saturating_mul(2).saturating_add(64).min(4096)),
                bound: None,
                settled: false,
            },
            shared: Vec::new(),
            members: Vec::new(),
            spent: 0,
            allowance: usize::MAX,
        }
    }

    /// Lets the search read at most `files` files (default: no limit).
    pub fn limit_reads(&mut self, files: usize) {
        self.allowance = files;
    }

    /// Counts `files` more files read; false once past the allowance.
    pub fn spend(&mut self, files: usize) -> bool {
        self.spent = self.spent.saturating_add(files);
        !self.over()
    }

    /// Whether the search read more than it may: what it found is not the whole answer.
    pub fn over(&self) -> bool {
        self.spent > self.allowance
    }

    /// The group of a file no other file shares its content id with.
    fn single(&self, slot: Slot) -> Group {
        let name = self.ix.name(slot);
        Group {
            key: prefix(name),
            first: slot,
            peers: 1,
            start: NONE,
            exact: self.exact(name),
            in_name: self.query.in_name(name),
        }
    }

    /// Whether file `r` is shared by a live peer and matches the query.
    fn matches(&self, r: &FileRec) -> bool {
        self.live(r) && self.query.matches_facts(&self.ix.facts(r))
    }

    fn live(&self, r: &FileRec) -> bool {
        self.ix
            .peer_state(r.peer)
            .is_some_and(|p| p.online && p.last_seen >= self.live_since)
    }

    /// Ranks the whole group of `slot`'s content id: its files that match, shared by live
    /// peers. Returns whether the group had any such file (and so was offered); false also
    /// when walking it went past the allowance ([`Ranker::over`]).
    pub fn add_group(&mut self, slot: Slot) -> bool {
        let ix = self.ix;
        let Some(r) = ix.rec(slot) else {
            return false;
        };
        let mut m: Vec<(u64, i64, Slot)> = Vec::new();
        let mut at = ix.contents.get(r.content).map_or(NONE, |c| c.head);
        let mut steps = 0;
        while let Some(f) = ix.rec(at) {
            if !self.spend(1) {
                return false;
            }
            if self.matches(f) {
                let peer_id = ix.peers.get(f.peer).map_or(0, |p| p.id);
                m.push((peer_id, f.shared_at, at));
            }
            at = f.cnext;
            steps += 1;
            if steps > ix.files.len() {
                break;
            }
        }
        if m.is_empty() {
            return false;
        }
        m.sort_unstable();
        let files: Vec<(u64, Slot)> = m.iter().map(|&(p, _, s)| (p, s)).collect();
        self.offer_group(&files);
        true
    }

    /// Whether every group not yet offered ranks below the best `limit` kept, given that it
    /// is not an exact match, has at most `peers` live peers and, should it have exactly
    /// that many, no name whose first 16 bytes come before those of `name`. A kept group
    /// found only through its directories could still be passed by a later one holding every
    /// word in its name: then nothing stops.
    pub fn stops_before(&mut self, peers: u32, name: &[u8]) -> bool {
        let Some(kth) = self.top.kth() else {
            return false;
        };
        kth.exact
            || (kth.in_name
                && (kth.peers > peers
                    || (kth.peers == peers && name_key(self.ix.name(kth.first)) < name_key(name))))
    }

    /// Whether `slot`'s group has a matching file shared by a live peer.
    pub fn group_is_live(&mut self, slot: Slot) -> bool {
        let ix = self.ix;
        let mut at = ix
            .rec(slot)
            .and_then(|r| ix.contents.get(r.content))
            .map_or(NONE, |c| c.head);
        let mut steps = 0;
        while let Some(f) = ix.rec(at) {
            if !self.spend(1) {
                return false;
            }
            if self.matches(f) {
                return true;
            }
            at = f.cnext;
            steps += 1;
            if steps > ix.files.len() {
                break;
            }
        }
        false
    }

    /// Offers one content id's matching files, as (peer, slot) sorted by peer and then
    /// earliest share, as a group: one member per peer.
    fn offer_group(&mut self, files: &[(u64, Slot)]) {
        if files.is_empty() {
            return;
        }
        let ix = self.ix;
        let (mut first, mut exact, mut named) = (NONE, NONE, NONE);
        let start = self.members.len();
        for (i, &(_, s)) in files.iter().enumerate() {
            if self.names_first(s, first) {
                first = s;
            }
            if self.names_first(s, named) && self.query.in_name(ix.name(s)) {
                named = s;
            }
            if self.names_first(s, exact) && self.exact(ix.name(s)) {
                exact = s;
            }
            if i == 0 || files[i].0 != files[i - 1].0 {
                self.members.push(s);
            }
        }
        let first = [exact, named, first]
            .into_iter()
            .find(|&s| s != NONE)
            .unwrap_or(first);
        self.top.offer(Group {
            key: prefix(ix.name(first)),
            first,
            peers: (self.members.len() - start) as u32,
            start: start as u32,
            exact: exact != NONE,
            in_name: named != NONE,
        });
    }

    /// Whether `a` stands for its group before `b` ([`NONE`]: none yet): the smaller name in
    /// byte order, so the name a content id is shown (and downloaded) under does not depend
    /// on where the index happens to keep its files (PROTOCOL §7.5).
    fn names_first(&self, a: Slot, b: Slot) -> bool {
        b == NONE || (self.ix.name(a), a) < (self.ix.name(b), b)
    }

    fn exact(&self, name: &[u8]) -> bool {
        self.whole.is_some_and(|w| equals_ci(name, w))
    }

    /// Offers file `slot` (a match), with the other files of its content id.
    pub fn add(&mut self, slot: Slot) {
        let ix = self.ix;
        let Some(r) = ix.rec(slot) else {
            return;
        };
        if !self.live(r) {
            return;
        }
        if r.alone() {
            self.top.offer(self.single(slot));
        } else {
            self.shared.push((r.content, r.peer, slot));
        }
    }

    /// [`Ranker::finish`] of a search that stopped before reading every match: more matched
    /// than were kept, about `estimate` groups in all.
    pub fn finish_estimated(self, estimate: u64) -> Ranked<'a> {
        let mut r = self.finish(true);
        r.total = r.total.max(estimate);
        r.estimated = true;
        r
    }

    /// The best groups, after the first `offset`, best first; whether more groups matched than
    /// were kept (`truncated` says so of groups never offered), and how many were offered.
    pub fn finish(mut self, truncated: bool) -> Ranked<'a> {
        let ix = self.ix;
        let mut m = std::mem::take(&mut self.shared);
        let peer_id = |p: u32| ix.peers.get(p).map_or(0, |p| p.id);
        let shared_at = |s: Slot| ix.rec(s).map_or(i64::MAX, |r| r.shared_at);
        m.sort_unstable_by_key(|&(c, p, s)| (c, peer_id(p), shared_at(s), s));
        let mut i = 0;
        while i < m.len() {
            let c = m[i].0;
            let j = i + m[i..].iter().take_while(|f| f.0 == c).count();
            let files: Vec<(u64, Slot)> =
                m[i..j].iter().map(|&(_, p, s)| (u64::from(p), s)).collect();
            self.offer_group(&files);
            i = j;
        }
        drop(m);
        let members = std::mem::take(&mut self.members);
        let total = self.top.seen as u64;
        let (mut groups, more) = self.top.finish();
        groups.drain(..self.offset.min(groups.len()));
        Ranked {
            ix,
            groups,
            members,
            truncated: truncated || more,
            total,
            estimated: false,
        }
    }
}

/// What a search found: the best groups, best first, read from the index as the reply is
/// made (as [`FileHit`]s, or encoded straight into the reply's payload).
pub struct Ranked<'a> {
    ix: &'a NameIndex,
    groups: Vec<Group>,
    members: Vec<Slot>,
    truncated: bool,
    total: u64,
    /// Whether `total` is an estimate (the search stopped early).
    estimated: bool,
}

impl Ranked<'_> {
    /// The files of a group's peers: `first` alone, or its members (`None`: not listed).
    fn slots<'g>(&'g self, g: &'g Group) -> Option<&'g [Slot]> {
        if g.start == NONE {
            return Some(std::slice::from_ref(&g.first));
        }
        self.members
            .get(g.start as usize..(g.start as usize).saturating_add(g.peers as usize))
    }

    /// A group as listed: its name's record, content id and peers' files.
    fn listed<'g>(&'g self, g: &'g Group) -> Option<(&'g FileRec, ContentId, &'g [Slot])> {
        Some((
            self.ix.rec(g.first)?,
            self.ix.content_id(g.first)?,
            self.slots(g)?,
        ))
    }

    /// The files found, whether more matched than were kept, and how many matched.
    pub fn hits(self) -> SearchFound {
        let ix = self.ix;
        let files = self
            .groups
            .iter()
            .filter_map(|g| {
                let (head, content_id, slots) = self.listed(g)?;
                Some(FileHit {
                    name: ix.names.text(head.name).into_owned(),
                    size: head.size,
                    content_id,
                    peers: slots.iter().filter_map(|&s| ix.peer_hit(s)).collect(),
                })
            })
            .collect();
        SearchFound {
            files,
            truncated: self.truncated,
            total: self.total,
            estimated: self.estimated,
        }
    }

    /// The `SearchResults` payload of [`Ranked::hits`], written straight from the index.
    pub fn encode(&self) -> Result<Bytes, ProtocolError> {
        let ix = self.ix;
        let files = self
            .groups
            .iter()
            .filter(|g| self.listed(g).is_some())
            .count();
        // About 200 bytes per file with one peer.
        let mut w = SearchResultsWriter::new(files as u32, 64 + 256 * files, self.estimated);
        for g in &self.groups {
            let Some((head, content_id, slots)) = self.listed(g) else {
                continue;
            };
            let peers = slots.iter().filter(|&&s| ix.lists_peer(s)).count();
            w.file(
                &ix.names.text(head.name),
                head.size,
                &content_id,
                peers as u32,
            );
            for p in slots.iter().filter_map(|&s| ix.peer_hit_ref(s)) {
                w.peer(&p);
            }
        }
        w.finish(self.truncated, self.total, self.estimated)
    }
}
