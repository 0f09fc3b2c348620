//! `ReplyCache`: recent search replies kept encoded, valid until the index changes or their time runs out.
//!
//! Every change the index applies (a file added, removed or renamed, a peer coming, going or
//! coming back) bumps the index's generation; an entry filled under another generation is
//! never served, so a search never misses an acknowledged change. Time alone (leases running
//! out) is covered by each entry's deadline: the first moment a lease of a peer live when it
//! was filled runs out (capped by a time to live, which bounds how old `last_seen` can be).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Default of [`CacheConfig::max_entries`]: distinct queries kept.
pub const DEFAULT_CACHE_ENTRIES: usize = 4096;
/// Default of [`CacheConfig::max_bytes`]: 64 MiB of replies.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;
/// Default of [`CacheConfig::ttl`]: how long a reply is served at most.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);

/// Settings of the reply cache (recent search replies kept encoded).
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Most distinct queries kept; 0 turns the cache off. Default: [`DEFAULT_CACHE_ENTRIES`].
    pub max_entries: usize,
    /// Most reply bytes kept in all. Default: [`DEFAULT_CACHE_BYTES`].
    pub max_bytes: usize,
    /// How long a reply is served after it was computed at most (bounds how old a listed
    /// `last_seen` can be; leases that run out end it sooner). Default: [`DEFAULT_CACHE_TTL`].
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: DEFAULT_CACHE_ENTRIES,
            max_bytes: DEFAULT_CACHE_BYTES,
            ttl: DEFAULT_CACHE_TTL,
        }
    }
}

struct Entry {
    limit: u32,
    until: Instant,
    payload: Bytes,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    entries: HashMap<Box<str>, Vec<Entry>>,
    count: usize,
    bytes: usize,
}

impl Inner {
    /// Drops everything if the index moved on since the entries were filled; whether the
    /// entries are of `generation` (a caller that read an older one gets and keeps nothing).
    fn sync(&mut self, generation: u64) -> bool {
        if generation > self.generation {
            self.clear();
            self.generation = generation;
        }
        generation == self.generation
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.count = 0;
        self.bytes = 0;
    }
}

/// Encoded search replies keyed by normalized query and limit.
pub struct ReplyCache {
    config: CacheConfig,
    inner: Mutex<Inner>,
}

impl ReplyCache {
    /// An empty cache with these settings.
    pub fn new(config: CacheConfig) -> Self {
        ReplyCache {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reply stored for `query` and `limit` under `generation`, if still fresh.
    pub fn get(&self, query: &str, limit: u32, generation: u64) -> Option<Bytes> {
        if self.config.max_entries == 0 {
            return None;
        }
        let mut inner = self.lock();
        if !inner.sync(generation) {
            return None;
        }
        let e = inner
            .entries
            .get(query)?
            .iter()
            .find(|e| e.limit == limit)?;
        (Instant::now() < e.until).then(|| e.payload.clone())
    }

    /// Stores the reply computed for `query` and `limit` under `generation`, to be served for
    /// `valid_for` at most (and never longer than the time to live).
    pub fn put(
        &self,
        query: &str,
        limit: u32,
        generation: u64,
        valid_for: Duration,
        payload: Bytes,
    ) {
        let config = self.config;
        if config.max_entries == 0 || payload.len() > config.max_bytes {
            return;
        }
        let mut inner = self.lock();
        if !inner.sync(generation) {
            return; // computed before a change that newer entries already reflect
        }
        if inner.count >= config.max_entries || inner.bytes + payload.len() > config.max_bytes {
            inner.clear();
        }
        let (len, until) = (payload.len(), Instant::now() + valid_for.min(config.ttl));
        let list = inner.entries.entry(query.into()).or_default();
        let old = match list.iter_mut().find(|e| e.limit == limit) {
            Some(e) => {
                let old = e.payload.len();
                (e.until, e.payload) = (until, payload);
                Some(old)
            }
            None => {
                list.push(Entry {
                    limit,
                    until,
                    payload,
                });
                None
            }
        };
        match old {
            Some(old) => inner.bytes = inner.bytes - old + len,
            None => {
                inner.count += 1;
                inner.bytes += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    fn cache(max_entries: usize, max_bytes: usize, ttl_ms: u64) -> ReplyCache {
        ReplyCache::new(CacheConfig {
            max_entries,
            max_bytes,
            ttl: Duration::from_millis(ttl_ms),
        })
    }

    #[test]
    fn serves_only_the_same_query_limit_and_generation() {
        let c = cache(10, 1000, 60_000);
        c.put("isaac", 100, 7, LONG, Bytes::from_static(b"a"));
        assert_eq!(c.get("isaac", 100, 7).as_deref(), Some(&b"a"[..]));
        assert_eq!(c.get("isaac", 10, 7), None, "other limit");
        assert_eq!(c.get("isaa", 100, 7), None, "other query");
        assert_eq!(c.get("isaac", 100, 8), None, "the index changed");
        assert_eq!(
            c.get("isaac", 100, 7),
            None,
            "dropped with the old generation"
        );
        c.put("newton", 100, 8, LONG, Bytes::from_static(b"n"));
        c.put("isaac", 100, 7, LONG, Bytes::from_static(b"late"));
        assert_eq!(
            c.get("isaac", 100, 7),
            None,
            "a late reply of an older index is not kept"
        );
        assert!(
            c.get("newton", 100, 8).is_some(),
            "nor does it push newer ones out"
        );
    }

    #[test]
    fn entries_expire_and_stay_within_bounds() {
        let c = cache(10, 1000, 0);
        c.put("a", 1, 1, LONG, Bytes::from_static(b"x"));
        assert_eq!(c.get("a", 1, 1), None, "ttl 0 never serves");
        let c = cache(10, 1000, 60_000);
        c.put("a", 1, 1, Duration::ZERO, Bytes::from_static(b"x"));
        assert_eq!(c.get("a", 1, 1), None, "a lease ran out right away");
        c.put(
            "b",
            1,
            1,
            Duration::from_millis(40),
            Bytes::from_static(b"x"),
        );
        assert!(c.get("b", 1, 1).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            c.get("b", 1, 1),
            None,
            "not past the first lease that runs out"
        );

        let c = cache(2, 10, 60_000);
        c.put("a", 1, 1, LONG, Bytes::from_static(b"1234"));
        c.put("b", 1, 1, LONG, Bytes::from_static(b"1234"));
        c.put("c", 1, 1, LONG, Bytes::from_static(b"1234"));
        let inner = c.lock();
        assert!(inner.count <= 2 && inner.bytes <= 10);
        drop(inner);
        assert!(c.get("c", 1, 1).is_some(), "the newest is kept");
        c.put("big", 1, 1, LONG, Bytes::from(vec![0; 11]));
        assert_eq!(c.get("big", 1, 1), None, "larger than the whole budget");
        c.put("c", 1, 1, LONG, Bytes::from_static(b"12"));
        assert_eq!(c.lock().bytes, 2, "replacing counts the new size");
    }

    #[test]
    fn off_when_no_entries_are_allowed() {
        let c = cache(0, 1000, 60_000);
        c.put("a", 1, 1, LONG, Bytes::from_static(b"x"));
        assert_eq!(c.get("a", 1, 1), None);
    }
}
