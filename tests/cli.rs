//! The real `peershare` binary: index, share, search, get, peers, exit codes, kill -9 of the index (the menu: tests/menu.rs).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

impl Running {
    fn start(args: &[&str], home: &Path) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("PEERSHARE_HOME", home);
        Running::spawn(cmd, None)
    }

    /// Spawns `cmd` with `input` (if any) on its stdin and collects its stdout lines.
    fn spawn(mut cmd: Command, input: Option<&str>) -> Running {
        cmd.env_remove("PEERSHARE_INDEX");
        Running::spawn_lines(cmd, input, Lines::Stdout)
    }
}

/// `peershare share DIR` registered with the index at `ix`.
fn share_registered(dir: &Path, ix: &str, home: &Path) -> Running {
    let dir = dir.to_str().expect("utf-8 path");
    let mut peer = Running::start(
        &["share", dir, "--index", ix, "--listen", "127.0.0.1:0"],
        home,
    );
    peer.wait_line("registered with index");
    peer
}

fn run(args: &[&str], home: &Path) -> std::process::Output {
    run_peershare(args, home)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn share_search_get_peers_and_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(share.join("code")).unwrap();
    std::fs::write(share.join("code/Isaac.py"), b"print('isaac')\n").unwrap();
    std::fs::write(share.join("big.bin"), data(3 * 262_144 + 5, 7)).unwrap();
    let mut index = Running::start(&["index", "--listen", "127.0.0.1:0"], &t.path().join("ix"));
    let ix = index.listening();
    let _peer = share_registered(&share, &ix, &t.path().join("p1"));

    let home = t.path().join("client");
    let out = run(&["search", "saac", "--index", &ix], &home);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = b3sum(&share.join("code/Isaac.py"));
    assert!(text(&out.stdout).contains(&want), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("Isaac.py"));

    let out = run(&["search", "big", "--json", "--index", &ix], &home);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let f = &doc["files"][0];
    assert_eq!(f["name"], "big.bin");
    assert_eq!(f["size"], 3 * 262_144 + 5);
    let id = f["content_id"].as_str().unwrap().to_string();
    assert_eq!(id, b3sum(&share.join("big.bin")));
    assert_eq!(f["peers"][0]["peer_id"], 1);
    assert!(f["peers"][0]["shared_at"].as_str().unwrap().ends_with('Z'));

    // PEERSHARE_INDEX is honoured; get prints the final path.
    let dl = t.path().join("dl");
    let out = Command::new(BIN)
        .args(["get", &id, "-o", dl.to_str().unwrap(), "--peer", "1"])
        .env("PEERSHARE_HOME", &home)
        .env("PEERSHARE_INDEX", &ix)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        dl.join("big.bin").display().to_string()
    );
    assert_eq!(b3sum(&dl.join("big.bin")), id);

    let out = run(
        &[
            "get",
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--json",
            "--index",
            &ix,
            // Already in dl: fetched again only when asked to.
            "--redownload",
        ],
        &home,
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["downloads"][0]["path"],
        dl.join("big (1).bin").display().to_string()
    );
    assert_eq!(doc["downloads"][0]["pieces_rejected"], 0);
    // Downloaded over TLS 1.3, with the suite peershare offers first.
    assert_eq!(
        doc["downloads"][0]["sources"][0]["cipher_suite"],
        "TLS13_AES_128_GCM_SHA256"
    );

    // Several ids, one unknown, one given twice: the others are downloaded once each, the
    // unknown one fails the command.
    let small = b3sum(&share.join("code/Isaac.py"));
    let unknown = "0".repeat(64);
    let out = run(
        &[
            "get",
            &small,
            &small,
            &unknown,
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--json",
            "--index",
            &ix,
            "--redownload",
        ],
        &home,
    );
    assert!(!out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = doc["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    let (isaac, big) = (dl.join("Isaac.py"), dl.join("big (2).bin"));
    assert_eq!(paths, [isaac.to_str().unwrap(), big.to_str().unwrap()]);
    assert_eq!(b3sum(&isaac), small);
    assert_eq!(b3sum(&big), id);
    assert!(
        doc["failed"][0]
            .as_str()
            .unwrap()
            .contains("no live peer shares")
    );
    assert!(
        text(&out.stderr).contains("1 of 3 downloads failed"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["peers", "--json", "--index", &ix], &home);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["peers"][0]["files"], 2);
    assert_eq!(doc["peers"][0]["live"], true);

    // Failures: non-zero exit and one line on stderr.
    for (args, needle) in [
        (
            vec!["search", "no-such-file", "--index", ix.as_str()],
            "no file matches",
        ),
        (
            vec!["get", &id, "--peer", "99", "--index", ix.as_str()],
            "peer 99 does not share",
        ),
        (vec!["get", "not-a-hash", "--index", ix.as_str()], "64 hex"),
        (
            vec!["get", &"0".repeat(64), "--index", ix.as_str()],
            "no live peer shares",
        ),
        (
            vec!["search", "x", "--index", "127.0.0.1:1"],
            "cannot reach the index",
        ),
    ] {
        let out = run(&args, &home);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn index_killed_with_sigkill_keeps_registrations() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("survivor.txt"), b"still here").unwrap();
    let db = t.path().join("index.sqlite");
    let mut index = Running::start(
        &[
            "index",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ],
        t.path(),
    );
    let ix = index.listening();
    let _peer = share_registered(&share, &ix, &t.path().join("p1"));
    index.child.kill().unwrap(); // SIGKILL
    index.child.wait().unwrap();
    drop(_peer);
    let port = ix.rsplit(':').next().unwrap();
    let mut index = Running::start(
        &[
            "index",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            db.to_str().unwrap(),
        ],
        t.path(),
    );
    index.listening();
    let out = run(
        &["search", "survivor", "--json", "--index", &ix],
        &t.path().join("c"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["files"][0]["name"], "survivor.txt");
}

#[test]
fn hostile_name_from_the_index_lands_inside_the_target() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("plain.txt"), b"payload").unwrap();
    let mut index = Running::start(&["index", "--listen", "127.0.0.1:0"], &t.path().join("ix"));
    let ix = index.listening();
    // A real peer serving the bytes, not registered itself.
    let mut peer = Running::start(
        &[
            "share",
            share.to_str().unwrap(),
            "--no-index",
            "--listen",
            "127.0.0.1:0",
        ],
        &t.path().join("p1"),
    );
    let peer_addr = peer.listening();
    let port: u16 = peer_addr.rsplit(':').next().unwrap().parse().unwrap();
    // The peer's owner lists that address with a hostile name (with its own key: the index
    // checks that the key answers at the address it lists).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let me = peershare::identity::Identity::load_or_create(&t.path().join("p1")).unwrap();
        let tls = peershare::tls::Tls::new(&me).unwrap();
        let mut c =
            peershare::index::IndexClient::connect(&ix, Some(&tls), None, Default::default())
                .await
                .unwrap();
        c.register(&me, "127.0.0.1", port, Default::default(), 1)
            .await
            .unwrap();
        let e = peershare::protocol::FileEntry {
            // The name is the path's last part; the path tries to climb out too.
            path: "../../../evil\n.txt".into(),
            name: "evil\n.txt".into(),
            size: 7,
            content_id: blake3::hash(b"payload").into(),
            mtime: 0,
            have: None,
        };
        c.sync_files(true, vec![e], vec![], Default::default())
            .await
            .unwrap();
    });
    let dl = t.path().join("a/b/dl");
    let id = blake3::hash(b"payload").to_hex().to_string();
    let out = run(
        &["get", &id, "-o", dl.to_str().unwrap(), "--index", &ix],
        &t.path().join("c"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(files_in(&dl), vec![dl.join("evil.txt")]);
    assert!(
        files_in(&t.path().join("a")).len() == 1,
        "nothing outside the target"
    );
    assert_eq!(std::fs::read(dl.join("evil.txt")).unwrap(), b"payload");
}

#[test]
fn serverless_share_search_and_get_through_a_private_dht() {
    let t = tempfile::tempdir().unwrap();
    let mut seed = Running::start(
        &["dht", "node", "--listen", "127.0.0.1:0", "--no-bootstrap"],
        &t.path().join("seed"),
    );
    let boot = seed.listening();
    let content = data(2 * 262_144 + 99, 50);
    let id = blake3::hash(&content).to_hex().to_string();
    let mut peers = Vec::new();
    for n in 0..2 {
        let dir = t.path().join(format!("share{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Serverless Notes.txt"), &content).unwrap();
        let mut p = Running::start(
            &[
                "share",
                dir.to_str().unwrap(),
                "--dht",
                "--bootstrap",
                &boot,
                "--listen",
                "127.0.0.1:0",
            ],
            &t.path().join(format!("p{n}")),
        );
        p.wait_line("published on the DHT");
        assert!(
            !p.seen.iter().any(|l| l.contains("registered with index")),
            "no index with --dht alone"
        );
        peers.push(p);
    }
    let home = t.path().join("client");
    let out = run(
        &[
            "search",
            "serverless",
            "--dht",
            "--bootstrap",
            &boot,
            "--json",
        ],
        &home,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["files"][0]["content_id"], id.as_str());
    assert_eq!(doc["files"][0]["peers"].as_array().unwrap().len(), 2);
    assert_eq!(doc["files"][0]["peers"][0]["via"][0], "dht");

    let dl = t.path().join("dl");
    let out = run(
        &[
            "get",
            &id,
            "--dht",
            "--bootstrap",
            &boot,
            "-o",
            dl.to_str().unwrap(),
            "--json",
        ],
        &home,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["downloads"][0]["sources"].as_array().unwrap().len(),
        2,
        "{doc:#}"
    );
    assert_eq!(b3sum(&dl.join("Serverless Notes.txt")), id);
}

#[test]
fn a_peer_on_ipv6_loopback_is_found_and_downloaded_from() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback on this machine ([::1] cannot be bound)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("six.txt"), b"over ipv6").unwrap();
    let mut index = Running::start(&["index", "--listen", "[::1]:0"], &t.path().join("ix"));
    let line = index.wait_line("listening on");
    let ix = line
        .split_whitespace()
        .find(|w| w.starts_with("[::1]:"))
        .expect("address in line")
        .to_string();
    // Registered from ::1, the peer is recorded at the address the index sees: "::1", which
    // once came back bracketed twice ("[[::1]]:PORT") and could not be reached.
    let mut peer = Running::start(
        &[
            "share",
            share.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "[::1]:0",
        ],
        &t.path().join("p1"),
    );
    peer.wait_line("registered with index");
    // A client that writes the host bracketed is recorded in the same plain form.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let me = peershare::identity::Identity::load_or_create(&t.path().join("other")).unwrap();
        let tls = peershare::tls::Tls::new(&me).unwrap();
        // Something at [::1] proving the key, as the index checks before listing an address.
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let prover = tls.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = prover.accept(s, Duration::from_secs(5), b"").await;
            }
        });
        let mut c =
            peershare::index::IndexClient::connect(&ix, Some(&tls), None, Default::default())
                .await
                .unwrap();
        let r = c
            .register(&me, "[::1]", port, Default::default(), 0)
            .await
            .unwrap();
        assert_eq!(r.host, "::1");
        let refused = c
            .register(&me, "evil.example", port, Default::default(), 0)
            .await;
        assert!(refused.is_err(), "a name is refused: {refused:?}");
    });
    let out = run(
        &["search", "six", "--index", &ix, "--json"],
        &t.path().join("c"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["files"][0]["peers"][0]["host"], "::1", "{doc:#}");
    let id = blake3::hash(b"over ipv6").to_hex().to_string();
    let dl = t.path().join("dl");
    let out = run(
        &[
            "get",
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--index",
            &ix,
            "--no-share",
        ],
        &t.path().join("c"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(dl.join("six.txt")).unwrap(), b"over ipv6");
}
