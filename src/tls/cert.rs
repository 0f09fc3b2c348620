//! The self-signed certificate that carries a peer's Ed25519 identity key in TLS, and reading
//! the key back out of a certificate a remote end presented.

use ed25519_dalek::pkcs8::EncodePrivateKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;
use crate::content::Digest;
use crate::identity::Identity;

/// The DER `SubjectPublicKeyInfo` of an Ed25519 key is this prefix, then the 32 key bytes
/// (RFC 8410: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) }).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Subject and issuer common name of every peershare certificate. Nothing checks it: the key
/// is the identity.
pub const COMMON_NAME: &str = "peershare";

/// `identity`'s certificate and private key for rustls: self-signed by the identity key, valid
/// from 1975 to 4096 (expiry means nothing here: trust is in the key, not in a CA), serial
/// number from the key's hash. The same key always gives the same bytes (Ed25519 signatures are
/// deterministic), which the test vector in docs/PROTOCOL.md relies on.
pub fn certificate(
    identity: &Identity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let pkcs8 = identity
        .signing_key()
        .to_pkcs8_der()
        .map_err(|e| TlsError::Setup(format!("cannot encode the identity key: {e}")))?;
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|e| TlsError::Setup(format!("cannot load the identity key: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, COMMON_NAME);
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Setup(format!("cannot make the certificate: {e}")))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

/// The Ed25519 public key a certificate carries, or why it carries none. Only the key is read;
/// that the remote end holds its secret half is what the TLS handshake's `CertificateVerify`
/// proves (checked by rustls through our verifiers).
pub fn key_of(cert: &CertificateDer<'_>) -> Result<Digest, TlsError> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| TlsError::BadCertificate(format!("unreadable certificate: {e:?}")))?;
    let spki = parsed.subject_public_key_info();
    let spki: &[u8] = spki.as_ref();
    match spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(key);
            Ok(Digest(k))
        }
        _ => Err(TlsError::BadCertificate(
            "the certificate's key is not an Ed25519 key".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_carries_its_identity_key_and_is_the_same_every_time() {
        let id = Identity::from_secret([7; 32]);
        let (a, _) = certificate(&id).unwrap();
        let (b, _) = certificate(&id).unwrap();
        assert_eq!(a, b, "same key, same certificate");
        assert_eq!(key_of(&a).unwrap(), id.public_key());
        let other = Identity::from_secret([8; 32]);
        assert_ne!(
            key_of(&certificate(&other).unwrap().0).unwrap(),
            id.public_key()
        );
        assert!(key_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }
}
