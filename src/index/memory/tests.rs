//! Tests of [`NameIndex`](super::NameIndex): search semantics against brute force and the reference ranking, and the links, tables and compaction behind them.

use super::*;
use crate::protocol::{Message, SearchResults};

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
        xorshift(&mut x);
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
        if step % 100 == 0 {
            ix.maybe_rebuild();
            check(&ix);
        }
    }
    check(&ix);
    for q in [
        "alpha",
        "ta",
        "gamma delta",
        "x",
        "a",
        "bet 1",
        "zzz",
        "amm",
        "a d",
        "lta 12",
        "pha",
    ] {
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
    for (&id, &n) in &ix.peer_numbers {
        let p = &ix.peers[n as usize];
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
    for &c in ix.by_content.iter() {
        let files = walk(ix.contents[c as usize].head, &|r| (r.cprev, r.cnext));
        assert!(!files.is_empty(), "content {c} is in use");
        assert!(files.iter().all(|&s| ix.files[s as usize].content == c));
        listed += files.len();
    }
    assert_eq!(listed, live.len(), "every file is on its content's list");
    assert_eq!(ix.by_path.len(), live.len());
    for &s in &live {
        let lowered = lower(&ix.names.text(ix.files[s as usize].name)).into_owned();
        assert!(ix.exact_named(&lowered).contains(&s), "{s} by name");
    }
    for &s in &live {
        assert_eq!(ix.find_path(ix.files[s as usize].key), Some(s));
    }
    let mut postings = 0;
    for p in ix.trigrams.values() {
        let v: Vec<Slot> = p.iter().collect();
        assert!(v.windows(2).all(|w| w[0] < w[1]), "increasing");
        assert!(v.iter().all(|&s| (s as usize) < ix.files.len()));
        postings += v.len();
    }
    assert_eq!(postings, ix.postings);
}

fn peer(port: u16, last_seen: i64) -> PeerState {
    PeerState {
        host: "h".into(),
        port,
        last_seen,
        online: true,
    }
}

#[test]
fn names_are_compacted_after_churn() {
    let mut ix = one_live_peer();
    // Mostly removed files: a rebuild renumbers the rest and drops their names.
    for i in 0..3000 {
        ix.upsert(1, &named(&format!("p{i}"), &format!("churned name {i}")), 0);
    }
    for i in (0..3000).filter(|i| i % 3 != 0) {
        ix.remove(1, &format!("p{i}"));
    }
    assert!(ix.names.garbage() > 0);
    ix.maybe_rebuild();
    assert_eq!(ix.names.garbage(), 0);
    assert_eq!(ix.files.len(), 1000, "dead records dropped");
    let live_bytes: usize = (0..3000)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("churned name {i}").len())
        .sum();
    assert_eq!(ix.names.len(), live_bytes);
    assert_eq!(names(&ix, "name 2997"), ["churned name 2997"]);
    assert!(names(&ix, "name 2998").is_empty());
    check(&ix);
    // Few but long names removed: only the names are compacted (no renumbering).
    let long = |i: usize| format!("{}{i}", "a".repeat(4000));
    for i in 0..40 {
        ix.upsert(1, &entry(&format!("long{i}"), &long(i), 2), 0);
    }
    for i in 0..40 {
        ix.remove(1, &format!("long{i}"));
    }
    let records = ix.files.len();
    ix.maybe_rebuild();
    assert_eq!(ix.files.len(), records, "no renumbering");
    assert_eq!((ix.names.garbage(), ix.names.len()), (0, live_bytes));
    assert_eq!(names(&ix, "name 2997"), ["churned name 2997"]);
    assert_eq!(ix.search(&Query::parse("churned"), 5000, 0).0.len(), 1000);
    check(&ix);
}

