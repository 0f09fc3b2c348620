//! LAN discovery with the real binary on a LAN built in network namespaces (one bridge, a peer
//! per namespace, no index running): `share` announces itself, `search --lan` and `get --lan`
//! find and download from it, `--no-lan` hides a share, private groups see their own only and
//! refuse strangers, and hostile mDNS announcements (sent as raw packets) are dropped.
//!
//! Needs root and `ip` (tests/common/netns.rs): otherwise each test prints "SKIPPED" and
//! passes, unless PEERSHARE_REQUIRE_ROOT_TESTS is set (as CI sets it), when it fails.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Lines, Running, b3sum, data};
use netns::{Family, Host, Topology};
use peershare::content::Digest;
use peershare::identity::Fingerprint;

/// A LAN of `n` hosts on one bridge (tests/common/netns.rs), with no index and no router;
/// removed on drop.
struct Lan {
    hosts: Vec<Host>,
    _topology: Topology,
}

impl Lan {
    /// `None` (after printing why) where namespaces cannot be made and the test is skipped.
    fn new(test: &str, n: usize) -> Option<Lan> {
        let mut t = Topology::new(test, Family::V4, false)?;
        let net = t.lan("lan");
        let hosts: Vec<Host> = (0..n).map(|i| t.host(&format!("h{i}"), &net)).collect();
        for h in &hosts {
            // A route for multicast: what a host on a real LAN has by its default route (the
            // raw announcements below are sent without choosing an interface).
            h.sh("ip route add 224.0.0.0/4 dev eth0");
        }
        Some(Lan {
            hosts,
            _topology: t,
        })
    }

    /// Host `h`'s address.
    fn addr(&self, h: usize) -> Ipv4Addr {
        self.hosts[h].v4()
    }

    /// An address on the LAN where no host is.
    fn nobody(&self) -> Ipv4Addr {
        let o = self.addr(0).octets();
        Ipv4Addr::new(o[0], o[1], o[2], 77)
    }

    /// `peershare ARGS` on host `h` with `home` as its state directory.
    fn cmd(&self, h: usize, home: &Path, args: &[&str]) -> Command {
        let mut c = self.hosts[h].command(env!("CARGO_BIN_EXE_peershare"));
        c.args(args)
            .env("PEERSHARE_HOME", home)
            .env_remove("PEERSHARE_INDEX")
            .env("RUST_LOG", "peershare=debug")
            .stdin(std::process::Stdio::null());
        c
    }

    fn run(&self, h: usize, home: &Path, args: &[&str]) -> Output {
        self.cmd(h, home, args).output().expect("run peershare")
    }

    /// A long-running `peershare ARGS` on host `h` (killed on drop).
    fn spawn(&self, h: usize, home: &Path, args: &[&str]) -> Running {
        Running::spawn_lines(self.cmd(h, home, args), None, Lines::Both)
    }

    /// Runs `f` on a thread inside host `h`'s network namespace (sockets it opens are there).
    fn inside<T: Send + 'static>(&self, h: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.hosts[h].ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in the namespace")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A shared directory holding one file of `len` bytes named `name`; its content id.
fn shared(dir: &Path, name: &str, len: usize, seed: u64) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, data(len, seed)).unwrap();
    b3sum(&path)
}

/// `search --lan --json`: the content ids found and the hosts of each.
fn found(out: &Output) -> Vec<(String, Vec<String>)> {
    let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    v["files"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    let hosts = f["peers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| {
                            assert_eq!(p["via"], serde_json::json!(["lan"]), "{p}");
                            format!("{}:{}", p["host"].as_str().unwrap(), p["port"])
                        })
                        .collect();
                    (f["content_id"].as_str().unwrap().to_string(), hosts)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `share DIR ARGS` on host `h` and waits until it is announced (or told it is not);
/// its listening port.
fn share(lan: &Lan, h: usize, home: &Path, dir: &Path, more: &[&str]) -> (Running, u16) {
    let mut args = vec!["share", dir.to_str().unwrap(), "--no-wishes"];
    args.extend(more);
    let mut p = lan.spawn(h, home, &args);
    let l = p.wait_line("peershare share listening on");
    let port: u16 = l
        .split_whitespace()
        .find(|w| w.starts_with("0.0.0.0:") || w.starts_with("[::]:"))
        .and_then(|w| w.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no port in {l:?}"));
    if !more.contains(&"--no-lan") {
        p.wait_line("announced on the LAN as");
    }
    (p, port)
}

fn interrupt(p: &mut Running) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGINT) };
}

