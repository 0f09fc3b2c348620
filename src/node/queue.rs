//! The node's durable download queue: what to download (a file by content id, a peer's folder,
//! every file matching a query), in which order and in which state, in SQLite in the state
//! directory, so it survives a restart or a `kill -9` of the node.
//!
//! Every change is committed before it is acknowledged. Live progress (rate, sources) is kept
//! by the runner in memory; the bytes done are written here when an item changes state.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::content::ContentId;
use crate::protocol::PeerHit;

/// The queue's database file in the state directory.
pub const QUEUE_FILE: &str = "queue.sqlite";

/// Most items one listing returns (`limit` above this is lowered to it).
pub const MAX_PAGE: usize = 1000;

/// Most items one request may add at once.
pub const MAX_ADD: usize = 10_000;

/// Most items the queue holds; adding past it is refused (finished ones can be removed).
pub const MAX_ITEMS: usize = 1_000_000;

/// What an item downloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// One file, by content id.
    File,
    /// A peer's folder or file, `PEER:PATH` (its structure recreated).
    Folder,
    /// Every file matching a search, at the paths their first source keeps them under.
    Query,
}

/// Where an item is in its life. Transitions: [`ItemState::can_become`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// Waits for its turn.
    Queued,
    /// Being downloaded.
    Running,
    /// Stopped by the user; its partial files are kept.
    Paused,
    /// Downloaded (or found already on disk).
    Done,
    /// Ended with an error (see its error text); resuming retries it.
    Failed,
    /// Stopped for good by the user.
    Cancelled,
}

impl ItemState {
    /// Every state, in order.
    pub const ALL: [ItemState; 6] = [
        ItemState::Queued,
        ItemState::Running,
        ItemState::Paused,
        ItemState::Done,
        ItemState::Failed,
        ItemState::Cancelled,
    ];

    /// Its name in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Queued => "queued",
            ItemState::Running => "running",
            ItemState::Paused => "paused",
            ItemState::Done => "done",
            ItemState::Failed => "failed",
            ItemState::Cancelled => "cancelled",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<ItemState> {
        ItemState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Finished: done, failed or cancelled ("remove finished" removes these).
    pub fn finished(self) -> bool {
        matches!(
            self,
            ItemState::Done | ItemState::Failed | ItemState::Cancelled
        )
    }

    /// Whether an item in this state may go to `to`:
    /// queued → running, paused, cancelled; running → done, failed, paused, cancelled,
    /// queued (the node stopped); paused → queued, cancelled; failed → queued (a retry),
    /// cancelled; done and cancelled are final.
    pub fn can_become(self, to: ItemState) -> bool {
        use ItemState::*;
        matches!(
            (self, to),
            (Queued, Running | Paused | Cancelled)
                | (Running, Done | Failed | Paused | Cancelled | Queued)
                | (Paused, Queued | Cancelled)
                | (Failed, Queued | Cancelled)
        )
    }
}

/// What to add to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    /// What it downloads.
    pub kind: ItemKind,
    /// The content id (hex), `PEER:PATH`, or the query's words.
    pub target: String,
    /// A name to show and save a file under (the index's or the DHT's; may be empty).
    pub name: String,
    /// The size, when known.
    pub size: Option<u64>,
    /// The sources as the index or the DHT gave them (files only; looked up again when run).
    pub sources: Vec<PeerHit>,
}

impl NewItem {
    /// A file by content id, with nothing known of it yet.
    pub fn file(id: ContentId) -> NewItem {
        NewItem {
            kind: ItemKind::File,
            target: id.to_hex(),
            name: String::new(),
            size: None,
            sources: Vec::new(),
        }
    }
}

/// An item of the queue, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Its id (never reused).
    pub id: i64,
    /// What it downloads.
    pub kind: ItemKind,
    /// The content id (hex), `PEER:PATH`, or the query.
    pub target: String,
    /// A name to show (may be empty).
    pub name: String,
    /// The size, when known.
    pub size: Option<u64>,
    /// Where it is.
    pub state: ItemState,
    /// Verified bytes, as of the last change of state.
    pub bytes_done: u64,
    /// Bytes in all, when known.
    pub bytes_total: Option<u64>,
    /// Files it holds (1 for a file; a folder's or query's once listed).
    pub files_total: Option<u64>,
    /// Files done (downloaded or already there).
    pub files_done: u64,
    /// Why it failed, or what failed of it, in one line.
    pub error: Option<String>,
    /// Where it was saved, once done.
    pub path: Option<String>,
    /// When it was added, ms since the Unix epoch.
    pub added_ms: i64,
    /// When it finished, ms since the Unix epoch.
    pub finished_ms: Option<i64>,
    /// The sources it was added with (files only).
    #[serde(skip)]
    pub sources: Vec<PeerHit>,
}

