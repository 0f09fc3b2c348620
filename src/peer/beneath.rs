//! Opening shared files beneath a handle of their shared directory, so that no symlink, `..` or
//! rename can lead a read out of it.
//!
//! Resolving a path and then opening it is a race: between the two, any directory on the way
//! can be exchanged for a symlink to somewhere else (`O_NOFOLLOW` guards only the last
//! component). Here every path is resolved by the kernel beneath a directory handle opened
//! once, when sharing starts: with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` where the kernel has it (Linux 5.6 on), else one `openat(O_NOFOLLOW)`
//! per component, each relative to the directory handle the previous one gave. Either way a
//! symlink anywhere on the way fails the open (with `ELOOP` or `ENOTDIR`), `..` and absolute
//! paths are refused before any system call, and the handle keeps the directory that was shared
//! even if its path later names another one.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags};

/// Set when the kernel turned `openat2` down as unknown (or a test asked for the walk): every
/// open then walks component by component.
static WALK_ONLY: AtomicBool = AtomicBool::new(false);

/// Makes every open beneath a shared directory walk component by component instead of using
/// `openat2`, as on a kernel without it (for tests of that path; process-wide).
#[doc(hidden)]
pub fn force_component_walk(on: bool) {
    WALK_ONLY.store(on, Ordering::Relaxed);
}

/// Tries of `openat2` that the kernel answers `EAGAIN` (a rename raced the lookup) before the
/// open fails.
#[cfg(any(target_os = "linux", target_os = "android"))]
const OPENAT2_TRIES: usize = 3;

/// How a path is resolved beneath a directory handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolve {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`.
    Openat2,
    /// `openat(O_NOFOLLOW)` one component at a time.
    Walk,
}

fn resolve_mode() -> Resolve {
    if cfg!(any(target_os = "linux", target_os = "android")) && !WALK_ONLY.load(Ordering::Relaxed) {
        Resolve::Openat2
    } else {
        Resolve::Walk
    }
}

/// A shared directory: its canonical path and a handle of the directory itself, opened once.
/// Every file served or hashed is opened beneath the handle, never by its path.
#[derive(Debug)]
pub struct ShareRoot {
    path: PathBuf,
    dir: OwnedFd,
    dev: u64,
    ino: u64,
}

impl PartialEq for ShareRoot {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.dev == other.dev && self.ino == other.ino
    }
}

impl Eq for ShareRoot {}

