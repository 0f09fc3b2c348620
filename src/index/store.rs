//! `IndexStore`: the index's durable state in SQLite (WAL, synchronous=FULL): peers and their files.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::cache::{CacheConfig, SearchCache};
use super::memory::{NameIndex, OrderKeys, PeerState};
use crate::content::{ContentId, Digest};
use crate::protocol::{FileEntry, PeerList, PeerRecord, ProtocolError, SearchResults, UpdateFiles};
use crate::query::{Query, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("index database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create the directory of the index database {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("unknown peer id {0}")]
    UnknownPeer(u64),
    #[error("peer {0} registered again on another connection; this session is superseded")]
    Superseded(u64),
}

/// One `Register` of a peer: the session a connection holds until it unregisters or closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub peer_id: u64,
    /// Numbers the store's registrations (since it was opened); the newest of a peer wins.
    pub number: u64,
    pub ephemeral: bool,
}

/// The newest session of each peer registered since the store was opened. A new `Register` of
/// a key supersedes the older session: two connections of one key (a stale connection, or a
/// copied key) must never undo each other's files. Kept in memory only: every connection, and
/// so every session, ends when the index stops.
#[derive(Default)]
struct Sessions {
    last: u64,
    newest: std::collections::HashMap<u64, u64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS peers(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  public_key BLOB NOT NULL UNIQUE,
  host TEXT NOT NULL,
  port INTEGER NOT NULL,
  catalog_digest BLOB,
  online INTEGER NOT NULL DEFAULT 0,
  ephemeral INTEGER NOT NULL DEFAULT 0,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files(
  peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
  path TEXT NOT NULL,
  name TEXT NOT NULL,
  size INTEGER NOT NULL,
  content_id BLOB NOT NULL,
  mtime INTEGER NOT NULL,
  shared_at INTEGER NOT NULL,
  have BLOB,
  PRIMARY KEY(peer_id, path)
) WITHOUT ROWID;
DROP INDEX IF EXISTS files_by_content;
";

/// The durable store. One writer connection; reads use their own connections (WAL lets them
/// run beside writes). Searches read [`NameIndex`], which every write updates after its commit.
pub struct IndexStore {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
    mem: RwLock<NameIndex>,
    cache: SearchCache,
    /// Locked only with `writer` held, so a session's check and its write are one step.
    sessions: Mutex<Sessions>,
}

fn open_conn(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn digest_from(blob: Option<Vec<u8>>) -> Option<Digest> {
    let b: [u8; 32] = blob?.try_into().ok()?;
    Some(Digest(b))
}

fn id_from(blob: Vec<u8>) -> Option<ContentId> {
    let b: [u8; 32] = blob.try_into().ok()?;
    Some(ContentId::from_bytes(b))
}

impl IndexStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<IndexStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let writer = open_conn(path)?;
        writer.execute_batch(SCHEMA)?;
        // Databases made before these columns existed get them now.
        for (table, column) in [
            ("peers", "ephemeral INTEGER NOT NULL DEFAULT 0"),
            ("files", "have BLOB"),
        ] {
            let name = column.split(' ').next().unwrap_or(column);
            let has: bool = writer.query_row(
                &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                params![name],
                |r| r.get(0),
            )?;
            if !has {
                writer.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column}"))?;
            }
        }
        // Searches and lookups read the in-memory index: the lowercased names (and the index
        // by content id, dropped in SCHEMA) of older databases were written and never read.
        let has_lower: bool = writer.query_row(
            "SELECT count(*) FROM pragma_table_info('files') WHERE name = 'name_lower'",
            [],
            |r| r.get(0),
        )?;
        if has_lower {
            writer.execute_batch("ALTER TABLE files DROP COLUMN name_lower")?;
        }
        // An ephemeral peer lives only as long as its connection (§7.7): none survived the
        // index's last stop. It is forgotten by the purge; until then it is not live.
        writer.execute("UPDATE peers SET online=0 WHERE ephemeral=1", [])?;
        let mem = load(&writer)?;
        Ok(IndexStore {
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            path: path.to_path_buf(),
            mem: RwLock::new(mem),
            cache: SearchCache::new(CacheConfig::default()),
            sessions: Mutex::new(Sessions::default()),
        })
    }

