//! Searching: the API's search of the index, the DHT and the LAN (results marked when we have
//! them already), and the files a query item downloads.

use std::sync::Arc;

use super::{Live, NodeError, NodeHandle, SearchHit, SearchPage, lock};
use crate::index::IndexClient;
use crate::node::{FolderFile, HaveAlready};
use crate::protocol::{FileHit, MAX_SEARCH_LIMIT, Search};

/// Most files a query item downloads; more matching refuses the item.
pub const MAX_QUERY_FILES: usize = 10_000;

/// The longest query the API takes, in characters: at most 4 bytes each, so always within the
/// index's [`crate::protocol::MAX_QUERY_LEN`] bytes (the API document's `maxLength`).
pub const MAX_QUERY_CHARS: usize = crate::protocol::MAX_QUERY_LEN / 4;

impl NodeHandle {
    /// Searches the index and, when the node uses it, the DHT (one merged list, as
    /// `search --dht` shows): a page of results, each marked when we have it already.
    pub async fn search(
        &self,
        query: &str,
        offset: u32,
        limit: u32,
    ) -> Result<SearchPage, NodeError> {
        if blank(query) {
            return Err(NodeError::BadValue("the query is empty".into()));
        }
        if offset > crate::protocol::MAX_SEARCH_OFFSET {
            return Err(NodeError::BadValue(format!(
                "offset must be at most {}",
                crate::protocol::MAX_SEARCH_OFFSET
            )));
        }
        if limit == 0 || limit > MAX_SEARCH_LIMIT {
            return Err(NodeError::BadValue(format!(
                "limit must be 1..={MAX_SEARCH_LIMIT}"
            )));
        }
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(NodeError::BadValue(format!(
                "the query is longer than {MAX_QUERY_CHARS} characters"
            )));
        }
        let search = Search {
            query: query.to_string(),
            limit,
            offset,
            ..Search::default()
        };
        let from_index = match self.inner.index.is_some() {
            true => {
                let found = async {
                    let mut client = self.connect().await?;
                    client
                        .search_with(search.clone())
                        .await
                        .map_err(|e| NodeError::Index(crate::text::error_chain(&e)))
                }
                .await;
                match (found, self.inner.dht.is_some() || self.inner.lan.is_some()) {
                    (Ok(r), _) => Some(r),
                    // With the DHT or the LAN, an index that cannot be asked leaves their
                    // results.
                    (Err(e), true) => {
                        tracing::warn!("search: {e}; the DHT or the LAN only");
                        None
                    }
                    (Err(e), false) => return Err(e),
                }
            }
            false => None,
        };
        let lan_peers = self.inner.lan.as_ref().map(|w| w.peers());
        let (files, total, estimated) = match (&self.inner.dht, lan_peers) {
            (None, None) => match from_index {
                Some(r) => (r.files, r.total, r.estimated),
                None => return Err(NodeError::NoIndex),
            },
            (dht, lan_peers) => {
                let mut catalog = crate::protocol::CatalogQuery {
                    query: search.query.clone(),
                    limit,
                    offset,
                    ..Default::default()
                };
                catalog.set_filters(search.filters());
                let tls = self.inner.tls.as_ref();
                let from_dht = async {
                    match dht {
                        Some(dht) => crate::dht::find_files(dht, &catalog, tls).await,
                        None => Vec::new(),
                    }
                };
                let from_lan = async {
                    match &lan_peers {
                        Some(peers) => crate::lan::find_files(peers, &catalog, tls).await,
                        None => Vec::new(),
                    }
                };
                let (from_dht, from_lan) = tokio::join!(from_dht, from_lan);
                use crate::peer::ask::Origin;
                let (files, _, total) = crate::peer::ask::merge_answers(
                    from_index.as_ref(),
                    &[(Origin::Dht, &from_dht), (Origin::Lan, &from_lan)],
                    query,
                    limit as usize,
                );
                let estimated = from_index.as_ref().is_some_and(|r| r.estimated)
                    || from_dht
                        .iter()
                        .chain(&from_lan)
                        .any(|(_, (_, r))| r.truncated);
                let files: Vec<FileHit> = files
                    .into_iter()
                    .map(|f| FileHit {
                        name: f.name,
                        size: f.size,
                        content_id: f.content_id,
                        peers: f.peers.into_iter().map(|p| p.peer).collect(),
                    })
                    .collect();
                let total = total.max(u64::from(offset) + files.len() as u64);
                (files, total, estimated)
            }
        };
        // One look on disk for the whole page (it lists the directories once).
        let on_disk = self.have_already();
        let own = lock(&self.inner.share)
            .status
            .as_ref()
            .and_then(|s| s.peer_id);
        let mut results = Vec::with_capacity(files.len());
        for f in files {
            let have = own.is_some_and(|me| f.peers.iter().any(|p| p.peer_id == me))
                || self.have(&f, &on_disk).await;
            let mut paths: Vec<String> = Vec::new();
            for p in f.peers.iter().filter_map(|p| p.path.clone()) {
                if paths.len() < 8 && !paths.contains(&p) {
                    paths.push(p);
                }
            }
            let mut live = Live::default();
            live.add_sources(&f);
            results.push(SearchHit {
                content_id: f.content_id.to_hex(),
                name: f.name,
                size: f.size,
                paths,
                sources: live.sources,
                have,
            });
        }
        Ok(SearchPage {
            results,
            total,
            estimated,
        })
    }

    /// Whether the file is downloaded already: done in the queue, or found on disk.
    async fn have(&self, f: &FileHit, on_disk: &Arc<HaveAlready>) -> bool {
        if self.inner.queue.has_done(&f.content_id).unwrap_or(false) {
            return true;
        }
        let (have, id, size, out) = (
            on_disk.clone(),
            f.content_id,
            f.size,
            self.inner.output.clone(),
        );
        tokio::task::spawn_blocking(move || have.find(&id, size, &out).is_some())
            .await
            .unwrap_or(false)
    }
}

/// Every file matching `query` at the index, at the path its first source keeps it under (as
/// `get --query` does); refused past [`MAX_QUERY_FILES`] or when none does.
pub(super) async fn matching(
    client: &mut IndexClient,
    query: &str,
) -> Result<Vec<FolderFile>, NodeError> {
    let search = Search {
        query: query.to_string(),
        ..Search::default()
    };
    crate::node::matching_files(client, search, MAX_QUERY_FILES)
        .await
        .map_err(|e| match e {
            crate::node::MatchError::Index(e) => NodeError::Index(crate::text::error_chain(&e)),
            e @ crate::node::MatchError::TooMany { .. } => {
                NodeError::BadValue(format!("{e}; narrow the query"))
            }
            e @ crate::node::MatchError::None(_) => NodeError::BadValue(e.to_string()),
        })
}

/// A query of nothing but spaces, tabs and line breaks (exactly the API document's rule, so
/// that what it calls valid is what the node accepts).
pub(super) fn blank(query: &str) -> bool {
    query.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}
