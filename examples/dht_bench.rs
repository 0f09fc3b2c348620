//! DHT benchmark: a private Mainline DHT on 127.0.0.1 (mainline's Testnet, default 200 nodes),
//! P sharing peers publishing on it (one of them a large share, default 5,000 files), and a
//! separate read-only client node timing keyword searches (`peershare::dht::find_files`) and
//! source lookups (`peershare::dht::find_sources`), checking whether each found every live
//! source; then a share of the testnet nodes is killed (churn) and the same lookups run again,
//! right away and after a wait. Also measured: how long publishing takes, and the UDP datagrams
//! dropped meanwhile. See bench/README.md ("DHT").
//!
//! Run with `cargo run --release --example dht_bench -- [OPTIONS]` or `bench/dht [OPTIONS]`.
//! Every socket is bound to 127.0.0.1 and every DHT node is given the testnet's bootstrap
//! list, so no traffic leaves the machine. Set RUST_LOG (e.g. `RUST_LOG=mainline=debug`) to
//! see the DHT's and peers' logs on stderr.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_lite::StreamExt;
use mainline::async_dht::AsyncDht;
use mainline::{Dht, Id, Testnet};
use peershare::content::ContentId;
use peershare::dht::{
    DhtConfig, content_key, find_files, find_sources, keyword_key, keywords, start_node,
};
use peershare::node::{ShareConfig, ShareHandle, ShareStatus, start_share};
use peershare::peer::PeerClient;
use peershare::protocol::Limits;
use serde_json::{Value, json};

