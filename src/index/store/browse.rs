//! Answering `Browse`: one page of what a live peer shares under a directory (docs/PROTOCOL.md
//! §7.9), cut from the whole listing, which is read from SQLite by a range of the
//! `(peer_id, path)` primary key in one pass and kept a short while for the next pages.
//!
//! Only well-formed paths are listed: a stored path with an empty, `.` or `..` component, or a
//! leading or trailing `/` (a peer may register any path, §7.2) is left out, as are partial
//! files (entries with `have`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::{IndexStore, StoreError};
use crate::content::ContentId;
use crate::protocol::{
    DirEntry, ErrorCode, ListedFile, Listing, MAX_BROWSE_LIMIT, MAX_CONTROL_PAYLOAD, MAX_PATH_LEN,
};

/// Bytes one `Browse` may hold of a whole listing (names and paths, each counted with
/// `ENTRY_BYTES` = 96 beside it); a larger listing is refused (browse a subdirectory instead).
pub const MAX_BROWSE_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of whole listings kept for the pages after the first.
const CACHE_BYTES: usize = 128 * 1024 * 1024;
/// Whole listings kept at most.
const CACHE_ENTRIES: usize = 32;
/// How long a whole listing is used for later pages (while the index has not changed).
const CACHE_TTL: Duration = Duration::from_secs(10);

/// Bytes of entries (names and the fields beside them, as estimated) one `Listing` carries at
/// most: a page stops early, with `next` set, rather than outgrow a frame.
const PAGE_BYTES: usize = MAX_CONTROL_PAYLOAD * 3 / 4;

/// What an entry costs beside its name, in a reply and in memory.
const ENTRY_BYTES: usize = 96;

/// Why a `Browse` was not answered with a listing: the code and line the client gets.
#[derive(Debug)]
pub struct BrowseRefused(pub ErrorCode, pub String);

