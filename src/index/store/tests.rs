//! Tests of the store that read its database directly.

use rusqlite::Connection;

use super::*;
use crate::query::Query;

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
    let found = store
        .search(&Query::parse("report"), Page::first(10), 0)
        .unwrap();
    assert_eq!(found.files.len(), 1);
    assert_eq!(found.files[0].name, "Report.pdf");
    let c = store.writer.lock().unwrap();
    let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    let lower = "SELECT count(*) FROM pragma_table_info('files') WHERE name = 'name_lower'";
    assert_eq!(count(lower), 0, "the column is gone");
    let index = "SELECT count(*) FROM sqlite_master WHERE name = 'files_by_content'";
    assert_eq!(count(index), 0, "the index is gone");
}

/// A database made before private groups (no `meta`, `invites` or `members`) opens, keeps its
/// peers and files, and gains working group tables.
#[test]
fn a_database_from_before_groups_gains_the_group_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE peers(
           id INTEGER PRIMARY KEY AUTOINCREMENT, public_key BLOB NOT NULL UNIQUE,
           host TEXT NOT NULL, port INTEGER NOT NULL, catalog_digest BLOB,
           online INTEGER NOT NULL DEFAULT 0, ephemeral INTEGER NOT NULL DEFAULT 0,
           first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL);
         CREATE TABLE files(
           peer_id INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
           path TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
           content_id BLOB NOT NULL, mtime INTEGER NOT NULL, shared_at INTEGER NOT NULL,
           have BLOB, PRIMARY KEY(peer_id, path)) WITHOUT ROWID;
         INSERT INTO peers(public_key, host, port, online, first_seen, last_seen)
           VALUES(x'01', '127.0.0.1', 4000, 1, 5, 5);
         INSERT INTO files VALUES(1, 'a/Report.pdf', 'Report.pdf', 7, zeroblob(32), 0, 5, NULL);",
    )
    .unwrap();
    drop(old);
    // The command line may be the first to open it; then the index.
    let mut cli = GroupStore::open(&path).unwrap();
    let secret = cli.index_secret().unwrap();
    let store = IndexStore::open(&path).unwrap();
    assert_eq!(
        store
            .search(&Query::parse("report"), Page::first(10), 0)
            .unwrap()
            .files
            .len(),
        1
    );
    assert_eq!(store.index_secret().unwrap(), secret);
    let hash = crate::content::Digest([1; 32]);
    let member = crate::content::Digest([2; 32]);
    store.create_invite(&hash, 1, 10, 0).unwrap();
    let row = store.redeem_invite(&hash, &member, 1).unwrap();
    assert_eq!(cli.members().unwrap(), vec![row]);
}