const USAGE: &str = "\
usage: dht_bench [OPTIONS]
  --quick                 a small run, about a minute: 20 nodes, 4 peers, a 200-file share,
                          6 lookups per phase, churn wait 5 s (options after it override these)
  --nodes N               DHT testnet nodes on 127.0.0.1 (default 200)
  --peers N               sharing peers, each also a DHT server node (default 10)
  --files N               files per peer besides the large share (default 3); each peer also
                          holds 3 files common to 3 peers (round robin)
  --big-files N           files of peer 0, the large share (default 5000; 0: none)
  --lookups N             timed lookups per phase, alternating search and find_sources
                          (default 200: 100 of each)
  --request-timeout-ms MS DHT request timeout of every peer and of the client (default 2000)
  --bootstrap-nodes N     give the peers and the client only the first N testnet addresses as
                          bootstrap list (default 4; 0: all of them)
  --churn-percent P       then kill P% of the testnet nodes (never a peer's or the client's
                          node) and run the same lookups again (default 30; 0: no churn)
  --churn-wait-s S        and once more S seconds after the kill (default 120; 0: not again)
  --announce-timeout-s S  longest wait for every peer's keys to be announced (default 900)
  --lookup-timeout-s S    longest a single lookup may take before it counts as failed (default 60)
  --diagnose N            look into at most N lookups that missed a source per phase (untimed
                          repeat DHT lookup and direct probe of the missing peers; default 10)
  --timeout-s S           overall time limit (default 3000)
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
const MAX_BIG_FILES: usize = 50_000;
const MAX_LOOKUPS: usize = 10_000;
/// Result limit passed to `find_files`.
const SEARCH_LIMIT: u32 = 100;
/// Testnet nodes given to the peers and the client as bootstrap list: a few, as the public
/// DHT's clients have (mainline 8.0.1 sends every lookup to every bootstrap node when its
/// routing table has fewer closest nodes than the list has entries: with all 200, every
/// announcement goes to all 200 nodes).
const DEFAULT_BOOTSTRAP: usize = 4;
/// Longest wait for the killed nodes' sockets to close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Args {
    nodes: usize,
    peers: usize,
    files: usize,
    big_files: usize,
    lookups: usize,
    request_timeout: Duration,
    bootstrap_nodes: Option<usize>,
    churn_percent: usize,
    churn_wait: Duration,
    announce_timeout: Duration,
    lookup_timeout: Duration,
    diagnose: usize,
    timeout: Duration,
    seed: u64,
    json: Option<PathBuf>,
    check_all: bool,
    quick: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        nodes: 200,
        peers: 10,
        files: 3,
        big_files: 5000,
        lookups: 200,
        request_timeout: Duration::from_millis(2000),
        bootstrap_nodes: Some(DEFAULT_BOOTSTRAP),
        churn_percent: 30,
        churn_wait: Duration::from_secs(120),
        announce_timeout: Duration::from_secs(900),
        lookup_timeout: Duration::from_secs(60),
        diagnose: 10,
        timeout: Duration::from_secs(3000),
        seed: 2026,
        json: None,
        check_all: false,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--check-all" => {
                a.check_all = true;
                continue;
            }
            "--quick" => {
                a.quick = true;
                a.nodes = 20;
                a.peers = 4;
                a.big_files = 200;
                a.lookups = 6;
                a.churn_wait = Duration::from_secs(5);
                a.announce_timeout = Duration::from_secs(40);
                a.lookup_timeout = Duration::from_secs(10);
                a.diagnose = 1;
                a.timeout = Duration::from_secs(100);
                continue;
            }
            _ => {}
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
        let num0 = |max: u64| -> Result<u64> {
            let n: u64 = value
                .parse()
                .with_context(|| format!("{name}: not a number: {value:?}"))?;
            ensure!(n <= max, "{name} must be 0..={max}");
            Ok(n)
        };
        let num = |max: u64| -> Result<u64> {
            let n = num0(max)?;
            ensure!(n >= 1, "{name} must be 1..={max}");
            Ok(n)
        };
        match name.as_str() {
            "--nodes" => a.nodes = num(MAX_NODES as u64)? as usize,
            "--peers" => a.peers = num(MAX_PEERS as u64)? as usize,
            "--files" => a.files = num(MAX_FILES as u64)? as usize,
            "--big-files" => a.big_files = num0(MAX_BIG_FILES as u64)? as usize,
            "--lookups" => a.lookups = num(MAX_LOOKUPS as u64)? as usize,
            "--request-timeout-ms" => a.request_timeout = Duration::from_millis(num(60_000)?),
            "--bootstrap-nodes" => {
                a.bootstrap_nodes = Some(num0(MAX_NODES as u64)? as usize).filter(|n| *n > 0)
            }
            "--churn-percent" => a.churn_percent = num0(90)? as usize,
            "--churn-wait-s" => a.churn_wait = Duration::from_secs(num0(3600)?),
            "--announce-timeout-s" => a.announce_timeout = Duration::from_secs(num(3600)?),
            "--lookup-timeout-s" => a.lookup_timeout = Duration::from_secs(num(3600)?),
            "--diagnose" => a.diagnose = num0(MAX_LOOKUPS as u64)? as usize,
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
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

// Word lists for file names like a real share's: music, photos, documents, episodes, books.
const ARTISTS: &[&str] = &[
    "Miles Davis",
    "Nina Simone",
    "Billie Holiday",
    "John Coltrane",
    "Ella Fitzgerald",
    "Louis Armstrong",
    "Aretha Franklin",
    "Otis Redding",
    "Etta James",
    "Chet Baker",
    "Dave Brubeck",
    "Herbie Hancock",
    "Joni Mitchell",
    "Leonard Cohen",
    "Bob Marley",
    "David Bowie",
    "Kate Bush",
    "Patti Smith",
    "Tom Waits",
    "Nick Drake",
    "Townes Van Zandt",
    "Buena Vista Social Club",
    "Fela Kuti",
    "Ali Farka Toure",
    "Cesaria Evora",
    "Astor Piazzolla",
    "Ravi Shankar",
    "Bill Evans",
    "Thelonious Monk",
    "Charles Mingus",
    "Sarah Vaughan",
    "Muddy Waters",
    "Howlin Wolf",
    "Johnny Cash",
    "Dolly Parton",
    "Emmylou Harris",
    "Gillian Welch",
    "Tracy Chapman",
    "Sade",
    "Portishead",
    "Massive Attack",
    "Radiohead",
    "Bjork",
    "Air",
    "Daft Punk",
    "Kraftwerk",
    "Boards of Canada",
    "Aphex Twin",
];
/// Words of titles, separated by spaces.
const TITLE_WORDS: &str = "\
    blue night river moon summer winter autumn spring rain city street heart road home light dark \
    morning evening ocean sea mountain valley fire water stone glass silver golden paper garden \
    window door letter dream song dance waltz blues train station harbour island desert forest \
    snow storm thunder sky star sun shadow mirror clock bridge tower castle village field meadow \
    orchard wine bread salt honey smoke ghost angel devil saint king queen prince soldier sailor \
    stranger lover friend mother father brother sister child old young little long lonely quiet \
    wild sweet bitter broken hidden lost last first new northern southern eastern western \
    electric velvet crystal midnight sunday monday friday december april july october memory \
    promise secret story journey return farewell welcome hope fear love time world life way place \
    line circle echo signal radio machine engine motel diner avenue boulevard highway canyon \
    prairie lagoon reef tide wave shore lighthouse compass map anchor";
const PLACES: &[&str] = &[
    "Lisbon",
    "Porto",
    "Madrid",
    "Seville",
    "Paris",
    "Lyon",
    "Marseille",
    "Berlin",
    "Hamburg",
    "Munich",
    "Vienna",
    "Prague",
    "Krakow",
    "Budapest",
    "Rome",
    "Naples",
    "Venice",
    "Florence",
    "Athens",
    "Istanbul",
    "Oslo",
    "Bergen",
    "Stockholm",
    "Helsinki",
    "Copenhagen",
    "Amsterdam",
    "Utrecht",
    "Brussels",
    "Ghent",
    "Dublin",
    "Galway",
    "Edinburgh",
    "Glasgow",
    "London",
    "Brighton",
    "Reykjavik",
    "Tokyo",
    "Kyoto",
    "Osaka",
    "Seoul",
    "Hanoi",
    "Bangkok",
    "Lima",
    "Cusco",
    "Quito",
    "Bogota",
    "Havana",
    "Montreal",
    "Quebec",
    "Toronto",
    "Chicago",
    "Boston",
    "Denver",
];
const EVENTS: &[&str] = &[
    "Wedding",
    "Birthday",
    "Holiday",
    "Hiking",
    "Concert",
    "Graduation",
    "Picnic",
    "Festival",
    "Christmas",
    "Easter",
    "Reunion",
    "Roadtrip",
    "Camping",
    "Beach",
    "Skiing",
    "Museum",
    "Market",
    "Harvest",
    "Carnival",
    "Marathon",
];
const TOPICS: &[&str] = &[
    "Budget",
    "Marketing",
    "Research",
    "Quarterly",
    "Annual",
    "Project",
    "Security",
    "Network",
    "Design",
    "Sales",
    "Hiring",
    "Onboarding",
    "Training",
    "Compliance",
    "Audit",
    "Roadmap",
    "Infrastructure",
    "Migration",
    "Customer",
    "Supplier",
    "Inventory",
    "Pricing",
    "Strategy",
    "Board",
    "Safety",
    "Energy",
    "Facilities",
    "Payroll",
    "Tax",
    "Insurance",
];
const DOCTYPES: &[&str] = &[
    "Report",
    "Notes",
    "Slides",
    "Minutes",
    "Invoice",
    "Contract",
    "Proposal",
    "Summary",
    "Plan",
    "Review",
    "Checklist",
    "Handbook",
    "Specification",
    "Forecast",
    "Agenda",
];
const SHOWS: &[&str] = &[
    "Night Shift",
    "The Long Road",
    "Harbour Lights",
    "Cold Case Files",
    "Kitchen Stories",
    "Wild Coast",
    "The Inspector",
    "Space Station",
    "Blue Planet",
    "Small Town",
    "The Archive",
    "Desert Patrol",
    "Gardeners World",
    "Mystery Manor",
    "Deep Time",
];
const AUTHORS: &[&str] = &[
    "Jane Austen",
    "Charles Dickens",
    "Mark Twain",
    "Leo Tolstoy",
    "Virginia Woolf",
    "Franz Kafka",
    "Herman Melville",
    "Emily Bronte",
    "George Eliot",
    "Joseph Conrad",
    "Thomas Hardy",
    "Anton Chekhov",
    "Edith Wharton",
    "Willa Cather",
    "Jack London",
    "Arthur Conan Doyle",
    "Mary Shelley",
    "Bram Stoker",
    "Jules Verne",
    "Alexandre Dumas",
];

fn title_word(rng: &mut Rng) -> &'static str {
    let words: Vec<&'static str> = TITLE_WORDS.split_whitespace().collect();
    words[rng.below(words.len())]
}

