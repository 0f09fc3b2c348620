//! Files already on disk: before a file is downloaded into a directory, a file of the same content id there (or in a directory the user names) is looked for, so nothing is fetched twice.
//!
//! [`HaveAlready::find`] takes a content id, its size and the target directory. It lists the
//! target directory (its files only) and every look-in directory (recursively) once, then
//! keeps, per size, the regular files found: only a file of exactly the wanted size is ever
//! hashed. A file's content id comes from the state directory's hash cache (the one `share`
//! keeps, [`HASH_CACHE_FILE`], by absolute path, size and modification time) when it is
//! there and unchanged; otherwise the file is hashed and the result cached, so a second `get`
//! into a big directory costs a lookup, not a read.
//!
//! What counts: regular files reached without following a symbolic link (a link is never
//! followed, to a file or a directory, so nothing outside the directories is read); not the
//! hidden partial downloads (`.<id>.peershare-part`). A file that vanishes, changes size or
//! modification time while it is hashed, or cannot be read, is simply not a match.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tracing::{debug, warn};

use crate::content::{ContentId, hash_open_file};
use crate::peer::{HASH_CACHE_FILE, PARTIAL_SUFFIX, meta_mtime_ns, open_hash_cache};

/// Entries (files and directories) listed at most, over the target and look-in directories
/// of one [`HaveAlready`]: past it the rest is not looked at (with a warning), so a look-in
/// directory of millions of files cannot make a `get` list forever or hold unbounded memory.
pub const MAX_LISTED: usize = 1_000_000;

/// Checks of one [`HaveAlready`] run at once at most through [`already_have`](super::already_have)
/// (each on a blocking thread; a file's hashing is itself parallel): a list of thousands of
/// files does not take thousands of threads.
pub const CHECKS_AT_ONCE: usize = 4;

/// Longest wait for the hash cache when another process (a running `share`) is writing it;
/// past it the file is hashed without the cache.
const CACHE_BUSY: Duration = Duration::from_secs(2);

/// Looks for files already on disk by content id. Make one per batch of downloads: each
/// directory is listed on first use and that listing is kept (files added later are not
/// seen; make a new one to see them). Blocking: call it from a blocking task. Given to the
/// download pipeline as [`GetOptions::have_already`](super::GetOptions::have_already), every
/// file is looked for before it is downloaded.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use peershare::node::HaveAlready;
/// let dir = tempfile::tempdir()?;
/// let (downloads, library) = (dir.path().join("downloads"), dir.path().join("library"));
/// std::fs::create_dir_all(library.join("books"))?;
/// std::fs::write(library.join("books/a.txt"), b"some text")?;
/// let id = blake3::hash(b"some text").into();
/// // Look in `library` (recursively) besides the target directory; no hash cache.
/// let have = HaveAlready::new(vec![library.clone()], None);
/// let at = have.find(&id, 9, &downloads).expect("found");
/// assert_eq!(at, std::fs::canonicalize(library.join("books/a.txt"))?);
/// # Ok(())
/// # }
/// ```
pub struct HaveAlready {
    look_in: Vec<PathBuf>,
    cache_path: Option<PathBuf>,
    cache: Mutex<Option<Connection>>,
    /// Directory listings by (canonical directory, recursive).
    listings: Mutex<HashMap<(PathBuf, bool), SharedListing>>,
    /// Ids of files hashed or found in the cache by this instance, by path, with the size and
    /// mtime they had.
    hashed_ids: Mutex<HashMap<PathBuf, (u64, i64, ContentId)>>,
    listed: AtomicU64,
    warned: AtomicBool,
    hashed: AtomicU64,
    /// Bounds the checks running at once ([`CHECKS_AT_ONCE`]).
    pub(super) checks: tokio::sync::Semaphore,
}

impl std::fmt::Debug for HaveAlready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaveAlready")
            .field("look_in", &self.look_in)
            .field("cache_path", &self.cache_path)
            .finish_non_exhaustive()
    }
}

/// A listing made once, by whichever check needs it first, for all.
type SharedListing = Arc<OnceLock<Listing>>;

/// Regular files of one directory (tree), by size.
#[derive(Default)]
struct Listing {
    by_size: HashMap<u64, Mutex<Bucket>>,
}

