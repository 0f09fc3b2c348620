//! Prometheus metrics: `peershare index --metrics` scraped as Prometheus would (and parsed by a
//! strict reader of the text format), hostile HTTP clients of the metrics listener, and the
//! node's counters moved by a real download.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use peershare::content::{ContentId, PIECE_SIZE};
use peershare::download::{Downloader, Source};
use peershare::index::{IndexClient, IndexConfig, IndexServer, IndexStore};
use peershare::metrics::http::{HEAD_TIMEOUT, MAX_CONNECTIONS};
use peershare::node::{GetOptions, download_all};
use peershare::protocol::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_peershare");

// ---- A strict reader of the Prometheus text format (0.0.4) ----

/// Series (`name{a="x",b="y"}`, labels sorted) and their values, after checking the whole text
/// against the format: `# HELP` and `# TYPE` once per family and before its samples, a family's
/// samples together, names and label names well formed, label values escaped, values numbers,
/// no series twice, counters named `*_total`, histograms' buckets cumulative up to `+Inf`,
/// which equals `_count`.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeMap::new();
    // Histogram checks: (family, labels without le) -> [(le, count)], and _count values.
    let mut buckets: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        assert!(!line.is_empty(), "{at}: empty line");
        if let Some(rest) = line.strip_prefix("# ") {
            let (kw, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            match kw {
                "HELP" => {
                    assert!(valid_name(name), "{at}: bad name");
                    assert!(helped.insert(name.into()), "{at}: HELP twice");
                    unescape(arg, false).unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                "TYPE" => {
                    assert!(valid_name(name), "{at}: bad name");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                        "{at}: bad type"
                    );
                    assert!(!types.contains_key(name), "{at}: TYPE twice");
                    if arg == "counter" {
                        assert!(name.ends_with("_total"), "{at}: a counter is named *_total");
                    }
                    types.insert(name.into(), arg.into());
                }
                _ => {} // a comment
            }
            if kw == "HELP" || kw == "TYPE" {
                assert!(!finished.contains(name), "{at}: {name} again, after others");
                if let Some(c) = current.replace(name.to_string())
                    && c != name
                {
                    finished.insert(c);
                }
            }
            continue;
        }
        let (name, labels, value) = split_sample(line).unwrap_or_else(|e| panic!("{at}: {e}"));
        let family = family_of(&name, &types);
        let kind = types.get(&family).map(String::as_str).unwrap_or("untyped");
        assert!(
            types.contains_key(&family),
            "{at}: a sample before its TYPE"
        );
        assert_eq!(
            current.as_deref(),
            Some(family.as_str()),
            "{at}: a sample away from its family's TYPE and samples"
        );
        if kind != "histogram" {
            assert_eq!(name, family, "{at}: only histograms have suffixes");
        }
        let mut sorted = labels.clone();
        sorted.sort();
        let key = |ls: &[(String, String)]| {
            let inner: Vec<String> = ls.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            match inner.is_empty() {
                true => name.clone(),
                false => format!("{name}{{{}}}", inner.join(",")),
            }
        };
        assert!(
            series.insert(key(&sorted), value).is_none(),
            "{at}: a series twice"
        );
        if kind == "histogram" {
            let rest: Vec<_> = sorted.iter().filter(|(k, _)| k != "le").cloned().collect();
            let id = (family.clone(), format!("{rest:?}"));
            if name.ends_with("_bucket") {
                let le = sorted
                    .iter()
                    .find(|(k, _)| k == "le")
                    .unwrap_or_else(|| panic!("{at}: a bucket without le"));
                let le = parse_value(&le.1).unwrap_or_else(|| panic!("{at}: bad le"));
                buckets.entry(id).or_default().push((le, value));
            } else if name.ends_with("_count") {
                counts.insert(id, value);
            }
        }
    }
    for (id, bs) in &buckets {
        assert!(
            bs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{id:?}: buckets ascending and cumulative: {bs:?}"
        );
        let last = bs.last().expect("a bucket");
        assert_eq!(last.0, f64::INFINITY, "{id:?}: the last bucket is +Inf");
        assert_eq!(Some(&last.1), counts.get(id), "{id:?}: +Inf equals _count");
    }
    series
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Undoes the escapes of HELP text (`\\`, `\n`) or of a label value (also `\"`).
fn unescape(s: &str, label: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('"') if label => out.push('"'),
                other => return Err(format!("bad escape \\{other:?}")),
            },
            '"' if label => return Err("unescaped quote".into()),
            '\n' => return Err("raw newline".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

type Sample = (String, Vec<(String, String)>, f64);

/// `name{labels} value` (no timestamps: we never send them).
fn split_sample(line: &str) -> Result<Sample, String> {
    let end = line.find(['{', ' ']).ok_or("no value after the name")?;
    let name = &line[..end];
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            if let Some(after) = r.strip_prefix('}') {
                r = after;
                break;
            }
            let eq = r.find('=').ok_or("label without =")?;
            let key = &r[..eq];
            if !valid_label(key) {
                return Err(format!("bad label name {key:?}"));
            }
            let body = r[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            // The value ends at the first quote not escaped.
            let mut close = None;
            let mut escaped = false;
            for (i, c) in body.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let close = close.ok_or("label value not closed")?;
            if labels.iter().any(|(k, _): &(String, String)| k == key) {
                return Err(format!("label {key} twice"));
            }
            labels.push((key.to_string(), unescape(&body[..close], true)?));
            r = &body[close + 1..];
            r = r.strip_prefix(',').unwrap_or(r);
        }
        rest = r;
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = parse_value(value).ok_or_else(|| format!("bad value {value:?}"))?;
    Ok((name.to_string(), labels, value))
}

/// The family a sample belongs to: its name, or a histogram's name without the suffix.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base.to_string();
        }
    }
    name.to_string()
}

