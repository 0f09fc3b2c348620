//! Finding files the way people look for them, with the real binary: paths in results, words
//! matching directories, exclusions, phrases, filters, totals and pages, and `get --query`.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;

/// A tree with many same-named files in different directories, like a system's headers and
/// documentation: `stdio.h` four times, `changelog.gz` in every package's doc directory.
fn tree(root: &Path) {
    let files: &[(&str, &[u8])] = &[
        ("usr/include/stdio.h", b"/* libc stdio */"),
        (
            "usr/include/x86_64-linux-gnu/bits/stdio.h",
            b"/* bits stdio */",
        ),
        ("usr/lib/gcc/include/ssp/stdio.h", b"/* ssp stdio */"),
        ("usr/share/doc/tcc/include/stdio.h", b"/* tcc stdio */"),
        ("usr/share/doc/python3/changelog.gz", b"python3 changes"),
        (
            "usr/share/doc/python3-dev/changelog.gz",
            b"python3-dev changes",
        ),
        ("usr/share/doc/bash/changelog.gz", b"bash changes"),
        (
            "usr/share/doc/bash/old stuff/changelog.gz",
            b"old bash changes",
        ),
        ("books/rust book.pdf", b"%PDF rust"),
        ("books/rust notes.epub", b"epub rust notes"),
        (
            "music/rust song.mp3",
            b"ID3 rust song, a long one: 0123456789",
        ),
    ];
    for (path, bytes) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, bytes).expect("write");
    }
    // An old file, for the date filters.
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000); // 2017-07-14
    std::fs::File::options()
        .write(true)
        .open(root.join("books/rust notes.epub"))
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `search --json` as (name, path) pairs, in result order, and the total.
fn found(ix: &str, home: &Path, args: &[&str]) -> (Vec<(String, String)>, u64) {
    let mut all = vec!["search", "--json", "--index", ix];
    all.extend_from_slice(args);
    let out = run_peershare(&all, home);
    if !out.status.success() {
        return (Vec::new(), 0);
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let files = doc["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or("").to_string(),
                f["peers"][0]["path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (files, doc["total"].as_u64().expect("total"))
}

fn paths(r: &(Vec<(String, String)>, u64)) -> Vec<&str> {
    r.0.iter().map(|(_, p)| p.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn results_say_where_each_file_lives_and_words_match_directories() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    tree(&share);
    let index = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let ix = index.addr();
    let _peer = start_peer(&share, Some(ix.clone()), &t.path().join("peer")).await;
    let home = t.path().join("client");
    let ix2 = ix.clone();
    let h2 = home.clone();
    tokio::task::spawn_blocking(move || {
        let (ix, home) = (ix2, h2);
        // Four stdio.h, each with its directory, in text and JSON.
        let text = stdout(&run_peershare(
            &["search", "stdio.h", "--index", &ix],
            &home,
        ));
        for dir in [
            "usr/include/stdio.h",
            "usr/include/x86_64-linux-gnu/bits/stdio.h",
            "usr/lib/gcc/include/ssp/stdio.h",
            "usr/share/doc/tcc/include/stdio.h",
        ] {
            assert!(text.contains(dir), "{dir} in {text}");
        }
        assert!(text.contains("(4 files)"), "{text}");
        let r = found(&ix, &home, &["stdio.h"]);
        assert_eq!(r.1, 4);
        assert_eq!(r.0.len(), 4);
        // Directory words: python3's changelog, and python3-dev's.
        let r = found(&ix, &home, &["python3", "changelog"]);
        let mut got = paths(&r);
        got.sort();
        assert_eq!(
            got,
            [
                "usr/share/doc/python3-dev/changelog.gz",
                "usr/share/doc/python3/changelog.gz"
            ]
        );
        assert_eq!(r.1, 2, "{r:?}");
        // Names holding the word come before files found through their directories.
        let r = found(&ix, &home, &["include"]);
        assert_eq!(r.1, 4);
        let r = found(&ix, &home, &["rust"]);
        assert_eq!(r.1, 3);
        // Exclusions and phrases, typed as they read.
        let r = found(&ix, &home, &["stdio.h", "-bits", "-ssp"]);
        assert_eq!(r.1, 2, "{r:?}");
        assert!(
            paths(&r)
                .iter()
                .all(|p| !p.contains("bits") && !p.contains("ssp"))
        );
        let r = found(&ix, &home, &["changelog", "\"old stuff\""]);
        assert_eq!(paths(&r), ["usr/share/doc/bash/old stuff/changelog.gz"]);
        let r = found(&ix, &home, &["changelog", "-\"old stuff\"", "-python3"]);
        assert_eq!(paths(&r), ["usr/share/doc/bash/changelog.gz"]);
        // Filters.
        let r = found(&ix, &home, &["rust", "--ext", "pdf,EPUB"]);
        assert_eq!(r.1, 2);
        let r = found(&ix, &home, &["rust", "--type", "audio"]);
        assert_eq!(paths(&r), ["music/rust song.mp3"]);
        let r = found(&ix, &home, &["rust", "--min-size", "20"]);
        assert_eq!(paths(&r), ["music/rust song.mp3"]);
        let r = found(&ix, &home, &["rust", "--max-size", "9"]);
        assert_eq!(paths(&r), ["books/rust book.pdf"]);
        let r = found(&ix, &home, &["rust", "--older", "2020-01-01"]);
        assert_eq!(paths(&r), ["books/rust notes.epub"]);
        let r = found(&ix, &home, &["rust", "--newer", "30days"]);
        assert_eq!(r.1, 2);
        // No word, only filters or exclusions: every file that passes them.
        let r = found(&ix, &home, &["--type", "audio"]);
        assert_eq!(paths(&r), ["music/rust song.mp3"]);
        let r = found(&ix, &home, &["-python3", "-old", "--ext", "gz"]);
        assert_eq!(paths(&r), ["usr/share/doc/bash/changelog.gz"]);
        let out = run_peershare(&["search", "--index", &ix], &home);
        assert!(!out.status.success(), "nothing to look for");
    })
    .await
    .unwrap();
    index.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn totals_pages_and_limits_say_what_helps() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    for i in 0..25 {
        let p = share
            .join(format!("d{}", i % 3))
            .join(format!("same {i}.txt"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("file {i}")).unwrap();
    }
    let index = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let ix = index.addr();
    let _peer = start_peer(&share, Some(ix.clone()), &t.path().join("peer")).await;
    let home = t.path().join("client");
    tokio::task::spawn_blocking(move || {
        let mut seen = std::collections::HashSet::new();
        for page in 1..=3 {
            let p = page.to_string();
            let r = found(&ix, &home, &["same", "--limit", "10", "--page", &p]);
            assert_eq!(r.1, 25);
            assert_eq!(r.0.len(), if page == 3 { 5 } else { 10 });
            for (_, path) in r.0 {
                assert!(seen.insert(path), "page {page} repeats a file");
            }
        }
        assert_eq!(seen.len(), 25, "the pages hold every file once");
        let text = stdout(&run_peershare(
            &["search", "same", "--limit", "10", "--index", &ix],
            &home,
        ));
        assert!(
            text.contains("files 1-10 of 25; --page 2 for the next 10 (or --limit up to 1000)"),
            "{text}"
        );
        let text = stdout(&run_peershare(
            &["search", "same", "--limit", "1000", "--index", &ix],
            &home,
        ));
        assert!(text.contains("(25 files)"), "{text}");
        assert!(!text.contains("--limit up to"), "{text}");
        // Past the last page: a clear error.
        let out = run_peershare(&["search", "same", "--page", "9", "--index", &ix], &home);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("past the last of the 25 files"), "{err}");
        // Limits outside 1..=1000 are refused, saying the range.
        for bad in ["0", "5000"] {
            let out = run_peershare(&["search", "same", "--limit", bad, "--index", &ix], &home);
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("1..=1000"), "{err}");
        }
    })
    .await
    .unwrap();
    index.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_query_downloads_every_match_and_refuses_too_many() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    tree(&share);
    let index = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let ix = index.addr();
    let _peer = start_peer(&share, Some(ix.clone()), &t.path().join("peer")).await;
    let home = t.path().join("client");
    let out_dir = t.path().join("out");
    let share2 = share.clone();
    tokio::task::spawn_blocking(move || {
        let o = out_dir.to_str().unwrap();
        let out = run_peershare(
            &[
                "get",
                "--query",
                "changelog",
                "-python3",
                "-o",
                o,
                "--index",
                &ix,
            ],
            &home,
        );
        stdout(&out);
        // The result set keeps its structure: each file at its path.
        for p in [
            "usr/share/doc/bash/changelog.gz",
            "usr/share/doc/bash/old stuff/changelog.gz",
        ] {
            assert_eq!(b3sum(&out_dir.join(p)), b3sum(&share2.join(p)), "{p}");
        }
        assert_eq!(files_in(&out_dir).len(), 1, "only usr/ at the top");
        // --flat: side by side, the second name numbered.
        let flat = out_dir.parent().unwrap().join("flat");
        let f = flat.to_str().unwrap();
        stdout(&run_peershare(
            &[
                "get",
                "--query",
                "changelog",
                "-python3",
                "--flat",
                "-o",
                f,
                "--index",
                &ix,
            ],
            &home,
        ));
        let mut names: Vec<String> = files_in(&flat)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["changelog (1).gz", "changelog.gz"]);
        let out = run_peershare(
            &[
                "get",
                "--query",
                "stdio.h",
                "--max-files",
                "3",
                "-o",
                o,
                "--index",
                &ix,
            ],
            &home,
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("4 files match") && err.contains("--max-files"),
            "{err}"
        );
        assert_eq!(files_in(&out_dir).len(), 1, "nothing more downloaded");
    })
    .await
    .unwrap();
    index.stop().await;
}

#[tokio::test]
async fn searches_beyond_the_limits_and_lying_file_lists_are_refused_alone() {
    use peershare::identity::Identity;
    use peershare::index::IndexClient;
    use peershare::protocol::{FileEntry, Limits, MAX_SEARCH_OFFSET, Search};
    let t = tempfile::tempdir().unwrap();
    let index = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let mut c = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .unwrap();
    let bad = [
        (
            Search {
                query: "a".into(),
                limit: 10,
                offset: MAX_SEARCH_OFFSET + 1,
                ..Search::default()
            },
            "offset",
        ),
        (
            Search {
                query: "a".into(),
                limit: 10,
                exts: (0..65).map(|i| format!("e{i}")).collect(),
                ..Search::default()
            },
            "extensions",
        ),
        (
            Search {
                query: "a".into(),
                limit: 10,
                exts: vec!["../x".into()],
                ..Search::default()
            },
            "invalid extension",
        ),
    ];
    for (s, needle) in bad {
        let err = c.search_with(s).await.unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    // The connection still answers.
    assert_eq!(c.search("a", 10).await.unwrap().total, 0);
    // A file list whose name is not its path's last part is refused whole.
    let me = Identity::ephemeral().unwrap();
    let fp = FakePeer::new(&me).await;
    let mut p = fp.connect(&index.addr()).await;
    p.register(&me, "127.0.0.1", fp.port, Default::default(), 1)
        .await
        .unwrap();
    let lying = FileEntry {
        path: "docs/report.pdf".into(),
        name: "invoice.pdf".into(),
        size: 1,
        content_id: blake3::hash(b"x").into(),
        mtime: 0,
        have: None,
    };
    let err = p
        .sync_files(true, vec![lying], vec![], Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("last component"), "{err}");
    index.stop().await;
}