/// The files of one size: their ids are found in order, as far as a check needs, and kept,
/// so that each file is looked at once however many ids of that size are asked for.
#[derive(Default)]
struct Bucket {
    paths: Vec<PathBuf>,
    /// `paths[..resolved]` have been looked at.
    resolved: usize,
    /// The ids of those (the first path of each id).
    ids: HashMap<ContentId, PathBuf>,
}

impl HaveAlready {
    /// Looks in the target directory given to [`HaveAlready::find`] and in every directory of
    /// `look_in` (recursively); `state_dir`: where the hash cache is ([`HASH_CACHE_FILE`] in
    /// it; `None`: no cache, files of the right size are hashed each time).
    pub fn new(look_in: Vec<PathBuf>, state_dir: Option<&Path>) -> Self {
        HaveAlready {
            look_in,
            cache_path: state_dir.map(|d| d.join(HASH_CACHE_FILE)),
            cache: Mutex::new(None),
            listings: Mutex::default(),
            hashed_ids: Mutex::default(),
            listed: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            hashed: AtomicU64::new(0),
            checks: tokio::sync::Semaphore::new(CHECKS_AT_ONCE),
        }
    }

    /// The directories looked in besides the target.
    pub fn look_in(&self) -> &[PathBuf] {
        &self.look_in
    }

    /// Files this instance has read to hash them (the hash cache spares the others).
    pub fn files_hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// Where a file of content id `id` and `size` bytes already is: in `target` (its files,
    /// not its sub-directories) or beneath a look-in directory; `None` if nowhere. A missing
    /// directory holds nothing.
    pub fn find(&self, id: &ContentId, size: u64, target: &Path) -> Option<PathBuf> {
        let dirs = std::iter::once((target, false))
            .chain(self.look_in.iter().map(|d| (d.as_path(), true)));
        for (dir, recursive) in dirs {
            let dir: &Path = dir;
            let Some(listing) = self.listing(dir, recursive) else {
                continue;
            };
            let Some(bucket) = listing.get().and_then(|l| l.by_size.get(&size)) else {
                continue;
            };
            let mut bucket = lock(bucket);
            // Found before: still there, unchanged (or again the same bytes)?
            if let Some(path) = bucket.ids.get(id).cloned() {
                if self.id_of(&path, size).as_ref() == Some(id) {
                    return Some(path);
                }
                bucket.ids.remove(id);
            }
            while let Some(path) = bucket.paths.get(bucket.resolved).cloned() {
                bucket.resolved += 1;
                if let Some(found) = self.id_of(&path, size) {
                    bucket.ids.entry(found).or_insert_with(|| path.clone());
                    if found == *id {
                        return Some(path);
                    }
                }
            }
        }
        None
    }

    /// `dir`'s listing, made on first use (`None` if it cannot be opened).
    fn listing(&self, dir: &Path, recursive: bool) -> Option<SharedListing> {
        let canonical = fs::canonicalize(dir).ok()?;
        let cell = lock(&self.listings)
            .entry((canonical.clone(), recursive))
            .or_default()
            .clone();
        cell.get_or_init(|| self.list(&canonical, recursive));
        Some(cell)
    }