    /// Sets the lease (so heartbeats of live peers leave cached search replies valid) and the
    /// search cache's settings.
    pub fn configure(&mut self, lease_ms: i64, cache: CacheConfig) {
        self.mem().set_lease_ms(lease_ms);
        self.cache = SearchCache::new(cache);
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

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `session` is still its peer's newest; call with the writer held.
    fn check(&self, session: &Session) -> Result<(), StoreError> {
        match self.sessions().newest.get(&session.peer_id) {
            Some(&n) if n == session.number => Ok(()),
            Some(_) => Err(StoreError::Superseded(session.peer_id)),
            None => Err(StoreError::UnknownPeer(session.peer_id)),
        }
    }

    fn forget_sessions(&self, ids: &[i64]) {
        let mut s = self.sessions();
        for id in ids {
            s.newest.remove(&(*id as u64));
        }
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

    /// Records a peer (by public key) as online at `host:port`; returns its new session (which
    /// supersedes any older one of the peer) and whether the stored file list already has
    /// `digest`.
    pub fn register(
        &self,
        public_key: &Digest,
        host: &str,
        port: u16,
        digest: &Digest,
        ephemeral: bool,
        now: i64,
    ) -> Result<(Session, bool), StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let existing: Option<(i64, Option<Vec<u8>>)> = tx
                .query_row(
                    "SELECT id, catalog_digest FROM peers WHERE public_key = ?1",
                    params![&public_key.0[..]],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (id, in_sync) = match existing {
                Some((id, stored)) => {
                    tx.execute(
                        "UPDATE peers SET host=?2, port=?3, online=1, last_seen=?4, ephemeral=?5 WHERE id=?1",
                        params![id, host, port, now, ephemeral],
                    )?;
                    (id, digest_from(stored).as_ref() == Some(digest))
                }
                None => {
                    tx.execute(
                        "INSERT INTO peers(public_key, host, port, online, ephemeral, first_seen, last_seen)
                         VALUES(?1, ?2, ?3, 1, ?5, ?4, ?4)",
                        params![&public_key.0[..], host, port, now, ephemeral],
                    )?;
                    (tx.last_insert_rowid(), false)
                }
            };
            tx.commit()?;
            self.mem().set_peer(
                id as u64,
                PeerState { host: host.into(), port, last_seen: now, online: true },
            );
            let mut sessions = self.sessions();
            sessions.last += 1;
            let number = sessions.last;
            sessions.newest.insert(id as u64, number);
            Ok((Session { peer_id: id as u64, number, ephemeral }, in_sync))
        })
    }

