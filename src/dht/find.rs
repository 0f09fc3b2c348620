//! Finding through the DHT: the live sources of a content id, and files by name via peers' catalogs.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use futures_lite::StreamExt;
use mainline::Id;
use mainline::async_dht::AsyncDht;
use serde::Serialize;

use super::keys::{KeySpace, keywords};
use crate::content::{ContentId, Digest};
use crate::peer::PeerClient;
use crate::protocol::{
    CatalogQuery, CatalogResults, FileHit, Limits, PeerHit, SearchResults, feature,
};
use crate::query::{Query, Row, group_and_rank, now_ms};
use crate::tls::Tls;

/// Longest a DHT lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Peers asked at once when checking sources or querying catalogs.
const PROBES_AT_ONCE: usize = 16;
/// Most keywords of a query looked up.
const MAX_QUERY_KEYWORDS: usize = 8;

fn probe_limits() -> Limits {
    Limits {
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
    }
}

/// Bounds of how long answers are still collected after the first peers came: as long as the
/// first peers took to come, at least the first bound and at most the second. The nodes
/// holding a key are reached within a round trip or two of each other, each answering with
/// the peers it holds (up to 50); waiting for the lookup to end instead costs a request
/// timeout per dead node it met.
pub const VALUES_GRACE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// Every peer announced under `key`, each once (the DHT returns duplicates): the peers in the
/// answers until the lookup ends, or until a grace period ([`VALUES_GRACE`]) after the first
/// peers came.
async fn peers_under(dht: &AsyncDht, key: Id) -> HashSet<SocketAddrV4> {
    let mut found = HashSet::new();
    let mut stream = dht.get_peers(key);
    let start = tokio::time::Instant::now();
    let deadline = start + LOOKUP_TIMEOUT;
    let mut until = deadline;
    while let Ok(Some(batch)) = tokio::time::timeout_at(until, stream.next()).await {
        if found.is_empty() && !batch.is_empty() {
            let grace = start.elapsed().clamp(VALUES_GRACE.0, VALUES_GRACE.1);
            until = (tokio::time::Instant::now() + grace).min(deadline);
        }
        found.extend(batch);
    }
    found
}

/// Runs `probe` on every address, at most [`PROBES_AT_ONCE`] at a time; keeps the answers.
async fn probe_all<T: Send + 'static, F, Fut>(
    addrs: Vec<SocketAddrV4>,
    probe: F,
) -> Vec<(SocketAddr, T)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Option<T>> + Send + 'static,
{
    let mut out = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = addrs.into_iter();
    loop {
        while tasks.len() < PROBES_AT_ONCE {
            let Some(a) = pending.next() else { break };
            let fut = probe(a.to_string());
            tasks.spawn(async move { fut.await.map(|t| (SocketAddr::V4(a), t)) });
        }
        match tasks.join_next().await {
            None => return out,
            Some(Ok(Some(x))) => out.push(x),
            Some(_) => {}
        }
    }
}

/// The key space of the group `tls` is a member of (public outside a group); `None` for a
/// member without the group's secret, who must not look its words up in public.
fn key_space(tls: Option<&Tls>) -> Option<KeySpace> {
    match tls.and_then(|t| t.group()) {
        None => Some(KeySpace::public()),
        Some(g) => g.dht_secret().map(KeySpace::group),
    }
}

/// The peers announced for `id` that answer the peer protocol and have the file, each once,
/// with the key each proved (connecting as `tls`, or as fresh anonymous keys).
pub async fn find_sources(
    dht: &AsyncDht,
    id: ContentId,
    tls: Option<&Tls>,
) -> Vec<(SocketAddr, Digest)> {
    let Some(space) = key_space(tls) else {
        return Vec::new();
    };
    let tls = tls.cloned();
    let candidates: Vec<SocketAddrV4> = peers_under(dht, space.content(&id))
        .await
        .into_iter()
        .collect();
    let mut alive: Vec<(SocketAddr, Digest)> = probe_all(candidates, move |addr| {
        let tls = tls.clone();
        async move {
            let mut c = PeerClient::connect(&addr, tls.as_ref(), None, probe_limits())
                .await
                .ok()?;
            match c.supports(feature::HAVE) {
                true => c.have(id).await.ok().map(|_| c.key()),
                // An older peer: it has the file if it can tell about it.
                false => c.info(id).await.ok().map(|_| c.key()),
            }
        }
    })
    .await;
    alive.sort();
    alive
}