/// Why a queue operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No item has this id.
    #[error("no queue item {0}")]
    NotFound(i64),
    /// The item's state does not allow the change.
    #[error("item {id} is {from}, it cannot become {to}", from = from.as_str(), to = to.as_str())]
    BadTransition {
        /// The item.
        id: i64,
        /// Its state.
        from: ItemState,
        /// The state asked for.
        to: ItemState,
    },
    /// The queue holds [`MAX_ITEMS`] already.
    #[error("the queue is full ({MAX_ITEMS} items); remove finished ones")]
    Full,
    /// The database failed.
    #[error("queue database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// How many items are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Queued.
    pub queued: u64,
    /// Running.
    pub running: u64,
    /// Paused.
    pub paused: u64,
    /// Done.
    pub done: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// The queue, over its database.
pub struct Queue {
    db: Mutex<Connection>,
}

const COLUMNS: &str = "id, kind, target, name, size, state, bytes_done, bytes_total, files_total, \
     files_done, error, path, added_ms, finished_ms, sources";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn kind_str(k: &ItemKind) -> &'static str {
    match k {
        ItemKind::File => "file",
        ItemKind::Folder => "folder",
        ItemKind::Query => "query",
    }
}

fn row_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    let kind: String = r.get(1)?;
    let state: String = r.get(5)?;
    let sources: Option<Vec<u8>> = r.get(14)?;
    Ok(Item {
        id: r.get(0)?,
        kind: match kind.as_str() {
            "folder" => ItemKind::Folder,
            "query" => ItemKind::Query,
            _ => ItemKind::File,
        },
        target: r.get(2)?,
        name: r.get(3)?,
        size: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
        state: ItemState::parse(&state).unwrap_or(ItemState::Failed),
        bytes_done: r.get::<_, i64>(6)? as u64,
        bytes_total: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
        files_total: r.get::<_, Option<i64>>(8)?.map(|s| s as u64),
        files_done: r.get::<_, i64>(9)? as u64,
        error: r.get(10)?,
        path: r.get(11)?,
        added_ms: r.get(12)?,
        finished_ms: r.get(13)?,
        // A blob that does not decode (it never should) leaves the item without sources: it
        // is looked up again when it runs anyway.
        sources: sources
            .and_then(|b| rmp_serde::from_slice(&b).ok())
            .unwrap_or_default(),
    })
}

impl Queue {
    /// Opens (or makes) the queue in `state_dir`. Items left running by a node that stopped
    /// (or was killed) go back to queued: they resume from their partial files.
    pub fn open(state_dir: &Path) -> Result<Queue, QueueError> {
        Queue::open_file(&state_dir.join(QUEUE_FILE))
    }

