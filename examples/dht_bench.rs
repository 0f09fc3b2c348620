//! DHT lookup benchmark: a private Mainline DHT on 127.0.0.1 (mainline's Testnet), P sharing
//! peers publishing small files on it, and a separate read-only client node timing keyword
//! searches (`peershare::dht::find_files`) and source lookups (`peershare::dht::find_sources`)
//! and checking whether each found every live source. See bench/README.md ("DHT").
//!
//! Run with `cargo run --release --example dht_bench -- [OPTIONS]` or `bench/dht [OPTIONS]`.
//! Every socket is bound to 127.0.0.1 and every DHT node is given the testnet's bootstrap
//! list, so no traffic leaves the machine. Set RUST_LOG (e.g. `RUST_LOG=mainline=debug`) to
//! see the DHT's and peers' logs on stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_lite::StreamExt;
use mainline::async_dht::AsyncDht;
use mainline::{Id, Testnet};
use peershare::content::ContentId;
use peershare::dht::{
    DhtConfig, content_key, find_files, find_sources, keyword_key, keywords, start_node,
};
use peershare::node::{ShareConfig, ShareHandle, start_share};
use peershare::peer::PeerClient;
use peershare::protocol::Limits;
use serde_json::{Value, json};

const USAGE: &str = "\
usage: dht_bench [OPTIONS]
  --nodes N               DHT testnet nodes on 127.0.0.1 (default 50)
  --peers N               sharing peers, each also a DHT server node (default 10)
  --files N               files with distinct names per peer (default 3); each peer also holds
                          3 files common to 3 peers (round robin)
  --lookups N             timed lookups, alternating search and find_sources (default 100)
  --request-timeout-ms MS DHT request timeout of every peer and of the client (default 2000)
  --bootstrap-nodes N     give the peers and the client only the first N testnet addresses as
                          bootstrap list (default: all of them)
  --announce-timeout-s S  longest wait for every peer's keys to be announced (default 180)
  --lookup-timeout-s S    longest a single lookup may take before it counts as failed (default 60)
  --timeout-s S           overall time limit (default 600)
  --seed N                random seed for names and lookups (default 2026)
  --check-all             afterwards, look up every key once with a plain DHT lookup (no peer
                          contact) and count the announcements it does not return
  --json PATH             write the results as JSON to PATH
";

/// Peers holding each common file (round robin: file j on peers j, j+1, j+2).
const COMMON_HOLDERS: usize = 3;
/// Limits on the counts, so that a typo cannot start thousands of nodes.
const MAX_NODES: usize = 500;
const MAX_PEERS: usize = 100;
const MAX_FILES: usize = 50;
const MAX_LOOKUPS: usize = 10_000;
/// Result limit passed to `find_files`.
const SEARCH_LIMIT: u32 = 100;

