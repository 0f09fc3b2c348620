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
/// `..`, no control characters or NUL, no leading dots, no reserved device names, bounded length.
pub fn sanitize_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|'))
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
    for n in 0..10_000 {
        let candidate = dir.join(numbered(&name, n));
        match try_name(&candidate) {
            Ok(()) => return Ok(candidate),
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
        ] {
            assert_eq!(sanitize_file_name(raw), want, "{raw:?}");
        }
        assert!(sanitize_file_name(&"é".repeat(500)).len() <= MAX_NAME_BYTES);
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
}
