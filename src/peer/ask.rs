//! Asking peers directly (found through the DHT or on the LAN, not listed by an index):
//! probing many at once, asking their catalogs or whether they have a file, and merging their
//! answers with an index's into one ranked list.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::{PeerClient, PeerClientError};
use crate::content::{ContentId, Digest};
use crate::protocol::{
    CatalogQuery, CatalogResults, FileHit, Limits, PeerHit, SearchResults, feature,
};
use crate::query::{Query, Row, group_and_rank, now_ms};
use crate::tls::Tls;

/// Peers asked at once when checking sources or querying catalogs.
pub const PROBES_AT_ONCE: usize = 16;

/// One peer's answer to a catalog query: its address, the key it proved, its matches.
pub type Answer = (SocketAddr, (Digest, CatalogResults));

/// Where a peer that the index did not list was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The Mainline DHT.
    Dht,
    /// Its own announcement on the local network.
    Lan,
}

/// Time limits of one probe's connection.
pub fn probe_limits() -> Limits {
    Limits {
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
    }
}

/// Runs `probe` on every item, at most `at_once` at a time; keeps the answers (in the order
/// they came).
pub async fn probe_all<A, T: Send + 'static, F, Fut>(
    items: Vec<A>,
    at_once: usize,
    probe: F,
) -> Vec<T>
where
    F: Fn(A) -> Fut,
    Fut: std::future::Future<Output = Option<T>> + Send + 'static,
{
    let mut out = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = items.into_iter();
    loop {
        while tasks.len() < at_once.max(1) {
            let Some(a) = pending.next() else { break };
            tasks.spawn(probe(a));
        }
        match tasks.join_next().await {
            None => return out,
            Some(Ok(Some(x))) => out.push(x),
            Some(_) => {}
        }
    }
}

/// Asks the peer at `addr` (as `tls`, or a fresh anonymous key), requiring it to hold `expect`
/// when given, which of its files match `query`; the key it proved and its answer.
pub async fn ask_catalog(
    addr: SocketAddr,
    expect: Option<Digest>,
    query: CatalogQuery,
    tls: Option<&Tls>,
) -> Result<(Digest, CatalogResults), PeerClientError> {
    let mut c = PeerClient::connect(&addr.to_string(), tls, expect, probe_limits()).await?;
    let found = c.catalog_query(query).await?;
    Ok((c.key(), found))
}

/// Asks the peer at `addr` (as `tls`, or a fresh anonymous key), requiring it to hold `expect`
/// when given, whether it has the file `id`; the key it proved when it has.
pub async fn ask_have(
    addr: SocketAddr,
    expect: Option<Digest>,
    id: ContentId,
    tls: Option<&Tls>,
) -> Result<Digest, PeerClientError> {
    let mut c = PeerClient::connect(&addr.to_string(), tls, expect, probe_limits()).await?;
    match c.supports(feature::HAVE) {
        true => c.have(id).await.map(|_| ())?,
        // An older peer: it has the file if it can tell about it.
        false => c.info(id).await.map(|_| ())?,
    }
    Ok(c.key())
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
    /// It announced itself on the LAN (and answered).
    pub via_lan: bool,
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

/// Merges index results and DHT catalog answers into one list (see [`merge_answers`]).
pub fn merge_results(
    index: Option<&SearchResults>,
    dht: &[Answer],
    query: &str,
    limit: usize,
) -> (Vec<DhtFile>, bool, u64) {
    merge_answers(index, &[(Origin::Dht, dht)], query, limit)
}

/// Merges index results and peers' catalog answers (found through the DHT, the LAN or both)
/// into one list, one entry per content id and one per peer address (an index peer found
/// another way too is listed once, with its peer id), ranked as the index ranks. Peers the
/// index did not list have peer id 0.
pub fn merge_answers(
    index: Option<&SearchResults>,
    answers: &[(Origin, &[Answer])],
    query: &str,
    limit: usize,
) -> (Vec<DhtFile>, bool, u64) {
    let q = Query::parse(query);
    let now = now_ms();
    let mut rows: Vec<Row<ContentId, PeerHit>> = Vec::new();
    // Per file and peer address: listed by the index, the DHT, the LAN.
    let mut via: HashMap<(ContentId, String), (bool, bool, bool)> = HashMap::new();
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
    for (addr, (peer_key, res), origin) in answers
        .iter()
        .flat_map(|(o, list)| list.iter().map(move |(a, r)| (a, r, *o)))
    {
        for e in &res.files {
            let key = (e.content_id, addr_of(&addr.ip().to_string(), addr.port()));
            let seen = via.entry(key).or_default();
            let listed = seen.0 || seen.1 || seen.2;
            match origin {
                Origin::Dht => seen.1 = true,
                Origin::Lan => seen.2 = true,
            }
            if listed {
                continue; // already listed (from the index, with its peer id)
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
    let truncated = cut
        || index.is_some_and(|r| r.truncated)
        || answers
            .iter()
            .any(|(_, list)| list.iter().any(|(_, (_, r))| r.truncated));
    let files = files
        .into_iter()
        .map(|f| DhtFile {
            peers: f
                .peers
                .into_iter()
                .map(|mut p| {
                    let (via_index, via_dht, via_lan) = via
                        .get(&(f.content_id, addr_of(&p.host, p.port)))
                        .copied()
                        .unwrap_or((false, false, false));
                    if p.peer_id > u64::MAX - 1_000_000 {
                        p.peer_id = 0;
                    }
                    DhtPeer {
                        peer: p,
                        via_index,
                        via_dht,
                        via_lan,
                    }
                })
                .collect(),
            name: f.name,
            size: f.size,
            content_id: f.content_id,
        })
        .collect();
    // The index counted its matches; the other peers add theirs (merged, so at least both).
    let total = (total as u64).max(index.map_or(0, |r| r.total));
    (files, truncated, total)
}