/// Asks the DHT for peers announcing the query's keywords (a content id: its sources), then
/// asks those peers directly which of their files match the query and its filters. Peers
/// that do not answer are left out.
pub async fn find_files(
    dht: &AsyncDht,
    query: &CatalogQuery,
    tls: Option<&Tls>,
) -> Vec<(SocketAddr, (Digest, CatalogResults))> {
    let Some(space) = key_space(tls) else {
        return Vec::new();
    };
    let tls = tls.cloned();
    let candidates: HashSet<SocketAddrV4> = match Query::<ContentId>::parse(&query.query) {
        Query::Id(id) => peers_under(dht, space.content(&id)).await,
        Query::Words { words, .. } => {
            // Only the words to find have keys (excluded words and filters are for the peers).
            let words = keywords(&words.join(" "));
            // All at once: a lookup's time is mostly waiting.
            let mut lookups = tokio::task::JoinSet::new();
            for w in words.iter().take(MAX_QUERY_KEYWORDS) {
                let (dht, key) = (dht.clone(), space.keyword(w));
                lookups.spawn(async move { peers_under(&dht, key).await });
            }
            let sets: Vec<HashSet<SocketAddrV4>> = lookups.join_all().await.into_iter().collect();
            // A peer must have announced every keyword (in some file) to be worth asking.
            let mut it = sets.into_iter();
            let first = it.next().unwrap_or_default();
            it.fold(first, |acc, s| acc.intersection(&s).copied().collect())
        }
    };
    let q = query.clone();
    probe_all(candidates.into_iter().collect(), move |addr| {
        let (q, tls) = (q.clone(), tls.clone());
        async move {
            let mut c = PeerClient::connect(&addr, tls.as_ref(), None, probe_limits())
                .await
                .ok()?;
            let found = c.catalog_query(q).await.ok()?;
            Some((c.key(), found))
        }
    })
    .await
}

/// A peer in merged results, with where it was found.
#[derive(Debug, Clone, Serialize)]
pub struct DhtPeer {
    /// The peer, as the index or the DHT told it.
    pub peer: PeerHit,
    /// The index listed it.
    pub via_index: bool,
    /// The DHT listed it (and it answered).
    pub via_dht: bool,
}

/// A file in merged results.
#[derive(Debug, Clone, Serialize)]
pub struct DhtFile {
    /// The file's name (from the index, else from a peer's catalog).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its content id.
    pub content_id: ContentId,
    /// Where it is, from either source.
    pub peers: Vec<DhtPeer>,
}

/// Merges index results and DHT catalog answers into one list, one entry per content id and
/// one per peer address (an index peer found through the DHT too is listed once, with its
/// peer id), ranked as the index ranks. DHT-only peers have peer id 0.
pub fn merge_results(
    index: Option<&SearchResults>,
    dht: &[(SocketAddr, (Digest, CatalogResults))],
    query: &str,
    limit: usize,
) -> (Vec<DhtFile>, bool, u64) {
    let q = Query::parse(query);
    let now = now_ms();
    let mut rows: Vec<Row<ContentId, PeerHit>> = Vec::new();
    let mut via: HashMap<(ContentId, String), (bool, bool)> = HashMap::new();
    let addr_of = |host: &str, port: u16| format!("{host}:{port}");
    if let Some(r) = index {
        for f in &r.files {
            for p in &f.peers {
                via.entry((f.content_id, addr_of(&p.host, p.port)))
                    .or_default()
                    .0 = true;
                rows.push(Row {
                    content_id: f.content_id,
                    // The name this peer has it under, so ranking sees each copy's own.
                    name: p
                        .path
                        .as_deref()
                        .and_then(|path| path.rsplit('/').next())
                        .unwrap_or(&f.name)
                        .to_string(),
                    size: f.size,
                    peer: p.clone(),
                });
            }
        }
    }
    for (addr, (peer_key, res)) in dht {
        for e in &res.files {
            let key = (e.content_id, addr_of(&addr.ip().to_string(), addr.port()));
            let seen = via.entry(key).or_default();
            seen.1 = true;
            if seen.0 {
                continue; // already listed from the index, with its peer id
            }
            rows.push(Row {
                content_id: e.content_id,
                name: e.name.clone(),
                size: e.size,
                peer: PeerHit {
                    peer_id: 0,
                    host: addr.ip().to_string(),
                    port: addr.port(),
                    key: Some(*peer_key),
                    shared_at: now,
                    last_seen: now,
                    have: None,
                    path: e.path.clone(),
                    reach: None,
                },
            });
        }
    }
    // Peers without an index id are told apart by address, not by id 0.
    let mut synthetic: HashMap<String, u64> = HashMap::new();
    for r in rows.iter_mut().filter(|r| r.peer.peer_id == 0) {
        let n = synthetic.len() as u64;
        let id = *synthetic
            .entry(addr_of(&r.peer.host, r.peer.port))
            .or_insert(u64::MAX - n);
        r.peer.peer_id = id;
    }
    let (files, cut, total): (Vec<FileHit>, bool, usize) = group_and_rank(rows, &q, 0, limit);
    let truncated =
        cut || index.is_some_and(|r| r.truncated) || dht.iter().any(|(_, (_, r))| r.truncated);
    let files = files
        .into_iter()
        .map(|f| DhtFile {
            peers: f
                .peers
                .into_iter()
                .map(|mut p| {
                    let (via_index, via_dht) = via
                        .get(&(f.content_id, addr_of(&p.host, p.port)))
                        .copied()
                        .unwrap_or((false, false));
                    if p.peer_id > u64::MAX - 1_000_000 {
                        p.peer_id = 0;
                    }
                    DhtPeer {
                        peer: p,
                        via_index,
                        via_dht,
                    }
                })
                .collect(),
            name: f.name,
            size: f.size,
            content_id: f.content_id,
        })
        .collect();
    // The index counted its matches; the DHT's peers add theirs (merged, so at least both).
    let total = (total as u64).max(index.map_or(0, |r| r.total));
    (files, truncated, total)
}
