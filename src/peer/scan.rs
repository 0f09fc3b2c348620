//! `Scanner`: walks the shared directories, hashes new or changed files in parallel, caches ids by (path, size, mtime).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use blake3::hazmat::ChainingValue;
use rayon::prelude::*;
use rusqlite::{Connection, params};
use rustix::fs::FileType;
use tracing::{debug, info, warn};

use super::beneath::{meta_mtime_ns, open_subdir, stat_entry};
use super::{Catalog, ShareRoot, SharedFile};
use crate::content::{ContentId, hash_open_file};

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

/// Told while a scan hashes files: bytes hashed so far, and bytes to hash in all. Called from
/// the hashing threads (every [`HASH_PROGRESS_STEP`] bytes and once at the end), so it must be quick.
pub type HashProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

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

struct Candidate {
    rel_path: String,
    /// Index in `Scanner::roots` of the directory the bytes are in.
    root: usize,
    /// Where beneath it.
    beneath: PathBuf,
    size: u64,
    mtime_ns: i64,
}

/// A directory to list: the entry `name` of the directory `parent` (or `parent` itself), at
/// `beneath` in shared directory `root`, listed as `rel` in the catalog. Opened only when its
/// turn comes, so that the walk holds a handle of each directory on its way down, not of every
/// directory waiting to be listed (a directory of 100,000 sub-directories would take as many
/// descriptors).
struct ToList {
    parent: Arc<fs::File>,
    name: Option<String>,
    root: usize,
    beneath: PathBuf,
    rel: String,
    /// The directories (device, inode) above it on the way from its shared directory: one
    /// met again below itself (a bind mount of a directory inside itself) is a loop, not
    /// walked.
    ancestors: Arc<Vec<(u64, u64)>>,
}

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
            cache_path: state_dir.join("hash-cache.sqlite"),
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
        let c = Connection::open(&self.cache_path)?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS hashes(path TEXT PRIMARY KEY, size INTEGER NOT NULL,
             mtime_ns INTEGER NOT NULL, content_id BLOB NOT NULL, pieces BLOB NOT NULL)",
        )?;
        Ok(c)
    }

    /// Where a symlink's target is: the shared directory it is in (the innermost, if they
    /// nest) and the path beneath it, or `None` if it is outside them all. The path is only
    /// resolved here; what is read is then opened beneath that directory's handle, where a
    /// symlink exchanged in meanwhile makes the open fail.
    fn symlink_target(&self, link: &Path) -> Option<(usize, PathBuf)> {
        let target = fs::canonicalize(link).ok()?;
        self.roots
            .iter()
            .enumerate()
            .filter_map(|(i, (r, _))| Some((i, r.relative(&target)?.to_path_buf())))
            .min_by_key(|(_, rel)| rel.components().count())
    }

    fn walk(&self) -> Vec<Candidate> {
        let mut out = Vec::new();
        for (i, (root, prefix)) in self.roots.iter().enumerate() {
            let dir = match root.open_dir(Path::new("")) {
                Ok(d) => fs::File::from(d),
                Err(e) => {
                    warn!("skipping {}: {e}", root.path().display());
                    continue;
                }
            };
            let mut stack = vec![ToList {
                parent: Arc::new(dir),
                name: None,
                root: i,
                beneath: PathBuf::new(),
                rel: String::new(),
                ancestors: Arc::new(Vec::new()),
            }];
            while let Some(d) = stack.pop() {
                self.list(d, prefix, &mut stack, &mut out);
            }
        }
        out
    }

    /// Lists one directory: its files into `out`, its sub-directories onto `stack`.
    fn list(&self, d: ToList, prefix: &str, stack: &mut Vec<ToList>, out: &mut Vec<Candidate>) {
        let shown = || self.roots[d.root].0.path().join(&d.beneath);
        let dir = match &d.name {
            None => d.parent.clone(),
            // Opened without following: if it became a symlink since it was listed, this
            // fails instead of walking wherever it points.
            Some(name) => match open_subdir(d.parent.as_fd(), OsStr::new(name)) {
                Ok(sub) => Arc::new(fs::File::from(sub)),
                Err(e) => {
                    debug!("skipping {}: {e}", shown().display());
                    return;
                }
            },
        };
        drop(d.parent);
        let Ok(m) = dir.metadata() else { return };
        let id = (m.dev(), m.ino());
        if d.ancestors.contains(&id) {
            debug!("not walking {}: a loop back to a directory above it", d.rel);
            return;
        }
        let mut ancestors = Vec::clone(&d.ancestors);
        ancestors.push(id);
        let ancestors = Arc::new(ancestors);
        // A second handle of the directory for the listing (a `Dir` owns the one it reads);
        // the entries are looked up and opened through `dir`.
        let listed = dir.try_clone().and_then(|fd| Ok(rustix::fs::Dir::new(fd)?));
        let mut entries = match listed {
            Ok(entries) => entries,
            Err(e) => {
                warn!("skipping {}: {e}", shown().display());
                return;
            }
        };
        while let Some(entry) = entries.read() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    warn!("listing {}: {e}", shown().display());
                    break;
                }
            };
            let Ok(name) = entry.file_name().to_str() else {
                debug!("skipping non-UTF-8 name in {}", shown().display());
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            if (name.starts_with('.') && !self.options.include_hidden)
                || name.ends_with(PARTIAL_SUFFIX)
            {
                continue;
            }
            let rel_path = format!("{}{name}", d.rel);
            let Ok(st) = stat_entry(dir.as_fd(), OsStr::new(name)) else {
                continue;
            };
            let beneath = d.beneath.join(name);
            match st.kind {
                FileType::RegularFile => out.push(Candidate {
                    rel_path: format!("{prefix}{rel_path}"),
                    root: d.root,
                    beneath,
                    size: st.size,
                    mtime_ns: st.mtime_ns,
                }),
                FileType::Directory => stack.push(ToList {
                    parent: dir.clone(),
                    name: Some(name.to_string()),
                    root: d.root,
                    beneath,
                    rel: format!("{rel_path}/"),
                    ancestors: ancestors.clone(),
                }),
                FileType::Symlink => {
                    let link = shown().join(name);
                    if let Some(c) = self.symlinked_file(&link, format!("{prefix}{rel_path}")) {
                        out.push(c);
                    }
                }
                _ => {}
            }
        }
    }

    /// The file a symlink shares: only a regular file inside a shared directory, read there,
    /// beneath that directory's handle. (Symlinks to directories are not followed.)
    fn symlinked_file(&self, link: &Path, rel_path: String) -> Option<Candidate> {
        let Some((root, beneath)) = self.symlink_target(link) else {
            debug!("not sharing symlink {} (points outside)", link.display());
            return None;
        };
        let m = self.roots[root]
            .0
            .open_entry(&beneath)
            .ok()?
            .metadata()
            .ok()?;
        if !m.is_file() {
            debug!("not sharing symlink {} (not to a file)", link.display());
            return None;
        }
        Some(Candidate {
            rel_path,
            root,
            beneath,
            size: m.len(),
            mtime_ns: meta_mtime_ns(&m),
        })
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
        let done = AtomicU64::new(0);
        let progress = |n: u64| {
            let d = done.fetch_add(n, Ordering::Relaxed) + n;
            if d % HASH_PROGRESS_STEP < n
                && let Some(tell) = &self.options.progress
            {
                tell(d, total);
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
            tell(total, total);
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
                progress: None,
            },
        )
        .unwrap();
        assert_eq!(hidden.scan().unwrap().len(), 3);
    }

    #[test]
    fn hashing_progress_is_told_in_steps_and_once_complete() {
        let t = tempfile::tempdir().unwrap();
        let share = t.path().join("share");
        fs::create_dir_all(&share).unwrap();
        let big = HASH_PROGRESS_STEP as usize * 2 + 5;
        fs::write(share.join("big.bin"), vec![7u8; big]).unwrap();
        fs::write(share.join("small.txt"), b"x").unwrap();
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = told.clone();
        let options = ScanOptions {
            include_hidden: false,
            progress: Some(Arc::new(move |done, total| {
                sink.lock().unwrap().push((done, total))
            })),
        };
        let state = t.path().join("state");
        let s = Scanner::new(std::slice::from_ref(&share), &state, options.clone()).unwrap();
        assert_eq!(s.scan().unwrap().len(), 2);
        let total = big as u64 + 1;
        let seen = told.lock().unwrap().clone();
        assert_eq!(seen.last(), Some(&(total, total)), "{seen:?}");
        assert!(seen.len() >= 3, "two steps and the end: {seen:?}");
        assert!(seen.iter().all(|&(d, t)| t == total && d <= total));
        // Nothing to hash the second time (the ids are cached): nothing told.
        told.lock().unwrap().clear();
        let again = Scanner::new(std::slice::from_ref(&share), &state, options).unwrap();
        assert_eq!(again.scan().unwrap().len(), 2);
        assert!(told.lock().unwrap().is_empty());
    }

    fn paths(cat: &Catalog) -> Vec<String> {
        let mut paths: Vec<_> = cat.files().map(|f| f.rel_path.clone()).collect();
        paths.sort();
        paths
    }

    #[test]
    fn symlinks_to_directories_are_not_followed_and_file_symlinks_read_their_target() {
        let t = tempfile::tempdir().unwrap();
        let share = t.path().join("share");
        let outside = t.path().join("outside");
        fs::create_dir_all(share.join("sub/deep")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(share.join("sub/deep/a.txt"), b"a").unwrap();
        fs::write(outside.join("secret.txt"), b"secret").unwrap();
        let link = |to: &Path, at: &str| std::os::unix::fs::symlink(to, share.join(at)).unwrap();
        link(&outside, "out");
        link(&share.join("sub"), "alias");
        link(&share, "sub/top");
        link(Path::new(".."), "sub/deep/up");
        link(Path::new("deep/a.txt"), "sub/a-link");
        let s = Scanner::new(
            std::slice::from_ref(&share),
            &t.path().join("state"),
            ScanOptions::default(),
        )
        .unwrap();
        let cat = s.scan().unwrap();
        assert_eq!(paths(&cat), ["sub/a-link", "sub/deep/a.txt"]);
        // Both name the same bytes, opened beneath the share where the target really is.
        for f in cat.files() {
            assert_eq!(f.beneath, Path::new("sub/deep/a.txt"));
            assert_eq!(f.abs_path(), share.join("sub/deep/a.txt"));
        }
    }

    #[test]
    fn a_shared_directory_replaced_after_start_is_still_the_one_scanned() {
        let t = tempfile::tempdir().unwrap();
        let share = t.path().join("share");
        fs::create_dir_all(&share).unwrap();
        fs::write(share.join("mine.txt"), b"mine").unwrap();
        let s = Scanner::new(
            std::slice::from_ref(&share),
            &t.path().join("state"),
            ScanOptions::default(),
        )
        .unwrap();
        assert_eq!(paths(&s.scan().unwrap()), ["mine.txt"]);
        // The path now names another directory (here a symlink to one holding other files).
        fs::rename(&share, t.path().join("moved")).unwrap();
        let other = t.path().join("other");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("theirs.txt"), b"theirs").unwrap();
        std::os::unix::fs::symlink(&other, &share).unwrap();
        let cat = s.scan().unwrap();
        assert_eq!(paths(&cat), ["mine.txt"]);
        let f = cat.files().next().unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut f.root.open_file(&f.beneath).unwrap(), &mut bytes).unwrap();
        assert_eq!(bytes, b"mine");
    }

    /// A directory of many sub-directories scans with few descriptors (one per directory on
    /// the way down, not one per directory waiting its turn): in a child process of this test
    /// binary whose descriptor limit is 64.
    #[test]
    fn many_sub_directories_scan_within_a_small_descriptor_limit() {
        const DIRS: usize = 300;
        if std::env::var_os("PEERSHARE_SCAN_FD_CHILD").is_some() {
            let t = tempfile::tempdir().unwrap();
            let share = t.path().join("share");
            for i in 0..DIRS {
                fs::create_dir_all(share.join(format!("d{i}/e"))).unwrap();
                fs::write(share.join(format!("d{i}/e/f.txt")), i.to_string()).unwrap();
            }
            let s = Scanner::new(
                std::slice::from_ref(&share),
                &t.path().join("state"),
                ScanOptions::default(),
            )
            .unwrap();
            assert_eq!(s.scan().unwrap().len(), DIRS);
            return;
        }
        let name = "peer::scan::tests::many_sub_directories_scan_within_a_small_descriptor_limit";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 64 && exec \"$0\" --exact \"$1\" --test-threads 1")
            .arg(std::env::current_exe().unwrap())
            .arg(name)
            .env("PEERSHARE_SCAN_FD_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
