//! Tests of [`NameIndex`](super::NameIndex): search semantics against brute force and the reference ranking, and the links, tables and compaction behind them; with the helpers they share.

use super::*;
use crate::protocol::{FileHit, Message, PeerHit, SearchResults};
use crate::query::Query;

mod matching;
mod ranking;
mod tables;

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
        key: Default::default(),
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
        .search(&Query::parse(q), 0, 1000, 0)
        .files
        .into_iter()
        .map(|f| f.name)
        .collect();
    v.sort();
    v
}

/// The next number of a xorshift sequence (the churn tests' reproducible dice).
fn xorshift(x: &mut u64) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
}

/// A file whose content id is the hash of its name.
fn named(path: &str, name: &str) -> FileEntry {
    FileEntry {
        content_id: blake3::hash(name.as_bytes()).into(),
        ..entry(path, name, 0)
    }
}

/// Checks the links and tables against the records: each peer's and each content id's
/// list holds exactly its live files, every live file is found by its path key, and every
/// postings list is increasing.
fn check(ix: &NameIndex) {
    let live: Vec<Slot> = (0..ix.files.len() as Slot)
        .filter(|&s| ix.rec(s).is_some())
        .collect();
    assert_eq!(live.len(), ix.files());
    let walk = |head: Slot, next: &dyn Fn(&FileRec) -> (Slot, Slot)| {
        let (mut at, mut prev, mut out) = (head, NONE, Vec::new());
        while at != NONE {
            let r = ix.rec(at).expect("a listed file is live");
            assert_eq!(next(r).0, prev, "back link of {at}");
            out.push(at);
            (prev, at) = (at, next(r).1);
        }
        out.sort_unstable();
        out
    };
    let mut listed = 0;
    for (id, n) in ix.peers.numbers() {
        let p = ix.peers.get(n).expect("a number in use has a record");
        assert_eq!(p.id, id);
        let files = walk(p.head, &|r| (r.pprev, r.pnext));
        let want: Vec<Slot> = live
            .iter()
            .copied()
            .filter(|&s| ix.files[s as usize].peer == n)
            .collect();
        assert_eq!(files, want, "files of peer {id}");
        listed += files.len();
    }
    assert_eq!(listed, live.len(), "every file is on its peer's list");
    listed = 0;
    for c in ix.contents.numbers() {
        let head = ix
            .contents
            .get(c)
            .expect("a number in use has a record")
            .head;
        let files = walk(head, &|r| (r.cprev, r.cnext));
        assert!(!files.is_empty(), "content {c} is in use");
        assert!(files.iter().all(|&s| ix.files[s as usize].content == c));
        listed += files.len();
    }
    assert_eq!(listed, live.len(), "every file is on its content's list");
    assert_eq!(ix.paths.len(), live.len());
    for &s in &live {
        let lowered = lower(&String::from_utf8_lossy(ix.name(s))).into_owned();
        assert!(ix.exact_named(&lowered).contains(&s), "{s} by name");
    }
    for &s in &live {
        assert_eq!(ix.find_path(ix.files[s as usize].key), Some(s));
    }
    let mut postings = 0;
    for p in ix.trigrams.lists() {
        let v: Vec<Slot> = p.iter().collect();
        assert!(v.windows(2).all(|w| w[0] < w[1]), "increasing");
        assert!(v.iter().all(|&s| (s as usize) < ix.files.len()));
        postings += v.len();
    }
    assert_eq!(postings, ix.trigrams.postings());
}

fn peer(port: u16, last_seen: i64) -> PeerState {
    PeerState {
        key: Default::default(),
        host: "h".into(),
        port,
        last_seen,
        online: true,
    }
}

/// A search's answer, checked to be the same from the rank order and from the postings (the
/// order's count may be an estimate, saying so), built as messages, written straight from the
/// index, and (when it may be) answered quickly.
fn answer(
    ix: &NameIndex,
    query: &Query<ContentId>,
    offset: usize,
    limit: usize,
    live_since: i64,
) -> SearchFound {
    let encoded = |plan| {
        let found = ix.search_by(query, offset, limit, live_since, plan).hits();
        let serde = Message::SearchResults(SearchResults {
            files: found.files,
            truncated: found.truncated,
            total: found.total,
            estimated: found.estimated,
        })
        .encode_payload();
        let direct = ix
            .search_by(query, offset, limit, live_since, plan)
            .encode();
        assert_eq!(
            direct.unwrap(),
            serde.unwrap(),
            "the payload written from the index is the message encoded: {query:?} {plan:?}"
        );
    };
    encoded(Plan::Postings);
    encoded(Plan::Order);
    let by_postings = ix
        .search_by(query, offset, limit, live_since, Plan::Postings)
        .hits();
    assert!(!by_postings.estimated, "the postings count every match");
    let by_order = ix
        .search_by(query, offset, limit, live_since, Plan::Order)
        .hits();
    let short = |r: &SearchFound| {
        let files: Vec<String> = r
            .files
            .iter()
            .map(|f| format!("{}/{}", f.name, f.peers.len()))
            .collect();
        (files, r.truncated)
    };
    assert_eq!(
        short(&by_order),
        short(&by_postings),
        "names: {query:?} offset {offset} limit {limit}"
    );
    assert_eq!(
        by_order.files, by_postings.files,
        "rank order against postings: {query:?} offset {offset} limit {limit}"
    );
    if !by_order.estimated {
        assert_eq!(by_order.total, by_postings.total, "{query:?}");
    } else {
        assert!(by_order.truncated, "an estimate only when it stopped early");
    }
    let found = ix.search(query, offset, limit, live_since);
    assert_eq!(found.files, by_postings.files, "auto: {query:?}");
    let payload = ix.search_encoded(query, offset, limit, live_since).unwrap();
    if let Some(quick) = ix.search_quick_encoded(query, offset, limit, live_since) {
        // The same files; the count too unless either answer estimated it.
        let decode = |b: bytes::Bytes| match Message::decode(crate::protocol::Frame {
            tag: crate::protocol::tag::SEARCH_RESULTS,
            payload: b,
        }) {
            Ok(Message::SearchResults(r)) => r,
            other => panic!("not search results: {:?}", other.map(|m| m.name())),
        };
        let (q, p) = (decode(quick.unwrap()), decode(payload));
        assert_eq!(
            (&q.files, q.truncated),
            (&p.files, p.truncated),
            "answered quickly: {query:?} limit {limit}"
        );
        if !q.estimated && !p.estimated {
            assert_eq!(q.total, p.total);
        }
    }
    by_postings
}
