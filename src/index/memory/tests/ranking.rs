//! Tests of how matches are ranked: against the reference grouping of the query rules, pages and totals, and quick searches.

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
    let quick = |q: &str, limit: usize| ix.search_quick_encoded(&Query::parse(q), 0, limit, 0);
    // Few postings to read ("rare"; "some": its 390 files): answered quickly, as the full
    // search answers.
    for (q, limit) in [("some", 10), ("some", 500), ("rare", 100)] {
        let payload = ix.search_encoded(&Query::parse(q), 0, limit, 0).unwrap();
        let got = quick(q, limit).unwrap_or_else(|| panic!("{q:?} is answered quickly"));
        assert_eq!(got.unwrap(), payload, "{q:?} for {limit}");
    }
    // "common" lists 39,000 files, "late" 1,000 (and "zzz" too): counting them all is not
    // quick, and the full search still answers, with the count.
    assert!(quick("common", 10).is_none());
    assert!(quick("late", 100).is_none());
    let late = ix.search(&Query::parse("late"), 0, 100, 0);
    assert_eq!((late.files.len(), late.total), (100, 1_000));
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
