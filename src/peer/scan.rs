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

use super::{Catalog, SharedFile};
use crate::content::{ContentId, hash_file};

/// Suffix of partial downloads; never shared.
pub const PARTIAL_SUFFIX: &str = ".peershare-part";

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("shared directory {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("hash cache: {0}")]
    Cache(#[from] rusqlite::Error),
}

#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Share dot-files and dot-directories too. Default: false.
    pub include_hidden: bool,
    /// Show a progress bar while hashing (only when stderr is a terminal). Default: false.
    pub progress: bool,
}

/// Scans a fixed set of shared directories.
pub struct Scanner {
    roots: Vec<(PathBuf, String)>,
    options: ScanOptions,
    cache_path: PathBuf,
}

struct Candidate {
    rel_path: String,
    abs_path: PathBuf,
    size: u64,
    mtime_ns: i64,
}

type Cached = (u64, i64, ContentId, Arc<Vec<ChainingValue>>);

fn mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Scanner {
    /// `roots` must be existing directories; they are canonicalized here.
    pub fn new(
        roots: &[PathBuf],
        state_dir: &Path,
        options: ScanOptions,
    ) -> Result<Self, ScanError> {
        let mut canon = Vec::new();
        for r in roots {
            let c = fs::canonicalize(r).map_err(|source| ScanError::Root {
                path: r.clone(),
                source,
            })?;
            if !c.is_dir() {
                return Err(ScanError::NotADirectory { path: r.clone() });
            }
            let prefix = if roots.len() > 1 {
                let name = c.file_name().map(|n| n.to_string_lossy().into_owned());
                format!("{}/", name.unwrap_or_else(|| "root".into()))
            } else {
                String::new()
            };
            canon.push((c, prefix));
        }
        fs::create_dir_all(state_dir).map_err(|source| ScanError::Root {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let scanner = Scanner {
            roots: canon,
            options,
            cache_path: state_dir.join("hash-cache.sqlite"),
        };
        scanner.open_cache()?;
        Ok(scanner)
    }

    /// The canonical shared directories.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|(r, _)| r.clone()).collect()
    }

    fn open_cache(&self) -> Result<Connection, rusqlite::Error> {
        let c = Connection::open(&self.cache_path)?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS hashes(path TEXT PRIMARY KEY, size INTEGER NOT NULL,
             mtime_ns INTEGER NOT NULL, content_id BLOB NOT NULL, pieces BLOB NOT NULL)",
        )?;
        Ok(c)
    }

    fn inside_roots(&self, p: &Path) -> bool {
        self.roots.iter().any(|(r, _)| p.starts_with(r))
    }

    fn walk(&self) -> Vec<Candidate> {
        let mut out = Vec::new();
        for (root, prefix) in &self.roots {
            let mut stack = vec![(root.clone(), String::new())];
            while let Some((dir, rel)) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) => {
                        warn!("skipping {}: {e}", dir.display());
                        continue;
                    }
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else {
                        debug!("skipping non-UTF-8 name in {}", dir.display());
                        continue;
                    };
                    if (name.starts_with('.') && !self.options.include_hidden)
                        || name.ends_with(PARTIAL_SUFFIX)
                    {
                        continue;
                    }
                    let path = entry.path();
                    let rel_path = format!("{rel}{name}");
                    let Ok(meta) = fs::symlink_metadata(&path) else {
                        continue;
                    };
                    let (abs_path, meta) = if meta.file_type().is_symlink() {
                        // Shared only if it resolves to a regular file inside a shared directory.
                        match fs::canonicalize(&path) {
                            Ok(t) if self.inside_roots(&t) => match fs::metadata(&t) {
                                Ok(m) if m.is_file() => (t, m),
                                _ => continue,
                            },
                            _ => {
                                debug!("not sharing symlink {} (points outside)", path.display());
                                continue;
                            }
                        }
                    } else {
                        (path, meta)
                    };
                    if meta.is_dir() {
                        stack.push((abs_path, format!("{rel_path}/")));
                    } else if meta.is_file() {
                        out.push(Candidate {
                            rel_path: format!("{prefix}{rel_path}"),
                            abs_path,
                            size: meta.len(),
                            mtime_ns: mtime_ns(&meta),
                        });
                    }
                }
            }
        }
        out
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
        let key = |c: &Candidate| c.abs_path.to_string_lossy().into_owned();
        let (hit, miss): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|c| {
            matches!(cached.get(&key(c)), Some((s, m, _, _)) if *s == c.size && *m == c.mtime_ns)
        });
        let total: u64 = miss.iter().map(|c| c.size).sum();
        if !miss.is_empty() {
            info!(
                "hashing {} files ({} MiB)",
                miss.len(),
                total / (1024 * 1024)
            );
        }
        let bar = if self.options.progress && total > 64 * 1024 * 1024 {
            indicatif::ProgressBar::new(total)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "hashing {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let done = AtomicU64::new(0);
        let progress = |n: u64| {
            let d = done.fetch_add(n, Ordering::Relaxed) + n;
            if d % (16 * 1024 * 1024) < n {
                bar.set_position(d);
            }
        };
        let hashed: Vec<(Candidate, ContentId, Vec<ChainingValue>)> = miss
            .into_par_iter()
            .filter_map(|c| match hash_file(&c.abs_path, c.size, &progress) {
                // A file that changed while being hashed waits for the next scan.
                Ok((id, cvs)) => match fs::metadata(&c.abs_path) {
                    Ok(m) if m.len() == c.size && mtime_ns(&m) == c.mtime_ns => Some((c, id, cvs)),
                    _ => {
                        debug!("{} changed while it was hashed", c.abs_path.display());
                        None
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    debug!("{} changed while it was hashed: {e}", c.abs_path.display());
                    None
                }
                Err(e) => {
                    warn!("cannot read {}: {e}", c.abs_path.display());
                    None
                }
            })
            .collect();
        bar.finish_and_clear();

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
                files.push(shared(c, id, Arc::new(cvs)));
            }
        }
        tx.commit()?;
        for c in hit {
            if let Some((_, _, id, cvs)) = cached.get(&key(&c)) {
                let (id, cvs) = (*id, cvs.clone());
                files.push(shared(c, id, cvs));
            }
        }
        Ok(Catalog::new(files))
    }
}

