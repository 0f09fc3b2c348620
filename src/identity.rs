//! A peer's Ed25519 identity, kept in its state directory; the index knows a peer by its public key.
//! [`StateLock`] keeps a second process from using the same identity as a peer at the same time.

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};

use crate::content::Digest;
use crate::protocol::REGISTER_CONTEXT;

const KEY_FILE: &str = "identity.key";
/// The file [`StateLock`] locks; it holds the pid of the process holding the lock.
pub const LOCK_FILE: &str = "share.lock";

/// Why the identity key or the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file (or the lock file) cannot be read or written.
    #[error("cannot read or write the identity key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file does not hold a 32-byte Ed25519 secret key.
    #[error("identity key {path} is {len} bytes, expected 32")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The operating system gave no random bytes.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// Another process holds the state directory's [`StateLock`].
    #[error(
        "the state directory {} is in use by another peershare process{}; stop it, or give this one its own --state-dir",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The state directory.
        dir: PathBuf,
        /// The process holding it, when the lock file names one.
        pid: Option<u32>,
    },
}

/// An exclusive lock on a state directory, held for as long as a process uses its identity as a
/// long-running peer (`share`). Two such processes would register the same key at the index,
/// each taking the other's registration over. The lock is `flock(2)` on [`LOCK_FILE`], so the
/// kernel releases it when the process ends, however it ends; dropping this releases it too.
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
}