    /// Lists `dir` (and, if `recursive`, every directory beneath it reached without a
    /// symbolic link), counting against [`MAX_LISTED`].
    fn list(&self, dir: &Path, recursive: bool) -> Listing {
        let mut listing = Listing::default();
        let mut stack = vec![dir.to_path_buf()];
        // A directory met twice (a bind mount inside itself) is listed once.
        let mut seen = HashSet::new();
        while let Some(d) = stack.pop() {
            let Ok(m) = fs::symlink_metadata(&d) else {
                continue;
            };
            if !m.is_dir() || !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            let entries = match fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) => {
                    debug!("not looking in {}: {e}", d.display());
                    continue;
                }
            };
            for entry in entries.flatten() {
                if self.listed.fetch_add(1, Ordering::Relaxed) >= MAX_LISTED as u64 {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        warn!(
                            "looked at {MAX_LISTED} entries for files already downloaded; not looking further"
                        );
                    }
                    return listing;
                }
                // The entry's own type: a symbolic link is neither a file nor a directory here.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                if kind.is_dir() && recursive {
                    stack.push(path);
                } else if kind.is_file() {
                    if entry
                        .file_name()
                        .as_encoded_bytes()
                        .ends_with(PARTIAL_SUFFIX.as_bytes())
                    {
                        continue;
                    }
                    if let Ok(m) = entry.metadata() {
                        let bucket = listing.by_size.entry(m.len()).or_default();
                        lock(bucket).paths.push(path);
                    }
                }
            }
        }
        listing
    }

    /// The content id of the file at `path` if it is still a regular file of `size` bytes:
    /// from this instance's memory, the hash cache, or by hashing it.
    fn id_of(&self, path: &Path, size: u64) -> Option<ContentId> {
        // Not following a link swapped in since the listing.
        let file = fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let before = file.metadata().ok()?;
        if !before.is_file() || before.len() != size {
            return None;
        }
        let mtime = meta_mtime_ns(&before);
        if let Some(&(s, m, id)) = lock(&self.hashed_ids).get(path)
            && (s, m) == (size, mtime)
        {
            return Some(id);
        }
        let key = path.to_string_lossy().into_owned();
        if let Some(id) = self.cached(&key, size, mtime) {
            lock(&self.hashed_ids).insert(path.to_path_buf(), (size, mtime, id));
            return Some(id);
        }
        self.hashed.fetch_add(1, Ordering::Relaxed);
        let (id, cvs) = match hash_open_file(&file, size, &|_| {}) {
            Ok(h) => h,
            Err(e) => {
                debug!("not comparing {}: {e}", path.display());
                return None;
            }
        };
        // Changed while it was hashed: the id may be of neither version.
        let after = file.metadata().ok()?;
        if after.len() != size || meta_mtime_ns(&after) != mtime {
            debug!("{} changed while it was hashed", path.display());
            return None;
        }
        lock(&self.hashed_ids).insert(path.to_path_buf(), (size, mtime, id));
        let flat: Vec<u8> = cvs.iter().flatten().copied().collect();
        self.with_cache(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO hashes(path, size, mtime_ns, content_id, pieces) VALUES(?1,?2,?3,?4,?5)",
            )?
            .execute(params![key, size as i64, mtime, &id.as_bytes()[..], flat])
            .map(|_| ())
        });
        Some(id)
    }

    /// The cached id of the file at `key`, if the cache has it at this size and mtime.
    fn cached(&self, key: &str, size: u64, mtime: i64) -> Option<ContentId> {
        let row: Option<(i64, i64, Vec<u8>)> = self
            .with_cache(|c| {
                c.prepare_cached("SELECT size, mtime_ns, content_id FROM hashes WHERE path = ?1")?
                    .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .flatten();
        let (s, m, id) = row?;
        if s as u64 != size || m != mtime {
            return None;
        }
        Some(ContentId::from_bytes(<[u8; 32]>::try_from(id).ok()?))
    }

    /// Runs `f` on the hash cache (opened on first use); `None` without a cache or if it
    /// fails (the check then goes on without it).
    fn with_cache<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let path = self.cache_path.as_ref()?;
        let mut cache = lock(&self.cache);
        if cache.is_none() {
            if let Some(dir) = path.parent() {
                let _ = fs::create_dir_all(dir);
            }
            // A cache: an entry lost to a power cut costs a hash, so commits need not wait
            // for the disk (in WAL mode the database stays consistent).
            let opened = open_hash_cache(path, CACHE_BUSY)
                .and_then(|c| c.pragma_update(None, "synchronous", "NORMAL").map(|()| c));
            match opened {
                Ok(c) => *cache = Some(c),
                Err(e) => {
                    debug!("hash cache {}: {e}", path.display());
                    return None;
                }
            }
        }
        match f(cache.as_ref()?) {
            Ok(v) => Some(v),
            Err(e) => {
                debug!("hash cache {}: {e}", path.display());
                None
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(bytes: &[u8]) -> ContentId {
        blake3::hash(bytes).into()
    }

    #[test]
    fn finds_a_file_in_the_target_by_content_not_name() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("dl");
        fs::create_dir_all(target.join("sub")).unwrap();
        fs::write(target.join("other name.h"), b"#include <x>\n").unwrap();
        // Same size, other content: not a match.
        fs::write(target.join("same size.h"), b"#include <y>\n").unwrap();
        // In a sub-directory of the target: the target's files only count.
        fs::write(target.join("sub/deep.h"), b"deep content\n").unwrap();
        // A partial download is not a file already there.
        let part = format!(".{}{PARTIAL_SUFFIX}", id_of(b"partial!").to_hex());
        fs::write(target.join(part), b"partial!").unwrap();
        let have = HaveAlready::new(Vec::new(), Some(&t.path().join("state")));
        assert_eq!(
            have.find(&id_of(b"#include <x>\n"), 13, &target),
            Some(target.join("other name.h"))
        );
        assert_eq!(have.find(&id_of(b"#include <z>\n"), 13, &target), None);
        assert_eq!(have.find(&id_of(b"deep content\n"), 13, &target), None);
        assert_eq!(have.find(&id_of(b"partial!"), 8, &target), None);
        // A size nobody has: nothing is hashed.
        let before = have.files_hashed();
        assert_eq!(have.find(&id_of(b"abc"), 3, &target), None);
        assert_eq!(have.files_hashed(), before);
        // A target that does not exist holds nothing.
        assert_eq!(have.find(&id_of(b"abc"), 3, &t.path().join("nope")), None);
    }

    #[test]
    fn look_in_directories_are_searched_recursively_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let (target, library, outside) = (
            t.path().join("dl"),
            t.path().join("library"),
            t.path().join("outside"),
        );
        fs::create_dir_all(library.join("a/b/c")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(library.join("a/b/c/book.pdf"), b"the book").unwrap();
        fs::write(outside.join("secret"), b"a secret").unwrap();
        std::os::unix::fs::symlink(&outside, library.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), library.join("link-file")).unwrap();
        let have = HaveAlready::new(vec![library.clone()], None);
        assert_eq!(
            have.find(&id_of(b"the book"), 8, &target),
            Some(fs::canonicalize(&library).unwrap().join("a/b/c/book.pdf"))
        );
        assert_eq!(have.find(&id_of(b"a secret"), 8, &target), None);
    }

    #[test]
    fn each_file_of_a_size_is_hashed_once_however_many_ids_of_that_size_are_asked() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("dl");
        fs::create_dir_all(&target).unwrap();
        let contents: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 4000]).collect();
        for (i, c) in contents.iter().enumerate() {
            fs::write(target.join(format!("f{i}")), c).unwrap();
        }
        let have = HaveAlready::new(Vec::new(), None);
        // In reverse order of listing, and an id of that size nobody has, twice.
        for c in contents.iter().rev() {
            assert!(have.find(&id_of(c), 4000, &target).is_some());
        }
        for _ in 0..2 {
            assert_eq!(have.find(&id_of(&[99; 4000]), 4000, &target), None);
        }
        assert_eq!(have.files_hashed(), 20);
        // A file found before and removed since is not reported.
        let gone = fs::canonicalize(target.join("f3")).unwrap();
        assert_eq!(
            have.find(&id_of(&contents[3]), 4000, &target),
            Some(gone.clone())
        );
        fs::remove_file(&gone).unwrap();
        assert_eq!(have.find(&id_of(&contents[3]), 4000, &target), None);
    }

    #[test]
    fn the_hash_cache_spares_a_second_check_and_sees_a_change() {
        let t = tempfile::tempdir().unwrap();
        let (target, state) = (t.path().join("dl"), t.path().join("state"));
        fs::create_dir_all(&target).unwrap();
        let bytes = vec![5u8; 3 * 1024 * 1024 + 7];
        fs::write(target.join("big.bin"), &bytes).unwrap();
        let id = id_of(&bytes);
        let size = bytes.len() as u64;
        let first = HaveAlready::new(Vec::new(), Some(&state));
        assert!(first.find(&id, size, &target).is_some());
        assert_eq!(first.files_hashed(), 1);
        // Asked again by the same instance, and by a new one (a second `get`): from memory
        // and from the cache file, nothing read again.
        assert!(first.find(&id, size, &target).is_some());
        assert_eq!(first.files_hashed(), 1);
        let second = HaveAlready::new(Vec::new(), Some(&state));
        assert!(second.find(&id, size, &target).is_some());
        assert_eq!(second.files_hashed(), 0);
        // Rewritten with other bytes of the same size (and a new mtime): hashed again, and
        // no longer a match.
        let mut other = bytes.clone();
        other[0] = 6;
        std::thread::sleep(Duration::from_millis(20));
        fs::write(target.join("big.bin"), &other).unwrap();
        let third = HaveAlready::new(Vec::new(), Some(&state));
        assert_eq!(third.find(&id, size, &target), None);
        assert_eq!(third.files_hashed(), 1);
    }
}
