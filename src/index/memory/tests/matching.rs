//! Tests of which files a query finds: substrings, words, ids and liveness, the trigram lists, exact names, and a brute-force search after churn.

use super::*;

#[test]
fn substring_words_ids_and_liveness() {
    let mut ix = NameIndex::default();
    let live = PeerState {
        key: Default::default(),
        host: "h".into(),
        port: 1,
        last_seen: 10,
        online: true,
    };
    ix.set_peer(1, live.clone());
    ix.set_peer(
        2,
        PeerState {
            key: Default::default(),
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
