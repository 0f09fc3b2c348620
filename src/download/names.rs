//! Safe destination names: an untrusted name becomes one plain file name inside the target directory, never overwriting.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::peer::PARTIAL_SUFFIX;

/// Longest name kept, in bytes (room is left for a " (N)" suffix).
const MAX_NAME_BYTES: usize = 200;

const RESERVED: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// Turns a name from the index or a peer into a single safe file name: no directories, no
/// `..`, no control or invisible formatting characters (so `\u{202e}gnp.exe` cannot pose as
/// "exe.png"), no leading dots, no reserved device names, bounded length. The rules, in order,
/// are those of docs/PROTOCOL.md §8.5 step 11.
pub fn sanitize_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|&c| {
            !crate::text::is_hidden(c) && !matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|')
        })
        .collect();
    let trimmed = cleaned
        .trim()
        .trim_start_matches('.')
        .trim_end_matches(['.', ' '])
        .trim();
    let mut name = String::new();
    for c in trimmed.chars() {
        if name.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        name.push(c);
    }
    if name.is_empty() {
        name = "download".into();
    }
    let stem = name.split('.').next().unwrap_or("").to_ascii_lowercase();
    if RESERVED.contains(&stem.trim_end()) {
        name.insert(0, '_');
    }
    if name.ends_with(PARTIAL_SUFFIX) {
        name.push('_');
    }
    name
}

/// Most directory levels a download's relative target path may have below the target
/// directory ([`make_subdirs`]).
pub const MAX_TARGET_DEPTH: usize = 64;

/// Turns a relative path from the network (`/`-separated, untrusted) into safe components:
/// each sanitized as a file name is ([`sanitize_file_name`]), so none is empty, `.`, `..` or
/// holds a separator; at most [`MAX_TARGET_DEPTH`] directories above the name.
pub fn sanitize_relative_path(raw: &str) -> io::Result<Vec<String>> {
    let parts: Vec<String> = raw
        .split('/')
        .filter(|c| !c.is_empty())
        .map(sanitize_file_name)
        .collect();
    if parts.is_empty() {
        return Ok(vec![sanitize_file_name(raw)]);
    }
    if parts.len() > MAX_TARGET_DEPTH + 1 {
        return Err(io::Error::other(format!(
            "{} directory levels, over the limit of {MAX_TARGET_DEPTH}",
            parts.len() - 1
        )));
    }
    Ok(parts)
}

/// The identity of a directory (device, inode), to tell whether a path still names it.
pub type DirIdentity = (u64, u64);

/// Makes (or opens) `root/dirs[0]/dirs[1]/…` one level at a time, each relative to the
/// descriptor of the level above (`mkdirat`, then `openat` with `O_NOFOLLOW | O_DIRECTORY`):
/// a symbolic link anywhere below `root` (planted, or swapped in meanwhile) is refused, never
/// followed, so nothing lands outside `root`. `dirs` must be sanitized components
/// ([`sanitize_relative_path`]). Returns the directory's path and identity.
pub fn make_subdirs(root: &Path, dirs: &[String]) -> io::Result<(PathBuf, DirIdentity)> {
    open_subdirs(root, dirs).map(|(path, id, _)| (path, id))
}

/// [`make_subdirs`], keeping the last directory open: writing through its handle
/// ([`through_handle`]) lands in that very directory even if its path is swapped for a link
/// meanwhile.
pub fn open_subdirs(
    root: &Path,
    dirs: &[String],
) -> io::Result<(PathBuf, DirIdentity, std::fs::File)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    std::fs::create_dir_all(root)?;
    let open = |at: libc::c_int, name: &CString| -> io::Result<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid descriptor (or AT_FDCWD) and a NUL-terminated name.
        let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat returned a new descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let c_root = CString::new(root.as_os_str().as_bytes())?;
    // The root itself is the user's choice: a link there is followed (O_NOFOLLOW is for what
    // comes from the network); its own path is opened without O_NOFOLLOW.
    // SAFETY: as above.
    let fd = unsafe {
        libc::open(
            c_root.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    let mut dir = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut path = root.to_path_buf();
    for d in dirs {
        if d.is_empty() || d == "." || d == ".." || d.contains(['/', '\\', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{d:?} is not a plain directory name"),
            ));
        }
        path.push(d);
        let name = CString::new(d.as_bytes())?;
        // SAFETY: a valid descriptor and a NUL-terminated name.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o777) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
            }
        }
        dir = open(dir.as_raw_fd(), &name).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => io::Error::other(format!(
                "{} is a symbolic link or not a directory: refusing to write through it",
                path.display()
            )),
            _ => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        })?;
    }
    let handle = std::fs::File::from(dir);
    let meta = handle.metadata()?;
    use std::os::unix::fs::MetadataExt;
    Ok((path, (meta.dev(), meta.ino()), handle))
}