    /// Applies one batch of file changes in one transaction; returns the peer's file count.
    pub fn update_files(
        &self,
        session: &Session,
        u: &UpdateFiles,
        now: i64,
    ) -> Result<u64, StoreError> {
        let peer_id = session.peer_id;
        self.write(|c| {
            self.check(session)?;
            let tx = c.transaction()?;
            let known: i64 =
                tx.query_row("SELECT count(*) FROM peers WHERE id=?1", params![peer_id], |r| r.get(0))?;
            if known == 0 {
                return Err(StoreError::UnknownPeer(peer_id));
            }
            if u.reset {
                tx.execute("DELETE FROM files WHERE peer_id=?1", params![peer_id])?;
            }
            {
                let mut del = tx.prepare_cached("DELETE FROM files WHERE peer_id=?1 AND path=?2")?;
                for path in &u.remove {
                    del.execute(params![peer_id, path])?;
                }
                let mut ins = tx.prepare_cached(
                    "INSERT INTO files(peer_id, path, name, size, content_id, mtime, shared_at, have)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(peer_id, path) DO UPDATE SET
                       name=excluded.name, size=excluded.size,
                       mtime=excluded.mtime, have=excluded.have,
                       shared_at=CASE WHEN files.content_id=excluded.content_id
                                      THEN files.shared_at ELSE excluded.shared_at END,
                       content_id=excluded.content_id",
                )?;
                for f in &u.upsert {
                    ins.execute(params![
                        peer_id,
                        f.path,
                        f.name,
                        f.size as i64,
                        &f.content_id.as_bytes()[..],
                        f.mtime,
                        now,
                        f.have
                    ])?;
                }
            }
            let digest: Option<&[u8]> = u.digest.as_ref().map(|d| &d.0[..]);
            let n = tx.execute(
                "UPDATE peers SET catalog_digest=?2, last_seen=?3, online=1 WHERE id=?1",
                params![peer_id, digest, now],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownPeer(peer_id));
            }
            let count: i64 =
                tx.query_row("SELECT count(*) FROM files WHERE peer_id=?1", params![peer_id], |r| {
                    r.get(0)
                })?;
            tx.commit()?;
            let mut mem = self.mem();
            if u.reset {
                mem.remove_all(peer_id);
            }
            for path in &u.remove {
                mem.remove(peer_id, path);
            }
            for f in &u.upsert {
                mem.upsert(peer_id, f, now);
            }
            mem.heartbeat(peer_id, now);
            mem.maybe_rebuild();
            Ok(count as u64)
        })
    }

    /// Renews a peer's lease.
    pub fn heartbeat(&self, session: &Session, now: i64) -> Result<(), StoreError> {
        let peer_id = session.peer_id;
        self.write(|c| {
            self.check(session)?;
            let n = c.execute(
                "UPDATE peers SET last_seen=?2, online=1 WHERE id=?1",
                params![peer_id, now],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownPeer(peer_id));
            }
            self.mem().heartbeat(peer_id, now);
            Ok(())
        })
    }

    /// Removes a peer's files and marks it offline (its id stays reserved for its key);
    /// an ephemeral peer is forgotten altogether. Ends the session.
    pub fn unregister(&self, session: &Session) -> Result<(), StoreError> {
        self.write(|c| {
            self.check(session)?;
            self.unregister_locked(c, session.peer_id)
        })
    }

    /// The connection of `session` closed without `Unregister`. An ephemeral peer lives only
    /// as long as its connection: it is forgotten at once (unless a newer session of its key
    /// took over). Any other peer stays live until its lease runs out, as it may come back.
    /// Returns whether it forgot the peer.
    pub fn connection_closed(&self, session: &Session) -> Result<bool, StoreError> {
        self.write(|c| {
            if self.check(session).is_err() {
                return Ok(false);
            }
            if !session.ephemeral {
                self.sessions().newest.remove(&session.peer_id);
                return Ok(false);
            }
            self.unregister_locked(c, session.peer_id)?;
            Ok(true)
        })
    }

    fn unregister_locked(&self, c: &mut Connection, peer_id: u64) -> Result<(), StoreError> {
        let tx = c.transaction()?;
        tx.execute("DELETE FROM files WHERE peer_id=?1", params![peer_id])?;
        let forgotten = tx.execute(
            "DELETE FROM peers WHERE id=?1 AND ephemeral=1",
            params![peer_id],
        )?;
        tx.execute(
            "UPDATE peers SET online=0, catalog_digest=NULL WHERE id=?1",
            params![peer_id],
        )?;
        tx.commit()?;
        self.sessions().newest.remove(&peer_id);
        let mut mem = self.mem();
        if forgotten > 0 {
            mem.forget_peer(peer_id);
        } else {
            mem.remove_all(peer_id);
            mem.set_offline(peer_id);
        }
        Ok(())
    }

    /// Forgets ephemeral peers (and their files) not seen since `before` (ms); returns how many.
    pub fn purge_ephemeral(&self, before: i64) -> Result<usize, StoreError> {
        self.purge(before, i64::MIN)
    }

    /// Forgets (with their files) ephemeral peers not seen since `ephemeral_before` and other
    /// peers not seen since `others_before` (ms); returns how many. A forgotten peer's key gets
    /// a new id if it registers again; a connection still authenticated as it is told to
    /// register again.
    pub fn purge(&self, ephemeral_before: i64, others_before: i64) -> Result<usize, StoreError> {
        const EXPIRED: &str =
            "(ephemeral=1 AND last_seen < ?1) OR (ephemeral=0 AND last_seen < ?2)";
        self.write(|c| {
            let tx = c.transaction()?;
            let ids: Vec<i64> = tx
                .prepare(&format!("SELECT id FROM peers WHERE {EXPIRED}"))?
                .query_map(params![ephemeral_before, others_before], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(0);
            }
            tx.execute(
                &format!(
                    "DELETE FROM files WHERE peer_id IN (SELECT id FROM peers WHERE {EXPIRED})"
                ),
                params![ephemeral_before, others_before],
            )?;
            let n = tx.execute(
                &format!("DELETE FROM peers WHERE {EXPIRED}"),
                params![ephemeral_before, others_before],
            )?;
            tx.commit()?;
            self.forget_sessions(&ids);
            let mut mem = self.mem();
            for id in ids {
                mem.forget_peer(id as u64);
            }
            Ok(n)
        })
    }

    /// Files matching `query` shared by peers seen at or after `live_since` (ms).
    pub fn search(
        &self,
        query: &str,
        limit: usize,
        live_since: i64,
    ) -> Result<SearchResults, StoreError> {
        let query = Query::parse(query);
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
        let (files, truncated) = mem.search(&query, limit, live_since);
        Ok(SearchResults { files, truncated })
    }

    /// The encoded `SearchResults` payload for a word query answered recently, if the index
    /// has not changed since.
    pub fn cached_search(&self, query: &Query<ContentId>, limit: usize) -> Option<Bytes> {
        let Query::Words { whole, .. } = query else {
            return None;
        };
        // Called on a runtime thread: should a writer hold the index (or wait for it, behind a
        // long reader), the search goes to the blocking pool instead of waiting here.
        let generation = match self.mem.try_read() {
            Ok(m) => m.generation(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().generation(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        self.cache.get(whole, limit as u32, generation)
    }

    /// Searches and encodes the `SearchResults` payload; word queries are kept in the cache.
    ///
    /// A word query that finds the rank order of broad searches missing or behind reads what
    /// the order is made of (under the readers' lock, 0.15 s at 1M files), and a thread of its
    /// own sorts it and installs it, with no lock held while it sorts.
    pub fn search_payload(
        self: &Arc<Self>,
        query: &Query<ContentId>,
        limit: usize,
        live_since: i64,
    ) -> Result<Bytes, ProtocolError> {
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
        let found = Found::read(&mem, query, limit, live_since);
        let keys = match query {
            Query::Words { .. } => mem.order_wanted(),
            Query::Id(_) => None,
        };
        drop(mem);
        if let Some(keys) = keys {
            self.make_order(keys);
        }
        self.keep_search(query, limit, found)
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
    /// word query within [`Reads::QUICK`](super::memory::Reads::QUICK)). `None`: run it where a long search does no harm.
    pub fn try_search_here(
        &self,
        query: &Query<ContentId>,
        limit: usize,
        live_since: i64,
    ) -> Option<Result<Bytes, ProtocolError>> {
        let mem = match self.mem.try_read() {
            Ok(m) => m,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let found = Found::read_quick(&mem, query, limit, live_since)?;
        drop(mem);
        Some(self.keep_search(query, limit, found))
    }

    /// The reply a search found, kept in the cache for a word query until the index changes
    /// or the first lease of a live peer runs out.
    fn keep_search(
        &self,
        query: &Query<ContentId>,
        limit: usize,
        found: Found,
    ) -> Result<Bytes, ProtocolError> {
        let Found {
            generation,
            first_expiry,
            payload,
        } = found;
        let payload = payload?;
        if let Query::Words { whole, .. } = query {
            let ms = first_expiry.map_or(i64::MAX, |t| t.saturating_sub(now_ms()));
            let valid_for = std::time::Duration::from_millis(ms.max(0) as u64);
            self.cache
                .put(whole, limit as u32, generation, valid_for, payload.clone());
        }
        Ok(payload)
    }

    /// Every registered peer except ephemeral ones (throw-away identities of downloads in
    /// progress); `live` when online and seen at or after `live_since` (ms).
    pub fn peers(&self, live_since: i64) -> Result<PeerList, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT p.id, p.host, p.port, p.last_seen, p.online,
                        (SELECT count(*) FROM files f WHERE f.peer_id = p.id)
                 FROM peers p WHERE p.ephemeral = 0 ORDER BY p.id",
            )?;
            let peers = stmt
                .query_map([], |r| {
                    let last_seen: i64 = r.get(3)?;
                    let online: bool = r.get(4)?;
                    Ok(PeerRecord {
                        peer_id: r.get::<_, i64>(0)? as u64,
                        host: r.get(1)?,
                        port: r.get(2)?,
                        last_seen,
                        live: online && last_seen >= live_since,
                        files: r.get::<_, i64>(5)? as u64,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(PeerList { peers })
        })
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
    fn read(mem: &NameIndex, query: &Query<ContentId>, limit: usize, live_since: i64) -> Found {
        Found::with(
            mem,
            query,
            live_since,
            mem.search_encoded(query, limit, live_since),
        )
    }

    /// [`Found::read`] if the search reads at most [`Reads::QUICK`](super::memory::Reads::QUICK) of the index.
    fn read_quick(
        mem: &NameIndex,
        query: &Query<ContentId>,
        limit: usize,
        live_since: i64,
    ) -> Option<Found> {
        let payload = mem.search_quick_encoded(query, limit, live_since)?;
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

/// Reads the whole store into a [`NameIndex`].
fn load(c: &Connection) -> Result<NameIndex, StoreError> {
    let mut mem = NameIndex::default();
    let mut stmt = c.prepare("SELECT id, host, port, last_seen, online FROM peers")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let host: String = r.get(1)?;
        mem.set_peer(
            id as u64,
            PeerState {
                host: host.into(),
                port: r.get(2)?,
                last_seen: r.get(3)?,
                online: r.get(4)?,
            },
        );
    }
    let mut stmt = c.prepare(
        "SELECT peer_id, path, name, size, content_id, mtime, shared_at, have FROM files",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let Some(content_id) = id_from(r.get(4)?) else {
            continue;
        };
        let peer: i64 = r.get(0)?;
        let f = FileEntry {
            path: r.get(1)?,
            name: r.get(2)?,
            size: r.get::<_, i64>(3)? as u64,
            content_id,
            mtime: r.get(5)?,
            have: r.get(7)?,
        };
        mem.load(peer as u64, &f, r.get(6)?);
    }
    mem.shrink();
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before `name_lower` was dropped (and with the index by content id)
    /// opens, keeps its files, and loses the column and the index.
    #[test]
    fn an_older_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE peers(
               id INTEGER PRIMARY KEY AUTOINCREMENT, public_key BLOB NOT NULL UNIQUE,
               host TEXT NOT NULL, port INTEGER NOT NULL, catalog_digest BLOB,
               online INTEGER NOT NULL DEFAULT 0, first_seen INTEGER NOT NULL,
               last_seen INTEGER NOT NULL);
             CREATE TABLE files(
               peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
               path TEXT NOT NULL, name TEXT NOT NULL, name_lower TEXT NOT NULL,
               size INTEGER NOT NULL, content_id BLOB NOT NULL, mtime INTEGER NOT NULL,
               shared_at INTEGER NOT NULL, PRIMARY KEY(peer_id, path)) WITHOUT ROWID;
             CREATE INDEX files_by_content ON files(content_id);
             INSERT INTO peers(public_key, host, port, online, first_seen, last_seen)
               VALUES(x'01', '127.0.0.1', 4000, 1, 5, 5);
             INSERT INTO files VALUES(1, 'a/Report.pdf', 'Report.pdf', 'report.pdf', 7,
               zeroblob(32), 0, 5);",
        )
        .unwrap();
        drop(old);
        let store = IndexStore::open(&path).unwrap();
        let found = store.search("report", 10, 0).unwrap();
        assert_eq!(found.files.len(), 1);
        assert_eq!(found.files[0].name, "Report.pdf");
        let c = store.writer.lock().unwrap();
        let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
        let lower = "SELECT count(*) FROM pragma_table_info('files') WHERE name = 'name_lower'";
        assert_eq!(count(lower), 0, "the column is gone");
        let index = "SELECT count(*) FROM sqlite_master WHERE name = 'files_by_content'";
        assert_eq!(count(index), 0, "the index is gone");
    }
}
