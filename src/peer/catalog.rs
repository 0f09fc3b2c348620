//! `Catalog`: the files a peer shares, by relative path and by content id, with a digest of the whole list.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use super::ShareRoot;

use blake3::hazmat::ChainingValue;

use crate::content::{ContentId, Digest};
use crate::protocol::FileEntry;

/// One shared file as the scanner found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Path relative to its shared directory, `/`-separated (prefixed by the directory's name when several are shared).
    pub rel_path: String,
    /// The shared directory the bytes are in (a symlink's target may be in another one than
    /// the symlink).
    pub root: Arc<ShareRoot>,
    /// Where the bytes are beneath `root`: a path of real directories and a regular file (a
    /// symlink's resolved target), opened beneath the root's handle only, never by its path.
    pub beneath: PathBuf,
    /// The file's name (the last part of its path).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// BLAKE3 of its bytes.
    pub content_id: ContentId,
    /// Piece hashes (empty for single-piece files).
    pub piece_hashes: Arc<Vec<ChainingValue>>,
}

impl SharedFile {
    /// Where the bytes were on disk when scanned (for messages and the hash cache).
    pub fn abs_path(&self) -> PathBuf {
        self.root.path().join(&self.beneath)
    }

    /// The file as listed at the index.
    pub fn entry(&self) -> FileEntry {
        FileEntry {
            path: self.rel_path.clone(),
            name: self.name.clone(),
            size: self.size,
            content_id: self.content_id,
            mtime: self.mtime_ns.div_euclid(1_000_000_000),
            have: None,
        }
    }
}

/// The whole list of shared files.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    by_path: BTreeMap<String, SharedFile>,
    by_id: HashMap<ContentId, Vec<String>>,
}

impl Catalog {
    /// A catalog of `files`, by path and by content id.
    pub fn new(files: impl IntoIterator<Item = SharedFile>) -> Self {
        let mut c = Catalog::default();
        for f in files {
            c.by_id
                .entry(f.content_id)
                .or_default()
                .push(f.rel_path.clone());
            c.by_path.insert(f.rel_path.clone(), f);
        }
        c
    }

    /// Files in the catalog.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether nothing is shared.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Every file, in path order.
    pub fn files(&self) -> impl Iterator<Item = &SharedFile> {
        self.by_path.values()
    }

    /// The copies of a content id (several paths may hold the same bytes).
    pub fn by_id(&self, id: &ContentId) -> impl Iterator<Item = &SharedFile> {
        self.by_id
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|p| self.by_path.get(p))
    }

    /// Digest of the list as the index sees it (paths, names, sizes, ids, mtimes), in path order.
    pub fn digest(&self) -> Digest {
        let mut h = blake3::Hasher::new();
        for f in self.by_path.values() {
            let e = f.entry();
            for part in [e.path.as_bytes(), e.name.as_bytes()] {
                h.update(&(part.len() as u64).to_le_bytes());
                h.update(part);
            }
            h.update(&e.size.to_le_bytes());
            h.update(e.content_id.as_bytes());
            h.update(&e.mtime.to_le_bytes());
        }
        Digest(*h.finalize().as_bytes())
    }

    /// What changed from `old` to `self`: entries to add or replace, paths to remove.
    pub fn diff(&self, old: &Catalog) -> (Vec<FileEntry>, Vec<String>) {
        let upsert = self
            .by_path
            .iter()
            .filter(|(p, f)| old.by_path.get(*p).map(|o| o.entry()) != Some(f.entry()))
            .map(|(_, f)| f.entry())
            .collect();
        let remove = old
            .by_path
            .keys()
            .filter(|p| !self.by_path.contains_key(*p))
            .cloned()
            .collect();
        (upsert, remove)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, id: u8) -> SharedFile {
        SharedFile {
            rel_path: path.into(),
            root: Arc::new(ShareRoot::open(&std::env::temp_dir()).unwrap()),
            beneath: PathBuf::from(path),
            name: path.rsplit('/').next().unwrap_or(path).into(),
            size: 3,
            mtime_ns: 1_500_000_000,
            content_id: ContentId::from_bytes([id; 32]),
            piece_hashes: Arc::new(Vec::new()),
        }
    }

    #[test]
    fn diff_and_digest() {
        let a = Catalog::new([file("a", 1), file("d/b", 2)]);
        let b = Catalog::new([file("a", 9), file("c", 3)]);
        let (up, rm) = b.diff(&a);
        assert_eq!(
            up.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(rm, ["d/b"]);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(
            a.digest(),
            Catalog::new([file("d/b", 2), file("a", 1)]).digest()
        );
        assert_eq!(b.by_id(&ContentId::from_bytes([3; 32])).count(), 1);
    }
}
