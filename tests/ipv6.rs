//! IPv6 with the real binary: share, search and get over `::1`; a dual-stack index (`[::]`)
//! that records IPv4 clients as IPv4, not as `::ffff:a.b.c.d`; an IPv6-only index and two
//! IPv6-only peers in network namespaces.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::path::Path;
use std::process::Command;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

/// Whether this host has `::1`; says so (skipped, or failed when the tests are required).
fn has_ipv6_loopback(test: &str) -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok() || !netns::skip(test, "this host has no ::1")
}

fn peershare(cmd: Command, home: &Path) -> Running {
    let mut cmd = cmd;
    cmd.env("PEERSHARE_HOME", home)
        .env_remove("PEERSHARE_INDEX");
    Running::spawn_lines(cmd, None, Lines::Stdout)
}

fn start(args: &[&str], home: &Path) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    peershare(cmd, home)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `HOST:PORT#FINGERPRINT` the index prints for its clients.
fn index_address(index: &mut Running) -> String {
    let line = index.wait_line("clients connect with --index");
    line.rsplit(' ').next().expect("address").to_string()
}

/// The one peer listed for the first file of `search --json`.
fn search_peer(query: &str, index: &str, home: &Path) -> (String, serde_json::Value) {
    let out = run_peershare(&["search", query, "--json", "--index", index], home);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let f = &doc["files"][0];
    (
        f["content_id"].as_str().expect("content id").to_string(),
        f["peers"][0].clone(),
    )
}

#[test]
fn share_search_get_over_ipv6_loopback() {
    if !has_ipv6_loopback("share_search_get_over_ipv6_loopback") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("six.bin"), data(2 * 262_144 + 17, 6)).unwrap();
    let mut index = start(&["index", "--listen", "[::1]:0"], &t.path().join("ix"));
    // `HOST:PORT#FINGERPRINT` with an IPv6 host: the key is pinned from the start.
    let ix = index_address(&mut index);
    assert!(ix.starts_with("[::1]:") && ix.contains('#'), "{ix}");
    let mut peer = start(
        &[
            "share",
            share.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "[::1]:0",
            "--no-port-mapping",
        ],
        &t.path().join("p"),
    );
    peer.wait_line("registered with index");

    let home = t.path().join("client");
    // Without the fingerprint: the client pins the key it sees for [::1]:PORT.
    let bare = ix.split('#').next().unwrap().to_string();
    let (id, p) = search_peer("six", &bare, &home);
    assert_eq!(p["host"], "::1", "{p}");
    assert_eq!(id, b3sum(&share.join("six.bin")));
    let dl = t.path().join("dl");
    let out = run_peershare(
        &[
            "get",
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--index",
            &ix,
            "--no-share",
        ],
        &home,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b3sum(&dl.join("six.bin")), id);

    // The key is pinned for the IPv6 address as for any: another index there is refused.
    drop(index);
    let port = ix
        .split('#')
        .next()
        .and_then(|a| a.rsplit(':').next())
        .unwrap();
    let mut other = start(
        &["index", "--listen", &format!("[::1]:{port}")],
        &t.path().join("ix2"),
    );
    other.wait_line("listening on");
    let out = run_peershare(&["search", "six", "--index", &bare], &home);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("key"), "{}", text(&out.stderr));
}

#[test]
fn a_dual_stack_index_serves_both_families_and_records_ipv4_as_ipv4() {
    if !has_ipv6_loopback("a_dual_stack_index_serves_both_families") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("both.bin"), data(300_000, 4)).unwrap();
    // The default listening address is the dual-stack wildcard.
    let mut index = start(&["index", "--listen", "[::]:0"], &t.path().join("ix"));
    let port = index
        .word("listening on", "[::]:")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let v4 = format!("127.0.0.1:{port}");
    let v6 = format!("[::1]:{port}");
    // The peer reaches the index over IPv4 (an IPv4-mapped address on the index's socket)
    // and serves on the dual-stack wildcard: it is listed at 127.0.0.1, never ::ffff:127.0.0.1.
    let mut peer = start(
        &[
            "share",
            share.to_str().unwrap(),
            "--index",
            &v4,
            "--no-port-mapping",
        ],
        &t.path().join("p"),
    );
    peer.wait_line("registered with index");
    let home = t.path().join("client");
    let (id, p) = search_peer("both", &v6, &home);
    assert_eq!(p["host"], "127.0.0.1", "{p}");
    // And the download, started over IPv6 at the index, fetches it over IPv4.
    let dl = t.path().join("dl");
    let out = run_peershare(
        &[
            "get",
            &id,
            "-o",
            dl.to_str().unwrap(),
            "--index",
            &v6,
            "--no-share",
        ],
        &home,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b3sum(&dl.join("both.bin")), id);

    // `--listen 0.0.0.0` stays IPv4 only.
    let mut v4_only = start(&["index", "--listen", "0.0.0.0:0"], &t.path().join("ix4"));
    let port = v4_only
        .word("listening on", "0.0.0.0:")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok());
    assert!(std::net::TcpStream::connect(format!("[::1]:{port}")).is_err());
}

#[test]
fn an_ipv6_only_index_and_two_ipv6_only_peers() {
    let test = "an_ipv6_only_index_and_two_ipv6_only_peers";
    let Some(mut t) = netns::Topology::new(test, netns::Family::V6, false) else {
        return;
    };
    let ix_host = t.public_host("ix");
    let a = t.public_host("a");
    let b = t.public_host("b");
    for h in [&ix_host, &a, &b] {
        assert!(h.ip.is_none(), "IPv6 only");
        // Nothing but loopback has IPv4.
        let v4 = h.sh("ip -4 -o addr show");
        assert!(v4.lines().all(|l| l.contains(" lo ")), "{v4}");
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("v6only.bin"), data(700_000, 66)).unwrap();

    let mut cmd = ix_host.command(BIN);
    // The defaults: the dual-stack wildcard, here with IPv6 only.
    cmd.args(["index", "--listen", "[::]:50000"]);
    let mut index = peershare(cmd, &dir.path().join("ix"));
    index.wait_line("listening on");
    let ix = format!("[{}]:50000", ix_host.v6());
    let mut cmd = a.command(BIN);
    cmd.args(["share", share.to_str().unwrap(), "--index", &ix]);
    let mut peer = peershare(cmd, &dir.path().join("a"));
    peer.wait_line("registered with index");

    let home = dir.path().join("b");
    let mut search = b.command(BIN);
    search
        .args(["search", "v6only", "--json", "--index", &ix])
        .env("PEERSHARE_HOME", &home);
    let out = search.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let f = &doc["files"][0];
    assert_eq!(f["peers"][0]["host"], a.v6().to_string(), "{doc}");
    let id = f["content_id"].as_str().unwrap().to_string();
    let dl = dir.path().join("dl");
    let mut get = b.command(BIN);
    get.args(["get", &id, "-o", dl.to_str().unwrap(), "--index", &ix])
        .env("PEERSHARE_HOME", &home);
    let out = get.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b3sum(&dl.join("v6only.bin")), id);
    assert_eq!(id, b3sum(&share.join("v6only.bin")));

    // The DHT is IPv4 only: asked for on this host, share says why it cannot.
    let mut cmd = b.command(BIN);
    cmd.args(["share", share.to_str().unwrap(), "--dht", "--no-index"])
        .env("PEERSHARE_HOME", dir.path().join("dht"));
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("IPv4 only") && err.contains("IPv6-only"),
        "{err}"
    );
}
