//! Hole punching through real NATs (network namespaces, tests/common/netns.rs), with the real
//! binary: the index on the public net, peers each behind its own home router. Through two
//! endpoint-independent NATs, `get` reaches the source over UDP after a punch ("punched" in
//! `--json`), verified with b3sum; behind a symmetric NAT the punch fails within its deadline
//! and the relay carries the transfer. Needs root (skipped, or failed in CI).
//!
//! Figures (printed, not asserted): time to the first byte punched and relayed against direct,
//! and which NAT pairings connected directly.

#[path = "common/netns.rs"]
mod netns;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netns::{Family, Host, Nat, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

/// A process in a namespace whose output lines are collected; killed when dropped.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(host: &Host, home: &Path, args: &[&str]) -> Proc {
        let mut cmd = host.command(BIN);
        cmd.args(args)
            .env("HOME", home)
            .env("PEERSHARE_HOME", home.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn peershare");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn wait_line(&mut self, needle: &str, within: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + within;
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
            "no line with {needle:?} within {within:?}; saw {:?}",
            self.seen
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `peershare get` for `id` on `host`; returns its `--json` document and how long it took.
fn get(host: &Host, home: &Path, index: &str, id: &str) -> (serde_json::Value, Duration) {
    let out_dir = home.join("out");
    let started = Instant::now();
    let out = host
        .command(BIN)
        .args(["get", "--json", "--no-share", "--index", index, "-o"])
        .arg(&out_dir)
        .arg(id)
        .env("HOME", home)
        .env("PEERSHARE_HOME", home.join("state"))
        .stdin(Stdio::null())
        .output()
        .expect("run get");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "get failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_str(&stdout).expect("get --json"), took)
}

fn b3sum(path: &Path) -> String {
    let out = Command::new("b3sum")
        .arg("--no-names")
        .arg(path)
        .output()
        .expect("b3sum must be installed (Debian package b3sum)");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The reach of the one source that delivered, and the file it wrote (checked with b3sum).
fn source_reach(doc: &serde_json::Value, want: &str) -> String {
    let d = &doc["downloads"][0];
    let path = d["path"].as_str().expect("path");
    assert_eq!(b3sum(Path::new(path)), want, "the file is intact");
    let sources = d["sources"].as_array().expect("sources");
    let used: Vec<&serde_json::Value> = sources
        .iter()
        .filter(|s| s["bytes"].as_u64() > Some(0))
        .collect();
    assert_eq!(used.len(), 1, "one source delivered: {sources:?}");
    used[0]["reached"].as_str().unwrap_or("(none)").to_string()
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Starts a sharing peer of `bytes` on `host`.
fn start_share(host: &Host, home: &Path, index: &str, bytes: &[u8]) -> Proc {
    let dir = home.join("shared");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("f.bin"), bytes).expect("write");
    Proc::spawn(
        host,
        home,
        &[
            "share",
            "--index",
            index,
            "--no-wishes",
            dir.to_str().expect("utf8"),
        ],
    )
}

#[test]
fn punched_through_two_cone_nats_relayed_through_a_symmetric_one() {
    let name = "punched_through_two_cone_nats_relayed_through_a_symmetric_one";
    let Some(mut t) = Topology::new(name, Family::V4, true) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let idx = t.public_host("idx");
    let pubpeer = t.public_host("pub");
    let cone_a = t.home("ca", Nat::EndpointIndependent);
    let cone_b = t.home("cb", Nat::EndpointIndependent);
    let sym = t.home("sy", Nat::Symmetric);
    let a = t.host("a", &cone_a);
    let b = t.host("b", &cone_b);
    let s = t.host("s", &sym);

    let ihome = tmp.path().join("idx");
    std::fs::create_dir_all(&ihome).expect("dir");
    let listen = format!("{}:50000", idx.v4());
    let mut index = Proc::spawn(&idx, &ihome, &["index", "--listen", &listen]);
    let key_line = index.wait_line("clients connect with --index", Duration::from_secs(20));
    let spec = key_line
        .split_whitespace()
        .last()
        .expect("HOST:PORT#KEY")
        .to_string();

    // Behind cone NAT a, behind the symmetric NAT s, and one on the public net.
    let bytes_a = data(900 * 1024, 1);
    let bytes_s = data(900 * 1024, 2);
    let bytes_p = data(900 * 1024, 3);
    let id = |b: &[u8]| blake3::hash(b).to_hex().to_string();
    let homes: Vec<_> = ["a", "s", "p", "b"]
        .iter()
        .map(|n| {
            let h = tmp.path().join(n);
            std::fs::create_dir_all(&h).expect("dir");
            h
        })
        .collect();
    // Started together: each waits for the index's check of its address.
    let mut shares = [
        start_share(&a, &homes[0], &spec, &bytes_a),
        start_share(&s, &homes[1], &spec, &bytes_s),
        start_share(&pubpeer, &homes[2], &spec, &bytes_p),
    ];
    for p in &mut shares {
        p.wait_line("registered with index", Duration::from_secs(30));
        p.wait_line("reachable over UDP at", Duration::from_secs(20));
    }

    // Direct: b (behind a cone NAT) from the public peer.
    let (doc, direct) = get(&b, &homes[3], &spec, &id(&bytes_p));
    assert_eq!(source_reach(&doc, &id(&bytes_p)), "direct");
    // Punched: b from a, both behind cone NATs.
    let (doc, punched) = get(&b, &homes[3], &spec, &id(&bytes_a));
    assert_eq!(
        source_reach(&doc, &id(&bytes_a)),
        "punched",
        "through two endpoint-independent NATs: {doc}"
    );
    // Relayed: b from s, behind a symmetric NAT: the punch fails within its deadline.
    let (doc, relayed) = get(&b, &homes[3], &spec, &id(&bytes_s));
    assert_eq!(
        source_reach(&doc, &id(&bytes_s)),
        "relayed",
        "behind a symmetric NAT the relay carries it: {doc}"
    );
    // The relay races the punch after its head start (2 s), long before the punch's own
    // deadline (5 s): the whole get, process start included, ends before that deadline.
    assert!(
        relayed < peershare::download::udp::PUNCH_DEADLINE,
        "the relay did not race the punch: {relayed:?}"
    );
    // A public downloader from a peer behind a cone NAT: punched too (only one side's NAT).
    let (doc, _) = get(&pubpeer, &home(tmp.path(), "pg"), &spec, &id(&bytes_a));
    assert_eq!(source_reach(&doc, &id(&bytes_a)), "punched", "{doc}");
    println!(
        "FIGURES get of 900 KiB, whole command: direct {direct:?}, punched {punched:?}, relayed (after a failed punch) {relayed:?}"
    );

    // Every pairing of NAT kinds, measured only when asked (each relayed pair waits out the
    // punch deadline first).
    if std::env::var_os("PEERSHARE_PUNCH_MEASURE").is_none() {
        return;
    }
    let sym2 = t.home("sz", Nat::Symmetric);
    let d = t.host("d", &sym2);
    let sources = [
        ("public", &bytes_p),
        ("cone", &bytes_a),
        ("symmetric", &bytes_s),
    ];
    let downloaders = [("public", &pubpeer), ("cone", &b), ("symmetric", &d)];
    let mut direct_pairs = 0;
    for (dn, host) in downloaders {
        for (sn, bytes) in sources {
            let (doc, took) = get(
                host,
                &home(tmp.path(), &format!("m-{dn}-{sn}")),
                &spec,
                &id(bytes),
            );
            let how = source_reach(&doc, &id(bytes));
            if how != "relayed" {
                direct_pairs += 1;
            }
            println!("FIGURES pair {dn} <- {sn}: {how} in {took:?}");
        }
    }
    println!("FIGURES {direct_pairs} of 9 pairings connected directly (direct or punched)");
}

fn home(tmp: &Path, name: &str) -> std::path::PathBuf {
    let h = tmp.join(name);
    std::fs::create_dir_all(&h).expect("dir");
    h
}
