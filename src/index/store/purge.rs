//! Forgetting peers not heard from for long: ephemeral ones soon after their connection, others
//! after the long purge time.

use rusqlite::params;

use super::{IndexStore, StoreError};

impl IndexStore {
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
}
