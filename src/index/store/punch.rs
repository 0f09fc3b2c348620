//! What hole punching asks of the store: a peer's key by its id.

use rusqlite::OptionalExtension;

use super::schema::digest_from;
use super::{IndexStore, StoreError};
use crate::content::Digest;

impl IndexStore {
    /// The key of peer `peer_id` and whether it is online (registered on an open connection),
    /// `None` for an unknown or ephemeral peer.
    pub fn peer_key(&self, peer_id: u64) -> Result<Option<(Digest, bool)>, StoreError> {
        let Ok(id) = i64::try_from(peer_id) else {
            return Ok(None);
        };
        self.read(|c| {
            let row = c
                .prepare_cached(
                    "SELECT public_key, online FROM peers WHERE id = ?1 AND ephemeral = 0",
                )?
                .query_row([id], |r| {
                    Ok((r.get::<_, Option<Vec<u8>>>(0)?, r.get::<_, bool>(1)?))
                })
                .optional()?;
            Ok(row.and_then(|(key, online)| digest_from(key).map(|k| (k, online))))
        })
    }
}
