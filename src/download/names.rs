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