impl StateLock {
    /// Locks `state_dir` (creating it if needed), or says which process holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, IdentityError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(e));
            }
            // The holder writes its pid just after locking: it may not be there yet.
            let mut text = String::new();
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(IdentityError::InUse {
                dir: state_dir.to_path_buf(),
                pid,
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

/// A peer's Ed25519 signing key: the index knows a peer by its public key, and a peer proves it
/// by signing the index's nonce.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// Loads `identity.key` from `state_dir`, creating the directory and a fresh key if needed.
    pub fn load_or_create(state_dir: &Path) -> Result<Identity, IdentityError> {
        let path = state_dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match fs::read(&path) {
            Ok(bytes) => {
                let secret: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| IdentityError::BadKey {
                            path: path.clone(),
                            len: bytes.len(),
                        })?;
                Ok(Identity {
                    key: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(state_dir).map_err(io)?;
                let secret = random_bytes()?;
                let tmp = state_dir.join(format!("{KEY_FILE}.tmp"));
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(&secret).map_err(io)?;
                f.sync_all().map_err(io)?;
                // A concurrent first start may have written one already: keep whichever landed first.
                if fs::hard_link(&tmp, &path).is_err() && !path.exists() {
                    fs::rename(&tmp, &path).map_err(io)?;
                }
                let _ = fs::remove_file(&tmp);
                Self::load_or_create(state_dir)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A fresh key kept only in memory, for a short-lived peer.
    pub fn ephemeral() -> Result<Identity, IdentityError> {
        Ok(Identity {
            key: SigningKey::from_bytes(&random_bytes()?),
        })
    }

    /// The public key, as the index records it.
    pub fn public_key(&self) -> Digest {
        Digest(self.key.verifying_key().to_bytes())
    }

    /// This key's fingerprint, as users see and type it.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.public_key())
    }

    /// The signing key, for the TLS certificate and for signatures made under a context of
    /// their own (membership certificates).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// An identity from a fixed secret, for test vectors.
    pub fn from_secret(secret: [u8; 32]) -> Identity {
        Identity {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// Signs the index's registration nonce.
    pub fn sign_register(&self, nonce: &Digest) -> Vec<u8> {
        let mut msg = REGISTER_CONTEXT.to_vec();
        msg.extend_from_slice(&nonce.0);
        self.key.sign(&msg).to_bytes().to_vec()
    }
}

/// An Ed25519 public key as users see and type it: the 52 characters of its 32 bytes in
/// lowercase base32 (RFC 4648 alphabet, no padding), e.g. in `HOST:PORT#FINGERPRINT`. It is the
/// whole key, not a hash of it, so checking a fingerprint is comparing keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub Digest);

/// Characters in a [`Fingerprint`].
pub const FINGERPRINT_LEN: usize = 52;

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            &data_encoding::BASE32_NOPAD
                .encode(&self.0.0)
                .to_ascii_lowercase(),
        )
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A string that is not a [`Fingerprint`].
#[derive(Debug, thiserror::Error)]
#[error("not a key fingerprint (expected {FINGERPRINT_LEN} characters a-z and 2-7): {0:?}")]
pub struct BadFingerprint(pub String);

impl std::str::FromStr for Fingerprint {
    type Err = BadFingerprint;
    fn from_str(s: &str) -> Result<Fingerprint, BadFingerprint> {
        let bad = || BadFingerprint(s.chars().take(80).collect());
        if s.len() != FINGERPRINT_LEN {
            return Err(bad());
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Fingerprint(Digest(key)))
    }
}

/// Splits an index address as users write it, `HOST:PORT` or `HOST:PORT#FINGERPRINT`, into the
/// `HOST:PORT` part (not checked further here) and the key it must hold, if given.
pub fn split_address(s: &str) -> Result<(&str, Option<Fingerprint>), BadFingerprint> {
    match s.split_once('#') {
        None => Ok((s, None)),
        Some((addr, fp)) => Ok((addr, Some(fp.parse()?))),
    }
}

/// The port an index listens on unless told otherwise, and the one an index address without a
/// port means.
pub const DEFAULT_INDEX_PORT: u16 = 50000;

/// An index address that cannot be one.
#[derive(Debug, thiserror::Error)]
pub enum BadIndexAddress {
    /// No host before the port.
    #[error("{0:?} has no host (expected HOST, HOST:PORT or [IPV6]:PORT)")]
    NoHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("{0:?} has no valid port (expected a number from 1 to 65535 after the last ':')")]
    BadPort(String),
    /// The key after `#` is not a fingerprint.
    #[error(transparent)]
    Fingerprint(#[from] BadFingerprint),
}

/// An index address as users write it (`HOST`, `HOST:PORT`, `[IPV6]`, `[IPV6]:PORT`, a bare
/// IPv6 address, each optionally followed by `#FINGERPRINT`), written the one way the rest of
/// the code reads: `HOST:PORT[#FINGERPRINT]`, with [`DEFAULT_INDEX_PORT`] when no port is
/// given. A bare IPv6 address is taken whole (`::1:5000` is an address, not `::1` port 5000:
/// write `[::1]:5000` for that). Host names are kept: they are looked up when connecting.
pub fn index_address(spec: &str) -> Result<String, BadIndexAddress> {
    let (addr, key) = match spec.split_once('#') {
        None => (spec, None),
        Some((addr, fp)) => (addr, Some(fp.parse::<Fingerprint>()?)),
    };
    let addr = addr.trim();
    let with_port = if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{addr}]:{DEFAULT_INDEX_PORT}")
    } else {
        // The port follows the last ':' that is not inside brackets.
        let host_end = addr.rfind(']').map_or(0, |i| i + 1);
        match addr[host_end..].rfind(':').map(|i| host_end + i) {
            Some(i) => {
                let (host, port) = (&addr[..i], &addr[i + 1..]);
                if !port.parse::<u16>().is_ok_and(|p| p != 0) {
                    return Err(BadIndexAddress::BadPort(addr.to_string()));
                }
                if host.is_empty() || host == "[]" {
                    return Err(BadIndexAddress::NoHost(addr.to_string()));
                }
                addr.to_string()
            }
            None if addr.is_empty() || addr == "[]" => {
                return Err(BadIndexAddress::NoHost(addr.to_string()));
            }
            None => format!("{addr}:{DEFAULT_INDEX_PORT}"),
        }
    };
    Ok(match key {
        Some(k) => format!("{with_port}#{k}"),
        None => with_port,
    })
}

/// Checks a registration signature made by [`Identity::sign_register`].
pub fn verify_register(public_key: &Digest, nonce: &Digest, signature: &[u8]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&public_key.0) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    let mut msg = REGISTER_CONTEXT.to_vec();
    msg.extend_from_slice(&nonce.0);
    key.verify_strict(&msg, &sig).is_ok()
}

/// 32 random bytes from the operating system.
pub fn random_bytes() -> Result<[u8; 32], IdentityError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_directory_is_locked_once_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let held = StateLock::acquire(&state).unwrap();
        let err = StateLock::acquire(&state).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&state.display().to_string())
                && msg.contains(&format!("(pid {})", std::process::id()))
                && !msg.contains('\n'),
            "{msg}"
        );
        // Another directory is not affected; dropping the lock frees the directory.
        let other = StateLock::acquire(&dir.path().join("other")).unwrap();
        drop(held);
        let again = StateLock::acquire(&state).unwrap();
        drop((again, other));
    }

    #[test]
    fn an_index_address_without_a_port_gets_the_default_one() {
        let fp = Identity::from_secret([2; 32]).fingerprint().to_string();
        for (given, want) in [
            ("127.0.0.1", "127.0.0.1:50000"),
            ("127.0.0.1:4000", "127.0.0.1:4000"),
            ("localhost", "localhost:50000"),
            ("index.example.org:7", "index.example.org:7"),
            ("[::1]", "[::1]:50000"),
            ("[::1]:4000", "[::1]:4000"),
            ("::1", "[::1]:50000"),
            ("2001:db8::1", "[2001:db8::1]:50000"),
            (" 10.0.0.1 ", "10.0.0.1:50000"),
        ] {
            assert_eq!(index_address(given).unwrap(), want, "{given}");
            // The key after '#' stays, in its canonical spelling.
            let keyed = index_address(&format!("{given}#{}", fp.to_uppercase())).unwrap();
            assert_eq!(keyed, format!("{want}#{fp}"), "{given}");
            let (addr, key) = split_address(&keyed).unwrap();
            assert_eq!((addr, key.map(|k| k.to_string())), (want, Some(fp.clone())));
        }
        for bad in [
            "",
            ":4000",
            "[]",
            "[]:4000",
            "host:",
            "host:0",
            "host:65536",
            "host:x",
        ] {
            let e = index_address(bad).unwrap_err().to_string();
            assert!(
                !e.contains('\n') && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
        assert!(matches!(
            index_address("host#notakey"),
            Err(BadIndexAddress::Fingerprint(_))
        ));
    }

    #[test]
    fn fingerprints_round_trip_and_refuse_junk() {
        let id = Identity::from_secret([1; 32]);
        let text = id.fingerprint().to_string();
        assert_eq!(text.len(), FINGERPRINT_LEN);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), id.fingerprint());
        assert_eq!(
            text.to_uppercase().parse::<Fingerprint>().unwrap(),
            id.fingerprint()
        );
        for bad in [
            "",
            "abc",
            &text[1..],
            &format!("{text}a"),
            &text.replace(|_| true, "1"),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn key_is_stable_and_signatures_check() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let nonce = Digest([7; 32]);
        let sig = a.sign_register(&nonce);
        assert!(verify_register(&a.public_key(), &nonce, &sig));
        assert!(!verify_register(&a.public_key(), &Digest([8; 32]), &sig));
        let other = Identity::load_or_create(&dir.path().join("x")).unwrap();
        assert!(!verify_register(&other.public_key(), &nonce, &sig));
        assert!(!verify_register(&a.public_key(), &nonce, &sig[..10]));
    }
}