#[derive(Debug, Clone)]
struct Args {
    nodes: usize,
    peers: usize,
    files: usize,
    lookups: usize,
    request_timeout: Duration,
    bootstrap_nodes: Option<usize>,
    announce_timeout: Duration,
    lookup_timeout: Duration,
    timeout: Duration,
    seed: u64,
    json: Option<PathBuf>,
    check_all: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        nodes: 50,
        peers: 10,
        files: 3,
        lookups: 100,
        request_timeout: Duration::from_millis(2000),
        bootstrap_nodes: None,
        announce_timeout: Duration::from_secs(180),
        lookup_timeout: Duration::from_secs(60),
        timeout: Duration::from_secs(600),
        seed: 2026,
        json: None,
        check_all: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--check-all" {
            a.check_all = true;
            continue;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))?,
        };
        let num = |max: u64| -> Result<u64> {
            let n: u64 = value
                .parse()
                .with_context(|| format!("{name}: not a number: {value:?}"))?;
            ensure!((1..=max).contains(&n), "{name} must be 1..={max}");
            Ok(n)
        };
        match name.as_str() {
            "--nodes" => a.nodes = num(MAX_NODES as u64)? as usize,
            "--peers" => a.peers = num(MAX_PEERS as u64)? as usize,
            "--files" => a.files = num(MAX_FILES as u64)? as usize,
            "--lookups" => a.lookups = num(MAX_LOOKUPS as u64)? as usize,
            "--request-timeout-ms" => a.request_timeout = Duration::from_millis(num(60_000)?),
            "--bootstrap-nodes" => a.bootstrap_nodes = Some(num(MAX_NODES as u64)? as usize),
            "--announce-timeout-s" => a.announce_timeout = Duration::from_secs(num(3600)?),
            "--lookup-timeout-s" => a.lookup_timeout = Duration::from_secs(num(3600)?),
            "--timeout-s" => a.timeout = Duration::from_secs(num(24 * 3600)?),
            "--seed" => {
                a.seed = value
                    .parse()
                    .with_context(|| format!("--seed: not a number: {value:?}"))?
            }
            "--json" => a.json = Some(PathBuf::from(value)),
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    ensure!(
        a.peers >= COMMON_HOLDERS,
        "--peers must be at least {COMMON_HOLDERS}"
    );
    Ok(a)
}

/// xorshift64*: deterministic, good enough to pick names and lookups.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Fixed words every peer has in some file name (the extensions).
const EXTENSIONS: [&str; 2] = ["txt", "bin"];