#[test]
fn paths_are_found_by_a_keyed_hash_per_peer() {
    let mut ix = one_live_peer();
    ix.set_peer(2, peer(2, 0));
    ix.upsert(1, &entry("same/path", "one.txt", 1), 0);
    ix.upsert(2, &entry("same/path", "two.txt", 2), 0);
    assert_eq!(ix.files(), 2, "one path, two peers, two files");
    assert_ne!(ix.path_key(1, "same/path"), ix.path_key(2, "same/path"));
    assert_ne!(
        ix.path_key(1, "same/path"),
        NameIndex::default().path_key(1, "same/path"),
        "each index draws its own key"
    );
    ix.upsert(1, &entry("same/path", "uno.txt", 1), 5);
    assert_eq!(ix.files(), 2, "replaced, not added");
    assert_eq!(names(&ix, "txt"), ["two.txt", "uno.txt"]);
    let mut resized = entry("same/path", "uno.txt", 1);
    resized.size = 7;
    ix.upsert(1, &resized, 9);
    let hit = &ix.search(&Query::parse("uno"), 1, 0).0[0];
    assert_eq!(
        (hit.size, hit.peers[0].shared_at),
        (7, 0),
        "same content keeps its time"
    );
    ix.upsert(1, &entry("same/path", "uno.txt", 3), 9);
    let hit = &ix.search(&Query::parse("uno"), 1, 0).0[0];
    assert_eq!(hit.peers[0].shared_at, 9, "new content, new time");
    assert_eq!(hit.content_id, ContentId::from_bytes([3; 32]));
    ix.remove(1, "same/path");
    assert_eq!(names(&ix, "txt"), ["two.txt"]);
    ix.remove(1, "same/path");
    ix.remove(1, "never/there");
    assert_eq!(ix.files(), 1);
    check(&ix);
}

#[test]
fn each_peers_files_stay_linked_through_removals() {
    let mut ix = one_live_peer();
    ix.set_peer(2, peer(2, 0));
    ix.set_peer(3, peer(3, 0));
    for p in 1..=3 {
        for i in 0..5 {
            ix.upsert(
                p,
                &entry(&format!("f{i}"), &format!("peer{p} file{i}"), i),
                0,
            );
        }
    }
    check(&ix);
    ix.remove(2, "f2"); // middle
    ix.remove(2, "f4"); // head (the latest added)
    ix.remove(2, "f0"); // tail
    check(&ix);
    assert_eq!(names(&ix, "peer2"), ["peer2 file1", "peer2 file3"]);
    ix.remove_all(2);
    check(&ix);
    assert!(names(&ix, "peer2").is_empty());
    assert_eq!(ix.files(), 10);
    ix.forget_peer(1);
    check(&ix);
    assert_eq!(
        names(&ix, "file"),
        (0..5).map(|i| format!("peer3 file{i}")).collect::<Vec<_>>()
    );
    // Files of a peer not registered (yet) are kept but never shown.
    ix.upsert(9, &entry("x", "peer9 file", 1), 0);
    assert!(names(&ix, "peer9").is_empty());
    ix.set_peer(9, peer(9, 0));
    assert_eq!(names(&ix, "peer9"), ["peer9 file"]);
    // Renumbering keeps every list whole.
    for i in 0..3000 {
        ix.upsert(3, &entry(&format!("g{i}"), &format!("bulk {i}"), 1), 0);
    }
    for i in 0..3000 {
        ix.remove(3, &format!("g{i}"));
    }
    ix.maybe_rebuild();
    check(&ix);
    assert_eq!(ix.files.len(), 6);
    ix.remove_all(3);
    ix.remove_all(9);
    check(&ix);
    assert_eq!(ix.files(), 0);
}

#[test]
fn three_byte_words_are_answered_by_their_list_alone() {
    let mut ix = one_live_peer();
    for (i, n) in [
        "abc", "xABCx", "ab c", "a-b-c", "zabcz", "äbc", "Äbcd", "cab",
    ]
    .iter()
    .enumerate()
    {
        ix.upsert(1, &entry(&format!("p{i}"), n, i as u8), 0);
    }
    assert_eq!(names(&ix, "abc"), ["abc", "xABCx", "zabcz"]);
    assert_eq!(
        names(&ix, "äb"),
        ["Äbcd", "äbc"],
        "a 3-byte word of two characters"
    );
    assert_eq!(names(&ix, "bc ab"), ["abc", "xABCx", "zabcz"]);
    ix.remove(1, "p4");
    ix.upsert(1, &entry("p0", "renamed", 0), 0);
    assert_eq!(
        names(&ix, "abc"),
        ["xABCx"],
        "postings of gone names are skipped"
    );
    assert_eq!(names(&ix, "ab"), ["ab c", "cab", "xABCx"]);
}