#[test]
fn the_strict_reader_refuses_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n";
    let s = parse_exposition(ok);
    assert_eq!(s["a_total{x=\"q\\\"\\\\\\n\"}"], 1.0);
    for bad in [
        "# TYPE a_total counter\na_total 1",          // no final newline
        "a 1\n",                                      // no TYPE
        "# TYPE a counter\na 1\n",                    // counter not *_total
        "# TYPE a gauge\na{x=\"\"\"} 1\n",            // unescaped quote
        "# TYPE a gauge\na{x=\"\\q\"} 1\n",           // bad escape
        "# TYPE a gauge\na 1\na 2\n",                 // a series twice
        "# TYPE a gauge\na one\n",                    // not a number
        "# TYPE a gauge\n# TYPE b gauge\nb 1\na 1\n", // a sample after another TYPE
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
    ] {
        let r = std::panic::catch_unwind(|| parse_exposition(bad));
        assert!(r.is_err(), "accepted {bad:?}");
    }
}

// ---- HTTP as a scraper and as an attacker ----

/// Sends `request` as is and reads until the server closes (at most 15 s): the status code
/// and the whole response.
async fn http(addr: &str, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before reading all of a large request.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server closes the connection");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `GET /metrics`: the body, after checking the status and the content type.
async fn scrape(addr: &str) -> String {
    let (status, text) = http(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    body.to_string()
}

fn value(series: &BTreeMap<String, f64>, key: &str) -> f64 {
    *series
        .get(key)
        .unwrap_or_else(|| panic!("no series {key}; have {:?}", series.keys()))
}

/// An index in this process with its metrics served on another loopback port.
async fn index_with_metrics(db: &Path) -> (String, String, CancellationToken) {
    let store = IndexStore::open(db).expect("open store");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = CancellationToken::new();
    let server = IndexServer::new(store, IndexConfig::default(), index_tls(db));
    let source = server.metrics();
    let m = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let maddr = m.local_addr().expect("addr").to_string();
    let render: peershare::metrics::http::Render = Arc::new(move || source.render());
    tokio::spawn(peershare::metrics::http::serve(m, render, stop.clone()));
    tokio::spawn(server.run(listener, stop.clone()));
    (addr, maddr, stop)
}

#[tokio::test]
async fn the_metrics_listener_answers_only_get_and_head_of_metrics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_ix, m, stop) = index_with_metrics(&tmp.path().join("i.sqlite")).await;
    parse_exposition(&scrape(&m).await);
    let (status, text) = http(&m, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(text.ends_with("\r\n\r\n"), "HEAD has no body: {text}");
    // A query string does not change the path.
    let (status, _) = http(&m, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let req = format!("{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let (status, text) = http(&m, req.as_bytes()).await;
        assert_eq!(status, 405, "{method}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("allow: get, head"),
            "{text}"
        );
    }
    for path in [
        "/",
        "/metrics/",
        "/metricsx",
        "/api/v1/status",
        "/../metrics",
        "/%6detrics",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (status, _) = http(&m, req.as_bytes()).await;
        assert_eq!(status, 404, "{path}");
    }
    // Not HTTP at all: a 400 or a close, and the listener goes on.
    let (status, _) = http(&m, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n").await;
    assert!(status == 400 || status == 0, "{status}");
    parse_exposition(&scrape(&m).await);
    stop.cancel();
}

#[tokio::test]
async fn connections_closed_by_errors_are_counted_by_kind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ix, m, stop) = index_with_metrics(&tmp.path().join("i.sqlite")).await;
    let errors = |s: &BTreeMap<String, f64>, kind: &str| {
        value(
            s,
            &format!("peershare_index_errors_total{{kind=\"{kind}\"}}"),
        )
    };
    let before = parse_exposition(&scrape(&m).await);
    assert_eq!(errors(&before, "tls"), 0.0);
    assert_eq!(errors(&before, "bad_frame"), 0.0);
    // Not TLS: plain bytes where a ClientHello belongs.
    let mut plain = TcpStream::connect(&ix).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut sink)).await;
    // TLS, then a frame of an unknown tag instead of Hello.
    let mut tls = raw_secure(&ix).await;
    tls.write_all(&[0, 0, 0, 1, 0xEE]).await.expect("write");
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut sink)).await;
    let counted = eventually(Duration::from_secs(5), || async {
        let s = parse_exposition(&scrape(&m).await);
        (errors(&s, "tls") == 1.0 && errors(&s, "bad_frame") == 1.0).then_some(s)
    })
    .await;
    assert!(counted.is_some(), "one tls and one bad_frame error counted");
    stop.cancel();
}

