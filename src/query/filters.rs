//! Search filters beside the words: extensions, a size range and a modification-time range.

use super::FileFacts;

/// Most extensions one query may list.
pub const MAX_EXTS: usize = 64;
/// Longest extension, in bytes.
pub const MAX_EXT_LEN: usize = 16;

/// Filters a file must pass to match; the default passes every file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    /// Lowercase extensions without the dot: the name's must be one of them (empty: any).
    pub exts: Vec<String>,
    /// Least size in bytes.
    pub min_size: Option<u64>,
    /// Greatest size in bytes.
    pub max_size: Option<u64>,
    /// Modified at or after (seconds since the Unix epoch).
    pub newer: Option<i64>,
    /// Modified before (seconds since the Unix epoch).
    pub older: Option<i64>,
}

/// The lowercased extension of a name: what follows its last dot, if that dot is not the
/// first character (`.bashrc` has none) and the rest is not empty.
pub fn extension(name: &[u8]) -> Option<String> {
    let dot = name.iter().rposition(|&b| b == b'.')?;
    let ext = &name[dot + 1..];
    (dot > 0 && !ext.is_empty()).then(|| String::from_utf8_lossy(ext).to_lowercase())
}

impl Filters {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }

    /// Whether a file passes every filter.
    pub fn pass(&self, f: &FileFacts<'_>) -> bool {
        self.min_size.is_none_or(|m| f.size >= m)
            && self.max_size.is_none_or(|m| f.size <= m)
            && self.newer.is_none_or(|t| f.mtime >= t)
            && self.older.is_none_or(|t| f.mtime < t)
            && (self.exts.is_empty() || extension(f.name()).is_some_and(|e| self.exts.contains(&e)))
    }

    /// Checks the limits a server applies to filters from the network: at most [`MAX_EXTS`]
    /// extensions of at most [`MAX_EXT_LEN`] bytes, none empty or holding a dot or slash.
    pub fn check(&self) -> Result<(), String> {
        if self.exts.len() > MAX_EXTS {
            return Err(format!(
                "{} extensions; at most {MAX_EXTS}",
                self.exts.len()
            ));
        }
        if let Some(e) = self
            .exts
            .iter()
            .find(|e| e.is_empty() || e.len() > MAX_EXT_LEN || e.contains(['.', '/', '\0']))
        {
            return Err(format!("invalid extension {e:?}"));
        }
        Ok(())
    }

    /// The filters with extensions lowercased, sorted and deduplicated (one cache key for
    /// filters that mean the same).
    pub fn normalized(mut self) -> Filters {
        for e in &mut self.exts {
            *e = e.to_lowercase();
        }
        self.exts.sort();
        self.exts.dedup();
        self
    }
}
