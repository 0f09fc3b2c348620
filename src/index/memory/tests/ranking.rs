//! Tests of how matches are ranked: against the reference grouping of the query rules, the rank order against the postings, pages and totals, and quick searches.

use super::*;
use crate::content::Digest;

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
        let n = x / 3 % 900;
        let path = match n % 3 {
            0 => format!("p{n}"),
            1 => format!("alpha/p{n}"),
            _ => format!("music/Beta x/p{n}"),
        };
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
            "music",
            "beta x",
            "alpha -music",
            "",
        ] {
            let query = Query::parse(q);
            for (offset, limit) in [(0, 1), (0, 3), (0, 100), (0, 1000), (1, 3), (100, 100)] {
                let rows: Vec<Row<ContentId, PeerHit>> = truth
                    .iter()
                    .filter(|((p, path), (name, id, _))| {
                        let shown = match path.rsplit_once('/') {
                            Some((dir, _)) => format!("{dir}/{name}"),
                            None => name.clone(),
                        };
                        let facts = crate::query::FileFacts {
                            path: shown.as_bytes(),
                            size: 1,
                            mtime: 0,
                        };
                        live(*p) && query.matches(&facts, id)
                    })
                    .map(|((p, _), (name, id, at))| Row {
                        content_id: *id,
                        name: name.clone(),
                        size: 1,
                        peer: PeerHit {
                            key: Some(Digest::default()),
                            peer_id: *p,
                            host: "h".into(),
                            port: *p as u16,
                            shared_at: *at,
                            last_seen: 100,
                            have: None,
                            path: None,
                            reach: None,
                        },
                    })
                    .collect();
                let want: (Vec<FileHit>, bool, usize) = group_and_rank(rows, &query, offset, limit);
                let mut got = answer(&ix, &query, offset, limit, 50);
                // Which of a peer's copies gives the path is checked elsewhere.
                for f in &mut got.files {
                    for p in &mut f.peers {
                        p.path = None;
                    }
                }
                assert_eq!(
                    (got.files, got.truncated, got.total as usize),
                    want,
                    "{q:?} offset {offset} limit {limit}"
                );
            }
        }
        if offline.is_none() {
            let all = ix.search(&Query::parse(""), 0, 1000, 50).files;
            assert!(
                all.len() > 2 * 100 + 64,
                "{} groups: too few to cut while ranking",
                all.len()
            );
            let shared = all.iter().find(|h| h.peers.len() > 1);
            let shared = shared.expect("groups of several peers");
            let by_id = ix.search(&Query::Id(shared.content_id), 0, 10, 50).files;
            assert_eq!(
                by_id,
                std::slice::from_ref(shared),
                "a content id finds its group"
            );
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
    let quick = |q: &str, limit: usize| ix.search_quick_encoded(&Query::parse(q), 0, limit, 0);
    // Broad and found early in rank order ("common", "some" for 10), or few postings to read
    // ("rare"; "some" for 500: its 390 files): answered quickly, as the full search answers.
    for (q, limit) in [("common", 100), ("some", 10), ("some", 500), ("rare", 100)] {
        let payload = ix.search_encoded(&Query::parse(q), 0, limit, 0).unwrap();
        let got = quick(q, limit).unwrap_or_else(|| panic!("{q:?} is answered quickly"));
        assert_eq!(got.unwrap(), payload, "{q:?} for {limit}");
    }
    // "common" for 1,000 reads 1,000 names, and its postings list 39,000; "late" passes over
    // 39,000 signatures of the order first, and has 1,000 postings: neither is answered
    // quickly, and the full search still is.
    assert!(quick("common", 1_000).is_none());
    assert!(quick("late", 100).is_none());
    assert_eq!(ix.search(&Query::parse("late"), 0, 100, 0).files.len(), 100);
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
    assert_eq!(answer(&ix, &q, 0, 1, 50).files[0].peers.len(), 2);
    // The same path and name, now with the content of "x z": three peers have it.
    ix.upsert(1, &file("p", "x y", 3), 2);
    let top = answer(&ix, &q, 0, 1, 50).files;
    assert_eq!(top[0].content_id, ContentId::from_bytes([3; 32]));
    assert_eq!(top[0].peers.len(), 3);
}

