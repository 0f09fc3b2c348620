//! `browse` and `get PEER:PATH`: a peer's tree listed with sizes and counts, paged, and
//! downloaded with its structure from every source; hostile paths, planted links and bad
//! `Browse` requests.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use peershare::content::{ContentId, Digest};
use peershare::identity::Identity;
use peershare::protocol::{Browse, ErrorCode, FileEntry, MAX_BROWSE_LIMIT, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A generated tree like a system's documentation: 30 packages with a `changelog.gz` and a
/// `copyright` each (same names, different bytes), a `python3` directory with subdirectories,
/// a file of several pieces, and two empty `__init__.py` (one content id at two paths).
fn make_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..30u64 {
        files.insert(
            format!("docs/pkg{i:02}/changelog.gz"),
            data(100 + i as usize * 37, i),
        );
        files.insert(format!("docs/pkg{i:02}/copyright"), data(50, 1000 + i));
    }
    files.insert("docs/python3/big.bin".into(), data(700 * 1024, 77));
    files.insert("docs/python3/lib/os.py".into(), data(3000, 78));
    files.insert("docs/python3/lib/__init__.py".into(), Vec::new());
    files.insert("docs/python3/__init__.py".into(), Vec::new());
    files.insert("docs/python3/lib/json/decoder.py".into(), data(4000, 79));
    files.insert("top.txt".into(), b"top".to_vec());
    for (p, bytes) in &files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    files
}

