//! Tests of the parts behind the name index: the links of each peer's and each content id's files, the path keys, the postings, the name arena's compaction, and the generation.

use super::*;

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
                key: Default::default(),
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
        let hits = ix.search(&Query::Id(id), 0, 10, 0).files;
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
        ix.search(&Query::Id(id), 0, 10, 0).files[0].peers[0].have,
        Some(vec![0x80])
    );
    ix.remove(2, "f2");
    assert!(peers(&ix).is_empty());
    assert!(ix.contents.is_empty() && ix.haves.is_empty());
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
        ix.trigrams.postings() < 10_000,
        "{} postings for one file",
        ix.trigrams.postings()
    );
    assert_eq!(names(&ix, "number 19999"), ["a fresh name number 19999"]);
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
        .map(|i| 10 + format!("churned name {i}").len())
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
    assert_eq!(
        ix.search(&Query::parse("churned"), 0, 5000, 0).files.len(),
        1000
    );
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
    let hit = &ix.search(&Query::parse("uno"), 0, 1, 0).files[0];
    assert_eq!(
        (hit.size, hit.peers[0].shared_at),
        (7, 0),
        "same content keeps its time"
    );
    ix.upsert(1, &entry("same/path", "uno.txt", 3), 9);
    let hit = &ix.search(&Query::parse("uno"), 0, 1, 0).files[0];
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
