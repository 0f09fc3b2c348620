//! Interop with libtorrent's DHT (Debian's python3-libtorrent 2.0.8, driven by scripts/lt_dht.py):
//! libtorrent keeps our nodes in its routing tables, finds what peers announce through them, and
//! `search --dht` / `get --dht` work over a network of libtorrent nodes only.
//!
//! Skipped with a message when the system python cannot `import libtorrent`, unless
//! `PEERSHARE_REQUIRE_ROOT_TESTS` is set (not empty, not "0"), as scripts/test sets it (and
//! installs python3-libtorrent): then they fail instead. `PEERSHARE_LT_LOG=DIR` keeps each
//! test's libtorrent DHT log and packets in `DIR/<test>.log`.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use mainline::Id;
use mainline::async_dht::AsyncDht;
use peershare::content::ContentId;
use peershare::dht::{DhtConfig, content_key, keyword_key, start_node};
use peershare::node::{ShareConfig, ShareHandle, start_share};
use serde_json::{Value, json};

const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lt_dht.py");
/// How long one harness command may take (get_peers asks for at most 5 s of lookup).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the networks get to reach what each test expects.
const CONVERGE: Duration = Duration::from_secs(30);

/// Whether tests needing python3-libtorrent must run rather than skip.
fn required() -> bool {
    std::env::var("PEERSHARE_REQUIRE_ROOT_TESTS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// True (after saying so) when `test` must be skipped because libtorrent is missing; a failure
/// instead when the tests are required.
fn skip(test: &str) -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import libtorrent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return false;
    }
    let why = format!(
        "{PYTHON} cannot import libtorrent (Debian package python3-libtorrent; scripts/test installs it)"
    );
    assert!(
        !required(),
        "{test}: {why}, and PEERSHARE_REQUIRE_ROOT_TESTS is set"
    );
    eprintln!("SKIPPED {test}: {why} (set PEERSHARE_REQUIRE_ROOT_TESTS=1 to fail instead)");
    true
}

/// A running scripts/lt_dht.py: libtorrent DHT nodes on 127.0.0.1, one JSON line per command.
struct LtNet {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// The nodes' UDP ports.
    ports: Vec<u16>,
}