#[test]
fn words_need_every_trigram_and_then_the_substring() {
    let mut ix = one_live_peer();
    ix.upsert(1, &entry("a", "isa saa aac", 1), 0);
    ix.upsert(1, &entry("b", "ISAAC", 2), 0);
    ix.upsert(1, &entry("c", "isaa", 3), 0);
    assert_eq!(names(&ix, "isaac"), ["ISAAC"], "all trigrams, not the word");
    // A rare trigram beside a common one: the common list is left to the confirmation.
    for i in 0..200 {
        ix.upsert(1, &named(&format!("n{i}"), &format!("common {i}")), 0);
    }
    ix.upsert(1, &entry("q", "qqq common", 5), 0);
    ix.upsert(1, &entry("r", "qqq commo n", 6), 0);
    assert_eq!(names(&ix, "qqq common"), ["qqq common"]);
    assert_eq!(names(&ix, "common qqq"), ["qqq common"]);
    assert_eq!(names(&ix, "mmo q"), ["qqq commo n", "qqq common"]);
    assert_eq!(names(&ix, "common 19").len(), 12, "19, 119 and 190 to 199");
    assert!(names(&ix, "common zzz").is_empty(), "a trigram no name has");
}

#[test]
fn ranks_as_the_reference_grouping_does() {
    use crate::query::{Row, group_and_rank};
    let mut ix = NameIndex::default();
    ix.set_peer(1, peer(1, 100));
    ix.set_peer(2, peer(2, 100));
    ix.set_peer(3, peer(3, 1)); // not live at 50
    let words = ["alpha", "beta", "gam", "Delta", "ab", "Straße"];
    // (peer, path) -> (name, content, shared_at)
    let mut truth: HashMap<(u64, String), (String, ContentId, i64)> = HashMap::new();
    let mut x: u64 = 7;
    for step in 0..12000i64 {
        xorshift(&mut x);
        let p = 1 + x % 3;
        let path = format!("p{}", x / 3 % 900);
        match x / 1000 % 997 {
            0 => {
                ix.remove_all(p);
                truth.retain(|k, _| k.0 != p);
            }
            1..=150 => {
                ix.remove(p, &path);
                truth.remove(&(p, path));
            }
            _ => {
                // Few distinct names, so files of one name (and content) gather peers.
                let y = x >> 20;
                let name = format!(
                    "{} {} {}",
                    words[(y % 6) as usize],
                    words[(y / 6 % 6) as usize],
                    y / 36 % 40
                );
                // One content id under several names: which name stands for it is checked too.
                let id: ContentId =
                    blake3::hash(&(y % 36 + 36 * (y / 36 % 40 / 2)).to_le_bytes()).into();
                let mut e = entry(&path, &name, 0);
                e.content_id = id;
                ix.upsert(p, &e, step);
                let key = (p, path);
                let at = match truth.get(&key) {
                    Some((_, old, at)) if *old == id => *at,
                    _ => step,
                };
                truth.insert(key, (name, id, at));
            }
        }
        if step % 500 == 0 {
            ix.maybe_rebuild();
        }
    }
    check(&ix);
    // Then again with peer 2 offline: one peer per group, so names decide the order.
    for offline in [None, Some(2)] {
        if let Some(p) = offline {
            ix.set_offline(p);
        }
        let live = |p: u64| p != 3 && Some(p) != offline;
        for q in [
            "alpha",
            "a",
            "beta alpha",
            "gam",
            "x 1",
            "delta beta 3",
            "alpha beta 7",
            "straße",
            "SSE",
            "aße a",
            "",
        ] {
            let query = Query::parse(q);
            for limit in [1, 3, 100, 1000] {
                let rows: Vec<Row<ContentId, PeerHit>> = truth
                    .iter()
                    .filter(|((p, _), (name, id, _))| live(*p) && query.matches(name, id))
                    .map(|((p, _), (name, id, at))| Row {
                        content_id: *id,
                        name: name.clone(),
                        size: 1,
                        peer: PeerHit {
                            peer_id: *p,
                            host: "h".into(),
                            port: *p as u16,
                            shared_at: *at,
                            last_seen: 100,
                            have: None,
                        },
                    })
                    .collect();
                let want: (Vec<FileHit>, bool) = group_and_rank(rows, &query, limit);
                assert_eq!(
                    every_plan(&ix, &query, limit, 50),
                    want,
                    "{q:?} limit {limit}"
                );
            }
        }
        if offline.is_none() {
            let all = ix.search(&Query::parse(""), 1000, 50).0;
            assert!(
                all.len() > 2 * 100 + 64,
                "{} groups: too few to cut while ranking",
                all.len()
            );
            let shared = all.iter().find(|h| h.peers.len() > 1);
            let shared = shared.expect("groups of several peers");
            let by_id = ix.search(&Query::Id(shared.content_id), 10, 50).0;
            assert_eq!(
                by_id,
                std::slice::from_ref(shared),
                "a content id finds its group"
            );
        }
    }
}

