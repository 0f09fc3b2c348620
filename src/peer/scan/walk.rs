//! The scanner's walk: lists the shared directories beneath their handles and finds the files to share, following symlinks only to files inside them.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::FileType;
use tracing::{debug, warn};

use super::super::beneath::{meta_mtime_ns, open_subdir, stat_entry};
use super::{PARTIAL_SUFFIX, Scanner};

/// A regular file the walk found, to be hashed unless the cache knows it unchanged.
pub(super) struct Candidate {
    /// Its path in the catalog.
    pub(super) rel_path: String,
    /// Index in `Scanner::roots` of the directory the bytes are in.
    pub(super) root: usize,
    /// Where beneath it.
    pub(super) beneath: PathBuf,
    /// Size in bytes when listed.
    pub(super) size: u64,
    /// Modification time in nanoseconds when listed.
    pub(super) mtime_ns: i64,
}

/// A directory to list: the entry `name` of the directory `parent` (or `parent` itself), at
/// `beneath` in shared directory `root`, listed as `rel` in the catalog. Opened only when its
/// turn comes, so that the walk holds a handle of each directory on its way down, not of every
/// directory waiting to be listed (a directory of 100,000 sub-directories would take as many
/// descriptors).
pub(super) struct ToList {
    pub(super) parent: Arc<fs::File>,
    pub(super) name: Option<String>,
    pub(super) root: usize,
    pub(super) beneath: PathBuf,
    pub(super) rel: String,
    /// The directories (device, inode) above it on the way from its shared directory: one
    /// met again below itself (a bind mount of a directory inside itself) is a loop, not
    /// walked.
    pub(super) ancestors: Arc<Vec<(u64, u64)>>,
}

impl Scanner {
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

    /// Lists every shared directory, depth first, and returns the files to share.
    pub(super) fn walk(&self) -> Vec<Candidate> {
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
}
