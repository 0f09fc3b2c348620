//! What a member's process knows of its group while it runs: the group's key, its own
//! certificate (renewed by the index), and the keys removed from the group; and the check a
//! member makes before it serves or trusts another.

use std::collections::HashSet;
use std::sync::RwLock;

use super::{Membership, MembershipError};
use crate::content::Digest;
use crate::identity::Fingerprint;

/// Why another key is not admitted as a member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// It presented no certificate.
    #[error("this peer serves members of its private group only, and no membership was presented")]
    NoCertificate,
    /// Its certificate does not hold.
    #[error(transparent)]
    Certificate(#[from] MembershipError),
    /// The group's index removed it.
    #[error("the key {0} was removed from the group")]
    Revoked(Fingerprint),
}

/// A member's view of its group, shared by its servers and clients.
#[derive(Debug)]
pub struct GroupState {
    group: Digest,
    /// The secret the group's DHT keys are made with, when known.
    dht_secret: Option<[u8; 32]>,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    membership: Option<Membership>,
    revoked: HashSet<Digest>,
}

impl GroupState {
    /// The group whose index holds `group`, where we hold `membership` (if known yet).
    pub fn new(group: Digest, membership: Option<Membership>) -> GroupState {
        GroupState {
            group,
            dht_secret: None,
            inner: RwLock::new(Inner {
                membership,
                revoked: HashSet::new(),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The same, knowing the group's DHT secret (from `Joined`).
    pub fn with_dht_secret(mut self, secret: [u8; 32]) -> GroupState {
        self.dht_secret = Some(secret);
        self
    }

    /// The secret the group's DHT keys are made with (docs/PROTOCOL.md §10.7).
    pub fn dht_secret(&self) -> Option<[u8; 32]> {
        self.dht_secret
    }

    /// The group: its index's key.
    pub fn group(&self) -> Digest {
        self.group
    }

    /// Our certificate, as last issued.
    pub fn membership(&self) -> Option<Membership> {
        self.read().membership.clone()
    }

    /// Keeps a certificate the index issued, if it is a valid one of this group for `own` (our
    /// key) at `now_ms` and outlasts the one kept; returns whether it was kept. A server that is
    /// not the group's index cannot sign one, so it cannot make us present a bad certificate.
    pub fn renewed(&self, m: Membership, own: &Digest, now_ms: i64) -> bool {
        if m.check(&self.group, own, now_ms).is_err() {
            return false;
        }
        let mut w = self.write();
        let newer = w
            .membership
            .as_ref()
            .is_none_or(|old| old.expires <= m.expires);
        if newer {
            w.membership = Some(m);
        }
        newer
    }

    /// The keys removed from the group, as the index last listed them (replacing the list).
    pub fn set_revoked(&self, keys: impl IntoIterator<Item = Digest>) {
        self.write().revoked = keys.into_iter().collect();
    }

    /// Whether `key`, admitted earlier with a certificate expiring at `expires`, still is a
    /// member at `now_ms`: the certificate has not expired and `key` was not removed since. (The
    /// signature was checked by [`GroupState::admit`]; it does not change.)
    pub fn still_admits(&self, key: &Digest, expires: i64, now_ms: i64) -> Result<(), AdmitError> {
        if now_ms >= expires {
            return Err(AdmitError::Certificate(MembershipError::Expired(expires)));
        }
        if self.read().revoked.contains(key) {
            return Err(AdmitError::Revoked(Fingerprint(*key)));
        }
        Ok(())
    }

    /// Whether `key` may be served or trusted as a member: `cert` is this group's certificate
    /// for `key`, valid at `now_ms`, and `key` was not removed.
    pub fn admit(
        &self,
        cert: Option<&Membership>,
        key: &Digest,
        now_ms: i64,
    ) -> Result<(), AdmitError> {
        let cert = cert.ok_or(AdmitError::NoCertificate)?;
        cert.check(&self.group, key, now_ms)?;
        if self.read().revoked.contains(key) {
            return Err(AdmitError::Revoked(Fingerprint(*key)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn admits_members_only_and_forgets_no_revocation() {
        let index = Identity::from_secret([1; 32]);
        let (a, b) = (
            Identity::from_secret([2; 32]),
            Identity::from_secret([3; 32]),
        );
        let state = GroupState::new(index.public_key(), None);
        let now = 1_000_000;
        let cert_a = Membership::issue(&index, a.public_key(), now + 10);
        assert_eq!(state.admit(Some(&cert_a), &a.public_key(), now), Ok(()));
        assert_eq!(
            state.admit(None, &a.public_key(), now),
            Err(AdmitError::NoCertificate)
        );
        // Presented by another key, expired, or from another group: refused.
        assert!(state.admit(Some(&cert_a), &b.public_key(), now).is_err());
        assert!(
            state
                .admit(Some(&cert_a), &a.public_key(), now + 11)
                .is_err()
        );
        let other = Identity::from_secret([4; 32]);
        let foreign = Membership::issue(&other, a.public_key(), now + 10);
        assert!(state.admit(Some(&foreign), &a.public_key(), now).is_err());
        // Once admitted, only expiry and removal are checked again.
        assert_eq!(state.still_admits(&a.public_key(), now + 10, now), Ok(()));
        assert!(
            state
                .still_admits(&a.public_key(), now + 10, now + 10)
                .is_err()
        );
        state.set_revoked([a.public_key()]);
        assert_eq!(
            state.still_admits(&a.public_key(), now + 10, now),
            Err(AdmitError::Revoked(Fingerprint(a.public_key())))
        );
        assert_eq!(
            state.admit(Some(&cert_a), &a.public_key(), now),
            Err(AdmitError::Revoked(Fingerprint(a.public_key())))
        );
        // Renewal keeps the latest valid certificate of this group for our key only: not
        // another group's, not a forged one however long it claims to last, not another key's.
        let me = a.public_key();
        assert!(!state.renewed(foreign, &me, now));
        let mut forged = Membership::issue(&index, me, now + 10);
        forged.expires = i64::MAX;
        assert!(!state.renewed(forged, &me, now));
        assert!(!state.renewed(
            Membership::issue(&index, b.public_key(), now + 10),
            &me,
            now
        ));
        assert_eq!(state.membership(), None);
        assert!(state.renewed(cert_a.clone(), &me, now));
        assert!(!state.renewed(Membership::issue(&index, me, now + 5), &me, now));
        assert_eq!(state.membership(), Some(cert_a));
    }
}
