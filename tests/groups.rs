//! Private groups as a user and an attacker see them (docs/PROTOCOL.md §4.2, §7.8): the whole
//! story with the real binary (private index, invite, join, share, search and get without
//! `--index`, members, a stranger refused, a used-up invite); a sharing member refusing
//! strangers and copied certificates, on the wire; removal reaching the index at once and the
//! sharing peers within a lease; bad invites (expired, mistyped, another key); a member refusing
//! sources that are not members; joining twice.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::*;
use peershare::content::{ContentId, Digest};
use peershare::group::{AdmitError, GroupState, Invite, Membership, MembershipError};
use peershare::identity::{Fingerprint, Identity};
use peershare::index::{GroupStore, IndexClient, IndexClientError};
use peershare::node::{MemberRecord, ShareConfig, ShareHandle, start_share};
use peershare::peer::{PeerClient, PeerClientError};
use peershare::protocol::{ErrorReply, Limits, Message, ProtocolError};
use peershare::tls::Tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

/// The code of `FORBIDDEN` (§6).
const FORBIDDEN: u16 = 7;

/// The longest any one command of the binary may take here.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------------------------
// Driving the binary.

/// `peershare --state-dir HOME ARGS…`, with nothing from the environment.
fn command(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--state-dir")
        .arg(home)
        .args(args)
        .env_remove("PEERSHARE_HOME")
        .env_remove("PEERSHARE_INDEX")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Runs `peershare --state-dir HOME ARGS…` to the end (killed, and the test failed, after
/// [`COMMAND_LIMIT`]).
fn run(home: &Path, args: &[&str]) -> Output {
    let mut child = command(home, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peershare");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("peershare {args:?} still running after {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Runs a command that must succeed; returns its stdout.
fn ok(home: &Path, args: &[&str]) -> String {
    let out = run(home, args);
    assert!(
        out.status.success(),
        "peershare {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A command that must fail the way a user is told: a non-zero exit (not a signal), one line
/// on stderr, no panic. Returns that line.
fn fails(home: &Path, args: &[&str]) -> String {
    let out = run(home, args);
    assert!(
        !out.status.success(),
        "peershare {args:?} should fail; stdout: {}",
        text(&out.stdout)
    );
    assert_ne!(out.status.code(), None, "{args:?} ended by a signal");
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err
}

/// A running binary whose stdout lines are collected in the background; its stderr goes to a
/// log file shown when a wait fails.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    log: PathBuf,
}

impl Running {
    fn start(home: &Path, args: &[&str]) -> Running {
        let log = home.with_extension("log");
        let mut child = command(home, args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn peershare");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            log,
        }
    }

    /// Waits (at most 30 s) for a stdout line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line with {needle:?}; saw {:?}; stderr: {}",
            self.seen,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// The `127.0.0.1:PORT` of the "listening on" line, and the line.
    fn listening(&mut self) -> (String, String) {
        let l = self.wait_line("listening on");
        let addr = l
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .expect("address in line")
            .to_string();
        (addr, l)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `peershare index --private` on 127.0.0.1:0, running.
struct BinIndex {
    _run: Running,
    home: PathBuf,
    addr: String,
    key: Fingerprint,
}

fn private_index(home: &Path, extra: &[&str]) -> BinIndex {
    let mut args = vec!["index", "--private", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut run = Running::start(home, &args);
    let (addr, line) = run.listening();
    assert!(line.contains("private: members only"), "{line}");
    let l = run.wait_line("index key ");
    let key: Fingerprint = l
        .split_whitespace()
        .nth(2)
        .expect("fingerprint in line")
        .trim_end_matches(':')
        .parse()
        .expect("a fingerprint");
    BinIndex {
        _run: run,
        home: home.to_path_buf(),
        addr,
        key,
    }
}

impl BinIndex {
    /// `peershare invite ARGS…` on the index's state directory: the token, alone on stdout.
    fn invite(&self, args: &[&str]) -> String {
        let mut all = vec!["invite"];
        all.extend_from_slice(args);
        let out = ok(&self.home, &all);
        assert_eq!(out.lines().count(), 1, "the token alone: {out}");
        let token = out.trim().to_string();
        let invite: Invite = token.parse().expect("the token parses");
        assert_eq!(invite.index, self.addr);
        assert_eq!(invite.key, self.key);
        token
    }

    /// `peershare members --json`: (id, fingerprint, revoked) of each member.
    fn members(&self) -> Vec<(i64, Fingerprint, bool)> {
        let out = ok(&self.home, &["members", "--json"]);
        let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
        doc.as_array()
            .expect("an array")
            .iter()
            .map(|r| {
                (
                    r["id"].as_i64().expect("id"),
                    r["fingerprint"]
                        .as_str()
                        .expect("fingerprint")
                        .parse()
                        .expect("a fingerprint"),
                    !r["revoked"].is_null(),
                )
            })
            .collect()
    }
}

/// The key of the state directory `home` (made there if need be, as the binary would).
fn key_of(home: &Path) -> Identity {
    Identity::load_or_create(home).expect("identity")
}

/// `peershare share DIR` of the member whose state directory is `home`, with no `--index` (a
/// member shares with its group's index), registered. Returns it and its address.
fn share(home: &Path, dir: &Path) -> (Running, String) {
    let mut run = Running::start(home, &["share", path(dir), "--listen", "127.0.0.1:0"]);
    let (addr, _) = run.listening();
    run.wait_line("registered with index");
    (run, addr)
}

/// The content id `peershare search QUERY --json` (no `--index`) finds for a file named `name`.
fn search_id(home: &Path, query: &str, name: &str) -> String {
    let out = ok(home, &["search", query, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    let files = doc["files"].as_array().expect("files");
    let f = files
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{name} not found: {out}"));
    f["content_id"].as_str().expect("content id").to_string()
}

/// `peershare get ID -o DIR` (no `--index`); returns the bytes of the file it wrote.
fn get(home: &Path, id: &str, dir: &Path) -> Vec<u8> {
    let out = ok(home, &["get", id, "-o", path(dir)]);
    let written = PathBuf::from(out.trim());
    assert!(written.starts_with(dir), "{out}");
    std::fs::read(&written).expect("the downloaded file")
}

/// The TLS setup a member's state directory gives its commands: its key, with its group and
/// certificate from `membership.json`.
fn member_tls(home: &Path) -> Tls {
    let rec = MemberRecord::load(home)
        .expect("membership record")
        .expect("joined");
    Tls::new(&key_of(home))
        .expect("tls")
        .with_group(rec.state().expect("group state"))
}

// ---------------------------------------------------------------------------------------------
// In process.

impl PrivateIndex {
    /// An invite for `uses` new members, good for an hour (made as `peershare invite` does).
    fn invite(&self, uses: u32) -> Invite {
        let store = GroupStore::open(&self.db).expect("group store");
        let invite = Invite::new(self.addr.clone(), Fingerprint(self.key)).expect("invite");
        let now = peershare::query::now_ms();
        store
            .create_invite(&invite.secret_hash(), uses, now + 3_600_000, now)
            .expect("create invite");
        invite
    }

    /// Joins `who` with `invite`; returns its TLS setup as a member.
    async fn join(&self, who: &Identity, invite: &Invite) -> Tls {
        let tls = Tls::new(who).expect("tls");
        let mut c = IndexClient::connect(&self.addr, Some(&tls), Some(self.key), Limits::default())
            .await
            .expect("connect to the index");
        let m = c.join(&invite.secret).await.expect("joined").membership;
        assert_eq!((m.group, m.member), (self.key, who.public_key()));
        tls.with_group(Arc::new(GroupState::new(self.key, Some(m))))
    }

    /// A member sharing `dir`, its key in `state` (it joins first), registered and in sync.
    async fn share(&self, dir: &Path, state: &Path) -> (ShareHandle, Tls) {
        let tls = self.join(&key_of(state), &self.invite(1)).await;
        (self.share_as(dir, state, &tls).await, tls)
    }
}

/// The error reply of a refused [`PeerClient::connect`] or request.
fn remote(e: &PeerClientError) -> Option<&ErrorReply> {
    match e {
        PeerClientError::Protocol(ProtocolError::Remote(r)) => Some(r),
        _ => None,
    }
}

fn index_remote(e: &IndexClientError) -> Option<&ErrorReply> {
    match e {
        IndexClientError::Protocol {
            source: ProtocolError::Remote(r),
            ..
        } => Some(r),
        _ => None,
    }
}

/// Connects to the sharing peer at `addr` as `tls` (a fresh key if `None`): the error, if it
/// is refused at connecting.
async fn peer_connect(addr: &str, tls: Option<&Tls>) -> Result<PeerClient, PeerClientError> {
    tokio::time::timeout(
        Duration::from_secs(15),
        PeerClient::connect(addr, tls, None, Limits::default()),
    )
    .await
    .expect("connect finishes within 15 s")
}

/// The `Hello` of a client that presents no membership.
fn hello_frame() -> Vec<u8> {
    let m = Message::Hello(peershare::protocol::Hello {
        version_min: 1,
        version_max: 1,
        agent: "stranger".into(),
        features: vec!["have".into(), "catalog".into()],
        membership: None,
    });
    let p = m.encode_payload().expect("encode");
    let mut v = ((p.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(m.tag());
    v.extend_from_slice(&p);
    v
}

/// The messages in `bytes`, read as a client would (failing on a partial or bad frame).
fn frames_in(bytes: &[u8]) -> Vec<Message> {
    let mut buf = bytes::BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = peershare::protocol::Frame::parse(&mut buf).expect("a frame") {
        out.push(Message::decode(f).expect("a message"));
    }
    assert!(buf.is_empty(), "{} bytes of a partial frame", buf.len());
    out
}

// ---------------------------------------------------------------------------------------------
// 1. The whole story with the binary.

#[test]
fn friends_join_share_and_download_and_strangers_learn_nothing() {
    let t = tempfile::tempdir().unwrap();
    let ix = private_index(&t.path().join("ix"), &[]);
    let token = ix.invite(&["--uses", "2"]);

    // A friend joins and shares a file.
    let (ann, files) = (t.path().join("ann"), t.path().join("ann-files"));
    std::fs::create_dir_all(&files).unwrap();
    let bytes = data(3 * 262_144 + 17, 11);
    std::fs::write(files.join("holiday-photos.tar"), &bytes).unwrap();
    let out = ok(&ann, &["join", &token]);
    assert!(out.contains("joined the private group"), "{out}");
    assert!(ann.join("membership.json").exists());
    let (_ann_share, _) = share(&ann, &files);

    // A second friend finds it and downloads it, naming no index.
    let bob = t.path().join("bob");
    ok(&bob, &["join", &token]);
    let id = search_id(&bob, "holiday", "holiday-photos.tar");
    assert_eq!(id, b3sum(&files.join("holiday-photos.tar")));
    let got = get(&bob, &id, &t.path().join("bob-dl"));
    assert!(got == bytes, "the downloaded bytes differ");

    // The index lists both, by their keys.
    let members = ix.members();
    let mut fps: Vec<String> = members.iter().map(|m| m.1.to_string()).collect();
    fps.sort();
    let mut want = vec![
        key_of(&ann).fingerprint().to_string(),
        key_of(&bob).fingerprint().to_string(),
    ];
    want.sort();
    assert_eq!(fps, want, "{members:?}");
    assert!(members.iter().all(|m| !m.2), "nobody removed: {members:?}");

    // A stranger, told the index's address, is refused and learns nothing of its files.
    let stranger = t.path().join("stranger");
    for args in [
        &["search", "holiday", "--index", &ix.addr][..],
        &["search", "holiday", "--json", "--index", &ix.addr],
        &[
            "get",
            &id,
            "-o",
            path(&t.path().join("s-dl")),
            "--index",
            &ix.addr,
        ],
    ] {
        let out = run(&stranger, args);
        assert!(!out.status.success(), "{args:?}");
        assert_ne!(out.status.code(), None, "{args:?} ended by a signal");
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains("not a member"), "{args:?}: {err}");
        let all = format!("{}{err}", text(&out.stdout));
        assert!(!all.contains("holiday-photos"), "{args:?}: {all}");
    }
    assert!(!t.path().join("s-dl").join("holiday-photos.tar").exists());

    // The invite was for two: a third is turned away, and is no member.
    let carl = t.path().join("carl");
    let err = fails(&carl, &["join", &token]);
    assert!(err.contains("used up"), "{err}");
    assert!(!carl.join("membership.json").exists());
    assert_eq!(ix.members().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. A sharing member refuses strangers, on the wire too, and copied certificates.

/// A private index and a member sharing one file, and a second member.
struct Sharing {
    _t: tempfile::TempDir,
    ix: PrivateIndex,
    sharer: ShareHandle,
    /// The sharing member's key.
    sharer_key: Digest,
    addr: String,
    name: &'static str,
    id: ContentId,
    /// The second member.
    bob: Tls,
}

async fn sharing() -> Sharing {
    let t = tempfile::tempdir().unwrap();
    let ix = start_private_index(&t.path().join("ix/index.sqlite")).await;
    let files = t.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let name = "secret-plans.pdf";
    let bytes = data(70_000, 5);
    std::fs::write(files.join(name), &bytes).unwrap();
    let (sharer, tls) = ix.share(&files, &t.path().join("ann")).await;
    let addr = sharer.local_addr.to_string();
    let id = ContentId::from_bytes(*blake3::hash(&bytes).as_bytes());
    let bob = ix
        .join(&Identity::from_secret([0xb0; 32]), &ix.invite(1))
        .await;
    // A member is served (so the refusals are about membership).
    let mut c = peer_connect(&addr, Some(&bob))
        .await
        .expect("a member is served");
    assert_eq!(c.info(id).await.expect("info").name, name);
    Sharing {
        _t: t,
        ix,
        sharer,
        sharer_key: tls.public_key(),
        addr,
        name,
        id,
        bob,
    }
}

/// Connects to the sharing member as `tls` (a fresh key if `None`) and asks for the file: the
/// FORBIDDEN reply it gets, at connecting or at the latest for that first request.
async fn refusal(s: &Sharing, tls: Option<&Tls>) -> ErrorReply {
    let e = match peer_connect(&s.addr, tls).await {
        Ok(mut c) => c.info(s.id).await.expect_err("refused"),
        Err(e) => e,
    };
    let r = remote(&e).unwrap_or_else(|| panic!("not an error reply: {e:?}"));
    assert_eq!(r.code, FORBIDDEN, "{r:?}");
    r.clone()
}

/// A `Hello` without membership written inside TLS: everything the sharing member sends back
/// until it closes (which it must within 10 s).
async fn raw_hello(addr: &str) -> Vec<u8> {
    let mut s = raw_secure(addr).await;
    s.write_all(&hello_frame()).await.unwrap();
    s.flush().await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the peer closes the connection");
    got
}

/// A client holding a certificate copied from Bob, with another key.
fn mallory(s: &Sharing) -> Tls {
    let copied = s.bob.membership().expect("bob's certificate");
    Tls::new(&Identity::from_secret([0x3a; 32]))
        .unwrap()
        .with_group(Arc::new(GroupState::new(s.ix.key, Some(copied))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharing_member_serves_strangers_and_copied_certificates_nothing() {
    let s = sharing().await;

    // A stranger: FORBIDDEN, saying why.
    let r = refusal(&s, None).await;
    assert!(r.message.contains("no membership was presented"), "{r:?}");

    // On the wire: FORBIDDEN last, then the end of the stream, and no byte about the files.
    let got = raw_hello(&s.addr).await;
    let replies = frames_in(&got);
    assert!(
        matches!(replies.last(), Some(Message::Error(e)) if e.code == FORBIDDEN),
        "ends with FORBIDDEN: {replies:?}"
    );
    for (what, needle) in [
        ("name", s.name.as_bytes().to_vec()),
        ("name stem", b"secret-plans".to_vec()),
        ("content id", s.id.as_bytes().to_vec()),
        ("content id in hex", s.id.to_hex().into_bytes()),
    ] {
        assert!(!contains(&got, &needle), "the {what} leaked: {replies:?}");
    }

    // A certificate copied from a member, presented with another key: refused, by the peer
    // and by the index.
    let mallory = mallory(&s);
    let r = refusal(&s, Some(&mallory)).await;
    assert!(r.message.contains("issued to another key"), "{r:?}");
    let mut c = IndexClient::connect(
        &s.ix.addr,
        Some(&mallory),
        Some(s.ix.key),
        Limits::default(),
    )
    .await
    .expect("the index answers Hello");
    let e = c.search("secret", 10).await.expect_err("not a member");
    let r = index_remote(&e).unwrap_or_else(|| panic!("not an error reply: {e:?}"));
    assert!(
        r.code == FORBIDDEN && r.message.contains("not a member"),
        "{r:?}"
    );
    s.sharer.shutdown().await;
}

/// §4.2: "The peer answers `Hello` only when it carries a certificate valid for the client's
/// key …; otherwise it sends `Error {code: 7 FORBIDDEN}` … and closes" (§6: "a `Hello` without
/// a valid membership … closed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharing_member_refuses_a_non_member_at_hello() {
    let s = sharing().await;

    // The stranger's connect itself fails, FORBIDDEN.
    let e = peer_connect(&s.addr, None)
        .await
        .err()
        .expect("a stranger is refused at connecting");
    let r = remote(&e).unwrap_or_else(|| panic!("not an error reply: {e:?}"));
    assert_eq!(r.code, FORBIDDEN, "{r:?}");
    assert!(r.message.contains("no membership was presented"), "{r:?}");

    // On the wire: exactly one Error frame, then the end; nothing of the member or its group.
    let got = raw_hello(&s.addr).await;
    let replies = frames_in(&got);
    assert!(
        matches!(&replies[..], [Message::Error(e)] if e.code == FORBIDDEN),
        "exactly one FORBIDDEN error: {replies:?}"
    );
    assert!(
        !contains(&got, &s.sharer_key.0),
        "the sharing member's certificate was sent"
    );
    assert!(!contains(&got, &s.ix.key.0), "the group's key was sent");

    // A certificate copied from a member is refused at connecting too.
    let e = peer_connect(&s.addr, Some(&mallory(&s)))
        .await
        .err()
        .expect("a copied certificate is refused at connecting");
    let r = remote(&e).unwrap_or_else(|| panic!("not an error reply: {e:?}"));
    assert_eq!(r.code, FORBIDDEN, "{r:?}");
    assert!(r.message.contains("issued to another key"), "{r:?}");
    s.sharer.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Removal: the index at once, the sharing peers within a lease.

/// Whether the sharing peer at `addr` refuses `tls` (FORBIDDEN, at connecting or on its first
/// request for `id`); the refusal's message.
async fn peer_refuses(addr: &str, tls: &Tls, id: ContentId) -> Option<String> {
    let e = match peer_connect(addr, Some(tls)).await {
        Ok(mut c) => c.info(id).await.err()?,
        Err(e) => e,
    };
    let r = remote(&e).unwrap_or_else(|| panic!("refused otherwise than FORBIDDEN: {e:?}"));
    assert_eq!(r.code, FORBIDDEN, "{r:?}");
    Some(r.message.clone())
}

#[test]
fn a_removed_member_is_refused_by_the_index_and_then_by_sharing_peers() {
    let lease = Duration::from_secs(3);
    let t = tempfile::tempdir().unwrap();
    let ix = private_index(&t.path().join("ix"), &["--lease", "3s"]);
    let token = ix.invite(&["--uses", "3"]);
    let (ann, bob, cat) = (
        t.path().join("ann"),
        t.path().join("bob"),
        t.path().join("cat"),
    );
    let files = t.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let bytes = data(300_000, 3);
    std::fs::write(files.join("minutes.odt"), &bytes).unwrap();
    for home in [&ann, &bob, &cat] {
        ok(home, &["join", &token]);
    }
    let (_ann_share, ann_addr) = share(&ann, &files);
    let id = search_id(&bob, "minutes", "minutes.odt");
    let content = ContentId::from_bytes(*blake3::hash(&bytes).as_bytes());
    assert_eq!(id, content.to_string());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bob_tls = member_tls(&bob);
    let ix_key = ix.key.0;
    // Bob, before: served by the index (on a connection kept open) and by Ann.
    let mut open = rt.block_on(async {
        let mut c = IndexClient::connect(&ix.addr, Some(&bob_tls), Some(ix_key), Limits::default())
            .await
            .expect("connect");
        c.search("minutes", 10).await.expect("a member searches");
        assert_eq!(peer_refuses(&ann_addr, &bob_tls, content).await, None);
        c
    });

    let bob_fp = key_of(&bob).fingerprint();
    let (bob_id, _, _) = *ix
        .members()
        .iter()
        .find(|m| m.1 == bob_fp)
        .expect("bob is listed");
    let removed_at = Instant::now();
    let out = ok(&ix.home, &["members", "remove", &bob_id.to_string()]);
    assert_eq!(out.trim(), format!("revoked member {bob_id} ({bob_fp})"));

    // The index refuses Bob within 2 s, on the connection he had open and on a new one.
    rt.block_on(async {
        let mut tries = 0;
        let r = loop {
            tries += 1;
            match open.search("minutes", 10).await {
                Ok(_) => {}
                Err(e) => break index_remote(&e).cloned().unwrap_or_else(|| panic!("{e:?}")),
            }
            assert!(
                removed_at.elapsed() < Duration::from_secs(2) && tries < 100,
                "the index still answers Bob {:?} after his removal",
                removed_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            r.code == FORBIDDEN && r.message.contains("removed"),
            "{r:?}"
        );
        let mut c = IndexClient::connect(&ix.addr, Some(&bob_tls), Some(ix_key), Limits::default())
            .await
            .expect("the index answers Hello");
        let e = c.search("minutes", 10).await.expect_err("removed");
        let r = index_remote(&e).unwrap_or_else(|| panic!("{e:?}"));
        assert!(
            r.code == FORBIDDEN && r.message.contains("removed"),
            "{r:?}"
        );
    });
    let err = fails(&bob, &["search", "minutes"]);
    assert!(err.contains("removed"), "{err}");
    assert!(!err.contains("minutes.odt"), "{err}");

    // Ann refuses him within a lease (waiting at most two), though his certificate has hours
    // left.
    let refused = rt.block_on(async {
        let mut tries = 0;
        loop {
            tries += 1;
            if let Some(why) = peer_refuses(&ann_addr, &bob_tls, content).await {
                break why;
            }
            assert!(
                removed_at.elapsed() < 2 * lease && tries < 200,
                "Ann still serves Bob {:?} after his removal",
                removed_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let took = removed_at.elapsed();
    assert!(refused.contains("removed"), "{refused}");
    eprintln!("the sharing peer refused the removed member {took:?} after the removal");
    assert!(
        bob_tls.membership().expect("certificate").expires > peershare::query::now_ms() + 3_600_000
    );
    let err = fails(&bob, &["get", &id, "-o", path(&t.path().join("bob-dl"))]);
    assert!(err.contains("removed"), "{err}");

    // The remaining member still downloads from Ann.
    let got = get(&cat, &id, &t.path().join("cat-dl"));
    assert!(got == bytes, "the downloaded bytes differ");
    let cat_tls = member_tls(&cat);
    rt.block_on(async {
        assert_eq!(peer_refuses(&ann_addr, &cat_tls, content).await, None);
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Bad invites.

/// `token` with the character at byte `at` replaced by another base32 letter.
fn altered(token: &str, at: usize) -> String {
    let mut b = token.as_bytes().to_vec();
    b[at] = if b[at] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap()
}

#[test]
fn expired_mistyped_and_misdirected_invites_admit_nobody() {
    let t = tempfile::tempdir().unwrap();
    let ix = private_index(&t.path().join("ix"), &[]);
    let joiner = t.path().join("joiner");

    // Expired.
    let short = ix.invite(&["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let err = fails(&joiner, &["join", &short]);
    assert!(err.contains("expired"), "{err}");

    // One character of the secret mistyped.
    let token = ix.invite(&[]);
    let secret_at = "peershare-invite:".len();
    let mistyped = altered(&token, secret_at + 10);
    assert!(
        mistyped.parse::<Invite>().is_ok(),
        "still a well-formed token"
    );
    let err = fails(&joiner, &["join", &mistyped]);
    assert!(err.contains("no such invite"), "{err}");

    // Another key than the index holds: refused at the TLS handshake, the secret never sent.
    let key_at = token.rfind('#').unwrap() + 1;
    let misdirected = altered(&token, key_at);
    let wrong: Invite = misdirected.parse().expect("still a well-formed token");
    assert_ne!(wrong.key, ix.key);
    let err = fails(&joiner, &["join", &misdirected]);
    assert!(err.contains("it holds the key"), "{err}");
    assert!(
        err.contains(&ix.key.to_string()) && err.contains(&wrong.key.to_string()),
        "both keys named: {err}"
    );

    assert!(!joiner.join("membership.json").exists());
    assert!(ix.members().is_empty(), "nobody joined");
    // The genuine token was not spent by the attempts around it.
    ok(&joiner, &["join", &token]);
    assert_eq!(ix.members().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 5. A member refuses sources that are not members.

/// A member of the group of `index`, its certificate valid for an hour.
fn member_of(index: &Identity, me: &Identity) -> Tls {
    let cert = Membership::issue(
        index,
        me.public_key(),
        peershare::query::now_ms() + 3_600_000,
    );
    Tls::new(me)
        .unwrap()
        .with_group(Arc::new(GroupState::new(index.public_key(), Some(cert))))
}

/// A peer sharing `dir` with no index, its key in `state`, as a member of `group` (with the
/// certificate `cert`), or open when `group` is `None`.
async fn source(dir: &Path, state: &Path, group: Option<(Digest, Membership)>) -> ShareHandle {
    let mut config = ShareConfig::new(vec![dir.to_path_buf()], None, state.to_path_buf());
    config.group = group.map(|(g, cert)| Arc::new(GroupState::new(g, Some(cert))));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_share(config, listener).await.expect("share")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_refuses_sources_that_are_not_members() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f.bin"), data(1000, 1)).unwrap();
    let index = Identity::from_secret([0x11; 32]);
    let other_index = Identity::from_secret([0x22; 32]);
    let me = member_of(&index, &Identity::from_secret([0x33; 32]));
    let hour = peershare::query::now_ms() + 3_600_000;
    let not_member = |e: PeerClientError| match e {
        PeerClientError::NotMember { source, .. } => source,
        other => panic!("not NotMember: {other:?}"),
    };

    // An open peer (in no group).
    let open = start_peer(&dir, None, &t.path().join("open")).await;
    let e = peer_connect(&open.local_addr.to_string(), Some(&me))
        .await
        .err()
        .expect("a source in no group is refused");
    assert_eq!(not_member(e), AdmitError::NoCertificate);
    open.shutdown().await;

    // A member of the group, as a control; then sources whose certificate does not hold for
    // them: one copied from another member, an expired one, one signed by another index.
    let copied_from = Identity::from_secret([0x44; 32]).public_key();
    for what in ["member", "copied", "expired", "forged"] {
        let state = t.path().join(what);
        let key = key_of(&state).public_key();
        let cert = match what {
            "member" => Membership::issue(&index, key, hour),
            "copied" => Membership::issue(&index, copied_from, hour),
            "expired" => Membership::issue(&index, key, peershare::query::now_ms() - 1),
            _ => {
                // Signed by another index, claiming to be of this group.
                let mut m = Membership::issue(&other_index, key, hour);
                m.group = index.public_key();
                m
            }
        };
        let peer = source(&dir, &state, Some((index.public_key(), cert))).await;
        let r = peer_connect(&peer.local_addr.to_string(), Some(&me)).await;
        if what == "member" {
            r.unwrap_or_else(|e| panic!("a member source is refused: {e:?}"));
        } else {
            let e = not_member(r.err().unwrap_or_else(|| panic!("{what}: accepted")));
            let right = match (what, &e) {
                ("copied", AdmitError::Certificate(MembershipError::WrongMember(k))) => {
                    k.0 == copied_from
                }
                ("expired", AdmitError::Certificate(MembershipError::Expired(_))) => true,
                ("forged", AdmitError::Certificate(MembershipError::BadSignature)) => true,
                _ => false,
            };
            assert!(right, "{what}: {e:?}");
        }
        peer.shutdown().await;
    }

    // A member the index removed since: refused once we know it.
    let state = t.path().join("removed");
    let removed = key_of(&state).public_key();
    let peer = source(
        &dir,
        &state,
        Some((index.public_key(), Membership::issue(&index, removed, hour))),
    )
    .await;
    let addr = peer.local_addr.to_string();
    peer_connect(&addr, Some(&me))
        .await
        .expect("still a member");
    me.group().unwrap().set_revoked([removed]);
    let e = not_member(peer_connect(&addr, Some(&me)).await.err().expect("removed"));
    assert_eq!(e, AdmitError::Revoked(Fingerprint(removed)));
    peer.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Joining twice.

#[test]
fn joining_again_spends_no_use_and_a_removed_member_needs_a_new_invite() {
    let t = tempfile::tempdir().unwrap();
    let ix = private_index(&t.path().join("ix"), &[]);
    let token = ix.invite(&["--uses", "2"]);
    let (ann, bob, cat) = (
        t.path().join("ann"),
        t.path().join("bob"),
        t.path().join("cat"),
    );

    ok(&ann, &["join", &token]);
    // Ann again, with the same key: she is in already and spends nothing…
    ok(&ann, &["join", &token]);
    // …so Bob still gets the second use, and only then is the invite used up.
    ok(&bob, &["join", &token]);
    let err = fails(&cat, &["join", &token]);
    assert!(err.contains("used up"), "{err}");
    // A member joining again is admitted whatever the invite's state (§7.8).
    ok(&ann, &["join", &token]);
    let members = ix.members();
    assert_eq!(members.len(), 2, "one row per key: {members:?}");
    let ann_fp = key_of(&ann).fingerprint();
    let (ann_id, _, _) = *members.iter().find(|m| m.1 == ann_fp).expect("ann");

    // Removed, Ann is no member any more: the used-up invite does not readmit her, a new one
    // does (spending a use), under her old id.
    ok(&ix.home, &["members", "remove", &ann_id.to_string()]);
    let err = fails(&ann, &["join", &token]);
    assert!(err.contains("used up"), "{err}");
    let again = ix.invite(&[]);
    ok(&ann, &["join", &again]);
    let members = ix.members();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.contains(&(ann_id, ann_fp, false)), "{members:?}");
    let err = fails(&cat, &["join", &again]);
    assert!(err.contains("used up"), "{err}");
    // And she can use the group again.
    let files = t.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("back-again.txt"), b"hello").unwrap();
    let (_share, _) = share(&ann, &files);
    search_id(&bob, "again", "back-again.txt");
}

/// Removing a sharing member takes its files out of the group's search results at once (within
/// the index's refresh), not a lease later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_sharing_member_leaves_the_results_at_once() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_private_index(&t.path().join("ix.sqlite")).await;
    let dir = t.path().join("ann-files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("wombat-notes.txt"), b"ann's").unwrap();
    let ann_state = t.path().join("ann");
    let (_share, _) = ix.share(&dir, &ann_state).await;
    let cat = ix
        .join(&Identity::from_secret([0x44; 32]), &ix.invite(1))
        .await;
    let mut c = IndexClient::connect(&ix.addr, Some(&cat), Some(ix.key), Limits::default())
        .await
        .expect("connect");
    assert_eq!(c.search("wombat", 10).await.unwrap().files.len(), 1);

    let ann = key_of(&ann_state).public_key();
    ix.remove(&ann);
    // Well within the lease (3 s): the refresh reads removals every second.
    let deadline = Instant::now() + Duration::from_millis(2500);
    loop {
        let found = c.search("wombat", 10).await.unwrap().files.len();
        if found == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still listed after the removal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A member that never heartbeats (a one-shot `get` or `search --dht`) learns the removed keys
/// from the index's `Welcome`, and then refuses a removed member as a source although that
/// member's certificate has hours left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_member_learns_removals_from_the_index() {
    let t = tempfile::tempdir().unwrap();
    let ix = start_private_index(&t.path().join("ix.sqlite")).await;
    let dir = t.path().join("ann-files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("numbat.txt"), b"ann's").unwrap();
    let ann_state = t.path().join("ann");
    let (share, _) = ix.share(&dir, &ann_state).await;
    let ann_addr = share.local_addr.to_string();
    let bob = ix
        .join(&Identity::from_secret([0x55; 32]), &ix.invite(1))
        .await;
    // Before: Ann is a source Bob accepts.
    peer_connect(&ann_addr, Some(&bob))
        .await
        .expect("a member source");

    let ann = key_of(&ann_state).public_key();
    ix.remove(&ann);
    // Bob connects to the index (as any command does) and is told.
    IndexClient::connect(&ix.addr, Some(&bob), Some(ix.key), Limits::default())
        .await
        .expect("connect");
    match peer_connect(&ann_addr, Some(&bob)).await {
        Err(PeerClientError::NotMember {
            source: AdmitError::Revoked(k),
            ..
        }) => assert_eq!(k.0, ann),
        other => panic!("a removed source is refused: {:?}", other.err()),
    }
    share.shutdown().await;
}