/// A path that reaches the directory `handle` is open on whatever its own path now names
/// (`/proc/self/fd/N`, while the handle stays open), or `None` without `/proc`.
pub fn through_handle(handle: &std::fs::File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let via = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    via.is_dir().then_some(via)
}

/// Whether `root/dirs…` still is, level by level without following a link, the directory
/// [`make_subdirs`] made (a download into it wrote nothing outside `root`).
pub fn still_subdir(root: &Path, dirs: &[String], was: DirIdentity) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut path = root.to_path_buf();
    for d in dirs {
        path.push(d);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => {}
            _ => return false,
        }
    }
    std::fs::symlink_metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == was)
}

/// Where a download of `id` in `dir` keeps its bytes until it is complete (hidden; a sharing
/// peer never lists such files).
pub fn partial_path(dir: &Path, id: &crate::content::ContentId) -> PathBuf {
    dir.join(format!(".{}{PARTIAL_SUFFIX}", id.to_hex()))
}

/// `name`, or `name (n)` before the extension.
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_string();
    }
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({n})"),
    }
}

/// Atomically gives `temp` the name `dir/name` (or `name (1)`, `name (2)`, …, whichever is
/// free), never replacing an existing file; then syncs the directory. Returns the final path.
pub fn publish(temp: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    let path = place(dir, name, |candidate| rename_noreplace(temp, candidate))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Calls `try_name` with `dir/name`, then `name (1)`, `name (2)`, … (sanitized) until one is
/// not taken (`try_name` fails with `AlreadyExists` for a taken one). Returns the path used.
pub fn place(
    dir: &Path,
    name: &str,
    mut try_name: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<PathBuf> {
    let name = sanitize_file_name(name);
    // Thousands of files of one name (changelog.gz from every package) would each probe every
    // number taken before them: the process remembers where the last one landed and goes on
    // from there. The filesystem stays the judge: a taken name still says `AlreadyExists`.
    let key = (dir.to_path_buf(), name.clone());
    let start = next_numbers()
        .lock()
        .map_or(0, |m| m.get(&key).copied().unwrap_or(0));
    for n in start..=u32::MAX {
        let candidate = dir.join(numbered(&name, n));
        match try_name(&candidate) {
            Ok(()) => {
                if let Ok(mut m) = next_numbers().lock() {
                    if m.len() >= MAX_REMEMBERED_NAMES {
                        m.clear();
                    }
                    m.insert(key, n.saturating_add(1));
                }
                return Ok(candidate);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    // Not `AlreadyExists`: that is what a taken candidate says.
    Err(io::Error::other(format!(
        "no free name for {name} in {}",
        dir.display()
    )))
}

/// Names whose next free number is remembered; past this the memory starts again (a cost in
/// probes, never a wrong name).
const MAX_REMEMBERED_NAMES: usize = 65_536;

/// For each (directory, sanitized name) published to in this process, the number to try next.
fn next_numbers() -> &'static std::sync::Mutex<std::collections::HashMap<(PathBuf, String), u32>> {
    static NEXT: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<(PathBuf, String), u32>>,
    > = std::sync::OnceLock::new();
    NEXT.get_or_init(Default::default)
}

/// Renames `from` to `to` unless `to` exists (`renameat2` with `RENAME_NOREPLACE`): an
/// existing file is never replaced.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let f = CString::new(from.as_os_str().as_bytes())?;
    let t = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them as given.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // The filesystem cannot rename without replacing: a hard link cannot replace either.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_through_a_handle_stay_in_the_directory_made_when_it_is_swapped_for_a_link() {
        let t = tempfile::tempdir().unwrap();
        let (root, outside) = (t.path().join("out"), t.path().join("elsewhere"));
        std::fs::create_dir_all(&outside).unwrap();
        let (path, _, handle) = open_subdirs(&root, &["a".to_string()]).unwrap();
        let via = through_handle(&handle).expect("/proc is mounted here");
        // Someone swaps out/a for a link to a directory outside the target.
        std::fs::rename(&path, root.join("a-moved")).unwrap();
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        std::fs::write(via.join("f.part"), b"bytes").unwrap();
        std::fs::rename(via.join("f.part"), via.join("f")).unwrap();
        assert_eq!(std::fs::read(root.join("a-moved/f")).unwrap(), b"bytes");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing outside"
        );
        // And a path through the link is refused when the directories are made again.
        let err = open_subdirs(&root, &["a".to_string()]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn hostile_names_become_plain_names() {
        for (raw, want) in [
            ("../../etc/passwd", "passwd"),
            ("..", "download"),
            ("/abs/path/x.txt", "x.txt"),
            ("a\\b\\..\\c.exe", "c.exe"),
            ("nul\0byte\nname", "nulbytename"),
            (".bashrc", "bashrc"),
            ("CON.txt", "_CON.txt"),
            ("", "download"),
            ("  spaced .  ", "spaced"),
            ("Isaac.py", "Isaac.py"),
            // Invisible formatting characters go: nothing can make a name read backwards.
            ("\u{202e}gnp.exe", "gnp.exe"),
            ("a\u{2066}b\u{2069}\u{200b}c\u{feff}.txt", "abc.txt"),
            ("\u{200f}\u{061c}x\u{180e}\u{2060}.pdf\u{200e}", "x.pdf"),
            ("c1\u{9b}31m.txt", "c131m.txt"),
            ("\u{202e}\u{202d}", "download"),
            ("\u{202e}.bashrc", "bashrc"),
            ("名前 Ünïcödé.mp3", "名前 Ünïcödé.mp3"),
        ] {
            assert_eq!(sanitize_file_name(raw), want, "{raw:?}");
        }
        assert!(sanitize_file_name(&"é".repeat(500)).len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn relative_paths_become_plain_components() {
        for (raw, want) in [
            ("a/b/c.txt", vec!["a", "b", "c.txt"]),
            ("../x", vec!["download", "x"]),
            ("a/../../b", vec!["a", "download", "download", "b"]),
            ("/etc/x", vec!["etc", "x"]),
            ("a\\b", vec!["b"]),
            ("a\u{1b}[31m/b\n", vec!["a[31m", "b"]),
            ("", vec!["download"]),
        ] {
            assert_eq!(sanitize_relative_path(raw).unwrap(), want, "{raw:?}");
        }
        let deep = vec!["d"; MAX_TARGET_DEPTH + 1].join("/") + "/f";
        assert!(sanitize_relative_path(&deep).is_err());
    }

    #[test]
    fn subdirectories_are_made_without_following_a_link() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dirs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (p, id) = make_subdirs(root.path(), &dirs(&["a", "b"])).unwrap();
        assert_eq!(p, root.path().join("a/b"));
        assert!(p.is_dir());
        assert!(still_subdir(root.path(), &dirs(&["a", "b"]), id));
        // Made again: the same directory.
        assert_eq!(make_subdirs(root.path(), &dirs(&["a", "b"])).unwrap().1, id);
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let e = make_subdirs(root.path(), &dirs(&["evil", "x"])).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // A directory swapped for a link after it was made is noticed.
        std::fs::remove_dir(root.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("a/b")).unwrap();
        assert!(!still_subdir(root.path(), &dirs(&["a", "b"]), id));
        assert!(make_subdirs(root.path(), &dirs(&[".."])).is_err());
    }

    #[test]
    fn publish_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"old").unwrap();
        std::fs::write(dir.path().join("a (1).txt"), b"old1").unwrap();
        let tmp = dir.path().join("t");
        std::fs::write(&tmp, b"new").unwrap();
        let p = publish(&tmp, dir.path(), "../a.txt").unwrap();
        assert_eq!(p, dir.path().join("a (2).txt"));
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"old");
        assert_eq!(std::fs::read(p).unwrap(), b"new");
        assert!(!tmp.exists());
    }

    #[test]
    fn thousands_of_one_name_each_land_under_a_name_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        // The file system is the judge: a name taken by someone else meanwhile is skipped.
        std::fs::write(dir.path().join("changelog (7).gz"), b"theirs").unwrap();
        let mut probes = 0u64;
        let mut seen = std::collections::HashSet::new();
        for i in 0..12_000u32 {
            let p = place(dir.path(), "changelog.gz", |c| {
                probes += 1;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(c)
                    .map(|_| ())
            })
            .unwrap_or_else(|e| panic!("file {i}: {e}"));
            assert!(seen.insert(p), "file {i} got a name already given");
        }
        // Past the 10,000 numbers the old code tried, and in about one probe per file (it made
        // 72 million for these).
        assert!(dir.path().join("changelog (11999).gz").exists());
        assert_eq!(
            std::fs::read(dir.path().join("changelog (7).gz")).unwrap(),
            b"theirs"
        );
        assert!(probes < 12_100, "{probes} probes for 12,000 files");
    }
}
