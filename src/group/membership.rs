//! Membership certificates: a private index's signature saying a key belongs to its group until a time.

use std::time::Duration;

use ed25519_dalek::{Signature, Signer, VerifyingKey};

use crate::content::Digest;
use crate::identity::{Fingerprint, Identity};

/// What a membership signature covers first, so that it can never pass for a signature the
/// same key makes for another purpose (the TLS handshake, a registration).
pub const MEMBERSHIP_CONTEXT: &[u8] = b"peershare membership v1\0";

/// How long a certificate is valid. The index renews it long before, while the member stays
/// connected; a short lifetime bounds how long a copied certificate is worth anything. Removing
/// a member does not wait for this: sharing peers also fetch the list of keys revoked since
/// their oldest unexpired certificate could have been issued, and refuse those.
pub const MEMBERSHIP_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

pub use crate::protocol::Membership;

/// Why a membership certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The certificate was issued by another index.
    #[error("this peer belongs to another group (its certificate is from index key {0})")]
    WrongGroup(Fingerprint),
    /// The certificate names another key than the one that presented it.
    #[error("the membership certificate was issued to another key ({0}), not to this peer")]
    WrongMember(Fingerprint),
    /// The certificate's time is over.
    #[error(
        "membership expired at {}; the index renews it while you are connected",
        super::format_ms(*.0)
    )]
    Expired(i64),
    /// The signature is not the group's over these fields.
    #[error(
        "the membership certificate's signature does not check: it was not issued by this group's index"
    )]
    BadSignature,
}

/// The bytes a membership signature covers.
fn signed_bytes(group: &Digest, member: &Digest, expires: i64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(MEMBERSHIP_CONTEXT.len() + 72);
    msg.extend_from_slice(MEMBERSHIP_CONTEXT);
    msg.extend_from_slice(&group.0);
    msg.extend_from_slice(&member.0);
    msg.extend_from_slice(&expires.to_be_bytes());
    msg
}

impl Membership {
    /// The certificate `index` issues to `member`, valid until `expires` (ms since the epoch).
    pub fn issue(index: &Identity, member: Digest, expires: i64) -> Membership {
        let group = index.public_key();
        let signature = index
            .signing_key()
            .sign(&signed_bytes(&group, &member, expires))
            .to_bytes()
            .to_vec();
        Membership {
            group,
            member,
            expires,
            signature,
        }
    }