/// The answer of every search plan, checked to be the same.
fn every_plan(
    ix: &NameIndex,
    query: &Query<ContentId>,
    limit: usize,
    live_since: i64,
) -> (Vec<FileHit>, bool) {
    let encoded = |plan| {
        let (files, truncated) = ix.search_by(query, limit, live_since, plan).hits();
        let serde = Message::SearchResults(SearchResults { files, truncated }).encode_payload();
        let direct = ix.search_by(query, limit, live_since, plan).encode();
        assert_eq!(
            direct.unwrap(),
            serde.unwrap(),
            "the payload written from the index is the message encoded: {query:?} {plan:?}"
        );
    };
    encoded(Plan::Postings);
    encoded(Plan::Order);
    let (files, truncated) = ix.search(query, limit, live_since);
    let payload = ix.search_encoded(query, limit, live_since).unwrap();
    assert_eq!(
        payload,
        Message::SearchResults(SearchResults { files, truncated })
            .encode_payload()
            .unwrap(),
    );
    if let Some(quick) = ix.search_quick_encoded(query, limit, live_since) {
        assert_eq!(
            quick.unwrap(),
            payload,
            "answered quickly: {query:?} limit {limit}"
        );
    }
    let by_postings = ix
        .search_by(query, limit, live_since, Plan::Postings)
        .hits();
    let by_order = ix.search_by(query, limit, live_since, Plan::Order).hits();
    let short = |r: &(Vec<FileHit>, bool)| {
        let files: Vec<String> =
            r.0.iter()
                .map(|f| format!("{}/{}", f.name, f.peers.len()))
                .collect();
        (files, r.1)
    };
    assert_eq!(
        short(&by_order),
        short(&by_postings),
        "names: {query:?} limit {limit}"
    );
    assert_eq!(
        by_order, by_postings,
        "rank order against postings: {query:?} limit {limit}"
    );
    assert_eq!(
        ix.search(query, limit, live_since),
        by_postings,
        "auto: {query:?} limit {limit}"
    );
    by_postings
}

#[test]
fn rank_order_answers_as_the_postings_do_through_churn() {
    let mut ix = NameIndex::default();
    for p in 1..=4 {
        ix.set_peer(p, peer(p as u16, 100));
    }
    let words = ["alpha", "beta", "gam", "Delta", "ab"];
    let queries = [
        "alpha",
        "a",
        "beta alpha",
        "gam",
        "ab",
        "alpha 3",
        "delta",
        "",
        "zz",
        "ta 1",
    ];
    let mut x: u64 = 99;
    for step in 0..6000i64 {
        xorshift(&mut x);
        let p = 1 + x % 4;
        let path = format!("p{}", x / 4 % 700);
        match x / 1000 % 499 {
            0 => ix.remove_all(p),
            1..=60 => ix.remove(p, &path),
            _ => {
                // Some names are a bare word (exact matches), many are shared by several
                // peers under one content id, and some paths change content in place.
                let y = x >> 20;
                let name = match y % 9 {
                    0 => words[(y / 9 % 5) as usize].to_string(),
                    _ => format!(
                        "{} {} {}",
                        words[(y % 5) as usize],
                        words[(y / 5 % 5) as usize],
                        y / 25 % 30
                    ),
                };
                let mut e = entry(&path, &name, 0);
                e.content_id = blake3::hash(format!("{name}/{}", y % 3 / 2).as_bytes()).into();
                ix.upsert(p, &e, step);
            }
        }
        match step % 1000 {
            400 => ix.set_offline(2),
            800 => ix.set_peer(2, peer(2, 100)),
            _ => {}
        }
        if step % 1500 == 1499 {
            ix.maybe_rebuild();
        }
        // Often, so that some searches read files added since the order was built.
        if step % 10 == 0 {
            for q in ["alpha", "a", "ab"] {
                for limit in [1, 7] {
                    every_plan(&ix, &Query::parse(q), limit, 50);
                }
            }
        }
        if step % 150 == 0 {
            check(&ix);
            for q in queries {
                for limit in [1, 2, 7, 1000] {
                    every_plan(&ix, &Query::parse(q), limit, 50);
                }
            }
        }
    }
}

