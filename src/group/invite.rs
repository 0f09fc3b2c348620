//! Invite tokens: one word a user pastes to join a private index, holding its address, its key and a secret.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;

use super::{echo, is_host_port};
use crate::content::Digest;
use crate::identity::{Fingerprint, IdentityError, random_bytes};
use crate::text::Escaped;

/// What every invite token starts with.
pub const INVITE_PREFIX: &str = "peershare-invite:";

/// Characters of the secret in the token: 32 bytes in unpadded base32.
const SECRET_LEN: usize = 52;

/// An invitation to a private index: where it is (`index`, `HOST:PORT` as given), which key it
/// must prove it holds (`key`; the joining peer checks it in the TLS handshake, so a
/// man in the middle learns nothing) and the secret that admits one new member. Its text form
/// is one word with nothing a shell or a URL treats specially, apart from IPv6 brackets:
/// `peershare-invite:<secret, base32 lowercase>@<HOST:PORT>#<key fingerprint>`.
///
/// `Debug` leaves the secret out, so an invite in a log admits nobody.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// The index's address, `HOST:PORT` (IPv6 in brackets); see [`super::is_host_port`].
    pub index: String,
    /// The index's key.
    pub key: Fingerprint,
    /// The secret; the index stores only [`invite_hash`] of it.
    pub secret: [u8; 32],
}

/// What the index stores of an invite's secret, and looks it up by: a hash, so that its
/// database does not hold working invites. BLAKE3 in key derivation mode, with a context of its
/// own.
pub fn invite_hash(secret: &[u8; 32]) -> Digest {
    Digest(blake3::derive_key("peershare invite v1", secret))
}

impl Invite {
    /// A new invite to the index at `index` (`HOST:PORT`, which the caller has checked with
    /// [`super::is_host_port`]: the token of another address does not parse back) holding
    /// `key`, with a fresh random secret.
    pub fn new(index: String, key: Fingerprint) -> Result<Invite, IdentityError> {
        Ok(Invite {
            index,
            key,
            secret: random_bytes()?,
        })
    }

    /// [`invite_hash`] of this invite's secret.
    pub fn secret_hash(&self) -> Digest {
        invite_hash(&self.secret)
    }
}

impl fmt::Display for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = BASE32_NOPAD.encode(&self.secret).to_ascii_lowercase();
        write!(f, "{INVITE_PREFIX}{secret}@{}#{}", self.index, self.key)
    }
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invite")
            .field("index", &self.index)
            .field("key", &self.key)
            .field("secret", &"…")
            .finish()
    }
}

/// Why a string is not an invite token. Messages are one line, and never repeat the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// It does not start with [`INVITE_PREFIX`] (its first 24 characters).
    #[error("not an invite (it starts with {INVITE_PREFIX}): \"{}\"", Escaped(.0))]
    NotInvite(String),
    /// The `@HOST:PORT` or `#KEY` part is missing: usually a token cut short when copied.
    #[error(
        "the invite ends early (expected {INVITE_PREFIX}SECRET@HOST:PORT#KEY); was it copied whole?"
    )]
    Truncated,
    /// The secret is not 52 base32 characters.
    #[error(
        "the invite's secret is not {SECRET_LEN} characters a-z and 2-7 (it has {0}); was it copied whole?"
    )]
    Secret(usize),
    /// The address is not `HOST:PORT`.
    #[error("the invite's index address is not HOST:PORT: \"{}\"", Escaped(.0))]
    Address(String),
    /// The key is not a fingerprint.
    #[error("the invite's index key is not a key fingerprint (52 characters a-z and 2-7): \"{}\"", Escaped(.0))]
    Key(String),
}

impl FromStr for Invite {
    type Err = InviteError;

