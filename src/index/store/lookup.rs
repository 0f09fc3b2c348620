//! Answering searches from the in-memory name index, and keeping their encoded replies in the
//! reply cache until the index changes or a lease runs out.

use std::sync::Arc;

use bytes::Bytes;

use super::{IndexStore, StoreError};
use crate::content::ContentId;
use crate::index::memory::{NameIndex, OrderKeys};
use crate::protocol::{ProtocolError, SearchResults};
use crate::query::{Query, now_ms};

/// Which ranked files a search wants: `limit` of them after the first `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Ranked files skipped.
    pub offset: usize,
    /// Most files sent.
    pub limit: usize,
}

impl Page {
    /// The first `limit` files.
    pub fn first(limit: usize) -> Page {
        Page { offset: 0, limit }
    }
}

/// What the reply cache keys a word query by: everything that decides its answer but the
/// limit (words in order, excluded words, filters, offset).
fn cache_key(query: &Query<ContentId>, page: Page) -> Option<String> {
    let Query::Words {
        words,
        exclude,
        filters,
        ..
    } = query
    else {
        return None;
    };
    Some(format!(
        "{}\u{1e}{}\u{1e}{filters:?}\u{1e}{}",
        words.join("\u{1f}"),
        exclude.join("\u{1f}"),
        page.offset
    ))
}

impl IndexStore {
    /// Files matching `query` shared by peers seen at or after `live_since` (ms).
    pub fn search(
        &self,
        query: &Query<ContentId>,
        page: Page,
        live_since: i64,
    ) -> Result<SearchResults, StoreError> {
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
        let found = mem.search(query, page.offset, page.limit, live_since);
        Ok(SearchResults {
            files: found.files,
            truncated: found.truncated,
            total: found.total,
            estimated: found.estimated,
        })
    }

    /// The encoded `SearchResults` payload for a word query answered recently, if the index
    /// has not changed since.
    pub fn cached_search(&self, query: &Query<ContentId>, page: Page) -> Option<Bytes> {
        let key = cache_key(query, page)?;
        // Called on a runtime thread: should a writer hold the index (or wait for it, behind a
        // long reader), the search goes to the blocking pool instead of waiting here.
        let generation = match self.mem.try_read() {
            Ok(m) => m.generation(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().generation(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        self.cache.get(&key, page.limit as u32, generation)
    }

    /// Searches and encodes the `SearchResults` payload; word queries are kept in the cache.
    ///
    /// A word query that finds the rank order of broad searches missing or behind reads what
    /// the order is made of (under the readers' lock, in time linear in the files), and a thread of its
    /// own sorts it and installs it, with no lock held while it sorts.
    pub fn search_payload(
        self: &Arc<Self>,
        query: &Query<ContentId>,
        page: Page,
        live_since: i64,
    ) -> Result<Bytes, ProtocolError> {
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
        let found = Found::read(&mem, query, page, live_since);
        let keys = match query {
            Query::Words { .. } => mem.order_wanted(),
            Query::Id(_) => None,
        };
        drop(mem);
        if let Some(keys) = keys {
            self.make_order(keys);
        }
        self.keep_search(query, page, found)
    }

    /// Sorts `keys` into the rank order on a thread of its own, then installs it.
    fn make_order(self: &Arc<Self>, keys: OrderKeys) {
        let store = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("rank-order".into())
            .spawn(move || {
                // Should sorting panic, the order is given up (not left "being made" for good).
                struct GiveUp(Option<Arc<IndexStore>>);
                impl Drop for GiveUp {
                    fn drop(&mut self) {
                        if let Some(store) = self.0.take() {
                            store.mem_read().install_order(None);
                        }
                    }
                }
                let mut guard = GiveUp(Some(store));
                let started = std::time::Instant::now();
                let order = keys.into_order();
                tracing::debug!("rank order sorted in {:?}", started.elapsed());
                if let Some(store) = guard.0.take() {
                    store.mem_read().install_order(Some(order));
                }
                crate::release_free_memory();
            });
        if let Err(e) = spawned {
            tracing::debug!("no thread to sort the rank order: {e}");
            self.mem_read().install_order(None);
        }
    }

    /// [`IndexStore::search_payload`] if it can be answered at once: the index can be read
    /// without waiting for a writer, and the search reads little of it (a content id, or a
    /// word query within the name index's quick budget, `Reads::QUICK`). `None`: run it where a long search does no harm.
    pub fn try_search_here(
        &self,
        query: &Query<ContentId>,
        page: Page,
        live_since: i64,
    ) -> Option<Result<Bytes, ProtocolError>> {
        let mem = match self.mem.try_read() {
            Ok(m) => m,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let found = Found::read_quick(&mem, query, page, live_since)?;
        drop(mem);
        Some(self.keep_search(query, page, found))
    }

    /// The reply a search found, kept in the cache for a word query until the index changes
    /// or the first lease of a live peer runs out.
    fn keep_search(
        &self,
        query: &Query<ContentId>,
        page: Page,
        found: Found,
    ) -> Result<Bytes, ProtocolError> {
        let Found {
            generation,
            first_expiry,
            payload,
        } = found;
        let payload = payload?;
        if let Some(key) = cache_key(query, page) {
            let ms = first_expiry.map_or(i64::MAX, |t| t.saturating_sub(now_ms()));
            let valid_for = std::time::Duration::from_millis(ms.max(0) as u64);
            self.cache.put(
                &key,
                page.limit as u32,
                generation,
                valid_for,
                payload.clone(),
            );
        }
        Ok(payload)
    }
}

/// What one search found, and what decides how long its reply stays right.
struct Found {
    generation: u64,
    first_expiry: Option<i64>,
    /// The `SearchResults` payload, written under the readers' lock straight from the index.
    payload: Result<Bytes, ProtocolError>,
}

impl Found {
    fn read(mem: &NameIndex, query: &Query<ContentId>, page: Page, live_since: i64) -> Found {
        Found::with(
            mem,
            query,
            live_since,
            mem.search_encoded(query, page.offset, page.limit, live_since),
        )
    }

    /// [`Found::read`] if the search reads at most [`Reads::QUICK`](crate::index::memory::Reads::QUICK) of the index.
    fn read_quick(
        mem: &NameIndex,
        query: &Query<ContentId>,
        page: Page,
        live_since: i64,
    ) -> Option<Found> {
        let payload = mem.search_quick_encoded(query, page.offset, page.limit, live_since)?;
        Some(Found::with(mem, query, live_since, payload))
    }

    fn with(
        mem: &NameIndex,
        query: &Query<ContentId>,
        live_since: i64,
        payload: Result<Bytes, ProtocolError>,
    ) -> Found {
        let first_expiry = match query {
            Query::Words { .. } => mem.first_expiry(live_since),
            Query::Id(_) => None,
        };
        Found {
            generation: mem.generation(),
            first_expiry,
            payload,
        }
    }
}