#[tokio::test]
async fn huge_requests_are_refused_without_being_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_ix, m, stop) = index_with_metrics(&tmp.path().join("i.sqlite")).await;
    // A head over the limit: refused (431) or closed, never buffered whole.
    let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..2000 {
        req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(100)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let (status, text) = http(&m, &req).await;
    assert!(status == 431 || status == 0, "{status}: {text}");
    // A body announced as 10 GB is never read: the answer comes at once.
    let started = Instant::now();
    let (status, _) = http(
        &m,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\nabc",
    )
    .await;
    assert_eq!(status, 405);
    let (status, _) = http(
        &m,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\nabc",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered without waiting for the body"
    );
    parse_exposition(&scrape(&m).await);
    stop.cancel();
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_hold_a_bounded_number_of_places() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_ix, m, stop) = index_with_metrics(&tmp.path().join("i.sqlite")).await;
    // One client dribbles a request head and stops: closed once the head's time is up, and
    // others are served meanwhile.
    let mut slow = TcpStream::connect(&m).await.expect("connect");
    slow.write_all(b"GET /metr").await.expect("write");
    let started = Instant::now();
    parse_exposition(&scrape(&m).await);
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(HEAD_TIMEOUT + Duration::from_secs(5), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408, then the close
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a slow client is closed");
    assert!(
        started.elapsed() >= HEAD_TIMEOUT - Duration::from_millis(500),
        "not before its time: {:?}",
        started.elapsed()
    );
    // Idle connections fill every place: the next is closed at once, unanswered...
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(TcpStream::connect(&m).await.expect("connect"));
    }
    // (each is accepted in turn: a probe may be served before the last has its place)
    let refused = eventually(Duration::from_secs(5), || async {
        let (status, _) = http(&m, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        (status == 0).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "closed unanswered while every place is held"
    );
    // ...and once they go, scrapes are served again.
    drop(idle);
    let served = eventually(Duration::from_secs(5), || async {
        let (status, _) = http(&m, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        (status == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "served again once the idle clients left");
    stop.cancel();
}

// ---- The real binary ----

impl Running {
    /// `peershare` with `args`, its stdout and stderr lines collected.
    fn start(args: &[&str], home: &Path) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("PEERSHARE_HOME", home)
            .env_remove("PEERSHARE_INDEX");
        Running::spawn_lines(cmd, None, Lines::Both)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_metrics_count_what_peers_and_clients_did() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ihome, phome, chome) = (
        tmp.path().join("ih"),
        tmp.path().join("ph"),
        tmp.path().join("ch"),
    );
    let mut index = Running::start(
        &[
            "index",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
        &ihome,
    );
    let ix = index.word("listening on", "127.0.0.1:");
    let url = index.word("metrics at", "http://");
    let m = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .expect("http://ADDR/metrics")
        .to_string();
    assert!(
        !index.seen.iter().any(|l| l.contains("warning")),
        "no warning on loopback: {:?}",
        index.seen
    );
    let before = parse_exposition(&scrape(&m).await);
    assert_eq!(value(&before, "peershare_index_rows"), 0.0);
    assert_eq!(value(&before, "peershare_index_relay_bytes_total"), 0.0);
    assert_eq!(
        value(
            &before,
            "peershare_index_registrations_total{outcome=\"accepted\"}"
        ),
        0.0
    );

    // A peer shares three files; a client searches by words and by content id.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    for (name, seed) in [("alpha.txt", 1), ("beta.txt", 2), ("gamma.bin", 3)] {
        std::fs::write(shared.join(name), data(1000 + seed as usize, seed)).expect("write");
    }
    let alpha = ContentId::from(blake3::hash(&data(1001, 1))).to_hex();
    let mut peer = Running::start(
        &[
            "share",
            shared.to_str().expect("utf-8"),
            "--index",
            &ix,
            "--listen",
            "127.0.0.1:0",
        ],
        &phome,
    );
    peer.wait_line("registered with index");
    let out = run_peershare(&["search", "alpha", "--index", &ix], &chome);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("alpha.txt"));
    let out = run_peershare(&["search", &alpha, "--index", &ix], &chome);
    assert!(out.status.success(), "{out:?}");
    // A refused search: a query over the 1024-byte limit, sent as a client might.
    let mut client = IndexClient::connect(&ix, None, None, Limits::default())
        .await
        .expect("connect");
    assert!(client.search(&"x".repeat(2000), 10).await.is_err());
    drop(client);

    let after = parse_exposition(&scrape(&m).await);
    let v = |k: &str| value(&after, k);
    assert_eq!(v("peershare_index_rows"), 3.0);
    assert_eq!(v("peershare_index_files"), 3.0);
    assert_eq!(v("peershare_index_peers_live"), 1.0);
    assert_eq!(v("peershare_index_peers_known"), 1.0);
    assert_eq!(
        v("peershare_index_registrations_total{outcome=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        v("peershare_index_registrations_total{outcome=\"refused\"}"),
        0.0
    );
    assert_eq!(
        v("peershare_index_requests_total{request=\"register\"}"),
        1.0
    );
    assert!(v("peershare_index_requests_total{request=\"update_files\"}") >= 1.0);
    let words = v("peershare_index_searches_total{outcome=\"answered\"}")
        + v("peershare_index_searches_total{outcome=\"cached\"}");
    assert_eq!(words, 1.0, "one search by words answered");
    assert_eq!(
        v("peershare_index_searches_total{outcome=\"refused\"}"),
        1.0
    );
    let lookups = v("peershare_index_lookups_total{outcome=\"answered\"}")
        + v("peershare_index_lookups_total{outcome=\"cached\"}");
    assert_eq!(lookups, 1.0, "one lookup by content id answered");
    assert_eq!(v("peershare_index_requests_total{request=\"search\"}"), 3.0);
    assert_eq!(
        v("peershare_index_search_duration_seconds_count{query=\"words\"}"),
        1.0,
        "refused searches are not timed"
    );
    assert_eq!(
        v("peershare_index_search_duration_seconds_count{query=\"content_id\"}"),
        1.0
    );
    assert!(v("peershare_index_search_duration_seconds_sum{query=\"words\"}") > 0.0);
    assert_eq!(v("peershare_index_errors_total{kind=\"bad_request\"}"), 1.0);
    // The peer's connection, the three clients' (two searches, the refused one) at least.
    assert!(v("peershare_index_connections_total") >= 4.0);
    assert!(v("peershare_index_connections_open") >= 1.0, "the peer's");
    assert_eq!(v("peershare_index_connections_refused_total"), 0.0);

    // The peer leaves cleanly (SIGINT): it unregisters.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(peer.child.id() as i32, libc::SIGINT) };
    let _ = peer.child.wait();
    let gone = eventually(Duration::from_secs(10), || async {
        let s = parse_exposition(&scrape(&m).await);
        (value(&s, "peershare_index_peers_live") == 0.0).then_some(s)
    })
    .await
    .expect("the peer is no longer live");
    assert_eq!(value(&gone, "peershare_index_unregistrations_total"), 1.0);
    assert_eq!(
        value(&gone, "peershare_index_peers_known"),
        1.0,
        "remembered"
    );
    drop(index);
}

#[test]
fn metrics_on_a_wildcard_address_warn() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut index = Running::start(
        &["index", "--listen", "127.0.0.1:0", "--metrics", "0.0.0.0:0"],
        home.path(),
    );
    index.wait_line("metrics at http://0.0.0.0:");
    let warning = index.seen_or_wait("warning");
    assert!(warning.contains("not a loopback address"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_metrics_count_pieces_served_downloaded_and_rejected() {
    let node = peershare::metrics::node();
    let tmp = tempfile::tempdir().expect("tempdir");
    let index = start_index(&tmp.path().join("i.sqlite"), Duration::from_secs(30)).await;
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    let bytes = data(3 * PIECE_SIZE as usize + 5, 7);
    std::fs::write(shared.join("three.bin"), &bytes).expect("write");
    let small = data(100, 8);
    std::fs::write(shared.join("small.txt"), &small).expect("write");
    let share = start_peer(&shared, Some(index.addr()), &tmp.path().join("ps")).await;

    let (served, pieces_served, verified, downloaded, started, finished) = (
        node.bytes_served.get(),
        node.pieces_served.get(),
        node.pieces_verified.get(),
        node.bytes_downloaded.get(),
        node.downloads_started.get(),
        node.downloads_finished.get(),
    );
    let mut client = IndexClient::connect(&index.addr(), None, None, Limits::default())
        .await
        .expect("connect");
    let mut found = client.search("three", 10).await.expect("search").files;
    found.extend(client.search("small", 10).await.expect("search").files);
    assert_eq!(found.len(), 2);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let opts = GetOptions {
        tls: Some(client_tls()),
        ..GetOptions::default()
    };
    for r in download_all(&found, &out, &opts, 2).await {
        r.expect("downloaded");
    }
    let total = (bytes.len() + small.len()) as u64;
    assert_eq!(node.downloads_started.get() - started, 2);
    assert_eq!(node.downloads_finished.get() - finished, 2);
    assert_eq!(
        node.pieces_verified.get() - verified,
        5,
        "4 pieces and a small file"
    );
    assert_eq!(node.bytes_downloaded.get() - downloaded, total);
    // The sharing peer is in this process too: what it served is what was downloaded.
    assert_eq!(node.pieces_served.get() - pieces_served, 5);
    assert_eq!(node.bytes_served.get() - served, total);
    let text = peershare::metrics::node_text();
    let series = parse_exposition(&text);
    assert!(
        value(
            &series,
            "peershare_peer_uploads_total{outcome=\"complete\"}"
        ) >= 2.0
    );

    // A source whose piece 1 is corrupt: the piece is rejected, and counted.
    let rejected = node.pieces_rejected.get();
    let how = Behaviour {
        corrupt: Some(|i| i == 1),
        name: "bad.bin".into(),
        ..Behaviour::default()
    };
    let (bad, _) = fake_peer(bytes.clone(), how).await;
    let d = Downloader {
        window: 1,
        ..Downloader::default()
    };
    let source = Source {
        key: None,
        peer_id: Some(9),
        addr: bad,
    };
    let again = tmp.path().join("again");
    std::fs::create_dir(&again).expect("mkdir");
    let id = ContentId::from(blake3::hash(&bytes));
    assert!(d.download(id, &[source], &again, None).await.is_err());
    assert_eq!(node.pieces_rejected.get() - rejected, 1);
    let series = parse_exposition(&peershare::metrics::node_text());
    assert!(value(&series, "peershare_download_pieces_rejected_total") >= 1.0);
    drop(share);
    index.stop().await;
}
