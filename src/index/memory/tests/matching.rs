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
    let hits = ix.search(&Query::parse("isaac"), 0, 10, 5).files;
    assert_eq!(hits.len(), 1, "peer 2 expired");
    // Rename, remove, reset: stale postings never show.
    ix.upsert(1, &entry("a/Isaac.py", "Newton.py", 1), 9);
    assert_eq!(names(&ix, "isaac"), ["isaac old.py"]);
    assert_eq!(
        ix.search(&Query::parse("newton"), 0, 1, 0).files[0].peers[0].shared_at,
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
    let dirs = ["docs/alpha", "src", "Gamma Ray/beta", "x"];
    let mut ix = one_live_peer();
    // path -> (name, size, mtime)
    let mut truth: HashMap<String, (String, u64, i64)> = HashMap::new();
    let mut x: u64 = 42;
    for step in 0..5000u64 {
        xorshift(&mut x);
        let n = x % 700;
        let dir = dirs[(n % 5) as usize % dirs.len()];
        let path = if n % 5 == 4 {
            format!("p{n}")
        } else {
            format!("{dir}/p{n}")
        };
        if x.is_multiple_of(5) {
            ix.remove(1, &path);
            truth.remove(&path);
        } else {
            let name = format!(
                "{} {}{} {step}.{}",
                words[(x % 6) as usize],
                words[(x / 6 % 6) as usize],
                x % 97,
                ["txt", "PDF", "mp3"][(x / 97 % 3) as usize]
            );
            let mut e = entry(&path, &name, 0);
            e.content_id = blake3::hash(name.as_bytes()).into();
            e.size = x % 1000;
            e.mtime = (x / 1000 % 1000) as i64;
            ix.upsert(1, &e, 0);
            truth.insert(path, (name, e.size, e.mtime));
        }
        if step % 100 == 0 {
            ix.maybe_rebuild();
            check(&ix);
        }
    }
    check(&ix);
    let filters = [
        crate::query::Filters::default(),
        crate::query::Filters {
            exts: vec!["pdf".into(), "mp3".into()],
            min_size: Some(100),
            max_size: Some(800),
            ..Default::default()
        },
        crate::query::Filters {
            newer: Some(200),
            older: Some(700),
            ..Default::default()
        },
    ];
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
        "docs",
        "ray/beta p1",
        "src alpha -beta",
        "-x",
        "\"a d\"",
        "\"ta a\" -\"gamma ray\"",
        "",
    ] {
        for f in &filters {
            let query = Query::with_filters(q, f.clone());
            let (words, exclude) = match &query {
                Query::Words { words, exclude, .. } => (words.clone(), exclude.clone()),
                Query::Id(_) => unreachable!(),
            };
            let mut want: Vec<String> = truth
                .iter()
                .filter(|(path, (name, size, mtime))| {
                    let shown = match path.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{name}").to_lowercase(),
                        None => name.to_lowercase(),
                    };
                    let ext = name.rsplit('.').next().unwrap_or("").to_lowercase();
                    words.iter().all(|w| shown.contains(w.as_str()))
                        && !exclude.iter().any(|w| shown.contains(w.as_str()))
                        && (f.exts.is_empty() || f.exts.contains(&ext))
                        && f.min_size.is_none_or(|m| *size >= m)
                        && f.max_size.is_none_or(|m| *size <= m)
                        && f.newer.is_none_or(|t| *mtime >= t)
                        && f.older.is_none_or(|t| *mtime < t)
                })
                .map(|(_, (name, _, _))| name.clone())
                .collect();
            want.sort();
            want.dedup();
            let found = ix.search(&query, 0, 100_000, 0);
            assert_eq!(found.total, want.len() as u64, "{q} {f:?}");
            let mut got: Vec<String> = found.files.into_iter().map(|f| f.name).collect();
            got.sort();
            assert_eq!(got, want, "{q} {f:?}");
        }
    }
}

#[test]
fn directories_are_searched_and_names_rank_first() {
    let mut ix = one_live_peer();
    ix.upsert(1, &entry("usr/include/stdio.h", "stdio.h", 1), 1);
    ix.upsert(1, &entry("usr/include/x86/bits/stdio.h", "stdio.h", 2), 1);
    ix.upsert(1, &entry("stdio/readme", "readme", 3), 1);
    ix.upsert(1, &entry("a/stdio.h.gz", "stdio.h.gz", 4), 1);
    ix.upsert(1, &entry("python3/doc/changelog.gz", "changelog.gz", 5), 1);
    let found = answer(&ix, &Query::parse("stdio"), 0, 10, 0);
    let listed: Vec<&str> = found.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(listed, ["stdio.h", "stdio.h", "stdio.h.gz", "readme"]);
    let paths: Vec<&str> = found
        .files
        .iter()
        .map(|f| f.peers[0].path.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "usr/include/stdio.h",
            "usr/include/x86/bits/stdio.h",
            "a/stdio.h.gz",
            "stdio/readme"
        ]
    );
    assert_eq!(found.total, 4);
    assert_eq!(names(&ix, "python3 changelog"), ["changelog.gz"]);
    assert_eq!(names(&ix, "stdio.h -bits -gz"), ["stdio.h"]);
    // Pages: 2 at a time.
    let q = Query::parse("stdio");
    let p1 = answer(&ix, &q, 0, 2, 0);
    let p2 = answer(&ix, &q, 2, 2, 0);
    let p3 = answer(&ix, &q, 4, 2, 0);
    assert!(p1.truncated && !p2.truncated && !p3.truncated);
    assert_eq!((p1.total, p2.total, p3.total), (4, 4, 4));
    let paged: Vec<FileHit> = [p1.files, p2.files, p3.files].concat();
    assert_eq!(paged, found.files);
    // A new modification time is kept in place.
    let mut e = entry("usr/include/stdio.h", "stdio.h", 1);
    e.mtime = 500;
    ix.upsert(1, &e, 2);
    let newer = Query::with_filters(
        "stdio",
        crate::query::Filters {
            newer: Some(400),
            ..Default::default()
        },
    );
    assert_eq!(answer(&ix, &newer, 0, 10, 0).total, 1);
    check(&ix);
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
