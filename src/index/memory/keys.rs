//! Cheap stand-ins for a name: a sortable key of its first bytes and a trigram signature, so the rank order sorts and filters names without reading them.

use crate::query::lower;

/// The trigrams of a lowercased name (or of query words) as a 64-bit Bloom signature: one
/// bit per trigram. A name can hold a word only if its signature has every bit of the word's.
pub(super) fn signature(lower: &str) -> u64 {
    lowered_signature(lower.as_bytes(), |b| b)
}

fn lowered_signature(bytes: &[u8], fold: impl Fn(u8) -> u8) -> u64 {
    bytes.windows(3).fold(0, |sig, w| {
        let t = u64::from(fold(w[0])) | u64::from(fold(w[1])) << 8 | u64::from(fold(w[2])) << 16;
        sig | 1 << (t.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
    })
}

/// The [`signature`] of a stored name, lowercased as searches lowercase it.
pub(super) fn name_signature(name: &[u8]) -> u64 {
    if name.is_ascii() {
        lowered_signature(name, |b| b.to_ascii_lowercase())
    } else {
        signature(&lower(&String::from_utf8_lossy(name)))
    }
}

/// The first 16 bytes of a name (zeros past its end) as a number that orders as they do.
pub(super) fn name_key(name: &[u8]) -> u128 {
    u128::from_be_bytes(std::array::from_fn(|i| name.get(i).copied().unwrap_or(0)))
}
