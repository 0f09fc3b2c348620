//! The index database on disk: its schema, how a connection is opened, how older databases
//! are brought up to date, and reading it all into the in-memory [`NameIndex`] at start.

use std::path::Path;

use rusqlite::{Connection, params};

use super::StoreError;
use crate::content::{ContentId, Digest};
use crate::index::memory::{NameIndex, PeerState};
use crate::protocol::FileEntry;

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

/// The tables of a private index: its own small values (its key, its
/// address), invites by the hash of their secret, and members by key (`revoked`: when, in ms).
/// Made with `IF NOT EXISTS`, so a database of an older version gains them in place, and so a
/// [`super::GroupStore`] in another process can make them without the rest of the schema.
pub(super) const GROUP_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(
  key TEXT PRIMARY KEY,
  value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS invites(
  hash BLOB PRIMARY KEY,
  uses_left INTEGER NOT NULL,
  expires INTEGER NOT NULL,
  created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  public_key BLOB NOT NULL UNIQUE,
  joined INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  revoked INTEGER
);
CREATE INDEX IF NOT EXISTS members_revoked ON members(revoked) WHERE revoked IS NOT NULL;
";

/// Opens a connection to the database in WAL mode with full syncs and foreign keys.
pub(super) fn open_conn(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// A stored 32-byte digest (`None` if missing or of another length).
pub(super) fn digest_from(blob: Option<Vec<u8>>) -> Option<Digest> {
    let b: [u8; 32] = blob?.try_into().ok()?;
    Some(Digest(b))
}

fn id_from(blob: Vec<u8>) -> Option<ContentId> {
    let b: [u8; 32] = blob.try_into().ok()?;
    Some(ContentId::from_bytes(b))
}

/// Creates the tables, brings a database of an older version up to date, and marks the
/// ephemeral peers of the last run offline.
pub(super) fn migrate(writer: &Connection) -> Result<(), StoreError> {
    writer.execute_batch(SCHEMA)?;
    writer.execute_batch(GROUP_SCHEMA)?;
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
    Ok(())
}

/// Reads the whole store into a [`NameIndex`].
pub(super) fn load(c: &Connection) -> Result<NameIndex, StoreError> {
    let mut mem = NameIndex::default();
    let mut stmt = c.prepare("SELECT id, host, port, last_seen, online, public_key FROM peers")?;
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
                key: digest_from(r.get(5)?).unwrap_or_default(),
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
