//! The search rules: what a query is, which names match it, and how matching files are grouped and ranked. The index, peers and the DHT all apply these.

mod case;

pub use case::{contains_ci, equals_ci, lower};

use std::collections::HashMap;

use crate::content::ContentId;
use crate::protocol::{FileHit, PeerHit};

/// Milliseconds since the Unix epoch (the time of `shared_at`, `last_seen` and leases).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Most words of a query that are matched; the rest are ignored.
pub const MAX_QUERY_WORDS: usize = 16;

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Exactly the file with this content id.
    Id(ContentId),
    /// Files whose lowercased name contains every word.
    Words {
        /// The distinct words, lowercased, at most [`MAX_QUERY_WORDS`].
        words: Vec<String>,
        /// The whole query lowercased, words joined by one space (for exact-name matches).
        whole: String,
    },
}

impl Query {
    /// A content id in hex is an id query; anything else is words.
    pub fn parse(q: &str) -> Query {
        let trimmed = q.trim();
        if let Ok(id) = trimmed.parse::<ContentId>() {
            return Query::Id(id);
        }
        let lower = trimmed.to_lowercase();
        let mut words: Vec<String> = Vec::new();
        for w in lower.split_whitespace() {
            if !words.iter().any(|x| x == w) && words.len() < MAX_QUERY_WORDS {
                words.push(w.to_string());
            }
        }
        let whole = lower.split_whitespace().collect::<Vec<_>>().join(" ");
        Query::Words { words, whole }
    }

    /// Whether a file with this name and content id matches (the index's rule, applied by peers too).
    pub fn matches(&self, name: &str, id: &ContentId) -> bool {
        match self {
            Query::Id(q) => q == id,
            Query::Words { words, .. } => {
                let lower = name.to_lowercase();
                words.iter().all(|w| lower.contains(w.as_str()))
            }
        }
    }
}

/// One matching (file, peer) row as read from the store.
#[derive(Debug, Clone)]
pub struct Row {
    /// The file's content id.
    pub content_id: ContentId,
    /// Its name at this peer.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// The peer.
    pub peer: PeerHit,
}

/// Groups rows by content id (one entry per distinct file, one peer entry per peer), ranks
/// exact-name matches first, then files with more peers, then by name; keeps `limit`.
/// Returns the files and whether more matched than were kept.
pub fn group_and_rank(rows: Vec<Row>, query: &Query, limit: usize) -> (Vec<FileHit>, bool) {
    let exact = |name: &str| match query {
        Query::Words { whole, .. } => !whole.is_empty() && name.to_lowercase() == *whole,
        Query::Id(_) => false,
    };
    let mut order: Vec<ContentId> = Vec::new();
    let mut groups: HashMap<ContentId, (FileHit, bool)> = HashMap::new();
    for row in rows {
        let is_exact = exact(&row.name);
        let (hit, any_exact) = groups.entry(row.content_id).or_insert_with(|| {
            order.push(row.content_id);
            (
                FileHit {
                    name: row.name.clone(),
                    size: row.size,
                    content_id: row.content_id,
                    peers: Vec::new(),
                },
                false,
            )
        });
        // The group's name: of its exact matches, else of all, the least in byte order.
        if (is_exact && !*any_exact) || (is_exact == *any_exact && row.name < hit.name) {
            hit.name = row.name.clone();
            *any_exact |= is_exact;
        }
        match hit.peers.iter_mut().find(|p| p.peer_id == row.peer.peer_id) {
            Some(p) => p.shared_at = p.shared_at.min(row.peer.shared_at),
            None => hit.peers.push(row.peer),
        }
    }
    let mut files: Vec<(FileHit, bool)> = order
        .into_iter()
        .filter_map(|id| groups.remove(&id))
        .collect();
    files.sort_by(|(a, ea), (b, eb)| {
        eb.cmp(ea)
            .then(b.peers.len().cmp(&a.peers.len()))
            .then_with(|| a.name.cmp(&b.name))
            .then(a.content_id.cmp(&b.content_id))
    });
    let truncated = files.len() > limit;
    files.truncate(limit);
    let files = files
        .into_iter()
        .map(|(mut f, _)| {
            f.peers.sort_by_key(|p| p.peer_id);
            f
        })
        .collect();
    (files, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u8, name: &str, peer: u64) -> Row {
        Row {
            content_id: ContentId::from_bytes([id; 32]),
            name: name.into(),
            size: 10,
            peer: PeerHit {
                peer_id: peer,
                host: "127.0.0.1".into(),
                port: 1,
                shared_at: 5,
                last_seen: 6,
                have: None,
            },
        }
    }

    #[test]
    fn parse_words_and_ids() {
        assert_eq!(
            Query::parse("  Isaac  PY isaac "),
            Query::Words {
                words: vec!["isaac".into(), "py".into()],
                whole: "isaac py isaac".into()
            }
        );
        let id = ContentId::from_bytes([0xab; 32]);
        assert_eq!(Query::parse(&id.to_hex()), Query::Id(id));
    }

    #[test]
    fn exact_first_then_more_peers_and_limit() {
        let q = Query::parse("isaac.py");
        let rows = vec![
            row(1, "isaac.py.bak", 1),
            row(1, "isaac.py.bak", 2),
            row(1, "isaac.py.bak", 2),
            row(2, "old isaac.py", 3),
            row(3, "Isaac.py", 4),
            row(4, "isaac.py.txt", 1),
        ];
        let (files, truncated) = group_and_rank(rows.clone(), &q, 10);
        assert!(!truncated);
        assert_eq!(files[0].name, "Isaac.py");
        assert_eq!(files[1].name, "isaac.py.bak");
        assert_eq!(files[1].peers.len(), 2, "one entry per peer");
        assert_eq!(files.len(), 4);
        let (files, truncated) = group_and_rank(rows, &q, 2);
        assert!(truncated);
        assert_eq!(files.len(), 2);
    }
}