/// `n` distinct pronounceable six-letter words, none a substring of another or of an extension
/// (so a peer's substring match on a word and the DHT's exact keyword agree).
fn vocabulary(rng: &mut Rng, n: usize) -> Vec<String> {
    const C: &[u8] = b"bdfgklmnprstvz";
    const V: &[u8] = b"aeiou";
    let mut words: Vec<String> = Vec::with_capacity(n);
    while words.len() < n {
        let mut w = String::with_capacity(6);
        for _ in 0..3 {
            w.push(C[rng.below(C.len())] as char);
            w.push(V[rng.below(V.len())] as char);
        }
        let clash = words
            .iter()
            .any(|x| x.contains(&w) || w.contains(x.as_str()))
            || EXTENSIONS.iter().any(|e| w.contains(e));
        if !clash {
            words.push(w);
        }
    }
    words
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A file to share: its name and contents.
#[derive(Debug, Clone)]
struct FileSpec {
    name: String,
    data: Vec<u8>,
    id: ContentId,
}

impl FileSpec {
    fn new(name: String, data: Vec<u8>) -> FileSpec {
        let id = ContentId::from(blake3::hash(&data));
        FileSpec { name, data, id }
    }
}

/// The files of every peer: `files` with distinct names and contents, and the common files
/// j (same name and contents on peers j, j+1, j+2 mod P).
fn plan_files(args: &Args, rng: &mut Rng) -> Vec<Vec<FileSpec>> {
    let p = args.peers;
    let words = vocabulary(rng, 2 * p * args.files + 2 * p);
    let mut w = words.into_iter();
    let mut next = || w.next().unwrap_or_default();
    let mut plan: Vec<Vec<FileSpec>> = vec![Vec::new(); p];
    for (i, files) in plan.iter_mut().enumerate() {
        for k in 0..args.files {
            let name = format!("{} {}.txt", capitalise(&next()), next());
            let data = format!("peer {i} file {k} seed {}\n", args.seed).into_bytes();
            files.push(FileSpec::new(name, data));
        }
    }
    for j in 0..p {
        let name = format!("{}-{}.bin", next(), capitalise(&next()));
        let data = format!("common file {j} seed {}\n", args.seed).into_bytes();
        let f = FileSpec::new(name, data);
        for h in 0..COMMON_HOLDERS {
            plan[(j + h) % p].push(f.clone());
        }
    }
    plan
}

fn dht_config(bootstrap: &[String], server: bool, request_timeout: Duration) -> DhtConfig {
    DhtConfig {
        bootstrap: bootstrap.to_vec(),
        port: 0,
        bind: Ipv4Addr::LOCALHOST,
        server,
        request_timeout,
        ..Default::default()
    }
}

struct Peer {
    handle: ShareHandle,
    addr: SocketAddr,
    files: Vec<FileSpec>,
}

async fn start_peer(
    root: &Path,
    i: usize,
    files: Vec<FileSpec>,
    bootstrap: &[String],
    args: &Args,
) -> Result<Peer> {
    let dir = root.join(format!("share{i}"));
    let state = root.join(format!("state{i}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in &files {
        let path = dir.join(&f.name);
        std::fs::write(&path, &f.data).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut config = ShareConfig::new(vec![dir], None, state);
    config.dht = Some(dht_config(bootstrap, true, args.request_timeout));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding a peer listener on 127.0.0.1")?;
    let handle = start_share(config, listener)
        .await
        .with_context(|| format!("starting peer {i}"))?;
    let addr = handle.local_addr;
    Ok(Peer {
        handle,
        addr,
        files,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Search,
    Sources,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Search => "search",
            Kind::Sources => "find_sources",
        }
    }
}

#[derive(Debug, Clone)]
struct Lookup {
    kind: Kind,
    query: String,
    ms: f64,
    timed_out: bool,
    expected: BTreeSet<SocketAddr>,
    found: BTreeSet<SocketAddr>,
    diagnosis: Option<Value>,
}

impl Lookup {
    fn complete(&self) -> bool {
        !self.timed_out && self.expected.is_subset(&self.found)
    }
    fn missing(&self) -> Vec<SocketAddr> {
        self.expected.difference(&self.found).copied().collect()
    }
    fn extra(&self) -> Vec<SocketAddr> {
        self.found.difference(&self.expected).copied().collect()
    }
    fn to_json(&self) -> Value {
        let strs = |v: Vec<SocketAddr>| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        json!({
            "kind": self.kind.as_str(),
            "query": self.query,
            "ms": round3(self.ms),
            "timed_out": self.timed_out,
            "expected": self.expected.len(),
            "found": self.found.len(),
            "complete": self.complete(),
            "missing": strs(self.missing()),
            "extra": strs(self.extra()),
            "diagnosis": self.diagnosis,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Every address a fresh DHT get_peers lookup of `key` returns, and how many answers held peers.
async fn raw_get_peers(
    node: &AsyncDht,
    key: Id,
    limit: Duration,
) -> (BTreeSet<SocketAddrV4>, usize) {
    let mut found = BTreeSet::new();
    let mut batches = 0;
    let mut stream = node.get_peers(key);
    let collect = async {
        while let Some(batch) = stream.next().await {
            batches += 1;
            found.extend(batch);
        }
    };
    let _ = tokio::time::timeout(limit, collect).await;
    (found, batches)
}

/// After a lookup missed sources (untimed): does a second plain DHT lookup of the same key
/// return the missing peers, and does each missing peer answer the peer protocol directly?
async fn diagnose(node: &AsyncDht, l: &Lookup, key: Id, id: Option<ContentId>) -> Value {
    let t = Instant::now();
    let (addrs, batches) = raw_get_peers(node, key, Duration::from_secs(30)).await;
    let dht_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut peers = Vec::new();
    for m in l.missing() {
        let in_dht = match m {
            SocketAddr::V4(v4) => addrs.contains(&v4),
            SocketAddr::V6(_) => false,
        };
        let limits = Limits {
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        };
        let answer = match PeerClient::connect(&m.to_string(), None, None, limits).await {
            Err(e) => format!("connect failed: {e}"),
            Ok(mut c) => match id {
                Some(id) => match c.have(id).await {
                    Ok(_) => "has the file".to_string(),
                    Err(e) => format!("have failed: {e}"),
                },
                None => match c.catalog_query(catalog_query(&l.query)).await {
                    Ok(r) => format!("catalog answers {} file(s)", r.files.len()),
                    Err(e) => format!("catalog query failed: {e}"),
                },
            },
        };
        peers.push(json!({ "peer": m.to_string(), "in_repeat_dht_lookup": in_dht, "direct_probe": answer }));
    }
    json!({
        "repeat_dht_lookup_ms": round3(dht_ms),
        "repeat_dht_lookup_peers": addrs.len(),
        "repeat_dht_lookup_batches": batches,
        "missing": peers,
    })
}

/// Summary of a set of lookups.
struct Stats {
    count: usize,
    median: f64,
    p90: f64,
    worst: f64,
    complete: usize,
}

fn stats(ls: &[&Lookup]) -> Stats {
    let mut ms: Vec<f64> = ls.iter().map(|l| l.ms).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => ms[n / 2],
        _ => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    };
    // Nearest rank.
    let p90 = match n {
        0 => f64::NAN,
        _ => ms[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1],
    };
    Stats {
        count: n,
        median,
        p90,
        worst: ms.last().copied().unwrap_or(f64::NAN),
        complete: ls.iter().filter(|l| l.complete()).count(),
    }
}

fn stats_json(s: &Stats) -> Value {
    let f = |x: f64| {
        if x.is_finite() {
            json!(round3(x))
        } else {
            Value::Null
        }
    };
    json!({
        "count": s.count,
        "median_ms": f(s.median),
        "p90_ms": f(s.p90),
        "worst_ms": f(s.worst),
        "found_all": s.complete,
        "found_all_share": if s.count > 0 { json!(round3(s.complete as f64 / s.count as f64)) } else { Value::Null },
    })
}

fn table_row(label: &str, s: &Stats) -> String {
    let pct = if s.count > 0 {
        100.0 * s.complete as f64 / s.count as f64
    } else {
        f64::NAN
    };
    format!(
        "{label:<34} {:>5} {:>10.1} {:>9.1} {:>9.1}  {:>4}/{:<4} {:>5.0}%",
        s.count, s.median, s.p90, s.worst, s.complete, s.count, pct
    )
}

/// The machine's UDP counters from /proc/net/snmp (datagrams received, and dropped because a
/// socket's receive buffer was full), if readable. They count every process on the machine.
fn udp_counters() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("InDatagrams")?, get("RcvbufErrors")?))
}

/// Counter differences between two readings.
fn udp_delta(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<(u64, u64)> {
    let (a, b) = (a?, b?);
    Some((b.0.saturating_sub(a.0), b.1.saturating_sub(a.1)))
}

fn udp_json(d: Option<(u64, u64)>) -> Value {
    match d {
        Some((received, dropped)) => json!({"received": received, "rcvbuf_dropped": dropped}),
        None => Value::Null,
    }
}

fn udp_text(d: Option<(u64, u64)>) -> String {
    match d {
        Some((received, dropped)) => {
            format!("{received} received, {dropped} dropped (receive buffer full)")
        }
        None => "not available".to_string(),
    }
}

fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

async fn run(args: Args) -> Result<Value> {
    let started = Instant::now();
    let deadline = started + args.timeout;
    let mut rng = Rng::new(args.seed);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let loadavg = |s: &str| {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| format!("{s}: {}", l.trim()))
            .unwrap_or_default()
    };
    let load_before = loadavg("before");

    // 1. The testnet.
    let t = Instant::now();
    let nodes = args.nodes;
    let testnet = tokio::task::spawn_blocking(move || {
        Testnet::builder(nodes)
            .bind_address(Ipv4Addr::LOCALHOST)
            .build()
    })
    .await
    .context("testnet task")?
    .context("building the DHT testnet")?;
    let testnet_time = t.elapsed();
    let mut bootstrap = testnet.bootstrap.clone();
    if let Some(n) = args.bootstrap_nodes {
        bootstrap.truncate(n);
    }
    // Never let a node fall back to the public bootstrap nodes.
    ensure!(!bootstrap.is_empty(), "the testnet has no bootstrap nodes");
    for b in &bootstrap {
        let a: SocketAddr = b
            .parse()
            .with_context(|| format!("bootstrap address {b:?}"))?;
        ensure!(
            a.ip().is_loopback(),
            "bootstrap node {b} is not on 127.0.0.1"
        );
    }
    eprintln!(
        "[dht_bench] testnet of {} nodes on 127.0.0.1 in {:.2} s; bootstrap list of {}",
        testnet.nodes.len(),
        testnet_time.as_secs_f64(),
        bootstrap.len()
    );

    // 2. The peers, and what each lookup should find.
    let udp_setup_start = udp_counters();
    let tmp = tempfile::Builder::new()
        .prefix("peershare-dht-bench.")
        .tempdir()
        .context("creating a temporary directory")?;
    let plan = plan_files(&args, &mut rng);
    let t = Instant::now();
    let mut peers: Vec<Peer> = Vec::with_capacity(args.peers);
    for (i, files) in plan.into_iter().enumerate() {
        peers.push(start_peer(tmp.path(), i, files, &bootstrap, &args).await?);
    }
    let mut by_word: BTreeMap<String, BTreeSet<SocketAddr>> = BTreeMap::new();
    let mut by_id: BTreeMap<ContentId, BTreeSet<SocketAddr>> = BTreeMap::new();
    let mut peer_words: Vec<Vec<String>> = Vec::with_capacity(peers.len());
    for p in &peers {
        let mut mine = BTreeSet::new();
        for f in &p.files {
            by_id.entry(f.id).or_default().insert(p.addr);
            for w in keywords(&f.name) {
                by_word.entry(w.clone()).or_default().insert(p.addr);
                mine.insert(w);
            }
        }
        peer_words.push(mine.into_iter().collect());
    }
    // The peer matches a query word as a substring of the lowercased name; the DHT only has
    // whole keywords. The vocabulary is chosen so that both agree; check it.
    for (w, holders) in &by_word {
        let by_substring: BTreeSet<SocketAddr> = peers
            .iter()
            .filter(|p| {
                p.files
                    .iter()
                    .any(|f| f.name.to_lowercase().contains(w.as_str()))
            })
            .map(|p| p.addr)
            .collect();
        ensure!(
            &by_substring == holders,
            "word {w:?}: substring and keyword matches differ"
        );
    }
    let multi_ids: Vec<ContentId> = by_id
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(id, _)| *id)
        .collect();
    ensure!(!multi_ids.is_empty(), "no content id has several sources");

    // Wait until every peer has announced every key.
    let mut waits = tokio::task::JoinSet::new();
    for (i, p) in peers.iter().enumerate() {
        let mut rx = p.handle.status.clone();
        let limit = args.announce_timeout;
        waits.spawn(async move {
            let r = tokio::time::timeout(
                limit,
                rx.wait_for(|s| s.dht_announced.is_some_and(|n| n > 0 && n == s.dht_keys)),
            )
            .await;
            let ok = matches!(r, Ok(Ok(_)));
            drop(r);
            let st = rx.borrow().clone();
            (
                i,
                ok,
                t.elapsed(),
                st.dht_announced,
                st.dht_keys,
                st.dht_rounds,
            )
        });
    }
    // (peer, time until all announced, keys, announcement rounds it took)
    let mut announce: Vec<(usize, Duration, usize, u64)> = Vec::new();
    let mut failed = Vec::new();
    while let Some(r) = waits.join_next().await {
        let (i, ok, took, announced, keys, rounds) = r.context("announce wait task")?;
        if ok {
            announce.push((i, took, keys, rounds));
        } else {
            failed.push(format!("peer {i}: {announced:?} of {keys} keys"));
        }
    }
    if !failed.is_empty() {
        bail!(
            "not every key was announced within {:?}: {}",
            args.announce_timeout,
            failed.join("; ")
        );
    }
    announce.sort();
    let announce_all = announce.iter().map(|a| a.1).max().unwrap_or_default();
    let total_keys: usize = announce.iter().map(|a| a.2).sum();
    let first_round = announce.iter().filter(|a| a.3 == 1).count();
    let max_rounds = announce.iter().map(|a| a.3).max().unwrap_or_default();
    eprintln!(
        "[dht_bench] {} peers announced {} keys in {:.2} s",
        peers.len(),
        total_keys,
        announce_all.as_secs_f64()
    );

    let udp_announce = udp_delta(udp_setup_start, udp_counters());

    // 3. The read-only client.
    let t = Instant::now();
    let node = start_node(&dht_config(&bootstrap, false, args.request_timeout))
        .context("starting the client DHT node")?;
    let bootstrapped = tokio::time::timeout(Duration::from_secs(60), node.bootstrapped())
        .await
        .unwrap_or(false);
    let client_bootstrap = t.elapsed();
    eprintln!(
        "[dht_bench] client node bootstrapped={bootstrapped} in {:.3} s; {} lookups",
        client_bootstrap.as_secs_f64(),
        args.lookups
    );

    // 4. The lookups.
    let udp_lookups_start = udp_counters();
    let mut lookups: Vec<Lookup> = Vec::with_capacity(args.lookups);
    let mut stopped_early = false;
    for n in 0..args.lookups {
        if Instant::now() + args.lookup_timeout + Duration::from_secs(45) > deadline {
            stopped_early = true;
            eprintln!("[dht_bench] stopping after {n} lookups: overall time limit");
            break;
        }
        let kind = if n % 2 == 0 {
            Kind::Search
        } else {
            Kind::Sources
        };
        let mut l = match kind {
            Kind::Search => {
                let r = rng.below(peers.len());
                let words = &peer_words[r];
                let word = words[rng.below(words.len())].clone();
                let expected = by_word.get(&word).cloned().unwrap_or_default();
                let t = Instant::now();
                let res = tokio::time::timeout(
                    args.lookup_timeout,
                    find_files(&node, &catalog_query(&word), None),
                )
                .await;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let (timed_out, found) = match res {
                    Ok(v) => (
                        false,
                        v.into_iter()
                            .filter(|(_, (_, r))| !r.files.is_empty())
                            .map(|(a, _)| a)
                            .collect(),
                    ),
                    Err(_) => (true, BTreeSet::new()),
                };
                Lookup {
                    kind,
                    query: word,
                    ms,
                    timed_out,
                    expected,
                    found,
                    diagnosis: None,
                }
            }
            Kind::Sources => {
                let id = multi_ids[rng.below(multi_ids.len())];
                let expected = by_id.get(&id).cloned().unwrap_or_default();
                let t = Instant::now();
                let res =
                    tokio::time::timeout(args.lookup_timeout, find_sources(&node, id, None)).await;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let (timed_out, found) = match res {
                    Ok(v) => (false, v.into_iter().map(|(a, _)| a).collect()),
                    Err(_) => (true, BTreeSet::new()),
                };
                Lookup {
                    kind,
                    query: id.to_hex(),
                    ms,
                    timed_out,
                    expected,
                    found,
                    diagnosis: None,
                }
            }
        };
        if !l.complete() {
            let (key, id) = match kind {
                Kind::Search => (keyword_key(&l.query), None),
                Kind::Sources => {
                    let id: ContentId = l.query.parse().context("content id")?;
                    (content_key(&id), Some(id))
                }
            };
            l.diagnosis = Some(diagnose(&node, &l, key, id).await);
            eprintln!(
                "[dht_bench] lookup {n} ({} {}) missed {:?}: {}",
                kind.as_str(),
                l.query,
                l.missing(),
                l.diagnosis
                    .as_ref()
                    .map_or(String::new(), |d| d.to_string())
            );
        }
        lookups.push(l);
    }
    let udp_lookups = udp_delta(udp_lookups_start, udp_counters());

    // Optionally: every key once, DHT only. Which announcements can a lookup not see?
    let mut check: Option<Value> = None;
    if args.check_all {
        let mut keys: Vec<(String, Id, &BTreeSet<SocketAddr>)> = Vec::new();
        for (w, holders) in &by_word {
            keys.push((format!("word {w}"), keyword_key(w), holders));
        }
        for (id, holders) in &by_id {
            keys.push((format!("id {}", id.to_hex()), content_key(id), holders));
        }
        let (mut pairs, mut found_pairs, mut checked) = (0usize, 0usize, 0usize);
        let mut incomplete = Vec::new();
        for (label, key, holders) in keys {
            if Instant::now() + Duration::from_secs(60) > deadline {
                eprintln!("[dht_bench] check stopped after {checked} keys: overall time limit");
                break;
            }
            let (addrs, _) = raw_get_peers(&node, key, Duration::from_secs(30)).await;
            checked += 1;
            let missing: Vec<String> = holders
                .iter()
                .filter(|h| match h {
                    SocketAddr::V4(v4) => !addrs.contains(v4),
                    SocketAddr::V6(_) => true,
                })
                .map(|h| h.to_string())
                .collect();
            pairs += holders.len();
            found_pairs += holders.len() - missing.len();
            if !missing.is_empty() {
                eprintln!("[dht_bench] check: {label}: not returned: {missing:?}");
                incomplete
                    .push(json!({"key": label, "expected": holders.len(), "missing": missing}));
            }
        }
        check = Some(json!({
            "keys_checked": checked,
            "announcements": pairs,
            "announcements_found": found_pairs,
            "keys_incomplete": incomplete,
        }));
    }
    let load_after = loadavg("after");

    // 5. Report.
    let of = |k: Kind| -> Vec<&Lookup> { lookups.iter().filter(|l| l.kind == k).collect() };
    let mut by_expected: BTreeMap<(&str, usize), Vec<&Lookup>> = BTreeMap::new();
    for l in &lookups {
        by_expected
            .entry((l.kind.as_str(), l.expected.len()))
            .or_default()
            .push(l);
    }
    let search_stats = stats(&of(Kind::Search));
    let sources_stats = stats(&of(Kind::Sources));
    let mut table = String::new();
    table.push_str(&format!(
        "DHT lookups from a client node: {} testnet nodes + {} peers on 127.0.0.1, request timeout {} ms, {} bootstrap nodes, nproc={nproc}\n",
        testnet.nodes.len(),
        peers.len(),
        args.request_timeout.as_millis(),
        bootstrap.len()
    ));
    table.push_str(&format!(
        "setup: testnet {:.2} s; {} keys announced by all peers after {:.2} s ({} of {} peers in the first round, at most {} rounds); client bootstrap {:.3} s\n",
        testnet_time.as_secs_f64(),
        total_keys,
        announce_all.as_secs_f64(),
        first_round,
        announce.len(),
        max_rounds,
        client_bootstrap.as_secs_f64()
    ));
    table.push_str(&format!(
        "UDP datagrams on the machine: while announcing {}; during the lookups {}\n",
        udp_text(udp_announce),
        udp_text(udp_lookups)
    ));
    table.push_str(&format!(
        "{:<34} {:>5} {:>10} {:>9} {:>9}  {:>16}\n",
        "", "count", "median ms", "p90 ms", "worst ms", "found all"
    ));
    table.push_str(&table_row("search (keyword)", &search_stats));
    table.push('\n');
    for ((k, e), ls) in &by_expected {
        if *k == Kind::Search.as_str() {
            table.push_str(&table_row(&format!("  word on {e} peer(s)"), &stats(ls)));
            table.push('\n');
        }
    }
    table.push_str(&table_row("find_sources (content id)", &sources_stats));
    table.push('\n');
    for ((k, e), ls) in &by_expected {
        if *k == Kind::Sources.as_str() {
            table.push_str(&table_row(&format!("  id on {e} peer(s)"), &stats(ls)));
            table.push('\n');
        }
    }
    let timed_out = lookups.iter().filter(|l| l.timed_out).count();
    let extra = lookups.iter().filter(|l| !l.extra().is_empty()).count();
    table.push_str(&format!(
        "lookups: {} done{}, {timed_out} timed out (> {} s), {extra} with unexpected peers\n",
        lookups.len(),
        if stopped_early {
            " (stopped early: time limit)"
        } else {
            ""
        },
        args.lookup_timeout.as_secs()
    ));

    let breakdown: Vec<Value> = by_expected
        .iter()
        .map(|((k, e), ls)| {
            let mut v = stats_json(&stats(ls));
            if let Value::Object(m) = &mut v {
                m.insert("kind".into(), json!(k));
                m.insert("expected_sources".into(), json!(e));
            }
            v
        })
        .collect();
    if let Some(c) = &check {
        table.push_str(&format!(
            "check of every key (plain DHT lookup): {} of {} announcements returned, {} of {} keys incomplete\n",
            c["announcements_found"],
            c["announcements"],
            c["keys_incomplete"].as_array().map_or(0, Vec::len),
            c["keys_checked"]
        ));
    }
    let doc = json!({
        "config": {
            "testnet_nodes": testnet.nodes.len(),
            "bootstrap_nodes": bootstrap.len(),
            "peers": peers.len(),
            "distinct_files_per_peer": args.files,
            "common_files_per_peer": COMMON_HOLDERS,
            "lookups": args.lookups,
            "request_timeout_ms": args.request_timeout.as_millis() as u64,
            "lookup_timeout_s": args.lookup_timeout.as_secs(),
            "seed": args.seed,
            "nproc": nproc,
            "search_limit": SEARCH_LIMIT,
        },
        "load": [load_before, load_after],
        "setup": {
            "testnet_s": secs(testnet_time),
            "announce_all_s": secs(announce_all),
            "announce_s": announce.iter().map(|a| json!({"peer": a.0, "s": secs(a.1), "keys": a.2, "rounds": a.3})).collect::<Vec<_>>(),
            "keys_total": total_keys,
            "client_bootstrapped": bootstrapped,
            "client_bootstrap_s": secs(client_bootstrap),
        },
        "udp": {"announcing": udp_json(udp_announce), "lookups": udp_json(udp_lookups)},
        "search": stats_json(&search_stats),
        "find_sources": stats_json(&sources_stats),
        "by_expected_sources": breakdown,
        "stopped_early": stopped_early,
        "check_all": check,
        "timed_out": timed_out,
        "with_unexpected_peers": extra,
        "table": table,
        "lookups_detail": lookups.iter().map(Lookup::to_json).collect::<Vec<_>>(),
        "total_s": secs(started.elapsed()),
    });

    // 6. Stop everything (bounded: shutdown waits at most 10 s per peer).
    drop(node);
    for p in peers {
        p.handle.shutdown().await;
    }
    drop(testnet);
    drop(tmp);
    Ok(doc)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    // Off unless RUST_LOG is set (e.g. RUST_LOG=mainline=debug), to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let limit = args.timeout;
    let json_path = args.json.clone();
    let doc = tokio::time::timeout(limit, run(args))
        .await
        .map_err(|_| anyhow::anyhow!("overall time limit of {limit:?} reached"))??;
    if let Some(t) = doc.get("table").and_then(Value::as_str) {
        print!("{t}");
    }
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A catalog query for `q`, at most [`SEARCH_LIMIT`] files.
fn catalog_query(q: &str) -> peershare::protocol::CatalogQuery {
    peershare::protocol::CatalogQuery {
        query: q.into(),
        limit: SEARCH_LIMIT,
        ..Default::default()
    }
}
