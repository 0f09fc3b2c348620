//! `IndexStore`: the index's durable state in SQLite (WAL, synchronous=FULL): peers and their files.
//!
//! The in-memory [`NameIndex`] answers every search; SQLite is what survives a restart. Every
//! write commits to SQLite first and then applies the same change to the name index, so a search
//! never sees a change that was not acknowledged, and one that was is seen by the next search.
//!
//! # Locks
//!
//! | lock | guards | taken by |
//! |---|---|---|
//! | `writer: Mutex<Connection>` | the one SQLite connection that writes; makes writes one at a time | registration, updates, heartbeats, unregistering, the purge |
//! | `sessions: Mutex<Sessions>` | the newest session of each peer | only with `writer` held, so a session's check and its write are one step |
//! | `mem: RwLock<NameIndex>` | the name index | writers (with `writer` held) for each change; searches read it |
//! | the rank order's cell (a `Mutex` inside the name index) | the current rank order | under `mem` (read or write), for a moment |
//! | `cache`'s `Mutex` (the reply cache) | encoded search replies | alone, for a moment |
//! | `readers: Mutex<Vec<Connection>>` | idle reading connections | alone, to take or give back one |
//! | `listings`' `Mutex` (whole `Browse` listings) | listings kept for their next pages | alone, for a moment |
//!
//! Order: `writer`, then `sessions` or `mem` (never both at once: each is taken and let go in
//! turn), then the rank order's cell. The reply cache, the listings and the reader pool are taken
//! with no other lock held (`Browse` reads the generation under `mem` and lets it go first). A
//! reading connection, once taken from the pool, is used with no lock held.
//!
//! The group tables (`meta`, `invites`, `members`; `members.rs`) are written under `writer`
//! like the rest, and have no part in the name index. Another process (the `invite` and
//! `members` commands, through [`GroupStore`]) writes them too, meanwhile: SQLite's own lock
//! orders those writes with the index's (each connection waits up to 10 s for it).
//!
//! Nothing here is async and no guard is held across an `.await`: the server calls the blocking
//! methods on tokio's blocking pool. Two methods run on the runtime's own threads and never wait
//! for the name index: [`IndexStore::cached_search`] and [`IndexStore::try_search_here`] only
//! `try_read` it and give up (the caller then uses the blocking pool) if a writer holds it. The
//! thread that sorts a new rank order holds no lock while it sorts; it installs the result under
//! a read lock of `mem`.

use std::path::Path;
use std::sync::{Mutex, RwLock};

use rusqlite::Connection;

pub use self::browse::{BrowseRefused, MAX_BROWSE_BYTES, normalize_browse_path};
pub use self::group_store::GroupStore;
pub use self::lookup::Page;
pub use self::members::{MemberRow, RedeemError};
use self::schema::{load, open_conn};
pub use self::sessions::Session;
use self::sessions::Sessions;
use super::cache::{CacheConfig, ReplyCache};
pub use super::memory::IndexCounts;
use super::memory::NameIndex;

mod browse;
mod group_store;
#[cfg(test)]
mod group_tests;
mod lookup;
mod members;
mod punch;
mod purge;
mod schema;
mod sessions;
#[cfg(test)]
mod tests;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("index database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database's directory could not be created.
    #[error("cannot create the directory of the index database {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why not.
        source: std::io::Error,
    },
    /// No peer has this id (never registered, or forgotten).
    #[error("unknown peer id {0}")]
    UnknownPeer(u64),
    /// A newer `Register` of the same peer took over; this session may no longer change it.
    #[error("peer {0} registered again on another connection; this session is superseded")]
    Superseded(u64),
    /// The operating system gave no random bytes for the index's key.
    #[error("no randomness from the operating system for the index key: {0}")]
    Random(String),
    /// The stored index key is not 32 bytes: the database was changed by hand or damaged.
    #[error("the index key stored in the database is {0} bytes, not 32")]
    BadSecret(usize),
}

/// Creates the directory the database at `path` goes in.
fn create_parent(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// The durable store. One writer connection; reads use their own connections (WAL lets them
/// run beside writes). Searches read the in-memory name index, which every write updates after its commit.
pub struct IndexStore {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
    mem: RwLock<NameIndex>,
    cache: ReplyCache,
    /// Locked only with `writer` held, so a session's check and its write are one step.
    sessions: Mutex<Sessions>,
    /// Whole `Browse` listings, for the pages after the first (taken alone, for a moment).
    listings: self::browse::ListingCache,
}

impl IndexStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<IndexStore, StoreError> {
        create_parent(path)?;
        let writer = open_conn(path)?;
        schema::migrate(&writer)?;
        let mem = load(&writer)?;
        Ok(IndexStore {
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            path: path.to_path_buf(),
            mem: RwLock::new(mem),
            cache: ReplyCache::new(CacheConfig::default()),
            sessions: Mutex::new(Sessions::default()),
            listings: Default::default(),
        })
    }

    /// Sets the lease (so heartbeats of live peers leave cached search replies valid) and the
    /// search cache's settings.
    pub fn configure(&mut self, lease_ms: i64, cache: CacheConfig) {
        self.mem().set_lease_ms(lease_ms);
        self.cache = ReplyCache::new(cache);
    }

    fn mem_read(&self) -> std::sync::RwLockReadGuard<'_, NameIndex> {
        self.mem.read().unwrap_or_else(|p| p.into_inner())
    }

    fn mem(&self) -> std::sync::RwLockWriteGuard<'_, NameIndex> {
        self.mem.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Files held in memory for searching.
    pub fn files_in_memory(&self) -> usize {
        self.mem.read().unwrap_or_else(|p| p.into_inner()).files()
    }

    /// What the name index holds (see [`IndexCounts`]); `live_since` as in searches.
    pub fn counts(&self, live_since: i64) -> IndexCounts {
        self.mem_read().counts(live_since)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let r = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        r
    }
}
