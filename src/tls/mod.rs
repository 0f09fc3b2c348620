//! The secure channel every peershare connection runs in: TLS 1.3 (rustls), both ends proving
//! their Ed25519 identity key with a self-signed certificate (docs/PROTOCOL.md §1.1). The
//! framing of the protocol runs inside it unchanged.

mod cert;
pub mod quic;
mod relayed;
mod serve;
mod verify;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use cert::{COMMON_NAME, certificate, key_of};
pub use relayed::{PeerStream, RelayIo};
pub use serve::secure_admitted;

use crate::content::Digest;
use crate::group::GroupState;
use crate::identity::{Fingerprint, Identity};
use crate::protocol::Membership;

/// The ALPN protocol name both ends must agree on: a TLS client of another service, or a
/// peershare build of another wire version, fails the handshake instead of misreading frames.
pub const ALPN: &[u8] = b"peershare/1";

/// A secured connection, client or server side.
pub type SecureStream = tokio_rustls::TlsStream<TcpStream>;

/// Why a secure channel could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// Our own key or configuration cannot be used (not the remote end's fault).
    #[error("cannot set up TLS: {0}")]
    Setup(String),
    /// The remote end's certificate does not carry an Ed25519 key.
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// The remote end holds another key than the one expected: a different server, or a man in
    /// the middle.
    #[error("it holds the key {found}, not the expected {expected}")]
    WrongKey {
        /// The key we expected.
        expected: Fingerprint,
        /// The key it proved it holds.
        found: Fingerprint,
    },
    /// The TLS handshake failed (the remote end's alert or what was wrong with its messages).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The handshake did not finish in time.
    #[error("TLS handshake not finished within {0} ms")]
    TimedOut(u64),
    /// The remote end spoke plain text: a peershare build from before TLS, or another protocol.
    #[error("the remote end does not speak TLS (a peershare build from before encryption?)")]
    Plaintext,
}

/// One identity's TLS setup, shared by all its connections: the server configuration, and
/// what each client connection's configuration is made from. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    key: Digest,
    /// The private group this key is a member of, if any.
    group: Option<Arc<GroupState>>,
    provider: Arc<CryptoProvider>,
    server: Arc<ServerConfig>,
    client_cert: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("key", &Fingerprint(self.inner.key))
            .finish()
    }
}

/// A connection once both ends proved their keys.
pub struct Secured {
    /// The encrypted stream the protocol's frames run in.
    pub stream: SecureStream,
    /// The key the remote end proved it holds.
    pub remote_key: Digest,
}

impl Secured {
    /// The cipher suite negotiated, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub fn cipher_suite(&self) -> &'static str {
        suite_of(&self.stream)
    }
}

/// The cipher suite of an established stream.
pub fn suite_of(stream: &SecureStream) -> &'static str {
    let (_, conn) = stream.get_ref();
    conn.negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown")
}

/// The cipher suites offered, best first: AES-128-GCM is the fastest on CPUs with AES
/// instructions (3.7 GB/s a core here, against 2.2 for ChaCha20-Poly1305); ChaCha20 stays for
/// CPUs without them, which put it first in their own list.
fn provider() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    // ring, not aws-lc-rs: no C library of 200k lines to build on every CI run. ring lacks the
    // post-quantum key exchange (X25519MLKEM768), which rustls marks by deprecating this.
    #[allow(deprecated)]
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    p
}

fn setup(e: impl std::fmt::Display) -> TlsError {
    TlsError::Setup(e.to_string())
}