    /// [`Queue::open`] with the database at `path`.
    pub fn open_file(path: &Path) -> Result<Queue, QueueError> {
        let db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL: readers never wait for the writer; FULL: a commit is on disk before it is
        // acknowledged.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                pos INTEGER NOT NULL,
                kind TEXT NOT NULL,
                target TEXT NOT NULL,
                name TEXT NOT NULL DEFAULT '',
                size INTEGER,
                state TEXT NOT NULL,
                bytes_done INTEGER NOT NULL DEFAULT 0,
                bytes_total INTEGER,
                files_total INTEGER,
                files_done INTEGER NOT NULL DEFAULT 0,
                error TEXT,
                path TEXT,
                added_ms INTEGER NOT NULL,
                finished_ms INTEGER,
                sources BLOB
            );
            CREATE INDEX IF NOT EXISTS items_pos ON items(pos);
            CREATE INDEX IF NOT EXISTS items_state_pos ON items(state, pos);",
        )?;
        db.execute(
            "UPDATE items SET state = 'queued' WHERE state = 'running'",
            [],
        )?;
        Ok(Queue { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds items at the end, queued, in one transaction; their ids in order.
    pub fn add(&self, items: &[NewItem]) -> Result<Vec<i64>, QueueError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let count: i64 = tx.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?;
        if count as usize + items.len() > MAX_ITEMS {
            return Err(QueueError::Full);
        }
        let mut pos: i64 =
            tx.query_row("SELECT COALESCE(MAX(pos), 0) FROM items", [], |r| r.get(0))?;
        let mut ids = Vec::with_capacity(items.len());
        {
            let mut insert = tx.prepare(
                "INSERT INTO items (pos, kind, target, name, size, state, bytes_total, files_total,
                    added_ms, sources) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?5, ?6, ?7, ?8)",
            )?;
            let now = now_ms();
            for it in items {
                pos += 1;
                let sources = match it.sources.is_empty() {
                    true => None,
                    // Named: PeerHit skips empty fields, which a positional encoding would misplace.
                    false => rmp_serde::to_vec_named(&it.sources).ok(),
                };
                insert.execute(params![
                    pos,
                    kind_str(&it.kind),
                    it.target,
                    it.name,
                    it.size.map(|s| s as i64),
                    (it.kind == ItemKind::File).then_some(1i64),
                    now,
                    sources,
                ])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// The item `id`.
    pub fn get(&self, id: i64) -> Result<Item, QueueError> {
        self.db()
            .query_row(
                &format!("SELECT {COLUMNS} FROM items WHERE id = ?1"),
                [id],
                row_item,
            )
            .optional()?
            .ok_or(QueueError::NotFound(id))
    }

    /// A page of items in queue order (only those in `state`, if given), and how many there
    /// are in all (in that state). `limit` is at most [`MAX_PAGE`].
    pub fn list(
        &self,
        state: Option<ItemState>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Item>, u64), QueueError> {
        let db = self.db();
        let limit = limit.min(MAX_PAGE) as i64;
        let offset = offset.min(i64::MAX as usize) as i64;
        let (items, total) = match state {
            Some(s) => {
                let mut q = db.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM items WHERE state = ?1 ORDER BY pos LIMIT ?2 OFFSET ?3"
                ))?;
                let items = q
                    .query_map(params![s.as_str(), limit, offset], row_item)?
                    .collect::<Result<Vec<_>, _>>()?;
                let total: i64 = db.query_row(
                    "SELECT COUNT(*) FROM items WHERE state = ?1",
                    [s.as_str()],
                    |r| r.get(0),
                )?;
                (items, total)
            }
            None => {
                let mut q = db.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM items ORDER BY pos LIMIT ?1 OFFSET ?2"
                ))?;
                let items = q
                    .query_map(params![limit, offset], row_item)?
                    .collect::<Result<Vec<_>, _>>()?;
                let total: i64 = db.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?;
                (items, total)
            }
        };
        Ok((items, total as u64))
    }

    /// How many items are in each state.
    pub fn counts(&self) -> Result<Counts, QueueError> {
        let db = self.db();
        let mut q = db.prepare_cached("SELECT state, COUNT(*) FROM items GROUP BY state")?;
        let mut c = Counts::default();
        for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (s, n) = row?;
            let n = n as u64;
            match ItemState::parse(&s) {
                Some(ItemState::Queued) => c.queued = n,
                Some(ItemState::Running) => c.running = n,
                Some(ItemState::Paused) => c.paused = n,
                Some(ItemState::Done) => c.done = n,
                Some(ItemState::Failed) => c.failed = n,
                Some(ItemState::Cancelled) => c.cancelled = n,
                None => {}
            }
        }
        Ok(c)
    }

    /// Moves item `id` to state `to`, if its state allows it (see [`ItemState::can_become`]);
    /// the item as it is now. Going to a finished state sets its finishing time; going back to
    /// queued clears its error.
    pub fn set_state(&self, id: i64, to: ItemState) -> Result<Item, QueueError> {
        self.transition(id, to, None, None)
    }

    /// Ends a running item: done (with where it was saved) or failed (with why).
    pub fn finish(
        &self,
        id: i64,
        result: Result<Option<String>, String>,
    ) -> Result<Item, QueueError> {
        match result {
            Ok(path) => self.transition(id, ItemState::Done, path, None),
            Err(e) => self.transition(id, ItemState::Failed, None, Some(e)),
        }
    }

    fn transition(
        &self,
        id: i64,
        to: ItemState,
        path: Option<String>,
        error: Option<String>,
    ) -> Result<Item, QueueError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let from: String = tx
            .query_row("SELECT state FROM items WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or(QueueError::NotFound(id))?;
        let from = ItemState::parse(&from).unwrap_or(ItemState::Failed);
        if !from.can_become(to) {
            return Err(QueueError::BadTransition { id, from, to });
        }
        let finished = to.finished().then(now_ms);
        tx.execute(
            "UPDATE items SET state = ?2, finished_ms = ?3,
                error = CASE WHEN ?2 = 'queued' THEN NULL ELSE COALESCE(?4, error) END,
                path = COALESCE(?5, path),
                bytes_done = CASE WHEN ?2 = 'done' THEN COALESCE(bytes_total, bytes_done)
                    ELSE bytes_done END
             WHERE id = ?1",
            params![id, to.as_str(), finished, error, path],
        )?;
        let item = tx.query_row(
            &format!("SELECT {COLUMNS} FROM items WHERE id = ?1"),
            [id],
            row_item,
        )?;
        tx.commit()?;
        Ok(item)
    }

    /// Records how far item `id` is (kept across a restart; the live figures are the runner's).
    pub fn set_progress(
        &self,
        id: i64,
        bytes_done: u64,
        bytes_total: Option<u64>,
        files_done: u64,
        files_total: Option<u64>,
    ) -> Result<(), QueueError> {
        let n = self.db().execute(
            "UPDATE items SET bytes_done = ?2, bytes_total = COALESCE(?3, bytes_total),
                files_done = ?4, files_total = COALESCE(?5, files_total) WHERE id = ?1",
            params![
                id,
                bytes_done as i64,
                bytes_total.map(|b| b as i64),
                files_done as i64,
                files_total.map(|b| b as i64)
            ],
        )?;
        match n {
            0 => Err(QueueError::NotFound(id)),
            _ => Ok(()),
        }
    }

    /// Records the name and size the index gave a file (when the item had none).
    pub fn set_info(&self, id: i64, name: &str, size: u64) -> Result<(), QueueError> {
        self.db().execute(
            "UPDATE items SET name = CASE WHEN name = '' THEN ?2 ELSE name END,
                size = COALESCE(size, ?3) WHERE id = ?1",
            params![id, name, size as i64],
        )?;
        Ok(())
    }

    /// Records an error of part of an item (a file of a folder) without ending it.
    pub fn set_error(&self, id: i64, error: &str) -> Result<(), QueueError> {
        self.db().execute(
            "UPDATE items SET error = ?2 WHERE id = ?1",
            params![id, error],
        )?;
        Ok(())
    }

    /// Moves item `id` to `position` in the queue order (0: first; past the end: last).
    pub fn move_to(&self, id: i64, position: usize) -> Result<(), QueueError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let from: i64 = tx
            .query_row("SELECT pos FROM items WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or(QueueError::NotFound(id))?;
        let to: Option<i64> = tx
            .query_row(
                "SELECT pos FROM items ORDER BY pos LIMIT 1 OFFSET ?1",
                [position.min(i64::MAX as usize) as i64],
                |r| r.get(0),
            )
            .optional()?;
        let to = match to {
            Some(p) => p,
            None => tx.query_row("SELECT MAX(pos) FROM items", [], |r| r.get(0))?,
        };
        if to < from {
            tx.execute(
                "UPDATE items SET pos = pos + 1 WHERE pos >= ?1 AND pos < ?2",
                params![to, from],
            )?;
        } else if to > from {
            tx.execute(
                "UPDATE items SET pos = pos - 1 WHERE pos > ?1 AND pos <= ?2",
                params![from, to],
            )?;
        }
        tx.execute("UPDATE items SET pos = ?2 WHERE id = ?1", params![id, to])?;
        tx.commit()?;
        Ok(())
    }

    /// Removes item `id` if it is finished (done, failed or cancelled).
    pub fn remove(&self, id: i64) -> Result<(), QueueError> {
        let item = self.get(id)?;
        if !item.state.finished() {
            return Err(QueueError::BadTransition {
                id,
                from: item.state,
                to: ItemState::Cancelled,
            });
        }
        self.db().execute("DELETE FROM items WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Removes every finished item; how many.
    pub fn remove_finished(&self) -> Result<usize, QueueError> {
        Ok(self.db().execute(
            "DELETE FROM items WHERE state IN ('done', 'failed', 'cancelled')",
            [],
        )?)
    }

    /// The first queued item in queue order, if any.
    pub fn next_queued(&self) -> Result<Option<Item>, QueueError> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {COLUMNS} FROM items WHERE state = 'queued' ORDER BY pos LIMIT 1"),
                [],
                row_item,
            )
            .optional()?)
    }

    /// Whether a file with this content id is done already (so it is not added twice).
    pub fn has_done(&self, content_id: &ContentId) -> Result<bool, QueueError> {
        Ok(self
            .db()
            .query_row(
                "SELECT 1 FROM items WHERE kind = 'file' AND target = ?1 AND state = 'done' LIMIT 1",
                [content_id.to_hex()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ContentId {
        ContentId::from_bytes([n; 32])
    }

    fn queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        (dir, q)
    }

    #[test]
    fn transitions_follow_the_state_machine() {
        use ItemState::*;
        // Every pair: exactly the allowed ones pass.
        let allowed = [
            (Queued, Running),
            (Queued, Paused),
            (Queued, Cancelled),
            (Running, Done),
            (Running, Failed),
            (Running, Paused),
            (Running, Cancelled),
            (Running, Queued),
            (Paused, Queued),
            (Paused, Cancelled),
            (Failed, Queued),
            (Failed, Cancelled),
        ];
        for from in ItemState::ALL {
            for to in ItemState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        // And the queue enforces them, leaving the item as it was on a refusal.
        let (_d, q) = queue();
        let [a] = q.add(&[NewItem::file(id(1))]).unwrap()[..] else {
            panic!()
        };
        assert!(matches!(
            q.set_state(a, Done),
            Err(QueueError::BadTransition { .. })
        ));
        assert_eq!(q.get(a).unwrap().state, Queued);
        q.set_state(a, Running).unwrap();
        let failed = q.finish(a, Err("no live peer".into())).unwrap();
        assert_eq!(failed.state, Failed);
        assert_eq!(failed.error.as_deref(), Some("no live peer"));
        assert!(failed.finished_ms.is_some());
        // A retry clears the error.
        let again = q.set_state(a, Queued).unwrap();
        assert_eq!(again.error, None);
        q.set_state(a, Running).unwrap();
        let done = q.finish(a, Ok(Some("/x/y".into()))).unwrap();
        assert_eq!((done.state, done.path.as_deref()), (Done, Some("/x/y")));
        for to in ItemState::ALL {
            assert!(q.set_state(a, to).is_err(), "done is final ({to:?})");
        }
        assert!(matches!(
            q.set_state(99, Paused),
            Err(QueueError::NotFound(99))
        ));
    }

    #[test]
    fn running_items_are_queued_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ids = {
            let q = Queue::open(dir.path()).unwrap();
            let ids = q
                .add(&[
                    NewItem::file(id(1)),
                    NewItem::file(id(2)),
                    NewItem::file(id(3)),
                ])
                .unwrap();
            q.set_state(ids[0], ItemState::Running).unwrap();
            q.set_progress(ids[0], 100, Some(1000), 0, Some(1)).unwrap();
            q.set_state(ids[1], ItemState::Running).unwrap();
            q.finish(ids[1], Ok(None)).unwrap();
            q.set_state(ids[2], ItemState::Paused).unwrap();
            ids
        };
        // As after a kill: the connection was never closed cleanly before the reopen.
        let q = Queue::open(dir.path()).unwrap();
        let states: Vec<_> = ids.iter().map(|&i| q.get(i).unwrap().state).collect();
        assert_eq!(
            states,
            [ItemState::Queued, ItemState::Done, ItemState::Paused]
        );
        assert_eq!(q.get(ids[0]).unwrap().bytes_done, 100);
        assert_eq!(q.next_queued().unwrap().map(|i| i.id), Some(ids[0]));
        assert!(q.has_done(&id(2)).unwrap());
        assert!(!q.has_done(&id(1)).unwrap());
    }

    #[test]
    fn reorder_moves_to_a_position() {
        let (_d, q) = queue();
        let ids = q
            .add(&(1..=5).map(|n| NewItem::file(id(n))).collect::<Vec<_>>())
            .unwrap();
        let order = |q: &Queue| -> Vec<i64> {
            q.list(None, 0, 100)
                .unwrap()
                .0
                .iter()
                .map(|i| i.id)
                .collect()
        };
        q.move_to(ids[4], 0).unwrap();
        assert_eq!(order(&q), [ids[4], ids[0], ids[1], ids[2], ids[3]]);
        q.move_to(ids[4], 3).unwrap();
        assert_eq!(order(&q), [ids[0], ids[1], ids[2], ids[4], ids[3]]);
        q.move_to(ids[0], 1000).unwrap();
        assert_eq!(order(&q), [ids[1], ids[2], ids[4], ids[3], ids[0]]);
        // With a gap left by a removed item.
        q.set_state(ids[2], ItemState::Cancelled).unwrap();
        q.remove(ids[2]).unwrap();
        q.move_to(ids[0], 1).unwrap();
        assert_eq!(order(&q), [ids[1], ids[0], ids[4], ids[3]]);
        assert_eq!(q.next_queued().unwrap().map(|i| i.id), Some(ids[1]));
        assert!(matches!(q.move_to(12345, 0), Err(QueueError::NotFound(_))));
    }

    #[test]
    fn remove_only_finished_items() {
        let (_d, q) = queue();
        let ids = q
            .add(&(1..=4).map(|n| NewItem::file(id(n))).collect::<Vec<_>>())
            .unwrap();
        assert!(q.remove(ids[0]).is_err(), "a queued item is not removed");
        q.set_state(ids[1], ItemState::Cancelled).unwrap();
        q.set_state(ids[2], ItemState::Running).unwrap();
        q.finish(ids[2], Ok(None)).unwrap();
        assert_eq!(q.remove_finished().unwrap(), 2);
        assert_eq!(q.list(None, 0, 10).unwrap().1, 2);
        let c = q.counts().unwrap();
        assert_eq!((c.queued, c.done, c.cancelled), (2, 0, 0));
    }

    #[test]
    fn ten_thousand_items_list_and_update_fast() {
        let (_d, q) = queue();
        let items: Vec<NewItem> = (0..10_000u32)
            .map(|n| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&n.to_le_bytes());
                NewItem {
                    name: format!("file {n}"),
                    size: Some(n as u64),
                    ..NewItem::file(ContentId::from_bytes(b))
                }
            })
            .collect();
        let started = std::time::Instant::now();
        let ids = q.add(&items).unwrap();
        assert_eq!(ids.len(), 10_000);
        let (page, total) = q.list(None, 9_950, 100).unwrap();
        assert_eq!((page.len(), total), (50, 10_000));
        assert_eq!(page[0].name, "file 9950");
        let (page, _) = q.list(None, 0, 5_000).unwrap();
        assert_eq!(page.len(), MAX_PAGE);
        for &i in &ids[..100] {
            q.set_state(i, ItemState::Paused).unwrap();
        }
        q.move_to(ids[9_999], 0).unwrap();
        assert_eq!(q.list(None, 0, 1).unwrap().0[0].id, ids[9_999]);
        let (paused, n) = q.list(Some(ItemState::Paused), 0, 10).unwrap();
        assert_eq!((paused.len(), n), (10, 100));
        assert_eq!(q.next_queued().unwrap().map(|i| i.id), Some(ids[9_999]));
        // Generous: each of these takes milliseconds; this only catches a full scan per call
        // gone quadratic.
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn sources_are_kept() {
        let (_d, q) = queue();
        let peer = PeerHit {
            peer_id: 7,
            host: "127.0.0.1".into(),
            port: 4000,
            key: None,
            shared_at: 1,
            last_seen: 2,
            have: None,
            path: Some("a/b.txt".into()),
            reach: None,
        };
        let ids = q
            .add(&[NewItem {
                sources: vec![peer.clone()],
                ..NewItem::file(id(1))
            }])
            .unwrap();
        assert_eq!(q.get(ids[0]).unwrap().sources, vec![peer]);
    }
}