    fn from_str(s: &str) -> Result<Invite, InviteError> {
        let rest = s
            .strip_prefix(INVITE_PREFIX)
            // Only the start: enough to see what was pasted instead, too little to repeat a
            // secret that follows a mistyped prefix.
            .ok_or_else(|| InviteError::NotInvite(s.chars().take(24).collect()))?;
        let (secret, rest) = rest.split_once('@').ok_or(InviteError::Truncated)?;
        let (index, key) = rest.rsplit_once('#').ok_or(InviteError::Truncated)?;
        let bad_secret = || InviteError::Secret(secret.chars().count());
        if secret.len() != SECRET_LEN {
            return Err(bad_secret());
        }
        // Decoding refuses non-canonical trailing bits, so each secret has one spelling.
        let bytes = BASE32_NOPAD
            .decode(secret.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad_secret())?;
        let secret: [u8; 32] = bytes.try_into().map_err(|_| bad_secret())?;
        if !is_host_port(index) {
            return Err(InviteError::Address(echo(index)));
        }
        let key = key.parse().map_err(|_| InviteError::Key(echo(key)))?;
        Ok(Invite {
            index: index.to_string(),
            key,
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn invite(index: &str) -> Invite {
        Invite {
            index: index.into(),
            key: Identity::from_secret([7; 32]).fingerprint(),
            secret: [5; 32],
        }
    }

    #[test]
    fn tokens_round_trip_as_one_shell_word() {
        for index in ["example.org:4000", "192.0.2.1:50000", "[2001:db8::1]:4000"] {
            let i = invite(index);
            let text = i.to_string();
            assert!(
                text.starts_with("peershare-invite:aucqkbifaucqkbif"),
                "{text}"
            );
            assert!(text.ends_with(&format!("@{index}#{}", i.key)), "{text}");
            // Nothing a shell would split, expand or quote, other than IPv6 brackets.
            let safe = |c: char| c.is_ascii_alphanumeric() || "-.:_@#[]".contains(c);
            assert!(text.chars().all(safe), "{text}");
            assert_eq!(text.parse::<Invite>().unwrap(), i);
        }
        let fresh = Invite::new("h:1".into(), invite("h:1").key).unwrap();
        assert_ne!(
            fresh.secret,
            Invite::new("h:1".into(), fresh.key).unwrap().secret
        );
    }

    #[test]
    fn the_index_stores_a_hash_not_the_secret() {
        let i = invite("h:1");
        assert_eq!(i.secret_hash(), invite_hash(&[5; 32]));
        assert_ne!(i.secret_hash().0, i.secret);
        assert_ne!(i.secret_hash(), Digest(*blake3::hash(&i.secret).as_bytes()));
        assert!(!format!("{i:?}").contains("aucqkbif"), "{i:?}");
    }

    #[test]
    fn junk_is_refused_saying_what_is_wrong() {
        let good = invite("example.org:4000").to_string();
        let (head, key) = good.rsplit_once('#').unwrap();
        let secret = &head[INVITE_PREFIX.len()..head.find('@').unwrap()];
        let cases: Vec<(String, InviteError)> = vec![
            ("".into(), InviteError::NotInvite("".into())),
            (
                format!("https://{good}"),
                InviteError::NotInvite("https://peershare-invite".into()),
            ),
            (head.into(), InviteError::Truncated),
            (good[..40].into(), InviteError::Truncated),
            (
                good.replacen(secret, &secret[1..], 1),
                InviteError::Secret(51),
            ),
            (
                good.replacen(secret, &secret.replace('a', "1"), 1),
                InviteError::Secret(52),
            ),
            // Non-canonical trailing bits: the last character of 52 carries 4 bits of padding.
            (
                good.replacen(&format!("{secret}@"), &format!("{}b@", &secret[..51]), 1),
                InviteError::Secret(52),
            ),
            (
                good.replace("example.org:4000", "example.org"),
                InviteError::Address("example.org".into()),
            ),
            (
                good.replace("example.org:4000", "ex ample.org:4000"),
                InviteError::Address("ex ample.org:4000".into()),
            ),
            (
                good.replace(key, "abc\u{1b}[2J"),
                InviteError::Key("abc\u{1b}[2J".into()),
            ),
            (format!("{good} "), InviteError::Key(format!("{key} "))),
        ];
        for (text, want) in cases {
            let got = text.parse::<Invite>().unwrap_err();
            assert_eq!(got, want, "{text}");
            let msg = got.to_string();
            assert!(!msg.contains('\n') && !msg.contains('\u{1b}'), "{msg}");
            assert!(!msg.contains(secret), "the secret is not repeated: {msg}");
        }
        let long = format!("x{}", "y".repeat(10_000));
        assert!(long.parse::<Invite>().unwrap_err().to_string().len() < 200);
    }
}
