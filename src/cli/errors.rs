//! How the binary reports a failure: one line, each cause once, a hint where one helps; and a
//! closed standard output (`peershare search a | head -2`), which is no failure at all.

use std::io::ErrorKind;
use std::path::Path;

use anyhow::bail;
use peershare::index::IndexClientError;
use peershare::node::TrustError;

/// An error and its causes on one line ("a: b: c"), each thing said once (many errors quote
/// their cause already), with a hint when the cause is one a user can fix.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = chain_line(e);
    if let Some(hint) = hint(e) {
        line.push_str(" (");
        line.push_str(&hint);
        line.push(')');
    }
    line
}

/// An error and its causes on one line, each thing said once, without a hint (for the menu,
/// where the hint's flags and variables are not what the user types).
pub fn chain_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .fold(String::new(), |line, c| match line.is_empty() {
            true => c,
            false if line.contains(&c) => line,
            false => format!("{line}: {c}"),
        })
}

/// What the user may do about `e`, if we know.
fn hint(e: &anyhow::Error) -> Option<String> {
    let unreachable = e.chain().any(|c| {
        let connect = c
            .downcast_ref::<IndexClientError>()
            .or_else(|| match c.downcast_ref() {
                Some(TrustError::Connect(inner)) => Some(inner),
                _ => None,
            });
        matches!(connect, Some(IndexClientError::Connect { source, .. }) if matches!(
            source.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::TimedOut
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::ConnectionReset
        ))
    });
    unreachable.then(|| {
        let config = super::config::default_path()
            .map(|p| format!(", or `index` in {}", p.display()))
            .unwrap_or_default();
        format!(
            "is `peershare index` running there? set --index HOST:PORT or PEERSHARE_INDEX{config}"
        )
    })
}

/// Whether `e` is a write to a standard output whose reader has gone (`| head`): the command
/// has nothing more to say to anyone, and ends quietly and successfully, as `ls | head` does.
/// A broken pipe elsewhere (a peer's socket) is an error like any other.
pub fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    }) && stdout_closed()
}

/// Whether standard output is a pipe or socket nobody reads any more: poll(2) reports an
/// error on the write end of a pipe whose read end is closed.
pub fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Ends the process quietly (status 0) when a `println!` (in this code or a library's) panics
/// because standard output was closed; any other panic is reported as before.
pub fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && stdout_closed() {
            std::process::exit(0);
        }
        default(info)
    }));
}

/// Checks a download directory (`get -o DIR`) before anything is fetched, in the words of what
/// is wrong rather than the system's ("File exists"). A directory that does not exist yet is
/// made when the first file arrives (as `curl --create-dirs` and `wget -P` do), so it is
/// enough here that its nearest existing ancestor is a directory we may write in.
pub fn check_output_dir(dir: &Path) -> anyhow::Result<()> {
    check_dir("-o", dir, dir)
}

/// Checks that `dir`, which `what` (a flag or a name) `given` needs, is a directory we may
/// write in or one we may make: the nearest existing ancestor is a directory we may write in.
pub fn check_dir(what: &str, given: &Path, dir: &Path) -> anyhow::Result<()> {
    let shown = given.display();
    let mut existing = dir;
    loop {
        match std::fs::metadata(existing) {
            Ok(m) if m.is_dir() => break,
            Ok(_) if existing == given => bail!("{what} {shown} is a file, not a directory"),
            Ok(_) => bail!(
                "{what} {shown}: {} is a file, not a directory",
                existing.display()
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(e) if e.kind() == ErrorKind::PermissionDenied => bail!(
                "{what} {shown}: permission denied to look into the directory of {}",
                existing.display()
            ),
            Err(e) => bail!("{what} {shown}: {e}"),
        }
        existing = match existing.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => return Ok(()),
        };
    }
    if !writable(existing) {
        match existing == dir {
            true => bail!(
                "{what} {shown}: permission denied (cannot write in {})",
                existing.display()
            ),
            false => bail!(
                "{what} {shown}: permission denied (cannot make a directory in {})",
                existing.display()
            ),
        }
    }
    Ok(())
}

/// Checks the directories given to `share`: each exists, is a directory and can be read.
pub fn check_share_dirs(dirs: &[std::path::PathBuf]) -> anyhow::Result<()> {
    for d in dirs {
        let shown = d.display();
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("cannot share {shown}: it is a file, not a directory"),
            Err(e)
                if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                bail!("cannot share {shown}: no such directory")
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                bail!("cannot share {shown}: permission denied")
            }
            Err(e) => bail!("cannot share {shown}: {e}"),
        }
        if std::fs::read_dir(d).is_err_and(|e| e.kind() == ErrorKind::PermissionDenied) {
            bail!("cannot share {shown}: permission denied (cannot list the directory)");
        }
    }
    Ok(())
}

/// Whether this process may make entries in `dir` (access(2) with W_OK and X_OK).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_said_once_and_unreachable_indexes_get_a_hint() {
        let io = std::io::Error::from(ErrorKind::ConnectionRefused);
        let text = io.to_string();
        let e = anyhow::Error::new(IndexClientError::Connect {
            addr: "127.0.0.1:9".into(),
            source: io,
        });
        let line = error_line(&e);
        assert_eq!(line.matches(&text).count(), 1, "{line}");
        assert!(
            line.contains("is `peershare index` running there?"),
            "{line}"
        );
        assert!(line.contains("PEERSHARE_INDEX"), "{line}");
        // Wrapped as the trust layer wraps it, the hint is found too.
        let e = anyhow::Error::new(TrustError::Connect(IndexClientError::Connect {
            addr: "127.0.0.1:9".into(),
            source: std::io::Error::from(ErrorKind::TimedOut),
        }))
        .context("searching");
        assert!(
            error_line(&e).contains("running there?"),
            "{}",
            error_line(&e)
        );
        // Not every failure is one the hint is about.
        let e = anyhow::anyhow!("no file matches \"x\"");
        assert_eq!(error_line(&e), "no file matches \"x\"");
    }

    #[test]
    fn output_directories_are_checked_in_plain_words() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = check_output_dir(&file).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("-o {} is a file, not a directory", file.display())
        );
        let below = file.join("sub/dir");
        let e = check_output_dir(&below).unwrap_err().to_string();
        assert!(
            e.ends_with(&format!("{} is a file, not a directory", file.display())),
            "{e}"
        );
        // A directory to be made, and one that is there, are fine.
        check_output_dir(&dir.path().join("new/deeper")).unwrap();
        check_output_dir(dir.path()).unwrap();
        check_output_dir(Path::new("relative-not-there")).unwrap();
        let e = check_share_dirs(&[dir.path().join("nope")])
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("no such directory"), "{e}");
        let e = check_share_dirs(std::slice::from_ref(&file))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("is a file, not a directory"), "{e}");
    }
}
