//! A member's record of its private group, kept in the state directory: which index, its key,
//! and the latest membership certificate. Written by `join`, renewed whenever the index issues
//! a newer certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::group::{GroupState, Membership};
use crate::identity::Fingerprint;

/// The file, in the state directory.
pub const MEMBERSHIP_FILE: &str = "membership.json";

/// Why the record cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MemberFileError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file does not hold a record.
    #[error("{}: not a membership record ({why}); join again", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// One private group this user is a member of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The index's `HOST:PORT`.
    pub index: String,
    /// The index's key: the group.
    pub key: String,
    /// The latest certificate, MessagePack in hex.
    pub certificate: String,
    /// The group's DHT secret, in hex.
    #[serde(default)]
    pub dht_secret: String,
}

impl MemberRecord {
    /// A record of `membership` in the group of the index at `index`, whose DHT secret is
    /// `dht_secret`.
    pub fn new(index: &str, membership: &Membership, dht_secret: &[u8]) -> MemberRecord {
        let bytes = rmp_serde::to_vec_named(membership).unwrap_or_default();
        MemberRecord {
            index: index.to_string(),
            key: Fingerprint(membership.group).to_string(),
            certificate: hex(&bytes),
            dht_secret: hex(dht_secret),
        }
    }

    /// The same record with a renewed certificate.
    pub fn renewed(&self, membership: &Membership) -> MemberRecord {
        MemberRecord {
            certificate: hex(&rmp_serde::to_vec_named(membership).unwrap_or_default()),
            ..self.clone()
        }
    }

    /// The group's DHT secret, if recorded.
    pub fn dht_secret(&self) -> Option<[u8; 32]> {
        unhex(&self.dht_secret)?.try_into().ok()
    }

    /// The index's key.
    pub fn group(&self) -> Option<Fingerprint> {
        self.key.parse().ok()
    }

    /// The certificate, if it decodes.
    pub fn membership(&self) -> Option<Membership> {
        rmp_serde::from_slice(&unhex(&self.certificate)?).ok()
    }

    /// The group state to run with: the group's key, this certificate, the DHT secret.
    pub fn state(&self) -> Option<Arc<GroupState>> {
        let mut state = GroupState::new(self.group()?.0, self.membership());
        if let Some(s) = self.dht_secret() {
            state = state.with_dht_secret(s);
        }
        Some(Arc::new(state))
    }

    /// `HOST:PORT#KEY`: the index, requiring its key.
    pub fn index_spec(&self) -> String {
        format!("{}#{}", self.index, self.key)
    }

    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(MEMBERSHIP_FILE)
    }

    /// The record in `state_dir`, if this user joined a group.
    pub fn load(state_dir: &Path) -> Result<Option<MemberRecord>, MemberFileError> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(MemberFileError::Io { path, source }),
        };
        let rec: MemberRecord = serde_json::from_str(&text).map_err(|e| MemberFileError::Bad {
            path: path.clone(),
            why: e.to_string(),
        })?;
        if rec.group().is_none() {
            return Err(MemberFileError::Bad {
                path,
                why: "bad key".into(),
            });
        }
        Ok(Some(rec))
    }

    /// Writes the record to `state_dir` (a new file renamed over the old).
    pub fn save(&self, state_dir: &Path) -> Result<(), MemberFileError> {
        let path = Self::path(state_dir);
        let io = |source| MemberFileError::Io {
            path: path.clone(),
            source,
        };
        let _lock = super::trust::lock_beside(&path).map_err(io)?;
        let text = serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        super::trust::replace_file(&path, text.as_bytes()).map_err(io)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits as bytes (at most 4 KiB of them); `None` if they are not.
fn unhex(text: &str) -> Option<Vec<u8>> {
    let hex = text.as_bytes();
    if !hex.len().is_multiple_of(2) || hex.len() > 8192 {
        return None;
    }
    hex.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_record_round_trips_and_junk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(MemberRecord::load(dir.path()).unwrap(), None);
        let index = Identity::from_secret([1; 32]);
        let m = Membership::issue(&index, Identity::from_secret([2; 32]).public_key(), 99);
        let rec = MemberRecord::new("127.0.0.1:5", &m, &[4; 32]);
        rec.save(dir.path()).unwrap();
        let back = MemberRecord::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.membership(), Some(m));
        assert_eq!(back.dht_secret(), Some([4; 32]));
        assert_eq!(back.state().unwrap().dht_secret(), Some([4; 32]));
        assert_eq!(back.group(), Some(index.fingerprint()));
        std::fs::write(dir.path().join(MEMBERSHIP_FILE), "{").unwrap();
        let e = MemberRecord::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("join again") && !e.contains('\n'), "{e}");
    }
}