#[derive(Debug)]
struct OwnCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl Tls {
    /// The TLS setup of `identity`.
    pub fn new(identity: &Identity) -> Result<Tls, TlsError> {
        let provider = Arc::new(provider());
        let (cert, key) = certificate(identity)?;
        let signing = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(setup)?;
        let client_cert = Arc::new(CertifiedKey::new(vec![cert.clone()], signing));
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(setup)?
            .with_client_cert_verifier(verify::ClientKey::new(
                provider.signature_verification_algorithms,
            ))
            .with_single_cert(vec![cert], key)
            .map_err(setup)?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        // Every connection does a full handshake: resuming would skip the certificate, and
        // the key is what a connection is trusted for.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Tls {
            inner: Arc::new(Inner {
                key: identity.public_key(),
                group: None,
                provider,
                server: Arc::new(server),
                client_cert,
            }),
        })
    }

    /// The TLS setup of a fresh key kept only in memory: an anonymous client.
    pub fn ephemeral() -> Result<Tls, TlsError> {
        let identity = Identity::ephemeral().map_err(setup)?;
        Tls::new(&identity)
    }

    /// `tls`, or a fresh anonymous key's when `None`.
    pub fn or_ephemeral(tls: Option<&Tls>) -> Result<Tls, TlsError> {
        match tls {
            Some(t) => Ok(t.clone()),
            None => Tls::ephemeral(),
        }
    }

    /// The same key as a member of `group`: clients present its membership in `Hello`, servers
    /// in `Welcome`, and both require it of the other end (docs/PROTOCOL.md §4.2).
    pub fn with_group(&self, group: Arc<GroupState>) -> Tls {
        Tls {
            inner: Arc::new(Inner {
                key: self.inner.key,
                group: Some(group),
                provider: self.inner.provider.clone(),
                server: self.inner.server.clone(),
                client_cert: self.inner.client_cert.clone(),
            }),
        }
    }

    /// The private group this key is a member of, if any.
    pub fn group(&self) -> Option<&Arc<GroupState>> {
        self.inner.group.as_ref()
    }

    /// Our membership certificate, to present (none outside a group).
    pub fn membership(&self) -> Option<Membership> {
        self.group().and_then(|g| g.membership())
    }

    /// Our public key, the one the remote ends see.
    pub fn public_key(&self) -> Digest {
        self.inner.key
    }

    /// A client configuration requiring the server to hold `expect` (any key if `None`), with
    /// the verifier that remembers the key the server showed.
    fn client_config(
        &self,
        expect: Option<Digest>,
    ) -> Result<(ClientConfig, Arc<verify::ServerKey>), TlsError> {
        let verifier = Arc::new(verify::ServerKey {
            expected: expect,
            seen: Mutex::new(None),
            algs: self.inner.provider.signature_verification_algorithms,
        });
        let mut config = ClientConfig::builder_with_provider(self.inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(setup)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(Arc::new(OwnCert(self.inner.client_cert.clone())));
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Ok((config, verifier))
    }

    /// Client side: secures `tcp`, requiring the server to hold `expect` when given (any key
    /// otherwise: the caller decides, e.g. by pinning it on first use).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        expect: Option<Digest>,
        deadline: Duration,
    ) -> Result<Secured, TlsError> {
        let ip = tcp
            .peer_addr()
            .map_err(|e| TlsError::Handshake(e.to_string()))?
            .ip();
        let (stream, remote_key) = self.connect_over(tcp, ip, expect, deadline).await?;
        Ok(Secured {
            stream: SecureStream::Client(stream),
            remote_key,
        })
    }

    /// [`Tls::connect`] over any byte stream (a relayed one, §7.10) to a server named by `ip`
    /// (only for the handshake's bookkeeping: no SNI is sent for an IP address). Returns the
    /// stream and the key the server proved.
    pub async fn connect_over<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: IO,
        ip: std::net::IpAddr,
        expect: Option<Digest>,
        deadline: Duration,
    ) -> Result<(tokio_rustls::client::TlsStream<IO>, Digest), TlsError> {
        let (config, verifier) = self.client_config(expect)?;
        // An IP address as the server name: no SNI is sent (the name would mean nothing).
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let handshake = connector.connect(ServerName::IpAddress(ip.into()), io);
        let stream = match tokio::time::timeout(deadline, handshake).await {
            Err(_) => return Err(TlsError::TimedOut(deadline.as_millis() as u64)),
            Ok(Err(e)) => {
                return Err(match (expect, verifier.seen()) {
                    (Some(expected), Some(found)) if expected != found => TlsError::WrongKey {
                        expected: Fingerprint(expected),
                        found: Fingerprint(found),
                    },
                    _ => handshake_error(e),
                });
            }
            Ok(Ok(s)) => s,
        };
        let key = finish(stream.get_ref().1)?;
        Ok((stream, key))
    }

    /// [`Tls::accept`] over any byte stream (a relayed one, §7.10), without the plain-text
    /// check. Returns the stream and the key the client proved.
    pub async fn accept_over<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: IO,
        deadline: Duration,
    ) -> Result<(tokio_rustls::server::TlsStream<IO>, Digest), TlsError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.inner.server.clone());
        let stream = match tokio::time::timeout(deadline, acceptor.accept(io)).await {
            Err(_) => return Err(TlsError::TimedOut(deadline.as_millis() as u64)),
            Ok(r) => r.map_err(handshake_error)?,
        };
        let key = finish(stream.get_ref().1)?;
        Ok((stream, key))
    }

    /// Server side: secures `tcp`, whose client must prove some key (returned). A client that
    /// speaks plain text is told so in a plain-text frame built by `plaintext_refusal`, then
    /// closed.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        deadline: Duration,
        plaintext_refusal: &[u8],
    ) -> Result<Secured, TlsError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.inner.server.clone());
        let work = async {
            let mut first = [0u8; 1];
            let n = tcp
                .peek(&mut first)
                .await
                .map_err(|e| TlsError::Handshake(e.to_string()))?;
            // 0x16: a TLS handshake record. A peershare frame starts with its length's high
            // byte, 0x00 for every frame a client sends first.
            if n == 1 && first[0] != 0x16 {
                // Read what it sent first: closing with unread bytes would reset the connection
                // and the refusal with it.
                let mut sink = [0u8; 4096];
                for _ in 0..16 {
                    match tcp.try_read(&mut sink) {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
                let _ = tcp.try_write(plaintext_refusal);
                let mut tcp = tcp;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tcp).await;
                return Err(TlsError::Plaintext);
            }
            acceptor.accept(tcp).await.map_err(handshake_error)
        };
        let stream = match tokio::time::timeout(deadline, work).await {
            Err(_) => return Err(TlsError::TimedOut(deadline.as_millis() as u64)),
            Ok(r) => SecureStream::Server(r?),
        };
        let remote_key = finish(stream.get_ref().1)?;
        Ok(Secured { stream, remote_key })
    }
}