#[test]
fn a_share_is_found_and_downloaded_on_the_lan_with_no_index_and_no_lan_hides_one() {
    let t = tempfile::tempdir().unwrap();
    let Some(lan) = Lan::new(
        "a_share_is_found_and_downloaded_on_the_lan_with_no_index_and_no_lan_hides_one",
        3,
    ) else {
        return;
    };
    let home = |n: &str| t.path().join(n);
    // A shares on the LAN (with no index at all); C shares with --no-lan; B looks.
    let a_id = shared(&home("a-files"), "holiday movie.bin", 3_000_000, 1);
    let c_id = shared(&home("c-files"), "holiday hidden.bin", 100_000, 2);
    let (mut a, a_port) = share(&lan, 0, &home("a"), &home("a-files"), &["--no-index"]);
    let (_c, _) = share(
        &lan,
        2,
        &home("c"),
        &home("c-files"),
        &["--no-index", "--no-lan"],
    );

    let started = Instant::now();
    let out = lan.run(1, &home("b"), &["search", "--lan", "holiday", "--json"]);
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let files = found(&out);
    let a_addr = format!("{}:{a_port}", lan.addr(0));
    assert_eq!(files, vec![(a_id.clone(), vec![a_addr.clone()])], "{err}");
    assert!(!files.iter().any(|(id, _)| *id == c_id));
    // Listening takes the default 1.5 s; asking a peer on the LAN, milliseconds.
    assert!(took < Duration::from_secs(10), "{took:?}");

    // The text form says where the peer was found.
    let out = lan.run(1, &home("b"), &["search", "--lan", "movie"]);
    assert!(
        text(&out.stdout).contains(&format!("{a_addr}  holiday movie.bin  via lan")),
        "{}",
        text(&out.stdout)
    );

    // get --lan downloads it from A (requiring A's announced key), verified.
    let dl = home("downloads");
    let out = lan.run(
        1,
        &home("b"),
        &["get", "--lan", &a_id, "-o", dl.to_str().unwrap(), "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(b3sum(&dl.join("holiday movie.bin")), a_id);
    // C's file is found by no one: --no-lan announces nothing.
    let out = lan.run(
        1,
        &home("b"),
        &["get", "--lan", &c_id, "-o", dl.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no live peer shares"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dl.join("holiday hidden.bin").exists());

    // Once A stops, nobody answers for it.
    interrupt(&mut a);
    a.wait_line("peershare share stopped");
    let out = lan.run(1, &home("b"), &["search", "--lan", "holiday", "--json"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no peer found"),
        "{}",
        text(&out.stderr)
    );
}

/// `peershare index --private` on host `h`, an invite for `uses` members, and those members
/// joined (each on its own host with its own home); the index is stopped after.
fn private_group(lan: &Lan, h: usize, t: &Path, members: &[(usize, PathBuf)]) {
    let home = t.join("index");
    let listen = format!("{}:50000", lan.addr(h));
    let mut index = lan.spawn(h, &home, &["index", "--private", "--listen", &listen]);
    index.wait_line("peershare index listening on");
    let uses = members.len().to_string();
    let out = lan.run(h, &home, &["invite", "--address", &listen, "--uses", &uses]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    for (m, mhome) in members {
        let out = lan.run(*m, mhome, &["join", &token]);
        assert!(out.status.success(), "join: {}", text(&out.stderr));
    }
    drop(index);
}

#[test]
fn private_group_peers_find_each_other_and_strangers_are_ignored_and_refused() {
    let t = tempfile::tempdir().unwrap();
    let Some(lan) = Lan::new(
        "private_group_peers_find_each_other_and_strangers_are_ignored_and_refused",
        4,
    ) else {
        return;
    };
    let home = |n: &str| t.path().join(n);
    // Hosts: 0 the group's index (stopped after the joins), 1 and 2 members, 3 a stranger.
    private_group(&lan, 0, t.path(), &[(1, home("g1")), (2, home("g2"))]);
    let g_id = shared(&home("g1-files"), "group plans.txt", 50_000, 3);
    let s_id = shared(&home("s-files"), "group flyer.txt", 40_000, 4);
    // The member shares with its group's index down: it serves members from the LAN.
    let (_g1, g1_port) = share(&lan, 1, &home("g1"), &home("g1-files"), &[]);
    let (_s, _) = share(&lan, 3, &home("s"), &home("s-files"), &["--no-index"]);

    // The other member finds the member's file, and not the stranger's.
    let out = lan.run(2, &home("g2"), &["search", "--lan", "group", "--json"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let g1_addr = format!("{}:{g1_port}", lan.addr(1));
    assert_eq!(
        found(&out),
        vec![(g_id.clone(), vec![g1_addr.clone()])],
        "{err}"
    );
    assert!(
        err.contains("not of our private group (announced: none)"),
        "{err}"
    );
    let dl = home("g2-downloads");
    let out = lan.run(
        2,
        &home("g2"),
        &["get", "--lan", &g_id, "-o", dl.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        dl.join("group plans.txt").exists(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(b3sum(&dl.join("group plans.txt")), g_id);
    let out = lan.run(
        2,
        &home("g2"),
        &["get", "--lan", &s_id, "-o", dl.to_str().unwrap()],
    );
    assert!(
        !out.status.success(),
        "a member does not fetch from a stranger"
    );

    // The stranger sees that a private group's peer is there, and gets nothing from it.
    let out = lan.run(3, &home("s2"), &["search", "--lan", "group", "--json"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("1 peer(s) serve a private group this key is not a member of"),
        "{err}"
    );
    assert!(!found(&out).iter().any(|(id, _)| *id == g_id), "{err}");
    let sdl = home("s-downloads");
    let out = lan.run(
        3,
        &home("s2"),
        &["get", "--lan", &g_id, "-o", sdl.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(!sdl.join("group plans.txt").exists());
    // And asking the member's server directly, as a stranger, is refused at the handshake.
    let addr = g1_addr.clone();
    let refused = lan.inside(3, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = peershare::peer::PeerClient::connect(
                &addr,
                None,
                None,
                peershare::protocol::Limits::default(),
            )
            .await;
            match r {
                Ok(mut c) => c
                    .catalog_query(peershare::protocol::CatalogQuery {
                        query: "group".into(),
                        limit: 10,
                        ..Default::default()
                    })
                    .await
                    .err()
                    .map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            }
        })
    });
    let refused = refused.expect("a stranger is refused");
    assert!(refused.contains("members"), "{refused}");
}

// --- Raw mDNS announcements -------------------------------------------------------------

fn name(out: &mut Vec<u8>, dotted: &str) {
    for label in dotted.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn record(out: &mut Vec<u8>, owner: &str, rtype: u16, rdata: &[u8]) {
    name(out, owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    // Class IN; PTR records are shared, the others unique (cache-flush bit).
    let class: u16 = if rtype == 12 { 1 } else { 0x8001 };
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&120u32.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// One mDNS response announcing instance `inst` of peershare's service at `addr` with the TXT
/// strings `txt` (each at most 255 bytes).
fn announcement(inst: &str, host: &str, addr: SocketAddr, txt: &[Vec<u8>]) -> Vec<u8> {
    let full = format!("{inst}._peershare._tcp.local");
    let host = format!("{host}.local");
    let mut p = vec![0, 0, 0x84, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    let mut ptr = Vec::new();
    name(&mut ptr, &full);
    record(&mut p, "_peershare._tcp.local", 12, &ptr);
    let mut srv = vec![0, 0, 0, 0];
    srv.extend_from_slice(&addr.port().to_be_bytes());
    name(&mut srv, &host);
    record(&mut p, &full, 33, &srv);
    let mut t = Vec::new();
    for s in txt {
        t.push(s.len() as u8);
        t.extend_from_slice(s);
    }
    record(&mut p, &full, 16, &t);
    let std::net::IpAddr::V4(v4) = addr.ip() else {
        panic!("IPv4 only")
    };
    record(&mut p, &host, 1, &v4.octets());
    p
}

fn key_txt(key: u8) -> Vec<u8> {
    format!("key={}", Fingerprint(Digest([key; 32]))).into_bytes()
}

/// Sends `packets` to the mDNS group from host `h`, again and again for `time`.
fn blast(
    lan: &Lan,
    h: usize,
    packets: Vec<Vec<u8>>,
    time: Duration,
) -> std::thread::JoinHandle<()> {
    let path = format!("/run/netns/{}", lan.hosts[h].ns);
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("open the namespace");
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        let end = Instant::now() + time;
        while Instant::now() < end {
            for p in &packets {
                let _ = sock.send_to(p, "224.0.0.251:5353");
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    })
}

#[test]
fn garbage_and_lying_announcements_are_dropped_and_a_flood_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    let Some(lan) = Lan::new(
        "garbage_and_lying_announcements_are_dropped_and_a_flood_is_bounded",
        3,
    ) else {
        return;
    };
    let home = |n: &str| t.path().join(n);
    let a_id = shared(&home("a-files"), "real file.bin", 200_000, 5);
    let (_a, a_port) = share(&lan, 0, &home("a"), &home("a-files"), &["--no-index"]);
    let a_addr = SocketAddr::from((lan.addr(0), a_port));
    let nobody = SocketAddr::from((lan.nobody(), 4000));
    let v1 = b"v=1".to_vec();
    let bad = vec![
        // Not a key.
        announcement(
            "bad-key",
            "m1",
            nobody,
            &[v1.clone(), b"key=not-a-key".to_vec()],
        ),
        // A binary blob for a key, at the TXT string's maximum length.
        announcement(
            "blob",
            "m2",
            nobody,
            &[v1.clone(), [&b"key="[..], &[0xff; 251]].concat()],
        ),
        // Another version.
        announcement("v9", "m3", nobody, &[b"v=9".to_vec(), key_txt(9)]),
        // Too many TXT entries.
        announcement(
            "many",
            "m4",
            nobody,
            &(0..40)
                .map(|i| format!("x{i}=y").into_bytes())
                .chain([v1.clone(), key_txt(10)])
                .collect::<Vec<_>>(),
        ),
        // A loopback address: it would loop back to the searcher's own host.
        announcement(
            "loop",
            "m5",
            SocketAddr::from((Ipv4Addr::LOCALHOST, a_port)),
            &[v1.clone(), key_txt(11)],
        ),
        // A key that is not the one serving at that address (A's address, another key).
        announcement("liar", "m6", a_addr, &[v1.clone(), key_txt(12)]),
        // A key at an address where nobody answers.
        announcement("ghost", "m7", nobody, &[v1.clone(), key_txt(13)]),
    ];
    let sender = blast(&lan, 2, bad, Duration::from_secs(3));
    let started = Instant::now();
    let out = lan.run(1, &home("b"), &["search", "--lan", "real", "--json"]);
    let took = started.elapsed();
    sender.join().unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // The real peer is still found and listed alone.
    assert!(out.status.success(), "{err}");
    assert_eq!(found(&out), vec![(a_id, vec![a_addr.to_string()])], "{err}");
    for why in [
        "ignoring announcement bad-key._peershare._tcp.local.: no valid key in TXT (\"not-a-key\")",
        "ignoring announcement blob._peershare._tcp.local.: no valid key in TXT",
        "ignoring announcement v9._peershare._tcp.local.: TXT version \"9\"",
        "ignoring announcement many._peershare._tcp.local.: 42 TXT entries (at most 8)",
        "ignoring announcement loop._peershare._tcp.local.: no usable address (announced: 127.0.0.1)",
    ] {
        assert!(err.contains(why), "{why:?} not in {err}");
    }
    let liar = Fingerprint(Digest([12; 32])).to_string();
    let ghost = Fingerprint(Digest([13; 32])).to_string();
    assert!(
        err.lines().any(|l| l.contains("WARN")
            && l.contains(&format!("peer {liar} did not answer as announced"))),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains(&format!("peer {ghost} did not answer"))),
        "{err}"
    );
    // 1.5 s listening, then every peer asked at once, each for at most 3 s.
    assert!(took < Duration::from_secs(15), "{took:?}");

    // A flood of announcements, each a distinct key: at most 64 are kept and asked.
    let flood: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let key = format!(
                "key={}",
                Fingerprint(Digest(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            );
            announcement(
                &format!("flood{i}"),
                &format!("f{i}"),
                nobody,
                &[v1.clone(), key.into_bytes()],
            )
        })
        .collect();
    let sender = blast(&lan, 2, flood, Duration::from_secs(3));
    let started = Instant::now();
    let out = lan.run(1, &home("b"), &["search", "--lan", "nothing-like-this"]);
    let took = started.elapsed();
    sender.join().unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("LAN: more than 64 peers announced themselves"),
        "{err}"
    );
    // (A, the real peer, may be among them.)
    let kept = err.lines().filter(|l| l.contains("LAN: found ")).count();
    assert_eq!(kept, 64, "{err}");
    let asked = err.lines().filter(|l| l.contains("did not answer")).count();
    assert!(asked >= 63, "{err}");
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn a_node_announces_itself_and_its_queue_downloads_from_the_lan() {
    let Some(lan) = Lan::new(
        "a_node_announces_itself_and_its_queue_downloads_from_the_lan",
        2,
    ) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let home = |n: &str| t.path().join(n);
    // A: a share with no index. B: a node with no index, sharing a file of its own.
    let a_id = shared(&home("a-files"), "lan song.ogg", 700_000, 6);
    let b_id = shared(&home("b-files"), "node notes.txt", 30_000, 7);
    let (_a, _) = share(&lan, 0, &home("a"), &home("a-files"), &["--no-index"]);
    let out_dir = home("b-out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut node = lan.spawn(
        1,
        &home("b"),
        &[
            "node",
            home("b-files").to_str().unwrap(),
            "-o",
            out_dir.to_str().unwrap(),
            "--no-index",
        ],
    );
    node.wait_line("announced on the LAN as");
    // The node's queue finds A on the LAN (the watch has had time to hear it, or retries).
    let ok = (0..10).any(|_| {
        let out = lan.run(1, &home("b"), &["get", &a_id, "--wait"]);
        out.status.success() || {
            std::thread::sleep(Duration::from_millis(300));
            false
        }
    });
    assert!(ok, "the node downloaded from the LAN; saw {:?}", node.seen);
    assert_eq!(b3sum(&out_dir.join("lan song.ogg")), a_id);
    // And A's side finds the node's own file on the LAN.
    let out = lan.run(0, &home("a2"), &["search", "--lan", "notes", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(found(&out).len(), 1);
    assert_eq!(found(&out)[0].0, b_id);
}

#[test]
fn a_stopping_share_withdraws_its_announcement() {
    let Some(lan) = Lan::new("a_stopping_share_withdraws_its_announcement", 2) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let home = |n: &str| t.path().join(n);
    shared(&home("a-files"), "short.txt", 1000, 8);
    let (mut a, a_port) = share(&lan, 0, &home("a"), &home("a-files"), &["--no-index"]);
    let a_addr = SocketAddr::from((lan.addr(0), a_port));
    // A long-running watch on B (as a node keeps): it sees A, then, once A stops, forgets it
    // at once (A's goodbye), not when the records' TTL (120 s) runs out.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel::<()>();
    let watcher = {
        let path = format!("/run/netns/{}", lan.hosts[1].ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only, with a namespace file we hold open.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let watch = peershare::lan::Watch::start(peershare::lan::Browser::default())
                    .expect("watch");
                let has_a =
                    |w: &peershare::lan::Watch| w.peers().iter().any(|p| p.addrs.contains(&a_addr));
                let until = Instant::now() + Duration::from_secs(10);
                while !has_a(&watch) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(has_a(&watch), "the watch saw A: {:?}", watch.peers());
                seen_tx.send(()).unwrap();
                stopped_rx.recv_timeout(Duration::from_secs(20)).unwrap();
                let until = Instant::now() + Duration::from_secs(5);
                while has_a(&watch) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(
                    !has_a(&watch),
                    "A's goodbye removed it: {:?}",
                    watch.peers()
                );
            })
        })
    };
    seen_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the watch saw A");
    interrupt(&mut a);
    a.wait_line("peershare share stopped");
    stopped_tx.send(()).unwrap();
    watcher.join().expect("the watch forgot A");
}
