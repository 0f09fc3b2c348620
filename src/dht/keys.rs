//! DHT keys: the 20-byte info-hash under which a content id, or a keyword of a file name, is announced.

use mainline::Id;

use crate::content::ContentId;

/// BLAKE3 key-derivation context for keyword keys.
pub const KEYWORD_CONTEXT: &str = "peershare 2026 dht keyword v1";
/// Most keywords announced per file name.
pub const MAX_KEYWORDS: usize = 16;
/// Shortest keyword, in characters.
pub const MIN_KEYWORD_CHARS: usize = 2;

/// The info-hash of a content id: its first 20 bytes.
pub fn content_key(id: &ContentId) -> Id {
    let mut b = [0u8; 20];
    b.copy_from_slice(&id.as_bytes()[..20]);
    Id::from(b)
}

/// The info-hash of a keyword: the first 20 bytes of BLAKE3 derive_key(KEYWORD_CONTEXT, word).
pub fn keyword_key(word: &str) -> Id {
    let h = blake3::derive_key(KEYWORD_CONTEXT, word.as_bytes());
    let mut b = [0u8; 20];
    b.copy_from_slice(&h[..20]);
    Id::from(b)
}

/// The normalised keywords of a name or query: lowercase runs of letters and digits of at
/// least [`MIN_KEYWORD_CHARS`], each once, at most [`MAX_KEYWORDS`].
pub fn keywords(name: &str) -> Vec<String> {
    let lower = name.to_lowercase();
    let mut out: Vec<String> = Vec::new();
    for w in lower.split(|c: char| !c.is_alphanumeric()) {
        if w.chars().count() >= MIN_KEYWORD_CHARS && !out.iter().any(|x| x == w) {
            out.push(w.to_string());
            if out.len() == MAX_KEYWORDS {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_normalised_words() {
        assert_eq!(keywords("Isaac.py"), ["isaac", "py"]);
        assert_eq!(
            keywords("My Song - my SONG (live) 2.mp3"),
            ["my", "song", "live", "mp3"]
        );
        assert_eq!(keywords("Ünïcode_Wörds"), ["ünïcode", "wörds"]);
        assert!(keywords("a b c").is_empty());
        assert_eq!(keyword_key("isaac"), keyword_key("isaac"));
        assert_ne!(keyword_key("isaac"), keyword_key("isaad"));
        let id = ContentId::from_bytes([7; 32]);
        assert_eq!(content_key(&id).as_bytes(), &[7u8; 20]);
    }
}
