//! Query rules shared by the index, the peers' catalogs and the DHT: how a query string is read,
//! which names match it, and how matching files are grouped and ranked.
//!
//! This module depends on nothing else in the crate, so every layer can apply the same rules.
//! The content id is a type parameter (the crate uses `ContentId`), and the ranking works on any
//! peer type that says who it is and when it shared the file ([`RankedPeer`]).

mod fold;
mod rank;

pub use fold::{contains_ci, equals_ci, lower};
pub use rank::{FileGroup, RankedPeer, Row, group_and_rank};

use std::str::FromStr;

/// Most words of a query that are matched; the rest are ignored.
pub const MAX_QUERY_WORDS: usize = 16;

/// A parsed query over files identified by `Id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query<Id> {
    /// Exactly the file with this content id.
    Id(Id),
    /// Files whose lowercased name contains every word.
    Words {
        /// The distinct lowercased words, at most [`MAX_QUERY_WORDS`], in query order.
        words: Vec<String>,
        /// The whole lowercased query with single spaces: a name equal to it is an exact match.
        whole: String,
    },
}

impl<Id: FromStr> Query<Id> {
    /// Reads a query: a string that parses as an id asks for that file; anything else is words.
    pub fn parse(q: &str) -> Self {
        let trimmed = q.trim();
        if let Ok(id) = trimmed.parse::<Id>() {
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
}

impl<Id: PartialEq> Query<Id> {
    /// Whether a file with this name and content id matches (the index's rule, applied by peers too).
    pub fn matches(&self, name: &str, id: &Id) -> bool {
        match self {
            Query::Id(q) => q == id,
            Query::Words { words, .. } => {
                let lower = name.to_lowercase();
                words.iter().all(|w| lower.contains(w.as_str()))
            }
        }
    }

    /// Whether `name` is an exact match: lowercased, it equals the whole (non-empty) query.
    /// Exact matches rank first.
    pub fn is_exact_name(&self, name: &str) -> bool {
        match self {
            Query::Words { whole, .. } => !whole.is_empty() && name.to_lowercase() == *whole,
            Query::Id(_) => false,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): the time base of
/// `shared_at`, `last_seen` and liveness.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for a content id: 64 hex characters of one repeated byte.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Id(u8);

    impl FromStr for Id {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let b = s
                .get(..2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(())?;
            (s.len() == 64 && s == format!("{b:02x}").repeat(32))
                .then_some(Id(b))
                .ok_or(())
        }
    }

    #[test]
    fn parse_words_and_ids() {
        assert_eq!(
            Query::<Id>::parse("  Isaac  PY isaac "),
            Query::Words {
                words: vec!["isaac".into(), "py".into()],
                whole: "isaac py isaac".into()
            }
        );
        assert_eq!(Query::parse(&"ab".repeat(32)), Query::Id(Id(0xab)));
        assert_eq!(
            Query::parse(&format!(" {} ", "ab".repeat(32))),
            Query::Id(Id(0xab))
        );
    }

    #[test]
    fn words_are_capped_and_deduplicated() {
        let q: String = (0..40).map(|i| format!("w{i} w{i} ")).collect();
        let Query::<Id>::Words { words, whole } = Query::parse(&q) else {
            panic!("words expected");
        };
        assert_eq!(words.len(), MAX_QUERY_WORDS);
        assert_eq!(words[0], "w0");
        assert_eq!(whole.split(' ').count(), 80, "the whole query is kept");
    }

    #[test]
    fn matching_ignores_case_and_needs_every_word() {
        let q = Query::parse("PY isaac");
        assert!(q.matches("Old ISAAC.py", &Id(1)));
        assert!(!q.matches("isaac.rs", &Id(1)));
        assert!(Query::<Id>::parse("").matches("anything", &Id(1)));
        assert!(Query::parse("über").matches("ÜBER.txt", &Id(1)));
        let by_id = Query::Id(Id(7));
        assert!(by_id.matches("whatever", &Id(7)));
        assert!(!by_id.matches("whatever", &Id(8)));
    }

    #[test]
    fn exact_names() {
        let q = Query::<Id>::parse(" Isaac   PY ");
        assert!(q.is_exact_name("ISAAC py"));
        assert!(!q.is_exact_name("isaac  py"));
        assert!(!Query::<Id>::parse("").is_exact_name(""));
        assert!(!Query::Id(Id(1)).is_exact_name("x"));
    }

    #[test]
    fn the_clock_is_past_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