/// Every file below `dir`, by its `/`-separated path relative to `dir`, with its b3sum.
fn tree_sums(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let t = std::fs::symlink_metadata(&p).unwrap().file_type();
            if t.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, b3sum(&p));
            }
        }
    }
    out
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn peer_id(h: &peershare::node::ShareHandle) -> u64 {
    h.status.borrow().peer_id.expect("registered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_lists_a_peers_tree_and_get_recreates_a_folder_from_every_source() {
    let t = tempfile::tempdir().unwrap();
    let index = start_index(&t.path().join("index.db"), Duration::from_secs(30)).await;
    let (a_dir, b_dir) = (t.path().join("a"), t.path().join("b"));
    let tree = make_tree(&a_dir);
    // The second peer shares the same python3 subtree (at another place in its share).
    let mut b_tree = BTreeMap::new();
    for (p, bytes) in tree.iter().filter(|(p, _)| p.starts_with("docs/python3/")) {
        let rel = p.replacen("docs/", "mirror/", 1);
        let path = b_dir.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        b_tree.insert(rel, bytes.clone());
    }
    let a = start_peer(&a_dir, Some(index.addr()), &t.path().join("sa")).await;
    let b = start_peer(&b_dir, Some(index.addr()), &t.path().join("sb")).await;
    let (a_id, b_id) = (peer_id(&a), peer_id(&b));
    let home = t.path().join("home");
    let addr = index.addr();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--index", addr.as_str()]);
        run_peershare(&all, &home)
    };

    // The top: one directory holding everything but top.txt, then the file.
    let top = json_of(&run(&["browse", &a_id.to_string(), "--json"]));
    let docs_bytes: u64 = tree
        .iter()
        .filter(|(p, _)| p.starts_with("docs/"))
        .map(|(_, b)| b.len() as u64)
        .sum();
    assert_eq!(top["path"], "");
    assert_eq!(top["total"], 2);
    assert_eq!(top["dirs"][0]["name"], "docs");
    assert_eq!(top["dirs"][0]["size"], docs_bytes);
    assert_eq!(top["dirs"][0]["files"], tree.len() as u64 - 1);
    assert_eq!(top["files"][0]["path"], "top.txt");
    assert_eq!(top["files"][0]["size"], 3);
    assert_eq!(
        top["files"][0]["content_id"],
        ContentId::from_bytes(*blake3::hash(b"top").as_bytes()).to_hex()
    );

    // A subdirectory: its directories with their sizes and counts, then its files.
    let py = json_of(&run(&[
        "browse",
        &a_id.to_string(),
        "/docs/python3/",
        "--json",
    ]));
    assert_eq!(py["path"], "docs/python3");
    let dirs: Vec<(&str, u64, u64)> = py["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let n = d["name"].as_str().unwrap();
            (n, d["size"].as_u64().unwrap(), d["files"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(dirs, [("lib", 3000 + 4000, 3)]);
    let names: Vec<&str> = py["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str_path())
        .collect();
    assert_eq!(names, ["__init__.py", "big.bin"]);

    // Text: the directory with its size and count, then files with their content ids.
    let out = run(&["browse", &a_id.to_string(), "docs/python3"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("docs/python3") && lines[0].contains("1 directory, 2 files"));
    assert!(
        lines[1].contains("6.8 KiB") && lines[1].contains("3 files") && lines[1].ends_with("lib/")
    );
    let big_id = ContentId::from_bytes(*blake3::hash(&tree["docs/python3/big.bin"]).as_bytes());
    assert!(
        lines[3].contains(&big_id.to_hex()) && lines[3].ends_with("big.bin"),
        "{text}"
    );
    // 30 directories of the same two names.
    let docs = json_of(&run(&["browse", &a_id.to_string(), "docs", "--json"]));
    assert_eq!(docs["dirs"].as_array().unwrap().len(), 31);
    assert_eq!(docs["dirs"][0]["name"], "pkg00");
    assert_eq!(docs["dirs"][0]["files"], 2);
    assert_eq!(docs["dirs"][0]["size"], 150);

    // get PEER:DIR recreates the folder under -o, named as the folder, from both peers.
    let out_dir = t.path().join("out");
    let spec = format!("{a_id}:docs/python3");
    let got = json_of(&run(&[
        "get",
        &spec,
        "-o",
        out_dir.to_str().unwrap(),
        "--json",
    ]));
    let want: BTreeMap<String, String> = tree
        .iter()
        .filter_map(|(p, b)| {
            let rel = p.strip_prefix("docs/")?;
            rel.starts_with("python3/")
                .then(|| (rel.to_string(), blake3::hash(b).to_hex().to_string()))
        })
        .collect();
    assert_eq!(tree_sums(&out_dir), want);
    let big = got["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"].as_str().unwrap().ends_with("big.bin"))
        .expect("big.bin downloaded");
    // Its sources: every peer with its content id, not only the one browsed.
    let offered: Vec<u64> = big["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["peer_id"].as_u64().unwrap())
        .collect();
    assert!(
        offered.contains(&a_id) && offered.contains(&b_id),
        "both peers are sources: {big}"
    );
    let sent: u64 = big["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, 700 * 1024);
    // Again: every file is already there with its content: nothing new, nothing numbered.
    let again = json_of(&run(&[
        "get",
        &spec,
        "-o",
        out_dir.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(again["failed"].as_array().unwrap().len(), 0);
    assert_eq!(tree_sums(&out_dir), want);

    // The second peer's copy, and a single file by path.
    let out2 = t.path().join("out2");
    let spec = format!("{b_id}:mirror/python3/lib/json/decoder.py");
    let out = run(&["get", &spec, "-o", out2.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        b3sum(&out2.join("decoder.py")),
        blake3::hash(&b_tree["mirror/python3/lib/json/decoder.py"])
            .to_hex()
            .to_string()
    );
    assert_eq!(files_in(&out2).len(), 1);

    // The whole share: `PEER:` recreates it.
    let out3 = t.path().join("out3");
    let out = run(&["get", &format!("{a_id}:"), "-o", out3.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: BTreeMap<String, String> = tree
        .iter()
        .map(|(p, b)| (p.clone(), blake3::hash(b).to_hex().to_string()))
        .collect();
    assert_eq!(tree_sums(&out3), all);

    // What is not there, and who is not there.
    let out = run(&["browse", &a_id.to_string(), "docs/nothing"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no file or directory") && err.lines().count() == 1,
        "{err}"
    );
    let out = run(&["browse", "999", ""]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no peer 999"));
    let out = run(&["browse", &a_id.to_string(), "docs/../etc"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad path"));

    a.shutdown().await;
    b.shutdown().await;
    index.stop().await;
}

trait PathOf {
    fn as_str_path(&self) -> &str;
}

impl PathOf for serde_json::Value {
    fn as_str_path(&self) -> &str {
        self["path"].as_str().unwrap()
    }
}

fn rand_secret() -> [u8; 32] {
    *blake3::hash(format!("{:?}", std::time::Instant::now()).as_bytes()).as_bytes()
}

/// A fake peer registered with `paths`, each with the content id of `content` (a real peer
/// shares that content, so every file can be fetched from it).
async fn register_paths(index: &str, paths: &[String], content: ContentId) -> (FakePeer, u64) {
    let files: Vec<(String, ContentId)> = paths.iter().map(|p| (p.clone(), content)).collect();
    register_files(index, &files).await
}

/// A fake peer registered with these paths and content ids (all of size 4).
async fn register_files(index: &str, files: &[(String, ContentId)]) -> (FakePeer, u64) {
    let paths: Vec<&String> = files.iter().map(|(p, _)| p).collect();
    let me = Identity::from_secret(rand_secret());
    let fp = FakePeer::new(&me).await;
    let mut c = fp.connect(index).await;
    let r = c
        .register(
            &me,
            "127.0.0.1",
            fp.port,
            Digest::default(),
            paths.len() as u64,
        )
        .await
        .unwrap();
    let entries = files
        .iter()
        .map(|(p, content)| FileEntry {
            path: p.clone(),
            name: p.rsplit('/').next().unwrap().to_string(),
            size: 4,
            content_id: *content,
            mtime: 0,
            have: None,
        })
        .collect();
    c.sync_files(true, entries, vec![], Digest::default())
        .await
        .unwrap();
    // The session stays registered as long as the fake peer's connection is open: keep it.
    std::mem::forget(c);
    (fp, r.peer_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_and_a_planted_link_write_nothing_outside_the_target() {
    let t = tempfile::tempdir().unwrap();
    let index = start_index(&t.path().join("index.db"), Duration::from_secs(30)).await;
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("real.txt"), b"data").unwrap();
    std::fs::write(share.join("other.txt"), b"othr").unwrap();
    let real = start_peer(&share, Some(index.addr()), &t.path().join("sr")).await;
    let content = ContentId::from_bytes(*blake3::hash(b"data").as_bytes());
    let other = ContentId::from_bytes(*blake3::hash(b"othr").as_bytes());
    let deep = format!("evil/{}f", "d/".repeat(100));
    let hostile: Vec<String> = [
        "evil/../x",
        "evil/a/../../b",
        "/etc/evil-abs",
        "evil/esc\u{1b}[31mred\u{7}/bell\n.txt",
        "evil/a\\b\\..\\..\\c",
        "evil/..",
        "evil/./dot",
        "evil//double",
        "../outside",
        "evil/ok.txt",
        &deep,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // `evil/c` is also where `a\\b\\..\\..\\c` lands once sanitized: a file of other content.
    let mut files: Vec<(String, ContentId)> =
        hostile.iter().map(|p| (p.clone(), content)).collect();
    files.push(("evil/c".into(), other));
    let (_fp, evil_id) = register_files(&index.addr(), &files).await;
    let home = t.path().join("home");
    let addr = index.addr();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--index", addr.as_str()]);
        run_peershare(&all, &home)
    };
    // The index lists only well-formed paths: no `..`, `.`, empty or absolute components.
    let listed = json_of(&run(&[
        "browse",
        &evil_id.to_string(),
        "evil",
        "-r",
        "--json",
    ]));
    let mut paths: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str_path())
        .collect();
    paths.sort();
    let deep_rel = format!("{}f", "d/".repeat(100));
    let mut want = vec![
        "a\\b\\..\\..\\c",
        "c",
        deep_rel.as_str(),
        "esc\u{1b}[31mred\u{7}/bell\n.txt",
        "ok.txt",
    ];
    want.sort();
    assert_eq!(paths, want);
    // The text listing escapes control characters.
    let text = run(&["browse", &evil_id.to_string(), "evil"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );

    // A link planted where the folder would go, pointing out of the target.
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("evil")).unwrap();
    let r = run(&[
        "get",
        &format!("{evil_id}:evil"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing through the link"
    );

    // Without the link: the clean files land inside, sanitized; the one too deep fails alone.
    std::fs::remove_file(out.join("evil")).unwrap();
    let r = run(&[
        "get",
        &format!("{evil_id}:evil"),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("directory levels, over the limit"), "{err}");
    assert!(err.contains("1 of 5 downloads failed"), "{err}");
    let got = tree_sums(&out);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "evil/c",
            "evil/c (1)",
            "evil/esc[31mred/bell.txt",
            "evil/ok.txt"
        ]
    );
    // The two files that sanitize to one path: both kept, whichever finished first as `c`.
    let mut cs = vec![got["evil/c"].clone(), got["evil/c (1)"].clone()];
    cs.sort();
    let mut want_cs = vec![content.to_hex(), other.to_hex()];
    want_cs.sort();
    assert_eq!(cs, want_cs);
    assert_eq!(got["evil/ok.txt"], content.to_hex());
    assert_eq!(got["evil/esc[31mred/bell.txt"], content.to_hex());
    // Nothing anywhere else in the test's directory but what was there.
    let mut top: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        [
            "home",
            "index.db",
            "index.db-shm",
            "index.db-wal",
            "out",
            "outside",
            "share",
            "sr"
        ]
    );
    assert!(!Path::new("/etc/evil-abs").exists());

    real.shutdown().await;
    index.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_ten_thousand_entries_is_paged_through() {
    let t = tempfile::tempdir().unwrap();
    let index = start_index(&t.path().join("index.db"), Duration::from_secs(30)).await;
    let content = ContentId::from_bytes([9; 32]);
    let paths: Vec<String> = (0..10_000)
        .map(|i| format!("big/{i:05}.txt"))
        .chain((0..5).map(|i| format!("big/sub{i}/x")))
        .collect();
    let (_fp, id) = register_paths(&index.addr(), &paths, content).await;
    let mut c = peershare::index::IndexClient::connect(
        &index.addr(),
        None,
        None,
        peershare::protocol::Limits::default(),
    )
    .await
    .unwrap();
    // Page by page: directories first, every entry once, in order.
    let mut names = Vec::new();
    let mut offset = 0;
    let mut pages = 0;
    loop {
        let page = c
            .browse(Browse {
                peer_id: id,
                path: "big".into(),
                recursive: false,
                offset,
                limit: MAX_BROWSE_LIMIT,
            })
            .await
            .unwrap();
        pages += 1;
        assert_eq!(page.total, 10_005);
        assert!(page.dirs.len() + page.files.len() <= MAX_BROWSE_LIMIT as usize);
        names.extend(page.dirs.iter().map(|d| format!("{}/", d.name)));
        names.extend(page.files.iter().map(|f| f.path.clone()));
        match page.next {
            Some(n) => offset = n,
            None => break,
        }
        assert!(pages < 20);
    }
    assert_eq!(pages, 11);
    let mut want: Vec<String> = (0..5).map(|i| format!("sub{i}/")).collect();
    want.extend((0..10_000).map(|i| format!("{i:05}.txt")));
    assert_eq!(names, want);
    // A recursive listing from the top pages the same way: every file once, by path.
    let (mut all, mut offset) = (Vec::new(), 0);
    for _ in 0..20 {
        let page = c
            .browse(Browse {
                peer_id: id,
                path: "/".into(),
                recursive: true,
                offset,
                limit: MAX_BROWSE_LIMIT,
            })
            .await
            .unwrap();
        assert_eq!(page.total, 10_005);
        all.extend(page.files.into_iter().map(|f| f.path));
        match page.next {
            Some(n) => offset = n,
            None => break,
        }
    }
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    // The command pages through too.
    let out = run_peershare(
        &[
            "browse",
            &id.to_string(),
            "big",
            "--json",
            "--index",
            &index.addr(),
        ],
        &t.path().join("home"),
    );
    let doc = json_of(&out);
    assert_eq!(doc["files"].as_array().unwrap().len(), 10_000);
    assert_eq!(doc["dirs"].as_array().unwrap().len(), 5);
    index.stop().await;
}

/// Sends `m` as a raw frame on `s` and reads one reply.
async fn ask(s: &mut peershare::tls::SecureStream, m: &Message) -> Message {
    let p = m.encode_payload().unwrap();
    let mut v = ((p.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(m.tag());
    v.extend_from_slice(&p);
    s.write_all(&v).await.unwrap();
    s.flush().await.unwrap();
    read_one(s).await.expect("a reply")
}

async fn read_one(s: &mut peershare::tls::SecureStream) -> Option<Message> {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len))
        .await
        .expect("a reply in time")
        .ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    let frame = peershare::protocol::Frame {
        tag: body[0],
        payload: bytes::Bytes::copy_from_slice(&body[1..]),
    };
    Some(Message::decode(frame).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_browse_requests_get_a_clear_error_and_the_connection_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let index = start_index(&t.path().join("index.db"), Duration::from_secs(30)).await;
    let (_fp, id) = register_paths(
        &index.addr(),
        &["a/b.txt".to_string()],
        ContentId::from_bytes([1; 32]),
    )
    .await;
    let mut s = raw_secure(&index.addr()).await;
    let hello = Message::Hello(peershare::protocol::Hello {
        version_min: 1,
        version_max: 1,
        agent: "test".into(),
        features: vec![],
        membership: None,
    });
    assert!(matches!(ask(&mut s, &hello).await, Message::Welcome(_)));
    let browse = |peer_id, path: &str, limit| {
        Message::Browse(Browse {
            peer_id,
            path: path.into(),
            recursive: false,
            offset: 0,
            limit,
        })
    };
    for (m, code, says) in [
        (browse(id + 1000, "", 10), ErrorCode::NotFound, "no peer"),
        (browse(id, "../etc", 10), ErrorCode::BadRequest, "bad path"),
        (browse(id, "a/../..", 10), ErrorCode::BadRequest, "bad path"),
        (browse(id, "a\\b", 10), ErrorCode::BadRequest, "bad path"),
        (browse(id, "a\0b", 10), ErrorCode::BadRequest, "bad path"),
        (browse(id, "a//b", 10), ErrorCode::BadRequest, "bad path"),
        (
            browse(id, &"x/".repeat(3000), 10),
            ErrorCode::BadRequest,
            "bad path",
        ),
        (browse(id, "", u32::MAX), ErrorCode::BadRequest, "limit"),
        (browse(id, "", 0), ErrorCode::BadRequest, "limit"),
        (
            browse(id, "zzz", 10),
            ErrorCode::NotFound,
            "no file or directory",
        ),
    ] {
        match ask(&mut s, &m).await {
            Message::Error(e) => {
                assert_eq!(e.code, code.number(), "{m:?}: {e}");
                assert!(e.message.contains(says), "{m:?}: {e}");
                assert!(!e.message.contains('\n'));
            }
            other => panic!("{m:?}: {other:?}"),
        }
    }
    // The connection still answers.
    match ask(&mut s, &browse(id, "/a/", 10)).await {
        Message::Listing(l) => {
            assert_eq!(l.path, "a");
            assert_eq!(l.files[0].path, "b.txt");
        }
        other => panic!("{other:?}"),
    }
    // A Browse whose payload is not one: BAD_REQUEST, and this connection (only) closes.
    let mut v = 2u32.to_be_bytes().to_vec();
    v.extend([peershare::protocol::tag::BROWSE, 0xc1]);
    s.write_all(&v).await.unwrap();
    s.flush().await.unwrap();
    match read_one(&mut s).await {
        Some(Message::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest.number()),
        other => panic!("{other:?}"),
    }
    assert!(read_one(&mut s).await.is_none(), "closed");
    // A Listing sent to the index is no request.
    let mut c = peershare::index::IndexClient::connect(
        &index.addr(),
        None,
        None,
        peershare::protocol::Limits::default(),
    )
    .await
    .unwrap();
    assert!(
        c.browse(Browse {
            peer_id: id,
            path: "".into(),
            recursive: true,
            offset: 0,
            limit: 1,
        })
        .await
        .is_ok()
    );
    index.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_index_lets_only_its_members_browse() {
    use peershare::group::{GroupState, Invite};
    use peershare::identity::Fingerprint;
    use std::sync::Arc;
    let t = tempfile::tempdir().unwrap();
    let ix = start_private_index(&t.path().join("index.db")).await;
    let invite = |uses| {
        let store = peershare::index::GroupStore::open(&ix.db).unwrap();
        let invite = Invite::new(ix.addr.clone(), Fingerprint(ix.key)).unwrap();
        let now = peershare::query::now_ms();
        store
            .create_invite(&invite.secret_hash(), uses, now + 3_600_000, now)
            .unwrap();
        invite
    };
    let connect = |tls: Option<peershare::tls::Tls>| {
        let addr = ix.addr.clone();
        let key = ix.key;
        async move {
            peershare::index::IndexClient::connect(
                &addr,
                tls.as_ref(),
                Some(key),
                peershare::protocol::Limits::default(),
            )
            .await
            .unwrap()
        }
    };
    // A member shares a directory.
    let me = Identity::load_or_create(&t.path().join("sa")).unwrap();
    let tls = peershare::tls::Tls::new(&me).unwrap();
    let m = connect(Some(tls.clone()))
        .await
        .join(&invite(1).secret)
        .await
        .unwrap()
        .membership;
    let tls = tls.with_group(Arc::new(GroupState::new(ix.key, Some(m))));
    let share = t.path().join("share");
    std::fs::create_dir_all(share.join("d")).unwrap();
    std::fs::write(share.join("d/f.txt"), b"x").unwrap();
    let h = ix.share_as(&share, &t.path().join("sa"), &tls).await;
    let id = h.status.borrow().peer_id.unwrap();
    let ask = Browse {
        peer_id: id,
        path: "d".into(),
        recursive: false,
        offset: 0,
        limit: 10,
    };
    // The member lists it.
    let l = connect(Some(tls.clone()))
        .await
        .browse(ask.clone())
        .await
        .unwrap();
    assert_eq!(l.files[0].path, "f.txt");
    // A stranger is refused, as for Search, and learns nothing of the peer.
    let e = connect(None).await.browse(ask).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("code {}", ErrorCode::Forbidden.number())),
        "{text}"
    );
    assert!(!text.contains("f.txt"));
    h.shutdown().await;
}