#[test]
fn groups_of_one_name_are_told_apart_by_content_id() {
    let mut ix = one_live_peer();
    ix.upsert(1, &entry("b", "x q", 5), 1);
    ix.upsert(1, &entry("a", "x q", 4), 1);
    ix.upsert(1, &entry("c", "x r", 3), 1);
    let top = answer(&ix, &Query::parse("x"), 0, 1, 0);
    assert_eq!(top.files[0].content_id, ContentId::from_bytes([4; 32]));
    assert!(top.truncated);
    assert_eq!(top.total, 3);
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
                    answer(&ix, &Query::parse(q), 0, limit, 50);
                }
            }
        }
        if step % 150 == 0 {
            check(&ix);
            for q in queries {
                for limit in [1, 2, 7, 1000] {
                    answer(&ix, &Query::parse(q), 0, limit, 50);
                }
            }
        }
    }
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
        let full = ix.search_encoded(&q, 0, 10, 0).unwrap();
        match ix.search_quick_encoded(&q, 0, 10, 0) {
            Some(got) => {
                assert!(quick, "{q:?} reads more than a quick search may");
                assert_eq!(got.unwrap(), full, "{q:?}");
            }
            None => assert!(!quick, "{q:?} is answered quickly"),
        }
    }
    assert_eq!(
        ix.search(&Query::parse("readme.md"), 0, 10, 0).files.len(),
        10
    );
    let hits = ix.search(&dup, 0, 10, 0).files;
    assert_eq!((hits.len(), hits[0].peers.len()), (1, 1));
}

#[test]
fn names_alike_in_their_first_16_bytes_are_all_read_before_stopping() {
    let mut ix = one_live_peer();
    // The order sorts these by slot only (their first 16 bytes are equal): a search must not
    // stop at "-n" because "-m" was before it.
    ix.upsert(1, &entry("m", "0123456789abcdef-m", 1), 1);
    ix.upsert(1, &entry("n", "0123456789abcdef-n", 2), 1);
    ix.upsert(1, &entry("b", "0123456789abcdef-b", 3), 1);
    let found = answer(&ix, &Query::parse("0123"), 0, 1, 0);
    let (top, truncated) = (found.files, found.truncated);
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
fn a_broad_search_read_in_rank_order_estimates_its_count() {
    let mut ix = one_live_peer();
    // 20,000 files, one in 4 holding "wide" (in its directory for half of those).
    for i in 0..20_000u32 {
        let (dir, name) = match i % 8 {
            0 => ("d".to_string(), format!("wide {i:05}")),
            4 => ("wide".to_string(), format!("x {i:05}")),
            _ => ("d".to_string(), format!("narrow {i:05}")),
        };
        let mut e = named(&format!("{dir}/{name}"), &name);
        e.content_id = blake3::hash(&i.to_le_bytes()).into();
        ix.upsert(1, &e, 1);
    }
    ix.refresh_order();
    let q = Query::parse("wide");
    let found = ix.search(&q, 0, 10, 0);
    assert_eq!(found.files.len(), 10);
    assert!(
        found.files.iter().all(|f| f.name.starts_with("wide")),
        "names first"
    );
    let exact = ix.search_by(&q, 0, 10, 0, Plan::Postings).hits();
    assert_eq!(exact.total, 5_000);
    assert!(!exact.estimated);
    // Read in rank order, it stopped after the first ten: the count is an estimate, from the
    // shortest trigram list ("wid", "ide": the 5,000 files holding "wide").
    assert!(found.estimated && found.truncated);
    assert!(
        (5_000..=10_000).contains(&found.total),
        "an estimate near 5,000: {}",
        found.total
    );
    // Narrow enough for the postings: counted exactly.
    let few = ix.search(&Query::parse("wide 0000"), 0, 10, 0);
    let want = (0..20_000u32)
        .filter(|i| match i % 8 {
            0 => format!("d/wide {i:05}").contains("0000"),
            4 => format!("wide/x {i:05}").contains("0000"),
            _ => false,
        })
        .count() as u64;
    assert_eq!((few.total, few.estimated), (want, false));
}
