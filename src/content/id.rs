//! `ContentId`: the BLAKE3 hash of a whole file, printed as 64 lowercase hex characters like `b3sum`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte value carried as a MessagePack `bin` field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The 64 lowercase hex digits of the digest.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteArray::<32>::deserialize(d)?;
        Ok(Digest(bytes.into_array()))
    }
}

/// The content id of a file: BLAKE3 of its bytes, exactly what `b3sum` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentId(pub Digest);

/// A string that is not a content id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a content id is 64 hex characters, got {received:?}")]
pub struct ParseContentIdError {
    /// The string given.
    pub received: String,
}

impl ContentId {
    /// The content id whose BLAKE3 hash bytes are `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentId(Digest(bytes))
    }

    /// The hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0.0
    }

    /// The 64 lowercase hex digits `b3sum` prints.
    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }

    /// Whether `s` has the form of a content id (64 hex digits), without allocating.
    pub fn looks_like(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

impl From<blake3::Hash> for ContentId {
    fn from(h: blake3::Hash) -> Self {
        ContentId::from_bytes(*h.as_bytes())
    }
}

impl FromStr for ContentId {
    type Err = ParseContentIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseContentIdError {
            received: s.chars().take(80).collect(),
        };
        if !ContentId::looks_like(s) {
            return Err(err());
        }
        // Every byte is a hex digit (checked above): decode in place, no allocation.
        let nibble = |b: u8| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b.to_ascii_lowercase().wrapping_sub(b'a').wrapping_add(10),
        };
        let mut bytes = [0u8; 32];
        for (out, pair) in bytes.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            *out = nibble(pair[0]) << 4 | nibble(pair[1]);
        }
        Ok(ContentId::from_bytes(bytes))
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_matches_blake3() {
        let h = blake3::hash(b"abc");
        let id = ContentId::from(h);
        assert_eq!(id.to_hex(), h.to_hex().as_str());
        assert_eq!(id.to_hex().parse::<ContentId>().unwrap(), id);
        assert_eq!(id.to_hex().to_uppercase().parse::<ContentId>().unwrap(), id);
        assert!("abc".parse::<ContentId>().is_err());
        assert!("zz".repeat(32).parse::<ContentId>().is_err());
    }
}
