//! The name index's lookup: answering a query from the rank order, a content id's list, or the
//! postings of its words' trigrams, and listing each match's peer.

use bytes::Bytes;

use super::NONE;
use super::NameIndex;
use super::rank::{Ranked, Ranker};
use crate::content::ContentId;
use crate::index::postings::{Intersection, Postings, Slot, trigrams_into};
use crate::protocol::{FileHit, PeerHit, PeerHitRef, ProtocolError};
use crate::query::Query;

use super::trigrams::{INTERSECT_RATIO, PostingsReads};

/// How [`NameIndex::search_by`] finds matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// The order for broad word queries, the postings for the rest.
    Auto,
    /// The rank order (should the order read more than the budget, the postings).
    #[cfg_attr(not(test), allow(dead_code))]
    Order,
    /// The postings of the words' trigrams.
    #[cfg_attr(not(test), allow(dead_code))]
    Postings,
}

/// How much of the index a search may read before it gives up.
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    /// Files read (a cache miss or two each): in rank order, those named exactly as the
    /// query, those added since the order was made, those whose signature matched and the
    /// other files of their content ids; a content id's files; the paths the postings give.
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
    /// What a search answered on a connection's own thread may read: work of the same order as
    /// handing a search to another thread and back, so answering it there costs no more.
    pub const QUICK: Reads = Reads {
        names: 512,
        signatures: 32_768,
    };
}

/// Most matching files one search groups and ranks; past it the reply says `truncated`.
pub const MAX_SEARCH_ROWS: usize = 200_000;

/// What a search found, as [`FileHit`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchFound {
    /// The files of the page asked for, best first.
    pub files: Vec<FileHit>,
    /// More files matched than the page's end.
    pub truncated: bool,
    /// Distinct files (content ids) that matched in all, or an estimate of them when
    /// `estimated` (a broad search answered from the rank order stops before reading them all).
    pub total: u64,
    /// Whether `total` is an estimate.
    pub estimated: bool,
}

