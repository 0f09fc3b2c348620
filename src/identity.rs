//! A peer's Ed25519 identity, kept in its state directory; the index knows a peer by its public key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};

use crate::content::Digest;
use crate::protocol::REGISTER_CONTEXT;

const KEY_FILE: &str = "identity.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write the identity key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity key {path} is {len} bytes, expected 32")]
    BadKey { path: PathBuf, len: usize },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

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

    pub fn public_key(&self) -> Digest {
        Digest(self.key.verifying_key().to_bytes())
    }

    /// Signs the index's registration nonce.
    pub fn sign_register(&self, nonce: &Digest) -> Vec<u8> {
        let mut msg = REGISTER_CONTEXT.to_vec();
        msg.extend_from_slice(&nonce.0);
        self.key.sign(&msg).to_bytes().to_vec()
    }
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
