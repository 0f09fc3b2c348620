//! Finding through the DHT: the live sources of a content id, and files by name via peers' catalogs.

use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::keys::{KeySpace, keywords};
use crate::content::{ContentId, Digest};
use crate::peer::ask::{Answer, PROBES_AT_ONCE, ask_catalog, ask_have, probe_all};
use crate::protocol::CatalogQuery;
use crate::query::Query;
use crate::tls::Tls;
use futures_lite::StreamExt;
use mainline::Id;
use mainline::async_dht::AsyncDht;

/// Longest a DHT lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most keywords of a query looked up.
const MAX_QUERY_KEYWORDS: usize = 8;

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
    let mut alive: Vec<(SocketAddr, Digest)> = probe_all(candidates, PROBES_AT_ONCE, move |addr| {
        let tls = tls.clone();
        let addr = SocketAddr::V4(addr);
        async move {
            let key = ask_have(addr, None, id, tls.as_ref()).await.ok()?;
            Some((addr, key))
        }
    })
    .await;
    alive.sort();
    alive
}

/// Asks the DHT for peers announcing the query's keywords (a content id: its sources), then
/// asks those peers directly which of their files match the query and its filters. Peers
/// that do not answer are left out.
pub async fn find_files(dht: &AsyncDht, query: &CatalogQuery, tls: Option<&Tls>) -> Vec<Answer> {
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
    probe_all(
        candidates.into_iter().collect(),
        PROBES_AT_ONCE,
        move |addr| {
            let (q, tls) = (q.clone(), tls.clone());
            let addr = SocketAddr::V4(addr);
            async move {
                let found = ask_catalog(addr, None, q, tls.as_ref()).await.ok()?;
                Some((addr, found))
            }
        },
    )
    .await
}

pub use crate::peer::ask::{DhtFile, DhtPeer, merge_results};
