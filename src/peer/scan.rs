//! `Scanner`: walks the shared directories, hashes new or changed files in parallel, caches ids by (path, size, mtime).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use blake3::hazmat::ChainingValue;
use rayon::prelude::*;
use rusqlite::{Connection, params};
use tracing::{debug, info, warn};

use super::beneath::meta_mtime_ns;
use super::{Catalog, ShareRoot, SharedFile};
use crate::content::{ContentId, hash_open_file};

/// Suffix of partial downloads; never shared.
pub const PARTIAL_SUFFIX: &str = ".peershare-part";

/// The hash cache in the state directory: content ids and piece hashes by (absolute path,
/// size, modification time), shared by the scanner and `get`'s check for files already there.
pub const HASH_CACHE_FILE: &str = "hash-cache.sqlite";

/// Opens (creating if need be) the hash cache at `path`, waiting at most `busy` for another
/// process's write to end.
pub(crate) fn open_hash_cache(
    path: &Path,
    busy: std::time::Duration,
) -> Result<Connection, rusqlite::Error> {
    let c = Connection::open(path)?;
    c.busy_timeout(busy)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS hashes(path TEXT PRIMARY KEY, size INTEGER NOT NULL,
         mtime_ns INTEGER NOT NULL, content_id BLOB NOT NULL, pieces BLOB NOT NULL)",
    )?;
    Ok(c)
}

/// Why a scanner could not be set up or a scan could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A shared directory (or the state directory) could not be opened or made.
    #[error("shared directory {path}: {source}")]
    Root {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A path given to share is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The hash cache database failed.
    #[error("hash cache: {0}")]
    Cache(#[from] rusqlite::Error),
}

/// Where a scan's hashing stands: files and bytes hashed so far, and to hash in all (files
/// the cache knows unchanged are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashStatus {
    /// Files hashed (or given up: unreadable, changed meanwhile) so far.
    pub files_done: u64,
    /// Files to hash in all.
    pub files: u64,
    /// Bytes hashed so far.
    pub bytes_done: u64,
    /// Bytes to hash in all.
    pub bytes: u64,
}

impl HashStatus {
    /// Whether the hashing is over.
    pub fn finished(&self) -> bool {
        self.files_done >= self.files
    }
}

/// Told while a scan hashes files. Called from the hashing threads (after each file, every
/// [`HASH_PROGRESS_STEP`] bytes within a file, and once at the end, with everything done), so
/// it must be quick.
pub type HashProgress = Arc<dyn Fn(HashStatus) + Send + Sync>;

/// How often (in bytes hashed) [`ScanOptions::progress`] is told.
pub const HASH_PROGRESS_STEP: u64 = 16 * 1024 * 1024;

/// What a scan shares and whom it tells.
#[derive(Clone, Default)]
pub struct ScanOptions {
    /// Share dot-files and dot-directories too. Default: false.
    pub include_hidden: bool,
    /// Told how hashing goes, when files need hashing. Default: nobody.
    pub progress: Option<HashProgress>,
}

