//! Query rules shared by the index, the peers' catalogs and the DHT: how a query string is read,
//! which files match it, and how matching files are grouped and ranked.
//!
//! This module depends on nothing else in the crate, so every layer can apply the same rules.
//! The content id is a type parameter (the crate uses `ContentId`), and the ranking works on any
//! peer type that says who it is and when it shared the file ([`RankedPeer`]).

mod filters;
mod fold;
mod rank;
#[cfg(test)]
mod tests;

pub use filters::{Filters, MAX_EXT_LEN, MAX_EXTS, extension};
pub use fold::{contains_ci, equals_ci, lower};
pub use rank::{FileGroup, RankedPeer, Row, group_and_rank};

use std::str::FromStr;

/// Most words of a query (words to find and words to exclude together) that are matched; the
/// rest are ignored.
pub const MAX_QUERY_WORDS: usize = 16;

/// A parsed query over files identified by `Id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query<Id> {
    /// Exactly the file with this content id.
    Id(Id),
    /// Files whose lowercased path (within its share, the name included) contains every word
    /// and none of the excluded ones, and that pass the filters.
    Words {
        /// The distinct lowercased words and phrases to find, in query order.
        words: Vec<String>,
        /// The words to find with single spaces: a name equal to it is an exact match.
        whole: String,
        /// The distinct lowercased words and phrases written with a leading `-`.
        exclude: Vec<String>,
        /// Extension, size and date filters.
        filters: Filters,
    },
}

/// What matching needs to know of a file.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts<'a> {
    /// The path within its share, `/`-separated, the name last (UTF-8 bytes).
    pub path: &'a [u8],
    /// The file's size in bytes.
    pub size: u64,
    /// Its modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

impl FileFacts<'_> {
    /// The name: the path's last component.
    pub fn name(&self) -> &[u8] {
        name_of(self.path)
    }
}

/// The last `/`-separated component of a path.
#[inline]
pub fn name_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Splits a query string into its terms: `"quoted phrases"` (an unclosed quote runs to the
/// end) and whitespace-separated words; each with whether it had a leading `-`.
fn terms(q: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = q.trim_start();
    while !rest.is_empty() {
        let (neg, body) = match rest.strip_prefix('-') {
            Some(b) if b.starts_with('"') || b.starts_with(|c: char| !c.is_whitespace()) => {
                (true, b)
            }
            _ => (false, rest),
        };
        let (term, after) = match body.strip_prefix('"') {
            Some(inner) => match inner.find('"') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => (inner, ""),
            },
            None => match body.find(char::is_whitespace) {
                Some(end) => (&body[..end], &body[end..]),
                None => (body, ""),
            },
        };
        let term = term.split_whitespace().collect::<Vec<_>>().join(" ");
        if !term.is_empty() {
            out.push((neg, term.to_lowercase()));
        }
        rest = after.trim_start();
    }
    out
}

impl<Id: FromStr> Query<Id> {
    /// Reads a query: a string that parses as an id asks for that file; anything else is words,
    /// `"phrases"` and `-excluded` words.
    pub fn parse(q: &str) -> Self {
        let trimmed = q.trim();
        if let Ok(id) = trimmed.parse::<Id>() {
            return Query::Id(id);
        }
        let (mut words, mut exclude): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for (neg, t) in terms(trimmed) {
            if words.len() + exclude.len() == MAX_QUERY_WORDS {
                break;
            }
            let list = if neg { &mut exclude } else { &mut words };
            if !list.contains(&t) {
                list.push(t);
            }
        }
        let whole = words.join(" ");
        Query::Words {
            words,
            whole,
            exclude,
            filters: Filters::default(),
        }
    }

    /// [`Query::parse`] with filters (ignored by a content-id query).
    pub fn with_filters(q: &str, f: Filters) -> Self {
        let mut query = Self::parse(q);
        if let Query::Words { filters, .. } = &mut query {
            *filters = f;
        }
        query
    }
}

impl<Id> Query<Id> {
    /// The words to find (none for a content id).
    pub fn words(&self) -> &[String] {
        match self {
            Query::Words { words, .. } => words,
            Query::Id(_) => &[],
        }
    }

    /// Whether a file with these facts matches, content id aside: every word in its path, no
    /// excluded word there, and the filters pass. Always true for a content-id query (whose
    /// callers compare ids).
    pub fn matches_facts(&self, f: &FileFacts<'_>) -> bool {
        match self {
            Query::Id(_) => true,
            Query::Words {
                words,
                exclude,
                filters,
                ..
            } => {
                words.iter().all(|w| contains_ci(f.path, w))
                    && !exclude.iter().any(|w| contains_ci(f.path, w))
                    && filters.pass(f)
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

    /// Whether every word is in the file's name itself (not only in its directories): such
    /// matches rank above the others.
    pub fn in_name(&self, name: &[u8]) -> bool {
        self.words().iter().all(|w| contains_ci(name, w))
    }
}

impl<Id: PartialEq> Query<Id> {
    /// Whether a file matches (the index's rule, applied by peers too).
    pub fn matches(&self, f: &FileFacts<'_>, id: &Id) -> bool {
        match self {
            Query::Id(q) => q == id,
            Query::Words { .. } => self.matches_facts(f),
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
