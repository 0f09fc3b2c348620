//! The private-group API of the store: on [`IndexStore`] for the running index, and on
//! [`GroupStore`] for the `invite` and `members` commands, which open the same file meanwhile.

use std::path::Path;

use rusqlite::Connection;

use super::members::{self, MemberRow, RedeemError};
use super::schema::{GROUP_SCHEMA, open_conn};
use super::{IndexStore, StoreError};
use crate::content::Digest;

/// The index database opened for its group tables only, by a process other than the index
/// (the `invite` and `members` commands): it neither reads the files into memory nor changes
/// the peers' state as [`IndexStore::open`] does. Both may write the file at once: it is in
/// WAL mode, each connection waits up to 10 s for the other's lock, and the group's writes are
/// `BEGIN IMMEDIATE` transactions. The running index sees a change with its next read.
pub struct GroupStore {
    conn: Connection,
}

impl GroupStore {
    /// Opens (creating if needed, with its directory) the database at `path` and its group
    /// tables.
    pub fn open(path: &Path) -> Result<GroupStore, StoreError> {
        super::create_parent(path)?;
        let conn = open_conn(path)?;
        conn.execute_batch(GROUP_SCHEMA)?;
        Ok(GroupStore { conn })
    }

    /// See [`IndexStore::index_secret`].
    pub fn index_secret(&mut self) -> Result<[u8; 32], StoreError> {
        members::index_secret(&mut self.conn)
    }

    /// See [`IndexStore::get_meta`].
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        members::get_meta(&self.conn, key)
    }

    /// See [`IndexStore::set_meta`].
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        members::set_meta(&self.conn, key, value)
    }

    /// See [`IndexStore::create_invite`].
    pub fn create_invite(
        &self,
        hash: &Digest,
        uses: u32,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        members::create_invite(&self.conn, hash, uses, expires_ms, now_ms)
    }

    /// See [`IndexStore::redeem_invite`].
    pub fn redeem_invite(
        &mut self,
        hash: &Digest,
        member: &Digest,
        now_ms: i64,
    ) -> Result<MemberRow, RedeemError> {
        members::redeem_invite(&mut self.conn, hash, member, now_ms)
    }

    /// See [`IndexStore::member`].
    pub fn member(&self, key: &Digest) -> Result<Option<MemberRow>, StoreError> {
        members::member(&self.conn, key)
    }

    /// See [`IndexStore::members`].
    pub fn members(&self) -> Result<Vec<MemberRow>, StoreError> {
        members::members(&self.conn)
    }

    /// See [`IndexStore::revoke_member`].
    pub fn revoke_member(&mut self, id: i64, now_ms: i64) -> Result<Option<MemberRow>, StoreError> {
        members::revoke_member(&mut self.conn, id, now_ms)
    }

    /// See [`IndexStore::revoked_since`].
    pub fn revoked_since(&self, since_ms: i64) -> Result<Vec<Digest>, StoreError> {
        members::revoked_since(&self.conn, since_ms)
    }
}

impl IndexStore {
    /// The index's own Ed25519 secret key (for `Identity::from_secret`): made at random and
    /// committed on the first call, the same ever after, so the database carries the index's
    /// identity.
    pub fn index_secret(&self) -> Result<[u8; 32], StoreError> {
        self.write(members::index_secret)
    }

    /// A small value stored under `key` (e.g. "address", "private"), if any.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| members::get_meta(c, key))
    }

    /// Stores a small value under `key`, replacing any before, committed when this returns.
    /// The key "index_secret" is [`IndexStore::index_secret`]'s.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|c| members::set_meta(c, key, value))
    }

    /// Records an invite by the hash of its secret (`crate::group::invite_hash`): good for
    /// `uses` new members until `expires_ms`.
    pub fn create_invite(
        &self,
        hash: &Digest,
        uses: u32,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(|c| members::create_invite(c, hash, uses, expires_ms, now_ms))
    }

    /// Admits `member` with the invite whose secret hashes to `hash`, in one transaction
    /// committed before this returns, spending one use. A key that is a member already spends
    /// nothing and gets its row back (whatever the invite's state); a removed key with a good
    /// invite is admitted again under its old id and spends a use.
    pub fn redeem_invite(
        &self,
        hash: &Digest,
        member: &Digest,
        now_ms: i64,
    ) -> Result<MemberRow, RedeemError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        members::redeem_invite(&mut conn, hash, member, now_ms)
    }

    /// The member with this key, removed or not.
    pub fn member(&self, key: &Digest) -> Result<Option<MemberRow>, StoreError> {
        self.read(|c| members::member(c, key))
    }

    /// Every member, removed or not, by id.
    pub fn members(&self) -> Result<Vec<MemberRow>, StoreError> {
        self.read(members::members)
    }

    /// Removes member `id` as of `now_ms` and returns its row; `None` if there is no such id.
    /// Removing a removed member again keeps the first time.
    pub fn revoke_member(&self, id: i64, now_ms: i64) -> Result<Option<MemberRow>, StoreError> {
        self.write(|c| members::revoke_member(c, id, now_ms))
    }

    /// Records that the member with this key was connected at `now_ms` (no-op for other keys).
    pub fn touch_member(&self, key: &Digest, now_ms: i64) -> Result<(), StoreError> {
        self.write(|c| members::touch_member(c, key, now_ms))
    }

    /// The keys removed at or after `since_ms`, latest removed first, at most
    /// [`MAX_REVOKED`](crate::protocol::MAX_REVOKED): what a sharing peer needs to refuse
    /// certificates that have not expired yet (ask with `since_ms` = now minus the
    /// certificates' lifetime).
    pub fn revoked_since(&self, since_ms: i64) -> Result<Vec<Digest>, StoreError> {
        self.read(|c| members::revoked_since(c, since_ms))
    }
}