impl LtNet {
    /// `n` libtorrent nodes that know each other, for test `name`.
    fn start(name: &str, n: usize) -> LtNet {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(SCRIPT).arg("--nodes").arg(n.to_string());
        // PEERSHARE_LT_LOG=DIR keeps libtorrent's DHT log and packets in DIR/<test>.log, to
        // see why a test fails.
        if let Some(dir) = std::env::var_os("PEERSHARE_LT_LOG") {
            cmd.arg("--log")
                .arg(Path::new(&dir).join(format!("{name}.log")));
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start scripts/lt_dht.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut net = LtNet {
            child,
            stdin,
            lines,
            ports: Vec::new(),
        };
        let ready = net.read();
        assert_eq!(ready["ready"], true, "lt_dht.py did not start: {ready}");
        net.ports = serde_json::from_value(ready["ports"].clone()).expect("ports");
        assert_eq!(net.ports.len(), n);
        net
    }

    fn read(&mut self) -> Value {
        let line = tokio::task::block_in_place(|| self.lines.recv_timeout(COMMAND_TIMEOUT))
            .unwrap_or_else(|e| panic!("no answer from lt_dht.py in {COMMAND_TIMEOUT:?}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("lt_dht.py said {line:?}: {e}"))
    }

    /// Sends `cmd`, returns the answer (which must be `ok`).
    fn cmd(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").expect("write to lt_dht.py");
        self.stdin.flush().expect("flush");
        let answer = self.read();
        assert_eq!(answer["ok"], true, "{cmd} failed: {answer}");
        answer
    }

    /// The nodes' addresses, for `--bootstrap`.
    fn addrs(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// Each node's routing table: (node id, address) pairs.
    fn routing(&mut self) -> Vec<Vec<(String, String)>> {
        let r = self.cmd(json!({"cmd": "routing"}));
        r["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                n["table"]
                    .as_array()
                    .expect("table")
                    .iter()
                    .map(|e| {
                        (
                            e["id"].as_str().expect("id").to_string(),
                            e["addr"].as_str().expect("addr").to_string(),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// The peers each libtorrent node finds for `key` with `dht_get_peers`, all at once.
    fn get_peers(&mut self, key: &Id) -> Vec<Vec<String>> {
        let nodes: Vec<usize> = (0..self.ports.len()).collect();
        let r = self.cmd(json!({
            "cmd": "get_peers", "nodes": nodes, "info_hash": hex(key), "timeout": 5,
        }));
        let mut by_node: HashMap<String, Vec<String>> =
            serde_json::from_value(r["peers"].clone()).expect("peers");
        nodes
            .iter()
            .map(|i| by_node.remove(&i.to_string()).expect("every node's peers"))
            .collect()
    }

    /// The announced peers ("IP:PORT") the libtorrent nodes have been given for `key`.
    fn announced(&mut self, key: &Id) -> HashSet<String> {
        let r = self.cmd(json!({"cmd": "announced", "info_hash": hex(key)}));
        r["by"]
            .as_array()
            .expect("by")
            .iter()
            .map(|b| b["from"].as_str().expect("from").to_string())
            .collect()
    }
}

/// What the libtorrent nodes saw of one other node: the node ids its queries carried, and
/// their BEP 43 "ro" (read-only) values.
#[derive(Debug, serde::Deserialize)]
struct Sender {
    ids: Vec<String>,
    ro: Vec<i64>,
}

impl LtNet {
    /// Every other node that sent the libtorrent nodes queries, by address.
    fn senders(&mut self) -> HashMap<String, Sender> {
        let r = self.cmd(json!({"cmd": "senders"}));
        serde_json::from_value(r["senders"].clone()).expect("senders")
    }
}

/// Each of `nodes` (address -> node id, or None if unknown) sent its queries under one id
/// (its own when known), all with "ro" = `ro`.
fn one_id_per_sender(
    senders: &HashMap<String, Sender>,
    nodes: &HashMap<String, Option<String>>,
    ro: i64,
) -> Result<(), String> {
    for (addr, id) in nodes {
        let s = senders
            .get(addr)
            .ok_or(format!("{addr} sent libtorrent no query"))?;
        if s.ids.len() != 1 || id.as_ref().is_some_and(|id| s.ids[0] != *id) {
            return Err(format!(
                "{addr} (node id {id:?}) sent queries under {} ids: {:?}",
                s.ids.len(),
                s.ids
            ));
        }
        if s.ro != [ro] {
            return Err(format!("{addr} sent \"ro\" values {:?}, not {ro}", s.ro));
        }
    }
    Ok(())
}

/// What one node answered the libtorrent nodes' get_peers with.
#[derive(Debug, serde::Deserialize)]
struct Values {
    /// Answers with peers.
    replies: u64,
    /// Peers listed more than once in one answer.
    duplicates: Vec<String>,
}

impl LtNet {
    /// Every node that answered the libtorrent nodes' get_peers with peers, by address.
    fn values(&mut self) -> HashMap<String, Values> {
        let r = self.cmd(json!({"cmd": "values"}));
        serde_json::from_value(r["values"].clone()).expect("values")
    }
}

impl Drop for LtNet {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        // It exits at once on quit; it is killed if it has not within 2 s.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(id: &Id) -> String {
    id.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn dht_config(bootstrap: Vec<String>, server: bool) -> DhtConfig {
    DhtConfig {
        bootstrap,
        port: 0,
        bind: Ipv4Addr::LOCALHOST,
        server,
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// A peer sharing `dir` on the DHT as `dht` says, once every key is announced; it announces
/// everything again every `refresh` (default: 15 min).
async fn dht_share(
    dir: &Path,
    state: &Path,
    dht: DhtConfig,
    refresh: Option<Duration>,
) -> ShareHandle {
    let mut config = ShareConfig::new(vec![dir.to_path_buf()], None, state.to_path_buf());
    config.dht = Some(dht);
    if let Some(r) = refresh {
        config.dht_refresh = r;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut h = start_share(config, listener).await.expect("share");
    if let Err(s) = h
        .wait_for(Duration::from_secs(30), |s| {
            s.dht_announced.is_some_and(|n| n > 0 && n == s.dht_keys)
        })
        .await
    {
        panic!("not every key announced in 30 s: {s:?}");
    }
    h
}

/// Polls `f` every 200 ms until it returns `Ok`, at most `timeout`; the last `Err` otherwise.
fn until<T>(timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = f();
        if r.is_ok() || Instant::now() >= deadline {
            return r;
        }
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(200)));
    }
}

/// Every address in the tables is filed under one node id, which for our nodes is theirs: a
/// node that sent messages under other ids would be filed several times, or under an id that
/// is not its own.
fn one_id_per_address(
    tables: &[Vec<(String, String)>],
    ours: &HashMap<String, Option<String>>,
) -> Result<(), String> {
    let mut ids: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (id, addr) in tables.iter().flatten() {
        ids.entry(addr).or_default().insert(id);
    }
    for (addr, set) in &ids {
        if set.len() > 1 {
            return Err(format!("{addr} is filed under {} ids: {set:?}", set.len()));
        }
        if let Some(Some(id)) = ours.get(*addr)
            && !set.contains(id.as_str())
        {
            return Err(format!("our node {addr} is filed under {set:?}, not {id}"));
        }
    }
    Ok(())
}

/// A `peershare dht node` process on 127.0.0.1, killed when dropped.
struct CliNode {
    child: Child,
    addr: String,
}

impl CliNode {
    fn start(bootstrap: &[String], home: &Path) -> CliNode {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peershare"));
        cmd.args(["dht", "node", "--listen", "127.0.0.1:0"]);
        for b in bootstrap {
            cmd.arg("--bootstrap").arg(b);
        }
        let mut child = cmd
            .env("PEERSHARE_HOME", home)
            .env_remove("PEERSHARE_INDEX")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start peershare dht node");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = CliNode {
            child,
            addr: String::new(),
        };
        let line = tokio::task::block_in_place(|| lines.recv_timeout(Duration::from_secs(20)))
            .expect("peershare dht node says where it listens");
        node.addr = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        node
    }
}

impl Drop for CliNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mixed network: 6 libtorrent nodes and 4 peershare DHT server nodes bootstrapped to them,
/// three in this process and one `peershare dht node` process. The libtorrent nodes are given
/// ours (add_dht_node, as a torrent's "nodes" would): they hear of them anyway from their
/// queries, but check one such node per refresh tick (5 s) only.
struct Mixed {
    lt: LtNet,
    /// Our nodes' ids by address (`None`: the process's, which it does not print).
    ids: HashMap<String, Option<String>>,
    _ours: Vec<AsyncDht>,
    _cli: CliNode,
    _home: tempfile::TempDir,
}

async fn mixed_network(name: &str) -> Mixed {
    let mut lt = LtNet::start(name, 6);
    let mut ours = Vec::new();
    let mut ids = HashMap::new();
    for _ in 0..3 {
        let node = start_node(&dht_config(lt.addrs(), true)).expect("our node");
        let info = node.info().await;
        ids.insert(info.local_addr().to_string(), Some(hex(info.id())));
        ours.push(node);
    }
    let home = tempfile::tempdir().expect("tempdir");
    let cli = CliNode::start(&lt.addrs(), home.path());
    ids.insert(cli.addr.clone(), None);
    for addr in ids.keys() {
        lt.cmd(json!({"cmd": "add", "addr": addr}));
    }
    Mixed {
        lt,
        ids,
        _ours: ours,
        _cli: cli,
        _home: home,
    }
}

/// `ids` with each unknown id filled in from the one id the node's queries carried.
fn known_ids(
    ids: &HashMap<String, Option<String>>,
    senders: &HashMap<String, Sender>,
) -> HashMap<String, Option<String>> {
    ids.iter()
        .map(|(a, id)| {
            let seen = senders.get(a).and_then(|s| s.ids.first()).cloned();
            (a.clone(), id.clone().or(seen))
        })
        .collect()
}

/// (a) libtorrent's routing tables come to hold our nodes, each by its address and its one
/// node id; every query our nodes sent (bootstrap, pings, refreshes) carried that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_keeps_our_nodes_in_its_routing_tables() {
    if skip("libtorrent_keeps_our_nodes_in_its_routing_tables") {
        return;
    }
    let mut net = mixed_network("libtorrent_keeps_our_nodes_in_its_routing_tables").await;
    let lt = &mut net.lt;
    let ids = &net.ids;
    let held = until(CONVERGE, || {
        let tables = lt.routing();
        for (i, table) in tables.iter().enumerate() {
            let have: HashSet<&str> = table.iter().map(|(_, a)| a.as_str()).collect();
            let missing: Vec<&String> = ids.keys().filter(|a| !have.contains(a.as_str())).collect();
            if !missing.is_empty() {
                return Err(format!(
                    "libtorrent node {i} lacks our nodes {missing:?}; its table: {table:?}"
                ));
            }
        }
        Ok(tables)
    });
    let tables = held.expect("libtorrent's routing tables hold our nodes");
    let senders = lt.senders();
    one_id_per_sender(&senders, ids, 0).expect("one id per node");
    one_id_per_address(&tables, &known_ids(ids, &senders)).expect("filed under its id");
}

/// (b) A peer sharing through our nodes (its only bootstrap nodes) is found by libtorrent's
/// `dht_get_peers` on its content key and on a keyword key, from every libtorrent node; and
/// libtorrent files the peer's own node under one id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_finds_a_peer_announced_through_our_nodes() {
    if skip("libtorrent_finds_a_peer_announced_through_our_nodes") {
        return;
    }
    let mut net = mixed_network("libtorrent_finds_a_peer_announced_through_our_nodes").await;
    let (lt, ids) = (&mut net.lt, &net.ids);
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("share");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let body = data(50_000, 18);
    std::fs::write(dir.join("Zanzibar Ledger.ods"), &body).expect("write");
    let id = ContentId::from(blake3::hash(&body));
    let bootstrap: Vec<String> = ids.keys().cloned().collect();
    // Announcing every second, it renews its announcements twice before libtorrent looks:
    // a node must still list it once (not once per announcement) in its get_peers answers.
    let mut share = dht_share(
        &dir,
        &t.path().join("state"),
        dht_config(bootstrap, true),
        Some(Duration::from_secs(1)),
    )
    .await;
    if let Err(s) = share
        .wait_for(Duration::from_secs(30), |s| s.dht_rounds >= 3)
        .await
    {
        panic!("not renewed twice in 30 s: {s:?}");
    }
    let me = share.local_addr.to_string();
    for (what, key) in [
        ("content key", content_key(&id)),
        ("keyword key", keyword_key("zanzibar")),
    ] {
        let found = until(CONVERGE, || {
            let found = lt.get_peers(&key);
            match found.iter().position(|p| !p.contains(&me)) {
                None => Ok(found),
                Some(node) => Err(format!(
                    "libtorrent node {node} finds {:?} under the {what}",
                    found[node]
                )),
            }
        });
        for peers in found.expect("every libtorrent node finds the sharing peer") {
            assert_eq!(peers, std::slice::from_ref(&me), "under the {what}");
        }
    }
    // libtorrent had the peer from our nodes' answers (not only from its own nodes'), each
    // listing it once.
    let values = lt.values();
    assert!(
        ids.keys()
            .any(|a| values.get(a).is_some_and(|v| v.replies > 0)),
        "no answer with peers from our nodes {:?}: {values:?}",
        ids.keys()
    );
    for (addr, v) in &values {
        assert!(
            v.duplicates.is_empty(),
            "{addr} listed {:?} more than once in one answer",
            v.duplicates
        );
    }
    // The sharing peer's node (and ours) sent every query, announcements included, under its
    // one id, and libtorrent files each under one id.
    let mut nodes = ids.clone();
    let sharer = share.dht_addr.expect("the share's DHT node").to_string();
    nodes.insert(sharer, None);
    let senders = lt.senders();
    one_id_per_sender(&senders, &nodes, 0).expect("one id per node");
    one_id_per_address(&lt.routing(), &known_ids(&nodes, &senders)).expect("filed under its id");
    share.shutdown().await;
}

/// (c) A network of libtorrent nodes only: a peer shares through it as a read-only DHT client,
/// and `search --dht` finds its file and `get --dht` downloads it through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_get_work_through_libtorrent_nodes_only() {
    if skip("search_and_get_work_through_libtorrent_nodes_only") {
        return;
    }
    let mut lt = LtNet::start("search_and_get_work_through_libtorrent_nodes_only", 6);
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("share");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let body = data(300_000, 81);
    std::fs::write(dir.join("Quasar Field Notes.pdf"), &body).expect("write");
    let id = ContentId::from(blake3::hash(&body));
    let share = dht_share(
        &dir,
        &t.path().join("state"),
        dht_config(lt.addrs(), false),
        None,
    )
    .await;
    let me = share.local_addr.to_string();
    // libtorrent nodes hold the announcements (there are no other nodes to hold them).
    assert!(
        lt.announced(&content_key(&id)).contains(&me),
        "a libtorrent node stored the content key's announcement"
    );
    assert!(lt.announced(&keyword_key("quasar")).contains(&me));

    let mut args: Vec<String> = ["search", "quasar", "--dht", "--json"]
        .map(String::from)
        .to_vec();
    for b in lt.addrs() {
        args.push("--bootstrap".into());
        args.push(b);
    }
    let home = t.path().join("client");
    let (a, h) = (args.clone(), home.clone());
    let out = tokio::task::spawn_blocking(move || {
        run_peershare(&a.iter().map(String::as_str).collect::<Vec<_>>(), &h)
    })
    .await
    .expect("search");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "search --dht failed: {stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("search --json");
    let files = doc["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{doc:#}");
    assert_eq!(files[0]["name"], "Quasar Field Notes.pdf");
    assert_eq!(files[0]["content_id"], id.to_hex());

    let dest = t.path().join("out");
    let mut args: Vec<String> = vec!["get".into(), "--dht".into(), id.to_hex()];
    for b in lt.addrs() {
        args.push("--bootstrap".into());
        args.push(b);
    }
    args.push("-o".into());
    args.push(dest.to_string_lossy().into_owned());
    let out = tokio::task::spawn_blocking(move || {
        run_peershare(&args.iter().map(String::as_str).collect::<Vec<_>>(), &home)
    })
    .await
    .expect("get");
    assert!(
        out.status.success(),
        "get --dht failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(b3sum(&dest.join("Quasar Field Notes.pdf")), id.to_hex());

    // The two commands' read-only clients are kept out of libtorrent's routing tables (BEP 43
    // "ro"). The sharing peer's node is read-only too, but libtorrent files any node whose
    // announce_peer carried a valid token (the token proves its address): it must be filed
    // under one id, the one its node uses for every message.
    let sharer = share.dht_addr.expect("the share's DHT node").to_string();
    let theirs: HashSet<String> = lt.addrs().into_iter().collect();
    let tables = lt.routing();
    for (i, table) in tables.iter().enumerate() {
        for (id, addr) in table {
            assert!(
                theirs.contains(addr) || *addr == sharer,
                "libtorrent node {i} holds {addr} (id {id}), a read-only client: {table:?}"
            );
        }
    }
    one_id_per_address(&tables, &HashMap::new()).expect("one id per node");
    // Every client sent its queries under one id, marked read-only.
    let senders = lt.senders();
    assert_eq!(
        senders.len(),
        3,
        "the share's node and two commands': {senders:?}"
    );
    let all = senders.keys().map(|a| (a.clone(), None)).collect();
    one_id_per_sender(&senders, &all, 1).expect("one id per node, read-only");
    share.shutdown().await;
}