impl NameIndex {
    /// Calls `found` with each live slot that matches `query` (a word query), in slot order,
    /// until it returns false.
    pub(super) fn each_match(&self, query: &Query<ContentId>, mut found: impl FnMut(Slot) -> bool) {
        let mut tris: Vec<[u8; 3]> = Vec::new();
        let mut t = Vec::new();
        for w in query.words().iter().filter(|w| w.len() >= 3) {
            trigrams_into(w, &mut t);
            tris.extend_from_slice(&t);
        }
        tris.sort_unstable();
        tris.dedup();
        if tris.is_empty() {
            for (slot, r) in self.files.iter().enumerate() {
                if r.live() && query.matches_facts(&self.facts(r)) && !found(slot as Slot) {
                    return;
                }
            }
            return;
        }
        let mut lists: Vec<&Postings> = Vec::with_capacity(tris.len());
        for tri in &tris {
            match self.trigrams.get(tri) {
                Some(p) => lists.push(p),
                None => return,
            }
        }
        lists.sort_by_key(|p| p.len());
        let shortest = lists[0].len();
        lists.retain(|p| p.len() <= shortest.saturating_mul(INTERSECT_RATIO));
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
                if query.matches_facts(&self.facts(r)) && !found(slot) {
                    return;
                }
            }
        }
    }

    /// Reads the records and paths of `slots` in two tight loops, so that their cache misses
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
    #[inline]
    pub(super) fn postings_reads(&self, words: &[String]) -> PostingsReads {
        self.trigrams.reads(words, self.live)
    }

    /// Files matching `query` shared by live peers (online and seen at or after `live_since`):
    /// the `limit` best after the first `offset`, with the count of all.
    ///
    /// A broad word query reads files in rank order and stops after the best `offset + limit`
    /// ([`order`](super::order)), estimating the count; a narrow one, or one whose matches are
    /// mostly not live, reads the postings of its trigrams and ranks and counts every match.
    pub fn search(
        &self,
        query: &Query<ContentId>,
        offset: usize,
        limit: usize,
        live_since: i64,
    ) -> SearchFound {
        self.search_by(query, offset, limit, live_since, Plan::Auto)
            .hits()
    }

    /// [`NameIndex::search`] as the `SearchResults` payload, written straight from the index.
    pub fn search_encoded(
        &self,
        query: &Query<ContentId>,
        offset: usize,
        limit: usize,
        live_since: i64,
    ) -> Result<Bytes, ProtocolError> {
        self.search_by(query, offset, limit, live_since, Plan::Auto)
            .encode()
    }

    /// [`NameIndex::search_encoded`] if it reads at most [`Reads::QUICK`] of the index, so
    /// it can be answered on a connection's own thread; `None` if it would read more.
    pub fn search_quick_encoded(
        &self,
        query: &Query<ContentId>,
        offset: usize,
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
                match self.without_postings(
                    query,
                    words,
                    offset,
                    limit,
                    live_since,
                    Plan::Auto,
                    quick,
                ) {
                    Ok(found) => found,
                    Err(p) if p.most <= quick.names && p.merged <= quick.signatures => {
                        self.by_postings(query, offset, limit, live_since)
                    }
                    Err(_) => return None,
                }
            }
        };
        Some(found.encode())
    }

    /// Answers `query` the way `plan` says (tests compare the plans).
    pub(super) fn search_by(
        &self,
        query: &Query<ContentId>,
        offset: usize,
        limit: usize,
        live_since: i64,
        plan: Plan,
    ) -> Ranked<'_> {
        match query {
            Query::Id(id) => self.by_id(query, self.group_head(id), limit, live_since),
            Query::Words { words, .. } => {
                match self.without_postings(
                    query,
                    words,
                    offset,
                    limit,
                    live_since,
                    plan,
                    Reads::ALL,
                ) {
                    Ok(found) => found,
                    Err(_) => self.by_postings(query, offset, limit, live_since),
                }
            }
        }
    }

    /// A content id's group: the files on its list.
    pub(super) fn by_id(
        &self,
        query: &Query<ContentId>,
        head: Slot,
        limit: usize,
        live_since: i64,
    ) -> Ranked<'_> {
        let mut ranker = Ranker::new(self, query, 0, limit, live_since);
        if head != NONE {
            ranker.add_group(head);
        }
        ranker.finish(false)
    }

    /// A broad word query read in rank order, within `reads`; otherwise `Err`: what the
    /// postings would read to answer it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn without_postings(
        &self,
        query: &Query<ContentId>,
        words: &[String],
        offset: usize,
        limit: usize,
        live_since: i64,
        plan: Plan,
        reads: Reads,
    ) -> Result<Ranked<'_>, PostingsReads> {
        // Reading the order costs about (limit / share of files matching) signatures, read in
        // sequence; the postings about `most` names, a cache miss or two each, some fifty to a
        // hundred times dearer: the order wins once 64 · most² > limit · files.
        let postings = self.postings_reads(words);
        let most = postings.most;
        let wanted = offset.saturating_add(limit);
        let broad = 64 * (most as u128).pow(2) > (wanted as u128 + 1) * self.live as u128;
        let budget = match plan {
            Plan::Order => usize::MAX,
            Plan::Auto => most.max(wanted),
            Plan::Postings => return Err(postings),
        };
        if plan == Plan::Order {
            self.refresh_order();
        }
        if (broad || plan == Plan::Order)
            && let Some(found) =
                self.search_in_order(query, offset, limit, live_since, (budget, most), reads)
        {
            return Ok(found);
        }
        Err(postings)
    }

    /// Every match of a word query, from the postings of its trigrams, ranked and counted.
    pub(super) fn by_postings(
        &self,
        query: &Query<ContentId>,
        offset: usize,
        limit: usize,
        live_since: i64,
    ) -> Ranked<'_> {
        let mut ranker = Ranker::new(self, query, offset, limit, live_since);
        let mut matched = 0;
        let mut cut = false;
        self.each_match(query, |slot: Slot| {
            if matched == MAX_SEARCH_ROWS {
                cut = true;
                return false;
            }
            matched += 1;
            ranker.add(slot);
            true
        });
        ranker.finish(cut)
    }

    /// The first file of a content id's list ([`NONE`]: nobody has it).
    pub(super) fn group_head(&self, id: &ContentId) -> Slot {
        self.contents
            .number(id)
            .and_then(|c| self.contents.get(c))
            .map_or(NONE, |c| c.head)
    }

    /// How many files are on the list starting at `head`, counting no further than `most + 1`.
    pub(super) fn group_len(&self, mut head: Slot, most: usize) -> usize {
        let mut n = 0;
        while let Some(f) = self.rec(head)
            && n <= most
        {
            n += 1;
            head = f.cnext;
        }
        n
    }

    /// [`NameIndex::peer_hit_ref`], owned.
    pub(super) fn peer_hit(&self, slot: Slot) -> Option<PeerHit> {
        self.peer_hit_ref(slot).map(|p| PeerHit {
            peer_id: p.peer_id,
            host: p.host.to_string(),
            port: p.port,
            key: p.key.copied(),
            shared_at: p.shared_at,
            last_seen: p.last_seen,
            have: p.have.map(<[u8]>::to_vec),
            path: p.path.map(str::to_string),
            reach: p.reach.map(str::to_string),
        })
    }

    /// The peer of file `slot` as a search lists it (`None`: its peer is not known).
    pub(super) fn peer_hit_ref(&self, slot: Slot) -> Option<PeerHitRef<'_>> {
        let r = self.rec(slot)?;
        let p = self.peers.get(r.peer)?;
        let s = p.state.as_ref()?;
        Some(PeerHitRef {
            peer_id: p.id,
            host: &s.host,
            port: s.port,
            key: Some(&s.key),
            shared_at: r.shared_at,
            last_seen: s.last_seen,
            have: self.haves.get(&slot).map(|h| &h[..]),
            // Paths are pushed as `&str`.
            path: std::str::from_utf8(self.names.path(r.name)).ok(),
            // A peer reached through the relay is recorded without an address (§7.10).
            reach: (s.port == 0).then_some(crate::protocol::relay::reach::RELAY),
        })
    }

    /// Whether [`NameIndex::peer_hit_ref`] lists file `slot`'s peer (without reading the rest).
    pub(super) fn lists_peer(&self, slot: Slot) -> bool {
        self.rec(slot)
            .and_then(|r| self.peers.get(r.peer))
            .is_some_and(|p| p.state.is_some())
    }
}
