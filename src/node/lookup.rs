//! Finding the sources of content ids: at the index in pipelined batches, through the DHT, or both.

use mainline::async_dht::AsyncDht;
use tokio::sync::mpsc;

use super::{GetError, GetEvent, GetOptions};
use crate::content::ContentId;
use crate::index::{IndexClient, IndexClientError};
use crate::protocol::{FileHit, Limits, PeerHit, SearchResults};
use crate::tls::Tls;

/// Ids looked up at the index per pipelined batch; downloads start after the first batch.
pub const LOOKUP_BATCH: usize = 256;

/// Where ids are looked up: an index (its address, and a connection to it while it works),
/// the DHT, or both.
pub struct Lookup {
    /// The index's `HOST:PORT`, for one new connection if the first one breaks.
    pub index: Option<String>,
    /// A connection to the index, if one is open.
    pub client: Option<IndexClient>,
    /// A DHT node to find more sources through.
    pub dht: Option<AsyncDht>,
}

impl Lookup {
    /// Looks every id up, in order, and sends each with its position: from the index in
    /// pipelined batches of [`LOOKUP_BATCH`], with the DHT's sources added when the DHT is on.
    /// A broken index connection is opened again once; after that the index is lost (told
    /// through `opts.events`).
    pub async fn run(
        mut self,
        ids: Vec<ContentId>,
        opts: &GetOptions,
        tx: mpsc::Sender<(usize, Result<FileHit, GetError>)>,
    ) {
        // Once the index is lost (after one new connection was tried), why.
        let mut lost: Option<String> = None;
        let mut reconnected = false;
        for (b, batch) in ids.chunks(LOOKUP_BATCH).enumerate() {
            let mut from_index: Vec<Option<Result<FileHit, GetError>>> = Vec::new();
            if let Some(c) = self.client.as_mut() {
                let mut found = lookup_many(c, batch).await;
                if let (Err(_), Some(addr), false) = (&found, &self.index, reconnected) {
                    // The connection broke: one new connection, and this batch again.
                    reconnected = true;
                    // The same index: the key it proved the first time.
                    let key = self.client.take().map(|c| c.server_key());
                    found =
                        match IndexClient::connect(addr, opts.tls.as_ref(), key, Limits::default())
                            .await
                        {
                            Ok(mut c) => {
                                let again = lookup_many(&mut c, batch).await;
                                self.client = Some(c);
                                again
                            }
                            Err(e) => Err(e),
                        };
                }
                match found {
                    Ok(found) => from_index = found.into_iter().map(Some).collect(),
                    Err(e) => {
                        let reason = crate::text::error_chain(&e);
                        if self.dht.is_some() {
                            opts.tell(GetEvent::IndexLost { reason: &reason });
                        }
                        self.client = None;
                        lost = Some(format!("index lookup failed: {reason}"));
                    }
                }
            }
            from_index.resize_with(batch.len(), || None);
            for (k, (&id, found)) in batch.iter().zip(from_index).enumerate() {
                let hit = match (&self.dht, found) {
                    (Some(n), found) => {
                        let known = found.and_then(Result::ok);
                        Ok(add_dht_sources(n, id, known, opts.tls.as_ref()).await)
                    }
                    (None, Some(found)) => found,
                    (None, None) => Err(match &lost {
                        Some(reason) => GetError::IndexLost(reason.clone()),
                        None => GetError::NoIndex,
                    }),
                };
                let hit = hit.and_then(|h| match h.peers.is_empty() {
                    true => Err(GetError::NoSource(id)),
                    false => Ok(h),
                });
                if tx.send((b * LOOKUP_BATCH + k, hit)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The index's entries for many ids, looked up over one connection with requests pipelined;
/// the outer error is the connection's, an inner one says nobody shares that id.
pub async fn lookup_many(
    client: &mut IndexClient,
    ids: &[ContentId],
) -> Result<Vec<Result<FileHit, GetError>>, IndexClientError> {
    let queries: Vec<String> = ids.iter().map(ContentId::to_hex).collect();
    let replies = client.search_many(&queries, 1).await?;
    Ok(replies
        .into_iter()
        .zip(ids)
        .map(|(r, &id)| match r {
            Ok(r) => hit_for(r, id),
            Err(reply) => Err(GetError::Refused { id, reply }),
        })
        .collect())
}

/// The index's entry for `id` in a reply, with the live peers that have it.
fn hit_for(r: SearchResults, id: ContentId) -> Result<FileHit, GetError> {
    match r.files.into_iter().find(|f| f.content_id == id) {
        Some(hit) if !hit.peers.is_empty() => Ok(hit),
        _ => Err(GetError::NoSource(id)),
    }
}

/// Adds the live sources of `id` found through the DHT to `hit` (an index hit, or an empty one),
/// asking them as `tls` (fresh anonymous keys if `None`).
pub async fn add_dht_sources(
    node: &AsyncDht,
    id: ContentId,
    hit: Option<FileHit>,
    tls: Option<&Tls>,
) -> FileHit {
    let mut hit = hit.unwrap_or(FileHit {
        name: String::new(),
        size: 0,
        content_id: id,
        peers: Vec::new(),
    });
    for (addr, key) in crate::dht::find_sources(node, id, tls).await {
        let (host, port) = (addr.ip().to_string(), addr.port());
        if !hit.peers.iter().any(|p| p.host == host && p.port == port) {
            hit.peers.push(PeerHit {
                peer_id: 0,
                host,
                port,
                key: Some(key),
                shared_at: 0,
                last_seen: 0,
                have: None,
                path: None,
                reach: None,
            });
        }
    }
    hit
}
