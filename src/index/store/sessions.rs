//! Sessions and registration: a peer's `Register`, its file updates and heartbeats under its
//! newest session, and its leaving.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::digest_from;
use super::{IndexStore, StoreError};
use crate::content::Digest;
use crate::index::memory::PeerState;
use crate::protocol::{PeerList, PeerRecord, UpdateFiles};

/// One `Register` of a peer: the session a connection holds until it unregisters or closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The peer's id in the store.
    pub peer_id: u64,
    /// Numbers the store's registrations (since it was opened); the newest of a peer wins.
    pub number: u64,
    /// Whether the peer registered as ephemeral: forgotten when its connection closes.
    pub ephemeral: bool,
}

/// The newest session of each peer registered since the store was opened. A new `Register` of
/// a key supersedes the older session: two connections of one key (a stale connection, or a
/// copied key) must never undo each other's files. Kept in memory only: every connection, and
/// so every session, ends when the index stops.
#[derive(Default)]
pub(super) struct Sessions {
    last: u64,
    newest: HashMap<u64, u64>,
}

impl IndexStore {
    /// The session table (take it only with the writer held: see the lock note in [`super`]).
    pub(super) fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
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

    /// Ends the sessions of these (forgotten) peers.
    pub(super) fn forget_sessions(&self, ids: &[i64]) {
        let mut s = self.sessions();
        for id in ids {
            s.newest.remove(&(*id as u64));
        }
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
                PeerState { host: host.into(), port, key: *public_key, last_seen: now, online: true },
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

    /// Takes the peer holding `key` out of the results at once, as `Unregister` would (its
    /// files removed, offline; a session it holds ends): what removing a member from a private
    /// group does to its listing. Returns whether such a peer was registered.
    pub fn unlist_key(&self, key: &Digest) -> Result<bool, StoreError> {
        self.write(|c| {
            let id: Option<i64> = c
                .query_row(
                    "SELECT id FROM peers WHERE public_key=?1",
                    params![&key.0[..]],
                    |r| r.get(0),
                )
                .optional()?;
            match id {
                Some(id) => {
                    self.unregister_locked(c, id as u64)?;
                    Ok(true)
                }
                None => Ok(false),
            }
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
