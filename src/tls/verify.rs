//! Certificate checks for peershare's TLS: no certificate authorities, the remote end is its
//! Ed25519 key. A client checks the server's key against the one it expects; a server takes any
//! client key (who may do what is decided above TLS) but always asks for one.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::cert::key_of;
use crate::content::Digest;

/// The only signature scheme offered and accepted: identities are Ed25519 keys.
const SCHEMES: [SignatureScheme; 1] = [SignatureScheme::ED25519];

fn bad_encoding() -> Error {
    Error::InvalidCertificate(CertificateError::BadEncoding)
}

fn verify13(
    algs: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
}

/// A client's check of the server's certificate: its key must be `expected` (when given). The
/// key seen is kept, so a refusal can say which key the server holds.
#[derive(Debug)]
pub(super) struct ServerKey {
    pub(super) expected: Option<Digest>,
    pub(super) seen: Mutex<Option<Digest>>,
    pub(super) algs: WebPkiSupportedAlgorithms,
}

impl ServerKey {
    pub(super) fn seen(&self) -> Option<Digest> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ServerCertVerifier for ServerKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let key = key_of(end_entity).map_err(|_| bad_encoding())?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        match self.expected {
            Some(want) if want != key => Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

/// A server's check of a client's certificate: any Ed25519 key, but one is required.
#[derive(Debug)]
pub(super) struct ClientKey {
    pub(super) algs: WebPkiSupportedAlgorithms,
}

impl ClientKey {
    pub(super) fn new(algs: WebPkiSupportedAlgorithms) -> Arc<ClientKey> {
        Arc::new(ClientKey { algs })
    }
}

impl ClientCertVerifier for ClientKey {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        key_of(end_entity).map_err(|_| bad_encoding())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify13(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}
