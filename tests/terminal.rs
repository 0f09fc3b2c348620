//! Text from a hostile index reaches the terminal escaped: no ESC sequence, no forged line, no name looked up, in search, peers, get and the menu.

mod common;

use std::time::Duration;

use common::{run_menu, run_peershare};

use peershare::content::{ContentId, Digest};
use peershare::protocol::{
    Connection, FileHit, Limits, Message, PeerHit, PeerList, PeerRecord, SearchResults,
};
use peershare::tls::Tls;
use tokio::net::TcpListener;

const NAME: &str = "red\x1b[31m\nFORGED NAME\u{202e}gnp.exe";
const HOST: &str = "10.0.0.1\x1b]0;pwned\x07\nFORGED HOST";
const ID: [u8; 32] = [0x42; 32];

fn hostile_peer(peer_id: u64, host: &str) -> PeerHit {
    PeerHit {
        key: None,
        peer_id,
        host: host.into(),
        port: 9,
        shared_at: 0,
        last_seen: 0,
        have: None,
        path: Some(format!("dir\x1b[2J/{NAME}")),
        reach: None,
    }
}

/// An index that answers every search with one file of a hostile name whose peers have
/// hostile hosts, and lists hostile peers. Returns its address.
fn hostile_index() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            // It speaks TLS like any index (with a fresh key, pinned by the client on first
            // use): the hostile text comes inside the secure channel.
            let tls = Tls::ephemeral().expect("tls");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr").to_string())
                .expect("send addr");
            while let Ok((s, _)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Ok(s) = tls.accept(s, Duration::from_secs(10), b"").await else {
                        return;
                    };
                    let mut c = Connection::new(s.stream, Limits::default());
                    if c.server_handshake(
                        Digest::default(),
                        &peershare::protocol::feature::ALL,
                        None,
                    )
                    .await
                    .is_err()
                    {
                        return;
                    }
                    while let Ok(Some(m)) = c.read_message().await {
                        let reply = match m {
                            Message::Search(_) => Message::SearchResults(SearchResults {
                                files: vec![FileHit {
                                    name: NAME.into(),
                                    size: 7,
                                    content_id: ContentId::from_bytes(ID),
                                    peers: vec![
                                        hostile_peer(7, HOST),
                                        hostile_peer(8, "evil.example"),
                                    ],
                                }],
                                truncated: false,
                                total: 1,
                                estimated: false,
                            }),
                            Message::ListPeers => Message::PeerList(PeerList {
                                peers: vec![PeerRecord {
                                    peer_id: 7,
                                    host: HOST.into(),
                                    port: 9,
                                    files: 1,
                                    last_seen: 0,
                                    live: true,
                                }],
                            }),
                            _ => return,
                        };
                        if c.send(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("index up")
}

/// Fails if `out` holds an ESC or any other control character but newline, or a line that
/// starts with text the index forged.
fn assert_clean(what: &str, out: &[u8]) {
    let text = String::from_utf8_lossy(out);
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: a control character reached the terminal:\n{text:?}"
    );
    assert!(
        !text.contains('\u{202e}'),
        "{what}: a right-to-left override reached the terminal:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "{what}: a line was forged:\n{text}"
    );
}

#[test]
fn search_peers_and_get_print_hostile_text_escaped_and_never_resolve_a_name() {
    let ix = hostile_index();
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");

    let out = run_peershare(&["search", "anything", "--index", &ix], &home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("search stdout", &out.stdout);
    assert_clean("search stderr", &out.stderr);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("\\x1b[31m\\nFORGED NAME\\u{202e}gnp.exe"),
        "{shown}"
    );
    assert!(
        shown.contains("10.0.0.1\\x1b]0;pwned\\x07\\nFORGED HOST:9"),
        "{shown}"
    );
    assert!(
        shown.contains("dir\\x1b[2J/red\\x1b[31m"),
        "the path is escaped too: {shown}"
    );

    // JSON needs nothing more: serde_json escapes control characters itself.
    let out = run_peershare(&["search", "anything", "--index", &ix, "--json"], &home);
    assert_clean("search --json", &out.stdout);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(doc["files"][0]["name"], NAME);

    let out = run_peershare(&["peers", "--index", &ix], &home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("peers stdout", &out.stdout);
    assert_clean("peers stderr", &out.stderr);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\\nFORGED HOST"));

    let dl = t.path().join("dl");
    let id = ContentId::from_bytes(ID).to_hex();
    let started = std::time::Instant::now();
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
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "nothing could be downloaded: {err}");
    assert_clean("get stderr", &out.stderr);
    assert_clean("get stdout", &out.stdout);
    // Neither host is an IP address: both are left out before any connection or look-up.
    assert!(
        err.contains("host \"evil.example\" is not an IP address"),
        "{err}"
    );
    assert!(err.contains("is not an IP address"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
}

#[test]
fn the_menu_prints_hostile_text_escaped() {
    let ix = hostile_index();
    let port = ix.rsplit(':').next().unwrap().to_string();
    let t = tempfile::tempdir().unwrap();
    let out = run_menu(t.path(), &format!("2\n{port}\n0\n1\nanything\nN\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FORGED NAME"),
        "the menu showed the result:\n{stdout}"
    );
    assert_clean("menu stdout", &out.stdout);
    assert_clean("menu stderr", &out.stderr);
}
