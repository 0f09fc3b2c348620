//! A private index's members and invites, and its own small values (its key, its address), in SQL.
//!
//! Plain functions over a connection, shared by [`super::IndexStore`] (the running index) and
//! [`super::GroupStore`] (the `invite` and `members` commands, in another process). Writes run
//! in `BEGIN IMMEDIATE` transactions: with two processes writing, a transaction that read
//! first and then tried to write could otherwise fail at once with SQLITE_BUSY instead of
//! waiting for the other.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::StoreError;
use super::schema::digest_from;
use crate::content::Digest;
use crate::identity::random_bytes;

/// The `meta` key of the index's Ed25519 secret.
const SECRET_KEY: &str = "index_secret";

/// A member of a private index, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// A small stable id, for `peershare members remove ID`.
    pub id: i64,
    /// The member's public key.
    pub public_key: Digest,
    /// When it joined (or was admitted again after a revocation), ms since the epoch.
    pub joined: i64,
    /// When it was last connected, ms since the epoch.
    pub last_seen: i64,
    /// When it was removed, if it was.
    pub revoked: Option<i64>,
}

/// Why an invite does not admit a new member. The messages are for the joining user.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// No invite has this secret: mistyped, or made by another index.
    #[error(
        "this index knows no such invite: check that it was copied whole, or ask for a new one"
    )]
    Unknown,
    /// The invite's time is over.
    #[error("this invite expired at {}; ask for a new one", crate::group::format_ms(*.0))]
    Expired(i64),
    /// Every use of the invite has been spent.
    #[error("this invite has been used up; ask for a new one")]
    UsedUp,
    /// The key was removed from the group after the invite was made.
    #[error(
        "this key was removed from the group after this invite was made; only a newer invite admits it again"
    )]
    Removed,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for RedeemError {
    fn from(e: rusqlite::Error) -> Self {
        RedeemError::Store(e.into())
    }
}

fn immediate(c: &mut Connection) -> Result<Transaction<'_>, rusqlite::Error> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
}

pub(super) fn get_meta(c: &Connection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?,
    )
}

pub(super) fn set_meta(c: &Connection, key: &str, value: &[u8]) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO meta(key, value) VALUES(?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// The index's secret key, made and committed on first use. Two processes making it at once
/// both end up with the one that was committed first.
pub(super) fn index_secret(c: &mut Connection) -> Result<[u8; 32], StoreError> {
    if let Some(secret) = get_meta(c, SECRET_KEY)?.and_then(|v| v.try_into().ok()) {
        return Ok(secret);
    }
    let fresh = random_bytes().map_err(|e| StoreError::Random(e.to_string()))?;
    let tx = immediate(c)?;
    let stored = get_meta(&tx, SECRET_KEY)?;
    let secret = match stored {
        None => {
            set_meta(&tx, SECRET_KEY, &fresh)?;
            fresh
        }
        Some(v) => v
            .try_into()
            .map_err(|v: Vec<u8>| StoreError::BadSecret(v.len()))?,
    };
    tx.commit()?;
    Ok(secret)
}

pub(super) fn create_invite(
    c: &Connection,
    hash: &Digest,
    uses: u32,
    expires_ms: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO invites(hash, uses_left, expires, created) VALUES(?1, ?2, ?3, ?4)",
        params![&hash.0[..], uses, expires_ms, now_ms],
    )?;
    Ok(())
}

const MEMBER_COLUMNS: &str = "id, public_key, joined, last_seen, revoked";

fn member_row(r: &Row<'_>) -> Result<MemberRow, rusqlite::Error> {
    Ok(MemberRow {
        id: r.get(0)?,
        // Written only from a Digest; a damaged key reads as all zeros rather than failing
        // the whole listing.
        public_key: digest_from(r.get(1)?).unwrap_or_default(),
        joined: r.get(2)?,
        last_seen: r.get(3)?,
        revoked: r.get(4)?,
    })
}

pub(super) fn member(c: &Connection, key: &Digest) -> Result<Option<MemberRow>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {MEMBER_COLUMNS} FROM members WHERE public_key = ?1"),
        [&key.0[..]],
        member_row,
    )
    .optional()?)
}

