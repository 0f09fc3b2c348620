//! A private index's group: who is a member, what it issues them (certificates, the list of
//! keys removed), and joining with an invite. An open index has none of this.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{IndexStore, RedeemError, StoreError};
use crate::content::Digest;
use crate::group::{GROUP_DHT_CONTEXT, MEMBERSHIP_LIFETIME, invite_hash};
use crate::identity::{Fingerprint, Identity};
use crate::protocol::{ErrorCode, Joined, MAX_REVOKED, Membership};
use crate::query::now_ms;

/// How often the index reads the list of removed members again (`peershare members remove`
/// writes it from another process).
pub const REVOKED_REFRESH: Duration = Duration::from_secs(1);

/// A private index's group: its key signs certificates; removed keys are refused at once.
pub struct PrivateGroup {
    identity: Identity,
    /// Every key removed and not admitted again, as last read from the store.
    revoked: RwLock<HashSet<Digest>>,
    /// Bumped by every join, so a refresh read before it does not undo it.
    joins: AtomicU64,
}

/// Why a request from a key is refused in a private group.
pub fn forbidden(revoked: bool) -> (ErrorCode, &'static str) {
    match revoked {
        true => (
            ErrorCode::Forbidden,
            "this key was removed from the group of this private index",
        ),
        false => (
            ErrorCode::Forbidden,
            "this index is private and this key is not a member: join with an invite (peershare join TOKEN)",
        ),
    }
}

impl PrivateGroup {
    /// The group of the index holding `identity`.
    pub fn new(identity: Identity) -> Arc<PrivateGroup> {
        Arc::new(PrivateGroup {
            identity,
            revoked: RwLock::new(HashSet::new()),
            joins: AtomicU64::new(0),
        })
    }

    /// A certificate for `member`, valid for [`MEMBERSHIP_LIFETIME`] from now.
    pub fn issue(&self, member: Digest) -> Membership {
        let life = i64::try_from(MEMBERSHIP_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        Membership::issue(&self.identity, member, now_ms().saturating_add(life))
    }

    /// The secret the group's DHT keys are made with: derived from the index's own secret key,
    /// so it is the same for every member and known to members only.
    pub fn dht_secret(&self) -> [u8; 32] {
        blake3::derive_key(GROUP_DHT_CONTEXT, &self.identity.signing_key().to_bytes())
    }

    /// Whether `key` was removed (as of the last refresh).
    pub fn is_revoked(&self, key: &Digest) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// Whether `key` is a member now (read from the store: right after a join or a removal).
    pub fn is_member(&self, store: &IndexStore, key: &Digest) -> Result<bool, StoreError> {
        Ok(store.member(key)?.is_some_and(|m| m.revoked.is_none()))
    }

    /// Admits `key` with the invite whose secret is `secret`; commits before returning.
    pub fn join(
        &self,
        store: &IndexStore,
        key: &Digest,
        secret: &[u8],
    ) -> Result<Result<Joined, (ErrorCode, String)>, StoreError> {
        let Ok(secret) = <[u8; 32]>::try_from(secret) else {
            return Ok(Err((
                ErrorCode::BadRequest,
                format!("an invite secret is 32 bytes, not {}", secret.len()),
            )));
        };
        match store.redeem_invite(&invite_hash(&secret), key, now_ms()) {
            Ok(row) => {
                self.joins.fetch_add(1, Ordering::SeqCst);
                self.revoked
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(key);
                info!(member = row.id, key = %Fingerprint(*key), "member joined");
                Ok(Ok(Joined {
                    membership: self.issue(*key),
                    dht_secret: self.dht_secret().to_vec(),
                }))
            }
            Err(RedeemError::Store(e)) => Err(e),
            Err(e) => Ok(Err((ErrorCode::Forbidden, e.to_string()))),
        }
    }

    /// What a member's heartbeat gets: a renewed certificate, and the keys removed whose
    /// certificates may still be valid (at most [`MAX_REVOKED`], the latest removed). `None`
    /// if the key is no member now (read from the store, not the cache: a removal is never
    /// followed by a renewal).
    pub fn renewal(
        &self,
        store: &IndexStore,
        key: &Digest,
    ) -> Result<Option<(Membership, Vec<Digest>)>, StoreError> {
        let now = now_ms();
        if !self.is_member(store, key)? {
            return Ok(None);
        }
        store.touch_member(key, now)?;
        // A certificate issued just before a removal lives one lifetime; the refresh and
        // clocks a little longer.
        let window = MEMBERSHIP_LIFETIME + REVOKED_REFRESH + Duration::from_secs(60);
        let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut revoked = store.revoked_since(now.saturating_sub(window))?;
        revoked.truncate(MAX_REVOKED);
        Ok(Some((self.issue(*key), revoked)))
    }

    /// Reads the removed keys every [`REVOKED_REFRESH`] until shutdown, and takes each key
    /// removed since the last read out of the search results at once (not a lease later).
    pub async fn refresh_loop(
        self: Arc<Self>,
        store: Arc<IndexStore>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(REVOKED_REFRESH);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let s = store.clone();
            let joins = self.joins.load(Ordering::SeqCst);
            match tokio::task::spawn_blocking(move || s.revoked_since(i64::MIN)).await {
                // A join since the read is newer than what was read: wait for the next one.
                Ok(Ok(_)) if self.joins.load(Ordering::SeqCst) != joins => {}
                Ok(Ok(keys)) => {
                    let keys: HashSet<Digest> = keys.into_iter().collect();
                    let new: Vec<Digest> = {
                        let mut known = self.revoked.write().unwrap_or_else(|p| p.into_inner());
                        let new = keys.difference(&known).copied().collect();
                        *known = keys;
                        new
                    };
                    if !new.is_empty() {
                        let s = store.clone();
                        let unlisted = tokio::task::spawn_blocking(move || {
                            new.iter().try_for_each(|k| s.unlist_key(k).map(|_| ()))
                        })
                        .await;
                        if let Ok(Err(e)) = unlisted {
                            warn!("taking removed members out of the results: {e}");
                        }
                    }
                }
                Ok(Err(e)) => warn!("reading the removed members: {e}"),
                Err(e) => warn!("reading the removed members: {e}"),
            }
        }
    }
}