#[test]
fn a_search_that_would_read_much_of_the_index_is_not_answered_quickly() {
    let mut ix = one_live_peer();
    // 40,000 files: 39,000 named "common NNNNN", one in 100 of them with "some", one with
    // "rare"; the last 1,000, named "zzz late N", come last in rank order.
    for i in 0..40_000u32 {
        let mut name = format!("common {i:05}");
        if i % 100 == 0 {
            name.push_str(" some");
        }
        if i == 7_777 {
            name.push_str(" rare");
        }
        if i >= 39_000 {
            name = format!("zzz late {i}");
        }
        let mut e = named(&format!("f{i}"), &name);
        e.content_id = blake3::hash(&i.to_le_bytes()).into();
        ix.upsert(1, &e, 1);
    }
    ix.refresh_order();
    let quick = |q: &str, limit: usize| ix.search_quick_encoded(&Query::parse(q), limit, 0);
    // Broad and found early in rank order ("common", "some" for 10), or few postings to read
    // ("rare"; "some" for 500: its 390 files): answered quickly, as the full search answers.
    for (q, limit) in [("common", 100), ("some", 10), ("some", 500), ("rare", 100)] {
        let payload = ix.search_encoded(&Query::parse(q), limit, 0).unwrap();
        let got = quick(q, limit).unwrap_or_else(|| panic!("{q:?} is answered quickly"));
        assert_eq!(got.unwrap(), payload, "{q:?} for {limit}");
    }
    // "common" for 1,000 reads 1,000 names, and its postings list 39,000; "late" passes over
    // 39,000 signatures of the order first, and has 1,000 postings: neither is answered
    // quickly, and the full search still is.
    assert!(quick("common", 1_000).is_none());
    assert!(quick("late", 100).is_none());
    assert_eq!(ix.search(&Query::parse("late"), 100, 0).0.len(), 100);
}

#[test]
fn a_quick_search_counts_files_named_alike_and_whole_groups() {
    let mut ix = one_live_peer();
    // 2,000 files named "readme.md", and one content id of two files named "old readme.md"
    // (more copies: before them in rank order, so the walk stops there); one content id of
    // 1,000 files of which one is named "dup special" (most copies: first in rank order);
    // 1,000 named "other special N"; 3,000 others.
    for i in 0..7_002u32 {
        let (name, id) = match i {
            0..2_000 => ("readme.md".to_string(), blake3::hash(&i.to_le_bytes())),
            2_000 => ("dup special".to_string(), blake3::hash(b"dup")),
            2_001..3_000 => (format!("copy {i}"), blake3::hash(b"dup")),
            6_000..6_002 => ("old readme.md".to_string(), blake3::hash(b"old")),
            6_002.. => (format!("other special {i}"), blake3::hash(&i.to_le_bytes())),
            _ => (format!("other {i}"), blake3::hash(&i.to_le_bytes())),
        };
        let mut e = named(&format!("f{i}"), &name);
        e.content_id = id.into();
        ix.upsert(1, &e, 1);
    }
    ix.refresh_order();
    let dup = Query::Id(blake3::hash(b"dup").into());
    let other = Query::Id(blake3::hash(&4_000u32.to_le_bytes()).into());
    for (q, quick) in [
        (Query::parse("readme.md"), false),
        (Query::parse("special"), false),
        (dup.clone(), false),
        (other, true),
        (Query::parse("other 4000"), true),
    ] {
        let full = ix.search_encoded(&q, 10, 0).unwrap();
        match ix.search_quick_encoded(&q, 10, 0) {
            Some(got) => {
                assert!(quick, "{q:?} reads more than a quick search may");
                assert_eq!(got.unwrap(), full, "{q:?}");
            }
            None => assert!(!quick, "{q:?} is answered quickly"),
        }
    }
    assert_eq!(ix.search(&Query::parse("readme.md"), 10, 0).0.len(), 10);
    let (hits, _) = ix.search(&dup, 10, 0);
    assert_eq!((hits.len(), hits[0].peers.len()), (1, 1));
}

#[test]
fn exact_names_are_found_whatever_their_case() {
    let mut ix = one_live_peer();
    ix.upsert(1, &named("a", "Report"), 1);
    ix.upsert(1, &named("b", "REPORT"), 1);
    ix.upsert(1, &named("c", "report 2"), 1);
    ix.upsert(1, &named("d", "Ünïcode"), 1);
    ix.remove(1, "b");
    assert_eq!(ix.exact_named("report").len(), 1);
    assert_eq!(ix.exact_named("ünïcode").len(), 1);
    assert!(ix.exact_named("report 3").is_empty());
    ix.maybe_rebuild();
    check(&ix);
}