    /// Checks that this certificate admits `member` to `group` at `now_ms`. The group and member
    /// are compared first (they say the most), then the signature, and only then the time, so
    /// "expired" is said only of a certificate the index really issued.
    pub fn check(
        &self,
        group: &Digest,
        member: &Digest,
        now_ms: i64,
    ) -> Result<(), MembershipError> {
        if self.group != *group {
            return Err(MembershipError::WrongGroup(Fingerprint(self.group)));
        }
        if self.member != *member {
            return Err(MembershipError::WrongMember(Fingerprint(self.member)));
        }
        let key = VerifyingKey::from_bytes(&group.0).map_err(|_| MembershipError::BadSignature)?;
        let sig =
            Signature::from_slice(&self.signature).map_err(|_| MembershipError::BadSignature)?;
        key.verify_strict(&signed_bytes(group, member, self.expires), &sig)
            .map_err(|_| MembershipError::BadSignature)?;
        if now_ms >= self.expires {
            return Err(MembershipError::Expired(self.expires));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRES: i64 = 1_800_000_000_000;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn vector() -> (Identity, Digest, Membership) {
        let index = Identity::from_secret([7; 32]);
        let member = Identity::from_secret([9; 32]).public_key();
        let cert = Membership::issue(&index, member, EXPIRES);
        (index, member, cert)
    }

    /// A test vector for a second implementation: Ed25519 is deterministic, so the same keys
    /// and time give these exact bytes. (The signature was also checked against Python's
    /// `cryptography` package.) The wire form is a 4-entry map with each integer in its
    /// smallest MessagePack form: `expires` is `cf`, a uint 64.
    #[test]
    fn test_vector() {
        let (index, member, cert) = vector();
        let group = index.public_key();
        const GROUP: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
        const MEMBER: &str = "fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618";
        const SIG: &str = concat!(
            "2e2686979f35abfce1f6409759699b6c42ff0ce1c6e07442ab814a04558f1554",
            "5974c60799435fbb99614ffed1b58ea70a268f199e55863e76b1d92b6054c00d"
        );
        assert_eq!(hex(&group.0), GROUP);
        assert_eq!(hex(&member.0), MEMBER);
        assert_eq!(
            hex(&signed_bytes(&group, &member, EXPIRES)),
            // "peershare membership v1\0", group, member, expires.
            format!(
                "706565727368617265206d656d6265727368697020763100{GROUP}{MEMBER}000001a3185c5000"
            )
        );
        assert_eq!(hex(&cert.signature), SIG);
        let wire = rmp_serde::to_vec_named(&cert).unwrap();
        assert_eq!(
            hex(&wire),
            format!(
                "84a567726f7570c420{GROUP}a66d656d626572c420{MEMBER}\
                 a765787069726573cf000001a3185c5000a97369676e6174757265c440{SIG}"
            )
        );
        let back: Membership = rmp_serde::from_slice(&wire).unwrap();
        assert_eq!(back, cert);
        back.check(&group, &member, EXPIRES - 1).unwrap();
    }

    #[test]
    fn a_certificate_admits_only_its_member_to_its_group_until_it_expires() {
        let (index, member, cert) = vector();
        let group = index.public_key();
        let other = Identity::from_secret([1; 32]).public_key();
        assert_eq!(
            cert.check(&other, &member, 0),
            Err(MembershipError::WrongGroup(Fingerprint(group)))
        );
        assert_eq!(
            cert.check(&group, &other, 0),
            Err(MembershipError::WrongMember(Fingerprint(member)))
        );
        assert_eq!(
            cert.check(&group, &member, EXPIRES),
            Err(MembershipError::Expired(EXPIRES))
        );
        let msg = MembershipError::Expired(EXPIRES).to_string();
        assert_eq!(
            msg,
            "membership expired at 2027-01-15T08:00:00.000Z; the index renews it while you are connected"
        );
        for e in [
            MembershipError::WrongGroup(Fingerprint(group)),
            MembershipError::WrongMember(Fingerprint(member)),
            MembershipError::BadSignature,
            MembershipError::Expired(i64::MAX),
        ] {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    /// What an attacker would try: move the expiry, claim the certificate for another key,
    /// sign it themselves, or send a signature of the wrong length.
    #[test]
    fn forged_certificates_are_refused() {
        let (index, member, cert) = vector();
        let group = index.public_key();
        let bad = |c: &Membership, member: &Digest| {
            assert_eq!(
                c.check(&group, member, 0),
                Err(MembershipError::BadSignature)
            );
        };
        bad(
            &Membership {
                expires: EXPIRES + 1,
                ..cert.clone()
            },
            &member,
        );
        let thief = Identity::from_secret([3; 32]).public_key();
        bad(
            &Membership {
                member: thief,
                ..cert.clone()
            },
            &thief,
        );
        // Signed by the member itself, claiming the index's key.
        let mut self_made = Membership::issue(&Identity::from_secret([9; 32]), member, EXPIRES);
        self_made.group = group;
        bad(&self_made, &member);
        for len in [0, 1, 63, 65, 1000] {
            bad(
                &Membership {
                    signature: vec![0; len],
                    ..cert.clone()
                },
                &member,
            );
        }
        let mut flipped = cert.clone();
        flipped.signature[10] ^= 1;
        bad(&flipped, &member);
        // A group "key" that is not a curve point cannot panic either.
        let junk = Digest([0xff; 32]);
        let c = Membership {
            group: junk,
            ..cert
        };
        assert_eq!(
            c.check(&junk, &member, 0),
            Err(MembershipError::BadSignature)
        );
    }
}