fn shared(
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
        abs_path: c.abs_path,
        name,
        size: c.size,
        mtime_ns: c.mtime_ns,
        content_id,
        piece_hashes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_files_skips_hidden_and_outside_symlinks() {
        let share = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        fs::create_dir_all(share.path().join("sub")).unwrap();
        fs::write(share.path().join("sub/Isaac.py"), b"print(1)").unwrap();
        fs::write(share.path().join(".secret"), b"x").unwrap();
        fs::write(outside.path().join("passwd"), b"root").unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), share.path().join("link-out"))
            .unwrap();
        std::os::unix::fs::symlink(
            share.path().join("sub/Isaac.py"),
            share.path().join("link-in"),
        )
        .unwrap();
        let s = Scanner::new(
            &[share.path().to_path_buf()],
            state.path(),
            ScanOptions::default(),
        )
        .unwrap();
        let cat = s.scan().unwrap();
        let mut paths: Vec<_> = cat.files().map(|f| f.rel_path.clone()).collect();
        paths.sort();
        assert_eq!(paths, ["link-in", "sub/Isaac.py"]);
        let f = cat.files().find(|f| f.rel_path == "sub/Isaac.py").unwrap();
        assert_eq!(f.content_id, ContentId::from(blake3::hash(b"print(1)")));
        // Cached on the second scan; changed file rehashed.
        assert_eq!(s.scan().unwrap().digest(), cat.digest());
        fs::write(share.path().join("sub/Isaac.py"), b"print(22)").unwrap();
        let cat2 = s.scan().unwrap();
        let f = cat2.files().find(|f| f.rel_path == "sub/Isaac.py").unwrap();
        assert_eq!(f.content_id, ContentId::from(blake3::hash(b"print(22)")));
        let hidden = Scanner::new(
            &[share.path().to_path_buf()],
            state.path(),
            ScanOptions {
                include_hidden: true,
                progress: false,
            },
        )
        .unwrap();
        assert_eq!(hidden.scan().unwrap().len(), 3);
    }
}
