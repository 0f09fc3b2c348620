//! The secure channel seen from outside: nothing readable on the wire, a man in the middle or a
//! changed key refused, a second implementation (Python's `ssl` + `openssl`) completing the
//! handshake, the certificate test vector, and broken handshakes closing only their connection.
//!
//! Tests that need tcpdump and root, or python3 and openssl, say so on stderr and return early
//! when those are missing, unless `PEERSHARE_REQUIRE_ROOT_TESTS` is set (not empty, not "0"), as
//! scripts/test sets it: then they fail instead.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use peershare::identity::{Fingerprint, Identity};
use peershare::index::{IndexClient, IndexClientError, IndexConfig};
use peershare::peer::{PeerClient, PeerClientError};
use peershare::protocol::Limits;
use peershare::tls::{Tls, TlsError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_peershare");
const VECTOR_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/secure_vector.py");

/// Whether tests needing root, tcpdump, python3 or openssl must run rather than skip.
fn required() -> bool {
    std::env::var("PEERSHARE_REQUIRE_ROOT_TESTS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `Some(why)` is a reason to skip: printed, and `true` returned to skip; a failure instead
/// when the tests are required.
fn skip(test: &str, why: Option<String>) -> bool {
    let Some(why) = why else { return false };
    assert!(
        !required(),
        "{test}: {why}, and PEERSHARE_REQUIRE_ROOT_TESTS is set"
    );
    eprintln!("SKIPPED {test}: {why} (set PEERSHARE_REQUIRE_ROOT_TESTS=1 to fail instead)");
    true
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A free port on 127.0.0.1 (bound, then released for the caller to listen on).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A failing command's stderr: exactly one line, no panic.
fn one_line_error(out: &std::process::Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should fail");
    assert_ne!(out.status.code(), None, "{what} ended by a signal");
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    err
}

impl Running {
    /// The `peershare` binary with `args` and `home` as its state directory.
    fn peershare(args: &[&str], home: &Path) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("PEERSHARE_HOME", home)
            .env_remove("PEERSHARE_INDEX");
        Running::spawn(cmd, false)
    }

    /// Spawns `cmd` and collects the lines of its stdout, or of its stderr if `stderr`.
    fn spawn(cmd: Command, stderr: bool) -> Running {
        Running::spawn_lines(
            cmd,
            None,
            if stderr { Lines::Stderr } else { Lines::Stdout },
        )
    }

    /// The index's fingerprint, from its "index key FP: ..." line.
    fn index_key(&mut self) -> String {
        let l = self.wait_line("index key ");
        let fp = l
            .split_whitespace()
            .nth(2)
            .expect("fingerprint in line")
            .trim_end_matches(':');
        fp.parse::<Fingerprint>().expect("a fingerprint");
        fp.to_string()
    }
}

fn run(args: &[&str], home: &Path) -> std::process::Output {
    run_peershare(args, home)
}

// ---------------------------------------------------------------------------------------------
// 1. Nothing readable on the wire.

/// tcpdump writing what passes on the loopback interface through `ports` to `pcap`, once it
/// says it is capturing.
fn start_capture(pcap: &Path, ports: &[u16]) -> Running {
    let filter = format!(
        "tcp and ({})",
        ports
            .iter()
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ")
    );
    let mut cmd = Command::new("tcpdump");
    // -U: each packet written out as it comes (the file can be watched); -B: a 64 MiB
    // buffer, so that no packet of the burst of a download is dropped; -Z root: no switch to
    // the tcpdump user, who may not write into the test's directory.
    cmd.args([
        "-i", "lo", "-n", "-U", "-B", "65536", "-s", "0", "-Z", "root", "-w",
    ])
    .arg(pcap)
    .arg(&filter)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut dump = Running::spawn(cmd, true);
    dump.wait_line("listening on lo");
    dump
}

/// Stops tcpdump with SIGINT, waits (at most 10 s) for it to write out and exit, and checks
/// that it saw every packet: a packet dropped might be the one that leaks.
fn stop_capture(mut dump: Running) {
    let pid = dump.child.id() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child, which has not been waited for.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGINT) },
        0,
        "SIGINT tcpdump"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = dump.child.try_wait().expect("wait tcpdump") {
            assert!(status.success(), "tcpdump: {status}; said {:?}", dump.seen);
            break;
        }
        assert!(Instant::now() < deadline, "tcpdump did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped = dump.wait_line("dropped by kernel");
    assert!(
        dropped.trim_start().starts_with("0 "),
        "tcpdump missed packets: {dropped}; said {:?}",
        dump.seen
    );
}

#[test]
fn nothing_readable_leaks_on_the_wire() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let why = match (root, runs("tcpdump", "--version")) {
        (_, false) => Some("tcpdump is not installed (Debian package tcpdump)".to_string()),
        (false, _) => Some("capturing on lo needs root".to_string()),
        _ => None,
    };
    if skip("nothing_readable_leaks_on_the_wire", why) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let name = "zebra-secret-name.bin";
    let query = "zebra";
    let seed = u64::from_le_bytes(
        peershare::identity::random_bytes().unwrap()[..8]
            .try_into()
            .unwrap(),
    );
    let content = data(3 * 524_288 + 4321, seed);
    std::fs::write(share.join(name), &content).unwrap();
    let id = blake3::hash(&content);

    let mut index = Running::peershare(&["index", "--listen", "127.0.0.1:0"], &t.path().join("ix"));
    let ix = index.listening();
    let ix_port: u16 = ix.rsplit(':').next().unwrap().parse().unwrap();
    // The sharing peer's and the downloader's ports are chosen now, to be in the filter.
    let (share_port, get_port) = (free_port(), free_port());
    let pcap = t.path().join("lo.pcap");
    let dump = start_capture(&pcap, &[ix_port, share_port, get_port]);

    // The file list goes to the index, the query and its results too, then the content and
    // its hashes from the peer.
    let share_listen = format!("127.0.0.1:{share_port}");
    let mut peer = Running::peershare(
        &[
            "share",
            share.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            &share_listen,
        ],
        &t.path().join("p1"),
    );
    peer.wait_line("registered with index");
    let home = t.path().join("client");
    let out = run(&["search", query, "--json", "--index", &ix], &home);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["files"][0]["name"], name);
    assert_eq!(doc["files"][0]["content_id"], id.to_hex().as_str());
    let dl = t.path().join("dl");
    let get_listen = format!("127.0.0.1:{get_port}");
    let out = run(
        &[
            "get",
            id.to_hex().as_str(),
            "-o",
            dl.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            &get_listen,
        ],
        &home,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::read(dl.join(name)).unwrap() == content,
        "downloaded intact"
    );

    // Control: plain text sent to a captured port is found in the capture (and once it is
    // there, everything before it has been written out).
    let canary = format!(
        "plaintext-canary-{}",
        hex(&peershare::identity::random_bytes().unwrap()[..8])
    );
    let mut frame = ((1 + canary.len()) as u32).to_be_bytes().to_vec();
    frame.push(0x01);
    frame.extend_from_slice(canary.as_bytes());
    let mut plain = StdTcpStream::connect(&ix).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(&frame).unwrap();
    let mut refusal = Vec::new();
    let _ = plain.read_to_end(&mut refusal);
    assert!(
        contains(&refusal, b"TLS"),
        "plain-text refusal: {:?}",
        text(&refusal)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read(&pcap).is_ok_and(|b| contains(&b, canary.as_bytes())) {
        assert!(
            Instant::now() < deadline,
            "the capture never showed the plain-text canary"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(peer);
    stop_capture(dump);

    let wire = std::fs::read(&pcap).unwrap();
    assert!(
        wire.len() > content.len(),
        "the capture holds the transfer: {} bytes",
        wire.len()
    );
    assert!(contains(&wire, canary.as_bytes()));
    // TLS 1.3 handshakes (ClientHello record 16 03 01, the rest 16 03 03 or 17 03 03) and
    // application data records: the 1.5 MiB at most 16 KiB a record.
    assert!(
        contains(&wire, &[0x16, 0x03, 0x01]),
        "no TLS ClientHello record"
    );
    let records = count(&wire, &[0x17, 0x03, 0x03]);
    assert!(
        records > content.len() / 16_384,
        "{records} application data records"
    );

    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("the file name".into(), name.as_bytes().to_vec()),
        ("the name's stem".into(), b"zebra-secret".to_vec()),
        ("the query word".into(), query.as_bytes().to_vec()),
        (
            "the content id (hex)".into(),
            id.to_hex().as_bytes().to_vec(),
        ),
        (
            "the content id (HEX)".into(),
            id.to_hex().to_uppercase().into_bytes(),
        ),
        ("the content id (bytes)".into(), id.as_bytes().to_vec()),
    ];
    for at in [
        0,
        1,
        262_144,
        262_144 + 100,
        content.len() / 2,
        content.len() - 64 - 7,
        content.len() - 64,
    ] {
        secrets.push((
            format!("the content at {at}"),
            content[at..at + 64].to_vec(),
        ));
    }
    for (what, bytes) in &secrets {
        assert!(!contains(&wire, bytes), "{what} is readable in the capture");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A man in the middle, a changed key, a source with another key.

/// A terminating man in the middle: accepts TLS with its own key and relays everything to
/// `target` over a TLS connection of its own. Returns its address and key.
async fn mitm(target: String) -> (String, peershare::content::Digest) {
    let me = Tls::ephemeral().unwrap();
    let key = me.public_key();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (me, target) = (me.clone(), target.clone());
            tokio::spawn(async move {
                let Ok(mut front) = me.accept(s, Duration::from_secs(10), b"").await else {
                    return;
                };
                let Ok(tcp) = TcpStream::connect(&target).await else {
                    return;
                };
                let Ok(mut back) = me.connect(tcp, None, Duration::from_secs(10)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut front.stream, &mut back.stream).await;
            });
        }
    });
    (addr, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("index.sqlite");
    let index = start_index(&db, Duration::from_secs(60)).await;
    let real = index_tls(&db).public_key();
    let (proxy, proxy_key) = mitm(index.addr()).await;
    let (real_fp, proxy_fp) = (
        Fingerprint(real).to_string(),
        Fingerprint(proxy_key).to_string(),
    );

    // Control: the proxy does relay; a client expecting no key in particular gets through,
    // and sees the proxy's key.
    let mut c = IndexClient::connect(&proxy, None, None, Limits::default())
        .await
        .expect("through the proxy");
    assert_eq!(c.server_key(), proxy_key);
    c.list_peers()
        .await
        .expect("the index answers through the proxy");

    // Expecting the real key: refused, naming both keys.
    let refused = IndexClient::connect(&proxy, None, Some(real), Limits::default()).await;
    let e = refused.err().expect("the proxy's key is refused");
    let msg = e.to_string();
    match e {
        IndexClientError::Secure {
            source: TlsError::WrongKey { expected, found },
            ..
        } => {
            assert_eq!(expected.0, real);
            assert_eq!(found.0, proxy_key);
        }
        other => panic!("not WrongKey: {other:?}"),
    }
    assert!(
        msg.contains(&format!(
            "it holds the key {proxy_fp}, not the expected {real_fp}"
        )),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");

    // The CLI given the real key with the proxy's address.
    let home = t.path().join("client");
    let spec = format!("{proxy}#{real_fp}");
    let out =
        tokio::task::spawn_blocking(move || run(&["search", "anything", "--index", &spec], &home))
            .await
            .unwrap();
    let err = one_line_error(&out, "search through the proxy with the real key");
    assert!(err.contains(&real_fp) && err.contains(&proxy_fp), "{err}");

    // The CLI that pinned the real key for the proxy's address (as if the proxy had taken
    // the index's address after the first use).
    let home = t.path().join("pinned");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("known_indexes"), format!("{proxy} {real_fp}\n")).unwrap();
    let spec = proxy.clone();
    let out =
        tokio::task::spawn_blocking(move || run(&["search", "anything", "--index", &spec], &home))
            .await
            .unwrap();
    let err = one_line_error(&out, "search through the proxy with the real key pinned");
    assert!(
        err.contains(&format!(
            "now holds the key {proxy_fp}, but {real_fp} was pinned on first use"
        )),
        "{err}"
    );
    index.stop().await;
}

#[test]
fn a_changed_index_key_is_refused_until_accepted() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("rekeyed-index.txt"), b"same address, new key").unwrap();
    let db1 = t.path().join("one.sqlite");
    let mut index = Running::peershare(
        &[
            "index",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db1.to_str().unwrap(),
        ],
        &t.path().join("ix"),
    );
    let ix = index.listening();
    let fp1 = index.index_key();
    let mut peer = Running::peershare(
        &[
            "share",
            share.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "127.0.0.1:0",
        ],
        &t.path().join("p1"),
    );
    peer.wait_line("registered with index");
    let home = t.path().join("client");
    let out = run(&["search", "rekeyed", "--index", &ix], &home);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let known = std::fs::read_to_string(home.join("known_indexes")).unwrap();
    assert!(
        known.contains(&format!("{ix} {fp1}")),
        "pinned on first use: {known}"
    );

    // Another index (another database, so another key) on the same address.
    drop(peer);
    drop(index);
    let db2 = t.path().join("two.sqlite");
    let mut index = Running::peershare(
        &["index", "--listen", &ix, "--db", db2.to_str().unwrap()],
        &t.path().join("ix"),
    );
    assert_eq!(index.listening(), ix);
    let fp2 = index.index_key();
    assert_ne!(fp1, fp2);
    let mut peer = Running::peershare(
        &[
            "share",
            share.to_str().unwrap(),
            "--index",
            &ix,
            "--listen",
            "127.0.0.1:0",
        ],
        &t.path().join("p2"),
    );
    peer.wait_line("registered with index");

    let out = run(&["search", "rekeyed", "--index", &ix], &home);
    let err = one_line_error(&out, "search of a re-keyed index");
    assert!(
        err.contains(&format!(
            "the index at {ix} now holds the key {fp2}, but {fp1} was pinned on first use"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("connect once with {ix}#{fp2} to accept it")),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(home.join("known_indexes"))
            .unwrap()
            .contains(&fp1),
        "a refusal keeps the pin"
    );

    // Accepting the new key: it is used, and pinned instead of the old one.
    let out = run(
        &["search", "rekeyed", "--index", &format!("{ix}#{fp2}")],
        &home,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rekeyed-index.txt"));
    let known = std::fs::read_to_string(home.join("known_indexes")).unwrap();
    assert!(
        known.contains(&format!("{ix} {fp2}")) && !known.contains(&fp1),
        "{known}"
    );
    let out = run(&["search", "rekeyed", "--index", &ix], &home);
    assert!(out.status.success(), "re-pinned: {}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_holding_another_key_than_listed_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("share");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f.txt"), b"served").unwrap();
    let state = t.path().join("peer");
    let peer = start_peer(&dir, None, &state).await;
    let addr = peer.local_addr.to_string();
    let real = Identity::load_or_create(&state).unwrap().public_key();
    let listed = Identity::from_secret([9; 32]).public_key();

    let c = PeerClient::connect(&addr, None, Some(real), Limits::default())
        .await
        .expect("the right key is accepted");
    assert_eq!(c.key(), real);
    let e = PeerClient::connect(&addr, None, Some(listed), Limits::default())
        .await
        .err()
        .expect("another key is refused");
    let msg = e.to_string();
    match e {
        PeerClientError::Secure {
            source: TlsError::WrongKey { expected, found },
            ..
        } => {
            assert_eq!(expected.0, listed);
            assert_eq!(found.0, real);
        }
        other => panic!("not WrongKey: {other:?}"),
    }
    assert!(
        msg.contains(&Fingerprint(real).to_string())
            && msg.contains(&Fingerprint(listed).to_string()),
        "{msg}"
    );
    peer.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. A second implementation; the certificate test vector.

/// Runs tests/secure_vector.py against `addr`, expecting the key `fp`.
async fn python_vector(addr: String, fp: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(VECTOR_SCRIPT)
            .arg(&addr)
            .arg(&fp)
            .stdin(Stdio::null())
            .output()
            .expect("run python3")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_implementation_completes_the_handshake() {
    let why = match (runs("python3", "--version"), runs("openssl", "version")) {
        (false, _) => Some("python3 is not installed".to_string()),
        (_, false) => Some("openssl is not installed".to_string()),
        _ => None,
    };
    if skip("a_second_implementation_completes_the_handshake", why) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("index.sqlite");
    let index = start_index(&db, Duration::from_secs(60)).await;
    let fp = Fingerprint(index_tls(&db).public_key()).to_string();
    let out = python_vector(index.addr(), fp.clone()).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    eprintln!("secure_vector.py against the index:\n{stdout}");
    assert!(stdout.contains("cipher TLS_"), "{stdout}");
    assert!(
        stdout.contains("welcome version 1 agent 'peershare/"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("server key {fp}")), "{stdout}");

    // Against a sharing peer too.
    let dir = t.path().join("share");
    std::fs::create_dir_all(&dir).unwrap();
    let state = t.path().join("peer");
    let peer = start_peer(&dir, None, &state).await;
    let peer_fp = Identity::load_or_create(&state)
        .unwrap()
        .fingerprint()
        .to_string();
    let out = python_vector(peer.local_addr.to_string(), peer_fp).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Expecting another key: refused, on one line naming both.
    let wrong = Identity::from_secret([7; 32]).fingerprint().to_string();
    let out = python_vector(index.addr(), wrong.clone()).await;
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("holds the key {fp}, not the expected {wrong}")),
        "{err}"
    );
    peer.shutdown().await;
    index.stop().await;
}

/// The certificate of the identity whose secret is 32 bytes 0x07, as docs/PROTOCOL.md quotes
/// it for second implementations (checked independently with `openssl x509` and `openssl
/// verify -check_ss_sig`).
const VECTOR_CERT: &str = "3081e930819ca00302010202147e812c12f3ab4ce6ac5db69ac352f906cb1b11ef\
300506032b657030143112301006035504030c097065657273686172653020170d3735303130313030303030305a\
180f34303936303130313030303030305a30143112301006035504030c09706565727368617265302a300506032b\
6570032100ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c300506032b65700341\
006253fa3627673fd23b3820137de13f5031f204ccbf94b3d81eb7604dfbb1b0e6b8583d9d7276917760cb30bb74\
b1a385b4823a8bede9dcf101397c37c868c304";
const VECTOR_FINGERPRINT: &str = "5jfgyy7ctrjavpxvkb5rglwf7gkuo5vox27hxescd3vgsfcg2iwa";

#[test]
fn the_certificate_test_vector() {
    let id = Identity::from_secret([7; 32]);
    let (cert, _) = peershare::tls::certificate(&id).unwrap();
    assert_eq!(hex(&cert), VECTOR_CERT);
    assert_eq!(id.fingerprint().to_string(), VECTOR_FINGERPRINT);
    assert_eq!(peershare::tls::key_of(&cert).unwrap(), id.public_key());
    // The key sits in the certificate after the Ed25519 SubjectPublicKeyInfo prefix, where
    // secure_vector.py looks for it.
    let spki = [
        hex(&[
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ]),
        hex(&id.public_key().0),
    ]
    .concat();
    assert!(VECTOR_CERT.contains(&spki));
}

// ---------------------------------------------------------------------------------------------
// 4. Broken handshakes close only their own connection.

/// Reads until the connection closes (end of stream or reset), at most `limit`; returns what
/// was read and when it closed, `None` if still open at `limit`.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_or_garbage_handshakes_close_only_their_own_connection() {
    const HANDSHAKE: Duration = Duration::from_secs(3);
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("index.sqlite");
    let config = IndexConfig {
        handshake_timeout: HANDSHAKE,
        ..IndexConfig::default()
    };
    let index = start_index_with(&db, "127.0.0.1:0".parse().unwrap(), config).await;
    let addr = index.addr();
    let key = index_tls(&db).public_key();
    let dir = t.path().join("share");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("steadfast.txt"), b"still served").unwrap();
    let peer = start_peer(&dir, Some(addr.clone()), &t.path().join("peer")).await;

    // Silent: connects and sends nothing.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let opened = Instant::now();

    // Garbage after a TLS handshake record type.
    let garbage = tokio::spawn({
        let addr = addr.clone();
        async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let mut junk = vec![0x16];
            while junk.len() < 70_000 {
                junk.extend_from_slice(&peershare::identity::random_bytes().unwrap());
            }
            let sent = Instant::now();
            let _ = s.write_all(&junk).await; // the server may close before it has it all
            let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
            closed.map(|c| c - sent)
        }
    });

    // A Hello in plain text (docs/PROTOCOL.md §12): told so in plain text, then closed.
    let plain = tokio::spawn({
        let addr = addr.clone();
        async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let hello = b"\x00\x00\x00\x32\x01\x83\xabversion_min\x01\xabversion_max\x01\xa5agent\xafpeershare/0.1.0";
            s.write_all(hello).await.unwrap();
            read_until_closed(&mut s, Duration::from_secs(10)).await
        }
    });

    // Meanwhile a client searches.
    let mut c = IndexClient::connect(&addr, None, Some(key), Limits::default())
        .await
        .expect("a client gets through");
    let r = c.search("steadfast", 10).await.expect("search");
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].name, "steadfast.txt");
    let searched = Instant::now();

    let took = garbage
        .await
        .unwrap()
        .expect("the garbage connection is closed");
    assert!(
        took < HANDSHAKE - Duration::from_millis(500),
        "garbage closed after {took:?}"
    );

    let (reply, closed) = plain.await.unwrap();
    assert!(closed.is_some(), "the plain-text connection is closed");
    assert!(reply.len() >= 5, "a plain-text reply: {reply:?}");
    let len = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
    assert_eq!(reply.len(), 4 + len, "one frame, then the close: {reply:?}");
    assert_eq!(reply[4], 0x03, "an Error frame");
    let e: peershare::protocol::ErrorReply =
        rmp_serde::from_slice(&reply[5..]).expect("ErrorReply");
    assert_eq!(e.code, 4, "UNSUPPORTED_VERSION: {e:?}");
    assert!(e.message.contains("TLS"), "{e:?}");

    // The silent one is closed at the handshake limit, not before, without a byte.
    let (got, closed) = read_until_closed(&mut silent, HANDSHAKE + Duration::from_secs(5)).await;
    let closed = closed.expect("the silent connection is closed");
    assert!(
        searched < closed,
        "the search ran while the silent connection was open"
    );
    let closed = closed - opened;
    assert!(
        got.is_empty(),
        "nothing sent to the silent connection: {got:?}"
    );
    assert!(
        closed >= HANDSHAKE - Duration::from_millis(300)
            && closed <= HANDSHAKE + Duration::from_secs(5),
        "silent connection closed after {closed:?}"
    );

    // The client's connection outlived them all.
    let r = c.search("steadfast", 10).await.expect("search again");
    assert_eq!(r.files.len(), 1);
    drop(c);
    peer.shutdown().await;
    index.stop().await;
}

/// The handshake limit covers the TLS handshake and `Hello` together: a client that finishes
/// TLS late and then says nothing is closed when the limit from its connection runs out, not a
/// whole limit after its TLS handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_limit_counts_from_the_connection() {
    const HANDSHAKE: Duration = Duration::from_secs(2);
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("index.sqlite");
    let config = IndexConfig {
        handshake_timeout: HANDSHAKE,
        ..IndexConfig::default()
    };
    let index = start_index_with(&db, "127.0.0.1:0".parse().unwrap(), config).await;
    let tcp = TcpStream::connect(index.addr()).await.unwrap();
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut secured = client_tls()
        .connect(tcp, None, Duration::from_secs(5))
        .await
        .expect("TLS within the limit")
        .stream;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match secured.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("closed");
    let after = closed - opened;
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_millis(2900),
        "closed {after:?} after connecting; the limit is {HANDSHAKE:?} in all"
    );
}
