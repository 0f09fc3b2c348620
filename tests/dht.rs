//! Serverless mode on a private Mainline DHT (mainline's Testnet on 127.0.0.1): publish, search, download, restart, merge with an index.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use mainline::Testnet;
use peershare::content::{ContentId, PIECE_SIZE};
use peershare::dht::{DhtConfig, find_files, find_sources, merge_results, start_node};
use peershare::download::{Downloader, Source};
use peershare::node::{ShareConfig, ShareHandle, start_share};

fn dht_config(testnet: &Testnet, server: bool) -> DhtConfig {
    DhtConfig {
        bootstrap: testnet.bootstrap.clone(),
        port: 0,
        bind: Ipv4Addr::LOCALHOST,
        server,
        // mainline's default: at 500 ms, a few lookups on a loaded machine miss an announcement (bench/README.md, DHT).
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// A peer sharing `dir` on the DHT (and at `index`, if given), once its keys are announced.
async fn dht_peer(
    dir: &Path,
    state: &Path,
    testnet: &Testnet,
    index: Option<String>,
) -> ShareHandle {
    let mut config = ShareConfig::new(vec![dir.to_path_buf()], index, state.to_path_buf());
    config.dht = Some(dht_config(testnet, true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut h = start_share(config, listener).await.unwrap();
    h.wait_for(Duration::from_secs(60), |s| {
        s.dht_announced.is_some_and(|n| n > 0 && n == s.dht_keys)
    })
    .await
    .expect("every key announced");
    h
}

fn testnet() -> Testnet {
    Testnet::builder(20)
        .bind_address(Ipv4Addr::LOCALHOST)
        .build()
        .expect("testnet")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_publish_a_fourth_searches_and_downloads_from_all() {
    let net = testnet();
    let t = tempfile::tempdir().unwrap();
    let shared = data(3 * PIECE_SIZE as usize + 100, 40);
    let id = ContentId::from(blake3::hash(&shared));
    let mut peers = Vec::new();
    for n in 0..3 {
        let dir = t.path().join(format!("share{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Common Album.flac"), &shared).unwrap();
        std::fs::write(dir.join(format!("Isaac-{n}.py")), format!("print({n})")).unwrap();
        peers.push(dht_peer(&dir, &t.path().join(format!("state{n}")), &net, None).await);
    }
    let me = start_node(&dht_config(&net, false)).unwrap();

    // Search by keyword: each peer answers with its matching files.
    let found = find_files(&me, &cq("isaac", 100), None).await;
    let (files, _, _) = merge_results(None, &found, "isaac", 100);
    let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["Isaac-0.py", "Isaac-1.py", "Isaac-2.py"]);
    let (files, _, _) = merge_results(
        None,
        &find_files(&me, &cq("album flac", 100), None).await,
        "album flac",
        100,
    );
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].peers.len(), 3, "one file, three peers");
    assert!(files[0].peers.iter().all(|p| p.via_dht && !p.via_index));
    // The peers apply exclusions and filters, and say where they keep each file.
    let mut py_only = cq("isaac -isaac-1", 100);
    py_only.exts = vec!["py".into()];
    let (files, _, total) = merge_results(
        None,
        &find_files(&me, &py_only, None).await,
        "isaac -isaac-1",
        100,
    );
    let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["Isaac-0.py", "Isaac-2.py"]);
    assert_eq!(total, 2);
    assert_eq!(
        files[0].peers[0].peer.path.as_deref(),
        Some(files[0].name.as_str())
    );
    let mut not_py = cq("isaac", 100);
    not_py.exts = vec!["flac".into()];
    assert!(
        find_files(&me, &not_py, None)
            .await
            .iter()
            .all(|(_, (_, r))| r.files.is_empty())
    );

    // Download by hash from every live source.
    let sources = find_sources(&me, id, None).await;
    assert_eq!(sources.len(), 3, "{sources:?}");
    let sources: Vec<Source> = sources
        .iter()
        .map(|(a, key)| Source {
            key: Some(*key),
            peer_id: None,
            addr: a.to_string(),
        })
        .collect();
    let out = t.path().join("out");
    let rep = Downloader {
        window: 1,
        ..Downloader::default()
    }
    .download(id, &sources, &out, None)
    .await
    .unwrap();
    assert_eq!(b3sum(&rep.path), id.to_hex());
    assert_eq!(rep.path, out.join("Common Album.flac"));
    assert_eq!(rep.sources.len(), 3);
    assert!(
        rep.sources.iter().all(|s| s.error.is_none()),
        "all three used without error: {:?}",
        rep.sources
    );

    // A peer that left is still announced, but is found dead and not listed.
    let gone = peers.pop().unwrap();
    let gone_addr = gone.local_addr;
    gone.shutdown().await;
    let sources = find_sources(&me, id, None).await;
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert!(!sources.iter().any(|(a, _)| *a == gone_addr));
    let (files, _, _) = merge_results(
        None,
        &find_files(&me, &cq("isaac", 100), None).await,
        "isaac",
        100,
    );
    assert_eq!(files.len(), 2);
    for p in peers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_found_again() {
    let net = testnet();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("share");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("phoenix.txt"), b"rises again").unwrap();
    let id = ContentId::from(blake3::hash(b"rises again"));
    let state = t.path().join("state");
    let first = dht_peer(&dir, &state, &net, None).await;
    first.shutdown().await;
    let again = dht_peer(&dir, &state, &net, None).await;
    let me = start_node(&dht_config(&net, false)).unwrap();
    let sources = find_sources(&me, id, None).await;
    assert_eq!(
        sources.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        vec![again.local_addr],
        "only the restarted peer is alive"
    );
    let (files, _, _) = merge_results(
        None,
        &find_files(&me, &cq("phoenix", 10), None).await,
        "phoenix",
        10,
    );
    assert_eq!(files.len(), 1);
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_search_merges_an_index_peer_and_a_dht_peer() {
    let net = testnet();
    let t = tempfile::tempdir().unwrap();
    let ix = start_index(&t.path().join("ix.sqlite"), Duration::from_secs(60)).await;
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("report-index.pdf"), b"only at the index").unwrap();
    std::fs::write(b.join("report-dht.pdf"), b"only on the dht").unwrap();
    std::fs::write(b.join("report-both.pdf"), b"on both").unwrap();
    std::fs::write(a.join("report-both.pdf"), b"on both").unwrap();
    let pa = start_peer(&a, Some(ix.addr()), &t.path().join("pa")).await;
    let pb = dht_peer(&b, &t.path().join("pb"), &net, None).await;
    let mut args = vec!["search", "report", "--dht", "--json", "--index"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.push(ix.addr());
    for bs in &net.bootstrap {
        args.push("--bootstrap".into());
        args.push(bs.clone());
    }
    let home = t.path().join("c");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_peershare"))
            .args(&args)
            .env("PEERSHARE_HOME", home)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = doc["files"].as_array().unwrap();
    let via = |name: &str| -> Vec<Vec<String>> {
        let f = files
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {doc:#}"));
        f["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| serde_json::from_value(p["via"].clone()).unwrap())
            .collect()
    };
    assert_eq!(files.len(), 3, "{doc:#}");
    assert_eq!(via("report-index.pdf"), vec![vec!["index".to_string()]]);
    assert_eq!(via("report-dht.pdf"), vec![vec!["dht".to_string()]]);
    let mut both = via("report-both.pdf");
    both.sort();
    assert_eq!(
        both,
        vec![vec!["dht".to_string()], vec!["index".to_string()]],
        "two peers, no duplicates"
    );
    let f = files
        .iter()
        .find(|f| f["name"] == "report-index.pdf")
        .unwrap();
    assert_eq!(f["peers"][0]["peer_id"], 1, "index peers keep their id");
    pa.shutdown().await;
    pb.shutdown().await;
    ix.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_are_renewed_before_they_expire() {
    let net = testnet();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("share");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("evergreen.txt"), b"still here").unwrap();
    let mut config = ShareConfig::new(vec![dir], None, t.path().join("state"));
    config.dht = Some(dht_config(&net, true));
    config.dht_refresh = Duration::from_millis(500);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut h = start_share(config, listener).await.unwrap();
    let s = h
        .wait_for(Duration::from_secs(60), |s| s.dht_rounds >= 3)
        .await
        .expect("renewed twice after the first round");
    assert_eq!(
        s.dht_announced,
        Some(s.dht_keys),
        "every renewal announced every key"
    );
    h.shutdown().await;
}

/// A private group's peers announce under keys only members can make: a member finds and
/// downloads from them, an outsider searching the same words finds nothing, and a member
/// refuses a source that is not in the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_groups_announcements_are_found_by_members_only() {
    use peershare::group::{GroupState, Membership};
    use peershare::identity::Identity;
    use std::sync::Arc;
    let net = testnet();
    let t = tempfile::tempdir().unwrap();
    let index = Identity::from_secret([11; 32]);
    let secret = [12; 32];
    // A member's group state, as `join` leaves it: its certificate and the group's DHT secret.
    let member_of = |id: &Identity| {
        let cert = Membership::issue(&index, id.public_key(), i64::MAX);
        Arc::new(GroupState::new(index.public_key(), Some(cert)).with_dht_secret(secret))
    };
    let dir = t.path().join("share");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("quokka secret plans.txt"), b"members only").unwrap();
    let id = ContentId::from(blake3::hash(b"members only"));
    let state = t.path().join("sharer");
    let sharer = Identity::load_or_create(&state).unwrap();
    let mut config = ShareConfig::new(vec![dir.clone()], None, state.clone());
    config.dht = Some(dht_config(&net, true));
    config.group = Some(member_of(&sharer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut share = start_share(config, listener).await.unwrap();
    share
        .wait_for(Duration::from_secs(60), |s| {
            s.dht_announced.is_some_and(|n| n > 0 && n == s.dht_keys)
        })
        .await
        .expect("every key announced");

    let me = start_node(&dht_config(&net, false)).unwrap();
    let reader = Identity::from_secret([13; 32]);
    let member = peershare::tls::Tls::new(&reader)
        .unwrap()
        .with_group(member_of(&reader));
    let found = find_files(&me, &cq("quokka plans", 100), Some(&member)).await;
    assert_eq!(found.len(), 1, "a member finds the group's file: {found:?}");
    assert_eq!(found[0].1.1.files[0].content_id, id);
    assert_eq!(find_sources(&me, id, Some(&member)).await.len(), 1);
    // An outsider asks the public key space: nothing is there.
    assert!(
        find_files(&me, &cq("quokka plans", 100), None)
            .await
            .is_empty()
    );
    assert!(find_sources(&me, id, None).await.is_empty());

    // A source outside the group, announced in the public space under the same words, is not
    // found by the member's group search, and refused if the member reaches it anyway.
    let outsider_dir = t.path().join("open");
    std::fs::create_dir_all(&outsider_dir).unwrap();
    std::fs::write(
        outsider_dir.join("quokka secret plans.txt"),
        b"members only",
    )
    .unwrap();
    let open = dht_peer(&outsider_dir, &t.path().join("open-state"), &net, None).await;
    let public = find_sources(&me, id, None).await;
    assert_eq!(public.len(), 1, "the open peer is in the public space");
    let err = peershare::peer::PeerClient::connect(
        &public[0].0.to_string(),
        Some(&member),
        None,
        peershare::protocol::Limits::default(),
    )
    .await
    .err()
    .expect("a member refuses a source outside its group");
    assert!(
        matches!(err, peershare::peer::PeerClientError::NotMember { .. }),
        "{err}"
    );
    open.shutdown().await;
    share.shutdown().await;
}

/// A catalog query for `q`, at most `limit` files.
fn cq(q: &str, limit: u32) -> peershare::protocol::CatalogQuery {
    peershare::protocol::CatalogQuery {
        query: q.into(),
        limit,
        ..Default::default()
    }
}

/// A share with more keys than mainline 8.0.1's nodes kept (2,000, least recently used first):
/// on a one-node private DHT every word and every content id is still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_with_thousands_of_keys_is_found_by_every_word_and_id() {
    let t = tempfile::tempdir().unwrap();
    let first = start_node(&DhtConfig {
        bind: Ipv4Addr::LOCALHOST,
        no_bootstrap: true,
        ..Default::default()
    })
    .unwrap();
    let bootstrap = vec![first.info().await.local_addr().to_string()];
    let dir = t.path().join("share");
    std::fs::create_dir_all(&dir).unwrap();
    // 1,500 files, each with its own word: 3,000 keys, and a few shared words.
    let files = 1500;
    let mut ids = Vec::new();
    for i in 0..files {
        let name = format!("Report w{i:04}x {}.txt", ["alpha", "beta", "gamma"][i % 3]);
        let body = format!("file {i}");
        ids.push(ContentId::from(blake3::hash(body.as_bytes())));
        std::fs::write(dir.join(name), body).unwrap();
    }
    let mut config = ShareConfig::new(vec![dir.clone()], None, t.path().join("state"));
    config.dht = Some(DhtConfig {
        bootstrap: bootstrap.clone(),
        bind: Ipv4Addr::LOCALHOST,
        ..Default::default()
    });
    config.dht_rate = 1000.0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut h = start_share(config, listener).await.unwrap();
    let status = h
        .wait_for(Duration::from_secs(120), |s| {
            s.dht_announced.is_some_and(|n| n > 0 && n == s.dht_keys)
        })
        .await
        .expect("every key announced");
    assert!(status.dht_keys > 3000, "{} keys", status.dht_keys);

    let me = start_node(&DhtConfig {
        bootstrap,
        bind: Ipv4Addr::LOCALHOST,
        server: false,
        ..Default::default()
    })
    .unwrap();
    // Words announced first and last, and ids across the share.
    for i in [0, 1, 2, 700, 1499] {
        let word = format!("w{i:04}x");
        let found = find_files(&me, &cq(&word, 10), None).await;
        let names: Vec<&str> = found
            .iter()
            .flat_map(|(_, (_, r))| r.files.iter().map(|f| f.name.as_str()))
            .collect();
        assert_eq!(names.len(), 1, "{word}: {names:?}");
        assert!(names[0].contains(&word), "{word}: {names:?}");
    }
    let found = find_files(&me, &cq("gamma", 1000), None).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1.1.files.len(), files / 3);
    for i in [0, 1, 749, 1498, 1499] {
        let sources = find_sources(&me, ids[i], None).await;
        assert_eq!(sources.len(), 1, "file {i}");
    }
    h.shutdown().await;
}

/// `peershare node --dht --no-index`: its API searches the DHT and its queue downloads a file
/// found there, from the DHT peer (what the web UI does with a serverless node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serverless_node_searches_the_dht_and_queues_a_download() {
    use peershare::web::client::NodeClient;
    let net = testnet();
    let t = tempfile::tempdir().unwrap();
    let b = t.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    let shared = data(2 * PIECE_SIZE as usize + 7, 71);
    std::fs::write(b.join("holiday-film.mkv"), &shared).unwrap();
    let pb = dht_peer(&b, &t.path().join("pb"), &net, None).await;

    let (state, own, out) = (
        t.path().join("n"),
        t.path().join("own"),
        t.path().join("out"),
    );
    std::fs::create_dir_all(&own).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peershare"));
    cmd.arg("node").arg(&own).arg("-o").arg(&out).args([
        "--dht",
        "--no-index",
        "--listen",
        "127.0.0.1:0",
    ]);
    for bs in &net.bootstrap {
        cmd.args(["--bootstrap", bs]);
    }
    let mut node = Running::spawn_lines(
        {
            cmd.env("PEERSHARE_HOME", &state);
            cmd
        },
        None,
        Lines::Both,
    );
    node.wait_line("web UI at");
    let client = NodeClient::find(&state).expect("node.json and its token");

    // DHT lookups may need a retry while the node's routing table fills.
    let page = eventually(Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let v = client
                .request("GET", "/api/v1/search?q=holiday", None)
                .await
                .ok()?;
            (v["results"].as_array()?.len() == 1).then_some(v)
        }
    })
    .await
    .expect("the DHT peer's file in the node's search");
    let hit = &page["results"][0];
    let id = ContentId::from(blake3::hash(&shared)).to_string();
    assert_eq!(hit["content_id"], id.as_str(), "{page:#}");
    assert_eq!(hit["name"], "holiday-film.mkv");

    let added = client
        .request(
            "POST",
            "/api/v1/transfers",
            Some(&serde_json::json!({"items": [{"kind": "file", "target": id, "name": "holiday-film.mkv"}]})),
        )
        .await
        .expect("queued");
    let item = added["ids"][0].as_i64().expect("an id");
    let done = eventually(Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let v = client
                .request("GET", &format!("/api/v1/transfers/{item}"), None)
                .await
                .ok()?;
            assert_ne!(v["state"], "failed", "{v:#}");
            (v["state"] == "done").then_some(v)
        }
    })
    .await
    .expect("the download finished");
    let path = out.join("holiday-film.mkv");
    assert_eq!(b3sum(&path), id, "{done:#}");
    drop(node);
    pb.shutdown().await;
}