#[test]
fn a_file_given_a_new_content_id_joins_its_new_group_at_once() {
    let mut ix = NameIndex::default();
    for p in 1..=3 {
        ix.set_peer(p, peer(p as u16, 100));
    }
    let file = |path: &str, name: &str, content: u8| entry(path, name, content);
    ix.upsert(1, &file("p", "x y", 1), 1);
    ix.upsert(1, &file("a", "x a", 2), 1);
    ix.upsert(2, &file("a", "x a", 2), 1);
    ix.upsert(2, &file("z", "x z", 3), 1);
    ix.upsert(3, &file("z", "x z", 3), 1);
    let q = Query::parse("x");
    assert_eq!(every_plan(&ix, &q, 1, 50).0[0].peers.len(), 2);
    // The same path and name, now with the content of "x z": three peers have it.
    ix.upsert(1, &file("p", "x y", 3), 2);
    let top = every_plan(&ix, &q, 1, 50).0;
    assert_eq!(top[0].content_id, ContentId::from_bytes([3; 32]));
    assert_eq!(top[0].peers.len(), 3);
}

#[test]
fn groups_of_one_name_are_told_apart_by_content_id_when_reading_in_order() {
    let mut ix = one_live_peer();
    ix.upsert(1, &entry("b", "x q", 5), 1);
    ix.upsert(1, &entry("a", "x q", 4), 1);
    ix.upsert(1, &entry("c", "x r", 3), 1);
    let (top, truncated) = every_plan(&ix, &Query::parse("x"), 1, 0);
    assert_eq!(top[0].content_id, ContentId::from_bytes([4; 32]));
    assert!(truncated);
}

#[test]
fn names_alike_in_their_first_16_bytes_are_all_read_before_stopping() {
    let mut ix = one_live_peer();
    // The order sorts these by slot only (their first 16 bytes are equal): a search must not
    // stop at "-n" because "-m" was before it.
    ix.upsert(1, &entry("m", "0123456789abcdef-m", 1), 1);
    ix.upsert(1, &entry("n", "0123456789abcdef-n", 2), 1);
    ix.upsert(1, &entry("b", "0123456789abcdef-b", 3), 1);
    let (top, truncated) = every_plan(&ix, &Query::parse("0123"), 1, 0);
    assert_eq!(top[0].name, "0123456789abcdef-b");
    assert!(truncated);
}

#[test]
fn an_order_made_before_the_slots_were_renumbered_is_refused() {
    let mut ix = one_live_peer();
    for i in 0..3000 {
        ix.upsert(1, &named(&format!("p{i}"), &format!("n {i}")), 1);
    }
    let keys = ix.order_wanted().expect("no order yet: one is wanted");
    assert!(ix.order_wanted().is_none(), "one maker at a time");
    for i in 0..2000 {
        ix.remove(1, &format!("p{i}"));
    }
    ix.maybe_rebuild();
    ix.install_order(Some(keys.into_order()));
    assert!(ix.order.current().is_none(), "stale slots");
    ix.refresh_order();
    let order = ix.order.current().expect("a fresh order");
    assert_eq!(order.files(), 1000);
    check(&ix);
}

#[test]
fn files_of_one_name_are_found_exactly_through_any_removals() {
    let mut ix = one_live_peer();
    let n = 300u32;
    for i in 0..n {
        // Names alike but for case: one entry for all of them.
        let name = if i % 2 == 0 { "Same Name" } else { "SAME name" };
        ix.upsert(1, &entry(&format!("p{i}"), name, (i % 7) as u8), 1);
    }
    ix.upsert(1, &entry("other", "same name 2", 9), 1);
    let exact = |ix: &NameIndex| ix.exact_named("same name").len();
    assert_eq!(exact(&ix), n as usize);
    // The first, some in the middle, the last, then the first again (behind dead ones).
    let mut gone = 0;
    for i in [0, 150, 151, 299, 1, 2, 3] {
        ix.remove(1, &format!("p{i}"));
        gone += 1;
        assert_eq!(exact(&ix), n as usize - gone);
    }
    check(&ix);
    for i in 0..n {
        ix.remove(1, &format!("p{i}"));
    }
    assert_eq!(exact(&ix), 0);
    assert_eq!(ix.exact_named("same name 2").len(), 1);
    ix.upsert(1, &entry("again", "same NAME", 1), 2);
    assert_eq!(exact(&ix), 1);
    ix.maybe_rebuild();
    check(&ix);
    assert_eq!(exact(&ix), 1);
}
