//! Which key each index holds, as far as this user knows: given with the address
//! (`HOST:PORT#FINGERPRINT`) or pinned on first use in the state directory, like SSH's
//! `known_hosts`. A changed key is refused until the user accepts it.

use std::path::{Path, PathBuf};

use crate::content::Digest;
use crate::identity::{BadFingerprint, BadIndexAddress, Fingerprint, index_address, split_address};
use crate::index::{IndexClient, IndexClientError};
use crate::protocol::Limits;
use crate::tls::{Tls, TlsError};

/// The file, in the state directory, of the keys pinned on first use: one `HOST:PORT
/// FINGERPRINT` line per index.
pub const KNOWN_INDEXES: &str = "known_indexes";

/// Why an index could not be reached as the one the user means.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The fingerprint given with the address is not one.
    #[error(transparent)]
    BadFingerprint(#[from] BadFingerprint),
    /// The address cannot be one (no host, a bad port).
    #[error(transparent)]
    BadAddress(#[from] BadIndexAddress),
    /// The index holds another key than the one pinned on first use.
    #[error(
        "the index at {addr} now holds the key {found}, but {pinned} was pinned on first use \
         (in {}); if its key was changed on purpose, connect once with {addr}#{found} to \
         accept it, otherwise someone may be intercepting the connection",
        file.display()
    )]
    KeyChanged {
        /// The index's address.
        addr: String,
        /// The key pinned.
        pinned: Fingerprint,
        /// The key it holds now.
        found: Fingerprint,
        /// The pin file.
        file: PathBuf,
    },
    /// The pin file cannot be read or written.
    #[error("{}: {source}", file.display())]
    Io {
        /// The pin file.
        file: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Connecting failed otherwise.
    #[error(transparent)]
    Connect(#[from] IndexClientError),
}

/// An exclusive `flock(2)` on `<file>.lock` (made with its directory if need be), released
/// when dropped.
pub(super) fn lock_beside(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(file.with_extension("lock"))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lock)
}

/// Writes `bytes` to a new file beside `file` (named for this process) and renames it over
/// `file`, so readers see the old or the new contents, whole.
pub(super) fn replace_file(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

/// The keys pinned in one state directory.
#[derive(Debug, Clone)]
pub struct KnownIndexes {
    file: PathBuf,
}

impl KnownIndexes {
    /// The pins kept in `state_dir`.
    pub fn new(state_dir: &Path) -> KnownIndexes {
        KnownIndexes {
            file: state_dir.join(KNOWN_INDEXES),
        }
    }

    fn read(&self) -> Result<Vec<(String, Fingerprint)>, TrustError> {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(TrustError::Io {
                    file: self.file.clone(),
                    source,
                });
            }
        };
        // A line that does not parse is skipped: it pins nothing.
        Ok(text
            .lines()
            .filter_map(|l| {
                let (addr, fp) = l.trim().split_once(' ')?;
                Some((addr.to_string(), fp.trim().parse().ok()?))
            })
            .collect())
    }

    /// The key pinned for `addr`.
    pub fn pinned(&self, addr: &str) -> Result<Option<Fingerprint>, TrustError> {
        Ok(self
            .read()?
            .into_iter()
            .find(|(a, _)| a == addr)
            .map(|(_, f)| f))
    }

    /// Pins `key` for `addr`, replacing any earlier pin (written to a new file, then renamed).
    pub fn pin(&self, addr: &str, key: Fingerprint) -> Result<(), TrustError> {
        let io = |source| TrustError::Io {
            file: self.file.clone(),
            source,
        };
        // Commands of one user run at once: the read and the rewrite happen under a lock.
        let _lock = lock_beside(&self.file).map_err(io)?;
        let mut lines: Vec<(String, Fingerprint)> = self
            .read()?
            .into_iter()
            .filter(|(a, _)| a != addr)
            .collect();
        lines.push((addr.to_string(), key));
        let text: String = lines.iter().map(|(a, f)| format!("{a} {f}\n")).collect();
        replace_file(&self.file, text.as_bytes()).map_err(io)
    }

    /// Connects to the index at `spec` (`HOST:PORT` or `HOST:PORT#FINGERPRINT`; without a port,
    /// [`DEFAULT_INDEX_PORT`](crate::identity::DEFAULT_INDEX_PORT)) as `tls`,
    /// requiring the key given with it, else the key pinned for the address; with neither,
    /// pins the key the index shows. A key given explicitly replaces the pin.
    pub async fn connect(
        &self,
        spec: &str,
        tls: Option<&Tls>,
        limits: Limits,
    ) -> Result<IndexClient, TrustError> {
        // Written the one way keys are pinned under: `HOST` is `HOST:50000`.
        let spec = index_address(spec)?;
        let (addr, given) = split_address(&spec)?;
        let pinned = self.pinned(addr)?;
        let expect = given.or(pinned).map(|f| f.0);
        match IndexClient::connect(addr, tls, expect, limits).await {
            Ok(c) => {
                let key = Fingerprint(c.server_key());
                if pinned != Some(key)
                    && let Err(e) = self.pin(addr, key)
                {
                    // The connection is good; only the next one will not know the key.
                    tracing::warn!("{e}");
                }
                Ok(c)
            }
            Err(IndexClientError::Secure {
                source: TlsError::WrongKey { found, .. },
                ..
            }) if given.is_none() => Err(TrustError::KeyChanged {
                addr: addr.to_string(),
                pinned: pinned.unwrap_or(Fingerprint(Digest::default())),
                found,
                file: self.file.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_without_a_port_is_the_default_port_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownIndexes::new(dir.path());
        let e = known
            .connect("[]:4000", None, Limits::default())
            .await
            .err()
            .unwrap();
        assert!(matches!(e, TrustError::BadAddress(_)), "{e}");
        // Nothing listens there (or, on a machine running an index on every address, an
        // index does): either way it is port 50000 that was tried.
        match known.connect("127.51.77.3", None, Limits::default()).await {
            Err(e) => assert!(e.to_string().contains("127.51.77.3:50000"), "{e}"),
            Ok(_) => assert!(known.pinned("127.51.77.3:50000").unwrap().is_some()),
        }
    }
}