impl ShareRoot {
    /// Opens the directory at `path` (symlinks resolved, once, here).
    pub fn open(path: &Path) -> io::Result<ShareRoot> {
        let path = std::fs::canonicalize(path)?;
        let dir = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let meta = File::from(dir.try_clone()?).metadata()?;
        Ok(ShareRoot {
            path,
            dir,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The canonical path the directory had when it was opened (for messages and the hash cache).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `abs` relative to this directory, if it is a path inside it (textually: symlinks in
    /// `abs` are not resolved; opening the result beneath the handle refuses any).
    pub fn relative<'a>(&self, abs: &'a Path) -> Option<&'a Path> {
        abs.strip_prefix(&self.path).ok()
    }

    /// Opens whatever is at `rel` beneath this directory for reading (a file or a directory:
    /// see its metadata). Fails if any component is a symlink or `..`, or if `rel` is absolute.
    /// Opening does not wait (`O_NONBLOCK`: should it have become a FIFO meanwhile) nor take a
    /// terminal (`O_NOCTTY`).
    pub fn open_entry(&self, rel: &Path) -> io::Result<File> {
        Ok(File::from(open_beneath(
            self.dir.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            resolve_mode(),
        )?))
    }

    /// Opens the regular file at `rel` beneath this directory for reading, as
    /// [`ShareRoot::open_entry`] does; anything but a regular file is refused.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        let file = self.open_entry(rel)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    /// Opens the directory at `rel` beneath this one (`""` or `"."`: this one), under the same
    /// rules as [`ShareRoot::open_file`].
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        open_beneath(
            self.dir.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            resolve_mode(),
        )
    }
}

/// Opens the entry `name` of the directory `dir` (a single component) as a directory, never
/// following a symlink.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// What a directory entry is, as the catalog needs it.
#[derive(Debug, Clone, Copy)]
pub struct EntryStat {
    /// File, directory, symlink, ...
    pub kind: rustix::fs::FileType,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// The entry `name` of the directory `dir` itself (a symlink is not followed).
// The fields' integer types differ between platforms: the casts are needed on some.
#[allow(clippy::unnecessary_cast)]
pub fn stat_entry(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<EntryStat> {
    let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(EntryStat {
        kind: rustix::fs::FileType::from_raw_mode(st.st_mode as _),
        size: st.st_size as u64,
        mtime_ns: mtime_ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
    })
}

/// [`mtime_ns`] of a file's metadata.
pub fn meta_mtime_ns(meta: &std::fs::Metadata) -> i64 {
    mtime_ns(meta.mtime(), meta.mtime_nsec())
}

/// Modification time in nanoseconds since the Unix epoch (negative before it), as the catalog
/// keeps it.
pub fn mtime_ns(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

/// The components of `rel`, refusing any that could lead out of the directory it is relative to.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} leads out of the shared directory",
                        rel.to_string_lossy()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Opens `rel` beneath `dir` with `flags` (plus `O_NOFOLLOW`), no symlink followed anywhere on
/// the way.
fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    how: Resolve,
) -> io::Result<OwnedFd> {
    let parts = components(rel)?;
    let flags = flags | OFlags::NOFOLLOW;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if how == Resolve::Openat2 {
        use rustix::fs::ResolveFlags;
        let clean: PathBuf = if parts.is_empty() {
            PathBuf::from(".")
        } else {
            parts.iter().collect()
        };
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        // EAGAIN: the kernel saw a rename race it could not rule out; it asks for a retry.
        for _ in 0..OPENAT2_TRIES {
            match rustix::fs::openat2(dir, &clean, flags, Mode::empty(), resolve) {
                Err(rustix::io::Errno::AGAIN) => continue,
                // A kernel before 5.6; or a seccomp filter that does not know the call (some
                // container runtimes answer EPERM): the walk does the same job.
                Err(e @ (rustix::io::Errno::NOSYS | rustix::io::Errno::PERM)) => {
                    let walked = walk(dir, &parts, flags)?;
                    if !WALK_ONLY.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            "openat2 is not available ({e}): shared files are opened one path \
                             component at a time"
                        );
                    }
                    return Ok(walked);
                }
                r => return Ok(r?),
            }
        }
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "openat2 kept asking for a retry (renames racing)",
        ));
    }
    let _ = how;
    walk(dir, &parts, flags)
}