/// A `Browse` path, normalized: no leading or trailing `/`, `""` for the top. Refuses `.`,
/// `..`, empty components inside, backslashes, NUL, and paths over [`MAX_PATH_LEN`].
pub fn normalize_browse_path(raw: &str) -> Result<String, String> {
    if raw.len() > MAX_PATH_LEN {
        return Err(format!("path of {} bytes, over {MAX_PATH_LEN}", raw.len()));
    }
    if raw.contains(['\0', '\\']) {
        return Err("a path may not hold a backslash or NUL".into());
    }
    let trimmed = raw.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for c in trimmed.split('/') {
        match c {
            "" => return Err("a path may not hold an empty component (`//`)".into()),
            "." | ".." => return Err(format!("a path may not hold a `{c}` component")),
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// Whether a stored path is listed: relative, with no empty, `.` or `..` component.
fn listable(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|c| !matches!(c, "" | "." | ".."))
}

/// The key range of the files below `dir` (normalized): `[lo, hi)`; everything for the top.
fn range(dir: &str) -> (String, String) {
    if dir.is_empty() {
        // Every stored path is at most MAX_PATH_LEN bytes of UTF-8; U+10FFFF's encoding (F4 8F
        // BF BF) repeated past that length sorts above all of them.
        return (String::new(), "\u{10FFFF}".repeat(MAX_PATH_LEN / 4 + 1));
    }
    // '0' is the byte after '/': `a/…` < `a0`.
    (format!("{dir}/"), format!("{dir}0"))
}

/// A whole listing: what every page of one (peer, path, recursive) is cut from.
struct Whole {
    peer: u64,
    path: String,
    recursive: bool,
    /// The name index's generation when it was read (see [`IndexStore::browse`]).
    generation: u64,
    made: Instant,
    bytes: usize,
    dirs: Vec<DirEntry>,
    files: Vec<ListedFile>,
}

/// Whole listings read recently, newest last.
#[derive(Default)]
pub(super) struct ListingCache(Mutex<VecDeque<Arc<Whole>>>);

impl ListingCache {
    fn get(&self, peer: u64, path: &str, recursive: bool, generation: u64) -> Option<Arc<Whole>> {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.iter()
            .rev()
            .find(|w| {
                (w.peer, w.recursive, w.generation) == (peer, recursive, generation)
                    && w.path == path
                    && w.made.elapsed() < CACHE_TTL
            })
            .cloned()
    }

    fn put(&self, w: Arc<Whole>) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.retain(|o| o.generation == w.generation && o.made.elapsed() < CACHE_TTL);
        q.push_back(w);
        while q.len() > CACHE_ENTRIES || q.iter().map(|w| w.bytes).sum::<usize>() > CACHE_BYTES {
            q.pop_front();
        }
    }
}

impl IndexStore {
    /// One page of what peer `peer_id` (live since `live_since` ms, not ephemeral) shares
    /// under `path` (normalized by [`normalize_browse_path`]). The whole listing is read in
    /// one pass of the peer's files below `path` and kept (at most `CACHE_TTL` = 10 s, and only
    /// while the name index's generation stays the same) for the following pages.
    pub fn browse(
        &self,
        peer_id: u64,
        path: &str,
        recursive: bool,
        offset: u32,
        limit: u32,
        live_since: i64,
    ) -> Result<Result<Listing, BrowseRefused>, StoreError> {
        let limit = limit.clamp(1, MAX_BROWSE_LIMIT) as usize;
        // Read before the database: a change committed meanwhile makes the listing newer
        // than its generation, never older.
        let generation = self.mem_read().generation();
        self.read(|c| {
            if let Err(refused) = check_peer(c, peer_id, live_since)? {
                return Ok(Err(refused));
            }
            let whole = match self.listings.get(peer_id, path, recursive, generation) {
                Some(w) => w,
                None => match read_whole(c, peer_id, path, recursive, generation)? {
                    Ok(w) => {
                        let w = Arc::new(w);
                        self.listings.put(w.clone());
                        w
                    }
                    Err(refused) => return Ok(Err(refused)),
                },
            };
            let mut listing = Listing {
                peer_id,
                path: path.to_string(),
                file: false,
                dirs: Vec::new(),
                files: Vec::new(),
                total: (whole.dirs.len() + whole.files.len()) as u64,
                next: None,
            };
            if listing.total == 0 && !path.is_empty() {
                return file_at(c, listing, offset);
            }
            page(&whole, &mut listing, offset as usize, limit);
            // A page cut short (by `limit` or by size) says where the next one starts.
            let after = offset as u64 + (listing.dirs.len() + listing.files.len()) as u64;
            if after < listing.total {
                listing.next = u32::try_from(after).ok();
            }
            Ok(Ok(listing))
        })
    }
}

/// `NOT_FOUND` unless the peer is known, not ephemeral, and live.
fn check_peer(
    c: &Connection,
    peer_id: u64,
    live_since: i64,
) -> Result<Result<(), BrowseRefused>, StoreError> {
    let row: Option<(bool, bool, i64)> = c
        .query_row(
            "SELECT ephemeral, online, last_seen FROM peers WHERE id = ?1",
            params![peer_id as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(match row {
        None | Some((true, _, _)) => Err(BrowseRefused(
            ErrorCode::NotFound,
            format!("no peer {peer_id} at this index (see `peershare peers`)"),
        )),
        Some((false, online, last_seen)) if !online || last_seen < live_since => {
            Err(BrowseRefused(
                ErrorCode::NotFound,
                format!("peer {peer_id} is not online: only a live peer's files can be browsed"),
            ))
        }
        Some(_) => Ok(()),
    })
}

fn content_id(blob: Vec<u8>) -> Option<ContentId> {
    let b: [u8; 32] = blob.try_into().ok()?;
    Some(ContentId::from_bytes(b))
}

/// The listing of a path below which nothing is listed: the file at that path, or `NOT_FOUND`.
fn file_at(
    c: &Connection,
    mut listing: Listing,
    offset: u32,
) -> Result<Result<Listing, BrowseRefused>, StoreError> {
    let path = listing.path.clone();
    let file = c
        .query_row(
            "SELECT size, content_id, mtime FROM files \
             WHERE peer_id = ?1 AND path = ?2 AND have IS NULL",
            params![listing.peer_id as i64, &path],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((size, id, mtime)) = file.filter(|_| listable(&path)) else {
        return Ok(Err(BrowseRefused(
            ErrorCode::NotFound,
            format!(
                "peer {} shares no file or directory {path:?}",
                listing.peer_id
            ),
        )));
    };
    listing.file = true;
    listing.total = 1;
    if offset == 0
        && let Some(content_id) = content_id(id)
    {
        listing.files.push(ListedFile {
            path: path.rsplit('/').next().unwrap_or(&path).to_string(),
            size: size as u64,
            content_id,
            mtime,
        });
    }
    Ok(Ok(listing))
}

/// Reads the whole listing in one pass over the key range of the peer's files below `path`:
/// in a recursive one every listed file, else the subdirectories (with what is below each)
/// and the files directly there. At most [`MAX_BROWSE_BYTES`] are held.
fn read_whole(
    c: &Connection,
    peer: u64,
    path: &str,
    recursive: bool,
    generation: u64,
) -> Result<Result<Whole, BrowseRefused>, StoreError> {
    let (lo, hi) = range(path);
    let mut dirs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut files = Vec::new();
    let mut bytes = 0usize;
    let mut stmt = c.prepare_cached(
        "SELECT path, size, content_id, mtime FROM files \
         WHERE peer_id = ?1 AND path >= ?2 AND path < ?3 AND have IS NULL ORDER BY path",
    )?;
    let mut rows = stmt.query(params![peer as i64, lo, hi])?;
    while let Some(r) = rows.next()? {
        let full = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        if !listable(full) {
            continue;
        }
        let rest = full.get(lo.len()..).unwrap_or("");
        let size = r.get::<_, i64>(1)? as u64;
        let dir = match recursive {
            true => None,
            false => rest.split_once('/').map(|(d, _)| d),
        };
        match dir {
            Some(name) => {
                if let Some(d) = dirs.get_mut(name) {
                    d.0 += size;
                    d.1 += 1;
                    continue;
                }
                bytes += name.len() + ENTRY_BYTES;
                if bytes <= MAX_BROWSE_BYTES {
                    dirs.insert(name.to_string(), (size, 1));
                }
            }
            None => {
                bytes += rest.len() + ENTRY_BYTES;
                if bytes > MAX_BROWSE_BYTES {
                    continue;
                }
                let Some(content_id) = content_id(r.get(2)?) else {
                    continue;
                };
                files.push(ListedFile {
                    path: rest.to_string(),
                    size,
                    content_id,
                    mtime: r.get(3)?,
                });
            }
        }
        if bytes > MAX_BROWSE_BYTES {
            return Ok(Err(BrowseRefused(
                ErrorCode::BadRequest,
                format!(
                    "peer {peer}'s listing of {path:?} is larger than {} MiB; browse a \
                     subdirectory",
                    MAX_BROWSE_BYTES >> 20
                ),
            )));
        }
    }
    Ok(Ok(Whole {
        peer,
        path: path.to_string(),
        recursive,
        generation,
        made: Instant::now(),
        bytes,
        dirs: dirs
            .into_iter()
            .map(|(name, (size, files))| DirEntry { name, size, files })
            .collect(),
        files,
    }))
}

/// Copies the entries from `offset` on into `listing`: at most `limit`, and no more than
/// [`PAGE_BYTES`] of them (at least one).
fn page(whole: &Whole, listing: &mut Listing, offset: usize, limit: usize) {
    let mut bytes = 0;
    let fits = |bytes: &mut usize, len: usize| {
        let fits = *bytes == 0 || *bytes + len + ENTRY_BYTES <= PAGE_BYTES;
        *bytes += len + ENTRY_BYTES;
        fits
    };
    for d in whole.dirs.iter().skip(offset).take(limit) {
        if !fits(&mut bytes, d.name.len()) {
            return;
        }
        listing.dirs.push(d.clone());
    }
    let skip = offset.saturating_sub(whole.dirs.len());
    for f in whole
        .files
        .iter()
        .skip(skip)
        .take(limit - listing.dirs.len())
    {
        if !fits(&mut bytes, f.path.len()) {
            return;
        }
        listing.files.push(f.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Digest;
    use crate::protocol::{FileEntry, UpdateFiles};

    fn entry(path: &str, size: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            name: path.rsplit('/').next().unwrap_or(path).into(),
            size,
            content_id: ContentId::from_bytes(*blake3::hash(path.as_bytes()).as_bytes()),
            mtime: 1,
            have: None,
        }
    }

    /// A store with one live peer sharing `paths` (sizes 1, 2, 3, …).
    fn store_with(paths: &[&str]) -> (tempfile::TempDir, IndexStore, super::super::Session) {
        let dir = tempfile::tempdir().unwrap();
        let store = IndexStore::open(&dir.path().join("i.db")).unwrap();
        let (session, _) = store
            .register(
                &Digest([1; 32]),
                "127.0.0.1",
                4000,
                &Digest([0; 32]),
                false,
                100,
            )
            .unwrap();
        let upsert = paths
            .iter()
            .enumerate()
            .map(|(i, p)| entry(p, i as u64 + 1))
            .collect();
        let u = UpdateFiles {
            reset: true,
            upsert,
            remove: vec![],
            digest: None,
        };
        store.update_files(&session, &u, 100).unwrap();
        (dir, store, session)
    }

    #[test]
    fn directories_add_up_what_is_below_them_and_hostile_paths_are_left_out() {
        let (_d, store, session) = store_with(&[
            "a/x.txt",      // 1
            "a/b/y.txt",    // 2
            "a/b/c/z.txt",  // 3
            "a.txt",        // 4
            "a0/w",         // 5: sorts right after "a/": not below "a"
            "../evil",      // hostile: never listed
            "a/../../evil", // hostile
            "/etc/passwd",  // hostile
            "a//d",         // hostile
            "a/./e",        // hostile
            "a/trailing/",  // hostile
        ]);
        let peer = session.peer_id;
        let top = store.browse(peer, "", false, 0, 100, 0).unwrap().unwrap();
        let dirs: Vec<_> = top
            .dirs
            .iter()
            .map(|d| (d.name.as_str(), d.size, d.files))
            .collect();
        assert_eq!(dirs, [("a", 6, 3), ("a0", 5, 1)]);
        let files: Vec<_> = top.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(files, ["a.txt"]);
        assert_eq!((top.total, top.next, top.file), (3, None, false));
        let a = store.browse(peer, "a", false, 0, 100, 0).unwrap().unwrap();
        assert_eq!(
            a.dirs,
            [DirEntry {
                name: "b".into(),
                size: 5,
                files: 2
            }]
        );
        assert_eq!(a.files.len(), 1);
        assert_eq!(a.files[0].path, "x.txt");
        let rec = store.browse(peer, "a", true, 0, 100, 0).unwrap().unwrap();
        let paths: Vec<_> = rec.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["b/c/z.txt", "b/y.txt", "x.txt"]);
        // Paging: one entry at a time, every entry once, `next` until the last.
        let mut seen = Vec::new();
        let mut offset = 0;
        for _ in 0..10 {
            let p = store
                .browse(peer, "a", true, offset, 1, 0)
                .unwrap()
                .unwrap();
            seen.extend(p.files.into_iter().map(|f| f.path));
            match p.next {
                Some(n) => offset = n,
                None => break,
            }
        }
        assert_eq!(seen, paths);
        let file = store
            .browse(peer, "a/b/y.txt", false, 0, 10, 0)
            .unwrap()
            .unwrap();
        assert!(file.file);
        assert_eq!(file.files[0].path, "y.txt");
        for (path, code) in [
            ("nothing", ErrorCode::NotFound),
            ("a/b/c/z", ErrorCode::NotFound),
        ] {
            let r = store.browse(peer, path, false, 0, 10, 0).unwrap();
            assert_eq!(r.map_err(|e| e.0).err(), Some(code), "{path}");
        }
        // A listing kept for later pages is not used once the peer's files change.
        let u = UpdateFiles {
            reset: false,
            upsert: vec![entry("a/new.txt", 9)],
            remove: vec!["a/x.txt".into()],
            digest: None,
        };
        store.update_files(&session, &u, 100).unwrap();
        let a = store.browse(peer, "a", false, 0, 100, 0).unwrap().unwrap();
        assert_eq!(a.files.len(), 1);
        assert_eq!(a.files[0].path, "new.txt");
        // Unknown and no longer live peers.
        assert!(
            store
                .browse(peer + 1, "", false, 0, 10, 0)
                .unwrap()
                .is_err()
        );
        assert!(store.browse(peer, "", false, 0, 10, 101).unwrap().is_err());
    }

    #[test]
    fn browse_paths_are_normalized_or_refused() {
        for (raw, want) in [
            ("", ""),
            ("/", ""),
            ("//", ""),
            ("docs", "docs"),
            ("/docs/python3/", "docs/python3"),
        ] {
            assert_eq!(normalize_browse_path(raw).as_deref(), Ok(want), "{raw:?}");
        }
        for raw in [
            "..",
            "a/../b",
            "a/./b",
            "a//b",
            "a\\b",
            "a\0b",
            &"x".repeat(MAX_PATH_LEN + 1),
        ] {
            assert!(normalize_browse_path(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn the_top_range_holds_every_path() {
        let (lo, hi) = range("");
        for p in [
            "a",
            "\u{10FFFF}\u{10FFFF}",
            "zzz/\u{FFFF}",
            &"\u{10FFFF}".repeat(1024),
        ] {
            assert!(lo.as_str() <= p && p < hi.as_str(), "{p:?}");
        }
        let (lo, hi) = range("a/b");
        assert!(lo.as_str() <= "a/b/c" && "a/b/c" < hi.as_str());
        assert!(!("a/b.txt" >= lo.as_str() && "a/b.txt" < hi.as_str()));
        assert!(!("a/bc/d" >= lo.as_str() && "a/bc/d" < hi.as_str()));
    }
}
