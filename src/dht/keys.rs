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

/// Where announcements go: the public key space ([`content_key`], [`keyword_key`]), or a
/// private group's, whose keys are keyed by a secret only its members know, so that outsiders
/// cannot tell which peers announced which content id or word.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct KeySpace(Option<[u8; 32]>);

impl std::fmt::Debug for KeySpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "KeySpace(group)"
        } else {
            "KeySpace(public)"
        })
    }
}

impl KeySpace {
    /// The public key space.
    pub fn public() -> KeySpace {
        KeySpace(None)
    }

    /// A private group's key space, from the group's DHT secret.
    pub fn group(secret: [u8; 32]) -> KeySpace {
        KeySpace(Some(secret))
    }

    fn keyed(secret: &[u8; 32], kind: &[u8], data: &[u8]) -> Id {
        let mut h = blake3::Hasher::new_keyed(secret);
        h.update(kind);
        h.update(data);
        let mut b = [0u8; 20];
        b.copy_from_slice(&h.finalize().as_bytes()[..20]);
        Id::from(b)
    }

    /// The key a content id is announced under.
    pub fn content(&self, id: &ContentId) -> Id {
        match &self.0 {
            None => content_key(id),
            Some(s) => Self::keyed(s, b"content\0", id.as_bytes()),
        }
    }

    /// The key a keyword is announced under.
    pub fn keyword(&self, word: &str) -> Id {
        match &self.0 {
            None => keyword_key(word),
            Some(s) => Self::keyed(s, b"keyword\0", word.as_bytes()),
        }
    }
}

/// Words announced by so many peers that their keys would narrow nothing: articles and
/// other short function words, and the commonest file extensions. A key held by every peer
/// overflows the nodes that store it (they keep [`crate::dht::MAX_PEERS_PER_KEY`] peers, others
/// fewer), and a query intersecting it would then lose peers. Such words are neither announced
/// nor looked up; the peers asked still match them against their files.
pub const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "at", "by", "de", "del", "der", "die", "el", "en", "et", "for", "from", "in",
    "is", "it", "la", "le", "les", "of", "on", "or", "the", "to", "und", "with", // words
    "avi", "bin", "bmp", "csv", "dat", "doc", "docx", "flac", "gif", "gz", "htm", "html", "jpeg",
    "jpg", "json", "log", "m4a", "md", "mkv", "mov", "mp3", "mp4", "ogg", "pdf", "png", "py",
    "rar", "rs", "tar", "tgz", "tmp", "txt", "wav", "webm", "webp", "xml", "xz",
    "zip", // extensions
];

/// Whether a lowercase word gets a key: long enough, not only digits (track and disc numbers,
/// years: every sharer has them), and not a [`STOP_WORDS`] word.
pub fn worth_a_key(word: &str) -> bool {
    word.chars().count() >= MIN_KEYWORD_CHARS
        && !word.chars().all(|c| c.is_numeric())
        && !STOP_WORDS.contains(&word)
}

/// The normalised keywords of a name or query: lowercase runs of letters and digits that are
/// [`worth_a_key`], each once, at most [`MAX_KEYWORDS`].
pub fn keywords(name: &str) -> Vec<String> {
    let lower = name.to_lowercase();
    let mut out: Vec<String> = Vec::new();
    for w in lower.split(|c: char| !c.is_alphanumeric()) {
        if worth_a_key(w) && !out.iter().any(|x| x == w) {
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
        assert_eq!(keywords("Isaac.py"), ["isaac"]);
        assert_eq!(
            keywords("My Song - my SONG (live) 2.mp3"),
            ["my", "song", "live"]
        );
        // Numbers, function words and common extensions are not worth a key.
        assert_eq!(
            keywords("01 - The Wall of Sound 1979 (Remaster).flac"),
            ["wall", "sound", "remaster"]
        );
        assert_eq!(keywords("mp3 2024"), Vec::<String>::new());
        assert_eq!(keywords("R2D2 x86"), ["r2d2", "x86"]);
        assert_eq!(keywords("Ünïcode_Wörds"), ["ünïcode", "wörds"]);
        assert!(keywords("a b c").is_empty());
        assert_eq!(keyword_key("isaac"), keyword_key("isaac"));
        assert_ne!(keyword_key("isaac"), keyword_key("isaad"));
        let id = ContentId::from_bytes([7; 32]);
        assert_eq!(content_key(&id).as_bytes(), &[7u8; 20]);
        // A group's keys are neither the public ones nor another group's.
        let (a, b) = (KeySpace::group([1; 32]), KeySpace::group([2; 32]));
        assert_eq!(KeySpace::public().content(&id), content_key(&id));
        assert_eq!(KeySpace::public().keyword("isaac"), keyword_key("isaac"));
        assert_ne!(a.content(&id), content_key(&id));
        assert_ne!(a.keyword("isaac"), keyword_key("isaac"));
        assert_ne!(a.keyword("isaac"), b.keyword("isaac"));
        assert_ne!(a.keyword("isaac"), a.content(&id));
        assert_eq!(
            a.keyword("isaac"),
            KeySpace::group([1; 32]).keyword("isaac")
        );
    }
}