/// Opens `parts` beneath `dir` one component at a time, each relative to the handle the
/// previous one gave, none followed if it is a symlink.
fn walk(dir: BorrowedFd<'_>, parts: &[&OsStr], flags: OFlags) -> io::Result<OwnedFd> {
    let Some((last, dirs)) = parts.split_last() else {
        return Ok(rustix::fs::openat(dir, ".", flags, Mode::empty())?);
    };
    // O_PATH where there is one: passing through a directory needs only search permission.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let through = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let through = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut here: Option<OwnedFd> = None;
    for name in dirs {
        let at = here.as_ref().map_or(dir, |d| d.as_fd());
        here = Some(rustix::fs::openat(at, *name, through, Mode::empty())?);
    }
    let at = here.as_ref().map_or(dir, |d| d.as_fd());
    Ok(rustix::fs::openat(at, *last, flags, Mode::empty())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn read(f: io::Result<File>) -> io::Result<String> {
        let mut s = String::new();
        f?.read_to_string(&mut s)?;
        Ok(s)
    }

    fn open_file(root: &ShareRoot, rel: &str, how: Resolve) -> io::Result<File> {
        let fd = open_beneath(root.dir.as_fd(), Path::new(rel), OFlags::RDONLY, how)?;
        Ok(File::from(fd))
    }

    /// What the tests below share: a share with `a/b/f.txt`, and outside it `secret`.
    fn setup() -> (tempfile::TempDir, ShareRoot) {
        let t = tempfile::tempdir().unwrap();
        let share = t.path().join("share");
        std::fs::create_dir_all(share.join("a/b")).unwrap();
        std::fs::write(share.join("a/b/f.txt"), "inside").unwrap();
        std::fs::write(t.path().join("secret"), "outside").unwrap();
        std::fs::create_dir_all(t.path().join("out")).unwrap();
        std::fs::write(t.path().join("out/f.txt"), "outside").unwrap();
        let root = ShareRoot::open(&share).unwrap();
        (t, root)
    }

    fn modes() -> Vec<Resolve> {
        if cfg!(any(target_os = "linux", target_os = "android")) {
            vec![Resolve::Openat2, Resolve::Walk]
        } else {
            vec![Resolve::Walk]
        }
    }

    #[test]
    fn files_beneath_open_and_nothing_leads_out() {
        for how in modes() {
            let (t, root) = setup();
            let share = root.path().to_path_buf();
            assert_eq!(read(open_file(&root, "a/b/f.txt", how)).unwrap(), "inside");
            assert_eq!(
                read(open_file(&root, "./a/./b/f.txt", how)).unwrap(),
                "inside"
            );
            // `..`, even one that stays inside, and absolute paths are refused outright.
            for bad in ["../secret", "a/../a/b/f.txt", "/etc/passwd"] {
                let e = open_file(&root, bad, how).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{how:?} {bad}");
            }
            // A symlink as the last component, or on the way, out or even inside.
            symlink(t.path().join("secret"), share.join("last-out")).unwrap();
            symlink(share.join("a/b/f.txt"), share.join("last-in")).unwrap();
            symlink(t.path().join("out"), share.join("dir-out")).unwrap();
            symlink(share.join("a"), share.join("dir-in")).unwrap();
            for bad in ["last-out", "last-in", "dir-out/f.txt", "dir-in/b/f.txt"] {
                let e = open_file(&root, bad, how).unwrap_err();
                assert!(
                    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)),
                    "{how:?} {bad}: {e}"
                );
            }
            // A directory on the way swapped for a symlink out (what the race does).
            std::fs::rename(share.join("a"), t.path().join("moved")).unwrap();
            symlink(t.path().join("out"), share.join("a")).unwrap();
            std::fs::create_dir_all(t.path().join("out/b")).unwrap();
            std::fs::write(t.path().join("out/b/f.txt"), "outside").unwrap();
            assert!(open_file(&root, "a/b/f.txt", how).is_err(), "{how:?}");
        }
    }

    #[test]
    fn the_handle_keeps_the_directory_shared_even_if_its_path_is_replaced() {
        for how in modes() {
            let (t, root) = setup();
            let share = root.path().to_path_buf();
            std::fs::rename(&share, t.path().join("old")).unwrap();
            symlink(t.path().join("out"), &share).unwrap();
            std::fs::create_dir_all(t.path().join("out/a/b")).unwrap();
            std::fs::write(t.path().join("out/a/b/f.txt"), "outside").unwrap();
            assert_eq!(read(open_file(&root, "a/b/f.txt", how)).unwrap(), "inside");
        }
    }

    #[test]
    fn only_regular_files_and_directories_as_asked() {
        let (_t, root) = setup();
        assert!(root.open_file(Path::new("a/b/f.txt")).is_ok());
        assert!(root.open_file(Path::new("a/b")).is_err());
        assert!(root.open_dir(Path::new("a/b/f.txt")).is_err());
        assert!(root.open_dir(Path::new("a/b")).is_ok());
        assert!(root.open_dir(Path::new("")).is_ok());
        // A FIFO neither blocks the open nor is served.
        let fifo = root.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let e = root.open_file(Path::new("fifo")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            root.relative(&root.path().join("a/b")),
            Some(Path::new("a/b"))
        );
        assert_eq!(root.relative(Path::new("/elsewhere")), None);
    }
}