pub(super) fn members(c: &Connection) -> Result<Vec<MemberRow>, StoreError> {
    let mut stmt = c.prepare(&format!("SELECT {MEMBER_COLUMNS} FROM members ORDER BY id"))?;
    let rows = stmt.query_map([], member_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Admits `member` with the invite whose secret hashes to `hash`, in one transaction.
pub(super) fn redeem_invite(
    c: &mut Connection,
    hash: &Digest,
    member_key: &Digest,
    now_ms: i64,
) -> Result<MemberRow, RedeemError> {
    let tx = immediate(c)?;
    let existing = member(&tx, member_key)?;
    // A member joining again (a second device with a copied key, a retried join) spends
    // nothing, whatever the invite's state: it is in already.
    if let Some(row) = existing.as_ref().filter(|r| r.revoked.is_none()) {
        tx.execute(
            "UPDATE members SET last_seen = ?2 WHERE id = ?1",
            params![row.id, now_ms],
        )?;
        tx.commit()?;
        return Ok(MemberRow {
            last_seen: now_ms,
            ..row.clone()
        });
    }
    let invite: Option<(i64, i64, i64)> = tx
        .query_row(
            "SELECT uses_left, expires, created FROM invites WHERE hash = ?1",
            [&hash.0[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    // A used-up invite keeps its row (with no uses left), so its user is told so rather than
    // that it is unknown.
    match invite {
        None => return Err(RedeemError::Unknown),
        Some((uses, _, _)) if uses <= 0 => return Err(RedeemError::UsedUp),
        Some((_, expires, _)) if now_ms >= expires => return Err(RedeemError::Expired(expires)),
        // A removed key comes back only with an invite made after its removal: a multi-use
        // invite it (or a friend) still holds does not undo the removal.
        Some((_, _, created))
            if existing
                .as_ref()
                .and_then(|r| r.revoked)
                .is_some_and(|revoked| created <= revoked) =>
        {
            return Err(RedeemError::Removed);
        }
        Some(_) => {}
    }
    tx.execute(
        "UPDATE invites SET uses_left = uses_left - 1 WHERE hash = ?1",
        [&hash.0[..]],
    )?;
    match existing {
        // Removed earlier, invited again: admitted again, under its old id.
        Some(row) => tx.execute(
            "UPDATE members SET revoked = NULL, joined = ?2, last_seen = ?2 WHERE id = ?1",
            params![row.id, now_ms],
        )?,
        None => tx.execute(
            "INSERT INTO members(public_key, joined, last_seen) VALUES(?1, ?2, ?2)",
            params![&member_key.0[..], now_ms],
        )?,
    };
    let row = member(&tx, member_key)?.ok_or(RedeemError::Unknown)?;
    tx.commit()?;
    Ok(row)
}

/// Removes member `id` as of `now_ms` (a member removed before keeps its first time).
pub(super) fn revoke_member(
    c: &mut Connection,
    id: i64,
    now_ms: i64,
) -> Result<Option<MemberRow>, StoreError> {
    let tx = immediate(c)?;
    tx.execute(
        "UPDATE members SET revoked = coalesce(revoked, ?2) WHERE id = ?1",
        params![id, now_ms],
    )?;
    let row = tx
        .query_row(
            &format!("SELECT {MEMBER_COLUMNS} FROM members WHERE id = ?1"),
            [id],
            member_row,
        )
        .optional()?;
    tx.commit()?;
    Ok(row)
}

pub(super) fn touch_member(c: &Connection, key: &Digest, now_ms: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE members SET last_seen = max(last_seen, ?2) WHERE public_key = ?1",
        params![&key.0[..], now_ms],
    )?;
    Ok(())
}

pub(super) fn revoked_since(c: &Connection, since_ms: i64) -> Result<Vec<Digest>, StoreError> {
    let mut stmt = c.prepare(
        "SELECT public_key FROM members WHERE revoked IS NOT NULL AND revoked >= ?1
         ORDER BY revoked DESC, id DESC LIMIT 8192",
    )?;
    let rows = stmt.query_map([since_ms], |r| r.get::<_, Option<Vec<u8>>>(0))?;
    let mut keys = Vec::new();
    for blob in rows {
        keys.extend(digest_from(blob?));
    }
    Ok(keys)
}