impl std::fmt::Debug for ScanOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanOptions")
            .field("include_hidden", &self.include_hidden)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Scans a fixed set of shared directories, each through a handle opened once (see
/// [`ShareRoot`]): nothing outside them is listed or read, whatever is renamed meanwhile.
pub struct Scanner {
    roots: Vec<(Arc<ShareRoot>, String)>,
    options: ScanOptions,
    cache_path: PathBuf,
}

mod walk;

use walk::Candidate;

type Cached = (u64, i64, ContentId, Arc<Vec<ChainingValue>>);

impl Scanner {
    /// `roots` must be existing directories; they are canonicalized and opened here, and only
    /// those directories (not what their paths name later) are scanned from then on.
    pub fn new(
        roots: &[PathBuf],
        state_dir: &Path,
        options: ScanOptions,
    ) -> Result<Self, ScanError> {
        let mut opened = Vec::new();
        for r in roots {
            let root = ShareRoot::open(r).map_err(|source| {
                if source.raw_os_error() == Some(libc::ENOTDIR) {
                    ScanError::NotADirectory { path: r.clone() }
                } else {
                    ScanError::Root {
                        path: r.clone(),
                        source,
                    }
                }
            })?;
            let prefix = if roots.len() > 1 {
                let name = root
                    .path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                format!("{}/", name.unwrap_or_else(|| "root".into()))
            } else {
                String::new()
            };
            opened.push((Arc::new(root), prefix));
        }
        fs::create_dir_all(state_dir).map_err(|source| ScanError::Root {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let scanner = Scanner {
            roots: opened,
            options,
            cache_path: state_dir.join(HASH_CACHE_FILE),
        };
        scanner.open_cache()?;
        Ok(scanner)
    }

    /// The canonical shared directories (their paths when sharing started).
    pub fn roots(&self) -> Vec<PathBuf> {
        self.roots
            .iter()
            .map(|(r, _)| r.path().to_path_buf())
            .collect()
    }

    fn open_cache(&self) -> Result<Connection, rusqlite::Error> {
        open_hash_cache(&self.cache_path, std::time::Duration::from_secs(10))
    }

    /// Walks the shared directories and returns the catalog, hashing only what the cache lacks.
    pub fn scan(&self) -> Result<Catalog, ScanError> {
        let candidates = self.walk();
        let mut cache = self.open_cache()?;
        let mut cached: HashMap<String, Cached> = HashMap::new();
        {
            let mut stmt =
                cache.prepare("SELECT path, size, mtime_ns, content_id, pieces FROM hashes")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let id: Vec<u8> = r.get(3)?;
                let pieces: Vec<u8> = r.get(4)?;
                let Ok(id) = <[u8; 32]>::try_from(id) else {
                    continue;
                };
                let cvs = pieces
                    .chunks_exact(32)
                    .filter_map(|c| <[u8; 32]>::try_from(c).ok())
                    .collect();
                cached.insert(
                    r.get(0)?,
                    (
                        r.get::<_, i64>(1)? as u64,
                        r.get(2)?,
                        ContentId::from_bytes(id),
                        Arc::new(cvs),
                    ),
                );
            }
        }
        let abs = |c: &Candidate| self.roots[c.root].0.path().join(&c.beneath);
        let key = |c: &Candidate| abs(c).to_string_lossy().into_owned();
        let (hit, miss): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|c| {
            matches!(cached.get(&key(c)), Some((s, m, _, _)) if *s == c.size && *m == c.mtime_ns)
        });
        let total: u64 = miss.iter().map(|c| c.size).sum();
        let miss_empty = miss.is_empty();
        if !miss_empty {
            info!(
                "hashing {} files ({} MiB)",
                miss.len(),
                total / (1024 * 1024)
            );
        }
        let (done, files_done, files) = (AtomicU64::new(0), AtomicU64::new(0), miss.len() as u64);
        let status = |bytes_done: u64, files_done: u64| HashStatus {
            // Both counts stay within their totals, whatever files do meanwhile.
            files_done: files_done.min(files),
            files,
            bytes_done: bytes_done.min(total),
            bytes: total,
        };
        let progress = |n: u64| {
            let d = done.fetch_add(n, Ordering::Relaxed) + n;
            if d % HASH_PROGRESS_STEP < n
                && let Some(tell) = &self.options.progress
            {
                tell(status(d, files_done.load(Ordering::Relaxed)));
            }
        };
        // After each file, hashed or not.
        let file_done = || {
            let f = files_done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(tell) = &self.options.progress
                && f < files
            {
                tell(status(done.load(Ordering::Relaxed), f));
            }
        };
        let hashed: Vec<(Candidate, ContentId, Vec<ChainingValue>)> = miss
            .into_par_iter()
            .filter_map(|c| {
                // Opened beneath its shared directory's handle: a directory on the way
                // exchanged for a symlink makes the open fail instead of reading elsewhere.
                let hashed = self.roots[c.root].0.open_file(&c.beneath).and_then(|f| {
                    let h = hash_open_file(&f, c.size, &progress)?;
                    Ok((h, f.metadata()?))
                });
                file_done();
                match hashed {
                    // A file that changed while being hashed waits for the next scan.
                    Ok(((id, cvs), m)) => {
                        if m.len() == c.size && meta_mtime_ns(&m) == c.mtime_ns {
                            Some((c, id, cvs))
                        } else {
                            debug!("{} changed while it was hashed", abs(&c).display());
                            None
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        debug!("{} changed while it was hashed: {e}", abs(&c).display());
                        None
                    }
                    Err(e) => {
                        warn!("cannot read {}: {e}", abs(&c).display());
                        None
                    }
                }
            })
            .collect();
        if let (Some(tell), false) = (&self.options.progress, miss_empty) {
            tell(status(total, files));
        }

        let mut files = Vec::with_capacity(hit.len() + hashed.len());
        let tx = cache.transaction()?;
        {
            let mut put = tx.prepare(
                "INSERT OR REPLACE INTO hashes(path, size, mtime_ns, content_id, pieces) VALUES(?1,?2,?3,?4,?5)",
            )?;
            for (c, id, cvs) in hashed {
                let flat: Vec<u8> = cvs.iter().flatten().copied().collect();
                put.execute(params![
                    key(&c),
                    c.size as i64,
                    c.mtime_ns,
                    &id.as_bytes()[..],
                    flat
                ])?;
                files.push(self.shared(c, id, Arc::new(cvs)));
            }
        }
        tx.commit()?;
        for c in hit {
            if let Some((_, _, id, cvs)) = cached.get(&key(&c)) {
                let (id, cvs) = (*id, cvs.clone());
                files.push(self.shared(c, id, cvs));
            }
        }
        Ok(Catalog::new(files))
    }
}

impl Scanner {
    fn shared(
        &self,
        c: Candidate,
        content_id: ContentId,
        piece_hashes: Arc<Vec<ChainingValue>>,
    ) -> SharedFile {
        let name = c
            .rel_path
            .rsplit('/')
            .next()
            .unwrap_or(&c.rel_path)
            .to_string();
        SharedFile {
            rel_path: c.rel_path,
            root: self.roots[c.root].0.clone(),
            beneath: c.beneath,
            name,
            size: c.size,
            mtime_ns: c.mtime_ns,
            content_id,
            piece_hashes,
        }
    }
}

#[cfg(test)]
mod tests;