/// Why [`dial`] failed.
#[derive(Debug)]
pub enum DialError {
    /// No TCP connection.
    Connect(std::io::Error),
    /// No secure channel (or the other end holds another key than expected).
    Secure(TlsError),
}

/// Connects to `addr` within `connect_timeout` and secures the connection as `tls` (a fresh
/// anonymous key if `None`) within `handshake_timeout`, requiring the other end to hold
/// `expect` when given. Returns the TLS setup used with the secured connection.
pub async fn dial(
    addr: &str,
    tls: Option<&Tls>,
    expect: Option<Digest>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
) -> Result<(Tls, Secured), DialError> {
    let tcp = crate::protocol::connect_tcp(addr, connect_timeout)
        .await
        .map_err(DialError::Connect)?;
    let tls = Tls::or_ephemeral(tls).map_err(DialError::Secure)?;
    let secured = tls
        .connect(tcp, expect, handshake_timeout)
        .await
        .map_err(DialError::Secure)?;
    Ok((tls, secured))
}

fn handshake_error(e: std::io::Error) -> TlsError {
    TlsError::Handshake(match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    })
}

/// Checks what the handshake agreed and reads the remote key.
fn finish(conn: &rustls::CommonState) -> Result<Digest, TlsError> {
    if conn.alpn_protocol() != Some(ALPN) {
        return Err(TlsError::Handshake(format!(
            "the remote end did not agree ALPN {:?}",
            String::from_utf8_lossy(ALPN)
        )));
    }
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| TlsError::BadCertificate("no certificate".into()))?;
    key_of(cert)
}

#[cfg(test)]
mod tests;