/// A file name like a real share's, made of the word lists above, numbers and an extension.
fn realistic_name(rng: &mut Rng) -> String {
    let year = 1995 + rng.below(31);
    match rng.below(5) {
        0 => {
            let t = (0..1 + rng.below(3))
                .map(|_| capitalise(title_word(rng)))
                .collect::<Vec<_>>()
                .join(" ");
            let ext = rng.pick(&["mp3", "flac", "ogg", "m4a"]);
            format!("{} - {t} ({year}).{ext}", rng.pick(ARTISTS))
        }
        1 => format!(
            "{} {} {year}-{:02}-{:02} {:03}.jpg",
            rng.pick(PLACES),
            rng.pick(EVENTS),
            1 + rng.below(12),
            1 + rng.below(28),
            1 + rng.below(400)
        ),
        2 => format!(
            "{} {} {year} v{}.{}",
            rng.pick(TOPICS),
            rng.pick(DOCTYPES),
            1 + rng.below(9),
            rng.pick(&["pdf", "docx", "odt", "xlsx", "pptx"])
        ),
        3 => format!(
            "{} S{:02}E{:02} {} {}.{}",
            rng.pick(SHOWS),
            1 + rng.below(8),
            1 + rng.below(12),
            capitalise(title_word(rng)),
            capitalise(title_word(rng)),
            rng.pick(&["mkv", "mp4"])
        ),
        _ => format!(
            "{} - The {} of the {}.{}",
            rng.pick(AUTHORS),
            capitalise(title_word(rng)),
            capitalise(title_word(rng)),
            rng.pick(&["epub", "pdf", "mobi"])
        ),
    }
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

/// The files of every peer: peer 0 has `big_files` (the large share), every peer `files` more,
/// all with distinct names and contents, and the common files j (same name and contents on
/// peers j, j+1, j+2 mod P).
fn plan_files(args: &Args, rng: &mut Rng) -> Vec<Vec<FileSpec>> {
    let p = args.peers;
    let mut used: HashSet<String> = HashSet::new();
    let mut fresh = |rng: &mut Rng| loop {
        let name = realistic_name(rng);
        if used.insert(name.to_lowercase()) {
            return name;
        }
    };
    let mut plan: Vec<Vec<FileSpec>> = vec![Vec::new(); p];
    for (i, files) in plan.iter_mut().enumerate() {
        let n = args.files + if i == 0 { args.big_files } else { 0 };
        for k in 0..n {
            let name = fresh(rng);
            let data = format!("{name}\npeer {i} file {k} seed {}\n", args.seed).into_bytes();
            files.push(FileSpec::new(name, data));
        }
    }
    for j in 0..p {
        let name = fresh(rng);
        let data = format!("{name}\ncommon file {j} seed {}\n", args.seed).into_bytes();
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
    /// How long `start_share` took (scanning and hashing the files).
    scan: Duration,
    /// When `start_share` returned: publishing starts then.
    ready: Instant,
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
    let t = Instant::now();
    let handle = start_share(config, listener)
        .await
        .with_context(|| format!("starting peer {i}"))?;
    let scan = t.elapsed();
    let addr = handle.local_addr;
    Ok(Peer {
        handle,
        addr,
        files,
        scan,
        ready: Instant::now(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// One lookup to time: a word to search or a content id to find, with what it should find.
#[derive(Debug, Clone)]
struct Query {
    kind: Kind,
    /// The word, or the content id in hex.
    text: String,
    id: Option<ContentId>,
    /// Whether the word or file is one of the large share's.
    big: bool,
    /// Every live peer it should find.
    expected: BTreeSet<SocketAddr>,
}

impl Query {
    fn key(&self) -> Id {
        match self.id {
            Some(id) => content_key(&id),
            None => keyword_key(&self.text),
        }
    }
}

#[derive(Debug, Clone)]
struct Lookup {
    q: usize,
    kind: Kind,
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
    fn to_json(&self, queries: &[Query]) -> Value {
        let strs = |v: Vec<SocketAddr>| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        json!({
            "kind": self.kind.as_str(),
            "query": queries[self.q].text,
            "large_share": queries[self.q].big,
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
async fn diagnose(node: &AsyncDht, l: &Lookup, q: &Query) -> Value {
    let t = Instant::now();
    let (addrs, batches) = raw_get_peers(node, q.key(), Duration::from_secs(30)).await;
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
            Ok(mut c) => match q.id {
                Some(id) => match c.have(id).await {
                    Ok(_) => "has the file".to_string(),
                    Err(e) => format!("have failed: {e}"),
                },
                None => match c.catalog_query(catalog_query(&q.text)).await {
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
    p99: f64,
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
    let rank = |p: f64| match n {
        0 => f64::NAN,
        _ => ms[((n as f64 * p).ceil() as usize).clamp(1, n) - 1],
    };
    Stats {
        count: n,
        median,
        p90: rank(0.9),
        p99: rank(0.99),
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
        "p99_ms": f(s.p99),
        "worst_ms": f(s.worst),
        "found_all": s.complete,
        "found_all_share": if s.count > 0 { json!(round3(s.complete as f64 / s.count as f64)) } else { Value::Null },
    })
}

const TABLE_HEAD: &str = "count  median ms    p90 ms    p99 ms  worst ms         found all";

fn table_row(label: &str, s: &Stats) -> String {
    let pct = if s.count > 0 {
        100.0 * s.complete as f64 / s.count as f64
    } else {
        f64::NAN
    };
    format!(
        "{label:<34} {:>5} {:>10.1} {:>9.1} {:>9.1} {:>9.1}  {:>4}/{:<4} {:>5.1}%\n",
        s.count, s.median, s.p90, s.p99, s.worst, s.complete, s.count, pct
    )
}

/// The machine's UDP counters (this network namespace, every process in it): `Udp:` of
/// /proc/net/snmp and `Udp6*` of /proc/net/snmp6, by name.
fn udp_counters() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/snmp") {
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        if let (Some(names), Some(values)) = (lines.next(), lines.next()) {
            for (n, v) in names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
            {
                if let Ok(v) = v.parse() {
                    out.insert(format!("Udp{n}"), v);
                }
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/snmp6") {
        for l in text.lines() {
            let mut it = l.split_whitespace();
            if let (Some(n), Some(v)) = (it.next(), it.next())
                && n.starts_with("Udp6")
                && let Ok(v) = v.parse()
            {
                out.insert(n.to_string(), v);
            }
        }
    }
    out
}

/// The counters that count lost datagrams, and the datagrams received.
const UDP_REPORTED: [&str; 8] = [
    "UdpInDatagrams",
    "UdpRcvbufErrors",
    "UdpInErrors",
    "UdpSndbufErrors",
    "Udp6InDatagrams",
    "Udp6RcvbufErrors",
    "Udp6InErrors",
    "Udp6SndbufErrors",
];

fn udp_delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> Value {
    let mut m = serde_json::Map::new();
    for n in UDP_REPORTED {
        if let (Some(x), Some(y)) = (a.get(n), b.get(n)) {
            m.insert(n.to_string(), json!(y.saturating_sub(*x)));
        }
    }
    Value::Object(m)
}

fn udp_text(d: &Value) -> String {
    let g = |n: &str| d.get(n).and_then(Value::as_u64);
    match g("UdpInDatagrams") {
        None => "not available".to_string(),
        Some(rx) => format!(
            "{rx} received; dropped: RcvbufErrors {}, InErrors {}, SndbufErrors {} (IPv6: {} / {} / {})",
            g("UdpRcvbufErrors").unwrap_or(0),
            g("UdpInErrors").unwrap_or(0),
            g("UdpSndbufErrors").unwrap_or(0),
            g("Udp6RcvbufErrors").unwrap_or(0),
            g("Udp6InErrors").unwrap_or(0),
            g("Udp6SndbufErrors").unwrap_or(0),
        ),
    }
}

/// Per UDP socket on 127.0.0.1 from /proc/net/udp: its port and the datagrams it dropped
/// (the `drops` column: receive buffer full and the like).
fn udp_sockets() -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string("/proc/net/udp") else {
        return out;
    };
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(local), Some(drops)) = (f.get(1), f.get(12)) else {
            continue;
        };
        let Some((ip, port)) = local.split_once(':') else {
            continue;
        };
        if ip != "0100007F" {
            continue;
        }
        if let (Ok(port), Ok(drops)) = (u16::from_str_radix(port, 16), drops.parse::<u64>()) {
            out.insert(port, drops);
        }
    }
    out
}

/// Datagrams dropped by our own sockets between two readings (a socket opened in between
/// counts from 0; one closed in between is not counted).
fn own_drops(a: &BTreeMap<u16, u64>, b: &BTreeMap<u16, u64>, ports: &BTreeSet<u16>) -> u64 {
    ports
        .iter()
        .filter_map(|p| Some(b.get(p)?.saturating_sub(a.get(p).copied().unwrap_or(0))))
        .sum()
}

fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

/// A peer's announcement progress: each change of its status, seconds after it was ready.
#[derive(Debug, Clone)]
struct Progress {
    peer: usize,
    keys: usize,
    files: usize,
    scan: Duration,
    /// Until every key was announced (None: not within the time limit).
    all: Option<Duration>,
    rounds: u64,
    /// (seconds, keys announced, keys) after each round.
    timeline: Vec<(f64, usize, usize)>,
}

/// Follows a peer's status until every key is announced or `limit` passes.
async fn follow(
    i: usize,
    mut rx: tokio::sync::watch::Receiver<ShareStatus>,
    ready: Instant,
    scan: Duration,
    limit: Duration,
) -> Progress {
    let mut p = Progress {
        peer: i,
        keys: 0,
        files: 0,
        scan,
        all: None,
        rounds: 0,
        timeline: Vec::new(),
    };
    let end = ready + limit;
    loop {
        let st = rx.borrow_and_update().clone();
        p.keys = st.dht_keys;
        p.files = st.files_shared;
        if st.dht_rounds > p.rounds {
            p.rounds = st.dht_rounds;
            p.timeline.push((
                secs(ready.elapsed()),
                st.dht_announced.unwrap_or(0),
                st.dht_keys,
            ));
            eprintln!(
                "[dht_bench] peer {i}: round {}: {} of {} keys announced, {:.2} s after it started",
                st.dht_rounds,
                st.dht_announced.unwrap_or(0),
                st.dht_keys,
                ready.elapsed().as_secs_f64()
            );
        }
        if st.dht_announced.is_some_and(|n| n > 0 && n == st.dht_keys) {
            p.all = Some(ready.elapsed());
            return p;
        }
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return p,
        }
    }
}

/// One round of the same lookups: its name, its lookups and what was measured around them.
struct Phase {
    name: String,
    lookups: Vec<Lookup>,
    stopped_early: bool,
    udp: Value,
    /// Dead (killed) nodes in the client's routing table before the phase, and its size.
    client_table: (usize, usize),
    /// Dead nodes in the live testnet nodes' routing tables before the phase, and their sizes.
    testnet_tables: (usize, usize),
    /// Live testnet nodes whose routing table holds the read-only client.
    client_listed: usize,
    /// Live testnet nodes.
    live: usize,
    total: Duration,
}

/// Routing table entries (not stale) of the client and of the live testnet nodes that are
/// killed nodes, and how many live testnet nodes list the read-only client itself.
async fn dead_in_tables(
    client: &AsyncDht,
    live: &[Dht],
    dead: &BTreeSet<String>,
) -> ((usize, usize), (usize, usize), usize) {
    let me = client.info().await.local_addr().to_string();
    let c = client.to_bootstrap().await;
    let client = (c.iter().filter(|a| dead.contains(*a)).count(), c.len());
    let (mut d, mut n, mut listed) = (0, 0, 0);
    for node in live {
        let t = node.clone().as_async().to_bootstrap().await;
        d += t.iter().filter(|a| dead.contains(*a)).count();
        n += t.len();
        listed += usize::from(t.contains(&me));
    }
    (client, (d, n), listed)
}

#[allow(clippy::too_many_arguments)]
async fn run_phase(
    name: &str,
    node: &AsyncDht,
    queries: &[Query],
    args: &Args,
    deadline: Instant,
    live: &[Dht],
    dead: &BTreeSet<String>,
) -> Phase {
    let (client_table, testnet_tables, client_listed) = dead_in_tables(node, live, dead).await;
    eprintln!(
        "[dht_bench] phase {name}: {} lookups; dead nodes in the client's table {}/{}, in the live testnet nodes' tables {}/{}; the read-only client is in {client_listed} of {} testnet tables",
        queries.len(),
        client_table.0,
        client_table.1,
        testnet_tables.0,
        testnet_tables.1,
        live.len()
    );
    let started = Instant::now();
    let udp_start = udp_counters();
    let mut lookups: Vec<Lookup> = Vec::with_capacity(queries.len());
    let mut stopped_early = false;
    let mut diagnosed = 0;
    for (n, q) in queries.iter().enumerate() {
        if Instant::now() + args.lookup_timeout + Duration::from_secs(15) > deadline {
            stopped_early = true;
            eprintln!("[dht_bench] {name}: stopping after {n} lookups: overall time limit");
            break;
        }
        let t = Instant::now();
        let (timed_out, found) = match q.kind {
            Kind::Search => {
                let res = tokio::time::timeout(
                    args.lookup_timeout,
                    find_files(node, &catalog_query(&q.text), None),
                )
                .await;
                match res {
                    Ok(v) => (
                        false,
                        v.into_iter()
                            .filter(|(_, (_, r))| !r.files.is_empty())
                            .map(|(a, _)| a)
                            .collect(),
                    ),
                    Err(_) => (true, BTreeSet::new()),
                }
            }
            Kind::Sources => {
                let Some(id) = q.id else { continue };
                match tokio::time::timeout(args.lookup_timeout, find_sources(node, id, None)).await
                {
                    Ok(v) => (false, v.into_iter().map(|(a, _)| a).collect()),
                    Err(_) => (true, BTreeSet::new()),
                }
            }
        };
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut l = Lookup {
            q: n,
            kind: q.kind,
            ms,
            timed_out,
            expected: q.expected.clone(),
            found,
            diagnosis: None,
        };
        if !l.complete() {
            if diagnosed < args.diagnose {
                diagnosed += 1;
                l.diagnosis = Some(diagnose(node, &l, q).await);
            }
            eprintln!(
                "[dht_bench] {name}: lookup {n} ({} {}) missed {:?}: {}",
                q.kind.as_str(),
                q.text,
                l.missing(),
                l.diagnosis
                    .as_ref()
                    .map_or("(not diagnosed)".to_string(), |d| d.to_string())
            );
        }
        lookups.push(l);
    }
    Phase {
        name: name.to_string(),
        lookups,
        stopped_early,
        udp: udp_delta(&udp_start, &udp_counters()),
        client_table,
        testnet_tables,
        client_listed,
        live: live.len(),
        total: started.elapsed(),
    }
}

fn phase_report(p: &Phase, queries: &[Query], args: &Args) -> (String, Value) {
    let of = |f: &dyn Fn(&Lookup) -> bool| -> Vec<&Lookup> {
        p.lookups.iter().filter(|l| f(l)).collect()
    };
    let mut t = String::new();
    t.push_str(&format!(
        "{} ({} s; routing tables before: the client's holds {} dead of {}, the live testnet nodes' {} dead of {}; the read-only client is listed by {} of {} testnet nodes)\n",
        p.name,
        secs(p.total),
        p.client_table.0,
        p.client_table.1,
        p.testnet_tables.0,
        p.testnet_tables.1,
        p.client_listed,
        p.live
    ));
    t.push_str(&format!("{:<34} {TABLE_HEAD}\n", ""));
    let mut rows = Vec::new();
    let all = of(&|_| true);
    let mut row = |label: &str, ls: Vec<&Lookup>, t: &mut String| {
        if ls.is_empty() {
            return;
        }
        let s = stats(&ls);
        t.push_str(&table_row(label, &s));
        let mut v = stats_json(&s);
        if let Value::Object(m) = &mut v {
            m.insert("label".into(), json!(label.trim()));
        }
        rows.push(v);
    };
    row("all lookups", all, &mut t);
    for kind in [Kind::Search, Kind::Sources] {
        let label = match kind {
            Kind::Search => "search (keyword)",
            Kind::Sources => "find_sources (content id)",
        };
        row(label, of(&|l| l.kind == kind), &mut t);
        row(
            "  of the large share",
            of(&|l| l.kind == kind && queries[l.q].big),
            &mut t,
        );
        let mut by_n: BTreeMap<usize, Vec<&Lookup>> = BTreeMap::new();
        for l in p.lookups.iter().filter(|l| l.kind == kind) {
            by_n.entry(l.expected.len()).or_default().push(l);
        }
        for (n, ls) in by_n {
            row(&format!("  on {n} peer(s)"), ls, &mut t);
        }
    }
    let timed_out = p.lookups.iter().filter(|l| l.timed_out).count();
    let extra = p.lookups.iter().filter(|l| !l.extra().is_empty()).count();
    let over = |ms: f64| p.lookups.iter().filter(|l| l.ms > ms).count();
    let rt = args.request_timeout.as_secs_f64() * 1000.0;
    t.push_str(&format!(
        "  {} done{}, {timed_out} timed out (> {} s), {extra} with unexpected peers, {} took longer than the request timeout ({} ms)\n",
        p.lookups.len(),
        if p.stopped_early {
            " (stopped early: time limit)"
        } else {
            ""
        },
        args.lookup_timeout.as_secs(),
        over(rt),
        rt
    ));
    t.push_str(&format!("  UDP: {}\n", udp_text(&p.udp)));
    let doc = json!({
        "name": p.name,
        "total_s": secs(p.total),
        "stopped_early": p.stopped_early,
        "timed_out": timed_out,
        "with_unexpected_peers": extra,
        "longer_than_request_timeout": over(rt),
        "client_table_dead": p.client_table.0,
        "client_table_size": p.client_table.1,
        "testnet_tables_dead": p.testnet_tables.0,
        "testnet_tables_size": p.testnet_tables.1,
        "client_listed_by_testnet_nodes": p.client_listed,
        "live_testnet_nodes": p.live,
        "udp": p.udp,
        "rows": rows,
        "lookups": p.lookups.iter().map(|l| l.to_json(queries)).collect::<Vec<_>>(),
    });
    (t, doc)
}

/// The lookups of every phase: alternately a word search and a source lookup; every other
/// one of each is of the large share (when there is one).
fn plan_queries(args: &Args, peers: &[Peer], rng: &mut Rng) -> Result<Vec<Query>> {
    let mut by_word: BTreeMap<String, BTreeSet<SocketAddr>> = BTreeMap::new();
    let mut by_id: BTreeMap<ContentId, BTreeSet<SocketAddr>> = BTreeMap::new();
    let mut peer_words: Vec<Vec<String>> = Vec::with_capacity(peers.len());
    for p in peers {
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
    // A peer matches a query word as a substring of its lowercased names, the DHT only by
    // whole keyword: the peers to find are those with the word as a keyword (a peer with it
    // only inside a longer word never announced it).
    let has_big = args.big_files > 0;
    let big_ids: Vec<ContentId> = if has_big {
        peers[0].files[..args.big_files]
            .iter()
            .map(|f| f.id)
            .collect()
    } else {
        Vec::new()
    };
    let other_ids: Vec<ContentId> = by_id
        .keys()
        .filter(|id| !big_ids.contains(id))
        .copied()
        .collect();
    ensure!(!other_ids.is_empty(), "no files besides the large share");
    let mut out = Vec::with_capacity(args.lookups);
    for n in 0..args.lookups {
        let big = has_big && (n / 2) % 2 == 0;
        if n % 2 == 0 {
            let r = if big {
                0
            } else {
                (if has_big { 1 } else { 0 }) + rng.below(peers.len() - usize::from(has_big))
            };
            let words = &peer_words[r];
            ensure!(!words.is_empty(), "peer {r} has no keywords");
            let word = words[rng.below(words.len())].clone();
            let expected = by_word.get(&word).cloned().unwrap_or_default();
            out.push(Query {
                kind: Kind::Search,
                text: word,
                id: None,
                big,
                expected,
            });
        } else {
            let id = if big {
                big_ids[rng.below(big_ids.len())]
            } else {
                other_ids[rng.below(other_ids.len())]
            };
            out.push(Query {
                kind: Kind::Sources,
                text: id.to_hex(),
                id: Some(id),
                big,
                expected: by_id.get(&id).cloned().unwrap_or_default(),
            });
        }
    }
    Ok(out)
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
    let mut testnet = tokio::task::spawn_blocking(move || {
        Testnet::builder(nodes)
            .bind_address(Ipv4Addr::LOCALHOST)
            .build()
    })
    .await
    .context("testnet task")?
    .context("building the DHT testnet")?;
    let testnet_time = t.elapsed();
    let testnet_addrs = testnet.bootstrap.clone();
    let mut bootstrap = testnet.bootstrap.clone();
    if let Some(n) = args.bootstrap_nodes {
        bootstrap.truncate(n);
    }
    // Never let a node fall back to the public bootstrap nodes.
    ensure!(!bootstrap.is_empty(), "the testnet has no bootstrap nodes");
    let mut own_ports: BTreeSet<u16> = BTreeSet::new();
    for b in &testnet_addrs {
        let a: SocketAddr = b
            .parse()
            .with_context(|| format!("bootstrap address {b:?}"))?;
        ensure!(
            a.ip().is_loopback(),
            "bootstrap node {b} is not on 127.0.0.1"
        );
        own_ports.insert(a.port());
    }
    eprintln!(
        "[dht_bench] testnet of {} nodes on 127.0.0.1 in {:.2} s; bootstrap list of {}",
        testnet.nodes.len(),
        testnet_time.as_secs_f64(),
        bootstrap.len()
    );

    // 2. The peers, each publishing as soon as it has scanned its files.
    let tmp = tempfile::Builder::new()
        .prefix("peershare-dht-bench.")
        .tempdir()
        .context("creating a temporary directory")?;
    let plan = plan_files(&args, &mut rng);
    let udp_publish_start = udp_counters();
    let sockets_publish_start = udp_sockets();
    let t = Instant::now();
    let mut peers: Vec<Peer> = Vec::with_capacity(args.peers);
    let mut follows = tokio::task::JoinSet::new();
    // The large share first, so that its publishing overlaps the others' as on a real network.
    for (i, files) in plan.into_iter().enumerate() {
        let p = start_peer(tmp.path(), i, files, &bootstrap, &args).await?;
        if let Some(a) = p.handle.dht_addr {
            own_ports.insert(a.port());
        }
        follows.spawn(follow(
            i,
            p.handle.status.clone(),
            p.ready,
            p.scan,
            args.announce_timeout,
        ));
        peers.push(p);
    }
    let mut progress: Vec<Progress> = Vec::new();
    while let Some(r) = follows.join_next().await {
        progress.push(r.context("announce wait task")?);
    }
    progress.sort_by_key(|p| p.peer);
    let publish_all = t.elapsed();
    let udp_publish = udp_delta(&udp_publish_start, &udp_counters());
    let sockets_now = udp_sockets();
    let own_publish_drops = own_drops(&sockets_publish_start, &sockets_now, &own_ports);
    let failed: Vec<String> = progress
        .iter()
        .filter(|p| p.all.is_none())
        .map(|p| {
            format!(
                "peer {}: {:?} of {} keys",
                p.peer,
                p.timeline.last().map(|x| x.1),
                p.keys
            )
        })
        .collect();
    // The lookups still run: they then show what a search finds of a share still publishing.
    if !failed.is_empty() {
        eprintln!(
            "[dht_bench] not every key was announced within {:?}: {}",
            args.announce_timeout,
            failed.join("; ")
        );
    }
    let total_keys: usize = progress.iter().map(|p| p.keys).sum();
    eprintln!(
        "[dht_bench] {} peers announced {} keys in {:.2} s",
        peers.len(),
        total_keys,
        publish_all.as_secs_f64()
    );

    // 3. The read-only client.
    let t = Instant::now();
    let node = start_node(&dht_config(&bootstrap, false, args.request_timeout))
        .context("starting the client DHT node")?;
    let bootstrapped = tokio::time::timeout(Duration::from_secs(60), node.bootstrapped())
        .await
        .unwrap_or(false);
    let client_bootstrap = t.elapsed();
    own_ports.insert(node.info().await.local_addr().port());
    let queries = plan_queries(&args, &peers, &mut rng)?;
    eprintln!(
        "[dht_bench] client node bootstrapped={bootstrapped} in {:.3} s; {} lookups per phase",
        client_bootstrap.as_secs_f64(),
        queries.len()
    );

    // 4. The lookups, all nodes up.
    let mut phases = Vec::new();
    let no_dead = BTreeSet::new();
    let sockets_lookups_start = udp_sockets();
    phases.push(
        run_phase(
            "all nodes up",
            &node,
            &queries,
            &args,
            deadline,
            &testnet.nodes,
            &no_dead,
        )
        .await,
    );

    // 5. Churn: drop a share of the testnet nodes (their threads end and their sockets close).
    let mut churn = Value::Null;
    if args.churn_percent > 0 {
        let k = (testnet.nodes.len() * args.churn_percent).div_ceil(100);
        let mut idx: Vec<usize> = (0..testnet.nodes.len()).collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        let kill: BTreeSet<usize> = idx.into_iter().take(k).collect();
        let mut live = Vec::new();
        let mut dead_nodes = Vec::new();
        let mut dead: BTreeSet<String> = BTreeSet::new();
        for (i, n) in std::mem::take(&mut testnet.nodes).into_iter().enumerate() {
            if kill.contains(&i) {
                dead.insert(testnet_addrs[i].clone());
                dead_nodes.push(n);
            } else {
                live.push(n);
            }
        }
        testnet.nodes = live;
        let dead_ports: BTreeSet<u16> = dead
            .iter()
            .filter_map(|a| a.parse::<SocketAddr>().ok().map(|a| a.port()))
            .collect();
        let t = Instant::now();
        drop(dead_nodes);
        // Dropping the last handle of a mainline Dht ends its actor thread at its next turn
        // (at most one 50 ms receive timeout later), which drops the socket.
        let closed = loop {
            let open = udp_sockets();
            let still = dead_ports.iter().filter(|p| open.contains_key(p)).count();
            if still == 0 || t.elapsed() > CLOSE_WAIT {
                break still;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let close_time = t.elapsed();
        eprintln!(
            "[dht_bench] killed {} of {} testnet nodes; sockets closed in {:.3} s ({closed} still open)",
            dead.len(),
            args.nodes,
            close_time.as_secs_f64()
        );
        churn = json!({
            "killed": dead.len(),
            "sockets_still_open": closed,
            "sockets_closed_s": secs(close_time),
            "killed_addrs": dead.iter().collect::<Vec<_>>(),
        });
        ensure!(
            closed == 0,
            "{closed} killed nodes' sockets still open after {CLOSE_WAIT:?}"
        );
        phases.push(
            run_phase(
                &format!("right after killing {} nodes", dead.len()),
                &node,
                &queries,
                &args,
                deadline,
                &testnet.nodes,
                &dead,
            )
            .await,
        );
        if !args.churn_wait.is_zero() {
            let wake = t + args.churn_wait;
            tokio::time::sleep_until(wake.into()).await;
            phases.push(
                run_phase(
                    &format!(
                        "{} s after killing {} nodes",
                        args.churn_wait.as_secs(),
                        dead.len()
                    ),
                    &node,
                    &queries,
                    &args,
                    deadline,
                    &testnet.nodes,
                    &dead,
                )
                .await,
            );
        }
    }
    let own_lookup_drops = own_drops(&sockets_lookups_start, &udp_sockets(), &own_ports);

    // Optionally: every key once, DHT only. Which announcements can a lookup not see?
    let mut check: Option<Value> = None;
    if args.check_all {
        let mut by_key: BTreeMap<String, (Id, BTreeSet<SocketAddr>)> = BTreeMap::new();
        for p in &peers {
            for f in &p.files {
                by_key
                    .entry(format!("id {}", f.id.to_hex()))
                    .or_insert_with(|| (content_key(&f.id), BTreeSet::new()))
                    .1
                    .insert(p.addr);
                for w in keywords(&f.name) {
                    by_key
                        .entry(format!("word {w}"))
                        .or_insert_with(|| (keyword_key(&w), BTreeSet::new()))
                        .1
                        .insert(p.addr);
                }
            }
        }
        let (mut pairs, mut found_pairs, mut checked) = (0usize, 0usize, 0usize);
        let mut incomplete = Vec::new();
        for (label, (key, holders)) in by_key {
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

    // 6. Report.
    let mut table = String::new();
    table.push_str(&format!(
        "DHT: {} testnet nodes + {} peers + 1 read-only client on 127.0.0.1, request timeout {} ms, {} bootstrap nodes, nproc={nproc}\n",
        args.nodes,
        peers.len(),
        args.request_timeout.as_millis(),
        bootstrap.len()
    ));
    table.push_str(&format!(
        "setup: testnet {:.2} s; client bootstrap {:.3} s (bootstrapped={bootstrapped})\n",
        testnet_time.as_secs_f64(),
        client_bootstrap.as_secs_f64()
    ));
    for p in &progress {
        if p.peer == 0 || p.rounds > 1 {
            let first = p.timeline.first().map_or((0.0, 0), |x| (x.0, x.1));
            table.push_str(&format!(
                "publishing, peer {} ({} files, {} keys): scan {:.2} s; first round {} of {} keys after {:.2} s; all after {} in {} round(s)\n",
                p.peer,
                p.files,
                p.keys,
                p.scan.as_secs_f64(),
                first.1,
                p.keys,
                first.0,
                p.all.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
                p.rounds
            ));
        }
    }
    let others: Vec<&Progress> = progress.iter().filter(|p| p.peer != 0).collect();
    table.push_str(&format!(
        "publishing, all {} peers: {} keys, {} {:.2} s after the first peer started; {} of {} other peers in their first round\n",
        progress.len(),
        total_keys,
        if failed.is_empty() {
            "all announced".to_string()
        } else {
            format!("NOT all announced ({})", failed.join("; "))
        },
        publish_all.as_secs_f64(),
        others.iter().filter(|p| p.rounds == 1).count(),
        others.len()
    ));
    table.push_str(&format!(
        "UDP while publishing (machine): {}; dropped by this benchmark's own sockets: {own_publish_drops}\n",
        udp_text(&udp_publish)
    ));
    if !churn.is_null() {
        table.push_str(&format!(
            "churn: killed {} of {} testnet nodes (not the peers' or the client's); their sockets were closed {:.3} s later\n",
            churn["killed"], args.nodes, churn["sockets_closed_s"]
        ));
    }
    let mut phase_docs = Vec::new();
    for p in &phases {
        let (t, d) = phase_report(p, &queries, &args);
        table.push_str(&t);
        phase_docs.push(d);
    }
    table.push_str(&format!(
        "UDP datagrams dropped by this benchmark's own sockets during the lookups: {own_lookup_drops}\n"
    ));
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
            "testnet_nodes": args.nodes,
            "bootstrap_nodes": bootstrap.len(),
            "peers": peers.len(),
            "files_per_peer": args.files,
            "large_share_files": args.big_files,
            "common_files_per_peer": COMMON_HOLDERS,
            "lookups_per_phase": args.lookups,
            "request_timeout_ms": args.request_timeout.as_millis() as u64,
            "lookup_timeout_s": args.lookup_timeout.as_secs(),
            "churn_percent": args.churn_percent,
            "churn_wait_s": args.churn_wait.as_secs(),
            "quick": args.quick,
            "seed": args.seed,
            "nproc": nproc,
            "search_limit": SEARCH_LIMIT,
        },
        "load": [load_before, load_after],
        "setup": {
            "testnet_s": secs(testnet_time),
            "client_bootstrapped": bootstrapped,
            "client_bootstrap_s": secs(client_bootstrap),
        },
        "publishing": {
            "all_announced_s": secs(publish_all),
            "not_all_announced": failed,
            "keys_total": total_keys,
            "udp_machine": udp_publish,
            "udp_dropped_own_sockets": own_publish_drops,
            "peers": progress.iter().map(|p| json!({
                "peer": p.peer,
                "files": p.files,
                "keys": p.keys,
                "scan_s": secs(p.scan),
                "all_announced_s": p.all.map(secs),
                "rounds": p.rounds,
                "timeline": p.timeline.iter().map(|(s, ok, keys)| json!({"s": s, "announced": ok, "keys": keys})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        },
        "churn": churn,
        "phases": phase_docs,
        "udp_dropped_own_sockets_lookups": own_lookup_drops,
        "check_all": check,
        "table": table,
        "total_s": secs(started.elapsed()),
    });

    // 7. Stop everything (bounded: shutdown waits at most 10 s per peer).
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
